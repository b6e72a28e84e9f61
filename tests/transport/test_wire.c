/* Tests for transport/src/keys.c and wire.c: identity and secret files,
 * frame sealing (tamper, replay, reorder, truncation, foreign key), the
 * handshake (keys agree, identity proven, wrong secret, version refusal,
 * bad hellos) and the test vectors in vectors.txt that pin the wire bytes.
 *
 * PX_WRITE_VECTORS=path rewrites the vectors file (only when the wire
 * format changes on purpose; then update proto/README.md too). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <sodium.h>

#include "wire.h"

#ifndef PXT_VECTORS
#error "PXT_VECTORS (path of vectors.txt) must be defined by the build"
#endif

/* --- a temporary directory per test ------------------------------------ */

static char tdir[64];

static void tdir_make(void) {
    snprintf(tdir, sizeof tdir, "/tmp/pxt-wire-XXXXXX");
    cr_assert_not_null(mkdtemp(tdir));
}

static void tdir_path(char *out, size_t len, const char *name) {
    snprintf(out, len, "%s/%s", tdir, name);
}

static void tdir_remove(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tdir);
    cr_assert_eq(system(cmd), 0);
}

static void write_file(const char *path, const char *text, mode_t mode) {
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    fputs(text, f);
    fclose(f);
    cr_assert_eq(chmod(path, mode), 0);
}

/* --- identity and secret files ------------------------------------------ */

Test(wire_keys, identity_is_created_0600_and_reloads_to_the_same_keys) {
    tdir_make();
    char path[128], err[256] = "";
    tdir_path(path, sizeof path, "node.key");
    px_identity a, b;
    cr_assert_eq(px_identity_load(path, false, &a, err, sizeof err), PX_ENOENT);
    cr_assert(strstr(err, "no such file") != NULL, "%s", err);
    cr_assert_eq(px_identity_load(path, true, &a, err, sizeof err), PX_OK, "%s", err);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600, "mode %o", st.st_mode & 0777);
    cr_assert_eq(px_identity_load(path, true, &b, err, sizeof err), PX_OK, "%s", err);
    cr_assert_arr_eq(a.pk, b.pk, sizeof a.pk);
    cr_assert_arr_eq(a.sk, b.sk, sizeof a.sk);

    /* The key really signs. */
    uint8_t sig[64];
    crypto_sign_detached(sig, NULL, (const uint8_t *)"x", 1, b.sk);
    cr_assert_eq(crypto_sign_verify_detached(sig, (const uint8_t *)"x", 1, a.pk), 0);

    /* A second node gets a different key. */
    char path2[128];
    tdir_path(path2, sizeof path2, "other.key");
    px_identity c;
    cr_assert_eq(px_identity_load(path2, true, &c, err, sizeof err), PX_OK);
    cr_assert(memcmp(a.pk, c.pk, sizeof a.pk) != 0);
    tdir_remove();
}

Test(wire_keys, identity_files_that_are_open_to_others_or_garbage_are_refused) {
    tdir_make();
    char path[128], err[256] = "";
    tdir_path(path, sizeof path, "node.key");
    px_identity a;
    cr_assert_eq(px_identity_load(path, true, &a, err, sizeof err), PX_OK);
    cr_assert_eq(chmod(path, 0644), 0);
    cr_assert_eq(px_identity_load(path, false, &a, err, sizeof err), PX_EAUTH);
    cr_assert(strstr(err, "chmod 600") != NULL, "%s", err);

    write_file(path, "plexus-identity-v1 ed25519\nnot base64 at all!\n", 0600);
    cr_assert_eq(px_identity_load(path, false, &a, err, sizeof err), PX_EPROTO);
    cr_assert(strstr(err, "not a plexus identity file") != NULL, "%s", err);
    write_file(path, "", 0600);
    cr_assert_eq(px_identity_load(path, true, &a, err, sizeof err), PX_EPROTO);
    write_file(path,
               "plexus-identity-v1 ed25519\nAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n", 0600);
    cr_assert_eq(px_identity_load(path, false, &a, err, sizeof err), PX_OK, "%s", err);
    write_file(path,
               "plexus-identity-v1 ed25519\nAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=junk\n",
               0600);
    cr_assert_eq(px_identity_load(path, false, &a, err, sizeof err), PX_EPROTO, "junk after the seed");
    write_file(path, "plexus-identity-v1 ed25519\nAAAA\n", 0600); /* 3 bytes, not 32 */
    cr_assert_eq(px_identity_load(path, false, &a, err, sizeof err), PX_EPROTO);
    cr_assert_eq(px_identity_load(tdir, false, &a, err, sizeof err), PX_EIO, "a directory");
    cr_assert_eq(px_identity_load(NULL, false, &a, err, sizeof err), PX_EINVAL);

    char nodir[160];
    snprintf(nodir, sizeof nodir, "%s/missing/dir/node.key", tdir);
    cr_assert_eq(px_identity_load(nodir, true, &a, err, sizeof err), PX_EIO);
    cr_assert(strstr(err, "cannot create") != NULL, "%s", err);
    tdir_remove();
}

