/*
 * names.c — global names (plexus/cluster.h): /plexus/<cluster>/names/<name>
 * → ActorRef, created only if absent, attached to this node's lease.
 *
 * Design. Every node watches the names prefix into a local hash table, so
 * px_whereis_global is one lookup under a leaf mutex. px_register_global is
 * etcd's create-if-absent; what it creates goes into the table at once (the
 * watch confirms it later; revisions keep the two from going backwards).
 * A keeper actor (behavior "plexus.names") watches every actor that holds a
 * name registered here; its Terminated message deletes the name — with a
 * transaction that compares the value, so a name taken over meanwhile is
 * left alone. A fenced node's names went with its old lease: they are
 * forgotten locally, and the watch shows their deletion. A name forgotten
 * here while etcd may still have it leaves a tomb, so that its PUT (late
 * on the watch, or in a re-read) does not bring it back.
 * A registration made for a child the mesh started here (a failover) may
 * find the name still held by the instance it replaces, until that one's
 * node lease runs out: the child then waits for the name (c->wants) and
 * takes it as soon as the watch shows its deletion.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster_int.h"
#include "plexus/plexus.pb-c.h"

#define KEEPER_WATCH 1  /* tag of the keeper's "watch this ref" message */
#define KEEPER_DELETE 3 /* "try that delete again" (a gone_name) */
#define RETRY_MIN_MS 100
#define RETRY_MAX_MS 2000

/* ---- the local table (c->nmtx held) ---- */

static uint32_t name_hash(const char *s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ (uint8_t)s[i]) * 16777619u;
    }
    return h;
}

static gname **slot_of(px_cluster *c, const char *name, size_t n) {
    gname **pp = &c->nbuckets[name_hash(name, n) & (c->nbucket_count - 1)];
    while (*pp != NULL && (strncmp((*pp)->name, name, n) != 0 || (*pp)->name[n] != '\0')) {
        pp = &(*pp)->next;
    }
    return pp;
}

static void grow_locked(px_cluster *c) {
    size_t nc = c->nbucket_count * 2;
    gname **nb = calloc(nc, sizeof(*nb));
    if (nb == NULL) {
        return; /* longer chains, still correct */
    }
    for (size_t i = 0; i < c->nbucket_count; i++) {
        for (gname *g = c->nbuckets[i], *nx; g != NULL; g = nx) {
            nx = g->next;
            gname **pp = &nb[name_hash(g->name, strlen(g->name)) & (nc - 1)];
            g->next = *pp;
            *pp = g;
        }
    }
    free(c->nbuckets);
    c->nbuckets = nb;
    c->nbucket_count = nc;
}

/* Sets name -> ref at revision rev unless the table has a newer one. */
static void put_locked(px_cluster *c, const char *name, size_t n, px_ref ref, int64_t rev,
                       bool mine) {
    gname **pp = slot_of(c, name, n);
    if (*pp != NULL) {
        if ((*pp)->rev > rev) {
            return;
        }
        (*pp)->mine = mine || ((*pp)->mine && px_ref_eq((*pp)->ref, ref));
        (*pp)->ref = ref;
        (*pp)->rev = rev;
        return;
    }
    gname *g = malloc(sizeof(*g) + n + 1);
    if (g == NULL) {
        return;
    }
    memcpy(g->name, name, n);
    g->name[n] = '\0';
    g->ref = ref;
    g->rev = rev;
    g->mine = mine;
    g->next = NULL;
    *pp = g;
    if (++c->ncount > 2 * c->nbucket_count) {
        grow_locked(c);
    }
}

/* A DELETE at rev (an entry put at a later revision stays). */
static void del_locked(px_cluster *c, const char *name, size_t n, int64_t rev) {
    gname **pp = slot_of(c, name, n);
    if (*pp != NULL && (*pp)->rev <= rev) {
        gname *g = *pp;
        *pp = g->next;
        free(g);
        c->ncount--;
    }
}

static void clear_locked(px_cluster *c) {
    for (size_t i = 0; c->nbuckets != NULL && i < c->nbucket_count; i++) {
        for (gname *g = c->nbuckets[i], *nx; g != NULL; g = nx) {
            nx = g->next;
            free(g);
        }
        c->nbuckets[i] = NULL;
    }
    c->ncount = 0;
}

/* ---- forgotten names (c->nmtx held) ----
 * This node forgets a name at once when it goes here — its actor stopped,
 * it was given up, a fence took it — while etcd may still have the key
 * and the names watch may not even have shown its PUT yet. A tomb (name,
 * rev) keeps that PUT, whether it comes late on the watch or again in a
 * full re-read, from bringing the name back: it buries PUTs of the name at
 * or below rev. It goes when the watch shows the name's next event (its
 * DELETE, or a newer PUT: a new registration), or a re-read no longer has
 * the key at or below rev. */

