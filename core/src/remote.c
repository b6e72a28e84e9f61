/*
 * remote.c — supervision across nodes, core's half. Semantics: the
 * comment "where a child runs" in plexus/supervisor.h; the interface to the
 * layer above: plexus/router.h.
 *
 * The proxy stands in a parent's children for a child placed on another
 * node, so the parent's plans, limits and deciders work on it unchanged
 * (sup.c hands it RS_STOP, RS_START and RESUME). Its states are core's:
 *  - RESTARTING while no instance runs for it (from the spawn until
 *    STARTED, and inside a restart plan): nothing is dispatched, its
 *    mailbox waits;
 *  - ALIVE: each user message is forwarded, sender, ask and corr kept, to
 *    the instance;
 *  - SUSPENDED: the instance failed and the parent decides.
 * p->op is the answer it waits for (START or RS_STOP), 0 for none. An
 * answer nobody waits for is stale; a STARTED nobody waits for names an
 * orphan instance, which is stopped at once. Everything of a proxy happens
 * in its own context, except its first START, sent by the parent right
 * after the spawn, before anyone else knows the proxy.
 *
 * The host is the child's local parent on the child's node: it passes the
 * child's failures and restart steps up (px_router.host_event) instead of
 * deciding, applies what the remote parent decided (px_system_host_apply),
 * and ends with its child.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime.h"

/* ---- proxy ---- */

typedef struct pxi_proxy {
    char id[64];
    char *behavior;
    px_mailbox_opts mailbox;
    px_restart_type restart;
    px_placement pl; /* pl.node and pl.role point at the copies below */
    char *pl_node, *pl_role, *pl_gname;
    px_ref remote, host;
    char node[64];
    nng_mtx *info_mtx; /* remote and node are written in the proxy's context
                          and read by its parent's (pxi_proxy_info_fill) */
    int op;       /* PX_REMOTE_START / PX_REMOTE_RS_STOP awaiting its answer, or 0 */
    bool in_plan; /* that START answers a restart plan's RS_START */
    bool half;    /* and is a half-open breaker's probe */
} pxi_proxy;

/* An event, as copied for the proxy's system queue. */
#define PEV_CHAIN 8
typedef struct pxi_pev {
    px_proxy_ev_kind kind;
    px_ref remote, host;
    char node[64];
    px_err code;
    px_term_reason term;
    char reason[160];
    uint32_t nfail;
    px_failure fail[PEV_CHAIN];
    char fid[PEV_CHAIN][64], freason[PEV_CHAIN][160], forigin[PEV_CHAIN][64];
} pxi_pev;

static char *sdup(const char *s) { return s != NULL ? strdup(s) : NULL; }

void pxi_proxy_free(void *v) {
    pxi_proxy *p = v;
    if (p != NULL) {
        if (p->info_mtx != NULL) {
            nng_mtx_free(p->info_mtx);
        }
        free(p->behavior);
        free(p->pl_node);
        free(p->pl_role);
        free(p->pl_gname);
        free(p);
    }
}

