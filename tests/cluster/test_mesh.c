/*
 * Tests for the mesh (plexus/mesh.h) against a real etcd, three nodes in
 * this process (each its own system, transport and cluster; they talk over
 * ipc links): sends and asks to remote refs, refs passed through a third
 * node, remote px_stop, watches across nodes with each reason, remote
 * spawn by every placement policy, supervision of children on other nodes
 * (directives applied there, strategies over children on two nodes, restart
 * in place keeping the ref), and failover when a node's lease expires.
 */
#include <criterion/criterion.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <plexus/cluster.h>
#include <plexus/mesh.h>
#include <plexus/plexus.h>
#include <plexus/topic.h>
#include <plexus/transport.h>

#include "../core/helpers.h"
#include "plexus/plexus.pb-c.h"
#include "pxt_etcd.h"

#define SECRET "the cluster secret for these tests"

static pxt_etcd etcd;
static char tdir[64];

static void setup(void) {
    int rv = pxt_etcd_start(&etcd);
    cr_assert_eq(rv, 0, "etcd did not start (%d)", rv);
    snprintf(tdir, sizeof tdir, "/tmp/pxt-mesh-XXXXXX");
    cr_assert_not_null(mkdtemp(tdir));
}

static void teardown(void) {
    pxt_etcd_stop(&etcd);
    pxt_procs_kill_all();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tdir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(mesh, .init = setup, .fini = teardown, .timeout = 120);

/* ---- behaviors every node registers ---- */

#define TAG_WORK 1
#define TAG_FAIL 666
#define TAG_EXIT 777
#define TAG_SILENT 888 /* taken, counted, never answered */

static atomic_int g_inits;
static atomic_int g_silent;

static px_err work_init(px_ctx *ctx, const px_msg *arg) {
    (void)ctx;
    (void)arg;
    atomic_fetch_add(&g_inits, 1);
    return PX_OK;
}

/* Replies v * 2 with its node id as tag; fails on TAG_FAIL, stops itself on
 * TAG_EXIT. */
static px_err work_receive(px_ctx *ctx, px_msg *m) {
    if (px_msg_kind_of(m) != PX_MSG_BYTES) {
        return PX_OK;
    }
    if (px_msg_tag(m) == TAG_FAIL) {
        return PX_EFAIL;
    }
    if (px_msg_tag(m) == TAG_EXIT) {
        px_stop_self(ctx);
        return PX_OK;
    }
    if (px_msg_tag(m) == TAG_SILENT) {
        atomic_fetch_add(&g_silent, 1);
        return PX_OK;
    }
    px_msg *r = NULL;
    if (px_msg_u64(&r, px_self(ctx).node, px_msg_get_u64(m) * 2) == PX_OK &&
        px_reply(ctx, m, &r) != PX_OK) {
        px_msg_free(r);
    }
    return PX_OK;
}

static const px_behavior work_beh = {.name = "t.work", .init = work_init,
                                     .receive = work_receive};

/* A supervisor driven by asks: a bytes "spawn" command names a child id,
 * a placement node (or "" = round-robin over role worker) and answers the
 * child's ref. Its decider records each failure and answers g_directive. */
typedef struct spawn_cmd {
    char id[32];
    char node[16];
    int role;
    char gname[32]; /* placement.global_name, "" for none */
} spawn_cmd;

#define TAG_SPAWN 50
#define TAG_CHILD 51 /* ask: child info of id in payload; answers the child's node */

static _Atomic px_directive g_directive = PX_DIRECTIVE_RESTART;
static atomic_int g_failures;
static _Atomic px_err g_last_code;
static char g_last_origin[64];
static char g_last_cause_origin[64];

static px_directive sup_decide(px_ctx *ctx, const px_failure *f) {
    (void)ctx;
    snprintf(g_last_origin, sizeof g_last_origin, "%s", f->origin_node);
    snprintf(g_last_cause_origin, sizeof g_last_cause_origin, "%s",
             f->cause ? f->cause->origin_node : "");
    atomic_store(&g_last_code, f->code);
    atomic_fetch_add(&g_failures, 1);
    return atomic_load(&g_directive);
}

static px_err sup_receive(px_ctx *ctx, px_msg *m) {
    size_t len = 0;
    const void *d = px_msg_data(m, &len);
    if (px_msg_kind_of(m) != PX_MSG_BYTES || d == NULL) {
        return PX_OK;
    }
    px_msg *r = NULL;
    if (px_msg_tag(m) == TAG_SPAWN && len == sizeof(spawn_cmd)) {
        const spawn_cmd *c = d;
        px_placement pl = {.policy = c->role ? PX_PLACE_ROLE : PX_PLACE_NODE,
                           .node = c->node, .role = "worker",
                           .global_name = c->gname[0] ? c->gname : NULL};
        px_restart_policy pol;
        px_restart_policy_init(&pol);
        pol.max_restarts = 10;
        px_child_spec spec = {.id = c->id, .behavior = "t.work", .policy = &pol,
                              .placement = &pl};
        px_ref ref = PX_REF_NIL;
        px_err e = px_spawn_child(ctx, &spec, NULL, &ref);
        px_ref out[2] = {ref, {.id = (uint32_t)-e}};
        (void)px_msg_bytes(&r, 0, out, sizeof out);
    } else if (px_msg_tag(m) == TAG_CHILD) {
        char id[64];
        snprintf(id, sizeof id, "%.*s", (int)len, (const char *)d);
        px_child_info ci;
        memset(&ci, 0, sizeof ci);
        (void)px_child(ctx, id, &ci);
        (void)px_msg_bytes(&r, ci.instance, &ci, sizeof ci);
    }
    if (r != NULL && px_reply(ctx, m, &r) != PX_OK) {
        px_msg_free(r);
    }
    return PX_OK;
}

static const px_behavior sup_beh = {.name = "t.sup", .receive = sup_receive,
                                    .on_child_failure = sup_decide};
static const px_behavior sup_all_beh = {.name = "t.sup_all", .receive = sup_receive,
                                        .on_child_failure = sup_decide,
                                        .strategy = PX_ALL_FOR_ONE};

/* A watcher: watches the ref it is sent (tag 1) and records the Terminated. */
typedef struct watch_rec {
    atomic_int n;
    _Atomic px_term_reason reason;
    _Atomic px_err code;
    _Atomic px_err watch_rv;
    atomic_int watched; /* px_watch calls returned */
} watch_rec;

static px_err watcher_receive(px_ctx *ctx, px_msg *m) {
    watch_rec *w = px_state(ctx);
    size_t len = 0;
    const void *d = px_msg_data(m, &len);
    if (px_msg_kind_of(m) == PX_MSG_BYTES && px_msg_tag(m) == 1 && len == sizeof(px_ref)) {
        px_ref r;
        memcpy(&r, d, sizeof r);
        atomic_store(&w->watch_rv, px_watch(ctx, r));
        atomic_fetch_add(&w->watched, 1);
    } else if (px_msg_kind_of(m) == PX_MSG_TERMINATED) {
        px_term_reason reason;
        px_err code;
        (void)px_msg_terminated(m, NULL, &reason, &code);
        atomic_store(&w->reason, reason);
        atomic_store(&w->code, code);
        atomic_fetch_add(&w->n, 1);
    }
    return PX_OK;
}

static const px_behavior watcher_beh = {.name = "t.watcher", .init = pxt_init_ptr_state,
                                        .receive = watcher_receive};

/* ---- nodes ---- */

typedef struct tnode {
    char name[16];
    char addr[160];
    px_identity id;
    px_system *sys;
    px_transport *t;
    px_cluster *c;
    px_mesh *m;
} tnode;

static void node_up(tnode *n, const char *name, const char *const *roles) {
    memset(n, 0, sizeof *n);
    snprintf(n->name, sizeof n->name, "%s", name);
    snprintf(n->addr, sizeof n->addr, "ipc://%s/%s.sock", tdir, name);
    char kp[128], err[256];
    snprintf(kp, sizeof kp, "%s/%s.key", tdir, name);
    cr_assert_eq(px_identity_load(kp, true, &n->id, err, sizeof err), PX_OK, "%s", err);
    px_config cfg;
    px_config_init(&cfg);
    cfg.node_name = n->name;
    cfg.workers = 2;
    cfg.log_level = getenv("PXT_LOG") ? PX_LOG_INFO : PX_LOG_CRIT;
    cr_assert_eq(px_system_alloc(&n->sys, &cfg), PX_OK);
    cr_assert_eq(px_behavior_register(n->sys, &work_beh), PX_OK);
    cr_assert_eq(px_behavior_register(n->sys, &sup_beh), PX_OK);
    cr_assert_eq(px_behavior_register(n->sys, &sup_all_beh), PX_OK);
    px_transport_cfg tc;
    px_transport_cfg_init(&tc);
    tc.listen = n->addr;
    tc.identity = &n->id;
    tc.heartbeat_ms = 50;
    tc.unreachable_ms = 500;
    tc.reconnect_max_ms = 200;
    cr_assert_eq(px_secret_from_bytes(SECRET, strlen(SECRET), tc.cluster_key), PX_OK);
    cr_assert_eq(px_transport_start(n->sys, &tc, &n->t), PX_OK);
    px_cluster_cfg cc;
    px_cluster_cfg_init(&cc);
    cc.cluster = "t";
    cc.sys = n->sys;
    cc.transport = n->t;
    cc.roles = roles;
    cc.ttl_s = 3; /* 2 s fences nodes whose keepalives a loaded machine delays */
    cc.etcd.endpoints = etcd.url;
    cc.etcd.request_timeout_ms = 1000;
    cc.etcd.connect_timeout_ms = 300;
    cc.etcd.watch_retry_max_ms = 200;
    cc.etcd.log = pxt_etcd_quiet_log;
    px_err rv = px_cluster_start(&cc, &n->c, err, sizeof err);
    cr_assert_eq(rv, PX_OK, "%s: %s (%s)", n->name, px_errname(rv), err);
    px_mesh_cfg mc = {.sys = n->sys, .transport = n->t, .cluster = n->c};
    cr_assert_eq(px_mesh_start(&mc, &n->m), PX_OK);
}

/* crash = no goodbye: the lease is left to expire. */
static void node_down(tnode *n, bool crash) {
    if (n->sys == NULL) {
        return;
    }
    px_mesh_stop(n->m);
    px_cluster_stop(n->c, !crash);
    px_transport_stop(n->t);
    px_system_shutdown(n->sys);
    px_system_free(n->sys);
    n->sys = NULL;
}

static px_member_state state_of(tnode *n, const char *name) {
    px_member m;
    return px_cluster_member(n->c, name, &m) == PX_OK ? m.state : 0;
}

static const char *const worker_roles[] = {"worker", NULL};

static void three(tnode n[3]) {
    node_up(&n[0], "a", NULL);
    node_up(&n[1], "b", worker_roles);
    node_up(&n[2], "c", worker_roles);
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 3; j++) {
            PXT_AWAIT(state_of(&n[i], n[j].name) == PX_MEMBER_UP, 10000);
        }
    }
}

