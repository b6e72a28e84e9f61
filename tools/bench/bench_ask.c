/*
 * bench_ask.c — core.ask_rtt_ns: N sequential px_ask round trips.
 *
 * The asker px_asks the responder (u64 payload), which px_reply's with the
 * value plus one. The asker checks px_msg_is_reply, the correlation id and
 * the value, then asks again; an ask timeout fails the run. Figure = wall
 * time / N.
 */
#include <stdio.h>

#include "bench_util.h"

enum { TAG_START = 1, TAG_ASK = 2, TAG_ANSWER = 3 };
#define ASK_TIMEOUT_MS 10000u

static uint64_t n_asks;
static uint64_t asks;
static uint64_t pending_corr;
static px_ref responder_ref;
static bench_done done;

static px_err ask_next(px_ctx *ctx)
{
    px_msg *m = NULL;
    px_err err = px_msg_u64(&m, TAG_ASK, asks);
    if (err == PX_OK) {
        err = px_ask(ctx, responder_ref, &m, ASK_TIMEOUT_MS, &pending_corr);
    }
    if (err != PX_OK) {
        px_msg_free(m);
        fprintf(stderr, "bench: px_ask: %s\n", px_strerror(err));
        bench_done_fail(&done);
    }
    return err;
}

static px_err responder_receive(px_ctx *ctx, px_msg *msg)
{
    if (px_msg_tag(msg) != TAG_ASK || px_msg_corr(msg) == 0) {
        return PX_ETYPE;
    }
    px_msg *r = NULL;
    px_err err = px_msg_u64(&r, TAG_ANSWER, px_msg_get_u64(msg) + 1);
    if (err == PX_OK) {
        err = px_reply(ctx, msg, &r);
    }
    if (err != PX_OK) {
        px_msg_free(r);
        fprintf(stderr, "bench: px_reply: %s\n", px_strerror(err));
        bench_done_fail(&done);
    }
    return err;
}

static px_err asker_receive(px_ctx *ctx, px_msg *msg)
{
    if (px_msg_kind_of(msg) == PX_MSG_ASK_TIMEOUT) {
        fprintf(stderr, "bench: ask %llu timed out\n", (unsigned long long)asks);
        bench_done_fail(&done);
        return PX_ETIMEDOUT;
    }
    if (px_msg_tag(msg) == TAG_START && !px_msg_is_reply(msg)) {
        return ask_next(ctx);
    }
    if (!px_msg_is_reply(msg) || px_msg_tag(msg) != TAG_ANSWER ||
        px_msg_corr(msg) != pending_corr || px_msg_get_u64(msg) != asks + 1) {
        fprintf(stderr, "bench: bad reply (reply=%d tag=%u corr=%llu/%llu value=%llu)\n",
                px_msg_is_reply(msg), px_msg_tag(msg),
                (unsigned long long)px_msg_corr(msg), (unsigned long long)pending_corr,
                (unsigned long long)px_msg_get_u64(msg));
        bench_done_fail(&done);
        return PX_EFAIL;
    }
    if (++asks == n_asks) {
        bench_done_signal(&done);
        return PX_OK;
    }
    return ask_next(ctx);
}

static const px_behavior asker_behavior = {.name = "bench.asker", .receive = asker_receive};
static const px_behavior responder_behavior = {.name = "bench.responder",
                                               .receive = responder_receive};

int main(int argc, char **argv)
{
    n_asks = bench_arg_u64(argc, argv, 1, 500000);
    bench_done_init(&done);
    px_system *sys = bench_system(0);
    px_ref asker;
    bench_check(px_system_spawn(sys, &responder_behavior, NULL, NULL, &responder_ref),
                "spawn responder");
    bench_check(px_system_spawn(sys, &asker_behavior, NULL, NULL, &asker), "spawn asker");
    uint64_t t0 = bench_kick(sys, asker, TAG_START, "send start");
    uint64_t t1 = bench_done_wait(&done, 300, "ask");
    px_system_stats st = bench_stats(sys);
    if (st.ask_timeouts != 0 || st.late_replies != 0) {
        bench_die("ask: %llu timeouts, %llu late replies", (unsigned long long)st.ask_timeouts,
                  (unsigned long long)st.late_replies);
    }
    bench_figure_u64("core.ask_rtt_ns", (t1 - t0) / n_asks, "ns");
    bench_system_free(sys);
    bench_done_fini(&done);
    return 0;
}
