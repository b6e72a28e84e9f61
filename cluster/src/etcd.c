/*
 * etcd.c — the etcd v3 client: JSON over HTTP to etcd's gRPC gateway.
 *
 * Design. One thread (the "loop") owns a curl multi handle and every easy
 * handle. Callers on any thread build a request (its JSON body made with
 * jansson, keys and values base64'd by libsodium) and push it on the
 * submit queue under e->mtx, then wake the loop (curl_multi_wakeup). The
 * loop starts transfers, reads completions, parses the JSON and runs the
 * request's callback with no lock held. Watches are loop-owned state
 * machines: SYNC (a range read of the whole key space) → STREAM (a POST to
 * /v3/watch whose chunked response is one JSON object per line) → on a
 * break, WAIT (capped exponential backoff) → STREAM again from the revision
 * after the last one delivered, or SYNC when etcd says that revision was
 * compacted.
 *
 * Invariants.
 *  - Everything but the submit queue, the stop tickets, kick flags and the
 *    counters is touched only by the loop thread.
 *  - A request's callback runs exactly once (the loop, or px_etcd_close
 *    with PX_ECLOSED); a watch's callbacks never after px_etcd_watch_stop
 *    returned.
 *  - Only requests that never reached etcd (connect failed) are retried on
 *    the next endpoint, so nothing is applied twice.
 *
 * Concurrency: e->mtx guards sub (the submit queue), stop/kick requests and
 * the stats; e->cv signals stop tickets. User callbacks run without it.
 */
#include <plexus/etcd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <nng/nng.h>
#include <nng/supplemental/util/platform.h>
#include <sodium.h>

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ENDPOINTS 16
#define MAX_BODY (64u << 20) /* a response body larger than this is refused */
#define MSG_LEN 256

typedef enum rkind { R_UNARY, R_AUTH, R_STREAM } rkind;

typedef struct req req;
typedef int (*parse_fn)(req *r, json_t *root, px_etcd_res *res);

typedef struct buf {
    char *p;
    size_t len, cap;
} buf;

/* One HTTP request. Loop-owned once submitted. */
struct req {
    req *next;
    px_etcd *e;
    rkind kind;
    const char *path; /* "/v3/kv/put" (static) */
    char *body;       /* JSON (owned) */
    px_etcd_cb cb;
    void *arg;
    parse_fn parse;
    px_etcd_watch *w; /* R_STREAM, or the watch a sync read belongs to */
    int64_t t0_ms, deadline_ms;
    int ep;            /* the endpoint of the transfer in flight */
    int tries;         /* endpoints tried */
    bool auth_retried; /* re-authenticated once already */
    CURL *h;
    struct curl_slist *hdrs;
    buf resp;
    char errbuf[CURL_ERROR_SIZE];
};

typedef enum wstate { W_SYNC, W_STREAM, W_WAIT, W_DEAD } wstate;

typedef struct stop_ticket {
    bool done;
} stop_ticket;

struct px_etcd_watch {
    px_etcd_watch *next; /* e->watches (loop) or e->wsub (submitted) */
    px_etcd *e;
    char *key;        /* the plain key (for the sync read) */
    bool prefix;
    px_etcd_watch_cbs cbs;
    void *arg;
    /* loop only */
    wstate st;
    int64_t next_rev; /* the revision to watch from; 0 = sync first */
    int64_t due_ms;   /* W_WAIT: when to try again */
    uint32_t backoff_ms;
    req *active;      /* the sync read or the stream in flight */
    buf line;         /* stream bytes not yet a whole line */
    bool resync;      /* the stream ended because of compaction */
    bool stopped;     /* no callback may run any more */
    /* e->mtx */
    bool kick;
    stop_ticket *ticket; /* a stop from another thread waits on this */
    bool stop_req;
};

struct px_etcd {
    px_etcd_cfg cfg;
    char *endpoints[MAX_ENDPOINTS];
    int nep;
    char *ca_file, *cert_file, *key_file, *user, *password, *log_name;
    nng_thread *thr;
    CURLM *multi;
    /* e->mtx */
    nng_mtx *mtx;
    nng_cv *cv;
    req *sub, **sub_tail;
    px_etcd_watch *wsub;
    bool closing;
    bool wake_pending;
    px_etcd_stats st;
    int cur; /* endpoint in use (written by the loop, read by px_etcd_endpoint) */
    /* loop only */
    req *active; /* unary, auth and stream transfers in flight */
    px_etcd_watch *watches;
    char *token;   /* etcd auth token */
    req *auth;     /* the authenticate request in flight */
    req *authwait; /* requests waiting for a token */
    bool failing;  /* in an error streak (logging) */
};

static _Thread_local px_etcd *tl_loop; /* the client whose loop runs on this thread */

/* ---- small things ---- */

static int64_t now_ms(void) {
    return (int64_t)nng_clock();
}

