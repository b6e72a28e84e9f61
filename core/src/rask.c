/*
 * rask.c — asks waiting on actors of other nodes, so that the layer that
 * learns a node is lost can end them at once (px_system_fail_asks) instead
 * of leaving each to its timeout, and a reincarnation ends those of its
 * earlier incarnations' actors (pxi_rasks_fail_old). An entry is made by px_ask for a remote
 * target and removed when the ask ends (reply, timeout, notice, or the
 * asker's stop). One mutex: remote asks already cost a network round trip.
 */
#include <stdlib.h>

#include "runtime.h"

typedef struct pxi_rask {
    px_ref asker, to;
    uint64_t corr;
    struct pxi_rask *next;
} pxi_rask;

static size_t bucket(const pxi_rasks *r, px_ref asker, uint64_t corr) {
    uint64_t h = ((uint64_t)asker.id << 32 ^ asker.inc ^ corr) * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 32) & (r->nb - 1);
}

static bool grow(pxi_rasks *r) {
    size_t nb = r->nb ? r->nb * 2 : 64;
    pxi_rask **b = calloc(nb, sizeof *b);
    if (b == NULL) {
        return r->nb > 0; /* longer chains, still correct */
    }
    pxi_rasks nr = {.b = b, .nb = nb};
    for (size_t i = 0; i < r->nb; i++) {
        for (pxi_rask *e = r->b[i], *next; e != NULL; e = next) {
            next = e->next;
            size_t k = bucket(&nr, e->asker, e->corr);
            e->next = b[k];
            b[k] = e;
        }
    }
    free(r->b);
    r->b = b;
    r->nb = nb;
    return true;
}

px_err pxi_rask_add(px_system *sys, px_ref asker, uint64_t corr, px_ref to) {
    pxi_rasks *r = &sys->rasks;
    pxi_rask *e = malloc(sizeof *e);
    if (e == NULL) {
        return PX_ENOMEM;
    }
    *e = (pxi_rask){.asker = asker, .to = to, .corr = corr};
    nng_mtx_lock(r->mtx);
    if (r->n >= r->nb && !grow(r)) { /* (nb == 0 always grows) */
        nng_mtx_unlock(r->mtx);
        free(e);
        return PX_ENOMEM;
    }
    size_t k = bucket(r, asker, corr);
    e->next = r->b[k];
    r->b[k] = e;
    r->n++;
    nng_mtx_unlock(r->mtx);
    return PX_OK;
}

void pxi_rask_del(px_system *sys, px_ref asker, uint64_t corr) {
    pxi_rasks *r = &sys->rasks;
    nng_mtx_lock(r->mtx);
    if (r->nb > 0) {
        for (pxi_rask **at = &r->b[bucket(r, asker, corr)]; *at != NULL; at = &(*at)->next) {
            pxi_rask *e = *at;
            if (e->corr == corr && px_ref_eq(e->asker, asker)) {
                *at = e->next;
                r->n--;
                free(e);
                break;
            }
        }
    }
    nng_mtx_unlock(r->mtx);
}

/* Takes out every entry that waits on an actor of `node` (of any
 * incarnation but keep_inc) or, with node 0, whose asker is of an earlier
 * incarnation than cur; then ends each of those asks with a notice. */
static size_t fail_matching(px_system *sys, uint32_t node, uint32_t keep_inc, uint32_t cur,
                            px_err code) {
    pxi_rasks *r = &sys->rasks;
    pxi_rask *taken = NULL;
    size_t n = 0;
    nng_mtx_lock(r->mtx);
    for (size_t i = 0; i < r->nb; i++) {
        for (pxi_rask **at = &r->b[i]; *at != NULL;) {
            pxi_rask *e = *at;
            bool match = node != 0 ? e->to.node == node && e->to.node_inc != keep_inc
                                   : e->asker.node_inc != cur;
            if (match) {
                *at = e->next;
                r->n--;
                e->next = taken;
                taken = e;
                n++;
            } else {
                at = &e->next;
            }
        }
    }
    nng_mtx_unlock(r->mtx);
    /* The notice ends the ask in the asker's turn (or finds it already
     * ended, and is dropped there). */
    while (taken != NULL) {
        pxi_rask *e = taken;
        taken = e->next;
        (void)pxi_notify_undelivered(sys, e->asker, e->to, code, e->corr);
        free(e);
    }
    return n;
}

size_t px_system_fail_asks(px_system *sys, uint32_t node, uint32_t keep_inc, px_err code) {
    if (sys == NULL || node == 0 || node == sys->node) {
        return 0;
    }
    return fail_matching(sys, node, keep_inc, 0, code);
}

size_t pxi_rasks_fail_old(px_system *sys, uint32_t cur, px_err code) {
    return fail_matching(sys, 0, 0, cur, code);
}

void pxi_rasks_fini(pxi_rasks *r) {
    for (size_t i = 0; i < r->nb; i++) {
        for (pxi_rask *e = r->b[i], *next; e != NULL; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(r->b);
    r->b = NULL;
    r->nb = r->n = 0;
}
