/* Tests for plexus/system.h: config validation, lifecycle, shutdown modes,
 * limits and stats. */
#include "helpers.h"

/* --- config ------------------------------------------------------------ */

Test(core_system, config_init_fills_the_documented_defaults, .timeout = 10) {
    px_config cfg;
    memset(&cfg, 0xa5, sizeof cfg);
    px_config_init(&cfg);
    cr_assert_str_eq(cfg.node_name, "local");
    cr_assert_eq(cfg.workers, 0);
    cr_assert_eq(cfg.batch, 64);
    cr_assert_eq(cfg.spin_us, 50);
    cr_assert_eq(cfg.spin_max_us, 0, "a fixed spin by default");
    cr_assert_eq(cfg.mailbox.capacity, 0, "default mailbox is unbounded");
    cr_assert_eq(cfg.max_actors, 1u << 24);
    cr_assert_eq(cfg.max_mailbox_capacity, 1u << 20);
    cr_assert_eq(cfg.max_msg_size, (size_t)16 << 20);
    cr_assert_eq(cfg.shutdown_mode, PX_SHUTDOWN_DRAIN);
    cr_assert_eq(cfg.shutdown_timeout_ms, 5000);
    cr_assert_eq(cfg.log_level, PX_LOG_INFO);
    cr_assert_eq(cfg.log_sink, px_log_stderr);
}

Test(core_system, config_check_accepts_the_defaults, .timeout = 10) {
    px_config cfg;
    px_config_init(&cfg);
    char why[256] = "";
    cr_assert_eq(px_config_check(&cfg, why, sizeof why), PX_OK, "defaults refused: %s", why);
    cr_assert_eq(px_config_check(&cfg, NULL, 0), PX_OK);
}

/* A field name appears in `why` as written in the struct, or with spaces
 * for underscores ("node_name" / "node name"). */
static int names_field(const char *why, const char *field) {
    if (strstr(why, field)) {
        return 1;
    }
    char spaced[64];
    snprintf(spaced, sizeof spaced, "%s", field);
    for (char *p = spaced; *p; p++) {
        if (*p == '_' || *p == '.') {
            *p = ' ';
        }
    }
    return strstr(why, spaced) != NULL;
}

typedef void (*mutate_fn)(px_config *cfg);
typedef struct bad_case {
    const char *what;
    const char *field;
    mutate_fn mutate;
} bad_case;

#define BAD(name, fld, body)                                                   \
    static void mut_##name(px_config *c) { body; }
BAD(workers_1000, "workers", c->workers = 1000)
BAD(workers_257, "workers", c->workers = 257)
BAD(batch_0, "batch", c->batch = 0)
BAD(batch_65537, "batch", c->batch = 65537)
BAD(spin_10001, "spin_us", c->spin_us = 10001)
BAD(spin_max_below, "spin_max_us", c->spin_max_us = 40)
BAD(spin_max_10001, "spin_max_us", c->spin_max_us = 10001)
BAD(spin_max_no_spin, "spin_max_us", (c->spin_us = 0, c->spin_max_us = 1000))
BAD(node_empty, "node_name", c->node_name = "")
BAD(node_space, "node_name", c->node_name = "bad name")
BAD(node_slash, "node_name", c->node_name = "a/b")
BAD(node_64, "node_name",
    c->node_name = "0123456789012345678901234567890123456789012345678901234567890123")
BAD(max_actors_15, "max_actors", c->max_actors = 15)
BAD(max_actors_big, "max_actors", c->max_actors = (1u << 28) + 1)
BAD(max_cap_0, "max_mailbox_capacity", c->max_mailbox_capacity = 0)
BAD(max_cap_big, "max_mailbox_capacity", c->max_mailbox_capacity = (1u << 30) + 1)
BAD(msg_size_0, "max_msg_size", c->max_msg_size = 0)
BAD(msg_size_big, "max_msg_size", c->max_msg_size = ((size_t)1 << 31) + 1)
BAD(shutdown_mode_0, "shutdown_mode", c->shutdown_mode = (px_shutdown_mode)0)
BAD(shutdown_mode_3, "shutdown_mode", c->shutdown_mode = (px_shutdown_mode)3)
BAD(shutdown_to, "shutdown_timeout_ms", c->shutdown_timeout_ms = 3600001)
BAD(log_level_7, "log_level", c->log_level = (px_log_level)7)
BAD(mailbox_overflow, "overflow",
    (c->mailbox = (px_mailbox_opts){.capacity = 8, .overflow = (px_overflow)9}))
BAD(mailbox_cap, "capacity",
    (c->mailbox = (px_mailbox_opts){.capacity = 100, .overflow = PX_OVERFLOW_ERROR},
     c->max_mailbox_capacity = 10))
#undef BAD

