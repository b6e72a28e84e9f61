/*
 * link.c — the transport: a listener, one outbound link per configured
 * peer, over nng byte streams (tcp or ipc) with our own framing (wire.h).
 *
 * Why byte streams and not an SP pattern: nng's pair1 hands each message
 * across several of its internal threads (a wake-up each on this machine:
 * ~30k msgs/s, 131-156 us p50 round trip with one actor message per nng
 * message, ../shared/notes/deps.md §2). A stream with aio callbacks costs
 * one wake-up per read or write, and batching many envelopes per frame is
 * ours to decide.
 *
 * Shape:
 *  - Each node dials each of its peers and sends on that connection (the
 *    dialer side); connections it accepts are for receiving (the listener
 *    side answers pings with pongs and sends nothing else).
 *  - Senders (router_send, any thread) append to the peer's bounded queue
 *    and start a write if none is in flight. When the write completes, the
 *    completion packs everything queued meanwhile into one frame: a lone
 *    message goes out at once, a burst shares frames.
 *  - Reads run in the stream's receive callback: preamble, handshake, then
 *    frames; envelopes are delivered to local actors from there.
 *  - A tick (every heartbeat_ms) pings idle links, drops silent ones, dials
 *    peers that are due, and frees closed connections (a callback cannot
 *    stop its own aio).
 * Locks: t->mtx guards the peer list states and the connection list; each
 * connection's mtx guards its buffers and state (an outbound connection
 * shares its peer's lock, which also guards the peer's queue).
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nng/nng.h>
#include <nng/supplemental/util/platform.h>
#include <sodium.h>

#include <plexus/plexus.h>
#include <plexus/transport.h>

#include "wire.h"

enum { C_HS = 0, C_AUTH = 1, C_UP = 2, C_CLOSED = 3 };
enum { R_PRE = 0, R_HSLEN, R_HS, R_LEN, R_BODY };

typedef struct txent {
    px_ref to, from;
    uint64_t corr;
    uint32_t flags, tag;
    const char *type;  /* descriptor name (static) or NULL for bytes */
    px_msg *m;         /* the message (a bytes payload is borrowed from it) */
    uint8_t *packed;   /* proto: the packed payload (owned) */
    size_t len;
} txent;

typedef struct peer peer;
typedef struct conn conn;

struct conn {
    px_transport *t;
    peer *p;      /* outbound: its peer; inbound: the peer it proved to be */
    int role;
    nng_stream *s;
    nng_aio *rx_aio, *tx_aio;
    nng_mtx *mtx; /* outbound: the peer's */
    bool own_mtx;
    int state;
    pxn_hs hs;
    pxn_cipher rx, tx;
    /* reading */
    int rphase;
    uint8_t *rbuf;
    size_t rcap, rhave, rneed;
    /* writing: wcur is on the wire, wnext collects sealed frames */
    uint8_t *wcur, *wnext;
    size_t wcur_len, wcur_off, wcur_cap, wnext_len, wnext_cap;
    bool writing;
    int64_t last_rx_ms, last_ping_ms;
    uint64_t ping_seq;
    char who[96]; /* for the log: peer name or remote address */
    conn *next;
};

struct peer {
    px_transport *t;
    char *name, *address;
    uint8_t pk[PX_PUBKEY_BYTES];
    uint32_t node_id;
    uint32_t node_inc; /* from its last handshake, 0 = never */
    px_link_state state;
    nng_mtx *mtx;
    conn *c; /* the outbound connection, if any */
    nng_stream_dialer *d;
    nng_aio *dial_aio;
    bool dialing;
    int64_t retry_at_ms;
    uint32_t backoff_ms;
    txent *q;
    size_t qhead, qlen, qcap;
    uint64_t qbytes;
};

struct px_transport {
    px_system *sys;
    px_transport_cfg cfg;
    pxn_self self;
    char *listen, *bound;
    nng_mtx *mtx;
    nng_stream_listener *lst;
    nng_aio *acc_aio, *tick_aio;
    peer *peers;
    size_t npeers;
    conn *conns;
    atomic_bool stopping;
    atomic_int senders;
    _Atomic uint64_t msgs_out, msgs_in, frames_out, frames_in, bytes_out, bytes_in, handshakes,
        refused, bad_frames, undeliverable, pings, pongs;
};

#define CNT(t, f, n) atomic_fetch_add_explicit(&(t)->f, (n), memory_order_relaxed)

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- buffers ---- */

static bool reserve(uint8_t **b, size_t *cap, size_t need) {
    if (need <= *cap) {
        return true;
    }
    size_t nc = *cap ? *cap : 4096;
    while (nc < need) {
        nc *= 2;
    }
    uint8_t *nb = realloc(*b, nc);
    if (nb == NULL) {
        return false;
    }
    *b = nb;
    *cap = nc;
    return true;
}

static void txent_free(txent *e) {
    px_msg_free(e->m);
    free(e->packed);
    e->m = NULL;
    e->packed = NULL;
}

/* ---- connections ---- */

static void conn_close_locked(conn *c, const char *why, px_log_level lvl);
static void rx_start(conn *c);
static void tx_kick_locked(conn *c);

static void rx_cb(void *arg);
static void tx_cb(void *arg);

static conn *conn_new(px_transport *t, nng_stream *s, int role, peer *p) {
    conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return NULL;
    }
    c->t = t;
    c->p = p;
    c->role = role;
    c->s = s;
    if (p != NULL) {
        c->mtx = p->mtx;
    } else if (nng_mtx_alloc(&c->mtx) == 0) {
        c->own_mtx = true;
    } else {
        free(c);
        return NULL;
    }
    if (nng_aio_alloc(&c->rx_aio, rx_cb, c) != 0 || nng_aio_alloc(&c->tx_aio, tx_cb, c) != 0) {
        nng_aio_free(c->rx_aio);
        if (c->own_mtx) {
            nng_mtx_free(c->mtx);
        }
        free(c);
        return NULL;
    }
    c->last_rx_ms = c->last_ping_ms = now_ms();
    if (p != NULL) {
        snprintf(c->who, sizeof(c->who), "%s (%s)", p->name, p->address);
    } else {
        nng_sockaddr sa;
        char addr[64] = "?";
        if (nng_stream_get_addr(s, NNG_OPT_REMADDR, &sa) == 0 && sa.s_family == NNG_AF_INET) {
            uint8_t *ip = (uint8_t *)&sa.s_in.sa_addr;
            snprintf(addr, sizeof(addr), "%u.%u.%u.%u:%u", ip[0], ip[1], ip[2], ip[3],
                     (unsigned)((sa.s_in.sa_port & 0xff) << 8 | sa.s_in.sa_port >> 8));
        } else if (sa.s_family == NNG_AF_IPC) {
            snprintf(addr, sizeof(addr), "ipc");
        }
        snprintf(c->who, sizeof(c->who), "inbound from %s", addr);
    }
    nng_mtx_lock(t->mtx);
    c->next = t->conns;
    t->conns = c;
    nng_mtx_unlock(t->mtx);
    return c;
}

