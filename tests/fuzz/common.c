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
 * The receive path is link.c's own: its internal types (link_int.h) make
 * a fake inbound link (a transport with no peers, one peer's receiving
 * state, its NORMAL and BULK connections), and pxl_deliver_batch /
 * pxl_rx_chunk run on it as they do for a real connection.
 *
 * Invariants checked: a
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

/* ---- link.c's receive path, the real one ---- */

/* One inbound link of peer "alpha" to this node: a transport with no
 * peers (notices to senders on other nodes are counted lost), the peer's
 * receiving state, and its NORMAL and BULK connections — enough for
 * link.c's pxl_deliver_batch and pxl_rx_chunk, which are what a frame from
 * a peer goes through. */
struct pxf_link {
    px_transport t;
    peer p;
    conn nrm, blk;
};

static struct pxf_link *link_of(pxf_rx *rx) {
    if (rx->l != NULL) {
        return rx->l;
    }
    struct pxf_link *l = calloc(1, sizeof(*l));
    PXF_CHECK(l != NULL);
    l->t.sys = pxf_env_get()->sys;
    px_transport_cfg_init(&l->t.cfg);
    PXF_CHECK(nng_mtx_alloc(&l->t.nq_mtx) == 0);
    l->p.t = &l->t;
    l->p.name = (char *)(uintptr_t)"alpha";
    l->p.node_id = px_node_id("alpha");
    PXF_CHECK(nng_mtx_alloc(&l->p.rx_mtx) == 0);
    l->nrm = (conn){.t = &l->t, .p = &l->p, .role = PXN_LISTENER, .lane = L_NRM, .state = C_UP};
    l->blk = (conn){.t = &l->t, .p = &l->p, .role = PXN_LISTENER, .lane = L_BLK, .state = C_UP};
    l->p.rx.in[L_NRM] = &l->nrm;
    l->p.rx.in[L_BLK] = &l->blk;
    rx->l = l;
    return l;
}

/* The target is re-addressed to this node and incarnation (random at each
 * start, so a fuzzer could never match it); the actor id and inc stay the
 * input's. */
static void readdress(const Plexus__Batch *b) {
    px_ref self = px_system_root(pxf_env_get()->sys);
    for (size_t i = 0; i < b->n_envelopes; i++) {
        Plexus__Envelope *v = b->envelopes[i];
        if (v != NULL && v->to_node != 0) {
            v->to_node = (uint64_t)self.node << 32 | self.node_inc;
        }
    }
}

const char *pxf_deliver_batch(pxf_rx *rx, const Plexus__Batch *b) {
    struct pxf_link *l = link_of(rx);
    readdress(b);
    const char *bad = pxl_deliver_batch(&l->nrm, b);
    pxl_notices_flush(&l->t);
    to_root = 1;
    settle();
    return bad;
}

const char *pxf_rx_chunk(pxf_rx *rx, const Plexus__Chunk *ch) {
    struct pxf_link *l = link_of(rx);
    const char *bad = pxl_rx_chunk(&l->blk, ch);
    pxl_notices_flush(&l->t);
    to_root = 1;
    settle();
    return bad;
}

void pxf_rx_fini(pxf_rx *rx) {
    struct pxf_link *l = rx->l;
    if (l == NULL) {
        return;
    }
    nng_mtx_lock(l->p.rx_mtx);
    pxl_rx_reset(&l->p, PX_ECLOSED);
    nng_mtx_unlock(l->p.rx_mtx);
    pxl_notices_flush(&l->t);
    free(l->p.rx.pairs);
    nng_mtx_free(l->p.rx_mtx);
    nng_mtx_free(l->t.nq_mtx);
    free(l);
    rx->l = NULL;
    to_root = 1;
    settle();
}
