/*
 * link_int.h — the transport's internal types (link.c), shared with the
 * fuzz harness (tests/fuzz) so it drives the real receive path: the
 * receiving state of a peer and the two entry points that feed it.
 * Not an API: nothing outside transport/ and tests/fuzz includes this.
 */
#ifndef PXL_LINK_INT_H
#define PXL_LINK_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nng/nng.h>
#include <nng/supplemental/util/platform.h>

#include <plexus/plexus.h>
#include <plexus/transport.h>

#include "wire.h"

enum { C_HS = 0, C_AUTH = 1, C_UP = 2, C_CLOSED = 3 };
enum { R_PRE = 0, R_HSLEN, R_HS, R_LEN, R_BODY };
enum {
    L_CTL = PLEXUS__LANE__LANE_CONTROL,
    L_NRM = PLEXUS__LANE__LANE_NORMAL,
    L_BLK = PLEXUS__LANE__LANE_BULK,
    NLANES = 3
};

/* Room a frame needs around an envelope's payload, and around a chunk's. */
#define ENV_OVERHEAD 128
#define CHUNK_OVERHEAD 64
#define CHUNK_MAX (1u << 20)
#define BATCH_MAX (128u << 10)
#define RTT_RING 128
/* BULK's window (cfg.bulk_delay_ms): it starts at BULK_WIN_START, never
 * goes below BULK_WIN_MIN nor above BULK_WIN_MAX, and cuts its chunks to a
 * quarter of it (at least BULK_CHUNK_MIN) so a small window still moves.
 * While BULK has bytes in flight, CONTROL pings every BULK_PING_MS (at the
 * tick's pace) to watch the path's queue. */
#define BULK_WIN_MIN (16u << 10)
#define BULK_WIN_START (32u << 10)
#define BULK_WIN_MAX (32u << 20)
#define BULK_CHUNK_MIN (16u << 10)
#define BULK_PING_MS 20
#define RTT_QUIET_SLOT_MS 300000 /* the quiet round trip (rtt_quiet_locked) */
#define RTT_ANY_SLOT_MS 30000

typedef struct txent {
    px_ref to, from;
    uint64_t corr;
    uint32_t flags, tag;
    const char *type;  /* descriptor name (static) or NULL for bytes */
    px_msg *m;         /* the message (a bytes payload is borrowed from it) */
    uint8_t *packed;   /* proto: the packed payload (owned) */
    size_t len;
    uint64_t bulk_id;  /* non-zero: the payload goes on BULK */
    uint32_t sysop;    /* FLAG_SYSTEM envelopes: the SysOp */
} txent;

typedef struct txq {
    txent *v;
    size_t head, len, cap;
} txq;

typedef struct peer peer;
typedef struct conn conn;
typedef struct rxbulk rxbulk;

/* An envelope that arrived but waits: its bulk payload is incomplete, its
 * target's Block-policy mailbox is full (parked), or an earlier one of its
 * (sender, target) pair waits. */
typedef struct rxitem {
    struct rxitem *next;
    px_ref to, from;
    uint64_t corr;
    uint32_t flags, tag;
    char *type;      /* a bulk payload's type name (owned); NULL for bytes */
    px_msg *m;       /* ready to deliver; NULL while its bulk payload is incomplete */
    px_err failed;   /* the payload did not make a message: drop with this */
    bool parked;     /* the target's mailbox is full (policy Block) */
    size_t bytes;    /* its payload's size, for the held-bytes bound */
    int64_t deadline_ms; /* parked: give up then (block_timeout_ms) */
} rxitem;

/* A bulk payload being reassembled (its envelope may not be in yet). */
struct rxbulk {
    rxbulk *next;
    uint64_t id, len, have;
    uint8_t *buf;
    rxitem *item; /* its envelope, once that arrived */
};

/* The waiting envelopes of one (sender, target) pair, in arrival order.
 * Pairs with nothing waiting have no entry: their envelopes go straight
 * through. */
typedef struct rxpair {
    px_ref to, from;
    rxitem *head, *tail;
} rxpair;

typedef struct rxstate {
    conn *in[NLANES];  /* the current inbound connection of each lane */
    uint32_t inc;      /* the peer incarnation they belong to */
    rxpair *pairs;
    size_t npairs, pcap;
    size_t nheld, nparked;
    uint64_t held_bytes;
    rxbulk *bulks;
    uint64_t bulk_bytes;
} rxstate;

/* Memory for decoding one received frame: protobuf-c allocates from it and
 * frees nothing; it is reset after the frame (no malloc per envelope). */
typedef struct spill {
    struct spill *next;
    max_align_t data[];
} spill;

typedef struct arena {
    uint8_t *buf;
    size_t cap, used, spilled;
    spill *spills;
} arena;

