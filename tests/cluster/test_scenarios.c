/*
 * Cluster scenarios with every node its own OS process (pxt_node --etcd,
 * tests/transport/pxt_node.c: system, transport on loopback tcp and
 * cluster membership, driven over stdin/stdout) against a real etcd
 * (pxt_etcd), lease TTL 2 s: a join, a graceful leave, a SIGKILL, an etcd
 * restart under asks, etcd stopped past the TTL, a node stopped past its
 * TTL, a watch cut across a compaction, ten processes racing for one global
 * name, and a node whose key is deleted by hand.
 *
 * The nodes find each other only through etcd (no static peers). etcd runs
 * with a short election timeout so that a restart on the same data takes
 * well under a TTL (a stock single-node etcd needs 1-2 s to elect itself
 * again, which a 2 s lease cannot ride out).
 *
 * Every process is stopped by pid and reaped in every path (the fini kills
 * what is left; children die with the test, PR_SET_PDEATHSIG). All waits
 * poll a condition up to a deadline. A failed test keeps its temp dir (the
 * node logs) and says where; PXT_KEEP=1 keeps it always. Measured times go
 * to stderr.
 */
#define _GNU_SOURCE /* accept4 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <sodium.h>

#include <plexus/plexus.h>

#include "pxt_pnode.h"

#define TTL_S 2
#define TTL_MS (TTL_S * 1000)
#define CMD_MS PXT_PNODE_CMD_MS

typedef pxt_pnode node;

static pxt_pworld g_w; /* the directory, the secret, etcd, the nodes */
static unsigned g_ask_id;

typedef struct cutter cutter;
static cutter *g_cut;
static void cutter_free(cutter *c);

/* ---- set-up and tear-down ---- */

static void setup(void) { pxt_pworld_setup(&g_w, "scenarios", "sc", "t", TTL_S); }

static void teardown(void) {
    pxt_pworld_teardown(&g_w);
    cutter_free(g_cut);
    g_cut = NULL;
}

#define SC_TEST(name, secs)                                                                   \
    Test(cluster_scenarios, name, .init = setup, .fini = teardown, .timeout = (secs))

static int64_t now_ms(void) { return pxt_mono_ms(); }

#define NODE_FAIL(n, ...) PXT_FAIL_LOG((n)->name, (n)->log_path, __VA_ARGS__)
#define AWAIT PXT_AWAIT
#define node_cmd PXT_PNODE_CMD

/* ---- node processes ---- */

static node *node_new(const char *name) { return pxt_pnode_new(&g_w, name, NULL); }
static void node_start(node *n) { pxt_pnode_start(&g_w, n); }
static void finish(node **n, int k) { pxt_pworld_finish(&g_w, n, k); }

static node *node_up(const char *name) {
    node *n = node_new(name);
    node_start(n);
    return n;
}

/* n's whole view ("members"): how many members, and whether each of who[]
 * is among them up with its current incarnation and nothing else is up. */
static bool view_is_exactly(node *n, node **who, int nwho, int *total) {
    char line[4096];
    node_cmd(n, "members ", line, sizeof line, "members");
    *total = (int)pxt_kv_num(line, "n", false, -1);
    const char *list = strchr(line + strlen("members "), ' ');
    int up = 0;
    for (const char *p = list != NULL ? list + 1 : ""; *p != '\0';) {
        char nm[64], st[32];
        unsigned inc = 0;
        if (sscanf(p, "%63[^:]:%31[^:]:%x", nm, st, &inc) != 3) {
            break;
        }
        if (strcmp(st, "up") == 0) {
            bool known = false;
            for (int j = 0; j < nwho; j++) {
                known = known || (strcmp(nm, who[j]->name) == 0 && inc == who[j]->inc);
            }
            if (!known) {
                return false; /* a zombie: up, but not a live incarnation */
            }
            up++;
        }
        const char *comma = strchr(p, ',');
        p = comma != NULL ? comma + 1 : "";
    }
    return up == nwho;
}

typedef struct health {
    int registered, fenced;
    uint32_t inc, sysinc;
    long long fences, keepalives;
    int holding;
} health;

static health health_of(node *n) {
    char line[512];
    node_cmd(n, "health ", line, sizeof line, "health");
    health h = {(int)pxt_kv_num(line, "registered", false, -1),
                (int)pxt_kv_num(line, "fenced", false, -1),
                (uint32_t)pxt_kv_num(line, "inc", true, 0),
                (uint32_t)pxt_kv_num(line, "sysinc", true, 0),
                pxt_kv_num(line, "fences", false, -1),
                pxt_kv_num(line, "keepalives", false, -1),
                (int)pxt_kv_num(line, "holding", false, -1)};
    cr_assert(h.registered >= 0 && h.fences >= 0 && h.keepalives >= 0, "%s", line);
    return h;
}

/* n registered again after a fence, as a new incarnation that its system
 * agrees with; *inc gets it. */
