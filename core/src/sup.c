/*
 * sup.c — supervision (child records, directives, strategies, restart
 * limits, backoff, circuit breaker) and watches. Semantics: the comment at
 * the top of plexus/supervisor.h.
 *
 * Who owns what:
 *  - A failing child suspends itself and sends PXI_SYS_FAILURE (a heap
 *    pxi_fail_rec) to its parent; from then on the parent decides, in its
 *    own context. The child's mailbox keeps filling while it is suspended.
 *  - The parent keeps a record per supervised child (pxi_sup_rec) in its
 *    ext->sup: spec, counters, restart times, breaker state. Records of
 *    children spawned with px_spawn are made on their first failure.
 *  - A restart (of one or several children) is a plan the parent drives one
 *    step at a time: PXI_SYS_RS_STOP to each child in reverse start order
 *    (the child stops its own children, runs `stop`, acks RS_STOPPED), then
 *    PXI_SYS_RS_START in start order (the child runs `init`, acks
 *    RS_STARTED). Failures that arrive meanwhile wait for the plan to end.
 *  - Backoff and breaker cool-downs are timers that send the parent a
 *    PXI_SYS_SUP_TIMER signal (pxi_deliver puts runtime kinds in the system
 *    queue, so a full bounded mailbox cannot lose it).
 *  - A watch is a PXI_SYS_WATCH signal to the target, which keeps its
 *    watchers in its ext and sends each one PX_MSG_TERMINATED when it ends.
 *    The watcher keeps the set of refs it watches and delivers a Terminated
 *    only while the ref is in it, so each watch yields exactly one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime.h"

/* A failure on its way up. Strings are copies. */
typedef struct pxi_fail_rec {
    px_actor *child;
    uint32_t inc;
    px_ref ref;
    px_err code;
    bool normal; /* a permanent child stopped itself */
    int64_t time_ms;
    uint32_t count_in_window;
    char id[64];
    char reason[160];
    char origin[64];
    struct pxi_fail_rec *cause;
    struct pxi_fail_rec *next; /* deferred list */
} pxi_fail_rec;

#define FAIL_RING 32

/* A child's failure history, made on its first failure (most children never
 * fail, and a supervised spawn should not pay for it). */
typedef struct pxi_sup_hist {
    char last_reason[128];
    int64_t fail_times[FAIL_RING];
    uint32_t nfail_times;
    uint32_t rt_lo, nrt, rtcap;
    int64_t *rt; /* restart times in the window, oldest first: rt[rt_lo..nrt) */
} pxi_sup_hist;

typedef struct pxi_sup_rec {
    px_actor *a;
    uint32_t inc;
    uint32_t idx;    /* position in pxi_sup.recs */
    px_restart_type rtype;
    uint32_t state; /* px_child_state */
    px_breaker_state breaker;
    bool escalated; /* suspended because its failure went up */
    bool half_open_next; /* the pending restart is the breaker's probe */
    uint32_t instance, restarts, consecutive;
    uint64_t failures;
    int64_t last_fail_ms, started_ms;
    uint64_t timer;  /* backoff or cool-down timer, 0 = none */
    pxi_sup_hist *h; /* NULL until the first failure */
    px_restart_policy pol;
    char id[]; /* the ids map's key points here */
} pxi_sup_rec;

typedef struct pxi_sup {
    pxi_sup_rec **recs; /* unordered (start order is the sibling list) */
    uint32_t n, cap;
    pxi_sup_rec **tab;  /* child pointer -> rec, open addressing */
    uint32_t tcap, tused;
    pxi_strmap ids; /* id -> rec (spec'd children) */
    /* The restart plan in progress, if any. */
    bool plan;
    int phase;       /* 1: stopping old instances (reverse order), 2: starting */
    px_actor **pk;   /* children of the plan, start order */
    uint32_t *pinc;
    uint32_t pn, pi;
    px_actor *pfailed;
    bool pstop;      /* a Stop plan: phase 1 stops for good, no phase 2 */
    px_err pcode;    /* the failure code a Stop plan gives the failed child */
    pxi_fail_rec *deferred, *deferred_tail;
    const px_behavior *last_beh; /* the behavior px_spawn_child found last */
} pxi_sup;

