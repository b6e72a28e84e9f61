/*
 * bench_sup.c — supervision figures, each on a fresh system:
 *
 *  - sup.child_spawn_ns: one parent spawns N supervised children with
 *    px_spawn_child (ids "c0".."c<N-1>", formatted before the clock starts;
 *    behavior registered by name) in chunks, re-triggering itself with a message so it yields between
 *    chunks. Figure = wall time from the first trigger to the last spawn,
 *    divided by N. Checked: every child ran init, a duplicate id is refused
 *    with PX_EEXIST, live_actors >= N.
 *  - sup.restart_us: a parent with one child (default decider: Restart,
 *    restart limit 1000000 in 1000 ms so it never trips). Per cycle the
 *    parent sends the child "fail" (its receive returns PX_EFAIL) and at once
 *    "ping"; the ping waits in the mailbox while the child restarts and the
 *    new instance answers "pong". Figure = median time from sending "fail"
 *    to receiving the pong over M cycles (mean and tail on stderr). Checked:
 *    every pong comes from the expected instance and carries the cycle's
 *    sequence number; restarts and failures in the stats equal M.
 *  - sup.failure_storm_restarts_per_s: S children under one parent (limit
 *    K+1 restarts per window, so it never trips); the parent sends each child
 *    K "fail" messages, one round of S sends per turn. Every instance's init
 *    counts; the init that completes S*K restarts ends the clock. Figure =
 *    S*K / wall time from the first round to that init. Checked: each child
 *    ran init exactly K+1 times; restarts = failures = S*K and no
 *    escalation in the stats.
 *
 * Each failure logs one ERROR line ("actor ... failed"). The benchmark
 * systems log through a sink that formats them as usual but counts them
 * instead of writing them to stderr (the count is checked); every other
 * line goes to px_log_stderr.
 *
 * Usage: px_bench_sup [N [M [S [K]]]] (defaults 100000 10000 10000 10).
 * Figures come out in the order restart, storm, spawn.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_util.h"

enum { TAG_GO = 1, TAG_FAIL = 2, TAG_PING = 3, TAG_PONG = 4 };

#define CHUNK 4096u

/* ---- the benchmark systems and their log sink ---- */

static _Atomic uint64_t failure_lines;

static void sup_log_sink(void *arg, px_log_level level, const char *node, const char *line)
{
    if (level == PX_LOG_ERROR && strstr(line, ") failed: ") != NULL) {
        atomic_fetch_add_explicit(&failure_lines, 1, memory_order_relaxed);
        return;
    }
    px_log_stderr(arg, level, node, line);
}

/* A fresh benchmark system logging through the counting sink (count reset),
 * with `child` registered by name and `parent` spawned at the top. */
static px_system *sup_setup(uint32_t max_actors, const px_behavior *child,
                            const px_behavior *parent, px_ref *parent_ref)
{
    px_system *sys = bench_system_sink(max_actors, sup_log_sink, NULL);
    atomic_store(&failure_lines, 0);
    bench_check(px_behavior_register(sys, child), "register child");
    bench_check(px_system_spawn(sys, parent, NULL, NULL, parent_ref), "spawn parent");
    return sys;
}

static void free_timed(px_system *sys, const char *what)
{
    uint64_t s0 = bench_now_ns();
    bench_system_free(sys);
    fprintf(stderr, "bench: %s: shutdown took %.1f ms\n", what,
            (double)(bench_now_ns() - s0) / 1e6);
}

/* Actor context: a u64 message to self (the next chunk). */
static px_err send_self(px_ctx *ctx, uint32_t tag, bench_done *d)
{
    return bench_send_u64(ctx, px_self(ctx), tag, 0, d);
}

/* ==== sup.child_spawn_ns ==== */

static uint64_t sp_n;
static char (*sp_ids)[24]; /* "c0".."c<N-1>", formatted before the clock starts */
static uint64_t sp_spawned;
static _Atomic uint64_t sp_inits;
static bench_done sp_done;

static px_err sp_child_init(px_ctx *ctx, const px_msg *arg)
{
    (void)ctx;
    (void)arg;
    atomic_fetch_add_explicit(&sp_inits, 1, memory_order_relaxed);
    return PX_OK;
}

