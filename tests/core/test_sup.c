/* Tests for plexus/supervisor.h: px_spawn_child and px_children, the four
 * directives, strategies, restart limits, restart types, backoff, the
 * circuit breaker, the root guardian and a failure storm.
 *
 * Supervision calls (px_spawn_child, px_child, px_children) are actor
 * context only, so a "parent" actor (struct par) does them on command
 * messages and copies what it got into its test-owned struct; the test
 * thread waits on an atomic counter and then asserts. Children ("kids")
 * record every init, stop and message in a test-owned struct kid that
 * survives restarts (the start argument points at it). */
#include <malloc.h>
#include <sys/types.h>

#if defined(__SANITIZE_ADDRESS__)
/* From ASan's runtime (its header ships with clang, not with Debian's gcc). */
size_t __sanitizer_get_current_allocated_bytes(void);
#endif

#include "helpers.h"

enum {
    TAG_SPAWN = 1,    /* par: spawn every spec */
    TAG_QUERY = 2,    /* par: px_child(query_id) + px_children */
    TAG_COUNT = 3,    /* kid: ++counter of this instance */
    TAG_FAIL = 4,     /* kid: return PX_EFAIL */
    TAG_PXFAIL = 5,   /* kid: px_fail(fail_code, "...exploded on purpose") */
    TAG_STOPSELF = 6, /* kid: px_stop_self */
    TAG_REC = 7,      /* kid: record the value */
    TAG_ECHO = 8,     /* echo: reply value + 1 */
};

/* One global order stamp for stop callbacks (per test process). */
static atomic_uint_least64_t g_seq;

/* A global ordered log of kid inits and stops (strategy tests). */
#define LOG_MAX 64
#define LOG_INIT 1
#define LOG_STOP 2
static atomic_int slog[LOG_MAX];
static atomic_int slog_n;
static void slog_add(int kind, int idx) {
    int i = atomic_fetch_add(&slog_n, 1);
    if (i < LOG_MAX) {
        atomic_store(&slog[i], kind << 8 | idx);
    }
}
static int slog_entry(int kind, int idx) { return kind << 8 | idx; }
static const char *slog_fmt(char *buf, size_t len, int n) {
    size_t off = 0;
    buf[0] = 0;
    for (int i = 0; i < n && i < LOG_MAX && off < len; i++) {
        int e = atomic_load(&slog[i]);
        off += (size_t)snprintf(buf + off, len - off, "%s%s c%d", i ? "," : "",
                                (e >> 8) == LOG_INIT ? "init" : (e >> 8) == LOG_STOP ? "stop" : "?",
                                e & 0xff);
    }
    return buf;
}

/* --- the kid: a supervised child -------------------------------------- */

#define KID_VALS 4096
typedef struct kid {
    int idx;   /* for the log (1..); 0 = not logged */
    int logit; /* write inits/stops into slog */
    px_err fail_code; /* for TAG_PXFAIL */
    atomic_int inits, stops, msgs, fails;
    atomic_int last_count, last_inst;
    atomic_uint_least64_t stop_seq;
    px_ref self; /* set by each instance's init, before inits is bumped */
    int64_t init_ms[32];
    atomic_int_least64_t fail_ms;
    /* init self-sends TAG_FAIL while its instance number <= fail_first_upto */
    atomic_int fail_first_upto;
    /* init of instance >= 2 blocks while gate_closed (bounded, 10 s) */
    atomic_int gate_closed, in_gate, gate_timeouts;
    uint64_t vals[KID_VALS];
    uint32_t val_inst[KID_VALS];
    atomic_int nvals;
} kid;

typedef struct inst {
    kid *k;
    int n; /* instance number */
    uint64_t counter;
} inst;

static kid *kid_new(int idx) {
    kid *k = calloc(1, sizeof *k);
    cr_assert_not_null(k);
    k->idx = idx;
    k->fail_code = PX_ETYPE;
    return k;
}

static px_err kid_init(px_ctx *ctx, const px_msg *arg) {
    kid *k = pxt_msg_ptr(arg);
    if (!k) {
        return PX_EINVAL;
    }
    inst *s = calloc(1, sizeof *s);
    if (!s) {
        return PX_ENOMEM;
    }
    int n = atomic_load(&k->inits) + 1;
    s->k = k;
    s->n = n;
    if (n <= 32) {
        k->init_ms[n - 1] = pxt_now_ms();
    }
    if (n >= 2 && atomic_load(&k->gate_closed)) {
        atomic_store(&k->in_gate, 1);
        if (!PXT_POLL(!atomic_load(&k->gate_closed), 10000)) {
            atomic_fetch_add(&k->gate_timeouts, 1);
        }
        atomic_store(&k->in_gate, 0);
    }
    px_set_state(ctx, s);
    k->self = px_self(ctx);
    if (k->logit) {
        slog_add(LOG_INIT, k->idx);
    }
    if (n <= atomic_load(&k->fail_first_upto)) {
        px_msg *m = NULL;
        if (px_msg_u64(&m, TAG_FAIL, (uint64_t)n) == PX_OK && px_send(ctx, px_self(ctx), &m) != PX_OK) {
            px_msg_free(m);
        }
    }
    atomic_store(&k->inits, n);
    return PX_OK;
}

static px_err kid_receive(px_ctx *ctx, px_msg *m) {
    inst *s = px_state(ctx);
    kid *k = s->k;
    atomic_fetch_add(&k->msgs, 1);
    switch (px_msg_tag(m)) {
    case TAG_COUNT:
        s->counter++;
        atomic_store(&k->last_inst, s->n);
        atomic_store(&k->last_count, (int)s->counter);
        return PX_OK;
    case TAG_FAIL:
        atomic_store(&k->fail_ms, pxt_now_ms());
        atomic_fetch_add(&k->fails, 1);
        return PX_EFAIL;
    case TAG_PXFAIL:
        atomic_store(&k->fail_ms, pxt_now_ms());
        atomic_fetch_add(&k->fails, 1);
        px_fail(ctx, k->fail_code, "kid %d exploded on purpose", k->idx);
        return PX_OK;
    case TAG_STOPSELF:
        px_stop_self(ctx);
        return PX_OK;
    case TAG_REC: {
        int i = atomic_load(&k->nvals);
        if (i < KID_VALS) {
            k->vals[i] = px_msg_get_u64(m);
            k->val_inst[i] = (uint32_t)s->n;
        }
        atomic_store(&k->nvals, i + 1);
        return PX_OK;
    }
    default:
        return PX_OK;
    }
}

static void kid_stop(px_ctx *ctx) {
    inst *s = px_state(ctx);
    if (!s) {
        return;
    }
    kid *k = s->k;
    if (k->logit) {
        slog_add(LOG_STOP, k->idx);
    }
    atomic_store(&k->stop_seq, atomic_fetch_add(&g_seq, 1) + 1);
    free(s);
    px_set_state(ctx, NULL);
    atomic_fetch_add(&k->stops, 1);
}

static const px_behavior kid_b = {
    .name = "t.kid", .init = kid_init, .receive = kid_receive, .stop = kid_stop};

/* --- the par: a supervising parent ------------------------------------ */

