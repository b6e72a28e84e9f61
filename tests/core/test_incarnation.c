/* Tests for the node's incarnations (plexus/router.h): px_system_node_inc
 * and px_system_reincarnate. After a reincarnation the actors of earlier
 * incarnations keep their refs and keep working with every actor of this
 * process (sends, asks, watches, supervision), but are cut off from other
 * nodes: messages from other nodes to them are dead letters, their sends to
 * other nodes fail with PX_EFENCED. A ref of this node with an incarnation
 * this process never was (an earlier process) stays a dead letter.
 *
 * Sends, asks, watches and spawns need actor context, so a "peer" actor
 * does them on command messages and puts the result in its test-owned
 * struct; the test thread waits on an atomic counter and then asserts. */
#include "helpers.h"

enum {
    TAG_SELF = 1,       /* record px_self */
    TAG_ASK = 2,        /* px_ask target with TAG_ECHO, value v */
    TAG_ECHO = 3,       /* reply v + 1 */
    TAG_SEND = 4,       /* px_send target TAG_PLAIN */
    TAG_SEND_AFTER = 5, /* px_send_after 1 ms to target, TAG_PLAIN */
    TAG_WATCH = 6,      /* px_watch target */
    TAG_SPAWN = 7,      /* px_spawn a peer whose state is child_state */
    TAG_FAIL = 8,       /* receive returns PX_EFAIL */
    TAG_PLAIN = 9,      /* counted */
};

static uint32_t next_inc(uint32_t inc) { return inc + 1 != 0 ? inc + 1 : 1; }
static uint32_t prev_inc(uint32_t inc) { return inc - 1 != 0 ? inc - 1 : 0xffffffffu; }

/* --- the peer ------------------------------------------------------------ */

typedef struct peer {
    px_ref self_init, parent; /* px_self / px_parent in (the last) init */
    px_ref self_now;          /* px_self at TAG_SELF */
    px_ref target;            /* set by the test before a command */
    struct peer *child_state; /* TAG_SPAWN */
    px_ref child;             /* TAG_SPAWN's result */
    atomic_int acks, result;  /* commands done, the last one's px_err */
    atomic_int inits, stops;
    atomic_int echoed, plain;
    atomic_int replies;
    uint64_t reply_val;
    px_ref reply_from;
    atomic_int terms;
    atomic_int undelivered, undelivered_code; /* PX_MSG_UNDELIVERED notices */
    px_ref term_who;
    px_term_reason term_reason;
} peer;

static const px_behavior *peer_behavior(void);

static px_err peer_init(px_ctx *ctx, const px_msg *arg) {
    peer *p = pxt_msg_ptr(arg);
    px_set_state(ctx, p);
    p->self_init = px_self(ctx);
    p->parent = px_parent(ctx);
    atomic_fetch_add(&p->inits, 1);
    return PX_OK;
}

static void peer_stop(px_ctx *ctx) {
    peer *p = px_state(ctx);
    atomic_fetch_add(&p->stops, 1);
}

/* Sends a fresh (tag, v) message with `how`; frees it if not taken. */
static px_err peer_send(px_ctx *ctx, uint32_t how, px_ref to, uint32_t tag, uint64_t v) {
    px_msg *m = NULL;
    px_err e = px_msg_u64(&m, tag, v);
    if (e != PX_OK) {
        return e;
    }
    if (how == TAG_ASK) {
        e = px_ask(ctx, to, &m, 5000, NULL);
    } else if (how == TAG_SEND_AFTER) {
        e = px_send_after(ctx, 1, to, &m, NULL);
    } else {
        e = px_send(ctx, to, &m);
    }
    px_msg_free(m);
    return e;
}

