/* Tests for the transport's links (transport/src/link.c), two or three
 * nodes in one process over ipc: messages flow in order across nodes, ask
 * works across nodes, a node with the wrong cluster secret never links,
 * sends to an unreachable node fail fast, large payloads go in chunks on
 * the bulk lane without delaying heartbeats or breaking per-pair order, and
 * a payload over max_msg fails that send only. */
#define _GNU_SOURCE /* unshare */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../core/helpers.h"

#include <plexus/transport.h>

#define SECRET "correct horse battery staple"

typedef struct tnode {
    px_system *sys;
    px_transport *t;
    px_identity id;
    char addr[160];
    char name[16];
} tnode;

static char tdir[64];

static void dir_gone(void) {
    if (tdir[0] != '\0') {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tdir);
        if (system(cmd) == 0) {
            tdir[0] = '\0';
        }
    }
}

/* The test's directory; removed by dir_remove, or when the test's process
 * exits (a failed assertion ends the test before its dir_remove). */
static void dir_make(void) {
    snprintf(tdir, sizeof tdir, "/tmp/pxt-link-XXXXXX");
    cr_assert_not_null(mkdtemp(tdir));
    static bool registered;
    if (!registered) {
        registered = atexit(dir_gone) == 0;
    }
}

static void dir_remove(void) {
    dir_gone();
    cr_assert_eq(tdir[0], '\0', "the test directory could not be removed");
}

static uint32_t g_spin_us; /* the next node_init's workers spin this long (0: default) */
static bool g_poll_rx;     /* the next node_start's transport runs in latency mode */

static void node_init(tnode *n, const char *name) {
    memset(n, 0, sizeof *n);
    snprintf(n->name, sizeof n->name, "%s", name);
    snprintf(n->addr, sizeof n->addr, "ipc://%s/%s.sock", tdir, name);
    char kp[128], err[256];
    snprintf(kp, sizeof kp, "%s/%s.key", tdir, name);
    cr_assert_eq(px_identity_load(kp, true, &n->id, err, sizeof err), PX_OK, "%s", err);
    px_config cfg;
    pxt_config(&cfg);
    cfg.node_name = n->name;
    cfg.log_level = getenv("PXT_LOG") ? PX_LOG_INFO : PX_LOG_CRIT;
    cfg.max_msg_size = 128u << 20;
    if (g_spin_us != 0) {
        cfg.spin_us = g_spin_us;
    }
    n->sys = pxt_system_with(&cfg);
}

/* Settings a test changes for the next node_start (0 = default). */
static uint64_t g_max_msg;
static uint64_t g_queue_bytes;
static uint32_t g_heartbeat_ms;
static uint32_t g_max_peers;
static uint32_t g_bulk_delay_ms; /* bulk_delay_ms; UINT32_MAX: 0 (no window) */
static void (*g_on_link)(void *, const char *, px_link_state, uint32_t);

/* Starts n's transport with the others as peers and `secret`. */
static void node_start(tnode *n, tnode **peers, size_t np, const char *secret) {
    px_transport_cfg tc;
    px_transport_cfg_init(&tc);
    tc.listen = n->addr;
    tc.identity = &n->id;
    tc.heartbeat_ms = g_heartbeat_ms ? g_heartbeat_ms : 50;
    tc.unreachable_ms = 1000;
    if (g_bulk_delay_ms != 0) {
        tc.bulk_delay_ms = g_bulk_delay_ms == UINT32_MAX ? 0 : g_bulk_delay_ms;
    }
    if (g_max_msg != 0) {
        tc.max_msg = g_max_msg;
        tc.queue_bytes = g_max_msg > tc.queue_bytes ? g_max_msg : tc.queue_bytes;
    }
    if (g_queue_bytes != 0) {
        tc.queue_bytes = g_queue_bytes;
    }
    if (g_max_peers != 0) {
        tc.max_peers = g_max_peers;
    }
    tc.on_link = g_on_link;
    tc.link_arg = n;
    tc.poll_rx = g_poll_rx;
    cr_assert_eq(px_secret_from_bytes(secret, strlen(secret), tc.cluster_key), PX_OK);
    px_peer ps[4];
    for (size_t i = 0; i < np; i++) {
        ps[i] = (px_peer){.name = peers[i]->name, .address = peers[i]->addr};
        memcpy(ps[i].pk, peers[i]->id.pk, PX_PUBKEY_BYTES);
    }
    tc.peers = ps;
    tc.npeers = np;
    px_err e = px_transport_start(n->sys, &tc, &n->t);
    cr_assert_eq(e, PX_OK, "px_transport_start %s: %s", n->name, px_errname(e));
    cr_assert_str_eq(px_transport_address(n->t), n->addr);
}

static void node_free(tnode *n) {
    px_transport_stop(n->t);
    px_system_free(n->sys);
}

static px_link_state link_state(tnode *n, const char *peer) {
    px_link_state st = PX_LINK_CONNECTING;
    cr_assert_eq(px_transport_peer_state(n->t, peer, &st, NULL), PX_OK);
    return st;
}

/* Waits until a and b are linked both ways. */
static void link_await(tnode *a, tnode *b) {
    PXT_AWAIT(link_state(a, b->name) == PX_LINK_UP && link_state(b, a->name) == PX_LINK_UP,
              10000);
}

/* The end of a two-node test: both nodes, the test's state, the directory. */
static void pair_done(tnode *a, tnode *b, void *state) {
    node_free(a);
    node_free(b);
    free(state);
    dir_remove();
}

/* alpha and beta, each the other's peer, linked both ways. */
static void link_pair(tnode *a, tnode *b) {
    tnode *pa[] = {b}, *pb[] = {a};
    node_init(a, "alpha");
    node_init(b, "beta");
    node_start(a, pa, 1, SECRET);
    node_start(b, pb, 1, SECRET);
    link_await(a, b);
}

/* --- a counter on the receiving node: checks per-sender order ----------- */

#define N_MSGS 20000
typedef struct counter {
    atomic_uint_least64_t got, out_of_order, last;
    px_ref last_sender;
} counter;

static px_err counter_receive(px_ctx *ctx, px_msg *m) {
    counter *c = px_state(ctx);
    uint64_t v = px_msg_get_u64(m);
    uint64_t want = atomic_load(&c->last) + 1;
    if (v != want) {
        atomic_fetch_add(&c->out_of_order, 1);
    }
    atomic_store(&c->last, v);
    c->last_sender = px_msg_sender(m);
    atomic_fetch_add(&c->got, 1);
    return PX_OK;
}
static const px_behavior counter_b = {.name = "t.counter", .init = pxt_init_ptr_state,
                                      .receive = counter_receive};

/* A sender actor on the other node: on "go" (u64 = n), sends 1..n. */
static px_ref g_target;
static atomic_int g_send_errors;
static px_err sender_receive(px_ctx *ctx, px_msg *m) {
    uint64_t n = px_msg_get_u64(m);
    for (uint64_t i = 1; i <= n; i++) {
        px_msg *x = NULL;
        if (px_msg_u64(&x, 1, i) != PX_OK || px_send(ctx, g_target, &x) != PX_OK) {
            px_msg_free(x);
            atomic_fetch_add(&g_send_errors, 1);
        }
    }
    return PX_OK;
}
static const px_behavior sender_b = {.name = "t.sender", .receive = sender_receive};


/* N_MSGS from an actor on alpha to one on beta, in order; asks from alpha
 * to beta; a dead ref. Returns beta's and alpha's stats, then stops. */
