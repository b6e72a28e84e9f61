/*
 * httpd.c — plexusd's read-only HTTP endpoint on nng's HTTP server:
 * GET /metrics, /healthz, /readyz (httpd.h), and pxd_ready.
 *
 * nng routes by path and method itself: an unknown path gets 404, another
 * method on a known path 405, and HEAD is served as GET without a body.
 * Each handler runs on an nng aio thread and answers at once: metrics are
 * rendered from counters (metrics.c), health and readiness are flags.
 *
 * Lifetime. nng releases a server asynchronously (its reaper frees the
 * handlers later), and a handler may be running while pxd_httpd_stop is
 * called. So the handlers do not point at the pxd_httpd but at a gate:
 * a small refcounted object (one reference per handler, dropped by nng's
 * handler destructor, plus one for the pxd_httpd) that holds the node
 * pointer and counts requests inside. Stop closes the gate (the node
 * pointer becomes NULL: later requests get 503 without touching the node)
 * and waits until no request is inside, so once it returns nothing here
 * reads the node again, and the node may be freed.
 */
#include "httpd.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/supplemental/http/http.h>
#include <nng/supplemental/util/platform.h>

#include "metrics.h"

typedef struct gate {
    nng_mtx *mtx;
    nng_cv *cv;
    pxd_node *node; /* mtx; NULL once closed */
    int inside;     /* mtx: requests using node */
    _Atomic int refs;
} gate;

struct pxd_httpd {
    nng_http_server *srv;
    gate *g;
    char url[160];
};

/* ---- readiness ---- */

bool pxd_ready(pxd_node *n, char *why, size_t whylen) {
    char dummy[8];
    if (why == NULL || whylen == 0) {
        why = dummy;
        whylen = sizeof dummy;
    }
    why[0] = '\0';
    if (n == NULL) {
        snprintf(why, whylen, "no node");
        return false;
    }
    int phase = atomic_load(&n->phase);
    if (phase != PXD_RUNNING) {
        snprintf(why, whylen, "%s", phase >= PXD_STARTING && phase <= PXD_STOPPED
                                        ? pxd_phase_name(phase)
                                        : "in no known phase");
        return false;
    }
    const char *self = n->sys != NULL ? px_system_node_name(n->sys)
                       : n->cfg != NULL ? n->cfg->node_name
                                        : NULL;
    bool ok = true;
    if (n->parts_mtx != NULL) {
        nng_mtx_lock(n->parts_mtx);
    }
    if (n->c != NULL) {
        px_cluster_health h;
        px_member m;
        memset(&h, 0, sizeof h);
        px_cluster_health_get(n->c, &h);
        if (h.fenced) {
            snprintf(why, whylen, "fenced");
            ok = false;
        } else if (!h.registered) {
            snprintf(why, whylen, "not registered in the cluster");
            ok = false;
        } else if (self == NULL || px_cluster_member(n->c, self, &m) != PX_OK) {
            snprintf(why, whylen, "not in the membership view yet");
            ok = false;
        } else if (m.state != PX_MEMBER_UP) {
            snprintf(why, whylen, "member state %s", px_member_state_name(m.state));
            ok = false;
        }
    }
    if (n->parts_mtx != NULL) {
        nng_mtx_unlock(n->parts_mtx);
    }
    return ok;
}

/* ---- the gate ---- */

static void gate_rele(void *arg) {
    gate *g = arg;
    if (atomic_fetch_sub(&g->refs, 1) == 1) {
        nng_cv_free(g->cv);
        nng_mtx_free(g->mtx);
        free(g);
    }
}

/* The node, with a request counted inside; NULL once the gate is closed. */
static pxd_node *gate_enter(gate *g) {
    nng_mtx_lock(g->mtx);
    pxd_node *n = g->node;
    if (n != NULL) {
        g->inside++;
    }
    nng_mtx_unlock(g->mtx);
    return n;
}

static void gate_leave(gate *g) {
    nng_mtx_lock(g->mtx);
    if (--g->inside == 0) {
        nng_cv_wake(g->cv);
    }
    nng_mtx_unlock(g->mtx);
}