static px_err peer_receive(px_ctx *ctx, px_msg *m) {
    peer *p = px_state(ctx);
    if (px_msg_kind_of(m) == PX_MSG_TERMINATED) {
        px_msg_terminated(m, &p->term_who, &p->term_reason, NULL);
        atomic_fetch_add(&p->terms, 1);
        return PX_OK;
    }
    if (px_msg_kind_of(m) == PX_MSG_UNDELIVERED) {
        px_err code = PX_OK;
        (void)px_msg_undelivered(m, NULL, &code);
        atomic_store(&p->undelivered_code, code);
        atomic_fetch_add(&p->undelivered, 1);
        return PX_OK;
    }
    if (px_msg_is_reply(m)) {
        p->reply_val = px_msg_get_u64(m);
        p->reply_from = px_msg_sender(m);
        atomic_fetch_add(&p->replies, 1);
        return PX_OK;
    }
    uint32_t tag = px_msg_tag(m);
    px_err e = PX_OK;
    switch (tag) {
    case TAG_ECHO: {
        px_msg *r = NULL;
        if (px_msg_u64(&r, TAG_ECHO, px_msg_get_u64(m) + 1) == PX_OK &&
            px_reply(ctx, m, &r) == PX_OK) {
            atomic_fetch_add(&p->echoed, 1);
        }
        px_msg_free(r);
        return PX_OK;
    }
    case TAG_PLAIN:
        atomic_fetch_add(&p->plain, 1);
        return PX_OK;
    case TAG_FAIL:
        return PX_EFAIL;
    case TAG_SELF:
        p->self_now = px_self(ctx);
        break;
    case TAG_ASK:
        e = peer_send(ctx, TAG_ASK, p->target, TAG_ECHO, px_msg_get_u64(m));
        break;
    case TAG_SEND:
    case TAG_SEND_AFTER:
        e = peer_send(ctx, tag, p->target, TAG_PLAIN, px_msg_get_u64(m));
        break;
    case TAG_WATCH:
        e = px_watch(ctx, p->target);
        break;
    case TAG_SPAWN: {
        px_msg *arg = NULL;
        e = px_msg_u64(&arg, PXT_TAG_PTR, (uint64_t)(uintptr_t)p->child_state);
        if (e == PX_OK) {
            e = px_spawn(ctx, peer_behavior(), &arg, NULL, &p->child);
        }
        px_msg_free(arg);
        break;
    }
    default:
        return PX_OK;
    }
    atomic_store(&p->result, e);
    atomic_fetch_add(&p->acks, 1);
    return PX_OK;
}

static const px_behavior *peer_behavior(void) {
    static const px_behavior b = {.name = "t.inc.peer",
                                  .init = peer_init,
                                  .receive = peer_receive,
                                  .stop = peer_stop};
    return &b;
}

static px_ref peer_spawn(px_system *sys, peer *p) {
    px_ref r = pxt_spawn(sys, peer_behavior(), p, NULL);
    PXT_AWAIT(atomic_load(&p->inits) >= 1, 5000);
    return r;
}

/* Has the peer run one command (with value v) on target; returns its px_err. */
static px_err cmd(px_system *sys, px_ref ref, peer *p, uint32_t tag, px_ref target, uint64_t v) {
    p->target = target;
    int a0 = atomic_load(&p->acks);
    pxt_send_u64(sys, ref, tag, v);
    PXT_AWAIT(atomic_load(&p->acks) > a0, 5000);
    return (px_err)atomic_load(&p->result);
}

static px_ref self_now(px_system *sys, px_ref ref, peer *p) {
    cr_assert_eq(cmd(sys, ref, p, TAG_SELF, PX_REF_NIL, 0), PX_OK);
    return p->self_now;
}

/* Has `from` ask `to` (value v) and waits for the reply: v + 1 from `to`. */
static void ask_ok(px_system *sys, px_ref from, peer *pf, px_ref to, uint64_t v) {
    int r0 = atomic_load(&pf->replies);
    cr_assert_eq(cmd(sys, from, pf, TAG_ASK, to, v), PX_OK);
    PXT_AWAIT(atomic_load(&pf->replies) > r0, 5000);
    cr_assert_eq(pf->reply_val, v + 1);
    cr_assert(px_ref_eq(pf->reply_from, to), "the reply comes from the asked actor's ref");
}

static uint32_t reincarnate(px_system *sys) {
    uint32_t was = px_system_node_inc(sys), now = 0;
    cr_assert_eq(px_system_reincarnate(sys, &now), PX_OK);
    cr_assert_eq(now, next_inc(was));
    cr_assert_eq(px_system_node_inc(sys), now);
    return now;
}