/* Unlinks and frees *pp; with bury (and etcd), leaves a tomb for it. */
static void forget_locked(px_cluster *c, gname **pp, bool bury) {
    gname *g = *pp;
    if (bury && c->e != NULL) {
        size_t n = strlen(g->name);
        gtomb *t = malloc(sizeof(*t) + n + 1);
        if (t != NULL) { /* without memory, a late PUT shows it until its DELETE */
            t->rev = g->rev;
            t->seen = false;
            memcpy(t->name, g->name, n + 1);
            t->next = c->tombs;
            c->tombs = t;
        }
    }
    *pp = g->next;
    free(g);
    c->ncount--;
}

static bool tomb_is(const gtomb *t, const char *name, size_t n) {
    return strncmp(t->name, name, n) == 0 && t->name[n] == '\0';
}

/* Whether a PUT of name at rev is one this node forgot already (marks
 * the tomb seen). */
static bool buried_locked(px_cluster *c, const char *name, size_t n, int64_t rev) {
    for (gtomb *t = c->tombs; t != NULL; t = t->next) {
        if (rev <= t->rev && tomb_is(t, name, n)) {
            t->seen = true;
            return true;
        }
    }
    return false;
}

/* What ends tombs: the name's next event (at rev), a full re-read that did
 * not see them, or the names stopping. */
typedef struct tomb_end {
    const char *name; /* NULL: not by name */
    size_t n;
    int64_t rev;
    bool unseen; /* the re-read's */
} tomb_end;

static void tombs_drop_locked(px_cluster *c, tomb_end e) {
    for (gtomb **pp = &c->tombs; *pp != NULL;) {
        gtomb *t = *pp;
        bool drop = e.name != NULL ? t->rev < e.rev && tomb_is(t, e.name, e.n)
                                   : !e.unseen || !t->seen;
        if (drop) {
            *pp = t->next;
            free(t);
        } else {
            pp = &t->next;
        }
    }
}

/* Forgets the entries drop(g, rev) picks, leaving tombs with bury. */
static void prune_locked(px_cluster *c, bool (*drop)(gname *g, int64_t rev), int64_t rev,
                         bool bury) {
    for (size_t i = 0; c->nbuckets != NULL && i < c->nbucket_count; i++) {
        for (gname **pp = &c->nbuckets[i]; *pp != NULL;) {
            if (drop(*pp, rev)) {
                forget_locked(c, pp, bury);
            } else {
                pp = &(*pp)->next;
            }
        }
    }
}

static bool is_mine(gname *g, int64_t rev) {
    (void)rev;
    return g->mine;
}

/* For a full read at rev: theirs go; ours up to rev stay, marked "not
 * seen yet" (rev 0). Ours registered after rev stay as they are (the
 * read cannot have them). */
static bool theirs_or_mark(gname *g, int64_t rev) {
    if (g->mine && g->rev <= rev) {
        g->rev = 0;
    }
    return !g->mine;
}

static bool unseen(gname *g, int64_t rev) {
    (void)rev;
    return g->rev == 0;
}

/* ---- names waited for (c->nmtx held) ---- */

static void want_add_locked(px_cluster *c, const char *name, px_ref ref) {
    for (gwant *w = c->wants; w != NULL; w = w->next) {
        if (px_ref_eq(w->ref, ref) && strcmp(w->name, name) == 0) {
            return;
        }
    }
    size_t n = strlen(name);
    gwant *w = malloc(sizeof(*w) + n + 1);
    if (w == NULL) {
        return; /* the actor runs without its name, as it would have */
    }
    w->ref = ref;
    memcpy(w->name, name, n + 1);
    w->next = c->wants;
    c->wants = w;
}

/* What a want is matched against (want_take_locked). */
typedef struct want_key {
    const char *name; /* this name (length n) ... */
    size_t n;
    px_ref who;       /* ... else this actor's (nil: every want) */
} want_key;

/* Moves the wants that match k onto *out. */
static void want_take_locked(px_cluster *c, want_key k, gwant **out) {
    for (gwant **pp = &c->wants; *pp != NULL;) {
        gwant *w = *pp;
        bool hit = k.name != NULL ? strncmp(w->name, k.name, k.n) == 0 && w->name[k.n] == '\0'
                                  : px_ref_is_nil(k.who) || px_ref_eq(w->ref, k.who);
        if (hit) {
            *pp = w->next;
            w->next = *out;
            *out = w;
        } else {
            pp = &w->next;
        }
    }
}

static void wants_free(gwant *w) {
    while (w != NULL) {
        gwant *nx = w->next;
        free(w);
        w = nx;
    }
}

static px_err register_async(px_cluster *c, const char *name, px_ref ref);

/* Tries each of ws again (the names were seen deleted); frees them. */
static void wants_retry(px_cluster *c, gwant *ws) {
    for (gwant *w = ws; w != NULL; w = w->next) {
        px_err rv = register_async(c, w->name, w->ref);
        if (rv != PX_OK) {
            px_log(c->sys, PX_LOG_WARN, "global name %s is free again but cannot be taken: %s",
                   w->name, px_errname(rv));
        }
    }
    wants_free(ws);
}