/* Asks `to` from node n: v * 2 back; *node_id (may be NULL) = the node that
 * answered. */
static px_err ask_work(tnode *n, px_ref to, uint64_t v, uint32_t *node_id) {
    px_msg *q = NULL, *r = NULL;
    cr_assert_eq(px_msg_u64(&q, TAG_WORK, v), PX_OK);
    px_err e = px_system_ask(n->sys, to, &q, 2000, &r);
    px_msg_free(q);
    if (e == PX_OK) {
        cr_assert_eq(px_msg_get_u64(r), 2 * v);
        if (node_id != NULL) {
            *node_id = px_msg_tag(r);
        }
    }
    px_msg_free(r);
    return e;
}

static void send_tag(tnode *n, px_ref to, uint32_t tag) {
    px_msg *q = NULL;
    cr_assert_eq(px_msg_u64(&q, tag, 0), PX_OK);
    cr_assert_eq(px_system_send(n->sys, to, &q), PX_OK);
}

static px_ref spawn_named(tnode *n, px_ref sup, const char *id, const char *node,
                          const char *gname, px_err *err) {
    spawn_cmd c = {.role = node == NULL};
    snprintf(c.gname, sizeof c.gname, "%s", gname ? gname : "");
    snprintf(c.id, sizeof c.id, "%s", id);
    snprintf(c.node, sizeof c.node, "%s", node ? node : "");
    px_msg *q = NULL, *r = NULL;
    cr_assert_eq(px_msg_bytes(&q, TAG_SPAWN, &c, sizeof c), PX_OK);
    cr_assert_eq(px_system_ask(n->sys, sup, &q, 5000, &r), PX_OK);
    px_msg_free(q);
    size_t len;
    const px_ref *out = px_msg_data(r, &len);
    cr_assert_eq(len, 2 * sizeof(px_ref));
    px_ref ref = out[0];
    *err = -(px_err)out[1].id;
    px_msg_free(r);
    return ref;
}

