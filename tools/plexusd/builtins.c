/*
 * builtins.c — plexusd's own behaviors (builtins.h) and the config's roots.
 *
 * Concurrency. The behaviors run in actor context on the system's workers,
 * each actor's state touched only by its own turns: no locks; the
 * unknown-message counter and its logged-once flags are process-wide
 * atomics. The roots are started and followed on the main thread, the only
 * one that touches n->roots_inc and n->roots_retry_ms; member_again reads
 * n->c under n->parts_mtx, root_start holds it (pxd_part_hold) across its
 * etcd round trip.
 */
#include "builtins.h"
#include "load.h"
#include "ops.h"
#include "text.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <plexus/examples.h>

#include "plexus/admin.pb-c.h"
#include "plexus/kv.pb-c.h"

#define PXD_ROOT_TRIES 50
#define PXD_ROOT_RETRY_MS 200

static _Atomic uint64_t g_unknown;
static atomic_flag g_unknown_logged[2] = {ATOMIC_FLAG_INIT, ATOMIC_FLAG_INIT};

uint64_t pxd_builtins_unknown(void) { return atomic_load(&g_unknown); }

/* An unknown message: counted, logged once per behavior (which = 0 kv, 1 echo). */
static px_err unknown(px_ctx *ctx, const px_msg *m, int which, const char *beh) {
    atomic_fetch_add(&g_unknown, 1);
    if (!atomic_flag_test_and_set(&g_unknown_logged[which])) {
        const ProtobufCMessage *pb = px_msg_pb(m);
        px_log(px_ctx_system(ctx), PX_LOG_WARN,
               "%s: dropped a message it does not handle (kind %d, type %s); further ones "
               "are only counted",
               beh, (int)px_msg_kind_of(m), pb != NULL ? pb->descriptor->name : "-");
    }
    return PX_OK;
}

static char *dup_or_empty(const char *s) { return strdup(s != NULL ? s : ""); }

px_err pxd_reply_pb(px_ctx *ctx, const px_msg *req, ProtobufCMessage *pb) {
    px_msg *out = NULL;
    if (px_msg_proto(&out, pb, NULL) != PX_OK) {
        protobuf_c_message_free_unpacked(pb, NULL);
        return PX_OK; /* out of memory: the asker times out */
    }
    if (px_msg_corr(req) == 0) {
        px_msg_free(out);
        return PX_OK;
    }
    (void)px_reply(ctx, req, &out);
    px_msg_free(out);
    return PX_OK;
}

/* ---- kv.shard ---- */

typedef struct kv_ent {
    char *key;
    uint8_t *val;
    size_t len;
    struct kv_ent *next;
} kv_ent;

typedef struct kv {
    kv_ent **b;
    size_t nb, n;
} kv;

static uint64_t fnv(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s != '\0'; s++) {
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    }
    return h;
}

static kv_ent **kv_find(kv *k, const char *key) {
    kv_ent **e = &k->b[fnv(key) % k->nb];
    while (*e != NULL && strcmp((*e)->key, key) != 0) {
        e = &(*e)->next;
    }
    return e;
}

static void kv_grow(kv *k) {
    size_t nb = k->nb * 2;
    kv_ent **b = calloc(nb, sizeof *b);
    if (b == NULL) {
        return; /* longer chains, still correct */
    }
    for (size_t i = 0; i < k->nb; i++) {
        for (kv_ent *e = k->b[i], *next; e != NULL; e = next) {
            next = e->next;
            size_t j = fnv(e->key) % nb;
            e->next = b[j];
            b[j] = e;
        }
    }
    free(k->b);
    k->b = b;
    k->nb = nb;
}

static px_err kv_init(px_ctx *ctx, const px_msg *arg) {
    (void)arg;
    kv *k = calloc(1, sizeof *k);
    if (k == NULL || (k->b = calloc(64, sizeof *k->b)) == NULL) {
        free(k);
        return PX_ENOMEM;
    }
    k->nb = 64;
    px_set_state(ctx, k);
    return PX_OK;
}

