/*
 * race_core.c — a self-checking concurrency workout of the core runtime,
 * without Criterion, so it can run under ThreadSanitizer (Criterion cannot:
 * Snaipe/Criterion#274). Also runs in the plain and ASan builds.
 *
 * Each scenario drives real threads and actors, waits on conditions with
 * bounded polls, and checks exact totals. Prints one line per scenario and
 * a closing "race_core: N passed, N failed"; exits non-zero on any failure.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <plexus/plexus.h>

#include "race.h"

static int failures;

static px_system *new_system(px_shutdown_mode mode) {
    px_config cfg;
    px_config_init(&cfg);
    cfg.workers = 2;
    cfg.shutdown_mode = mode;
    cfg.log_level = PX_LOG_CRIT;
    px_system *sys = NULL;
    if (px_system_alloc(&sys, &cfg) != PX_OK) {
        fprintf(stderr, "cannot create system\n");
        exit(2);
    }
    return sys;
}

/* ---- 1. fan-in from threads and actors, FIFO per sender ---- */

#define SENDERS 8
#define PER_SENDER 20000
static _Atomic uint64_t fan_next[SENDERS];
static _Atomic uint64_t fan_bad, fan_got;
static px_ref fan_sink;

static px_err sink_recv(px_ctx *ctx, px_msg *m) {
    (void)ctx;
    uint32_t s = px_msg_tag(m);
    uint64_t seq = px_msg_get_u64(m);
    if (s >= SENDERS || atomic_load(&fan_next[s]) != seq) {
        atomic_fetch_add(&fan_bad, 1);
    }
    atomic_store(&fan_next[s], seq + 1);
    atomic_fetch_add(&fan_got, 1);
    return PX_OK;
}
static const px_behavior sink_b = {.name = "race.sink", .receive = sink_recv};

static px_err pump_recv(px_ctx *ctx, px_msg *m) {
    uint32_t s = px_msg_tag(m);
    uint64_t from = px_msg_get_u64(m);
    for (uint64_t i = from; i < from + 500 && i < PER_SENDER; i++) {
        px_msg *d = NULL;
        px_msg_u64(&d, s, i);
        if (px_send(ctx, fan_sink, &d) != PX_OK) {
            px_msg_free(d);
            atomic_fetch_add(&fan_bad, 1);
        }
    }
    if (from + 500 < PER_SENDER) {
        px_msg *k = NULL;
        px_msg_u64(&k, s, from + 500);
        return px_send(ctx, px_self(ctx), &k);
    }
    return PX_OK;
}
static const px_behavior pump_b = {.name = "race.pump", .receive = pump_recv};

typedef struct {
    px_system *sys;
    uint32_t s;
} thr_arg;

static void *fan_thread(void *p) {
    thr_arg *a = p;
    for (uint64_t i = 0; i < PER_SENDER; i++) {
        px_msg *d = NULL;
        px_msg_u64(&d, a->s, i);
        if (px_system_send(a->sys, fan_sink, &d) != PX_OK) {
            px_msg_free(d);
            atomic_fetch_add(&fan_bad, 1);
        }
    }
    return NULL;
}

static int fan_in(void) {
    int ok = 1;
    px_system *sys = new_system(PX_SHUTDOWN_DRAIN);
    CHECK(px_system_spawn(sys, &sink_b, NULL, NULL, &fan_sink) == PX_OK, "spawn sink");
    pthread_t t[SENDERS / 2];
    thr_arg args[SENDERS / 2];
    for (uint32_t i = 0; i < SENDERS / 2; i++) {
        args[i] = (thr_arg){sys, i};
        pthread_create(&t[i], NULL, fan_thread, &args[i]);
    }
    for (uint32_t i = SENDERS / 2; i < SENDERS; i++) {
        px_ref p;
        px_msg *k = NULL;
        px_msg_u64(&k, i, 0);
        CHECK(px_system_spawn(sys, &pump_b, NULL, NULL, &p) == PX_OK, "spawn pump");
        CHECK(px_system_send(sys, p, &k) == PX_OK, "kick");
    }
    for (uint32_t i = 0; i < SENDERS / 2; i++) {
        pthread_join(t[i], NULL);
    }
    CHECK(AWAIT(atomic_load(&fan_got) == SENDERS * PER_SENDER, 30000), "got %llu",
          (unsigned long long)atomic_load(&fan_got));
    CHECK(atomic_load(&fan_bad) == 0, "%llu out of order or failed",
          (unsigned long long)atomic_load(&fan_bad));
    px_system_free(sys);
    return ok;
}

/* ---- 2. churn: spawn/stop while others send to stale refs ---- */

static _Atomic uint64_t churn_recv;
static px_err count_recv(px_ctx *ctx, px_msg *m) {
    (void)ctx;
    (void)m;
    atomic_fetch_add(&churn_recv, 1);
    return PX_OK;
}
static const px_behavior count_b = {.name = "race.count", .receive = count_recv};

#define CHURN_REFS 64
static _Atomic uint64_t churn_refs[CHURN_REFS][2]; /* packed px_ref halves */
static _Atomic int churn_stop;
static _Atomic uint64_t churn_sent;

static px_ref ref_load(_Atomic uint64_t (*refs)[2], int i) {
    uint64_t a = atomic_load(&refs[i][0]), b = atomic_load(&refs[i][1]);
    return (px_ref){(uint32_t)a, (uint32_t)(a >> 32), (uint32_t)b, (uint32_t)(b >> 32)};
}
static void ref_store(_Atomic uint64_t (*refs)[2], int i, px_ref r) {
    atomic_store(&refs[i][0], (uint64_t)r.node | (uint64_t)r.node_inc << 32);
    atomic_store(&refs[i][1], (uint64_t)r.id | (uint64_t)r.inc << 32);
}

static void *churn_sender(void *p) {
    px_system *sys = p;
    for (uint32_t i = 0; !atomic_load(&churn_stop) && i < 400000; i++) {
        px_msg *m = NULL;
        px_msg_u64(&m, 0, i);
        if (px_system_send(sys, ref_load(churn_refs, (int)(i % CHURN_REFS)), &m) == PX_OK) {
            atomic_fetch_add(&churn_sent, 1);
        } else {
            px_msg_free(m);
        }
    }
    return NULL;
}

/* Walks the actors (px_system_actors) while they come and go: every one
 * it reports is a race.count actor, alive or stopping. */
