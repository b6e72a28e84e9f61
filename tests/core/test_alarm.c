/* Alarms (plexus/alarm.h): when they fire, how often, on which thread, what
 * a reset and a stop do, and what they cost while they wait. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/resource.h>

#include <plexus/plexus.h>

#include "helpers.h"

typedef struct probe {
    px_alarm *a;
    _Atomic int fired;
    _Atomic int64_t at_ns;   /* when it last fired */
    _Atomic int again;       /* fires left to set from the callback */
    uint32_t again_ms;
    _Atomic int busy_ms;     /* the callback takes this long */
    _Atomic int done;        /* a slow callback finished */
    pthread_t caller;
    _Atomic int on_caller;   /* a callback ran on the thread that set it */
} probe;

static void on_fire(void *arg) {
    probe *p = arg;
    atomic_store(&p->at_ns, pxt_now_ns());
    if (pthread_equal(pthread_self(), p->caller)) {
        atomic_store(&p->on_caller, 1);
    }
    int busy = atomic_load(&p->busy_ms);
    if (busy > 0) {
        nanosleep(&(struct timespec){busy / 1000, (long)(busy % 1000) * 1000000}, NULL);
        atomic_store(&p->done, 1);
    }
    atomic_fetch_add(&p->fired, 1);
    if (atomic_fetch_sub(&p->again, 1) > 0) {
        px_alarm_set(p->a, p->again_ms);
    }
}

static probe *probe_new(void) {
    probe *p = calloc(1, sizeof(*p));
    cr_assert_not_null(p);
    p->caller = pthread_self();
    cr_assert_eq(px_alarm_new(&p->a, on_fire, p), PX_OK);
    return p;
}

static void probe_free(probe *p) {
    px_alarm_free(p->a);
    free(p);
}

/* Nothing fires within ms (an absence can only be watched for a while). */
static void quiet_for(probe *p, int ms) {
    int64_t end = pxt_now_ms() + ms;
    while (pxt_now_ms() < end) {
        cr_assert_eq(atomic_load(&p->fired), 0, "the alarm fired");
        pxt_nap();
    }
}

Test(alarm, fires_once_not_before_its_delay) {
    probe *p = probe_new();
    int64_t t0 = pxt_now_ns();
    px_alarm_set(p->a, 30);
    PXT_AWAIT(atomic_load(&p->fired) == 1, 5000);
    int64_t waited_us = (atomic_load(&p->at_ns) - t0) / 1000;
    cr_assert_geq(waited_us, 30000, "fired after %lld us, asked for 30 ms", (long long)waited_us);
    cr_assert_eq(atomic_load(&p->on_caller), 0, "the callback runs on a task thread");
    probe_free(p);
}

Test(alarm, zero_runs_at_once_on_another_thread) {
    probe *p = probe_new();
    px_alarm_set(p->a, 0);
    PXT_AWAIT(atomic_load(&p->fired) == 1, 2000);
    cr_assert_eq(atomic_load(&p->on_caller), 0);
    probe_free(p);
}

Test(alarm, a_new_setting_replaces_the_pending_one_earlier_or_later) {
    probe *p = probe_new();
    px_alarm_set(p->a, 60000);
    int64_t t0 = pxt_now_ns();
    px_alarm_set(p->a, 5); /* earlier */
    PXT_AWAIT(atomic_load(&p->fired) == 1, 5000);
    cr_assert_geq(atomic_load(&p->at_ns) - t0, 5000000);
    px_alarm_stop(p->a);
    cr_assert_eq(atomic_load(&p->fired), 1, "the 60 s setting went with the 5 ms one");
    probe_free(p);

    probe *q = probe_new();
    px_alarm_set(q->a, 5);
    px_alarm_set(q->a, 60000); /* later */
    quiet_for(q, 100);
    probe_free(q);
}

Test(alarm, stop_disarms_and_waits_for_a_callback_in_progress) {
    probe *p = probe_new();
    px_alarm_set(p->a, 20);
    px_alarm_stop(p->a);
    quiet_for(p, 100);
    px_alarm_set(p->a, 0); /* ignored once stopped */
    quiet_for(p, 20);
    probe_free(p);

    probe *q = probe_new();
    atomic_store(&q->busy_ms, 100);
    px_alarm_set(q->a, 0);
    PXT_AWAIT(atomic_load(&q->at_ns) != 0, 2000); /* the callback began */
    px_alarm_stop(q->a);
    cr_assert_eq(atomic_load(&q->done), 1, "stop returned while the callback ran");
    probe_free(q);
}

Test(alarm, a_callback_can_set_its_own_alarm_again) {
    probe *p = probe_new();
    atomic_store(&p->again, 19);
    p->again_ms = 1;
    int64_t t0 = pxt_now_ns();
    px_alarm_set(p->a, 1);
    PXT_AWAIT(atomic_load(&p->fired) == 20, 5000);
    /* twenty fires at least 1 ms apart: at least 20 ms */
    cr_assert_geq(atomic_load(&p->at_ns) - t0, 20000000);
    probe_free(p);
}

/* Many alarms at once, each with its own delay: each fires once, not
 * before its delay. */
Test(alarm, many_alarms_each_fire_in_their_own_time) {
    enum { N = 64 };
    probe *ps[N];
    uint32_t delay[N];
    int64_t t0 = pxt_now_ns();
    for (int i = 0; i < N; i++) {
        ps[i] = probe_new();
        delay[i] = (uint32_t)((i * 37) % 50 + 1);
        px_alarm_set(ps[i]->a, delay[i]);
    }
    for (int i = 0; i < N; i++) {
        PXT_AWAIT(atomic_load(&ps[i]->fired) == 1, 5000);
        int64_t waited = atomic_load(&ps[i]->at_ns) - t0;
        cr_assert_geq(waited, (int64_t)delay[i] * 1000000, "alarm %d: %lld ns for %u ms", i,
                      (long long)waited, delay[i]);
    }
    for (int i = 0; i < N; i++) {
        probe_free(ps[i]);
    }
}

static int64_t cpu_ns(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000 +
           ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000;
}

/* Waiting costs nothing: an alarm set again for 1 ms from its callback for
 * 300 ms (~150 fires) takes ~6 ms of CPU here. The same loop on
 * nng_sleep_aio takes ~140 ms: nng 1.5's timer spins through each sleep's
 * last millisecond. */
Test(alarm, waiting_does_not_spin) {
    probe *p = probe_new();
    atomic_store(&p->again, 1 << 30);
    p->again_ms = 1;
    int64_t c0 = cpu_ns(), t0 = pxt_now_ns();
    px_alarm_set(p->a, 1);
    while (pxt_now_ns() - t0 < 300000000) {
        nanosleep(&(struct timespec){0, 20000000}, NULL); /* the test thread idles */
    }
    px_alarm_stop(p->a);
    int64_t used = cpu_ns() - c0;
    int fired = atomic_load(&p->fired);
    cr_assert_gt(fired, 50, "a 1 ms alarm fired %d times in 300 ms", fired);
    fprintf(stderr, "alarm: %d fires in 300 ms, %lld us of CPU\n", fired, (long long)used / 1000);
    cr_assert_lt(used, 60000000, "%lld us of CPU for %d fires in 300 ms", (long long)used / 1000,
                 fired);
    probe_free(p);
}