static px_ref spawn_child(tnode *n, px_ref sup, const char *id, const char *node, px_err *err) {
    return spawn_named(n, sup, id, node, NULL, err);
}

static px_child_info child_info(tnode *n, px_ref sup, const char *id) {
    px_msg *q = NULL, *r = NULL;
    cr_assert_eq(px_msg_bytes(&q, TAG_CHILD, id, strlen(id)), PX_OK);
    cr_assert_eq(px_system_ask(n->sys, sup, &q, 5000, &r), PX_OK);
    px_msg_free(q);
    px_child_info ci;
    size_t len;
    const void *d = px_msg_data(r, &len);
    cr_assert_eq(len, sizeof ci);
    memcpy(&ci, d, sizeof ci);
    px_msg_free(r);
    return ci;
}

static void reset_globals(void) {
    atomic_store(&g_inits, 0);
    atomic_store(&g_failures, 0);
    atomic_store(&g_directive, PX_DIRECTIVE_RESTART);
    atomic_store(&g_last_code, PX_OK);
}

/* ---- tests ---- */

Test(mesh, sends_asks_watches_and_stops_reach_actors_on_other_nodes) {
    reset_globals();
    tnode n[3];
    three(n);
    px_ref w = PX_REF_NIL;
    cr_assert_eq(px_system_spawn(n[1].sys, &work_beh, NULL, NULL, &w), PX_OK);
    uint32_t at = 0;
    cr_assert_eq(ask_work(&n[0], w, 21, &at), PX_OK);
    cr_assert_eq(at, px_node_id("b"), "b answered");

    /* a's watcher watches b's worker; c stops it: Terminated(stopped). */
    watch_rec *wr = calloc(1, sizeof *wr);
    px_ref watcher = pxt_spawn(n[0].sys, &watcher_beh, wr, NULL);
    px_msg *q = NULL;
    cr_assert_eq(px_msg_bytes(&q, 1, &w, sizeof w), PX_OK);
    cr_assert_eq(px_system_send(n[0].sys, watcher, &q), PX_OK);
    px_mesh_stats ms;
    PXT_AWAIT((px_mesh_stats_get(n[0].m, &ms), ms.remote_watches == 1), 2000);
    /* The watch went to b on a's normal lane when px_watch returned; an ask
     * from a behind it answers only after b registered it. Without this the
     * stop from c (another link) may reach b first: no such actor. */
    PXT_AWAIT(atomic_load(&wr->watched) == 1, 2000);
    cr_assert_eq(atomic_load(&wr->watch_rv), PX_OK);
    cr_assert_eq(ask_work(&n[0], w, 1, NULL), PX_OK);
    cr_assert_eq(px_stop(n[2].sys, w), PX_OK, "a px_stop from a third node");
    PXT_AWAIT(atomic_load(&wr->n) == 1, 5000);
    cr_assert_eq(atomic_load(&wr->reason), PX_TERM_STOPPED);
    PXT_AWAIT(!px_is_alive(n[1].sys, w), 2000);

    /* A watch of a remote actor that is gone: no such actor. */
    cr_assert_eq(px_msg_bytes(&q, 1, &w, sizeof w), PX_OK);
    atomic_store(&wr->n, 0);
    cr_assert_eq(px_system_send(n[0].sys, watcher, &q), PX_OK);
    PXT_AWAIT(atomic_load(&wr->n) == 1, 5000);
    cr_assert_eq(atomic_load(&wr->reason), PX_TERM_NO_ACTOR);

    /* A watch of an actor on a node that dies: node down, after the lease. */
    px_ref w2 = PX_REF_NIL;
    cr_assert_eq(px_system_spawn(n[2].sys, &work_beh, NULL, NULL, &w2), PX_OK);
    cr_assert_eq(ask_work(&n[0], w2, 1, NULL), PX_OK);
    atomic_store(&wr->n, 0);
    cr_assert_eq(px_msg_bytes(&q, 1, &w2, sizeof w2), PX_OK);
    cr_assert_eq(px_system_send(n[0].sys, watcher, &q), PX_OK);
    PXT_AWAIT((px_mesh_stats_get(n[0].m, &ms), ms.remote_watches == 1), 2000);
    node_down(&n[2], true);
    PXT_AWAIT(atomic_load(&wr->n) == 1, 6000);
    cr_assert_eq(atomic_load(&wr->reason), PX_TERM_NODE_DOWN);
    cr_assert_eq(atomic_load(&wr->code), PX_ENODEDOWN);
    cr_assert_eq(state_of(&n[0], "c"), PX_MEMBER_DOWN);
    node_down(&n[0], false);
    node_down(&n[1], false);
    free(wr);
}

