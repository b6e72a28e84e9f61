/*
 * Tests for cluster/src/etcd.c against a real etcd (pxt_etcd): keys,
 * leases, transactions, watches (sync, events, compaction, etcd restarts),
 * several endpoints, auth, https, and — the one case for a fake server —
 * malformed responses.
 */
#define _GNU_SOURCE /* strcasestr */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <plexus/etcd.h>

#include "pxt_etcd.h"

static pxt_etcd etcd;
static px_etcd *cli;

static px_etcd *client_for(const char *endpoints, const char *user, const char *pw,
                           const char *ca) {
    px_etcd_cfg cfg;
    px_etcd_cfg_init(&cfg);
    cfg.endpoints = endpoints;
    cfg.user = user;
    cfg.password = pw;
    cfg.ca_file = ca;
    cfg.request_timeout_ms = 2000;
    cfg.connect_timeout_ms = 500;
    cfg.watch_retry_max_ms = 200;
    cfg.log = pxt_etcd_quiet_log;
    cfg.log_name = "test";
    px_etcd *e = NULL;
    char err[200] = "";
    px_err rv = px_etcd_open(&e, &cfg, err, sizeof(err));
    cr_assert_eq(rv, PX_OK, "px_etcd_open: %s (%s)", px_errname(rv), err);
    return e;
}

static void setup(void) {
    int rv = pxt_etcd_start(&etcd);
    if (rv != 0) {
        char tail[600];
        pxt_file_tail(etcd.log, tail, sizeof(tail));
        cr_assert_fail("etcd did not start (%d): %s", rv, tail);
    }
    cli = client_for(etcd.url, NULL, NULL, NULL);
}

static void teardown(void) {
    px_etcd_close(cli);
    cli = NULL;
    pxt_etcd_stop(&etcd);
    pxt_procs_kill_all();
}

/* r = the result of one call made blocking; WAIT stands for the callback
 * arguments. */
