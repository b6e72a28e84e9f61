/* Tests for plexus/msg.h: bytes and proto messages, accessors, refs, and
 * that a local send moves a message by pointer. */
#include "helpers.h"

#include "test.pb-c.h"

static Plexus__Test__Ping *new_ping(uint64_t seq, const char *text) {
    Plexus__Test__Ping *p = malloc(sizeof *p);
    cr_assert_not_null(p);
    plexus__test__ping__init(p);
    p->seq = seq;
    p->text = strdup(text);
    return p;
}

Test(core_msg, bytes_message_copies_a_small_payload_and_keeps_its_tag, .timeout = 10) {
    char buf[8] = "abcdefg";
    px_msg *m = NULL;
    cr_assert_eq(px_msg_bytes(&m, 77, buf, sizeof buf), PX_OK);
    cr_assert_not_null(m);
    buf[0] = 'X'; /* the message holds a copy */
    size_t len = 0;
    const char *d = px_msg_data(m, &len);
    cr_assert_eq(len, sizeof buf);
    cr_assert_eq(memcmp(d, "abcdefg", 8), 0);
    cr_assert_eq(px_msg_tag(m), 77);
    cr_assert_eq(px_msg_kind_of(m), PX_MSG_BYTES);
    cr_assert_null(px_msg_pb(m));
    cr_assert(px_ref_is_nil(px_msg_sender(m)));
    cr_assert_eq(px_msg_corr(m), 0);
    cr_assert_not(px_msg_is_reply(m));
    px_msg_free(m);
}

Test(core_msg, bytes_message_copies_a_large_payload, .timeout = 10) {
    size_t n = 100000;
    unsigned char *buf = malloc(n);
    for (size_t i = 0; i < n; i++) {
        buf[i] = (unsigned char)(i * 7);
    }
    px_msg *m = NULL;
    cr_assert_eq(px_msg_bytes(&m, 1, buf, n), PX_OK);
    memset(buf, 0, n);
    size_t len = 0;
    const unsigned char *d = px_msg_data(m, &len);
    cr_assert_eq(len, n);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(d[i], (unsigned char)(i * 7), "byte %zu", i);
    }
    free(buf);
    px_msg_free(m);
}

Test(core_msg, bytes_take_adopts_a_large_buffer_without_copying, .timeout = 10) {
    size_t n = 100000;
    unsigned char *buf = malloc(n);
    cr_assert_not_null(buf);
    memset(buf, 9, n);
    px_msg *m = NULL;
    cr_assert_eq(px_msg_bytes_take(&m, 4, buf, PX_MSG_INLINE), PX_EINVAL, "small: use px_msg_bytes");
    cr_assert_eq(px_msg_bytes_take(&m, 4, NULL, n), PX_EINVAL);
    cr_assert_null(m);
    cr_assert_eq(px_msg_bytes_take(&m, 4, buf, n), PX_OK);
    size_t len = 0;
    cr_assert_eq(px_msg_data(m, &len), buf, "the message holds the very buffer");
    cr_assert_eq(len, n);
    cr_assert_eq(px_msg_tag(m), 4);
    px_msg_free(m); /* frees buf too (ASan would see a leak otherwise) */
}

Test(core_msg, bytes_payload_at_the_inline_boundary_round_trips, .timeout = 10) {
    for (size_t n = PX_MSG_INLINE - 1; n <= PX_MSG_INLINE + 1; n++) {
        unsigned char buf[PX_MSG_INLINE + 1];
        memset(buf, (int)n, sizeof buf);
        px_msg *m = NULL;
        cr_assert_eq(px_msg_bytes(&m, 3, buf, n), PX_OK);
        size_t len = 0;
        const void *d = px_msg_data(m, &len);
        cr_assert_eq(len, n);
        cr_assert_eq(memcmp(d, buf, n), 0);
        px_msg_free(m);
    }
}

/* Payloads of 17..64 bytes live in a message block, not a malloc'd buffer:
 * made here, read and freed on other threads, many times over, so blocks
 * go round the per-thread caches (ASan/TSan builds use malloc instead). */
static void *blk_reader(void *arg) {
    px_msg **ms = arg;
    int bad = 0;
    for (size_t k = 0; k < 512; k++) {
        size_t n = PX_MSG_INLINE + 1 + k % 60, len = 0;
        const uint8_t *d = px_msg_data(ms[k], &len);
        bad += len != n || px_msg_tag(ms[k]) != k;
        for (size_t i = 0; i < len; i++) {
            bad += d[i] != (uint8_t)(k + i);
        }
        px_msg_free(ms[k]);
    }
    return (void *)(intptr_t)bad;
}

