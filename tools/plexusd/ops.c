/*
 * ops.c — plexusd's side of the admin channel (ops.h): one function per
 * AdminRequest op, each answering with JSON; the event ring that `watch`
 * streams; the drain.
 *
 * Concurrency. pxd_admin_handle runs on the admin connections' threads,
 * several at once; events come from workers (the failure hook, the
 * subscriber actor) into the ring under pxd_events.mtx. n->t, n->c and n->m
 * are read under n->parts_mtx, or held (pxd_part_hold) across a remote
 * spawn or an etcd round trip; pxd_drain holds n->drain_mtx throughout and
 * takes the parts out (pxd_part_take) before it stops them.
 */
#include "ops.h"

#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <sodium.h>

#include "builtins.h"
#include "pbjson.h"
#include "text.h"
#include "plexus/admin.pb-c.h"
#include "plexus/plexus.pb-c.h"

#define EV_MAX 1024
#define ASK_DEFAULT_MS 5000

/* ---- events ---- */

struct pxd_events {
    nng_mtx *mtx;
    char *line[EV_MAX]; /* JSON text; line[seq % EV_MAX] */
    uint64_t seq;       /* events recorded so far */
};

/* Records one event (takes o). Any thread; never blocks for long. */
static void ev_push(pxd_node *n, json_t *o) {
    struct pxd_events *e = n->ev;
    if (e == NULL || o == NULL) {
        json_decref(o);
        return;
    }
    json_object_set_new(o, "node", json_string(px_system_node_name(n->sys)));
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (text == NULL) {
        return;
    }
    nng_mtx_lock(e->mtx);
    free(e->line[e->seq % EV_MAX]);
    e->line[e->seq % EV_MAX] = text;
    e->seq++;
    nng_mtx_unlock(e->mtx);
}

static void on_failure(void *arg, px_ref who, const char *behavior, px_err code,
                       const char *reason) {
    pxd_node *n = arg;
    char rb[48];
    ev_push(n, json_pack("{s:s, s:s, s:s, s:s, s:s, s:I}", "event", "failure", "ref",
                         px_ref_format(who, rb, sizeof rb), "behavior", behavior, "code",
                         px_errname(code), "reason", reason, "at_ms", (json_int_t)pxu_wall_ms()));
}

static const char *mstate(int s) { return px_member_state_name((px_member_state)s); }

static px_err sub_receive(px_ctx *ctx, px_msg *m) {
    pxd_node *n = px_state(ctx);
    const ProtobufCMessage *pb = px_msg_pb(m);
    if (pb == NULL || pb->descriptor != &plexus__member_event__descriptor) {
        return PX_OK;
    }
    const Plexus__MemberEvent *ev = (const Plexus__MemberEvent *)pb;
    ev_push(n, json_pack("{s:s, s:s, s:I, s:s, s:s, s:s, s:I}", "event", "member", "member",
                         ev->name, "inc", (json_int_t)ev->node_inc, "from", mstate(ev->from), "to",
                         mstate(ev->state), "cause", ev->cause, "at_ms", (json_int_t)ev->at_ms));
    return PX_OK;
}

/* The start argument carries the node's address (this process only). */
static px_err sub_init(px_ctx *ctx, const px_msg *arg) {
    size_t len = 0;
    const void *d = arg != NULL ? px_msg_data(arg, &len) : NULL;
    pxd_node *n = NULL;
    if (d == NULL || len != sizeof n) {
        return PX_EINVAL;
    }
    memcpy(&n, d, sizeof n);
    px_set_state(ctx, n);
    return PX_OK;
}

static const px_behavior sub_beh = {.name = "plexusd.events", .init = sub_init,
                                    .receive = sub_receive};

px_err pxd_events_start(pxd_node *n) {
    struct pxd_events *e = calloc(1, sizeof *e);
    if (e == NULL || nng_mtx_alloc(&e->mtx) != 0) {
        free(e);
        return PX_ENOMEM;
    }
    n->ev = e;
    px_system_on_failure(n->sys, on_failure, n);
    if (n->c == NULL) {
        return PX_OK;
    }
    px_msg *a = NULL;
    px_ref sub = PX_REF_NIL; /* the membership subscriber actor */
    px_err rv = px_msg_bytes(&a, 0, &n, sizeof n);
    if (rv == PX_OK) {
        rv = px_system_spawn(n->sys, &sub_beh, &a, NULL, &sub);
    }
    px_msg_free(a);
    if (rv == PX_OK) {
        rv = px_cluster_subscribe(n->c, sub);
    }
    return rv;
}

void pxd_events_stop(pxd_node *n) {
    struct pxd_events *e = n->ev;
    if (e == NULL) {
        return;
    }
    px_system_on_failure(n->sys, NULL, NULL);
    n->ev = NULL;
    for (size_t i = 0; i < EV_MAX; i++) {
        free(e->line[i]);
    }
    nng_mtx_free(e->mtx);
    free(e);
}

/* ---- replies ---- */

