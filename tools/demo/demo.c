/*
 * demo.c — plexus-demo: a small but real workload on the core runtime.
 *
 * Topology (all children of one "pipeline" actor, spawned by behavior name):
 *
 *   producer --RECORD--> worker.0..N-1 --RESULT--> aggregator (bounded mailbox)
 *      ^                     |                          ^
 *      +-------ACK-----------+        monitor --ask-----+  (timer, every 500 ms)
 *
 * - The producer generates text records "rec <seq> key <k> val <v> chk <fnv>"
 *   round-robin to the workers, in chunks, re-triggering itself with a
 *   message to self. Every 1000th record is deliberately corrupted.
 * - A worker parses and validates a record (checksum), rejects malformed
 *   ones and sends (key, val) to the aggregator, found via px_whereis.
 * - Backpressure end to end: the aggregator's mailbox is bounded (policy
 *   Error). A worker whose send gets PX_EFULL keeps the result in a local
 *   queue and retries, first by yielding (a 0 ms px_send_after), then on a
 *   1 ms timer; it acknowledges
 *   records to the producer only once their result was accepted, and the
 *   producer keeps at most WINDOW unacknowledged records per worker. So
 *   every queue in the pipeline is bounded.
 * - The monitor px_asks the aggregator for its totals on a periodic timer
 *   and prints progress.
 * - After --seconds the producer gets STOP (a px_send_after timer of the
 *   pipeline), asks the workers to flush, waits for every record to be
 *   acknowledged and sends its own totals to the aggregator, which checks
 *   them against what it aggregated and tells main.
 * - main then queries the aggregator with px_system_ask, prints the report,
 *   shuts the system down gracefully and exits 0 only if every total checks
 *   out (counts, sums, per-key sums, rejected records, no failures, no dead
 *   letters during the run).
 * - Then (unless --no-examples) the shipped supervision examples run on a
 *   fresh system (demo_examples.c): a worker pool, a RestForOne pipeline, an
 *   AllForOne trio and a three-level hierarchy, each with deliberate
 *   failures; one line each, and the exit status also requires that each
 *   restarted exactly what its strategy says.
 *
 * Concurrency: actor state is touched only by its actor. The few globals
 * are either written before the system starts (opts), guarded by
 * `outcome.mtx`, or atomics; worker reports are written in the workers'
 * stop callbacks and read by main only after px_system_shutdown joined the
 * workers.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <plexus/plexus.h>

#include "demo_examples.h"

#define MAX_WORKERS 64u
#define N_KEYS 16u
#define WINDOW 256u     /* unacknowledged records per worker */
#define ACK_EVERY 64u   /* a worker acks at least every ACK_EVERY records */
#define CHUNK 128u      /* records per producer turn */
#define MALFORMED_EVERY 1000u
#define TICK_MS 500u
#define QUERY_TIMEOUT_MS 400u
#define RETRY_MS 1u
#define FAST_RETRIES 4u /* yield-retries before falling back to the timer */

enum {
    T_START = 1,  /* main -> pipeline, pipeline -> producer/monitor */
    T_KICK = 2,   /* producer -> self */
    T_STOP = 3,   /* pipeline timer -> producer */
    T_RECORD = 10,
    T_FLUSH = 11,
    T_ACK = 12,
    T_RETRY = 13, /* worker -> self, after RETRY_MS */
    T_RESULT = 20,
    T_QUERY = 21,
    T_TOTALS = 22,
    T_DONE = 23,  /* producer -> aggregator: the producer's totals */
    T_TICK = 30,
};

/* ---- options (written by main before the system starts) --------------- */

typedef struct demo_opts {
    uint32_t seconds;
    uint32_t workers;
    uint32_t capacity;
} demo_opts;

/* ---- payloads (plain structs: this demo stays on one node) ------------ */

typedef struct totals {
    uint64_t records; /* valid records */
    uint64_t sum;
    uint64_t key_sum[N_KEYS];
    uint64_t malformed; /* producer: injected; aggregator: unused */
} totals;

typedef struct result_rec {
    uint32_t key;
    uint32_t val;
} result_rec;

typedef struct ack_rec {
    uint32_t worker;
    uint32_t pad;
    uint64_t completed; /* cumulative records finished (accepted or rejected) */
} ack_rec;

/* ---- what main learns ------------------------------------------------- */

typedef struct worker_report {
    uint64_t received;
    uint64_t parsed;
    uint64_t rejected;
    uint64_t full_events;
    uint64_t yields;  /* retries by yielding */
    uint64_t retries; /* retries on a timer */
    uint64_t max_pending;
} worker_report;

static struct {
    pthread_mutex_t mtx;
    pthread_cond_t cv;
    int done;          /* guarded by mtx */
    totals produced;   /* guarded by mtx */
    totals aggregated; /* guarded by mtx */
    uint64_t done_ns;  /* guarded by mtx */
} outcome = {.mtx = PTHREAD_MUTEX_INITIALIZER};

