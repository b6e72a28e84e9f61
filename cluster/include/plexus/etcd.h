/*
 * plexus/etcd.h — an etcd v3 client over etcd's HTTP/JSON gateway (libcurl's
 * multi interface, jansson, libsodium base64).
 *
 * One client owns one thread that drives every transfer: calls from any
 * thread queue a request and return at once; the request's callback runs
 * later on the client's thread (never on a scheduler worker) with the
 * result, which it borrows for the duration of the call. A callback must
 * not block; it may start more requests. An async call that returns an
 * error never invokes its callback.
 *
 * Every etcd error becomes a px_err, with etcd's (or curl's) message kept in
 * the result for the log:
 *   PX_EUNREACHABLE  no endpoint answered (connection refused or reset)
 *   PX_ETIMEDOUT     the request's deadline passed
 *   PX_ENOENT        lease not found / expired (a keepalive without TTL)
 *   PX_EEXIST        create-if-absent lost, lease already exists
 *   PX_ECOMPACTED    the revision asked for was compacted
 *   PX_EAUTH         authentication failed, or TLS peer verification
 *   PX_EINVAL        etcd refused the request as invalid
 *   PX_EPROTO        a response that is not what the gateway sends
 *   PX_ELIMIT        a response over 64 MiB, or etcd's resource limit
 *   PX_ENOMEM        out of memory
 *   PX_EIO           any other HTTP or etcd failure
 * Errors are counted (px_etcd_stats) and logged once per streak: the first
 * failure after a success at WARN, repeats at DEBUG.
 *
 * Several endpoints (an etcd cluster) are tried in turn: a request that
 * cannot connect moves the client to the next endpoint and is retried there
 * while its deadline allows. https endpoints verify the server against
 * ca_file; user/password turns on etcd authentication (a token, renewed
 * when etcd says it is invalid).
 *
 * Quirks of the gateway this hides (see ../shared/notes/deps.md §1): int64s
 * travel as strings, zero values are omitted (a failed txn has no
 * "succeeded"), a keepalive for a dead lease is HTTP 200 without TTL.
 */
#ifndef PLEXUS_ETCD_H
#define PLEXUS_ETCD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <plexus/error.h>
#include <plexus/log.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct px_etcd px_etcd;

typedef struct px_etcd_cfg {
    /* Comma-separated base URLs, "http://127.0.0.1:2379,https://h2:2379".
     * Required. */
    const char *endpoints;
    /* https: the CA bundle that signs the servers' certificates (NULL: the
     * system's). Client certificate and key, both or neither (optional). */
    const char *ca_file;
    const char *cert_file;
    const char *key_file;
    /* etcd authentication: both or neither. The password is copied and
     * never logged. */
    const char *user;
    const char *password;
    uint32_t request_timeout_ms; /* unary request deadline; default 3000 */
    uint32_t connect_timeout_ms; /* per connection attempt; default 1000 */
    uint32_t watch_retry_max_ms; /* cap of a watch's reconnect backoff; default 2000 */
    /* Where the client logs (NULL: px_log_stderr), at or above log_level
     * (default PX_LOG_INFO), with log_name as the node field. */
    px_log_sink log;
    void *log_arg;
    const char *log_name;
    px_log_level log_level;
} px_etcd_cfg;

/* Fills cfg with the defaults (endpoints NULL). */
void px_etcd_cfg_init(px_etcd_cfg *cfg);

/* One key-value pair. key is NUL-terminated as well (key_len excludes the
 * NUL); value is NUL-terminated too, for convenience. */
typedef struct px_etcd_kv {
    const char *key;
    size_t key_len;
    const uint8_t *value;
    size_t value_len;
    int64_t create_rev;
    int64_t mod_rev;
    int64_t version;
    int64_t lease;
} px_etcd_kv;

/* What a request returned. Fields an operation does not fill stay 0. */
typedef struct px_etcd_res {
    px_err err;
    int http_status;     /* 0 when no HTTP response came */
    int code;            /* etcd's (gRPC) error code, 0 if none */
    const char *msg;     /* etcd's or curl's message; "" on success */
    int64_t revision;    /* header.revision */
    int64_t lease_id;    /* grant, keepalive, time-to-live */
    int64_t ttl;         /* grant, keepalive, time-to-live (seconds) */
    int64_t granted_ttl; /* time-to-live */
    bool succeeded;      /* txn: the compare held */
    bool more;           /* range: truncated by limit */
    int64_t count;       /* range: matching keys; delete: deleted keys */
    size_t nkvs;         /* range/txn: the pairs; put/delete: previous values */
    px_etcd_kv *kvs;
} px_etcd_res;

/* Called once per request on the client's thread; res is borrowed. */
typedef void (*px_etcd_cb)(void *arg, const px_etcd_res *res);

