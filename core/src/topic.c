/*
 * topic.c — the node-local topic broker: px_subscribe, px_unsubscribe,
 * px_publish, px_system_publish_local, px_system_topics.
 *
 * Data: an open-addressing table (linear probing, at most half full) of
 * topic entries, found by a seeded 64-bit hash of the name. A topic exists
 * while it has a local subscriber; it holds its subscribers' refs in an
 * array (`subs`). Each actor keeps the topics it subscribes to in its ext,
 * so its end drops them without a search (PXI_AF_SUBSCRIBED: actors that
 * never subscribed pay one flag test).
 *
 * Publishers never lock and never write a shared line: a publication reads
 * the table, the topic and its subscriber array inside a read section, and
 * the read section is an epoch announcement in the publishing thread's own
 * reader slot (a worker's by its index; an outside thread's made on its
 * first publication and found again through a thread-local cache). The
 * broker's counters live in those slots too, written only by their owner.
 * A worker enters at its first publication in an actor's turn and leaves
 * when the turn ends (pxi_topics_turn_end), so an actor publishing in a
 * loop pays the entry's locked store once per turn (measured: 51 -> 43 ns
 * per publication with one subscriber).
 *
 * Writers (subscribe, unsubscribe, an actor's end) serialize on `mtx` and
 * never change what a reader may be reading, with one exception that is
 * safe by construction: a subscriber is appended in place (the ref is
 * written, then the count is published with release; readers read the
 * count first and never look past it). Everything else is copy-on-write:
 * a smaller array, a grown table, a topic's removal (its slot becomes a
 * tombstone) — and what was replaced is *retired*, not freed.
 *
 * Reclamation is epoch-based (Fraser's EBR, three limbo lists). A reader
 * stores the global epoch in its slot, then reads; leaving stores 0
 * (release). A writer unlinks, retires into limbo[epoch % 3], and may
 * advance the epoch from e to e + 1 when every slot is idle or at e, then
 * frees limbo[(e + 2) % 3], what was retired at e - 1. Dekker's pairing is
 * done with seq_cst operations, not fences (ThreadSanitizer does not model
 * fences, and gcc refuses them under it): the reader's announcement, its
 * loads of the table, a slot and a topic's array, the writer's unlinking
 * stores, the epoch and the writer's scan of the slots are all seq_cst. In
 * their single total order, a reader whose announcement a writer's scan did
 * not see announced after it, so its loads see every unlink made before the
 * scan; a reader the scan did see, at an older epoch, holds the epoch back
 * until it leaves; and one that read epoch e + 1 read it after the unlinks
 * of epoch e. So an object is freed only once every reader that might hold
 * it has left. On x86 the seq_cst loads are plain loads; the announcement
 * is one locked store, the price of a fence. No writer ever waits for a
 * reader: a writer advances when it can (up to twice per operation, so a
 * quiet broker frees at once), and what a busy reader still holds waits
 * for a later writer.
 *
 * Hooks: the router's topic_interest is told of a topic's first and last
 * local subscriber. The changes are queued under mtx in the order they
 * happen and handed to the hook with no lock held by one drainer at a time
 * (whoever finds the queue non-empty and nobody draining), so calls never
 * overlap and keep that order. The removal's event is made with the topic,
 * so an actor's end never needs memory to report it. The router's publish
 * hook and every delivery run inside the publisher's read section (no
 * lock): a slow hook only delays reclamation.
 *
 * Delivery: through pxi_send_from when an actor publishes (the worker's
 * outbox keeps its order with the actor's px_sends), else pxi_deliver;
 * never blocking. One subscriber gets the published message itself; n get
 * n - 1 clones and the original, all made before anything is delivered (so
 * an out-of-memory publication delivers nothing and the caller keeps it),
 * sharing a protobuf or heap payload through a pxi_share (msg.c).
 */
#include <stdlib.h>
#include <string.h>

#include <plexus/topic.h>

#include "topic_int.h"

/* Objects a reader may be looking at are retired, not freed: each starts
 * with this header, the link of its limbo list. */
typedef struct retired {
    struct retired *rnext;
    uint8_t type; /* R_* */
} retired;

enum { R_TOPIC = 1, R_SUBS = 2, R_TAB = 3 };

/* A topic's subscribers. ref[0..n) never change once n covers them. */
typedef struct subs {
    retired r;
    uint32_t cap;
    _Atomic uint32_t n; /* mtx writes (release); readers acquire */
    px_ref ref[];
} subs;