/* Frees c: only where no callback of it can run (the tick, stop). */
static void conn_free(conn *c) {
    nng_aio_stop(c->rx_aio);
    nng_aio_stop(c->tx_aio);
    nng_stream_free(c->s);
    nng_aio_free(c->rx_aio);
    nng_aio_free(c->tx_aio);
    pxn_hs_fini(&c->hs);
    sodium_memzero(&c->rx, sizeof(c->rx));
    sodium_memzero(&c->tx, sizeof(c->tx));
    free(c->rbuf);
    free(c->wcur);
    free(c->wnext);
    if (c->own_mtx) {
        nng_mtx_free(c->mtx);
    }
    free(c);
}

/* Appends raw bytes (preamble, handshake frames) to the pending output. */
static bool out_raw_locked(conn *c, const void *b, size_t n) {
    if (!reserve(&c->wnext, &c->wnext_cap, c->wnext_len + n)) {
        return false;
    }
    memcpy(c->wnext + c->wnext_len, b, n);
    c->wnext_len += n;
    return true;
}

/* Packs and seals a Frame into the pending output. */
static bool out_frame_locked(conn *c, const Plexus__Frame *f) {
    size_t n = plexus__frame__get_packed_size(f);
    size_t total = pxn_sealed_len(&c->tx, n);
    if (n + PXN_TAG_BYTES > c->t->cfg.max_frame ||
        !reserve(&c->wnext, &c->wnext_cap, c->wnext_len + total)) {
        return false;
    }
    uint8_t *at = c->wnext + c->wnext_len;
    plexus__frame__pack(f, at + PXN_LEN_BYTES);
    pxn_seal(&c->tx, at + PXN_LEN_BYTES, n, at);
    c->wnext_len += total;
    CNT(c->t, frames_out, 1);
    return true;
}

static void out_hello_locked(conn *c) {
    uint8_t len[4];
    pxn_put_u32(len, (uint32_t)c->hs.mine_len);
    if (!out_raw_locked(c, PXN_PREAMBLE, PXN_PREAMBLE_LEN) || !out_raw_locked(c, len, 4) ||
        !out_raw_locked(c, c->hs.mine, c->hs.mine_len)) {
        conn_close_locked(c, "out of memory", PX_LOG_ERROR);
    }
}

/* ---- the outbound queue -> frames ---- */

/* Moves queued envelopes of c's peer into one Batch frame (as many as fit
 * in max_frame). Lock held. */
static void pack_batch_locked(conn *c) {
    peer *p = c->p;
    px_transport *t = c->t;
    if (p == NULL || p->qlen == 0 || c->role != PXN_DIALER || p->c != c) {
        return; /* only a peer's own outbound connection carries its queue */
    }
    uint32_t maxf = t->cfg.max_frame < c->hs.peer->max_frame ? t->cfg.max_frame
                                                              : c->hs.peer->max_frame;
    size_t budget = maxf - PXN_TAG_BYTES - 16, used = 0, k = 0;
    while (k < p->qlen) {
        txent *e = &p->q[(p->qhead + k) % p->qcap];
        size_t est = e->len + (e->type ? strlen(e->type) : 0) + 96;
        if (k > 0 && used + est > budget) {
            break;
        }
        used += est;
        k++;
    }
    Plexus__Envelope *env = calloc(k, sizeof(*env));
    Plexus__Envelope **envp = calloc(k, sizeof(*envp));
    Plexus__ActorRef *refs = calloc(2 * k, sizeof(*refs));
    if (env == NULL || envp == NULL || refs == NULL) {
        free(env);
        free(envp);
        free(refs);
        return; /* retried at the next kick */
    }
    size_t n = 0;
    for (size_t i = 0; i < k; i++) {
        txent *e = &p->q[(p->qhead + i) % p->qcap];
        if (p->node_inc != 0 && e->to.node_inc != p->node_inc) {
            continue; /* an older incarnation: dead-lettered below */
        }
        Plexus__Envelope *v = &env[n];
        plexus__envelope__init(v);
        Plexus__ActorRef *to = &refs[2 * n], *from = &refs[2 * n + 1];
        plexus__actor_ref__init(to);
        plexus__actor_ref__init(from);
        *to = (Plexus__ActorRef){to->base, e->to.node, e->to.node_inc, e->to.id, e->to.inc};
        *from = (Plexus__ActorRef){from->base, e->from.node, e->from.node_inc, e->from.id,
                                   e->from.inc};
        v->to = to;
        v->from = px_ref_is_nil(e->from) ? NULL : from;
        v->corr = e->corr;
        v->flags = e->flags;
        v->type = (char *)(uintptr_t)(e->type ? e->type : "");
        v->tag = e->tag;
        v->payload.len = e->len;
        v->payload.data = e->packed ? e->packed : (uint8_t *)(uintptr_t)px_msg_data(e->m, NULL);
        envp[n++] = v;
    }
    Plexus__Batch b = PLEXUS__BATCH__INIT;
    b.n_envelopes = n;
    b.envelopes = envp;
    Plexus__Frame f = PLEXUS__FRAME__INIT;
    f.body_case = PLEXUS__FRAME__BODY_BATCH;
    f.batch = &b;
    bool ok = n == 0 || out_frame_locked(c, &f);
    free(env);
    free(envp);
    free(refs);
    if (!ok) {
        conn_close_locked(c, "out of memory packing a frame", PX_LOG_ERROR);
        return;
    }
    CNT(t, msgs_out, n);
    for (size_t i = 0; i < k; i++) {
        txent *e = &p->q[p->qhead];
        p->qbytes -= e->len;
        if (p->node_inc != 0 && e->to.node_inc != p->node_inc) {
            px_system_dead_letter(t->sys, e->to, e->m, PX_EDEAD);
            e->m = NULL;
        }
        txent_free(e);
        p->qhead = (p->qhead + 1) % p->qcap;
        p->qlen--;
    }
}