static void reply(px_admin_conn *conn, uint64_t id, bool more, px_err code, const char *error,
                  const char *json) {
    Plexus__Admin__AdminReply r = PLEXUS__ADMIN__ADMIN_REPLY__INIT;
    r.id = id;
    r.more = more;
    r.code = code;
    r.error = (char *)(error != NULL ? error : "");
    r.json = (char *)(json != NULL ? json : "");
    size_t len = plexus__admin__admin_reply__get_packed_size(&r);
    uint8_t *buf = malloc(len > 0 ? len : 1);
    if (buf == NULL) {
        return;
    }
    plexus__admin__admin_reply__pack(&r, buf);
    (void)px_admin_send(conn, buf, len);
    free(buf);
}

/* Ends a request with o as its result (taken), or with an error. */
static void done_json(pxd_node *n, px_admin_conn *conn, uint64_t id, json_t *o) {
    char *text = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (text == NULL) {
        atomic_fetch_add(&n->admin_err, 1);
        reply(conn, id, false, PX_ENOMEM, "out of memory rendering the result", NULL);
        return;
    }
    atomic_fetch_add(&n->admin_ok, 1);
    reply(conn, id, false, PX_OK, NULL, text);
    free(text);
}

static void done_err(pxd_node *n, px_admin_conn *conn, uint64_t id, px_err code, const char *fmt,
                     ...) __attribute__((format(printf, 5, 6)));
static void done_err(pxd_node *n, px_admin_conn *conn, uint64_t id, px_err code, const char *fmt,
                     ...) {
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    atomic_fetch_add(&n->admin_err, 1);
    reply(conn, id, false, code, why, NULL);
}

/* ---- targets ---- */

/* Parses a target: a ref as px_ref_format prints it, a local name, or a
 * global name (tried in that order). PX_ENOENT when nothing matches. */
static px_err resolve(pxd_node *n, const char *target, px_ref *out) {
    if (target == NULL || target[0] == '\0') {
        return PX_EINVAL;
    }
    unsigned node, inc, id, ainc;
    int used = 0;
    if (sscanf(target, "%8x.%x/%u.%u%n", &node, &inc, &id, &ainc, &used) == 4 &&
        target[used] == '\0') {
        *out = (px_ref){node, inc, id, ainc};
        return PX_OK;
    }
    if (px_whereis(n->sys, target, out) == PX_OK) {
        return PX_OK;
    }
    nng_mtx_lock(n->parts_mtx);
    px_err e = n->c != NULL ? px_whereis_global(n->c, target, out) : PX_ENOENT;
    nng_mtx_unlock(n->parts_mtx);
    return e == PX_OK ? PX_OK : PX_ENOENT;
}

/* ---- the parts ---- */

static void *part_get(pxd_node *n, pxd_part which) {
    return which == PXD_PART_T ? (void *)n->t : which == PXD_PART_C ? (void *)n->c : (void *)n->m;
}

static void part_put(pxd_node *n, pxd_part which, void *part) {
    if (which == PXD_PART_T) {
        n->t = part;
    } else if (which == PXD_PART_C) {
        n->c = part;
    } else {
        n->m = part;
    }
}

void *pxd_part_hold(pxd_node *n, pxd_part which) {
    nng_mtx_lock(n->parts_mtx);
    void *part = part_get(n, which);
    if (part != NULL) {
        n->part_holders[which]++;
    }
    nng_mtx_unlock(n->parts_mtx);
    return part;
}

void pxd_part_rele(pxd_node *n, pxd_part which, void *part) {
    if (part == NULL) {
        return;
    }
    nng_mtx_lock(n->parts_mtx);
    assert(n->part_holders[which] > 0);
    if (--n->part_holders[which] == 0) {
        nng_cv_wake(n->parts_cv);
    }
    nng_mtx_unlock(n->parts_mtx);
}

void pxd_part_set(pxd_node *n, pxd_part which, void *part) {
    nng_mtx_lock(n->parts_mtx);
    part_put(n, which, part);
    nng_mtx_unlock(n->parts_mtx);
}

void *pxd_part_take(pxd_node *n, pxd_part which) {
    nng_mtx_lock(n->parts_mtx);
    void *part = part_get(n, which);
    part_put(n, which, NULL); /* new holders get NULL: the wait ends */
    while (n->part_holders[which] > 0) {
        nng_cv_wait(n->parts_cv);
    }
    nng_mtx_unlock(n->parts_mtx);
    return part;
}

const char *pxd_phase_name(int phase) {
    static const char *const names[] = {"starting", "running", "draining", "stopped"};
    return phase >= PXD_STARTING && phase <= PXD_STOPPED ? names[phase] : "unknown";
}

/* The node named by a ref's node id, from the membership ("" if unknown). */
static void node_name_of(pxd_node *n, uint32_t node_id, char *out, size_t len) {
    out[0] = '\0';
    if (node_id == px_node_id(px_system_node_name(n->sys))) {
        snprintf(out, len, "%s", px_system_node_name(n->sys));
        return;
    }
    nng_mtx_lock(n->parts_mtx);
    if (n->c != NULL) {
        px_member ms[64];
        size_t k = 0;
        px_cluster_members(n->c, ms, 64, &k);
        for (size_t i = 0; i < k; i++) {
            if (ms[i].node_id == node_id && len > 0) {
                size_t l = strnlen(ms[i].name, sizeof ms[i].name);
                l = l < len ? l : len - 1;
                memcpy(out, ms[i].name, l);
                out[l] = '\0';
            }
        }
    }
    nng_mtx_unlock(n->parts_mtx);
}

