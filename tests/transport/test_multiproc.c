/* Multi-process tests of the transport: every node is its own OS process
 * (pxt_node, started with fork/exec) on loopback tcp, driven over its
 * stdin/stdout; its log goes to a file in the test's temp dir. Covers
 * per-sender order and asks across processes, a peer killed with SIGKILL,
 * a frozen (SIGSTOPped) peer, a peer restarted as a new incarnation, a
 * wrong cluster secret, a tampered and a replayed frame (through a
 * framing-aware proxy), a rogue client that speaks protocol version 99,
 * and a full mesh of three nodes.
 *
 * Every child is stopped by pid and reaped in every path: the test's fini
 * kills what is left, children die with the test's thread
 * (PR_SET_PDEATHSIG) and exit when their stdin closes. All waits poll a
 * condition up to a deadline. A failed test keeps its temp dir (node logs)
 * and says where; PXT_KEEP=1 keeps it always. */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/logging.h>

#include <plexus/plexus.h>
#include <plexus/transport.h>

#include "plexus/plexus.pb-c.h"
#include "pxt_crit.h"
#include "pxt_util.h"

#ifndef PXT_NODE
#error "PXT_NODE (path of the pxt_node program) must be defined by the build"
#endif

/* Link timings for the nodes: quick heartbeats, a silence bound well above
 * what a loaded 2-core VM stalls for, quick redials. */
#define HEARTBEAT_MS 100
#define UNREACHABLE_MS 3000
#define RECONNECT_MAX_MS 300
#define CMD_MS 20000 /* bound for one command's answer */

typedef struct node {
    pxt_proc p;
    char name[16];
    int port;
    char addr[64];
    char id_path[256], log_path[256];
    const char *secret;
    char pk[PX_PUBKEY_B64_LEN];
    char sink[48], echo[48], mute[48]; /* refs as text, from the ready line */
    uint32_t inc;
    char peers[4][320];
    int npeers;
    int starts;
} node;

static char g_dir[64];
static char g_secret[128], g_secret2[128];
static node g_nodes[4];
static int g_nn;
static pxt_mitm g_mitm;
static bool g_passed;


/* ---- per-test set-up and tear-down ---- */

static void setup(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/pxt-mp-XXXXXX");
    cr_assert_not_null(mkdtemp(g_dir));
    snprintf(g_secret, sizeof g_secret, "%s/cluster.secret", g_dir);
    snprintf(g_secret2, sizeof g_secret2, "%s/other.secret", g_dir);
    cr_assert_eq(pxt_file_write(g_secret, "correct horse battery staple, many processes\n", 0600),
                 0);
    cr_assert_eq(pxt_file_write(g_secret2, "not the cluster secret, not at all\n", 0600), 0);
}

static void teardown(void) {
    pxt_mitm_stop(&g_mitm);
    for (int i = 0; i < g_nn; i++) {
        pxt_proc_kill(&g_nodes[i].p);
        pxt_proc_release(&g_nodes[i].p);
    }
    pxt_procs_kill_all();
    pxt_dir_finish(g_dir, g_passed, "multiproc");
}

#define MP_TEST(name, secs)                                                    \
    Test(transport_multiproc, name, .init = setup, .fini = teardown, .timeout = (secs))

static int64_t now_ms(void) { return pxt_mono_ms(); }

/* Fails the test with a message and the tail of n's log. */
#define NODE_FAIL(n, ...) PXT_FAIL_LOG((n)->name, (n)->log_path, __VA_ARGS__)

/* Polls cond (which may talk to nodes) every 5 ms until it holds or ms pass. */
#define AWAIT PXT_AWAIT

/* ---- nodes ---- */

/* A node with a free port and an identity (created here so that its peers
 * can be given its key before it starts; pxt_node loads the same file). */
static node *node_new(const char *name, const char *secret) {
    cr_assert_lt(g_nn, 4);
    node *n = &g_nodes[g_nn++];
    memset(n, 0, sizeof *n);
    n->p.in_fd = n->p.out_fd = -1;
    snprintf(n->name, sizeof n->name, "%s", name);
    n->secret = secret;
    n->port = pxt_free_port();
    cr_assert_gt(n->port, 0, "no free port: %s", strerror(-n->port));
    snprintf(n->addr, sizeof n->addr, "tcp://127.0.0.1:%d", n->port);
    snprintf(n->id_path, sizeof n->id_path, "%s/%s.key", g_dir, name);
    snprintf(n->log_path, sizeof n->log_path, "%s/%s.log", g_dir, name);
    px_identity id;
    char err[256] = "";
    cr_assert_eq(px_identity_load(n->id_path, true, &id, err, sizeof err), PX_OK, "%s", err);
    px_pubkey_format(id.pk, n->pk);
    return n;
}

