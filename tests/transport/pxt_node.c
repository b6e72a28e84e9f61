/*
 * pxt_node.c — one plexus node as its own OS process, driven line by line
 * by the multi-process tests (tests/transport/test_multiproc.c,
 * tests/cluster/test_scenarios.c, tests/cluster/test_mesh_procs.c) and the
 * cluster and mesh benchmarks (tools/bench/bench_cluster.c, bench_mesh.c).
 *
 *   pxt_node --name N --listen tcp://127.0.0.1:P --identity PATH --secret PATH
 *            [--peer NAME=ADDR=PUBKEY]... [--heartbeat MS] [--unreachable MS]
 *            [--reconnect-max MS] [--workers N] [--log LEVEL]
 *            [--etcd URL [--cluster NAME] [--ttl S] [--roles R1,R2]
 *             [--advertise ADDR]]
 *
 * The identity file is created on first start. With --etcd the node is
 * also a cluster member (plexus/cluster.h): once the transport runs, a
 * px_cluster starts with the system and the transport attached (links
 * follow membership; --peer stays allowed), cluster NAME (default
 * "default"), lease TTL S (default 2), the roles given, the address ADDR
 * published for the others to dial (default the listen address: a test
 * puts a proxy there to cut links) and etcd timeouts for tests (requests
 * 1 s, connects 300 ms, watch retries at most 200 ms apart); then the mesh
 * (plexus/mesh.h) starts on top, with the test behaviors below registered
 * before the cluster publishes them.
 * After the transport (and the cluster) start the node prints one line on
 * stdout:
 *   ready name=N addr=tcp://... pk=<base64> node=<hex> inc=<hex>
 *         sink=<ref> echo=<ref> mute=<ref> fwd=<ref> [cluster=1]
 * (refs as px_ref_format prints them) and then reads commands on stdin,
 * answering each with one line:
 *   send REF K N     K sender actors each send u64 1..N (tag 1) to REF;
 *                    when all are done: "sent ok=.. err=.. first=PX_.."
 *   send1 REF V      one px_system_send of u64 V: "send1 rc=PX_.. us=.."
 *   ask ID REF V MS  an asker actor px_asks REF with V, timeout MS: "askq
 *                    id=ID ok" once the ask is out, then "askr id=ID rc=PX_..
 *                    val=.. ms=.. at=<hex> tag=.." (at: the node of the
 *                    reply's sender; only askr, at once, if px_ask failed)
 *   sink             "sink total=.. senders=.. ooo=.. min=.. max=.."
 *   state PEER       "state peer=.. rc=PX_.. st=up|connecting|unreachable|gone inc=<hex>"
 *   stats            "stats handshakes=.. refused=.. bad_frames=.. ..."
 *   quit (or EOF)    leaves the cluster (gracefully), stops the transport
 *                    and the system, prints "bye", exits 0
 * Cluster commands (without --etcd, or after leave, each answers its own
 * word with rc=PX_ECLOSED):
 *   members          "members n=K name:state:inc,..." (every member seen,
 *                    any state; inc in hex)
 *   member NAME      "member name=.. rc=PX_.. state=.. inc=<hex>"
 *   audit NAME       the audit ring's entries about NAME, oldest first:
 *                    "audit name=.. n=K states=up,down,.. incs=<hex>,..
 *                    causes=<cause>|<cause>" (spaces in causes become '_')
 *   health           "health registered=0|1 fenced=0|1 inc=<hex> fences=N
 *                    sysinc=<hex> keepalives=N etcd_down=0|1 holding=0|1"
 *                    (sysinc: px_system_node_inc)
 *   register NAME    spawns an echo actor and px_register_global(NAME, it):
 *                    "register name=.. rc=PX_.. ref=<ref> owner=<ref>"
 *   whereis NAME     "whereis name=.. rc=PX_.. ref=<ref>"
 *   spawn            a new echo actor of the current incarnation (fencing
 *                    cuts the older ones off): "spawn rc=PX_.. ref=<ref>"
 *   etcdstats        "etcdstats compacted=N watch_errors=N": notices of the
 *                    membership watch — errors, and resyncs because its
 *                    revision was compacted — counted from the etcd
 *                    client's DEBUG log (cluster.h does not expose the
 *                    client's px_etcd_stats)
 *   leave            px_mesh_stop, px_cluster_stop(c, true): "left"
 * Mesh commands (same rule without a cluster). PLACE is here, node:NAME,
 * rr, ll, role:ROLE or fn:NAME (a placement function that picks NAME among
 * the eligible nodes, none if it is not one):
 *   tell REF TAG V   px_system_send of u64 V under TAG: "tell rc=PX_.."
 *                    (to a t.work: TAG 666 fails it with code -V, or
 *                    PX_EFAIL for V 0; TAG 777 stops it normally)
 *   stop REF         px_stop (any node): "stop rc=PX_.."
 *   alive REF        px_is_alive here: "alive ref=.. alive=0|1"
 *   watch REF        the watcher actor px_watches REF: "watch ref=.. rc=PX_..";
 *                    each Terminated it gets is printed ("term ref=..
 *                    reason=<name> code=PX_..") and counted per ref
 *   watchtell REF TAG V  the same, and in the same turn the watcher sends
 *                    REF u64 V under TAG (after its px_watch)
 *   terms REF        "terms ref=.. n=K reason=<last> code=PX_.." (K
 *                    Terminated received for REF so far)
 *   relay ID VIA TARGET V   a ref passed through a third node: the fwd
 *                    actor VIA gets TARGET (and the asker's ref) inside a
 *                    message, asks TARGET for V and sends the answer back:
 *                    "relayr id=ID rc=PX_.. val=.. at=<hex>"
 *   mspawn PLACE BEH [ARG]  px_mesh_spawn (timeout 5 s): "mspawn rc=PX_..
 *                    ref=.. node=NAME why=<reason, '_' for spaces>"
 *   place PLACE BEH  px_mesh_place: "place rc=PX_.. node=NAME"
 *   cands BEH        the nodes a placement may pick for BEH now, with the
 *                    load each reported: "cands rc=PX_.. node:actors:depth:local,.."
 *   supspawn KIND [ARG]  a top-level supervisor: KIND one (t.sup,
 *                    OneForOne), all (t.sup_all), rest (t.sup_rest) or mid
 *                    (t.sup_mid): "supspawn rc=PX_.. ref=.."
 *   child SUP ID BEH PLACE [um=MS] [x=1] [gname=NAME]
 *         [restart=transient|temporary] [max=N] [win=MS] [arg=TEXT]
 *                    SUP's px_spawn_child (um: placement.unreachable_ms, x:
 *                    exclude_self, gname: placement.global_name): "child id=..
 *                    rc=PX_.. ref=<its ref here (a proxy if placed elsewhere)>"
 *   children SUP     SUP's px_children: "children rc=PX_.. n=K
 *                    id:node:remote:instance:restarts:state,..." (node "-"
 *                    while none; remote nil for a local child)
 *   directive D      what every t.sup* decider of this process answers from
 *                    now on (resume, restart, stop, escalate; t.sup_mid
 *                    always escalates): "directive ok"
 *   failures         the failures the deciders of this process saw: "failures
 *                    n=K id=.. code=PX_.. origin=NODE chain=id@node:PX_..>.."
 *                    (the last one; chain follows its causes)
 *   greg NAME REF    px_register_global(NAME, REF): "greg name=.. rc=PX_..
 *                    owner=.."
 *   mstats           "mstats watches=.. proxies=.. hosted=.. inits=.. ..."
 *                    (px_mesh_stats and t.work inits)
 * For benchmarks:
 *   spawnn N         N more echo actors here, and a lister actor that
 *                    answers an ask with all their refs: "spawnn rc=PX_..
 *                    n=K lister=<ref>"
 *   watchall LISTER  the fan actor asks LISTER for its refs and watches
 *                    each: "watchall n=K ok=K rc=PX_.."
 *   fanstat          "fanstat n=K first_us=T last_us=T down_us=T": the
 *                    Terminated the fan actor got, when the first and last
 *                    came and when membership last said a node was down
 *                    (CLOCK_MONOTONIC in us: comparable across processes)
 *   askbench REF N   N asks in a row from one actor: "askbench n=.. ok=..
 *                    p50_us=.. p99_us=.. max_us=.."
 *   askuntil REF MS PER  asks REF (each with timeout PER ms) until one is
 *                    answered, for up to MS: "askuntil rc=PX_.. at=<hex>
 *                    tries=.. t_us=T" (T: CLOCK_MONOTONIC of the answer)
 *   spawnbench NODE BEH N   N px_mesh_spawn on NODE in a row (then stops
 *                    them): "spawnbench n=.. ok=.. p50_us=.. min_us=.. max_us=.."
 * Test behaviors (every node): t.work replies to u64 V with 2*V under tag
 * = its node id, fails on tag 666, stops itself on tag 777, and with a
 * start argument "name=NAME" registers itself globally from init (printing
 * "wreg name=.. rc=PX_.. ref=.."); t.sup, t.sup_all, t.sup_rest answer the
 * child / children requests and decide by `directive`, recording each
 * failure (with origin node and cause chain); t.sup_mid also starts, in
 * init, a child "leaf" (t.work) placed by its start argument
 * ("node=NAME" or "role=ROLE") and escalates every failure.
 * The asker, the watcher and the fan actor belong to an incarnation: after
 * a fence the next command spawns new ones. The sink counts u64 messages
 * per sender and counts a value that is not the sender's previous one plus
 * one as out of order (ooo). echo replies with 2*V; mute never replies. The
 * log (px_log_stderr) goes to stderr. Lines on stdout are written whole
 * under one lock (actors print askr and the like).
 */
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <plexus/cluster.h>
#include <plexus/mesh.h>
#include <plexus/plexus.h>
#include <plexus/transport.h>

#include "plexus/plexus.pb-c.h"

#define TAG_SEQ 1u
#define TAG_REPLY 2u
#define TAG_GO 3u
#define TAG_ASK 4u
#define TAG_RELAYED 61u
#define MAX_PEERS 8
#define SINK_SENDERS 64

static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;

static void out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void out(const char *fmt, ...) {
    pthread_mutex_lock(&out_mu);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
    pthread_mutex_unlock(&out_mu);
}

static int64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int parse_ref(const char *s, px_ref *r) {
    unsigned node, inc, id, ainc;
    int used = 0;
    if (sscanf(s, "%x.%x/%u.%u%n", &node, &inc, &id, &ainc, &used) != 4 || s[used] != '\0') {
        return -1;
    }
    *r = (px_ref){node, inc, id, ainc};
    return 0;
}

/* ---- sink: per-sender order and counts ---- */

static struct {
    pthread_mutex_t mu;
    size_t n;
    struct {
        px_ref from;
        uint64_t count, last;
    } s[SINK_SENDERS];
    uint64_t total, ooo, overflow;
} g_sink = {.mu = PTHREAD_MUTEX_INITIALIZER};

static px_err sink_receive(px_ctx *ctx, px_msg *m) {
    (void)ctx;
    if (px_msg_kind_of(m) != PX_MSG_BYTES || px_msg_tag(m) != TAG_SEQ) {
        return PX_OK;
    }
    px_ref from = px_msg_sender(m);
    uint64_t v = px_msg_get_u64(m);
    pthread_mutex_lock(&g_sink.mu);
    g_sink.total++;
    size_t i = 0;
    while (i < g_sink.n && !px_ref_eq(g_sink.s[i].from, from)) {
        i++;
    }
    if (i == g_sink.n) {
        if (g_sink.n == SINK_SENDERS) {
            g_sink.overflow++;
            pthread_mutex_unlock(&g_sink.mu);
            return PX_OK;
        }
        g_sink.s[g_sink.n++].from = from;
    }
    if (v != g_sink.s[i].last + 1) {
        g_sink.ooo++;
    }
    g_sink.s[i].last = v;
    g_sink.s[i].count++;
    pthread_mutex_unlock(&g_sink.mu);
    return PX_OK;
}
static const px_behavior sink_b = {.name = "pxt.sink", .receive = sink_receive};

/* ---- echo and mute ---- */

