/*
 * tests/core/helpers.h — shared helpers for the core Criterion tests.
 *
 * Everything here is static inline (or a macro) so each test binary takes
 * only what it uses. Rules the helpers enforce:
 * - Never sleep as synchronization: PXT_AWAIT polls a condition with a short
 *   nap up to a deadline and fails the test if it never became true.
 * - Never cr_assert from an actor callback (a worker thread): callbacks
 *   record what they saw in atomics, and the test thread asserts.
 */
#ifndef PXT_HELPERS_H
#define PXT_HELPERS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <criterion/criterion.h>

#include <plexus/plexus.h>

/* --- time -------------------------------------------------------------- */

static inline int64_t pxt_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline int64_t pxt_now_ms(void) { return pxt_now_ns() / 1000000; }

/* A short pause between polls of a condition (not synchronization). */
static inline void pxt_nap(void) {
    struct timespec ts = {0, 200 * 1000};
    nanosleep(&ts, NULL);
}

/* Polls cond until it holds or ms elapse; fails the test in the latter case. */
#define PXT_AWAIT(cond, ms)                                                    \
    do {                                                                       \
        int64_t pxt_dl_ = pxt_now_ms() + (int64_t)(ms);                        \
        while (!(cond)) {                                                      \
            if (pxt_now_ms() > pxt_dl_) {                                      \
                cr_assert_fail("condition not met within %d ms: %s", (int)(ms), \
                               #cond);                                         \
            }                                                                  \
            pxt_nap();                                                         \
        }                                                                      \
    } while (0)

/* Same, without failing: for worker threads and optional waits. Returns 1 if
 * cond became true in time. */
#define PXT_POLL(cond, ms)                                                     \
    ({                                                                         \
        int64_t pxt_dl2_ = pxt_now_ms() + (int64_t)(ms);                       \
        int pxt_ok_ = 1;                                                       \
        while (!(cond)) {                                                      \
            if (pxt_now_ms() > pxt_dl2_) {                                     \
                pxt_ok_ = 0;                                                   \
                break;                                                         \
            }                                                                  \
            pxt_nap();                                                         \
        }                                                                      \
        pxt_ok_;                                                               \
    })

/* --- systems ----------------------------------------------------------- */

/* Quiet-ish defaults for tests: 4 workers (more than the CPUs here, so a
 * worker parked in a gated actor never starves the rest), WARN logging. */
static inline void pxt_config(px_config *cfg) {
    px_config_init(cfg);
    cfg->workers = 4;
    cfg->log_level = PX_LOG_ERROR;
}

/* Whether the runtime counts its root guardian among live_actors and
 * spawned is not specified, so tests count from the figures of a fresh
 * system (pxt_live, pxt_spawned). */
static uint64_t pxt_live0, pxt_spawned0;

static inline px_system *pxt_system_with(const px_config *cfg) {
    px_system *sys = NULL;
    px_err e = px_system_alloc(&sys, cfg);
    cr_assert_eq(e, PX_OK, "px_system_alloc: %s", px_strerror(e));
    cr_assert_not_null(sys);
    px_system_stats st;
    memset(&st, 0, sizeof st);
    cr_assert_eq(px_system_stats_get(sys, &st), PX_OK);
    pxt_live0 = st.live_actors;
    pxt_spawned0 = st.spawned;
    return sys;
}

static inline px_system *pxt_system(void) {
    px_config cfg;
    pxt_config(&cfg);
    return pxt_system_with(&cfg);
}

static inline px_system_stats pxt_stats(px_system *sys) {
    px_system_stats st;
    memset(&st, 0, sizeof st);
    cr_assert_eq(px_system_stats_get(sys, &st), PX_OK);
    return st;
}

/* Live user actors and user spawns (see pxt_system_with). */
static inline uint64_t pxt_live(px_system *sys) { return pxt_stats(sys).live_actors - pxt_live0; }
static inline uint64_t pxt_spawned(px_system *sys) { return pxt_stats(sys).spawned - pxt_spawned0; }

/* Per-actor stats; asserts the actor is alive. */
static inline px_actor_stats pxt_astats(px_system *sys, px_ref ref) {
    px_actor_stats st;
    memset(&st, 0, sizeof st);
    px_err e = px_actor_stats_get(sys, ref, &st);
    cr_assert_eq(e, PX_OK, "px_actor_stats_get: %s", px_strerror(e));
    return st;
}

/* Reads a system counter by field name (for use inside PXT_AWAIT). */
static inline uint64_t pxt_stat_field_(px_system *sys, size_t off) {
    px_system_stats st;
    memset(&st, 0, sizeof st);
    if (px_system_stats_get(sys, &st) != PX_OK) {
        return UINT64_MAX;
    }
    return *(const uint64_t *)((const char *)&st + off);
}
#define PXT_STAT(sys, field) pxt_stat_field_((sys), offsetof(px_system_stats, field))

/* Actor-stats field, or UINT64_MAX if the actor is not alive. */
static inline uint64_t pxt_astat_field_(px_system *sys, px_ref ref, size_t off) {
    px_actor_stats st;
    memset(&st, 0, sizeof st);
    if (px_actor_stats_get(sys, ref, &st) != PX_OK) {
        return UINT64_MAX;
    }
    return *(const uint64_t *)((const char *)&st + off);
}
#define PXT_ASTAT(sys, ref, field)                                             \
    pxt_astat_field_((sys), (ref), offsetof(px_actor_stats, field))

/* --- messages ---------------------------------------------------------- */

static inline px_msg *pxt_u64(uint32_t tag, uint64_t v) {
    px_msg *m = NULL;
    cr_assert_eq(px_msg_u64(&m, tag, v), PX_OK);
    cr_assert_not_null(m);
    return m;
}

/* A start argument carrying a pointer (the usual way to hand an actor its
 * test-owned state). */
#define PXT_TAG_PTR 0x70747200u
static inline px_msg *pxt_ptr_msg(void *p) {
    return pxt_u64(PXT_TAG_PTR, (uint64_t)(uintptr_t)p);
}
static inline void *pxt_msg_ptr(const px_msg *m) {
    return m ? (void *)(uintptr_t)px_msg_get_u64(m) : NULL;
}

/* An init that makes the pointer in the start argument the actor's state. */
static inline px_err pxt_init_ptr_state(px_ctx *ctx, const px_msg *arg) {
    px_set_state(ctx, pxt_msg_ptr(arg));
    return PX_OK;
}

/* Sends a u64 message from outside any actor; asserts success. */
static inline void pxt_send_u64(px_system *sys, px_ref to, uint32_t tag, uint64_t v) {
    px_msg *m = pxt_u64(tag, v);
    px_err e = px_system_send(sys, to, &m);
    cr_assert_eq(e, PX_OK, "px_system_send: %s", px_strerror(e));
    cr_assert_null(m, "a successful send must null the caller's pointer");
}

/* Spawns a top-level actor of b with `state` as its state (b->init must be
 * pxt_init_ptr_state or do the same); asserts success. */
static inline px_ref pxt_spawn(px_system *sys, const px_behavior *b, void *state,
                               const px_spawn_opts *opts) {
    px_msg *arg = pxt_ptr_msg(state);
    px_ref ref = PX_REF_NIL;
    px_err e = px_system_spawn(sys, b, &arg, opts, &ref);
    cr_assert_eq(e, PX_OK, "px_system_spawn: %s", px_strerror(e));
    cr_assert_null(arg, "a successful spawn must take the start argument");
    cr_assert(!px_ref_is_nil(ref));
    return ref;
}

/* An echo: replies to a u64 (any tag) with twice its value under tag 2. */
static inline px_err pxt_echo_receive(px_ctx *ctx, px_msg *m) {
    px_msg *r = NULL;
    if (px_msg_u64(&r, 2, px_msg_get_u64(m) * 2) != PX_OK) {
        return PX_ENOMEM;
    }
    if (px_reply(ctx, m, &r) != PX_OK) {
        px_msg_free(r);
    }
    return PX_OK;
}

static inline const px_behavior *pxt_echo_behavior(void) {
    static const px_behavior b = {.name = "pxt.echo", .receive = pxt_echo_receive};
    return &b;
}

/* --- the recorder: a general-purpose test actor ------------------------ */

/* Records every message it receives (kind, tag, u64 payload, sender,
 * corr, reply flag) in arrival order. With `gate_closed` set, each receive
 * first waits (bounded, 30 s) until the test opens the gate; `blocked` tells
 * the test that the actor is parked there. Only the actor writes the arrays;
 * `received` is incremented after an entry is written, so a test that has
 * seen received >= n may read the first n entries. */
#define PXT_REC_MAX 65536
typedef struct pxt_rec {
    atomic_uint_least64_t received;
    atomic_int stopped;  /* times the stop callback ran */
    atomic_int gate_closed;
    atomic_int blocked;
    atomic_int gate_timeouts; /* the gate wait gave up (a test bug) */
    atomic_int fail_on_tag;   /* return PX_EFAIL for this tag (0 = never) */
    atomic_int stop_on_tag;   /* px_stop_self on this tag (0 = never) */
    atomic_uint_least64_t stop_seq; /* global order stamp of stop */
    atomic_uint_least64_t *order;   /* if set, stop stamps come from here */
    px_ref self;                    /* set by init */
    px_ref parent;                  /* set by init */
    pthread_t init_thread;
    uint8_t kind[PXT_REC_MAX];
    uint32_t tag[PXT_REC_MAX];
    uint64_t val[PXT_REC_MAX];
    uint64_t corr[PXT_REC_MAX];
    uint8_t is_reply[PXT_REC_MAX];
    px_ref sender[PXT_REC_MAX];
    const ProtobufCMessage *pb[PXT_REC_MAX];
} pxt_rec;

static inline pxt_rec *pxt_rec_new(void) {
    pxt_rec *r = calloc(1, sizeof *r);
    cr_assert_not_null(r);
    return r;
}

static inline px_err pxt_rec_init(px_ctx *ctx, const px_msg *arg) {
    pxt_rec *r = pxt_msg_ptr(arg);
    px_set_state(ctx, r);
    r->self = px_self(ctx);
    r->parent = px_parent(ctx);
    r->init_thread = pthread_self();
    return PX_OK;
}

static inline px_err pxt_rec_receive(px_ctx *ctx, px_msg *m) {
    pxt_rec *r = px_state(ctx);
    if (atomic_load(&r->gate_closed)) {
        atomic_store(&r->blocked, 1);
        if (!PXT_POLL(!atomic_load(&r->gate_closed), 30000)) {
            atomic_fetch_add(&r->gate_timeouts, 1);
        }
        atomic_store(&r->blocked, 0);
    }
    uint64_t n = atomic_load(&r->received);
    if (n < PXT_REC_MAX) {
        r->kind[n] = (uint8_t)px_msg_kind_of(m);
        r->tag[n] = px_msg_tag(m);
        r->val[n] = px_msg_kind_of(m) == PX_MSG_BYTES ? px_msg_get_u64(m) : 0;
        r->corr[n] = px_msg_corr(m);
        r->is_reply[n] = (uint8_t)(px_msg_is_reply(m) != 0);
        r->sender[n] = px_msg_sender(m);
        r->pb[n] = px_msg_pb(m);
    }
    atomic_store(&r->received, n + 1);
    int tag = (int)px_msg_tag(m);
    if (tag != 0 && tag == atomic_load(&r->stop_on_tag)) {
        px_stop_self(ctx);
    }
    if (tag != 0 && tag == atomic_load(&r->fail_on_tag)) {
        return PX_EFAIL;
    }
    return PX_OK;
}

static inline void pxt_rec_stop(px_ctx *ctx) {
    pxt_rec *r = px_state(ctx);
    if (r->order) {
        atomic_store(&r->stop_seq, atomic_fetch_add(r->order, 1) + 1);
    }
    atomic_fetch_add(&r->stopped, 1);
}

static inline const px_behavior *pxt_rec_behavior(void) {
    static const px_behavior b = {
        .name = "pxt.rec",
        .init = pxt_rec_init,
        .receive = pxt_rec_receive,
        .stop = pxt_rec_stop,
    };
    return &b;
}

static inline px_ref pxt_rec_spawn(px_system *sys, pxt_rec *r, const px_spawn_opts *opts) {
    return pxt_spawn(sys, pxt_rec_behavior(), r, opts);
}

static inline uint64_t pxt_rec_count(pxt_rec *r) { return atomic_load(&r->received); }

/* Closes r's gate, sends one message (tag, v) and waits until the actor is
 * parked in its receive: afterwards its mailbox holds exactly what the test
 * sends next. */
static inline void pxt_rec_park(px_system *sys, pxt_rec *r, px_ref ref, uint32_t tag,
                                uint64_t v) {
    atomic_store(&r->gate_closed, 1);
    pxt_send_u64(sys, ref, tag, v);
    PXT_AWAIT(atomic_load(&r->blocked) == 1, 10000);
}

static inline void pxt_rec_open(pxt_rec *r) { atomic_store(&r->gate_closed, 0); }

/* --- tree nodes: actors that grow a chain of children ------------------ */

/* A pxt_node actor, on PXT_TAG_GROW, spawns a child (px_spawn) whose state
 * is `child` (if set) and sends GROW on to it; its stop callback stamps
 * stop_seq from the shared `order` counter, so a test can check the order
 * in which a tree stopped. */
#define PXT_TAG_GROW 0x67726f77u
#define PXT_TAG_FAIL 0x6661696cu /* the node's receive returns PX_EFAIL */
typedef struct pxt_node {
    struct pxt_node *child;
    atomic_uint_least64_t *order;
    atomic_uint_least64_t stop_seq;
    atomic_int inited;
    atomic_int grown; /* 1 once the child was spawned; a px_err if that failed */
    atomic_int stopped;
    px_ref self, parent, child_ref;
} pxt_node;

static inline const px_behavior *pxt_node_behavior(void);

static inline px_err pxt_node_init(px_ctx *ctx, const px_msg *arg) {
    pxt_node *n = pxt_msg_ptr(arg);
    px_set_state(ctx, n);
    n->self = px_self(ctx);
    n->parent = px_parent(ctx);
    atomic_store(&n->inited, 1);
    return PX_OK;
}

static inline px_err pxt_node_receive(px_ctx *ctx, px_msg *m) {
    pxt_node *n = px_state(ctx);
    if (px_msg_tag(m) == PXT_TAG_FAIL) {
        return PX_EFAIL;
    }
    if (px_msg_tag(m) != PXT_TAG_GROW || !n->child) {
        return PX_OK;
    }
    px_msg *arg = NULL;
    px_msg_u64(&arg, PXT_TAG_PTR, (uint64_t)(uintptr_t)n->child);
    px_ref c = PX_REF_NIL;
    px_err e = px_spawn(ctx, pxt_node_behavior(), &arg, NULL, &c);
    if (e != PX_OK) {
        px_msg_free(arg);
        atomic_store(&n->grown, e);
        return PX_OK;
    }
    n->child_ref = c;
    px_msg *g = NULL;
    px_msg_u64(&g, PXT_TAG_GROW, 0);
    if (px_send(ctx, c, &g) != PX_OK) {
        px_msg_free(g);
    }
    atomic_store(&n->grown, 1);
    return PX_OK;
}

static inline void pxt_node_stop(px_ctx *ctx) {
    pxt_node *n = px_state(ctx);
    if (n->order) {
        atomic_store(&n->stop_seq, atomic_fetch_add(n->order, 1) + 1);
    }
    atomic_fetch_add(&n->stopped, 1);
}

static inline const px_behavior *pxt_node_behavior(void) {
    static const px_behavior b = {
        .name = "pxt.node",
        .init = pxt_node_init,
        .receive = pxt_node_receive,
        .stop = pxt_node_stop,
    };
    return &b;
}

/* Builds a chain of `depth` nodes (nodes[0] top-level, each the parent of
 * the next) sharing `order`, and waits until all are up. */
static inline px_ref pxt_chain(px_system *sys, pxt_node *nodes, int depth,
                               atomic_uint_least64_t *order) {
    for (int i = 0; i < depth; i++) {
        memset(&nodes[i], 0, sizeof nodes[i]);
        nodes[i].order = order;
        nodes[i].child = i + 1 < depth ? &nodes[i + 1] : NULL;
    }
    px_ref top = pxt_spawn(sys, pxt_node_behavior(), &nodes[0], NULL);
    pxt_send_u64(sys, top, PXT_TAG_GROW, 0);
    for (int i = 0; i < depth; i++) {
        PXT_AWAIT(atomic_load(&nodes[i].inited), 10000);
        if (i + 1 < depth) {
            PXT_AWAIT(atomic_load(&nodes[i].grown) != 0, 10000);
            cr_assert_eq(atomic_load(&nodes[i].grown), 1, "px_spawn of a child: %s",
                         px_strerror((px_err)atomic_load(&nodes[i].grown)));
        }
    }
    return top;
}

/* --- dead-letter hook recorder ----------------------------------------- */

typedef struct pxt_dl {
    atomic_uint_least64_t count;
    atomic_uint_least64_t for_target; /* dead letters whose target == watch */
    px_ref watch;
    atomic_uint_least32_t last_tag;
} pxt_dl;

static inline void pxt_dl_hook(void *arg, px_ref target, const px_msg *m, px_err why) {
    (void)why;
    pxt_dl *d = arg;
    atomic_fetch_add(&d->count, 1);
    if (px_ref_eq(target, d->watch)) {
        atomic_fetch_add(&d->for_target, 1);
    }
    if (m) {
        atomic_store(&d->last_tag, px_msg_tag(m));
    }
}

/* --- log capture ------------------------------------------------------- */

typedef struct pxt_logcap {
    pthread_mutex_t mu;
    int lines;
    int by_level[PX_LOG_OFF + 1];
    char last[512];
    char node[64];
} pxt_logcap;

static inline void pxt_logcap_init(pxt_logcap *c) {
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
}

static inline void pxt_logcap_sink(void *arg, px_log_level level, const char *node,
                                   const char *line) {
    pxt_logcap *c = arg;
    pthread_mutex_lock(&c->mu);
    c->lines++;
    if ((int)level >= 0 && level <= PX_LOG_OFF) {
        c->by_level[level]++;
    }
    snprintf(c->last, sizeof c->last, "%s", line ? line : "(null)");
    snprintf(c->node, sizeof c->node, "%s", node ? node : "(null)");
    pthread_mutex_unlock(&c->mu);
}

static inline int pxt_logcap_lines(pxt_logcap *c) {
    pthread_mutex_lock(&c->mu);
    int n = c->lines;
    pthread_mutex_unlock(&c->mu);
    return n;
}

#endif
