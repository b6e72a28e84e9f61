/*
 * race_link.c — a self-checking concurrency workout of the transport in
 * latency mode (px_transport_cfg.poll_rx), without Criterion, so it can run
 * under ThreadSanitizer (Criterion cannot: Snaipe/Criterion#274). Also runs
 * in the plain and ASan builds.
 *
 * One process, two nodes: two systems (2 workers, adaptive spin 50..1000
 * us) and their transports over abstract ipc sockets (no file: nothing is
 * left behind, even when TSan halts the process), static peers of each
 * other, both polling their links from idle workers (core's idle
 * hook) and writing frames inline. The scenarios share the pair; the last
 * one stops both transports under traffic and frees the systems.
 *
 * Each scenario drives real threads and actors, waits on conditions with
 * bounded polls, and checks exact totals. Prints one line per scenario and
 * a closing "race_link: N passed, N failed"; exits non-zero on any failure.
 * An alarm bounds every scenario: a hang exits 3 and names it.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <plexus/plexus.h>
#include <plexus/transport.h>

#include "plexus/plexus.pb-c.h"
#include "race.h"

static int failures;

/* ---- the watchdog: no scenario may hang ---- */

#define SCENARIO_S 55 /* a scenario's bound (5 x 55 s < ctest's 300); TSan runs take ~8 s */
static _Atomic(const char *) running = "set-up";

static void on_alarm(int sig) {
    (void)sig;
    static const char pre[] = "race_link: hung in ";
    const char *s = atomic_load(&running);
    (void)!write(2, pre, sizeof(pre) - 1);
    (void)!write(2, s, strlen(s));
    (void)!write(2, "\n", 1);
    _exit(3);
}

/* ---- the pair: alpha (A) and beta (B) ---- */

#define SECRET "correct horse battery staple"

typedef struct node {
    px_system *sys;
    px_transport *t;
    px_identity id;
    char name[16];
    char addr[160];
} node;

static node na, nb;

/* Identities live in a temporary directory, gone once they are loaded. */
static int node_init(node *n, const char *name, const char *dir) {
    memset(n, 0, sizeof(*n));
    snprintf(n->name, sizeof(n->name), "%s", name);
    snprintf(n->addr, sizeof(n->addr), "ipc://@pxt-race-%ld-%s", (long)getpid(), name);
    char kp[128], err[256];
    snprintf(kp, sizeof(kp), "%s/%s.key", dir, name);
    if (px_identity_load(kp, true, &n->id, err, sizeof(err)) != PX_OK) {
        fprintf(stderr, "identity %s: %s\n", name, err);
        return 0;
    }
    px_config cfg;
    px_config_init(&cfg);
    cfg.node_name = n->name;
    cfg.workers = 2;
    cfg.spin_us = 50;
    cfg.spin_max_us = 1000;
    cfg.log_level = getenv("PXT_LOG") != NULL ? PX_LOG_INFO : PX_LOG_CRIT;
    return px_system_alloc(&n->sys, &cfg) == PX_OK;
}

/* Starts n's transport in latency mode with `peer` as its static peer. */
static int node_start(node *n, const node *peer) {
    px_transport_cfg tc;
    px_transport_cfg_init(&tc);
    tc.listen = n->addr;
    tc.identity = &n->id;
    tc.unreachable_ms = 10000; /* a TSan run is slow: no link drop mid-count */
    tc.poll_rx = true;
    if (px_secret_from_bytes(SECRET, strlen(SECRET), tc.cluster_key) != PX_OK) {
        return 0;
    }
    px_peer p = {.name = peer->name, .address = peer->addr};
    memcpy(p.pk, peer->id.pk, PX_PUBKEY_BYTES);
    tc.peers = &p;
    tc.npeers = 1;
    px_err e = px_transport_start(n->sys, &tc, &n->t);
    if (e != PX_OK) {
        fprintf(stderr, "px_transport_start %s: %s\n", n->name, px_strerror(e));
        return 0;
    }
    return 1;
}