static _Atomic uint64_t churn_walks, churn_walk_bad;
static void churn_walk_fn(void *arg, px_ref ref, const char *behavior, const char *name,
                          const px_actor_stats *st) {
    (void)arg;
    (void)name;
    (void)st;
    if (px_ref_is_nil(ref) || strcmp(behavior, count_b.name) != 0) {
        atomic_fetch_add(&churn_walk_bad, 1);
    }
}
static void *churn_walker(void *p) {
    px_system *sys = p;
    while (!atomic_load(&churn_stop)) {
        if (px_system_actors(sys, churn_walk_fn, NULL) != PX_OK) {
            atomic_fetch_add(&churn_walk_bad, 1);
        }
        atomic_fetch_add(&churn_walks, 1);
    }
    return NULL;
}

static int churn(void) {
    int ok = 1;
    px_system *sys = new_system(PX_SHUTDOWN_REJECT);
    for (int i = 0; i < CHURN_REFS; i++) {
        px_ref r;
        CHECK(px_system_spawn(sys, &count_b, NULL, NULL, &r) == PX_OK, "spawn");
        ref_store(churn_refs, i, r);
    }
    pthread_t t[2], walker;
    for (int i = 0; i < 2; i++) {
        pthread_create(&t[i], NULL, churn_sender, sys);
    }
    pthread_create(&walker, NULL, churn_walker, sys);
    /* 3000 rounds, and on (bounded) until the walker has walked during
     * the churn: on a loaded machine its thread may not have run yet */
    for (int round = 0; round < 3000 || (atomic_load(&churn_walks) < 3 && round < 3000000);
         round++) {
        int i = round % CHURN_REFS;
        px_ref old = ref_load(churn_refs, i), r;
        px_stop(sys, old);
        if (px_system_spawn(sys, &count_b, NULL, NULL, &r) == PX_OK) {
            ref_store(churn_refs, i, r);
            CHECK(!px_ref_eq(r, old), "a new actor reused a ref");
        }
    }
    atomic_store(&churn_stop, 1);
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
    }
    pthread_join(walker, NULL);
    CHECK(atomic_load(&churn_walks) > 0 && atomic_load(&churn_walk_bad) == 0,
          "%llu walks, %llu bad reports", (unsigned long long)atomic_load(&churn_walks),
          (unsigned long long)atomic_load(&churn_walk_bad));
    px_system_shutdown(sys);
    px_system_stats st;
    px_system_stats_get(sys, &st);
    uint64_t sent = atomic_load(&churn_sent), got = atomic_load(&churn_recv);
    CHECK(got + st.dead_letters == sent, "received %llu + dead %llu != sent %llu",
          (unsigned long long)got, (unsigned long long)st.dead_letters, (unsigned long long)sent);
    CHECK(st.live_actors == 0, "live %llu after shutdown", (unsigned long long)st.live_actors);
    px_system_free(sys);
    return ok;
}

/* ---- 3. asks between actors, half of them timing out ---- */

#define ASKS 2000
static _Atomic uint64_t ask_replies, ask_timeouts;
static px_ref ask_server;

static px_err server_recv(px_ctx *ctx, px_msg *m) {
    if (px_msg_get_u64(m) % 2 == 0) {
        px_msg *r = NULL;
        px_msg_u64(&r, 0, px_msg_get_u64(m));
        return px_reply(ctx, m, &r);
    }
    return PX_OK; /* odd: never answered */
}
static const px_behavior server_b = {.name = "race.server", .receive = server_recv};

static px_err client_recv(px_ctx *ctx, px_msg *m) {
    if (px_msg_is_reply(m)) {
        atomic_fetch_add(&ask_replies, 1);
        return PX_OK;
    }
    if (px_msg_kind_of(m) == PX_MSG_ASK_TIMEOUT) {
        atomic_fetch_add(&ask_timeouts, 1);
        return PX_OK;
    }
    uint64_t base = px_msg_get_u64(m);
    for (uint64_t i = base; i < base + ASKS / 4; i++) {
        px_msg *q = NULL;
        px_msg_u64(&q, 0, i);
        /* The server answers even asks: they get room for a loaded
         * machine (20 ms was missed under ctest -j2, and a late reply
         * counts as a timeout); odd ones are never answered and time out. */
        if (px_ask(ctx, ask_server, &q, i % 2 == 0 ? 10000 : 20, NULL) != PX_OK) {
            px_msg_free(q);
        }
    }
    return PX_OK;
}
static const px_behavior client_b = {.name = "race.client", .receive = client_recv};

static int asks(void) {
    int ok = 1;
    px_system *sys = new_system(PX_SHUTDOWN_DRAIN);
    CHECK(px_system_spawn(sys, &server_b, NULL, NULL, &ask_server) == PX_OK, "spawn");
    for (int c = 0; c < 4; c++) {
        px_ref cl;
        px_msg *k = NULL;
        px_msg_u64(&k, 0, (uint64_t)c * (ASKS / 4));
        CHECK(px_system_spawn(sys, &client_b, NULL, NULL, &cl) == PX_OK, "spawn");
        CHECK(px_system_send(sys, cl, &k) == PX_OK, "kick");
    }
    CHECK(AWAIT(atomic_load(&ask_replies) + atomic_load(&ask_timeouts) == ASKS, 20000),
          "replies %llu timeouts %llu", (unsigned long long)atomic_load(&ask_replies),
          (unsigned long long)atomic_load(&ask_timeouts));
    CHECK(atomic_load(&ask_replies) == ASKS / 2, "replies %llu",
          (unsigned long long)atomic_load(&ask_replies));
    /* Blocking asks from two threads at once. */
    for (int i = 0; i < 50; i++) {
        px_msg *q = NULL, *r = NULL;
        px_msg_u64(&q, 0, (uint64_t)i * 2);
        CHECK(px_system_ask(sys, ask_server, &q, 2000, &r) == PX_OK && r != NULL &&
                  px_msg_get_u64(r) == (uint64_t)i * 2, "blocking ask %d", i);
        px_msg_free(r);
        px_msg_free(q);
    }
    px_system_free(sys);
    return ok;
}

/* ---- 4. bounded Block mailbox fed by three threads ---- */

static _Atomic uint64_t slow_got;
static px_err slow_recv(px_ctx *ctx, px_msg *m) {
    (void)ctx;
    (void)m;
    atomic_fetch_add(&slow_got, 1);
    return PX_OK;
}
static const px_behavior slow_b = {.name = "race.slow", .receive = slow_recv};
static px_ref slow_ref;
static _Atomic uint64_t block_sent, block_timeouts;

