/*
 * fuzz_handshake.c — libFuzzer target: the peer's handshake frame and its
 * Auth signature.
 *
 * Input: u16le h | h bytes: the peer's packed Handshake | the rest: the
 * signature its Auth frame would carry (any length). h larger than what
 * follows takes all of it. Each part is copied into a buffer of exactly its
 * size, so ASan sees a read past either.
 *
 * For each role (beta listening to the input as alpha's Hello, alpha
 * dialing and reading it as beta's answer), with the fixture's seeds
 * (fuzz.h): pxn_hs_init, then pxn_hs_peer. The listener runs twice: for
 * the NORMAL lane, and for PXN_LANE_ANY as link.c's listener does (its
 * Hello made for the lane the input names). If accepted: pxn_hs_keys,
 * pxn_hs_verify of the input's signature, and the checks that need no
 * forgery — if the
 * Hello carries the expected peer's kx key, that peer derives the matching
 * keys; if it carries the peer's identity key, the peer's genuine
 * signature verifies and a flipped bit of it does not; our own signature
 * verifies on the peer's side. If refused: the Refuse we would send packs,
 * and the peer reads it as the refusal it is, without answering it.
 */
#include <string.h>

#include "fuzz.h"

static uint8_t *dup_bytes(const uint8_t *p, size_t n) {
    uint8_t *b = malloc(n ? n : 1);
    PXF_CHECK(b != NULL);
    if (n > 0) {
        memcpy(b, p, n);
    }
    return b;
}

/* The other side of hs as the fixture makes it: same transcript, its own
 * seeds; its view of our Hello is `ours` (kx and identity keys). */
static void counterpart(const pxn_hs *hs, pxn_hs *o, Plexus__Hello *ours) {
    const pxf_env *e = pxf_env_get();
    const pxn_hs *vec = hs->role == PXN_DIALER ? &e->l : &e->d;
    memset(o, 0, sizeof(*o));
    o->role = vec->role;
    o->self = vec->self;
    memcpy(o->kx_pk, vec->kx_pk, 32);
    memcpy(o->kx_sk, vec->kx_sk, 32);
    memcpy(o->th, hs->th, 32);
    *ours = (Plexus__Hello)PLEXUS__HELLO__INIT;
    ours->kx_pk = (ProtobufCBinaryData){32, (uint8_t *)(uintptr_t)hs->kx_pk};
    ours->identity_pk =
        (ProtobufCBinaryData){PX_PUBKEY_BYTES, (uint8_t *)(uintptr_t)hs->self->id->pk};
    o->peer = ours;
}

static void accepted(pxn_hs *hs, const uint8_t *sig, size_t siglen) {
    const Plexus__Hello *h = hs->peer;
    PXF_CHECK(h != NULL && h->identity_pk.len == 32 && h->kx_pk.len == 32 && h->nonce.len == 32);
    pxn_hs o;
    Plexus__Hello ours;
    counterpart(hs, &o, &ours);

    pxn_cipher rx, tx;
    px_err kv = pxn_hs_keys(hs, &rx, &tx);
    PXF_CHECK(kv == PX_OK || kv == PX_EAUTH);
    if (kv == PX_OK) {
        PXF_CHECK(rx.ctr == 0 && tx.ctr == 0 && !rx.plaintext && !tx.plaintext);
        PXF_CHECK(memcmp(rx.key, tx.key, PXN_KEY_BYTES) != 0);
        if (memcmp(h->kx_pk.data, o.kx_pk, 32) == 0) {
            pxn_cipher orx, otx;
            PXF_CHECK(pxn_hs_keys(&o, &orx, &otx) == PX_OK);
            PXF_CHECK(memcmp(orx.key, tx.key, PXN_KEY_BYTES) == 0);
            PXF_CHECK(memcmp(otx.key, rx.key, PXN_KEY_BYTES) == 0);
        }
    }

    px_err sv = pxn_hs_verify(hs, siglen ? sig : NULL, siglen);
    PXF_CHECK(sv == PX_OK || sv == PX_EAUTH);
    PXF_CHECK(siglen == 64 || sv == PX_EAUTH);

    if (memcmp(h->identity_pk.data, o.self->id->pk, 32) == 0) {
        uint8_t genuine[64];
        pxn_hs_sign(&o, genuine);
        PXF_CHECK(pxn_hs_verify(hs, genuine, 64) == PX_OK);
        PXF_CHECK(pxn_hs_verify(hs, genuine, 63) == PX_EAUTH);
        genuine[siglen % 64] ^= 0x01;
        PXF_CHECK(pxn_hs_verify(hs, genuine, 64) == PX_EAUTH);
    }
    uint8_t mine[64];
    pxn_hs_sign(hs, mine);
    PXF_CHECK(pxn_hs_verify(&o, mine, 64) == PX_OK);
}