Test(wire_keys, cluster_secret_needs_16_bytes_and_ignores_trailing_whitespace) {
    tdir_make();
    char path[128], err[256] = "";
    tdir_path(path, sizeof path, "secret");
    uint8_t k1[32], k2[32], k3[32];
    write_file(path, "short\n", 0600);
    cr_assert_eq(px_secret_load(path, k1, err, sizeof err), PX_EINVAL);
    cr_assert(strstr(err, "shorter than 16") != NULL, "%s", err);
    write_file(path, "correct horse battery staple\n", 0600);
    cr_assert_eq(px_secret_load(path, k1, err, sizeof err), PX_OK, "%s", err);
    cr_assert_eq(px_secret_from_bytes("correct horse battery staple", 28, k2), PX_OK);
    cr_assert_arr_eq(k1, k2, 32);
    cr_assert_eq(px_secret_from_bytes("correct horse battery stapler", 29, k3), PX_OK);
    cr_assert(memcmp(k1, k3, 32) != 0);
    char missing[160];
    tdir_path(missing, sizeof missing, "nope");
    cr_assert_eq(px_secret_load(missing, k1, err, sizeof err), PX_ENOENT);
    cr_assert(strstr(err, "cannot read") != NULL, "%s", err);
    tdir_remove();
}

Test(wire_keys, public_keys_round_trip_as_base64) {
    px_identity id;
    uint8_t seed[32] = {1, 2, 3};
    cr_assert_eq(sodium_init() >= 0, 1);
    crypto_sign_seed_keypair(id.pk, id.sk, seed);
    char b64[PX_PUBKEY_B64_LEN];
    px_pubkey_format(id.pk, b64);
    cr_assert_eq(strlen(b64), 44);
    uint8_t back[32];
    cr_assert_eq(px_pubkey_parse(b64, back), PX_OK);
    cr_assert_arr_eq(back, id.pk, 32);
    cr_assert_eq(px_pubkey_parse("AAAA", back), PX_EINVAL);
    char junk[64];
    snprintf(junk, sizeof junk, "%s!", b64);
    cr_assert_eq(px_pubkey_parse(junk, back), PX_EINVAL);
}

/* --- frames ---------------------------------------------------------------- */

static void pair_ciphers(pxn_cipher *tx, pxn_cipher *rx) {
    memset(tx, 0, sizeof *tx);
    for (int i = 0; i < 32; i++) {
        tx->key[i] = (uint8_t)(i * 7 + 1);
    }
    *rx = *tx;
}

/* Opens a sealed frame as a receiver would: header, then the rest. */
static px_err open_frame(pxn_cipher *rx, const uint8_t *wire, size_t n, uint8_t *pt,
                         size_t *ptlen) {
    cr_assert_geq(n, 4);
    uint32_t len = pxn_get_u32(wire);
    cr_assert_eq(len, n - 4);
    return pxn_open(rx, wire, wire + 4, len, pt, ptlen);
}

Test(wire_frame, sealed_frames_open_in_order_and_only_in_order) {
    pxn_cipher tx, rx;
    pair_ciphers(&tx, &rx);
    uint8_t f[3][64], pt[64];
    size_t n[3], pl = 0;
    for (int i = 0; i < 3; i++) {
        char msg[16];
        snprintf(msg, sizeof msg, "frame %d", i);
        n[i] = pxn_seal(&tx, (const uint8_t *)msg, strlen(msg), f[i]);
        cr_assert_eq(n[i], pxn_sealed_len(&tx, strlen(msg)));
    }
    /* Frame 1 before frame 0 (reordered): refused; the counter stays. */
    cr_assert_eq(open_frame(&rx, f[1], n[1], pt, &pl), PX_EAUTH);
    cr_assert_eq(open_frame(&rx, f[0], n[0], pt, &pl), PX_OK);
    cr_assert_eq(pl, 7);
    cr_assert_arr_eq(pt, "frame 0", 7);
    /* Frame 0 again (replayed): refused. */
    cr_assert_eq(open_frame(&rx, f[0], n[0], pt, &pl), PX_EAUTH);
    cr_assert_eq(open_frame(&rx, f[1], n[1], pt, &pl), PX_OK);
    cr_assert_arr_eq(pt, "frame 1", 7);
    cr_assert_eq(open_frame(&rx, f[2], n[2], pt, &pl), PX_OK);
    cr_assert_arr_eq(pt, "frame 2", 7);
}

