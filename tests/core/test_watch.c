/* Tests for watches (plexus/supervisor.h): px_watch, px_unwatch and the
 * PX_MSG_TERMINATED message — exactly one per watched end, with the right
 * reason; none after an unwatch; none for a restart.
 *
 * px_watch needs actor context, so a watcher actor does it on command
 * messages (the result goes into a test-owned atomic) and records every
 * Terminated it receives; the test thread asserts. */
#include "helpers.h"

enum {
    TAG_WATCH = 1,
    TAG_UNWATCH = 2,
    TAG_WATCH_SELF = 3,
    TAG_SPAWN = 4, /* par: spawn one supervised kid */
    TAG_FAIL = 5,  /* kid: px_fail(PX_ETYPE) */
    TAG_COUNT = 6, /* kid: count a message */
};

/* --- the watcher --------------------------------------------------------- */

#define W_MAX 16
typedef struct watcher {
    px_ref target; /* set by the test before a command */
    atomic_int result;
    atomic_int acks;
    atomic_int terms;   /* Terminated messages received */
    atomic_int bad;     /* px_msg_terminated failed on one */
    px_ref who[W_MAX];
    px_term_reason reason[W_MAX];
    px_err code[W_MAX];
} watcher;

static px_err watcher_receive(px_ctx *ctx, px_msg *m) {
    watcher *w = px_state(ctx);
    if (px_msg_kind_of(m) == PX_MSG_TERMINATED) {
        px_ref who = PX_REF_NIL;
        px_term_reason why = 0;
        px_err code = PX_OK;
        if (px_msg_terminated(m, &who, &why, &code) != PX_OK) {
            atomic_fetch_add(&w->bad, 1);
        }
        int i = atomic_load(&w->terms);
        if (i < W_MAX) {
            w->who[i] = who;
            w->reason[i] = why;
            w->code[i] = code;
        }
        atomic_store(&w->terms, i + 1);
        return PX_OK;
    }
    px_err e;
    switch (px_msg_tag(m)) {
    case TAG_WATCH:
        e = px_watch(ctx, w->target);
        break;
    case TAG_UNWATCH:
        e = px_unwatch(ctx, w->target);
        break;
    case TAG_WATCH_SELF:
        e = px_watch(ctx, px_self(ctx));
        break;
    default:
        return PX_OK;
    }
    atomic_store(&w->result, e);
    atomic_fetch_add(&w->acks, 1);
    return PX_OK;
}
static const px_behavior watcher_b = {.name = "t.watcher", .init = pxt_init_ptr_state,
                                      .receive = watcher_receive};

/* Has the watcher run one command on target; returns its px_err. */
static px_err w_cmd(px_system *sys, px_ref wref, watcher *w, uint32_t tag, px_ref target) {
    w->target = target;
    int a0 = atomic_load(&w->acks);
    pxt_send_u64(sys, wref, tag, 0);
    PXT_AWAIT(atomic_load(&w->acks) > a0, 5000);
    return (px_err)atomic_load(&w->result);
}

static watcher *w_new(void) {
    watcher *w = calloc(1, sizeof *w);
    cr_assert_not_null(w);
    return w;
}

/* --- a supervised kid and its parent ------------------------------------ */

typedef struct kid {
    atomic_int inits, stops, fails, msgs;
    px_ref self;
} kid;

static px_err kid_init(px_ctx *ctx, const px_msg *arg) {
    kid *k = pxt_msg_ptr(arg);
    if (!k) {
        return PX_EINVAL;
    }
    px_set_state(ctx, k);
    k->self = px_self(ctx);
    atomic_fetch_add(&k->inits, 1);
    return PX_OK;
}
static px_err kid_receive(px_ctx *ctx, px_msg *m) {
    kid *k = px_state(ctx);
    atomic_fetch_add(&k->msgs, 1);
    if (px_msg_tag(m) == TAG_FAIL) {
        atomic_fetch_add(&k->fails, 1);
        px_fail(ctx, PX_ETYPE, "kid failed on purpose");
    }
    return PX_OK;
}
static void kid_stop(px_ctx *ctx) {
    kid *k = px_state(ctx);
    atomic_fetch_add(&k->stops, 1);
}
static const px_behavior kid_b = {.name = "t.w.kid", .init = kid_init, .receive = kid_receive,
                                  .stop = kid_stop};