/* n will know `peer` at addr (NULL: the peer's own address). */
static void node_peer(node *n, const node *peer, const char *addr) {
    cr_assert_lt(n->npeers, 4);
    snprintf(n->peers[n->npeers++], sizeof n->peers[0], "%s=%s=%s", peer->name,
             addr ? addr : peer->addr, peer->pk);
}

static void node_start(node *n) {
    char hb[16], un[16], rc[16];
    snprintf(hb, sizeof hb, "%d", HEARTBEAT_MS);
    snprintf(un, sizeof un, "%d", UNREACHABLE_MS);
    snprintf(rc, sizeof rc, "%d", RECONNECT_MAX_MS);
    char *argv[40];
    int k = 0;
    argv[k++] = PXT_NODE;
    argv[k++] = "--name";
    argv[k++] = n->name;
    argv[k++] = "--listen";
    argv[k++] = n->addr;
    argv[k++] = "--identity";
    argv[k++] = n->id_path;
    argv[k++] = "--secret";
    argv[k++] = (char *)n->secret;
    argv[k++] = "--heartbeat";
    argv[k++] = hb;
    argv[k++] = "--unreachable";
    argv[k++] = un;
    argv[k++] = "--reconnect-max";
    argv[k++] = rc;
    for (int i = 0; i < n->npeers; i++) {
        argv[k++] = "--peer";
        argv[k++] = n->peers[i];
    }
    argv[k] = NULL;
    FILE *f = fopen(n->log_path, "a");
    if (f != NULL) {
        fprintf(f, "==== start %d of %s ====\n", n->starts + 1, n->name);
        fclose(f);
    }
    pxt_proc_release(&n->p);
    int rv = pxt_proc_spawn(&n->p, argv, n->log_path);
    cr_assert_eq(rv, 0, "spawn %s: %s", n->name, strerror(-rv));
    n->starts++;
    char line[1024];
    rv = pxt_proc_expect(&n->p, "ready ", CMD_MS, line, sizeof line);
    if (rv != 0) {
        NODE_FAIL(n, "no ready line (%s)", strerror(-rv));
    }
    char pk[64], addr[64];
    cr_assert(pxt_kv(line, "pk", pk, sizeof pk) && pxt_kv(line, "addr", addr, sizeof addr));
    cr_assert_str_eq(pk, n->pk, "the node loaded the identity made for it");
    cr_assert_str_eq(addr, n->addr, "the node listens on its port");
    cr_assert(pxt_kv(line, "sink", n->sink, sizeof n->sink) &&
              pxt_kv(line, "echo", n->echo, sizeof n->echo) &&
              pxt_kv(line, "mute", n->mute, sizeof n->mute), "%s", line);
    n->inc = (uint32_t)pxt_kv_num(line, "inc", true, 0);
    cr_assert_neq(n->inc, 0, "%s", line);
    px_ref r;
    cr_assert_eq(pxt_ref_parse(n->sink, &r), 0, "%s", n->sink);
    cr_assert_eq(r.node, px_node_id(n->name), "refs carry the node id of the name");
    cr_assert_eq(r.node_inc, n->inc);
}

/* Sends a command to n and returns its answer (the line starting with
 * prefix) in line. */
#define node_cmd(n, prefix, line, len, ...)                                                   \
    pxt_cmd(&(n)->p, (n)->name, (n)->log_path, CMD_MS, (prefix), (line), (len), __VA_ARGS__)

/* The answer to an earlier "ask id ...". */
static void node_askr(node *n, unsigned id, int timeout_ms, char *line, size_t len) {
    char prefix[32];
    snprintf(prefix, sizeof prefix, "askr id=%u ", id);
    int rv = pxt_proc_expect(&n->p, prefix, timeout_ms, line, len);
    if (rv != 0) {
        NODE_FAIL(n, "no answer to ask %u within %d ms: %s", id, timeout_ms, strerror(-rv));
    }
}

