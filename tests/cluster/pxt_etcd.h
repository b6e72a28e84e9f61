/*
 * tests/cluster/pxt_etcd.h — a real etcd (Debian etcd-server) for tests:
 * started on two free loopback ports with a temporary data directory,
 * waited for until /health answers, and stopped by PID (SIGTERM, then
 * SIGKILL; always reaped, data directory and log removed). It can be killed,
 * paused and restarted on the same ports and data, which the membership
 * tests need. The child is registered with pxt_util's process registry, so
 * a failing test cannot leave it behind.
 *
 * Nothing here asserts: 0 or a negative errno, and the test decides.
 */
#ifndef PXT_ETCD_H
#define PXT_ETCD_H

#include <stdbool.h>

#include <plexus/log.h>

#include "pxt_util.h"

typedef struct pxt_etcd {
    pxt_proc proc;
    int port, peer_port;
    char dir[128];  /* data directory (mkdtemp) */
    char url[64];   /* "http://127.0.0.1:<port>" */
    char log[160];  /* etcd's stderr, appended across restarts */
    bool running;
    const char *extra[8]; /* extra etcd flags (NULL-terminated), e.g. TLS */
    const char *bin;      /* the etcd program (NULL: /usr/bin/etcd) */
    const char *scheme;   /* "http" (default) or "https" */
    bool keep_log;        /* pxt_etcd_stop leaves the log (as does PXT_KEEP set) */
} pxt_etcd;

/* Starts etcd and waits (up to 15 s) for it to answer /health. */
int pxt_etcd_start(pxt_etcd *e);
/* Starts it again on the same ports and data directory (after a kill or
 * stop), waiting for health. */
int pxt_etcd_restart(pxt_etcd *e);
/* SIGKILL and reap (data stays). */
void pxt_etcd_kill(pxt_etcd *e);
/* SIGSTOP / SIGCONT. */
int pxt_etcd_pause(pxt_etcd *e);
int pxt_etcd_resume(pxt_etcd *e);
/* Stops it (SIGTERM, 5 s, then SIGKILL), reaps it and removes the data
 * and, unless keep_log or PXT_KEEP is set, the log. */
void pxt_etcd_stop(pxt_etcd *e);
/* Waits up to timeout_ms for GET /health to say true. */
int pxt_etcd_wait_healthy(pxt_etcd *e, int timeout_ms);
/* One raw POST to path with a JSON body (for setting etcd up: auth, ...).
 * The response body (up to len-1 bytes) into out if non-NULL; returns the
 * HTTP status or -errno. */
int pxt_etcd_post(const char *url, const char *path, const char *json, char *out, size_t len);
/* The etcd client's log sink for tests (px_etcd_cfg.log): errors only,
 * everything with PXT_LOG set, to stderr. Any thread. */
void pxt_etcd_quiet_log(void *arg, px_log_level level, const char *node, const char *line);

#endif