/* Starts a write of everything pending, if none is in flight. Lock held. */
static void tx_kick_locked(conn *c) {
    if (c->writing || c->state == C_CLOSED) {
        return;
    }
    if (c->state == C_UP) {
        pack_batch_locked(c);
    }
    if (c->wnext_len == 0 || c->state == C_CLOSED) {
        return;
    }
    uint8_t *b = c->wcur;
    size_t cap = c->wcur_cap;
    c->wcur = c->wnext;
    c->wcur_cap = c->wnext_cap;
    c->wcur_len = c->wnext_len;
    c->wcur_off = 0;
    c->wnext = b;
    c->wnext_cap = cap;
    c->wnext_len = 0;
    c->writing = true;
    nng_iov iov = {c->wcur, c->wcur_len};
    nng_aio_set_iov(c->tx_aio, 1, &iov);
    nng_stream_send(c->s, c->tx_aio);
}

static void tx_cb(void *arg) {
    conn *c = arg;
    nng_mtx_lock(c->mtx);
    int rv = nng_aio_result(c->tx_aio);
    if (rv != 0) {
        c->writing = false;
        conn_close_locked(c, nng_strerror(rv), PX_LOG_WARN);
        nng_mtx_unlock(c->mtx);
        return;
    }
    size_t n = nng_aio_count(c->tx_aio);
    CNT(c->t, bytes_out, n);
    c->wcur_off += n;
    if (c->wcur_off < c->wcur_len) { /* a short write: the rest */
        nng_iov iov = {c->wcur + c->wcur_off, c->wcur_len - c->wcur_off};
        nng_aio_set_iov(c->tx_aio, 1, &iov);
        nng_stream_send(c->s, c->tx_aio);
        nng_mtx_unlock(c->mtx);
        return;
    }
    c->writing = false;
    tx_kick_locked(c);
    nng_mtx_unlock(c->mtx);
}

/* ---- closing ---- */

static void peer_fail_queue_locked(peer *p, px_err why) {
    while (p->qlen > 0) {
        txent *e = &p->q[p->qhead];
        px_system_dead_letter(p->t->sys, e->to, e->m, why);
        e->m = NULL;
        txent_free(e);
        p->qhead = (p->qhead + 1) % p->qcap;
        p->qlen--;
    }
    p->qbytes = 0;
}

/* The peer cannot be reached: sends fail fast, its queue becomes dead
 * letters, and the tick redials after the backoff (doubled, capped). */
static void peer_down_locked(peer *p) {
    p->state = PX_LINK_UNREACHABLE;
    p->retry_at_ms = now_ms() + p->backoff_ms;
    uint32_t cap = p->t->cfg.reconnect_max_ms;
    p->backoff_ms = p->backoff_ms * 2 > cap ? cap : p->backoff_ms * 2;
    peer_fail_queue_locked(p, PX_EUNREACHABLE);
}

/* Marks c closed and closes its stream (its aios then complete with an
 * error); the tick frees it. An outbound link's peer becomes unreachable
 * and is redialled after its backoff. Lock held. */
static void conn_close_locked(conn *c, const char *why, px_log_level lvl) {
    if (c->state == C_CLOSED) {
        return;
    }
    bool was_up = c->state == C_UP;
    c->state = C_CLOSED;
    nng_stream_close(c->s);
    px_transport *t = c->t;
    if (!atomic_load(&t->stopping)) {
        px_log(t->sys, lvl, "link %s %s: %s", c->who, was_up ? "closed" : "failed", why);
    }
    if (c->role == PXN_DIALER && c->p != NULL && c->p->c == c) {
        peer *p = c->p;
        p->c = NULL;
        peer_down_locked(p);
    }
}

/* ---- receiving ---- */

static void rx_want(conn *c, int phase, size_t need) {
    c->rphase = phase;
    c->rneed = need;
    c->rhave = 0;
}

static void rx_start(conn *c) {
    if (!reserve(&c->rbuf, &c->rcap, c->rneed)) {
        conn_close_locked(c, "out of memory for a frame", PX_LOG_ERROR);
        return;
    }
    nng_iov iov = {c->rbuf + c->rhave, c->rneed - c->rhave};
    nng_aio_set_iov(c->rx_aio, 1, &iov);
    nng_stream_recv(c->s, c->rx_aio);
}

static peer *peer_by_pk(px_transport *t, const uint8_t *pk) {
    for (size_t i = 0; i < t->npeers; i++) {
        if (sodium_memcmp(t->peers[i].pk, pk, PX_PUBKEY_BYTES) == 0) {
            return &t->peers[i];
        }
    }
    return NULL;
}

static void refuse_locked(conn *c, Plexus__Refuse__Reason r, const char *detail) {
    size_t n;
    uint8_t *b = pxn_refuse_pack(r, detail, &n);
    uint8_t len[4];
    pxn_put_u32(len, (uint32_t)n);
    if (b != NULL && c->role == PXN_LISTENER) {
        /* the listener has sent nothing yet: the refusal takes its hello's place */
        out_raw_locked(c, PXN_PREAMBLE, PXN_PREAMBLE_LEN);
    }
    if (b != NULL) {
        out_raw_locked(c, len, 4);
        out_raw_locked(c, b, n);
    }
    free(b);
    CNT(c->t, refused, 1);
}