static void *block_thread(void *p) {
    px_system *sys = p;
    for (int i = 0; i < 20000; i++) {
        px_msg *m = NULL;
        px_msg_u64(&m, 0, (uint64_t)i);
        px_err rv = px_system_send(sys, slow_ref, &m);
        if (rv == PX_OK) {
            atomic_fetch_add(&block_sent, 1);
        } else {
            atomic_fetch_add(&block_timeouts, 1);
            px_msg_free(m);
        }
    }
    return NULL;
}

static int bounded_block(void) {
    int ok = 1;
    px_system *sys = new_system(PX_SHUTDOWN_DRAIN);
    px_mailbox_opts mb = {.capacity = 8, .overflow = PX_OVERFLOW_BLOCK, .block_timeout_ms = 5000};
    px_spawn_opts so = {.mailbox = &mb};
    CHECK(px_system_spawn(sys, &slow_b, NULL, &so, &slow_ref) == PX_OK, "spawn");
    pthread_t t[3];
    for (int i = 0; i < 3; i++) {
        pthread_create(&t[i], NULL, block_thread, sys);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
    }
    CHECK(atomic_load(&block_timeouts) == 0, "%llu sends timed out",
          (unsigned long long)atomic_load(&block_timeouts));
    CHECK(AWAIT(atomic_load(&slow_got) == atomic_load(&block_sent), 10000), "got %llu of %llu",
          (unsigned long long)atomic_load(&slow_got), (unsigned long long)atomic_load(&block_sent));
    px_actor_stats as;
    CHECK(px_actor_stats_get(sys, slow_ref, &as) == PX_OK && as.hwm <= 8, "hwm %llu",
          (unsigned long long)as.hwm);
    px_system_free(sys);
    return ok;
}

/* ---- 5. timers added and cancelled from several threads ---- */

static _Atomic uint64_t tick_got;
static px_err tick_recv(px_ctx *ctx, px_msg *m) {
    (void)ctx;
    (void)m;
    atomic_fetch_add(&tick_got, 1);
    return PX_OK;
}
static const px_behavior tick_b = {.name = "race.tick", .receive = tick_recv};
static px_ref tick_ref;
static _Atomic uint64_t timers_cancelled, timers_added;

static void *timer_thread(void *p) {
    px_system *sys = p;
    for (int i = 0; i < 500; i++) {
        px_msg *m = NULL;
        uint64_t id;
        px_msg_u64(&m, 0, (uint64_t)i);
        if (px_system_send_after(sys, (uint32_t)(i % 7), tick_ref, &m, &id) != PX_OK) {
            px_msg_free(m);
            continue;
        }
        atomic_fetch_add(&timers_added, 1);
        if (i % 3 == 0 && px_timer_cancel(sys, id) == PX_OK) {
            atomic_fetch_add(&timers_cancelled, 1);
        }
    }
    return NULL;
}

static int timers(void) {
    int ok = 1;
    px_system *sys = new_system(PX_SHUTDOWN_DRAIN);
    CHECK(px_system_spawn(sys, &tick_b, NULL, NULL, &tick_ref) == PX_OK, "spawn");
    pthread_t t[3];
    for (int i = 0; i < 3; i++) {
        pthread_create(&t[i], NULL, timer_thread, sys);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
    }
    CHECK(AWAIT(atomic_load(&tick_got) + atomic_load(&timers_cancelled) ==
                    atomic_load(&timers_added), 10000),
          "got %llu + cancelled %llu != added %llu", (unsigned long long)atomic_load(&tick_got),
          (unsigned long long)atomic_load(&timers_cancelled),
          (unsigned long long)atomic_load(&timers_added));
    px_system_free(sys);
    return ok;
}

/* Alarms set, reset, stopped and freed from several threads while their
 * callbacks re-arm them: each callback runs while its alarm lives, and a
 * freed alarm's callback never runs after px_alarm_free returned. */
#define AL_N 8
typedef struct al_probe {
    px_alarm *a;
    _Atomic int fires, rearms, freed;
} al_probe;
static _Atomic uint64_t al_after_free;

static void al_fire(void *arg) {
    al_probe *p = arg;
    if (atomic_load(&p->freed)) {
        atomic_fetch_add(&al_after_free, 1);
    }
    atomic_fetch_add(&p->fires, 1);
    if (atomic_fetch_sub(&p->rearms, 1) > 0) {
        px_alarm_set(p->a, (uint32_t)(atomic_load(&p->fires) % 3));
    }
}

static void *al_thread(void *arg) {
    al_probe *ps = arg;
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < AL_N; i++) {
            atomic_store(&ps[i].rearms, 5);
            px_alarm_set(ps[i].a, (uint32_t)((i + round) % 4));
        }
    }
    return NULL;
}

static int alarms(void) {
    int ok = 1;
    al_probe *ps = calloc(2 * AL_N, sizeof(*ps));
    for (int i = 0; i < 2 * AL_N; i++) {
        CHECK(px_alarm_new(&ps[i].a, al_fire, &ps[i]) == PX_OK, "alarm %d", i);
    }
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        pthread_create(&t[i], NULL, al_thread, ps + i * AL_N);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
    }
    for (int i = 0; i < 2 * AL_N; i++) {
        CHECK(AWAIT(atomic_load(&ps[i].fires) > 0, 5000), "alarm %d never fired", i);
    }
    for (int i = 0; i < 2 * AL_N; i++) { /* freed while some still re-arm */
        px_alarm_free(ps[i].a);
        atomic_store(&ps[i].freed, 1);
    }
    CHECK(atomic_load(&al_after_free) == 0, "%llu callbacks after their alarm was freed",
          (unsigned long long)atomic_load(&al_after_free));
    free(ps);
    return ok;
}

/* ---- 6. shutdown while threads are still sending ---- */

static _Atomic uint64_t sd_accepted, sd_got;
static px_err sd_recv(px_ctx *ctx, px_msg *m) {
    (void)ctx;
    (void)m;
    atomic_fetch_add(&sd_got, 1);
    return PX_OK;
}
static const px_behavior sd_b = {.name = "race.sd", .receive = sd_recv};
static px_ref sd_ref;

static void *sd_thread(void *p) {
    px_system *sys = p;
    for (int i = 0; i < 1000000; i++) {
        px_msg *m = NULL;
        px_msg_u64(&m, 0, (uint64_t)i);
        px_err rv = px_system_send(sys, sd_ref, &m);
        if (rv == PX_OK) {
            atomic_fetch_add(&sd_accepted, 1);
        } else {
            px_msg_free(m);
            if (rv == PX_ECLOSED) {
                break;
            }
        }
    }
    return NULL;
}

