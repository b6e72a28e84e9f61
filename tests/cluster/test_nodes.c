/*
 * Tests for the cluster with systems and transports attached, against a
 * real etcd, several nodes in this process: links follow membership (no
 * static peers), UNREACHABLE when a link fails while the lease lives,
 * actors subscribed to membership events, global names (one winner, the
 * local cache, gone with the actor or the node), and fencing that makes the
 * node a new incarnation whose old actors other nodes can no longer reach.
 */
#include <criterion/criterion.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <plexus/cluster.h>
#include <plexus/plexus.h>
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
    snprintf(tdir, sizeof tdir, "/tmp/pxt-nodes-XXXXXX");
    cr_assert_not_null(mkdtemp(tdir));
}

static void teardown(void) {
    pxt_etcd_stop(&etcd);
    pxt_procs_kill_all();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tdir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(cluster_nodes, .init = setup, .fini = teardown, .timeout = 120);

typedef struct tnode {
    char name[16];
    char addr[160];
    px_identity id;
    px_system *sys;
    px_transport *t;
    px_cluster *c;
} tnode;

static uint32_t g_ttl = 3;

static void node_transport(tnode *n) {
    px_transport_cfg tc;
    px_transport_cfg_init(&tc);
    tc.listen = n->addr;
    tc.identity = &n->id;
    tc.heartbeat_ms = 50;
    tc.unreachable_ms = 500;
    tc.reconnect_max_ms = 200;
    cr_assert_eq(px_secret_from_bytes(SECRET, strlen(SECRET), tc.cluster_key), PX_OK);
    px_err e = px_transport_start(n->sys, &tc, &n->t);
    cr_assert_eq(e, PX_OK, "transport %s: %s", n->name, px_errname(e));
}

static void node_cluster(tnode *n, bool attach_transport) {
    px_cluster_cfg cc;
    px_cluster_cfg_init(&cc);
    cc.cluster = "t";
    cc.sys = n->sys;
    if (attach_transport) {
        cc.transport = n->t;
    } else { /* registered with the transport's address and key, links not followed */
        cc.address = n->addr;
        cc.pk = n->id.pk;
    }
    cc.ttl_s = g_ttl;
    cc.etcd.endpoints = etcd.url;
    cc.etcd.request_timeout_ms = 1000;
    cc.etcd.connect_timeout_ms = 300;
    cc.etcd.watch_retry_max_ms = 200;
    cc.etcd.log = pxt_etcd_quiet_log;
    char err[200] = "";
    px_err rv = px_cluster_start(&cc, &n->c, err, sizeof err);
    cr_assert_eq(rv, PX_OK, "%s: %s (%s)", n->name, px_errname(rv), err);
}

/* Log lines that say a name's delete is being retried (every node's log
 * passes here; shown too when PXT_LOG is set). */
static _Atomic int g_delete_retries, g_name_waits;

/* The mesh's registration for a child it started here (cluster/src/names.c,
 * internal): asynchronous, and it waits for a name that is held. */
px_err pxc_register_global_async(px_cluster *c, const char *name, px_ref ref);

static void count_sink(void *arg, px_log_level level, const char *node, const char *line) {
    if (strstr(line, "did not take the delete") != NULL) {
        atomic_fetch_add(&g_delete_retries, 1);
    }
    if (strstr(line, "takes it once it is free") != NULL) {
        atomic_fetch_add(&g_name_waits, 1);
    }
    if (getenv("PXT_LOG") != NULL) {
        px_log_stderr(arg, level, node, line);
    }
}

/* A node: system, transport (ipc, in tdir) and cluster. */
static void node_up(tnode *n, const char *name, bool attach_transport) {
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
    cfg.log_sink = count_sink;
    cr_assert_eq(px_system_alloc(&n->sys, &cfg), PX_OK);
    node_transport(n);
    node_cluster(n, attach_transport);
}

static void node_down(tnode *n, bool leave) {
    px_cluster_stop(n->c, leave);
    n->c = NULL;
    px_transport_stop(n->t);
    n->t = NULL;
    px_system_shutdown(n->sys);
    px_system_free(n->sys);
    n->sys = NULL;
}

static px_member_state state_of(tnode *n, const char *name) {
    px_member m;
    return px_cluster_member(n->c, name, &m) == PX_OK ? m.state : 0;
}

static px_link_state link_of(tnode *n, const char *peer) {
    px_link_state st = PX_LINK_CONNECTING;
    return px_transport_peer_state(n->t, peer, &st, NULL) == PX_OK ? st : (px_link_state)-1;
}

static bool audit_has(px_cluster *c, const char *name, px_member_state st, const char *cause) {
    px_member_event ev[128];
    size_t n = 0;
    px_cluster_audit(c, ev, 128, &n);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(ev[i].m.name, name) == 0 && ev[i].m.state == st &&
            strstr(ev[i].cause, cause) != NULL) {
            return true;
        }
    }
    return false;
}

