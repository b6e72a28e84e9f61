/*
 * gen_seeds.c — writes the seed corpora of the wire fuzz targets:
 *   fuzz_gen_seeds DIR   (DIR = tests/fuzz/corpus)
 * makes DIR/fuzz_frame/, DIR/fuzz_handshake/ and DIR/fuzz_envelope/ and
 * writes a handful of files into each. Deterministic: everything comes
 * from the fixture's handshake (common.c, made from the test vectors'
 * inputs), so the same wire code writes the same bytes; "sealed-vectors"
 * holds the two frames the vectors describe (frame0_auth, frame1_batch).
 * Rerun it after a deliberate wire
 * change and commit the result; the fuzzers never write into DIR.
 */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

static const char *outdir;

static void put(const char *target, const char *name, const uint8_t *b, size_t n) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", outdir, target);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        exit(1);
    }
    snprintf(path, sizeof(path), "%s/%s/%s", outdir, target, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(b, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "%s: cannot write\n", path);
        exit(1);
    }
    printf("%s (%zu bytes)\n", path, n);
}

/* A growable byte string. */
typedef struct buf {
    uint8_t *p;
    size_t n;
} buf;

static void cat(buf *b, const uint8_t *p, size_t n) {
    b->p = realloc(b->p, b->n + n + 1);
    PXF_CHECK(b->p != NULL);
    memcpy(b->p + b->n, p, n);
    b->n += n;
}

static buf pack_msg(const ProtobufCMessage *m) {
    buf b = {malloc(protobuf_c_message_get_packed_size(m) + 1), 0};
    PXF_CHECK(b.p != NULL);
    b.n = protobuf_c_message_pack(m, b.p);
    return b;
}

/* Appends frame f to stream s, sealed with c (plaintext or not). */
static void add_frame(buf *s, pxn_cipher *c, const Plexus__Frame *f) {
    buf pt = pack_msg(&f->base);
    uint8_t *w = malloc(pxn_sealed_len(c, pt.n));
    PXF_CHECK(w != NULL);
    size_t wn = pxn_seal(c, pt.p, pt.n, w);
    cat(s, w, wn);
    free(w);
    free(pt.p);
}

/* ---- envelopes ---- */

static Plexus__ActorRef ref_make(uint32_t node, uint32_t inc, uint32_t id, uint32_t aic) {
    Plexus__ActorRef r = PLEXUS__ACTOR_REF__INIT;
    r.node = node;
    r.node_inc = inc;
    r.id = id;
    r.inc = aic;
    return r;
}

static px_ref ref_px(const Plexus__ActorRef *r) {
    return (px_ref){r->node, r->node_inc, r->id, r->inc};
}

#define NENV 11
#define BULK_ID 77
static Plexus__ActorRef to_vec, from_vec, to_root;
static Plexus__Envelope envs[NENV];
static Plexus__Envelope *envp[NENV];
static const char *env_names[NENV] = {
    "env-bytes-vector",      "env-bytes-heap",         "env-child-failure-ask",
    "env-spawn-request",     "env-node-info",          "env-unknown-type",
    "env-bad-payload",       "env-system-terminated",  "env-no-target",
    "env-system-undelivered", "env-bulk-header",
};
static buf payloads[NENV];
static buf bulk_payload; /* what env-bulk-header announces: a NodeInfo */

