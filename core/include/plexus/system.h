/*
 * plexus/system.h — the actor system: config, lifecycle, registries, stats.
 *
 * A px_system owns the scheduler (worker threads), the root guardian, the
 * actor table, the local name table, the behavior and type registries and
 * the timers. It is built from a validated px_config: an invalid value is
 * refused with PX_EINVAL and a sentence saying which value and why — never
 * clamped.
 *
 * Lifecycle: px_system_alloc (starts workers) -> px_system_shutdown (waits:
 * stop intake, drain or reject, stop actors children-first, join workers)
 * -> px_system_free. Functions are thread-safe unless stated otherwise.
 */
#ifndef PLEXUS_SYSTEM_H
#define PLEXUS_SYSTEM_H

#include <stddef.h>
#include <stdint.h>

#include <plexus/error.h>
#include <plexus/log.h>
#include <plexus/msg.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct px_system px_system;
typedef struct px_behavior px_behavior;

/* What a full bounded mailbox does with one more message. */
typedef enum px_overflow {
    PX_OVERFLOW_BLOCK = 1,       /* sender waits up to block_timeout_ms, then
                                    PX_ETIMEDOUT; from actor context (a worker
                                    never blocks) it fails at once: PX_EFULL */
    PX_OVERFLOW_DROP_NEWEST = 2, /* the new message is dropped and counted;
                                    the send returns PX_OK and takes it */
    PX_OVERFLOW_DROP_OLDEST = 3, /* the oldest queued message is dropped and
                                    counted; the new one is queued */
    PX_OVERFLOW_ERROR = 4,       /* the send returns PX_EFULL; caller keeps msg */
} px_overflow;

/* Mailbox options. capacity 0 = unbounded (lock-free MPSC queue); otherwise
 * a bounded ring of `capacity` messages with the overflow policy. */
typedef struct px_mailbox_opts {
    uint32_t capacity;
    px_overflow overflow;
    uint32_t block_timeout_ms;
} px_mailbox_opts;

/* What shutdown does with messages still queued. */
typedef enum px_shutdown_mode {
    PX_SHUTDOWN_DRAIN = 1,  /* let actors process what is queued (bounded by
                               shutdown_timeout_ms), then stop them */
    PX_SHUTDOWN_REJECT = 2, /* stop at once; queued messages become dead letters */
} px_shutdown_mode;

/* What the root guardian does with a top-level actor that failed (it never
 * escalates; it logs the failure as CRIT with its cause chain first). */
typedef enum px_root_policy {
    PX_ROOT_STOP = 1,    /* stop it (reason PX_TERM_FAILURE) */
    PX_ROOT_RESTART = 2, /* restart it in place, within its restart limits */
} px_root_policy;

typedef struct px_config {
    const char *node_name;         /* 1..63 chars of [A-Za-z0-9._-]; default "local" */
    uint32_t workers;              /* 0 = online CPUs; else 1..256 */
    uint32_t batch;                /* messages per actor turn, 1..65536; default 64 */
    uint32_t spin_us;              /* idle spin before a worker parks, 0..10000; default 50.
                                    * Without spin_max_us it is the ceiling: a worker
                                    * whose parks outlast spin_us halves its spin, down
                                    * to none (such spins catch nothing and take the
                                    * CPU), and one woken within spin_us of parking
                                    * doubles it back (from 1 us) */
    uint32_t spin_max_us;          /* adaptive spin's ceiling, 0 or spin_us..10000; default 0
                                    * (see spin_us); = spin_us: a fixed spin. A worker woken within
                                    * spin_max_us of parking doubles its spin (a longer
                                    * one would have caught that work) up to this; one
                                    * that slept longer halves it back toward spin_us
                                    * (the halt-polling rule of KVM's idle vCPUs). */
    px_mailbox_opts mailbox;       /* default mailbox; default unbounded */
    uint32_t max_actors;           /* live actors, 16..2^28; default 2^24 */
    uint32_t max_mailbox_capacity; /* largest bounded capacity, 1..2^30; default 2^20 */
    size_t max_msg_size;           /* largest bytes payload, 1..2^31; default 16 MiB */
    px_shutdown_mode shutdown_mode;   /* default PX_SHUTDOWN_DRAIN */
    uint32_t shutdown_timeout_ms;     /* drain bound, 0..3600000; default 5000 */
    px_root_policy root_policy;    /* a failed top-level actor: default PX_ROOT_STOP */
    px_log_level log_level;        /* default PX_LOG_INFO */
    px_log_sink log_sink;          /* default px_log_stderr */
    void *log_arg;
} px_config;

