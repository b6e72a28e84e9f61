/*
 * bench_cluster.c — the cluster suite: membership against a real etcd.
 *
 *   cluster.join_ms_3          3 node processes started at once (fork/exec
 *                              back to back); the clock runs from the first
 *                              start until every node's member list shows
 *                              all 3 up (registered in etcd, seen through
 *                              the watch, and linked: UP needs the link)
 *   cluster.join_ms_10         the same with 10 processes
 *   cluster.down_detect_ms     3 processes up; one gets SIGKILL; the clock
 *                              runs until both survivors see it down (lease
 *                              TTL 2 s, keepalive every TTL/3; target
 *                              <= 2500)
 *   cluster.whereis_global_ns  px_whereis_global of a registered name from
 *                              the node's watched copy, averaged over 2e6
 *                              calls (in this process: a system and a
 *                              cluster without transport; target <= 200)
 * The process figures are the median of PX_BENCH_CLUSTER_RUNS runs (default
 * 3; each run on stderr), each run in a cluster name of its own.
 *
 * Processes. Each node is px_bench_node (tests/transport/pxt_node.c, built
 * here again because the benchmark build has no tests) with --etcd: its own
 * px_system, px_transport on a free loopback tcp port and px_cluster. This
 * program drives the nodes over their stdin/stdout with the tests' helpers
 * (tests/transport/pxt_util.c) and polls their "members" / "member" answers
 * about every millisecond, so a figure includes up to a poll round of
 * delay. etcd is started from PATH on two free loopback ports with a
 * temporary data directory by the tests' harness (tests/cluster/pxt_etcd.c)
 * and stopped by PID at the end; without etcd on PATH the program says so
 * and exits 2. Every wait is bounded (bench_die); the children are killed
 * by PID and reaped on every exit path (pxt_util's registry), and the data
 * and log directories are removed. Node logs (level warn) go to the
 * temporary directory; PX_BENCH_CLUSTER_KEEP=1 keeps it.
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <plexus/cluster.h>
#include <plexus/plexus.h>

#include "bench_util.h"
#include "bench_etcd.h"
#include "pxt_etcd.h"
#include "pxt_util.h"

#ifndef PX_BENCH_NODE
#error "PX_BENCH_NODE (path of the node program) must be defined by the build"
#endif

#define MAXN 10
#define TTL_S 2
#define WAIT_MS 30000 /* bound of every wait for a node */

static bench_etcd *g_be; /* etcd, the directory and the secret */
static int g_run;

typedef struct bnode {
    pxt_proc p;
    char name[16];
    char addr[64];
    char id_path[128], log_path[128];
} bnode;

/* ---- node processes ---- */

static void node_init(bnode *n, const char *name)
{
    memset(n, 0, sizeof(*n));
    n->p.in_fd = n->p.out_fd = -1;
    snprintf(n->name, sizeof(n->name), "%s", name);
    int port = pxt_free_port();
    if (port < 0) {
        bench_die("no free port: %s", strerror(-port));
    }
    snprintf(n->addr, sizeof(n->addr), "tcp://127.0.0.1:%d", port);
    snprintf(n->id_path, sizeof(n->id_path), "%s/%s.key", g_be->dir, name);
    snprintf(n->log_path, sizeof(n->log_path), "%s/%s.log", g_be->dir, name);
}

/* Starts n in `cluster` without waiting for it. */
static void node_spawn(bnode *n, const char *cluster)
{
    char ttl[8];
    snprintf(ttl, sizeof(ttl), "%d", TTL_S);
    char *argv[] = {PX_BENCH_NODE, "--name",      n->name,  "--listen",    n->addr,
                    "--identity",  n->id_path,    "--secret", g_be->secret,    "--heartbeat",
                    "100",         "--unreachable", "3000", "--reconnect-max", "300",
                    "--log",       "warn",        "--etcd", g_be->etcd.url,    "--cluster",
                    (char *)cluster, "--ttl",     ttl,      NULL};
    int rv = pxt_proc_spawn(&n->p, argv, n->log_path);
    if (rv != 0) {
        bench_die("spawn %s: %s", n->name, strerror(-rv));
    }
}