typedef struct par {
    kid *k;
    px_directive directive; /* 0 = no decider answer set: Restart */
    atomic_int spawned;
    px_err err;
    px_ref child;
    px_ref self;
    atomic_int decided;
} par;

static px_err par_receive(px_ctx *ctx, px_msg *m) {
    par *p = px_state(ctx);
    if (px_msg_tag(m) == TAG_SPAWN) {
        px_msg *arg = NULL;
        px_msg_u64(&arg, PXT_TAG_PTR, (uint64_t)(uintptr_t)p->k);
        px_child_spec spec = {.id = "kid", .behavior = "t.w.kid"};
        p->err = px_spawn_child(ctx, &spec, &arg, &p->child);
        px_msg_free(arg);
        atomic_store(&p->spawned, 1);
    }
    return PX_OK;
}
static px_directive par_decide(px_ctx *ctx, const px_failure *f) {
    (void)f;
    par *p = px_state(ctx);
    atomic_fetch_add(&p->decided, 1);
    return p->directive ? p->directive : PX_DIRECTIVE_RESTART;
}
static const px_behavior par_b = {.name = "t.w.par", .init = pxt_init_ptr_state,
                                  .receive = par_receive, .on_child_failure = par_decide};

/* A parent with one supervised kid; returns the kid's ref. */
static px_ref spawn_supervised(px_system *sys, par *p, kid *k, px_directive d) {
    cr_assert_eq(px_behavior_register(sys, &kid_b), PX_OK);
    p->k = k;
    p->directive = d;
    px_ref pref = pxt_spawn(sys, &par_b, p, NULL);
    p->self = pref;
    pxt_send_u64(sys, pref, TAG_SPAWN, 0);
    PXT_AWAIT(atomic_load(&p->spawned), 5000);
    cr_assert_eq(p->err, PX_OK, "px_spawn_child: %s", px_errname(p->err));
    cr_assert(px_ref_eq(p->child, k->self));
    return p->child;
}

/* Waits for w's first Terminated, then checks that no second one follows. */
static void await_one_term(watcher *w) {
    PXT_AWAIT(atomic_load(&w->terms) >= 1, 5000);
    cr_assert(!PXT_POLL(atomic_load(&w->terms) > 1, 100), "a second Terminated arrived");
}

/* --- 1. stopped by px_stop ----------------------------------------------- */

Test(core_watch, watch_then_stop_delivers_exactly_one_terminated_stopped, .timeout = 10) {
    px_system *sys = pxt_system();
    watcher *w = w_new();
    pxt_rec *r = pxt_rec_new();
    px_ref wref = pxt_spawn(sys, &watcher_b, w, NULL);
    px_ref t = pxt_rec_spawn(sys, r, NULL);
    cr_assert_eq(w_cmd(sys, wref, w, TAG_WATCH, t), PX_OK);
    cr_assert(!PXT_POLL(atomic_load(&w->terms) > 0, 50), "Terminated before any end");
    cr_assert_eq(px_stop(sys, t), PX_OK);
    await_one_term(w);
    cr_assert_eq(atomic_load(&w->terms), 1);
    cr_assert_eq(atomic_load(&w->bad), 0);
    cr_assert(px_ref_eq(w->who[0], t), "who is the watched ref");
    cr_assert_eq(w->reason[0], PX_TERM_STOPPED, "reason %s",
                 px_term_reason_name(w->reason[0]));
    cr_assert_eq(atomic_load(&r->stopped), 1);
    px_system_free(sys);
    free(w), free(r);
}

