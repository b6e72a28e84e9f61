/*
 * plexus/examples.h — shipped example behaviors (library px_examples).
 *
 * Four small supervision trees, each a complete use of plexus/supervisor.h.
 * px_examples_register(sys) registers all of them by name; spawn one with
 * px_system_spawn_named / px_spawn_named and the start argument shown
 * (always a px_msg_u64, tag PX_EX_TAG_ARG, value as described; a NULL
 * argument means the default).
 *
 *  ex.pool      OneForOne worker pool. Arg: workers N (1..256, default 4).
 *               Spawns ex.pool.worker "worker.0".."worker.<N-1>" with
 *               px_spawn_child and routes each PX_EX_POOL_JOB round-robin to
 *               them. A worker computes the job and sends PX_EX_POOL_RESULT
 *               to the job's reply_to (the job's sender when reply_to is
 *               nil). A job with PX_EX_JOB_POISON makes its worker fail
 *               (px_fail, PX_EFAIL): the pool restarts that worker only, and
 *               the jobs already queued for it go to the fresh instance (the
 *               poisoned job itself gets no result). Workers may restart at
 *               most 10 times within 1000 ms each; beyond that the pool
 *               escalates (its own parent decides).
 *
 *  ex.pipeline  RestForOne three-stage pipeline, parse -> transform -> sink
 *               (ex.pipeline.parse, ex.pipeline.transform, ex.pipeline.sink,
 *               ids "parse", "transform", "sink", spawned in that order).
 *               Arg: unused. PX_EX_PIPE_RECORD carries text: decimal numbers
 *               separated by commas or spaces. parse turns each number into
 *               an item (a token that is not a number is rejected and
 *               counted; the token "poison" becomes a poison item),
 *               transform squares it, sink adds it up. A poison item makes
 *               transform fail; RestForOne then restarts transform and sink
 *               (sink's running totals depend on transform) but not parse.
 *               Stages hand items to the pipeline actor, which routes them to
 *               the next stage: child refs stay valid across restarts, so the
 *               routing never needs rewiring, and what was queued for a
 *               restarting stage waits in its mailbox.
 *
 *  ex.trio      AllForOne trio. Arg: unused. Three ex.trio.member children
 *               ("member.0".."member.2") share one sequence: the trio owns
 *               the counter and deals numbers out round-robin, number s to
 *               member s % 3. Each member checks that the numbers it gets
 *               are consecutive in its class (last + 3; a fresh instance
 *               takes the first number it sees as its starting point) and
 *               counts violations (trio_out_of_sequence; 0 when all is well).
 *               PX_EX_TRIO_RUN(n) deals the next n numbers;
 *               PX_EX_TRIO_FAIL(i) makes member i fail, and AllForOne
 *               restarts all three (stopped in reverse start order, then
 *               started in order) — the members' positions are only
 *               meaningful together.
 *
 *  ex.hier      Three levels: ex.hier (top, OneForOne) -> ex.hier.mid
 *               (middle, id "mid", OneForOne) -> ex.hier.leaf ("leaf.0"..).
 *               Arg: leaves K (1..64, default 3). The middle's decider
 *               escalates failures with code PX_ESYS (a leaf lost something
 *               the whole subtree depends on) and restarts the leaf for every
 *               other code. The top's decider restarts the middle, which
 *               stops all its leaves and spawns them afresh in its init.
 *               PX_EX_HIER_WORK(i) is a unit of work for leaf i;
 *               PX_EX_HIER_FAIL (px_ex_hier_fail) makes a leaf fail with a
 *               given code. Both go to the top, which forwards them down.
 *
 * Messages to the four supervisors may come from outside actors
 * (px_system_send) or from actors. Nothing here blocks a worker.
 *
 * Counters: every system the examples are registered on gets one
 * px_examples_stats (read with px_examples_stats_get). The counters are
 * monotonic, updated with relaxed atomics by the actors as things happen;
 * a reader sees each counter's current value, not a consistent snapshot
 * across counters. "inits" counts successful init calls: the first start
 * plus one per restart of that instance.
 *
 * The payload structs are node-local (plain C structs in px_msg_bytes):
 * these examples run on one node.
 */
