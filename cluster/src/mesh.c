/*
 * mesh.c — remote refs, watches, spawns and supervision across nodes
 * (plexus/mesh.h). Core's half of cross-node supervision is core/src/
 * remote.c; this file carries it between nodes.
 *
 * Wire: system envelopes (proto SysOp) through px_transport_send_sys —
 * supervision on the CONTROL lane, Terminated on the NORMAL lane behind the
 * dying actor's last messages. A system envelope for this node arrives on a
 * transport thread with its locks held (px_sys_fn), so it is only copied
 * into a bytes message (tag = sysop) for the mesh's actor, "plexus.mesh",
 * which handles it in actor context — except a WATCH, which goes straight
 * to px_system_watch_for (it never calls the router, so it is safe there,
 * and it stays ahead of the watcher's later messages); envelopes for this
 * node itself take the same path without the transport.
 *
 * Topics: a node tells every member when it gets its first local subscriber
 * of a topic or loses its last (SYS_TOPIC), and sends all of its topics to
 * each member it sees come up; px_publish's router hook then sends one
 * SYS_PUBLISH per node that has subscribers, and the receiving node fans it
 * out locally (px_system_publish_local). A lost node's interests go with it.
 *
 * State (m->mtx, a leaf lock; nothing calls core or the transport while
 * holding it): open remote watches (watcher, target); proxies whose child
 * runs elsewhere (proxy, remote, host, node); starts awaiting a
 * SpawnReply (by corr); hosted children (host, proxy, parent). Node loss
 * (the actor receives the cluster's MemberEvents) walks these tables:
 * watches get Terminated(node down / fenced), proxies LOST, hosted children
 * of a lost parent are stopped. A tick (200 ms) applies the unreachable
 * policies.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <plexus/mesh.h>
#include <plexus/plexus.pb-c.h>

#include "cluster_int.h"

#define TICK_MS 200
#define CHILD_EV_LOST 100 /* ChildEvent.kind: the child's node stopped it */

typedef struct wat {
    px_ref watcher, target;
} wat;

typedef struct prox {
    px_ref proxy, remote, host;
    uint32_t node;
    uint32_t unreachable_ms;
} prox;

typedef struct pend {
    uint64_t corr;
    px_ref proxy;  /* nil for a blocking px_mesh_spawn */
    uint32_t node, node_inc; /* where the request went */
    uint32_t unreachable_ms;
    const char *global_name; /* borrowed for the send only */
    bool cancelled; /* the proxy gave up: stop what starts */
    bool done;
    px_err code;
    px_ref ref;
    char why[160];
} pend;

typedef struct interest {
    uint32_t node;
    char *topic;
} interest;

typedef struct hosted {
    px_ref host, child, proxy, parent;
    uint32_t unreachable_ms;
} hosted;

/* A SpawnReply the transport refused (the requester's node rejoined and our
 * link to it is reconnecting): tried again on the tick until its deadline,
 * then what it started is stopped. Only the mesh actor touches these. */
#define REPLY_RETRY_MS 5000
typedef struct rreply {
    px_ref to, child, host;
    uint64_t corr;
    int64_t deadline_ms;
} rreply;

/* The header of a system envelope handed to the mesh actor. */
typedef struct syshdr {
    px_ref to, from;
    uint64_t corr;
    char peer[64];
} syshdr;

struct px_mesh {
    px_system *sys;
    px_transport *tr;
    px_cluster *c;
    px_router inner;
    px_ref agent;
    uint32_t self;
    nng_mtx *mtx;
    nng_cv *cv;
    wat *w;
    size_t nw, capw;
    prox *p;
    size_t np, capp;
    pend **pd;
    size_t npd, cappd;
    hosted *h;
    size_t nh, caph;
    interest *ti;
    size_t nti, capti;
    rreply *rr_q; /* the mesh actor's own */
    size_t nrr, caprr;
    uint64_t next_corr;
    uint32_t rr;
    px_mesh_stats st;
    bool bad_logged;
};

#define GROW(arr, n, cap)                                                  \
    ((n) < (cap) || grow((void **)&(arr), &(cap), sizeof(*(arr))))

static bool grow(void **arr, size_t *cap, size_t elem) {
    size_t nc = *cap ? *cap * 2 : 16;
    void *na = realloc(*arr, nc * elem);
    if (na == NULL) {
        return false;
    }
    *arr = na;
    *cap = nc;
    return true;
}

/* ---- refs in protobuf ---- */

void px_ref_to_pb(px_ref r, ProtobufCMessage *pb) {
    Plexus__ActorRef *a = (Plexus__ActorRef *)pb;
    if (a != NULL) {
        a->node = r.node;
        a->node_inc = r.node_inc;
        a->id = r.id;
        a->inc = r.inc;
    }
}

px_ref px_ref_from_pb(const ProtobufCMessage *pb) {
    const Plexus__ActorRef *a = (const Plexus__ActorRef *)pb;
    if (a == NULL) {
        return PX_REF_NIL;
    }
    return (px_ref){.node = a->node, .node_inc = a->node_inc, .id = a->id, .inc = a->inc};
}

static px_ref ref_of(const Plexus__ActorRef *a) { return px_ref_from_pb(a ? &a->base : NULL); }

/* ---- sending system envelopes ---- */

/* Hands a system envelope to the mesh actor (from a peer, or from here). */
static px_err post_agent(px_mesh *m, px_ref to, px_ref from, uint64_t corr, uint32_t sysop,
                         const uint8_t *payload, size_t len, const char *peer) {
    uint8_t *buf = malloc(sizeof(syshdr) + len);
    if (buf == NULL) {
        return PX_ENOMEM;
    }
    syshdr h = {.to = to, .from = from, .corr = corr};
    snprintf(h.peer, sizeof(h.peer), "%s", peer);
    memcpy(buf, &h, sizeof(h));
    if (len > 0) {
        memcpy(buf + sizeof(h), payload, len);
    }
    px_msg *msg = NULL;
    px_err rv = px_msg_bytes_take(&msg, sysop, buf, sizeof(h) + len);
    if (rv != PX_OK) {
        free(buf);
        return rv;
    }
    rv = px_system_send(m->sys, m->agent, &msg);
    px_msg_free(msg);
    return rv;
}

static void on_sys(void *arg, const char *peer, px_ref to, px_ref from, uint64_t corr,
                   uint32_t sysop, const uint8_t *payload, size_t len) {
    px_mesh *m = arg;
    /* A watch is registered here, in the receive path, so it stays ahead of
     * what the watcher sends the target after it (same lane, same order);
     * the mesh actor only answers a watch of an actor that is not alive. */
    if ((sysop == PLEXUS__SYS_OP__SYS_WATCH || sysop == PLEXUS__SYS_OP__SYS_UNWATCH) &&
        px_system_watch_for(m->sys, to, from, sysop == PLEXUS__SYS_OP__SYS_WATCH) != PX_EDEAD) {
        return;
    }
    (void)post_agent(m, to, from, corr, sysop, payload, len, peer);
}

static px_err sys_to(px_mesh *m, px_ref to, px_ref from, uint64_t corr, uint32_t sysop,
                     const ProtobufCMessage *pb, int ordered) {
    if (to.node != m->self) {
        return px_transport_send_sys(m->tr, to, from, corr, sysop, pb, ordered);
    }
    size_t len = pb != NULL ? protobuf_c_message_get_packed_size(pb) : 0;
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL) {
        return PX_ENOMEM;
    }
    if (pb != NULL) {
        protobuf_c_message_pack(pb, buf);
    }
    px_err rv = post_agent(m, to, from, corr, sysop, buf, len, px_system_node_name(m->sys));
    free(buf);
    return rv;
}

static void pb_ref(Plexus__ActorRef *a, px_ref r) {
    plexus__actor_ref__init(a);
    px_ref_to_pb(r, &a->base);
}

static px_err send_directive(px_mesh *m, px_ref host, px_remote_op op, px_term_reason term,
                             px_err code) {
    Plexus__Directive d = PLEXUS__DIRECTIVE__INIT;
    d.directive = op;
    d.term = term;
    d.code = code;
    return sys_to(m, host, PX_REF_NIL, 0, PLEXUS__SYS_OP__SYS_DIRECTIVE, &d.base, 0);
}

static px_err send_child_event(px_mesh *m, px_ref proxy, px_ref host, px_ref child,
                               uint32_t kind, px_err code, const char *reason,
                               px_term_reason term) {
    Plexus__ActorRef cr, hr;
    pb_ref(&cr, child);
    pb_ref(&hr, host);
    Plexus__ChildEvent e = PLEXUS__CHILD_EVENT__INIT;
    e.kind = kind;
    e.child = &cr;
    e.host = &hr;
    e.code = code;
    e.reason = (char *)(uintptr_t)(reason ? reason : "");
    e.term = term;
    return sys_to(m, proxy, host, 0, PLEXUS__SYS_OP__SYS_CHILD_EVENT, &e.base, 0);
}

