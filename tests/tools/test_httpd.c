/* Tests for plexusd's HTTP endpoint and metrics (tools/plexusd/httpd.c,
 * metrics.c) and for the Prometheus text checker they are held to
 * (promcheck.c): the checker accepts good text and names the rule a bad
 * one breaks; a node's /metrics, fetched over real HTTP, passes it and its
 * figures follow the actors and the links; /healthz and /readyz follow the
 * node's phase; unknown paths and other methods are refused; a node with
 * no parts started never crashes the endpoint; stop waits for requests in
 * flight. */
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/supplemental/util/platform.h>

#include "../core/helpers.h"

#include "httpd.h"
#include "metrics.h"
#include "promcheck.h"

/* ---- a small HTTP client: one request per connection ---- */

typedef struct http_res {
    int status;
    char ctype[128];
    char *body; /* NUL-terminated, malloc'd */
    size_t len;
} http_res;

static void http_res_free(http_res *r) {
    free(r->body);
    memset(r, 0, sizeof *r);
}

/* Sends `method path` to base ("http://127.0.0.1:PORT") with Connection:
 * close and reads the whole answer (5 s bounds). 0 or -1. */
static int http_do(const char *base, const char *method, const char *path, http_res *r) {
    memset(r, 0, sizeof *r);
    char host[64];
    int port = 0;
    if (sscanf(base, "http://%63[^:]:%d", host, &port) != 2) {
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        return -1;
    }
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    char req[512];
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n%s\r\n", method,
                     path, host, port, strcmp(method, "POST") == 0 ? "Content-Length: 0\r\n" : "");
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
        close(fd);
        return -1;
    }
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 1 >= cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
        ssize_t got = recv(fd, buf + len, cap - len - 1, 0);
        if (got <= 0) {
            break; /* EOF (the server closes) or the 5 s bound */
        }
        len += (size_t)got;
    }
    close(fd);
    buf[len] = '\0';
    char *hend = strstr(buf, "\r\n\r\n");
    if (hend == NULL || sscanf(buf, "HTTP/1.%*d %d", &r->status) != 1) {
        free(buf);
        return -1;
    }
    *hend = '\0';
    long clen = -1;
    for (char *line = strstr(buf, "\r\n"); line != NULL; line = strstr(line + 2, "\r\n")) {
        char *h = line + 2;
        if (strncasecmp(h, "Content-Type:", 13) == 0) {
            h += 13;
            while (*h == ' ') {
                h++;
            }
            size_t k = strcspn(h, "\r");
            snprintf(r->ctype, sizeof r->ctype, "%.*s", (int)k, h);
        } else if (strncasecmp(h, "Content-Length:", 15) == 0) {
            clen = strtol(h + 15, NULL, 10);
        }
    }
    char *body = hend + 4;
    size_t blen = len - (size_t)(body - buf);
    if (clen >= 0 && (size_t)clen < blen) {
        blen = (size_t)clen;
    }
    r->body = malloc(blen + 1);
    memcpy(r->body, body, blen);
    r->body[blen] = '\0';
    r->len = blen;
    free(buf);
    return 0;
}

/* GET that must answer; asserts the request went through. */
static http_res http_get(const char *base, const char *path) {
    http_res r;
    cr_assert_eq(http_do(base, "GET", path, &r), 0, "GET %s%s failed", base, path);
    return r;
}

/* GET /metrics: 200, the exposition content type, and promcheck passes.
 * Returns the text (free it). */
static char *metrics_get(const char *base) {
    http_res r = http_get(base, "/metrics");
    cr_assert_eq(r.status, 200, "GET /metrics: %d %s", r.status, r.body);
    cr_assert_str_eq(r.ctype, "text/plain; version=0.0.4; charset=utf-8");
    char err[256];
    int n = promcheck(r.body, err, sizeof err);
    cr_assert_geq(n, 1, "promcheck: %s\n%s", err, r.body);
    char *text = r.body;
    r.body = NULL;
    return text;
}

static double metric(const char *text, const char *series) {
    double v = promcheck_value(text, series);
    cr_assert(!isnan(v), "no series %s in\n%s", series, text);
    return v;
}

/* ---- test nodes ---- */

static int64_t wall_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A standalone node around sys (may be NULL), phase STARTING, serving on
 * a free loopback port. */
