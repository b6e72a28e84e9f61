/*
 * system.c — config validation, system lifecycle, registries, names,
 * stats, logging, and the entry points for threads outside actors
 * (spawn, send, blocking ask).
 *
 * Shutdown order: refuse outside intake -> cancel timers -> drain (wait for
 * quiescence: no enqueue, dequeue or turn for two samples, with every
 * enqueued message dequeued) or skip -> stop the root guardian, which stops
 * every actor children-first -> join the workers. px_system_free then
 * releases memory.
 *
 * The router is swapped while sends go on: px_system_set_router fills the
 * table not in use, publishes it and waits out the calls still counted
 * against the old one (the protocol is in runtime.h, pxi_router_enter).
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime.h"
#include "topic_int.h"

/* ---- config ---- */

void px_config_init(px_config *cfg) {
    memset(cfg, 0, sizeof(*cfg));
    cfg->node_name = "local";
    cfg->workers = 0;
    cfg->batch = 64;
    cfg->spin_us = 50;
    cfg->mailbox.capacity = 0;
    cfg->mailbox.overflow = PX_OVERFLOW_ERROR;
    cfg->mailbox.block_timeout_ms = 1000;
    cfg->max_actors = 1u << 24;
    cfg->max_mailbox_capacity = 1u << 20;
    cfg->max_msg_size = 16u << 20;
    cfg->shutdown_mode = PX_SHUTDOWN_DRAIN;
    cfg->root_policy = PX_ROOT_STOP;
    cfg->shutdown_timeout_ms = 5000;
    cfg->log_level = PX_LOG_INFO;
    cfg->log_sink = px_log_stderr;
    cfg->log_arg = NULL;
}

#define WHY(...)                                                               \
    do {                                                                       \
        if (why != NULL && why_len > 0) {                                      \
            snprintf(why, why_len, __VA_ARGS__);                               \
        }                                                                      \
        return PX_EINVAL;                                                      \
    } while (0)

px_err px_config_check(const px_config *cfg, char *why, size_t why_len) {
    if (cfg == NULL) {
        WHY("config is NULL");
    }
    const char *n = cfg->node_name;
    if (n == NULL || n[0] == '\0' || strlen(n) > 63) {
        WHY("node_name must be 1..63 characters (got %s)", n == NULL ? "NULL" : n[0] ? "too long" : "empty");
    }
    for (const char *p = n; *p; p++) {
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '_' && *p != '-') {
            WHY("node_name \"%s\" has '%c': only A-Z a-z 0-9 . _ - are allowed", n, *p);
        }
    }
    if (cfg->workers > 256) {
        WHY("workers = %u: must be 0 (online CPUs) or 1..256", cfg->workers);
    }
    if (cfg->batch < 1 || cfg->batch > 65536) {
        WHY("batch = %u: must be 1..65536", cfg->batch);
    }
    if (cfg->spin_us > 10000) {
        WHY("spin_us = %u: must be 0..10000", cfg->spin_us);
    }
    if (cfg->spin_max_us != 0 &&
        (cfg->spin_us == 0 || cfg->spin_max_us < cfg->spin_us || cfg->spin_max_us > 10000)) {
        WHY("spin_max_us = %u: must be 0 (spin_us is the ceiling; the spin shrinks to none) "
            "or spin_us (%u, > 0; = spin_us: fixed)..10000",
            cfg->spin_max_us, cfg->spin_us);
    }
    if (cfg->max_actors < 16 || cfg->max_actors > (1u << 28)) {
        WHY("max_actors = %u: must be 16..268435456", cfg->max_actors);
    }
    if (cfg->max_mailbox_capacity < 1 || cfg->max_mailbox_capacity > (1u << 30)) {
        WHY("max_mailbox_capacity = %u: must be 1..1073741824", cfg->max_mailbox_capacity);
    }
    if (cfg->mailbox.capacity > cfg->max_mailbox_capacity) {
        WHY("mailbox.capacity = %u exceeds max_mailbox_capacity = %u", cfg->mailbox.capacity,
            cfg->max_mailbox_capacity);
    }
    if (cfg->mailbox.overflow < PX_OVERFLOW_BLOCK || cfg->mailbox.overflow > PX_OVERFLOW_ERROR) {
        WHY("mailbox.overflow = %d: must be a px_overflow value (1..4)", (int)cfg->mailbox.overflow);
    }
    if (cfg->mailbox.block_timeout_ms > 3600000) {
        WHY("mailbox.block_timeout_ms = %u: must be 0..3600000", cfg->mailbox.block_timeout_ms);
    }
    if (cfg->max_msg_size < 1 || cfg->max_msg_size > (1ull << 31)) {
        WHY("max_msg_size = %zu: must be 1..2147483648", cfg->max_msg_size);
    }
    if (cfg->root_policy != PX_ROOT_STOP && cfg->root_policy != PX_ROOT_RESTART) {
        WHY("root_policy = %d: must be PX_ROOT_STOP or PX_ROOT_RESTART", (int)cfg->root_policy);
    }
    if (cfg->shutdown_mode != PX_SHUTDOWN_DRAIN && cfg->shutdown_mode != PX_SHUTDOWN_REJECT) {
        WHY("shutdown_mode = %d: must be PX_SHUTDOWN_DRAIN or PX_SHUTDOWN_REJECT", (int)cfg->shutdown_mode);
    }
    if (cfg->shutdown_timeout_ms > 3600000) {
        WHY("shutdown_timeout_ms = %u: must be 0..3600000", cfg->shutdown_timeout_ms);
    }
    if ((unsigned)cfg->log_level > PX_LOG_OFF) {
        WHY("log_level = %d: must be a px_log_level (0..6)", (int)cfg->log_level);
    }
    if (cfg->log_sink == NULL) {
        WHY("log_sink is NULL (use px_log_stderr)");
    }
    return PX_OK;
}

