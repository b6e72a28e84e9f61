/* Tests for topics (plexus/topic.h, and the topic parts of plexus/router.h):
 * px_subscribe, px_unsubscribe, px_publish, px_system_publish_local,
 * px_system_topics, the router's topic_interest and publish hooks, and the
 * publish_* counters of px_system_stats.
 *
 * Subscribing needs actor context, so a `sub` actor subscribes in init to
 * the topics its state names and runs commands sent by the test (the result
 * goes into an atomic); every other message it records. The test thread
 * asserts. */
#include "helpers.h"
#include "test.pb-c.h"

#include <plexus/topic.h>

enum {
    CMD_SUB = 0xc0de01,   /* px_subscribe(arg) */
    CMD_UNSUB = 0xc0de02, /* px_unsubscribe(arg) */
    CMD_PUB = 0xc0de03,   /* px_publish(arg, u64 under tag 7 with the command's value) */
    CMD_SEQ = 0xc0de04,   /* px_send 1, px_publish(arg) 2, px_send 3 to `to` (tag 9) */
    CMD_FAIL = 0xc0de05,  /* receive returns PX_EFAIL */
};

#define S_MAX 64
typedef struct sub {
    const char *init_topics[4]; /* subscribed in init */
    atomic_int fail_init;       /* init subscribes, then fails */
    const char *arg;            /* a command's topic, set by the test */
    px_ref to;                  /* CMD_SEQ's target */
    atomic_int result, acks, inits;
    atomic_int gate_closed, blocked;
    atomic_uint_least64_t got;
    uint32_t tag[S_MAX];
    uint64_t val[S_MAX];
    px_ref sender[S_MAX];
    const ProtobufCMessage *pb[S_MAX];
    uint8_t shared[S_MAX];    /* px_msg_take_pb said no on a proto payload */
    char text[S_MAX][32];     /* a Ping's text */
    uint8_t bytes_ok[S_MAX];  /* a large bytes payload read back intact */
} sub;

#define BIG 1000 /* a heap bytes payload: byte i is (uint8_t)(i * 7 + tag) */

/* Records m; `taken` is its protobuf payload if the actor took it. Every
 * field is written before `got` moves. */
static void record(sub *s, const px_msg *m, const ProtobufCMessage *taken) {
    if (atomic_load(&s->gate_closed)) {
        atomic_store(&s->blocked, 1);
        (void)PXT_POLL(!atomic_load(&s->gate_closed), 30000);
        atomic_store(&s->blocked, 0);
    }
    uint64_t n = atomic_load(&s->got);
    if (n < S_MAX) {
        const ProtobufCMessage *pb = taken != NULL ? taken : px_msg_pb(m);
        s->tag[n] = px_msg_tag(m);
        s->sender[n] = px_msg_sender(m);
        s->pb[n] = pb;
        s->shared[n] = px_msg_kind_of(m) == PX_MSG_PROTO && taken == NULL;
        size_t len = 0;
        const uint8_t *d = px_msg_data(m, &len);
        s->val[n] = len == 8 ? px_msg_get_u64(m) : len;
        if (len > 8) {
            int ok = 1;
            for (size_t i = 0; i < len; i++) {
                ok &= d[i] == (uint8_t)(i * 7 + px_msg_tag(m));
            }
            s->bytes_ok[n] = (uint8_t)ok;
        }
        if (pb != NULL && pb->descriptor == &plexus__test__ping__descriptor) {
            const Plexus__Test__Ping *p = (const Plexus__Test__Ping *)pb;
            s->val[n] = p->seq;
            snprintf(s->text[n], sizeof s->text[n], "%s", p->text);
        }
    }
    atomic_store(&s->got, n + 1);
}

static px_err sub_init(px_ctx *ctx, const px_msg *arg) {
    sub *s = pxt_msg_ptr(arg);
    px_set_state(ctx, s);
    atomic_fetch_add(&s->inits, 1);
    for (int i = 0; i < 4 && s->init_topics[i] != NULL; i++) {
        px_err e = px_subscribe(ctx, s->init_topics[i]);
        if (e != PX_OK) {
            return e;
        }
    }
    return atomic_load(&s->fail_init) ? PX_EFAIL : PX_OK;
}

static px_err publish_u64(px_ctx *ctx, const char *topic, uint32_t tag, uint64_t v) {
    px_msg *m = NULL;
    px_err e = px_msg_u64(&m, tag, v);
    if (e == PX_OK && (e = px_publish(px_ctx_system(ctx), topic, &m)) != PX_OK) {
        px_msg_free(m);
    }
    return e;
}

static px_err send_u64(px_ctx *ctx, px_ref to, uint32_t tag, uint64_t v) {
    px_msg *m = NULL;
    px_err e = px_msg_u64(&m, tag, v);
    if (e == PX_OK && (e = px_send(ctx, to, &m)) != PX_OK) {
        px_msg_free(m);
    }
    return e;
}

