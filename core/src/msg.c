/*
 * msg.c — message construction, accessors and release.
 *
 * Messages are 64-byte blocks from a per-thread cache (below). Bytes payloads up to
 * PX_MSG_INLINE live inside the block, those up to PXI_MSG_BLK in a second
 * block from the same cache, larger ones in one malloc'd buffer.
 * Protobuf payloads are held by pointer and released by their free function.
 * Nothing here locks; a message has one owner at a time. A payload carried
 * by several messages at once (a publication's copies) sits in a refcounted
 * pxi_share (msg_int.h): the messages are still one owner each, only the
 * payload is shared, and the last px_msg_free releases it.
 */
#include <assert.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "msg_int.h"

/*
 * Message blocks come from a per-thread cache backed by a global depot of
 * batches under a mutex, so a message allocated on one worker and freed on
 * another costs a pointer store, not a trip through malloc's arenas. The
 * cache and the batches are arrays of pointers, never lists threaded through
 * the blocks: a block freed on one core and reused on another is not read
 * (a dependent cache miss per message) until its new owner writes it.
 * Caches go back to the depot when their thread exits; the depot keeps at
 * most DEPOT_MAX batches and frees the rest. Under AddressSanitizer and
 * ThreadSanitizer every block goes straight to malloc/free so that
 * use-after-free stays visible.
 */
#if defined(__has_feature) /* clang: it does not define gcc's __SANITIZE_* */
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define PXI_SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || defined(PXI_SANITIZED)
#define PX_MSG_CACHE 0
#else
#define PX_MSG_CACHE 1
#endif

#if PX_MSG_CACHE
#include <pthread.h>

#define BATCH 64
#define CACHE_CAP (2 * BATCH)
#define DEPOT_MAX 1024
#define PREFETCH_AHEAD 8

typedef struct batch {
    struct batch *next;
    px_msg *m[BATCH];
} batch;

typedef struct cache {
    px_msg *m[CACHE_CAP];
    uint32_t n;
    bool registered;
} cache;

static _Thread_local cache tc;
static pthread_mutex_t depot_mtx = PTHREAD_MUTEX_INITIALIZER;
static batch *depot;      /* depot_mtx */
static uint32_t ndepot;   /* depot_mtx */
static batch *spare;      /* empty batch records (depot_mtx) */
static pthread_key_t tc_key;
static pthread_once_t tc_once = PTHREAD_ONCE_INIT;

/* Moves the top BATCH blocks of the cache to the depot (or frees them). */
static void give_back(cache *c) {
    px_msg **top = &c->m[c->n - BATCH];
    c->n -= BATCH;
    bool kept = false;
    pthread_mutex_lock(&depot_mtx);
    if (ndepot < DEPOT_MAX) {
        batch *b = spare;
        if (b != NULL) {
            spare = b->next;
        } else {
            b = malloc(sizeof(*b));
        }
        if (b != NULL) {
            memcpy(b->m, top, sizeof(b->m));
            b->next = depot;
            depot = b;
            ndepot++;
            kept = true;
        }
    }
    pthread_mutex_unlock(&depot_mtx);
    if (!kept) {
        for (uint32_t i = 0; i < BATCH; i++) {
            free(top[i]);
        }
    }
}

static void tc_flush(void *arg) {
    (void)arg;
    while (tc.n >= BATCH) {
        give_back(&tc);
    }
    for (uint32_t i = 0; i < tc.n; i++) {
        free(tc.m[i]);
    }
    tc.n = 0;
}

static void tc_key_make(void) { (void)pthread_key_create(&tc_key, tc_flush); }

/* So that tc_flush returns this thread's blocks when it exits. */
static void tc_register(cache *c) {
    pthread_once(&tc_once, tc_key_make);
    (void)pthread_setspecific(tc_key, c);
    c->registered = true;
}

static px_msg *take(void) {
    cache *c = &tc;
    if (c->n == 0) {
        if (!c->registered) {
            tc_register(c);
        }
        pthread_mutex_lock(&depot_mtx);
        batch *b = depot;
        if (b != NULL) {
            depot = b->next;
            ndepot--;
            memcpy(c->m, b->m, sizeof(b->m));
            c->n = BATCH;
            b->next = spare;
            spare = b;
        }
        pthread_mutex_unlock(&depot_mtx);
        if (c->n == 0) {
            return aligned_alloc(64, sizeof(px_msg)) /* one line, not two */;
        }
    }
    px_msg *m = c->m[--c->n];
    /* A cached block was most likely last read on another core (messages
     * cross cores): ask for a few ahead in exclusive state now so their
     * ownership transfers overlap instead of stalling each new message. */
    if (c->n >= PREFETCH_AHEAD) {
        pxi_prefetch_w(c->m[c->n - PREFETCH_AHEAD]);
    }
    return m;
}

