/*
 * bench_topic.c — mesh.publish_local_ns, mesh.publish_local_4subs_ns and
 * mesh.publish_unrouted_ns: the node-local topic broker (plexus/topic.h).
 *
 * A publisher actor publishes small bytes messages (px_msg_u64) on one
 * topic in chunks of CHUNK, re-triggering itself with a message to self,
 * to S consumer actors that subscribed to it in init and count. Flow
 * control as in bench_send: at most WINDOW publications beyond what the
 * slowest consumer acknowledged; each consumer acks cumulatively every
 * ACK_EVERY messages. Figure = elapsed / publications, from the kick until
 * every consumer has counted them all, so delivery is included. Each
 * figure uses a fresh system and first runs WARM publications (not timed);
 * the timed run is sized from the warm-up's rate to last about TARGET_NS.
 * unrouted: px_publish from the main thread on a topic nobody subscribes
 * to (message made, looked up, counted, freed).
 */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "bench_util.h"

#ifndef CHUNK
#define CHUNK 256u
#endif
#ifndef WINDOW
#define WINDOW (1u << 14)
#endif
#ifndef ACK_EVERY
#define ACK_EVERY (1u << 11)
#endif
#define WARM 500000u
#define TARGET_NS 1500000000.0
#define MAX_SUBS 4
#define TOPIC "bench.prices.eurusd"
enum { TAG_KICK = 1, TAG_DATA = 2, TAG_ACK = 16 /* + consumer index */ };

/* Each side's hot state on its own cache line (see bench_send.c). */
#define LINE 64
typedef struct publisher {
    uint64_t quota; /* publish up to this many, in total */
    uint64_t sent;
    uint64_t acked[MAX_SUBS];
    unsigned nsubs;
    int kick_pending;
} __attribute__((aligned(LINE))) publisher;

typedef struct consumer {
    uint64_t count;
} __attribute__((aligned(LINE))) consumer;

static publisher pub;
static consumer cons[MAX_SUBS];
static _Alignas(LINE) _Atomic uint64_t target; /* every consumer counts to this */
static _Alignas(LINE) _Atomic unsigned finished;
static _Alignas(LINE) bench_done done;

static uint64_t min_acked(const publisher *p) {
    uint64_t m = p->acked[0];
    for (unsigned i = 1; i < p->nsubs; i++) {
        m = p->acked[i] < m ? p->acked[i] : m;
    }
    return m;
}

static px_err pub_pump(px_ctx *ctx, publisher *p) {
    px_system *sys = px_ctx_system(ctx);
    uint64_t acked = min_acked(p);
    uint32_t n = 0;
    while (n < CHUNK && p->sent < p->quota && p->sent - acked < WINDOW) {
        px_msg *m = NULL;
        px_err err = px_msg_u64(&m, TAG_DATA, p->sent);
        if (err == PX_OK) {
            err = px_publish(sys, TOPIC, &m);
        }
        if (err != PX_OK) {
            px_msg_free(m);
            fprintf(stderr, "bench: px_publish: %s\n", px_strerror(err));
            bench_done_fail(&done);
            return err;
        }
        p->sent++;
        n++;
    }
    if (p->sent < p->quota && p->sent - acked < WINDOW) {
        p->kick_pending = 1;
        return bench_send_u64(ctx, px_self(ctx), TAG_KICK, 0, &done);
    }
    return PX_OK; /* done, or window full: the next ack resumes us */
}

static px_err pub_receive(px_ctx *ctx, px_msg *msg) {
    publisher *p = &pub;
    uint32_t tag = px_msg_tag(msg);
    if (tag == TAG_KICK) {
        p->kick_pending = 0;
        return pub_pump(ctx, p);
    }
    if (tag >= TAG_ACK && tag < TAG_ACK + MAX_SUBS) {
        p->acked[tag - TAG_ACK] = px_msg_get_u64(msg);
        return p->kick_pending ? PX_OK : pub_pump(ctx, p);
    }
    return PX_ETYPE;
}

static const px_behavior pub_behavior = {.name = "bench.topic.pub", .receive = pub_receive};

static px_err cons_init(px_ctx *ctx, const px_msg *arg) {
    uint64_t idx = arg != NULL ? px_msg_get_u64(arg) : MAX_SUBS;
    if (idx >= MAX_SUBS) {
        return PX_EINVAL;
    }
    px_set_state(ctx, &cons[idx]);
    return px_subscribe(ctx, TOPIC);
}

