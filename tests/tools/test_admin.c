/* Tests for the admin channel (transport/src/admin.c, plexus/admin.h) over
 * real sockets (loopback tcp on port 0, ipc in a temporary directory):
 * requests and streamed replies (1 MiB messages too), refusals (wrong
 * cluster secret, a key off the allow-list, too many clients, another
 * protocol version, a node-link lane here and an admin client at a node
 * link), raw clients that send garbage, and a malicious client (the
 * handshake done by hand with wire.h) whose tampered, replayed or
 * oversized frame drops its connection; closing, idling and stopping while
 * a handler streams. Each test waits on conditions with a bound, never on
 * a sleep. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/helpers.h"

#include <nng/nng.h>
#include <sodium.h>

#include <plexus/admin.h>
#include <plexus/transport.h>

#include "wire.h"

#define SECRET "correct horse battery staple"
#define WAIT_MS 10000

/* --- the fixture: a node's system, keys, a log that tests can read ------ */

static char tdir[64];
static px_system *g_sys;
static px_identity g_node, g_cli, g_other;
static uint8_t g_key[PX_SECRET_BYTES], g_bad_key[PX_SECRET_BYTES];
static px_admin_server *g_srv;

static pthread_mutex_t g_log_mu = PTHREAD_MUTEX_INITIALIZER;
static char g_log[1 << 16];
static size_t g_log_len;

static void log_capture(void *arg, px_log_level level, const char *node, const char *line) {
    (void)arg;
    if (getenv("PXT_LOG") != NULL) {
        px_log_stderr(NULL, level, node, line);
    }
    pthread_mutex_lock(&g_log_mu);
    int k = snprintf(g_log + g_log_len, sizeof g_log - g_log_len, "%s\n", line);
    if (k > 0) {
        g_log_len += (size_t)k < sizeof g_log - g_log_len ? (size_t)k : 0;
    }
    pthread_mutex_unlock(&g_log_mu);
}

/* Lines of the log that hold both a and b. */
static int log_count(const char *a, const char *b) {
    int n = 0;
    pthread_mutex_lock(&g_log_mu);
    for (const char *l = g_log; l < g_log + g_log_len;) {
        const char *e = strchr(l, '\n');
        char line[1024];
        size_t k = (size_t)(e - l) < sizeof line - 1 ? (size_t)(e - l) : sizeof line - 1;
        memcpy(line, l, k);
        line[k] = '\0';
        n += strstr(line, a) != NULL && strstr(line, b) != NULL;
        l = e + 1;
    }
    pthread_mutex_unlock(&g_log_mu);
    return n;
}

static void identity(const char *name, px_identity *id) {
    char path[128], err[256];
    snprintf(path, sizeof path, "%s/%s.key", tdir, name);
    cr_assert_eq(px_identity_load(path, true, id, err, sizeof err), PX_OK, "%s", err);
}

static void fixture_init(void) {
    snprintf(tdir, sizeof tdir, "/tmp/pxt-admin-XXXXXX");
    cr_assert_not_null(mkdtemp(tdir));
    identity("node", &g_node);
    identity("cli", &g_cli);
    identity("other", &g_other);
    cr_assert_eq(px_secret_from_bytes(SECRET, strlen(SECRET), g_key), PX_OK);
    cr_assert_eq(px_secret_from_bytes("not the right secret", 20, g_bad_key), PX_OK);
    px_config cfg;
    pxt_config(&cfg);
    cfg.workers = 1;
    cfg.node_name = "node1";
    cfg.log_level = PX_LOG_INFO;
    cfg.log_sink = log_capture;
    g_sys = pxt_system_with(&cfg);
}