/* --- 2. stopped itself ----------------------------------------------------- */

Test(core_watch, an_actor_that_stops_itself_ends_with_reason_normal, .timeout = 10) {
    px_system *sys = pxt_system();
    watcher *w = w_new();
    pxt_rec *r = pxt_rec_new();
    atomic_store(&r->stop_on_tag, 9);
    px_ref wref = pxt_spawn(sys, &watcher_b, w, NULL);
    px_ref t = pxt_rec_spawn(sys, r, NULL);
    cr_assert_eq(w_cmd(sys, wref, w, TAG_WATCH, t), PX_OK);
    pxt_send_u64(sys, t, 9, 0);
    await_one_term(w);
    cr_assert(px_ref_eq(w->who[0], t));
    cr_assert_eq(w->reason[0], PX_TERM_NORMAL, "reason %s", px_term_reason_name(w->reason[0]));
    px_system_free(sys);
    free(w), free(r);
}

/* --- 3. already dead ----------------------------------------------------- */

/* An actor that ended a moment ago may still be held (a call in flight
 * pins it): the late watch then learns its real reason. Both answers are
 * honest; what must not happen is silence, two answers, or a wrong reason. */
Test(core_watch, watching_a_dead_ref_delivers_one_terminated_with_its_reason, .timeout = 10) {
    px_system *sys = pxt_system();
    watcher *w = w_new();
    pxt_rec *r = pxt_rec_new();
    px_ref wref = pxt_spawn(sys, &watcher_b, w, NULL);
    px_ref t = pxt_rec_spawn(sys, r, NULL);
    cr_assert_eq(px_stop(sys, t), PX_OK);
    PXT_AWAIT(!px_is_alive(sys, t), 5000);
    px_err e = w_cmd(sys, wref, w, TAG_WATCH, t);
    cr_assert_eq(e, PX_OK, "px_watch of a dead ref: %s", px_errname(e));
    await_one_term(w);
    cr_assert(px_ref_eq(w->who[0], t));
    cr_assert(w->reason[0] == PX_TERM_STOPPED || w->reason[0] == PX_TERM_NO_ACTOR, "reason %s",
              px_term_reason_name(w->reason[0]));
    cr_assert(!PXT_POLL(atomic_load(&w->terms) > 1, 50), "a second Terminated");
    px_system_free(sys);
    free(w), free(r);
}

Test(core_watch, watching_a_ref_that_never_lived_delivers_one_terminated_no_actor,
     .timeout = 10) {
    px_system *sys = pxt_system();
    watcher *w = w_new();
    pxt_rec *r = pxt_rec_new();
    px_ref wref = pxt_spawn(sys, &watcher_b, w, NULL);
    px_ref t = pxt_rec_spawn(sys, r, NULL);
    px_ref ghost = t;
    ghost.inc += 1000; /* the same slot, an incarnation it never had */
    px_err e = w_cmd(sys, wref, w, TAG_WATCH, ghost);
    cr_assert_eq(e, PX_OK, "px_watch of a ghost ref: %s", px_errname(e));
    await_one_term(w);
    cr_assert(px_ref_eq(w->who[0], ghost));
    cr_assert_eq(w->reason[0], PX_TERM_NO_ACTOR, "reason %s",
                 px_term_reason_name(w->reason[0]));
    cr_assert(px_is_alive(sys, t), "the live actor in that slot is untouched");
    px_system_free(sys);
    free(w), free(r);
}

/* --- 4. watched twice ---------------------------------------------------- */

