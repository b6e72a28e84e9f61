/*
 * demo_examples.c — plexus-demo, part two: the shipped examples
 * (plexus/examples.h), each driven for a moment with deliberate failures,
 * checking that the supervision strategy restarted exactly what it should
 * and that no work was lost around the restarts.
 *
 *   pool      1000 jobs over 4 workers, 3 poisoned: OneForOne restarts the
 *             3 workers that got them; the other 997 jobs are answered.
 *   pipeline  200 records through parse -> transform -> sink, one carrying
 *             a poison item: RestForOne restarts transform and sink only.
 *   trio      600 numbers of a shared sequence, one member failure:
 *             AllForOne restarts all three; the sequence stays in order.
 *   hier      a leaf failure of the ordinary class restarts that leaf; one
 *             of the escalated class (PX_ESYS) restarts the middle level.
 *
 * Everything is observed from main through px_system_stats and
 * px_examples_stats, waiting on conditions with a deadline (no fixed
 * sleeps as synchronization).
 */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <plexus/examples.h>

#include "demo_examples.h"

#define WAIT_MS 10000
#define POOL_WORKERS 4u
#define POOL_JOBS 1000u
#define POOL_POISON_EVERY 333u /* jobs 332, 665, 998 are poisoned */
#define PIPE_RECORDS 200u
#define PIPE_POISON_AT 100u    /* record 100 carries a poison item */
#define TRIO_RUN 300u
#define HIER_LEAVES 3u

static int ok_all = 1;

#define CHECK(cond, ...) DEMO_CHECK(ok_all, cond, __VA_ARGS__)

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void nap(void) {
    struct timespec ts = {0, 200 * 1000};
    nanosleep(&ts, NULL); /* a pause between polls, not synchronization */
}

/* Polls cond until it holds or WAIT_MS pass; evaluates to 1 if it held. */
#define WAIT_FOR(cond)                                                         \
    ({                                                                         \
        int64_t dl_ = now_ms() + WAIT_MS;                                      \
        while (!(cond) && now_ms() < dl_) {                                    \
            nap();                                                             \
        }                                                                      \
        (cond) ? 1 : 0;                                                        \
    })

static px_examples_stats ex(px_system *sys) {
    px_examples_stats st;
    memset(&st, 0, sizeof(st));
    px_examples_stats_get(sys, &st);
    return st;
}

static uint64_t restarts(px_system *sys) {
    px_system_stats st;
    memset(&st, 0, sizeof(st));
    px_system_stats_get(sys, &st);
    return st.restarts;
}

static px_err send_out(px_system *sys, px_ref to, uint32_t tag, const void *p, size_t n) {
    px_msg *m = NULL;
    px_err err = px_msg_bytes(&m, tag, p, n);
    if (err == PX_OK) {
        err = px_system_send(sys, to, &m);
    }
    px_msg_free(m);
    return err;
}

static px_err send_u64_out(px_system *sys, px_ref to, uint32_t tag, uint64_t v) {
    px_msg *m = NULL;
    px_err err = px_msg_u64(&m, tag, v);
    if (err == PX_OK) {
        err = px_system_send(sys, to, &m);
    }
    px_msg_free(m);
    return err;
}

static px_err spawn(px_system *sys, const char *behavior, uint64_t arg, px_ref *out) {
    px_msg *a = NULL;
    px_err err = px_msg_u64(&a, PX_EX_TAG_ARG, arg);
    if (err == PX_OK) {
        err = px_system_spawn_named(sys, behavior, &a, NULL, out);
    }
    px_msg_free(a);
    CHECK(err == PX_OK, "spawn %s: %s", behavior, px_strerror(err));
    return err;
}

/* ---- pool: a client actor that checks every result ---- */

typedef struct client {
    _Atomic uint64_t answered;
    _Atomic uint64_t wrong;
    uint8_t seen[POOL_JOBS]; /* only the client writes */
} client;

static px_err client_init(px_ctx *ctx, const px_msg *arg) {
    px_set_state(ctx, (void *)(uintptr_t)px_msg_get_u64(arg));
    return PX_OK;
}

