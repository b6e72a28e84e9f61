/*
 * bench_net.c — the transport suite: two nodes in two processes linked over
 * loopback tcp, encrypted and plaintext (suffix _plain).
 *
 *   net.oneway_msgs_per_s        2 sender actors on A -> 1 counting actor on
 *                                B, 24 B bytes payloads; messages counted on
 *                                B over a fixed window after a warm-up
 *   net.oneway_send_full_retries sends refused with PX_EFULL by A's link
 *                                queue during that phase (each backs off
 *                                and retries the same message)
 *   net.rtt_p50_us, _p99_us      px_ask A -> echo on B -> A, one in flight,
 *                                16 B payload, 20k samples after 1k warm-up
 *                                (fewer, said on stderr, if that takes 8 s)
 *   net.bulk_MBps                1 MiB bytes messages A -> sink on B, 512 MiB,
 *                                MB = 10^6 bytes, from the first send on A
 *                                to the last byte counted on B
 *   net.heartbeat_p99_ms_under_bulk  p99 of the link's own heartbeat round
 *                                trips (CONTROL lane, a ping every 5 ms)
 *                                during the bulk phase, from
 *                                px_transport_peer_info (last 128 pings)
 *   net.ask_p99_ms_under_bulk    during the bulk phase a prober on A asks
 *                                the echo on B every 5 ms (several may be in
 *                                flight; through NORMAL and both schedulers);
 *                                p99 of those round trips. A probe refused
 *                                with PX_EFULL is retried each tick and timed
 *                                from its first attempt (stderr also gives
 *                                the p99 counted from when the link accepted
 *                                it)
 *   net.tcp_rtt_p50_us, _p99_us  the floor: blocking 32 B ping-pong over a
 *                                plain TCP socket (TCP_NODELAY) between two
 *                                processes, 20k samples
 *   net.nng_rtt_p50_us, _p99_us  nng's floor: the same ping-pong over nng tcp
 *                                streams, driven by aio callbacks on both
 *                                sides (no plexus code at all)
 *
 * Processes. The parent never creates a px_system or any nng state: it makes
 * a temporary directory with the two identity files and a random cluster
 * secret, picks two free loopback ports, then forks the two nodes of a pair
 * (each its own px_system + px_transport, static peers) and waits for them.
 * Every node runs the transport's default config (px_transport_cfg_init:
 * 1 MiB payloads go on the BULK lane in chunks) but for the peers, the keys,
 * `plaintext`, and a 5 ms heartbeat in the bulk pair. Per mode one pair runs oneway + rtt and a fresh pair
 * runs bulk + heartbeat, so one phase's queues, buffers and heap do not
 * colour the next. A drives each phase and prints the figures; B hosts the
 * counting, echo and sink actors. The two talk over a socketpair made before
 * the fork: B sends its actors' refs, A sends phase commands. Every wait is
 * bounded (link up 10 s, each control message, each phase); a node that
 * fails exits non-zero, and the parent then kills the other one by PID and
 * reaps it. Children die with the parent (PR_SET_PDEATHSIG), and SIGINT or
 * SIGTERM to the parent kills and reaps them too. The nodes' scheduler
 * workers do not spin before parking (spin_us 0) unless PX_BENCH_SPIN_US
 * says otherwise: see main.
 *
 * Profiling aids (environment): PX_BENCH_NET_ONLY=oneway,rtt,bulk,tcp,nng
 * (subset of phases), PX_BENCH_NET_MODES=enc,plain, PX_BENCH_NET_WINDOW_MS
 * (oneway window, default 1500), PX_BENCH_NET_POLL=1 (latency mode:
 * px_transport_cfg.poll_rx, with PX_BENCH_SPIN_US > 0), PX_BENCH_NET_RTT_N (samples),
 * PX_BENCH_NET_BULK_MB (MiB sent), PX_BENCH_NET_BACKOFF_MS (the delay after
 * repeated PX_EFULL, default 1; 0 = yield only), PX_BENCH_NET_LOG=1 (node
 * logs at INFO); bench_util's PX_BENCH_WORKERS and PX_BENCH_SPIN_US apply to
 * both nodes.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/supplemental/util/platform.h>

#include <plexus/transport.h>

#include "bench_util.h"

/* ---- parameters ---- */

#define LINK_UP_MS 10000u      /* a node that does not link in this long fails */
#define CTL_TIMEOUT_MS 30000u  /* longest wait for one control message */
#define PAIR_TIMEOUT_S 90u     /* the parent kills a pair that runs longer */
#define ASK_TIMEOUT_MS 10000u

#define OW_SENDERS 2
#define OW_PAYLOAD 24
#define OW_CHUNK 256u      /* sends per sender turn before yielding */
#define OW_WARMUP_MS 300u
#define OW_WINDOW_MS 1500u

#define RTT_PAYLOAD 16
#define RTT_WARMUP 1000u
#define RTT_SAMPLES 20000u
#define RTT_MAX_MS 8000u   /* stop early (fewer samples) past this */

#define BULK_MSG (1u << 20)
#define BULK_MIB 512u
#define BULK_PER_TURN 2u

#define HB_PERIOD_MS 5u
#define HB_MAX_PEND 1024u
#define HB_MAX_SAMPLES 65536u

#define TCP_MSG 32

enum { TAG_KICK = 1, TAG_DATA = 2, TAG_PING = 3, TAG_PONG = 4, TAG_BULK = 5, TAG_TICK = 6 };
enum { PH_ONEWAY = 1, PH_RTT = 2, PH_BULK = 4 };
enum { ROLE_A = 0, ROLE_B = 1 };

static const char *const node_names[2] = {"a", "b"};

static uint64_t now_ns(void) { return bench_now_ns(); }

static bool env_has(const char *var, const char *word)
{
    const char *v = getenv(var);
    return v == NULL || strstr(v, word) != NULL;
}

static uint64_t env_u64(const char *var, uint64_t dflt)
{
    const char *v = getenv(var);
    if (v == NULL || *v == '\0') {
        return dflt;
    }
    char *end = NULL;
    unsigned long long x = strtoull(v, &end, 10);
    if (end == v || *end != '\0' || x == 0) {
        bench_die("bad %s='%s'", var, v);
    }
    return (uint64_t)x;
}

/* ---- the control channel between A and B ---- */

enum {
    OP_READY = 1,     /* B -> A: r[0..2] = counter, echo, sink */
    OP_OW_MEASURE,    /* A -> B: a = warm-up ms, b = window ms */
    OP_OW_RESULT,     /* B -> A: a = messages in the window, b = its length in ns */
    OP_DRAIN,         /* A -> B: a = messages sent in total; B waits for them */
    OP_DRAINED,       /* B -> A: a = messages counted */
    OP_BULK_START,    /* A -> B: a = bytes to expect */
    OP_BULK_ARMED,    /* B -> A */
    OP_BULK_DONE,     /* B -> A: a = time the last byte was counted (ns, CLOCK_MONOTONIC) */
    OP_STOP,          /* A -> B */
};

typedef struct ctl_msg {
    uint32_t op;
    uint32_t pad;
    uint64_t a, b;
    px_ref r[3];
} ctl_msg;

