/* Tests for timers: send_after, periodic ticks, cancel, and how timers
 * end with their actor and with the system. */
#include <pthread.h>

#include <nng/nng.h>
#include <nng/supplemental/util/platform.h>

#include "helpers.h"

enum { TAG_MSG = 1, TAG_PROBE = 2, TAG_START = 3, TAG_TICK = 7, TAG_CANCEL = 8 };

Test(core_timer, system_send_after_delivers_once_after_roughly_the_delay, .timeout = 10) {
    px_system *sys = pxt_system();
    pxt_rec *r = pxt_rec_new();
    px_ref a = pxt_rec_spawn(sys, r, NULL);
    px_msg *m = pxt_u64(TAG_MSG, 1);
    uint64_t tid = 0;
    int64_t t0 = pxt_now_ms();
    cr_assert_eq(px_system_send_after(sys, 150, a, &m, &tid), PX_OK);
    cr_assert_null(m, "send_after takes the message");
    cr_assert_neq(tid, 0, "a timer id is handed out");
    PXT_AWAIT(pxt_rec_count(r) >= 1, 5000);
    int64_t took = pxt_now_ms() - t0;
    cr_assert_geq(took, 140, "delivered after %lld ms of a 150 ms delay", (long long)took);
    cr_assert_lt(took, 3000, "delivered only after %lld ms", (long long)took);
    cr_assert_eq(r->tag[0], TAG_MSG);
    /* Exactly once: a later probe with a longer delay arrives next. */
    px_msg *probe = pxt_u64(TAG_PROBE, 2);
    cr_assert_eq(px_system_send_after(sys, 200, a, &probe, NULL), PX_OK);
    PXT_AWAIT(pxt_rec_count(r) >= 2, 5000);
    cr_assert_eq(r->tag[1], TAG_PROBE, "the timed message came twice");
    cr_assert_eq(pxt_rec_count(r), 2);
    cr_assert_eq(px_timer_cancel(sys, tid), PX_ENOENT, "a fired timer cannot be cancelled");
    px_system_free(sys);
    free(r);
}

Test(core_timer, send_after_with_zero_delay_delivers, .timeout = 10) {
    px_system *sys = pxt_system();
    pxt_rec *r = pxt_rec_new();
    px_ref a = pxt_rec_spawn(sys, r, NULL);
    px_msg *m = pxt_u64(TAG_MSG, 1);
    cr_assert_eq(px_system_send_after(sys, 0, a, &m, NULL), PX_OK);
    PXT_AWAIT(pxt_rec_count(r) == 1, 5000);
    px_system_free(sys);
    free(r);
}

Test(core_timer, send_after_rejects_a_delay_above_one_day, .timeout = 10) {
    px_system *sys = pxt_system();
    pxt_rec *r = pxt_rec_new();
    px_ref a = pxt_rec_spawn(sys, r, NULL);
    px_msg *m = pxt_u64(TAG_MSG, 1);
    cr_assert_eq(px_system_send_after(sys, 86400001u, a, &m, NULL), PX_EINVAL);
    cr_assert_not_null(m, "on error the caller keeps the message");
    cr_assert_eq(px_system_send_after(sys, 86400000u, a, &m, NULL), PX_OK, "one day is allowed");
    cr_assert_null(m);
    px_system_free(sys);
    free(r);
}

Test(core_timer, cancel_of_a_pending_send_after_prevents_delivery, .timeout = 10) {
    px_system *sys = pxt_system();
    pxt_rec *r = pxt_rec_new();
    px_ref a = pxt_rec_spawn(sys, r, NULL);
    px_msg *m = pxt_u64(TAG_MSG, 1);
    uint64_t tid = 0;
    cr_assert_eq(px_system_send_after(sys, 100, a, &m, &tid), PX_OK);
    cr_assert_eq(px_timer_cancel(sys, tid), PX_OK);
    cr_assert_eq(px_timer_cancel(sys, tid), PX_ENOENT, "second cancel");
    px_msg *probe = pxt_u64(TAG_PROBE, 2);
    cr_assert_eq(px_system_send_after(sys, 300, a, &probe, NULL), PX_OK);
    PXT_AWAIT(pxt_rec_count(r) >= 1, 5000);
    cr_assert_eq(r->tag[0], TAG_PROBE, "the cancelled message was delivered");
    cr_assert_eq(pxt_rec_count(r), 1);
    px_system_free(sys);
    free(r);
}