/* ---- members and placement ---- */

typedef struct cand {
    char name[PX_MEMBER_NAME_MAX];
    uint32_t id, inc;
    px_member_state state;
    int64_t since_ms;
    char *roles, *behs;
    uint64_t actors, depth;
    bool local;
    bool stale; /* our link reached another incarnation than etcd's: the one
                   registered is gone (fenced or restarted) */
} cand;

typedef struct cands {
    cand *v;
    size_t n, cap;
    uint32_t self;
    bool oom;
} cands;

static void cand_add(void *arg, const member *mb) {
    cands *cs = arg;
    if (cs->oom || !GROW(cs->v, cs->n, cs->cap)) {
        cs->oom = true;
        return;
    }
    cand *c = &cs->v[cs->n++];
    memset(c, 0, sizeof(*c));
    snprintf(c->name, sizeof(c->name), "%s", mb->m.name);
    c->id = mb->m.node_id;
    c->inc = mb->m.node_inc;
    c->state = mb->m.state;
    c->since_ms = mb->m.since_ms;
    c->roles = mb->roles ? strdup(mb->roles) : NULL;
    c->behs = mb->behaviors ? strdup(mb->behaviors) : NULL;
    c->actors = mb->actors;
    c->depth = mb->mailbox_depth;
    c->local = mb->m.node_id == cs->self;
    c->stale = !c->local && mb->link == PX_LINK_UP && mb->link_inc != 0 &&
               mb->link_inc != mb->m.node_inc;
}

static void cands_free(cands *cs) {
    for (size_t i = 0; i < cs->n; i++) {
        free(cs->v[i].roles);
        free(cs->v[i].behs);
    }
    free(cs->v);
}

/* A snapshot of the members (this node included: from the system when the
 * cluster has no entry for it yet, e.g. standalone). */
static void members(px_mesh *m, cands *cs) {
    memset(cs, 0, sizeof(*cs));
    cs->self = m->self;
    pxc_members_each(m->c, cand_add, cs);
    bool have_self = false;
    for (size_t i = 0; i < cs->n; i++) {
        if (cs->v[i].local) { /* ours: the system knows it before the view does */
            cs->v[i].inc = px_system_node_inc(m->sys);
            have_self = true;
        }
    }
    if (!have_self && !cs->oom && GROW(cs->v, cs->n, cs->cap)) {
        cand *c = &cs->v[cs->n++];
        memset(c, 0, sizeof(*c));
        snprintf(c->name, sizeof(c->name), "%s", px_system_node_name(m->sys));
        c->id = m->self;
        c->inc = px_system_node_inc(m->sys);
        c->state = PX_MEMBER_UP;
        c->local = true;
    }
}

static const cand *cand_by_id(const cands *cs, uint32_t id) {
    for (size_t i = 0; i < cs->n; i++) {
        if (cs->v[i].id == id) {
            return &cs->v[i];
        }
    }
    return NULL;
}

static bool has_name(const char *list, const char *name) {
    if (list == NULL) {
        return false;
    }
    char pat[192];
    snprintf(pat, sizeof(pat), "\n%s\n", name);
    return strstr(list, pat) != NULL;
}

static bool fenced(px_mesh *m) {
    px_cluster_health h;
    px_cluster_health_get(m->c, &h);
    return h.fenced;
}

/* May `c` run `behavior` now? */
static bool eligible(px_mesh *m, const cand *c, const char *behavior, bool *has_beh) {
    *has_beh = c->local ? px_behavior_lookup(m->sys, behavior) != NULL
                        : (c->behs == NULL || has_name(c->behs, behavior));
    if (c->local) {
        return !fenced(m) && *has_beh;
    }
    return c->state == PX_MEMBER_UP && !c->stale && *has_beh;
}

/* Picks a node for behavior by pl; *out is a copy of it. */
static px_err place(px_mesh *m, const px_placement *pl, const char *behavior, cand *out) {
    cands cs;
    members(m, &cs);
    if (cs.oom) {
        cands_free(&cs);
        return PX_ENOMEM;
    }
    cand **el = calloc(cs.n ? cs.n : 1, sizeof(*el));
    if (el == NULL) {
        cands_free(&cs);
        return PX_ENOMEM;
    }
    size_t n = 0;
    bool any_beh = false, named_seen = false;
    /* NODE names one; HERE is this node by name. */
    const char *want = pl->policy == PX_PLACE_NODE   ? pl->node
                       : pl->policy == PX_PLACE_HERE ? px_system_node_name(m->sys)
                                                     : NULL;
    for (size_t i = 0; i < cs.n; i++) {
        cand *c = &cs.v[i];
        bool hb;
        bool ok = eligible(m, c, behavior, &hb);
        if (want != NULL) {
            if (strcmp(c->name, want) != 0) {
                continue;
            }
            named_seen = true;
        } else if ((pl->exclude_self && c->local) ||
                   (pl->policy == PX_PLACE_ROLE && !has_name(c->roles, pl->role))) {
            continue;
        }
        if (c->local || c->state == PX_MEMBER_UP) {
            any_beh |= hb;
        }
        if (ok) {
            el[n++] = c;
        }
    }
    px_err rv = PX_OK;
    int pick = -1;
    if (n == 0) {
        /* an unknown node is unreachable; a behavior no candidate that is
         * up has is unknown; else the candidates are not up */
        rv = (want != NULL && !named_seen) ? PX_EUNREACHABLE
             : any_beh                     ? PX_EUNREACHABLE
                                           : PX_ENOENT;
    } else if (pl->policy == PX_PLACE_LEAST_LOADED) {
        uint32_t start = m->rr++;
        pick = (int)(start % n); /* ties go round: the scan starts at a new place */
        for (size_t k = 1; k < n; k++) {
            size_t i = (start + k) % n; /* ties go round */
            if (el[i]->actors + el[i]->depth < el[pick]->actors + el[pick]->depth) {
                pick = (int)i;
            }
        }
    } else if (pl->policy == PX_PLACE_FN) {
        px_place_cand *pc = calloc(n, sizeof(*pc));
        if (pc == NULL) {
            rv = PX_ENOMEM;
        } else {
            for (size_t i = 0; i < n; i++) {
                pc[i] = (px_place_cand){.node = el[i]->name, .actors = el[i]->actors,
                                        .mailbox_depth = el[i]->depth, .local = el[i]->local};
            }
            pick = pl->fn(pl->fn_arg, behavior, pc, n);
            if (pick < 0 || (size_t)pick >= n) {
                pick = -1;
                rv = PX_EUNREACHABLE;
            }
        }
        free(pc);
    } else {
        pick = (int)(m->rr++ % n); /* NODE (n = 1), ROUND_ROBIN, ROLE */
    }
    if (pick >= 0) {
        *out = *el[pick];
        out->roles = out->behs = NULL;
    }
    free(el);
    cands_free(&cs);
    return rv;
}

px_err px_mesh_place(px_mesh *m, const px_placement *pl, const char *behavior, char *node,
                     size_t node_len) {
    if (m == NULL || pl == NULL || behavior == NULL || node == NULL) {
        return PX_EINVAL;
    }
    cand c;
    px_err rv = place(m, pl, behavior, &c);
    if (rv == PX_OK) {
        snprintf(node, node_len, "%s", c.name);
    }
    return rv;
}

/* ---- the router ---- */

static px_err r_send(void *arg, px_ref to, px_msg *msg) {
    px_mesh *m = arg;
    if (px_msg_kind_of(msg) != PX_MSG_TERMINATED) {
        return m->inner.send(m->inner.arg, to, msg);
    }
    px_ref who;
    px_term_reason reason;
    px_err code;
    (void)px_msg_terminated(msg, &who, &reason, &code);
    Plexus__ActorRef wr;
    pb_ref(&wr, who);
    Plexus__Terminated t = PLEXUS__TERMINATED__INIT;
    t.who = &wr;
    t.reason = reason;
    t.code = code;
    px_err rv = sys_to(m, to, who, 0, PLEXUS__SYS_OP__SYS_TERMINATED, &t.base, 1);
    if (rv == PX_OK) {
        px_msg_free(msg);
    }
    return rv;
}

static void r_dropped(void *arg, px_ref to, px_ref sender, uint64_t corr) {
    px_mesh *m = arg;
    if (m->inner.dropped != NULL) {
        m->inner.dropped(m->inner.arg, to, sender, corr);
    }
}

static bool wat_take(px_mesh *m, px_ref watcher, px_ref target) {
    for (size_t i = 0; i < m->nw; i++) {
        if (px_ref_eq(m->w[i].watcher, watcher) && px_ref_eq(m->w[i].target, target)) {
            m->w[i] = m->w[--m->nw];
            return true;
        }
    }
    return false;
}

