/*
 * builtins.h — the behaviors every plexusd hosts, and the config's roots.
 *
 *  kv.shard   a key-value store: plexus.kv.Put -> Ack, Get -> Value,
 *             Del -> Ack (proto/kv.proto). Each reply names the node.
 *  echo       plexus.kv.Ping -> Pong {text, node, served}; a Ping whose
 *             text is "fail" makes it fail (PX_EFAIL), to exercise
 *             supervision and `plexctl watch --failures`.
 *  plexus.sup.one_for_one / .all_for_one / .rest_for_one
 *             generic supervisors: start argument plexus.admin.
 *             SupervisorSpec (proto/admin.proto); they spawn its children
 *             with its placement and restart limits. A child that fails
 *             is restarted (the strategy picks its siblings); past the
 *             limits the supervisor escalates.
 *  load.client a request/reply workload (load.h): start argument
 *             plexus.kv.LoadSpec; counts ok / failed / lost / wrong.
 *  ex.pool, ex.pipeline, ex.trio, ex.hier   the shipped examples
 *             (plexus/examples.h).
 *
 * Unknown messages are dropped, counted in pxd_builtin_stats.unknown and
 * logged once per behavior.
 */
#ifndef PXD_BUILTINS_H
#define PXD_BUILTINS_H

#include <stddef.h>

#include "daemon.h"

/* Registers the behaviors above and the protobuf types of kv.proto and
 * admin.proto's SupervisorSpec on sys. */
px_err pxd_builtins_register(px_system *sys);

/* Parses a placement in the config's syntax into *pl (node/role point
 * into s). PX_EINVAL on anything else. */
px_err pxd_placement_parse(const char *s, px_placement *pl);

/* Starts the config's roots (n->cfg->roots) in order: each a top-level
 * actor registered under its local name (and its global name when
 * clustered). A root that fails is tried again every 200 ms for 10 s (the
 * nodes its children are placed on may still be joining); then this stops
 * at it: PX_E* with "roots[i] (src): reason" in err. */
px_err pxd_roots_start(pxd_node *n, char *err, size_t errlen);

/* Called now and then from the main thread (plexusd's loop): when this node
 * was fenced and is a member again as a new incarnation, its roots are
 * actors of the old one, which the other nodes take for dead (their remote
 * children were stopped with it). So it stops them, waits (bounded) until
 * their names are free, and starts them again from the config as the new
 * incarnation; a failure is logged and tried again later. Does nothing
 * while the node is not running (starting, draining) or not a member. */
void pxd_roots_follow(pxd_node *n);

/* Messages the built-ins dropped as unknown. */
uint64_t pxd_builtins_unknown(void);

#endif
