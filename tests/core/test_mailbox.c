/* Tests for mailboxes: per-sender FIFO order, the bounded overflow
 * policies, depth and high-water mark. */
#include "helpers.h"

/* --- FIFO order -------------------------------------------------------- */

#define N_SENDERS 4
#define PER_SENDER 5000

typedef struct fifo_arg {
    px_system *sys;
    px_ref to;
    uint32_t sender;
    atomic_int errors;
} fifo_arg;

static void *fifo_sender_thread(void *p) {
    fifo_arg *a = p;
    for (uint64_t i = 1; i <= PER_SENDER; i++) {
        px_msg *m = NULL;
        if (px_msg_u64(&m, a->sender, i) != PX_OK || px_system_send(a->sys, a->to, &m) != PX_OK) {
            atomic_fetch_add(&a->errors, 1);
            px_msg_free(m);
        }
    }
    return NULL;
}

/* Checks that, for each tag 1..n, the recorded values are 1, 2, 3, ... */
static void assert_per_sender_order(pxt_rec *r, uint32_t nsenders, uint64_t per_sender) {
    uint64_t next[16] = {0};
    uint64_t n = pxt_rec_count(r);
    cr_assert_eq(n, nsenders * per_sender);
    for (uint64_t i = 0; i < n; i++) {
        uint32_t s = r->tag[i];
        cr_assert(s >= 1 && s <= nsenders, "unexpected tag %u", s);
        cr_assert_eq(r->val[i], next[s] + 1, "sender %u: got %llu after %llu (message %llu)", s,
                     (unsigned long long)r->val[i], (unsigned long long)next[s],
                     (unsigned long long)i);
        next[s] = r->val[i];
    }
    for (uint32_t s = 1; s <= nsenders; s++) {
        cr_assert_eq(next[s], per_sender);
    }
}

Test(core_mailbox, pop_returns_messages_in_fifo_order_per_external_sender, .timeout = 30) {
    px_system *sys = pxt_system();
    pxt_rec *r = pxt_rec_new();
    px_ref a = pxt_rec_spawn(sys, r, NULL);
    pthread_t th[N_SENDERS];
    fifo_arg args[N_SENDERS];
    for (int i = 0; i < N_SENDERS; i++) {
        args[i] = (fifo_arg){.sys = sys, .to = a, .sender = (uint32_t)i + 1};
        cr_assert_eq(pthread_create(&th[i], NULL, fifo_sender_thread, &args[i]), 0);
    }
    for (int i = 0; i < N_SENDERS; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(atomic_load(&args[i].errors), 0);
    }
    PXT_AWAIT(pxt_rec_count(r) == N_SENDERS * PER_SENDER, 20000);
    assert_per_sender_order(r, N_SENDERS, PER_SENDER);
    cr_assert(px_ref_is_nil(r->sender[0]), "a send from outside actors has a nil sender");
    px_system_free(sys);
    free(r);
}

/* A sender actor: on any message, sends PER_SENDER numbered messages with
 * its own tag to `to`. */
typedef struct burst {
    px_ref to;
    uint32_t tag;
    atomic_int errors;
} burst;

static px_err burst_receive(px_ctx *ctx, px_msg *m) {
    (void)m;
    burst *b = px_state(ctx);
    for (uint64_t i = 1; i <= PER_SENDER; i++) {
        px_msg *out = NULL;
        if (px_msg_u64(&out, b->tag, i) != PX_OK || px_send(ctx, b->to, &out) != PX_OK) {
            atomic_fetch_add(&b->errors, 1);
            px_msg_free(out);
        }
    }
    return PX_OK;
}
static const px_behavior burst_b = {.name = "t.burst", .init = pxt_init_ptr_state,
                                    .receive = burst_receive};