/* ---- the watch ---- */

/* ref as a name's value (a packed ActorRef); returns its length. */
static size_t ref_value(px_ref ref, uint8_t val[64]) {
    Plexus__ActorRef ar = PLEXUS__ACTOR_REF__INIT;
    ar.node = ref.node;
    ar.node_inc = ref.node_inc;
    ar.id = ref.id;
    ar.inc = ref.inc;
    return plexus__actor_ref__pack(&ar, val);
}

/* Deletes name from etcd if it still maps to ref (a txn comparing the
 * value, so a name taken over meanwhile stays); cb as for px_etcd_txn. */
static px_err delete_if_ref(px_cluster *c, const char *name, px_ref ref, px_etcd_cb cb,
                            void *arg) {
    uint8_t val[64];
    size_t vlen = ref_value(ref, val);
    char key[sizeof(c->names_prefix) + PX_GLOBAL_NAME_MAX];
    snprintf(key, sizeof(key), "%s%s", c->names_prefix, name);
    px_etcd_cmp cmp = {.key = key, .target = PX_ETCD_VALUE, .rel = PX_ETCD_EQUAL,
                       .value = val, .value_len = vlen};
    px_etcd_op del = {.kind = PX_ETCD_OP_DELETE, .key = key};
    return px_etcd_txn(c->e, &cmp, 1, &del, 1, NULL, 0, cb, arg);
}

static bool ref_of_value(const px_etcd_kv *kv, px_ref *out) {
    Plexus__ActorRef *r = plexus__actor_ref__unpack(NULL, kv->value_len, kv->value);
    if (r == NULL) {
        return false;
    }
    *out = (px_ref){r->node, r->node_inc, r->id, r->inc};
    plexus__actor_ref__free_unpacked(r, NULL);
    return !px_ref_is_nil(*out);
}

/* The name part of a key under the names prefix (NULL if it is not). */
static const char *name_of_key(px_cluster *c, const px_etcd_kv *kv, size_t *n) {
    size_t pl = strlen(c->names_prefix);
    if (kv->key_len <= pl || strncmp(kv->key, c->names_prefix, pl) != 0) {
        return NULL;
    }
    *n = kv->key_len - pl;
    return kv->key + pl;
}

static void names_sync(void *arg, int64_t rev, const px_etcd_kv *kvs, size_t n) {
    px_cluster *c = arg;
    (void)rev;
    nng_mtx_lock(c->nmtx);
    /* Names of ours the table had stay marked as ours if etcd still maps
     * them to the same actor: the keeper deletes them when it stops. */
    prune_locked(c, theirs_or_mark, rev, false);
    for (gtomb *t = c->tombs; t != NULL; t = t->next) {
        t->seen = false;
    }
    for (size_t i = 0; i < n; i++) {
        size_t nl;
        const char *name = name_of_key(c, &kvs[i], &nl);
        px_ref r;
        if (name != NULL && ref_of_value(&kvs[i], &r) &&
            !buried_locked(c, name, nl, kvs[i].mod_rev)) {
            put_locked(c, name, nl, r, kvs[i].mod_rev, false);
        }
    }
    prune_locked(c, unseen, rev, false); /* ours that etcd no longer has */
    tombs_drop_locked(c, (tomb_end){.unseen = true}); /* keys etcd no longer has */
    c->names_synced = true;
    c->names_rev = rev;
    gwant *free_now = NULL; /* names waited for that etcd does not have */
    for (gwant **pp = &c->wants; *pp != NULL;) {
        gwant *w = *pp;
        if (*slot_of(c, w->name, strlen(w->name)) == NULL) {
            *pp = w->next;
            w->next = free_now;
            free_now = w;
        } else {
            pp = &w->next;
        }
    }
    nng_mtx_unlock(c->nmtx);
    wants_retry(c, free_now);
}

/* One event of the names watch at rev: the table, the wants it frees. */
static void event_locked(px_cluster *c, const char *name, size_t nl, bool is_delete, px_ref r,
                         int64_t rev, gwant **free_now) {
    if (is_delete) {
        del_locked(c, name, nl, rev);
        want_take_locked(c, (want_key){.name = name, .n = nl}, free_now);
    } else if (!buried_locked(c, name, nl, rev)) {
        put_locked(c, name, nl, r, rev, false);
    }
    tombs_drop_locked(c, (tomb_end){.name = name, .n = nl, .rev = rev}); /* its next event */
}