/* Starts a client (its thread, no connection yet: the first request
 * connects). PX_EINVAL (no endpoint, an endpoint that is not http(s)://,
 * user without password), PX_ENOMEM, PX_ESYS (curl or the thread failed).
 * err gets a one-line reason. On failure *out stays NULL. */
px_err px_etcd_open(px_etcd **out, const px_etcd_cfg *cfg, char *err, size_t errlen);

/* Cancels every request and watch (their callbacks run with PX_ECLOSED,
 * on the caller's thread), joins the thread and frees the client. Watch
 * handles are invalid afterwards, and no px_etcd_watch_stop may race it.
 * NULL-safe. Not from a callback of this client. */
void px_etcd_close(px_etcd *e);

/* True on the client's own thread (inside its callbacks). Thread-safe. */
bool px_etcd_on_thread(const px_etcd *e);

/* ---- leases ---- */

/* Grants a lease of ttl_s seconds (etcd's minimum is 2): res.lease_id,
 * res.ttl. Thread-safe. */
px_err px_etcd_lease_grant(px_etcd *e, int64_t ttl_s, px_etcd_cb cb, void *arg);
/* One keepalive: res.ttl > 0, or PX_ENOENT when the lease is gone. */
px_err px_etcd_lease_keepalive(px_etcd *e, int64_t lease, px_etcd_cb cb, void *arg);
/* Revokes (and so deletes every key attached): PX_ENOENT if already gone. */
px_err px_etcd_lease_revoke(px_etcd *e, int64_t lease, px_etcd_cb cb, void *arg);
/* Time to live: res.ttl, res.granted_ttl, the attached keys in res.kvs
 * (key only). PX_ENOENT if the lease is gone. */
px_err px_etcd_lease_ttl(px_etcd *e, int64_t lease, px_etcd_cb cb, void *arg);

/* ---- keys ---- */

/* Puts key = value (lease 0: none). res.revision; the previous value, if
 * any, in res.kvs. */
px_err px_etcd_put(px_etcd *e, const char *key, const void *value, size_t len, int64_t lease,
                   px_etcd_cb cb, void *arg);
/* Reads key, or every key under it when prefix (sorted by key), at the
 * current revision (revision 0) or an older one; limit 0 = all. res.kvs,
 * res.count, res.more, res.revision. */
px_err px_etcd_get(px_etcd *e, const char *key, bool prefix, int64_t revision, int64_t limit,
                   px_etcd_cb cb, void *arg);
/* Deletes key (or the prefix): res.count deleted, the old pairs in res.kvs. */
px_err px_etcd_delete(px_etcd *e, const char *key, bool prefix, px_etcd_cb cb, void *arg);

/* Compacts the key history up to revision (watches from an older one must
 * read everything again). res.revision. */
px_err px_etcd_compact(px_etcd *e, int64_t revision, px_etcd_cb cb, void *arg);

/* ---- transactions ---- */

typedef enum px_etcd_target {
    PX_ETCD_VERSION = 0,
    PX_ETCD_CREATE = 1, /* create revision (0: the key does not exist) */
    PX_ETCD_MOD = 2,
    PX_ETCD_VALUE = 3,
    PX_ETCD_LEASE = 4,
} px_etcd_target;

typedef enum px_etcd_relation {
    PX_ETCD_EQUAL = 0,
    PX_ETCD_GREATER = 1,
    PX_ETCD_LESS = 2,
    PX_ETCD_NOT_EQUAL = 3,
} px_etcd_relation;

/* One comparison: target(key) relation number (or value, for
 * PX_ETCD_VALUE). */
typedef struct px_etcd_cmp {
    const char *key;
    px_etcd_target target;
    px_etcd_relation rel;
    int64_t num;
    const void *value;
    size_t value_len;
} px_etcd_cmp;

typedef enum px_etcd_op_kind { PX_ETCD_OP_PUT, PX_ETCD_OP_GET, PX_ETCD_OP_DELETE } px_etcd_op_kind;

/* One operation of a transaction branch. prefix applies to GET and DELETE. */
typedef struct px_etcd_op {
    px_etcd_op_kind kind;
    const char *key;
    bool prefix;
    const void *value; /* PUT */
    size_t value_len;
    int64_t lease;     /* PUT; 0 = none */
} px_etcd_op;

/* If every comparison holds, runs the success operations, otherwise the
 * failure ones — atomically. res.succeeded; res.kvs collects the pairs of
 * the branch's GETs in order; res.revision. Everything is copied before
 * the call returns. */
px_err px_etcd_txn(px_etcd *e, const px_etcd_cmp *cmp, size_t ncmp, const px_etcd_op *ok,
                   size_t nok, const px_etcd_op *fail, size_t nfail, px_etcd_cb cb, void *arg);

/* Creates key = value (attached to lease) only if the key does not exist:
 * PX_OK with res.revision, or PX_EEXIST with the current pair in
 * res.kvs[0] (when it still exists). */