/* --- a fake router and a dead-letter recorder ---------------------------- */

typedef struct router_rec {
    atomic_int calls;
} router_rec;

static px_err router_send(void *arg, px_ref to, px_msg *m) {
    (void)to;
    router_rec *r = arg;
    atomic_fetch_add(&r->calls, 1);
    px_msg_free(m);
    return PX_OK;
}

static void install_router(px_system *sys, router_rec *r) {
    px_router router = {.send = router_send, .arg = r};
    px_system_set_router(sys, &router);
}

static px_ref remote_ref(void) { return (px_ref){px_node_id("elsewhere"), 7, 5, 1}; }

typedef struct dl_rec {
    atomic_int count;
    atomic_int why; /* of the last one */
    px_ref last_to;
} dl_rec;

static void dl_hook(void *arg, px_ref to, const px_msg *m, px_err why) {
    (void)m;
    dl_rec *d = arg;
    d->last_to = to;
    atomic_store(&d->why, why);
    atomic_fetch_add(&d->count, 1);
}

/* --- the incarnation ----------------------------------------------------- */

Test(core_incarnation, node_inc_starts_as_the_roots_and_reincarnate_moves_it_to_the_next,
     .timeout = 10) {
    pxt_logcap cap;
    pxt_logcap_init(&cap);
    px_config cfg;
    pxt_config(&cfg);
    cfg.log_level = PX_LOG_INFO;
    cfg.log_sink = pxt_logcap_sink;
    cfg.log_arg = &cap;
    px_system *sys = pxt_system_with(&cfg);
    px_ref root = px_system_root(sys);
    uint32_t first = px_system_node_inc(sys);
    cr_assert_neq(first, 0);
    cr_assert_eq(first, root.node_inc);

    pthread_mutex_lock(&cap.mu);
    int info0 = cap.by_level[PX_LOG_INFO];
    pthread_mutex_unlock(&cap.mu);
    uint32_t now = 0;
    cr_assert_eq(px_system_reincarnate(sys, &now), PX_OK);
    cr_assert_eq(now, next_inc(first));
    cr_assert_eq(px_system_node_inc(sys), now);
    cr_assert(px_ref_eq(px_system_root(sys), root), "the root keeps its ref");
    char want[128];
    snprintf(want, sizeof want, "node local is now incarnation %08x (was %08x)", now, first);
    pthread_mutex_lock(&cap.mu);
    cr_assert_eq(cap.by_level[PX_LOG_INFO], info0 + 1, "one INFO line");
    cr_assert(strstr(cap.last, want) != NULL, "logged \"%s\", want \"%s\"", cap.last, want);
    pthread_mutex_unlock(&cap.mu);

    cr_assert_eq(px_system_reincarnate(sys, NULL), PX_OK, "new_inc may be NULL");
    cr_assert_eq(px_system_node_inc(sys), next_inc(now));
    cr_assert_eq(px_system_reincarnate(NULL, &now), PX_EINVAL);
    cr_assert_eq(px_system_node_inc(NULL), 0);
    px_system_free(sys);
    pthread_mutex_destroy(&cap.mu);
}

Test(core_incarnation, an_actor_keeps_its_ref_and_new_actors_carry_the_new_incarnation,
     .timeout = 10) {
    px_system *sys = pxt_system();
    uint32_t first = px_system_node_inc(sys);
    peer *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
    px_ref ra = peer_spawn(sys, a);
    cr_assert_eq(ra.node_inc, first);
    cr_assert(px_ref_eq(a->self_init, ra));

    uint32_t now = reincarnate(sys);
    cr_assert(px_ref_eq(self_now(sys, ra, a), ra), "px_self of an old actor does not change");
    cr_assert(px_is_alive(sys, ra));
    cr_assert_eq(pxt_astats(sys, ra).processed, 1);

    px_ref rb = peer_spawn(sys, b);
    cr_assert_eq(rb.node_inc, now);
    cr_assert_eq(rb.node, ra.node);
    cr_assert(px_ref_eq(b->self_init, rb));
    cr_assert(px_ref_eq(self_now(sys, rb, b), rb));
    cr_assert(px_is_alive(sys, rb));
    px_system_free(sys);
    free(a), free(b);
}

