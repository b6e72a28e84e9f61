/*
 * mesh_demo.c — plexus-mesh-demo: one node of the quickstart's cluster.
 *
 *   plexus-mesh-demo --name N --etcd URL --dir D [--roles worker]
 *                    [--lead --workers 4 --seconds 12]
 *
 * Every node runs a system, a transport (tcp on loopback, encrypted with
 * the demo's cluster secret, identity key in D), membership through etcd
 * and the mesh, and registers the behavior "demo.work" (answers a request
 * n with n*n and the name of its node). The lead node (--lead) also runs:
 *  - a supervisor ("demo.sup", OneForOne) with --workers children placed by
 *    role "worker" (round-robin over the nodes that have it), each a
 *    location-transparent proxy ref on this node;
 *  - a client actor that asks every worker in turn every 2 ms (timeout 3 s)
 *    and counts answers and failures per worker;
 *  - every second a plexctl-style table of the members and of the
 *    supervisor's children (node, instance, restarts, answers), and a line
 *    for each failure the supervisor's decider saw (child, node, code,
 *    reason) as it happens.
 * The lead exits after --seconds: status 0 only if at least one child was
 * failed over (its node was lost) and every child answered requests after
 * the last failover from a node that is up; 1 otherwise. Other nodes run
 * until SIGTERM/SIGINT (deploy/quickstart.sh orchestrates them).
 */
#include <getopt.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/supplemental/util/platform.h>

#include <plexus/cluster.h>
#include <plexus/mesh.h>
#include <plexus/plexus.h>
#include <plexus/transport.h>

#define SECRET "plexus quickstart demo secret (not for production)"
#define MAX_WORKERS 16
#define TAG_REQ 1
#define TAG_LIST 2

static struct {
    const char *name, *etcd, *dir, *roles;
    bool lead;
    int workers, seconds;
} opt = {.workers = 4, .seconds = 12};

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the worker: n -> n*n, tagged with its node ---- */

static px_err work_receive(px_ctx *ctx, px_msg *m) {
    if (px_msg_kind_of(m) != PX_MSG_BYTES || px_msg_tag(m) != TAG_REQ) {
        return PX_OK;
    }
    uint64_t n = px_msg_get_u64(m);
    px_msg *r = NULL;
    if (px_msg_u64(&r, px_self(ctx).node, n * n) == PX_OK && px_reply(ctx, m, &r) != PX_OK) {
        px_msg_free(r);
    }
    return PX_OK;
}

static const px_behavior work_beh = {.name = "demo.work", .receive = work_receive};

/* ---- the lead: supervisor, client, report ---- */

typedef struct wstat {
    px_ref ref;
    _Atomic uint64_t ok, failed;
    _Atomic int64_t last_ok_ms;
    _Atomic uint32_t last_node;
} wstat;

static wstat g_w[MAX_WORKERS];
static atomic_int g_nw;
static atomic_int g_failovers;
static _Atomic int64_t g_last_failover_ms;
static nng_mtx *g_print_mtx;

static const char *node_of_id(px_cluster *c, uint32_t id, char *buf, size_t len) {
    px_member mem[16];
    size_t n = 0;
    px_cluster_members(c, mem, 16, &n);
    for (size_t i = 0; i < n && i < 16; i++) {
        if (mem[i].node_id == id) {
            snprintf(buf, len, "%s", mem[i].name);
            return buf;
        }
    }
    snprintf(buf, len, "%08x", id);
    return buf;
}

static px_directive sup_decide(px_ctx *ctx, const px_failure *f) {
    (void)ctx;
    if (f->code == PX_ENODEDOWN || f->code == PX_EUNREACHABLE) {
        atomic_fetch_add(&g_failovers, 1);
        atomic_store(&g_last_failover_ms, now_ms());
    }
    nng_mtx_lock(g_print_mtx);
    printf("FAILURE  child %-4s on %-6s %s: %s -> restart (placement: role worker)\n",
           f->child_id, f->origin_node[0] ? f->origin_node : "?", px_errname(f->code),
           f->reason);
    fflush(stdout);
    nng_mtx_unlock(g_print_mtx);
    return PX_DIRECTIVE_RESTART;
}

