/*
 * bench_idle_mem.c — core.idle_actor_bytes: RSS growth per idle actor.
 *
 * Measures the resident set (/proc/self/statm) with the system started,
 * then has a spawner actor spawn N children that never receive anything,
 * and measures again once the spawner reports all N spawned. Figure =
 * (RSS after - RSS before) / N, in bytes.
 */
#include <stdio.h>

#include "bench_util.h"

#define CHUNK 4096u
enum { TAG_GO = 1 };

static uint64_t n_actors;
static uint64_t spawned;
static bench_done done;

static px_err idle_receive(px_ctx *ctx, px_msg *msg)
{
    (void)ctx;
    (void)msg;
    return PX_OK;
}

static const px_behavior idle_behavior = {
    .name = "bench.idle",
    .receive = idle_receive,
};

static px_err spawner_receive(px_ctx *ctx, px_msg *msg)
{
    (void)msg;
    for (uint32_t i = 0; i < CHUNK && spawned < n_actors; i++) {
        px_err err = px_spawn(ctx, &idle_behavior, NULL, NULL, NULL);
        if (err != PX_OK) {
            fprintf(stderr, "bench: px_spawn #%llu: %s\n", (unsigned long long)spawned,
                    px_strerror(err));
            bench_done_fail(&done);
            return err;
        }
        spawned++;
    }
    if (spawned < n_actors) {
        return bench_send_u64(ctx, px_self(ctx), TAG_GO, 0, &done);
    }
    bench_done_signal(&done);
    return PX_OK;
}

static const px_behavior spawner_behavior = {
    .name = "bench.idle.spawner",
    .receive = spawner_receive,
};

int main(int argc, char **argv)
{
    n_actors = bench_arg_u64(argc, argv, 1, 1000000);
    bench_done_init(&done);
    px_system *sys = bench_system((uint32_t)(n_actors + 1024));

    px_ref spawner_ref;
    bench_check(px_system_spawn(sys, &spawner_behavior, NULL, NULL, &spawner_ref),
                "spawn spawner");
    px_msg *go = NULL;
    bench_check(px_msg_u64(&go, TAG_GO, 0), "px_msg_u64");
    uint64_t rss0 = bench_rss_bytes();
    bench_check(px_system_send(sys, spawner_ref, &go), "send go");
    bench_done_wait(&done, 300, "idle spawn");
    uint64_t rss1 = bench_rss_bytes();

    px_system_stats st = bench_stats(sys);
    if (st.live_actors < n_actors) {
        bench_die("idle: live_actors %llu < %llu", (unsigned long long)st.live_actors,
                  (unsigned long long)n_actors);
    }
    fprintf(stderr, "bench: idle: rss %.1f MiB -> %.1f MiB for %llu actors\n",
            (double)rss0 / 1048576.0, (double)rss1 / 1048576.0,
            (unsigned long long)n_actors);
    uint64_t growth = rss1 > rss0 ? rss1 - rss0 : 0;
    bench_figure_u64("core.idle_actor_bytes", growth / n_actors, "bytes");
    bench_system_free(sys);
    bench_done_fini(&done);
    return 0;
}
