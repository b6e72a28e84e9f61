/* Tests for the scheduler: one actor on one worker at a time, work spread
 * over workers, batch fairness, and idle workers that park. */
#include "helpers.h"

#include <sys/resource.h>

static void spin_us(int us) {
    int64_t until = pxt_now_ns() + (int64_t)us * 1000;
    while (pxt_now_ns() < until) {
    }
}

/* --- one worker per actor at a time ------------------------------------ */

typedef struct excl {
    atomic_int inside;
    atomic_int overlaps;
    atomic_uint_least64_t n;
    uint64_t plain; /* non-atomic: a data race here would show as a lost update */
} excl;

static px_err excl_receive(px_ctx *ctx, px_msg *m) {
    (void)m;
    excl *e = px_state(ctx);
    if (atomic_exchange(&e->inside, 1) != 0) {
        atomic_fetch_add(&e->overlaps, 1);
    }
    e->plain++;
    spin_us(2);
    atomic_store(&e->inside, 0);
    atomic_fetch_add(&e->n, 1);
    return PX_OK;
}
static const px_behavior excl_b = {.name = "t.excl", .init = pxt_init_ptr_state,
                                   .receive = excl_receive};

#define EX_ACTORS 4
#define EX_THREADS 4
#define EX_PER 5000

typedef struct ex_arg {
    px_system *sys;
    px_ref *to;
    atomic_int errors;
} ex_arg;

static void *ex_sender(void *p) {
    ex_arg *a = p;
    for (int i = 0; i < EX_PER; i++) {
        for (int j = 0; j < EX_ACTORS; j++) {
            px_msg *m = NULL;
            if (px_msg_u64(&m, 1, (uint64_t)i) != PX_OK ||
                px_system_send(a->sys, a->to[j], &m) != PX_OK) {
                atomic_fetch_add(&a->errors, 1);
                px_msg_free(m);
            }
        }
    }
    return NULL;
}

Test(core_sched, an_actor_never_runs_on_two_workers_at_once, .timeout = 60) {
    px_config cfg;
    pxt_config(&cfg);
    cfg.batch = 1; /* reschedule after every message: most chances to overlap */
    px_system *sys = pxt_system_with(&cfg);
    excl e[EX_ACTORS];
    px_ref a[EX_ACTORS];
    memset(e, 0, sizeof e);
    for (int i = 0; i < EX_ACTORS; i++) {
        a[i] = pxt_spawn(sys, &excl_b, &e[i], NULL);
    }
    ex_arg args[EX_THREADS];
    pthread_t th[EX_THREADS];
    for (int i = 0; i < EX_THREADS; i++) {
        args[i] = (ex_arg){.sys = sys, .to = a};
        cr_assert_eq(pthread_create(&th[i], NULL, ex_sender, &args[i]), 0);
    }
    for (int i = 0; i < EX_THREADS; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(atomic_load(&args[i].errors), 0);
    }
    for (int i = 0; i < EX_ACTORS; i++) {
        PXT_AWAIT(atomic_load(&e[i].n) == EX_THREADS * EX_PER, 40000);
    }
    for (int i = 0; i < EX_ACTORS; i++) {
        cr_assert_eq(atomic_load(&e[i].overlaps), 0, "actor %d ran concurrently %d times", i,
                     atomic_load(&e[i].overlaps));
        cr_assert_eq(e[i].plain, EX_THREADS * EX_PER, "actor %d lost updates to its state", i);
    }
    px_system_free(sys);
}

/* --- work spreads over workers ----------------------------------------- */

#define SPREAD_ACTORS 16
typedef struct spread {
    pthread_mutex_t mu;
    pthread_t seen[64];
    int n_seen;
    atomic_int received;
} spread;

static px_err spread_receive(px_ctx *ctx, px_msg *m) {
    (void)m;
    spread *s = px_state(ctx);
    spin_us(200);
    pthread_t me = pthread_self();
    pthread_mutex_lock(&s->mu);
    int known = 0;
    for (int i = 0; i < s->n_seen; i++) {
        known |= pthread_equal(s->seen[i], me);
    }
    if (!known && s->n_seen < 64) {
        s->seen[s->n_seen++] = me;
    }
    pthread_mutex_unlock(&s->mu);
    atomic_fetch_add(&s->received, 1);
    return PX_OK;
}
static const px_behavior spread_b = {.name = "t.spread", .init = pxt_init_ptr_state,
                                     .receive = spread_receive};