Test(wire_frame, every_flipped_bit_and_every_truncation_is_refused) {
    pxn_cipher tx, rx0;
    pair_ciphers(&tx, &rx0);
    const char *msg = "a message worth protecting";
    uint8_t f[128], g[128], pt[128];
    size_t n = pxn_seal(&tx, (const uint8_t *)msg, strlen(msg), f), pl;
    for (size_t byte = 0; byte < n; byte++) {
        for (int bit = 0; bit < 8; bit++) {
            memcpy(g, f, n);
            g[byte] ^= (uint8_t)(1u << bit);
            pxn_cipher rx = rx0;
            /* A receiver takes the (maybe flipped) length at its word: it
             * opens that many bytes, or waits for more than there are. */
            uint32_t len = pxn_get_u32(g);
            size_t k = len < n - 4 ? len : n - 4;
            px_err e = pxn_open(&rx, g, g + 4, k, pt, &pl);
            cr_assert_neq(e, PX_OK, "flip of byte %zu bit %d opened", byte, bit);
            cr_assert_eq(rx.ctr, 0, "a refused frame does not advance the counter");
        }
    }
    for (size_t k = 0; k < n - 4; k++) {
        pxn_cipher rx = rx0;
        px_err e = pxn_open(&rx, f, f + 4, k, pt, &pl);
        cr_assert(e == PX_EAUTH || (k < PXN_TAG_BYTES && e == PX_EPROTO),
                  "truncated to %zu: %s", k, px_errname(e));
    }
    pxn_cipher rx = rx0;
    rx.key[0] ^= 1; /* another link's key */
    cr_assert_eq(pxn_open(&rx, f, f + 4, n - 4, pt, &pl), PX_EAUTH);
    rx = rx0;
    cr_assert_eq(pxn_open(&rx, f, f + 4, n - 4, pt, &pl), PX_OK);
    cr_assert_arr_eq(pt, msg, strlen(msg));
}

Test(wire_frame, sealing_in_place_works_and_plaintext_mode_is_the_identity) {
    pxn_cipher tx, rx;
    pair_ciphers(&tx, &rx);
    uint8_t buf[64];
    memcpy(buf + 4, "in place", 8);
    size_t n = pxn_seal(&tx, buf + 4, 8, buf);
    size_t pl;
    cr_assert_eq(pxn_open(&rx, buf, buf + 4, n - 4, buf + 4, &pl), PX_OK);
    cr_assert_arr_eq(buf + 4, "in place", 8);

    tx.plaintext = rx.plaintext = true;
    n = pxn_seal(&tx, (const uint8_t *)"clear", 5, buf);
    cr_assert_eq(n, 9);
    cr_assert_arr_eq(buf + 4, "clear", 5);
    cr_assert_eq(pxn_open(&rx, buf, buf + 4, 5, buf + 4, &pl), PX_OK);
    cr_assert_eq(pl, 5);
}

/* --- handshake --------------------------------------------------------------- */

typedef struct node {
    px_identity id;
    uint8_t key[32];
    pxn_self self;
} node;

static void node_make(node *n, const char *name, uint8_t seed_byte, const char *secret) {
    cr_assert(sodium_init() >= 0);
    uint8_t seed[32];
    memset(seed, seed_byte, sizeof seed);
    crypto_sign_seed_keypair(n->id.pk, n->id.sk, seed);
    cr_assert_eq(px_secret_from_bytes(secret, strlen(secret), n->key), PX_OK);
    n->self = (pxn_self){.node_name = name,
                         .node_id = px_node_id(name),
                         .node_inc = 7,
                         .id = &n->id,
                         .cluster_key = n->key,
                         .max_frame = 1 << 20,
                         .advertise = "tcp://127.0.0.1:7001"};
}

#define SECRET "correct horse battery staple"

/* Runs both halves; returns the dialer's view of the listener's hello. */
static void hs_pair(pxn_hs *d, pxn_hs *l, node *nd, node *nl, px_err *ed, px_err *el) {
    cr_assert_eq(pxn_hs_init(d, PXN_DIALER, &nd->self, PLEXUS__LANE__LANE_NORMAL, NULL, NULL),
                 PX_OK);
    cr_assert_eq(pxn_hs_init(l, PXN_LISTENER, &nl->self, PLEXUS__LANE__LANE_NORMAL, NULL, NULL),
                 PX_OK);
    Plexus__Refuse__Reason r;
    char why[256];
    *el = pxn_hs_peer(l, d->mine, d->mine_len, PLEXUS__LANE__LANE_NORMAL, &r, why, sizeof why);
    *ed = pxn_hs_peer(d, l->mine, l->mine_len, PLEXUS__LANE__LANE_NORMAL, &r, why, sizeof why);
}

