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
#include <plexus/supervisor.h>
#include <plexus/system.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- supervision across nodes (plexus/supervisor.h, "where a child runs") ----
 *
 * The parent's node keeps a proxy for a child placed elsewhere; the child's
 * node keeps a host actor as the child's local parent. Core tells the layer
 * above what the proxy needs done (px_router.proxy_op) and what happened to
 * the hosted child (px_router.host_event); that layer carries both between
 * the nodes and answers with px_system_proxy_event / px_system_host_apply. */

typedef enum px_remote_op {
    PX_REMOTE_START = 1,   /* proxy: start an instance (first spawn, a restart's
                              start, or a resume of a lost child); answer
                              STARTED or START_FAILED. host: restart's start */
    PX_REMOTE_RESUME = 2,  /* the parent resumed the suspended child */
    PX_REMOTE_RS_STOP = 3, /* stop the instance for a restart; answer RS_STOPPED */
    PX_REMOTE_STOP = 4,    /* stop it for good; no answer */
} px_remote_op;

/* A proxy, as proxy_op sees it (borrowed for the call). */
typedef struct px_proxy_info {
    px_ref proxy;                  /* the stand-in (this node) */
    px_ref parent;                 /* the supervising actor (this node) */
    const char *id;                /* the child's id in its parent */
    const char *behavior;
    const px_msg *arg;             /* start argument or NULL */
    px_mailbox_opts mailbox;
    px_restart_type restart;
    const px_placement *placement;
    px_ref remote, host;           /* the current instance and its host; nil if none */
    const char *node;              /* the node they are on ("" if none) */
    px_term_reason term;           /* STOP: the reason the proxy ended with */
    px_err code;                   /* STOP: its failure code */
} px_proxy_info;

typedef enum px_proxy_ev_kind {
    PX_PROXY_STARTED = 1,      /* remote, host, node: the instance runs */
    PX_PROXY_START_FAILED = 2, /* code, reason */
    PX_PROXY_RS_STOPPED = 3,   /* the instance stopped for the restart */
    PX_PROXY_FAILED = 4,       /* failure: chain as the child's node saw it
                                  (code PX_OK: a permanent child stopped itself) */
    PX_PROXY_ENDED = 5,        /* term, code: the instance ended by itself or by
                                  a px_stop there, not by this parent's directive */
    PX_PROXY_LOST = 6,         /* code, reason: its node is lost (down, fenced,
                                  unreachable past the policy) */
} px_proxy_ev_kind;

typedef struct px_proxy_event {
    px_proxy_ev_kind kind;
    px_ref remote, host;
    const char *node;
    px_err code;
    const char *reason;
    px_term_reason term;
    const px_failure *failure;
} px_proxy_event;

/* For the layer above: an event for the local proxy `proxy` (copied; the
 * proxy handles it in its own context). PX_EDEAD if there is no such proxy,
 * PX_EINVAL, PX_ENOMEM. Any thread; never blocks. */
px_err px_system_proxy_event(px_system *sys, px_ref proxy, const px_proxy_event *ev);

typedef enum px_host_ev_kind {
    PX_HOST_FAILED = 1,     /* failure (chain); the child is suspended */
    PX_HOST_RS_STOPPED = 2, /* stopped for a restart */
    PX_HOST_STARTED = 3,    /* restart's start done: code PX_OK, or init's failure */
    PX_HOST_ENDED = 4,      /* term, code: the child ended (the host ends too) */
} px_host_ev_kind;

typedef struct px_host_event {
    px_host_ev_kind kind;
    px_ref host, child;
    px_ref proxy, parent; /* on the parent's node, as given at spawn */
    px_err code;
    const char *reason;
    px_term_reason term;
    const px_failure *failure;
} px_host_event;

/* A child started here for a parent on another node. */
typedef struct px_hosted_spec {
    px_ref proxy, parent;           /* on the parent's node */
    const char *id;
    const char *behavior;
    const px_mailbox_opts *mailbox; /* NULL = the system default */
    px_restart_type restart;
} px_hosted_spec;

/* Starts a host actor (a top-level actor, behavior "plexus.host") and the
 * child under it; the child's init runs in the caller's thread (a worker:
 * call it from an actor). *arg as px_spawn (taken on success). *host,
 * *child get the refs. Errors as px_spawn_child (PX_ENOENT: unknown
 * behavior; PX_EINIT: init failed) with a human reason in why. */
px_err px_system_spawn_hosted(px_system *sys, const px_hosted_spec *spec, px_msg **arg,
                              px_ref *host, px_ref *child, char *why, size_t why_len);

/* Applies an operation the remote parent decided to the hosted child of
 * `host`: RESUME, RS_STOP, START (after RS_STOP), STOP (with term/code).
 * PX_EDEAD if the host is gone. Any thread; never blocks. */
px_err px_system_host_apply(px_system *sys, px_ref host, px_remote_op op, px_term_reason term,
                            px_err code);

/* ---- watches across nodes ---- */

/* For the layer above: delivers a Terminated(who, reason, code) to the
 * local actor `watcher` (of any incarnation of this process); it reaches
 * receive only if the watcher still watches `who`, once. PX_EDEAD if
 * there is no such actor. Any thread; never blocks. */
px_err px_system_deliver_terminated(px_system *sys, px_ref watcher, px_ref who,
                                    px_term_reason reason, px_err code);

/* For the layer above: `watcher`, on another node, starts (on = 1) or
 * stops watching the local actor `target`. PX_EDEAD if the target is not
 * alive (or of an earlier incarnation): nothing is sent, the caller
 * answers the watch (Terminated with PX_TERM_NO_ACTOR). Never calls the
 * router, so a transport's receive path may call it, which keeps a watch
 * ahead of the watcher's later messages to the target. Any thread; never
 * blocks. */