/* ---- logging ---- */

int px_log_enabled(const px_system *sys, px_log_level level) {
    return sys != NULL &&
           (int)level >= atomic_load_explicit(&sys->log_level, memory_order_relaxed) &&
           level < PX_LOG_OFF;
}

px_err px_system_set_log_level(px_system *sys, px_log_level level) {
    if (sys == NULL || (unsigned)level > PX_LOG_OFF) {
        return PX_EINVAL;
    }
    atomic_store_explicit(&sys->log_level, (int)level, memory_order_relaxed);
    return PX_OK;
}

static void vlog(px_log_sink sink, void *arg, px_log_level lvl, const char *node,
                 const char *fmt, va_list ap) {
    char line[1024];
    vsnprintf(line, sizeof(line), fmt, ap);
    sink(arg, lvl, node, line);
}

void px_log(px_system *sys, px_log_level level, const char *fmt, ...) {
    if (!px_log_enabled(sys, level)) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vlog(sys->cfg.log_sink, sys->cfg.log_arg, level, sys->node_name, fmt, ap);
    va_end(ap);
}

/* Logs before a system exists (bad config). */
static void early_log(const px_config *cfg, px_log_level lvl, const char *fmt, ...) {
    px_log_sink sink = (cfg != NULL && cfg->log_sink != NULL) ? cfg->log_sink : px_log_stderr;
    void *arg = cfg != NULL ? cfg->log_arg : NULL;
    const char *node = (cfg != NULL && cfg->node_name != NULL) ? cfg->node_name : "?";
    if (cfg != NULL && lvl < cfg->log_level) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vlog(sink, arg, lvl, node, fmt, ap);
    va_end(ap);
}

/* ---- root guardian ---- */

static px_err root_receive(px_ctx *ctx, px_msg *m) {
    px_log(px_ctx_system(ctx), PX_LOG_DEBUG, "root guardian ignores a message (kind %u)",
           px_msg_kind_of(m));
    return PX_OK;
}

static const px_behavior root_behavior = {.name = "plexus.root", .receive = root_receive};

/* ---- lifecycle ---- */


static px_err alloc_locks(px_system *sys) {
    nng_mtx **mtxs[] = {&sys->gq_mtx, &sys->slot_mtx, &sys->tree_mtx,
                        &sys->names_mtx, &sys->reg_mtx, &sys->life_mtx, &sys->dl_mtx,
                        &sys->rasks.mtx, &sys->hook_mtx};
    for (size_t i = 0; i < sizeof(mtxs) / sizeof(mtxs[0]); i++) {
        if (nng_mtx_alloc(mtxs[i]) != 0) {
            return PX_ENOMEM;
        }
    }
    return nng_cv_alloc(&sys->tree_cv, sys->tree_mtx) == 0 ? PX_OK : PX_ENOMEM;
}