static worker_report worker_reports[MAX_WORKERS]; /* see the design note */
static _Atomic uint64_t dead_letters_seen;
static _Atomic uint64_t progress_reports;
static _Atomic uint64_t queries_refused;
static _Atomic uint64_t producer_kicks;
static uint64_t start_ns;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint32_t fnv1a(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

/* Sends a bytes payload; on error frees it and returns the error. */
static px_err send_bytes(px_ctx *ctx, px_ref to, uint32_t tag, const void *p, size_t n)
{
    px_msg *m = NULL;
    px_err err = px_msg_bytes(&m, tag, p, n);
    if (err == PX_OK) {
        err = px_send(ctx, to, &m);
    }
    px_msg_free(m); /* NULL after a successful send */
    return err;
}

static px_err send_tag(px_ctx *ctx, px_ref to, uint32_t tag)
{
    return send_bytes(ctx, to, tag, NULL, 0);
}

/* An empty `tag` message to `to` after delay_ms (px_send_after); on error
 * frees it and returns the error. */
static px_err send_tag_after(px_ctx *ctx, uint32_t delay_ms, px_ref to, uint32_t tag)
{
    px_msg *m = NULL;
    px_err err = px_msg_bytes(&m, tag, NULL, 0);
    if (err == PX_OK) {
        err = px_send_after(ctx, delay_ms, to, &m, NULL);
    }
    px_msg_free(m); /* NULL once the timer took it */
    return err;
}

/* The `stop` of every behavior here but the worker: frees its state. */
static void free_state(px_ctx *ctx)
{
    free(px_state(ctx));
}

/* ======================================================================
 * aggregator: the counter service, behind a bounded mailbox
 * ====================================================================== */

typedef struct aggregator {
    totals t;
} aggregator;

static px_err aggregator_init(px_ctx *ctx, const px_msg *arg)
{
    (void)arg;
    aggregator *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        return PX_ENOMEM;
    }
    px_set_state(ctx, a);
    return PX_OK;
}

static px_err aggregator_receive(px_ctx *ctx, px_msg *msg)
{
    aggregator *a = px_state(ctx);
    size_t len = 0;
    const void *data = px_msg_data(msg, &len);
    switch (px_msg_tag(msg)) {
    case T_RESULT: {
        result_rec r;
        if (len != sizeof(r) || data == NULL) {
            px_fail(ctx, PX_ETYPE, "result of %zu bytes", len);
            return PX_ETYPE;
        }
        memcpy(&r, data, sizeof(r));
        a->t.records++;
        a->t.sum += r.val;
        a->t.key_sum[r.key % N_KEYS] += r.val;
        return PX_OK;
    }
    case T_QUERY: {
        px_msg *reply = NULL;
        px_err err = px_msg_bytes(&reply, T_TOTALS, &a->t, sizeof(a->t));
        if (err == PX_OK) {
            err = px_reply(ctx, msg, &reply);
        }
        px_msg_free(reply);
        return err;
    }
    case T_DONE: {
        totals p;
        if (len != sizeof(p) || data == NULL) {
            return PX_ETYPE;
        }
        memcpy(&p, data, sizeof(p));
        pthread_mutex_lock(&outcome.mtx);
        outcome.produced = p;
        outcome.aggregated = a->t;
        outcome.done = 1;
        outcome.done_ns = now_ns();
        pthread_cond_broadcast(&outcome.cv);
        pthread_mutex_unlock(&outcome.mtx);
        return PX_OK;
    }
    default:
        return PX_ETYPE;
    }
}

static const px_behavior aggregator_behavior = {
    .name = "demo.aggregator",
    .init = aggregator_init,
    .receive = aggregator_receive,
    .stop = free_state,
};

/* ======================================================================
 * worker: parse, validate, forward; keeps results the aggregator refused
 * ====================================================================== */

typedef struct worker {
    uint32_t idx;
    px_ref aggregator;
    px_ref producer;
    uint64_t completed; /* accepted by the aggregator + rejected */
    uint64_t acked;
    int retry_armed;
    uint32_t yields; /* consecutive yield-retries */
    int flush_requested;
    worker_report rep;
    /* results the aggregator refused, in order; <= WINDOW by flow control */
    result_rec pending[WINDOW];
    uint32_t pend_head;
    uint32_t pend_len;
} worker;

static px_err worker_init(px_ctx *ctx, const px_msg *arg)
{
    if (arg == NULL || px_msg_get_u64(arg) >= MAX_WORKERS) {
        return PX_EINVAL;
    }
    worker *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        return PX_ENOMEM;
    }
    w->idx = (uint32_t)px_msg_get_u64(arg);
    px_set_state(ctx, w);
    return PX_OK;
}

/* Parses "rec <seq> key <k> val <v> chk <hex>"; 0 on success. */
static int parse_record(const char *s, size_t n, result_rec *out)
{
    char buf[128];
    if (n == 0 || n >= sizeof(buf)) {
        return -1;
    }
    memcpy(buf, s, n);
    buf[n] = '\0';
    char *chk = strstr(buf, " chk ");
    if (chk == NULL) {
        return -1;
    }
    char *end = NULL;
    errno = 0;
    unsigned long sum = strtoul(chk + 5, &end, 16);
    if (errno != 0 || *end != '\0' || fnv1a(buf, (size_t)(chk - buf)) != (uint32_t)sum) {
        return -1;
    }
    *chk = '\0';
    unsigned long long seq = 0;
    unsigned key = 0, val = 0;
    int used = 0;
    if (sscanf(buf, "rec %llu key %u val %u%n", &seq, &key, &val, &used) != 3 ||
        buf[used] != '\0' || key >= N_KEYS) {
        return -1;
    }
    out->key = key;
    out->val = val;
    return 0;
}