Test(core_timer, cancel_of_an_unknown_timer_is_enoent, .timeout = 10) {
    px_system *sys = pxt_system();
    cr_assert_eq(px_timer_cancel(sys, 0), PX_ENOENT);
    cr_assert_eq(px_timer_cancel(sys, 0xdeadbeefcafeull), PX_ENOENT);
    px_system_free(sys);
}

Test(core_timer, send_after_timers_fire_in_delay_order, .timeout = 10) {
    px_system *sys = pxt_system();
    pxt_rec *r = pxt_rec_new();
    px_ref a = pxt_rec_spawn(sys, r, NULL);
    uint32_t delays[5] = {250, 50, 200, 100, 150};
    for (int i = 0; i < 5; i++) {
        px_msg *m = pxt_u64(TAG_MSG, delays[i]);
        cr_assert_eq(px_system_send_after(sys, delays[i], a, &m, NULL), PX_OK);
    }
    PXT_AWAIT(pxt_rec_count(r) == 5, 5000);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(r->val[i], 50 * (uint64_t)(i + 1), "message %d has delay %llu", i,
                     (unsigned long long)r->val[i]);
    }
    px_system_free(sys);
    free(r);
}

/* Many timers in a scrambled order, a third of them cancelled from the
 * middle of the heap: the rest fire in deadline order, none of the
 * cancelled ones fires, and nothing is lost. A timer's deadline lies
 * between nng_clock() before and after its add plus its delay, so a
 * message may not come after one whose deadline was surely later. */
Test(core_timer, many_timers_with_cancels_fire_in_deadline_order, .timeout = 20) {
    enum { N = 3000 };
    px_system *sys = pxt_system();
    pxt_rec *r = pxt_rec_new();
    px_ref a = pxt_rec_spawn(sys, r, NULL);
    static uint64_t id[N], lo[N], hi[N];
    static bool cancelled[N];
    uint32_t x = 12345;
    for (int i = 0; i < N; i++) {
        x = x * 1103515245u + 12345u;
        uint32_t delay = 300 + (x >> 16) % 500; /* 300..799 ms: all pending while we cancel */
        px_msg *m = pxt_u64(TAG_MSG, (uint64_t)i);
        lo[i] = nng_clock() + delay;
        cr_assert_eq(px_system_send_after(sys, delay, a, &m, &id[i]), PX_OK);
        hi[i] = nng_clock() + delay;
    }
    int kept = N;
    for (int i = 0; i < N; i++) {
        x = x * 1103515245u + 12345u;
        if ((x >> 16) % 3 == 0) {
            cr_assert_eq(px_timer_cancel(sys, id[i]), PX_OK, "cancel %d", i);
            cancelled[i] = true;
            kept--;
        }
    }
    PXT_AWAIT(pxt_rec_count(r) == (uint64_t)kept, 10000);
    cr_assert_eq(pxt_rec_count(r), (uint64_t)kept);
    static bool seen[N];
    uint64_t latest_lo = 0; /* the latest lower bound among those delivered so far */
    for (int k = 0; k < kept; k++) {
        uint64_t i = r->val[k];
        cr_assert_lt(i, N);
        cr_assert_not(cancelled[i], "cancelled timer %llu fired", (unsigned long long)i);
        cr_assert_not(seen[i], "timer %llu fired twice", (unsigned long long)i);
        seen[i] = true;
        cr_assert_geq(hi[i], latest_lo, "message %d (due by %llu) came after one due from %llu",
                      k, (unsigned long long)hi[i], (unsigned long long)latest_lo);
        latest_lo = lo[i] > latest_lo ? lo[i] : latest_lo;
    }
    px_system_free(sys);
    free(r);
}