static void free_locks(px_system *sys) {
    if (sys->tree_cv != NULL) {
        nng_cv_free(sys->tree_cv);
    }
    nng_mtx *mtxs[] = {sys->gq_mtx, sys->slot_mtx, sys->tree_mtx, sys->names_mtx,
                       sys->reg_mtx, sys->life_mtx, sys->dl_mtx, sys->rasks.mtx,
                       sys->hook_mtx};
    for (size_t i = 0; i < sizeof(mtxs) / sizeof(mtxs[0]); i++) {
        if (mtxs[i] != NULL) {
            nng_mtx_free(mtxs[i]);
        }
    }
}

px_err px_system_alloc(px_system **out, const px_config *cfg_in) {
    px_config defaults;
    if (cfg_in == NULL) {
        px_config_init(&defaults);
        cfg_in = &defaults;
    }
    if (out == NULL) {
        return PX_EINVAL;
    }
    *out = NULL;
    char why[256];
    px_err rv = px_config_check(cfg_in, why, sizeof(why));
    if (rv != PX_OK) {
        early_log(cfg_in, PX_LOG_ERROR, "invalid config: %s", why);
        return rv;
    }
    px_system *sys = aligned_alloc(PXI_CACHELINE, (sizeof(*sys) + PXI_CACHELINE - 1) & ~(size_t)(PXI_CACHELINE - 1));
    if (sys == NULL) {
        return PX_ENOMEM;
    }
    memset(sys, 0, sizeof(*sys));
    sys->cfg = *cfg_in;
    atomic_init(&sys->log_level, (int)cfg_in->log_level);
    snprintf(sys->node_name, sizeof(sys->node_name), "%s", cfg_in->node_name);
    sys->cfg.node_name = sys->node_name;
    sys->node = pxi_fnv1a(sys->node_name);
    if (sys->node == 0) {
        sys->node = 1; /* 0 is the nil ref's node */
    }
    do {
        sys->node_inc0 = nng_random();
    } while (sys->node_inc0 == 0);
    atomic_store_explicit(&sys->node_inc, sys->node_inc0, memory_order_relaxed);
    if (sys->cfg.workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        sys->cfg.workers = (n < 1) ? 1 : (n > 256 ? 256 : (uint32_t)n);
    }
    sys->nworkers = sys->cfg.workers;
    pxi_strmap_init(&sys->names);
    pxi_strmap_init(&sys->behaviors);
    pxi_strmap_init(&sys->types);
    /* +1: ids start at 1 (0 is the nil ref); +1 for the root guardian. */
    /* Slack for slots parked in worker caches (256 each) and ids lost to
     * a failed chunk map. */
    uint64_t ids = (uint64_t)sys->cfg.max_actors + 2 + 256ull * (sys->nworkers + 1) + PXI_CHUNK;
    sys->nchunks = (uint32_t)((ids + PXI_CHUNK - 1) / PXI_CHUNK);
    sys->id_cap = sys->nchunks * PXI_CHUNK;
    sys->chunks = calloc(sys->nchunks, sizeof(*sys->chunks));
    atomic_store(&sys->next_id, 1);
    if (sys->chunks == NULL || (rv = alloc_locks(sys)) != PX_OK ||
        (rv = pxi_timers_alloc(sys, &sys->timers)) != PX_OK ||
        (rv = pxi_topics_alloc(sys, &sys->topics)) != PX_OK) {
        rv = PX_ENOMEM;
        goto fail;
    }
    /* The root guardian is not counted against max_actors. */
    sys->cfg.max_actors++;
    px_ref root;
    if ((rv = pxi_spawn(sys, NULL, &root_behavior, NULL, NULL, &root, PXI_AF_ROOT, NULL)) != PX_OK) {
        goto fail;
    }
    sys->root = pxi_slot(sys, root.id);
    if ((rv = pxi_sched_start(sys)) != PX_OK) {
        early_log(cfg_in, PX_LOG_ERROR, "cannot start %u workers: %s", sys->nworkers, px_strerror(rv));
        goto fail;
    }
    px_log(sys, PX_LOG_DEBUG, "system up: node %s (%08x.%x), %u workers", sys->node_name,
           sys->node, sys->node_inc0, sys->nworkers);
    *out = sys;
    return PX_OK;
fail:
    pxi_sched_stop(sys);
    pxi_timers_free(sys->timers);
    if (sys->chunks != NULL) {
        pxi_slots_free(sys);
    }
    pxi_topics_free(sys->topics);
    free_locks(sys);
    pxi_strmap_fini(&sys->names);
    pxi_strmap_fini(&sys->behaviors);
    pxi_strmap_fini(&sys->types);
    free(sys);
    return rv;
}