/* ---- ops ---- */

static void names_add(void *arg, const char *name) { json_array_append_new(arg, json_string(name)); }

static void op_info(pxd_node *n, px_admin_conn *conn, uint64_t id) {
    char why[128] = "";
    bool ready = pxd_ready(n, why, sizeof why);
    json_t *roles = json_array(), *behs = json_array();
    for (size_t i = 0; i < n->cfg->roles.n; i++) {
        json_array_append_new(roles, json_string(n->cfg->roles.v[i]));
    }
    (void)px_behaviors(n->sys, names_add, behs);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:b, s:s, s:I, s:I, s:o, s:o, s:s, s:b}", "node",
                          px_system_node_name(n->sys), "phase",
                          pxd_phase_name(atomic_load(&n->phase)), "admin",
                          n->admin != NULL ? px_admin_server_url(n->admin) : "", "cluster",
                          n->cfg->cluster, "ready", ready, "not_ready", why, "started_ms",
                          (json_int_t)n->started_ms, "uptime_ms",
                          (json_int_t)(pxu_wall_ms() - n->started_ms), "roles", roles, "behaviors",
                          behs, "version", PXD_VERSION, "standalone", n->cfg->etcd.n == 0);
    nng_mtx_lock(n->parts_mtx);
    if (o != NULL && n->t != NULL) {
        json_object_set_new(o, "address", json_string(px_transport_address(n->t)));
    }
    if (o != NULL && n->c != NULL) {
        px_cluster_health h;
        px_cluster_health_get(n->c, &h);
        json_object_set_new(o, "inc", json_integer(h.node_inc));
        json_object_set_new(o, "fenced", json_boolean(h.fenced));
        json_object_set_new(o, "etcd_down_since_ms", json_integer(h.etcd_down_since_ms));
    }
    nng_mtx_unlock(n->parts_mtx);
    done_json(n, conn, id, o);
}

static void op_why(pxd_node *n, px_admin_conn *conn, uint64_t id, const char *node) {
    enum { MAXEV = 256 };
    px_member_event *evs = calloc(MAXEV, sizeof *evs);
    if (evs == NULL) {
        done_err(n, conn, id, PX_ENOMEM, "out of memory");
        return;
    }
    size_t k = 0;
    nng_mtx_lock(n->parts_mtx);
    if (n->c != NULL) {
        px_cluster_audit(n->c, evs, MAXEV, &k);
    }
    nng_mtx_unlock(n->parts_mtx);
    json_t *arr = json_array();
    size_t matched = 0;
    for (size_t i = 0; arr != NULL && i < k; i++) {
        const px_member_event *e = &evs[i];
        if (node != NULL && node[0] != '\0' && strcmp(node, e->m.name) != 0) {
            continue;
        }
        matched++;
        json_array_append_new(arr, json_pack("{s:s, s:I, s:s, s:s, s:s, s:I, s:I}", "member",
                                             e->m.name, "inc", (json_int_t)e->m.node_inc, "from",
                                             e->from ? mstate(e->from) : "", "to",
                                             mstate(e->m.state), "cause", e->cause, "at_ms",
                                             (json_int_t)e->at_ms, "revision",
                                             (json_int_t)e->revision));
    }
    free(evs);
    if (node != NULL && node[0] != '\0' && matched == 0) {
        json_decref(arr);
        done_err(n, conn, id, PX_ENOENT, "node %s: no membership history here (never seen)",
                 node);
        return;
    }
    done_json(n, conn, id, json_pack("{s:s, s:o}", "observer", px_system_node_name(n->sys),
                                     "events", arr));
}

/* Flattens a px_tree_dump JSON array into out (actors with their parent's id). */
static void flatten(json_t *kids, const char *parent, json_t *out) {
    size_t i;
    json_t *k;
    json_array_foreach(kids, i, k) {
        json_t *a = json_copy(k); /* shallow: only the copy's own keys change */
        json_object_del(a, "children");
        json_object_set_new(a, "parent", json_string(parent));
        json_array_append_new(out, a);
        flatten(json_object_get(k, "children"), json_string_value(json_object_get(k, "id")),
                out);
    }
}

static int by_depth(const void *a, const void *b) {
    json_int_t x = json_integer_value(json_object_get(*(json_t *const *)a, "mailbox_depth"));
    json_int_t y = json_integer_value(json_object_get(*(json_t *const *)b, "mailbox_depth"));
    if (x != y) {
        return x < y ? 1 : -1;
    }
    json_int_t p = json_integer_value(json_object_get(*(json_t *const *)a, "processed"));
    json_int_t q = json_integer_value(json_object_get(*(json_t *const *)b, "processed"));
    return p < q ? 1 : p > q ? -1 : 0;
}

static json_t *tree_json(pxd_node *n, px_err *e) {
    char *text = NULL;
    *e = px_tree_dump(n->sys, PX_TREE_JSON, 3000, &text);
    if (*e != PX_OK) {
        return NULL;
    }
    json_t *t = json_loads(text, 0, NULL);
    free(text);
    if (t == NULL) {
        *e = PX_ENOMEM;
    }
    return t;
}