px_err pxi_proxy_new(px_actor *parent, const px_child_spec *spec, void **out) {
    const px_placement *pl = spec->placement;
    const px_mailbox_opts *mb = spec->mailbox;
    if (pl->policy < PX_PLACE_NODE || pl->policy > PX_PLACE_FN ||
        (pl->policy == PX_PLACE_NODE && (pl->node == NULL || pl->node[0] == '\0')) ||
        (pl->policy == PX_PLACE_ROLE && (pl->role == NULL || pl->role[0] == '\0')) ||
        (pl->policy == PX_PLACE_FN && pl->fn == NULL) ||
        (mb != NULL && mb->capacity > 0 &&
         (mb->overflow < PX_OVERFLOW_BLOCK || mb->overflow > PX_OVERFLOW_ERROR))) {
        return PX_EINVAL;
    }
    const px_router *r = pxi_router_enter(parent->sys);
    bool none = r == NULL || r->proxy_op == NULL;
    pxi_router_leave(parent->sys, r);
    if (none) {
        return PX_EUNREACHABLE; /* no cluster layer: no other node */
    }
    pxi_proxy *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        return PX_ENOMEM;
    }
    p->behavior = sdup(spec->behavior);
    p->pl = *pl;
    p->pl.node = p->pl_node = sdup(pl->node);
    p->pl.role = p->pl_role = sdup(pl->role);
    p->pl.global_name = p->pl_gname = sdup(pl->global_name);
    if (nng_mtx_alloc(&p->info_mtx) != 0) {
        p->info_mtx = NULL;
    }
    if (p->info_mtx == NULL || p->behavior == NULL || (pl->node != NULL && p->pl_node == NULL) ||
        (pl->role != NULL && p->pl_role == NULL) ||
        (pl->global_name != NULL && p->pl_gname == NULL)) {
        pxi_proxy_free(p);
        return PX_ENOMEM;
    }
    p->mailbox = mb != NULL ? *mb : parent->sys->cfg.mailbox;
    p->restart = spec->restart;
    pxi_scopy(p->id, sizeof(p->id), spec->id);
    *out = p;
    return PX_OK;
}

static void forget(pxi_proxy *p) {
    nng_mtx_lock(p->info_mtx);
    p->remote = p->host = PX_REF_NIL;
    p->node[0] = '\0';
    nng_mtx_unlock(p->info_mtx);
}

static void info_of(px_actor *a, const pxi_proxy *p, px_proxy_info *i) {
    *i = (px_proxy_info){.proxy = pxi_ref_of(a),
                         .parent = pxi_ref_of(a->parent),
                         .id = p->id,
                         .behavior = p->behavior,
                         .arg = a->ext != NULL ? a->ext->arg : NULL,
                         .mailbox = p->mailbox,
                         .restart = p->restart,
                         .placement = &p->pl,
                         .remote = p->remote,
                         .host = p->host,
                         .node = p->node,
                         .term = PX_TERM_STOPPED,
                         .code = PX_OK};
}

/* The router's proxy_op, PX_EUNREACHABLE without one. */
static px_err router_proxy_op(px_system *sys, px_remote_op op, const px_proxy_info *i) {
    const px_router *r = pxi_router_enter(sys);
    px_err rv = r != NULL && r->proxy_op != NULL ? r->proxy_op(r->arg, op, i) : PX_EUNREACHABLE;
    pxi_router_leave(sys, r);
    return rv;
}

static px_err router_op(px_actor *a, const pxi_proxy *p, px_remote_op op) {
    px_proxy_info i;
    info_of(a, p, &i);
    if (op == PX_REMOTE_STOP) {
        uint32_t term = (a->flags & PXI_AF_TERM_MASK) >> PXI_AF_TERM_SHIFT;
        i.term = term != 0 ? (px_term_reason)term : PX_TERM_STOPPED;
        i.code = (i.term == PX_TERM_FAILURE && a->ext != NULL) ? a->ext->term_code : PX_OK;
    }
    return router_proxy_op(a->sys, op, &i);
}

/* An instance that started for nobody (its proxy gave up on that start, or
 * is gone): stop it. */
static void stop_orphan(px_system *sys, px_ref proxy, const pxi_pev *e) {
    px_proxy_info i = {.proxy = proxy, .id = "", .behavior = "", .remote = e->remote,
                       .host = e->host, .node = e->node, .term = PX_TERM_STOPPED};
    (void)router_proxy_op(sys, PX_REMOTE_STOP, &i);
}

static void start_failed(px_actor *a, pxi_proxy *p, px_err code, const char *reason) {
    char why[224];
    snprintf(why, sizeof(why), "start of %s on another node failed: %s", p->behavior,
             reason != NULL && reason[0] ? reason : px_errname(code));
    atomic_fetch_add_explicit(&a->sys->failures, 1, memory_order_relaxed);
    bool plan = p->in_plan;
    p->in_plan = false;
    pxi_sup_fail(a, code != PX_OK ? code : PX_EINIT, why, false);
    if (plan) {
        pxi_ack_parent(a, PXI_SYS_RS_STARTED, 0);
    }
}