static void order_and_asks(px_transport_stats *bst, px_transport_stats *ast) {
    dir_make();
    tnode a, b;
    link_pair(&a, &b);

    counter *c = calloc(1, sizeof *c);
    cr_assert_not_null(c);
    g_target = pxt_spawn(b.sys, &counter_b, c, NULL);
    cr_assert_eq(g_target.node, px_system_root(b.sys).node);
    px_ref s = PX_REF_NIL;
    cr_assert_eq(px_system_spawn(a.sys, &sender_b, NULL, NULL, &s), PX_OK);
    pxt_send_u64(a.sys, s, 0, N_MSGS);
    PXT_AWAIT(atomic_load(&c->got) == N_MSGS, 30000);
    cr_assert_eq(atomic_load(&g_send_errors), 0);
    cr_assert_eq(atomic_load(&c->out_of_order), 0, "messages arrive in send order");
    cr_assert_eq(atomic_load(&c->last), N_MSGS);
    cr_assert(px_ref_eq(c->last_sender, s), "the sender's ref crosses the wire");

    px_transport_stats st;
    px_transport_stats_get(a.t, &st);
    cr_assert_geq(st.msgs_out, N_MSGS);
    cr_assert_lt(st.frames_out, N_MSGS, "a burst shares frames (%llu frames)",
                 (unsigned long long)st.frames_out);
    px_transport_stats_get(b.t, &st);
    cr_assert_eq(st.msgs_in, N_MSGS);
    cr_assert_eq(st.bad_frames, 0);

    /* Ask from outside actors on alpha to an actor on beta. */
    px_ref echo = PX_REF_NIL;
    cr_assert_eq(px_system_spawn(b.sys, pxt_echo_behavior(), NULL, NULL, &echo), PX_OK);
    for (int i = 1; i <= 50; i++) {
        px_msg *q = pxt_u64(1, (uint64_t)i), *r = NULL;
        px_err e = px_system_ask(a.sys, echo, &q, 5000, &r);
        cr_assert_eq(e, PX_OK, "ask %d across nodes: %s", i, px_errname(e));
        cr_assert_eq(px_msg_get_u64(r), 2 * (uint64_t)i);
        px_msg_free(r);
    }

    /* A ref to an actor that is gone on beta: a dead letter there, not a crash. */
    px_ref gone = g_target;
    gone.inc += 1;
    px_msg *x = pxt_u64(1, 1);
    cr_assert_eq(px_system_send(a.sys, gone, &x), PX_OK);

    px_transport_stats_get(b.t, bst);
    px_transport_stats_get(a.t, ast);
    node_free(&a);
    node_free(&b);
    free(c);
    dir_remove();
}

Test(transport_link, messages_cross_nodes_in_send_order_and_asks_come_back, .timeout = 60) {
    px_transport_stats bs, as;
    order_and_asks(&bs, &as);
    cr_assert_eq(bs.reads_polled + as.reads_polled + bs.writes_inline + as.writes_inline, 0,
                 "no latency mode, no polled reads nor inline writes");
}

/* An actor that asks `to` (an echo) left, left-1, ..., 1 in a chain: each
 * reply sends the next ask from inside the turn. */
typedef struct chain {
    px_ref to;
    uint64_t left;
    atomic_int done, bad;
} chain;

static px_err chain_receive(px_ctx *ctx, px_msg *m) {
    chain *ch = px_state(ctx);
    if (px_msg_is_reply(m)) {
        if (px_msg_get_u64(m) != 2 * ch->left) {
            atomic_fetch_add(&ch->bad, 1);
        }
        ch->left--;
    } else if (px_msg_kind_of(m) == PX_MSG_ASK_TIMEOUT) {
        atomic_fetch_add(&ch->bad, 1);
        ch->left--;
    }
    if (ch->left == 0) {
        atomic_store(&ch->done, 1);
        return PX_OK;
    }
    px_msg *q = pxt_u64(1, ch->left);
    uint64_t corr = 0;
    if (px_ask(ctx, ch->to, &q, 5000, &corr) != PX_OK) {
        px_msg_free(q);
        atomic_fetch_add(&ch->bad, 1);
        atomic_store(&ch->done, 1);
    }
    return PX_OK;
}
static const px_behavior chain_b = {.name = "t.chain", .init = pxt_init_ptr_state,
                                    .receive = chain_receive};

/* Latency mode: the spinning workers read the links and write inline, and
 * everything above still holds. The workers spin 2 ms (a round trip here
 * takes well under that, sanitizers included), so both nodes' workers are
 * spinning when the chain's asks and replies arrive. */
Test(transport_poll, in_latency_mode_order_and_asks_hold_and_workers_read_the_links,
     .timeout = 60) {
    g_spin_us = 2000;
    g_poll_rx = true;
    px_transport_stats bs, as;
    order_and_asks(&bs, &as);
    cr_assert_gt(bs.reads_polled, 0, "beta's workers read the messages and asks themselves");
    cr_assert_gt(as.writes_inline, 0, "alpha writes its frames inline");
    cr_assert_gt(bs.writes_inline, 0, "beta writes its replies inline");
    cr_assert_eq(bs.bad_frames + as.bad_frames, 0);

    /* Asks from an actor: its worker spins after each ask and reads the
     * reply itself. */
    dir_make();
    tnode a, b;
    link_pair(&a, &b);
    px_ref echo = PX_REF_NIL;
    cr_assert_eq(px_system_spawn(b.sys, pxt_echo_behavior(), NULL, NULL, &echo), PX_OK);
    chain *ch = calloc(1, sizeof *ch);
    cr_assert_not_null(ch);
    ch->to = echo;
    ch->left = 300;
    px_ref asker = pxt_spawn(a.sys, &chain_b, ch, NULL);
    pxt_send_u64(a.sys, asker, 0, 0);
    PXT_AWAIT(atomic_load(&ch->done) == 1, 30000);
    cr_assert_eq(atomic_load(&ch->bad), 0, "every reply right and in time");
    cr_assert_eq(ch->left, 0);
    px_transport_stats_get(a.t, &as);
    px_transport_stats_get(b.t, &bs);
    cr_assert_gt(as.reads_polled, 0, "alpha's worker read replies itself");
    cr_assert_gt(bs.reads_polled, 0, "beta's worker read asks itself");
    pair_done(&a, &b, ch);
}

Test(transport_link, a_node_with_the_wrong_secret_never_links_and_sends_fail_fast,
     .timeout = 60) {
    dir_make();
    tnode a, m;
    node_init(&a, "alpha");
    node_init(&m, "mallory");
    tnode *pa[] = {&m}, *pm[] = {&a};
    node_start(&a, pa, 1, SECRET);
    node_start(&m, pm, 1, "not the cluster secret at all");
    PXT_AWAIT(link_state(&a, "mallory") == PX_LINK_UNREACHABLE, 10000);
    px_transport_stats st;
    PXT_AWAIT((px_transport_stats_get(a.t, &st), st.refused + st.bad_frames > 0), 10000);
    cr_assert_eq(st.handshakes, 0, "no handshake completes without the secret");
    cr_assert_eq(link_state(&m, "alpha") == PX_LINK_UP, 0);

    /* A send to mallory's node fails fast while the link is down. */
    px_ref r = {px_node_id("mallory"), 1, 1, 1};
    px_msg *x = pxt_u64(1, 1);
    int64_t t0 = pxt_now_ms();
    px_err e = px_system_send(a.sys, r, &x);
    cr_assert_eq(e, PX_EUNREACHABLE, "%s", px_errname(e));
    cr_assert_lt(pxt_now_ms() - t0, 100);
    px_msg_free(x);

    /* And to a node nobody configured. */
    px_ref nobody = {px_node_id("nobody"), 1, 1, 1};
    x = pxt_u64(1, 1);
    cr_assert_eq(px_system_send(a.sys, nobody, &x), PX_EUNREACHABLE);
    px_msg_free(x);

    node_free(&a);
    node_free(&m);
    dir_remove();
}