#ifndef PLEXUS_EXAMPLES_H
#define PLEXUS_EXAMPLES_H

#include <stdint.h>

#include <plexus/plexus.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Start arguments: px_msg_u64(&arg, PX_EX_TAG_ARG, value). The tag is not
 * checked; only the value is read. */
#define PX_EX_TAG_ARG 0x45580000u

/* --- ex.pool ------------------------------------------------------------ */

/* -> ex.pool, bytes: px_ex_job. */
#define PX_EX_POOL_JOB 0x45580101u
/* ex.pool.worker -> job.reply_to, bytes: px_ex_result. */
#define PX_EX_POOL_RESULT 0x45580102u
/* ex.pool -> ex.pool.worker (internal), bytes: px_ex_job with reply_to
 * filled in. */
#define PX_EX_POOL_WORK 0x45580103u

#define PX_EX_POOL_MAX_WORKERS 256u
#define PX_EX_JOB_POISON 0x1u /* px_ex_job.flags: the worker fails on this job */

typedef struct px_ex_job {
    uint64_t id;     /* echoed in the result */
    uint64_t value;  /* the input: the result is collatz_steps(value) */
    uint32_t flags;  /* PX_EX_JOB_POISON or 0 */
    uint32_t reserved;
    px_ref reply_to; /* where the result goes; nil = the job's sender */
} px_ex_job;

typedef struct px_ex_result {
    uint64_t id;     /* the job's id */
    uint64_t value;  /* the job's value */
    uint64_t result; /* px_ex_collatz_steps(value) */
    uint32_t worker; /* index of the worker that computed it */
    uint32_t reserved;
} px_ex_result;

/* What a pool worker computes: the number of Collatz steps from v to 1
 * (0 for v <= 1; counting stops where 3v+1 would overflow). Exposed so
 * callers can check results. Pure: no ownership, any thread or context,
 * cannot fail. */
uint64_t px_ex_collatz_steps(uint64_t v);

/* --- ex.pipeline -------------------------------------------------------- */

/* -> ex.pipeline, bytes: text, e.g. "1, 2 3,poison,4". */
#define PX_EX_PIPE_RECORD 0x45580201u
/* internal: parse -> pipeline -> transform, u64 item */
#define PX_EX_PIPE_ITEM 0x45580202u
/* internal: parse -> pipeline -> transform, u64 (ignored): transform fails */
#define PX_EX_PIPE_POISON 0x45580203u
/* internal: transform -> pipeline -> sink, u64 squared item */
#define PX_EX_PIPE_OUT 0x45580204u

/* Stage indices for px_examples_stats.pipe_stage_inits. */
enum { PX_EX_STAGE_PARSE = 0, PX_EX_STAGE_TRANSFORM = 1, PX_EX_STAGE_SINK = 2 };

/* --- ex.trio ------------------------------------------------------------ */

/* -> ex.trio, u64 n: deal the next n numbers of the sequence. */
#define PX_EX_TRIO_RUN 0x45580301u
/* -> ex.trio, u64 i (0..2): member i fails (px_fail, PX_EFAIL). */
#define PX_EX_TRIO_FAIL 0x45580302u
/* internal: ex.trio -> member, u64 sequence number */
#define PX_EX_TRIO_DEAL 0x45580303u

/* --- ex.hier ------------------------------------------------------------ */

/* -> ex.hier, u64 leaf index: one unit of work for that leaf. */
#define PX_EX_HIER_WORK 0x45580401u
/* -> ex.hier, bytes: px_ex_hier_fail. The leaf fails with `code`
 * (PX_ESYS is escalated by the middle; anything else restarts the leaf). */
#define PX_EX_HIER_FAIL 0x45580402u

#define PX_EX_HIER_MAX_LEAVES 64u

typedef struct px_ex_hier_fail {
    uint32_t leaf; /* leaf index */
    int32_t code;  /* a px_err < 0; PX_OK is taken as PX_EFAIL */
} px_ex_hier_fail;

