/*
 * pipeline.c — ex.pipeline: parse -> transform -> sink under RestForOne
 * (see plexus/examples.h).
 *
 *   client --RECORD--> pipeline --RECORD--> parse
 *                      pipeline <--ITEM/POISON-- parse
 *                      pipeline --ITEM/POISON--> transform
 *                      pipeline <--OUT-- transform
 *                      pipeline --OUT--> sink
 *
 * The pipeline actor routes between its stages by tag. Every stage sends to
 * its parent only, so no stage needs another stage's ref, and a restarted
 * stage needs no rewiring. Order holds end to end: each hop is one sender
 * to one receiver.
 *
 * Why RestForOne: sink's running totals (count, sum) are built from what
 * transform produced. When transform fails, its in-flight view is gone, so
 * sink restarts with it and starts its totals over; parse, upstream, holds
 * nothing that depends on transform and keeps running. The process-wide
 * counters (px_examples_stats.pipe_sunk, pipe_sum) keep the grand total.
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ex_internal.h"

#define MAX_RECORD 4096

static const char *const stage_name[3] = {"parse", "transform", "sink"};

/* ---- stages ---- */

typedef struct stage {
    ex_stats *st;
    uint32_t idx;   /* PX_EX_STAGE_* */
    uint64_t count; /* this instance: items handled (sink: items added up) */
    uint64_t sum;   /* sink only: this instance's running sum */
} stage;

static px_err stage_init(px_ctx *ctx, uint32_t idx) {
    stage *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return PX_ENOMEM;
    }
    s->st = ex_stats_of(ctx);
    s->idx = idx;
    px_set_state(ctx, s);
    EX_ADD(s->st, pipe_stage_inits[idx], 1);
    return PX_OK;
}

static px_err parse_init(px_ctx *ctx, const px_msg *arg) {
    (void)arg;
    return stage_init(ctx, PX_EX_STAGE_PARSE);
}
static px_err transform_init(px_ctx *ctx, const px_msg *arg) {
    (void)arg;
    return stage_init(ctx, PX_EX_STAGE_TRANSFORM);
}
static px_err sink_init(px_ctx *ctx, const px_msg *arg) {
    (void)arg;
    return stage_init(ctx, PX_EX_STAGE_SINK);
}

/* One token of a record: a decimal u64 -> ITEM, "poison" -> POISON,
 * anything else is rejected. */
static px_err parse_token(px_ctx *ctx, stage *s, const char *tok, size_t n) {
    if (n == 6 && memcmp(tok, "poison", 6) == 0) {
        return ex_send_u64(ctx, px_parent(ctx), PX_EX_PIPE_POISON, 0);
    }
    char buf[24];
    if (n == 0 || n >= sizeof(buf)) {
        EX_ADD(s->st, pipe_rejected, 1);
        return PX_OK;
    }
    memcpy(buf, tok, n);
    buf[n] = '\0';
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(buf, &end, 10);
    if (errno != 0 || *end != '\0' || !isdigit((unsigned char)buf[0])) {
        EX_ADD(s->st, pipe_rejected, 1);
        return PX_OK;
    }
    return ex_send_u64(ctx, px_parent(ctx), PX_EX_PIPE_ITEM, (uint64_t)v);
}

static px_err parse_receive(px_ctx *ctx, px_msg *m) {
    stage *s = px_state(ctx);
    if (px_msg_tag(m) != PX_EX_PIPE_RECORD) {
        return PX_OK;
    }
    size_t len = 0;
    const char *text = px_msg_data(m, &len);
    EX_ADD(s->st, pipe_records, 1);
    s->count++;
    size_t i = 0;
    while (text != NULL && i < len) {
        while (i < len && (text[i] == ',' || isspace((unsigned char)text[i]))) {
            i++;
        }
        size_t start = i;
        while (i < len && text[i] != ',' && !isspace((unsigned char)text[i])) {
            i++;
        }
        if (i > start) {
            px_err err = parse_token(ctx, s, text + start, i - start);
            if (err != PX_OK) {
                return err;
            }
        }
    }
    return PX_OK;
}