#define WAIT px_etcd_waiter_cb, w_
#define SYNC(r, call)                                                                 \
    do {                                                                              \
        px_etcd_waiter *w_ = NULL;                                                    \
        cr_assert_eq(px_etcd_waiter_alloc(&w_), PX_OK);                               \
        px_err s_ = (call);                                                           \
        if (s_ != PX_OK) {                                                            \
            px_etcd_waiter_free(w_);                                                  \
            cr_assert_fail("%s refused: %s", #call, px_errname(s_));                        \
        }                                                                             \
        px_etcd_waiter_take(w_, &(r));                                                \
        cr_assert_not_null(r);                                                        \
    } while (0)

TestSuite(cluster_etcd, .init = setup, .fini = teardown, .timeout = 60);

Test(cluster_etcd, put_get_and_delete_round_trip_binary_values_and_prefixes) {
    px_etcd_res *r;
    const uint8_t bin[] = {0, 1, 2, 0xff, '\n', 0};
    SYNC(r, px_etcd_put(cli, "/t/a/1", bin, sizeof(bin), 0, WAIT));
    cr_assert_eq(r->err, PX_OK, "%s", r->msg);
    cr_assert_gt(r->revision, 1);
    cr_assert_eq(r->nkvs, 0, "no previous value");
    int64_t rev1 = r->revision;
    px_etcd_res_free(r);
    SYNC(r, px_etcd_put(cli, "/t/a/2", "two", 3, 0, WAIT));
    px_etcd_res_free(r);
    SYNC(r, px_etcd_put(cli, "/t/b", "other", 5, 0, WAIT));
    px_etcd_res_free(r);
    SYNC(r, px_etcd_put(cli, "/t/a/2", "TWO", 3, 0, WAIT));
    cr_assert_eq(r->nkvs, 1, "the previous value comes back");
    cr_assert_str_eq((const char *)r->kvs[0].value, "two");
    px_etcd_res_free(r);

    SYNC(r, px_etcd_get(cli, "/t/a/", true, 0, 0, WAIT));
    cr_assert_eq(r->err, PX_OK);
    cr_assert_eq(r->nkvs, 2);
    cr_assert_eq(r->count, 2);
    cr_assert_str_eq(r->kvs[0].key, "/t/a/1");
    cr_assert_eq(r->kvs[0].value_len, sizeof(bin));
    cr_assert_arr_eq(r->kvs[0].value, bin, sizeof(bin));
    cr_assert_eq(r->kvs[0].mod_rev, rev1);
    cr_assert_str_eq((const char *)r->kvs[1].value, "TWO");
    cr_assert_eq(r->kvs[1].version, 2);
    px_etcd_res_free(r);

    SYNC(r, px_etcd_get(cli, "/t/a/1", false, rev1 - 1, 0, WAIT));
    cr_assert_eq(r->nkvs, 0, "an older revision has no key yet");
    px_etcd_res_free(r);
    SYNC(r, px_etcd_get(cli, "/t/", true, 0, 1, WAIT));
    cr_assert_eq(r->nkvs, 1);
    cr_assert(r->more, "limit 1 of 3 says more");
    px_etcd_res_free(r);

    SYNC(r, px_etcd_delete(cli, "/t/a/", true, WAIT));
    cr_assert_eq(r->err, PX_OK);
    cr_assert_eq(r->count, 2);
    cr_assert_eq(r->nkvs, 2, "the deleted pairs come back");
    px_etcd_res_free(r);
    SYNC(r, px_etcd_get(cli, "/t/", true, 0, 0, WAIT));
    cr_assert_eq(r->nkvs, 1);
    cr_assert_str_eq(r->kvs[0].key, "/t/b");
    px_etcd_res_free(r);
    SYNC(r, px_etcd_delete(cli, "/t/none", false, WAIT));
    cr_assert_eq(r->err, PX_OK);
    cr_assert_eq(r->count, 0, "a missing key deletes nothing (etcd omits the zero)");
    px_etcd_res_free(r);
}

Test(cluster_etcd, a_lease_carries_its_keys_until_revoked_and_is_then_gone) {
    px_etcd_res *r;
    SYNC(r, px_etcd_lease_grant(cli, 5, WAIT));
    cr_assert_eq(r->err, PX_OK, "%s", r->msg);
    int64_t id = r->lease_id;
    cr_assert_gt(id, (int64_t)1 << 53, "lease ids are large and must stay exact (%lld)",
                 (long long)id);
    cr_assert_eq(r->ttl, 5);
    px_etcd_res_free(r);
    SYNC(r, px_etcd_put(cli, "/l/k", "v", 1, id, WAIT));
    cr_assert_eq(r->err, PX_OK, "%s", r->msg);
    px_etcd_res_free(r);
    SYNC(r, px_etcd_lease_keepalive(cli, id, WAIT));
    cr_assert_eq(r->err, PX_OK, "%s", r->msg);
    cr_assert_eq(r->ttl, 5);
    cr_assert_eq(r->lease_id, id);
    px_etcd_res_free(r);
    SYNC(r, px_etcd_lease_ttl(cli, id, WAIT));
    cr_assert_eq(r->err, PX_OK);
    cr_assert_eq(r->granted_ttl, 5);
    cr_assert_eq(r->nkvs, 1);
    cr_assert_str_eq(r->kvs[0].key, "/l/k");
    px_etcd_res_free(r);
    SYNC(r, px_etcd_get(cli, "/l/k", false, 0, 0, WAIT));
    cr_assert_eq(r->kvs[0].lease, id);
    px_etcd_res_free(r);

    SYNC(r, px_etcd_lease_revoke(cli, id, WAIT));
    cr_assert_eq(r->err, PX_OK);
    px_etcd_res_free(r);
    SYNC(r, px_etcd_get(cli, "/l/k", false, 0, 0, WAIT));
    cr_assert_eq(r->nkvs, 0, "revoking deleted the attached key");
    px_etcd_res_free(r);
    SYNC(r, px_etcd_lease_keepalive(cli, id, WAIT));
    cr_assert_eq(r->err, PX_ENOENT, "a dead lease's keepalive (HTTP 200, no TTL): %s",
                 px_errname(r->err));
    px_etcd_res_free(r);
    SYNC(r, px_etcd_lease_ttl(cli, id, WAIT));
    cr_assert_eq(r->err, PX_ENOENT);
    px_etcd_res_free(r);
    SYNC(r, px_etcd_lease_revoke(cli, id, WAIT));
    cr_assert_eq(r->err, PX_ENOENT, "etcd says lease not found (code 5)");
    cr_assert_eq(r->code, 5);
    cr_assert(strstr(r->msg, "lease not found") != NULL, "etcd's message is kept: %s", r->msg);
    px_etcd_res_free(r);
    SYNC(r, px_etcd_put(cli, "/l/k2", "v", 1, id, WAIT));
    cr_assert_eq(r->err, PX_ENOENT, "a put on a dead lease fails");
    px_etcd_res_free(r);
}

Test(cluster_etcd, create_if_absent_succeeds_once_and_then_names_the_owner) {
    px_etcd_res *r;
    SYNC(r, px_etcd_create(cli, "/n/svc", "first", 5, 0, WAIT));
    cr_assert_eq(r->err, PX_OK, "%s", r->msg);
    cr_assert(r->succeeded);
    px_etcd_res_free(r);
    SYNC(r, px_etcd_create(cli, "/n/svc", "second", 6, 0, WAIT));
    cr_assert_eq(r->err, PX_EEXIST);
    cr_assert(!r->succeeded, "a lost txn has no 'succeeded' key: false");
    cr_assert_eq(r->nkvs, 1);
    cr_assert_str_eq((const char *)r->kvs[0].value, "first");
    px_etcd_res_free(r);
}

Test(cluster_etcd, a_transaction_runs_the_branch_its_comparisons_choose) {
    px_etcd_res *r;
    SYNC(r, px_etcd_put(cli, "/x/v", "A", 1, 0, WAIT));
    int64_t mod = r->revision;
    px_etcd_res_free(r);
    px_etcd_cmp cmp[] = {{.key = "/x/v", .target = PX_ETCD_VALUE, .rel = PX_ETCD_EQUAL,
                          .value = "A", .value_len = 1},
                         {.key = "/x/v", .target = PX_ETCD_MOD, .rel = PX_ETCD_EQUAL, .num = mod}};
    px_etcd_op ok[] = {{.kind = PX_ETCD_OP_PUT, .key = "/x/v", .value = "B", .value_len = 1},
                       {.kind = PX_ETCD_OP_GET, .key = "/x/", .prefix = true}};
    px_etcd_op fail[] = {{.kind = PX_ETCD_OP_GET, .key = "/x/v"}};
    SYNC(r, px_etcd_txn(cli, cmp, 2, ok, 2, fail, 1, WAIT));
    cr_assert_eq(r->err, PX_OK, "%s", r->msg);
    cr_assert(r->succeeded);
    cr_assert_eq(r->nkvs, 1, "the success branch's GET");
    cr_assert_str_eq((const char *)r->kvs[0].value, "B");
    px_etcd_res_free(r);
    SYNC(r, px_etcd_txn(cli, cmp, 2, ok, 2, fail, 1, WAIT));
    cr_assert(!r->succeeded, "the value is B now");
    cr_assert_eq(r->nkvs, 1);
    cr_assert_str_eq((const char *)r->kvs[0].value, "B");
    px_etcd_res_free(r);
    px_etcd_op del[] = {{.kind = PX_ETCD_OP_DELETE, .key = "/x/", .prefix = true}};
    SYNC(r, px_etcd_txn(cli, NULL, 0, del, 1, NULL, 0, WAIT));
    cr_assert(r->succeeded, "no comparison: success");
    px_etcd_res_free(r);
    SYNC(r, px_etcd_get(cli, "/x/", true, 0, 0, WAIT));
    cr_assert_eq(r->nkvs, 0);
    px_etcd_res_free(r);
    cr_assert_eq(px_etcd_txn(cli, (px_etcd_cmp[]){{.key = NULL}}, 1, NULL, 0, NULL, 0,
                             px_etcd_waiter_cb, NULL),
                 PX_EINVAL, "a comparison without a key is refused before any I/O");
}

/* ---- watches ---- */

typedef struct rec {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char log[64][96];
    int n;
    int syncs, oks, errs, compacted;
    int64_t last_rev;
    bool dup; /* a revision came twice or went backwards */
    bool stop_in_cb;
    px_etcd_watch *self;
} rec;

static void rec_add(rec *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void rec_add(rec *r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (r->n < 64) {
        vsnprintf(r->log[r->n++], sizeof(r->log[0]), fmt, ap);
    }
    va_end(ap);
    pthread_cond_broadcast(&r->cv);
}

static void w_sync(void *arg, int64_t rev, const px_etcd_kv *kvs, size_t n) {
    rec *r = arg;
    pthread_mutex_lock(&r->mu);
    r->syncs++;
    r->last_rev = rev;
    char keys[80] = "";
    for (size_t i = 0; i < n; i++) {
        strncat(keys, kvs[i].key, sizeof(keys) - strlen(keys) - 2);
        strcat(keys, ",");
    }
    rec_add(r, "sync %s", keys);
    pthread_mutex_unlock(&r->mu);
}

static void w_events(void *arg, int64_t rev, const px_etcd_event *ev, size_t n) {
    rec *r = arg;
    pthread_mutex_lock(&r->mu);
    if (rev <= r->last_rev) {
        r->dup = true;
    }
    r->last_rev = rev;
    for (size_t i = 0; i < n; i++) {
        if (ev[i].is_delete) {
            rec_add(r, "del %s prev=%s", ev[i].kv.key,
                    ev[i].has_prev ? (const char *)ev[i].prev.value : "-");
        } else {
            rec_add(r, "put %s=%s", ev[i].kv.key, (const char *)ev[i].kv.value);
        }
    }
    bool stop = r->stop_in_cb;
    pthread_mutex_unlock(&r->mu);
    if (stop) {
        px_etcd_watch_stop(r->self); /* from its own callback */
    }
}

static void w_state(void *arg, px_err err, const char *msg) {
    rec *r = arg;
    (void)msg;
    pthread_mutex_lock(&r->mu);
    if (err == PX_OK) {
        r->oks++;
    } else if (err == PX_ECOMPACTED) {
        r->compacted++;
    } else {
        r->errs++;
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static const px_etcd_watch_cbs rec_cbs = {w_sync, w_events, w_state};

static void rec_init(rec *r) {
    memset(r, 0, sizeof(*r));
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
}

/* Waits (bounded) until *field >= want. */
static bool rec_wait(rec *r, const int *field, int want, int ms) {
    int64_t end = pxt_mono_ms() + ms;
    pthread_mutex_lock(&r->mu);
    while (*field < want && pxt_mono_ms() < end) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20 * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&r->cv, &r->mu, &ts);
    }
    bool ok = *field >= want;
    pthread_mutex_unlock(&r->mu);
    return ok;
}

static void put(const char *k, const char *v) {
    px_etcd_res *r;
    SYNC(r, px_etcd_put(cli, k, v, strlen(v), 0, WAIT));
    cr_assert_eq(r->err, PX_OK, "put %s: %s", k, r->msg);
    px_etcd_res_free(r);
}

Test(cluster_etcd, a_watch_reads_the_state_then_delivers_each_change_once_in_order) {
    put("/w/a", "1");
    put("/w/b", "2");
    put("/other", "x");
    rec r;
    rec_init(&r);
    px_etcd_watch *w = NULL;
    cr_assert_eq(px_etcd_watch_start(cli, "/w/", true, 0, &rec_cbs, &r, &w), PX_OK);
    cr_assert(rec_wait(&r, &r.oks, 1, 5000), "the stream is up");
    cr_assert_str_eq(r.log[0], "sync /w/a,/w/b,");
    put("/w/c", "3");
    put("/other", "y");
    put("/w/a", "10");
    px_etcd_res *res;
    SYNC(res, px_etcd_delete(cli, "/w/b", false, WAIT));
    px_etcd_res_free(res);
    cr_assert(rec_wait(&r, &r.n, 4, 5000), "got %d lines", r.n);
    px_etcd_watch_stop(w);
    cr_assert_str_eq(r.log[1], "put /w/c=3");
    cr_assert_str_eq(r.log[2], "put /w/a=10");
    cr_assert_str_eq(r.log[3], "del /w/b prev=2");
    cr_assert_eq(r.n, 4, "nothing else (not /other)");
    cr_assert(!r.dup);
    put("/w/d", "4");
    px_etcd_stats st;
    px_etcd_stats_get(cli, &st);
    cr_assert_eq(st.watch_syncs, 1);
    cr_assert_eq(r.n, 4, "no callback after stop");
}

Test(cluster_etcd, a_watch_behind_a_compaction_reads_everything_again) {
    put("/c/a", "1");
    put("/c/a", "2");
    put("/c/b", "3");
    px_etcd_res *res;
    SYNC(res, px_etcd_get(cli, "/c/a", false, 0, 0, WAIT));
    int64_t old = res->kvs[0].create_rev; /* the first put */
    int64_t now = res->revision;
    px_etcd_res_free(res);
    SYNC(res, px_etcd_compact(cli, now, WAIT));
    cr_assert_eq(res->err, PX_OK, "%s", res->msg);
    px_etcd_res_free(res);
    SYNC(res, px_etcd_get(cli, "/c/a", false, old, 0, WAIT));
    cr_assert_eq(res->err, PX_ECOMPACTED, "a read below the compaction: %s (%s)",
                 px_errname(res->err), res->msg);
    px_etcd_res_free(res);

    rec r;
    rec_init(&r);
    px_etcd_watch *w = NULL;
    cr_assert_eq(px_etcd_watch_start(cli, "/c/", true, old, &rec_cbs, &r, &w), PX_OK);
    cr_assert(rec_wait(&r, &r.syncs, 1, 5000), "compaction forced a full read");
    cr_assert(rec_wait(&r, &r.oks, 1, 5000), "then the stream came up");
    cr_assert_eq(r.compacted, 1);
    cr_assert_str_eq(r.log[0], "sync /c/a,/c/b,");
    put("/c/z", "9");
    cr_assert(rec_wait(&r, &r.n, 2, 5000));
    cr_assert_str_eq(r.log[1], "put /c/z=9");
    px_etcd_watch_stop(w);
}

Test(cluster_etcd, a_watch_survives_an_etcd_restart_and_a_kick_without_loss_or_repeat) {
    rec r;
    rec_init(&r);
    px_etcd_watch *w = NULL;
    cr_assert_eq(px_etcd_watch_start(cli, "/r/", true, 0, &rec_cbs, &r, &w), PX_OK);
    cr_assert(rec_wait(&r, &r.oks, 1, 5000));
    put("/r/1", "a");
    cr_assert(rec_wait(&r, &r.n, 2, 5000));
    pxt_etcd_kill(&etcd);
    cr_assert(rec_wait(&r, &r.errs, 1, 5000), "the watch saw the stream break");
    px_etcd_res *res;
    SYNC(res, px_etcd_get(cli, "/r/", true, 0, 0, WAIT));
    cr_assert_eq(res->err, PX_EUNREACHABLE, "etcd is down: %s", px_errname(res->err));
    px_etcd_res_free(res);
    cr_assert_eq(pxt_etcd_restart(&etcd), 0);
    cr_assert(rec_wait(&r, &r.oks, 2, 8000), "reconnected");
    put("/r/2", "b");
    cr_assert(rec_wait(&r, &r.n, 3, 5000));
    px_etcd_watch_kick(w);
    cr_assert(rec_wait(&r, &r.oks, 3, 5000), "a kick reconnects");
    put("/r/3", "c");
    cr_assert(rec_wait(&r, &r.n, 4, 5000));
    px_etcd_watch_stop(w);
    cr_assert_str_eq(r.log[0], "sync ");
    cr_assert_str_eq(r.log[1], "put /r/1=a");
    cr_assert_str_eq(r.log[2], "put /r/2=b");
    cr_assert_str_eq(r.log[3], "put /r/3=c");
    cr_assert_eq(r.n, 4);
    cr_assert(!r.dup);
    cr_assert_eq(r.syncs, 1, "no resync needed: the revision was still there");
}

Test(cluster_etcd, a_watch_stopped_from_its_own_callback_gets_nothing_more) {
    rec r;
    rec_init(&r);
    r.stop_in_cb = true;
    cr_assert_eq(px_etcd_watch_start(cli, "/s/", true, 0, &rec_cbs, &r, &r.self), PX_OK);
    cr_assert(rec_wait(&r, &r.oks, 1, 5000));
    put("/s/1", "a");
    cr_assert(rec_wait(&r, &r.n, 2, 5000));
    put("/s/2", "b");
    put("/s/3", "c");
    px_etcd_res *res; /* a round trip after the puts: the loop went past them */
    SYNC(res, px_etcd_get(cli, "/s/", true, 0, 0, WAIT));
    cr_assert_eq(res->nkvs, 3);
    px_etcd_res_free(res);
    pthread_mutex_lock(&r.mu);
    cr_assert_eq(r.n, 2, "only the first event: %s", r.log[r.n - 1]);
    pthread_mutex_unlock(&r.mu);
}

/* ---- errors ---- */

Test(cluster_etcd, a_dead_endpoint_fails_fast_and_a_second_one_takes_over) {
    int dead = pxt_free_port();
    char one[64], two[160];
    snprintf(one, sizeof(one), "http://127.0.0.1:%d", dead);
    snprintf(two, sizeof(two), "http://127.0.0.1:%d,%s", dead, etcd.url);
    px_etcd *e1 = client_for(one, NULL, NULL, NULL);
    px_etcd_res *r;
    int64_t t0 = pxt_mono_ms();
    SYNC(r, px_etcd_get(e1, "/k", false, 0, 0, WAIT));
    cr_assert_eq(r->err, PX_EUNREACHABLE, "%s", px_errname(r->err));
    cr_assert_lt(pxt_mono_ms() - t0, 1500, "refused, not timed out");
    cr_assert(strlen(r->msg) > 0, "curl's reason is kept");
    px_etcd_res_free(r);
    px_etcd_stats st;
    px_etcd_stats_get(e1, &st);
    cr_assert_eq(st.errors, 1);
    px_etcd_close(e1);

    px_etcd *e2 = client_for(two, NULL, NULL, NULL);
    SYNC(r, px_etcd_put(e2, "/k", "v", 1, 0, WAIT));
    cr_assert_eq(r->err, PX_OK, "the second endpoint answered: %s", r->msg);
    px_etcd_res_free(r);
    px_etcd_stats_get(e2, &st);
    cr_assert_eq(st.failovers, 1);
    cr_assert_str_eq(px_etcd_endpoint(e2), etcd.url);
    px_etcd_close(e2);

    SYNC(r, px_etcd_get(cli, "/k", false, 1000000, 0, WAIT));
    cr_assert_eq(r->err, PX_EINVAL, "a future revision: %s", px_errname(r->err));
    cr_assert(strstr(r->msg, "future revision") != NULL, "%s", r->msg);
    px_etcd_res_free(r);
}

Test(cluster_etcd, bad_configurations_are_refused_with_a_reason) {
    px_etcd_cfg cfg;
    px_etcd_cfg_init(&cfg);
    px_etcd *e = NULL;
    char err[200];
    cr_assert_eq(px_etcd_open(&e, &cfg, err, sizeof(err)), PX_EINVAL);
    cr_assert_null(e);
    cfg.endpoints = "127.0.0.1:2379";
    cr_assert_eq(px_etcd_open(&e, &cfg, err, sizeof(err)), PX_EINVAL);
    cr_assert(strstr(err, "127.0.0.1:2379") != NULL, "%s", err);
    cfg.endpoints = "http://127.0.0.1:2379";
    cfg.user = "root";
    cr_assert_eq(px_etcd_open(&e, &cfg, err, sizeof(err)), PX_EINVAL);
    cr_assert(strstr(err, "password") != NULL, "%s", err);
    cr_assert_null(e);
}

Test(cluster_etcd, closing_finishes_pending_requests_with_closed) {
    pxt_etcd_pause(&etcd); /* nothing will answer */
    px_etcd_waiter *w = NULL;
    cr_assert_eq(px_etcd_waiter_alloc(&w), PX_OK);
    cr_assert_eq(px_etcd_get(cli, "/k", false, 0, 0, px_etcd_waiter_cb, w), PX_OK);
    rec r;
    rec_init(&r);
    px_etcd_watch *wt = NULL;
    cr_assert_eq(px_etcd_watch_start(cli, "/q/", true, 0, &rec_cbs, &r, &wt), PX_OK);
    px_etcd_close(cli);
    cli = NULL;
    px_etcd_res *res = NULL;
    cr_assert_eq(px_etcd_waiter_take(w, &res), PX_ECLOSED);
    px_etcd_res_free(res);
    pxt_etcd_resume(&etcd);
}

/* ---- auth ---- */

Test(cluster_etcd, with_auth_on_only_the_right_password_gets_in) {
    char body[400];
    cr_assert_eq(pxt_etcd_post(etcd.url, "/v3/auth/user/add", "{\"name\":\"root\",\"password\":\"pw\"}",
                               body, sizeof(body)), 200, "%s", body);
    cr_assert_eq(pxt_etcd_post(etcd.url, "/v3/auth/role/add", "{\"name\":\"root\"}", body,
                               sizeof(body)), 200, "%s", body);
    cr_assert_eq(pxt_etcd_post(etcd.url, "/v3/auth/user/grant",
                               "{\"user\":\"root\",\"role\":\"root\"}", body, sizeof(body)), 200);
    cr_assert_eq(pxt_etcd_post(etcd.url, "/v3/auth/enable", "{}", body, sizeof(body)), 200, "%s",
                 body);
    px_etcd_res *r;
    SYNC(r, px_etcd_put(cli, "/a", "v", 1, 0, WAIT));
    cr_assert_eq(r->err, PX_EAUTH, "no credentials: %s %s", px_errname(r->err), r->msg);
    px_etcd_res_free(r);
    px_etcd *bad = client_for(etcd.url, "root", "wrong", NULL);
    SYNC(r, px_etcd_put(bad, "/a", "v", 1, 0, WAIT));
    cr_assert_eq(r->err, PX_EAUTH, "wrong password: %s %s", px_errname(r->err), r->msg);
    px_etcd_res_free(r);
    px_etcd_close(bad);
    px_etcd *good = client_for(etcd.url, "root", "pw", NULL);
    SYNC(r, px_etcd_put(good, "/a", "v", 1, 0, WAIT));
    cr_assert_eq(r->err, PX_OK, "%s", r->msg);
    px_etcd_res_free(r);
    rec rc;
    rec_init(&rc);
    px_etcd_watch *w = NULL;
    cr_assert_eq(px_etcd_watch_start(good, "/a", false, 0, &rec_cbs, &rc, &w), PX_OK);
    cr_assert(rec_wait(&rc, &rc.oks, 1, 5000), "a watch authenticates too");
    SYNC(r, px_etcd_put(good, "/a", "w", 1, 0, WAIT));
    px_etcd_res_free(r);
    cr_assert(rec_wait(&rc, &rc.n, 2, 5000));
    cr_assert_str_eq(rc.log[1], "put /a=w");
    px_etcd_watch_stop(w);
    px_etcd_close(good);
}

/* ---- https ---- */

Test(cluster_etcd_tls, https_verifies_the_server_against_the_ca_file, .timeout = 60) {
    char dir[] = "/tmp/pxt-tls.XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char cmd[2048];
    snprintf(cmd, sizeof(cmd),
             "cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "-keyout ca.key -out ca.crt -days 2 -subj /CN=pxt-ca 2>/dev/null && "
             "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout srv.key "
             "-out srv.csr -subj /CN=127.0.0.1 2>/dev/null && "
             "printf 'subjectAltName=IP:127.0.0.1\\n' > ext.cnf && "
             "openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out srv.crt "
             "-days 2 -extfile ext.cnf 2>/dev/null",
             dir);
    cr_assert_eq(system(cmd), 0, "openssl made the certificates");
    char certf[64], keyf[64], ca[64];
    snprintf(certf, sizeof(certf), "--cert-file=%s/srv.crt", dir);
    snprintf(keyf, sizeof(keyf), "--key-file=%s/srv.key", dir);
    snprintf(ca, sizeof(ca), "%s/ca.crt", dir);
    pxt_etcd tls = {.scheme = "https", .extra = {certf, keyf, NULL}};
    int rv = pxt_etcd_start(&tls);
    cr_assert_eq(rv, 0, "etcd with TLS started (%d)", rv);
    px_etcd *e = client_for(tls.url, NULL, NULL, ca);
    px_etcd_res *r;
    SYNC(r, px_etcd_put(e, "/tls", "ok", 2, 0, WAIT));
    cr_assert_eq(r->err, PX_OK, "%s", r->msg);
    px_etcd_res_free(r);
    px_etcd_close(e);
    e = client_for(tls.url, NULL, NULL, NULL); /* the system's CAs do not know ours */
    SYNC(r, px_etcd_put(e, "/tls", "no", 2, 0, WAIT));
    cr_assert_eq(r->err, PX_EAUTH, "an unverifiable server: %s (%s)", px_errname(r->err), r->msg);
    px_etcd_res_free(r);
    px_etcd_close(e);
    pxt_etcd_stop(&tls);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

/* ---- malformed responses: a fake HTTP server (the one case for a fake) ---- */

static int fake_fd = -1;
static pthread_t fake_th;
static atomic_int fake_stop;
static const char *_Atomic fake_body; /* the whole HTTP response to give */

static void *fake_main(void *arg) {
    (void)arg;
    while (!atomic_load(&fake_stop)) {
        int c = accept(fake_fd, NULL, NULL);
        if (c < 0) {
            continue;
        }
        char req[8192];
        size_t n = 0;
        char *hdr_end = NULL;
        long clen = 0;
        while (n < sizeof(req) - 1) { /* headers, then Content-Length bytes */
            ssize_t k = read(c, req + n, sizeof(req) - 1 - n);
            if (k <= 0) {
                break;
            }
            n += (size_t)k;
            req[n] = '\0';
            if (hdr_end == NULL && (hdr_end = strstr(req, "\r\n\r\n")) != NULL) {
                char *cl = strcasestr(req, "Content-Length:");
                clen = cl != NULL ? strtol(cl + 15, NULL, 10) : 0;
            }
            if (hdr_end != NULL && (long)(n - (size_t)(hdr_end + 4 - req)) >= clen) {
                break;
            }
        }
        const char *resp = atomic_load(&fake_body);
        if (write(c, resp, strlen(resp)) < 0) {
            perror("fake write");
        }
        close(c);
    }
    return NULL;
}

static char fake_url[64];

static void fake_start(void) {
    fake_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    cr_assert_eq(bind(fake_fd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(fake_fd, 16), 0);
    getsockname(fake_fd, (struct sockaddr *)&a, &al);
    snprintf(fake_url, sizeof(fake_url), "http://127.0.0.1:%d", ntohs(a.sin_port));
    struct timeval tv = {0, 100000};
    setsockopt(fake_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)); /* accept wakes to see stop */
    atomic_store(&fake_stop, 0);
    pthread_create(&fake_th, NULL, fake_main, NULL);
}

static void fake_end(void) {
    atomic_store(&fake_stop, 1);
    pthread_join(fake_th, NULL);
    close(fake_fd);
}

/* A 200 response with body (Content-Length computed). Static storage per
 * slot. */
static const char *ok200(int slot, const char *body) {
    static char bufs[16][512];
    snprintf(bufs[slot], sizeof(bufs[slot]),
             "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
             "Content-Length: %zu\r\n\r\n%s",
             strlen(body), body);
    return bufs[slot];
}

Test(cluster_etcd_bad, malformed_responses_become_errors_and_are_counted, .timeout = 60) {
    fake_start();
    px_etcd *e = client_for(fake_url, NULL, NULL, NULL);
    const struct {
        const char *resp;
        px_err want;
        bool bad; /* counted as a bad response */
    } cases[] = {
        {ok200(0, "not json"), PX_EPROTO, true},
        {ok200(1, "[1,2]"), PX_EPROTO, true},
        {ok200(2, ""), PX_EPROTO, true},
        {ok200(3, "{\"kvs\":[{\"key\":\"!!not base64\"}]}"), PX_EPROTO, true},
        {ok200(4, "{\"header\":{\"revision\":\"twelve\"}, \"kvs\":[]}"), PX_EPROTO, true},
        {ok200(5, "{\"kvs\":[{\"value\":\"YQ==\"}]}"), PX_EPROTO, true},
        {ok200(6, "{\"kvs\":\"many\"}"), PX_EPROTO, true},
        {"HTTP/1.1 500 Oops\r\nConnection: close\r\nContent-Length: 4\r\n\r\noops", PX_EIO, false},
        {"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 100\r\n\r\n{\"kvs\"",
         PX_EUNREACHABLE, false},
        {"garbage that is not HTTP\r\n\r\n", PX_EIO, false},
    };
    size_t nbad = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        atomic_store(&fake_body, cases[i].resp);
        px_etcd_res *r;
        SYNC(r, px_etcd_get(e, "/k", true, 0, 0, WAIT));
        cr_assert_eq(r->err, cases[i].want, "case %zu: %s, want %s (%s)", i, px_errname(r->err),
                     px_errname(cases[i].want), r->msg);
        cr_assert(strlen(r->msg) > 0, "case %zu says why", i);
        px_etcd_res_free(r);
        nbad += cases[i].bad;
    }
    atomic_store(&fake_body, ok200(7, "{\"error\":{\"grpc_code\":5,\"message\":\"gone\"}}"));
    px_etcd_res *r;
    SYNC(r, px_etcd_lease_keepalive(e, 7, WAIT));
    cr_assert_eq(r->err, PX_EIO, "a keepalive stream error: %s", px_errname(r->err));
    px_etcd_res_free(r);
    nbad++;
    px_etcd_stats st;
    px_etcd_stats_get(e, &st);
    cr_assert_eq(st.bad_responses, nbad);

    /* A watch whose stream says garbage: errors, retries, no crash. */
    atomic_store(&fake_body, ok200(8, "{\"header\":{\"revision\":\"5\"}}"));
    rec rc;
    rec_init(&rc);
    px_etcd_watch *w = NULL;
    cr_assert_eq(px_etcd_watch_start(e, "/w/", true, 0, &rec_cbs, &rc, &w), PX_OK);
    cr_assert(rec_wait(&rc, &rc.syncs, 1, 5000));
    atomic_store(&fake_body, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello\n{\"result\":7}\n");
    cr_assert(rec_wait(&rc, &rc.errs, 2, 5000), "the watch keeps retrying");
    px_etcd_watch_stop(w);
    px_etcd_stats_get(e, &st);
    cr_assert_gt(st.bad_responses, nbad, "the garbage lines were counted");
    px_etcd_close(e);
    fake_end();
}