static px_err r_watch(void *arg, px_ref watcher, px_ref target, int on) {
    px_mesh *m = arg;
    if (!on) {
        nng_mtx_lock(m->mtx);
        (void)wat_take(m, watcher, target);
        nng_mtx_unlock(m->mtx);
        (void)sys_to(m, target, watcher, 0, PLEXUS__SYS_OP__SYS_UNWATCH, NULL, 1);
        return PX_OK;
    }
    nng_mtx_lock(m->mtx);
    bool ok = GROW(m->w, m->nw, m->capw);
    if (ok) {
        m->w[m->nw++] = (wat){watcher, target};
    }
    nng_mtx_unlock(m->mtx);
    if (!ok) {
        return PX_ENOMEM;
    }
    cands cs;
    members(m, &cs);
    const cand *c = cand_by_id(&cs, target.node);
    bool known = c != NULL && c->inc == target.node_inc &&
                 (c->state == PX_MEMBER_UP || c->state == PX_MEMBER_JOINING ||
                  c->state == PX_MEMBER_UNREACHABLE);
    bool newer = c != NULL && c->inc != target.node_inc && c->state != PX_MEMBER_DOWN &&
                 c->state != PX_MEMBER_LEFT;
    cands_free(&cs);
    if (known) {
        /* An unreachable link keeps the watch open: node down settles it. */
        (void)sys_to(m, target, watcher, 0, PLEXUS__SYS_OP__SYS_WATCH, NULL, 1);
        return PX_OK;
    }
    nng_mtx_lock(m->mtx);
    bool mine = wat_take(m, watcher, target);
    nng_mtx_unlock(m->mtx);
    if (mine) {
        (void)px_system_deliver_terminated(m->sys, watcher, target,
                                           newer ? PX_TERM_NODE_FENCED : PX_TERM_NODE_DOWN,
                                           newer ? PX_EFENCED : PX_ENODEDOWN);
    }
    return PX_OK;
}

static px_err r_stop(void *arg, px_ref target) {
    px_mesh *m = arg;
    return sys_to(m, target, PX_REF_NIL, 0, PLEXUS__SYS_OP__SYS_STOP, NULL, 0);
}

/* Packs a start argument into spec (arg_type + arg; freed by the caller
 * through *buf). */
static px_err pack_arg(const px_msg *arg, Plexus__ChildSpec *spec, uint8_t **buf) {
    *buf = NULL;
    if (arg == NULL) {
        return PX_OK;
    }
    if (px_msg_kind_of(arg) == PX_MSG_PROTO) {
        const ProtobufCMessage *pb = px_msg_pb(arg);
        size_t len = protobuf_c_message_get_packed_size(pb);
        if ((*buf = malloc(len ? len : 1)) == NULL) {
            return PX_ENOMEM;
        }
        protobuf_c_message_pack(pb, *buf);
        spec->arg_type = (char *)(uintptr_t)pb->descriptor->name;
        spec->arg.data = *buf;
        spec->arg.len = len;
        return PX_OK;
    }
    if (px_msg_kind_of(arg) == PX_MSG_BYTES) {
        size_t len;
        const void *d = px_msg_data(arg, &len);
        spec->arg.data = (uint8_t *)(uintptr_t)d;
        spec->arg.len = len;
        return PX_OK;
    }
    return PX_ETYPE;
}

/* Sends a SpawnRequest to node c; pending p (registered under corr). */
static px_err spawn_send(px_mesh *m, const cand *c, pend *p, px_ref from, const char *id,
                         const char *behavior, const px_msg *arg, const px_mailbox_opts *mb,
                         px_restart_type restart, px_ref parent) {
    Plexus__ChildSpec spec = PLEXUS__CHILD_SPEC__INIT;
    spec.id = (char *)(uintptr_t)(id ? id : "");
    spec.behavior = (char *)(uintptr_t)behavior;
    spec.restart = restart;
    if (mb != NULL) {
        spec.mailbox_capacity = mb->capacity;
        spec.mailbox_policy = mb->overflow;
    }
    uint8_t *abuf;
    px_err rv = pack_arg(arg, &spec, &abuf);
    if (rv != PX_OK) {
        return rv;
    }
    Plexus__ActorRef pr, xr;
    pb_ref(&pr, parent);
    pb_ref(&xr, p->proxy);
    Plexus__SpawnRequest req = PLEXUS__SPAWN_REQUEST__INIT;
    req.spec = &spec;
    req.parent = px_ref_is_nil(parent) ? NULL : &pr;
    req.proxy = px_ref_is_nil(p->proxy) ? NULL : &xr;
    req.unreachable_ms = p->unreachable_ms;
    req.global_name = (char *)(uintptr_t)(p->global_name ? p->global_name : "");
    p->global_name = NULL; /* the caller's: not kept past this call */
    nng_mtx_lock(m->mtx);
    p->corr = ++m->next_corr;
    p->node = c->id;
    p->node_inc = c->inc;
    bool ok = GROW(m->pd, m->npd, m->cappd);
    if (ok) {
        m->pd[m->npd++] = p;
        m->st.spawns_sent++;
    }
    nng_mtx_unlock(m->mtx);
    if (!ok) {
        free(abuf);
        return PX_ENOMEM;
    }
    px_ref to = {.node = c->id, .node_inc = c->inc};
    rv = sys_to(m, to, from, p->corr, PLEXUS__SYS_OP__SYS_SPAWN, &req.base, 0);
    free(abuf);
    if (rv != PX_OK) {
        nng_mtx_lock(m->mtx);
        for (size_t i = 0; i < m->npd; i++) {
            if (m->pd[i] == p) {
                m->pd[i] = m->pd[--m->npd];
                break;
            }
        }
        nng_mtx_unlock(m->mtx);
    }
    return rv;
}

static pend *pend_take(px_mesh *m, uint64_t corr) {
    for (size_t i = 0; i < m->npd; i++) {
        if (m->pd[i]->corr == corr) {
            pend *p = m->pd[i];
            m->pd[i] = m->pd[--m->npd];
            return p;
        }
    }
    return NULL;
}

static prox *prox_find(px_mesh *m, px_ref proxy) {
    for (size_t i = 0; i < m->np; i++) {
        if (px_ref_eq(m->p[i].proxy, proxy)) {
            return &m->p[i];
        }
    }
    return NULL;
}

static void prox_drop(px_mesh *m, px_ref proxy) {
    prox *x = prox_find(m, proxy);
    if (x != NULL) {
        *x = m->p[--m->np];
    }
}

static px_err r_proxy_op(void *arg, px_remote_op op, const px_proxy_info *i) {
    px_mesh *m = arg;
    switch (op) {
    case PX_REMOTE_START: {
        if (!px_ref_is_nil(i->host) && send_directive(m, i->host, PX_REMOTE_START, 0, PX_OK) ==
                                           PX_OK) {
            return PX_OK; /* a restart in place: ChildEvent STARTED answers */
        }
        if (px_system_node_inc(m->sys) != i->proxy.node_inc) {
            return PX_EFENCED; /* an earlier incarnation's tree: cut off */
        }
        cand c;
        px_err rv = place(m, i->placement, i->behavior, &c);
        if (rv != PX_OK) {
            return rv;
        }
        pend *p = calloc(1, sizeof(*p));
        if (p == NULL) {
            return PX_ENOMEM;
        }
        p->proxy = i->proxy;
        p->unreachable_ms = i->placement->unreachable_ms;
        p->global_name = i->placement->global_name;
        rv = spawn_send(m, &c, p, i->proxy, i->id, i->behavior, i->arg, &i->mailbox, i->restart,
                        i->parent);
        if (rv != PX_OK) {
            free(p);
        }
        return rv; /* p->global_name is not read after the send */
    }
    case PX_REMOTE_RESUME:
    case PX_REMOTE_RS_STOP:
        return send_directive(m, i->host, op, 0, PX_OK);
    case PX_REMOTE_STOP:
        nng_mtx_lock(m->mtx);
        prox_drop(m, i->proxy);
        for (size_t k = 0; k < m->npd; k++) {
            if (px_ref_eq(m->pd[k]->proxy, i->proxy)) {
                m->pd[k]->cancelled = true;
            }
        }
        nng_mtx_unlock(m->mtx);
        if (!px_ref_is_nil(i->host)) {
            (void)send_directive(m, i->host, PX_REMOTE_STOP, i->term, i->code);
        }
        return PX_OK;
    }
    return PX_EINVAL;
}

