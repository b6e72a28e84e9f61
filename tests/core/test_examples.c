/* Tests for the shipped example behaviors (px_examples, plexus/examples.h):
 * each asserts the supervision effect its strategy promises — one worker
 * restarted (OneForOne), the failed stage and those after it (RestForOne),
 * all three (AllForOne), and a leaf restart vs. an escalation that restarts
 * the middle of a three-level tree — plus that no work is lost around the
 * restarts. The examples fail on purpose, so the systems log at CRIT only. */
#include <plexus/examples.h>

#include "helpers.h"

static px_system *ex_system(void) {
    px_config cfg;
    pxt_config(&cfg);
    cfg.log_level = PX_LOG_CRIT; /* the failures below are deliberate */
    px_system *sys = pxt_system_with(&cfg);
    px_err e = px_examples_register(sys);
    cr_assert_eq(e, PX_OK, "px_examples_register: %s", px_strerror(e));
    return sys;
}

static void ex_free(px_system *sys) {
    px_system_free(sys);
    px_examples_forget(sys);
}

static px_examples_stats ex_stats(px_system *sys) {
    px_examples_stats st;
    memset(&st, 0, sizeof st);
    cr_assert_eq(px_examples_stats_get(sys, &st), PX_OK);
    return st;
}

/* One counter, for PXT_AWAIT. */
#define EXS(sys, field) (ex_stats(sys).field)

static px_ref ex_spawn(px_system *sys, const char *behavior, uint64_t arg) {
    px_msg *a = pxt_u64(PX_EX_TAG_ARG, arg);
    px_ref ref = PX_REF_NIL;
    px_err e = px_system_spawn_named(sys, behavior, &a, NULL, &ref);
    cr_assert_eq(e, PX_OK, "spawn %s: %s", behavior, px_strerror(e));
    cr_assert_null(a);
    return ref;
}

static void ex_send_bytes_out(px_system *sys, px_ref to, uint32_t tag, const void *p, size_t n) {
    px_msg *m = NULL;
    cr_assert_eq(px_msg_bytes(&m, tag, p, n), PX_OK);
    px_err e = px_system_send(sys, to, &m);
    cr_assert_eq(e, PX_OK, "px_system_send: %s", px_strerror(e));
}

/* --- registration ------------------------------------------------------- */

Test(core_examples, register_once_and_counters_per_system) {
    px_system *sys = ex_system();
    cr_assert_eq(px_examples_register(sys), PX_EEXIST);
    cr_assert_not_null(px_behavior_lookup(sys, "ex.pool"));
    cr_assert_not_null(px_behavior_lookup(sys, "ex.hier.leaf"));
    px_examples_stats st = ex_stats(sys);
    cr_assert_eq(st.pool_inits, 0);

    px_config cfg;
    pxt_config(&cfg);
    px_system *other = NULL;
    cr_assert_eq(px_system_alloc(&other, &cfg), PX_OK);
    px_examples_stats st2;
    cr_assert_eq(px_examples_stats_get(other, &st2), PX_ENOENT);
    cr_assert_eq(px_examples_stats_get(NULL, &st2), PX_EINVAL);
    px_system_free(other);
    ex_free(sys);
}

/* --- ex.pool ------------------------------------------------------------ */

#define POOL_WORKERS 4
#define POOL_JOBS 1000
#define POOL_MORE 200
#define POOL_POISON 500 /* the id of the one poisoned job */

/* The test's client: records each result (only this actor writes). */
typedef struct pool_client {
    atomic_uint_least64_t got;
    atomic_int wrong;       /* result or message format mismatches */
    atomic_int duplicates;
    uint8_t seen[POOL_JOBS + POOL_MORE];
    uint32_t by_worker[POOL_WORKERS];
} pool_client;

