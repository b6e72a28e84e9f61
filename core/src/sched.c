/*
 * sched.c — the scheduler: N workers on nng threads, each with a local run
 * queue; idle workers steal, then spin briefly, then park.
 *
 * Run queues (after Go's runtime): a ring of PXI_RUNQ actor pointers per
 * worker. Only the owner pushes (at tail); the owner pops and thieves steal
 * half (from head) with a CAS on head. A full ring spills half to the
 * global queue (mutex), which also takes actors made runnable by threads
 * that are not workers. Every 61st pick looks at the global queue first so
 * it cannot starve.
 *
 * Parking: a worker with nothing to run spins for up to cfg.spin_us (less,
 * down to none, while its parks outlast that; or longer, up to
 * cfg.spin_max_us, while it keeps being woken soon after it parks:
 * spin_adapt), then parks on its condition variable. The parker counts
 * itself in nidle and then re-checks every queue; a submitter publishes
 * work and then reads nidle.
 * Both sides use seq_cst, so one of them always sees the other: no lost
 * wake-up. A worker pushing to its own queue wakes a parked worker only if
 * it has surplus work (two or more queued) — a message chain between two
 * actors stays on one core instead of paying a ~50 us futex wake per hop.
 *
 * An actor is in at most one queue and runs on one worker at a time: the
 * actor's `sched` flag is set 0->1 by whoever submits it and cleared only by
 * the worker that ran it (actor.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime.h"

_Thread_local pxi_worker *pxi_tls_worker;
#define tls_worker pxi_tls_worker

/* ---- global queue ---- */

static void gq_push(px_system *sys, px_actor *a) {
    nng_mtx_lock(sys->gq_mtx);
    a->next_free = NULL; /* run-queue link reuses next_free while alive */
    if (sys->gq_tail != NULL) {
        sys->gq_tail->next_free = a;
    } else {
        sys->gq_head = a;
    }
    sys->gq_tail = a;
    atomic_fetch_add(&sys->gq_len, 1);
    nng_mtx_unlock(sys->gq_mtx);
}

static px_actor *gq_pop(px_system *sys) {
    if (atomic_load_explicit(&sys->gq_len, memory_order_relaxed) == 0) {
        return NULL;
    }
    nng_mtx_lock(sys->gq_mtx);
    px_actor *a = sys->gq_head;
    if (a != NULL) {
        sys->gq_head = a->next_free;
        if (sys->gq_head == NULL) {
            sys->gq_tail = NULL;
        }
        a->next_free = NULL;
        atomic_fetch_sub(&sys->gq_len, 1);
    }
    nng_mtx_unlock(sys->gq_mtx);
    return a;
}

/* ---- local ring ---- */

static uint32_t rq_len(pxi_worker *w) {
    return atomic_load(&w->tail) - atomic_load(&w->head);
}

/* Owner only. Spills half the ring to the global queue when full. */
static void rq_push(pxi_worker *w, px_actor *a) {
    for (;;) {
        uint32_t h = atomic_load_explicit(&w->head, memory_order_acquire);
        uint32_t t = atomic_load_explicit(&w->tail, memory_order_relaxed);
        if (t - h < PXI_RUNQ) {
            atomic_store_explicit(&w->ring[t % PXI_RUNQ], a, memory_order_relaxed);
            atomic_store_explicit(&w->tail, t + 1, memory_order_release);
            return;
        }
        /* Full: claim the older half and move it to the global queue. */
        uint32_t n = PXI_RUNQ / 2;
        px_actor *batch[PXI_RUNQ / 2];
        for (uint32_t i = 0; i < n; i++) {
            batch[i] = atomic_load_explicit(&w->ring[(h + i) % PXI_RUNQ],
                                            memory_order_relaxed);
        }
        if (!atomic_compare_exchange_strong(&w->head, &h, h + n)) {
            continue; /* thieves took some; retry */
        }
        for (uint32_t i = 0; i < n; i++) {
            gq_push(w->sys, batch[i]);
        }
    }
}

/* Owner only. */
static px_actor *rq_pop(pxi_worker *w) {
    for (;;) {
        uint32_t h = atomic_load_explicit(&w->head, memory_order_acquire);
        uint32_t t = atomic_load_explicit(&w->tail, memory_order_relaxed);
        if (t == h) {
            return NULL;
        }
        px_actor *a = atomic_load_explicit(&w->ring[h % PXI_RUNQ], memory_order_relaxed);
        if (atomic_compare_exchange_weak_explicit(&w->head, &h, h + 1,
                                                  memory_order_acq_rel,
                                                  memory_order_acquire)) {
            return a;
        }
    }
}