static void elog(px_etcd *e, px_log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void elog(px_etcd *e, px_log_level lvl, const char *fmt, ...) {
    if (lvl < e->cfg.log_level) {
        return;
    }
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    px_log_sink sink = e->cfg.log != NULL ? e->cfg.log : px_log_stderr;
    sink(e->cfg.log_arg, lvl, e->log_name != NULL ? e->log_name : "etcd", line);
}

static bool buf_add(buf *b, const void *p, size_t n, size_t max) {
    if (b->len + n + 1 > max) {
        return false;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap == 0 ? 1024 : b->cap;
        while (cap < b->len + n + 1) {
            cap *= 2;
        }
        char *q = realloc(b->p, cap);
        if (q == NULL) {
            return false;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0';
    return true;
}

static void buf_fini(buf *b) {
    free(b->p);
    *b = (buf){0};
}

static char *dupstr(const char *s) {
    return s == NULL ? NULL : strdup(s);
}

/* Standard base64 with padding (the gateway's bytes encoding). NULL: no
 * memory. */
static char *b64(const void *p, size_t n) {
    size_t len = sodium_base64_encoded_len(n, sodium_base64_VARIANT_ORIGINAL);
    char *s = malloc(len);
    if (s != NULL) {
        sodium_bin2base64(s, len, p, n, sodium_base64_VARIANT_ORIGINAL);
    }
    return s;
}

/* Decodes base64 into a fresh NUL-terminated buffer. false: bad input or
 * no memory. */
static bool unb64(const char *s, uint8_t **out, size_t *n) {
    size_t sl = strlen(s);
    uint8_t *p = malloc(sl / 4 * 3 + 4);
    size_t got = 0;
    if (p == NULL || sodium_base642bin(p, sl / 4 * 3 + 3, s, sl, NULL, &got, NULL,
                                       sodium_base64_VARIANT_ORIGINAL) != 0) {
        free(p);
        return false;
    }
    p[got] = 0;
    *out = p;
    *n = got;
    return true;
}

/* The end of the range of every key that starts with key: the key with its
 * last byte incremented (dropping trailing 0xff bytes), or "\0" (to the end
 * of the key space). Caller frees. */
static char *prefix_end(const char *key, size_t *n) {
    size_t len = strlen(key);
    char *p = malloc(len + 1);
    if (p == NULL) {
        return NULL;
    }
    memcpy(p, key, len + 1);
    while (len > 0) {
        if ((uint8_t)p[len - 1] != 0xff) {
            p[len - 1] = (char)((uint8_t)p[len - 1] + 1);
            *n = len;
            return p;
        }
        len--;
    }
    p[0] = '\0';
    *n = 1;
    return p;
}

/* An int64 field that may come as a JSON string or number; missing = 0.
 * false if present but not a number. */
static bool j_i64(json_t *o, const char *k, int64_t *out) {
    json_t *v = json_object_get(o, k);
    *out = 0;
    if (v == NULL || json_is_null(v)) {
        return true;
    }
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return true;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end = NULL;
        long long x = strtoll(s, &end, 10);
        if (end == s || *end != '\0') {
            return false;
        }
        *out = x;
        return true;
    }
    return false;
}

static json_t *j_b64(const void *p, size_t n) {
    char *s = b64(p, n);
    json_t *j = s != NULL ? json_string(s) : NULL;
    free(s);
    return j;
}

/* Sets o[k] (a fresh reference); false if v is NULL or setting failed. */
static bool j_set(json_t *o, const char *k, json_t *v) {
    return v != NULL && json_object_set_new(o, k, v) == 0;
}

static json_t *j_i64s(int64_t x) {
    char s[24];
    snprintf(s, sizeof(s), "%lld", (long long)x);
    return json_string(s);
}

/* key (and range_end for a prefix) into o. */
static bool j_key(json_t *o, const char *key, bool prefix) {
    if (prefix && key[0] == '\0') { /* every key: "\0" to "\0" */
        return j_set(o, "key", json_string("AA==")) && j_set(o, "range_end", json_string("AA=="));
    }
    if (!j_set(o, "key", j_b64(key, strlen(key)))) {
        return false;
    }
    if (prefix) {
        size_t n = 0;
        char *end = prefix_end(key, &n);
        bool ok = end != NULL && j_set(o, "range_end", j_b64(end, n));
        free(end);
        return ok;
    }
    return true;
}

/* A fresh object holding key (and range_end); NULL: no memory. */
static json_t *key_obj(const char *key, bool prefix) {
    json_t *o = json_object();
    if (o != NULL && !j_key(o, key, prefix)) {
        json_decref(o);
        o = NULL;
    }
    return o;
}

/* ---- results ---- */

static void kv_fini(px_etcd_kv *kv) {
    free((void *)(uintptr_t)kv->key);
    free((void *)(uintptr_t)kv->value);
}

static void res_fini(px_etcd_res *r) {
    for (size_t i = 0; i < r->nkvs; i++) {
        kv_fini(&r->kvs[i]);
    }
    free(r->kvs);
    r->kvs = NULL;
    r->nkvs = 0;
}

/* Parses one mvccpb.KeyValue. false on a malformed one. */
static bool parse_kv(json_t *o, px_etcd_kv *kv) {
    *kv = (px_etcd_kv){0};
    if (!json_is_object(o)) {
        return false;
    }
    const char *k = json_string_value(json_object_get(o, "key"));
    const char *v = json_string_value(json_object_get(o, "value"));
    uint8_t *kb = NULL, *vb = NULL;
    size_t kn = 0, vn = 0;
    if (k == NULL || !unb64(k, &kb, &kn)) {
        return false;
    }
    if (!unb64(v != NULL ? v : "", &vb, &vn)) {
        free(kb);
        return false;
    }
    kv->key = (const char *)kb;
    kv->key_len = kn;
    kv->value = vb;
    kv->value_len = vn;
    if (!j_i64(o, "create_revision", &kv->create_rev) ||
        !j_i64(o, "mod_revision", &kv->mod_rev) || !j_i64(o, "version", &kv->version) ||
        !j_i64(o, "lease", &kv->lease)) {
        kv_fini(kv);
        return false;
    }
    return true;
}

/* Appends the KeyValues of array arr to res. */
static bool add_kvs(px_etcd_res *res, json_t *arr) {
    if (arr == NULL) {
        return true;
    }
    if (!json_is_array(arr)) {
        return false;
    }
    size_t n = json_array_size(arr);
    if (n == 0) {
        return true;
    }
    px_etcd_kv *kvs = realloc(res->kvs, (res->nkvs + n) * sizeof(*kvs));
    if (kvs == NULL) {
        return false;
    }
    res->kvs = kvs;
    for (size_t i = 0; i < n; i++) {
        if (!parse_kv(json_array_get(arr, i), &res->kvs[res->nkvs])) {
            return false;
        }
        res->nkvs++;
    }
    return true;
}

static bool header_rev(json_t *o, px_etcd_res *res) {
    json_t *h = json_object_get(o, "header");
    return h == NULL || j_i64(h, "revision", &res->revision);
}

static int parse_none(req *r, json_t *root, px_etcd_res *res) {
    (void)r;
    return header_rev(root, res) ? 0 : -1;
}

static int parse_lease(req *r, json_t *root, px_etcd_res *res) {
    (void)r;
    if (!header_rev(root, res) || !j_i64(root, "ID", &res->lease_id) ||
        !j_i64(root, "TTL", &res->ttl)) {
        return -1;
    }
    return 0;
}

static int parse_keepalive(req *r, json_t *root, px_etcd_res *res) {
    json_t *inner = json_object_get(root, "result");
    if (inner == NULL) {
        /* a stream-level error: {"error":{"grpc_code":..,"message":..}} */
        return json_object_get(root, "error") != NULL ? -2 : -1;
    }
    if (parse_lease(r, inner, res) != 0) {
        return -1;
    }
    if (res->ttl <= 0) {
        res->err = PX_ENOENT; /* no TTL: the lease is gone */
        snprintf(r->errbuf, sizeof(r->errbuf), "lease %lld not found or expired",
                 (long long)res->lease_id);
    }
    return 0;
}

static int parse_ttl(req *r, json_t *root, px_etcd_res *res) {
    if (parse_lease(r, root, res) != 0 || !j_i64(root, "grantedTTL", &res->granted_ttl)) {
        return -1;
    }
    if (res->ttl < 0) {
        res->err = PX_ENOENT;
        snprintf(r->errbuf, sizeof(r->errbuf), "lease %lld not found or expired",
                 (long long)res->lease_id);
        return 0;
    }
    json_t *keys = json_object_get(root, "keys");
    if (keys != NULL) {
        if (!json_is_array(keys)) {
            return -1;
        }
        size_t n = json_array_size(keys);
        res->kvs = calloc(n > 0 ? n : 1, sizeof(*res->kvs));
        if (res->kvs == NULL) {
            return -1;
        }
        for (size_t i = 0; i < n; i++) {
            const char *k = json_string_value(json_array_get(keys, i));
            uint8_t *kb = NULL;
            size_t kn = 0;
            if (k == NULL || !unb64(k, &kb, &kn)) {
                return -1;
            }
            res->kvs[res->nkvs++] = (px_etcd_kv){.key = (const char *)kb, .key_len = kn};
        }
    }
    return 0;
}

static int parse_put(req *r, json_t *root, px_etcd_res *res) {
    (void)r;
    json_t *prev = json_object_get(root, "prev_kv");
    if (!header_rev(root, res)) {
        return -1;
    }
    if (prev != NULL) {
        json_t *arr = json_array();
        bool ok = arr != NULL && json_array_append(arr, prev) == 0 && add_kvs(res, arr);
        json_decref(arr);
        return ok ? 0 : -1;
    }
    return 0;
}

/* header.revision, a count field and a list of pairs. */
static int counted_kvs(json_t *root, px_etcd_res *res, const char *count, const char *kvs) {
    return header_rev(root, res) && j_i64(root, count, &res->count) &&
                   add_kvs(res, json_object_get(root, kvs))
               ? 0
               : -1;
}

static int parse_range(req *r, json_t *root, px_etcd_res *res) {
    (void)r;
    res->more = json_is_true(json_object_get(root, "more"));
    return counted_kvs(root, res, "count", "kvs");
}

static int parse_delete(req *r, json_t *root, px_etcd_res *res) {
    (void)r;
    return counted_kvs(root, res, "deleted", "prev_kvs");
}

static int parse_txn(req *r, json_t *root, px_etcd_res *res) {
    (void)r;
    res->succeeded = json_is_true(json_object_get(root, "succeeded"));
    if (!header_rev(root, res)) {
        return -1;
    }
    json_t *rs = json_object_get(root, "responses");
    if (rs == NULL) {
        return 0;
    }
    if (!json_is_array(rs)) {
        return -1;
    }
    for (size_t i = 0; i < json_array_size(rs); i++) {
        json_t *rr = json_object_get(json_array_get(rs, i), "response_range");
        if (rr != NULL && !add_kvs(res, json_object_get(rr, "kvs"))) {
            return -1;
        }
    }
    return 0;
}

static int parse_create(req *r, json_t *root, px_etcd_res *res) {
    if (parse_txn(r, root, res) != 0) {
        return -1;
    }
    if (!res->succeeded) {
        res->err = PX_EEXIST;
        snprintf(r->errbuf, sizeof(r->errbuf), "the key exists");
    }
    return 0;
}

/* ---- errors ---- */

static px_err from_code(int code, const char *msg) {
    if (strstr(msg, "authentication failed") != NULL || strstr(msg, "user name is empty") != NULL ||
        strstr(msg, "invalid auth token") != NULL || strstr(msg, "permission denied") != NULL) {
        return PX_EAUTH; /* etcd says some of these with code 3 */
    }
    switch (code) {
    case 3: /* InvalidArgument: etcd also says "compacted" as OutOfRange */
        return PX_EINVAL;
    case 4:
        return PX_ETIMEDOUT;
    case 5:
        return PX_ENOENT;
    case 6:
    case 9:
        return strstr(msg, "exist") != NULL ? PX_EEXIST : PX_EIO;
    case 7:
    case 16:
        return PX_EAUTH;
    case 8:
        return PX_ELIMIT;
    case 11:
        return strstr(msg, "compacted") != NULL ? PX_ECOMPACTED : PX_EINVAL;
    case 14:
        return PX_EUNREACHABLE;
    default:
        return PX_EIO;
    }
}

static px_err from_curl(CURLcode c) {
    switch (c) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
        return PX_EUNREACHABLE;
    case CURLE_OPERATION_TIMEDOUT:
        return PX_ETIMEDOUT;
    case CURLE_SSL_CONNECT_ERROR: /* a reset handshake, https to an http port */
        return PX_EUNREACHABLE;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CACERT_BADFILE:
        return PX_EAUTH;
    case CURLE_OUT_OF_MEMORY:
        return PX_ENOMEM;
    case CURLE_WRITE_ERROR:
        return PX_ELIMIT; /* our write callback refused: too large */
    default:
        return PX_EIO;
    }
}

/* ---- requests ---- */

static req *req_new(px_etcd *e, rkind kind, const char *path, json_t *body, px_etcd_cb cb,
                    void *arg, parse_fn parse) {
    if (body == NULL) {
        return NULL;
    }
    req *r = calloc(1, sizeof(*r));
    char *s = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (r == NULL || s == NULL) {
        free(r);
        free(s);
        return NULL;
    }
    r->e = e;
    r->kind = kind;
    r->path = path;
    r->body = s;
    r->cb = cb;
    r->arg = arg;
    r->parse = parse;
    return r;
}

static void req_free(req *r) {
    if (r == NULL) {
        return;
    }
    if (r->h != NULL) {
        curl_easy_cleanup(r->h);
    }
    curl_slist_free_all(r->hdrs);
    buf_fini(&r->resp);
    free(r->body);
    free(r);
}

static void wake(px_etcd *e) {
    curl_multi_wakeup(e->multi);
}

/* Queues r for the loop (any thread). PX_ECLOSED once closing: r freed. */
static px_err submit(px_etcd *e, req *r) {
    if (r == NULL) {
        return PX_ENOMEM;
    }
    nng_mtx_lock(e->mtx);
    if (e->closing) {
        nng_mtx_unlock(e->mtx);
        req_free(r);
        return PX_ECLOSED;
    }
    r->t0_ms = now_ms();
    r->deadline_ms = r->t0_ms + e->cfg.request_timeout_ms;
    *e->sub_tail = r;
    e->sub_tail = &r->next;
    nng_mtx_unlock(e->mtx);
    wake(e);
    return PX_OK;
}

static px_err unary(px_etcd *e, const char *path, json_t *body, px_etcd_cb cb, void *arg,
                    parse_fn parse) {
    if (e == NULL || cb == NULL) {
        json_decref(body);
        return PX_EINVAL;
    }
    return submit(e, req_new(e, R_UNARY, path, body, cb, arg, parse));
}

/* ---- the loop: transfers ---- */

static size_t on_write(char *p, size_t sz, size_t n, void *ud);
static size_t on_stream(char *p, size_t sz, size_t n, void *ud);

static void active_add(px_etcd *e, req *r) {
    r->next = e->active;
    e->active = r;
}

static void active_del(px_etcd *e, req *r) {
    for (req **pr = &e->active; *pr != NULL; pr = &(*pr)->next) {
        if (*pr == r) {
            *pr = r->next;
            r->next = NULL;
            return;
        }
    }
}

static void finish(px_etcd *e, req *r, px_etcd_res *res);

/* Starts r's transfer on the current endpoint. On failure completes r. */
static void start(px_etcd *e, req *r) {
    px_etcd_res res = {.err = PX_ENOMEM, .msg = "out of memory"};
    if (r->kind != R_STREAM && now_ms() >= r->deadline_ms) {
        res = (px_etcd_res){.err = PX_ETIMEDOUT, .msg = "the deadline passed before it was sent"};
        finish(e, r, &res);
        return;
    }
    if (r->h == NULL && (r->h = curl_easy_init()) == NULL) {
        finish(e, r, &res);
        return;
    }
    curl_easy_reset(r->h);
    curl_slist_free_all(r->hdrs);
    r->hdrs = NULL;
    buf_fini(&r->resp);
    r->errbuf[0] = '\0';
    r->ep = e->cur;
    char url[512];
    snprintf(url, sizeof(url), "%s%s", e->endpoints[r->ep], r->path);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    struct curl_slist *h2 = h != NULL ? curl_slist_append(h, "Expect:") : NULL;
    r->hdrs = h2 != NULL ? h2 : h;
    if (h2 != NULL && r->kind != R_AUTH && e->token != NULL) {
        size_t al = strlen(e->token) + 20;
        char *auth = malloc(al);
        struct curl_slist *h3 = NULL;
        if (auth != NULL) {
            snprintf(auth, al, "Authorization: %s", e->token);
            h3 = curl_slist_append(r->hdrs, auth); /* copies */
            free(auth);
        }
        h2 = h3;
        if (h3 != NULL) {
            r->hdrs = h3;
        }
    }
    if (h2 == NULL) {
        finish(e, r, &res);
        return;
    }
    CURL *c = r->h;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, r->body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(r->body));
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, r->hdrs);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, r->kind == R_STREAM ? on_stream : on_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_PRIVATE, r);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)e->cfg.connect_timeout_ms);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPIDLE, 5L);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPINTVL, 2L);
    curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
    if (r->kind != R_STREAM) {
        int64_t left = r->deadline_ms - now_ms();
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)(left > 1 ? left : 1));
    }
    if (e->ca_file != NULL) {
        curl_easy_setopt(c, CURLOPT_CAINFO, e->ca_file);
    }
    if (e->cert_file != NULL) {
        curl_easy_setopt(c, CURLOPT_SSLCERT, e->cert_file);
        curl_easy_setopt(c, CURLOPT_SSLKEY, e->key_file);
    }
    if (curl_multi_add_handle(e->multi, c) != CURLM_OK) {
        finish(e, r, &res);
        return;
    }
    r->tries++;
    active_add(e, r);
}

