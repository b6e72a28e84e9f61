/*
 * runtime.h — the structs shared by the scheduler, the actor code, timers
 * and the system: px_actor, pxi_worker, px_system. Private to core.
 *
 * Actor slots are type-stable: they live in chunks that are only freed with
 * the system, and a slot is found from its id in O(1). Safety of a send to a
 * ref rests on three rules:
 *  1. A sender pins the slot (rc++) and only then checks incarnation and
 *     state; it pushes only if the check passed, then unpins.
 *  2. A living actor holds one pin of its own; it drops it when its parent
 *     has unlinked it after it finished stopping.
 *  3. Whoever drops rc to 0 while the state is DEAD (one CAS decides)
 *     reclaims the slot: it dead-letters what raced into the queues and
 *     puts the slot on the free list; a reuse bumps the incarnation.
 * So a ref to an older incarnation never reaches a newer actor, and nothing
 * that was accepted is lost without a dead-letter record.
 */
#ifndef PX_RUNTIME_H
#define PX_RUNTIME_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/supplemental/util/platform.h>

#include <plexus/actor.h>
#include <plexus/router.h>
#include <plexus/supervisor.h>
#include <plexus/system.h>

#include "mailbox.h"
#include "msg_int.h"
#include "registry.h"

#define PXI_CACHELINE 64

/* Longest timer delay or ask timeout: one day. */
#define PXI_MAX_DELAY_MS 86400000u

/* Actor lifecycle states. Senders may push while state < DEAD. */
enum {
    PXI_A_FREE = 0,
    PXI_A_STARTING = 1,   /* slot taken, init running */
    PXI_A_ALIVE = 2,
    PXI_A_SUSPENDED = 3,  /* failed; waits for its parent's directive (mailbox kept) */
    PXI_A_RESTARTING = 4, /* being restarted by its parent (mailbox kept) */
    PXI_A_STOPPING = 5,   /* waiting for children; user messages dead-lettered */
    PXI_A_DEAD = 6,       /* finished; waiting for pins to drain */
    PXI_A_RECLAIM = 7,    /* being reclaimed (one thread) */
};

/* Owner-context flags (px_actor.flags). */
enum {
    PXI_AF_STOP_REQ = 1u << 0,  /* px_stop_self was called */
    PXI_AF_FAILED = 1u << 1,    /* px_fail was called */
    PXI_AF_ROOT = 1u << 2,      /* the root guardian */
    PXI_AF_INITED = 1u << 3,    /* init succeeded: stop must run */
    PXI_AF_TOOK = 1u << 4,      /* receive kept the message: do not free it */
    PXI_AF_PERMANENT = 1u << 5, /* a permanent child: a normal stop is restarted */
    PXI_AF_RS_STOP = 1u << 6,   /* restarting: ack the parent once children are gone */
    PXI_AF_PROBE = 1u << 7,     /* half-open breaker: report the first success */
    PXI_AF_SUBSCRIBED = 1u << 12, /* has topic subscriptions (ext->topics, topic.c) */
    PXI_AF_HOST = 1u << 14,     /* parent here of a child whose parent is on another node */
};
/* Bits 8..11 of flags: the px_term_reason this actor ends with (kept
 * until the slot is reused, for watches that arrive after the end). */
#define PXI_AF_TERM_SHIFT 8
#define PXI_AF_TERM_MASK (0xfu << PXI_AF_TERM_SHIFT)

struct pxi_sup;
struct pxi_fail_rec;
struct pxi_topic;
struct pxi_topics;

typedef struct pxi_pending {
    uint64_t corr;
    uint64_t timer;
    bool remote; /* to another node: also in sys->rasks (rask.c) */
} pxi_pending;

/* Asks waiting on actors of other nodes (rask.c): a hash of
 * (asker, corr) -> target, under mtx. */
typedef struct pxi_rasks {
    nng_mtx *mtx;
    struct pxi_rask **b;
    size_t nb, n;
} pxi_rasks;