static void r_host_event(void *arg, const px_host_event *ev) {
    px_mesh *m = arg;
    if (ev->kind == PX_HOST_FAILED) {
        Plexus__ChildFailure fs[8];
        Plexus__ActorRef rs[8];
        size_t k = 0;
        for (const px_failure *f = ev->failure; f != NULL && k < 8; f = f->cause, k++) {
            plexus__child_failure__init(&fs[k]);
            pb_ref(&rs[k], f->child);
            fs[k].child = &rs[k];
            fs[k].id = (char *)(uintptr_t)(f->child_id ? f->child_id : "");
            fs[k].code = f->code;
            fs[k].reason = (char *)(uintptr_t)(f->reason ? f->reason : "");
            fs[k].origin = (char *)(uintptr_t)(f->origin_node ? f->origin_node : "");
            fs[k].time_ms = f->time_ms;
            fs[k].count_in_window = f->count_in_window;
            if (k > 0) {
                fs[k - 1].cause = &fs[k];
            }
        }
        if (k > 0) {
            (void)sys_to(m, ev->proxy, ev->host, 0, PLEXUS__SYS_OP__SYS_CHILD_FAILURE,
                         &fs[0].base, 0);
        }
        return;
    }
    if (ev->kind == PX_HOST_ENDED) {
        nng_mtx_lock(m->mtx);
        for (size_t i = 0; i < m->nh; i++) {
            if (px_ref_eq(m->h[i].host, ev->host)) {
                m->h[i] = m->h[--m->nh];
                break;
            }
        }
        nng_mtx_unlock(m->mtx);
    }
    (void)send_child_event(m, ev->proxy, ev->host, ev->child, ev->kind, ev->code, ev->reason,
                           ev->term);
}

static void bad_sys(px_mesh *m, const char *peer, uint32_t sysop, const char *what);

/* ---- topics ---- */

static px_err send_interest(px_mesh *m, uint32_t node, uint32_t inc, const char *topic, int on) {
    Plexus__TopicInterest ti = PLEXUS__TOPIC_INTEREST__INIT;
    ti.topic = (char *)(uintptr_t)topic;
    ti.on = on != 0;
    px_ref to = {.node = node, .node_inc = inc};
    return sys_to(m, to, PX_REF_NIL, 0, PLEXUS__SYS_OP__SYS_TOPIC, &ti.base, 1);
}

/* To every other member that is up (the others get it when they come up). */
static void r_topic_interest(void *arg, const char *topic, int on) {
    px_mesh *m = arg;
    cands cs;
    members(m, &cs);
    for (size_t i = 0; i < cs.n; i++) {
        const cand *c = &cs.v[i];
        if (!c->local && (c->state == PX_MEMBER_UP || c->state == PX_MEMBER_JOINING)) {
            (void)send_interest(m, c->id, c->inc, topic, on);
        }
    }
    cands_free(&cs);
}

static void r_publish(void *arg, const char *topic, const px_msg *msg) {
    px_mesh *m = arg;
    if (m->inner.publish != NULL) {
        m->inner.publish(m->inner.arg, topic, msg);
    }
    uint32_t nodes[64];
    size_t n = 0;
    nng_mtx_lock(m->mtx);
    for (size_t i = 0; i < m->nti && n < 64; i++) {
        if (strcmp(m->ti[i].topic, topic) == 0) {
            nodes[n++] = m->ti[i].node;
        }
    }
    nng_mtx_unlock(m->mtx);
    if (n == 0) {
        return;
    }
    Plexus__Publication pb = PLEXUS__PUBLICATION__INIT;
    pb.topic = (char *)(uintptr_t)topic;
    uint8_t *buf = NULL;
    if (px_msg_kind_of(msg) == PX_MSG_PROTO) {
        const ProtobufCMessage *p = px_msg_pb(msg);
        size_t len = protobuf_c_message_get_packed_size(p);
        if ((buf = malloc(len ? len : 1)) == NULL) {
            return;
        }
        protobuf_c_message_pack(p, buf);
        pb.type = (char *)(uintptr_t)p->descriptor->name;
        pb.payload.data = buf;
        pb.payload.len = len;
    } else if (px_msg_kind_of(msg) == PX_MSG_BYTES) {
        size_t len;
        pb.payload.data = (uint8_t *)(uintptr_t)px_msg_data(msg, &len);
        pb.payload.len = len;
        pb.tag = px_msg_tag(msg);
    } else {
        return;
    }
    cands cs;
    members(m, &cs);
    for (size_t i = 0; i < n; i++) {
        const cand *c = cand_by_id(&cs, nodes[i]);
        if (c != NULL) { /* one frame per subscribing node */
            px_ref to = {.node = c->id, .node_inc = c->inc};
            if (sys_to(m, to, px_msg_sender(msg), 0, PLEXUS__SYS_OP__SYS_PUBLISH, &pb.base, 1) ==
                PX_OK) {
                nng_mtx_lock(m->mtx);
                m->st.publications_sent++;
                nng_mtx_unlock(m->mtx);
            }
        }
    }
    cands_free(&cs);
    free(buf);
}

static void on_interest(px_mesh *m, const syshdr *h, const Plexus__TopicInterest *ti) {
    if (ti->topic == NULL || ti->topic[0] == '\0') {
        bad_sys(m, h->peer, PLEXUS__SYS_OP__SYS_TOPIC, "an empty topic");
        return;
    }
    uint32_t node = px_node_id(h->peer);
    nng_mtx_lock(m->mtx);
    size_t i = 0;
    while (i < m->nti && !(m->ti[i].node == node && strcmp(m->ti[i].topic, ti->topic) == 0)) {
        i++;
    }
    if (!ti->on && i < m->nti) {
        free(m->ti[i].topic);
        m->ti[i] = m->ti[--m->nti];
    } else if (ti->on && i == m->nti && GROW(m->ti, m->nti, m->capti)) {
        char *t = strdup(ti->topic);
        if (t != NULL) {
            m->ti[m->nti++] = (interest){node, t};
        }
    }
    nng_mtx_unlock(m->mtx);
}

static void on_publication(px_mesh *m, const syshdr *h, const Plexus__Publication *p) {
    px_msg *msg = NULL;
    if (p->topic == NULL || p->topic[0] == '\0') {
        bad_sys(m, h->peer, PLEXUS__SYS_OP__SYS_PUBLISH, "an empty topic");
        return;
    }
    if (p->type != NULL && p->type[0] != '\0') {
        const ProtobufCMessageDescriptor *d = px_type_lookup(m->sys, p->type);
        ProtobufCMessage *pb =
            d != NULL ? protobuf_c_message_unpack(d, NULL, p->payload.len, p->payload.data) : NULL;
        if (pb == NULL) {
            bad_sys(m, h->peer, PLEXUS__SYS_OP__SYS_PUBLISH,
                    d == NULL ? "a publication of a type this node does not know"
                              : "a publication that does not unpack");
            return;
        }
        if (px_msg_proto(&msg, pb, NULL) != PX_OK) {
            protobuf_c_message_free_unpacked(pb, NULL);
            return;
        }
    } else if (px_msg_bytes(&msg, p->tag, p->payload.data, p->payload.len) != PX_OK) {
        return;
    }
    nng_mtx_lock(m->mtx);
    m->st.publications_received++;
    nng_mtx_unlock(m->mtx);
    if (px_system_publish_local(m->sys, p->topic, &msg) != PX_OK) {
        px_msg_free(msg);
    }
}

typedef struct resync {
    px_mesh *m;
    uint32_t node, inc;
} resync;

static void resync_one(void *arg, const char *topic) {
    resync *r = arg;
    (void)send_interest(r->m, r->node, r->inc, topic, 1);
}

/* A member came up: it learns every topic this node has subscribers of. */
static void topics_to(px_mesh *m, uint32_t node, uint32_t inc) {
    resync r = {m, node, inc};
    (void)px_system_topics(m->sys, resync_one, &r);
}

/* A lost node's interests go with it. */
static void topics_forget(px_mesh *m, uint32_t node) {
    nng_mtx_lock(m->mtx);
    for (size_t i = 0; i < m->nti;) {
        if (m->ti[i].node == node) {
            free(m->ti[i].topic);
            m->ti[i] = m->ti[--m->nti];
        } else {
            i++;
        }
    }
    nng_mtx_unlock(m->mtx);
}

/* ---- the mesh actor: what other nodes sent ---- */

static void bad_sys(px_mesh *m, const char *peer, uint32_t sysop, const char *what) {
    nng_mtx_lock(m->mtx);
    m->st.bad_sys++;
    bool first = !m->bad_logged;
    m->bad_logged = true;
    nng_mtx_unlock(m->mtx);
    if (first) {
        px_log(m->sys, PX_LOG_WARN, "mesh: a malformed system envelope (op %u) from %s: %s; "
                                    "dropped (counted in bad_sys, logged once)",
               sysop, peer, what);
    }
}

