/* Tests for px_tree_dump: the supervision tree as text and as JSON, with
 * ids in start order, nesting, and the supervisor's counters. */
#include "helpers.h"

#include <jansson.h>

typedef struct tr_state {
    atomic_int ready;     /* children spawned */
    atomic_int inits_b;   /* inits of child "b" */
    atomic_int ctx_err;   /* px_tree_dump from actor context */
} tr_state;

static tr_state tr;

static px_err tr_leaf_init(px_ctx *ctx, const px_msg *arg) {
    (void)ctx;
    if (arg != NULL && px_msg_get_u64(arg) == 2) {
        atomic_fetch_add(&tr.inits_b, 1);
    }
    return PX_OK;
}
static px_err tr_leaf_receive(px_ctx *ctx, px_msg *m) {
    (void)ctx;
    return px_msg_tag(m) == PXT_TAG_FAIL ? PX_EFAIL : PX_OK;
}
static const px_behavior tr_leaf_b = {.name = "t.tree.leaf", .init = tr_leaf_init,
                                      .receive = tr_leaf_receive};

/* A middle supervisor with one child of its own ("g"). */
static px_err tr_mid_init(px_ctx *ctx, const px_msg *arg) {
    (void)arg;
    px_child_spec spec = {.id = "g", .behavior = "t.tree.leaf"};
    return px_spawn_child(ctx, &spec, NULL, NULL);
}
static const px_behavior tr_mid_b = {.name = "t.tree.mid", .init = tr_mid_init,
                                     .receive = tr_leaf_receive};

static px_ref tr_kid_b;

/* The top supervisor: children a (mid), b (leaf), c (leaf), in that order. */
static px_err tr_top_init(px_ctx *ctx, const px_msg *arg) {
    (void)arg;
    static const char *ids[] = {"a", "b", "c"};
    static const char *behs[] = {"t.tree.mid", "t.tree.leaf", "t.tree.leaf"};
    for (int i = 0; i < 3; i++) {
        px_child_spec spec = {.id = ids[i], .behavior = behs[i]};
        px_msg *a = pxt_u64(0, (uint64_t)i + 1);
        px_ref r;
        px_err e = px_spawn_child(ctx, &spec, &a, &r);
        px_msg_free(a);
        if (e != PX_OK) {
            return e;
        }
        if (i == 1) {
            tr_kid_b = r;
        }
    }
    atomic_store(&tr.ready, 1);
    return PX_OK;
}
static px_err tr_top_receive(px_ctx *ctx, px_msg *m) {
    (void)m;
    char *s = NULL;
    atomic_store(&tr.ctx_err, (int)px_tree_dump(px_ctx_system(ctx), PX_TREE_TEXT, 100, &s));
    free(s);
    return PX_OK;
}
static const px_behavior tr_top_b = {.name = "t.tree.top", .init = tr_top_init,
                                     .receive = tr_top_receive};

static px_system *tr_system(px_ref *top) {
    memset(&tr, 0, sizeof tr);
    px_system *sys = pxt_system();
    cr_assert_eq(px_behavior_register(sys, &tr_leaf_b), PX_OK);
    cr_assert_eq(px_behavior_register(sys, &tr_mid_b), PX_OK);
    cr_assert_eq(px_system_spawn(sys, &tr_top_b, NULL, NULL, top), PX_OK);
    PXT_AWAIT(atomic_load(&tr.ready) == 1, 5000);
    /* b fails once and is restarted (default decider). */
    pxt_send_u64(sys, tr_kid_b, PXT_TAG_FAIL, 0);
    PXT_AWAIT(atomic_load(&tr.inits_b) == 2, 5000);
    PXT_AWAIT(PXT_STAT(sys, restarts) == 1, 5000);
    return sys;
}

Test(core_tree, text_dump_nests_children_in_start_order_with_counters, .timeout = 20) {
    px_ref top;
    px_system *sys = tr_system(&top);
    char *s = NULL;
    cr_assert_eq(px_tree_dump(sys, PX_TREE_TEXT, 5000, &s), PX_OK);
    cr_assert_not_null(s);
    const char *pa = strstr(s, "-- a [t.tree.mid]");
    const char *pg = strstr(s, "-- g [t.tree.leaf]");
    const char *pb = strstr(s, "-- b [t.tree.leaf]");
    const char *pc = strstr(s, "-- c [t.tree.leaf]");
    cr_assert(pa && pg && pb && pc, "every actor is listed:\n%s", s);
    cr_assert(pa < pg && pg < pb && pb < pc, "start order, g under a:\n%s", s);
    cr_assert_not_null(strstr(pb, "instance=2 restarts=1 failures=1"), "b's counters:\n%s", s);
    cr_assert_not_null(strstr(s, "\n    |-- a ["), "a one level under the top actor:\n%s", s);
    cr_assert_not_null(strstr(s, "\n    |   `-- g ["), "g one level under a:\n%s", s);
    free(s);
    px_system_free(sys);
}

static json_t *tr_find(json_t *arr, const char *id) {
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o) {
        if (strcmp(json_string_value(json_object_get(o, "id")), id) == 0) {
            return o;
        }
    }
    return NULL;
}

Test(core_tree, json_dump_is_valid_and_carries_the_same_tree, .timeout = 20) {
    px_ref top;
    px_system *sys = tr_system(&top);
    char *s = NULL;
    cr_assert_eq(px_tree_dump(sys, PX_TREE_JSON, 5000, &s), PX_OK);
    json_error_t jerr;
    json_t *doc = json_loads(s, 0, &jerr);
    cr_assert_not_null(doc, "invalid JSON (%s):\n%s", jerr.text, s);
    json_t *roots = json_object_get(doc, "children");
    cr_assert_eq(json_array_size(roots), 1, "one top-level actor:\n%s", s);
    json_t *kids = json_object_get(json_array_get(roots, 0), "children");
    cr_assert_eq(json_array_size(kids), 3);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(kids, 0), "id")), "a");
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(kids, 2), "id")), "c");
    json_t *b = tr_find(kids, "b");
    cr_assert_not_null(b);
    cr_assert_eq(json_integer_value(json_object_get(b, "restarts")), 1);
    cr_assert_eq(json_integer_value(json_object_get(b, "instance")), 2);
    cr_assert_str_eq(json_string_value(json_object_get(b, "state")), "running");
    json_t *a = tr_find(kids, "a");
    cr_assert_eq(json_array_size(json_object_get(a, "children")), 1);
    json_decref(doc);
    free(s);
    px_system_free(sys);
}

Test(core_tree, dump_refuses_bad_arguments_and_actor_context, .timeout = 20) {
    px_ref top;
    px_system *sys = tr_system(&top);
    char *s = NULL;
    cr_assert_eq(px_tree_dump(NULL, PX_TREE_TEXT, 100, &s), PX_EINVAL);
    cr_assert_eq(px_tree_dump(sys, (px_tree_format)9, 100, &s), PX_EINVAL);
    cr_assert_eq(px_tree_dump(sys, PX_TREE_TEXT, 0, &s), PX_EINVAL);
    cr_assert_eq(px_tree_dump(sys, PX_TREE_TEXT, 100, NULL), PX_EINVAL);
    atomic_store(&tr.ctx_err, -1);
    pxt_send_u64(sys, top, 1, 0);
    PXT_AWAIT(atomic_load(&tr.ctx_err) != -1, 5000);
    cr_assert_eq(atomic_load(&tr.ctx_err), PX_ECONTEXT);
    px_system_free(sys);
}