/* Rarely used per-actor data, allocated on first use. Owner context only. */
typedef struct pxi_actor_ext {
    px_msg *arg;             /* start argument, kept for the actor's life */
    pxi_pending *pend;       /* outstanding asks */
    uint32_t npend, cappend;
    uint64_t next_corr;
    uint64_t *timers;        /* timers this actor started (cancelled at stop) */
    uint32_t ntimers, captimers;
    px_err fail_code;
    char fail_reason[160];
    px_err term_code;             /* failure code when ending with PX_TERM_FAILURE */
    struct pxi_sup *sup;          /* supervision of this actor's children (sup.c) */
    struct pxi_fail_rec *cause;   /* set while failing by escalation */
    px_ref *watchers;             /* who watches this actor */
    uint32_t nwatchers, capwatchers;
    px_ref *watching;             /* whom this actor watches */
    uint32_t nwatching, capwatching;
    struct pxi_topic **topics;    /* topics this actor subscribes to (topic.c) */
    uint32_t ntopics, captopics;
} pxi_actor_ext;

typedef struct px_actor px_actor;

/* Three cache lines, grouped by who writes them (checked below):
 *  0: written by senders on every push, plus tree links (spawn/stop only);
 *  1: read by senders, written only at lifecycle changes;
 *  2: the owner's hot fields (the worker running the actor). */
struct px_actor {
    /* --- line 0: senders (any thread) --- */
    _Atomic(pxi_node *) mb_tail;  /* user mailbox tail (unbounded) */
    _Atomic(pxi_node *) sys_tail; /* system queue tail */
    _Atomic uint32_t rc;          /* pins; pairs with state (rule 1) */
    _Atomic uint32_t sched;       /* 1 while queued to run or running */
    _Atomic uint64_t pushed;      /* user messages pushed (unbounded) */
    px_actor *first_child;        /* parent context (root: sys->tree_mtx);
                                     NULL = no children */
    px_actor *next_sib, *prev_sib;
    px_actor *next_free;          /* free-list link (slot_mtx) while FREE;
                                     global run-queue link (gq_mtx) while queued */
    /* --- line 1: read-mostly --- */
    _Atomic uint32_t state __attribute__((aligned(PXI_CACHELINE)));
    _Atomic uint32_t inc;         /* incarnation of the current occupant */
    pxi_bq *bq;                   /* bounded mailbox or NULL; set before ALIVE */
    px_system *sys;
    const px_behavior *beh;
    px_actor *parent;             /* NULL only for the root guardian */
    void *ustate;
    pxi_actor_ext *ext;           /* owner context */
    char *name;                   /* local name or NULL; sys->names_mtx */
    /* --- line 2: owner context --- */
    pxi_node *mb_head __attribute__((aligned(PXI_CACHELINE)));
    pxi_node *sys_head;
    pxi_node mb_stub;
    pxi_node sys_stub;
    _Atomic uint64_t popped;      /* user messages popped (unbounded); owner writes */
    _Atomic uint64_t processed;   /* owner writes; stats read */
    _Atomic uint32_t hwm;         /* owner writes; stats read */
    uint32_t node_inc;            /* the node's incarnation at spawn: what refs
                                     to this occupant carry; set before STARTING */
    uint32_t flags;
    uint32_t id;
};

_Static_assert(sizeof(struct px_actor) == 3 * PXI_CACHELINE, "px_actor is three lines");

/* A worker's outbox: user messages an actor sent during its turn to local
 * unbounded mailboxes, chained per target and pushed with one exchange per
 * chain at the end of the turn (or when a chain reaches PXI_OUT_CHAIN). Each
 * entry holds a pin on its target (rule 1), taken and checked at the first
 * message. Flushed before the actor is released, so a sender's next turn on
 * another worker can never overtake its own earlier messages. */
#define PXI_OUTBOX 8
#define PXI_OUT_CHAIN 64
typedef struct pxi_outq {
    px_actor *a;
    uint32_t id, inc;
    pxi_node *first, *last;
    uint32_t n;
    px_msg *recent[PXI_SKIP]; /* the chain's last PXI_SKIP messages, by n % PXI_SKIP */
} pxi_outq;

/* A worker thread and its run queue (Go-style: the owner pushes at tail,
 * the owner and thieves take from head with a CAS). */