/* Sums the per-worker and outside counters used by the drain check. */
static void flow(px_system *sys, uint64_t *enq, uint64_t *deq, uint64_t *turns) {
    uint64_t e = 0, d = 0, t = 0;
    /* Dequeues first: every message's enqueue happens before its dequeue, so
     * reading them in this order never shows more dequeued than enqueued. */
    for (uint32_t i = 0; i < sys->nworkers; i++) {
        d += atomic_load(&sys->workers[i].deq);
        t += atomic_load(&sys->workers[i].turns);
    }
    d += atomic_load(&sys->ext_deq);
    for (uint32_t i = 0; i < sys->nworkers; i++) {
        e += atomic_load(&sys->workers[i].enq);
    }
    e += atomic_load(&sys->ext_enq);
    *enq = e;
    *deq = d;
    *turns = t;
}

static bool wait_quiescent(px_system *sys, uint32_t timeout_ms) {
    nng_time until = nng_clock() + timeout_ms;
    uint64_t pe = 0, pd = 0, pt = 0;
    int stable = 0;
    for (;;) {
        uint64_t e, d, t;
        flow(sys, &e, &d, &t);
        if (e == d && e == pe && d == pd && t == pt) {
            if (++stable >= 2) {
                return true;
            }
        } else {
            stable = 0;
        }
        pe = e;
        pd = d;
        pt = t;
        if (nng_clock() >= until) {
            return false;
        }
        nng_msleep(1); /* polling a counter, not synchronizing on it */
    }
}

px_err px_system_shutdown(px_system *sys) {
    if (sys == NULL) {
        return PX_EINVAL;
    }
    if (pxi_current_worker() != NULL) {
        return PX_ECONTEXT;
    }
    nng_mtx_lock(sys->life_mtx);
    if (atomic_load(&sys->shut)) {
        nng_mtx_unlock(sys->life_mtx);
        return PX_OK;
    }
    px_err rv = PX_OK;
    atomic_store(&sys->closing, 1);
    pxi_timers_stop(sys->timers);
    if (sys->cfg.shutdown_mode == PX_SHUTDOWN_DRAIN &&
        !wait_quiescent(sys, sys->cfg.shutdown_timeout_ms)) {
        px_log(sys, PX_LOG_WARN, "shutdown: mailboxes not drained after %u ms; "
               "the rest become dead letters", sys->cfg.shutdown_timeout_ms);
        rv = PX_ETIMEDOUT;
    }
    px_stop(sys, pxi_ref_of(sys->root));
    nng_time until = nng_clock() + sys->cfg.shutdown_timeout_ms + 1000;
    nng_mtx_lock(sys->tree_mtx);
    while (!sys->root_done) {
        if (nng_cv_until(sys->tree_cv, until) != 0) {
            break;
        }
    }
    bool done = sys->root_done;
    nng_mtx_unlock(sys->tree_mtx);
    if (!done) {
        px_log(sys, PX_LOG_CRIT, "shutdown: actors did not finish stopping in time");
        rv = PX_ETIMEDOUT;
    }
    pxi_sched_stop(sys);
    atomic_store(&sys->shut, 1);
    nng_mtx_unlock(sys->life_mtx);
    px_log(sys, PX_LOG_DEBUG, "system down");
    return rv;
}

void px_system_free(px_system *sys) {
    if (sys == NULL) {
        return;
    }
    px_system_shutdown(sys);
    pxi_timers_free(sys->timers);
    pxi_slots_free(sys);
    pxi_topics_free(sys->topics);
    pxi_strmap_fini(&sys->names);
    pxi_strmap_fini(&sys->behaviors);
    pxi_strmap_fini(&sys->types);
    pxi_rasks_fini(&sys->rasks);
    free_locks(sys);
    free(sys);
}

