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
    /* Set by the main thread before the other threads start, read-only
     * while they run (except cfg's reloadable keys, which SIGHUP rewrites
     * on the main thread); teardown clears sys once everything stopped. */
    pxd_config *cfg;
    px_system *sys;
    px_identity id;
    uint8_t cluster_key[PX_SECRET_BYTES];
    /* t, c, m: parts_mtx (see there) */
    px_transport *t;
    px_cluster *c;           /* membership (standalone without etcd: this node only) */
    px_mesh *m;              /* NULL before start and after the drain, as t and c */
    /* main thread: set at start, cleared by teardown once it stopped them */
    px_admin_server *admin;
    pxd_httpd *http;
    /* Atomics, any thread. phase is STARTING until the main thread sets
     * RUNNING; then only pxd_drain writes it (DRAINING, STOPPED), under
     * drain_mtx. */
    _Atomic int phase;       /* pxd_phase */
    int64_t started_ms;      /* CLOCK_REALTIME at start, ms (set before the threads) */
    /* Log lines by level (the metrics' plexus_log_lines_total). */
    _Atomic uint64_t log_lines[PX_LOG_OFF + 1];
    /* Admin requests by outcome. */
    _Atomic uint64_t admin_ok, admin_err;
    /* t, c and m are set by the main thread at start, and taken out (set
     * NULL) under parts_mtx by the drain (main thread or an admin
     * connection's) and by teardown before they are stopped: whoever uses
     * them off the main thread (metrics, readiness, admin requests,
     * load.client) holds parts_mtx meanwhile and copes with NULL. */
    nng_mtx *parts_mtx;
    /* ops.c: what `plexctl watch` streams. Set and freed by the main thread
     * (pxd_events_start / _stop); its ring has its own mutex. */
    struct pxd_events *ev;
    nng_mtx *drain_mtx;      /* ops.c: held for a whole drain: one drain at a time */
    /* main thread: the incarnation the roots were started as, and when a
     * failed restart of them may be tried again (builtins.c) */
    uint32_t roots_inc;
    int64_t roots_retry_ms;
} pxd_node;

/* True when the node is ready for work: running, and (clustered) joined
 * and not fenced. why (may be NULL) gets a short reason when not. Borrows
 * n (NULL: false, "no node"). Any thread (HTTP handlers, metrics, admin
 * requests); takes n->parts_mtx (when set) for the membership check, so
 * not with it held. */
bool pxd_ready(pxd_node *n, char *why, size_t whylen);

/* The phase's name: "starting", "running", "draining" or "stopped";
 * "unknown" for a value out of pxd_phase. A static string. Thread-safe. */
const char *pxd_phase_name(int phase);

#endif