/* --- large payloads: the bulk lane ----------------------------------------- */

/* Message i of a script: tag i, len bytes, the first 8 the index and the
 * rest the byte (uint8_t)(i * 7 + 1). */
static px_msg *script_msg(uint32_t i, size_t len) {
    uint8_t *b = malloc(len);
    cr_assert_not_null(b);
    memset(b, (int)(uint8_t)(i * 7 + 1), len);
    memcpy(b, &(uint64_t){i}, len < 8 ? len : 8);
    px_msg *m = NULL;
    cr_assert_eq(px_msg_bytes(&m, i, b, len), PX_OK);
    free(b);
    return m;
}

/* A sink that checks, per sender (two at most), that tags come 1, 2, 3...
 * with the sizes of the script and intact contents. */
#define SCRIPT_MAX 64
typedef struct sink {
    size_t sizes[SCRIPT_MAX]; /* per tag (1-based), shared by the senders */
    uint32_t n;
    px_ref from[2];
    uint32_t next[2];
    atomic_uint got, bad;
} sink;

static px_err sink_receive(px_ctx *ctx, px_msg *m) {
    sink *s = px_state(ctx);
    px_ref from = px_msg_sender(m);
    int k = px_ref_eq(from, s->from[0]) ? 0 : 1;
    uint32_t want = 1 + s->next[k] % s->n;
    size_t len = 0;
    const uint8_t *d = px_msg_data(m, &len);
    bool ok = px_msg_tag(m) == want && len == s->sizes[want];
    for (size_t i = 8; ok && i < len; i += 4093) { /* spot checks, and the last byte */
        ok = d[i] == (uint8_t)(want * 7 + 1);
    }
    ok = ok && (len <= 8 || d[len - 1] == (uint8_t)(want * 7 + 1));
    if (!ok) {
        atomic_fetch_add(&s->bad, 1);
    }
    s->next[k]++;
    atomic_fetch_add(&s->got, 1);
    return PX_OK;
}
static const px_behavior sink_b = {.name = "t.sink", .init = pxt_init_ptr_state,
                                   .receive = sink_receive};

/* A script sender: on "go" (u64 = rounds) sends the script that many times
 * to g_target, retrying a full link queue after a pause. */
static sink *g_script;
static px_err script_receive(px_ctx *ctx, px_msg *m) {
    uint64_t rounds = px_msg_get_u64(m);
    for (uint64_t r = 0; r < rounds; r++) {
        for (uint32_t i = 1; i <= g_script->n; i++) {
            px_msg *x = script_msg(i, g_script->sizes[i]);
            px_err e;
            for (int tries = 0; (e = px_send(ctx, g_target, &x)) == PX_EFULL && tries < 5000;
                 tries++) {
                nanosleep(&(struct timespec){0, 1000000}, NULL);
            }
            if (e != PX_OK) {
                px_msg_free(x);
                atomic_fetch_add(&g_send_errors, 1);
            }
        }
    }
    return PX_OK;
}
static const px_behavior script_b = {.name = "t.script", .receive = script_receive};


static int cmp_i64(const void *x, const void *y) {
    int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    return (a > b) - (a < b);
}
static int cmp_u32(const void *x, const void *y) {
    uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
    return (a > b) - (a < b);
}

/* The heartbeat's round trips while 64 MiB go through. On one shared
 * connection a ping would wait behind the payload: most round trips a large
 * part of the transfer time. On its own lane it waits only for a CPU. The
 * test checks that mechanism — three in four round trips sampled during the
 * transfer at most HB_LIMIT_US, or a quarter of the transfer time when a
 * loaded machine stretches both (the worst one is printed, not judged: on a
 * two-core machine running other tests beside this one a single ping can
 * wait ~100 ms for a CPU) — and `tools/bench/run.sh transport` measures the
 * figure itself (net.heartbeat_p99_ms_under_bulk, target <= 5 ms). */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define HB_LIMIT_US 60000 /* sanitizers slow the sealing several-fold */
#else
#define HB_LIMIT_US 20000
#endif

Test(transport_bulk, a_64_MiB_message_arrives_whole_while_heartbeats_keep_flowing,
     .timeout = 120) {
    dir_make();
    g_heartbeat_ms = 5;
    tnode a, b;
    link_pair(&a, &b);
    sink *s = calloc(1, sizeof *s);
    cr_assert_not_null(s);
    s->n = 2;
    s->sizes[1] = 64u << 20;
    s->sizes[2] = 8;
    g_target = pxt_spawn(b.sys, &sink_b, s, NULL);

    /* Heartbeats flow before: wait for a few round trips, then measure. */
    px_peer_info pi;
    PXT_AWAIT((px_transport_peer_info(a.t, "beta", false, &pi), pi.rtt_us > 0), 5000);
    px_transport_stats st0, st1;
    px_transport_stats_get(a.t, &st0);
    cr_assert_eq(px_transport_peer_info(a.t, "beta", true, &pi), PX_OK);

    px_msg *big = script_msg(1, s->sizes[1]), *small = script_msg(2, 8);
    px_ref from = PX_REF_NIL;
    s->from[0] = from;
    int64_t t0 = pxt_now_ns();
    cr_assert_eq(px_system_send(a.sys, g_target, &big), PX_OK);
    cr_assert_eq(px_system_send(a.sys, g_target, &small), PX_OK);
    /* Each new pong's round trip, as the test sees them (two pongs between
     * looks count once). */
    uint32_t rtts[512];
    size_t nrtt = 0;
    uint64_t seen = st0.pongs;
    int64_t end = pxt_now_ms() + 60000;
    while (atomic_load(&s->got) < 2) {
        cr_assert_lt(pxt_now_ms(), end, "the payload arrives within 60 s");
        px_transport_stats_get(a.t, &st1);
        if (st1.pongs != seen && nrtt < sizeof rtts / sizeof rtts[0]) {
            seen = st1.pongs;
            cr_assert_eq(px_transport_peer_info(a.t, "beta", false, &pi), PX_OK);
            rtts[nrtt++] = pi.rtt_us;
        }
        nanosleep(&(struct timespec){0, 200000}, NULL);
    }
    int64_t transfer_us = (pxt_now_ns() - t0) / 1000;
    int64_t limit_us = transfer_us / 4 > HB_LIMIT_US ? transfer_us / 4 : HB_LIMIT_US;
    cr_assert_eq(atomic_load(&s->bad), 0, "the payload arrives intact, and before the small one");

    px_transport_stats_get(a.t, &st1);
    cr_assert_eq(px_transport_peer_info(a.t, "beta", false, &pi), PX_OK);
    uint64_t pongs = st1.pongs - st0.pongs;
    cr_assert_geq(pongs, 3, "heartbeats went on during the transfer (%llu pongs)",
                  (unsigned long long)pongs);
    cr_assert_geq(nrtt, 3, "round trips sampled during the transfer: %zu", nrtt);
    qsort(rtts, nrtt, sizeof rtts[0], cmp_u32);
    uint32_t p75 = rtts[nrtt * 3 / 4];
    cr_assert_leq(p75, limit_us,
                  "heartbeat round trip under a 64 MiB transfer of %lld us: p75 %u us of %zu "
                  "samples (max %u us)",
                  (long long)transfer_us, p75, nrtt, pi.rtt_max_us);
    cr_assert_eq(st1.bulk_out - st0.bulk_out, 1);
    px_transport_stats_get(b.t, &st1);
    cr_assert_eq(st1.bulk_in, 1);
    cr_assert_eq(st1.bad_frames, 0);
    fprintf(stderr, "64 MiB in %lld us: %llu pongs, heartbeat rtt p75 %u us, max %u us\n",
            (long long)transfer_us, (unsigned long long)pongs, p75, pi.rtt_max_us);

    g_heartbeat_ms = 0;
    node_free(&a);
    node_free(&b);
    free(s);
    dir_remove();
}