/* A listener does not know a connection's lane before the dialer's Hello:
 * it answers on the lane the dialer named, and only on one of the three. */
Test(wire_hs, a_listener_takes_the_lane_the_dialer_names) {
    node a, b;
    node_make(&a, "alpha", 1, SECRET);
    node_make(&b, "beta", 2, SECRET);
    Plexus__Refuse__Reason r;
    char why[256];
    pxn_hs d, l;
    cr_assert_eq(pxn_hs_init(&d, PXN_DIALER, &a.self, PXN_LANE_ANY, NULL, NULL), PX_EINVAL,
                 "only a listener may leave the lane open");
    pxn_hs_fini(&d);
    cr_assert_eq(pxn_hs_init(&d, PXN_DIALER, &a.self, PLEXUS__LANE__LANE_BULK, NULL, NULL), PX_OK);
    cr_assert_eq(pxn_hs_init(&l, PXN_LISTENER, &b.self, PXN_LANE_ANY, NULL, NULL), PX_OK);
    cr_assert_null(l.mine, "no hello before the dialer's");
    cr_assert_eq(pxn_hs_peer(&l, d.mine, d.mine_len, PXN_LANE_ANY, &r, why, sizeof why), PX_OK,
                 "%s", why);
    cr_assert_not_null(l.mine);
    cr_assert_eq(l.lane, PLEXUS__LANE__LANE_BULK);
    cr_assert_eq(pxn_hs_peer(&d, l.mine, l.mine_len, PLEXUS__LANE__LANE_BULK, &r, why, sizeof why),
                 PX_OK, "%s", why);
    cr_assert_eq(d.peer->lane, PLEXUS__LANE__LANE_BULK);
    cr_assert_arr_eq(d.th, l.th, 32);
    pxn_hs_fini(&d);
    pxn_hs_fini(&l);

    /* A lane that does not exist is refused. */
    cr_assert_eq(pxn_hs_init(&d, PXN_DIALER, &a.self, 7, NULL, NULL), PX_OK);
    cr_assert_eq(pxn_hs_init(&l, PXN_LISTENER, &b.self, PXN_LANE_ANY, NULL, NULL), PX_OK);
    cr_assert_eq(pxn_hs_peer(&l, d.mine, d.mine_len, PXN_LANE_ANY, &r, why, sizeof why),
                 PX_EPROTO);
    cr_assert(strstr(why, "lane") != NULL, "%s", why);
    pxn_hs_fini(&d);
    pxn_hs_fini(&l);
}

Test(wire_hs, both_sides_derive_matching_keys_and_prove_their_identities) {
    node a, b;
    node_make(&a, "alpha", 1, SECRET);
    node_make(&b, "beta", 2, SECRET);
    pxn_hs d, l;
    px_err ed, el;
    hs_pair(&d, &l, &a, &b, &ed, &el);
    cr_assert_eq(ed, PX_OK);
    cr_assert_eq(el, PX_OK);
    cr_assert_arr_eq(d.th, l.th, 32, "same transcript");
    cr_assert_str_eq(d.peer->node_name, "beta");
    cr_assert_str_eq(l.peer->node_name, "alpha");
    cr_assert_arr_eq(l.peer->identity_pk.data, a.id.pk, 32);

    pxn_cipher drx, dtx, lrx, ltx;
    cr_assert_eq(pxn_hs_keys(&d, &drx, &dtx), PX_OK);
    cr_assert_eq(pxn_hs_keys(&l, &lrx, &ltx), PX_OK);
    cr_assert_arr_eq(dtx.key, lrx.key, 32);
    cr_assert_arr_eq(ltx.key, drx.key, 32);
    cr_assert(memcmp(dtx.key, drx.key, 32) != 0, "each direction has its own key");

    uint8_t sd[64], sl[64];
    pxn_hs_sign(&d, sd);
    pxn_hs_sign(&l, sl);
    cr_assert_eq(pxn_hs_verify(&l, sd, 64), PX_OK);
    cr_assert_eq(pxn_hs_verify(&d, sl, 64), PX_OK);
    /* A signature is bound to its role: the dialer's does not pass as the listener's. */
    cr_assert_eq(pxn_hs_verify(&d, sd, 64), PX_EAUTH);
    sd[10] ^= 4;
    cr_assert_eq(pxn_hs_verify(&l, sd, 64), PX_EAUTH);
    cr_assert_eq(pxn_hs_verify(&l, sd, 63), PX_EAUTH);

    /* Another connection between the same nodes gets other keys. */
    pxn_hs d2, l2;
    hs_pair(&d2, &l2, &a, &b, &ed, &el);
    pxn_cipher d2rx, d2tx;
    cr_assert_eq(pxn_hs_keys(&d2, &d2rx, &d2tx), PX_OK);
    cr_assert(memcmp(d2tx.key, dtx.key, 32) != 0);
    pxn_hs_fini(&d2);
    pxn_hs_fini(&l2);
    pxn_hs_fini(&d);
    pxn_hs_fini(&l);
}