Test(core_mailbox, pop_returns_messages_in_fifo_order_per_actor_sender, .timeout = 30) {
    px_system *sys = pxt_system();
    pxt_rec *r = pxt_rec_new();
    px_ref a = pxt_rec_spawn(sys, r, NULL);
    burst b[N_SENDERS];
    px_ref br[N_SENDERS];
    for (int i = 0; i < N_SENDERS; i++) {
        b[i] = (burst){.to = a, .tag = (uint32_t)i + 1};
        br[i] = pxt_spawn(sys, &burst_b, &b[i], NULL);
    }
    for (int i = 0; i < N_SENDERS; i++) {
        pxt_send_u64(sys, br[i], 0, 0);
    }
    PXT_AWAIT(pxt_rec_count(r) == N_SENDERS * PER_SENDER, 20000);
    for (int i = 0; i < N_SENDERS; i++) {
        cr_assert_eq(atomic_load(&b[i].errors), 0);
    }
    assert_per_sender_order(r, N_SENDERS, PER_SENDER);
    for (uint64_t i = 0; i < N_SENDERS * PER_SENDER; i++) {
        cr_assert(px_ref_eq(r->sender[i], br[r->tag[i] - 1]), "message %llu has the wrong sender",
                  (unsigned long long)i);
    }
    px_system_free(sys);
    free(r);
}

Test(core_mailbox, pop_returns_messages_in_fifo_order_in_a_bounded_mailbox, .timeout = 30) {
    px_system *sys = pxt_system();
    pxt_rec *r = pxt_rec_new();
    px_mailbox_opts mb = {.capacity = 64, .overflow = PX_OVERFLOW_BLOCK, .block_timeout_ms = 10000};
    px_spawn_opts so = {.mailbox = &mb};
    px_ref a = pxt_rec_spawn(sys, r, &so);
    pthread_t th[N_SENDERS];
    fifo_arg args[N_SENDERS];
    for (int i = 0; i < N_SENDERS; i++) {
        args[i] = (fifo_arg){.sys = sys, .to = a, .sender = (uint32_t)i + 1};
        cr_assert_eq(pthread_create(&th[i], NULL, fifo_sender_thread, &args[i]), 0);
    }
    for (int i = 0; i < N_SENDERS; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(atomic_load(&args[i].errors), 0, "a blocking send into a draining mailbox failed");
    }
    PXT_AWAIT(pxt_rec_count(r) == N_SENDERS * PER_SENDER, 20000);
    assert_per_sender_order(r, N_SENDERS, PER_SENDER);
    px_system_free(sys);
    free(r);
}

/* --- bounded policies -------------------------------------------------- */

static px_ref spawn_bounded(px_system *sys, pxt_rec *r, uint32_t cap, px_overflow ov,
                            uint32_t block_ms) {
    px_mailbox_opts mb = {.capacity = cap, .overflow = ov, .block_timeout_ms = block_ms};
    px_spawn_opts so = {.mailbox = &mb};
    return pxt_rec_spawn(sys, r, &so);
}

/* Parks the actor on message 0 and fills its mailbox with 1..cap. */
static void park_and_fill(px_system *sys, pxt_rec *r, px_ref a, uint32_t cap) {
    pxt_rec_park(sys, r, a, 1, 0);
    for (uint32_t i = 1; i <= cap; i++) {
        pxt_send_u64(sys, a, 1, i);
    }
}

Test(core_mailbox, block_policy_times_out_an_external_sender_and_leaves_it_the_message,
     .timeout = 20) {
    px_system *sys = pxt_system();
    pxt_rec *r = pxt_rec_new();
    px_ref a = spawn_bounded(sys, r, 4, PX_OVERFLOW_BLOCK, 200);
    park_and_fill(sys, r, a, 4);
    px_msg *m = pxt_u64(1, 99);
    int64_t t0 = pxt_now_ms();
    px_err e = px_system_send(sys, a, &m);
    int64_t took = pxt_now_ms() - t0;
    cr_assert_eq(e, PX_ETIMEDOUT, "got %s", px_errname(e));
    cr_assert_not_null(m, "on error the caller still owns the message");
    cr_assert_geq(took, 190, "the sender waited only %lld ms of block_timeout_ms=200",
                  (long long)took);
    cr_assert_lt(took, 5000);
    px_msg_free(m);
    pxt_rec_open(r);
    PXT_AWAIT(pxt_rec_count(r) == 5, 5000);
    for (uint64_t i = 0; i < 5; i++) {
        cr_assert_eq(r->val[i], i, "the timed-out message must not be queued");
    }
    px_system_free(sys);
    free(r);
}