static void fixture_fini(void) {
    px_admin_server_stop(g_srv);
    g_srv = NULL;
    px_system_free(g_sys);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tdir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(admin, .init = fixture_init, .fini = fixture_fini, .timeout = 60);

/* --- the handler: echo, and a few scripted requests ------------------- */

static atomic_int g_in_handler;   /* a wait-close or flood handler is running */
static atomic_int g_saw_closing;  /* px_admin_conn_closing turned true in it */
static atomic_int g_flood_rv = 1; /* what ended a flood (1: not ended) */
static pthread_mutex_t g_peer_mu = PTHREAD_MUTEX_INITIALIZER;
static char g_peer[64];
static uint8_t g_peer_pk[PX_PUBKEY_BYTES];

static bool is(const uint8_t *d, size_t n, const char *cmd) {
    return n >= strlen(cmd) && memcmp(d, cmd, strlen(cmd)) == 0;
}

static void reply_text(px_admin_conn *c, const char *s) {
    (void)px_admin_send(c, (const uint8_t *)s, strlen(s));
}

/* "stream:N" -> N replies "0".."N-1", then "end". "big:N" -> N bytes of
 * pattern (or "err:<code>"). "wait-close" -> polls px_admin_conn_closing.
 * "flood" -> sends 1 KiB messages until a send fails. Else an echo. */
static void handler(void *arg, px_admin_conn *c, const char *peer, const uint8_t *pk,
                    const uint8_t *d, size_t n) {
    (void)arg;
    pthread_mutex_lock(&g_peer_mu);
    snprintf(g_peer, sizeof g_peer, "%s", peer);
    memcpy(g_peer_pk, pk, PX_PUBKEY_BYTES);
    pthread_mutex_unlock(&g_peer_mu);
    char text[64] = ""; /* a short request as a string: its argument after ':' */
    if (n < sizeof text) {
        memcpy(text, d, n);
    }
    const char *num = strchr(text, ':') ? strchr(text, ':') + 1 : "";
    if (is(d, n, "stream:")) {
        int k = atoi(num);
        for (int i = 0; i < k; i++) {
            char r[16];
            snprintf(r, sizeof r, "%d", i);
            reply_text(c, r);
        }
        reply_text(c, "end");
    } else if (is(d, n, "big:")) {
        size_t k = strtoul(num, NULL, 10);
        uint8_t *b = malloc(k ? k : 1);
        for (size_t i = 0; i < k; i++) {
            b[i] = (uint8_t)(i * 7);
        }
        px_err rv = px_admin_send(c, b, k);
        free(b);
        if (rv != PX_OK) {
            char r[64];
            snprintf(r, sizeof r, "err:%s", px_errname(rv));
            reply_text(c, r);
        }
    } else if (is(d, n, "wait-close")) {
        atomic_store(&g_in_handler, 1);
        atomic_store(&g_saw_closing, PXT_POLL(px_admin_conn_closing(c), WAIT_MS));
    } else if (is(d, n, "flood")) {
        static const uint8_t blob[1024];
        atomic_store(&g_in_handler, 1);
        px_err rv;
        while ((rv = px_admin_send(c, blob, sizeof blob)) == PX_OK) {
        }
        atomic_store(&g_saw_closing, px_admin_conn_closing(c));
        atomic_store(&g_flood_rv, rv);
    } else {
        (void)px_admin_send(c, d, n);
    }
}

/* --- helpers ------------------------------------------------------------ */

static px_admin_server_cfg server_cfg(const char *listen) {
    return (px_admin_server_cfg){.listen = listen,
                                 .sys = g_sys,
                                 .identity = &g_node,
                                 .cluster_key = g_key,
                                 .handler = handler};
}

static const char *server_start(const px_admin_server_cfg *cfg) {
    char err[256] = "";
    px_err e = px_admin_server_start(cfg, &g_srv, err, sizeof err);
    cr_assert_eq(e, PX_OK, "px_admin_server_start: %s: %s", px_errname(e), err);
    return px_admin_server_url(g_srv);
}

/* A server with the defaults on loopback tcp, port 0. */
static const char *server_start_tcp(void) {
    px_admin_server_cfg cfg = server_cfg("tcp://127.0.0.1:0");
    return server_start(&cfg);
}

static px_admin_stats stats(void) {
    px_admin_stats st;
    px_admin_server_stats(g_srv, &st);
    return st;
}

static px_admin_client *dial_as(const char *url, const char *name, const px_identity *id) {
    px_admin_client *c = NULL;
    char err[512] = "", node[64] = "";
    px_err e = px_admin_dial(url, name, id, g_key, WAIT_MS, &c, node, err, sizeof err);
    cr_assert_eq(e, PX_OK, "px_admin_dial: %s: %s", px_errname(e), err);
    cr_assert_str_eq(node, "node1");
    return c;
}

static px_admin_client *dial(const char *url) { return dial_as(url, "plexctl", &g_cli); }

/* Dials and expects the error want (and no client); err gets the reason. */
static void dial_fails(const char *url, const char *name, const px_identity *id,
                       const uint8_t *key, px_err want, char *err, size_t errlen) {
    px_admin_client *c = (px_admin_client *)1;
    err[0] = '\0';
    px_err e = px_admin_dial(url, name, id, key, WAIT_MS, &c, NULL, err, errlen);
    cr_assert_eq(e, want, "px_admin_dial: %s, want %s: %s", px_errname(e), px_errname(want), err);
    cr_assert_null(c);
}

static void send_text(px_admin_client *c, const char *s) {
    px_err e = px_admin_client_send(c, (const uint8_t *)s, strlen(s), WAIT_MS);
    cr_assert_eq(e, PX_OK, "send: %s", px_errname(e));
}

/* Receives one message and checks it is the text want. */
static void expect_text(px_admin_client *c, const char *want) {
    uint8_t *d = NULL;
    size_t n = 0;
    px_err e = px_admin_client_recv(c, WAIT_MS, &d, &n);
    cr_assert_eq(e, PX_OK, "recv: %s (waiting for '%s')", px_errname(e), want);
    cr_assert(n == strlen(want) && memcmp(d, want, n) == 0, "got '%.*s', want '%s'", (int)n,
              (const char *)d, want);
    free(d);
}

/* A new client at url gets its message echoed: the server still serves. */
static void echo_once(const char *url, const char *text) {
    px_admin_client *c = dial(url);
    send_text(c, text);
    expect_text(c, text);
    px_admin_client_close(c);
}

/* Receives until the connection ends; true if it did within WAIT_MS. */
static bool client_ends(px_admin_client *c) {
    int64_t dl = pxt_now_ms() + WAIT_MS;
    while (pxt_now_ms() < dl) {
        uint8_t *d = NULL;
        size_t n;
        px_err e = px_admin_client_recv(c, 200, &d, &n);
        free(d);
        if (e == PX_ECLOSED) {
            return true;
        }
        if (e != PX_OK && e != PX_ETIMEDOUT) {
            return false;
        }
    }
    return false;
}

/* --- a raw client: bytes on a stream, nothing checked ------------------ */

typedef struct raw {
    nng_stream *s;
    nng_aio *aio;
} raw;

static void raw_dial(raw *r, const char *url) {
    nng_stream_dialer *d;
    cr_assert_eq(nng_stream_dialer_alloc(&d, url), 0);
    cr_assert_eq(nng_aio_alloc(&r->aio, NULL, NULL), 0);
    nng_aio_set_timeout(r->aio, WAIT_MS);
    nng_stream_dialer_dial(d, r->aio);
    nng_aio_wait(r->aio);
    cr_assert_eq(nng_aio_result(r->aio), 0, "dial %s: %s", url,
                 nng_strerror(nng_aio_result(r->aio)));
    r->s = nng_aio_get_output(r->aio, 0);
    nng_stream_dialer_free(d);
}

static void raw_write(raw *r, const void *b, size_t n) {
    const uint8_t *p = b;
    while (n > 0) {
        nng_iov iov = {(void *)(uintptr_t)p, n};
        nng_aio_set_iov(r->aio, 1, &iov);
        nng_aio_set_timeout(r->aio, WAIT_MS);
        nng_stream_send(r->s, r->aio);
        nng_aio_wait(r->aio);
        cr_assert_eq(nng_aio_result(r->aio), 0, "write: %s", nng_strerror(nng_aio_result(r->aio)));
        p += nng_aio_count(r->aio);
        n -= nng_aio_count(r->aio);
    }
}

/* Reads exactly n bytes: 0, or the nng error that stopped it. */
static int raw_read(raw *r, void *b, size_t n) {
    uint8_t *p = b;
    while (n > 0) {
        nng_iov iov = {p, n};
        nng_aio_set_iov(r->aio, 1, &iov);
        nng_aio_set_timeout(r->aio, WAIT_MS);
        nng_stream_recv(r->s, r->aio);
        nng_aio_wait(r->aio);
        int rv = nng_aio_result(r->aio);
        if (rv != 0) {
            return rv;
        }
        p += nng_aio_count(r->aio);
        n -= nng_aio_count(r->aio);
    }
    return 0;
}

/* True if the server closes the stream (whatever it sent first). */
static bool raw_closed(raw *r) {
    uint8_t junk[256];
    int rv;
    while ((rv = raw_read(r, junk, sizeof junk)) == 0) {
    }
    return rv != NNG_ETIMEDOUT;
}

static void raw_close(raw *r) {
    nng_stream_free(r->s);
    nng_aio_free(r->aio);
}

/* Reads the server's preamble and handshake frame into a new buffer. */
static uint8_t *raw_hello(raw *r, size_t *n) {
    uint8_t pre[PXN_PREAMBLE_LEN + 4];
    cr_assert_eq(raw_read(r, pre, sizeof pre), 0);
    cr_assert_eq(memcmp(pre, PXN_PREAMBLE, PXN_PREAMBLE_LEN), 0);
    *n = pxn_get_u32(pre + PXN_PREAMBLE_LEN);
    cr_assert(*n > 0 && *n <= PXN_HS_MAX);
    uint8_t *b = malloc(*n);
    cr_assert_eq(raw_read(r, b, *n), 0);
    return b;
}

/* --- a malicious client: the handshake by hand (wire.h) ----------------- */

typedef struct evil {
    raw r;
    pxn_self self;
    pxn_hs hs;
    pxn_cipher rx, tx;
} evil;

/* Dials url as "evil" on `lane`, sends its Hello, reads the answer. PX_OK
 * when the server answered with a Hello (then the keys are set and both
 * Auth frames are exchanged and checked), or pxn_hs_peer's error with its
 * reason in why (a Refuse: PX_ECLOSED or PX_EVERSION). */
static px_err evil_handshake(evil *e, const char *url, uint32_t lane, char *why, size_t wl) {
    memset(e, 0, sizeof *e);
    e->self = (pxn_self){.node_name = "evil",
                         .node_id = px_node_id("evil"),
                         .id = &g_cli,
                         .cluster_key = g_key,
                         .max_frame = 1u << 20};
    raw_dial(&e->r, url);
    cr_assert_eq(pxn_hs_init(&e->hs, PXN_DIALER, &e->self, lane, NULL, NULL), PX_OK);
    size_t n;
    uint8_t *b = pxn_hello_wire(&e->hs, &n);
    raw_write(&e->r, b, n);
    free(b);
    b = raw_hello(&e->r, &n);
    Plexus__Refuse__Reason rr;
    px_err rv = pxn_hs_peer(&e->hs, b, n, lane, &rr, why, wl);
    free(b);
    if (rv != PX_OK) {
        return rv;
    }
    cr_assert_eq(pxn_hs_keys(&e->hs, &e->rx, &e->tx), PX_OK);
    b = pxn_auth_seal(&e->hs, &e->tx, &n);
    raw_write(&e->r, b, n);
    free(b);
    uint8_t pt[512];
    size_t pl = sizeof pt;
    cr_assert_eq(raw_read(&e->r, pt, 4), 0);
    n = pxn_get_u32(pt);
    cr_assert(n <= sizeof pt - 4);
    cr_assert_eq(raw_read(&e->r, pt + 4, n), 0);
    cr_assert_eq(pxn_open(&e->rx, pt, pt + 4, n, pt + 4, &pl), PX_OK);
    cr_assert_eq(pxn_auth_check(&e->hs, pt + 4, pl), PX_OK, "the server's Auth does not check");
    return PX_OK;
}

/* Seals msg into a new buffer (*n its size on the wire). */
static uint8_t *evil_seal(evil *e, const char *msg, size_t *n) {
    *n = pxn_sealed_len(&e->tx, strlen(msg));
    uint8_t *b = malloc(*n);
    pxn_seal(&e->tx, (const uint8_t *)msg, strlen(msg), b);
    return b;
}

/* Reads one sealed reply and checks it is the text want. */
static void evil_expect(evil *e, const char *want) {
    uint8_t b[1024];
    size_t pl;
    cr_assert_eq(raw_read(&e->r, b, 4), 0);
    uint32_t n = pxn_get_u32(b);
    cr_assert(n <= sizeof b - 4);
    cr_assert_eq(raw_read(&e->r, b + 4, n), 0);
    cr_assert_eq(pxn_open(&e->rx, b, b + 4, n, b + 4, &pl), PX_OK);
    cr_assert(pl == strlen(want) && memcmp(b + 4, want, pl) == 0);
}

static void evil_close(evil *e) {
    pxn_hs_fini(&e->hs);
    raw_close(&e->r);
}

/* ======================================================================= */

Test(admin, requests_get_their_replies_in_order_and_a_handler_can_stream_many) {
    const char *url = server_start_tcp();
    cr_assert(strncmp(url, "tcp://127.0.0.1:", 16) == 0 && strcmp(url, "tcp://127.0.0.1:0") != 0,
              "%s", url);
    px_admin_client *c = dial(url);

    /* Pipelined requests: replies come back in request order. */
    send_text(c, "one");
    send_text(c, "two");
    send_text(c, "three");
    expect_text(c, "one");
    expect_text(c, "two");
    expect_text(c, "three");

    /* The handler saw who we are. */
    pthread_mutex_lock(&g_peer_mu);
    cr_assert_str_eq(g_peer, "plexctl");
    cr_assert_eq(memcmp(g_peer_pk, g_cli.pk, PX_PUBKEY_BYTES), 0);
    pthread_mutex_unlock(&g_peer_mu);

    /* Many replies to one request. */
    send_text(c, "stream:1000");
    for (int i = 0; i < 1000; i++) {
        char want[16];
        snprintf(want, sizeof want, "%d", i);
        expect_text(c, want);
    }
    expect_text(c, "end");

    /* 1 MiB each way. */
    size_t big = 1u << 20;
    uint8_t *b = malloc(big);
    randombytes_buf(b, big);
    cr_assert_eq(px_admin_client_send(c, b, big, WAIT_MS), PX_OK);
    uint8_t *d = NULL;
    size_t n = 0;
    cr_assert_eq(px_admin_client_recv(c, WAIT_MS, &d, &n), PX_OK);
    cr_assert(n == big && memcmp(d, b, big) == 0, "the 1 MiB echo differs (%zu bytes)", n);
    free(d);
    free(b);
    send_text(c, "big:1048576");
    cr_assert_eq(px_admin_client_recv(c, WAIT_MS, &d, &n), PX_OK);
    cr_assert_eq(n, big);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(d[i], (uint8_t)(i * 7), "byte %zu", i);
    }
    free(d);

    /* A receive that times out loses nothing: the connection goes on. */
    cr_assert_eq(px_admin_client_recv(c, 50, &d, &n), PX_ETIMEDOUT);
    cr_assert_null(d);
    send_text(c, "after a timeout");
    expect_text(c, "after a timeout");

    /* An empty message is a message. */
    cr_assert_eq(px_admin_client_send(c, (const uint8_t *)"", 0, WAIT_MS), PX_OK);
    cr_assert_eq(px_admin_client_recv(c, WAIT_MS, &d, &n), PX_OK);
    cr_assert_eq(n, 0);
    free(d);

    px_admin_stats st = stats();
    cr_assert_eq(st.accepted, 1);
    cr_assert_eq(st.clients, 1);
    cr_assert_eq(st.refused, 0);
    cr_assert_eq(st.bad_frames, 0);
    cr_assert_eq(st.requests, 3 + 1 + 1 + 1 + 1 + 1);
    px_admin_client_close(c);
    PXT_AWAIT(stats().clients == 0, WAIT_MS);
    cr_assert_eq(log_count("plexctl", "connected from 127.0.0.1:"), 1);
}

