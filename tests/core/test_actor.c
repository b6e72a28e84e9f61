/* Tests for plexus/actor.h: spawning and init, ask/reply, stopping, dead
 * letters, failure, children, context rules and routing of remote refs. */
#include "helpers.h"

#include <plexus/router.h>

enum { TAG_START = 1, TAG_REQ = 2, TAG_RESP = 3, TAG_DONE = 4, TAG_PLAIN = 5 };

/* --- spawn and init ---------------------------------------------------- */

Test(core_actor, spawn_runs_init_in_the_spawners_thread_with_its_argument, .timeout = 10) {
    px_system *sys = pxt_system();
    pxt_rec *r = pxt_rec_new();
    px_ref a = pxt_rec_spawn(sys, r, NULL);
    cr_assert(px_ref_eq(r->self, a), "px_self in init is the returned ref");
    cr_assert(pthread_equal(r->init_thread, pthread_self()), "init runs in the spawner's thread");
    cr_assert(px_ref_eq(r->parent, px_system_root(sys)),
              "a top-level actor is a child of the root guardian");
    cr_assert(px_is_alive(sys, a));
    cr_assert_eq(pxt_spawned(sys), 1);
    cr_assert_eq(pxt_live(sys), 1);
    px_system_free(sys);
    free(r);
}

static atomic_int plain_count;
static px_err plain_receive(px_ctx *ctx, px_msg *m) {
    (void)ctx;
    (void)m;
    atomic_fetch_add(&plain_count, 1);
    return PX_OK;
}
static const px_behavior plain_b = {.name = "t.plain", .receive = plain_receive};

Test(core_actor, spawn_without_init_or_argument_or_out_works, .timeout = 10) {
    px_system *sys = pxt_system();
    cr_assert_eq(px_system_spawn(sys, &plain_b, NULL, NULL, NULL), PX_OK);
    px_msg *none = NULL;
    px_ref a = PX_REF_NIL;
    cr_assert_eq(px_system_spawn(sys, &plain_b, &none, NULL, &a), PX_OK);
    pxt_send_u64(sys, a, TAG_PLAIN, 1);
    PXT_AWAIT(atomic_load(&plain_count) == 1, 5000);
    cr_assert_eq(pxt_live(sys), 2);
    px_system_free(sys);
}

Test(core_actor, spawn_rejects_a_null_behavior_or_a_missing_receive, .timeout = 10) {
    static const px_behavior no_receive = {.name = "t.noreceive"};
    px_system *sys = pxt_system();
    px_ref a = PX_REF_NIL;
    cr_assert_eq(px_system_spawn(sys, NULL, NULL, NULL, &a), PX_EINVAL);
    cr_assert_eq(px_system_spawn(sys, &no_receive, NULL, NULL, &a), PX_EINVAL);
    cr_assert(px_ref_is_nil(a));
    cr_assert_eq(pxt_live(sys), 0);
    px_system_free(sys);
}

static atomic_int bad_init_calls, bad_stop_calls, bad_receive_calls;
static px_err bad_init(px_ctx *ctx, const px_msg *arg) {
    (void)ctx;
    (void)arg;
    atomic_fetch_add(&bad_init_calls, 1);
    return PX_EINVAL;
}
static px_err bad_receive(px_ctx *ctx, px_msg *m) {
    (void)ctx;
    (void)m;
    atomic_fetch_add(&bad_receive_calls, 1);
    return PX_OK;
}
static void bad_stop(px_ctx *ctx) {
    (void)ctx;
    atomic_fetch_add(&bad_stop_calls, 1);
}
static const px_behavior bad_init_b = {.name = "t.badinit", .init = bad_init,
                                       .receive = bad_receive, .stop = bad_stop};

Test(core_actor, init_failure_fails_the_spawn_with_einit_and_leaves_nothing_behind,
     .timeout = 10) {
    px_system *sys = pxt_system();
    px_system_stats st0 = pxt_stats(sys);
    px_msg *arg = pxt_u64(1, 2);
    px_msg *orig = arg;
    px_ref a = PX_REF_NIL;
    px_spawn_opts so = {.name = "ghost"};
    px_err e = px_system_spawn(sys, &bad_init_b, &arg, &so, &a);
    cr_assert_eq(e, PX_EINIT, "got %s", px_errname(e));
    cr_assert_eq(atomic_load(&bad_init_calls), 1);
    cr_assert_eq(arg, orig, "on error the caller still owns the start argument");
    px_msg_free(arg);
    cr_assert(px_ref_is_nil(a), "no ref for an actor that never started");
    px_ref w = PX_REF_NIL;
    cr_assert_eq(px_whereis(sys, "ghost", &w), PX_ENOENT, "no name left behind");
    px_system_stats st = pxt_stats(sys);
    cr_assert_eq(st.live_actors, st0.live_actors, "no actor left behind");
    cr_assert_eq(st.failures - st0.failures, 1, "an init failure is counted");
    /* The name is free for a good actor. */
    pxt_rec *r = pxt_rec_new();
    px_ref good = pxt_rec_spawn(sys, r, &so);
    cr_assert_eq(px_whereis(sys, "ghost", &w), PX_OK);
    cr_assert(px_ref_eq(w, good));
    px_system_free(sys);
    cr_assert_eq(atomic_load(&bad_stop_calls), 0, "stop is not called after a failed init");
    cr_assert_eq(atomic_load(&bad_receive_calls), 0);
    free(r);
}

/* On any message, spawns a bad-init child and records the result. */
typedef struct spawner {
    atomic_int done;
    atomic_int result;
    atomic_int arg_kept;
} spawner;
static px_err spawner_receive(px_ctx *ctx, px_msg *m) {
    (void)m;
    spawner *s = px_state(ctx);
    px_msg *arg = NULL;
    px_msg_u64(&arg, 1, 1);
    px_ref c = PX_REF_NIL;
    px_err e = px_spawn(ctx, &bad_init_b, &arg, NULL, &c);
    atomic_store(&s->arg_kept, arg != NULL);
    px_msg_free(arg);
    atomic_store(&s->result, e);
    atomic_store(&s->done, 1);
    return PX_OK;
}
static const px_behavior spawner_b = {.name = "t.spawner", .init = pxt_init_ptr_state,
                                      .receive = spawner_receive};

Test(core_actor, child_init_failure_returns_einit_to_the_parent_which_lives_on, .timeout = 10) {
    px_system *sys = pxt_system();
    spawner s = {0};
    px_ref p = pxt_spawn(sys, &spawner_b, &s, NULL);
    pxt_send_u64(sys, p, TAG_START, 0);
    PXT_AWAIT(atomic_load(&s.done), 5000);
    cr_assert_eq(atomic_load(&s.result), PX_EINIT);
    cr_assert(atomic_load(&s.arg_kept));
    cr_assert(px_is_alive(sys, p));
    cr_assert_eq(pxt_live(sys), 1);
    px_system_free(sys);
    cr_assert_eq(atomic_load(&bad_stop_calls), 0);
}

/* --- ask and reply ----------------------------------------------------- */