/* Set from actor context when a phase fails; control waits give up on it. */
static atomic_int node_failed;

/* Actor context: marks the phase behind d (and the node) as failed. */
static void phase_fail(bench_done *d)
{
    atomic_store(&node_failed, 1);
    bench_done_fail(d);
}

static void ctl_send(int fd, uint32_t op, uint64_t a, uint64_t b, const px_ref *r)
{
    ctl_msg m;
    memset(&m, 0, sizeof(m));
    m.op = op;
    m.a = a;
    m.b = b;
    if (r != NULL) {
        memcpy(m.r, r, sizeof(m.r));
    }
    const uint8_t *p = (const uint8_t *)&m;
    size_t left = sizeof(m);
    while (left > 0) {
        ssize_t n = send(fd, p, left, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            bench_die("control send (op %u): %s", op, strerror(errno));
        }
        p += n;
        left -= (size_t)n;
    }
}

/* Waits up to timeout_ms for one message, which must be `want`. */
static ctl_msg ctl_recv(int fd, uint32_t want, unsigned timeout_ms, const char *what)
{
    ctl_msg m;
    uint8_t *p = (uint8_t *)&m;
    size_t have = 0;
    uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000u;
    while (have < sizeof(m)) {
        if (atomic_load(&node_failed)) {
            bench_die("%s: a phase failed (see above)", what);
        }
        uint64_t now = now_ns();
        if (now >= deadline) {
            bench_die("%s: nothing from the other node within %u ms", what, timeout_ms);
        }
        uint64_t left_ms = (deadline - now) / 1000000u + 1;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int rc = poll(&pfd, 1, left_ms < 100 ? (int)left_ms : 100);
        if (rc < 0 && errno != EINTR) {
            bench_die("%s: poll: %s", what, strerror(errno));
        }
        if (rc <= 0) {
            continue;
        }
        ssize_t n = recv(fd, p + have, sizeof(m) - have, 0);
        if (n == 0) {
            bench_die("%s: the other node went away", what);
        }
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                continue;
            }
            bench_die("%s: recv: %s", what, strerror(errno));
        }
        have += (size_t)n;
    }
    if (want != 0 && m.op != want) {
        bench_die("%s: control message %u, expected %u", what, m.op, want);
    }
    return m;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---- actors on B ---- */

static _Alignas(64) _Atomic uint64_t ctr_count; /* messages the counter saw */
static _Alignas(64) _Atomic uint64_t sink_bytes;
static _Atomic uint64_t sink_target;            /* 0 = not armed */
static bench_done sink_done;

static px_err counter_receive(px_ctx *ctx, px_msg *msg)
{
    (void)ctx;
    if (px_msg_tag(msg) != TAG_DATA) {
        return PX_ETYPE;
    }
    /* One writer (the runtime orders this actor's turns): no RMW needed. */
    uint64_t c = atomic_load_explicit(&ctr_count, memory_order_relaxed);
    atomic_store_explicit(&ctr_count, c + 1, memory_order_relaxed);
    return PX_OK;
}

static px_err echo_receive(px_ctx *ctx, px_msg *msg)
{
    if (px_msg_corr(msg) == 0) {
        return PX_ETYPE;
    }
    size_t len = 0;
    const void *data = px_msg_data(msg, &len);
    px_msg *r = NULL;
    px_err err = px_msg_bytes(&r, TAG_PONG, data, len);
    if (err == PX_OK) {
        err = px_reply(ctx, msg, &r);
    }
    if (err != PX_OK) {
        px_msg_free(r);
        fprintf(stderr, "bench: echo reply: %s\n", px_errname(err));
    }
    return err;
}

static px_err sink_receive(px_ctx *ctx, px_msg *msg)
{
    (void)ctx;
    size_t len = 0;
    px_msg_data(msg, &len);
    uint64_t b = atomic_load_explicit(&sink_bytes, memory_order_relaxed) + len;
    atomic_store_explicit(&sink_bytes, b, memory_order_relaxed);
    uint64_t target = atomic_load(&sink_target);
    if (target != 0 && b >= target) {
        bench_done_signal(&sink_done); /* idempotent: keeps the first time */
    }
    return PX_OK;
}

static const px_behavior counter_b = {.name = "net.counter", .receive = counter_receive};
static const px_behavior echo_b = {.name = "net.echo", .receive = echo_receive};
static const px_behavior sink_b = {.name = "net.sink", .receive = sink_receive};

/* ---- actors on A: helpers ---- */

/* Re-triggers the calling actor: at once (a yield: other actors run first)
 * or after delay_ms. */
static px_err kick_self(px_ctx *ctx, uint32_t delay_ms)
{
    px_msg *m = NULL;
    px_err err = px_msg_u64(&m, TAG_KICK, 0);
    if (err == PX_OK) {
        err = delay_ms == 0 ? px_send(ctx, px_self(ctx), &m)
                            : px_send_after(ctx, delay_ms, px_self(ctx), &m, NULL);
    }
    if (err != PX_OK) {
        px_msg_free(m);
        fprintf(stderr, "bench: kick: %s\n", px_errname(err));
        atomic_store(&node_failed, 1);
    }
    return err;
}

/* The back-off after PX_EFULL from the link queue: the first refusal yields
 * (the queue may have been packed into a frame meanwhile), further ones in a
 * row wait backoff_ms (1 ms: the link drains thousands of messages in that
 * time), so refused senders do not spin on the CPUs the link needs. (Core
 * timers run on an nng sleep aio, and nng 1.5.2 busy-waits short sleeps in
 * its expire thread: that CPU is part of what this phase measures.) */
static uint32_t backoff_ms = 1; /* PX_BENCH_NET_BACKOFF_MS */
static px_err backoff(px_ctx *ctx, uint64_t streak)
{
    return kick_self(ctx, streak <= 1 ? 0 : backoff_ms);
}

static px_ref g_counter, g_echo, g_sink; /* B's actors, from OP_READY */

/* ---- oneway (A) ---- */

typedef struct ow_sender {
    px_msg *pending; /* built, not yet accepted by the link (kept across EFULL) */
    uint64_t sent;
    uint64_t full;   /* PX_EFULL refusals */
    uint64_t streak; /* refusals in a row */
    bool done;
} __attribute__((aligned(64))) ow_sender;

static ow_sender ow_s[OW_SENDERS];
static atomic_int ow_stop, ow_live;
static bench_done ow_done;
static const uint8_t ow_payload[OW_PAYLOAD] = "plexus-bench-net-oneway";

static px_err ow_init(px_ctx *ctx, const px_msg *arg)
{
    uint64_t i = arg != NULL ? px_msg_get_u64(arg) : OW_SENDERS;
    if (i >= OW_SENDERS) {
        return PX_EINVAL;
    }
    px_set_state(ctx, &ow_s[i]);
    return PX_OK;
}