static px_err client_receive(px_ctx *ctx, px_msg *m) {
    client *c = px_state(ctx);
    size_t len = 0;
    const void *data = px_msg_data(m, &len);
    px_ex_result r;
    if (px_msg_tag(m) != PX_EX_POOL_RESULT || data == NULL || len != sizeof(r)) {
        atomic_fetch_add(&c->wrong, 1);
        return PX_OK;
    }
    memcpy(&r, data, sizeof(r));
    if (r.id >= POOL_JOBS || c->seen[r.id] || r.result != px_ex_collatz_steps(r.value)) {
        atomic_fetch_add(&c->wrong, 1);
    } else {
        c->seen[r.id] = 1;
    }
    atomic_fetch_add(&c->answered, 1);
    return PX_OK;
}

static const px_behavior client_behavior = {
    .name = "demo.ex.client", .init = client_init, .receive = client_receive};

static void run_pool(px_system *sys) {
    static client the_client; /* zeroed; outlives the client actor (run once) */
    client *c = &the_client;
    px_ref cref, pool;
    px_msg *a = NULL;
    px_err err = px_msg_u64(&a, 0, (uint64_t)(uintptr_t)c);
    if (err == PX_OK) {
        err = px_system_spawn(sys, &client_behavior, &a, NULL, &cref);
    }
    px_msg_free(a);
    CHECK(err == PX_OK, "pool: spawn client: %s", px_strerror(err));
    uint64_t r0 = restarts(sys);
    if (err != PX_OK || spawn(sys, "ex.pool", POOL_WORKERS, &pool) != PX_OK) {
        return;
    }
    uint32_t poisoned = 0;
    for (uint32_t id = 0; id < POOL_JOBS && err == PX_OK; id++) {
        int poison = id % POOL_POISON_EVERY == POOL_POISON_EVERY - 1;
        px_ex_job job = {.id = id, .value = 1000003u + id,
                         .flags = poison ? PX_EX_JOB_POISON : 0, .reply_to = cref};
        poisoned += (uint32_t)poison;
        err = send_out(sys, pool, PX_EX_POOL_JOB, &job, sizeof(job));
    }
    CHECK(err == PX_OK, "pool: send: %s", px_strerror(err));
    uint64_t want = POOL_JOBS - poisoned;
    WAIT_FOR(atomic_load(&c->answered) >= want);
    WAIT_FOR(restarts(sys) - r0 >= poisoned);
    px_examples_stats st = ex(sys);
    uint64_t answered = atomic_load(&c->answered);
    uint64_t rs = restarts(sys) - r0;
    printf("  pool      %u jobs over %u workers: %" PRIu64 " answered, %u poisoned -> %" PRIu64
           " worker restarts (OneForOne; %" PRIu64 " worker inits, pool started %" PRIu64
           " time)\n",
           POOL_JOBS, POOL_WORKERS, answered, poisoned, rs, st.pool_worker_inits,
           st.pool_inits);
    CHECK(answered == want, "pool: %" PRIu64 " jobs answered, expected %" PRIu64, answered, want);
    CHECK(atomic_load(&c->wrong) == 0, "pool: %" PRIu64 " wrong or duplicate results",
          (uint64_t)atomic_load(&c->wrong));
    CHECK(rs == poisoned, "pool: %" PRIu64 " restarts, expected %u", rs, poisoned);
    CHECK(st.pool_worker_inits == POOL_WORKERS + poisoned, "pool: %" PRIu64 " worker inits",
          st.pool_worker_inits);
    CHECK(st.pool_inits == 1, "pool: the pool started %" PRIu64 " times", st.pool_inits);
    px_stop(sys, pool);
    px_stop(sys, cref);
}

