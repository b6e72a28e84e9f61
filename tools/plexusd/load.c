/*
 * load.c — load.client, a request/reply workload (load.h).
 *
 * Every 10 ms the actor earns rate/100 requests of credit (never more than
 * 100 ms' worth, so a pause does not end in a burst) and asks that many,
 * while fewer than in_flight are unanswered. Each ask is kept by its
 * correlation id with its sequence number and start time until exactly one
 * of its ends arrives: the reply (checked against the request: ok or
 * wrong), an UNDELIVERED notice (failed: the target's node was lost or is
 * unreachable, its mailbox refused it, no such actor) or the ask timeout
 * (lost: nobody said anything).
 *
 * Concurrency. Each client runs in actor context on a worker and keeps its
 * state to itself. g_bound (the nodes whose clients may look global names
 * up) is guarded by g_bind_mtx, made once (pthread_once); pxd_load_bind
 * comes from any thread. A client reads its node's n->c under
 * n->parts_mtx, which it never takes while holding g_bind_mtx.
 */
#include "load.h"
#include "builtins.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <plexus/cluster.h>

#include "plexus/kv.pb-c.h"
#include "text.h"

#define TICK_MS 10
#define TAG_TICK 0x10ad

/* ---- which node a system belongs to ---- */

#define MAX_BOUND 8

static nng_mtx *g_bind_mtx;
static pxd_node *g_bound[MAX_BOUND];

static void bind_init(void) {
    if (nng_mtx_alloc(&g_bind_mtx) != 0) {
        g_bind_mtx = NULL; /* then load.client only finds local names */
    }
}

static nng_mtx *bind_mtx(void) {
    static pthread_once_t po = PTHREAD_ONCE_INIT;
    pthread_once(&po, bind_init);
    return g_bind_mtx;
}

void pxd_load_bind(pxd_node *n, bool bound) {
    nng_mtx *mx = bind_mtx();
    if (mx == NULL) {
        return;
    }
    nng_mtx_lock(mx);
    for (size_t i = 0; i < MAX_BOUND; i++) {
        if (bound ? g_bound[i] == NULL : g_bound[i] == n) {
            g_bound[i] = bound ? n : NULL;
            break;
        }
    }
    nng_mtx_unlock(mx);
}

static pxd_node *node_of(px_system *sys) {
    nng_mtx *mx = bind_mtx();
    pxd_node *n = NULL;
    if (mx == NULL) {
        return NULL;
    }
    nng_mtx_lock(mx);
    for (size_t i = 0; i < MAX_BOUND && n == NULL; i++) {
        if (g_bound[i] != NULL && g_bound[i]->sys == sys) {
            n = g_bound[i];
        }
    }
    nng_mtx_unlock(mx);
    return n;
}

/* ---- the actor ---- */

typedef struct lreq {
    uint64_t corr, seq;
    int64_t t0_us;
} lreq;

typedef struct load {
    pxd_node *n; /* NULL: the target is looked up as a local name only */
    char target[PX_GLOBAL_NAME_MAX];
    uint32_t rate, cap, timeout_ms, report_ms, payload;
    bool kv;
    double credit;
    int64_t last_tick_us, last_report_us;
    lreq *fl; /* in flight: cap slots, nfl used */
    uint32_t nfl;
    uint64_t seq;
    uint64_t sent, ok, failed, lost, wrong, refused, lat_max, lat_sum;
    bool failing; /* the last end was not ok: the next failure is not logged */
    char last_error[200];
    char last_node[64];
} load;