static void node_expect(bnode *n, const char *prefix, char *line, size_t len)
{
    int rv = pxt_proc_expect(&n->p, prefix, WAIT_MS, line, len);
    if (rv != 0) {
        char tail[1024];
        pxt_file_tail(n->log_path, tail, sizeof(tail));
        bench_die("%s: no '%s' line (%s); its log ends:\n%s", n->name, prefix, strerror(-rv),
                  tail);
    }
}

static void node_cmd(bnode *n, const char *cmd, const char *prefix, char *line, size_t len)
{
    if (pxt_proc_send(&n->p, "%s", cmd) != 0) {
        bench_die("%s: cannot send '%s'", n->name, cmd);
    }
    node_expect(n, prefix, line, len);
}

/* Whether n's member list holds exactly k members, all up. */
static bool sees_all_up(bnode *n, int k)
{
    char line[4096];
    node_cmd(n, "members", "members ", line, sizeof(line));
    if (pxt_kv_num(line, "n", false, -1) != k) {
        return false;
    }
    int up = 0;
    for (const char *p = strstr(line, ":up:"); p != NULL; p = strstr(p + 1, ":up:")) {
        up++;
    }
    return up == k;
}

static bool sees_state(bnode *n, const char *who, const char *st)
{
    char cmd[64], prefix[64], line[256], got[32];
    snprintf(cmd, sizeof(cmd), "member %s", who);
    snprintf(prefix, sizeof(prefix), "member name=%s ", who);
    node_cmd(n, cmd, prefix, line, sizeof(line));
    return pxt_kv(line, "state", got, sizeof(got)) && strcmp(got, st) == 0;
}

/* Starts k nodes in a new cluster and returns the ms from the first start
 * until every node sees all k up. */
static uint64_t start_cluster(bnode *ns, int k, const char *tag)
{
    char cluster[32];
    snprintf(cluster, sizeof(cluster), "%s-%d", tag, ++g_run);
    for (int i = 0; i < k; i++) {
        char name[16];
        snprintf(name, sizeof(name), "n%d", i);
        node_init(&ns[i], name);
    }
    uint64_t t0 = bench_now_ns();
    for (int i = 0; i < k; i++) {
        node_spawn(&ns[i], cluster);
    }
    char line[1024];
    for (int i = 0; i < k; i++) {
        node_expect(&ns[i], "ready ", line, sizeof(line));
    }
    bool done[MAXN] = {false};
    int left = k;
    uint64_t dl = t0 + (uint64_t)WAIT_MS * 1000000u;
    while (left > 0) {
        for (int i = 0; i < k; i++) {
            if (!done[i] && sees_all_up(&ns[i], k)) {
                done[i] = true;
                left--;
            }
        }
        if (left > 0 && bench_now_ns() > dl) {
            bench_die("%s: the %d nodes did not all see each other up in %d ms", cluster, k,
                      WAIT_MS);
        }
        if (left > 0) {
            bench_nap_ms(1);
        }
    }
    return (bench_now_ns() - t0) / 1000000u;
}

static void stop_nodes(bnode *ns, int k)
{
    for (int i = 0; i < k; i++) {
        if (!ns[i].p.reaped && pxt_proc_stop(&ns[i].p, 10000) != 0) {
            fprintf(stderr, "bench_cluster: %s needed a signal to stop\n", ns[i].name);
        }
        pxt_proc_release(&ns[i].p);
    }
}

static uint64_t median(uint64_t *v, size_t n)
{
    bench_sort_u64(v, n);
    return v[n / 2];
}

static void bench_join(int k, int runs)
{
    bnode ns[MAXN];
    uint64_t ms[16];
    char tag[16];
    snprintf(tag, sizeof(tag), "join%d", k);
    for (int r = 0; r < runs; r++) {
        ms[r] = start_cluster(ns, k, tag);
        fprintf(stderr, "bench_cluster: join of %d processes: %llu ms\n", k,
                (unsigned long long)ms[r]);
        stop_nodes(ns, k);
    }
    char name[32];
    snprintf(name, sizeof(name), "cluster.join_ms_%d", k);
    bench_figure_u64(name, median(ms, (size_t)runs), "ms");
}

