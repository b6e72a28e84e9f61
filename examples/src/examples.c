/*
 * examples.c — registration of the example behaviors and their counters.
 *
 * Counters live in a static table of EX_MAX_SYSTEMS slots keyed by the
 * px_system pointer (px_system has no user-data slot). Actors look their
 * slot up once, in init, under the table's mutex; afterwards they only do
 * relaxed atomic adds. Slots are static storage, so a late reader can
 * never touch freed memory.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ex_internal.h"

#define EX_MAX_SYSTEMS 64

_Static_assert(sizeof(px_examples_stats) % sizeof(uint64_t) == 0,
               "px_examples_stats must hold only uint64_t fields");

static struct {
    px_system *sys; /* NULL = free */
    ex_stats st;
} slots[EX_MAX_SYSTEMS];
static pthread_mutex_t slots_mtx = PTHREAD_MUTEX_INITIALIZER;
static ex_stats dummy; /* for actors of a system that was never registered */

static const px_behavior *const all_behaviors[] = {
    &px_ex_pool,       &px_ex_pool_worker,    &px_ex_pipeline,  &px_ex_pipe_parse,
    &px_ex_pipe_transform, &px_ex_pipe_sink,  &px_ex_trio,      &px_ex_trio_member,
    &px_ex_hier,       &px_ex_hier_mid,       &px_ex_hier_leaf,
};

/* The index of the slot held by sys (NULL: the first free slot), or -1.
 * Caller holds slots_mtx. */
static int slot_locked(const px_system *sys) {
    for (int i = 0; i < EX_MAX_SYSTEMS; i++) {
        if (slots[i].sys == sys) {
            return i;
        }
    }
    return -1;
}

/* The counters of sys, or NULL. Caller holds slots_mtx. */
static ex_stats *find_locked(const px_system *sys) {
    int i = slot_locked(sys);
    return i >= 0 ? &slots[i].st : NULL;
}

ex_stats *ex_stats_of(px_ctx *ctx) {
    px_system *sys = px_ctx_system(ctx);
    pthread_mutex_lock(&slots_mtx);
    ex_stats *st = find_locked(sys);
    pthread_mutex_unlock(&slots_mtx);
    return st != NULL ? st : &dummy;
}

px_err px_examples_register(px_system *sys) {
    if (sys == NULL) {
        return PX_EINVAL;
    }
    if (px_behavior_lookup(sys, px_ex_pool.name) != NULL) {
        return PX_EEXIST; /* registered before: keep its counters */
    }
    pthread_mutex_lock(&slots_mtx);
    /* A slot for this address may be left from a freed system that was
     * never forgotten: reuse it; else take a free one. */
    int idx = slot_locked(sys);
    if (idx < 0) {
        idx = slot_locked(NULL);
    }
    if (idx < 0) {
        pthread_mutex_unlock(&slots_mtx);
        return PX_ELIMIT;
    }
    slots[idx].sys = sys;
    for (size_t k = 0; k < EX_NCOUNTERS; k++) {
        atomic_store_explicit(&slots[idx].st.v[k], 0, memory_order_relaxed);
    }
    pthread_mutex_unlock(&slots_mtx);

    for (size_t i = 0; i < sizeof(all_behaviors) / sizeof(all_behaviors[0]); i++) {
        px_err err = px_behavior_register(sys, all_behaviors[i]);
        if (err != PX_OK) {
            return err;
        }
    }
    return PX_OK;
}

px_err px_examples_stats_get(px_system *sys, px_examples_stats *out) {
    if (sys == NULL || out == NULL) {
        return PX_EINVAL;
    }
    pthread_mutex_lock(&slots_mtx);
    ex_stats *st = find_locked(sys);
    if (st != NULL) {
        uint64_t v[EX_NCOUNTERS];
        for (size_t k = 0; k < EX_NCOUNTERS; k++) {
            v[k] = atomic_load_explicit(&st->v[k], memory_order_relaxed);
        }
        memcpy(out, v, sizeof(*out));
    }
    pthread_mutex_unlock(&slots_mtx);
    return st != NULL ? PX_OK : PX_ENOENT;
}

void px_examples_forget(px_system *sys) {
    if (sys == NULL) {
        return;
    }
    pthread_mutex_lock(&slots_mtx);
    for (int i = 0; i < EX_MAX_SYSTEMS; i++) {
        if (slots[i].sys == sys) {
            slots[i].sys = NULL;
        }
    }
    pthread_mutex_unlock(&slots_mtx);
}

/* ---- helpers shared by the behaviors ---- */

px_err ex_send_u64(px_ctx *ctx, px_ref to, uint32_t tag, uint64_t v) {
    px_msg *m = NULL;
    px_err err = px_msg_u64(&m, tag, v);
    if (err == PX_OK) {
        err = px_send(ctx, to, &m);
    }
    px_msg_free(m); /* NULL after a successful send */
    return err;
}

px_err ex_send_bytes(px_ctx *ctx, px_ref to, uint32_t tag, const void *p, size_t n) {
    px_msg *m = NULL;
    px_err err = px_msg_bytes(&m, tag, p, n);
    if (err == PX_OK) {
        err = px_send(ctx, to, &m);
    }
    px_msg_free(m);
    return err;
}

void ex_free_state(px_ctx *ctx) { free(px_state(ctx)); }

px_err ex_spawn_child(px_ctx *ctx, const char *id, const char *behavior, uint64_t arg,
                      const px_restart_policy *policy, px_ref *out) {
    px_msg *a = NULL;
    px_err err = px_msg_u64(&a, PX_EX_TAG_ARG, arg);
    if (err != PX_OK) {
        return err;
    }
    px_child_spec spec = {
        .id = id,
        .behavior = behavior,
        .restart = PX_RESTART_PERMANENT,
        .mailbox = NULL,
        .policy = policy,
    };
    err = px_spawn_child(ctx, &spec, &a, out);
    px_msg_free(a); /* NULL if the spawn took it */
    if (err != PX_OK) {
        px_log(px_ctx_system(ctx), PX_LOG_ERROR, "examples: spawning child %s (%s): %s", id,
               behavior, px_strerror(err));
    }
    return err;
}