static const bad_case bad_cases[] = {
    {"workers=1000", "workers", mut_workers_1000},
    {"workers=257", "workers", mut_workers_257},
    {"batch=0", "batch", mut_batch_0},
    {"batch=65537", "batch", mut_batch_65537},
    {"spin_us=10001", "spin_us", mut_spin_10001},
    {"spin_max_us=40 (below spin_us 50)", "spin_max_us", mut_spin_max_below},
    {"spin_max_us=10001", "spin_max_us", mut_spin_max_10001},
    {"spin_max_us=1000 with spin_us=0", "spin_max_us", mut_spin_max_no_spin},
    {"node_name=\"\"", "node_name", mut_node_empty},
    {"node_name with a space", "node_name", mut_node_space},
    {"node_name with a slash", "node_name", mut_node_slash},
    {"node_name of 64 chars", "node_name", mut_node_64},
    {"max_actors=15", "max_actors", mut_max_actors_15},
    {"max_actors=2^28+1", "max_actors", mut_max_actors_big},
    {"max_mailbox_capacity=0", "max_mailbox_capacity", mut_max_cap_0},
    {"max_mailbox_capacity=2^30+1", "max_mailbox_capacity", mut_max_cap_big},
    {"max_msg_size=0", "max_msg_size", mut_msg_size_0},
    {"max_msg_size=2^31+1", "max_msg_size", mut_msg_size_big},
    {"shutdown_mode=0", "shutdown_mode", mut_shutdown_mode_0},
    {"shutdown_mode=3", "shutdown_mode", mut_shutdown_mode_3},
    {"shutdown_timeout_ms=3600001", "shutdown_timeout_ms", mut_shutdown_to},
    {"log_level=7", "log_level", mut_log_level_7},
    {"mailbox.overflow=9", "overflow", mut_mailbox_overflow},
    {"mailbox.capacity above max_mailbox_capacity", "capacity", mut_mailbox_cap},
};

Test(core_system, config_check_rejects_each_bad_value_naming_the_field, .timeout = 10) {
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        px_config cfg;
        px_config_init(&cfg);
        bad_cases[i].mutate(&cfg);
        char why[512] = "";
        px_err e = px_config_check(&cfg, why, sizeof why);
        cr_assert_eq(e, PX_EINVAL, "%s accepted (%s)", bad_cases[i].what, px_errname(e));
        cr_assert_gt(strlen(why), 0, "%s: no reason given", bad_cases[i].what);
        cr_assert(names_field(why, bad_cases[i].field), "%s: reason \"%s\" does not name %s",
                  bad_cases[i].what, why, bad_cases[i].field);
        cr_assert_eq(px_config_check(&cfg, NULL, 0), PX_EINVAL, "%s with why=NULL",
                     bad_cases[i].what);
    }
}

Test(core_system, config_check_truncates_the_reason_to_the_buffer, .timeout = 10) {
    px_config cfg;
    px_config_init(&cfg);
    cfg.workers = 1000;
    char why[8];
    memset(why, 'X', sizeof why);
    cr_assert_eq(px_config_check(&cfg, why, 5), PX_EINVAL);
    cr_assert_eq(why[5], 'X', "wrote past why_len");
    cr_assert_lt(strnlen(why, 5), 5, "the reason is NUL-terminated within why_len");
}

Test(core_system, config_check_accepts_the_range_boundaries, .timeout = 10) {
    px_config cfg;
    px_config_init(&cfg);
    cfg.workers = 256;
    cfg.batch = 65536;
    cfg.spin_us = 10000;
    cfg.node_name = "A-z_0.9-xx";
    cfg.max_actors = 16;
    cfg.max_mailbox_capacity = 1u << 30;
    cfg.max_msg_size = (size_t)1 << 31;
    cfg.shutdown_mode = PX_SHUTDOWN_REJECT;
    cfg.shutdown_timeout_ms = 3600000;
    cfg.log_level = PX_LOG_OFF;
    char why[256] = "";
    cr_assert_eq(px_config_check(&cfg, why, sizeof why), PX_OK, "refused: %s", why);
    cfg.workers = 1;
    cfg.batch = 1;
    cfg.spin_us = 0;
    cfg.node_name = "0123456789012345678901234567890123456789012345678901234567890a2"; /* 63 */
    cfg.max_actors = 1u << 28;
    cfg.max_mailbox_capacity = 1;
    cfg.max_msg_size = 1;
    cfg.shutdown_timeout_ms = 0;
    cfg.log_level = PX_LOG_TRACE;
    cr_assert_eq(strlen(cfg.node_name), 63);
    cr_assert_eq(px_config_check(&cfg, why, sizeof why), PX_OK, "refused: %s", why);
}