static void op_actors(pxd_node *n, px_admin_conn *conn, uint64_t id, const Plexus__Admin__ActorsReq *r) {
    px_err e;
    json_t *t = tree_json(n, &e);
    if (t == NULL) {
        done_err(n, conn, id, e, "tree dump: %s", px_strerror(e));
        return;
    }
    json_t *all = json_array();
    flatten(json_object_get(t, "children"), "", all);
    json_decref(t);
    size_t cnt = json_array_size(all);
    json_t **v = calloc(cnt > 0 ? cnt : 1, sizeof *v);
    for (size_t i = 0; v != NULL && i < cnt; i++) {
        v[i] = json_array_get(all, i);
    }
    if (v != NULL && r != NULL && r->by_depth) {
        qsort(v, cnt, sizeof *v, by_depth);
    }
    size_t lim = r != NULL && r->limit > 0 && r->limit < cnt ? r->limit : cnt;
    json_t *out = json_array();
    for (size_t i = 0; v != NULL && i < lim; i++) {
        json_array_append(out, v[i]);
    }
    free(v);
    json_decref(all);
    done_json(n, conn, id, json_pack("{s:s, s:I, s:o}", "node", px_system_node_name(n->sys),
                                     "total", (json_int_t)cnt, "actors", out));
}

static void op_tree(pxd_node *n, px_admin_conn *conn, uint64_t id) {
    px_err e;
    json_t *t = tree_json(n, &e);
    if (t == NULL) {
        done_err(n, conn, id, e, "tree dump: %s", px_strerror(e));
        return;
    }
    done_json(n, conn, id, t);
}

px_err pxd_msg_from_json(px_system *sys, const char *type, const char *json, px_msg **out,
                         char *why, size_t whylen) {
    const ProtobufCMessageDescriptor *d = px_type_lookup(sys, type);
    if (d == NULL) {
        snprintf(why, whylen, "unknown message type \"%s\" (plexctl types lists them)", type);
        return PX_ETYPE;
    }
    ProtobufCMessage *pb = NULL;
    char err[256] = "";
    px_err e = pxj_from_text(d, json != NULL && json[0] ? json : "{}", &pb, err, sizeof err);
    if (e != PX_OK) {
        snprintf(why, whylen, "%s: %s", type, err);
        return e;
    }
    e = px_msg_proto(out, pb, NULL);
    if (e != PX_OK) {
        protobuf_c_message_free_unpacked(pb, NULL);
        snprintf(why, whylen, "out of memory");
    }
    return e;
}

static json_t *msg_json(const px_msg *m) {
    const ProtobufCMessage *pb = px_msg_pb(m);
    if (pb != NULL) {
        return json_pack("{s:s, s:o}", "type", pb->descriptor->name, "message",
                         pxj_to_json(pb, 0));
    }
    size_t len = 0;
    const uint8_t *d = px_msg_data(m, &len);
    if (px_msg_kind_of(m) == PX_MSG_BYTES) {
        size_t bl = sodium_base64_encoded_len(len, sodium_base64_VARIANT_ORIGINAL);
        char *b = malloc(bl);
        if (b == NULL) {
            return NULL;
        }
        sodium_bin2base64(b, bl, d, len, sodium_base64_VARIANT_ORIGINAL);
        json_t *o = json_pack("{s:s, s:i, s:s}", "type", "bytes", "tag", (int)px_msg_tag(m),
                              "base64", b);
        free(b);
        return o;
    }
    return json_pack("{s:s, s:i}", "type", "other", "kind", (int)px_msg_kind_of(m));
}