static pxd_httpd *node_serve(pxd_node *n, px_system *sys) {
    memset(n, 0, sizeof *n);
    n->sys = sys;
    n->started_ms = wall_now_ms();
    atomic_init(&n->phase, PXD_STARTING);
    cr_assert_eq(nng_mtx_alloc(&n->parts_mtx), 0);
    pxd_httpd *h = NULL;
    char err[256] = "";
    px_err e = pxd_httpd_start(n, "http://127.0.0.1:0", &h, err, sizeof err);
    cr_assert_eq(e, PX_OK, "pxd_httpd_start: %s: %s", px_strerror(e), err);
    cr_assert_not_null(h);
    int port = 0;
    cr_assert_eq(sscanf(pxd_httpd_url(h), "http://127.0.0.1:%d", &port), 1, "url %s",
                 pxd_httpd_url(h));
    cr_assert_gt(port, 0, "the bound port replaces 0: %s", pxd_httpd_url(h));
    return h;
}

static void node_unserve(pxd_node *n, pxd_httpd *h) {
    pxd_httpd_stop(h);
    nng_mtx_free(n->parts_mtx);
    n->parts_mtx = NULL;
}

/* ---- promcheck ---- */

static const char good_text[] =
    "# A plain comment\n"
    "# HELP up_total Things that went up, with \\\\ and \\n in the help.\n"
    "# TYPE up_total counter\n"
    "up_total{job=\"a\\\"b\\\\c\\nd\",zone=\"ü\"} 3 1700000000000\n"
    "up_total{job=\"x\"} 1e3\n"
    "\n"
    "# HELP temp A gauge.\n"
    "# TYPE temp gauge\n"
    "temp -1.5\n"
    "temp{at=\"night\",} NaN\n"
    "temp{at=\"day\"} +Inf\n"
    "# HELP req Requests (counter named without _total).\n"
    "# TYPE req counter\n"
    "req_total{code=\"200\"} 7\n"
    "req_total{code=\"500\"} 0\n"
    "# HELP lat Latency.\n"
    "# TYPE lat histogram\n"
    "lat_bucket{path=\"/\",le=\"0.1\"} 1\n"
    "lat_bucket{path=\"/\",le=\"1\"} 3\n"
    "lat_bucket{le=\"+Inf\",path=\"/\"} 4\n"
    "lat_sum{path=\"/\"} 2.5\n"
    "lat_count{path=\"/\"} 4\n"
    "lat_bucket{path=\"/x\",le=\"+Inf\"} 0\n"
    "lat_count{path=\"/x\"} 0\n"
    "lat_sum{path=\"/x\"} 0\n"
    "# HELP rpc Durations.\n"
    "# TYPE rpc summary\n"
    "rpc{quantile=\"0.5\"} 0.2\n"
    "rpc{quantile=\"0.99\"} 0.9\n"
    "rpc_sum 10\n"
    "rpc_count 30\n"
    "# HELP weird An untyped family.\n"
    "# TYPE weird untyped\n"
    "weird{} 1\n";

Test(tools_promcheck, accepts_good_text_and_counts_its_samples) {
    char err[256] = "";
    cr_assert_eq(promcheck(good_text, err, sizeof err), 20, "%s", err);
    cr_assert_eq(promcheck("", err, sizeof err), 0, "%s", err);
    cr_assert_eq(promcheck("# just a comment\n", err, sizeof err), 0, "%s", err);
}

#define HG "# HELP g h\n# TYPE g gauge\n"
#define HC "# HELP c h\n# TYPE c counter\n"
#define HH "# HELP h h\n# TYPE h histogram\n"