static void script_order(void);

Test(transport_bulk, large_and_small_messages_keep_per_sender_order_across_lanes,
     .timeout = 120) {
    script_order();
}

/* Frames larger than a read (64 KiB), bulk payloads and held envelopes
 * with the workers of both nodes spinning and polling (whether a given
 * read is theirs or nng's depends on timing: bursts, then idle). */
Test(transport_poll, in_latency_mode_large_and_small_messages_keep_their_order,
     .timeout = 120) {
    g_spin_us = 200;
    g_poll_rx = true;
    script_order();
}

static void script_order(void) {
    dir_make();
    tnode a, b;
    link_pair(&a, &b);
    sink *s = calloc(1, sizeof *s);
    cr_assert_not_null(s);
    size_t script[] = {8, 200000, 8, 8, 70000, 3u << 20, 8, 65537, 8, 8, 1500000, 8};
    s->n = sizeof script / sizeof script[0];
    for (uint32_t i = 0; i < s->n; i++) {
        s->sizes[i + 1] = script[i];
    }
    g_script = s;
    g_target = pxt_spawn(b.sys, &sink_b, s, NULL);
    px_ref s1 = PX_REF_NIL, s2 = PX_REF_NIL;
    cr_assert_eq(px_system_spawn(a.sys, &script_b, NULL, NULL, &s1), PX_OK);
    cr_assert_eq(px_system_spawn(a.sys, &script_b, NULL, NULL, &s2), PX_OK);
    s->from[0] = s1;
    s->from[1] = s2;
    enum { ROUNDS = 6 };
    pxt_send_u64(a.sys, s1, 0, ROUNDS);
    pxt_send_u64(a.sys, s2, 0, ROUNDS);
    PXT_AWAIT(atomic_load(&s->got) == 2 * ROUNDS * s->n, 60000);
    cr_assert_eq(atomic_load(&g_send_errors), 0);
    cr_assert_eq(atomic_load(&s->bad), 0, "every message in its sender's order, intact");
    px_transport_stats st;
    px_transport_stats_get(b.t, &st);
    cr_assert_eq(st.bulk_in, 2 * ROUNDS * 5, "five of the script's payloads go on BULK");
    cr_assert_eq(st.bad_frames, 0);
    cr_assert_eq(st.undeliverable, 0);

    node_free(&a);
    node_free(&b);
    free(s);
    dir_remove();
}

Test(transport_bulk, a_payload_over_max_msg_fails_that_send_and_the_link_stays_up,
     .timeout = 60) {
    dir_make();
    tnode a, b;
    tnode *pa[] = {&b}, *pb[] = {&a};
    node_init(&a, "alpha");
    node_init(&b, "beta");
    g_max_msg = 4u << 20;
    node_start(&a, pa, 1, SECRET);
    g_max_msg = 1u << 20; /* beta takes less than alpha would send */
    node_start(&b, pb, 1, SECRET);
    g_max_msg = 0;
    PXT_AWAIT(link_state(&a, "beta") == PX_LINK_UP && link_state(&b, "alpha") == PX_LINK_UP,
              10000);
    sink *s = calloc(1, sizeof *s);
    cr_assert_not_null(s);
    s->n = 1;
    s->sizes[1] = 1u << 20;
    g_target = pxt_spawn(b.sys, &sink_b, s, NULL);

    px_msg *m = script_msg(1, (4u << 20) + 1);
    cr_assert_eq(px_system_send(a.sys, g_target, &m), PX_EMSGSIZE, "over alpha's own max_msg");
    px_msg_free(m);
    m = script_msg(1, 2u << 20);
    cr_assert_eq(px_system_send(a.sys, g_target, &m), PX_EMSGSIZE, "over beta's max_msg");
    px_msg_free(m);
    cr_assert_eq(link_state(&a, "beta"), PX_LINK_UP);
    m = script_msg(1, 1u << 20); /* exactly the limit goes */
    cr_assert_eq(px_system_send(a.sys, g_target, &m), PX_OK);
    PXT_AWAIT(atomic_load(&s->got) == 1, 20000);
    cr_assert_eq(atomic_load(&s->bad), 0);
    cr_assert_eq(link_state(&a, "beta"), PX_LINK_UP);
    px_transport_stats st;
    px_transport_stats_get(a.t, &st);
    cr_assert_eq(st.handshakes, 6, "one handshake per lane and direction, no reconnection");

    /* A full bulk backlog does not refuse a small message: alpha's queue
     * bound is exactly one max_msg, taken by a payload on BULK. */
    px_transport_stop(a.t);
    g_max_msg = g_queue_bytes = 4u << 20;
    node_start(&a, pa, 1, SECRET);
    g_max_msg = g_queue_bytes = 0;
    PXT_AWAIT(link_state(&a, "beta") == PX_LINK_UP, 10000);
    s->sizes[1] = 1u << 20;
    for (int i = 0; i < 4; i++) { /* 4 MiB in four bulk payloads */
        m = script_msg(1, 1u << 20);
        cr_assert_eq(px_system_send(a.sys, g_target, &m), PX_OK, "bulk %d", i);
    }
    px_msg *small = pxt_u64(9, 9);
    cr_assert_eq(px_system_send(a.sys, g_target, &small), PX_OK,
                 "a small send is not refused behind the bulk bytes");
    px_msg *more = script_msg(1, 1u << 20);
    px_err e = px_system_send(a.sys, g_target, &more);
    cr_assert(e == PX_OK || e == PX_EFULL, "%s", px_errname(e)); /* bulk still bounded */
    px_msg_free(e == PX_OK ? NULL : more);

    node_free(&a);
    node_free(&b);
    free(s);
    dir_remove();
}

/* --- BULK's window: credit, growth, and yielding to a queue ------------- */

/* Sends n payloads of `len` bytes from a to the sink on b, checking each
 * sample of alpha's view of the link on the way; returns the largest
 * window seen. */
static uint64_t bulk_run(tnode *a, sink *s, uint32_t n, size_t len) {
    s->n = 1;
    s->sizes[1] = len;
    uint32_t got0 = atomic_load(&s->got);
    for (uint32_t i = 0; i < n; i++) {
        px_msg *m = script_msg(1, len);
        cr_assert_eq(px_system_send(a->sys, g_target, &m), PX_OK, "bulk %u", i);
    }
    uint64_t wmax = 0;
    int64_t end = pxt_now_ms() + 60000;
    while (atomic_load(&s->got) < got0 + n) {
        cr_assert_lt(pxt_now_ms(), end, "the payloads arrive (%u of %u)",
                     atomic_load(&s->got) - got0, n);
        px_peer_info pi;
        cr_assert_eq(px_transport_peer_info(a->t, "beta", false, &pi), PX_OK);
        /* A chunk goes only while the window is open, and is at most a
         * quarter of it (16 KiB at least); a cut since then halves it. */
        uint64_t chunk = pi.bulk_window / 4 > (16u << 10) ? pi.bulk_window / 4 : (16u << 10);
        cr_assert_leq(pi.bulk_inflight, 2 * (pi.bulk_window + chunk),
                      "bulk bytes in flight %llu, window %llu",
                      (unsigned long long)pi.bulk_inflight,
                      (unsigned long long)pi.bulk_window);
        wmax = pi.bulk_window > wmax ? pi.bulk_window : wmax;
        nanosleep(&(struct timespec){0, 200000}, NULL);
    }
    cr_assert_eq(atomic_load(&s->bad), 0, "every payload intact and in order");
    return wmax;
}

