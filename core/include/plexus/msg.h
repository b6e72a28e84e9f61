/*
 * plexus/msg.h — messages and actor references.
 *
 * A message is a protobuf-c message or raw bytes (with a user tag), plus an
 * envelope: sender, correlation id, flags. Locally a message moves by
 * pointer: px_send takes it and nulls the caller's pointer; nothing is copied
 * or packed until it leaves the node.
 *
 * Ownership phrases used below: "Takes ownership" (the callee frees it),
 * "Borrows" (valid for the call only), "Caller owns result".
 * All functions here are thread-safe unless stated otherwise.
 */
#ifndef PLEXUS_MSG_H
#define PLEXUS_MSG_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include <plexus/error.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A reference to an actor: a small value, copied freely. `node` and
 * `node_inc` name the node and its incarnation — which changes at process
 * start and when the node rejoins the cluster after being fenced
 * (plexus/router.h); an actor's ref keeps the incarnation it was spawned
 * in. `id` and `inc` name the actor slot and the actor's incarnation in it.
 * A ref to a stopped actor, or to an older incarnation of a reused slot,
 * never reaches a newer actor: sends to it become counted dead letters. The
 * all-zero ref is "nobody" (px_ref_is_nil). */
typedef struct px_ref {
    uint32_t node;
    uint32_t node_inc;
    uint32_t id;
    uint32_t inc;
} px_ref;

#define PX_REF_NIL ((px_ref){0, 0, 0, 0})

static inline int px_ref_is_nil(px_ref r) { return r.id == 0; }
static inline int px_ref_eq(px_ref a, px_ref b) {
    return a.node == b.node && a.node_inc == b.node_inc && a.id == b.id &&
           a.inc == b.inc;
}

/* Formats a ref as "<node>.<node_inc>/<id>.<inc>" into buf — node as 8
 * hex digits, node_inc in hex, id and inc in decimal — and returns buf.
 * 48 bytes always suffice. */
char *px_ref_format(px_ref r, char *buf, size_t len);

typedef struct px_msg px_msg;

/* What a message carries. System kinds are produced by the runtime. */
typedef enum px_msg_kind {
    PX_MSG_BYTES = 1,       /* raw bytes with a user tag */
    PX_MSG_PROTO = 2,       /* a protobuf-c message */
    PX_MSG_ASK_TIMEOUT = 3, /* an ask from this actor timed out (px_msg_corr) */
    PX_MSG_TIMER = 4,       /* a periodic timer tick (px_msg_tag = timer tag) */
    PX_MSG_TERMINATED = 5,  /* a watched actor ended (px_msg_terminated) */
    PX_MSG_UNDELIVERED = 6, /* a message this actor sent to another node was
                               not delivered there (px_msg_undelivered) */
} px_msg_kind;

/* Frees a protobuf message handed to px_msg_proto. */
typedef void (*px_proto_free_fn)(ProtobufCMessage *pb);

/* px_msg_bytes allocates a bytes message holding a copy of data[0..len)
 * with user tag `tag`. Small payloads (<= PX_MSG_INLINE) live inside the
 * message; larger ones in one extra allocation. Caller owns result.
 * PX_EINVAL if out is NULL or data is NULL with len > 0; PX_ENOMEM. */
#define PX_MSG_INLINE 16
px_err px_msg_bytes(px_msg **out, uint32_t tag, const void *data, size_t len);

/* The same without the copy, for large payloads: takes ownership of data
 * (from malloc; the message frees it) on success only. PX_EINVAL if data is
 * NULL or len is at most PX_MSG_INLINE; PX_ENOMEM. */
px_err px_msg_bytes_take(px_msg **out, uint32_t tag, void *data, size_t len);

/* px_msg_proto wraps a protobuf-c message. Takes ownership of pb on success
 * (not on error): it is released with free_fn, or, if free_fn is NULL, with
 * protobuf_c_message_free_unpacked(pb, NULL) — so by default pb and
 * everything it points to must come from malloc (as __unpack makes them).
 * Caller owns result. PX_EINVAL if pb or out is NULL; PX_ENOMEM. */
px_err px_msg_proto(px_msg **out, ProtobufCMessage *pb, px_proto_free_fn free_fn);

/* px_msg_free frees a message and what it owns. NULL-safe, cannot fail. */
void px_msg_free(px_msg *m);

/* Accessors. Borrow m; returned pointers live as long as m. */
px_msg_kind px_msg_kind_of(const px_msg *m);
uint32_t px_msg_tag(const px_msg *m);
const void *px_msg_data(const px_msg *m, size_t *len);     /* bytes payload */
const ProtobufCMessage *px_msg_pb(const px_msg *m);        /* proto payload or NULL */
px_ref px_msg_sender(const px_msg *m);                     /* nil if sent from outside actors */
uint64_t px_msg_corr(const px_msg *m);                     /* ask correlation id, 0 if none */
int px_msg_is_reply(const px_msg *m);                      /* a reply to this actor's ask */

/* Reads a PX_MSG_UNDELIVERED message: the actor the message was for (also
 * px_msg_sender) and why it was not delivered — PX_EFULL (a bounded mailbox
 * with policy Error refused it, or DropNewest / DropOldest dropped it),
 * PX_ETIMEDOUT (policy Block: the mailbox stayed full for its
 * block_timeout_ms), PX_ETYPE (that node does not know the type), ...
 * px_msg_corr is the message's correlation id: for an ask, this notice
 * takes the place of the reply (and of the ask timeout). Any out pointer may
 * be NULL. PX_ETYPE for another kind. */
px_err px_msg_undelivered(const px_msg *m, px_ref *to, px_err *code);

/* px_msg_is returns 1 if m is a protobuf message of type desc. */
int px_msg_is(const px_msg *m, const ProtobufCMessageDescriptor *desc);

/* px_msg_take_pb detaches the protobuf message from m (m keeps an empty
 * payload): Caller owns result and frees it as px_msg_proto's free_fn would.
 * NULL if m is not a proto message, or if its payload is shared with other
 * messages (a publication delivered to several subscribers, plexus/topic.h:
 * px_msg_pb still reads it). Actor context: only on a message the caller
 * owns or is receiving. */
ProtobufCMessage *px_msg_take_pb(px_msg *m);

/* Convenience for the common small case: an 8-byte little-endian integer
 * payload under `tag`, and its reader (0 if the payload is shorter). */
px_err px_msg_u64(px_msg **out, uint32_t tag, uint64_t v);
uint64_t px_msg_get_u64(const px_msg *m);

#ifdef __cplusplus
}
#endif
#endif