struct conn {
    px_transport *t;
    peer *p;      /* outbound: its peer; inbound: the peer it proved to be */
    int role, lane;
    nng_stream *s;
    nng_aio *rx_aio, *tx_aio;
    /* The BULK thread (link.c): whether c's callbacks run there (a BULK
     * connection, once its lane is known), and its place in the thread's
     * queue (t->bmtx). */
    atomic_bool on_bthr;
    bool bqueued;
    int bjobs;
    struct conn *bnext;
    nng_mtx *mtx; /* outbound: the peer's */
    bool own_mtx;
    int state;
    pxn_self self;  /* what it says of this node (the incarnation of its start) */
    pxn_hs hs;
    pxn_cipher rx, tx;
    /* reading */
    int rphase;
    uint8_t *rbuf;     /* bytes read and not parsed yet: [roff, rlen) */
    size_t rcap, rlen, roff, rneed; /* rneed: the size of the unit being read */
    bool rx_paused; /* NORMAL: too many envelopes held back; the tick resumes */
    arena ar;       /* decoding the current frame */
    /* writing: wcur is on the wire, wnext collects sealed frames */
    uint8_t *wcur, *wnext;
    size_t wcur_len, wcur_off, wcur_cap, wnext_len, wnext_cap;
    bool writing;
    /* packing a Batch: arrays kept from frame to frame */
    Plexus__Envelope *env;
    Plexus__Envelope **envp;
    size_t ecap;
    /* BULK outbound: the payload being chunked */
    txent cur;
    size_t cur_off;
    bool has_cur;
    /* BULK outbound, paced (the listener sends Credit): chunk data bytes
     * sealed and credited on this connection, the window, slow start (no
     * queue seen yet), waiting for credit, and when (now_ns) it last cut. */
    bool bpace, bss, bwait;
    uint64_t bsent, backed, bwin, bcut_ns;
    int64_t bcredit_ms; /* the last credit, or when bytes went in flight with
                           none pending: no credit for unreachable_ms while
                           waiting drops the link */
    /* BULK inbound: chunk data bytes taken in, and the last Credit sent */
    uint64_t brx, btold;
    int64_t last_rx_ms, last_ping_ms;
    uint64_t ping_seq;
    uint8_t ping_busy; /* CONTROL outbound: bit seq % 8 = BULK had bytes in flight
                          when ping seq left (its round trip saw BULK's queue) */
    /* Latency mode (cfg.poll_rx, link.c "polled reads"): an inbound NORMAL
     * connection in a poll slot (pslot) is read by idle workers while they
     * spin. rxm says who may start its next read: RXM_POLL — any poller
     * (CAS to RXM_BUSY); RXM_ARMED — rx_aio's callback read is pending;
     * RXM_BUSY — one thread is reading or parsing; RXM_OFF — nobody
     * (closed, paused: the tick resumes it). */
    bool pollable;
    int pslot;
    atomic_bool superseded; /* a newer inbound connection of its lane replaced it */
    atomic_int rxm;
    nng_aio *poll_aio; /* no callback: a read started and cancelled at once */
    nng_aio *wsync_aio; /* no callback: the same for writes (start_write_locked) */
    char who[112]; /* for the log: peer name, address and lane */
    char raddr[64]; /* inbound: the remote address */
    conn *next;
};

typedef struct dialer {
    peer *p;
    int lane;
    nng_aio *aio;
    bool busy;
} dialer;

/* A peer slot's standing (peer.gone). Slots are never freed before the
 * transport: a removed peer may come back (same name and key), a replaced
 * one (same name, another key) is skipped by every lookup. */
enum { P_ACTIVE = 0, P_REMOVED = 1, P_REPLACED = 2 };

struct peer {
    px_transport *t;
    char *name;
    _Atomic(char *) address; /* replaced by px_transport_peer_add (old ones kept
                                until the transport stops: readers take no lock) */
    atomic_int gone;         /* P_ACTIVE, P_REMOVED, P_REPLACED */
    px_link_state reported;  /* last state (and incarnation) given to on_link */
    uint32_t reported_inc;
    uint8_t pk[PX_PUBKEY_BYTES];
    uint32_t node_id;
    uint32_t node_inc; /* from its last handshake, 0 = never */
    px_link_state state;
    nng_mtx *mtx;
    conn *c[NLANES]; /* the outbound connections */
    dialer dl[NLANES];
    nng_stream_dialer *d;
    int64_t retry_at_ms;
    uint32_t backoff_ms;
    txq q[NLANES]; /* CONTROL, NORMAL: envelopes; BULK: payloads to chunk */
    size_t qmsgs;
    uint64_t qbytes; /* payload bytes queued for NORMAL and CONTROL */
    uint64_t bbytes; /* payload bytes handed to BULK, not sent yet */
    uint64_t bulk_seq;
    uint64_t peer_max_msg;  /* from its Hello; 0 = not known yet */
    uint32_t peer_max_frame;
    uint32_t rtt_us, rtt_max_us;
    uint32_t rtt_ring[RTT_RING]; /* the last round trips, for the p99 */
    uint32_t rtt_n;              /* samples since the last reset */
    /* The quiet CONTROL round trip, for BULK's window (link.c,
     * rtt_quiet_locked): the least round trip per slot, this one and the
     * last, of pings sent while BULK was idle and of all pings. */
    uint32_t rtt_quiet[2], rtt_any[2];
    int64_t rtt_quiet_at_ms, rtt_any_at_ms;
    bool bulk_calm; /* the last round trip was within bulk_delay_ms of it */
    /* receiving */
    nng_mtx *rx_mtx;
    rxstate rx;
    _Atomic int64_t last_ping_in_ms; /* its last ping on our inbound control */
    _Atomic uint32_t etcd_silent_ms; /* what that ping said (Heartbeat.etcd_silent_ms) */
    _Atomic uint32_t fail_logged; /* reasons (hashed to a bit) of failed attempts
                                     logged since it was last UP */
};