Test(core_system, system_alloc_refuses_a_bad_config_with_einval_and_logs_once, .timeout = 10) {
    pxt_logcap cap;
    pxt_logcap_init(&cap);
    px_config cfg;
    px_config_init(&cfg);
    cfg.batch = 0;
    cfg.log_sink = pxt_logcap_sink;
    cfg.log_arg = &cap;
    px_system *sys = NULL;
    cr_assert_eq(px_system_alloc(&sys, &cfg), PX_EINVAL);
    cr_assert_null(sys, "*out stays NULL on error");
    cr_assert_eq(pxt_logcap_lines(&cap), 1, "the reason is logged once (got %d lines)",
                 pxt_logcap_lines(&cap));
    pthread_mutex_lock(&cap.mu);
    cr_assert(names_field(cap.last, "batch"), "logged \"%s\"", cap.last);
    pthread_mutex_unlock(&cap.mu);
}

Test(core_system, system_alloc_with_null_config_uses_the_defaults, .timeout = 10) {
    px_system *sys = NULL;
    cr_assert_eq(px_system_alloc(&sys, NULL), PX_OK);
    cr_assert_not_null(sys);
    cr_assert_str_eq(px_system_node_name(sys), "local");
    cr_assert_not(px_ref_is_nil(px_system_root(sys)));
    px_system_free(sys);
}

Test(core_system, system_copies_the_node_name_from_the_config, .timeout = 10) {
    char name[16] = "node-a";
    px_config cfg;
    pxt_config(&cfg);
    cfg.node_name = name;
    px_system *sys = pxt_system_with(&cfg);
    strcpy(name, "changed");
    cr_assert_str_eq(px_system_node_name(sys), "node-a");
    char buf[48];
    px_ref root = px_system_root(sys);
    px_ref_format(root, buf, sizeof buf);
    cr_assert_gt(strlen(buf), 0);
    px_system_free(sys);
}

Test(core_system, free_of_null_is_a_no_op, .timeout = 10) {
    px_system_free(NULL);
    cr_assert(1);
}

Test(core_system, a_system_with_one_worker_runs_actors, .timeout = 10) {
    px_config cfg;
    pxt_config(&cfg);
    cfg.workers = 1;
    px_system *sys = pxt_system_with(&cfg);
    pxt_rec *r = pxt_rec_new();
    px_ref a = pxt_rec_spawn(sys, r, NULL);
    for (int i = 0; i < 1000; i++) {
        pxt_send_u64(sys, a, 1, (uint64_t)i);
    }
    PXT_AWAIT(pxt_rec_count(r) == 1000, 5000);
    px_system_free(sys);
    free(r);
}

/* --- shutdown ---------------------------------------------------------- */

Test(core_system, shutdown_is_idempotent_and_closes_intake, .timeout = 10) {
    px_system *sys = pxt_system();
    pxt_rec *r = pxt_rec_new();
    px_ref a = pxt_rec_spawn(sys, r, NULL);
    cr_assert_eq(px_system_shutdown(sys), PX_OK);
    cr_assert_eq(px_system_shutdown(sys), PX_OK, "a second shutdown is a no-op");
    cr_assert_eq(atomic_load(&r->stopped), 1, "shutdown runs stop callbacks");
    px_msg *m = pxt_u64(1, 1);
    cr_assert_eq(px_system_send(sys, a, &m), PX_ECLOSED);
    cr_assert_not_null(m, "the caller keeps a refused message");
    px_msg_free(m);
    px_msg *arg = pxt_ptr_msg(r);
    px_ref b = PX_REF_NIL;
    cr_assert_eq(px_system_spawn(sys, pxt_rec_behavior(), &arg, NULL, &b), PX_ECLOSED);
    cr_assert_not_null(arg);
    px_msg_free(arg);
    px_system_stats st = pxt_stats(sys);
    cr_assert_eq(st.live_actors, 0, "nothing is alive after shutdown");
    cr_assert_geq(st.stopped, 1);
    px_system_free(sys);
    cr_assert_eq(atomic_load(&r->stopped), 1, "free after shutdown does not stop again");
    free(r);
}

#define INFLIGHT_ACTORS 8
#define INFLIGHT_PER 20000

/* Sends INFLIGHT_PER messages to each of INFLIGHT_ACTORS recorders from this
 * thread, then shuts down at once; the shutdown must succeed. Returns the
 * number sent. */
static uint64_t fill_then_shutdown(px_system *sys, pxt_rec **r) {
    px_ref a[INFLIGHT_ACTORS];
    for (int i = 0; i < INFLIGHT_ACTORS; i++) {
        r[i] = pxt_rec_new();
        a[i] = pxt_rec_spawn(sys, r[i], NULL);
    }
    uint64_t sent = 0;
    for (int j = 0; j < INFLIGHT_PER; j++) {
        for (int i = 0; i < INFLIGHT_ACTORS; i++) {
            pxt_send_u64(sys, a[i], 1, (uint64_t)j);
            sent++;
        }
    }
    px_err shut = px_system_shutdown(sys);
    cr_assert_eq(shut, PX_OK, "shutdown: %s", px_errname(shut));
    return sent;
}