/* --- local: everything works across incarnations ------------------------- */

Test(core_incarnation, old_and_new_actors_ask_and_reply_both_ways, .timeout = 15) {
    px_system *sys = pxt_system();
    peer *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
    px_ref ra = peer_spawn(sys, a);
    reincarnate(sys);
    px_ref rb = peer_spawn(sys, b);
    px_system_stats st0 = pxt_stats(sys);

    ask_ok(sys, ra, a, rb, 10); /* old asks new */
    ask_ok(sys, rb, b, ra, 20); /* new asks old */
    cr_assert_eq(cmd(sys, ra, a, TAG_SEND, rb, 0), PX_OK);
    cr_assert_eq(cmd(sys, rb, b, TAG_SEND, ra, 0), PX_OK);
    PXT_AWAIT(atomic_load(&a->plain) == 1 && atomic_load(&b->plain) == 1, 5000);
    /* And from outside, to both. */
    pxt_send_u64(sys, ra, TAG_PLAIN, 0);
    pxt_send_u64(sys, rb, TAG_PLAIN, 0);
    PXT_AWAIT(atomic_load(&a->plain) == 2 && atomic_load(&b->plain) == 2, 5000);

    px_system_stats st = pxt_stats(sys);
    cr_assert_eq(st.dead_letters, st0.dead_letters);
    cr_assert_eq(st.rejected, st0.rejected);
    cr_assert_eq(st.ask_timeouts, st0.ask_timeouts);
    px_system_free(sys);
    free(a), free(b);
}

Test(core_incarnation, watches_between_old_and_new_actors_fire_when_the_target_stops,
     .timeout = 15) {
    px_system *sys = pxt_system();
    peer *w_old = calloc(1, sizeof *w_old), *t_old = calloc(1, sizeof *t_old);
    peer *w_new = calloc(1, sizeof *w_new), *t_new = calloc(1, sizeof *t_new);
    px_ref rw_old = peer_spawn(sys, w_old), rt_old = peer_spawn(sys, t_old);
    reincarnate(sys);
    px_ref rw_new = peer_spawn(sys, w_new), rt_new = peer_spawn(sys, t_new);

    cr_assert_eq(cmd(sys, rw_new, w_new, TAG_WATCH, rt_old, 0), PX_OK);
    cr_assert_eq(cmd(sys, rw_old, w_old, TAG_WATCH, rt_new, 0), PX_OK);
    cr_assert_eq(px_stop(sys, rt_old), PX_OK, "px_stop reaches an old actor");
    PXT_AWAIT(atomic_load(&w_new->terms) == 1, 5000);
    cr_assert(px_ref_eq(w_new->term_who, rt_old));
    cr_assert_eq(w_new->term_reason, PX_TERM_STOPPED);
    cr_assert_eq(atomic_load(&w_old->terms), 0);

    cr_assert_eq(px_stop(sys, rt_new), PX_OK);
    PXT_AWAIT(atomic_load(&w_old->terms) == 1, 5000);
    cr_assert(px_ref_eq(w_old->term_who, rt_new));
    cr_assert_eq(w_old->term_reason, PX_TERM_STOPPED);
    PXT_AWAIT(!px_is_alive(sys, rt_old) && !px_is_alive(sys, rt_new), 5000);
    cr_assert_eq(atomic_load(&w_new->terms), 1, "exactly one Terminated per watch");
    px_system_free(sys);
    free(w_old), free(t_old), free(w_new), free(t_new);
}

