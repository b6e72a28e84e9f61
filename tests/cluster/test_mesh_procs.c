/*
 * The mesh (plexus/mesh.h) with every node its own OS process (pxt_node
 * --etcd, tests/transport/pxt_node.c: system, transport on loopback tcp,
 * cluster membership and the mesh, driven over stdin/stdout) against a
 * real etcd (pxt_etcd), lease TTL 2 s:
 *  - sends, asks and watches across nodes, and a ref passed through a third
 *    node inside a message;
 *  - every Terminated reason a watcher on another node can get: normal,
 *    stopped, failure (with its code), no such actor, node down (SIGKILL:
 *    the lease expires), and a node frozen past its TTL (SIGSTOP) that
 *    fences itself and comes back as a new incarnation — exactly one
 *    Terminated per watch on both sides;
 *  - remote spawn by each placement policy, and an unknown behavior's error;
 *  - OneForOne, AllForOne and RestForOne with children on two other nodes;
 *  - an escalation across three nodes (A -> B -> C);
 *  - failover: the child's node gets SIGKILL, the child answers from
 *    another node within the TTL + 3 s;
 *  - a partition between the parent's node and the child's node while both
 *    stay registered (placement.unreachable_ms): never two live instances;
 *  - a global name that follows its service through a failover (registered
 *    from the service's init, and by placement.global_name).
 * Six more cases at the end were written as failing tests for bugs in
 * cluster/src/mesh.c, fixed since (each says what it was).
 *
 * The partition is made at the transport level by a proxy in this process
 * (linkcut below): in that test each node publishes (--advertise) the
 * address of its own proxy port, so every link connection any node dials
 * to it passes through the proxy, which reads the dialer's Hello (the
 * handshake's first frame is plaintext: plexus.Handshake) to learn who
 * dials. Cutting {a, b} closes the connections a dialled to b and b to a
 * and closes new ones right after their Hello, while every other pair —
 * and etcd — is untouched: both a and b see their link to the other fail
 * (UNREACHABLE on both sides, as a real network partition looks), and the
 * cut holds across membership's re-adds of the peer (the address does not
 * change). Removing the peer (px_transport_peer_remove) instead would not
 * do: the removing side marks the link GONE, which membership does not
 * take for unreachable, and the next NodeInfo put of the other node adds
 * it back.
 *
 * Every process is stopped by pid and reaped in every path (the fini kills
 * what is left; children die with the test, PR_SET_PDEATHSIG). Every wait
 * polls a condition up to a deadline. A failed test keeps its temp dir (the
 * node logs) and says where; PXT_KEEP=1 keeps it always. Measured times go
 * to stderr.
 */
#define _GNU_SOURCE /* accept4 */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include <plexus/plexus.h>

#include "plexus/plexus.pb-c.h"
#include "pxt_pnode.h"

#define TTL_S 2
#define TTL_MS (TTL_S * 1000)
#define CMD_MS PXT_PNODE_CMD_MS
#define TAG_FAIL 666
#define TAG_EXIT 777

typedef pxt_pnode node;

static pxt_pworld g_w; /* the directory, the secret, etcd, the nodes */
static unsigned g_ask_id;

typedef struct linkcut linkcut;
static linkcut *g_lc;

/* ---- linkcut: a proxy per node that can cut pairs of nodes apart ---- */

#define LC_EPS 4
#define LC_PAIRS 64
#define LC_BLOCKS 8

enum { LC_HELLO = 0, LC_FWD = 1 };

typedef struct lc_pair {
    int c, u;       /* the dialer's connection, the one to the node's listener */
    int ep;         /* endpoint (target node) */
    int phase;
    char dialer[64];
    uint8_t *buf;   /* preamble + handshake frame, held until the Hello is read */
    size_t have;
} lc_pair;

struct linkcut {
    pthread_t th;
    int wake[2];
    atomic_int stop;
    struct {
        int lfd, port, upstream;
        char name[16];
    } ep[LC_EPS];
    int nep;
    pthread_mutex_t mu;
    char blocked[LC_BLOCKS][2][16]; /* guarded by mu */
    int nblocked;
    atomic_int gen, closed;
    lc_pair pairs[LC_PAIRS]; /* the thread's */
};

static bool lc_blocked(linkcut *lc, const char *a, const char *b) {
    bool r = false;
    pthread_mutex_lock(&lc->mu);
    for (int i = 0; i < lc->nblocked && !r; i++) {
        r = (strcmp(lc->blocked[i][0], a) == 0 && strcmp(lc->blocked[i][1], b) == 0) ||
            (strcmp(lc->blocked[i][0], b) == 0 && strcmp(lc->blocked[i][1], a) == 0);
    }
    pthread_mutex_unlock(&lc->mu);
    return r;
}

static void lc_close(linkcut *lc, lc_pair *p) {
    if (p->c >= 0) {
        close(p->c);
    }
    if (p->u >= 0) {
        close(p->u);
    }
    free(p->buf);
    memset(p, 0, sizeof *p);
    p->c = p->u = -1;
    atomic_fetch_add(&lc->closed, 1);
}

/* Bytes from the dialer: held until its Hello is complete, then judged. */
static int lc_from_dialer(linkcut *lc, lc_pair *p) {
    uint8_t b[16384];
    ssize_t r = recv(p->c, b, sizeof b, 0);
    if (r <= 0) {
        return -1;
    }
    if (p->phase == LC_FWD) {
        return pxt_write_all(p->u, b, (size_t)r);
    }
    uint8_t *nb = realloc(p->buf, p->have + (size_t)r);
    if (nb == NULL) {
        return -1;
    }
    p->buf = nb;
    memcpy(p->buf + p->have, b, (size_t)r);
    p->have += (size_t)r;
    if (p->have < 12) {
        return 0;
    }
    uint32_t n = (uint32_t)p->buf[8] | (uint32_t)p->buf[9] << 8 | (uint32_t)p->buf[10] << 16 |
                 (uint32_t)p->buf[11] << 24;
    if (n > 4096) {
        return -1;
    }
    if (p->have < 12 + n) {
        return 0;
    }
    Plexus__Handshake *hs = plexus__handshake__unpack(NULL, n, p->buf + 12);
    if (hs == NULL || hs->msg_case != PLEXUS__HANDSHAKE__MSG_HELLO || hs->hello == NULL) {
        if (hs != NULL) {
            plexus__handshake__free_unpacked(hs, NULL);
        }
        return -1;
    }
    snprintf(p->dialer, sizeof p->dialer, "%s", hs->hello->node_name);
    plexus__handshake__free_unpacked(hs, NULL);
    if (lc_blocked(lc, p->dialer, lc->ep[p->ep].name)) {
        return -1;
    }
    p->phase = LC_FWD;
    int rv = pxt_write_all(p->u, p->buf, p->have);
    free(p->buf);
    p->buf = NULL;
    p->have = 0;
    return rv;
}