/* The peer's handshake frame arrived. */
static void on_hello_locked(conn *c) {
    px_transport *t = c->t;
    Plexus__Refuse__Reason rr;
    char why[300];
    px_err rv = pxn_hs_peer(&c->hs, c->rbuf, c->rneed, PLEXUS__LANE__LANE_NORMAL, &rr, why,
                            sizeof(why));
    if (rv != PX_OK) {
        if (rr != PLEXUS__REFUSE__REASON__UNSPECIFIED) {
            refuse_locked(c, rr, why);
            tx_kick_locked(c);
        } else {
            CNT(t, refused, 1);
        }
        conn_close_locked(c, why, PX_LOG_ERROR);
        return;
    }
    Plexus__Hello *h = c->hs.peer;
    peer *p = peer_by_pk(t, h->identity_pk.data);
    const char *bad = NULL;
    if (p == NULL) {
        bad = "its identity key is not one of this node's peers";
    } else if (strcmp(p->name, h->node_name) != 0 || p->node_id != h->node_id) {
        bad = "its name does not match the one configured for its key";
    } else if (c->role == PXN_DIALER && c->p != p) {
        bad = "it is not the node configured at this address";
    }
    if (bad != NULL) {
        char pkb[PX_PUBKEY_B64_LEN];
        px_pubkey_format(h->identity_pk.data, pkb);
        snprintf(why, sizeof(why), "refused %s (key %s): %s", h->node_name, pkb, bad);
        refuse_locked(c, PLEXUS__REFUSE__REASON__UNKNOWN_IDENTITY, bad);
        tx_kick_locked(c);
        conn_close_locked(c, why, PX_LOG_ERROR);
        return;
    }
    if (c->role == PXN_LISTENER) {
        c->p = p;
        snprintf(c->who, sizeof(c->who), "from %s", p->name);
        out_hello_locked(c);
    }
    if (pxn_hs_keys(&c->hs, &c->rx, &c->tx) != PX_OK) {
        conn_close_locked(c, "weak key exchange key", PX_LOG_ERROR);
        return;
    }
    uint8_t sig[64];
    pxn_hs_sign(&c->hs, sig);
    Plexus__Auth au = PLEXUS__AUTH__INIT;
    au.sig = (ProtobufCBinaryData){sizeof(sig), sig};
    Plexus__Frame f = PLEXUS__FRAME__INIT;
    f.body_case = PLEXUS__FRAME__BODY_AUTH;
    f.auth = &au;
    if (!out_frame_locked(c, &f)) {
        conn_close_locked(c, "out of memory", PX_LOG_ERROR);
        return;
    }
    c->tx.plaintext = c->rx.plaintext = false; /* Auth is always sealed */
    c->state = C_AUTH;
    tx_kick_locked(c);
    c->tx.plaintext = t->cfg.plaintext;
}

static void on_up_locked(conn *c) {
    px_transport *t = c->t;
    peer *p = c->p;
    c->state = C_UP;
    c->rx.plaintext = t->cfg.plaintext;
    CNT(t, handshakes, 1);
    uint32_t inc = c->hs.peer->node_inc;
    if (c->role == PXN_DIALER) {
        if (p->node_inc != 0 && p->node_inc != inc) {
            px_log(t->sys, PX_LOG_WARN,
                   "peer %s restarted: incarnation %08x -> %08x; refs to the old one are dead",
                   p->name, p->node_inc, inc);
        }
        p->node_inc = inc;
        p->state = PX_LINK_UP;
        p->backoff_ms = 50;
        px_log(t->sys, PX_LOG_INFO, "link to %s up%s", c->who,
               t->cfg.plaintext ? " (PLAINTEXT: frames are not encrypted)" : "");
    }
}

static px_msg *msg_of_envelope(px_transport *t, const Plexus__Envelope *v, px_err *why) {
    px_msg *m = NULL;
    if (v->type == NULL || v->type[0] == '\0') {
        *why = px_msg_bytes(&m, v->tag, v->payload.data, v->payload.len);
        return *why == PX_OK ? m : NULL;
    }
    const ProtobufCMessageDescriptor *d = px_type_lookup(t->sys, v->type);
    if (d == NULL) {
        *why = PX_ETYPE;
        return NULL;
    }
    ProtobufCMessage *pb = protobuf_c_message_unpack(d, NULL, v->payload.len, v->payload.data);
    if (pb == NULL) {
        *why = PX_EPROTO;
        return NULL;
    }
    *why = px_msg_proto(&m, pb, NULL);
    if (*why != PX_OK) {
        protobuf_c_message_free_unpacked(pb, NULL);
        return NULL;
    }
    return m;
}

static px_ref ref_of(const Plexus__ActorRef *r) {
    return r ? (px_ref){r->node, r->node_inc, r->id, r->inc} : PX_REF_NIL;
}

static void deliver_batch(conn *c, const Plexus__Batch *b) {
    px_transport *t = c->t;
    px_ref self = px_system_root(t->sys);
    for (size_t i = 0; i < b->n_envelopes; i++) {
        const Plexus__Envelope *v = b->envelopes[i];
        px_ref to = ref_of(v ? v->to : NULL);
        px_err why = PX_EPROTO;
        px_msg *m = NULL;
        if (v != NULL && v->to != NULL && to.node == self.node) {
            m = msg_of_envelope(t, v, &why);
        }
        if (m != NULL) {
            why = px_system_deliver_remote(t->sys, to, ref_of(v->from), v->corr, v->flags, &m);
        }
        if (why == PX_OK) {
            CNT(t, msgs_in, 1);
            continue;
        }
        px_msg_free(m);
        if (why != PX_EDEAD) { /* dead letters are counted by core */
            CNT(t, undeliverable, 1);
            char rb[48];
            px_log(t->sys, PX_LOG_DEBUG, "message from %s to %s not delivered: %s", c->who,
                   px_ref_format(to, rb, sizeof(rb)), px_errname(why));
        }
    }
}