Test(wire_hs, a_node_without_the_cluster_secret_cannot_open_or_seal_a_frame) {
    node a, b;
    node_make(&a, "alpha", 1, SECRET);
    node_make(&b, "mallory", 3, "some other secret entirely");
    pxn_hs d, l;
    px_err ed, el;
    hs_pair(&d, &l, &a, &b, &ed, &el);
    cr_assert_eq(ed, PX_OK); /* hellos are plaintext: both parse */
    cr_assert_eq(el, PX_OK);
    cr_assert(memcmp(d.th, l.th, 32) != 0, "the transcript hash is keyed by the secret");
    pxn_cipher drx, dtx, lrx, ltx;
    cr_assert_eq(pxn_hs_keys(&d, &drx, &dtx), PX_OK);
    cr_assert_eq(pxn_hs_keys(&l, &lrx, &ltx), PX_OK);
    uint8_t f[128], pt[128];
    size_t n = pxn_seal(&dtx, (const uint8_t *)"auth", 4, f), pl;
    cr_assert_eq(pxn_open(&lrx, f, f + 4, n - 4, pt, &pl), PX_EAUTH);
    pxn_hs_fini(&d);
    pxn_hs_fini(&l);
}

Test(wire_hs, a_stolen_hello_does_not_pass_the_identity_check) {
    /* Mallory knows the secret but replays alpha's identity key in her
     * hello: she cannot sign for it. */
    node a, m, b;
    node_make(&a, "alpha", 1, SECRET);
    node_make(&m, "alpha", 4, SECRET);
    node_make(&b, "beta", 2, SECRET);
    m.self.id = &a.id; /* announce alpha's public key... */
    pxn_hs d, l;
    px_err ed, el;
    hs_pair(&d, &l, &m, &b, &ed, &el);
    cr_assert_eq(el, PX_OK);
    px_identity mallory = m.id;
    memcpy(mallory.pk, a.id.pk, 32); /* ...but sign with her own secret key */
    pxn_self ms = m.self;
    ms.id = &mallory;
    d.self = &ms;
    uint8_t sig[64];
    pxn_hs_sign(&d, sig);
    cr_assert_eq(pxn_hs_verify(&l, sig, 64), PX_EAUTH);
    pxn_hs_fini(&d);
    pxn_hs_fini(&l);
}