/* --- from actor context ------------------------------------------------ */

/* On TAG_START: sends itself a delayed message (and records the id); on
 * TAG_TICK-tagged timer ticks: counts; on TAG_CANCEL: cancels the periodic
 * timer from inside. */
typedef struct ticker {
    uint32_t period_ms;
    uint32_t delay_ms;
    atomic_int start_err;
    atomic_uint_least64_t timer_id;
    atomic_uint_least64_t after_id;
    atomic_int ticks;
    atomic_int wrong_kind; /* a tick that is not PX_MSG_TIMER with our tag */
    atomic_int delayed;    /* delayed self-messages received */
    atomic_int delayed_from_self;
    atomic_llong start_ms, delayed_ms;
    atomic_int probes;
    atomic_int stopped;
} ticker;

enum { TAG_EVERY = 10, TAG_AFTER = 11, TAG_SELF = 12 };

static px_err ticker_receive(px_ctx *ctx, px_msg *m) {
    ticker *t = px_state(ctx);
    if (px_msg_kind_of(m) == PX_MSG_TIMER) {
        if (px_msg_tag(m) == TAG_TICK) {
            atomic_fetch_add(&t->ticks, 1);
        } else {
            atomic_fetch_add(&t->wrong_kind, 1);
        }
        return PX_OK;
    }
    switch (px_msg_tag(m)) {
    case TAG_EVERY: {
        uint64_t id = 0;
        atomic_store(&t->start_err, px_timer_every(ctx, t->period_ms, TAG_TICK, &id));
        atomic_store(&t->timer_id, id);
        break;
    }
    case TAG_AFTER: {
        px_msg *d = NULL;
        px_msg_u64(&d, TAG_SELF, 0);
        uint64_t id = 0;
        atomic_store(&t->start_ms, pxt_now_ms());
        px_err e = px_send_after(ctx, t->delay_ms, px_self(ctx), &d, &id);
        if (e != PX_OK) {
            px_msg_free(d);
        }
        atomic_store(&t->after_id, id);
        atomic_store(&t->start_err, e);
        break;
    }
    case TAG_SELF:
        atomic_store(&t->delayed_ms, pxt_now_ms());
        if (px_ref_eq(px_msg_sender(m), px_self(ctx))) {
            atomic_fetch_add(&t->delayed_from_self, 1);
        }
        atomic_fetch_add(&t->delayed, 1);
        break;
    case TAG_PROBE:
        atomic_fetch_add(&t->probes, 1);
        break;
    case TAG_TICK:
        /* a bytes message with the tick tag: not a timer tick */
        atomic_fetch_add(&t->wrong_kind, 1);
        break;
    default:
        break;
    }
    return PX_OK;
}
static void ticker_stop(px_ctx *ctx) {
    ticker *t = px_state(ctx);
    atomic_fetch_add(&t->stopped, 1);
}
static const px_behavior ticker_b = {.name = "t.ticker", .init = pxt_init_ptr_state,
                                     .receive = ticker_receive, .stop = ticker_stop};

Test(core_timer, send_after_from_an_actor_arrives_with_the_actor_as_sender, .timeout = 10) {
    px_system *sys = pxt_system();
    ticker t = {.delay_ms = 100};
    px_ref a = pxt_spawn(sys, &ticker_b, &t, NULL);
    pxt_send_u64(sys, a, TAG_AFTER, 0);
    PXT_AWAIT(atomic_load(&t.delayed) == 1, 5000);
    cr_assert_eq(atomic_load(&t.start_err), PX_OK);
    cr_assert_eq(atomic_load(&t.delayed_from_self), 1, "sender = this actor");
    long long took = atomic_load(&t.delayed_ms) - atomic_load(&t.start_ms);
    cr_assert_geq(took, 90, "arrived after %lld ms of 100", took);
    px_system_free(sys);
}