#define MAXK 8
typedef struct par {
    /* set by the test before a command */
    int nspecs;
    px_child_spec specs[MAXK];
    void *args[MAXK]; /* the start argument's pointer (kid * or par *) */
    px_restart_policy pol[MAXK];
    int spawn_in_init;    /* spawn every spec in init (every instance) */
    atomic_int directive; /* what the decider answers; 0 = Restart */
    char query_id[64];
    /* results */
    atomic_int inits, stops;
    atomic_uint_least64_t stop_seq;
    px_ref self;
    px_err errs[MAXK];
    int arg_kept[MAXK];
    px_ref refs[MAXK];
    uint64_t spawned_delta[MAXK];
    atomic_int spawns_done;
    /* the decider's last call */
    atomic_int decided;
    px_ref f_child;
    char f_id[64];
    px_err f_code;
    int f_has_cause;
    px_ref cause_child;
    char cause_id[64];
    px_err cause_code;
    /* the last query */
    px_err q_err, qs_err;
    px_child_info info;
    px_child_info infos[MAXK];
    size_t n;
    atomic_int answers;
} par;

static par *par_new(void) {
    par *p = calloc(1, sizeof *p);
    cr_assert_not_null(p);
    return p;
}

/* Adds a spec (id, behavior) with the start argument pointer a; returns it
 * so the test can set restart type or policy. */
static px_child_spec *par_spec(par *p, const char *id, const char *behavior, void *a) {
    cr_assert(p->nspecs < MAXK);
    int i = p->nspecs++;
    p->specs[i] = (px_child_spec){.id = id, .behavior = behavior};
    p->args[i] = a;
    return &p->specs[i];
}

static px_restart_policy *par_policy(par *p, int i) {
    px_restart_policy_init(&p->pol[i]);
    p->specs[i].policy = &p->pol[i];
    return &p->pol[i];
}

static uint64_t spawned_now(px_ctx *ctx) {
    px_system_stats st;
    memset(&st, 0, sizeof st);
    px_system_stats_get(px_ctx_system(ctx), &st);
    return st.spawned;
}

static void par_spawn_all(px_ctx *ctx, par *p) {
    for (int i = 0; i < p->nspecs; i++) {
        px_msg *arg = NULL;
        if (p->args[i]) {
            px_msg_u64(&arg, PXT_TAG_PTR, (uint64_t)(uintptr_t)p->args[i]);
        }
        px_ref r = PX_REF_NIL;
        uint64_t s0 = spawned_now(ctx);
        p->errs[i] = px_spawn_child(ctx, &p->specs[i], &arg, &r);
        p->spawned_delta[i] = spawned_now(ctx) - s0;
        p->arg_kept[i] = arg != NULL;
        px_msg_free(arg);
        p->refs[i] = r;
    }
}

static px_err par_init(px_ctx *ctx, const px_msg *arg) {
    par *p = pxt_msg_ptr(arg);
    if (!p) {
        return PX_EINVAL;
    }
    px_set_state(ctx, p);
    p->self = px_self(ctx);
    if (p->spawn_in_init) {
        par_spawn_all(ctx, p);
    }
    atomic_fetch_add(&p->inits, 1);
    return PX_OK;
}

static px_err par_receive(px_ctx *ctx, px_msg *m) {
    par *p = px_state(ctx);
    switch (px_msg_tag(m)) {
    case TAG_SPAWN:
        par_spawn_all(ctx, p);
        atomic_fetch_add(&p->spawns_done, 1);
        return PX_OK;
    case TAG_QUERY:
        memset(&p->info, 0, sizeof p->info);
        p->q_err = px_child(ctx, p->query_id, &p->info);
        p->n = 0;
        p->qs_err = px_children(ctx, p->infos, MAXK, &p->n);
        atomic_fetch_add(&p->answers, 1);
        return PX_OK;
    case TAG_FAIL:
        return PX_EFAIL;
    default:
        return PX_OK;
    }
}

static void par_stop(px_ctx *ctx) {
    par *p = px_state(ctx);
    atomic_store(&p->stop_seq, atomic_fetch_add(&g_seq, 1) + 1);
    atomic_fetch_add(&p->stops, 1);
}

static px_directive par_decide(px_ctx *ctx, const px_failure *f) {
    par *p = px_state(ctx);
    p->f_child = f->child;
    snprintf(p->f_id, sizeof p->f_id, "%s", f->child_id ? f->child_id : "(null)");
    p->f_code = f->code;
    p->f_has_cause = f->cause != NULL;
    if (f->cause) {
        p->cause_child = f->cause->child;
        snprintf(p->cause_id, sizeof p->cause_id, "%s",
                 f->cause->child_id ? f->cause->child_id : "(null)");
        p->cause_code = f->cause->code;
    }
    atomic_fetch_add(&p->decided, 1);
    int d = atomic_load(&p->directive);
    return d ? (px_directive)d : PX_DIRECTIVE_RESTART;
}

/* Registered as "t.par" (decider par_decide, OneForOne). */
static const px_behavior par_b = {.name = "t.par", .init = par_init, .receive = par_receive,
                                  .stop = par_stop, .on_child_failure = par_decide};
/* No decider: the default (Restart). */
static const px_behavior par_default_b = {.name = "t.par.default", .init = par_init,
                                          .receive = par_receive, .stop = par_stop};
static const px_behavior par_all_b = {.name = "t.par.all", .init = par_init,
                                      .receive = par_receive, .stop = par_stop,
                                      .strategy = PX_ALL_FOR_ONE};
static const px_behavior par_rest_b = {.name = "t.par.rest", .init = par_init,
                                       .receive = par_receive, .stop = par_stop,
                                       .strategy = PX_REST_FOR_ONE};

/* AllForOne with a decider (for a Stop over all children). */
static const px_behavior par_all_decide_b = {.name = "t.par.all.decide", .init = par_init,
                                             .receive = par_receive, .stop = par_stop,
                                             .on_child_failure = par_decide,
                                             .strategy = PX_ALL_FOR_ONE};

static void register_all(px_system *sys) {
    cr_assert_eq(px_behavior_register(sys, &kid_b), PX_OK);
    cr_assert_eq(px_behavior_register(sys, &par_b), PX_OK);
}

static px_system *sup_system(void) {
    px_system *sys = pxt_system();
    register_all(sys);
    return sys;
}

/* Spawns p as a top-level actor of behavior b and waits for its init. */
static px_ref par_top(px_system *sys, const px_behavior *b, par *p) {
    px_ref r = pxt_spawn(sys, b, p, NULL);
    PXT_AWAIT(atomic_load(&p->inits) >= 1, 5000);
    return r;
}

/* Has p spawn its specs and waits until it did. */
static void par_do_spawn(px_system *sys, px_ref pref, par *p) {
    int d0 = atomic_load(&p->spawns_done);
    pxt_send_u64(sys, pref, TAG_SPAWN, 0);
    PXT_AWAIT(atomic_load(&p->spawns_done) > d0, 10000);
}

/* Asks p for px_child(id) and px_children and waits for the answer. */
static void par_query(px_system *sys, px_ref pref, par *p, const char *id) {
    snprintf(p->query_id, sizeof p->query_id, "%s", id);
    int a0 = atomic_load(&p->answers);
    pxt_send_u64(sys, pref, TAG_QUERY, 0);
    PXT_AWAIT(atomic_load(&p->answers) > a0, 5000);
}

/* Queries until the child `id` is in `state` (and, if breaker >= 0, its
 * breaker too), up to ms. Returns 1 if seen. */
static int par_query_until(px_system *sys, px_ref pref, par *p, const char *id,
                           px_child_state state, int breaker, int ms) {
    int64_t dl = pxt_now_ms() + ms;
    for (;;) {
        par_query(sys, pref, p, id);
        if (p->q_err == PX_OK && p->info.state == state &&
            (breaker < 0 || (int)p->info.breaker == breaker)) {
            return 1;
        }
        if (pxt_now_ms() > dl) {
            return 0;
        }
        pxt_nap();
    }
}

static void send_kid(px_system *sys, kid *k, uint32_t tag, uint64_t v) {
    pxt_send_u64(sys, k->self, tag, v);
}