static void auth_start(px_etcd *e);

/* Starts r, first getting a token when etcd auth is on and none is held. */
static void dispatch(px_etcd *e, req *r) {
    if (r->kind != R_AUTH && e->user != NULL && e->token == NULL) {
        req **pr = &e->authwait; /* in order: the first submitted goes first */
        while (*pr != NULL) {
            pr = &(*pr)->next;
        }
        r->next = NULL;
        *pr = r;
        if (e->auth == NULL) {
            auth_start(e);
        }
        return;
    }
    start(e, r);
}

static void auth_done(void *arg, const px_etcd_res *res);

static void auth_start(px_etcd *e) {
    json_t *b = json_pack("{s:s, s:s}", "name", e->user, "password", e->password);
    req *r = req_new(e, R_AUTH, "/v3/auth/authenticate", b, auth_done, e, parse_none);
    if (r == NULL) {
        px_etcd_res res = {.err = PX_ENOMEM, .msg = "out of memory"};
        auth_done(e, &res);
        return;
    }
    r->t0_ms = now_ms();
    r->deadline_ms = r->t0_ms + e->cfg.request_timeout_ms;
    e->auth = r;
    start(e, r);
}

static void auth_done(void *arg, const px_etcd_res *res) {
    px_etcd *e = arg;
    e->auth = NULL;
    req *w = e->authwait;
    e->authwait = NULL;
    /* The token is in the body: parse_none kept it in e->token (below). */
    while (w != NULL) {
        req *nx = w->next;
        w->next = NULL;
        if (res->err == PX_OK && e->token != NULL) {
            start(e, w);
        } else {
            px_etcd_res fail = *res;
            fail.err = res->err != PX_OK ? res->err : PX_EPROTO;
            finish(e, w, &fail);
        }
        w = nx;
    }
}

static size_t on_write(char *p, size_t sz, size_t n, void *ud) {
    req *r = ud;
    size_t len = sz * n;
    if (!buf_add(&r->resp, p, len, MAX_BODY)) {
        return 0; /* too large or no memory: CURLE_WRITE_ERROR */
    }
    return len;
}