static const struct {
    const char *text;
    const char *reason; /* part of the error: the rule that was broken */
} bad_texts[] = {
    {"# HELP 1g h\n", "line 1: # HELP: expected a metric name"},
    {HG "g{1a=\"x\"} 1\n", "line 3: expected a label name"},
    {HG "g{__a=\"x\"} 1\n", "reserved"},
    {HG "g{a=\"\\t\"} 1\n", "bad escape in a label value"},
    {HG "g{a=\"x} 1\n", "unterminated label value"},
    {HG "g{a=\"\xc3\x28\"} 1\n", "UTF-8"},
    {HG "g{a=\"1\",a=\"2\"} 1\n", "label name appears twice"},
    {HG "g{a=\"1\" b=\"2\"} 1\n", "expected , or }"},
    {HG "g{a=\"1\",b=\"2\"} 1\ng{b=\"2\",a=\"1\"} 2\n", "line 4: series g{b=\"2\",a=\"1\"} appears twice"},
    {HG "g 1.2.3\n", "is not a sample value"},
    {HG "g inf\n", "is not a sample value"},
    {HG "g 0x10\n", "is not a sample value"},
    {HG "g\n", "expected one space and a value"},
    {HG "g  1\n", "is not a sample value"},
    {HG "g 1 12.5\n", "is not a timestamp"},
    {HG "g 1 \n", "leading or trailing blanks"},
    {" " HG, "line 1: leading or trailing blanks"},
    {HG "g 1\r\n", "carriage return"},
    {"g 1\n", "line 1: sample g before a # TYPE"},
    {"# HELP g h\ng 1\n", "line 2: sample g before a # TYPE"},
    {HG "g 1\n# TYPE g gauge\n", "a second # TYPE for g"},
    {"# TYPE g gauge\n# HELP g h\ng 1\n# HELP g again\n", "a second # HELP for g"},
    {"# TYPE g gauge\ng 1\n", "line 2: sample of g before its # HELP"},
    {"# TYPE g gauge\ng 1\n# HELP g h\n", "sample of g before its # HELP"},
    {"# HELP g h\n# TYPE g gaug\n", "is not a type"},
    {"# HELP g\n# TYPE g gauge\n", "# HELP for g has no text"},
    {"# HELP g a \\t b\n# TYPE g gauge\n", "bad escape"},
    {"# HELP g h\n", "line 1: family g has # HELP but no # TYPE"},
    {"# TYPE\n", "without a metric name"},
    {HC "c 1\nc_total 2\n", "counter c mixes samples named c and c_total"},
    {HC "c -1\n", "counter c is negative"},
    {"# HELP c_total h\n# TYPE c_total counter\nc_total_total 1\n", "already ends in _total"},
    {HH "h_bucket 1\n", "h_bucket has no le label"},
    {HH "h_bucket{le=\"x\"} 1\n", "is not a number"},
    {HH "h_bucket{le=\"1\"} 1\nh_bucket{le=\"0.5\"} 1\n", "increasing le order"},
    {HH "h_bucket{le=\"1\"} 1\nh_bucket{le=\"1.0\"} 1\n", "increasing le order"},
    {HH "h_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n", "buckets are cumulative"},
    {HH "h_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n", "line 5: histogram h: a series has no le=\"+Inf\" bucket"},
    {HH "h_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n", "the +Inf bucket (2) differs from _count (3)"},
    {HH "h_bucket{le=\"+Inf\"} 2\nh_count 2\n", "has no h_sum"},
    {HH "h_bucket{le=\"+Inf\"} 2\nh_sum 2\n", "has no h_count"},
    {HH "h 1\n", "histogram h: samples are named h_bucket"},
    {HH "h_sum{le=\"1\"} 1\n", "h_sum must not have a le label"},
    {HH "h_count -1\n", "negative or NaN"},
    {HH "h_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n# HELP h_count h\n# TYPE h_count gauge\n",
     "gauge h_count clashes with histogram h: both would own h_count"},
    {"# HELP s h\n# TYPE s summary\ns{quantile=\"1.5\"} 1\n", "outside [0, 1]"},
    {"# HELP s h\n# TYPE s summary\ns 1\ns_sum 1\ns_count 1\n", "s has no quantile label"},
    {"# HELP s h\n# TYPE s summary\ns_sum 1\n", "summary s: a series has no _count"},
    {HG "g 1\n# HELP k h\n# TYPE k gauge\nk 1\ng{a=\"b\"} 2\n", "line 7: the lines of family g are not contiguous"},
    {HG "g 1", "line 3: no newline at the end of the text"},
};

Test(tools_promcheck, names_the_rule_each_bad_text_breaks) {
    for (size_t i = 0; i < sizeof bad_texts / sizeof bad_texts[0]; i++) {
        char err[256] = "";
        int n = promcheck(bad_texts[i].text, err, sizeof err);
        cr_expect_eq(n, -1, "case %zu accepted:\n%s", i, bad_texts[i].text);
        cr_expect(strstr(err, bad_texts[i].reason) != NULL,
                  "case %zu: error \"%s\" does not say \"%s\"", i, err, bad_texts[i].reason);
        cr_expect(strncmp(err, "line ", 5) == 0, "case %zu: \"%s\" names no line", i, err);
    }
}