static void envelopes_make(void) {
    const pxf_env *e = pxf_env_get();
    px_ref root = px_system_root(e->sys);
    uint32_t a = e->alpha.self.node_id, b = e->beta.self.node_id;
    to_vec = ref_make(b, 7, 9, 2);
    from_vec = ref_make(a, 7, 5, 1);
    to_root = ref_make(b, 7, root.id, root.inc);
    for (int i = 0; i < NENV; i++) {
        envs[i] = (Plexus__Envelope)PLEXUS__ENVELOPE__INIT;
        pxn_env_set_to(&envs[i], ref_px(&to_root));
        pxn_env_set_from(&envs[i], ref_px(&from_vec));
        envp[i] = &envs[i];
    }
    /* 0: the envelope of the vectors' frame1. */
    pxn_env_set_to(&envs[0], ref_px(&to_vec));
    envs[0].tag = 42;
    envs[0].payload = (ProtobufCBinaryData){5, (uint8_t *)"hello"};
    /* 1: a bytes payload past PX_MSG_INLINE. */
    static uint8_t big[100];
    for (size_t i = 0; i < sizeof(big); i++) {
        big[i] = (uint8_t)(i * 37);
    }
    envs[1].tag = 7;
    envs[1].payload = (ProtobufCBinaryData){sizeof(big), big};
    /* 2: ChildFailure with a cause chain, as an ask. */
    Plexus__ActorRef child = ref_make(a, 7, 12, 3);
    Plexus__ChildFailure c2 = PLEXUS__CHILD_FAILURE__INIT, c1 = c2, c0 = c2;
    c2.id = "db";
    c2.code = -5;
    c2.reason = "connection refused";
    c1.id = "pool";
    c1.child = &child;
    c1.cause = &c2;
    c1.count_in_window = 2;
    c0.id = "api";
    c0.origin = "alpha";
    c0.time_ms = 1700000000000;
    c0.cause = &c1;
    payloads[2] = pack_msg(&c0.base);
    envs[2].type = "plexus.ChildFailure";
    envs[2].flags = PLEXUS__ENVELOPE_FLAG__FLAG_ASK;
    envs[2].corr = 99;
    envs[2].payload = (ProtobufCBinaryData){payloads[2].n, payloads[2].p};
    /* 3: SpawnRequest: ChildSpec, RestartPolicy (doubles). */
    Plexus__RestartPolicy pol = PLEXUS__RESTART_POLICY__INIT;
    pol.max_restarts = 3;
    pol.window_ms = 5000;
    pol.backoff_multiplier = 2.0;
    pol.backoff_jitter = 0.25;
    Plexus__ChildSpec spec = PLEXUS__CHILD_SPEC__INIT;
    spec.id = "worker-1";
    spec.behavior = "ex.pool";
    spec.arg_type = "plexus.Directive";
    spec.arg = (ProtobufCBinaryData){2, (uint8_t *)"\x10\x01"};
    spec.mailbox_capacity = 64;
    spec.policy = &pol;
    Plexus__SpawnRequest sr = PLEXUS__SPAWN_REQUEST__INIT;
    sr.spec = &spec;
    sr.parent = &from_vec;
    payloads[3] = pack_msg(&sr.base);
    envs[3].type = "plexus.SpawnRequest";
    envs[3].payload = (ProtobufCBinaryData){payloads[3].n, payloads[3].p};
    /* 4: NodeInfo: repeated strings. */
    char *roles[] = {"api", "db"};
    Plexus__NodeInfo ni = PLEXUS__NODE_INFO__INIT;
    ni.name = "alpha";
    ni.node_id = a;
    ni.address = "tcp://127.0.0.1:7001";
    ni.identity_pk = (ProtobufCBinaryData){32, (uint8_t *)(uintptr_t)e->alpha.id.pk};
    ni.n_roles = 2;
    ni.roles = roles;
    ni.version = 1;
    payloads[4] = pack_msg(&ni.base);
    envs[4].type = "plexus.NodeInfo";
    envs[4].payload = (ProtobufCBinaryData){payloads[4].n, payloads[4].p};
    /* 5: a type this node does not know. */
    envs[5].type = "plexus.test.Nope";
    envs[5].payload = (ProtobufCBinaryData){2, (uint8_t *)"\x08\x01"};
    /* 6: a known type whose payload does not decode. */
    envs[6].type = "plexus.Terminated";
    envs[6].payload = (ProtobufCBinaryData){3, (uint8_t *)"\x0a\xff\xff"};
    /* 7: a system envelope: Terminated, a reply. */
    Plexus__Terminated term = PLEXUS__TERMINATED__INIT;
    term.who = &child;
    term.reason = 2;
    term.code = -3;
    payloads[7] = pack_msg(&term.base);
    envs[7].type = "plexus.Terminated";
    envs[7].flags = PLEXUS__ENVELOPE_FLAG__FLAG_SYSTEM | PLEXUS__ENVELOPE_FLAG__FLAG_REPLY;
    envs[7].sysop = PLEXUS__SYS_OP__SYS_TERMINATED;
    envs[7].corr = 5;
    envs[7].payload = (ProtobufCBinaryData){payloads[7].n, payloads[7].p};
    /* 8: no target: dropped. */
    pxn_env_set_to(&envs[8], PX_REF_NIL);
    envs[8].payload = (ProtobufCBinaryData){1, (uint8_t *)"x"};
    /* 9: the one system notice this version reads: an ask to vec's actor
     * (from the root guardian) was not delivered. */
    Plexus__Undelivered und = PLEXUS__UNDELIVERED__INIT;
    und.to = &to_vec;
    und.code = PX_EFULL;
    und.corr = 11;
    und.detail = "mailbox full";
    payloads[9] = pack_msg(&und.base);
    envs[9].type = "plexus.Undelivered";
    envs[9].flags = PLEXUS__ENVELOPE_FLAG__FLAG_SYSTEM;
    envs[9].sysop = PLEXUS__SYS_OP__SYS_UNDELIVERED;
    envs[9].corr = 11;
    envs[9].payload = (ProtobufCBinaryData){payloads[9].n, payloads[9].p};
    /* 10: a bulk payload's envelope (the NodeInfo of 4 again; its bytes
     * come as chunks, see frame_seeds). */
    bulk_payload = pack_msg(&ni.base);
    envs[10].type = "plexus.NodeInfo";
    envs[10].bulk_id = BULK_ID;
    envs[10].bulk_len = bulk_payload.n;
}