/* A queued topic_interest call. */
typedef struct tev {
    struct tev *next;
    int on;
    char name[];
} tev;

struct pxi_topic {
    retired r;
    uint64_t hash;
    _Atomic(subs *) subs; /* never NULL while linked; mtx writes (release) */
    tev *off;             /* mtx: the event of its removal, made with it */
    uint32_t len;
    char name[];          /* NUL-terminated */
};
typedef struct pxi_topic pxi_topic;

/* The table: mask + 1 slots, each NULL, TOMB or a live topic. */
typedef struct ttab {
    retired r;
    uint32_t mask;
    uint32_t used; /* mtx: slots not NULL (live + tombstones) */
    uint32_t live; /* mtx */
    _Atomic(pxi_topic *) slot[];
} ttab;

#define TOMB ((pxi_topic *)(uintptr_t)1)
#define TAB_MIN 16u
#define SUBS_MIN 4u

/* A reader slot. `epoch` is 0 (idle) or the epoch its owner entered at. */
typedef struct pxi_rslot {
    _Atomic uint64_t epoch; /* owner writes; writers read (acquire) */
    uint32_t depth;         /* owner: read sections may nest (hooks misused) */
    uint64_t owner;         /* outside slots: the owner's thread id (mtx) */
    struct pxi_rslot *next; /* outside slots list (mtx) */
    /* Counters: owner writes (load + store, no RMW); stats read. */
    _Atomic uint64_t published, received, deliveries, unrouted, refused;
} __attribute__((aligned(PXI_CACHELINE))) rslot;

struct pxi_topics {
    /* Immutable after alloc. */
    px_system *sys;
    uint64_t uid;  /* this broker among all made in the process */
    uint64_t seed; /* hash seed */
    rslot *wslots; /* one per worker, by index */
    uint32_t nworkers;
    nng_mtx *mtx;
    /* Read by every publication, written by writers under mtx. */
    _Atomic(ttab *) tab __attribute__((aligned(PXI_CACHELINE)));
    _Atomic uint64_t epoch; /* starts at 1; 0 is a slot's "idle" */
    /* Writers only (mtx). */
    rslot *outside __attribute__((aligned(PXI_CACHELINE)));
    retired *limbo[3];
    tev *evq, **evq_tail;
    bool draining;
};

/* Process-wide: ids of brokers and of outside threads, and each outside
 * thread's slot in the broker it last published to. */
static _Atomic uint64_t next_uid = 1, next_tid = 1;
static _Thread_local uint64_t tls_tid;
static _Thread_local struct {
    uint64_t uid;
    rslot *slot;
} tls_slot;

/* ---- names ---- */

static px_err topic_len(const char *topic, uint32_t *len) {
    if (topic == NULL) {
        return PX_EINVAL;
    }
    size_t n = strnlen(topic, PX_TOPIC_MAX + 1);
    if (n == 0 || n > PX_TOPIC_MAX) {
        return PX_EINVAL;
    }
    *len = (uint32_t)n;
    return PX_OK;
}

/* A seeded multiply-xorshift over 8-byte words. The tail is read with
 * fixed-size loads that overlap bytes already mixed (as wyhash does): a
 * variable-length copy of it cost a call and a store-forwarding stall, a
 * third of the publication's own time. */