static px_err sub_receive(px_ctx *ctx, px_msg *m) {
    sub *s = px_state(ctx);
    px_err e;
    switch (px_msg_tag(m)) {
    case CMD_SUB:
        e = px_subscribe(ctx, s->arg);
        break;
    case CMD_UNSUB:
        e = px_unsubscribe(ctx, s->arg);
        break;
    case CMD_PUB:
        e = publish_u64(ctx, s->arg, 7, px_msg_get_u64(m));
        break;
    case CMD_SEQ:
        e = send_u64(ctx, s->to, 9, 1);
        if (e == PX_OK) {
            e = publish_u64(ctx, s->arg, 9, 2);
        }
        if (e == PX_OK) {
            e = send_u64(ctx, s->to, 9, 3);
        }
        break;
    case CMD_FAIL:
        return PX_EFAIL;
    default: {
        /* Never keeps a payload: on a shared one take_pb must say no. */
        ProtobufCMessage *pb = px_msg_kind_of(m) == PX_MSG_PROTO ? px_msg_take_pb(m) : NULL;
        record(s, m, pb);
        if (pb != NULL) {
            protobuf_c_message_free_unpacked(pb, NULL);
        }
        return PX_OK;
    }
    }
    atomic_store(&s->result, e);
    atomic_fetch_add(&s->acks, 1);
    return PX_OK;
}

static const px_behavior sub_b = {.name = "t.sub", .init = sub_init, .receive = sub_receive};

static sub *sub_new(const char *t0, const char *t1) {
    sub *s = calloc(1, sizeof *s);
    cr_assert_not_null(s);
    s->init_topics[0] = t0;
    s->init_topics[1] = t0 != NULL ? t1 : NULL;
    return s;
}

static px_ref sub_spawn(px_system *sys, sub *s, const px_spawn_opts *o) {
    return pxt_spawn(sys, &sub_b, s, o);
}

/* Has the sub actor run one command; returns its px_err. */
static px_err cmd(px_system *sys, px_ref ref, sub *s, uint32_t tag, const char *arg, uint64_t v) {
    s->arg = arg;
    int a0 = atomic_load(&s->acks);
    pxt_send_u64(sys, ref, tag, v);
    PXT_AWAIT(atomic_load(&s->acks) > a0, 5000);
    return (px_err)atomic_load(&s->result);
}

static void publish_u64_outside(px_system *sys, const char *topic, uint32_t tag, uint64_t v) {
    px_msg *m = pxt_u64(tag, v);
    px_err e = px_publish(sys, topic, &m);
    cr_assert_eq(e, PX_OK, "px_publish: %s", px_strerror(e));
    cr_assert_null(m, "a successful publish nulls the caller's pointer");
}

static uint64_t sub_got(sub *s) { return atomic_load(&s->got); }

/* Stops the actor and waits until it has ended: px_is_alive turns false
 * when it starts stopping, its subscriptions go when it finishes, and only
 * then does the `stopped` counter move. */
static void stop_and_await(px_system *sys, px_ref r) {
    uint64_t s0 = PXT_STAT(sys, stopped);
    cr_assert_eq(px_stop(sys, r), PX_OK);
    PXT_AWAIT(PXT_STAT(sys, stopped) > s0, 5000);
}

/* A barrier through the actor's mailbox: once it ran this, it handled
 * everything queued before it. */
static void drain(px_system *sys, px_ref r, sub *s) {
    cr_assert_eq(cmd(sys, r, s, CMD_SUB, "t.drain.barrier", 0), PX_OK);
    cr_assert_eq(cmd(sys, r, s, CMD_UNSUB, "t.drain.barrier", 0), PX_OK);
}

/* --- 0, 1, many ---------------------------------------------------------- */

Test(core_topic, publish_with_no_subscriber_takes_the_message_and_counts_it_unrouted,
     .timeout = 10) {
    px_system *sys = pxt_system();
    publish_u64_outside(sys, "nobody.listens", 1, 42);
    px_system_stats st = pxt_stats(sys);
    cr_assert_eq(st.published, 1);
    cr_assert_eq(st.publish_unrouted, 1);
    cr_assert_eq(st.publish_deliveries, 0);
    cr_assert_eq(st.dead_letters, 0, "nobody subscribing is not a dead letter");
    px_system_free(sys);
}

Test(core_topic, publish_reaches_the_one_subscriber_with_a_nil_sender_from_outside,
     .timeout = 10) {
    px_system *sys = pxt_system();
    sub *s = sub_new("prices", NULL);
    sub_spawn(sys, s, NULL);
    publish_u64_outside(sys, "prices", 5, 1234);
    PXT_AWAIT(sub_got(s) == 1, 5000);
    cr_assert_eq(s->tag[0], 5);
    cr_assert_eq(s->val[0], 1234);
    cr_assert(px_ref_is_nil(s->sender[0]), "published from outside actors: nil sender");
    px_system_stats st = pxt_stats(sys);
    cr_assert_eq(st.published, 1);
    cr_assert_eq(st.publish_deliveries, 1);
    cr_assert_eq(st.publish_unrouted, 0);
    px_system_free(sys);
    free(s);
}

