/*
 * plexus/supervisor.h — supervision: child specs, directives, strategies,
 * restart limits, backoff, circuit breakers, watches, children listing.
 *
 * Every actor supervises its children. When a child fails — its `receive`
 * or `init` returns an error, or it called px_fail — it is suspended (it
 * handles nothing more; its mailbox keeps filling) and its parent gets the
 * failure in its own context. The parent's decider (px_behavior.
 * on_child_failure; default: Restart) picks a directive:
 *  - Resume: the child goes on with its state; the failing message is
 *    dropped (and counted in px_system_stats.resumed).
 *  - Restart: the old instance's children stop, its `stop` runs, then a
 *    fresh instance runs `init` with the same start argument. The child's
 *    ref stays valid across the restart (same slot, same mailbox): messages
 *    sent to it while it restarts wait in its mailbox and the new instance
 *    receives them. px_child_info.instance counts the instances.
 *  - Stop: the child stops for good (its children first).
 *  - Escalate: the parent fails with the child's failure as cause, so the
 *    grandparent decides; the child stays suspended until then (a Restart or
 *    Stop of the parent takes it along; a Resume of the parent resumes it).
 * The node's root guardian (parent of px_system_spawn'ed actors) never
 * escalates: it logs CRIT with the whole cause chain and applies
 * px_config.root_policy (stop the top-level actor, the default, or restart it).
 *
 * The parent's strategy (px_behavior.strategy) says which children a
 * Restart or Stop applies to: the failed one (OneForOne), all (AllForOne),
 * or the failed one and every child started after it (RestForOne). Several
 * children are stopped one by one in reverse start order, then started one
 * by one in start order.
 *
 * Restart limits are per child: more than policy.max_restarts restarts
 * within policy.window_ms and the parent escalates instead (OTP semantics).
 * An optional exponential backoff delays each restart; an optional circuit
 * breaker keeps a child that failed breaker.failures times in a row
 * suspended ("open") for breaker.cooldown_ms, then restarts it once
 * ("half-open"): its first handled message closes the breaker, a failure
 * opens it again. Both run on timers; no worker ever sleeps.
 *
 * Restart types (px_child_spec.restart): permanent children are restarted
 * whenever they end (also when they stop themselves normally), transient
 * ones only after a failure, temporary ones never (Restart means Stop).
 * Children spawned with px_spawn are permanent, with default limits and
 * an id of "#<n>".
 *
 * Everything here is actor context (a px_ctx) unless noted.
 */
#ifndef PLEXUS_SUPERVISOR_H
#define PLEXUS_SUPERVISOR_H

#include <stddef.h>
#include <stdint.h>

#include <plexus/actor.h>
#include <plexus/error.h>
#include <plexus/msg.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum px_restart_type {
    PX_RESTART_PERMANENT = 0,
    PX_RESTART_TRANSIENT = 1,
    PX_RESTART_TEMPORARY = 2,
} px_restart_type;

/* Exponential backoff between restarts of one child: the n-th consecutive
 * restart waits min(max_ms, initial_ms * multiplier^(n-1)), then +/- up to
 * jitter (0..1) of that. initial_ms 0 = off (restart at once). */
typedef struct px_backoff {
    uint32_t initial_ms;
    uint32_t max_ms;
    double multiplier; /* >= 1 */
    double jitter;     /* 0..1 */
} px_backoff;

/* Circuit breaker: failures 0 = off. */
typedef struct px_breaker {
    uint32_t failures;    /* consecutive failures that open it */
    uint32_t cooldown_ms; /* open -> half-open after this */
} px_breaker;

typedef struct px_restart_policy {
    uint32_t max_restarts; /* within window_ms; default 3 */
    uint32_t window_ms;    /* default 5000 */
    px_backoff backoff;    /* default off */
    px_breaker breaker;    /* default off */
} px_restart_policy;

/* Fills the defaults: 3 restarts in 5000 ms, no backoff, no breaker. Any
 * thread; p NULL is ignored. */
void px_restart_policy_init(px_restart_policy *p);

/* --- where a child runs ------------------------------------------------
 *
 * A child spec may place the child on another node: by name, or by a
 * policy the cluster layer applies over the nodes that are up and have the
 * behavior registered (plexus/mesh.h). The parent then keeps a local
 * stand-in for it (a proxy): px_spawn_child returns the proxy's ref, which
 * stays valid across restarts and failovers and forwards what it receives
 * (sender and ask kept) to the child wherever it runs; messages sent while
 * the child is being (re)started wait in the proxy. Strategies, restart
 * limits, backoff, breakers and escalation treat it like any child: its
 * node reports each failure, the parent's decider runs here, the node
 * applies the directive. When the child's node is lost (its lease expired)
 * the parent gets a failure with code PX_ENODEDOWN; a Restart then starts
 * the child again on a node the placement picks, never on a down, fenced or
 * unreachable one (a PX_PLACE_NODE child can only come back on its node).
 * Without the cluster layer, a spec that asks for another node fails with
 * PX_EUNREACHABLE. */