/* The messages the recorders processed in all; each one's stop ran once. */
static uint64_t processed_and_stopped(pxt_rec **r) {
    uint64_t processed = 0;
    for (int i = 0; i < INFLIGHT_ACTORS; i++) {
        processed += pxt_rec_count(r[i]);
        cr_assert_eq(atomic_load(&r[i]->stopped), 1);
    }
    return processed;
}

static void free_recs(pxt_rec **r) {
    for (int i = 0; i < INFLIGHT_ACTORS; i++) {
        free(r[i]);
    }
}

Test(core_system, shutdown_in_drain_mode_processes_every_queued_message, .timeout = 60) {
    px_config cfg;
    pxt_config(&cfg);
    cfg.shutdown_mode = PX_SHUTDOWN_DRAIN;
    cfg.shutdown_timeout_ms = 30000;
    px_system *sys = pxt_system_with(&cfg);
    pxt_rec *r[INFLIGHT_ACTORS];
    uint64_t sent = fill_then_shutdown(sys, r);
    uint64_t processed = processed_and_stopped(r);
    px_system_stats st = pxt_stats(sys);
    cr_assert_eq(processed, sent, "drain processed %llu of %llu", (unsigned long long)processed,
                 (unsigned long long)sent);
    cr_assert_eq(st.messages, sent);
    cr_assert_eq(st.dead_letters, 0);
    px_system_free(sys);
    free_recs(r);
}

Test(core_system, shutdown_in_reject_mode_accounts_for_every_message, .timeout = 60) {
    px_config cfg;
    pxt_config(&cfg);
    cfg.shutdown_mode = PX_SHUTDOWN_REJECT;
    px_system *sys = pxt_system_with(&cfg);
    pxt_rec *r[INFLIGHT_ACTORS];
    uint64_t sent = fill_then_shutdown(sys, r);
    uint64_t processed = processed_and_stopped(r);
    px_system_stats st = pxt_stats(sys);
    cr_assert_eq(processed + st.dead_letters, sent,
                 "processed %llu + dead letters %llu != sent %llu", (unsigned long long)processed,
                 (unsigned long long)st.dead_letters, (unsigned long long)sent);
    cr_assert_eq(st.messages, processed);
    px_system_free(sys);
    free_recs(r);
}

/* A ring of actors passing tokens on: each message carries the hops left. */
#define RING 64
typedef struct ring {
    px_ref refs[RING];
    atomic_uint_least64_t processed;
    atomic_int send_errors;
} ring;
typedef struct ring_member {
    ring *ring;
    int index;
} ring_member;

static px_err ring_receive(px_ctx *ctx, px_msg *m) {
    ring_member *rm = px_state(ctx);
    atomic_fetch_add(&rm->ring->processed, 1);
    uint64_t hops = px_msg_get_u64(m);
    if (hops > 0) {
        px_msg *out = NULL;
        px_msg_u64(&out, 1, hops - 1);
        if (px_send(ctx, rm->ring->refs[(rm->index + 1) % RING], &out) != PX_OK) {
            atomic_fetch_add(&rm->ring->send_errors, 1);
            px_msg_free(out);
        }
    }
    return PX_OK;
}
static const px_behavior ring_b = {.name = "t.ring", .init = pxt_init_ptr_state,
                                   .receive = ring_receive};

Test(core_system, shutdown_in_drain_mode_also_delivers_what_actors_send_while_draining,
     .timeout = 60) {
    px_config cfg;
    pxt_config(&cfg);
    cfg.shutdown_mode = PX_SHUTDOWN_DRAIN;
    cfg.shutdown_timeout_ms = 30000;
    px_system *sys = pxt_system_with(&cfg);
    ring rg = {0};
    ring_member members[RING];
    for (int i = 0; i < RING; i++) {
        members[i] = (ring_member){&rg, i};
        rg.refs[i] = pxt_spawn(sys, &ring_b, &members[i], NULL);
    }
    const uint64_t hops = 500;
    for (int i = 0; i < RING; i++) {
        pxt_send_u64(sys, rg.refs[i], 1, hops);
    }
    px_err e = px_system_shutdown(sys);
    cr_assert_eq(e, PX_OK, "shutdown: %s", px_errname(e));
    uint64_t want = (uint64_t)RING * (hops + 1);
    px_system_stats st = pxt_stats(sys);
    cr_assert_eq(atomic_load(&rg.processed) + st.dead_letters, want,
                 "processed %llu + dead %llu != %llu", (unsigned long long)atomic_load(&rg.processed),
                 (unsigned long long)st.dead_letters, (unsigned long long)want);
    cr_assert_eq(atomic_load(&rg.processed), want,
                 "a drain that returned PX_OK left %llu token hops undelivered",
                 (unsigned long long)(want - atomic_load(&rg.processed)));
    px_system_free(sys);
}