Test(core_topic, publish_reaches_every_subscriber_once, .timeout = 10) {
    px_system *sys = pxt_system();
    enum { N = 6 };
    sub *s[N];
    for (int i = 0; i < N; i++) {
        s[i] = sub_new("news", i % 2 ? "other" : NULL);
        sub_spawn(sys, s[i], NULL);
    }
    sub *other = sub_new("unrelated", NULL);
    sub_spawn(sys, other, NULL);
    for (uint64_t v = 1; v <= 3; v++) {
        publish_u64_outside(sys, "news", 3, v);
    }
    for (int i = 0; i < N; i++) {
        PXT_AWAIT(sub_got(s[i]) == 3, 5000);
        for (int k = 0; k < 3; k++) {
            cr_assert_eq(s[i]->val[k], (uint64_t)k + 1, "subscriber %d, message %d", i, k);
        }
    }
    cr_assert_eq(pxt_stats(sys).publish_deliveries, 3 * N);
    px_system_free(sys);
    cr_assert_eq(sub_got(other), 0, "a subscriber of another topic got nothing");
    for (int i = 0; i < N; i++) {
        cr_assert_eq(sub_got(s[i]), 3, "exactly once each");
        free(s[i]);
    }
    free(other);
}

/* --- payloads ------------------------------------------------------------ */

static atomic_int ping_frees;
static void ping_free(ProtobufCMessage *pb) {
    atomic_fetch_add(&ping_frees, 1);
    protobuf_c_message_free_unpacked(pb, NULL);
}

static px_msg *ping_msg(uint64_t seq, const char *text, px_proto_free_fn fn,
                        const ProtobufCMessage **pb_out) {
    Plexus__Test__Ping *p = malloc(sizeof *p);
    cr_assert_not_null(p);
    plexus__test__ping__init(p);
    p->seq = seq;
    p->text = strdup(text);
    px_msg *m = NULL;
    cr_assert_eq(px_msg_proto(&m, &p->base, fn), PX_OK);
    if (pb_out != NULL) {
        *pb_out = &p->base;
    }
    return m;
}

Test(core_topic, a_protobuf_payload_reaches_many_subscribers_intact_and_is_freed_once,
     .timeout = 10) {
    px_system *sys = pxt_system();
    enum { N = 5 };
    sub *s[N];
    for (int i = 0; i < N; i++) {
        s[i] = sub_new("pb", NULL);
        sub_spawn(sys, s[i], NULL);
    }
    atomic_store(&ping_frees, 0);
    const ProtobufCMessage *sent = NULL;
    px_msg *m = ping_msg(77, "shared ping", ping_free, &sent);
    cr_assert_eq(px_publish(sys, "pb", &m), PX_OK);
    cr_assert_null(m);
    for (int i = 0; i < N; i++) {
        PXT_AWAIT(sub_got(s[i]) == 1, 5000);
        cr_assert_eq(s[i]->pb[0], sent, "subscriber %d read pb %p, published %p: no copy", i,
                     (const void *)s[i]->pb[0], (const void *)sent);
        cr_assert_eq(s[i]->val[0], 77);
        cr_assert_str_eq(s[i]->text[0], "shared ping");
        cr_assert(s[i]->shared[0], "px_msg_take_pb must refuse a shared payload");
    }
    PXT_AWAIT(atomic_load(&ping_frees) == 1, 5000); /* freed with the last copy */
    px_system_free(sys);
    cr_assert_eq(atomic_load(&ping_frees), 1, "freed exactly once");
    for (int i = 0; i < N; i++) {
        free(s[i]);
    }
}

Test(core_topic, one_subscriber_gets_the_published_message_itself, .timeout = 10) {
    px_system *sys = pxt_system();
    sub *s = sub_new("solo", NULL);
    sub_spawn(sys, s, NULL);
    const ProtobufCMessage *sent = NULL;
    px_msg *m = ping_msg(5, "mine", NULL, &sent);
    cr_assert_eq(px_publish(sys, "solo", &m), PX_OK);
    PXT_AWAIT(sub_got(s) == 1, 5000);
    cr_assert_eq(s->pb[0], sent, "no copy for one subscriber");
    cr_assert_not(s->shared[0], "the only recipient may take the payload");
    cr_assert_str_eq(s->text[0], "mine");
    px_system_free(sys);
    free(s);
}

static px_msg *big_msg(uint32_t tag) {
    uint8_t *d = malloc(BIG);
    cr_assert_not_null(d);
    for (size_t i = 0; i < BIG; i++) {
        d[i] = (uint8_t)(i * 7 + tag);
    }
    px_msg *m = NULL;
    cr_assert_eq(px_msg_bytes_take(&m, tag, d, BIG), PX_OK);
    return m;
}

