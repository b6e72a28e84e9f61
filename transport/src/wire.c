/*
 * wire.c — frame sealing and the handshake's cryptography (wire.h).
 *
 * Handshake, for each connection (dialer D, listener L):
 *   1. each side sends the preamble and a Handshake{hello} with a fresh
 *      X25519 key (kx_pk) and 32 random bytes;
 *   2. th = BLAKE2b-256, keyed with the cluster key, of
 *      u32le(|HD|) || HD || u32le(|HL|) || HL  (HD, HL: the packed
 *      Handshake messages of D and L as sent);
 *   3. crypto_kx gives D (client) and L (server) a pair (rx, tx) with
 *      D.tx == L.rx; each key is then mixed as
 *      BLAKE2b-256(key = cluster key, msg = kx key || th),
 *      so without the cluster secret no frame can be sealed or opened;
 *   4. the first encrypted frame each way is Frame{auth{sig}}, sig being
 *      ed25519 over "plexus/auth/v1" || role byte || th with the identity
 *      key announced in the Hello.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "wire.h"

static void nonce_of(uint64_t ctr, uint8_t nonce[24]) {
    memset(nonce, 0, 24);
    for (int i = 0; i < 8; i++) {
        nonce[i] = (uint8_t)(ctr >> (8 * i));
    }
}

size_t pxn_seal(pxn_cipher *c, const uint8_t *pt, size_t n, uint8_t *out) {
    size_t clen = n + (c->plaintext ? 0 : PXN_TAG_BYTES);
    pxn_put_u32(out, (uint32_t)clen);
    if (c->plaintext) {
        if (out + PXN_LEN_BYTES != pt) {
            memmove(out + PXN_LEN_BYTES, pt, n);
        }
    } else {
        uint8_t nonce[24];
        nonce_of(c->ctr, nonce);
        unsigned long long cl = 0;
        crypto_aead_xchacha20poly1305_ietf_encrypt(out + PXN_LEN_BYTES, &cl, pt, n, out,
                                                   PXN_LEN_BYTES, NULL, nonce, c->key);
    }
    c->ctr++;
    return PXN_LEN_BYTES + clen;
}

px_err pxn_open(pxn_cipher *c, const uint8_t hdr[PXN_LEN_BYTES], const uint8_t *ct, size_t n,
                uint8_t *pt, size_t *ptlen) {
    if (c->plaintext) {
        if (pt != ct) {
            memmove(pt, ct, n);
        }
        *ptlen = n;
        c->ctr++;
        return PX_OK;
    }
    if (n < PXN_TAG_BYTES) {
        return PX_EPROTO;
    }
    uint8_t nonce[24];
    nonce_of(c->ctr, nonce);
    unsigned long long pl = 0;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(pt, &pl, NULL, ct, n, hdr, PXN_LEN_BYTES,
                                                   nonce, c->key) != 0) {
        return PX_EAUTH;
    }
    c->ctr++;
    *ptlen = (size_t)pl;
    return PX_OK;
}

/* Packs this side's Hello for `lane` into hs->mine. credit: on BULK, what
 * it says of Credit (a dialer asks for it, a listener promises it when
 * asked). */