static px_err sp_child_receive(px_ctx *ctx, px_msg *msg)
{
    (void)ctx;
    (void)msg;
    return PX_ETYPE; /* never sent anything */
}

static const px_behavior sp_child_behavior = {
    .name = "bench.sup.spawn.child",
    .init = sp_child_init,
    .receive = sp_child_receive,
};

static px_err sp_parent_receive(px_ctx *ctx, px_msg *msg)
{
    if (px_msg_tag(msg) != TAG_GO) {
        return PX_ETYPE;
    }
    px_child_spec spec = {.behavior = sp_child_behavior.name};
    for (uint32_t i = 0; i < CHUNK && sp_spawned < sp_n; i++) {
        spec.id = sp_ids[sp_spawned];
        px_err err = px_spawn_child(ctx, &spec, NULL, NULL);
        if (err != PX_OK) {
            fprintf(stderr, "bench: px_spawn_child %s: %s\n", spec.id, px_strerror(err));
            bench_done_fail(&sp_done);
            return err;
        }
        sp_spawned++;
    }
    if (sp_spawned < sp_n) {
        return send_self(ctx, TAG_GO, &sp_done);
    }
    bench_done_signal(&sp_done); /* the clock stops here */
    spec.id = "c0";
    px_err err = px_spawn_child(ctx, &spec, NULL, NULL);
    if (err != PX_EEXIST) {
        fprintf(stderr, "bench: duplicate id c0: %s, expected PX_EEXIST\n", px_errname(err));
        bench_done_fail(&sp_done);
    }
    return PX_OK;
}

static const px_behavior sp_parent_behavior = {
    .name = "bench.sup.spawn.parent",
    .receive = sp_parent_receive,
};

static void bench_child_spawn(uint64_t n)
{
    sp_n = n;
    sp_spawned = 0;
    sp_ids = malloc(n * sizeof(*sp_ids));
    if (sp_ids == NULL) {
        bench_die("child spawn: out of memory for %llu ids", (unsigned long long)n);
    }
    for (uint64_t i = 0; i < n; i++) {
        snprintf(sp_ids[i], sizeof(sp_ids[i]), "c%llu", (unsigned long long)i);
    }
    atomic_store(&sp_inits, 0);
    bench_done_init(&sp_done);
    px_ref parent;
    px_system *sys =
        sup_setup((uint32_t)(n + 1024), &sp_child_behavior, &sp_parent_behavior, &parent);
    uint64_t t0 = bench_kick(sys, parent, TAG_GO, "send go");
    uint64_t t1 = bench_done_wait(&sp_done, 300, "child spawn");

    if (atomic_load(&sp_inits) != n) {
        bench_die("child spawn: %llu inits, expected %llu",
                  (unsigned long long)atomic_load(&sp_inits), (unsigned long long)n);
    }
    px_system_stats st = bench_stats(sys);
    if (st.live_actors < n + 1) {
        bench_die("child spawn: live_actors %llu < %llu", (unsigned long long)st.live_actors,
                  (unsigned long long)(n + 1));
    }
    bench_figure_u64("sup.child_spawn_ns", (t1 - t0) / n, "ns");
    free_timed(sys, "child spawn");
    bench_done_fini(&sp_done);
    free(sp_ids);
}

/* ==== sup.restart_us ==== */

static uint64_t rs_cycles;
static uint64_t rs_cycle;
static uint64_t rs_t0;
static uint32_t *rs_lat_ns;
static px_ref rs_child;
static _Atomic uint64_t rs_inits;
static bench_done rs_done;

static px_err rs_child_init(px_ctx *ctx, const px_msg *arg)
{
    (void)arg;
    uint64_t inst = atomic_fetch_add_explicit(&rs_inits, 1, memory_order_relaxed) + 1;
    px_set_state(ctx, (void *)(uintptr_t)inst);
    return PX_OK;
}