/* Fills cfg with the defaults above. */
void px_config_init(px_config *cfg);

/* Checks every value of cfg. PX_OK, or PX_EINVAL with a sentence naming the
 * field, its value and the allowed range written to why (if non-NULL). */
px_err px_config_check(const px_config *cfg, char *why, size_t why_len);

/* Creates and starts a system. cfg is borrowed (strings are copied); NULL
 * means defaults. On error *out stays NULL, the reason is logged once to
 * cfg's sink, and nothing needs freeing. PX_EINVAL (bad config), PX_ENOMEM,
 * PX_ESYS (threads). Not from actor context. */
px_err px_system_alloc(px_system **out, const px_config *cfg);

/* Graceful shutdown: stops intake from outside actors (sends return
 * PX_ECLOSED), cancels timers, drains (or rejects) per cfg, stops every actor
 * children-first (their `stop` callbacks run), joins the workers. Idempotent.
 * Returns PX_ETIMEDOUT if draining hit shutdown_timeout_ms (the rest became
 * dead letters), else PX_OK. Not from actor context (PX_ECONTEXT). */
px_err px_system_shutdown(px_system *sys);

/* Shuts down if needed, then frees everything. NULL-safe. Not from actor
 * context. */
void px_system_free(px_system *sys);

/* The node's name, and the ref of its root guardian (whose node is the
 * node's numeric id as used in refs). The root's node_inc is the
 * incarnation the system started as, also after px_system_reincarnate: the
 * current one is px_system_node_inc (plexus/router.h). */
const char *px_system_node_name(const px_system *sys);
px_ref px_system_root(const px_system *sys);
/* The node id that refs carry for a node named `name` (FNV-1a, 32 bits). */
uint32_t px_node_id(const char *name);

/* Registers a behavior table by its name so it can be spawned by name
 * (also on this node's behalf by remote nodes, later). Borrows b: the table
 * and its name must outlive the system. PX_EEXIST for a taken name,
 * PX_EINVAL if b, its name or its receive is NULL. */
px_err px_behavior_register(px_system *sys, const px_behavior *b);
const px_behavior *px_behavior_lookup(px_system *sys, const char *name);
/* Calls fn with the name of every registered behavior (under the registry
 * lock: fn must not register). PX_EINVAL for NULL arguments. Thread-safe. */
px_err px_behaviors(px_system *sys, void (*fn)(void *arg, const char *name), void *arg);

/* Registers a protobuf message type under its full name
 * ("plexus.test.Ping"), for unpacking messages that arrive from other nodes.
 * Borrows desc (generated descriptors are static). Registering the same
 * descriptor twice is PX_OK; another descriptor under a taken name is
 * PX_EEXIST. */
px_err px_type_register(px_system *sys, const ProtobufCMessageDescriptor *desc);
const ProtobufCMessageDescriptor *px_type_lookup(px_system *sys, const char *full_name);