static px_err pack_mine(pxn_hs *hs, uint32_t lane, bool credit) {
    const pxn_self *self = hs->self;
    Plexus__Hello h = PLEXUS__HELLO__INIT;
    h.version = PX_WIRE_VERSION;
    h.min_version = PX_WIRE_MIN_VERSION;
    h.node_name = (char *)(uintptr_t)self->node_name;
    h.node_id = self->node_id;
    h.node_inc = self->node_inc;
    h.identity_pk = (ProtobufCBinaryData){PX_PUBKEY_BYTES, (uint8_t *)(uintptr_t)self->id->pk};
    h.kx_pk = (ProtobufCBinaryData){sizeof(hs->kx_pk), hs->kx_pk};
    h.nonce = (ProtobufCBinaryData){sizeof(hs->nonce), hs->nonce};
    h.lane = lane;
    h.max_frame = self->max_frame;
    h.advertise = (char *)(uintptr_t)(self->advertise ? self->advertise : "");
    h.plaintext = self->plaintext;
    h.max_msg = self->max_msg;
    h.credit = credit && lane == PLEXUS__LANE__LANE_BULK;
    Plexus__Handshake m = PLEXUS__HANDSHAKE__INIT;
    m.msg_case = PLEXUS__HANDSHAKE__MSG_HELLO;
    m.hello = &h;
    hs->mine_len = plexus__handshake__get_packed_size(&m);
    if (hs->mine_len > PXN_HS_MAX) {
        return PX_EINVAL; /* a very long advertise address */
    }
    hs->mine = malloc(hs->mine_len);
    if (hs->mine == NULL) {
        return PX_ENOMEM;
    }
    plexus__handshake__pack(&m, hs->mine);
    hs->lane = lane;
    return PX_OK;
}

px_err pxn_hs_init(pxn_hs *hs, int role, const pxn_self *self, uint32_t lane,
                   const uint8_t *kx_seed, const uint8_t *nonce) {
    memset(hs, 0, sizeof(*hs));
    if (sodium_init() < 0) {
        return PX_ESYS;
    }
    hs->role = role;
    hs->self = self;
    hs->lane = PXN_LANE_ANY;
    if (kx_seed != NULL) {
        crypto_kx_seed_keypair(hs->kx_pk, hs->kx_sk, kx_seed);
    } else {
        crypto_kx_keypair(hs->kx_pk, hs->kx_sk);
    }
    if (nonce != NULL) {
        memcpy(hs->nonce, nonce, sizeof(hs->nonce));
    } else {
        randombytes_buf(hs->nonce, sizeof(hs->nonce));
    }
    if (lane == PXN_LANE_ANY) {
        return role == PXN_LISTENER ? PX_OK : PX_EINVAL;
    }
    return pack_mine(hs, lane, self->credit);
}

void pxn_hs_fini(pxn_hs *hs) {
    free(hs->mine);
    if (hs->peer != NULL) {
        plexus__hello__free_unpacked(hs->peer, NULL);
    }
    sodium_memzero(hs, sizeof(*hs));
}

bool pxn_name_ok(const char *s) {
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 63) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-')) {
            return false;
        }
    }
    return true;
}

static void transcript(pxn_hs *hs, const uint8_t *peer, size_t n) {
    const uint8_t *d = hs->role == PXN_DIALER ? hs->mine : peer;
    size_t dn = hs->role == PXN_DIALER ? hs->mine_len : n;
    const uint8_t *l = hs->role == PXN_DIALER ? peer : hs->mine;
    size_t ln = hs->role == PXN_DIALER ? n : hs->mine_len;
    crypto_generichash_state st;
    uint8_t len[4];
    crypto_generichash_init(&st, hs->self->cluster_key, PX_SECRET_BYTES, sizeof(hs->th));
    pxn_put_u32(len, (uint32_t)dn);
    crypto_generichash_update(&st, len, 4);
    crypto_generichash_update(&st, d, dn);
    pxn_put_u32(len, (uint32_t)ln);
    crypto_generichash_update(&st, len, 4);
    crypto_generichash_update(&st, l, ln);
    crypto_generichash_final(&st, hs->th, sizeof(hs->th));
}