static void put(px_msg *m) {
    cache *c = &tc;
    if (!c->registered) {
        tc_register(c);
    }
    if (c->n == CACHE_CAP) {
        give_back(c);
    }
    c->m[c->n++] = m;
}
#else
static px_msg *take(void) { return aligned_alloc(64, sizeof(px_msg)) /* one line, not two */; }
static void put(px_msg *m) { free(m); }
#endif

px_msg *pxi_msg_new(uint8_t kind) {
    px_msg *m = take();
    if (m == NULL) {
        return NULL;
    }
    atomic_store_explicit(&m->link.next, NULL, memory_order_relaxed);
    m->kind = kind;
    m->flags = 0;
    m->sysop = 0;
    m->tag = 0;
    m->len = 0;
    m->skip = 0;
    m->sender = PX_REF_NIL;
    m->corr = 0;
    return m;
}

/* A bytes message of len bytes: inline, or in `heap` (taken over, or NULL
 * to allocate). The payload is left for the caller to fill. */
static px_msg *bytes_new(uint32_t tag, size_t len, void *heap) {
    px_msg *m = pxi_msg_new(PX_MSG_BYTES);
    if (m == NULL) {
        return NULL;
    }
    m->tag = tag;
    m->len = (uint32_t)len;
    if (len > PX_MSG_INLINE) {
        bool blk = heap == NULL && len <= PXI_MSG_BLK;
        m->u.heap.data = heap != NULL ? heap : blk ? (uint8_t *)take() : malloc(len);
        if (m->u.heap.data == NULL) {
            put(m);
            return NULL;
        }
        m->flags |= PXI_MF_HEAP | (blk ? PXI_MF_BLK : 0);
    }
    return m;
}

/* Releases the bytes of a HEAP payload. */
static void heap_free(uint8_t *data, bool blk) {
    if (blk) {
        put((px_msg *)(void *)data);
    } else {
        free(data);
    }
}

px_err px_msg_bytes(px_msg **out, uint32_t tag, const void *data, size_t len) {
    if (out == NULL || (data == NULL && len > 0) || len > UINT32_MAX) {
        return PX_EINVAL;
    }
    px_msg *m = bytes_new(tag, len, NULL);
    if (m == NULL) {
        return PX_ENOMEM;
    }
    if (len > 0) {
        memcpy(len <= PX_MSG_INLINE ? m->u.inl : m->u.heap.data, data, len);
    }
    *out = m;
    return PX_OK;
}

px_err px_msg_bytes_take(px_msg **out, uint32_t tag, void *data, size_t len) {
    if (out == NULL || data == NULL || len <= PX_MSG_INLINE || len > UINT32_MAX) {
        return PX_EINVAL;
    }
    px_msg *m = bytes_new(tag, len, data);
    if (m == NULL) {
        return PX_ENOMEM;
    }
    *out = m;
    return PX_OK;
}

px_err px_msg_u64(px_msg **out, uint32_t tag, uint64_t v) {
    uint8_t b[8];
    for (int i = 0; i < 8; i++) {
        b[i] = (uint8_t)(v >> (8 * i));
    }
    return px_msg_bytes(out, tag, b, sizeof(b));
}

uint64_t px_msg_get_u64(const px_msg *m) {
    size_t len = 0;
    const uint8_t *b = px_msg_data(m, &len);
    if (b == NULL || len < 8) {
        return 0;
    }
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v |= (uint64_t)b[i] << (8 * i);
    }
    return v;
}

px_err px_msg_proto(px_msg **out, ProtobufCMessage *pb, px_proto_free_fn free_fn) {
    if (out == NULL || pb == NULL || pb->descriptor == NULL) {
        return PX_EINVAL;
    }
    px_msg *m = pxi_msg_new(PX_MSG_PROTO);
    if (m == NULL) {
        return PX_ENOMEM;
    }
    m->u.pb.pb = pb;
    m->u.pb.free_fn = free_fn;
    *out = m;
    return PX_OK;
}

static void release_pb(ProtobufCMessage *pb, px_proto_free_fn fn) {
    if (pb == NULL) {
        return;
    }
    if (fn != NULL) {
        fn(pb);
    } else {
        protobuf_c_message_free_unpacked(pb, NULL);
    }
}

/* blk: the holder's PXI_MF_BLK (every holder of a share has the same). */
static void share_rele(pxi_share *sh, bool blk) {
    if (atomic_fetch_sub_explicit(&sh->refs, 1, memory_order_acq_rel) != 1) {
        return;
    }
    release_pb(sh->pb, sh->free_fn);
    heap_free(sh->heap, blk);
    free(sh);
}

void px_msg_free(px_msg *m) {
    if (m == NULL) {
        return;
    }
    if (m->flags & PXI_MF_SHARED) {
        share_rele(m->kind == PX_MSG_PROTO ? m->u.pb.share : m->u.heap.share,
                   (m->flags & PXI_MF_BLK) != 0);
    } else if (m->kind == PX_MSG_PROTO) {
        release_pb(m->u.pb.pb, m->u.pb.free_fn);
    } else if (m->flags & PXI_MF_HEAP) {
        heap_free(m->u.heap.data, (m->flags & PXI_MF_BLK) != 0);
    }
    put(m);
}