static px_err client_receive(px_ctx *ctx, px_msg *m) {
    pool_client *c = px_state(ctx);
    size_t len = 0;
    const void *data = px_msg_data(m, &len);
    px_ex_result r;
    if (px_msg_tag(m) != PX_EX_POOL_RESULT || len != sizeof r || data == NULL) {
        atomic_fetch_add(&c->wrong, 1);
        return PX_OK;
    }
    memcpy(&r, data, sizeof r);
    if (r.id >= POOL_JOBS + POOL_MORE || r.value != r.id * 7 + 1 ||
        r.result != px_ex_collatz_steps(r.value) || r.worker >= POOL_WORKERS) {
        atomic_fetch_add(&c->wrong, 1);
    } else {
        if (c->seen[r.id]++) {
            atomic_fetch_add(&c->duplicates, 1);
        }
        c->by_worker[r.worker]++;
    }
    atomic_fetch_add(&c->got, 1);
    return PX_OK;
}
static const px_behavior client_b = {.name = "t.ex.client", .init = pxt_init_ptr_state,
                                     .receive = client_receive};

static void send_jobs(px_system *sys, px_ref pool, px_ref reply_to, uint64_t from, uint64_t to) {
    for (uint64_t id = from; id < to; id++) {
        px_ex_job job = {.id = id, .value = id * 7 + 1,
                         .flags = id == POOL_POISON ? PX_EX_JOB_POISON : 0,
                         .reply_to = reply_to};
        ex_send_bytes_out(sys, pool, PX_EX_POOL_JOB, &job, sizeof job);
    }
}

Test(core_examples, pool_answers_every_job_and_a_poisoned_job_restarts_one_worker,
     .timeout = 60) {
    px_system *sys = ex_system();
    pool_client *c = calloc(1, sizeof *c);
    cr_assert_not_null(c);
    px_ref client = pxt_spawn(sys, &client_b, c, NULL);
    uint64_t restarts0 = PXT_STAT(sys, restarts);
    px_ref pool = ex_spawn(sys, "ex.pool", POOL_WORKERS);
    px_examples_stats st = ex_stats(sys);
    cr_assert_eq(st.pool_inits, 1);
    cr_assert_eq(st.pool_worker_inits, POOL_WORKERS);

    send_jobs(sys, pool, client, 0, POOL_JOBS);
    PXT_AWAIT(atomic_load(&c->got) == POOL_JOBS - 1, 20000);
    PXT_AWAIT(PXT_STAT(sys, restarts) - restarts0 == 1, 10000);

    /* Later jobs, including those for the restarted worker, are answered. */
    send_jobs(sys, pool, client, POOL_JOBS, POOL_JOBS + POOL_MORE);
    PXT_AWAIT(atomic_load(&c->got) == POOL_JOBS + POOL_MORE - 1, 20000);

    st = ex_stats(sys);
    cr_assert_eq(PXT_STAT(sys, restarts) - restarts0, 1, "exactly one worker restart");
    cr_assert_eq(st.pool_worker_inits, POOL_WORKERS + 1);
    cr_assert_eq(st.pool_worker_failures, 1);
    cr_assert_eq(st.pool_jobs_poisoned, 1);
    cr_assert_eq(st.pool_inits, 1, "the pool itself was not restarted");
    cr_assert_eq(st.pool_jobs_routed, POOL_JOBS + POOL_MORE);
    cr_assert_eq(st.pool_jobs_done, POOL_JOBS + POOL_MORE - 1);
    cr_assert_eq(st.pool_results_sent, POOL_JOBS + POOL_MORE - 1);
    cr_assert_eq(atomic_load(&c->wrong), 0);
    cr_assert_eq(atomic_load(&c->duplicates), 0);
    for (uint64_t id = 0; id < POOL_JOBS + POOL_MORE; id++) {
        cr_assert_eq(c->seen[id], id == POOL_POISON ? 0 : 1, "job %llu answered %u times",
                     (unsigned long long)id, c->seen[id]);
    }
    /* Round-robin: every worker did its share; the poisoned one one less. */
    for (uint32_t w = 0; w < POOL_WORKERS; w++) {
        uint32_t share = (POOL_JOBS + POOL_MORE) / POOL_WORKERS;
        cr_assert_eq(c->by_worker[w], w == POOL_POISON % POOL_WORKERS ? share - 1 : share,
                     "worker %u answered %u", w, c->by_worker[w]);
    }
    cr_assert(px_is_alive(sys, pool));
    ex_free(sys);
    free(c);
}