px_err px_system_watch_for(px_system *sys, px_ref target, px_ref watcher, int on);

typedef struct px_router {
    /* Takes ownership of msg on PX_OK; on error the caller keeps it. Called
     * from any thread (often a worker): must not block. Also carries, as
     * messages of kind PX_MSG_TERMINATED, the Terminated of local actors to
     * their watchers on other nodes. */
    px_err (*send)(void *arg, px_ref to, px_msg *msg);
    void *arg;
    /* Optional: a bounded mailbox's policy (DropNewest, DropOldest) dropped
     * a message that `sender`, an actor on another node, sent to the local
     * actor `to` (with correlation id corr): tell the sender. Any thread;
     * must not block or call back into core. */
    void (*dropped)(void *arg, px_ref to, px_ref sender, uint64_t corr);
    /* Optional, watches: local `watcher` starts (on = 1) or stops watching
     * `target` on another node. The layer above owes each started watch a
     * px_system_deliver_terminated (core keeps it to one). An error from a
     * start fails px_watch with it. Any thread; must not block. */
    px_err (*watch)(void *arg, px_ref watcher, px_ref target, int on);
    /* Optional: px_stop of an actor on another node. Must not block. */
    px_err (*stop)(void *arg, px_ref target);
    /* Optional, supervision across nodes: see above. Called in the proxy's
     * or parent's context (a worker); must not block. START may fail (for a
     * first spawn px_spawn_child returns the error). */
    px_err (*proxy_op)(void *arg, px_remote_op op, const px_proxy_info *info);
    /* Optional: an event of a hosted child, in the host's context. */
    void (*host_event)(void *arg, const px_host_event *ev);
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

/* 1 on a scheduler worker thread (actor context), else 0: for layers
 * whose calls block. */
int px_on_worker(void);

/* Copies the router installed now (zeroed if none; nothing for a NULL out)
 * into *out, so a layer can wrap it. Any thread. */
void px_system_get_router(px_system *sys, px_router *out);

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

/* For the layer that learns another node is lost: every ask of a local
 * actor still waiting on an actor of `node` (of any incarnation but
 * keep_inc; 0 keeps none) ends now with a PX_MSG_UNDELIVERED notice with
 * `code` (PX_ENODEDOWN, PX_EUNREACHABLE...) instead of at its timeout. A
 * reply that arrives later is a late reply. Returns how many asks it
 * ended; 0 for this node itself. Any thread. */
size_t px_system_fail_asks(px_system *sys, uint32_t node, uint32_t keep_inc, px_err code);

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
 * PX_EFENCED (counted as rejected). Their asks still waiting on other
 * nodes end at once with a PX_MSG_UNDELIVERED notice, PX_EFENCED (the
 * replies would be dead letters). Actors spawned afterwards carry the new
 * incarnation; px_system_root keeps its ref from the first. Logs one INFO
 * line (and one more when it ended asks). PX_OK, or PX_EINVAL for a NULL
 * sys. Thread-safe. */
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

/* ---- the idle hook: I/O polled by idle workers (a latency mode) ----
 *
 * A layer above may lend core's idle workers a poll function: a worker
 * with nothing to run spins (px_system_cfg.spin_us) before it parks, and
 * with a hook installed it calls the hook while it spins instead of only
 * looking at the run queues, so a message read by the hook is run by the
 * worker that read it with no thread woken on either side. The transport
 * installs one when px_transport_cfg.poll_rx is set.
 *
 * Events, on the worker's thread:
 *  PX_IDLE_BEGIN  the worker starts a spin;
 *  PX_IDLE_POLL   repeatedly while it spins (until work is visible or
 *                 the worker's spin has passed, and once more after that, so a
 *                 spinner preempted past its deadline still looks before
 *                 it parks): look for input, deliver it;
 *  PX_IDLE_FOUND  the spin ends because there is work to run;
 *  PX_IDLE_PARK   the spin ends without work: the worker parks next, so
 *                 whatever the hook polls must now wake someone by itself;
 *  PX_IDLE_TURN   after an actor's turn (only while a hook is installed):
 *                 a chance to poll when the workers are never idle.
 * BEGIN is always followed by exactly one FOUND or PARK. The hook must not
 * block; it may deliver messages (px_system_deliver_remote and the like),
 * which go to that worker's run queue. With spin_us 0 (or while a worker's
 * spin has shrunk to none: px_config.spin_us) only TURN happens.
 *
 * One hook at a time: PX_EEXIST while another is installed. Removing (fn
 * NULL) returns once no worker is inside a call of the hook (a spin in
 * progress ends within spin_us). PX_EINVAL for a NULL sys. Any thread but
 * a worker's. */
typedef enum px_idle_event {
    PX_IDLE_BEGIN = 0,
    PX_IDLE_POLL = 1,
    PX_IDLE_FOUND = 2,
    PX_IDLE_PARK = 3,
    PX_IDLE_TURN = 4,
} px_idle_event;
typedef void (*px_idle_fn)(void *arg, px_idle_event ev);
px_err px_system_set_idle_hook(px_system *sys, px_idle_fn fn, void *arg);

/* Installs (or, with NULL, removes) the router. The table is copied. Safe
 * while actors and other threads send to remote refs: a call that began
 * with the old table finishes with it, later ones use the new one, and
 * this returns only once no thread is inside a call of the old table — so
 * the layer that installed it may free what its arg points at. The wait
 * is for the calls already inside the old table only (new calls use the
 * new one), so it ends even under steady traffic. Calls are serialised.
 * Not from inside a router callback or an idle hook (it would wait for
 * itself); from actor context it holds that worker while it waits. */
void px_system_set_router(px_system *sys, const px_router *r);

#ifdef __cplusplus
}
#endif
#endif