/* The usual one-child setup: p (behavior b) goes up, spawns the single child
 * "k" (kid k, restart type `restart`) and the spawn must have succeeded.
 * Returns the parent's ref; the child's is p->refs[0]. */
static px_ref par_with_kid(px_system *sys, const px_behavior *b, par *p, kid *k,
                           px_restart_type restart) {
    px_ref pref = par_top(sys, b, p);
    par_spec(p, "k", "t.kid", k)->restart = restart;
    par_do_spawn(sys, pref, p);
    cr_assert_eq(p->errs[0], PX_OK);
    return pref;
}

/* --- 1. px_spawn_child and px_children -------------------------------- */

Test(core_sup, spawn_child_spawns_refuses_duplicates_and_unknown_behaviors_and_lists_children,
     .timeout = 15) {
    px_system *sys = sup_system();
    par *p = par_new();
    kid *ka = kid_new(1), *kb = kid_new(2), *kdup = kid_new(3), *kz = kid_new(4);
    px_ref pref = par_top(sys, &par_b, p);
    par_spec(p, "a", "t.kid", ka);
    par_spec(p, "b", "t.kid", kb);
    par_spec(p, "a", "t.kid", kdup);
    par_spec(p, "z", "t.no.such.behavior", kz);
    par_do_spawn(sys, pref, p);

    cr_assert_eq(p->errs[0], PX_OK, "spawn a: %s", px_errname(p->errs[0]));
    cr_assert_eq(p->errs[1], PX_OK, "spawn b: %s", px_errname(p->errs[1]));
    cr_assert_eq(p->errs[2], PX_EEXIST, "duplicate id: got %s", px_errname(p->errs[2]));
    cr_assert_eq(p->errs[3], PX_ENOENT, "unknown behavior: got %s", px_errname(p->errs[3]));
    cr_assert_eq(p->arg_kept[0], 0, "a successful px_spawn_child takes the argument");
    cr_assert_eq(p->arg_kept[1], 0);
    cr_assert_eq(p->arg_kept[2], 1, "on PX_EEXIST the caller still owns the argument");
    cr_assert_eq(p->arg_kept[3], 1, "on PX_ENOENT the caller still owns the argument");
    cr_assert_eq(p->spawned_delta[0], 1);
    cr_assert_eq(p->spawned_delta[2], 0, "a duplicate id spawns nothing");
    cr_assert_eq(p->spawned_delta[3], 0, "an unknown behavior spawns nothing");
    cr_assert(px_ref_is_nil(p->refs[2]) && px_ref_is_nil(p->refs[3]));
    cr_assert_eq(atomic_load(&kdup->inits), 0, "the duplicate's init never ran");
    cr_assert_eq(atomic_load(&kz->inits), 0);
    cr_assert_eq(atomic_load(&ka->inits), 1);
    cr_assert_eq(atomic_load(&kb->inits), 1);
    cr_assert(px_ref_eq(ka->self, p->refs[0]));
    cr_assert(px_is_alive(sys, p->refs[0]) && px_is_alive(sys, p->refs[1]));
    cr_assert_eq(pxt_spawned(sys), 3, "parent + 2 children, got %llu",
                 (unsigned long long)pxt_spawned(sys));

    par_query(sys, pref, p, "b");
    cr_assert_eq(p->qs_err, PX_OK);
    cr_assert_eq(p->n, 2, "px_children: %zu children", p->n);
    const char *ids[2] = {"a", "b"};
    for (int i = 0; i < 2; i++) {
        px_child_info *ci = &p->infos[i];
        cr_assert_str_eq(ci->id, ids[i], "children in start order");
        cr_assert(px_ref_eq(ci->ref, p->refs[i]));
        cr_assert_eq(ci->state, PX_CHILD_RUNNING, "state %d", ci->state);
        cr_assert_eq(ci->restart, PX_RESTART_PERMANENT);
        cr_assert_eq(ci->instance, 1);
        cr_assert_eq(ci->restarts, 0);
        cr_assert_eq(ci->failures, 0);
        cr_assert_eq(ci->breaker, PX_BREAKER_OFF);
    }
    cr_assert_eq(p->q_err, PX_OK);
    cr_assert_str_eq(p->info.id, "b");
    cr_assert(px_ref_eq(p->info.ref, p->refs[1]));
    par_query(sys, pref, p, "nope");
    cr_assert_eq(p->q_err, PX_ENOENT, "px_child of an unknown id: %s", px_errname(p->q_err));

    px_system_free(sys);
    cr_assert_eq(atomic_load(&ka->stops), 1);
    cr_assert_eq(atomic_load(&kb->stops), 1);
    free(ka), free(kb), free(kdup), free(kz), free(p);
}

/* --- 2. Resume ---------------------------------------------------------- */

Test(core_sup, resume_keeps_the_state_and_drops_the_failing_message, .timeout = 15) {
    px_system *sys = sup_system();
    par *p = par_new();
    kid *k = kid_new(1);
    atomic_store(&p->directive, PX_DIRECTIVE_RESUME);
    px_ref pref = par_with_kid(sys, &par_b, p, k, PX_RESTART_PERMANENT);
    uint64_t r0 = PXT_STAT(sys, resumed), rs0 = PXT_STAT(sys, restarts);

    for (int i = 0; i < 3; i++) {
        send_kid(sys, k, TAG_COUNT, 0);
    }
    send_kid(sys, k, TAG_FAIL, 0);
    send_kid(sys, k, TAG_COUNT, 0);
    PXT_AWAIT(atomic_load(&k->last_count) == 4, 5000);
    cr_assert_eq(atomic_load(&k->last_inst), 1, "the same instance goes on");
    cr_assert_eq(atomic_load(&p->decided), 1, "the decider ran once");
    cr_assert(px_ref_eq(p->f_child, p->refs[0]));
    cr_assert_str_eq(p->f_id, "k");
    cr_assert_eq(p->f_code, PX_EFAIL, "code %s", px_errname(p->f_code));
    cr_assert_eq(p->f_has_cause, 0, "a plain failure has no cause");
    cr_assert_eq(atomic_load(&k->fails), 1, "the failing message is dropped, not redelivered");
    cr_assert_eq(atomic_load(&k->msgs), 5);
    cr_assert_eq(atomic_load(&k->inits), 1);
    cr_assert_eq(atomic_load(&k->stops), 0, "no stop on Resume");
    PXT_AWAIT(PXT_STAT(sys, resumed) - r0 == 1, 5000);
    cr_assert_eq(PXT_STAT(sys, restarts), rs0);

    par_query(sys, pref, p, "k");
    cr_assert_eq(p->q_err, PX_OK);
    cr_assert_eq(p->info.instance, 1);
    cr_assert_eq(p->info.restarts, 0);
    cr_assert_eq(p->info.state, PX_CHILD_RUNNING);
    cr_assert_eq(p->info.failures, 1);

    px_system_free(sys);
    free(k), free(p);
}

/* --- 3. Restart (default decider) --------------------------------------- */