/* Keeps an event while the watch is held (pxc_names_hold). */
static void hold_locked(px_cluster *c, const char *name, size_t nl, bool is_delete, px_ref r,
                        int64_t rev) {
    gheld *h = malloc(sizeof(*h) + nl + 1);
    if (h == NULL) {
        return; /* a test aid: the test sees the event missing */
    }
    h->next = NULL;
    h->rev = rev;
    h->is_delete = is_delete;
    h->ref = r;
    memcpy(h->name, name, nl);
    h->name[nl] = '\0';
    if (c->held_tail != NULL) {
        c->held_tail->next = h;
    } else {
        c->held = h;
    }
    c->held_tail = h;
}

static void names_events(void *arg, int64_t rev, const px_etcd_event *ev, size_t n) {
    px_cluster *c = arg;
    gwant *free_now = NULL;
    nng_mtx_lock(c->nmtx);
    for (size_t i = 0; i < n; i++) {
        size_t nl;
        const char *name = name_of_key(c, &ev[i].kv, &nl);
        px_ref r = PX_REF_NIL;
        if (name == NULL || (!ev[i].is_delete && !ref_of_value(&ev[i].kv, &r))) {
            continue;
        }
        if (c->names_held) {
            hold_locked(c, name, nl, ev[i].is_delete, r, rev);
        } else {
            event_locked(c, name, nl, ev[i].is_delete, r, rev, &free_now);
        }
    }
    if (!c->names_held) {
        c->names_rev = rev;
    }
    nng_mtx_unlock(c->nmtx);
    wants_retry(c, free_now);
}

void pxc_names_kick(px_cluster *c) {
    if (c->nw != NULL) {
        px_etcd_watch_kick(c->nw);
    }
}

size_t pxc_names_held(px_cluster *c) {
    size_t n = 0;
    nng_mtx_lock(c->nmtx);
    for (const gheld *h = c->held; h != NULL; h = h->next) {
        n++;
    }
    nng_mtx_unlock(c->nmtx);
    return n;
}

void pxc_names_hold(px_cluster *c) {
    nng_mtx_lock(c->nmtx);
    c->names_held = true;
    nng_mtx_unlock(c->nmtx);
}

void pxc_names_rele(px_cluster *c) {
    gwant *free_now = NULL;
    nng_mtx_lock(c->nmtx);
    c->names_held = false;
    gheld *h = c->held;
    c->held = c->held_tail = NULL;
    int64_t base = c->names_rev; /* a full read meanwhile covers what is below */
    while (h != NULL) {
        gheld *nx = h->next;
        if (h->rev > base) {
            event_locked(c, h->name, strlen(h->name), h->is_delete, h->ref, h->rev, &free_now);
            c->names_rev = h->rev;
        }
        free(h);
        h = nx;
    }
    nng_mtx_unlock(c->nmtx);
    wants_retry(c, free_now);
}

/* ---- the keeper actor ---- */

static void keeper_unref(pxc_keeper *k) {
    if (atomic_fetch_sub(&k->refs, 1) == 1) {
        nng_mtx_free(k->mtx);
        free(k);
    }
}

/* A name to delete from etcd now that its actor stopped, tried until etcd
 * answers: a name must not outlive its actor because etcd was slow once.
 * Between tries it travels by value in the keeper's messages (so a
 * message dropped with the keeper loses nothing that needs freeing). The
 * compare in the delete keeps a late retry from touching a name taken
 * over meanwhile. */
typedef struct gone_name {
    px_ref who;
    uint64_t fences; /* the node's fence count at the first try */
    uint32_t attempt;
    char name[PX_GLOBAL_NAME_MAX];
} gone_name;

/* One delete in flight: holds a keeper reference until its answer. */
typedef struct gone_req {
    pxc_keeper *k;
    gone_name g;
} gone_req;

static uint64_t fences_of(px_cluster *c) {
    px_cluster_health h;
    px_cluster_health_get(c, &h);
    return h.fences;
}

/* A bytes message with tag for the keeper, now or after delay_ms. */
static px_err keeper_send(px_cluster *c, uint32_t tag, const void *d, size_t n,
                          uint32_t delay_ms) {
    px_msg *m = NULL;
    px_err rv = px_msg_bytes(&m, tag, d, n);
    if (rv == PX_OK) {
        rv = delay_ms > 0 ? px_system_send_after(c->sys, delay_ms, c->keeper_ref, &m, NULL)
                          : px_system_send(c->sys, c->keeper_ref, &m);
    }
    px_msg_free(m);
    return rv;
}

/* The delete's answer (client thread). Done when the txn ran, compare
 * held or not; given up when the cluster stops, when etcd refuses the
 * request itself, or once this node was fenced (the name went with the
 * old lease). Otherwise the keeper tries again after a backoff (100 ms
 * doubling to 2 s). */