Test(core_topic, heap_and_inline_bytes_reach_many_subscribers_intact, .timeout = 10) {
    px_system *sys = pxt_system();
    enum { N = 3 };
    sub *s[N];
    for (int i = 0; i < N; i++) {
        s[i] = sub_new("bytes", NULL);
        sub_spawn(sys, s[i], NULL);
    }
    px_msg *m = big_msg(11);
    cr_assert_eq(px_publish(sys, "bytes", &m), PX_OK);
    publish_u64_outside(sys, "bytes", 12, 99); /* inline: copied */
    for (int i = 0; i < N; i++) {
        PXT_AWAIT(sub_got(s[i]) == 2, 5000);
        cr_assert_eq(s[i]->val[0], BIG);
        cr_assert(s[i]->bytes_ok[0], "subscriber %d read the heap payload intact", i);
        cr_assert_eq(s[i]->tag[1], 12);
        cr_assert_eq(s[i]->val[1], 99);
    }
    px_system_free(sys); /* ASan: the shared buffer is freed once */
    for (int i = 0; i < N; i++) {
        free(s[i]);
    }
}

/* A payload between PX_MSG_INLINE and 64 bytes sits in a message block of
 * its own (msg.c): shared among the copies, returned once. */
Test(core_topic, block_sized_bytes_reach_many_subscribers_intact, .timeout = 10) {
    px_system *sys = pxt_system();
    enum { N = 3 };
    sub *s[N];
    for (int i = 0; i < N; i++) {
        s[i] = sub_new("blk", NULL);
        sub_spawn(sys, s[i], NULL);
    }
    static const size_t lens[] = {PX_MSG_INLINE + 1, 40, 64, 65};
    for (size_t k = 0; k < 4; k++) {
        uint8_t d[65];
        for (size_t i = 0; i < lens[k]; i++) {
            d[i] = (uint8_t)(i * 7 + 20 + k);
        }
        px_msg *m = NULL;
        cr_assert_eq(px_msg_bytes(&m, (uint32_t)(20 + k), d, lens[k]), PX_OK);
        cr_assert_eq(px_publish(sys, "blk", &m), PX_OK);
    }
    for (int i = 0; i < N; i++) {
        PXT_AWAIT(sub_got(s[i]) == 4, 5000);
        for (size_t k = 0; k < 4; k++) {
            cr_assert_eq(s[i]->val[k], lens[k]);
            cr_assert(s[i]->bytes_ok[k], "subscriber %d read payload %zu intact", i, k);
        }
    }
    px_system_free(sys); /* ASan: each block is returned once */
    for (int i = 0; i < N; i++) {
        free(s[i]);
    }
}

/* --- subscribe / unsubscribe --------------------------------------------- */

Test(core_topic, subscribing_twice_delivers_once, .timeout = 10) {
    px_system *sys = pxt_system();
    sub *s = sub_new("twice", NULL);
    px_ref r = sub_spawn(sys, s, NULL);
    cr_assert_eq(cmd(sys, r, s, CMD_SUB, "twice", 0), PX_OK, "idempotent");
    publish_u64_outside(sys, "twice", 1, 1);
    drain(sys, r, s);
    cr_assert_eq(sub_got(s), 1);
    cr_assert_eq(pxt_stats(sys).publish_deliveries, 1);
    px_system_free(sys);
    free(s);
}

Test(core_topic, unsubscribe_stops_delivery_and_says_enoent_when_not_subscribed,
     .timeout = 10) {
    px_system *sys = pxt_system();
    sub *s = sub_new("a", "b");
    px_ref r = sub_spawn(sys, s, NULL);
    cr_assert_eq(cmd(sys, r, s, CMD_UNSUB, "a", 0), PX_OK);
    cr_assert_eq(cmd(sys, r, s, CMD_UNSUB, "a", 0), PX_ENOENT);
    cr_assert_eq(cmd(sys, r, s, CMD_UNSUB, "never", 0), PX_ENOENT);
    publish_u64_outside(sys, "a", 1, 1);
    publish_u64_outside(sys, "b", 2, 2);
    PXT_AWAIT(sub_got(s) == 1, 5000);
    drain(sys, r, s);
    cr_assert_eq(sub_got(s), 1);
    cr_assert_eq(s->tag[0], 2, "still subscribed to b");
    cr_assert_eq(pxt_stats(sys).publish_unrouted, 1, "a has no subscriber left");
    cr_assert_eq(cmd(sys, r, s, CMD_SUB, "a", 0), PX_OK, "subscribing again works");
    publish_u64_outside(sys, "a", 3, 3);
    PXT_AWAIT(sub_got(s) == 2, 5000);
    cr_assert_eq(s->tag[1], 3);
    px_system_free(sys);
    free(s);
}