static px_err rs_child_receive(px_ctx *ctx, px_msg *msg)
{
    switch (px_msg_tag(msg)) {
    case TAG_FAIL:
        return PX_EFAIL;
    case TAG_PING: {
        uint64_t inst = (uint64_t)(uintptr_t)px_state(ctx);
        return bench_send_u64(ctx, px_msg_sender(msg), TAG_PONG,
                              inst << 32 | (px_msg_get_u64(msg) & 0xffffffffu), &rs_done);
    }
    default:
        return PX_ETYPE;
    }
}

static const px_behavior rs_child_behavior = {
    .name = "bench.sup.restart.child",
    .init = rs_child_init,
    .receive = rs_child_receive,
};

/* Starts one cycle: fail, then ping, back to back. */
static px_err rs_cycle_start(px_ctx *ctx)
{
    rs_t0 = bench_now_ns();
    px_err err = bench_send_u64(ctx, rs_child, TAG_FAIL, 0, &rs_done);
    if (err == PX_OK) {
        err = bench_send_u64(ctx, rs_child, TAG_PING, rs_cycle, &rs_done);
    }
    return err;
}

static px_err rs_parent_receive(px_ctx *ctx, px_msg *msg)
{
    switch (px_msg_tag(msg)) {
    case TAG_GO: {
        px_restart_policy pol;
        px_restart_policy_init(&pol);
        pol.max_restarts = 1000000;
        pol.window_ms = 1000;
        px_child_spec spec = {.id = "worker", .behavior = rs_child_behavior.name, .policy = &pol};
        px_err err = px_spawn_child(ctx, &spec, NULL, &rs_child);
        if (err != PX_OK) {
            fprintf(stderr, "bench: px_spawn_child: %s\n", px_strerror(err));
            bench_done_fail(&rs_done);
            return err;
        }
        return rs_cycle_start(ctx);
    }
    case TAG_PONG: {
        uint64_t t = bench_now_ns();
        uint64_t v = px_msg_get_u64(msg);
        uint64_t want = (rs_cycle + 2) << 32 | (rs_cycle & 0xffffffffu);
        if (v != want) {
            fprintf(stderr, "bench: cycle %llu: pong from instance %llu seq %llu, expected "
                    "instance %llu seq %llu\n", (unsigned long long)rs_cycle,
                    (unsigned long long)(v >> 32), (unsigned long long)(v & 0xffffffffu),
                    (unsigned long long)(rs_cycle + 2), (unsigned long long)rs_cycle);
            bench_done_fail(&rs_done);
            return PX_EFAIL;
        }
        uint64_t dt = t - rs_t0;
        rs_lat_ns[rs_cycle] = dt > UINT32_MAX ? UINT32_MAX : (uint32_t)dt;
        if (++rs_cycle == rs_cycles) {
            bench_done_signal(&rs_done);
            return PX_OK;
        }
        return rs_cycle_start(ctx);
    }
    default:
        return PX_ETYPE;
    }
}

static const px_behavior rs_parent_behavior = {
    .name = "bench.sup.restart.parent",
    .receive = rs_parent_receive,
};

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static double mean_us(const uint32_t *v, uint64_t n)
{
    double s = 0;
    for (uint64_t i = 0; i < n; i++) {
        s += v[i];
    }
    return s / (double)n / 1e3;
}