static bool rejoined(node *n, uint32_t old_inc, uint32_t *inc) {
    health h = health_of(n);
    *inc = h.inc;
    return h.fences >= 1 && h.registered == 1 && h.fenced == 0 && h.inc != old_inc &&
           h.sysinc == h.inc;
}

/* n's audit entries about who: the "states=" and "causes=" values. */
static void audit_of(node *n, const node *who, char *states, size_t slen, char *causes,
                     size_t clen) {
    static char line[65536];
    char prefix[64];
    snprintf(prefix, sizeof prefix, "audit name=%s ", who->name);
    node_cmd(n, prefix, line, sizeof line, "audit %s", who->name);
    cr_assert(pxt_kv(line, "states", states, slen), "%s", line);
    cr_assert(pxt_kv(line, "causes", causes, clen), "%s", line);
}

/* n asks ref for 2*v (px_ask, timeout ms): true if the right answer came. */
static bool ask_ok(node *n, const char *ref, int ms, char *line, size_t len) {
    unsigned id = ++g_ask_id;
    node_cmd(n, NULL, NULL, 0, "ask %u %s %u %d", id, ref, id, ms);
    char prefix[32];
    snprintf(prefix, sizeof prefix, "askr id=%u ", id);
    int rv = pxt_proc_expect(&n->p, prefix, ms + CMD_MS, line, len);
    if (rv != 0) {
        NODE_FAIL(n, "no answer to ask %u: %s", id, strerror(-rv));
    }
    snprintf(prefix, sizeof prefix, "askq id=%u ", id);
    (void)pxt_proc_expect(&n->p, prefix, 0, NULL, 0); /* drop it if it came */
    return strstr(line, "rc=PX_OK") != NULL && pxt_kv_num(line, "val", false, -1) == 2LL * id;
}

/* A new echo actor on n (of its current incarnation); its ref into ref. */
static void spawn_echo(node *n, char *ref, size_t len) {
    char line[256];
    node_cmd(n, "spawn ", line, sizeof line, "spawn");
    cr_assert(strstr(line, "rc=PX_OK") != NULL && pxt_kv(line, "ref", ref, len), "%s", line);
}

/* n's whereis of a global name: true if it says ref (ref NULL: if it says
 * there is no such name). */
static bool whereis_is(node *n, const char *name, const char *ref) {
    char line[256], prefix[160], got[48];
    snprintf(prefix, sizeof prefix, "whereis name=%s ", name);
    node_cmd(n, prefix, line, sizeof line, "whereis %s", name);
    if (ref == NULL) {
        return strstr(line, "rc=PX_ENOENT") != NULL;
    }
    return strstr(line, "rc=PX_OK") != NULL && pxt_kv(line, "ref", got, sizeof got) &&
           strcmp(got, ref) == 0;
}

/* n registers a new echo actor as `name`; its ref into ref. */
static void register_ok(node *n, const char *name, char *ref, size_t len) {
    char line[256], prefix[160];
    snprintf(prefix, sizeof prefix, "register name=%s ", name);
    node_cmd(n, prefix, line, sizeof line, "register %s", name);
    cr_assert(strstr(line, "rc=PX_OK") != NULL && pxt_kv(line, "ref", ref, len), "%s: %s",
              n->name, line);
}

static void start_nodes(node **ns, int k, const char *const *names) {
    for (int i = 0; i < k; i++) {
        ns[i] = node_up(names[i]);
    }
    AWAIT(pxt_pnodes_all_see_up(ns, k, ns, k), 15000, "every node sees every node up");
}

/* alpha, beta and gamma, each seeing all three up. */
static void three_up(node **n) {
    const char *names[] = {"alpha", "beta", "gamma"};
    start_nodes(n, 3, names);
}

/* For each of the k observers, how long after t0 it first saw `who` in
 * state st (polled; -1 if not within bound_ms). */
static void time_to_see(node **obs, int k, const node *who, const char *st, int64_t t0,
                        int bound_ms, int64_t *took) {
    int left = k;
    for (int i = 0; i < k; i++) {
        took[i] = -1;
    }
    while (left > 0 && now_ms() < t0 + bound_ms) {
        for (int i = 0; i < k; i++) {
            if (took[i] < 0 && pxt_pnode_sees(obs[i], who, st, 0)) {
                took[i] = now_ms() - t0;
                left--;
            }
        }
    }
}

/* ---- etcd's gateway, by hand ---- */

static void b64(const void *bin, size_t len, char *out, size_t cap) {
    cr_assert_geq(cap, sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL));
    sodium_bin2base64(out, cap, bin, len, sodium_base64_VARIANT_ORIGINAL);
}

/* POSTs a put of key (value "x"): the revision it made. */
static long long etcd_put(const char *key) {
    char k[256], body[512], res[1024];
    b64(key, strlen(key), k, sizeof k);
    snprintf(body, sizeof body, "{\"key\":\"%s\",\"value\":\"eA==\"}", k);
    int st = pxt_etcd_post(g_w.etcd.url, "/v3/kv/put", body, res, sizeof res);
    cr_assert_eq(st, 200, "put %s: %d %s", key, st, res);
    const char *r = strstr(res, "\"revision\":\"");
    cr_assert_not_null(r, "%s", res);
    return atoll(r + strlen("\"revision\":\""));
}