#define PXI_RUNQ 256
typedef struct pxi_worker {
    _Atomic uint32_t head;                 /* consumers CAS */
    _Atomic uint32_t tail;                 /* owner stores */
    _Atomic(px_actor *) ring[PXI_RUNQ];
    /* Owner-written counters, read by stats and the drain check (relaxed). */
    _Atomic uint64_t messages __attribute__((aligned(PXI_CACHELINE)));
    _Atomic uint64_t enq;   /* user messages this worker enqueued */
    _Atomic uint64_t deq;   /* user messages this worker took off a mailbox */
    _Atomic uint64_t turns; /* actor turns run */
    pxi_outq out[PXI_OUTBOX]; /* owner: see pxi_outq */
    uint32_t nout;
    px_actor *free_slots;   /* owner: reclaimed slots cached for spawns */
    px_actor *free_tail;    /* owner: last of free_slots (for the splice) */
    uint32_t nfree_slots;
    px_system *sys;
    nng_thread *thr;
    uint32_t index;
    uint32_t tick;
    uint64_t rng;
    /* Parking: guarded by mtx. */
    nng_mtx *mtx;
    nng_cv *cv;
    bool parked;
    uint64_t spin_ns; /* owner: its spin now (0..spin_us, or spin_us..spin_max_us) */
    /* Inside a call of the idle hook (or a spin that uses one): what
     * px_system_set_idle_hook waits out when it removes a hook. */
    atomic_bool in_hook;
    /* Calls through each router table this worker is inside
     * (pxi_router_enter). */
    _Atomic uint32_t in_router[2];
} pxi_worker;

/* Timers (timer.c). */
typedef struct pxi_timers pxi_timers;

#define PXI_CHUNK_BITS 12
#define PXI_CHUNK (1u << PXI_CHUNK_BITS)

struct px_system {
    /* Immutable after alloc (but node_inc). */
    px_config cfg;
    _Atomic int log_level; /* px_log_level: cfg's, changed by px_system_set_log_level */
    char node_name[64];
    uint32_t node;      /* FNV-1a of node_name */
    uint32_t node_inc0; /* the first incarnation: random, non-zero */
    _Atomic uint32_t node_inc; /* the current one: read through pxi_node_inc,
                                  written only by px_system_reincarnate */
    uint32_t nworkers;
    pxi_worker *workers;
    px_actor *root;
    /* The router (plexus/router.h): `router` points at one of two tables
     * (NULL = none). Every call through it is bracketed by
     * pxi_router_enter/leave, which count the caller against the table it
     * uses — in its worker's in_router[slot] or, off the workers, in
     * router_calls[slot] — and re-check the pointer after counting.
     * px_system_set_router fills the table not in use, swaps the pointer
     * and waits out the old table's counts only (callers of the new one
     * count elsewhere: the wait ends), so the old table, and what its arg
     * points at, is unused when it returns and is the free one next time. */
    _Atomic(const px_router *) router;
    px_router rtab[2];
    _Atomic uint32_t router_calls[2] __attribute__((aligned(PXI_CACHELINE)));

    /* Scheduler shared state. */
    _Atomic uint32_t nidle __attribute__((aligned(PXI_CACHELINE)));
    _Atomic uint32_t stopping_workers;
    /* The idle hook (plexus/router.h): installed with arg stored before
     * fn, removed with fn cleared (then every worker's in_hook waited out)
     * before arg; workers set in_hook, then load fn, then arg. */
    _Atomic(px_idle_fn) idle_fn;
    _Atomic(void *) idle_arg;
    nng_mtx *hook_mtx; /* serialises px_system_set_idle_hook and _set_router */
    nng_mtx *gq_mtx;       /* global run queue: overflow and outside threads */
    px_actor *gq_head, *gq_tail;
    _Atomic uint32_t gq_len;
    _Atomic uint32_t wake_rr;

    /* Actor slots. */
    nng_mtx *slot_mtx __attribute__((aligned(PXI_CACHELINE)));
    _Atomic(px_actor *) *chunks; /* nchunks pointers, filled on demand */
    uint32_t nchunks;
    _Atomic uint32_t next_id;    /* next never-used id */
    uint32_t id_cap;             /* ids available: nchunks * PXI_CHUNK */
    px_actor *free_list;         /* slot_mtx */
    _Atomic uint32_t nfree;      /* length of free_list: written under slot_mtx, peeked without */
    _Atomic uint64_t live;

    /* Tree: the root guardian's child list. */
    nng_mtx *tree_mtx;
    nng_cv *tree_cv;       /* shutdown waits here for the root to finish */
    bool root_done;        /* tree_mtx */

