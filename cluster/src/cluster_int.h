/*
 * cluster_int.h — the cluster's internal state, shared by membership.c
 * (registration, view, fencing, subscriptions) and names.c (global
 * names). Not an API.
 */
#ifndef PXC_CLUSTER_INT_H
#define PXC_CLUSTER_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <nng/nng.h>
#include <nng/supplemental/util/platform.h>

#include <plexus/cluster.h>
#include <plexus/plexus.h>

typedef struct member {
    px_member m;
    bool leaving;         /* its NodeInfo said so: a DELETE now means LEFT */
    int64_t seen_rev;     /* revision of the last full read or PUT that showed it */
    px_link_state link;   /* our link to it, as the transport last said */
    uint32_t link_inc;    /* the incarnation that link reached */
    bool down_pending;    /* its key went without a goodbye: DOWN once etcd says why */
    /* From its NodeInfo, for placement: "\n"-joined with a "\n" before and
     * after each name (so "\nname\n" finds one), NULL if none. */
    char *roles, *behaviors;
    uint64_t actors, mailbox_depth;
} member;

/* One global name in the local copy (a chained hash table). */
typedef struct gname {
    struct gname *next;
    px_ref ref;
    int64_t rev;   /* mod revision of the key */
    bool mine;     /* registered through this node (deleted when its actor stops) */
    char name[];
} gname;

/* A name this node forgot while etcd may still have it (names.c,
 * forget_locked): a PUT of it at or below rev is old news. */
typedef struct gtomb {
    struct gtomb *next;
    int64_t rev; /* the forgotten entry's revision */
    bool seen;   /* a full re-read still had the key at or below rev */
    char name[];
} gtomb;

/* A names watch event kept while the watch is held (pxc_names_hold). */
typedef struct gheld {
    struct gheld *next;
    int64_t rev;
    bool is_delete;
    px_ref ref;
    char name[];
} gheld;

/* A name a local actor waits for: its registration found the name held
 * (by an instance being failed over from, whose lease has not run out
 * yet); it is tried again when the name is deleted. */
typedef struct gwant {
    struct gwant *next;
    px_ref ref;
    char name[];
} gwant;

/* What the names keeper actor shares with the cluster: it outlives neither
 * (refs counts them), and `c` is NULL once the cluster stops. */
typedef struct pxc_keeper {
    nng_mtx *mtx;
    px_cluster *c;
    _Atomic int refs;
} pxc_keeper;

struct px_cluster {
    px_cluster_cfg cfg;
    px_system *sys;
    px_transport *tr;
    char *cluster, *node, *address;
    char *admin_address, *http_address; /* NodeInfo's, may be NULL */
    char **roles;
    size_t nroles;
    uint8_t pk[32];
    bool has_pk;
    uint32_t node_id;
    char prefix[160];
    char key[200];
    char names_prefix[160];
    px_etcd *e;
    px_etcd_watch *w;
    px_alarm *tick;
    nng_mtx *cbmtx;
    nng_mtx *mtx;
    nng_cv *cv;
    /* c->mtx */
    bool stopping;
    bool registered, registering, fenced, ka_inflight, synced;
    bool holding;            /* lease unconfirmed for a TTL, every peer cut off too */
    bool hold_grace;         /* holding, a peer reaches etcd again: one tick for our
                                own keepalive to answer before we fence */
    _Atomic uint64_t pub_actors; /* the load in the NodeInfo we put last */
    bool republish;          /* put NodeInfo again at the next tick */
    int64_t lease, reg_rev, old_lease;
    uint32_t inc;
    int64_t last_ok_ms;      /* monotonic: when the last acknowledged keepalive (or the
                              * grant) was sent — etcd's TTL runs from no earlier */
    int64_t ka_sent_ms, grant_sent_ms; /* monotonic: the keepalive / grant in flight */
    int64_t etcd_down_since; /* wall */
    member *mem;
    size_t nmem, capmem;
    px_member_event *audit;
    size_t audit_total;
    uint64_t fences, keepalives, ka_errors;
    px_ref *subs;            /* subscribed actors */
    size_t nsubs, capsubs;
    /* names (names.c): nmtx guards the table; a leaf lock */
    nng_mtx *nmtx;
    gname **nbuckets;
    size_t nbucket_count, ncount;
    bool names_synced;
    int64_t names_rev;       /* the last revision the names watch showed */
    gtomb *tombs;            /* forgotten while etcd may still have them */
    bool names_held;         /* pxc_names_hold: events are kept in held, not applied */
    gheld *held, *held_tail;
    gwant *wants;
    px_etcd_watch *nw;
    pxc_keeper *keeper;
    px_ref keeper_ref;
};

int64_t pxc_wall_ms(void);

/* For the mesh: calls fn for each member under the cluster lock (fn must
 * not call the cluster). */
void pxc_members_each(px_cluster *c, void (*fn)(void *arg, const member *m), void *arg);
/* names.c: registers `name` for the local actor ref without waiting (the
 * outcome is logged). PX_EINVAL, PX_EFENCED, PX_ENOMEM. */
px_err pxc_register_global_async(px_cluster *c, const char *name, px_ref ref);
/* This node's NodeInfo load and behaviors are read again at the next tick. */
void pxc_load_changed(px_cluster *c);

/* names.c: start the names watch and keeper (after registration), stop
 * them (before the etcd client closes), and forget this node's names (it
 * was fenced: they went with the old lease). */
px_err pxc_names_start(px_cluster *c, char *err, size_t errlen);
void pxc_names_stop(px_cluster *c);
void pxc_names_fenced(px_cluster *c);
/* Test aid: while held (pxc_names_hold), the names watch's events are
 * kept (in order) and not applied; pxc_names_rele applies them — a watch
 * that lags behind. Any thread; take c->nmtx (not with it held). */
void pxc_names_hold(px_cluster *c);
void pxc_names_rele(px_cluster *c);
/* Test aid: how many events are held now. */
size_t pxc_names_held(px_cluster *c);
/* Test aid: the names watch reconnects now (px_etcd_watch_kick). */
void pxc_names_kick(px_cluster *c);

#endif