#define MAX_ASKS 16
typedef struct asker {
    px_ref target;
    uint32_t timeout_ms;
    int n_asks;
    uint64_t corrs[MAX_ASKS];
    atomic_int ask_err;   /* first non-OK px_ask result */
    atomic_int asked;     /* asks sent */
    uint64_t reply_corr[MAX_ASKS], reply_val[MAX_ASKS], timeout_corr[MAX_ASKS];
    px_ref reply_sender[MAX_ASKS];
    atomic_int replies, timeouts, done_marks, others;
} asker;

static px_err asker_receive(px_ctx *ctx, px_msg *m) {
    asker *a = px_state(ctx);
    if (px_msg_kind_of(m) == PX_MSG_ASK_TIMEOUT) {
        int i = atomic_load(&a->timeouts);
        if (i < MAX_ASKS) {
            a->timeout_corr[i] = px_msg_corr(m);
        }
        atomic_store(&a->timeouts, i + 1);
    } else if (px_msg_is_reply(m)) {
        int i = atomic_load(&a->replies);
        if (i < MAX_ASKS) {
            a->reply_corr[i] = px_msg_corr(m);
            a->reply_val[i] = px_msg_get_u64(m);
            a->reply_sender[i] = px_msg_sender(m);
        }
        atomic_store(&a->replies, i + 1);
    } else if (px_msg_tag(m) == TAG_START) {
        for (int i = 0; i < a->n_asks; i++) {
            px_msg *q = NULL;
            px_msg_u64(&q, TAG_REQ, 100 + (uint64_t)i);
            px_err e = px_ask(ctx, a->target, &q, a->timeout_ms, &a->corrs[i]);
            if (e != PX_OK) {
                atomic_store(&a->ask_err, e);
                px_msg_free(q);
            } else if (q != NULL) {
                atomic_store(&a->ask_err, PX_EINVAL); /* not nulled */
            }
        }
        atomic_store(&a->asked, a->n_asks);
    } else if (px_msg_tag(m) == TAG_DONE) {
        atomic_fetch_add(&a->done_marks, 1);
    } else {
        atomic_fetch_add(&a->others, 1);
    }
    return PX_OK;
}
static const px_behavior asker_b = {.name = "t.asker", .init = pxt_init_ptr_state,
                                    .receive = asker_receive};

/* Replies val+1 to each TAG_REQ; with the gate closed, parks first; with
 * notify set, sends TAG_DONE to the asker after replying. */
typedef struct echo {
    atomic_int gate_closed, blocked;
    atomic_int reply_err;
    atomic_int replied;
    int notify;
} echo;

static px_err echo_receive(px_ctx *ctx, px_msg *m) {
    echo *e = px_state(ctx);
    if (atomic_load(&e->gate_closed)) {
        atomic_store(&e->blocked, 1);
        PXT_POLL(!atomic_load(&e->gate_closed), 30000);
        atomic_store(&e->blocked, 0);
    }
    if (px_msg_tag(m) != TAG_REQ) {
        return PX_OK;
    }
    px_msg *out = NULL;
    px_msg_u64(&out, TAG_RESP, px_msg_get_u64(m) + 1);
    px_err err = px_reply(ctx, m, &out);
    if (err != PX_OK) {
        px_msg_free(out);
    }
    atomic_store(&e->reply_err, err);
    if (e->notify && !px_ref_is_nil(px_msg_sender(m))) {
        px_msg *d = NULL;
        px_msg_u64(&d, TAG_DONE, 0);
        if (px_send(ctx, px_msg_sender(m), &d) != PX_OK) {
            px_msg_free(d);
        }
    }
    atomic_fetch_add(&e->replied, 1);
    return PX_OK;
}
static const px_behavior echo_b = {.name = "t.echo", .init = pxt_init_ptr_state,
                                   .receive = echo_receive};

Test(core_actor, ask_from_an_actor_gets_a_reply_with_the_matching_corr, .timeout = 10) {
    px_system *sys = pxt_system();
    echo e = {0};
    px_ref er = pxt_spawn(sys, &echo_b, &e, NULL);
    asker a = {.target = er, .timeout_ms = 5000, .n_asks = 1};
    px_ref ar = pxt_spawn(sys, &asker_b, &a, NULL);
    pxt_send_u64(sys, ar, TAG_START, 0);
    PXT_AWAIT(atomic_load(&a.replies) == 1, 5000);
    cr_assert_eq(atomic_load(&a.ask_err), PX_OK);
    cr_assert_neq(a.corrs[0], 0, "an ask has a non-zero correlation id");
    cr_assert_eq(a.reply_corr[0], a.corrs[0], "reply corr %llu, ask corr %llu",
                 (unsigned long long)a.reply_corr[0], (unsigned long long)a.corrs[0]);
    cr_assert_eq(a.reply_val[0], 101);
    cr_assert(px_ref_eq(a.reply_sender[0], er), "the reply comes from the asked actor");
    cr_assert_eq(atomic_load(&e.reply_err), PX_OK);
    cr_assert_eq(atomic_load(&a.others), 0);
    px_system_free(sys);
    cr_assert_eq(atomic_load(&a.timeouts), 0, "exactly one of reply and timeout arrives");
}

Test(core_actor, concurrent_asks_get_distinct_corrs_and_each_its_own_reply, .timeout = 10) {
    px_system *sys = pxt_system();
    echo e = {0};
    px_ref er = pxt_spawn(sys, &echo_b, &e, NULL);
    asker a = {.target = er, .timeout_ms = 5000, .n_asks = MAX_ASKS};
    px_ref ar = pxt_spawn(sys, &asker_b, &a, NULL);
    pxt_send_u64(sys, ar, TAG_START, 0);
    PXT_AWAIT(atomic_load(&a.replies) == MAX_ASKS, 5000);
    cr_assert_eq(atomic_load(&a.ask_err), PX_OK);
    for (int i = 0; i < MAX_ASKS; i++) {
        for (int j = 0; j < i; j++) {
            cr_assert_neq(a.corrs[i], a.corrs[j], "asks %d and %d share a corr", i, j);
        }
        /* Replies come back in ask order (one sender, FIFO both ways). */
        cr_assert_eq(a.reply_corr[i], a.corrs[i]);
        cr_assert_eq(a.reply_val[i], 101 + (uint64_t)i);
    }
    px_system_free(sys);
    cr_assert_eq(atomic_load(&a.timeouts), 0);
}

Test(core_actor, ask_with_no_reply_delivers_one_ask_timeout_with_its_corr, .timeout = 10) {
    px_system *sys = pxt_system();
    pxt_rec *silent = pxt_rec_new();
    px_ref sr = pxt_rec_spawn(sys, silent, NULL);
    asker a = {.target = sr, .timeout_ms = 50, .n_asks = 1};
    px_ref ar = pxt_spawn(sys, &asker_b, &a, NULL);
    uint64_t t0 = PXT_STAT(sys, ask_timeouts);
    pxt_send_u64(sys, ar, TAG_START, 0);
    PXT_AWAIT(atomic_load(&a.timeouts) == 1, 5000);
    cr_assert_eq(atomic_load(&a.ask_err), PX_OK);
    cr_assert_eq(a.timeout_corr[0], a.corrs[0]);
    cr_assert_eq(atomic_load(&a.replies), 0);
    cr_assert_eq(pxt_rec_count(silent), 1, "the request itself was delivered");
    cr_assert_eq(PXT_STAT(sys, ask_timeouts) - t0, 1);
    /* No second timeout: a marker sent afterwards arrives with none before it. */
    pxt_send_u64(sys, ar, TAG_DONE, 0);
    PXT_AWAIT(atomic_load(&a.done_marks) == 1, 5000);
    cr_assert_eq(atomic_load(&a.timeouts), 1);
    px_system_free(sys);
    free(silent);
}