Test(core_timer, timer_every_ticks_repeatedly_until_cancelled, .timeout = 15) {
    px_system *sys = pxt_system();
    ticker t = {.period_ms = 20};
    px_ref a = pxt_spawn(sys, &ticker_b, &t, NULL);
    int64_t t0 = pxt_now_ms();
    pxt_send_u64(sys, a, TAG_EVERY, 0);
    PXT_AWAIT(atomic_load(&t.ticks) >= 5, 5000);
    int64_t took = pxt_now_ms() - t0;
    cr_assert_eq(atomic_load(&t.start_err), PX_OK);
    cr_assert_geq(took, 5 * 20 - 10, "5 ticks of 20 ms came in %lld ms", (long long)took);
    cr_assert_eq(atomic_load(&t.wrong_kind), 0, "ticks are PX_MSG_TIMER with the timer's tag");
    uint64_t id = atomic_load(&t.timer_id);
    cr_assert_neq(id, 0);
    cr_assert_eq(px_timer_cancel(sys, id), PX_OK, "a periodic timer is pending until cancelled");
    int after_cancel = atomic_load(&t.ticks);
    /* Wait for a probe sent well after several periods would have elapsed. */
    px_msg *probe = pxt_u64(TAG_PROBE, 0);
    cr_assert_eq(px_system_send_after(sys, 200, a, &probe, NULL), PX_OK);
    PXT_AWAIT(atomic_load(&t.probes) == 1, 5000);
    cr_assert_leq(atomic_load(&t.ticks), after_cancel + 1,
                  "ticks went on after cancel: %d then %d", after_cancel, atomic_load(&t.ticks));
    cr_assert_eq(px_timer_cancel(sys, id), PX_ENOENT, "second cancel");
    px_system_free(sys);
}

/* A periodic timer keeps its period while far timers are added around its
 * ticks: an add made while a tick is being delivered sets the alarm for its
 * own far deadline, and what is due sooner must still move it earlier. */
static atomic_int far_stop;
static px_system *far_sys;
static px_ref far_to;
static void *far_adder(void *arg) {
    (void)arg;
    while (!atomic_load(&far_stop)) {
        px_msg *m = pxt_u64(TAG_PROBE, 0);
        uint64_t id = 0;
        if (px_system_send_after(far_sys, 5000, far_to, &m, &id) == PX_OK) {
            (void)px_timer_cancel(far_sys, id);
        } else {
            px_msg_free(m);
        }
    }
    return NULL;
}

Test(core_timer, a_periodic_timer_keeps_its_period_while_far_timers_come_and_go,
     .timeout = 20) {
    far_sys = pxt_system();
    ticker t = {.period_ms = 10};
    far_to = pxt_spawn(far_sys, &ticker_b, &t, NULL);
    pxt_send_u64(far_sys, far_to, TAG_EVERY, 0);
    PXT_AWAIT(atomic_load(&t.ticks) >= 1, 5000);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, far_adder, NULL), 0);
    int before = atomic_load(&t.ticks);
    int64_t t0 = pxt_now_ms();
    while (pxt_now_ms() < t0 + 1000) {
        pxt_nap(); /* the ticks are counted, not awaited */
    }
    int ticks = atomic_load(&t.ticks) - before;
    atomic_store(&far_stop, 1);
    pthread_join(th, NULL);
    cr_assert_geq(ticks, 40, "%d ticks of 10 ms in 1 s while far timers came and went", ticks);
    px_system_free(far_sys);
}

