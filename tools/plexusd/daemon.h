/*
 * daemon.h — what a running plexusd is made of, shared by its parts
 * (main.c, ops.c: the admin requests, metrics.c, httpd.c, builtins.c).
 */
#ifndef PXD_DAEMON_H
#define PXD_DAEMON_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <nng/nng.h>
#include <nng/supplemental/util/platform.h>

#include <plexus/admin.h>
#include <plexus/cluster.h>
#include <plexus/mesh.h>
#include <plexus/plexus.h>
#include <plexus/transport.h>

#include "config.h"

/* The version plexusd reports (--version, metrics, plexctl info). */
#define PXD_VERSION "0.1.0"

typedef struct pxd_httpd pxd_httpd;

typedef enum pxd_phase {
    PXD_STARTING = 0, /* not joined yet */
    PXD_RUNNING = 1,
    PXD_DRAINING = 2, /* SIGTERM or `plexctl drain`: leaving */
    PXD_STOPPED = 3,
} pxd_phase;

typedef struct pxd_node {
    pxd_config *cfg;
    px_system *sys;
    px_identity id;
    uint8_t cluster_key[PX_SECRET_BYTES];
    px_transport *t;
    px_cluster *c;           /* membership (standalone without etcd: this node only) */
    px_mesh *m;              /* NULL before start and after the drain, as t and c */
    px_admin_server *admin;
    pxd_httpd *http;
    _Atomic int phase;       /* pxd_phase */
    int64_t started_ms;      /* CLOCK_REALTIME at start, ms */
    /* Log lines by level (the metrics' plexus_log_lines_total). */
    _Atomic uint64_t log_lines[PX_LOG_OFF + 1];
    /* Admin requests by outcome. */
    _Atomic uint64_t admin_ok, admin_err;
    /* t, c and m are taken out (set NULL) under parts_mtx by the drain
     * before it stops them: whoever uses them off the main thread (metrics,
     * admin requests) holds parts_mtx meanwhile and copes with NULL. */
    nng_mtx *parts_mtx;
    struct pxd_events *ev;   /* ops.c: what `plexctl watch` streams */
    nng_mtx *drain_mtx;      /* ops.c: one drain at a time */
    bool drained;
    /* main thread: the incarnation the roots were started as, and when a
     * failed restart of them may be tried again (builtins.c) */
    uint32_t roots_inc;
    int64_t roots_retry_ms;
} pxd_node;

/* True when the node is ready for work: running, and (clustered) joined
 * and not fenced. why (may be NULL) gets a short reason when not. */
bool pxd_ready(pxd_node *n, char *why, size_t whylen);

#endif