enum { RXM_OFF = 0, RXM_ARMED, RXM_POLL, RXM_BUSY };
#define PXL_POLL_SLOTS 16

struct px_transport {
    px_system *sys;
    /* Latency mode (link.c "polled reads"): the polled connections, the
     * threads holding each (conn_free waits them out), the workers spinning
     * now, the parks, and when a worker last polled (now_ns). */
    _Atomic(conn *) pconn[PXL_POLL_SLOTS];
    atomic_int prefs[PXL_POLL_SLOTS];
    atomic_int spinners;
    _Atomic uint64_t parks; /* PX_IDLE_PARK events so far (poll_conn) */
    _Atomic uint64_t polled_ns;
    bool hooked;
    _Atomic int64_t etcd_ok_ms; /* now_ms() of the cluster's last acknowledged etcd
                                   request; 0 = none reported (pings say nothing) */
    px_transport_cfg cfg;
    pxn_self self;
    char *listen, *bound;
    nng_mtx *mtx;
    nng_stream_listener *lst;
    nng_aio *acc_aio;
    px_alarm *tick;
    /* The BULK thread: its queue of connections with jobs, the one it runs,
     * and the wait for it (bulk_main, link.c). bmtx is a leaf. */
    nng_thread *bthr;
    nng_mtx *bmtx;
    nng_cv *bcv, *bdone;
    conn *bq_head, *bq_tail, *brun;
    bool bexit;
    peer *peers;            /* cfg.max_peers slots */
    _Atomic size_t npeers;  /* slots in use: [0, npeers) are initialised, and a slot's
                               name, node_id and pk never change once published */
    nng_mtx *peers_mtx;     /* serialises adding and removing peers */
    nng_mtx *link_mtx;      /* held while cfg.on_link runs, and to change it */
    atomic_bool has_on_link;
    /* Incoming system envelopes (the mesh): rx_system counts itself in
     * on_sys_calls, then loads on_sys and on_sys_arg; removing the handler
     * clears on_sys, waits the count out, then clears the arg. */
    _Atomic(px_sys_fn) on_sys;
    _Atomic(void *) on_sys_arg;
    _Atomic uint32_t on_sys_calls;
    struct grave *graves;   /* replaced addresses, freed at stop (peers_mtx) */
    conn *conns;
    atomic_bool stopping;
    atomic_bool hurry; /* a paused connection, or notices to send: tick again soon */
    /* Undelivered notices waiting to be sent: made where locks are held (or
     * from inside core), sent by notices_flush with none held. */
    nng_mtx *nq_mtx; /* a leaf: nothing is locked under it */
    struct notice *nq_head, *nq_tail;
    _Atomic size_t nq_len;
    _Atomic uint64_t msgs_in, frames_out, frames_in, handshakes, refused, bad_frames,
        undeliverable, pings, pongs, held, notices, notices_lost, bulk_cuts, bulk_waits,
        reads_polled, writes_inline;
    /* By lane (L_CTL, L_NRM, L_BLK): envelopes (chunked payloads on BULK)
     * sent and received, bytes written and read; px_transport_stats_get
     * sums them into msgs_out, bytes_in/out and bulk_in/out. */
    _Atomic uint64_t lane_msgs_out[NLANES], lane_msgs_in[NLANES], lane_bytes_out[NLANES],
        lane_bytes_in[NLANES];
};

#define CNT(t, f, n) atomic_fetch_add_explicit(&(t)->f, (n), memory_order_relaxed)

/* The receive path's entry points (link.c). A batch from c (an inbound
 * NORMAL or CONTROL connection of c->p) or a chunk from c (its inbound
 * BULK connection): delivered, held back, or reassembled. Each takes
 * c->p->rx_mtx; returns a reason to drop the connection, or NULL. */
const char *pxl_deliver_batch(conn *c, const Plexus__Batch *b);
const char *pxl_rx_chunk(conn *c, const Plexus__Chunk *ch);

/* Drops p's held envelopes and partial payloads (rx_mtx held). */
void pxl_rx_reset(peer *p, px_err why);

/* Sends the deferred "undelivered" notices; no lock may be held. */
void pxl_notices_flush(px_transport *t);

#endif