const char *px_system_node_name(const px_system *sys) { return sys->node_name; }
px_ref px_system_root(const px_system *sys) { return pxi_ref_of(sys->root); }

uint32_t px_system_node_inc(const px_system *sys) { return sys != NULL ? pxi_node_inc(sys) : 0; }

px_err px_system_reincarnate(px_system *sys, uint32_t *new_inc) {
    if (sys == NULL) {
        return PX_EINVAL;
    }
    uint32_t was = pxi_node_inc(sys), now;
    do {
        now = was + 1 != 0 ? was + 1 : 1;
    } while (!atomic_compare_exchange_weak(&sys->node_inc, &was, now));
    if (new_inc != NULL) {
        *new_inc = now;
    }
    px_log(sys, PX_LOG_INFO, "node %s is now incarnation %08x (was %08x)", sys->node_name, now,
           was);
    /* Their replies would come to an incarnation the others take for dead. */
    size_t failed = pxi_rasks_fail_old(sys, now, PX_EFENCED);
    if (failed > 0) {
        px_log(sys, PX_LOG_INFO, "node %s: %zu asks of incarnation %08x or earlier to other nodes "
               "ended (fenced)", sys->node_name, failed, was);
    }
    return PX_OK;
}

uint32_t px_node_id(const char *name) { return name != NULL ? pxi_fnv1a(name) : 0; }

void px_system_set_router(px_system *sys, const px_router *r) {
    nng_mtx_lock(sys->hook_mtx);
    const px_router *was = atomic_load(&sys->router);
    const px_router *now = NULL;
    if (r != NULL) {
        px_router *free_tab = was == &sys->rtab[0] ? &sys->rtab[1] : &sys->rtab[0];
        *free_tab = *r; /* nobody reads it: the last swap waited its readers out */
        now = free_tab;
    }
    atomic_store(&sys->router, now);
    /* Wait out the calls still inside the old table: new calls count
     * against the new one, so this ends once those in flight return. */
    if (was != NULL) {
        int slot = (int)(was - sys->rtab);
        for (uint32_t i = 0; sys->workers != NULL && i < sys->nworkers; i++) {
            while (atomic_load(&sys->workers[i].in_router[slot]) != 0) {
                nng_msleep(0);
            }
        }
        while (atomic_load(&sys->router_calls[slot]) != 0) {
            nng_msleep(0);
        }
    }
    nng_mtx_unlock(sys->hook_mtx);
}

typedef struct beh_each {
    void (*fn)(void *arg, const char *name);
    void *arg;
} beh_each;

static void beh_one(void *arg, const char *key, pxi_strval v) {
    (void)v;
    beh_each *e = arg;
    e->fn(e->arg, key);
}

px_err px_behaviors(px_system *sys, void (*fn)(void *arg, const char *name), void *arg) {
    if (sys == NULL || fn == NULL) {
        return PX_EINVAL;
    }
    beh_each e = {fn, arg};
    nng_mtx_lock(sys->reg_mtx);
    pxi_strmap_each(&sys->behaviors, beh_one, &e);
    nng_mtx_unlock(sys->reg_mtx);
    return PX_OK;
}

int px_on_worker(void) { return pxi_current_worker() != NULL; }

void px_system_get_router(px_system *sys, px_router *out) {
    if (out == NULL) {
        return;
    }
    memset(out, 0, sizeof(*out));
    if (sys != NULL) {
        const px_router *r = pxi_router_enter(sys); /* not refilled while counted */
        if (r != NULL) {
            *out = *r;
        }
        pxi_router_leave(sys, r);
    }
}

void px_system_on_dead_letter(px_system *sys, px_dead_letter_fn fn, void *arg) {
    nng_mtx_lock(sys->dl_mtx);
    sys->dl_fn = fn;
    sys->dl_arg = arg;
    nng_mtx_unlock(sys->dl_mtx);
}

void px_system_on_failure(px_system *sys, px_failure_fn fn, void *arg) {
    nng_mtx_lock(sys->dl_mtx);
    sys->fail_fn = fn;
    sys->fail_arg = arg;
    nng_mtx_unlock(sys->dl_mtx);
}

/* ---- registries ---- */