static void envelope_seeds(void) {
    for (int i = 0; i < NENV; i++) {
        buf b = pack_msg(&envs[i].base);
        put("fuzz_envelope", env_names[i], b.p, b.n);
        free(b.p);
    }
    Plexus__Batch batch = PLEXUS__BATCH__INIT;
    batch.n_envelopes = NENV;
    batch.envelopes = envp;
    buf b = pack_msg(&batch.base);
    put("fuzz_envelope", "batch-all", b.p, b.n);
    free(b.p);
}

/* ---- frames ---- */

static void frame_seeds(void) {
    const pxf_env *e = pxf_env_get();
    uint8_t sig[64];
    pxn_hs_sign(&e->d, sig);
    Plexus__Auth au = PLEXUS__AUTH__INIT;
    au.sig = (ProtobufCBinaryData){64, sig};
    Plexus__Frame f_auth = PLEXUS__FRAME__INIT;
    f_auth.body_case = PLEXUS__FRAME__BODY_AUTH;
    f_auth.auth = &au;

    Plexus__Envelope *one[1] = {&envs[0]};
    Plexus__Batch b_vec = PLEXUS__BATCH__INIT;
    b_vec.n_envelopes = 1;
    b_vec.envelopes = one;
    Plexus__Frame f_vec = PLEXUS__FRAME__INIT;
    f_vec.body_case = PLEXUS__FRAME__BODY_BATCH;
    f_vec.batch = &b_vec;

    Plexus__Batch b_all = PLEXUS__BATCH__INIT;
    b_all.n_envelopes = NENV;
    b_all.envelopes = envp;
    Plexus__Frame f_all = PLEXUS__FRAME__INIT;
    f_all.body_case = PLEXUS__FRAME__BODY_BATCH;
    f_all.batch = &b_all;

    Plexus__Heartbeat hb = PLEXUS__HEARTBEAT__INIT;
    hb.seq = 3;
    hb.sent_ns = 123456789;
    Plexus__Frame f_ping = PLEXUS__FRAME__INIT, f_pong = f_ping;
    f_ping.body_case = PLEXUS__FRAME__BODY_PING;
    f_ping.ping = &hb;
    f_pong.body_case = PLEXUS__FRAME__BODY_PONG;
    f_pong.pong = &hb;

    /* The payload batch-all's bulk header announces, in two chunks. */
    size_t half = bulk_payload.n / 2;
    Plexus__Chunk ch1 = PLEXUS__CHUNK__INIT, ch2 = ch1;
    ch1.bulk_id = ch2.bulk_id = BULK_ID;
    ch1.bulk_len = ch2.bulk_len = bulk_payload.n;
    ch1.data = (ProtobufCBinaryData){half, bulk_payload.p};
    ch2.offset = half;
    ch2.data = (ProtobufCBinaryData){bulk_payload.n - half, bulk_payload.p + half};
    Plexus__Frame f_chunk1 = PLEXUS__FRAME__INIT, f_chunk2 = f_chunk1;
    f_chunk1.body_case = f_chunk2.body_case = PLEXUS__FRAME__BODY_CHUNK;
    f_chunk1.chunk = &ch1;
    f_chunk2.chunk = &ch2;

    Plexus__Credit cr = PLEXUS__CREDIT__INIT;
    cr.bytes = 1 << 20;
    Plexus__Frame f_credit = PLEXUS__FRAME__INIT;
    f_credit.body_case = PLEXUS__FRAME__BODY_CREDIT;
    f_credit.credit = &cr;

    Plexus__Goodbye gb = PLEXUS__GOODBYE__INIT;
    gb.reason = "shutting down";
    Plexus__Frame f_bye = PLEXUS__FRAME__INIT;
    f_bye.body_case = PLEXUS__FRAME__BODY_GOODBYE;
    f_bye.goodbye = &gb;

    const Plexus__Frame *session[] = {&f_auth,   &f_vec,    &f_all,    &f_ping, &f_pong,
                                      &f_chunk1, &f_chunk2, &f_credit, &f_bye};
    size_t ns = sizeof(session) / sizeof(session[0]);

    /* As in the vectors: auth, then the one-envelope batch, sealed by alpha. */
    pxn_cipher c = e->d_tx;
    buf s = {NULL, 0};
    add_frame(&s, &c, &f_auth);
    add_frame(&s, &c, &f_vec);
    put("fuzz_frame", "sealed-vectors", s.p, s.n);
    /* A whole session, sealed. */
    for (size_t i = 2; i < ns; i++) {
        add_frame(&s, &c, session[i]);
    }
    put("fuzz_frame", "sealed-session", s.p, s.n);
    free(s.p);

    /* The same in plaintext mode. */
    c = e->d_tx;
    c.plaintext = true;
    s = (buf){NULL, 0};
    for (size_t i = 0; i < ns; i++) {
        add_frame(&s, &c, session[i]);
    }
    put("fuzz_frame", "plain-session", s.p, s.n);
    free(s.p);

    /* Plaintext: the chunks before the envelope that announces them (they
     * travel on another connection, so they may). */
    c = e->d_tx;
    c.plaintext = true;
    s = (buf){NULL, 0};
    add_frame(&s, &c, &f_chunk1);
    add_frame(&s, &c, &f_chunk2);
    add_frame(&s, &c, &f_all);
    put("fuzz_frame", "plain-chunks-first", s.p, s.n);
    free(s.p);

    /* Plaintext: a body this version does not know (field 15), then a ping. */
    c = e->d_tx;
    c.plaintext = true;
    s = (buf){NULL, 0};
    static const uint8_t unknown[] = {0x7a, 0x03, 0x08, 0x01, 0x10};
    uint8_t hdr[4];
    pxn_put_u32(hdr, sizeof(unknown));
    cat(&s, hdr, 4);
    cat(&s, unknown, sizeof(unknown));
    add_frame(&s, &c, &f_ping);
    put("fuzz_frame", "plain-unknown-body", s.p, s.n);
    free(s.p);

    /* Plaintext: a ping carrying an unknown field whose tag is field 0 in
     * an over-long varint (80 80 00). protobuf-c keeps it and writes it
     * back as a plain 00 tag, which it then refuses: link.c's Pong copies
     * the ping, unknown fields and all (found by fuzz_frame). */
    static const uint8_t tag0_ping[] = {0x09, 0x00, 0x00, 0x00, 0x1a, 0x07, 0x80,
                                        0x80, 0x00, 0x95, 0x9a, 0xef, 0x3a};
    put("fuzz_frame", "plain-ping-tag0", tag0_ping, sizeof(tag0_ping));

    /* A length over max_frame after a good frame; and a cut-off frame. */
    c = e->d_tx;
    s = (buf){NULL, 0};
    add_frame(&s, &c, &f_auth);
    pxn_put_u32(hdr, PXF_MAX_FRAME + 1);
    cat(&s, hdr, 4);
    cat(&s, (const uint8_t *)"xxxx", 4);
    put("fuzz_frame", "sealed-oversized", s.p, s.n);
    free(s.p);
    c = e->d_tx;
    s = (buf){NULL, 0};
    add_frame(&s, &c, &f_auth);
    add_frame(&s, &c, &f_all);
    put("fuzz_frame", "sealed-truncated", s.p, s.n - 9);
    free(s.p);
}