static void gone_deleted(void *arg, const px_etcd_res *res) {
    gone_req *q = arg;
    pxc_keeper *k = q->k;
    px_err e = res->err;
    if (e != PX_OK && e != PX_ECLOSED && e != PX_EINVAL && e != PX_EAUTH) {
        nng_mtx_lock(k->mtx);
        px_cluster *c = k->c;
        if (c != NULL && fences_of(c) == q->g.fences) {
            if (q->g.attempt == 0) {
                px_log(c->sys, PX_LOG_WARN,
                       "global name %s: its actor stopped but etcd did not take the delete: "
                       "%s (%s); retrying",
                       q->g.name, res->msg, px_errname(e));
            }
            uint32_t delay = RETRY_MIN_MS << (q->g.attempt < 5 ? q->g.attempt : 5);
            q->g.attempt++;
            (void)keeper_send(c, KEEPER_DELETE, &q->g, sizeof(q->g),
                              delay < RETRY_MAX_MS ? delay : RETRY_MAX_MS);
        }
        nng_mtx_unlock(k->mtx);
    }
    keeper_unref(k);
    free(q);
}

/* Sends g's delete (lock: k->mtx, k->c set). */
static void gone_try(px_cluster *c, const gone_name *g) {
    gone_req *q = malloc(sizeof(*q));
    if (q != NULL) {
        q->k = c->keeper;
        q->g = *g;
        atomic_fetch_add(&q->k->refs, 1);
        if (delete_if_ref(c, g->name, g->who, gone_deleted, q) == PX_OK) {
            return;
        }
        keeper_unref(q->k);
        free(q);
    }
    px_log(c->sys, PX_LOG_WARN,
           "global name %s: cannot delete it after its actor stopped; it goes with this "
           "node's lease",
           g->name);
}

/* `who` stopped: delete the names registered here for it (lock: k->mtx). */
static void names_of_gone(px_cluster *c, px_ref who) {
    char (*names)[PX_GLOBAL_NAME_MAX] = NULL;
    size_t n = 0, cap = 0;
    nng_mtx_lock(c->nmtx);
    for (size_t i = 0; i < c->nbucket_count; i++) {
        for (gname *g = c->nbuckets[i]; g != NULL; g = g->next) {
            if (!g->mine || !px_ref_eq(g->ref, who)) {
                continue;
            }
            if (n == cap) {
                size_t nc = cap ? cap * 2 : 4;
                void *nn = realloc(names, nc * sizeof(*names));
                if (nn == NULL) {
                    continue;
                }
                names = nn;
                cap = nc;
            }
            snprintf(names[n++], PX_GLOBAL_NAME_MAX, "%s", g->name);
        }
    }
    gwant *dropped = NULL;
    want_take_locked(c, (want_key){.who = who}, &dropped);
    nng_mtx_unlock(c->nmtx);
    wants_free(dropped);
    uint64_t fences = n > 0 ? fences_of(c) : 0;
    for (size_t i = 0; i < n; i++) {
        if (c->e != NULL) { /* standalone: the table is all there is */
            gone_name g = {.who = who, .fences = fences};
            snprintf(g.name, sizeof(g.name), "%s", names[i]);
            gone_try(c, &g);
        }
        nng_mtx_lock(c->nmtx);
        gname **pp = slot_of(c, names[i], strlen(names[i]));
        if (*pp != NULL && px_ref_eq((*pp)->ref, who)) {
            forget_locked(c, pp, true);
        }
        nng_mtx_unlock(c->nmtx);
    }
    free(names);
}

static px_err keeper_receive(px_ctx *ctx, px_msg *m) {
    pxc_keeper *k = px_state(ctx);
    if (px_msg_kind_of(m) == PX_MSG_BYTES && px_msg_tag(m) == KEEPER_WATCH) {
        size_t len = 0;
        const void *d = px_msg_data(m, &len);
        px_ref r;
        if (len == sizeof(r)) {
            memcpy(&r, d, sizeof(r));
            (void)px_watch(ctx, r); /* already gone: Terminated (no actor) comes at once */
        }
        return PX_OK;
    }
    if (px_msg_kind_of(m) == PX_MSG_BYTES && px_msg_tag(m) == KEEPER_DELETE) {
        size_t len = 0;
        const void *d = px_msg_data(m, &len);
        gone_name g;
        if (len != sizeof(g)) {
            return PX_OK;
        }
        memcpy(&g, d, sizeof(g));
        nng_mtx_lock(k->mtx);
        if (k->c != NULL) {
            gone_try(k->c, &g);
        }
        nng_mtx_unlock(k->mtx);
        return PX_OK;
    }
    px_ref who;
    if (px_msg_terminated(m, &who, NULL, NULL) == PX_OK) {
        nng_mtx_lock(k->mtx);
        if (k->c != NULL) {
            names_of_gone(k->c, who);
        }
        nng_mtx_unlock(k->mtx);
    }
    return PX_OK;
}

static void keeper_stop(px_ctx *ctx) {
    pxc_keeper *k = px_state(ctx);
    if (k != NULL) {
        keeper_unref(k);
    }
}