static int link_up(node *n, const node *peer) {
    px_link_state st = PX_LINK_CONNECTING;
    return px_transport_peer_state(n->t, peer->name, &st, NULL) == PX_OK && st == PX_LINK_UP;
}

static int pair_up(void) {
    int ok = 1;
    char dir[64], cmd[128];
    snprintf(dir, sizeof(dir), "/tmp/pxt-race-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        fprintf(stderr, "mkdtemp failed\n");
        exit(2);
    }
    int made = node_init(&na, "alpha", dir) && node_init(&nb, "beta", dir);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0, "cannot remove %s", dir);
    CHECK(made, "cannot create the systems");
    CHECK(ok && node_start(&na, &nb) && node_start(&nb, &na), "cannot start the transports");
    CHECK(ok && AWAIT(link_up(&na, &nb) && link_up(&nb, &na), 20000), "the link never came up");
    return ok;
}

/* The end of the pair, if scenario d did not get that far. */
static void pair_done(void) {
    px_transport_stop(na.t);
    px_transport_stop(nb.t);
    px_system_free(na.sys);
    px_system_free(nb.sys);
    na.t = nb.t = NULL;
    na.sys = nb.sys = NULL;
}

/* ---- a. two senders on A (a thread and an actor), one sink on B ---- */

#define SENDERS 2
#define PER_SENDER 20000
static _Atomic uint64_t ord_next[SENDERS];
static _Atomic uint64_t ord_bad, ord_got, ord_send_errors;
static px_ref ord_sink;

/* Sender s is tag s; each one's sequence numbers must come in order. */
static px_err ord_sink_recv(px_ctx *ctx, px_msg *m) {
    (void)ctx;
    uint32_t s = px_msg_tag(m);
    uint64_t seq = px_msg_get_u64(m);
    if (s >= SENDERS || atomic_load(&ord_next[s]) != seq) {
        atomic_fetch_add(&ord_bad, 1);
    }
    if (s < SENDERS) {
        atomic_store(&ord_next[s], seq + 1);
    }
    atomic_fetch_add(&ord_got, 1);
    return PX_OK;
}
static const px_behavior ord_sink_b = {.name = "race.ord.sink", .receive = ord_sink_recv};

/* An actor sender: 500 a turn, then a kick to itself for the next 500. */
static px_err ord_pump_recv(px_ctx *ctx, px_msg *m) {
    uint32_t s = px_msg_tag(m);
    uint64_t from = px_msg_get_u64(m);
    for (uint64_t i = from; i < from + 500 && i < PER_SENDER; i++) {
        px_msg *d = NULL;
        px_msg_u64(&d, s, i);
        if (px_send(ctx, ord_sink, &d) != PX_OK) {
            px_msg_free(d);
            atomic_fetch_add(&ord_send_errors, 1);
        }
    }
    if (from + 500 < PER_SENDER) {
        px_msg *k = NULL;
        px_msg_u64(&k, s, from + 500);
        return px_send(ctx, px_self(ctx), &k);
    }
    return PX_OK;
}
static const px_behavior ord_pump_b = {.name = "race.ord.pump", .receive = ord_pump_recv};

static void *ord_thread(void *p) {
    (void)p;
    for (uint64_t i = 0; i < PER_SENDER; i++) {
        px_msg *d = NULL;
        px_msg_u64(&d, 0, i);
        if (px_system_send(na.sys, ord_sink, &d) != PX_OK) {
            px_msg_free(d);
            atomic_fetch_add(&ord_send_errors, 1);
        }
    }
    return NULL;
}