Test(core_sched, work_for_many_actors_runs_on_more_than_one_worker, .timeout = 30) {
    px_config cfg;
    pxt_config(&cfg);
    cfg.workers = 4;
    px_system *sys = pxt_system_with(&cfg);
    spread s = {.n_seen = 0};
    pthread_mutex_init(&s.mu, NULL);
    px_ref a[SPREAD_ACTORS];
    for (int i = 0; i < SPREAD_ACTORS; i++) {
        a[i] = pxt_spawn(sys, &spread_b, &s, NULL);
    }
    for (int j = 0; j < 50; j++) {
        for (int i = 0; i < SPREAD_ACTORS; i++) {
            pxt_send_u64(sys, a[i], 1, (uint64_t)j);
        }
    }
    PXT_AWAIT(atomic_load(&s.received) == 50 * SPREAD_ACTORS, 20000);
    pthread_mutex_lock(&s.mu);
    int n = s.n_seen;
    int self_seen = 0;
    for (int i = 0; i < n; i++) {
        self_seen |= pthread_equal(s.seen[i], pthread_self());
    }
    pthread_mutex_unlock(&s.mu);
    cr_assert_geq(n, 2, "all of 800 busy messages for 16 actors ran on one worker");
    cr_assert_leq(n, 4, "receives ran on %d threads with 4 workers", n);
    cr_assert_not(self_seen, "a receive ran on the sending thread");
    px_system_free(sys);
}

/* --- batch fairness ---------------------------------------------------- */

typedef struct fair {
    atomic_uint_least64_t a_count;
    atomic_uint_least64_t a_at_b; /* a_count when B ran */
    atomic_int b_done;
} fair;

static px_err fair_a_receive(px_ctx *ctx, px_msg *m) {
    (void)m;
    fair *f = px_state(ctx);
    spin_us(100);
    atomic_fetch_add(&f->a_count, 1);
    return PX_OK;
}
static px_err fair_b_receive(px_ctx *ctx, px_msg *m) {
    (void)m;
    fair *f = px_state(ctx);
    atomic_store(&f->a_at_b, atomic_load(&f->a_count));
    atomic_store(&f->b_done, 1);
    return PX_OK;
}
static const px_behavior fair_a = {.name = "t.faira", .init = pxt_init_ptr_state,
                                   .receive = fair_a_receive};
static const px_behavior fair_b = {.name = "t.fairb", .init = pxt_init_ptr_state,
                                   .receive = fair_b_receive};

Test(core_sched, a_busy_actor_yields_its_worker_after_a_batch, .timeout = 30) {
    px_config cfg;
    pxt_config(&cfg);
    cfg.workers = 1;
    cfg.batch = 4;
    px_system *sys = pxt_system_with(&cfg);
    fair f = {0};
    px_ref a = pxt_spawn(sys, &fair_a, &f, NULL);
    px_ref b = pxt_spawn(sys, &fair_b, &f, NULL);
    const uint64_t n = 3000; /* ~300 ms of work for A */
    for (uint64_t i = 0; i < n; i++) {
        pxt_send_u64(sys, a, 1, i);
    }
    pxt_send_u64(sys, b, 1, 0);
    PXT_AWAIT(atomic_load(&f.b_done), 20000);
    uint64_t at = atomic_load(&f.a_at_b);
    cr_assert_lt(at, n, "B ran only after A drained all %llu messages", (unsigned long long)n);
    PXT_AWAIT(atomic_load(&f.a_count) == n, 20000);
    px_system_free(sys);
}

/* --- idle workers ------------------------------------------------------ */

static double cpu_share_over_300ms(void) {
    struct timespec c0, c1;
    int64_t w0 = pxt_now_ns();
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
    /* The measurement window (this measures CPU use, it synchronizes nothing). */
    struct timespec win = {0, 300 * 1000 * 1000};
    while (nanosleep(&win, &win) != 0) {
    }
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
    int64_t w1 = pxt_now_ns();
    double cpu = (double)(c1.tv_sec - c0.tv_sec) * 1e9 + (double)(c1.tv_nsec - c0.tv_nsec);
    return cpu / (double)(w1 - w0);
}