/* --- ex.pipeline -------------------------------------------------------- */

static void send_record(px_system *sys, px_ref to, const char *text) {
    ex_send_bytes_out(sys, to, PX_EX_PIPE_RECORD, text, strlen(text));
}

Test(core_examples, pipeline_failing_transform_restarts_it_and_sink_not_parse, .timeout = 60) {
    px_system *sys = ex_system();
    uint64_t restarts0 = PXT_STAT(sys, restarts);
    px_ref pipe = ex_spawn(sys, "ex.pipeline", 0);
    px_examples_stats st = ex_stats(sys);
    cr_assert_eq(st.pipe_inits, 1);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(st.pipe_stage_inits[i], 1, "stage %d", i);
    }

    send_record(sys, pipe, "1, 2 3 x7");
    PXT_AWAIT(EXS(sys, pipe_sunk) == 3, 10000);
    cr_assert_eq(EXS(sys, pipe_rejected), 1);

    /* 4 goes through the old transform, then it fails on the poison item;
     * 5 waits in its mailbox for the new instance. */
    send_record(sys, pipe, "4,poison,5");
    PXT_AWAIT(EXS(sys, pipe_stage_inits[PX_EX_STAGE_SINK]) == 2, 10000);
    PXT_AWAIT(EXS(sys, pipe_sunk) == 5, 10000);
    send_record(sys, pipe, "6");
    PXT_AWAIT(EXS(sys, pipe_sunk) == 6, 10000);

    st = ex_stats(sys);
    cr_assert_eq(st.pipe_stage_inits[PX_EX_STAGE_PARSE], 1, "parse must not restart");
    cr_assert_eq(st.pipe_stage_inits[PX_EX_STAGE_TRANSFORM], 2);
    cr_assert_eq(st.pipe_stage_inits[PX_EX_STAGE_SINK], 2);
    cr_assert_eq(st.pipe_inits, 1);
    cr_assert_eq(st.pipe_stage_failures, 1);
    cr_assert_eq(PXT_STAT(sys, restarts) - restarts0, 2, "transform and sink restarted");
    cr_assert_eq(st.pipe_records, 3);
    cr_assert_eq(st.pipe_items, 6);
    cr_assert_eq(st.pipe_sum, 1 + 4 + 9 + 16 + 25 + 36);
    ex_free(sys);
}

/* --- ex.trio ------------------------------------------------------------ */

Test(core_examples, trio_one_failure_restarts_all_three, .timeout = 60) {
    px_system *sys = ex_system();
    uint64_t restarts0 = PXT_STAT(sys, restarts);
    px_ref trio = ex_spawn(sys, "ex.trio", 0);

    pxt_send_u64(sys, trio, PX_EX_TRIO_RUN, 30);
    PXT_AWAIT(EXS(sys, trio_handled) == 30, 10000);

    pxt_send_u64(sys, trio, PX_EX_TRIO_FAIL, 1);
    PXT_AWAIT(PXT_STAT(sys, restarts) - restarts0 == 3, 10000);
    px_examples_stats st = ex_stats(sys);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(st.trio_member_inits[i], 2, "member %d init count %llu", i,
                     (unsigned long long)st.trio_member_inits[i]);
    }

    /* The sequence goes on, in order, with the fresh members. */
    pxt_send_u64(sys, trio, PX_EX_TRIO_RUN, 30);
    PXT_AWAIT(EXS(sys, trio_handled) == 60, 10000);
    st = ex_stats(sys);
    cr_assert_eq(st.trio_out_of_sequence, 0);
    cr_assert_eq(st.trio_dealt, 60);
    cr_assert_eq(st.trio_inits, 1);
    cr_assert_eq(st.trio_member_failures, 1);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(st.trio_member_inits[i], 2, "member %d", i);
    }
    cr_assert_eq(PXT_STAT(sys, restarts) - restarts0, 3);
    ex_free(sys);
}

