/*
 * timer.c — send-after and periodic timers, driven by one alarm
 * (plexus/alarm.h).
 *
 * Timers live in a slot array (id = slot << 32 | generation, so a stale id
 * never cancels a newer timer) and a min-heap of slot indices ordered by
 * deadline (dheap.h; each slot knows its heap position: cancel is
 * O(log n)). One mutex guards both.
 *
 * The alarm is set for the earliest deadline, under the lock: by an adder
 * whose timer is the new earliest, or by the callback for what is left.
 * The callback only delivers messages; it never runs user code; one
 * callback delivers at a time, in deadline order (on_tick).
 */
#include <stdlib.h>
#include <string.h>

#include <plexus/alarm.h>

#include "dheap.h"
#include "runtime.h"

typedef struct tslot {
    uint32_t period;  /* ms, 0 = one-shot */
    uint32_t gen;
    int32_t hidx;     /* heap position, -1 when not pending (its deadline is there) */
    uint32_t next_free;
    px_ref to;
    px_msg *msg;      /* one-shot payload; NULL for periodic (tick made per fire) */
    uint32_t tag;     /* periodic tick tag */
} tslot;

struct pxi_timers {
    px_system *sys;
    nng_mtx *mtx;
    px_alarm *alarm;
    tslot *slots;      /* mtx */
    uint32_t nslots, capslots, free_head; /* free_head: index+1, 0 = none */
    pxi_dheap heap;    /* mtx: items are slot indices */
    bool armed;        /* mtx: the alarm is set */
    bool ticking;      /* mtx: a callback is delivering (on_tick) */
    bool retick;       /* mtx: the alarm fired meanwhile: look again */
    nng_time armed_at; /* mtx */
    bool closed;       /* mtx */
};

#define TIMER_ID(slot, gen) (((uint64_t)(slot) + 1) << 32 | (gen))

static void placed(void *ctx, uintptr_t item, int32_t pos) {
    pxi_timers *t = ctx;
    t->slots[item].hidx = pos;
}

static void slot_release(pxi_timers *t, uint32_t s) {
    t->slots[s].gen++;
    t->slots[s].msg = NULL;
    t->slots[s].next_free = t->free_head;
    t->free_head = s + 1;
}

/* Sets the alarm for deadline `at`. Lock held. */
static void arm_locked(pxi_timers *t, nng_time at) {
    nng_time now = nng_clock();
    t->armed = true;
    t->armed_at = at;
    px_alarm_set(t->alarm, at > now ? (uint32_t)(at - now) : 0);
}

/* The alarm's callback. One callback delivers at a time (`ticking`): the
 * alarm can fire again while a batch is being delivered (an adder armed
 * it, or this callback did for the next deadline), and two callbacks
 * delivering batches side by side would interleave them — timers due
 * later delivered before ones due earlier. A callback that finds another
 * at work leaves it a note (`retick`) and returns; the one at work goes
 * round until nothing is due, then sets the alarm for what is left. */
static void on_tick(void *arg) {
    pxi_timers *t = arg;
    px_system *sys = t->sys;
    enum { BATCH = 64 };
    nng_mtx_lock(t->mtx);
    t->armed = false; /* this callback's alarm is over */
    if (t->ticking) {
        t->retick = true;
        nng_mtx_unlock(t->mtx);
        return;
    }
    t->ticking = true;
    for (;;) {
        px_ref to[BATCH];
        px_msg *msgs[BATCH];
        uint32_t n = 0;
        nng_time now = nng_clock();
        t->retick = false;
        while (!t->closed && t->heap.n > 0 && n < BATCH) {
            uint32_t s = (uint32_t)t->heap.e[0].item;
            tslot *ts = &t->slots[s];
            if (t->heap.e[0].due > now) {
                break;
            }
            px_msg *m = ts->msg;
            if (ts->period > 0) {
                m = pxi_msg_new(PX_MSG_TIMER);
                if (m != NULL) {
                    m->tag = ts->tag;
                    m->corr = TIMER_ID(s, ts->gen);
                }
                pxi_dheap_rekey(&t->heap, 0, now + ts->period);
            } else {
                pxi_dheap_remove(&t->heap, 0);
                slot_release(t, s);
            }
            if (m != NULL) {
                to[n] = ts->to;
                msgs[n++] = m;
            }
        }
        if (n == 0 && !t->retick) {
            /* An adder may have set the alarm meanwhile, for a later
             * deadline than what is left (the rule adders follow too). */
            if (!t->closed && t->heap.n > 0 &&
                (!t->armed || t->heap.e[0].due < t->armed_at)) {
                arm_locked(t, t->heap.e[0].due);
            }
            t->ticking = false;
            nng_mtx_unlock(t->mtx);
            return;
        }
        nng_mtx_unlock(t->mtx);
        for (uint32_t i = 0; i < n; i++) {
            px_msg *m = msgs[i];
            px_err rv = pxi_deliver(sys, to[i], &m, false);
            if (rv != PX_OK && m != NULL) {
                pxi_dead_letter(sys, to[i], m, rv); /* full, fenced, unreachable */
            }
        }
        nng_mtx_lock(t->mtx);
    }
}