    /* Registries, each under its own lock. */
    nng_mtx *names_mtx;
    pxi_strmap names;      /* name -> ref */
    nng_mtx *reg_mtx;
    pxi_strmap behaviors;  /* name -> px_behavior* */
    pxi_strmap types;      /* full name -> descriptor */

    pxi_timers *timers;
    struct pxi_topics *topics; /* the topic broker (topic.c) */

    /* Lifecycle. */
    _Atomic uint32_t closing;  /* intake from outside actors refused */
    _Atomic uint32_t shut;     /* shutdown finished */
    nng_mtx *life_mtx;         /* serializes shutdown */

    /* Totals (any thread, relaxed). */
    _Atomic uint64_t restarts, resumed, escalations; /* supervision (sup.c) */
    _Atomic uint64_t stopped, dead_letters, dropped, late_replies,
        ask_timeouts, failures, rejected;
    _Atomic uint64_t ext_enq, ext_deq; /* enq/deq counted off worker threads */
    _Atomic uint64_t messages_joined;   /* worker `messages` folded in at join */

    px_dead_letter_fn dl_fn;
    void *dl_arg;
    px_failure_fn fail_fn;
    void *fail_arg;
    nng_mtx *dl_mtx; /* guards dl_fn/dl_arg and fail_fn/fail_arg updates */
    pxi_rasks rasks; /* asks to other nodes (rask.c) */
};

/* Incarnations of this node. A system starts as a random non-zero
 * incarnation (node_inc0); px_system_reincarnate makes it the next one (+1,
 * skipping 0). Each actor keeps the incarnation it was spawned in, so its
 * ref never changes. Refs of every incarnation this process has been are
 * local (sends, watches, stops and supervision work whatever incarnation
 * they carry); only those of the current one are reachable from other
 * nodes, and an actor of an earlier one cannot send to them (PX_EFENCED).
 * A ref with this node id and any other incarnation is of an earlier
 * process: a dead letter. */

/* The current incarnation. Relaxed is enough: a ref carrying a newer one
 * was made from a load that saw it, and whoever holds that ref got it after
 * (happens-after) that load, so by read-read coherence it sees it too. */
static inline uint32_t pxi_node_inc(const px_system *sys) {
    return atomic_load_explicit(&sys->node_inc, memory_order_relaxed);
}

/* How many incarnations after `first` inc is (0 is skipped, so counting
 * wraps from 0xffffffff to 1). */
static inline uint32_t pxi_inc_steps(uint32_t first, uint32_t inc) {
    return inc - first - (inc < first ? 1u : 0u);
}

/* Whether r names an actor of this process: this node and one of its
 * incarnations from the first up to `cur` (pxi_node_inc, read once per
 * operation by the caller). */
static inline bool pxi_is_local(const px_system *sys, px_ref r, uint32_t cur) {
    return r.node == sys->node &&
           (r.node_inc == cur ||
            (r.node_inc != 0 &&
             pxi_inc_steps(sys->node_inc0, r.node_inc) < pxi_inc_steps(sys->node_inc0, cur)));
}

/* Whether r names an actor of this node's current incarnation: what other
 * nodes can reach. */
static inline bool pxi_is_current(const px_system *sys, px_ref r) {
    return r.node == sys->node && r.node_inc == pxi_node_inc(sys);
}

/* --- sched.c --- */
px_err pxi_sched_start(px_system *sys);
void pxi_sched_stop(px_system *sys);        /* joins the workers */
void pxi_sched_submit(px_system *sys, px_actor *a); /* a->sched was set 0->1 by caller */
extern _Thread_local pxi_worker *pxi_tls_worker; /* sched.c */
static inline pxi_worker *pxi_current_worker(void) { return pxi_tls_worker; } /* NULL off workers */

/* The count a call through table `slot` of sys's router goes in. */
static inline _Atomic uint32_t *pxi_router_count(px_system *sys, int slot) {
    pxi_worker *w = pxi_tls_worker;
    return w != NULL && w->sys == sys ? &w->in_router[slot] : &sys->router_calls[slot];
}

/* A call through sys's router: r = enter (the table now, NULL if none),
 * use only r, leave(r) — on every path, NULL or not. Counted against r's
 * slot, then the pointer is read again: seq_cst, so either the setter's
 * wait sees this count or this re-check sees its swap (then try again). */