/* ---- handshakes ---- */

static void hs_put(const char *name, const uint8_t *h, size_t hn, const uint8_t *sig,
                   size_t siglen) {
    buf b = {NULL, 0};
    uint8_t len[2] = {(uint8_t)hn, (uint8_t)(hn >> 8)};
    cat(&b, len, 2);
    cat(&b, h, hn);
    cat(&b, sig, siglen);
    put("fuzz_handshake", name, b.p, b.n);
    free(b.p);
}

static void hello_variant(const char *name, const pxn_hs *from, int which, const uint8_t *sig) {
    Plexus__Handshake *m = plexus__handshake__unpack(NULL, from->mine_len, from->mine);
    PXF_CHECK(m != NULL && m->hello != NULL);
    Plexus__Hello *h = m->hello;
    char *keep_name = h->node_name;
    switch (which) {
    case 0: /* from the future */
        h->version = PX_WIRE_VERSION + 5;
        h->min_version = PX_WIRE_VERSION + 3;
        break;
    case 1:
        h->node_name = "bad name!";
        break;
    case 2:
        h->plaintext = true;
        break;
    case 3:
        h->lane = PLEXUS__LANE__LANE_BULK;
        break;
    default: /* a kx key that gives no session keys */
        memset(h->kx_pk.data, 0, h->kx_pk.len);
        break;
    }
    buf b = pack_msg(&m->base);
    hs_put(name, b.p, b.n, sig, 64);
    free(b.p);
    h->node_name = keep_name;
    plexus__handshake__free_unpacked(m, NULL);
}

