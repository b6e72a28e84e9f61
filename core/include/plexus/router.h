/*
 * plexus/router.h — how core hands a non-local send to the layers above.
 *
 * Core never includes transport or cluster headers. When a send targets a
 * ref whose node is not this node, core calls the installed router (a table
 * of function pointers the cluster layer installs at start-up). With none
 * installed, such sends fail with PX_EUNREACHABLE.
 *
 * A node's incarnation (px_ref.node_inc) names one life of it as the other
 * nodes know it. It changes when the process starts and, without a restart,
 * when the node rejoins the cluster after being fenced
 * (px_system_reincarnate): refs of an earlier incarnation of this process
 * stay local, but other nodes can no longer reach them, nor they other nodes.
 */
#ifndef PLEXUS_ROUTER_H
#define PLEXUS_ROUTER_H

#include <plexus/msg.h>
#include <plexus/system.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct px_router {
    /* Takes ownership of msg on PX_OK; on error the caller keeps it. Called
     * from any thread (often a worker): must not block. */
    px_err (*send)(void *arg, px_ref to, px_msg *msg);
    void *arg;
    /* Optional: a bounded mailbox's policy (DropNewest, DropOldest) dropped
     * a message that `sender`, an actor on another node, sent to the local
     * actor `to` (with correlation id corr): tell the sender. Any thread;
     * must not block or call back into core. */
    void (*dropped)(void *arg, px_ref to, px_ref sender, uint64_t corr);
    /* Optional, topics: this node got its first local subscriber of topic
     * (on = 1) or lost its last (on = 0). Calls never overlap and come in
     * the order the changes happened, from whichever thread made the change
     * or found it queued. Any thread; must not block or call back into core. */
    void (*topic_interest)(void *arg, const char *topic, int on);
    /* Optional, topics: px_publish hands every publication here too (msg
     * borrowed: copy what you need), before it is delivered locally; the
     * layer above sends it once to each node that has subscribers (and
     * there hands it to px_system_publish_local). Not called for
     * publications of actors of an earlier incarnation of this node (other
     * nodes take them for dead). Any thread; must not block or call back
     * into core. */
    void (*publish)(void *arg, const char *topic, const px_msg *msg);
} px_router;

/* Envelope flags as they travel between nodes (proto: EnvelopeFlag). */
enum {
    PX_WIRE_ASK = 1,   /* the sender asked: a px_reply goes back with corr */
    PX_WIRE_REPLY = 2, /* a reply to the target's ask with corr */
};

/* For a router's send: the wire flags of m (PX_WIRE_ASK / PX_WIRE_REPLY). */
unsigned px_msg_wire_flags(const px_msg *m);

/* For the layer that receives messages from other nodes: delivers *msg to
 * the local actor `to` as sent by `from` (a ref on another node) with
 * correlation id corr and wire flags. Never blocks: a full bounded mailbox
 * gives its policy's answer at once (PX_EFULL for Error and for Block).
 * Takes ownership of *msg (nulls it) on PX_OK and when the target is gone
 * or of an earlier incarnation of this node (then it is a counted dead
 * letter and the result is PX_EDEAD); on other errors the caller keeps it.
 * PX_EINVAL if `to` is not on this node. Any thread. */
px_err px_system_deliver_remote(px_system *sys, px_ref to, px_ref from, uint64_t corr,
                                 unsigned flags, px_msg **msg);

/* For the layer that receives messages from other nodes: the local actor
 * `sender` learns, as a PX_MSG_UNDELIVERED message, that its message to
 * `to` (correlation id corr) was not delivered, with `code`. If it was an
 * ask still waiting, the ask ends with this notice. PX_EDEAD if sender is
 * not a live local actor of the current incarnation (px_system_node_inc);
 * PX_ENOMEM. Any thread. */
px_err px_system_notify_undelivered(px_system *sys, px_ref sender, px_ref to, px_err code,
                                    uint64_t corr);

/* The mailbox options of the live local actor `to` of the current
 * incarnation (capacity 0 = unbounded). PX_EDEAD if there is none. Any
 * thread. */
px_err px_system_mailbox_opts(px_system *sys, px_ref to, px_mailbox_opts *out);

/* Records m as a dead letter for `to` (counted, passed to the dead-letter
 * hook) and frees it: for a router that finds `to` cannot exist any more
 * (e.g. an older incarnation of a peer node). Takes ownership. */
void px_system_dead_letter(px_system *sys, px_ref to, px_msg *m, px_err why);

/* The node's current incarnation: what refs of actors spawned from now on
 * carry, and what the transport advertises to other nodes. 0 for a NULL
 * sys. Thread-safe. */
uint32_t px_system_node_inc(const px_system *sys);

/* For the cluster layer, when this node was fenced (it lost its membership
 * lease) and rejoins: the node becomes its next incarnation (the current
 * one + 1, skipping 0), written to *new_inc (may be NULL), without a
 * restart. Actors alive from earlier incarnations keep their refs and keep
 * working with every actor of this process, but are dead to other nodes:
 * messages from other nodes to them are dead letters (PX_EDEAD from
 * px_system_deliver_remote) and their own sends to other nodes fail with
 * PX_EFENCED (counted as rejected). Actors spawned afterwards carry the new
 * incarnation; px_system_root keeps its ref from the first. Logs one INFO
 * line. PX_OK, or PX_EINVAL for a NULL sys. Thread-safe. */
px_err px_system_reincarnate(px_system *sys, uint32_t *new_inc);

/* For the layer that receives publications from other nodes: delivers
 * *msg to this node's subscribers of `topic` as px_publish does (sender
 * nil), but never to the router's publish hook, and not to actors of an
 * earlier incarnation of this node. Takes ownership of *msg and nulls it on
 * PX_OK (also with no subscriber: counted in publish_unrouted); on error
 * the caller keeps it: PX_EINVAL (bad topic or message), PX_EMSGSIZE,
 * PX_ENOMEM. Counted in px_system_stats.publish_received. Any thread. */
px_err px_system_publish_local(px_system *sys, const char *topic, px_msg **msg);

/* Calls fn(arg, topic) once for each topic that has at least one local
 * subscriber, as they were at one moment (for resyncing a peer; changes
 * after that moment come through topic_interest). fn borrows topic for the
 * call and runs without runtime locks held; it must not call back into the
 * topic functions. PX_EINVAL for a NULL sys or fn, PX_ENOMEM (then fn was
 * never called). Any thread. */
px_err px_system_topics(px_system *sys, void (*fn)(void *arg, const char *topic), void *arg);

/* Installs (or, with NULL, removes) the router. The table is copied. Not
 * concurrent with sends to remote refs: install before traffic starts. */
void px_system_set_router(px_system *sys, const px_router *r);

#ifdef __cplusplus
}
#endif
#endif