/* Runs r's callback (unless it is a watch's internal request) and frees
 * r. r is not on the active list. */
static void finish(px_etcd *e, req *r, px_etcd_res *res) {
    if (res->msg == NULL) {
        res->msg = "";
    }
    if (r->kind != R_STREAM) {
        uint64_t us = (uint64_t)(now_ms() - r->t0_ms) * 1000;
        nng_mtx_lock(e->mtx);
        e->st.requests++;
        if (res->err != PX_OK) {
            e->st.errors++;
        } else {
            e->st.last_latency_us = us;
            e->st.max_latency_us = us > e->st.max_latency_us ? us : e->st.max_latency_us;
            e->st.latency_sum_us += us;
        }
        nng_mtx_unlock(e->mtx);
        /* Log once per streak. Expected answers (a lost create, a gone
         * lease) are results, not failures of etcd. */
        bool failure = res->err != PX_OK && res->err != PX_EEXIST && res->err != PX_ENOENT &&
                       res->err != PX_ECLOSED;
        if (failure) {
            elog(e, e->failing ? PX_LOG_DEBUG : PX_LOG_WARN,
                 "etcd %s%s failed: %s (%s, http %d, code %d)", e->endpoints[r->ep], r->path,
                 res->msg, px_errname(res->err), res->http_status, res->code);
            e->failing = true;
        } else if (res->err != PX_ECLOSED && e->failing) {
            elog(e, PX_LOG_INFO, "etcd %s answers again", e->endpoints[r->ep]);
            e->failing = false;
        }
    }
    if (r->cb != NULL) {
        r->cb(r->arg, res);
    }
    req_free(r);
}

/* A completed transfer: retry elsewhere, re-authenticate, or parse. */
static void completed(px_etcd *e, req *r, CURLcode cc) {
    curl_multi_remove_handle(e->multi, r->h);
    active_del(e, r);
    px_etcd_res res = {0};
    char msg[MSG_LEN] = "";
    long http = 0;
    curl_easy_getinfo(r->h, CURLINFO_RESPONSE_CODE, &http);
    res.http_status = (int)http;
    if (cc != CURLE_OK) {
        res.err = from_curl(cc);
        snprintf(msg, sizeof(msg), "%s", r->errbuf[0] != '\0' ? r->errbuf : curl_easy_strerror(cc));
        curl_off_t connected = 0;
        curl_easy_getinfo(r->h, CURLINFO_CONNECT_TIME_T, &connected);
        bool never_sent = cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST ||
                          (cc == CURLE_OPERATION_TIMEDOUT && connected == 0);
        if (never_sent && e->nep > 1) {
            if (r->ep == e->cur) {
                nng_mtx_lock(e->mtx);
                e->cur = (e->cur + 1) % e->nep;
                e->st.failovers++;
                nng_mtx_unlock(e->mtx);
                elog(e, PX_LOG_INFO, "etcd %s: %s; trying %s", e->endpoints[r->ep], msg,
                     e->endpoints[e->cur]);
            }
            if (r->tries < e->nep && (r->kind == R_STREAM || now_ms() < r->deadline_ms)) {
                start(e, r);
                return;
            }
        }
        res.msg = msg;
        finish(e, r, &res);
        return;
    }
    json_error_t jerr;
    json_t *root = r->resp.len > 0 ? json_loadb(r->resp.p, r->resp.len, 0, &jerr) : NULL;
    if (r->kind == R_STREAM && http == 200) {
        json_decref(root);
        res.err = PX_EUNREACHABLE;
        snprintf(msg, sizeof(msg), "the watch stream ended");
        res.msg = msg;
        finish(e, r, &res);
        return;
    }
    if (http != 200) {
        /* {"error":"...","message":"...","code":N}, or plain text */
        const char *m = json_string_value(json_object_get(root, "message"));
        if (m == NULL) {
            m = json_string_value(json_object_get(root, "error"));
        }
        json_int_t code = json_integer_value(json_object_get(root, "code"));
        res.code = (int)code;
        snprintf(msg, sizeof(msg), "%s",
                 m != NULL ? m : (r->resp.len > 0 ? r->resp.p : "no body"));
        res.err = root != NULL && code != 0 ? from_code((int)code, msg)
                  : http == 401                ? PX_EAUTH
                  : http == 404 && root == NULL ? PX_EPROTO /* not the gateway */
                                                : PX_EIO;
        json_decref(root);
        if (res.err == PX_EAUTH && r->kind == R_STREAM) {
            free(e->token); /* the reconnect authenticates again */
            e->token = NULL;
        }
        if (res.err == PX_EAUTH && r->kind == R_UNARY && e->user != NULL && !r->auth_retried &&
            now_ms() < r->deadline_ms) {
            /* The token expired (or was never good): one more try. */
            free(e->token);
            e->token = NULL;
            r->auth_retried = true;
            dispatch(e, r);
            return;
        }
        res.msg = msg;
        finish(e, r, &res);
        return;
    }
    if (root == NULL || !json_is_object(root)) {
        nng_mtx_lock(e->mtx);
        e->st.bad_responses++;
        nng_mtx_unlock(e->mtx);
        res.err = PX_EPROTO;
        snprintf(msg, sizeof(msg), "not a JSON object: %.80s%s",
                 r->resp.len > 0 ? r->resp.p : "(empty body)", r->resp.len > 80 ? "..." : "");
        json_decref(root);
        res.msg = msg;
        finish(e, r, &res);
        return;
    }
    if (r->kind == R_AUTH) {
        const char *tok = json_string_value(json_object_get(root, "token"));
        free(e->token);
        e->token = tok != NULL ? strdup(tok) : NULL;
        if (e->token == NULL) {
            res.err = PX_EPROTO;
            snprintf(msg, sizeof(msg), "authenticate returned no token");
        }
    }
    int prc = r->parse(r, root, &res);
    json_decref(root);
    if (prc != 0) {
        nng_mtx_lock(e->mtx);
        e->st.bad_responses++;
        nng_mtx_unlock(e->mtx);
        res_fini(&res);
        res = (px_etcd_res){.err = prc == -2 ? PX_EIO : PX_EPROTO, .http_status = (int)http};
        snprintf(msg, sizeof(msg), "%s: %.80s",
                 prc == -2 ? "etcd reported an error" : "unexpected response",
                 r->resp.p != NULL ? r->resp.p : "");
    } else if (res.err != PX_OK && msg[0] == '\0') {
        snprintf(msg, sizeof(msg), "%s", r->errbuf);
    }
    res.msg = msg;
    finish(e, r, &res);
    res_fini(&res);
}

/* ---- the loop: watches ---- */

static void watch_state(px_etcd_watch *w, px_err err, const char *msg) {
    if (!w->stopped && w->cbs.state != NULL) {
        w->cbs.state(w->arg, err, msg);
    }
}

/* The stream or the sync read broke: try again after the backoff. */
static void watch_retry(px_etcd_watch *w, px_err err, const char *msg) {
    w->st = W_WAIT;
    w->due_ms = now_ms() + w->backoff_ms;
    uint32_t cap = w->e->cfg.watch_retry_max_ms;
    w->backoff_ms = w->backoff_ms * 2 > cap ? cap : w->backoff_ms * 2;
    watch_state(w, err, msg);
}

static void watch_sync_done(void *arg, const px_etcd_res *res) {
    px_etcd_watch *w = arg;
    w->active = NULL;
    if (w->stopped) {
        return;
    }
    if (res->err != PX_OK) {
        watch_retry(w, res->err, res->msg);
        return;
    }
    nng_mtx_lock(w->e->mtx);
    w->e->st.watch_syncs++;
    nng_mtx_unlock(w->e->mtx);
    w->next_rev = res->revision + 1;
    w->st = W_WAIT;
    w->due_ms = now_ms();
    w->cbs.sync(w->arg, res->revision, res->kvs, res->nkvs);
}

static void watch_stream_done(void *arg, const px_etcd_res *res) {
    px_etcd_watch *w = arg;
    w->active = NULL;
    buf_fini(&w->line);
    if (w->stopped) {
        return;
    }
    if (w->resync) { /* compacted: read everything again, at once */
        w->resync = false;
        w->next_rev = 0;
        w->st = W_WAIT;
        w->due_ms = now_ms();
        watch_state(w, PX_ECOMPACTED, "the watched revision was compacted; reading it all again");
        return;
    }
    watch_retry(w, res->err, res->msg);
}

