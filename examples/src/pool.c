/*
 * pool.c — ex.pool: a OneForOne worker pool (see plexus/examples.h).
 *
 *   client --JOB--> ex.pool --WORK (round-robin)--> worker.i --RESULT--> reply_to
 *
 * The pool holds only its workers' refs and a round-robin cursor. A worker
 * ref stays valid across the worker's restarts, so routing never changes:
 * jobs routed to a worker while it is suspended or restarting wait in its
 * mailbox and the fresh instance answers them.
 */
#include <stdlib.h>
#include <string.h>

#include "ex_internal.h"

uint64_t px_ex_collatz_steps(uint64_t v) {
    uint64_t steps = 0;
    while (v > 1) {
        if (v & 1) {
            if (v > (UINT64_MAX - 1) / 3) {
                break; /* would overflow: stop counting here */
            }
            v = 3 * v + 1;
        } else {
            v >>= 1;
        }
        steps++;
    }
    return steps;
}

/* ---- worker ---- */

typedef struct pool_worker {
    ex_stats *st;
    uint32_t idx;
} pool_worker;

static px_err worker_init(px_ctx *ctx, const px_msg *arg) {
    pool_worker *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        return PX_ENOMEM;
    }
    w->st = ex_stats_of(ctx);
    w->idx = (uint32_t)ex_arg(arg, 0);
    px_set_state(ctx, w);
    EX_ADD(w->st, pool_worker_inits, 1);
    return PX_OK;
}

static px_err worker_receive(px_ctx *ctx, px_msg *m) {
    pool_worker *w = px_state(ctx);
    size_t len = 0;
    const void *data = px_msg_data(m, &len);
    if (px_msg_tag(m) != PX_EX_POOL_WORK || data == NULL || len != sizeof(px_ex_job)) {
        return PX_OK; /* not ours: ignore */
    }
    px_ex_job job;
    memcpy(&job, data, sizeof(job));
    if (job.flags & PX_EX_JOB_POISON) {
        EX_ADD(w->st, pool_jobs_poisoned, 1);
        px_fail(ctx, PX_EFAIL, "worker.%u: poisoned job %llu", w->idx,
                (unsigned long long)job.id);
        return PX_EFAIL;
    }
    px_ex_result r = {
        .id = job.id,
        .value = job.value,
        .result = px_ex_collatz_steps(job.value),
        .worker = w->idx,
    };
    EX_ADD(w->st, pool_jobs_done, 1);
    if (px_ref_is_nil(job.reply_to)) {
        return PX_OK; /* nobody to tell */
    }
    px_err err = ex_send_bytes(ctx, job.reply_to, PX_EX_POOL_RESULT, &r, sizeof(r));
    if (err == PX_OK) {
        EX_ADD(w->st, pool_results_sent, 1);
    } else {
        /* A full bounded mailbox at the client: the result is lost, which
         * is the client's choice of mailbox; say so, do not fail. */
        px_log(px_ctx_system(ctx), PX_LOG_WARN, "worker.%u: result of job %llu not sent: %s",
               w->idx, (unsigned long long)job.id, px_strerror(err));
    }
    return PX_OK;
}

const px_behavior px_ex_pool_worker = {
    .name = "ex.pool.worker",
    .init = worker_init,
    .receive = worker_receive,
    .stop = ex_free_state,
};

/* ---- pool ---- */

typedef struct pool {
    ex_stats *st;
    uint32_t n;
    uint32_t next; /* round-robin cursor */
    px_ref workers[];
} pool;

static px_err pool_init(px_ctx *ctx, const px_msg *arg) {
    uint64_t n = ex_arg(arg, 4);
    if (n == 0 || n > PX_EX_POOL_MAX_WORKERS) {
        px_fail(ctx, PX_EINVAL, "ex.pool: %llu workers (1..%u)", (unsigned long long)n,
                PX_EX_POOL_MAX_WORKERS);
        return PX_EINVAL;
    }
    pool *p = calloc(1, sizeof(*p) + (size_t)n * sizeof(px_ref));
    if (p == NULL) {
        return PX_ENOMEM;
    }
    p->st = ex_stats_of(ctx);
    p->n = (uint32_t)n;
    px_set_state(ctx, p); /* before spawning: stop frees it if a restart follows */
    /* A worker may restart 10 times a second; more means the jobs are not
     * the problem, and the pool escalates. */
    px_restart_policy pol;
    px_restart_policy_init(&pol);
    pol.max_restarts = 10;
    pol.window_ms = 1000;
    for (uint32_t i = 0; i < p->n; i++) {
        char id[32];
        snprintf(id, sizeof(id), "worker.%u", i);
        px_err err = ex_spawn_child(ctx, id, px_ex_pool_worker.name, i, &pol, &p->workers[i]);
        if (err != PX_OK) {
            free(p); /* a failed init is not followed by stop */
            px_set_state(ctx, NULL);
            return err;
        }
    }
    EX_ADD(p->st, pool_inits, 1);
    return PX_OK;
}

static px_err pool_receive(px_ctx *ctx, px_msg *m) {
    pool *p = px_state(ctx);
    size_t len = 0;
    const void *data = px_msg_data(m, &len);
    if (px_msg_tag(m) != PX_EX_POOL_JOB || data == NULL || len != sizeof(px_ex_job)) {
        px_log(px_ctx_system(ctx), PX_LOG_WARN, "ex.pool: ignoring a message (tag %#x, %zu bytes)",
               px_msg_tag(m), len);
        return PX_OK;
    }
    px_ex_job job;
    memcpy(&job, data, sizeof(job));
    if (px_ref_is_nil(job.reply_to)) {
        job.reply_to = px_msg_sender(m);
    }
    px_ref to = p->workers[p->next];
    p->next = (p->next + 1) % p->n;
    px_err err = ex_send_bytes(ctx, to, PX_EX_POOL_WORK, &job, sizeof(job));
    if (err != PX_OK) {
        return err; /* out of memory or a misconfigured bounded mailbox: fail */
    }
    EX_ADD(p->st, pool_jobs_routed, 1);
    return PX_OK;
}

static px_directive pool_on_child_failure(px_ctx *ctx, const px_failure *f) {
    pool *p = px_state(ctx);
    EX_ADD(p->st, pool_worker_failures, 1);
    px_log(px_ctx_system(ctx), PX_LOG_INFO, "ex.pool: %s failed (%s: %s); restarting it",
           f->child_id, px_errname(f->code), f->reason);
    return PX_DIRECTIVE_RESTART; /* OneForOne: that worker only */
}

const px_behavior px_ex_pool = {
    .name = "ex.pool",
    .init = pool_init,
    .receive = pool_receive,
    .stop = ex_free_state,
    .on_child_failure = pool_on_child_failure,
    .strategy = PX_ONE_FOR_ONE,
};