/* Whether n's link to peer is in state st ("up", "unreachable",
 * "connecting", "gone"); *inc (may be NULL) gets the peer's incarnation as n saw it. */
static bool link_is(node *n, const char *peer, const char *st, uint32_t *inc) {
    char line[256], prefix[64], v[32];
    snprintf(prefix, sizeof prefix, "state peer=%s ", peer);
    node_cmd(n, prefix, line, sizeof line, "state %s", peer);
    cr_assert(strstr(line, "rc=PX_OK") != NULL, "%s", line);
    cr_assert(pxt_kv(line, "st", v, sizeof v), "%s", line);
    if (inc != NULL) {
        *inc = (uint32_t)pxt_kv_num(line, "inc", true, 0);
    }
    return strcmp(v, st) == 0;
}

static long long stat_of(node *n, const char *key) {
    char line[1024];
    node_cmd(n, "stats ", line, sizeof line, "stats");
    long long v = pxt_kv_num(line, key, false, -1);
    cr_assert_geq(v, 0, "no %s in: %s", key, line);
    return v;
}

typedef struct sinkst {
    long long total, senders, ooo, min, max, overflow;
} sinkst;

static sinkst sink_of(node *n) {
    char line[512];
    node_cmd(n, "sink ", line, sizeof line, "sink");
    return (sinkst){pxt_kv_num(line, "total", false, -1), pxt_kv_num(line, "senders", false, -1),
                    pxt_kv_num(line, "ooo", false, -1),   pxt_kv_num(line, "min", false, -1),
                    pxt_kv_num(line, "max", false, -1),   pxt_kv_num(line, "overflow", false, -1)};
}

/* n sends k*cnt numbered messages to ref from k sender actors; asserts
 * every send was accepted. */
static void send_ok(node *n, const char *ref, int k, int cnt) {
    char line[256];
    node_cmd(n, "sent ", line, sizeof line, "send %s %d %d", ref, k, cnt);
    cr_assert_eq(pxt_kv_num(line, "ok", false, -1), (long long)k * cnt, "%s: %s", n->name, line);
    cr_assert_eq(pxt_kv_num(line, "err", false, -1), 0, "%s: %s", n->name, line);
    cr_assert(strstr(line, "incomplete") == NULL, "%s: %s", n->name, line);
}

static int log_count(node *n, const char *a, const char *b, const char *c) {
    int k = pxt_file_count(n->log_path, a, b, c);
    cr_assert_geq(k, 0, "cannot read %s", n->log_path);
    return k;
}

/* Stops n with "quit" and asserts it exited 0 by itself (under ASan that
 * includes a clean leak check). */
static void node_quit(node *n) { pxt_quit(&n->p, n->name, n->log_path, 10000); }

static void await_up(node *n, const char *peer) {
    AWAIT(link_is(n, peer, "up", NULL), 15000, "%s -> %s", n->name, peer);
}

/* alpha and beta, each the other's peer, started and linked both ways. */
static void linked_pair(node **a, node **b) {
    *a = node_new("alpha", g_secret);
    *b = node_new("beta", g_secret);
    node_peer(*a, *b, NULL);
    node_peer(*b, *a, NULL);
    node_start(*a);
    node_start(*b);
    await_up(*a, "beta");
    await_up(*b, "alpha");
}

/* ---- 1. two processes: order under concurrency, asks ---- */

