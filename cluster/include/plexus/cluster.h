/*
 * plexus/cluster.h — cluster membership through etcd: a node registers
 * itself under a lease, keeps the lease alive, watches every member, and
 * fences itself when it loses its own lease.
 *
 * Keyspace: /plexus/<cluster>/nodes/<node-id as 8 hex digits> → NodeInfo
 * (protobuf, proto/plexus.proto), attached to the node's lease (TTL ttl_s,
 * renewed every TTL/3). The view is a range read then a watch from the next
 * revision (plexus/etcd.h), so no change is missed.
 *
 * States of a member, each change recorded in the audit ring with its
 * cause and time and handed to the event callback and to subscribed
 * actors:
 *   JOINING      registered (its key exists); our link to it is not up yet
 *                (only with a transport attached)
 *   UP           registered, and (with a transport) our link to it is up
 *   UNREACHABLE  registered — its lease is alive — but our link to it
 *                failed or went silent: not gone, and not reachable
 *   LEFT         it left gracefully (said `leaving`, then revoked its lease)
 *   DOWN         its key vanished without a goodbye: the lease expired
 *   FENCED       (this node only) our own lease is lost or could not be
 *                renewed for a whole TTL: we stop acting as a member and
 *                register again under a new lease as a new incarnation
 * A member that is DOWN or LEFT and registers again is JOINING / UP again
 * (its incarnation says which life it is).
 *
 * With a transport attached (cfg.transport), links follow the view: a
 * member that registers becomes a peer (px_transport_peer_add, from the
 * address and key in its NodeInfo); one that is DOWN or LEFT stops being
 * one (px_transport_peer_remove). Static peers of the transport are the
 * fallback for nodes that are not in etcd.
 *
 * With a system attached (cfg.sys), fencing makes the node its next
 * incarnation (px_system_reincarnate): actors of the old one keep running
 * locally but nothing outside the node reaches them any more, and they are
 * told (a FENCED MemberEvent about this node) if they subscribed.
 *
 * Global names: /plexus/<cluster>/names/<name> → ActorRef, created only if
 * absent and attached to this node's lease, so a name vanishes with its
 * node; it is deleted when its actor stops. Every node watches the names
 * and answers px_whereis_global from that local copy.
 *
 * Self-fencing is decided locally and pessimistically: a node that has not
 * had a keepalive acknowledged for a whole TTL fences itself even if etcd
 * is merely unreachable, because it can no longer prove it holds the
 * lease. While etcd is unreachable the last view stays in force (no member
 * is marked down for lack of news) and etcd_down_since_ms says since when.
 *
 * Thread context: callbacks run on the etcd client's thread or an nng
 * timer thread, one at a time; they must not block or call
 * px_cluster_stop. Everything else is thread-safe.
 */
#ifndef PLEXUS_CLUSTER_H
#define PLEXUS_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <plexus/error.h>
#include <plexus/etcd.h>
#include <plexus/msg.h>
#include <plexus/transport.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The numbers are those of proto MemberState. */
typedef enum px_member_state {
    PX_MEMBER_UP = 1,
    PX_MEMBER_LEFT = 2,
    PX_MEMBER_DOWN = 3,
    PX_MEMBER_FENCED = 4,
    PX_MEMBER_JOINING = 5,
    PX_MEMBER_UNREACHABLE = 6,
} px_member_state;

/* "up", "left", "down", "fenced", "joining", "unreachable" (a static
 * string; "unknown" outside the enum). Thread-safe. */
const char *px_member_state_name(px_member_state s);

#define PX_MEMBER_NAME_MAX 64
#define PX_MEMBER_ADDR_MAX 128
#define PX_MEMBER_CAUSE_MAX 96

typedef struct px_member {
    char name[PX_MEMBER_NAME_MAX];
    uint32_t node_id;
    uint32_t node_inc;
    char address[PX_MEMBER_ADDR_MAX];
    uint8_t pk[32];
    px_member_state state;
    int64_t lease;
    int64_t since_ms; /* wall clock of the last state change */
} px_member;

/* One state change (the audit ring and the event callback). */
typedef struct px_member_event {
    px_member m;          /* the member after the change */
    px_member_state from; /* 0 for a member seen the first time */
    char cause[PX_MEMBER_CAUSE_MAX];
    int64_t at_ms;        /* wall clock */
    int64_t revision;     /* etcd revision that showed it (0: local) */
} px_member_event;

typedef void (*px_member_cb)(void *arg, const px_member_event *ev);

typedef struct px_cluster_cfg {
    const char *cluster;  /* key space name; default "default" */
    px_system *sys;       /* optional: subscriptions, global names, and a new
                             incarnation when fenced; borrowed, must outlive c */
    px_transport *transport; /* optional: links follow the view; borrowed,
                                stop c before it */
    const char *node;     /* this node's name; default the system's; required
                             without one */
    uint32_t node_inc;    /* its incarnation; default the system's */
    const char *address;  /* where its transport listens ("tcp://..."); default
                             the transport's */
    const uint8_t *pk;    /* its identity public key (32 bytes) or NULL; default
                             the transport's */
    const char *const *roles; /* NULL-terminated, or NULL */
    const char *admin_address; /* optional, published in NodeInfo: where plexctl
                                  reaches this node's admin channel (copied) */
    const char *http_address;  /* optional, published in NodeInfo: /metrics etc.
                                  (copied) */
    uint32_t ttl_s;       /* lease TTL; default 3, etcd's minimum is 2 */
    size_t audit_max;     /* state changes kept; default 256 */
    px_etcd_cfg etcd;     /* the etcd client's configuration */
    px_member_cb on_event;
    void *arg;
} px_cluster_cfg;

