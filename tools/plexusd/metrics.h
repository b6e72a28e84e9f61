/*
 * metrics.h — the node's figures in the Prometheus text exposition format
 * (version 0.0.4): every family has # HELP and # TYPE, names are
 * plexus_*, counters end in _total, label values are escaped. Served at
 * GET /metrics by httpd.c; the list is in the README ("Metrics").
 */
#ifndef PXD_METRICS_H
#define PXD_METRICS_H

#include "daemon.h"

/* Renders every metric of n into a new string (free() it). NULL only when
 * out of memory. Any thread; reads counters, never blocks on actors. */
char *pxd_metrics_render(pxd_node *n);

#endif