static inline const px_router *pxi_router_enter(px_system *sys) {
    for (;;) {
        const px_router *r = atomic_load(&sys->router);
        if (r == NULL) {
            return NULL;
        }
        _Atomic uint32_t *n = pxi_router_count(sys, (int)(r - sys->rtab));
        atomic_fetch_add(n, 1);
        if (atomic_load(&sys->router) == r) {
            return r;
        }
        atomic_fetch_sub(n, 1);
    }
}
static inline void pxi_router_leave(px_system *sys, const px_router *r) {
    if (r != NULL) {
        atomic_fetch_sub_explicit(pxi_router_count(sys, (int)(r - sys->rtab)), 1,
                                  memory_order_release);
    }
}

/* --- actor.c --- */
/* The actor whose callback this thread is running (a turn on a worker, or
 * an init run by the spawning thread), else NULL. */
extern _Thread_local px_actor *pxi_tls_actor;
px_actor *pxi_slot(px_system *sys, uint32_t id);
bool pxi_pin(px_actor *a, uint32_t inc);
void pxi_unpin(px_actor *a);
void pxi_actor_run(pxi_worker *w, px_actor *a); /* one turn; reschedules itself */
px_err pxi_spawn(px_system *sys, px_actor *parent, const px_behavior *b,
                 px_msg **arg, const px_spawn_opts *o, px_ref *out,
                 uint32_t aflags, void *ustate);
void pxi_slots_free(px_system *sys); /* at system free: drains and unmaps */
/* Delivers m to `to` (sender already set): local enqueue, router, or dead
 * letter. Takes m unless an error that leaves it with the caller. */
px_err pxi_deliver(px_system *sys, px_ref to, px_msg **mp, bool may_block);
void pxi_dead_letter(px_system *sys, px_ref to, px_msg *m, px_err why);
/* A user message from actor `a` (sender and flags already set): through the
 * worker's outbox when `to` is a local unbounded mailbox, else pxi_deliver. */
px_err pxi_send_from(px_actor *a, px_ref to, px_msg **mp);
/* PX_EINVAL for a NULL message, PX_EMSGSIZE (counted) over max_msg_size. */
px_err pxi_check_msg(px_system *sys, px_msg **mp);
void pxi_push_sys(px_actor *a, px_msg *m); /* a must be pinned or a known child */
px_ref pxi_ref_of(px_actor *a);
/* The live actor r names, pinned (rule 1), if r is local (pxi_is_local);
 * else NULL. The caller unpins. */
px_actor *pxi_pin_ref(px_system *sys, px_ref r);

pxi_actor_ext *pxi_ext_get(px_actor *a); /* owner; NULL on allocation failure */
void pxi_begin_stop(px_actor *a, uint32_t reason, px_err code); /* owner */
void pxi_stop_child(px_actor *c, uint32_t reason, px_err code); /* STOP signal */
void pxi_cancel_timers(px_actor *a);
void pxi_send_sys(px_actor *to, uint16_t op, uint64_t corr, uint32_t tag); /* to is pinned/a known child */

/* Supervision across nodes (remote.c): proxies and hosts. */
struct pxi_fail_rec;
void pxi_ack_parent(px_actor *a, uint16_t op, uint32_t tag);        /* sup.c */
void pxi_sup_fail_chain(px_actor *a, const px_failure *f);          /* sup.c: fail with f's chain */
uint32_t pxi_fail_chain(const struct pxi_fail_rec *f, px_failure *out, uint32_t max); /* sup.c */
void pxi_fail_rec_free(struct pxi_fail_rec *f);                     /* sup.c */
extern const px_behavior pxi_proxy_beh;
/* a stands for a child on another node (remote.c). Its behavior, not a
 * flag: beh is fixed at spawn, so any thread holding a pin may ask. */
static inline bool pxi_is_proxy(const px_actor *a) { return a->beh == &pxi_proxy_beh; }
px_err pxi_proxy_new(px_actor *parent, const px_child_spec *spec, void **out);
void pxi_proxy_free(void *proxy); /* NULL is fine */
/* After the spawn, in the parent's context: asks the router to start the
 * child; on error the proxy is stopping (its state is freed by `stop`). */