/* Defaults, and px_etcd_cfg_init for cfg->etcd. Thread-safe; cannot fail. */
void px_cluster_cfg_init(px_cluster_cfg *cfg);

typedef struct px_cluster px_cluster;

/* Opens the etcd client, registers this node and starts watching the
 * members; returns once registered (bounded by the etcd request timeout).
 * PX_EINVAL (no node name, TTL below 2, bad etcd config: err says which),
 * or the etcd error that prevented the first registration. *out NULL on
 * failure. */
px_err px_cluster_start(const px_cluster_cfg *cfg, px_cluster **out, char *err, size_t errlen);

/* Stops. leave = true: the graceful way — NodeInfo says `leaving`, then the
 * lease is revoked, so every member sees LEFT at once; false: just stop
 * renewing (others see DOWN after the TTL). Frees c. NULL-safe. Not from a
 * callback. */
void px_cluster_stop(px_cluster *c, bool leave);

/* Copies up to max members (every member seen, any state) into out; *n
 * gets the total. Thread-safe. */
void px_cluster_members(px_cluster *c, px_member *out, size_t max, size_t *n);

/* One member by name: PX_OK or PX_ENOENT. */
px_err px_cluster_member(px_cluster *c, const char *name, px_member *out);

/* The audit ring, oldest first: up to max entries into out; *n gets how
 * many were copied. Thread-safe. */
void px_cluster_audit(px_cluster *c, px_member_event *out, size_t max, size_t *n);

/* The fencing token: our lease id and the etcd revision of our current
 * registration. PX_EFENCED while fenced or re-registering (both set to 0).
 * Thread-safe. */
px_err px_cluster_token(px_cluster *c, int64_t *lease, int64_t *revision);

typedef struct px_cluster_health {
    bool registered;           /* holding a lease, not fenced */
    bool fenced;
    uint32_t node_inc;         /* our current incarnation */
    int64_t etcd_down_since_ms; /* wall clock of the first failure in a row; 0 = fine */
    uint64_t fences;           /* times this node fenced itself */
    uint64_t keepalives, keepalive_errors;
    bool holding;              /* no keepalive acknowledged for a TTL, yet not fenced:
                                  every other member is linked to us and cut off
                                  from etcd too (etcd is down for everyone we
                                  know), so the node serves on its last view */
} px_cluster_health;

/* A snapshot of this node's standing. Thread-safe; cannot fail. */
void px_cluster_health_get(px_cluster *c, px_cluster_health *out);

/* The counters of this node's etcd client (requests, errors, latency: see
 * px_etcd_stats) into *out; all zero for a standalone node. c and out must
 * not be NULL. Thread-safe; cannot fail. */
void px_cluster_etcd_stats(px_cluster *c, px_etcd_stats *out);

/* ---- actors and membership (cfg.sys required) ---- */

/* The local actor `who` receives every membership change from now on as a
 * protobuf message plexus.MemberEvent (proto/plexus.proto; sender nil),
 * starting with one event per member it does not know of yet (from =
 * UNSPECIFIED, cause "current state"). Ends when the actor stops, or with
 * px_cluster_unsubscribe. Subscribing twice is a no-op. Its mailbox should
 * not have policy Block (the event would wait on the etcd client's
 * thread). PX_EINVAL (no system, or not a live local actor), PX_ENOMEM.
 * Thread-safe, also from actor context. */
px_err px_cluster_subscribe(px_cluster *c, px_ref who);

/* PX_OK, or PX_ENOENT if it was not subscribed. Thread-safe. */
px_err px_cluster_unsubscribe(px_cluster *c, px_ref who);

/* ---- global names (cfg.sys required) ---- */

#define PX_GLOBAL_NAME_MAX 128

/* Registers `name` (1..127 bytes of [A-Za-z0-9._:-]) for the local actor
 * `ref` across the cluster: exactly one caller wins. PX_OK; or PX_EEXIST,
 * with the current owner in *owner (may be NULL) — also when the owner is
 * `ref` itself; PX_EFENCED while this node is fenced; PX_EINVAL (bad
 * name, not a live actor of this node's current incarnation); or the etcd
 * error. The name is tied to this node's lease and deleted when the actor
 * stops. Blocks for one etcd round trip (bounded by its request timeout):
 * not on the etcd client's thread. */
px_err px_register_global(px_cluster *c, const char *name, px_ref ref, px_ref *owner);

/* Deletes `name` if this node registered it. PX_OK, PX_ENOENT (not ours
 * or not registered), or the etcd error. Blocks like px_register_global. */
px_err px_unregister_global(px_cluster *c, const char *name);

/* The actor registered as `name`, from this node's watched copy of the
 * names (no etcd round trip): PX_OK or PX_ENOENT. A name registered
 * elsewhere shows here once the watch delivers it (usually within a
 * millisecond or two); px_register_global's own names show at once.
 * Thread-safe, any context. */
px_err px_whereis_global(px_cluster *c, const char *name, px_ref *out);

/* Calls fn once for each global name in this node's watched copy (in no
 * particular order), under the names lock: fn must not call back into the
 * cluster. PX_EINVAL for NULL arguments. Thread-safe, any context. */
px_err px_global_names(px_cluster *c, void (*fn)(void *arg, const char *name, px_ref ref),
                       void *arg);

#ifdef __cplusplus
}
#endif
#endif
