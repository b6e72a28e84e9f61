/*
 * plexus/actor.h — behaviors, spawning, sending, asking, timers, names.
 *
 * An actor is a behavior (a table of callbacks) plus its state, a mailbox
 * and a ref. The runtime runs one actor on one worker at a time, so
 * callbacks never need locks for the actor's own state. A callback gets a
 * px_ctx, valid only during that callback ("actor context").
 *
 * Send ownership: a successful send takes the message and nulls the
 * caller's pointer (px_send(ctx, to, &m)); on error the caller still owns it.
 * A receive callback borrows the message it is given.
 *
 * Order: messages from one sender to one receiver arrive in send order.
 */
#ifndef PLEXUS_ACTOR_H
#define PLEXUS_ACTOR_H

#include <stdint.h>

#include <plexus/error.h>
#include <plexus/msg.h>
#include <plexus/system.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct px_ctx px_ctx;

/* Supervision directives (applied by the supervision layer). */
typedef enum px_directive {
    PX_DIRECTIVE_RESUME = 1,
    PX_DIRECTIVE_RESTART = 2,
    PX_DIRECTIVE_STOP = 3,
    PX_DIRECTIVE_ESCALATE = 4,
} px_directive;

/* Which children a Restart or Stop directive applies to (plexus/supervisor.h). */
typedef enum px_strategy {
    PX_ONE_FOR_ONE = 0,  /* the failed child only (default) */
    PX_ALL_FOR_ONE = 1,  /* every child */
    PX_REST_FOR_ONE = 2, /* the failed child and every child started after it */
} px_strategy;

/* The record of one failure, as a parent's decider sees it. Strings are
 * borrowed for the duration of the call. */
typedef struct px_failure {
    px_ref child;
    const char *child_id;      /* the child's id within its parent ("" if none) */
    px_err code;               /* PX_EFAIL, PX_EINIT, or the code the actor gave */
    const char *reason;        /* human text, never NULL */
    const char *origin_node;   /* node where the failure happened */
    int64_t time_ms;           /* wall clock, ms since the epoch */
    uint32_t count_in_window;  /* failures of this child in the current window */
    const struct px_failure *cause; /* for escalations: what the child escalated */
} px_failure;

/* A behavior: the callbacks of one kind of actor. The table is borrowed by
 * every actor spawned from it and must outlive them (static tables).
 * - init (optional): runs once before the actor receives anything, in the
 *   spawner's thread, with the start argument (borrowed, may be NULL). It
 *   may use every actor-context call (send, ask, spawn, timers). A
 *   non-PX_OK return fails the spawn: the spawner gets PX_EINIT and nothing
 *   is left behind (stop is not called). If init succeeded but shutdown
 *   overtakes the spawn, stop runs and the spawner gets PX_ECLOSED with its
 *   argument still its own.
 * - receive (required): one message, borrowed. Returning non-PX_OK (or
 *   having called px_fail) makes the actor fail: it is logged, counted,
 *   suspended, and its parent decides (plexus/supervisor.h).
 * - stop (optional): runs once per instance when it stops or is restarted,
 *   after its children have stopped. Free the state here.
 * - on_child_failure (optional): the supervision decider, run in this
 *   actor's context when a child fails; default Restart.
 * - strategy: which children a directive applies to; default OneForOne. */
struct px_behavior {
    const char *name;
    px_err (*init)(px_ctx *ctx, const px_msg *arg);
    px_err (*receive)(px_ctx *ctx, px_msg *msg);
    void (*stop)(px_ctx *ctx);
    px_directive (*on_child_failure)(px_ctx *ctx, const px_failure *f);
    px_strategy strategy;
};

/* Optional spawn settings; NULL means all defaults. */
typedef struct px_spawn_opts {
    const px_mailbox_opts *mailbox; /* NULL = the system's default mailbox */
    const char *name;               /* register under this local name, or NULL */
} px_spawn_opts;

/* --- actor context only ------------------------------------------------ */

px_ref px_self(const px_ctx *ctx);
px_ref px_parent(const px_ctx *ctx);
px_system *px_ctx_system(const px_ctx *ctx);
void *px_state(const px_ctx *ctx);
void px_set_state(px_ctx *ctx, void *state);

/* Spawns a child of the calling actor. arg (may be NULL; else *arg may be
 * NULL) is the start argument: Takes ownership of *arg on success and keeps
 * it for the actor's life (init borrows it). *out (may be NULL) gets the ref.
 * Errors: PX_EINVAL, PX_ELIMIT (max_actors or mailbox capacity), PX_EEXIST
 * (name taken), PX_EINIT (init failed), PX_ECLOSED (shutting down),
 * PX_ENOMEM. */
px_err px_spawn(px_ctx *ctx, const px_behavior *b, px_msg **arg,
                const px_spawn_opts *opts, px_ref *out);
/* Same, by registered behavior name: PX_ENOENT for an unknown name. */
px_err px_spawn_named(px_ctx *ctx, const char *behavior, px_msg **arg,
                      const px_spawn_opts *opts, px_ref *out);