/* --- registration and counters ------------------------------------------ */

typedef struct px_examples_stats {
    /* ex.pool */
    uint64_t pool_inits;           /* ex.pool instances started */
    uint64_t pool_worker_inits;    /* ex.pool.worker instances started (all workers) */
    uint64_t pool_jobs_routed;     /* jobs the pool handed to a worker */
    uint64_t pool_jobs_done;       /* jobs a worker computed (poisoned ones excluded) */
    uint64_t pool_results_sent;    /* results sent (jobs with somewhere to reply to) */
    uint64_t pool_jobs_poisoned;   /* poisoned jobs a worker failed on */
    uint64_t pool_worker_failures; /* worker failures the pool's decider saw */
    /* ex.pipeline */
    uint64_t pipe_inits;             /* ex.pipeline instances started */
    uint64_t pipe_stage_inits[3];    /* per stage (PX_EX_STAGE_*) */
    uint64_t pipe_records;           /* records parse handled */
    uint64_t pipe_rejected;          /* tokens parse rejected (not numbers) */
    uint64_t pipe_items;             /* items transform handled */
    uint64_t pipe_sunk;              /* items sink added up */
    uint64_t pipe_sum;               /* their sum (of squares) */
    uint64_t pipe_stage_failures;    /* stage failures the pipeline's decider saw */
    /* ex.trio */
    uint64_t trio_inits;             /* ex.trio instances started */
    uint64_t trio_member_inits[3];   /* per member index */
    uint64_t trio_dealt;             /* numbers dealt out */
    uint64_t trio_handled;           /* numbers members handled */
    uint64_t trio_out_of_sequence;   /* numbers that broke a member's sequence */
    uint64_t trio_member_failures;   /* member failures the trio's decider saw */
    /* ex.hier */
    uint64_t hier_top_inits;         /* ex.hier instances started */
    uint64_t hier_mid_inits;         /* ex.hier.mid instances started */
    uint64_t hier_leaf_inits;        /* ex.hier.leaf instances started (all leaves) */
    uint64_t hier_work_done;         /* PX_EX_HIER_WORK units leaves did */
    uint64_t hier_escalated;         /* leaf failures the middle escalated */
    uint64_t hier_leaf_restarts;     /* leaf failures the middle answered with Restart */
    uint64_t hier_mid_restarts;      /* middle failures the top answered with Restart */
} px_examples_stats;

/* Registers ex.pool, ex.pool.worker, ex.pipeline, ex.pipeline.parse,
 * ex.pipeline.transform, ex.pipeline.sink, ex.trio, ex.trio.member, ex.hier,
 * ex.hier.mid and ex.hier.leaf on sys, and gives sys a fresh (zeroed) set
 * of counters. Call it once per system, before spawning any of them.
 * Borrows sys: its address keys the counters (held in static storage, not
 * in sys) until px_examples_forget. The behavior tables are static.
 * Errors: PX_EINVAL (sys NULL), PX_EEXIST (a name is taken, e.g. a second
 * call), PX_ELIMIT (more than 64 systems registered at once in this
 * process: see px_examples_forget). After an error other than PX_EINVAL
 * and PX_ELIMIT, sys may keep a slot: px_examples_forget releases it.
 * Thread-safe; not from actor context. */
px_err px_examples_register(px_system *sys);

/* Copies sys's counters into *out (caller's storage; left untouched on
 * error). Borrows sys; it may already be freed (only its address is used).
 * PX_EINVAL for NULL arguments, PX_ENOENT if px_examples_register was not
 * called for sys (or it was forgotten). Thread-safe; any context (a short
 * mutex hold). */
px_err px_examples_stats_get(px_system *sys, px_examples_stats *out);

/* Releases sys's counters (its slot in the process-wide table). Call it
 * after px_system_free(sys) — no example actor may run any more; sys is not
 * dereferenced. Safe for NULL and for a system that was never registered;
 * cannot fail. Thread-safe; not from actor context. */
void px_examples_forget(px_system *sys);

#ifdef __cplusplus
}
#endif
#endif