/* Thief: moves half of victim's ring into w's ring; returns one actor to
 * run, or NULL. */
static px_actor *rq_steal(pxi_worker *w, pxi_worker *victim) {
    for (;;) {
        uint32_t h = atomic_load_explicit(&victim->head, memory_order_acquire);
        uint32_t t = atomic_load_explicit(&victim->tail, memory_order_acquire);
        uint32_t n = t - h;
        n = n - n / 2;
        if (n == 0) {
            return NULL;
        }
        if (n > PXI_RUNQ / 2) {
            continue; /* inconsistent snapshot */
        }
        uint32_t wt = atomic_load_explicit(&w->tail, memory_order_relaxed);
        for (uint32_t i = 0; i < n; i++) {
            px_actor *a = atomic_load_explicit(&victim->ring[(h + i) % PXI_RUNQ],
                                               memory_order_relaxed);
            atomic_store_explicit(&w->ring[(wt + i) % PXI_RUNQ], a, memory_order_relaxed);
        }
        if (atomic_compare_exchange_strong(&victim->head, &h, h + n)) {
            /* Keep the last for ourselves, publish the rest. */
            px_actor *mine = atomic_load_explicit(&w->ring[(wt + n - 1) % PXI_RUNQ],
                                                  memory_order_relaxed);
            if (n > 1) {
                atomic_store(&w->tail, wt + n - 1);
            }
            return mine;
        }
    }
}

static uint32_t rnd(pxi_worker *w) {
    w->rng ^= w->rng << 13;
    w->rng ^= w->rng >> 7;
    w->rng ^= w->rng << 17;
    return (uint32_t)w->rng;
}

static px_actor *steal_any(pxi_worker *w) {
    px_system *sys = w->sys;
    uint32_t n = sys->nworkers;
    if (n < 2) {
        return NULL;
    }
    uint32_t start = rnd(w) % n;
    for (uint32_t i = 0; i < n; i++) {
        pxi_worker *v = &sys->workers[(start + i) % n];
        if (v == w) {
            continue;
        }
        px_actor *a = rq_steal(w, v);
        if (a != NULL) {
            return a;
        }
    }
    return NULL;
}

static bool work_visible(px_system *sys) {
    if (atomic_load(&sys->gq_len) > 0) {
        return true;
    }
    for (uint32_t i = 0; i < sys->nworkers; i++) {
        if (rq_len(&sys->workers[i]) > 0) {
            return true;
        }
    }
    return false;
}

/* Wakes one parked worker, if any. The fence orders the caller's publish
 * of work before the nidle load (a parker increments nidle, then looks). */
static void wake_one(px_system *sys) {
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load(&sys->nidle) == 0) {
        return;
    }
    uint32_t n = sys->nworkers;
    uint32_t start = atomic_fetch_add_explicit(&sys->wake_rr, 1, memory_order_relaxed);
    for (uint32_t i = 0; i < n; i++) {
        pxi_worker *w = &sys->workers[(start + i) % n];
        nng_mtx_lock(w->mtx);
        if (w->parked) {
            w->parked = false;
            atomic_fetch_sub(&sys->nidle, 1);
            nng_cv_wake1(w->cv);
            nng_mtx_unlock(w->mtx);
            return;
        }
        nng_mtx_unlock(w->mtx);
    }
}

void pxi_sched_submit(px_system *sys, px_actor *a) {
    pxi_worker *w = tls_worker;
    if (w != NULL && w->sys == sys) {
        rq_push(w, a);
        if (rq_len(w) >= 2) {
            wake_one(sys);
        }
        return;
    }
    gq_push(sys, a);
    wake_one(sys);
}

static px_actor *find_work(pxi_worker *w) {
    px_actor *a;
    if (++w->tick % 61 == 0 && (a = gq_pop(w->sys)) != NULL) {
        return a;
    }
    if ((a = rq_pop(w)) != NULL) {
        return a;
    }
    if ((a = gq_pop(w->sys)) != NULL) {
        return a;
    }
    return steal_any(w);
}

static void park(pxi_worker *w) {
    px_system *sys = w->sys;
    nng_mtx_lock(w->mtx);
    w->parked = true;
    atomic_fetch_add(&sys->nidle, 1);
    if (work_visible(sys) || atomic_load(&sys->stopping_workers)) {
        w->parked = false;
        atomic_fetch_sub(&sys->nidle, 1);
        nng_mtx_unlock(w->mtx);
        return;
    }
    while (w->parked) {
        nng_cv_wait(w->cv);
    }
    nng_mtx_unlock(w->mtx);
}