/* Schedules a retry of the pending results: the first few times by
 * yielding (a 0 ms timer, so the aggregator gets a turn), then by a
 * RETRY_MS timer so a stalled aggregator does not cost a busy loop. */
static px_err worker_arm_retry(px_ctx *ctx, worker *w)
{
    if (w->retry_armed) {
        return PX_OK;
    }
    int yield = w->yields < FAST_RETRIES;
    /* Not px_send to self: a turn processes up to cfg.batch messages, so a
     * message to self is handled in the same turn and yields nothing. A
     * 0 ms timer comes back through the timer thread. */
    px_err err = send_tag_after(ctx, yield ? 0 : RETRY_MS, px_self(ctx), T_RETRY);
    if (err == PX_OK) {
        w->retry_armed = 1;
        if (yield) {
            w->yields++;
            w->rep.yields++;
        } else {
            w->yields = 0;
            w->rep.retries++;
        }
    }
    return err;
}

/* Tries to hand the oldest pending results to the aggregator. */
static px_err worker_flush(px_ctx *ctx, worker *w)
{
    while (w->pend_len > 0) {
        result_rec *r = &w->pending[w->pend_head];
        px_err err = send_bytes(ctx, w->aggregator, T_RESULT, r, sizeof(*r));
        if (err == PX_EFULL) {
            w->rep.full_events++;
            return worker_arm_retry(ctx, w);
        }
        if (err != PX_OK) {
            return err;
        }
        w->pend_head = (w->pend_head + 1) % WINDOW;
        w->pend_len--;
        w->yields = 0;
        w->rep.parsed++;
        w->completed++;
    }
    return PX_OK;
}

static px_err worker_maybe_ack(px_ctx *ctx, worker *w)
{
    uint64_t n = w->completed - w->acked;
    if (n == 0 || (n < ACK_EVERY && !w->flush_requested)) {
        return PX_OK;
    }
    ack_rec a = {.worker = w->idx, .completed = w->completed};
    px_err err = send_bytes(ctx, w->producer, T_ACK, &a, sizeof(a));
    if (err == PX_OK) {
        w->acked = w->completed;
    }
    return err;
}

static px_err worker_receive(px_ctx *ctx, px_msg *msg)
{
    worker *w = px_state(ctx);
    px_err err = PX_OK;
    switch (px_msg_tag(msg)) {
    case T_RECORD: {
        w->producer = px_msg_sender(msg);
        if (px_ref_is_nil(w->aggregator)) {
            err = px_whereis(px_ctx_system(ctx), "aggregator", &w->aggregator);
            if (err != PX_OK) {
                px_fail(ctx, err, "worker.%u: no aggregator", w->idx);
                return err;
            }
        }
        w->rep.received++;
        size_t len = 0;
        const char *text = px_msg_data(msg, &len);
        result_rec r;
        if (parse_record(text, len, &r) != 0) {
            w->rep.rejected++;
            w->completed++;
        } else {
            if (w->pend_len >= WINDOW) {
                px_fail(ctx, PX_ELIMIT, "worker.%u: pending overflow (flow control broken)",
                        w->idx);
                return PX_ELIMIT;
            }
            w->pending[(w->pend_head + w->pend_len) % WINDOW] = r;
            w->pend_len++;
            if (w->pend_len > w->rep.max_pending) {
                w->rep.max_pending = w->pend_len;
            }
            if (!w->retry_armed) {
                err = worker_flush(ctx, w);
            }
        }
        break;
    }
    case T_RETRY:
        w->retry_armed = 0;
        err = worker_flush(ctx, w);
        break;
    case T_FLUSH:
        w->producer = px_msg_sender(msg);
        w->flush_requested = 1;
        break;
    default:
        return PX_ETYPE;
    }
    if (err != PX_OK) {
        return err;
    }
    return worker_maybe_ack(ctx, w);
}

static void worker_stop(px_ctx *ctx)
{
    worker *w = px_state(ctx);
    if (w != NULL) {
        worker_reports[w->idx] = w->rep;
        free(w);
    }
}

static const px_behavior worker_behavior = {
    .name = "demo.worker",
    .init = worker_init,
    .receive = worker_receive,
    .stop = worker_stop,
};

/* ======================================================================
 * producer: generates records under per-worker credit windows
 * ====================================================================== */

typedef struct producer {
    uint32_t n_workers;
    px_ref workers[MAX_WORKERS];
    uint64_t sent[MAX_WORKERS];
    uint64_t acked[MAX_WORKERS];
    uint32_t rr;
    int running;
    int stopping;
    int kick_pending;
    int done_sent;
    uint64_t seq;
    totals t;
} producer;