static px_err transform_receive(px_ctx *ctx, px_msg *m) {
    stage *s = px_state(ctx);
    switch (px_msg_tag(m)) {
    case PX_EX_PIPE_POISON:
        px_fail(ctx, PX_EFAIL, "transform: poison item after %llu items",
                (unsigned long long)s->count);
        return PX_EFAIL;
    case PX_EX_PIPE_ITEM: {
        uint64_t v = px_msg_get_u64(m);
        EX_ADD(s->st, pipe_items, 1);
        s->count++;
        return ex_send_u64(ctx, px_parent(ctx), PX_EX_PIPE_OUT, v * v); /* mod 2^64 */
    }
    default:
        return PX_OK;
    }
}

static px_err sink_receive(px_ctx *ctx, px_msg *m) {
    stage *s = px_state(ctx);
    if (px_msg_tag(m) != PX_EX_PIPE_OUT) {
        return PX_OK;
    }
    uint64_t v = px_msg_get_u64(m);
    s->count++;
    s->sum += v;
    EX_ADD(s->st, pipe_sunk, 1);
    EX_ADD(s->st, pipe_sum, v);
    return PX_OK;
}

const px_behavior px_ex_pipe_parse = {
    .name = "ex.pipeline.parse",
    .init = parse_init,
    .receive = parse_receive,
    .stop = ex_free_state,
};
const px_behavior px_ex_pipe_transform = {
    .name = "ex.pipeline.transform",
    .init = transform_init,
    .receive = transform_receive,
    .stop = ex_free_state,
};
const px_behavior px_ex_pipe_sink = {
    .name = "ex.pipeline.sink",
    .init = sink_init,
    .receive = sink_receive,
    .stop = ex_free_state,
};

/* ---- the pipeline supervisor ---- */

typedef struct pipeline {
    ex_stats *st;
    px_ref stage[3];
} pipeline;

static px_err pipeline_init(px_ctx *ctx, const px_msg *arg) {
    (void)arg;
    pipeline *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        return PX_ENOMEM;
    }
    p->st = ex_stats_of(ctx);
    const px_behavior *beh[3] = {&px_ex_pipe_parse, &px_ex_pipe_transform, &px_ex_pipe_sink};
    /* Start order is the data order: RestForOne restarts a stage and every
     * stage started after it, i.e. everything downstream. */
    for (int i = 0; i < 3; i++) {
        px_err err = ex_spawn_child(ctx, stage_name[i], beh[i]->name, (uint64_t)i, NULL,
                                    &p->stage[i]);
        if (err != PX_OK) {
            free(p);
            return err;
        }
    }
    px_set_state(ctx, p);
    EX_ADD(p->st, pipe_inits, 1);
    return PX_OK;
}

static px_err pipeline_forward(px_ctx *ctx, px_ref to, const px_msg *m) {
    size_t len = 0;
    const void *data = px_msg_data(m, &len);
    if (len > MAX_RECORD) {
        px_log(px_ctx_system(ctx), PX_LOG_WARN, "ex.pipeline: dropping a %zu-byte record", len);
        return PX_OK;
    }
    return ex_send_bytes(ctx, to, px_msg_tag(m), data, len);
}

static px_err pipeline_receive(px_ctx *ctx, px_msg *m) {
    pipeline *p = px_state(ctx);
    switch (px_msg_tag(m)) {
    case PX_EX_PIPE_RECORD:
        return pipeline_forward(ctx, p->stage[PX_EX_STAGE_PARSE], m);
    case PX_EX_PIPE_ITEM:
    case PX_EX_PIPE_POISON:
        return pipeline_forward(ctx, p->stage[PX_EX_STAGE_TRANSFORM], m);
    case PX_EX_PIPE_OUT:
        return pipeline_forward(ctx, p->stage[PX_EX_STAGE_SINK], m);
    default:
        px_log(px_ctx_system(ctx), PX_LOG_WARN, "ex.pipeline: ignoring a message (tag %#x)",
               px_msg_tag(m));
        return PX_OK;
    }
}

static px_directive pipeline_on_child_failure(px_ctx *ctx, const px_failure *f) {
    pipeline *p = px_state(ctx);
    EX_ADD(p->st, pipe_stage_failures, 1);
    px_log(px_ctx_system(ctx), PX_LOG_INFO,
           "ex.pipeline: stage %s failed (%s: %s); restarting it and the stages after it",
           f->child_id, px_errname(f->code), f->reason);
    return PX_DIRECTIVE_RESTART;
}

const px_behavior px_ex_pipeline = {
    .name = "ex.pipeline",
    .init = pipeline_init,
    .receive = pipeline_receive,
    .stop = ex_free_state,
    .on_child_failure = pipeline_on_child_failure,
    .strategy = PX_REST_FOR_ONE,
};