static void refused(const pxn_hs *hs, px_err rv, Plexus__Refuse__Reason r, const char *why) {
    PXF_CHECK(hs->peer == NULL);
    PXF_CHECK(why[0] != '\0');
    if (r == PLEXUS__REFUSE__REASON__UNSPECIFIED) {
        /* The input was a refusal: it is never answered. */
        PXF_CHECK(rv == PX_ECLOSED || rv == PX_EVERSION);
        return;
    }
    PXF_CHECK(rv == PX_EPROTO || rv == PX_EVERSION);
    PXF_CHECK((rv == PX_EVERSION) == (r == PLEXUS__REFUSE__REASON__VERSION));
    size_t rl = 0;
    uint8_t *rb = pxn_refuse_pack(r, why, &rl);
    PXF_CHECK(rb != NULL && rl > 0 && rl <= PXN_HS_MAX);
    pxn_hs o;
    pxf_hs_start(&o, hs->role == PXN_DIALER ? PXN_LISTENER : PXN_DIALER,
                 PLEXUS__LANE__LANE_NORMAL);
    Plexus__Refuse__Reason r2 = PLEXUS__REFUSE__REASON__BAD_HELLO;
    char why2[512] = "";
    px_err rv2 = pxn_hs_peer(&o, rb, rl, PLEXUS__LANE__LANE_NORMAL, &r2, why2, sizeof(why2));
    PXF_CHECK(rv2 == (r == PLEXUS__REFUSE__REASON__VERSION ? PX_EVERSION : PX_ECLOSED));
    PXF_CHECK(r2 == PLEXUS__REFUSE__REASON__UNSPECIFIED);
    PXF_CHECK(o.peer == NULL);
    PXF_CHECK(strstr(why2, "peer refused the link") != NULL);
    pxn_hs_fini(&o);
    free(rb);
}

static void run_role(int role, uint32_t lane, const uint8_t *hello, size_t n, const uint8_t *sig,
                     size_t siglen) {
    pxn_hs hs;
    pxf_hs_start(&hs, role, lane);
    Plexus__Refuse__Reason r = (Plexus__Refuse__Reason)-1;
    char why[300] = ""; /* link.c's size */
    px_err rv = pxn_hs_peer(&hs, hello, n, lane, &r, why, sizeof(why));
    PXF_CHECK(memchr(why, '\0', sizeof(why)) != NULL);
    if (rv == PX_OK) {
        PXF_CHECK(hs.mine != NULL && hs.mine_len > 0);
        accepted(&hs, sig, siglen);
    } else {
        refused(&hs, rv, r, why);
    }
    pxn_hs_fini(&hs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) {
        return 0;
    }
    size_t h = (size_t)data[0] | (size_t)data[1] << 8;
    data += 2;
    size -= 2;
    if (h > size) {
        h = size;
    }
    uint8_t *hello = dup_bytes(data, h);
    uint8_t *sig = dup_bytes(data + h, size - h);
    run_role(PXN_LISTENER, PLEXUS__LANE__LANE_NORMAL, hello, h, sig, size - h);
    run_role(PXN_LISTENER, PXN_LANE_ANY, hello, h, sig, size - h);
    run_role(PXN_DIALER, PLEXUS__LANE__LANE_NORMAL, hello, h, sig, size - h);
    free(hello);
    free(sig);
    return 0;
}