bool pxi_msg_share(px_msg *m) {
    bool pb = m->kind == PX_MSG_PROTO;
    if ((m->flags & PXI_MF_SHARED) || (!pb && !(m->flags & PXI_MF_HEAP))) {
        return true;
    }
    pxi_share *sh = malloc(sizeof(*sh));
    if (sh == NULL) {
        return false;
    }
    atomic_init(&sh->refs, 1);
    sh->pb = pb ? m->u.pb.pb : NULL;
    sh->free_fn = pb ? m->u.pb.free_fn : NULL;
    sh->heap = pb ? NULL : m->u.heap.data;
    if (pb) {
        m->u.pb.share = sh;
    } else {
        m->u.heap.share = sh;
    }
    m->flags |= PXI_MF_SHARED;
    return true;
}

void pxi_msg_unshare(px_msg *m) {
    if (!(m->flags & PXI_MF_SHARED)) {
        return;
    }
    bool pb = m->kind == PX_MSG_PROTO;
    pxi_share *sh = pb ? m->u.pb.share : m->u.heap.share;
    if (atomic_load_explicit(&sh->refs, memory_order_acquire) != 1) {
        return;
    }
    if (pb) {
        m->u.pb.free_fn = sh->free_fn;
    } else {
        m->u.heap.share = NULL;
    }
    m->flags &= (uint8_t)~PXI_MF_SHARED;
    free(sh);
}

px_msg *pxi_msg_clone(const px_msg *m) {
    /* An unshared heap or protobuf payload would be freed twice. */
    assert((m->flags & PXI_MF_SHARED) || (m->kind == PX_MSG_BYTES && !(m->flags & PXI_MF_HEAP)));
    px_msg *c = take();
    if (c == NULL) {
        return NULL;
    }
    atomic_store_explicit(&c->link.next, NULL, memory_order_relaxed);
    c->kind = m->kind;
    c->flags = m->flags;
    c->sysop = m->sysop;
    c->tag = m->tag;
    c->len = m->len;
    c->skip = 0;
    c->sender = m->sender;
    c->corr = m->corr;
    c->u = m->u;
    if (m->flags & PXI_MF_SHARED) {
        /* Relaxed: the caller holds a reference, so the count cannot reach
         * zero meanwhile. */
        atomic_fetch_add_explicit(m->kind == PX_MSG_PROTO ? &m->u.pb.share->refs
                                                          : &m->u.heap.share->refs,
                                  1, memory_order_relaxed);
    }
    return c;
}

px_msg_kind px_msg_kind_of(const px_msg *m) { return (px_msg_kind)m->kind; }

px_err px_msg_undelivered(const px_msg *m, px_ref *to, px_err *code) {
    if (m == NULL || m->kind != PX_MSG_UNDELIVERED) {
        return PX_ETYPE;
    }
    if (to != NULL) {
        *to = m->sender;
    }
    if (code != NULL) {
        *code = (px_err)(int32_t)m->tag;
    }
    return PX_OK;
}
uint32_t px_msg_tag(const px_msg *m) { return m->tag; }
px_ref px_msg_sender(const px_msg *m) { return m->sender; }
uint64_t px_msg_corr(const px_msg *m) { return m->corr; }
int px_msg_is_reply(const px_msg *m) { return (m->flags & PXI_MF_REPLY) != 0; }

const void *px_msg_data(const px_msg *m, size_t *len) {
    if (m == NULL || m->kind != PX_MSG_BYTES) {
        if (len != NULL) {
            *len = 0;
        }
        return NULL;
    }
    if (len != NULL) {
        *len = m->len;
    }
    return (m->flags & PXI_MF_HEAP) ? m->u.heap.data : m->u.inl;
}

const ProtobufCMessage *px_msg_pb(const px_msg *m) {
    return (m != NULL && m->kind == PX_MSG_PROTO) ? m->u.pb.pb : NULL;
}

int px_msg_is(const px_msg *m, const ProtobufCMessageDescriptor *desc) {
    const ProtobufCMessage *pb = px_msg_pb(m);
    return pb != NULL && pb->descriptor == desc;
}

ProtobufCMessage *px_msg_take_pb(px_msg *m) {
    if (m == NULL || m->kind != PX_MSG_PROTO || (m->flags & PXI_MF_SHARED)) {
        return NULL; /* a shared payload is every holder's to read */
    }
    ProtobufCMessage *pb = m->u.pb.pb;
    m->u.pb.pb = NULL;
    return pb;
}

char *px_ref_format(px_ref r, char *buf, size_t len) {
    snprintf(buf, len, "%08x.%x/%u.%u", r.node, r.node_inc, r.id, r.inc);
    return buf;
}