Test(core_topic, bad_topic_names_are_refused, .timeout = 10) {
    px_system *sys = pxt_system();
    sub *s = sub_new(NULL, NULL);
    px_ref r = sub_spawn(sys, s, NULL);
    char longest[PX_TOPIC_MAX + 1], too_long[PX_TOPIC_MAX + 2];
    memset(longest, 'x', PX_TOPIC_MAX);
    longest[PX_TOPIC_MAX] = '\0';
    memset(too_long, 'y', PX_TOPIC_MAX + 1);
    too_long[PX_TOPIC_MAX + 1] = '\0';
    cr_assert_eq(cmd(sys, r, s, CMD_SUB, NULL, 0), PX_EINVAL);
    cr_assert_eq(cmd(sys, r, s, CMD_SUB, "", 0), PX_EINVAL);
    cr_assert_eq(cmd(sys, r, s, CMD_SUB, too_long, 0), PX_EINVAL);
    cr_assert_eq(cmd(sys, r, s, CMD_UNSUB, too_long, 0), PX_EINVAL);
    cr_assert_eq(cmd(sys, r, s, CMD_UNSUB, "", 0), PX_EINVAL);
    cr_assert_eq(cmd(sys, r, s, CMD_SUB, longest, 0), PX_OK, "127 bytes is allowed");
    cr_assert_eq(px_subscribe(NULL, "x"), PX_EINVAL);

    px_msg *m = pxt_u64(1, 1);
    cr_assert_eq(px_publish(sys, "", &m), PX_EINVAL);
    cr_assert_eq(px_publish(sys, too_long, &m), PX_EINVAL);
    cr_assert_eq(px_publish(sys, NULL, &m), PX_EINVAL);
    cr_assert_eq(px_publish(NULL, "x", &m), PX_EINVAL);
    cr_assert_eq(px_system_publish_local(sys, "", &m), PX_EINVAL);
    cr_assert_not_null(m, "an error leaves the caller owning the message");
    cr_assert_eq(px_publish(sys, "x", NULL), PX_EINVAL);
    px_msg *none = NULL;
    cr_assert_eq(px_publish(sys, "x", &none), PX_EINVAL);
    cr_assert_eq(px_publish(sys, longest, &m), PX_OK);
    PXT_AWAIT(sub_got(s) == 1, 5000);
    cr_assert_eq(pxt_stats(sys).published, 1, "refused publications are not counted");
    px_system_free(sys);
    free(s);
}

Test(core_topic, a_message_over_max_msg_size_is_refused, .timeout = 10) {
    px_config cfg;
    pxt_config(&cfg);
    cfg.max_msg_size = 100;
    px_system *sys = pxt_system_with(&cfg);
    px_msg *m = big_msg(1);
    cr_assert_eq(px_publish(sys, "t", &m), PX_EMSGSIZE);
    cr_assert_not_null(m);
    px_msg_free(m);
    px_system_free(sys);
}

/* --- subscriptions die with their actor ---------------------------------- */

Test(core_topic, a_stopped_subscriber_gets_nothing_more_and_leaves_no_subscription,
     .timeout = 10) {
    px_system *sys = pxt_system();
    sub *s = sub_new("t1", "t2");
    px_ref r = sub_spawn(sys, s, NULL);
    sub *keep = sub_new("t2", NULL);
    sub_spawn(sys, keep, NULL);
    stop_and_await(sys, r);
    publish_u64_outside(sys, "t1", 1, 1);
    publish_u64_outside(sys, "t2", 2, 2);
    PXT_AWAIT(sub_got(keep) == 1, 5000);
    px_system_stats st = pxt_stats(sys);
    cr_assert_eq(st.publish_unrouted, 1, "t1 went with its only subscriber");
    cr_assert_eq(st.publish_deliveries, 1, "only the live subscriber of t2");
    cr_assert_eq(st.dead_letters, 0);
    cr_assert_eq(sub_got(s), 0);
    px_system_free(sys); /* ASan: no subscription record left behind */
    free(s);
    free(keep);
}

Test(core_topic, subscriptions_of_a_failed_init_are_dropped, .timeout = 10) {
    px_system *sys = pxt_system();
    sub *s = sub_new("doomed", NULL);
    atomic_store(&s->fail_init, 1);
    px_msg *arg = pxt_ptr_msg(s);
    cr_assert_eq(px_system_spawn(sys, &sub_b, &arg, NULL, NULL), PX_EINIT);
    px_msg_free(arg);
    publish_u64_outside(sys, "doomed", 1, 1);
    cr_assert_eq(pxt_stats(sys).publish_unrouted, 1);
    px_system_free(sys);
    free(s);
}