/* Opens a parked recorder's gate once shutdown has turned something into a
 * dead letter (or after 2 s, for a runtime that rejects a queue only when
 * the current receive returns). */
typedef struct late_opener {
    px_system *sys;
    pxt_rec *r;
} late_opener;
static void *late_open_thread(void *p) {
    late_opener *o = p;
    PXT_POLL(PXT_STAT(o->sys, dead_letters) > 0, 2000);
    pxt_rec_open(o->r);
    return NULL;
}

Test(core_system, shutdown_in_reject_mode_does_not_wait_for_a_parked_queue, .timeout = 20) {
    px_config cfg;
    pxt_config(&cfg);
    cfg.shutdown_mode = PX_SHUTDOWN_REJECT;
    px_system *sys = pxt_system_with(&cfg);
    pxt_rec *r = pxt_rec_new();
    px_ref a = pxt_rec_spawn(sys, r, NULL);
    pxt_rec_park(sys, r, a, 1, 0);
    for (int i = 1; i <= 1000; i++) {
        pxt_send_u64(sys, a, 1, (uint64_t)i);
    }
    late_opener o = {sys, r};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, late_open_thread, &o), 0);
    px_err e = px_system_shutdown(sys);
    pthread_join(th, NULL);
    cr_assert_eq(e, PX_OK);
    px_system_stats st = pxt_stats(sys);
    cr_assert_eq(pxt_rec_count(r) + st.dead_letters, 1001, "processed %llu + dead %llu",
                 (unsigned long long)pxt_rec_count(r), (unsigned long long)st.dead_letters);
    cr_assert_gt(st.dead_letters, 0, "reject mode processed the whole queue");
    cr_assert_eq(atomic_load(&r->stopped), 1);
    px_system_free(sys);
    free(r);
}

/* Spins ~150 us per message: simulated work, not synchronization. */
static px_err slow_receive(px_ctx *ctx, px_msg *m) {
    (void)m;
    atomic_uint_least64_t *n = px_state(ctx);
    int64_t until = pxt_now_ns() + 150000;
    while (pxt_now_ns() < until) {
    }
    atomic_fetch_add(n, 1);
    return PX_OK;
}
static const px_behavior slow_b = {.name = "t.slow", .init = pxt_init_ptr_state,
                                   .receive = slow_receive};

Test(core_system, shutdown_drain_bounded_by_its_timeout_returns_etimedout, .timeout = 30) {
    px_config cfg;
    pxt_config(&cfg);
    cfg.shutdown_mode = PX_SHUTDOWN_DRAIN;
    cfg.shutdown_timeout_ms = 200;
    px_system *sys = pxt_system_with(&cfg);
    atomic_uint_least64_t n = 0;
    px_ref a = pxt_spawn(sys, &slow_b, &n, NULL);
    const uint64_t sent = 20000; /* ~3 s of work */
    for (uint64_t i = 0; i < sent; i++) {
        pxt_send_u64(sys, a, 1, i);
    }
    int64_t t0 = pxt_now_ms();
    px_err e = px_system_shutdown(sys);
    int64_t took = pxt_now_ms() - t0;
    cr_assert_eq(e, PX_ETIMEDOUT, "got %s after %lld ms", px_errname(e), (long long)took);
    cr_assert_lt(took, 2500, "shutdown took %lld ms with a 200 ms drain bound", (long long)took);
    px_system_stats st = pxt_stats(sys);
    cr_assert_eq(atomic_load(&n) + st.dead_letters, sent, "processed %llu + dead %llu",
                 (unsigned long long)atomic_load(&n), (unsigned long long)st.dead_letters);
    px_system_free(sys);
}

Test(core_system, shutdown_runs_stop_callbacks_children_first, .timeout = 10) {
    px_system *sys = pxt_system();
    atomic_uint_least64_t order = 0;
    pxt_node c1[4], c2[3];
    pxt_chain(sys, c1, 4, &order);
    pxt_chain(sys, c2, 3, &order);
    cr_assert_eq(pxt_live(sys), 7);
    cr_assert_eq(px_system_shutdown(sys), PX_OK);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(atomic_load(&c1[i].stopped), 1, "chain 1 node %d stopped %d times", i,
                     atomic_load(&c1[i].stopped));
    }
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(atomic_load(&c2[i].stopped), 1);
    }
    for (int i = 0; i + 1 < 4; i++) {
        cr_assert_lt(atomic_load(&c1[i + 1].stop_seq), atomic_load(&c1[i].stop_seq),
                     "chain 1: node %d stopped after its parent %d", i + 1, i);
    }
    for (int i = 0; i + 1 < 3; i++) {
        cr_assert_lt(atomic_load(&c2[i + 1].stop_seq), atomic_load(&c2[i].stop_seq));
    }
    cr_assert_eq(atomic_load(&order), 7);
    px_system_free(sys);
}