static void ev_fini(px_etcd_event *ev, size_t n) {
    for (size_t i = 0; i < n; i++) {
        kv_fini(&ev[i].kv);
        kv_fini(&ev[i].prev);
    }
    free(ev);
}

/* Delivers the events of one response line, one callback per revision.
 * false on a malformed event (nothing delivered). */
static bool watch_events(px_etcd_watch *w, json_t *arr) {
    size_t n = json_array_size(arr);
    px_etcd_event *ev = calloc(n, sizeof(*ev));
    if (ev == NULL) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(arr, i);
        const char *type = json_string_value(json_object_get(o, "type"));
        ev[i].is_delete = type != NULL && strcmp(type, "DELETE") == 0;
        json_t *prev = json_object_get(o, "prev_kv");
        if (!parse_kv(json_object_get(o, "kv"), &ev[i].kv) ||
            (prev != NULL && !(ev[i].has_prev = parse_kv(prev, &ev[i].prev)))) {
            ev_fini(ev, n);
            return false;
        }
    }
    for (size_t i = 0; i < n && !w->stopped;) {
        size_t j = i + 1;
        while (j < n && ev[j].kv.mod_rev == ev[i].kv.mod_rev) {
            j++;
        }
        int64_t rev = ev[i].kv.mod_rev;
        if (rev >= w->next_rev) { /* never the same revision twice */
            w->next_rev = rev + 1;
            w->cbs.events(w->arg, rev, ev + i, j - i);
        }
        i = j;
    }
    ev_fini(ev, n);
    return true;
}

/* One line of the watch stream. false: end the stream (the completion
 * decides what next). */
static bool watch_line(px_etcd_watch *w, const char *line, size_t len) {
    px_etcd *e = w->e;
    json_error_t jerr;
    json_t *root = json_loadb(line, len, 0, &jerr);
    json_t *res = json_object_get(root, "result");
    bool ok = true;
    if (res == NULL || !json_is_object(res)) {
        nng_mtx_lock(e->mtx);
        e->st.bad_responses++;
        nng_mtx_unlock(e->mtx);
        elog(e, PX_LOG_WARN, "etcd watch on %s: unexpected line: %.*s", w->key,
             (int)(len < 120 ? len : 120), line);
        json_decref(root);
        return false;
    }
    int64_t compact = 0, hrev = 0;
    json_t *hdr = json_object_get(res, "header");
    if (!j_i64(res, "compact_revision", &compact) || (hdr != NULL && !j_i64(hdr, "revision", &hrev))) {
        ok = false;
    } else if (json_is_true(json_object_get(res, "canceled"))) {
        if (compact > 0) {
            w->resync = true;
        } else {
            const char *why = json_string_value(json_object_get(res, "cancel_reason"));
            elog(e, PX_LOG_WARN, "etcd watch on %s canceled: %s", w->key, why ? why : "no reason");
            if (why != NULL && (strstr(why, "auth") != NULL || strstr(why, "Unauthenticated") ||
                                strstr(why, "permission") != NULL)) {
                free(e->token); /* expired: the reconnect authenticates again */
                e->token = NULL;
            }
        }
        ok = false;
    } else if (json_is_true(json_object_get(res, "created"))) {
        nng_mtx_lock(e->mtx);
        e->st.watch_connects++;
        nng_mtx_unlock(e->mtx);
        w->backoff_ms = 50;
        watch_state(w, PX_OK, "watching");
    } else if (json_object_get(res, "events") != NULL) {
        ok = json_is_array(json_object_get(res, "events")) &&
             watch_events(w, json_object_get(res, "events"));
        if (!ok) {
            nng_mtx_lock(e->mtx);
            e->st.bad_responses++;
            nng_mtx_unlock(e->mtx);
            elog(e, PX_LOG_WARN, "etcd watch on %s: malformed events: %.*s", w->key,
                 (int)(len < 120 ? len : 120), line);
        }
    } else if (hrev >= w->next_rev) { /* a progress notification */
        w->next_rev = hrev + 1;
    }
    json_decref(root);
    return ok && !w->stopped;
}

static size_t on_stream(char *p, size_t sz, size_t n, void *ud) {
    req *r = ud;
    px_etcd_watch *w = r->w;
    size_t len = sz * n;
    long http = 0;
    curl_easy_getinfo(r->h, CURLINFO_RESPONSE_CODE, &http);
    if (http != 200) { /* an error body: kept for the completion */
        return buf_add(&r->resp, p, len, 64u << 10) ? len : 0;
    }
    if (!buf_add(&w->line, p, len, MAX_BODY)) {
        return 0;
    }
    size_t start = 0;
    for (size_t i = 0; i < w->line.len; i++) {
        if (w->line.p[i] != '\n') {
            continue;
        }
        if (i > start && !watch_line(w, w->line.p + start, i - start)) {
            return 0;
        }
        start = i + 1;
    }
    memmove(w->line.p, w->line.p + start, w->line.len - start);
    w->line.len -= start;
    return len;
}

static void watch_go(px_etcd *e, px_etcd_watch *w) {
    if (w->next_rev == 0) {
        json_t *b = key_obj(w->key, w->prefix);
        req *r = req_new(e, R_UNARY, "/v3/kv/range", b, watch_sync_done, w, parse_range);
        if (r == NULL) {
            watch_retry(w, PX_ENOMEM, "out of memory");
            return;
        }
        r->w = w;
        r->t0_ms = now_ms();
        r->deadline_ms = r->t0_ms + e->cfg.request_timeout_ms;
        w->st = W_SYNC;
        w->active = r;
        dispatch(e, r);
        return;
    }
    json_t *cr = key_obj(w->key, w->prefix);
    bool ok = cr != NULL && j_set(cr, "start_revision", j_i64s(w->next_rev)) &&
              j_set(cr, "prev_kv", json_true());
    if (!ok) {
        json_decref(cr);
        cr = NULL;
    }
    json_t *b = cr != NULL ? json_object() : NULL;
    /* json_object_set_new takes cr even when it fails */
    if (b == NULL || json_object_set_new(b, "create_request", cr) != 0) {
        if (b == NULL) {
            json_decref(cr);
        }
        json_decref(b);
        watch_retry(w, PX_ENOMEM, "out of memory");
        return;
    }
    req *r = req_new(e, R_STREAM, "/v3/watch", b, watch_stream_done, w, parse_none);
    if (r == NULL) {
        watch_retry(w, PX_ENOMEM, "out of memory");
        return;
    }
    r->w = w;
    r->t0_ms = now_ms();
    r->deadline_ms = INT64_MAX;
    w->st = W_STREAM;
    w->active = r;
    dispatch(e, r);
}

/* Takes w's transfer away (no callback). */
static void watch_cancel_transfer(px_etcd *e, px_etcd_watch *w) {
    req *r = w->active;
    if (r == NULL) {
        return;
    }
    w->active = NULL;
    for (req **pr = &e->authwait; *pr != NULL; pr = &(*pr)->next) {
        if (*pr == r) { /* still waiting for a token */
            *pr = r->next;
            req_free(r);
            return;
        }
    }
    curl_multi_remove_handle(e->multi, r->h);
    active_del(e, r);
    req_free(r);
    buf_fini(&w->line);
}

static void watch_free(px_etcd_watch *w) {
    buf_fini(&w->line);
    free(w->key);
    free(w);
}

/* ---- the loop ---- */