typedef enum px_place_policy {
    PX_PLACE_HERE = 0,         /* this node (the default; no proxy) */
    PX_PLACE_NODE = 1,         /* the node named by placement.node */
    PX_PLACE_ROUND_ROBIN = 2,  /* the eligible nodes in turn */
    PX_PLACE_LEAST_LOADED = 3, /* fewest actors + queued messages, as nodes report them */
    PX_PLACE_ROLE = 4,         /* round-robin among eligible nodes with placement.role */
    PX_PLACE_FN = 5,           /* placement.fn picks among the eligible nodes */
} px_place_policy;

/* One eligible node, as a placement function sees it (borrowed). */
typedef struct px_place_cand {
    const char *node;
    const char *const *roles;
    size_t nroles;
    uint64_t actors;        /* as the node last reported */
    uint64_t mailbox_depth; /* queued messages, as the node last reported */
    int local;              /* 1 for this node */
} px_place_cand;

/* Returns the index of the chosen candidate, or -1 for none (the start
 * fails with PX_EUNREACHABLE). Called on a cluster or worker thread; must
 * not block. */
typedef int (*px_place_fn)(void *arg, const char *behavior, const px_place_cand *cands,
                           size_t n);

typedef struct px_placement {
    px_place_policy policy;
    const char *node;        /* PX_PLACE_NODE */
    const char *role;        /* PX_PLACE_ROLE */
    px_place_fn fn;          /* PX_PLACE_FN */
    void *fn_arg;
    int exclude_self;        /* policies: never this node */
    /* While the child's node is unreachable (registered, link down): 0 =
     * wait for it (the default), else treat the node as down after this
     * many ms. The child's node stops the child itself once the parent's
     * node has been unreachable for half of it, so a replacement never
     * overlaps the old instance; keep it at least twice the transport's
     * silence timeout. */
    uint32_t unreachable_ms;
    /* Optional: each instance started elsewhere registers under this global
     * name (plexus/cluster.h) on its node, so px_whereis_global follows the
     * child across failovers (the old name goes with the lost node's lease). */
    const char *global_name;
} px_placement;

/* What a parent needs to (re)start a child. Borrowed by px_spawn_child
 * (strings and options are copied). */
typedef struct px_child_spec {
    const char *id;                 /* unique among the parent's children; 1..63 chars */
    const char *behavior;           /* registered behavior name (px_behavior_register) */
    px_restart_type restart;        /* default permanent */
    const px_mailbox_opts *mailbox; /* NULL = the system default */
    const px_restart_policy *policy;/* NULL = px_restart_policy_init defaults */
    const px_placement *placement;  /* NULL = this node */
} px_child_spec;

/* Spawns a supervised child of the calling actor from `spec`. *arg (may be
 * NULL or point to NULL) is the start argument: kept by the runtime for the
 * child's life and handed (borrowed) to every instance's init; taken on
 * success. Use a protobuf message (px_msg_proto) for children that may be
 * placed on other nodes. Errors: PX_EEXIST (the parent already has a child
 * with this id — nothing is spawned), PX_ENOENT (unknown behavior; for a
 * child placed elsewhere: on no eligible node), PX_EINVAL (bad spec or
 * policy), PX_EINIT (init failed), PX_EUNREACHABLE (no node to place it
 * on), plus px_spawn's. A child placed on another node is started
 * asynchronously: its init runs there, and an init failure there reaches
 * the parent as a failure of the child (code PX_EINIT) after this returned
 * PX_OK. */
px_err px_spawn_child(px_ctx *ctx, const px_child_spec *spec, px_msg **arg, px_ref *out);

/* A child's supervision state. */
typedef enum px_child_state {
    PX_CHILD_RUNNING = 1,
    PX_CHILD_SUSPENDED = 2,  /* failed; waiting for a directive (or escalated) */
    PX_CHILD_RESTARTING = 3, /* being restarted, or waiting out its backoff */
    PX_CHILD_OPEN = 4,       /* circuit breaker open: suspended until the cool-down */
    PX_CHILD_STOPPING = 5,
} px_child_state;

typedef enum px_breaker_state {
    PX_BREAKER_OFF = 0,
    PX_BREAKER_CLOSED = 1,
    PX_BREAKER_OPEN = 2,
    PX_BREAKER_HALF_OPEN = 3,
} px_breaker_state;