px_err px_etcd_create(px_etcd *e, const char *key, const void *value, size_t len, int64_t lease,
                      px_etcd_cb cb, void *arg);

/* ---- watches ---- */

typedef struct px_etcd_watch px_etcd_watch;

typedef struct px_etcd_event {
    bool is_delete;  /* a DELETE (explicit or a lease's expiry), else a PUT */
    px_etcd_kv kv;   /* for a DELETE only key and mod_rev are set */
    bool has_prev;
    px_etcd_kv prev; /* the value before the event, when etcd still had it */
} px_etcd_event;

/* A watch's callbacks, all on the client's thread, never concurrently.
 *  - sync: the whole current state under the key at revision rev — first
 *    when the watch starts without a start revision, again whenever the
 *    next revision to watch from was compacted (the consumer diffs against
 *    what it had: events in between are lost). Required.
 *  - events: changes at revision rev, in order; each revision once.
 *  - state: the stream connected (PX_OK) or broke (the error); the watch
 *    reconnects by itself from the revision after the last one seen, with
 *    capped backoff. Optional. */
typedef struct px_etcd_watch_cbs {
    void (*sync)(void *arg, int64_t rev, const px_etcd_kv *kvs, size_t n);
    void (*events)(void *arg, int64_t rev, const px_etcd_event *ev, size_t n);
    void (*state)(void *arg, px_err err, const char *msg);
} px_etcd_watch_cbs;

/* Watches key (or everything under it when prefix). start_rev 0: read the
 * current state (sync), then watch from the revision after it; start_rev >
 * 0: watch from there (sync only if it was compacted). Thread-safe; the
 * callbacks start on the client's thread. cbs is copied. *out is the handle
 * for px_etcd_watch_stop. */
px_err px_etcd_watch_start(px_etcd *e, const char *key, bool prefix, int64_t start_rev,
                           const px_etcd_watch_cbs *cbs, void *arg, px_etcd_watch **out);

/* Drops the stream and reconnects at once from the revision after the last
 * one seen (no event is lost or repeated). For a consumer that suspects the
 * connection (etcd paused: an idle stream cannot tell). Thread-safe. */
void px_etcd_watch_kick(px_etcd_watch *w);

/* Stops and frees w: no callback of it starts after this returns (from
 * another thread it waits for one that is running). Thread-safe, also from
 * the client's own callbacks. NULL-safe. */
void px_etcd_watch_stop(px_etcd_watch *w);

/* ---- results, waiting, counters ---- */

/* A deep copy of res (for keeping it past the callback). Caller owns
 * *out; px_etcd_res_free. PX_ENOMEM. */
px_err px_etcd_res_copy(const px_etcd_res *res, px_etcd_res **out);
void px_etcd_res_free(px_etcd_res *res);

/* A waiter turns an async call into a blocking one (not from the client's
 * thread):
 *     px_etcd_waiter *w;  px_etcd_res *r;
 *     px_etcd_waiter_alloc(&w);
 *     if (px_etcd_put(e, k, v, n, 0, px_etcd_waiter_cb, w) == PX_OK)
 *         px_etcd_waiter_take(w, &r);   // waits; frees w; r is yours
 *     else
 *         px_etcd_waiter_free(w);
 * take waits at most as long as the request's own deadline (watches aside,
 * every request has one). */
typedef struct px_etcd_waiter px_etcd_waiter;
px_err px_etcd_waiter_alloc(px_etcd_waiter **out);
void px_etcd_waiter_cb(void *waiter, const px_etcd_res *res);
/* Waits for the result, frees the waiter, and returns the result's err
 * (PX_ENOMEM if it could not be copied: *out NULL). *out: caller owns. */
px_err px_etcd_waiter_take(px_etcd_waiter *w, px_etcd_res **out);
void px_etcd_waiter_free(px_etcd_waiter *w);

typedef struct px_etcd_stats {
    uint64_t requests;        /* unary requests completed */
    uint64_t errors;          /* of those, failed */
    uint64_t bad_responses;   /* responses that could not be parsed */
    uint64_t failovers;       /* moves to the next endpoint */
    uint64_t watch_connects;  /* watch streams (re)connected */
    uint64_t watch_syncs;     /* full reads of a watched range */
    uint64_t last_latency_us; /* of the last successful unary request */
    uint64_t max_latency_us;
    uint64_t latency_sum_us;  /* successful requests; / (requests - errors) */
} px_etcd_stats;

/* A snapshot of the counters. Thread-safe; cannot fail. */
void px_etcd_stats_get(px_etcd *e, px_etcd_stats *out);

/* The endpoint in use now ("http://127.0.0.1:2379"), borrowed: valid until
 * px_etcd_close. Thread-safe. */
const char *px_etcd_endpoint(px_etcd *e);

#ifdef __cplusplus
}
#endif
#endif