static px_msg *arg_of(px_mesh *m, const Plexus__ChildSpec *s, px_err *err) {
    *err = PX_OK;
    if (s->arg_type != NULL && s->arg_type[0] != '\0') {
        const ProtobufCMessageDescriptor *d = px_type_lookup(m->sys, s->arg_type);
        if (d == NULL) {
            *err = PX_ETYPE;
            return NULL;
        }
        ProtobufCMessage *pb = protobuf_c_message_unpack(d, NULL, s->arg.len, s->arg.data);
        px_msg *a = NULL;
        if (pb == NULL) {
            *err = PX_EPROTO;
        } else if (px_msg_proto(&a, pb, NULL) != PX_OK) {
            protobuf_c_message_free_unpacked(pb, NULL);
            *err = PX_ENOMEM;
        }
        return a;
    }
    if (s->arg.len > 0) {
        px_msg *a = NULL;
        *err = px_msg_bytes(&a, 0, s->arg.data, s->arg.len);
        return a;
    }
    return NULL;
}

/* An actor started for a requester that never heard of it. */
static void stop_started(px_mesh *m, px_ref child, px_ref host) {
    if (!px_ref_is_nil(host)) {
        (void)px_system_host_apply(m->sys, host, PX_REMOTE_STOP, PX_TERM_STOPPED, PX_OK);
    } else {
        (void)px_stop(m->sys, child);
    }
}

/* Sends the SpawnReply for request `corr` of `to`: code and detail, and
 * on success the child (and its host, if any). sys_to's answer. */
static px_err send_spawn_reply(px_mesh *m, px_ref to, uint64_t corr, px_err code,
                               const char *detail, px_ref child, px_ref host) {
    Plexus__SpawnReply rep = PLEXUS__SPAWN_REPLY__INIT;
    Plexus__ActorRef cr, hr;
    rep.code = code;
    rep.detail = (char *)(uintptr_t)detail;
    rep.node = (char *)(uintptr_t)px_system_node_name(m->sys);
    if (code == PX_OK) {
        pb_ref(&cr, child);
        rep.child = &cr;
        if (!px_ref_is_nil(host)) {
            pb_ref(&hr, host);
            rep.host = &hr;
        }
    }
    return sys_to(m, to, PX_REF_NIL, corr, PLEXUS__SYS_OP__SYS_SPAWN_REPLY, &rep.base, 0);
}

static void on_spawn(px_mesh *m, const syshdr *h, const Plexus__SpawnRequest *req) {
    const Plexus__ChildSpec *s = req->spec;
    char why[224] = "";
    px_ref child = PX_REF_NIL, host = PX_REF_NIL;
    px_err rv = PX_OK;
    px_msg *a = NULL;
    uint32_t inc = px_system_node_inc(m->sys);
    if (h->to.node_inc != 0 && h->to.node_inc != inc) {
        /* meant for an incarnation of this node that is gone: the sender's
         * view is behind (this node fenced itself or restarted) */
        rv = PX_ENODEDOWN;
        snprintf(why, sizeof(why), "node %s is now incarnation %08x, not %08x",
                 px_system_node_name(m->sys), inc, h->to.node_inc);
    } else if (fenced(m)) {
        rv = PX_EFENCED;
        snprintf(why, sizeof(why), "node %s is fenced: no cluster work until it has registered again",
                 px_system_node_name(m->sys));
    } else if (s == NULL || s->behavior == NULL || s->behavior[0] == '\0') {
        rv = PX_EINVAL;
        snprintf(why, sizeof(why), "no behavior in the spawn request");
    } else if ((a = arg_of(m, s, &rv)), rv != PX_OK) {
        snprintf(why, sizeof(why), "start argument of type '%s' cannot be read on node %s: %s",
                 s->arg_type ? s->arg_type : "", px_system_node_name(m->sys), px_errname(rv));
    } else {
        px_mailbox_opts mb = {.capacity = s->mailbox_capacity,
                              .overflow = (px_overflow)s->mailbox_policy};
        const px_mailbox_opts *mbp = s->mailbox_capacity > 0 ? &mb : NULL;
        if (req->proxy != NULL) {
            px_hosted_spec hs = {.proxy = ref_of(req->proxy), .parent = ref_of(req->parent),
                                 .id = s->id ? s->id : "", .behavior = s->behavior,
                                 .mailbox = mbp, .restart = (px_restart_type)s->restart};
            rv = px_system_spawn_hosted(m->sys, &hs, &a, &host, &child, why, sizeof(why));
            if (rv == PX_OK && req->global_name != NULL && req->global_name[0] != '\0' &&
                pxc_register_global_async(m->c, req->global_name, child) != PX_OK) {
                px_log(m->sys, PX_LOG_WARN, "mesh: cannot register %s for a child started here",
                       req->global_name);
            }
            if (rv == PX_OK) {
                nng_mtx_lock(m->mtx);
                if (GROW(m->h, m->nh, m->caph)) {
                    m->h[m->nh++] = (hosted){host, child, hs.proxy, hs.parent,
                                             req->unreachable_ms};
                }
                nng_mtx_unlock(m->mtx);
            }
        } else {
            px_spawn_opts o = {.mailbox = mbp};
            rv = px_system_spawn_named(m->sys, s->behavior, &a, &o, &child);
            if (rv == PX_ENOENT) {
                snprintf(why, sizeof(why), "behavior '%s' is not registered on node %s",
                         s->behavior, px_system_node_name(m->sys));
            } else if (rv != PX_OK) {
                snprintf(why, sizeof(why), "spawn of '%s' failed on node %s: %s", s->behavior,
                         px_system_node_name(m->sys), px_strerror(rv));
            }
        }
    }
    px_msg_free(a);
    nng_mtx_lock(m->mtx);
    m->st.spawns_served++;
    nng_mtx_unlock(m->mtx);
    px_err sent = send_spawn_reply(m, h->from, h->corr, rv, why, child, host);
    if (sent != PX_OK && rv == PX_OK) {
        if (GROW(m->rr_q, m->nrr, m->caprr)) { /* answered on a later tick */
            m->rr_q[m->nrr++] =
                (rreply){.to = h->from, .child = child, .host = host, .corr = h->corr,
                         .deadline_ms = pxc_wall_ms() + REPLY_RETRY_MS};
        } else {
            stop_started(m, child, host);
        }
    }
}

/* Tries the refused SpawnReplies again; past the deadline, stops what they
 * started (nobody will ever know of it). */
static void replies_retry(px_mesh *m) {
    int64_t now = pxc_wall_ms();
    for (size_t i = 0; i < m->nrr;) {
        rreply *q = &m->rr_q[i];
        bool done = send_spawn_reply(m, q->to, q->corr, PX_OK, "", q->child, q->host) == PX_OK;
        if (!done && now >= q->deadline_ms) {
            stop_started(m, q->child, q->host);
            done = true;
        }
        if (done) {
            *q = m->rr_q[--m->nrr];
        } else {
            i++;
        }
    }
}

static void on_spawn_reply(px_mesh *m, const syshdr *h, const Plexus__SpawnReply *rep) {
    nng_mtx_lock(m->mtx);
    pend *p = pend_take(m, h->corr);
    nng_mtx_unlock(m->mtx);
    px_ref child = ref_of(rep->child), host = ref_of(rep->host);
    if (p == NULL) { /* given up on (timed out, node lost): what it started goes */
        uint32_t peer = px_node_id(h->peer); /* only what the replying node runs */
        if (rep->code == 0 && !px_ref_is_nil(host) && host.node == peer) {
            (void)send_directive(m, host, PX_REMOTE_STOP, PX_TERM_STOPPED, PX_OK);
        } else if (rep->code == 0 && px_ref_is_nil(host) && !px_ref_is_nil(child) &&
                   child.node == peer) {
            (void)px_stop(m->sys, child);
        }
        return;
    }
    const char *node = rep->node ? rep->node : h->peer;
    px_err code = rep->code < 0 && rep->code > -1000 ? (px_err)rep->code : PX_EPROTO;
    if (rep->code == 0 && px_ref_is_nil(child)) {
        code = PX_EPROTO;
    } else if (rep->code == 0) {
        code = PX_OK;
    }
    if (px_ref_is_nil(p->proxy)) { /* px_mesh_spawn waits */
        nng_mtx_lock(m->mtx);
        p->code = code;
        p->ref = child;
        snprintf(p->why, sizeof(p->why), "%s", rep->detail ? rep->detail : "");
        p->done = true;
        nng_cv_wake(m->cv);
        nng_mtx_unlock(m->mtx);
        return;
    }
    bool cancelled = p->cancelled;
    px_ref proxy = p->proxy;
    uint32_t um = p->unreachable_ms;
    free(p);
    if (code != PX_OK) {
        if (!cancelled) {
            px_proxy_event ev = {.kind = PX_PROXY_START_FAILED, .code = code,
                                 .reason = rep->detail ? rep->detail : ""};
            (void)px_system_proxy_event(m->sys, proxy, &ev);
        }
        return;
    }
    px_proxy_event ev = {.kind = PX_PROXY_STARTED, .remote = child, .host = host, .node = node};
    if (cancelled || px_system_proxy_event(m->sys, proxy, &ev) != PX_OK) {
        (void)send_directive(m, host, PX_REMOTE_STOP, PX_TERM_STOPPED, PX_OK);
        return;
    }
    nng_mtx_lock(m->mtx);
    prox *x = prox_find(m, proxy);
    if (x == NULL && GROW(m->p, m->np, m->capp)) {
        x = &m->p[m->np++];
    }
    if (x != NULL) {
        *x = (prox){proxy, child, host, child.node, um};
    }
    nng_mtx_unlock(m->mtx);
}