/* A cheap timestamp for "was that turn long?" (cycles on x86-64). */
static inline uint64_t stamp(void) {
#if defined(__x86_64__)
    return __builtin_ia32_rdtsc();
#else
    return (uint64_t)nng_clock() * 1000000u;
#endif
}
/* ~100 us at 2-4 GHz: a turn longer than this wakes a parked worker for
 * whatever queued up behind it (work queued by a turn normally waits for
 * the turn to end, which keeps message chains on one core). */
#define LONG_TURN (300u * 1000u)

/* The spin's clock: nanoseconds (nng_clock counts milliseconds, which
 * made a 50 us spin last one to two ms). */
static uint64_t spin_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The installed idle hook for worker w, with w->in_hook set; NULL (and
 * in_hook clear) when there is none. */
static px_idle_fn hook_enter(pxi_worker *w, void **arg) {
    atomic_store(&w->in_hook, true); /* seq_cst: pairs with the remover's */
    px_idle_fn fn = atomic_load(&w->sys->idle_fn);
    if (fn == NULL) {
        atomic_store_explicit(&w->in_hook, false, memory_order_release);
        return NULL;
    }
    *arg = atomic_load(&w->sys->idle_arg);
    return fn;
}

static void hook_leave(pxi_worker *w) {
    atomic_store_explicit(&w->in_hook, false, memory_order_release);
}

px_err px_system_set_idle_hook(px_system *sys, px_idle_fn fn, void *arg) {
    if (sys == NULL) {
        return PX_EINVAL;
    }
    px_err rv = PX_OK;
    nng_mtx_lock(sys->hook_mtx);
    if (fn != NULL) {
        if (atomic_load(&sys->idle_fn) != NULL) {
            rv = PX_EEXIST;
        } else {
            atomic_store(&sys->idle_arg, arg); /* before fn: a worker that sees fn sees arg */
            atomic_store(&sys->idle_fn, fn);
        }
    } else {
        atomic_store(&sys->idle_fn, NULL);
        for (uint32_t i = 0; sys->workers != NULL && i < sys->nworkers; i++) {
            while (atomic_load(&sys->workers[i].in_hook)) {
                nng_msleep(0);
            }
        }
        atomic_store(&sys->idle_arg, NULL);
    }
    nng_mtx_unlock(sys->hook_mtx);
    return rv;
}

/* Spins up to spin_us for work, calling the idle hook (if any) meanwhile;
 * true if work became visible. */
static bool spin_for_work(pxi_worker *w) {
    px_system *sys = w->sys;
    uint64_t until = spin_now_ns() + w->spin_ns;
    void *harg = NULL;
    px_idle_fn hook = hook_enter(w, &harg);
    if (hook != NULL) {
        hook(harg, PX_IDLE_BEGIN);
    }
    bool found = false;
    bool last = false;
    for (;;) {
        if (work_visible(sys)) {
            found = true;
            break;
        }
        if (spin_now_ns() >= until) {
            /* One more look after the deadline: a spinner preempted past
             * it has not polled since it ran again. */
            if (hook != NULL && !last) {
                last = true;
                hook(harg, PX_IDLE_POLL);
                continue;
            }
            break;
        }
        if (hook != NULL) {
            hook(harg, PX_IDLE_POLL);
            continue;
        }
        /* Look rarely: every look pulls the other workers' queue lines. */
        for (int i = 0; i < 16; i++) {
            __builtin_ia32_pause();
        }
    }
    if (hook != NULL) {
        hook(harg, found ? PX_IDLE_FOUND : PX_IDLE_PARK);
        hook_leave(w);
    }
    return found;
}

#define SPIN_MIN_NS 1000u /* the shortest spin a default-mode worker restarts with */

/* The adaptive spin, after each park (a spin that finds work keeps its
 * length). A worker woken within the ceiling of parking would have caught
 * that work with a longer spin, so it doubles its spin; one that slept
 * longer halves it. With spin_max_us (latency mode) the ceiling is
 * spin_max_us and the spin halves back toward spin_us. Without it the
 * ceiling is spin_us and the spin halves toward none (under SPIN_MIN_NS:
 * none, then no spin at all): a spin that never catches work only takes
 * the CPU that others need — nng's I/O threads, other processes on a
 * small machine — and the next wake-up within spin_us starts it again at
 * SPIN_MIN_NS. This is KVM's halt-polling rule (shrinking to zero). */