Test(core_sup, default_decider_restarts_with_a_fresh_instance_behind_the_same_ref,
     .timeout = 15) {
    px_system *sys = sup_system();
    par *p = par_new();
    kid *k = kid_new(1);
    px_ref pref = par_with_kid(sys, &par_default_b, p, k, PX_RESTART_PERMANENT);
    px_ref ref = p->refs[0];
    uint64_t rs0 = PXT_STAT(sys, restarts);

    send_kid(sys, k, TAG_COUNT, 0);
    send_kid(sys, k, TAG_COUNT, 0);
    PXT_AWAIT(atomic_load(&k->last_count) == 2, 5000);
    send_kid(sys, k, TAG_FAIL, 0);
    PXT_AWAIT(atomic_load(&k->inits) == 2, 5000);
    cr_assert_eq(atomic_load(&k->stops), 1, "the old instance's stop ran");
    cr_assert(px_ref_eq(k->self, ref), "the new instance has the same ref");
    PXT_AWAIT(PXT_STAT(sys, restarts) - rs0 == 1, 5000);

    pxt_send_u64(sys, ref, TAG_COUNT, 0);
    PXT_AWAIT(atomic_load(&k->last_inst) == 2, 5000);
    cr_assert_eq(atomic_load(&k->last_count), 1, "the new instance starts from a fresh state");
    cr_assert(px_is_alive(sys, ref));

    par_query(sys, pref, p, "k");
    cr_assert_eq(p->q_err, PX_OK);
    cr_assert_eq(p->info.instance, 2);
    cr_assert_eq(p->info.restarts, 1);
    cr_assert_eq(p->info.state, PX_CHILD_RUNNING);
    cr_assert(px_ref_eq(p->info.ref, ref));
    cr_assert_eq(p->info.failures, 1);
    cr_assert(p->info.last_failure_ms > 0, "last_failure_ms is set");

    px_system_free(sys);
    cr_assert_eq(atomic_load(&k->stops), 2);
    free(k), free(p);
}

typedef struct fail_seen {
    atomic_int n;
    px_ref who;
    px_err code;
    char beh[32];
} fail_seen;

static void on_failure_rec(void *arg, px_ref who, const char *behavior, px_err code,
                           const char *reason) {
    fail_seen *f = arg;
    (void)reason;
    f->who = who;
    f->code = code;
    snprintf(f->beh, sizeof f->beh, "%s", behavior);
    atomic_fetch_add(&f->n, 1); /* published last: the test reads after it */
}

Test(core_sup, the_failure_hook_sees_each_failure_once_with_who_and_code, .timeout = 15) {
    px_system *sys = sup_system();
    fail_seen seen = {0};
    px_system_on_failure(sys, on_failure_rec, &seen);
    par *p = par_new();
    kid *k = kid_new(1);
    (void)par_with_kid(sys, &par_default_b, p, k, PX_RESTART_PERMANENT);
    px_ref ref = p->refs[0];
    send_kid(sys, k, TAG_FAIL, 0);
    PXT_AWAIT(atomic_load(&k->inits) == 2, 5000);
    PXT_AWAIT(atomic_load(&seen.n) == 1, 5000);
    cr_assert(px_ref_eq(seen.who, ref));
    cr_assert_str_eq(seen.beh, kid_b.name);
    cr_assert_neq(seen.code, PX_OK);
    px_system_on_failure(sys, NULL, NULL);
    send_kid(sys, k, TAG_FAIL, 0);
    PXT_AWAIT(atomic_load(&k->inits) == 3, 5000);
    cr_assert_eq(atomic_load(&seen.n), 1, "a removed hook is not called");
    px_system_free(sys);
    free(k), free(p);
}

/* --- 4. Nothing is lost during a restart ------------------------------- */

Test(core_sup, messages_sent_while_a_child_restarts_reach_the_new_instance_in_order,
     .timeout = 20) {
    enum { N = 200 };
    px_system *sys = sup_system();
    par *p = par_new();
    kid *k = kid_new(1);
    par_with_kid(sys, &par_default_b, p, k, PX_RESTART_PERMANENT);
    px_ref ref = p->refs[0];
    uint64_t d0 = PXT_STAT(sys, dead_letters);

    atomic_store(&k->gate_closed, 1);
    send_kid(sys, k, TAG_FAIL, 0);
    PXT_AWAIT(atomic_load(&k->in_gate) == 1, 5000); /* instance 2's init is parked */
    for (uint64_t i = 0; i < N; i++) {
        pxt_send_u64(sys, ref, TAG_REC, i);
    }
    atomic_store(&k->gate_closed, 0);
    PXT_AWAIT(atomic_load(&k->nvals) == N, 10000);
    cr_assert_eq(atomic_load(&k->gate_timeouts), 0);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(k->vals[i], (uint64_t)i, "message %d carried %llu", i,
                     (unsigned long long)k->vals[i]);
        cr_assert_eq(k->val_inst[i], 2, "message %d was handled by instance %u", i,
                     k->val_inst[i]);
    }
    cr_assert_eq(PXT_STAT(sys, dead_letters), d0, "no message became a dead letter");
    cr_assert_eq(atomic_load(&k->inits), 2);
    cr_assert_eq(atomic_load(&k->stops), 1);

    px_system_free(sys);
    free(k), free(p);
}

/* --- 5. Stop ------------------------------------------------------------ */

Test(core_sup, stop_directive_stops_the_child_for_good_and_the_parent_lives, .timeout = 15) {
    px_system *sys = sup_system();
    par *p = par_new();
    kid *k = kid_new(1);
    atomic_store(&p->directive, PX_DIRECTIVE_STOP);
    px_ref pref = par_with_kid(sys, &par_b, p, k, PX_RESTART_PERMANENT);
    px_ref ref = p->refs[0];
    uint64_t rs0 = PXT_STAT(sys, restarts);

    send_kid(sys, k, TAG_FAIL, 0);
    PXT_AWAIT(atomic_load(&k->stops) == 1, 5000);
    PXT_AWAIT(!px_is_alive(sys, ref), 5000);
    int64_t dl = pxt_now_ms() + 5000;
    for (;;) {
        par_query(sys, pref, p, "k");
        if (p->n == 0 || pxt_now_ms() > dl) {
            break;
        }
        pxt_nap();
    }
    cr_assert_eq(p->n, 0, "px_children still lists %zu children", p->n);
    cr_assert_eq(p->q_err, PX_ENOENT, "px_child: %s", px_errname(p->q_err));
    cr_assert(!PXT_POLL(atomic_load(&k->inits) > 1, 100), "a stopped child is not restarted");
    cr_assert_eq(atomic_load(&k->stops), 1, "stop ran once");
    cr_assert_eq(PXT_STAT(sys, restarts), rs0);
    cr_assert(px_is_alive(sys, pref), "the parent lives");
    cr_assert_eq(atomic_load(&p->stops), 0);

    px_system_free(sys);
    cr_assert_eq(atomic_load(&k->stops), 1);
    free(k), free(p);
}

/* --- 6. Escalate over three levels ------------------------------------- */