static void loop_once(px_etcd *e) {
    nng_mtx_lock(e->mtx);
    req *sub = e->sub;
    e->sub = NULL;
    e->sub_tail = &e->sub;
    px_etcd_watch *ws = e->wsub;
    e->wsub = NULL;
    while (ws != NULL) {
        px_etcd_watch *nx = ws->next;
        ws->next = e->watches;
        e->watches = ws;
        ws = nx;
    }
    /* Stops and kicks (their flags are under the lock). */
    px_etcd_watch *dead = NULL;
    for (px_etcd_watch **pw = &e->watches; *pw != NULL;) {
        px_etcd_watch *w = *pw;
        if (w->stop_req) {
            w->stopped = true;
            *pw = w->next;
            w->next = dead;
            dead = w;
            continue;
        }
        if (w->kick) {
            w->kick = false;
            if (w->st == W_STREAM) {
                w->due_ms = 0; /* below: cancelled and restarted */
                w->st = W_DEAD;
            } else if (w->st == W_WAIT) {
                w->due_ms = 0;
            }
        }
        pw = &w->next;
    }
    nng_mtx_unlock(e->mtx);
    while (dead != NULL) {
        px_etcd_watch *nx = dead->next;
        watch_cancel_transfer(e, dead);
        nng_mtx_lock(e->mtx);
        if (dead->ticket != NULL) {
            dead->ticket->done = true;
            nng_cv_wake(e->cv);
        }
        nng_mtx_unlock(e->mtx);
        watch_free(dead);
        dead = nx;
    }
    int64_t now = now_ms();
    for (px_etcd_watch *w = e->watches; w != NULL; w = w->next) {
        if (w->st == W_DEAD) { /* kicked while streaming */
            watch_cancel_transfer(e, w);
            w->st = W_WAIT;
            w->due_ms = 0;
        }
        if (w->st == W_WAIT && w->due_ms <= now && w->active == NULL) {
            watch_go(e, w);
        }
    }
    while (sub != NULL) {
        req *nx = sub->next;
        sub->next = NULL;
        dispatch(e, sub);
        sub = nx;
    }
    int running = 0;
    curl_multi_perform(e->multi, &running);
    CURLMsg *m;
    int left = 0;
    while ((m = curl_multi_info_read(e->multi, &left)) != NULL) {
        if (m->msg == CURLMSG_DONE) {
            req *r = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
            completed(e, r, m->data.result);
        }
    }
}

static int loop_timeout(px_etcd *e) {
    int64_t now = now_ms(), t = 1000;
    for (px_etcd_watch *w = e->watches; w != NULL; w = w->next) {
        if (w->st == W_WAIT && w->active == NULL) {
            int64_t d = w->due_ms - now;
            t = d < t ? d : t;
        }
    }
    return t < 0 ? 0 : (int)t;
}

static void loop_main(void *arg) {
    px_etcd *e = arg;
    tl_loop = e;
    for (;;) {
        nng_mtx_lock(e->mtx);
        bool closing = e->closing;
        nng_mtx_unlock(e->mtx);
        if (closing) {
            break;
        }
        loop_once(e);
        curl_multi_poll(e->multi, NULL, 0, loop_timeout(e), NULL);
    }
    tl_loop = NULL;
}

/* ---- public: lifecycle ---- */

/* curl_global_init is not thread-safe: once per process, never cleaned up
 * (another library in the process may use curl too). */
static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static bool global_ok;

static void global_init(void) {
    global_ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK && sodium_init() >= 0;
}

void px_etcd_cfg_init(px_etcd_cfg *cfg) {
    *cfg = (px_etcd_cfg){.request_timeout_ms = 3000,
                         .connect_timeout_ms = 1000,
                         .watch_retry_max_ms = 2000,
                         .log_level = PX_LOG_INFO};
}

static px_err open_fail(px_etcd *e, px_err rv, char *err, size_t errlen, const char *fmt,
                        const char *arg) {
    if (err != NULL && errlen > 0) {
        snprintf(err, errlen, fmt, arg);
    }
    px_etcd_close(e);
    return rv;
}

px_err px_etcd_open(px_etcd **out, const px_etcd_cfg *cfg, char *err, size_t errlen) {
    if (out == NULL || cfg == NULL) {
        return PX_EINVAL;
    }
    *out = NULL;
    pthread_once(&global_once, global_init);
    if (!global_ok) {
        if (err != NULL && errlen > 0) {
            snprintf(err, errlen, "curl or libsodium failed to initialise");
        }
        return PX_ESYS;
    }
    px_etcd *e = calloc(1, sizeof(*e));
    if (e == NULL) {
        return PX_ENOMEM;
    }
    e->cfg = *cfg;
    e->sub_tail = &e->sub;
    if (e->cfg.request_timeout_ms == 0) {
        e->cfg.request_timeout_ms = 3000;
    }
    if (e->cfg.connect_timeout_ms == 0) {
        e->cfg.connect_timeout_ms = 1000;
    }
    if (e->cfg.watch_retry_max_ms < 50) {
        e->cfg.watch_retry_max_ms = 50;
    }
    e->log_name = dupstr(cfg->log_name);
    if (nng_mtx_alloc(&e->mtx) != 0 || nng_cv_alloc(&e->cv, e->mtx) != 0) {
        return open_fail(e, PX_ENOMEM, err, errlen, "%s", "out of memory");
    }
    if (cfg->endpoints == NULL || cfg->endpoints[0] == '\0') {
        return open_fail(e, PX_EINVAL, err, errlen, "%s", "no etcd endpoint given");
    }
    char *list = strdup(cfg->endpoints);
    if (list == NULL) {
        return open_fail(e, PX_ENOMEM, err, errlen, "%s", "out of memory");
    }
    char *save = NULL;
    for (char *tok = strtok_r(list, ", ", &save); tok != NULL; tok = strtok_r(NULL, ", ", &save)) {
        size_t n = strlen(tok);
        while (n > 0 && tok[n - 1] == '/') {
            tok[--n] = '\0';
        }
        if (strncmp(tok, "http://", 7) != 0 && strncmp(tok, "https://", 8) != 0) {
            px_err rv = open_fail(e, PX_EINVAL, err, errlen,
                                  "etcd endpoint '%s' is not an http:// or https:// URL", tok);
            free(list);
            return rv;
        }
        if (e->nep == MAX_ENDPOINTS || strlen(tok) > 400 ||
            (e->endpoints[e->nep] = strdup(tok)) == NULL) {
            free(list);
            return open_fail(e, PX_EINVAL, err, errlen, "%s", "too many or too long etcd endpoints");
        }
        e->nep++;
    }
    free(list);
    if (e->nep == 0) {
        return open_fail(e, PX_EINVAL, err, errlen, "%s", "no etcd endpoint given");
    }
    if ((cfg->user == NULL) != (cfg->password == NULL)) {
        return open_fail(e, PX_EINVAL, err, errlen, "%s",
                         "etcd user and password go together (one is missing)");
    }
    if ((cfg->cert_file == NULL) != (cfg->key_file == NULL)) {
        return open_fail(e, PX_EINVAL, err, errlen, "%s",
                         "etcd client certificate and key go together (one is missing)");
    }
    e->ca_file = dupstr(cfg->ca_file);
    e->cert_file = dupstr(cfg->cert_file);
    e->key_file = dupstr(cfg->key_file);
    e->user = dupstr(cfg->user);
    e->password = dupstr(cfg->password);
    e->cfg.ca_file = e->cfg.cert_file = e->cfg.key_file = NULL;
    e->cfg.user = e->cfg.password = e->cfg.log_name = e->cfg.endpoints = NULL;
    if ((e->multi = curl_multi_init()) == NULL) {
        return open_fail(e, PX_ESYS, err, errlen, "%s", "curl_multi_init failed");
    }
    if (nng_thread_create(&e->thr, loop_main, e) != 0) {
        return open_fail(e, PX_ESYS, err, errlen, "%s", "cannot start the etcd client thread");
    }
    nng_thread_set_name(e->thr, "px:etcd");
    *out = e;
    return PX_OK;
}