static void run_pipeline(px_system *sys) {
    px_ref pipe;
    uint64_t r0 = restarts(sys);
    if (spawn(sys, "ex.pipeline", 0, &pipe) != PX_OK) {
        return;
    }
    uint64_t items = 0, sum = 0;
    px_err err = PX_OK;
    for (uint32_t i = 0; i < PIPE_RECORDS && err == PX_OK; i++) {
        char rec[96];
        uint64_t a = i, b = 2 * i + 1;
        snprintf(rec, sizeof(rec), i == PIPE_POISON_AT ? "%" PRIu64 ", poison, %" PRIu64
                                                       : "%" PRIu64 ", %" PRIu64,
                 a, b);
        items += 2;
        sum += a * a + b * b;
        err = send_out(sys, pipe, PX_EX_PIPE_RECORD, rec, strlen(rec));
    }
    CHECK(err == PX_OK, "pipeline: send: %s", px_strerror(err));
    WAIT_FOR(ex(sys).pipe_sunk >= items);
    WAIT_FOR(restarts(sys) - r0 >= 2);
    px_examples_stats st = ex(sys);
    uint64_t rs = restarts(sys) - r0;
    printf("  pipeline  %u records, %" PRIu64 " items sunk (sum %" PRIu64 "), 1 poison item -> "
           "%" PRIu64 " restarts (RestForOne; inits parse %" PRIu64 ", transform %" PRIu64
           ", sink %" PRIu64 ")\n",
           PIPE_RECORDS, st.pipe_sunk, st.pipe_sum, rs, st.pipe_stage_inits[0],
           st.pipe_stage_inits[1], st.pipe_stage_inits[2]);
    CHECK(st.pipe_sunk == items && st.pipe_sum == sum,
          "pipeline: sunk %" PRIu64 " (sum %" PRIu64 "), expected %" PRIu64 " (sum %" PRIu64 ")",
          st.pipe_sunk, st.pipe_sum, items, sum);
    CHECK(st.pipe_stage_inits[PX_EX_STAGE_PARSE] == 1, "pipeline: parse restarted");
    CHECK(st.pipe_stage_inits[PX_EX_STAGE_TRANSFORM] == 2 &&
              st.pipe_stage_inits[PX_EX_STAGE_SINK] == 2,
          "pipeline: transform/sink inits %" PRIu64 "/%" PRIu64 ", expected 2/2",
          st.pipe_stage_inits[1], st.pipe_stage_inits[2]);
    CHECK(rs == 2, "pipeline: %" PRIu64 " restarts, expected 2", rs);
    px_stop(sys, pipe);
}

static void run_trio(px_system *sys) {
    px_ref trio;
    uint64_t r0 = restarts(sys);
    if (spawn(sys, "ex.trio", 0, &trio) != PX_OK) {
        return;
    }
    px_err err = send_u64_out(sys, trio, PX_EX_TRIO_RUN, TRIO_RUN);
    WAIT_FOR(ex(sys).trio_handled >= TRIO_RUN);
    if (err == PX_OK) {
        err = send_u64_out(sys, trio, PX_EX_TRIO_FAIL, 1);
    }
    WAIT_FOR(restarts(sys) - r0 >= 3);
    if (err == PX_OK) {
        err = send_u64_out(sys, trio, PX_EX_TRIO_RUN, TRIO_RUN);
    }
    CHECK(err == PX_OK, "trio: send: %s", px_strerror(err));
    WAIT_FOR(ex(sys).trio_handled >= 2 * TRIO_RUN);
    px_examples_stats st = ex(sys);
    uint64_t rs = restarts(sys) - r0;
    printf("  trio      %" PRIu64 " numbers of one sequence (%" PRIu64
           " out of order), 1 member failure -> %" PRIu64
           " restarts (AllForOne; member inits %" PRIu64 "/%" PRIu64 "/%" PRIu64 ")\n",
           st.trio_handled, st.trio_out_of_sequence, rs, st.trio_member_inits[0],
           st.trio_member_inits[1], st.trio_member_inits[2]);
    CHECK(st.trio_handled == 2 * TRIO_RUN, "trio: %" PRIu64 " numbers handled", st.trio_handled);
    CHECK(st.trio_out_of_sequence == 0, "trio: sequence broken");
    for (int i = 0; i < 3; i++) {
        CHECK(st.trio_member_inits[i] == 2, "trio: member %d started %" PRIu64 " times", i,
              st.trio_member_inits[i]);
    }
    CHECK(rs == 3, "trio: %" PRIu64 " restarts, expected 3", rs);
    px_stop(sys, trio);
}