/* --- ex.hier ------------------------------------------------------------ */

#define HIER_LEAVES 3

static void hier_fail(px_system *sys, px_ref top, uint32_t leaf, px_err code) {
    px_ex_hier_fail f = {.leaf = leaf, .code = code};
    ex_send_bytes_out(sys, top, PX_EX_HIER_FAIL, &f, sizeof f);
}

static void hier_work_all(px_system *sys, px_ref top) {
    for (uint32_t i = 0; i < HIER_LEAVES; i++) {
        pxt_send_u64(sys, top, PX_EX_HIER_WORK, i);
    }
}

Test(core_examples, hier_escalated_class_restarts_middle_other_class_only_a_leaf,
     .timeout = 60) {
    px_system *sys = ex_system();
    uint64_t restarts0 = PXT_STAT(sys, restarts);
    uint64_t esc0 = PXT_STAT(sys, escalations);
    px_ref top = ex_spawn(sys, "ex.hier", HIER_LEAVES);
    px_examples_stats st = ex_stats(sys);
    cr_assert_eq(st.hier_top_inits, 1);
    cr_assert_eq(st.hier_mid_inits, 1);
    cr_assert_eq(st.hier_leaf_inits, HIER_LEAVES);
    hier_work_all(sys, top);
    PXT_AWAIT(EXS(sys, hier_work_done) == HIER_LEAVES, 10000);

    /* The other class: the middle restarts that leaf, nothing more. */
    hier_fail(sys, top, 1, PX_EFAIL);
    PXT_AWAIT(PXT_STAT(sys, restarts) - restarts0 == 1, 10000);
    hier_work_all(sys, top);
    PXT_AWAIT(EXS(sys, hier_work_done) == 2 * HIER_LEAVES, 10000);
    st = ex_stats(sys);
    cr_assert_eq(st.hier_leaf_inits, HIER_LEAVES + 1);
    cr_assert_eq(st.hier_leaf_restarts, 1);
    cr_assert_eq(st.hier_mid_inits, 1, "a leaf-class failure must not restart the middle");
    cr_assert_eq(st.hier_escalated, 0);
    cr_assert_eq(st.hier_mid_restarts, 0);
    cr_assert_eq(PXT_STAT(sys, escalations) - esc0, 0);

    /* The escalated class: the top restarts the middle, which spawns all
     * its leaves afresh. */
    hier_fail(sys, top, 2, PX_ESYS);
    PXT_AWAIT(EXS(sys, hier_mid_inits) == 2, 10000);
    PXT_AWAIT(PXT_STAT(sys, restarts) - restarts0 == 2, 10000);
    hier_work_all(sys, top);
    PXT_AWAIT(EXS(sys, hier_work_done) == 3 * HIER_LEAVES, 10000);
    st = ex_stats(sys);
    cr_assert_eq(st.hier_mid_inits, 2);
    cr_assert_eq(st.hier_top_inits, 1, "the top itself was not restarted");
    cr_assert_eq(st.hier_leaf_inits, 2 * HIER_LEAVES + 1);
    cr_assert_eq(st.hier_escalated, 1);
    cr_assert_eq(st.hier_mid_restarts, 1);
    cr_assert_eq(st.hier_leaf_restarts, 1);
    cr_assert_eq(PXT_STAT(sys, escalations) - esc0, 1);
    cr_assert_eq(PXT_STAT(sys, restarts) - restarts0, 2, "one leaf restart, one middle restart");
    cr_assert(px_is_alive(sys, top));
    ex_free(sys);
}