static int64_t clock_ms(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_ms(void) { return clock_ms(CLOCK_REALTIME); }

/* Start times are shown, never compared: the kernel's tick-grained clock is
 * precise enough and costs no syscall or TSC read. */
static int64_t started_now_ms(void) { return clock_ms(CLOCK_REALTIME_COARSE); }

void pxi_fail_rec_free(pxi_fail_rec *f) {
    while (f != NULL) {
        pxi_fail_rec *c = f->cause;
        free(f);
        f = c;
    }
}

static void rec_free(pxi_sup_rec *r) {
    if (r->timer != 0) {
        pxi_timer_cancel(r->a->sys->timers, r->timer);
    }
    if (r->h != NULL) {
        free(r->h->rt);
        free(r->h);
    }
    free(r);
}

void pxi_sup_free(pxi_sup *s) {
    if (s == NULL) {
        return;
    }
    for (uint32_t i = 0; i < s->n; i++) {
        rec_free(s->recs[i]);
    }
    free(s->recs);
    free(s->tab);
    pxi_strmap_fini(&s->ids);
    free(s->pk);
    free(s->pinc);
    pxi_fail_rec *d = s->deferred;
    while (d != NULL) {
        pxi_fail_rec *nx = d->next;
        pxi_fail_rec_free(d);
        d = nx;
    }
    free(s);
}

static pxi_sup *sup_get(px_actor *p) {
    pxi_actor_ext *x = pxi_ext_get(p);
    if (x == NULL) {
        return NULL;
    }
    if (x->sup == NULL) {
        x->sup = calloc(1, sizeof(*x->sup));
        if (x->sup != NULL) {
            pxi_strmap_init_borrowed(&x->sup->ids);
        }
    }
    return x->sup;
}

/* The child -> record table: linear probing, TOMB marks a deleted entry. */
#define TOMB ((pxi_sup_rec *)(uintptr_t)1)

/* By slot index, so children spawned one after another (neighbouring slots)
 * land in neighbouring entries: a spawn storm and a rehash walk the table in
 * order instead of missing the cache per child. Each run of cap slot indices
 * gets its own scrambled offset, so children whose indices differ by a
 * multiple of cap do not pile up in one place. */
static uint32_t tab_hash(const px_actor *c, uint32_t cap) {
    uint32_t run = c->id >> __builtin_ctz(cap);
    return (c->id + (uint32_t)((run * 0x9e3779b97f4a7c15ull) >> 32)) & (cap - 1);
}

static pxi_sup_rec *rec_find(pxi_sup *s, px_actor *c) {
    if (s == NULL || s->tcap == 0) {
        return NULL;
    }
    for (uint32_t i = tab_hash(c, s->tcap);; i = (i + 1) & (s->tcap - 1)) {
        pxi_sup_rec *r = s->tab[i];
        if (r == NULL) {
            return NULL;
        }
        if (r != TOMB && r->a == c) {
            return r;
        }
    }
}

static void tab_put(pxi_sup *s, pxi_sup_rec *r) {
    uint32_t i = tab_hash(r->a, s->tcap);
    while (s->tab[i] != NULL && s->tab[i] != TOMB) {
        i = (i + 1) & (s->tcap - 1);
    }
    if (s->tab[i] == NULL) {
        s->tused++;
    }
    s->tab[i] = r;
}

/* Room for one more (live + deleted kept under half the table). */
static bool tab_reserve(pxi_sup *s) {
    if ((s->tused + 1) * 2 <= s->tcap) {
        return true;
    }
    uint32_t nc = s->tcap ? s->tcap : 16;
    while ((s->n + 1) * 4 > nc) {
        nc *= 2;
    }
    pxi_sup_rec **nt = calloc(nc, sizeof(*nt));
    if (nt == NULL) {
        return false;
    }
    free(s->tab);
    s->tab = nt;
    s->tcap = nc;
    s->tused = 0;
    for (uint32_t i = 0; i < s->n; i++) {
        tab_put(s, s->recs[i]);
    }
    return true;
}

/* A record for a child not yet spawned, in no table. */
static pxi_sup_rec *rec_alloc(const char *id, px_restart_type rt, const px_restart_policy *pol) {
    size_t len = strlen(id);
    pxi_sup_rec *r = malloc(sizeof(*r) + len + 1);
    if (r == NULL) {
        return NULL;
    }
    memset(r, 0, sizeof(*r));
    memcpy(r->id, id, len + 1);
    r->rtype = rt;
    if (pol != NULL) {
        r->pol = *pol;
    } else {
        px_restart_policy_init(&r->pol);
    }
    r->state = PX_CHILD_RUNNING;
    r->breaker = r->pol.breaker.failures > 0 ? PX_BREAKER_CLOSED : PX_BREAKER_OFF;
    r->instance = 1;
    return r;
}

/* Room in recs and tab for one more record. */
static bool rec_reserve(pxi_sup *s) {
    if (s->n == s->cap) {
        uint32_t nc = s->cap ? s->cap * 2 : 8;
        pxi_sup_rec **nr = realloc(s->recs, nc * sizeof(*nr));
        if (nr == NULL) {
            return false;
        }
        s->recs = nr;
        s->cap = nc;
    }
    return tab_reserve(s);
}

/* Binds r to child c and puts it in recs and tab (room reserved). */
static void rec_attach(pxi_sup *s, pxi_sup_rec *r, px_actor *c) {
    r->a = c;
    r->inc = atomic_load_explicit(&c->inc, memory_order_relaxed);
    r->started_ms = started_now_ms();
    r->idx = s->n;
    s->recs[s->n++] = r;
    tab_put(s, r);
}

static void rec_remove(pxi_sup *s, pxi_sup_rec *r) {
    s->recs[r->idx] = s->recs[--s->n];
    s->recs[r->idx]->idx = r->idx;
    for (uint32_t i = tab_hash(r->a, s->tcap);; i = (i + 1) & (s->tcap - 1)) {
        if (s->tab[i] == r) {
            s->tab[i] = TOMB;
            break;
        }
    }
    if (r->id[0] != '#') {
        pxi_strmap_del(&s->ids, r->id, NULL);
    }
    rec_free(r);
}

/* The record for child c, made with defaults (transient, "#<id>") if c was
 * spawned with px_spawn and never failed before. */
static pxi_sup_rec *rec_for(px_actor *p, px_actor *c) {
    pxi_sup *s = sup_get(p);
    if (s == NULL) {
        return NULL;
    }
    pxi_sup_rec *r = rec_find(s, c);
    if (r == NULL) {
        char id[24];
        snprintf(id, sizeof(id), "#%u", c->id);
        r = rec_reserve(s) ? rec_alloc(id, PX_RESTART_TRANSIENT, NULL) : NULL;
        if (r != NULL) {
            rec_attach(s, r, c);
        }
    }
    return r;
}

static bool is_my_child(px_actor *p, px_actor *c, uint32_t inc) {
    uint32_t st = atomic_load(&c->state);
    return c->parent == p && atomic_load(&c->inc) == inc && st >= PXI_A_STARTING &&
           st < PXI_A_STOPPING;
}

/* The children of p in start order (the sibling list is newest first), in a
 * new array (free it); *out NULL when there are none. p's context. */
px_err pxi_children_in_order(px_actor *p, px_actor ***out, uint32_t *n) {
    bool root = (p->flags & PXI_AF_ROOT) != 0;
    if (root) {
        nng_mtx_lock(p->sys->tree_mtx); /* outside threads link top-level actors */
    }
    uint32_t k = 0;
    for (px_actor *c = p->first_child; c != NULL; c = c->next_sib) {
        k++;
    }
    px_actor **v = k ? malloc(k * sizeof(*v)) : NULL;
    uint32_t i = k;
    for (px_actor *c = p->first_child; c != NULL && v != NULL; c = c->next_sib) {
        v[--i] = c;
    }
    if (root) {
        nng_mtx_unlock(p->sys->tree_mtx);
    }
    *out = v;
    *n = v != NULL ? k : 0;
    return (k > 0 && v == NULL) ? PX_ENOMEM : PX_OK;
}

/* ---- child side ---- */

/* a suspends itself and sends f (its failure, a's own fields filled here)
 * up to its parent. */
static void fail_up(px_actor *a, pxi_fail_rec *f) {
    f->child = a;
    f->inc = atomic_load_explicit(&a->inc, memory_order_relaxed);
    a->flags &= ~(PXI_AF_PROBE | PXI_AF_STOP_REQ);
    atomic_store(&a->state, PXI_A_SUSPENDED);
    pxi_send_sys(a->parent, PXI_SYS_FAILURE, (uint64_t)(uintptr_t)f, 0);
}

static void fail_oom(px_actor *a, px_err code) {
    px_log(a->sys, PX_LOG_CRIT, "out of memory reporting a failure of actor %u; stopping it",
           a->id);
    pxi_begin_stop(a, PX_TERM_FAILURE, code);
}

void pxi_sup_fail(px_actor *a, px_err code, const char *reason, bool normal) {
    px_system *sys = a->sys;
    if (!normal) { /* a failure is rare: the lock is cheap here */
        nng_mtx_lock(sys->dl_mtx);
        px_failure_fn fn = sys->fail_fn;
        void *arg = sys->fail_arg;
        nng_mtx_unlock(sys->dl_mtx);
        if (fn != NULL) {
            fn(arg, pxi_ref_of(a), a->beh != NULL && a->beh->name ? a->beh->name : "?", code,
               reason ? reason : "");
        }
    }
    pxi_fail_rec *f = calloc(1, sizeof(*f));
    if (f == NULL) {
        fail_oom(a, code);
        return;
    }
    f->ref = pxi_ref_of(a);
    f->code = code;
    f->normal = normal;
    f->time_ms = wall_ms();
    pxi_scopy(f->reason, sizeof(f->reason), reason ? reason : "");
    pxi_scopy(f->origin, sizeof(f->origin), a->sys->node_name);
    if (a->ext != NULL && a->ext->cause != NULL) {
        f->cause = a->ext->cause; /* an escalation: the child's failure rides along */
        a->ext->cause = NULL;
    }
    fail_up(a, f);
}

/* A proxy fails with the chain its child's node reported (a failure code
 * PX_OK at the top: a permanent child stopped itself). */
void pxi_sup_fail_chain(px_actor *a, const px_failure *chain) {
    pxi_fail_rec *top = NULL, **at = &top;
    for (const px_failure *c = chain; c != NULL; c = c->cause) {
        pxi_fail_rec *f = calloc(1, sizeof(*f));
        if (f == NULL) {
            pxi_fail_rec_free(top);
            fail_oom(a, chain->code);
            return;
        }
        f->ref = c->child;
        f->code = c->code;
        f->normal = c == chain && c->code == PX_OK;
        f->time_ms = c->time_ms ? c->time_ms : wall_ms();
        f->count_in_window = c->count_in_window;
        pxi_scopy(f->id, sizeof(f->id), c->child_id ? c->child_id : "");
        pxi_scopy(f->reason, sizeof(f->reason), c->reason ? c->reason : "");
        pxi_scopy(f->origin, sizeof(f->origin), c->origin_node ? c->origin_node : "");
        *at = f;
        at = &f->cause;
    }
    if (top == NULL) {
        return;
    }
    fail_up(a, top);
}

uint32_t pxi_fail_chain(const pxi_fail_rec *f, px_failure *out, uint32_t max) {
    uint32_t k = 0;
    for (const pxi_fail_rec *x = f; x != NULL && k < max; x = x->cause, k++) {
        out[k] = (px_failure){x->ref, x->id, x->code, x->reason, x->origin,
                              x->time_ms, x->count_in_window, NULL};
        if (k > 0) {
            out[k - 1].cause = &out[k];
        }
    }
    return k;
}

void pxi_ack_parent(px_actor *a, uint16_t op, uint32_t tag) {
    if (a->parent != NULL) {
        pxi_send_sys(a->parent, op, (uint64_t)(uintptr_t)a, tag);
    }
}

/* The old instance is gone (its children stopped): run `stop`, reset. */
static void finish_rs_stop(px_actor *a) {
    a->flags &= ~PXI_AF_RS_STOP;
    if ((a->flags & PXI_AF_INITED) && a->beh->stop != NULL) {
        a->beh->stop((px_ctx *)a);
    }
    a->flags &= ~(PXI_AF_INITED | PXI_AF_FAILED | PXI_AF_STOP_REQ | PXI_AF_PROBE);
    pxi_cancel_timers(a);
    a->ustate = NULL;
    pxi_ack_parent(a, PXI_SYS_RS_STOPPED, 0);
}

void pxi_sup_after_turn(px_actor *a) {
    if ((a->flags & PXI_AF_RS_STOP) && a->first_child == NULL &&
        atomic_load(&a->state) == PXI_A_RESTARTING) {
        finish_rs_stop(a);
    }
}

static void rs_stop(px_actor *a) {
    if (pxi_is_proxy(a)) {
        pxi_proxy_rs_stop(a);
        return;
    }
    uint32_t st = atomic_load(&a->state);
    if (st != PXI_A_ALIVE && st != PXI_A_SUSPENDED) {
        pxi_ack_parent(a, PXI_SYS_RS_STOPPED, 0); /* stopping: the plan moves on */
        return;
    }
    atomic_store(&a->state, PXI_A_RESTARTING);
    a->flags |= PXI_AF_RS_STOP;
    pxi_cancel_timers(a);
    for (px_actor *c = a->first_child; c != NULL; c = c->next_sib) {
        pxi_stop_child(c, PX_TERM_STOPPED, PX_OK);
    }
    pxi_sup_after_turn(a);
}

static void rs_start(px_actor *a, bool half_open) {
    if (pxi_is_proxy(a)) {
        pxi_proxy_rs_start(a, half_open);
        return;
    }
    if (atomic_load(&a->state) != PXI_A_RESTARTING || (a->flags & PXI_AF_RS_STOP)) {
        pxi_ack_parent(a, PXI_SYS_RS_STARTED, 0);
        return;
    }
    /* STARTING while init runs, as at spawn (init may spawn children). */
    atomic_store(&a->state, PXI_A_STARTING);
    px_err rv = PX_OK;
    if (a->beh->init != NULL) {
        rv = a->beh->init((px_ctx *)a, a->ext ? a->ext->arg : NULL);
    }
    if (rv != PX_OK || (a->flags & PXI_AF_FAILED)) {
        px_err code = rv != PX_OK ? rv : (a->ext ? a->ext->fail_code : PX_EFAIL);
        char why[320];
        snprintf(why, sizeof(why), "init of the restarted instance failed: %s%s%s",
                 px_errname(code), (a->flags & PXI_AF_FAILED) && a->ext ? ": " : "",
                 (a->flags & PXI_AF_FAILED) && a->ext ? a->ext->fail_reason : "");
        a->flags &= ~PXI_AF_FAILED;
        atomic_fetch_add_explicit(&a->sys->failures, 1, memory_order_relaxed);
        /* What init started is this instance's: stop it with the failure. */
        for (px_actor *c = a->first_child; c != NULL; c = c->next_sib) {
            pxi_stop_child(c, PX_TERM_STOPPED, PX_OK);
        }
        pxi_sup_fail(a, code, why, false);
        pxi_ack_parent(a, PXI_SYS_RS_STARTED, 0);
        return;
    }
    a->flags |= PXI_AF_INITED;
    if (half_open) {
        a->flags |= PXI_AF_PROBE;
    }
    atomic_store(&a->state, PXI_A_ALIVE);
    pxi_ack_parent(a, PXI_SYS_RS_STARTED, 1);
}

void pxi_sup_success(px_actor *a) {
    a->flags &= ~PXI_AF_PROBE;
    pxi_ack_parent(a, PXI_SYS_HEALTHY, 0);
}

/* ---- parent side ---- */

static void on_failure(px_actor *p, pxi_fail_rec *f);

static void log_chain(px_actor *p, const pxi_fail_rec *f, const char *action) {
    char chain[1024];
    size_t off = 0;
    int depth = 0;
    for (const pxi_fail_rec *c = f; c != NULL && off < sizeof(chain); c = c->cause, depth++) {
        char rb[48];
        int k = snprintf(chain + off, sizeof(chain) - off, "%s%s (id %s, %s@%s): %s: %s",
                         depth ? " <- caused by " : "", px_ref_format(c->ref, rb, sizeof(rb)),
                         c->id[0] ? c->id : "-", c->normal ? "exit" : "failure", c->origin,
                         px_errname(c->code), c->reason);
        if (k < 0) {
            break;
        }
        off += (size_t)k;
    }
    px_log(p->sys, PX_LOG_CRIT, "root guardian: top-level actor failed: %s; %s", chain, action);
}

static void plan_step(px_actor *p, pxi_sup *s);
static void on_timer(px_actor *a, px_msg *m);

static void plan_start(px_actor *p, pxi_sup *s, px_actor **kids, uint32_t n, px_actor *failed,
                       bool stop, px_err code) {
    s->plan = true;
    s->pstop = stop;
    s->pcode = code;
    s->phase = 1;
    s->pk = kids;
    s->pn = n;
    s->pi = 0;
    s->pfailed = failed;
    free(s->pinc);
    s->pinc = malloc((n ? n : 1) * sizeof(*s->pinc));
    for (uint32_t i = 0; s->pinc != NULL && i < n; i++) {
        s->pinc[i] = atomic_load(&kids[i]->inc);
        pxi_sup_rec *r = rec_for(p, kids[i]);
        if (r != NULL) {
            r->state = stop ? PX_CHILD_STOPPING : PX_CHILD_RESTARTING;
        }
    }
    plan_step(p, s);
}

/* Sends the next step's signal, or ends the plan. */
static void plan_step(px_actor *p, pxi_sup *s) {
    while (s->plan) {
        if (s->pinc == NULL) {
            s->pi = s->pn;
            s->phase = 2;
        }
        if (s->phase == 1 && s->pi < s->pn) {
            px_actor *c = s->pk[s->pn - 1 - s->pi];
            if (is_my_child(p, c, s->pinc[s->pn - 1 - s->pi])) {
                if (!s->pstop) {
                    pxi_send_sys(c, PXI_SYS_RS_STOP, 0, 0);
                } else if (c == s->pfailed) {
                    pxi_stop_child(c, PX_TERM_FAILURE, s->pcode); /* acked by CHILD_TERM */
                } else {
                    pxi_stop_child(c, PX_TERM_STOPPED, PX_OK);
                }
                return;
            }
            s->pi++;
            continue;
        }
        if (s->phase == 1) {
            s->phase = 2;
            s->pi = s->pstop ? s->pn : 0; /* a Stop plan ends here */
        }
        if (s->pi < s->pn) {
            px_actor *c = s->pk[s->pi];
            if (s->pinc != NULL && is_my_child(p, c, s->pinc[s->pi])) {
                pxi_sup_rec *r = rec_find(s, c);
                bool half = r != NULL && r->half_open_next;
                if (r != NULL) {
                    r->half_open_next = false;
                }
                pxi_send_sys(c, PXI_SYS_RS_START, 0, half ? 1 : 0);
                return;
            }
            s->pi++;
            continue;
        }
        /* Done: failures that waited go now, oldest first. */
        s->plan = false;
        free(s->pk);
        s->pk = NULL;
        pxi_fail_rec *d = s->deferred, *d_tail = s->deferred_tail;
        s->deferred = s->deferred_tail = NULL;
        while (d != NULL && !s->plan) {
            pxi_fail_rec *nx = d->next;
            d->next = NULL;
            on_failure(p, d);
            d = nx;
        }
        if (d != NULL) { /* a new plan started: the rest waits again, first */
            d_tail->next = s->deferred;
            s->deferred = d;
            if (s->deferred_tail == NULL) {
                s->deferred_tail = d_tail;
            }
        }
        return;
    }
}

static bool plan_waits_on(pxi_sup *s, px_actor *c) {
    if (s == NULL || !s->plan || s->pi >= s->pn) {
        return false;
    }
    return s->phase == 1 ? s->pk[s->pn - 1 - s->pi] == c : s->pk[s->pi] == c;
}

/* The children a directive for `failed` covers, in start order. */
static uint32_t affected(px_actor *p, px_actor *failed, px_actor ***out) {
    px_strategy st = p->beh->strategy;
    if (st != PX_ALL_FOR_ONE && st != PX_REST_FOR_ONE) {
        px_actor **v = malloc(sizeof(*v));
        if (v == NULL) {
            *out = NULL;
            return 0;
        }
        v[0] = failed;
        *out = v;
        return 1;
    }
    px_actor **all;
    uint32_t n;
    (void)pxi_children_in_order(p, &all, &n); /* n = 0 on ENOMEM: the caller stops */
    if (st == PX_REST_FOR_ONE) {
        uint32_t k = 0;
        while (k < n && all[k] != failed) {
            k++;
        }
        memmove(all, all + k, (n - k) * sizeof(*all));
        n -= k;
    }
    *out = all;
    return n;
}

static void do_restart(px_actor *p, px_actor *failed) {
    pxi_sup *s = sup_get(p);
    px_actor **kids;
    uint32_t n = affected(p, failed, &kids);
    if (s == NULL || n == 0) {
        free(kids);
        px_log(p->sys, PX_LOG_CRIT, "out of memory restarting a child of actor %u; stopping it",
               p->id);
        pxi_stop_child(failed, PX_TERM_FAILURE, PX_ENOMEM);
        return;
    }
    plan_start(p, s, kids, n, failed, false, PX_OK);
}

/* Stop: the failed child alone at once; several children one by one in
 * reverse start order (a plan whose steps are acked by CHILD_TERM). */
static void do_stop(px_actor *p, px_actor *failed, px_err code) {
    pxi_sup *s = sup_get(p);
    px_actor **kids;
    uint32_t n = affected(p, failed, &kids);
    if (s == NULL || n <= 1) {
        free(kids);
        pxi_sup_rec *r = rec_find(s, failed);
        if (r != NULL) {
            r->state = PX_CHILD_STOPPING;
        }
        pxi_stop_child(failed, PX_TERM_FAILURE, code);
        return;
    }
    plan_start(p, s, kids, n, failed, true, code);
}

static uint32_t backoff_ms(const pxi_sup_rec *r) {
    const px_backoff *b = &r->pol.backoff;
    double d = b->initial_ms;
    for (uint32_t i = 1; i < r->consecutive && d < b->max_ms; i++) {
        d *= b->multiplier;
    }
    if (b->max_ms > 0 && d > b->max_ms) {
        d = b->max_ms;
    }
    if (b->jitter > 0) {
        double u = (double)(rand() % 2001 - 1000) / 1000.0; /* -1..1 */
        d += d * b->jitter * u;
    }
    return d < 0 ? 0 : (uint32_t)d;
}

static void arm_timer(px_actor *p, pxi_sup_rec *r, uint32_t ms) {
    px_msg *m = pxi_msg_new(PXI_MSG_SYS);
    if (m == NULL) {
        do_restart(p, r->a);
        return;
    }
    m->sysop = PXI_SYS_SUP_TIMER;
    m->corr = (uint64_t)(uintptr_t)r->a;
    m->tag = r->inc;
    if (pxi_timer_add(p->sys->timers, ms, 0, pxi_ref_of(p), m, 0, &r->timer) != PX_OK) {
        px_msg_free(m);
        r->timer = 0;
        do_restart(p, r->a);
    }
}

/* Escalates f: p fails with it as cause. */
static void escalate(px_actor *p, pxi_sup_rec *r, pxi_fail_rec *f, const char *why) {
    atomic_fetch_add_explicit(&p->sys->escalations, 1, memory_order_relaxed);
    if (r != NULL) {
        r->state = PX_CHILD_SUSPENDED;
        r->escalated = true;
    }
    char reason[200];
    pxi_scopy(reason, sizeof(reason), why);
    pxi_actor_ext *x = pxi_ext_get(p);
    if (x == NULL) {
        pxi_fail_rec_free(f);
        pxi_begin_stop(p, PX_TERM_FAILURE, PX_ENOMEM);
        return;
    }
    pxi_fail_rec_free(x->cause);
    x->cause = f;
    atomic_fetch_add_explicit(&p->sys->failures, 1, memory_order_relaxed);
    char rb[48];
    px_log(p->sys, PX_LOG_ERROR, "actor %s (%s) escalates: %s",
           px_ref_format(pxi_ref_of(p), rb, sizeof(rb)), p->beh->name ? p->beh->name : "?", reason);
    if (p->parent == NULL) {
        pxi_begin_stop(p, PX_TERM_FAILURE, f->code);
        return;
    }
    pxi_sup_fail(p, f->code, reason, false);
}

static uint32_t count_recent(const int64_t *v, uint32_t n, int64_t since) {
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (v[i] >= since) {
            k++;
        }
    }
    return k;
}