px_err pxi_proxy_first_start(px_actor *c);
void pxi_proxy_rs_stop(px_actor *a);
void pxi_proxy_rs_start(px_actor *a, bool half_open);
void pxi_proxy_resume(px_actor *a);
void pxi_proxy_info_fill(px_actor *a, px_child_info *out); /* node, remote */
void pxi_remote_sys(px_actor *a, px_msg *m);  /* PXI_SYS_PROXY_EV, PXI_SYS_HOST_OP */
/* A host's child event (FAILURE, RS_STOPPED, RS_STARTED, HEALTHY): true if
 * handled (a is a host). */
bool pxi_host_child_sys(px_actor *a, px_msg *m);
void pxi_host_child_term(px_actor *a, px_actor *c); /* before the unlink */
void pxi_remote_drain_sys(px_actor *a, px_msg *m);  /* a sys message to a dead actor */

/* --- sup.c (supervision and watches) --- */
/* Child side: suspend `a` and report the failure to its parent. `normal`:
 * a permanent child stopped itself (restarted without asking the decider). */
void pxi_sup_fail(px_actor *a, px_err code, const char *reason, bool normal);
/* Supervision and watch signals (PXI_SYS_FAILURE ... PXI_SYS_UNWATCH). */
void pxi_sup_sys(px_actor *a, px_msg *m);
/* A Terminated in the user queue: true if it must be dropped (the watch
 * was cancelled or already answered), false to hand it to receive. */
bool pxi_sup_user(px_actor *a, px_msg *m);
void pxi_sup_child_term(px_actor *p, px_actor *c); /* c is still linked */
void pxi_sup_after_turn(px_actor *a);
void pxi_sup_success(px_actor *a);     /* after a successful receive with PXI_AF_PROBE */
void pxi_sup_finalize(px_actor *a);    /* before ext is freed: watchers, supervision */
void pxi_sup_drain_sys(px_actor *a, px_msg *m); /* a sys message to a dead actor */
void pxi_sup_free(struct pxi_sup *s);
void pxi_child_info(px_actor *p, px_actor *c, px_child_info *out); /* parent context */
px_err pxi_children_in_order(px_actor *p, px_actor ***out, uint32_t *n); /* p's context */

/* Copies s into d (size n > 0), truncating; always terminated. */
static inline void pxi_scopy(char *d, size_t n, const char *s) {
    size_t k = strnlen(s, n - 1);
    memcpy(d, s, k);
    d[k] = '\0';
}

/* --- tree.c --- */
typedef struct pxi_dump pxi_dump;
void pxi_dump_handle(px_actor *a, pxi_dump *d); /* a's context */
void pxi_dump_drop(pxi_dump *d);                /* the signal reached a dead actor */

/* --- timer.c --- */
px_err pxi_timers_alloc(px_system *sys, pxi_timers **out);
void pxi_timers_stop(pxi_timers *t);   /* cancels everything, waits */
void pxi_timers_free(pxi_timers *t);
/* Schedules m to `to` after delay_ms (period_ms 0 = once; takes m on PX_OK).
 * Periodic timers (m NULL) deliver a PX_MSG_TIMER with `tag` every period. */
px_err pxi_timer_add(pxi_timers *t, uint32_t delay_ms, uint32_t period_ms,
                     px_ref to, px_msg *m, uint32_t tag, uint64_t *id);
px_err pxi_timer_cancel(pxi_timers *t, uint64_t id);
bool pxi_timer_pending(pxi_timers *t, uint64_t id);

/* rask.c: the remote asks registry. add: PX_ENOMEM; del: no-op if absent. */
px_err pxi_rask_add(px_system *sys, px_ref asker, uint64_t corr, px_ref to);
void pxi_rask_del(px_system *sys, px_ref asker, uint64_t corr);
void pxi_rasks_fini(pxi_rasks *r);
/* The node became incarnation cur: every ask of an actor of an earlier one
 * still waiting on another node ends now with `code` (its reply would be
 * addressed to an incarnation the other nodes take for dead). Returns how
 * many. */
size_t pxi_rasks_fail_old(px_system *sys, uint32_t cur, px_err code);
/* px_system_notify_undelivered for an actor of any incarnation of this
 * process. */
px_err pxi_notify_undelivered(px_system *sys, px_ref sender, px_ref to, px_err code,
                              uint64_t corr);

#endif