static int shutdown_in_flight(void) {
    int ok = 1;
    px_system *sys = new_system(PX_SHUTDOWN_DRAIN);
    CHECK(px_system_spawn(sys, &sd_b, NULL, NULL, &sd_ref) == PX_OK, "spawn");
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        pthread_create(&t[i], NULL, sd_thread, sys);
    }
    AWAIT(atomic_load(&sd_got) > 20000, 10000);
    px_err rv = px_system_shutdown(sys);
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
    }
    px_system_stats st;
    px_system_stats_get(sys, &st);
    CHECK(rv == PX_OK || rv == PX_ETIMEDOUT, "shutdown %s", px_strerror(rv));
    CHECK(atomic_load(&sd_got) + st.dead_letters == atomic_load(&sd_accepted),
          "got %llu + dead %llu != accepted %llu", (unsigned long long)atomic_load(&sd_got),
          (unsigned long long)st.dead_letters, (unsigned long long)atomic_load(&sd_accepted));
    px_system_free(sys);
    return ok;
}

/* ---- 7. supervision: failures, restarts, watches under concurrent sends ---- */

#define SV_KIDS 8
#define SV_PER 4000
static _Atomic uint64_t sv_ok, sv_failed, sv_inits, sv_terms;
static px_ref sv_kids[SV_KIDS];
static _Atomic int sv_ready;

static px_err sv_kid_init(px_ctx *ctx, const px_msg *arg) {
    (void)ctx;
    (void)arg;
    atomic_fetch_add(&sv_inits, 1);
    return PX_OK;
}
/* Every 7th message fails: the parent restarts the child, and the messages
 * sent meanwhile wait for the new instance. */
static px_err sv_kid_recv(px_ctx *ctx, px_msg *m) {
    (void)ctx;
    if (px_msg_get_u64(m) % 7 == 3) {
        atomic_fetch_add(&sv_failed, 1);
        return PX_EFAIL;
    }
    atomic_fetch_add(&sv_ok, 1);
    return PX_OK;
}
static const px_behavior sv_kid_b = {.name = "race.sv.kid", .init = sv_kid_init,
                                     .receive = sv_kid_recv};

/* Case 7 runs twice: children here, and children "placed elsewhere" —
 * proxies and hosts (core/src/remote.c) through a loopback router that
 * plays both nodes in this process, as the mesh would between two. */
static int sv_placed;

static px_err lb_send(void *arg, px_ref to, px_msg *m) {
    (void)arg;
    (void)to;
    (void)m;
    return PX_EUNREACHABLE;
}

static px_err lb_proxy_op(void *arg, px_remote_op op, const px_proxy_info *i) {
    px_system *sys = arg;
    if (op == PX_REMOTE_START && px_ref_is_nil(i->host)) {
        px_hosted_spec hs = {.proxy = i->proxy, .parent = i->parent, .id = i->id,
                             .behavior = i->behavior, .restart = i->restart};
        px_ref host, child;
        px_err rv = px_system_spawn_hosted(sys, &hs, NULL, &host, &child, NULL, 0);
        if (rv != PX_OK) {
            return rv;
        }
        px_proxy_event ev = {.kind = PX_PROXY_STARTED, .remote = child, .host = host,
                             .node = "loopback"};
        if (px_system_proxy_event(sys, i->proxy, &ev) != PX_OK) {
            (void)px_system_host_apply(sys, host, PX_REMOTE_STOP, PX_TERM_STOPPED, PX_OK);
        }
        return PX_OK;
    }
    if (px_ref_is_nil(i->host)) {
        return PX_OK;
    }
    return px_system_host_apply(sys, i->host, op, i->term, i->code);
}

static void lb_host_event(void *arg, const px_host_event *ev) {
    px_system *sys = arg;
    px_proxy_event pe = {.remote = ev->child, .host = ev->host, .node = "loopback",
                         .code = ev->code, .reason = ev->reason, .term = ev->term,
                         .failure = ev->failure};
    switch (ev->kind) {
    case PX_HOST_FAILED: pe.kind = PX_PROXY_FAILED; break;
    case PX_HOST_RS_STOPPED: pe.kind = PX_PROXY_RS_STOPPED; break;
    case PX_HOST_STARTED:
        pe.kind = ev->code == PX_OK ? PX_PROXY_STARTED : PX_PROXY_START_FAILED;
        break;
    case PX_HOST_ENDED: pe.kind = PX_PROXY_ENDED; break;
    }
    (void)px_system_proxy_event(sys, ev->proxy, &pe);
}

static px_err sv_sup_init(px_ctx *ctx, const px_msg *arg) {
    (void)arg;
    px_placement elsewhere = {.policy = PX_PLACE_ROUND_ROBIN};
    px_restart_policy pol;
    px_restart_policy_init(&pol);
    pol.max_restarts = 1000000;
    pol.window_ms = 1000;
    for (int i = 0; i < SV_KIDS; i++) {
        char id[8];
        snprintf(id, sizeof(id), "k%d", i);
        px_child_spec spec = {.id = id, .behavior = "race.sv.kid", .policy = &pol,
                              .placement = sv_placed ? &elsewhere : NULL};
        px_err e = px_spawn_child(ctx, &spec, NULL, &sv_kids[i]);
        if (e != PX_OK) {
            return e;
        }
        if ((e = px_watch(ctx, sv_kids[i])) != PX_OK) {
            return e;
        }
    }
    atomic_store(&sv_ready, 1);
    return PX_OK;
}
static px_err sv_sup_recv(px_ctx *ctx, px_msg *m) {
    (void)ctx;
    if (px_msg_kind_of(m) == PX_MSG_TERMINATED) {
        atomic_fetch_add(&sv_terms, 1);
    }
    return PX_OK;
}
static const px_behavior sv_sup_b = {.name = "race.sv.sup", .init = sv_sup_init,
                                     .receive = sv_sup_recv};

static void *sv_thread(void *p) {
    px_system *sys = p;
    for (uint64_t i = 0; i < SV_PER; i++) {
        px_msg *m = NULL;
        px_msg_u64(&m, 0, i);
        if (px_system_send(sys, sv_kids[i % SV_KIDS], &m) != PX_OK) {
            px_msg_free(m);
        }
    }
    return NULL;
}

static int supervision(void);

static int supervision_placed(void) {
    atomic_store(&sv_ready, 0);
    atomic_store(&sv_ok, 0);
    atomic_store(&sv_failed, 0);
    atomic_store(&sv_inits, 0);
    atomic_store(&sv_terms, 0);
    sv_placed = 1;
    int ok = supervision();
    sv_placed = 0;
    return ok;
}