Test(wire_hs, incompatible_versions_and_bad_hellos_are_refused_with_a_reason) {
    node a;
    node_make(&a, "alpha", 1, SECRET);
    pxn_hs l;
    cr_assert_eq(pxn_hs_init(&l, PXN_LISTENER, &a.self, PLEXUS__LANE__LANE_NORMAL, NULL, NULL),
                 PX_OK);
    Plexus__Refuse__Reason r;
    char why[256];

    /* A hello from the future. */
    uint8_t pk[32] = {0}, kx[32] = {0}, nonce[32] = {0};
    Plexus__Hello h = PLEXUS__HELLO__INIT;
    h.version = PX_WIRE_VERSION + 5;
    h.min_version = PX_WIRE_VERSION + 3;
    h.node_name = "future";
    h.node_id = px_node_id("future");
    h.identity_pk = (ProtobufCBinaryData){32, pk};
    h.kx_pk = (ProtobufCBinaryData){32, kx};
    h.nonce = (ProtobufCBinaryData){32, nonce};
    h.lane = PLEXUS__LANE__LANE_NORMAL;
    h.max_frame = 1 << 20;
    Plexus__Handshake m = PLEXUS__HANDSHAKE__INIT;
    m.msg_case = PLEXUS__HANDSHAKE__MSG_HELLO;
    m.hello = &h;
    uint8_t buf[512];
    size_t n = plexus__handshake__pack(&m, buf);
    cr_assert_eq(pxn_hs_peer(&l, buf, n, PLEXUS__LANE__LANE_NORMAL, &r, why, sizeof why),
                 PX_EVERSION);
    cr_assert_eq(r, PLEXUS__REFUSE__REASON__VERSION);
    char want[64];
    snprintf(want, sizeof want, "peer speaks versions %d..%d", PX_WIRE_VERSION + 3,
             PX_WIRE_VERSION + 5);
    cr_assert(strstr(why, want) != NULL, "%s", why);

    /* A hello of version 1 (nested ActorRefs in envelopes): refused too. */
    h.version = 1;
    h.min_version = 1;
    n = plexus__handshake__pack(&m, buf);
    cr_assert_eq(pxn_hs_peer(&l, buf, n, PLEXUS__LANE__LANE_NORMAL, &r, why, sizeof why),
                 PX_EVERSION);
    cr_assert_eq(r, PLEXUS__REFUSE__REASON__VERSION);
    cr_assert(strstr(why, "peer speaks versions 1..1") != NULL, "%s", why);

    /* The refusal, as the future node reads it. */
    size_t rl;
    uint8_t *rb = pxn_refuse_pack(r, why, &rl);
    cr_assert_not_null(rb);
    pxn_hs f;
    cr_assert_eq(pxn_hs_init(&f, PXN_DIALER, &a.self, PLEXUS__LANE__LANE_NORMAL, NULL, NULL),
                 PX_OK);
    char why2[512];
    cr_assert_eq(pxn_hs_peer(&f, rb, rl, PLEXUS__LANE__LANE_NORMAL, &r, why2, sizeof why2),
                 PX_EVERSION);
    cr_assert(strstr(why2, "peer refused the link: VERSION") != NULL, "%s", why2);
    cr_assert_eq(r, PLEXUS__REFUSE__REASON__UNSPECIFIED, "a refusal is never answered");
    free(rb);
    pxn_hs_fini(&f);

    /* Bad fields, one at a time. */
    static const char *cases[] = {"node name", "identity key length", "kx key length",
                                  "nonce length", "lane", "max_frame", "node id",
                                  "plaintext mode"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Plexus__Hello g = h;
        g.version = PX_WIRE_VERSION;
        g.min_version = PX_WIRE_MIN_VERSION;
        switch (i) {
        case 0: g.node_name = "bad name!"; break;
        case 1: g.identity_pk.len = 31; break;
        case 2: g.kx_pk.len = 16; break;
        case 3: g.nonce.len = 0; break;
        case 4: g.lane = PLEXUS__LANE__LANE_BULK; break;
        case 5: g.max_frame = 10; break;
        case 6: g.node_id ^= 1; break;
        default: g.plaintext = true; break;
        }
        m.hello = &g;
        n = plexus__handshake__pack(&m, buf);
        cr_assert_eq(pxn_hs_peer(&l, buf, n, PLEXUS__LANE__LANE_NORMAL, &r, why, sizeof why),
                     PX_EPROTO, "case %s", cases[i]);
        cr_assert(strstr(why, cases[i]) != NULL, "case %s: %s", cases[i], why);
        cr_assert_eq(r, PLEXUS__REFUSE__REASON__BAD_HELLO);
    }
    /* Not a handshake at all, and an empty one. */
    cr_assert_eq(pxn_hs_peer(&l, (const uint8_t *)"\xff\xff\xff\xff", 4,
                             PLEXUS__LANE__LANE_NORMAL, &r, why, sizeof why),
                 PX_EPROTO);
    cr_assert_eq(pxn_hs_peer(&l, buf, 0, PLEXUS__LANE__LANE_NORMAL, &r, why, sizeof why),
                 PX_EPROTO);
    cr_assert(strstr(why, "neither hello nor refuse") != NULL, "%s", why);
    cr_assert_null(l.peer, "nothing was accepted");
    pxn_hs_fini(&l);
}

/* --- test vectors ------------------------------------------------------------ */

/* Deterministic inputs (documented in proto/README.md): identity seeds of
 * 32 bytes 0x01 (dialer "alpha") and 0x02 (listener "beta"), kx seeds of
 * 0x11 / 0x22, hello nonces of 0x33 / 0x44, the cluster secret SECRET. */
static void hex(char *out, const uint8_t *b, size_t n) {
    for (size_t i = 0; i < n; i++) {
        sprintf(out + 2 * i, "%02x", b[i]);
    }
}

static void vec_add(char *buf, size_t cap, const char *name, const uint8_t *b, size_t n) {
    size_t off = strlen(buf);
    cr_assert_lt(off + strlen(name) + 2 * n + 4, cap);
    off += (size_t)sprintf(buf + off, "%s ", name);
    hex(buf + off, b, n);
    strcat(buf, "\n");
}