static px_err ask_echo(tnode *from, px_ref to, uint64_t v) {
    px_msg *q = NULL, *r = NULL;
    cr_assert_eq(px_msg_u64(&q, 1, v), PX_OK);
    px_err e = px_system_ask(from->sys, to, &q, 2000, &r);
    px_msg_free(q);
    if (e == PX_OK) {
        cr_assert_eq(px_msg_get_u64(r), 2 * v);
    }
    px_msg_free(r);
    return e;
}

Test(cluster_nodes, links_follow_membership_without_static_peers) {
    tnode n[3];
    const char *names[] = {"alpha", "beta", "gamma"};
    for (int i = 0; i < 3; i++) {
        node_up(&n[i], names[i], true);
    }
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 3; j++) {
            PXT_AWAIT(state_of(&n[i], names[j]) == PX_MEMBER_UP, 10000);
        }
    }
    cr_assert_eq(link_of(&n[0], "beta"), PX_LINK_UP, "membership opened the link");
    cr_assert(audit_has(n[0].c, "beta", PX_MEMBER_UP, "link up"));
    px_member self;
    cr_assert_eq(px_cluster_member(n[0].c, "alpha", &self), PX_OK);
    cr_assert_eq(self.node_inc, px_system_node_inc(n[0].sys), "the system's incarnation");
    cr_assert_str_eq(self.address, px_transport_address(n[0].t), "the transport's address");

    px_ref echo = PX_REF_NIL;
    cr_assert_eq(px_system_spawn(n[2].sys, pxt_echo_behavior(), NULL, NULL, &echo), PX_OK);
    cr_assert_eq(ask_echo(&n[0], echo, 21), PX_OK, "alpha -> gamma across a link it opened");
    cr_assert_eq(ask_echo(&n[1], echo, 5), PX_OK);

    /* gamma leaves: the others drop their links to it. */
    node_down(&n[2], true);
    for (int i = 0; i < 2; i++) {
        PXT_AWAIT(state_of(&n[i], "gamma") == PX_MEMBER_LEFT, 3000);
        PXT_AWAIT(link_of(&n[i], "gamma") == PX_LINK_GONE, 3000);
    }
    px_msg *x = NULL;
    cr_assert_eq(px_msg_u64(&x, 1, 1), PX_OK);
    cr_assert_eq(px_system_send(n[0].sys, echo, &x), PX_EUNREACHABLE);
    px_msg_free(x);

    /* gamma comes back (a new process: a new incarnation): linked again. */
    node_up(&n[2], "gamma", true);
    for (int i = 0; i < 2; i++) {
        PXT_AWAIT(state_of(&n[i], "gamma") == PX_MEMBER_UP, 10000);
    }
    cr_assert_eq(px_system_spawn(n[2].sys, pxt_echo_behavior(), NULL, NULL, &echo), PX_OK);
    cr_assert_eq(ask_echo(&n[0], echo, 7), PX_OK);
    for (int i = 0; i < 3; i++) {
        node_down(&n[i], true);
    }
}

Test(cluster_nodes, a_member_whose_link_fails_is_unreachable_not_down) {
    tnode a, b;
    node_up(&a, "alpha", true);
    node_up(&b, "beta", false); /* beta registers its address; its transport stops below */
    px_peer pa = {.name = a.name, .address = a.addr};
    memcpy(pa.pk, a.id.pk, sizeof pa.pk);
    cr_assert_eq(px_transport_peer_add(b.t, &pa), PX_OK, "beta knows alpha by hand");
    PXT_AWAIT(state_of(&a, "beta") == PX_MEMBER_UP, 10000);
    /* beta's transport stops; its lease lives on. */
    px_transport_stop(b.t);
    b.t = NULL;
    PXT_AWAIT(state_of(&a, "beta") == PX_MEMBER_UNREACHABLE, 5000);
    cr_assert(audit_has(a.c, "beta", PX_MEMBER_UNREACHABLE, "lease alive"));
    px_cluster_health h;
    px_cluster_health_get(b.c, &h);
    cr_assert(h.registered, "beta still holds its lease");
    /* It comes back at the same address: UP again. */
    node_transport(&b);
    cr_assert_eq(px_transport_peer_add(b.t, &pa), PX_OK);
    PXT_AWAIT(state_of(&a, "beta") == PX_MEMBER_UP, 10000);
    cr_assert(audit_has(a.c, "beta", PX_MEMBER_UP, "link up again"));
    node_down(&b, true);
    node_down(&a, true);
}