Test(core_sup, escalate_passes_the_failure_up_and_the_grandparents_restart_takes_the_child_along,
     .timeout = 15) {
    px_system *sys = sup_system();
    par *a = par_new(), *b = par_new();
    kid *c = kid_new(1);
    atomic_store(&a->directive, PX_DIRECTIVE_RESTART);
    atomic_store(&b->directive, PX_DIRECTIVE_ESCALATE);
    b->spawn_in_init = 1;
    par_spec(b, "c", "t.kid", c);
    px_ref aref = par_top(sys, &par_b, a);
    par_spec(a, "b", "t.par", b);
    par_do_spawn(sys, aref, a);
    cr_assert_eq(a->errs[0], PX_OK, "spawn b: %s", px_errname(a->errs[0]));
    cr_assert_eq(b->errs[0], PX_OK, "spawn c: %s", px_errname(b->errs[0]));
    px_ref bref = a->refs[0], cref = b->refs[0];
    cr_assert(px_ref_eq(b->self, bref));
    cr_assert(px_ref_eq(c->self, cref));
    uint64_t e0 = PXT_STAT(sys, escalations);

    send_kid(sys, c, TAG_FAIL, 0);
    PXT_AWAIT(atomic_load(&a->decided) == 1, 5000);
    cr_assert_eq(atomic_load(&b->decided), 1, "B's decider saw C's failure first");
    cr_assert_str_eq(b->f_id, "c");
    cr_assert(px_ref_eq(a->f_child, bref), "A's decider sees B as the failed child");
    cr_assert_str_eq(a->f_id, "b");
    cr_assert(a->f_has_cause, "an escalation carries its cause");
    cr_assert(px_ref_eq(a->cause_child, cref), "the cause is C's failure");
    cr_assert_str_eq(a->cause_id, "c");
    cr_assert_eq(a->cause_code, PX_EFAIL, "cause code %s", px_errname(a->cause_code));
    PXT_AWAIT(PXT_STAT(sys, escalations) - e0 == 1, 5000);

    PXT_AWAIT(atomic_load(&b->inits) == 2, 5000);
    cr_assert_eq(atomic_load(&b->stops), 1, "B's old instance stopped");
    PXT_AWAIT(atomic_load(&c->inits) == 2, 5000); /* re-spawned by B's new init */
    cr_assert_eq(atomic_load(&c->stops), 1, "C was taken along by B's restart");
    cr_assert(atomic_load(&c->stop_seq) < atomic_load(&b->stop_seq),
              "C stopped before B's stop ran (c=%llu b=%llu)",
              (unsigned long long)atomic_load(&c->stop_seq),
              (unsigned long long)atomic_load(&b->stop_seq));
    cr_assert_eq(b->errs[0], PX_OK, "B's new instance spawned C again: %s",
                 px_errname(b->errs[0]));
    cr_assert(px_ref_eq(b->self, bref), "B keeps its ref across the restart");
    cr_assert(!px_ref_eq(b->refs[0], cref), "the new C is a new actor");
    PXT_AWAIT(!px_is_alive(sys, cref), 5000);
    cr_assert(px_is_alive(sys, b->refs[0]));
    cr_assert(px_is_alive(sys, bref));
    cr_assert(px_is_alive(sys, aref));
    cr_assert_eq(atomic_load(&c->fails), 1);

    px_system_free(sys);
    free(a), free(b), free(c);
}

/* --- 7. Strategies ------------------------------------------------------ */

typedef struct strat_fixture {
    px_system *sys;
    par *p;
    kid *k[3];
    px_ref pref;
} strat_fixture;

static void strat_setup(strat_fixture *f, const px_behavior *b, px_directive d) {
    atomic_store(&slog_n, 0);
    for (int i = 0; i < LOG_MAX; i++) {
        atomic_store(&slog[i], 0);
    }
    f->sys = pxt_system();
    register_all(f->sys);
    f->p = par_new();
    atomic_store(&f->p->directive, d);
    static const char *ids[3] = {"c1", "c2", "c3"};
    f->pref = par_top(f->sys, b, f->p);
    for (int i = 0; i < 3; i++) {
        f->k[i] = kid_new(i + 1);
        f->k[i]->logit = 1;
        par_spec(f->p, ids[i], "t.kid", f->k[i]);
    }
    par_do_spawn(f->sys, f->pref, f->p);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(f->p->errs[i], PX_OK);
    }
    PXT_AWAIT(atomic_load(&slog_n) == 3, 5000);
    for (int i = 0; i < 3; i++) {
        PXT_AWAIT(atomic_load(&slog[i]) != 0, 5000);
        cr_assert_eq(atomic_load(&slog[i]), slog_entry(LOG_INIT, i + 1));
    }
    send_kid(f->sys, f->k[1], TAG_FAIL, 0);
}

/* Waits for exactly `n` log entries after the first three and checks them. */
static void strat_expect(const int *want, int n) {
    char buf[512];
    int total = 3 + n;
    PXT_AWAIT(atomic_load(&slog_n) >= total, 5000);
    for (int i = 0; i < total; i++) {
        PXT_AWAIT(atomic_load(&slog[i]) != 0, 5000);
    }
    cr_assert(!PXT_POLL(atomic_load(&slog_n) > total, 200), "extra events: %s",
              slog_fmt(buf, sizeof buf, atomic_load(&slog_n)));
    for (int i = 0; i < n; i++) {
        cr_assert_eq(atomic_load(&slog[3 + i]), want[i], "event %d differs; log:%s", i,
                     slog_fmt(buf, sizeof buf, total));
    }
}

static void strat_teardown(strat_fixture *f) {
    for (int i = 0; i < 3; i++) {
        cr_assert(px_is_alive(f->sys, f->k[i]->self), "c%d is alive", i + 1);
    }
    cr_assert(px_is_alive(f->sys, f->pref));
    px_system_free(f->sys);
    for (int i = 0; i < 3; i++) {
        free(f->k[i]);
    }
    free(f->p);
}

Test(core_sup, one_for_one_restarts_only_the_failed_child, .timeout = 15) {
    strat_fixture f;
    strat_setup(&f, &par_b, PX_DIRECTIVE_RESTART);
    const int want[] = {slog_entry(LOG_STOP, 2), slog_entry(LOG_INIT, 2)};
    strat_expect(want, 2);
    cr_assert_eq(atomic_load(&f.k[0]->inits), 1);
    cr_assert_eq(atomic_load(&f.k[2]->inits), 1);
    cr_assert_eq(atomic_load(&f.k[1]->inits), 2);
    strat_teardown(&f);
}

Test(core_sup, all_for_one_stops_all_in_reverse_start_order_then_starts_all_in_order,
     .timeout = 15) {
    strat_fixture f;
    strat_setup(&f, &par_all_b, PX_DIRECTIVE_RESTART);
    const int want[] = {slog_entry(LOG_STOP, 3), slog_entry(LOG_STOP, 2),
                        slog_entry(LOG_STOP, 1), slog_entry(LOG_INIT, 1),
                        slog_entry(LOG_INIT, 2), slog_entry(LOG_INIT, 3)};
    strat_expect(want, 6);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(atomic_load(&f.k[i]->inits), 2);
        cr_assert_eq(atomic_load(&f.k[i]->stops), 1);
    }
    strat_teardown(&f);
}

Test(core_sup, rest_for_one_restarts_the_failed_child_and_those_started_after_it,
     .timeout = 15) {
    strat_fixture f;
    strat_setup(&f, &par_rest_b, PX_DIRECTIVE_RESTART);
    const int want[] = {slog_entry(LOG_STOP, 3), slog_entry(LOG_STOP, 2),
                        slog_entry(LOG_INIT, 2), slog_entry(LOG_INIT, 3)};
    strat_expect(want, 4);
    cr_assert_eq(atomic_load(&f.k[0]->inits), 1, "c1 untouched");
    cr_assert_eq(atomic_load(&f.k[0]->stops), 0, "c1 untouched");
    cr_assert_eq(atomic_load(&f.k[1]->inits), 2);
    cr_assert_eq(atomic_load(&f.k[2]->inits), 2);
    strat_teardown(&f);
}

Test(core_sup, all_for_one_stop_directive_stops_all_children_in_reverse_start_order,
     .timeout = 15) {
    strat_fixture f;
    strat_setup(&f, &par_all_decide_b, PX_DIRECTIVE_STOP);
    const int want[] = {slog_entry(LOG_STOP, 3), slog_entry(LOG_STOP, 2),
                        slog_entry(LOG_STOP, 1)};
    strat_expect(want, 3);
    for (int i = 0; i < 3; i++) {
        PXT_AWAIT(!px_is_alive(f.sys, f.k[i]->self), 5000);
        cr_assert_eq(atomic_load(&f.k[i]->inits), 1);
    }
    cr_assert(px_is_alive(f.sys, f.pref));
    px_system_free(f.sys);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(atomic_load(&f.k[i]->stops), 1);
        free(f.k[i]);
    }
    free(f.p);
}