Test(tools_promcheck, a_short_error_buffer_is_cut_not_overrun) {
    char err[8];
    memset(err, 'x', sizeof err);
    cr_assert_eq(promcheck("g 1\n", err, 6), -1);
    cr_assert_eq(err[5], '\0');
    cr_assert_eq(err[6], 'x');
    cr_assert_eq(promcheck("g 1\n", NULL, 0), -1);
}

Test(tools_promcheck, value_finds_a_series_whatever_its_label_order) {
    cr_assert_eq(promcheck_value(good_text, "up_total{job=\"x\"}"), 1000.0);
    cr_assert_eq(promcheck_value(good_text, "up_total{zone=\"ü\",job=\"a\\\"b\\\\c\\nd\"}"), 3.0);
    cr_assert_eq(promcheck_value(good_text, "lat_bucket{le=\"+Inf\",path=\"/\"}"), 4.0);
    cr_assert_eq(promcheck_value(good_text, "lat_bucket{path=\"/\",le=\"+Inf\"}"), 4.0);
    cr_assert_eq(promcheck_value(good_text, "temp"), -1.5);
    cr_assert(isinf(promcheck_value(good_text, "temp{at=\"day\"}")));
    cr_assert(isnan(promcheck_value(good_text, "temp{at=\"night\"}")));
    cr_assert(isnan(promcheck_value(good_text, "up_total")), "a label set must match whole");
    cr_assert(isnan(promcheck_value(good_text, "up_total{job=\"x\",zone=\"ü\"}")));
    cr_assert(isnan(promcheck_value(good_text, "nothing")));
    cr_assert(isnan(promcheck_value(good_text, "bad{")));
    cr_assert_eq(promcheck_value("x 1\nx_total 2\n", "x"), 1.0, "a prefix is not a match");
}

/* ---- the node's endpoint ---- */