/* Proxy context: asks for an instance (state RESTARTING). */
static void start(px_actor *a, pxi_proxy *p) {
    p->op = PX_REMOTE_START;
    px_err rv = router_op(a, p, PX_REMOTE_START);
    if (rv != PX_OK) {
        p->op = 0;
        start_failed(a, p, rv, px_errname(rv));
    }
}

px_err pxi_proxy_first_start(px_actor *c) {
    pxi_proxy *p = c->ustate;
    atomic_store(&c->state, PXI_A_RESTARTING);
    p->op = PX_REMOTE_START;
    px_err rv = router_op(c, p, PX_REMOTE_START);
    if (rv != PX_OK) {
        p->op = 0;
        pxi_stop_child(c, PX_TERM_STOPPED, PX_OK);
    }
    return rv;
}

void pxi_proxy_rs_stop(px_actor *a) {
    pxi_proxy *p = a->ustate;
    uint32_t st = atomic_load(&a->state);
    if (st != PXI_A_ALIVE && st != PXI_A_SUSPENDED && st != PXI_A_RESTARTING) {
        pxi_ack_parent(a, PXI_SYS_RS_STOPPED, 0);
        return;
    }
    atomic_store(&a->state, PXI_A_RESTARTING);
    a->flags &= ~PXI_AF_PROBE;
    p->in_plan = false;
    /* A start still in flight is given up: what it starts is an orphan. */
    bool running = !px_ref_is_nil(p->host) && p->op != PX_REMOTE_RS_STOP;
    p->op = 0;
    if (running) {
        p->op = PX_REMOTE_RS_STOP;
        if (router_op(a, p, PX_REMOTE_RS_STOP) == PX_OK) {
            return; /* acked on RS_STOPPED (or LOST) */
        }
        p->op = 0;
        forget(p);
    }
    pxi_ack_parent(a, PXI_SYS_RS_STOPPED, 0);
}

void pxi_proxy_rs_start(px_actor *a, bool half_open) {
    pxi_proxy *p = a->ustate;
    if (atomic_load(&a->state) != PXI_A_RESTARTING || p->op != 0) {
        pxi_ack_parent(a, PXI_SYS_RS_STARTED, 0);
        return;
    }
    p->in_plan = true;
    p->half = half_open;
    start(a, p);
}

void pxi_proxy_resume(px_actor *a) {
    pxi_proxy *p = a->ustate;
    if (atomic_load(&a->state) != PXI_A_SUSPENDED) {
        return;
    }
    if (px_ref_is_nil(p->host)) { /* its instance is lost: resuming needs a new one */
        atomic_store(&a->state, PXI_A_RESTARTING);
        p->in_plan = false;
        start(a, p);
        return;
    }
    atomic_store(&a->state, PXI_A_ALIVE);
    (void)router_op(a, p, PX_REMOTE_RESUME);
}

void pxi_proxy_info_fill(px_actor *a, px_child_info *out) {
    pxi_proxy *p = a->ustate;
    if (p != NULL) {
        nng_mtx_lock(p->info_mtx);
        pxi_scopy(out->node, sizeof(out->node), p->node);
        out->remote = p->remote;
        nng_mtx_unlock(p->info_mtx);
    }
}

static px_err proxy_receive(px_ctx *ctx, px_msg *m) {
    px_actor *a = (px_actor *)ctx;
    pxi_proxy *p = a->ustate;
    if (m->kind != PX_MSG_BYTES && m->kind != PX_MSG_PROTO) {
        return PX_OK; /* timer ticks, notices and the like are the proxy's own */
    }
    a->flags |= PXI_AF_TOOK;
    px_msg *mm = m;
    px_err rv = px_ref_is_nil(p->remote) ? PX_EDEAD : pxi_deliver(a->sys, p->remote, &mm, false);
    if (mm != NULL) {
        pxi_dead_letter(a->sys, p->remote, mm, rv == PX_OK ? PX_EDEAD : rv);
    }
    return PX_OK;
}