MP_TEST(two_processes_keep_per_sender_order_and_asks_answer_or_time_out, 30) {
    node *a, *b;
    linked_pair(&a, &b);

    /* Four sender actors on alpha, 5000 numbered messages each, one target. */
    send_ok(a, b->sink, 4, 5000);
    AWAIT(sink_of(b).total >= 20000, 20000);
    sinkst s = sink_of(b);
    cr_assert_eq(s.total, 20000);
    cr_assert_eq(s.senders, 4, "one entry per sender actor");
    cr_assert_eq(s.min, 5000, "every sender's messages all arrived");
    cr_assert_eq(s.max, 5000);
    cr_assert_eq(s.ooo, 0, "each sender's messages arrive in its send order");

    /* Twenty asks in flight at once, both directions. */
    char line[256];
    for (unsigned i = 1; i <= 20; i++) {
        node_cmd(a, NULL, NULL, 0, "ask %u %s %u 5000", i, b->echo, i);
        node_cmd(b, NULL, NULL, 0, "ask %u %s %u 5000", i, a->echo, 100 + i);
    }
    for (unsigned i = 1; i <= 20; i++) {
        node_askr(a, i, 10000, line, sizeof line);
        cr_assert(strstr(line, "rc=PX_OK") != NULL, "alpha: %s", line);
        cr_assert_eq(pxt_kv_num(line, "val", false, -1), 2 * (long long)i, "%s", line);
        node_askr(b, i, 10000, line, sizeof line);
        cr_assert(strstr(line, "rc=PX_OK") != NULL, "beta: %s", line);
        cr_assert_eq(pxt_kv_num(line, "val", false, -1), 2 * (100 + (long long)i), "%s", line);
    }

    /* An ask to an actor that never replies times out within its bound. */
    int64_t t0 = now_ms();
    node_cmd(a, NULL, NULL, 0, "ask 99 %s 7 400", b->mute);
    node_askr(a, 99, 5000, line, sizeof line);
    int64_t took = now_ms() - t0;
    cr_assert(strstr(line, "rc=PX_ETIMEDOUT") != NULL, "%s", line);
    long long ms = pxt_kv_num(line, "ms", false, -1);
    cr_assert(ms >= 395 && ms <= 2500, "the ask timed out after %lld ms (timeout 400)", ms);
    cr_assert_lt(took, 4000, "the timeout reached the test after %lld ms", (long long)took);

    cr_assert_eq(stat_of(a, "bad_frames"), 0);
    cr_assert_eq(stat_of(b, "bad_frames"), 0);
    cr_assert_eq(stat_of(b, "undeliverable"), 0);
    node_quit(a);
    node_quit(b);
    g_passed = true;
}

/* ---- 2. a peer killed with SIGKILL ---- */

MP_TEST(a_peer_killed_with_sigkill_becomes_unreachable_and_sends_fail_fast, 30) {
    node *a, *b;
    linked_pair(&a, &b);
    send_ok(a, b->sink, 1, 100);
    AWAIT(sink_of(b).total == 100, 10000);

    /* An ask in flight to an actor that will never answer (its node dies). */
    char line[256];
    int64_t t_ask = now_ms();
    node_cmd(a, "askq id=1 ", NULL, 0, "ask 1 %s 7 2000", b->mute);

    int64_t t0 = now_ms();
    pxt_proc_kill(&b->p);
    cr_assert(b->p.reaped && WIFSIGNALED(b->p.status) && WTERMSIG(b->p.status) == SIGKILL);
    AWAIT(link_is(a, "beta", "unreachable", NULL), UNREACHABLE_MS + 3000,
          "alpha must see beta go down");
    int64_t detect = now_ms() - t0;

    /* Sends fail fast now (no waiting on the dead peer). */
    node_cmd(a, "send1 ", line, sizeof line, "send1 %s 1", b->sink);
    cr_assert(strstr(line, "rc=PX_EUNREACHABLE") != NULL, "%s", line);
    cr_assert_lt(pxt_kv_num(line, "us", false, 1 << 30), 100000, "fail fast: %s", line);

    /* A new ask fails at once or times out within its bound — never hangs. */
    node_cmd(a, NULL, NULL, 0, "ask 2 %s 5 1000", b->echo);
    node_askr(a, 2, 5000, line, sizeof line);
    cr_assert(strstr(line, "rc=PX_OK") == NULL, "%s", line);
    cr_assert_leq(pxt_kv_num(line, "ms", false, 1 << 30), 2500, "%s", line);

    /* The ask in flight when the peer died times out within its bound. */
    node_askr(a, 1, 5000, line, sizeof line);
    cr_assert(strstr(line, "rc=PX_ETIMEDOUT") != NULL, "%s", line);
    cr_assert_lt(now_ms() - t_ask, 5000);

    /* A batch from actors fails too, send by send, without hanging. */
    node_cmd(a, "sent ", line, sizeof line, "send %s 2 100", b->sink);
    cr_assert_eq(pxt_kv_num(line, "ok", false, -1), 0, "%s", line);
    cr_assert(strstr(line, "first=PX_EUNREACHABLE") != NULL, "%s", line);

    /* It stays down (nothing to redial to) and alpha stays responsive. */
    cr_assert(link_is(a, "beta", "unreachable", NULL));
    cr_assert_eq(stat_of(a, "bad_frames"), 0);
    cr_log_info("beta was seen unreachable %lld ms after SIGKILL", (long long)detect);
    node_quit(a);
    g_passed = true;
}