static void run_hier(px_system *sys) {
    px_ref top;
    uint64_t r0 = restarts(sys);
    if (spawn(sys, "ex.hier", HIER_LEAVES, &top) != PX_OK) {
        return;
    }
    px_err err = PX_OK;
    for (uint32_t round = 0; round < 3 && err == PX_OK; round++) {
        for (uint32_t i = 0; i < HIER_LEAVES && err == PX_OK; i++) {
            err = send_u64_out(sys, top, PX_EX_HIER_WORK, i);
        }
        WAIT_FOR(ex(sys).hier_work_done >= (round + 1) * HIER_LEAVES);
        if (round == 0 && err == PX_OK) { /* the ordinary class: a leaf restart */
            px_ex_hier_fail f = {.leaf = 0, .code = PX_EFAIL};
            err = send_out(sys, top, PX_EX_HIER_FAIL, &f, sizeof(f));
            WAIT_FOR(restarts(sys) - r0 >= 1);
        } else if (round == 1 && err == PX_OK) { /* the escalated class */
            px_ex_hier_fail f = {.leaf = 1, .code = PX_ESYS};
            err = send_out(sys, top, PX_EX_HIER_FAIL, &f, sizeof(f));
            WAIT_FOR(ex(sys).hier_mid_inits >= 2 && restarts(sys) - r0 >= 2);
        }
    }
    CHECK(err == PX_OK, "hier: send: %s", px_strerror(err));
    px_examples_stats st = ex(sys);
    uint64_t rs = restarts(sys) - r0;
    printf("  hier      %" PRIu64 " work units; EFAIL in a leaf -> %" PRIu64
           " leaf restart, ESYS escalated %" PRIu64 "x -> middle restarted %" PRIu64
           "x (inits top %" PRIu64 ", middle %" PRIu64 ", leaves %" PRIu64 ")\n",
           st.hier_work_done, st.hier_leaf_restarts, st.hier_escalated, st.hier_mid_restarts,
           st.hier_top_inits, st.hier_mid_inits, st.hier_leaf_inits);
    CHECK(st.hier_work_done == 3 * HIER_LEAVES, "hier: %" PRIu64 " work units",
          st.hier_work_done);
    CHECK(st.hier_leaf_restarts == 1 && st.hier_escalated == 1 && st.hier_mid_restarts == 1,
          "hier: decisions leaf-restart/escalate/middle-restart %" PRIu64 "/%" PRIu64
          "/%" PRIu64 ", expected 1/1/1",
          st.hier_leaf_restarts, st.hier_escalated, st.hier_mid_restarts);
    CHECK(st.hier_top_inits == 1 && st.hier_mid_inits == 2 &&
              st.hier_leaf_inits == 2 * HIER_LEAVES + 1,
          "hier: inits top/middle/leaves %" PRIu64 "/%" PRIu64 "/%" PRIu64
          ", expected 1/2/%u",
          st.hier_top_inits, st.hier_mid_inits, st.hier_leaf_inits, 2 * HIER_LEAVES + 1);
    CHECK(rs == 2, "hier: %" PRIu64 " restarts, expected 2 (a leaf, the middle)", rs);
    px_stop(sys, top);
}

int demo_run_examples(px_log_level level) {
    ok_all = 1;
    px_config cfg;
    px_config_init(&cfg);
    cfg.node_name = "demo-examples";
    cfg.log_level = level;
    px_system *sys = NULL;
    px_err err = px_system_alloc(&sys, &cfg);
    if (err != PX_OK) {
        printf("  CHECK FAILED: examples: px_system_alloc: %s\n", px_strerror(err));
        return 0;
    }
    err = px_examples_register(sys);
    if (err != PX_OK) {
        printf("  CHECK FAILED: px_examples_register: %s\n", px_strerror(err));
        px_system_free(sys);
        return 0;
    }
    printf("plexus-demo: supervision examples (failures below are deliberate)\n");
    run_pool(sys);
    run_pipeline(sys);
    run_trio(sys);
    run_hier(sys);
    px_system_stats st;
    px_system_stats_get(sys, &st);
    err = px_system_shutdown(sys);
    CHECK(err == PX_OK, "examples: shutdown: %s", px_strerror(err));
    printf("  examples  %" PRIu64 " failures, %" PRIu64 " restarts, %" PRIu64
           " escalations in all\n",
           st.failures, st.restarts, st.escalations);
    px_system_free(sys);
    px_examples_forget(sys);
    return ok_all;
}