/* An actor on a that forwards what it gets to the ref it was given. */
static px_err fwd_receive(px_ctx *ctx, px_msg *m) {
    px_ref *to = px_state(ctx);
    size_t len;
    const void *d = px_msg_data(m, &len);
    if (px_msg_tag(m) == 9 && len == sizeof(px_ref)) {
        memcpy(to, d, sizeof *to);
        return PX_OK;
    }
    px_msg *c = NULL;
    (void)px_msg_u64(&c, px_msg_tag(m), px_msg_get_u64(m));
    /* A refused send leaves the message with us (at teardown the other
     * node may be gone already): dropped, and the forwarder goes on. */
    if (px_send(ctx, *to, &c) != PX_OK) {
        px_msg_free(c);
    }
    return PX_OK;
}

Test(mesh, a_ref_passed_through_a_third_node_works_there) {
    reset_globals();
    tnode n[3];
    three(n);
    /* c's worker ref travels inside a message to b, which sends to it. */
    px_ref w = PX_REF_NIL;
    cr_assert_eq(px_system_spawn(n[2].sys, &work_beh, NULL, NULL, &w), PX_OK);
    px_ref *slot = calloc(1, sizeof *slot);
    const px_behavior fwd = {.name = "t.fwd", .init = pxt_init_ptr_state,
                             .receive = fwd_receive};
    px_ref f = pxt_spawn(n[1].sys, &fwd, slot, NULL);
    px_msg *q = NULL;
    cr_assert_eq(px_msg_bytes(&q, 9, &w, sizeof w), PX_OK);
    cr_assert_eq(px_system_send(n[0].sys, f, &q), PX_OK, "a tells b about c's actor");
    PXT_AWAIT(!px_ref_is_nil(*slot), 2000);
    cr_assert(px_ref_eq(*slot, w));
    /* b forwards to c; c's worker answers b's forwarder (a reply it ignores)
     * — the count of inits is unchanged, and c's worker handled it. */
    uint64_t before = PXT_STAT(n[2].sys, messages);
    send_tag(&n[0], f, TAG_WORK);
    PXT_AWAIT(PXT_STAT(n[2].sys, messages) > before, 3000);
    /* protobuf refs round-trip */
    Plexus__ActorRef pr = PLEXUS__ACTOR_REF__INIT;
    px_ref_to_pb(w, &pr.base);
    cr_assert(px_ref_eq(px_ref_from_pb(&pr.base), w));
    for (int i = 0; i < 3; i++) {
        node_down(&n[i], false);
    }
    free(slot);
}