static int ordered_sends(void) {
    int ok = 1;
    CHECK(px_system_spawn(nb.sys, &ord_sink_b, NULL, NULL, &ord_sink) == PX_OK, "spawn sink");
    px_ref pump;
    px_msg *k = NULL;
    px_msg_u64(&k, 1, 0);
    CHECK(px_system_spawn(na.sys, &ord_pump_b, NULL, NULL, &pump) == PX_OK, "spawn pump");
    pthread_t t;
    pthread_create(&t, NULL, ord_thread, NULL);
    CHECK(px_system_send(na.sys, pump, &k) == PX_OK, "kick");
    pthread_join(t, NULL);
    CHECK(AWAIT(atomic_load(&ord_got) == SENDERS * PER_SENDER, 60000), "got %llu of %d",
          (unsigned long long)atomic_load(&ord_got), SENDERS * PER_SENDER);
    CHECK(atomic_load(&ord_send_errors) == 0, "%llu sends failed",
          (unsigned long long)atomic_load(&ord_send_errors));
    CHECK(atomic_load(&ord_bad) == 0, "%llu out of order or unknown",
          (unsigned long long)atomic_load(&ord_bad));
    for (int s = 0; s < SENDERS; s++) {
        CHECK(atomic_load(&ord_next[s]) == PER_SENDER, "sender %d ends at %llu", s,
              (unsigned long long)atomic_load(&ord_next[s]));
    }
    px_transport_stats as, bs;
    px_transport_stats_get(na.t, &as);
    px_transport_stats_get(nb.t, &bs);
    CHECK(bs.msgs_in >= SENDERS * PER_SENDER && bs.bad_frames + as.bad_frames == 0 &&
              bs.undeliverable == 0,
          "beta: %llu in, %llu bad frames, %llu undeliverable", (unsigned long long)bs.msgs_in,
          (unsigned long long)(bs.bad_frames + as.bad_frames),
          (unsigned long long)bs.undeliverable);
    return ok;
}

/* ---- b. an ask chain A -> B while a thread on A streams one-way ---- */

#define ASKS 2000
#define STREAM_WINDOW 2000 /* one-way messages in flight at most */
static px_ref chain_echo, stream_sink;
static uint64_t chain_left; /* the chain actor's own */
static _Atomic uint64_t chain_replies, chain_bad, stream_got, stream_sent, stream_errors;
static _Atomic int chain_done;

static px_err echo_recv(px_ctx *ctx, px_msg *m) {
    px_msg *r = NULL;
    px_msg_u64(&r, 2, px_msg_get_u64(m) * 2);
    if (px_reply(ctx, m, &r) != PX_OK) {
        px_msg_free(r);
    }
    return PX_OK;
}
static const px_behavior echo_b = {.name = "race.echo", .receive = echo_recv};

/* Asks ASKS, ..., 1 in turn: each reply (checked) sends the next ask. */
static px_err chain_recv(px_ctx *ctx, px_msg *m) {
    if (px_msg_is_reply(m)) {
        if (px_msg_get_u64(m) != 2 * chain_left) {
            atomic_fetch_add(&chain_bad, 1);
        }
        atomic_fetch_add(&chain_replies, 1);
        chain_left--;
    } else if (px_msg_kind_of(m) != PX_MSG_BYTES) { /* a timeout or undelivered */
        atomic_fetch_add(&chain_bad, 1);
        chain_left--;
    } else {
        chain_left = ASKS; /* the kick */
    }
    if (chain_left == 0) {
        atomic_store(&chain_done, 1);
        return PX_OK;
    }
    px_msg *q = NULL;
    px_msg_u64(&q, 1, chain_left);
    if (px_ask(ctx, chain_echo, &q, 20000, NULL) != PX_OK) {
        px_msg_free(q);
        atomic_fetch_add(&chain_bad, 1);
        atomic_store(&chain_done, 1);
    }
    return PX_OK;
}
static const px_behavior chain_b = {.name = "race.chain", .receive = chain_recv};

static px_err count_recv(px_ctx *ctx, px_msg *m) {
    (void)ctx;
    (void)m;
    atomic_fetch_add(&stream_got, 1);
    return PX_OK;
}
static const px_behavior count_b = {.name = "race.count", .receive = count_recv};

/* One-way sends until the chain is done, at most STREAM_WINDOW in flight
 * (a pause when the window is full is back-pressure, not synchronization). */