/* --- Escalate, then the grandparent resumes ----------------------------- */

Test(core_sup, a_resume_of_the_escalating_parent_resumes_the_suspended_child, .timeout = 15) {
    px_system *sys = sup_system();
    par *a = par_new(), *b = par_new();
    kid *c = kid_new(1);
    atomic_store(&a->directive, PX_DIRECTIVE_RESUME);
    atomic_store(&b->directive, PX_DIRECTIVE_ESCALATE);
    b->spawn_in_init = 1;
    par_spec(b, "c", "t.kid", c);
    px_ref aref = par_top(sys, &par_b, a);
    par_spec(a, "b", "t.par", b);
    par_do_spawn(sys, aref, a);
    cr_assert_eq(a->errs[0], PX_OK);
    cr_assert_eq(b->errs[0], PX_OK);
    px_ref cref = b->refs[0];

    send_kid(sys, c, TAG_COUNT, 0);
    send_kid(sys, c, TAG_FAIL, 0);
    send_kid(sys, c, TAG_COUNT, 0);
    PXT_AWAIT(atomic_load(&a->decided) == 1, 5000);
    PXT_AWAIT(atomic_load(&c->last_count) == 2, 5000);
    cr_assert_eq(atomic_load(&c->last_inst), 1, "C goes on with the same instance");
    cr_assert_eq(atomic_load(&c->inits), 1);
    cr_assert_eq(atomic_load(&c->stops), 0);
    cr_assert_eq(atomic_load(&b->inits), 1, "B was not restarted");
    cr_assert_eq(atomic_load(&b->stops), 0);
    cr_assert(px_is_alive(sys, cref));
    px_system_free(sys);
    free(a), free(b), free(c);
}

/* --- 8. Restart intensity ----------------------------------------------- */

Test(core_sup, too_many_restarts_in_the_window_make_the_parent_escalate, .timeout = 15) {
    px_system *sys = sup_system();
    par *g = par_new(), *p = par_new();
    kid *c = kid_new(1);
    atomic_store(&g->directive, PX_DIRECTIVE_STOP);
    atomic_store(&p->directive, PX_DIRECTIVE_RESTART);
    p->spawn_in_init = 1;
    par_spec(p, "c", "t.kid", c);
    px_restart_policy *pol = par_policy(p, 0);
    pol->max_restarts = 2;
    pol->window_ms = 10000;
    px_ref gref = par_top(sys, &par_b, g);
    par_spec(g, "p", "t.par", p);
    par_do_spawn(sys, gref, g);
    cr_assert_eq(g->errs[0], PX_OK, "spawn p: %s", px_errname(g->errs[0]));
    cr_assert_eq(p->errs[0], PX_OK, "spawn c: %s", px_errname(p->errs[0]));
    px_ref pref = g->refs[0], cref = p->refs[0];
    uint64_t e0 = PXT_STAT(sys, escalations), rs0 = PXT_STAT(sys, restarts);

    send_kid(sys, c, TAG_FAIL, 1);
    PXT_AWAIT(atomic_load(&c->inits) == 2, 5000);
    send_kid(sys, c, TAG_FAIL, 2);
    PXT_AWAIT(atomic_load(&c->inits) == 3, 5000);
    cr_assert_eq(atomic_load(&g->decided), 0, "two restarts are within the limit");
    cr_assert_eq(PXT_STAT(sys, restarts) - rs0, 2);
    send_kid(sys, c, TAG_FAIL, 3);
    PXT_AWAIT(atomic_load(&g->decided) == 1, 5000);
    cr_assert(px_ref_eq(g->f_child, pref), "the grandparent sees the parent as the failed child");
    cr_assert_str_eq(g->f_id, "p");
    cr_assert(g->f_has_cause);
    cr_assert(px_ref_eq(g->cause_child, cref), "the cause is the child's failure");
    cr_assert_str_eq(g->cause_id, "c");
    cr_assert_eq(g->cause_code, PX_EFAIL, "cause code %s", px_errname(g->cause_code));
    PXT_AWAIT(PXT_STAT(sys, escalations) - e0 == 1, 5000);
    /* The grandparent said Stop: the parent goes, the child with it. */
    PXT_AWAIT(atomic_load(&p->stops) == 1, 5000);
    PXT_AWAIT(!px_is_alive(sys, pref) && !px_is_alive(sys, cref), 5000);
    cr_assert_eq(atomic_load(&c->inits), 3, "no third restart");
    cr_assert_eq(atomic_load(&c->stops), 3);
    cr_assert(px_is_alive(sys, gref));

    px_system_free(sys);
    free(g), free(p), free(c);
}

/* --- 9. Restart types --------------------------------------------------- */

Test(core_sup, temporary_child_is_stopped_not_restarted_by_a_restart_directive, .timeout = 15) {
    px_system *sys = sup_system();
    par *p = par_new();
    kid *k = kid_new(1);
    px_ref pref = par_with_kid(sys, &par_default_b, p, k, PX_RESTART_TEMPORARY);
    par_query(sys, pref, p, "k");
    cr_assert_eq(p->info.restart, PX_RESTART_TEMPORARY);
    px_ref ref = p->refs[0];
    send_kid(sys, k, TAG_FAIL, 0);
    PXT_AWAIT(atomic_load(&k->stops) == 1, 5000);
    PXT_AWAIT(!px_is_alive(sys, ref), 5000);
    cr_assert(!PXT_POLL(atomic_load(&k->inits) > 1, 200), "a temporary child was restarted");
    cr_assert(px_is_alive(sys, pref));
    px_system_free(sys);
    cr_assert_eq(atomic_load(&k->stops), 1);
    free(k), free(p);
}

Test(core_sup, transient_child_that_stops_itself_is_not_restarted, .timeout = 15) {
    px_system *sys = sup_system();
    par *p = par_new();
    kid *k = kid_new(1);
    par_with_kid(sys, &par_default_b, p, k, PX_RESTART_TRANSIENT);
    px_ref ref = p->refs[0];
    send_kid(sys, k, TAG_STOPSELF, 0);
    PXT_AWAIT(atomic_load(&k->stops) == 1, 5000);
    PXT_AWAIT(!px_is_alive(sys, ref), 5000);
    cr_assert(!PXT_POLL(atomic_load(&k->inits) > 1, 200), "a transient child was restarted");
    px_system_free(sys);
    cr_assert_eq(atomic_load(&k->stops), 1);
    free(k), free(p);
}

Test(core_sup, permanent_child_that_stops_itself_is_restarted, .timeout = 15) {
    px_system *sys = sup_system();
    par *p = par_new();
    kid *k = kid_new(1);
    px_ref pref = par_with_kid(sys, &par_default_b, p, k, PX_RESTART_PERMANENT);
    px_ref ref = p->refs[0];
    send_kid(sys, k, TAG_STOPSELF, 0);
    PXT_AWAIT(atomic_load(&k->inits) == 2, 5000);
    cr_assert_eq(atomic_load(&k->stops), 1);
    cr_assert(px_ref_eq(k->self, ref));
    cr_assert(px_is_alive(sys, ref));
    pxt_send_u64(sys, ref, TAG_COUNT, 0);
    PXT_AWAIT(atomic_load(&k->last_inst) == 2, 5000);
    par_query(sys, pref, p, "k");
    cr_assert_eq(p->q_err, PX_OK);
    cr_assert_eq(p->info.instance, 2);
    cr_assert_eq(p->info.state, PX_CHILD_RUNNING);
    px_system_free(sys);
    free(k), free(p);
}

/* --- 10. Backoff --------------------------------------------------------- */