static px_err ow_receive(px_ctx *ctx, px_msg *msg)
{
    (void)msg;
    ow_sender *s = px_state(ctx);
    if (s->done) {
        return PX_OK;
    }
    if (atomic_load_explicit(&ow_stop, memory_order_relaxed)) {
        s->done = true;
        px_msg_free(s->pending);
        s->pending = NULL;
        if (atomic_fetch_sub(&ow_live, 1) == 1) {
            bench_done_signal(&ow_done);
        }
        return PX_OK;
    }
    for (unsigned i = 0; i < OW_CHUNK; i++) {
        if (s->pending == NULL &&
            px_msg_bytes(&s->pending, TAG_DATA, ow_payload, sizeof(ow_payload)) != PX_OK) {
            phase_fail(&ow_done);
            return PX_ENOMEM;
        }
        px_err err = px_send(ctx, g_counter, &s->pending);
        if (err == PX_OK) {
            s->sent++;
            s->streak = 0;
            continue;
        }
        if (err == PX_EFULL) {
            s->full++;
            return backoff(ctx, ++s->streak);
        }
        fprintf(stderr, "bench: oneway send: %s\n", px_errname(err));
        phase_fail(&ow_done);
        return err;
    }
    return kick_self(ctx, 0);
}

static const px_behavior ow_sender_b = {.name = "net.ow_sender", .init = ow_init,
                                        .receive = ow_receive};

/* ---- rtt (A) ---- */

static uint64_t *rtt_samples;
static size_t rtt_want, rtt_got, rtt_seen;
static uint64_t rtt_t0, rtt_corr, rtt_deadline;
static bench_done rtt_done;
static const uint8_t rtt_payload[RTT_PAYLOAD] = "plexus-rtt-ping";

static px_err rtt_ask(px_ctx *ctx)
{
    px_msg *m = NULL;
    px_err err = px_msg_bytes(&m, TAG_PING, rtt_payload, sizeof(rtt_payload));
    if (err == PX_OK) {
        rtt_t0 = now_ns();
        err = px_ask(ctx, g_echo, &m, ASK_TIMEOUT_MS, &rtt_corr);
    }
    if (err != PX_OK) {
        px_msg_free(m);
        fprintf(stderr, "bench: rtt ask: %s\n", px_errname(err));
        phase_fail(&rtt_done);
    }
    return err;
}

static px_err rtt_receive(px_ctx *ctx, px_msg *msg)
{
    uint64_t t = now_ns();
    if (px_msg_kind_of(msg) == PX_MSG_ASK_TIMEOUT) {
        fprintf(stderr, "bench: rtt ask timed out after %u ms\n", ASK_TIMEOUT_MS);
        phase_fail(&rtt_done);
        return PX_ETIMEDOUT;
    }
    if (!px_msg_is_reply(msg)) {
        return px_msg_tag(msg) == TAG_KICK ? rtt_ask(ctx) : PX_ETYPE;
    }
    if (px_msg_corr(msg) != rtt_corr || px_msg_tag(msg) != TAG_PONG) {
        fprintf(stderr, "bench: rtt: unexpected reply (corr %llu, tag %u)\n",
                (unsigned long long)px_msg_corr(msg), px_msg_tag(msg));
        phase_fail(&rtt_done);
        return PX_EFAIL;
    }
    if (rtt_seen++ >= RTT_WARMUP) {
        rtt_samples[rtt_got++] = t - rtt_t0;
    }
    if (rtt_got == rtt_want || t > rtt_deadline) {
        bench_done_signal(&rtt_done);
        return PX_OK;
    }
    return rtt_ask(ctx);
}

static const px_behavior rtt_b = {.name = "net.rtt", .receive = rtt_receive};

/* ---- bulk + heartbeat prober (A) ---- */

static uint8_t *bulk_buf;
static px_msg *bulk_pending;
static uint64_t bulk_quota, bulk_sent, bulk_full, bulk_streak;

static px_err bulk_receive(px_ctx *ctx, px_msg *msg)
{
    (void)msg;
    for (unsigned i = 0; i < BULK_PER_TURN && bulk_sent < bulk_quota; i++) {
        if (bulk_pending == NULL &&
            px_msg_bytes(&bulk_pending, TAG_BULK, bulk_buf, BULK_MSG) != PX_OK) {
            atomic_store(&node_failed, 1);
            return PX_ENOMEM;
        }
        px_err err = px_send(ctx, g_sink, &bulk_pending);
        if (err == PX_OK) {
            bulk_sent++;
            bulk_streak = 0;
            continue;
        }
        if (err == PX_EFULL) {
            bulk_full++;
            return backoff(ctx, ++bulk_streak);
        }
        fprintf(stderr, "bench: bulk send: %s\n", px_errname(err));
        atomic_store(&node_failed, 1);
        return err;
    }
    return bulk_sent < bulk_quota ? kick_self(ctx, 0) : PX_OK;
}

static void bulk_stop(px_ctx *ctx)
{
    (void)ctx;
    px_msg_free(bulk_pending);
    bulk_pending = NULL;
}

static const px_behavior bulk_b = {.name = "net.bulk", .receive = bulk_receive,
                                   .stop = bulk_stop};

typedef struct hb_pend {
    uint64_t corr, t0;
    uint64_t t_queued; /* when the link accepted it (t0 unless it was refused first) */
} hb_pend;

static atomic_int hb_active;
static hb_pend hb_p[HB_MAX_PEND];
static size_t hb_np;
static uint64_t hb_samples[HB_MAX_SAMPLES];
static size_t hb_n;
/* Diagnostic: the same round trips counted from when the link accepted the
 * probe, i.e. without the time spent refused with PX_EFULL. */
static uint64_t hb_wire[HB_MAX_SAMPLES];
static size_t hb_wn;
static uint64_t hb_full, hb_skipped, hb_timeouts;
static uint64_t hb_owed_t0; /* first attempt of a refused probe, 0 = none */
static bench_done hb_done;

static px_err hb_init(px_ctx *ctx, const px_msg *arg)
{
    (void)arg;
    return px_timer_every(ctx, HB_PERIOD_MS, TAG_TICK, NULL);
}

static void hb_sample(uint64_t corr, uint64_t t, bool timed_out)
{
    for (size_t i = 0; i < hb_np; i++) {
        if (hb_p[i].corr == corr) {
            uint64_t lost = (uint64_t)ASK_TIMEOUT_MS * 1000000u;
            if (hb_n < HB_MAX_SAMPLES) {
                hb_samples[hb_n++] = timed_out ? lost : t - hb_p[i].t0;
                hb_wire[hb_wn++] = timed_out ? lost : t - hb_p[i].t_queued;
            }
            hb_p[i] = hb_p[--hb_np];
            return;
        }
    }
}