/* A peer that stops answering without closing anything (SIGSTOP: no reset,
 * no FIN) is declared unreachable by the silence bound, and the link comes
 * back when it resumes. */
MP_TEST(a_frozen_peer_becomes_unreachable_after_the_silence_bound_and_recovers, 30) {
    node *a, *b;
    linked_pair(&a, &b);

    cr_assert_eq(kill(b->p.pid, SIGSTOP), 0);
    int64_t t0 = now_ms();
    AWAIT(link_is(a, "beta", "unreachable", NULL), UNREACHABLE_MS + 5000,
          "alpha must give up on a silent beta");
    int64_t took = now_ms() - t0;
    cr_assert_geq(took, UNREACHABLE_MS - 2 * HEARTBEAT_MS,
                  "declared after %lld ms: by the silence bound, not before", (long long)took);
    char line[256];
    node_cmd(a, "send1 ", line, sizeof line, "send1 %s 1", b->sink);
    cr_assert(strstr(line, "rc=PX_EUNREACHABLE") != NULL, "%s", line);
    cr_assert_lt(pxt_kv_num(line, "us", false, 1 << 30), 100000, "fail fast: %s", line);

    cr_assert_eq(kill(b->p.pid, SIGCONT), 0);
    await_up(a, "beta");
    await_up(b, "alpha");
    send_ok(a, b->sink, 2, 500);
    AWAIT(sink_of(b).total == 1000, 10000, "messages flow again");
    cr_assert_eq(sink_of(b).ooo, 0);
    cr_log_info("silent beta declared unreachable after %lld ms", (long long)took);
    node_quit(a);
    node_quit(b);
    g_passed = true;
}

/* ---- 3. a peer restarted: a new incarnation ---- */

MP_TEST(a_restarted_peer_is_a_new_incarnation_and_old_refs_are_dead_letters, 30) {
    node *a, *b;
    linked_pair(&a, &b);
    uint32_t inc1 = 0;
    cr_assert(link_is(a, "beta", "up", &inc1));
    cr_assert_eq(inc1, b->inc, "alpha learnt beta's incarnation in the handshake");
    char old_sink[48], old_echo[48];
    snprintf(old_sink, sizeof old_sink, "%s", b->sink);
    snprintf(old_echo, sizeof old_echo, "%s", b->echo);
    send_ok(a, old_sink, 1, 100);
    AWAIT(sink_of(b).total == 100, 10000);

    pxt_proc_kill(&b->p);
    AWAIT(link_is(a, "beta", "unreachable", NULL), UNREACHABLE_MS + 3000);
    node_start(b); /* same name, identity file and port */
    cr_assert_neq(b->inc, inc1, "a restart is a new incarnation");
    uint32_t inc2 = 0;
    AWAIT(link_is(a, "beta", "up", &inc2) && inc2 == b->inc, 15000,
          "alpha relinks to the new beta");
    await_up(b, "alpha");
    cr_assert_eq(sink_of(b).total, 0, "a fresh process");

    /* Sends to the old incarnation's refs are dead letters on alpha. */
    long long dl0 = stat_of(a, "dead_letters");
    send_ok(a, old_sink, 1, 50); /* at-most-once: accepted, then dropped */
    cr_assert_eq(stat_of(a, "dead_letters") - dl0, 50, "each one a counted dead letter");
    char line[256];
    node_cmd(a, NULL, NULL, 0, "ask 1 %s 3 500", old_echo);
    node_askr(a, 1, 5000, line, sizeof line);
    cr_assert(strstr(line, "rc=PX_OK") == NULL, "an ask to an old ref is not answered: %s",
              line);

    /* New refs work, and nothing sent to the old ones shows up. */
    send_ok(a, b->sink, 1, 100);
    node_cmd(a, NULL, NULL, 0, "ask 2 %s 21 5000", b->echo);
    node_askr(a, 2, 10000, line, sizeof line);
    cr_assert(strstr(line, "rc=PX_OK") != NULL && pxt_kv_num(line, "val", false, -1) == 42,
              "%s", line);
    AWAIT(sink_of(b).total >= 100, 10000);
    sinkst s = sink_of(b);
    cr_assert_eq(s.total, 100, "only the messages to the new refs arrived");
    cr_assert_eq(s.ooo, 0);
    cr_assert_eq(stat_of(b, "dead_letters"), 0, "no old-ref message reached the new process");
    cr_assert_eq(stat_of(b, "undeliverable"), 0);
    cr_assert_eq(log_count(a, "beta restarted", NULL, NULL), 1,
                 "alpha logs the new incarnation once");
    node_quit(a);
    node_quit(b);
    g_passed = true;
}

