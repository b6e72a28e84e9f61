/*
 * hier.c — ex.hier: a three-level hierarchy (see plexus/examples.h).
 *
 *   ex.hier (top, OneForOne)
 *     └── "mid"  ex.hier.mid (OneForOne)
 *           ├── "leaf.0"  ex.hier.leaf
 *           ├── ...
 *           └── "leaf.<K-1>"
 *
 * Messages go to the top, which forwards them to the middle, which
 * forwards them to a leaf. The middle sorts leaf failures into two classes:
 *  - code PX_ESYS: the leaf lost something outside itself that the whole
 *    subtree shares (think: a connection, a file). Restarting one leaf does
 *    not fix that, so the middle escalates: it fails with the leaf's
 *    failure as cause, and the top restarts the middle — which stops every
 *    leaf and spawns them afresh in its init.
 *  - anything else: the leaf's own trouble; the middle restarts that leaf.
 * The top restarts the middle whatever the cause (within the default
 * limits: 3 restarts in 5 s; beyond them the top escalates to its parent).
 */
#include <stdlib.h>
#include <string.h>

#include "ex_internal.h"

/* ---- leaf ---- */

typedef struct leaf {
    ex_stats *st;
    uint32_t idx;
    uint64_t done; /* this instance */
} leaf;

static px_err leaf_init(px_ctx *ctx, const px_msg *arg) {
    leaf *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        return PX_ENOMEM;
    }
    l->st = ex_stats_of(ctx);
    l->idx = (uint32_t)ex_arg(arg, 0);
    px_set_state(ctx, l);
    EX_ADD(l->st, hier_leaf_inits, 1);
    return PX_OK;
}

static px_err leaf_receive(px_ctx *ctx, px_msg *m) {
    leaf *l = px_state(ctx);
    switch (px_msg_tag(m)) {
    case PX_EX_HIER_WORK:
        l->done++;
        EX_ADD(l->st, hier_work_done, 1);
        return PX_OK;
    case PX_EX_HIER_FAIL: {
        size_t len = 0;
        const void *data = px_msg_data(m, &len);
        px_ex_hier_fail f = {.leaf = l->idx, .code = PX_EFAIL};
        if (data != NULL && len == sizeof(f)) {
            memcpy(&f, data, sizeof(f));
        }
        px_err code = f.code < 0 ? (px_err)f.code : PX_EFAIL;
        px_fail(ctx, code, "leaf.%u: told to fail with %s after %llu units", l->idx,
                px_errname(code), (unsigned long long)l->done);
        return code;
    }
    default:
        return PX_OK;
    }
}

const px_behavior px_ex_hier_leaf = {
    .name = "ex.hier.leaf",
    .init = leaf_init,
    .receive = leaf_receive,
    .stop = ex_free_state,
};

/* ---- middle ---- */

typedef struct mid {
    ex_stats *st;
    uint32_t n;
    px_ref leaf[PX_EX_HIER_MAX_LEAVES];
} mid;

static px_err mid_init(px_ctx *ctx, const px_msg *arg) {
    uint64_t n = ex_arg(arg, 3);
    if (n == 0 || n > PX_EX_HIER_MAX_LEAVES) {
        return PX_EINVAL;
    }
    mid *md = calloc(1, sizeof(*md));
    if (md == NULL) {
        return PX_ENOMEM;
    }
    md->st = ex_stats_of(ctx);
    md->n = (uint32_t)n;
    for (uint32_t i = 0; i < md->n; i++) {
        char id[24];
        snprintf(id, sizeof(id), "leaf.%u", i);
        px_err err = ex_spawn_child(ctx, id, px_ex_hier_leaf.name, i, NULL, &md->leaf[i]);
        if (err != PX_OK) {
            free(md);
            return err;
        }
    }
    px_set_state(ctx, md);
    EX_ADD(md->st, hier_mid_inits, 1);
    return PX_OK;
}

