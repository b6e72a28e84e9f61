/*
 * actor.c — actor slots, spawn, delivery, the actor turn, stop and reclaim,
 * asks and actor timers.
 *
 * Slots: chunks of PXI_CHUNK actors, mmap'd on demand and kept until the
 * system is freed (type-stable memory; see runtime.h for the pin rules that
 * make sends to stale refs safe).
 *
 * A turn (pxi_actor_run, on one worker, with a->sched held at 1): all
 * system messages first (stop, child terminated), then up to cfg.batch user
 * messages. Then either the actor finished stopping (it keeps sched = 1
 * forever, so nobody queues it again), or it still has work (queued again),
 * or it clears sched and re-checks its queues (a sender that pushed in
 * between sees sched = 0 and queues it; seq_cst on both sides).
 *
 * Stopping: STOPPING stops the children first (each sends CHILD_TERM to its
 * parent when done), dead-letters user messages, and when the last child is
 * gone runs `stop`, releases its name and timers, becomes DEAD and tells its
 * parent, which unlinks it and drops its pin.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "runtime.h"
#include "topic_int.h"

/* ---- small helpers ---- */

_Thread_local px_actor *pxi_tls_actor;

static inline px_actor *of_ctx(const px_ctx *ctx) { return (px_actor *)ctx; }

px_ref pxi_ref_of(px_actor *a) {
    return (px_ref){a->sys->node, a->node_inc, a->id,
                    atomic_load_explicit(&a->inc, memory_order_relaxed)};
}

/* Messages in and out of mailboxes, for the drain check: a worker's own
 * counters on its threads, the system's shared ones elsewhere. */
static void count_flow(px_system *sys, bool enq, uint64_t n) {
    pxi_worker *w = pxi_current_worker();
    if (w != NULL && w->sys == sys) {
        _Atomic uint64_t *c = enq ? &w->enq : &w->deq;
        atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                              memory_order_relaxed);
    } else {
        atomic_fetch_add_explicit(enq ? &sys->ext_enq : &sys->ext_deq, n, memory_order_relaxed);
    }
}

static void count_deq(px_system *sys, uint64_t n) { count_flow(sys, false, n); }

pxi_actor_ext *pxi_ext_get(px_actor *a) {
    if (a->ext == NULL) {
        a->ext = calloc(1, sizeof(*a->ext));
    }
    return a->ext;
}

/* ---- slots ---- */

px_actor *pxi_slot(px_system *sys, uint32_t id) {
    uint32_t c = id >> PXI_CHUNK_BITS;
    if (id == 0 || c >= sys->nchunks) {
        return NULL;
    }
    px_actor *chunk = atomic_load_explicit(&sys->chunks[c], memory_order_acquire);
    return chunk == NULL ? NULL : &chunk[id & (PXI_CHUNK - 1)];
}

/* Slots come from the calling worker's cache, then the global free list,
 * then never-used ids (a lock-free counter; the mutex only to map a new
 * chunk). Reclaimed slots go to the reclaiming worker's cache; a full cache
 * moves to the global list in one splice, and an empty one refills up to
 * SLOT_BATCH slots per lock — one worker often reclaims what another spawns
 * (skynet), and a lock per slot would make the global list a hot spot. */
#define SLOT_CACHE 256
#define SLOT_BATCH 64

static px_actor *slot_alloc(px_system *sys) {
    pxi_worker *w = pxi_current_worker();
    bool mine = w != NULL && w->sys == sys;
    px_actor *a;
    if (mine && (a = w->free_slots) != NULL) {
        w->free_slots = a->next_free;
        if (--w->nfree_slots == 0) {
            w->free_tail = NULL;
        }
        a->next_free = NULL;
        return a;
    }
    if (atomic_load_explicit(&sys->nfree, memory_order_relaxed) > 0) {
        nng_mtx_lock(sys->slot_mtx);
        a = sys->free_list;
        if (a != NULL) {
            /* Take a batch: the first for now, the rest into the cache. */
            px_actor *last = a;
            uint32_t n = 1;
            while (mine && n < SLOT_BATCH && last->next_free != NULL) {
                last = last->next_free;
                n++;
            }
            sys->free_list = last->next_free;
            last->next_free = NULL;
            atomic_fetch_sub_explicit(&sys->nfree, n, memory_order_relaxed);
            if (n > 1) {
                w->free_slots = a->next_free;
                w->free_tail = last;
                w->nfree_slots = n - 1;
            }
            a->next_free = NULL;
        }
        nng_mtx_unlock(sys->slot_mtx);
        if (a != NULL) {
            return a;
        }
    }
    uint32_t id = atomic_fetch_add(&sys->next_id, 1);
    if (id >= sys->id_cap) {
        return NULL;
    }
    uint32_t c = id >> PXI_CHUNK_BITS;
    px_actor *chunk = atomic_load_explicit(&sys->chunks[c], memory_order_acquire);
    if (chunk == NULL) {
        nng_mtx_lock(sys->slot_mtx);
        chunk = atomic_load_explicit(&sys->chunks[c], memory_order_relaxed);
        if (chunk == NULL) {
            void *p = mmap(NULL, sizeof(px_actor) * PXI_CHUNK, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED) {
                nng_mtx_unlock(sys->slot_mtx);
                return NULL; /* this id is lost; ids have slack (system.c) */
            }
            chunk = p;
            atomic_store_explicit(&sys->chunks[c], chunk, memory_order_release);
        }
        nng_mtx_unlock(sys->slot_mtx);
    }
    a = &chunk[id & (PXI_CHUNK - 1)];
    a->id = id;
    a->sys = sys;
    return a;
}

static void slot_release(px_actor *a) {
    px_system *sys = a->sys;
    atomic_store(&a->state, PXI_A_FREE);
    pxi_worker *w = pxi_current_worker();
    if (w != NULL && w->sys == sys) {
        a->next_free = w->free_slots;
        w->free_slots = a;
        if (w->nfree_slots++ == 0) {
            w->free_tail = a;
        }
        if (w->nfree_slots < SLOT_CACHE) {
            return;
        }
        /* Full: hand the whole cache to the global list. */
        nng_mtx_lock(sys->slot_mtx);
        w->free_tail->next_free = sys->free_list;
        sys->free_list = w->free_slots;
        atomic_fetch_add_explicit(&sys->nfree, w->nfree_slots, memory_order_relaxed);
        nng_mtx_unlock(sys->slot_mtx);
        w->free_slots = w->free_tail = NULL;
        w->nfree_slots = 0;
        return;
    }
    nng_mtx_lock(sys->slot_mtx);
    a->next_free = sys->free_list;
    sys->free_list = a;
    atomic_fetch_add_explicit(&sys->nfree, 1, memory_order_relaxed);
    nng_mtx_unlock(sys->slot_mtx);
}

/* ---- dead letters ---- */

