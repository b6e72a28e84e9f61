/*
 * ex_internal.h — what the example behaviors share: their counters and a
 * few send helpers. Not installed.
 */
#ifndef PX_EX_INTERNAL_H
#define PX_EX_INTERNAL_H

#include <stdatomic.h>
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>

#include <plexus/examples.h>

/* One system's counters: px_examples_stats as an array of atomics (every
 * field of px_examples_stats is a uint64_t, so field offset / 8 is the
 * index). */
#define EX_NCOUNTERS (sizeof(px_examples_stats) / sizeof(uint64_t))
typedef struct ex_stats {
    _Atomic uint64_t v[EX_NCOUNTERS];
} ex_stats;

/* The counters of the system the calling actor runs on. Never NULL for an
 * actor of a registered behavior (px_examples_register made them first);
 * a shared dummy otherwise. Look it up once (in init) and keep it. */
ex_stats *ex_stats_of(px_ctx *ctx);

#define EX_IDX(field) (offsetof(px_examples_stats, field) / sizeof(uint64_t))
#define EX_ADD(st, field, n)                                                   \
    atomic_fetch_add_explicit(&(st)->v[EX_IDX(field)], (uint64_t)(n), memory_order_relaxed)

/* The start argument's value, or `dflt` for a NULL argument. */
static inline uint64_t ex_arg(const px_msg *arg, uint64_t dflt) {
    return arg != NULL ? px_msg_get_u64(arg) : dflt;
}

/* Sends a u64 / bytes message; on error frees it and returns the error. */
px_err ex_send_u64(px_ctx *ctx, px_ref to, uint32_t tag, uint64_t v);
px_err ex_send_bytes(px_ctx *ctx, px_ref to, uint32_t tag, const void *p, size_t n);

/* The `stop` callback of every example behavior: frees the state its init
 * allocated (px_state, NULL-safe). Actor context. */
void ex_free_state(px_ctx *ctx);

/* Spawns a supervised child `id` of behavior `behavior` with a u64 start
 * argument; the argument is freed on error. */
px_err ex_spawn_child(px_ctx *ctx, const char *id, const char *behavior, uint64_t arg,
                      const px_restart_policy *policy, px_ref *out);

/* Behavior tables (one file each). */
extern const px_behavior px_ex_pool, px_ex_pool_worker;
extern const px_behavior px_ex_pipeline, px_ex_pipe_parse, px_ex_pipe_transform,
    px_ex_pipe_sink;
extern const px_behavior px_ex_trio, px_ex_trio_member;
extern const px_behavior px_ex_hier, px_ex_hier_mid, px_ex_hier_leaf;

#endif