/* Records a failure or refusal; logs the first of a streak. */
static void trouble(px_ctx *ctx, load *l, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void trouble(px_ctx *ctx, load *l, const char *fmt, ...) {
    char what[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    char ts[32];
    pxu_iso_ms(pxu_wall_ms(), ts, sizeof ts);
    snprintf(l->last_error, sizeof l->last_error, "%s at %s", what, ts);
    if (!l->failing) {
        l->failing = true;
        px_log(px_ctx_system(ctx), PX_LOG_WARN,
               "load.client: %s (target %s); further failures are only counted until one "
               "succeeds",
               what, l->target);
    }
}

static void report(px_ctx *ctx, load *l, const char *when) {
    px_log(px_ctx_system(ctx), PX_LOG_INFO,
           "load.client %s: target=%s sent=%" PRIu64 " ok=%" PRIu64 " failed=%" PRIu64
           " lost=%" PRIu64 " wrong=%" PRIu64 " refused=%" PRIu64 " in_flight=%u",
           when, l->target, l->sent, l->ok, l->failed, l->lost, l->wrong, l->refused, l->nfl);
}

static px_err load_init(px_ctx *ctx, const px_msg *arg) {
    const ProtobufCMessage *pb = arg != NULL ? px_msg_pb(arg) : NULL;
    if (pb == NULL || pb->descriptor != &plexus__kv__load_spec__descriptor) {
        px_log(px_ctx_system(ctx), PX_LOG_ERROR,
               "load.client: the start argument must be a plexus.kv.LoadSpec");
        return PX_EINVAL;
    }
    const Plexus__Kv__LoadSpec *s = (const Plexus__Kv__LoadSpec *)pb;
    const char *kind = s->kind[0] ? s->kind : "echo";
    if (s->target[0] == '\0' || strlen(s->target) >= PX_GLOBAL_NAME_MAX || s->rate > 100000 ||
        s->in_flight > 4096 || s->timeout_ms > 86400000 || s->payload_bytes > (16u << 20) ||
        (strcmp(kind, "echo") != 0 && strcmp(kind, "kv") != 0)) {
        px_log(px_ctx_system(ctx), PX_LOG_ERROR,
               "load.client: bad LoadSpec (target \"%s\", rate %u (at most 100000), in_flight %u "
               "(at most 4096), timeout_ms %u, kind \"%s\" (echo or kv), payload_bytes %u (at "
               "most 16 MiB))",
               s->target, s->rate, s->in_flight, s->timeout_ms, s->kind, s->payload_bytes);
        return PX_EINVAL;
    }
    load *l = calloc(1, sizeof *l);
    uint32_t cap = s->in_flight ? s->in_flight : 64;
    if (l == NULL || (l->fl = calloc(cap, sizeof *l->fl)) == NULL) {
        free(l);
        return PX_ENOMEM;
    }
    l->n = node_of(px_ctx_system(ctx));
    snprintf(l->target, sizeof l->target, "%s", s->target);
    l->rate = s->rate ? s->rate : 100;
    l->cap = cap;
    l->timeout_ms = s->timeout_ms ? s->timeout_ms : 10000;
    l->report_ms = s->report_ms;
    l->kv = strcmp(kind, "kv") == 0;
    l->payload = s->payload_bytes > sizeof(uint64_t) ? s->payload_bytes : sizeof(uint64_t);
    l->last_tick_us = l->last_report_us = pxu_mono_us();
    px_set_state(ctx, l);
    return px_timer_every(ctx, TICK_MS, TAG_TICK, NULL);
}

static void load_stop(px_ctx *ctx) {
    load *l = px_state(ctx);
    if (l == NULL) {
        return;
    }
    report(ctx, l, "stopped");
    free(l->fl);
    free(l);
}

/* The target's ref now: its global name first, then a local name. */
static bool resolve(px_ctx *ctx, load *l, px_ref *to) {
    bool found = false;
    if (l->n != NULL) {
        nng_mtx_lock(l->n->parts_mtx);
        found = l->n->c != NULL && px_whereis_global(l->n->c, l->target, to) == PX_OK;
        nng_mtx_unlock(l->n->parts_mtx);
    }
    return found || px_whereis(px_ctx_system(ctx), l->target, to) == PX_OK;
}

/* kind kv: the key of request seq. 256 keys per client, written over and
 * over, so the store stays bounded (256 x payload_bytes). */
static void key_of(px_ctx *ctx, uint64_t seq, char *out, size_t len) {
    char self[48];
    snprintf(out, len, "load.%s.%s.%" PRIu64, px_system_node_name(px_ctx_system(ctx)),
             px_ref_format(px_self(ctx), self, sizeof self), seq % 256);
}

static void ask_one(px_ctx *ctx, load *l) {
    px_ref to;
    if (!resolve(ctx, l, &to)) {
        l->refused++;
        trouble(ctx, l, "no actor named %s", l->target);
        return;
    }
    uint64_t seq = ++l->seq;
    char text[160];
    ProtobufCMessage *pb = NULL;
    if (l->kv) {
        key_of(ctx, seq, text, sizeof text);
        Plexus__Kv__Put *p = malloc(sizeof *p);
        uint8_t *v = calloc(1, l->payload);
        if (p != NULL) {
            plexus__kv__put__init(p);
            p->key = strdup(text);
            p->value.data = v;
            p->value.len = v != NULL ? l->payload : 0;
            if (v != NULL) {
                memcpy(v, &seq, sizeof seq);
            }
            pb = &p->base;
        } else {
            free(v);
        }
    } else {
        snprintf(text, sizeof text, "load-%" PRIu64, seq);
        Plexus__Kv__Ping *p = malloc(sizeof *p);
        if (p != NULL) {
            plexus__kv__ping__init(p);
            p->text = strdup(text);
            pb = &p->base;
        }
    }
    px_msg *m = NULL;
    if (pb == NULL || px_msg_proto(&m, pb, NULL) != PX_OK) {
        if (pb != NULL) {
            protobuf_c_message_free_unpacked(pb, NULL);
        }
        l->refused++;
        trouble(ctx, l, "out of memory making a request");
        return;
    }
    uint64_t corr = 0;
    px_err e = px_ask(ctx, to, &m, l->timeout_ms, &corr);
    if (e != PX_OK) {
        px_msg_free(m);
        l->refused++;
        char r[48];
        trouble(ctx, l, "ask of %s refused: %s", px_ref_format(to, r, sizeof r), px_errname(e));
        return;
    }
    l->sent++;
    l->fl[l->nfl++] = (lreq){.corr = corr, .seq = seq, .t0_us = pxu_mono_us()};
}

static void tick(px_ctx *ctx, load *l) {
    int64_t now = pxu_mono_us();
    l->credit += (double)l->rate * (double)(now - l->last_tick_us) / 1e6;
    l->last_tick_us = now;
    double most = (double)l->rate / 10.0 + 1.0;
    if (l->credit > most) {
        l->credit = most;
    }
    while (l->credit >= 1.0 && l->nfl < l->cap) {
        ask_one(ctx, l);
        l->credit -= 1.0;
    }
    if (l->report_ms > 0 && now - l->last_report_us >= (int64_t)l->report_ms * 1000) {
        l->last_report_us = now;
        report(ctx, l, "report");
    }
}

/* Takes the request with this corr out of the in-flight set. */
static bool take(load *l, uint64_t corr, lreq *out) {
    for (uint32_t i = 0; i < l->nfl; i++) {
        if (l->fl[i].corr == corr) {
            *out = l->fl[i];
            l->fl[i] = l->fl[--l->nfl];
            return true;
        }
    }
    return false;
}

/* Is pb the answer to request r? Sets the answering node. */
static bool answers(px_ctx *ctx, load *l, const lreq *r, const ProtobufCMessage *pb) {
    char want[160];
    if (pb == NULL) {
        return false;
    }
    if (l->kv) {
        if (pb->descriptor != &plexus__kv__ack__descriptor) {
            return false;
        }
        const Plexus__Kv__Ack *a = (const Plexus__Kv__Ack *)pb;
        key_of(ctx, r->seq, want, sizeof want);
        snprintf(l->last_node, sizeof l->last_node, "%s", a->node);
        return strcmp(a->key, want) == 0;
    }
    if (pb->descriptor != &plexus__kv__pong__descriptor) {
        return false;
    }
    const Plexus__Kv__Pong *p = (const Plexus__Kv__Pong *)pb;
    snprintf(want, sizeof want, "load-%" PRIu64, r->seq);
    snprintf(l->last_node, sizeof l->last_node, "%s", p->node);
    return strcmp(p->text, want) == 0;
}

static px_err stats_reply(px_ctx *ctx, load *l, const px_msg *req) {
    Plexus__Kv__LoadStats *s = malloc(sizeof *s);
    if (s == NULL) {
        return PX_OK;
    }
    plexus__kv__load_stats__init(s);
    s->sent = l->sent;
    s->ok = l->ok;
    s->failed = l->failed;
    s->lost = l->lost;
    s->wrong = l->wrong;
    s->refused = l->refused;
    s->in_flight = l->nfl;
    s->latency_max_us = l->lat_max;
    s->latency_sum_us = l->lat_sum;
    s->last_error = strdup(l->last_error);
    s->last_node = strdup(l->last_node);
    if (s->last_error == NULL || s->last_node == NULL) {
        protobuf_c_message_free_unpacked(&s->base, NULL);
        return PX_OK;
    }
    return pxd_reply_pb(ctx, req, &s->base);
}

static px_err load_receive(px_ctx *ctx, px_msg *m) {
    load *l = px_state(ctx);
    lreq r;
    switch (px_msg_kind_of(m)) {
    case PX_MSG_TIMER:
        if (px_msg_tag(m) == TAG_TICK) {
            tick(ctx, l);
        }
        return PX_OK;
    case PX_MSG_ASK_TIMEOUT:
        if (take(l, px_msg_corr(m), &r)) {
            l->lost++;
            trouble(ctx, l, "request %" PRIu64 " got no answer in %u ms", r.seq, l->timeout_ms);
        }
        return PX_OK;
    case PX_MSG_UNDELIVERED: {
        px_err code = PX_OK;
        (void)px_msg_undelivered(m, NULL, &code);
        if (take(l, px_msg_corr(m), &r)) {
            l->failed++;
            trouble(ctx, l, "request %" PRIu64 " failed: %s", r.seq, px_errname(code));
        }
        return PX_OK;
    }
    default:
        break;
    }
    if (px_msg_is_reply(m)) {
        if (!take(l, px_msg_corr(m), &r)) {
            return PX_OK; /* core drops late replies before this */
        }
        if (!answers(ctx, l, &r, px_msg_pb(m))) {
            l->wrong++;
            trouble(ctx, l, "request %" PRIu64 " got an answer that is not its own", r.seq);
            return PX_OK;
        }
        uint64_t us = (uint64_t)(pxu_mono_us() - r.t0_us);
        l->ok++;
        l->lat_sum += us;
        l->lat_max = us > l->lat_max ? us : l->lat_max;
        l->failing = false;
        return PX_OK;
    }
    const ProtobufCMessage *pb = px_msg_pb(m);
    if (pb != NULL && pb->descriptor == &plexus__kv__load_stats_request__descriptor) {
        return stats_reply(ctx, l, m);
    }
    return PX_OK; /* anything else: ignored */
}

static const px_behavior load_beh = {
    .name = "load.client", .init = load_init, .receive = load_receive, .stop = load_stop};

px_err pxd_load_register(px_system *sys) {
    px_err e = px_behavior_register(sys, &load_beh);
    const ProtobufCMessageDescriptor *ts[] = {&plexus__kv__load_spec__descriptor,
                                              &plexus__kv__load_stats_request__descriptor,
                                              &plexus__kv__load_stats__descriptor};
    for (size_t i = 0; e == PX_OK && i < sizeof ts / sizeof ts[0]; i++) {
        e = px_type_register(sys, ts[i]);
    }
    return e;
}