static void *stream_thread(void *p) {
    (void)p;
    for (uint64_t i = 0; !atomic_load(&chain_done) && i < 1000000; i++) {
        if (!AWAIT(atomic_load(&stream_sent) - atomic_load(&stream_got) < STREAM_WINDOW,
                   30000)) {
            atomic_fetch_add(&stream_errors, 1);
            break;
        }
        px_msg *d = NULL;
        px_msg_u64(&d, 3, i);
        if (px_system_send(na.sys, stream_sink, &d) == PX_OK) {
            atomic_fetch_add(&stream_sent, 1);
        } else {
            px_msg_free(d);
            atomic_fetch_add(&stream_errors, 1);
        }
    }
    return NULL;
}

static int ask_chain(void) {
    int ok = 1;
    CHECK(px_system_spawn(nb.sys, &echo_b, NULL, NULL, &chain_echo) == PX_OK, "spawn echo");
    CHECK(px_system_spawn(nb.sys, &count_b, NULL, NULL, &stream_sink) == PX_OK, "spawn sink");
    px_ref asker;
    CHECK(px_system_spawn(na.sys, &chain_b, NULL, NULL, &asker) == PX_OK, "spawn chain");
    pthread_t t;
    pthread_create(&t, NULL, stream_thread, NULL);
    px_msg *k = NULL;
    px_msg_u64(&k, 0, 0);
    CHECK(px_system_send(na.sys, asker, &k) == PX_OK, "kick");
    CHECK(AWAIT(atomic_load(&chain_done), 40000), "the chain stalled at %llu replies",
          (unsigned long long)atomic_load(&chain_replies));
    atomic_store(&chain_done, 1); /* the stream ends even when the chain stalled */
    pthread_join(t, NULL);
    CHECK(atomic_load(&chain_replies) == ASKS && atomic_load(&chain_bad) == 0,
          "%llu of %d replies, %llu wrong, timed out or undelivered",
          (unsigned long long)atomic_load(&chain_replies), ASKS,
          (unsigned long long)atomic_load(&chain_bad));
    CHECK(AWAIT(atomic_load(&stream_got) == atomic_load(&stream_sent), 30000),
          "one-way: got %llu of %llu", (unsigned long long)atomic_load(&stream_got),
          (unsigned long long)atomic_load(&stream_sent));
    CHECK(atomic_load(&stream_sent) > 0 && atomic_load(&stream_errors) == 0,
          "one-way: %llu sent, %llu failed", (unsigned long long)atomic_load(&stream_sent),
          (unsigned long long)atomic_load(&stream_errors));
    /* Over scenarios a and b: the chain's waits leave workers idle, and
     * idle workers read the links (scenario a's sink alone may keep every
     * worker busy on a loaded machine). */
    px_transport_stats as, bs;
    px_transport_stats_get(na.t, &as);
    px_transport_stats_get(nb.t, &bs);
    CHECK(as.reads_polled + bs.reads_polled > 0,
          "no polled read (alpha %llu, beta %llu): latency mode did not poll",
          (unsigned long long)as.reads_polled, (unsigned long long)bs.reads_polled);
    return ok;
}

/* ---- c. the system-envelope handler removed under its traffic ----
 * Two threads on A send system envelopes to an actor on B while B's
 * handler is installed and removed, ROUNDS times. The handler holds each
 * call ~20 us. px_transport_set_on_sys(NULL) must return only once no call
 * is inside the old handler, and no call may start after it returned or
 * see a NULL arg (the mesh frees its state right after removing it). */

#define SYS_ROUNDS 20
#define SYS_PER_ROUND 200
#define SYS_OP_ANY PLEXUS__SYS_OP__SYS_UNWATCH /* passed up (SYS_UNDELIVERED is not) */
static int sys_tag;
static _Atomic int sys_removed, sys_senders_stop;
static _Atomic uint64_t sys_calls, sys_inside, sys_late, sys_bad_arg;
static px_ref sys_to;