static px_err mid_receive(px_ctx *ctx, px_msg *m) {
    mid *md = px_state(ctx);
    size_t len = 0;
    const void *data = px_msg_data(m, &len);
    uint32_t idx;
    if (px_msg_tag(m) == PX_EX_HIER_WORK) {
        idx = (uint32_t)px_msg_get_u64(m);
    } else if (px_msg_tag(m) == PX_EX_HIER_FAIL && data != NULL &&
               len == sizeof(px_ex_hier_fail)) {
        px_ex_hier_fail f;
        memcpy(&f, data, sizeof(f));
        idx = f.leaf;
    } else {
        return PX_OK;
    }
    if (idx >= md->n) {
        px_log(px_ctx_system(ctx), PX_LOG_WARN, "ex.hier.mid: no leaf %u", idx);
        return PX_OK;
    }
    return ex_send_bytes(ctx, md->leaf[idx], px_msg_tag(m), data, len);
}

/* The decider: which failures are the subtree's, which the leaf's. */
static px_directive mid_on_child_failure(px_ctx *ctx, const px_failure *f) {
    mid *md = px_state(ctx);
    if (f->code == PX_ESYS) {
        EX_ADD(md->st, hier_escalated, 1);
        px_log(px_ctx_system(ctx), PX_LOG_INFO, "ex.hier.mid: %s failed with %s; escalating",
               f->child_id, px_errname(f->code));
        return PX_DIRECTIVE_ESCALATE;
    }
    EX_ADD(md->st, hier_leaf_restarts, 1);
    px_log(px_ctx_system(ctx), PX_LOG_INFO, "ex.hier.mid: %s failed with %s; restarting it",
           f->child_id, px_errname(f->code));
    return PX_DIRECTIVE_RESTART;
}

const px_behavior px_ex_hier_mid = {
    .name = "ex.hier.mid",
    .init = mid_init,
    .receive = mid_receive,
    .stop = ex_free_state,
    .on_child_failure = mid_on_child_failure,
    .strategy = PX_ONE_FOR_ONE,
};

/* ---- top ---- */

typedef struct top {
    ex_stats *st;
    px_ref mid;
} top;

static px_err top_init(px_ctx *ctx, const px_msg *arg) {
    uint64_t n = ex_arg(arg, 3);
    if (n == 0 || n > PX_EX_HIER_MAX_LEAVES) {
        px_fail(ctx, PX_EINVAL, "ex.hier: %llu leaves (1..%u)", (unsigned long long)n,
                PX_EX_HIER_MAX_LEAVES);
        return PX_EINVAL;
    }
    top *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        return PX_ENOMEM;
    }
    t->st = ex_stats_of(ctx);
    px_err err = ex_spawn_child(ctx, "mid", px_ex_hier_mid.name, n, NULL, &t->mid);
    if (err != PX_OK) {
        free(t);
        return err;
    }
    px_set_state(ctx, t);
    EX_ADD(t->st, hier_top_inits, 1);
    return PX_OK;
}

static px_err top_receive(px_ctx *ctx, px_msg *m) {
    top *t = px_state(ctx);
    if (px_msg_tag(m) != PX_EX_HIER_WORK && px_msg_tag(m) != PX_EX_HIER_FAIL) {
        px_log(px_ctx_system(ctx), PX_LOG_WARN, "ex.hier: ignoring a message (tag %#x)",
               px_msg_tag(m));
        return PX_OK;
    }
    size_t len = 0;
    const void *data = px_msg_data(m, &len);
    /* The middle's ref survives its restarts: messages sent while it
     * restarts wait in its mailbox for the new instance. */
    return ex_send_bytes(ctx, t->mid, px_msg_tag(m), data, len);
}

static px_directive top_on_child_failure(px_ctx *ctx, const px_failure *f) {
    top *t = px_state(ctx);
    EX_ADD(t->st, hier_mid_restarts, 1);
    px_log(px_ctx_system(ctx), PX_LOG_INFO, "ex.hier: %s failed (%s: %s%s%s); restarting it",
           f->child_id, px_errname(f->code), f->reason, f->cause ? "; cause: " : "",
           f->cause ? f->cause->reason : "");
    return PX_DIRECTIVE_RESTART;
}

const px_behavior px_ex_hier = {
    .name = "ex.hier",
    .init = top_init,
    .receive = top_receive,
    .stop = ex_free_state,
    .on_child_failure = top_on_child_failure,
    .strategy = PX_ONE_FOR_ONE,
};
