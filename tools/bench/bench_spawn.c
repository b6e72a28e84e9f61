/*
 * bench_spawn.c — core.spawn_ns: spawn + first message, per actor.
 *
 * A spawner actor spawns N children in chunks (re-triggering itself with a
 * message so it yields between chunks) and sends each child one u64
 * message. Each child counts its message on a shared atomic counter; the
 * child that brings it to N signals completion. Figure = wall time from the
 * first trigger to the last child's receive, divided by N. Children stay
 * alive (idle) until shutdown, which is not timed.
 */
#include <stdatomic.h>
#include <stdio.h>

#include "bench_util.h"

#define CHUNK 4096u
enum { TAG_GO = 1, TAG_HELLO = 2 };

static uint64_t n_actors;
static _Atomic uint64_t received;
static uint64_t checksum_expected;
static _Atomic uint64_t checksum;
static bench_done done;

static px_err child_receive(px_ctx *ctx, px_msg *msg)
{
    (void)ctx;
    atomic_fetch_add_explicit(&checksum, px_msg_get_u64(msg), memory_order_relaxed);
    if (atomic_fetch_add_explicit(&received, 1, memory_order_acq_rel) + 1 == n_actors) {
        bench_done_signal(&done);
    }
    return PX_OK;
}

static const px_behavior child_behavior = {
    .name = "bench.spawn.child",
    .receive = child_receive,
};

typedef struct spawner {
    uint64_t spawned;
} spawner;

static spawner spawner_state;

static px_err spawner_receive(px_ctx *ctx, px_msg *msg)
{
    if (px_msg_tag(msg) != TAG_GO) {
        return PX_ETYPE;
    }
    spawner *s = &spawner_state;
    for (uint32_t i = 0; i < CHUNK && s->spawned < n_actors; i++) {
        px_ref child;
        px_err err = px_spawn(ctx, &child_behavior, NULL, NULL, &child);
        if (err != PX_OK) {
            fprintf(stderr, "bench: px_spawn #%llu: %s\n",
                    (unsigned long long)s->spawned, px_strerror(err));
            bench_done_fail(&done);
            return err;
        }
        s->spawned++;
        err = bench_send_u64(ctx, child, TAG_HELLO, s->spawned, &done);
        if (err != PX_OK) {
            return err;
        }
    }
    if (s->spawned < n_actors) {
        return bench_send_u64(ctx, px_self(ctx), TAG_GO, 0, &done);
    }
    return PX_OK;
}

static const px_behavior spawner_behavior = {
    .name = "bench.spawn.spawner",
    .receive = spawner_receive,
};

int main(int argc, char **argv)
{
    n_actors = bench_arg_u64(argc, argv, 1, 1000000);
    checksum_expected = n_actors * (n_actors + 1) / 2;
    bench_done_init(&done);
    px_system *sys = bench_system((uint32_t)(n_actors + 1024));

    px_ref spawner_ref;
    bench_check(px_system_spawn(sys, &spawner_behavior, NULL, NULL, &spawner_ref),
                "spawn spawner");
    uint64_t t0 = bench_kick(sys, spawner_ref, TAG_GO, "send go");
    uint64_t t1 = bench_done_wait(&done, 300, "spawn");

    if (atomic_load(&checksum) != checksum_expected) {
        bench_die("spawn: checksum %llu, expected %llu",
                  (unsigned long long)atomic_load(&checksum),
                  (unsigned long long)checksum_expected);
    }
    px_system_stats st = bench_stats(sys);
    if (st.live_actors < n_actors) {
        bench_die("spawn: live_actors %llu < %llu", (unsigned long long)st.live_actors,
                  (unsigned long long)n_actors);
    }
    bench_figure_u64("core.spawn_ns", (t1 - t0) / n_actors, "ns");
    uint64_t s0 = bench_now_ns();
    bench_system_free(sys);
    fprintf(stderr, "bench: spawn: shutdown of %llu actors took %.1f ms\n",
            (unsigned long long)n_actors, (double)(bench_now_ns() - s0) / 1e6);
    bench_done_fini(&done);
    return 0;
}