static void proxy_stop(px_ctx *ctx) {
    px_actor *a = (px_actor *)ctx;
    pxi_proxy *p = a->ustate;
    if (p == NULL) {
        return;
    }
    if (!px_ref_is_nil(p->host) || p->op == PX_REMOTE_START) {
        (void)router_op(a, p, PX_REMOTE_STOP); /* also gives up a start in flight */
    }
    pxi_proxy_free(p);
    a->ustate = NULL;
}

const px_behavior pxi_proxy_beh = {
    .name = "plexus.proxy",
    .receive = proxy_receive,
    .stop = proxy_stop,
};

static void on_event(px_actor *a, const pxi_pev *e) {
    pxi_proxy *p = a->ustate;
    uint32_t st = atomic_load(&a->state);
    if (p == NULL || st >= PXI_A_STOPPING) {
        if (e->kind == PX_PROXY_STARTED) {
            stop_orphan(a->sys, pxi_ref_of(a), e);
        }
        return;
    }
    switch (e->kind) {
    case PX_PROXY_STARTED:
        if (p->op != PX_REMOTE_START) {
            stop_orphan(a->sys, pxi_ref_of(a), e);
            return;
        }
        p->op = 0;
        nng_mtx_lock(p->info_mtx);
        p->remote = e->remote;
        p->host = e->host;
        pxi_scopy(p->node, sizeof(p->node), e->node);
        nng_mtx_unlock(p->info_mtx);
        if (st == PXI_A_RESTARTING) {
            atomic_store(&a->state, PXI_A_ALIVE); /* what waited is dispatched now */
            if (p->in_plan && p->half) {
                a->flags |= PXI_AF_PROBE;
            }
        }
        if (p->in_plan) {
            p->in_plan = false;
            pxi_ack_parent(a, PXI_SYS_RS_STARTED, 1);
        }
        return;
    case PX_PROXY_START_FAILED:
        if (p->op == PX_REMOTE_START) {
            p->op = 0;
            start_failed(a, p, e->code, e->reason);
        }
        return;
    case PX_PROXY_RS_STOPPED:
        if (p->op == PX_REMOTE_RS_STOP) {
            p->op = 0;
            pxi_ack_parent(a, PXI_SYS_RS_STOPPED, 0);
        }
        return;
    case PX_PROXY_FAILED:
        if (px_ref_eq(e->remote, p->remote) && st == PXI_A_ALIVE && e->nfail > 0) {
            pxi_sup_fail_chain(a, &e->fail[0]);
        }
        return;
    case PX_PROXY_ENDED:
        if (px_ref_eq(e->remote, p->remote)) {
            forget(p);
            pxi_begin_stop(a, e->term != 0 ? e->term : PX_TERM_STOPPED, e->code);
        }
        return;
    case PX_PROXY_LOST: {
        bool about_start = px_ref_is_nil(e->remote) && p->op == PX_REMOTE_START;
        if (!about_start && (px_ref_is_nil(e->remote) || !px_ref_eq(e->remote, p->remote))) {
            return; /* stale */
        }
        px_ref old = p->remote;
        forget(p);
        if (p->op == PX_REMOTE_RS_STOP) {
            p->op = 0;
            pxi_ack_parent(a, PXI_SYS_RS_STOPPED, 0);
        } else if (p->op == PX_REMOTE_START) {
            p->op = 0;
            start_failed(a, p, e->code, e->reason);
        } else if (st == PXI_A_ALIVE) {
            px_failure f = {.child = old, .child_id = p->id, .code = e->code,
                            .reason = e->reason, .origin_node = e->node};
            pxi_sup_fail_chain(a, &f);
        }
        return;
    }
    }
}

