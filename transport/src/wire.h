/*
 * wire.h — the byte-level protocol of a node link, without any I/O:
 * stream framing, frame encryption and the handshake's cryptography.
 * proto/README.md is the prose version of this file; the test vectors in
 * tests/transport/ pin both.
 *
 * A connection carries, in each direction:
 *   preamble  8 bytes "plexus\0\1"
 *   hs frame  u32le n | n bytes of Handshake (protobuf, plaintext), n <= 4096
 *   frames    u32le n | n bytes of ciphertext (n <= max_frame, n >= 16)
 * Each ciphertext is XChaCha20-Poly1305 (IETF) of a packed Frame, with the
 * 4 length bytes as additional data and nonce = u64le counter || 16 zero
 * bytes; the counter starts at 0 in each direction and goes up by one per
 * frame, so a replayed, dropped, reordered or foreign frame fails to open.
 * In plaintext mode (benchmarks only) the ciphertext is the packed Frame
 * itself.
 */
#ifndef PXN_WIRE_H
#define PXN_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <plexus/msg.h>
#include <plexus/transport.h>

#include "plexus/plexus.pb-c.h"

#define PXN_PREAMBLE "plexus\0\1"
#define PXN_PREAMBLE_LEN 8
#define PXN_LEN_BYTES 4
#define PXN_TAG_BYTES 16
#define PXN_HS_MAX 4096
#define PXN_KEY_BYTES 32

enum { PXN_DIALER = 1, PXN_LISTENER = 2 };

static inline uint32_t pxn_get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline void pxn_put_u32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* An Envelope's refs travel as two fixed64 each (plexus.proto): node id
 * << 32 | node incarnation, and actor slot << 32 | actor incarnation. A nil
 * ref (a send from outside an actor) is two zeros, which are not encoded. */
static inline void pxn_env_set_to(Plexus__Envelope *v, px_ref r) {
    v->to_node = (uint64_t)r.node << 32 | r.node_inc;
    v->to_actor = (uint64_t)r.id << 32 | r.inc;
}
static inline void pxn_env_set_from(Plexus__Envelope *v, px_ref r) {
    bool nil = px_ref_is_nil(r);
    v->from_node = nil ? 0 : (uint64_t)r.node << 32 | r.node_inc;
    v->from_actor = nil ? 0 : (uint64_t)r.id << 32 | r.inc;
}
static inline px_ref pxn_ref_of_pair(uint64_t node, uint64_t actor) {
    return (px_ref){(uint32_t)(node >> 32), (uint32_t)node, (uint32_t)(actor >> 32),
                    (uint32_t)actor};
}
static inline px_ref pxn_env_to(const Plexus__Envelope *v) {
    return pxn_ref_of_pair(v->to_node, v->to_actor);
}
static inline px_ref pxn_env_from(const Plexus__Envelope *v) {
    return pxn_ref_of_pair(v->from_node, v->from_actor);
}

/* One direction's frame protection. */
typedef struct pxn_cipher {
    uint8_t key[PXN_KEY_BYTES];
    uint64_t ctr;   /* next frame's nonce */
    bool plaintext; /* benchmarks only */
} pxn_cipher;

/* Bytes a sealed frame of n plaintext bytes takes on the wire. */
static inline size_t pxn_sealed_len(const pxn_cipher *c, size_t n) {
    return PXN_LEN_BYTES + n + (c->plaintext ? 0 : PXN_TAG_BYTES);
}

/* Seals pt[0..n) into out (room for pxn_sealed_len): length header then
 * ciphertext. pt and out+4 may be the same buffer. Returns bytes written. */
size_t pxn_seal(pxn_cipher *c, const uint8_t *pt, size_t n, uint8_t *out);

/* Opens the frame whose header is hdr and whose n ciphertext bytes are ct,
 * into pt (room for n; may equal ct). *ptlen gets the plaintext length.
 * PX_EAUTH if it does not authenticate (tampered, replayed, reordered,
 * foreign key), PX_EPROTO if n is shorter than a tag. */
px_err pxn_open(pxn_cipher *c, const uint8_t hdr[PXN_LEN_BYTES], const uint8_t *ct, size_t n,
                uint8_t *pt, size_t *ptlen);

/* What a node says about itself in its Hello. */
typedef struct pxn_self {
    const char *node_name;
    uint32_t node_id, node_inc;
    const px_identity *id;
    const uint8_t *cluster_key; /* PX_SECRET_BYTES */
    uint32_t max_frame;
    uint64_t max_msg; /* largest payload accepted (chunked); 0 = not said */
    const char *advertise;
    bool plaintext; /* frames after Auth unencrypted (benchmarks); Auth never is */
    bool credit;    /* as a dialer of BULK: ask the listener for Credit frames */
} pxn_self;

