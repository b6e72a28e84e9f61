/* Tests for sends between actors, which go through the worker's outbox (a
 * chain per target, pushed at the end of the turn): order per sender across
 * chain and outbox limits, init's sends not overtaken by the child's first
 * turn, and messages buffered for a target that stops becoming counted dead
 * letters. */
#include "helpers.h"

/* --- FIFO per sender over many targets and long runs ------------------- */

#define FO_SENDERS 3
#define FO_TARGETS 12 /* more than a worker's outbox holds */
#define FO_PER_TURN 700 /* per target: longer than one chain */
#define FO_TURNS 5

typedef struct fo_target {
    uint64_t next[FO_SENDERS]; /* expected sequence number per sender */
    atomic_int violations;
    atomic_uint_least64_t got;
} fo_target;

typedef struct fo_sender {
    uint32_t idx;
    px_ref to[FO_TARGETS];
    uint64_t seq[FO_TARGETS];
    atomic_int errors;
} fo_sender;

static px_err fo_target_receive(px_ctx *ctx, px_msg *m) {
    fo_target *t = px_state(ctx);
    uint32_t s = px_msg_tag(m);
    if (s >= FO_SENDERS || px_msg_get_u64(m) != t->next[s]) {
        atomic_fetch_add(&t->violations, 1);
    } else {
        t->next[s]++;
    }
    atomic_fetch_add(&t->got, 1);
    return PX_OK;
}
static const px_behavior fo_target_b = {.name = "t.fo.target", .init = pxt_init_ptr_state,
                                        .receive = fo_target_receive};

/* One turn: FO_PER_TURN rounds over all targets, interleaved. */
static px_err fo_sender_receive(px_ctx *ctx, px_msg *m) {
    (void)m;
    fo_sender *s = px_state(ctx);
    for (int i = 0; i < FO_PER_TURN; i++) {
        for (int j = 0; j < FO_TARGETS; j++) {
            px_msg *out = NULL;
            if (px_msg_u64(&out, s->idx, s->seq[j]++) != PX_OK ||
                px_send(ctx, s->to[j], &out) != PX_OK) {
                atomic_fetch_add(&s->errors, 1);
                px_msg_free(out);
            }
        }
    }
    return PX_OK;
}
static const px_behavior fo_sender_b = {.name = "t.fo.sender", .init = pxt_init_ptr_state,
                                        .receive = fo_sender_receive};

Test(core_outbox, order_per_sender_holds_over_many_targets_and_long_runs, .timeout = 60) {
    px_system *sys = pxt_system();
    static fo_target targets[FO_TARGETS];
    static fo_sender senders[FO_SENDERS];
    memset(targets, 0, sizeof targets);
    memset(senders, 0, sizeof senders);
    px_ref tref[FO_TARGETS], sref[FO_SENDERS];
    for (int j = 0; j < FO_TARGETS; j++) {
        tref[j] = pxt_spawn(sys, &fo_target_b, &targets[j], NULL);
    }
    for (uint32_t i = 0; i < FO_SENDERS; i++) {
        senders[i].idx = i;
        memcpy(senders[i].to, tref, sizeof tref);
        sref[i] = pxt_spawn(sys, &fo_sender_b, &senders[i], NULL);
    }
    for (int turn = 0; turn < FO_TURNS; turn++) {
        for (int i = 0; i < FO_SENDERS; i++) {
            pxt_send_u64(sys, sref[i], 1, 0);
        }
    }
    uint64_t per_target = (uint64_t)FO_SENDERS * FO_TURNS * FO_PER_TURN;
    for (int j = 0; j < FO_TARGETS; j++) {
        PXT_AWAIT(atomic_load(&targets[j].got) == per_target, 30000);
        cr_assert_eq(atomic_load(&targets[j].violations), 0, "target %d saw out-of-order", j);
    }
    for (int i = 0; i < FO_SENDERS; i++) {
        cr_assert_eq(atomic_load(&senders[i].errors), 0);
    }
    cr_assert_eq(PXT_STAT(sys, dead_letters), 0);
    px_system_free(sys);
}

/* --- what init sends is not overtaken by the child's first turn -------- */

typedef struct io_state {
    pxt_rec *rec;           /* the observer */
    px_ref rec_ref;
    _Atomic uint64_t child; /* child ref id, published by the parent */
    px_ref child_ref;
    atomic_int child_ran;   /* the child handled "go" */
    atomic_int waited_out;  /* the parent's bounded wait gave up */
} io_state;

static io_state io;