static int supervision(void) {
    int ok = 1;
    px_system *sys = new_system(PX_SHUTDOWN_DRAIN);
    CHECK(px_behavior_register(sys, &sv_kid_b) == PX_OK, "register");
    if (sv_placed) {
        px_router r = {.send = lb_send, .arg = sys, .proxy_op = lb_proxy_op,
                       .host_event = lb_host_event};
        px_system_set_router(sys, &r);
    }
    px_ref sup;
    CHECK(px_system_spawn(sys, &sv_sup_b, NULL, NULL, &sup) == PX_OK, "spawn supervisor");
    CHECK(AWAIT(atomic_load(&sv_ready) == 1, 5000), "children spawned");
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        pthread_create(&t[i], NULL, sv_thread, sys);
    }
    char *dump = NULL; /* concurrently with the failures */
    px_err de = px_tree_dump(sys, PX_TREE_JSON, 10000, &dump);
    CHECK(de == PX_OK && dump != NULL, "tree dump: %s", px_strerror(de));
    free(dump);
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
    }
    uint64_t total = 2ull * SV_PER;
    CHECK(AWAIT(atomic_load(&sv_ok) + atomic_load(&sv_failed) == total, 20000),
          "ok %llu + failed %llu != sent %llu", (unsigned long long)atomic_load(&sv_ok),
          (unsigned long long)atomic_load(&sv_failed), (unsigned long long)total);
    px_system_stats st;
    CHECK(AWAIT((px_system_stats_get(sys, &st), st.restarts == atomic_load(&sv_failed)), 10000),
          "restarts %llu != failures %llu", (unsigned long long)st.restarts,
          (unsigned long long)atomic_load(&sv_failed));
    CHECK(atomic_load(&sv_inits) == SV_KIDS + atomic_load(&sv_failed), "inits %llu",
          (unsigned long long)atomic_load(&sv_inits));
    CHECK(st.dead_letters == 0, "dead letters %llu", (unsigned long long)st.dead_letters);
    CHECK(atomic_load(&sv_terms) == 0, "a restart is not a termination");
    px_system_free(sys);
    return ok;
}

/* ---- 8. reincarnations while actors of every incarnation talk ---- */

/* One thread makes the node its next incarnation RI_ROUNDS times and spawns
 * a pump after each; meanwhile, keeping pace with it, two threads kick
 * random pumps and send to the sink (of the first incarnation), and read
 * the incarnation. A kicked pump checks that its ref is still the one it
 * was spawned with, sends RI_PER messages to the sink and pokes the pump
 * before it (an older incarnation). Everything is local, so nothing may be
 * lost, refused or dead-lettered. */
#define RI_ROUNDS 100
#define RI_PER 50
#define RI_KICKS 10 /* per sender and pump */
#define RI_TAG_KICK 1
#define RI_TAG_POKE 2
static _Atomic uint64_t ri_pumps[RI_ROUNDS][2]; /* packed px_ref halves */
static _Atomic int ri_npumps, ri_done;
static _Atomic uint64_t ri_got, ri_pokes, ri_bad, ri_kicks, ri_kicks_poking, ri_direct;
static px_ref ri_sink;
static uint32_t ri_first;

static px_err ri_sink_recv(px_ctx *ctx, px_msg *m) {
    (void)ctx;
    (void)m;
    atomic_fetch_add(&ri_got, 1);
    return PX_OK;
}
static const px_behavior ri_sink_b = {.name = "race.ri.sink", .receive = ri_sink_recv};

static void ri_send(px_ctx *ctx, px_ref to, uint32_t tag) {
    px_msg *m = NULL;
    px_msg_u64(&m, tag, 0);
    if (px_send(ctx, to, &m) != PX_OK) {
        px_msg_free(m);
        atomic_fetch_add(&ri_bad, 1);
    }
}

static px_err ri_pump_recv(px_ctx *ctx, px_msg *m) {
    if (px_msg_tag(m) == RI_TAG_POKE) {
        atomic_fetch_add(&ri_pokes, 1);
        return PX_OK;
    }
    int i = (int)px_msg_get_u64(m);
    if (!px_ref_eq(px_self(ctx), ref_load(ri_pumps, i))) {
        atomic_fetch_add(&ri_bad, 1);
    }
    for (int k = 0; k < RI_PER; k++) {
        ri_send(ctx, ri_sink, 0);
    }
    if (i > 0) {
        ri_send(ctx, ref_load(ri_pumps, i - 1), RI_TAG_POKE);
    }
    return PX_OK;
}
static const px_behavior ri_pump_b = {.name = "race.ri.pump", .receive = ri_pump_recv};

static uint32_t ri_next(uint32_t inc) { return inc + 1 != 0 ? inc + 1 : 1; }
/* Incarnations after the first (0 is skipped). */
static uint32_t ri_steps(uint32_t inc) { return inc - ri_first - (inc < ri_first ? 1u : 0u); }

static void *ri_reincarnator(void *p) {
    px_system *sys = p;
    for (int i = 0; i < RI_ROUNDS; i++) {
        px_ref r;
        if (px_system_reincarnate(sys, NULL) != PX_OK ||
            px_system_spawn(sys, &ri_pump_b, NULL, NULL, &r) != PX_OK ||
            r.node_inc != px_system_node_inc(sys)) {
            atomic_fetch_add(&ri_bad, 1);
            continue;
        }
        ref_store(ri_pumps, i, r);
        uint64_t k0 = atomic_load(&ri_kicks);
        atomic_store(&ri_npumps, i + 1);
        /* Let kicks and sends overlap the next reincarnation. */
        if (!AWAIT(atomic_load(&ri_kicks) > k0 + 4, 5000)) {
            atomic_fetch_add(&ri_bad, 1);
        }
    }
    atomic_store(&ri_done, 1);
    return NULL;
}

/* From outside actors; a refused send is counted as bad. */
static int ri_system_send(px_system *sys, px_ref to, uint32_t tag, uint64_t v) {
    px_msg *m = NULL;
    px_msg_u64(&m, tag, v);
    if (px_system_send(sys, to, &m) != PX_OK) {
        px_msg_free(m);
        atomic_fetch_add(&ri_bad, 1);
        return 0;
    }
    return 1;
}