static void sys_handler(void *arg, const char *peer, px_ref to, px_ref from, uint64_t corr,
                        uint32_t sysop, const uint8_t *payload, size_t len) {
    (void)peer, (void)to, (void)from, (void)corr, (void)sysop, (void)payload, (void)len;
    atomic_fetch_add(&sys_inside, 1);
    if (atomic_load(&sys_removed)) {
        atomic_fetch_add(&sys_late, 1);
    }
    if (arg != &sys_tag) {
        atomic_fetch_add(&sys_bad_arg, 1);
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do { /* hold the call open: widens the window a remover must wait out */
        clock_gettime(CLOCK_MONOTONIC, &t1);
    } while ((t1.tv_sec - t0.tv_sec) * 1000000000L + (t1.tv_nsec - t0.tv_nsec) < 20000);
    atomic_fetch_add(&sys_calls, 1);
    atomic_fetch_sub(&sys_inside, 1);
}

static void *sys_thread(void *p) {
    (void)p;
    while (!atomic_load(&sys_senders_stop)) {
        if (px_transport_send_sys(na.t, sys_to, PX_REF_NIL, 0, SYS_OP_ANY, NULL, 1) != PX_OK) {
            nap(); /* queue full: let the link drain */
        }
    }
    return NULL;
}

static int sys_handler_removal(void) {
    int ok = 1;
    CHECK(px_system_spawn(nb.sys, &count_b, NULL, NULL, &sys_to) == PX_OK, "spawn target");
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        pthread_create(&th[i], NULL, sys_thread, NULL);
    }
    for (int r = 0; ok && r < SYS_ROUNDS; r++) {
        atomic_store(&sys_removed, 0);
        uint64_t c0 = atomic_load(&sys_calls);
        px_transport_set_on_sys(nb.t, sys_handler, &sys_tag);
        CHECK(AWAIT(atomic_load(&sys_calls) >= c0 + SYS_PER_ROUND, 20000),
              "round %d: %llu calls of %d", r, (unsigned long long)(atomic_load(&sys_calls) - c0),
              SYS_PER_ROUND);
        px_transport_set_on_sys(nb.t, NULL, NULL);
        uint64_t inside = atomic_load(&sys_inside);
        atomic_store(&sys_removed, 1);
        CHECK(inside == 0, "round %d: %llu calls still inside the removed handler", r,
              (unsigned long long)inside);
        /* Envelopes keep arriving with no handler: B counts them
         * undeliverable, and the handler is not called (sys_late). */
        px_transport_stats bs;
        px_transport_stats_get(nb.t, &bs);
        uint64_t u0 = bs.undeliverable;
        CHECK(AWAIT((px_transport_stats_get(nb.t, &bs), bs.undeliverable >= u0 + 50), 20000),
              "round %d: no envelope arrived without a handler", r);
    }
    atomic_store(&sys_senders_stop, 1);
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
    }
    CHECK(atomic_load(&sys_late) == 0, "%llu calls began after the removal returned",
          (unsigned long long)atomic_load(&sys_late));
    CHECK(atomic_load(&sys_bad_arg) == 0, "%llu calls saw another arg",
          (unsigned long long)atomic_load(&sys_bad_arg));
    (void)px_stop(nb.sys, sys_to);
    return ok;
}

/* ---- d. both transports stop under traffic, then the systems go ----
 *
 * Until the stops begin, each direction keeps at most C_WINDOW messages in
 * flight (so the asks are not stuck behind full link queues); from then on
 * the senders send as fast as they can, and failures (the link going
 * down, then no router) are expected. */

#define C_WINDOW 4000
static _Atomic int c_stopping, c_stop;
static px_ref c_sink_a, c_sink_b, c_echo;
static _Atomic uint64_t c_got_a2b, c_got_b2a, c_sent_a2b, c_sent_b2a, c_replies;

static px_err c_sink_recv(px_ctx *ctx, px_msg *m) {
    (void)m;
    px_system *sys = px_ctx_system(ctx);
    atomic_fetch_add(sys == na.sys ? &c_got_b2a : &c_got_a2b, 1);
    return PX_OK;
}
static const px_behavior c_sink_beh = {.name = "race.c.sink", .receive = c_sink_recv};