Test(admin, it_works_over_ipc_too) {
    char listen[128];
    snprintf(listen, sizeof listen, "ipc://%s/admin.sock", tdir);
    px_admin_server_cfg cfg = server_cfg(listen);
    cr_assert_str_eq(server_start(&cfg), listen);
    echo_once(listen, "hello over ipc");
    cr_assert_eq(log_count("connected from ipc", "plexctl"), 1);
}

Test(admin, messages_over_a_side_s_limit_are_refused_and_the_connection_stays) {
    px_admin_server_cfg cfg = server_cfg("tcp://127.0.0.1:0");
    cfg.max_msg = 8u << 20; /* above the client's 4 MiB */
    const char *url = server_start(&cfg);
    px_admin_client *c = dial(url);
    uint8_t *b = calloc(1, PX_ADMIN_CLIENT_MAX_MSG + 1);
    cr_assert_eq(px_admin_client_send(c, b, PX_ADMIN_CLIENT_MAX_MSG + 1, WAIT_MS), PX_EMSGSIZE);
    free(b);
    send_text(c, "big:4194305"); /* the client's limit + 1: the server may not send it */
    expect_text(c, "err:PX_EMSGSIZE");
    send_text(c, "big:4194304");
    uint8_t *d = NULL;
    size_t n = 0;
    cr_assert_eq(px_admin_client_recv(c, WAIT_MS, &d, &n), PX_OK);
    cr_assert_eq(n, PX_ADMIN_CLIENT_MAX_MSG);
    free(d);
    px_admin_client_close(c);
    px_admin_server_stop(g_srv);

    /* And a server's max_msg below what the client would send. */
    cfg.max_msg = 4096;
    url = server_start(&cfg);
    c = dial(url);
    uint8_t small[4097] = {0};
    cr_assert_eq(px_admin_client_send(c, small, sizeof small, WAIT_MS), PX_EMSGSIZE);
    cr_assert_eq(px_admin_client_send(c, small, 4096, WAIT_MS), PX_OK);
    cr_assert_eq(px_admin_client_recv(c, WAIT_MS, &d, &n), PX_OK);
    cr_assert_eq(n, 4096);
    free(d);
    px_admin_client_close(c);
    cr_assert_eq(stats().bad_frames, 0);
}