static px_err hb_receive(px_ctx *ctx, px_msg *msg)
{
    uint64_t t = now_ns();
    switch (px_msg_kind_of(msg)) {
    case PX_MSG_TIMER:
        break;
    case PX_MSG_ASK_TIMEOUT:
        hb_timeouts++;
        hb_sample(px_msg_corr(msg), t, true);
        return PX_OK;
    default:
        if (px_msg_is_reply(msg)) {
            hb_sample(px_msg_corr(msg), t, false);
        }
        return PX_OK;
    }
    if (!atomic_load(&hb_active) && hb_owed_t0 == 0) {
        if (hb_np == 0) {
            bench_done_signal(&hb_done);
            px_stop_self(ctx);
        }
        return PX_OK;
    }
    if (hb_np == HB_MAX_PEND) {
        hb_skipped++;
        return PX_OK;
    }
    /* A probe the link refused (PX_EFULL) is still owed: it is retried at
     * the next tick and its round trip counts from the first attempt. */
    uint64_t t_sent = hb_owed_t0 != 0 ? hb_owed_t0 : t;
    px_msg *m = NULL;
    uint64_t corr = 0;
    px_err err = px_msg_u64(&m, TAG_PING, hb_n);
    if (err == PX_OK) {
        err = px_ask(ctx, g_echo, &m, ASK_TIMEOUT_MS, &corr);
    }
    if (err == PX_OK) {
        hb_p[hb_np++] = (hb_pend){corr, t_sent, t};
        hb_owed_t0 = 0;
        return PX_OK;
    }
    px_msg_free(m);
    if (err == PX_EFULL) {
        hb_full++;
        hb_owed_t0 = t_sent;
        return PX_OK;
    }
    fprintf(stderr, "bench: heartbeat ask: %s\n", px_errname(err));
    phase_fail(&hb_done);
    return err;
}

static const px_behavior hb_b = {.name = "net.hb", .init = hb_init, .receive = hb_receive};

/* ---- a node ---- */

typedef struct pair_cfg {
    bool plain;
    unsigned phases;
    char addr[2][64];        /* listen addresses of A and B */
    char key[2][200];        /* identity files */
    uint8_t pk[2][PX_PUBKEY_BYTES];
    char secret[200];        /* cluster secret file */
} pair_cfg;

static const char *sfx(const pair_cfg *pc) { return pc->plain ? "_plain" : ""; }

static void figure_name(char *buf, size_t len, const char *base, const pair_cfg *pc)
{
    snprintf(buf, len, "%s%s", base, sfx(pc));
}

/* Sorts n round trips (ns) and prints <base>_p50_us<suffix> and _p99_us. */
static void rtt_figures(const char *base, const char *suffix, uint64_t *s, size_t n)
{
    char name[96];
    bench_sort_u64(s, n);
    snprintf(name, sizeof(name), "%s_p50_us%s", base, suffix);
    bench_figure_f(name, (double)bench_pct_u64(s, n, 0.50) / 1e3, 1, "us");
    snprintf(name, sizeof(name), "%s_p99_us%s", base, suffix);
    bench_figure_f(name, (double)bench_pct_u64(s, n, 0.99) / 1e3, 1, "us");
}

static px_ref spawn_arg(px_system *sys, const px_behavior *b, uint64_t arg, const char *what)
{
    px_msg *m = NULL;
    bench_check(px_msg_u64(&m, 0, arg), "px_msg_u64");
    px_ref r = PX_REF_NIL;
    bench_check(px_system_spawn(sys, b, &m, NULL, &r), what);
    px_msg_free(m); /* NULL after a successful spawn */
    return r;
}

static px_transport *node_start(px_system *sys, int role, const pair_cfg *pc)
{
    /* The transport borrows the identity for its life. */
    static px_identity id;
    int other = 1 - role;
    char err[256] = "";
    if (px_identity_load(pc->key[role], false, &id, err, sizeof(err)) != PX_OK) {
        bench_die("identity %s: %s", pc->key[role], err);
    }
    px_transport_cfg tc;
    px_transport_cfg_init(&tc);
    tc.listen = pc->addr[role];
    tc.identity = &id;
    /* The bulk pair pings every 5 ms, enough for a p99 under bulk (128
     * kept); the other keeps the default 250 ms, as a node would (when the
     * transport's tick was an nng sleep, whose timer spins through each
     * last millisecond, 5 ms cost the round trips: p99 ~1.1 ms against
     * ~0.4 ms; its ticks are px_alarms now). */
    if (pc->phases & PH_BULK) {
        tc.heartbeat_ms = 5;
    }
    if (px_secret_load(pc->secret, tc.cluster_key, err, sizeof(err)) != PX_OK) {
        bench_die("secret %s: %s", pc->secret, err);
    }
    px_peer peer = {.name = node_names[other], .address = pc->addr[other]};
    memcpy(peer.pk, pc->pk[other], PX_PUBKEY_BYTES);
    tc.peers = &peer;
    tc.npeers = 1;
    tc.plaintext = pc->plain;
    const char *poll = getenv("PX_BENCH_NET_POLL"); /* "1": latency mode */
    tc.poll_rx = poll != NULL && strcmp(poll, "1") == 0;
    px_transport *t = NULL;
    bench_check(px_transport_start(sys, &tc, &t), "px_transport_start");
    uint64_t deadline = now_ns() + (uint64_t)LINK_UP_MS * 1000000u;
    for (;;) {
        px_link_state st = PX_LINK_CONNECTING;
        bench_check(px_transport_peer_state(t, node_names[other], &st, NULL), "peer state");
        if (st == PX_LINK_UP) {
            break;
        }
        if (now_ns() > deadline) {
            bench_die("node %s: no link to %s at %s within %u ms (state %d)", node_names[role],
                      node_names[other], pc->addr[other], LINK_UP_MS, (int)st);
        }
        sleep_ms(2);
    }
    return t;
}

static px_log_level node_log_level(void)
{
    return getenv("PX_BENCH_NET_LOG") != NULL ? PX_LOG_INFO : PX_LOG_ERROR;
}

static void log_stats(px_transport *t, const char *who)
{
    px_transport_stats st;
    px_transport_stats_get(t, &st);
    fprintf(stderr,
            "bench: %s: msgs out %llu in %llu, frames out %llu in %llu, bytes out %llu in %llu, "
            "bad %llu, undeliverable %llu, reads polled %llu, writes inline %llu\n",
            who, (unsigned long long)st.msgs_out, (unsigned long long)st.msgs_in,
            (unsigned long long)st.frames_out, (unsigned long long)st.frames_in,
            (unsigned long long)st.bytes_out, (unsigned long long)st.bytes_in,
            (unsigned long long)st.bad_frames, (unsigned long long)st.undeliverable,
            (unsigned long long)st.reads_polled, (unsigned long long)st.writes_inline);
}