Test(transport_bulk, bulk_waits_for_credit_and_its_window_grows_on_a_quiet_path,
     .timeout = 120) {
    dir_make();
    /* Quiet: no queue on loopback, but a machine running other tests beside
     * this one stretches round trips by tens of ms waiting for a CPU, which
     * would cut the window (the throttled test below covers cuts). */
    g_bulk_delay_ms = 1000;
    tnode a, b;
    link_pair(&a, &b);
    sink *s = calloc(1, sizeof *s);
    cr_assert_not_null(s);
    g_target = pxt_spawn(b.sys, &sink_b, s, NULL);
    px_peer_info pi;
    cr_assert_eq(px_transport_peer_info(a.t, "beta", false, &pi), PX_OK);
    cr_assert_eq(pi.bulk_window, 32u << 10, "a new link's window: 32 KiB");
    cr_assert_eq(pi.bulk_inflight, 0);
    px_transport_stats st0, st1;
    px_transport_stats_get(a.t, &st0);

    uint64_t wmax = bulk_run(&a, s, 32, 1u << 20); /* 32 MiB */

    px_transport_stats_get(a.t, &st1);
    cr_assert_gt(st1.bulk_waits - st0.bulk_waits, 0,
                 "a 1 MiB payload does not fit a 32 KiB window: BULK waited for credit");
    cr_assert_eq(st1.bulk_out - st0.bulk_out, 32);
    /* Every chunk byte is credited once the sink has them all. */
    PXT_AWAIT((px_transport_peer_info(a.t, "beta", false, &pi), pi.bulk_inflight == 0), 5000);
    /* It grows while it limits the sender; sealing on a loaded machine can
     * limit it first, so eight times the start, not a path's worth. */
    cr_assert_geq(wmax, 8 * (32u << 10), "on a quiet path the window grew (largest %llu bytes)",
                 (unsigned long long)wmax);
    cr_assert_gt(pi.rtt_base_us, 0, "the quiet round trip is known");
    fprintf(stderr, "bulk window: largest %llu bytes, %llu waits, %llu cuts, quiet rtt %u us\n",
            (unsigned long long)wmax, (unsigned long long)(st1.bulk_waits - st0.bulk_waits),
            (unsigned long long)(st1.bulk_cuts - st0.bulk_cuts), pi.rtt_base_us);
    px_transport_stats_get(b.t, &st1);
    cr_assert_eq(st1.bad_frames, 0);

    pair_done(&a, &b, s);
}

/* The nice value of this process's thread named `name`, or INT32_MIN if
 * there is none (/proc/self/task/<tid>/comm and stat). */
static int thread_nice(const char *name, int *count) {
    int nice = INT32_MIN;
    *count = 0;
    DIR *d = opendir("/proc/self/task");
    cr_assert_not_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') {
            continue;
        }
        char path[320], comm[64] = "", stat[1024] = "";
        snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (f == NULL) {
            continue; /* it exited */
        }
        bool named = fgets(comm, sizeof(comm), f) != NULL && strncmp(comm, name, strlen(name)) == 0 &&
                     comm[strlen(name)] == '\n';
        fclose(f);
        snprintf(path, sizeof(path), "/proc/self/task/%s/stat", e->d_name);
        if (!named || (f = fopen(path, "r")) == NULL) {
            continue;
        }
        if (fgets(stat, sizeof(stat), f) != NULL) {
            /* fields after the ")" closing comm: state is field 3, nice 19 */
            const char *at = strrchr(stat, ')');
            int field = 2, v = 0;
            for (const char *q = at; q != NULL && *q != '\0'; q++) {
                if (*q == ' ' && ++field == 19) {
                    v = atoi(q + 1);
                    break;
                }
            }
            nice = v;
            (*count)++;
        }
        fclose(f);
    }
    closedir(d);
    return nice;
}

/* Sealing and opening chunks run on the transport's BULK thread, below the
 * task threads that carry heartbeats (nice 5): the mechanism behind
 * net.heartbeat_p99_ms_under_bulk (tools/bench/run.sh transport). */
Test(transport_bulk, bulk_work_runs_on_its_own_thread_below_the_task_threads, .timeout = 60) {
    dir_make();
    tnode a, b;
    link_pair(&a, &b);
    int n = 0;
    int nice = thread_nice("px:bulk", &n);
    cr_assert_eq(n, 2, "one BULK thread per transport (%d found)", n);
    cr_assert_eq(nice, 5, "the BULK thread's nice: %d", nice);
    int tn = 0;
    cr_assert_eq(thread_nice("nng:task", &tn), 0, "nng's task threads keep nice 0");
    sink *s = calloc(1, sizeof *s);
    cr_assert_not_null(s);
    g_target = pxt_spawn(b.sys, &sink_b, s, NULL);
    (void)bulk_run(&a, s, 4, 1u << 20); /* both ends' BULK work goes through it */
    node_free(&a);
    cr_assert_eq((thread_nice("px:bulk", &n), n), 1, "stopping a transport joins its thread");
    node_free(&b);
    free(s);
    dir_remove();
}

Test(transport_bulk, with_bulk_delay_ms_0_bulk_has_no_window, .timeout = 60) {
    dir_make();
    tnode a, b;
    tnode *pa[] = {&b}, *pb[] = {&a};
    node_init(&a, "alpha");
    node_init(&b, "beta");
    g_bulk_delay_ms = UINT32_MAX; /* alpha asks for no credit */
    node_start(&a, pa, 1, SECRET);
    g_bulk_delay_ms = 0;
    node_start(&b, pb, 1, SECRET);
    link_await(&a, &b);
    sink *s = calloc(1, sizeof *s);
    cr_assert_not_null(s);
    g_target = pxt_spawn(b.sys, &sink_b, s, NULL);
    uint64_t wmax = bulk_run(&a, s, 8, 1u << 20);
    cr_assert_eq(wmax, 0, "not paced: no window");
    px_transport_stats st;
    px_transport_stats_get(a.t, &st);
    cr_assert_eq(st.bulk_waits, 0);
    /* beta still paces what it sends alpha: it asked, alpha promised. */
    px_peer_info pi;
    cr_assert_eq(px_transport_peer_info(b.t, "alpha", false, &pi), PX_OK);
    cr_assert_eq(pi.bulk_window, 32u << 10);

    pair_done(&a, &b, s);
}

/* A slow path with a queue: this test's own network namespace, whose
 * loopback goes through a token bucket (tc tbf, 8 Mbit/s, a queue of up
 * to 400 ms). alpha sends 3 MiB in 1 MiB payloads to beta over tcp while
 * asking beta's echo every 20 ms; both directions share the one queue.
 * Without a window the asks wait behind what BULK keeps queued (p90
 * 176-226 ms here; on a path whose queue overflows, some are dropped and
 * wait for a retransmission). With it, BULK halves its window whenever the
 * CONTROL round trip rises 25 ms over the quiet one (p90 60-70 ms: twice
 * the target, once each way). Needs root (a network namespace); skipped
 * otherwise. PXT_BULK_DELAY_MS=0 runs it without a window, to see it fail. */
static int sh(const char *cmd) {
    int rv = system(cmd);
    return WIFEXITED(rv) ? WEXITSTATUS(rv) : -1;
}