Test(core_sched, idle_workers_do_not_burn_cpu, .timeout = 30) {
    px_config cfg;
    pxt_config(&cfg);
    cfg.workers = 8;
    px_system *sys = pxt_system_with(&cfg);
    pxt_rec *r[8];
    px_ref a[8];
    for (int i = 0; i < 8; i++) {
        r[i] = pxt_rec_new();
        a[i] = pxt_rec_spawn(sys, r[i], NULL);
        for (int j = 0; j < 1000; j++) {
            pxt_send_u64(sys, a[i], 1, (uint64_t)j);
        }
    }
    /* Wait until the system is idle: everything delivered, queues empty. */
    PXT_AWAIT(PXT_STAT(sys, messages) == 8000, 10000);
    for (int i = 0; i < 8; i++) {
        PXT_AWAIT(PXT_ASTAT(sys, a[i], depth) == 0, 5000);
    }
    double share = cpu_share_over_300ms();
    cr_log_info("idle CPU share: %.1f%%", share * 100);
    cr_assert_lt(share, 0.15, "idle system used %.0f%% of one CPU", share * 100);
    /* And the parked workers wake up for new work. */
    pxt_send_u64(sys, a[0], 1, 0);
    PXT_AWAIT(pxt_rec_count(r[0]) == 1001, 5000);
    px_system_free(sys);
    for (int i = 0; i < 8; i++) {
        free(r[i]);
    }
}

Test(core_sched, a_fresh_system_with_no_actors_is_idle, .timeout = 30) {
    px_config cfg;
    pxt_config(&cfg);
    cfg.workers = 8;
    px_system *sys = pxt_system_with(&cfg);
    double share = cpu_share_over_300ms();
    cr_log_info("idle CPU share: %.1f%%", share * 100);
    cr_assert_lt(share, 0.15, "idle system used %.0f%% of one CPU", share * 100);
    px_system_free(sys);
}

Test(core_sched, parked_workers_wake_for_each_message, .timeout = 30) {
    px_config cfg;
    pxt_config(&cfg);
    cfg.spin_us = 0; /* park at once: every send must wake a worker */
    px_system *sys = pxt_system_with(&cfg);
    pxt_rec *r = pxt_rec_new();
    px_ref a = pxt_rec_spawn(sys, r, NULL);
    for (uint64_t i = 1; i <= 200; i++) {
        pxt_send_u64(sys, a, 1, i);
        PXT_AWAIT(pxt_rec_count(r) == i, 5000);
    }
    px_system_free(sys);
    free(r);
}

/* --- the idle hook (plexus/router.h) ------------------------------------- */

static _Thread_local int hk_in_spin; /* this worker is between BEGIN and FOUND/PARK */
static atomic_int hk_ev[5], hk_bad, hk_inject;
static _Atomic(pthread_t) hk_injector;
static px_system *hk_sys;
static px_ref hk_target;

static void hk_fn(void *arg, px_idle_event ev) {
    (void)arg;
    atomic_fetch_add(&hk_ev[ev], 1);
    switch (ev) {
    case PX_IDLE_BEGIN:
        hk_in_spin = 1;
        break;
    case PX_IDLE_POLL:
        if (!hk_in_spin) {
            atomic_fetch_add(&hk_bad, 1);
        }
        if (atomic_exchange(&hk_inject, 0) == 1) { /* "input": delivered from the hook */
            atomic_store(&hk_injector, pthread_self());
            px_msg *m = pxt_u64(1, 7);
            if (px_system_send(hk_sys, hk_target, &m) != PX_OK) {
                px_msg_free(m);
                atomic_fetch_add(&hk_bad, 1);
            }
        }
        break;
    case PX_IDLE_FOUND:
    case PX_IDLE_PARK:
        if (!hk_in_spin) {
            atomic_fetch_add(&hk_bad, 1);
        }
        hk_in_spin = 0;
        break;
    case PX_IDLE_TURN:
        if (hk_in_spin) {
            atomic_fetch_add(&hk_bad, 1);
        }
        break;
    }
}

static _Atomic(pthread_t) hk_runner;
static atomic_int hk_runs;
static px_err hk_receive(px_ctx *ctx, px_msg *m) {
    (void)ctx;
    (void)m;
    atomic_store(&hk_runner, pthread_self());
    atomic_fetch_add(&hk_runs, 1);
    return PX_OK;
}
static const px_behavior hk_b = {.name = "t.hk", .receive = hk_receive};

/* One worker spinning spin_us (adapting up to spin_max_us, 0: down to
 * none), its target actor, and fn as the idle hook: hk_sys, hk_target. */
static void hk_start(uint32_t spin_us, uint32_t spin_max_us, px_idle_fn fn) {
    px_config cfg;
    pxt_config(&cfg);
    cfg.workers = 1;
    cfg.spin_us = spin_us;
    cfg.spin_max_us = spin_max_us;
    hk_sys = pxt_system_with(&cfg);
    hk_target = pxt_spawn(hk_sys, &hk_b, NULL, NULL);
    cr_assert_eq(px_system_set_idle_hook(hk_sys, fn, NULL), PX_OK);
}