/* Handles one child failure in the parent's context. Takes f. */
static void on_failure(px_actor *p, pxi_fail_rec *f) {
    px_system *sys = p->sys;
    px_actor *c = f->child;
    if (!is_my_child(p, c, f->inc) || atomic_load(&c->state) != PXI_A_SUSPENDED) {
        pxi_fail_rec_free(f); /* it is already stopping or gone */
        return;
    }
    pxi_sup *s = sup_get(p);
    if (s != NULL && s->plan) {
        if (s->deferred_tail != NULL) {
            s->deferred_tail->next = f;
        } else {
            s->deferred = f;
        }
        s->deferred_tail = f;
        return;
    }
    pxi_sup_rec *r = rec_for(p, c);
    if (r == NULL) {
        pxi_fail_rec_free(f);
        pxi_stop_child(c, PX_TERM_FAILURE, PX_ENOMEM);
        return;
    }
    int64_t now = f->time_ms;
    int64_t since = now - (int64_t)r->pol.window_ms;
    r->failures++;
    r->consecutive = (r->last_fail_ms != 0 && r->last_fail_ms >= since) ? r->consecutive + 1 : 1;
    if (r->breaker == PX_BREAKER_HALF_OPEN || r->breaker == PX_BREAKER_OPEN) {
        r->consecutive = r->consecutive < r->pol.breaker.failures ? r->pol.breaker.failures
                                                                  : r->consecutive;
    }
    r->last_fail_ms = now;
    pxi_sup_hist *h = r->h;
    if (h == NULL) {
        h = r->h = calloc(1, sizeof(*h));
    }
    if (h == NULL) {
        pxi_fail_rec_free(f);
        r->state = PX_CHILD_STOPPING;
        pxi_stop_child(c, PX_TERM_FAILURE, PX_ENOMEM);
        return;
    }
    pxi_scopy(h->last_reason, sizeof(h->last_reason), f->reason);
    h->fail_times[h->nfail_times++ % FAIL_RING] = now;
    uint32_t nft = h->nfail_times < FAIL_RING ? h->nfail_times : FAIL_RING;
    f->count_in_window = count_recent(h->fail_times, nft, since);
    pxi_scopy(f->id, sizeof(f->id), r->id);
    r->state = PX_CHILD_SUSPENDED;

    px_directive d;
    bool root = (p->flags & PXI_AF_ROOT) != 0;
    if (f->normal) {
        d = PX_DIRECTIVE_RESTART;
    } else if (root) {
        d = sys->cfg.root_policy == PX_ROOT_RESTART ? PX_DIRECTIVE_RESTART : PX_DIRECTIVE_STOP;
        log_chain(p, f, d == PX_DIRECTIVE_RESTART ? "restarting it" : "stopping it");
    } else if (p->beh->on_child_failure != NULL) {
        /* The decider sees the chain as px_failure records. */
        px_failure chain[8];
        (void)pxi_fail_chain(f, chain, 8);
        d = p->beh->on_child_failure((px_ctx *)p, &chain[0]);
    } else {
        d = PX_DIRECTIVE_RESTART;
    }
    if (d == PX_DIRECTIVE_RESTART && r->rtype == PX_RESTART_TEMPORARY) {
        d = PX_DIRECTIVE_STOP;
    }
    if (root && d == PX_DIRECTIVE_ESCALATE) {
        d = PX_DIRECTIVE_STOP;
    }
    if (!root && px_log_enabled(sys, f->normal ? PX_LOG_INFO : PX_LOG_WARN)) {
        char pb[48];
        px_log(sys, f->normal ? PX_LOG_INFO : PX_LOG_WARN,
               "supervisor %s (%s): child %s %s: %s: %s; directive %s",
               px_ref_format(pxi_ref_of(p), pb, sizeof(pb)), p->beh->name, r->id,
               f->normal ? "stopped itself" : "failed", px_errname(f->code), f->reason,
               px_directive_name(d));
    }
    switch (d) {
    case PX_DIRECTIVE_RESUME:
        atomic_fetch_add_explicit(&sys->resumed, 1, memory_order_relaxed);
        r->state = PX_CHILD_RUNNING;
        pxi_send_sys(c, PXI_SYS_RESUME, 0, 0);
        pxi_fail_rec_free(f);
        return;
    case PX_DIRECTIVE_ESCALATE: {
        char why[320];
        snprintf(why, sizeof(why), "child %s failed: %s: %s", r->id, px_errname(f->code),
                 f->reason);
        escalate(p, r, f, why);
        return;
    }
    case PX_DIRECTIVE_RESTART:
        break;
    case PX_DIRECTIVE_STOP:
    default:
        do_stop(p, c, f->code == PX_OK ? PX_EFAIL : f->code);
        pxi_fail_rec_free(f);
        return;
    }
    /* Restart: within limits? */
    while (h->rt_lo < h->nrt && h->rt[h->rt_lo] < since) {
        h->rt_lo++; /* out of the window */
    }
    uint32_t recent = h->nrt - h->rt_lo;
    if (recent + 1 > r->pol.max_restarts) {
        char why[320];
        snprintf(why, sizeof(why), "restart limit: child %s failed %u times within %u ms (max %u restarts)",
                 r->id, recent + 1, r->pol.window_ms, r->pol.max_restarts);
        if (root) {
            log_chain(p, f, "restart limit reached; stopping it");
            do_stop(p, c, f->code == PX_OK ? PX_EFAIL : f->code);
            pxi_fail_rec_free(f);
            return;
        }
        escalate(p, r, f, why);
        return;
    }
    if (h->nrt == h->rtcap) {
        if (h->rt_lo > 0) { /* compact */
            memmove(h->rt, h->rt + h->rt_lo, recent * sizeof(*h->rt));
            h->nrt = recent;
            h->rt_lo = 0;
        } else {
            uint32_t nc = h->rtcap ? h->rtcap * 2 : 4;
            int64_t *nr = realloc(h->rt, nc * sizeof(*nr));
            if (nr != NULL) {
                h->rt = nr;
                h->rtcap = nc;
            }
        }
    }
    if (h->nrt < h->rtcap) {
        h->rt[h->nrt++] = now;
    }
    pxi_fail_rec_free(f);
    if (r->breaker != PX_BREAKER_OFF && r->consecutive >= r->pol.breaker.failures) {
        r->breaker = PX_BREAKER_OPEN;
        r->state = PX_CHILD_OPEN;
        r->half_open_next = true;
        px_log(sys, PX_LOG_WARN, "circuit breaker of child %s opens for %u ms after %u failures",
               r->id, r->pol.breaker.cooldown_ms, r->consecutive);
        arm_timer(p, r, r->pol.breaker.cooldown_ms);
        return;
    }
    if (r->pol.backoff.initial_ms > 0) {
        r->state = PX_CHILD_RESTARTING;
        arm_timer(p, r, backoff_ms(r));
        return;
    }
    do_restart(p, c);
}