Test(core_actor, ask_to_a_stopped_actor_times_out, .timeout = 10) {
    px_system *sys = pxt_system();
    pxt_rec *r = pxt_rec_new();
    px_ref dead = pxt_rec_spawn(sys, r, NULL);
    cr_assert_eq(px_stop(sys, dead), PX_OK);
    PXT_AWAIT(!px_is_alive(sys, dead), 5000);
    asker a = {.target = dead, .timeout_ms = 50, .n_asks = 1};
    px_ref ar = pxt_spawn(sys, &asker_b, &a, NULL);
    pxt_send_u64(sys, ar, TAG_START, 0);
    PXT_AWAIT(atomic_load(&a.timeouts) == 1, 5000);
    cr_assert_eq(atomic_load(&a.ask_err), PX_OK, "a dead target is a dead letter, not an error");
    cr_assert_eq(a.timeout_corr[0], a.corrs[0]);
    cr_assert_eq(atomic_load(&a.replies), 0);
    px_system_free(sys);
    free(r);
}

Test(core_actor, ask_rejects_a_timeout_outside_its_range, .timeout = 10) {
    px_system *sys = pxt_system();
    pxt_rec *silent = pxt_rec_new();
    px_ref sr = pxt_rec_spawn(sys, silent, NULL);
    asker a = {.target = sr, .timeout_ms = 0, .n_asks = 1};
    px_ref ar = pxt_spawn(sys, &asker_b, &a, NULL);
    pxt_send_u64(sys, ar, TAG_START, 0);
    PXT_AWAIT(atomic_load(&a.asked) == 1, 5000);
    cr_assert_eq(atomic_load(&a.ask_err), PX_EINVAL, "timeout_ms=0 gave %s",
                 px_errname(atomic_load(&a.ask_err)));
    px_system_free(sys);
    free(silent);
}

Test(core_actor, late_reply_to_an_actor_ask_is_dropped_and_counted, .timeout = 15) {
    px_system *sys = pxt_system();
    echo e = {.notify = 1};
    atomic_store(&e.gate_closed, 1);
    px_ref er = pxt_spawn(sys, &echo_b, &e, NULL);
    asker a = {.target = er, .timeout_ms = 50, .n_asks = 1};
    px_ref ar = pxt_spawn(sys, &asker_b, &a, NULL);
    uint64_t late0 = PXT_STAT(sys, late_replies);
    pxt_send_u64(sys, ar, TAG_START, 0);
    PXT_AWAIT(atomic_load(&a.timeouts) == 1, 5000);
    PXT_AWAIT(atomic_load(&e.blocked) == 1, 5000);
    atomic_store(&e.gate_closed, 0); /* now the echo replies, too late */
    PXT_AWAIT(atomic_load(&a.done_marks) == 1, 5000);
    cr_assert_eq(atomic_load(&a.replies), 0, "a reply after the timeout must be dropped");
    cr_assert_eq(atomic_load(&e.reply_err), PX_OK, "a late reply is taken, like a dead letter");
    PXT_AWAIT(PXT_STAT(sys, late_replies) - late0 == 1, 5000);
    px_system_free(sys);
}

Test(core_actor, system_ask_blocks_for_the_reply_and_returns_it, .timeout = 10) {
    px_system *sys = pxt_system();
    echo e = {0};
    px_ref er = pxt_spawn(sys, &echo_b, &e, NULL);
    for (uint64_t i = 0; i < 20; i++) {
        px_msg *q = pxt_u64(TAG_REQ, i);
        px_msg *reply = NULL;
        px_err err = px_system_ask(sys, er, &q, 5000, &reply);
        cr_assert_eq(err, PX_OK, "px_system_ask: %s", px_errname(err));
        cr_assert_null(q, "the request was taken");
        cr_assert_not_null(reply);
        cr_assert_eq(px_msg_tag(reply), TAG_RESP);
        cr_assert_eq(px_msg_get_u64(reply), i + 1);
        px_msg_free(reply);
    }
    px_system_free(sys);
}

Test(core_actor, system_ask_without_reply_returns_etimedout_after_the_timeout, .timeout = 10) {
    px_system *sys = pxt_system();
    pxt_rec *silent = pxt_rec_new();
    px_ref sr = pxt_rec_spawn(sys, silent, NULL);
    px_msg *q = pxt_u64(TAG_REQ, 1);
    px_msg *reply = NULL;
    int64_t t0 = pxt_now_ms();
    px_err err = px_system_ask(sys, sr, &q, 100, &reply);
    int64_t took = pxt_now_ms() - t0;
    cr_assert_eq(err, PX_ETIMEDOUT, "got %s", px_errname(err));
    cr_assert_null(reply);
    cr_assert_geq(took, 95, "returned after %lld ms of a 100 ms timeout", (long long)took);
    cr_assert_lt(took, 5000);
    PXT_AWAIT(pxt_rec_count(silent) == 1, 5000);
    cr_assert_null(q, "the request was delivered, so the caller no longer owns it");
    px_system_free(sys);
    free(silent);
}

Test(core_actor, late_reply_to_a_system_ask_is_dropped_and_counted, .timeout = 15) {
    px_system *sys = pxt_system();
    echo e = {0};
    atomic_store(&e.gate_closed, 1);
    px_ref er = pxt_spawn(sys, &echo_b, &e, NULL);
    uint64_t late0 = PXT_STAT(sys, late_replies);
    uint64_t dead0 = PXT_STAT(sys, dead_letters);
    pxt_dl dl = {0};
    px_system_on_dead_letter(sys, pxt_dl_hook, &dl);
    px_msg *q = pxt_u64(TAG_REQ, 1);
    px_msg *reply = NULL;
    cr_assert_eq(px_system_ask(sys, er, &q, 50, &reply), PX_ETIMEDOUT);
    cr_assert_null(reply);
    PXT_AWAIT(atomic_load(&e.blocked) == 1, 5000);
    atomic_store(&e.gate_closed, 0);
    PXT_AWAIT(atomic_load(&e.replied) == 1, 5000);
    cr_assert_eq(atomic_load(&e.reply_err), PX_OK);
    PXT_AWAIT(PXT_STAT(sys, late_replies) - late0 == 1, 5000);
    cr_assert_eq(PXT_STAT(sys, dead_letters) - dead0, 0, "a late reply is not a dead letter");
    cr_assert_eq(atomic_load(&dl.count), 0,
                 "the dead-letter hook (once per dead letter) saw the late reply");
    /* A later ask still works and gets its own reply, not the late one. */
    q = pxt_u64(TAG_REQ, 41);
    cr_assert_eq(px_system_ask(sys, er, &q, 5000, &reply), PX_OK);
    cr_assert_eq(px_msg_get_u64(reply), 42);
    px_msg_free(reply);
    px_system_free(sys);
}

