/*
 * common.c — the fixture and the decode path the wire fuzz targets share
 * (fuzz.h).
 *
 * The fixture is a handshake made from the test vectors' inputs, so seeds
 * made from it (gen_seeds.c) open and verify as a real peer's frames would,
 * and a px_system with some of plexus.proto's messages registered as types,
 * so envelopes name types the receiver knows; its root guardian is the one
 * live actor that deliveries can reach.
 *
 * The receive path is a copy of link.c's (msg_of_payload, deliver_batch,
 * rx_system, rx_bulk_header, rx_chunk, item_try, rx_fail) without the
 * locks, counters, lanes and per-pair hold-back queues; link.c's rx state
 * lives inside its connections and cannot be called on its own. When
 * link.c's receive path changes, change this copy too.
 *
 * Invariants checked: a decoded message carries what its payload said; a
 * message unpacked from the wire packs to get_packed_size bytes that unpack
 * again (unless it kept unknown fields); whoever px_system_deliver_remote
 * says owns a message frees it.
 */
#include <sched.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "fuzz.h"

#define SECRET "correct horse battery staple"

/* Types a receiving node knows: flat, nested (ChildSpec, RestartPolicy
 * with doubles), repeated strings, and ChildFailure, which nests itself. */
static const ProtobufCMessageDescriptor *const types[] = {
    &plexus__terminated__descriptor,   &plexus__undelivered__descriptor,
    &plexus__spawn_request__descriptor, &plexus__spawn_reply__descriptor,
    &plexus__child_failure__descriptor, &plexus__directive__descriptor,
    &plexus__node_info__descriptor,
};

static pxf_env env;
static int env_ready;

static void node_make(pxf_node *n, const char *name, uint8_t seed_byte, uint8_t kx_byte,
                      uint8_t nonce_byte) {
    uint8_t seed[32];
    memset(seed, seed_byte, sizeof(seed));
    PXF_CHECK(crypto_sign_seed_keypair(n->id.pk, n->id.sk, seed) == 0);
    PXF_CHECK(px_secret_from_bytes(SECRET, strlen(SECRET), n->key) == PX_OK);
    memset(n->kx_seed, kx_byte, sizeof(n->kx_seed));
    memset(n->nonce, nonce_byte, sizeof(n->nonce));
    n->self = (pxn_self){.node_name = name,
                         .node_id = px_node_id(name),
                         .node_inc = 7,
                         .id = &n->id,
                         .cluster_key = n->key,
                         .max_frame = PXF_MAX_FRAME,
                         .advertise = "tcp://127.0.0.1:7001"};
}

static void quiet(void *arg, px_log_level level, const char *node, const char *text) {
    (void)arg;
    (void)level;
    (void)node;
    (void)text;
}

static void env_free(void) {
    px_system_free(env.sys);
    env.sys = NULL;
    pxn_hs_fini(&env.d);
    pxn_hs_fini(&env.l);
}

