/*
 * mailbox.c — the bounded mailbox (the unbounded MPSC queue is inline in
 * mailbox.h). All state is under q->mtx, except `count` which is also read
 * without the lock to decide whether the actor has work.
 */
#include <stdlib.h>

#include "mailbox.h"

px_err pxi_bq_alloc(pxi_bq **out, const px_mailbox_opts *o) {
    pxi_bq *q = calloc(1, sizeof(*q));
    if (q == NULL) {
        return PX_ENOMEM;
    }
    q->ring = calloc(o->capacity, sizeof(px_msg *));
    if (q->ring == NULL || nng_mtx_alloc(&q->mtx) != 0) {
        free(q->ring);
        free(q);
        return PX_ENOMEM;
    }
    if (nng_cv_alloc(&q->cv, q->mtx) != 0) {
        nng_mtx_free(q->mtx);
        free(q->ring);
        free(q);
        return PX_ENOMEM;
    }
    q->cap = o->capacity;
    q->overflow = o->overflow;
    q->block_ms = o->block_timeout_ms;
    *out = q;
    return PX_OK;
}

void pxi_bq_free(pxi_bq *q) {
    if (q == NULL) {
        return;
    }
    uint32_t n = atomic_load_explicit(&q->count, memory_order_relaxed);
    for (uint32_t i = 0; i < n; i++) {
        px_msg_free(q->ring[(q->head + i) % q->cap]);
    }
    nng_cv_free(q->cv);
    nng_mtx_free(q->mtx);
    free(q->ring);
    free(q);
}

static void put(pxi_bq *q, px_msg *m) {
    uint32_t n = atomic_load_explicit(&q->count, memory_order_relaxed);
    q->ring[(q->head + n) % q->cap] = m;
    atomic_store(&q->count, n + 1);
    if (n + 1 > q->hwm) {
        q->hwm = n + 1;
    }
}

static px_msg *take(pxi_bq *q) {
    px_msg *m = q->ring[q->head];
    q->ring[q->head] = NULL;
    q->head = (q->head + 1) % q->cap;
    atomic_store(&q->count, atomic_load_explicit(&q->count, memory_order_relaxed) - 1);
    return m;
}

pxi_bq_res pxi_bq_push(pxi_bq *q, px_msg *m, bool may_block, px_msg **old) {
    pxi_bq_res res = PXI_BQ_QUEUED;
    nng_mtx_lock(q->mtx);
    if (q->closed) {
        res = PXI_BQ_CLOSED;
        goto out;
    }
    if (atomic_load_explicit(&q->count, memory_order_relaxed) < q->cap) {
        put(q, m);
        goto out;
    }
    switch (q->overflow) {
    case PX_OVERFLOW_DROP_NEWEST:
        atomic_fetch_add_explicit(&q->dropped, 1, memory_order_relaxed);
        res = PXI_BQ_DROPPED_NEW;
        break;
    case PX_OVERFLOW_DROP_OLDEST:
        *old = take(q);
        put(q, m);
        atomic_fetch_add_explicit(&q->dropped, 1, memory_order_relaxed);
        res = PXI_BQ_QUEUED_DROPPED_OLD;
        break;
    case PX_OVERFLOW_BLOCK:
        if (!may_block) {
            res = PXI_BQ_FULL;
            break;
        }
        {
            nng_time until = nng_clock() + q->block_ms;
            res = PXI_BQ_TIMEDOUT;
            q->waiters++;
            while (!q->closed) {
                if (atomic_load_explicit(&q->count, memory_order_relaxed) < q->cap) {
                    put(q, m);
                    res = PXI_BQ_QUEUED;
                    break;
                }
                if (nng_cv_until(q->cv, until) != 0) {
                    break;
                }
            }
            q->waiters--;
            if (q->closed && res == PXI_BQ_TIMEDOUT) {
                res = PXI_BQ_CLOSED;
            }
        }
        break;
    case PX_OVERFLOW_ERROR:
    default:
        res = PXI_BQ_FULL;
        break;
    }
out:
    nng_mtx_unlock(q->mtx);
    return res;
}

px_msg *pxi_bq_pop(pxi_bq *q) {
    if (atomic_load(&q->count) == 0) {
        return NULL;
    }
    nng_mtx_lock(q->mtx);
    px_msg *m = NULL;
    if (atomic_load_explicit(&q->count, memory_order_relaxed) > 0) {
        m = take(q);
        if (q->waiters > 0) {
            nng_cv_wake1(q->cv);
        }
    }
    nng_mtx_unlock(q->mtx);
    return m;
}

void pxi_bq_close(pxi_bq *q) {
    nng_mtx_lock(q->mtx);
    q->closed = true;
    nng_cv_wake(q->cv);
    nng_mtx_unlock(q->mtx);
}