/* System-wide totals. Counters are monotonic except live_actors. */
typedef struct px_system_stats {
    uint64_t spawned;
    uint64_t stopped;
    uint64_t live_actors;
    uint64_t messages;      /* delivered to a receive callback */
    uint64_t dead_letters;  /* sent to a dead/unknown actor, or discarded at stop */
    uint64_t dropped;       /* dropped by a bounded mailbox policy */
    uint64_t late_replies;  /* replies that arrived after their ask timed out */
    uint64_t ask_timeouts;
    uint64_t failures;      /* actors that failed (init, receive, px_fail) */
    uint64_t rejected;      /* sends refused (limits, closed, full) */
    uint64_t restarts;      /* actor instances restarted by supervisors */
    uint64_t resumed;       /* failures answered with Resume (failing message dropped) */
    uint64_t escalations;   /* failures passed up to a grandparent */
    /* Topics (plexus/topic.h). */
    uint64_t published;          /* px_publish calls that took their message */
    uint64_t publish_received;   /* publications from other nodes
                                    (px_system_publish_local) */
    uint64_t publish_deliveries; /* messages handed to local subscribers'
                                    mailboxes (a policy may still drop them,
                                    counted in dropped; one for a subscriber
                                    ending at that moment is a dead letter) */
    uint64_t publish_unrouted;   /* publications that reached no subscriber:
                                    none on this node and, for px_publish, no
                                    router publish hook to hand it to */
    uint64_t publish_refused;    /* deliveries a subscriber's full bounded
                                    mailbox refused (policy Error or Block);
                                    also counted in rejected */
} px_system_stats;

px_err px_system_stats_get(px_system *sys, px_system_stats *out);

/* Per-actor figures, in messages. depth is exact. hwm (high-water mark) is
 * exact for bounded mailboxes; for unbounded ones it is sampled when the
 * actor starts a turn and when stats are read, so with batch > 1 it can
 * under-report a peak reached during a turn. */
typedef struct px_actor_stats {
    uint64_t processed;
    uint64_t depth;
    uint64_t hwm;
    uint64_t dropped;
    uint32_t capacity; /* 0 = unbounded */
} px_actor_stats;

/* PX_EDEAD if ref is not a live local actor. */
px_err px_actor_stats_get(px_system *sys, px_ref ref, px_actor_stats *out);

/* Calls fn once for each live local actor (the root guardian excepted)
 * with its ref, its behavior's name, its local name (NULL if it has none)
 * and its stats as px_actor_stats_get reads them; the strings and stats
 * are borrowed for the call. A walk, not a snapshot: an actor spawned or
 * stopped meanwhile may or may not be reported, none twice. fn runs with
 * no runtime lock held (it may call into plexus, but every call adds to
 * the walk's time). PX_EINVAL for a NULL sys or fn. Thread-safe, also
 * from actor context; O(actor ids ever used). */
px_err px_system_actors(px_system *sys,
                        void (*fn)(void *arg, px_ref ref, const char *behavior, const char *name,
                                   const px_actor_stats *st),
                        void *arg);

/* A hook called once per dead letter (not for late replies, which are
 * counted apart), from the thread where it happened,
 * with the intended target and the message (borrowed: freed after the hook
 * returns). It must not block or call back into plexus. NULL removes it. */
typedef void (*px_dead_letter_fn)(void *arg, px_ref target, const px_msg *m,
                                  px_err why);
void px_system_on_dead_letter(px_system *sys, px_dead_letter_fn fn, void *arg);

/* A hook called once per actor failure that goes to its supervisor (a
 * receive or a restarted instance's init that failed, px_fail, an
 * escalation, a child placed elsewhere that could not start), on the
 * failing actor's thread, before the supervisor decides: who failed, its
 * behavior's name, the code and the reason (borrowed for the call). It
 * must not block or call back into plexus. NULL removes it. Thread-safe. */
typedef void (*px_failure_fn)(void *arg, px_ref who, const char *behavior, px_err code,
                              const char *reason);
void px_system_on_failure(px_system *sys, px_failure_fn fn, void *arg);

/* Logs through the system's sink if level passes its threshold.
 * Thread-safe. */
void px_log(px_system *sys, px_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int px_log_enabled(const px_system *sys, px_log_level level);

/* Changes the system's log threshold (what px_config.log_level set) while
 * it runs, e.g. on a config reload. PX_EINVAL for a level outside
 * px_log_level. Thread-safe. */
px_err px_system_set_log_level(px_system *sys, px_log_level level);

#ifdef __cplusplus
}
#endif
#endif