typedef struct opener {
    pxt_rec *r;
} opener;
static void *open_gate_thread(void *p) {
    opener *o = p;
    pxt_rec_open(o->r);
    return NULL;
}

Test(core_mailbox, block_policy_lets_an_external_sender_in_once_space_frees, .timeout = 20) {
    px_system *sys = pxt_system();
    pxt_rec *r = pxt_rec_new();
    px_ref a = spawn_bounded(sys, r, 4, PX_OVERFLOW_BLOCK, 10000);
    park_and_fill(sys, r, a, 4);
    opener o = {r};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, open_gate_thread, &o), 0);
    px_msg *m = pxt_u64(1, 5);
    px_err e = px_system_send(sys, a, &m);
    pthread_join(th, NULL);
    cr_assert_eq(e, PX_OK, "got %s", px_errname(e));
    cr_assert_null(m);
    PXT_AWAIT(pxt_rec_count(r) == 6, 5000);
    for (uint64_t i = 0; i < 6; i++) {
        cr_assert_eq(r->val[i], i);
    }
    px_system_free(sys);
    free(r);
}

/* An actor that, on any message, sends one u64 to `to` and records the
 * result and how long the send took. */
typedef struct prober {
    px_ref to;
    int via_system_send; /* use px_system_send instead of px_send */
    atomic_int done;
    atomic_int result;
    atomic_llong took_ms;
    atomic_int msg_kept;
} prober;

static px_err prober_receive(px_ctx *ctx, px_msg *m) {
    (void)m;
    prober *p = px_state(ctx);
    px_msg *out = NULL;
    px_msg_u64(&out, 1, 1000);
    int64_t t0 = pxt_now_ms();
    px_err e = p->via_system_send ? px_system_send(px_ctx_system(ctx), p->to, &out)
                                  : px_send(ctx, p->to, &out);
    atomic_store(&p->took_ms, pxt_now_ms() - t0);
    atomic_store(&p->msg_kept, out != NULL);
    px_msg_free(out);
    atomic_store(&p->result, e);
    atomic_store(&p->done, 1);
    return PX_OK;
}
static const px_behavior prober_b = {.name = "t.prober", .init = pxt_init_ptr_state,
                                     .receive = prober_receive};

/* Spawns a prober for p (whose target is parked and full), has it try its
 * one send and waits until it did. */
static void run_prober(px_system *sys, prober *p) {
    px_ref pr = pxt_spawn(sys, &prober_b, p, NULL);
    pxt_send_u64(sys, pr, 0, 0);
    PXT_AWAIT(atomic_load(&p->done), 10000);
}

Test(core_mailbox, block_policy_fails_at_once_with_efull_from_actor_context, .timeout = 20) {
    px_system *sys = pxt_system();
    pxt_rec *r = pxt_rec_new();
    px_ref a = spawn_bounded(sys, r, 4, PX_OVERFLOW_BLOCK, 5000);
    park_and_fill(sys, r, a, 4);
    prober p = {.to = a};
    run_prober(sys, &p);
    cr_assert_eq(atomic_load(&p.result), PX_EFULL, "got %s", px_errname(atomic_load(&p.result)));
    cr_assert(atomic_load(&p.msg_kept), "on PX_EFULL the actor still owns the message");
    cr_assert_lt(atomic_load(&p.took_ms), 1000, "a worker must not block (took %lld ms)",
                 (long long)atomic_load(&p.took_ms));
    pxt_rec_open(r);
    PXT_AWAIT(pxt_rec_count(r) == 5, 5000);
    px_system_free(sys);
    free(r);
}