/* ---- 4. the wrong cluster secret ---- */

MP_TEST(processes_with_different_secrets_never_link_and_both_log_it, 30) {
    node *a = node_new("alpha", g_secret), *m = node_new("mallory", g_secret2);
    node_peer(a, m, NULL);
    node_peer(m, a, NULL);
    node_start(a);
    node_start(m);
    /* Each side tries (dials and accepts) several times; none links. */
    bool up = false;
    AWAIT((up = up || link_is(a, "mallory", "up", NULL) || link_is(m, "alpha", "up", NULL),
           stat_of(a, "refused") + stat_of(a, "bad_frames") >= 4 &&
               stat_of(m, "refused") + stat_of(m, "bad_frames") >= 4),
          15000, "both sides refuse repeatedly");
    cr_assert(!up, "a link came up without the shared secret");
    cr_assert_eq(stat_of(a, "handshakes"), 0);
    cr_assert_eq(stat_of(m, "handshakes"), 0);
    cr_assert(!link_is(a, "mallory", "up", NULL));
    cr_assert(!link_is(m, "alpha", "up", NULL));
    cr_assert_gt(log_count(a, "mallory", "authentication", NULL), 0,
                 "alpha logs the refusal naming mallory");
    cr_assert_gt(log_count(m, "alpha", "authentication", NULL), 0,
                 "mallory logs the refusal naming alpha");
    /* Several attempts on three lanes each, logged once per side. */
    cr_assert_leq(log_count(a, "mallory", "authentication", NULL), 2,
                  "alpha logs the failing peer once, not per attempt and lane");
    cr_assert_leq(log_count(m, "alpha", "authentication", NULL), 2);

    char line[256];
    node_cmd(a, "send1 ", line, sizeof line, "send1 %s 1", m->sink);
    cr_assert(strstr(line, "rc=PX_EUNREACHABLE") != NULL, "%s", line);
    cr_assert_eq(sink_of(m).total, 0);
    node_quit(a);
    node_quit(m);
    g_passed = true;
}

/* ---- 5. a tampered byte and a replayed frame, through a proxy ---- */

MP_TEST(a_tampered_or_replayed_frame_drops_only_that_link_which_comes_back, 30) {
    node *a = node_new("alpha", g_secret), *b = node_new("beta", g_secret),
         *c = node_new("gamma", g_secret);
    cr_assert_eq(pxt_mitm_start(&g_mitm, b->port), 0);
    char via[64];
    snprintf(via, sizeof via, "tcp://127.0.0.1:%d", g_mitm.port);
    node_peer(a, b, via); /* alpha -> beta goes through the proxy */
    node_peer(b, a, NULL);
    node_peer(b, c, NULL);
    node_peer(c, b, NULL);
    node_start(a);
    node_start(b);
    node_start(c);
    await_up(a, "beta");
    await_up(b, "alpha");
    await_up(b, "gamma");
    await_up(c, "beta");
    send_ok(a, b->sink, 1, 200);
    AWAIT(sink_of(b).total == 200, 10000);
    cr_assert_gt(atomic_load(&g_mitm.frames), 0, "alpha's frames pass the proxy");
    long long total = 200;

    static const struct {
        int cmd;
        const char *what;
    } attacks[] = {{PXT_MITM_TAMPER, "tampered"}, {PXT_MITM_REPLAY, "replayed"}};
    for (int i = 0; i < 2; i++) {
        int acc0 = atomic_load(&g_mitm.accepted);
        atomic_store(&g_mitm.cmd, attacks[i].cmd);
        AWAIT(atomic_load(&g_mitm.tampered) + atomic_load(&g_mitm.replayed) == i + 1, 10000,
              "the proxy %s a frame", attacks[i].what);
        AWAIT(stat_of(b, "bad_frames") == i + 1, 10000, "beta rejects the %s frame",
              attacks[i].what);
        int64_t t_bad = now_ms();

        /* beta keeps serving its other peer meanwhile. */
        send_ok(c, b->sink, 1, 100);
        total += 100;
        cr_assert(link_is(b, "gamma", "up", NULL));
        cr_assert(link_is(c, "beta", "up", NULL));

        /* alpha redials through the (now honest) proxy; messages flow again. */
        AWAIT(atomic_load(&g_mitm.accepted) > acc0 && link_is(a, "beta", "up", NULL), 15000,
              "the link comes back after the %s frame", attacks[i].what);
        int64_t back = now_ms() - t_bad;
        cr_assert_lt(back, UNREACHABLE_MS / 2,
                     "back after %lld ms: beta dropped the link at once (not by silence)",
                     (long long)back);
        send_ok(a, b->sink, 1, 200);
        total += 200;
        AWAIT(sink_of(b).total == total, 10000, "after the %s frame", attacks[i].what);
        cr_assert_eq(stat_of(b, "bad_frames"), i + 1, "one bad frame, then the link was dropped");
        cr_assert_eq(log_count(b, "alpha", "authentication", NULL), i + 1,
                     "beta logs each rejected frame once, naming alpha");
    }
    sinkst s = sink_of(b);
    cr_assert_eq(s.ooo, 0);
    cr_assert_eq(s.total, total);
    cr_assert_eq(stat_of(b, "bad_frames"), 2);
    cr_assert_eq(stat_of(a, "bad_frames"), 0);
    cr_assert_eq(stat_of(c, "bad_frames"), 0);
    node_quit(a);
    node_quit(b);
    node_quit(c);
    pxt_mitm_stop(&g_mitm);
    g_passed = true;
}