Test(admin, a_client_with_the_wrong_cluster_secret_is_refused_and_others_are_still_served) {
    const char *url = server_start_tcp();
    char err[512];
    dial_fails(url, "intruder", &g_other, g_bad_key, PX_EAUTH, err, sizeof err);
    cr_assert(strstr(err, "cluster secret") != NULL, "%s", err);
    PXT_AWAIT(stats().refused == 1, WAIT_MS);
    PXT_AWAIT(log_count("refused a connection from 127.0.0.1:", "cluster secret") == 1, WAIT_MS);

    echo_once(url, "still here");
    px_admin_stats st = stats();
    cr_assert_eq(st.accepted, 1);
    cr_assert_eq(st.refused, 1);
}

Test(admin, an_allow_list_refuses_an_unlisted_key_and_accepts_a_listed_one) {
    uint8_t allowed[1][PX_PUBKEY_BYTES];
    memcpy(allowed[0], g_cli.pk, PX_PUBKEY_BYTES);
    px_admin_server_cfg cfg = server_cfg("tcp://127.0.0.1:0");
    cfg.allowed = (const uint8_t(*)[PX_PUBKEY_BYTES])allowed;
    cfg.n_allowed = 1;
    const char *url = server_start(&cfg);

    char err[512];
    dial_fails(url, "stranger", &g_other, g_key, PX_EAUTH, err, sizeof err);
    cr_assert(strstr(err, "UNKNOWN_IDENTITY") != NULL, "%s", err);
    PXT_AWAIT(stats().refused == 1, WAIT_MS);
    char pkb[PX_PUBKEY_B64_LEN];
    px_pubkey_format(g_other.pk, pkb);
    cr_assert_eq(log_count("refused a connection from 127.0.0.1:", pkb), 1);

    echo_once(url, "listed");
    cr_assert_eq(stats().accepted, 1);
}