const pxf_env *pxf_env_get(void) {
    if (env_ready) {
        return &env;
    }
    PXF_CHECK(sodium_init() >= 0);
    node_make(&env.alpha, "alpha", 1, 0x11, 0x33);
    node_make(&env.beta, "beta", 2, 0x22, 0x44);
    env_ready = 1; /* pxf_hs_start reads the nodes */
    pxf_hs_start(&env.d, PXN_DIALER, PLEXUS__LANE__LANE_NORMAL);
    pxf_hs_start(&env.l, PXN_LISTENER, PLEXUS__LANE__LANE_NORMAL);
    Plexus__Refuse__Reason r;
    char why[256];
    PXF_CHECK(pxn_hs_peer(&env.l, env.d.mine, env.d.mine_len, PLEXUS__LANE__LANE_NORMAL, &r,
                          why, sizeof(why)) == PX_OK);
    PXF_CHECK(pxn_hs_peer(&env.d, env.l.mine, env.l.mine_len, PLEXUS__LANE__LANE_NORMAL, &r,
                          why, sizeof(why)) == PX_OK);
    PXF_CHECK(pxn_hs_keys(&env.d, &env.d_rx, &env.d_tx) == PX_OK);
    PXF_CHECK(pxn_hs_keys(&env.l, &env.l_rx, &env.l_tx) == PX_OK);
    PXF_CHECK(memcmp(env.d_tx.key, env.l_rx.key, PXN_KEY_BYTES) == 0);

    px_config cfg;
    px_config_init(&cfg);
    cfg.node_name = "beta";
    cfg.workers = 1;
    cfg.log_level = PX_LOG_OFF;
    cfg.log_sink = quiet;
    cfg.shutdown_mode = PX_SHUTDOWN_REJECT;
    PXF_CHECK(px_system_alloc(&env.sys, &cfg) == PX_OK);
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        PXF_CHECK(px_type_register(env.sys, types[i]) == PX_OK);
    }
    atexit(env_free);
    return &env;
}

void pxf_hs_start(pxn_hs *hs, int role, uint32_t lane) {
    const pxf_env *e = pxf_env_get();
    const pxf_node *n = role == PXN_DIALER ? &e->alpha : &e->beta;
    PXF_CHECK(pxn_hs_init(hs, role, &n->self, lane, n->kx_seed, n->nonce) == PX_OK);
}

/* Whether m or a message inside it kept fields its type does not know. */
static bool has_unknown(const ProtobufCMessage *m) {
    if (m->n_unknown_fields > 0) {
        return true;
    }
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE) {
            continue;
        }
        const char *base = (const char *)m;
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(const uint32_t *)(base + f->quantifier_offset) != f->id) {
            continue;
        }
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            ProtobufCMessage *const *v = *(ProtobufCMessage *const *const *)(base + f->offset);
            for (size_t k = 0; k < n; k++) {
                if (v[k] != NULL && has_unknown(v[k])) {
                    return true;
                }
            }
        } else {
            const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)(base + f->offset);
            if (sub != NULL && has_unknown(sub)) {
                return true;
            }
        }
    }
    return false;
}

void pxf_check_repack(const ProtobufCMessage *m) {
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *b = malloc(n ? n : 1);
    PXF_CHECK(b != NULL);
    PXF_CHECK(protobuf_c_message_pack(m, b) == n);
    ProtobufCMessage *again = protobuf_c_message_unpack(m->descriptor, NULL, n, b);
    /* protobuf-c keeps unknown fields verbatim, even one it would refuse
     * when written plainly (field number 0 behind an over-long varint tag
     * reads, a plain 0x00 tag does not), so only messages without them
     * must come back. */
    PXF_CHECK(again != NULL || has_unknown(m));
    if (again != NULL) {
        protobuf_c_message_free_unpacked(again, NULL);
    }
    free(b);
}

/* The message is what the payload said. */
static void check_msg(const px_msg *m, const ProtobufCMessageDescriptor *d, uint32_t tag,
                      const uint8_t *data, size_t len) {
    if (d == NULL) {
        PXF_CHECK(px_msg_kind_of(m) == PX_MSG_BYTES);
        PXF_CHECK(px_msg_tag(m) == tag);
        size_t got = 0;
        const void *p = px_msg_data(m, &got);
        PXF_CHECK(got == len);
        PXF_CHECK(len == 0 || memcmp(p, data, len) == 0);
        PXF_CHECK(px_msg_pb(m) == NULL);
        return;
    }
    PXF_CHECK(px_msg_kind_of(m) == PX_MSG_PROTO);
    PXF_CHECK(px_msg_is(m, d));
    const ProtobufCMessage *pb = px_msg_pb(m);
    PXF_CHECK(pb != NULL && pb->descriptor == d);
    pxf_check_repack(pb);
}