/* One decrypted frame. Lock held; released around delivery. */
static void on_frame_locked(conn *c, const uint8_t *pt, size_t n) {
    px_transport *t = c->t;
    Plexus__Frame *f = plexus__frame__unpack(NULL, n, pt);
    if (f == NULL) {
        CNT(t, bad_frames, 1);
        conn_close_locked(c, "a frame that does not decode", PX_LOG_ERROR);
        return;
    }
    CNT(t, frames_in, 1);
    if (c->state == C_AUTH) {
        if (f->body_case != PLEXUS__FRAME__BODY_AUTH || f->auth == NULL ||
            pxn_hs_verify(&c->hs, f->auth->sig.data, f->auth->sig.len) != PX_OK) {
            CNT(t, refused, 1);
            conn_close_locked(c, "the peer did not prove its identity", PX_LOG_ERROR);
        } else {
            on_up_locked(c);
            tx_kick_locked(c);
        }
        plexus__frame__free_unpacked(f, NULL);
        return;
    }
    switch (f->body_case) {
    case PLEXUS__FRAME__BODY_BATCH:
        if (f->batch != NULL && c->role == PXN_LISTENER) {
            nng_mtx_unlock(c->mtx);
            deliver_batch(c, f->batch);
            nng_mtx_lock(c->mtx);
        }
        break;
    case PLEXUS__FRAME__BODY_PING:
        if (f->ping != NULL) {
            CNT(t, pings, 1);
            Plexus__Heartbeat hb = *f->ping;
            Plexus__Frame r = PLEXUS__FRAME__INIT;
            r.body_case = PLEXUS__FRAME__BODY_PONG;
            r.pong = &hb;
            if (out_frame_locked(c, &r)) {
                tx_kick_locked(c);
            }
        }
        break;
    case PLEXUS__FRAME__BODY_PONG:
        CNT(t, pongs, 1);
        break;
    case PLEXUS__FRAME__BODY_GOODBYE:
        conn_close_locked(c, "the peer said goodbye", PX_LOG_INFO);
        break;
    default:
        break; /* unknown or reserved bodies are ignored (forward compatibility) */
    }
    plexus__frame__free_unpacked(f, NULL);
}

static void rx_cb(void *arg) {
    conn *c = arg;
    px_transport *t = c->t;
    nng_mtx_lock(c->mtx);
    int rv = nng_aio_result(c->rx_aio);
    if (rv != 0 || c->state == C_CLOSED) {
        conn_close_locked(c, rv ? nng_strerror(rv) : "closed", PX_LOG_WARN);
        nng_mtx_unlock(c->mtx);
        return;
    }
    size_t got = nng_aio_count(c->rx_aio);
    CNT(t, bytes_in, got);
    c->rhave += got;
    c->last_rx_ms = now_ms();
    if (c->rhave < c->rneed) {
        rx_start(c);
        nng_mtx_unlock(c->mtx);
        return;
    }
    switch (c->rphase) {
    case R_PRE:
        if (memcmp(c->rbuf, PXN_PREAMBLE, PXN_PREAMBLE_LEN) != 0) {
            CNT(t, bad_frames, 1);
            conn_close_locked(c, "not a plexus peer (bad preamble)", PX_LOG_ERROR);
            break;
        }
        rx_want(c, R_HSLEN, 4);
        break;
    case R_HSLEN: {
        uint32_t n = pxn_get_u32(c->rbuf);
        if (n == 0 || n > PXN_HS_MAX) {
            CNT(t, bad_frames, 1);
            conn_close_locked(c, "handshake frame length out of bounds", PX_LOG_ERROR);
            break;
        }
        rx_want(c, R_HS, n);
        break;
    }
    case R_HS:
        on_hello_locked(c);
        rx_want(c, R_LEN, 4);
        break;
    case R_LEN: {
        uint32_t n = pxn_get_u32(c->rbuf);
        if (n > t->cfg.max_frame || n == 0) {
            CNT(t, bad_frames, 1);
            char why[96];
            snprintf(why, sizeof(why), "frame of %u bytes (limit %u)", n, t->cfg.max_frame);
            conn_close_locked(c, why, PX_LOG_ERROR);
            break;
        }
        uint8_t hdr[4];
        memcpy(hdr, c->rbuf, 4);
        rx_want(c, R_BODY, n);
        if (!reserve(&c->rbuf, &c->rcap, (size_t)n + 4)) {
            conn_close_locked(c, "out of memory for a frame", PX_LOG_ERROR);
            break;
        }
        memcpy(c->rbuf + n, hdr, 4); /* keep the header (the AD) past the body */
        break;
    }
    case R_BODY: {
        size_t n = c->rneed, pl = 0;
        uint8_t hdr[4];
        memcpy(hdr, c->rbuf + n, 4);
        px_err e = pxn_open(&c->rx, hdr, c->rbuf, n, c->rbuf, &pl);
        if (e != PX_OK) {
            CNT(t, bad_frames, 1);
            conn_close_locked(c, e == PX_EAUTH ? "a frame failed authentication (tampered, "
                                                 "replayed or foreign)"
                                               : "a malformed frame",
                              PX_LOG_ERROR);
            break;
        }
        on_frame_locked(c, c->rbuf, pl);
        rx_want(c, R_LEN, 4);
        break;
    }
    }
    if (c->state != C_CLOSED) {
        rx_start(c);
    }
    nng_mtx_unlock(c->mtx);
}

/* A connected stream (either side): start the handshake. */
static void conn_begin(conn *c) {
    px_transport *t = c->t;
    nng_mtx_lock(c->mtx);
    if (pxn_hs_init(&c->hs, c->role, &t->self, PLEXUS__LANE__LANE_NORMAL, NULL, NULL) != PX_OK) {
        conn_close_locked(c, "cannot start a handshake", PX_LOG_ERROR);
        nng_mtx_unlock(c->mtx);
        return;
    }
    if (c->role == PXN_DIALER) {
        out_hello_locked(c); /* the listener answers after checking ours */
        tx_kick_locked(c);
    }
    rx_want(c, R_PRE, PXN_PREAMBLE_LEN);
    rx_start(c);
    nng_mtx_unlock(c->mtx);
}

/* ---- accepting and dialing ---- */