/* May this direction send now? */
static int c_room(_Atomic uint64_t *sent, _Atomic uint64_t *got) {
    return atomic_load(&c_stopping) || atomic_load(sent) - atomic_load(got) < C_WINDOW;
}

static void c_sent(px_err e, _Atomic uint64_t *sent, px_msg *d) {
    if (e == PX_OK) {
        atomic_fetch_add(sent, 1);
    } else {
        px_msg_free(d);
    }
}

/* An actor sender to the other node's sink, 200 a turn, until c_stop; a
 * turn with no room kicks itself 1 ms later. */
static px_err c_pump_recv(px_ctx *ctx, px_msg *m) {
    (void)m;
    int on_a = px_ctx_system(ctx) == na.sys;
    px_ref to = on_a ? c_sink_b : c_sink_a;
    _Atomic uint64_t *sent = on_a ? &c_sent_a2b : &c_sent_b2a;
    _Atomic uint64_t *got = on_a ? &c_got_a2b : &c_got_b2a;
    int room = c_room(sent, got);
    for (uint64_t i = 0; room && i < 200; i++) {
        px_msg *d = NULL;
        px_msg_u64(&d, 4, i);
        c_sent(px_send(ctx, to, &d), sent, d);
    }
    if (atomic_load(&c_stop)) {
        return PX_OK;
    }
    px_msg *k = NULL;
    px_msg_u64(&k, 0, 0);
    px_err e = room ? px_send(ctx, px_self(ctx), &k)
                    : px_send_after(ctx, 1, px_self(ctx), &k, NULL);
    if (e != PX_OK) {
        px_msg_free(k);
    }
    return PX_OK;
}
static const px_behavior c_pump_beh = {.name = "race.c.pump", .receive = c_pump_recv};

/* Asks the echo on B in a chain until c_stop, whatever each outcome. */
static px_err c_chain_recv(px_ctx *ctx, px_msg *m) {
    if (px_msg_is_reply(m)) {
        atomic_fetch_add(&c_replies, 1);
    }
    if (atomic_load(&c_stop)) {
        return PX_OK;
    }
    px_msg *q = NULL;
    px_msg_u64(&q, 1, 1);
    if (px_ask(ctx, c_echo, &q, 1000, NULL) != PX_OK) {
        px_msg_free(q);
        /* no route any more: try again later, not in a tight loop */
        px_msg *k = NULL;
        px_msg_u64(&k, 0, 0);
        if (px_send_after(ctx, 1, px_self(ctx), &k, NULL) != PX_OK) {
            px_msg_free(k);
        }
    }
    return PX_OK;
}
static const px_behavior c_chain_beh = {.name = "race.c.chain", .receive = c_chain_recv};

/* A thread sender on A to B's sink, until c_stop (a pause while the window
 * is full is back-pressure, not synchronization). */
static void *c_thread(void *p) {
    (void)p;
    for (uint64_t i = 0; !atomic_load(&c_stop); i++) {
        if (!c_room(&c_sent_a2b, &c_got_a2b)) {
            nap();
            continue;
        }
        px_msg *d = NULL;
        px_msg_u64(&d, 5, i);
        c_sent(px_system_send(na.sys, c_sink_b, &d), &c_sent_a2b, d);
    }
    return NULL;
}

static int kick(px_system *sys, const px_behavior *b) {
    px_ref r;
    px_msg *k = NULL;
    px_msg_u64(&k, 0, 0);
    if (px_system_spawn(sys, b, NULL, NULL, &r) != PX_OK) {
        px_msg_free(k);
        return 0;
    }
    if (px_system_send(sys, r, &k) != PX_OK) {
        px_msg_free(k);
        return 0;
    }
    return 1;
}