static void spin_adapt(pxi_worker *w, uint64_t slept_ns) {
    const px_config *cfg = &w->sys->cfg;
    uint64_t base = (uint64_t)cfg->spin_us * 1000u;
    uint64_t max = (uint64_t)cfg->spin_max_us * 1000u;
    if (max == 0) {
        if (slept_ns <= base) {
            w->spin_ns = w->spin_ns == 0 ? SPIN_MIN_NS
                                         : (w->spin_ns * 2 < base ? w->spin_ns * 2 : base);
        } else {
            w->spin_ns = w->spin_ns / 2 >= SPIN_MIN_NS ? w->spin_ns / 2 : 0;
        }
        return;
    }
    if (max <= base) {
        return; /* spin_max_us == spin_us: nothing to adapt */
    }
    if (slept_ns <= max) {
        w->spin_ns = w->spin_ns * 2 < max ? w->spin_ns * 2 : max;
    } else {
        w->spin_ns = w->spin_ns / 2 > base ? w->spin_ns / 2 : base;
    }
}

static void worker_main(void *arg) {
    pxi_worker *w = arg;
    px_system *sys = w->sys;
    tls_worker = w;
    char name[32];
    snprintf(name, sizeof(name), "px-worker-%u", w->index);
    nng_thread_set_name(w->thr, name);
    for (;;) {
        px_actor *a = find_work(w);
        if (a != NULL) {
            uint64_t t0 = stamp();
            pxi_actor_run(w, a);
            if (stamp() - t0 > LONG_TURN && rq_len(w) > 0) {
                wake_one(sys);
            }
            if (atomic_load_explicit(&sys->idle_fn, memory_order_relaxed) != NULL) {
                void *harg = NULL;
                px_idle_fn hook = hook_enter(w, &harg);
                if (hook != NULL) {
                    hook(harg, PX_IDLE_TURN);
                    hook_leave(w);
                }
            }
            continue;
        }
        if (atomic_load(&sys->stopping_workers)) {
            break;
        }
        /* Spin a little before parking: a hand-off that arrives within
         * the spin costs ~100 ns instead of a futex wake. */
        if (sys->cfg.spin_us == 0) {
            park(w);
        } else if (w->spin_ns == 0 || !spin_for_work(w)) {
            uint64_t t0 = spin_now_ns();
            park(w);
            spin_adapt(w, spin_now_ns() - t0);
        }
    }
    tls_worker = NULL;
}

px_err pxi_sched_start(px_system *sys) {
    uint32_t n = sys->nworkers;
    sys->workers = aligned_alloc(PXI_CACHELINE, sizeof(pxi_worker) * n);
    if (sys->workers == NULL) {
        return PX_ENOMEM;
    }
    memset(sys->workers, 0, sizeof(pxi_worker) * n);
    for (uint32_t i = 0; i < n; i++) {
        pxi_worker *w = &sys->workers[i];
        w->sys = sys;
        w->index = i;
        w->rng = 0x9e3779b97f4a7c15ull * (i + 1);
        w->spin_ns = (uint64_t)sys->cfg.spin_us * 1000u;
        if (nng_mtx_alloc(&w->mtx) != 0 || nng_cv_alloc(&w->cv, w->mtx) != 0) {
            return PX_ENOMEM; /* pxi_sched_stop cleans what exists */
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        pxi_worker *w = &sys->workers[i];
        if (nng_thread_create(&w->thr, worker_main, w) != 0) {
            return PX_ESYS;
        }
    }
    return PX_OK;
}

void pxi_sched_stop(px_system *sys) {
    if (sys->workers == NULL) {
        return;
    }
    atomic_store(&sys->stopping_workers, 1);
    for (uint32_t i = 0; i < sys->nworkers; i++) {
        pxi_worker *w = &sys->workers[i];
        if (w->mtx == NULL) {
            continue;
        }
        nng_mtx_lock(w->mtx);
        if (w->parked) {
            w->parked = false;
            atomic_fetch_sub(&sys->nidle, 1);
        }
        nng_cv_wake(w->cv);
        nng_mtx_unlock(w->mtx);
    }
    for (uint32_t i = 0; i < sys->nworkers; i++) {
        pxi_worker *w = &sys->workers[i];
        if (w->thr != NULL) {
            nng_thread_destroy(w->thr); /* joins */
        }
        atomic_fetch_add(&sys->messages_joined, atomic_load(&w->messages));
        if (w->cv != NULL) {
            nng_cv_free(w->cv);
        }
        if (w->mtx != NULL) {
            nng_mtx_free(w->mtx);
        }
    }
    free(sys->workers);
    sys->workers = NULL;
}