Test(transport_bulk, on_a_throttled_path_bulk_yields_and_small_asks_stay_quick,
     .timeout = 120) {
    if (geteuid() != 0) {
        cr_skip_test("needs root for a network namespace");
    }
    if (unshare(CLONE_NEWNET) != 0) {
        cr_skip_test("unshare(CLONE_NEWNET): %s", strerror(errno));
    }
    cr_assert_eq(sh("ip link set lo mtu 1500 up"), 0);
    cr_assert_eq(sh("tc qdisc add dev lo root tbf rate 8mbit burst 16kb latency 400ms"), 0);
    dir_make();
    const char *env = getenv("PXT_BULK_DELAY_MS");
    g_bulk_delay_ms = env != NULL ? (atoi(env) == 0 ? UINT32_MAX : (uint32_t)atoi(env)) : 0;
    g_heartbeat_ms = 250; /* the default */
    tnode a, b;
    tnode *pa[] = {&b}, *pb[] = {&a};
    node_init(&a, "alpha");
    node_init(&b, "beta");
    snprintf(a.addr, sizeof a.addr, "tcp://127.0.0.1:7101");
    snprintf(b.addr, sizeof b.addr, "tcp://127.0.0.1:7102");
    node_start(&a, pa, 1, SECRET);
    node_start(&b, pb, 1, SECRET);
    g_bulk_delay_ms = 0;
    g_heartbeat_ms = 0;
    link_await(&a, &b);
    px_ref echo = PX_REF_NIL;
    cr_assert_eq(px_system_spawn(b.sys, pxt_echo_behavior(), NULL, NULL, &echo), PX_OK);
    /* The quiet round trip: a few pings before the bulk starts. */
    px_peer_info pi;
    PXT_AWAIT((px_transport_peer_info(a.t, "beta", false, &pi), pi.rtt_base_us > 0), 5000);
    sink *s = calloc(1, sizeof *s);
    cr_assert_not_null(s);
    s->n = 1;
    s->sizes[1] = 1u << 20;
    g_target = pxt_spawn(b.sys, &sink_b, s, NULL);
    px_transport_stats st0, st1;
    px_transport_stats_get(a.t, &st0);
    for (int i = 0; i < 3; i++) {
        px_msg *m = script_msg(1, 1u << 20);
        cr_assert_eq(px_system_send(a.sys, g_target, &m), PX_OK);
    }
    enum { MAX_ASKS = 4000 };
    int64_t *lat = calloc(MAX_ASKS, sizeof *lat);
    cr_assert_not_null(lat);
    size_t n = 0;
    int64_t end = pxt_now_ms() + 60000;
    while (atomic_load(&s->got) < 3 && n < MAX_ASKS) {
        cr_assert_lt(pxt_now_ms(), end, "3 MiB get through 8 Mbit/s");
        px_msg *q = pxt_u64(1, n), *r = NULL;
        int64_t t0 = pxt_now_ns();
        px_err e = px_system_ask(a.sys, echo, &q, 10000, &r);
        cr_assert_eq(e, PX_OK, "ask %zu under bulk: %s", n, px_errname(e));
        lat[n++] = (pxt_now_ns() - t0) / 1000;
        px_msg_free(r);
        nanosleep(&(struct timespec){0, 20000000}, NULL);
    }
    cr_assert_eq(atomic_load(&s->bad), 0);
    px_transport_stats_get(a.t, &st1);
    qsort(lat, n, sizeof *lat, cmp_i64);
    int64_t p50 = lat[n / 2], p90 = lat[n * 9 / 10], max = lat[n - 1];
    fprintf(stderr,
            "throttled: %zu asks under 3 MiB of bulk: p50 %lld us, p90 %lld us, max %lld us; "
            "%llu window cuts, quiet rtt %u us\n",
            n, (long long)p50, (long long)p90, (long long)max,
            (unsigned long long)(st1.bulk_cuts - st0.bulk_cuts), pi.rtt_base_us);
    cr_assert_geq(n, 10, "the bulk took a while: %zu asks", n);
    cr_assert_gt(st1.bulk_cuts - st0.bulk_cuts, 0, "the queue cut BULK's window");
    cr_assert_lt(p90, 120000, "asks wait behind a short queue, not a full one (p90 %lld us)",
                 (long long)p90);
    cr_assert_lt(max, 1000000, "no ask waits for a retransmission (max %lld us)",
                 (long long)max);
    free(lat);
    pair_done(&a, &b, s);
}

/* --- a remote bounded mailbox's policy, as its senders see it -------------- */

/* On beta: an actor with a small bounded mailbox whose first receive waits
 * for the gate (bounded), so the mailbox fills. It records the tags it got. */
typedef struct gated {
    atomic_bool gate;
    atomic_uint entered; /* receive calls begun */
    atomic_uint got;
    uint32_t tags[64];
} gated;