px_err pxi_timers_alloc(px_system *sys, pxi_timers **out) {
    pxi_timers *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        return PX_ENOMEM;
    }
    t->sys = sys;
    t->heap.placed = placed;
    t->heap.ctx = t;
    if (nng_mtx_alloc(&t->mtx) != 0) {
        free(t);
        return PX_ENOMEM;
    }
    if (px_alarm_new(&t->alarm, on_tick, t) != PX_OK) {
        nng_mtx_free(t->mtx);
        free(t);
        return PX_ENOMEM;
    }
    *out = t;
    return PX_OK;
}

static px_err grow(pxi_timers *t) {
    uint32_t ncap = t->capslots ? t->capslots * 2 : 64;
    tslot *ns = realloc(t->slots, ncap * sizeof(*ns));
    if (ns == NULL) {
        return PX_ENOMEM;
    }
    t->slots = ns;
    if (!pxi_dheap_reserve(&t->heap, ncap)) {
        return PX_ENOMEM;
    }
    t->capslots = ncap;
    return PX_OK;
}

static px_err add(pxi_timers *t, uint32_t delay_ms, uint32_t period_ms, px_ref to,
                  px_msg *m, uint32_t tag, uint64_t *id) {
    nng_time at = nng_clock() + delay_ms;
    nng_mtx_lock(t->mtx);
    if (t->closed) {
        nng_mtx_unlock(t->mtx);
        return PX_ECLOSED;
    }
    uint32_t s;
    if (t->free_head != 0) {
        s = t->free_head - 1;
        t->free_head = t->slots[s].next_free;
    } else {
        if (t->nslots == t->capslots && grow(t) != PX_OK) {
            nng_mtx_unlock(t->mtx);
            return PX_ENOMEM;
        }
        s = t->nslots++;
        t->slots[s].gen = 1;
    }
    tslot *ts = &t->slots[s];
    ts->period = period_ms;
    ts->to = to;
    ts->msg = m;
    ts->tag = tag;
    pxi_dheap_push(&t->heap, at, s); /* room: grow() reserves one per slot */
    if (id != NULL) {
        *id = TIMER_ID(s, ts->gen);
    }
    if (!t->armed || at < t->armed_at) {
        arm_locked(t, at);
    }
    nng_mtx_unlock(t->mtx);
    return PX_OK;
}

px_err pxi_timer_add(pxi_timers *t, uint32_t delay_ms, uint32_t period_ms,
                     px_ref to, px_msg *m, uint32_t tag, uint64_t *id) {
    return add(t, delay_ms, period_ms, to, m, tag, id);
}

px_err pxi_timer_cancel(pxi_timers *t, uint64_t id) {
    uint32_t s = (uint32_t)(id >> 32);
    uint32_t gen = (uint32_t)id;
    if (s == 0) {
        return PX_ENOENT;
    }
    s--;
    px_msg *m = NULL;
    nng_mtx_lock(t->mtx);
    if (s >= t->nslots || t->slots[s].gen != gen || t->slots[s].hidx < 0) {
        nng_mtx_unlock(t->mtx);
        return PX_ENOENT;
    }
    m = t->slots[s].msg;
    pxi_dheap_remove(&t->heap, (uint32_t)t->slots[s].hidx);
    slot_release(t, s);
    nng_mtx_unlock(t->mtx);
    px_msg_free(m);
    return PX_OK;
}

bool pxi_timer_pending(pxi_timers *t, uint64_t id) {
    uint32_t s = (uint32_t)(id >> 32);
    if (s == 0) {
        return false;
    }
    s--;
    nng_mtx_lock(t->mtx);
    bool p = s < t->nslots && t->slots[s].gen == (uint32_t)id && t->slots[s].hidx >= 0;
    nng_mtx_unlock(t->mtx);
    return p;
}

void pxi_timers_stop(pxi_timers *t) {
    if (t == NULL) {
        return;
    }
    nng_mtx_lock(t->mtx);
    t->closed = true;
    while (t->heap.n > 0) {
        uint32_t s = (uint32_t)t->heap.e[0].item;
        px_msg_free(t->slots[s].msg);
        pxi_dheap_remove(&t->heap, 0);
        slot_release(t, s);
    }
    nng_mtx_unlock(t->mtx);
    px_alarm_stop(t->alarm);
}

void pxi_timers_free(pxi_timers *t) {
    if (t == NULL) {
        return;
    }
    pxi_timers_stop(t);
    px_alarm_free(t->alarm);
    nng_mtx_free(t->mtx);
    free(t->slots);
    pxi_dheap_free(&t->heap);
    free(t);
}