static int pick_last(void *arg, const char *behavior, const px_place_cand *c, size_t n) {
    (void)arg;
    (void)behavior;
    (void)c;
    return (int)n - 1;
}

Test(mesh, remote_spawn_by_each_placement_policy) {
    reset_globals();
    tnode n[3];
    three(n);
    char why[256];
    px_ref r;
    px_msg *arg = NULL;
    uint32_t at = 0;
    /* by name */
    px_placement pl = {.policy = PX_PLACE_NODE, .node = "c"};
    cr_assert_eq(px_mesh_spawn(n[0].m, &pl, "t.work", &arg, NULL, 3000, &r, why, sizeof why),
                 PX_OK, "%s", why);
    cr_assert_eq(r.node, px_node_id("c"));
    cr_assert_eq(ask_work(&n[0], r, 3, &at), PX_OK);
    cr_assert_eq(at, px_node_id("c"));
    /* round-robin over the three (this node included) */
    pl = (px_placement){.policy = PX_PLACE_ROUND_ROBIN};
    uint32_t seen = 0;
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(px_mesh_spawn(n[0].m, &pl, "t.work", NULL, NULL, 3000, &r, why, sizeof why),
                     PX_OK, "%s", why);
        seen |= r.node == px_node_id("a") ? 1 : r.node == px_node_id("b") ? 2 : 4;
    }
    cr_assert_eq(seen, 7, "each node once in three round-robin spawns");
    /* by role: only b and c are workers */
    pl = (px_placement){.policy = PX_PLACE_ROLE, .role = "worker"};
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(px_mesh_spawn(n[0].m, &pl, "t.work", NULL, NULL, 3000, &r, why, sizeof why),
                     PX_OK, "%s", why);
        cr_assert(r.node == px_node_id("b") || r.node == px_node_id("c"));
    }
    /* least loaded: load b heavily; the pick is never b */
    for (int i = 0; i < 300; i++) {
        px_ref x;
        cr_assert_eq(px_system_spawn(n[1].sys, &work_beh, NULL, NULL, &x), PX_OK);
    }
    /* until b's load is published: ties go round, so c must win every time */
    PXT_POLL(({
                 int wins = 0;
                 for (int k = 0; k < 4; k++) {
                     char node[32] = "";
                     px_placement ll = {.policy = PX_PLACE_LEAST_LOADED, .exclude_self = 1};
                     wins += px_mesh_place(n[0].m, &ll, "t.work", node, sizeof node) == PX_OK &&
                             strcmp(node, "c") == 0;
                 }
                 wins == 4;
             }),
             5000);
    pl = (px_placement){.policy = PX_PLACE_LEAST_LOADED, .exclude_self = 1};
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(px_mesh_spawn(n[0].m, &pl, "t.work", NULL, NULL, 3000, &r, why, sizeof why),
                     PX_OK, "%s", why);
        cr_assert_eq(r.node, px_node_id("c"), "b reports 300 more actors");
    }
    /* a user function */
    pl = (px_placement){.policy = PX_PLACE_FN, .fn = pick_last};
    cr_assert_eq(px_mesh_spawn(n[0].m, &pl, "t.work", NULL, NULL, 3000, &r, why, sizeof why),
                 PX_OK, "%s", why);
    /* an unknown behavior: a clear error */
    pl = (px_placement){.policy = PX_PLACE_NODE, .node = "b"};
    cr_assert_eq(px_mesh_spawn(n[0].m, &pl, "no.such", NULL, NULL, 3000, &r, why, sizeof why),
                 PX_ENOENT);
    cr_assert(strstr(why, "no.such") != NULL, "%s", why);
    pl = (px_placement){.policy = PX_PLACE_NODE, .node = "nowhere"};
    cr_assert_eq(px_mesh_spawn(n[0].m, &pl, "t.work", NULL, NULL, 3000, &r, why, sizeof why),
                 PX_EUNREACHABLE);
    for (int i = 0; i < 3; i++) {
        node_down(&n[i], false);
    }
}