static void op_spawn(pxd_node *n, px_admin_conn *conn, uint64_t id, const Plexus__Admin__SpawnReq *r) {
    if (r->behavior[0] == '\0') {
        done_err(n, conn, id, PX_EINVAL, "spawn: a behavior is required");
        return;
    }
    if (atomic_load(&n->phase) != PXD_RUNNING) {
        done_err(n, conn, id, PX_ECLOSED, "node %s is %s: it takes no new work",
                 px_system_node_name(n->sys), pxd_phase_name(atomic_load(&n->phase)));
        return;
    }
    px_msg *arg = NULL;
    char why[320] = "";
    if (r->arg_type[0] != '\0') {
        px_err e = pxd_msg_from_json(n->sys, r->arg_type, r->arg_json, &arg, why, sizeof why);
        if (e != PX_OK) {
            done_err(n, conn, id, e, "start argument: %s", why);
            return;
        }
    }
    px_ref ref = PX_REF_NIL;
    px_err e;
    bool remote = r->node[0] != '\0' && strcmp(r->node, px_system_node_name(n->sys)) != 0;
    if (remote || r->role[0] != '\0') {
        if (r->name[0] != '\0' || r->global_name[0] != '\0') {
            px_msg_free(arg);
            done_err(n, conn, id, PX_EINVAL,
                     "names are registered on the node that runs the actor: ask that node "
                     "(plexctl spawn --node %s ...)", r->node[0] ? r->node : "NODE");
            return;
        }
        px_placement pl = {.policy = remote ? PX_PLACE_NODE : PX_PLACE_ROLE,
                           .node = r->node, .role = r->role};
        px_mesh *m = pxd_part_hold(n, PXD_PART_M);
        e = m != NULL ? px_mesh_spawn(m, &pl, r->behavior, &arg, NULL, 5000, &ref, why, sizeof why)
                      : PX_ECLOSED;
        pxd_part_rele(n, PXD_PART_M, m);
    } else {
        px_spawn_opts so = {.name = r->name[0] ? r->name : NULL};
        e = px_system_spawn_named(n->sys, r->behavior, &arg, &so, &ref);
        if (e == PX_ENOENT) {
            snprintf(why, sizeof why, "no behavior \"%s\" on node %s (plexctl types lists them)",
                     r->behavior, px_system_node_name(n->sys));
        } else if (e == PX_EEXIST) {
            snprintf(why, sizeof why, "the local name \"%s\" is taken", r->name);
        }
        if (e == PX_OK && r->global_name[0] != '\0') {
            px_ref owner = PX_REF_NIL;
            px_cluster *c = pxd_part_hold(n, PXD_PART_C);
            e = c != NULL ? px_register_global(c, r->global_name, ref, &owner) : PX_ECLOSED;
            pxd_part_rele(n, PXD_PART_C, c);
            if (e != PX_OK) {
                char ob[48];
                snprintf(why, sizeof why, "global name \"%s\": %s%s%s (the actor was stopped)",
                         r->global_name, px_strerror(e), e == PX_EEXIST ? ", held by " : "",
                         e == PX_EEXIST ? px_ref_format(owner, ob, sizeof ob) : "");
                (void)px_stop(n->sys, ref);
            }
        }
    }
    px_msg_free(arg);
    if (e != PX_OK) {
        done_err(n, conn, id, e, "spawn %s: %s", r->behavior, why[0] ? why : px_strerror(e));
        return;
    }
    char rb[48], on[64];
    node_name_of(n, ref.node, on, sizeof on);
    done_json(n, conn, id, json_pack("{s:s, s:s, s:s, s:s, s:s}", "ref",
                                     px_ref_format(ref, rb, sizeof rb), "node", on, "behavior",
                                     r->behavior, "name", r->name, "global_name", r->global_name));
}

static void op_send(pxd_node *n, px_admin_conn *conn, uint64_t id, const Plexus__Admin__SendReq *r) {
    px_ref to;
    if (resolve(n, r->target, &to) != PX_OK) {
        done_err(n, conn, id, PX_ENOENT, "no actor \"%s\": not a ref, a local name on %s, or a "
                 "global name", r->target, px_system_node_name(n->sys));
        return;
    }
    px_msg *m = NULL;
    char why[320] = "";
    px_err e = pxd_msg_from_json(n->sys, r->type, r->json, &m, why, sizeof why);
    if (e != PX_OK) {
        done_err(n, conn, id, e, "%s", why);
        return;
    }
    char rb[48];
    px_ref_format(to, rb, sizeof rb);
    if (!r->ask) {
        e = px_system_send(n->sys, to, &m);
        px_msg_free(m);
        if (e != PX_OK) {
            done_err(n, conn, id, e, "send to %s: %s", rb, px_strerror(e));
            return;
        }
        done_json(n, conn, id, json_pack("{s:s, s:b}", "to", rb, "sent", 1));
        return;
    }
    px_msg *rep = NULL;
    int64_t t0 = pxu_mono_ms();
    e = px_system_ask(n->sys, to, &m, r->timeout_ms ? r->timeout_ms : ASK_DEFAULT_MS, &rep);
    px_msg_free(m);
    if (e != PX_OK) {
        done_err(n, conn, id, e, "ask %s: %s", rb, px_strerror(e));
        return;
    }
    json_t *body = msg_json(rep);
    px_msg_free(rep);
    done_json(n, conn, id, json_pack("{s:s, s:o, s:I}", "to", rb, "reply", body, "ms",
                                     (json_int_t)(pxu_mono_ms() - t0)));
}

static void op_stop(pxd_node *n, px_admin_conn *conn, uint64_t id, const char *target) {
    px_ref to;
    if (resolve(n, target, &to) != PX_OK) {
        done_err(n, conn, id, PX_ENOENT, "no actor \"%s\"", target);
        return;
    }
    px_err e = px_stop(n->sys, to);
    char rb[48];
    if (e != PX_OK) {
        done_err(n, conn, id, e, "stop %s: %s", px_ref_format(to, rb, sizeof rb), px_strerror(e));
        return;
    }
    done_json(n, conn, id, json_pack("{s:s}", "stopped", px_ref_format(to, rb, sizeof rb)));
}

#define J(o, k, v) json_object_set_new(o, k, json_integer((json_int_t)(v)))