/* The hook removed, the system freed. */
static void hk_end(void) {
    cr_assert_eq(px_system_set_idle_hook(hk_sys, NULL, NULL), PX_OK);
    px_system_free(hk_sys);
}

/* A busy wait (no sleep to oversleep) of ms. */
static void busy_ms(int ms) {
    int64_t until = pxt_now_ns() + (int64_t)ms * 1000000;
    while (pxt_now_ns() < until) {
    }
}

Test(core_sched, an_idle_hook_polls_while_workers_spin_and_what_it_delivers_runs_there,
     .timeout = 30) {
    px_config cfg;
    pxt_config(&cfg);
    cfg.workers = 1; /* the worker that read it is the one that runs it */
    cfg.spin_us = 2000;
    hk_sys = pxt_system_with(&cfg);
    hk_target = pxt_spawn(hk_sys, &hk_b, NULL, NULL);
    cr_assert_eq(px_system_set_idle_hook(hk_sys, hk_fn, NULL), PX_OK);
    cr_assert_eq(px_system_set_idle_hook(hk_sys, hk_fn, NULL), PX_EEXIST, "one hook at a time");
    cr_assert_eq(px_system_set_idle_hook(NULL, hk_fn, NULL), PX_EINVAL);

    /* A message from outside: its turn, then the worker spins and polls. */
    pxt_send_u64(hk_sys, hk_target, 1, 1);
    PXT_AWAIT(atomic_load(&hk_runs) == 1 && atomic_load(&hk_ev[PX_IDLE_POLL]) > 0, 5000);
    PXT_AWAIT(atomic_load(&hk_ev[PX_IDLE_TURN]) >= 1, 5000);
    int from_hook = 0;
    for (int round = 0; round < 20; round++) {
        int before = atomic_load(&hk_runs);
        /* Let the worker start a spin (it parks after 2 ms without work). */
        pxt_send_u64(hk_sys, hk_target, 1, 1);
        PXT_AWAIT(atomic_load(&hk_runs) == before + 1, 5000);
        atomic_store(&hk_inject, 1);
        for (int64_t until = pxt_now_ns() + 100000000; pxt_now_ns() < until;) {
            if (atomic_load(&hk_inject) == 0) {
                break; /* a poll took it */
            }
        }
        int one = 1;
        if (atomic_compare_exchange_strong(&hk_inject, &one, 0)) {
            continue; /* the worker had parked: no poll took it */
        }
        PXT_AWAIT(atomic_load(&hk_runs) == before + 2, 5000);
        cr_assert(pthread_equal(atomic_load(&hk_runner), atomic_load(&hk_injector)),
                  "what the hook delivered ran on the worker that polled");
        from_hook++;
    }
    cr_assert_gt(from_hook, 0, "some deliveries came from the hook (20 tries)");

    cr_assert_eq(px_system_set_idle_hook(hk_sys, NULL, NULL), PX_OK);
    PXT_AWAIT(atomic_load(&hk_ev[PX_IDLE_BEGIN]) ==
                  atomic_load(&hk_ev[PX_IDLE_FOUND]) + atomic_load(&hk_ev[PX_IDLE_PARK]),
              5000);
    int polls = atomic_load(&hk_ev[PX_IDLE_POLL]), turns = atomic_load(&hk_ev[PX_IDLE_TURN]);
    /* Two turns one after the other on the one worker: a hook still called
     * would have seen the first turn end (TURN) and the spin between. */
    for (int i = 0; i < 2; i++) {
        int before = atomic_load(&hk_runs);
        pxt_send_u64(hk_sys, hk_target, 1, 1);
        PXT_AWAIT(atomic_load(&hk_runs) == before + 1, 5000);
    }
    cr_assert_eq(atomic_load(&hk_ev[PX_IDLE_POLL]), polls, "no call after removal");
    cr_assert_eq(atomic_load(&hk_ev[PX_IDLE_TURN]), turns, "no call after removal");
    cr_assert_eq(atomic_load(&hk_bad), 0, "BEGIN, POLLs, then one FOUND or PARK; TURN outside");
    px_system_free(hk_sys);
}

/* A spinner held up past its deadline (preempted, here a 3 ms stall in the
 * hook) looks for input once more before it parks: what arrived meanwhile
 * is taken by that poll, not left to a thread woken later. */
