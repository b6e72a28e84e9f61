/*
 * msg_int.h — the message struct, shared by the mailbox, the scheduler and
 * the actor code. A message is one 64-byte block: a queue link, the envelope
 * (kind, flags, tag, sender, correlation id) and the payload (inline bytes,
 * a heap buffer, or a protobuf-c message pointer).
 *
 * A message has one owner and no refcount. A payload that several messages
 * carry at once (a publication to several subscribers, topic.c) is held by
 * a pxi_share instead: the protobuf message or heap buffer and a refcount,
 * one reference per message, released with the last.
 */
#ifndef PX_MSG_INT_H
#define PX_MSG_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <plexus/msg.h>

/* An intrusive MPSC queue link. First member of px_msg. */
typedef struct pxi_node {
    _Atomic(struct pxi_node *) next;
} pxi_node;

/* Internal kinds, after the public px_msg_kind values. */
enum {
    PXI_MSG_SYS = 16, /* runtime signal; `sysop` says which */
};

/* System operations (kind PXI_MSG_SYS). */
enum {
    PXI_SYS_STOP = 1,       /* stop this actor */
    PXI_SYS_CHILD_TERM = 2, /* a child finished stopping; corr = child pointer */
    /* supervision (sup.c); tag/corr as noted */
    PXI_SYS_FAILURE = 3,    /* child -> parent; corr = pxi_fail_rec* */
    PXI_SYS_RESUME = 4,     /* parent -> child */
    PXI_SYS_RS_STOP = 5,    /* parent -> child: stop this instance for a restart */
    PXI_SYS_RS_STOPPED = 6, /* child -> parent; corr = child pointer */
    PXI_SYS_RS_START = 7,   /* parent -> child: start a new instance; tag 1 = half-open */
    PXI_SYS_RS_STARTED = 8, /* child -> parent; corr = child pointer; tag 1 = init ok */
    PXI_SYS_HEALTHY = 9,    /* child -> parent: first success while half-open */
    PXI_SYS_WATCH = 10,     /* sender = the watcher */
    PXI_SYS_UNWATCH = 11,   /* sender = the watcher */
    PXI_SYS_SUP_TIMER = 12, /* (via a timer) corr = child, tag = child inc */
    PXI_SYS_DUMP = 13,      /* tree dump (tree.c); corr = pxi_dump* */
    PXI_SYS_PROXY_EV = 14,  /* remote.c: to a proxy; corr = its event (heap) */
    PXI_SYS_HOST_OP = 15,   /* remote.c: to a host; tag = op | term << 8, corr = code */
};

/* flags */
enum {
    PXI_MF_REPLY = 1u << 0,     /* a reply to an ask: match corr in pending */
    PXI_MF_HEAP = 1u << 1,      /* bytes payload lives in u.heap */
    PXI_MF_ASKED = 1u << 2,     /* sent by px_ask: carries a corr to reply to */
    PXI_MF_SHARED = 1u << 3,    /* the payload (protobuf, or heap bytes) is a pxi_share's */
    PXI_MF_BLK = 1u << 4,       /* with HEAP: the bytes are a message block (msg.c), not malloc's */
};
/* The flags that describe the payload rather than the envelope. */
#define PXI_MF_PAYLOAD (PXI_MF_HEAP | PXI_MF_SHARED | PXI_MF_BLK)

/* Bytes payloads longer than PX_MSG_INLINE but at most this long live in a
 * second message block (msg.c's per-thread cache) instead of a malloc'd
 * buffer: a payload made on one thread and freed on another then costs a
 * pointer store, not a cross-arena free. */
#define PXI_MSG_BLK 64

/* A payload shared by several messages (PXI_MF_SHARED): the protobuf
 * message (with its free function) or the heap bytes, released when the
 * last message holding it is freed. refs: one per message; acq_rel on the
 * decrement so the last holder sees every other holder's reads done. */
typedef struct pxi_share {
    _Atomic uint32_t refs;
    ProtobufCMessage *pb;
    px_proto_free_fn free_fn;
    uint8_t *heap; /* a message block if the holders' flags say PXI_MF_BLK */
} pxi_share;

struct px_msg {
    pxi_node link;
    uint8_t kind;
    uint8_t flags;
    uint16_t sysop;
    uint32_t tag;
    uint32_t len;
    int32_t skip;   /* mailbox prefetch hint: lines to the message PXI_SKIP ahead, or 0 */
    px_ref sender;
    uint64_t corr;
    union {
        uint8_t inl[PX_MSG_INLINE];
        struct {
            uint8_t *data;
            pxi_share *share; /* PXI_MF_SHARED: data is share->heap */
        } heap;
        struct {
            ProtobufCMessage *pb;
            union {
                px_proto_free_fn free_fn;
                pxi_share *share; /* PXI_MF_SHARED: pb is share->pb */
            };
        } pb;
    } u;
};

_Static_assert(sizeof(struct px_msg) == 64, "px_msg is one cache line");

/* Allocates a zeroed-header message of `kind` (payload untouched).
 * NULL on allocation failure. */
px_msg *pxi_msg_new(uint8_t kind);

static inline px_msg *pxi_msg_of(pxi_node *n) { return (px_msg *)n; }

/* Makes m's payload shareable, for copies made with pxi_msg_clone: a
 * protobuf or heap bytes payload moves into a pxi_share that m holds the
 * one reference of; inline bytes and an already shared payload stay as
 * they are. m must be a bytes or protobuf message its caller owns. false
 * on allocation failure (m unchanged). */
bool pxi_msg_share(px_msg *m);

/* A copy of m (bytes or protobuf; after pxi_msg_share) for another
 * recipient: the same envelope and payload, inline bytes copied, a shared
 * payload referenced once more. Caller owns result; NULL on allocation
 * failure. */
px_msg *pxi_msg_clone(const px_msg *m);

/* Undoes pxi_msg_share if m holds the only reference, so that m is again
 * what its owner made (px_msg_take_pb works on it). */
void pxi_msg_unshare(px_msg *m);

/* How far ahead in a pushed chain a message's `skip` points. A consumer
 * walking a linked queue can only fetch one message ahead (it needs the
 * current one to learn the next); the skip hint lets it ask for the one
 * PXI_SKIP ahead, so cross-core misses overlap instead of queueing. */
#define PXI_SKIP 8

/* Blocks are 64-byte aligned (msg.c), so the distance is exact in lines. */
static inline int32_t pxi_skip_to(const px_msg *from, const px_msg *to) {
    intptr_t d = ((intptr_t)to - (intptr_t)from) / 64;
    return (d > INT32_MAX || d < INT32_MIN) ? 0 : (int32_t)d;
}

/* Fetches a line in exclusive state ahead of writing it: a hint only (on a
 * CPU without PREFETCHW the encoding executes as a no-op). */
static inline void pxi_prefetch_w(const void *p) {
#if defined(__x86_64__)
    __asm__ volatile("prefetchw %0" : : "m"(*(const char *)p));
#else
    __builtin_prefetch(p, 1);
#endif
}

#endif