static void kv_stop(px_ctx *ctx) {
    kv *k = px_state(ctx);
    for (size_t i = 0; k != NULL && i < k->nb; i++) {
        for (kv_ent *e = k->b[i], *next; e != NULL; e = next) {
            next = e->next;
            free(e->key);
            free(e->val);
            free(e);
        }
    }
    if (k != NULL) {
        free(k->b);
    }
    free(k);
}

static px_err kv_ack(px_ctx *ctx, const px_msg *m, const char *key, bool existed) {
    Plexus__Kv__Ack *a = malloc(sizeof *a);
    if (a == NULL) {
        return PX_OK;
    }
    plexus__kv__ack__init(a);
    a->key = dup_or_empty(key);
    a->node = dup_or_empty(px_system_node_name(px_ctx_system(ctx)));
    a->existed = existed;
    return pxd_reply_pb(ctx, m, &a->base);
}

static px_err kv_receive(px_ctx *ctx, px_msg *m) {
    kv *k = px_state(ctx);
    const ProtobufCMessage *pb = px_msg_pb(m);
    if (pb == NULL) {
        return unknown(ctx, m, 0, "kv.shard");
    }
    if (pb->descriptor == &plexus__kv__put__descriptor) {
        const Plexus__Kv__Put *p = (const Plexus__Kv__Put *)pb;
        kv_ent **at = kv_find(k, p->key);
        bool existed = *at != NULL;
        uint8_t *v = malloc(p->value.len > 0 ? p->value.len : 1);
        if (v == NULL) {
            return PX_ENOMEM;
        }
        if (p->value.len > 0) {
            memcpy(v, p->value.data, p->value.len);
        }
        if (existed) {
            free((*at)->val);
        } else {
            kv_ent *e = calloc(1, sizeof *e);
            if (e == NULL || (e->key = strdup(p->key)) == NULL) {
                free(e);
                free(v);
                return PX_ENOMEM;
            }
            *at = e;
            k->n++;
        }
        (*at)->val = v;
        (*at)->len = p->value.len;
        if (!existed && k->n > k->nb) {
            kv_grow(k);
        }
        return kv_ack(ctx, m, p->key, existed);
    }
    if (pb->descriptor == &plexus__kv__del__descriptor) {
        const Plexus__Kv__Del *d = (const Plexus__Kv__Del *)pb;
        kv_ent **at = kv_find(k, d->key);
        kv_ent *e = *at;
        if (e != NULL) {
            *at = e->next;
            free(e->key);
            free(e->val);
            free(e);
            k->n--;
        }
        return kv_ack(ctx, m, d->key, e != NULL);
    }
    if (pb->descriptor == &plexus__kv__get__descriptor) {
        const Plexus__Kv__Get *g = (const Plexus__Kv__Get *)pb;
        kv_ent *e = *kv_find(k, g->key);
        Plexus__Kv__Value *v = malloc(sizeof *v);
        if (v == NULL) {
            return PX_OK;
        }
        plexus__kv__value__init(v);
        v->key = dup_or_empty(g->key);
        v->node = dup_or_empty(px_system_node_name(px_ctx_system(ctx)));
        v->found = e != NULL;
        if (e != NULL && e->len > 0 && (v->value.data = malloc(e->len)) != NULL) {
            memcpy(v->value.data, e->val, e->len);
            v->value.len = e->len;
        }
        return pxd_reply_pb(ctx, m, &v->base);
    }
    return unknown(ctx, m, 0, "kv.shard");
}

static const px_behavior kv_beh = {
    .name = "kv.shard", .init = kv_init, .receive = kv_receive, .stop = kv_stop};

/* ---- echo ---- */

static px_err echo_init(px_ctx *ctx, const px_msg *arg) {
    (void)arg;
    uint64_t *served = calloc(1, sizeof *served);
    if (served == NULL) {
        return PX_ENOMEM;
    }
    px_set_state(ctx, served);
    return PX_OK;
}

static void echo_stop(px_ctx *ctx) { free(px_state(ctx)); }