static int node_b(int ctl, const pair_cfg *pc)
{
    bench_done_init(&sink_done);
    px_system *sys = bench_system_named(node_names[ROLE_B], 0, node_log_level());
    px_transport *t = node_start(sys, ROLE_B, pc);
    px_ref refs[3];
    bench_check(px_system_spawn(sys, &counter_b, NULL, NULL, &refs[0]), "spawn counter");
    bench_check(px_system_spawn(sys, &echo_b, NULL, NULL, &refs[1]), "spawn echo");
    bench_check(px_system_spawn(sys, &sink_b, NULL, NULL, &refs[2]), "spawn sink");
    ctl_send(ctl, OP_READY, 0, 0, refs);
    for (;;) {
        ctl_msg m = ctl_recv(ctl, 0, PAIR_TIMEOUT_S * 1000u, "node b");
        if (m.op == OP_STOP) {
            break;
        }
        switch (m.op) {
        case OP_OW_MEASURE: {
            sleep_ms((unsigned)m.a);
            uint64_t c0 = atomic_load(&ctr_count), t0 = now_ns();
            sleep_ms((unsigned)m.b);
            uint64_t c1 = atomic_load(&ctr_count), t1 = now_ns();
            ctl_send(ctl, OP_OW_RESULT, c1 - c0, t1 - t0, NULL);
            break;
        }
        case OP_DRAIN: {
            uint64_t deadline = now_ns() + 10000000000u;
            while (atomic_load(&ctr_count) < m.a && now_ns() < deadline) {
                sleep_ms(1);
            }
            ctl_send(ctl, OP_DRAINED, atomic_load(&ctr_count), 0, NULL);
            break;
        }
        case OP_BULK_START: {
            atomic_store(&sink_target, m.a);
            if (atomic_load(&sink_bytes) >= m.a) {
                bench_done_signal(&sink_done);
            }
            ctl_send(ctl, OP_BULK_ARMED, 0, 0, NULL);
            uint64_t t_done = bench_done_wait(&sink_done, 60, "bulk sink");
            ctl_send(ctl, OP_BULK_DONE, t_done, atomic_load(&sink_bytes), NULL);
            break;
        }
        default:
            bench_die("node b: unexpected control message %u", m.op);
        }
    }
    log_stats(t, pc->plain ? "b (plain)" : "b");
    px_transport_stop(t);
    bench_system_free(sys);
    bench_done_fini(&sink_done);
    return 0;
}

static void phase_oneway(px_system *sys, int ctl, const pair_cfg *pc)
{
    char name[96];
    unsigned window = (unsigned)env_u64("PX_BENCH_NET_WINDOW_MS", OW_WINDOW_MS);
    bench_done_init(&ow_done);
    atomic_store(&ow_stop, 0);
    atomic_store(&ow_live, OW_SENDERS);
    px_ref s[OW_SENDERS];
    for (unsigned i = 0; i < OW_SENDERS; i++) {
        s[i] = spawn_arg(sys, &ow_sender_b, i, "spawn oneway sender");
    }
    for (unsigned i = 0; i < OW_SENDERS; i++) {
        (void)bench_kick(sys, s[i], TAG_KICK, "kick oneway sender");
    }
    ctl_send(ctl, OP_OW_MEASURE, OW_WARMUP_MS, window, NULL);
    ctl_msg r = ctl_recv(ctl, OP_OW_RESULT, OW_WARMUP_MS + window + CTL_TIMEOUT_MS, "oneway");
    atomic_store(&ow_stop, 1);
    (void)bench_done_wait(&ow_done, 10, "oneway senders stopping");
    uint64_t sent = 0, full = 0;
    for (unsigned i = 0; i < OW_SENDERS; i++) {
        sent += ow_s[i].sent;
        full += ow_s[i].full;
    }
    ctl_send(ctl, OP_DRAIN, sent, 0, NULL);
    ctl_msg d = ctl_recv(ctl, OP_DRAINED, CTL_TIMEOUT_MS, "oneway drain");
    if (d.a != sent) {
        bench_die("oneway: sent %llu, counted %llu on b", (unsigned long long)sent,
                  (unsigned long long)d.a);
    }
    double rate = (double)r.a / ((double)r.b / 1e9);
    figure_name(name, sizeof(name), "net.oneway_msgs_per_s", pc);
    bench_figure_u64(name, (uint64_t)rate, "msgs/s");
    figure_name(name, sizeof(name), "net.oneway_send_full_retries", pc);
    bench_figure_u64(name, full, "retries");
    bench_done_fini(&ow_done);
}

static void phase_rtt(px_system *sys, const pair_cfg *pc)
{
    rtt_want = env_u64("PX_BENCH_NET_RTT_N", RTT_SAMPLES);
    rtt_samples = calloc(rtt_want, sizeof(*rtt_samples));
    if (rtt_samples == NULL) {
        bench_die("out of memory");
    }
    rtt_got = rtt_seen = 0;
    bench_done_init(&rtt_done);
    px_ref asker = PX_REF_NIL;
    bench_check(px_system_spawn(sys, &rtt_b, NULL, NULL, &asker), "spawn rtt asker");
    rtt_deadline = now_ns() + (uint64_t)RTT_MAX_MS * 1000000u;
    (void)bench_kick(sys, asker, TAG_KICK, "kick rtt asker");
    (void)bench_done_wait(&rtt_done, RTT_MAX_MS / 1000 + 20, "rtt");
    if (rtt_got < rtt_want) {
        fprintf(stderr, "bench: rtt%s: only %zu of %zu samples within %u ms\n", sfx(pc), rtt_got,
                rtt_want, RTT_MAX_MS);
    }
    rtt_figures("net.rtt", sfx(pc), rtt_samples, rtt_got);
    fprintf(stderr,
            "bench: rtt%s: %zu samples, min %.1f us, p90 %.1f us, p95 %.1f us, p98 %.1f us, "
            "p99.9 %.1f us, max %.1f us\n",
            sfx(pc), rtt_got, rtt_got ? (double)rtt_samples[0] / 1e3 : 0.0,
            (double)bench_pct_u64(rtt_samples, rtt_got, 0.90) / 1e3,
            (double)bench_pct_u64(rtt_samples, rtt_got, 0.95) / 1e3,
            (double)bench_pct_u64(rtt_samples, rtt_got, 0.98) / 1e3,
            (double)bench_pct_u64(rtt_samples, rtt_got, 0.999) / 1e3,
            rtt_got ? (double)rtt_samples[rtt_got - 1] / 1e3 : 0.0);
    (void)px_stop(sys, asker);
    bench_done_fini(&rtt_done);
    free(rtt_samples);
    rtt_samples = NULL;
}