/* The number of leases etcd holds. */
static int etcd_leases(void) {
    static char res[65536];
    int st = pxt_etcd_post(g_w.etcd.url, "/v3/lease/leases", "{}", res, sizeof res);
    cr_assert_eq(st, 200, "lease list: %d %s", st, res);
    int n = 0;
    for (const char *p = strstr(res, "\"ID\""); p != NULL; p = strstr(p + 1, "\"ID\"")) {
        n++;
    }
    return n;
}

/* ---- a TCP forwarder that can cut a node off from etcd ---- */

/* Forwards every connection accepted on 127.0.0.1:port to etcd's port.
 * Cut, it closes the connections it forwards and closes each new one at
 * once (the client sees its connection reset or an empty reply), while
 * etcd itself runs on; uncut, it forwards again. One thread; blocking
 * writes (loopback, a reader on each end). */
#define CUT_PAIRS 64
struct cutter {
    int lfd, port, upstream;
    int wake[2];
    pthread_t th;
    bool running;
    atomic_int cut;        /* the state the test wants */
    atomic_int want, done; /* requests made / applied by the thread */
    atomic_int stop;
    int a[CUT_PAIRS], b[CUT_PAIRS]; /* the thread's: client and etcd sides, -1 = free */
};

static void pair_close(cutter *c, int i) {
    if (c->a[i] >= 0) {
        close(c->a[i]);
        close(c->b[i]);
        c->a[i] = c->b[i] = -1;
    }
}

static void cutter_accept(cutter *c) {
    int fd = accept4(c->lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
        return;
    }
    int slot = -1;
    for (int i = 0; i < CUT_PAIRS && slot < 0; i++) {
        slot = c->a[i] < 0 ? i : -1;
    }
    int u = atomic_load(&c->cut) || slot < 0 ? -1 : socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)c->upstream),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (u < 0 || connect(u, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (u >= 0) {
            close(u);
        }
        close(fd);
        return;
    }
    c->a[slot] = fd;
    c->b[slot] = u;
}

static void *cutter_main(void *arg) {
    cutter *c = arg;
    static char buf[65536];
    struct pollfd pf[2 + 2 * CUT_PAIRS];
    int who[2 + 2 * CUT_PAIRS];
    while (!atomic_load(&c->stop)) {
        int k = 0;
        pf[k++] = (struct pollfd){.fd = c->lfd, .events = POLLIN};
        pf[k++] = (struct pollfd){.fd = c->wake[0], .events = POLLIN};
        for (int i = 0; i < CUT_PAIRS; i++) {
            if (c->a[i] >= 0) {
                who[k] = i;
                pf[k++] = (struct pollfd){.fd = c->a[i], .events = POLLIN};
                who[k] = i;
                pf[k++] = (struct pollfd){.fd = c->b[i], .events = POLLIN};
            }
        }
        if (poll(pf, (nfds_t)k, 200) < 0 && errno != EINTR) {
            break;
        }
        int want = atomic_load(&c->want);
        if (want != atomic_load(&c->done) || (pf[1].revents & POLLIN)) {
            char x[64];
            (void)!read(c->wake[0], x, sizeof x);
            if (atomic_load(&c->cut)) {
                for (int i = 0; i < CUT_PAIRS; i++) {
                    pair_close(c, i);
                }
            }
            atomic_store(&c->done, want);
            continue; /* pf[] may name closed sockets now */
        }
        for (int j = 2; j < k; j++) {
            int i = who[j];
            if (!(pf[j].revents & (POLLIN | POLLHUP | POLLERR)) || c->a[i] < 0) {
                continue;
            }
            int to = pf[j].fd == c->a[i] ? c->b[i] : c->a[i];
            ssize_t r = read(pf[j].fd, buf, sizeof buf);
            if (r <= 0 || pxt_write_all(to, buf, (size_t)r) != 0) {
                pair_close(c, i);
            }
        }
        if (pf[0].revents & POLLIN) {
            cutter_accept(c);
        }
    }
    for (int i = 0; i < CUT_PAIRS; i++) {
        pair_close(c, i);
    }
    return NULL;
}