Test(tools_httpd, metrics_pass_promcheck_and_follow_the_actors, .timeout = 30) {
    px_system *sys = pxt_system();
    pxd_node n;
    pxd_httpd *h = node_serve(&n, sys);
    const char *url = pxd_httpd_url(h);

    char *t = metrics_get(url);
    cr_assert_eq(metric(t, "plexus_build_info{version=\"0.1.0\"}"), 1.0);
    cr_assert_eq(metric(t, "plexus_actors_live"), 0.0);
    cr_assert_eq(metric(t, "plexus_messages_total"), 0.0);
    cr_assert_eq(metric(t, "plexus_mailbox_depth_count"), 0.0);
    cr_assert_eq(metric(t, "plexus_node_phase{phase=\"starting\"}"), 1.0);
    cr_assert_eq(metric(t, "plexus_node_phase{phase=\"running\"}"), 0.0);
    cr_assert_geq(metric(t, "plexus_node_uptime_seconds"), 0.0);
    cr_assert_eq(metric(t, "plexus_node_start_time_seconds"), (double)n.started_ms / 1000.0);
    cr_assert(isnan(promcheck_value(t, "plexus_transport_handshakes_total")),
              "no transport: no transport families");
    cr_assert(isnan(promcheck_value(t, "plexus_cluster_fenced")), "standalone: no cluster");
    free(t);

    /* Three actors: r[0] parked with 10 queued, r[1] and r[2] get 20 each. */
    pxt_rec *r[3];
    px_ref a[3];
    for (int i = 0; i < 3; i++) {
        r[i] = pxt_rec_new();
        a[i] = pxt_rec_spawn(sys, r[i], NULL);
    }
    pxt_rec_park(sys, r[0], a[0], 1, 0);
    for (int j = 0; j < 10; j++) {
        pxt_send_u64(sys, a[0], 1, (uint64_t)j);
    }
    for (int i = 1; i < 3; i++) {
        for (int j = 0; j < 20; j++) {
            pxt_send_u64(sys, a[i], 1, (uint64_t)j);
        }
    }
    PXT_AWAIT(pxt_rec_count(r[1]) == 20 && pxt_rec_count(r[2]) == 20, 10000);
    /* The parked message is counted once its receive returns. */
    PXT_AWAIT(PXT_STAT(sys, messages) == 40, 10000);
    atomic_store(&n.log_lines[PX_LOG_WARN], 7);
    atomic_store(&n.admin_ok, 4);
    atomic_store(&n.admin_err, 1);

    t = metrics_get(url);
    cr_assert_eq(metric(t, "plexus_actors_live"), 3.0);
    cr_assert_eq(metric(t, "plexus_actors_spawned_total"), 3.0);
    cr_assert_eq(metric(t, "plexus_messages_total"), 40.0);
    cr_assert_eq(metric(t, "plexus_mailbox_depth_count"), 3.0);
    cr_assert_eq(metric(t, "plexus_mailbox_depth_sum"), 10.0);
    cr_assert_eq(metric(t, "plexus_mailbox_depth_bucket{le=\"0\"}"), 2.0);
    cr_assert_eq(metric(t, "plexus_mailbox_depth_bucket{le=\"8\"}"), 2.0);
    cr_assert_eq(metric(t, "plexus_mailbox_depth_bucket{le=\"64\"}"), 3.0);
    cr_assert_eq(metric(t, "plexus_mailbox_depth_bucket{le=\"32768\"}"), 3.0);
    cr_assert_eq(metric(t, "plexus_mailbox_depth_bucket{le=\"+Inf\"}"), 3.0);
    cr_assert_eq(metric(t, "plexus_mailbox_depth_max"), 10.0);
    cr_assert_eq(metric(t, "plexus_log_lines_total{level=\"warn\"}"), 7.0);
    cr_assert_eq(metric(t, "plexus_log_lines_total{level=\"info\"}"), 0.0);
    cr_assert_eq(metric(t, "plexus_admin_requests_total{outcome=\"ok\"}"), 4.0);
    cr_assert_eq(metric(t, "plexus_admin_requests_total{outcome=\"error\"}"), 1.0);
    free(t);

    pxt_rec_open(r[0]);
    PXT_AWAIT(pxt_rec_count(r[0]) == 11, 10000);
    cr_assert_eq(px_stop(sys, a[2]), PX_OK);
    PXT_AWAIT(PXT_STAT(sys, stopped) == 1 && PXT_STAT(sys, messages) == 51, 10000);
    t = metrics_get(url);
    cr_assert_eq(metric(t, "plexus_actors_live"), 2.0);
    cr_assert_eq(metric(t, "plexus_actors_stopped_total"), 1.0);
    cr_assert_eq(metric(t, "plexus_messages_total"), 51.0);
    cr_assert_eq(metric(t, "plexus_mailbox_depth_count"), 2.0);
    cr_assert_eq(metric(t, "plexus_mailbox_depth_bucket{le=\"0\"}"), 2.0);
    free(t);

    node_unserve(&n, h);
    px_system_free(sys);
    for (int i = 0; i < 3; i++) {
        free(r[i]);
    }
}

static void expect_answer(const char *url, const char *path, int status, const char *body) {
    http_res r = http_get(url, path);
    cr_assert_eq(r.status, status, "GET %s: %d \"%s\", wanted %d", path, r.status, r.body,
                 status);
    cr_assert_str_eq(r.body, body, "GET %s", path);
    cr_assert_str_eq(r.ctype, "text/plain; charset=utf-8");
    http_res_free(&r);
}

Test(tools_httpd, healthz_and_readyz_follow_the_phase_of_a_standalone_node, .timeout = 30) {
    px_system *sys = pxt_system();
    pxd_node n;
    pxd_httpd *h = node_serve(&n, sys);
    const char *url = pxd_httpd_url(h);
    char why[64];

    expect_answer(url, "/healthz", 200, "ok\n");
    expect_answer(url, "/readyz", 503, "not ready: starting\n");
    cr_assert_not(pxd_ready(&n, why, sizeof why));
    cr_assert_str_eq(why, "starting");

    atomic_store(&n.phase, PXD_RUNNING);
    expect_answer(url, "/healthz", 200, "ok\n");
    expect_answer(url, "/readyz", 200, "ready\n");
    cr_assert(pxd_ready(&n, why, sizeof why));
    cr_assert(pxd_ready(&n, NULL, 0));
    char *t = metrics_get(url);
    cr_assert_eq(metric(t, "plexus_node_ready"), 1.0);
    cr_assert_eq(metric(t, "plexus_node_phase{phase=\"running\"}"), 1.0);
    free(t);

    atomic_store(&n.phase, PXD_DRAINING);
    expect_answer(url, "/healthz", 200, "ok\n");
    expect_answer(url, "/readyz", 503, "not ready: draining\n");

    atomic_store(&n.phase, PXD_STOPPED);
    expect_answer(url, "/healthz", 503, "stopped\n");
    expect_answer(url, "/readyz", 503, "not ready: stopped\n");
    t = metrics_get(url);
    cr_assert_eq(metric(t, "plexus_node_ready"), 0.0);
    free(t);

    node_unserve(&n, h);
    px_system_free(sys);
}