static px_err keeper_init(px_ctx *ctx, const px_msg *arg) {
    size_t len = 0;
    const void *d = px_msg_data(arg, &len);
    pxc_keeper *k = NULL;
    if (d == NULL || len != sizeof(k)) {
        return PX_EINVAL;
    }
    memcpy(&k, d, sizeof(k));
    px_set_state(ctx, k);
    return PX_OK;
}

static const px_behavior keeper_b = {.name = "plexus.names", .init = keeper_init,
                                     .receive = keeper_receive, .stop = keeper_stop};

/* ---- start / stop ---- */

px_err pxc_names_start(px_cluster *c, char *err, size_t errlen) {
    if (c->sys == NULL) {
        return PX_OK; /* names need refs: without a system there are none */
    }
    c->nbucket_count = 64;
    c->nbuckets = calloc(c->nbucket_count, sizeof(*c->nbuckets));
    pxc_keeper *k = calloc(1, sizeof(*k));
    if (c->nbuckets == NULL || k == NULL || nng_mtx_alloc(&k->mtx) != 0) {
        free(k);
        snprintf(err, errlen, "out of memory");
        return PX_ENOMEM;
    }
    k->c = c;
    atomic_store(&k->refs, 2);
    px_msg *arg = NULL;
    px_err rv = px_msg_bytes(&arg, 0, &k, sizeof(k));
    if (rv == PX_OK) {
        rv = px_system_spawn(c->sys, &keeper_b, &arg, NULL, &c->keeper_ref);
        px_msg_free(arg);
    }
    if (rv != PX_OK) {
        nng_mtx_free(k->mtx);
        free(k);
        snprintf(err, errlen, "cannot start the names keeper: %s", px_errname(rv));
        return rv;
    }
    c->keeper = k;
    if (c->e == NULL) {
        return PX_OK; /* standalone: no etcd to watch */
    }
    px_etcd_watch_cbs cbs = {names_sync, names_events, NULL};
    rv = px_etcd_watch_start(c->e, c->names_prefix, true, 0, &cbs, c, &c->nw);
    if (rv != PX_OK) {
        snprintf(err, errlen, "cannot watch the global names: %s", px_errname(rv));
    }
    return rv;
}

void pxc_names_stop(px_cluster *c) {
    px_etcd_watch_stop(c->nw);
    c->nw = NULL;
    if (c->keeper != NULL) {
        nng_mtx_lock(c->keeper->mtx);
        c->keeper->c = NULL; /* the keeper touches c no more */
        nng_mtx_unlock(c->keeper->mtx);
        (void)px_stop(c->sys, c->keeper_ref);
        keeper_unref(c->keeper);
        c->keeper = NULL;
    }
    nng_mtx_lock(c->nmtx); /* registration answers may still come (client thread) */
    if (c->nbuckets != NULL) {
        clear_locked(c);
        free(c->nbuckets);
        c->nbuckets = NULL;
    }
    tombs_drop_locked(c, (tomb_end){0}); /* all */
    for (gheld *h = c->held, *nx; h != NULL; h = nx) {
        nx = h->next;
        free(h);
    }
    c->held = c->held_tail = NULL;
    wants_free(c->wants);
    c->wants = NULL;
    nng_mtx_unlock(c->nmtx);
}

void pxc_names_fenced(px_cluster *c) {
    if (c->nbuckets == NULL) {
        return;
    }
    nng_mtx_lock(c->nmtx);
    prune_locked(c, is_mine, 0, true);
    gwant *dropped = NULL; /* their actors are of the old incarnation: cut off */
    want_take_locked(c, (want_key){.who = PX_REF_NIL}, &dropped);
    nng_mtx_unlock(c->nmtx);
    wants_free(dropped);
}

/* ---- the API ---- */

static bool name_ok(const char *name) {
    size_t n = name != NULL ? strlen(name) : 0;
    if (n == 0 || n >= PX_GLOBAL_NAME_MAX) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char ch = name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == ':' || ch == '-')) {
            return false;
        }
    }
    return true;
}

/* etcd's create-if-absent, waited for: the result (caller frees *res). */
static px_err create(px_cluster *c, const char *key, const uint8_t *val, size_t vlen,
                     int64_t lease, px_etcd_res **res) {
    px_etcd_waiter *w = NULL;
    px_err rv = px_etcd_waiter_alloc(&w);
    if (rv != PX_OK) {
        return rv;
    }
    rv = px_etcd_create(c->e, key, val, vlen, lease, px_etcd_waiter_cb, w);
    if (rv != PX_OK) {
        px_etcd_waiter_free(w);
        return rv;
    }
    return px_etcd_waiter_take(w, res);
}

/* The same against the local table alone (standalone), shaped like etcd's
 * answer: PX_EEXIST with the owner's value in kvs[0]. */
