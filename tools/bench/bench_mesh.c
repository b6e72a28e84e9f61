/*
 * bench_mesh.c — the mesh across node processes: a real etcd, nodes that
 * are OS processes on loopback tcp with encrypted links (px_bench_node, the
 * tests' pxt_node: a system, a transport, a cluster and the mesh each;
 * lease TTL 2 s), everything through the full stack.
 *
 *   mesh.remote_spawn_us        px_mesh_spawn of t.work on another node
 *                               (placement by name), the median of 200 in a
 *                               row, timed inside the spawning process
 *   mesh.remote_ask_p50_us      an actor asks a t.work on another node,
 *   mesh.remote_ask_p99_us      5000 asks in a row (after 500 to warm up),
 *                               each timed from px_ask to the reply in the
 *                               asking actor (targets <= 100 and <= 250)
 *   mesh.failover_ms            a supervisor on n0, its child placed by role
 *                               on a worker node; SIGKILL of that node until
 *                               the restarted child (on the other worker)
 *                               has answered an ask sent to the supervisor's
 *                               proxy (asks of 50 ms each in a loop on n0);
 *                               the median of PX_BENCH_MESH_RUNS (default 3)
 *                               failovers, a fresh standby node joining
 *                               between two (target <= 2500)
 *   mesh.watch_fanout_ms        10,000 watches, from one actor on n0, of
 *                               10,000 actors on a node that gets SIGKILL:
 *                               from the kill until the 10,000th Terminated
 *                               (node down) was handled
 *   mesh.watch_fanout_after_down_ms  the part of it after n0's membership
 *                               saw the node down (its lease expired)
 * Times across processes are CLOCK_MONOTONIC (one clock for the machine):
 * the nodes print when an answer came or a Terminated was handled, this
 * program when it sent the signal. The whole run takes about 15-20 s.
 *
 * Processes as in bench_cluster.c: driven over stdin/stdout with the tests'
 * helpers (tests/transport/pxt_util.c); etcd started from PATH on free
 * loopback ports with a temporary data directory (tests/cluster/
 * pxt_etcd.c) and stopped by PID at the end; without etcd on PATH the
 * program says so and exits 2. Every wait is bounded (bench_die); the
 * children are killed by PID and reaped on every exit path (pxt_util's
 * registry); the data and log directories are removed
 * (PX_BENCH_MESH_KEEP=1 keeps them). stdout carries only the figure lines.
 * The nodes inherit the environment: PXT_POLL_RX=1 runs them in latency
 * mode (px_transport_cfg.poll_rx, tests/transport/pxt_node.c), PXT_SPIN_US
 * and PXT_SPIN_MAX_US set their workers' spin (run.sh's latency-mode run
 * uses PXT_POLL_RX=1 PXT_SPIN_MAX_US=1000, as plexusd's latency_mode does,
 * with PX_BENCH_MESH_ONLY=ask: the ask round trips only). stderr shows the
 * ask run's p90 and each side's frames in and reads polled.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <plexus/plexus.h>

#include "bench_util.h"
#include "bench_etcd.h"
#include "pxt_etcd.h"
#include "pxt_util.h"

#ifndef PX_BENCH_NODE
#error "PX_BENCH_NODE (path of the node program) must be defined by the build"
#endif

#define MAXN 8
#define TTL_S 2
#define WAIT_MS 30000 /* bound of every wait for a node */
#define SPAWNS 200
#define ASKS 5000
#define WATCHES 10000

static bench_etcd *g_be; /* etcd, the directory and the secret */
static char g_cluster[32];

typedef struct bnode {
    pxt_proc p;
    char name[16];
    char addr[64];
    char roles[32];
    char id_path[128], log_path[128];
    bool up;
} bnode;

static bnode g_nodes[MAXN];
static int g_nn;

static uint64_t now_us(void) { return bench_now_ns() / 1000u; }

/* ---- node processes ---- */

static void node_fail(bnode *n, const char *fmt, const char *what)
{
    char tail[1024];
    pxt_file_tail(n->log_path, tail, sizeof(tail));
    bench_die("%s: %s %s; its log ends:\n%s", n->name, fmt, what, tail);
}