px_err pxn_hs_peer(pxn_hs *hs, const uint8_t *data, size_t n, uint32_t lane,
                   Plexus__Refuse__Reason *refuse, char *why, size_t whylen) {
    *refuse = PLEXUS__REFUSE__REASON__BAD_HELLO;
    Plexus__Handshake *m = n <= PXN_HS_MAX ? plexus__handshake__unpack(NULL, n, data) : NULL;
    if (m == NULL) {
        snprintf(why, whylen, "handshake frame does not decode (%zu bytes)", n);
        return PX_EPROTO;
    }
    if (m->msg_case == PLEXUS__HANDSHAKE__MSG_REFUSE && m->refuse != NULL) {
        const ProtobufCEnumValue *v =
            protobuf_c_enum_descriptor_get_value(&plexus__refuse__reason__descriptor,
                                                 m->refuse->reason);
        snprintf(why, whylen, "peer refused the link: %s (%.200s; peer speaks versions %u..%u)",
                 v ? v->name : "?", m->refuse->detail ? m->refuse->detail : "",
                 m->refuse->min_version, m->refuse->version);
        px_err rv = m->refuse->reason == PLEXUS__REFUSE__REASON__VERSION ? PX_EVERSION
                                                                           : PX_ECLOSED;
        *refuse = PLEXUS__REFUSE__REASON__UNSPECIFIED; /* never answer a refusal */
        plexus__handshake__free_unpacked(m, NULL);
        return rv;
    }
    Plexus__Hello *h = m->msg_case == PLEXUS__HANDSHAKE__MSG_HELLO ? m->hello : NULL;
    if (h == NULL) {
        plexus__handshake__free_unpacked(m, NULL);
        snprintf(why, whylen, "handshake frame holds neither hello nor refuse");
        return PX_EPROTO;
    }
    if (h->version < PX_WIRE_MIN_VERSION || h->min_version > PX_WIRE_VERSION ||
        h->min_version > h->version) {
        snprintf(why, whylen,
                 "incompatible protocol: peer speaks versions %u..%u, this node %u..%u",
                 h->min_version, h->version, PX_WIRE_MIN_VERSION, PX_WIRE_VERSION);
        *refuse = PLEXUS__REFUSE__REASON__VERSION;
        plexus__handshake__free_unpacked(m, NULL);
        return PX_EVERSION;
    }
    const char *bad = NULL;
    if (!pxn_name_ok(h->node_name)) {
        bad = "node name";
    } else if (h->identity_pk.len != PX_PUBKEY_BYTES) {
        bad = "identity key length";
    } else if (h->kx_pk.len != 32) {
        bad = "kx key length";
    } else if (h->nonce.len != 32) {
        bad = "nonce length";
    } else if (h->node_id != px_node_id(h->node_name)) {
        bad = "node id is not the hash of its name";
    } else if (lane == PXN_LANE_ANY ? h->lane > PLEXUS__LANE__LANE_BULK : h->lane != lane) {
        bad = "lane";
    } else if (h->max_frame < 1024) {
        bad = "max_frame";
    } else if (h->plaintext != hs->self->plaintext) {
        bad = hs->self->plaintext ? "peer encrypts, this node is in plaintext mode"
                                  : "peer is in plaintext mode, this node encrypts";
    }
    if (bad != NULL) {
        snprintf(why, whylen, "bad hello from %.63s: %s",
                 pxn_name_ok(h->node_name) ? h->node_name : "?", bad);
        plexus__handshake__free_unpacked(m, NULL);
        return PX_EPROTO;
    }
    px_err prv = hs->mine == NULL ? pack_mine(hs, h->lane, h->credit) : PX_OK;
    if (prv != PX_OK) {
        snprintf(why, whylen, "cannot make this side's hello: %s", px_errname(prv));
        *refuse = PLEXUS__REFUSE__REASON__UNSPECIFIED;
        plexus__handshake__free_unpacked(m, NULL);
        return prv;
    }
    transcript(hs, data, n);
    /* Keep the Hello, drop the wrapper. */
    m->hello = NULL;
    m->msg_case = PLEXUS__HANDSHAKE__MSG__NOT_SET;
    plexus__handshake__free_unpacked(m, NULL);
    hs->peer = h;
    return PX_OK;
}

static void mix(const pxn_hs *hs, const uint8_t kx[32], uint8_t out[32]) {
    uint8_t in[64];
    memcpy(in, kx, 32);
    memcpy(in + 32, hs->th, 32);
    crypto_generichash(out, 32, in, sizeof(in), hs->self->cluster_key, PX_SECRET_BYTES);
    sodium_memzero(in, sizeof(in));
}