Test(core_incarnation, a_parent_keeps_supervising_its_old_child_and_its_new_ones,
     .timeout = 15) {
    px_system *sys = pxt_system();
    peer *p = calloc(1, sizeof *p), *c = calloc(1, sizeof *c), *d = calloc(1, sizeof *d);
    uint32_t first = px_system_node_inc(sys);
    px_ref rp = peer_spawn(sys, p);
    p->child_state = c;
    cr_assert_eq(cmd(sys, rp, p, TAG_SPAWN, PX_REF_NIL, 0), PX_OK);
    px_ref rc = p->child;
    uint32_t now = reincarnate(sys);
    uint64_t rs0 = PXT_STAT(sys, restarts);

    /* The old child fails: its old parent restarts it behind the same ref. */
    pxt_send_u64(sys, rc, TAG_FAIL, 0);
    PXT_AWAIT(atomic_load(&c->inits) == 2, 5000);
    PXT_AWAIT(PXT_STAT(sys, restarts) - rs0 == 1, 5000);
    cr_assert_eq(rc.node_inc, first);
    cr_assert(px_ref_eq(c->self_init, rc), "the restarted child has the same ref");
    cr_assert(px_ref_eq(c->parent, rp));
    pxt_send_u64(sys, rc, TAG_PLAIN, 0);
    PXT_AWAIT(atomic_load(&c->plain) == 1, 5000);

    /* A child the old parent spawns now is of the new incarnation. */
    p->child_state = d;
    cr_assert_eq(cmd(sys, rp, p, TAG_SPAWN, PX_REF_NIL, 0), PX_OK);
    px_ref rd = p->child;
    cr_assert_eq(rd.node_inc, now);
    PXT_AWAIT(atomic_load(&d->inits) == 1, 5000);
    cr_assert(px_ref_eq(d->parent, rp), "its parent ref is the old one");
    pxt_send_u64(sys, rd, TAG_FAIL, 0);
    PXT_AWAIT(atomic_load(&d->inits) == 2, 5000);
    PXT_AWAIT(PXT_STAT(sys, restarts) - rs0 == 2, 5000);

    /* Stopping the parent stops both children first. */
    cr_assert_eq(px_stop(sys, rp), PX_OK);
    PXT_AWAIT(atomic_load(&p->stops) == 1, 5000);
    cr_assert_eq(atomic_load(&c->stops), 2, "the first instance and the restarted one");
    cr_assert_eq(atomic_load(&d->stops), 2);
    PXT_AWAIT(pxt_live(sys) == 0, 5000);
    px_system_free(sys);
    free(p), free(c), free(d);
}

/* --- cut off from other nodes -------------------------------------------- */

static px_msg *remote_msg(uint64_t v) { return pxt_u64(TAG_PLAIN, v); }

Test(core_incarnation, messages_from_other_nodes_to_an_old_actor_are_dead_letters,
     .timeout = 10) {
    px_system *sys = pxt_system();
    dl_rec dl = {0};
    px_system_on_dead_letter(sys, dl_hook, &dl);
    peer *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
    px_ref ra = peer_spawn(sys, a);
    reincarnate(sys);
    px_ref rb = peer_spawn(sys, b);
    px_ref from = remote_ref();
    uint64_t dead0 = PXT_STAT(sys, dead_letters);

    px_msg *m = remote_msg(1);
    cr_assert_eq(px_system_deliver_remote(sys, ra, from, 0, 0, &m), PX_EDEAD);
    cr_assert_null(m, "a dead letter is taken");
    cr_assert_eq(PXT_STAT(sys, dead_letters), dead0 + 1);
    cr_assert_eq(atomic_load(&dl.count), 1);
    cr_assert(px_ref_eq(dl.last_to, ra));
    cr_assert_eq(atomic_load(&dl.why), PX_EDEAD);
    cr_assert_eq(px_system_notify_undelivered(sys, ra, from, PX_EFULL, 0), PX_EDEAD);
    px_mailbox_opts mo;
    cr_assert_eq(px_system_mailbox_opts(sys, ra, &mo), PX_EDEAD);

    m = remote_msg(2);
    cr_assert_eq(px_system_deliver_remote(sys, rb, from, 0, 0, &m), PX_OK);
    cr_assert_null(m);
    PXT_AWAIT(atomic_load(&b->plain) == 1, 5000);
    cr_assert_eq(px_system_notify_undelivered(sys, rb, from, PX_EFULL, 0), PX_OK);
    cr_assert_eq(px_system_mailbox_opts(sys, rb, &mo), PX_OK);
    cr_assert_eq(mo.capacity, 0);

    /* The old actor itself is alive and reachable locally. */
    cr_assert_eq(atomic_load(&a->plain), 0);
    pxt_send_u64(sys, ra, TAG_PLAIN, 0);
    PXT_AWAIT(atomic_load(&a->plain) == 1, 5000);
    cr_assert_eq(PXT_STAT(sys, dead_letters), dead0 + 1);
    px_system_free(sys);
    free(a), free(b);
}