static void node_expect(bnode *n, const char *prefix, int ms, char *line, size_t len)
{
    int rv = pxt_proc_expect(&n->p, prefix, ms, line, len);
    if (rv != 0) {
        node_fail(n, "no answer", prefix);
    }
}

static void node_cmd(bnode *n, const char *prefix, char *line, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void node_cmd(bnode *n, const char *prefix, char *line, size_t len, const char *fmt, ...)
{
    char cmd[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    if (pxt_proc_send(&n->p, "%s", cmd) != 0) {
        node_fail(n, "cannot send", cmd);
    }
    node_expect(n, prefix, WAIT_MS, line, len);
}

/* A new node process (not waited for: node_ready). */
static bnode *node_spawn(const char *name, const char *roles)
{
    if (g_nn == MAXN) {
        bench_die("too many nodes");
    }
    bnode *n = &g_nodes[g_nn++];
    memset(n, 0, sizeof(*n));
    n->p.in_fd = n->p.out_fd = -1;
    snprintf(n->name, sizeof(n->name), "%s", name);
    snprintf(n->roles, sizeof(n->roles), "%s", roles != NULL ? roles : "");
    int port = pxt_free_port();
    if (port < 0) {
        bench_die("no free port: %s", strerror(-port));
    }
    snprintf(n->addr, sizeof(n->addr), "tcp://127.0.0.1:%d", port);
    snprintf(n->id_path, sizeof(n->id_path), "%s/%s.key", g_be->dir, name);
    snprintf(n->log_path, sizeof(n->log_path), "%s/%s.log", g_be->dir, name);
    char ttl[8];
    snprintf(ttl, sizeof(ttl), "%d", TTL_S);
    char *argv[32] = {PX_BENCH_NODE, "--name",        n->name,  "--listen",    n->addr,
                      "--identity",  n->id_path,      "--secret", g_be->secret,    "--heartbeat",
                      "100",         "--unreachable", "3000",   "--reconnect-max", "300",
                      "--log",       "warn",          "--etcd", g_be->etcd.url,    "--cluster",
                      g_cluster,     "--ttl",         ttl,      NULL};
    int k = 23;
    if (n->roles[0] != '\0') {
        argv[k++] = "--roles";
        argv[k++] = n->roles;
    }
    argv[k] = NULL;
    int rv = pxt_proc_spawn(&n->p, argv, n->log_path);
    if (rv != 0) {
        bench_die("spawn %s: %s", n->name, strerror(-rv));
    }
    return n;
}

static void node_ready(bnode *n)
{
    char line[1024];
    node_expect(n, "ready ", WAIT_MS, line, sizeof(line));
    n->up = true;
}

/* Whether n sees every live node of ours up. */
static bool sees_all_up(bnode *n)
{
    static char line[8192];
    node_cmd(n, "members ", line, sizeof(line), "members");
    for (int i = 0; i < g_nn; i++) {
        char want[64];
        snprintf(want, sizeof(want), "%s:up:", g_nodes[i].name);
        if (g_nodes[i].up && strstr(line, want) == NULL) {
            return false;
        }
    }
    return true;
}

static void await_all_up(void)
{
    uint64_t dl = now_us() + (uint64_t)WAIT_MS * 1000u;
    for (int i = 0; i < g_nn; i++) {
        while (g_nodes[i].up && !sees_all_up(&g_nodes[i])) {
            if (now_us() > dl) {
                bench_die("the nodes did not all see each other up in %d ms", WAIT_MS);
            }
            bench_nap_ms(5);
        }
    }
}

static void node_kill(bnode *n)
{
    pxt_proc_kill(&n->p);
    n->up = false;
}

static void stop_nodes(void)
{
    for (int i = 0; i < g_nn; i++) {
        if (!g_nodes[i].p.reaped && pxt_proc_stop(&g_nodes[i].p, 10000) != 0) {
            fprintf(stderr, "bench_mesh: %s needed a signal to stop\n", g_nodes[i].name);
        }
        pxt_proc_release(&g_nodes[i].p);
    }
}

static void need_ok(bnode *n, const char *line)
{
    if (strstr(line, "rc=PX_OK") == NULL) {
        node_fail(n, "failed:", line);
    }
}

static void kv(bnode *n, const char *line, const char *key, char *out, size_t len)
{
    if (!pxt_kv(line, key, out, len)) {
        node_fail(n, "no key in", line);
    }
}

static uint64_t median(uint64_t *v, size_t n)
{
    bench_sort_u64(v, n);
    return v[n / 2];
}

/* ---- the figures ---- */

static void bench_spawn(bnode *from, bnode *to)
{
    char line[512];
    node_cmd(from, "spawnbench ", line, sizeof(line), "spawnbench %s t.work 20", to->name);
    node_cmd(from, "spawnbench ", line, sizeof(line), "spawnbench %s t.work %d", to->name,
             SPAWNS);
    if (pxt_kv_num(line, "ok", false, -1) != SPAWNS) {
        node_fail(from, "spawns failed:", line);
    }
    fprintf(stderr, "bench_mesh: %s\n", line);
    bench_figure_u64("mesh.remote_spawn_us", (uint64_t)pxt_kv_num(line, "p50_us", false, 0),
                     "us");
}

static void bench_ask(bnode *from, bnode *to)
{
    char line[512], ref[64];
    node_cmd(from, "mspawn ", line, sizeof(line), "mspawn node:%s t.work", to->name);
    need_ok(from, line);
    kv(from, line, "ref", ref, sizeof(ref));
    node_cmd(from, "askbench ", line, sizeof(line), "askbench %s 500", ref);
    node_cmd(from, "askbench ", line, sizeof(line), "askbench %s %d", ref, ASKS);
    if (pxt_kv_num(line, "ok", false, -1) != ASKS) {
        node_fail(from, "asks failed:", line);
    }
    fprintf(stderr, "bench_mesh: %s\n", line);
    for (bnode *n = from; n != NULL; n = n == from ? to : NULL) {
        char st[512];
        node_cmd(n, "stats ", st, sizeof(st), "stats");
        fprintf(stderr, "bench_mesh: %s: frames_in=%lld reads_polled=%lld\n", n->name,
                pxt_kv_num(st, "frames_in", false, -1), pxt_kv_num(st, "reads_polled", false, -1));
    }
    bench_figure_u64("mesh.remote_ask_p50_us", (uint64_t)pxt_kv_num(line, "p50_us", false, 0),
                     "us");
    bench_figure_u64("mesh.remote_ask_p99_us", (uint64_t)pxt_kv_num(line, "p99_us", false, 0),
                     "us");
}

static bnode *by_name(const char *name)
{
    for (int i = 0; i < g_nn; i++) {
        if (strcmp(g_nodes[i].name, name) == 0) {
            return &g_nodes[i];
        }
    }
    return NULL;
}

/* The node svc runs on now, once it runs (from n0's listing). */
static bnode *svc_node(bnode *n0, const char *sup)
{
    char line[2048];
    uint64_t dl = now_us() + (uint64_t)WAIT_MS * 1000u;
    for (;;) {
        node_cmd(n0, "children ", line, sizeof(line), "children %s", sup);
        char node[32];
        const char *p = strstr(line, "svc:");
        if (p != NULL && sscanf(p, "svc:%31[^:]:", node) == 1 && strstr(p, ":running") != NULL &&
            by_name(node) != NULL) {
            return by_name(node);
        }
        if (now_us() > dl) {
            node_fail(n0, "the child does not run:", line);
        }
        bench_nap_ms(2);
    }
}

static void bench_failover(bnode *n0, int runs)
{
    char line[512], sup[64], px[64];
    node_cmd(n0, "supspawn ", line, sizeof(line), "supspawn one");
    need_ok(n0, line);
    kv(n0, line, "ref", sup, sizeof(sup));
    node_cmd(n0, "child ", line, sizeof(line), "child %s svc t.work role:fo", sup);
    need_ok(n0, line);
    kv(n0, line, "ref", px, sizeof(px));
    uint64_t ms[16];
    for (int r = 0; r < runs; r++) {
        bnode *victim = svc_node(n0, sup);
        node_cmd(n0, "askuntil ", line, sizeof(line), "askuntil %s 10000 200", px);
        need_ok(n0, line);
        uint64_t t0 = now_us();
        node_kill(victim);
        node_cmd(n0, "askuntil ", line, sizeof(line), "askuntil %s %d 50", px,
                 (TTL_S + 10) * 1000);
        need_ok(n0, line);
        long long t = pxt_kv_num(line, "t_us", false, 0);
        ms[r] = t > (long long)t0 ? ((uint64_t)t - t0) / 1000u : 0;
        bnode *now = svc_node(n0, sup);
        fprintf(stderr, "bench_mesh: failover %s -> %s: %llu ms (%s)\n", victim->name, now->name,
                (unsigned long long)ms[r], line);
        if (r + 1 < runs) { /* a new standby for the next run */
            char name[16];
            snprintf(name, sizeof(name), "fo%d", r + 1);
            node_ready(node_spawn(name, "worker,fo"));
            await_all_up();
        }
    }
    bench_figure_u64("mesh.failover_ms", median(ms, (size_t)runs), "ms");
}

static void bench_fanout(bnode *n0)
{
    char line[512], lister[64];
    bnode *f = node_spawn("fan", NULL);
    node_ready(f);
    await_all_up();
    node_cmd(f, "spawnn ", line, sizeof(line), "spawnn %d", WATCHES);
    need_ok(f, line);
    kv(f, line, "lister", lister, sizeof(lister));
    node_cmd(n0, "watchall ", line, sizeof(line), "watchall %s", lister);
    if (pxt_kv_num(line, "ok", false, -1) != WATCHES) {
        node_fail(n0, "watches failed:", line);
    }
    node_cmd(n0, "fanstat ", line, sizeof(line), "fanstat");
    if (pxt_kv_num(line, "n", false, -1) != 0) {
        node_fail(n0, "Terminated before the kill:", line);
    }
    uint64_t t0 = now_us();
    node_kill(f);
    uint64_t dl = t0 + (uint64_t)(TTL_S + 15) * 1000000u;
    for (;;) {
        node_cmd(n0, "fanstat ", line, sizeof(line), "fanstat");
        if (pxt_kv_num(line, "n", false, -1) == WATCHES) {
            break;
        }
        if (now_us() > dl) {
            node_fail(n0, "not every watch ended:", line);
        }
        bench_nap_ms(5);
    }
    long long first = pxt_kv_num(line, "first_us", false, 0);
    long long last = pxt_kv_num(line, "last_us", false, 0);
    long long down = pxt_kv_num(line, "down_us", false, 0);
    fprintf(stderr,
            "bench_mesh: %d watches: down seen %lld ms after the kill, first Terminated "
            "%lld ms, last %lld ms\n",
            WATCHES, (down - (long long)t0) / 1000, (first - (long long)t0) / 1000,
            (last - (long long)t0) / 1000);
    bench_figure_u64("mesh.watch_fanout_ms", (uint64_t)(last - (long long)t0) / 1000u, "ms");
    bench_figure_f("mesh.watch_fanout_after_down_ms",
                   last > down && down > (long long)t0 ? (double)(last - down) / 1000.0 : 0.0, 1,
                   "ms");
}

int main(void)
{
    if (!bench_etcd_found("mesh")) {
        return 2;
    }
    const char *r = getenv("PX_BENCH_MESH_RUNS");
    int runs = r != NULL ? atoi(r) : 3;
    runs = runs < 1 ? 1 : runs > 5 ? 5 : runs;

    g_be = bench_etcd_start("mesh");
    snprintf(g_cluster, sizeof(g_cluster), "mesh-%d", (int)getpid());

    uint64_t t0 = now_us();
    bnode *n0 = node_spawn("n0", NULL);
    bnode *n1 = node_spawn("n1", "worker,fo");
    node_spawn("n2", "worker,fo");
    for (int i = 0; i < g_nn; i++) {
        node_ready(&g_nodes[i]);
    }
    await_all_up();

    /* PX_BENCH_MESH_ONLY=ask: only the ask round trips (run.sh's
     * latency-mode run). */
    const char *only = getenv("PX_BENCH_MESH_ONLY");
    bool all = only == NULL || strcmp(only, "ask") != 0;
    if (all) {
        bench_spawn(n0, n1);
    }
    bench_ask(n0, n1);
    if (all) {
        bench_failover(n0, runs);
        bench_fanout(n0);
    }
    stop_nodes();
    fprintf(stderr, "bench_mesh: done in %.1f s\n", (double)(now_us() - t0) / 1e6);
    return 0;
}
