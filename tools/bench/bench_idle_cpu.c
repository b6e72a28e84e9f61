/*
 * bench_idle_cpu.c — core.idle_cpu_pct: CPU used by an idle system.
 *
 * Warms the system up (spawns IDLE_ACTORS actors that stay alive, then
 * bounces WARM_TRIPS ping-pong round trips so every worker has run), then
 * lets it sit idle for WINDOW_MS and measures process CPU time
 * (CLOCK_PROCESS_CPUTIME_ID, all threads) against wall time over that
 * window. Figure = 100 * cpu / wall, in percent of one CPU. Parked workers
 * should make this close to 0.
 */
#include <stdio.h>
#include <time.h>

#include "bench_util.h"

#define IDLE_ACTORS 1000u
#define WARM_TRIPS 100000u
#define WINDOW_MS 500u
enum { TAG_START = 1, TAG_PING = 2, TAG_PONG = 3 };

static uint64_t trips;
static px_ref ponger_ref;
static bench_done done;

static px_err idle_receive(px_ctx *ctx, px_msg *msg)
{
    (void)ctx;
    (void)msg;
    return PX_OK;
}

static px_err ponger_receive(px_ctx *ctx, px_msg *msg)
{
    return bench_send_u64(ctx, px_msg_sender(msg), TAG_PONG, px_msg_get_u64(msg), &done);
}

static px_err pinger_receive(px_ctx *ctx, px_msg *msg)
{
    if (px_msg_tag(msg) == TAG_PONG && ++trips == WARM_TRIPS) {
        bench_done_signal(&done);
        return PX_OK;
    }
    return bench_send_u64(ctx, ponger_ref, TAG_PING, trips, &done);
}

static const px_behavior idle_behavior = {.name = "bench.idle", .receive = idle_receive};
static const px_behavior pinger_behavior = {.name = "bench.pinger", .receive = pinger_receive};
static const px_behavior ponger_behavior = {.name = "bench.ponger", .receive = ponger_receive};

int main(void)
{
    bench_done_init(&done);
    px_system *sys = bench_system(0);
    for (uint32_t i = 0; i < IDLE_ACTORS; i++) {
        bench_check(px_system_spawn(sys, &idle_behavior, NULL, NULL, NULL), "spawn idle");
    }
    px_ref pinger;
    bench_check(px_system_spawn(sys, &ponger_behavior, NULL, NULL, &ponger_ref), "spawn ponger");
    bench_check(px_system_spawn(sys, &pinger_behavior, NULL, NULL, &pinger), "spawn pinger");
    (void)bench_kick(sys, pinger, TAG_START, "send start");
    bench_done_wait(&done, 300, "idle_cpu warm-up");

    /* The idle window itself: sleeping is the measurement here. */
    uint64_t c0 = bench_cpu_ns();
    uint64_t w0 = bench_now_ns();
    struct timespec ts = {.tv_sec = WINDOW_MS / 1000, .tv_nsec = (WINDOW_MS % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
    uint64_t c1 = bench_cpu_ns();
    uint64_t w1 = bench_now_ns();
    bench_figure_f("core.idle_cpu_pct", 100.0 * (double)(c1 - c0) / (double)(w1 - w0), 2, "%");
    bench_system_free(sys);
    bench_done_fini(&done);
    return 0;
}
