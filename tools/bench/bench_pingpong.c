/*
 * bench_pingpong.c — core.pingpong_rtt_ns: two actors bounce one message.
 *
 * The pinger sends a u64 to the ponger, which sends a u64 back to the
 * sender; after N round trips the pinger signals completion. Only one
 * message is in flight at any time. Figure = wall time / N.
 */
#include <stdio.h>

#include "bench_util.h"

enum { TAG_START = 1, TAG_PING = 2, TAG_PONG = 3 };

static uint64_t n_trips;
static uint64_t trips;
static px_ref ponger_ref;
static bench_done done;

static px_err ponger_receive(px_ctx *ctx, px_msg *msg)
{
    if (px_msg_tag(msg) != TAG_PING) {
        return PX_ETYPE;
    }
    return bench_send_u64(ctx, px_msg_sender(msg), TAG_PONG, px_msg_get_u64(msg), &done);
}

static px_err pinger_receive(px_ctx *ctx, px_msg *msg)
{
    switch (px_msg_tag(msg)) {
    case TAG_START:
        return bench_send_u64(ctx, ponger_ref, TAG_PING, 0, &done);
    case TAG_PONG:
        if (px_msg_get_u64(msg) != trips) {
            fprintf(stderr, "bench: pong %llu, expected %llu\n",
                    (unsigned long long)px_msg_get_u64(msg), (unsigned long long)trips);
            bench_done_fail(&done);
            return PX_EFAIL;
        }
        if (++trips == n_trips) {
            bench_done_signal(&done);
            return PX_OK;
        }
        return bench_send_u64(ctx, ponger_ref, TAG_PING, trips, &done);
    default:
        return PX_ETYPE;
    }
}

static const px_behavior pinger_behavior = {.name = "bench.pinger", .receive = pinger_receive};
static const px_behavior ponger_behavior = {.name = "bench.ponger", .receive = ponger_receive};

int main(int argc, char **argv)
{
    n_trips = bench_arg_u64(argc, argv, 1, 1000000);
    bench_done_init(&done);
    px_system *sys = bench_system(0);
    px_ref pinger;
    bench_check(px_system_spawn(sys, &ponger_behavior, NULL, NULL, &ponger_ref), "spawn ponger");
    bench_check(px_system_spawn(sys, &pinger_behavior, NULL, NULL, &pinger), "spawn pinger");
    uint64_t t0 = bench_kick(sys, pinger, TAG_START, "send start");
    uint64_t t1 = bench_done_wait(&done, 300, "pingpong");
    bench_figure_u64("core.pingpong_rtt_ns", (t1 - t0) / n_trips, "ns");
    bench_system_free(sys);
    bench_done_fini(&done);
    return 0;
}