Test(core_actor, reply_to_a_request_without_sender_is_einval, .timeout = 10) {
    px_system *sys = pxt_system();
    echo e = {0};
    px_ref er = pxt_spawn(sys, &echo_b, &e, NULL);
    pxt_send_u64(sys, er, TAG_REQ, 1); /* plain send from outside: no sender */
    PXT_AWAIT(atomic_load(&e.replied) == 1, 5000);
    cr_assert_eq(atomic_load(&e.reply_err), PX_EINVAL);
    px_system_free(sys);
}

/* --- context rules ----------------------------------------------------- */

typedef struct ctxcheck {
    atomic_int done;
    atomic_int ask_err, shutdown_err, spawn_err;
    pxt_rec *rec;
    px_ref spawned;
} ctxcheck;
static px_err ctxcheck_receive(px_ctx *ctx, px_msg *m) {
    (void)m;
    ctxcheck *c = px_state(ctx);
    px_system *sys = px_ctx_system(ctx);
    px_msg *q = NULL;
    px_msg_u64(&q, 1, 1);
    px_msg *reply = NULL;
    atomic_store(&c->ask_err, px_system_ask(sys, px_self(ctx), &q, 10, &reply));
    px_msg_free(q);
    px_msg_free(reply);
    atomic_store(&c->shutdown_err, px_system_shutdown(sys));
    px_msg *arg = NULL;
    px_msg_u64(&arg, PXT_TAG_PTR, (uint64_t)(uintptr_t)c->rec);
    px_err e = px_system_spawn(sys, pxt_rec_behavior(), &arg, NULL, &c->spawned);
    px_msg_free(arg);
    atomic_store(&c->spawn_err, e);
    atomic_store(&c->done, 1);
    return PX_OK;
}
static const px_behavior ctxcheck_b = {.name = "t.ctxcheck", .init = pxt_init_ptr_state,
                                       .receive = ctxcheck_receive};

Test(core_actor, blocking_calls_from_actor_context_are_econtext, .timeout = 10) {
    px_system *sys = pxt_system();
    ctxcheck c = {.rec = pxt_rec_new()};
    px_ref cr = pxt_spawn(sys, &ctxcheck_b, &c, NULL);
    pxt_send_u64(sys, cr, TAG_START, 0);
    PXT_AWAIT(atomic_load(&c.done), 5000);
    cr_assert_eq(atomic_load(&c.ask_err), PX_ECONTEXT, "px_system_ask: %s",
                 px_errname(atomic_load(&c.ask_err)));
    cr_assert_eq(atomic_load(&c.shutdown_err), PX_ECONTEXT, "px_system_shutdown: %s",
                 px_errname(atomic_load(&c.shutdown_err)));
    /* The refused shutdown did nothing: the system still works. */
    pxt_send_u64(sys, cr, TAG_PLAIN, 0);
    cr_assert(px_is_alive(sys, cr));
    px_system_free(sys);
    free(c.rec);
}

Test(core_actor, system_spawn_from_actor_context_makes_a_top_level_actor, .timeout = 10) {
    px_system *sys = pxt_system();
    ctxcheck c = {.rec = pxt_rec_new()};
    px_ref cr = pxt_spawn(sys, &ctxcheck_b, &c, NULL);
    pxt_send_u64(sys, cr, TAG_START, 0);
    PXT_AWAIT(atomic_load(&c.done), 5000);
    cr_assert_eq(atomic_load(&c.spawn_err), PX_OK);
    cr_assert(px_ref_eq(c.rec->self, c.spawned));
    cr_assert(px_ref_eq(c.rec->parent, px_system_root(sys)), "parent is the root, not the caller");
    px_system_free(sys);
    free(c.rec);
}

/* --- stopping ---------------------------------------------------------- */

Test(core_actor, stop_runs_the_stop_callback_once_and_the_actor_dies, .timeout = 10) {
    px_system *sys = pxt_system();
    pxt_rec *r = pxt_rec_new();
    px_ref a = pxt_rec_spawn(sys, r, NULL);
    cr_assert_eq(px_stop(sys, a), PX_OK);
    PXT_AWAIT(atomic_load(&r->stopped) == 1, 5000);
    PXT_AWAIT(!px_is_alive(sys, a), 5000);
    PXT_AWAIT(pxt_live(sys) == 0, 5000);
    px_actor_stats st;
    cr_assert_eq(px_actor_stats_get(sys, a, &st), PX_EDEAD);
    cr_assert_eq(px_stop(sys, a), PX_EDEAD, "a second stop finds nobody");
    cr_assert_eq(pxt_stats(sys).stopped, 1);
    px_system_free(sys);
    cr_assert_eq(atomic_load(&r->stopped), 1, "stop ran once, not again at shutdown");
    free(r);
}

Test(core_actor, stop_of_a_nil_ref_is_refused, .timeout = 10) {
    px_system *sys = pxt_system();
    px_err e = px_stop(sys, PX_REF_NIL);
    cr_assert(e == PX_EDEAD || e == PX_EINVAL, "px_stop(nil): %s", px_errname(e));
    cr_assert_not(px_is_alive(sys, PX_REF_NIL));
    px_system_free(sys);
}

#define BUSY_N 10000

Test(core_actor, stop_during_a_busy_mailbox_loses_nothing, .timeout = 20) {
    px_system *sys = pxt_system();
    pxt_rec *r = pxt_rec_new();
    px_ref a = pxt_rec_spawn(sys, r, NULL);
    pxt_dl dl = {.watch = a};
    px_system_on_dead_letter(sys, pxt_dl_hook, &dl);
    uint64_t dead0 = PXT_STAT(sys, dead_letters);
    pxt_rec_park(sys, r, a, 2, 0);
    for (uint64_t i = 1; i < BUSY_N; i++) {
        pxt_send_u64(sys, a, 2, i);
    }
    cr_assert_eq(px_stop(sys, a), PX_OK);
    pxt_rec_open(r);
    PXT_AWAIT(atomic_load(&r->stopped) == 1, 10000);
    PXT_AWAIT(!px_is_alive(sys, a), 5000);
    PXT_AWAIT(pxt_rec_count(r) + (PXT_STAT(sys, dead_letters) - dead0) == BUSY_N, 5000);
    uint64_t processed = pxt_rec_count(r);
    uint64_t dead = PXT_STAT(sys, dead_letters) - dead0;
    cr_assert_eq(processed + dead, BUSY_N, "processed %llu + dead letters %llu != sent %d",
                 (unsigned long long)processed, (unsigned long long)dead, BUSY_N);
    cr_assert_lt(processed, BUSY_N, "the stop waited for the whole queue (%llu processed)",
                 (unsigned long long)processed);
    PXT_AWAIT(atomic_load(&dl.for_target) == dead, 5000);
    for (uint64_t i = 0; i < processed; i++) {
        cr_assert_eq(r->val[i], i, "processed messages are a prefix in order");
    }
    px_system_free(sys);
    free(r);
}