Test(tools_httpd, unknown_paths_are_404_and_other_methods_405, .timeout = 30) {
    px_system *sys = pxt_system();
    pxd_node n;
    pxd_httpd *h = node_serve(&n, sys);
    const char *url = pxd_httpd_url(h);
    http_res r;
    const char *paths[] = {"/", "/nope", "/metricsx", "/metrics/x"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        cr_assert_eq(http_do(url, "GET", paths[i], &r), 0);
        cr_assert_eq(r.status, 404, "GET %s: %d", paths[i], r.status);
        http_res_free(&r);
    }
    const char *known[] = {"/metrics", "/healthz", "/readyz"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        cr_assert_eq(http_do(url, "POST", known[i], &r), 0);
        cr_assert_eq(r.status, 405, "POST %s: %d", known[i], r.status);
        http_res_free(&r);
        cr_assert_eq(http_do(url, "DELETE", known[i], &r), 0);
        cr_assert_eq(r.status, 405, "DELETE %s: %d", known[i], r.status);
        http_res_free(&r);
    }
    cr_assert_eq(http_do(url, "HEAD", "/metrics", &r), 0);
    cr_assert_eq(r.status, 200, "HEAD is GET without the body");
    cr_assert_eq(r.len, 0);
    http_res_free(&r);
    node_unserve(&n, h);
    px_system_free(sys);
}

Test(tools_httpd, a_node_with_no_parts_never_crashes_the_endpoint, .timeout = 30) {
    char err[256] = "";
    char *t = pxd_metrics_render(NULL);
    cr_assert_not_null(t);
    cr_assert_eq(promcheck(t, err, sizeof err), 0, "%s", err);
    free(t);
    cr_assert_not(pxd_ready(NULL, NULL, 0));

    /* No system, no transport, no cluster, no mesh, no admin, no config. */
    pxd_node n;
    pxd_httpd *h = node_serve(&n, NULL);
    const char *url = pxd_httpd_url(h);
    t = metrics_get(url);
    cr_assert(isnan(promcheck_value(t, "plexus_actors_live")));
    cr_assert_eq(metric(t, "plexus_build_info{version=\"0.1.0\"}"), 1.0);
    free(t);
    atomic_store(&n.phase, PXD_RUNNING);
    expect_answer(url, "/readyz", 200, "ready\n");
    expect_answer(url, "/healthz", 200, "ok\n");
    node_unserve(&n, h);

    /* The same without parts_mtx (a node built by hand). */
    memset(&n, 0, sizeof n);
    t = pxd_metrics_render(&n);
    cr_assert_not_null(t);
    cr_assert_gt(promcheck(t, err, sizeof err), 0, "%s", err);
    free(t);
}