Test(core_system, free_without_shutdown_shuts_down_first, .timeout = 10) {
    px_system *sys = pxt_system();
    pxt_rec *r = pxt_rec_new();
    px_ref a = pxt_rec_spawn(sys, r, NULL);
    for (int i = 0; i < 100; i++) {
        pxt_send_u64(sys, a, 1, (uint64_t)i);
    }
    px_system_free(sys);
    cr_assert_eq(atomic_load(&r->stopped), 1);
    cr_assert_eq(pxt_rec_count(r), 100, "the default shutdown mode drains");
    free(r);
}

/* A spawn whose init is still running when shutdown stops the root: init
 * waits (bounded) until the root guardian is no longer alive. */
typedef struct racing_spawn {
    px_system *sys;
    atomic_int in_init;
    atomic_int stop_calls;
    px_err result;
    int arg_kept;
    px_msg *arg;
} racing_spawn;

static px_err racing_init(px_ctx *ctx, const px_msg *arg) {
    racing_spawn *rs = pxt_msg_ptr(arg);
    px_set_state(ctx, rs);
    atomic_store(&rs->in_init, 1);
    PXT_POLL(!px_is_alive(rs->sys, px_system_root(rs->sys)), 10000);
    return PX_OK;
}
static px_err racing_receive(px_ctx *ctx, px_msg *m) {
    (void)ctx;
    (void)m;
    return PX_OK;
}
static void racing_stop(px_ctx *ctx) {
    racing_spawn *rs = px_state(ctx);
    atomic_fetch_add(&rs->stop_calls, 1);
}
static const px_behavior racing_b = {.name = "t.racing", .init = racing_init,
                                     .receive = racing_receive, .stop = racing_stop};

static void *racing_spawn_thread(void *p) {
    racing_spawn *rs = p;
    rs->arg = pxt_ptr_msg(rs);
    px_ref ref = PX_REF_NIL;
    rs->result = px_system_spawn(rs->sys, &racing_b, &rs->arg, NULL, &ref);
    rs->arg_kept = rs->arg != NULL;
    return NULL;
}

Test(core_system, a_spawn_overtaken_by_shutdown_fails_cleanly_leaving_the_caller_its_argument,
     .timeout = 20) {
    px_system *sys = pxt_system();
    racing_spawn rs = {.sys = sys};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, racing_spawn_thread, &rs), 0);
    PXT_AWAIT(atomic_load(&rs.in_init), 5000);
    px_err e = px_system_shutdown(sys);
    pthread_join(th, NULL);
    cr_assert_eq(e, PX_OK);
    if (rs.result == PX_OK) {
        /* Accepted: then it must have been stopped like everyone else. */
        cr_assert_eq(atomic_load(&rs.stop_calls), 1);
    } else {
        cr_assert_eq(rs.result, PX_ECLOSED, "got %s", px_errname(rs.result));
        cr_assert(rs.arg_kept, "px_system_spawn returned %s but took (and freed) the start "
                  "argument: on error the caller still owns it", px_errname(rs.result));
        px_msg_free(rs.arg);
    }
    px_system_free(sys);
}

/* --- limits ------------------------------------------------------------ */

Test(core_system, spawn_beyond_max_actors_is_elimit, .timeout = 10) {
    px_config cfg;
    pxt_config(&cfg);
    cfg.max_actors = 16;
    px_system *sys = pxt_system_with(&cfg);
    px_ref refs[32];
    int n = 0;
    px_err e = PX_OK;
    static const px_behavior b = {.name = "t.lim", .receive = slow_receive};
    for (; n < 32; n++) {
        e = px_system_spawn(sys, &b, NULL, NULL, &refs[n]);
        if (e != PX_OK) {
            break;
        }
    }
    cr_assert_eq(e, PX_ELIMIT, "spawn %d: %s", n, px_errname(e));
    cr_assert_geq(n, 15, "only %d actors fit under max_actors=16", n);
    cr_assert_leq(n, 16, "%d actors live with max_actors=16", n);
    cr_assert_geq(PXT_STAT(sys, rejected), 1, "a refused spawn counts as rejected");
    /* One more fits once one has gone. */
    cr_assert_eq(px_stop(sys, refs[0]), PX_OK);
    PXT_AWAIT(!px_is_alive(sys, refs[0]), 5000);
    px_ref again = PX_REF_NIL;
    PXT_AWAIT(px_system_spawn(sys, &b, NULL, NULL, &again) == PX_OK, 5000);
    px_system_free(sys);
}