Test(wire_vectors, the_wire_bytes_match_the_committed_test_vectors) {
    node a, b;
    node_make(&a, "alpha", 1, SECRET);
    node_make(&b, "beta", 2, SECRET);
    uint8_t s11[32], s22[32], n33[32], n44[32];
    memset(s11, 0x11, 32);
    memset(s22, 0x22, 32);
    memset(n33, 0x33, 32);
    memset(n44, 0x44, 32);
    pxn_hs d, l;
    cr_assert_eq(pxn_hs_init(&d, PXN_DIALER, &a.self, PLEXUS__LANE__LANE_NORMAL, s11, n33), PX_OK);
    cr_assert_eq(pxn_hs_init(&l, PXN_LISTENER, &b.self, PLEXUS__LANE__LANE_NORMAL, s22, n44),
                 PX_OK);
    Plexus__Refuse__Reason r;
    char why[256];
    cr_assert_eq(pxn_hs_peer(&l, d.mine, d.mine_len, PLEXUS__LANE__LANE_NORMAL, &r, why, sizeof why),
                 PX_OK);
    cr_assert_eq(pxn_hs_peer(&d, l.mine, l.mine_len, PLEXUS__LANE__LANE_NORMAL, &r, why, sizeof why),
                 PX_OK);
    pxn_cipher drx, dtx;
    cr_assert_eq(pxn_hs_keys(&d, &drx, &dtx), PX_OK);

    static char got[16384];
    got[0] = 0;
    vec_add(got, sizeof got, "cluster_key", a.key, 32);
    vec_add(got, sizeof got, "dialer_identity_pk", a.id.pk, 32);
    vec_add(got, sizeof got, "dialer_kx_pk", d.kx_pk, 32);
    uint8_t hf[PXN_HS_MAX + 4];
    pxn_put_u32(hf, (uint32_t)d.mine_len);
    memcpy(hf + 4, d.mine, d.mine_len);
    vec_add(got, sizeof got, "dialer_hello_frame", hf, d.mine_len + 4);
    pxn_put_u32(hf, (uint32_t)l.mine_len);
    memcpy(hf + 4, l.mine, l.mine_len);
    vec_add(got, sizeof got, "listener_hello_frame", hf, l.mine_len + 4);
    vec_add(got, sizeof got, "transcript_hash", d.th, 32);
    vec_add(got, sizeof got, "dialer_tx_key", dtx.key, 32);
    vec_add(got, sizeof got, "dialer_rx_key", drx.key, 32);

    /* Frame 0: Auth. */
    Plexus__Auth au = PLEXUS__AUTH__INIT;
    uint8_t sig[64];
    pxn_hs_sign(&d, sig);
    au.sig = (ProtobufCBinaryData){64, sig};
    Plexus__Frame fr = PLEXUS__FRAME__INIT;
    fr.body_case = PLEXUS__FRAME__BODY_AUTH;
    fr.auth = &au;
    uint8_t pt[512], wire[600];
    size_t pn = plexus__frame__pack(&fr, pt);
    vec_add(got, sizeof got, "frame0_auth_plain", pt, pn);
    size_t wn = pxn_seal(&dtx, pt, pn, wire);
    vec_add(got, sizeof got, "frame0_auth_wire", wire, wn);

    /* Frame 1: a batch of one envelope: bytes "hello" with tag 42 from
     * alpha's actor 5.1 to beta's actor 9.2. */
    Plexus__Envelope env = PLEXUS__ENVELOPE__INIT;
    pxn_env_set_to(&env, (px_ref){b.self.node_id, 7, 9, 2});
    pxn_env_set_from(&env, (px_ref){a.self.node_id, 7, 5, 1});
    env.tag = 42;
    env.payload = (ProtobufCBinaryData){5, (uint8_t *)"hello"};
    Plexus__Envelope *envs[1] = {&env};
    Plexus__Batch batch = PLEXUS__BATCH__INIT;
    batch.n_envelopes = 1;
    batch.envelopes = envs;
    fr.body_case = PLEXUS__FRAME__BODY_BATCH;
    fr.batch = &batch;
    pn = plexus__frame__pack(&fr, pt);
    vec_add(got, sizeof got, "frame1_batch_plain", pt, pn);
    wn = pxn_seal(&dtx, pt, pn, wire);
    vec_add(got, sizeof got, "frame1_batch_wire", wire, wn);

    /* The listener opens both. */
    pxn_cipher lrx, ltx;
    cr_assert_eq(pxn_hs_keys(&l, &lrx, &ltx), PX_OK);
    uint8_t w0[600];
    Plexus__Frame fr0 = fr;
    fr0.body_case = PLEXUS__FRAME__BODY_AUTH;
    fr0.auth = &au;
    size_t p0 = plexus__frame__pack(&fr0, pt);
    pxn_cipher dtx0 = dtx;
    dtx0.ctr = 0;
    size_t w0n = pxn_seal(&dtx0, pt, p0, w0);
    size_t ol;
    cr_assert_eq(pxn_open(&lrx, w0, w0 + 4, w0n - 4, pt, &ol), PX_OK);
    Plexus__Frame *got0 = plexus__frame__unpack(NULL, ol, pt);
    cr_assert_not_null(got0);
    cr_assert_eq(got0->body_case, PLEXUS__FRAME__BODY_AUTH);
    cr_assert_eq(pxn_hs_verify(&l, got0->auth->sig.data, got0->auth->sig.len), PX_OK);
    plexus__frame__free_unpacked(got0, NULL);
    cr_assert_eq(pxn_open(&lrx, wire, wire + 4, wn - 4, pt, &ol), PX_OK);
    Plexus__Frame *got1 = plexus__frame__unpack(NULL, ol, pt);
    cr_assert_not_null(got1);
    cr_assert_eq(got1->batch->n_envelopes, 1);
    cr_assert_eq(got1->batch->envelopes[0]->tag, 42);
    px_ref got_to = pxn_env_to(got1->batch->envelopes[0]);
    px_ref got_from = pxn_env_from(got1->batch->envelopes[0]);
    cr_assert(px_ref_eq(got_to, ((px_ref){b.self.node_id, 7, 9, 2})), "to decodes");
    cr_assert(px_ref_eq(got_from, ((px_ref){a.self.node_id, 7, 5, 1})), "from decodes");
    plexus__frame__free_unpacked(got1, NULL);

    const char *wpath = getenv("PX_WRITE_VECTORS");
    if (wpath != NULL && *wpath != '\0') {
        FILE *f = fopen(wpath, "w");
        cr_assert_not_null(f);
        fputs(got, f);
        fclose(f);
    }
    FILE *f = fopen(PXT_VECTORS, "r");
    cr_assert_not_null(f, "%s: %s", PXT_VECTORS, strerror(errno));
    static char want[16384];
    size_t wl = fread(want, 1, sizeof want - 1, f);
    fclose(f);
    want[wl] = 0;
    /* Line by line, so a mismatch names the field. */
    char *gs = got, *ws = want;
    while (*gs != '\0' || *ws != '\0') {
        char *ge = strchr(gs, '\n'), *we = strchr(ws, '\n');
        cr_assert(ge != NULL && we != NULL, "vectors differ in length");
        *ge = *we = 0;
        cr_assert_str_eq(gs, ws, "test vector changed");
        gs = ge + 1;
        ws = we + 1;
    }
    pxn_hs_fini(&d);
    pxn_hs_fini(&l);
}