static cutter *cutter_new(int upstream) {
    cutter *c = calloc(1, sizeof *c);
    cr_assert_not_null(c);
    c->upstream = upstream;
    for (int i = 0; i < CUT_PAIRS; i++) {
        c->a[i] = c->b[i] = -1;
    }
    c->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    cr_assert(c->lfd >= 0 && bind(c->lfd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
                  listen(c->lfd, 64) == 0 &&
                  getsockname(c->lfd, (struct sockaddr *)&sa, &sl) == 0,
              "cutter: %s", strerror(errno));
    c->port = ntohs(sa.sin_port);
    cr_assert_eq(pipe2(c->wake, O_CLOEXEC), 0);
    cr_assert_eq(pthread_create(&c->th, NULL, cutter_main, c), 0);
    c->running = true;
    return c;
}

/* Cuts (or restores) and returns once the thread has done it. */
static void cutter_set(cutter *c, bool cut) {
    atomic_store(&c->cut, cut ? 1 : 0);
    int want = atomic_fetch_add(&c->want, 1) + 1;
    cr_assert_eq(write(c->wake[1], "x", 1), 1);
    AWAIT(atomic_load(&c->done) == want, 2000, "the cutter applies it");
}

static void cutter_free(cutter *c) {
    if (c == NULL) {
        return;
    }
    if (c->running) {
        atomic_store(&c->stop, 1);
        (void)!write(c->wake[1], "x", 1);
        pthread_join(c->th, NULL);
    }
    close(c->lfd);
    close(c->wake[0]);
    close(c->wake[1]);
    free(c);
}

/* ---- 1. join ---- */

SC_TEST(three_node_processes_join_and_each_sees_all_three_up, 60) {
    node *n[3];
    const char *names[] = {"alpha", "beta", "gamma"};
    int64_t t0 = now_ms();
    start_nodes(n, 3, names);
    fprintf(stderr, "scenarios: 3 processes started and all up everywhere in %lld ms\n",
            (long long)(now_ms() - t0));
    for (int i = 0; i < 3; i++) {
        int total = 0;
        cr_assert(view_is_exactly(n[i], n, 3, &total), "%s sees exactly the three up",
                  n[i]->name);
        cr_assert_eq(total, 3);
        health h = health_of(n[i]);
        cr_assert(h.registered == 1 && h.fenced == 0 && h.fences == 0, "%s", n[i]->name);
        cr_assert_eq(h.inc, n[i]->inc, "the cluster registered the process's incarnation");
        cr_assert_eq(h.sysinc, n[i]->inc);
    }
    /* The links membership opened carry asks (no static peers anywhere). */
    char line[256];
    cr_assert(ask_ok(n[0], n[2]->echo, 3000, line, sizeof line), "%s", line);
    cr_assert(ask_ok(n[2], n[1]->echo, 3000, line, sizeof line), "%s", line);
    finish(n, 3);
}

/* ---- 2. graceful leave ---- */

SC_TEST(a_graceful_leave_is_seen_as_left_by_every_survivor_within_a_second, 60) {
    node *n[3];
    three_up(n);
    node *gone = n[2];
    int64_t t0 = now_ms(), took[2];
    char line[64];
    node_cmd(gone, "left", line, sizeof line, "leave");
    time_to_see(n, 2, gone, "left", t0, 3000, took);
    for (int i = 0; i < 2; i++) {
        cr_assert_geq(took[i], 0, "%s never saw gamma left", n[i]->name);
        cr_assert_leq(took[i], 1000, "%s saw gamma left after %lld ms", n[i]->name,
                      (long long)took[i]);
        char st[512], causes[2048];
        audit_of(n[i], gone, st, sizeof st, causes, sizeof causes);
        cr_assert(strstr(st, "down") == NULL, "a goodbye is not a failure: %s", st);
        cr_assert(strstr(causes, "left_gracefully") != NULL, "%s", causes);
    }
    fprintf(stderr, "scenarios: leave seen as left after %lld / %lld ms\n", (long long)took[0],
            (long long)took[1]);
    finish(n, 3);
}

/* ---- 3. SIGKILL ---- */

SC_TEST(a_sigkilled_node_is_down_on_every_survivor_within_ttl_plus_a_second, 60) {
    node *n[3];
    three_up(n);
    node *dead = n[1], *surv[2] = {n[0], n[2]};
    int64_t t0 = now_ms(), took[2];
    pxt_proc_kill(&dead->p);
    cr_assert(dead->p.reaped && WIFSIGNALED(dead->p.status) && WTERMSIG(dead->p.status) == SIGKILL);
    time_to_see(surv, 2, dead, "down", t0, TTL_MS + 4000, took);
    for (int i = 0; i < 2; i++) {
        cr_assert_geq(took[i], 0, "%s never saw beta down", surv[i]->name);
        cr_assert_leq(took[i], TTL_MS + 1000, "%s saw beta down after %lld ms (TTL %d ms)",
                      surv[i]->name, (long long)took[i], TTL_MS);
        char st[512], causes[2048];
        audit_of(surv[i], dead, st, sizeof st, causes, sizeof causes);
        cr_assert(strstr(causes, "lease_expired") != NULL, "%s: %s", surv[i]->name, causes);
    }
    fprintf(stderr, "scenarios: SIGKILL seen as down after %lld / %lld ms (TTL %d ms)\n",
            (long long)took[0], (long long)took[1], TTL_MS);
    finish(surv, 2);
}

/* ---- 4. etcd restarted under asks ---- */

/* Asks alpha -> beta's echo in a loop on its own thread, counted by the
 * phase the test is in when each is made. Only this thread talks to alpha
 * while it runs, and it asserts nothing (Criterion asserts belong to the
 * test's thread): it records. */
typedef struct ask_loop {
    node *from;
    const char *to;
    atomic_int phase; /* 0 before the restart, 1 during, 2 after */
    atomic_int stop;
    atomic_long ok[3];
    atomic_long failed;
    char first_failure[256];
    int64_t max_ms;
} ask_loop;

static void *ask_loop_main(void *arg) {
    ask_loop *l = arg;
    unsigned id = 1000000;
    while (!atomic_load(&l->stop)) {
        int ph = atomic_load(&l->phase);
        char line[256], prefix[32];
        id++;
        int64_t t0 = now_ms();
        int rv = pxt_proc_send(&l->from->p, "ask %u %s %u 2000", id, l->to, id % 1000);
        snprintf(prefix, sizeof prefix, "askr id=%u ", id);
        if (rv == 0) {
            rv = pxt_proc_expect(&l->from->p, prefix, 10000, line, sizeof line);
        }
        snprintf(prefix, sizeof prefix, "askq id=%u ", id);
        (void)pxt_proc_expect(&l->from->p, prefix, 0, NULL, 0);
        int64_t ms = now_ms() - t0;
        l->max_ms = ms > l->max_ms ? ms : l->max_ms;
        if (rv == 0 && strstr(line, "rc=PX_OK") != NULL &&
            pxt_kv_num(line, "val", false, -1) == 2LL * (id % 1000)) {
            atomic_fetch_add(&l->ok[ph], 1);
        } else if (atomic_fetch_add(&l->failed, 1) == 0) {
            snprintf(l->first_failure, sizeof l->first_failure, "phase %d: %.200s", ph,
                     rv == 0 ? line : strerror(-rv));
        }
    }
    return NULL;
}

SC_TEST(asks_go_on_across_an_etcd_restart_with_no_false_down_and_views_reconverge, 90) {
    node *n[4];
    const char *names[] = {"alpha", "beta", "gamma"};
    start_nodes(n, 3, names);
    ask_loop l = {.from = n[0], .to = n[1]->echo};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, ask_loop_main, &l), 0);
    AWAIT(atomic_load(&l.ok[0]) >= 20 || atomic_load(&l.failed) > 0, 10000);
    long long ka_b = health_of(n[1]).keepalives, ka_c = health_of(n[2]).keepalives;

    atomic_store(&l.phase, 1);
    int64_t t0 = now_ms();
    pxt_etcd_kill(&g_w.etcd);
    /* On this thread: etcd dies with the thread that started it. */
    int rv = pxt_etcd_restart(&g_w.etcd);
    int64_t outage = now_ms() - t0;
    cr_assert_eq(rv, 0, "etcd restart: %s", strerror(-rv));
    /* Keepalives succeed again (beta's and gamma's; alpha's pipe is the loop's). */
    AWAIT(health_of(n[1]).keepalives > ka_b && health_of(n[2]).keepalives > ka_c, 5000,
          "keepalives go on after the restart");
    atomic_store(&l.phase, 2);
    AWAIT(atomic_load(&l.ok[2]) >= 20 || atomic_load(&l.failed) > 0, 10000);
    atomic_store(&l.stop, 1);
    pthread_join(th, NULL);
    fprintf(stderr,
            "scenarios: etcd down %lld ms; asks ok before/during/after %ld/%ld/%ld, failed %ld, "
            "slowest %lld ms\n",
            (long long)outage, atomic_load(&l.ok[0]), atomic_load(&l.ok[1]),
            atomic_load(&l.ok[2]), atomic_load(&l.failed), (long long)l.max_ms);
    cr_assert_eq(atomic_load(&l.failed), 0, "an ask failed: %s", l.first_failure);
    cr_assert_gt(atomic_load(&l.ok[1]), 0, "asks were made while etcd was down");
    cr_assert_lt(outage, TTL_MS / 2, "the restart took %lld ms: too long to expect no fence",
                 (long long)outage);

    /* Nobody fenced, and nobody was ever seen down. */
    for (int i = 0; i < 3; i++) {
        health h = health_of(n[i]);
        cr_assert(h.fences == 0 && h.registered == 1, "%s fenced during a short outage",
                  n[i]->name);
        for (int j = 0; j < 3; j++) {
            char st[512], causes[2048];
            audit_of(n[i], n[j], st, sizeof st, causes, sizeof causes);
            cr_assert(strstr(st, "down") == NULL && strstr(st, "fenced") == NULL,
                      "%s saw %s %s (%s)", n[i]->name, n[j]->name, st, causes);
        }
    }
    /* A node that joins after the restart is seen by all, and sees all. */
    n[3] = node_up("delta");
    AWAIT(pxt_pnodes_all_see_up(n, 4, n, 4), 15000, "the views converge on four");
    finish(n, 4);
}

