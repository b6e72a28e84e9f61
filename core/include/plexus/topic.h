/*
 * plexus/topic.h — topics: publish/subscribe between actors of a node.
 *
 * An actor subscribes to a topic by name; px_publish hands a message to
 * every subscriber of that topic on this node, through each subscriber's
 * mailbox with its normal policy, and to the installed router (router.h:
 * px_router.publish) so a layer above can carry it to subscribers on other
 * nodes. A topic is 1..PX_TOPIC_MAX bytes ending at its NUL; names are
 * compared byte for byte and have no hierarchy or wildcards.
 *
 * Subscriptions belong to the actor and die with it (when it stops or its
 * init fails). A supervised restart keeps them, as it keeps the actor's ref,
 * name and mailbox: publications that arrive while it restarts wait in its
 * mailbox, and a fresh instance that subscribes again in init finds itself
 * subscribed already.
 *
 * Delivery: at-most-once, like px_send. Each subscriber gets its own
 * px_msg: the published one itself when there is one subscriber; with
 * several, each a copy of the envelope, sharing one protobuf message or one
 * heap bytes buffer (refcounted, freed with the last copy; inline bytes are
 * copied). A subscriber reads a shared payload with px_msg_pb / px_msg_data
 * as usual, but px_msg_take_pb returns NULL on it. px_msg_sender is the
 * publishing actor, or nil when published from outside actors. A full
 * bounded mailbox of one subscriber answers with its own policy (dropped, or
 * refused and counted) and never fails the publication for the others.
 * Between one publishing actor and one subscriber, publications and
 * px_send messages arrive in the order they were made.
 */
#ifndef PLEXUS_TOPIC_H
#define PLEXUS_TOPIC_H

#include <plexus/actor.h>
#include <plexus/error.h>
#include <plexus/msg.h>
#include <plexus/system.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The longest topic name, in bytes (without the NUL). */
#define PX_TOPIC_MAX 127

/* Subscribes the calling actor to `topic` (borrowed; copied). Idempotent:
 * subscribing again to a topic it has is PX_OK and changes nothing.
 * Actor context only. PX_EINVAL (NULL, empty or longer than PX_TOPIC_MAX),
 * PX_ENOMEM. */
px_err px_subscribe(px_ctx *ctx, const char *topic);

/* Ends the calling actor's subscription to `topic`. Publications already
 * in its mailbox stay there. Actor context only. PX_ENOENT if it was not
 * subscribed, PX_EINVAL for a bad name. */
px_err px_unsubscribe(px_ctx *ctx, const char *topic);

/* Publishes *msg (bytes or protobuf) on `topic`: every subscriber on this
 * node gets it (see above), and the router's publish hook, if installed,
 * sees it for the subscribers on other nodes. Takes ownership of *msg and
 * nulls it on PX_OK — also when nobody subscribes (the message is freed
 * and counted in px_system_stats.publish_unrouted). A subscriber that
 * refuses it (full bounded mailbox, policy Error or Block: a publication
 * never waits) is counted in publish_refused, not reported here. Errors
 * leave the caller owning *msg: PX_EINVAL (bad topic, NULL or a message
 * that is not bytes or protobuf), PX_EMSGSIZE (over max_msg_size),
 * PX_ECLOSED (from outside actors once shutdown has begun), PX_ENOMEM.
 * Thread-safe: from any thread; from actor context the sender is that
 * actor. */
px_err px_publish(px_system *sys, const char *topic, px_msg **msg);

#ifdef __cplusplus
}
#endif
#endif