static void gate_close(gate *g) {
    nng_mtx_lock(g->mtx);
    g->node = NULL;
    while (g->inside > 0) {
        nng_cv_wait(g->cv);
    }
    nng_mtx_unlock(g->mtx);
}

/* ---- handlers ---- */

/* Finishes the request with status and body (copied). */
static void answer(nng_aio *aio, uint16_t status, const char *ctype, const char *body,
                   size_t len) {
    nng_http_res *res = NULL;
    int rv;
    if ((rv = nng_http_res_alloc(&res)) != 0 || (rv = nng_http_res_set_status(res, status)) != 0 ||
        (rv = nng_http_res_set_header(res, "Content-Type", ctype)) != 0 ||
        (rv = nng_http_res_set_header(res, "Cache-Control", "no-store")) != 0 ||
        (rv = nng_http_res_copy_data(res, body, len)) != 0) {
        nng_http_res_free(res);
        nng_aio_finish(aio, rv); /* nng drops the connection */
        return;
    }
    nng_aio_set_output(aio, 0, res);
    nng_aio_finish(aio, 0);
}

static void answer_text(nng_aio *aio, uint16_t status, const char *text) {
    answer(aio, status, "text/plain; charset=utf-8", text, strlen(text));
}

static gate *gate_of(nng_aio *aio) {
    return nng_http_handler_get_data(nng_aio_get_input(aio, 1));
}

static void on_metrics(nng_aio *aio) {
    gate *g = gate_of(aio);
    pxd_node *n = gate_enter(g);
    if (n == NULL) {
        answer_text(aio, NNG_HTTP_STATUS_SERVICE_UNAVAILABLE, "stopping\n");
        return;
    }
    char *text = pxd_metrics_render(n);
    gate_leave(g);
    if (text == NULL) {
        answer_text(aio, NNG_HTTP_STATUS_INTERNAL_SERVER_ERROR, "out of memory\n");
        return;
    }
    answer(aio, NNG_HTTP_STATUS_OK, "text/plain; version=0.0.4; charset=utf-8", text,
           strlen(text));
    free(text);
}

static void on_healthz(nng_aio *aio) {
    gate *g = gate_of(aio);
    pxd_node *n = gate_enter(g);
    int phase = n != NULL ? atomic_load(&n->phase) : PXD_STOPPED;
    if (n != NULL) {
        gate_leave(g);
    }
    if (phase == PXD_STOPPED) {
        answer_text(aio, NNG_HTTP_STATUS_SERVICE_UNAVAILABLE, "stopped\n");
    } else {
        answer_text(aio, NNG_HTTP_STATUS_OK, "ok\n");
    }
}

static void on_readyz(nng_aio *aio) {
    gate *g = gate_of(aio);
    pxd_node *n = gate_enter(g);
    char why[160] = "stopping";
    bool ready = false;
    if (n != NULL) {
        ready = pxd_ready(n, why, sizeof why);
        gate_leave(g);
    }
    char body[200];
    if (ready) {
        snprintf(body, sizeof body, "ready\n");
    } else {
        snprintf(body, sizeof body, "not ready: %s\n", why);
    }
    answer_text(aio, ready ? NNG_HTTP_STATUS_OK : NNG_HTTP_STATUS_SERVICE_UNAVAILABLE, body);
}

/* ---- start / stop ---- */

static px_err from_nng(int rv) {
    return rv == NNG_ENOMEM ? PX_ENOMEM : rv == NNG_EADDRINVAL || rv == NNG_EINVAL ? PX_EINVAL
                                                                                   : PX_EIO;
}

/* Adds a GET handler for path whose data is g (one more reference). */
static int add_handler(nng_http_server *srv, gate *g, const char *path, void (*cb)(nng_aio *)) {
    nng_http_handler *h = NULL;
    int rv = nng_http_handler_alloc(&h, path, cb);
    if (rv != 0) {
        return rv;
    }
    atomic_fetch_add(&g->refs, 1);
    if ((rv = nng_http_handler_set_data(h, g, gate_rele)) != 0) {
        gate_rele(g);
        nng_http_handler_free(h);
        return rv;
    }
    /* No request here has a body: one is answered 400, never read. */
    if ((rv = nng_http_handler_collect_body(h, true, 0)) != 0 ||
        (rv = nng_http_server_add_handler(srv, h)) != 0) {
        nng_http_handler_free(h); /* drops g's reference */
        return rv;
    }
    return 0;
}