static px_err sup_init(px_ctx *ctx, const px_msg *arg) {
    (void)arg;
    px_placement pl = {.policy = PX_PLACE_ROLE, .role = "worker"};
    px_restart_policy pol;
    px_restart_policy_init(&pol);
    pol.max_restarts = 20;
    pol.window_ms = 60000;
    for (int i = 0; i < opt.workers; i++) {
        char id[16];
        snprintf(id, sizeof id, "w%d", i);
        px_child_spec spec = {.id = id, .behavior = "demo.work", .policy = &pol,
                              .placement = &pl};
        px_err e = px_spawn_child(ctx, &spec, NULL, &g_w[i].ref);
        if (e != PX_OK) {
            fprintf(stderr, "cannot place worker %s: %s\n", id, px_strerror(e));
            return e;
        }
    }
    atomic_store(&g_nw, opt.workers);
    return PX_OK;
}

/* Answers TAG_LIST asks with its children's info. */
static px_err sup_receive(px_ctx *ctx, px_msg *m) {
    if (px_msg_kind_of(m) == PX_MSG_BYTES && px_msg_tag(m) == TAG_LIST) {
        px_child_info ci[MAX_WORKERS];
        size_t n = 0;
        (void)px_children(ctx, ci, MAX_WORKERS, &n);
        px_msg *r = NULL;
        if (px_msg_bytes(&r, (uint32_t)n, ci, (n < MAX_WORKERS ? n : MAX_WORKERS) * sizeof(*ci)) ==
                PX_OK &&
            px_reply(ctx, m, &r) != PX_OK) {
            px_msg_free(r);
        }
    }
    return PX_OK;
}

static const px_behavior sup_beh = {.name = "demo.sup", .init = sup_init,
                                    .receive = sup_receive, .on_child_failure = sup_decide};

/* The client: an ask to each worker in turn every 2 ms. The ask's corr
 * says which worker it went to (corr -> index kept in a small ring). */
typedef struct client {
    uint64_t seq;
    int next;
    uint64_t corr_of[MAX_WORKERS * 2048];
} client;

static px_err client_init(px_ctx *ctx, const px_msg *arg) {
    (void)arg;
    client *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return PX_ENOMEM;
    }
    px_set_state(ctx, c);
    return px_timer_every(ctx, 2, 0, NULL);
}

static int worker_of(client *c, uint64_t corr) {
    uint64_t v = c->corr_of[corr % (MAX_WORKERS * 2048)];
    return (v >> 32) == (corr & 0xffffffffu) ? (int)(v & 0xff) : -1;
}

static px_err client_receive(px_ctx *ctx, px_msg *m) {
    client *c = px_state(ctx);
    int nw = atomic_load(&g_nw);
    if (px_msg_kind_of(m) == PX_MSG_TIMER && nw > 0) {
        int i = c->next++ % nw;
        px_msg *q = NULL;
        uint64_t corr = 0;
        if (px_msg_u64(&q, TAG_REQ, ++c->seq) == PX_OK &&
            px_ask(ctx, g_w[i].ref, &q, 3000, &corr) == PX_OK) {
            c->corr_of[corr % (MAX_WORKERS * 2048)] = ((corr & 0xffffffffu) << 32) | (uint64_t)i;
        } else {
            px_msg_free(q);
            atomic_fetch_add(&g_w[i].failed, 1);
        }
        return PX_OK;
    }
    int i = worker_of(c, px_msg_corr(m));
    if (i < 0) {
        return PX_OK;
    }
    if (px_msg_is_reply(m)) {
        atomic_fetch_add(&g_w[i].ok, 1);
        atomic_store(&g_w[i].last_ok_ms, now_ms());
        atomic_store(&g_w[i].last_node, px_msg_tag(m));
    } else if (px_msg_kind_of(m) == PX_MSG_ASK_TIMEOUT || px_msg_kind_of(m) == PX_MSG_UNDELIVERED) {
        atomic_fetch_add(&g_w[i].failed, 1);
    }
    return PX_OK;
}

static void client_stop(px_ctx *ctx) { free(px_state(ctx)); }

static const px_behavior client_beh = {.name = "demo.client", .init = client_init,
                                       .receive = client_receive, .stop = client_stop};