px_err px_system_proxy_event(px_system *sys, px_ref proxy, const px_proxy_event *ev) {
    if (sys == NULL || ev == NULL || ev->kind < PX_PROXY_STARTED || ev->kind > PX_PROXY_LOST) {
        return PX_EINVAL;
    }
    px_actor *a = pxi_pin_ref(sys, proxy);
    if (a == NULL) {
        return PX_EDEAD;
    }
    if (!pxi_is_proxy(a)) {
        pxi_unpin(a);
        return PX_EINVAL;
    }
    pxi_pev *e = calloc(1, sizeof(*e));
    px_msg *m = e != NULL ? pxi_msg_new(PXI_MSG_SYS) : NULL;
    if (m == NULL) {
        free(e);
        pxi_unpin(a);
        return PX_ENOMEM;
    }
    e->kind = ev->kind;
    e->remote = ev->remote;
    e->host = ev->host;
    e->code = ev->code;
    e->term = ev->term;
    pxi_scopy(e->node, sizeof(e->node), ev->node ? ev->node : "");
    pxi_scopy(e->reason, sizeof(e->reason), ev->reason ? ev->reason : "");
    for (const px_failure *f = ev->failure; f != NULL && e->nfail < PEV_CHAIN; f = f->cause) {
        uint32_t k = e->nfail++;
        pxi_scopy(e->fid[k], sizeof(e->fid[k]), f->child_id ? f->child_id : "");
        pxi_scopy(e->freason[k], sizeof(e->freason[k]), f->reason ? f->reason : "");
        pxi_scopy(e->forigin[k], sizeof(e->forigin[k]), f->origin_node ? f->origin_node : "");
        e->fail[k] = (px_failure){f->child, e->fid[k], f->code, e->freason[k], e->forigin[k],
                                  f->time_ms, f->count_in_window, NULL};
        if (k > 0) {
            e->fail[k - 1].cause = &e->fail[k];
        }
    }
    m->sysop = PXI_SYS_PROXY_EV;
    m->corr = (uint64_t)(uintptr_t)e;
    pxi_push_sys(a, m);
    pxi_unpin(a);
    return PX_OK;
}

/* ---- host ---- */

typedef struct pxi_host {
    px_ref proxy, parent;
    px_actor *child;
    px_ref child_ref;
    bool restarting;     /* a restart's START is in flight */
    bool stopped_by_parent;
    px_err init_code;    /* that start's init failure */
    char init_reason[160];
    px_err fail_code;    /* the child's last failure */
    /* for init */
    const px_behavior *b;
    px_msg **arg;
    px_mailbox_opts mailbox;
    bool has_mailbox;
    uint32_t aflags;
    px_err err;
} pxi_host;

static void host_event(px_actor *a, pxi_host *x, px_host_ev_kind kind, px_err code,
                       const char *reason, px_term_reason term, const px_failure *f) {
    px_host_event ev = {.kind = kind, .host = pxi_ref_of(a), .child = x->child_ref,
                        .proxy = x->proxy, .parent = x->parent, .code = code,
                        .reason = reason ? reason : "", .term = term, .failure = f};
    const px_router *r = pxi_router_enter(a->sys);
    if (r != NULL && r->host_event != NULL) {
        r->host_event(r->arg, &ev);
    }
    pxi_router_leave(a->sys, r);
}

static px_err host_init(px_ctx *ctx, const px_msg *arg) {
    (void)arg;
    px_actor *h = (px_actor *)ctx;
    pxi_host *x = h->ustate;
    px_spawn_opts o = {.mailbox = x->has_mailbox ? &x->mailbox : NULL};
    px_ref ref;
    x->err = pxi_spawn(h->sys, h, x->b, x->arg, &o, &ref, x->aflags, NULL);
    if (x->err != PX_OK) {
        return x->err;
    }
    x->child = pxi_slot(h->sys, ref.id);
    x->child_ref = ref;
    return PX_OK;
}