px_err px_behavior_register(px_system *sys, const px_behavior *b) {
    if (sys == NULL || b == NULL || b->name == NULL || b->name[0] == '\0' || b->receive == NULL) {
        return PX_EINVAL;
    }
    nng_mtx_lock(sys->reg_mtx);
    px_err rv = pxi_strmap_put(&sys->behaviors, b->name, (pxi_strval){.ptr = b}, NULL);
    nng_mtx_unlock(sys->reg_mtx);
    return rv;
}

const px_behavior *px_behavior_lookup(px_system *sys, const char *name) {
    if (sys == NULL || name == NULL) {
        return NULL;
    }
    pxi_strval v;
    nng_mtx_lock(sys->reg_mtx);
    px_err rv = pxi_strmap_get(&sys->behaviors, name, &v);
    nng_mtx_unlock(sys->reg_mtx);
    return rv == PX_OK ? v.ptr : NULL;
}

px_err px_type_register(px_system *sys, const ProtobufCMessageDescriptor *desc) {
    if (sys == NULL || desc == NULL || desc->name == NULL ||
        desc->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC) {
        return PX_EINVAL;
    }
    pxi_strval old;
    nng_mtx_lock(sys->reg_mtx);
    px_err rv = pxi_strmap_put(&sys->types, desc->name, (pxi_strval){.ptr = desc}, &old);
    nng_mtx_unlock(sys->reg_mtx);
    if (rv == PX_EEXIST && old.ptr == desc) {
        return PX_OK;
    }
    return rv;
}

const ProtobufCMessageDescriptor *px_type_lookup(px_system *sys, const char *full_name) {
    if (sys == NULL || full_name == NULL) {
        return NULL;
    }
    pxi_strval v;
    nng_mtx_lock(sys->reg_mtx);
    px_err rv = pxi_strmap_get(&sys->types, full_name, &v);
    nng_mtx_unlock(sys->reg_mtx);
    return rv == PX_OK ? v.ptr : NULL;
}

/* ---- names ---- */

static bool name_ok(const char *name) {
    size_t n = name ? strlen(name) : 0;
    return n >= 1 && n <= 127;
}

px_err px_register(px_system *sys, const char *name, px_ref ref) {
    if (sys == NULL || !name_ok(name)) {
        return PX_EINVAL;
    }
    px_actor *a = pxi_pin_ref(sys, ref);
    if (a == NULL) {
        return PX_EDEAD;
    }
    px_err rv = PX_EEXIST;
    nng_mtx_lock(sys->names_mtx);
    uint32_t st = atomic_load(&a->state);
    if (st != PXI_A_ALIVE && st != PXI_A_STARTING) {
        rv = PX_EDEAD;
    } else if (a->name == NULL) {
        char *copy = strdup(name);
        rv = copy == NULL ? PX_ENOMEM : pxi_strmap_put(&sys->names, name,
                                                        (pxi_strval){.u4 = {ref.node, ref.node_inc, ref.id, ref.inc}}, NULL);
        if (rv == PX_OK) {
            a->name = copy;
        } else {
            free(copy);
        }
    }
    nng_mtx_unlock(sys->names_mtx);
    pxi_unpin(a);
    return rv;
}

px_err px_unregister(px_system *sys, const char *name) {
    if (sys == NULL || !name_ok(name)) {
        return PX_EINVAL;
    }
    pxi_strval v;
    nng_mtx_lock(sys->names_mtx);
    px_err rv = pxi_strmap_del(&sys->names, name, &v);
    if (rv == PX_OK) {
        /* Entries exist only for live occupants (finalize removes them under
         * this lock), so the slot still belongs to the named actor. */
        px_actor *a = pxi_slot(sys, v.u4.c);
        if (a != NULL) {
            free(a->name);
            a->name = NULL;
        }
    }
    nng_mtx_unlock(sys->names_mtx);
    return rv;
}

px_err px_whereis(px_system *sys, const char *name, px_ref *out) {
    if (sys == NULL || out == NULL || !name_ok(name)) {
        return PX_EINVAL;
    }
    pxi_strval v;
    nng_mtx_lock(sys->names_mtx);
    px_err rv = pxi_strmap_get(&sys->names, name, &v);
    nng_mtx_unlock(sys->names_mtx);
    if (rv == PX_OK) {
        *out = (px_ref){v.u4.a, v.u4.b, v.u4.c, v.u4.d};
    }
    return rv;
}