static void *ri_sender(void *p) {
    px_system *sys = p;
    uint32_t seed = 12345, seen = px_system_node_inc(sys);
    for (int n = 0; n < RI_ROUNDS * RI_KICKS; n++) {
        /* Keep pace: about RI_KICKS kicks per pump published. */
        AWAIT(atomic_load(&ri_npumps) * RI_KICKS > n || atomic_load(&ri_done), 5000);
        uint32_t inc = px_system_node_inc(sys);
        if (ri_steps(inc) < ri_steps(seen) || ri_steps(inc) > RI_ROUNDS) {
            atomic_fetch_add(&ri_bad, 1); /* went backwards, or too far */
        }
        seen = inc;
        int np = atomic_load(&ri_npumps);
        if (np > 0) {
            seed = seed * 1103515245u + 12345u;
            int i = (int)((seed >> 8) % (uint32_t)np);
            if (ri_system_send(sys, ref_load(ri_pumps, i), RI_TAG_KICK, (uint64_t)i)) {
                atomic_fetch_add(&ri_kicks, 1);
                atomic_fetch_add(&ri_kicks_poking, i > 0);
            }
        }
        if (ri_system_send(sys, ri_sink, 0, (uint64_t)n)) {
            atomic_fetch_add(&ri_direct, 1);
        }
    }
    return NULL;
}

static int reincarnations(void) {
    int ok = 1;
    px_system *sys = new_system(PX_SHUTDOWN_DRAIN);
    ri_first = px_system_node_inc(sys);
    CHECK(px_system_spawn(sys, &ri_sink_b, NULL, NULL, &ri_sink) == PX_OK, "spawn sink");
    pthread_t r, t[2];
    pthread_create(&r, NULL, ri_reincarnator, sys);
    for (int i = 0; i < 2; i++) {
        pthread_create(&t[i], NULL, ri_sender, sys);
    }
    pthread_join(r, NULL);
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
    }
    uint64_t want = atomic_load(&ri_kicks) * RI_PER + atomic_load(&ri_direct);
    CHECK(AWAIT(atomic_load(&ri_got) == want, 20000), "sink got %llu of %llu",
          (unsigned long long)atomic_load(&ri_got), (unsigned long long)want);
    CHECK(AWAIT(atomic_load(&ri_pokes) == atomic_load(&ri_kicks_poking), 10000),
          "pokes %llu of %llu", (unsigned long long)atomic_load(&ri_pokes),
          (unsigned long long)atomic_load(&ri_kicks_poking));
    CHECK(atomic_load(&ri_bad) == 0, "%llu refused, lost or changed refs",
          (unsigned long long)atomic_load(&ri_bad));
    uint32_t last = ri_first;
    for (int i = 0; i < RI_ROUNDS; i++) {
        last = ri_next(last);
    }
    CHECK(px_system_node_inc(sys) == last, "incarnation %08x, want %08x",
          px_system_node_inc(sys), last);
    px_system_stats st;
    px_system_stats_get(sys, &st);
    CHECK(st.dead_letters == 0 && st.rejected == 0, "dead letters %llu, rejected %llu",
          (unsigned long long)st.dead_letters, (unsigned long long)st.rejected);
    px_system_free(sys);
    return ok;
}

/* ---- 9. topics: publishes from threads and actors while actors
 * subscribe, unsubscribe and stop ---- */

#define TP_TOPICS 4
#define TP_SUBS 16
#define TP_PER_THREAD 25000
#define TP_PER_ACTOR 25000
#define TP_HEAP 40 /* a heap payload: seq (8 bytes LE), then (uint8_t)(seq + i) */
#define TP_TAG 0x74700000u /* publications carry TP_TAG + topic */
enum { TP_TOGGLE = 1, TP_KICK = 2 };
static const char *tp_names[TP_TOPICS] = {"race.a", "race.b", "race.c", "race.d"};
static _Atomic uint64_t tp_subs[TP_SUBS][2]; /* packed px_ref halves */
static _Atomic uint64_t tp_got, tp_bad, tp_published, tp_hooked, tp_dead;
static _Atomic int tp_interest[TP_TOPICS]; /* as topic_interest told it */
static _Atomic int tp_in_hook, tp_bad_events, tp_pubs_done; /* publishers finished */

static px_err tp_publish(px_system *sys, uint32_t t, uint64_t seq) {
    px_msg *m = NULL;
    if (seq % 2 == 0) {
        px_msg_u64(&m, TP_TAG + t, seq);
    } else {
        uint8_t d[TP_HEAP];
        for (int i = 0; i < TP_HEAP; i++) {
            d[i] = i < 8 ? (uint8_t)(seq >> (8 * i)) : (uint8_t)(seq + (uint64_t)i);
        }
        px_msg_bytes(&m, TP_TAG + t, d, sizeof(d));
    }
    px_err e = px_publish(sys, tp_names[t], &m);
    if (e == PX_OK) {
        atomic_fetch_add(&tp_published, 1);
    } else {
        px_msg_free(m);
        atomic_fetch_add(&tp_bad, 1);
    }
    return e;
}

static px_err tp_sub_init(px_ctx *ctx, const px_msg *arg) {
    return px_subscribe(ctx, tp_names[px_msg_get_u64(arg) % TP_TOPICS]);
}

static px_err tp_sub_recv(px_ctx *ctx, px_msg *m) {
    uint32_t tag = px_msg_tag(m);
    if (tag == TP_TOGGLE) {
        uint64_t v = px_msg_get_u64(m);
        const char *t = tp_names[v % TP_TOPICS];
        px_err e = (v & 0x100) ? px_unsubscribe(ctx, t) : px_subscribe(ctx, t);
        if (e != PX_OK && e != PX_ENOENT) {
            atomic_fetch_add(&tp_bad, 1);
        }
        return PX_OK;
    }
    size_t len = 0;
    const uint8_t *d = px_msg_data(m, &len);
    int ok = tag >= TP_TAG && tag < TP_TAG + TP_TOPICS && (len == 8 || len == TP_HEAP);
    uint64_t seq = px_msg_get_u64(m);
    for (size_t i = 8; ok && i < len; i++) {
        ok = d[i] == (uint8_t)(seq + i);
    }
    if (!ok) {
        atomic_fetch_add(&tp_bad, 1);
    }
    atomic_fetch_add(&tp_got, 1);
    return PX_OK;
}
static const px_behavior tp_sub_b = {.name = "race.tp.sub", .init = tp_sub_init,
                                     .receive = tp_sub_recv};

/* An actor publisher: 100 publications a turn, then a kick to itself. */
static px_err tp_pub_recv(px_ctx *ctx, px_msg *m) {
    uint64_t left = px_msg_get_u64(m);
    for (uint64_t i = 0; i < 100 && left > 0; i++, left--) {
        tp_publish(px_ctx_system(ctx), (uint32_t)(left % TP_TOPICS), left);
    }
    if (left == 0) {
        atomic_fetch_add(&tp_pubs_done, 1);
        return PX_OK;
    }
    px_msg *k = NULL;
    px_msg_u64(&k, TP_KICK, left);
    return px_send(ctx, px_self(ctx), &k);
}
static const px_behavior tp_pub_b = {.name = "race.tp.pub", .receive = tp_pub_recv};