static void report(px_system *sys, px_cluster *cl, px_ref sup, int64_t t0) {
    px_member mem[16];
    size_t n = 0;
    px_cluster_members(cl, mem, 16, &n);
    nng_mtx_lock(g_print_mtx);
    printf("\n--- t=%.1fs ---------------------------------------------------\n",
           (double)(now_ms() - t0) / 1000.0);
    printf("NODE     STATE         INCARNATION\n");
    for (size_t i = 0; i < n && i < 16; i++) {
        printf("%-8s %-13s %08x\n", mem[i].name, px_member_state_name(mem[i].state),
               mem[i].node_inc);
    }
    px_msg *q = NULL, *r = NULL;
    if (px_msg_u64(&q, TAG_LIST, 0) == PX_OK && px_system_ask(sys, sup, &q, 1000, &r) == PX_OK) {
        size_t len = 0;
        const px_child_info *ci = px_msg_data(r, &len);
        size_t k = len / sizeof(*ci);
        printf("CHILD  NODE     STATE      INSTANCE  RESTARTS  ANSWERED  FAILED  LAST ANSWER FROM\n");
        for (size_t i = 0; i < k; i++) {
            int w = atoi(ci[i].id + 1);
            char nb[64] = "-";
            uint32_t ln = w >= 0 && w < MAX_WORKERS ? atomic_load(&g_w[w].last_node) : 0;
            if (ln != 0) {
                node_of_id(cl, ln, nb, sizeof nb);
            }
            const char *st = ci[i].state == PX_CHILD_RUNNING      ? "running"
                             : ci[i].state == PX_CHILD_RESTARTING ? "restarting"
                             : ci[i].state == PX_CHILD_SUSPENDED  ? "suspended"
                                                                  : "other";
            printf("%-6s %-8s %-10s %-9u %-9u %-9llu %-7llu %s\n", ci[i].id,
                   ci[i].node[0] ? ci[i].node : "-", st, ci[i].instance, ci[i].restarts,
                   (unsigned long long)(w >= 0 && w < MAX_WORKERS ? atomic_load(&g_w[w].ok) : 0),
                   (unsigned long long)(w >= 0 && w < MAX_WORKERS ? atomic_load(&g_w[w].failed)
                                                                  : 0),
                   nb);
        }
    }
    px_msg_free(q);
    px_msg_free(r);
    fflush(stdout);
    nng_mtx_unlock(g_print_mtx);
}

/* ---- a node ---- */

static int usage(void) {
    fprintf(stderr, "usage: plexus-mesh-demo --name N --etcd URL --dir D [--roles R] "
                    "[--lead [--workers K] [--seconds S]]\n");
    return 2;
}

