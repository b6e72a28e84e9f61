/*
 * bench_send.c — core.send_1to1_msgs_per_s and core.send_2to1_msgs_per_s.
 *
 * One-way throughput of small messages (px_msg_u64) from S sender actors to
 * one receiver. A sender sends in chunks of CHUNK and re-triggers itself
 * with a message to self (the runtime handles up to cfg.batch messages per
 * turn, so the sender gives up its worker every batch chunks). Flow
 * control keeps memory bounded without measuring round trips: a sender has
 * at most WINDOW unacknowledged messages; the receiver sends it a
 * cumulative ack every ACK_EVERY messages from it. Figure = N / (time from
 * the first trigger until the receiver has counted N). Each run uses a fresh
 * system.
 */
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
#define MAX_SENDERS 8
enum { TAG_KICK = 1, TAG_DATA = 2, TAG_ACK = 3 };

/* Each side's hot state on cache lines of its own: a sender's counters, the
 * receiver's counters, and the read-mostly setup apart from both. Without
 * this the benchmark measured its own false sharing (the receiver's total
 * shared a line with the ref every send reads), and the figure swung by a
 * quarter with the link layout of unrelated code. */
#define LINE 64
typedef struct sender {
    uint64_t quota;
    uint64_t sent;
    uint64_t acked;
    int kick_pending;
} __attribute__((aligned(LINE))) sender;

static sender senders[MAX_SENDERS];
static _Alignas(LINE) uint64_t recv_count[MAX_SENDERS];
static _Alignas(LINE) uint64_t recv_total;
static _Alignas(LINE) uint64_t n_total;
static px_ref receiver_ref;
static _Alignas(LINE) bench_done done;

static px_err sender_init(px_ctx *ctx, const px_msg *arg)
{
    if (arg == NULL || px_msg_get_u64(arg) >= MAX_SENDERS) {
        return PX_EINVAL;
    }
    uint64_t idx = px_msg_get_u64(arg);
    px_set_state(ctx, &senders[idx]);
    return PX_OK;
}

static px_err sender_pump(px_ctx *ctx, sender *s)
{
    uint64_t idx = (uint64_t)(s - senders);
    uint32_t n = 0;
    while (n < CHUNK && s->sent < s->quota && s->sent - s->acked < WINDOW) {
        px_err err = bench_send_u64(ctx, receiver_ref, TAG_DATA, idx, &done);
        if (err != PX_OK) {
            return err;
        }
        s->sent++;
        n++;
    }
    if (s->sent < s->quota && s->sent - s->acked < WINDOW) {
        s->kick_pending = 1;
        return bench_send_u64(ctx, px_self(ctx), TAG_KICK, 0, &done);
    }
    return PX_OK; /* done, or window full: the next ack resumes us */
}

static px_err sender_receive(px_ctx *ctx, px_msg *msg)
{
    sender *s = px_state(ctx);
    switch (px_msg_tag(msg)) {
    case TAG_KICK:
        s->kick_pending = 0;
        return sender_pump(ctx, s);
    case TAG_ACK:
        s->acked = px_msg_get_u64(msg);
        return s->kick_pending ? PX_OK : sender_pump(ctx, s);
    default:
        return PX_ETYPE;
    }
}

static const px_behavior sender_behavior = {
    .name = "bench.send.sender",
    .init = sender_init,
    .receive = sender_receive,
};

static px_err receiver_receive(px_ctx *ctx, px_msg *msg)
{
    uint64_t idx = px_msg_get_u64(msg);
    if (px_msg_tag(msg) != TAG_DATA || idx >= MAX_SENDERS) {
        return PX_ETYPE;
    }
    uint64_t c = ++recv_count[idx];
    if (c % ACK_EVERY == 0) {
        px_err err = bench_send_u64(ctx, px_msg_sender(msg), TAG_ACK, c, &done);
        if (err != PX_OK) {
            return err;
        }
    }
    if (++recv_total == n_total) {
        bench_done_signal(&done);
    }
    return PX_OK;
}

static const px_behavior receiver_behavior = {
    .name = "bench.send.receiver",
    .receive = receiver_receive,
};

static void run(const char *figure, unsigned n_senders, uint64_t n)
{
    memset(senders, 0, sizeof(senders));
    memset(recv_count, 0, sizeof(recv_count));
    recv_total = 0;
    n_total = n;
    bench_done_init(&done);
    px_system *sys = bench_system(0);

    bench_check(px_system_spawn(sys, &receiver_behavior, NULL, NULL, &receiver_ref),
                "spawn receiver");
    px_ref refs[MAX_SENDERS];
    for (unsigned i = 0; i < n_senders; i++) {
        senders[i].quota = n / n_senders + (i < n % n_senders ? 1 : 0);
        px_msg *arg = NULL;
        bench_check(px_msg_u64(&arg, 0, i), "px_msg_u64");
        bench_check(px_system_spawn(sys, &sender_behavior, &arg, NULL, &refs[i]),
                    "spawn sender");
        px_msg_free(arg); /* NULL after a successful spawn */
    }
    uint64_t t0 = bench_now_ns();
    for (unsigned i = 0; i < n_senders; i++) {
        senders[i].kick_pending = 1;
        (void)bench_kick(sys, refs[i], TAG_KICK, "send kick");
    }
    uint64_t t1 = bench_done_wait(&done, 300, figure);
    for (unsigned i = 0; i < n_senders; i++) {
        if (recv_count[i] != senders[i].quota) {
            bench_die("%s: receiver counted %llu from sender %u, expected %llu", figure,
                      (unsigned long long)recv_count[i], i,
                      (unsigned long long)senders[i].quota);
        }
    }
    double secs = (double)(t1 - t0) / 1e9;
    bench_figure_u64(figure, (uint64_t)((double)n / secs), "msgs/s");
    bench_system_free(sys);
    bench_done_fini(&done);
}

int main(int argc, char **argv)
{
    uint64_t n = bench_arg_u64(argc, argv, 1, 10000000);
    run("core.send_1to1_msgs_per_s", 1, n);
    run("core.send_2to1_msgs_per_s", 2, n);
    return 0;
}