Test(mesh, a_parent_supervises_a_child_on_another_node) {
    reset_globals();
    tnode n[3];
    three(n);
    px_ref sup = PX_REF_NIL;
    cr_assert_eq(px_system_spawn(n[0].sys, &sup_beh, NULL, NULL, &sup), PX_OK);
    px_err e;
    px_ref child = spawn_child(&n[0], sup, "w1", "b", &e);
    cr_assert_eq(e, PX_OK, "%s", px_errname(e));
    cr_assert_eq(child.node, px_node_id("a"), "the parent keeps a local proxy");
    uint32_t at = 0;
    PXT_AWAIT(ask_work(&n[0], child, 5, &at) == PX_OK, 5000);
    cr_assert_eq(at, px_node_id("b"), "the work runs on b");
    px_child_info ci = child_info(&n[0], sup, "w1");
    cr_assert_str_eq(ci.node, "b");
    cr_assert_eq(ci.remote.node, px_node_id("b"));
    px_ref remote = ci.remote;

    /* A failure on b: a's decider runs (origin b), b restarts it in place. */
    send_tag(&n[0], child, TAG_FAIL);
    PXT_AWAIT(atomic_load(&g_failures) == 1, 5000);
    cr_assert_str_eq(g_last_origin, "b");
    cr_assert_eq(atomic_load(&g_last_code), PX_EFAIL);
    PXT_AWAIT(child_info(&n[0], sup, "w1").instance == 2, 5000);
    ci = child_info(&n[0], sup, "w1");
    cr_assert(px_ref_eq(ci.remote, remote), "a restart in place keeps the instance's ref");
    cr_assert_eq(ask_work(&n[0], child, 6, &at), PX_OK);
    cr_assert_eq(ask_work(&n[2], remote, 7, &at), PX_OK, "the remote ref works from c too");

    /* Resume keeps the instance; Stop removes it on b. */
    atomic_store(&g_directive, PX_DIRECTIVE_RESUME);
    send_tag(&n[0], child, TAG_FAIL);
    PXT_AWAIT(atomic_load(&g_failures) == 2, 5000);
    PXT_AWAIT(ask_work(&n[0], child, 8, NULL) == PX_OK, 5000);
    cr_assert_eq(child_info(&n[0], sup, "w1").instance, 2, "resumed, not restarted");
    atomic_store(&g_directive, PX_DIRECTIVE_STOP);
    send_tag(&n[0], child, TAG_FAIL);
    PXT_AWAIT(!px_is_alive(n[1].sys, remote), 5000);
    PXT_AWAIT(!px_is_alive(n[0].sys, child), 5000);
    /* an unknown node for a named placement: a clear error at once */
    px_ref bad = spawn_child(&n[0], sup, "w2", "nowhere", &e);
    cr_assert_eq(e, PX_EUNREACHABLE);
    cr_assert(px_ref_is_nil(bad));
    for (int i = 0; i < 3; i++) {
        node_down(&n[i], false);
    }
}

Test(mesh, all_for_one_restarts_children_on_two_nodes) {
    reset_globals();
    tnode n[3];
    three(n);
    px_ref sup = PX_REF_NIL;
    cr_assert_eq(px_system_spawn(n[0].sys, &sup_all_beh, NULL, NULL, &sup), PX_OK);
    px_err e;
    px_ref c1 = spawn_child(&n[0], sup, "on-b", "b", &e);
    cr_assert_eq(e, PX_OK);
    px_ref c2 = spawn_child(&n[0], sup, "on-c", "c", &e);
    cr_assert_eq(e, PX_OK);
    PXT_AWAIT(ask_work(&n[0], c1, 1, NULL) == PX_OK && ask_work(&n[0], c2, 1, NULL) == PX_OK,
              5000);
    int inits = atomic_load(&g_inits);
    send_tag(&n[0], c1, TAG_FAIL);
    PXT_AWAIT(child_info(&n[0], sup, "on-b").instance == 2 &&
                  child_info(&n[0], sup, "on-c").instance == 2,
              5000);
    cr_assert_eq(atomic_load(&g_inits), inits + 2, "both instances started again");
    uint32_t at;
    cr_assert_eq(ask_work(&n[0], c2, 2, &at), PX_OK);
    cr_assert_eq(at, px_node_id("c"));
    for (int i = 0; i < 3; i++) {
        node_down(&n[i], false);
    }
}