void pxi_dead_letter(px_system *sys, px_ref to, px_msg *m, px_err why) {
    if (m->kind == PXI_MSG_SYS) {
        px_msg_free(m); /* runtime signals to the dead are not letters */
        return;
    }
    if (m->flags & PXI_MF_REPLY) {
        /* A reply nobody waits for any more (the asker timed out and is
         * gone): a late reply, counted as such, not a dead letter. */
        atomic_fetch_add_explicit(&sys->late_replies, 1, memory_order_relaxed);
        px_msg_free(m);
        return;
    }
    atomic_fetch_add_explicit(&sys->dead_letters, 1, memory_order_relaxed);
    if (px_log_enabled(sys, PX_LOG_TRACE)) {
        char b[48];
        px_log(sys, PX_LOG_TRACE, "dead letter to %s (kind %u tag %u): %s",
               px_ref_format(to, b, sizeof(b)), m->kind, m->tag, px_strerror(why));
    }
    if (sys->dl_fn != NULL) {
        nng_mtx_lock(sys->dl_mtx);
        px_dead_letter_fn fn = sys->dl_fn;
        void *arg = sys->dl_arg;
        nng_mtx_unlock(sys->dl_mtx);
        if (fn != NULL) {
            fn(arg, to, m, why);
        }
    }
    px_msg_free(m);
}