Test(core_topic, a_supervised_restart_keeps_the_subscriptions, .timeout = 10) {
    px_config cfg;
    pxt_config(&cfg);
    cfg.root_policy = PX_ROOT_RESTART;
    cfg.log_level = PX_LOG_OFF; /* the failure is the test's own doing */
    px_system *sys = pxt_system_with(&cfg);
    sub *s = sub_new("kept", NULL);
    px_ref r = sub_spawn(sys, s, NULL);
    cr_assert_eq(cmd(sys, r, s, CMD_SUB, "later", 0), PX_OK);
    pxt_send_u64(sys, r, CMD_FAIL, 0);
    PXT_AWAIT(atomic_load(&s->inits) == 2, 5000); /* init ran again, subscribing again */
    publish_u64_outside(sys, "kept", 1, 1);
    publish_u64_outside(sys, "later", 2, 2);
    PXT_AWAIT(sub_got(s) == 2, 5000);
    drain(sys, r, s);
    cr_assert_eq(sub_got(s), 2, "once each: the re-subscription in init was idempotent");
    px_system_free(sys);
    free(s);
}

/* --- mailboxes and order ------------------------------------------------- */

Test(core_topic, a_full_bounded_subscriber_does_not_stop_the_others, .timeout = 10) {
    px_system *sys = pxt_system();
    px_mailbox_opts mo = {.capacity = 1, .overflow = PX_OVERFLOW_ERROR};
    px_spawn_opts o = {.mailbox = &mo};
    sub *slow = sub_new("feed", NULL);
    px_ref sr = sub_spawn(sys, slow, &o);
    sub *fast = sub_new("feed", NULL);
    sub_spawn(sys, fast, NULL);
    /* Park the slow one in a receive: its one mailbox slot is then free. */
    atomic_store(&slow->gate_closed, 1);
    pxt_send_u64(sys, sr, 1, 0);
    PXT_AWAIT(atomic_load(&slow->blocked) == 1, 5000);
    for (uint64_t v = 1; v <= 5; v++) {
        publish_u64_outside(sys, "feed", 2, v);
    }
    PXT_AWAIT(sub_got(fast) == 5, 5000);
    px_system_stats st = pxt_stats(sys);
    cr_assert_eq(st.publish_refused, 4, "one fitted, four were refused");
    cr_assert_eq(st.publish_deliveries, 5 + 1);
    cr_assert_geq(st.rejected, 4);
    atomic_store(&slow->gate_closed, 0);
    PXT_AWAIT(sub_got(slow) == 2, 5000); /* the parking message and the one that fitted */
    cr_assert_eq(slow->val[1], 1);
    px_system_free(sys);
    free(slow);
    free(fast);
}

Test(core_topic, an_actor_publication_keeps_its_order_with_its_sends_and_names_it_sender,
     .timeout = 10) {
    px_system *sys = pxt_system();
    sub *rcv = sub_new("ordered", NULL);
    px_ref rr = sub_spawn(sys, rcv, NULL);
    sub *pubr = sub_new(NULL, NULL);
    px_ref pr = sub_spawn(sys, pubr, NULL);
    pubr->to = rr;
    for (int round = 0; round < 5; round++) {
        cr_assert_eq(cmd(sys, pr, pubr, CMD_SEQ, "ordered", 0), PX_OK);
    }
    PXT_AWAIT(sub_got(rcv) == 15, 5000);
    for (int i = 0; i < 15; i++) {
        cr_assert_eq(rcv->val[i], (uint64_t)(i % 3) + 1, "message %d", i);
        cr_assert(px_ref_eq(rcv->sender[i], pr), "the publishing actor is the sender");
    }
    px_system_free(sys);
    free(rcv);
    free(pubr);
}

Test(core_topic, publish_after_shutdown_from_outside_is_closed, .timeout = 10) {
    px_system *sys = pxt_system();
    cr_assert_eq(px_system_shutdown(sys), PX_OK);
    px_msg *m = pxt_u64(1, 1);
    cr_assert_eq(px_publish(sys, "late", &m), PX_ECLOSED);
    cr_assert_not_null(m);
    px_msg_free(m);
    px_system_free(sys);
}

/* --- router hooks -------------------------------------------------------- */

#define EV_MAX 32
typedef struct hooks {
    pthread_mutex_t mu;
    int nev;
    char ev_topic[EV_MAX][PX_TOPIC_MAX + 1];
    int ev_on[EV_MAX];
    int npub;
    char pub_topic[EV_MAX][PX_TOPIC_MAX + 1];
    uint64_t pub_val[EV_MAX];
    atomic_int busy, overlaps; /* calls that ran at the same time */
} hooks;

static void on_interest(void *arg, const char *topic, int on) {
    hooks *h = arg;
    if (atomic_fetch_add(&h->busy, 1) != 0) {
        atomic_fetch_add(&h->overlaps, 1);
    }
    pthread_mutex_lock(&h->mu);
    if (h->nev < EV_MAX) {
        snprintf(h->ev_topic[h->nev], sizeof h->ev_topic[0], "%s", topic);
        h->ev_on[h->nev] = on;
    }
    h->nev++;
    pthread_mutex_unlock(&h->mu);
    atomic_fetch_sub(&h->busy, 1);
}

static void on_publish(void *arg, const char *topic, const px_msg *m) {
    hooks *h = arg;
    pthread_mutex_lock(&h->mu);
    if (h->npub < EV_MAX) {
        snprintf(h->pub_topic[h->npub], sizeof h->pub_topic[0], "%s", topic);
        h->pub_val[h->npub] = px_msg_get_u64(m);
    }
    h->npub++;
    pthread_mutex_unlock(&h->mu);
}

