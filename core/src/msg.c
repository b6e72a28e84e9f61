/*
 * msg.c — message construction, accessors and release.
 *
 * Messages are 64-byte blocks from malloc. Bytes payloads up to
 * PX_MSG_INLINE live inside the block; larger ones in one extra allocation.
 * Protobuf payloads are held by pointer and released by their free function.
 * Nothing here locks; a message has one owner at a time.
 */
#include <stdlib.h>
#include <string.h>
#include <stdio.h>

#include "msg_int.h"

px_msg *pxi_msg_new(uint8_t kind) {
    px_msg *m = malloc(sizeof(*m));
    if (m == NULL) {
        return NULL;
    }
    atomic_store_explicit(&m->link.next, NULL, memory_order_relaxed);
    m->kind = kind;
    m->flags = 0;
    m->sysop = 0;
    m->tag = 0;
    m->len = 0;
    m->reserved = 0;
    m->sender = PX_REF_NIL;
    m->corr = 0;
    return m;
}

px_err px_msg_bytes(px_msg **out, uint32_t tag, const void *data, size_t len) {
    if (out == NULL || (data == NULL && len > 0) || len > UINT32_MAX) {
        return PX_EINVAL;
    }
    px_msg *m = pxi_msg_new(PX_MSG_BYTES);
    if (m == NULL) {
        return PX_ENOMEM;
    }
    m->tag = tag;
    m->len = (uint32_t)len;
    if (len <= PX_MSG_INLINE) {
        if (len > 0) {
            memcpy(m->u.inl, data, len);
        }
    } else {
        m->u.heap = malloc(len);
        if (m->u.heap == NULL) {
            free(m);
            return PX_ENOMEM;
        }
        memcpy(m->u.heap, data, len);
        m->flags |= PXI_MF_HEAP;
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

void px_msg_free(px_msg *m) {
    if (m == NULL) {
        return;
    }
    if (m->kind == PX_MSG_PROTO) {
        release_pb(m->u.pb.pb, m->u.pb.free_fn);
    } else if (m->flags & PXI_MF_HEAP) {
        free(m->u.heap);
    }
    free(m);
}

px_msg_kind px_msg_kind_of(const px_msg *m) { return (px_msg_kind)m->kind; }
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
    return (m->flags & PXI_MF_HEAP) ? m->u.heap : m->u.inl;
}

const ProtobufCMessage *px_msg_pb(const px_msg *m) {
    return (m != NULL && m->kind == PX_MSG_PROTO) ? m->u.pb.pb : NULL;
}

int px_msg_is(const px_msg *m, const ProtobufCMessageDescriptor *desc) {
    const ProtobufCMessage *pb = px_msg_pb(m);
    return pb != NULL && pb->descriptor == desc;
}

ProtobufCMessage *px_msg_take_pb(px_msg *m) {
    if (m == NULL || m->kind != PX_MSG_PROTO) {
        return NULL;
    }
    ProtobufCMessage *pb = m->u.pb.pb;
    m->u.pb.pb = NULL;
    return pb;
}

char *px_ref_format(px_ref r, char *buf, size_t len) {
    snprintf(buf, len, "%08x.%x/%u.%u", r.node, r.node_inc, r.id, r.inc);
    return buf;
}