static void *tp_thread(void *p) {
    px_system *sys = p;
    uint32_t seed = (uint32_t)(uintptr_t)&seed;
    for (uint64_t i = 0; i < TP_PER_THREAD; i++) {
        seed = seed * 1103515245u + 12345u;
        tp_publish(sys, (seed >> 8) % TP_TOPICS, i);
    }
    atomic_fetch_add(&tp_pubs_done, 1);
    return NULL;
}

static px_err tp_send(void *arg, px_ref to, px_msg *m) {
    (void)arg;
    (void)to;
    (void)m;
    return PX_EUNREACHABLE; /* every ref here is local */
}

static void tp_interest_hook(void *arg, const char *topic, int on) {
    (void)arg;
    if (atomic_fetch_add(&tp_in_hook, 1) != 0) {
        atomic_fetch_add(&tp_bad_events, 1); /* calls overlapped */
    }
    int t = 0;
    while (t < TP_TOPICS && strcmp(tp_names[t], topic) != 0) {
        t++;
    }
    if (t == TP_TOPICS || atomic_exchange(&tp_interest[t], on) == on) {
        atomic_fetch_add(&tp_bad_events, 1); /* unknown, or on twice / off twice */
    }
    atomic_fetch_sub(&tp_in_hook, 1);
}

static void tp_publish_hook(void *arg, const char *topic, const px_msg *m) {
    (void)arg;
    (void)topic;
    (void)m;
    atomic_fetch_add(&tp_hooked, 1);
}

static void tp_dead_hook(void *arg, px_ref target, const px_msg *m, px_err why) {
    (void)arg;
    (void)target;
    (void)why;
    if (px_msg_tag(m) >= TP_TAG) {
        atomic_fetch_add(&tp_dead, 1); /* a publication its subscriber ended with */
    }
}

static int tp_spawn(px_system *sys, int i) {
    px_msg *arg = NULL;
    px_msg_u64(&arg, 0, (uint64_t)i);
    px_ref r;
    px_err e = px_system_spawn(sys, &tp_sub_b, &arg, NULL, &r);
    px_msg_free(arg);
    if (e == PX_OK) {
        ref_store(tp_subs, i, r);
    }
    return e == PX_OK;
}

static int topics(void) {
    int ok = 1;
    px_system *sys = new_system(PX_SHUTDOWN_DRAIN);
    px_router router = {.send = tp_send, .topic_interest = tp_interest_hook,
                        .publish = tp_publish_hook};
    px_system_set_router(sys, &router);
    px_system_on_dead_letter(sys, tp_dead_hook, NULL);
    for (int i = 0; i < TP_SUBS; i++) {
        CHECK(tp_spawn(sys, i), "spawn subscriber %d", i);
    }
    for (int i = 0; i < 2; i++) {
        px_ref p;
        px_msg *k = NULL;
        px_msg_u64(&k, TP_KICK, TP_PER_ACTOR);
        CHECK(px_system_spawn(sys, &tp_pub_b, NULL, NULL, &p) == PX_OK, "spawn publisher");
        CHECK(px_system_send(sys, p, &k) == PX_OK, "kick");
    }
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        pthread_create(&t[i], NULL, tp_thread, sys);
    }
    /* While the publishers run (at most 2000 rounds): toggle
     * subscriptions, and stop subscribers and spawn new ones in their place
     * (init subscribes) — once the old one is gone, so that the number of
     * subscribers stays bounded however slow the workers are. */
    uint32_t seed = 777;
    for (int round = 0; round < 2000 && atomic_load(&tp_pubs_done) < 4; round++) {
        seed = seed * 1103515245u + 12345u;
        int i = (int)((seed >> 8) % TP_SUBS);
        if (round % 3 == 0) {
            px_ref old = ref_load(tp_subs, i);
            px_stop(sys, old);
            CHECK(AWAIT(!px_is_alive(sys, old), 10000), "subscriber %d did not stop", i);
            CHECK(tp_spawn(sys, i), "respawn subscriber %d", i);
        } else {
            px_msg *m = NULL;
            px_msg_u64(&m, TP_TOGGLE, seed >> 4);
            if (px_system_send(sys, ref_load(tp_subs, i), &m) != PX_OK) {
                px_msg_free(m);
            }
        }
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
    }
    CHECK(AWAIT(atomic_load(&tp_pubs_done) == 4, 60000), "actor publishers did not finish");
    px_system_shutdown(sys); /* drains, then every subscriber ends */
    px_system_stats st;
    px_system_stats_get(sys, &st);
    uint64_t pub = atomic_load(&tp_published), got = atomic_load(&tp_got);
    uint64_t dead = atomic_load(&tp_dead);
    CHECK(pub == 2 * (TP_PER_THREAD + TP_PER_ACTOR) && st.published == pub,
          "published %llu, counted %llu", (unsigned long long)pub,
          (unsigned long long)st.published);
    CHECK(atomic_load(&tp_hooked) == pub, "publish hook saw %llu of %llu",
          (unsigned long long)atomic_load(&tp_hooked), (unsigned long long)pub);
    CHECK(st.publish_deliveries == got + dead && st.publish_refused == 0,
          "deliveries %llu != received %llu + dead letters %llu (refused %llu)",
          (unsigned long long)st.publish_deliveries, (unsigned long long)got,
          (unsigned long long)dead, (unsigned long long)st.publish_refused);
    CHECK(atomic_load(&tp_bad) == 0, "%llu bad payloads or calls",
          (unsigned long long)atomic_load(&tp_bad));
    CHECK(atomic_load(&tp_bad_events) == 0, "%d interest calls overlapped or repeated a state",
          atomic_load(&tp_bad_events));
    for (int i = 0; i < TP_TOPICS; i++) {
        CHECK(atomic_load(&tp_interest[i]) == 0, "topic %s still 'on' with every actor gone",
              tp_names[i]);
    }
    CHECK(st.live_actors == 0, "live %llu after shutdown", (unsigned long long)st.live_actors);
    px_system_free(sys);
    return ok;
}

/* ---- 12. router swaps under traffic ----
 *
 * Threads and actors send to a remote ref while the main thread swaps the
 * router among two tables and none, 300 times. Every call through a table
 * must see that table's own arg (a half-written or reused table would
 * mix them), no call may be inside a table once the swap away from it
 * returned (each table counts the calls inside it), and every send is
 * accounted: taken by a router or refused PX_EUNREACHABLE. */