static void phase_bulk(px_system *sys, px_transport *t, int ctl, const pair_cfg *pc)
{
    char name[96];
    bulk_quota = env_u64("PX_BENCH_NET_BULK_MB", BULK_MIB);
    uint64_t total = bulk_quota * BULK_MSG;
    bulk_buf = malloc(BULK_MSG);
    if (bulk_buf == NULL) {
        bench_die("out of memory");
    }
    for (size_t i = 0; i < BULK_MSG; i++) {
        bulk_buf[i] = (uint8_t)(i * 131u + 7u);
    }
    bench_done_init(&hb_done);
    ctl_send(ctl, OP_BULK_START, total, 0, NULL);
    (void)ctl_recv(ctl, OP_BULK_ARMED, CTL_TIMEOUT_MS, "bulk arm");
    px_peer_info pi;
    bench_check(px_transport_peer_info(t, node_names[ROLE_B], true, &pi), "peer info");
    atomic_store(&hb_active, 1);
    px_ref hb = PX_REF_NIL, bulk = PX_REF_NIL;
    bench_check(px_system_spawn(sys, &hb_b, NULL, NULL, &hb), "spawn heartbeat prober");
    bench_check(px_system_spawn(sys, &bulk_b, NULL, NULL, &bulk), "spawn bulk sender");
    uint64_t t0 = bench_kick(sys, bulk, TAG_KICK, "kick bulk sender");
    ctl_msg d = ctl_recv(ctl, OP_BULK_DONE, 60000, "bulk");
    bench_check(px_transport_peer_info(t, node_names[ROLE_B], false, &pi), "peer info");
    atomic_store(&hb_active, 0);
    (void)bench_done_wait(&hb_done, 15, "heartbeat prober");
    double secs = (double)(d.a - t0) / 1e9;
    figure_name(name, sizeof(name), "net.bulk_MBps", pc);
    bench_figure_f(name, (double)d.b / 1e6 / secs, 1, "MB/s");
    figure_name(name, sizeof(name), "net.heartbeat_p99_ms_under_bulk", pc);
    bench_figure_f(name, (double)pi.rtt_p99_us / 1e3, 2, "ms");
    bench_sort_u64(hb_samples, hb_n);
    figure_name(name, sizeof(name), "net.ask_p99_ms_under_bulk", pc);
    bench_figure_f(name, (double)bench_pct_u64(hb_samples, hb_n, 0.99) / 1e6, 2, "ms");
    fprintf(stderr,
            "bench: bulk%s: %.0f MB in %.3f s, %llu EFULL back-offs; heartbeat: %zu samples, "
            "p50 %.2f ms, max %.2f ms, %llu refused (EFULL), %llu skipped, %llu timed out\n",
            sfx(pc), (double)d.b / 1e6, secs, (unsigned long long)bulk_full, hb_n,
            (double)bench_pct_u64(hb_samples, hb_n, 0.50) / 1e6,
            hb_n ? (double)hb_samples[hb_n - 1] / 1e6 : 0.0, (unsigned long long)hb_full,
            (unsigned long long)hb_skipped, (unsigned long long)hb_timeouts);
    bench_sort_u64(hb_wire, hb_wn);
    fprintf(stderr,
            "bench: heartbeat%s counted from when the link accepted the probe: p50 %.2f ms, "
            "p99 %.2f ms\n",
            sfx(pc), (double)bench_pct_u64(hb_wire, hb_wn, 0.50) / 1e6,
            (double)bench_pct_u64(hb_wire, hb_wn, 0.99) / 1e6);
    fprintf(stderr,
            "bench: link heartbeat%s (CONTROL lane ping/pong) during bulk: %u samples, max %.2f ms\n",
            sfx(pc), pi.rtt_samples, (double)pi.rtt_max_us / 1e3);
    (void)px_stop(sys, bulk);
    bench_done_fini(&hb_done);
}

static int node_a(int ctl, const pair_cfg *pc)
{
    const char *bo = getenv("PX_BENCH_NET_BACKOFF_MS");
    if (bo != NULL) {
        backoff_ms = (uint32_t)strtoul(bo, NULL, 10);
    }
    px_system *sys = bench_system_named(node_names[ROLE_A], 0, node_log_level());
    px_transport *t = node_start(sys, ROLE_A, pc);
    ctl_msg ready = ctl_recv(ctl, OP_READY, LINK_UP_MS + 5000, "waiting for node b");
    g_counter = ready.r[0];
    g_echo = ready.r[1];
    g_sink = ready.r[2];
    if (pc->phases & PH_ONEWAY) {
        phase_oneway(sys, ctl, pc);
    }
    if (pc->phases & PH_RTT) {
        phase_rtt(sys, pc);
    }
    if (pc->phases & PH_BULK) {
        phase_bulk(sys, t, ctl, pc);
    }
    ctl_send(ctl, OP_STOP, 0, 0, NULL);
    log_stats(t, pc->plain ? "a (plain)" : "a");
    px_transport_stop(t);
    bench_system_free(sys);
    free(bulk_buf);
    return 0;
}

/* ---- plain TCP ping-pong (the floor) ---- */

static void tcp_opts(int fd)
{
    int one = 1;
    struct timeval tv = {.tv_sec = 10};
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0) {
        bench_die("tcp setsockopt: %s", strerror(errno));
    }
}

/* 1 = all n bytes, 0 = EOF before any; dies on errors and timeouts. */
static int io_all(int fd, void *buf, size_t n, bool wr)
{
    uint8_t *p = buf;
    size_t done = 0;
    while (done < n) {
        ssize_t k = wr ? send(fd, p + done, n - done, MSG_NOSIGNAL)
                       : recv(fd, p + done, n - done, 0);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k == 0 && !wr && done == 0) {
            return 0;
        }
        if (k <= 0) {
            bench_die("tcp %s: %s", wr ? "send" : "recv", k == 0 ? "peer closed" : strerror(errno));
        }
        done += (size_t)k;
    }
    return 1;
}

static int tcp_server(int lfd)
{
    struct pollfd pfd = {.fd = lfd, .events = POLLIN};
    if (poll(&pfd, 1, 10000) != 1) {
        bench_die("tcp server: no connection within 10 s");
    }
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0) {
        bench_die("tcp accept: %s", strerror(errno));
    }
    close(lfd);
    tcp_opts(fd);
    uint8_t b[TCP_MSG];
    while (io_all(fd, b, sizeof(b), false)) {
        io_all(fd, b, sizeof(b), true);
    }
    close(fd);
    return 0;
}

static int tcp_client(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        bench_die("tcp connect: %s", strerror(errno));
    }
    tcp_opts(fd);
    size_t n = env_u64("PX_BENCH_NET_RTT_N", RTT_SAMPLES);
    uint64_t *s = calloc(n, sizeof(*s));
    if (s == NULL) {
        bench_die("out of memory");
    }
    uint8_t b[TCP_MSG];
    memset(b, 0x5a, sizeof(b));
    for (size_t i = 0; i < RTT_WARMUP + n; i++) {
        uint64_t t0 = now_ns();
        io_all(fd, b, sizeof(b), true);
        if (!io_all(fd, b, sizeof(b), false)) {
            bench_die("tcp client: server closed");
        }
        if (i >= RTT_WARMUP) {
            s[i - RTT_WARMUP] = now_ns() - t0;
        }
    }
    close(fd);
    rtt_figures("net.tcp_rtt", "", s, n);
    free(s);
    return 0;
}

/* ---- nng stream ping-pong (nng's own floor) ----
 *
 * The same 32 B ping-pong over nng tcp streams, driven by aio callbacks on
 * both sides as the transport's reads are: each direction is nng's epoll
 * thread reading the socket and one of its task threads running the
 * callback — the least a design on nng's public API pays without spinning
 * (the transport adds the hand-off to a scheduler worker). The server
 * reports its port through `fd` (a pipe to the parent). */

typedef struct nng_pp {
    nng_stream *s;
    nng_aio *rx, *tx;
    uint8_t buf[TCP_MSG];
    size_t got;
    bool client;
    size_t n, done; /* client: samples wanted, taken (warm-up included) */
    uint64_t t0, *samples;
    nng_mtx *mtx;
    nng_cv *cv;
    int end; /* mtx: 1 finished, -1 failed */
} nng_pp;

static void pp_end(nng_pp *pp, int how)
{
    nng_mtx_lock(pp->mtx);
    pp->end = how;
    nng_cv_wake(pp->cv);
    nng_mtx_unlock(pp->mtx);
}

static void pp_recv(nng_pp *pp)
{
    nng_iov iov = {.iov_buf = pp->buf + pp->got, .iov_len = TCP_MSG - pp->got};
    nng_aio_set_iov(pp->rx, 1, &iov);
    nng_stream_recv(pp->s, pp->rx);
}