static void op_stats(pxd_node *n, px_admin_conn *conn, uint64_t id) {
    json_t *o = json_object(), *s = json_object();
    px_system_stats st;
    if (px_system_stats_get(n->sys, &st) == PX_OK) {
        J(s, "spawned", st.spawned), J(s, "stopped", st.stopped);
        J(s, "live_actors", st.live_actors), J(s, "messages", st.messages);
        J(s, "dead_letters", st.dead_letters), J(s, "dropped", st.dropped);
        J(s, "failures", st.failures), J(s, "restarts", st.restarts);
        J(s, "rejected", st.rejected), J(s, "ask_timeouts", st.ask_timeouts);
        J(s, "escalations", st.escalations), J(s, "published", st.published);
    }
    json_object_set_new(o, "system", s);
    nng_mtx_lock(n->parts_mtx);
    if (n->t != NULL) {
        px_transport_stats ts;
        px_transport_stats_get(n->t, &ts);
        json_t *t = json_object();
        J(t, "msgs_out", ts.msgs_out), J(t, "msgs_in", ts.msgs_in);
        J(t, "bytes_out", ts.bytes_out), J(t, "bytes_in", ts.bytes_in);
        J(t, "handshakes", ts.handshakes), J(t, "refused", ts.refused);
        J(t, "bad_frames", ts.bad_frames), J(t, "undeliverable", ts.undeliverable);
        json_object_set_new(o, "transport", t);
    }
    if (n->m != NULL) {
        px_mesh_stats ms;
        px_mesh_stats_get(n->m, &ms);
        json_t *m = json_object();
        J(m, "remote_watches", ms.remote_watches), J(m, "proxies", ms.proxies);
        J(m, "hosted", ms.hosted), J(m, "spawns_served", ms.spawns_served);
        J(m, "lost_children", ms.lost_children), J(m, "bad_sys", ms.bad_sys);
        json_object_set_new(o, "mesh", m);
    }
    if (n->c != NULL) {
        px_cluster_health h;
        px_cluster_health_get(n->c, &h);
        json_t *c = json_object();
        json_object_set_new(c, "registered", json_boolean(h.registered));
        json_object_set_new(c, "fenced", json_boolean(h.fenced));
        json_object_set_new(c, "holding", json_boolean(h.holding));
        J(c, "fences", h.fences), J(c, "keepalive_errors", h.keepalive_errors);
        J(c, "etcd_down_since_ms", h.etcd_down_since_ms);
        json_object_set_new(o, "cluster", c);
    }
    nng_mtx_unlock(n->parts_mtx);
    if (n->admin != NULL) {
        px_admin_stats as;
        px_admin_server_stats(n->admin, &as);
        json_t *a = json_object();
        J(a, "clients", as.clients), J(a, "accepted", as.accepted);
        J(a, "refused", as.refused), J(a, "requests", as.requests);
        json_object_set_new(o, "admin", a);
    }
    J(o, "unknown_messages", pxd_builtins_unknown());
    json_object_set_new(o, "node", json_string(px_system_node_name(n->sys)));
    done_json(n, conn, id, o);
}

static void name_add(void *arg, const char *name, px_ref ref) {
    json_t *arr = arg;
    char rb[48];
    json_array_append_new(arr, json_pack("{s:s, s:s, s:I}", "name", name, "ref",
                                         px_ref_format(ref, rb, sizeof rb), "node_id",
                                         (json_int_t)ref.node));
}

static void op_names(pxd_node *n, px_admin_conn *conn, uint64_t id) {
    json_t *arr = json_array();
    nng_mtx_lock(n->parts_mtx);
    if (n->c != NULL) {
        (void)px_global_names(n->c, name_add, arr);
    }
    nng_mtx_unlock(n->parts_mtx);
    /* node names after the lock: node_name_of takes it again */
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e) {
        char on[64];
        node_name_of(n, (uint32_t)json_integer_value(json_object_get(e, "node_id")), on,
                     sizeof on);
        json_object_set_new(e, "node", json_string(on));
        json_object_del(e, "node_id");
    }
    done_json(n, conn, id, json_pack("{s:o}", "names", arr));
}

static void op_types(pxd_node *n, px_admin_conn *conn, uint64_t id) {
    json_t *behs = json_array();
    (void)px_behaviors(n->sys, names_add, behs);
    static const char *const builtin_types[] = {
        "plexus.kv.Put",  "plexus.kv.Get",  "plexus.kv.Del", "plexus.kv.Value",
        "plexus.kv.Ack",  "plexus.kv.Ping", "plexus.kv.Pong", "plexus.admin.SupervisorSpec"};
    json_t *types = json_array();
    for (size_t i = 0; i < sizeof builtin_types / sizeof builtin_types[0]; i++) {
        if (px_type_lookup(n->sys, builtin_types[i]) != NULL) {
            json_array_append_new(types, json_string(builtin_types[i]));
        }
    }
    done_json(n, conn, id, json_pack("{s:o, s:o}", "behaviors", behs, "types", types));
}

typedef struct prog_ctx {
    px_admin_conn *conn;
    uint64_t id;
} prog_ctx;

static void drain_progress(void *arg, const char *json) {
    prog_ctx *p = arg;
    reply(p->conn, p->id, true, PX_OK, NULL, json);
}

