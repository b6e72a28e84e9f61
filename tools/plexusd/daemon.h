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

/* The node's parts that start and stop while other threads run. */
typedef enum pxd_part { PXD_PART_T, PXD_PART_C, PXD_PART_M, PXD_NPARTS } pxd_part;

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
    /* t, c and m are published under parts_mtx by the main thread at start
     * (pxd_part_set), and taken out (set NULL) by the drain (main thread or
     * an admin connection's) and by teardown before they are stopped
     * (pxd_part_take). Whoever uses them off the main thread copes with
     * NULL and either holds parts_mtx for a quick read (metrics,
     * readiness, listings) or, across a call that may wait (a remote
     * spawn, an etcd round trip), holds the part itself (pxd_part_hold):
     * parts_mtx is then free for the others meanwhile. The main thread
     * uses them unheld while the phase is STARTING: a drain is refused
     * until the node runs (op_drain; SIGTERM is read only once it runs). */
    nng_mtx *parts_mtx;
    nng_cv *parts_cv;                /* a part's last holder released it */
    uint32_t part_holders[PXD_NPARTS]; /* parts_mtx */
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

/* A part (px_transport *, px_cluster * or px_mesh *, as `which` says) for
 * a call that may wait: NULL once the drain or teardown took it out (or
 * before start-up published it); otherwise the caller holds it until
 * pxd_part_rele, and it is not stopped meanwhile. Any thread; takes
 * parts_mtx briefly (not with it held). */
void *pxd_part_hold(pxd_node *n, pxd_part which);

/* Ends a hold: `part` is what pxd_part_hold returned (NULL: nothing to
 * end, so every hold may be paired with a rele unconditionally). */
void pxd_part_rele(pxd_node *n, pxd_part which, void *part);

/* Publishes a part that start-up made (main thread). */
void pxd_part_set(pxd_node *n, pxd_part which, void *part);

/* Takes a part out (NULL for everyone from now on) and returns it, for
 * the caller to stop, once no holder is left: it blocks, unbounded, for
 * the calls that hold it (a remote spawn's 5 s bound, an etcd request's
 * timeout), and a caller holding a part itself would wait forever. NULL
 * when it was not there. Any thread; the drain's bound keeps running
 * meanwhile. */
void *pxd_part_take(pxd_node *n, pxd_part which);

/* The phase's name: "starting", "running", "draining" or "stopped";
 * "unknown" for a value out of pxd_phase. A static string. Thread-safe. */
const char *pxd_phase_name(int phase);

#endif