Test(mesh, a_child_on_a_node_whose_lease_expires_is_restarted_elsewhere) {
    reset_globals();
    tnode n[3];
    three(n);
    px_ref sup = PX_REF_NIL;
    cr_assert_eq(px_system_spawn(n[0].sys, &sup_beh, NULL, NULL, &sup), PX_OK);
    px_err e;
    px_ref child = spawn_named(&n[0], sup, "svc", NULL, "svc.main", &e); /* role worker */
    cr_assert_eq(e, PX_OK);
    uint32_t at = 0;
    PXT_AWAIT(ask_work(&n[0], child, 1, &at) == PX_OK, 5000);
    int victim = at == px_node_id("b") ? 1 : 2, other = 3 - victim;
    px_ref named = PX_REF_NIL;
    PXT_AWAIT(px_whereis_global(n[0].c, "svc.main", &named) == PX_OK, 5000);
    cr_assert_eq(named.node, px_node_id(n[victim].name), "the name points at the instance");
    int64_t t0 = pxt_now_ms();
    node_down(&n[victim], true);
    PXT_AWAIT(atomic_load(&g_failures) == 1, 8000);
    cr_assert_eq(atomic_load(&g_last_code), PX_ENODEDOWN);
    cr_assert_str_eq(g_last_origin, n[victim].name, "the failure names the lost node");
    PXT_AWAIT(ask_work(&n[0], child, 2, &at) == PX_OK, 8000);
    cr_assert_eq(at, px_node_id(n[other].name), "restarted on the other worker");
    fprintf(stderr, "failover: %lld ms from the crash to an answer\n",
            (long long)(pxt_now_ms() - t0));
    cr_assert_str_eq(child_info(&n[0], sup, "svc").node, n[other].name);
    /* the name followed: whereis (a's cached copy) sees the new instance */
    PXT_AWAIT(px_whereis_global(n[0].c, "svc.main", &named) == PX_OK &&
                  named.node == px_node_id(n[other].name),
              5000);
    cr_assert_eq(ask_work(&n[0], named, 3, &at), PX_OK);
    cr_assert_eq(at, px_node_id(n[other].name));
    node_down(&n[0], false);
    node_down(&n[other], false);
}

/* A blocking ask on a thread of its own, for an answer that never comes. */
typedef struct slow_ask {
    tnode *n;
    px_ref to;
    uint32_t timeout_ms;
    _Atomic px_err rv;
    atomic_int done;
} slow_ask;

static void *slow_ask_run(void *arg) {
    slow_ask *s = arg;
    px_msg *q = NULL, *r = NULL;
    if (px_msg_u64(&q, TAG_SILENT, 0) != PX_OK) {
        atomic_store(&s->rv, PX_ENOMEM);
    } else {
        atomic_store(&s->rv, px_system_ask(s->n->sys, s->to, &q, s->timeout_ms, &r));
    }
    px_msg_free(q);
    px_msg_free(r);
    atomic_store(&s->done, 1);
    return NULL;
}

/* An ask to an actor on a node that dies ends with the node's loss, long
 * before its timeout (px_system_fail_asks via the mesh), and is counted. */
Test(mesh, an_ask_waiting_on_a_node_that_dies_ends_with_an_error_not_its_timeout) {
    reset_globals();
    atomic_store(&g_silent, 0);
    tnode n[2];
    node_up(&n[0], "a", NULL);
    node_up(&n[1], "b", NULL);
    for (int i = 0; i < 2; i++) {
        for (int j = 0; j < 2; j++) {
            PXT_AWAIT(state_of(&n[i], n[j].name) == PX_MEMBER_UP, 10000);
        }
    }
    px_ref on_b = PX_REF_NIL, on_a = PX_REF_NIL;
    cr_assert_eq(px_system_spawn(n[1].sys, &work_beh, NULL, NULL, &on_b), PX_OK);
    cr_assert_eq(px_system_spawn(n[0].sys, &work_beh, NULL, NULL, &on_a), PX_OK);
    /* one ask waits on b, one on a local actor (which b's loss must spare) */
    slow_ask remote = {.n = &n[0], .to = on_b, .timeout_ms = 60000};
    slow_ask local = {.n = &n[0], .to = on_a, .timeout_ms = 60000};
    pthread_t th[2];
    cr_assert_eq(pthread_create(&th[0], NULL, slow_ask_run, &remote), 0);
    cr_assert_eq(pthread_create(&th[1], NULL, slow_ask_run, &local), 0);
    PXT_AWAIT(atomic_load(&g_silent) == 2, 5000);
    int64_t t0 = pxt_now_ms();
    node_down(&n[1], true);
    PXT_AWAIT(atomic_load(&remote.done) == 1, 20000);
    int64_t took = pxt_now_ms() - t0;
    px_err rv = atomic_load(&remote.rv);
    cr_assert(rv == PX_EUNREACHABLE || rv == PX_ENODEDOWN,
              "the ask ended with %s after %lld ms", px_errname(rv), (long long)took);
    fprintf(stderr, "an ask on a crashed node ended with %s after %lld ms\n", px_errname(rv),
            (long long)took);
    px_mesh_stats ms;
    px_mesh_stats_get(n[0].m, &ms);
    cr_assert_geq(ms.asks_failed, 1);
    cr_assert_eq(atomic_load(&local.done), 0, "the local ask still waits");
    cr_assert_eq(pthread_join(th[0], NULL), 0);
    px_stop(n[0].sys, on_a); /* the local ask then times out: join it */
    node_down(&n[0], false);
    cr_assert_eq(pthread_join(th[1], NULL), 0);
    cr_assert_neq(atomic_load(&local.rv), PX_OK);
}