Test(core_mailbox, block_policy_system_send_from_a_worker_fails_at_once_with_efull,
     .timeout = 20) {
    px_system *sys = pxt_system();
    pxt_rec *r = pxt_rec_new();
    px_ref a = spawn_bounded(sys, r, 4, PX_OVERFLOW_BLOCK, 5000);
    park_and_fill(sys, r, a, 4);
    prober p = {.to = a, .via_system_send = 1};
    run_prober(sys, &p);
    cr_assert_eq(atomic_load(&p.result), PX_EFULL, "got %s", px_errname(atomic_load(&p.result)));
    cr_assert(atomic_load(&p.msg_kept));
    cr_assert_lt(atomic_load(&p.took_ms), 1000, "px_system_send blocked a worker for %lld ms",
                 (long long)atomic_load(&p.took_ms));
    pxt_rec_open(r);
    PXT_AWAIT(pxt_rec_count(r) == 5, 5000);
    px_system_free(sys);
    free(r);
}

Test(core_mailbox, drop_newest_policy_counts_the_drop_and_returns_ok, .timeout = 20) {
    px_system *sys = pxt_system();
    pxt_rec *r = pxt_rec_new();
    px_ref a = spawn_bounded(sys, r, 4, PX_OVERFLOW_DROP_NEWEST, 0);
    park_and_fill(sys, r, a, 4);
    uint64_t dropped0 = PXT_STAT(sys, dropped);
    uint64_t dead0 = PXT_STAT(sys, dead_letters);
    for (uint64_t i = 5; i < 8; i++) {
        px_msg *m = pxt_u64(1, i);
        cr_assert_eq(px_system_send(sys, a, &m), PX_OK);
        cr_assert_null(m, "a dropped message is still taken");
    }
    px_actor_stats st = pxt_astats(sys, a);
    cr_assert_eq(st.dropped, 3, "actor dropped=%llu", (unsigned long long)st.dropped);
    cr_assert_eq(st.capacity, 4);
    cr_assert_eq(PXT_STAT(sys, dropped) - dropped0, 3);
    cr_assert_eq(PXT_STAT(sys, dead_letters), dead0, "a drop is not a dead letter");
    pxt_rec_open(r);
    PXT_AWAIT(pxt_rec_count(r) == 5, 5000);
    for (uint64_t i = 0; i < 5; i++) {
        cr_assert_eq(r->val[i], i, "the queued messages are the oldest: 0..4");
    }
    /* And nothing else arrives: a later marker is the next message. */
    pxt_send_u64(sys, a, 1, 100);
    PXT_AWAIT(pxt_rec_count(r) == 6, 5000);
    cr_assert_eq(r->val[5], 100);
    px_system_free(sys);
    free(r);
}

Test(core_mailbox, drop_oldest_policy_keeps_the_newest_messages, .timeout = 20) {
    px_system *sys = pxt_system();
    pxt_rec *r = pxt_rec_new();
    px_ref a = spawn_bounded(sys, r, 4, PX_OVERFLOW_DROP_OLDEST, 0);
    park_and_fill(sys, r, a, 4); /* 0 in receive; 1..4 queued */
    for (uint64_t i = 5; i <= 7; i++) {
        pxt_send_u64(sys, a, 1, i);
    }
    cr_assert_eq(pxt_astats(sys, a).dropped, 3);
    pxt_rec_open(r);
    PXT_AWAIT(pxt_rec_count(r) == 5, 5000);
    uint64_t want[5] = {0, 4, 5, 6, 7};
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(r->val[i], want[i], "message %d: got %llu, want %llu", i,
                     (unsigned long long)r->val[i], (unsigned long long)want[i]);
    }
    pxt_send_u64(sys, a, 1, 100);
    PXT_AWAIT(pxt_rec_count(r) == 6, 5000);
    cr_assert_eq(r->val[5], 100);
    px_system_free(sys);
    free(r);
}

