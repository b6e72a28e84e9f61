/*
 * alarm.c — one-shot alarms (plexus/alarm.h): a min-heap of pending alarms
 * by deadline (dheap.h) and one thread that waits on a condition variable
 * until the earliest. A due alarm is completed through its own aio
 * (nng_aio_begin + nng_aio_finish), so its callback runs on nng's task
 * threads exactly as a sleep's would, but nng's timer thread never sees it.
 *
 * Deadlines are nng_clock() milliseconds; an alarm set for ms is due at
 * now + ms + 1 (nng_clock truncates, so "not before ms" holds — the same
 * instant nng's own sleep would end, minus the spin before it).
 *
 * One mutex (g.mtx) guards the heap and every alarm's fields. An alarm
 * completed but whose callback has not started yet (queued) is not
 * completed again: a second completion of one aio before its task ran
 * would put the task on nng's queue twice. Such a firing is folded into
 * the pending callback, which runs after both deadlines anyway.
 *
 * The thread lives while alarms do: the first px_alarm_new starts it, the
 * last px_alarm_free joins it (g_life serialises the two).
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include <nng/nng.h>
#include <nng/supplemental/util/platform.h>

#include <plexus/alarm.h>

#include "dheap.h"

struct px_alarm {
    px_alarm_fn fn;
    void *arg;
    nng_aio *aio;
    int32_t hidx; /* g.mtx: heap position, -1 when not pending */
    bool queued;  /* g.mtx: completed, callback not started */
    bool dead;    /* g.mtx: px_alarm_stop began */
};

static struct {
    nng_mtx *mtx;
    nng_cv *cv;
    pxi_dheap heap;  /* mtx: items are px_alarm pointers */
    uint32_t count;  /* g_life: alarms alive (heap holds room for each) */
    nng_thread *thr; /* g_life */
    bool exit;       /* mtx */
} g;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t g_life = PTHREAD_MUTEX_INITIALIZER;
static bool g_ok;

static void placed(void *ctx, uintptr_t item, int32_t pos) {
    (void)ctx;
    ((px_alarm *)item)->hidx = pos;
}

static void g_init(void) {
    g.heap.placed = placed;
    g_ok = nng_mtx_alloc(&g.mtx) == 0 && nng_cv_alloc(&g.cv, g.mtx) == 0;
}

/* Completes a's aio: its callback runs on a task thread. g.mtx held. */
static void fire_locked(px_alarm *a) {
    if (a->queued || a->dead) {
        return; /* the callback already on its way covers this firing */
    }
    a->queued = true;
    if (nng_aio_begin(a->aio)) {
        nng_aio_finish(a->aio, 0);
    } else {
        a->queued = false; /* stopped */
    }
}

static void on_aio(void *arg) {
    px_alarm *a = arg;
    nng_mtx_lock(g.mtx);
    a->queued = false;
    bool run = !a->dead && nng_aio_result(a->aio) == 0;
    nng_mtx_unlock(g.mtx);
    if (run) {
        a->fn(a->arg);
    }
}

static void alarm_main(void *arg) {
    (void)arg;
    nng_mtx_lock(g.mtx);
    while (!g.exit) {
        nng_time now = nng_clock();
        while (g.heap.n > 0 && g.heap.e[0].due <= now) {
            px_alarm *a = (px_alarm *)g.heap.e[0].item;
            pxi_dheap_remove(&g.heap, 0);
            fire_locked(a);
        }
        if (g.heap.n == 0) {
            nng_cv_wait(g.cv);
        } else {
            (void)nng_cv_until(g.cv, g.heap.e[0].due);
        }
    }
    nng_mtx_unlock(g.mtx);
}

px_err px_alarm_new(px_alarm **out, px_alarm_fn fn, void *arg) {
    if (out == NULL || fn == NULL) {
        return PX_EINVAL;
    }
    pthread_once(&g_once, g_init);
    if (!g_ok) {
        return PX_ENOMEM;
    }
    px_alarm *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        return PX_ENOMEM;
    }
    a->fn = fn;
    a->arg = arg;
    a->hidx = -1;
    if (nng_aio_alloc(&a->aio, on_aio, a) != 0) {
        free(a);
        return PX_ENOMEM;
    }
    px_err rv = PX_OK;
    pthread_mutex_lock(&g_life);
    nng_mtx_lock(g.mtx);
    if (g.count == g.heap.cap &&
        !pxi_dheap_reserve(&g.heap, g.heap.cap ? 2 * g.heap.cap : 16)) {
        rv = PX_ENOMEM;
    }
    if (rv == PX_OK) {
        g.count++;
    }
    nng_mtx_unlock(g.mtx);
    if (rv == PX_OK && g.thr == NULL && nng_thread_create(&g.thr, alarm_main, NULL) != 0) {
        g.thr = NULL;
        nng_mtx_lock(g.mtx);
        g.count--;
        nng_mtx_unlock(g.mtx);
        rv = PX_ENOMEM;
    }
    pthread_mutex_unlock(&g_life);
    if (rv != PX_OK) {
        nng_aio_free(a->aio);
        free(a);
        return rv;
    }
    *out = a;
    return PX_OK;
}

void px_alarm_set(px_alarm *a, uint32_t ms) {
    nng_mtx_lock(g.mtx);
    if (a->dead) {
        nng_mtx_unlock(g.mtx);
        return;
    }
    if (ms == 0) {
        if (a->hidx >= 0) {
            pxi_dheap_remove(&g.heap, (uint32_t)a->hidx);
        }
        fire_locked(a);
        nng_mtx_unlock(g.mtx);
        return;
    }
    nng_time due = nng_clock() + ms + 1;
    if (a->hidx >= 0) {
        pxi_dheap_rekey(&g.heap, (uint32_t)a->hidx, due);
    } else {
        pxi_dheap_push(&g.heap, due, (uintptr_t)a); /* room reserved by px_alarm_new */
    }
    if (a->hidx == 0) {
        nng_cv_wake1(g.cv); /* the thread waits for a later deadline, or none */
    }
    nng_mtx_unlock(g.mtx);
}

void px_alarm_stop(px_alarm *a) {
    if (a == NULL) {
        return;
    }
    nng_mtx_lock(g.mtx);
    a->dead = true;
    if (a->hidx >= 0) {
        pxi_dheap_remove(&g.heap, (uint32_t)a->hidx);
    }
    nng_mtx_unlock(g.mtx);
    nng_aio_stop(a->aio);
}

void px_alarm_free(px_alarm *a) {
    if (a == NULL) {
        return;
    }
    px_alarm_stop(a);
    nng_aio_free(a->aio);
    free(a);
    nng_thread *join = NULL;
    pthread_mutex_lock(&g_life);
    nng_mtx_lock(g.mtx);
    if (--g.count == 0) {
        g.exit = true;
        nng_cv_wake(g.cv);
        join = g.thr;
        g.thr = NULL;
    }
    nng_mtx_unlock(g.mtx);
    if (join != NULL) {
        nng_thread_destroy(join); /* joins */
        nng_mtx_lock(g.mtx);
        g.exit = false;
        pxi_dheap_free(&g.heap);
        nng_mtx_unlock(g.mtx);
    }
    pthread_mutex_unlock(&g_life);
}