static void acc_cb(void *arg) {
    px_transport *t = arg;
    int rv = nng_aio_result(t->acc_aio);
    if (rv != 0) {
        if (!atomic_load(&t->stopping) && rv != NNG_ECLOSED) {
            px_log(t->sys, PX_LOG_WARN, "accept on %s: %s", t->bound, nng_strerror(rv));
            nng_stream_listener_accept(t->lst, t->acc_aio);
        }
        return;
    }
    nng_stream *s = nng_aio_get_output(t->acc_aio, 0);
    conn *c = atomic_load(&t->stopping) ? NULL : conn_new(t, s, PXN_LISTENER, NULL);
    if (c == NULL) {
        nng_stream_free(s);
    } else {
        conn_begin(c);
    }
    if (!atomic_load(&t->stopping)) {
        nng_stream_listener_accept(t->lst, t->acc_aio);
    }
}

static void dial_cb(void *arg) {
    peer *p = arg;
    px_transport *t = p->t;
    int rv = nng_aio_result(p->dial_aio);
    nng_mtx_lock(p->mtx);
    p->dialing = false;
    if (rv != 0 || atomic_load(&t->stopping)) {
        if (rv == 0) {
            nng_stream_free(nng_aio_get_output(p->dial_aio, 0));
        } else if (!atomic_load(&t->stopping)) {
            if (p->state != PX_LINK_UNREACHABLE) {
                px_log(t->sys, PX_LOG_WARN, "cannot reach peer %s at %s: %s", p->name,
                       p->address, nng_strerror(rv));
            }
            peer_down_locked(p);
        }
        nng_mtx_unlock(p->mtx);
        return;
    }
    nng_stream *s = nng_aio_get_output(p->dial_aio, 0);
    nng_mtx_unlock(p->mtx);
    conn *c = conn_new(t, s, PXN_DIALER, p);
    if (c == NULL) {
        nng_stream_free(s);
        return;
    }
    nng_mtx_lock(p->mtx);
    p->c = c;
    nng_mtx_unlock(p->mtx);
    conn_begin(c);
}

static void dial_locked(peer *p) {
    if (p->dialing || p->c != NULL || atomic_load(&p->t->stopping)) {
        return;
    }
    p->dialing = true;
    nng_stream_dialer_dial(p->d, p->dial_aio);
}

/* ---- the tick ---- */

static void tick_cb(void *arg) {
    px_transport *t = arg;
    if (nng_aio_result(t->tick_aio) != 0 || atomic_load(&t->stopping)) {
        return;
    }
    int64_t now = now_ms();
    for (size_t i = 0; i < t->npeers; i++) {
        peer *p = &t->peers[i];
        nng_mtx_lock(p->mtx);
        if (p->c == NULL && now >= p->retry_at_ms) {
            dial_locked(p);
        }
        nng_mtx_unlock(p->mtx);
    }
    /* Unlink closed connections under the list lock, free them outside it. */
    conn *dead = NULL;
    nng_mtx_lock(t->mtx);
    for (conn **pc = &t->conns; *pc != NULL;) {
        conn *c = *pc;
        nng_mtx_lock(c->mtx);
        if (c->state == C_CLOSED) {
            nng_mtx_unlock(c->mtx);
            *pc = c->next;
            c->next = dead;
            dead = c;
            continue;
        }
        if (now - c->last_rx_ms > (int64_t)t->cfg.unreachable_ms) {
            char why[96];
            snprintf(why, sizeof(why), "silent for %lld ms", (long long)(now - c->last_rx_ms));
            conn_close_locked(c, why, PX_LOG_WARN);
        } else if (c->role == PXN_DIALER && c->state == C_UP &&
                   now - c->last_ping_ms >= (int64_t)t->cfg.heartbeat_ms) {
            c->last_ping_ms = now;
            Plexus__Heartbeat hb = PLEXUS__HEARTBEAT__INIT;
            hb.seq = ++c->ping_seq;
            hb.sent_ns = now_ns();
            Plexus__Frame f = PLEXUS__FRAME__INIT;
            f.body_case = PLEXUS__FRAME__BODY_PING;
            f.ping = &hb;
            if (out_frame_locked(c, &f)) {
                tx_kick_locked(c);
            }
        }
        nng_mtx_unlock(c->mtx);
        pc = &c->next;
    }
    nng_mtx_unlock(t->mtx);
    while (dead != NULL) {
        conn *nx = dead->next;
        conn_free(dead);
        dead = nx;
    }
    nng_sleep_aio((nng_duration)(t->cfg.heartbeat_ms < 50 ? t->cfg.heartbeat_ms : 50), t->tick_aio);
}

/* ---- the router ---- */

static peer *peer_by_node(px_transport *t, uint32_t node) {
    for (size_t i = 0; i < t->npeers; i++) {
        if (t->peers[i].node_id == node) {
            return &t->peers[i];
        }
    }
    return NULL;
}

static px_err router_send(void *arg, px_ref to, px_msg *m) {
    px_transport *t = arg;
    atomic_fetch_add(&t->senders, 1);
    px_err rv = PX_OK;
    peer *p = atomic_load(&t->stopping) ? NULL : peer_by_node(t, to.node);
    txent e = {.to = to, .from = px_msg_sender(m), .corr = px_msg_corr(m),
               .flags = px_msg_wire_flags(m), .tag = px_msg_tag(m)};
    if (p == NULL) {
        rv = PX_EUNREACHABLE;
        goto out;
    }
    size_t limit = t->cfg.max_frame - PXN_TAG_BYTES - 256;
    if (px_msg_kind_of(m) == PX_MSG_PROTO) {
        const ProtobufCMessage *pb = px_msg_pb(m);
        e.type = pb->descriptor->name;
        e.len = protobuf_c_message_get_packed_size(pb);
        if (e.len > limit) {
            rv = PX_EMSGSIZE;
            goto out;
        }
        e.packed = malloc(e.len ? e.len : 1);
        if (e.packed == NULL) {
            rv = PX_ENOMEM;
            goto out;
        }
        protobuf_c_message_pack(pb, e.packed);
    } else if (px_msg_kind_of(m) == PX_MSG_BYTES) {
        px_msg_data(m, &e.len);
        if (e.len > limit) {
            rv = PX_EMSGSIZE;
            goto out;
        }
    } else {
        rv = PX_ETYPE; /* timer ticks and the like do not travel */
        goto out;
    }
    nng_mtx_lock(p->mtx);
    if (p->node_inc != 0 && to.node_inc != p->node_inc) {
        nng_mtx_unlock(p->mtx);
        free(e.packed);
        px_system_dead_letter(t->sys, to, m, PX_EDEAD); /* an older incarnation */
        goto out;
    }
    if (p->state == PX_LINK_UNREACHABLE) {
        rv = PX_EUNREACHABLE;
    } else if (p->qlen >= t->cfg.queue_msgs || p->qbytes + e.len > t->cfg.queue_bytes) {
        rv = PX_EFULL;
    } else if (p->qlen == p->qcap) {
        size_t nc = p->qcap ? p->qcap * 2 : 64;
        txent *nq = malloc(nc * sizeof(*nq));
        if (nq == NULL) {
            rv = PX_ENOMEM;
        } else {
            for (size_t i = 0; i < p->qlen; i++) {
                nq[i] = p->q[(p->qhead + i) % p->qcap];
            }
            free(p->q);
            p->q = nq;
            p->qcap = nc;
            p->qhead = 0;
        }
    }
    if (rv == PX_OK) {
        e.m = m;
        p->q[(p->qhead + p->qlen) % p->qcap] = e;
        p->qlen++;
        p->qbytes += e.len;
        if (p->c != NULL && p->c->state == C_UP) {
            tx_kick_locked(p->c);
        }
    } else {
        free(e.packed);
    }
    nng_mtx_unlock(p->mtx);
out:
    atomic_fetch_sub(&t->senders, 1);
    return rv;
}