Test(core_msg, block_sized_payloads_survive_being_freed_on_other_threads, .timeout = 30) {
    px_msg *ms[512];
    for (int round = 0; round < 20; round++) {
        for (size_t k = 0; k < 512; k++) {
            uint8_t buf[80];
            size_t n = PX_MSG_INLINE + 1 + k % 60; /* 17..76: across the block's end */
            for (size_t i = 0; i < n; i++) {
                buf[i] = (uint8_t)(k + i);
            }
            cr_assert_eq(px_msg_bytes(&ms[k], (uint32_t)k, buf, n), PX_OK);
        }
        pthread_t th;
        cr_assert_eq(pthread_create(&th, NULL, blk_reader, ms), 0);
        void *bad = NULL;
        cr_assert_eq(pthread_join(th, &bad), 0);
        cr_assert_eq((intptr_t)bad, 0, "round %d: payloads read back wrong", round);
    }
}

Test(core_msg, empty_bytes_message_is_allowed_with_null_data, .timeout = 10) {
    px_msg *m = NULL;
    cr_assert_eq(px_msg_bytes(&m, 5, NULL, 0), PX_OK);
    size_t len = 99;
    px_msg_data(m, &len);
    cr_assert_eq(len, 0);
    cr_assert_eq(px_msg_get_u64(m), 0, "a payload shorter than 8 bytes reads as 0");
    px_msg_free(m);
}

Test(core_msg, bytes_rejects_null_data_with_nonzero_length_and_null_out, .timeout = 10) {
    px_msg *m = NULL;
    cr_assert_eq(px_msg_bytes(&m, 1, NULL, 4), PX_EINVAL);
    cr_assert_null(m);
    cr_assert_eq(px_msg_bytes(NULL, 1, "abc", 3), PX_EINVAL);
}

Test(core_msg, u64_message_round_trips_as_8_little_endian_bytes, .timeout = 10) {
    px_msg *m = NULL;
    uint64_t v = 0x0102030405060708ull;
    cr_assert_eq(px_msg_u64(&m, 9, v), PX_OK);
    cr_assert_eq(px_msg_get_u64(m), v);
    cr_assert_eq(px_msg_tag(m), 9);
    size_t len = 0;
    const unsigned char *d = px_msg_data(m, &len);
    cr_assert_eq(len, 8);
    cr_assert_eq(d[0], 0x08);
    cr_assert_eq(d[7], 0x01);
    px_msg_free(m);
}

Test(core_msg, get_u64_of_a_short_payload_is_zero, .timeout = 10) {
    px_msg *m = NULL;
    cr_assert_eq(px_msg_bytes(&m, 1, "abc", 3), PX_OK);
    cr_assert_eq(px_msg_get_u64(m), 0);
    px_msg_free(m);
}

Test(core_msg, free_of_null_is_a_no_op, .timeout = 10) {
    px_msg_free(NULL);
    cr_assert(1);
}

Test(core_msg, proto_message_wraps_the_given_pointer_and_knows_its_type, .timeout = 10) {
    Plexus__Test__Ping *p = new_ping(5, "hi");
    px_msg *m = NULL;
    cr_assert_eq(px_msg_proto(&m, &p->base, NULL), PX_OK);
    cr_assert_eq(px_msg_kind_of(m), PX_MSG_PROTO);
    cr_assert_eq(px_msg_pb(m), &p->base, "no copy is made");
    cr_assert(px_msg_is(m, &plexus__test__ping__descriptor));
    cr_assert_not(px_msg_is(m, &plexus__test__pong__descriptor));
    px_msg_free(m); /* frees p with protobuf_c_message_free_unpacked */
}

Test(core_msg, proto_rejects_null_arguments, .timeout = 10) {
    px_msg *m = NULL;
    cr_assert_eq(px_msg_proto(&m, NULL, NULL), PX_EINVAL);
    cr_assert_null(m);
    Plexus__Test__Ping *p = new_ping(1, "x");
    cr_assert_eq(px_msg_proto(NULL, &p->base, NULL), PX_EINVAL);
    protobuf_c_message_free_unpacked(&p->base, NULL); /* still ours */
}

static atomic_int custom_frees;
static void custom_free(ProtobufCMessage *pb) {
    atomic_fetch_add(&custom_frees, 1);
    protobuf_c_message_free_unpacked(pb, NULL);
}

Test(core_msg, proto_free_fn_releases_the_message_exactly_once, .timeout = 10) {
    Plexus__Test__Ping *p = new_ping(1, "x");
    px_msg *m = NULL;
    cr_assert_eq(px_msg_proto(&m, &p->base, custom_free), PX_OK);
    px_msg_free(m);
    cr_assert_eq(atomic_load(&custom_frees), 1);
}

Test(core_msg, take_pb_detaches_the_message_and_leaves_an_empty_payload, .timeout = 10) {
    Plexus__Test__Ping *p = new_ping(1, "x");
    px_msg *m = NULL;
    cr_assert_eq(px_msg_proto(&m, &p->base, custom_free), PX_OK);
    ProtobufCMessage *got = px_msg_take_pb(m);
    cr_assert_eq(got, &p->base);
    cr_assert_null(px_msg_pb(m));
    px_msg_free(m);
    cr_assert_eq(atomic_load(&custom_frees), 0, "a taken pb is not freed with the message");
    custom_free(got);
}