static px_err host_receive(px_ctx *ctx, px_msg *m) {
    (void)ctx;
    (void)m;
    return PX_OK; /* nobody is meant to send it anything */
}

static void host_stop(px_ctx *ctx) {
    px_actor *a = (px_actor *)ctx;
    free(a->ustate);
    a->ustate = NULL;
}

static const px_behavior host_beh = {
    .name = "plexus.host",
    .init = host_init,
    .receive = host_receive,
    .stop = host_stop,
};

px_err px_system_spawn_hosted(px_system *sys, const px_hosted_spec *spec, px_msg **arg,
                              px_ref *host, px_ref *child, char *why, size_t why_len) {
    char dummy[8];
    if (why == NULL || why_len == 0) {
        why = dummy;
        why_len = sizeof(dummy);
    }
    why[0] = '\0';
    if (sys == NULL || spec == NULL || spec->behavior == NULL || spec->id == NULL ||
        host == NULL || child == NULL) {
        snprintf(why, why_len, "bad arguments");
        return PX_EINVAL;
    }
    if (atomic_load(&sys->closing)) {
        snprintf(why, why_len, "node %s is shutting down", sys->node_name);
        return PX_ECLOSED;
    }
    const px_behavior *b = px_behavior_lookup(sys, spec->behavior);
    if (b == NULL) {
        snprintf(why, why_len, "behavior '%s' is not registered on node %s", spec->behavior,
                 sys->node_name);
        return PX_ENOENT;
    }
    pxi_host *x = calloc(1, sizeof(*x));
    if (x == NULL) {
        snprintf(why, why_len, "out of memory");
        return PX_ENOMEM;
    }
    x->proxy = spec->proxy;
    x->parent = spec->parent;
    x->b = b;
    x->arg = arg;
    x->has_mailbox = spec->mailbox != NULL;
    if (spec->mailbox != NULL) {
        x->mailbox = *spec->mailbox;
    }
    x->aflags = spec->restart == PX_RESTART_PERMANENT ? PXI_AF_PERMANENT : 0;
    px_spawn_opts ho = {.mailbox = &(px_mailbox_opts){0}};
    px_ref href;
    px_err rv = pxi_spawn(sys, sys->root, &host_beh, NULL, &ho, &href, PXI_AF_HOST, x);
    if (rv != PX_OK) {
        rv = x->err != PX_OK ? x->err : rv;
        snprintf(why, why_len, "%s of '%s' failed on node %s: %s",
                 rv == PX_EINIT ? "init" : "spawn", spec->behavior, sys->node_name,
                 px_strerror(rv));
        free(x);
        return rv;
    }
    *host = href;
    *child = x->child_ref;
    return PX_OK;
}

bool pxi_host_child_sys(px_actor *a, px_msg *m) {
    pxi_host *x = a->ustate;
    switch (m->sysop) {
    case PXI_SYS_FAILURE: {
        struct pxi_fail_rec *f = (struct pxi_fail_rec *)(uintptr_t)m->corr;
        px_failure chain[8];
        uint32_t k = pxi_fail_chain(f, chain, 8);
        if (x != NULL && k > 0) {
            if (x->restarting) { /* the restart's init failed: told with STARTED */
                x->init_code = chain[0].code;
                pxi_scopy(x->init_reason, sizeof(x->init_reason), chain[0].reason);
            } else {
                x->fail_code = chain[0].code;
                host_event(a, x, PX_HOST_FAILED, chain[0].code, chain[0].reason, 0, chain);
            }
        }
        pxi_fail_rec_free(f);
        return true;
    }
    case PXI_SYS_RS_STOPPED:
        if (x != NULL) {
            host_event(a, x, PX_HOST_RS_STOPPED, PX_OK, "", 0, NULL);
        }
        return true;
    case PXI_SYS_RS_STARTED:
        if (x != NULL) {
            x->restarting = false;
            px_err code = m->tag == 1 ? PX_OK : (x->init_code != PX_OK ? x->init_code : PX_EINIT);
            host_event(a, x, PX_HOST_STARTED, code, m->tag == 1 ? "" : x->init_reason, 0, NULL);
        }
        return true;
    case PXI_SYS_HEALTHY:
        return true; /* the remote parent keeps the breaker */
    default:
        return false;
    }
}