px_err pxd_httpd_start(pxd_node *n, const char *url, pxd_httpd **out, char *err, size_t errlen) {
    char dummy[8];
    if (err == NULL || errlen == 0) {
        err = dummy;
        errlen = sizeof dummy;
    }
    err[0] = '\0';
    if (out != NULL) {
        *out = NULL;
    }
    if (n == NULL || url == NULL || out == NULL) {
        snprintf(err, errlen, "missing node, url or result");
        return PX_EINVAL;
    }
    nng_url *u = NULL;
    int rv = nng_url_parse(&u, url);
    if (rv != 0) {
        snprintf(err, errlen, "bad http url \"%s\": %s", url, nng_strerror(rv));
        return rv == NNG_ENOMEM ? PX_ENOMEM : PX_EINVAL;
    }
    if (strcmp(u->u_scheme, "http") != 0 || u->u_hostname[0] == '\0' ||
        (u->u_path[0] != '\0' && strcmp(u->u_path, "/") != 0)) {
        snprintf(err, errlen, "bad http url \"%s\": expected http://HOST:PORT", url);
        nng_url_free(u);
        return PX_EINVAL;
    }
    pxd_httpd *h = calloc(1, sizeof *h);
    gate *g = calloc(1, sizeof *g);
    if (h == NULL || g == NULL || nng_mtx_alloc(&g->mtx) != 0 || nng_cv_alloc(&g->cv, g->mtx) != 0) {
        if (g != NULL) {
            nng_cv_free(g->cv);
            nng_mtx_free(g->mtx);
        }
        free(g);
        free(h);
        nng_url_free(u);
        snprintf(err, errlen, "out of memory");
        return PX_ENOMEM;
    }
    g->node = n;
    atomic_init(&g->refs, 1);
    h->g = g;
    const char *step = "cannot serve";
    if ((rv = nng_http_server_hold(&h->srv, u)) != 0) {
        h->srv = NULL;
    } else if ((rv = add_handler(h->srv, g, "/metrics", on_metrics)) != 0 ||
               (rv = add_handler(h->srv, g, "/healthz", on_healthz)) != 0 ||
               (rv = add_handler(h->srv, g, "/readyz", on_readyz)) != 0) {
        /* EADDRINUSE here: this process serves that address already. */
        step = "cannot add the handlers";
    } else if ((rv = nng_http_server_start(h->srv)) != 0) {
        step = "cannot listen";
    }
    if (rv != 0) {
        snprintf(err, errlen, "%s on %s: %s", step, url, nng_strerror(rv));
        px_err e = from_nng(rv); /* NNG_EADDRINUSE too: PX_EIO */
        if (h->srv != NULL) {
            nng_http_server_release(h->srv); /* frees the handlers it holds, later */
        }
        gate_rele(g);
        free(h);
        nng_url_free(u);
        return e;
    }
    /* The bound port (the configured one unless it was 0). */
    nng_sockaddr sa;
    int port = atoi(u->u_port);
    if (nng_http_server_get_addr(h->srv, &sa) == 0) {
        if (sa.s_family == NNG_AF_INET) {
            port = ntohs(sa.s_in.sa_port);
        } else if (sa.s_family == NNG_AF_INET6) {
            port = ntohs(sa.s_in6.sa_port);
        }
    }
    bool v6 = strchr(u->u_hostname, ':') != NULL;
    snprintf(h->url, sizeof h->url, "http://%s%s%s:%d", v6 ? "[" : "", u->u_hostname,
             v6 ? "]" : "", port);
    nng_url_free(u);
    *out = h;
    return PX_OK;
}

const char *pxd_httpd_url(const pxd_httpd *h) { return h != NULL ? h->url : ""; }

void pxd_httpd_stop(pxd_httpd *h) {
    if (h == NULL) {
        return;
    }
    gate_close(h->g);
    nng_http_server_stop(h->srv);
    nng_http_server_release(h->srv);
    gate_rele(h->g);
    free(h);
}