Test(core_actor, stop_self_stops_after_the_callback_and_the_rest_become_dead_letters,
     .timeout = 10) {
    px_system *sys = pxt_system();
    pxt_rec *r = pxt_rec_new();
    atomic_store(&r->stop_on_tag, 9);
    px_ref a = pxt_rec_spawn(sys, r, NULL);
    uint64_t dead0 = PXT_STAT(sys, dead_letters);
    pxt_rec_park(sys, r, a, 9, 0); /* this one asks to stop */
    for (int i = 1; i <= 5; i++) {
        pxt_send_u64(sys, a, 2, (uint64_t)i);
    }
    pxt_rec_open(r);
    PXT_AWAIT(atomic_load(&r->stopped) == 1, 5000);
    PXT_AWAIT(!px_is_alive(sys, a), 5000);
    cr_assert_eq(pxt_rec_count(r), 1, "nothing is received after px_stop_self's callback");
    PXT_AWAIT(PXT_STAT(sys, dead_letters) - dead0 == 5, 5000);
    px_system_free(sys);
    free(r);
}

/* --- failure ----------------------------------------------------------- */

Test(core_actor, receive_error_fails_and_stops_the_actor, .timeout = 10) {
    px_system *sys = pxt_system();
    pxt_rec *r = pxt_rec_new();
    atomic_store(&r->fail_on_tag, 7);
    px_ref a = pxt_rec_spawn(sys, r, NULL);
    uint64_t f0 = PXT_STAT(sys, failures);
    pxt_send_u64(sys, a, 2, 0);
    pxt_send_u64(sys, a, 7, 1);
    PXT_AWAIT(!px_is_alive(sys, a), 5000);
    PXT_AWAIT(atomic_load(&r->stopped) == 1, 5000);
    cr_assert_eq(PXT_STAT(sys, failures) - f0, 1);
    cr_assert_eq(pxt_rec_count(r), 2);
    px_system_free(sys);
    cr_assert_eq(atomic_load(&r->stopped), 1);
    free(r);
}

typedef struct failer {
    atomic_int received;
} failer;
static px_err failer_receive(px_ctx *ctx, px_msg *m) {
    (void)m;
    failer *f = px_state(ctx);
    atomic_fetch_add(&f->received, 1);
    px_fail(ctx, PX_ETYPE, "bad message %d", 42);
    return PX_OK;
}
static const px_behavior failer_b = {.name = "t.failer", .init = pxt_init_ptr_state,
                                     .receive = failer_receive};

Test(core_actor, px_fail_takes_effect_when_the_callback_returns, .timeout = 10) {
    px_system *sys = pxt_system();
    failer f = {0};
    px_ref a = pxt_spawn(sys, &failer_b, &f, NULL);
    uint64_t f0 = PXT_STAT(sys, failures);
    uint64_t d0 = PXT_STAT(sys, dead_letters);
    for (int i = 0; i < 4; i++) {
        pxt_send_u64(sys, a, 2, (uint64_t)i);
    }
    PXT_AWAIT(!px_is_alive(sys, a), 5000);
    PXT_AWAIT(PXT_STAT(sys, failures) - f0 == 1, 5000);
    PXT_AWAIT(PXT_STAT(sys, dead_letters) - d0 == 3, 5000);
    cr_assert_eq(atomic_load(&f.received), 1, "the failed actor received %d messages",
                 atomic_load(&f.received));
    px_system_free(sys);
}

/* --- dead letters ------------------------------------------------------ */

Test(core_actor, send_to_a_stopped_actor_is_a_counted_dead_letter_seen_by_the_hook,
     .timeout = 10) {
    px_system *sys = pxt_system();
    pxt_rec *r = pxt_rec_new();
    px_ref a = pxt_rec_spawn(sys, r, NULL);
    cr_assert_eq(px_stop(sys, a), PX_OK);
    PXT_AWAIT(!px_is_alive(sys, a), 5000);
    pxt_dl dl = {.watch = a};
    px_system_on_dead_letter(sys, pxt_dl_hook, &dl);
    uint64_t d0 = PXT_STAT(sys, dead_letters);
    px_msg *m = pxt_u64(0x4d4c, 1);
    cr_assert_eq(px_system_send(sys, a, &m), PX_OK, "delivery is at-most-once: PX_OK");
    cr_assert_null(m, "a dead letter is still taken");
    PXT_AWAIT(PXT_STAT(sys, dead_letters) - d0 == 1, 5000);
    PXT_AWAIT(atomic_load(&dl.for_target) == 1, 5000);
    cr_assert_eq(atomic_load(&dl.last_tag), 0x4d4c, "the hook sees the message");
    cr_assert_eq(pxt_rec_count(r), 0);
    /* Removing the hook: further dead letters are counted but not seen. */
    px_system_on_dead_letter(sys, NULL, NULL);
    pxt_send_u64(sys, a, 1, 2);
    PXT_AWAIT(PXT_STAT(sys, dead_letters) - d0 == 2, 5000);
    cr_assert_eq(atomic_load(&dl.count), 1);
    px_system_free(sys);
    free(r);
}

Test(core_actor, send_to_a_nil_or_unknown_ref_is_a_dead_letter_or_einval, .timeout = 10) {
    px_system *sys = pxt_system();
    px_ref root = px_system_root(sys);
    px_ref unknown = {root.node, root.node_inc, 0x00fffff0u, 1};
    uint64_t d0 = PXT_STAT(sys, dead_letters);
    px_msg *m = pxt_u64(1, 1);
    cr_assert_eq(px_system_send(sys, unknown, &m), PX_OK);
    cr_assert_null(m);
    PXT_AWAIT(PXT_STAT(sys, dead_letters) - d0 == 1, 5000);
    m = pxt_u64(1, 1);
    px_err e = px_system_send(sys, PX_REF_NIL, &m);
    cr_assert(e == PX_OK || e == PX_EINVAL, "send to nil: %s", px_errname(e));
    cr_assert((e == PX_OK) == (m == NULL), "the pointer is nulled iff the send succeeded");
    px_msg_free(m);
    px_system_free(sys);
}

Test(core_actor, send_to_another_incarnation_of_a_live_slot_never_reaches_it, .timeout = 10) {
    px_system *sys = pxt_system();
    pxt_rec *r = pxt_rec_new();
    px_ref a = pxt_rec_spawn(sys, r, NULL);
    pxt_dl dl = {0};
    px_ref older = a, newer = a;
    older.inc = a.inc - 1; /* wraps for inc 0: still another incarnation */
    newer.inc = a.inc + 1;
    dl.watch = older;
    px_system_on_dead_letter(sys, pxt_dl_hook, &dl);
    uint64_t d0 = PXT_STAT(sys, dead_letters);
    pxt_send_u64(sys, older, 1, 111);
    pxt_send_u64(sys, newer, 1, 222);
    pxt_send_u64(sys, a, 1, 333); /* same sender: arrives after anything above */
    PXT_AWAIT(pxt_rec_count(r) == 1, 5000);
    cr_assert_eq(r->val[0], 333, "a stale ref reached the live actor (got %llu)",
                 (unsigned long long)r->val[0]);
    PXT_AWAIT(PXT_STAT(sys, dead_letters) - d0 == 2, 5000);
    PXT_AWAIT(atomic_load(&dl.for_target) == 1, 5000);
    cr_assert_eq(atomic_load(&dl.count), 2);
    px_system_free(sys);
    free(r);
}