static void pp_send(nng_pp *pp)
{
    nng_iov iov = {.iov_buf = pp->buf, .iov_len = TCP_MSG};
    nng_aio_set_iov(pp->tx, 1, &iov);
    nng_stream_send(pp->s, pp->tx);
}

static void pp_tx_done(void *arg)
{
    nng_pp *pp = arg;
    /* 32 B into an idle loopback socket go whole or not at all. */
    if (nng_aio_result(pp->tx) != 0 || nng_aio_count(pp->tx) != TCP_MSG) {
        pp_end(pp, -1);
        return;
    }
    pp->got = 0;
    pp_recv(pp);
}

static void pp_rx_done(void *arg)
{
    nng_pp *pp = arg;
    if (nng_aio_result(pp->rx) != 0) {
        pp_end(pp, pp->client ? -1 : 1); /* the server ends when the client closes */
        return;
    }
    pp->got += nng_aio_count(pp->rx);
    if (pp->got < TCP_MSG) {
        pp_recv(pp);
        return;
    }
    if (pp->client) {
        uint64_t now = now_ns();
        if (pp->done >= RTT_WARMUP) {
            pp->samples[pp->done - RTT_WARMUP] = now - pp->t0;
        }
        if (++pp->done == RTT_WARMUP + pp->n) {
            pp_end(pp, 1);
            return;
        }
        pp->t0 = now_ns();
    }
    pp_send(pp);
}

/* Connects (client: dials `port`; server: accepts once, after writing its
 * port to fd), runs the ping-pong to its end, tears down. */
static int nng_pp_run(bool client, int fd_or_port)
{
    nng_pp pp = {.client = client};
    char url[64];
    nng_aio *c = NULL;
    nng_stream_listener *l = NULL;
    nng_stream_dialer *d = NULL;
    if (nng_mtx_alloc(&pp.mtx) != 0 || nng_cv_alloc(&pp.cv, pp.mtx) != 0 ||
        nng_aio_alloc(&pp.rx, pp_rx_done, &pp) != 0 ||
        nng_aio_alloc(&pp.tx, pp_tx_done, &pp) != 0 || nng_aio_alloc(&c, NULL, NULL) != 0) {
        bench_die("nng ping-pong: out of memory");
    }
    nng_aio_set_timeout(c, 10000);
    int rv;
    if (client) {
        snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", fd_or_port);
        if ((rv = nng_stream_dialer_alloc(&d, url)) != 0) {
            bench_die("nng dialer %s: %s", url, nng_strerror(rv));
        }
        nng_stream_dialer_dial(d, c);
    } else {
        int port = 0;
        if ((rv = nng_stream_listener_alloc(&l, "tcp://127.0.0.1:0")) != 0 ||
            (rv = nng_stream_listener_listen(l)) != 0 ||
            (rv = nng_stream_listener_get_int(l, NNG_OPT_TCP_BOUND_PORT, &port)) != 0) {
            bench_die("nng listener: %s", nng_strerror(rv));
        }
        if (write(fd_or_port, &port, sizeof(port)) != (ssize_t)sizeof(port)) {
            bench_die("nng ping-pong: cannot report the port");
        }
        close(fd_or_port);
        nng_stream_listener_accept(l, c);
    }
    nng_aio_wait(c);
    if ((rv = nng_aio_result(c)) != 0) {
        bench_die("nng %s: %s", client ? "dial" : "accept", nng_strerror(rv));
    }
    pp.s = nng_aio_get_output(c, 0);
    nng_stream_set_bool(pp.s, NNG_OPT_TCP_NODELAY, true);
    if (client) {
        pp.n = env_u64("PX_BENCH_NET_RTT_N", RTT_SAMPLES);
        pp.samples = calloc(pp.n, sizeof(*pp.samples));
        if (pp.samples == NULL) {
            bench_die("out of memory");
        }
        memset(pp.buf, 0x5a, sizeof(pp.buf));
        pp.t0 = now_ns();
        pp_send(&pp);
    } else {
        pp_recv(&pp);
    }
    nng_mtx_lock(pp.mtx);
    nng_time until = nng_clock() + 60000;
    while (pp.end == 0 && nng_cv_until(pp.cv, until) != NNG_ETIMEDOUT) {
    }
    int end = pp.end;
    nng_mtx_unlock(pp.mtx);
    nng_stream_close(pp.s);
    nng_aio_stop(pp.rx);
    nng_aio_stop(pp.tx);
    if (end != 1) {
        bench_die("nng ping-pong (%s): %s", client ? "client" : "server",
                  end == 0 ? "not done within 60 s" : "an I/O failed");
    }
    if (client) {
        rtt_figures("net.nng_rtt", "", pp.samples, pp.n);
        free(pp.samples);
    }
    nng_stream_free(pp.s);
    nng_stream_dialer_free(d);
    nng_stream_listener_free(l);
    nng_aio_free(pp.rx);
    nng_aio_free(pp.tx);
    nng_aio_free(c);
    nng_cv_free(pp.cv);
    nng_mtx_free(pp.mtx);
    return 0;
}

/* ---- the parent: processes, files, ports ---- */

#define MAX_KIDS 2
static volatile pid_t kids[MAX_KIDS];
static pid_t parent_pid;
static char tmpdir[64];
static pair_cfg base;

static void cleanup_files(void)
{
    if (tmpdir[0] == '\0' || getpid() != parent_pid) {
        return;
    }
    unlink(base.key[0]);
    unlink(base.key[1]);
    unlink(base.secret);
    rmdir(tmpdir);
}

static void kill_kids(void)
{
    for (int i = 0; i < MAX_KIDS; i++) {
        if (kids[i] > 0) {
            kill(kids[i], SIGKILL);
        }
    }
    for (int i = 0; i < MAX_KIDS; i++) {
        if (kids[i] > 0) {
            while (waitpid(kids[i], NULL, 0) < 0 && errno == EINTR) {
            }
            kids[i] = 0;
        }
    }
}

static void on_signal(int sig)
{
    kill_kids(); /* kill, waitpid and unlink are async-signal-safe */
    cleanup_files();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* In a fresh child: dies with the parent, default signal handling. */
static void child_setup(void)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent_pid) {
        _exit(1);
    }
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
}

/* Runs fn(arg...) in a child process; returns its pid. */
static pid_t spawn_kid(int slot, int (*fn)(int, const pair_cfg *), int fd, const pair_cfg *pc,
                       int close_fd)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        bench_die("fork: %s", strerror(errno));
    }
    if (pid == 0) {
        child_setup();
        if (close_fd >= 0) {
            close(close_fd);
        }
        int rc = fn(fd, pc);
        fflush(stdout);
        fflush(stderr);
        _exit(rc);
    }
    kids[slot] = pid;
    return pid;
}

/* Waits for every child up to timeout_s, and at most 10 s after the first
 * one exits. A child that fails (or the timeout) gets the others killed.
 * Returns 0 if all exited with 0. */