/* ---- 5. etcd stopped past the TTL ---- */

/* etcd frozen (SIGSTOP) past the TTL. Every node's keepalives go
 * unanswered, but each hears from all the others that they are cut off
 * too: etcd is down for everyone, nobody can take anyone's work over, so
 * no node fences while it is stopped — they hold on and keep serving each
 * other on their last view. Once etcd runs again it expires the leases
 * whose time passed while it was frozen: each node learns at its next
 * keepalive that its lease is gone, fences itself then, and rejoins as a
 * new incarnation, with no zombie left in any view. */
SC_TEST(etcd_stopped_past_the_ttl_makes_every_node_a_new_incarnation_without_zombies, 90) {
    node *n[3];
    three_up(n);
    char line[256];
    cr_assert(ask_ok(n[1], n[0]->echo, 3000, line, sizeof line), "%s", line);
    char svc[48];
    register_ok(n[0], "svc.alpha", svc, sizeof svc);
    AWAIT(whereis_is(n[2], "svc.alpha", svc), 5000);
    uint32_t old[3];
    for (int i = 0; i < 3; i++) {
        old[i] = n[i]->inc;
    }

    cr_assert_eq(pxt_etcd_pause(&g_w.etcd), 0);
    int64_t t0 = now_ms();
    AWAIT(health_of(n[0]).holding == 1 && health_of(n[1]).holding == 1 &&
              health_of(n[2]).holding == 1,
          TTL_MS + 4000, "every node holds on instead of fencing while etcd is stopped");
    int64_t held_after = now_ms() - t0;
    for (int i = 0; i < 3; i++) {
        health h = health_of(n[i]);
        cr_assert(h.fences == 0 && h.registered == 1, "%s fenced while etcd was down for all",
                  n[i]->name);
    }
    /* and they keep serving each other, the old incarnations still */
    cr_assert(ask_ok(n[1], n[0]->echo, 3000, line, sizeof line), "%s", line);
    cr_assert_eq(pxt_etcd_resume(&g_w.etcd), 0);
    int64_t t1 = now_ms(), paused = t1 - t0;

    uint32_t inc = 0;
    for (int i = 0; i < 3; i++) {
        AWAIT(rejoined(n[i], old[i], &inc), 10000, "%s registers again", n[i]->name);
        n[i]->inc = inc;
    }
    AWAIT(pxt_pnodes_all_see_up(n, 3, n, 3), 15000, "every node sees every new incarnation up");
    fprintf(stderr,
            "scenarios: etcd stopped %lld ms; all holding after %lld ms; all new incarnations "
            "up everywhere %lld ms after resuming\n",
            (long long)paused, (long long)held_after, (long long)(now_ms() - t1));
    /* No zombie: exactly the three live incarnations are up, everywhere —
     * also once etcd has let the old leases go (revoked by the nodes or
     * expired), so that no late deletion is still to come. */
    AWAIT(etcd_leases() == 3, 5000, "etcd holds only the three new leases");
    for (int i = 0; i < 3; i++) {
        int total = 0;
        cr_assert(view_is_exactly(n[i], n, 3, &total), "%s's view holds a zombie",
                  n[i]->name);
        cr_assert_eq(total, 3, "%s", n[i]->name);
        char st[512], causes[2048];
        audit_of(n[i], n[i], st, sizeof st, causes, sizeof causes);
        cr_assert(strstr(st, "fenced") != NULL, "%s: %s", n[i]->name, st);
        /* alpha's name went with its old lease: no node points at the old actor. */
        AWAIT(whereis_is(n[i], "svc.alpha", NULL), 5000, "%s forgets svc.alpha", n[i]->name);
    }
    /* The old incarnation's actor is cut off; a new one answers, and may
     * take the name again. */
    cr_assert(!ask_ok(n[1], n[0]->echo, 1000, line, sizeof line),
              "an actor of alpha's old incarnation answered: %s", line);
    char fresh[48];
    spawn_echo(n[0], fresh, sizeof fresh);
    AWAIT(ask_ok(n[1], fresh, 2000, line, sizeof line), 10000, "beta -> alpha's new echo: %s",
          line);
    register_ok(n[0], "svc.alpha", svc, sizeof svc);
    AWAIT(whereis_is(n[1], "svc.alpha", svc), 5000);
    finish(n, 3);
}

