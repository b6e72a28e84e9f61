/* Tests for the transport's links (transport/src/link.c), two or three
 * nodes in one process over ipc: messages flow in order across nodes, ask
 * works across nodes, a node with the wrong cluster secret never links,
 * and sends to an unreachable node fail fast. */
#include <stdio.h>
#include <stdlib.h>
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

static void dir_make(void) {
    snprintf(tdir, sizeof tdir, "/tmp/pxt-link-XXXXXX");
    cr_assert_not_null(mkdtemp(tdir));
}

static void dir_remove(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tdir);
    cr_assert_eq(system(cmd), 0);
}

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
    n->sys = pxt_system_with(&cfg);
}

/* Starts n's transport with the others as peers and `secret`. */
static void node_start(tnode *n, tnode **peers, size_t np, const char *secret) {
    px_transport_cfg tc;
    px_transport_cfg_init(&tc);
    tc.listen = n->addr;
    tc.identity = &n->id;
    tc.heartbeat_ms = 50;
    tc.unreachable_ms = 1000;
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

static px_err echo_receive(px_ctx *ctx, px_msg *m) {
    px_msg *r = NULL;
    if (px_msg_u64(&r, 2, px_msg_get_u64(m) * 2) != PX_OK) {
        return PX_ENOMEM;
    }
    if (px_reply(ctx, m, &r) != PX_OK) {
        px_msg_free(r);
    }
    return PX_OK;
}
static const px_behavior echo_b = {.name = "t.echo", .receive = echo_receive};

Test(transport_link, messages_cross_nodes_in_send_order_and_asks_come_back, .timeout = 60) {
    dir_make();
    tnode a, b;
    node_init(&a, "alpha");
    node_init(&b, "beta");
    tnode *pa[] = {&b}, *pb[] = {&a};
    node_start(&a, pa, 1, SECRET);
    node_start(&b, pb, 1, SECRET);
    PXT_AWAIT(link_state(&a, "beta") == PX_LINK_UP && link_state(&b, "alpha") == PX_LINK_UP,
              10000);

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
    cr_assert_eq(px_system_spawn(b.sys, &echo_b, NULL, NULL, &echo), PX_OK);
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

    node_free(&a);
    node_free(&b);
    free(c);
    dir_remove();
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
