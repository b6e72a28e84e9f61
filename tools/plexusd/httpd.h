/*
 * httpd.h — plexusd's HTTP endpoint (nng's HTTP server): GET /metrics
 * (Prometheus text, metrics.h), GET /healthz (200 "ok" while the process
 * serves; 503 once it is stopping), GET /readyz (200 when pxd_ready, else
 * 503 with the reason). Anything else: 404; other methods: 405. Read-only:
 * no admin operation is reachable over HTTP (that is the admin channel,
 * plexus/admin.h).
 */
#ifndef PXD_HTTPD_H
#define PXD_HTTPD_H

#include "daemon.h"

/* Starts serving on url ("http://127.0.0.1:9100"; port 0 = any free port).
 * Borrows n, which must outlive the server: the handlers, on nng's
 * threads, read it until pxd_httpd_stop returns. url is borrowed for the
 * call. On PX_OK *out is the caller's, for pxd_httpd_stop; on error *out
 * is NULL and nothing needs freeing. PX_EINVAL (bad url, or n, url or out
 * missing; reason in err, which may be NULL), PX_EIO (cannot listen, e.g.
 * the address is in use), PX_ENOMEM. Any thread. */
px_err pxd_httpd_start(pxd_node *n, const char *url, pxd_httpd **out, char *err, size_t errlen);

/* The bound url with its real port ("http://127.0.0.1:40123"). Borrowed. */
const char *pxd_httpd_url(const pxd_httpd *h);

/* Closes the gate (requests from now on get 503 without touching the
 * node), waits until no request is inside a handler, then stops and
 * releases the server and frees h: once it returns nothing here reads the
 * node again. Blocks; not from a handler (it would wait for itself).
 * NULL-safe. */
void pxd_httpd_stop(pxd_httpd *h);

#endif