static int stop_under_traffic(void) {
    int ok = 1;
    CHECK(px_system_spawn(na.sys, &c_sink_beh, NULL, NULL, &c_sink_a) == PX_OK, "spawn sink a");
    CHECK(px_system_spawn(nb.sys, &c_sink_beh, NULL, NULL, &c_sink_b) == PX_OK, "spawn sink b");
    CHECK(px_system_spawn(nb.sys, &echo_b, NULL, NULL, &c_echo) == PX_OK, "spawn echo");
    CHECK(kick(na.sys, &c_pump_beh) && kick(nb.sys, &c_pump_beh) && kick(na.sys, &c_chain_beh),
          "spawn and kick the pumps and the chain");
    pthread_t t;
    pthread_create(&t, NULL, c_thread, NULL);
    /* Traffic flows both ways before anything stops. */
    CHECK(AWAIT(atomic_load(&c_got_b2a) > 2000 && atomic_load(&c_got_a2b) > 2000 &&
                    atomic_load(&c_replies) > 20,
                30000),
          "traffic: alpha got %llu, beta got %llu, %llu replies",
          (unsigned long long)atomic_load(&c_got_b2a), (unsigned long long)atomic_load(&c_got_a2b),
          (unsigned long long)atomic_load(&c_replies));
    atomic_store(&c_stopping, 1);
    int64_t t0 = now_ms();
    px_transport_stop(nb.t);
    nb.t = NULL;
    int64_t t1 = now_ms();
    px_transport_stop(na.t);
    na.t = NULL;
    int64_t t2 = now_ms();
    CHECK(t1 - t0 < 10000 && t2 - t1 < 10000, "stops took %lld and %lld ms",
          (long long)(t1 - t0), (long long)(t2 - t1));
    /* No router any more: a remote send fails at once, on both nodes. */
    px_msg *d = NULL;
    px_msg_u64(&d, 6, 0);
    px_err e = px_system_send(na.sys, c_sink_b, &d);
    CHECK(e == PX_EUNREACHABLE, "alpha's send after stop: %s", px_strerror(e));
    px_msg_free(d);
    d = NULL;
    px_msg_u64(&d, 6, 0);
    e = px_system_send(nb.sys, c_sink_a, &d);
    CHECK(e == PX_EUNREACHABLE, "beta's send after stop: %s", px_strerror(e));
    px_msg_free(d);
    atomic_store(&c_stop, 1);
    pthread_join(t, NULL);
    int64_t t3 = now_ms();
    px_system_free(na.sys);
    px_system_free(nb.sys);
    na.sys = nb.sys = NULL;
    int64_t t4 = now_ms();
    CHECK(t4 - t3 < 20000, "freeing the systems took %lld ms", (long long)(t4 - t3));
    return ok;
}

int main(void) {
    struct {
        const char *name;
        int (*fn)(void);
    } cases[] = {{"latency_mode_pair_links_up", pair_up},
                 {"ordered_sends_keep_per_sender_order_and_workers_poll", ordered_sends},
                 {"ask_chain_answers_every_ask_under_one_way_load", ask_chain},
                 {"removing_the_sys_handler_waits_for_calls_inside_it", sys_handler_removal},
                 {"transports_stop_under_traffic_and_systems_free_cleanly",
                  stop_under_traffic}};
    signal(SIGALRM, on_alarm);
    int passed = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        atomic_store(&running, cases[i].name);
        alarm(SCENARIO_S);
        int64_t t0 = now_ms();
        int ok = cases[i].fn();
        alarm(0);
        printf("%s %s (%lld ms)\n", ok ? "ok  " : "FAIL", cases[i].name,
               (long long)(now_ms() - t0));
        fflush(stdout);
        if (ok) {
            passed++;
        } else {
            failures++;
            if (i == 0) {
                break; /* no pair: nothing else can run */
            }
        }
    }
    atomic_store(&running, "tear-down");
    alarm(SCENARIO_S);
    pair_done();
    alarm(0);
    printf("race_link: %d passed, %d failed\n", passed, failures);
    return failures == 0 ? 0 : 1;
}