static px_err cons_receive(px_ctx *ctx, px_msg *msg) {
    consumer *c = px_state(ctx);
    if (px_msg_tag(msg) != TAG_DATA) {
        return PX_ETYPE;
    }
    uint64_t n = ++c->count;
    if (n % ACK_EVERY == 0) {
        px_err err = bench_send_u64(ctx, px_msg_sender(msg), TAG_ACK + (uint32_t)(c - cons), n,
                                    &done);
        if (err != PX_OK) {
            return err;
        }
    }
    if (n == atomic_load_explicit(&target, memory_order_relaxed) &&
        atomic_fetch_add(&finished, 1) + 1 == pub.nsubs) {
        bench_done_signal(&done);
    }
    return PX_OK;
}

static const px_behavior cons_behavior = {
    .name = "bench.topic.consumer", .init = cons_init, .receive = cons_receive};

/* Publishes up to a total of `upto` and waits until every consumer has
 * them all; returns the elapsed ns. */
static uint64_t phase(px_system *sys, px_ref pref, uint64_t upto, const char *figure) {
    bench_done_init(&done);
    atomic_store(&finished, 0);
    atomic_store(&target, upto);
    pub.quota = upto;
    pub.kick_pending = 1;
    uint64_t t0 = bench_kick(sys, pref, TAG_KICK, "kick");
    uint64_t t1 = bench_done_wait(&done, 300, figure);
    bench_done_fini(&done);
    for (unsigned i = 0; i < pub.nsubs; i++) {
        if (cons[i].count != upto) {
            bench_die("%s: consumer %u counted %llu, expected %llu", figure, i,
                      (unsigned long long)cons[i].count, (unsigned long long)upto);
        }
    }
    return t1 - t0;
}

static void run(const char *figure, unsigned nsubs, uint64_t n) {
    memset(&pub, 0, sizeof(pub));
    memset(cons, 0, sizeof(cons));
    pub.nsubs = nsubs;
    px_system *sys = bench_system(0);
    for (unsigned i = 0; i < nsubs; i++) {
        px_msg *arg = NULL;
        bench_check(px_msg_u64(&arg, 0, i), "px_msg_u64");
        bench_check(px_system_spawn(sys, &cons_behavior, &arg, NULL, NULL), "spawn consumer");
        px_msg_free(arg); /* NULL after a successful spawn */
    }
    px_ref pref;
    bench_check(px_system_spawn(sys, &pub_behavior, NULL, NULL, &pref), "spawn publisher");
    uint64_t warm_ns = phase(sys, pref, WARM, figure);
    if (n == 0) {
        double per = (double)warm_ns / WARM;
        n = (uint64_t)(TARGET_NS / (per > 1 ? per : 1));
        n = n < 1000000 ? 1000000 : (n > 100000000 ? 100000000 : n);
    }
    uint64_t ns = phase(sys, pref, WARM + n, figure);
    px_system_stats st = bench_stats(sys);
    if (st.published != WARM + n || st.publish_deliveries != (WARM + n) * nsubs) {
        bench_die("%s: published %llu, delivered %llu", figure, (unsigned long long)st.published,
                  (unsigned long long)st.publish_deliveries);
    }
    bench_figure_f(figure, (double)ns / (double)n, 1, "ns");
    bench_system_free(sys);
}

static void run_unrouted(const char *figure, uint64_t n) {
    px_system *sys = bench_system(0);
    if (n == 0) {
        n = 5000000;
    }
    uint64_t t0 = 0;
    for (uint64_t i = 0; i < WARM + n; i++) {
        if (i == WARM) {
            t0 = bench_now_ns();
        }
        px_msg *m = NULL;
        bench_check(px_msg_u64(&m, TAG_DATA, i), "px_msg_u64");
        bench_check(px_publish(sys, "bench.nobody", &m), "px_publish");
    }
    uint64_t ns = bench_now_ns() - t0;
    px_system_stats st = bench_stats(sys);
    if (st.publish_unrouted != WARM + n) {
        bench_die("%s: unrouted %llu", figure, (unsigned long long)st.publish_unrouted);
    }
    bench_figure_f(figure, (double)ns / (double)n, 1, "ns");
    bench_system_free(sys);
}

int main(int argc, char **argv) {
    uint64_t n = bench_arg_u64(argc, argv, 1, 0); /* 0: sized from the warm-up */
    run("mesh.publish_local_ns", 1, n);
    run("mesh.publish_local_4subs_ns", 4, n);
    run_unrouted("mesh.publish_unrouted_ns", n);
    return 0;
}
