/* Stress tests (apart from the unit tests): 100,000 actors and a few
 * million messages across all workers; every total must match exactly. */
#include "helpers.h"

#define N_ACTORS 100000
#define HOPS 20                 /* each token visits HOPS more actors */
#define EXT_THREADS 4
#define EXT_PER_THREAD 250000   /* external sends per thread */

typedef struct hop_actor {
    uint32_t index;
    atomic_uint_least64_t count;
    atomic_int stopped;
} hop_actor;

static px_ref refs[N_ACTORS];
static hop_actor *actors;
static atomic_uint_least64_t send_errors;

static px_err hop_init(px_ctx *ctx, const px_msg *arg) {
    hop_actor *h = pxt_msg_ptr(arg);
    px_set_state(ctx, h);
    return PX_OK;
}

static px_err hop_receive(px_ctx *ctx, px_msg *m) {
    hop_actor *h = px_state(ctx);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    uint64_t hops = px_msg_get_u64(m);
    if (hops > 0) {
        /* A stride coprime with N_ACTORS walks all actors. */
        uint32_t next = (uint32_t)(((uint64_t)h->index * 7919u + 1) % N_ACTORS);
        px_msg *out = NULL;
        if (px_msg_u64(&out, 1, hops - 1) != PX_OK || px_send(ctx, refs[next], &out) != PX_OK) {
            atomic_fetch_add(&send_errors, 1);
            px_msg_free(out);
        }
    }
    return PX_OK;
}

static void hop_stop(px_ctx *ctx) {
    hop_actor *h = px_state(ctx);
    atomic_fetch_add(&h->stopped, 1);
}

static const px_behavior hop_b = {.name = "t.hop", .init = hop_init, .receive = hop_receive,
                                  .stop = hop_stop};

typedef struct ext_arg {
    px_system *sys;
    uint32_t seed;
    uint64_t sent;
    uint64_t errors;
} ext_arg;

static void *ext_sender(void *p) {
    ext_arg *a = p;
    uint32_t x = a->seed;
    for (int i = 0; i < EXT_PER_THREAD; i++) {
        x = x * 1664525u + 1013904223u;
        px_msg *m = NULL;
        if (px_msg_u64(&m, 2, 0) != PX_OK || px_system_send(a->sys, refs[x % N_ACTORS], &m) != PX_OK) {
            a->errors++;
            px_msg_free(m);
        } else {
            a->sent++;
        }
    }
    return NULL;
}

static void spawn_all(px_system *sys) {
    actors = calloc(N_ACTORS, sizeof *actors);
    cr_assert_not_null(actors);
    for (uint32_t i = 0; i < N_ACTORS; i++) {
        actors[i].index = i;
        px_msg *arg = pxt_ptr_msg(&actors[i]);
        px_err e = px_system_spawn(sys, &hop_b, &arg, NULL, &refs[i]);
        cr_assert_eq(e, PX_OK, "spawn %u: %s", i, px_strerror(e));
    }
    cr_assert_eq(pxt_live(sys), N_ACTORS);
}

