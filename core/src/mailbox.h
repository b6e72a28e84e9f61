/*
 * mailbox.h — the two mailbox kinds.
 *
 * Unbounded: Vyukov's intrusive MPSC queue with a stub node. Producers do
 * one atomic exchange on the tail; the single consumer (the worker running
 * the actor) walks `next` links. A producer between its exchange and its
 * link store leaves the queue briefly "inconsistent": pop returns NULL while
 * pxi_mpsc_nonempty is true; the consumer retries on its next turn.
 *
 * Bounded: a ring of `cap` message pointers under a mutex, with a condition
 * variable for senders that block. Exactly correct for every overflow
 * policy; bounded mailboxes trade the lock-free path for hard limits.
 */
#ifndef PX_MAILBOX_H
#define PX_MAILBOX_H

#include <stdatomic.h>
#include <stdbool.h>

#include <nng/nng.h>
#include <nng/supplemental/util/platform.h>

#include <plexus/system.h>

#include "msg_int.h"

/* Push: any thread. */
static inline void pxi_mpsc_push(_Atomic(pxi_node *) *tail, pxi_node *n) {
    atomic_store_explicit(&n->next, NULL, memory_order_relaxed);
    /* seq_cst: pairs with the consumer clearing `sched` then re-checking. */
    pxi_node *prev = atomic_exchange(tail, n);
    atomic_store_explicit(&prev->next, n, memory_order_release);
}

/* Pop: consumer only. Returns a node the caller now owns, or NULL. */
static inline pxi_node *pxi_mpsc_pop(pxi_node **headp, _Atomic(pxi_node *) *tail,
                                     pxi_node *stub) {
    pxi_node *head = *headp;
    pxi_node *next = atomic_load_explicit(&head->next, memory_order_acquire);
    if (head == stub) {
        if (next == NULL) {
            return NULL;
        }
        *headp = next;
        head = next;
        next = atomic_load_explicit(&next->next, memory_order_acquire);
    }
    if (next != NULL) {
        *headp = next;
        /* The next message was written on another core: start fetching it
         * while the caller handles this one. */
        __builtin_prefetch(next);
        int32_t skip = pxi_msg_of(head)->skip;
        if (skip != 0) {
            __builtin_prefetch((const char *)head + (intptr_t)skip * 64);
        }
        return head;
    }
    if (atomic_load_explicit(tail, memory_order_acquire) != head) {
        return NULL; /* a producer is mid-push */
    }
    pxi_mpsc_push(tail, stub);
    next = atomic_load_explicit(&head->next, memory_order_acquire);
    if (next != NULL) {
        *headp = next;
        return head;
    }
    return NULL;
}

/* Consumer only (reads its own head; the tail with seq_cst so it pairs with
 * a producer's seq_cst check of the actor's scheduled flag). */
static inline bool pxi_mpsc_nonempty(pxi_node *head, _Atomic(pxi_node *) *tail,
                                     pxi_node *stub) {
    return head != stub || atomic_load(tail) != stub;
}

/* A bounded mailbox. */
typedef struct pxi_bq {
    nng_mtx *mtx;
    nng_cv *cv;        /* blocked senders wait here */
    px_msg **ring;     /* guarded by mtx */
    uint32_t cap;
    uint32_t head;     /* guarded by mtx */
    _Atomic uint32_t count; /* written under mtx; read lock-free for "nonempty" */
    uint32_t waiters;  /* guarded by mtx */
    bool closed;       /* guarded by mtx: the actor is gone, waiters give up */
    px_overflow overflow;
    uint32_t block_ms;
    uint64_t hwm;      /* guarded by mtx */
    _Atomic uint64_t dropped;
} pxi_bq;

px_err pxi_bq_alloc(pxi_bq **out, const px_mailbox_opts *o);
void pxi_bq_free(pxi_bq *q); /* frees queued messages too; NULL-safe */

/* Outcome of a bounded push. */
typedef enum {
    PXI_BQ_QUEUED,      /* m queued */
    PXI_BQ_DROPPED_NEW, /* m dropped by policy (freed by caller) */
    PXI_BQ_QUEUED_DROPPED_OLD, /* m queued; *old must be freed by caller */
    PXI_BQ_FULL,        /* PX_EFULL: caller keeps m */
    PXI_BQ_TIMEDOUT,    /* Block timed out: caller keeps m */
    PXI_BQ_CLOSED,      /* the actor is gone: caller dead-letters m */
} pxi_bq_res;

/* Any thread. may_block: the caller is not a worker. */
pxi_bq_res pxi_bq_push(pxi_bq *q, px_msg *m, bool may_block, px_msg **old);
/* Consumer only. */
px_msg *pxi_bq_pop(pxi_bq *q);
/* Wakes blocked senders for good (they see PXI_BQ_CLOSED). */
void pxi_bq_close(pxi_bq *q);

#endif
