/*
 * pxt_node.c — one plexus node as its own OS process, driven line by line
 * by the multi-process transport tests (test_multiproc.c).
 *
 *   pxt_node --name N --listen tcp://127.0.0.1:P --identity PATH --secret PATH
 *            [--peer NAME=ADDR=PUBKEY]... [--heartbeat MS] [--unreachable MS]
 *            [--reconnect-max MS] [--workers N] [--log LEVEL]
 *            [--etcd URL [--cluster NAME] [--ttl S]]
 *
 * The identity file is created on first start. With --etcd the node is
 * also a cluster member (plexus/cluster.h, used by tests/cluster/
 * test_scenarios.c and tools/bench/bench_cluster.c): once the transport
 * runs, a px_cluster starts with the system and the transport attached
 * (links follow membership; --peer stays allowed), cluster NAME (default
 * "default"), lease TTL S (default 2) and etcd timeouts for tests
 * (requests 1 s, connects 300 ms, watch retries at most 200 ms apart).
 * After the transport (and the cluster) start the node prints one line on
 * stdout:
 *   ready name=N addr=tcp://... pk=<base64> node=<hex> inc=<hex>
 *         sink=<ref> echo=<ref> mute=<ref> [cluster=1]
 * (refs as px_ref_format prints them) and then reads commands on stdin,
 * answering each with one line:
 *   send REF K N     K sender actors each send u64 1..N (tag 1) to REF;
 *                    when all are done: "sent ok=.. err=.. first=PX_.."
 *   send1 REF V      one px_system_send of u64 V: "send1 rc=PX_.. us=.."
 *   ask ID REF V MS  an asker actor px_asks REF with V, timeout MS: "askq
 *                    id=ID ok" once the ask is out, then "askr id=ID rc=PX_..
 *                    val=.. ms=.." (only askr, at once, if px_ask failed)
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
 *                    sysinc=<hex> keepalives=N etcd_down=0|1" (sysinc:
 *                    px_system_node_inc)
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
 *   leave            px_cluster_stop(c, true): "left"
 * The asker belongs to an incarnation: after a fence the next ask spawns a
 * new one. The sink counts u64 messages per sender and counts a value that
 * is not the sender's previous one plus one as out of order (ooo). echo replies
 * with 2*V; mute never replies. The log (px_log_stderr) goes to stderr.
 * Lines on stdout are written whole under one lock (actors print askr).
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
#include <plexus/plexus.h>
#include <plexus/transport.h>

#define TAG_SEQ 1u
#define TAG_REPLY 2u
#define TAG_GO 3u
#define TAG_ASK 4u
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
            out("askr id=%u rc=%s val=0 ms=%lld", id, px_errname(PX_ETIMEDOUT),
                (long long)((now_us() - t0) / 1000));
        }
        return PX_OK;
    }
    if (px_msg_is_reply(m)) {
        if (asker_take(a, px_msg_corr(m), &id, &t0) == 0) {
            out("askr id=%u rc=%s val=%llu ms=%lld", id, px_errname(PX_OK),
                (unsigned long long)px_msg_get_u64(m), (long long)((now_us() - t0) / 1000));
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
        out("askr id=%u rc=%s val=0 ms=%lld", rq->id, px_errname(e),
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

/* ---- commands ---- */

typedef struct node {
    px_system *sys;
    px_transport *t;
    px_cluster *c; /* NULL without --etcd, or after leave */
    px_ref asker;  /* of the current incarnation: see cmd_ask */
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
        out("askr id=%u rc=%s val=0 ms=0", id, px_errname(e));
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
        "dead_letters=%llu",
        (unsigned long long)s.handshakes, (unsigned long long)s.refused,
        (unsigned long long)s.bad_frames, (unsigned long long)s.msgs_in,
        (unsigned long long)s.msgs_out, (unsigned long long)s.frames_in,
        (unsigned long long)s.frames_out, (unsigned long long)s.undeliverable,
        (unsigned long long)s.pings, (unsigned long long)s.pongs,
        (unsigned long long)ss.dead_letters);
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
        "etcd_down=%d",
        h.registered ? 1 : 0, h.fenced ? 1 : 0, h.node_inc, (unsigned long long)h.fences,
        px_system_node_inc(n->sys), (unsigned long long)h.keepalives,
        h.etcd_down_since_ms != 0 ? 1 : 0);
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
    px_cluster_stop(n->c, true);
    n->c = NULL;
    out("left");
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
        } else {
            out("error unknown command: %s", line);
        }
    }
}

/* ---- start ---- */

static void usage(void) {
    fprintf(stderr, "usage: pxt_node --name N --listen ADDR --identity PATH --secret PATH "
                    "[--peer NAME=ADDR=PUBKEY]... [--heartbeat MS] [--unreachable MS] "
                    "[--reconnect-max MS] [--workers N] [--log LEVEL] "
                    "[--etcd URL [--cluster NAME] [--ttl S]]\n");
}

static int fail(const char *stage, px_err e, const char *why) {
    out("fail stage=%s rc=%s why=%s", stage, px_errname(e), why ? why : "");
    fprintf(stderr, "pxt_node: %s: %s %s\n", stage, px_errname(e), why ? why : "");
    return 2;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    const char *name = NULL, *listen = NULL, *idpath = NULL, *secpath = NULL;
    const char *etcd = NULL, *cluster = NULL;
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
    node n = {0};
    e = px_system_alloc(&n.sys, &cfg);
    if (e != PX_OK) {
        return fail("system", e, NULL);
    }
    px_ref sink = PX_REF_NIL, echo = PX_REF_NIL, mute = PX_REF_NIL;
    px_spawn_opts so = {.name = "sink"}, eo = {.name = "echo"}, mo = {.name = "mute"};
    if ((e = px_system_spawn(n.sys, &sink_b, NULL, &so, &sink)) != PX_OK ||
        (e = px_system_spawn(n.sys, &echo_b, NULL, &eo, &echo)) != PX_OK ||
        (e = px_system_spawn(n.sys, &mute_b, NULL, &mo, &mute)) != PX_OK ||
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
    }
    char pkb[PX_PUBKEY_B64_LEN], r1[48], r2[48], r3[48];
    px_pubkey_format(id.pk, pkb);
    px_ref root = px_system_root(n.sys);
    out("ready name=%s addr=%s pk=%s node=%08x inc=%x sink=%s echo=%s mute=%s%s", name,
        px_transport_address(n.t), pkb, root.node, root.node_inc,
        px_ref_format(sink, r1, sizeof(r1)), px_ref_format(echo, r2, sizeof(r2)),
        px_ref_format(mute, r3, sizeof(r3)), n.c != NULL ? " cluster=1" : "");

    serve(&n);

    px_cluster_stop(n.c, true); /* NULL-safe */
    px_transport_stop(n.t);
    px_system_free(n.sys);
    for (size_t i = 0; i < np; i++) {
        free(peerbuf[i]);
    }
    out("bye");
    return 0;
}