static px_err producer_init(px_ctx *ctx, const px_msg *arg)
{
    if (arg == NULL || px_msg_get_u64(arg) == 0 || px_msg_get_u64(arg) > MAX_WORKERS) {
        return PX_EINVAL;
    }
    producer *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        return PX_ENOMEM;
    }
    p->n_workers = (uint32_t)px_msg_get_u64(arg);
    px_set_state(ctx, p);
    return PX_OK;
}

/* Index of the next worker with credit, or -1. */
static int producer_pick(producer *p)
{
    for (uint32_t i = 0; i < p->n_workers; i++) {
        uint32_t w = (p->rr + i) % p->n_workers;
        if (p->sent[w] - p->acked[w] < WINDOW) {
            p->rr = (w + 1) % p->n_workers;
            return (int)w;
        }
    }
    return -1;
}

static px_err producer_send_one(px_ctx *ctx, producer *p, uint32_t w)
{
    uint64_t seq = p->seq++;
    uint32_t key = (uint32_t)((seq * 2654435761u) % N_KEYS);
    uint32_t val = (uint32_t)((seq * 7919u) % 100000u);
    char buf[96];
    int n = snprintf(buf, sizeof(buf), "rec %" PRIu64 " key %u val %u", seq, key, val);
    uint32_t chk = fnv1a(buf, (size_t)n);
    int malformed = seq % MALFORMED_EVERY == MALFORMED_EVERY - 1;
    if (malformed) {
        chk ^= 0x5a5a5a5au; /* a corrupted record: its checksum does not match */
    }
    n += snprintf(buf + n, sizeof(buf) - (size_t)n, " chk %08x", chk);
    px_err err = send_bytes(ctx, p->workers[w], T_RECORD, buf, (size_t)n);
    if (err != PX_OK) {
        return err;
    }
    p->sent[w]++;
    if (malformed) {
        p->t.malformed++;
    } else {
        p->t.records++;
        p->t.sum += val;
        p->t.key_sum[key] += val;
    }
    return PX_OK;
}

static px_err producer_kick(px_ctx *ctx, producer *p)
{
    px_err err = send_tag(ctx, px_self(ctx), T_KICK);
    if (err == PX_OK) {
        p->kick_pending = 1;
        atomic_fetch_add_explicit(&producer_kicks, 1, memory_order_relaxed);
    }
    return err;
}

static px_err producer_pump(px_ctx *ctx, producer *p)
{
    uint32_t n = 0;
    while (p->running && n < CHUNK) {
        int w = producer_pick(p);
        if (w < 0) {
            return PX_OK; /* every window is full: an ack resumes us */
        }
        px_err err = producer_send_one(ctx, p, (uint32_t)w);
        if (err != PX_OK) {
            return err;
        }
        n++;
    }
    return p->running ? producer_kick(ctx, p) : PX_OK;
}

/* Once stopping and every record is acknowledged, report to the aggregator
 * (retrying while its mailbox is full). */
static px_err producer_try_finish(px_ctx *ctx, producer *p)
{
    if (!p->stopping || p->done_sent) {
        return PX_OK;
    }
    for (uint32_t i = 0; i < p->n_workers; i++) {
        if (p->acked[i] != p->sent[i]) {
            return PX_OK;
        }
    }
    px_ref agg;
    px_err err = px_whereis(px_ctx_system(ctx), "aggregator", &agg);
    if (err == PX_OK) {
        err = send_bytes(ctx, agg, T_DONE, &p->t, sizeof(p->t));
    }
    if (err == PX_EFULL) {
        return send_tag_after(ctx, RETRY_MS, px_self(ctx), T_STOP);
    }
    if (err == PX_OK) {
        p->done_sent = 1;
    }
    return err;
}

static px_err producer_receive(px_ctx *ctx, px_msg *msg)
{
    producer *p = px_state(ctx);
    switch (px_msg_tag(msg)) {
    case T_START:
        for (uint32_t i = 0; i < p->n_workers; i++) {
            char name[32];
            snprintf(name, sizeof(name), "worker.%u", i);
            px_err err = px_whereis(px_ctx_system(ctx), name, &p->workers[i]);
            if (err != PX_OK) {
                px_fail(ctx, err, "producer: whereis %s", name);
                return err;
            }
        }
        p->running = 1;
        return producer_pump(ctx, p);
    case T_KICK:
        p->kick_pending = 0;
        return producer_pump(ctx, p);
    case T_ACK: {
        ack_rec a;
        size_t len = 0;
        const void *data = px_msg_data(msg, &len);
        if (len != sizeof(a) || data == NULL) {
            return PX_ETYPE;
        }
        memcpy(&a, data, sizeof(a));
        if (a.worker >= p->n_workers || a.completed > p->sent[a.worker]) {
            px_fail(ctx, PX_EINVAL, "producer: bogus ack from worker %u", a.worker);
            return PX_EINVAL;
        }
        p->acked[a.worker] = a.completed;
        if (p->running && !p->kick_pending) {
            return producer_pump(ctx, p);
        }
        return producer_try_finish(ctx, p);
    }
    case T_STOP:
        if (!p->stopping) {
            p->running = 0;
            p->stopping = 1;
            for (uint32_t i = 0; i < p->n_workers; i++) {
                px_err err = send_tag(ctx, p->workers[i], T_FLUSH);
                if (err != PX_OK) {
                    return err;
                }
            }
        }
        return producer_try_finish(ctx, p);
    default:
        return PX_ETYPE;
    }
}