Test(core_watch, watching_twice_delivers_one_terminated, .timeout = 10) {
    px_system *sys = pxt_system();
    watcher *w = w_new();
    pxt_rec *r = pxt_rec_new();
    px_ref wref = pxt_spawn(sys, &watcher_b, w, NULL);
    px_ref t = pxt_rec_spawn(sys, r, NULL);
    cr_assert_eq(w_cmd(sys, wref, w, TAG_WATCH, t), PX_OK);
    cr_assert_eq(w_cmd(sys, wref, w, TAG_WATCH, t), PX_OK, "a second watch is a no-op");
    cr_assert_eq(px_stop(sys, t), PX_OK);
    PXT_AWAIT(atomic_load(&w->terms) >= 1, 5000);
    cr_assert(!PXT_POLL(atomic_load(&w->terms) > 1, 100), "got %d Terminated",
              atomic_load(&w->terms));
    cr_assert_eq(w->reason[0], PX_TERM_STOPPED);
    px_system_free(sys);
    free(w), free(r);
}

/* --- 5. unwatch ---------------------------------------------------------- */

Test(core_watch, unwatch_cancels_the_watch_and_unknown_unwatch_is_enoent, .timeout = 10) {
    px_system *sys = pxt_system();
    watcher *w = w_new();
    pxt_rec *r = pxt_rec_new(), *r2 = pxt_rec_new();
    px_ref wref = pxt_spawn(sys, &watcher_b, w, NULL);
    px_ref t = pxt_rec_spawn(sys, r, NULL);
    px_ref other = pxt_rec_spawn(sys, r2, NULL);
    cr_assert_eq(w_cmd(sys, wref, w, TAG_UNWATCH, other), PX_ENOENT,
                 "px_unwatch of a ref never watched");
    cr_assert_eq(w_cmd(sys, wref, w, TAG_WATCH, t), PX_OK);
    cr_assert_eq(w_cmd(sys, wref, w, TAG_UNWATCH, t), PX_OK);
    cr_assert_eq(w_cmd(sys, wref, w, TAG_UNWATCH, t), PX_ENOENT, "a second unwatch");
    cr_assert_eq(px_stop(sys, t), PX_OK);
    PXT_AWAIT(atomic_load(&r->stopped) == 1, 5000);
    PXT_AWAIT(!px_is_alive(sys, t), 5000);
    cr_assert(!PXT_POLL(atomic_load(&w->terms) > 0, 200), "a Terminated arrived after unwatch");
    /* The watcher still works: a new watch on another actor is honoured. */
    cr_assert_eq(w_cmd(sys, wref, w, TAG_WATCH, other), PX_OK);
    cr_assert_eq(px_stop(sys, other), PX_OK);
    PXT_AWAIT(atomic_load(&w->terms) == 1, 5000);
    cr_assert(px_ref_eq(w->who[0], other));
    px_system_free(sys);
    free(w), free(r), free(r2);
}

/* --- 6. failure and Stop ------------------------------------------------- */

Test(core_watch, a_child_stopped_by_its_supervisor_after_a_failure_ends_with_failure_and_code,
     .timeout = 10) {
    px_system *sys = pxt_system();
    watcher *w = w_new();
    par *p = calloc(1, sizeof *p);
    kid *k = calloc(1, sizeof *k);
    px_ref wref = pxt_spawn(sys, &watcher_b, w, NULL);
    px_ref c = spawn_supervised(sys, p, k, PX_DIRECTIVE_STOP);
    cr_assert_eq(w_cmd(sys, wref, w, TAG_WATCH, c), PX_OK);
    pxt_send_u64(sys, c, TAG_FAIL, 0);
    PXT_AWAIT(atomic_load(&w->terms) >= 1, 5000);
    cr_assert_eq(atomic_load(&p->decided), 1);
    cr_assert(px_ref_eq(w->who[0], c));
    cr_assert_eq(w->reason[0], PX_TERM_FAILURE, "reason %s", px_term_reason_name(w->reason[0]));
    cr_assert_eq(w->code[0], PX_ETYPE, "code %s (px_fail gave PX_ETYPE)", px_errname(w->code[0]));
    cr_assert(!PXT_POLL(atomic_load(&w->terms) > 1, 100), "a second Terminated arrived");
    cr_assert_eq(atomic_load(&k->stops), 1);
    cr_assert_eq(atomic_load(&k->inits), 1);
    px_system_free(sys);
    free(w), free(p), free(k);
}