/* Sends *msg to `to` with this actor as sender. Takes ownership on success
 * (also when it ends as a counted dead letter: the target is gone, PX_OK is
 * returned, as delivery is at-most-once) and nulls *msg. Errors leave the
 * caller owning it: PX_EFULL (bounded mailbox, policy Error or Block),
 * PX_EMSGSIZE (over max_msg_size), PX_EUNREACHABLE (remote node, no route),
 * PX_EFENCED (this actor is of an earlier incarnation of its node, which
 * other nodes take for dead: px_system_reincarnate), PX_EINVAL.
 * Messages from one actor to another arrive in send order. To a local actor
 * with an unbounded mailbox they are handed over in chains (at most 64, and
 * at the latest when this actor's turn ends), not one by one — so a few
 * messages to self are handled in a later turn, not inside this one. */
px_err px_send(px_ctx *ctx, px_ref to, px_msg **msg);

/* Replies to the sender of `request` (borrowed) with the request's
 * correlation id; the asker sees px_msg_is_reply. Ownership as px_send.
 * PX_EINVAL if request has no sender. */
px_err px_reply(px_ctx *ctx, const px_msg *request, px_msg **reply);

/* Asks without blocking: sends *msg with a fresh correlation id (*corr);
 * the reply later arrives as a message with px_msg_is_reply and that id, or,
 * after timeout_ms (1..86400000), a PX_MSG_ASK_TIMEOUT message with that id.
 * Exactly one of the two arrives — or, for a target on another node that
 * did not take the message (full bounded mailbox, unknown type), a
 * PX_MSG_UNDELIVERED notice with that id in their place. A reply after the
 * timeout is dropped and counted as a late reply. Ownership as px_send. */
px_err px_ask(px_ctx *ctx, px_ref to, px_msg **msg, uint32_t timeout_ms,
              uint64_t *corr);

/* Stops this actor after the current callback: children stop first, then
 * `stop` runs; what is left in the mailbox becomes dead letters. */
void px_stop_self(px_ctx *ctx);

/* Fails this actor with code and a printf-style reason (logged, counted,
 * reported to the parent's supervision). Takes effect when the callback
 * returns. */
void px_fail(px_ctx *ctx, px_err code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Delivers *msg to `to` after delay_ms (0..86400000), sender = this actor.
 * Takes ownership on success. *timer (may be NULL) gets an id for
 * px_timer_cancel. The timer dies with this actor. */
px_err px_send_after(px_ctx *ctx, uint32_t delay_ms, px_ref to, px_msg **msg,
                     uint64_t *timer);

/* Delivers a PX_MSG_TIMER message with `tag` to this actor every period_ms
 * (1..86400000) until cancelled or the actor stops. */
px_err px_timer_every(px_ctx *ctx, uint32_t period_ms, uint32_t tag,
                      uint64_t *timer);

/* --- thread-safe, from anywhere ---------------------------------------- */

/* Cancels a timer. PX_OK if it was pending (its message is freed), PX_ENOENT
 * if it already fired, was cancelled, or never existed. */
px_err px_timer_cancel(px_system *sys, uint64_t timer);

/* Spawns a top-level actor (a child of the root guardian). Not from actor
 * context for a child relationship (use px_spawn); allowed anywhere.
 * Ownership and errors as px_spawn. */
px_err px_system_spawn(px_system *sys, const px_behavior *b, px_msg **arg,
                       const px_spawn_opts *opts, px_ref *out);
px_err px_system_spawn_named(px_system *sys, const char *behavior, px_msg **arg,
                             const px_spawn_opts *opts, px_ref *out);

/* Sends from outside any actor (sender = nil). Ownership as px_send; also
 * PX_ECLOSED once shutdown has begun, and with policy Block this thread
 * waits up to the mailbox's block_timeout_ms (then PX_ETIMEDOUT). Sends
 * between actors go on during a draining shutdown; only outside intake
 * stops. */
px_err px_system_send(px_system *sys, px_ref to, px_msg **msg);

/* px_system_send after delay_ms. Ownership as px_send_after. */
px_err px_system_send_after(px_system *sys, uint32_t delay_ms, px_ref to,
                            px_msg **msg, uint64_t *timer);

/* Blocking ask: sends *msg and waits up to timeout_ms for the reply, which
 * the caller then owns (*reply). Not from actor context (PX_ECONTEXT: use
 * px_ask). PX_ETIMEDOUT when no reply came (a later one is counted late).
 * The ask is made by a short-lived internal actor, so it counts in the
 * actor stats and toward max_actors (PX_ELIMIT), and a full Block-policy
 * target fails at once with PX_EFULL as for any actor sender. A target on
 * another node that does not take the message ends the ask with the code of
 * its PX_MSG_UNDELIVERED notice (PX_EFULL, PX_ETIMEDOUT, PX_ETYPE...). */
px_err px_system_ask(px_system *sys, px_ref to, px_msg **msg,
                     uint32_t timeout_ms, px_msg **reply);

/* Asks the actor to stop (children first, then its `stop`); messages still
 * queued become dead letters. PX_OK if a stop was requested, PX_EDEAD if it
 * is not alive (also for the nil ref). */
px_err px_stop(px_system *sys, px_ref ref);

/* Node-local names. A name (1..127 bytes) maps to one live actor and dies
 * with it. PX_EEXIST if taken, PX_EDEAD if ref is not a live local actor,
 * PX_EINVAL for a bad name; an actor has at most one name (PX_EEXIST). */
px_err px_register(px_system *sys, const char *name, px_ref ref);
px_err px_unregister(px_system *sys, const char *name);
px_err px_whereis(px_system *sys, const char *name, px_ref *out);

/* 1 if ref names a live local actor right now (a snapshot). */
int px_is_alive(px_system *sys, px_ref ref);

#ifdef __cplusplus
}
#endif
#endif