static void op_drain(pxd_node *n, px_admin_conn *conn, uint64_t id, const Plexus__Admin__DrainReq *r) {
    if (atomic_load(&n->phase) == PXD_STARTING) {
        done_err(n, conn, id, PX_ECONTEXT, "node %s is starting: drain it once it is ready",
                 px_system_node_name(n->sys));
        return;
    }
    prog_ctx p = {conn, id};
    uint32_t tmo = r != NULL && r->timeout_ms > 0 ? r->timeout_ms : n->cfg->drain_timeout_ms;
    int64_t t0 = pxu_mono_ms();
    px_err e = pxd_drain(n, tmo, drain_progress, &p);
    if (e != PX_OK) {
        done_err(n, conn, id, e, "drain of %s: %s", px_system_node_name(n->sys), px_strerror(e));
        return;
    }
    done_json(n, conn, id, json_pack("{s:s, s:s, s:I}", "node", px_system_node_name(n->sys),
                                     "step", "done", "ms", (json_int_t)(pxu_mono_ms() - t0)));
}

static void op_watch(pxd_node *n, px_admin_conn *conn, uint64_t id, const Plexus__Admin__WatchReq *r) {
    struct pxd_events *e = n->ev;
    if (e == NULL) {
        done_err(n, conn, id, PX_ECLOSED, "the node is not recording events");
        return;
    }
    bool mem = r == NULL || r->membership || !r->failures;
    bool fail = r == NULL || r->failures || !r->membership;
    nng_mtx_lock(e->mtx);
    uint64_t next = e->seq;
    nng_mtx_unlock(e->mtx);
    reply(conn, id, true, PX_OK, NULL, "{\"event\":\"watching\"}");
    int64_t last_send = pxu_mono_ms();
    while (!px_admin_conn_closing(conn) && atomic_load(&n->phase) != PXD_STOPPED) {
        char *line = NULL;
        nng_mtx_lock(e->mtx);
        if (e->seq - next > EV_MAX) {
            next = e->seq - EV_MAX; /* the watcher fell behind: the oldest are gone */
        }
        if (next < e->seq) {
            line = strdup(e->line[next % EV_MAX]);
            next++;
        }
        nng_mtx_unlock(e->mtx);
        if (line == NULL) {
            if (pxu_mono_ms() - last_send > 2000) { /* lets a gone client be noticed */
                reply(conn, id, true, PX_OK, NULL, "{\"event\":\"tick\"}");
                last_send = pxu_mono_ms();
            }
            nng_msleep(50);
            continue;
        }
        bool is_mem = strstr(line, "\"event\":\"member\"") != NULL;
        if ((is_mem && mem) || (!is_mem && fail)) {
            reply(conn, id, true, PX_OK, NULL, line);
            last_send = pxu_mono_ms();
        }
        free(line);
    }
    done_json(n, conn, id, json_pack("{s:s}", "event", "end"));
}

void pxd_admin_handle(void *arg, px_admin_conn *conn, const char *peer, const uint8_t *peer_pk,
                      const uint8_t *data, size_t len) {
    pxd_node *n = arg;
    (void)peer_pk;
    Plexus__Admin__AdminRequest *rq = plexus__admin__admin_request__unpack(NULL, len, data);
    if (rq == NULL) {
        atomic_fetch_add(&n->admin_err, 1);
        px_log(n->sys, PX_LOG_WARN, "admin: a malformed request from %s (%zu bytes)", peer, len);
        reply(conn, 0, false, PX_EPROTO, "malformed AdminRequest", NULL);
        return;
    }
    px_log(n->sys, PX_LOG_DEBUG, "admin: %s asks op %d (id %" PRIu64 ")", peer, (int)rq->op_case,
           rq->id);
    uint64_t id = rq->id;
    switch (rq->op_case) {
    case PLEXUS__ADMIN__ADMIN_REQUEST__OP_INFO: op_info(n, conn, id); break;
    case PLEXUS__ADMIN__ADMIN_REQUEST__OP_WHY: op_why(n, conn, id, rq->why->node); break;
    case PLEXUS__ADMIN__ADMIN_REQUEST__OP_ACTORS: op_actors(n, conn, id, rq->actors); break;
    case PLEXUS__ADMIN__ADMIN_REQUEST__OP_TREE: op_tree(n, conn, id); break;
    case PLEXUS__ADMIN__ADMIN_REQUEST__OP_SPAWN: op_spawn(n, conn, id, rq->spawn); break;
    case PLEXUS__ADMIN__ADMIN_REQUEST__OP_SEND: op_send(n, conn, id, rq->send); break;
    case PLEXUS__ADMIN__ADMIN_REQUEST__OP_STOP: op_stop(n, conn, id, rq->stop->target); break;
    case PLEXUS__ADMIN__ADMIN_REQUEST__OP_STATS: op_stats(n, conn, id); break;
    case PLEXUS__ADMIN__ADMIN_REQUEST__OP_DRAIN: op_drain(n, conn, id, rq->drain); break;
    case PLEXUS__ADMIN__ADMIN_REQUEST__OP_NAMES: op_names(n, conn, id); break;
    case PLEXUS__ADMIN__ADMIN_REQUEST__OP_WATCH: op_watch(n, conn, id, rq->watch); break;
    case PLEXUS__ADMIN__ADMIN_REQUEST__OP_TYPES: op_types(n, conn, id); break;
    default:
        done_err(n, conn, id, PX_EINVAL, "unknown admin op %d (a newer plexctl?)",
                 (int)rq->op_case);
        break;
    }
    plexus__admin__admin_request__free_unpacked(rq, NULL);
}