static px_err gated_receive(px_ctx *ctx, px_msg *m) {
    gated *g = px_state(ctx);
    atomic_fetch_add(&g->entered, 1);
    for (int i = 0; i < 10000 && !atomic_load(&g->gate); i++) {
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    unsigned n = atomic_load(&g->got);
    if (n < 64) {
        g->tags[n] = px_msg_tag(m);
    }
    atomic_store(&g->got, n + 1);
    return PX_OK;
}
static const px_behavior gated_b = {.name = "t.gated", .init = pxt_init_ptr_state,
                                    .receive = gated_receive};

/* On alpha: on "go" sends BURST messages (tags 1..BURST) to g_target; counts
 * the PX_MSG_UNDELIVERED notices that come back, by code. */
#define BURST 20
typedef struct burst {
    atomic_uint sent, send_errors, notices, efull, etimedout, other, wrong_to;
} burst;

static px_err burst_receive(px_ctx *ctx, px_msg *m) {
    burst *b = px_state(ctx);
    px_ref to;
    px_err code;
    if (px_msg_undelivered(m, &to, &code) == PX_OK) {
        atomic_fetch_add(code == PX_EFULL ? &b->efull
                         : code == PX_ETIMEDOUT ? &b->etimedout : &b->other, 1);
        if (!px_ref_eq(to, g_target)) {
            atomic_fetch_add(&b->wrong_to, 1);
        }
        atomic_fetch_add(&b->notices, 1);
        return PX_OK;
    }
    for (uint32_t i = 1; i <= BURST; i++) {
        px_msg *x = NULL;
        if (px_msg_u64(&x, i, i) != PX_OK || px_send(ctx, g_target, &x) != PX_OK) {
            px_msg_free(x);
            atomic_fetch_add(&b->send_errors, 1);
        } else {
            atomic_fetch_add(&b->sent, 1);
        }
    }
    return PX_OK;
}
static const px_behavior burst_b = {.name = "t.burst", .init = pxt_init_ptr_state,
                                    .receive = burst_receive};

/* Sends a burst from alpha to a gated actor on beta with `policy`; opens
 * the gate after gate_ms (0: once every message is accounted for). */
static void policy_run(tnode *a, tnode *b, px_overflow policy, uint32_t block_ms,
                       int gate_ms, gated *g, burst *bu) {
    px_mailbox_opts mo = {.capacity = 4, .overflow = policy, .block_timeout_ms = block_ms};
    px_spawn_opts so = {.mailbox = &mo};
    g_target = pxt_spawn(b->sys, &gated_b, g, &so);
    px_ref s = pxt_spawn(a->sys, &burst_b, bu, NULL);
    pxt_send_u64(a->sys, s, 0, 1);
    if (gate_ms > 0) {
        int64_t t0 = pxt_now_ms();
        PXT_AWAIT(pxt_now_ms() - t0 >= gate_ms, gate_ms + 1000); /* a fixed hold, by design */
    } else {
        PXT_AWAIT(atomic_load(&bu->notices) + atomic_load(&g->got) + 5 >= BURST, 10000);
    }
    atomic_store(&g->gate, true);
    PXT_AWAIT(atomic_load(&bu->notices) + atomic_load(&g->got) == BURST, 10000);
    cr_assert_eq(atomic_load(&bu->sent), BURST, "every send was accepted by the link");
    cr_assert_eq(atomic_load(&bu->wrong_to), 0, "notices name the target");
}

static bool tags_increase(const gated *g) {
    for (unsigned i = 1; i < atomic_load(&g->got) && i < 64; i++) {
        if (g->tags[i] <= g->tags[i - 1]) {
            return false;
        }
    }
    return true;
}

Test(transport_policy, error_drop_newest_and_drop_oldest_tell_the_remote_sender,
     .timeout = 90) {
    dir_make();
    tnode a, b;
    link_pair(&a, &b);
    px_overflow policies[] = {PX_OVERFLOW_ERROR, PX_OVERFLOW_DROP_NEWEST,
                              PX_OVERFLOW_DROP_OLDEST};
    for (size_t i = 0; i < 3; i++) {
        gated *g = calloc(1, sizeof *g);
        burst *bu = calloc(1, sizeof *bu);
        cr_assert(g && bu);
        policy_run(&a, &b, policies[i], 0, 0, g, bu);
        unsigned got = atomic_load(&g->got), n = atomic_load(&bu->notices);
        cr_assert_geq(n, BURST - 5, "policy %zu: %u notices, %u delivered", i, n, got);
        cr_assert_eq(atomic_load(&bu->efull), n, "policy %zu: every notice says PX_EFULL", i);
        cr_assert(tags_increase(g), "policy %zu: what arrives, arrives in order", i);
        if (policies[i] == PX_OVERFLOW_DROP_OLDEST) {
            cr_assert_eq(g->tags[got - 1], BURST, "DropOldest keeps the newest");
        } else {
            cr_assert_eq(g->tags[0], 1, "Error / DropNewest keep the first one");
        }
        cr_assert_leq(got, 5, "policy %zu: one in receive, four in the mailbox", i);
        free(g);
        free(bu);
    }
    px_transport_stats st;
    px_transport_stats_get(b.t, &st);
    cr_assert_geq(st.notices, 3 * (BURST - 5));
    cr_assert_eq(st.notices_lost, 0);

    /* An ask that a full Error-policy mailbox refuses ends with its code at
     * once, not with a timeout. */
    gated *g = calloc(1, sizeof *g);
    px_mailbox_opts mo = {.capacity = 1, .overflow = PX_OVERFLOW_ERROR};
    px_spawn_opts so = {.mailbox = &mo};
    g_target = pxt_spawn(b.sys, &gated_b, g, &so);
    /* One message in receive (gated), then one in the mailbox: full. */
    pxt_send_u64(a.sys, g_target, 1, 1);
    PXT_AWAIT(atomic_load(&g->entered) == 1, 10000);
    px_transport_stats_get(b.t, &st);
    uint64_t in0 = st.msgs_in;
    pxt_send_u64(a.sys, g_target, 1, 2);
    PXT_AWAIT((px_transport_stats_get(b.t, &st), st.msgs_in) > in0, 10000);
    px_msg *q = pxt_u64(2, 2), *r = NULL;
    int64_t t0 = pxt_now_ms();
    px_err e = px_system_ask(a.sys, g_target, &q, 20000, &r);
    px_msg_free(q);
    px_msg_free(r);
    cr_assert_eq(e, PX_EFULL, "%s", px_errname(e));
    cr_assert_lt(pxt_now_ms() - t0, 10000, "the refusal ends the ask, not its timeout");
    atomic_store(&g->gate, true);

    g_bulk_delay_ms = 0;
    node_free(&a);
    node_free(&b);
    free(g);
    dir_remove();
}

Test(transport_policy, block_holds_remote_messages_in_order_then_times_them_out,
     .timeout = 90) {
    dir_make();
    tnode a, b;
    link_pair(&a, &b);

    /* The gate opens well within block_timeout_ms: everything arrives, in
     * order, and no notice comes back. */
    gated *g = calloc(1, sizeof *g);
    burst *bu = calloc(1, sizeof *bu);
    cr_assert(g && bu);
    policy_run(&a, &b, PX_OVERFLOW_BLOCK, 5000, 200, g, bu);
    cr_assert_eq(atomic_load(&g->got), BURST);
    cr_assert_eq(atomic_load(&bu->notices), 0);
    cr_assert(tags_increase(g));
    px_transport_stats st;
    px_transport_stats_get(b.t, &st);
    cr_assert_gt(st.held, 0, "later messages waited behind the parked one");
    free(g);
    free(bu);

    /* The gate stays shut past block_timeout_ms: the waiting message fails
     * with PX_ETIMEDOUT (one per timeout), the rest still arrive in order. */
    g = calloc(1, sizeof *g);
    bu = calloc(1, sizeof *bu);
    cr_assert(g && bu);
    policy_run(&a, &b, PX_OVERFLOW_BLOCK, 150, 700, g, bu);
    unsigned to = atomic_load(&bu->etimedout);
    cr_assert_geq(to, 1, "a message parked past block_timeout_ms is refused");
    cr_assert_eq(atomic_load(&bu->notices), to, "and only with PX_ETIMEDOUT");
    cr_assert_eq(atomic_load(&g->got) + to, BURST);
    cr_assert(tags_increase(g));
    free(g);
    free(bu);

    node_free(&a);
    node_free(&b);
    dir_remove();
}

/* --- peers added and removed at run time (membership drives these) ----- */

static px_peer peer_of(tnode *n) {
    px_peer p = {.name = n->name, .address = n->addr};
    memcpy(p.pk, n->id.pk, PX_PUBKEY_BYTES);
    return p;
}

/* What on_link reported on alpha about beta, in order. */
#define MAX_EVS 64
static struct {
    pthread_mutex_t mu;
    px_link_state st[MAX_EVS];
    uint32_t inc[MAX_EVS];
    atomic_int n;
} g_evs = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void record_link(void *arg, const char *name, px_link_state st, uint32_t inc) {
    tnode *n = arg;
    if (strcmp(n->name, "alpha") != 0 || strcmp(name, "beta") != 0) {
        return;
    }
    pthread_mutex_lock(&g_evs.mu);
    int i = atomic_load(&g_evs.n);
    if (i < MAX_EVS) {
        g_evs.st[i] = st;
        g_evs.inc[i] = inc;
        atomic_store(&g_evs.n, i + 1);
    }
    pthread_mutex_unlock(&g_evs.mu);
}

/* The last state on_link reported (or -1). */
static int last_reported(uint32_t *inc) {
    pthread_mutex_lock(&g_evs.mu);
    int n = atomic_load(&g_evs.n);
    int st = n > 0 ? (int)g_evs.st[n - 1] : -1;
    if (inc != NULL) {
        *inc = n > 0 ? g_evs.inc[n - 1] : 0;
    }
    pthread_mutex_unlock(&g_evs.mu);
    return st;
}

static px_err send_one(tnode *from, px_ref to) {
    px_msg *x = pxt_u64(1, 1);
    px_err e = px_system_send(from->sys, to, &x);
    px_msg_free(x);
    return e;
}

Test(transport_peers, peers_added_at_run_time_link_and_removed_ones_are_gone_until_added_again,
     .timeout = 60) {
    dir_make();
    tnode a, b;
    node_init(&a, "alpha");
    node_init(&b, "beta");
    g_on_link = record_link;
    node_start(&a, NULL, 0, SECRET);
    node_start(&b, NULL, 0, SECRET);
    cr_assert_eq(px_transport_peer_state(a.t, "beta", NULL, NULL), PX_ENOENT);
    px_ref echo = PX_REF_NIL;
    cr_assert_eq(px_system_spawn(b.sys, pxt_echo_behavior(), NULL, NULL, &echo), PX_OK);
    cr_assert_eq(send_one(&a, echo), PX_EUNREACHABLE, "an unknown node is unreachable");

    /* Both learn of each other (in either order): the links come up. */
    px_peer pb = peer_of(&b), pa = peer_of(&a);
    cr_assert_eq(px_transport_peer_add(a.t, &pb), PX_OK);
    cr_assert_eq(px_transport_peer_add(b.t, &pa), PX_OK);
    PXT_AWAIT(link_state(&a, "beta") == PX_LINK_UP && link_state(&b, "alpha") == PX_LINK_UP,
              10000);
    uint32_t inc = 0;
    PXT_AWAIT(last_reported(&inc) == PX_LINK_UP, 5000);
    cr_assert_eq(inc, px_system_root(b.sys).node_inc, "on_link tells beta's incarnation");
    px_msg *q = pxt_u64(1, 21), *r = NULL;
    cr_assert_eq(px_system_ask(a.sys, echo, &q, 5000, &r), PX_OK);
    cr_assert_eq(px_msg_get_u64(r), 42);
    px_msg_free(r);
    /* Adding it again with the same address changes nothing. */
    cr_assert_eq(px_transport_peer_add(a.t, &pb), PX_OK);
    cr_assert_eq(link_state(&a, "beta"), PX_LINK_UP);

    /* alpha drops beta: gone at once, sends fail fast, and beta cannot
     * link back (alpha refuses it as unknown) — so beta sees alpha
     * unreachable. */
    cr_assert_eq(px_transport_peer_remove(a.t, "beta"), PX_OK);
    cr_assert_eq(link_state(&a, "beta"), PX_LINK_GONE);
    cr_assert_eq(send_one(&a, echo), PX_EUNREACHABLE);
    PXT_AWAIT(last_reported(NULL) == PX_LINK_GONE, 5000);
    PXT_AWAIT(link_state(&b, "alpha") == PX_LINK_UNREACHABLE, 5000);
    px_transport_stats st;
    PXT_AWAIT((px_transport_stats_get(a.t, &st), st.refused > 0), 5000);
    cr_assert_eq(link_state(&a, "beta"), PX_LINK_GONE, "a removed peer is not redialled");
    cr_assert_eq(px_transport_peer_remove(a.t, "beta"), PX_OK, "removing twice is fine");
    cr_assert_eq(px_transport_peer_remove(a.t, "nobody"), PX_ENOENT);

    /* Added back: it links again and messages flow. */
    cr_assert_eq(px_transport_peer_add(a.t, &pb), PX_OK);
    PXT_AWAIT(link_state(&a, "beta") == PX_LINK_UP && link_state(&b, "alpha") == PX_LINK_UP,
              10000);
    PXT_AWAIT(last_reported(NULL) == PX_LINK_UP, 5000);
    q = pxt_u64(1, 5);
    cr_assert_eq(px_system_ask(a.sys, echo, &q, 5000, &r), PX_OK);
    cr_assert_eq(px_msg_get_u64(r), 10);
    px_msg_free(r);

    node_free(&a);
    node_free(&b);
    g_on_link = NULL;
    dir_remove();
}

Test(transport_peers, a_peer_that_moves_or_changes_its_key_is_followed, .timeout = 60) {
    dir_make();
    tnode a, b;
    node_init(&a, "alpha");
    node_init(&b, "beta");
    node_start(&a, NULL, 0, SECRET);
    node_start(&b, NULL, 0, SECRET);
    px_peer pb = peer_of(&b), pa = peer_of(&a);
    cr_assert_eq(px_transport_peer_add(a.t, &pb), PX_OK);
    cr_assert_eq(px_transport_peer_add(b.t, &pa), PX_OK);
    PXT_AWAIT(link_state(&a, "beta") == PX_LINK_UP, 10000);

    /* beta restarts its transport at another address: alpha is told. */
    px_transport_stop(b.t);
    snprintf(b.addr, sizeof b.addr, "ipc://%s/beta-moved.sock", tdir);
    node_start(&b, NULL, 0, SECRET);
    cr_assert_eq(px_transport_peer_add(b.t, &pa), PX_OK);
    pb = peer_of(&b);
    cr_assert_eq(px_transport_peer_add(a.t, &pb), PX_OK);
    PXT_AWAIT(link_state(&a, "beta") == PX_LINK_UP && link_state(&b, "alpha") == PX_LINK_UP,
              10000);
    px_ref echo = PX_REF_NIL;
    cr_assert_eq(px_system_spawn(b.sys, pxt_echo_behavior(), NULL, NULL, &echo), PX_OK);
    px_msg *q = pxt_u64(1, 4), *r = NULL;
    cr_assert_eq(px_system_ask(a.sys, echo, &q, 5000, &r), PX_OK);
    cr_assert_eq(px_msg_get_u64(r), 8);
    px_msg_free(r);

    /* beta comes back with a new identity key under the same name: the
     * old peer is dropped and the new key is the one that links. */
    px_transport_stop(b.t);
    char kp[128], err[256];
    snprintf(kp, sizeof kp, "%s/beta-new.key", tdir);
    cr_assert_eq(px_identity_load(kp, true, &b.id, err, sizeof err), PX_OK, "%s", err);
    node_start(&b, NULL, 0, SECRET);
    cr_assert_eq(px_transport_peer_add(b.t, &pa), PX_OK);
    pb = peer_of(&b);
    cr_assert_eq(px_transport_peer_add(a.t, &pb), PX_OK);
    PXT_AWAIT(link_state(&a, "beta") == PX_LINK_UP && link_state(&b, "alpha") == PX_LINK_UP,
              10000);
    q = pxt_u64(1, 6);
    cr_assert_eq(px_system_ask(a.sys, echo, &q, 5000, &r), PX_OK);
    cr_assert_eq(px_msg_get_u64(r), 12);
    px_msg_free(r);

    node_free(&a);
    node_free(&b);
    dir_remove();
}

Test(transport_peers, bad_peers_are_refused_with_a_clear_error, .timeout = 30) {
    dir_make();
    tnode a, b, c;
    node_init(&a, "alpha");
    node_init(&b, "beta");
    node_init(&c, "gamma");
    g_max_peers = 1;
    node_start(&a, NULL, 0, SECRET);
    g_max_peers = 0;
    px_peer pb = peer_of(&b), pc = peer_of(&c), pa = peer_of(&a);
    cr_assert_eq(px_transport_peer_add(a.t, &pa), PX_EINVAL, "its own name");
    px_peer bad = pb;
    bad.address = "";
    cr_assert_eq(px_transport_peer_add(a.t, &bad), PX_EINVAL, "no address");
    bad.address = "carrier-pigeon://nowhere";
    cr_assert_eq(px_transport_peer_add(a.t, &bad), PX_EINVAL, "an address nng cannot dial");
    bad = pb;
    bad.name = NULL;
    cr_assert_eq(px_transport_peer_add(a.t, &bad), PX_EINVAL, "no name");
    cr_assert_eq(px_transport_peer_add(a.t, NULL), PX_EINVAL);
    cr_assert_eq(px_transport_peer_add(a.t, &pb), PX_OK);
    bad = pc;
    memcpy(bad.pk, b.id.pk, PX_PUBKEY_BYTES);
    cr_assert_eq(px_transport_peer_add(a.t, &bad), PX_EEXIST, "another peer's key");
    cr_assert_eq(px_transport_peer_add(a.t, &pc), PX_EFULL, "max_peers is 1");
    bad = pb;
    bad.address = "carrier-pigeon://nowhere";
    cr_assert_eq(px_transport_peer_add(a.t, &bad), PX_EINVAL, "a known peer, a bad new address");
    cr_assert_eq(px_transport_peer_state(a.t, "beta", NULL, NULL), PX_OK, "beta is still known");
    cr_assert_str_eq(px_link_state_name(PX_LINK_GONE), "gone");
    node_free(&a);
    px_system_free(b.sys);
    px_system_free(c.sys);
    dir_remove();
}