static px_err echo_receive(px_ctx *ctx, px_msg *m) {
    uint64_t *served = px_state(ctx);
    const ProtobufCMessage *pb = px_msg_pb(m);
    if (pb == NULL || pb->descriptor != &plexus__kv__ping__descriptor) {
        return unknown(ctx, m, 1, "echo");
    }
    if (strcmp(((const Plexus__Kv__Ping *)pb)->text, "fail") == 0) {
        px_fail(ctx, PX_EFAIL, "echo: asked to fail"); /* to exercise supervision */
        return PX_OK;
    }
    Plexus__Kv__Pong *p = malloc(sizeof *p);
    if (p == NULL) {
        return PX_OK;
    }
    plexus__kv__pong__init(p);
    p->text = dup_or_empty(((const Plexus__Kv__Ping *)pb)->text);
    p->node = dup_or_empty(px_system_node_name(px_ctx_system(ctx)));
    p->served = ++*served;
    return pxd_reply_pb(ctx, m, &p->base);
}

static const px_behavior echo_beh = {
    .name = "echo", .init = echo_init, .receive = echo_receive, .stop = echo_stop};

/* ---- generic supervisors ---- */

px_err pxd_placement_parse(const char *s, px_placement *pl) {
    memset(pl, 0, sizeof *pl);
    if (s == NULL || s[0] == '\0' || strcmp(s, "here") == 0) {
        pl->policy = PX_PLACE_HERE;
    } else if (strcmp(s, "round_robin") == 0) {
        pl->policy = PX_PLACE_ROUND_ROBIN;
    } else if (strcmp(s, "least_loaded") == 0) {
        pl->policy = PX_PLACE_LEAST_LOADED;
    } else if (strncmp(s, "node:", 5) == 0 && s[5] != '\0') {
        pl->policy = PX_PLACE_NODE;
        pl->node = s + 5;
    } else if (strncmp(s, "role:", 5) == 0 && s[5] != '\0') {
        pl->policy = PX_PLACE_ROLE;
        pl->role = s + 5;
    } else {
        return PX_EINVAL;
    }
    return PX_OK;
}

static px_err sup_init(px_ctx *ctx, const px_msg *arg) {
    const ProtobufCMessage *pb = arg != NULL ? px_msg_pb(arg) : NULL;
    if (pb == NULL || pb->descriptor != &plexus__admin__supervisor_spec__descriptor) {
        px_log(px_ctx_system(ctx), PX_LOG_ERROR,
               "plexus.sup: the start argument must be a plexus.admin.SupervisorSpec");
        return PX_EINVAL;
    }
    const Plexus__Admin__SupervisorSpec *s = (const Plexus__Admin__SupervisorSpec *)pb;
    px_placement pl;
    if (s->behavior[0] == '\0' || s->children == 0 || s->children > 1024 ||
        pxd_placement_parse(s->placement, &pl) != PX_OK) {
        px_log(px_ctx_system(ctx), PX_LOG_ERROR,
               "plexus.sup: bad SupervisorSpec (behavior \"%s\", %u children, placement \"%s\")",
               s->behavior, s->children, s->placement);
        return PX_EINVAL;
    }
    px_restart_policy rp;
    px_restart_policy_init(&rp);
    if (s->max_restarts > 0) {
        rp.max_restarts = s->max_restarts;
    }
    if (s->within_ms > 0) {
        rp.window_ms = s->within_ms;
    }
    for (uint32_t i = 0; i < s->children; i++) {
        char id[96], gname[PX_GLOBAL_NAME_MAX];
        snprintf(id, sizeof id, "%.60s.%u", s->behavior, i);
        px_placement cpl = pl;
        if (s->global_name[0] != '\0' && pl.policy != PX_PLACE_HERE) {
            snprintf(gname, sizeof gname, "%.100s.%u", s->global_name, i);
            cpl.global_name = gname;
        }
        px_child_spec cs = {.id = id,
                            .behavior = s->behavior,
                            .policy = &rp,
                            .placement = pl.policy == PX_PLACE_HERE ? NULL : &cpl};
        px_err e = px_spawn_child(ctx, &cs, NULL, NULL);
        if (e != PX_OK) {
            px_log(px_ctx_system(ctx), PX_LOG_ERROR, "plexus.sup: child %s (%s, placement %s): %s",
                   id, s->behavior, s->placement[0] ? s->placement : "here", px_strerror(e));
            return e;
        }
    }
    return PX_OK;
}

static px_err sup_receive(px_ctx *ctx, px_msg *m) {
    (void)ctx;
    (void)m;
    return PX_OK; /* a supervisor only supervises */
}