static void on_child_event(px_mesh *m, const syshdr *h, const Plexus__ChildEvent *e) {
    px_ref child = ref_of(e->child), host = ref_of(e->host);
    px_err code = e->code < 0 && e->code > -1000 ? (px_err)e->code : PX_EPROTO;
    if (e->code == 0) {
        code = PX_OK;
    }
    px_proxy_event ev = {.remote = child, .host = host, .node = h->peer, .code = code,
                         .reason = e->reason ? e->reason : "", .term = e->term};
    bool drop = false;
    switch (e->kind) {
    case PX_HOST_RS_STOPPED:
        ev.kind = PX_PROXY_RS_STOPPED;
        break;
    case PX_HOST_STARTED:
        ev.kind = code == PX_OK ? PX_PROXY_STARTED : PX_PROXY_START_FAILED;
        break;
    case PX_HOST_ENDED:
        drop = true;
        if (e->term == PX_TERM_NODE_DOWN || e->term == PX_TERM_NODE_FENCED) {
            /* its node is shutting down or fenced itself: fail over */
            bool down = e->term == PX_TERM_NODE_DOWN;
            ev.kind = PX_PROXY_LOST;
            ev.code = down ? PX_ENODEDOWN : PX_EFENCED;
            ev.reason = down ? "the child's node is shutting down"
                             : "the child's node fenced itself";
        } else {
            ev.kind = PX_PROXY_ENDED;
        }
        break;
    case CHILD_EV_LOST:
        drop = true;
        ev.kind = PX_PROXY_LOST;
        break;
    default:
        bad_sys(m, h->peer, PLEXUS__SYS_OP__SYS_CHILD_EVENT, "unknown ChildEvent kind");
        return;
    }
    if (drop) {
        nng_mtx_lock(m->mtx);
        prox_drop(m, h->to);
        nng_mtx_unlock(m->mtx);
    }
    if (px_system_proxy_event(m->sys, h->to, &ev) == PX_EDEAD && ev.kind == PX_PROXY_STARTED) {
        (void)send_directive(m, host, PX_REMOTE_STOP, PX_TERM_STOPPED, PX_OK);
    }
}

static void on_child_failure(px_mesh *m, const syshdr *h, const Plexus__ChildFailure *f0) {
    px_failure ch[8];
    size_t k = 0;
    for (const Plexus__ChildFailure *f = f0; f != NULL && k < 8; f = f->cause, k++) {
        ch[k] = (px_failure){.child = ref_of(f->child),
                             .child_id = f->id ? f->id : "",
                             .code = f->code <= 0 && f->code > -1000 ? (px_err)f->code : PX_EFAIL,
                             .reason = f->reason ? f->reason : "",
                             .origin_node = f->origin ? f->origin : h->peer,
                             .time_ms = f->time_ms,
                             .count_in_window = f->count_in_window};
        if (k > 0) {
            ch[k - 1].cause = &ch[k];
        }
    }
    px_proxy_event ev = {.kind = PX_PROXY_FAILED, .remote = ch[0].child, .node = h->peer,
                         .failure = &ch[0]};
    (void)px_system_proxy_event(m->sys, h->to, &ev);
}

static void on_terminated(px_mesh *m, const syshdr *h, const Plexus__Terminated *t) {
    px_ref who = ref_of(t->who);
    nng_mtx_lock(m->mtx);
    bool open = wat_take(m, h->to, who);
    nng_mtx_unlock(m->mtx);
    if (open) {
        px_err code = t->code < 0 && t->code > -1000 ? (px_err)t->code : PX_OK;
        px_term_reason r = t->reason >= PX_TERM_NORMAL && t->reason <= PX_TERM_NODE_FENCED
                               ? (px_term_reason)t->reason
                               : PX_TERM_STOPPED;
        (void)px_system_deliver_terminated(m->sys, h->to, who, r, code);
    }
}

static void handle_sys(px_mesh *m, uint32_t op, const syshdr *h, const uint8_t *pl, size_t len) {
    switch (op) {
    case PLEXUS__SYS_OP__SYS_WATCH:
    case PLEXUS__SYS_OP__SYS_UNWATCH:
        /* (from this node itself, or a target that was not alive) */
        if (px_system_watch_for(m->sys, h->to, h->from, op == PLEXUS__SYS_OP__SYS_WATCH) ==
                PX_EDEAD &&
            op == PLEXUS__SYS_OP__SYS_WATCH) {
            Plexus__ActorRef wr;
            pb_ref(&wr, h->to);
            Plexus__Terminated t = PLEXUS__TERMINATED__INIT;
            t.who = &wr;
            t.reason = PX_TERM_NO_ACTOR;
            (void)sys_to(m, h->from, h->to, 0, PLEXUS__SYS_OP__SYS_TERMINATED, &t.base, 1);
        }
        return;
    case PLEXUS__SYS_OP__SYS_STOP:
        if (h->to.node_inc == px_system_node_inc(m->sys)) {
            (void)px_stop(m->sys, h->to);
        }
        return;
    default:
        break;
    }
    ProtobufCMessage *pb = NULL;
    const ProtobufCMessageDescriptor *d =
        op == PLEXUS__SYS_OP__SYS_TERMINATED    ? &plexus__terminated__descriptor
        : op == PLEXUS__SYS_OP__SYS_SPAWN       ? &plexus__spawn_request__descriptor
        : op == PLEXUS__SYS_OP__SYS_SPAWN_REPLY ? &plexus__spawn_reply__descriptor
        : op == PLEXUS__SYS_OP__SYS_CHILD_FAILURE ? &plexus__child_failure__descriptor
        : op == PLEXUS__SYS_OP__SYS_DIRECTIVE   ? &plexus__directive__descriptor
        : op == PLEXUS__SYS_OP__SYS_CHILD_EVENT ? &plexus__child_event__descriptor
        : op == PLEXUS__SYS_OP__SYS_TOPIC       ? &plexus__topic_interest__descriptor
        : op == PLEXUS__SYS_OP__SYS_PUBLISH     ? &plexus__publication__descriptor
                                                : NULL;
    if (d == NULL || (pb = protobuf_c_message_unpack(d, NULL, len, pl)) == NULL) {
        bad_sys(m, h->peer, op, d == NULL ? "unknown operation" : "payload does not unpack");
        return;
    }
    switch (op) {
    case PLEXUS__SYS_OP__SYS_TERMINATED:
        on_terminated(m, h, (Plexus__Terminated *)pb);
        break;
    case PLEXUS__SYS_OP__SYS_SPAWN:
        on_spawn(m, h, (Plexus__SpawnRequest *)pb);
        break;
    case PLEXUS__SYS_OP__SYS_SPAWN_REPLY:
        on_spawn_reply(m, h, (Plexus__SpawnReply *)pb);
        break;
    case PLEXUS__SYS_OP__SYS_CHILD_FAILURE:
        on_child_failure(m, h, (Plexus__ChildFailure *)pb);
        break;
    case PLEXUS__SYS_OP__SYS_DIRECTIVE: {
        const Plexus__Directive *dv = (Plexus__Directive *)pb;
        px_err code = dv->code < 0 && dv->code > -1000 ? (px_err)dv->code : PX_OK;
        if (px_system_host_apply(m->sys, h->to, (px_remote_op)dv->directive,
                                 (px_term_reason)dv->term, code) == PX_EINVAL) {
            bad_sys(m, h->peer, op, "a directive for something that is not a host");
        }
        break;
    }
    case PLEXUS__SYS_OP__SYS_CHILD_EVENT:
        on_child_event(m, h, (Plexus__ChildEvent *)pb);
        break;
    case PLEXUS__SYS_OP__SYS_TOPIC:
        on_interest(m, h, (Plexus__TopicInterest *)pb);
        break;
    case PLEXUS__SYS_OP__SYS_PUBLISH:
        on_publication(m, h, (Plexus__Publication *)pb);
        break;
    }
    protobuf_c_message_free_unpacked(pb, NULL);
}