Test(core_incarnation, an_old_actor_sending_to_another_node_is_fenced_and_a_new_one_is_routed,
     .timeout = 10) {
    px_system *sys = pxt_system();
    router_rec rr = {0};
    install_router(sys, &rr);
    dl_rec dl = {0};
    px_system_on_dead_letter(sys, dl_hook, &dl);
    peer *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
    px_ref ra = peer_spawn(sys, a);
    px_ref far = remote_ref();
    cr_assert_eq(cmd(sys, ra, a, TAG_SEND, far, 0), PX_OK, "routed before the reincarnation");
    cr_assert_eq(atomic_load(&rr.calls), 1);
    reincarnate(sys);
    px_ref rb = peer_spawn(sys, b);
    uint64_t rej0 = PXT_STAT(sys, rejected);

    cr_assert_eq(cmd(sys, ra, a, TAG_SEND, far, 0), PX_EFENCED);
    cr_assert_eq(cmd(sys, ra, a, TAG_ASK, far, 0), PX_EFENCED);
    cr_assert_eq(atomic_load(&rr.calls), 1, "the router never saw them");
    cr_assert_eq(PXT_STAT(sys, rejected), rej0 + 2);
    /* A delayed send is fenced when it fires: a dead letter saying so. */
    cr_assert_eq(cmd(sys, ra, a, TAG_SEND_AFTER, far, 0), PX_OK);
    PXT_AWAIT(atomic_load(&dl.count) == 1, 5000);
    cr_assert_eq(atomic_load(&dl.why), PX_EFENCED);
    cr_assert(px_ref_eq(dl.last_to, far));
    cr_assert_eq(atomic_load(&rr.calls), 1);

    cr_assert_eq(cmd(sys, rb, b, TAG_SEND, far, 0), PX_OK);
    cr_assert_eq(atomic_load(&rr.calls), 2, "a new actor's send goes to the router");
    cr_assert_eq(cmd(sys, rb, b, TAG_ASK, far, 0), PX_OK);
    cr_assert_eq(atomic_load(&rr.calls), 3);
    px_msg *m = remote_msg(0);
    cr_assert_eq(px_system_send(sys, far, &m), PX_OK, "sends from outside actors are not fenced");
    cr_assert_null(m);
    cr_assert_eq(atomic_load(&rr.calls), 4);
    px_system_free(sys);
    free(a), free(b);
}

/* --- earlier processes and several incarnations -------------------------- */

Test(core_incarnation, an_old_actors_ask_waiting_on_another_node_ends_fenced_at_once,
     .timeout = 15) {
    px_system *sys = pxt_system();
    router_rec rr = {0};
    install_router(sys, &rr);
    peer *po = calloc(1, sizeof *po), *pn = calloc(1, sizeof *pn);
    cr_assert(po && pn);
    px_ref old = peer_spawn(sys, po);
    cr_assert_eq(cmd(sys, old, po, TAG_ASK, remote_ref(), 1), PX_OK, "routed, then it waits");
    cr_assert_eq(atomic_load(&rr.calls), 1);
    int64_t t0 = pxt_now_ms();
    reincarnate(sys);
    /* Its reply would come to the old incarnation: the ask (5 s timeout)
     * ends now with PX_EFENCED instead of at its timeout. */
    PXT_AWAIT(atomic_load(&po->undelivered) == 1, 5000);
    cr_assert_lt(pxt_now_ms() - t0, 4000, "ended by the reincarnation, not the timeout");
    cr_assert_eq(atomic_load(&po->undelivered_code), PX_EFENCED);
    /* A new actor's remote ask is not ended by it: it still waits, and the
     * layer that learns the node is lost can end it. */
    px_ref now = peer_spawn(sys, pn);
    cr_assert_eq(cmd(sys, now, pn, TAG_ASK, remote_ref(), 2), PX_OK);
    cr_assert_eq(px_system_fail_asks(sys, remote_ref().node, 0, PX_ENODEDOWN), 1,
                 "the new actor's ask was still waiting (and the old one's was gone)");
    PXT_AWAIT(atomic_load(&pn->undelivered) == 1, 5000);
    cr_assert_eq(atomic_load(&pn->undelivered_code), PX_ENODEDOWN);
    cr_assert_eq(atomic_load(&po->undelivered), 1);
    px_system_free(sys);
    free(po);
    free(pn);
}