static const px_behavior producer_behavior = {
    .name = "demo.producer",
    .init = producer_init,
    .receive = producer_receive,
    .stop = free_state,
};

/* ======================================================================
 * monitor: periodic progress through px_ask
 * ====================================================================== */

typedef struct monitor {
    uint64_t last_records;
    uint64_t last_ns;
    uint64_t corr;
    int in_flight;
} monitor;

static px_err monitor_init(px_ctx *ctx, const px_msg *arg)
{
    (void)arg;
    monitor *m = calloc(1, sizeof(*m));
    if (m == NULL) {
        return PX_ENOMEM;
    }
    px_set_state(ctx, m);
    return PX_OK;
}

/* One tick: asks the aggregator for its totals unless an ask is out. */
static px_err monitor_query(px_ctx *ctx, monitor *mon)
{
    if (mon->in_flight) {
        return PX_OK;
    }
    px_ref agg;
    px_err err = px_whereis(px_ctx_system(ctx), "aggregator", &agg);
    if (err != PX_OK) {
        return PX_OK; /* not up yet, or gone at shutdown */
    }
    px_msg *q = NULL;
    err = px_msg_bytes(&q, T_QUERY, NULL, 0);
    if (err == PX_OK) {
        err = px_ask(ctx, agg, &q, QUERY_TIMEOUT_MS, &mon->corr);
    }
    px_msg_free(q);
    if (err == PX_EFULL) {
        /* The aggregator is saturated: that is the backpressure at work. */
        atomic_fetch_add_explicit(&queries_refused, 1, memory_order_relaxed);
        return PX_OK;
    }
    mon->in_flight = err == PX_OK;
    return err;
}

static px_err monitor_receive(px_ctx *ctx, px_msg *msg)
{
    monitor *mon = px_state(ctx);
    if (px_msg_kind_of(msg) == PX_MSG_ASK_TIMEOUT) {
        mon->in_flight = 0;
        atomic_fetch_add_explicit(&queries_refused, 1, memory_order_relaxed);
        return PX_OK;
    }
    if (px_msg_tag(msg) == T_START) {
        mon->last_ns = now_ns();
        return px_timer_every(ctx, TICK_MS, T_TICK, NULL);
    }
    if (px_msg_kind_of(msg) == PX_MSG_TIMER) {
        return monitor_query(ctx, mon);
    }
    if (px_msg_is_reply(msg) && px_msg_corr(msg) == mon->corr) {
        mon->in_flight = 0;
        totals t;
        size_t len = 0;
        const void *data = px_msg_data(msg, &len);
        if (len != sizeof(t) || data == NULL) {
            return PX_ETYPE;
        }
        memcpy(&t, data, sizeof(t));
        uint64_t now = now_ns();
        double dt = (double)(now - mon->last_ns) / 1e9;
        double rate = dt > 0 ? (double)(t.records - mon->last_records) / dt : 0.0;
        printf("[%5.1fs] aggregated %10" PRIu64 " records  %8.0f records/s\n",
               (double)(now - start_ns) / 1e9, t.records, rate);
        fflush(stdout);
        mon->last_records = t.records;
        mon->last_ns = now;
        atomic_fetch_add_explicit(&progress_reports, 1, memory_order_relaxed);
        return PX_OK;
    }
    return PX_ETYPE;
}

static const px_behavior monitor_behavior = {
    .name = "demo.monitor",
    .init = monitor_init,
    .receive = monitor_receive,
    .stop = free_state,
};

/* ======================================================================
 * pipeline: the parent of everything above
 * ====================================================================== */

static px_err pipeline_init(px_ctx *ctx, const px_msg *arg)
{
    size_t len = 0;
    const void *data = arg != NULL ? px_msg_data(arg, &len) : NULL;
    if (data == NULL || len != sizeof(demo_opts)) {
        return PX_EINVAL;
    }
    demo_opts *o = malloc(sizeof(*o));
    if (o == NULL) {
        return PX_ENOMEM;
    }
    memcpy(o, data, sizeof(*o));
    px_set_state(ctx, o);
    return PX_OK;
}

static px_err spawn_child(px_ctx *ctx, const char *behavior, uint64_t arg_value,
                          const px_spawn_opts *opts, px_ref *out)
{
    px_msg *arg = NULL;
    px_err err = px_msg_u64(&arg, 0, arg_value);
    if (err == PX_OK) {
        err = px_spawn_named(ctx, behavior, &arg, opts, out);
    }
    px_msg_free(arg);
    if (err != PX_OK) {
        px_fail(ctx, err, "spawn %s", behavior);
    }
    return err;
}