static px_err io_child_init(px_ctx *ctx, const px_msg *arg) {
    (void)arg;
    px_msg *m = pxt_u64(7, 0); /* seq 0, from init */
    return px_send(ctx, io.rec_ref, &m);
}
static px_err io_child_receive(px_ctx *ctx, px_msg *m) {
    (void)m;
    px_msg *out = pxt_u64(7, 1); /* seq 1, from the first turn */
    px_err e = px_send(ctx, io.rec_ref, &out);
    atomic_store(&io.child_ran, 1);
    return e;
}
static const px_behavior io_child_b = {.name = "t.io.child", .init = io_child_init,
                                       .receive = io_child_receive};

/* The parent spawns the child and then keeps its turn going until the child
 * has run on another worker (bounded): if init's message were still waiting
 * in this worker's outbox, the child's seq 1 would arrive first. */
static px_err io_parent_receive(px_ctx *ctx, px_msg *m) {
    (void)m;
    px_ref child;
    px_err e = px_spawn(ctx, &io_child_b, NULL, NULL, &child);
    if (e != PX_OK) {
        return e;
    }
    io.child_ref = child;
    atomic_store(&io.child, 1);
    if (!PXT_POLL(atomic_load(&io.child_ran), 5000)) {
        atomic_store(&io.waited_out, 1);
    }
    return PX_OK;
}
static const px_behavior io_parent_b = {.name = "t.io.parent", .receive = io_parent_receive};

Test(core_outbox, what_init_sent_arrives_before_what_the_childs_first_turn_sent, .timeout = 30) {
    px_system *sys = pxt_system();
    memset(&io, 0, sizeof io);
    io.rec = pxt_rec_new();
    io.rec_ref = pxt_rec_spawn(sys, io.rec, NULL);
    px_ref parent = PX_REF_NIL;
    cr_assert_eq(px_system_spawn(sys, &io_parent_b, NULL, NULL, &parent), PX_OK);
    pxt_send_u64(sys, parent, 1, 0);
    PXT_AWAIT(atomic_load(&io.child) == 1, 5000);
    pxt_send_u64(sys, io.child_ref, 2, 0); /* "go", from outside: runs on another worker */
    PXT_AWAIT(pxt_rec_count(io.rec) == 2, 10000);
    cr_assert_eq(atomic_load(&io.waited_out), 0, "the child never ran during the parent's turn");
    cr_assert_eq(io.rec->val[0], 0, "init's message must come first");
    cr_assert_eq(io.rec->val[1], 1);
    px_system_free(sys);
    free(io.rec);
}

/* --- buffered messages to a target that stops meanwhile ---------------- */

#define DS_N 200
typedef struct ds_state {
    px_ref target;
    atomic_int errors;
    atomic_int done;
} ds_state;

/* Sends DS_N messages (long chains go out during the turn, the rest at its
 * end), then stops the target: the stop signal overtakes whatever was still
 * buffered, which must become dead letters — none may vanish. */
static px_err ds_receive(px_ctx *ctx, px_msg *m) {
    (void)m;
    ds_state *s = px_state(ctx);
    for (int i = 0; i < DS_N; i++) {
        px_msg *out = pxt_u64(3, (uint64_t)i);
        if (px_send(ctx, s->target, &out) != PX_OK) {
            atomic_fetch_add(&s->errors, 1);
            px_msg_free(out);
        }
    }
    if (px_stop(px_ctx_system(ctx), s->target) != PX_OK) {
        atomic_fetch_add(&s->errors, 1);
    }
    atomic_store(&s->done, 1);
    return PX_OK;
}
static const px_behavior ds_b = {.name = "t.ds", .init = pxt_init_ptr_state,
                                 .receive = ds_receive};

Test(core_outbox, messages_buffered_for_a_target_that_stops_become_dead_letters, .timeout = 30) {
    px_system *sys = pxt_system();
    pxt_rec *r = pxt_rec_new();
    static ds_state s;
    memset(&s, 0, sizeof s);
    s.target = pxt_rec_spawn(sys, r, NULL);
    px_ref sender = pxt_spawn(sys, &ds_b, &s, NULL);
    uint64_t dl0 = PXT_STAT(sys, dead_letters);
    pxt_send_u64(sys, sender, 1, 0);
    PXT_AWAIT(atomic_load(&s.done) == 1, 5000);
    PXT_AWAIT(atomic_load(&r->stopped) == 1, 5000);
    PXT_AWAIT(pxt_rec_count(r) + (PXT_STAT(sys, dead_letters) - dl0) == DS_N, 10000);
    uint64_t got = pxt_rec_count(r);
    cr_assert_lt(got, DS_N, "the stop was sent before the turn ended: some must be dead letters");
    for (uint64_t i = 0; i < got; i++) {
        cr_assert_eq(r->val[i], i, "what arrived is the prefix, in order");
    }
    cr_assert_eq(atomic_load(&s.errors), 0);
    px_system_free(sys);
    free(r);
}