Test(core_incarnation, a_ref_of_an_earlier_process_of_this_node_is_a_dead_letter,
     .timeout = 10) {
    px_system *sys = pxt_system();
    pxt_rec *rec = pxt_rec_new();
    px_ref ra = pxt_rec_spawn(sys, rec, NULL);
    uint32_t first = ra.node_inc;
    uint32_t now = reincarnate(sys);
    /* Same node, slot and slot incarnation as a live actor, but incarnations
     * this process never was: before the first, after the current, far off. */
    uint32_t others[] = {prev_inc(first), next_inc(now), first ^ 0x80000000u};
    uint64_t dead0 = PXT_STAT(sys, dead_letters);
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        px_ref r = ra;
        r.node_inc = others[i];
        cr_assert(!px_is_alive(sys, r), "node_inc %08x", others[i]);
        cr_assert_eq(px_stop(sys, r), PX_EDEAD);
        px_actor_stats as;
        cr_assert_eq(px_actor_stats_get(sys, r, &as), PX_EDEAD);
        px_mailbox_opts mo;
        cr_assert_eq(px_system_mailbox_opts(sys, r, &mo), PX_EDEAD);
        pxt_send_u64(sys, r, 1, i);
        cr_assert_eq(PXT_STAT(sys, dead_letters), dead0 + i + 1, "node_inc %08x", others[i]);
    }
    cr_assert(px_is_alive(sys, ra));
    pxt_send_u64(sys, ra, 2, 0); /* the real ref reaches it */
    PXT_AWAIT(pxt_rec_count(rec) == 1, 5000);
    cr_assert_eq(rec->tag[0], 2, "none of the others reached it");
    px_system_free(sys);
    free(rec);
}

Test(core_incarnation, after_two_reincarnations_all_three_incarnations_are_local,
     .timeout = 15) {
    px_system *sys = pxt_system();
    router_rec rr = {0};
    install_router(sys, &rr);
    peer *p[3];
    px_ref r[3];
    uint32_t inc[3];
    inc[0] = px_system_node_inc(sys);
    for (int i = 0; i < 3; i++) {
        if (i > 0) {
            inc[i] = reincarnate(sys);
            cr_assert_eq(inc[i], next_inc(inc[i - 1]));
        }
        p[i] = calloc(1, sizeof *p[i]);
        r[i] = peer_spawn(sys, p[i]);
        cr_assert_eq(r[i].node_inc, inc[i]);
    }
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 3; j++) {
            if (i != j) {
                ask_ok(sys, r[i], p[i], r[j], (uint64_t)(i * 10 + j));
            }
        }
        cr_assert(px_ref_eq(self_now(sys, r[i], p[i]), r[i]));
    }
    px_ref far = remote_ref();
    for (int i = 0; i < 3; i++) {
        px_msg *m = remote_msg(0);
        px_err want = i == 2 ? PX_OK : PX_EDEAD;
        cr_assert_eq(px_system_deliver_remote(sys, r[i], far, 0, 0, &m), want, "incarnation %d", i);
        cr_assert_null(m);
        cr_assert_eq(cmd(sys, r[i], p[i], TAG_SEND, far, 0), i == 2 ? PX_OK : PX_EFENCED,
                     "incarnation %d", i);
    }
    PXT_AWAIT(atomic_load(&p[2]->plain) == 1, 5000);
    cr_assert_eq(atomic_load(&p[0]->plain) + atomic_load(&p[1]->plain), 0);
    cr_assert_eq(atomic_load(&rr.calls), 1);
    px_system_free(sys);
    for (int i = 0; i < 3; i++) {
        free(p[i]);
    }
}