static px_err no_send(void *arg, px_ref to, px_msg *m) {
    (void)arg;
    (void)to;
    (void)m;
    return PX_EUNREACHABLE;
}

static int hooks_nev(hooks *h) {
    pthread_mutex_lock(&h->mu);
    int n = h->nev;
    pthread_mutex_unlock(&h->mu);
    return n;
}

static int hooks_npub(hooks *h) {
    pthread_mutex_lock(&h->mu);
    int n = h->npub;
    pthread_mutex_unlock(&h->mu);
    return n;
}

static void install(px_system *sys, hooks *h) {
    memset(h, 0, sizeof *h);
    pthread_mutex_init(&h->mu, NULL);
    px_router r = {.send = no_send, .arg = h, .topic_interest = on_interest,
                   .publish = on_publish};
    px_system_set_router(sys, &r);
}

static void assert_ev(hooks *h, int i, const char *topic, int on) {
    cr_assert_str_eq(h->ev_topic[i], topic, "event %d", i);
    cr_assert_eq(h->ev_on[i], on, "event %d on %s", i, topic);
}

Test(core_topic, topic_interest_tells_the_first_and_the_last_local_subscriber,
     .timeout = 10) {
    px_system *sys = pxt_system();
    hooks h;
    install(sys, &h);
    sub *a = sub_new("x", NULL);
    px_ref ar = sub_spawn(sys, a, NULL);
    PXT_AWAIT(hooks_nev(&h) == 1, 5000);
    assert_ev(&h, 0, "x", 1);
    sub *b = sub_new("x", "y");
    px_ref br = sub_spawn(sys, b, NULL);
    PXT_AWAIT(hooks_nev(&h) == 2, 5000);
    assert_ev(&h, 1, "y", 1); /* x had a subscriber already */
    cr_assert_eq(cmd(sys, ar, a, CMD_UNSUB, "x", 0), PX_OK);
    cr_assert_eq(cmd(sys, br, b, CMD_UNSUB, "x", 0), PX_OK);
    PXT_AWAIT(hooks_nev(&h) == 3, 5000);
    assert_ev(&h, 2, "x", 0);
    cr_assert_eq(cmd(sys, ar, a, CMD_SUB, "x", 0), PX_OK);
    PXT_AWAIT(hooks_nev(&h) == 4, 5000);
    assert_ev(&h, 3, "x", 1);
    /* The last subscribers end: x goes with a, y with b. */
    stop_and_await(sys, ar);
    PXT_AWAIT(hooks_nev(&h) == 5, 5000);
    assert_ev(&h, 4, "x", 0);
    stop_and_await(sys, br);
    PXT_AWAIT(hooks_nev(&h) == 6, 5000);
    assert_ev(&h, 5, "y", 0);
    cr_assert_eq(atomic_load(&h.overlaps), 0);
    px_system_free(sys);
    cr_assert_eq(h.nev, 6, "nothing more at shutdown");
    free(a);
    free(b);
}

Test(core_topic, the_publish_hook_sees_each_publication_but_not_publish_local,
     .timeout = 10) {
    px_system *sys = pxt_system();
    hooks h;
    install(sys, &h);
    sub *s = sub_new("seen", NULL);
    px_ref r = sub_spawn(sys, s, NULL);
    publish_u64_outside(sys, "seen", 1, 10);
    publish_u64_outside(sys, "nobody.here", 1, 11);
    cr_assert_eq(cmd(sys, r, s, CMD_PUB, "seen", 12), PX_OK); /* from an actor */
    cr_assert_eq(hooks_npub(&h), 3);
    cr_assert_str_eq(h.pub_topic[0], "seen");
    cr_assert_eq(h.pub_val[0], 10);
    cr_assert_str_eq(h.pub_topic[1], "nobody.here");
    cr_assert_eq(h.pub_val[1], 11);
    cr_assert_eq(h.pub_val[2], 12);

    px_msg *m = pxt_u64(4, 13);
    cr_assert_eq(px_system_publish_local(sys, "seen", &m), PX_OK);
    cr_assert_null(m);
    m = pxt_u64(4, 14);
    cr_assert_eq(px_system_publish_local(sys, "nobody.here", &m), PX_OK);
    PXT_AWAIT(sub_got(s) == 3, 5000);
    cr_assert_eq(s->val[2], 13, "publish_local delivers locally");
    cr_assert(px_ref_is_nil(s->sender[2]));
    cr_assert_eq(hooks_npub(&h), 3, "publish_local never calls the publish hook");
    px_system_stats st = pxt_stats(sys);
    cr_assert_eq(st.published, 3);
    cr_assert_eq(st.publish_received, 2);
    cr_assert_eq(st.publish_unrouted, 1, "handed to the router is not unrouted; "
                                         "a received one with no subscriber is");
    px_system_free(sys);
    free(s);
}