void px_etcd_close(px_etcd *e) {
    if (e == NULL) {
        return;
    }
    if (e->mtx != NULL) {
        nng_mtx_lock(e->mtx);
        e->closing = true;
        nng_mtx_unlock(e->mtx);
    }
    if (e->thr != NULL) {
        wake(e);
        nng_thread_destroy(e->thr); /* joins */
    }
    /* The loop is gone: this thread finishes everything, standing in for
     * it (a watch stopped from one of these callbacks must not wait). */
    px_etcd *was = tl_loop;
    tl_loop = e;
    while (e->wsub != NULL) { /* watches the loop never took: the same end */
        px_etcd_watch *w = e->wsub;
        e->wsub = w->next;
        w->next = e->watches;
        e->watches = w;
    }
    px_etcd_res closed = {.err = PX_ECLOSED, .msg = "the etcd client is closing"};
    for (px_etcd_watch *w = e->watches; w != NULL; w = w->next) {
        watch_state(w, PX_ECLOSED, closed.msg);
        w->stopped = true;
    }
    req *lists[3] = {e->active, e->authwait, e->sub};
    e->active = e->authwait = e->sub = NULL;
    for (int i = 0; i < 3; i++) {
        for (req *r = lists[i]; r != NULL;) {
            req *nx = r->next;
            if (r->h != NULL && i == 0) {
                curl_multi_remove_handle(e->multi, r->h);
            }
            px_etcd_res res = closed;
            finish(e, r, &res);
            r = nx;
        }
    }
    for (px_etcd_watch *w = e->watches, *nx; w != NULL; w = nx) {
        nx = w->next;
        if (e->mtx != NULL) {
            nng_mtx_lock(e->mtx);
            if (w->ticket != NULL) {
                w->ticket->done = true;
                nng_cv_wake(e->cv);
            }
            nng_mtx_unlock(e->mtx);
        }
        watch_free(w);
    }
    tl_loop = was;
    if (e->multi != NULL) {
        curl_multi_cleanup(e->multi);
    }
    for (int i = 0; i < e->nep; i++) {
        free(e->endpoints[i]);
    }
    free(e->token);
    free(e->ca_file);
    free(e->cert_file);
    free(e->key_file);
    free(e->user);
    if (e->password != NULL) {
        sodium_memzero(e->password, strlen(e->password));
        free(e->password);
    }
    free(e->log_name);
    if (e->cv != NULL) {
        nng_cv_free(e->cv);
    }
    if (e->mtx != NULL) {
        nng_mtx_free(e->mtx);
    }
    free(e);
}

bool px_etcd_on_thread(const px_etcd *e) {
    return e != NULL && tl_loop == e;
}

const char *px_etcd_endpoint(px_etcd *e) {
    nng_mtx_lock(e->mtx);
    const char *s = e->endpoints[e->cur];
    nng_mtx_unlock(e->mtx);
    return s;
}

void px_etcd_stats_get(px_etcd *e, px_etcd_stats *out) {
    nng_mtx_lock(e->mtx);
    *out = e->st;
    nng_mtx_unlock(e->mtx);
}

/* ---- public: operations ---- */

static json_t *lease_body(int64_t id) {
    json_t *b = json_object();
    if (b != NULL && !j_set(b, "ID", j_i64s(id))) {
        json_decref(b);
        return NULL;
    }
    return b;
}

px_err px_etcd_lease_grant(px_etcd *e, int64_t ttl_s, px_etcd_cb cb, void *arg) {
    if (ttl_s <= 0) {
        return PX_EINVAL;
    }
    json_t *b = json_object();
    if (b != NULL && !j_set(b, "TTL", j_i64s(ttl_s))) {
        json_decref(b);
        b = NULL;
    }
    return unary(e, "/v3/lease/grant", b, cb, arg, parse_lease);
}

px_err px_etcd_lease_keepalive(px_etcd *e, int64_t lease, px_etcd_cb cb, void *arg) {
    return unary(e, "/v3/lease/keepalive", lease_body(lease), cb, arg, parse_keepalive);
}

px_err px_etcd_lease_revoke(px_etcd *e, int64_t lease, px_etcd_cb cb, void *arg) {
    return unary(e, "/v3/lease/revoke", lease_body(lease), cb, arg, parse_none);
}

px_err px_etcd_lease_ttl(px_etcd *e, int64_t lease, px_etcd_cb cb, void *arg) {
    json_t *b = lease_body(lease);
    if (b != NULL && !j_set(b, "keys", json_true())) {
        json_decref(b);
        b = NULL;
    }
    return unary(e, "/v3/lease/timetolive", b, cb, arg, parse_ttl);
}

static json_t *put_body(const char *key, const void *value, size_t len, int64_t lease) {
    json_t *b = json_object();
    if (b == NULL || !j_key(b, key, false) || !j_set(b, "value", j_b64(value, len)) ||
        (lease != 0 && !j_set(b, "lease", j_i64s(lease)))) {
        json_decref(b);
        return NULL;
    }
    return b;
}

px_err px_etcd_put(px_etcd *e, const char *key, const void *value, size_t len, int64_t lease,
                   px_etcd_cb cb, void *arg) {
    if (key == NULL || key[0] == '\0' || (value == NULL && len > 0)) {
        return PX_EINVAL;
    }
    json_t *b = put_body(key, value, len, lease);
    if (b != NULL && !j_set(b, "prev_kv", json_true())) {
        json_decref(b);
        b = NULL;
    }
    return unary(e, "/v3/kv/put", b, cb, arg, parse_put);
}

px_err px_etcd_get(px_etcd *e, const char *key, bool prefix, int64_t revision, int64_t limit,
                   px_etcd_cb cb, void *arg) {
    if (key == NULL || revision < 0 || limit < 0) {
        return PX_EINVAL;
    }
    json_t *b = key_obj(key, prefix);
    if (b == NULL ||
        (revision > 0 && !j_set(b, "revision", j_i64s(revision))) ||
        (limit > 0 && !j_set(b, "limit", j_i64s(limit)))) {
        json_decref(b);
        b = NULL;
    }
    return unary(e, "/v3/kv/range", b, cb, arg, parse_range);
}

px_err px_etcd_delete(px_etcd *e, const char *key, bool prefix, px_etcd_cb cb, void *arg) {
    if (key == NULL || (key[0] == '\0' && !prefix)) {
        return PX_EINVAL;
    }
    json_t *b = key_obj(key, prefix);
    if (b == NULL || !j_set(b, "prev_kv", json_true())) {
        json_decref(b);
        b = NULL;
    }
    return unary(e, "/v3/kv/deleterange", b, cb, arg, parse_delete);
}

px_err px_etcd_compact(px_etcd *e, int64_t revision, px_etcd_cb cb, void *arg) {
    if (revision <= 0) {
        return PX_EINVAL;
    }
    json_t *b = json_object();
    if (b != NULL && (!j_set(b, "revision", j_i64s(revision)) || !j_set(b, "physical", json_true()))) {
        json_decref(b);
        b = NULL;
    }
    return unary(e, "/v3/kv/compaction", b, cb, arg, parse_none);
}

static const char *const target_name[] = {"VERSION", "CREATE", "MOD", "VALUE", "LEASE"};
static const char *const target_field[] = {"version", "create_revision", "mod_revision", "value",
                                           "lease"};
static const char *const rel_name[] = {"EQUAL", "GREATER", "LESS", "NOT_EQUAL"};

static json_t *ops_json(const px_etcd_op *ops, size_t n) {
    json_t *arr = json_array();
    for (size_t i = 0; arr != NULL && i < n; i++) {
        const px_etcd_op *op = &ops[i];
        json_t *o = NULL;
        const char *name = NULL;
        if (op->key == NULL) {
            json_decref(arr);
            return NULL;
        }
        switch (op->kind) {
        case PX_ETCD_OP_PUT:
            o = put_body(op->key, op->value, op->value_len, op->lease);
            name = "request_put";
            break;
        case PX_ETCD_OP_GET:
        case PX_ETCD_OP_DELETE:
            o = key_obj(op->key, op->prefix);
            name = op->kind == PX_ETCD_OP_GET ? "request_range" : "request_delete_range";
            break;
        }
        json_t *w = o != NULL ? json_object() : NULL;
        if (w == NULL) {
            json_decref(o);
        }
        if (w == NULL || json_object_set_new(w, name, o) != 0 || json_array_append_new(arr, w) != 0) {
            json_decref(arr);
            return NULL;
        }
    }
    return arr;
}

static json_t *txn_body(const px_etcd_cmp *cmp, size_t ncmp, const px_etcd_op *ok, size_t nok,
                        const px_etcd_op *fail, size_t nfail) {
    json_t *b = json_object();
    json_t *cs = json_array();
    bool good = b != NULL && cs != NULL;
    for (size_t i = 0; good && i < ncmp; i++) {
        const px_etcd_cmp *c = &cmp[i];
        if (c->key == NULL || (unsigned)c->target > PX_ETCD_LEASE ||
            (unsigned)c->rel > PX_ETCD_NOT_EQUAL) {
            good = false;
            break;
        }
        json_t *o = json_object();
        good = o != NULL && j_key(o, c->key, false) &&
               j_set(o, "target", json_string(target_name[c->target])) &&
               j_set(o, "result", json_string(rel_name[c->rel])) &&
               j_set(o, target_field[c->target],
                     c->target == PX_ETCD_VALUE ? j_b64(c->value, c->value_len)
                                                : j_i64s(c->num));
        if (!good || json_array_append_new(cs, o) != 0) {
            json_decref(o);
            good = false;
        }
    }
    json_t *so = good ? ops_json(ok, nok) : NULL;
    json_t *fo = so != NULL ? ops_json(fail, nfail) : NULL;
    if (fo == NULL) {
        json_decref(cs);
        json_decref(so);
        json_decref(b);
        return NULL;
    }
    /* json_object_set_new takes its value even when it fails */
    bool set = json_object_set_new(b, "compare", cs) == 0;
    set = json_object_set_new(b, "success", so) == 0 && set;
    set = json_object_set_new(b, "failure", fo) == 0 && set;
    if (!set) {
        json_decref(b);
        return NULL;
    }
    return b;
}