/* A subscriber: subscribes at init to the topic it is given, counts. */
static atomic_int g_pub_got[3];

static px_err sub_init(px_ctx *ctx, const px_msg *arg) {
    (void)arg;
    return px_subscribe(ctx, "news");
}

static px_err sub_receive(px_ctx *ctx, px_msg *m) {
    if (px_msg_kind_of(m) == PX_MSG_BYTES && px_msg_tag(m) == 42) {
        int node = px_self(ctx).node == px_node_id("b") ? 1 : 2;
        atomic_fetch_add(&g_pub_got[node], 1);
    }
    return PX_OK;
}

static const px_behavior sub_beh = {.name = "t.sub", .init = sub_init, .receive = sub_receive};

Test(mesh, topics_reach_subscribers_on_every_node_with_one_frame_per_node) {
    reset_globals();
    tnode n[3];
    three(n);
    for (int i = 0; i < 3; i++) {
        atomic_store(&g_pub_got[i], 0);
    }
    px_ref s1, s2, s3;
    cr_assert_eq(px_system_spawn(n[1].sys, &sub_beh, NULL, NULL, &s1), PX_OK);
    cr_assert_eq(px_system_spawn(n[1].sys, &sub_beh, NULL, NULL, &s2), PX_OK);
    cr_assert_eq(px_system_spawn(n[2].sys, &sub_beh, NULL, NULL, &s3), PX_OK);
    /* a learns that b and c have subscribers: a publish reaches all three */
    PXT_POLL(({
                 px_msg *p = NULL;
                 (void)px_msg_u64(&p, 42, 1);
                 (void)px_publish(n[0].sys, "news", &p);
                 px_msg_free(p);
                 atomic_load(&g_pub_got[1]) >= 2 && atomic_load(&g_pub_got[2]) >= 1;
             }),
             5000);
    /* now exactly: one publish, two frames, three deliveries (once what was
     * sent so far has all arrived: a's frames = b's + c's received) */
    PXT_AWAIT(({
                  px_mesh_stats sa, sb, sc;
                  px_mesh_stats_get(n[0].m, &sa);
                  px_mesh_stats_get(n[1].m, &sb);
                  px_mesh_stats_get(n[2].m, &sc);
                  sa.publications_sent == sb.publications_received + sc.publications_received &&
                      atomic_load(&g_pub_got[1]) == 2 * (int)sb.publications_received &&
                      atomic_load(&g_pub_got[2]) == (int)sc.publications_received;
              }),
              5000);
    int b0 = atomic_load(&g_pub_got[1]), c0 = atomic_load(&g_pub_got[2]);
    px_mesh_stats st0, st1;
    px_mesh_stats_get(n[0].m, &st0);
    px_msg *p = NULL;
    cr_assert_eq(px_msg_u64(&p, 42, 2), PX_OK);
    cr_assert_eq(px_publish(n[0].sys, "news", &p), PX_OK);
    PXT_AWAIT(atomic_load(&g_pub_got[1]) == b0 + 2 && atomic_load(&g_pub_got[2]) == c0 + 1, 5000);
    px_mesh_stats_get(n[0].m, &st1);
    cr_assert_eq(st1.publications_sent - st0.publications_sent, 2, "one frame per node");
    /* c's only subscriber stops: c's interest goes, publishes reach b only */
    cr_assert_eq(px_stop(n[2].sys, s3), PX_OK);
    PXT_POLL(({
                 px_mesh_stats a, z;
                 px_mesh_stats_get(n[0].m, &a);
                 px_msg *q = NULL;
                 (void)px_msg_u64(&q, 42, 3);
                 (void)px_publish(n[0].sys, "news", &q);
                 px_msg_free(q);
                 px_mesh_stats_get(n[0].m, &z);
                 z.publications_sent - a.publications_sent == 1;
             }),
             5000);
    for (int i = 0; i < 3; i++) {
        node_down(&n[i], false);
    }
}