/* A restart of this (escalated, suspended) child's parent resumed: resume
 * the children whose failures it had escalated. */
static void resume_escalated(px_actor *a) {
    pxi_sup *s = a->ext ? a->ext->sup : NULL;
    for (uint32_t i = 0; s != NULL && i < s->n; i++) {
        pxi_sup_rec *r = s->recs[i];
        if (r->escalated) {
            r->escalated = false;
            r->state = PX_CHILD_RUNNING;
            if (is_my_child(a, r->a, r->inc)) {
                pxi_send_sys(r->a, PXI_SYS_RESUME, 0, 0);
            }
        }
    }
}

void pxi_sup_sys(px_actor *a, px_msg *m) {
    pxi_sup *s = a->ext ? a->ext->sup : NULL;
    if ((a->flags & PXI_AF_HOST) && pxi_host_child_sys(a, m)) {
        return;
    }
    switch (m->sysop) {
    case PXI_SYS_FAILURE:
        on_failure(a, (pxi_fail_rec *)(uintptr_t)m->corr);
        break;
    case PXI_SYS_PROXY_EV:
    case PXI_SYS_HOST_OP:
        pxi_remote_sys(a, m);
        break;
    case PXI_SYS_RESUME:
        if (pxi_is_proxy(a)) {
            pxi_proxy_resume(a);
            break;
        }
        if (atomic_load(&a->state) == PXI_A_SUSPENDED) {
            atomic_store(&a->state, PXI_A_ALIVE);
            pxi_fail_rec_free(a->ext ? a->ext->cause : NULL);
            if (a->ext != NULL) {
                a->ext->cause = NULL;
            }
            resume_escalated(a);
        }
        break;
    case PXI_SYS_RS_STOP:
        rs_stop(a);
        break;
    case PXI_SYS_RS_START:
        rs_start(a, m->tag == 1);
        break;
    case PXI_SYS_RS_STOPPED:
    case PXI_SYS_RS_STARTED: {
        px_actor *c = (px_actor *)(uintptr_t)m->corr;
        if (m->sysop == PXI_SYS_RS_STARTED) {
            pxi_sup_rec *r = rec_find(s, c);
            if (r != NULL && m->tag == 1) {
                r->instance++;
                r->restarts++;
                r->started_ms = started_now_ms();
                r->state = PX_CHILD_RUNNING;
                if (r->breaker == PX_BREAKER_OPEN) {
                    r->breaker = PX_BREAKER_HALF_OPEN;
                }
                atomic_fetch_add_explicit(&a->sys->restarts, 1, memory_order_relaxed);
            }
        }
        if (plan_waits_on(s, c) &&
            (s->phase == 1) == (m->sysop == PXI_SYS_RS_STOPPED)) {
            s->pi++;
            plan_step(a, s);
        }
        break;
    }
    case PXI_SYS_SUP_TIMER:
        on_timer(a, m);
        break;
    case PXI_SYS_DUMP:
        pxi_dump_handle(a, (pxi_dump *)(uintptr_t)m->corr);
        break;
    case PXI_SYS_HEALTHY: {
        px_actor *c = (px_actor *)(uintptr_t)m->corr;
        pxi_sup_rec *r = rec_find(s, c);
        if (r != NULL && r->breaker == PX_BREAKER_HALF_OPEN) {
            r->breaker = PX_BREAKER_CLOSED;
            r->consecutive = 0;
        }
        break;
    }
    case PXI_SYS_WATCH:
    case PXI_SYS_UNWATCH: {
        pxi_actor_ext *x = pxi_ext_get(a);
        if (x == NULL) {
            break;
        }
        uint32_t i = 0;
        while (i < x->nwatchers && !px_ref_eq(x->watchers[i], m->sender)) {
            i++;
        }
        if (m->sysop == PXI_SYS_UNWATCH) {
            if (i < x->nwatchers) {
                x->watchers[i] = x->watchers[--x->nwatchers];
            }
        } else if (i == x->nwatchers) {
            if (x->nwatchers == x->capwatchers) {
                uint32_t nc = x->capwatchers ? x->capwatchers * 2 : 4;
                px_ref *nw = realloc(x->watchers, nc * sizeof(*nw));
                if (nw == NULL) {
                    px_log(a->sys, PX_LOG_ERROR, "out of memory adding a watcher to actor %u",
                           a->id);
                    break;
                }
                x->watchers = nw;
                x->capwatchers = nc;
            }
            x->watchers[x->nwatchers++] = m->sender;
        }
        break;
    }
    default:
        break;
    }
}

