/*
 * link.c — the transport: a listener, and a link of three connections (one
 * per lane) to every configured peer, over nng byte streams (tcp or ipc)
 * with our own framing (wire.h).
 *
 * Why byte streams and not an SP pattern: nng's pair1 hands each message
 * across several of its internal threads (a wake-up each on this machine:
 * ~30k msgs/s, 131-156 us p50 round trip with one actor message per nng
 * message, ../shared/notes/deps.md §2). A stream with aio callbacks costs
 * one wake-up per read or write, and batching many envelopes per frame is
 * ours to decide.
 *
 * Shape:
 *  - Each node dials each of its peers once per lane and sends on those
 *    connections (the dialer side); connections it accepts are for
 *    receiving (the listener side answers pings with pongs, credits BULK's
 *    chunks, and sends nothing else). A peer is UP when its three outbound
 *    connections are; when one closes, all three close and the peer is
 *    redialled.
 *  - CONTROL carries the pings (heartbeats both ways: each node pings on
 *    its own control connection); NORMAL carries batches of envelopes;
 *    BULK carries the chunks of payloads above bulk_threshold, whose
 *    envelope goes on NORMAL with a bulk id and no payload. Separate
 *    connections keep a 64 MiB payload in the kernel's buffers from
 *    delaying a heartbeat or a small message.
 *  - Senders (router_send, any thread) append to the peer's bounded queue
 *    and start a write if none is in flight. When the write completes, the
 *    completion packs everything queued meanwhile into one frame: a lone
 *    message goes out at once, a burst shares frames. BULK is fed on the
 *    BULK thread (below: it runs both ends' BULK callbacks at a lower
 *    priority): one chunk per write, sealed outside the peer lock, within a
 *    window the listener's credits open (BULK's window, below).
 *  - Reads run in the stream's receive callback: preamble, handshake, then
 *    frames; envelopes are delivered to local actors from there. The
 *    receiving state of a peer (p->rx, shared by its inbound connections)
 *    reassembles bulk payloads and holds back later envelopes from the same
 *    sender to the same target until the bulk one is complete, so
 *    per-(sender, target) order holds across lanes. When too many are held
 *    back, the NORMAL connection stops reading (TCP pushes back to the
 *    sender, whose queue fills: PX_EFULL) until the tick resumes it.
 *  - Latency mode (cfg.poll_rx; "polled reads" below): idle scheduler
 *    workers read the inbound NORMAL connections while they spin, and
 *    frames are written inline by the thread that packed them.
 *  - A tick (every <= 50 ms, 1 ms while a connection is paused) pings idle
 *    control links, drops silent connections, dials peers that are due,
 *    resumes paused reads and frees closed connections (a callback cannot
 *    stop its own aio). It also hands each peer's state changes to on_link
 *    (collected under the peer locks, called with none held).
 *  - Peers: a fixed array of cfg.max_peers slots whose published count
 *    (npeers) only grows, so the router finds a peer without a lock. A
 *    slot's name, node id and key never change; a peer that leaves is
 *    marked removed (revived by a later add) and one whose key changes is
 *    replaced by a new slot. Addresses do change: readers load the pointer
 *    and old strings live until stop.
 * Locks: t->mtx guards the connection list. p->mtx guards the peer's
 * state, queues and outbound connections (they share it). An inbound
 * connection has its own mtx for its buffers. p->rx_mtx guards the peer's
 * receiving state. Order: t->mtx -> connection/peer mtx -> p->rx_mtx;
 * t->nq_mtx (deferred "undelivered" notices) and t->bmtx (the BULK
 * thread's queue) are leaves. t->peers_mtx
 * serialises peer adds and removes and is taken before all of these;
 * t->link_mtx is held while on_link runs and is taken with no other. Nothing calls into
 * core in a way that can come back to a peer lock while one is held: the
 * notices core's drop hook and the receive path produce are queued and
 * sent by pxl_notices_flush with no lock held.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/supplemental/util/platform.h>
#include <sodium.h>

#include <plexus/plexus.h>
#include <plexus/transport.h>

#include "wire.h"

#include "link_int.h"

static const char *const lane_name[NLANES] = {"control", "normal", "bulk"};

static void *arena_alloc(void *a_, size_t n) {
    arena *a = a_;
    n = (n + 15) & ~(size_t)15;
    if (a->used + n <= a->cap) {
        void *p = a->buf + a->used;
        a->used += n;
        return p;
    }
    spill *s = malloc(sizeof(*s) + n);
    if (s == NULL) {
        return NULL;
    }
    s->next = a->spills;
    a->spills = s;
    a->spilled += n;
    return s->data;
}

static void arena_free(void *a, void *p) {
    (void)a;
    (void)p; /* everything goes at arena_reset */
}