/* One child as its parent sees it (a snapshot). */
typedef struct px_child_info {
    char id[64];
    px_ref ref;
    px_child_state state;
    px_restart_type restart;
    uint32_t instance;             /* 1 for the first instance, +1 per restart */
    uint32_t restarts;
    uint64_t failures;             /* total */
    uint32_t consecutive_failures; /* since the last success seen (reset by a quiet window) */
    int64_t last_failure_ms;       /* wall clock, 0 = never */
    char last_reason[128];
    int64_t started_ms;            /* wall clock when the current instance started */
    px_breaker_state breaker;
    char node[64];                 /* where the current instance runs ("" = not running) */
    px_ref remote;                 /* placed elsewhere: the instance there (nil while
                                      it is being started); else nil */
} px_child_info;

/* Lists the calling actor's children in start order: up to `cap` entries
 * into out (caller's array), *n = how many children there are (may exceed
 * cap). PX_EINVAL (NULL n, or NULL out with cap > 0), PX_ENOMEM. */
px_err px_children(px_ctx *ctx, px_child_info *out, size_t cap, size_t *n);

/* Looks up one child by id ("#<n>" for px_spawn'ed ones) into *out.
 * PX_ENOENT if there is none, PX_EINVAL for NULL arguments. */
px_err px_child(px_ctx *ctx, const char *id, px_child_info *out);

/* --- watches ---------------------------------------------------------- */

typedef enum px_term_reason {
    PX_TERM_NORMAL = 1,     /* stopped itself (px_stop_self) */
    PX_TERM_STOPPED = 2,    /* stopped by px_stop, its supervisor, or shutdown */
    PX_TERM_FAILURE = 3,    /* failed and its supervisor stopped it; code says why */
    PX_TERM_NO_ACTOR = 4,   /* there was no such actor when the watch was made */
    PX_TERM_NODE_DOWN = 5,  /* its node's lease expired (cluster) */
    PX_TERM_NODE_FENCED = 6,/* its node fenced itself (cluster) */
} px_term_reason;

/* Watches `ref`: exactly one message of kind PX_MSG_TERMINATED arrives when
 * it ends — also when it had already ended: with its own reason while its
 * node still holds its record (briefly, until the last in-flight call on
 * it returns), else PX_TERM_NO_ACTOR (never existed, or long gone). A
 * restart is not an end. Watching an already watched ref is a no-op.
 * PX_EINVAL for a nil ref or self, PX_EUNREACHABLE for a remote ref while
 * no cluster routes watches, PX_ENOMEM. A watch of an actor on another
 * node ends with that actor's own reason, or PX_TERM_NODE_DOWN when its
 * node's lease expires (or the node left), or PX_TERM_NODE_FENCED when its
 * node (or this one) fenced itself and came back as a new incarnation. */
px_err px_watch(px_ctx *ctx, px_ref ref);

/* Cancels a watch: no Terminated for it arrives after this returns.
 * PX_ENOENT if ref is not watched. */
px_err px_unwatch(px_ctx *ctx, px_ref ref);

/* Reads a PX_MSG_TERMINATED message: who ended, why, and (for
 * PX_TERM_FAILURE) the failure code — PX_OK in one narrow race: a watch that
 * reaches the actor while it is ending gets the reason but not the code.
 * m is borrowed; any out pointer may be NULL. Any thread. PX_ETYPE for
 * another kind (or m NULL). */
px_err px_msg_terminated(const px_msg *m, px_ref *who, px_term_reason *reason, px_err *code);

/* --- the tree ----------------------------------------------------------- */

typedef enum px_tree_format {
    PX_TREE_TEXT = 1, /* one line per actor, indented under its parent */
    PX_TREE_JSON = 2, /* {"node", "root", "children": [{"id", "behavior", "ref",
                         "state", "breaker", "instance", "restarts", "failures",
                         "consecutive_failures", "last_failure_ms", "started_ms",
                         "last_reason", "mailbox_depth", "processed", and for a
                         child placed on another node "node" and "remote" (its
                         instance there),
                         "children": [...]}]} */
} px_tree_format;

/* Renders this node's supervision tree (every actor under the root
 * guardian, with its supervisor's view of it: state, instance, counters)
 * into a new string *out (free() it). The actors take the snapshot in their
 * own turns, so each parent's children are consistent with each other.
 * Blocks up to timeout_ms: PX_ETIMEDOUT if some actor did not answer in
 * time (a long-running callback), PX_ECONTEXT from actor context,
 * PX_ECLOSED after shutdown. */
px_err px_tree_dump(px_system *sys, px_tree_format fmt, uint32_t timeout_ms, char **out);

/* Static names ("normal", "restart", ...; "unknown" for other values).
 * Any thread. */
const char *px_term_reason_name(px_term_reason r);
const char *px_directive_name(px_directive d);

#ifdef __cplusplus
}
#endif

#endif