static atomic_int cnt_received;
static px_err cnt_receive(px_ctx *ctx, px_msg *m) {
    (void)ctx;
    (void)m;
    atomic_fetch_add(&cnt_received, 1);
    return PX_OK;
}
static const px_behavior cnt_b = {.name = "t.cnt", .receive = cnt_receive};

/* Spawns a top-level cnt_b actor on each message, from its worker (slot
 * reuse is easiest to provoke where slots are freed: on the workers). */
typedef struct churner {
    atomic_int done;
    atomic_int err;
    px_ref last;
} churner;
static px_err churner_receive(px_ctx *ctx, px_msg *m) {
    (void)m;
    churner *c = px_state(ctx);
    atomic_store(&c->err, px_system_spawn(px_ctx_system(ctx), &cnt_b, NULL, NULL, &c->last));
    atomic_fetch_add(&c->done, 1);
    return PX_OK;
}
static const px_behavior churner_b = {.name = "t.churner", .init = pxt_init_ptr_state,
                                      .receive = churner_receive};

Test(core_actor, send_to_an_older_incarnation_of_a_reused_slot_is_a_dead_letter,
     .timeout = 30) {
    px_config cfg;
    pxt_config(&cfg);
    cfg.workers = 1;
    px_system *sys = pxt_system_with(&cfg);
    churner ch = {0};
    px_ref cr = pxt_spawn(sys, &churner_b, &ch, NULL);
    px_ref old = PX_REF_NIL;
    cr_assert_eq(px_system_spawn(sys, &cnt_b, NULL, NULL, &old), PX_OK);
    cr_assert_eq(px_stop(sys, old), PX_OK);
    PXT_AWAIT(!px_is_alive(sys, old), 5000);
    px_ref reuse = PX_REF_NIL;
    for (int i = 0; i < 2000; i++) {
        pxt_send_u64(sys, cr, 1, 0);
        PXT_AWAIT(atomic_load(&ch.done) == i + 1, 5000);
        cr_assert_eq(atomic_load(&ch.err), PX_OK);
        px_ref n = ch.last;
        if (n.id == old.id) {
            reuse = n;
            break;
        }
        cr_assert_eq(px_stop(sys, n), PX_OK);
        PXT_AWAIT(!px_is_alive(sys, n), 5000);
    }
    if (px_ref_is_nil(reuse)) {
        px_system_free(sys);
        cr_skip_test("slot %u was not reused within 2000 spawns", old.id);
    }
    cr_assert_neq(reuse.inc, old.inc, "a reused slot has a new incarnation");
    cr_assert_not(px_is_alive(sys, old));
    cr_assert(px_is_alive(sys, reuse));
    uint64_t d0 = PXT_STAT(sys, dead_letters);
    pxt_send_u64(sys, old, 1, 1);
    PXT_AWAIT(PXT_STAT(sys, dead_letters) - d0 == 1, 5000);
    pxt_send_u64(sys, reuse, 1, 2);
    PXT_AWAIT(atomic_load(&cnt_received) >= 1, 5000);
    cr_assert_eq(atomic_load(&cnt_received), 1, "the old ref's message reached the new actor");
    cr_assert_eq(px_stop(sys, old), PX_EDEAD, "px_stop through the old ref finds nobody");
    cr_assert(px_is_alive(sys, reuse), "and does not stop the new occupant");
    px_system_free(sys);
}

/* --- children ---------------------------------------------------------- */

Test(core_actor, a_child_knows_its_parent_and_stops_before_it, .timeout = 10) {
    px_system *sys = pxt_system();
    atomic_uint_least64_t order = 0;
    pxt_node n[3];
    px_ref top = pxt_chain(sys, n, 3, &order);
    cr_assert(px_ref_eq(n[0].parent, px_system_root(sys)));
    cr_assert(px_ref_eq(n[1].parent, n[0].self));
    cr_assert(px_ref_eq(n[2].parent, n[1].self));
    cr_assert(px_ref_eq(n[0].child_ref, n[1].self));
    cr_assert(px_is_alive(sys, n[2].self));
    cr_assert_eq(pxt_live(sys), 3);
    cr_assert_eq(px_stop(sys, top), PX_OK);
    PXT_AWAIT(atomic_load(&n[0].stopped) == 1, 5000);
    cr_assert_eq(atomic_load(&n[1].stopped), 1, "the child stopped before the parent's stop ran");
    cr_assert_eq(atomic_load(&n[2].stopped), 1);
    uint64_t s0 = atomic_load(&n[0].stop_seq), s1 = atomic_load(&n[1].stop_seq),
             s2 = atomic_load(&n[2].stop_seq);
    cr_assert(s2 < s1 && s1 < s0, "stop order grandchild=%llu child=%llu parent=%llu",
              (unsigned long long)s2, (unsigned long long)s1, (unsigned long long)s0);
    PXT_AWAIT(!px_is_alive(sys, n[2].self) && !px_is_alive(sys, n[1].self) &&
                  !px_is_alive(sys, top),
              5000);
    px_system_free(sys);
}

Test(core_actor, stopping_a_child_leaves_its_parent_alive, .timeout = 10) {
    px_system *sys = pxt_system();
    atomic_uint_least64_t order = 0;
    pxt_node n[2];
    px_ref top = pxt_chain(sys, n, 2, &order);
    cr_assert_eq(px_stop(sys, n[1].self), PX_OK);
    PXT_AWAIT(atomic_load(&n[1].stopped) == 1, 5000);
    PXT_AWAIT(!px_is_alive(sys, n[1].self), 5000);
    cr_assert(px_is_alive(sys, top));
    cr_assert_eq(atomic_load(&n[0].stopped), 0);
    px_system_free(sys);
}

/* --- remote refs and the router ---------------------------------------- */

typedef struct rt {
    atomic_int calls;
    px_ref last_to;
    atomic_uint_least64_t last_val;
    px_err ret;
} rt;
static px_err rt_send(void *arg, px_ref to, px_msg *m) {
    rt *r = arg;
    r->last_to = to;
    atomic_store(&r->last_val, px_msg_get_u64(m));
    atomic_fetch_add(&r->calls, 1);
    if (r->ret == PX_OK) {
        px_msg_free(m);
    }
    return r->ret;
}

static px_ref remote_ref(px_system *sys) {
    px_ref root = px_system_root(sys);
    return (px_ref){root.node + 1, 7, 5, 1};
}

Test(core_actor, send_to_a_remote_ref_without_a_router_is_eunreachable, .timeout = 10) {
    px_system *sys = pxt_system();
    px_msg *m = pxt_u64(1, 1);
    px_msg *orig = m;
    cr_assert_eq(px_system_send(sys, remote_ref(sys), &m), PX_EUNREACHABLE);
    cr_assert_eq(m, orig, "the caller keeps the message");
    px_msg_free(m);
    px_system_free(sys);
}