void pxi_host_child_term(px_actor *a, px_actor *c) {
    pxi_host *x = a->ustate;
    if (x == NULL || c != x->child) {
        return;
    }
    uint32_t term = (c->flags & PXI_AF_TERM_MASK) >> PXI_AF_TERM_SHIFT;
    px_term_reason why = term != 0 ? (px_term_reason)term : PX_TERM_STOPPED;
    const char *reason = "";
    if (atomic_load(&a->state) >= PXI_A_STOPPING && !x->stopped_by_parent) {
        why = PX_TERM_NODE_DOWN; /* its node is shutting down */
        reason = "its node is shutting down";
    }
    host_event(a, x, PX_HOST_ENDED, why == PX_TERM_FAILURE ? x->fail_code : PX_OK, reason, why,
               NULL);
    x->child = NULL;
    pxi_begin_stop(a, PX_TERM_NORMAL, PX_OK);
}

static void host_op(px_actor *a, px_msg *m) {
    pxi_host *x = a->ustate;
    px_actor *c = x != NULL ? x->child : NULL;
    if (c == NULL) {
        return;
    }
    px_remote_op op = (px_remote_op)(m->tag & 0xffu);
    switch (op) {
    case PX_REMOTE_RESUME:
        pxi_send_sys(c, PXI_SYS_RESUME, 0, 0);
        break;
    case PX_REMOTE_RS_STOP:
        pxi_send_sys(c, PXI_SYS_RS_STOP, 0, 0);
        break;
    case PX_REMOTE_START:
        x->restarting = true;
        x->init_code = PX_OK;
        x->init_reason[0] = '\0';
        pxi_send_sys(c, PXI_SYS_RS_START, 0, 0);
        break;
    case PX_REMOTE_STOP: {
        uint32_t term = m->tag >> 8;
        x->stopped_by_parent = true;
        pxi_stop_child(c, term != 0 ? term : PX_TERM_STOPPED, (px_err)(int64_t)m->corr);
        break;
    }
    }
}

px_err px_system_host_apply(px_system *sys, px_ref host, px_remote_op op, px_term_reason term,
                            px_err code) {
    if (sys == NULL || op < PX_REMOTE_START || op > PX_REMOTE_STOP) {
        return PX_EINVAL;
    }
    px_actor *h = pxi_pin_ref(sys, host);
    if (h == NULL) {
        return PX_EDEAD;
    }
    px_err rv = PX_EINVAL;
    if (h->beh == &host_beh) {
        pxi_send_sys(h, PXI_SYS_HOST_OP, (uint64_t)(int64_t)code,
                     (uint32_t)op | ((uint32_t)term << 8));
        rv = PX_OK;
    }
    pxi_unpin(h);
    return rv;
}

/* ---- both ---- */

void pxi_remote_sys(px_actor *a, px_msg *m) {
    if (m->sysop == PXI_SYS_PROXY_EV) {
        pxi_pev *e = (pxi_pev *)(uintptr_t)m->corr;
        if (pxi_is_proxy(a)) {
            on_event(a, e);
        }
        free(e);
    } else if (m->sysop == PXI_SYS_HOST_OP && a->beh == &host_beh) {
        host_op(a, m);
    }
}

void pxi_remote_drain_sys(px_actor *a, px_msg *m) {
    if (m->sysop == PXI_SYS_PROXY_EV) {
        pxi_pev *e = (pxi_pev *)(uintptr_t)m->corr;
        if (e->kind == PX_PROXY_STARTED) {
            stop_orphan(a->sys, pxi_ref_of(a), e);
        }
        free(e);
    }
}
