/*
 * plexus/mesh.h — the mesh: what makes refs location-transparent across the
 * nodes of a cluster.
 *
 * px_mesh_start attaches to a node's system, transport and cluster and
 * installs the router core uses for every non-local ref. From then on:
 *  - px_send / px_ask / px_stop take any ref; a local one never touches the
 *    transport. Refs travel inside messages (embed plexus.ActorRef; see
 *    px_ref_to_pb / px_ref_from_pb) and work on any node.
 *  - px_watch of a remote ref gives exactly one Terminated: the actor's own
 *    reason, PX_TERM_NO_ACTOR if it did not exist, PX_TERM_NODE_DOWN when
 *    its node's lease expired or it left, PX_TERM_NODE_FENCED when its node
 *    came back as a new incarnation or this node fenced itself.
 *  - px_spawn_child with a placement (plexus/supervisor.h) starts the child
 *    on another node and supervises it from here: the child's node reports
 *    failures, the parent decides, the child's node applies the directive;
 *    when the child's node is lost the parent gets a PX_ENODEDOWN failure
 *    and a Restart places the child again (failover). A hosted child whose
 *    parent's node went down, fenced or (with placement.unreachable_ms) stayed
 *    unreachable for half the policy is stopped by its own node.
 *  - px_mesh_spawn starts an unsupervised actor on a node a placement picks.
 *  - Topics (plexus/topic.h) are cluster-wide: px_publish reaches the
 *    subscribers on every node, with one frame per node that has any;
 *    nodes tell each other which topics they have subscribers of, and a
 *    lost node's subscriptions go with it.
 * Placement considers this node and the members that are up, not fenced,
 * and have the behavior registered (nodes publish their behaviors, roles
 * and load in NodeInfo; load is refreshed every lease tick when it changed).
 *
 * Threads: the mesh runs an actor of its own ("plexus.mesh") that handles
 * what other nodes send; nothing here blocks a worker except px_mesh_spawn
 * (outside actors only).
 */
#ifndef PLEXUS_MESH_H
#define PLEXUS_MESH_H

#include <plexus/cluster.h>
#include <plexus/plexus.h>
#include <plexus/transport.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct px_mesh px_mesh;

typedef struct px_mesh_cfg {
    px_system *sys;          /* required */
    px_transport *transport; /* required (its router is wrapped) */
    px_cluster *cluster;     /* required (standalone clusters work: this node only) */
} px_mesh_cfg;

/* Starts the mesh. PX_EINVAL (missing part), PX_ENOMEM, or the spawn
 * error of its actor. Not from actor context. */
px_err px_mesh_start(const px_mesh_cfg *cfg, px_mesh **out);

/* Puts the transport's own router back and frees the mesh. Call before
 * px_cluster_stop and px_transport_stop. NULL-safe; not from actor context. */
void px_mesh_stop(px_mesh *m);

/* Starts `behavior` (start argument *arg, taken on success; mailbox NULL =
 * that node's default) as a top-level actor on the node `pl` picks, and
 * waits up to timeout_ms for that node's answer. *out gets its ref; why
 * (may be NULL) a human reason on error. PX_ENOENT (the behavior is known
 * on no eligible node, or not on the named one), PX_EINIT (its init failed
 * there), PX_EUNREACHABLE (no eligible node), PX_ETIMEDOUT, PX_ECONTEXT
 * (called from an actor), PX_EINVAL. */
px_err px_mesh_spawn(px_mesh *m, const px_placement *pl, const char *behavior, px_msg **arg,
                     const px_mailbox_opts *mailbox, uint32_t timeout_ms, px_ref *out,
                     char *why, size_t why_len);

/* The node a placement would pick now for `behavior` (name into node,
 * node_len). PX_EUNREACHABLE / PX_ENOENT as px_mesh_spawn. Any thread. */
px_err px_mesh_place(px_mesh *m, const px_placement *pl, const char *behavior, char *node,
                     size_t node_len);

typedef struct px_mesh_stats {
    uint64_t remote_watches;   /* watches of remote actors now open */
    uint64_t proxies;          /* children placed on other nodes, running */
    uint64_t hosted;           /* children here whose parents are elsewhere */
    uint64_t spawns_sent, spawns_served;
    uint64_t node_down_terminated; /* Terminated(node down / fenced) delivered */
    uint64_t lost_children;    /* proxies told their child's node was lost */
    uint64_t orphans_stopped;  /* hosted children stopped: their parent's node was lost */
    uint64_t bad_sys;          /* malformed system envelopes (counted, logged once) */
    uint64_t publications_sent;     /* frames: one per subscribing node per publish */
    uint64_t publications_received; /* from other nodes, fanned out here */
    uint64_t asks_failed;      /* asks to a lost or unreachable node ended early
                                  (px_system_fail_asks) */
} px_mesh_stats;

/* A snapshot of the counters into *out (NULL m or out: nothing). Any
 * thread. */
void px_mesh_stats_get(px_mesh *m, px_mesh_stats *out);

/* Refs inside protobuf messages: fill a plexus.ActorRef (from
 * plexus/plexus.pb-c.h, initialised by the caller, passed as
 * ProtobufCMessage; NULL is ignored) from r, and read one back (nil for
 * NULL). Pure functions: any thread, nothing allocated. */
void px_ref_to_pb(px_ref r, ProtobufCMessage *actor_ref);
px_ref px_ref_from_pb(const ProtobufCMessage *actor_ref);

#ifdef __cplusplus
}
#endif
#endif