static const px_behavior sup_beh[3] = {
    {.name = "plexus.sup.one_for_one", .init = sup_init, .receive = sup_receive,
     .strategy = PX_ONE_FOR_ONE},
    {.name = "plexus.sup.all_for_one", .init = sup_init, .receive = sup_receive,
     .strategy = PX_ALL_FOR_ONE},
    {.name = "plexus.sup.rest_for_one", .init = sup_init, .receive = sup_receive,
     .strategy = PX_REST_FOR_ONE},
};

px_err pxd_builtins_register(px_system *sys) {
    const px_behavior *bs[] = {&kv_beh, &echo_beh, &sup_beh[0], &sup_beh[1], &sup_beh[2]};
    for (size_t i = 0; i < sizeof bs / sizeof bs[0]; i++) {
        px_err e = px_behavior_register(sys, bs[i]);
        if (e != PX_OK) {
            return e;
        }
    }
    const ProtobufCMessageDescriptor *ts[] = {
        &plexus__kv__put__descriptor,  &plexus__kv__get__descriptor,
        &plexus__kv__del__descriptor,  &plexus__kv__value__descriptor,
        &plexus__kv__ack__descriptor,  &plexus__kv__ping__descriptor,
        &plexus__kv__pong__descriptor, &plexus__admin__supervisor_spec__descriptor};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
        px_err e = px_type_register(sys, ts[i]);
        if (e != PX_OK) {
            return e;
        }
    }
    px_err e = pxd_load_register(sys);
    return e != PX_OK ? e : px_examples_register(sys);
}

/* ---- roots ---- */

static px_err root_start(pxd_node *n, const pxd_root *r, px_ref *out, char *why, size_t whylen) {
    px_msg *arg = NULL;
    const char *beh = r->behavior;
    if (r->supervisor != NULL) {
        Plexus__Admin__SupervisorSpec *s = malloc(sizeof *s);
        if (s == NULL) {
            return PX_ENOMEM;
        }
        plexus__admin__supervisor_spec__init(s);
        s->behavior = strdup(r->behavior);
        s->placement = dup_or_empty(r->placement);
        s->global_name = dup_or_empty(r->global_name);
        s->children = r->children;
        s->max_restarts = r->max_restarts;
        s->within_ms = r->within_ms;
        if (s->behavior == NULL || s->placement == NULL || s->global_name == NULL ||
            px_msg_proto(&arg, &s->base, NULL) != PX_OK) {
            protobuf_c_message_free_unpacked(&s->base, NULL);
            return PX_ENOMEM;
        }
        static const char *const sups[][2] = {{"one_for_one", "plexus.sup.one_for_one"},
                                              {"all_for_one", "plexus.sup.all_for_one"},
                                              {"rest_for_one", "plexus.sup.rest_for_one"}};
        beh = NULL;
        for (size_t i = 0; i < 3; i++) {
            if (strcmp(r->supervisor, sups[i][0]) == 0) {
                beh = sups[i][1];
            }
        }
        if (beh == NULL) {
            px_msg_free(arg);
            snprintf(why, whylen, "unknown supervisor \"%s\"", r->supervisor);
            return PX_EINVAL;
        }
    } else if (r->arg_type != NULL) {
        char e2[200];
        px_err e = pxd_msg_from_json(n->sys, r->arg_type, r->arg, &arg, e2, sizeof e2);
        if (e != PX_OK) {
            snprintf(why, whylen, "arg: %s", e2);
            return PX_EINVAL; /* not worth trying again */
        }
    }
    px_spawn_opts so = {.name = r->name};
    px_err e = px_system_spawn_named(n->sys, beh, &arg, &so, out);
    px_msg_free(arg);
    if (e != PX_OK) {
        snprintf(why, whylen, "spawn of %s: %s", beh, px_strerror(e));
        return e;
    }
    px_cluster *c = r->global_name != NULL && r->global_name[0] != '\0'
                        ? pxd_part_hold(n, PXD_PART_C)
                        : NULL;
    if (c != NULL) {
        px_ref owner = PX_REF_NIL;
        e = px_register_global(c, r->global_name, *out, &owner);
        pxd_part_rele(n, PXD_PART_C, c);
        if (e != PX_OK) {
            char o[48];
            snprintf(why, whylen, "global name \"%s\": %s%s%s", r->global_name, px_strerror(e),
                     e == PX_EEXIST ? ", held by " : "",
                     e == PX_EEXIST ? px_ref_format(owner, o, sizeof o) : "");
            (void)px_stop(n->sys, *out);
            return e;
        }
    }
    return PX_OK;
}