static px_err create_local(px_cluster *c, const char *name, px_ref ref, px_etcd_res **res) {
    static _Atomic int64_t rev = 1;
    uint8_t val[64];
    px_etcd_kv kv = {.key = name, .key_len = strlen(name)};
    px_etcd_res r = {.revision = atomic_fetch_add(&rev, 1), .kvs = &kv, .msg = ""};
    nng_mtx_lock(c->nmtx);
    gname *g = *slot_of(c, name, strlen(name));
    if (g != NULL) {
        kv.value = val;
        kv.value_len = ref_value(g->ref, val);
        r.nkvs = 1;
        r.err = PX_EEXIST;
    } else {
        put_locked(c, name, strlen(name), ref, r.revision, true);
    }
    nng_mtx_unlock(c->nmtx);
    px_err rv = px_etcd_res_copy(&r, res);
    return rv != PX_OK ? rv : r.err;
}

/* What a create-if-absent of `name` for ref came to: the local table and
 * the keeper on success, the owner on PX_EEXIST, a log line otherwise. */
static void registered(px_cluster *c, const char *name, px_ref ref, px_err rv,
                       const px_etcd_res *res, px_ref *owner) {
    if (rv == PX_OK) {
        nng_mtx_lock(c->nmtx);
        if (c->nbuckets == NULL) { /* the names stopped meanwhile */
            nng_mtx_unlock(c->nmtx);
            return;
        }
        /* The watch has shown this create and the name is not in the
         * table: it was deleted since (its lease expired, a fence); it is
         * not put back. The caller still gets PX_OK: the name was taken,
         * and is gone as a fenced node's names go. */
        bool deleted = c->e != NULL && c->names_rev >= res->revision &&
                       *slot_of(c, name, strlen(name)) == NULL;
        if (!deleted) {
            put_locked(c, name, strlen(name), ref, res->revision, true);
        }
        nng_mtx_unlock(c->nmtx);
        if (keeper_send(c, KEEPER_WATCH, &ref, sizeof(ref), 0) != PX_OK) {
            px_log(c->sys, PX_LOG_WARN,
                   "global name %s: cannot watch its actor; the name goes with this node's "
                   "lease, not with the actor",
                   name);
        }
    } else if (rv == PX_EEXIST && res != NULL && res->nkvs > 0 && owner != NULL) {
        (void)ref_of_value(&res->kvs[0], owner);
    } else if (rv != PX_EEXIST) {
        px_log(c->sys, PX_LOG_WARN, "global name %s: etcd: %s (%s)", name,
               res != NULL ? res->msg : "?", px_errname(rv));
    }
}

/* A registration that nobody waits for (the mesh, for a child it placed
 * here): the outcome is logged. */
typedef struct async_reg {
    px_cluster *c;
    px_ref ref;
    char name[];
} async_reg;

static void async_done(void *arg, const px_etcd_res *res) {
    async_reg *a = arg;
    px_cluster *c = a->c;
    registered(c, a->name, a->ref, res->err, res, NULL);
    if (res->err == PX_EEXIST) {
        /* Held (most likely by the instance this one replaces, until its
         * lease runs out): wait for its deletion. If the watch has shown
         * everything up to this answer and the name is not in the table,
         * the deletion came first: try again now. */
        px_ref owner = PX_REF_NIL;
        if (res->nkvs > 0) {
            (void)ref_of_value(&res->kvs[0], &owner);
        }
        nng_mtx_lock(c->nmtx);
        if (c->nbuckets == NULL) { /* the names stopped meanwhile */
            nng_mtx_unlock(c->nmtx);
            free(a);
            return;
        }
        bool gone = c->names_rev >= res->revision &&
                    *slot_of(c, a->name, strlen(a->name)) == NULL;
        if (!gone) {
            want_add_locked(c, a->name, a->ref);
        }
        nng_mtx_unlock(c->nmtx);
        char ob[48];
        px_log(c->sys, PX_LOG_WARN,
               "global name %s is held by %s: the actor started here takes it once it is free",
               a->name, px_ref_format(owner, ob, sizeof(ob)));
        (void)keeper_send(c, KEEPER_WATCH, &a->ref, sizeof(a->ref), 0); /* its stop
                                                                             ends the wait */
        if (gone) {
            (void)register_async(c, a->name, a->ref);
        }
    }
    free(a);
}

px_err pxc_register_global_async(px_cluster *c, const char *name, px_ref ref) {
    if (c == NULL || c->sys == NULL || !name_ok(name)) {
        return PX_EINVAL;
    }
    return register_async(c, name, ref);
}