px_err pxn_hs_keys(const pxn_hs *hs, pxn_cipher *rx, pxn_cipher *tx) {
    if (hs->peer == NULL) {
        return PX_EINVAL;
    }
    uint8_t r[32], t[32];
    int rv = hs->role == PXN_DIALER
                 ? crypto_kx_client_session_keys(r, t, hs->kx_pk, hs->kx_sk, hs->peer->kx_pk.data)
                 : crypto_kx_server_session_keys(r, t, hs->kx_pk, hs->kx_sk, hs->peer->kx_pk.data);
    if (rv != 0) {
        return PX_EAUTH; /* the peer's kx key is a weak point */
    }
    memset(rx, 0, sizeof(*rx));
    memset(tx, 0, sizeof(*tx));
    mix(hs, r, rx->key);
    mix(hs, t, tx->key);
    sodium_memzero(r, sizeof(r));
    sodium_memzero(t, sizeof(t));
    return PX_OK;
}

#define AUTH_CTX "plexus/auth/v1"

static void auth_msg(const pxn_hs *hs, int role, uint8_t out[sizeof(AUTH_CTX) - 1 + 1 + 32]) {
    size_t k = sizeof(AUTH_CTX) - 1;
    memcpy(out, AUTH_CTX, k);
    out[k] = (uint8_t)role;
    memcpy(out + k + 1, hs->th, 32);
}

void pxn_hs_sign(const pxn_hs *hs, uint8_t sig[64]) {
    uint8_t m[sizeof(AUTH_CTX) - 1 + 1 + 32];
    auth_msg(hs, hs->role, m);
    crypto_sign_detached(sig, NULL, m, sizeof(m), hs->self->id->sk);
}

px_err pxn_hs_verify(const pxn_hs *hs, const uint8_t *sig, size_t siglen) {
    if (hs->peer == NULL || sig == NULL || siglen != 64) {
        return PX_EAUTH;
    }
    uint8_t m[sizeof(AUTH_CTX) - 1 + 1 + 32];
    auth_msg(hs, hs->role == PXN_DIALER ? PXN_LISTENER : PXN_DIALER, m);
    return crypto_sign_verify_detached(sig, m, sizeof(m), hs->peer->identity_pk.data) == 0
               ? PX_OK
               : PX_EAUTH;
}

uint8_t *pxn_refuse_pack(Plexus__Refuse__Reason reason, const char *detail, size_t *len) {
    Plexus__Refuse r = PLEXUS__REFUSE__INIT;
    r.reason = reason;
    r.detail = (char *)(uintptr_t)(detail ? detail : "");
    r.version = PX_WIRE_VERSION;
    r.min_version = PX_WIRE_MIN_VERSION;
    Plexus__Handshake m = PLEXUS__HANDSHAKE__INIT;
    m.msg_case = PLEXUS__HANDSHAKE__MSG_REFUSE;
    m.refuse = &r;
    *len = plexus__handshake__get_packed_size(&m);
    uint8_t *b = malloc(*len ? *len : 1);
    if (b != NULL) {
        plexus__handshake__pack(&m, b);
    }
    return b;
}

/* ---- the handshake's bytes on the wire ---- */

uint8_t *pxn_hello_wire(const pxn_hs *hs, size_t *len) {
    if (hs->mine == NULL) {
        return NULL;
    }
    *len = PXN_PREAMBLE_LEN + PXN_LEN_BYTES + hs->mine_len;
    uint8_t *b = malloc(*len);
    if (b != NULL) {
        memcpy(b, PXN_PREAMBLE, PXN_PREAMBLE_LEN);
        pxn_put_u32(b + PXN_PREAMBLE_LEN, (uint32_t)hs->mine_len);
        memcpy(b + PXN_PREAMBLE_LEN + PXN_LEN_BYTES, hs->mine, hs->mine_len);
    }
    return b;
}