void pxi_sup_child_term(px_actor *p, px_actor *c) {
    pxi_sup *s = p->ext ? p->ext->sup : NULL;
    pxi_sup_rec *r = rec_find(s, c);
    if (r != NULL) {
        rec_remove(s, r);
    }
    if (plan_waits_on(s, c)) {
        s->pi++;
        plan_step(p, s);
    }
}

/* ---- messages in the user queue ---- */

/* The router's watch (a watch of an actor on another node), PX_EUNREACHABLE
 * without one. */
static px_err router_watch(px_system *sys, px_ref watcher, px_ref target, int on) {
    const px_router *r = pxi_router_enter(sys);
    px_err rv = r != NULL && r->watch != NULL ? r->watch(r->arg, watcher, target, on)
                                              : PX_EUNREACHABLE;
    pxi_router_leave(sys, r);
    return rv;
}

static bool watching_take(px_actor *a, px_ref who) {
    pxi_actor_ext *x = a->ext;
    for (uint32_t i = 0; x != NULL && i < x->nwatching; i++) {
        if (px_ref_eq(x->watching[i], who)) {
            x->watching[i] = x->watching[--x->nwatching];
            return true;
        }
    }
    return false;
}

bool pxi_sup_user(px_actor *a, px_msg *m) {
    return !watching_take(a, m->sender); /* unwatched (or a duplicate): drop */
}