static px_err pipeline_receive(px_ctx *ctx, px_msg *msg)
{
    demo_opts *o = px_state(ctx);
    if (px_msg_tag(msg) != T_START) {
        return PX_ETYPE;
    }
    px_system *sys = px_ctx_system(ctx);

    px_mailbox_opts agg_box = {
        .capacity = o->capacity, .overflow = PX_OVERFLOW_ERROR, .block_timeout_ms = 0};
    px_spawn_opts agg_opts = {.mailbox = &agg_box, .name = NULL};
    px_ref agg, mon, prod;
    px_err err = spawn_child(ctx, "demo.aggregator", 0, &agg_opts, &agg);
    if (err != PX_OK) {
        return err;
    }
    err = px_register(sys, "aggregator", agg);
    if (err != PX_OK) {
        px_fail(ctx, err, "register aggregator");
        return err;
    }
    for (uint32_t i = 0; i < o->workers; i++) {
        char name[32];
        snprintf(name, sizeof(name), "worker.%u", i);
        px_spawn_opts wopts = {.mailbox = NULL, .name = name};
        err = spawn_child(ctx, "demo.worker", i, &wopts, NULL);
        if (err != PX_OK) {
            return err;
        }
    }
    px_spawn_opts mopts = {.mailbox = NULL, .name = "monitor"};
    px_spawn_opts popts = {.mailbox = NULL, .name = "producer"};
    if ((err = spawn_child(ctx, "demo.monitor", 0, &mopts, &mon)) != PX_OK ||
        (err = spawn_child(ctx, "demo.producer", o->workers, &popts, &prod)) != PX_OK) {
        return err;
    }
    if ((err = send_tag(ctx, mon, T_START)) != PX_OK ||
        (err = send_tag(ctx, prod, T_START)) != PX_OK) {
        return err;
    }
    /* The run ends on a timer, not a sleep. */
    return send_tag_after(ctx, o->seconds * 1000u, prod, T_STOP);
}

static px_directive pipeline_on_child_failure(px_ctx *ctx, const px_failure *f)
{
    px_log(px_ctx_system(ctx), PX_LOG_ERROR, "pipeline: child %s failed: %s (%s)",
           f->child_id, f->reason, px_strerror(f->code));
    return PX_DIRECTIVE_STOP; /* a lost worker would break the totals: let it show */
}

static const px_behavior pipeline_behavior = {
    .name = "demo.pipeline",
    .init = pipeline_init,
    .receive = pipeline_receive,
    .stop = free_state,
    .on_child_failure = pipeline_on_child_failure,
};

/* ======================================================================
 * main
 * ====================================================================== */

static void on_dead_letter(void *arg, px_ref target, const px_msg *m, px_err why)
{
    (void)arg;
    (void)target;
    (void)m;
    (void)why;
    atomic_fetch_add_explicit(&dead_letters_seen, 1, memory_order_relaxed);
}

static void usage(FILE *f, const char *argv0)
{
    fprintf(f,
            "usage: %s [--seconds N] [--workers N] [--capacity N] [--log-level L]\n"
            "          [--no-examples]\n"
            "  --seconds N    how long the producer runs (1..3600, default 3)\n"
            "  --workers N    parser/worker actors (1..%u, default 4)\n"
            "  --capacity N   aggregator mailbox capacity (1..1048576, default 1024)\n"
            "  --log-level L  trace|debug|info|warn|error|crit|off (default warn;\n"
            "                 the examples part logs at crit unless this is given)\n"
            "  --no-examples  skip the supervision examples after the pipeline\n",
            argv0, MAX_WORKERS);
}