/* --- nesting depth of payloads ------------------------------------------- */

/* A ChildFailure whose `cause` (field 8) nests n deep, built from the inside
 * out at the end of buf; returns where it starts. */
static const uint8_t *nested_failure(uint8_t *buf, size_t cap, unsigned n, size_t *len) {
    uint8_t *at = buf + cap;
    for (unsigned i = 0; i < n; i++) {
        size_t inner = (size_t)(buf + cap - at);
        uint8_t v[10];
        size_t k = 0;
        do {
            v[k++] = (uint8_t)((inner & 0x7f) | (inner > 0x7f ? 0x80 : 0));
            inner >>= 7;
        } while (inner > 0);
        at -= k;
        memcpy(at, v, k);
        *--at = (8 << 3) | 2;
    }
    *len = (size_t)(buf + cap - at);
    return at;
}

Test(wire_limits, payloads_nested_deeper_than_the_limit_are_refused_before_decoding) {
    size_t cap = 64 * 1024, len = 0;
    uint8_t *buf = malloc(cap);
    cr_assert_not_null(buf);
    const ProtobufCMessageDescriptor *d = &plexus__child_failure__descriptor;

    const uint8_t *m = nested_failure(buf, cap, 10, &len);
    cr_assert(pxn_pb_depth_ok(d, m, len, PXN_PB_MAX_DEPTH));
    ProtobufCMessage *pb = protobuf_c_message_unpack(d, NULL, len, m);
    cr_assert_not_null(pb, "a shallow one decodes");
    protobuf_c_message_free_unpacked(pb, NULL);

    m = nested_failure(buf, cap, PXN_PB_MAX_DEPTH, &len);
    cr_assert(pxn_pb_depth_ok(d, m, len, PXN_PB_MAX_DEPTH), "exactly the limit passes");
    m = nested_failure(buf, cap, PXN_PB_MAX_DEPTH + 1, &len);
    cr_assert_not(pxn_pb_depth_ok(d, m, len, PXN_PB_MAX_DEPTH), "one more does not");
    /* The input that overflowed the stack inside protobuf-c (fuzzing). */
    m = nested_failure(buf, cap, 10000, &len);
    cr_assert_lt(len, 40000);
    cr_assert_not(pxn_pb_depth_ok(d, m, len, PXN_PB_MAX_DEPTH));
    /* Malformed input is left to the decoder. */
    uint8_t junk[] = {0x42, 0xff};
    cr_assert(pxn_pb_depth_ok(d, junk, sizeof junk, PXN_PB_MAX_DEPTH));
    cr_assert(pxn_pb_depth_ok(d, NULL, 0, PXN_PB_MAX_DEPTH));
    free(buf);
}