Test(core_mailbox, error_policy_returns_efull_and_the_caller_keeps_the_message, .timeout = 20) {
    px_system *sys = pxt_system();
    pxt_rec *r = pxt_rec_new();
    px_ref a = spawn_bounded(sys, r, 4, PX_OVERFLOW_ERROR, 0);
    park_and_fill(sys, r, a, 4);
    uint64_t rejected0 = PXT_STAT(sys, rejected);
    px_msg *m = pxt_u64(1, 99);
    px_msg *orig = m;
    int64_t t0 = pxt_now_ms();
    cr_assert_eq(px_system_send(sys, a, &m), PX_EFULL);
    cr_assert_lt(pxt_now_ms() - t0, 1000, "policy Error must not wait");
    cr_assert_eq(m, orig, "the pointer is not nulled: the caller still owns it");
    cr_assert_eq(px_msg_get_u64(m), 99, "and it is intact");
    cr_assert_eq(PXT_STAT(sys, rejected) - rejected0, 1, "a refused send counts as rejected");
    cr_assert_eq(pxt_astats(sys, a).dropped, 0, "a refused send is not a drop");
    /* The caller may send it again once there is room. */
    pxt_rec_open(r);
    PXT_AWAIT(pxt_rec_count(r) == 5, 5000);
    cr_assert_eq(px_system_send(sys, a, &m), PX_OK);
    cr_assert_null(m);
    PXT_AWAIT(pxt_rec_count(r) == 6, 5000);
    cr_assert_eq(r->val[5], 99);
    px_system_free(sys);
    free(r);
}

Test(core_mailbox, error_policy_returns_efull_from_actor_context, .timeout = 20) {
    px_system *sys = pxt_system();
    pxt_rec *r = pxt_rec_new();
    px_ref a = spawn_bounded(sys, r, 2, PX_OVERFLOW_ERROR, 0);
    park_and_fill(sys, r, a, 2);
    prober p = {.to = a};
    run_prober(sys, &p);
    cr_assert_eq(atomic_load(&p.result), PX_EFULL);
    cr_assert(atomic_load(&p.msg_kept));
    pxt_rec_open(r);
    px_system_free(sys);
    free(r);
}

Test(core_mailbox, spawn_with_a_bounded_mailbox_and_no_valid_policy_is_einval, .timeout = 10) {
    px_system *sys = pxt_system();
    pxt_rec *r = pxt_rec_new();
    px_mailbox_opts mb = {.capacity = 4, .overflow = (px_overflow)0};
    px_spawn_opts so = {.mailbox = &mb};
    px_msg *arg = pxt_ptr_msg(r);
    px_ref a = PX_REF_NIL;
    cr_assert_eq(px_system_spawn(sys, pxt_rec_behavior(), &arg, &so, &a), PX_EINVAL);
    cr_assert_not_null(arg);
    mb.overflow = (px_overflow)5;
    cr_assert_eq(px_system_spawn(sys, pxt_rec_behavior(), &arg, &so, &a), PX_EINVAL);
    px_msg_free(arg);
    cr_assert_eq(pxt_live(sys), 0);
    px_system_free(sys);
    free(r);
}

/* --- depth and high-water mark ----------------------------------------- */