Test(tools_httpd, start_refuses_bad_urls_and_a_taken_port, .timeout = 30) {
    pxd_node n;
    memset(&n, 0, sizeof n);
    pxd_httpd *h = (pxd_httpd *)&n;
    char err[256];
    const char *bad[] = {"tcp://127.0.0.1:0", "http://127.0.0.1:0/metrics", "nonsense",
                         "http://:0"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        cr_assert_eq(pxd_httpd_start(&n, bad[i], &h, err, sizeof err), PX_EINVAL, "%s", bad[i]);
        cr_assert_null(h, "on error *out is NULL");
        cr_assert_neq(err[0], '\0', "a reason for %s", bad[i]);
    }
    cr_assert_eq(pxd_httpd_start(NULL, "http://127.0.0.1:0", &h, err, sizeof err), PX_EINVAL);
    cr_assert_eq(pxd_httpd_start(&n, NULL, &h, NULL, 0), PX_EINVAL);

    /* A port another socket listens on. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    socklen_t sl = sizeof sa;
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    cr_assert_eq(listen(fd, 1), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", ntohs(sa.sin_port));
    err[0] = '\0';
    cr_assert_eq(pxd_httpd_start(&n, url, &h, err, sizeof err), PX_EIO);
    cr_assert_null(h);
    cr_assert(strstr(err, "cannot listen") != NULL, "%s", err);
    close(fd);
    pxd_httpd_stop(NULL);
}

/* Hammers /metrics until told to stop; counts answers. */
typedef struct hammer {
    char url[160];
    atomic_int stop, ok, done;
} hammer;

static void *hammer_main(void *arg) {
    hammer *hm = arg;
    for (int i = 0; i < 2000 && !atomic_load(&hm->stop); i++) {
        http_res r;
        if (http_do(hm->url, "GET", "/metrics", &r) == 0) {
            if (r.status == 200) {
                atomic_fetch_add(&hm->ok, 1);
            }
            http_res_free(&r);
        }
    }
    atomic_store(&hm->done, 1);
    return NULL;
}

Test(tools_httpd, stop_waits_for_requests_in_flight_and_then_the_node_may_go, .timeout = 60) {
    px_system *sys = pxt_system();
    pxd_node *n = calloc(1, sizeof *n);
    pxd_httpd *h = node_serve(n, sys);
    hammer hm = {0};
    snprintf(hm.url, sizeof hm.url, "%s", pxd_httpd_url(h));
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(pthread_create(&th[i], NULL, hammer_main, &hm), 0);
    }
    PXT_AWAIT(atomic_load(&hm.ok) >= 20, 20000);
    /* Requests are in flight: stop, then free everything the handlers
     * could read (ASan sees any later read). */
    node_unserve(n, h);
    px_system_free(sys);
    free(n);
    atomic_store(&hm.stop, 1);
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
    }
    http_res r;
    cr_assert_neq(http_do(hm.url, "GET", "/metrics", &r) == 0 && r.status == 200, 1,
                  "nothing answers after stop");
    if (r.body != NULL) {
        http_res_free(&r);
    }
}

/* ---- with a real transport pair (ipc) ---- */

#define SECRET "correct horse battery staple"

typedef struct tnode {
    px_system *sys;
    px_transport *t;
    px_identity id;
    char addr[160];
    char name[16];
} tnode;

static void tnode_start(tnode *tn, const char *dir, const char *name) {
    snprintf(tn->name, sizeof tn->name, "%s", name);
    snprintf(tn->addr, sizeof tn->addr, "ipc://%s/%s.sock", dir, name);
    char kp[160], err[256];
    snprintf(kp, sizeof kp, "%s/%s.key", dir, name);
    cr_assert_eq(px_identity_load(kp, true, &tn->id, err, sizeof err), PX_OK, "%s", err);
    px_config cfg;
    pxt_config(&cfg);
    cfg.node_name = tn->name;
    cfg.log_level = PX_LOG_CRIT;
    tn->sys = pxt_system_with(&cfg);
}

static void tnode_link(tnode *tn, tnode *peer) {
    px_transport_cfg tc;
    px_transport_cfg_init(&tc);
    tc.listen = tn->addr;
    tc.identity = &tn->id;
    tc.heartbeat_ms = 50;
    cr_assert_eq(px_secret_from_bytes(SECRET, strlen(SECRET), tc.cluster_key), PX_OK);
    px_peer p = {.name = peer->name, .address = peer->addr};
    memcpy(p.pk, peer->id.pk, PX_PUBKEY_BYTES);
    tc.peers = &p;
    tc.npeers = 1;
    px_err e = px_transport_start(tn->sys, &tc, &tn->t);
    cr_assert_eq(e, PX_OK, "px_transport_start %s: %s", tn->name, px_strerror(e));
}

static px_link_state link_state(tnode *tn, const char *peer) {
    px_link_state st = PX_LINK_CONNECTING;
    cr_assert_eq(px_transport_peer_state(tn->t, peer, &st, NULL), PX_OK);
    return st;
}

