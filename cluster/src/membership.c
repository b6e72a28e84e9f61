/*
 * membership.c — registration, lease keepalive, the member view, the audit
 * ring and self-fencing (plexus/cluster.h).
 *
 * Design. Registration is revoke-old (best effort) → grant → put NodeInfo
 * with the lease. A px_alarm (every TTL/3) sends one keepalive
 * at a time and decides fencing: a keepalive answered "no such lease", our
 * own key deleted under our current lease, or no keepalive acknowledged for
 * a whole TTL (counted from when the acknowledged one was sent) — unless
 * every other member is linked and its heartbeats say etcd is silent for
 * it too (hold(): etcd is down for everyone; we keep renewing and serve on
 * the last view). Fencing bumps the incarnation and registers again. The view
 * comes from one prefix watch (sync + events); members are keyed by node
 * id. A graceful leave first rewrites NodeInfo with `leaving` so that the
 * DELETE the revoke causes reads as LEFT, not DOWN.
 *
 * Concurrency: c->mtx guards everything below it in the struct; it is never
 * held while calling etcd or the user's callback. c->cbmtx serialises the
 * user's callbacks (they come from the etcd thread and the timer).
 */
#include <plexus/cluster.h>

#include <plexus/system.h>

#include <nng/nng.h>
#include <nng/supplemental/util/platform.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster_int.h"
#include "plexus/plexus.pb-c.h"

static int64_t mono_ms(void) {
    return (int64_t)nng_clock();
}

int64_t pxc_wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *px_member_state_name(px_member_state s) {
    switch (s) {
    case PX_MEMBER_UP:
        return "up";
    case PX_MEMBER_LEFT:
        return "left";
    case PX_MEMBER_DOWN:
        return "down";
    case PX_MEMBER_FENCED:
        return "fenced";
    case PX_MEMBER_JOINING:
        return "joining";
    case PX_MEMBER_UNREACHABLE:
        return "unreachable";
    }
    return "unknown";
}

void px_cluster_cfg_init(px_cluster_cfg *cfg) {
    *cfg = (px_cluster_cfg){.cluster = "default", .ttl_s = 3, .audit_max = 256};
    px_etcd_cfg_init(&cfg->etcd);
}

/* ---- the view ---- */

