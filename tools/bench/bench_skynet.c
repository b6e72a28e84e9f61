/*
 * bench_skynet.c — core.skynet_1m_ms: the skynet benchmark.
 *
 * A driver actor spawns the top node of a 10-ary tree of 1,000,000 leaves
 * (1,111,111 actors in all). Each node gets a START message carrying (num,
 * size); a leaf (size 1) sends num to its parent and stops; an inner node
 * spawns 10 children, sums their 10 results, sends the sum to its parent
 * and stops. The driver checks the root result equals 499999500000 (fails
 * loudly otherwise). The tree is run RUNS times in one system; figure = the
 * fastest run in ms (each run is printed on stderr).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"

#define RUNS 3
#define FANOUT 10u
enum { TAG_GO = 1, TAG_START = 2, TAG_RESULT = 3 };

typedef struct start_arg {
    uint64_t num;
    uint64_t size;
} start_arg;

typedef struct node_state {
    uint64_t sum;
    uint32_t count;
} node_state;

static uint64_t n_leaves;
static uint64_t expected;
static uint64_t result;
static bench_done done;

static void fail_run(const char *what, px_err err)
{
    fprintf(stderr, "bench: skynet: %s: %s\n", what, px_strerror(err));
    bench_done_fail(&done);
}

static const px_behavior node_behavior;

static px_err spawn_node(px_ctx *ctx, uint64_t num, uint64_t size)
{
    px_ref child;
    px_err err = px_spawn(ctx, &node_behavior, NULL, NULL, &child);
    if (err != PX_OK) {
        fail_run("px_spawn", err);
        return err;
    }
    start_arg a = {num, size};
    px_msg *m = NULL;
    err = px_msg_bytes(&m, TAG_START, &a, sizeof(a));
    if (err == PX_OK) {
        err = px_send(ctx, child, &m);
    }
    if (err != PX_OK) {
        px_msg_free(m);
        fail_run("send start", err);
    }
    return err;
}

static px_err node_receive(px_ctx *ctx, px_msg *msg)
{
    if (px_msg_tag(msg) == TAG_START) {
        size_t len = 0;
        const void *data = px_msg_data(msg, &len);
        start_arg a;
        if (data == NULL || len != sizeof(a)) {
            fail_run("start payload", PX_ETYPE);
            return PX_ETYPE;
        }
        memcpy(&a, data, sizeof(a));
        if (a.size == 1) {
            px_err err = bench_send_u64(ctx, px_parent(ctx), TAG_RESULT, a.num, &done);
            px_stop_self(ctx);
            return err;
        }
        node_state *s = calloc(1, sizeof(*s));
        if (s == NULL) {
            fail_run("calloc", PX_ENOMEM);
            return PX_ENOMEM;
        }
        px_set_state(ctx, s);
        uint64_t sub = a.size / FANOUT;
        for (uint32_t i = 0; i < FANOUT; i++) {
            px_err err = spawn_node(ctx, a.num + i * sub, sub);
            if (err != PX_OK) {
                return err;
            }
        }
        return PX_OK;
    }
    if (px_msg_tag(msg) == TAG_RESULT) {
        node_state *s = px_state(ctx);
        if (s == NULL) {
            fail_run("result at a leaf", PX_ETYPE);
            return PX_ETYPE;
        }
        s->sum += px_msg_get_u64(msg);
        if (++s->count == FANOUT) {
            px_err err = bench_send_u64(ctx, px_parent(ctx), TAG_RESULT, s->sum, &done);
            px_stop_self(ctx);
            return err;
        }
        return PX_OK;
    }
    return PX_ETYPE;
}

static void node_stop(px_ctx *ctx)
{
    free(px_state(ctx));
    px_set_state(ctx, NULL);
}

static const px_behavior node_behavior = {
    .name = "bench.skynet.node",
    .receive = node_receive,
    .stop = node_stop,
};

static px_err driver_receive(px_ctx *ctx, px_msg *msg)
{
    if (px_msg_tag(msg) == TAG_GO) {
        return spawn_node(ctx, 0, n_leaves);
    }
    if (px_msg_tag(msg) == TAG_RESULT) {
        result = px_msg_get_u64(msg);
        bench_done_signal(&done);
        return PX_OK;
    }
    return PX_ETYPE;
}

static const px_behavior driver_behavior = {.name = "bench.skynet.driver",
                                            .receive = driver_receive};

int main(int argc, char **argv)
{
    n_leaves = bench_arg_u64(argc, argv, 1, 1000000);
    for (uint64_t s = n_leaves; s > 1; s /= FANOUT) {
        if (s % FANOUT != 0) {
            bench_die("skynet: leaf count must be a power of %u", FANOUT);
        }
    }
    expected = n_leaves * (n_leaves - 1) / 2;
    px_system *sys = bench_system(0);
    px_ref driver;
    bench_check(px_system_spawn(sys, &driver_behavior, NULL, NULL, &driver), "spawn driver");

    uint64_t best = UINT64_MAX;
    for (int run = 0; run < RUNS; run++) {
        bench_done_init(&done);
        result = 0;
        uint64_t t0 = bench_kick(sys, driver, TAG_GO, "send go");
        uint64_t t1 = bench_done_wait(&done, 300, "skynet");
        bench_done_fini(&done);
        if (result != expected) {
            bench_die("skynet: FAILED: root result %llu, expected %llu",
                      (unsigned long long)result, (unsigned long long)expected);
        }
        uint64_t ms = (t1 - t0) / 1000000;
        fprintf(stderr, "bench: skynet run %d: %llu ms (result %llu)\n", run,
                (unsigned long long)ms, (unsigned long long)result);
        if (ms < best) {
            best = ms;
        }
    }
    px_system_stats st = bench_stats(sys);
    fprintf(stderr, "bench: skynet: spawned %llu stopped %llu live %llu failures %llu\n",
            (unsigned long long)st.spawned, (unsigned long long)st.stopped,
            (unsigned long long)st.live_actors, (unsigned long long)st.failures);
    if (st.failures != 0) {
        bench_die("skynet: %llu actor failures", (unsigned long long)st.failures);
    }
    bench_figure_u64("core.skynet_1m_ms", best, "ms");
    bench_system_free(sys);
    return 0;
}