Test(tools_httpd, link_and_transport_figures_follow_a_real_pair, .timeout = 60) {
    char dir[64];
    snprintf(dir, sizeof dir, "/tmp/pxt-httpd-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    tnode a = {0}, b = {0};
    tnode_start(&a, dir, "alpha");
    tnode_start(&b, dir, "beta");
    tnode_link(&a, &b);
    tnode_link(&b, &a);
    PXT_AWAIT(link_state(&a, "beta") == PX_LINK_UP && link_state(&b, "alpha") == PX_LINK_UP,
              10000);

    /* alpha's node knows beta as a static peer (config), and itself. */
    pxd_config cfg;
    memset(&cfg, 0, sizeof cfg);
    char pk[PX_PUBKEY_B64_LEN], line[320], self_line[320];
    px_pubkey_format(b.id.pk, pk);
    snprintf(line, sizeof line, "beta %s %s", b.addr, pk);
    px_pubkey_format(a.id.pk, pk);
    snprintf(self_line, sizeof self_line, "alpha %s %s", a.addr, pk);
    cfg.peers.v[0] = line;
    cfg.peers.v[1] = self_line;
    cfg.peers.n = 2;
    pxd_node n;
    pxd_httpd *h = node_serve(&n, a.sys);
    n.cfg = &cfg;
    nng_mtx_lock(n.parts_mtx);
    n.t = a.t;
    nng_mtx_unlock(n.parts_mtx);
    const char *url = pxd_httpd_url(h);

    char *t = metrics_get(url);
    cr_assert_eq(metric(t, "plexus_link_state{peer=\"beta\",state=\"up\"}"), 1.0);
    cr_assert_eq(metric(t, "plexus_link_state{state=\"connecting\",peer=\"beta\"}"), 0.0);
    cr_assert_eq(metric(t, "plexus_link_state{peer=\"beta\",state=\"gone\"}"), 0.0);
    cr_assert(isnan(promcheck_value(t, "plexus_link_state{peer=\"alpha\",state=\"up\"}")),
              "no link to itself");
    cr_assert_geq(metric(t, "plexus_transport_handshakes_total"), 1.0);
    cr_assert_geq(metric(t, "plexus_link_queued_messages{peer=\"beta\"}"), 0.0);
    double out0 = metric(t, "plexus_transport_messages_total{direction=\"out\"}");
    double bytes0 = metric(t, "plexus_transport_bytes_total{direction=\"out\"}");
    free(t);

    /* 25 messages from alpha to an actor on beta. */
    pxt_rec *r = pxt_rec_new();
    px_ref on_b = pxt_rec_spawn(b.sys, r, NULL);
    for (int i = 0; i < 25; i++) {
        pxt_send_u64(a.sys, on_b, 1, (uint64_t)i);
    }
    PXT_AWAIT(pxt_rec_count(r) == 25, 10000);
    t = metrics_get(url);
    cr_assert_geq(metric(t, "plexus_transport_messages_total{direction=\"out\"}"), out0 + 25);
    cr_assert_gt(metric(t, "plexus_transport_bytes_total{direction=\"out\"}"), bytes0);
    free(t);

    /* beta goes: its link leaves "up". */
    px_transport_stop(b.t);
    b.t = NULL;
    PXT_AWAIT(link_state(&a, "beta") != PX_LINK_UP, 10000);
    t = metrics_get(url);
    cr_assert_eq(metric(t, "plexus_link_state{peer=\"beta\",state=\"up\"}"), 0.0);
    free(t);

    nng_mtx_lock(n.parts_mtx);
    n.t = NULL;
    nng_mtx_unlock(n.parts_mtx);
    node_unserve(&n, h);
    px_transport_stop(a.t);
    px_system_free(a.sys);
    px_system_free(b.sys);
    free(r);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

Test(tools_httpd, two_nodes_in_one_process_each_get_their_own_port, .timeout = 30) {
    pxd_node n1, n2;
    pxd_httpd *h1 = node_serve(&n1, NULL);
    pxd_httpd *h2 = node_serve(&n2, NULL);
    cr_assert_str_neq(pxd_httpd_url(h1), pxd_httpd_url(h2));
    atomic_store(&n2.phase, PXD_STOPPED);
    expect_answer(pxd_httpd_url(h1), "/healthz", 200, "ok\n");
    expect_answer(pxd_httpd_url(h2), "/healthz", 503, "stopped\n");

    /* A third on the first one's address is refused; the first serves on. */
    pxd_node n3;
    memset(&n3, 0, sizeof n3);
    pxd_httpd *h3 = NULL;
    char err[256] = "";
    cr_assert_eq(pxd_httpd_start(&n3, pxd_httpd_url(h1), &h3, err, sizeof err), PX_EIO);
    cr_assert_null(h3);
    cr_assert_neq(err[0], '\0');
    expect_answer(pxd_httpd_url(h1), "/healthz", 200, "ok\n");
    node_unserve(&n2, h2);
    expect_answer(pxd_httpd_url(h1), "/healthz", 200, "ok\n");
    node_unserve(&n1, h1);
}