Test(core_stress, a_hundred_thousand_actors_and_millions_of_messages_lose_nothing,
     .timeout = 120) {
    px_system *sys = pxt_system();
    spawn_all(sys);
    uint64_t m0 = PXT_STAT(sys, messages);

    /* One token per actor, each hopping HOPS times, plus external traffic
     * from several threads at once. */
    ext_arg ext[EXT_THREADS];
    pthread_t th[EXT_THREADS];
    for (int i = 0; i < EXT_THREADS; i++) {
        ext[i] = (ext_arg){.sys = sys, .seed = 12345u + (uint32_t)i * 977u};
        cr_assert_eq(pthread_create(&th[i], NULL, ext_sender, &ext[i]), 0);
    }
    for (uint32_t i = 0; i < N_ACTORS; i++) {
        pxt_send_u64(sys, refs[i], 1, HOPS);
    }
    uint64_t ext_sent = 0;
    for (int i = 0; i < EXT_THREADS; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(ext[i].errors, 0, "external sender %d had %llu errors", i,
                     (unsigned long long)ext[i].errors);
        ext_sent += ext[i].sent;
    }
    const uint64_t expect = (uint64_t)N_ACTORS * (HOPS + 1) + ext_sent;
    cr_assert_eq(expect, 2100000ull + (uint64_t)EXT_THREADS * EXT_PER_THREAD);

    PXT_AWAIT(PXT_STAT(sys, messages) - m0 >= expect, 100000);
    cr_assert_eq(atomic_load(&send_errors), 0, "actor-to-actor sends failed");
    uint64_t sum = 0;
    for (uint32_t i = 0; i < N_ACTORS; i++) {
        sum += atomic_load(&actors[i].count);
    }
    px_system_stats st = pxt_stats(sys);
    cr_assert_eq(sum, expect, "actors counted %llu messages, expected %llu",
                 (unsigned long long)sum, (unsigned long long)expect);
    cr_assert_eq(st.messages - m0, expect, "stats.messages %llu, expected %llu",
                 (unsigned long long)(st.messages - m0), (unsigned long long)expect);
    cr_assert_eq(st.dead_letters, 0);
    cr_assert_eq(st.dropped, 0);
    cr_assert_eq(st.failures, 0);
    cr_assert_eq(st.rejected, 0);
    /* Per-actor stats agree with the actors' own counts (a sample). */
    for (uint32_t i = 0; i < N_ACTORS; i += 997) {
        px_actor_stats as = pxt_astats(sys, refs[i]);
        cr_assert_eq(as.processed, atomic_load(&actors[i].count), "actor %u", i);
        cr_assert_eq(as.depth, 0);
    }

    cr_assert_eq(px_system_shutdown(sys), PX_OK);
    st = pxt_stats(sys);
    cr_assert_eq(st.live_actors, 0);
    for (uint32_t i = 0; i < N_ACTORS; i++) {
        cr_assert_eq(atomic_load(&actors[i].stopped), 1, "actor %u stopped %d times", i,
                     atomic_load(&actors[i].stopped));
    }
    px_system_free(sys);
    free(actors);
}

typedef struct stopper_arg {
    px_system *sys;
    uint32_t from, to;
} stopper_arg;

static void *stopper(void *p) {
    stopper_arg *a = p;
    for (uint32_t i = a->from; i < a->to; i += 2) {
        px_stop(a->sys, refs[i]);
    }
    return NULL;
}

Test(core_stress, stopping_actors_under_load_accounts_for_every_message, .timeout = 120) {
    px_system *sys = pxt_system();
    spawn_all(sys);
    uint64_t d0 = PXT_STAT(sys, dead_letters);

    ext_arg ext[EXT_THREADS];
    pthread_t th[EXT_THREADS];
    for (int i = 0; i < EXT_THREADS; i++) {
        ext[i] = (ext_arg){.sys = sys, .seed = 777u + (uint32_t)i * 31u};
        cr_assert_eq(pthread_create(&th[i], NULL, ext_sender, &ext[i]), 0);
    }
    /* Meanwhile, stop every other actor. */
    stopper_arg sa = {.sys = sys, .from = 0, .to = N_ACTORS};
    pthread_t st_th;
    cr_assert_eq(pthread_create(&st_th, NULL, stopper, &sa), 0);
    uint64_t sent = 0;
    for (int i = 0; i < EXT_THREADS; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(ext[i].errors, 0);
        sent += ext[i].sent;
    }
    pthread_join(st_th, NULL);
    PXT_AWAIT(pxt_live(sys) == N_ACTORS / 2, 60000);

    /* Drain the rest, then every message is either processed or dead. */
    cr_assert_eq(px_system_shutdown(sys), PX_OK);
    uint64_t processed = 0;
    for (uint32_t i = 0; i < N_ACTORS; i++) {
        processed += atomic_load(&actors[i].count);
        cr_assert_eq(atomic_load(&actors[i].stopped), 1, "actor %u stopped %d times", i,
                     atomic_load(&actors[i].stopped));
    }
    uint64_t dead = PXT_STAT(sys, dead_letters) - d0;
    cr_assert_eq(processed + dead, sent, "processed %llu + dead letters %llu != sent %llu",
                 (unsigned long long)processed, (unsigned long long)dead,
                 (unsigned long long)sent);
    cr_assert_eq(atomic_load(&send_errors), 0);
    px_system_free(sys);
    free(actors);
}