static px_err echo_receive(px_ctx *ctx, px_msg *m) {
    px_msg *r = NULL;
    if (px_msg_u64(&r, TAG_REPLY, px_msg_get_u64(m) * 2) != PX_OK) {
        return PX_OK;
    }
    if (px_reply(ctx, m, &r) != PX_OK) {
        px_msg_free(r);
    }
    return PX_OK;
}
static const px_behavior echo_b = {.name = "pxt.echo", .receive = echo_receive};

static px_err mute_receive(px_ctx *ctx, px_msg *m) {
    (void)ctx;
    (void)m;
    return PX_OK;
}
static const px_behavior mute_b = {.name = "pxt.mute", .receive = mute_receive};

/* ---- senders: K actors, each sends 1..n to one target ---- */

typedef struct send_job {
    px_ref to;
    uint64_t n;
    atomic_uint_least64_t ok, err;
    atomic_int first; /* first error (px_err), 0 = none */
    atomic_int done;  /* senders finished; the last access of each sender */
} send_job;

static px_err sender_init(px_ctx *ctx, const px_msg *arg) {
    px_set_state(ctx, (void *)(uintptr_t)px_msg_get_u64(arg));
    return PX_OK;
}

static px_err sender_receive(px_ctx *ctx, px_msg *m) {
    send_job *j = px_state(ctx);
    if (px_msg_tag(m) != TAG_GO) {
        return PX_OK;
    }
    for (uint64_t i = 1; i <= j->n; i++) {
        px_msg *x = NULL;
        px_err e = px_msg_u64(&x, TAG_SEQ, i);
        if (e == PX_OK) {
            e = px_send(ctx, j->to, &x);
        }
        if (e == PX_OK) {
            atomic_fetch_add(&j->ok, 1);
        } else {
            px_msg_free(x);
            atomic_fetch_add(&j->err, 1);
            int zero = 0;
            atomic_compare_exchange_strong(&j->first, &zero, (int)e);
        }
    }
    px_stop_self(ctx);
    atomic_fetch_add(&j->done, 1);
    return PX_OK;
}
static const px_behavior sender_b = {.name = "pxt.sender", .init = sender_init,
                                     .receive = sender_receive};

/* A relay's answer, from the fwd actor back to the asker (TAG_RELAYED). */
typedef struct relay_ans {
    uint32_t id;
    int32_t rc;
    uint64_t val;
    uint32_t at; /* node of the actor that answered the fwd */
} relay_ans;

/* ---- the asker: px_ask on request, prints the outcome ---- */

typedef struct ask_req {
    uint32_t id, timeout_ms;
    uint64_t value;
    px_ref to;
} ask_req;

#define ASK_PENDING 64
typedef struct asker {
    struct {
        uint64_t corr;
        uint32_t id;
        int64_t t0_us;
    } p[ASK_PENDING];
} asker;

static px_err asker_init(px_ctx *ctx, const px_msg *arg) {
    (void)arg;
    asker *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        return PX_ENOMEM;
    }
    px_set_state(ctx, a);
    return PX_OK;
}

static void asker_stop(px_ctx *ctx) { free(px_state(ctx)); }

static int asker_take(asker *a, uint64_t corr, uint32_t *id, int64_t *t0) {
    for (int i = 0; i < ASK_PENDING; i++) {
        if (a->p[i].corr == corr && corr != 0) {
            *id = a->p[i].id;
            *t0 = a->p[i].t0_us;
            a->p[i].corr = 0;
            return 0;
        }
    }
    return -1;
}

static px_err asker_receive(px_ctx *ctx, px_msg *m) {
    asker *a = px_state(ctx);
    uint32_t id;
    int64_t t0;
    if (px_msg_kind_of(m) == PX_MSG_ASK_TIMEOUT) {
        if (asker_take(a, px_msg_corr(m), &id, &t0) == 0) {
            out("askr id=%u rc=%s val=0 ms=%lld at=0 tag=0", id, px_errname(PX_ETIMEDOUT),
                (long long)((now_us() - t0) / 1000));
        }
        return PX_OK;
    }
    if (px_msg_kind_of(m) == PX_MSG_UNDELIVERED) {
        px_err code = PX_OK;
        (void)px_msg_undelivered(m, NULL, &code);
        if (asker_take(a, px_msg_corr(m), &id, &t0) == 0) {
            out("askr id=%u rc=%s val=0 ms=%lld at=0 tag=0", id, px_errname(code),
                (long long)((now_us() - t0) / 1000));
        }
        return PX_OK;
    }
    if (px_msg_is_reply(m)) {
        if (asker_take(a, px_msg_corr(m), &id, &t0) == 0) {
            out("askr id=%u rc=%s val=%llu ms=%lld at=%x tag=%u", id, px_errname(PX_OK),
                (unsigned long long)px_msg_get_u64(m), (long long)((now_us() - t0) / 1000),
                px_msg_sender(m).node, px_msg_tag(m));
        }
        return PX_OK;
    }
    if (px_msg_tag(m) == TAG_RELAYED) {
        relay_ans ra;
        size_t rlen = 0;
        const void *rd = px_msg_data(m, &rlen);
        if (rlen == sizeof(ra)) {
            memcpy(&ra, rd, sizeof(ra));
            out("relayr id=%u rc=%s val=%llu at=%x", ra.id, px_errname((px_err)ra.rc),
                (unsigned long long)ra.val, ra.at);
        }
        return PX_OK;
    }
    if (px_msg_tag(m) != TAG_ASK) {
        return PX_OK;
    }
    size_t len = 0;
    const ask_req *rq = px_msg_data(m, &len);
    if (len != sizeof(*rq)) {
        return PX_OK;
    }
    int slot = -1;
    for (int i = 0; i < ASK_PENDING && slot < 0; i++) {
        if (a->p[i].corr == 0) {
            slot = i;
        }
    }
    int64_t t = now_us();
    px_msg *q = NULL;
    px_err e = slot < 0 ? PX_ELIMIT : px_msg_u64(&q, TAG_SEQ, rq->value);
    uint64_t corr = 0;
    if (e == PX_OK) {
        e = px_ask(ctx, rq->to, &q, rq->timeout_ms, &corr);
    }
    if (e != PX_OK) {
        px_msg_free(q);
        out("askr id=%u rc=%s val=0 ms=%lld at=0 tag=0", rq->id, px_errname(e),
            (long long)((now_us() - t) / 1000));
        return PX_OK;
    }
    a->p[slot].corr = corr;
    a->p[slot].id = rq->id;
    a->p[slot].t0_us = t;
    out("askq id=%u ok", rq->id);
    return PX_OK;
}
static const px_behavior asker_b = {.name = "pxt.asker", .init = asker_init,
                                    .receive = asker_receive, .stop = asker_stop};

/* ---- mesh test behaviors ---- */

#define TAG_FAIL 666u
#define TAG_EXIT 777u
#define TAG_SPAWN 50u
#define TAG_LIST 51u
#define TAG_RELAY 60u
#define TAG_WATCH 70u
#define TAG_FAN 80u
#define TAG_LISTREFS 81u
#define TAG_BENCH 90u
#define TAG_RETRY 92u
#define MAX_CHILDREN 16

static _Atomic(px_cluster *) g_cluster; /* for t.work's init: global names */
static _Atomic int g_directive = PX_DIRECTIVE_RESTART;
static atomic_uint_least64_t g_work_inits;

/* Strings that placements point at for as long as the process lives
 * (a proxy keeps its placement's fn_arg: it must outlive every restart). */
static struct {
    pthread_mutex_t mu;
    char *s[256];
    size_t n;
} g_intern = {.mu = PTHREAD_MUTEX_INITIALIZER};

static const char *intern(const char *s) {
    const char *r = NULL;
    pthread_mutex_lock(&g_intern.mu);
    for (size_t i = 0; i < g_intern.n && r == NULL; i++) {
        if (strcmp(g_intern.s[i], s) == 0) {
            r = g_intern.s[i];
        }
    }
    if (r == NULL && g_intern.n < 256 && (g_intern.s[g_intern.n] = strdup(s)) != NULL) {
        r = g_intern.s[g_intern.n++];
    }
    pthread_mutex_unlock(&g_intern.mu);
    return r;
}

static void intern_free(void) {
    pthread_mutex_lock(&g_intern.mu);
    for (size_t i = 0; i < g_intern.n; i++) {
        free(g_intern.s[i]);
    }
    g_intern.n = 0;
    pthread_mutex_unlock(&g_intern.mu);
}

/* The value of key in "k=v k=v" text (len bytes, not terminated). */
static bool text_kv(const char *text, size_t len, const char *key, char *outv, size_t olen) {
    char buf[256];
    snprintf(buf, sizeof(buf), "%.*s", (int)len, text);
    size_t kl = strlen(key);
    for (char *s = buf; (s = strstr(s, key)) != NULL; s++) {
        if ((s == buf || s[-1] == ' ') && s[kl] == '=') {
            const char *v = s + kl + 1;
            size_t n = strcspn(v, " ");
            snprintf(outv, olen, "%.*s", (int)n, v);
            return true;
        }
    }
    return false;
}

static bool arg_kv(const px_msg *arg, const char *key, char *outv, size_t olen) {
    size_t len = 0;
    const char *d = arg != NULL && px_msg_kind_of(arg) == PX_MSG_BYTES ? px_msg_data(arg, &len)
                                                                        : NULL;
    return d != NULL && text_kv(d, len, key, outv, olen);
}

/* A placement function: picks the candidate named by its arg. */
static int place_named(void *arg, const char *behavior, const px_place_cand *c, size_t n) {
    (void)behavior;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(c[i].node, (const char *)arg) == 0) {
            return (int)i;
        }
    }
    return -1;
}

/* PLACE text (see the top) into pl; strings interned. 0 or -1. */
static int parse_place(const char *s, px_placement *pl) {
    memset(pl, 0, sizeof(*pl));
    if (strcmp(s, "here") == 0) {
        pl->policy = PX_PLACE_HERE;
    } else if (strncmp(s, "node:", 5) == 0) {
        pl->policy = PX_PLACE_NODE;
        pl->node = intern(s + 5);
    } else if (strcmp(s, "rr") == 0) {
        pl->policy = PX_PLACE_ROUND_ROBIN;
    } else if (strcmp(s, "ll") == 0) {
        pl->policy = PX_PLACE_LEAST_LOADED;
    } else if (strncmp(s, "role:", 5) == 0) {
        pl->policy = PX_PLACE_ROLE;
        pl->role = intern(s + 5);
    } else if (strncmp(s, "fn:", 3) == 0) {
        pl->policy = PX_PLACE_FN;
        pl->fn = place_named;
        pl->fn_arg = (void *)(uintptr_t)intern(s + 3);
    } else {
        return -1;
    }
    return (pl->policy == PX_PLACE_NODE && pl->node == NULL) ||
                   (pl->policy == PX_PLACE_ROLE && pl->role == NULL) ||
                   (pl->policy == PX_PLACE_FN && pl->fn_arg == NULL)
               ? -1
               : 0;
}

/* t.work: replies 2*V under tag = its node id; tag 666 fails it with code
 * -V (PX_EFAIL for 0), tag 777 stops it. Start argument "name=NAME":
 * registers itself globally from init (a supervised service that takes
 * its name again on every restart, wherever it runs). */
static px_err work_init(px_ctx *ctx, const px_msg *arg) {
    atomic_fetch_add(&g_work_inits, 1);
    char name[PX_GLOBAL_NAME_MAX];
    if (!arg_kv(arg, "name", name, sizeof(name))) {
        return PX_OK;
    }
    px_cluster *c = atomic_load(&g_cluster);
    px_ref owner = PX_REF_NIL, self = px_self(ctx);
    /* One etcd round trip on this worker: acceptable in a test node. */
    px_err e = c != NULL ? px_register_global(c, name, self, &owner) : PX_ECLOSED;
    char b1[48], b2[48];
    out("wreg name=%s rc=%s ref=%s owner=%s", name, px_errname(e),
        px_ref_format(self, b1, sizeof(b1)), px_ref_format(owner, b2, sizeof(b2)));
    return PX_OK; /* a name taken elsewhere does not fail the service */
}