Test(core_actor, send_to_a_remote_ref_goes_through_the_installed_router, .timeout = 10) {
    px_system *sys = pxt_system();
    rt r = {.ret = PX_OK};
    px_router router = {.send = rt_send, .arg = &r};
    px_system_set_router(sys, &router);
    px_ref to = remote_ref(sys);
    px_msg *m = pxt_u64(1, 77);
    cr_assert_eq(px_system_send(sys, to, &m), PX_OK);
    cr_assert_null(m);
    cr_assert_eq(atomic_load(&r.calls), 1);
    cr_assert(px_ref_eq(r.last_to, to));
    cr_assert_eq(atomic_load(&r.last_val), 77);
    /* Local sends do not touch the router. */
    pxt_rec *rec = pxt_rec_new();
    px_ref a = pxt_rec_spawn(sys, rec, NULL);
    pxt_send_u64(sys, a, 1, 1);
    PXT_AWAIT(pxt_rec_count(rec) == 1, 5000);
    cr_assert_eq(atomic_load(&r.calls), 1);
    /* A router error reaches the caller, who keeps the message. */
    r.ret = PX_EUNREACHABLE;
    m = pxt_u64(1, 78);
    cr_assert_eq(px_system_send(sys, to, &m), PX_EUNREACHABLE);
    cr_assert_not_null(m);
    px_msg_free(m);
    /* Removing the router. */
    px_system_set_router(sys, NULL);
    m = pxt_u64(1, 79);
    cr_assert_eq(px_system_send(sys, to, &m), PX_EUNREACHABLE);
    cr_assert_eq(atomic_load(&r.calls), 2);
    px_msg_free(m);
    px_system_free(sys);
    free(rec);
}

/* px_system_set_router returns only once no call is inside the old table:
 * a send held inside it keeps the setter waiting while new sends already
 * see the new table (none: PX_EUNREACHABLE). */
static atomic_int hold_in, hold_go, set_back;
static px_err hold_send(void *arg, px_ref to, px_msg *m) {
    (void)arg;
    (void)to;
    atomic_store(&hold_in, 1);
    for (int64_t until = pxt_now_ns() + 10000000000; !atomic_load(&hold_go) &&
                                                     pxt_now_ns() < until;) {
    }
    px_msg_free(m);
    return PX_OK;
}
static px_system *hold_sys;
static void *hold_sender(void *arg) {
    px_msg *m = pxt_u64(1, 1);
    if (px_system_send(hold_sys, *(px_ref *)arg, &m) != PX_OK) {
        px_msg_free(m);
    }
    return NULL;
}
static void *hold_setter(void *arg) {
    (void)arg;
    px_system_set_router(hold_sys, NULL);
    atomic_store(&set_back, 1);
    return NULL;
}

Test(core_actor, removing_the_router_waits_for_calls_inside_it_and_new_calls_miss_it,
     .timeout = 30) {
    hold_sys = pxt_system();
    px_router router = {.send = hold_send};
    px_system_set_router(hold_sys, &router);
    px_ref to = remote_ref(hold_sys);
    pthread_t snd, set;
    pthread_create(&snd, NULL, hold_sender, &to);
    PXT_AWAIT(atomic_load(&hold_in) == 1, 5000); /* a send is inside the router */
    pthread_create(&set, NULL, hold_setter, NULL);
    /* The swap happens at once: a new send finds no router... */
    px_router now = router;
    PXT_AWAIT((px_system_get_router(hold_sys, &now), now.send == NULL), 5000);
    px_msg *m = pxt_u64(1, 2);
    cr_assert_eq(px_system_send(hold_sys, to, &m), PX_EUNREACHABLE,
                 "a send after the swap finds no router");
    px_msg_free(m);
    /* ...but the setter waits for the held call (given 200 ms to be wrong). */
    for (int64_t until = pxt_now_ns() + 200000000; pxt_now_ns() < until;) {
        cr_assert_eq(atomic_load(&set_back), 0, "set_router returned with a call inside");
    }
    atomic_store(&hold_go, 1);
    PXT_AWAIT(atomic_load(&set_back) == 1, 5000);
    pthread_join(snd, NULL);
    pthread_join(set, NULL);
    px_system_free(hold_sys);
}

/* Swapping to another table under steady sends from several threads ends:
 * the setter waits for the old table's calls only. */
static atomic_int busy_stop;
static px_err busy_send(void *arg, px_ref to, px_msg *m) {
    (void)to;
    atomic_fetch_add((atomic_int *)arg, 1);
    for (int64_t until = pxt_now_ns() + 20000; pxt_now_ns() < until;) {
    } /* a 20 us call: calls overlap across the threads */
    px_msg_free(m);
    return PX_OK;
}
static void *busy_sender(void *arg) {
    px_ref to = *(px_ref *)arg;
    while (!atomic_load(&busy_stop)) {
        px_msg *m = pxt_u64(1, 1);
        if (px_system_send(hold_sys, to, &m) != PX_OK) {
            px_msg_free(m);
        }
    }
    return NULL;
}

Test(core_actor, swapping_routers_under_steady_sends_from_threads_ends, .timeout = 60) {
    hold_sys = pxt_system();
    atomic_int na = 0, nb = 0;
    px_router ra = {.send = busy_send, .arg = &na}, rb = {.send = busy_send, .arg = &nb};
    px_system_set_router(hold_sys, &ra);
    px_ref to = remote_ref(hold_sys);
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        pthread_create(&th[i], NULL, busy_sender, &to);
    }
    PXT_AWAIT(atomic_load(&na) > 1000, 5000);
    for (int i = 0; i < 6; i++) {
        int64_t t0 = pxt_now_ns();
        px_system_set_router(hold_sys, i % 2 == 0 ? &rb : &ra);
        int64_t ms = (pxt_now_ns() - t0) / 1000000;
        cr_assert_lt(ms, 2000, "swap %d took %lld ms", i, (long long)ms);
        atomic_int *now = i % 2 == 0 ? &nb : &na;
        int before = atomic_load(now);
        PXT_AWAIT(atomic_load(now) > before + 100, 5000); /* the new table is used */
    }
    atomic_store(&busy_stop, 1);
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
    }
    px_system_set_router(hold_sys, NULL);
    px_system_free(hold_sys);
}

/* --- asks racing their timeouts ---------------------------------------- */

#define RACE_ASKS 300

/* Issues RACE_ASKS asks at once and records, per ask, how many replies and
 * timeouts it got. */
typedef struct racer {
    px_ref target;
    uint32_t timeout_ms;
    uint64_t corrs[RACE_ASKS];
    atomic_int outcome_reply[RACE_ASKS];
    atomic_int outcome_timeout[RACE_ASKS];
    atomic_int unknown;       /* a reply/timeout with a corr we never asked */
    atomic_int timeout_is_reply; /* an ASK_TIMEOUT that claimed to be a reply */
    atomic_int ask_err;
    atomic_int settled;       /* replies + timeouts */
} racer;

static int racer_index(racer *rc, uint64_t corr) {
    for (int i = 0; i < RACE_ASKS; i++) {
        if (rc->corrs[i] == corr) {
            return i;
        }
    }
    return -1;
}