static int parse_u32(const char *s, uint32_t lo, uint32_t hi, uint32_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

static int totals_equal(const totals *a, const totals *b)
{
    if (a->records != b->records || a->sum != b->sum) {
        return 0;
    }
    for (unsigned k = 0; k < N_KEYS; k++) {
        if (a->key_sum[k] != b->key_sum[k]) {
            return 0;
        }
    }
    return 1;
}

#define CHECK(cond, ...) DEMO_CHECK(ok, cond, __VA_ARGS__)

int main(int argc, char **argv)
{
    demo_opts o = {.seconds = 3, .workers = 4, .capacity = 1024};
    px_log_level level = PX_LOG_WARN;
    int level_given = 0;
    int examples = 1;
    static const struct option longopts[] = {
        {"seconds", required_argument, NULL, 's'},
        {"workers", required_argument, NULL, 'w'},
        {"capacity", required_argument, NULL, 'c'},
        {"log-level", required_argument, NULL, 'l'},
        {"no-examples", no_argument, NULL, 'E'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "s:w:c:l:h", longopts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 's': bad = parse_u32(optarg, 1, 3600, &o.seconds); break;
        case 'w': bad = parse_u32(optarg, 1, MAX_WORKERS, &o.workers); break;
        case 'c': bad = parse_u32(optarg, 1, 1u << 20, &o.capacity); break;
        case 'l': bad = px_log_level_parse(optarg, &level) != PX_OK; level_given = 1; break;
        case 'E': examples = 0; break;
        case 'h': usage(stdout, argv[0]); return 0;
        default: usage(stderr, argv[0]); return 2;
        }
        if (bad) {
            fprintf(stderr, "%s: bad value '%s' for --%s\n", argv[0], optarg,
                    c == 's' ? "seconds" : c == 'w' ? "workers" : c == 'c' ? "capacity" : "log-level");
            usage(stderr, argv[0]);
            return 2;
        }
    }
    if (optind != argc) {
        usage(stderr, argv[0]);
        return 2;
    }

    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&outcome.cv, &ca);
    pthread_condattr_destroy(&ca);

    px_config cfg;
    px_config_init(&cfg);
    cfg.node_name = "demo";
    cfg.log_level = level;
    px_system *sys = NULL;
    px_err err = px_system_alloc(&sys, &cfg);
    if (err != PX_OK) {
        fprintf(stderr, "plexus-demo: px_system_alloc: %s\n", px_strerror(err));
        return 1;
    }
    px_system_on_dead_letter(sys, on_dead_letter, NULL);
    const px_behavior *behaviors[] = {&pipeline_behavior, &aggregator_behavior,
                                      &worker_behavior, &producer_behavior, &monitor_behavior};
    for (size_t i = 0; i < sizeof(behaviors) / sizeof(behaviors[0]); i++) {
        if ((err = px_behavior_register(sys, behaviors[i])) != PX_OK) {
            fprintf(stderr, "plexus-demo: register %s: %s\n", behaviors[i]->name,
                    px_strerror(err));
            px_system_free(sys);
            return 1;
        }
    }

    printf("plexus-demo: node %s, %u workers, %u s, aggregator mailbox %u (policy error)\n",
           px_system_node_name(sys), o.workers, o.seconds, o.capacity);
    fflush(stdout);

    px_ref pipeline;
    px_msg *arg = NULL;
    px_msg *start = NULL;
    err = px_msg_bytes(&arg, 0, &o, sizeof(o));
    if (err == PX_OK) {
        err = px_system_spawn_named(sys, "demo.pipeline", &arg, NULL, &pipeline);
    }
    if (err == PX_OK) {
        err = px_msg_bytes(&start, T_START, NULL, 0);
    }
    start_ns = now_ns();
    if (err == PX_OK) {
        err = px_system_send(sys, pipeline, &start);
    }
    px_msg_free(arg);
    px_msg_free(start);
    if (err != PX_OK) {
        fprintf(stderr, "plexus-demo: start: %s\n", px_strerror(err));
        px_system_free(sys);
        return 1;
    }

    /* Wait for the aggregator's verdict, bounded. */
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += (time_t)o.seconds + 30;
    pthread_mutex_lock(&outcome.mtx);
    while (!outcome.done) {
        if (pthread_cond_timedwait(&outcome.cv, &outcome.mtx, &dl) == ETIMEDOUT) {
            break;
        }
    }
    int done = outcome.done;
    totals produced = outcome.produced;
    totals aggregated = outcome.aggregated;
    uint64_t done_ns = outcome.done_ns;
    pthread_mutex_unlock(&outcome.mtx);

    int ok = 1;
    CHECK(done, "the pipeline did not finish within %u s", o.seconds + 30);

    /* A final query from outside the actors, through the bounded mailbox. */
    totals queried = {0};
    int queried_ok = 0;
    px_ref agg;
    if (px_whereis(sys, "aggregator", &agg) == PX_OK) {
        for (int attempt = 0; attempt < 100 && !queried_ok; attempt++) {
            px_msg *q = NULL;
            px_msg *reply = NULL;
            err = px_msg_bytes(&q, T_QUERY, NULL, 0);
            if (err == PX_OK) {
                err = px_system_ask(sys, agg, &q, 2000, &reply);
            }
            px_msg_free(q);
            size_t len = 0;
            const void *data = reply != NULL ? px_msg_data(reply, &len) : NULL;
            if (err == PX_OK && data != NULL && len == sizeof(queried)) {
                memcpy(&queried, data, sizeof(queried));
                queried_ok = 1;
            } else if (err != PX_EFULL) {
                fprintf(stderr, "plexus-demo: final query: %s\n", px_strerror(err));
                px_msg_free(reply);
                break;
            }
            px_msg_free(reply);
        }
    }

    px_actor_stats agg_st = {0};
    int agg_st_ok = queried_ok && px_actor_stats_get(sys, agg, &agg_st) == PX_OK;

    px_system_stats st;
    px_system_stats_get(sys, &st);
    uint64_t dead_during_run = atomic_load(&dead_letters_seen);

    uint64_t t_sd = now_ns();
    px_err sd = px_system_shutdown(sys);
    double shutdown_ms = (double)(now_ns() - t_sd) / 1e6;
    px_system_stats st_end;
    px_system_stats_get(sys, &st_end);

    worker_report sum = {0};
    for (uint32_t i = 0; i < o.workers; i++) {
        sum.received += worker_reports[i].received;
        sum.parsed += worker_reports[i].parsed;
        sum.rejected += worker_reports[i].rejected;
        sum.full_events += worker_reports[i].full_events;
        sum.retries += worker_reports[i].retries;
        sum.yields += worker_reports[i].yields;
        if (worker_reports[i].max_pending > sum.max_pending) {
            sum.max_pending = worker_reports[i].max_pending;
        }
    }

    double secs = done ? (double)(done_ns - start_ns) / 1e9 : 0.0;
    uint64_t total_records = produced.records + produced.malformed;
    printf("plexus-demo: finished in %.2f s\n", secs);
    printf("  records produced      %12" PRIu64 "  (%" PRIu64 " valid, %" PRIu64
           " deliberately malformed)\n",
           total_records, produced.records, produced.malformed);
    printf("  records parsed        %12" PRIu64 "  (rejected %" PRIu64 ")\n", sum.parsed,
           sum.rejected);
    printf("  records aggregated    %12" PRIu64 "  sum %" PRIu64 "\n", aggregated.records,
           aggregated.sum);
    printf("  throughput            %12.0f records/s end to end\n",
           secs > 0 ? (double)total_records / secs : 0.0);
    for (uint32_t i = 0; i < o.workers; i++) {
        printf("    worker.%-3u received %10" PRIu64 "  parsed %10" PRIu64 "  rejected %6" PRIu64
               "  mailbox-full %6" PRIu64 "\n",
               i, worker_reports[i].received, worker_reports[i].parsed,
               worker_reports[i].rejected, worker_reports[i].full_events);
    }
    if (agg_st_ok) {
        printf("  aggregator mailbox    %12" PRIu64 "  messages processed, high-water mark %" PRIu64
               " of capacity %u\n",
               agg_st.processed, agg_st.hwm, agg_st.capacity);
    }
    printf("  backpressure          %12" PRIu64 "  aggregator-full refusals (retried %" PRIu64
           " times by yielding, %" PRIu64 " on a timer; max %" PRIu64
           " results held by one worker)\n",
           sum.full_events, sum.yields, sum.retries, sum.max_pending);
    printf("  progress reports      %12" PRIu64 "  (%" PRIu64 " queries refused or timed out)\n",
           atomic_load(&progress_reports), atomic_load(&queries_refused));
    printf("  producer turns        %12" PRIu64 "\n", atomic_load(&producer_kicks));
    printf("  actor messages        %12" PRIu64 "  (spawned %" PRIu64 ", failures %" PRIu64
           ", rejected sends %" PRIu64 ", ask timeouts %" PRIu64 ")\n",
           st.messages, st.spawned, st.failures, st.rejected, st.ask_timeouts);
    printf("  dead letters          %12" PRIu64 "  during the run (%" PRIu64
           " by the end of shutdown; hook saw %" PRIu64 ")\n",
           st.dead_letters, st_end.dead_letters, atomic_load(&dead_letters_seen));
    printf("  shutdown              %12.1f ms  (%s; %" PRIu64 " actors stopped)\n", shutdown_ms,
           px_strerror(sd), st_end.stopped);

    CHECK(totals_equal(&produced, &aggregated),
          "aggregated totals (%" PRIu64 " records, sum %" PRIu64
          ") differ from produced (%" PRIu64 ", sum %" PRIu64 ")",
          aggregated.records, aggregated.sum, produced.records, produced.sum);
    CHECK(!queried_ok || totals_equal(&queried, &aggregated),
          "final px_system_ask totals differ from the verdict");
    CHECK(queried_ok, "final px_system_ask query failed");
    CHECK(sum.rejected == produced.malformed, "workers rejected %" PRIu64 ", injected %" PRIu64,
          sum.rejected, produced.malformed);
    CHECK(sum.parsed == produced.records, "workers parsed %" PRIu64 ", produced %" PRIu64,
          sum.parsed, produced.records);
    CHECK(sum.received == total_records, "workers received %" PRIu64 ", produced %" PRIu64,
          sum.received, total_records);
    CHECK(produced.records > 0, "nothing was produced");
    CHECK(!agg_st_ok || (agg_st.capacity == o.capacity && agg_st.hwm <= o.capacity),
          "aggregator mailbox: capacity %u, high-water mark %" PRIu64 " (configured %u)",
          agg_st.capacity, agg_st.hwm, o.capacity);
    CHECK(st_end.failures == 0, "%" PRIu64 " actor failures", st_end.failures);
    CHECK(dead_during_run == 0 && st.dead_letters == 0,
          "%" PRIu64 " dead letters during the run", st.dead_letters);
    CHECK(sd == PX_OK, "shutdown: %s", px_strerror(sd));
    printf("plexus-demo: %s\n", ok ? "all totals check out" : "FAILED");
    px_system_free(sys);
    pthread_cond_destroy(&outcome.cv);
    if (examples) {
        /* The examples fail on purpose: their logs stay quiet by default. */
        int ex_ok = demo_run_examples(level_given ? level : PX_LOG_CRIT);
        printf("plexus-demo: examples %s\n",
               ex_ok ? "restarted exactly what their strategies say" : "FAILED");
        ok = ok && ex_ok;
    }
    return ok ? 0 : 1;
}