static px_err register_async(px_cluster *c, const char *name, px_ref ref) {
    if (c->e == NULL) {
        px_etcd_res *res = NULL;
        px_err rv = create_local(c, name, ref, &res);
        registered(c, name, ref, rv, res, NULL);
        px_etcd_res_free(res);
        return rv;
    }
    nng_mtx_lock(c->mtx);
    int64_t lease = c->registered ? c->lease : 0;
    nng_mtx_unlock(c->mtx);
    if (lease == 0) {
        return PX_EFENCED;
    }
    size_t n = strlen(name);
    async_reg *a = malloc(sizeof(*a) + n + 1);
    if (a == NULL) {
        return PX_ENOMEM;
    }
    a->c = c;
    a->ref = ref;
    memcpy(a->name, name, n + 1);
    uint8_t val[64];
    size_t vlen = ref_value(ref, val);
    char key[sizeof(c->names_prefix) + PX_GLOBAL_NAME_MAX];
    snprintf(key, sizeof(key), "%s%s", c->names_prefix, name);
    px_err rv = px_etcd_create(c->e, key, val, vlen, lease, async_done, a);
    if (rv != PX_OK) {
        free(a);
    }
    return rv;
}

px_err px_register_global(px_cluster *c, const char *name, px_ref ref, px_ref *owner) {
    if (owner != NULL) {
        *owner = PX_REF_NIL;
    }
    if (c == NULL || c->sys == NULL || !name_ok(name)) {
        return PX_EINVAL;
    }
    if (ref.node != c->node_id || ref.node_inc != px_system_node_inc(c->sys) ||
        !px_is_alive(c->sys, ref)) {
        return PX_EINVAL; /* only a live actor of this node as the cluster knows it */
    }
    nng_mtx_lock(c->mtx);
    int64_t lease = c->registered ? c->lease : 0;
    nng_mtx_unlock(c->mtx);
    if (lease == 0 && c->e != NULL) {
        return PX_EFENCED;
    }
    uint8_t val[64];
    size_t vlen = ref_value(ref, val);
    char key[sizeof(c->names_prefix) + PX_GLOBAL_NAME_MAX];
    snprintf(key, sizeof(key), "%s%s", c->names_prefix, name);
    px_etcd_res *res = NULL;
    px_err rv = c->e != NULL ? create(c, key, val, vlen, lease, &res)
                             : create_local(c, name, ref, &res);
    registered(c, name, ref, rv, res, owner);
    px_etcd_res_free(res);
    return rv;
}

px_err px_unregister_global(px_cluster *c, const char *name) {
    if (c == NULL || c->sys == NULL || !name_ok(name)) {
        return PX_EINVAL;
    }
    nng_mtx_lock(c->nmtx);
    gname **pp = slot_of(c, name, strlen(name));
    bool mine = *pp != NULL && (*pp)->mine;
    px_ref ref = mine ? (*pp)->ref : PX_REF_NIL;
    nng_mtx_unlock(c->nmtx);
    if (!mine) {
        return PX_ENOENT;
    }
    if (c->e == NULL) {
        nng_mtx_lock(c->nmtx);
        pp = slot_of(c, name, strlen(name));
        if (*pp != NULL) {
            forget_locked(c, pp, false); /* standalone: the table is all there is */
        }
        nng_mtx_unlock(c->nmtx);
        return PX_OK;
    }
    px_etcd_waiter *w = NULL;
    px_err rv = px_etcd_waiter_alloc(&w);
    if (rv != PX_OK) {
        return rv;
    }
    rv = delete_if_ref(c, name, ref, px_etcd_waiter_cb, w);
    if (rv != PX_OK) {
        px_etcd_waiter_free(w);
        return rv;
    }
    px_etcd_res *res = NULL;
    rv = px_etcd_waiter_take(w, &res);
    if (rv == PX_OK && !res->succeeded) {
        rv = PX_ENOENT; /* someone else's by now */
    }
    if (rv == PX_OK || rv == PX_ENOENT) {
        nng_mtx_lock(c->nmtx);
        pp = slot_of(c, name, strlen(name));
        if (*pp != NULL && (*pp)->mine) {
            forget_locked(c, pp, true);
        }
        nng_mtx_unlock(c->nmtx);
    }
    px_etcd_res_free(res);
    return rv;
}

px_err px_whereis_global(px_cluster *c, const char *name, px_ref *out) {
    if (c == NULL || name == NULL || out == NULL || c->nbuckets == NULL) {
        return PX_EINVAL;
    }
    size_t n = strlen(name);
    nng_mtx_lock(c->nmtx);
    gname *g = *slot_of(c, name, n);
    *out = g != NULL ? g->ref : PX_REF_NIL;
    nng_mtx_unlock(c->nmtx);
    return g != NULL ? PX_OK : PX_ENOENT;
}

px_err px_global_names(px_cluster *c, void (*fn)(void *arg, const char *name, px_ref ref),
                       void *arg) {
    if (c == NULL || fn == NULL) {
        return PX_EINVAL;
    }
    /* The table is NULL without a system, and again after stop (which
     * frees it under nmtx): read it under the lock. */
    nng_mtx_lock(c->nmtx);
    for (size_t i = 0; c->nbuckets != NULL && i < c->nbucket_count; i++) {
        for (const gname *g = c->nbuckets[i]; g != NULL; g = g->next) {
            fn(arg, g->name, g->ref);
        }
    }
    nng_mtx_unlock(c->nmtx);
    return PX_OK;
}