/* One side of a handshake. */
typedef struct pxn_hs {
    int role;
    uint32_t lane; /* PXN_LANE_ANY until the dialer's Hello names it */
    const pxn_self *self;
    uint8_t nonce[32];
    uint8_t kx_pk[32], kx_sk[32];
    uint8_t *mine; /* my packed Handshake */
    size_t mine_len;
    uint8_t th[32]; /* transcript hash, once the peer's Hello is in */
    Plexus__Hello *peer; /* the peer's Hello (owned) */
} pxn_hs;

/* A listener learns a connection's lane from the dialer's Hello. */
#define PXN_LANE_ANY UINT32_MAX

/* Starts a handshake for a connection of `lane` (a listener may pass
 * PXN_LANE_ANY: its Hello is then made by pxn_hs_peer, for the lane the
 * dialer named): makes the ephemeral kx key pair and this side's Hello.
 * kx_seed and nonce (32 bytes each) make it deterministic for test
 * vectors; NULL = random. */
px_err pxn_hs_init(pxn_hs *hs, int role, const pxn_self *self, uint32_t lane,
                   const uint8_t *kx_seed, const uint8_t *nonce);
void pxn_hs_fini(pxn_hs *hs);

/* Takes the peer's packed Handshake (n bytes): checks it (a Refuse becomes
 * PX_ECLOSED with its reason in why; bad fields PX_EPROTO; no common
 * version PX_EVERSION; a Hello on another lane than hs's, or a node id
 * that is not px_node_id of the name, PX_EPROTO) and computes the
 * transcript hash. `lane` is the lane expected, or PXN_LANE_ANY (any of
 * the three node-link lanes, never LANE_ADMIN; hs must then have been
 * started with PXN_LANE_ANY). The admin server passes LANE_ADMIN, so a
 * node link dialling it is refused, as an admin client dialling a node
 * link's listener is. *refuse is the Refuse reason to send back, or
 * UNSPECIFIED when nothing should be sent (the peer refused us). why gets
 * a one-line reason for the log. */
px_err pxn_hs_peer(pxn_hs *hs, const uint8_t *data, size_t n, uint32_t lane,
                   Plexus__Refuse__Reason *refuse, char *why, size_t whylen);

/* Session keys for this side (after pxn_hs_peer): rx opens the peer's
 * frames, tx seals ours. */
px_err pxn_hs_keys(const pxn_hs *hs, pxn_cipher *rx, pxn_cipher *tx);

/* This side's Auth signature, and the check of the peer's. */
void pxn_hs_sign(const pxn_hs *hs, uint8_t sig[64]);
px_err pxn_hs_verify(const pxn_hs *hs, const uint8_t *sig, size_t siglen);

/* True for a name a Hello may carry: 1..63 chars of [A-Za-z0-9._-]. */
bool pxn_name_ok(const char *s);

/* The handshake's bytes as they go on the wire, for code that writes them
 * in one piece (admin.c; the test's fake peers). Each returns a new buffer
 * (caller owns it; free it) and its size in *len, or NULL when out of
 * memory.
 *  - pxn_hello_wire: preamble || u32le n || this side's packed Handshake
 *    (NULL too before the Hello exists: a listener started with
 *    PXN_LANE_ANY has none until pxn_hs_peer).
 *  - pxn_refuse_wire: [preamble] || u32le n || packed Handshake{refuse};
 *    the preamble when this side has sent nothing yet (a listener).
 *  - pxn_auth_seal: this side's Frame{auth} sealed with tx (always
 *    encrypted, also in plaintext mode): u32le n || ciphertext. Advances
 *    tx's counter (the Auth frame is counter 0). */
uint8_t *pxn_hello_wire(const pxn_hs *hs, size_t *len);
uint8_t *pxn_refuse_wire(Plexus__Refuse__Reason reason, const char *detail, bool preamble,
                         size_t *len);
uint8_t *pxn_auth_seal(const pxn_hs *hs, pxn_cipher *tx, size_t *len);

/* Checks the peer's first frame, already opened (pt[0..n)): it must be a
 * Frame{auth} whose signature verifies (pxn_hs_verify). PX_OK, else
 * PX_EAUTH (not an Auth frame, does not decode, bad signature). */
px_err pxn_auth_check(const pxn_hs *hs, const uint8_t *pt, size_t n);

/* How deep protobuf payloads may nest. protobuf-c's unpack recurses once
 * per level with no limit of its own: a 34 KB message nested 10,000 deep
 * overflows an 8 MB stack. */
#define PXN_PB_MAX_DEPTH 64

/* True if the packed message data[0..len) of type d nests its submessages
 * at most max_depth deep (walked without decoding; recursion bounded by
 * max_depth). Malformed input passes: the decoder refuses it. */
bool pxn_pb_depth_ok(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len,
                     unsigned max_depth);

/* Packs a Refuse as a Handshake into a new buffer (free it). */
uint8_t *pxn_refuse_pack(Plexus__Refuse__Reason reason, const char *detail, size_t *len);

#endif