Test(core_sup, backoff_delays_each_consecutive_restart_exponentially, .timeout = 20) {
    px_system *sys = sup_system();
    par *p = par_new();
    kid *k = kid_new(1);
    atomic_store(&k->fail_first_upto, 4); /* instances 1..4 fail, 5 lives */
    px_ref pref = par_top(sys, &par_default_b, p);
    par_spec(p, "k", "t.kid", k);
    px_restart_policy *pol = par_policy(p, 0);
    pol->max_restarts = 10;
    pol->window_ms = 60000;
    pol->backoff = (px_backoff){.initial_ms = 50, .max_ms = 400, .multiplier = 2.0, .jitter = 0};
    par_do_spawn(sys, pref, p);
    cr_assert_eq(p->errs[0], PX_OK, "spawn: %s", px_errname(p->errs[0]));
    PXT_AWAIT(atomic_load(&k->inits) == 5, 10000);
    cr_assert(!PXT_POLL(atomic_load(&k->inits) > 5, 100));
    const int64_t delay[4] = {50, 100, 200, 400};
    int64_t gap[4];
    for (int i = 0; i < 4; i++) {
        gap[i] = k->init_ms[i + 1] - k->init_ms[i];
    }
    for (int i = 0; i < 4; i++) {
        cr_assert(gap[i] >= delay[i] - 5, "restart %d came after %lld ms, backoff is %lld ms "
                  "(gaps %lld %lld %lld %lld)", i + 1, (long long)gap[i], (long long)delay[i],
                  (long long)gap[0], (long long)gap[1], (long long)gap[2], (long long)gap[3]);
        cr_assert(gap[i] < delay[i] + 1500, "restart %d came after %lld ms", i + 1,
                  (long long)gap[i]);
        if (i > 0) {
            cr_assert(gap[i] > gap[i - 1], "gaps grow: %lld then %lld", (long long)gap[i - 1],
                      (long long)gap[i]);
        }
    }
    cr_assert_eq(atomic_load(&k->fails), 4);
    par_query(sys, pref, p, "k");
    cr_assert_eq(p->info.instance, 5);
    cr_assert_eq(p->info.restarts, 4);
    cr_assert_eq(p->info.state, PX_CHILD_RUNNING);
    px_system_free(sys);
    free(k), free(p);
}

/* --- 11. Circuit breaker ------------------------------------------------- */

Test(core_sup, breaker_opens_after_consecutive_failures_then_half_opens_then_closes,
     .timeout = 20) {
    enum { COOLDOWN = 300 };
    px_system *sys = sup_system();
    par *p = par_new();
    kid *k = kid_new(1);
    px_ref pref = par_top(sys, &par_default_b, p);
    par_spec(p, "k", "t.kid", k);
    px_restart_policy *pol = par_policy(p, 0);
    pol->max_restarts = 100;
    pol->window_ms = 60000;
    pol->breaker = (px_breaker){.failures = 2, .cooldown_ms = COOLDOWN};
    par_do_spawn(sys, pref, p);
    cr_assert_eq(p->errs[0], PX_OK, "spawn: %s", px_errname(p->errs[0]));
    par_query(sys, pref, p, "k");
    cr_assert_eq(p->info.breaker, PX_BREAKER_CLOSED, "a configured breaker starts closed (%d)",
                 p->info.breaker);

    send_kid(sys, k, TAG_FAIL, 1);
    PXT_AWAIT(atomic_load(&k->inits) == 2, 5000); /* first failure: a plain restart */
    send_kid(sys, k, TAG_FAIL, 2);
    PXT_AWAIT(atomic_load(&k->fails) == 2, 5000);
    int open = par_query_until(sys, pref, p, "k", PX_CHILD_OPEN, PX_BREAKER_OPEN, 150);
    cr_assert(open, "after 2 consecutive failures: state %d breaker %d (want OPEN/OPEN)",
              p->info.state, p->info.breaker);
    uint32_t inst_open = p->info.instance;
    cr_assert_eq(atomic_load(&k->inits), 2, "no restart while open");
    cr_assert_eq(p->info.consecutive_failures, 2);

    PXT_AWAIT(atomic_load(&k->inits) == 3, 5000); /* the cool-down ended */
    int64_t waited = k->init_ms[2] - atomic_load(&k->fail_ms);
    cr_assert(waited >= COOLDOWN - 5, "restarted %lld ms after the failure (cool-down %d)",
              (long long)waited, COOLDOWN);
    par_query(sys, pref, p, "k");
    cr_assert_eq(p->info.instance, inst_open + 1, "instance %u after open at %u",
                 p->info.instance, inst_open);
    cr_assert_eq(p->info.breaker, PX_BREAKER_HALF_OPEN, "breaker %d", p->info.breaker);
    cr_assert_eq(p->info.state, PX_CHILD_RUNNING, "state %d", p->info.state);

    send_kid(sys, k, TAG_COUNT, 0);
    PXT_AWAIT(atomic_load(&k->last_inst) == 3, 5000);
    cr_assert(par_query_until(sys, pref, p, "k", PX_CHILD_RUNNING, PX_BREAKER_CLOSED, 2000),
              "one handled message closes the breaker: state %d breaker %d", p->info.state,
              p->info.breaker);
    px_system_free(sys);
    free(k), free(p);
}

/* --- 12. Root guardian --------------------------------------------------- */

typedef struct crit_cap {
    atomic_int crit_lines;
    atomic_int crit_with_reason;
} crit_cap;

static void crit_sink(void *arg, px_log_level level, const char *node, const char *line) {
    (void)node;
    crit_cap *c = arg;
    if (level == PX_LOG_CRIT) {
        atomic_fetch_add(&c->crit_lines, 1);
        if (line && strstr(line, "exploded on purpose")) {
            atomic_fetch_add(&c->crit_with_reason, 1);
        }
    }
}

Test(core_sup, root_policy_stop_stops_a_failed_top_level_actor_and_logs_crit, .timeout = 15) {
    static crit_cap cap;
    px_config cfg;
    pxt_config(&cfg);
    cfg.root_policy = PX_ROOT_STOP;
    cfg.log_sink = crit_sink;
    cfg.log_arg = &cap;
    px_system *sys = pxt_system_with(&cfg);
    kid *k = kid_new(7);
    px_ref ref = pxt_spawn(sys, &kid_b, k, NULL);
    send_kid(sys, k, TAG_PXFAIL, 0);
    PXT_AWAIT(atomic_load(&k->stops) == 1, 5000);
    PXT_AWAIT(!px_is_alive(sys, ref), 5000);
    cr_assert(!PXT_POLL(atomic_load(&k->inits) > 1, 100), "not restarted");
    PXT_AWAIT(atomic_load(&cap.crit_with_reason) >= 1, 5000);
    px_system_free(sys);
    free(k);
}

Test(core_sup, root_policy_restart_restarts_a_failed_top_level_actor, .timeout = 15) {
    static crit_cap cap;
    px_config cfg;
    pxt_config(&cfg);
    cfg.root_policy = PX_ROOT_RESTART;
    cfg.log_sink = crit_sink;
    cfg.log_arg = &cap;
    px_system *sys = pxt_system_with(&cfg);
    kid *k = kid_new(8);
    px_ref ref = pxt_spawn(sys, &kid_b, k, NULL);
    uint64_t rs0 = PXT_STAT(sys, restarts);
    send_kid(sys, k, TAG_PXFAIL, 0);
    PXT_AWAIT(atomic_load(&k->inits) == 2, 5000);
    cr_assert_eq(atomic_load(&k->stops), 1);
    cr_assert(px_is_alive(sys, ref), "restarted in place, same ref");
    cr_assert(px_ref_eq(k->self, ref));
    PXT_AWAIT(PXT_STAT(sys, restarts) - rs0 == 1, 5000);
    pxt_send_u64(sys, ref, TAG_COUNT, 0);
    PXT_AWAIT(atomic_load(&k->last_inst) == 2, 5000);
    PXT_AWAIT(atomic_load(&cap.crit_with_reason) >= 1, 5000);
    px_system_free(sys);
    free(k);
}