Test(core_watch, a_top_level_actor_stopped_by_the_root_guardian_ends_with_failure_and_code,
     .timeout = 10) {
    px_config cfg;
    pxt_config(&cfg);
    cfg.log_level = PX_LOG_OFF; /* the root guardian logs the failure as CRIT */
    cfg.root_policy = PX_ROOT_STOP;
    px_system *sys = pxt_system_with(&cfg);
    watcher *w = w_new();
    kid *k = calloc(1, sizeof *k);
    px_ref wref = pxt_spawn(sys, &watcher_b, w, NULL);
    px_ref t = pxt_spawn(sys, &kid_b, k, NULL);
    cr_assert_eq(w_cmd(sys, wref, w, TAG_WATCH, t), PX_OK);
    pxt_send_u64(sys, t, TAG_FAIL, 0);
    PXT_AWAIT(atomic_load(&w->terms) >= 1, 5000);
    cr_assert(px_ref_eq(w->who[0], t));
    cr_assert_eq(w->reason[0], PX_TERM_FAILURE, "reason %s", px_term_reason_name(w->reason[0]));
    cr_assert_eq(w->code[0], PX_ETYPE, "code %s", px_errname(w->code[0]));
    cr_assert(!PXT_POLL(atomic_load(&w->terms) > 1, 100), "a second Terminated arrived");
    px_system_free(sys);
    free(w), free(k);
}

/* --- 7. a restart is not an end ------------------------------------------ */

Test(core_watch, a_restart_is_not_a_termination, .timeout = 10) {
    px_system *sys = pxt_system();
    watcher *w = w_new();
    par *p = calloc(1, sizeof *p);
    kid *k = calloc(1, sizeof *k);
    px_ref wref = pxt_spawn(sys, &watcher_b, w, NULL);
    px_ref c = spawn_supervised(sys, p, k, 0);
    cr_assert_eq(w_cmd(sys, wref, w, TAG_WATCH, c), PX_OK);
    pxt_send_u64(sys, c, TAG_FAIL, 0);
    PXT_AWAIT(atomic_load(&k->inits) == 2, 5000);
    cr_assert_eq(atomic_load(&k->stops), 1);
    cr_assert(!PXT_POLL(atomic_load(&w->terms) > 0, 200), "a restart delivered a Terminated");
    cr_assert(px_is_alive(sys, c));
    /* The watch survives the restart: a real end (its parent stops and
     * takes it along) is still reported. */
    cr_assert_eq(px_stop(sys, p->self), PX_OK);
    PXT_AWAIT(atomic_load(&w->terms) == 1, 5000);
    cr_assert(px_ref_eq(w->who[0], c));
    cr_assert_eq(w->reason[0], PX_TERM_STOPPED, "reason %s", px_term_reason_name(w->reason[0]));
    px_system_free(sys);
    free(w), free(p), free(k);
}

/* --- 8. nil and self ----------------------------------------------------- */

Test(core_watch, watching_nil_or_self_is_einval, .timeout = 10) {
    px_system *sys = pxt_system();
    watcher *w = w_new();
    px_ref wref = pxt_spawn(sys, &watcher_b, w, NULL);
    cr_assert_eq(w_cmd(sys, wref, w, TAG_WATCH, PX_REF_NIL), PX_EINVAL);
    cr_assert_eq(w_cmd(sys, wref, w, TAG_WATCH_SELF, PX_REF_NIL), PX_EINVAL);
    cr_assert(!PXT_POLL(atomic_load(&w->terms) > 0, 50));
    px_system_free(sys);
    free(w);
}