static void mlog(px_cluster *c, px_log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void mlog(px_cluster *c, px_log_level lvl, const char *fmt, ...) {
    if (lvl < c->cfg.etcd.log_level) {
        return;
    }
    char line[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    px_log_sink sink = c->cfg.etcd.log != NULL ? c->cfg.etcd.log : px_log_stderr;
    sink(c->cfg.etcd.log_arg, lvl, c->node, line);
}

static member *mem_find(px_cluster *c, uint32_t id) {
    for (size_t i = 0; i < c->nmem; i++) {
        if (c->mem[i].m.node_id == id) {
            return &c->mem[i];
        }
    }
    return NULL;
}

/* A new, zeroed member entry (lock held); NULL when out of memory. */
static member *mem_add_locked(px_cluster *c) {
    if (c->nmem == c->capmem) {
        size_t cap = c->capmem == 0 ? 8 : c->capmem * 2;
        member *nm = realloc(c->mem, cap * sizeof(*nm));
        if (nm == NULL) {
            return NULL;
        }
        c->mem = nm;
        c->capmem = cap;
    }
    member *m = &c->mem[c->nmem++];
    memset(m, 0, sizeof(*m));
    return m;
}

/* Records a state change (lock held) into ev for the caller to publish. */
static void change_locked(px_cluster *c, member *m, px_member_state to, int64_t rev,
                          const char *cause, px_member_event *ev) {
    px_member_state from = m->m.state;
    m->m.state = to;
    m->m.since_ms = pxc_wall_ms();
    *ev = (px_member_event){.m = m->m, .from = from, .at_ms = m->m.since_ms, .revision = rev};
    snprintf(ev->cause, sizeof(ev->cause), "%s", cause);
    c->audit[c->audit_total % c->cfg.audit_max] = *ev;
    c->audit_total++;
}

/* Registered: its key exists (whatever our link to it says). */
static bool is_registered(px_member_state s) {
    return s == PX_MEMBER_UP || s == PX_MEMBER_JOINING || s == PX_MEMBER_UNREACHABLE;
}

/* ev as the protobuf message subscribers receive (malloc'd throughout, as
 * px_msg_proto's default free wants). NULL when out of memory. */
static px_msg *event_msg(const px_member_event *ev) {
    Plexus__MemberEvent *pb = malloc(sizeof(*pb));
    if (pb == NULL) {
        return NULL;
    }
    plexus__member_event__init(pb);
    pb->name = strdup(ev->m.name);
    pb->address = strdup(ev->m.address);
    pb->cause = strdup(ev->cause);
    pb->node_id = ev->m.node_id;
    pb->node_inc = ev->m.node_inc;
    pb->state = (Plexus__MemberState)ev->m.state;
    pb->from = (Plexus__MemberState)ev->from;
    pb->at_ms = ev->at_ms;
    pb->revision = ev->revision;
    px_msg *m = NULL;
    if (pb->name == NULL || pb->address == NULL || pb->cause == NULL ||
        px_msg_proto(&m, &pb->base, NULL) != PX_OK) {
        protobuf_c_message_free_unpacked(&pb->base, NULL);
        return NULL;
    }
    return m;
}

/* Sends ev to one subscriber; false if it is gone. */
static bool tell(px_cluster *c, px_ref who, const px_member_event *ev) {
    if (!px_is_alive(c->sys, who)) {
        return false;
    }
    px_msg *m = event_msg(ev);
    if (m == NULL || px_system_send(c->sys, who, &m) != PX_OK) {
        mlog(c, PX_LOG_WARN, "membership: an event for a subscriber was lost (%s)",
             m == NULL ? "out of memory" : "its mailbox refused it");
        px_msg_free(m);
    }
    return true;
}

static void publish(px_cluster *c, const px_member_event *ev) {
    mlog(c, ev->m.state == PX_MEMBER_UP ? PX_LOG_INFO : PX_LOG_WARN,
         "member %s (inc %u): %s -> %s: %s", ev->m.name, ev->m.node_inc,
         ev->from != 0 ? px_member_state_name(ev->from) : "new", px_member_state_name(ev->m.state),
         ev->cause);
    nng_mtx_lock(c->cbmtx); /* callbacks and subscribers see events in order */
    if (c->cfg.on_event != NULL) {
        c->cfg.on_event(c->cfg.arg, ev);
    }
    nng_mtx_lock(c->mtx);
    size_t n = c->nsubs;
    px_ref *subs = n > 0 ? malloc(n * sizeof(*subs)) : NULL;
    if (subs != NULL) {
        memcpy(subs, c->subs, n * sizeof(*subs));
    }
    nng_mtx_unlock(c->mtx);
    for (size_t i = 0; subs != NULL && i < n; i++) {
        if (!tell(c, subs[i], ev)) {
            (void)px_cluster_unsubscribe(c, subs[i]);
        }
    }
    free(subs);
    nng_mtx_unlock(c->cbmtx);
}

/* A member that registered moments ago may refuse our link until it has
 * seen us too: JOINING turns UNREACHABLE only after this long. */
#define JOIN_GRACE_MS 1000

static bool joined_long_ago(const member *m) {
    return pxc_wall_ms() - m->m.since_ms >= JOIN_GRACE_MS;
}

/* What our transport knows of the member named `name` changed (or is
 * news): JOINING / UNREACHABLE -> UP when the link is up to the
 * incarnation that registered; UP / JOINING -> UNREACHABLE when it failed.
 * From the transport's on_link, and after membership adds a peer. */
static void link_changed(px_cluster *c, const char *name, px_link_state st, uint32_t inc) {
    px_member_event ev;
    bool have = false;
    nng_mtx_lock(c->mtx);
    member *m = mem_find(c, px_node_id(name));
    if (m == NULL && c->e == NULL && st != PX_LINK_GONE && st != PX_LINK_CONNECTING &&
        (m = mem_add_locked(c)) != NULL) {
        /* Standalone: the transport's static peers are the members. */
        snprintf(m->m.name, sizeof(m->m.name), "%.*s", PX_MEMBER_NAME_MAX - 1, name);
        m->m.node_id = px_node_id(name);
        m->m.node_inc = inc;
        m->m.state = PX_MEMBER_JOINING;
        m->m.since_ms = pxc_wall_ms();
    }
    if (m != NULL && c->e == NULL && st == PX_LINK_UP) {
        m->m.node_inc = inc; /* standalone: the link says which incarnation it is */
    }
    if (m != NULL && m->m.node_id != c->node_id && strcmp(m->m.name, name) == 0) {
        m->link = st;
        m->link_inc = inc;
        px_member_state s = m->m.state;
        if ((s == PX_MEMBER_JOINING || s == PX_MEMBER_UNREACHABLE) && st == PX_LINK_UP &&
            inc == m->m.node_inc) {
            change_locked(c, m, PX_MEMBER_UP, 0,
                          s == PX_MEMBER_JOINING ? "link up" : "link up again", &ev);
            have = true;
        } else if ((s == PX_MEMBER_UP ||
                    (s == PX_MEMBER_JOINING && joined_long_ago(m))) &&
                   st == PX_LINK_UNREACHABLE) {
            change_locked(c, m, PX_MEMBER_UNREACHABLE, 0,
                          s == PX_MEMBER_UP ? "link failed or went silent; lease alive"
                                            : "cannot link to it; lease alive",
                          &ev);
            have = true;
        }
    }
    nng_mtx_unlock(c->mtx);
    if (have) {
        publish(c, &ev);
    }
}

static void on_link(void *arg, const char *name, px_link_state st, uint32_t inc) {
    link_changed(arg, name, st, inc);
}

/* Links follow the view: a member that registered becomes a peer, one that
 * is down or left stops being one. No lock held. */
static void follow(px_cluster *c, const px_member_event *ev) {
    if (c->tr == NULL || ev->m.node_id == c->node_id) {
        return;
    }
    if (ev->m.state == PX_MEMBER_DOWN || ev->m.state == PX_MEMBER_LEFT) {
        (void)px_transport_peer_remove(c->tr, ev->m.name);
        return;
    }
    if (!is_registered(ev->m.state) || ev->revision == 0 || ev->m.address[0] == '\0') {
        return; /* not news from etcd (link changes have no revision) */
    }
    px_peer p = {.name = ev->m.name, .address = ev->m.address};
    memcpy(p.pk, ev->m.pk, sizeof(p.pk));
    px_err rv = px_transport_peer_add(c->tr, &p);
    px_link_state st;
    uint32_t inc = 0;
    if (rv != PX_OK) {
        mlog(c, PX_LOG_ERROR, "membership: cannot link to %s at %s: %s", ev->m.name,
             ev->m.address, px_errname(rv));
    } else if (px_transport_peer_state(c->tr, ev->m.name, &st, &inc) == PX_OK) {
        link_changed(c, ev->m.name, st, inc); /* a link that was up already */
    }
}

static void publish_follow(px_cluster *c, const px_member_event *ev) {
    publish(c, ev);
    follow(c, ev);
}

/* names as "\na\nb\n" (NULL for none or out of memory: placement then
 * treats the node as having no roles / any behavior). */
static char *join_names(char **v, size_t n) {
    size_t len = 2;
    for (size_t i = 0; i < n; i++) {
        len += strlen(v[i]) + 1;
    }
    char *s = n > 0 ? malloc(len) : NULL;
    if (s == NULL) {
        return NULL;
    }
    size_t off = 0;
    s[off++] = '\n';
    for (size_t i = 0; i < n; i++) {
        size_t k = strlen(v[i]);
        memcpy(s + off, v[i], k);
        off += k;
        s[off++] = '\n';
    }
    s[off] = '\0';
    return s;
}

void pxc_members_each(px_cluster *c, void (*fn)(void *arg, const member *m), void *arg) {
    nng_mtx_lock(c->mtx);
    for (size_t i = 0; i < c->nmem; i++) {
        fn(arg, &c->mem[i]);
    }
    nng_mtx_unlock(c->mtx);
}

void pxc_load_changed(px_cluster *c) {
    nng_mtx_lock(c->mtx);
    c->republish = true;
    nng_mtx_unlock(c->mtx);
}

/* A NodeInfo was seen (sync or PUT). Lock held; true if ev was filled. */
static bool seen_locked(px_cluster *c, const px_etcd_kv *kv, int64_t rev, px_member_event *ev) {
    Plexus__NodeInfo *ni = plexus__node_info__unpack(NULL, kv->value_len, kv->value);
    if (ni == NULL || ni->name == NULL || ni->name[0] == '\0' ||
        ni->node_id != px_node_id(ni->name)) {
        mlog(c, PX_LOG_WARN, "membership: %s holds no valid NodeInfo; ignored", kv->key);
        if (ni != NULL) {
            plexus__node_info__free_unpacked(ni, NULL);
        }
        return false;
    }
    member *m = mem_find(c, ni->node_id);
    if (m == NULL && (m = mem_add_locked(c)) == NULL) {
        plexus__node_info__free_unpacked(ni, NULL);
        return false;
    }
    if (m->down_pending) { /* registered again before etcd said why its key went */
        m->down_pending = false;
        m->m.state = PX_MEMBER_DOWN;
    }
    bool was_up = is_registered(m->m.state);
    uint32_t old_inc = m->m.node_inc;
    snprintf(m->m.name, sizeof(m->m.name), "%s", ni->name);
    snprintf(m->m.address, sizeof(m->m.address), "%s", ni->address != NULL ? ni->address : "");
    m->m.node_id = ni->node_id;
    m->m.node_inc = ni->node_inc;
    m->m.lease = kv->lease;
    if (ni->identity_pk.len == 32) {
        memcpy(m->m.pk, ni->identity_pk.data, 32);
    }
    m->leaving = ni->leaving;
    m->seen_rev = rev;
    free(m->roles);
    free(m->behaviors);
    m->roles = join_names(ni->roles, ni->n_roles);
    m->behaviors = join_names(ni->behaviors, ni->n_behaviors);
    m->actors = ni->actors;
    m->mailbox_depth = ni->mailbox_depth;
    plexus__node_info__free_unpacked(ni, NULL);
    if (was_up && old_inc == m->m.node_inc) {
        return false; /* an update (load, leaving) of a member that is up */
    }
    char cause[PX_MEMBER_CAUSE_MAX];
    snprintf(cause, sizeof(cause),
             was_up ? "re-registered as incarnation %u" : "registered (incarnation %u)",
             m->m.node_inc);
    bool linked = c->tr == NULL || m->m.node_id == c->node_id ||
                  (m->link == PX_LINK_UP && m->link_inc == m->m.node_inc);
    change_locked(c, m, linked ? PX_MEMBER_UP : PX_MEMBER_JOINING, rev, cause, ev);
    return true;
}

/* Its key vanished: LEFT after a goodbye, DOWN otherwise. */
static bool gone_locked(px_cluster *c, member *m, int64_t rev, const char *why,
                        px_member_event *ev) {
    if (!is_registered(m->m.state)) {
        return false;
    }
    bool left = m->leaving;
    m->leaving = false;
    m->down_pending = false;
    m->link = PX_LINK_GONE; /* membership drops the peer: a new life links anew */
    change_locked(c, m, left ? PX_MEMBER_LEFT : PX_MEMBER_DOWN, rev,
                  left ? "left gracefully (lease revoked)" : why, ev);
    return true;
}

static void fence(px_cluster *c, const char *why, bool revoke_old);

static void on_sync(void *arg, int64_t rev, const px_etcd_kv *kvs, size_t n) {
    px_cluster *c = arg;
    size_t cap = c->nmem + n + 1;
    px_member_event *evs = calloc(cap, sizeof(*evs));
    size_t ne = 0;
    nng_mtx_lock(c->mtx);
    for (size_t i = 0; i < n && evs != NULL; i++) {
        if (seen_locked(c, &kvs[i], rev, &evs[ne])) {
            ne++;
        }
    }
    for (size_t i = 0; i < c->nmem && evs != NULL; i++) { /* not in this read: gone */
        if (c->mem[i].seen_rev != rev &&
            gone_locked(c, &c->mem[i], rev, "its key was gone at a full read", &evs[ne])) {
            ne++;
        }
    }
    c->synced = true;
    nng_cv_wake(c->cv);
    nng_mtx_unlock(c->mtx);
    for (size_t i = 0; i < ne; i++) {
        publish_follow(c, &evs[i]);
    }
    free(evs);
}

static uint32_t id_of(const px_etcd_kv *kv, px_cluster *c) {
    return (uint32_t)strtoul(kv->key + strlen(c->prefix), NULL, 16);
}

/* A member's key was deleted without a goodbye (the DELETE of revision
 * rev): lease expiry and a deletion by hand look the same in a watch, so
 * the member goes DOWN once etcd says whether its lease still lives. */
typedef struct down_ctx {
    px_cluster *c;
    uint32_t id;
    int64_t lease, rev;
} down_ctx;

static void down_decide(const down_ctx *d, const px_etcd_res *res) {
    px_cluster *c = d->c;
    px_member_event ev;
    bool have = false;
    char cause[PX_MEMBER_CAUSE_MAX];
    if (res->err == PX_ENOENT || (res->err == PX_OK && res->ttl <= 0)) {
        snprintf(cause, sizeof(cause), "lease expired (no keepalive for a TTL)");
    } else if (res->err == PX_OK) {
        snprintf(cause, sizeof(cause), "its key was deleted while its lease was alive");
    } else {
        snprintf(cause, sizeof(cause), "its key was deleted (lease not checked: %s)",
                 px_errname(res->err));
    }
    nng_mtx_lock(c->mtx);
    member *m = mem_find(c, d->id);
    if (m != NULL && m->down_pending && m->m.lease == d->lease && !c->stopping) {
        m->down_pending = false;
        have = gone_locked(c, m, d->rev, cause, &ev);
    }
    nng_mtx_unlock(c->mtx);
    if (have) {
        publish_follow(c, &ev);
    }
}

static void down_checked(void *arg, const px_etcd_res *res) {
    down_decide(arg, res);
    free(arg);
}

static void down_check(px_cluster *c, uint32_t id, int64_t lease, int64_t rev) {
    down_ctx *d = malloc(sizeof(*d));
    if (d != NULL) {
        *d = (down_ctx){c, id, lease, rev};
        if (px_etcd_lease_ttl(c->e, lease, down_checked, d) == PX_OK) {
            return;
        }
        free(d);
    }
    /* etcd cannot be asked: decide without its word */
    down_ctx now = {c, id, lease, rev};
    px_etcd_res fail = {.err = PX_ENOMEM, .msg = ""};
    down_decide(&now, &fail);
}

static void on_events(void *arg, int64_t rev, const px_etcd_event *ev, size_t n) {
    px_cluster *c = arg;
    for (size_t i = 0; i < n; i++) {
        px_member_event out;
        bool have = false;
        bool lost_self = false;
        int64_t check = 0;
        nng_mtx_lock(c->mtx);
        if (!ev[i].is_delete) {
            have = seen_locked(c, &ev[i].kv, rev, &out);
        } else if (ev[i].kv.key_len > strlen(c->prefix)) {
            uint32_t id = id_of(&ev[i].kv, c);
            member *m = mem_find(c, id);
            int64_t lease = ev[i].has_prev ? ev[i].prev.lease : 0;
            if (id == c->node_id) {
                /* Our key: gone under our current lease = we lost it. A
                 * DELETE of an older incarnation's key is history. */
                lost_self = c->registered && lease == c->lease;
            }
            if (m != NULL && id != c->node_id && is_registered(m->m.state) && !m->leaving &&
                lease != 0) {
                /* Why did its key go? Ask etcd about its lease first. */
                m->down_pending = true;
                check = lease;
            } else if (m != NULL && !(id == c->node_id && !lost_self)) {
                have = gone_locked(c, m, rev, "its key was deleted without a goodbye", &out);
            }
        }
        nng_mtx_unlock(c->mtx);
        if (check != 0) {
            down_check(c, id_of(&ev[i].kv, c), check, rev);
        }
        if (have) {
            publish_follow(c, &out);
        }
        if (lost_self) {
            /* Our lease is alive: left to expire (one TTL), not revoked, so
             * that the others can tell a deleted key from an expired lease. */
            fence(c, "our key was deleted under our lease", false);
        }
    }
}

static void on_wstate(void *arg, px_err err, const char *msg) {
    px_cluster *c = arg;
    if (err != PX_OK) {
        mlog(c, PX_LOG_DEBUG, "membership watch: %s (%s)", msg, px_errname(err));
    }
}

/* ---- registration ---- */

static void reg_granted(void *arg, const px_etcd_res *res);
static void reg_put(void *arg, const px_etcd_res *res);

typedef struct names_acc {
    char **v;
    size_t n, cap;
    bool oom;
} names_acc;

static void names_add(void *arg, const char *name) {
    names_acc *a = arg;
    if (a->oom || strncmp(name, "plexus.", 7) == 0) {
        return; /* the runtime's own behaviors are not for spawning */
    }
    if (a->n == a->cap) {
        size_t nc = a->cap ? a->cap * 2 : 16;
        char **nv = realloc(a->v, nc * sizeof(*nv));
        if (nv == NULL) {
            a->oom = true;
            return;
        }
        a->v = nv;
        a->cap = nc;
    }
    if ((a->v[a->n] = strdup(name)) == NULL) {
        a->oom = true;
        return;
    }
    a->n++;
}

static void ignore_cb(void *arg, const px_etcd_res *res);

static px_err nodeinfo(px_cluster *c, uint32_t inc, bool leaving, uint8_t **out, size_t *len) {
    Plexus__NodeInfo ni = PLEXUS__NODE_INFO__INIT;
    ni.name = c->node;
    ni.node_id = c->node_id;
    ni.node_inc = inc;
    ni.address = c->address != NULL ? c->address : "";
    ni.admin_address = c->admin_address != NULL ? c->admin_address : "";
    ni.http_address = c->http_address != NULL ? c->http_address : "";
    if (c->has_pk) {
        ni.identity_pk.data = c->pk;
        ni.identity_pk.len = 32;
    }
    ni.started_ms = pxc_wall_ms();
    ni.n_roles = c->nroles;
    ni.roles = c->roles;
    ni.version = 1;
    ni.leaving = leaving;
    names_acc behs = {0};
    if (c->sys != NULL) {
        px_system_stats st;
        if (px_system_stats_get(c->sys, &st) == PX_OK) {
            ni.actors = st.live_actors;
        }
        (void)px_behaviors(c->sys, names_add, &behs);
        ni.behaviors = behs.v;
        ni.n_behaviors = behs.n;
    }
    c->pub_actors = ni.actors; /* read back only by the tick */
    *len = plexus__node_info__get_packed_size(&ni);
    *out = behs.oom ? NULL : malloc(*len > 0 ? *len : 1);
    if (*out != NULL) {
        plexus__node_info__pack(&ni, *out);
    }
    for (size_t i = 0; i < behs.n; i++) {
        free(behs.v[i]);
    }
    free(behs.v);
    return *out != NULL ? PX_OK : PX_ENOMEM;
}

/* Puts this node's NodeInfo again under its lease: its load or behaviors
 * changed. Best effort: the next tick tries again. */
static void republish(px_cluster *c, int64_t lease, uint32_t inc) {
    uint8_t *buf = NULL;
    size_t len = 0;
    if (nodeinfo(c, inc, false, &buf, &len) == PX_OK) {
        (void)px_etcd_put(c->e, c->key, buf, len, lease, ignore_cb, NULL);
    }
    free(buf);
}

static void ignore_cb(void *arg, const px_etcd_res *res) {
    (void)arg;
    (void)res;
}

/* Starts a registration (revoke the old lease, grant, put). */
static void reg_start(px_cluster *c) {
    nng_mtx_lock(c->mtx);
    if (c->stopping || c->registering || c->registered) {
        nng_mtx_unlock(c->mtx);
        return;
    }
    c->registering = true;
    c->grant_sent_ms = mono_ms();
    int64_t old = c->old_lease;
    c->old_lease = 0;
    nng_mtx_unlock(c->mtx);
    if (old != 0) { /* best effort: a fenced incarnation's lease must not linger */
        (void)px_etcd_lease_revoke(c->e, old, ignore_cb, NULL);
    }
    if (px_etcd_lease_grant(c->e, c->cfg.ttl_s, reg_granted, c) != PX_OK) {
        nng_mtx_lock(c->mtx);
        c->registering = false;
        nng_mtx_unlock(c->mtx);
    }
}

static void reg_failed(px_cluster *c, const px_etcd_res *res, const char *step) {
    nng_mtx_lock(c->mtx);
    c->registering = false;
    bool stopping = c->stopping;
    nng_cv_wake(c->cv);
    nng_mtx_unlock(c->mtx);
    if (!stopping) {
        mlog(c, PX_LOG_WARN, "membership: registration failed at %s: %s (%s); retrying", step,
             res->msg, px_errname(res->err));
    }
}

static void reg_granted(void *arg, const px_etcd_res *res) {
    px_cluster *c = arg;
    if (res->err != PX_OK) {
        reg_failed(c, res, "lease grant");
        return;
    }
    nng_mtx_lock(c->mtx);
    c->lease = res->lease_id;
    uint32_t inc = c->inc;
    nng_mtx_unlock(c->mtx);
    uint8_t *buf = NULL;
    size_t len = 0;
    if (nodeinfo(c, inc, false, &buf, &len) != PX_OK ||
        px_etcd_put(c->e, c->key, buf, len, res->lease_id, reg_put, c) != PX_OK) {
        px_etcd_res fail = {.err = PX_ENOMEM, .msg = "out of memory or closing"};
        reg_failed(c, &fail, "put");
    }
    free(buf);
}

static void reg_put(void *arg, const px_etcd_res *res) {
    px_cluster *c = arg;
    if (res->err != PX_OK) {
        reg_failed(c, res, "put");
        return;
    }
    nng_mtx_lock(c->mtx);
    c->registering = false;
    c->registered = true;
    c->fenced = false;
    c->reg_rev = res->revision;
    c->last_ok_ms = c->grant_sent_ms;
    c->holding = false;
    c->etcd_down_since = 0;
    nng_cv_wake(c->cv);
    nng_mtx_unlock(c->mtx);
    if (c->tr != NULL) {
        px_transport_etcd_ok(c->tr);
    }
    mlog(c, PX_LOG_INFO, "membership: registered %s as incarnation %u (lease %lld, revision %lld)",
         c->key, c->inc, (long long)c->lease, (long long)res->revision);
}

/* ---- keepalive and fencing ---- */

static void fence(px_cluster *c, const char *why, bool revoke_old) {
    px_member_event ev;
    bool have = false;
    nng_mtx_lock(c->mtx);
    if (c->stopping || !c->registered) {
        nng_mtx_unlock(c->mtx);
        return;
    }
    c->registered = false;
    c->fenced = true;
    c->holding = false;
    c->hold_grace = false;
    c->fences++;
    c->old_lease = revoke_old ? c->lease : 0;
    c->lease = 0;
    uint32_t was = c->inc;
    if (c->sys == NULL || px_system_reincarnate(c->sys, &c->inc) != PX_OK) {
        c->inc = was + 1 != 0 ? was + 1 : 1;
    }
    member *m = mem_find(c, c->node_id);
    if (m != NULL) {
        char cause[PX_MEMBER_CAUSE_MAX];
        snprintf(cause, sizeof(cause), "fenced: %s", why);
        change_locked(c, m, PX_MEMBER_FENCED, 0, cause, &ev);
        have = true;
    }
    nng_mtx_unlock(c->mtx);
    mlog(c, PX_LOG_ERROR, "membership: fenced (%s); registering again as incarnation %u", why,
         c->inc);
    pxc_names_fenced(c); /* they went with the old lease */
    if (have) {
        publish(c, &ev);
    }
    if (c->tr != NULL) { /* peers learn the new incarnation from the handshakes */
        px_transport_reconnect(c->tr, "this node was fenced and is a new incarnation");
    }
    px_etcd_watch_kick(c->w); /* the stream may be as stale as the lease */
    reg_start(c);
}

/* The keepalive marked in flight was not sent after all. */
static void ka_unmark(px_cluster *c) {
    nng_mtx_lock(c->mtx);
    c->ka_inflight = false;
    nng_mtx_unlock(c->mtx);
}

static void ka_done(void *arg, const px_etcd_res *res) {
    px_cluster *c = arg;
    nng_mtx_lock(c->mtx);
    c->ka_inflight = false;
    bool mine = res->lease_id == c->lease || res->lease_id == 0;
    bool lost = false, back = false, held = false, resend = false;
    int64_t lease = c->lease;
    if (res->err == PX_OK && mine) {
        c->keepalives++;
        c->last_ok_ms = c->ka_sent_ms;
        back = c->etcd_down_since != 0;
        held = c->holding;
        c->etcd_down_since = 0;
        /* A slow answer vouches only for when it was sent: ask again now
         * (a hold ends with a fresh answer, not with this one). */
        int64_t now = mono_ms();
        resend = c->registered && now - c->ka_sent_ms > (int64_t)c->cfg.ttl_s * 1000 / 3;
        if (resend) {
            c->ka_inflight = true;
            c->ka_sent_ms = now;
        } else {
            c->holding = false;
            c->hold_grace = false;
        }
    } else if (res->err == PX_ENOENT && mine) {
        lost = c->registered;
    } else if (res->err != PX_ECLOSED) {
        c->ka_errors++;
        if (c->etcd_down_since == 0) {
            c->etcd_down_since = pxc_wall_ms();
        }
    }
    nng_mtx_unlock(c->mtx);
    if (res->err == PX_OK && mine && c->tr != NULL) {
        px_transport_etcd_ok(c->tr);
    }
    if (resend && px_etcd_lease_keepalive(c->e, lease, ka_done, c) != PX_OK) {
        ka_unmark(c);
    }
    if (back) {
        mlog(c, PX_LOG_INFO, "membership: etcd answers again%s",
             held ? "; our lease held: the same incarnation goes on" : "");
        px_etcd_watch_kick(c->w);
    }
    if (lost) {
        fence(c, "etcd says our lease is gone", true);
    }
}

/* Members still JOINING past the grace while our link to them fails are
 * UNREACHABLE (the transport does not repeat a state it already gave). */
static void stuck_joining(px_cluster *c) {
    char names[8][PX_MEMBER_NAME_MAX];
    size_t n = 0;
    nng_mtx_lock(c->mtx);
    for (size_t i = 0; i < c->nmem && n < 8; i++) {
        member *m = &c->mem[i];
        if (m->m.state == PX_MEMBER_JOINING && m->link == PX_LINK_UNREACHABLE &&
            joined_long_ago(m)) {
            snprintf(names[n++], PX_MEMBER_NAME_MAX, "%s", m->m.name);
        }
    }
    nng_mtx_unlock(c->mtx);
    for (size_t i = 0; i < n; i++) {
        link_changed(c, names[i], PX_LINK_UNREACHABLE, 0);
    }
}

/* Our lease has gone a whole TTL unconfirmed. If every other member of our
 * view is linked to us and its heartbeats say it has been cut off from etcd
 * for at least half a TTL too, etcd is down for everyone we know: nobody
 * can see our lease expire and take our work over, so we hold on to the
 * last view and keep serving instead of fencing (a lease etcd kept across
 * its restart simply goes on; one it expired meanwhile fences us at the
 * first keepalive it answers). One member that still reaches etcd, or one
 * we cannot hear, and we fence. A node with no peers fences. No lock held. */
static bool hold(px_cluster *c) {
    if (c->tr == NULL) {
        return false;
    }
    nng_mtx_lock(c->mtx);
    size_t n = 0;
    char (*names)[PX_MEMBER_NAME_MAX] = calloc(c->nmem ? c->nmem : 1, sizeof(*names));
    bool ok = names != NULL;
    for (size_t i = 0; ok && i < c->nmem; i++) {
        const member *m = &c->mem[i];
        if (m->m.node_id == c->node_id || !is_registered(m->m.state)) {
            continue;
        }
        ok = m->m.state != PX_MEMBER_UNREACHABLE;
        snprintf(names[n++], PX_MEMBER_NAME_MAX, "%s", m->m.name);
    }
    bool was = c->holding;
    uint32_t half = c->cfg.ttl_s * 1000 / 2;
    nng_mtx_unlock(c->mtx);
    ok = ok && n > 0;
    for (size_t i = 0; ok && i < n; i++) {
        px_peer_info pi;
        ok = px_transport_peer_info(c->tr, names[i], false, &pi) == PX_OK &&
             pi.state == PX_LINK_UP && pi.ping_age_ms < half && pi.etcd_silent_ms >= half;
    }
    free(names);
    nng_mtx_lock(c->mtx);
    ok = ok && c->registered && !c->stopping;
    bool grace = !ok && was && !c->hold_grace && c->registered && !c->stopping;
    c->hold_grace = grace; /* the keepalive sent now answers within a tick */
    c->holding = ok || grace;
    nng_mtx_unlock(c->mtx);
    if (grace) {
        mlog(c, PX_LOG_INFO, "membership: a member reaches etcd again; our keepalive decides");
        return true;
    }
    if (ok && !was) {
        mlog(c, PX_LOG_WARN,
             "membership: no keepalive acknowledged for a whole TTL, but all %zu other members "
             "are linked and cut off from etcd too: etcd is down for everyone; serving on the "
             "last view instead of fencing",
             n);
    }
    return ok;
}

static void tick_cb(void *arg) {
    px_cluster *c = arg;
    nng_mtx_lock(c->mtx);
    if (c->stopping) {
        nng_mtx_unlock(c->mtx);
        return;
    }
    int64_t now = mono_ms();
    bool expired = c->registered && now - c->last_ok_ms > (int64_t)c->cfg.ttl_s * 1000;
    bool send = c->registered && !c->ka_inflight; /* holding, it keeps asking */
    bool reg = !c->registered && !c->registering;
    int64_t lease = c->lease;
    uint32_t inc = c->inc;
    if (send) {
        c->ka_inflight = true;
        c->ka_sent_ms = now;
    }
    bool again = c->registered && !expired && c->sys != NULL;
    if (again && !c->republish) {
        px_system_stats st;
        again = px_system_stats_get(c->sys, &st) == PX_OK && st.live_actors != c->pub_actors;
    }
    c->republish = false;
    nng_mtx_unlock(c->mtx);
    if (again) {
        republish(c, lease, inc);
    }
    stuck_joining(c);
    if (expired && !hold(c)) {
        if (send) { /* not sent after all: fencing instead */
            ka_unmark(c);
        }
        fence(c, "no keepalive acknowledged for a whole TTL", true);
    } else if (send && px_etcd_lease_keepalive(c->e, lease, ka_done, c) != PX_OK) {
        ka_unmark(c);
    }
    if (reg) {
        reg_start(c);
    }
    px_alarm_set(c->tick, c->cfg.ttl_s * 1000 / 3);
}

/* ---- lifecycle ---- */

/* Waits for the call made with w (or frees w if the call was refused) and
 * drops the result: for the goodbye, where only trying matters. */
static void wait_drop(px_etcd_waiter *w, px_err submitted) {
    px_etcd_res *r = NULL;
    if (submitted == PX_OK) {
        px_etcd_waiter_take(w, &r);
        px_etcd_res_free(r);
    } else {
        px_etcd_waiter_free(w);
    }
}

static void cluster_free(px_cluster *c) {
    if (c == NULL) {
        return;
    }
    px_alarm_free(c->tick);
    for (size_t i = 0; i < c->nroles; i++) {
        free(c->roles[i]);
    }
    free(c->roles);
    free(c->cluster);
    free(c->node);
    free(c->address);
    free(c->admin_address);
    free(c->http_address);
    for (size_t i = 0; i < c->nmem; i++) {
        free(c->mem[i].roles);
        free(c->mem[i].behaviors);
    }
    free(c->mem);
    free(c->audit);
    free(c->subs);
    if (c->nmtx != NULL) {
        nng_mtx_free(c->nmtx);
    }
    if (c->cv != NULL) {
        nng_cv_free(c->cv);
    }
    if (c->mtx != NULL) {
        nng_mtx_free(c->mtx);
    }
    if (c->cbmtx != NULL) {
        nng_mtx_free(c->cbmtx);
    }
    free(c);
}

static px_err start_fail(px_cluster *c, px_err rv, char *err, size_t errlen, const char *why) {
    if (err != NULL && errlen > 0 && why != NULL) {
        snprintf(err, errlen, "%s", why);
    }
    px_cluster_stop(c, false);
    return rv;
}

/* What every start does once the view is there: the event type, the names,
 * links following the view. */
static px_err start_finish(px_cluster *c, char *err, size_t errlen) {
    if (c->sys != NULL) {
        (void)px_type_register(c->sys, &plexus__member_event__descriptor);
    }
    px_err rv = pxc_names_start(c, err, errlen);
    if (rv == PX_OK && c->tr != NULL) {
        px_transport_set_on_link(c->tr, on_link, c); /* current states come on its next tick */
    }
    return rv;
}

/* No etcd configured: this node is a member on its own (and the
 * transport's static peers, as their links say); names are this node's
 * alone; nothing renews or fences. */
static px_err start_standalone(px_cluster *c, px_cluster **out, char *err, size_t errlen) {
    member *m = mem_add_locked(c);
    if (m == NULL) {
        return start_fail(c, PX_ENOMEM, err, errlen, "out of memory");
    }
    snprintf(m->m.name, sizeof(m->m.name), "%s", c->node);
    snprintf(m->m.address, sizeof(m->m.address), "%s", c->address != NULL ? c->address : "");
    m->m.node_id = c->node_id;
    m->m.node_inc = c->inc;
    memcpy(m->m.pk, c->pk, sizeof(m->m.pk));
    px_member_event ev;
    change_locked(c, m, PX_MEMBER_UP, 0, "standalone: no etcd configured", &ev);
    c->registered = true;
    c->synced = true;
    px_err rv = start_finish(c, err, errlen);
    if (rv != PX_OK) {
        return start_fail(c, rv, NULL, 0, NULL);
    }
    mlog(c, PX_LOG_INFO, "membership: standalone (no etcd configured)");
    *out = c;
    return PX_OK;
}

px_err px_cluster_start(const px_cluster_cfg *cfg, px_cluster **out, char *err, size_t errlen) {
    if (out == NULL || cfg == NULL) {
        return PX_EINVAL;
    }
    *out = NULL;
    px_cluster_cfg dc = *cfg; /* the defaults a system and a transport give */
    if (dc.node == NULL && dc.sys != NULL) {
        dc.node = px_system_node_name(dc.sys);
    }
    if (dc.node_inc == 0 && dc.sys != NULL) {
        dc.node_inc = px_system_node_inc(dc.sys);
    }
    if (dc.address == NULL && dc.transport != NULL) {
        dc.address = px_transport_address(dc.transport);
    }
    if (dc.pk == NULL && dc.transport != NULL) {
        dc.pk = px_transport_pk(dc.transport);
    }
    cfg = &dc;
    if (cfg->node == NULL || cfg->node[0] == '\0' || strlen(cfg->node) >= PX_MEMBER_NAME_MAX) {
        snprintf(err, errlen, "a node name (1 to %d bytes) is required", PX_MEMBER_NAME_MAX - 1);
        return PX_EINVAL;
    }
    if (cfg->ttl_s < 2 || cfg->ttl_s > 3600) {
        snprintf(err, errlen, "ttl_s %u is outside 2..3600 (etcd's minimum TTL is 2 s)",
                 cfg->ttl_s);
        return PX_EINVAL;
    }
    const char *cl = cfg->cluster != NULL && cfg->cluster[0] != '\0' ? cfg->cluster : "default";
    if (strchr(cl, '/') != NULL || strlen(cl) > 100) {
        snprintf(err, errlen, "cluster name '%s' must be under 100 bytes without '/'", cl);
        return PX_EINVAL;
    }
    px_cluster *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return PX_ENOMEM;
    }
    c->cfg = *cfg;
    c->sys = cfg->sys;
    c->tr = cfg->transport;
    if (c->cfg.audit_max == 0) {
        c->cfg.audit_max = 256;
    }
    c->cluster = strdup(cl);
    c->node = strdup(cfg->node);
    c->address = cfg->address != NULL ? strdup(cfg->address) : NULL;
    c->admin_address = cfg->admin_address != NULL ? strdup(cfg->admin_address) : NULL;
    c->http_address = cfg->http_address != NULL ? strdup(cfg->http_address) : NULL;
    c->node_id = px_node_id(cfg->node);
    c->inc = cfg->node_inc;
    c->audit = calloc(c->cfg.audit_max, sizeof(*c->audit));
    if (cfg->pk != NULL) {
        memcpy(c->pk, cfg->pk, 32);
        c->has_pk = true;
    }
    for (const char *const *r = cfg->roles; r != NULL && *r != NULL; r++) {
        c->nroles++;
    }
    c->roles = calloc(c->nroles + 1, sizeof(char *));
    for (size_t i = 0; c->roles != NULL && i < c->nroles; i++) {
        c->roles[i] = strdup(cfg->roles[i]);
    }
    c->cfg.cluster = c->cfg.node = c->cfg.address = NULL;
    c->cfg.admin_address = c->cfg.http_address = NULL;
    c->cfg.roles = NULL;
    c->cfg.pk = NULL;
    snprintf(c->prefix, sizeof(c->prefix), "/plexus/%s/nodes/", c->cluster);
    snprintf(c->key, sizeof(c->key), "%s%08x", c->prefix, c->node_id);
    snprintf(c->names_prefix, sizeof(c->names_prefix), "/plexus/%s/names/", c->cluster);
    if (c->cluster == NULL || c->node == NULL || c->audit == NULL || c->roles == NULL ||
        nng_mtx_alloc(&c->mtx) != 0 || nng_mtx_alloc(&c->cbmtx) != 0 ||
        nng_mtx_alloc(&c->nmtx) != 0 || nng_cv_alloc(&c->cv, c->mtx) != 0 ||
        px_alarm_new(&c->tick, tick_cb, c) != PX_OK) {
        return start_fail(c, PX_ENOMEM, err, errlen, "out of memory");
    }
    px_etcd_cfg ec = cfg->etcd;
    if (ec.log_name == NULL) {
        ec.log_name = c->node;
    }
    if (ec.endpoints == NULL || ec.endpoints[0] == '\0') {
        return start_standalone(c, out, err, errlen);
    }
    px_err rv = px_etcd_open(&c->e, &ec, err, errlen);
    if (rv != PX_OK) {
        return start_fail(c, rv, NULL, 0, NULL);
    }
    /* Register, then watch, and wait for both (bounded by the etcd timeouts). */
    reg_start(c);
    int64_t end = mono_ms() + 2 * (int64_t)(ec.request_timeout_ms ? ec.request_timeout_ms : 3000);
    nng_mtx_lock(c->mtx);
    while (c->registering && mono_ms() < end) {
        nng_cv_until(c->cv, nng_clock() + 50);
    }
    bool ok = c->registered;
    nng_mtx_unlock(c->mtx);
    if (!ok) {
        return start_fail(c, PX_EUNREACHABLE, err, errlen,
                          "could not register with etcd (see the log for etcd's answer)");
    }
    px_etcd_watch_cbs cbs = {on_sync, on_events, on_wstate};
    if ((rv = px_etcd_watch_start(c->e, c->prefix, true, 0, &cbs, c, &c->w)) != PX_OK) {
        return start_fail(c, rv, err, errlen, "could not start the membership watch");
    }
    nng_mtx_lock(c->mtx);
    while (!c->synced && mono_ms() < end) {
        nng_cv_until(c->cv, nng_clock() + 50);
    }
    ok = c->synced;
    nng_mtx_unlock(c->mtx);
    if (!ok) {
        return start_fail(c, PX_ETIMEDOUT, err, errlen, "the membership watch did not sync");
    }
    if ((rv = start_finish(c, err, errlen)) != PX_OK) {
        return start_fail(c, rv, NULL, 0, NULL);
    }
    px_alarm_set(c->tick, c->cfg.ttl_s * 1000 / 6);
    *out = c;
    return PX_OK;
}

void px_cluster_stop(px_cluster *c, bool leave) {
    if (c == NULL) {
        return;
    }
    if (c->mtx != NULL) {
        nng_mtx_lock(c->mtx);
        c->stopping = true;
        nng_mtx_unlock(c->mtx);
    }
    if (c->tr != NULL) {
        px_transport_set_on_link(c->tr, NULL, NULL); /* waits for a call running now */
    }
    if (c->tick != NULL) {
        px_alarm_stop(c->tick);
    }
    bool registered = false;
    if (c->mtx != NULL) {
        nng_mtx_lock(c->mtx);
        registered = c->registered;
        nng_mtx_unlock(c->mtx);
    }
    if (c->e != NULL && leave && registered) {
        uint8_t *buf = NULL;
        size_t len = 0;
        px_etcd_waiter *w = NULL;
        if (nodeinfo(c, c->inc, true, &buf, &len) == PX_OK && px_etcd_waiter_alloc(&w) == PX_OK) {
            wait_drop(w, px_etcd_put(c->e, c->key, buf, len, c->lease, px_etcd_waiter_cb, w));
        }
        free(buf);
        if (px_etcd_waiter_alloc(&w) == PX_OK) {
            wait_drop(w, px_etcd_lease_revoke(c->e, c->lease, px_etcd_waiter_cb, w));
        }
        mlog(c, PX_LOG_INFO, "membership: left the cluster");
    }
    pxc_names_stop(c);
    px_etcd_watch_stop(c->w);
    px_etcd_close(c->e); /* callbacks still pending run now, with PX_ECLOSED */
    cluster_free(c);
}

void px_cluster_members(px_cluster *c, px_member *out, size_t max, size_t *n) {
    nng_mtx_lock(c->mtx);
    for (size_t i = 0; i < c->nmem && i < max; i++) {
        out[i] = c->mem[i].m;
    }
    *n = c->nmem;
    nng_mtx_unlock(c->mtx);
}

px_err px_cluster_member(px_cluster *c, const char *name, px_member *out) {
    px_err rv = PX_ENOENT;
    nng_mtx_lock(c->mtx);
    for (size_t i = 0; i < c->nmem; i++) {
        if (strcmp(c->mem[i].m.name, name) == 0) {
            *out = c->mem[i].m;
            rv = PX_OK;
            break;
        }
    }
    nng_mtx_unlock(c->mtx);
    return rv;
}

void px_cluster_audit(px_cluster *c, px_member_event *out, size_t max, size_t *n) {
    nng_mtx_lock(c->mtx);
    size_t have = c->audit_total < c->cfg.audit_max ? c->audit_total : c->cfg.audit_max;
    size_t first = c->audit_total - have;
    size_t k = 0;
    for (size_t i = 0; i < have && k < max; i++) {
        out[k++] = c->audit[(first + i) % c->cfg.audit_max];
    }
    *n = k;
    nng_mtx_unlock(c->mtx);
}

px_err px_cluster_token(px_cluster *c, int64_t *lease, int64_t *revision) {
    nng_mtx_lock(c->mtx);
    px_err rv = c->registered ? PX_OK : PX_EFENCED;
    *lease = c->registered ? c->lease : 0;
    *revision = c->registered ? c->reg_rev : 0;
    nng_mtx_unlock(c->mtx);
    return rv;
}

void px_cluster_health_get(px_cluster *c, px_cluster_health *out) {
    nng_mtx_lock(c->mtx);
    *out = (px_cluster_health){.registered = c->registered,
                               .fenced = c->fenced,
                               .node_inc = c->inc,
                               .etcd_down_since_ms = c->etcd_down_since,
                               .fences = c->fences,
                               .keepalives = c->keepalives,
                               .keepalive_errors = c->ka_errors,
                               .holding = c->holding};
    nng_mtx_unlock(c->mtx);
}

void px_cluster_etcd_stats(px_cluster *c, px_etcd_stats *out) {
    if (c->e == NULL) {
        *out = (px_etcd_stats){0};
        return;
    }
    px_etcd_stats_get(c->e, out);
}

/* ---- subscriptions ---- */

px_err px_cluster_subscribe(px_cluster *c, px_ref who) {
    if (c == NULL || c->sys == NULL || who.node != px_system_root(c->sys).node ||
        !px_is_alive(c->sys, who)) {
        return PX_EINVAL;
    }
    nng_mtx_lock(c->cbmtx); /* no event gets between the snapshot and the next one */
    nng_mtx_lock(c->mtx);
    for (size_t i = 0; i < c->nsubs; i++) {
        if (px_ref_eq(c->subs[i], who)) {
            nng_mtx_unlock(c->mtx);
            nng_mtx_unlock(c->cbmtx);
            return PX_OK;
        }
    }
    px_err rv = PX_OK;
    if (c->nsubs == c->capsubs) {
        size_t cap = c->capsubs ? c->capsubs * 2 : 4;
        px_ref *ns = realloc(c->subs, cap * sizeof(*ns));
        if (ns == NULL) {
            rv = PX_ENOMEM;
        } else {
            c->subs = ns;
            c->capsubs = cap;
        }
    }
    size_t n = c->nmem;
    px_member *now = rv == PX_OK && n > 0 ? malloc(n * sizeof(*now)) : NULL;
    if (rv == PX_OK && n > 0 && now == NULL) {
        rv = PX_ENOMEM;
    }
    if (rv == PX_OK) {
        c->subs[c->nsubs++] = who;
        for (size_t i = 0; i < n; i++) {
            now[i] = c->mem[i].m;
        }
    }
    nng_mtx_unlock(c->mtx);
    for (size_t i = 0; rv == PX_OK && i < n; i++) {
        px_member_event ev = {.m = now[i], .at_ms = now[i].since_ms};
        snprintf(ev.cause, sizeof(ev.cause), "current state");
        (void)tell(c, who, &ev);
    }
    free(now);
    nng_mtx_unlock(c->cbmtx);
    return rv;
}

px_err px_cluster_unsubscribe(px_cluster *c, px_ref who) {
    if (c == NULL) {
        return PX_EINVAL;
    }
    px_err rv = PX_ENOENT;
    nng_mtx_lock(c->mtx);
    for (size_t i = 0; i < c->nsubs; i++) {
        if (px_ref_eq(c->subs[i], who)) {
            c->subs[i] = c->subs[--c->nsubs];
            rv = PX_OK;
            break;
        }
    }
    nng_mtx_unlock(c->mtx);
    return rv;
}
