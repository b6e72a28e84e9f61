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
 * PX_EINVAL (bad url; reason in err), PX_EIO (cannot listen), PX_ENOMEM. */
px_err pxd_httpd_start(pxd_node *n, const char *url, pxd_httpd **out, char *err, size_t errlen);

/* The bound url with its real port ("http://127.0.0.1:40123"). Borrowed. */
const char *pxd_httpd_url(const pxd_httpd *h);

void pxd_httpd_stop(pxd_httpd *h); /* NULL-safe */

#endif