Test(core_system, bounded_capacity_above_max_mailbox_capacity_is_elimit, .timeout = 10) {
    px_config cfg;
    pxt_config(&cfg);
    cfg.max_mailbox_capacity = 8;
    px_system *sys = pxt_system_with(&cfg);
    pxt_rec *r = pxt_rec_new();
    px_mailbox_opts mb = {.capacity = 9, .overflow = PX_OVERFLOW_ERROR};
    px_spawn_opts so = {.mailbox = &mb};
    px_msg *arg = pxt_ptr_msg(r);
    px_ref a = PX_REF_NIL;
    cr_assert_eq(px_system_spawn(sys, pxt_rec_behavior(), &arg, &so, &a), PX_ELIMIT);
    cr_assert_not_null(arg);
    px_msg_free(arg);
    cr_assert_eq(pxt_live(sys), 0);
    mb.capacity = 8;
    a = pxt_rec_spawn(sys, r, &so);
    cr_assert_eq(pxt_astats(sys, a).capacity, 8);
    px_system_free(sys);
    free(r);
}

Test(core_system, bytes_payload_above_max_msg_size_is_emsgsize, .timeout = 10) {
    px_config cfg;
    pxt_config(&cfg);
    cfg.max_msg_size = 100;
    px_system *sys = pxt_system_with(&cfg);
    pxt_rec *r = pxt_rec_new();
    px_ref a = pxt_rec_spawn(sys, r, NULL);
    char buf[101];
    memset(buf, 'x', sizeof buf);
    px_msg *m = NULL;
    cr_assert_eq(px_msg_bytes(&m, 1, buf, 101), PX_OK);
    px_msg *orig = m;
    cr_assert_eq(px_system_send(sys, a, &m), PX_EMSGSIZE);
    cr_assert_eq(m, orig, "the caller keeps the message");
    px_msg_free(m);
    cr_assert_geq(PXT_STAT(sys, rejected), 1);
    cr_assert_eq(px_msg_bytes(&m, 1, buf, 100), PX_OK);
    cr_assert_eq(px_system_send(sys, a, &m), PX_OK, "exactly max_msg_size is allowed");
    PXT_AWAIT(pxt_rec_count(r) == 1, 5000);
    px_system_free(sys);
    free(r);
}

/* --- stats ------------------------------------------------------------- */

Test(core_system, stats_count_spawns_stops_and_deliveries, .timeout = 10) {
    px_system *sys = pxt_system();
    cr_assert_eq(pxt_spawned(sys), 0);
    cr_assert_eq(pxt_live(sys), 0);
    px_system_stats st = pxt_stats(sys);
    cr_assert_eq(st.messages, 0);
    pxt_rec *r[3];
    px_ref a[3];
    for (int i = 0; i < 3; i++) {
        r[i] = pxt_rec_new();
        a[i] = pxt_rec_spawn(sys, r[i], NULL);
        for (int j = 0; j < 10; j++) {
            pxt_send_u64(sys, a[i], 1, (uint64_t)j);
        }
    }
    PXT_AWAIT(PXT_STAT(sys, messages) == 30, 5000);
    cr_assert_eq(pxt_astats(sys, a[1]).processed, 10);
    cr_assert_eq(px_stop(sys, a[0]), PX_OK);
    PXT_AWAIT(PXT_STAT(sys, stopped) == 1, 5000);
    st = pxt_stats(sys);
    cr_assert_eq(pxt_spawned(sys), 3);
    cr_assert_eq(pxt_live(sys), 2);
    cr_assert_eq(st.messages, 30);
    cr_assert_eq(st.dead_letters, 0);
    cr_assert_eq(st.failures, 0);
    px_system_free(sys);
    for (int i = 0; i < 3; i++) {
        free(r[i]);
    }
}

/* --- walking the actors ------------------------------------------------ */

#define WALK_MAX 64
typedef struct walk {
    int n;
    px_ref ref[WALK_MAX];
    char beh[WALK_MAX][32];
    char name[WALK_MAX][32]; /* "" when unnamed */
    px_actor_stats st[WALK_MAX];
} walk;

static void walk_fn(void *arg, px_ref ref, const char *behavior, const char *name,
                    const px_actor_stats *st) {
    walk *w = arg;
    if (w->n < WALK_MAX) {
        w->ref[w->n] = ref;
        snprintf(w->beh[w->n], sizeof w->beh[0], "%s", behavior);
        snprintf(w->name[w->n], sizeof w->name[0], "%s", name != NULL ? name : "");
        w->st[w->n] = *st;
    }
    w->n++;
}