static px_err work_receive(px_ctx *ctx, px_msg *m) {
    if (px_msg_kind_of(m) != PX_MSG_BYTES) {
        return PX_OK;
    }
    uint32_t tag = px_msg_tag(m);
    uint64_t v = px_msg_get_u64(m);
    if (tag == TAG_FAIL) {
        px_err code = v > 0 && v < 1000 ? (px_err)(-(int)v) : PX_EFAIL;
        px_fail(ctx, code, "asked to fail with %s", px_errname(code));
        return PX_OK;
    }
    if (tag == TAG_EXIT) {
        px_stop_self(ctx);
        return PX_OK;
    }
    px_msg *r = NULL;
    if (px_msg_u64(&r, px_self(ctx).node, v * 2) == PX_OK && px_reply(ctx, m, &r) != PX_OK) {
        px_msg_free(r);
    }
    return PX_OK;
}
static const px_behavior work_b = {.name = "t.work", .init = work_init,
                                   .receive = work_receive};

/* ---- supervisors ---- */

typedef struct spawn_req {
    char id[48];
    char behavior[48];
    char place[64]; /* PLACE text */
    char arg[96];   /* start argument text, "" for none */
    char gname[64]; /* placement.global_name, "" for none */
    uint32_t unreachable_ms;
    int32_t exclude_self;
    int32_t restart;
    uint32_t max_restarts, window_ms;
} spawn_req;

typedef struct spawn_rep {
    px_ref ref;
    int32_t rc;
} spawn_rep;

static struct {
    pthread_mutex_t mu;
    uint64_t n;
    char last[768];
} g_fails = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void record_failure(const px_failure *f) {
    char chain[512] = "";
    size_t at = 0;
    for (const px_failure *c = f; c != NULL && at < sizeof(chain); c = c->cause) {
        int k = snprintf(chain + at, sizeof(chain) - at, "%s%s@%s:%s", c == f ? "" : ">",
                         c->child_id ? c->child_id : "", c->origin_node ? c->origin_node : "",
                         px_errname(c->code));
        if (k < 0) {
            break;
        }
        at += (size_t)k;
    }
    pthread_mutex_lock(&g_fails.mu);
    g_fails.n++;
    snprintf(g_fails.last, sizeof(g_fails.last), "id=%s code=%s origin=%s chain=%s",
             f->child_id && f->child_id[0] ? f->child_id : "-", px_errname(f->code),
             f->origin_node && f->origin_node[0] ? f->origin_node : "-", chain);
    pthread_mutex_unlock(&g_fails.mu);
}

static px_directive sup_decide(px_ctx *ctx, const px_failure *f) {
    (void)ctx;
    record_failure(f);
    return (px_directive)atomic_load(&g_directive);
}

static px_directive mid_decide(px_ctx *ctx, const px_failure *f) {
    (void)ctx;
    record_failure(f);
    return PX_DIRECTIVE_ESCALATE;
}

static px_err sup_spawn(px_ctx *ctx, const spawn_req *rq, px_ref *out_ref) {
    px_placement pl;
    char place[sizeof(rq->place) + 1], beh[sizeof(rq->behavior) + 1], id[sizeof(rq->id) + 1];
    snprintf(place, sizeof(place), "%.*s", (int)sizeof(rq->place), rq->place);
    snprintf(beh, sizeof(beh), "%.*s", (int)sizeof(rq->behavior), rq->behavior);
    snprintf(id, sizeof(id), "%.*s", (int)sizeof(rq->id), rq->id);
    if (parse_place(place, &pl) != 0) {
        return PX_EINVAL;
    }
    pl.unreachable_ms = rq->unreachable_ms;
    pl.exclude_self = rq->exclude_self;
    if (rq->gname[0] != '\0') {
        char g[sizeof(rq->gname) + 1];
        snprintf(g, sizeof(g), "%.*s", (int)sizeof(rq->gname), rq->gname);
        pl.global_name = intern(g);
    }
    px_restart_policy pol;
    px_restart_policy_init(&pol);
    pol.max_restarts = rq->max_restarts ? rq->max_restarts : 10;
    pol.window_ms = rq->window_ms ? rq->window_ms : pol.window_ms;
    px_child_spec spec = {.id = id, .behavior = beh, .restart = (px_restart_type)rq->restart,
                          .policy = &pol, .placement = &pl};
    px_msg *arg = NULL;
    size_t alen = strnlen(rq->arg, sizeof(rq->arg));
    if (alen > 0 && px_msg_bytes(&arg, 0, rq->arg, alen) != PX_OK) {
        return PX_ENOMEM;
    }
    px_err e = px_spawn_child(ctx, &spec, &arg, out_ref);
    px_msg_free(arg); /* NULL once taken */
    return e;
}

static px_err sup_receive(px_ctx *ctx, px_msg *m) {
    size_t len = 0;
    const void *d = px_msg_data(m, &len);
    if (px_msg_kind_of(m) != PX_MSG_BYTES) {
        return PX_OK;
    }
    px_msg *r = NULL;
    if (px_msg_tag(m) == TAG_SPAWN && len == sizeof(spawn_req)) {
        spawn_req rq;
        memcpy(&rq, d, sizeof(rq));
        spawn_rep rep = {.ref = PX_REF_NIL};
        rep.rc = sup_spawn(ctx, &rq, &rep.ref);
        (void)px_msg_bytes(&r, 0, &rep, sizeof(rep));
    } else if (px_msg_tag(m) == TAG_LIST) {
        px_child_info ci[MAX_CHILDREN];
        size_t n = 0;
        memset(ci, 0, sizeof(ci));
        px_err e = px_children(ctx, ci, MAX_CHILDREN, &n);
        n = n < MAX_CHILDREN ? n : MAX_CHILDREN;
        (void)px_msg_bytes(&r, (uint32_t)-e, ci, n * sizeof(ci[0]));
    }
    if (r != NULL && px_reply(ctx, m, &r) != PX_OK) {
        px_msg_free(r);
    }
    return PX_OK;
}

static const px_behavior sup_one_b = {.name = "t.sup", .receive = sup_receive,
                                      .on_child_failure = sup_decide};
static const px_behavior sup_all_b = {.name = "t.sup_all", .receive = sup_receive,
                                      .on_child_failure = sup_decide,
                                      .strategy = PX_ALL_FOR_ONE};
static const px_behavior sup_rest_b = {.name = "t.sup_rest", .receive = sup_receive,
                                       .on_child_failure = sup_decide,
                                       .strategy = PX_REST_FOR_ONE};

/* t.sup_mid: in init, a child "leaf" (t.work) placed by "node=NAME" or
 * "role=ROLE" (default: this node); every failure escalates. */
static px_err mid_init(px_ctx *ctx, const px_msg *arg) {
    spawn_req rq;
    memset(&rq, 0, sizeof(rq));
    snprintf(rq.id, sizeof(rq.id), "leaf");
    snprintf(rq.behavior, sizeof(rq.behavior), "t.work");
    char v[48];
    if (arg_kv(arg, "node", v, sizeof(v))) {
        snprintf(rq.place, sizeof(rq.place), "node:%s", v);
    } else if (arg_kv(arg, "role", v, sizeof(v))) {
        snprintf(rq.place, sizeof(rq.place), "role:%s", v);
    } else {
        snprintf(rq.place, sizeof(rq.place), "here");
    }
    px_ref leaf = PX_REF_NIL;
    return sup_spawn(ctx, &rq, &leaf);
}
static const px_behavior sup_mid_b = {.name = "t.sup_mid", .init = mid_init,
                                      .receive = sup_receive, .on_child_failure = mid_decide};

/* ---- fwd: a ref passed through this node ---- */

/* TAG_RELAY payload: id, v, then two packed plexus.ActorRef (target,
 * reply_to), each after its u16 length. */
#define RELAY_PENDING 64
typedef struct fwd_state {
    struct {
        uint64_t corr;
        uint32_t id;
        px_ref reply_to;
    } p[RELAY_PENDING];
} fwd_state;

static size_t pack_ref(px_ref r, uint8_t *buf) {
    Plexus__ActorRef a = PLEXUS__ACTOR_REF__INIT;
    px_ref_to_pb(r, &a.base);
    size_t n = plexus__actor_ref__pack(&a, buf + 2);
    buf[0] = (uint8_t)n;
    buf[1] = (uint8_t)(n >> 8);
    return n + 2;
}

/* Reads one length-prefixed ActorRef at *at; -1 if malformed. */
static int unpack_ref(const uint8_t *d, size_t len, size_t *at, px_ref *r) {
    if (*at + 2 > len) {
        return -1;
    }
    size_t n = (size_t)d[*at] | (size_t)d[*at + 1] << 8;
    if (*at + 2 + n > len) {
        return -1;
    }
    Plexus__ActorRef *a = plexus__actor_ref__unpack(NULL, n, d + *at + 2);
    if (a == NULL) {
        return -1;
    }
    *r = px_ref_from_pb(&a->base);
    plexus__actor_ref__free_unpacked(a, NULL);
    *at += 2 + n;
    return 0;
}

static px_err fwd_init(px_ctx *ctx, const px_msg *arg) {
    (void)arg;
    fwd_state *f = calloc(1, sizeof(*f));
    if (f == NULL) {
        return PX_ENOMEM;
    }
    px_set_state(ctx, f);
    return PX_OK;
}

static void fwd_stop(px_ctx *ctx) { free(px_state(ctx)); }

static void fwd_answer(px_ctx *ctx, px_ref to, uint32_t id, px_err rc, uint64_t val,
                       uint32_t at) {
    relay_ans ra = {.id = id, .rc = rc, .val = val, .at = at};
    px_msg *m = NULL;
    if (px_msg_bytes(&m, TAG_RELAYED, &ra, sizeof(ra)) == PX_OK && px_send(ctx, to, &m) != PX_OK) {
        px_msg_free(m);
    }
}

static px_err fwd_receive(px_ctx *ctx, px_msg *m) {
    fwd_state *f = px_state(ctx);
    px_msg_kind k = px_msg_kind_of(m);
    if (k == PX_MSG_ASK_TIMEOUT || k == PX_MSG_UNDELIVERED || px_msg_is_reply(m)) {
        for (int i = 0; i < RELAY_PENDING; i++) {
            if (f->p[i].corr != 0 && f->p[i].corr == px_msg_corr(m)) {
                px_err rc = PX_OK;
                if (k == PX_MSG_ASK_TIMEOUT) {
                    rc = PX_ETIMEDOUT;
                } else if (k == PX_MSG_UNDELIVERED) {
                    (void)px_msg_undelivered(m, NULL, &rc);
                }
                fwd_answer(ctx, f->p[i].reply_to, f->p[i].id, rc,
                           rc == PX_OK ? px_msg_get_u64(m) : 0,
                           rc == PX_OK ? px_msg_sender(m).node : 0);
                f->p[i].corr = 0;
            }
        }
        return PX_OK;
    }
    size_t len = 0;
    const uint8_t *d = px_msg_data(m, &len);
    if (k != PX_MSG_BYTES || px_msg_tag(m) != TAG_RELAY || len < 12) {
        return PX_OK;
    }
    uint32_t id;
    uint64_t v;
    memcpy(&id, d, 4);
    memcpy(&v, d + 4, 8);
    size_t at = 12;
    px_ref target, reply_to;
    if (unpack_ref(d, len, &at, &target) != 0 || unpack_ref(d, len, &at, &reply_to) != 0) {
        return PX_OK;
    }
    int slot = -1;
    for (int i = 0; i < RELAY_PENDING && slot < 0; i++) {
        slot = f->p[i].corr == 0 ? i : -1;
    }
    px_msg *q = NULL;
    uint64_t corr = 0;
    px_err e = slot < 0 ? PX_ELIMIT : px_msg_u64(&q, TAG_SEQ, v);
    if (e == PX_OK) {
        e = px_ask(ctx, target, &q, 3000, &corr);
    }
    px_msg_free(q);
    if (e != PX_OK) {
        fwd_answer(ctx, reply_to, id, e, 0, 0);
        return PX_OK;
    }
    f->p[slot].corr = corr;
    f->p[slot].id = id;
    f->p[slot].reply_to = reply_to;
    return PX_OK;
}
static const px_behavior fwd_b = {.name = "pxt.fwd", .init = fwd_init,
                                  .receive = fwd_receive, .stop = fwd_stop};