/* ---- start / stop ---- */

void px_transport_cfg_init(px_transport_cfg *cfg) {
    memset(cfg, 0, sizeof(*cfg));
    cfg->max_frame = 1u << 20;
    cfg->queue_msgs = 65536;
    cfg->queue_bytes = 64u << 20;
    cfg->heartbeat_ms = 250;
    cfg->unreachable_ms = 2000;
    cfg->reconnect_max_ms = 5000;
}

static px_err bad_cfg(px_system *sys, const char *what) {
    px_log(sys, PX_LOG_ERROR, "transport config: %s", what);
    return PX_EINVAL;
}

static px_err check_cfg(px_system *sys, const px_transport_cfg *c) {
    if (c->listen == NULL || c->listen[0] == '\0') {
        return bad_cfg(sys, "listen address is required");
    }
    if (c->identity == NULL) {
        return bad_cfg(sys, "identity is required");
    }
    if (c->max_frame < 4096 || c->max_frame > (64u << 20)) {
        return bad_cfg(sys, "max_frame must be 4 KiB..64 MiB");
    }
    if (c->queue_msgs == 0 || c->queue_bytes < c->max_frame) {
        return bad_cfg(sys, "queue_msgs must be > 0 and queue_bytes >= max_frame");
    }
    if (c->heartbeat_ms == 0 || c->unreachable_ms <= c->heartbeat_ms ||
        c->reconnect_max_ms == 0) {
        return bad_cfg(sys, "heartbeat_ms must be > 0 and below unreachable_ms; "
                            "reconnect_max_ms > 0");
    }
    for (size_t i = 0; i < c->npeers; i++) {
        const px_peer *p = &c->peers[i];
        if (p->name == NULL || p->address == NULL || p->name[0] == '\0') {
            return bad_cfg(sys, "a peer needs a name and an address");
        }
        if (px_node_id(p->name) == px_system_root(sys).node) {
            return bad_cfg(sys, "a peer has this node's own name");
        }
        for (size_t j = 0; j < i; j++) {
            if (px_node_id(c->peers[j].name) == px_node_id(p->name)) {
                return bad_cfg(sys, "two peers share a name (or its node id)");
            }
        }
    }
    return PX_OK;
}

static px_err start_listener(px_transport *t) {
    int rv = nng_stream_listener_alloc(&t->lst, t->listen);
    if (rv == 0) {
        rv = nng_stream_listener_listen(t->lst);
    }
    if (rv != 0) {
        px_log(t->sys, PX_LOG_ERROR, "cannot listen on %s: %s", t->listen, nng_strerror(rv));
        return PX_EIO;
    }
    int port = 0;
    if (strncmp(t->listen, "tcp://", 6) == 0 &&
        nng_stream_listener_get_int(t->lst, NNG_OPT_TCP_BOUND_PORT, &port) == 0) {
        const char *hp = t->listen + 6;
        const char *colon = strrchr(hp, ':');
        size_t hl = colon ? (size_t)(colon - hp) : strlen(hp);
        size_t n = hl + 32;
        t->bound = malloc(n);
        if (t->bound != NULL) {
            snprintf(t->bound, n, "tcp://%.*s:%d", (int)hl, hp, port);
        }
    } else {
        t->bound = strdup(t->listen);
    }
    return t->bound != NULL ? PX_OK : PX_ENOMEM;
}