px_msg *pxf_msg_of_payload(const char *type, uint32_t tag, const uint8_t *data, size_t len,
                           px_err *why) {
    px_system *sys = pxf_env_get()->sys;
    px_msg *m = NULL;
    /* From here to the marked end: link.c msg_of_payload. */
    if (type == NULL || type[0] == '\0') {
        *why = px_msg_bytes(&m, tag, data, len);
        if (*why == PX_OK) {
            check_msg(m, NULL, tag, data, len);
        }
        return *why == PX_OK ? m : NULL;
    }
    const ProtobufCMessageDescriptor *d = px_type_lookup(sys, type);
    if (d == NULL) {
        *why = PX_ETYPE;
        return NULL;
    }
    ProtobufCMessage *pb = pxn_pb_depth_ok(d, data, len, PXN_PB_MAX_DEPTH)
                               ? protobuf_c_message_unpack(d, NULL, len, data)
                               : NULL;
    if (pb == NULL) {
        *why = PX_EPROTO;
        return NULL;
    }
    *why = px_msg_proto(&m, pb, NULL);
    if (*why != PX_OK) {
        protobuf_c_message_free_unpacked(pb, NULL);
        return NULL;
    }
    /* End of link.c's code. */
    PXF_CHECK(strcmp(d->name, type) == 0);
    check_msg(m, d, tag, data, len);
    return m;
}

/* ---- the root guardian ---- */

/* Messages that went to the root guardian (the only live actor) during
 * this input. They sit in its slot, which core mmaps and LeakSanitizer does
 * not scan: left queued when the input ends, they would look leaked to
 * libFuzzer's leak check. */
static uint64_t to_root;

static uint64_t root_processed(px_system *sys) {
    px_actor_stats a;
    PXF_CHECK(px_actor_stats_get(sys, px_system_root(sys), &a) == PX_OK);
    return a.processed;
}

/* Waits until the root guardian has handled everything sent to it: sends
 * it one more bytes message and waits for its receive to have seen it
 * (one mailbox, in order, so whatever came before is freed by then).
 * Polls: this is a test of the decode path, not of the scheduler. */
static void settle(void) {
    if (to_root == 0) {
        return;
    }
    to_root = 0;
    px_system *sys = pxf_env_get()->sys;
    uint64_t base = root_processed(sys);
    px_msg *m = NULL;
    PXF_CHECK(px_msg_bytes(&m, 0, NULL, 0) == PX_OK);
    PXF_CHECK(px_system_deliver_remote(sys, px_system_root(sys), PX_REF_NIL, 0, 0, &m) == PX_OK);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (root_processed(sys) == base) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        PXF_CHECK(t.tv_sec - t0.tv_sec < 10); /* the root guardian is stuck */
        sched_yield();
    }
}

/* ---- link.c's receive path ---- */

static px_ref ref_of(const Plexus__ActorRef *r) {
    return r ? (px_ref){r->node, r->node_inc, r->id, r->inc} : PX_REF_NIL;
}

/* link.c notify_sender, without the queue: the notice is packed, then
 * dropped. */
static void notify_sender(px_ref sender, px_ref to, px_err code, uint64_t corr) {
    if (px_ref_is_nil(sender)) {
        return;
    }
    Plexus__ActorRef r = PLEXUS__ACTOR_REF__INIT;
    r.node = to.node;
    r.node_inc = to.node_inc;
    r.id = to.id;
    r.inc = to.inc;
    Plexus__Undelivered u = PLEXUS__UNDELIVERED__INIT;
    u.to = &r;
    u.code = code;
    u.corr = corr;
    size_t n = plexus__undelivered__get_packed_size(&u);
    uint8_t *b = malloc(n);
    PXF_CHECK(b != NULL);
    PXF_CHECK(plexus__undelivered__pack(&u, b) == n);
    free(b);
}

/* link.c rx_fail. */
static void rx_fail(px_ref to, px_ref from, uint64_t corr, px_msg *m, px_err why) {
    px_msg_free(m);
    if (why != PX_EDEAD) {
        notify_sender(from, to, why, corr);
    }
}

