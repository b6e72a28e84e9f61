/*
 * load.h — load.client, plexusd's request/reply workload: the demo
 * client of docker-compose and the client of the fault suite.
 *
 * Start argument plexus.kv.LoadSpec (proto/kv.proto): it asks `target` —
 * a global name, looked up for every request so it follows failover, else
 * a local name — `rate` times a second with at most `in_flight`
 * unanswered, each with `timeout_ms`. kind "echo" sends plexus.kv.Ping and
 * expects the Pong with the same text; "kv" sends a Put (value of
 * payload_bytes) to one of 256 keys of its own, in turn, and expects the
 * Ack naming that key. Every request it sends ends in
 * exactly one count: ok (its own answer), wrong (another answer), failed
 * (an error notice: node lost or unreachable, mailbox full, no such
 * actor) or lost (its timeout: no answer and no error); requests it could
 * not send are refused. Asked plexus.kv.LoadStatsRequest it answers
 * plexus.kv.LoadStats; it logs the counts every report_ms and when it
 * stops, and the first failure of each streak.
 *
 *   plexctl ask load plexus.kv.LoadStatsRequest '{}' --json
 */
#ifndef PXD_LOAD_H
#define PXD_LOAD_H

#include <stdbool.h>

#include "daemon.h"

/* Registers load.client and the LoadSpec / LoadStatsRequest / LoadStats
 * types on sys, before it runs actors. Borrows sys (the behavior table is
 * static). PX_OK or, at the first failure, px_behavior_register's /
 * px_type_register's error (PX_EEXIST, e.g. a second call; PX_ENOMEM;
 * PX_EINVAL for a NULL sys). Thread-safe (the system's registries lock). */
px_err pxd_load_register(px_system *sys);

/* Lets load.client actors of n->sys look global names up in n->c (under
 * n->parts_mtx): bound = true once n->sys exists, false before n goes
 * away. Without it they find local names only. At most 8 nodes at once
 * (a ninth is not bound, silently: its clients find local names only).
 * Any thread; cannot fail. */
void pxd_load_bind(pxd_node *n, bool bound);

#endif