static void on_timer(px_actor *a, px_msg *m) {
    pxi_sup *s = a->ext ? a->ext->sup : NULL;
    px_actor *c = (px_actor *)(uintptr_t)m->corr;
    pxi_sup_rec *r = rec_find(s, c);
    if (r == NULL || r->inc != m->tag || !is_my_child(a, c, r->inc)) {
        return;
    }
    r->timer = 0;
    if (s->plan) {
        arm_timer(a, r, 1); /* after the plan in progress */
    } else {
        do_restart(a, c);
    }
}

/* ---- watches ---- */

/* From `from` (the actor that ended, on its worker) the Terminated goes
 * through the outbox, behind what that actor sent before it ended. */
static void send_terminated(px_system *sys, px_actor *from, px_ref to, px_ref who,
                            uint32_t reason, px_err code) {
    px_msg *m = pxi_msg_new(PX_MSG_TERMINATED);
    if (m == NULL) {
        px_log(sys, PX_LOG_CRIT, "out of memory sending Terminated");
        return;
    }
    m->sender = who;
    m->tag = reason;
    m->corr = (uint64_t)(int64_t)code;
    if (from != NULL) {
        (void)pxi_send_from(from, to, &m);
    } else {
        (void)pxi_deliver(sys, to, &m, false);
    }
    if (m != NULL) {
        px_msg_free(m);
    }
}

static uint32_t term_reason_of(px_actor *a) {
    uint32_t r = (a->flags & PXI_AF_TERM_MASK) >> PXI_AF_TERM_SHIFT;
    return r == 0 ? PX_TERM_STOPPED : r;
}