px_err px_etcd_txn(px_etcd *e, const px_etcd_cmp *cmp, size_t ncmp, const px_etcd_op *ok,
                   size_t nok, const px_etcd_op *fail, size_t nfail, px_etcd_cb cb, void *arg) {
    if ((cmp == NULL && ncmp > 0) || (ok == NULL && nok > 0) || (fail == NULL && nfail > 0)) {
        return PX_EINVAL;
    }
    json_t *b = txn_body(cmp, ncmp, ok, nok, fail, nfail);
    if (b == NULL) {
        return PX_EINVAL; /* a NULL key or an unknown target/relation (or no memory) */
    }
    return unary(e, "/v3/kv/txn", b, cb, arg, parse_txn);
}

px_err px_etcd_create(px_etcd *e, const char *key, const void *value, size_t len, int64_t lease,
                      px_etcd_cb cb, void *arg) {
    if (key == NULL || key[0] == '\0' || (value == NULL && len > 0)) {
        return PX_EINVAL;
    }
    px_etcd_cmp c = {.key = key, .target = PX_ETCD_CREATE, .rel = PX_ETCD_EQUAL, .num = 0};
    px_etcd_op put = {.kind = PX_ETCD_OP_PUT, .key = key, .value = value, .value_len = len,
                      .lease = lease};
    px_etcd_op get = {.kind = PX_ETCD_OP_GET, .key = key};
    json_t *b = txn_body(&c, 1, &put, 1, &get, 1);
    return b == NULL ? PX_ENOMEM : unary(e, "/v3/kv/txn", b, cb, arg, parse_create);
}

/* ---- public: watches ---- */

px_err px_etcd_watch_start(px_etcd *e, const char *key, bool prefix, int64_t start_rev,
                           const px_etcd_watch_cbs *cbs, void *arg, px_etcd_watch **out) {
    if (out != NULL) {
        *out = NULL;
    }
    if (e == NULL || key == NULL || cbs == NULL || cbs->sync == NULL || cbs->events == NULL ||
        out == NULL || start_rev < 0) {
        return PX_EINVAL;
    }
    px_etcd_watch *w = calloc(1, sizeof(*w));
    if (w == NULL || (w->key = strdup(key)) == NULL) {
        free(w);
        return PX_ENOMEM;
    }
    w->e = e;
    w->prefix = prefix;
    w->cbs = *cbs;
    w->arg = arg;
    w->next_rev = start_rev;
    w->st = W_WAIT;
    w->backoff_ms = 50;
    nng_mtx_lock(e->mtx);
    if (e->closing) {
        nng_mtx_unlock(e->mtx);
        watch_free(w);
        return PX_ECLOSED;
    }
    w->next = e->wsub;
    e->wsub = w;
    nng_mtx_unlock(e->mtx);
    wake(e);
    *out = w;
    return PX_OK;
}

void px_etcd_watch_kick(px_etcd_watch *w) {
    if (w == NULL) {
        return;
    }
    nng_mtx_lock(w->e->mtx);
    w->kick = true;
    nng_mtx_unlock(w->e->mtx);
    wake(w->e);
}

void px_etcd_watch_stop(px_etcd_watch *w) {
    if (w == NULL) {
        return;
    }
    px_etcd *e = w->e;
    if (px_etcd_on_thread(e)) {
        w->stopped = true; /* no callback from here on; the loop frees it */
        nng_mtx_lock(e->mtx);
        w->stop_req = true;
        nng_mtx_unlock(e->mtx);
        wake(e);
        return;
    }
    stop_ticket t = {false};
    nng_mtx_lock(e->mtx);
    w->stop_req = true;
    w->ticket = &t;
    nng_mtx_unlock(e->mtx);
    wake(e);
    nng_mtx_lock(e->mtx);
    while (!t.done) {
        nng_cv_wait(e->cv);
    }
    nng_mtx_unlock(e->mtx);
}

/* ---- public: results and waiters ---- */

static bool kv_copy(const px_etcd_kv *in, px_etcd_kv *out) {
    *out = *in;
    out->key = NULL;
    out->value = NULL;
    char *k = malloc(in->key_len + 1);
    uint8_t *v = malloc(in->value_len + 1);
    if (k == NULL || v == NULL) {
        free(k);
        free(v);
        return false;
    }
    if (in->key_len > 0) {
        memcpy(k, in->key, in->key_len);
    }
    k[in->key_len] = '\0';
    if (in->value_len > 0) {
        memcpy(v, in->value, in->value_len);
    }
    v[in->value_len] = 0;
    out->key = k;
    out->value = v;
    return true;
}

px_err px_etcd_res_copy(const px_etcd_res *res, px_etcd_res **out) {
    *out = NULL;
    size_t ml = strlen(res->msg != NULL ? res->msg : "") + 1;
    px_etcd_res *r = calloc(1, sizeof(*r) + ml);
    if (r == NULL) {
        return PX_ENOMEM;
    }
    *r = *res;
    char *msg = (char *)(r + 1);
    memcpy(msg, res->msg != NULL ? res->msg : "", ml);
    r->msg = msg;
    r->kvs = NULL;
    r->nkvs = 0;
    if (res->nkvs > 0) {
        r->kvs = calloc(res->nkvs, sizeof(*r->kvs));
        if (r->kvs == NULL) {
            free(r);
            return PX_ENOMEM;
        }
        for (size_t i = 0; i < res->nkvs; i++) {
            if (!kv_copy(&res->kvs[i], &r->kvs[i])) {
                px_etcd_res_free(r);
                return PX_ENOMEM;
            }
            r->nkvs++;
        }
    }
    *out = r;
    return PX_OK;
}

void px_etcd_res_free(px_etcd_res *res) {
    if (res != NULL) {
        res_fini(res);
        free(res);
    }
}

struct px_etcd_waiter {
    nng_mtx *mtx;
    nng_cv *cv;
    bool done;
    px_err err;
    px_etcd_res *res;
};

px_err px_etcd_waiter_alloc(px_etcd_waiter **out) {
    *out = NULL;
    px_etcd_waiter *w = calloc(1, sizeof(*w));
    if (w == NULL || nng_mtx_alloc(&w->mtx) != 0 || nng_cv_alloc(&w->cv, w->mtx) != 0) {
        px_etcd_waiter_free(w);
        return PX_ENOMEM;
    }
    *out = w;
    return PX_OK;
}

void px_etcd_waiter_cb(void *arg, const px_etcd_res *res) {
    px_etcd_waiter *w = arg;
    px_etcd_res *copy = NULL;
    px_err rv = px_etcd_res_copy(res, &copy);
    nng_mtx_lock(w->mtx);
    w->res = copy;
    w->err = rv == PX_OK ? res->err : rv;
    w->done = true;
    nng_cv_wake(w->cv);
    nng_mtx_unlock(w->mtx);
}

px_err px_etcd_waiter_take(px_etcd_waiter *w, px_etcd_res **out) {
    nng_mtx_lock(w->mtx);
    while (!w->done) {
        nng_cv_wait(w->cv);
    }
    nng_mtx_unlock(w->mtx);
    px_err rv = w->err;
    *out = w->res;
    w->res = NULL;
    px_etcd_waiter_free(w);
    return rv;
}

void px_etcd_waiter_free(px_etcd_waiter *w) {
    if (w == NULL) {
        return;
    }
    px_etcd_res_free(w->res);
    if (w->cv != NULL) {
        nng_cv_free(w->cv);
    }
    if (w->mtx != NULL) {
        nng_mtx_free(w->mtx);
    }
    free(w);
}
