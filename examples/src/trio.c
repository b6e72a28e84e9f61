/*
 * trio.c — ex.trio: three members sharing one sequence, under AllForOne
 * (see plexus/examples.h).
 *
 *   client --RUN(n)--> trio --DEAL(s)--> member.(s % 3)
 *   client --FAIL(i)-> trio --FAIL----> member.i   (it fails)
 *
 * The trio owns the sequence counter and deals number s to member s % 3;
 * each member checks its numbers arrive as last + 3. The three positions
 * form one state: when a member fails, AllForOne restarts all three
 * (stop 2, 1, 0, then start 0, 1, 2), and each fresh member takes the
 * next number it is dealt as its new starting point. Numbers dealt while
 * the members restart wait in their mailboxes, so none is lost.
 */
#include <stdlib.h>

#include "ex_internal.h"

#define TRIO 3

/* ---- member ---- */

typedef struct member {
    ex_stats *st;
    uint32_t idx;
    int have_last;
    uint64_t last;
} member;

static px_err member_init(px_ctx *ctx, const px_msg *arg) {
    uint64_t idx = ex_arg(arg, 0);
    if (idx >= TRIO) {
        return PX_EINVAL;
    }
    member *mb = calloc(1, sizeof(*mb));
    if (mb == NULL) {
        return PX_ENOMEM;
    }
    mb->st = ex_stats_of(ctx);
    mb->idx = (uint32_t)idx;
    px_set_state(ctx, mb);
    EX_ADD(mb->st, trio_member_inits[idx], 1);
    return PX_OK;
}

static px_err member_receive(px_ctx *ctx, px_msg *m) {
    member *mb = px_state(ctx);
    switch (px_msg_tag(m)) {
    case PX_EX_TRIO_DEAL: {
        uint64_t s = px_msg_get_u64(m);
        if (s % TRIO != mb->idx || (mb->have_last && s != mb->last + TRIO)) {
            EX_ADD(mb->st, trio_out_of_sequence, 1);
            px_log(px_ctx_system(ctx), PX_LOG_WARN,
                   "ex.trio: member.%u got %llu after %llu: out of sequence", mb->idx,
                   (unsigned long long)s, (unsigned long long)mb->last);
        }
        mb->have_last = 1;
        mb->last = s;
        EX_ADD(mb->st, trio_handled, 1);
        return PX_OK;
    }
    case PX_EX_TRIO_FAIL:
        px_fail(ctx, PX_EFAIL, "member.%u: told to fail at sequence %llu", mb->idx,
                (unsigned long long)mb->last);
        return PX_EFAIL;
    default:
        return PX_OK;
    }
}

const px_behavior px_ex_trio_member = {
    .name = "ex.trio.member",
    .init = member_init,
    .receive = member_receive,
    .stop = ex_free_state,
};

/* ---- the trio supervisor ---- */

typedef struct trio {
    ex_stats *st;
    uint64_t next; /* the shared sequence */
    px_ref member[TRIO];
} trio;

static px_err trio_init(px_ctx *ctx, const px_msg *arg) {
    (void)arg;
    trio *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        return PX_ENOMEM;
    }
    t->st = ex_stats_of(ctx);
    for (uint32_t i = 0; i < TRIO; i++) {
        char id[16];
        snprintf(id, sizeof(id), "member.%u", i);
        px_err err = ex_spawn_child(ctx, id, px_ex_trio_member.name, i, NULL, &t->member[i]);
        if (err != PX_OK) {
            free(t);
            return err;
        }
    }
    px_set_state(ctx, t);
    EX_ADD(t->st, trio_inits, 1);
    return PX_OK;
}

static px_err trio_receive(px_ctx *ctx, px_msg *m) {
    trio *t = px_state(ctx);
    uint64_t v = px_msg_get_u64(m);
    switch (px_msg_tag(m)) {
    case PX_EX_TRIO_RUN:
        for (uint64_t k = 0; k < v; k++) {
            uint64_t s = t->next;
            px_err err = ex_send_u64(ctx, t->member[s % TRIO], PX_EX_TRIO_DEAL, s);
            if (err != PX_OK) {
                return err;
            }
            t->next++;
            EX_ADD(t->st, trio_dealt, 1);
        }
        return PX_OK;
    case PX_EX_TRIO_FAIL:
        if (v >= TRIO) {
            px_log(px_ctx_system(ctx), PX_LOG_WARN, "ex.trio: no member %llu",
                   (unsigned long long)v);
            return PX_OK;
        }
        return ex_send_u64(ctx, t->member[v], PX_EX_TRIO_FAIL, 0);
    default:
        px_log(px_ctx_system(ctx), PX_LOG_WARN, "ex.trio: ignoring a message (tag %#x)",
               px_msg_tag(m));
        return PX_OK;
    }
}

static px_directive trio_on_child_failure(px_ctx *ctx, const px_failure *f) {
    trio *t = px_state(ctx);
    EX_ADD(t->st, trio_member_failures, 1);
    px_log(px_ctx_system(ctx), PX_LOG_INFO, "ex.trio: %s failed (%s: %s); restarting all three",
           f->child_id, px_errname(f->code), f->reason);
    return PX_DIRECTIVE_RESTART;
}

const px_behavior px_ex_trio = {
    .name = "ex.trio",
    .init = trio_init,
    .receive = trio_receive,
    .stop = ex_free_state,
    .on_child_failure = trio_on_child_failure,
    .strategy = PX_ALL_FOR_ONE,
};