static void *lc_main(void *arg) {
    linkcut *lc = arg;
    int gen = atomic_load(&lc->gen);
    while (!atomic_load(&lc->stop)) {
        if (atomic_load(&lc->gen) != gen) { /* a new cut: close what it forbids */
            gen = atomic_load(&lc->gen);
            for (int i = 0; i < LC_PAIRS; i++) {
                lc_pair *p = &lc->pairs[i];
                if (p->c >= 0 && p->phase == LC_FWD &&
                    lc_blocked(lc, p->dialer, lc->ep[p->ep].name)) {
                    lc_close(lc, p);
                }
            }
        }
        struct pollfd pf[1 + LC_EPS + 2 * LC_PAIRS];
        int who[1 + LC_EPS + 2 * LC_PAIRS];
        int n = 0;
        pf[n] = (struct pollfd){.fd = lc->wake[0], .events = POLLIN};
        who[n++] = -1;
        for (int i = 0; i < lc->nep; i++) {
            pf[n] = (struct pollfd){.fd = lc->ep[i].lfd, .events = POLLIN};
            who[n++] = -2 - i;
        }
        for (int i = 0; i < LC_PAIRS; i++) {
            if (lc->pairs[i].c >= 0) {
                pf[n] = (struct pollfd){.fd = lc->pairs[i].c, .events = POLLIN};
                who[n++] = 2 * i;
                pf[n] = (struct pollfd){.fd = lc->pairs[i].u, .events = POLLIN};
                who[n++] = 2 * i + 1;
            }
        }
        if (poll(pf, (nfds_t)n, 200) <= 0) {
            continue;
        }
        for (int k = 0; k < n; k++) {
            if (pf[k].revents == 0) {
                continue;
            }
            if (who[k] == -1) {
                char x[64];
                ssize_t r = read(lc->wake[0], x, sizeof x);
                (void)r;
                continue;
            }
            if (who[k] <= -2) {
                int e = -2 - who[k];
                int c = accept4(lc->ep[e].lfd, NULL, NULL, SOCK_CLOEXEC);
                if (c < 0) {
                    continue;
                }
                int u = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                struct sockaddr_in sa = {.sin_family = AF_INET,
                                         .sin_port = htons((uint16_t)lc->ep[e].upstream),
                                         .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
                int slot = -1;
                for (int i = 0; i < LC_PAIRS && slot < 0; i++) {
                    slot = lc->pairs[i].c < 0 ? i : -1;
                }
                if (u < 0 || slot < 0 || connect(u, (struct sockaddr *)&sa, sizeof sa) != 0) {
                    close(c);
                    if (u >= 0) {
                        close(u);
                    }
                    continue;
                }
                lc->pairs[slot] = (lc_pair){.c = c, .u = u, .ep = e, .phase = LC_HELLO};
                continue;
            }
            lc_pair *p = &lc->pairs[who[k] / 2];
            if (p->c < 0) {
                continue; /* closed earlier in this round */
            }
            int rv;
            if (who[k] % 2 == 0) {
                rv = lc_from_dialer(lc, p);
            } else {
                uint8_t b[16384];
                ssize_t r = recv(p->u, b, sizeof b, 0);
                rv = r <= 0 ? -1 : pxt_write_all(p->c, b, (size_t)r);
            }
            if (rv != 0) {
                lc_close(lc, p);
            }
        }
    }
    for (int i = 0; i < LC_PAIRS; i++) {
        if (lc->pairs[i].c >= 0) {
            lc_close(lc, &lc->pairs[i]);
        }
    }
    return NULL;
}

/* A proxy endpoint for each node: its listener forwards to the node's
 * address, and the node publishes the proxy's (n->adv). Starts the thread. */
static void linkcut_adv(node **ns, int k) {
    linkcut *lc = calloc(1, sizeof *lc);
    cr_assert_not_null(lc);
    g_lc = lc;
    pthread_mutex_init(&lc->mu, NULL);
    for (int i = 0; i < LC_PAIRS; i++) {
        lc->pairs[i].c = lc->pairs[i].u = -1;
    }
    cr_assert_eq(pipe(lc->wake), 0);
    cr_assert_leq(k, LC_EPS);
    for (int i = 0; i < k; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int on = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t sl = sizeof sa;
        cr_assert(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
                  listen(fd, 64) == 0 && getsockname(fd, (struct sockaddr *)&sa, &sl) == 0);
        lc->ep[i].lfd = fd;
        lc->ep[i].port = ntohs(sa.sin_port);
        lc->ep[i].upstream = atoi(strrchr(ns[i]->addr, ':') + 1);
        snprintf(lc->ep[i].name, sizeof lc->ep[i].name, "%s", ns[i]->name);
        snprintf(ns[i]->adv, sizeof ns[i]->adv, "tcp://127.0.0.1:%d", lc->ep[i].port);
        lc->nep++;
    }
    cr_assert_eq(pthread_create(&lc->th, NULL, lc_main, lc), 0);
}

/* Cuts (on = true) or heals the links between a and b. */
static void linkcut_set(linkcut *lc, const node *a, const node *b, bool on) {
    pthread_mutex_lock(&lc->mu);
    if (on && lc->nblocked < LC_BLOCKS) {
        snprintf(lc->blocked[lc->nblocked][0], 16, "%s", a->name);
        snprintf(lc->blocked[lc->nblocked][1], 16, "%s", b->name);
        lc->nblocked++;
    } else if (!on) {
        lc->nblocked = 0;
    }
    pthread_mutex_unlock(&lc->mu);
    atomic_fetch_add(&lc->gen, 1);
    ssize_t w = write(lc->wake[1], "x", 1);
    (void)w;
}

static void linkcut_free(linkcut *lc) {
    if (lc == NULL) {
        return;
    }
    atomic_store(&lc->stop, 1);
    ssize_t w = write(lc->wake[1], "x", 1);
    (void)w;
    pthread_join(lc->th, NULL);
    for (int i = 0; i < lc->nep; i++) {
        close(lc->ep[i].lfd);
    }
    close(lc->wake[0]);
    close(lc->wake[1]);
    pthread_mutex_destroy(&lc->mu);
    free(lc);
}

/* ---- set-up and tear-down ---- */

static void setup(void) { pxt_pworld_setup(&g_w, "mesh_procs", "mp", "m", TTL_S); }

static void teardown(void) {
    pxt_pworld_teardown(&g_w);
    linkcut_free(g_lc);
    g_lc = NULL;
}

#define MP_TEST(name, secs)                                                                   \
    Test(mesh_procs, name, .init = setup, .fini = teardown, .timeout = (secs))

static int64_t now_ms(void) { return pxt_mono_ms(); }

#define NODE_FAIL(n, ...) PXT_FAIL_LOG((n)->name, (n)->log_path, __VA_ARGS__)
#define AWAIT PXT_AWAIT

/* ---- node processes ---- */

static node *node_new(const char *name, const char *roles) {
    return pxt_pnode_new(&g_w, name, roles);
}

static void node_start(node *n) { pxt_pnode_start(&g_w, n); }

#define node_cmd PXT_PNODE_CMD

static void finish(node **n, int k) { pxt_pworld_finish(&g_w, n, k); }

/* alpha (no roles), beta and gamma (role worker), each seeing all three up.
 * adv: give each node a linkcut endpoint to publish. */
static void three_up(node **n, bool adv) {
    n[0] = node_new("alpha", NULL);
    n[1] = node_new("beta", "worker");
    n[2] = node_new("gamma", "worker");
    for (int i = 0; i < 3; i++) {
        if (adv) {
            n[i]->silence_ms = 1000;
        }
    }
    if (adv) {
        linkcut_adv(n, 3);
    }
    for (int i = 0; i < 3; i++) {
        node_start(n[i]);
    }
    AWAIT(pxt_pnodes_all_see_up(n, 3, n, 3), 15000, "every node sees every node up");
}

static node *by_name(node **n, int k, const char *name) {
    for (int i = 0; i < k; i++) {
        if (strcmp(n[i]->name, name) == 0) {
            return n[i];
        }
    }
    return NULL;
}

/* ---- the commands ---- */

/* n asks ref for 2*v (timeout ms): true if the right answer came; *at (may
 * be NULL) = the node id of the actor that answered. */
static bool ask_at(node *n, const char *ref, int ms, uint32_t *at) {
    unsigned id = ++g_ask_id;
    char line[256], prefix[32];
    node_cmd(n, NULL, NULL, 0, "ask %u %s %u %d", id, ref, id, ms);
    snprintf(prefix, sizeof prefix, "askr id=%u ", id);
    int rv = pxt_proc_expect(&n->p, prefix, ms + CMD_MS, line, sizeof line);
    if (rv != 0) {
        NODE_FAIL(n, "no answer to ask %u: %s", id, strerror(-rv));
    }
    snprintf(prefix, sizeof prefix, "askq id=%u ", id);
    (void)pxt_proc_expect(&n->p, prefix, 0, NULL, 0);
    if (at != NULL) {
        *at = (uint32_t)pxt_kv_num(line, "at", true, 0);
    }
    return strstr(line, "rc=PX_OK") != NULL && pxt_kv_num(line, "val", false, -1) == 2LL * id;
}

/* n spawns beh by place (px_mesh_spawn): the answer line; ref into ref. */
static void mspawn(node *n, const char *place, const char *beh, char *line, size_t len,
                   char *ref, size_t rlen) {
    node_cmd(n, "mspawn ", line, len, "mspawn %s %s", place, beh);
    if (ref != NULL) {
        cr_assert(pxt_kv(line, "ref", ref, rlen), "%s", line);
    }
}

/* The same, asserting success; the node it landed on into where. */
static void mspawn_ok(node *n, const char *place, const char *beh, char *ref, size_t rlen,
                      char *where, size_t wlen) {
    char line[512];
    mspawn(n, place, beh, line, sizeof line, ref, rlen);
    cr_assert(strstr(line, "rc=PX_OK") != NULL, "%s: mspawn %s %s: %s", n->name, place, beh,
              line);
    if (where != NULL) {
        cr_assert(pxt_kv(line, "node", where, wlen), "%s", line);
    }
}

static void watch(node *n, const char *ref) {
    char line[256], prefix[80];
    snprintf(prefix, sizeof prefix, "watch ref=%s ", ref);
    node_cmd(n, prefix, line, sizeof line, "watch %s", ref);
    cr_assert(strstr(line, "rc=PX_OK") != NULL, "%s: %s", n->name, line);
}

typedef struct terms {
    int n;
    char reason[32], code[32];
} terms;

static terms terms_of(node *n, const char *ref) {
    char line[256], prefix[80];
    snprintf(prefix, sizeof prefix, "terms ref=%s ", ref);
    node_cmd(n, prefix, line, sizeof line, "terms %s", ref);
    terms t = {.n = (int)pxt_kv_num(line, "n", false, -1)};
    cr_assert(t.n >= 0 && pxt_kv(line, "reason", t.reason, sizeof t.reason) &&
                  pxt_kv(line, "code", t.code, sizeof t.code),
              "%s", line);
    return t;
}

/* Waits until n got a Terminated for ref; asserts it got exactly one, with
 * reason and (unless NULL) code. */
static void await_term(node *n, const char *ref, int ms, const char *reason, const char *code) {
    AWAIT(terms_of(n, ref).n >= 1, ms, "%s gets a Terminated for %s", n->name, ref);
    terms t = terms_of(n, ref);
    cr_assert_eq(t.n, 1, "%s: %d Terminated for %s", n->name, t.n, ref);
    cr_assert_str_eq(t.reason, reason, "%s: Terminated(%s, %s) for %s", n->name, t.reason,
                     t.code, ref);
    if (code != NULL) {
        cr_assert_str_eq(t.code, code, "%s: Terminated(%s, %s) for %s", n->name, t.reason,
                         t.code, ref);
    }
}

/* A watch of an actor on another node is registered there asynchronously
 * (through that node's mesh actor), so something that ends the actor right
 * after px_watch returned may overtake it (see the fixed bug at the end).
 * This waits until `to`'s mesh actor has handled what n's mesh sent it so
 * far: a spawn there, whose request follows the watch on the same lane and
 * is handled by the same actor, in order. */
static void barrier(node *n, const node *to) {
    char line[512], place[32];
    snprintf(place, sizeof place, "node:%s", to->name);
    mspawn(n, place, "t.work", line, sizeof line, NULL, 0);
    cr_assert(strstr(line, "rc=PX_OK") != NULL, "%s: barrier to %s: %s", n->name, to->name, line);
}

static void tell(node *n, const char *ref, int tag, int v) {
    char line[128];
    node_cmd(n, "tell ", line, sizeof line, "tell %s %d %d", ref, tag, v);
    cr_assert(strstr(line, "rc=PX_OK") != NULL, "%s: %s", n->name, line);
}

static bool alive(node *n, const char *ref) {
    char line[128], prefix[80];
    snprintf(prefix, sizeof prefix, "alive ref=%s ", ref);
    node_cmd(n, prefix, line, sizeof line, "alive %s", ref);
    return pxt_kv_num(line, "alive", false, 0) == 1;
}

static void supspawn(node *n, const char *kind, char *ref, size_t len) {
    char line[256];
    node_cmd(n, "supspawn ", line, sizeof line, "supspawn %s", kind);
    cr_assert(strstr(line, "rc=PX_OK") != NULL && pxt_kv(line, "ref", ref, len), "%s: %s",
              n->name, line);
}

/* SUP's child spawn (opts: "" or "um=.. arg=.."): the answer line. */
static void child(node *n, const char *sup, const char *id, const char *beh, const char *place,
                  const char *opts, char *line, size_t len) {
    char prefix[80];
    snprintf(prefix, sizeof prefix, "child id=%s ", id);
    node_cmd(n, prefix, line, len, "child %s %s %s %s %s", sup, id, beh, place, opts);
}

static void child_ok(node *n, const char *sup, const char *id, const char *beh,
                     const char *place, const char *opts, char *ref, size_t rlen) {
    char line[256];
    child(n, sup, id, beh, place, opts, line, sizeof line);
    cr_assert(strstr(line, "rc=PX_OK") != NULL && pxt_kv(line, "ref", ref, rlen), "%s: %s",
              n->name, line);
}

typedef struct kid {
    char id[48], node[32], remote[48], state[16];
    unsigned instance, restarts;
} kid;

/* n lists SUP's children into k[] (up to 8): how many. */
static int children(node *n, const char *sup, kid *k) {
    static char line[4096];
    node_cmd(n, "children ", line, sizeof line, "children %s", sup);
    cr_assert(strstr(line, "rc=PX_OK") != NULL, "%s: %s", n->name, line);
    int cnt = (int)pxt_kv_num(line, "n", false, -1);
    cr_assert(cnt >= 0 && cnt <= 8, "%s", line);
    const char *p = strchr(strstr(line, " n=") + 1, ' ');
    p = p != NULL ? p + 1 : "";
    for (int i = 0; i < cnt; i++) {
        int used = 0;
        cr_assert_eq(sscanf(p, "%47[^:]:%31[^:]:%47[^:]:%u:%u:%15[^,]%n", k[i].id, k[i].node,
                            k[i].remote, &k[i].instance, &k[i].restarts, k[i].state, &used),
                     6, "%s", line);
        p += used;
        p += *p == ',';
    }
    return cnt;
}

static kid kid_of(node *n, const char *sup, const char *id) {
    kid k[8];
    int cnt = children(n, sup, k);
    for (int i = 0; i < cnt; i++) {
        if (strcmp(k[i].id, id) == 0) {
            return k[i];
        }
    }
    cr_assert_fail("%s: %s has no child %s", n->name, sup, id);
    return k[0];
}

/* The child runs (on a node, with a remote ref unless local). */
static bool kid_running(node *n, const char *sup, const char *id, kid *out) {
    kid k = kid_of(n, sup, id);
    if (out != NULL) {
        *out = k;
    }
    return strcmp(k.state, "running") == 0 && strcmp(k.node, "-") != 0 &&
           strcmp(k.remote, "0.0/0.0") != 0;
}

typedef struct fails {
    long long n;
    char line[1024];
} fails;

static fails failures(node *n) {
    fails f;
    node_cmd(n, "failures ", f.line, sizeof f.line, "failures");
    f.n = pxt_kv_num(f.line, "n", false, -1);
    cr_assert_geq(f.n, 0, "%s", f.line);
    return f;
}

static void directive(node *n, const char *d) {
    char line[64];
    node_cmd(n, "directive ", line, sizeof line, "directive %s", d);
    cr_assert(strstr(line, "ok") != NULL, "%s", line);
}

static bool whereis_is(node *n, const char *name, const char *ref) {
    char line[256], prefix[160], got[48];
    snprintf(prefix, sizeof prefix, "whereis name=%s ", name);
    node_cmd(n, prefix, line, sizeof line, "whereis %s", name);
    return strstr(line, "rc=PX_OK") != NULL && pxt_kv(line, "ref", got, sizeof got) &&
           strcmp(got, ref) == 0;
}

static void health_of(node *n, long long *fences, int *registered, uint32_t *inc) {
    char line[512];
    node_cmd(n, "health ", line, sizeof line, "health");
    *fences = pxt_kv_num(line, "fences", false, -1);
    *registered = (int)pxt_kv_num(line, "registered", false, -1);
    *inc = (uint32_t)pxt_kv_num(line, "inc", true, 0);
}

/* n's transport link to `to` is up (px_transport_peer_state). */
static bool link_up(node *n, const node *to) {
    char line[256], prefix[64];
    snprintf(prefix, sizeof prefix, "state peer=%s ", to->name);
    node_cmd(n, prefix, line, sizeof line, "state %s", to->name);
    return strstr(line, " st=up") != NULL;
}

static uint32_t ref_node(const char *ref) {
    px_ref r;
    cr_assert_eq(pxt_ref_parse(ref, &r), 0, "%s", ref);
    return r.node;
}

/* ---- 1. sends, asks, watches; a ref through a third node ---- */

MP_TEST(sends_asks_and_watches_cross_nodes_and_a_ref_passed_through_a_third_node_works, 90) {
    node *n[3];
    three_up(n, false);
    char w[48], where[32], line[512];
    mspawn_ok(n[0], "node:beta", "t.work", w, sizeof w, where, sizeof where);
    cr_assert_str_eq(where, "beta");
    cr_assert_eq(ref_node(w), n[1]->id);
    uint32_t at = 0;
    cr_assert(ask_at(n[0], w, 3000, &at), "alpha asks beta's worker");
    cr_assert_eq(at, n[1]->id, "the answer comes from beta");
    cr_assert(ask_at(n[2], w, 3000, &at) && at == n[1]->id, "gamma asks it too");

    /* Sends: 4 actors on alpha send 1..500 each to beta's sink: all
     * arrive, in order per sender. */
    node_cmd(n[0], "sent ", line, sizeof line, "send %s 4 500", n[1]->sink);
    cr_assert(strstr(line, "ok=2000 err=0") != NULL, "%s", line);
    AWAIT((node_cmd(n[1], "sink ", line, sizeof line, "sink"),
           pxt_kv_num(line, "total", false, -1) == 2000),
          5000, "beta's sink gets all 2000");
    cr_assert(strstr(line, "senders=4 ooo=0 min=500 max=500") != NULL, "%s", line);

    /* A ref through a third node: alpha gives beta's fwd a ref to gamma's
     * worker (inside a message, as a plexus.ActorRef); beta asks it and
     * sends the answer back to alpha's asker, whose ref travelled too. */
    char wg[48];
    mspawn_ok(n[0], "node:gamma", "t.work", wg, sizeof wg, where, sizeof where);
    node_cmd(n[0], "relayr id=7 ", line, sizeof line, "relay 7 %s %s 21", n[1]->fwd, wg);
    cr_assert(strstr(line, "rc=PX_OK") != NULL, "%s", line);
    cr_assert_eq(pxt_kv_num(line, "val", false, -1), 42, "%s", line);
    cr_assert_eq((uint32_t)pxt_kv_num(line, "at", true, 0), n[2]->id, "gamma answered: %s",
                 line);

    /* A watch across nodes: gamma watches beta's worker, alpha stops it. */
    watch(n[2], w);
    barrier(n[2], n[1]);
    node_cmd(n[0], "stop ", line, sizeof line, "stop %s", w);
    cr_assert(strstr(line, "rc=PX_OK") != NULL, "%s", line);
    await_term(n[2], w, 5000, "stopped", NULL);
    AWAIT(!alive(n[1], w), 3000);
    cr_assert(!ask_at(n[0], w, 500, NULL), "a stopped actor does not answer");
    finish(n, 3);
}

/* ---- 2. every Terminated reason, across nodes ---- */

MP_TEST(every_terminated_reason_reaches_a_watcher_on_another_node_exactly_once, 90) {
    node *n[3];
    three_up(n, false);
    node *a = n[0], *b = n[1], *g = n[2];
    char line[512], w1[48], w2[48], w3[48], where[32];

    /* normal: beta's worker stops itself */
    mspawn_ok(a, "node:beta", "t.work", w1, sizeof w1, where, sizeof where);
    watch(a, w1);
    barrier(a, b);
    tell(a, w1, TAG_EXIT, 0);
    await_term(a, w1, 5000, "normal", NULL);

    /* stopped: a px_stop from a third node */
    mspawn_ok(a, "node:beta", "t.work", w2, sizeof w2, where, sizeof where);
    watch(a, w2);
    barrier(a, b);
    node_cmd(g, "stop ", line, sizeof line, "stop %s", w2);
    cr_assert(strstr(line, "rc=PX_OK") != NULL, "%s", line);
    await_term(a, w2, 5000, "stopped", NULL);

    /* no such actor: the same ref again, and a ref that never was */
    watch(g, w2);
    await_term(g, w2, 5000, "no_such_actor", NULL);
    px_ref never;
    cr_assert_eq(pxt_ref_parse(w2, &never), 0);
    never.id += 100000;
    char nv[48];
    px_ref_format(never, nv, sizeof nv);
    watch(a, nv);
    await_term(a, nv, 5000, "no_such_actor", NULL);

    /* failure with its code: a supervisor on beta with a local child, and
     * one on alpha with a child on gamma; both decide Stop. */
    char sb[48], cb[48], sa[48], ca[48];
    supspawn(b, "one", sb, sizeof sb);
    directive(b, "stop");
    child_ok(b, sb, "c1", "t.work", "here", "", cb, sizeof cb);
    watch(a, cb);
    barrier(a, b);
    tell(a, cb, TAG_FAIL, 17); /* -17: PX_EPROTO */
    await_term(a, cb, 5000, "failure", "PX_EPROTO");

    supspawn(a, "one", sa, sizeof sa);
    directive(a, "stop");
    child_ok(a, sa, "c2", "t.work", "node:gamma", "", ca, sizeof ca);
    kid k;
    AWAIT(kid_running(a, sa, "c2", &k), 5000, "c2 runs on gamma");
    cr_assert_str_eq(k.node, "gamma");
    watch(b, k.remote); /* beta watches the instance on gamma */
    watch(g, ca);       /* gamma watches the proxy on alpha */
    barrier(b, g);
    barrier(g, a);
    tell(b, ca, TAG_FAIL, 17);
    await_term(b, k.remote, 5000, "failure", "PX_EPROTO");
    await_term(g, ca, 5000, "failure", "PX_EPROTO");
    fails f = failures(a);
    cr_assert(f.n == 1 && strstr(f.line, "id=c2 code=PX_EPROTO origin=gamma") != NULL, "%s",
              f.line);

    /* node down: gamma gets SIGKILL; its lease expires */
    mspawn_ok(a, "node:gamma", "t.work", w3, sizeof w3, where, sizeof where);
    watch(a, w3);
    watch(b, w3);
    AWAIT(ask_at(a, w3, 2000, NULL), 5000);
    int64_t t0 = now_ms();
    pxt_proc_kill(&g->p);
    await_term(a, w3, TTL_MS + 4000, "node_down", "PX_ENODEDOWN");
    await_term(b, w3, 3000, "node_down", "PX_ENODEDOWN");
    fprintf(stderr, "mesh_procs: SIGKILL -> Terminated(node down) on alpha and beta: %lld ms\n",
            (long long)(now_ms() - t0));
    cr_assert(pxt_pnode_sees(a, g, "down", 0));
    /* still exactly one each, once everything settled */
    cr_assert_eq(terms_of(a, w1).n, 1);
    cr_assert_eq(terms_of(a, w2).n, 1);
    cr_assert_eq(terms_of(a, cb).n, 1);
    n[2] = NULL;
    finish(n, 2);
}

/* ---- 3. a node frozen past its TTL ---- */

MP_TEST(a_node_frozen_past_its_ttl_ends_each_watch_once_and_fences_its_own, 90) {
    node *n[3];
    three_up(n, false);
    node *a = n[0], *b = n[1], *g = n[2];
    char wb[48], wa[48], where[32], line[256];
    mspawn_ok(a, "node:beta", "t.work", wb, sizeof wb, where, sizeof where);
    mspawn_ok(a, "node:alpha", "t.work", wa, sizeof wa, where, sizeof where);
    cr_assert_eq(ref_node(wa), a->id);
    watch(a, wb);
    watch(g, wb);
    watch(b, wa); /* beta's watcher, of its first incarnation, watches alpha's worker */
    AWAIT(ask_at(a, wb, 2000, NULL), 5000);
    uint32_t old = b->inc;

    cr_assert_eq(kill(b->p.pid, SIGSTOP), 0);
    int64_t t0 = now_ms();
    AWAIT(pxt_pnode_sees(a, b, "down", 0) && pxt_pnode_sees(g, b, "down", 0), TTL_MS + 4000,
          "the others see the frozen beta down");
    /* Its lease expired: membership says DOWN before beta can come back,
     * so the watchers get node down (not fenced). */
    await_term(a, wb, 3000, "node_down", "PX_ENODEDOWN");
    await_term(g, wb, 3000, "node_down", "PX_ENODEDOWN");
    int64_t down = now_ms() - t0;

    cr_assert_eq(kill(b->p.pid, SIGCONT), 0);
    long long fences = 0;
    int reg = 0;
    uint32_t inc = 0;
    AWAIT((health_of(b, &fences, &reg, &inc), fences >= 1 && reg == 1 && inc != old), 10000,
          "beta fences itself and registers again");
    b->inc = inc;
    AWAIT(pxt_pnodes_all_see_up(n, 3, n, 3), 15000, "everyone sees beta's new incarnation up");
    /* and beta's own links are up again (its membership view lags them by
     * a transport tick: see the fixed bug at the end) */
    AWAIT(link_up(b, a) && link_up(b, g), 5000, "beta's links to alpha and gamma are up");
    /* beta's own watch ended when it fenced itself: once, node fenced. */
    await_term(b, wa, 3000, "node_fenced", "PX_EFENCED");
    fprintf(stderr, "mesh_procs: frozen beta's watchers told node down after %lld ms\n",
            (long long)down);
    /* Exactly one each, also now that beta is back as a new incarnation. */
    cr_assert_eq(terms_of(a, wb).n, 1);
    cr_assert_eq(terms_of(g, wb).n, 1);
    cr_assert_eq(terms_of(b, wa).n, 1);
    /* A new watch of beta's old worker: that incarnation is gone. */
    watch(a, wb);
    AWAIT(terms_of(a, wb).n == 2, 5000);
    terms t = terms_of(a, wb);
    cr_assert_str_eq(t.reason, "node_fenced", "%s", t.code);
    /* beta's new incarnation works across nodes, its watcher too */
    char wb2[48];
    mspawn_ok(a, "node:beta", "t.work", wb2, sizeof wb2, where, sizeof where);
    uint32_t at = 0;
    cr_assert(ask_at(a, wb2, 3000, &at) && at == b->id);
    watch(b, wb2);
    node_cmd(a, "stop ", line, sizeof line, "stop %s", wb2);
    await_term(b, wb2, 5000, "stopped", NULL);
    finish(n, 3);
}

/* ---- 4. remote spawn by placement ---- */

/* A "cands" line: alpha and beta report 300 actors more than gamma. */
static bool loaded(const char *line) {
    long long load[3] = {-1, -1, -1};
    const char *names[3] = {"alpha:", "beta:", "gamma:"};
    for (int i = 0; i < 3; i++) {
        const char *p = strstr(line, names[i]);
        load[i] = p != NULL ? atoll(p + strlen(names[i])) : -1;
    }
    /* 300 more each, less the few children the spawns above put on gamma
     * (and any helper actor a node runs): the margin is not exact */
    return load[2] >= 0 && load[0] >= load[2] + 250 && load[1] >= load[2] + 250;
}

MP_TEST(remote_spawn_by_each_placement_policy_and_an_unknown_behavior_is_a_clear_error, 90) {
    node *n[3];
    three_up(n, false);
    node *a = n[0];
    char r[48], where[32], line[512];
    uint32_t at;
    /* by name */
    mspawn_ok(a, "node:gamma", "t.work", r, sizeof r, where, sizeof where);
    cr_assert_str_eq(where, "gamma");
    cr_assert(ask_at(a, r, 3000, &at) && at == n[2]->id);
    /* round-robin over the three (alpha included): each node once in three */
    int seen = 0;
    for (int i = 0; i < 3; i++) {
        mspawn_ok(a, "rr", "t.work", r, sizeof r, where, sizeof where);
        node *x = by_name(n, 3, where);
        cr_assert_not_null(x, "%s", where);
        cr_assert_eq(ref_node(r), x->id);
        seen |= 1 << (x - g_w.nodes);
    }
    cr_assert_eq(seen, 7, "round-robin: each node once in three spawns");
    /* by role: only beta and gamma are workers, both are used */
    seen = 0;
    for (int i = 0; i < 4; i++) {
        mspawn_ok(a, "role:worker", "t.work", r, sizeof r, where, sizeof where);
        cr_assert(strcmp(where, "beta") == 0 || strcmp(where, "gamma") == 0, "%s", where);
        seen |= strcmp(where, "beta") == 0 ? 1 : 2;
        cr_assert(ask_at(a, r, 3000, &at) && at == px_node_id(where));
    }
    cr_assert_eq(seen, 3, "role: both workers in turn");
    /* least loaded: alpha and beta get 300 more actors each; once their
     * NodeInfo says so, the pick is gamma, every time */
    node_cmd(a, "spawnn ", line, sizeof line, "spawnn 300");
    node_cmd(n[1], "spawnn ", line, sizeof line, "spawnn 300");
    AWAIT((node_cmd(a, "cands ", line, sizeof line, "cands t.work"), loaded(line)), 5000,
          "the loads are published: %s", line);
    node_cmd(a, "place ", line, sizeof line, "place ll t.work");
    cr_assert(strstr(line, "node=gamma") != NULL, "%s", line);
    for (int i = 0; i < 3; i++) {
        mspawn_ok(a, "ll", "t.work", r, sizeof r, where, sizeof where);
        cr_assert_str_eq(where, "gamma", "alpha and beta report 300 more actors");
    }
    /* a placement function (picks beta) */
    mspawn_ok(a, "fn:beta", "t.work", r, sizeof r, where, sizeof where);
    cr_assert_str_eq(where, "beta");
    cr_assert(ask_at(n[2], r, 3000, &at) && at == n[1]->id);
    /* a function that picks nobody */
    mspawn(a, "fn:nobody", "t.work", line, sizeof line, NULL, 0);
    cr_assert(strstr(line, "rc=PX_EUNREACHABLE") != NULL, "%s", line);
    /* an unknown behavior: a clear error, by name and by policy */
    mspawn(a, "node:beta", "no.such", line, sizeof line, NULL, 0);
    cr_assert(strstr(line, "rc=PX_ENOENT") != NULL && strstr(line, "no.such") != NULL, "%s",
              line);
    /* and as a supervised child */
    char sup[48];
    supspawn(a, "one", sup, sizeof sup);
    child(a, sup, "x", "no.such", "node:beta", "", line, sizeof line);
    cr_assert(strstr(line, "rc=PX_ENOENT") != NULL, "%s", line);
    /* an unknown node */
    mspawn(a, "node:nowhere", "t.work", line, sizeof line, NULL, 0);
    cr_assert(strstr(line, "rc=PX_EUNREACHABLE") != NULL, "%s", line);
    finish(n, 3);
}

/* ---- 5. strategies over children on two other nodes ---- */

static void strategy_case(node **n, const char *kind, const unsigned want[3]) {
    node *a = n[0];
    char sup[48], c[3][48];
    const char *ids[3] = {"c1", "c2", "c3"};
    const char *places[3] = {"node:beta", "node:gamma", "node:beta"};
    supspawn(a, kind, sup, sizeof sup);
    for (int i = 0; i < 3; i++) {
        child_ok(a, sup, ids[i], "t.work", places[i], "", c[i], sizeof c[i]);
    }
    kid k[3];
    for (int i = 0; i < 3; i++) {
        AWAIT(kid_running(a, sup, ids[i], &k[i]), 5000, "%s %s runs", kind, ids[i]);
    }
    fails f0 = failures(a);
    tell(a, c[1], TAG_FAIL, 0); /* c2, on gamma, fails */
    AWAIT(kid_of(a, sup, "c2").instance == 2, 5000, "%s: c2 restarted", kind);
    for (int i = 0; i < 3; i++) {
        AWAIT(kid_running(a, sup, ids[i], &k[i]) && k[i].instance == want[i], 5000,
              "%s: %s instance %u (is %u, %s)", kind, ids[i], want[i], k[i].instance,
              k[i].state);
    }
    for (int i = 0; i < 3; i++) { /* they answer, each from its node */
        uint32_t at = 0;
        AWAIT(ask_at(a, c[i], 2000, &at), 5000);
        cr_assert_eq(at, px_node_id(places[i] + 5), "%s: %s answers from %s", kind, ids[i],
                     places[i] + 5);
        cr_assert_eq(kid_of(a, sup, ids[i]).instance, want[i], "%s: %s", kind, ids[i]);
    }
    fails f = failures(a);
    cr_assert_eq(f.n, f0.n + 1, "%s: one failure decided: %s", kind, f.line);
    cr_assert(strstr(f.line, "id=c2 code=PX_EFAIL origin=gamma") != NULL, "%s", f.line);
    char line[128];
    node_cmd(a, "stop ", line, sizeof line, "stop %s", sup);
    for (int i = 0; i < 3; i++) {
        AWAIT(!alive(px_node_id(places[i] + 5) == n[1]->id ? n[1] : n[2], k[i].remote), 5000,
              "%s: %s's instance stops with its supervisor", kind, ids[i]);
    }
}

MP_TEST(one_for_one_all_for_one_and_rest_for_one_work_with_children_on_two_other_nodes, 120) {
    node *n[3];
    three_up(n, false);
    const unsigned one[3] = {1, 2, 1}, all[3] = {2, 2, 2}, rest[3] = {1, 2, 2};
    strategy_case(n, "one", one);
    strategy_case(n, "all", all);
    strategy_case(n, "rest", rest);
    finish(n, 3);
}

/* ---- 6. escalation across three nodes ---- */

MP_TEST(an_escalation_crosses_three_nodes_with_origins_and_causes, 90) {
    node *n[3];
    three_up(n, false);
    node *a = n[0], *b = n[1], *g = n[2];
    char top[48], mid[48];
    supspawn(a, "one", top, sizeof top);
    child_ok(a, top, "mid", "t.sup_mid", "node:beta", "arg=node=gamma", mid, sizeof mid);
    kid km, kl;
    AWAIT(kid_running(a, top, "mid", &km), 5000, "mid runs on beta");
    cr_assert_str_eq(km.node, "beta");
    AWAIT(kid_running(b, km.remote, "leaf", &kl), 5000, "mid's leaf runs on gamma");
    cr_assert_str_eq(kl.node, "gamma");
    uint32_t at = 0;
    cr_assert(ask_at(a, kl.remote, 3000, &at) && at == g->id, "the leaf answers from gamma");
    cr_assert_eq(failures(a).n, 0);
    cr_assert_eq(failures(b).n, 0);

    tell(a, kl.remote, TAG_FAIL, 0); /* the leaf on gamma fails */
    AWAIT(failures(a).n == 1, 5000, "alpha's decider sees the escalation");
    fails fb = failures(b), fa = failures(a);
    cr_assert_eq(fb.n, 1, "%s", fb.line);
    cr_assert(strstr(fb.line, "id=leaf code=PX_EFAIL origin=gamma") != NULL,
              "beta's mid saw its leaf fail on gamma: %s", fb.line);
    cr_assert(strstr(fa.line, "id=mid ") != NULL && strstr(fa.line, "origin=beta ") != NULL,
              "alpha sees mid fail on beta: %s", fa.line);
    cr_assert(strstr(fa.line, "chain=mid@beta:") != NULL &&
                  strstr(fa.line, ">leaf@gamma:PX_EFAIL") != NULL,
              "with the leaf's failure on gamma as its cause: %s", fa.line);
    /* alpha restarts mid (on beta); its new instance starts a new leaf */
    AWAIT(kid_running(a, top, "mid", &km) && km.instance == 2, 5000, "mid restarted");
    cr_assert_str_eq(km.node, "beta");
    kid kl2;
    AWAIT(kid_running(b, km.remote, "leaf", &kl2), 5000, "a new leaf runs");
    cr_assert_str_eq(kl2.node, "gamma");
    AWAIT(ask_at(a, kl2.remote, 2000, &at) && at == g->id, 5000);
    cr_assert(!alive(g, kl.remote) || strcmp(kl.remote, kl2.remote) == 0,
              "the old leaf is gone (or restarted in place)");
    finish(n, 3);
}

/* ---- 7. failover when the child's node gets SIGKILL ---- */

MP_TEST(a_child_whose_node_is_killed_answers_again_from_another_node_within_the_ttl, 90) {
    node *n[3];
    three_up(n, false);
    node *a = n[0];
    char sup[48], px[48], line[256];
    supspawn(a, "one", sup, sizeof sup);
    child_ok(a, sup, "svc", "t.work", "role:worker", "", px, sizeof px);
    kid k;
    AWAIT(kid_running(a, sup, "svc", &k), 5000);
    node *victim = by_name(n, 3, k.node), *other = victim == n[1] ? n[2] : n[1];
    cr_assert(victim == n[1] || victim == n[2], "%s", k.node);
    uint32_t at = 0;
    cr_assert(ask_at(a, px, 2000, &at) && at == victim->id);
    char old[48];
    snprintf(old, sizeof old, "%s", k.remote);
    watch(a, old);

    int64_t t0 = now_ms();
    pxt_proc_kill(&victim->p);
    pxt_cmd(&a->p, a->name, a->log_path, CMD_MS, NULL, NULL, 0, "askuntil %s 20000 200", px);
    int rv = pxt_proc_expect(&a->p, "askuntil ", 25000, line, sizeof line);
    if (rv != 0) {
        NODE_FAIL(a, "no askuntil answer: %s", strerror(-rv));
    }
    cr_assert(strstr(line, "rc=PX_OK") != NULL, "%s", line);
    int64_t took = pxt_kv_num(line, "t_us", false, 0) / 1000 - t0;
    fprintf(stderr, "mesh_procs: failover: the child answered from %s %lld ms after SIGKILL\n",
            other->name, (long long)took);
    cr_assert_eq((uint32_t)pxt_kv_num(line, "at", true, 0), other->id, "%s", line);
    cr_assert_leq(took, TTL_MS + 3000, "failover took %lld ms", (long long)took);
    AWAIT(kid_running(a, sup, "svc", &k), 3000);
    cr_assert_str_eq(k.node, other->name);
    cr_assert_eq(k.instance, 2);
    fails f = failures(a);
    cr_assert_eq(f.n, 1, "%s", f.line);
    cr_assert(strstr(f.line, "code=PX_ENODEDOWN") != NULL, "%s", f.line);
    char want[64];
    snprintf(want, sizeof want, "origin=%s ", victim->name);
    cr_assert(strstr(f.line, want) != NULL, "the failure names the lost node: %s", f.line);
    await_term(a, old, 3000, "node_down", "PX_ENODEDOWN");
    finish(n, 3);
}

/* ---- 8. a partition with placement.unreachable_ms ---- */

#define UM_MS 4000 /* the child's policy; the nodes' link silence is 1 s */

MP_TEST(a_partitioned_child_is_stopped_by_its_node_before_its_parent_restarts_it_elsewhere, 120) {
    node *n[3];
    three_up(n, true);
    node *a = n[0];
    char sup[48], px[48];
    supspawn(a, "one", sup, sizeof sup);
    char opts[32];
    snprintf(opts, sizeof opts, "um=%d", UM_MS);
    child_ok(a, sup, "svc", "t.work", "role:worker", opts, px, sizeof px);
    kid k;
    AWAIT(kid_running(a, sup, "svc", &k), 5000);
    node *x = by_name(n, 3, k.node), *y = x == n[1] ? n[2] : n[1];
    cr_assert(x == n[1] || x == n[2], "%s", k.node);
    char old[48];
    snprintf(old, sizeof old, "%s", k.remote);
    uint32_t at = 0;
    cr_assert(ask_at(a, px, 2000, &at) && at == x->id);
    cr_assert(alive(x, old));

    /* Cut alpha from the child's node; both stay registered in etcd. */
    linkcut_set(g_lc, a, x, true);
    int64_t t0 = now_ms(), old_dead = -1, new_alive = -1, polls = 0;
    char nref[48] = "";
    while (now_ms() - t0 < UM_MS + 8000 && (old_dead < 0 || new_alive < 0)) {
        bool o = alive(x, old);
        kid c = kid_of(a, sup, "svc");
        bool nw = strcmp(c.node, y->name) == 0 && strcmp(c.remote, "0.0/0.0") != 0 &&
                  alive(y, c.remote);
        bool o2 = alive(x, old); /* again: the old one may have stopped meanwhile */
        cr_assert(!(o && o2 && nw),
                  "two live instances %lld ms after the cut: %s on %s and %s on %s",
                  (long long)(now_ms() - t0), old, x->name, c.remote, y->name);
        if (!o && old_dead < 0) {
            old_dead = now_ms() - t0;
        }
        if (nw && new_alive < 0) {
            new_alive = now_ms() - t0;
            snprintf(nref, sizeof nref, "%s", c.remote);
        }
        polls++;
        pxt_nap_ms(5);
    }
    fprintf(stderr,
            "mesh_procs: partition (policy %d ms): the old instance stopped after %lld ms, the "
            "new one ran after %lld ms (%lld polls)\n",
            UM_MS, (long long)old_dead, (long long)new_alive, (long long)polls);
    cr_assert_geq(old_dead, 0, "the child's node never stopped its instance");
    cr_assert_geq(new_alive, 0, "the parent never restarted the child elsewhere");
    cr_assert_lt(old_dead, new_alive, "the old instance stops first");
    cr_assert_geq(old_dead, UM_MS / 2 - 1000, "stopped at about half the policy, not at once");
    cr_assert_geq(new_alive, UM_MS - 500, "restarted only after the full policy");
    /* the parent saw the child lost, and restarted it once, on y */
    fails f = failures(a);
    cr_assert(f.n == 1 && strstr(f.line, "code=PX_EUNREACHABLE") != NULL, "%s", f.line);
    cr_assert(ask_at(a, px, 2000, &at) && at == y->id, "the proxy reaches the new instance");
    k = kid_of(a, sup, "svc");
    cr_assert(k.instance == 2 && k.restarts == 1 && strcmp(k.node, y->name) == 0,
              "instance %u restarts %u on %s", k.instance, k.restarts, k.node);

    /* Healed: alpha sees x up again; still one instance, on y. */
    linkcut_set(g_lc, a, x, false);
    AWAIT(pxt_pnode_sees(a, x, "up", 0) && pxt_pnode_sees(x, a, "up", 0), 10000, "the partition heals");
    cr_assert(!alive(x, old), "the old instance stays stopped");
    cr_assert(ask_at(a, px, 2000, &at) && at == y->id);
    k = kid_of(a, sup, "svc");
    cr_assert(k.instance == 2 && strcmp(k.remote, nref) == 0, "%s %u", k.remote, k.instance);
    finish(n, 3);
}

/* ---- 9. a global name follows its service ---- */

/* A supervised service placed by role registers a global name: itself from
 * its init (opts "arg=name=NAME"), or through placement.global_name
 * ("gname=NAME"). Its node gets SIGKILL: the name goes with that node's
 * lease, the restarted instance takes it again, and whereis on the other
 * nodes finds the new instance. */
static void name_follows(const char *name, const char *opts) {
    node *n[3];
    three_up(n, false);
    node *a = n[0];
    char sup[48], px[48], line[256];
    supspawn(a, "one", sup, sizeof sup);
    child_ok(a, sup, "svc", "t.work", "role:worker", opts, px, sizeof px);
    kid k;
    AWAIT(kid_running(a, sup, "svc", &k), 5000);
    node *x = by_name(n, 3, k.node), *y = x == n[1] ? n[2] : n[1];
    cr_assert(x == n[1] || x == n[2], "%s", k.node);
    char old[48];
    snprintf(old, sizeof old, "%s", k.remote);
    AWAIT(whereis_is(a, name, old) && whereis_is(y, name, old), 5000,
          "the service on %s is registered as %s", x->name, name);
    uint32_t at = 0;
    cr_assert(ask_at(a, old, 2000, &at) && at == x->id);

    int64_t t0 = now_ms();
    pxt_proc_kill(&x->p);
    AWAIT(kid_running(a, sup, "svc", &k) && strcmp(k.node, y->name) == 0, TTL_MS + 5000,
          "svc restarted on %s", y->name);
    cr_assert_str_neq(k.remote, old);
    AWAIT(whereis_is(a, name, k.remote) && whereis_is(y, name, k.remote), 5000,
          "%s names the new instance everywhere", name);
    fprintf(stderr, "mesh_procs: %s named the instance on %s %lld ms after SIGKILL (%s)\n",
            name, y->name, (long long)(now_ms() - t0), opts);
    cr_assert(ask_at(a, k.remote, 2000, &at) && at == y->id, "found by name, it answers");
    /* ...and the node may register the restarted child under another name */
    node_cmd(y, "greg ", line, sizeof line, "greg svc.alt %s", k.remote);
    cr_assert(strstr(line, "rc=PX_OK") != NULL, "%s", line);
    AWAIT(whereis_is(a, "svc.alt", k.remote), 5000);
    finish(n, 3);
}

MP_TEST(a_global_name_registered_from_init_follows_its_service_through_a_failover, 90) {
    name_follows("svc.init", "arg=name=svc.init");
}

MP_TEST(a_placement_global_name_follows_its_service_through_a_failover, 90) {
    name_follows("svc.placed", "gname=svc.placed");
}

/* ---- bugs these tests found in cluster/src/mesh.c (fixed) ---- */

/* Was a bug (cluster/src/mesh.c, place(): the rv chain after "if (n == 0)"):
 * a behavior that no node has gives PX_ENOENT only for PX_PLACE_NODE; with
 * round-robin, least-loaded, role or a function it gives PX_EUNREACHABLE,
 * although mesh.h says px_mesh_spawn answers PX_ENOENT when "the behavior
 * is known on no eligible node" (and supervisor.h says the same of
 * px_spawn_child: "PX_ENOENT (unknown behavior; for a child placed
 * elsewhere: on no eligible node)"). Every node is up and reachable here. */
MP_TEST(an_unknown_behavior_by_policy_is_enoent_not_eunreachable, 60) {
    node *n[3];
    three_up(n, false);
    const char *places[] = {"rr", "ll", "role:worker"};
    char line[512], sup[48];
    for (int i = 0; i < 3; i++) {
        mspawn(n[0], places[i], "no.such", line, sizeof line, NULL, 0);
        cr_assert(strstr(line, "rc=PX_ENOENT") != NULL && strstr(line, "no.such") != NULL,
                  "mspawn %s no.such: %s", places[i], line);
    }
    supspawn(n[0], "one", sup, sizeof sup);
    child(n[0], sup, "x", "no.such", "role:worker", "", line, sizeof line);
    cr_assert(strstr(line, "rc=PX_ENOENT") != NULL, "child by role: %s", line);
    finish(n, 3);
}

/* Was a bug (cluster/src/mesh.c, place(): no case for PX_PLACE_HERE, which
 * falls into the round-robin "else" branch): px_mesh_spawn (and
 * px_mesh_place) with policy PX_PLACE_HERE — "this node (the default)" in
 * supervisor.h, and what a zeroed px_placement means — picks among all
 * eligible nodes in turn, so the actor is started on another node two
 * times in three here. */
MP_TEST(mesh_spawn_with_placement_here_starts_the_actor_on_this_node, 60) {
    node *n[3];
    three_up(n, false);
    char r[48], where[32];
    for (int i = 0; i < 3; i++) {
        mspawn_ok(n[0], "here", "t.work", r, sizeof r, where, sizeof where);
        cr_assert_str_eq(where, "alpha", "spawn %d with PX_PLACE_HERE landed on %s", i, where);
    }
    finish(n, 3);
}

/* Was a bug (cluster/src/mesh.c, place(), PX_PLACE_LEAST_LOADED: "ties go
 * round" says the comment, but `pick` starts at 0 and only a strictly
 * smaller load replaces it, so a tie always goes to the first eligible
 * candidate): with every node reporting the same load, a burst of
 * least-loaded spawns (faster than the loads are published again, once a
 * lease tick) all land on one node. */
MP_TEST(least_loaded_ties_go_round, 60) {
    node *n[3];
    three_up(n, false);
    char line[512], r[48], where[3][32];
    node_cmd(n[0], "cands ", line, sizeof line, "cands t.work");
    long long load[3];
    for (int i = 0; i < 3; i++) {
        char key[24];
        snprintf(key, sizeof key, "%s:", n[i]->name);
        const char *p = strstr(line, key);
        cr_assert_not_null(p, "%s", line);
        load[i] = atoll(p + strlen(key));
    }
    if (load[0] != load[1] || load[1] != load[2]) {
        cr_skip_test("the nodes do not report equal loads: %s", line);
    }
    for (int i = 0; i < 3; i++) {
        mspawn_ok(n[0], "ll", "t.work", r, sizeof r, where[i], sizeof where[i]);
    }
    cr_assert(strcmp(where[0], where[1]) != 0 || strcmp(where[1], where[2]) != 0,
              "three least-loaded spawns over equal loads (%s) all went to %s", line, where[0]);
    finish(n, 3);
}

/* Was a bug (cluster/src/mesh.c, on_spawn: the result of
 * sys_to(..., PLEXUS__SYS_OP__SYS_SPAWN_REPLY, ...) is only acted on for a
 * hosted child; transport/src/link.c, px_transport_send_sys fails at once
 * with PX_EUNREACHABLE while the link is not up): a node that fenced itself
 * and registered again redials all its links; the others re-add it and dial
 * it at once, so for ~50-150 ms its peers' links to it are up while its own
 * links to them are still connecting. A spawn request that arrives in that
 * window is served (the actor starts) but its SpawnReply is dropped: the
 * caller's px_mesh_spawn waits out its whole timeout (PX_ETIMEDOUT) and the
 * actor is left running on that node, known to nobody. For a child placed
 * there by a supervisor, the hosted child is stopped but the proxy's START
 * is never answered: the proxy stays RESTARTING until that node is lost.
 * Here: beta is frozen past its TTL, resumed, and alpha spawns on it as
 * soon as it sees beta's new incarnation up; each try must succeed (it
 * timed out in about one try in three). */
/* Freezes beta past its TTL, resumes it, and returns as soon as alpha
 * sees beta's new incarnation up. */
static void refreeze(node *a, node *b) {
    uint32_t old = b->inc;
    cr_assert_eq(kill(b->p.pid, SIGSTOP), 0);
    AWAIT(pxt_pnode_sees(a, b, "down", 0), TTL_MS + 4000, "alpha sees the frozen beta down");
    cr_assert_eq(kill(b->p.pid, SIGCONT), 0);
    long long fences = 0;
    int reg = 0;
    uint32_t inc = 0;
    AWAIT((health_of(b, &fences, &reg, &inc), reg == 1 && inc != old), 10000,
          "beta registers again");
    b->inc = inc;
    AWAIT(pxt_pnode_sees(a, b, "up", inc), 5000, "alpha sees beta's new incarnation up");
}

MP_TEST(a_spawn_on_a_node_that_just_rejoined_is_answered, 120) {
    node *n[3];
    three_up(n, false);
    node *a = n[0], *b = n[1];
    char line[512];
    for (int it = 0; it < 4; it++) {
        refreeze(a, b);
        int64_t t0 = now_ms();
        mspawn(a, "node:beta", "t.work", line, sizeof line, NULL, 0);
        cr_assert(strstr(line, "rc=PX_OK") != NULL,
                  "try %d: a spawn on beta right after it rejoined: %s after %lld ms", it, line,
                  (long long)(now_ms() - t0));
    }
    finish(n, 3);
}

/* The same bug seen from a supervisor: the START of a child placed on the
 * node that just rejoined is never answered, so the child never runs (its
 * listing shows no node and no instance ref for good). */
MP_TEST(a_child_placed_on_a_node_that_just_rejoined_starts, 120) {
    node *n[3];
    three_up(n, false);
    node *a = n[0], *b = n[1];
    char sup[48], ref[48], id[8];
    supspawn(a, "one", sup, sizeof sup);
    for (int it = 0; it < 4; it++) {
        refreeze(a, b);
        snprintf(id, sizeof id, "c%d", it);
        /* temporary: when the next freeze loses beta, this one just ends
         * (a permanent child placed on a down node would burn through the
         * supervisor's restart limit) */
        child_ok(a, sup, id, "t.work", "node:beta", "restart=temporary", ref, sizeof ref);
        AWAIT(kid_running(a, sup, id, NULL), 5000,
              "try %d: a child placed on beta right after it rejoined runs there", it);
    }
    finish(n, 3);
}

/* Was a bug (cluster/src/mesh.c, r_watch: the SYS_WATCH goes on the CONTROL
 * lane, and handle_sys hands it to px_system_watch_for only in the target
 * node's mesh actor's turn — one more mailbox than the user messages, which
 * the transport delivers to the target directly from its NORMAL lane): an
 * actor that watches an actor on another node and then sends it a message
 * that ends it may see the actor end before its watch is registered there,
 * and gets Terminated(no such actor) — "there was no such actor when the
 * watch was made" (supervisor.h) — instead of the real reason. Between one
 * sender and one target, the watch and the message after it should stay in
 * order (Erlang's monitor/message guarantee). Seen 3 times in 40 here
 * (Debug), more often under ASan. */
MP_TEST(a_remote_watch_followed_by_a_stop_message_gets_the_real_reason, 90) {
    node *n[3];
    three_up(n, false);
    node *a = n[0];
    char w[48], where[32], line[256], prefix[80];
    int wrong = 0;
    char first[256] = "";
    for (int i = 0; i < 40; i++) {
        mspawn_ok(a, "node:beta", "t.work", w, sizeof w, where, sizeof where);
        snprintf(prefix, sizeof prefix, "watch ref=%s ", w);
        /* the watcher watches w and then, in the same turn, tells it to stop */
        node_cmd(a, prefix, line, sizeof line, "watchtell %s %d 0", w, TAG_EXIT);
        cr_assert(strstr(line, "rc=PX_OK") != NULL, "%s", line);
        AWAIT(terms_of(a, w).n == 1, 5000);
        terms t = terms_of(a, w);
        if (strcmp(t.reason, "normal") != 0 && wrong++ == 0) {
            snprintf(first, sizeof first, "try %d: Terminated(%s, %s)", i, t.reason, t.code);
        }
    }
    cr_assert_eq(wrong, 0, "%d of 40 watches got the wrong reason; first: %s", wrong, first);
    finish(n, 3);
}