static void handshake_seeds(void) {
    const pxf_env *e = pxf_env_get();
    uint8_t sd[64], sl[64];
    pxn_hs_sign(&e->d, sd);
    pxn_hs_sign(&e->l, sl);
    hs_put("dialer-hello-auth", e->d.mine, e->d.mine_len, sd, 64);
    hs_put("listener-hello-auth", e->l.mine, e->l.mine_len, sl, 64);
    hello_variant("hello-future-version", &e->d, 0, sd);
    hello_variant("hello-bad-name", &e->d, 1, sd);
    hello_variant("hello-plaintext", &e->l, 2, sl);
    hello_variant("hello-other-lane", &e->d, 3, sd);
    hello_variant("hello-zero-kx", &e->d, 4, sd);

    size_t rl;
    uint8_t *rb = pxn_refuse_pack(PLEXUS__REFUSE__REASON__VERSION, "no common version", &rl);
    PXF_CHECK(rb != NULL);
    hs_put("refuse-version", rb, rl, NULL, 0);
    free(rb);
    rb = pxn_refuse_pack(PLEXUS__REFUSE__REASON__DUPLICATE, "a link for beta exists", &rl);
    PXF_CHECK(rb != NULL);
    hs_put("refuse-duplicate", rb, rl, NULL, 0);
    free(rb);
    /* A reason this version has no name for. */
    rb = pxn_refuse_pack((Plexus__Refuse__Reason)99, "", &rl);
    PXF_CHECK(rb != NULL);
    hs_put("refuse-unknown-reason", rb, rl, NULL, 0);
    free(rb);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
        return 2;
    }
    outdir = argv[1];
    if (mkdir(outdir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "%s: %s\n", outdir, strerror(errno));
        return 1;
    }
    envelopes_make();
    envelope_seeds();
    frame_seeds();
    handshake_seeds();
    for (int i = 0; i < NENV; i++) {
        free(payloads[i].p);
    }
    free(bulk_payload.p);
    return 0;
}