Test(core_msg, take_pb_of_a_bytes_message_is_null, .timeout = 10) {
    px_msg *m = pxt_u64(1, 2);
    cr_assert_null(px_msg_take_pb(m));
    cr_assert_not(px_msg_is(m, &plexus__test__ping__descriptor));
    px_msg_free(m);
}

Test(core_msg, ref_format_writes_node_inc_slash_id_inc, .timeout = 10) {
    char buf[48];
    px_ref r = {0xab, 1, 2, 3};
    cr_assert_eq(px_ref_format(r, buf, sizeof buf), buf);
    /* The node is hex; its width (zero padding) is not specified. */
    char *rest = NULL;
    unsigned long node = strtoul(buf, &rest, 16);
    cr_assert_eq(node, 0xab, "\"%s\" does not start with hex node ab", buf);
    cr_assert_str_eq(rest, ".1/2.3", "got \"%s\"", buf);
    px_ref big = {UINT32_MAX, UINT32_MAX, UINT32_MAX, UINT32_MAX};
    char big_buf[48];
    px_ref_format(big, big_buf, sizeof big_buf);
    cr_assert_lt(strlen(big_buf), 48, "48 bytes always suffice");
    cr_assert_neq(strchr(big_buf, '/'), NULL);
}

Test(core_msg, ref_nil_and_equality, .timeout = 10) {
    cr_assert(px_ref_is_nil(PX_REF_NIL));
    px_ref a = {1, 2, 3, 4}, b = {1, 2, 3, 4}, c = {1, 2, 3, 5};
    cr_assert(px_ref_eq(a, b));
    cr_assert_not(px_ref_eq(a, c));
    cr_assert_not(px_ref_is_nil(a));
}

/* --- moving by pointer through a system -------------------------------- */

Test(core_msg, proto_message_reaches_the_receiver_as_the_same_pointer, .timeout = 10) {
    px_system *sys = pxt_system();
    pxt_rec *r = pxt_rec_new();
    px_ref a = pxt_rec_spawn(sys, r, NULL);
    Plexus__Test__Ping *p = new_ping(42, "moved");
    const ProtobufCMessage *sent = &p->base;
    px_msg *m = NULL;
    cr_assert_eq(px_msg_proto(&m, &p->base, NULL), PX_OK);
    cr_assert_eq(px_system_send(sys, a, &m), PX_OK);
    cr_assert_null(m);
    PXT_AWAIT(pxt_rec_count(r) == 1, 5000);
    cr_assert_eq(r->kind[0], PX_MSG_PROTO);
    cr_assert_eq(r->pb[0], sent, "the receiver saw pb %p, the sender created %p",
                 (const void *)r->pb[0], (const void *)sent);
    px_system_free(sys);
    free(r);
}

/* An actor that forwards every proto message it gets to `next`, recording
 * the pointer it saw. */
typedef struct fwd {
    px_ref next;
    atomic_uintptr_t seen;
    atomic_int err;
} fwd;

static px_err fwd_receive(px_ctx *ctx, px_msg *m) {
    fwd *f = px_state(ctx);
    atomic_store(&f->seen, (uintptr_t)px_msg_pb(m));
    ProtobufCMessage *pb = px_msg_take_pb(m);
    if (!pb) {
        atomic_store(&f->err, 1);
        return PX_OK;
    }
    px_msg *out = NULL;
    if (px_msg_proto(&out, pb, NULL) != PX_OK || px_send(ctx, f->next, &out) != PX_OK) {
        atomic_store(&f->err, 2);
        px_msg_free(out);
    }
    return PX_OK;
}
static const px_behavior fwd_b = {.name = "t.fwd", .init = pxt_init_ptr_state,
                                  .receive = fwd_receive};

Test(core_msg, proto_message_forwarded_between_actors_keeps_its_pointer, .timeout = 10) {
    px_system *sys = pxt_system();
    pxt_rec *r = pxt_rec_new();
    px_ref last = pxt_rec_spawn(sys, r, NULL);
    fwd f = {.next = last};
    px_ref first = pxt_spawn(sys, &fwd_b, &f, NULL);
    Plexus__Test__Ping *p = new_ping(7, "hop");
    px_msg *m = NULL;
    cr_assert_eq(px_msg_proto(&m, &p->base, NULL), PX_OK);
    cr_assert_eq(px_system_send(sys, first, &m), PX_OK);
    PXT_AWAIT(pxt_rec_count(r) == 1, 5000);
    cr_assert_eq(atomic_load(&f.err), 0);
    cr_assert_eq(atomic_load(&f.seen), (uintptr_t)&p->base);
    cr_assert_eq(r->pb[0], &p->base);
    cr_assert(px_ref_eq(r->sender[0], first), "the sender of an actor's send is that actor");
    px_system_free(sys);
    free(r);
}