/* ---- watcher: one Terminated per watch, counted per ref ---- */

#define TERMS_MAX 512
static struct {
    pthread_mutex_t mu;
    size_t n;
    struct {
        px_ref who;
        uint32_t count;
        px_term_reason reason;
        px_err code;
    } r[TERMS_MAX];
} g_terms = {.mu = PTHREAD_MUTEX_INITIALIZER};

static px_err watcher_receive(px_ctx *ctx, px_msg *m) {
    char b[48];
    if (px_msg_kind_of(m) == PX_MSG_TERMINATED) {
        px_ref who = PX_REF_NIL;
        px_term_reason reason = 0;
        px_err code = PX_OK;
        (void)px_msg_terminated(m, &who, &reason, &code);
        pthread_mutex_lock(&g_terms.mu);
        size_t i = 0;
        while (i < g_terms.n && !px_ref_eq(g_terms.r[i].who, who)) {
            i++;
        }
        if (i == g_terms.n && g_terms.n < TERMS_MAX) {
            g_terms.r[g_terms.n++].who = who;
        }
        if (i < TERMS_MAX) {
            g_terms.r[i].count++;
            g_terms.r[i].reason = reason;
            g_terms.r[i].code = code;
        }
        pthread_mutex_unlock(&g_terms.mu);
        char rn[32];
        snprintf(rn, sizeof(rn), "%s", px_term_reason_name(reason));
        for (char *p = rn; *p != '\0'; p++) {
            *p = *p == ' ' ? '_' : *p;
        }
        out("term ref=%s reason=%s code=%s", px_ref_format(who, b, sizeof(b)), rn,
            px_errname(code));
        return PX_OK;
    }
    size_t len = 0;
    const void *d = px_msg_data(m, &len);
    if (px_msg_kind_of(m) == PX_MSG_BYTES && px_msg_tag(m) == TAG_WATCH && len >= sizeof(px_ref)) {
        px_ref r;
        memcpy(&r, d, sizeof(r));
        px_err e = px_watch(ctx, r);
        if (len == sizeof(px_ref) + 2 * sizeof(uint64_t)) { /* watchtell: then a send */
            uint64_t tv[2];
            memcpy(tv, (const char *)d + sizeof(r), sizeof(tv));
            px_msg *x = NULL;
            px_err se = px_msg_u64(&x, (uint32_t)tv[0], tv[1]);
            if (se == PX_OK) {
                se = px_send(ctx, r, &x);
            }
            px_msg_free(x);
            e = e != PX_OK ? e : se;
        }
        out("watch ref=%s rc=%s", px_ref_format(r, b, sizeof(b)), px_errname(e));
    }
    return PX_OK;
}
static const px_behavior watcher_b = {.name = "pxt.watcher", .receive = watcher_receive};

/* ---- fan: many watches, for the fan-out benchmark ---- */

static struct {
    pthread_mutex_t mu;
    px_ref *refs; /* spawnn's actors, read by the lister */
    size_t n, cap;
} g_spawned = {.mu = PTHREAD_MUTEX_INITIALIZER};

static struct {
    atomic_uint_least64_t n;
    atomic_int_least64_t first_us, last_us, down_us;
} g_fan;

static px_err lister_receive(px_ctx *ctx, px_msg *m) {
    if (px_msg_kind_of(m) != PX_MSG_BYTES || px_msg_tag(m) != TAG_LISTREFS) {
        return PX_OK;
    }
    px_msg *r = NULL;
    pthread_mutex_lock(&g_spawned.mu);
    px_err e = px_msg_bytes(&r, TAG_LISTREFS, g_spawned.refs, g_spawned.n * sizeof(px_ref));
    pthread_mutex_unlock(&g_spawned.mu);
    if (e == PX_OK && px_reply(ctx, m, &r) != PX_OK) {
        px_msg_free(r);
    }
    return PX_OK;
}
static const px_behavior lister_b = {.name = "pxt.lister", .receive = lister_receive};

static px_err fan_receive(px_ctx *ctx, px_msg *m) {
    px_msg_kind k = px_msg_kind_of(m);
    if (k == PX_MSG_TERMINATED) {
        int64_t t = now_us(), zero = 0;
        atomic_compare_exchange_strong(&g_fan.first_us, &zero, t);
        atomic_store(&g_fan.last_us, t);
        atomic_fetch_add(&g_fan.n, 1);
        return PX_OK;
    }
    if (k == PX_MSG_ASK_TIMEOUT || k == PX_MSG_UNDELIVERED) {
        out("watchall n=0 ok=0 rc=%s", px_errname(PX_ETIMEDOUT));
        return PX_OK;
    }
    size_t len = 0;
    const void *d = px_msg_data(m, &len);
    if (px_msg_is_reply(m)) {
        size_t n = len / sizeof(px_ref), ok = 0;
        px_err first = PX_OK;
        for (size_t i = 0; i < n; i++) {
            px_ref r;
            memcpy(&r, (const char *)d + i * sizeof(px_ref), sizeof(r));
            px_err e = px_watch(ctx, r);
            ok += e == PX_OK;
            first = first == PX_OK ? e : first;
        }
        out("watchall n=%zu ok=%zu rc=%s", n, ok, px_errname(first));
        return PX_OK;
    }
    if (k == PX_MSG_BYTES && px_msg_tag(m) == TAG_FAN && len == sizeof(px_ref)) {
        px_ref lister;
        memcpy(&lister, d, sizeof(lister));
        px_msg *q = NULL;
        uint64_t corr;
        px_err e = px_msg_u64(&q, TAG_LISTREFS, 0);
        if (e == PX_OK) {
            e = px_ask(ctx, lister, &q, 20000, &corr);
        }
        px_msg_free(q);
        if (e != PX_OK) {
            out("watchall n=0 ok=0 rc=%s", px_errname(e));
        }
    }
    return PX_OK;
}
static const px_behavior fan_b = {.name = "pxt.fan", .receive = fan_receive};

/* ---- askbench and askuntil: asks in a row from one actor ---- */

typedef struct abench {
    px_ref to;
    uint32_t n, sent, ok, err;
    int until;         /* askuntil: stop at the first answer */
    int64_t deadline;  /* askuntil: us */
    uint32_t per_ms;   /* each ask's timeout */
    uint64_t corr;
    int64_t t0;
    uint64_t *rtt;
} abench;

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void abench_done(px_ctx *ctx, abench *b, px_err rc, uint32_t at) {
    if (b->until) {
        out("askuntil rc=%s at=%x tries=%u t_us=%lld", px_errname(rc), at, b->sent,
            (long long)now_us());
    } else {
        qsort(b->rtt, b->ok, sizeof(uint64_t), cmp_u64);
        uint64_t p50 = b->ok ? b->rtt[(b->ok - 1) / 2] : 0;
        uint64_t p90 = b->ok ? b->rtt[(size_t)((b->ok - 1) * 0.90)] : 0;
        uint64_t p99 = b->ok ? b->rtt[(size_t)((b->ok - 1) * 0.99)] : 0;
        out("askbench n=%u ok=%u err=%u p50_us=%llu p90_us=%llu p99_us=%llu max_us=%llu", b->n,
            b->ok, b->err, (unsigned long long)p50, (unsigned long long)p90,
            (unsigned long long)p99,
            (unsigned long long)(b->ok ? b->rtt[b->ok - 1] : 0));
    }
    px_stop_self(ctx);
}

/* The next ask (or, for askuntil, a retry in 10 ms if it cannot be sent). */
static void abench_next(px_ctx *ctx, abench *b) {
    if (b->until ? now_us() >= b->deadline : b->sent >= b->n) {
        abench_done(ctx, b, b->until ? PX_ETIMEDOUT : PX_OK, 0);
        return;
    }
    px_msg *q = NULL;
    px_err e = px_msg_u64(&q, TAG_SEQ, b->sent + 1);
    b->t0 = now_us();
    if (e == PX_OK) {
        e = px_ask(ctx, b->to, &q, b->per_ms, &b->corr);
    }
    px_msg_free(q);
    b->sent++;
    if (e == PX_OK) {
        return;
    }
    b->err++;
    b->corr = 0;
    px_msg *retry = NULL;
    if (px_msg_u64(&retry, TAG_RETRY, 0) == PX_OK &&
        px_send_after(ctx, 10, px_self(ctx), &retry, NULL) == PX_OK) {
        return;
    }
    px_msg_free(retry);
    abench_done(ctx, b, e, 0);
}

static px_err abench_init(px_ctx *ctx, const px_msg *arg) {
    px_set_state(ctx, (void *)(uintptr_t)px_msg_get_u64(arg));
    return PX_OK;
}

static void abench_stop(px_ctx *ctx) {
    abench *b = px_state(ctx);
    if (b != NULL) {
        free(b->rtt);
        free(b);
    }
}

static px_err abench_receive(px_ctx *ctx, px_msg *m) {
    abench *b = px_state(ctx);
    px_msg_kind k = px_msg_kind_of(m);
    if (px_msg_is_reply(m) || k == PX_MSG_ASK_TIMEOUT || k == PX_MSG_UNDELIVERED) {
        if (b->corr == 0 || px_msg_corr(m) != b->corr) {
            return PX_OK;
        }
        b->corr = 0;
        if (px_msg_is_reply(m)) {
            if (b->until) {
                abench_done(ctx, b, PX_OK, px_msg_sender(m).node);
                return PX_OK;
            }
            b->rtt[b->ok++] = (uint64_t)(now_us() - b->t0);
        } else {
            b->err++;
        }
        abench_next(ctx, b);
        return PX_OK;
    }
    if (k == PX_MSG_BYTES && (px_msg_tag(m) == TAG_BENCH || px_msg_tag(m) == TAG_RETRY)) {
        abench_next(ctx, b);
    }
    return PX_OK;
}
static const px_behavior abench_b = {.name = "pxt.abench", .init = abench_init,
                                     .receive = abench_receive, .stop = abench_stop};

static const px_behavior *const test_behaviors[] = {&work_b,    &sup_one_b, &sup_all_b,
                                                    &sup_rest_b, &sup_mid_b, NULL};

/* ---- commands ---- */

typedef struct node {
    px_system *sys;
    px_transport *t;
    px_cluster *c; /* NULL without --etcd, or after leave */
    px_mesh *m;    /* with c */
    px_ref asker;  /* of the current incarnation: see cmd_ask */
    px_ref watcher, fan, lister; /* spawned on first use (current) */
} node;


static void cmd_send(node *n, const char *refs, unsigned k, unsigned long long cnt) {
    send_job *j = calloc(1, sizeof(*j));
    if (j == NULL || parse_ref(refs, &j->to) != 0 || k == 0 || k > 64) {
        free(j);
        out("sent ok=0 err=0 first=%s", px_errname(PX_EINVAL));
        return;
    }
    j->n = cnt;
    unsigned started = 0;
    for (unsigned i = 0; i < k; i++) {
        px_msg *arg = NULL, *go = NULL;
        px_ref s = PX_REF_NIL;
        if (px_msg_u64(&arg, 0, (uint64_t)(uintptr_t)j) != PX_OK ||
            px_system_spawn(n->sys, &sender_b, &arg, NULL, &s) != PX_OK) {
            px_msg_free(arg);
            break;
        }
        started++;
        if (px_msg_u64(&go, TAG_GO, 0) != PX_OK || px_system_send(n->sys, s, &go) != PX_OK) {
            px_msg_free(go);
            atomic_fetch_add(&j->done, 1); /* it never runs: count it done */
        }
    }
    int64_t dl = now_us() + 60 * 1000000LL;
    while (atomic_load(&j->done) < (int)started && now_us() < dl) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    int first = atomic_load(&j->first);
    bool all = atomic_load(&j->done) == (int)started && started == k;
    out("sent ok=%llu err=%llu first=%s%s", (unsigned long long)atomic_load(&j->ok),
        (unsigned long long)atomic_load(&j->err), first ? px_errname((px_err)first) : "none",
        all ? "" : " incomplete=1");
    if (atomic_load(&j->done) == (int)started) {
        free(j);
    } /* else: a sender is still running (a hang); leak the job rather than free it under it */
}