/* ---- node loss ---- */

/* Asks of local actors waiting on that node end now with code. */
static void fail_asks(px_mesh *m, uint32_t node, uint32_t keep_inc, px_err code) {
    size_t n = px_system_fail_asks(m->sys, node, keep_inc, code);
    if (n > 0) {
        nng_mtx_lock(m->mtx);
        m->st.asks_failed += n;
        nng_mtx_unlock(m->mtx);
    }
}

typedef struct lost {
    uint32_t node;
    uint32_t keep_inc;  /* entries of this incarnation stay (0: none stays) */
    px_term_reason term;
    px_err code;
    const char *why;
    const char *name; /* the lost node's */
} lost;

/* Everything that depended on node l->node (of another incarnation than
 * keep_inc): watches end, proxies are told, waiting spawns fail, hosted
 * children of parents there stop. For this node (fenced): everything. */
static void node_lost(px_mesh *m, const lost *l) {
    bool all = l->node == m->self;
    nng_mtx_lock(m->mtx);
    size_t nw = 0, np = 0, nh = 0, npd = 0;
    wat *w = malloc((m->nw ? m->nw : 1) * sizeof(*w));
    prox *p = malloc((m->np ? m->np : 1) * sizeof(*p));
    hosted *hs = malloc((m->nh ? m->nh : 1) * sizeof(*hs));
    pend **pd = malloc((m->npd ? m->npd : 1) * sizeof(*pd));
    if (w == NULL || p == NULL || hs == NULL || pd == NULL) {
        nng_mtx_unlock(m->mtx);
        px_log(m->sys, PX_LOG_CRIT, "mesh: out of memory handling the loss of a node");
        free(w);
        free(p);
        free(hs);
        free(pd);
        return;
    }
#define LOST_HERE(r) (all || ((r).node == l->node && (r).node_inc != l->keep_inc))
    for (size_t i = 0; i < m->nw;) {
        if (LOST_HERE(m->w[i].target)) {
            w[nw++] = m->w[i];
            m->w[i] = m->w[--m->nw];
        } else {
            i++;
        }
    }
    for (size_t i = 0; i < m->np;) {
        if (LOST_HERE(m->p[i].remote)) {
            p[np++] = m->p[i];
            m->p[i] = m->p[--m->np];
        } else {
            i++;
        }
    }
    for (size_t i = 0; i < m->nh;) {
        if (LOST_HERE(m->h[i].parent)) {
            hs[nh++] = m->h[i];
            m->h[i] = m->h[--m->nh];
        } else {
            i++;
        }
    }
    for (size_t i = 0; i < m->npd;) {
        if (all || (m->pd[i]->node == l->node && m->pd[i]->node_inc != l->keep_inc)) {
            pd[npd++] = m->pd[i];
            m->pd[i] = m->pd[--m->npd];
        } else {
            i++;
        }
    }
#undef LOST_HERE
    m->st.node_down_terminated += nw;
    m->st.lost_children += np;
    m->st.orphans_stopped += nh;
    nng_mtx_unlock(m->mtx);
    if (!all) {
        fail_asks(m, l->node, l->keep_inc, l->code);
    }
    for (size_t i = 0; i < nw; i++) {
        (void)px_system_deliver_terminated(m->sys, w[i].watcher, w[i].target, l->term, l->code);
    }
    for (size_t i = 0; i < np; i++) {
        px_proxy_event ev = {.kind = PX_PROXY_LOST, .remote = p[i].remote, .code = l->code,
                             .reason = l->why, .node = l->name};
        (void)px_system_proxy_event(m->sys, p[i].proxy, &ev);
    }
    for (size_t i = 0; i < nh; i++) {
        (void)px_system_host_apply(m->sys, hs[i].host, PX_REMOTE_STOP,
                                   all ? PX_TERM_NODE_FENCED : PX_TERM_STOPPED, PX_OK);
    }
    for (size_t i = 0; i < npd; i++) {
        if (px_ref_is_nil(pd[i]->proxy)) {
            nng_mtx_lock(m->mtx);
            pd[i]->code = PX_EUNREACHABLE;
            snprintf(pd[i]->why, sizeof(pd[i]->why), "%s", l->why);
            pd[i]->done = true;
            nng_cv_wake(m->cv);
            nng_mtx_unlock(m->mtx);
            continue;
        }
        if (!pd[i]->cancelled) {
            px_proxy_event ev = {.kind = PX_PROXY_LOST, .code = l->code, .reason = l->why,
                                 .node = l->name};
            (void)px_system_proxy_event(m->sys, pd[i]->proxy, &ev);
        }
        free(pd[i]);
    }
    free(w);
    free(p);
    free(hs);
    free(pd);
}

static void on_member(px_mesh *m, const Plexus__MemberEvent *e) {
    char why[PX_MEMBER_CAUSE_MAX + 96];
    lost l = {.node = e->node_id, .why = why, .name = e->name ? e->name : ""};
    if (e->node_id == m->self) {
        if (e->state != PLEXUS__MEMBER_STATE__MEMBER_FENCED) {
            return;
        }
        snprintf(why, sizeof(why), "this node fenced itself: %s", e->cause ? e->cause : "");
        l.term = PX_TERM_NODE_FENCED;
        l.code = PX_EFENCED;
        node_lost(m, &l);
        return;
    }
    switch (e->state) {
    case PLEXUS__MEMBER_STATE__MEMBER_DOWN:
    case PLEXUS__MEMBER_STATE__MEMBER_LEFT:
        snprintf(why, sizeof(why), "node %s %s: %s", e->name ? e->name : "?",
                 e->state == PLEXUS__MEMBER_STATE__MEMBER_DOWN ? "is down" : "left",
                 e->cause ? e->cause : "");
        l.term = PX_TERM_NODE_DOWN;
        l.code = PX_ENODEDOWN;
        node_lost(m, &l);
        topics_forget(m, e->node_id);
        return;
    case PLEXUS__MEMBER_STATE__MEMBER_UNREACHABLE:
        /* Its link is silent: a reply is unlikely to come before the asks'
         * timeouts, so they end with that error now; watches, proxies and
         * hosted children wait for the unreachable policy (tick). */
        fail_asks(m, e->node_id, 0, PX_EUNREACHABLE);
        return;
    case PLEXUS__MEMBER_STATE__MEMBER_UP:
    case PLEXUS__MEMBER_STATE__MEMBER_JOINING:
        /* Registered as a new incarnation: the old one is gone. */
        snprintf(why, sizeof(why), "node %s came back as incarnation %u",
                 e->name ? e->name : "?", e->node_inc);
        l.keep_inc = e->node_inc;
        l.term = PX_TERM_NODE_FENCED;
        l.code = PX_ENODEDOWN;
        node_lost(m, &l);
        if (e->state == PLEXUS__MEMBER_STATE__MEMBER_UP &&
            e->from != PLEXUS__MEMBER_STATE__MEMBER_UP) {
            topics_to(m, e->node_id, e->node_inc);
        }
        return;
    default:
        return;
    }
}

/* The unreachable policies (placement.unreachable_ms): a proxy whose child's
 * node has been unreachable that long loses it; a hosted child whose
 * parent's node has been unreachable half that long is stopped. */
static void tick(px_mesh *m) {
    cands cs;
    members(m, &cs);
    int64_t now = pxc_wall_ms();
    for (size_t i = 0; i < cs.n; i++) {
        const cand *c = &cs.v[i];
        if (c->state != PX_MEMBER_UNREACHABLE) {
            continue;
        }
        int64_t for_ms = now - c->since_ms;
        px_proxy_event evs[16];
        px_ref to[16], hosts[16];
        size_t ne = 0, nh = 0;
        char why[160];
        snprintf(why, sizeof(why), "node %s unreachable for %lld ms", c->name,
                 (long long)for_ms);
        nng_mtx_lock(m->mtx);
        for (size_t k = 0; k < m->np && ne < 16;) {
            prox *x = &m->p[k];
            if (x->node == c->id && x->unreachable_ms > 0 && for_ms >= x->unreachable_ms) {
                evs[ne] = (px_proxy_event){.kind = PX_PROXY_LOST, .remote = x->remote,
                                           .code = PX_EUNREACHABLE, .reason = why,
                                           .node = c->name};
                to[ne++] = x->proxy;
                *x = m->p[--m->np];
            } else {
                k++;
            }
        }
        for (size_t k = 0; k < m->nh && nh < 16;) {
            hosted *x = &m->h[k];
            if (x->parent.node == c->id && x->unreachable_ms > 0 &&
                for_ms >= x->unreachable_ms / 2) {
                hosts[nh++] = x->host;
                *x = m->h[--m->nh];
            } else {
                k++;
            }
        }
        m->st.lost_children += ne;
        m->st.orphans_stopped += nh;
        nng_mtx_unlock(m->mtx);
        for (size_t k = 0; k < ne; k++) {
            px_log(m->sys, PX_LOG_WARN, "mesh: %s: its children placed there count as lost",
                   why);
            (void)px_system_proxy_event(m->sys, to[k], &evs[k]);
        }
        for (size_t k = 0; k < nh; k++) {
            px_log(m->sys, PX_LOG_WARN,
                   "mesh: %s: stopping a child hosted here for a parent there", why);
            (void)px_system_host_apply(m->sys, hosts[k], PX_REMOTE_STOP, PX_TERM_STOPPED,
                                       PX_OK);
        }
    }
    cands_free(&cs);
}