/* A raw client at url writes b[0..n) and then waits for the server to
 * close (or, with hang_up, closes first); the server counts one refusal
 * more. */
static void garbage(const char *url, const void *b, size_t n, bool hang_up, uint64_t *refused) {
    raw r;
    raw_dial(&r, url);
    raw_write(&r, b, n);
    if (!hang_up) {
        cr_assert(raw_closed(&r), "the server kept a connection that sent garbage");
    }
    raw_close(&r);
    *refused += 1;
    PXT_AWAIT(stats().refused == *refused, WAIT_MS);
}

Test(admin, raw_clients_that_send_garbage_are_dropped_and_counted_and_others_still_served) {
    px_admin_server_cfg cfg = server_cfg("tcp://127.0.0.1:0");
    cfg.handshake_ms = 300;
    const char *url = server_start(&cfg);
    uint8_t hdr[PXN_PREAMBLE_LEN + 4 + 10];
    memcpy(hdr, PXN_PREAMBLE, PXN_PREAMBLE_LEN);
    memcpy(hdr + PXN_PREAMBLE_LEN + 4, "0123456789", 10);
    uint64_t want = 0;

    /* Not a preamble at all. */
    garbage(url, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27, false, &want);
    PXT_AWAIT(log_count("from 127.0.0.1:", "bad preamble") == 1, WAIT_MS);

    /* Handshake lengths out of bounds: over 4096, 0xffffffff, 0. */
    uint32_t lens[] = {PXN_HS_MAX + 1, UINT32_MAX, 0};
    for (size_t i = 0; i < 3; i++) {
        pxn_put_u32(hdr + PXN_PREAMBLE_LEN, lens[i]);
        garbage(url, hdr, PXN_PREAMBLE_LEN + 4, false, &want);
    }
    cr_assert_eq(log_count("from 127.0.0.1:", "out of bounds"), 3);

    /* A handshake cut short (10 of 200 bytes): dropped after handshake_ms. */
    pxn_put_u32(hdr + PXN_PREAMBLE_LEN, 200);
    garbage(url, hdr, sizeof hdr, false, &want);
    cr_assert_eq(log_count("from 127.0.0.1:", "timed out before the handshake"), 1);

    /* A hangup in the middle of the handshake. */
    garbage(url, hdr, sizeof hdr, true, &want);
    PXT_AWAIT(log_count("from 127.0.0.1:", "closed before the handshake") == 1, WAIT_MS);

    /* A body that is not a Handshake: refused with BAD_HELLO. */
    raw r;
    raw_dial(&r, url);
    pxn_put_u32(hdr + PXN_PREAMBLE_LEN, 16);
    raw_write(&r, hdr, PXN_PREAMBLE_LEN + 4);
    raw_write(&r, "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 16);
    size_t n;
    uint8_t *b = raw_hello(&r, &n);
    Plexus__Handshake *m = plexus__handshake__unpack(NULL, n, b);
    cr_assert_not_null(m);
    cr_assert_eq(m->msg_case, PLEXUS__HANDSHAKE__MSG_REFUSE);
    cr_assert_eq(m->refuse->reason, PLEXUS__REFUSE__REASON__BAD_HELLO);
    plexus__handshake__free_unpacked(m, NULL);
    free(b);
    cr_assert(raw_closed(&r));
    raw_close(&r);
    want++;
    PXT_AWAIT(stats().refused == want, WAIT_MS);

    echo_once(url, "still serving");
    px_admin_stats st = stats();
    cr_assert_eq(st.accepted, 1);
    cr_assert_eq(st.refused, want);
    cr_assert_eq(st.bad_frames, 0);
    cr_assert_eq(log_count("refused a connection from 127.0.0.1:", ""), (int)want);
}

Test(admin, a_tampered_replayed_or_oversized_frame_drops_that_connection_as_a_bad_frame) {
    px_admin_server_cfg cfg = server_cfg("tcp://127.0.0.1:0");
    cfg.max_msg = 4096;
    const char *url = server_start(&cfg);
    px_admin_client *bystander = dial(url);
    char why[320];
    for (int kind = 0; kind < 3; kind++) {
        evil e;
        cr_assert_eq(evil_handshake(&e, url, PLEXUS__LANE__LANE_ADMIN, why, sizeof why), PX_OK,
                     "%s", why);
        /* A well-formed frame first: the hand-made handshake is good. */
        size_t n;
        uint8_t *b = evil_seal(&e, "fine", &n);
        raw_write(&e.r, b, n);
        evil_expect(&e, "fine");
        if (kind == 0) { /* one bit flipped in the ciphertext */
            free(b);
            b = evil_seal(&e, "tampered", &n);
            b[n - 1] ^= 1;
        } else if (kind == 2) { /* a length over max_frame */
            pxn_put_u32(b, 4096 + PXN_TAG_BYTES + 1);
        } /* else kind 1: the same frame again, a replay */
        raw_write(&e.r, b, n);
        free(b);
        cr_assert(raw_closed(&e.r), "the server kept a connection that sent a bad frame");
        evil_close(&e);
        PXT_AWAIT(stats().bad_frames == (uint64_t)kind + 1, WAIT_MS);
    }
    PXT_AWAIT(stats().clients == 1, WAIT_MS);
    cr_assert_eq(log_count("disconnected", "failed authentication"), 2);
    cr_assert_eq(log_count("disconnected", "length out of bounds"), 1);
    cr_assert_eq(log_count("evil", "127.0.0.1:"), 6); /* connected, disconnected, each */

    send_text(bystander, "unaffected");
    expect_text(bystander, "unaffected");
    px_admin_client_close(bystander);
    px_admin_stats st = stats();
    cr_assert_eq(st.accepted, 4);
    cr_assert_eq(st.refused, 0);
    cr_assert_eq(st.requests, 3 + 1);
}

Test(admin, connections_beyond_max_clients_are_refused_until_one_leaves) {
    px_admin_server_cfg cfg = server_cfg("tcp://127.0.0.1:0");
    cfg.max_clients = 2;
    const char *url = server_start(&cfg);
    px_admin_client *a = dial(url), *b = dial(url);
    char err[512];
    dial_fails(url, "third", &g_cli, g_key, PX_EAUTH, err, sizeof err);
    cr_assert(strstr(err, "too many admin clients") != NULL, "%s", err);
    PXT_AWAIT(stats().refused == 1, WAIT_MS);
    cr_assert_eq(log_count("refused a connection from 127.0.0.1:", "too many"), 1);

    px_admin_client_close(a);
    PXT_AWAIT(stats().clients == 1, WAIT_MS);
    PXT_AWAIT(log_count("plexctl", "disconnected") == 1, WAIT_MS);
    px_admin_client *c = dial(url);
    send_text(c, "third in");
    expect_text(c, "third in");
    send_text(b, "second still");
    expect_text(b, "second still");
    px_admin_client_close(b);
    px_admin_client_close(c);
    cr_assert_eq(stats().accepted, 3);
}

Test(admin, closing_turns_true_in_a_streaming_handler_once_the_client_hangs_up) {
    const char *url = server_start_tcp();
    px_admin_client *c = dial(url);
    send_text(c, "wait-close");
    PXT_AWAIT(atomic_load(&g_in_handler) == 1, WAIT_MS);
    cr_assert_eq(stats().clients, 1);
    px_admin_client_close(c);
    PXT_AWAIT(atomic_load(&g_saw_closing) == 1, WAIT_MS);
    PXT_AWAIT(stats().clients == 0, WAIT_MS);
    cr_assert_eq(stats().bad_frames, 0);
    PXT_AWAIT(log_count("disconnected", "the client closed the connection") == 1, WAIT_MS);
}

Test(admin, stopping_the_server_ends_a_handler_that_streams_and_joins_it) {
    const char *url = server_start_tcp();
    px_admin_client *c = dial(url);
    send_text(c, "flood");
    for (int i = 0; i < 100; i++) { /* it streams */
        uint8_t *d = NULL;
        size_t n = 0;
        cr_assert_eq(px_admin_client_recv(c, WAIT_MS, &d, &n), PX_OK);
        cr_assert_eq(n, 1024);
        free(d);
    }
    cr_assert_eq(atomic_load(&g_flood_rv), 1);
    int64_t t0 = pxt_now_ms();
    px_admin_server_stop(g_srv); /* joins the handler's thread */
    g_srv = NULL;
    cr_assert_lt(pxt_now_ms() - t0, 3000); /* not a 5 s send timeout: the close ended it */
    cr_assert_eq(atomic_load(&g_flood_rv), PX_ECLOSED);
    cr_assert_eq(atomic_load(&g_saw_closing), 1);
    cr_assert(client_ends(c), "the client never saw the connection end");
    px_admin_client_close(c);
}

Test(admin, an_idle_connection_is_closed_after_idle_ms) {
    px_admin_server_cfg cfg = server_cfg("tcp://127.0.0.1:0");
    cfg.idle_ms = 200;
    const char *url = server_start(&cfg);
    px_admin_client *c = dial(url);
    send_text(c, "ping");
    expect_text(c, "ping");
    int64_t t0 = pxt_now_ms();
    cr_assert(client_ends(c));
    cr_assert_geq(pxt_now_ms() - t0, 150);
    px_admin_client_close(c);
    PXT_AWAIT(log_count("disconnected", "idle for 200 ms") == 1, WAIT_MS);
    PXT_AWAIT(stats().clients == 0, WAIT_MS);
}

/* A Hello of versions 99..99, packed by hand. */
static uint8_t *future_hello(size_t *n) {
    uint8_t kx_pk[32], kx_sk[32], nonce[32];
    crypto_kx_keypair(kx_pk, kx_sk);
    randombytes_buf(nonce, sizeof nonce);
    Plexus__Hello h = PLEXUS__HELLO__INIT;
    h.version = 99;
    h.min_version = 99;
    h.node_name = "future";
    h.node_id = px_node_id("future");
    h.identity_pk = (ProtobufCBinaryData){PX_PUBKEY_BYTES, g_cli.pk};
    h.kx_pk = (ProtobufCBinaryData){32, kx_pk};
    h.nonce = (ProtobufCBinaryData){32, nonce};
    h.lane = PLEXUS__LANE__LANE_ADMIN;
    h.max_frame = 1u << 20;
    Plexus__Handshake m = PLEXUS__HANDSHAKE__INIT;
    m.msg_case = PLEXUS__HANDSHAKE__MSG_HELLO;
    m.hello = &h;
    size_t k = plexus__handshake__get_packed_size(&m);
    uint8_t *b = malloc(PXN_PREAMBLE_LEN + 4 + k);
    memcpy(b, PXN_PREAMBLE, PXN_PREAMBLE_LEN);
    pxn_put_u32(b + PXN_PREAMBLE_LEN, (uint32_t)k);
    plexus__handshake__pack(&m, b + PXN_PREAMBLE_LEN + 4);
    *n = PXN_PREAMBLE_LEN + 4 + k;
    return b;
}

/* A fake node: accepts one connection, reads the client's Hello, answers
 * with a Refuse VERSION. */
typedef struct fake {
    nng_stream_listener *l;
    char url[64];
    pthread_t thr;
} fake;

static void *fake_main(void *arg) {
    fake *f = arg;
    raw r = {0};
    if (nng_aio_alloc(&r.aio, NULL, NULL) != 0) {
        return NULL;
    }
    nng_aio_set_timeout(r.aio, WAIT_MS);
    nng_stream_listener_accept(f->l, r.aio);
    nng_aio_wait(r.aio);
    if (nng_aio_result(r.aio) == 0) {
        r.s = nng_aio_get_output(r.aio, 0);
        uint8_t pre[PXN_PREAMBLE_LEN + 4], body[PXN_HS_MAX];
        if (raw_read(&r, pre, sizeof pre) == 0 &&
            raw_read(&r, body, pxn_get_u32(pre + PXN_PREAMBLE_LEN)) == 0) {
            size_t n;
            uint8_t *b = pxn_refuse_wire(PLEXUS__REFUSE__REASON__VERSION, "from the future",
                                         true, &n);
            nng_iov iov = {b, n};
            nng_aio_set_iov(r.aio, 1, &iov);
            nng_stream_send(r.s, r.aio);
            nng_aio_wait(r.aio);
            free(b);
        }
        nng_stream_free(r.s);
    }
    nng_aio_free(r.aio);
    return NULL;
}

Test(admin, a_client_of_another_protocol_version_is_refused_and_told_why) {
    const char *url = server_start_tcp();
    raw r;
    raw_dial(&r, url);
    size_t n;
    uint8_t *b = future_hello(&n);
    raw_write(&r, b, n);
    free(b);
    b = raw_hello(&r, &n);
    Plexus__Handshake *m = plexus__handshake__unpack(NULL, n, b);
    cr_assert_not_null(m);
    cr_assert_eq(m->msg_case, PLEXUS__HANDSHAKE__MSG_REFUSE);
    cr_assert_eq(m->refuse->reason, PLEXUS__REFUSE__REASON__VERSION);
    cr_assert_eq(m->refuse->version, PX_WIRE_VERSION);
    plexus__handshake__free_unpacked(m, NULL);
    free(b);
    cr_assert(raw_closed(&r));
    raw_close(&r);
    PXT_AWAIT(stats().refused == 1, WAIT_MS);
    cr_assert_eq(log_count("refused a connection from 127.0.0.1:", "incompatible protocol"), 1);

    /* And px_admin_dial, refused by a node of another version. */
    fake f;
    cr_assert_eq(nng_stream_listener_alloc(&f.l, "tcp://127.0.0.1:0"), 0);
    cr_assert_eq(nng_stream_listener_listen(f.l), 0);
    int port = 0;
    cr_assert_eq(nng_stream_listener_get_int(f.l, NNG_OPT_TCP_BOUND_PORT, &port), 0);
    snprintf(f.url, sizeof f.url, "tcp://127.0.0.1:%d", port);
    cr_assert_eq(pthread_create(&f.thr, NULL, fake_main, &f), 0);
    char err[512];
    dial_fails(f.url, "plexctl", &g_cli, g_key, PX_EVERSION, err, sizeof err);
    pthread_join(f.thr, NULL);
    nng_stream_listener_free(f.l);
    cr_assert(strstr(err, "from the future") != NULL, "%s", err);
}

Test(admin, a_node_link_lane_is_refused_here_and_an_admin_client_at_a_node_link) {
    const char *url = server_start_tcp();
    char why[320];
    for (uint32_t lane = PLEXUS__LANE__LANE_CONTROL; lane <= PLEXUS__LANE__LANE_BULK; lane++) {
        evil e;
        px_err rv = evil_handshake(&e, url, lane, why, sizeof why);
        cr_assert_eq(rv, PX_ECLOSED, "lane %u: %s: %s", lane, px_errname(rv), why);
        cr_assert(strstr(why, "BAD_HELLO") != NULL && strstr(why, "lane") != NULL, "%s", why);
        cr_assert(raw_closed(&e.r));
        evil_close(&e);
        PXT_AWAIT(stats().refused == lane + 1, WAIT_MS);
    }
    cr_assert_eq(stats().accepted, 0);

    /* An admin client at a node link's listener. */
    char listen[128];
    snprintf(listen, sizeof listen, "ipc://%s/node.sock", tdir);
    px_transport_cfg tc;
    px_transport_cfg_init(&tc);
    tc.listen = listen;
    tc.identity = &g_node;
    memcpy(tc.cluster_key, g_key, PX_SECRET_BYTES);
    px_transport *t = NULL;
    cr_assert_eq(px_transport_start(g_sys, &tc, &t), PX_OK);
    char err[512];
    dial_fails(listen, "plexctl", &g_cli, g_key, PX_EAUTH, err, sizeof err);
    cr_assert(strstr(err, "BAD_HELLO") != NULL && strstr(err, "lane") != NULL, "%s", err);
    px_transport_stats ts;
    px_transport_stats_get(t, &ts);
    cr_assert_eq(ts.refused, 1);
    cr_assert_eq(ts.handshakes, 0);
    px_transport_stop(t);
}

Test(admin, a_bad_config_is_refused_with_a_reason) {
    px_admin_server *s = (px_admin_server *)1;
    char err[256] = "";
    px_admin_server_cfg cfg = server_cfg("tcp://127.0.0.1:0");
    cfg.handler = NULL;
    cr_assert_eq(px_admin_server_start(&cfg, &s, err, sizeof err), PX_EINVAL);
    cr_assert_null(s);
    cr_assert(strstr(err, "handler") != NULL, "%s", err);
    cfg = server_cfg("tcp://127.0.0.1:0");
    cfg.max_msg = 100;
    cr_assert_eq(px_admin_server_start(&cfg, &s, err, sizeof err), PX_EINVAL);
    cr_assert(strstr(err, "max_msg") != NULL, "%s", err);
    cfg = server_cfg("nonsense://x");
    cr_assert_eq(px_admin_server_start(&cfg, &s, err, sizeof err), PX_EINVAL);
    cr_assert(strstr(err, "nonsense") != NULL, "%s", err);

    dial_fails("tcp://127.0.0.1:1", "bad name!", &g_cli, g_key, PX_EINVAL, err, sizeof err);
    cr_assert(strstr(err, "name") != NULL, "%s", err);
    dial_fails("tcp://127.0.0.1:1", "plexctl", &g_cli, g_key, PX_EUNREACHABLE, err, sizeof err);
    dial_fails("nonsense://x", "plexctl", &g_cli, g_key, PX_EINVAL, err, sizeof err);
    px_admin_server_stop(NULL);
    px_admin_client_close(NULL);
}