static void bench_restart(uint64_t m)
{
    rs_cycles = m;
    rs_cycle = 0;
    atomic_store(&rs_inits, 0);
    rs_lat_ns = calloc(m, sizeof(*rs_lat_ns));
    if (rs_lat_ns == NULL) {
        bench_die("restart: out of memory");
    }
    bench_done_init(&rs_done);
    px_ref parent;
    px_system *sys = sup_setup(0, &rs_child_behavior, &rs_parent_behavior, &parent);
    uint64_t t0 = bench_kick(sys, parent, TAG_GO, "send go");
    uint64_t t1 = bench_done_wait(&rs_done, 300, "restart");

    px_system_stats st = bench_stats(sys);
    if (st.restarts != m || st.failures != m || st.escalations != 0 ||
        atomic_load(&rs_inits) != m + 1 || atomic_load(&failure_lines) != m) {
        bench_die("restart: restarts %llu, failures %llu, escalations %llu, inits %llu, "
                  "failure log lines %llu; expected %llu, %llu, 0, %llu, %llu",
                  (unsigned long long)st.restarts, (unsigned long long)st.failures,
                  (unsigned long long)st.escalations, (unsigned long long)atomic_load(&rs_inits),
                  (unsigned long long)atomic_load(&failure_lines), (unsigned long long)m,
                  (unsigned long long)m, (unsigned long long)(m + 1), (unsigned long long)m);
    }
    uint64_t tenth = m / 10 ? m / 10 : 1;
    double first = mean_us(rs_lat_ns, tenth), last = mean_us(rs_lat_ns + m - tenth, tenth);
    qsort(rs_lat_ns, m, sizeof(*rs_lat_ns), cmp_u32);
    double mean = (double)(t1 - t0) / (double)m / 1e3;
    fprintf(stderr,
            "bench: restart: %llu cycles: mean %.2f us (first tenth %.2f, last tenth %.2f), "
            "p10 %.2f, p90 %.2f, p99 %.2f, max %.2f us\n",
            (unsigned long long)m, mean, first, last, rs_lat_ns[m / 10] / 1e3,
            rs_lat_ns[m * 9 / 10] / 1e3, rs_lat_ns[m * 99 / 100] / 1e3, rs_lat_ns[m - 1] / 1e3);
    bench_figure_f("sup.restart_us", rs_lat_ns[m / 2] / 1e3, 2, "us");
    free_timed(sys, "restart");
    free(rs_lat_ns);
    bench_done_fini(&rs_done);
}

/* ==== sup.failure_storm_restarts_per_s ==== */

enum { ST_SPAWN = 1, ST_ROUND = 2 };

static uint64_t st_children, st_fails;
static uint64_t st_spawned, st_round;
static px_ref *st_refs;
static _Atomic uint32_t *st_child_inits; /* per child */
static _Atomic uint64_t st_inits;        /* all children */
static uint64_t st_inits_total;
static bench_done st_ready, st_done;

static px_err st_child_init(px_ctx *ctx, const px_msg *arg)
{
    (void)ctx;
    uint64_t i = px_msg_get_u64(arg);
    atomic_fetch_add_explicit(&st_child_inits[i], 1, memory_order_relaxed);
    if (atomic_fetch_add_explicit(&st_inits, 1, memory_order_acq_rel) + 1 == st_inits_total) {
        bench_done_signal(&st_done);
    }
    return PX_OK;
}

static px_err st_child_receive(px_ctx *ctx, px_msg *msg)
{
    (void)ctx;
    return px_msg_tag(msg) == TAG_FAIL ? PX_EFAIL : PX_ETYPE;
}

static const px_behavior st_child_behavior = {
    .name = "bench.sup.storm.child",
    .init = st_child_init,
    .receive = st_child_receive,
};

static px_err st_parent_receive(px_ctx *ctx, px_msg *msg)
{
    switch (px_msg_tag(msg)) {
    case ST_SPAWN: { /* setup, not timed: CHUNK children per turn */
        px_restart_policy pol;
        px_restart_policy_init(&pol);
        pol.max_restarts = (uint32_t)st_fails + 1;
        px_child_spec spec = {.behavior = st_child_behavior.name, .policy = &pol};
        char id[32];
        for (uint32_t i = 0; i < CHUNK && st_spawned < st_children; i++) {
            snprintf(id, sizeof(id), "c%llu", (unsigned long long)st_spawned);
            spec.id = id;
            px_msg *arg = NULL;
            px_err err = px_msg_u64(&arg, 0, st_spawned);
            if (err == PX_OK) {
                err = px_spawn_child(ctx, &spec, &arg, &st_refs[st_spawned]);
            }
            if (err != PX_OK) {
                px_msg_free(arg);
                fprintf(stderr, "bench: px_spawn_child %s: %s\n", id, px_strerror(err));
                bench_done_fail(&st_ready);
                return err;
            }
            st_spawned++;
        }
        if (st_spawned < st_children) {
            return send_self(ctx, ST_SPAWN, &st_ready);
        }
        bench_done_signal(&st_ready);
        return PX_OK;
    }
    case ST_ROUND: /* one "fail" to every child per turn */
        for (uint64_t i = 0; i < st_children; i++) {
            px_err err = bench_send_u64(ctx, st_refs[i], TAG_FAIL, st_round, &st_done);
            if (err != PX_OK) {
                return err;
            }
        }
        if (++st_round < st_fails) {
            return send_self(ctx, ST_ROUND, &st_done);
        }
        return PX_OK;
    default:
        return PX_ETYPE;
    }
}