/* --- a subscriber: keeps the MemberEvents it gets ----------------------- */

#define MAX_EV 64
typedef struct sub {
    pthread_mutex_t mu;
    int n;
    char name[MAX_EV][16];
    int state[MAX_EV], from[MAX_EV];
    uint32_t inc[MAX_EV];
} sub;

static px_err sub_receive(px_ctx *ctx, px_msg *m) {
    sub *s = px_state(ctx);
    if (!px_msg_is(m, &plexus__member_event__descriptor)) {
        return PX_OK;
    }
    const Plexus__MemberEvent *ev = (const Plexus__MemberEvent *)px_msg_pb(m);
    pthread_mutex_lock(&s->mu);
    if (s->n < MAX_EV) {
        snprintf(s->name[s->n], 16, "%s", ev->name);
        s->state[s->n] = ev->state;
        s->from[s->n] = ev->from;
        s->inc[s->n] = ev->node_inc;
        s->n++;
    }
    pthread_mutex_unlock(&s->mu);
    return PX_OK;
}

static const px_behavior sub_b = {.name = "t.sub", .init = pxt_init_ptr_state,
                                  .receive = sub_receive};

/* The index of the first event about `name` in state st after index from, or -1. */
static int sub_find(sub *s, const char *name, int st, int from) {
    pthread_mutex_lock(&s->mu);
    int at = -1;
    for (int i = from; i < s->n && at < 0; i++) {
        if (strcmp(s->name[i], name) == 0 && s->state[i] == st) {
            at = i;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return at;
}

Test(cluster_nodes, actors_subscribe_to_membership_events) {
    tnode a, b;
    node_up(&a, "alpha", true);
    sub *s = calloc(1, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    px_ref r = pxt_spawn(a.sys, &sub_b, s, NULL);
    cr_assert_eq(px_cluster_subscribe(a.c, r), PX_OK);
    cr_assert_eq(px_cluster_subscribe(a.c, r), PX_OK, "twice is a no-op");
    /* First, the current state: alpha itself, up. */
    PXT_AWAIT(sub_find(s, "alpha", PLEXUS__MEMBER_STATE__MEMBER_UP, 0) == 0, 3000);
    cr_assert_eq(s->from[0], 0, "a current-state event has no 'from'");
    /* Then beta: joining, then up once the link is. */
    node_up(&b, "beta", true);
    PXT_AWAIT(sub_find(s, "beta", PLEXUS__MEMBER_STATE__MEMBER_UP, 0) > 0, 10000);
    int j = sub_find(s, "beta", PLEXUS__MEMBER_STATE__MEMBER_JOINING, 0);
    cr_assert(j > 0 && j < sub_find(s, "beta", PLEXUS__MEMBER_STATE__MEMBER_UP, 0),
              "joining comes before up");
    cr_assert_eq(s->inc[j], px_system_node_inc(b.sys));
    node_down(&b, true);
    PXT_AWAIT(sub_find(s, "beta", PLEXUS__MEMBER_STATE__MEMBER_LEFT, 0) > 0, 3000);

    /* A subscriber that stops is dropped (and nothing crashes). */
    cr_assert_eq(px_stop(a.sys, r), PX_OK);
    PXT_AWAIT(!px_is_alive(a.sys, r), 3000);
    cr_assert_eq(px_cluster_subscribe(a.c, r), PX_EINVAL, "a dead actor cannot subscribe");
    node_up(&b, "beta", true);
    PXT_AWAIT(state_of(&a, "beta") == PX_MEMBER_UP, 10000);
    cr_assert_eq(px_cluster_unsubscribe(a.c, r), PX_ENOENT, "it was dropped");
    node_down(&b, true);
    node_down(&a, true);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* --- global names ---------------------------------------------------------- */

typedef struct racer {
    tnode *n;
    px_ref ref, owner;
    px_err rv;
} racer;

static void *race(void *arg) {
    racer *r = arg;
    r->rv = px_register_global(r->n->c, "svc.lock", r->ref, &r->owner);
    return NULL;
}

Test(cluster_nodes, a_global_name_has_one_owner_and_goes_with_its_actor_or_node) {
    tnode a, b;
    node_up(&a, "alpha", true);
    node_up(&b, "beta", true);
    racer rs[2] = {{.n = &a}, {.n = &b}};
    cr_assert_eq(px_system_spawn(a.sys, pxt_echo_behavior(), NULL, NULL, &rs[0].ref), PX_OK);
    cr_assert_eq(px_system_spawn(b.sys, pxt_echo_behavior(), NULL, NULL, &rs[1].ref), PX_OK);
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(pthread_create(&th[i], NULL, race, &rs[i]), 0);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
    }
    int win = rs[0].rv == PX_OK ? 0 : 1, lose = 1 - win;
    cr_assert_eq(rs[win].rv, PX_OK, "%s / %s", px_errname(rs[0].rv), px_errname(rs[1].rv));
    cr_assert_eq(rs[lose].rv, PX_EEXIST, "exactly one wins");
    cr_assert(px_ref_eq(rs[lose].owner, rs[win].ref), "the loser learns the winner's ref");

    /* Both nodes answer whereis from their copy; the winner's at once. */
    PXT_AWAIT(state_of(&a, "beta") == PX_MEMBER_UP && state_of(&b, "alpha") == PX_MEMBER_UP, 10000);
    px_ref got = PX_REF_NIL;
    cr_assert_eq(px_whereis_global(rs[win].n->c, "svc.lock", &got), PX_OK);
    cr_assert(px_ref_eq(got, rs[win].ref));
    PXT_AWAIT(px_whereis_global(rs[lose].n->c, "svc.lock", &got) == PX_OK &&
              px_ref_eq(got, rs[win].ref),
          3000);
    cr_assert_eq(ask_echo(rs[lose].n, got, 4), PX_OK, "the ref works from the other node");

    /* Bad calls. */
    cr_assert_eq(px_whereis_global(a.c, "nobody", &got), PX_ENOENT);
    cr_assert_eq(px_register_global(a.c, "", rs[0].ref, NULL), PX_EINVAL);
    cr_assert_eq(px_register_global(a.c, "bad/name", rs[0].ref, NULL), PX_EINVAL);
    cr_assert_eq(px_register_global(a.c, "x", rs[1].ref, NULL), PX_EINVAL, "not a local actor");
    cr_assert_eq(px_unregister_global(rs[lose].n->c, "svc.lock"), PX_ENOENT, "not its name");

    /* The owner stops: the name is deleted, everywhere (the bound covers
     * an etcd that stalls meanwhile: the delete is retried). */
    cr_assert_eq(px_stop(rs[win].n->sys, rs[win].ref), PX_OK);
    PXT_AWAIT(px_whereis_global(a.c, "svc.lock", &got) == PX_ENOENT &&
              px_whereis_global(b.c, "svc.lock", &got) == PX_ENOENT,
          10000);
    /* Now the other may take it; unregister gives it back. */
    cr_assert_eq(px_register_global(rs[lose].n->c, "svc.lock", rs[lose].ref, NULL), PX_OK);
    cr_assert_eq(px_unregister_global(rs[lose].n->c, "svc.lock"), PX_OK);
    PXT_AWAIT(px_whereis_global(rs[win].n->c, "svc.lock", &got) == PX_ENOENT, 3000);

    /* A node's names go with the node: beta's name vanishes when it leaves. */
    px_ref bref = PX_REF_NIL;
    cr_assert_eq(px_system_spawn(b.sys, pxt_echo_behavior(), NULL, NULL, &bref), PX_OK);
    cr_assert_eq(px_register_global(b.c, "beta.svc", bref, NULL), PX_OK);
    PXT_AWAIT(px_whereis_global(a.c, "beta.svc", &got) == PX_OK, 3000);
    node_down(&b, true);
    PXT_AWAIT(px_whereis_global(a.c, "beta.svc", &got) == PX_ENOENT, 3000);
    node_down(&a, true);
}

/* etcd stalls (short of the TTL: nobody fences) just as a named actor
 * stops: the delete fails for now, and the keeper tries it again until
 * etcd answers — the name does not outlive its actor. */
Test(cluster_nodes, a_name_goes_with_its_actor_even_if_etcd_stalls_as_it_stops) {
    tnode a, b;
    node_up(&a, "alpha", true);
    node_up(&b, "beta", true);
    px_ref r = PX_REF_NIL, got = PX_REF_NIL;
    cr_assert_eq(px_system_spawn(a.sys, pxt_echo_behavior(), NULL, NULL, &r), PX_OK);
    cr_assert_eq(px_register_global(a.c, "svc.stall", r, NULL), PX_OK);
    PXT_AWAIT(px_whereis_global(b.c, "svc.stall", &got) == PX_OK && px_ref_eq(got, r), 5000);

    cr_assert_eq(px_system_set_log_level(a.sys, PX_LOG_WARN), PX_OK);
    cr_assert_eq(pxt_etcd_pause(&etcd), 0);
    cr_assert_eq(px_stop(a.sys, r), PX_OK);
    /* the owner forgets it at once; etcd has not heard yet */
    PXT_AWAIT(px_whereis_global(a.c, "svc.stall", &got) == PX_ENOENT, 3000);
    /* the first delete times out (1 s) and is to be retried */
    PXT_AWAIT(atomic_load(&g_delete_retries) == 1, 2500);
    cr_assert_eq(px_whereis_global(b.c, "svc.stall", &got), PX_OK, "etcd has not heard");
    cr_assert_eq(pxt_etcd_resume(&etcd), 0);
    PXT_AWAIT(px_whereis_global(b.c, "svc.stall", &got) == PX_ENOENT, 5000);
    px_cluster_health h;
    px_cluster_health_get(a.c, &h);
    cr_assert_eq(h.fences, 0, "the stall stayed short of the TTL");
    /* and etcd itself no longer has it: beta may take the name */
    px_ref br = PX_REF_NIL;
    cr_assert_eq(px_system_spawn(b.sys, pxt_echo_behavior(), NULL, NULL, &br), PX_OK);
    cr_assert_eq(px_register_global(b.c, "svc.stall", br, NULL), PX_OK);
    node_down(&b, true);
    node_down(&a, true);
}

/* An echo actor on n, registered globally as name. */
static px_ref named_echo(tnode *n, const char *name) {
    px_ref r = PX_REF_NIL;
    cr_assert_eq(px_system_spawn(n->sys, pxt_echo_behavior(), NULL, NULL, &r), PX_OK);
    cr_assert_eq(px_register_global(n->c, name, r, NULL), PX_OK, "%s", name);
    return r;
}

/* Test aids (cluster/src/names.c, internal): hold the names watch (its
 * events are kept, then applied on release), and count what it holds. */
void pxc_names_hold(px_cluster *c);
void pxc_names_rele(px_cluster *c);
size_t pxc_names_held(px_cluster *c);
void pxc_names_kick(px_cluster *c);
void pxc_names_fenced(px_cluster *c); /* forgets this node's names, as a fence does */

/* n's names watch held, an echo actor on n registered as name: the owner
 * has the name at once, and the PUT waits in the held watch. */
static px_ref named_echo_held(tnode *n, const char *name) {
    px_ref r = PX_REF_NIL, got = PX_REF_NIL;
    cr_assert_eq(px_system_spawn(n->sys, pxt_echo_behavior(), NULL, NULL, &r), PX_OK);
    pxc_names_hold(n->c);
    cr_assert_eq(px_register_global(n->c, name, r, NULL), PX_OK);
    cr_assert_eq(px_whereis_global(n->c, name, &got), PX_OK, "the owner has it at once");
    PXT_AWAIT(pxc_names_held(n->c) >= 1, 5000); /* the PUT reached the watch: held */
    return r;
}

/* The owner's names watch lags (held): the name's PUT comes after the
 * owner forgot the name (its actor stopped while etcd was paused, so the
 * DELETE is not there yet). The late PUT must not bring the name back:
 * whereis on the owner answers ENOENT from the stop on. */
Test(cluster_nodes, a_name_forgotten_before_the_watch_showed_it_stays_forgotten) {
    tnode a, b;
    node_up(&a, "alpha", true);
    node_up(&b, "beta", true);
    px_ref r = named_echo_held(&a, "svc.late"), got = PX_REF_NIL;
    PXT_AWAIT(px_whereis_global(b.c, "svc.late", &got) == PX_OK, 5000);

    cr_assert_eq(px_system_set_log_level(a.sys, PX_LOG_WARN), PX_OK);
    cr_assert_eq(pxt_etcd_pause(&etcd), 0);
    cr_assert_eq(px_stop(a.sys, r), PX_OK);
    PXT_AWAIT(px_whereis_global(a.c, "svc.late", &got) == PX_ENOENT, 3000);
    pxc_names_rele(a.c); /* the late PUT */
    cr_assert_eq(px_whereis_global(a.c, "svc.late", &got), PX_ENOENT,
                 "the late PUT brought the forgotten name back");
    cr_assert_eq(pxt_etcd_resume(&etcd), 0);
    /* the keeper's delete reaches etcd (retried after the pause) */
    PXT_AWAIT(px_whereis_global(b.c, "svc.late", &got) == PX_ENOENT, 5000);
    cr_assert_eq(px_whereis_global(a.c, "svc.late", &got), PX_ENOENT);
    px_cluster_health h;
    px_cluster_health_get(a.c, &h);
    cr_assert_eq(h.fences, 0, "the pause stayed short of the TTL");
    node_down(&b, true);
    node_down(&a, true);
}

/* A PUT that etcd still has comes back in a full re-read too (the names
 * watch re-reads everything when its next revision was compacted): a name
 * this node forgot stays forgotten then as well. Here the names are
 * forgotten as a fence forgets them while etcd keeps the key (the lease
 * lives on), the late PUT is buried, then etcd is compacted past it and
 * the watch reconnects: its re-read still has the key. beta's new name,
 * seen on alpha only through the watch, shows the re-read is over. */
Test(cluster_nodes, a_forgotten_name_stays_forgotten_through_a_full_re_read) {
    tnode a, b;
    node_up(&a, "alpha", true);
    node_up(&b, "beta", true);
    px_ref got = PX_REF_NIL;
    (void)named_echo_held(&a, "svc.zombie");
    pxc_names_fenced(a.c);
    cr_assert_eq(px_whereis_global(a.c, "svc.zombie", &got), PX_ENOENT);
    pxc_names_rele(a.c);
    cr_assert_eq(px_whereis_global(a.c, "svc.zombie", &got), PX_ENOENT, "the late PUT");
    PXT_AWAIT(px_whereis_global(b.c, "svc.zombie", &got) == PX_OK, 5000); /* etcd has it */

    char res[512], body[128];
    for (int i = 0; i < 2; i++) { /* two revisions past the watch's next one */
        cr_assert_eq(pxt_etcd_post(etcd.url, "/v3/kv/put", "{\"key\":\"eHh4\",\"value\":\"eA==\"}",
                                   res, sizeof res),
                     200, "%s", res); /* "xxx", outside the names */
    }
    long long now = 0;
    const char *h = strstr(res, "\"revision\":\"");
    cr_assert(h != NULL && sscanf(h, "\"revision\":\"%lld\"", &now) == 1, "%s", res);
    snprintf(body, sizeof body, "{\"revision\":\"%lld\",\"physical\":true}", now);
    cr_assert_eq(pxt_etcd_post(etcd.url, "/v3/kv/compaction", body, res, sizeof res), 200, "%s",
                 res);
    pxc_names_kick(a.c);
    (void)named_echo(&b, "svc.marker");
    PXT_AWAIT(px_whereis_global(a.c, "svc.marker", &got) == PX_OK, 5000);
    cr_assert_eq(px_whereis_global(a.c, "svc.zombie", &got), PX_ENOENT,
                 "the full re-read brought the forgotten name back");
    node_down(&b, true);
    node_down(&a, true);
}

/* The held events of one revision (a lease revoked with two names on it)
 * all apply when the watch is released. */
Test(cluster_nodes, a_released_watch_applies_every_event_of_a_revision) {
    tnode a, b;
    node_up(&a, "alpha", true);
    node_up(&b, "beta", true);
    px_ref got = PX_REF_NIL;
    (void)named_echo(&b, "m.one");
    (void)named_echo(&b, "m.two");
    PXT_AWAIT(px_whereis_global(a.c, "m.one", &got) == PX_OK &&
                  px_whereis_global(a.c, "m.two", &got) == PX_OK,
              5000);
    pxc_names_hold(a.c);
    node_down(&b, true); /* leaves: its lease is revoked, both names go at once */
    PXT_AWAIT(pxc_names_held(a.c) >= 2, 5000);
    pxc_names_rele(a.c);
    cr_assert_eq(px_whereis_global(a.c, "m.one", &got), PX_ENOENT);
    cr_assert_eq(px_whereis_global(a.c, "m.two", &got), PX_ENOENT);
    node_down(&a, true);
}

/* A failover's registration (the mesh's, for a child started on another
 * node) may find the name still held by the instance it replaces: it
 * waits, and takes the name as soon as that one's is deleted. */
Test(cluster_nodes, a_failed_over_child_takes_its_name_once_the_old_holder_lets_go) {
    tnode a, b;
    node_up(&a, "alpha", true);
    node_up(&b, "beta", true);
    px_ref old = PX_REF_NIL, fresh = PX_REF_NIL, got = PX_REF_NIL;
    cr_assert_eq(px_system_spawn(a.sys, pxt_echo_behavior(), NULL, NULL, &old), PX_OK);
    cr_assert_eq(px_register_global(a.c, "svc.move", old, NULL), PX_OK);
    PXT_AWAIT(px_whereis_global(b.c, "svc.move", &got) == PX_OK && px_ref_eq(got, old), 5000);

    cr_assert_eq(px_system_set_log_level(b.sys, PX_LOG_WARN), PX_OK);
    cr_assert_eq(px_system_spawn(b.sys, pxt_echo_behavior(), NULL, NULL, &fresh), PX_OK);
    cr_assert_eq(pxc_register_global_async(b.c, "svc.move", fresh), PX_OK);
    PXT_AWAIT(atomic_load(&g_name_waits) == 1, 5000); /* held: it waits */
    cr_assert_eq(px_whereis_global(b.c, "svc.move", &got), PX_OK);
    cr_assert(px_ref_eq(got, old), "the old holder keeps it until it lets go");

    cr_assert_eq(px_stop(a.sys, old), PX_OK);
    PXT_AWAIT(px_whereis_global(a.c, "svc.move", &got) == PX_OK && px_ref_eq(got, fresh) &&
                  px_whereis_global(b.c, "svc.move", &got) == PX_OK && px_ref_eq(got, fresh),
              5000);
    /* the name leads to the new instance (once alpha's link to beta is up) */
    PXT_AWAIT(ask_echo(&a, fresh, 7) == PX_OK, 10000);
    /* and it is the new holder's like any other: it goes when it stops */
    cr_assert_eq(px_stop(b.sys, fresh), PX_OK);
    PXT_AWAIT(px_whereis_global(a.c, "svc.move", &got) == PX_ENOENT, 5000);
    node_down(&b, true);
    node_down(&a, true);
}

Test(cluster_nodes, a_fenced_node_becomes_a_new_incarnation_and_its_old_actors_are_cut_off) {
    g_ttl = 2;
    tnode a, b;
    node_up(&a, "alpha", true);
    node_up(&b, "beta", true);
    PXT_AWAIT(state_of(&a, "beta") == PX_MEMBER_UP && state_of(&b, "alpha") == PX_MEMBER_UP, 10000);
    sub *s = calloc(1, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    cr_assert_eq(px_cluster_subscribe(b.c, pxt_spawn(b.sys, &sub_b, s, NULL)), PX_OK);
    px_ref old_echo = PX_REF_NIL;
    cr_assert_eq(px_system_spawn(b.sys, pxt_echo_behavior(), NULL, NULL, &old_echo), PX_OK);
    cr_assert_eq(ask_echo(&a, old_echo, 1), PX_OK);
    uint32_t inc0 = px_system_node_inc(b.sys);

    /* etcd pauses past the TTL: both hold on (each hears the other is cut
     * off too); resumed, etcd expires the leases whose time passed, and
     * both fence themselves at their next keepalive and rejoin. */
    cr_assert_eq(pxt_etcd_pause(&etcd), 0);
    px_cluster_health h;
    PXT_AWAIT((px_cluster_health_get(b.c, &h), h.holding), 8000);
    cr_assert_eq(h.fences, 0);
    cr_assert_eq(pxt_etcd_resume(&etcd), 0);
    PXT_AWAIT((px_cluster_health_get(b.c, &h), h.fences > 0 && h.registered), 10000);
    uint32_t inc1 = px_system_node_inc(b.sys);
    cr_assert_neq(inc1, inc0, "beta is a new incarnation");
    cr_assert_eq(h.node_inc, inc1);
    /* Its actors were told. */
    PXT_AWAIT(sub_find(s, "beta", PLEXUS__MEMBER_STATE__MEMBER_FENCED, 0) >= 0, 3000);
    /* alpha sees the new incarnation up and links to it. */
    px_member m;
    PXT_AWAIT(px_cluster_member(a.c, "beta", &m) == PX_OK && m.node_inc == inc1 &&
              m.state == PX_MEMBER_UP,
          15000);
    /* The old actor lives on locally but is cut off: alpha's ask to it
     * fails; an actor of the new incarnation answers. */
    cr_assert(px_is_alive(b.sys, old_echo));
    cr_assert_neq(ask_echo(&a, old_echo, 2), PX_OK, "the old incarnation is unreachable");
    px_ref new_echo = PX_REF_NIL;
    cr_assert_eq(px_system_spawn(b.sys, pxt_echo_behavior(), NULL, NULL, &new_echo), PX_OK);
    cr_assert_eq(new_echo.node_inc, inc1);
    px_err e = PX_OK;
    PXT_AWAIT((e = ask_echo(&a, new_echo, 3)) == PX_OK, 5000);
    (void)e;
    cr_assert_eq(px_register_global(b.c, "old", old_echo, NULL), PX_EINVAL,
                 "an old actor cannot take a global name");
    node_down(&b, true);
    node_down(&a, true);
    pthread_mutex_destroy(&s->mu);
    free(s);
    g_ttl = 3;
}

Test(cluster_nodes, standalone_without_etcd_has_the_same_api) {
    tnode a, b;
    char url[sizeof etcd.url];
    memcpy(url, etcd.url, sizeof url);
    etcd.url[0] = '\0'; /* node_cluster reads it: no etcd configured */
    node_up(&a, "alpha", true);
    node_up(&b, "beta", true);
    memcpy(etcd.url, url, sizeof url);
    px_member m;
    cr_assert_eq(px_cluster_member(a.c, "alpha", &m), PX_OK);
    cr_assert_eq(m.state, PX_MEMBER_UP, "a standalone node is a member on its own");
    cr_assert(audit_has(a.c, "alpha", PX_MEMBER_UP, "standalone"));
    int64_t lease = -1, rev = -1;
    cr_assert_eq(px_cluster_token(a.c, &lease, &rev), PX_OK);
    cr_assert_eq(lease, 0, "no lease without etcd");
    /* Static peers are the members, as their links say. */
    px_peer pb = {.name = b.name, .address = b.addr}, pa = {.name = a.name, .address = a.addr};
    memcpy(pb.pk, b.id.pk, sizeof pb.pk);
    memcpy(pa.pk, a.id.pk, sizeof pa.pk);
    cr_assert_eq(px_transport_peer_add(a.t, &pb), PX_OK);
    cr_assert_eq(px_transport_peer_add(b.t, &pa), PX_OK);
    PXT_AWAIT(state_of(&a, "beta") == PX_MEMBER_UP, 10000);
    cr_assert_eq(px_cluster_member(a.c, "beta", &m), PX_OK);
    cr_assert_eq(m.node_inc, px_system_node_inc(b.sys));

    /* Names are this node's own: one owner, gone with the actor. */
    px_ref r1 = PX_REF_NIL, r2 = PX_REF_NIL, got = PX_REF_NIL, owner = PX_REF_NIL;
    cr_assert_eq(px_system_spawn(a.sys, pxt_echo_behavior(), NULL, NULL, &r1), PX_OK);
    cr_assert_eq(px_system_spawn(a.sys, pxt_echo_behavior(), NULL, NULL, &r2), PX_OK);
    cr_assert_eq(px_register_global(a.c, "svc", r1, NULL), PX_OK);
    cr_assert_eq(px_register_global(a.c, "svc", r2, &owner), PX_EEXIST);
    cr_assert(px_ref_eq(owner, r1));
    cr_assert_eq(px_whereis_global(a.c, "svc", &got), PX_OK);
    cr_assert(px_ref_eq(got, r1));
    cr_assert_eq(px_stop(a.sys, r1), PX_OK);
    PXT_AWAIT(px_whereis_global(a.c, "svc", &got) == PX_ENOENT, 3000);
    cr_assert_eq(px_register_global(a.c, "svc", r2, NULL), PX_OK);
    cr_assert_eq(px_unregister_global(a.c, "svc"), PX_OK);
    cr_assert_eq(px_whereis_global(a.c, "svc", &got), PX_ENOENT);
    node_down(&b, true);
    PXT_AWAIT(state_of(&a, "beta") == PX_MEMBER_UNREACHABLE, 5000);
    node_down(&a, true);
}