Test(core_mailbox, depth_and_hwm_track_a_bounded_mailbox, .timeout = 20) {
    px_system *sys = pxt_system();
    pxt_rec *r = pxt_rec_new();
    px_ref a = spawn_bounded(sys, r, 16, PX_OVERFLOW_ERROR, 0);
    px_actor_stats st = pxt_astats(sys, a);
    cr_assert_eq(st.depth, 0);
    cr_assert_eq(st.capacity, 16);
    park_and_fill(sys, r, a, 10);
    st = pxt_astats(sys, a);
    cr_assert_eq(st.depth, 10, "depth=%llu with 10 queued", (unsigned long long)st.depth);
    cr_assert_geq(st.hwm, 10, "hwm=%llu after 10 bounded pushes", (unsigned long long)st.hwm);
    cr_assert_leq(st.hwm, 11);
    pxt_rec_open(r);
    PXT_AWAIT(PXT_ASTAT(sys, a, processed) == 11, 5000);
    st = pxt_astats(sys, a);
    cr_assert_eq(st.depth, 0);
    cr_assert_geq(st.hwm, 10, "the high-water mark stays");
    cr_assert_eq(st.processed, 11);
    cr_assert_eq(st.dropped, 0);
    px_system_free(sys);
    free(r);
}

Test(core_mailbox, depth_and_hwm_track_an_unbounded_mailbox, .timeout = 20) {
    /* batch=1: the turn after the gate starts with all 100 queued, and hwm is
     * sampled at each turn (with a bigger batch the parked turn goes on). */
    px_config cfg;
    pxt_config(&cfg);
    cfg.batch = 1;
    px_system *sys = pxt_system_with(&cfg);
    pxt_rec *r = pxt_rec_new();
    px_ref a = pxt_rec_spawn(sys, r, NULL);
    cr_assert_eq(pxt_astats(sys, a).capacity, 0, "the default mailbox is unbounded");
    pxt_rec_park(sys, r, a, 1, 0);
    for (int i = 1; i <= 100; i++) {
        pxt_send_u64(sys, a, 1, (uint64_t)i);
    }
    cr_assert_eq(pxt_astats(sys, a).depth, 100);
    pxt_rec_open(r);
    PXT_AWAIT(PXT_ASTAT(sys, a, processed) == 101, 5000);
    px_actor_stats st = pxt_astats(sys, a);
    cr_assert_eq(st.depth, 0);
    /* hwm is sampled at each turn: the turn after the gate saw >= 99 queued. */
    cr_assert_geq(st.hwm, 99, "hwm=%llu", (unsigned long long)st.hwm);
    cr_assert_leq(st.hwm, 101);
    px_system_free(sys);
    free(r);
}

Test(core_mailbox, unbounded_mailbox_never_refuses, .timeout = 30) {
    px_system *sys = pxt_system();
    pxt_rec *r = pxt_rec_new();
    px_ref a = pxt_rec_spawn(sys, r, NULL);
    pxt_rec_park(sys, r, a, 1, 0);
    for (int i = 1; i <= 50000; i++) {
        pxt_send_u64(sys, a, 1, (uint64_t)i);
    }
    pxt_rec_open(r);
    PXT_AWAIT(pxt_rec_count(r) == 50001, 20000);
    cr_assert_eq(PXT_STAT(sys, dropped), 0);
    cr_assert_eq(PXT_STAT(sys, rejected), 0);
    px_system_free(sys);
    free(r);
}

Test(core_mailbox, system_default_mailbox_applies_to_spawns_without_options, .timeout = 20) {
    px_config cfg;
    pxt_config(&cfg);
    cfg.mailbox = (px_mailbox_opts){.capacity = 8, .overflow = PX_OVERFLOW_DROP_NEWEST};
    px_system *sys = pxt_system_with(&cfg);
    pxt_rec *r = pxt_rec_new();
    px_ref a = pxt_rec_spawn(sys, r, NULL);
    cr_assert_eq(pxt_astats(sys, a).capacity, 8);
    park_and_fill(sys, r, a, 8);
    pxt_send_u64(sys, a, 1, 9);
    cr_assert_eq(pxt_astats(sys, a).dropped, 1);
    pxt_rec_open(r);
    px_system_free(sys);
    free(r);
}