uint8_t *pxn_refuse_wire(Plexus__Refuse__Reason reason, const char *detail, bool preamble,
                         size_t *len) {
    size_t n;
    uint8_t *r = pxn_refuse_pack(reason, detail, &n);
    if (r == NULL) {
        return NULL;
    }
    size_t pre = preamble ? PXN_PREAMBLE_LEN : 0;
    uint8_t *b = malloc(pre + PXN_LEN_BYTES + n);
    if (b != NULL) {
        memcpy(b, PXN_PREAMBLE, pre);
        pxn_put_u32(b + pre, (uint32_t)n);
        memcpy(b + pre + PXN_LEN_BYTES, r, n);
        *len = pre + PXN_LEN_BYTES + n;
    }
    free(r);
    return b;
}

uint8_t *pxn_auth_seal(const pxn_hs *hs, pxn_cipher *tx, size_t *len) {
    uint8_t sig[64];
    pxn_hs_sign(hs, sig);
    Plexus__Auth au = PLEXUS__AUTH__INIT;
    au.sig = (ProtobufCBinaryData){sizeof(sig), sig};
    Plexus__Frame f = PLEXUS__FRAME__INIT;
    f.body_case = PLEXUS__FRAME__BODY_AUTH;
    f.auth = &au;
    size_t n = plexus__frame__get_packed_size(&f);
    bool plain = tx->plaintext;
    tx->plaintext = false; /* Auth is always sealed */
    *len = pxn_sealed_len(tx, n);
    uint8_t *b = malloc(*len);
    if (b != NULL) {
        plexus__frame__pack(&f, b + PXN_LEN_BYTES);
        pxn_seal(tx, b + PXN_LEN_BYTES, n, b);
    }
    tx->plaintext = plain;
    return b;
}

px_err pxn_auth_check(const pxn_hs *hs, const uint8_t *pt, size_t n) {
    Plexus__Frame *f = plexus__frame__unpack(NULL, n, pt);
    px_err rv = f != NULL && f->body_case == PLEXUS__FRAME__BODY_AUTH && f->auth != NULL
                    ? pxn_hs_verify(hs, f->auth->sig.data, f->auth->sig.len)
                    : PX_EAUTH;
    if (f != NULL) {
        plexus__frame__free_unpacked(f, NULL);
    }
    return rv;
}

/* ---- nesting depth of a protobuf payload ---- */

/* Reads a varint at *p (< end) into *v. False if it runs off the end or
 * past 10 bytes. */
static bool varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
    uint64_t r = 0;
    for (int i = 0; i < 10 && *p < end; i++) {
        uint8_t b = *(*p)++;
        r |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *v = r;
            return true;
        }
    }
    return false;
}

static bool depth_ok(const ProtobufCMessageDescriptor *d, const uint8_t *p, const uint8_t *end,
                     unsigned left) {
    while (p < end) {
        uint64_t key, n;
        if (!varint(&p, end, &key)) {
            return true; /* malformed: the decoder refuses it */
        }
        switch (key & 7) {
        case 0:
            if (!varint(&p, end, &n)) {
                return true;
            }
            break;
        case 1:
            p += (size_t)(end - p) < 8 ? (size_t)(end - p) : 8;
            break;
        case 5:
            p += (size_t)(end - p) < 4 ? (size_t)(end - p) : 4;
            break;
        case 2: {
            if (!varint(&p, end, &n) || n > (uint64_t)(end - p)) {
                return true;
            }
            const ProtobufCFieldDescriptor *f =
                d != NULL && key >> 3 <= UINT32_MAX
                    ? protobuf_c_message_descriptor_get_field(d, (unsigned)(key >> 3))
                    : NULL;
            if (f != NULL && f->type == PROTOBUF_C_TYPE_MESSAGE) {
                if (left == 0 || !depth_ok(f->descriptor, p, p + n, left - 1)) {
                    return false;
                }
            }
            p += n;
            break;
        }
        default:
            return true; /* groups: protobuf-c refuses them */
        }
    }
    return true;
}

bool pxn_pb_depth_ok(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len,
                     unsigned max_depth) {
    return data == NULL || depth_ok(d, data, data + len, max_depth);
}