Test(core_topic, actors_of_an_earlier_incarnation_are_cut_off_from_other_nodes_topics,
     .timeout = 10) {
    px_system *sys = pxt_system();
    hooks h;
    install(sys, &h);
    sub *old = sub_new("inc", NULL);
    px_ref oldr = sub_spawn(sys, old, NULL);
    cr_assert_eq(px_system_reincarnate(sys, NULL), PX_OK);
    sub *cur = sub_new("inc", NULL);
    sub_spawn(sys, cur, NULL);
    px_msg *m = pxt_u64(1, 1);
    cr_assert_eq(px_system_publish_local(sys, "inc", &m), PX_OK);
    PXT_AWAIT(sub_got(cur) == 1, 5000);
    cr_assert_eq(cmd(sys, oldr, old, CMD_PUB, "inc", 2), PX_OK);
    PXT_AWAIT(sub_got(cur) == 2, 5000);
    drain(sys, oldr, old);
    cr_assert_eq(sub_got(old), 1, "only its own node's publication reached the old actor");
    cr_assert_eq(old->val[0], 2);
    cr_assert_eq(hooks_npub(&h), 0, "the old actor's publication stays on this node");
    px_system_free(sys);
    free(old);
    free(cur);
}

/* --- px_system_topics ---------------------------------------------------- */

typedef struct names {
    int n;
    char t[8][PX_TOPIC_MAX + 1];
} names;

static void collect(void *arg, const char *topic) {
    names *ns = arg;
    if (ns->n < 8) {
        snprintf(ns->t[ns->n], sizeof ns->t[0], "%s", topic);
    }
    ns->n++;
}

static int has(const names *ns, const char *t) {
    for (int i = 0; i < ns->n && i < 8; i++) {
        if (strcmp(ns->t[i], t) == 0) {
            return 1;
        }
    }
    return 0;
}

Test(core_topic, px_system_topics_lists_each_topic_with_a_local_subscriber_once,
     .timeout = 10) {
    px_system *sys = pxt_system();
    names ns = {0};
    cr_assert_eq(px_system_topics(sys, collect, &ns), PX_OK);
    cr_assert_eq(ns.n, 0);
    cr_assert_eq(px_system_topics(sys, NULL, &ns), PX_EINVAL);
    cr_assert_eq(px_system_topics(NULL, collect, &ns), PX_EINVAL);
    sub *a = sub_new("alpha", "beta");
    px_ref ar = sub_spawn(sys, a, NULL);
    sub *b = sub_new("beta", "gamma");
    sub_spawn(sys, b, NULL);
    cr_assert_eq(px_system_topics(sys, collect, &ns), PX_OK);
    cr_assert_eq(ns.n, 3);
    cr_assert(has(&ns, "alpha") && has(&ns, "beta") && has(&ns, "gamma"));
    stop_and_await(sys, ar);
    memset(&ns, 0, sizeof ns);
    cr_assert_eq(px_system_topics(sys, collect, &ns), PX_OK);
    cr_assert_eq(ns.n, 2);
    cr_assert(has(&ns, "beta") && has(&ns, "gamma"));
    px_system_free(sys);
    free(a);
    free(b);
}

/* Many topics and subscribers: the table and the subscriber arrays grow
 * and shrink (copy-on-write) while deliveries stay exact. */
Test(core_topic, many_topics_and_subscribers_grow_and_shrink_the_broker, .timeout = 30) {
    px_system *sys = pxt_system();
    enum { N = 40 };
    static char tn[N][16];
    sub *s[N];
    px_ref r[N];
    for (int i = 0; i < N; i++) {
        snprintf(tn[i], sizeof tn[i], "topic.%d", i);
        s[i] = sub_new("all", tn[i]);
        r[i] = sub_spawn(sys, s[i], NULL);
    }
    publish_u64_outside(sys, "all", 1, 1);
    for (int i = 0; i < N; i++) {
        publish_u64_outside(sys, tn[i], 2, (uint64_t)i);
    }
    for (int i = 0; i < N; i++) {
        PXT_AWAIT(sub_got(s[i]) == 2, 5000);
    }
    for (int i = 0; i < N; i += 2) {
        stop_and_await(sys, r[i]);
    }
    publish_u64_outside(sys, "all", 3, 3);
    for (int i = 1; i < N; i += 2) {
        PXT_AWAIT(sub_got(s[i]) == 3, 5000);
        cr_assert_eq(s[i]->tag[2], 3);
    }
    names ns = {0};
    cr_assert_eq(px_system_topics(sys, collect, &ns), PX_OK);
    cr_assert_eq(ns.n, 1 + N / 2);
    px_system_stats st = pxt_stats(sys);
    cr_assert_eq(st.publish_deliveries, N + N + N / 2);
    px_system_free(sys);
    for (int i = 0; i < N; i++) {
        free(s[i]);
    }
}