static void cmd_send1(node *n, const char *refs, unsigned long long v) {
    px_ref to;
    px_msg *m = NULL;
    px_err e = parse_ref(refs, &to) != 0 ? PX_EINVAL : px_msg_u64(&m, TAG_SEQ, v);
    int64_t t0 = now_us();
    if (e == PX_OK) {
        e = px_system_send(n->sys, to, &m);
    }
    int64_t us = now_us() - t0;
    px_msg_free(m);
    out("send1 rc=%s us=%lld", px_errname(e), (long long)us);
}

static void cmd_ask(node *n, unsigned id, const char *refs, unsigned long long v, unsigned ms) {
    ask_req rq = {.id = id, .timeout_ms = ms, .value = v};
    px_msg *m = NULL;
    px_err e = parse_ref(refs, &rq.to) != 0 ? PX_EINVAL
                                             : px_msg_bytes(&m, TAG_ASK, &rq, sizeof(rq));
    px_ref cur = PX_REF_NIL;
    if (e == PX_OK && n->asker.node_inc != px_system_node_inc(n->sys) &&
        px_system_spawn(n->sys, &asker_b, NULL, NULL, &cur) == PX_OK) {
        /* fenced since: the old asker cannot reach other nodes any more (its
         * asks still waiting end by their own timeouts) */
        n->asker = cur;
    }
    if (e == PX_OK) {
        e = px_system_send(n->sys, n->asker, &m);
    }
    if (e != PX_OK) {
        px_msg_free(m);
        out("askr id=%u rc=%s val=0 ms=0 at=0 tag=0", id, px_errname(e));
    }
}

static void cmd_sink(void) {
    pthread_mutex_lock(&g_sink.mu);
    uint64_t mn = 0, mx = 0;
    for (size_t i = 0; i < g_sink.n; i++) {
        uint64_t c = g_sink.s[i].count;
        mn = i == 0 || c < mn ? c : mn;
        mx = c > mx ? c : mx;
    }
    out("sink total=%llu senders=%zu ooo=%llu min=%llu max=%llu overflow=%llu",
        (unsigned long long)g_sink.total, g_sink.n, (unsigned long long)g_sink.ooo,
        (unsigned long long)mn, (unsigned long long)mx, (unsigned long long)g_sink.overflow);
    pthread_mutex_unlock(&g_sink.mu);
}

static void cmd_state(node *n, const char *peer) {
    px_link_state st = PX_LINK_CONNECTING;
    uint32_t inc = 0;
    px_err e = px_transport_peer_state(n->t, peer, &st, &inc);
    out("state peer=%s rc=%s st=%s inc=%x", peer, px_errname(e), px_link_state_name(st), inc);
}

static void cmd_stats(node *n) {
    px_transport_stats s;
    px_transport_stats_get(n->t, &s);
    px_system_stats ss;
    memset(&ss, 0, sizeof(ss));
    px_system_stats_get(n->sys, &ss);
    out("stats handshakes=%llu refused=%llu bad_frames=%llu msgs_in=%llu msgs_out=%llu "
        "frames_in=%llu frames_out=%llu undeliverable=%llu pings=%llu pongs=%llu "
        "dead_letters=%llu reads_polled=%llu writes_inline=%llu",
        (unsigned long long)s.handshakes, (unsigned long long)s.refused,
        (unsigned long long)s.bad_frames, (unsigned long long)s.msgs_in,
        (unsigned long long)s.msgs_out, (unsigned long long)s.frames_in,
        (unsigned long long)s.frames_out, (unsigned long long)s.undeliverable,
        (unsigned long long)s.pings, (unsigned long long)s.pongs,
        (unsigned long long)ss.dead_letters, (unsigned long long)s.reads_polled,
        (unsigned long long)s.writes_inline);
}

/* ---- cluster commands ---- */

static px_log_level g_log_level = PX_LOG_INFO;
static atomic_uint_least64_t g_watch_compacted, g_watch_errors;

/* The etcd client's and membership's log: everything at DEBUG comes here
 * to be counted (etcdstats); what reaches the node's level goes on. */
static void cluster_log(void *arg, px_log_level level, const char *who, const char *line) {
    if (strncmp(line, "membership watch:", 17) == 0) {
        atomic_fetch_add(&g_watch_errors, 1);
        if (strstr(line, px_errname(PX_ECOMPACTED)) != NULL) {
            atomic_fetch_add(&g_watch_compacted, 1);
        }
    }
    if (level >= g_log_level) {
        px_log_stderr(arg, level, who, line);
    }
}

/* Membership's events: when a node was last seen down (fanstat). */
static void on_member_event(void *arg, const px_member_event *ev) {
    (void)arg;
    if (ev->m.state == PX_MEMBER_DOWN) {
        atomic_store(&g_fan.down_us, now_us());
    }
}

/* Without a cluster every cluster command answers its word and rc. */
static bool clustered(node *n, const char *word) {
    if (n->c == NULL) {
        out("%s rc=%s", word, px_errname(PX_ECLOSED));
    }
    return n->c != NULL;
}

static void cmd_members(node *n) {
    if (!clustered(n, "members")) {
        return;
    }
    px_member ms[128];
    size_t k = 0;
    px_cluster_members(n->c, ms, 128, &k);
    char *buf = NULL;
    size_t blen = 0;
    FILE *f = open_memstream(&buf, &blen);
    if (f == NULL) {
        out("members rc=%s", px_errname(PX_ENOMEM));
        return;
    }
    for (size_t i = 0; i < k && i < 128; i++) {
        fprintf(f, "%s%s:%s:%x", i ? "," : "", ms[i].name, px_member_state_name(ms[i].state),
                ms[i].node_inc);
    }
    fclose(f);
    out("members n=%zu %s", k, buf);
    free(buf);
}

static void cmd_member(node *n, const char *name) {
    if (!clustered(n, "member")) {
        return;
    }
    px_member m;
    memset(&m, 0, sizeof(m));
    px_err e = px_cluster_member(n->c, name, &m);
    out("member name=%s rc=%s state=%s inc=%x", name, px_errname(e),
        e == PX_OK ? px_member_state_name(m.state) : "none", m.node_inc);
}

static void cmd_audit(node *n, const char *name) {
    if (!clustered(n, "audit")) {
        return;
    }
    size_t max = 1024, k = 0;
    px_member_event *ev = calloc(max, sizeof(*ev));
    char *st = NULL, *inc = NULL, *cs = NULL;
    size_t stl = 0, incl = 0, csl = 0;
    FILE *fs = open_memstream(&st, &stl), *fi = open_memstream(&inc, &incl),
         *fc = open_memstream(&cs, &csl);
    if (ev != NULL && fs != NULL && fi != NULL && fc != NULL) {
        size_t got = 0;
        px_cluster_audit(n->c, ev, max, &got);
        for (size_t i = 0; i < got; i++) {
            if (strcmp(ev[i].m.name, name) != 0) {
                continue;
            }
            for (char *p = ev[i].cause; *p != '\0'; p++) {
                *p = *p == ' ' ? '_' : *p;
            }
            fprintf(fs, "%s%s", k ? "," : "", px_member_state_name(ev[i].m.state));
            fprintf(fi, "%s%x", k ? "," : "", ev[i].m.node_inc);
            fprintf(fc, "%s%s", k ? "|" : "", ev[i].cause);
            k++;
        }
    }
    if (fs != NULL) {
        fclose(fs);
    }
    if (fi != NULL) {
        fclose(fi);
    }
    if (fc != NULL) {
        fclose(fc);
    }
    if (ev == NULL || st == NULL || inc == NULL || cs == NULL) {
        out("audit name=%s rc=%s", name, px_errname(PX_ENOMEM));
    } else {
        out("audit name=%s n=%zu states=%s incs=%s causes=%s", name, k, st, inc, cs);
    }
    free(st);
    free(inc);
    free(cs);
    free(ev);
}

static void cmd_health(node *n) {
    if (!clustered(n, "health")) {
        return;
    }
    px_cluster_health h;
    px_cluster_health_get(n->c, &h);
    out("health registered=%d fenced=%d inc=%x fences=%llu sysinc=%x keepalives=%llu "
        "etcd_down=%d holding=%d",
        h.registered ? 1 : 0, h.fenced ? 1 : 0, h.node_inc, (unsigned long long)h.fences,
        px_system_node_inc(n->sys), (unsigned long long)h.keepalives,
        h.etcd_down_since_ms != 0 ? 1 : 0, h.holding ? 1 : 0);
}

/* A new echo actor of the current incarnation. */
static px_err spawn_echo(node *n, px_ref *r) {
    *r = PX_REF_NIL;
    return px_system_spawn(n->sys, &echo_b, NULL, NULL, r);
}

static void cmd_register(node *n, const char *name) {
    if (!clustered(n, "register")) {
        return;
    }
    px_ref r, owner = PX_REF_NIL;
    px_err e = spawn_echo(n, &r);
    if (e == PX_OK) {
        e = px_register_global(n->c, name, r, &owner);
    }
    char b1[48], b2[48];
    out("register name=%s rc=%s ref=%s owner=%s", name, px_errname(e),
        px_ref_format(r, b1, sizeof(b1)), px_ref_format(owner, b2, sizeof(b2)));
}

static void cmd_whereis(node *n, const char *name) {
    if (!clustered(n, "whereis")) {
        return;
    }
    px_ref r = PX_REF_NIL;
    px_err e = px_whereis_global(n->c, name, &r);
    char b[48];
    out("whereis name=%s rc=%s ref=%s", name, px_errname(e), px_ref_format(r, b, sizeof(b)));
}

static void cmd_spawn(node *n) {
    px_ref r;
    px_err e = spawn_echo(n, &r);
    char b[48];
    out("spawn rc=%s ref=%s", px_errname(e), px_ref_format(r, b, sizeof(b)));
}

static void cmd_etcdstats(node *n) {
    if (!clustered(n, "etcdstats")) {
        return;
    }
    out("etcdstats compacted=%llu watch_errors=%llu",
        (unsigned long long)atomic_load(&g_watch_compacted),
        (unsigned long long)atomic_load(&g_watch_errors));
}

static void cmd_leave(node *n) {
    if (!clustered(n, "left")) {
        return;
    }
    px_mesh_stop(n->m);
    n->m = NULL;
    atomic_store(&g_cluster, NULL);
    px_cluster_stop(n->c, true);
    n->c = NULL;
    out("left");
}

/* ---- mesh commands ---- */

static bool meshed(node *n, const char *word) {
    if (n->m == NULL) {
        out("%s rc=%s", word, px_errname(PX_ECLOSED));
    }
    return n->m != NULL;
}

/* *slot, respawned from b if it is of an earlier incarnation (fenced
 * since: other nodes cannot reach it any more) or gone. */
static px_ref current(node *n, px_ref *slot, const px_behavior *b) {
    if ((slot->node_inc != px_system_node_inc(n->sys) || !px_is_alive(n->sys, *slot))) {
        px_ref r = PX_REF_NIL;
        if (px_system_spawn(n->sys, b, NULL, NULL, &r) == PX_OK) {
            *slot = r;
        }
    }
    return *slot;
}

static void scopy(char *buf, size_t len, const char *s) {
    size_t n = strlen(s);
    n = n < len - 1 ? n : len - 1;
    memcpy(buf, s, n);
    buf[n] = '\0';
}

/* The name of the node with id `id` ("?" if unknown). */
static void node_name_of(node *n, uint32_t id, char *buf, size_t len) {
    scopy(buf, len, "?");
    if (id == px_system_root(n->sys).node) {
        scopy(buf, len, px_system_node_name(n->sys));
        return;
    }
    px_member ms[128];
    size_t k = 0;
    px_cluster_members(n->c, ms, 128, &k);
    for (size_t i = 0; i < k && i < 128; i++) {
        if (ms[i].node_id == id) {
            scopy(buf, len, ms[i].name);
        }
    }
}