/* link.c item_try (the root's mailbox is unbounded: never parked). */
static void deliver(px_ref to, px_ref from, uint64_t corr, uint32_t flags, px_msg *m) {
    px_system *sys = pxf_env_get()->sys;
    px_err e = px_system_deliver_remote(sys, to, from, corr, flags, &m);
    /* Taken on PX_OK and PX_EDEAD, kept otherwise (router.h). */
    PXF_CHECK((m == NULL) == (e == PX_OK || e == PX_EDEAD));
    if (e == PX_OK) {
        PXF_CHECK(px_ref_eq(to, px_system_root(sys))); /* the only live actor */
        to_root++;
    } else {
        rx_fail(to, from, corr, m, e);
    }
}

/* A bulk payload in pieces (link.c rxbulk with its rxitem). */
typedef struct pxf_bulk {
    struct pxf_bulk *next;
    uint64_t id, len, have;
    uint8_t *buf;
    bool item; /* its envelope came; then: */
    px_ref to, from;
    uint64_t corr;
    uint32_t flags, tag;
    char *type;
} pxf_bulk;

static void bulk_free(pxf_rx *rx, pxf_bulk *b) {
    for (pxf_bulk **pb = &rx->bulks; *pb != NULL; pb = &(*pb)->next) {
        if (*pb == b) {
            *pb = b->next;
            break;
        }
    }
    rx->bulk_bytes -= b->buf ? b->len : 0;
    free(b->buf);
    free(b->type);
    free(b);
}

void pxf_rx_fini(pxf_rx *rx) {
    while (rx->bulks != NULL) {
        bulk_free(rx, rx->bulks);
    }
    PXF_CHECK(rx->bulk_bytes == 0);
    settle();
}

/* link.c bulk_complete_locked. */
static void bulk_complete(pxf_rx *rx, pxf_bulk *b) {
    px_err why = PX_OK;
    px_msg *m = pxf_msg_of_payload(b->type, b->tag, b->buf, b->len, &why);
    PXF_CHECK((m != NULL) == (why == PX_OK));
    if (m != NULL) {
        deliver(b->to, b->from, b->corr, b->flags, m);
    } else {
        rx_fail(b->to, b->from, b->corr, NULL, why);
    }
    bulk_free(rx, b);
}

static pxf_bulk *bulk_find(pxf_rx *rx, uint64_t id) {
    for (pxf_bulk *b = rx->bulks; b != NULL; b = b->next) {
        if (b->id == id) {
            return b;
        }
    }
    return NULL;
}

static pxf_bulk *bulk_new(pxf_rx *rx, uint64_t id, uint64_t len) {
    pxf_bulk *b = calloc(1, sizeof(*b));
    PXF_CHECK(b != NULL);
    b->id = id;
    b->len = len;
    b->next = rx->bulks;
    rx->bulks = b;
    return b;
}

/* link.c rx_bulk_header. */
static const char *rx_bulk_header(pxf_rx *rx, const Plexus__Envelope *v, px_ref to) {
    if (v->bulk_len == 0 || v->bulk_len > PXF_MAX_MSG) {
        return "a bulk message larger than this node's max_msg";
    }
    pxf_bulk *b = bulk_find(rx, v->bulk_id);
    if (b != NULL && (b->len != v->bulk_len || b->item)) {
        return "a bulk message whose id or length does not match its chunks";
    }
    if (b == NULL) {
        b = bulk_new(rx, v->bulk_id, v->bulk_len);
    }
    b->item = true;
    b->to = to;
    b->from = ref_of(v->from);
    b->corr = v->corr;
    b->flags = v->flags;
    b->tag = v->tag;
    if (v->type != NULL && v->type[0] != '\0') {
        b->type = strdup(v->type);
        PXF_CHECK(b->type != NULL);
    }
    if (b->have == b->len && b->buf != NULL) { /* its chunks came first */
        bulk_complete(rx, b);
    }
    return NULL;
}

