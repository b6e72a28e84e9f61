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
 * admin.proto's SupervisorSpec on sys. Borrows sys (the tables it
 * registers are static). Stops at the first error and returns it
 * (PX_EEXIST: a name is taken, e.g. a second call; PX_ENOMEM;
 * px_examples_register's PX_ELIMIT); what was registered before stays.
 * Thread-safe; not from actor context. */
px_err pxd_builtins_register(px_system *sys);

/* Replies to req (borrowed) with pb, a protobuf message malloc'd as
 * protobuf_c_message_free_unpacked frees it. Takes ownership of pb in all
 * cases: it is freed when the reply cannot be made (out of memory, a send
 * error: the asker times out) and when req was not an ask (no reply).
 * Always PX_OK, so a behavior's receive can return it. Actor context
 * only: from the receive that got req, with its ctx. */
px_err pxd_reply_pb(px_ctx *ctx, const px_msg *req, ProtobufCMessage *pb);

/* Parses a placement in the config's syntax into *pl (node/role point
 * into s). PX_EINVAL on anything else. */
px_err pxd_placement_parse(const char *s, px_placement *pl);

/* Starts the config's roots (n->cfg->roots) in order: each a top-level
 * actor registered under its local name (and its global name when
 * clustered). A root that fails is tried again every 200 ms for 10 s (the
 * nodes its children are placed on may still be joining); then this stops
 * at it: PX_E* with "roots[i] (src): reason" in err, the roots before it
 * left running. PX_EINVAL (e.g. a bad start argument or supervisor) is
 * not tried again. Borrows n. Blocks (it sleeps between tries, up to 10 s
 * per root, and waits on etcd): plexusd calls it on the main thread; not
 * from actor context. */
px_err pxd_roots_start(pxd_node *n, char *err, size_t errlen);

/* Called now and then from the main thread (plexusd's loop): when this node
 * was fenced and is a member again as a new incarnation, its roots are
 * actors of the old one, which the other nodes take for dead (their remote
 * children were stopped with it). So it stops them, waits (bounded) until
 * their names are free, and starts them again from the config as the new
 * incarnation; a failure is logged and tried again later. Does nothing
 * while the node is not running (starting, draining) or not a member. */
void pxd_roots_follow(pxd_node *n);

/* Messages the built-ins (kv.shard, echo) dropped as unknown, in this
 * process: one counter shared by every system. Thread-safe. */
uint64_t pxd_builtins_unknown(void);

#endif