static void underscores(char *s) {
    for (; *s != '\0'; s++) {
        *s = *s == ' ' ? '_' : *s;
    }
}

static void cmd_tell(node *n, const char *refs, unsigned tag, unsigned long long v) {
    px_ref to;
    px_msg *m = NULL;
    px_err e = parse_ref(refs, &to) != 0 ? PX_EINVAL : px_msg_u64(&m, tag, v);
    if (e == PX_OK) {
        e = px_system_send(n->sys, to, &m);
    }
    px_msg_free(m);
    out("tell rc=%s", px_errname(e));
}

static void cmd_stop(node *n, const char *refs) {
    px_ref to;
    px_err e = parse_ref(refs, &to) != 0 ? PX_EINVAL : px_stop(n->sys, to);
    out("stop rc=%s", px_errname(e));
}

static void cmd_alive(node *n, const char *refs) {
    px_ref r = PX_REF_NIL;
    int alive = parse_ref(refs, &r) == 0 && px_is_alive(n->sys, r);
    out("alive ref=%s alive=%d", refs, alive);
}

static void cmd_watch(node *n, const char *refs) {
    if (!meshed(n, "watch")) {
        return;
    }
    px_ref r;
    px_msg *m = NULL;
    px_err e = parse_ref(refs, &r) != 0 ? PX_EINVAL : px_msg_bytes(&m, TAG_WATCH, &r, sizeof(r));
    if (e == PX_OK) {
        e = px_system_send(n->sys, current(n, &n->watcher, &watcher_b), &m);
    }
    if (e != PX_OK) {
        px_msg_free(m);
        out("watch ref=%s rc=%s", refs, px_errname(e));
    }
}

/* watchtell REF TAG V: the watcher watches REF and then, in the same turn,
 * sends it u64 V under TAG. */
static void cmd_watchtell(node *n, const char *refs, unsigned tag, unsigned long long v) {
    if (!meshed(n, "watch")) {
        return;
    }
    struct {
        px_ref r;
        uint64_t tv[2];
    } req;
    memset(&req, 0, sizeof(req));
    req.tv[0] = tag;
    req.tv[1] = v;
    px_msg *m = NULL;
    px_err e = parse_ref(refs, &req.r) != 0 ? PX_EINVAL
                                             : px_msg_bytes(&m, TAG_WATCH, &req, sizeof(req));
    if (e == PX_OK) {
        e = px_system_send(n->sys, current(n, &n->watcher, &watcher_b), &m);
    }
    if (e != PX_OK) {
        px_msg_free(m);
        out("watch ref=%s rc=%s", refs, px_errname(e));
    }
}

static void cmd_terms(const char *refs) {
    px_ref r = PX_REF_NIL;
    (void)parse_ref(refs, &r);
    uint32_t count = 0;
    px_term_reason reason = 0;
    px_err code = PX_OK;
    pthread_mutex_lock(&g_terms.mu);
    for (size_t i = 0; i < g_terms.n; i++) {
        if (px_ref_eq(g_terms.r[i].who, r)) {
            count = g_terms.r[i].count;
            reason = g_terms.r[i].reason;
            code = g_terms.r[i].code;
        }
    }
    pthread_mutex_unlock(&g_terms.mu);
    char rn[32];
    snprintf(rn, sizeof(rn), "%s", count ? px_term_reason_name(reason) : "none");
    underscores(rn);
    out("terms ref=%s n=%u reason=%s code=%s", refs, count, rn, px_errname(code));
}

static void cmd_relay(node *n, unsigned id, const char *vias, const char *targets,
                      unsigned long long v) {
    px_ref via, target;
    if (!meshed(n, "relayr") ) {
        return;
    }
    if (parse_ref(vias, &via) != 0 || parse_ref(targets, &target) != 0) {
        out("relayr id=%u rc=%s val=0 at=0", id, px_errname(PX_EINVAL));
        return;
    }
    uint8_t buf[128];
    uint32_t id32 = id;
    uint64_t v64 = v;
    memcpy(buf, &id32, 4);
    memcpy(buf + 4, &v64, 8);
    size_t len = 12;
    len += pack_ref(target, buf + len);
    len += pack_ref(current(n, &n->asker, &asker_b), buf + len);
    px_msg *m = NULL;
    px_err e = px_msg_bytes(&m, TAG_RELAY, buf, len);
    if (e == PX_OK) {
        e = px_system_send(n->sys, via, &m);
    }
    if (e != PX_OK) {
        px_msg_free(m);
        out("relayr id=%u rc=%s val=0 at=0", id, px_errname(e));
    }
}

static void cmd_mspawn(node *n, const char *place, const char *beh, const char *arg) {
    if (!meshed(n, "mspawn")) {
        return;
    }
    px_placement pl;
    px_ref r = PX_REF_NIL;
    char why[256] = "", name[64] = "-", b[48];
    px_msg *a = NULL;
    px_err e = parse_place(place, &pl) != 0 ? PX_EINVAL : PX_OK;
    if (e == PX_OK && arg != NULL && arg[0] != '\0') {
        e = px_msg_bytes(&a, 0, arg, strlen(arg));
    }
    if (e == PX_OK) {
        e = px_mesh_spawn(n->m, &pl, beh, &a, NULL, 5000, &r, why, sizeof(why));
    }
    px_msg_free(a);
    if (e == PX_OK) {
        node_name_of(n, r.node, name, sizeof(name));
    }
    underscores(why);
    out("mspawn rc=%s ref=%s node=%s why=%s", px_errname(e), px_ref_format(r, b, sizeof(b)),
        name, why[0] ? why : "-");
}

static void cmd_place(node *n, const char *place, const char *beh) {
    if (!meshed(n, "place")) {
        return;
    }
    px_placement pl;
    char name[64] = "-";
    px_err e = parse_place(place, &pl) != 0 ? PX_EINVAL
                                             : px_mesh_place(n->m, &pl, beh, name, sizeof(name));
    out("place rc=%s node=%s", px_errname(e), name);
}

/* A placement function that picks nobody and writes what it was offered. */
static int place_list(void *arg, const char *behavior, const px_place_cand *c, size_t n) {
    (void)behavior;
    FILE *f = arg;
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "%s%s:%llu:%llu:%d", i ? "," : "", c[i].node, (unsigned long long)c[i].actors,
                (unsigned long long)c[i].mailbox_depth, c[i].local);
    }
    return -1;
}

static void cmd_cands(node *n, const char *beh) {
    if (!meshed(n, "cands")) {
        return;
    }
    char *buf = NULL;
    size_t blen = 0;
    FILE *f = open_memstream(&buf, &blen);
    if (f == NULL) {
        out("cands rc=%s", px_errname(PX_ENOMEM));
        return;
    }
    px_placement pl = {.policy = PX_PLACE_FN, .fn = place_list, .fn_arg = f};
    char name[64];
    px_err e = px_mesh_place(n->m, &pl, beh, name, sizeof(name));
    fclose(f);
    out("cands rc=%s %s", px_errname(e == PX_EUNREACHABLE ? PX_OK : e), buf[0] ? buf : "-");
    free(buf);
}

static void cmd_supspawn(node *n, const char *kind, const char *arg) {
    if (!meshed(n, "supspawn")) {
        return;
    }
    const px_behavior *b = strcmp(kind, "one") == 0    ? &sup_one_b
                           : strcmp(kind, "all") == 0  ? &sup_all_b
                           : strcmp(kind, "rest") == 0 ? &sup_rest_b
                           : strcmp(kind, "mid") == 0  ? &sup_mid_b
                                                       : NULL;
    px_ref r = PX_REF_NIL;
    px_msg *a = NULL;
    px_err e = b == NULL ? PX_EINVAL : PX_OK;
    if (e == PX_OK && arg != NULL && arg[0] != '\0') {
        e = px_msg_bytes(&a, 0, arg, strlen(arg));
    }
    if (e == PX_OK) {
        e = px_system_spawn(n->sys, b, &a, NULL, &r);
    }
    px_msg_free(a);
    char rb[48];
    out("supspawn rc=%s ref=%s", px_errname(e), px_ref_format(r, rb, sizeof(rb)));
}

/* child SUP ID BEH PLACE [opts]: opts is the rest of the line. */
static void cmd_child(node *n, const char *sups, const char *id, const char *beh,
                      const char *place, const char *opts) {
    if (!meshed(n, "child")) {
        return;
    }
    spawn_req rq;
    memset(&rq, 0, sizeof(rq));
    snprintf(rq.id, sizeof(rq.id), "%s", id);
    snprintf(rq.behavior, sizeof(rq.behavior), "%s", beh);
    snprintf(rq.place, sizeof(rq.place), "%s", place);
    char v[96];
    size_t ol = strlen(opts);
    if (text_kv(opts, ol, "um", v, sizeof(v))) {
        rq.unreachable_ms = (uint32_t)atoi(v);
    }
    if (text_kv(opts, ol, "x", v, sizeof(v))) {
        rq.exclude_self = atoi(v);
    }
    if (text_kv(opts, ol, "gname", v, sizeof(v))) {
        snprintf(rq.gname, sizeof(rq.gname), "%.63s", v);
    }
    if (text_kv(opts, ol, "max", v, sizeof(v))) {
        rq.max_restarts = (uint32_t)atoi(v);
    }
    if (text_kv(opts, ol, "win", v, sizeof(v))) {
        rq.window_ms = (uint32_t)atoi(v);
    }
    if (text_kv(opts, ol, "restart", v, sizeof(v))) {
        rq.restart = strcmp(v, "transient") == 0   ? PX_RESTART_TRANSIENT
                     : strcmp(v, "temporary") == 0 ? PX_RESTART_TEMPORARY
                                                   : PX_RESTART_PERMANENT;
    }
    const char *a = strstr(opts, "arg=");
    if (a != NULL) { /* the rest of the line: "k=v k=v" start arguments */
        snprintf(rq.arg, sizeof(rq.arg), "%s", a + 4);
    }
    px_ref sup, r = PX_REF_NIL;
    px_msg *q = NULL, *rep = NULL;
    px_err e = parse_ref(sups, &sup) != 0 ? PX_EINVAL : px_msg_bytes(&q, TAG_SPAWN, &rq, sizeof(rq));
    if (e == PX_OK) {
        e = px_system_ask(n->sys, sup, &q, 10000, &rep);
    }
    px_msg_free(q);
    size_t len = 0;
    const void *d = rep != NULL ? px_msg_data(rep, &len) : NULL;
    if (e == PX_OK && d != NULL && len == sizeof(spawn_rep)) {
        spawn_rep sr;
        memcpy(&sr, d, sizeof(sr));
        e = (px_err)sr.rc;
        r = sr.ref;
    } else if (e == PX_OK) {
        e = PX_EPROTO;
    }
    px_msg_free(rep);
    char b[48];
    out("child id=%s rc=%s ref=%s", id, px_errname(e), px_ref_format(r, b, sizeof(b)));
}

static const char *child_state_name(px_child_state s) {
    switch (s) {
    case PX_CHILD_RUNNING:
        return "running";
    case PX_CHILD_SUSPENDED:
        return "suspended";
    case PX_CHILD_RESTARTING:
        return "restarting";
    case PX_CHILD_OPEN:
        return "open";
    case PX_CHILD_STOPPING:
        return "stopping";
    }
    return "unknown";
}