/* The start argument carries the mesh's address. */
static px_err agent_init(px_ctx *ctx, const px_msg *arg) {
    size_t len = 0;
    const void *d = arg != NULL ? px_msg_data(arg, &len) : NULL;
    px_mesh *m = NULL;
    if (d == NULL || len != sizeof(m)) {
        return PX_EINVAL;
    }
    memcpy(&m, d, sizeof(m));
    px_set_state(ctx, m);
    return px_timer_every(ctx, TICK_MS, 1, NULL);
}

static px_err agent_receive(px_ctx *ctx, px_msg *msg) {
    px_mesh *m = px_state(ctx);
    if (px_msg_kind_of(msg) == PX_MSG_TIMER) {
        tick(m);
        replies_retry(m);
        return PX_OK;
    }
    if (px_msg_is(msg, &plexus__member_event__descriptor)) {
        on_member(m, (const Plexus__MemberEvent *)px_msg_pb(msg));
        return PX_OK;
    }
    size_t len;
    const uint8_t *d = px_msg_data(msg, &len);
    if (px_msg_kind_of(msg) != PX_MSG_BYTES || d == NULL || len < sizeof(syshdr)) {
        return PX_OK;
    }
    syshdr h;
    memcpy(&h, d, sizeof(h));
    h.peer[sizeof(h.peer) - 1] = '\0';
    handle_sys(m, px_msg_tag(msg), &h, d + sizeof(h), len - sizeof(h));
    return PX_OK;
}

static const px_behavior agent_beh = {
    .name = "plexus.mesh",
    .init = agent_init,
    .receive = agent_receive,
};

/* ---- lifecycle ---- */

px_err px_mesh_start(const px_mesh_cfg *cfg, px_mesh **out) {
    if (cfg == NULL || out == NULL || cfg->sys == NULL || cfg->transport == NULL ||
        cfg->cluster == NULL) {
        return PX_EINVAL;
    }
    px_mesh *m = calloc(1, sizeof(*m));
    if (m == NULL || nng_mtx_alloc(&m->mtx) != 0 || nng_cv_alloc(&m->cv, m->mtx) != 0) {
        if (m != NULL && m->mtx != NULL) {
            nng_mtx_free(m->mtx);
        }
        free(m);
        return PX_ENOMEM;
    }
    m->sys = cfg->sys;
    m->tr = cfg->transport;
    m->c = cfg->cluster;
    m->self = px_system_root(m->sys).node;
    px_system_get_router(m->sys, &m->inner);
    if (m->inner.send == NULL) {
        nng_cv_free(m->cv);
        nng_mtx_free(m->mtx);
        free(m);
        return PX_EINVAL; /* the transport installs the router it wraps */
    }
    px_msg *arg = NULL;
    px_err rv = px_msg_bytes(&arg, 0, &m, sizeof(m));
    if (rv == PX_OK) {
        rv = px_system_spawn(m->sys, &agent_beh, &arg, NULL, &m->agent);
    }
    px_msg_free(arg);
    if (rv != PX_OK) {
        nng_cv_free(m->cv);
        nng_mtx_free(m->mtx);
        free(m);
        return rv;
    }
    px_transport_set_on_sys(m->tr, on_sys, m);
    px_router r = m->inner;
    r.arg = m;
    r.send = r_send;
    r.dropped = r_dropped;
    r.watch = r_watch;
    r.stop = r_stop;
    r.proxy_op = r_proxy_op;
    r.host_event = r_host_event;
    r.topic_interest = r_topic_interest;
    r.publish = r_publish;
    px_system_set_router(m->sys, &r);
    rv = px_cluster_subscribe(m->c, m->agent);
    if (rv != PX_OK) {
        px_mesh_stop(m);
        return rv;
    }
    *out = m;
    return PX_OK;
}

void px_mesh_stop(px_mesh *m) {
    if (m == NULL) {
        return;
    }
    (void)px_cluster_unsubscribe(m->c, m->agent);
    px_system_set_router(m->sys, &m->inner);
    px_transport_set_on_sys(m->tr, NULL, NULL);
    /* The agent reads m: stop it and wait until it is gone. */
    (void)px_stop(m->sys, m->agent);
    for (int i = 0; i < 5000 && px_is_alive(m->sys, m->agent); i++) {
        nng_msleep(1);
    }
    nng_mtx_lock(m->mtx);
    for (size_t i = 0; i < m->npd; i++) {
        if (px_ref_is_nil(m->pd[i]->proxy)) {
            m->pd[i]->code = PX_ECLOSED; /* its waiter frees it */
            m->pd[i]->done = true;
        } else {
            free(m->pd[i]);
        }
    }
    m->npd = 0;
    nng_cv_wake(m->cv);
    nng_mtx_unlock(m->mtx);
    free(m->w);
    free(m->p);
    free(m->pd);
    free(m->h);
    free(m->rr_q);
    for (size_t i = 0; i < m->nti; i++) {
        free(m->ti[i].topic);
    }
    free(m->ti);
    nng_cv_free(m->cv);
    nng_mtx_free(m->mtx);
    free(m);
}

px_err px_mesh_spawn(px_mesh *m, const px_placement *pl, const char *behavior, px_msg **arg,
                     const px_mailbox_opts *mailbox, uint32_t timeout_ms, px_ref *out,
                     char *why, size_t why_len) {
    char dummy[8];
    if (why == NULL || why_len == 0) {
        why = dummy;
        why_len = sizeof(dummy);
    }
    why[0] = '\0';
    if (m == NULL || pl == NULL || behavior == NULL || out == NULL || timeout_ms == 0) {
        return PX_EINVAL;
    }
    if (px_on_worker()) {
        return PX_ECONTEXT;
    }
    cand c;
    px_err rv = place(m, pl, behavior, &c);
    if (rv != PX_OK) {
        snprintf(why, why_len, "no node to place '%s' on: %s", behavior, px_strerror(rv));
        return rv;
    }
    if (c.local) {
        px_spawn_opts o = {.mailbox = mailbox};
        rv = px_system_spawn_named(m->sys, behavior, arg, &o, out);
        if (rv != PX_OK) {
            snprintf(why, why_len, "spawn of '%s' on node %s: %s", behavior, c.name,
                     px_strerror(rv));
        }
        return rv;
    }
    pend *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        return PX_ENOMEM;
    }
    rv = spawn_send(m, &c, p, m->agent, "", behavior, arg != NULL ? *arg : NULL, mailbox,
                    PX_RESTART_TEMPORARY, PX_REF_NIL);
    if (rv != PX_OK) {
        free(p);
        snprintf(why, why_len, "cannot reach node %s: %s", c.name, px_strerror(rv));
        return rv;
    }
    nng_time until = nng_clock() + timeout_ms;
    nng_mtx_lock(m->mtx);
    while (!p->done && nng_cv_until(m->cv, until) != NNG_ETIMEDOUT) {
    }
    bool done = p->done;
    if (!done) { /* still registered: take it back */
        for (size_t i = 0; i < m->npd; i++) {
            if (m->pd[i] == p) {
                m->pd[i] = m->pd[--m->npd];
                break;
            }
        }
    }
    nng_mtx_unlock(m->mtx);
    if (!done) {
        free(p);
        snprintf(why, why_len, "node %s did not answer within %u ms", c.name, timeout_ms);
        return PX_ETIMEDOUT;
    }
    rv = p->code;
    if (rv == PX_OK) {
        *out = p->ref;
        if (arg != NULL) {
            px_msg_free(*arg);
            *arg = NULL;
        }
    } else {
        snprintf(why, why_len, "%s", p->why[0] ? p->why : px_strerror(rv));
    }
    free(p);
    return rv;
}

void px_mesh_stats_get(px_mesh *m, px_mesh_stats *out) {
    if (m == NULL || out == NULL) {
        return;
    }
    nng_mtx_lock(m->mtx);
    *out = m->st;
    out->remote_watches = m->nw;
    out->proxies = m->np;
    out->hosted = m->nh;
    nng_mtx_unlock(m->mtx);
}