/* ---- 6. a node stopped past its TTL ---- */

SC_TEST(a_node_stopped_past_its_ttl_is_down_then_rejoins_as_a_new_incarnation, 90) {
    node *n[3];
    three_up(n);
    node *b = n[1], *surv[2] = {n[0], n[2]};
    uint32_t old = b->inc;

    cr_assert_eq(kill(b->p.pid, SIGSTOP), 0);
    int64_t t0 = now_ms();
    AWAIT(pxt_pnode_sees(surv[0], b, "down", 0) && pxt_pnode_sees(surv[1], b, "down", 0), TTL_MS + 4000,
          "the others see the frozen beta down");
    int64_t down = now_ms() - t0;
    for (int i = 0; i < 2; i++) {
        char st[512], causes[2048];
        audit_of(surv[i], b, st, sizeof st, causes, sizeof causes);
        cr_assert(strstr(causes, "lease_expired") != NULL, "%s: %s", surv[i]->name, causes);
    }
    cr_assert_eq(kill(b->p.pid, SIGCONT), 0);
    int64_t t1 = now_ms();
    uint32_t inc = 0;
    AWAIT(rejoined(b, old, &inc), 10000, "beta fences itself and registers again");
    b->inc = inc;
    AWAIT(pxt_pnodes_all_see_up(n, 3, n, 3), 15000, "everyone sees beta's new incarnation up");
    fprintf(stderr,
            "scenarios: a frozen node seen down after %lld ms; back up everywhere as a new "
            "incarnation %lld ms after SIGCONT\n",
            (long long)down, (long long)(now_ms() - t1));
    char self_st[512], self_causes[2048];
    audit_of(b, b, self_st, sizeof self_st, self_causes, sizeof self_causes);
    cr_assert(strstr(self_st, "fenced") != NULL, "%s (%s)", self_st, self_causes);
    char fresh[48], line[256];
    spawn_echo(b, fresh, sizeof fresh);
    AWAIT(ask_ok(n[0], fresh, 2000, line, sizeof line), 10000, "alpha -> beta's new echo: %s",
          line);
    cr_assert(!ask_ok(n[0], b->echo, 1000, line, sizeof line),
              "beta's old incarnation answered: %s", line);
    finish(n, 3);
}