/* ---- 6. a client that speaks version 99 ---- */

static int read_full(int fd, uint8_t *b, size_t n, int timeout_ms) {
    int64_t dl = now_ms() + timeout_ms;
    size_t have = 0;
    while (have < n) {
        int left = (int)(dl - now_ms());
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&pf, 1, left) <= 0) {
            return -ETIMEDOUT;
        }
        ssize_t r = recv(fd, b + have, n - have, 0);
        if (r <= 0) {
            return r == 0 ? -EPIPE : -errno;
        }
        have += (size_t)r;
    }
    return 0;
}

MP_TEST(a_node_refuses_a_hello_of_version_99_and_keeps_serving_its_peer, 30) {
    node *a, *b;
    linked_pair(&a, &b);

    /* A hand-built Hello of a future version. */
    uint8_t pk[32], kx[32], nonce[32];
    memset(pk, 0x51, sizeof pk);
    memset(kx, 0x52, sizeof kx);
    memset(nonce, 0x53, sizeof nonce);
    Plexus__Hello h = PLEXUS__HELLO__INIT;
    h.version = 99;
    h.min_version = 99;
    h.node_name = "rogue";
    h.node_id = px_node_id("rogue");
    h.node_inc = 1;
    h.identity_pk = (ProtobufCBinaryData){sizeof pk, pk};
    h.kx_pk = (ProtobufCBinaryData){sizeof kx, kx};
    h.nonce = (ProtobufCBinaryData){sizeof nonce, nonce};
    h.lane = PLEXUS__LANE__LANE_NORMAL;
    h.max_frame = 1u << 20;
    Plexus__Handshake hs = PLEXUS__HANDSHAKE__INIT;
    hs.msg_case = PLEXUS__HANDSHAKE__MSG_HELLO;
    hs.hello = &h;
    uint8_t out[512];
    size_t n = plexus__handshake__get_packed_size(&hs);
    cr_assert_leq(n + 12, sizeof out);
    memcpy(out, "plexus\0\1", 8);
    out[8] = (uint8_t)n;
    out[9] = (uint8_t)(n >> 8);
    out[10] = out[11] = 0;
    plexus__handshake__pack(&hs, out + 12);

    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)b->port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0, "%s", strerror(errno));
    cr_assert_eq(send(fd, out, n + 12, MSG_NOSIGNAL), (ssize_t)(n + 12));

    uint8_t pre[8], len[4], body[4096];
    int rv = read_full(fd, pre, 8, 5000);
    cr_assert_eq(rv, 0, "no preamble back: %s", strerror(-rv));
    cr_assert_arr_eq(pre, "plexus\0\1", 8);
    cr_assert_eq(read_full(fd, len, 4, 5000), 0);
    uint32_t bl = (uint32_t)len[0] | (uint32_t)len[1] << 8 | (uint32_t)len[2] << 16 |
                  (uint32_t)len[3] << 24;
    cr_assert(bl >= 1 && bl <= sizeof body, "handshake frame of %u bytes", bl);
    cr_assert_eq(read_full(fd, body, bl, 5000), 0);
    Plexus__Handshake *got = plexus__handshake__unpack(NULL, bl, body);
    cr_assert_not_null(got, "the answer is a Handshake");
    cr_assert_eq(got->msg_case, PLEXUS__HANDSHAKE__MSG_REFUSE, "the answer is a Refuse");
    cr_assert_not_null(got->refuse);
    cr_assert_eq(got->refuse->reason, PLEXUS__REFUSE__REASON__VERSION, "reason %d",
                 got->refuse->reason);
    cr_assert_eq(got->refuse->version, PX_WIRE_VERSION);
    cr_assert_eq(got->refuse->min_version, PX_WIRE_MIN_VERSION);
    plexus__handshake__free_unpacked(got, NULL);
    uint8_t more;
    rv = read_full(fd, &more, 1, 5000);
    cr_assert_eq(rv, -EPIPE, "then the node closes the connection (%s)", strerror(-rv));
    close(fd);

    AWAIT(log_count(b, "99..99", "version", NULL) >= 1, 5000, "beta logs the refusal");
    cr_assert_eq(log_count(b, "99..99", NULL, NULL), 1, "once");
    cr_assert_geq(stat_of(b, "refused"), 1);

    /* beta keeps serving alpha. */
    cr_assert(link_is(a, "beta", "up", NULL));
    cr_assert(link_is(b, "alpha", "up", NULL));
    send_ok(a, b->sink, 2, 500);
    send_ok(b, a->sink, 2, 500);
    AWAIT(sink_of(b).total == 1000 && sink_of(a).total == 1000, 10000);
    cr_assert_eq(sink_of(b).ooo, 0);
    cr_assert_eq(stat_of(b, "bad_frames"), 0);
    node_quit(a);
    node_quit(b);
    g_passed = true;
}