static void cmd_children(node *n, const char *sups) {
    if (!meshed(n, "children")) {
        return;
    }
    px_ref sup;
    px_msg *q = NULL, *rep = NULL;
    px_err e = parse_ref(sups, &sup) != 0 ? PX_EINVAL : px_msg_u64(&q, TAG_LIST, 0);
    if (e == PX_OK) {
        e = px_system_ask(n->sys, sup, &q, 10000, &rep);
    }
    px_msg_free(q);
    size_t len = 0;
    const char *d = rep != NULL ? px_msg_data(rep, &len) : NULL;
    if (e == PX_OK && (len % sizeof(px_child_info)) != 0) {
        e = PX_EPROTO;
    } else if (e == PX_OK && px_msg_tag(rep) != 0) {
        e = (px_err)(-(int)px_msg_tag(rep));
    }
    char *buf = NULL;
    size_t blen = 0;
    FILE *f = open_memstream(&buf, &blen);
    size_t k = e == PX_OK ? len / sizeof(px_child_info) : 0;
    for (size_t i = 0; f != NULL && i < k; i++) {
        px_child_info ci;
        memcpy(&ci, d + i * sizeof(ci), sizeof(ci));
        char b[48];
        fprintf(f, "%s%s:%s:%s:%u:%u:%s", i ? "," : "", ci.id, ci.node[0] ? ci.node : "-",
                px_ref_format(ci.remote, b, sizeof(b)), ci.instance, ci.restarts,
                child_state_name(ci.state));
    }
    if (f != NULL) {
        fclose(f);
    }
    px_msg_free(rep);
    out("children rc=%s n=%zu %s", px_errname(e), k, buf != NULL && k ? buf : "-");
    free(buf);
}

static void cmd_directive(const char *d) {
    int v = strcmp(d, "resume") == 0     ? PX_DIRECTIVE_RESUME
            : strcmp(d, "restart") == 0  ? PX_DIRECTIVE_RESTART
            : strcmp(d, "stop") == 0     ? PX_DIRECTIVE_STOP
            : strcmp(d, "escalate") == 0 ? PX_DIRECTIVE_ESCALATE
                                         : 0;
    if (v == 0) {
        out("directive rc=%s", px_errname(PX_EINVAL));
        return;
    }
    atomic_store(&g_directive, v);
    out("directive ok");
}

static void cmd_failures(void) {
    pthread_mutex_lock(&g_fails.mu);
    out("failures n=%llu %s", (unsigned long long)g_fails.n,
        g_fails.n ? g_fails.last : "id=- code=- origin=- chain=-");
    pthread_mutex_unlock(&g_fails.mu);
}

static void cmd_greg(node *n, const char *name, const char *refs) {
    if (!clustered(n, "greg")) {
        return;
    }
    px_ref r, owner = PX_REF_NIL;
    px_err e = parse_ref(refs, &r) != 0 ? PX_EINVAL : px_register_global(n->c, name, r, &owner);
    char b[48];
    out("greg name=%s rc=%s owner=%s", name, px_errname(e), px_ref_format(owner, b, sizeof(b)));
}

static void cmd_mstats(node *n) {
    if (!meshed(n, "mstats")) {
        return;
    }
    px_mesh_stats s;
    px_mesh_stats_get(n->m, &s);
    out("mstats watches=%llu proxies=%llu hosted=%llu spawns_sent=%llu spawns_served=%llu "
        "node_down_terminated=%llu lost_children=%llu orphans_stopped=%llu bad_sys=%llu "
        "inits=%llu",
        (unsigned long long)s.remote_watches, (unsigned long long)s.proxies,
        (unsigned long long)s.hosted, (unsigned long long)s.spawns_sent,
        (unsigned long long)s.spawns_served, (unsigned long long)s.node_down_terminated,
        (unsigned long long)s.lost_children, (unsigned long long)s.orphans_stopped,
        (unsigned long long)s.bad_sys, (unsigned long long)atomic_load(&g_work_inits));
}

/* ---- benchmark commands ---- */

static void cmd_spawnn(node *n, unsigned long long cnt) {
    px_err e = PX_OK;
    size_t made = 0;
    pthread_mutex_lock(&g_spawned.mu);
    for (unsigned long long i = 0; i < cnt && e == PX_OK; i++) {
        if (g_spawned.n == g_spawned.cap) {
            size_t nc = g_spawned.cap ? g_spawned.cap * 2 : 1024;
            px_ref *nr = realloc(g_spawned.refs, nc * sizeof(*nr));
            if (nr == NULL) {
                e = PX_ENOMEM;
                break;
            }
            g_spawned.refs = nr;
            g_spawned.cap = nc;
        }
        px_ref r;
        e = spawn_echo(n, &r);
        if (e == PX_OK) {
            g_spawned.refs[g_spawned.n++] = r;
            made++;
        }
    }
    size_t total = g_spawned.n;
    pthread_mutex_unlock(&g_spawned.mu);
    px_ref l = current(n, &n->lister, &lister_b);
    char b[48];
    out("spawnn rc=%s n=%zu made=%zu lister=%s", px_errname(e), total, made,
        px_ref_format(l, b, sizeof(b)));
}

static void cmd_watchall(node *n, const char *refs) {
    if (!meshed(n, "watchall")) {
        return;
    }
    px_ref l;
    px_msg *m = NULL;
    px_err e = parse_ref(refs, &l) != 0 ? PX_EINVAL : px_msg_bytes(&m, TAG_FAN, &l, sizeof(l));
    if (e == PX_OK) {
        e = px_system_send(n->sys, current(n, &n->fan, &fan_b), &m);
    }
    if (e != PX_OK) {
        px_msg_free(m);
        out("watchall n=0 ok=0 rc=%s", px_errname(e));
    }
}

static void cmd_fanstat(void) {
    out("fanstat n=%llu first_us=%lld last_us=%lld down_us=%lld",
        (unsigned long long)atomic_load(&g_fan.n), (long long)atomic_load(&g_fan.first_us),
        (long long)atomic_load(&g_fan.last_us), (long long)atomic_load(&g_fan.down_us));
}

/* askbench (until = 0: n asks) and askuntil (until = 1: up to ms). */
static void cmd_abench(node *n, const char *refs, unsigned cnt, int until, unsigned ms,
                       unsigned per) {
    const char *word = until ? "askuntil" : "askbench";
    abench *b = calloc(1, sizeof(*b));
    px_err e = b == NULL ? PX_ENOMEM : parse_ref(refs, &b->to) != 0 ? PX_EINVAL : PX_OK;
    if (e == PX_OK) {
        b->until = until;
        b->n = until ? 0 : cnt;
        b->per_ms = until ? (per ? per : 200) : 2000;
        b->deadline = now_us() + (int64_t)ms * 1000;
        b->rtt = calloc(b->n ? b->n : 1, sizeof(uint64_t));
        e = b->rtt == NULL ? PX_ENOMEM : PX_OK;
    }
    px_msg *arg = NULL, *go = NULL;
    px_ref a = PX_REF_NIL;
    if (e == PX_OK) {
        e = px_msg_u64(&arg, 0, (uint64_t)(uintptr_t)b);
    }
    if (e == PX_OK) {
        e = px_system_spawn(n->sys, &abench_b, &arg, NULL, &a);
    }
    px_msg_free(arg);
    if (e != PX_OK) {
        if (b != NULL) {
            free(b->rtt);
            free(b);
        }
        out("%s rc=%s", word, px_errname(e));
        return;
    }
    /* the actor owns b from here */
    if (px_msg_u64(&go, TAG_BENCH, 0) != PX_OK || px_system_send(n->sys, a, &go) != PX_OK) {
        px_msg_free(go);
        (void)px_stop(n->sys, a);
        out("%s rc=%s", word, px_errname(PX_ENOMEM));
    }
}

static void cmd_spawnbench(node *n, const char *target, const char *beh, unsigned cnt) {
    if (!meshed(n, "spawnbench")) {
        return;
    }
    px_placement pl = {.policy = PX_PLACE_NODE, .node = target};
    uint64_t *us = calloc(cnt ? cnt : 1, sizeof(*us));
    px_ref *refs = calloc(cnt ? cnt : 1, sizeof(*refs));
    unsigned ok = 0;
    px_err first = PX_OK;
    for (unsigned i = 0; us != NULL && refs != NULL && i < cnt; i++) {
        int64_t t0 = now_us();
        px_err e = px_mesh_spawn(n->m, &pl, beh, NULL, NULL, 5000, &refs[ok], NULL, 0);
        int64_t t = now_us() - t0;
        if (e == PX_OK) {
            us[ok++] = (uint64_t)t;
        } else if (first == PX_OK) {
            first = e;
        }
    }
    for (unsigned i = 0; refs != NULL && i < ok; i++) {
        (void)px_stop(n->sys, refs[i]);
    }
    if (us != NULL) {
        qsort(us, ok, sizeof(*us), cmp_u64);
    }
    out("spawnbench n=%u ok=%u first=%s p50_us=%llu min_us=%llu max_us=%llu", cnt, ok,
        px_errname(first), (unsigned long long)(ok ? us[(ok - 1) / 2] : 0),
        (unsigned long long)(ok ? us[0] : 0), (unsigned long long)(ok ? us[ok - 1] : 0));
    free(us);
    free(refs);
}


/* The mesh and benchmark commands; false if line is none of them. */
static bool serve_mesh(node *n, const char *line) {
    char w[32] = "", a[256] = "", b[256] = "", c[256] = "", d[256] = "";
    unsigned k = 0, id = 0, ms = 0, per = 0;
    unsigned long long v = 0;
    int used = 0;
    if (sscanf(line, "%31s%n", w, &used) != 1) {
        return false;
    }
    const char *rest = line + used;
    while (*rest == ' ') {
        rest++;
    }
    if (strcmp(w, "tell") == 0 && sscanf(rest, "%255s %u %llu", a, &k, &v) == 3) {
        cmd_tell(n, a, k, v);
    } else if (strcmp(w, "stop") == 0 && sscanf(rest, "%255s", a) == 1) {
        cmd_stop(n, a);
    } else if (strcmp(w, "alive") == 0 && sscanf(rest, "%255s", a) == 1) {
        cmd_alive(n, a);
    } else if (strcmp(w, "watch") == 0 && sscanf(rest, "%255s", a) == 1) {
        cmd_watch(n, a);
    } else if (strcmp(w, "watchtell") == 0 && sscanf(rest, "%255s %u %llu", a, &k, &v) == 3) {
        cmd_watchtell(n, a, k, v);
    } else if (strcmp(w, "terms") == 0 && sscanf(rest, "%255s", a) == 1) {
        cmd_terms(a);
    } else if (strcmp(w, "relay") == 0 && sscanf(rest, "%u %255s %255s %llu", &id, a, b, &v) == 4) {
        cmd_relay(n, id, a, b, v);
    } else if (strcmp(w, "mspawn") == 0 && sscanf(rest, "%255s %255s %255s", a, b, c) >= 2) {
        cmd_mspawn(n, a, b, c);
    } else if (strcmp(w, "place") == 0 && sscanf(rest, "%255s %255s", a, b) == 2) {
        cmd_place(n, a, b);
    } else if (strcmp(w, "cands") == 0 && sscanf(rest, "%255s", a) == 1) {
        cmd_cands(n, a);
    } else if (strcmp(w, "supspawn") == 0 && sscanf(rest, "%255s %255s", a, b) >= 1) {
        cmd_supspawn(n, a, b);
    } else if (strcmp(w, "child") == 0 &&
               sscanf(rest, "%255s %255s %255s %255s%n", a, b, c, d, &used) == 4) {
        cmd_child(n, a, b, c, d, rest + used);
    } else if (strcmp(w, "children") == 0 && sscanf(rest, "%255s", a) == 1) {
        cmd_children(n, a);
    } else if (strcmp(w, "directive") == 0 && sscanf(rest, "%255s", a) == 1) {
        cmd_directive(a);
    } else if (strcmp(w, "failures") == 0) {
        cmd_failures();
    } else if (strcmp(w, "greg") == 0 && sscanf(rest, "%255s %255s", a, b) == 2) {
        cmd_greg(n, a, b);
    } else if (strcmp(w, "mstats") == 0) {
        cmd_mstats(n);
    } else if (strcmp(w, "spawnn") == 0 && sscanf(rest, "%llu", &v) == 1) {
        cmd_spawnn(n, v);
    } else if (strcmp(w, "watchall") == 0 && sscanf(rest, "%255s", a) == 1) {
        cmd_watchall(n, a);
    } else if (strcmp(w, "fanstat") == 0) {
        cmd_fanstat();
    } else if (strcmp(w, "askbench") == 0 && sscanf(rest, "%255s %u", a, &k) == 2) {
        cmd_abench(n, a, k, 0, 0, 0);
    } else if (strcmp(w, "askuntil") == 0 && sscanf(rest, "%255s %u %u", a, &ms, &per) >= 2) {
        cmd_abench(n, a, 0, 1, ms, per);
    } else if (strcmp(w, "spawnbench") == 0 && sscanf(rest, "%255s %255s %u", a, b, &k) == 3) {
        cmd_spawnbench(n, a, b, k);
    } else {
        return false;
    }
    return true;
}