static px_msg *pop_user(px_actor *a) {
    if (a->bq != NULL) {
        return pxi_bq_pop(a->bq);
    }
    pxi_node *n = pxi_mpsc_pop(&a->mb_head, &a->mb_tail, &a->mb_stub);
    if (n == NULL) {
        return NULL;
    }
    atomic_store_explicit(&a->popped, atomic_load_explicit(&a->popped, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    return pxi_msg_of(n);
}

static bool user_nonempty(px_actor *a) {
    if (a->bq != NULL) {
        return atomic_load(&a->bq->count) > 0;
    }
    return pxi_mpsc_nonempty(a->mb_head, &a->mb_tail, &a->mb_stub);
}

/* Owner only. */
static bool user_matters(px_actor *a) {
    uint32_t st = atomic_load_explicit(&a->state, memory_order_relaxed);
    return st == PXI_A_ALIVE || st == PXI_A_STOPPING; /* suspended: its mailbox waits */
}

static bool has_work(px_actor *a) {
    return pxi_mpsc_nonempty(a->sys_head, &a->sys_tail, &a->sys_stub) ||
           (user_matters(a) && user_nonempty(a));
}

/* Releases the actor (sched = 0) and re-queues it if a push raced with the
 * release. After the store the caller no longer owns the actor: another
 * worker may run it, stop it, and the slot may even be reclaimed and reused
 * by a new spawn. So only producer-side state is read afterwards: the tails
 * (atomics in type-stable memory — at worst a harmless spurious run of the
 * slot's next occupant) and, for a bounded mailbox, its count, read under a
 * pin taken while still owner so the queue cannot be freed meanwhile. The
 * owner left both queues empty (head == stub), so a tail that is not the
 * stub means a push happened since. seq_cst pairs with the producers'
 * seq_cst exchange + sched check. */
static void schedule_if_idle(px_actor *a);

static void release_and_recheck(px_actor *a) {
    pxi_bq *bq = a->bq;
    bool user = user_matters(a); /* read while still owner */
    if (bq != NULL) {
        atomic_fetch_add(&a->rc, 1);
    }
    atomic_store(&a->sched, 0);
    bool pushed = atomic_load(&a->sys_tail) != &a->sys_stub ||
                  (user && (bq != NULL ? atomic_load(&bq->count) > 0
                                       : atomic_load(&a->mb_tail) != &a->mb_stub));
    if (pushed) {
        schedule_if_idle(a);
    }
    if (bq != NULL) {
        pxi_unpin(a);
    }
}

/* Dead-letters everything queued (owner, or the reclaimer). */
static void drain(px_actor *a) {
    px_system *sys = a->sys;
    px_ref me = pxi_ref_of(a);
    px_msg *m;
    uint64_t n = 0;
    while ((m = pop_user(a)) != NULL) {
        n++;
        pxi_dead_letter(sys, me, m, PX_EDEAD);
    }
    count_deq(sys, n);
    pxi_node *sn;
    while ((sn = pxi_mpsc_pop(&a->sys_head, &a->sys_tail, &a->sys_stub)) != NULL) {
        pxi_sup_drain_sys(a, pxi_msg_of(sn));
    }
}

/* ---- pins ---- */

bool pxi_pin(px_actor *a, uint32_t inc) {
    atomic_fetch_add(&a->rc, 1);
    uint32_t st = atomic_load(&a->state);
    if (atomic_load(&a->inc) != inc || st == PXI_A_FREE || st >= PXI_A_DEAD) {
        pxi_unpin(a);
        return false;
    }
    return true;
}

/* The occupant of r's slot if it is r's actor and alive, pinned; else
 * NULL. Says nothing about r's node: the callers check that. */
static px_actor *pin_slot(px_system *sys, px_ref r) {
    px_actor *a = pxi_slot(sys, r.id);
    return a != NULL && pxi_pin(a, r.inc) ? a : NULL;
}

px_actor *pxi_pin_ref(px_system *sys, px_ref r) {
    return pxi_is_local(sys, r, pxi_node_inc(sys)) ? pin_slot(sys, r) : NULL;
}

static void reclaim(px_actor *a) {
    /* All pins are gone: nobody else touches the queues now. */
    drain(a);
    if (a->bq != NULL) {
        pxi_bq_free(a->bq);
        a->bq = NULL;
    }
    slot_release(a);
}

void pxi_unpin(px_actor *a) {
    if (atomic_fetch_sub(&a->rc, 1) == 1) {
        uint32_t dead = PXI_A_DEAD;
        if (atomic_compare_exchange_strong(&a->state, &dead, PXI_A_RECLAIM)) {
            reclaim(a);
        }
    }
}

/* ---- scheduling ---- */

static void schedule_if_idle(px_actor *a) {
    if (atomic_load(&a->sched) == 0) {
        uint32_t zero = 0;
        if (atomic_compare_exchange_strong(&a->sched, &zero, 1)) {
            pxi_sched_submit(a->sys, a);
        }
    }
}

void pxi_push_sys(px_actor *a, px_msg *m) {
    pxi_mpsc_push(&a->sys_tail, &m->link);
    schedule_if_idle(a);
}

/* A bounded mailbox's policy dropped m: a sender on another node is told
 * (through the router), one on this node only sees the counter. Never for
 * a notice (two full mailboxes would bounce notices forever), nor for a
 * reply (its corr is the asker's, which would end an unrelated ask of the
 * replier), nor by an actor of an earlier incarnation of this node (other
 * nodes take it for dead). */
static void dropped_by_policy(px_actor *a, const px_msg *m) {
    px_system *sys = a->sys;
    if (m->kind == PX_MSG_UNDELIVERED || (m->flags & PXI_MF_REPLY)) {
        return;
    }
    if (m->sender.node != 0 && m->sender.node != sys->node && a->node_inc == pxi_node_inc(sys)) {
        const px_router *r = pxi_router_enter(sys);
        if (r != NULL && r->dropped != NULL) {
            r->dropped(r->arg, pxi_ref_of(a), m->sender, m->corr);
        }
        pxi_router_leave(sys, r);
    }
}

static px_err enqueue(px_actor *a, px_msg *m, bool may_block) {
    px_system *sys = a->sys;
    if (a->bq == NULL) {
        pxi_mpsc_push(&a->mb_tail, &m->link);
        atomic_fetch_add_explicit(&a->pushed, 1, memory_order_relaxed);
    } else {
        px_msg *old = NULL;
        switch (pxi_bq_push(a->bq, m, may_block, &old)) {
        case PXI_BQ_QUEUED:
            break;
        case PXI_BQ_QUEUED_DROPPED_OLD:
            atomic_fetch_add_explicit(&sys->dropped, 1, memory_order_relaxed);
            count_deq(sys, 1);
            dropped_by_policy(a, old);
            px_msg_free(old);
            break;
        case PXI_BQ_DROPPED_NEW:
            atomic_fetch_add_explicit(&sys->dropped, 1, memory_order_relaxed);
            dropped_by_policy(a, m);
            px_msg_free(m);
            return PX_OK;
        case PXI_BQ_FULL:
            atomic_fetch_add_explicit(&sys->rejected, 1, memory_order_relaxed);
            return PX_EFULL;
        case PXI_BQ_TIMEDOUT:
            atomic_fetch_add_explicit(&sys->rejected, 1, memory_order_relaxed);
            return PX_ETIMEDOUT;
        case PXI_BQ_CLOSED:
            pxi_dead_letter(sys, pxi_ref_of(a), m, PX_EDEAD);
            return PX_OK;
        }
    }
    count_flow(sys, true, 1);
    schedule_if_idle(a);
    return PX_OK;
}

/* pxi_deliver with the current incarnation `cur` read by the caller. Not
 * inlined: in pxi_send_from it would weigh on the local path (ping-pong 8%
 * slower). */
__attribute__((noinline)) static px_err deliver(px_system *sys, px_ref to, px_msg **mp,
                                                bool may_block, uint32_t cur) {
    px_msg *m = *mp;
    if (!pxi_is_local(sys, to, cur)) {
        if (to.node == sys->node || to.node == 0) {
            /* An earlier process of this node, or a nil ref. */
            *mp = NULL;
            pxi_dead_letter(sys, to, m, PX_EDEAD);
            return PX_OK;
        }
        if (m->sender.node == sys->node && m->sender.node_inc != cur) {
            /* From an actor of an earlier incarnation of this node, which
             * other nodes take for dead: it is cut off from them. */
            atomic_fetch_add_explicit(&sys->rejected, 1, memory_order_relaxed);
            return PX_EFENCED;
        }
        const px_router *r = pxi_router_enter(sys);
        bool none = r == NULL || r->send == NULL;
        px_err rv = none ? PX_EUNREACHABLE : r->send(r->arg, to, m);
        pxi_router_leave(sys, r);
        if (none) {
            atomic_fetch_add_explicit(&sys->rejected, 1, memory_order_relaxed);
        } else if (rv == PX_OK) {
            *mp = NULL;
        }
        return rv;
    }
    px_actor *a = pin_slot(sys, to);
    if (a == NULL) {
        *mp = NULL;
        pxi_dead_letter(sys, to, m, PX_EDEAD);
        return PX_OK;
    }
    if (m->kind == PXI_MSG_SYS) { /* a runtime signal (e.g. from a timer) */
        *mp = NULL;
        pxi_push_sys(a, m);
        pxi_unpin(a);
        return PX_OK;
    }
    px_err rv = enqueue(a, m, may_block);
    if (rv == PX_OK) {
        *mp = NULL;
    }
    pxi_unpin(a);
    return rv;
}

px_err pxi_deliver(px_system *sys, px_ref to, px_msg **mp, bool may_block) {
    return deliver(sys, to, mp, may_block, pxi_node_inc(sys));
}

/* For calls made on behalf of other nodes: the live actor `to` of this
 * node's current incarnation, pinned; NULL if there is none (refs of
 * earlier incarnations are dead to other nodes). The caller unpins. */
static px_actor *pin_current(px_system *sys, px_ref to) {
    return pxi_is_current(sys, to) ? pin_slot(sys, to) : NULL;
}

/* Enqueues m (never blocking) for the pinned actor a and unpins it:
 * enqueue's answer (m taken on PX_OK). */
static px_err enqueue_unpin(px_actor *a, px_msg *m) {
    px_err rv = enqueue(a, m, false);
    pxi_unpin(a);
    return rv;
}

/* The notice for the pinned actor a (unpinned here). */
static px_err notify_unpin(px_actor *a, px_ref to, px_err code, uint64_t corr) {
    px_msg *m = pxi_msg_new(PX_MSG_UNDELIVERED);
    if (m == NULL) {
        pxi_unpin(a);
        return PX_ENOMEM;
    }
    m->sender = to;
    m->tag = (uint32_t)(int32_t)code;
    m->corr = corr;
    px_err rv = enqueue_unpin(a, m);
    if (rv != PX_OK) {
        px_msg_free(m); /* its own mailbox is full: the notice is lost */
    }
    return rv;
}

px_err px_system_notify_undelivered(px_system *sys, px_ref sender, px_ref to, px_err code,
                                    uint64_t corr) {
    px_actor *a = sys != NULL ? pin_current(sys, sender) : NULL;
    return a != NULL ? notify_unpin(a, to, code, corr) : PX_EDEAD;
}

px_err pxi_notify_undelivered(px_system *sys, px_ref sender, px_ref to, px_err code,
                              uint64_t corr) {
    px_actor *a = pxi_pin_ref(sys, sender);
    return a != NULL ? notify_unpin(a, to, code, corr) : PX_EDEAD;
}

px_err px_system_mailbox_opts(px_system *sys, px_ref to, px_mailbox_opts *out) {
    px_actor *a = sys != NULL && out != NULL ? pin_current(sys, to) : NULL;
    if (a == NULL) {
        return PX_EDEAD;
    }
    if (a->bq == NULL) {
        *out = (px_mailbox_opts){0};
    } else {
        *out = (px_mailbox_opts){a->bq->cap, a->bq->overflow, a->bq->block_ms};
    }
    pxi_unpin(a);
    return PX_OK;
}

void px_system_dead_letter(px_system *sys, px_ref to, px_msg *m, px_err why) {
    if (sys == NULL) {
        px_msg_free(m);
        return;
    }
    pxi_dead_letter(sys, to, m, why);
}

unsigned px_msg_wire_flags(const px_msg *m) {
    if (m == NULL) {
        return 0;
    }
    return ((m->flags & PXI_MF_ASKED) ? PX_WIRE_ASK : 0u) |
           ((m->flags & PXI_MF_REPLY) ? PX_WIRE_REPLY : 0u);
}

px_err px_system_deliver_remote(px_system *sys, px_ref to, px_ref from, uint64_t corr,
                                 unsigned flags, px_msg **msg) {
    if (sys == NULL || msg == NULL || *msg == NULL || to.node != sys->node ||
        (*msg)->kind == PXI_MSG_SYS) {
        return PX_EINVAL;
    }
    px_msg *m = *msg;
    m->sender = from;
    m->corr = corr;
    m->flags = (uint8_t)((m->flags & PXI_MF_PAYLOAD) | ((flags & PX_WIRE_ASK) ? PXI_MF_ASKED : 0) |
                         ((flags & PX_WIRE_REPLY) ? PXI_MF_REPLY : 0));
    px_actor *a = pin_current(sys, to);
    px_err rv = a != NULL ? enqueue_unpin(a, m) : PX_EDEAD;
    if (rv == PX_EDEAD) {
        pxi_dead_letter(sys, to, m, PX_EDEAD);
    }
    if (rv == PX_OK || rv == PX_EDEAD) {
        *msg = NULL;
    }
    return rv;
}

/* ---- the outbox (see pxi_outq in runtime.h) ---- */

static void outq_push(pxi_outq *q) {
    px_actor *a = q->a;
    /* seq_cst exchange: pairs with the consumer's release-then-recheck. */
    pxi_node *prev = atomic_exchange(&a->mb_tail, q->last);
    atomic_store_explicit(&prev->next, q->first, memory_order_release);
    atomic_fetch_add_explicit(&a->pushed, q->n, memory_order_relaxed);
    count_flow(a->sys, true, q->n);
    q->first = q->last = NULL;
    q->n = 0;
    schedule_if_idle(a);
}

/* Owner: before an actor is released (or after a spawn). */
static void outbox_flush(pxi_worker *w) {
    for (uint32_t i = 0; i < w->nout; i++) {
        pxi_outq *q = &w->out[i];
        if (q->n > 0) {
            outq_push(q);
        }
        pxi_unpin(q->a);
    }
    w->nout = 0;
}

px_err pxi_send_from(px_actor *self, px_ref to, px_msg **mp) {
    px_system *sys = self->sys;
    pxi_worker *w = pxi_current_worker();
    uint32_t cur = pxi_node_inc(sys);
    if (w == NULL || w->sys != sys || !pxi_is_local(sys, to, cur)) {
        return deliver(sys, to, mp, false, cur);
    }
    px_msg *m = *mp;
    pxi_outq *q = NULL;
    for (uint32_t i = w->nout; i-- > 0;) {
        if (w->out[i].id == to.id && w->out[i].inc == to.inc) {
            q = &w->out[i];
            break;
        }
    }
    if (q == NULL) {
        px_actor *a = pin_slot(sys, to);
        if (a == NULL) {
            *mp = NULL;
            pxi_dead_letter(sys, to, m, PX_EDEAD);
            return PX_OK;
        }
        if (a->bq != NULL) {
            /* Bounded: the overflow policy answers this send now. */
            px_err rv = enqueue(a, m, false);
            if (rv == PX_OK) {
                *mp = NULL;
            }
            pxi_unpin(a);
            return rv;
        }
        if (w->nout == PXI_OUTBOX) {
            outbox_flush(w);
        }
        q = &w->out[w->nout++];
        *q = (pxi_outq){.a = a, .id = to.id, .inc = to.inc};
    }
    atomic_store_explicit(&m->link.next, NULL, memory_order_relaxed);
    m->skip = 0;
    if (q->n == 0) {
        q->first = &m->link;
    } else {
        atomic_store_explicit(&q->last->next, &m->link, memory_order_relaxed);
    }
    q->last = &m->link;
    px_msg **slot = &q->recent[q->n % PXI_SKIP];
    if (q->n >= PXI_SKIP) {
        (*slot)->skip = pxi_skip_to(*slot, m); /* *slot is PXI_SKIP back */
    }
    *slot = m;
    *mp = NULL;
    if (++q->n == PXI_OUT_CHAIN) {
        outq_push(q);
    }
    return PX_OK;
}

px_err pxi_check_msg(px_system *sys, px_msg **mp) {
    if (mp == NULL || *mp == NULL) {
        return PX_EINVAL;
    }
    if ((*mp)->kind == PX_MSG_BYTES && (*mp)->len > sys->cfg.max_msg_size) {
        atomic_fetch_add_explicit(&sys->rejected, 1, memory_order_relaxed);
        return PX_EMSGSIZE;
    }
    return PX_OK;
}

/* ---- stop / finalize ---- */

void pxi_send_sys(px_actor *to, uint16_t op, uint64_t corr, uint32_t tag) {
    px_msg *m = pxi_msg_new(PXI_MSG_SYS);
    if (m == NULL) {
        px_log(to->sys, PX_LOG_CRIT, "out of memory signalling actor %u (op %u)", to->id, op);
        return;
    }
    m->sysop = op;
    m->corr = corr;
    m->tag = tag;
    pxi_push_sys(to, m);
}

void pxi_stop_child(px_actor *c, uint32_t reason, px_err code) {
    pxi_send_sys(c, PXI_SYS_STOP, (uint64_t)(int64_t)code, reason);
}

static void stop_msg_to(px_actor *child) { pxi_stop_child(child, PX_TERM_STOPPED, PX_OK); }

void pxi_cancel_timers(px_actor *a) {
    pxi_actor_ext *x = a->ext;
    if (x == NULL) {
        return;
    }
    for (uint32_t i = 0; i < x->ntimers; i++) {
        pxi_timer_cancel(a->sys->timers, x->timers[i]);
    }
    x->ntimers = 0;
    for (uint32_t i = 0; i < x->npend; i++) {
        pxi_timer_cancel(a->sys->timers, x->pend[i].timer);
        if (x->pend[i].remote) {
            pxi_rask_del(a->sys, pxi_ref_of(a), x->pend[i].corr);
        }
    }
    x->npend = 0;
}

static void finalize(px_actor *a);
static void begin_stop(px_actor *a, uint32_t reason) { pxi_begin_stop(a, reason, PX_OK); }

void pxi_begin_stop(px_actor *a, uint32_t reason, px_err code) {
    uint32_t st = atomic_load(&a->state);
    if (st != PXI_A_ALIVE && st != PXI_A_SUSPENDED && st != PXI_A_RESTARTING) {
        return;
    }
    a->flags = (a->flags & ~(PXI_AF_TERM_MASK | PXI_AF_RS_STOP)) |
               ((reason << PXI_AF_TERM_SHIFT) & PXI_AF_TERM_MASK);
    if (reason == PX_TERM_FAILURE) {
        pxi_actor_ext *x = pxi_ext_get(a);
        if (x != NULL) {
            x->term_code = code;
        }
    }
    atomic_store(&a->state, PXI_A_STOPPING);
    pxi_cancel_timers(a);
    px_system *sys = a->sys;
    bool root = (a->flags & PXI_AF_ROOT) != 0;
    if (root) {
        nng_mtx_lock(sys->tree_mtx);
    }
    for (px_actor *c = a->first_child; c != NULL; c = c->next_sib) {
        stop_msg_to(c);
    }
    if (root) {
        nng_mtx_unlock(sys->tree_mtx);
    }
}

static void unlink_child(px_actor *p, px_actor *c) {
    if (c->prev_sib != NULL) {
        c->prev_sib->next_sib = c->next_sib;
    } else {
        p->first_child = c->next_sib;
    }
    if (c->next_sib != NULL) {
        c->next_sib->prev_sib = c->prev_sib;
    }
    c->next_sib = c->prev_sib = NULL;
}

static void link_child(px_actor *p, px_actor *c) {
    c->prev_sib = NULL;
    c->next_sib = p->first_child;
    if (p->first_child != NULL) {
        p->first_child->prev_sib = c;
    }
    p->first_child = c;
}

static void release_name(px_actor *a) {
    px_system *sys = a->sys;
    nng_mtx_lock(sys->names_mtx);
    if (a->name != NULL) {
        pxi_strmap_del(&sys->names, a->name, NULL);
        free(a->name);
        a->name = NULL;
    }
    nng_mtx_unlock(sys->names_mtx);
}

static void free_ext(px_actor *a) {
    pxi_actor_ext *x = a->ext;
    if (x == NULL) {
        return;
    }
    px_msg_free(x->arg);
    free(x->pend);
    free(x->timers);
    free(x->watchers);
    free(x->watching);
    free(x->topics);
    pxi_sup_free(x->sup);
    free(x);
    a->ext = NULL;
}

/* Runs `stop`, releases everything, becomes DEAD, tells the parent. */
static void finalize(px_actor *a) {
    px_system *sys = a->sys;
    if ((a->flags & PXI_AF_INITED) && a->beh->stop != NULL) {
        a->beh->stop((px_ctx *)a);
    }
    pxi_cancel_timers(a);
    release_name(a);
    if (a->flags & PXI_AF_SUBSCRIBED) {
        pxi_topics_actor_gone(a);
    }
    pxi_sup_finalize(a);
    free_ext(a);
    atomic_store(&a->state, PXI_A_DEAD);
    if (a->bq != NULL) {
        pxi_bq_close(a->bq);
    }
    drain(a);
    atomic_fetch_add_explicit(&sys->stopped, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&sys->live, 1, memory_order_relaxed);
    if (px_log_enabled(sys, PX_LOG_TRACE)) {
        char b[48];
        px_log(sys, PX_LOG_TRACE, "stopped %s (%s)", px_ref_format(pxi_ref_of(a), b, sizeof(b)),
               a->beh->name ? a->beh->name : "?");
    }
    px_actor *p = a->parent;
    if (p != NULL) {
        px_msg *m = pxi_msg_new(PXI_MSG_SYS);
        if (m != NULL) {
            m->sysop = PXI_SYS_CHILD_TERM;
            m->corr = (uint64_t)(uintptr_t)a;
            pxi_push_sys(p, m);
            return; /* the parent drops our pin */
        }
        px_log(sys, PX_LOG_CRIT, "out of memory reporting the end of actor %u", a->id);
        return;
    }
    /* The root guardian: shutdown waits for this. */
    nng_mtx_lock(sys->tree_mtx);
    sys->root_done = true;
    nng_cv_wake(sys->tree_cv);
    nng_mtx_unlock(sys->tree_mtx);
    pxi_unpin(a);
}

/* ---- the turn ---- */

static bool pending_take(px_actor *a, uint64_t corr, uint64_t *timer) {
    pxi_actor_ext *x = a->ext;
    if (x == NULL) {
        return false;
    }
    for (uint32_t i = 0; i < x->npend; i++) {
        if (x->pend[i].corr == corr) {
            *timer = x->pend[i].timer;
            if (x->pend[i].remote) {
                pxi_rask_del(a->sys, pxi_ref_of(a), corr);
            }
            x->pend[i] = x->pend[--x->npend];
            return true;
        }
    }
    return false;
}

static void fail(px_actor *a, px_err code, const char *reason) {
    px_system *sys = a->sys;
    atomic_fetch_add_explicit(&sys->failures, 1, memory_order_relaxed);
    char b[48];
    px_log(sys, PX_LOG_ERROR, "actor %s (%s) failed: %s: %s",
           px_ref_format(pxi_ref_of(a), b, sizeof(b)), a->beh->name ? a->beh->name : "?",
           px_errname(code), reason);
    if (a->parent == NULL) {
        pxi_begin_stop(a, PX_TERM_FAILURE, code); /* the root guardian itself */
        return;
    }
    pxi_sup_fail(a, code, reason, false);
}

/* Delivers one user message to receive; frees it unless taken. */
static void dispatch(pxi_worker *w, px_actor *a, px_msg *m) {
    px_system *sys = a->sys;
    uint64_t timer;
    if (m->kind == PX_MSG_TERMINATED && pxi_sup_user(a, m)) {
        px_msg_free(m);
        return;
    }
    if (m->flags & PXI_MF_REPLY) {
        if (!pending_take(a, m->corr, &timer)) {
            atomic_fetch_add_explicit(&sys->late_replies, 1, memory_order_relaxed);
            px_msg_free(m);
            return;
        }
        pxi_timer_cancel(sys->timers, timer);
    } else if (m->kind == PX_MSG_ASK_TIMEOUT) {
        if (!pending_take(a, m->corr, &timer)) {
            px_msg_free(m); /* the reply won the race */
            return;
        }
        atomic_fetch_add_explicit(&sys->ask_timeouts, 1, memory_order_relaxed);
    } else if (m->kind == PX_MSG_UNDELIVERED && m->corr != 0) {
        if (!pending_take(a, m->corr, &timer)) {
            px_msg_free(m); /* the ask already ended (reply or timeout) */
            return;
        }
        pxi_timer_cancel(sys->timers, timer); /* this notice ends the ask */
    }
    px_err rv = a->beh->receive((px_ctx *)a, m);
    atomic_store_explicit(&w->messages, atomic_load_explicit(&w->messages, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    atomic_store_explicit(&a->processed,
                          atomic_load_explicit(&a->processed, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    if (a->flags & PXI_AF_TOOK) {
        a->flags &= ~PXI_AF_TOOK;
    } else {
        px_msg_free(m);
    }
    if (rv == PX_OK && (a->flags & (PXI_AF_FAILED | PXI_AF_STOP_REQ | PXI_AF_PROBE)) == 0) {
        return; /* the common case: one test */
    }
    if (a->flags & PXI_AF_FAILED) {
        a->flags &= ~PXI_AF_FAILED;
        fail(a, a->ext ? a->ext->fail_code : PX_EFAIL, a->ext ? a->ext->fail_reason : "px_fail");
    } else if (rv != PX_OK) {
        char why[64];
        snprintf(why, sizeof(why), "receive returned %s", px_errname(rv));
        fail(a, rv, why);
    } else if (a->flags & PXI_AF_STOP_REQ) {
        a->flags &= ~PXI_AF_STOP_REQ;
        if ((a->flags & PXI_AF_PERMANENT) && a->parent != NULL) {
            pxi_sup_fail(a, PX_OK, "a permanent child stopped itself", true);
        } else {
            begin_stop(a, PX_TERM_NORMAL);
        }
    } else if (a->flags & PXI_AF_PROBE) {
        pxi_sup_success(a);
    }
}

static void handle_sys(px_actor *a, px_msg *m) {
    if (m->sysop == PXI_SYS_STOP) {
        pxi_begin_stop(a, m->tag != 0 ? m->tag : PX_TERM_STOPPED, (px_err)(int64_t)m->corr);
    } else if (m->sysop == PXI_SYS_CHILD_TERM) {
        px_actor *c = (px_actor *)(uintptr_t)m->corr;
        if (a->flags & PXI_AF_HOST) {
            pxi_host_child_term(a, c);
        }
        pxi_sup_child_term(a, c);
        if (a->flags & PXI_AF_ROOT) {
            nng_mtx_lock(a->sys->tree_mtx);
            unlink_child(a, c);
            nng_mtx_unlock(a->sys->tree_mtx);
        } else {
            unlink_child(a, c);
        }
        pxi_unpin(c);
    } else {
        pxi_sup_sys(a, m);
    }
    px_msg_free(m);
}

static inline void run_turn(pxi_worker *w, px_actor *a) {
    px_system *sys = a->sys;
    pxi_node *sn;
    while ((sn = pxi_mpsc_pop(&a->sys_head, &a->sys_tail, &a->sys_stub)) != NULL) {
        handle_sys(a, pxi_msg_of(sn));
    }
    uint32_t st = atomic_load_explicit(&a->state, memory_order_relaxed);
    uint32_t batch = sys->cfg.batch, n = 0;
    if (st == PXI_A_ALIVE) {
        if (a->bq == NULL) {
            uint64_t depth = atomic_load_explicit(&a->pushed, memory_order_relaxed) -
                             atomic_load_explicit(&a->popped, memory_order_relaxed);
            if (depth > atomic_load_explicit(&a->hwm, memory_order_relaxed)) {
                atomic_store_explicit(&a->hwm, depth > UINT32_MAX ? UINT32_MAX : (uint32_t)depth,
                                      memory_order_relaxed);
            }
        }
        px_msg *m;
        while (n < batch && (m = pop_user(a)) != NULL) {
            n++;
            dispatch(w, a, m);
            if (atomic_load_explicit(&a->state, memory_order_relaxed) != PXI_A_ALIVE) {
                break;
            }
        }
    } else if (st == PXI_A_STOPPING) {
        px_msg *m;
        px_ref me = pxi_ref_of(a);
        while (n < batch && (m = pop_user(a)) != NULL) {
            n++;
            pxi_dead_letter(sys, me, m, PX_EDEAD);
        }
    }
    if (a->flags & PXI_AF_RS_STOP) {
        pxi_sup_after_turn(a);
    }
    outbox_flush(w);
    atomic_store_explicit(&w->deq, atomic_load_explicit(&w->deq, memory_order_relaxed) + n,
                          memory_order_relaxed);
    atomic_store_explicit(&w->turns, atomic_load_explicit(&w->turns, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    if (atomic_load_explicit(&a->state, memory_order_relaxed) == PXI_A_STOPPING &&
        a->first_child == NULL) {
        finalize(a);
        outbox_flush(w); /* what `stop` sent */
        return; /* sched stays 1: a DEAD actor is never queued again */
    }
    if (has_work(a)) {
        pxi_sched_submit(sys, a);
        return;
    }
    release_and_recheck(a);
}

void pxi_actor_run(pxi_worker *w, px_actor *a) {
    pxi_tls_actor = a; /* for px_publish's sender */
    run_turn(w, a);
    pxi_tls_actor = NULL;
    pxi_topics_turn_end();
}

/* ---- spawn ---- */

static void abort_spawn(px_actor *a) {
    release_name(a);
    if (a->flags & PXI_AF_SUBSCRIBED) {
        pxi_topics_actor_gone(a);
    }
    free_ext(a);
    atomic_store(&a->state, PXI_A_DEAD);
    if (a->bq != NULL) {
        pxi_bq_close(a->bq);
    }
    drain(a);
    atomic_fetch_sub_explicit(&a->sys->live, 1, memory_order_relaxed);
    pxi_unpin(a);
}

px_err pxi_spawn(px_system *sys, px_actor *parent, const px_behavior *b,
                 px_msg **arg, const px_spawn_opts *o, px_ref *out,
                 uint32_t aflags, void *ustate) {
    if (b == NULL || b->receive == NULL) {
        return PX_EINVAL;
    }
    px_mailbox_opts mo = (o != NULL && o->mailbox != NULL) ? *o->mailbox : sys->cfg.mailbox;
    if (mo.capacity > 0 && (mo.overflow < PX_OVERFLOW_BLOCK || mo.overflow > PX_OVERFLOW_ERROR)) {
        return PX_EINVAL;
    }
    if (mo.capacity > sys->cfg.max_mailbox_capacity) {
        atomic_fetch_add_explicit(&sys->rejected, 1, memory_order_relaxed);
        return PX_ELIMIT;
    }
    if (parent != NULL) {
        uint32_t pst = atomic_load(&parent->state);
        if (pst != PXI_A_ALIVE && pst != PXI_A_STARTING) {
            return PX_ECLOSED;
        }
    }
    if (atomic_fetch_add(&sys->live, 1) >= sys->cfg.max_actors) {
        atomic_fetch_sub(&sys->live, 1);
        atomic_fetch_add_explicit(&sys->rejected, 1, memory_order_relaxed);
        return PX_ELIMIT;
    }
    px_actor *a = slot_alloc(sys);
    if (a == NULL) {
        atomic_fetch_sub(&sys->live, 1);
        return PX_ELIMIT;
    }
    pxi_bq *bq = NULL;
    if (mo.capacity > 0 && pxi_bq_alloc(&bq, &mo) != PX_OK) {
        atomic_fetch_sub(&sys->live, 1);
        slot_release(a);
        return PX_ENOMEM;
    }
    atomic_fetch_add(&a->rc, 1); /* the actor's own pin */
    uint32_t inc = atomic_load_explicit(&a->inc, memory_order_relaxed) + 1;
    if (inc == 0) {
        inc = 1;
    }
    a->bq = bq;
    atomic_store_explicit(&a->mb_stub.next, NULL, memory_order_relaxed);
    atomic_store_explicit(&a->sys_stub.next, NULL, memory_order_relaxed);
    a->mb_head = &a->mb_stub;
    a->sys_head = &a->sys_stub;
    atomic_store_explicit(&a->mb_tail, &a->mb_stub, memory_order_relaxed);
    atomic_store_explicit(&a->sys_tail, &a->sys_stub, memory_order_relaxed);
    atomic_store_explicit(&a->pushed, 0, memory_order_relaxed);
    atomic_store_explicit(&a->popped, 0, memory_order_relaxed);
    atomic_store_explicit(&a->processed, 0, memory_order_relaxed);
    atomic_store_explicit(&a->hwm, 0, memory_order_relaxed);
    a->beh = b;
    a->ustate = ustate;
    a->parent = parent;
    a->first_child = a->next_sib = a->prev_sib = NULL;
    a->ext = NULL;
    a->node_inc = pxi_node_inc(sys);
    a->flags = aflags;
    a->name = NULL;
    atomic_store_explicit(&a->sched, 1, memory_order_relaxed); /* not runnable until init is done */
    atomic_store_explicit(&a->inc, inc, memory_order_release);
    /* Release: a pinner that sees STARTING sees the fields above. Only refs
     * of this incarnation can pass the pin, and none exists before now. */
    atomic_store_explicit(&a->state, PXI_A_STARTING, memory_order_release);
    px_ref ref = pxi_ref_of(a);

    px_err rv;
    if (o != NULL && o->name != NULL && (rv = px_register(sys, o->name, ref)) != PX_OK) {
        abort_spawn(a);
        return rv;
    }
    if (b->init != NULL) {
        px_actor *was = pxi_tls_actor; /* the spawner, or NULL off actors */
        pxi_tls_actor = a;
        rv = b->init((px_ctx *)a, (arg != NULL) ? *arg : NULL);
        pxi_tls_actor = was;
        if (rv != PX_OK || (a->flags & PXI_AF_FAILED)) {
            char b2[48];
            px_log(sys, PX_LOG_WARN, "init of %s (%s) failed: %s%s%s",
                   px_ref_format(ref, b2, sizeof(b2)), b->name ? b->name : "?",
                   px_errname(rv != PX_OK ? rv : a->ext->fail_code),
                   (a->flags & PXI_AF_FAILED) ? ": " : "",
                   (a->flags & PXI_AF_FAILED) ? a->ext->fail_reason : "");
            atomic_fetch_add_explicit(&sys->failures, 1, memory_order_relaxed);
            abort_spawn(a);
            return PX_EINIT;
        }
    }
    a->flags |= PXI_AF_INITED;
    if (parent != NULL) {
        if (parent->flags & PXI_AF_ROOT) {
            nng_mtx_lock(sys->tree_mtx);
            if (atomic_load(&parent->state) != PXI_A_ALIVE) {
                nng_mtx_unlock(sys->tree_mtx);
                atomic_store(&a->state, PXI_A_ALIVE);
                a->flags |= PXI_AF_STOP_REQ;
                a->parent = NULL;
                if (b->stop != NULL) {
                    px_actor *was = pxi_tls_actor;
                    pxi_tls_actor = a;
                    b->stop((px_ctx *)a);
                    pxi_tls_actor = was;
                }
                abort_spawn(a);
                return PX_ECLOSED;
            }
            link_child(parent, a);
            nng_mtx_unlock(sys->tree_mtx);
        } else {
            link_child(parent, a);
        }
    }
    /* Only now, with the spawn certain to succeed, take the argument. */
    if (arg != NULL && *arg != NULL) {
        pxi_actor_ext *x = pxi_ext_get(a);
        if (x != NULL) {
            x->arg = *arg;
            *arg = NULL;
        }
    }
    atomic_store_explicit(&a->state, PXI_A_ALIVE, memory_order_release);
    if (px_log_enabled(sys, PX_LOG_TRACE)) {
        char b2[48];
        px_log(sys, PX_LOG_TRACE, "spawned %s (%s)", px_ref_format(ref, b2, sizeof(b2)),
               b->name ? b->name : "?");
    }
    if (out != NULL) {
        *out = ref;
    }
    if (a->flags & PXI_AF_STOP_REQ) {
        a->flags &= ~PXI_AF_STOP_REQ;
        stop_msg_to(a);
    }
    /* What init sent must not be overtaken by the child's own first turn. */
    pxi_worker *w = pxi_current_worker();
    if (w != NULL && w->sys == sys) {
        outbox_flush(w);
    }
    release_and_recheck(a);
    return PX_OK;
}

/* ---- public: actor context ---- */

px_ref px_self(const px_ctx *ctx) { return pxi_ref_of(of_ctx(ctx)); }
px_ref px_parent(const px_ctx *ctx) {
    px_actor *p = of_ctx(ctx)->parent;
    return p ? pxi_ref_of(p) : PX_REF_NIL;
}
px_system *px_ctx_system(const px_ctx *ctx) { return of_ctx(ctx)->sys; }
void *px_state(const px_ctx *ctx) { return of_ctx(ctx)->ustate; }
void px_set_state(px_ctx *ctx, void *state) { of_ctx(ctx)->ustate = state; }

px_err px_spawn(px_ctx *ctx, const px_behavior *b, px_msg **arg,
                const px_spawn_opts *opts, px_ref *out) {
    if (ctx == NULL) {
        return PX_EINVAL;
    }
    px_actor *a = of_ctx(ctx);
    return pxi_spawn(a->sys, a, b, arg, opts, out, 0, NULL);
}

px_err px_spawn_named(px_ctx *ctx, const char *behavior, px_msg **arg,
                      const px_spawn_opts *opts, px_ref *out) {
    if (ctx == NULL || behavior == NULL) {
        return PX_EINVAL;
    }
    const px_behavior *b = px_behavior_lookup(of_ctx(ctx)->sys, behavior);
    return b == NULL ? PX_ENOENT : px_spawn(ctx, b, arg, opts, out);
}

px_err px_send(px_ctx *ctx, px_ref to, px_msg **msg) {
    px_actor *a = of_ctx(ctx);
    px_err rv = pxi_check_msg(a->sys, msg);
    if (rv != PX_OK) {
        return rv;
    }
    (*msg)->sender = pxi_ref_of(a);
    return pxi_send_from(a, to, msg);
}

px_err px_reply(px_ctx *ctx, const px_msg *request, px_msg **reply) {
    if (request == NULL || px_ref_is_nil(request->sender)) {
        return PX_EINVAL;
    }
    px_actor *a = of_ctx(ctx);
    px_err rv = pxi_check_msg(a->sys, reply);
    if (rv != PX_OK) {
        return rv;
    }
    px_msg *m = *reply;
    m->sender = pxi_ref_of(a);
    if (request->flags & PXI_MF_ASKED) {
        m->corr = request->corr;
        m->flags |= PXI_MF_REPLY;
    }
    return pxi_send_from(a, request->sender, reply);
}

static px_err remember_timer(px_actor *a, uint64_t id) {
    pxi_actor_ext *x = pxi_ext_get(a);
    if (x == NULL) {
        return PX_ENOMEM;
    }
    if (x->ntimers == x->captimers) {
        /* Forget timers that already fired before growing. */
        uint32_t k = 0;
        for (uint32_t i = 0; i < x->ntimers; i++) {
            if (pxi_timer_pending(a->sys->timers, x->timers[i])) {
                x->timers[k++] = x->timers[i];
            }
        }
        x->ntimers = k;
    }
    if (x->ntimers == x->captimers) {
        uint32_t ncap = x->captimers ? x->captimers * 2 : 4;
        uint64_t *nt = realloc(x->timers, ncap * sizeof(*nt));
        if (nt == NULL) {
            return PX_ENOMEM;
        }
        x->timers = nt;
        x->captimers = ncap;
    }
    x->timers[x->ntimers++] = id;
    return PX_OK;
}

px_err px_ask(px_ctx *ctx, px_ref to, px_msg **msg, uint32_t timeout_ms, uint64_t *corr) {
    px_actor *a = of_ctx(ctx);
    px_system *sys = a->sys;
    if (timeout_ms == 0 || timeout_ms > PXI_MAX_DELAY_MS) {
        return PX_EINVAL;
    }
    px_err rv = pxi_check_msg(sys, msg);
    if (rv != PX_OK) {
        return rv;
    }
    pxi_actor_ext *x = pxi_ext_get(a);
    if (x == NULL) {
        return PX_ENOMEM;
    }
    if (x->npend == x->cappend) {
        uint32_t ncap = x->cappend ? x->cappend * 2 : 4;
        pxi_pending *np = realloc(x->pend, ncap * sizeof(*np));
        if (np == NULL) {
            return PX_ENOMEM;
        }
        x->pend = np;
        x->cappend = ncap;
    }
    px_msg *tm = pxi_msg_new(PX_MSG_ASK_TIMEOUT);
    if (tm == NULL) {
        return PX_ENOMEM;
    }
    uint64_t c = ++x->next_corr;
    px_ref me = pxi_ref_of(a);
    tm->corr = c;
    tm->sender = me;
    uint64_t timer;
    rv = pxi_timer_add(sys->timers, timeout_ms, 0, me, tm, 0, &timer);
    if (rv != PX_OK) {
        px_msg_free(tm);
        return rv;
    }
    /* Registered before the send: a node loss right after it ends it. */
    bool remote = to.node != 0 && to.node != sys->node;
    if (remote && (rv = pxi_rask_add(sys, me, c, to)) != PX_OK) {
        pxi_timer_cancel(sys->timers, timer);
        return rv;
    }
    px_msg *m = *msg;
    m->sender = me;
    m->corr = c;
    m->flags |= PXI_MF_ASKED;
    rv = pxi_send_from(a, to, msg);
    if (rv != PX_OK) {
        m->flags &= ~PXI_MF_ASKED;
        m->corr = 0;
        pxi_timer_cancel(sys->timers, timer);
        if (remote) {
            pxi_rask_del(sys, me, c);
        }
        return rv;
    }
    x->pend[x->npend++] = (pxi_pending){c, timer, remote};
    if (corr != NULL) {
        *corr = c;
    }
    return PX_OK;
}

void px_stop_self(px_ctx *ctx) { of_ctx(ctx)->flags |= PXI_AF_STOP_REQ; }

void px_fail(px_ctx *ctx, px_err code, const char *fmt, ...) {
    px_actor *a = of_ctx(ctx);
    pxi_actor_ext *x = pxi_ext_get(a);
    a->flags |= PXI_AF_FAILED;
    if (x == NULL) {
        return;
    }
    x->fail_code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->fail_reason, sizeof(x->fail_reason), fmt, ap);
    va_end(ap);
}

px_err px_send_after(px_ctx *ctx, uint32_t delay_ms, px_ref to, px_msg **msg, uint64_t *timer) {
    px_actor *a = of_ctx(ctx);
    if (delay_ms > PXI_MAX_DELAY_MS) {
        return PX_EINVAL;
    }
    px_err rv = pxi_check_msg(a->sys, msg);
    if (rv != PX_OK) {
        return rv;
    }
    (*msg)->sender = pxi_ref_of(a);
    uint64_t id;
    rv = pxi_timer_add(a->sys->timers, delay_ms, 0, to, *msg, 0, &id);
    if (rv != PX_OK) {
        return rv;
    }
    *msg = NULL;
    if (remember_timer(a, id) != PX_OK) {
        px_log(a->sys, PX_LOG_WARN, "timer %llx of actor %u will outlive it (out of memory)",
               (unsigned long long)id, a->id);
    }
    if (timer != NULL) {
        *timer = id;
    }
    return PX_OK;
}

px_err px_timer_every(px_ctx *ctx, uint32_t period_ms, uint32_t tag, uint64_t *timer) {
    px_actor *a = of_ctx(ctx);
    if (period_ms == 0 || period_ms > PXI_MAX_DELAY_MS) {
        return PX_EINVAL;
    }
    uint64_t id;
    px_err rv = pxi_timer_add(a->sys->timers, period_ms, period_ms, pxi_ref_of(a), NULL, tag, &id);
    if (rv != PX_OK) {
        return rv;
    }
    rv = remember_timer(a, id);
    if (rv != PX_OK) {
        pxi_timer_cancel(a->sys->timers, id);
        return rv;
    }
    if (timer != NULL) {
        *timer = id;
    }
    return PX_OK;
}

/* ---- public: anywhere ---- */

px_err px_timer_cancel(px_system *sys, uint64_t timer) {
    if (sys == NULL) {
        return PX_EINVAL;
    }
    return pxi_timer_cancel(sys->timers, timer);
}

px_err px_stop(px_system *sys, px_ref ref) {
    if (sys == NULL) {
        return PX_EINVAL;
    }
    if (ref.node != sys->node && ref.node != 0) {
        const px_router *r = pxi_router_enter(sys);
        px_err rv = r != NULL && r->stop != NULL ? r->stop(r->arg, ref) : PX_EUNREACHABLE;
        pxi_router_leave(sys, r);
        return rv;
    }
    px_actor *a = pxi_pin_ref(sys, ref);
    if (a == NULL) {
        return PX_EDEAD;
    }
    stop_msg_to(a);
    pxi_unpin(a);
    return PX_OK;
}

int px_is_alive(px_system *sys, px_ref ref) {
    px_actor *a = sys != NULL ? pxi_pin_ref(sys, ref) : NULL;
    if (a == NULL) {
        return 0;
    }
    uint32_t st = atomic_load(&a->state);
    pxi_unpin(a);
    return st >= PXI_A_STARTING && st <= PXI_A_RESTARTING;
}

/* a is pinned. */
static void read_stats(px_actor *a, px_actor_stats *out) {
    memset(out, 0, sizeof(*out));
    out->processed = atomic_load_explicit(&a->processed, memory_order_relaxed);
    if (a->bq != NULL) {
        nng_mtx_lock(a->bq->mtx);
        out->depth = atomic_load(&a->bq->count);
        out->hwm = a->bq->hwm;
        nng_mtx_unlock(a->bq->mtx);
        out->dropped = atomic_load(&a->bq->dropped);
        out->capacity = a->bq->cap;
    } else {
        uint64_t pushed = atomic_load(&a->pushed);
        uint64_t popped = atomic_load(&a->popped);
        out->depth = pushed > popped ? pushed - popped : 0;
        out->hwm = atomic_load_explicit(&a->hwm, memory_order_relaxed);
        if (out->depth > out->hwm) {
            out->hwm = out->depth;
        }
    }
}

px_err px_actor_stats_get(px_system *sys, px_ref ref, px_actor_stats *out) {
    if (sys == NULL || out == NULL) {
        return PX_EINVAL;
    }
    px_actor *a = pxi_pin_ref(sys, ref);
    if (a == NULL) {
        return PX_EDEAD;
    }
    read_stats(a, out);
    pxi_unpin(a);
    return PX_OK;
}

/* Visits every id ever handed out. Each slot is pinned with the
 * incarnation read just before (rule 1), so a slot that is free, dead or
 * taken over in between simply fails the pin and is skipped; what fn gets
 * is copied while pinned, and fn runs after the unpin with no lock held. */
px_err px_system_actors(px_system *sys,
                        void (*fn)(void *arg, px_ref ref, const char *behavior, const char *name,
                                   const px_actor_stats *st),
                        void *arg) {
    if (sys == NULL || fn == NULL) {
        return PX_EINVAL;
    }
    uint32_t end = atomic_load(&sys->next_id);
    if (end > sys->id_cap) {
        end = sys->id_cap;
    }
    for (uint32_t id = 1; id < end; id++) {
        px_actor *a = pxi_slot(sys, id);
        if (a == NULL || a == sys->root) {
            continue;
        }
        uint32_t inc = atomic_load(&a->inc);
        if (!pxi_pin(a, inc)) {
            continue;
        }
        px_ref ref = {sys->node, a->node_inc, id, inc};
        const char *beh = a->beh != NULL ? a->beh->name : NULL;
        char name[128];
        bool named = false;
        nng_mtx_lock(sys->names_mtx);
        if (a->name != NULL) {
            snprintf(name, sizeof(name), "%s", a->name);
            named = true;
        }
        nng_mtx_unlock(sys->names_mtx);
        px_actor_stats st;
        read_stats(a, &st);
        pxi_unpin(a);
        fn(arg, ref, beh != NULL ? beh : "", named ? name : NULL, &st);
    }
    return PX_OK;
}

/* At system free, after the workers are joined: nothing runs any more.
 * Dead-letters what is left and unmaps the chunks. */
void pxi_slots_free(px_system *sys) {
    for (uint32_t c = 0; c < sys->nchunks; c++) {
        px_actor *chunk = atomic_load(&sys->chunks[c]);
        if (chunk == NULL) {
            continue;
        }
        for (uint32_t i = 0; i < PXI_CHUNK; i++) {
            px_actor *a = &chunk[i];
            if (a->sys == NULL) {
                continue;
            }
            uint32_t st = atomic_load(&a->state);
            if (st != PXI_A_FREE) {
                free_ext(a);
                free(a->name);
                a->name = NULL;
                drain(a);
            }
            pxi_bq_free(a->bq);
            a->bq = NULL;
        }
        munmap(chunk, sizeof(px_actor) * PXI_CHUNK);
    }
    free((void *)sys->chunks);
    sys->chunks = NULL;
}