px_err pxd_roots_start(pxd_node *n, char *err, size_t errlen) {
    for (size_t i = 0; i < n->cfg->n_roots; i++) {
        const pxd_root *r = &n->cfg->roots[i];
        char why[256] = "";
        px_ref ref = PX_REF_NIL;
        /* A root that places children elsewhere needs those nodes up: at
         * start their links may still be coming up, so a failure is tried
         * again for a while before it stops the node. */
        px_err e = PX_OK;
        for (int tries = 0; tries < PXD_ROOT_TRIES; tries++) {
            if ((e = root_start(n, r, &ref, why, sizeof why)) == PX_OK || e == PX_EINVAL) {
                break;
            }
            if (tries == 0) {
                px_log(n->sys, PX_LOG_INFO, "root %s: %s; trying again for %d ms", r->name, why,
                       PXD_ROOT_TRIES * PXD_ROOT_RETRY_MS);
            }
            nng_msleep(PXD_ROOT_RETRY_MS);
        }
        if (e != PX_OK) {
            snprintf(err, errlen, "roots[%zu] \"%s\" (%s): %s", i, r->name, r->src, why);
            return e;
        }
        char rs[48];
        px_log(n->sys, PX_LOG_INFO, "root %s started: %s%s%s (%s)", r->name,
               r->supervisor != NULL ? r->supervisor : r->behavior,
               r->supervisor != NULL ? " of " : "", r->supervisor != NULL ? r->behavior : "",
               px_ref_format(ref, rs, sizeof rs));
    }
    return PX_OK;
}

/* Is the node a member (registered, not fenced)? *inc: as which incarnation. */
static bool member_again(pxd_node *n, uint32_t *inc) {
    px_cluster_health h = {0};
    nng_mtx_lock(n->parts_mtx);
    if (n->c != NULL) {
        px_cluster_health_get(n->c, &h);
    }
    nng_mtx_unlock(n->parts_mtx);
    *inc = h.node_inc;
    return h.registered && !h.fenced;
}

void pxd_roots_follow(pxd_node *n) {
    uint32_t inc = 0;
    if (atomic_load(&n->phase) != PXD_RUNNING || n->cfg->n_roots == 0 ||
        pxu_mono_ms() < n->roots_retry_ms || !member_again(n, &inc) || inc == n->roots_inc) {
        return;
    }
    px_log(n->sys, PX_LOG_WARN,
           "roots: this node was fenced and rejoined as incarnation %u; its roots belong to "
           "incarnation %u, which the other nodes take for dead: starting them again",
           inc, n->roots_inc);
    /* Stop the old ones (and those a failed attempt started) and wait
     * (bounded) until their names are free: all start again from the config. */
    for (size_t i = 0; i < n->cfg->n_roots; i++) {
        px_ref old = PX_REF_NIL;
        if (px_whereis(n->sys, n->cfg->roots[i].name, &old) == PX_OK) {
            (void)px_stop(n->sys, old);
        }
    }
    int64_t until = pxu_mono_ms() + PXD_ROOT_TRIES * PXD_ROOT_RETRY_MS;
    for (size_t i = 0; i < n->cfg->n_roots; i++) {
        px_ref old = PX_REF_NIL;
        while (px_whereis(n->sys, n->cfg->roots[i].name, &old) == PX_OK &&
               pxu_mono_ms() < until) {
            nng_msleep(10);
        }
    }
    char err[512];
    px_err e = pxd_roots_start(n, err, sizeof err);
    if (e != PX_OK) {
        px_log(n->sys, PX_LOG_ERROR, "roots: starting them again: %s; trying again in %d ms", err,
               PXD_ROOT_RETRY_MS * 10);
        n->roots_retry_ms = pxu_mono_ms() + PXD_ROOT_RETRY_MS * 10;
        return;
    }
    n->roots_inc = inc;
}