static inline uint64_t load8(const char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline uint64_t load4(const char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static uint64_t topic_hash(uint64_t seed, const char *s, uint32_t len) {
    const uint64_t k = 0x9e3779b97f4a7c15ull;
    uint64_t h = seed ^ ((uint64_t)len * k);
    uint64_t tail;
    if (len >= 8) {
        for (uint32_t i = 0; i + 8 < len; i += 8) {
            h = (h ^ load8(s + i)) * 0xff51afd7ed558ccdull;
            h ^= h >> 32;
        }
        tail = load8(s + len - 8);
    } else if (len >= 4) {
        tail = load4(s) << 32 | load4(s + len - 4);
    } else {
        tail = (uint64_t)(uint8_t)s[0] << 16 | (uint64_t)(uint8_t)s[len / 2] << 8 |
               (uint8_t)s[len - 1];
    }
    h = (h ^ tail) * 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    h *= k;
    h ^= h >> 29;
    return h;
}

static bool topic_is(const pxi_topic *t, uint64_t h, const char *name, uint32_t len) {
    return t->hash == h && t->len == len && memcmp(t->name, name, len) == 0;
}

/* ---- the table (readers: inside a read section; writers: mtx) ---- */

static pxi_topic *tab_find(const ttab *tab, uint64_t h, const char *name, uint32_t len) {
    for (uint32_t i = (uint32_t)h & tab->mask;; i = (i + 1) & tab->mask) {
        pxi_topic *t = atomic_load_explicit(&tab->slot[i], memory_order_seq_cst);
        if (t == NULL) {
            return NULL; /* at most half the slots are used: always reached */
        }
        if (t != TOMB && topic_is(t, h, name, len)) {
            return t;
        }
    }
}

static void tab_put(ttab *tab, pxi_topic *t) {
    uint32_t i = (uint32_t)t->hash & tab->mask;
    pxi_topic *p;
    while ((p = atomic_load_explicit(&tab->slot[i], memory_order_relaxed)) != NULL && p != TOMB) {
        i = (i + 1) & tab->mask;
    }
    if (p == NULL) {
        tab->used++;
    }
    tab->live++;
    /* Release: a reader that finds t sees it whole. */
    atomic_store_explicit(&tab->slot[i], t, memory_order_release);
}

static void tab_remove(ttab *tab, pxi_topic *t) {
    uint32_t i = (uint32_t)t->hash & tab->mask;
    while (atomic_load_explicit(&tab->slot[i], memory_order_relaxed) != t) {
        i = (i + 1) & tab->mask;
    }
    atomic_store_explicit(&tab->slot[i], TOMB, memory_order_seq_cst); /* an unlink */
    tab->live--;
}

static ttab *tab_new(uint32_t cap) {
    ttab *tab = calloc(1, sizeof(*tab) + cap * sizeof(tab->slot[0]));
    if (tab != NULL) {
        tab->r.type = R_TAB;
        tab->mask = cap - 1;
        for (uint32_t i = 0; i < cap; i++) {
            atomic_init(&tab->slot[i], NULL);
        }
    }
    return tab;
}

static subs *subs_new(uint32_t cap) {
    subs *s = malloc(sizeof(*s) + cap * sizeof(s->ref[0]));
    if (s != NULL) {
        s->r.type = R_SUBS;
        s->cap = cap;
        atomic_init(&s->n, 0);
    }
    return s;
}

static tev *tev_new(const char *name, uint32_t len, int on) {
    tev *e = malloc(sizeof(*e) + len + 1);
    if (e != NULL) {
        e->next = NULL;
        e->on = on;
        memcpy(e->name, name, len + 1);
    }
    return e;
}

/* ---- reclamation (see the top) ---- */

static void retire(struct pxi_topics *b, retired *r) {
    uint64_t e = atomic_load_explicit(&b->epoch, memory_order_relaxed);
    r->rnext = b->limbo[e % 3];
    b->limbo[e % 3] = r;
}

static void free_retired(retired *r) {
    while (r != NULL) {
        retired *next = r->rnext;
        free(r); /* topic, subs and ttab each begin with their header */
        r = next;
    }
}

static bool slot_lets(const rslot *s, uint64_t e) {
    uint64_t v = atomic_load_explicit(&s->epoch, memory_order_seq_cst);
    return v == 0 || v == e;
}

/* mtx. */
static bool advance(struct pxi_topics *b) {
    uint64_t e = atomic_load_explicit(&b->epoch, memory_order_relaxed);
    for (uint32_t i = 0; i < b->nworkers; i++) {
        if (!slot_lets(&b->wslots[i], e)) {
            return false;
        }
    }
    for (const rslot *s = b->outside; s != NULL; s = s->next) {
        if (!slot_lets(s, e)) {
            return false;
        }
    }
    /* A reader that enters at e + 1 sees the unlinks made at e. */
    atomic_store_explicit(&b->epoch, e + 1, memory_order_seq_cst);
    free_retired(b->limbo[(e + 2) % 3]);
    b->limbo[(e + 2) % 3] = NULL;
    return true;
}

static void reclaim(struct pxi_topics *b) {
    if (advance(b)) {
        advance(b);
    }
}

/* ---- reader slots and sections ---- */

/* The slot of an outside thread (or a worker of another system): found in
 * the list, or made, once per thread and broker. NULL on allocation
 * failure. Slots of threads that ended stay idle until the broker goes. */
static rslot *outside_slot(struct pxi_topics *b) {
    if (tls_tid == 0) {
        tls_tid = atomic_fetch_add_explicit(&next_tid, 1, memory_order_relaxed);
    }
    nng_mtx_lock(b->mtx);
    rslot *s = b->outside;
    while (s != NULL && s->owner != tls_tid) {
        s = s->next;
    }
    if (s == NULL && (s = aligned_alloc(PXI_CACHELINE, sizeof(*s))) != NULL) {
        memset(s, 0, sizeof(*s));
        s->owner = tls_tid;
        s->next = b->outside;
        b->outside = s;
    }
    nng_mtx_unlock(b->mtx);
    if (s != NULL) {
        tls_slot.uid = b->uid;
        tls_slot.slot = s;
    }
    return s;
}

static inline rslot *reader_slot(struct pxi_topics *b, bool *worker) {
    pxi_worker *w = pxi_current_worker();
    *worker = w != NULL && w->sys == b->sys;
    if (*worker) {
        return &b->wslots[w->index];
    }
    if (tls_slot.uid == b->uid) {
        return tls_slot.slot;
    }
    return outside_slot(b);
}

static inline void enter(struct pxi_topics *b, rslot *s) {
    if (s->depth++ == 0) {
        /* seq_cst, and so are the reads that follow: see the top. */
        atomic_store_explicit(&s->epoch, atomic_load_explicit(&b->epoch, memory_order_seq_cst),
                              memory_order_seq_cst);
    }
}

static inline void leave(rslot *s) {
    if (--s->depth == 0) {
        atomic_store_explicit(&s->epoch, 0, memory_order_release);
    }
}

/* A worker's slot, entered by a publication and held until the turn ends:
 * an actor that publishes n times in a turn pays one entry, not n. The
 * section then spans user code, which is harmless — writers never wait for
 * readers; what this worker holds back is freed by a later writer. */
_Thread_local rslot *pxi_topics_held;

void pxi_topics_release(void) {
    leave(pxi_topics_held);
    pxi_topics_held = NULL;
}

/* Enters the read section for a publication. Returns the slot to leave
 * afterwards, or NULL for a held worker slot (left at the turn's end). */
static inline rslot *enter_publication(struct pxi_topics *b, rslot *s, bool worker) {
    if (!worker) {
        enter(b, s);
        return s;
    }
    if (pxi_topics_held != s) {
        enter(b, s); /* not yet in this turn (depth 0 -> 1) */
        pxi_topics_held = s;
    }
    return NULL;
}

static inline void bump(_Atomic uint64_t *c) {
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

/* ---- interest events ---- */

static void ev_queue(struct pxi_topics *b, tev *e) {
    e->next = NULL;
    *b->evq_tail = e;
    b->evq_tail = &e->next;
}

/* Hands queued events to the router's topic_interest, unless another
 * thread is at it (it will take ours too). No lock held during a call. */
static void ev_drain(struct pxi_topics *b) {
    px_system *sys = b->sys;
    nng_mtx_lock(b->mtx);
    if (b->draining || b->evq == NULL) {
        nng_mtx_unlock(b->mtx);
        return;
    }
    b->draining = true;
    tev *e;
    while ((e = b->evq) != NULL) {
        b->evq = e->next;
        if (b->evq == NULL) {
            b->evq_tail = &b->evq;
        }
        nng_mtx_unlock(b->mtx);
        const px_router *r = pxi_router_enter(sys);
        if (r != NULL && r->topic_interest != NULL) {
            r->topic_interest(r->arg, e->name, e->on);
        }
        pxi_router_leave(sys, r);
        free(e);
        nng_mtx_lock(b->mtx);
    }
    b->draining = false;
    nng_mtx_unlock(b->mtx);
}

/* ---- writers (mtx) ---- */

/* Room in the table for one more topic: a larger table, tombstones
 * dropped, if it would be more than half full. */
static bool tab_reserve(struct pxi_topics *b) {
    ttab *old = atomic_load_explicit(&b->tab, memory_order_relaxed);
    if ((old->used + 1) * 2 <= old->mask + 1) {
        return true;
    }
    uint32_t cap = TAB_MIN;
    while (cap < (old->live + 1) * 4) {
        cap *= 2;
    }
    ttab *tab = tab_new(cap);
    if (tab == NULL) {
        return false;
    }
    for (uint32_t i = 0; i <= old->mask; i++) {
        pxi_topic *t = atomic_load_explicit(&old->slot[i], memory_order_relaxed);
        if (t != NULL && t != TOMB) {
            tab_put(tab, t);
        }
    }
    atomic_store_explicit(&b->tab, tab, memory_order_seq_cst); /* unlinks the old one */
    retire(b, &old->r);
    return true;
}

static px_err topic_add(struct pxi_topics *b, uint64_t h, const char *name, uint32_t len,
                        px_ref me, pxi_topic **out) {
    if (!tab_reserve(b)) {
        return PX_ENOMEM;
    }
    pxi_topic *t = malloc(sizeof(*t) + len + 1);
    subs *s = subs_new(SUBS_MIN);
    tev *on = tev_new(name, len, 1);
    tev *off = tev_new(name, len, 0);
    if (t == NULL || s == NULL || on == NULL || off == NULL) {
        free(t);
        free(s);
        free(on);
        free(off);
        return PX_ENOMEM;
    }
    s->ref[0] = me;
    atomic_init(&s->n, 1);
    t->r.type = R_TOPIC;
    t->hash = h;
    atomic_init(&t->subs, s);
    t->off = off;
    t->len = len;
    memcpy(t->name, name, len);
    t->name[len] = '\0';
    tab_put(atomic_load_explicit(&b->tab, memory_order_relaxed), t);
    ev_queue(b, on);
    *out = t;
    return PX_OK;
}

static px_err subs_add(struct pxi_topics *b, pxi_topic *t, px_ref me) {
    subs *s = atomic_load_explicit(&t->subs, memory_order_relaxed);
    uint32_t n = atomic_load_explicit(&s->n, memory_order_relaxed);
    if (n < s->cap) {
        s->ref[n] = me; /* past n: no reader looks here yet */
        atomic_store_explicit(&s->n, n + 1, memory_order_release);
        return PX_OK;
    }
    if (s->cap > UINT32_MAX / 2) {
        return PX_ENOMEM;
    }
    subs *ns = subs_new(s->cap * 2);
    if (ns == NULL) {
        return PX_ENOMEM;
    }
    memcpy(ns->ref, s->ref, n * sizeof(s->ref[0]));
    ns->ref[n] = me;
    atomic_init(&ns->n, n + 1);
    atomic_store_explicit(&t->subs, ns, memory_order_seq_cst); /* unlinks s */
    retire(b, &s->r);
    return PX_OK;
}

/* Removes `me` from t; the last subscriber takes the topic with it. false
 * if a smaller array could not be allocated (me stays). */
static bool subs_remove(struct pxi_topics *b, pxi_topic *t, px_ref me) {
    subs *s = atomic_load_explicit(&t->subs, memory_order_relaxed);
    uint32_t n = atomic_load_explicit(&s->n, memory_order_relaxed);
    uint32_t i = 0;
    while (i < n && !px_ref_eq(s->ref[i], me)) {
        i++;
    }
    if (i == n) {
        return true;
    }
    if (n == 1) {
        tab_remove(atomic_load_explicit(&b->tab, memory_order_relaxed), t);
        ev_queue(b, t->off);
        t->off = NULL;
        retire(b, &s->r);
        retire(b, &t->r);
        return true;
    }
    uint32_t cap = s->cap;
    if (cap > SUBS_MIN && n - 1 <= cap / 4) {
        cap /= 2;
    }
    subs *ns = subs_new(cap);
    if (ns == NULL) {
        return false;
    }
    memcpy(ns->ref, s->ref, i * sizeof(s->ref[0]));
    memcpy(ns->ref + i, s->ref + i + 1, (n - i - 1) * sizeof(s->ref[0]));
    atomic_init(&ns->n, n - 1);
    atomic_store_explicit(&t->subs, ns, memory_order_seq_cst); /* unlinks s */
    retire(b, &s->r);
    return true;
}

/* ---- public: actor context ---- */

/* The index of topic `name` among the actor's own, or -1. Owner context:
 * a topic stays linked while the actor subscribes to it. */
static int own_find(const pxi_actor_ext *x, uint64_t h, const char *name, uint32_t len) {
    for (uint32_t i = 0; x != NULL && i < x->ntopics; i++) {
        if (topic_is(x->topics[i], h, name, len)) {
            return (int)i;
        }
    }
    return -1;
}

px_err px_subscribe(px_ctx *ctx, const char *topic_name) {
    uint32_t len;
    if (ctx == NULL || topic_len(topic_name, &len) != PX_OK) {
        return PX_EINVAL;
    }
    px_actor *a = (px_actor *)ctx;
    struct pxi_topics *b = a->sys->topics;
    uint64_t h = topic_hash(b->seed, topic_name, len);
    pxi_actor_ext *x = pxi_ext_get(a);
    if (x == NULL) {
        return PX_ENOMEM;
    }
    if (own_find(x, h, topic_name, len) >= 0) {
        return PX_OK;
    }
    if (x->ntopics == x->captopics) {
        uint32_t ncap = x->captopics ? x->captopics * 2 : 4;
        pxi_topic **nt = realloc(x->topics, ncap * sizeof(*nt));
        if (nt == NULL) {
            return PX_ENOMEM;
        }
        x->topics = nt;
        x->captopics = ncap;
    }
    px_ref me = pxi_ref_of(a);
    nng_mtx_lock(b->mtx);
    pxi_topic *t = tab_find(atomic_load_explicit(&b->tab, memory_order_relaxed), h, topic_name, len);
    px_err rv = t != NULL ? subs_add(b, t, me) : topic_add(b, h, topic_name, len, me, &t);
    reclaim(b);
    nng_mtx_unlock(b->mtx);
    if (rv != PX_OK) {
        return rv;
    }
    x->topics[x->ntopics++] = t;
    a->flags |= PXI_AF_SUBSCRIBED;
    ev_drain(b);
    return PX_OK;
}

px_err px_unsubscribe(px_ctx *ctx, const char *topic_name) {
    uint32_t len;
    if (ctx == NULL || topic_len(topic_name, &len) != PX_OK) {
        return PX_EINVAL;
    }
    px_actor *a = (px_actor *)ctx;
    struct pxi_topics *b = a->sys->topics;
    pxi_actor_ext *x = a->ext;
    int i = own_find(x, topic_hash(b->seed, topic_name, len), topic_name, len);
    if (i < 0) {
        return PX_ENOENT;
    }
    nng_mtx_lock(b->mtx);
    bool done = subs_remove(b, x->topics[i], pxi_ref_of(a));
    reclaim(b);
    nng_mtx_unlock(b->mtx);
    if (!done) {
        return PX_ENOMEM;
    }
    x->topics[i] = x->topics[--x->ntopics];
    if (x->ntopics == 0) {
        a->flags &= ~PXI_AF_SUBSCRIBED;
    }
    ev_drain(b);
    return PX_OK;
}

void pxi_topics_actor_gone(px_actor *a) {
    pxi_actor_ext *x = a->ext;
    a->flags &= ~PXI_AF_SUBSCRIBED;
    if (x == NULL || x->ntopics == 0) {
        return;
    }
    struct pxi_topics *b = a->sys->topics;
    px_ref me = pxi_ref_of(a);
    uint32_t kept = 0;
    nng_mtx_lock(b->mtx);
    for (uint32_t i = 0; i < x->ntopics; i++) {
        if (!subs_remove(b, x->topics[i], me)) {
            kept++;
        }
    }
    reclaim(b);
    nng_mtx_unlock(b->mtx);
    x->ntopics = 0;
    if (kept > 0) {
        char r[48];
        px_log(a->sys, PX_LOG_CRIT,
               "out of memory: ended actor %s stays subscribed to %u topic(s); "
               "publications to it become dead letters",
               px_ref_format(me, r, sizeof(r)), kept);
    }
    ev_drain(b);
}

/* ---- publishing ---- */

/* Clones of m for k more recipients, chained through link.next, after
 * making m's payload shareable. On failure nothing is left over and m is
 * as it was. */
static px_err make_copies(px_msg *m, uint32_t k, px_msg **out) {
    if (!pxi_msg_share(m)) {
        return PX_ENOMEM;
    }
    px_msg *head = NULL;
    for (uint32_t i = 0; i < k; i++) {
        px_msg *c = pxi_msg_clone(m);
        if (c == NULL) {
            while (head != NULL) {
                px_msg *next = pxi_msg_of(atomic_load_explicit(&head->link.next,
                                                                memory_order_relaxed));
                px_msg_free(head);
                head = next;
            }
            pxi_msg_unshare(m);
            return PX_ENOMEM;
        }
        atomic_store_explicit(&c->link.next, head != NULL ? &head->link : NULL,
                              memory_order_relaxed);
        head = c;
    }
    *out = head;
    return PX_OK;
}

/* Hands m to one subscriber; never blocks. */
static void deliver_one(px_system *sys, px_actor *self, rslot *s, px_ref to, px_msg *m) {
    px_err rv = self != NULL ? pxi_send_from(self, to, &m) : pxi_deliver(sys, to, &m, false);
    if (rv == PX_OK) {
        bump(&s->deliveries);
    } else {
        bump(&s->refused); /* full: counted in `rejected` by the mailbox */
        px_msg_free(m);
    }
}

/* px_publish (remote = false) and px_system_publish_local (remote = true:
 * no router hook, no sender, current-incarnation subscribers only). */
static px_err publish(px_system *sys, const char *topic_name, px_msg **mp, bool remote) {
    uint32_t len;
    if (sys == NULL || mp == NULL || *mp == NULL || topic_len(topic_name, &len) != PX_OK ||
        ((*mp)->kind != PX_MSG_BYTES && (*mp)->kind != PX_MSG_PROTO)) {
        return PX_EINVAL;
    }
    px_err rv = pxi_check_msg(sys, mp);
    if (rv != PX_OK) {
        return rv;
    }
    px_actor *self = remote ? NULL : pxi_tls_actor;
    if (self != NULL && self->sys != sys) {
        self = NULL; /* an actor of another system in this process */
    }
    if (!remote && self == NULL && atomic_load_explicit(&sys->closing, memory_order_relaxed)) {
        atomic_fetch_add_explicit(&sys->rejected, 1, memory_order_relaxed);
        return PX_ECLOSED;
    }
    struct pxi_topics *b = sys->topics;
    bool worker;
    rslot *s = reader_slot(b, &worker);
    if (s == NULL) {
        return PX_ENOMEM;
    }
    px_msg *m = *mp;
    m->sender = self != NULL ? pxi_ref_of(self) : PX_REF_NIL;
    m->corr = 0;
    m->flags &= PXI_MF_PAYLOAD; /* not an ask, not a reply */
    uint32_t cur = pxi_node_inc(sys);
    uint64_t h = topic_hash(b->seed, topic_name, len);

    rslot *to_leave = enter_publication(b, s, worker);
    pxi_topic *t = tab_find(atomic_load_explicit(&b->tab, memory_order_seq_cst), h, topic_name, len);
    const subs *ss = t != NULL ? atomic_load_explicit(&t->subs, memory_order_seq_cst) : NULL;
    uint32_t n = ss != NULL ? atomic_load_explicit(&ss->n, memory_order_acquire) : 0;
    uint32_t k = n; /* recipients */
    if (remote) {
        k = 0;
        for (uint32_t i = 0; i < n; i++) {
            k += ss->ref[i].node_inc == cur;
        }
    }
    px_msg *copies = NULL;
    if (k > 1 && (rv = make_copies(m, k - 1, &copies)) != PX_OK) {
        if (to_leave != NULL) {
            leave(to_leave);
        }
        return rv;
    }
    bool routed = false;
    if (!remote && (self == NULL || self->node_inc == cur)) {
        const px_router *r = pxi_router_enter(sys);
        if (r != NULL && r->publish != NULL) {
            r->publish(r->arg, topic_name, m);
            routed = true;
        }
        pxi_router_leave(sys, r);
    }
    bump(remote ? &s->received : &s->published);
    if (k == 0) {
        if (!routed) {
            bump(&s->unrouted);
        }
        px_msg_free(m);
    }
    for (uint32_t i = 0; k > 0 && i < n; i++) {
        if (remote && ss->ref[i].node_inc != cur) {
            continue; /* other nodes take actors of earlier incarnations for dead */
        }
        px_msg *c = m;
        if (copies != NULL) {
            c = copies;
            copies = pxi_msg_of(atomic_load_explicit(&c->link.next, memory_order_relaxed));
        }
        deliver_one(sys, self, s, ss->ref[i], c);
    }
    if (to_leave != NULL) {
        leave(to_leave);
    }
    *mp = NULL;
    return PX_OK;
}

px_err px_publish(px_system *sys, const char *topic_name, px_msg **msg) {
    return publish(sys, topic_name, msg, false);
}

px_err px_system_publish_local(px_system *sys, const char *topic_name, px_msg **msg) {
    return publish(sys, topic_name, msg, true);
}

px_err px_system_topics(px_system *sys, void (*fn)(void *arg, const char *topic), void *arg) {
    if (sys == NULL || fn == NULL) {
        return PX_EINVAL;
    }
    struct pxi_topics *b = sys->topics;
    nng_mtx_lock(b->mtx);
    const ttab *tab = atomic_load_explicit(&b->tab, memory_order_relaxed);
    size_t bytes = 0;
    for (uint32_t i = 0; i <= tab->mask; i++) {
        const pxi_topic *t = atomic_load_explicit(&tab->slot[i], memory_order_relaxed);
        if (t != NULL && t != TOMB) {
            bytes += t->len + 1;
        }
    }
    char *names = malloc(bytes > 0 ? bytes : 1);
    if (names == NULL) {
        nng_mtx_unlock(b->mtx);
        return PX_ENOMEM;
    }
    char *p = names;
    for (uint32_t i = 0; i <= tab->mask; i++) {
        const pxi_topic *t = atomic_load_explicit(&tab->slot[i], memory_order_relaxed);
        if (t != NULL && t != TOMB) {
            memcpy(p, t->name, t->len + 1);
            p += t->len + 1;
        }
    }
    nng_mtx_unlock(b->mtx);
    for (const char *q = names; q < p; q += strlen(q) + 1) {
        fn(arg, q);
    }
    free(names);
    return PX_OK;
}

/* ---- lifecycle and stats ---- */

px_err pxi_topics_alloc(px_system *sys, struct pxi_topics **out) {
    *out = NULL;
    size_t size = (sizeof(struct pxi_topics) + PXI_CACHELINE - 1) & ~(size_t)(PXI_CACHELINE - 1);
    struct pxi_topics *b = aligned_alloc(PXI_CACHELINE, size);
    if (b == NULL) {
        return PX_ENOMEM;
    }
    memset(b, 0, sizeof(*b));
    b->sys = sys;
    b->uid = atomic_fetch_add_explicit(&next_uid, 1, memory_order_relaxed);
    b->seed = ((uint64_t)nng_random() << 32) | nng_random();
    b->nworkers = sys->nworkers;
    b->wslots = aligned_alloc(PXI_CACHELINE, sizeof(rslot) * b->nworkers);
    ttab *tab = tab_new(TAB_MIN);
    if (b->wslots == NULL || tab == NULL || nng_mtx_alloc(&b->mtx) != 0) {
        free(tab);
        free(b->wslots);
        free(b);
        return PX_ENOMEM;
    }
    memset(b->wslots, 0, sizeof(rslot) * b->nworkers);
    atomic_init(&b->tab, tab);
    atomic_init(&b->epoch, 1);
    b->evq_tail = &b->evq;
    *out = b;
    return PX_OK;
}

void pxi_topics_free(struct pxi_topics *b) {
    if (b == NULL) {
        return;
    }
    ttab *tab = atomic_load_explicit(&b->tab, memory_order_relaxed);
    for (uint32_t i = 0; i <= tab->mask; i++) {
        pxi_topic *t = atomic_load_explicit(&tab->slot[i], memory_order_relaxed);
        if (t != NULL && t != TOMB) {
            free(atomic_load_explicit(&t->subs, memory_order_relaxed));
            free(t->off);
            free(t);
        }
    }
    free(tab);
    for (int i = 0; i < 3; i++) {
        free_retired(b->limbo[i]);
    }
    while (b->evq != NULL) {
        tev *e = b->evq;
        b->evq = e->next;
        free(e);
    }
    while (b->outside != NULL) {
        rslot *s = b->outside;
        b->outside = s->next;
        free(s);
    }
    free(b->wslots);
    nng_mtx_free(b->mtx);
    free(b);
}

static void add_counts(const rslot *s, px_system_stats *out) {
    out->published += atomic_load_explicit(&s->published, memory_order_relaxed);
    out->publish_received += atomic_load_explicit(&s->received, memory_order_relaxed);
    out->publish_deliveries += atomic_load_explicit(&s->deliveries, memory_order_relaxed);
    out->publish_unrouted += atomic_load_explicit(&s->unrouted, memory_order_relaxed);
    out->publish_refused += atomic_load_explicit(&s->refused, memory_order_relaxed);
}

void pxi_topics_stats(struct pxi_topics *b, px_system_stats *out) {
    for (uint32_t i = 0; i < b->nworkers; i++) {
        add_counts(&b->wslots[i], out);
    }
    nng_mtx_lock(b->mtx);
    for (const rslot *s = b->outside; s != NULL; s = s->next) {
        add_counts(s, out);
    }
    nng_mtx_unlock(b->mtx);
}