static atomic_int st_stall, st_after, st_found, st_park;
static void st_fn(void *arg, px_idle_event ev) {
    (void)arg;
    if (ev == PX_IDLE_POLL) {
        if (atomic_exchange(&st_stall, 0) == 1) {
            /* The stall: 3 ms, spin_us (100 us) passes meanwhile. */
            for (int64_t until = pxt_now_ns() + 3000000; pxt_now_ns() < until;) {
            }
            atomic_store(&st_after, 1);
        } else if (atomic_exchange(&st_after, 0) == 1) {
            px_msg *m = pxt_u64(1, 9); /* "input" found by the poll after the stall */
            if (px_system_send(hk_sys, hk_target, &m) != PX_OK) {
                px_msg_free(m);
            }
        }
    } else if (ev == PX_IDLE_FOUND) {
        atomic_fetch_add(&st_found, 1);
    } else if (ev == PX_IDLE_PARK) {
        atomic_fetch_add(&st_park, 1);
    }
}

Test(core_sched, a_spinner_held_past_its_deadline_polls_once_more_before_it_parks, .timeout = 30) {
    hk_start(100, 0, st_fn);
    for (int round = 0; round < 5; round++) {
        int before = atomic_load(&hk_runs);
        int found = atomic_load(&st_found), parks = atomic_load(&st_park);
        atomic_store(&st_stall, 1); /* the next spin's first poll stalls */
        pxt_send_u64(hk_sys, hk_target, 1, 1);
        /* This turn, then the spin: stall, one more poll that finds the
         * message, and its turn on the same worker. */
        PXT_AWAIT(atomic_load(&hk_runs) == before + 2, 5000);
        cr_assert_eq(atomic_load(&st_stall), 0, "the spin stalled");
        cr_assert_eq(atomic_load(&st_after), 0, "a poll came after the stall");
        cr_assert_gt(atomic_load(&st_found), found, "the spin found what that poll delivered");
        PXT_AWAIT(atomic_load(&st_park) > parks, 5000); /* idle again */
    }
    hk_end();
}

/* The adaptive spin (spin_max_us): a worker woken soon after it parks
 * doubles its spin up to the ceiling; one that slept longer than the
 * ceiling halves it back. Spin lengths are measured from BEGIN to PARK in
 * the hook: preemption can only lengthen a spin, so "at least" holds on a
 * busy machine and "the shortest of several" stands for "back to short". */
static atomic_int ad_parks, ad_begins;
static _Atomic int64_t ad_begin_ns, ad_last_ns, ad_begin_cpu_ns, ad_last_cpu_ns;

/* The calling thread's CPU time: a spin's CPU time leaves out the time the
 * worker was preempted (the hook runs on the worker). */
static int64_t cpu_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void ad_fn(void *arg, px_idle_event ev) {
    (void)arg;
    if (ev == PX_IDLE_BEGIN) {
        atomic_fetch_add(&ad_begins, 1);
        atomic_store(&ad_begin_ns, pxt_now_ns());
        atomic_store(&ad_begin_cpu_ns, cpu_now_ns());
    } else if (ev == PX_IDLE_PARK) {
        atomic_store(&ad_last_ns, pxt_now_ns() - atomic_load(&ad_begin_ns));
        atomic_store(&ad_last_cpu_ns, cpu_now_ns() - atomic_load(&ad_begin_cpu_ns));
        atomic_fetch_add(&ad_parks, 1);
    }
}

/* Sends one message once the worker has parked `after_ms` ago and
 * returns the length of the spin that followed its turn, in us. */
static int64_t ad_round(int after_ms) {
    int parks = atomic_load(&ad_parks);
    busy_ms(after_ms);
    pxt_send_u64(hk_sys, hk_target, 1, 1);
    PXT_AWAIT(atomic_load(&ad_parks) > parks, 5000);
    return atomic_load(&ad_last_ns) / 1000;
}

/* n rounds of ad_round(after_ms): the shortest spin and how many lasted
 * at least `long_us`, in us. */
static void ad_rounds(int n, int after_ms, int64_t long_us, int64_t *shortest, int *nlong) {
    *shortest = INT64_MAX;
    *nlong = 0;
    for (int i = 0; i < n; i++) {
        int64_t us = ad_round(after_ms);
        *shortest = us < *shortest ? us : *shortest;
        *nlong += us >= long_us;
    }
}