/* --- 13. Failure storm --------------------------------------------------- */

#define STORM_N 2000
typedef struct storm {
    px_ref refs[STORM_N];
    uint32_t max_restarts; /* per child, in a 60 s window */
    atomic_int errors;
    px_err first_err;
    atomic_int spawned;
    atomic_int inits;
} storm;

static storm *g_storm;

static px_err storm_kid_init(px_ctx *ctx, const px_msg *arg) {
    (void)ctx;
    (void)arg;
    atomic_fetch_add(&g_storm->inits, 1);
    return PX_OK;
}
static px_err storm_kid_receive(px_ctx *ctx, px_msg *m) {
    (void)ctx;
    return px_msg_tag(m) == TAG_FAIL ? PX_EFAIL : PX_OK;
}
static const px_behavior storm_kid_b = {.name = "t.storm.kid", .init = storm_kid_init,
                                        .receive = storm_kid_receive};

static px_err storm_par_receive(px_ctx *ctx, px_msg *m) {
    storm *s = px_state(ctx);
    if (px_msg_tag(m) != TAG_SPAWN) {
        return PX_OK;
    }
    px_restart_policy pol;
    px_restart_policy_init(&pol);
    pol.max_restarts = s->max_restarts;
    pol.window_ms = 60000;
    for (int i = 0; i < STORM_N; i++) {
        char id[32];
        snprintf(id, sizeof id, "s%d", i);
        px_child_spec spec = {.id = id, .behavior = "t.storm.kid", .policy = &pol};
        px_err e = px_spawn_child(ctx, &spec, NULL, &s->refs[i]);
        if (e != PX_OK) {
            if (atomic_fetch_add(&s->errors, 1) == 0) {
                s->first_err = e;
            }
        }
    }
    atomic_store(&s->spawned, 1);
    return PX_OK;
}
static const px_behavior storm_par_b = {.name = "t.storm.par", .init = pxt_init_ptr_state,
                                        .receive = storm_par_receive};

static px_err echo_receive(px_ctx *ctx, px_msg *m) {
    px_msg *r = NULL;
    if (px_msg_u64(&r, TAG_ECHO, px_msg_get_u64(m) + 1) != PX_OK) {
        return PX_ENOMEM;
    }
    if (px_reply(ctx, m, &r) != PX_OK) {
        px_msg_free(r);
    }
    return PX_OK;
}
static const px_behavior echo_b = {.name = "t.echo", .receive = echo_receive};

/* A system with an echo actor (if echo != NULL) and a storm parent whose
 * STORM_N children (max_restarts each in 60 s) have all started. */
static px_system *storm_setup(uint32_t max_restarts, storm **out, px_ref *parent, px_ref *echo) {
    px_config cfg;
    pxt_config(&cfg);
    cfg.log_level = PX_LOG_CRIT; /* thousands of failure lines are noise here */
    px_system *sys = pxt_system_with(&cfg);
    cr_assert_eq(px_behavior_register(sys, &storm_kid_b), PX_OK);
    storm *s = calloc(1, sizeof *s);
    cr_assert_not_null(s);
    s->max_restarts = max_restarts;
    g_storm = s;
    if (echo != NULL) {
        cr_assert_eq(px_system_spawn(sys, &echo_b, NULL, NULL, echo), PX_OK);
    }
    *parent = pxt_spawn(sys, &storm_par_b, s, NULL);
    pxt_send_u64(sys, *parent, TAG_SPAWN, 0);
    PXT_AWAIT(atomic_load(&s->spawned), 30000);
    cr_assert_eq(atomic_load(&s->errors), 0, "%d spawns failed, first: %s",
                 atomic_load(&s->errors), px_errname(s->first_err));
    cr_assert_eq(atomic_load(&s->inits), STORM_N);
    *out = s;
    return sys;
}

/* Bytes the allocator has handed out and not yet taken back. */
static size_t heap_in_use(void) {
#if defined(__SANITIZE_ADDRESS__)
    return __sanitizer_get_current_allocated_bytes();
#else
    return mallinfo2().uordblks;
#endif
}

/* Sends every storm child one failing message and waits until all of them
 * are back (restarted and past init again). */
static void storm_round(px_system *sys, storm *s, int round) {
    uint64_t rs0 = PXT_STAT(sys, restarts);
    for (int i = 0; i < STORM_N; i++) {
        pxt_send_u64(sys, s->refs[i], TAG_FAIL, (uint64_t)i);
    }
    PXT_AWAIT(PXT_STAT(sys, restarts) - rs0 >= STORM_N, 30000);
    PXT_AWAIT(atomic_load(&s->inits) == (round + 1) * STORM_N, 10000);
    cr_assert_eq(PXT_STAT(sys, restarts) - rs0, STORM_N, "round %d", round);
}

Test(core_sup, a_storm_of_failures_is_absorbed_and_the_system_stays_responsive, .timeout = 60) {
    storm *s;
    px_ref pref, echo = PX_REF_NIL;
    px_system *sys = storm_setup(5, &s, &pref, &echo);
    uint64_t f0 = PXT_STAT(sys, failures);
    storm_round(sys, s, 1);
    cr_assert_eq(PXT_STAT(sys, failures) - f0, STORM_N);
    cr_assert(px_is_alive(sys, pref), "the parent absorbed the storm");

    px_msg *q = pxt_u64(TAG_ECHO, 41), *reply = NULL;
    int64_t t0 = pxt_now_ms();
    px_err e = px_system_ask(sys, echo, &q, 2000, &reply);
    cr_assert_eq(e, PX_OK, "ask after the storm: %s", px_errname(e));
    cr_assert(pxt_now_ms() - t0 <= 2000);
    cr_assert_eq(px_msg_get_u64(reply), 42);
    px_msg_free(reply);
    for (int i = 0; i < STORM_N; i += 97) {
        cr_assert(px_is_alive(sys, s->refs[i]), "child %d is alive after its restart", i);
    }

    px_system_free(sys);
    free(s);
}

/* Memory flat: what a failure costs is given back once the child is back.
 * The first rounds grow bounded per-child history (the record made on the
 * first failure; restart times kept for the window, in an array doubled at
 * 4, 8 and 16 entries); after round 9, seven more storms must not grow the
 * heap beyond timing noise (the message cache keeps as many blocks as were
 * ever in flight at once: tens of KiB here). A leak of even 32 bytes per
 * failure would add 14000 x 32 = 448 KiB. */
Test(core_sup, repeated_failure_storms_leave_memory_flat, .timeout = 90) {
    storm *s;
    px_ref pref;
    px_system *sys = storm_setup(20, &s, &pref, NULL);
    uint64_t live = PXT_STAT(sys, live_actors);

    for (int round = 1; round <= 9; round++) {
        storm_round(sys, s, round);
    }
    size_t base = heap_in_use();
    for (int round = 10; round <= 16; round++) {
        storm_round(sys, s, round);
    }
    size_t after = heap_in_use();
    cr_assert_eq(PXT_STAT(sys, live_actors), live, "no actor is left behind");
    cr_assert_eq(PXT_STAT(sys, escalations), 0);
    cr_assert(px_is_alive(sys, pref));
    cr_assert(after <= base + 192 * 1024,
              "heap grew by %zd bytes over 7 storms of %d failures (base %zu)",
              (ssize_t)(after - base), STORM_N, base);

    px_system_free(sys);
    free(s);
}