static px_err racer_receive(px_ctx *ctx, px_msg *m) {
    racer *rc = px_state(ctx);
    if (px_msg_kind_of(m) == PX_MSG_ASK_TIMEOUT || px_msg_is_reply(m)) {
        int i = racer_index(rc, px_msg_corr(m));
        if (i < 0) {
            atomic_fetch_add(&rc->unknown, 1);
        } else if (px_msg_kind_of(m) == PX_MSG_ASK_TIMEOUT) {
            if (px_msg_is_reply(m)) {
                atomic_fetch_add(&rc->timeout_is_reply, 1);
            }
            atomic_fetch_add(&rc->outcome_timeout[i], 1);
        } else {
            atomic_fetch_add(&rc->outcome_reply[i], 1);
        }
        atomic_fetch_add(&rc->settled, 1);
        return PX_OK;
    }
    for (int i = 0; i < RACE_ASKS; i++) {
        px_msg *q = NULL;
        px_msg_u64(&q, TAG_REQ, (uint64_t)i);
        px_err e = px_ask(ctx, rc->target, &q, rc->timeout_ms, &rc->corrs[i]);
        if (e != PX_OK) {
            atomic_store(&rc->ask_err, e);
            px_msg_free(q);
        }
    }
    return PX_OK;
}
static const px_behavior racer_b = {.name = "t.racer", .init = pxt_init_ptr_state,
                                    .receive = racer_receive};

/* An echo that spins ~100 us per request (simulated work) before replying. */
static atomic_int slow_echo_replied;
static px_err slow_echo_receive(px_ctx *ctx, px_msg *m) {
    int64_t until = pxt_now_ns() + 100000;
    while (pxt_now_ns() < until) {
    }
    px_msg *out = NULL;
    px_msg_u64(&out, TAG_RESP, px_msg_get_u64(m));
    if (px_reply(ctx, m, &out) != PX_OK) {
        px_msg_free(out);
    }
    atomic_fetch_add(&slow_echo_replied, 1);
    return PX_OK;
}
static const px_behavior slow_echo_b = {.name = "t.slowecho", .receive = slow_echo_receive};

Test(core_actor, each_ask_gets_exactly_one_of_reply_or_timeout_when_they_race, .timeout = 30) {
    px_system *sys = pxt_system();
    px_ref er = PX_REF_NIL;
    cr_assert_eq(px_system_spawn(sys, &slow_echo_b, NULL, NULL, &er), PX_OK);
    racer *rc = calloc(1, sizeof *rc);
    rc->target = er;
    rc->timeout_ms = 15; /* the echo needs ~30 ms for all: about half time out */
    px_ref rr = pxt_spawn(sys, &racer_b, rc, NULL);
    px_system_stats st0 = pxt_stats(sys);
    pxt_send_u64(sys, rr, TAG_START, 0);
    PXT_AWAIT(atomic_load(&rc->settled) >= RACE_ASKS, 20000);
    PXT_AWAIT(atomic_load(&slow_echo_replied) == RACE_ASKS, 20000);
    cr_assert_eq(atomic_load(&rc->ask_err), PX_OK);
    int replies = 0, timeouts = 0;
    for (int i = 0; i < RACE_ASKS; i++) {
        int r = atomic_load(&rc->outcome_reply[i]), t = atomic_load(&rc->outcome_timeout[i]);
        cr_assert_eq(r + t, 1, "ask %d got %d replies and %d timeouts", i, r, t);
        replies += r;
        timeouts += t;
    }
    cr_assert_eq(atomic_load(&rc->unknown), 0);
    cr_assert_eq(atomic_load(&rc->timeout_is_reply), 0, "an ASK_TIMEOUT is not a reply");
    /* Every timed-out ask was answered late: each late reply is counted. */
    PXT_AWAIT(PXT_STAT(sys, late_replies) - st0.late_replies == (uint64_t)timeouts, 5000);
    cr_assert_eq(PXT_STAT(sys, ask_timeouts) - st0.ask_timeouts, (uint64_t)timeouts);
    cr_assert_eq(atomic_load(&rc->settled), RACE_ASKS, "more outcomes arrived later");
    cr_log_info("race: %d replies, %d timeouts", replies, timeouts);
    px_system_free(sys);
    free(rc);
}

typedef struct sys_asker {
    px_system *sys;
    px_ref to;
    int base;
    int errors, mismatches;
} sys_asker;

static void *sys_ask_thread(void *p) {
    sys_asker *a = p;
    for (int i = 0; i < 500; i++) {
        px_msg *q = NULL;
        px_msg_u64(&q, TAG_REQ, (uint64_t)(a->base + i));
        px_msg *reply = NULL;
        if (px_system_ask(a->sys, a->to, &q, 10000, &reply) != PX_OK) {
            a->errors++;
            px_msg_free(q);
        } else if (px_msg_get_u64(reply) != (uint64_t)(a->base + i) + 1) {
            a->mismatches++;
        }
        px_msg_free(reply);
    }
    return NULL;
}

Test(core_actor, concurrent_system_asks_each_get_their_own_reply, .timeout = 30) {
    px_system *sys = pxt_system();
    echo e = {0};
    px_ref er = pxt_spawn(sys, &echo_b, &e, NULL);
    sys_asker a[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (sys_asker){.sys = sys, .to = er, .base = i * 100000};
        cr_assert_eq(pthread_create(&th[i], NULL, sys_ask_thread, &a[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(a[i].errors, 0, "thread %d: %d asks failed", i, a[i].errors);
        cr_assert_eq(a[i].mismatches, 0, "thread %d got %d replies meant for others", i,
                     a[i].mismatches);
    }
    cr_assert_eq(PXT_STAT(sys, late_replies), 0);
    px_system_free(sys);
}

/* --- failure and children ---------------------------------------------- */

/* The default directive is Restart: the failed actor's children stop
 * first, then its old instance's `stop` runs, and the same ref lives on. */
Test(core_actor, a_failing_actor_is_restarted_after_its_children_stop_and_its_parent_lives,
     .timeout = 10) {
    px_system *sys = pxt_system();
    atomic_uint_least64_t order = 0;
    pxt_node n[3];
    px_ref top = pxt_chain(sys, n, 3, &order);
    uint64_t f0 = PXT_STAT(sys, failures);
    uint64_t r0 = PXT_STAT(sys, restarts);
    pxt_send_u64(sys, n[1].self, PXT_TAG_FAIL, 0);
    PXT_AWAIT(atomic_load(&n[1].stopped) == 1, 5000);
    cr_assert_eq(atomic_load(&n[2].stopped), 1, "the child's stop ran before its parent's");
    cr_assert_lt(atomic_load(&n[2].stop_seq), atomic_load(&n[1].stop_seq));
    PXT_AWAIT(PXT_STAT(sys, restarts) - r0 == 1, 5000);
    PXT_AWAIT(!px_is_alive(sys, n[2].self), 5000);
    cr_assert(px_is_alive(sys, n[1].self), "the restarted actor keeps its ref");
    cr_assert_eq(PXT_STAT(sys, failures) - f0, 1, "one failure (the child only stopped)");
    cr_assert(px_is_alive(sys, top), "the parent of a failed actor lives on");
    cr_assert_eq(atomic_load(&n[0].stopped), 0);
    px_system_free(sys);
    cr_assert_eq(atomic_load(&n[0].stopped), 1);
}