/* ---- stats ---- */

px_err px_system_stats_get(px_system *sys, px_system_stats *out) {
    if (sys == NULL || out == NULL) {
        return PX_EINVAL;
    }
    memset(out, 0, sizeof(*out));
    out->messages = atomic_load(&sys->messages_joined);
    for (uint32_t i = 0; sys->workers != NULL && i < sys->nworkers; i++) {
        out->messages += atomic_load_explicit(&sys->workers[i].messages, memory_order_relaxed);
    }
    /* The root guardian is not counted. Spawned = stopped + live: one
     * shared counter fewer on the spawn path. */
    uint64_t stopped = atomic_load(&sys->stopped);
    uint64_t live = atomic_load(&sys->live);
    nng_mtx_lock(sys->tree_mtx);
    bool root_done = sys->root_done;
    nng_mtx_unlock(sys->tree_mtx);
    out->spawned = stopped + live - 1;
    out->stopped = stopped - (root_done ? 1 : 0);
    out->live_actors = live - (root_done ? 0 : 1);
    out->dead_letters = atomic_load(&sys->dead_letters);
    out->dropped = atomic_load(&sys->dropped);
    out->late_replies = atomic_load(&sys->late_replies);
    out->ask_timeouts = atomic_load(&sys->ask_timeouts);
    out->failures = atomic_load(&sys->failures);
    out->rejected = atomic_load(&sys->rejected);
    out->restarts = atomic_load(&sys->restarts);
    out->resumed = atomic_load(&sys->resumed);
    out->escalations = atomic_load(&sys->escalations);
    pxi_topics_stats(sys->topics, out);
    return PX_OK;
}

/* ---- outside actors ---- */

px_err px_system_spawn(px_system *sys, const px_behavior *b, px_msg **arg,
                       const px_spawn_opts *opts, px_ref *out) {
    if (sys == NULL) {
        return PX_EINVAL;
    }
    if (atomic_load(&sys->closing)) {
        return PX_ECLOSED;
    }
    return pxi_spawn(sys, sys->root, b, arg, opts, out, 0, NULL);
}

px_err px_system_spawn_named(px_system *sys, const char *behavior, px_msg **arg,
                             const px_spawn_opts *opts, px_ref *out) {
    if (sys == NULL || behavior == NULL) {
        return PX_EINVAL;
    }
    const px_behavior *b = px_behavior_lookup(sys, behavior);
    return b == NULL ? PX_ENOENT : px_system_spawn(sys, b, arg, opts, out);
}

static px_err outside_check(px_system *sys, px_msg **msg) {
    if (sys == NULL) {
        return PX_EINVAL;
    }
    if (atomic_load(&sys->closing)) {
        atomic_fetch_add_explicit(&sys->rejected, 1, memory_order_relaxed);
        return PX_ECLOSED;
    }
    return pxi_check_msg(sys, msg);
}

px_err px_system_send(px_system *sys, px_ref to, px_msg **msg) {
    px_err rv = outside_check(sys, msg);
    if (rv != PX_OK) {
        return rv;
    }
    (*msg)->sender = PX_REF_NIL;
    return pxi_deliver(sys, to, msg, pxi_current_worker() == NULL);
}

px_err px_system_send_after(px_system *sys, uint32_t delay_ms, px_ref to, px_msg **msg,
                            uint64_t *timer) {
    px_err rv = outside_check(sys, msg);
    if (rv != PX_OK) {
        return rv;
    }
    if (delay_ms > PXI_MAX_DELAY_MS) {
        return PX_EINVAL;
    }
    (*msg)->sender = PX_REF_NIL;
    rv = pxi_timer_add(sys->timers, delay_ms, 0, to, *msg, 0, timer);
    if (rv == PX_OK) {
        *msg = NULL;
    }
    return rv;
}

/* Blocking ask: a short-lived internal actor makes a normal px_ask and
 * hands the outcome to the waiting thread. */
typedef struct waiter {
    nng_mtx *mtx;
    nng_cv *cv;
    px_ref to;
    px_msg *req;       /* moved into the ask by the asker's init */
    uint32_t timeout_ms;
    px_msg *reply;     /* mtx */
    px_err result;     /* mtx */
    bool done;         /* mtx */
    _Atomic int refs;
} waiter;