/* ---- 7. a watch cut across a compaction ---- */

static long long etcdstat(node *n, const char *key) {
    char line[256];
    node_cmd(n, "etcdstats ", line, sizeof line, "etcdstats");
    long long v = pxt_kv_num(line, key, false, -1);
    cr_assert_geq(v, 0, "%s", line);
    return v;
}

SC_TEST(a_watch_cut_off_across_a_compaction_resyncs_and_sees_what_changed_meanwhile, 90) {
    g_cut = cutter_new(g_w.etcd.port);
    node *n[3];
    n[0] = node_new("alpha");
    snprintf(n[0]->etcd, sizeof n[0]->etcd, "http://127.0.0.1:%d", g_cut->port);
    node_start(n[0]);
    n[1] = node_up("beta");
    n[2] = node_up("gamma");
    AWAIT(pxt_pnodes_all_see_up(n, 3, n, 3), 15000);
    cr_assert_eq(etcdstat(n[0], "compacted"), 0);

    /* alpha loses etcd. Meanwhile beta leaves, gamma takes a name, other
     * keys churn, and etcd compacts past everything alpha saw. */
    cutter_set(g_cut, true);
    int64_t t0 = now_ms();
    char line[256], ref[48];
    node_cmd(n[1], "left", line, sizeof line, "leave");
    register_ok(n[2], "gap.name", ref, sizeof ref);
    long long rev = 0;
    for (int i = 0; i < 20; i++) {
        char key[64];
        snprintf(key, sizeof key, "/plexus/t/other/k%d", i);
        rev = etcd_put(key);
    }
    char body[128], res[512];
    snprintf(body, sizeof body, "{\"revision\":\"%lld\",\"physical\":true}", rev);
    int st = pxt_etcd_post(g_w.etcd.url, "/v3/kv/compaction", body, res, sizeof res);
    cr_assert_eq(st, 200, "compaction: %d %s", st, res);
    int64_t gap = now_ms() - t0;
    cr_assert_lt(gap, TTL_MS / 2, "the gap took %lld ms: alpha could fence", (long long)gap);
    cutter_set(g_cut, false);

    /* alpha's watch comes back below the compacted revision: it must read
     * everything again, and its view shows what happened in the gap. */
    int64_t t1 = now_ms();
    AWAIT(etcdstat(n[0], "compacted") >= 1, 5000, "alpha's membership watch resynced");
    AWAIT(!pxt_pnode_sees(n[0], n[1], "up", 0), 5000, "alpha sees that beta is gone");
    cr_assert(pxt_pnode_sees(n[0], n[1], "down", 0) || pxt_pnode_sees(n[0], n[1], "left", 0));
    char states[512], causes[2048];
    audit_of(n[0], n[1], states, sizeof states, causes, sizeof causes);
    cr_assert(strstr(causes, "full_read") != NULL, "found gone by the full read: %s", causes);
    AWAIT(whereis_is(n[0], "gap.name", ref), 5000, "alpha learns the name taken in the gap");
    fprintf(stderr,
            "scenarios: alpha cut off %lld ms across a compaction; resynced and saw the gap "
            "%lld ms after it came back (beta: %s)\n",
            (long long)gap, (long long)(now_ms() - t1), states);
    health h = health_of(n[0]);
    cr_assert(h.fences == 0 && h.registered == 1, "a gap shorter than the TTL fences nobody");
    node *live[2] = {n[0], n[2]};
    cr_assert(pxt_pnodes_all_see_up(live, 2, live, 2));
    cr_assert(pxt_pnode_sees(n[2], n[1], "left", 0), "gamma, never cut off, saw beta leave");
    finish(n, 3);
}

/* ---- 8. ten processes race for one global name ---- */