static void arena_reset(arena *a) {
    size_t want = a->used + a->spilled;
    while (a->spills != NULL) {
        spill *s = a->spills;
        a->spills = s->next;
        free(s);
    }
    if (want > a->cap) { /* next time, one block */
        size_t nc = want + want / 2;
        uint8_t *nb = realloc(a->buf, nc);
        if (nb != NULL) {
            a->buf = nb;
            a->cap = nc;
        }
    }
    a->used = a->spilled = 0;
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* v, or UINT32_MAX if it does not fit (negative: 0). */
static uint32_t sat_u32(int64_t v) {
    return v < 0 ? 0 : v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static bool ref_eq(px_ref a, px_ref b) {
    return a.node == b.node && a.node_inc == b.node_inc && a.id == b.id && a.inc == b.inc;
}

/* ---- buffers and queues ---- */

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

/* An entry that will not go out: its message becomes a dead letter (a
 * notice of ours, which has none, is counted lost). */
static void txent_drop(px_transport *t, txent *e, px_err why);
static void notice_defer(px_transport *t, px_ref sender, px_ref to, px_err code,
                         uint64_t corr);

static const uint8_t *txent_data(const txent *e) {
    return e->packed ? e->packed : (const uint8_t *)px_msg_data(e->m, NULL);
}

static txent *txq_at(txq *q, size_t i) { return &q->v[(q->head + i) % q->cap]; }

static bool txq_push(txq *q, const txent *e) {
    if (q->len == q->cap) {
        size_t nc = q->cap ? q->cap * 2 : 64;
        txent *nv = malloc(nc * sizeof(*nv));
        if (nv == NULL) {
            return false;
        }
        for (size_t i = 0; i < q->len; i++) {
            nv[i] = *txq_at(q, i);
        }
        free(q->v);
        q->v = nv;
        q->cap = nc;
        q->head = 0;
    }
    q->v[(q->head + q->len) % q->cap] = *e;
    q->len++;
    return true;
}

static void txq_pop(txq *q) {
    q->head = (q->head + 1) % q->cap;
    q->len--;
}

static void qbytes_sub(peer *p, uint64_t n) { p->qbytes = p->qbytes > n ? p->qbytes - n : 0; }
static void bbytes_sub(peer *p, uint64_t n) { p->bbytes = p->bbytes > n ? p->bbytes - n : 0; }
/* A bulk payload's bytes count as bulk from the moment it is queued, so small
 * sends never wait for the writer to move it to the BULK lane. */
static void ent_bytes_sub(peer *p, const txent *e) {
    if (e->bulk_id != 0) {
        bbytes_sub(p, e->len);
    } else {
        qbytes_sub(p, e->len);
    }
}

static void txent_drop(px_transport *t, txent *e, px_err why) {
    if (e->m != NULL) {
        px_system_dead_letter(t->sys, e->to, e->m, why);
        e->m = NULL;
    } else {
        CNT(t, notices_lost, 1);
    }
    txent_free(e);
}

/* ---- connections ---- */

static void conn_close_locked(conn *c, const char *why, px_log_level lvl);
static void poll_enlist_locked(conn *c);
static void poll_delist(conn *c);
static void leave_to_pollers(conn *c);
static void rx_start(conn *c);
static void tx_kick_locked(conn *c);
static void rx_reset_locked(peer *p, px_err why);

static void rx_run(conn *c);
static void tx_run(conn *c);
static void kick_run(conn *c);

/* ---- the BULK thread ----
 *
 * Sealing and opening chunks is most of a bulk transfer's CPU. Done on
 * nng's task threads it competes as an equal with the callbacks that carry
 * heartbeats and small messages: on two saturated cores a pong waited ~7 ms
 * for a CPU (p99). So the callbacks of BULK connections (both ends) run on
 * one thread of the transport's own at nice BULK_NICE: its aio callbacks
 * only queue the connection, and the thread runs rx_run / tx_run /
 * kick_run for it, in turn with the other BULK connections. Raising one's
 * own nice needs no privilege. In the transport benchmark the heartbeat's
 * p99 under bulk went from 6.6-7.7 ms to 1.5-2.6 ms, and bulk throughput
 * rose (BULK work no longer waits behind small callbacks either). On a
 * machine busy with other work at nice 0, bulk transfers get the smaller
 * share of the CPU: that is the point. */

#define BULK_NICE 5

enum { BJ_RX = 1, BJ_TX = 2, BJ_KICK = 4 };

/* Queues job on c for the BULK thread; false if c is not a BULK connection
 * (run it here). Takes only t->bmtx (a leaf: any lock may be held). */
static bool bulk_post(conn *c, int job) {
    px_transport *t = c->t;
    if (!atomic_load(&c->on_bthr)) {
        return false;
    }
    nng_mtx_lock(t->bmtx);
    c->bjobs |= job;
    if (!c->bqueued) {
        c->bqueued = true;
        c->bnext = NULL;
        if (t->bq_tail != NULL) {
            t->bq_tail->bnext = c;
        } else {
            t->bq_head = c;
        }
        t->bq_tail = c;
        nng_cv_wake1(t->bcv);
    }
    nng_mtx_unlock(t->bmtx);
    return true;
}

/* Forgets c's queued jobs and waits until the thread is not running it.
 * For conn_free, once c's aios are stopped. */
static void bulk_unqueue(conn *c) {
    px_transport *t = c->t;
    nng_mtx_lock(t->bmtx);
    if (c->bqueued) {
        conn **pc = &t->bq_head, *prev = NULL;
        while (*pc != c) {
            prev = *pc;
            pc = &(*pc)->bnext;
        }
        *pc = c->bnext;
        if (t->bq_tail == c) {
            t->bq_tail = prev;
        }
        c->bqueued = false;
    }
    c->bjobs = 0;
    while (t->brun == c) {
        nng_cv_wait(t->bdone);
    }
    nng_mtx_unlock(t->bmtx);
}

static void bulk_main(void *arg) {
    px_transport *t = arg;
    nng_thread_set_name(NULL, "px:bulk");
    /* Below the task threads that carry heartbeats and small messages.
     * Failing (a seccomp filter, say) only costs that priority. */
    (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), BULK_NICE);
    nng_mtx_lock(t->bmtx);
    for (;;) {
        while (t->bq_head == NULL && !t->bexit) {
            nng_cv_wait(t->bcv);
        }
        conn *c = t->bq_head;
        if (c == NULL) {
            break; /* exiting, and nothing left */
        }
        t->bq_head = c->bnext;
        if (t->bq_head == NULL) {
            t->bq_tail = NULL;
        }
        c->bqueued = false;
        int jobs = c->bjobs;
        c->bjobs = 0;
        t->brun = c;
        nng_mtx_unlock(t->bmtx);
        if (jobs & BJ_RX) {
            rx_run(c);
        }
        if (jobs & BJ_TX) {
            tx_run(c);
        }
        if (jobs & BJ_KICK) {
            kick_run(c);
        }
        nng_mtx_lock(t->bmtx);
        t->brun = NULL;
        nng_cv_wake(t->bdone);
    }
    nng_mtx_unlock(t->bmtx);
}

static void rx_cb(void *arg) {
    conn *c = arg;
    if (!bulk_post(c, BJ_RX)) {
        rx_run(c);
    }
}

static void tx_cb(void *arg) {
    conn *c = arg;
    if (!bulk_post(c, BJ_TX)) {
        tx_run(c);
    }
}

static conn *conn_new(px_transport *t, nng_stream *s, int role, peer *p, int lane) {
    conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return NULL;
    }
    c->t = t;
    c->p = p;
    c->role = role;
    c->lane = lane;
    c->s = s;
    if (p != NULL) {
        c->mtx = p->mtx;
    } else if (nng_mtx_alloc(&c->mtx) == 0) {
        c->own_mtx = true;
    } else {
        free(c);
        return NULL;
    }
    atomic_store(&c->on_bthr, lane == L_BLK);
    if (nng_aio_alloc(&c->rx_aio, rx_cb, c) != 0 || nng_aio_alloc(&c->tx_aio, tx_cb, c) != 0) {
        nng_aio_free(c->rx_aio);
        nng_aio_free(c->tx_aio);
        if (c->own_mtx) {
            nng_mtx_free(c->mtx);
        }
        free(c);
        return NULL;
    }
    if (t->hooked) { /* latency mode; without these aios it reads and writes as usual */
        if (p == NULL && nng_aio_alloc(&c->poll_aio, NULL, NULL) != 0) {
            c->poll_aio = NULL;
        }
        if (lane != L_BLK && nng_aio_alloc(&c->wsync_aio, NULL, NULL) != 0) {
            c->wsync_aio = NULL;
        }
    }
    c->last_rx_ms = c->last_ping_ms = now_ms();
    if (p != NULL) {
        snprintf(c->who, sizeof(c->who), "%s (%s, %s)", p->name, p->address, lane_name[lane]);
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
        snprintf(c->raddr, sizeof(c->raddr), "%s", addr);
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
    poll_delist(c);
    nng_aio_stop(c->rx_aio);
    nng_aio_stop(c->tx_aio);
    nng_aio *sync_aios[2] = {c->poll_aio, c->wsync_aio};
    for (int i = 0; i < 2; i++) {
        if (sync_aios[i] != NULL) {
            nng_aio_stop(sync_aios[i]);
            nng_aio_free(sync_aios[i]);
        }
    }
    bulk_unqueue(c); /* after the stops: nothing queues it again */
    nng_stream_free(c->s);
    nng_aio_free(c->rx_aio);
    nng_aio_free(c->tx_aio);
    if (c->has_cur) { /* a bulk payload cut short */
        txent_drop(c->t, &c->cur, PX_EUNREACHABLE);
    }
    pxn_hs_fini(&c->hs);
    sodium_memzero(&c->rx, sizeof(c->rx));
    sodium_memzero(&c->tx, sizeof(c->tx));
    free(c->rbuf);
    free(c->wcur);
    free(c->wnext);
    free(c->env);
    free(c->envp);
    arena_reset(&c->ar);
    free(c->ar.buf);
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

/* Appends b[0..n) (wire.c's handshake bytes, freed here); false if b is
 * NULL or out of memory. */
static bool out_take_locked(conn *c, uint8_t *b, size_t n) {
    bool ok = b != NULL && out_raw_locked(c, b, n);
    free(b);
    return ok;
}

static void out_hello_locked(conn *c) {
    size_t n = 0;
    uint8_t *b = pxn_hello_wire(&c->hs, &n); /* (before n is read) */
    if (!out_take_locked(c, b, n)) {
        conn_close_locked(c, "out of memory", PX_LOG_ERROR);
    }
}

/* ---- the outbound queues -> frames ---- */

/* The largest frame both ends of c accept. */
static uint32_t frame_budget(const conn *c) {
    uint32_t own = c->t->cfg.max_frame;
    uint32_t theirs = c->hs.peer != NULL ? c->hs.peer->max_frame : own;
    return own < theirs ? own : theirs;
}

#define PF_AHEAD 8

/* Moves queued envelopes of c's lane into one Batch frame (as many as fit).
 * The envelope of a bulk payload goes with no payload, and the payload
 * moves to the BULK queue (*kick_bulk set). Lock held. */
static void pack_batch_locked(conn *c, bool *kick_bulk) {
    peer *p = c->p;
    px_transport *t = c->t;
    txq *q = &p->q[c->lane];
    if (q->len == 0) {
        return;
    }
    /* Frames of at most ~128 KiB: packing, writing and decoding overlap. */
    size_t cap = (size_t)t->cfg.bulk_threshold + ENV_OVERHEAD + 1024;
    cap = cap > BATCH_MAX ? cap : BATCH_MAX;
    size_t budget = frame_budget(c) - PXN_TAG_BYTES - 16, used = 0, k = 0;
    budget = budget < cap ? budget : cap;
    while (k < q->len) {
        txent *e = txq_at(q, k);
        size_t est = (e->type ? strlen(e->type) : 0) + ENV_OVERHEAD;
        if (e->bulk_id == 0 && e->len + est > budget) {
            e->bulk_id = ++p->bulk_seq; /* the peer's frames are smaller than ours */
        }
        est += e->bulk_id ? 0 : e->len;
        if (k > 0 && used + est > budget) {
            break;
        }
        used += est;
        k++;
    }
    if (k > c->ecap) {
        size_t nc = c->ecap ? c->ecap : 64;
        while (nc < k) {
            nc *= 2;
        }
        Plexus__Envelope *ne = realloc(c->env, nc * sizeof(*ne));
        c->env = ne ? ne : c->env;
        Plexus__Envelope **np = realloc(c->envp, nc * sizeof(*np));
        c->envp = np ? np : c->envp;
        if (ne == NULL || np == NULL) {
            return; /* retried at the next kick */
        }
        c->ecap = nc;
    }
    Plexus__Envelope *env = c->env, **envp = c->envp;
    size_t n = 0;
    for (size_t i = 0; i < k; i++) {
        txent *e = txq_at(q, i);
        /* The messages were made by senders on other cores: ask for the
         * block PF_AHEAD entries on, and for the payload of the one half
         * as far (its block has arrived by then), so the misses overlap. */
        if (i + PF_AHEAD < k) {
            const txent *f = txq_at(q, i + PF_AHEAD);
            if (f->m != NULL) {
                __builtin_prefetch(f->m);
            }
        }
        if (i + PF_AHEAD / 2 < k) {
            const txent *f = txq_at(q, i + PF_AHEAD / 2);
            if (f->packed == NULL && f->m != NULL) {
                __builtin_prefetch(px_msg_data(f->m, NULL));
            }
        }
        if ((p->node_inc != 0 && e->to.node_inc != p->node_inc) ||
            (e->bulk_id != 0 && p->peer_max_msg != 0 && e->len > p->peer_max_msg)) {
            continue; /* an older incarnation, or too large for the peer: dropped below */
        }
        Plexus__Envelope *v = &env[n];
        plexus__envelope__init(v);
        pxn_env_set_to(v, e->to);
        pxn_env_set_from(v, e->from);
        v->corr = e->corr;
        v->flags = e->flags;
        v->type = (char *)(uintptr_t)(e->type ? e->type : "");
        v->tag = e->tag;
        v->sysop = e->sysop;
        if (e->bulk_id != 0) {
            v->bulk_id = e->bulk_id;
            v->bulk_len = e->len;
        } else {
            v->payload.len = e->len;
            v->payload.data = (uint8_t *)(uintptr_t)txent_data(e);
        }
        envp[n++] = v;
    }
    Plexus__Batch b = PLEXUS__BATCH__INIT;
    b.n_envelopes = n;
    b.envelopes = envp;
    Plexus__Frame f = PLEXUS__FRAME__INIT;
    f.body_case = PLEXUS__FRAME__BODY_BATCH;
    f.batch = &b;
    bool ok = n == 0 || out_frame_locked(c, &f);
    if (!ok) {
        conn_close_locked(c, "out of memory packing a frame", PX_LOG_ERROR);
        return;
    }
    CNT(t, lane_msgs_out[c->lane], n);
    for (size_t i = 0; i < k; i++) {
        txent *e = txq_at(q, 0);
        p->qmsgs--;
        if (p->node_inc != 0 && e->to.node_inc != p->node_inc) {
            ent_bytes_sub(p, e);
            txent_drop(t, e, PX_EDEAD);
        } else if (e->bulk_id != 0 && p->peer_max_msg != 0 && e->len > p->peer_max_msg) {
            /* queued before the handshake told us the peer's limit: the
             * sender hears of it (through the deferred notices: no call into
             * core under this lock) */
            ent_bytes_sub(p, e);
            notice_defer(t, e->from, e->to, PX_EMSGSIZE, e->corr);
            txent_drop(t, e, PX_EMSGSIZE);
        } else if (e->bulk_id != 0) {
            if (txq_push(&p->q[L_BLK], e)) { /* the payload follows on BULK */
                *kick_bulk = true;
            } else {
                ent_bytes_sub(p, e);
                txent_drop(t, e, PX_ENOMEM);
            }
        } else {
            qbytes_sub(p, e->len);
            txent_free(e);
        }
        txq_pop(q);
    }
}

/* One read or write on s that ends at once (latency mode): a callback-less
 * aio started and cancelled — the stream moves now what the socket has or
 * takes, else the cancel ends it having moved nothing. *n: bytes moved
 * (0 and NNG_ECANCELED when none); other nng errors as they come. */
static int io_now(nng_stream *s, nng_aio *aio, nng_iov *iov, bool send, size_t *n) {
    nng_aio_set_iov(aio, 1, iov);
    if (send) {
        nng_stream_send(s, aio);
    } else {
        nng_stream_recv(s, aio);
    }
    nng_aio_cancel(aio);
    nng_aio_wait(aio);
    int rv = nng_aio_result(aio);
    *n = rv == 0 ? nng_aio_count(aio) : 0;
    return rv;
}

static void start_write_locked(conn *c, bool sync_ok) {
    if (c->writing || c->wnext_len == 0 || c->state == C_CLOSED) {
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
    if (sync_ok && c->wsync_aio != NULL && c->lane != L_BLK) {
        /* Latency mode: write here and now, without the completion's
         * hand-off to an nng thread. */
        size_t n = 0;
        int rv = io_now(c->s, c->wsync_aio, &iov, true, &n);
        if (rv != 0 && rv != NNG_ECANCELED) {
            c->writing = false;
            conn_close_locked(c, nng_strerror(rv), PX_LOG_WARN);
            return;
        }
        CNT(c->t, lane_bytes_out[c->lane], n);
        c->wcur_off = n;
        if (n == c->wcur_len) {
            CNT(c->t, writes_inline, 1);
            c->writing = false;
            return;
        }
        iov = (nng_iov){c->wcur + n, c->wcur_len - n}; /* the rest: as usual */
    }
    nng_aio_set_iov(c->tx_aio, 1, &iov);
    nng_stream_send(c->s, c->tx_aio);
}

/* ---- BULK's window ----
 *
 * A slow path (a throttled link, a congested uplink) has a queue in front
 * of it that all three connections share. Left alone, BULK keeps it full:
 * a heartbeat or a small message then waits behind seconds of chunks, and
 * when the queue overflows their packets are dropped and TCP backs them off
 * past any timeout. So BULK keeps the bytes it has in flight — sealed, and
 * not yet credited by the listener (Credit frames on the same connection) —
 * within a window, and reads the queue from CONTROL's round trip: when one
 * rises more than cfg.bulk_delay_ms above the quiet level (pings sent while
 * BULK was idle), the window halves (once per round trip: only a pong of a
 * ping sent after the last cut cuts again); while round trips stay below
 * it, each credit grows the window — by the bytes credited until the first
 * cut (doubling per round trip), then by an eighth of a window per window.
 * Chunks are a quarter of the window, so a small window still moves.
 * A peer that did not promise Credit in its Hello is not paced. */

static bool bulk_open(const conn *c) { return !c->bpace || c->bsent - c->backed < c->bwin; }

/* The quiet CONTROL round trip (UINT32_MAX: none yet): the least of the
 * pings sent while BULK was idle, over two slots of RTT_QUIET_SLOT_MS; when
 * BULK has been busy all that time, the least of all pings over two slots
 * of RTT_ANY_SLOT_MS (a queue BULK keeps standing then counts as quiet:
 * the round trip may creep up by bulk_delay_ms per RTT_ANY_SLOT_MS). */
static uint32_t rtt_quiet_locked(const peer *p) {
    uint32_t q = p->rtt_quiet[0] < p->rtt_quiet[1] ? p->rtt_quiet[0] : p->rtt_quiet[1];
    uint32_t a = p->rtt_any[0] < p->rtt_any[1] ? p->rtt_any[0] : p->rtt_any[1];
    return q != UINT32_MAX ? q : a;
}

/* Notes a CONTROL round trip of us microseconds; busy: BULK had bytes in
 * flight when its ping left. Returns the quiet round trip. */
static uint32_t rtt_quiet_note_locked(peer *p, uint32_t us, bool busy, int64_t now) {
    if (now - p->rtt_quiet_at_ms >= RTT_QUIET_SLOT_MS) {
        p->rtt_quiet_at_ms = now;
        p->rtt_quiet[1] = p->rtt_quiet[0];
        p->rtt_quiet[0] = UINT32_MAX;
    }
    if (now - p->rtt_any_at_ms >= RTT_ANY_SLOT_MS) {
        p->rtt_any_at_ms = now;
        p->rtt_any[1] = p->rtt_any[0];
        p->rtt_any[0] = UINT32_MAX;
    }
    if (!busy && us < p->rtt_quiet[0]) {
        p->rtt_quiet[0] = us;
    }
    p->rtt_any[0] = us < p->rtt_any[0] ? us : p->rtt_any[0];
    return rtt_quiet_locked(p);
}

static void rtt_quiet_reset_locked(peer *p, int64_t now) {
    p->rtt_quiet[0] = p->rtt_quiet[1] = p->rtt_any[0] = p->rtt_any[1] = UINT32_MAX;
    p->rtt_quiet_at_ms = p->rtt_any_at_ms = now;
    p->bulk_calm = true;
}

/* Whether p's BULK connection has chunk bytes in flight or waits for credit. */
static bool bulk_busy_locked(const peer *p) {
    const conn *b = p->c[L_BLK];
    return b != NULL && b->state == C_UP && b->bpace && (b->bsent != b->backed || b->bwait);
}

/* A pong: the round trip us of a ping sent at sent_ns, busy = BULK had bytes
 * in flight then. Judges the path's queue for BULK's window. p->mtx held. */
static void bulk_on_rtt_locked(peer *p, uint32_t us, bool busy, uint64_t sent_ns) {
    px_transport *t = p->t;
    uint32_t quiet = rtt_quiet_note_locked(p, us, busy, now_ms());
    uint64_t over = us > quiet ? (uint64_t)(us - quiet) : 0;
    p->bulk_calm = over <= (uint64_t)t->cfg.bulk_delay_ms * 1000;
    conn *b = p->c[L_BLK];
    if (p->bulk_calm || b == NULL || b->state != C_UP || !b->bpace || sent_ns <= b->bcut_ns) {
        return;
    }
    b->bss = false;
    b->bcut_ns = now_ns();
    if (b->bwin > BULK_WIN_MIN) {
        b->bwin = b->bwin / 2 > BULK_WIN_MIN ? b->bwin / 2 : BULK_WIN_MIN;
        CNT(t, bulk_cuts, 1);
    }
}

/* A Credit on c (a dialer's BULK connection). Returns a reason to drop the
 * link, or NULL. Lock held. */
static const char *bulk_on_credit_locked(conn *c, uint64_t bytes) {
    if (!c->bpace) {
        return NULL; /* not asked for: ignored */
    }
    if (bytes < c->backed || bytes > c->bsent) {
        return "a credit for chunk bytes never sent";
    }
    c->bcredit_ms = now_ms();
    uint64_t delta = bytes - c->backed;
    /* Grow only a window that limited the sender, on a calm path. */
    bool limited = c->bwait || c->bsent - c->backed + BULK_CHUNK_MIN >= c->bwin;
    c->backed = bytes;
    if (limited && c->p->bulk_calm && delta > 0) {
        uint64_t inc = c->bwin / 8 > BULK_CHUNK_MIN ? c->bwin / 8 : BULK_CHUNK_MIN;
        uint64_t grow = c->bss ? delta : delta * inc / c->bwin;
        c->bwin += grow > 0 ? grow : 1;
        c->bwin = c->bwin < BULK_WIN_MAX ? c->bwin : BULK_WIN_MAX;
    }
    return NULL;
}

static void bulk_fill_locked(conn *c);

/* The window opened: write the next chunk if BULK was waiting for it. */
static void bulk_resume_locked(conn *c) {
    if (c->bwait && bulk_open(c) && !c->writing && c->wnext_len == 0 && c->state == C_UP) {
        c->bwait = false;
        c->writing = true;
        bulk_fill_locked(c);
    }
}

/* BULK: seals the next chunk of the payload in hand (taking the next one
 * from the queue when done) and writes it, if the window is open. Runs
 * only in c's callbacks, with c->writing set so nothing else writes: the
 * lock is dropped while packing and sealing. Lock held. */
static void bulk_fill_locked(conn *c) {
    peer *p = c->p;
    px_transport *t = c->t;
    if (!bulk_open(c)) {
        c->writing = false;
        if (!c->bwait && (c->has_cur || p->q[L_BLK].len > 0)) {
            c->bwait = true;
            CNT(t, bulk_waits, 1);
        }
        return;
    }
    while (!c->has_cur) {
        if (p->q[L_BLK].len == 0) {
            c->writing = false;
            return;
        }
        c->cur = *txq_at(&p->q[L_BLK], 0);
        txq_pop(&p->q[L_BLK]);
        c->cur_off = 0;
        c->has_cur = true;
        if (p->node_inc != 0 && c->cur.to.node_inc != p->node_inc) {
            bbytes_sub(p, c->cur.len);
            txent_drop(t, &c->cur, PX_EDEAD);
            c->has_cur = false;
        }
    }
    size_t chunk = frame_budget(c) - PXN_TAG_BYTES - CHUNK_OVERHEAD;
    chunk = chunk < CHUNK_MAX ? chunk : CHUNK_MAX;
    if (c->bpace) {
        uint64_t w = c->bwin / 4 > BULK_CHUNK_MIN ? c->bwin / 4 : BULK_CHUNK_MIN;
        chunk = chunk < w ? chunk : (size_t)w;
    }
    size_t n = c->cur.len - c->cur_off < chunk ? c->cur.len - c->cur_off : chunk;
    Plexus__Chunk ch = PLEXUS__CHUNK__INIT;
    ch.bulk_id = c->cur.bulk_id;
    ch.offset = c->cur_off;
    ch.bulk_len = c->cur.len;
    ch.data = (ProtobufCBinaryData){n, (uint8_t *)(uintptr_t)(txent_data(&c->cur) + c->cur_off)};
    Plexus__Frame f = PLEXUS__FRAME__INIT;
    f.body_case = PLEXUS__FRAME__BODY_CHUNK;
    f.chunk = &ch;
    size_t pn = plexus__frame__get_packed_size(&f);
    size_t total = pxn_sealed_len(&c->tx, pn);
    if (!reserve(&c->wnext, &c->wnext_cap, total)) {
        c->writing = false;
        conn_close_locked(c, "out of memory for a chunk", PX_LOG_ERROR);
        return;
    }
    uint8_t *at = c->wnext;
    nng_mtx_unlock(c->mtx);
    plexus__frame__pack(&f, at + PXN_LEN_BYTES);
    pxn_seal(&c->tx, at + PXN_LEN_BYTES, pn, at);
    nng_mtx_lock(c->mtx);
    CNT(t, frames_out, 1);
    c->cur_off += n;
    if (c->bsent == c->backed) {
        c->bcredit_ms = now_ms(); /* the first bytes in flight: a credit is due from now */
    }
    c->bsent += n;
    if (c->cur_off == c->cur.len) {
        bbytes_sub(p, c->cur.len);
        txent_free(&c->cur);
        c->has_cur = false;
        CNT(t, lane_msgs_out[L_BLK], 1);
    }
    c->writing = false;
    if (c->state == C_CLOSED) {
        return;
    }
    c->wnext_len = total;
    start_write_locked(c, false);
}

/* Starts a write of everything pending, if none is in flight. Lock held.
 * For BULK it only queues a kick for the BULK thread (kick_run), which
 * seals the next chunk. */
#define SYNC_WRITES 8
static void tx_kick_locked(conn *c) {
    if (c->writing || c->state == C_CLOSED) {
        return;
    }
    if (c->state == C_UP && c->role == PXN_DIALER && c->lane == L_BLK) {
        if (c->wnext_len == 0) {
            if ((c->has_cur || c->p->q[L_BLK].len > 0) && !c->bwait) {
                c->writing = true;
                (void)bulk_post(c, BJ_KICK); /* always (a BULK dialer): bulk_fill,
                                                which checks the window */
            }
            return;
        }
    }
    bool kick_bulk = false;
    /* A synchronous write (latency mode) leaves nothing in flight: pack and
     * write again what is queued, a few times, then leave the rest to the
     * completion of an ordinary write. */
    for (int round = 0; round < SYNC_WRITES; round++) {
        if (c->state == C_UP && c->role == PXN_DIALER && c->lane != L_BLK) {
            pack_batch_locked(c, &kick_bulk);
        }
        start_write_locked(c, round + 1 < SYNC_WRITES);
        bool more = c->wnext_len > 0 || (c->state == C_UP && c->role == PXN_DIALER &&
                                         c->lane != L_BLK && c->p->q[c->lane].len > 0);
        if (c->writing || !more || c->state == C_CLOSED) {
            break;
        }
    }
    if (kick_bulk && c->p->c[L_BLK] != NULL) {
        tx_kick_locked(c->p->c[L_BLK]);
    }
}

static void kick_run(conn *c) {
    nng_mtx_lock(c->mtx);
    if (c->state != C_UP) {
        c->writing = false;
    } else {
        bulk_fill_locked(c);
    }
    nng_mtx_unlock(c->mtx);
}

static void tx_run(conn *c) {
    nng_mtx_lock(c->mtx);
    int rv = nng_aio_result(c->tx_aio);
    if (rv != 0) {
        c->writing = false;
        conn_close_locked(c, nng_strerror(rv), PX_LOG_WARN);
        nng_mtx_unlock(c->mtx);
        return;
    }
    size_t n = nng_aio_count(c->tx_aio);
    CNT(c->t, lane_bytes_out[c->lane], n);
    c->wcur_off += n;
    if (c->wcur_off < c->wcur_len) { /* a short write: the rest */
        nng_iov iov = {c->wcur + c->wcur_off, c->wcur_len - c->wcur_off};
        nng_aio_set_iov(c->tx_aio, 1, &iov);
        nng_stream_send(c->s, c->tx_aio);
        nng_mtx_unlock(c->mtx);
        return;
    }
    c->writing = false;
    if (c->state == C_UP && c->role == PXN_DIALER && c->lane == L_BLK && c->wnext_len == 0) {
        c->writing = true;
        bulk_fill_locked(c);
    } else {
        tx_kick_locked(c);
    }
    nng_mtx_unlock(c->mtx);
}

/* ---- closing ---- */

static void peer_fail_queue_locked(peer *p, px_err why) {
    for (int l = 0; l < NLANES; l++) {
        txq *q = &p->q[l];
        while (q->len > 0) {
            txent_drop(p->t, txq_at(q, 0), why);
            txq_pop(q);
        }
    }
    p->qmsgs = 0;
    p->qbytes = 0;
    p->bbytes = 0;
}

/* The peer cannot be reached: sends fail fast, its queue becomes dead
 * letters, and the tick redials after the backoff (doubled, capped) — once
 * per failure, however many of its connections report it. */
static void peer_down_locked(peer *p) {
    int64_t now = now_ms();
    if (atomic_load(&p->gone) != P_ACTIVE) {
        p->state = PX_LINK_GONE;
        p->retry_at_ms = INT64_MAX;
    } else if (p->state != PX_LINK_UNREACHABLE || now >= p->retry_at_ms) {
        p->state = PX_LINK_UNREACHABLE;
        p->retry_at_ms = now + p->backoff_ms;
        uint32_t cap = p->t->cfg.reconnect_max_ms;
        p->backoff_ms = p->backoff_ms * 2 > cap ? cap : p->backoff_ms * 2;
    }
    peer_fail_queue_locked(p, PX_EUNREACHABLE);
}

/* One outbound connection failed: close its siblings too, the peer is
 * down. Lock held. */
static void peer_lanes_down_locked(peer *p, const char *why) {
    conn *cs[NLANES];
    for (int l = 0; l < NLANES; l++) {
        cs[l] = p->c[l];
        p->c[l] = NULL;
    }
    for (int l = 0; l < NLANES; l++) {
        if (cs[l] != NULL) {
            conn_close_locked(cs[l], why, PX_LOG_INFO);
        }
    }
    peer_down_locked(p);
}

/* Marks c closed and closes its stream (its aios then complete with an
 * error); the tick frees it. An outbound link's peer becomes unreachable
 * and is redialled after its backoff; an inbound one's receiving state is
 * dropped if c was its current NORMAL or BULK connection. Lock held. */
static void conn_close_locked(conn *c, const char *why, px_log_level lvl) {
    if (c->state == C_CLOSED) {
        return;
    }
    bool was_up = c->state == C_UP;
    c->state = C_CLOSED;
    nng_stream_close(c->s);
    px_transport *t = c->t;
    peer *p = c->p;
    /* A peer that keeps failing (wrong secret, refused) logs each reason
     * once per streak — on any lane, either side — and at DEBUG after that,
     * until it is UP again. The counters count every attempt. */
    uint32_t bit = 1u << (px_node_id(why) % 32);
    if (!was_up && p != NULL && (atomic_fetch_or(&p->fail_logged, bit) & bit)) {
        lvl = PX_LOG_DEBUG;
    }
    if (!atomic_load(&t->stopping)) {
        px_log(t->sys, lvl, "link %s %s: %s", c->who, was_up ? "closed" : "failed", why);
    }
    if (p == NULL) {
        return;
    }
    if (c->role == PXN_DIALER && p->c[c->lane] == c) {
        p->c[c->lane] = NULL;
        char sib[160];
        snprintf(sib, sizeof(sib), "its %s connection went down", lane_name[c->lane]);
        peer_lanes_down_locked(p, sib);
    } else if (c->role == PXN_LISTENER) {
        nng_mtx_lock(p->rx_mtx);
        if (p->rx.in[c->lane] == c) {
            p->rx.in[c->lane] = NULL;
            if (c->lane != L_CTL) {
                rx_reset_locked(p, PX_EUNREACHABLE);
            }
        }
        nng_mtx_unlock(p->rx_mtx);
    }
}

/* ---- receiving: the handshake ---- */

static void rx_want(conn *c, int phase, size_t need) {
    c->rphase = phase;
    c->rneed = need;
}

#define RX_CHUNK (64u << 10) /* a read asks for at least this much */

/* The free end of the buffer for the next read, after moving what is not
 * parsed yet to its front and making room for the unit being read. False
 * (c closed) when there is no memory for it. */
static bool rx_room(conn *c, nng_iov *iov) {
    size_t keep = c->rphase == R_BODY ? PXN_LEN_BYTES : 0; /* a body's header is its AD */
    if (c->roff > keep) {
        memmove(c->rbuf, c->rbuf + c->roff - keep, c->rlen - c->roff + keep);
        c->rlen -= c->roff - keep;
        c->roff = keep;
    }
    size_t need = c->rneed + (c->rphase == R_BODY ? PXN_LEN_BYTES : 0);
    need = need > RX_CHUNK ? need : RX_CHUNK;
    if (!reserve(&c->rbuf, &c->rcap, need > c->rlen + 1024 ? need : c->rlen + 1024)) {
        conn_close_locked(c, "out of memory for a frame", PX_LOG_ERROR);
        return false;
    }
    *iov = (nng_iov){c->rbuf + c->rlen, c->rcap - c->rlen};
    return true;
}

/* Whether c is closed — closing it first if a newer connection replaced it
 * (nng 1.5 never ends a read started after nng_stream_close, so a replaced
 * connection is closed at its next read start). Lock held. */
static bool rx_closed_locked(conn *c) {
    if (atomic_load(&c->superseded)) {
        conn_close_locked(c, "superseded by a newer connection", PX_LOG_DEBUG);
    }
    return c->state == C_CLOSED;
}

/* A polled connection in POLL with rx_aio's buffer set: when no worker
 * spins, rx_aio reads it (unless a poller or the parker took it first).
 * Lock held. */
static void arm_if_unwatched(conn *c) {
    int want = RXM_POLL;
    if (atomic_load(&c->t->spinners) == 0 &&
        atomic_compare_exchange_strong(&c->rxm, &want, RXM_ARMED)) {
        nng_stream_recv(c->s, c->rx_aio);
    }
}

/* A polled connection's next read (rx_aio's buffer set): the pollers' while
 * some worker spins, else rx_aio's. The seq_cst store then load pairs with
 * the last spinner's PARK (decrement, then CAS on rxm): one of the two arms
 * it. Lock held. */
static void leave_to_pollers(conn *c) {
    atomic_store(&c->rxm, RXM_POLL);
    arm_if_unwatched(c);
}

/* Starts the next read: rx_aio's, or — a polled connection while workers
 * spin — leaves it to them (rxm POLL). Lock held. */
static void rx_start(conn *c) {
    nng_iov iov;
    if (rx_closed_locked(c) || !rx_room(c, &iov)) {
        return;
    }
    nng_aio_set_iov(c->rx_aio, 1, &iov);
    if (c->pollable) {
        leave_to_pollers(c);
        return;
    }
    nng_stream_recv(c->s, c->rx_aio);
}

/* The active peer with identity pk (removed and replaced ones are not
 * peers: their connections are refused). */
static peer *peer_by_pk(px_transport *t, const uint8_t *pk) {
    size_t n = atomic_load(&t->npeers);
    for (size_t i = 0; i < n; i++) {
        if (atomic_load(&t->peers[i].gone) == P_ACTIVE &&
            sodium_memcmp(t->peers[i].pk, pk, PX_PUBKEY_BYTES) == 0) {
            return &t->peers[i];
        }
    }
    return NULL;
}

static void refuse_locked(conn *c, Plexus__Refuse__Reason r, const char *detail) {
    /* A listener has sent nothing yet: the refusal takes its hello's place
     * (preamble first). Best effort: the connection closes after it. */
    size_t n = 0;
    uint8_t *b = pxn_refuse_wire(r, detail, c->role == PXN_LISTENER, &n);
    (void)out_take_locked(c, b, n);
    CNT(c->t, refused, 1);
}

/* The peer's handshake frame arrived. */
static void on_hello_locked(conn *c, const uint8_t *data, size_t n) {
    px_transport *t = c->t;
    Plexus__Refuse__Reason rr;
    char why[300];
    px_err rv = pxn_hs_peer(&c->hs, data, n,
                            c->role == PXN_DIALER ? (uint32_t)c->lane : PXN_LANE_ANY, &rr, why,
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
        c->lane = (int)h->lane;
        atomic_store(&c->on_bthr, c->lane == L_BLK);
        snprintf(c->who, sizeof(c->who), "from %s (%s, %s)", p->name, c->raddr,
                 lane_name[c->lane]);
        out_hello_locked(c);
    }
    if (pxn_hs_keys(&c->hs, &c->rx, &c->tx) != PX_OK) {
        conn_close_locked(c, "weak key exchange key", PX_LOG_ERROR);
        return;
    }
    size_t an = 0;
    uint8_t *auth = pxn_auth_seal(&c->hs, &c->tx, &an);
    if (!out_take_locked(c, auth, an)) {
        conn_close_locked(c, "out of memory", PX_LOG_ERROR);
        return;
    }
    CNT(c->t, frames_out, 1);
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
    if (c->role == PXN_LISTENER) {
        /* The newest inbound connection of a lane is the peer's current one
         * (an older one is left over from before a restart or a redial). */
        nng_mtx_lock(p->rx_mtx);
        if (p->rx.inc != inc) {
            rx_reset_locked(p, PX_EDEAD);
            p->rx.inc = inc;
        }
        conn *old = p->rx.in[c->lane];
        p->rx.in[c->lane] = c;
        if (old != NULL && c->lane != L_CTL) {
            rx_reset_locked(p, PX_EUNREACHABLE);
        }
        if (old != NULL) {
            /* Under rx_mtx: old cannot finish closing (and be freed) before
             * this. Its callbacks then see the error and close it; what it
             * still holds is refused as superseded (deliver_batch). A read
             * nng starts after the close never ends (nng 1.5), so old's
             * next read start (rx_start, a poller) closes it instead. */
            atomic_store(&old->superseded, true);
            nng_stream_close(old->s);
        }
        nng_mtx_unlock(p->rx_mtx);
        atomic_store(&p->last_ping_in_ms, now_ms());
        atomic_store(&p->etcd_silent_ms, 0); /* until its first ping says */
        atomic_store(&p->fail_logged, 0);
        if (c->lane == L_NRM) {
            poll_enlist_locked(c); /* its next rx_start leaves it to the pollers */
        }
        return;
    }
    if (p->node_inc != 0 && p->node_inc != inc) {
        px_log(t->sys, PX_LOG_WARN,
               "peer %s restarted: incarnation %08x -> %08x; refs to the old one are dead",
               p->name, p->node_inc, inc);
    }
    p->node_inc = inc;
    p->peer_max_msg = c->hs.peer->max_msg;
    p->peer_max_frame = c->hs.peer->max_frame;
    if (c->lane == L_BLK && t->self.credit && c->hs.peer->credit) {
        c->bpace = c->bss = true; /* the listener promised Credit */
        c->bwin = BULK_WIN_START;
        c->bcredit_ms = now_ms();
    }
    for (int l = 0; l < NLANES; l++) {
        if (p->c[l] == NULL || p->c[l]->state != C_UP) {
            return;
        }
    }
    p->state = PX_LINK_UP;
    atomic_store(&p->fail_logged, 0);
    p->backoff_ms = 50;
    p->rtt_max_us = 0;
    p->rtt_n = 0;
    rtt_quiet_reset_locked(p, now_ms());
    px_log(t->sys, PX_LOG_INFO, "link to %s (%s) up%s", p->name, p->address,
           t->cfg.plaintext ? " (PLAINTEXT: frames are not encrypted)" : "");
    for (int l = 0; l < NLANES; l++) {
        tx_kick_locked(p->c[l]);
    }
}

/* ---- receiving: envelopes, bulk payloads, hold-back ---- */

static px_msg *msg_of_payload(px_transport *t, const char *type, uint32_t tag,
                              const uint8_t *data, size_t len, px_err *why) {
    px_msg *m = NULL;
    if (type == NULL || type[0] == '\0') {
        *why = px_msg_bytes(&m, tag, data, len);
        return *why == PX_OK ? m : NULL;
    }
    const ProtobufCMessageDescriptor *d = px_type_lookup(t->sys, type);
    if (d == NULL) {
        *why = PX_ETYPE;
        return NULL;
    }
    ProtobufCMessage *pb = pxn_pb_depth_ok(d, data, len, PXN_PB_MAX_DEPTH)
                               ? protobuf_c_message_unpack(d, NULL, len, data)
                               : NULL;
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

/* The ref inside an Undelivered notice. */
static px_ref ref_of(const Plexus__ActorRef *r) {
    return r ? (px_ref){r->node, r->node_inc, r->id, r->inc} : PX_REF_NIL;
}

static void undeliverable(peer *p, px_ref to, px_err why) {
    px_transport *t = p->t;
    CNT(t, undeliverable, 1);
    char rb[48];
    px_log(t->sys, PX_LOG_DEBUG, "message from %s to %s not delivered: %s", p->name,
           px_ref_format(to, rb, sizeof(rb)), px_errname(why));
}

/* Queues the system envelope e (packed, its `to` on p's node) on p's
 * `lane`; the queue owns e->packed on PX_OK. PX_EUNREACHABLE (p is
 * unreachable or gone, or e is for another incarnation of it), PX_EFULL
 * (p's queue bounds), PX_ENOMEM. Any thread; takes p->mtx. */
static px_err sys_enqueue(peer *p, txent *e, int lane) {
    px_transport *t = p->t;
    px_err rv = PX_OK;
    nng_mtx_lock(p->mtx);
    if (p->state == PX_LINK_UNREACHABLE || p->state == PX_LINK_GONE ||
        (p->node_inc != 0 && e->to.node_inc != p->node_inc)) {
        rv = PX_EUNREACHABLE;
    } else if (p->qmsgs >= t->cfg.queue_msgs || p->qbytes + e->len > t->cfg.queue_bytes) {
        rv = PX_EFULL;
    } else if (!txq_push(&p->q[lane], e)) {
        rv = PX_ENOMEM;
    } else {
        p->qmsgs++;
        p->qbytes += e->len;
        if (p->c[lane] != NULL && p->c[lane]->state == C_UP) {
            tx_kick_locked(p->c[lane]);
        }
    }
    nng_mtx_unlock(p->mtx);
    return rv;
}

/* Tells `sender` (an actor on p's node) that its message to the local actor
 * `to` was not delivered: a SYS_UNDELIVERED envelope on p's CONTROL lane.
 * Dropped (counted) if that queue is full or p is down. */
static void notify_sender(peer *p, px_ref sender, px_ref to, px_err code, uint64_t corr) {
    px_transport *t = p->t;
    if (px_ref_is_nil(sender) || atomic_load(&t->stopping)) {
        return;
    }
    Plexus__ActorRef r = PLEXUS__ACTOR_REF__INIT;
    r.node = to.node;
    r.node_inc = to.node_inc;
    r.id = to.id;
    r.inc = to.inc;
    Plexus__Undelivered u = PLEXUS__UNDELIVERED__INIT;
    u.to = &r;
    u.code = code;
    u.corr = corr;
    txent e = {.to = sender, .from = to, .corr = corr, .flags = PLEXUS__ENVELOPE_FLAG__FLAG_SYSTEM,
               .type = plexus__undelivered__descriptor.name,
               .sysop = PLEXUS__SYS_OP__SYS_UNDELIVERED};
    e.len = plexus__undelivered__get_packed_size(&u);
    e.packed = malloc(e.len);
    if (e.packed == NULL) {
        CNT(t, notices_lost, 1);
        return;
    }
    plexus__undelivered__pack(&u, e.packed);
    if (sys_enqueue(p, &e, L_CTL) == PX_OK) {
        CNT(t, notices, 1);
    } else {
        free(e.packed);
        CNT(t, notices_lost, 1);
    }
}

static peer *peer_by_node(px_transport *t, uint32_t node);

void px_transport_set_on_sys(px_transport *t, px_sys_fn fn, void *arg) {
    if (t == NULL) {
        return;
    }
    if (fn != NULL) {
        atomic_store(&t->on_sys_arg, arg); /* before fn: a caller that sees fn sees arg */
        atomic_store(&t->on_sys, fn);
        return;
    }
    /* seq_cst both sides: a call counted after this load sees fn NULL; one
     * counted before it is waited for. Calls are short (copy and post). */
    atomic_store(&t->on_sys, NULL);
    while (atomic_load(&t->on_sys_calls) != 0) {
        nng_msleep(0);
    }
    atomic_store(&t->on_sys_arg, NULL);
}

px_err px_transport_send_sys(px_transport *t, px_ref to, px_ref from, uint64_t corr,
                             uint32_t sysop, const ProtobufCMessage *pb, int ordered) {
    if (t == NULL || sysop == 0) {
        return PX_EINVAL;
    }
    peer *p = atomic_load(&t->stopping) ? NULL : peer_by_node(t, to.node);
    if (p == NULL) {
        return PX_EUNREACHABLE;
    }
    txent e = {.to = to, .from = from, .corr = corr, .flags = PLEXUS__ENVELOPE_FLAG__FLAG_SYSTEM,
               .type = pb != NULL ? pb->descriptor->name : NULL, .sysop = sysop};
    e.len = pb != NULL ? protobuf_c_message_get_packed_size(pb) : 0;
    e.packed = malloc(e.len ? e.len : 1);
    if (e.packed == NULL) {
        return PX_ENOMEM;
    }
    if (pb != NULL) {
        protobuf_c_message_pack(pb, e.packed);
    }
    px_err rv = sys_enqueue(p, &e, ordered ? L_NRM : L_CTL);
    if (rv != PX_OK) {
        free(e.packed);
    }
    return rv;
}

typedef struct notice {
    struct notice *next;
    px_ref sender, to;
    px_err code;
    uint64_t corr;
} notice;

/* Records that `sender`'s message to `to` was not delivered; sent later by
 * pxl_notices_flush. Any context (callers may hold any transport lock, or be
 * inside core's enqueue). Bounded by queue_msgs; past that, counted lost. */
static void notice_defer(px_transport *t, px_ref sender, px_ref to, px_err code,
                         uint64_t corr) {
    if (px_ref_is_nil(sender)) {
        return;
    }
    notice *n = atomic_load(&t->nq_len) < t->cfg.queue_msgs ? malloc(sizeof(*n)) : NULL;
    if (n == NULL) {
        CNT(t, notices_lost, 1);
        return;
    }
    *n = (notice){.sender = sender, .to = to, .code = code, .corr = corr};
    nng_mtx_lock(t->nq_mtx);
    if (t->nq_tail != NULL) {
        t->nq_tail->next = n;
    } else {
        t->nq_head = n;
    }
    t->nq_tail = n;
    atomic_fetch_add(&t->nq_len, 1);
    nng_mtx_unlock(t->nq_mtx);
    atomic_store(&t->hurry, true);
}


/* Sends the deferred notices: to a sender on a peer as SYS_UNDELIVERED, to
 * one on this node straight through core. No lock may be held. */
void pxl_notices_flush(px_transport *t) {
    if (atomic_load(&t->nq_len) == 0) {
        return;
    }
    nng_mtx_lock(t->nq_mtx);
    notice *n = t->nq_head;
    t->nq_head = t->nq_tail = NULL;
    atomic_store(&t->nq_len, 0);
    nng_mtx_unlock(t->nq_mtx);
    uint32_t self = px_system_root(t->sys).node;
    while (n != NULL) {
        notice *nx = n->next;
        peer *p = n->sender.node == self ? NULL : peer_by_node(t, n->sender.node);
        if (n->sender.node == self) {
            (void)px_system_notify_undelivered(t->sys, n->sender, n->to, n->code, n->corr);
        } else if (p != NULL) {
            notify_sender(p, n->sender, n->to, n->code, n->corr);
        } else {
            CNT(t, notices_lost, 1);
        }
        free(n);
        n = nx;
    }
}

/* The router's hook: a DropNewest / DropOldest mailbox dropped a message
 * from an actor on a peer. Called from inside core's enqueue, anywhere. */
static void router_dropped(void *arg, px_ref to, px_ref sender, uint64_t corr) {
    px_transport *t = arg;
    if (!atomic_load(&t->stopping)) {
        notice_defer(t, sender, to, PX_EFULL, corr);
    }
}

/* A message that will not be delivered: counted, and its sender told —
 * unless the target is simply gone (at-most-once, as for local sends) or
 * it was a reply (its corr is the asker's, not the replier's). */
static void rx_fail(peer *p, px_ref to, px_ref from, uint64_t corr, uint32_t flags, px_msg *m,
                    px_err why) {
    px_msg_free(m);
    if (why == PX_EDEAD) {
        return; /* a dead letter, counted by core */
    }
    undeliverable(p, to, why);
    if (!(flags & PX_WIRE_REPLY)) {
        notice_defer(p->t, from, to, why, corr);
    }
}

/* One delivery attempt of it's message. True when it is done with
 * (delivered or failed), false when it waits parked at a full Block-policy
 * mailbox (until its deadline). now: the time, or 0 to read the clock only
 * if it is needed (the common path never does). rx_mtx held. */
static bool item_try(peer *p, rxitem *it, int64_t now) {
    px_transport *t = p->t;
    px_err e = px_system_deliver_remote(t->sys, it->to, it->from, it->corr, it->flags, &it->m);
    if (e == PX_OK) {
        CNT(t, msgs_in, 1);
    } else if (e == PX_EFULL && !it->parked) {
        px_mailbox_opts o;
        if (px_system_mailbox_opts(t->sys, it->to, &o) == PX_OK &&
            o.overflow == PX_OVERFLOW_BLOCK) {
            it->parked = true;
            it->deadline_ms = (now ? now : now_ms()) + o.block_timeout_ms;
            p->rx.nparked++;
            atomic_store(&t->hurry, true);
            return false;
        }
    } else if (e == PX_EFULL && (now ? now : now_ms()) < it->deadline_ms) {
        return false;
    } else if (e == PX_EFULL) {
        e = PX_ETIMEDOUT; /* blocked for block_timeout_ms */
    }
    if (it->parked) {
        it->parked = false;
        p->rx.nparked--;
    }
    if (e != PX_OK) {
        rx_fail(p, it->to, it->from, it->corr, it->flags, it->m, e);
        it->m = NULL;
    }
    return true;
}

static rxpair *pair_find(rxstate *rx, px_ref to, px_ref from) {
    for (size_t i = 0; i < rx->npairs; i++) {
        if (ref_eq(rx->pairs[i].to, to) && ref_eq(rx->pairs[i].from, from)) {
            return &rx->pairs[i];
        }
    }
    return NULL;
}

/* Appends it to its pair's queue (made if needed). False: out of memory. */
static bool pair_push(peer *p, rxitem *it) {
    rxstate *rx = &p->rx;
    rxpair *q = pair_find(rx, it->to, it->from);
    if (q == NULL) {
        if (rx->npairs == rx->pcap) {
            size_t nc = rx->pcap ? rx->pcap * 2 : 8;
            rxpair *np = realloc(rx->pairs, nc * sizeof(*np));
            if (np == NULL) {
                return false;
            }
            rx->pairs = np;
            rx->pcap = nc;
        }
        q = &rx->pairs[rx->npairs++];
        *q = (rxpair){.to = it->to, .from = it->from};
    }
    if (q->tail != NULL) {
        q->tail->next = it;
    } else {
        q->head = it;
    }
    q->tail = it;
    rx->nheld++;
    rx->held_bytes += it->bytes;
    return true;
}

static void item_free(px_transport *t, rxitem *it, px_err why) {
    if (it->m != NULL) {
        px_system_dead_letter(t->sys, it->to, it->m, why);
    } else if (why != PX_EDEAD) { /* a payload cut short */
        CNT(t, undeliverable, 1);
    }
    free(it->type);
    free(it);
}

/* Delivers pair i's envelopes from the front while they can go; drops the
 * pair when none is left (the last pair moves to i). rx_mtx held. */
static void pair_pump(peer *p, size_t i, int64_t now) {
    rxstate *rx = &p->rx;
    rxpair *q = &rx->pairs[i];
    while (q->head != NULL) {
        rxitem *it = q->head;
        if (it->m == NULL && it->failed == PX_OK) {
            return; /* its payload is still coming */
        }
        if (it->failed != PX_OK) {
            rx_fail(p, it->to, it->from, it->corr, it->flags, NULL, it->failed);
        } else if (!item_try(p, it, now)) {
            return; /* parked */
        }
        q->head = it->next;
        rx->nheld--;
        rx->held_bytes -= it->bytes;
        item_free(p->t, it, PX_EDEAD);
    }
    rx->pairs[i] = rx->pairs[--rx->npairs];
}

/* Retries every pair (after a payload completed, and from the tick while
 * envelopes are parked). rx_mtx held. */
static void rx_pump_all(peer *p) {
    int64_t now = now_ms();
    for (size_t i = p->rx.npairs; i-- > 0;) {
        pair_pump(p, i, now);
    }
}

static void bulk_free(rxstate *rx, rxbulk *b) {
    for (rxbulk **pb = &rx->bulks; *pb != NULL; pb = &(*pb)->next) {
        if (*pb == b) {
            *pb = b->next;
            break;
        }
    }
    rx->bulk_bytes -= b->buf ? b->len : 0;
    free(b->buf);
    free(b);
}

void pxl_rx_reset(peer *p, px_err why) { rx_reset_locked(p, why); }

/* Drops everything held and every partial payload (the connection that
 * carried them is gone, or the peer restarted). rx_mtx held. */
static void rx_reset_locked(peer *p, px_err why) {
    rxstate *rx = &p->rx;
    for (size_t i = 0; i < rx->npairs; i++) {
        while (rx->pairs[i].head != NULL) {
            rxitem *it = rx->pairs[i].head;
            rx->pairs[i].head = it->next;
            item_free(p->t, it, why);
        }
    }
    rx->npairs = 0;
    rx->nheld = 0;
    rx->held_bytes = 0;
    rx->nparked = 0;
    while (rx->bulks != NULL) {
        bulk_free(rx, rx->bulks);
    }
}

/* A message ready for `to`: delivered now, or queued behind what waits in
 * its pair (or parked, if the target's Block mailbox is full). rx_mtx held. */
static void rx_ready(peer *p, px_ref to, px_ref from, uint64_t corr, uint32_t flags, px_msg *m,
                     size_t bytes) {
    rxitem one = {.to = to, .from = from, .corr = corr, .flags = flags, .m = m, .bytes = bytes};
    bool queued = p->rx.npairs > 0 && pair_find(&p->rx, to, from) != NULL;
    if (!queued && item_try(p, &one, 0)) {
        return; /* the common case: delivered (or failed) at once */
    }
    rxitem *it = malloc(sizeof(*it));
    if (it != NULL) {
        *it = one;
    }
    if (it == NULL || !pair_push(p, it)) {
        if (one.parked) {
            p->rx.nparked--;
        }
        free(it);
        rx_fail(p, to, from, corr, flags, one.m, PX_ENOMEM);
        return;
    }
    if (queued) {
        CNT(p->t, held, 1);
    }
}

/* A complete payload becomes its item's message (a bytes payload keeps its
 * buffer), and its pair moves on. rx_mtx held. */
static void bulk_complete_locked(peer *p, rxbulk *b) {
    rxitem *it = b->item;
    px_err why = PX_OK;
    if ((it->type == NULL || it->type[0] == '\0') && b->len > PX_MSG_INLINE &&
        px_msg_bytes_take(&it->m, it->tag, b->buf, b->len) == PX_OK) {
        p->rx.bulk_bytes -= b->len;
        b->buf = NULL;
    } else {
        it->m = msg_of_payload(p->t, it->type, it->tag, b->buf, b->len, &why);
    }
    if (it->m == NULL) {
        it->failed = why;
    }
    bulk_free(&p->rx, b);
    CNT(p->t, lane_msgs_in[L_BLK], 1);
    rxpair *q = pair_find(&p->rx, it->to, it->from);
    if (q != NULL) {
        pair_pump(p, (size_t)(q - p->rx.pairs), now_ms());
    }
}

static rxbulk *bulk_find(rxstate *rx, uint64_t id) {
    for (rxbulk *b = rx->bulks; b != NULL; b = b->next) {
        if (b->id == id) {
            return b;
        }
    }
    return NULL;
}

static rxbulk *bulk_new(rxstate *rx, uint64_t id, uint64_t len) {
    rxbulk *b = calloc(1, sizeof(*b));
    if (b != NULL) {
        b->id = id;
        b->len = len;
        b->next = rx->bulks;
        rx->bulks = b;
    }
    return b;
}

/* The envelope of a bulk payload. Returns a reason to drop the link, or
 * NULL. rx_mtx held. */
static const char *rx_bulk_header(peer *p, const Plexus__Envelope *v, px_ref to) {
    px_transport *t = p->t;
    rxstate *rx = &p->rx;
    if (v->bulk_len == 0 || v->bulk_len > t->cfg.max_msg) {
        return "a bulk message larger than this node's max_msg";
    }
    rxbulk *b = bulk_find(rx, v->bulk_id);
    if (b != NULL && (b->len != v->bulk_len || b->item != NULL)) {
        return "a bulk message whose id or length does not match its chunks";
    }
    if (b == NULL && (b = bulk_new(rx, v->bulk_id, v->bulk_len)) == NULL) {
        return "out of memory for a bulk message";
    }
    rxitem *it = calloc(1, sizeof(*it));
    char *type = v->type && v->type[0] ? strdup(v->type) : NULL;
    if (it == NULL || (v->type && v->type[0] && type == NULL)) {
        free(it);
        free(type);
        return "out of memory for a bulk message";
    }
    *it = (rxitem){.to = to, .from = pxn_env_from(v), .corr = v->corr, .flags = v->flags,
                   .tag = v->tag, .type = type, .bytes = v->bulk_len};
    if (!pair_push(p, it)) {
        item_free(t, it, PX_ENOMEM);
        return "out of memory for a bulk message";
    }
    b->item = it;
    if (b->have == b->len && b->buf != NULL) { /* its chunks came first */
        bulk_complete_locked(p, b);
    }
    return NULL;
}

/* A system envelope (FLAG_SYSTEM) for an actor of this node. */
static void rx_system(peer *p, const Plexus__Envelope *v, px_ref to) {
    px_transport *t = p->t;
    if (v->sysop != PLEXUS__SYS_OP__SYS_UNDELIVERED) {
        atomic_fetch_add(&t->on_sys_calls, 1); /* before fn: see set_on_sys */
        px_sys_fn fn = atomic_load(&t->on_sys);
        if (fn == NULL) {
            atomic_fetch_sub(&t->on_sys_calls, 1);
            undeliverable(p, to, PX_ETYPE); /* nobody above takes it */
            return;
        }
        CNT(t, msgs_in, 1);
        fn(atomic_load(&t->on_sys_arg), p->name, to, pxn_env_from(v), v->corr, v->sysop,
           v->payload.data, v->payload.len);
        atomic_fetch_sub(&t->on_sys_calls, 1);
        return;
    }
    Plexus__Undelivered *u = plexus__undelivered__unpack(NULL, v->payload.len, v->payload.data);
    if (u == NULL) {
        undeliverable(p, to, PX_EPROTO);
        return;
    }
    px_err code = u->code < 0 && u->code > -1000 ? (px_err)u->code : PX_EPROTO;
    if (px_system_notify_undelivered(t->sys, to, ref_of(u->to), code, u->corr) == PX_OK) {
        CNT(t, msgs_in, 1);
    }
    plexus__undelivered__free_unpacked(u, NULL);
}

/* A batch from the peer's NORMAL (or CONTROL) connection. Returns a reason
 * to drop the link, or NULL. */
const char *pxl_deliver_batch(conn *c, const Plexus__Batch *b) {
    px_transport *t = c->t;
    peer *p = c->p;
    px_ref self = px_system_root(t->sys);
    const char *bad = NULL;
    nng_mtx_lock(p->rx_mtx);
    if (p->rx.in[c->lane] != c) {
        bad = "superseded by a newer connection of the same lane";
    }
    for (size_t i = 0; i < b->n_envelopes && bad == NULL; i++) {
        const Plexus__Envelope *v = b->envelopes[i];
        /* (A system envelope may be for the node itself: actor slot 0.) */
        px_ref to = v != NULL ? pxn_env_to(v) : PX_REF_NIL;
        if (v == NULL || v->to_node == 0 || to.node != self.node) {
            undeliverable(p, to, PX_EPROTO);
            continue;
        }
        if (v->flags & PLEXUS__ENVELOPE_FLAG__FLAG_SYSTEM) {
            rx_system(p, v, to);
            continue;
        }
        if (c->lane == L_CTL) {
            bad = "a user envelope on the control lane";
            continue;
        }
        if (v->bulk_id != 0) {
            bad = rx_bulk_header(p, v, to);
            continue;
        }
        px_err why = PX_OK;
        px_msg *m = msg_of_payload(t, v->type, v->tag, v->payload.data, v->payload.len, &why);
        if (m == NULL) {
            rx_fail(p, to, pxn_env_from(v), v->corr, v->flags, NULL, why);
            continue;
        }
        rx_ready(p, to, pxn_env_from(v), v->corr, v->flags, m, v->payload.len);
    }
    nng_mtx_unlock(p->rx_mtx);
    return bad;
}

/* A chunk from the peer's BULK connection. Returns a reason to drop the
 * link, or NULL. */
const char *pxl_rx_chunk(conn *c, const Plexus__Chunk *ch) {
    px_transport *t = c->t;
    peer *p = c->p;
    rxstate *rx = &p->rx;
    const char *bad = NULL;
    nng_mtx_lock(p->rx_mtx);
    rxbulk *b = bulk_find(rx, ch->bulk_id);
    if (p->rx.in[c->lane] != c) {
        bad = "superseded by a newer connection of the same lane";
    } else if (ch->bulk_id == 0 || ch->bulk_len == 0 || ch->bulk_len > t->cfg.max_msg) {
        bad = "a chunk of a bulk message larger than this node's max_msg";
    } else if (b == NULL && (b = bulk_new(rx, ch->bulk_id, ch->bulk_len)) == NULL) {
        bad = "out of memory for a bulk message";
    } else if (b->len != ch->bulk_len || ch->offset != b->have ||
               ch->data.len > b->len - b->have || ch->data.len == 0) {
        bad = "a chunk at an unexpected offset or of the wrong length";
    } else if (b->buf == NULL) {
        if (rx->bulk_bytes + b->len > 2 * t->cfg.max_msg) {
            bad = "more bulk data in flight than twice max_msg";
        } else if ((b->buf = malloc(b->len)) == NULL) {
            bad = "out of memory for a bulk message";
        } else {
            rx->bulk_bytes += b->len;
        }
    }
    if (bad == NULL) {
        memcpy(b->buf + b->have, ch->data.data, ch->data.len);
        b->have += ch->data.len;
        if (b->have == b->len && b->item != NULL) {
            bulk_complete_locked(p, b);
        }
    }
    nng_mtx_unlock(p->rx_mtx);
    return bad;
}

/* One decrypted frame. Lock held; released around delivery. */
static void on_frame_locked(conn *c, const uint8_t *pt, size_t n) {
    px_transport *t = c->t;
    ProtobufCAllocator al = {arena_alloc, arena_free, &c->ar};
    Plexus__Frame *f = plexus__frame__unpack(&al, n, pt);
    if (f == NULL) {
        arena_reset(&c->ar);
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
        arena_reset(&c->ar);
        return;
    }
    const char *bad = NULL;
    bool inbound = c->role == PXN_LISTENER;
    switch (f->body_case) {
    case PLEXUS__FRAME__BODY_BATCH:
        if (!inbound || c->lane == L_BLK || f->batch == NULL) {
            bad = "a batch on a connection that does not carry them";
        } else {
            CNT(t, lane_msgs_in[c->lane], f->batch->n_envelopes);
            nng_mtx_unlock(c->mtx);
            bad = pxl_deliver_batch(c, f->batch);
            nng_mtx_lock(c->mtx);
        }
        break;
    case PLEXUS__FRAME__BODY_CHUNK:
        if (!inbound || c->lane != L_BLK || f->chunk == NULL) {
            bad = "a chunk on a connection that does not carry them";
        } else {
            size_t got = f->chunk->data.len;
            nng_mtx_unlock(c->mtx);
            bad = pxl_rx_chunk(c, f->chunk);
            nng_mtx_lock(c->mtx);
            if (bad == NULL) {
                c->brx += got; /* credited once the read's frames are done (rx_process) */
            }
        }
        break;
    case PLEXUS__FRAME__BODY_PING:
        if (!inbound) {
            bad = "a ping from the listening side"; /* it only answers */
        } else if (f->ping != NULL) {
            CNT(t, pings, 1);
            if (inbound && c->lane == L_CTL) {
                atomic_store(&c->p->last_ping_in_ms, now_ms());
                atomic_store(&c->p->etcd_silent_ms, f->ping->etcd_silent_ms);
            }
            /* Only the two fields: echoing unknown fields would reflect
             * whatever the peer put there (protobuf-c may not re-read it). */
            Plexus__Heartbeat hb = PLEXUS__HEARTBEAT__INIT;
            hb.seq = f->ping->seq;
            hb.sent_ns = f->ping->sent_ns;
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
        if (!inbound && f->pong != NULL && f->pong->sent_ns != 0) {
            uint64_t now = now_ns();
            uint64_t us = now > f->pong->sent_ns ? (now - f->pong->sent_ns) / 1000 : 0;
            peer *p = c->p;
            p->rtt_us = sat_u32((int64_t)us);
            p->rtt_max_us = p->rtt_us > p->rtt_max_us ? p->rtt_us : p->rtt_max_us;
            p->rtt_ring[p->rtt_n++ % RTT_RING] = p->rtt_us;
            uint64_t seq = f->pong->seq;
            if (c->lane == L_CTL && seq != 0 && seq <= c->ping_seq) {
                /* A pong slower than 8 pings (a long or badly queued path)
                 * counts as busy: it may cut, it never sets the quiet level. */
                bool busy = c->ping_seq - seq >= 8 || ((c->ping_busy >> (seq % 8)) & 1);
                bulk_on_rtt_locked(p, p->rtt_us, busy, f->pong->sent_ns);
            }
        }
        break;
    case PLEXUS__FRAME__BODY_CREDIT:
        /* Only a dialer's BULK connection asks for credit; elsewhere it is
         * ignored, like any body a side does not expect to use. */
        if (!inbound && c->lane == L_BLK && f->credit != NULL) {
            bad = bulk_on_credit_locked(c, f->credit->bytes);
            if (bad == NULL) {
                bulk_resume_locked(c);
            }
        }
        break;
    case PLEXUS__FRAME__BODY_GOODBYE:
        conn_close_locked(c, "the peer said goodbye", PX_LOG_INFO);
        break;
    default:
        break; /* unknown or reserved bodies are ignored (forward compatibility) */
    }
    arena_reset(&c->ar);
    if (bad != NULL) {
        CNT(t, bad_frames, 1);
        conn_close_locked(c, bad, PX_LOG_ERROR);
    } else if (inbound && c->lane == L_NRM && c->state == C_UP) {
        nng_mtx_lock(c->p->rx_mtx);
        c->rx_paused = c->p->rx.nheld >= t->cfg.queue_msgs ||
                       c->p->rx.held_bytes >= t->cfg.queue_bytes;
        nng_mtx_unlock(c->p->rx_mtx);
        if (c->rx_paused) {
            atomic_store(&t->hurry, true);
        }
    }
}

/* An inbound BULK connection whose dialer asked for Credit: tell it how
 * many chunk bytes arrived, once per read that brought some. Lock held. */
static void credit_locked(conn *c) {
    if (c->role != PXN_LISTENER || c->lane != L_BLK || c->state != C_UP || c->brx == c->btold ||
        c->hs.peer == NULL || !c->hs.peer->credit) {
        return;
    }
    Plexus__Credit cr = PLEXUS__CREDIT__INIT;
    cr.bytes = c->brx;
    Plexus__Frame f = PLEXUS__FRAME__INIT;
    f.body_case = PLEXUS__FRAME__BODY_CREDIT;
    f.credit = &cr;
    if (out_frame_locked(c, &f)) {
        c->btold = c->brx;
        tx_kick_locked(c);
    } else {
        conn_close_locked(c, "out of memory for a credit", PX_LOG_ERROR);
    }
}

/* Parses every complete unit (preamble, handshake, frame) in the buffer,
 * then reads more unless the connection closed or paused. Lock held (it is
 * released around deliveries). */
static void rx_process(conn *c) {
    px_transport *t = c->t;
    while (c->state != C_CLOSED && !c->rx_paused) {
        size_t avail = c->rlen - c->roff;
        uint8_t *at = c->rbuf + c->roff;
        if (avail < c->rneed) {
            break;
        }
        c->roff += c->rneed;
        switch (c->rphase) {
        case R_PRE:
            if (memcmp(at, PXN_PREAMBLE, PXN_PREAMBLE_LEN) != 0) {
                CNT(t, bad_frames, 1);
                conn_close_locked(c, "not a plexus peer (bad preamble)", PX_LOG_ERROR);
                break;
            }
            rx_want(c, R_HSLEN, 4);
            break;
        case R_HSLEN: {
            uint32_t n = pxn_get_u32(at);
            if (n == 0 || n > PXN_HS_MAX) {
                CNT(t, bad_frames, 1);
                conn_close_locked(c, "handshake frame length out of bounds", PX_LOG_ERROR);
                break;
            }
            rx_want(c, R_HS, n);
            break;
        }
        case R_HS:
            rx_want(c, R_LEN, 4);
            on_hello_locked(c, at, (size_t)(c->rbuf + c->roff - at));
            break;
        case R_LEN: {
            uint32_t n = pxn_get_u32(at);
            if (n > t->cfg.max_frame || n == 0) {
                CNT(t, bad_frames, 1);
                char why[96];
                snprintf(why, sizeof(why), "frame of %u bytes (limit %u)", n, t->cfg.max_frame);
                conn_close_locked(c, why, PX_LOG_ERROR);
                break;
            }
            rx_want(c, R_BODY, n);
            break;
        }
        case R_BODY: {
            /* The length header (the AD) sits just before the body. */
            size_t n = c->rneed, pl = 0;
            rx_want(c, R_LEN, 4);
            px_err e = pxn_open(&c->rx, at - PXN_LEN_BYTES, at, n, at, &pl);
            if (e != PX_OK) {
                CNT(t, bad_frames, 1);
                conn_close_locked(c, e == PX_EAUTH ? "a frame failed authentication (tampered, "
                                                     "replayed or foreign)"
                                                   : "a malformed frame",
                                  PX_LOG_ERROR);
                break;
            }
            on_frame_locked(c, at, pl);
            break;
        }
        }
    }
    if (c->state != C_CLOSED && !c->rx_paused) {
        credit_locked(c);
        rx_start(c);
    }
}

/* got bytes read into the buffer: parse them, and start the next read.
 * Lock held. */
static void rx_took(conn *c, size_t got) {
    CNT(c->t, lane_bytes_in[c->lane], got);
    c->rlen += got;
    c->last_rx_ms = now_ms();
    rx_process(c);
}

static void rx_run(conn *c) {
    px_transport *t = c->t;
    nng_mtx_lock(c->mtx);
    int rv = nng_aio_result(c->rx_aio);
    if (rv == NNG_ECANCELED && c->pollable && c->state != C_CLOSED) {
        rx_start(c); /* a spinner took the read back (polled reads, below) */
        nng_mtx_unlock(c->mtx);
        return;
    }
    if (rv != 0 || c->state == C_CLOSED) {
        conn_close_locked(c, rv ? nng_strerror(rv) : "closed", PX_LOG_WARN);
        nng_mtx_unlock(c->mtx);
        return;
    }
    rx_took(c, nng_aio_count(c->rx_aio));
    nng_mtx_unlock(c->mtx);
    pxl_notices_flush(t); /* what delivery refused, now that no lock is held */
}

/* ---- polled reads (latency mode, cfg.poll_rx) ----
 *
 * Core lends the transport its idle workers (px_system_set_idle_hook): a
 * worker that spins before parking calls idle_hook, which tries a read on
 * each polled connection (an inbound NORMAL one in t->pconn) whose rxm is
 * POLL: nng_stream_recv on poll_aio (no callback) cancelled at once — the
 * stream reads synchronously when bytes are there, so the frame is parsed
 * and its envelopes delivered on the worker, which then runs their targets
 * without any thread woken. After a read, rx_start leaves the connection
 * to the pollers while someone spins. When the last spinner parks it arms
 * rx_aio on every connection left in POLL (PARK), so nng's I/O threads
 * read as usual while the workers sleep. A worker that stops spinning
 * because it found work leaves them in POLL: after each turn (PX_IDLE_TURN)
 * a worker polls if nobody has for POLL_GAP_NS, and the tick arms what
 * nobody polled for POLL_STALE_NS (a long turn on every worker). A poller
 * that finds nothing puts the connection back in POLL; if a worker parked
 * meanwhile (t->parks moved: its walk skipped the busy connection) and
 * none spins now, it arms it itself, so a parked node never leaves a
 * connection unread. Exactly
 * one read is ever pending per connection: only the thread that moved rxm
 * out of POLL (a CAS) starts one. t->prefs[i] counts the threads holding
 * slot i's connection, which conn_free waits out after emptying the slot. */
#define POLL_GAP_NS 20000u
#define POLL_STALE_NS 2000000u

/* One read attempt on c, whose rxm this thread moved POLL -> BUSY after
 * reading t->parks as `parks`. */
static void poll_conn(conn *c, uint64_t parks) {
    px_transport *t = c->t;
    nng_mtx_lock(c->mtx);
    /* OFF while it is read: rx_start sets POLL or ARMED when it starts the
     * next read; a closed or paused connection stays OFF (the tick resumes
     * a paused one). */
    atomic_store(&c->rxm, RXM_OFF);
    nng_iov iov;
    if (rx_closed_locked(c) || c->rx_paused || !rx_room(c, &iov)) {
        nng_mtx_unlock(c->mtx);
        return;
    }
    size_t got = 0;
    int rv = io_now(c->s, c->poll_aio, &iov, false, &got);
    if (rv == NNG_ECANCELED) { /* nothing there */
        /* Back to POLL even when nobody spins (a TURN walk: this worker
         * spins next or runs more turns; arming here would cost the next
         * spin a cancel and a hand-off) — unless a worker parked since
         * this walk began: its walk skipped c, so arm it if none spins. */
        nng_aio_set_iov(c->rx_aio, 1, &iov);
        atomic_store(&c->rxm, RXM_POLL);
        if (atomic_load(&t->parks) != parks) {
            arm_if_unwatched(c);
        }
    } else if (rv != 0) {
        conn_close_locked(c, nng_strerror(rv), PX_LOG_WARN);
    } else {
        CNT(t, reads_polled, 1);
        rx_took(c, got);
    }
    nng_mtx_unlock(c->mtx);
    pxl_notices_flush(t);
}

/* Hands c's next read back to nng's I/O threads (rxm was POLL, now BUSY). */
static void arm_conn(conn *c) {
    nng_mtx_lock(c->mtx);
    if (rx_closed_locked(c) || c->rx_paused) {
        atomic_store(&c->rxm, RXM_OFF);
    } else {
        atomic_store(&c->rxm, RXM_ARMED);
        nng_stream_recv(c->s, c->rx_aio); /* its buffer was set by rx_start */
    }
    nng_mtx_unlock(c->mtx);
}

/* What a walk of the poll slots does to each connection it moves from
 * `from` to BUSY (parks: t->parks read before the move). */
typedef enum { W_POLL, W_ARM, W_TAKE } walk_op;

static void pconn_walk(px_transport *t, walk_op op) {
    if (op == W_POLL) {
        atomic_store_explicit(&t->polled_ns, now_ns(), memory_order_relaxed);
    }
    int from = op == W_TAKE ? RXM_ARMED : RXM_POLL;
    for (int i = 0; i < PXL_POLL_SLOTS; i++) {
        if (atomic_load_explicit(&t->pconn[i], memory_order_relaxed) == NULL) {
            continue;
        }
        atomic_fetch_add(&t->prefs[i], 1); /* seq_cst, then the slot load */
        conn *c = atomic_load(&t->pconn[i]);
        uint64_t parks = atomic_load(&t->parks);
        int want = from;
        if (c != NULL && atomic_compare_exchange_strong(&c->rxm, &want, RXM_BUSY)) {
            if (op == W_POLL) {
                poll_conn(c, parks);
            } else if (op == W_ARM) {
                arm_conn(c);
            } else {
                /* A spin begins: a read armed while nobody spun is
                 * cancelled, and its callback (rx_run) leaves c to the
                 * pollers — unless bytes came first, read as usual. */
                nng_aio_cancel(c->rx_aio);
            }
        }
        atomic_fetch_sub(&t->prefs[i], 1);
    }
}

static void idle_hook(void *arg, px_idle_event ev) {
    px_transport *t = arg;
    switch (ev) {
    case PX_IDLE_BEGIN:
        if (atomic_fetch_add(&t->spinners, 1) == 0) {
            pconn_walk(t, W_TAKE);
        }
        break;
    case PX_IDLE_POLL:
        pconn_walk(t, W_POLL);
        break;
    case PX_IDLE_FOUND:
        atomic_fetch_sub(&t->spinners, 1);
        break;
    case PX_IDLE_PARK:
        atomic_fetch_add(&t->parks, 1); /* before its walk: see poll_conn */
        if (atomic_fetch_sub(&t->spinners, 1) == 1) {
            pconn_walk(t, W_ARM); /* nobody spins: nng reads from here on */
        }
        break;
    case PX_IDLE_TURN:
        if (now_ns() - atomic_load_explicit(&t->polled_ns, memory_order_relaxed) >= POLL_GAP_NS) {
            pconn_walk(t, W_POLL);
        }
        break;
    }
}

/* The tick: connections nobody polled for POLL_STALE_NS (every worker in
 * a long turn) go back to nng's I/O threads. */
static void tick_unpoll(px_transport *t) {
    if (t->hooked && atomic_load(&t->spinners) == 0 &&
        now_ns() - atomic_load_explicit(&t->polled_ns, memory_order_relaxed) >= POLL_STALE_NS) {
        pconn_walk(t, W_ARM);
    }
}

/* c (an inbound NORMAL connection now UP) takes a poll slot if one is
 * free; else it is read by nng's threads only. Lock held. */
static void poll_enlist_locked(conn *c) {
    px_transport *t = c->t;
    if (!t->hooked || c->poll_aio == NULL) {
        return;
    }
    for (int i = 0; i < PXL_POLL_SLOTS; i++) {
        conn *none = NULL;
        if (atomic_compare_exchange_strong(&t->pconn[i], &none, c)) {
            c->pollable = true;
            c->pslot = i;
            return;
        }
    }
}

/* Before c is freed: out of its slot, and no walker still holds it. */
static void poll_delist(conn *c) {
    if (!c->pollable) {
        return;
    }
    px_transport *t = c->t;
    atomic_store(&t->pconn[c->pslot], NULL);
    while (atomic_load(&t->prefs[c->pslot]) > 0) {
        nng_msleep(0); /* a walker holds this slot for one read */
    }
}

/* A connected stream (either side): start the handshake. */
static void conn_begin(conn *c) {
    px_transport *t = c->t;
    nng_mtx_lock(c->mtx);
    uint32_t lane = c->role == PXN_DIALER ? (uint32_t)c->lane : PXN_LANE_ANY;
    c->self = t->self;
    c->self.node_inc = px_system_node_inc(t->sys); /* it changes when the node is fenced */
    if (pxn_hs_init(&c->hs, c->role, &c->self, lane, NULL, NULL) != PX_OK) {
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
    conn *c = atomic_load(&t->stopping) ? NULL : conn_new(t, s, PXN_LISTENER, NULL, L_NRM);
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
    dialer *dl = arg;
    peer *p = dl->p;
    px_transport *t = p->t;
    int rv = nng_aio_result(dl->aio);
    nng_mtx_lock(p->mtx);
    dl->busy = false;
    bool backing_off = (p->state == PX_LINK_UNREACHABLE && now_ms() < p->retry_at_ms) ||
                       p->state == PX_LINK_GONE;
    if (rv != 0 || atomic_load(&t->stopping) || backing_off || p->c[dl->lane] != NULL) {
        if (rv == 0) {
            nng_stream_free(nng_aio_get_output(dl->aio, 0)); /* late: a sibling failed */
        } else if (!atomic_load(&t->stopping)) {
            if (p->state != PX_LINK_UNREACHABLE && p->state != PX_LINK_GONE) {
                px_log(t->sys, PX_LOG_WARN, "cannot reach peer %s at %s: %s", p->name,
                       p->address, nng_strerror(rv));
            }
            peer_lanes_down_locked(p, "a sibling connection could not be dialled");
        }
        nng_mtx_unlock(p->mtx);
        return;
    }
    nng_stream *s = nng_aio_get_output(dl->aio, 0);
    nng_mtx_unlock(p->mtx);
    conn *c = conn_new(t, s, PXN_DIALER, p, dl->lane);
    if (c == NULL) {
        nng_stream_free(s);
        nng_mtx_lock(p->mtx);
        peer_lanes_down_locked(p, "out of memory");
        nng_mtx_unlock(p->mtx);
        return;
    }
    nng_mtx_lock(p->mtx);
    p->c[dl->lane] = c;
    nng_mtx_unlock(p->mtx);
    conn_begin(c);
}

static void dial_locked(peer *p) {
    if (atomic_load(&p->t->stopping) || p->state == PX_LINK_GONE) {
        return;
    }
    for (int l = 0; l < NLANES; l++) {
        if (!p->dl[l].busy && p->c[l] == NULL) {
            p->dl[l].busy = true;
            nng_stream_dialer_dial(p->d, p->dl[l].aio);
        }
    }
}

/* ---- the tick ---- */

/* When c last showed its peer alive. The NORMAL and BULK connections of a
 * peer carry no heartbeats of their own: the control lane speaks for them. */
static int64_t alive_at(conn *c) {
    if (c->state != C_UP || c->lane == L_CTL) {
        return c->last_rx_ms;
    }
    if (c->role == PXN_DIALER) {
        return INT64_MAX; /* its sibling control connection is checked */
    }
    int64_t ping = atomic_load(&c->p->last_ping_in_ms);
    return ping > c->last_rx_ms ? ping : c->last_rx_ms;
}

static void tick_ping_locked(conn *c, int64_t now) {
    c->last_ping_ms = now;
    Plexus__Heartbeat hb = PLEXUS__HEARTBEAT__INIT;
    hb.seq = ++c->ping_seq;
    uint8_t bit = (uint8_t)(1u << (hb.seq % 8));
    c->ping_busy = bulk_busy_locked(c->p) ? c->ping_busy | bit : c->ping_busy & ~bit;
    hb.sent_ns = now_ns();
    int64_t ok = atomic_load(&c->t->etcd_ok_ms);
    if (ok != 0) {
        hb.etcd_silent_ms = sat_u32(now - ok);
    }
    Plexus__Frame f = PLEXUS__FRAME__INIT;
    f.body_case = PLEXUS__FRAME__BODY_PING;
    f.ping = &hb;
    if (out_frame_locked(c, &f)) {
        tx_kick_locked(c);
    }
}

/* A NORMAL connection paused with too much held: read again once the
 * peer's held envelopes are below half the bound. Lock held. */
static bool tick_resume_locked(conn *c) {
    if (!c->rx_paused || c->state != C_UP) {
        return false;
    }
    nng_mtx_lock(c->p->rx_mtx);
    bool go = c->p->rx.nheld < c->t->cfg.queue_msgs / 2 + 1 &&
              c->p->rx.held_bytes < c->t->cfg.queue_bytes / 2 + 1;
    nng_mtx_unlock(c->p->rx_mtx);
    if (go) {
        c->rx_paused = false;
        rx_process(c); /* what was read before the pause, then more */
    }
    return !go;
}

/* A change of a peer's link state, for cfg.on_link. */
#define LINK_REPORT_AGAIN ((px_link_state)-1) /* peer.reported: give the next state whatever it is */
typedef struct linkev {
    peer *p;
    px_link_state state;
    uint32_t inc;
} linkev;

static void tick_cb(void *arg) {
    px_transport *t = arg;
    if (atomic_load(&t->stopping)) {
        return;
    }
    atomic_store(&t->hurry, false);
    pxl_notices_flush(t);
    tick_unpoll(t);
    int64_t now = now_ms();
    bool paused = false;
    size_t np = atomic_load(&t->npeers);
    linkev evs[16];
    size_t nev = 0;
    for (size_t i = 0; i < np; i++) {
        peer *p = &t->peers[i];
        nng_mtx_lock(p->mtx);
        if (now >= p->retry_at_ms) {
            dial_locked(p);
        }
        if (atomic_load(&t->has_on_link) && atomic_load(&p->gone) != P_REPLACED &&
            (p->state != p->reported || p->node_inc != p->reported_inc)) {
            if (nev == sizeof(evs) / sizeof(evs[0])) {
                atomic_store(&t->hurry, true); /* the rest on the next tick, soon */
            } else {
                p->reported = p->state;
                p->reported_inc = p->node_inc;
                evs[nev++] = (linkev){p, p->state, p->node_inc};
            }
        }
        nng_mtx_unlock(p->mtx);
        nng_mtx_lock(p->rx_mtx);
        if (p->rx.nparked > 0) { /* retry full Block-policy mailboxes */
            rx_pump_all(p);
            paused |= p->rx.nparked > 0;
        }
        nng_mtx_unlock(p->rx_mtx);
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
        int64_t alive = alive_at(c);
        if (c->state != C_CLOSED && now - alive > (int64_t)t->cfg.unreachable_ms) {
            char why[96];
            snprintf(why, sizeof(why), "silent for %lld ms", (long long)(now - alive));
            conn_close_locked(c, why, PX_LOG_WARN);
        } else if (c->bwait && now - c->bcredit_ms > (int64_t)t->cfg.unreachable_ms) {
            /* It promised credit and its heartbeats go on, but BULK has
             * waited for one this long: a peer that would stall it forever. */
            char why[96];
            snprintf(why, sizeof(why), "no bulk credit for %lld ms", (long long)(now - c->bcredit_ms));
            CNT(t, bad_frames, 1);
            conn_close_locked(c, why, PX_LOG_ERROR);
        } else if (c->role == PXN_DIALER && c->lane == L_CTL && c->state == C_UP &&
                   (now - c->last_ping_ms >= (int64_t)t->cfg.heartbeat_ms ||
                    (now - c->last_ping_ms >= BULK_PING_MS && bulk_busy_locked(c->p)))) {
            tick_ping_locked(c, now); /* more often while BULK runs: its window reads them */
        } else if (c->role == PXN_LISTENER) {
            paused |= tick_resume_locked(c);
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
    nng_mtx_lock(t->link_mtx); /* px_transport_set_on_link waits for these */
    for (size_t i = 0; i < nev && t->cfg.on_link != NULL; i++) { /* a name never changes */
        t->cfg.on_link(t->cfg.link_arg, evs[i].p->name, evs[i].state, evs[i].inc);
    }
    nng_mtx_unlock(t->link_mtx);
    nng_duration next = t->cfg.heartbeat_ms < 50 ? (nng_duration)t->cfg.heartbeat_ms : 50;
    if (paused || atomic_load(&t->hurry)) {
        next = 1;
    }
    px_alarm_set(t->tick, (uint32_t)next);
}

/* ---- the router ---- */

static peer *peer_by_node(px_transport *t, uint32_t node) {
    size_t n = atomic_load(&t->npeers);
    for (size_t i = 0; i < n; i++) {
        if (t->peers[i].node_id == node && atomic_load(&t->peers[i].gone) != P_REPLACED) {
            return &t->peers[i];
        }
    }
    return NULL;
}

static px_err router_send(void *arg, px_ref to, px_msg *m) {
    px_transport *t = arg;
    px_err rv = PX_OK;
    peer *p = atomic_load(&t->stopping) ? NULL : peer_by_node(t, to.node);
    txent e = {.to = to, .from = px_msg_sender(m), .corr = px_msg_corr(m),
               .flags = px_msg_wire_flags(m), .tag = px_msg_tag(m)};
    if (p == NULL) {
        rv = PX_EUNREACHABLE;
        goto out;
    }
    const ProtobufCMessage *pb = NULL;
    if (px_msg_kind_of(m) == PX_MSG_PROTO) {
        pb = px_msg_pb(m);
        e.type = pb->descriptor->name;
        e.len = protobuf_c_message_get_packed_size(pb);
    } else if (px_msg_kind_of(m) == PX_MSG_BYTES) {
        px_msg_data(m, &e.len);
    } else {
        rv = PX_ETYPE; /* timer ticks and the like do not travel */
        goto out;
    }
    if (e.len > t->cfg.max_msg) {
        rv = PX_EMSGSIZE;
        goto out;
    }
    if (pb != NULL) {
        e.packed = malloc(e.len ? e.len : 1);
        if (e.packed == NULL) {
            rv = PX_ENOMEM;
            goto out;
        }
        protobuf_c_message_pack(pb, e.packed);
    }
    nng_mtx_lock(p->mtx);
    if (e.len > t->cfg.bulk_threshold) {
        e.bulk_id = ++p->bulk_seq;
    }
    if (p->node_inc != 0 && to.node_inc != p->node_inc) {
        nng_mtx_unlock(p->mtx);
        free(e.packed);
        px_system_dead_letter(t->sys, to, m, PX_EDEAD); /* an older incarnation */
        goto out;
    }
    if (p->peer_max_msg != 0 && e.len > p->peer_max_msg) {
        rv = PX_EMSGSIZE; /* the peer said it takes no more */
    } else if (p->state == PX_LINK_UNREACHABLE || p->state == PX_LINK_GONE) {
        rv = PX_EUNREACHABLE;
    } else if (p->qmsgs >= t->cfg.queue_msgs ||
               p->qbytes + (e.bulk_id ? p->bbytes : 0) + e.len > t->cfg.queue_bytes) {
        /* a small message waits only behind small ones; a bulk one also
         * behind the bulk bytes not sent yet */
        rv = PX_EFULL;
    } else {
        e.m = m;
        if (!txq_push(&p->q[L_NRM], &e)) {
            rv = PX_ENOMEM;
        }
    }
    if (rv == PX_OK) {
        p->qmsgs++;
        if (e.bulk_id != 0) {
            p->bbytes += e.len;
        } else {
            p->qbytes += e.len;
        }
        if (p->c[L_NRM] != NULL && p->c[L_NRM]->state == C_UP) {
            tx_kick_locked(p->c[L_NRM]);
        }
    } else {
        free(e.packed);
    }
    nng_mtx_unlock(p->mtx);
out:
    return rv;
}

/* ---- start / stop ---- */

void px_transport_cfg_init(px_transport_cfg *cfg) {
    memset(cfg, 0, sizeof(*cfg));
    cfg->max_frame = 1u << 20;
    cfg->max_msg = 64u << 20;
    cfg->bulk_threshold = 64u << 10;
    cfg->queue_msgs = 65536;
    cfg->queue_bytes = 128u << 20;
    cfg->heartbeat_ms = 250;
    cfg->bulk_delay_ms = 25;
    cfg->unreachable_ms = 2000;
    cfg->reconnect_max_ms = 5000;
    cfg->max_peers = 256;
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
    if (c->max_msg < 1024 || c->max_msg > (1ull << 30)) {
        return bad_cfg(sys, "max_msg must be 1 KiB..1 GiB");
    }
    if (c->bulk_threshold == 0 || c->bulk_threshold > c->max_frame - 1024) {
        return bad_cfg(sys, "bulk_threshold must be 1..max_frame - 1 KiB");
    }
    if (c->bulk_delay_ms > 10000) {
        return bad_cfg(sys, "bulk_delay_ms must be 0..10000");
    }
    if (c->queue_msgs == 0 || c->queue_bytes < c->max_msg) {
        return bad_cfg(sys, "queue_msgs must be > 0 and queue_bytes >= max_msg");
    }
    if (c->heartbeat_ms == 0 || c->unreachable_ms <= c->heartbeat_ms ||
        c->reconnect_max_ms == 0) {
        return bad_cfg(sys, "heartbeat_ms must be > 0 and below unreachable_ms; "
                            "reconnect_max_ms > 0");
    }
    if (c->max_peers == 0 || c->max_peers > 65536 || c->npeers > c->max_peers) {
        return bad_cfg(sys, "max_peers must be 1..65536 and at least the static peers");
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
        /* nng's streams leave Nagle on: a lone message would wait for an ACK */
        (void)nng_stream_listener_set_bool(t->lst, NNG_OPT_TCP_NODELAY, true);
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

static px_err peer_add_locked(px_transport *t, const px_peer *cp);
static void peer_fini(peer *p);
static peer *peer_by_name(px_transport *t, const char *name);

static px_err peer_init(px_transport *t, peer *p, const px_peer *cp) {
    p->t = t;
    p->name = strdup(cp->name);
    p->address = cp->address != NULL ? strdup(cp->address) : NULL;
    memcpy(p->pk, cp->pk, PX_PUBKEY_BYTES);
    p->node_id = px_node_id(cp->name);
    p->backoff_ms = 50;
    p->state = PX_LINK_CONNECTING;
    if (p->name == NULL || p->address == NULL || nng_mtx_alloc(&p->mtx) != 0 ||
        nng_mtx_alloc(&p->rx_mtx) != 0) {
        return PX_ENOMEM;
    }
    for (int l = 0; l < NLANES; l++) {
        p->dl[l] = (dialer){.p = p, .lane = l};
        if (nng_aio_alloc(&p->dl[l].aio, dial_cb, &p->dl[l]) != 0) {
            return PX_ENOMEM;
        }
    }
    int e = nng_stream_dialer_alloc(&p->d, p->address);
    if (e == 0) {
        (void)nng_stream_dialer_set_bool(p->d, NNG_OPT_TCP_NODELAY, true); /* ENOTSUP on ipc */
    }
    if (e != 0) {
        px_log(t->sys, PX_LOG_ERROR, "transport config: peer %s: bad address %s: %s", p->name,
               p->address, nng_strerror(e));
        return PX_EINVAL;
    }
    return PX_OK;
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
    atomic_store(&t->has_on_link, cfg->on_link != NULL);
    t->listen = strdup(cfg->listen);
    t->peers = calloc(cfg->max_peers, sizeof(*t->peers));
    if (t->listen == NULL || t->peers == NULL || nng_mtx_alloc(&t->mtx) != 0 ||
        nng_mtx_alloc(&t->nq_mtx) != 0 || nng_mtx_alloc(&t->peers_mtx) != 0 ||
        nng_mtx_alloc(&t->link_mtx) != 0 || nng_mtx_alloc(&t->bmtx) != 0 ||
        nng_cv_alloc(&t->bcv, t->bmtx) != 0 || nng_cv_alloc(&t->bdone, t->bmtx) != 0 ||
        nng_thread_create(&t->bthr, bulk_main, t) != 0 ||
        nng_aio_alloc(&t->acc_aio, acc_cb, t) != 0 ||
        px_alarm_new(&t->tick, tick_cb, t) != PX_OK) {
        px_transport_stop(t);
        return PX_ENOMEM;
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
                         .max_msg = cfg->max_msg,
                         .advertise = t->bound,
                         .plaintext = cfg->plaintext,
                         .credit = cfg->bulk_delay_ms != 0};
    if (cfg->plaintext) {
        px_log(sys, PX_LOG_WARN,
               "transport in PLAINTEXT mode: frames after the handshake are NOT encrypted "
               "(benchmarks only)");
    }
    px_router r = {.send = router_send, .arg = t, .dropped = router_dropped};
    px_system_set_router(sys, &r);
    if (cfg->poll_rx) {
        t->hooked = px_system_set_idle_hook(sys, idle_hook, t) == PX_OK;
        if (!t->hooked) {
            px_log(sys, PX_LOG_WARN, "transport: poll_rx ignored: another idle hook is installed");
        }
    }
    nng_stream_listener_accept(t->lst, t->acc_aio);
    nng_mtx_lock(t->peers_mtx);
    for (size_t i = 0; i < cfg->npeers && rv == PX_OK; i++) {
        rv = peer_add_locked(t, &cfg->peers[i]);
    }
    nng_mtx_unlock(t->peers_mtx);
    if (rv != PX_OK) {
        px_transport_stop(t);
        return rv;
    }
    px_alarm_set(t->tick, 50);
    px_log(sys, PX_LOG_INFO, "transport listening on %s with %zu static peers", t->bound,
           cfg->npeers);
    *out = t;
    return PX_OK;
}

const char *px_transport_address(const px_transport *t) { return t ? t->bound : NULL; }

/* ---- peers found later (membership) ---- */

/* An address a peer no longer has: readers of p->address take no lock, so
 * the string lives until the transport stops. */
typedef struct grave {
    struct grave *next;
    char *address;
} grave;

/* Drops p: `how` P_REMOVED (it may come back) or P_REPLACED (for good).
 * Its outbound links close and are not redialled, its queue becomes dead
 * letters, and connections from it close (peers_mtx held, no other). */
static void peer_retire(px_transport *t, peer *p, int how, const char *why) {
    atomic_store(&p->gone, how);
    nng_mtx_lock(p->mtx);
    peer_lanes_down_locked(p, why); /* and peer_down_locked: GONE */
    nng_mtx_unlock(p->mtx);
    nng_mtx_lock(t->mtx);
    for (conn *c = t->conns; c != NULL; c = c->next) {
        nng_mtx_lock(c->mtx);
        if (c->p == p) {
            conn_close_locked(c, why, PX_LOG_INFO);
        }
        nng_mtx_unlock(c->mtx);
    }
    nng_mtx_unlock(t->mtx);
}

/* A known peer (same name and key) at `address`, perhaps back after a
 * removal (peers_mtx held). */
static px_err peer_update(px_transport *t, peer *p, const char *address) {
    nng_stream_dialer *nd = NULL;
    grave *g = NULL;
    if (strcmp(p->address, address) != 0) {
        g = malloc(sizeof(*g));
        char *na = strdup(address);
        int e = g != NULL && na != NULL ? nng_stream_dialer_alloc(&nd, address) : NNG_ENOMEM;
        if (e != 0) {
            free(g);
            free(na);
            px_log(t->sys, PX_LOG_ERROR, "peer %s: cannot dial %s: %s", p->name, address,
                   nng_strerror(e));
            return e == NNG_ENOMEM ? PX_ENOMEM : PX_EINVAL;
        }
        (void)nng_stream_dialer_set_bool(nd, NNG_OPT_TCP_NODELAY, true);
        g->address = na; /* swapped below: g then holds the old one */
    }
    nng_stream_dialer *old = NULL;
    nng_mtx_lock(p->mtx);
    bool back = atomic_exchange(&p->gone, P_ACTIVE) != P_ACTIVE;
    if (nd != NULL) {
        px_log(t->sys, PX_LOG_INFO, "peer %s moved: %s -> %s", p->name, p->address, g->address);
        old = p->d;
        p->d = nd;
        g->address = atomic_exchange(&p->address, g->address);
        g->next = t->graves;
        t->graves = g;
        peer_lanes_down_locked(p, "its address changed");
    }
    if (back || nd != NULL) {
        p->state = PX_LINK_CONNECTING;
        p->reported = LINK_REPORT_AGAIN; /* a new life of the peer: report it afresh */
        p->backoff_ms = 50;
        p->retry_at_ms = 0;
        dial_locked(p);
    }
    nng_mtx_unlock(p->mtx);
    if (old != NULL) {
        nng_stream_dialer_free(old); /* its dials end with an error: redialled */
    }
    if (back) {
        px_log(t->sys, PX_LOG_INFO, "peer %s (%s) is a peer again", p->name, address);
    }
    return PX_OK;
}

static px_err peer_add_locked(px_transport *t, const px_peer *cp) {
    if (cp == NULL || cp->name == NULL || cp->name[0] == '\0' || cp->address == NULL ||
        cp->address[0] == '\0') {
        px_log(t->sys, PX_LOG_ERROR, "peer: a peer needs a name and an address");
        return PX_EINVAL;
    }
    uint32_t id = px_node_id(cp->name);
    if (id == px_system_root(t->sys).node) {
        px_log(t->sys, PX_LOG_ERROR, "peer %s: that is this node's own name", cp->name);
        return PX_EINVAL;
    }
    size_t n = atomic_load(&t->npeers);
    peer *same = NULL;
    for (size_t i = 0; i < n; i++) {
        peer *q = &t->peers[i];
        if (atomic_load(&q->gone) == P_REPLACED) {
            continue;
        }
        if (strcmp(q->name, cp->name) == 0) {
            same = q;
        } else if (q->node_id == id || sodium_memcmp(q->pk, cp->pk, PX_PUBKEY_BYTES) == 0) {
            px_log(t->sys, PX_LOG_ERROR, "peer %s: %s already belongs to peer %s", cp->name,
                   q->node_id == id ? "its node id" : "its key", q->name);
            return PX_EEXIST;
        }
    }
    if (same != NULL && sodium_memcmp(same->pk, cp->pk, PX_PUBKEY_BYTES) == 0) {
        return peer_update(t, same, cp->address);
    }
    if (n == t->cfg.max_peers) {
        px_log(t->sys, PX_LOG_ERROR, "peer %s: no room (max_peers %u)", cp->name,
               t->cfg.max_peers);
        return PX_EFULL;
    }
    peer *p = &t->peers[n];
    px_err rv = peer_init(t, p, cp);
    if (rv != PX_OK) {
        peer_fini(p);
        memset(p, 0, sizeof(*p));
        return rv;
    }
    if (same != NULL) {
        px_log(t->sys, PX_LOG_WARN, "peer %s has a new identity key: the old one is dropped",
               cp->name);
        peer_retire(t, same, P_REPLACED, "its identity key changed");
    }
    atomic_store(&t->npeers, n + 1);
    nng_mtx_lock(p->mtx);
    dial_locked(p);
    nng_mtx_unlock(p->mtx);
    return PX_OK;
}

px_err px_transport_peer_add(px_transport *t, const px_peer *p) {
    if (t == NULL || p == NULL) {
        return PX_EINVAL;
    }
    nng_mtx_lock(t->peers_mtx);
    px_err rv = atomic_load(&t->stopping) ? PX_ECLOSED : peer_add_locked(t, p);
    nng_mtx_unlock(t->peers_mtx);
    return rv;
}

px_err px_transport_peer_remove(px_transport *t, const char *name) {
    if (t == NULL || name == NULL) {
        return PX_EINVAL;
    }
    nng_mtx_lock(t->peers_mtx);
    peer *p = peer_by_name(t, name);
    if (p != NULL && atomic_load(&p->gone) == P_ACTIVE) {
        px_log(t->sys, PX_LOG_INFO, "peer %s removed: its links close and are not redialled",
               name);
        peer_retire(t, p, P_REMOVED, "removed: no longer a peer");
    }
    nng_mtx_unlock(t->peers_mtx);
    return p != NULL ? PX_OK : PX_ENOENT;
}

void px_transport_set_on_link(px_transport *t,
                              void (*fn)(void *, const char *, px_link_state, uint32_t),
                              void *arg) {
    if (t == NULL) {
        return;
    }
    nng_mtx_lock(t->link_mtx);
    t->cfg.on_link = fn;
    t->cfg.link_arg = arg;
    atomic_store(&t->has_on_link, fn != NULL);
    nng_mtx_unlock(t->link_mtx);
    if (fn != NULL) { /* report every peer's current state to the new listener */
        size_t n = atomic_load(&t->npeers);
        for (size_t i = 0; i < n; i++) {
            nng_mtx_lock(t->peers[i].mtx);
            t->peers[i].reported = LINK_REPORT_AGAIN;
            nng_mtx_unlock(t->peers[i].mtx);
        }
    }
}

const uint8_t *px_transport_pk(const px_transport *t) {
    return t != NULL ? t->cfg.identity->pk : NULL;
}

void px_transport_reconnect(px_transport *t, const char *why) {
    if (t == NULL) {
        return;
    }
    nng_mtx_lock(t->mtx);
    for (conn *c = t->conns; c != NULL; c = c->next) {
        nng_mtx_lock(c->mtx);
        conn_close_locked(c, why, PX_LOG_INFO);
        nng_mtx_unlock(c->mtx);
    }
    nng_mtx_unlock(t->mtx);
    size_t n = atomic_load(&t->npeers);
    for (size_t i = 0; i < n; i++) { /* redial now, not after a backoff */
        peer *p = &t->peers[i];
        nng_mtx_lock(p->mtx);
        if (p->state == PX_LINK_UNREACHABLE) {
            p->state = PX_LINK_CONNECTING;
            p->backoff_ms = 50;
            p->retry_at_ms = 0;
            dial_locked(p);
        }
        nng_mtx_unlock(p->mtx);
    }
}

const char *px_link_state_name(px_link_state s) {
    switch (s) {
    case PX_LINK_CONNECTING: return "connecting";
    case PX_LINK_UP: return "up";
    case PX_LINK_UNREACHABLE: return "unreachable";
    case PX_LINK_GONE: return "gone";
    }
    return "unknown";
}

static void peer_fini(peer *p) {
    if (p->mtx != NULL) {
        peer_fail_queue_locked(p, PX_ECLOSED);
        nng_mtx_free(p->mtx);
    }
    if (p->rx_mtx != NULL) {
        rx_reset_locked(p, PX_ECLOSED);
        nng_mtx_free(p->rx_mtx);
    }
    free(p->rx.pairs);
    for (int l = 0; l < NLANES; l++) {
        free(p->q[l].v);
        nng_aio_free(p->dl[l].aio);
    }
    nng_stream_dialer_free(p->d);
    free(p->name);
    free(p->address);
}

void px_transport_stop(px_transport *t) {
    if (t == NULL) {
        return;
    }
    atomic_store(&t->stopping, true);
    if (t->hooked) {
        px_system_set_idle_hook(t->sys, NULL, NULL); /* no worker polls after this */
    }
    if (t->sys != NULL && t->lst != NULL) {
        px_system_set_router(t->sys, NULL); /* returns once no call is inside router_* */
    }
    if (t->lst != NULL) {
        nng_stream_listener_close(t->lst);
    }
    if (t->acc_aio != NULL) {
        nng_aio_stop(t->acc_aio);
    }
    if (t->tick != NULL) {
        px_alarm_stop(t->tick);
    }
    size_t np = t->peers != NULL ? atomic_load(&t->npeers) : 0;
    for (size_t i = 0; i < np; i++) {
        peer *p = &t->peers[i];
        if (p->d != NULL) {
            nng_stream_dialer_close(p->d);
        }
        for (int l = 0; l < NLANES; l++) {
            if (p->dl[l].aio != NULL) {
                nng_aio_stop(p->dl[l].aio);
            }
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
    if (t->bthr != NULL) { /* every connection is freed: its queue is empty */
        nng_mtx_lock(t->bmtx);
        t->bexit = true;
        nng_cv_wake(t->bcv);
        nng_mtx_unlock(t->bmtx);
        nng_thread_destroy(t->bthr);
    }
    if (t->bcv != NULL) {
        nng_cv_free(t->bcv);
    }
    if (t->bdone != NULL) {
        nng_cv_free(t->bdone);
    }
    if (t->bmtx != NULL) {
        nng_mtx_free(t->bmtx);
    }
    for (size_t i = 0; i < np; i++) {
        peer_fini(&t->peers[i]);
    }
    while (t->graves != NULL) {
        grave *g = t->graves;
        t->graves = g->next;
        free(g->address);
        free(g);
    }
    if (t->peers_mtx != NULL) {
        nng_mtx_free(t->peers_mtx);
    }
    if (t->link_mtx != NULL) {
        nng_mtx_free(t->link_mtx);
    }
    nng_stream_listener_free(t->lst);
    nng_aio_free(t->acc_aio);
    px_alarm_free(t->tick);
    if (t->mtx != NULL) {
        nng_mtx_free(t->mtx);
    }
    while (t->nq_head != NULL) { /* notices nobody will send */
        notice *n = t->nq_head;
        t->nq_head = n->next;
        free(n);
        CNT(t, notices_lost, 1);
    }
    if (t->nq_mtx != NULL) {
        nng_mtx_free(t->nq_mtx);
    }
    free(t->peers);
    free(t->listen);
    free(t->bound);
    sodium_memzero(t->cfg.cluster_key, sizeof(t->cfg.cluster_key));
    free(t);
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static peer *peer_by_name(px_transport *t, const char *name) {
    size_t n = t != NULL && name != NULL ? atomic_load(&t->npeers) : 0;
    for (size_t i = 0; i < n; i++) {
        if (atomic_load(&t->peers[i].gone) != P_REPLACED && strcmp(t->peers[i].name, name) == 0) {
            return &t->peers[i];
        }
    }
    return NULL;
}

px_err px_transport_peer_info(px_transport *t, const char *name, bool reset_max,
                              px_peer_info *out) {
    if (t == NULL || name == NULL || out == NULL) {
        return PX_EINVAL;
    }
    peer *p = peer_by_name(t, name);
    if (p == NULL) {
        return PX_ENOENT;
    }
    nng_mtx_lock(p->mtx);
    uint32_t ring[RTT_RING];
    size_t k = p->rtt_n < RTT_RING ? p->rtt_n : RTT_RING;
    memcpy(ring, p->rtt_ring, k * sizeof(ring[0]));
    *out = (px_peer_info){.state = p->state,
                          .node_inc = p->node_inc,
                          .rtt_us = p->rtt_us,
                          .rtt_max_us = p->rtt_max_us,
                          .queued_msgs = p->qmsgs + p->q[L_BLK].len,
                          .queued_bytes = p->qbytes + p->bbytes};
    const conn *b = p->c[L_BLK];
    if (b != NULL && b->state == C_UP && b->bpace) {
        out->bulk_window = b->bwin;
        out->bulk_inflight = b->bsent - b->backed;
    }
    uint32_t quiet = rtt_quiet_locked(p);
    out->rtt_base_us = quiet == UINT32_MAX ? 0 : quiet;
    if (reset_max) {
        p->rtt_max_us = 0;
        p->rtt_n = 0;
    }
    nng_mtx_unlock(p->mtx);
    out->rtt_samples = (uint32_t)k;
    int64_t heard = atomic_load(&p->last_ping_in_ms), now = now_ms();
    out->ping_age_ms = heard == 0 ? UINT32_MAX : sat_u32(now - heard);
    uint32_t silent = atomic_load(&p->etcd_silent_ms);
    if (silent != 0 && heard != 0) { /* as of now: it has been silent since */
        out->etcd_silent_ms = sat_u32((int64_t)silent + out->ping_age_ms);
    }
    if (k > 0) {
        qsort(ring, k, sizeof(ring[0]), cmp_u32);
        out->rtt_p99_us = ring[(k * 99 + 99) / 100 - 1];
    }
    return PX_OK;
}

px_err px_transport_peer_state(px_transport *t, const char *name, px_link_state *state,
                               uint32_t *node_inc) {
    if (t == NULL || name == NULL) {
        return PX_EINVAL;
    }
    px_peer_info info;
    px_err rv = px_transport_peer_info(t, name, false, &info);
    if (rv == PX_OK && state != NULL) {
        *state = info.state;
    }
    if (rv == PX_OK && node_inc != NULL) {
        *node_inc = info.node_inc;
    }
    return rv;
}

void px_transport_stats_get(px_transport *t, px_transport_stats *o) {
    memset(o, 0, sizeof(*o));
    if (t == NULL) {
        return;
    }
    o->msgs_in = atomic_load(&t->msgs_in);
    o->frames_out = atomic_load(&t->frames_out);
    o->frames_in = atomic_load(&t->frames_in);
    o->handshakes = atomic_load(&t->handshakes);
    o->refused = atomic_load(&t->refused);
    o->bad_frames = atomic_load(&t->bad_frames);
    o->undeliverable = atomic_load(&t->undeliverable);
    o->pings = atomic_load(&t->pings);
    o->pongs = atomic_load(&t->pongs);
    /* The totals are the lanes' sums, counted once. */
    for (int l = 0; l < NLANES; l++) {
        o->lane_msgs_out[l] = atomic_load(&t->lane_msgs_out[l]);
        o->lane_msgs_in[l] = atomic_load(&t->lane_msgs_in[l]);
        o->lane_bytes_out[l] = atomic_load(&t->lane_bytes_out[l]);
        o->lane_bytes_in[l] = atomic_load(&t->lane_bytes_in[l]);
        o->bytes_out += o->lane_bytes_out[l];
        o->bytes_in += o->lane_bytes_in[l];
    }
    o->msgs_out = o->lane_msgs_out[L_CTL] + o->lane_msgs_out[L_NRM];
    o->bulk_out = o->lane_msgs_out[L_BLK];
    o->bulk_in = o->lane_msgs_in[L_BLK];
    o->held = atomic_load(&t->held);
    o->notices = atomic_load(&t->notices);
    o->notices_lost = atomic_load(&t->notices_lost);
    o->bulk_cuts = atomic_load(&t->bulk_cuts);
    o->bulk_waits = atomic_load(&t->bulk_waits);
    o->reads_polled = atomic_load(&t->reads_polled);
    o->writes_inline = atomic_load(&t->writes_inline);
}

void px_transport_etcd_ok(px_transport *t) {
    if (t != NULL) {
        atomic_store(&t->etcd_ok_ms, now_ms());
    }
}