Test(core_timer, timer_every_rejects_a_zero_period, .timeout = 10) {
    px_system *sys = pxt_system();
    ticker t = {.period_ms = 0};
    px_ref a = pxt_spawn(sys, &ticker_b, &t, NULL);
    pxt_send_u64(sys, a, TAG_EVERY, 0);
    PXT_AWAIT(atomic_load(&t.timer_id) != 0 || atomic_load(&t.start_err) != 0, 5000);
    cr_assert_eq(atomic_load(&t.start_err), PX_EINVAL);
    px_system_free(sys);
}

Test(core_timer, a_periodic_timer_dies_with_its_actor, .timeout = 10) {
    px_system *sys = pxt_system();
    ticker t = {.period_ms = 10};
    px_ref a = pxt_spawn(sys, &ticker_b, &t, NULL);
    pxt_send_u64(sys, a, TAG_EVERY, 0);
    PXT_AWAIT(atomic_load(&t.ticks) >= 2, 5000);
    uint64_t id = atomic_load(&t.timer_id);
    cr_assert_eq(px_stop(sys, a), PX_OK);
    PXT_AWAIT(!px_is_alive(sys, a), 5000);
    PXT_AWAIT(atomic_load(&t.stopped) == 1, 5000);
    PXT_AWAIT(PXT_STAT(sys, stopped) == 1 && pxt_live(sys) == 0, 5000);
    /* One call: a cancel that succeeded would mean the timer outlived it. */
    cr_assert_eq(px_timer_cancel(sys, id), PX_ENOENT, "the periodic timer outlived its actor");
    /* No endless stream of dead-letter ticks: the counter settles. */
    uint64_t d1 = PXT_STAT(sys, dead_letters);
    pxt_rec *r = pxt_rec_new();
    px_ref b = pxt_rec_spawn(sys, r, NULL);
    px_msg *probe = pxt_u64(TAG_PROBE, 0);
    cr_assert_eq(px_system_send_after(sys, 100, b, &probe, NULL), PX_OK);
    PXT_AWAIT(pxt_rec_count(r) == 1, 5000);
    cr_assert_leq(PXT_STAT(sys, dead_letters) - d1, 1, "ticks kept coming for a dead actor");
    px_system_free(sys);
    free(r);
}

Test(core_timer, a_pending_send_after_dies_with_its_actor, .timeout = 10) {
    px_system *sys = pxt_system();
    ticker t = {.delay_ms = 60000};
    px_ref a = pxt_spawn(sys, &ticker_b, &t, NULL);
    pxt_send_u64(sys, a, TAG_AFTER, 0);
    PXT_AWAIT(atomic_load(&t.after_id) != 0, 5000);
    cr_assert_eq(atomic_load(&t.start_err), PX_OK);
    cr_assert_eq(px_stop(sys, a), PX_OK);
    PXT_AWAIT(!px_is_alive(sys, a), 5000);
    PXT_AWAIT(atomic_load(&t.stopped) == 1, 5000);
    PXT_AWAIT(PXT_STAT(sys, stopped) == 1 && pxt_live(sys) == 0, 5000);
    cr_assert_eq(px_timer_cancel(sys, atomic_load(&t.after_id)), PX_ENOENT,
                 "the pending timer outlived its actor");
    px_system_free(sys);
}

Test(core_timer, shutdown_cancels_pending_timers_without_waiting_for_them, .timeout = 10) {
    px_system *sys = pxt_system();
    pxt_rec *r = pxt_rec_new();
    px_ref a = pxt_rec_spawn(sys, r, NULL);
    for (int i = 0; i < 10; i++) {
        px_msg *m = pxt_u64(TAG_MSG, (uint64_t)i);
        cr_assert_eq(px_system_send_after(sys, 30000, a, &m, NULL), PX_OK);
    }
    int64_t t0 = pxt_now_ms();
    cr_assert_eq(px_system_shutdown(sys), PX_OK);
    cr_assert_lt(pxt_now_ms() - t0, 5000, "shutdown waited for a 30 s timer");
    cr_assert_eq(pxt_rec_count(r), 0);
    px_system_free(sys);
    free(r);
}