static void serve(node *n) {
    char line[1024], a[256];
    unsigned k, id, ms;
    unsigned long long v;
    while (fgets(line, sizeof(line), stdin) != NULL) {
        line[strcspn(line, "\r\n")] = '\0';
        if (sscanf(line, "send %255s %u %llu", a, &k, &v) == 3) {
            cmd_send(n, a, k, v);
        } else if (sscanf(line, "send1 %255s %llu", a, &v) == 2) {
            cmd_send1(n, a, v);
        } else if (sscanf(line, "ask %u %255s %llu %u", &id, a, &v, &ms) == 4) {
            cmd_ask(n, id, a, v, ms);
        } else if (strcmp(line, "sink") == 0) {
            cmd_sink();
        } else if (sscanf(line, "state %255s", a) == 1) {
            cmd_state(n, a);
        } else if (strcmp(line, "stats") == 0) {
            cmd_stats(n);
        } else if (strcmp(line, "members") == 0) { /* before "member NAME" */
            cmd_members(n);
        } else if (sscanf(line, "member %255s", a) == 1) {
            cmd_member(n, a);
        } else if (sscanf(line, "audit %255s", a) == 1) {
            cmd_audit(n, a);
        } else if (strcmp(line, "health") == 0) {
            cmd_health(n);
        } else if (sscanf(line, "register %255s", a) == 1) {
            cmd_register(n, a);
        } else if (sscanf(line, "whereis %255s", a) == 1) {
            cmd_whereis(n, a);
        } else if (strcmp(line, "spawn") == 0) {
            cmd_spawn(n);
        } else if (strcmp(line, "etcdstats") == 0) {
            cmd_etcdstats(n);
        } else if (strcmp(line, "leave") == 0) {
            cmd_leave(n);
        } else if (strcmp(line, "quit") == 0) {
            return;
        } else if (!serve_mesh(n, line)) {
            out("error unknown command: %s", line);
        }
    }
}

/* ---- start ---- */

static void usage(void) {
    fprintf(stderr, "usage: pxt_node --name N --listen ADDR --identity PATH --secret PATH "
                    "[--peer NAME=ADDR=PUBKEY]... [--heartbeat MS] [--unreachable MS] "
                    "[--reconnect-max MS] [--workers N] [--log LEVEL] "
                    "[--etcd URL [--cluster NAME] [--ttl S] [--roles R1,R2] "
                    "[--advertise ADDR]]\n");
}

static int fail(const char *stage, px_err e, const char *why) {
    out("fail stage=%s rc=%s why=%s", stage, px_errname(e), why ? why : "");
    fprintf(stderr, "pxt_node: %s: %s %s\n", stage, px_errname(e), why ? why : "");
    return 2;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    const char *name = NULL, *listen = NULL, *idpath = NULL, *secpath = NULL;
    const char *etcd = NULL, *cluster = NULL, *advertise = NULL;
    char *roles_buf = NULL;
    const char *roles[9] = {NULL};
    unsigned heartbeat = 0, unreachable = 0, recon = 0, workers = 2, ttl = 2;
    px_log_level lvl = PX_LOG_INFO;
    px_peer peers[MAX_PEERS];
    char *peerbuf[MAX_PEERS];
    size_t np = 0;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL) {
            usage();
            return 2;
        }
        i++;
        if (strcmp(o, "--name") == 0) {
            name = v;
        } else if (strcmp(o, "--listen") == 0) {
            listen = v;
        } else if (strcmp(o, "--identity") == 0) {
            idpath = v;
        } else if (strcmp(o, "--secret") == 0) {
            secpath = v;
        } else if (strcmp(o, "--heartbeat") == 0) {
            heartbeat = (unsigned)atoi(v);
        } else if (strcmp(o, "--unreachable") == 0) {
            unreachable = (unsigned)atoi(v);
        } else if (strcmp(o, "--reconnect-max") == 0) {
            recon = (unsigned)atoi(v);
        } else if (strcmp(o, "--etcd") == 0) {
            etcd = v;
        } else if (strcmp(o, "--cluster") == 0) {
            cluster = v;
        } else if (strcmp(o, "--roles") == 0 && roles_buf == NULL) {
            roles_buf = strdup(v);
            size_t nr = 0;
            for (char *save = NULL, *r = roles_buf ? strtok_r(roles_buf, ",", &save) : NULL;
                 r != NULL && nr < 8; r = strtok_r(NULL, ",", &save)) {
                roles[nr++] = r;
            }
        } else if (strcmp(o, "--advertise") == 0) {
            advertise = v;
        } else if (strcmp(o, "--ttl") == 0) {
            ttl = (unsigned)atoi(v);
        } else if (strcmp(o, "--workers") == 0) {
            workers = (unsigned)atoi(v);
        } else if (strcmp(o, "--log") == 0) {
            if (px_log_level_parse(v, &lvl) != PX_OK) {
                usage();
                return 2;
            }
        } else if (strcmp(o, "--peer") == 0 && np < MAX_PEERS) {
            /* NAME=ADDR=PUBKEY: the key's base64 may end in '=', the address has none */
            char *s = strdup(v);
            char *e1 = s ? strchr(s, '=') : NULL;
            char *e2 = e1 ? strchr(e1 + 1, '=') : NULL;
            if (e2 == NULL) {
                free(s);
                usage();
                return 2;
            }
            *e1 = *e2 = '\0';
            peerbuf[np] = s;
            peers[np] = (px_peer){.name = s, .address = e1 + 1};
            if (px_pubkey_parse(e2 + 1, peers[np].pk) != PX_OK) {
                return fail("peer", PX_EINVAL, v);
            }
            np++;
        } else {
            usage();
            return 2;
        }
    }
    if (name == NULL || listen == NULL || idpath == NULL || secpath == NULL ||
        (etcd == NULL && cluster != NULL)) {
        usage();
        return 2;
    }
    g_log_level = lvl;

    char err[256] = "";
    px_identity id;
    px_err e = px_identity_load(idpath, true, &id, err, sizeof(err));
    if (e != PX_OK) {
        return fail("identity", e, err);
    }
    px_transport_cfg tc;
    px_transport_cfg_init(&tc);
    /* Latency mode from the environment, which the processes a test or
     * benchmark starts inherit (PXT_POLL_RX=1 px_bench_mesh). */
    tc.poll_rx = getenv("PXT_POLL_RX") != NULL && strcmp(getenv("PXT_POLL_RX"), "1") == 0;
    e = px_secret_load(secpath, tc.cluster_key, err, sizeof(err));
    if (e != PX_OK) {
        return fail("secret", e, err);
    }
    px_config cfg;
    px_config_init(&cfg);
    cfg.node_name = name;
    cfg.workers = workers;
    cfg.log_level = lvl;
    cfg.shutdown_timeout_ms = 2000;
    /* The workers' spin before parking (core's default 50 us, fixed)
     * likewise: PXT_SPIN_US and PXT_SPIN_MAX_US, profiling aids. */
    if (getenv("PXT_SPIN_US") != NULL) {
        cfg.spin_us = (uint32_t)strtoul(getenv("PXT_SPIN_US"), NULL, 10);
    }
    if (getenv("PXT_SPIN_MAX_US") != NULL) {
        cfg.spin_max_us = (uint32_t)strtoul(getenv("PXT_SPIN_MAX_US"), NULL, 10);
    }
    node n = {0};
    e = px_system_alloc(&n.sys, &cfg);
    if (e != PX_OK) {
        return fail("system", e, NULL);
    }
    for (size_t i = 0; test_behaviors[i] != NULL; i++) {
        if ((e = px_behavior_register(n.sys, test_behaviors[i])) != PX_OK) {
            px_system_free(n.sys);
            return fail("behaviors", e, test_behaviors[i]->name);
        }
    }
    px_ref sink = PX_REF_NIL, echo = PX_REF_NIL, mute = PX_REF_NIL, fwd = PX_REF_NIL;
    px_spawn_opts so = {.name = "sink"}, eo = {.name = "echo"}, mo = {.name = "mute"},
                  fo = {.name = "fwd"};
    if ((e = px_system_spawn(n.sys, &sink_b, NULL, &so, &sink)) != PX_OK ||
        (e = px_system_spawn(n.sys, &echo_b, NULL, &eo, &echo)) != PX_OK ||
        (e = px_system_spawn(n.sys, &mute_b, NULL, &mo, &mute)) != PX_OK ||
        (e = px_system_spawn(n.sys, &fwd_b, NULL, &fo, &fwd)) != PX_OK ||
        (e = px_system_spawn(n.sys, &asker_b, NULL, NULL, &n.asker)) != PX_OK) {
        px_system_free(n.sys);
        return fail("spawn", e, NULL);
    }
    tc.listen = listen;
    tc.identity = &id;
    tc.peers = peers;
    tc.npeers = np;
    if (heartbeat) {
        tc.heartbeat_ms = heartbeat;
    }
    if (unreachable) {
        tc.unreachable_ms = unreachable;
    }
    if (recon) {
        tc.reconnect_max_ms = recon;
    }
    e = px_transport_start(n.sys, &tc, &n.t);
    if (e != PX_OK) {
        px_system_free(n.sys);
        return fail("transport", e, listen);
    }
    if (etcd != NULL) {
        px_cluster_cfg cc;
        px_cluster_cfg_init(&cc);
        if (cluster != NULL) {
            cc.cluster = cluster;
        }
        cc.sys = n.sys;
        cc.transport = n.t;
        cc.ttl_s = ttl;
        cc.roles = roles_buf != NULL ? roles : NULL;
        cc.address = advertise;
        cc.on_event = on_member_event;
        cc.etcd.endpoints = etcd;
        cc.etcd.request_timeout_ms = 1000;
        cc.etcd.connect_timeout_ms = 300;
        cc.etcd.watch_retry_max_ms = 200;
        cc.etcd.log = cluster_log;
        cc.etcd.log_level = PX_LOG_DEBUG; /* cluster_log filters */
        e = px_cluster_start(&cc, &n.c, err, sizeof(err));
        if (e != PX_OK) {
            px_transport_stop(n.t);
            px_system_free(n.sys);
            return fail("cluster", e, err);
        }
        px_mesh_cfg mc = {.sys = n.sys, .transport = n.t, .cluster = n.c};
        e = px_mesh_start(&mc, &n.m);
        if (e != PX_OK) {
            px_cluster_stop(n.c, true);
            px_transport_stop(n.t);
            px_system_free(n.sys);
            return fail("mesh", e, NULL);
        }
        atomic_store(&g_cluster, n.c);
    }
    char pkb[PX_PUBKEY_B64_LEN], r1[48], r2[48], r3[48], r4[48];
    px_pubkey_format(id.pk, pkb);
    px_ref root = px_system_root(n.sys);
    out("ready name=%s addr=%s pk=%s node=%08x inc=%x sink=%s echo=%s mute=%s fwd=%s%s", name,
        px_transport_address(n.t), pkb, root.node, root.node_inc,
        px_ref_format(sink, r1, sizeof(r1)), px_ref_format(echo, r2, sizeof(r2)),
        px_ref_format(mute, r3, sizeof(r3)), px_ref_format(fwd, r4, sizeof(r4)),
        n.c != NULL ? " cluster=1" : "");

    serve(&n);

    px_mesh_stop(n.m); /* NULL-safe */
    atomic_store(&g_cluster, NULL);
    px_cluster_stop(n.c, true); /* NULL-safe */
    px_transport_stop(n.t);
    px_system_free(n.sys);
    for (size_t i = 0; i < np; i++) {
        free(peerbuf[i]);
    }
    free(roles_buf);
    free(g_spawned.refs);
    intern_free();
    out("bye");
    return 0;
}