static void waiter_rele(waiter *w) {
    if (atomic_fetch_sub(&w->refs, 1) == 1) {
        px_msg_free(w->reply);
        px_msg_free(w->req);
        nng_cv_free(w->cv);
        nng_mtx_free(w->mtx);
        free(w);
    }
}

static void waiter_finish(waiter *w, px_msg *reply, px_err result) {
    nng_mtx_lock(w->mtx);
    if (!w->done) {
        w->done = true;
        w->result = result;
        w->reply = reply;
        reply = NULL;
        nng_cv_wake(w->cv);
    }
    nng_mtx_unlock(w->mtx);
    px_msg_free(reply);
}

static px_err asker_init(px_ctx *ctx, const px_msg *arg) {
    (void)arg;
    waiter *w = px_state(ctx);
    px_err rv = px_ask(ctx, w->to, &w->req, w->timeout_ms, NULL);
    if (rv != PX_OK) {
        waiter_finish(w, NULL, rv);
        px_stop_self(ctx);
    }
    return PX_OK;
}

static px_err asker_receive(px_ctx *ctx, px_msg *m) {
    waiter *w = px_state(ctx);
    px_err code = PX_OK;
    if (px_msg_is_reply(m)) {
        ((px_actor *)ctx)->flags |= PXI_AF_TOOK; /* the waiting thread owns it now */
        waiter_finish(w, m, PX_OK);
    } else if (px_msg_kind_of(m) == PX_MSG_ASK_TIMEOUT) {
        waiter_finish(w, NULL, PX_ETIMEDOUT);
    } else if (px_msg_undelivered(m, NULL, &code) == PX_OK) {
        waiter_finish(w, NULL, code); /* the other node did not take it */
    } else {
        return PX_OK; /* not ours: ignore */
    }
    px_stop_self(ctx);
    return PX_OK;
}

static void asker_stop(px_ctx *ctx) {
    waiter *w = px_state(ctx);
    waiter_finish(w, NULL, PX_ETIMEDOUT);
    waiter_rele(w);
}

static const px_behavior asker_behavior = {
    .name = "plexus.asker", .init = asker_init, .receive = asker_receive, .stop = asker_stop};

px_err px_system_ask(px_system *sys, px_ref to, px_msg **msg, uint32_t timeout_ms,
                     px_msg **reply) {
    if (reply == NULL || timeout_ms == 0 || timeout_ms > PXI_MAX_DELAY_MS) {
        return PX_EINVAL;
    }
    if (pxi_current_worker() != NULL) {
        return PX_ECONTEXT;
    }
    px_err rv = outside_check(sys, msg);
    if (rv != PX_OK) {
        return rv;
    }
    waiter *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        return PX_ENOMEM;
    }
    if (nng_mtx_alloc(&w->mtx) != 0) {
        free(w);
        return PX_ENOMEM;
    }
    if (nng_cv_alloc(&w->cv, w->mtx) != 0) {
        nng_mtx_free(w->mtx);
        free(w);
        return PX_ENOMEM;
    }
    w->to = to;
    w->req = *msg;
    w->timeout_ms = timeout_ms;
    atomic_store(&w->refs, 2);
    rv = pxi_spawn(sys, sys->root, &asker_behavior, NULL, NULL, NULL, 0, w);
    if (rv != PX_OK) {
        w->req = NULL; /* the caller keeps its message */
        atomic_store(&w->refs, 1);
        waiter_rele(w);
        return rv;
    }
    if (w->req != NULL) {
        /* The ask inside init failed: the message was not taken. */
        nng_mtx_lock(w->mtx);
        rv = w->result;
        nng_mtx_unlock(w->mtx);
        w->req = NULL;
        waiter_rele(w);
        return rv;
    }
    *msg = NULL;
    /* The asker always finishes (reply or timer); the margin covers a
     * shutdown that cancelled its timer. */
    nng_time until = nng_clock() + timeout_ms + 1000;
    nng_mtx_lock(w->mtx);
    while (!w->done) {
        if (nng_cv_until(w->cv, until) != 0) {
            w->done = true;
            w->result = PX_ETIMEDOUT;
        }
    }
    rv = w->result;
    *reply = w->reply;
    w->reply = NULL;
    nng_mtx_unlock(w->mtx);
    waiter_rele(w);
    return rv;
}