static int walk_find(const walk *w, px_ref ref) {
    for (int i = 0; i < w->n && i < WALK_MAX; i++) {
        if (px_ref_eq(w->ref[i], ref)) {
            return i;
        }
    }
    return -1;
}

Test(core_system, actors_walk_reports_each_live_actor_with_behavior_name_and_mailbox,
     .timeout = 10) {
    px_system *sys = pxt_system();
    walk *w = calloc(1, sizeof *w);
    cr_assert_eq(px_system_actors(sys, walk_fn, w), PX_OK);
    cr_assert_eq(w->n, 0, "a fresh system reports no actor (the root is not one)");

    pxt_rec *r[3];
    px_ref a[3];
    px_mailbox_opts bounded = {.capacity = 8, .overflow = PX_OVERFLOW_ERROR};
    px_spawn_opts named = {.mailbox = &bounded, .name = "walked"};
    for (int i = 0; i < 3; i++) {
        r[i] = pxt_rec_new();
        a[i] = pxt_rec_spawn(sys, r[i], i == 1 ? &named : NULL);
    }
    /* a[0] parked in its receive with 5 more queued behind it. */
    pxt_rec_park(sys, r[0], a[0], 1, 0);
    for (int j = 0; j < 5; j++) {
        pxt_send_u64(sys, a[0], 1, (uint64_t)j);
    }
    cr_assert_eq(px_system_actors(sys, walk_fn, w), PX_OK);
    cr_assert_eq(w->n, 3);
    for (int i = 0; i < 3; i++) {
        int k = walk_find(w, a[i]);
        cr_assert_geq(k, 0, "actor %d reported", i);
        cr_assert_str_eq(w->beh[k], "pxt.rec");
        cr_assert_str_eq(w->name[k], i == 1 ? "walked" : "");
        cr_assert_eq(w->st[k].capacity, i == 1 ? 8u : 0u);
        cr_assert_eq(w->st[k].depth, i == 0 ? 5u : 0u);
    }
    pxt_rec_open(r[0]);
    PXT_AWAIT(pxt_rec_count(r[0]) == 6, 5000);

    cr_assert_eq(px_stop(sys, a[2]), PX_OK);
    PXT_AWAIT(PXT_STAT(sys, stopped) == 1, 5000);
    memset(w, 0, sizeof *w);
    cr_assert_eq(px_system_actors(sys, walk_fn, w), PX_OK);
    cr_assert_eq(w->n, 2);
    cr_assert_lt(walk_find(w, a[2]), 0, "a stopped actor is not reported");
    cr_assert_eq(px_system_actors(NULL, walk_fn, w), PX_EINVAL);
    cr_assert_eq(px_system_actors(sys, NULL, w), PX_EINVAL);
    px_system_free(sys);
    for (int i = 0; i < 3; i++) {
        free(r[i]);
    }
    free(w);
}

typedef struct churn {
    px_system *sys;
    atomic_int done;
    atomic_int spawned;
} churn;

/* Spawns and stops echo actors, a few alive at a time, slots reused. */
static void *churn_main(void *arg) {
    churn *c = arg;
    px_ref live[8] = {0};
    for (int i = 0; i < 4000; i++) {
        int k = i % 8;
        if (!px_ref_is_nil(live[k])) {
            (void)px_stop(c->sys, live[k]);
        }
        live[k] = PX_REF_NIL;
        if (px_system_spawn(c->sys, pxt_echo_behavior(), NULL, NULL, &live[k]) == PX_OK) {
            atomic_fetch_add(&c->spawned, 1);
        }
    }
    atomic_store(&c->done, 1);
    return NULL;
}

static void count_echo(void *arg, px_ref ref, const char *behavior, const char *name,
                       const px_actor_stats *st) {
    (void)ref;
    (void)name;
    (void)st;
    int *n = arg;
    if (strcmp(behavior, "pxt.echo") == 0) {
        (*n)++;
    } else {
        *n = -100000; /* nothing else lives here */
    }
}

Test(core_system, actors_walk_is_safe_against_concurrent_spawns_and_stops, .timeout = 60) {
    px_system *sys = pxt_system();
    churn c = {.sys = sys};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, churn_main, &c), 0);
    int walks = 0;
    while (!atomic_load(&c.done) || walks < 10) {
        int n = 0;
        cr_assert_eq(px_system_actors(sys, count_echo, &n), PX_OK);
        cr_assert_geq(n, 0, "only echo actors were reported");
        walks++;
    }
    pthread_join(th, NULL);
    cr_assert_eq(atomic_load(&c.spawned), 4000);
    PXT_AWAIT(pxt_live(sys) == 8, 10000);
    int n = 0;
    cr_assert_eq(px_system_actors(sys, count_echo, &n), PX_OK);
    cr_assert_eq(n, 8);
    px_system_free(sys);
}