void pxi_sup_finalize(px_actor *a) {
    pxi_actor_ext *x = a->ext;
    if (x == NULL) {
        return;
    }
    px_system *sys = a->sys;
    px_ref me = pxi_ref_of(a);
    uint32_t reason = term_reason_of(a);
    for (uint32_t i = 0; i < x->nwatchers; i++) {
        send_terminated(sys, a, x->watchers[i], me, reason,
                        reason == PX_TERM_FAILURE ? x->term_code : PX_OK);
    }
    x->nwatchers = 0;
    /* Stop watching: the targets need not tell a dead watcher. */
    for (uint32_t i = 0; i < x->nwatching; i++) {
        if (x->watching[i].node != sys->node) {
            (void)router_watch(sys, me, x->watching[i], 0);
            continue;
        }
        px_actor *ta = pxi_pin_ref(sys, x->watching[i]);
        if (ta != NULL) {
            px_msg *m = pxi_msg_new(PXI_MSG_SYS);
            if (m != NULL) {
                m->sysop = PXI_SYS_UNWATCH;
                m->sender = me;
                pxi_push_sys(ta, m);
            }
            pxi_unpin(ta);
        }
    }
    x->nwatching = 0;
    pxi_fail_rec_free(x->cause);
    x->cause = NULL;
}

void pxi_sup_drain_sys(px_actor *a, px_msg *m) {
    px_system *sys = a->sys;
    if (m->sysop == PXI_SYS_WATCH) {
        /* The watch came too late to be registered: answer it now. */
        send_terminated(sys, NULL, m->sender, pxi_ref_of(a), term_reason_of(a), PX_OK);
    } else if (m->sysop == PXI_SYS_FAILURE) {
        pxi_fail_rec_free((pxi_fail_rec *)(uintptr_t)m->corr);
    } else if (m->sysop == PXI_SYS_DUMP) {
        pxi_dump_drop((pxi_dump *)(uintptr_t)m->corr);
    } else {
        pxi_remote_drain_sys(a, m);
    }
    px_msg_free(m);
}

/* ---- watches for other nodes ---- */

px_err px_system_deliver_terminated(px_system *sys, px_ref watcher, px_ref who,
                                    px_term_reason reason, px_err code) {
    if (sys == NULL || watcher.node != sys->node) {
        return PX_EINVAL;
    }
    px_actor *a = pxi_pin_ref(sys, watcher);
    if (a == NULL) {
        return PX_EDEAD;
    }
    pxi_unpin(a);
    send_terminated(sys, NULL, watcher, who, reason, code);
    return PX_OK;
}

px_err px_system_watch_for(px_system *sys, px_ref target, px_ref watcher, int on) {
    if (sys == NULL || target.node != sys->node || watcher.node == sys->node) {
        return PX_EINVAL;
    }
    px_actor *t = pxi_is_current(sys, target) ? pxi_pin_ref(sys, target) : NULL;
    if (t == NULL) {
        return PX_EDEAD;
    }
    px_msg *m = pxi_msg_new(PXI_MSG_SYS);
    if (m == NULL) {
        pxi_unpin(t);
        return PX_ENOMEM;
    }
    m->sysop = on ? PXI_SYS_WATCH : PXI_SYS_UNWATCH;
    m->sender = watcher;
    pxi_push_sys(t, m);
    pxi_unpin(t);
    return PX_OK;
}

/* ---- public ---- */

void px_restart_policy_init(px_restart_policy *p) {
    if (p == NULL) {
        return;
    }
    memset(p, 0, sizeof(*p));
    p->max_restarts = 3;
    p->window_ms = 5000;
    p->backoff.multiplier = 2.0;
}

static px_err policy_check(const px_restart_policy *p) {
    if (p->window_ms == 0 || p->window_ms > PXI_MAX_DELAY_MS || p->max_restarts > 1000000) {
        return PX_EINVAL;
    }
    const px_backoff *b = &p->backoff;
    if (b->initial_ms > 0 && (b->multiplier < 1.0 || b->jitter < 0 || b->jitter > 1 ||
                              b->initial_ms > PXI_MAX_DELAY_MS || b->max_ms > PXI_MAX_DELAY_MS ||
                              (b->max_ms > 0 && b->max_ms < b->initial_ms))) {
        return PX_EINVAL;
    }
    if (p->breaker.failures > 0 &&
        (p->breaker.cooldown_ms == 0 || p->breaker.cooldown_ms > PXI_MAX_DELAY_MS)) {
        return PX_EINVAL;
    }
    return PX_OK;
}

px_err px_spawn_child(px_ctx *ctx, const px_child_spec *spec, px_msg **arg, px_ref *out) {
    if (ctx == NULL || spec == NULL || spec->id == NULL || spec->behavior == NULL) {
        return PX_EINVAL;
    }
    size_t idlen = strlen(spec->id);
    if (idlen == 0 || idlen > 63 || spec->id[0] == '#' ||
        spec->restart < PX_RESTART_PERMANENT || spec->restart > PX_RESTART_TEMPORARY) {
        return PX_EINVAL;
    }
    px_restart_policy pol;
    if (spec->policy != NULL) {
        pol = *spec->policy;
    } else {
        px_restart_policy_init(&pol);
    }
    if (policy_check(&pol) != PX_OK) {
        return PX_EINVAL;
    }
    px_actor *p = (px_actor *)ctx;
    pxi_sup *s = sup_get(p);
    if (s == NULL) {
        return PX_ENOMEM;
    }
    uint32_t h = pxi_fnv1a(spec->id);
    pxi_strmap_prefetch(&s->ids, h);
    const px_behavior *b = s->last_beh;
    void *proxy = NULL; /* placed on another node: a proxy stands in for it */
    uint32_t aflags = spec->restart == PX_RESTART_PERMANENT ? PXI_AF_PERMANENT : 0;
    const px_placement *pl = spec->placement;
    if (pl != NULL && pl->policy != PX_PLACE_HERE &&
        !(pl->policy == PX_PLACE_NODE && pl->node != NULL &&
          strcmp(pl->node, p->sys->node_name) == 0)) {
        px_err rv = pxi_proxy_new(p, spec, &proxy);
        if (rv != PX_OK) {
            return rv;
        }
        b = &pxi_proxy_beh;
    } else if (b == NULL || strcmp(b->name, spec->behavior) != 0) {
        /* Behaviors stay registered for the system's life, so the one found
         * last time is still the one registered under its name. */
        b = px_behavior_lookup(p->sys, spec->behavior);
        if (b == NULL) {
            return PX_ENOENT;
        }
        s->last_beh = b;
    }
    /* One probe of the ids map both refuses a duplicate and claims the id. */
    pxi_sup_rec *r = rec_alloc(spec->id, spec->restart, &pol);
    if (r == NULL) {
        pxi_proxy_free(proxy);
        return PX_ENOMEM;
    }
    px_err rv = pxi_strmap_put_hashed(&s->ids, r->id, h, (pxi_strval){.ptr = r}, NULL);
    if (rv == PX_OK && !rec_reserve(s)) {
        pxi_strmap_del(&s->ids, r->id, NULL);
        rv = PX_ENOMEM;
    }
    px_ref ref;
    if (rv == PX_OK) {
        /* A proxy's own mailbox is unbounded: the child's bound holds there. */
        px_spawn_opts o = {.mailbox = proxy ? &(px_mailbox_opts){0} : spec->mailbox};
        rv = pxi_spawn(p->sys, p, b, arg, &o, &ref, aflags, proxy);
        if (rv != PX_OK) {
            pxi_strmap_del(&s->ids, r->id, NULL);
        }
    }
    if (rv != PX_OK) {
        pxi_proxy_free(proxy);
        free(r);
        return rv;
    }
    px_actor *c = pxi_slot(p->sys, ref.id);
    rec_attach(s, r, c);
    if (proxy != NULL && (rv = pxi_proxy_first_start(c)) != PX_OK) {
        rec_remove(s, r); /* nothing started: the id is free again */
        return rv;
    }
    if (out != NULL) {
        *out = ref;
    }
    return PX_OK;
}

