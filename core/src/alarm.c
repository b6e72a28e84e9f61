/*
 * alarm.c — one-shot alarms (plexus/alarm.h): a min-heap of pending alarms
 * by deadline and one thread that waits on a condition variable until the
 * earliest. A due alarm is completed through its own aio (nng_aio_begin +
 * nng_aio_finish), so its callback runs on nng's task threads exactly as a
 * sleep's would, but nng's timer thread never sees it.
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

struct px_alarm {
    px_alarm_fn fn;
    void *arg;
    nng_aio *aio;
    nng_time due; /* g.mtx, while pending */
    int32_t hidx; /* g.mtx: heap index, -1 when not pending */
    bool queued;  /* g.mtx: completed, callback not started */
    bool dead;    /* g.mtx: px_alarm_stop began */
};

static struct {
    nng_mtx *mtx;
    nng_cv *cv;
    px_alarm **heap; /* mtx */
    uint32_t n, cap; /* mtx */
    uint32_t count;  /* g_life: alarms alive (heap holds room for each) */
    nng_thread *thr; /* g_life */
    bool exit;       /* mtx */
} g;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t g_life = PTHREAD_MUTEX_INITIALIZER;
static bool g_ok;

static void g_init(void) {
    g_ok = nng_mtx_alloc(&g.mtx) == 0 && nng_cv_alloc(&g.cv, g.mtx) == 0;
}

static bool before(uint32_t i, uint32_t j) { return g.heap[i]->due < g.heap[j]->due; }

static void hswap(uint32_t i, uint32_t j) {
    px_alarm *x = g.heap[i];
    g.heap[i] = g.heap[j];
    g.heap[j] = x;
    g.heap[i]->hidx = (int32_t)i;
    g.heap[j]->hidx = (int32_t)j;
}

static void sift_up(uint32_t i) {
    while (i > 0 && before(i, (i - 1) / 2)) {
        hswap(i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void sift_down(uint32_t i) {
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < g.n && before(l, m)) {
            m = l;
        }
        if (r < g.n && before(r, m)) {
            m = r;
        }
        if (m == i) {
            return;
        }
        hswap(i, m);
        i = m;
    }
}

static void heap_remove(px_alarm *a) {
    uint32_t i = (uint32_t)a->hidx, last = --g.n;
    a->hidx = -1;
    if (i != last) {
        g.heap[i] = g.heap[last];
        g.heap[i]->hidx = (int32_t)i;
        sift_down(i);
        sift_up(i);
    }
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
        while (g.n > 0 && g.heap[0]->due <= now) {
            px_alarm *a = g.heap[0];
            heap_remove(a);
            fire_locked(a);
        }
        if (g.n == 0) {
            nng_cv_wait(g.cv);
        } else {
            (void)nng_cv_until(g.cv, g.heap[0]->due);
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
    if (g.count == g.cap) {
        uint32_t nc = g.cap ? 2 * g.cap : 16;
        px_alarm **nh = realloc(g.heap, nc * sizeof(*nh));
        if (nh == NULL) {
            rv = PX_ENOMEM;
        } else {
            g.heap = nh;
            g.cap = nc;
        }
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
            heap_remove(a);
        }
        fire_locked(a);
        nng_mtx_unlock(g.mtx);
        return;
    }
    a->due = nng_clock() + ms + 1;
    if (a->hidx >= 0) {
        sift_down((uint32_t)a->hidx);
        sift_up((uint32_t)a->hidx);
    } else {
        a->hidx = (int32_t)g.n;
        g.heap[g.n++] = a; /* room reserved by px_alarm_new */
        sift_up((uint32_t)a->hidx);
    }
    if (g.heap[0] == a) {
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
        heap_remove(a);
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
        free(g.heap);
        g.heap = NULL;
        g.cap = 0;
        nng_mtx_unlock(g.mtx);
    }
    pthread_mutex_unlock(&g_life);
}