static const px_behavior st_parent_behavior = {
    .name = "bench.sup.storm.parent",
    .receive = st_parent_receive,
};

static void bench_storm(uint64_t s, uint64_t k)
{
    st_children = s;
    st_fails = k;
    st_spawned = st_round = 0;
    st_inits_total = s * (k + 1);
    atomic_store(&st_inits, 0);
    st_refs = calloc(s, sizeof(*st_refs));
    st_child_inits = calloc(s, sizeof(*st_child_inits));
    if (st_refs == NULL || st_child_inits == NULL) {
        bench_die("storm: out of memory");
    }
    bench_done_init(&st_ready);
    bench_done_init(&st_done);
    px_ref parent;
    px_system *sys =
        sup_setup((uint32_t)(s + 1024), &st_child_behavior, &st_parent_behavior, &parent);
    (void)bench_kick(sys, parent, ST_SPAWN, "send spawn");
    (void)bench_done_wait(&st_ready, 300, "storm setup");

    uint64_t t0 = bench_kick(sys, parent, ST_ROUND, "send round");
    uint64_t t1 = bench_done_wait(&st_done, 300, "storm");

    /* The parent counts a restart when the new instance's ack reaches it,
     * just after its init: wait (bounded) for the stats to catch up. */
    uint64_t total = s * k;
    px_system_stats st = bench_stats(sys);
    for (int i = 0; i < 5000 && st.restarts < total; i++) {
        usleep(1000);
        st = bench_stats(sys);
    }
    uint64_t t2 = bench_now_ns();
    if (st.restarts != total || st.failures != total || st.escalations != 0 ||
        atomic_load(&failure_lines) != total) {
        bench_die("storm: restarts %llu, failures %llu, escalations %llu, failure log lines "
                  "%llu; expected %llu, %llu, 0, %llu",
                  (unsigned long long)st.restarts, (unsigned long long)st.failures,
                  (unsigned long long)st.escalations,
                  (unsigned long long)atomic_load(&failure_lines), (unsigned long long)total,
                  (unsigned long long)total, (unsigned long long)total);
    }
    for (uint64_t i = 0; i < s; i++) {
        if (atomic_load(&st_child_inits[i]) != k + 1) {
            bench_die("storm: child c%llu ran init %u times, expected %llu",
                      (unsigned long long)i, atomic_load(&st_child_inits[i]),
                      (unsigned long long)(k + 1));
        }
    }
    fprintf(stderr, "bench: storm: %llu restarts of %llu children in %.1f ms (stats caught up "
            "%.1f ms later)\n", (unsigned long long)total, (unsigned long long)s,
            (double)(t1 - t0) / 1e6, (double)(t2 - t1) / 1e6);
    bench_figure_u64("sup.failure_storm_restarts_per_s",
                     (uint64_t)((double)total * 1e9 / (double)(t1 - t0)), "restarts/s");
    free_timed(sys, "storm");
    free(st_refs);
    free(st_child_inits);
    bench_done_fini(&st_ready);
    bench_done_fini(&st_done);
}

int main(int argc, char **argv)
{
    uint64_t n = bench_arg_u64(argc, argv, 1, 100000);
    uint64_t m = bench_arg_u64(argc, argv, 2, 10000);
    uint64_t s = bench_arg_u64(argc, argv, 3, 10000);
    uint64_t k = bench_arg_u64(argc, argv, 4, 10);
    if (m >= UINT32_MAX || k >= 1000000) {
        bench_die("counts out of range");
    }
    /* Spawn last: its shutdown (N children under one parent) is the
     * slowest part, so the other figures come out first. */
    bench_restart(m);
    bench_storm(s, k);
    bench_child_spawn(n);
    return 0;
}