void pxi_child_info(px_actor *p, px_actor *c, px_child_info *out) {
    memset(out, 0, sizeof(*out));
    pxi_sup_rec *r = rec_find(p->ext ? p->ext->sup : NULL, c);
    out->ref = pxi_ref_of(c);
    uint32_t st = atomic_load(&c->state);
    if (r != NULL) {
        pxi_scopy(out->id, sizeof(out->id), r->id);
        out->state = r->state;
        out->restart = r->rtype;
        out->instance = r->instance;
        out->restarts = r->restarts;
        out->failures = r->failures;
        out->consecutive_failures = r->consecutive;
        out->last_failure_ms = r->last_fail_ms;
        if (r->h != NULL) {
            pxi_scopy(out->last_reason, sizeof(out->last_reason), r->h->last_reason);
        }
        out->started_ms = r->started_ms;
        out->breaker = r->breaker;
    } else {
        snprintf(out->id, sizeof(out->id), "#%u", c->id);
        out->state = PX_CHILD_RUNNING;
        out->restart = PX_RESTART_TRANSIENT;
        out->instance = 1;
    }
    if (st >= PXI_A_STOPPING) {
        out->state = PX_CHILD_STOPPING;
    }
    if (pxi_is_proxy(c)) {
        pxi_proxy_info_fill(c, out);
    } else {
        pxi_scopy(out->node, sizeof(out->node), c->sys->node_name);
    }
}

px_err px_children(px_ctx *ctx, px_child_info *out, size_t cap, size_t *n) {
    if (ctx == NULL || n == NULL || (out == NULL && cap > 0)) {
        return PX_EINVAL;
    }
    px_actor *p = (px_actor *)ctx;
    px_actor **v;
    uint32_t k;
    px_err rv = pxi_children_in_order(p, &v, &k);
    if (rv != PX_OK) {
        return rv;
    }
    for (uint32_t i = 0; i < k && i < cap; i++) {
        pxi_child_info(p, v[i], &out[i]);
    }
    *n = k;
    free(v);
    return PX_OK;
}

px_err px_child(px_ctx *ctx, const char *id, px_child_info *out) {
    if (ctx == NULL || id == NULL || out == NULL) {
        return PX_EINVAL;
    }
    px_actor *p = (px_actor *)ctx;
    pxi_sup *s = p->ext ? p->ext->sup : NULL;
    pxi_strval v;
    if (id[0] != '#') { /* a spec'd child: the id map */
        if (s == NULL || pxi_strmap_get(&s->ids, id, &v) != PX_OK) {
            return PX_ENOENT;
        }
        pxi_child_info(p, ((const pxi_sup_rec *)v.ptr)->a, out);
        return PX_OK;
    }
    for (px_actor *c = p->first_child; c != NULL; c = c->next_sib) { /* "#<slot>" */
        char b[24];
        snprintf(b, sizeof(b), "#%u", c->id);
        if (strcmp(b, id) == 0) {
            pxi_child_info(p, c, out);
            return PX_OK;
        }
    }
    return PX_ENOENT;
}

px_err px_watch(px_ctx *ctx, px_ref ref) {
    if (ctx == NULL || px_ref_is_nil(ref)) {
        return PX_EINVAL;
    }
    px_actor *a = (px_actor *)ctx;
    px_system *sys = a->sys;
    px_ref me = pxi_ref_of(a);
    if (px_ref_eq(ref, me)) {
        return PX_EINVAL;
    }
    bool remote = ref.node != sys->node;
    pxi_actor_ext *x = pxi_ext_get(a);
    if (x == NULL) {
        return PX_ENOMEM;
    }
    for (uint32_t i = 0; i < x->nwatching; i++) {
        if (px_ref_eq(x->watching[i], ref)) {
            return PX_OK;
        }
    }
    if (x->nwatching == x->capwatching) {
        uint32_t nc = x->capwatching ? x->capwatching * 2 : 4;
        px_ref *nw = realloc(x->watching, nc * sizeof(*nw));
        if (nw == NULL) {
            return PX_ENOMEM;
        }
        x->watching = nw;
        x->capwatching = nc;
    }
    if (remote) {
        /* Its Terminated can only reach this actor's mailbox, read after
         * this turn: the watch is in the set by then. */
        px_err rv = router_watch(sys, me, ref, 1);
        if (rv == PX_OK) {
            x->watching[x->nwatching++] = ref;
        }
        return rv;
    }
    px_msg *m = pxi_msg_new(PXI_MSG_SYS);
    if (m == NULL) {
        return PX_ENOMEM;
    }
    x->watching[x->nwatching++] = ref;
    px_actor *t = pxi_pin_ref(sys, ref);
    if (t == NULL) {
        px_msg_free(m);
        send_terminated(sys, NULL, me, ref, PX_TERM_NO_ACTOR, PX_OK);
        return PX_OK;
    }
    m->sysop = PXI_SYS_WATCH;
    m->sender = me;
    pxi_push_sys(t, m);
    pxi_unpin(t);
    return PX_OK;
}

px_err px_unwatch(px_ctx *ctx, px_ref ref) {
    if (ctx == NULL) {
        return PX_EINVAL;
    }
    px_actor *a = (px_actor *)ctx;
    px_system *sys = a->sys;
    if (!watching_take(a, ref)) {
        return PX_ENOENT;
    }
    if (ref.node != sys->node) {
        (void)router_watch(sys, pxi_ref_of(a), ref, 0);
        return PX_OK;
    }
    px_actor *t = pxi_pin_ref(sys, ref);
    if (t != NULL) {
        px_msg *m = pxi_msg_new(PXI_MSG_SYS);
        if (m != NULL) {
            m->sysop = PXI_SYS_UNWATCH;
            m->sender = pxi_ref_of(a);
            pxi_push_sys(t, m);
        }
        pxi_unpin(t);
    }
    return PX_OK;
}

px_err px_msg_terminated(const px_msg *m, px_ref *who, px_term_reason *reason, px_err *code) {
    if (m == NULL || m->kind != PX_MSG_TERMINATED) {
        return PX_ETYPE;
    }
    if (who != NULL) {
        *who = m->sender;
    }
    if (reason != NULL) {
        *reason = (px_term_reason)m->tag;
    }
    if (code != NULL) {
        *code = (px_err)(int64_t)m->corr;
    }
    return PX_OK;
}

const char *px_term_reason_name(px_term_reason r) {
    switch (r) {
    case PX_TERM_NORMAL: return "normal";
    case PX_TERM_STOPPED: return "stopped";
    case PX_TERM_FAILURE: return "failure";
    case PX_TERM_NO_ACTOR: return "no such actor";
    case PX_TERM_NODE_DOWN: return "node down";
    case PX_TERM_NODE_FENCED: return "node fenced";
    }
    return "unknown";
}

const char *px_directive_name(px_directive d) {
    switch (d) {
    case PX_DIRECTIVE_RESUME: return "resume";
    case PX_DIRECTIVE_RESTART: return "restart";
    case PX_DIRECTIVE_STOP: return "stop";
    case PX_DIRECTIVE_ESCALATE: return "escalate";
    }
    return "unknown";
}