static void bench_down(int runs)
{
    bnode ns[3];
    uint64_t ms[16];
    for (int r = 0; r < runs; r++) {
        (void)start_cluster(ns, 3, "down");
        uint64_t t0 = bench_now_ns();
        pxt_proc_kill(&ns[2].p);
        bool seen[2] = {false, false};
        uint64_t dl = t0 + (uint64_t)(TTL_S * 1000 + 10000) * 1000000u;
        while (!seen[0] || !seen[1]) {
            for (int i = 0; i < 2; i++) {
                seen[i] = seen[i] || sees_state(&ns[i], ns[2].name, "down");
            }
            if (bench_now_ns() > dl) {
                bench_die("a killed node was not seen down within %d s", TTL_S + 10);
            }
            if (!seen[0] || !seen[1]) {
                bench_nap_ms(1);
            }
        }
        ms[r] = (bench_now_ns() - t0) / 1000000u;
        fprintf(stderr, "bench_cluster: SIGKILL seen down by both survivors after %llu ms\n",
                (unsigned long long)ms[r]);
        stop_nodes(ns, 3);
    }
    bench_figure_u64("cluster.down_detect_ms", median(ms, (size_t)runs), "ms");
}

/* ---- whereis, in process ---- */

static px_err idle_receive(px_ctx *ctx, px_msg *m)
{
    (void)ctx;
    (void)m;
    return PX_OK;
}
static const px_behavior idle_b = {.name = "bench.idle", .receive = idle_receive};

static void bench_whereis(uint64_t calls)
{
    px_system *sys = bench_system_named("whereis", 0, PX_LOG_WARN);
    px_cluster_cfg cc;
    px_cluster_cfg_init(&cc);
    cc.cluster = "whereis";
    cc.sys = sys;
    cc.ttl_s = TTL_S;
    cc.etcd.endpoints = g_be->etcd.url;
    cc.etcd.log_level = PX_LOG_WARN;
    char err[256] = "";
    px_cluster *c = NULL;
    px_err e = px_cluster_start(&cc, &c, err, sizeof(err));
    if (e != PX_OK) {
        bench_die("cluster start: %s (%s)", px_errname(e), err);
    }
    px_ref ref = PX_REF_NIL, got = PX_REF_NIL;
    bench_check(px_system_spawn(sys, &idle_b, NULL, NULL, &ref), "spawn");
    bench_check(px_register_global(c, "bench.svc", ref, NULL), "register");
    for (int i = 0; i < 1000; i++) { /* warm up */
        bench_check(px_whereis_global(c, "bench.svc", &got), "whereis");
    }
    uint64_t misses = 0;
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < calls; i++) {
        misses += px_whereis_global(c, "bench.svc", &got) != PX_OK || got.id != ref.id;
    }
    uint64_t ns = bench_now_ns() - t0;
    if (misses != 0 || !px_ref_eq(got, ref)) {
        bench_die("whereis missed %llu times", (unsigned long long)misses);
    }
    bench_figure_f("cluster.whereis_global_ns", (double)ns / (double)calls, 1, "ns");
    px_cluster_stop(c, true);
    bench_system_free(sys);
}

int main(int argc, char **argv)
{
    if (!bench_etcd_found("cluster")) {
        return 2;
    }
    uint64_t calls = bench_arg_u64(argc, argv, 1, 2000000);
    const char *r = getenv("PX_BENCH_CLUSTER_RUNS");
    int runs = r != NULL ? atoi(r) : 3;
    runs = runs < 1 ? 1 : runs > 16 ? 16 : runs;

    g_be = bench_etcd_start("cluster");

    bench_join(3, runs);
    bench_join(10, runs);
    bench_down(runs);
    bench_whereis(calls);
    return 0;
}