px_err px_transport_start(px_system *sys, const px_transport_cfg *cfg, px_transport **out) {
    if (sys == NULL || cfg == NULL || out == NULL) {
        return PX_EINVAL;
    }
    px_err rv = check_cfg(sys, cfg);
    if (rv != PX_OK) {
        return rv;
    }
    if (sodium_init() < 0) {
        return PX_ESYS;
    }
    px_transport *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        return PX_ENOMEM;
    }
    t->sys = sys;
    t->cfg = *cfg;
    t->cfg.peers = NULL;
    t->listen = strdup(cfg->listen);
    t->peers = cfg->npeers ? calloc(cfg->npeers, sizeof(*t->peers)) : NULL;
    t->npeers = cfg->npeers;
    if (t->listen == NULL || (cfg->npeers && t->peers == NULL) || nng_mtx_alloc(&t->mtx) != 0 ||
        nng_aio_alloc(&t->acc_aio, acc_cb, t) != 0 ||
        nng_aio_alloc(&t->tick_aio, tick_cb, t) != 0) {
        px_transport_stop(t);
        return PX_ENOMEM;
    }
    for (size_t i = 0; i < cfg->npeers; i++) {
        peer *p = &t->peers[i];
        p->t = t;
        p->name = strdup(cfg->peers[i].name);
        p->address = strdup(cfg->peers[i].address);
        memcpy(p->pk, cfg->peers[i].pk, PX_PUBKEY_BYTES);
        p->node_id = px_node_id(cfg->peers[i].name);
        p->backoff_ms = 50;
        p->state = PX_LINK_CONNECTING;
        if (p->name == NULL || p->address == NULL || nng_mtx_alloc(&p->mtx) != 0 ||
            nng_aio_alloc(&p->dial_aio, dial_cb, p) != 0) {
            px_transport_stop(t);
            return PX_ENOMEM;
        }
        int e = nng_stream_dialer_alloc(&p->d, p->address);
        if (e != 0) {
            px_log(sys, PX_LOG_ERROR, "transport config: peer %s: bad address %s: %s", p->name,
                   p->address, nng_strerror(e));
            px_transport_stop(t);
            return PX_EINVAL;
        }
    }
    rv = start_listener(t);
    if (rv != PX_OK) {
        px_transport_stop(t);
        return rv;
    }
    px_ref root = px_system_root(sys);
    t->self = (pxn_self){.node_name = px_system_node_name(sys),
                         .node_id = root.node,
                         .node_inc = root.node_inc,
                         .id = cfg->identity,
                         .cluster_key = t->cfg.cluster_key,
                         .max_frame = cfg->max_frame,
                         .advertise = t->bound,
                         .plaintext = cfg->plaintext};
    if (cfg->plaintext) {
        px_log(sys, PX_LOG_WARN,
               "transport in PLAINTEXT mode: frames after the handshake are NOT encrypted "
               "(benchmarks only)");
    }
    px_router r = {router_send, t};
    px_system_set_router(sys, &r);
    nng_stream_listener_accept(t->lst, t->acc_aio);
    for (size_t i = 0; i < t->npeers; i++) {
        nng_mtx_lock(t->peers[i].mtx);
        dial_locked(&t->peers[i]);
        nng_mtx_unlock(t->peers[i].mtx);
    }
    nng_sleep_aio(50, t->tick_aio);
    px_log(sys, PX_LOG_INFO, "transport listening on %s with %zu peers", t->bound, t->npeers);
    *out = t;
    return PX_OK;
}

const char *px_transport_address(const px_transport *t) { return t ? t->bound : NULL; }

void px_transport_stop(px_transport *t) {
    if (t == NULL) {
        return;
    }
    atomic_store(&t->stopping, true);
    if (t->sys != NULL && t->lst != NULL) {
        px_system_set_router(t->sys, NULL);
    }
    for (int i = 0; i < 100000 && atomic_load(&t->senders) > 0; i++) {
        nng_msleep(1); /* bounded: a sender inside router_send finishes in microseconds */
    }
    if (t->lst != NULL) {
        nng_stream_listener_close(t->lst);
    }
    if (t->acc_aio != NULL) {
        nng_aio_stop(t->acc_aio);
    }
    if (t->tick_aio != NULL) {
        nng_aio_stop(t->tick_aio);
    }
    for (size_t i = 0; i < t->npeers; i++) {
        peer *p = &t->peers[i];
        if (p->d != NULL) {
            nng_stream_dialer_close(p->d);
        }
        if (p->dial_aio != NULL) {
            nng_aio_stop(p->dial_aio);
        }
    }
    if (t->mtx != NULL) {
        nng_mtx_lock(t->mtx);
        for (conn *c = t->conns; c != NULL; c = c->next) {
            nng_mtx_lock(c->mtx);
            conn_close_locked(c, "transport stopping", PX_LOG_INFO);
            nng_mtx_unlock(c->mtx);
        }
        conn *c = t->conns;
        t->conns = NULL;
        nng_mtx_unlock(t->mtx);
        while (c != NULL) {
            conn *nx = c->next;
            conn_free(c);
            c = nx;
        }
    }
    for (size_t i = 0; i < t->npeers; i++) {
        peer *p = &t->peers[i];
        if (p->mtx != NULL) {
            peer_fail_queue_locked(p, PX_ECLOSED);
            nng_mtx_free(p->mtx);
        }
        free(p->q);
        nng_stream_dialer_free(p->d);
        nng_aio_free(p->dial_aio);
        free(p->name);
        free(p->address);
    }
    nng_stream_listener_free(t->lst);
    nng_aio_free(t->acc_aio);
    nng_aio_free(t->tick_aio);
    if (t->mtx != NULL) {
        nng_mtx_free(t->mtx);
    }
    free(t->peers);
    free(t->listen);
    free(t->bound);
    sodium_memzero(t->cfg.cluster_key, sizeof(t->cfg.cluster_key));
    free(t);
}

px_err px_transport_peer_state(px_transport *t, const char *name, px_link_state *state,
                               uint32_t *node_inc) {
    if (t == NULL || name == NULL) {
        return PX_EINVAL;
    }
    for (size_t i = 0; i < t->npeers; i++) {
        peer *p = &t->peers[i];
        if (strcmp(p->name, name) == 0) {
            nng_mtx_lock(p->mtx);
            if (state != NULL) {
                *state = p->state;
            }
            if (node_inc != NULL) {
                *node_inc = p->node_inc;
            }
            nng_mtx_unlock(p->mtx);
            return PX_OK;
        }
    }
    return PX_ENOENT;
}

void px_transport_stats_get(px_transport *t, px_transport_stats *o) {
    memset(o, 0, sizeof(*o));
    if (t == NULL) {
        return;
    }
    o->msgs_out = atomic_load(&t->msgs_out);
    o->msgs_in = atomic_load(&t->msgs_in);
    o->frames_out = atomic_load(&t->frames_out);
    o->frames_in = atomic_load(&t->frames_in);
    o->bytes_out = atomic_load(&t->bytes_out);
    o->bytes_in = atomic_load(&t->bytes_in);
    o->handshakes = atomic_load(&t->handshakes);
    o->refused = atomic_load(&t->refused);
    o->bad_frames = atomic_load(&t->bad_frames);
    o->undeliverable = atomic_load(&t->undeliverable);
    o->pings = atomic_load(&t->pings);
    o->pongs = atomic_load(&t->pongs);
}