Test(core_sched, an_adaptive_spin_grows_when_woken_soon_and_shrinks_after_long_sleeps,
     .timeout = 60) {
    hk_start(100, 3200, ad_fn);
    (void)ad_round(0); /* a first turn and park with the hook in place */
    /* Woken right after each park: 100 -> 200 -> ... -> 3200 us. */
    int64_t shortest;
    int nlong;
    ad_rounds(12, 0, 3000, &shortest, &nlong);
    cr_assert_geq(nlong, 3, "spins grew to the ceiling (%d of 12 spins >= 3 ms)", nlong);
    /* Sleeping 10 ms (> 3.2 ms) each time halves it back to 100 us. */
    ad_rounds(6, 10, 3000, &shortest, &nlong);
    ad_rounds(3, 10, 3000, &shortest, &nlong);
    cr_assert_lt(shortest, 1000, "spins shrank back toward spin_us (shortest %lld us)",
                 (long long)shortest);
    hk_end();
}

Test(core_sched, without_spin_max_a_spin_never_grows_past_spin_us_when_woken_soon,
     .timeout = 30) {
    /* spin_max_us 0: spin_us is the ceiling. 1 ms: the test's wake-ups
     * (its polls nap 200 us) count as soon. */
    hk_start(1000, 0, ad_fn);
    /* Growth would make every spin after the second >= 2 ms of the
     * worker's CPU (CPU time: a preempted spin does not look longer). */
    int nlong = 0;
    for (int i = 0; i < 8; i++) {
        (void)ad_round(0);
        nlong += atomic_load(&ad_last_cpu_ns) >= 1900000;
    }
    cr_assert_leq(nlong, 1, "no growth without spin_max_us (%d of 8 spins >= 1.9 ms of CPU)",
                  nlong);
    hk_end();
}

/* Sends one message after `after_ms` of quiet (a busy wait: no sleep to
 * oversleep) and waits for its turn; no spin is awaited. */
static void quiet_round(int after_ms) {
    busy_ms(after_ms);
    int runs = atomic_load(&hk_runs);
    pxt_send_u64(hk_sys, hk_target, 1, 1);
    PXT_AWAIT(atomic_load(&hk_runs) > runs, 5000);
}

/* One message, then the spin after its turn, if there is one: its length
 * in us (0: none began within 1 ms, or it did not end within 100 ms). Unlike ad_round
 * it does not need a spin, so a late test thread (a spin shrunk to none)
 * cannot hang it. */
static int64_t spin_round(void) {
    int parks = atomic_load(&ad_parks), begins = atomic_load(&ad_begins);
    int runs = atomic_load(&hk_runs);
    pxt_send_u64(hk_sys, hk_target, 1, 1);
    PXT_AWAIT(atomic_load(&hk_runs) > runs, 5000);
    /* A spin begins right after the turn; none within 1 ms: none at all
     * (the next message then still comes soon after the park). */
    if (!PXT_POLL(atomic_load(&ad_begins) > begins, 1) ||
        !PXT_POLL(atomic_load(&ad_parks) > parks, 100)) {
        return 0;
    }
    return atomic_load(&ad_last_ns) / 1000;
}

/* Without spin_max_us, a worker whose parks outlast spin_us (5 ms here:
 * each round comes 10 ms after the last) halves its spin each time, down
 * to none: 5 ms, 2.5 ms, ... ~1.2 us, then no spin at all (no BEGIN).
 * Woken soon after parking again, it spins again (1 us) and doubles back
 * toward 5 ms. */
Test(core_sched, without_spin_max_spins_that_catch_nothing_shrink_to_none_and_come_back,
     .timeout = 60) {
    hk_start(5000, 0, ad_fn);
    for (int i = 0; i < 16; i++) { /* 13 halvings reach none */
        quiet_round(10);
    }
    quiet_round(10);
    int begins = atomic_load(&ad_begins);
    for (int i = 0; i < 3; i++) {
        quiet_round(10);
    }
    quiet_round(10); /* the third round's spin, if any, began 10 ms before */
    cr_assert_eq(atomic_load(&ad_begins), begins, "%d spins after 17 long sleeps",
                 atomic_load(&ad_begins) - begins);
    /* The worker parked right after that turn: woken now, within 5 ms, and
     * each next message comes right after the spin before it parked. */
    int nlong = 0;
    for (int i = 0; i < 16; i++) { /* 1, 2, 4, ... 4096, 5000 us */
        nlong += spin_round() >= 500;
    }
    cr_assert_geq(nlong, 3, "spins came back (%d of 16 spins >= 500 us)", nlong);
    hk_end();
}