/* link.c rx_system. */
static void rx_system(const Plexus__Envelope *v, px_ref to) {
    if (v->sysop != PLEXUS__SYS_OP__SYS_UNDELIVERED) {
        return;
    }
    Plexus__Undelivered *u = plexus__undelivered__unpack(NULL, v->payload.len, v->payload.data);
    if (u == NULL) {
        return;
    }
    pxf_check_repack(&u->base);
    px_err code = u->code < 0 && u->code > -1000 ? (px_err)u->code : PX_EPROTO;
    px_err rv = px_system_notify_undelivered(pxf_env_get()->sys, to, ref_of(u->to), code, u->corr);
    PXF_CHECK(rv == PX_OK || rv == PX_EDEAD);
    if (rv == PX_OK) {
        to_root++;
    }
    plexus__undelivered__free_unpacked(u, NULL);
}

const char *pxf_deliver_batch(pxf_rx *rx, const Plexus__Batch *b) {
    px_ref self = px_system_root(pxf_env_get()->sys);
    const char *bad = NULL;
    PXF_CHECK(b->n_envelopes == 0 || b->envelopes != NULL);
    for (size_t i = 0; i < b->n_envelopes && bad == NULL; i++) {
        const Plexus__Envelope *v = b->envelopes[i];
        px_ref to = ref_of(v ? v->to : NULL);
        to.node = self.node; /* see fuzz.h */
        to.node_inc = self.node_inc;
        if (v == NULL || v->to == NULL) {
            continue;
        }
        if (v->flags & PLEXUS__ENVELOPE_FLAG__FLAG_SYSTEM) {
            rx_system(v, to);
            continue;
        }
        if (v->bulk_id != 0) {
            bad = rx_bulk_header(rx, v, to);
            continue;
        }
        px_err why = PX_OK;
        px_msg *m = pxf_msg_of_payload(v->type, v->tag, v->payload.data, v->payload.len, &why);
        PXF_CHECK((m != NULL) == (why == PX_OK));
        if (m == NULL) {
            rx_fail(to, ref_of(v->from), v->corr, NULL, why);
            continue;
        }
        deliver(to, ref_of(v->from), v->corr, v->flags, m);
    }
    settle();
    return bad;
}

const char *pxf_rx_chunk(pxf_rx *rx, const Plexus__Chunk *ch) {
    const char *bad = NULL;
    pxf_bulk *b = bulk_find(rx, ch->bulk_id);
    /* From here to the marked end: link.c rx_chunk. */
    if (ch->bulk_id == 0 || ch->bulk_len == 0 || ch->bulk_len > PXF_MAX_MSG) {
        bad = "a chunk of a bulk message larger than this node's max_msg";
    } else if (b == NULL && (b = bulk_new(rx, ch->bulk_id, ch->bulk_len)) == NULL) {
        bad = "out of memory for a bulk message";
    } else if (b->len != ch->bulk_len || ch->offset != b->have ||
               ch->data.len > b->len - b->have || ch->data.len == 0) {
        bad = "a chunk at an unexpected offset or of the wrong length";
    } else if (b->buf == NULL) {
        if (rx->bulk_bytes + b->len > 2 * PXF_MAX_MSG) {
            bad = "more bulk data in flight than twice max_msg";
        } else if ((b->buf = malloc(b->len)) == NULL) {
            bad = "out of memory for a bulk message";
        } else {
            rx->bulk_bytes += b->len;
        }
    }
    if (bad == NULL) {
        memcpy(b->buf + b->have, ch->data.data, ch->data.len);
        b->have += ch->data.len;
        if (b->have == b->len && b->item) {
            bulk_complete(rx, b);
        }
    }
    /* End of link.c's code. */
    settle();
    return bad;
}