typedef struct rs_tab {
    int id;
    atomic_int inside;
    atomic_uint_least64_t calls;
} rs_tab;
static rs_tab rs_a = {.id = 1}, rs_b = {.id = 2};
static _Atomic uint64_t rs_bad, rs_refused, rs_taken, rs_sent;
static atomic_int rs_stop;
static px_ref rs_to;

static px_err rs_send(void *arg, px_ref to, px_msg *m) {
    rs_tab *t = arg;
    atomic_fetch_add(&t->inside, 1);
    if ((t != &rs_a && t != &rs_b) || px_msg_get_u64(m) != 42 || !px_ref_eq(to, rs_to)) {
        atomic_fetch_add(&rs_bad, 1);
    }
    atomic_fetch_add(&t->calls, 1);
    px_msg_free(m);
    atomic_fetch_sub(&t->inside, 1);
    return PX_OK;
}
static px_err rs_send_b(void *arg, px_ref to, px_msg *m) {
    if (arg != &rs_b) {
        atomic_fetch_add(&rs_bad, 1); /* b's function with another arg */
    }
    return rs_send(arg, to, m);
}

static void rs_one(px_err e, px_msg *m) {
    if (e == PX_OK) {
        atomic_fetch_add(&rs_taken, 1);
    } else if (e == PX_EUNREACHABLE) {
        atomic_fetch_add(&rs_refused, 1);
        px_msg_free(m);
    } else {
        atomic_fetch_add(&rs_bad, 1);
        px_msg_free(m);
    }
    atomic_fetch_add(&rs_sent, 1);
}

static void *rs_thread(void *arg) {
    px_system *sys = arg;
    while (!atomic_load(&rs_stop)) {
        px_msg *m = NULL;
        px_msg_u64(&m, 1, 42);
        rs_one(px_system_send(sys, rs_to, &m), m);
    }
    return NULL;
}

static px_err rs_actor_recv(px_ctx *ctx, px_msg *m) {
    (void)m;
    for (int i = 0; i < 50; i++) {
        px_msg *d = NULL;
        px_msg_u64(&d, 1, 42);
        rs_one(px_send(ctx, rs_to, &d), d);
    }
    if (atomic_load(&rs_stop)) {
        return PX_OK;
    }
    px_msg *k = NULL;
    px_msg_u64(&k, 0, 0);
    return px_send(ctx, px_self(ctx), &k); /* again, next turn */
}
static const px_behavior rs_actor_b = {.name = "race.rs", .receive = rs_actor_recv};

static int router_swaps(void) {
    int ok = 1;
    px_system *sys = new_system(PX_SHUTDOWN_DRAIN);
    px_ref root = px_system_root(sys);
    rs_to = (px_ref){root.node + 1, 9, 3, 1};
    px_router ra = {.send = rs_send, .arg = &rs_a}, rb = {.send = rs_send_b, .arg = &rs_b};
    px_system_set_router(sys, &ra);
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        pthread_create(&t[i], NULL, rs_thread, sys);
    }
    for (int i = 0; i < 2; i++) {
        px_ref a;
        px_msg *k = NULL;
        px_msg_u64(&k, 0, 0);
        CHECK(px_system_spawn(sys, &rs_actor_b, NULL, NULL, &a) == PX_OK, "spawn sender");
        CHECK(px_system_send(sys, a, &k) == PX_OK, "kick");
    }
    for (int round = 0; round < 300; round++) {
        int which = round % 3; /* b, none, a, ... */
        const px_router *next = which == 0 ? &rb : which == 1 ? NULL : &ra;
        rs_tab *left = which == 0 ? &rs_a : which == 1 ? &rs_b : NULL;
        px_system_set_router(sys, next);
        if (left != NULL) {
            CHECK(atomic_load(&left->inside) == 0, "round %d: a call still inside table %d",
                  round, left->id);
        }
        uint64_t before = atomic_load(&rs_sent);
        CHECK(AWAIT(atomic_load(&rs_sent) > before + 20, 10000), "round %d: sends stalled",
              round);
    }
    atomic_store(&rs_stop, 1);
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
    }
    px_system_shutdown(sys);
    px_system_set_router(sys, NULL);
    uint64_t calls = atomic_load(&rs_a.calls) + atomic_load(&rs_b.calls);
    CHECK(atomic_load(&rs_bad) == 0, "%llu calls saw another table's arg or bad input",
          (unsigned long long)atomic_load(&rs_bad));
    CHECK(calls == atomic_load(&rs_taken) &&
              atomic_load(&rs_taken) + atomic_load(&rs_refused) == atomic_load(&rs_sent),
          "sent %llu: taken %llu (calls %llu), refused %llu",
          (unsigned long long)atomic_load(&rs_sent), (unsigned long long)atomic_load(&rs_taken),
          (unsigned long long)calls, (unsigned long long)atomic_load(&rs_refused));
    CHECK(atomic_load(&rs_a.calls) > 0 && atomic_load(&rs_b.calls) > 0 &&
              atomic_load(&rs_refused) > 0,
          "every table was used and none refused: a %llu, b %llu, refused %llu",
          (unsigned long long)atomic_load(&rs_a.calls), (unsigned long long)atomic_load(&rs_b.calls),
          (unsigned long long)atomic_load(&rs_refused));
    px_system_free(sys);
    return ok;
}

int main(void) {
    struct {
        const char *name;
        int (*fn)(void);
    } cases[] = {{"fan_in_keeps_fifo_per_sender", fan_in},
                 {"churn_never_delivers_to_a_newer_actor_and_walks_safely", churn},
                 {"asks_get_exactly_one_outcome", asks},
                 {"bounded_block_loses_nothing", bounded_block},
                 {"timers_fire_or_cancel_exactly_once", timers},
                 {"alarms_set_and_freed_from_many_threads", alarms},
                 {"shutdown_with_sends_in_flight_loses_nothing", shutdown_in_flight},
                 {"supervised_restarts_lose_no_message", supervision},
                 {"children_placed_elsewhere_restart_and_lose_no_message", supervision_placed},
                 {"reincarnations_lose_nothing_locally", reincarnations},
                 {"topics_deliver_exactly_while_subscribers_come_and_go", topics},
                 {"router_swaps_under_traffic_use_one_table_per_call", router_swaps}};
    int passed = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t t0 = now_ms();
        int ok = cases[i].fn();
        printf("%s %s (%lld ms)\n", ok ? "ok  " : "FAIL", cases[i].name, (long long)(now_ms() - t0));
        fflush(stdout);
        if (ok) {
            passed++;
        } else {
            failures++;
        }
    }
    printf("race_core: %d passed, %d failed\n", passed, failures);
    return failures == 0 ? 0 : 1;
}