/* ---- 7. three processes, full mesh ---- */

MP_TEST(three_processes_in_a_full_mesh_deliver_everything_in_order, 30) {
    node *n[3] = {node_new("alpha", g_secret), node_new("beta", g_secret),
                  node_new("gamma", g_secret)};
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 3; j++) {
            if (i != j) {
                node_peer(n[i], n[j], NULL);
            }
        }
    }
    for (int i = 0; i < 3; i++) {
        node_start(n[i]);
    }
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 3; j++) {
            if (i != j) {
                await_up(n[i], n[j]->name);
            }
        }
    }
    /* All six flows at once: each node's two commands run one after the
     * other, the three nodes in parallel. */
    enum { K = 3, N = 3000 };
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 3; j++) {
            if (i != j) {
                node_cmd(n[i], NULL, NULL, 0, "send %s %d %d", n[j]->sink, K, N);
            }
        }
    }
    char line[256];
    for (int i = 0; i < 3; i++) {
        for (int r = 0; r < 2; r++) {
            int rv = pxt_proc_expect(&n[i]->p, "sent ", CMD_MS, line, sizeof line);
            if (rv != 0) {
                NODE_FAIL(n[i], "no 'sent' line: %s", strerror(-rv));
            }
            cr_assert_eq(pxt_kv_num(line, "ok", false, -1), K * N, "%s: %s", n[i]->name, line);
            cr_assert_eq(pxt_kv_num(line, "err", false, -1), 0, "%s: %s", n[i]->name, line);
        }
    }
    for (int i = 0; i < 3; i++) {
        AWAIT(sink_of(n[i]).total >= 2 * K * N, 20000, "%s's sink", n[i]->name);
        sinkst s = sink_of(n[i]);
        cr_assert_eq(s.total, 2 * K * N, "%s", n[i]->name);
        cr_assert_eq(s.senders, 2 * K, "%s: senders from both other nodes", n[i]->name);
        cr_assert_eq(s.min, N, "%s", n[i]->name);
        cr_assert_eq(s.max, N, "%s", n[i]->name);
        cr_assert_eq(s.ooo, 0, "%s: per-sender order", n[i]->name);
        cr_assert_eq(stat_of(n[i], "bad_frames"), 0);
    }
    for (int i = 0; i < 3; i++) {
        node_quit(n[i]);
    }
    g_passed = true;
}