SC_TEST(ten_processes_racing_for_one_global_name_have_exactly_one_winner, 120) {
    node *n[10];
    char names[10][8];
    const char *np[10];
    for (int i = 0; i < 10; i++) {
        snprintf(names[i], sizeof names[i], "n%d", i);
        np[i] = names[i];
    }
    int64_t t0 = now_ms();
    start_nodes(n, 10, np);
    fprintf(stderr, "scenarios: 10 processes started and all up everywhere in %lld ms\n",
            (long long)(now_ms() - t0));
    for (int i = 0; i < 10; i++) { /* all at once: no answer is read before every ask is out */
        cr_assert_eq(pxt_proc_send(&n[i]->p, "register svc.leader"), 0);
    }
    char line[10][256], ref[10][48], owner[10][48];
    int win = -1, wins = 0;
    for (int i = 0; i < 10; i++) {
        int rv = pxt_proc_expect(&n[i]->p, "register name=svc.leader ", CMD_MS, line[i],
                                 sizeof line[i]);
        if (rv != 0) {
            NODE_FAIL(n[i], "no answer to register: %s", strerror(-rv));
        }
        cr_assert(pxt_kv(line[i], "ref", ref[i], sizeof ref[i]) &&
                      pxt_kv(line[i], "owner", owner[i], sizeof owner[i]),
                  "%s", line[i]);
        if (strstr(line[i], "rc=PX_OK") != NULL) {
            win = i;
            wins++;
        }
    }
    cr_assert_eq(wins, 1, "exactly one winner");
    for (int i = 0; i < 10; i++) {
        if (i != win) {
            cr_assert(strstr(line[i], "rc=PX_EEXIST") != NULL, "%s", line[i]);
            cr_assert_str_eq(owner[i], ref[win], "%s learns the winner: %s", n[i]->name,
                             line[i]);
        }
    }
    for (int i = 0; i < 10; i++) {
        AWAIT(whereis_is(n[i], "svc.leader", ref[win]), 5000, "%s finds the winner",
              n[i]->name);
    }
    char al[256];
    cr_assert(ask_ok(n[(win + 1) % 10], ref[win], 3000, al, sizeof al),
              "the winner's ref works from another node: %s", al);
    finish(n, 10);
}

/* ---- 9. a node's key deleted by hand ---- */

/* Deletes n's membership key by hand (its lease lives on). */
static void delete_key_of(const node *n) {
    char key[64], k64[128], body[256], res[512];
    snprintf(key, sizeof key, "/plexus/t/nodes/%08x", n->id);
    b64(key, strlen(key), k64, sizeof k64);
    snprintf(body, sizeof body, "{\"key\":\"%s\"}", k64);
    int st = pxt_etcd_post(g_w.etcd.url, "/v3/kv/deleterange", body, res, sizeof res);
    cr_assert(st == 200 && strstr(res, "\"deleted\":\"1\"") != NULL, "%d %s", st, res);
}

SC_TEST(a_node_whose_key_is_deleted_by_hand_fences_and_registers_again, 60) {
    node *n[2];
    const char *names[] = {"alpha", "beta"};
    start_nodes(n, 2, names);
    node *b = n[1];
    uint32_t old = b->inc;
    int64_t t0 = now_ms();
    delete_key_of(b);
    uint32_t inc = 0;
    AWAIT(rejoined(b, old, &inc), 5000, "beta notices and registers again");
    b->inc = inc;
    AWAIT(pxt_pnodes_all_see_up(n, 2, n, 2), 10000, "alpha sees beta's new incarnation up");
    fprintf(stderr, "scenarios: a deleted key re-registered and seen up in %lld ms\n",
            (long long)(now_ms() - t0));
    char states[512], causes[2048];
    audit_of(b, b, states, sizeof states, causes, sizeof causes);
    cr_assert(strstr(causes, "our_key_was_deleted") != NULL, "%s", causes);
    char fresh[48], line[256];
    spawn_echo(b, fresh, sizeof fresh);
    AWAIT(ask_ok(n[0], fresh, 2000, line, sizeof line), 10000, "%s", line);
    finish(n, 2);
}

/* KNOWN BUG (fails until cluster/src/membership.c is fixed): every DELETE
 * of a member's key that was not preceded by `leaving` is recorded as
 * "lease expired (no keepalive for a TTL)" (on_events -> gone_locked), even
 * when the lease is alive and the key was deleted by someone — here right
 * after the node joined, its keepalives all answered. The audit must not
 * claim a cause it cannot know. */
SC_TEST(a_key_deleted_under_a_live_lease_is_not_recorded_as_a_lease_expiry, 60) {
    node *n[2];
    const char *names[] = {"alpha", "beta"};
    start_nodes(n, 2, names);
    health h = health_of(n[1]);
    cr_assert(h.registered == 1 && h.fences == 0);
    delete_key_of(n[1]);
    char states[512], causes[2048];
    AWAIT((audit_of(n[0], n[1], states, sizeof states, causes, sizeof causes),
           strstr(states, "down") != NULL),
          5000, "alpha records beta's key gone");
    cr_assert(strstr(causes, "lease_expired") == NULL && strstr(causes, "no_keepalive") == NULL,
              "alpha's audit says beta's lease expired, but it was alive: %s", causes);
    finish(n, 2);
}