int main(int argc, char **argv) {
    static const struct option lo[] = {
        {"name", 1, 0, 'n'},    {"etcd", 1, 0, 'e'},    {"dir", 1, 0, 'd'},
        {"roles", 1, 0, 'r'},   {"lead", 0, 0, 'l'},    {"workers", 1, 0, 'w'},
        {"seconds", 1, 0, 's'}, {0, 0, 0, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'n': opt.name = optarg; break;
        case 'e': opt.etcd = optarg; break;
        case 'd': opt.dir = optarg; break;
        case 'r': opt.roles = optarg; break;
        case 'l': opt.lead = true; break;
        case 'w': opt.workers = atoi(optarg); break;
        case 's': opt.seconds = atoi(optarg); break;
        default: return usage();
        }
    }
    if (opt.name == NULL || opt.etcd == NULL || opt.dir == NULL || opt.workers < 1 ||
        opt.workers > MAX_WORKERS || opt.seconds < 1) {
        return usage();
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    if (nng_mtx_alloc(&g_print_mtx) != 0) {
        return 1;
    }
    px_config cfg;
    px_config_init(&cfg);
    cfg.node_name = opt.name;
    cfg.workers = 2;
    cfg.log_level = PX_LOG_ERROR;
    px_system *sys = NULL;
    if (px_system_alloc(&sys, &cfg) != PX_OK || px_behavior_register(sys, &work_beh) != PX_OK) {
        fprintf(stderr, "%s: cannot start the system\n", opt.name);
        return 1;
    }
    char kp[512], err[256];
    snprintf(kp, sizeof kp, "%s/%s.key", opt.dir, opt.name);
    px_identity id;
    if (px_identity_load(kp, true, &id, err, sizeof err) != PX_OK) {
        fprintf(stderr, "%s: %s\n", opt.name, err);
        return 1;
    }
    px_transport_cfg tc;
    px_transport_cfg_init(&tc);
    tc.listen = "tcp://127.0.0.1:0";
    tc.identity = &id;
    tc.heartbeat_ms = 100;
    tc.unreachable_ms = 1000;
    (void)px_secret_from_bytes(SECRET, strlen(SECRET), tc.cluster_key);
    px_transport *t = NULL;
    if (px_transport_start(sys, &tc, &t) != PX_OK) {
        fprintf(stderr, "%s: cannot start the transport\n", opt.name);
        return 1;
    }
    const char *roles[2] = {opt.roles, NULL};
    px_cluster_cfg cc;
    px_cluster_cfg_init(&cc);
    cc.cluster = "quickstart";
    cc.sys = sys;
    cc.transport = t;
    cc.roles = opt.roles ? roles : NULL;
    cc.ttl_s = 2;
    cc.etcd.endpoints = opt.etcd;
    px_cluster *cl = NULL;
    if (px_cluster_start(&cc, &cl, err, sizeof err) != PX_OK) {
        fprintf(stderr, "%s: cannot join: %s\n", opt.name, err);
        return 1;
    }
    px_mesh *mesh = NULL;
    px_mesh_cfg mc = {.sys = sys, .transport = t, .cluster = cl};
    if (px_mesh_start(&mc, &mesh) != PX_OK) {
        fprintf(stderr, "%s: cannot start the mesh\n", opt.name);
        return 1;
    }
    fprintf(stderr, "%s: up (%s%s)\n", opt.name, px_transport_address(t),
            opt.roles ? ", role worker" : "");
    int status = 0;
    if (!opt.lead) {
        while (!g_stop) {
            nng_msleep(50);
        }
    } else {
        /* Wait (bounded) until two worker nodes are up, then start. */
        int64_t t0 = now_ms();
        char node[64];
        px_placement pl = {.policy = PX_PLACE_ROLE, .role = "worker"};
        int ready = 0;
        while (!g_stop && now_ms() - t0 < 15000 && ready < 2) {
            px_member mem[16];
            size_t n = 0;
            px_cluster_members(cl, mem, 16, &n);
            ready = 0;
            for (size_t i = 0; i < n && i < 16; i++) {
                ready += mem[i].state == PX_MEMBER_UP && strcmp(mem[i].name, opt.name) != 0;
            }
            nng_msleep(50);
        }
        if (ready < 2 || px_mesh_place(mesh, &pl, "demo.work", node, sizeof node) != PX_OK) {
            fprintf(stderr, "lead: the worker nodes did not come up\n");
            status = 1;
        }
        px_ref sup = PX_REF_NIL, cli = PX_REF_NIL;
        if (status == 0 && (px_system_spawn(sys, &sup_beh, NULL, NULL, &sup) != PX_OK ||
                            px_system_spawn(sys, &client_beh, NULL, NULL, &cli) != PX_OK)) {
            fprintf(stderr, "lead: cannot start the supervisor and the client\n");
            status = 1;
        }
        t0 = now_ms();
        while (status == 0 && !g_stop && now_ms() - t0 < (int64_t)opt.seconds * 1000) {
            nng_msleep(1000);
            report(sys, cl, sup, t0);
        }
        if (status == 0) {
            (void)px_stop(sys, cli);
            int64_t last = atomic_load(&g_last_failover_ms);
            int nw = atomic_load(&g_nw);
            uint64_t ok = 0, failed = 0;
            bool all_after = last != 0;
            for (int i = 0; i < nw; i++) {
                ok += atomic_load(&g_w[i].ok);
                failed += atomic_load(&g_w[i].failed);
                all_after &= atomic_load(&g_w[i].last_ok_ms) > last;
            }
            printf("\nSUMMARY  requests answered %llu, failed %llu; children failed over %d; "
                   "every child answered after the last failover: %s\n",
                   (unsigned long long)ok, (unsigned long long)failed,
                   atomic_load(&g_failovers), all_after ? "yes" : "no");
            status = atomic_load(&g_failovers) > 0 && all_after ? 0 : 1;
        }
    }
    px_mesh_stop(mesh);
    px_cluster_stop(cl, true);
    px_transport_stop(t);
    px_system_shutdown(sys);
    px_system_free(sys);
    nng_mtx_free(g_print_mtx);
    return status;
}