/* ---- drain ---- */

static void progress_json(void (*progress)(void *, const char *), void *arg, json_t *o) {
    char *t = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (t != NULL && progress != NULL) {
        progress(arg, t);
    }
    free(t);
}

static void add_depth(void *arg, px_ref ref, const char *behavior, const char *name,
                      const px_actor_stats *st) {
    (void)ref, (void)behavior, (void)name;
    *(int64_t *)arg += (int64_t)st->depth;
}

/* Messages waiting in local mailboxes. */
static int64_t queued(pxd_node *n) {
    int64_t q = 0;
    (void)px_system_actors(n->sys, add_depth, &q);
    return q;
}

px_err pxd_drain(pxd_node *n, uint32_t timeout_ms,
                 void (*progress)(void *arg, const char *json), void *arg) {
    nng_mtx_lock(n->drain_mtx);
    /* STOPPED is stored only at the end of a drain, under drain_mtx. */
    if (atomic_load(&n->phase) == PXD_STOPPED) {
        nng_mtx_unlock(n->drain_mtx);
        progress_json(progress, arg, json_pack("{s:s}", "step", "already drained"));
        return PX_OK;
    }
    int64_t t0 = pxu_mono_ms(), end = t0 + timeout_ms;
    px_err rv = PX_OK;
    const char *me = px_system_node_name(n->sys);
    atomic_store(&n->phase, PXD_DRAINING);
    px_log(n->sys, PX_LOG_INFO, "drain: start (bound %u ms)", timeout_ms);
    progress_json(progress, arg, json_pack("{s:s, s:s, s:i}", "step", "draining", "node", me,
                                           "timeout_ms", (int)timeout_ms));
    /* 1. Leave: peers see LEFT at once and re-place what they supervise here. */
    px_mesh *m = pxd_part_take(n, PXD_PART_M);
    px_cluster *c = pxd_part_take(n, PXD_PART_C);
    size_t npeers = 0;
    px_member peers[64];
    if (c != NULL) {
        px_cluster_members(c, peers, 64, &npeers);
    }
    px_mesh_stop(m);
    px_cluster_stop(c, true);
    px_log(n->sys, PX_LOG_INFO, "drain: left the cluster");
    progress_json(progress, arg, json_pack("{s:s, s:I}", "step", "left", "ms",
                                           (json_int_t)(pxu_mono_ms() - t0)));
    /* 2. Work off the mailboxes while the links still carry replies. */
    int64_t q = queued(n), calm = 0;
    while (pxu_mono_ms() < end - timeout_ms / 4) {
        calm = q == 0 ? calm + 1 : 0;
        if (calm >= 3) {
            break;
        }
        nng_msleep(100);
        int64_t q2 = queued(n);
        if (q2 != q) {
            progress_json(progress, arg, json_pack("{s:s, s:I}", "step", "mailboxes", "queued",
                                                   (json_int_t)q2));
        }
        q = q2;
    }
    if (q != 0) {
        rv = PX_ETIMEDOUT;
        px_log(n->sys, PX_LOG_WARN, "drain: %" PRId64 " messages still queued at the bound", q);
    }
    progress_json(progress, arg, json_pack("{s:s, s:I, s:I}", "step", "mailboxes done", "queued",
                                           (json_int_t)q, "ms", (json_int_t)(pxu_mono_ms() - t0)));
    /* 3. Stop the actors (drain mode: what is still queued is handled). */
    (void)px_system_shutdown(n->sys);
    /* 4. Flush what the links still hold. */
    nng_mtx_lock(n->parts_mtx);
    px_transport *t = n->t;
    nng_mtx_unlock(n->parts_mtx);
    size_t left = 0;
    do {
        left = 0;
        for (size_t i = 0; t != NULL && i < npeers; i++) {
            px_peer_info pi;
            if (strcmp(peers[i].name, me) != 0 &&
                px_transport_peer_info(t, peers[i].name, false, &pi) == PX_OK &&
                pi.state == PX_LINK_UP) {
                left += pi.queued_msgs;
            }
        }
        if (left > 0) {
            nng_msleep(20);
        }
    } while (left > 0 && pxu_mono_ms() < end);
    if (left > 0) {
        rv = PX_ETIMEDOUT;
        px_log(n->sys, PX_LOG_WARN, "drain: %zu messages still queued on links at the bound", left);
    }
    t = pxd_part_take(n, PXD_PART_T);
    px_transport_stop(t);
    atomic_store(&n->phase, PXD_STOPPED);
    px_log(n->sys, PX_LOG_INFO, "drain: done in %" PRId64 " ms", pxu_mono_ms() - t0);
    progress_json(progress, arg, json_pack("{s:s, s:I, s:I}", "step", "flushed", "link_queued",
                                           (json_int_t)left, "ms", (json_int_t)(pxu_mono_ms() - t0)));
    nng_mtx_unlock(n->drain_mtx);
    return rv;
}