static int wait_kids(unsigned timeout_s, const char *what)
{
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    uint64_t deadline = now_ns() + (uint64_t)timeout_s * 1000000000u;
    int status = 0;
    for (;;) {
        int live = 0;
        for (int i = 0; i < MAX_KIDS; i++) {
            if (kids[i] <= 0) {
                continue;
            }
            int st = 0;
            pid_t r = waitpid(kids[i], &st, WNOHANG);
            if (r == kids[i]) {
                kids[i] = 0;
                /* The others get at most 10 s more to finish. */
                uint64_t soon = now_ns() + 10000000000u;
                deadline = deadline < soon ? deadline : soon;
                if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                    fprintf(stderr, "bench: %s: a node %s %d\n", what,
                            WIFSIGNALED(st) ? "was killed by signal" : "exited with",
                            WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
                    status = 1;
                }
            } else {
                live++;
            }
        }
        if (live == 0) {
            return status;
        }
        if (status != 0) {
            kill_kids();
            return status;
        }
        uint64_t now = now_ns();
        if (now >= deadline) {
            fprintf(stderr, "bench: %s: not done within %u s; killing the nodes\n", what,
                    timeout_s);
            kill_kids();
            return 1;
        }
        uint64_t left = deadline - now;
        struct timespec ts = {.tv_sec = (time_t)(left / 1000000000u),
                              .tv_nsec = (long)(left % 1000000000u)};
        if (ts.tv_sec > 0) {
            ts = (struct timespec){.tv_sec = 1}; /* re-check now and then */
        }
        (void)sigtimedwait(&chld, NULL, &ts);
    }
}

/* Two distinct free loopback ports (bound together, then released). */
static void free_ports(int port[2])
{
    int fd[2];
    for (int i = 0; i < 2; i++) {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t sl = sizeof(sa);
        fd[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (fd[i] < 0 || bind(fd[i], (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
            getsockname(fd[i], (struct sockaddr *)&sa, &sl) != 0) {
            bench_die("cannot find a free port: %s", strerror(errno));
        }
        port[i] = ntohs(sa.sin_port);
    }
    close(fd[0]);
    close(fd[1]);
}

static int run_pair(bool plain, unsigned phases)
{
    pair_cfg pc = base;
    pc.plain = plain;
    pc.phases = phases;
    int port[2];
    free_ports(port);
    for (int i = 0; i < 2; i++) {
        snprintf(pc.addr[i], sizeof(pc.addr[i]), "tcp://127.0.0.1:%d", port[i]);
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        bench_die("socketpair: %s", strerror(errno));
    }
    spawn_kid(1, node_b, sv[1], &pc, sv[0]);
    spawn_kid(0, node_a, sv[0], &pc, sv[1]);
    close(sv[0]);
    close(sv[1]);
    char what[64];
    snprintf(what, sizeof(what), "pair %s%s", phases & PH_BULK ? "bulk" : "oneway+rtt",
             plain ? " (plain)" : "");
    return wait_kids(PAIR_TIMEOUT_S, what);
}

static int tcp_server_kid(int lfd, const pair_cfg *pc)
{
    (void)pc;
    return tcp_server(lfd);
}

static int tcp_client_kid(int port, const pair_cfg *pc)
{
    (void)pc;
    return tcp_client(port);
}

static int nng_server_kid(int fd, const pair_cfg *pc)
{
    (void)pc;
    return nng_pp_run(false, fd);
}

static int nng_client_kid(int port, const pair_cfg *pc)
{
    (void)pc;
    return nng_pp_run(true, port);
}

/* The server child picks its port and writes it to a pipe; the client
 * child is started with it. */
static int run_nng(void)
{
    int pfd[2];
    if (pipe(pfd) != 0) {
        bench_die("pipe: %s", strerror(errno));
    }
    spawn_kid(0, nng_server_kid, pfd[1], &base, pfd[0]);
    close(pfd[1]);
    struct pollfd w = {.fd = pfd[0], .events = POLLIN};
    int port = 0;
    if (poll(&w, 1, 10000) != 1 || read(pfd[0], &port, sizeof(port)) != (ssize_t)sizeof(port)) {
        close(pfd[0]);
        kill_kids();
        bench_die("nng ping-pong: the server did not report its port within 10 s");
    }
    close(pfd[0]);
    spawn_kid(1, nng_client_kid, port, &base, -1);
    return wait_kids(60, "nng ping-pong");
}

static int run_tcp(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(lfd, 4) != 0 ||
        getsockname(lfd, (struct sockaddr *)&sa, &sl) != 0) {
        bench_die("tcp listen: %s", strerror(errno));
    }
    spawn_kid(0, tcp_server_kid, lfd, &base, -1);
    spawn_kid(1, tcp_client_kid, ntohs(sa.sin_port), &base, lfd);
    close(lfd);
    return wait_kids(60, "tcp ping-pong");
}

static void make_files(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/px-bench-net-XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        tmpdir[0] = '\0';
        bench_die("mkdtemp: %s", strerror(errno));
    }
    snprintf(base.secret, sizeof(base.secret), "%s/secret", tmpdir);
    uint8_t rnd[32];
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
        bench_die("getrandom: %s", strerror(errno));
    }
    int fd = open(base.secret, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (f == NULL) {
        bench_die("cannot create %s: %s", base.secret, strerror(errno));
    }
    for (size_t i = 0; i < sizeof(rnd); i++) {
        fprintf(f, "%02x", rnd[i]);
    }
    fputc('\n', f);
    if (fclose(f) != 0) {
        bench_die("cannot write %s", base.secret);
    }
    for (int i = 0; i < 2; i++) {
        snprintf(base.key[i], sizeof(base.key[i]), "%s/%s.key", tmpdir, node_names[i]);
        px_identity id;
        char err[256] = "";
        if (px_identity_load(base.key[i], true, &id, err, sizeof(err)) != PX_OK) {
            bench_die("identity %s: %s", base.key[i], err);
        }
        memcpy(base.pk[i], id.pk, PX_PUBKEY_BYTES);
    }
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    parent_pid = getpid();
    /* Both nodes share this machine's cores: scheduler workers that spin
     * before parking would take the CPU from the other node's I/O threads
     * (rtt p50 ~125 us with 50 us spins against ~25-45 us without, 2 vCPUs).
     * PX_BENCH_SPIN_US overrides; run.sh measures the spinning mode too. */
    if (getenv("PX_BENCH_SPIN_US") == NULL) {
        setenv("PX_BENCH_SPIN_US", "0", 1);
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL); /* for sigtimedwait; children unblock */
    atexit(cleanup_files);
    make_files();

    int status = 0;
    const char *modes[2] = {"enc", "plain"};
    for (int m = 0; m < 2; m++) {
        if (!env_has("PX_BENCH_NET_MODES", modes[m])) {
            continue;
        }
        unsigned ph = (env_has("PX_BENCH_NET_ONLY", "oneway") ? PH_ONEWAY : 0) |
                      (env_has("PX_BENCH_NET_ONLY", "rtt") ? PH_RTT : 0);
        if (ph != 0) {
            status |= run_pair(m == 1, ph);
        }
        if (env_has("PX_BENCH_NET_ONLY", "bulk")) {
            status |= run_pair(m == 1, PH_BULK);
        }
    }
    if (env_has("PX_BENCH_NET_ONLY", "tcp")) {
        status |= run_tcp();
    }
    if (env_has("PX_BENCH_NET_ONLY", "nng")) {
        status |= run_nng();
    }
    return status;
}
