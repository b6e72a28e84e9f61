/*
 * admin.c — the admin channel (plexus/admin.h): the node-link handshake on
 * lane LANE_ADMIN, then sealed frames that each carry one opaque message.
 *
 * Wire: a node link's bytes (wire.h; proto/README.md §9): preamble and
 * Handshake{hello} each way, naming lane 3; each side's first sealed frame
 * is its Frame{auth}; every later frame's plaintext is one admin message as
 * it is, without a Frame around it. Both sides keep their max_frame
 * (message + tag) and never send more than the other's.
 *
 * Threads. Unlike link.c (callbacks, no thread of its own), this is
 * blocking I/O on threads of its own: admin connections are few, and a
 * handler may block.
 *  - One acceptor thread per server accepts, starts one thread per
 *    connection and joins the finished ones (it wakes at least once a
 *    second for that). At most max_clients + HS_SPARE connection threads
 *    exist: a connection beyond that is closed at once, so a flood of
 *    half-open connections costs at most HS_SPARE extra threads, each for
 *    at most handshake_ms.
 *  - A connection's thread runs the handshake, then reads frames and calls
 *    the handler for each; px_admin_send writes from that same thread.
 *  - Each channel keeps one receive in flight (rx_cb) whenever its buffer
 *    has room, also while the handler runs, so a client that hangs up is
 *    seen at once (px_admin_conn_closing) by a handler that streams.
 *  - px_admin_server_stop closes the listener and shuts every stream (that
 *    ends every wait and every write), then joins the threads.
 * Locks: srv->mtx guards the connection list, the thread and slot counts,
 * each conn's done flag, and starting an accept against closing the
 * listener. chan->mtx guards a channel's receive state (rbuf, rlen, rcap,
 * rx_busy, rx_err) and its closed flag: every receive and send starts
 * under it, so none starts after chan_shut (nng would leave it pending).
 * A receive in flight writes rbuf[rlen..rcap), the owning thread reads
 * rbuf[roff..rlen). Order: srv->mtx -> chan->mtx. No lock is held while
 * the handler runs.
 */
#include <arpa/inet.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/supplemental/util/platform.h>
#include <sodium.h>

#include <plexus/admin.h>
#include <plexus/router.h>

#include "wire.h"

#define HS_SPARE 8                /* connection threads beyond max_clients (handshakes) */
#define SEND_MS 5000              /* px_admin_send's bound */
#define REAP_MS 1000              /* the acceptor joins finished threads this often */
#define RX_MIN (64u << 10)        /* a receive asks for at least this much room */
#define MAX_MSG_LIMIT (1u << 30)  /* max_msg's upper bound */
#define MAX_CLIENTS_LIMIT 1024

/* ---- a channel: one stream, its receive buffer, its two ciphers ---- */

typedef struct chan {
    nng_stream *s;
    nng_aio *rx_aio; /* rx_cb: keeps a receive in flight while rbuf has room */
    nng_aio *tx_aio; /* no callback: the owning thread waits on it */
    nng_mtx *mtx;
    nng_cv *cv;      /* rx_cb, chan_shut -> chan_need */
    /* mtx */
    uint8_t *rbuf;
    size_t rlen, rcap;
    bool rx_busy;
    bool closed; /* chan_shut: no operation starts after it */
    int rx_err;  /* the nng error that ended receiving; 0 while open */
    /* the owning thread only */
    size_t roff; /* bytes of rbuf handed out (chan_take) */
    uint8_t *wbuf;
    size_t wcap;
    pxn_cipher rx, tx;
    uint32_t max_frame;      /* the largest frame this side takes (message + tag) */
    uint32_t peer_max_frame; /* the peer's, from its Hello */
    char addr[96];           /* the peer's address, for the log */
} chan;

static void rx_start_locked(chan *ch) {
    if (ch->closed && ch->rx_err == 0) {
        ch->rx_err = NNG_ECLOSED;
    }
    if (ch->rx_err != 0 || ch->rx_busy || ch->rlen == ch->rcap) {
        return;
    }
    nng_iov iov = {ch->rbuf + ch->rlen, ch->rcap - ch->rlen};
    nng_aio_set_iov(ch->rx_aio, 1, &iov);
    ch->rx_busy = true;
    nng_stream_recv(ch->s, ch->rx_aio);
}

static void rx_cb(void *arg) {
    chan *ch = arg;
    nng_mtx_lock(ch->mtx);
    ch->rx_busy = false;
    int rv = nng_aio_result(ch->rx_aio);
    size_t got = rv == 0 ? nng_aio_count(ch->rx_aio) : 0;
    if (rv == 0 && got == 0) {
        rv = NNG_ECONNSHUT;
    }
    if (rv != 0) {
        ch->rx_err = rv;
    } else {
        ch->rlen += got;
        rx_start_locked(ch);
    }
    nng_cv_wake(ch->cv);
    nng_mtx_unlock(ch->mtx);
}

/* Fills in ch for the connected stream s (taken: freed by chan_fini, or
 * here on failure). */
static px_err chan_init(chan *ch, nng_stream *s) {
    memset(ch, 0, sizeof(*ch));
    ch->s = s;
    if (nng_mtx_alloc(&ch->mtx) != 0 || nng_cv_alloc(&ch->cv, ch->mtx) != 0 ||
        nng_aio_alloc(&ch->rx_aio, rx_cb, ch) != 0 || nng_aio_alloc(&ch->tx_aio, NULL, NULL) != 0) {
        nng_aio_free(ch->rx_aio);
        if (ch->cv != NULL) {
            nng_cv_free(ch->cv);
        }
        if (ch->mtx != NULL) {
            nng_mtx_free(ch->mtx);
        }
        nng_stream_free(s);
        memset(ch, 0, sizeof(*ch));
        return PX_ENOMEM;
    }
    return PX_OK;
}

/* Closes the stream: every wait on it ends, and no operation starts on it
 * again. Needed because nng 1.5's tcp stream leaves an operation started
 * after nng_stream_close pending until its timeout. Any thread. */
static void chan_shut(chan *ch) {
    nng_mtx_lock(ch->mtx);
    ch->closed = true;
    nng_stream_close(ch->s);
    if (!ch->rx_busy && ch->rx_err == 0) {
        ch->rx_err = NNG_ECLOSED;
    }
    nng_cv_wake(ch->cv);
    nng_mtx_unlock(ch->mtx);
}

/* Shuts ch and waits until no receive is in flight; frees the buffers.
 * The stream itself stays (another thread may still shut it) until
 * chan_fini. Owning thread. */
static void chan_close(chan *ch) {
    chan_shut(ch);
    nng_aio_stop(ch->rx_aio);
    nng_aio_stop(ch->tx_aio);
    free(ch->rbuf);
    free(ch->wbuf);
    ch->rbuf = ch->wbuf = NULL;
    ch->rlen = ch->rcap = ch->roff = ch->wcap = 0;
    sodium_memzero(&ch->rx, sizeof(ch->rx));
    sodium_memzero(&ch->tx, sizeof(ch->tx));
}

static void chan_fini(chan *ch) {
    if (ch->s == NULL) {
        return;
    }
    chan_close(ch);
    nng_stream_free(ch->s);
    nng_aio_free(ch->rx_aio);
    nng_aio_free(ch->tx_aio);
    nng_cv_free(ch->cv);
    nng_mtx_free(ch->mtx);
    memset(ch, 0, sizeof(*ch));
}

/* True once the peer has closed its end (or the stream was closed). */
static bool chan_ended(chan *ch) {
    nng_mtx_lock(ch->mtx);
    bool ended = ch->rx_err != 0;
    nng_mtx_unlock(ch->mtx);
    return ended;
}

/* Waits until n bytes that chan_take has not handed out are buffered.
 * PX_ETIMEDOUT at deadline (what arrived stays buffered), PX_ECLOSED
 * when the stream ended first, PX_ENOMEM. Owning thread. */
static px_err chan_need(chan *ch, size_t n, nng_time deadline) {
    px_err rv = PX_OK;
    nng_mtx_lock(ch->mtx);
    while (ch->rlen - ch->roff < n) {
        if (ch->rx_err != 0) {
            rv = PX_ECLOSED;
            break;
        }
        if (!ch->rx_busy) {
            /* No receive writes into rbuf now: compact it, grow it. */
            if (ch->roff > 0) {
                memmove(ch->rbuf, ch->rbuf + ch->roff, ch->rlen - ch->roff);
                ch->rlen -= ch->roff;
                ch->roff = 0;
            }
            size_t want = n > RX_MIN ? n : RX_MIN;
            if (ch->rcap < want) {
                uint8_t *nb = realloc(ch->rbuf, want);
                if (nb == NULL) {
                    rv = PX_ENOMEM;
                    break;
                }
                ch->rbuf = nb;
                ch->rcap = want;
            }
            rx_start_locked(ch);
        }
        if (nng_cv_until(ch->cv, deadline) == NNG_ETIMEDOUT && ch->rlen - ch->roff < n) {
            rv = PX_ETIMEDOUT;
            break;
        }
    }
    nng_mtx_unlock(ch->mtx);
    return rv;
}

/* Hands out the next n bytes (chan_need said they are there); valid until
 * the next chan_need. Owning thread. */
static uint8_t *chan_take(chan *ch, size_t n) {
    uint8_t *p = ch->rbuf + ch->roff;
    ch->roff += n;
    return p;
}

static nng_duration until(nng_time deadline) {
    nng_time now = nng_clock();
    uint64_t left = deadline > now ? deadline - now : 0;
    return left > INT32_MAX ? INT32_MAX : (nng_duration)left;
}

/* Writes b[0..n) in full by deadline. PX_ETIMEDOUT or PX_ECLOSED otherwise:
 * a write cut short leaves the stream unusable. Owning thread. */
static px_err chan_write(chan *ch, const uint8_t *b, size_t n, nng_time deadline) {
    while (n > 0) {
        nng_duration left = until(deadline);
        if (left == 0) {
            return PX_ETIMEDOUT;
        }
        nng_iov iov = {(void *)(uintptr_t)b, n};
        nng_aio_set_iov(ch->tx_aio, 1, &iov);
        nng_aio_set_timeout(ch->tx_aio, left);
        nng_mtx_lock(ch->mtx); /* against chan_shut: started before it, or not at all */
        bool closed = ch->closed;
        if (!closed) {
            nng_stream_send(ch->s, ch->tx_aio);
        }
        nng_mtx_unlock(ch->mtx);
        if (closed) {
            return PX_ECLOSED;
        }
        nng_aio_wait(ch->tx_aio);
        int rv = nng_aio_result(ch->tx_aio);
        if (rv != 0) {
            return rv == NNG_ETIMEDOUT ? PX_ETIMEDOUT : PX_ECLOSED;
        }
        size_t k = nng_aio_count(ch->tx_aio);
        b += k;
        n -= k;
    }
    return PX_OK;
}

/* Seals one message into a frame and writes it (the caller checked its
 * size against the peer's max_frame). */
static px_err chan_send(chan *ch, const uint8_t *data, size_t len, nng_time deadline) {
    size_t total = pxn_sealed_len(&ch->tx, len);
    if (ch->wcap < total) {
        uint8_t *nb = realloc(ch->wbuf, total);
        if (nb == NULL) {
            return PX_ENOMEM;
        }
        ch->wbuf = nb;
        ch->wcap = total;
    }
    pxn_seal(&ch->tx, data, len, ch->wbuf);
    return chan_write(ch, ch->wbuf, total, deadline);
}

/* Reads the next sealed frame and opens it in place: *pt, *n its
 * plaintext, valid until the next read. PX_ETIMEDOUT (nothing consumed),
 * PX_ECLOSED, PX_EMSGSIZE (a length under a tag or over max_frame),
 * PX_EAUTH (does not open), PX_ENOMEM. Owning thread. */
static px_err chan_frame(chan *ch, nng_time deadline, uint8_t **pt, size_t *n) {
    px_err rv = chan_need(ch, PXN_LEN_BYTES, deadline);
    if (rv != PX_OK) {
        return rv;
    }
    uint32_t len = pxn_get_u32(ch->rbuf + ch->roff);
    if (len < PXN_TAG_BYTES || len > ch->max_frame) {
        return PX_EMSGSIZE;
    }
    rv = chan_need(ch, PXN_LEN_BYTES + (size_t)len, deadline);
    if (rv != PX_OK) {
        return rv;
    }
    uint8_t *at = chan_take(ch, PXN_LEN_BYTES + (size_t)len);
    rv = pxn_open(&ch->rx, at, at + PXN_LEN_BYTES, len, at + PXN_LEN_BYTES, n);
    *pt = at + PXN_LEN_BYTES;
    return rv == PX_OK ? PX_OK : PX_EAUTH;
}

/* Reads the peer's preamble and handshake frame: *data, *n the packed
 * Handshake. PX_EPROTO (bad preamble, length out of bounds), PX_ECLOSED,
 * PX_ETIMEDOUT, PX_ENOMEM; why says which. */
static px_err chan_hello(chan *ch, nng_time deadline, const uint8_t **data, size_t *n,
                         char *why, size_t whylen) {
    px_err rv = chan_need(ch, PXN_PREAMBLE_LEN, deadline);
    if (rv == PX_OK &&
        memcmp(chan_take(ch, PXN_PREAMBLE_LEN), PXN_PREAMBLE, PXN_PREAMBLE_LEN) != 0) {
        snprintf(why, whylen, "not a plexus peer (bad preamble)");
        return PX_EPROTO;
    }
    if (rv == PX_OK) {
        rv = chan_need(ch, PXN_LEN_BYTES, deadline);
    }
    if (rv == PX_OK) {
        uint32_t len = pxn_get_u32(chan_take(ch, PXN_LEN_BYTES));
        if (len == 0 || len > PXN_HS_MAX) {
            snprintf(why, whylen, "handshake frame length %u out of bounds", len);
            return PX_EPROTO;
        }
        *n = len;
        rv = chan_need(ch, len, deadline);
    }
    if (rv != PX_OK) {
        snprintf(why, whylen, "%s before the handshake was complete",
                 rv == PX_ETIMEDOUT ? "timed out" : rv == PX_ECLOSED ? "closed" : "out of memory");
        return rv;
    }
    *data = chan_take(ch, *n);
    return PX_OK;
}

/* After pxn_hs_peer (and, on the listening side, this side's Hello sent):
 * keys, this side's Auth frame out, the peer's in and checked. PX_EAUTH
 * (the peer's Auth does not open — it lacks the cluster secret — or does
 * not prove its key), PX_EPROTO, PX_ECLOSED, PX_ETIMEDOUT, PX_ENOMEM. */
static px_err auth_exchange(chan *ch, pxn_hs *hs, nng_time deadline, char *why, size_t whylen) {
    if (pxn_hs_keys(hs, &ch->rx, &ch->tx) != PX_OK) {
        snprintf(why, whylen, "weak key exchange key");
        return PX_EAUTH;
    }
    ch->peer_max_frame = hs->peer->max_frame;
    size_t n;
    uint8_t *a = pxn_auth_seal(hs, &ch->tx, &n);
    px_err rv = a != NULL ? chan_write(ch, a, n, deadline) : PX_ENOMEM;
    free(a);
    uint8_t *pt = NULL;
    if (rv == PX_OK) {
        rv = chan_frame(ch, deadline, &pt, &n);
    }
    if (rv == PX_OK) {
        rv = pxn_auth_check(hs, pt, n);
        if (rv != PX_OK) {
            snprintf(why, whylen, "%s did not prove its identity key", hs->peer->node_name);
        }
        return rv;
    }
    if (rv == PX_EAUTH) {
        snprintf(why, whylen, "%s's Auth frame does not open: not the same cluster secret",
                 hs->peer->node_name);
    } else if (rv == PX_EMSGSIZE) {
        snprintf(why, whylen, "%s's Auth frame length is out of bounds", hs->peer->node_name);
        rv = PX_EPROTO;
    } else {
        snprintf(why, whylen, "%s before the Auth frames were exchanged",
                 rv == PX_ETIMEDOUT ? "timed out" : rv == PX_ECLOSED ? "closed" : "out of memory");
    }
    return rv;
}

/* "1.2.3.4:5", "[::1]:5", "ipc (pid 42)". */
static void addr_format(nng_stream *s, char *out, size_t n) {
    nng_sockaddr sa;
    char ip[INET6_ADDRSTRLEN] = "?";
    uint64_t pid = 0;
    if (nng_stream_get_addr(s, NNG_OPT_REMADDR, &sa) != 0) {
        sa.s_family = NNG_AF_UNSPEC;
    }
    switch (sa.s_family) {
    case NNG_AF_INET:
        inet_ntop(AF_INET, &sa.s_in.sa_addr, ip, sizeof(ip));
        snprintf(out, n, "%s:%u", ip, (unsigned)ntohs(sa.s_in.sa_port));
        break;
    case NNG_AF_INET6:
        inet_ntop(AF_INET6, sa.s_in6.sa_addr, ip, sizeof(ip));
        snprintf(out, n, "[%s]:%u", ip, (unsigned)ntohs(sa.s_in6.sa_port));
        break;
    case NNG_AF_IPC:
        if (nng_stream_get_uint64(s, NNG_OPT_IPC_PEER_PID, &pid) == 0) {
            snprintf(out, n, "ipc (pid %llu)", (unsigned long long)pid);
        } else {
            snprintf(out, n, "ipc");
        }
        break;
    default:
        snprintf(out, n, "an unknown address");
        break;
    }
}

/* ---- the server ---- */

struct px_admin_conn {
    px_admin_server *srv;
    chan ch;
    pxn_self self;              /* this node, as its Hello says (node_inc of now) */
    nng_thread *thr;            /* the acceptor, and stop once the acceptor is joined */
    struct px_admin_conn *next; /* srv->mtx */
    bool done;                  /* srv->mtx: its thread has finished */
    /* the connection's thread only */
    bool slot;   /* holds one of max_clients */
    bool broken; /* a send failed: the stream is closed */
    char peer[64];
    uint8_t peer_pk[PX_PUBKEY_BYTES];
};

struct px_admin_server {
    px_admin_server_cfg cfg; /* listen, allowed and cluster_key point at our copies */
    px_system *sys;
    char *listen, *url;
    uint8_t (*allowed)[PX_PUBKEY_BYTES];
    uint8_t key[PX_SECRET_BYTES];
    pxn_self self;
    nng_stream_listener *lst;
    nng_aio *acc_aio;
    nng_thread *acc_thr;
    nng_mtx *mtx;
    /* mtx */
    px_admin_conn *conns;
    uint32_t nthreads; /* connection threads that have not finished */
    uint32_t nslots;   /* connections past the Hello checks (<= max_clients) */
    atomic_bool stopping;
    _Atomic uint64_t accepted, refused, bad_frames, requests, clients;
};

static bool key_allowed(const px_admin_server *s, const uint8_t *pk) {
    if (s->cfg.n_allowed == 0) {
        return true;
    }
    for (size_t i = 0; i < s->cfg.n_allowed; i++) {
        if (sodium_memcmp(s->allowed[i], pk, PX_PUBKEY_BYTES) == 0) {
            return true;
        }
    }
    return false;
}

/* The listening side of the handshake, within handshake_ms. On failure,
 * why is the reason for the log (and a refusal went out where the
 * protocol sends one). */
static px_err conn_handshake(px_admin_conn *c, char *why, size_t whylen) {
    px_admin_server *s = c->srv;
    chan *ch = &c->ch;
    nng_time dl = nng_clock() + s->cfg.handshake_ms;
    c->self = s->self;
    c->self.node_inc = px_system_node_inc(s->sys);
    pxn_hs hs;
    px_err rv = pxn_hs_init(&hs, PXN_LISTENER, &c->self, PLEXUS__LANE__LANE_ADMIN, NULL, NULL);
    const uint8_t *hd = NULL;
    size_t n = 0;
    if (rv != PX_OK) {
        snprintf(why, whylen, "cannot start a handshake: %s", px_errname(rv));
        pxn_hs_fini(&hs);
        return rv;
    }
    rv = chan_hello(ch, dl, &hd, &n, why, whylen);
    if (rv != PX_OK) {
        pxn_hs_fini(&hs);
        return rv;
    }
    Plexus__Refuse__Reason rr = PLEXUS__REFUSE__REASON__UNSPECIFIED;
    char detail[160] = "";
    rv = pxn_hs_peer(&hs, hd, n, PLEXUS__LANE__LANE_ADMIN, &rr, why, whylen);
    if (rv != PX_OK) {
        snprintf(detail, sizeof(detail), "%.*s", (int)sizeof(detail) - 1, why);
    } else if (!key_allowed(s, hs.peer->identity_pk.data)) {
        char pkb[PX_PUBKEY_B64_LEN];
        px_pubkey_format(hs.peer->identity_pk.data, pkb);
        rr = PLEXUS__REFUSE__REASON__UNKNOWN_IDENTITY;
        snprintf(detail, sizeof(detail), "this key may not use the admin channel of %s",
                 s->self.node_name);
        snprintf(why, whylen, "%s (key %s) is not on the admin allow-list",
                 hs.peer->node_name, pkb);
        rv = PX_EAUTH;
    } else {
        nng_mtx_lock(s->mtx);
        c->slot = s->nslots < s->cfg.max_clients;
        s->nslots += c->slot ? 1 : 0;
        nng_mtx_unlock(s->mtx);
        if (!c->slot) {
            rr = PLEXUS__REFUSE__REASON__SHUTTING_DOWN;
            snprintf(detail, sizeof(detail), "too many admin clients (max %u)",
                     s->cfg.max_clients);
            snprintf(why, whylen, "%s: too many admin clients (max %u)", hs.peer->node_name,
                     s->cfg.max_clients);
            rv = PX_ELIMIT;
        }
    }
    if (rv != PX_OK) {
        uint8_t *b = rr != PLEXUS__REFUSE__REASON__UNSPECIFIED
                         ? pxn_refuse_wire(rr, detail, true, &n)
                         : NULL;
        if (b != NULL) {
            (void)chan_write(ch, b, n, dl); /* best effort: we close anyway */
        }
        free(b);
        pxn_hs_fini(&hs);
        return rv;
    }
    uint8_t *hello = pxn_hello_wire(&hs, &n);
    rv = hello != NULL ? chan_write(ch, hello, n, dl) : PX_ENOMEM;
    free(hello);
    if (rv != PX_OK) {
        snprintf(why, whylen, "cannot send the hello: %s", px_strerror(rv));
    } else {
        rv = auth_exchange(ch, &hs, dl, why, whylen);
    }
    if (rv == PX_OK) {
        snprintf(c->peer, sizeof(c->peer), "%s", hs.peer->node_name);
        memcpy(c->peer_pk, hs.peer->identity_pk.data, PX_PUBKEY_BYTES);
    }
    pxn_hs_fini(&hs);
    return rv;
}

/* After the handshake: a frame in, the handler, until the client goes,
 * idles, sends a bad frame, or the server stops. */
static void conn_serve(px_admin_conn *c) {
    px_admin_server *s = c->srv;
    char pkb[PX_PUBKEY_B64_LEN], end[160] = "the client closed the connection";
    px_pubkey_format(c->peer_pk, pkb);
    atomic_fetch_add(&s->accepted, 1);
    atomic_fetch_add(&s->clients, 1);
    px_log(s->sys, PX_LOG_INFO, "admin: %s (key %s) connected from %s", c->peer, pkb, c->ch.addr);
    px_log_level lvl = PX_LOG_INFO;
    while (!c->broken && !atomic_load(&s->stopping)) {
        uint8_t *pt = NULL;
        size_t n = 0;
        px_err rv = chan_frame(&c->ch, nng_clock() + s->cfg.idle_ms, &pt, &n);
        if (rv == PX_ETIMEDOUT) {
            snprintf(end, sizeof(end), "idle for %u ms", s->cfg.idle_ms);
            break;
        }
        if (rv == PX_EMSGSIZE || rv == PX_EAUTH) {
            atomic_fetch_add(&s->bad_frames, 1);
            snprintf(end, sizeof(end), "%s",
                     rv == PX_EAUTH ? "a frame failed authentication (tampered, replayed or "
                                      "foreign): connection dropped"
                                    : "a frame length out of bounds: connection dropped");
            lvl = PX_LOG_WARN;
            break;
        }
        if (rv != PX_OK) {
            if (rv == PX_ENOMEM) {
                snprintf(end, sizeof(end), "out of memory for a frame");
                lvl = PX_LOG_ERROR;
            }
            break;
        }
        atomic_fetch_add(&s->requests, 1);
        s->cfg.handler(s->cfg.arg, c, c->peer, c->peer_pk, pt, n);
    }
    if (c->broken && lvl == PX_LOG_INFO) {
        snprintf(end, sizeof(end), "a reply could not be sent");
    }
    if (!atomic_load(&s->stopping)) {
        px_log(s->sys, lvl, "admin: %s (key %s, %s) disconnected: %s", c->peer, pkb, c->ch.addr,
               end);
    }
}

static void conn_main(void *arg) {
    px_admin_conn *c = arg;
    px_admin_server *s = c->srv;
    char why[320];
    px_err rv = conn_handshake(c, why, sizeof(why));
    if (rv == PX_OK) {
        conn_serve(c);
    } else {
        atomic_fetch_add(&s->refused, 1);
        if (!atomic_load(&s->stopping)) {
            px_log(s->sys, PX_LOG_WARN, "admin: refused a connection from %s: %s", c->ch.addr,
                   why);
        }
    }
    chan_close(&c->ch);
    nng_mtx_lock(s->mtx);
    if (rv == PX_OK) {
        atomic_fetch_sub(&s->clients, 1); /* with its slot: one that sees it gone may dial */
    }
    s->nslots -= c->slot ? 1 : 0;
    s->nthreads--;
    c->done = true;
    nng_mtx_unlock(s->mtx);
}

/* Joins and frees the finished connections (all of them: every thread
 * must be ending). Not under s->mtx. */
static void reap(px_admin_server *s, bool all) {
    px_admin_conn *dead = NULL;
    nng_mtx_lock(s->mtx);
    for (px_admin_conn **pp = &s->conns; *pp != NULL;) {
        px_admin_conn *c = *pp;
        if (all || c->done) {
            *pp = c->next;
            c->next = dead;
            dead = c;
        } else {
            pp = &c->next;
        }
    }
    nng_mtx_unlock(s->mtx);
    while (dead != NULL) {
        px_admin_conn *c = dead;
        dead = c->next;
        nng_thread_destroy(c->thr);
        chan_fini(&c->ch);
        free(c);
    }
}

/* A new stream: its own thread, unless too many exist. */
static void conn_start(px_admin_server *s, nng_stream *st) {
    char addr[96];
    addr_format(st, addr, sizeof(addr));
    nng_mtx_lock(s->mtx);
    bool full = s->nthreads >= s->cfg.max_clients + HS_SPARE;
    s->nthreads += full ? 0 : 1;
    nng_mtx_unlock(s->mtx);
    const char *why = "too many connections open or in their handshake";
    px_admin_conn *c = full ? NULL : calloc(1, sizeof(*c));
    if (c == NULL || chan_init(&c->ch, st) != PX_OK) {
        if (c == NULL) {
            nng_stream_free(st);
        }
        free(c);
        c = NULL;
        why = full ? why : "out of memory";
    } else {
        c->srv = s;
        c->ch.max_frame = s->cfg.max_msg + PXN_TAG_BYTES;
        snprintf(c->ch.addr, sizeof(c->ch.addr), "%s", addr);
        nng_mtx_lock(s->mtx);
        c->next = s->conns;
        s->conns = c;
        nng_mtx_unlock(s->mtx);
        if (nng_thread_create(&c->thr, conn_main, c) == 0) {
            nng_thread_set_name(c->thr, "px-admin-conn");
            return;
        }
        why = "cannot start a thread";
        nng_mtx_lock(s->mtx);
        for (px_admin_conn **pp = &s->conns; *pp != NULL; pp = &(*pp)->next) {
            if (*pp == c) {
                *pp = c->next;
                break;
            }
        }
        nng_mtx_unlock(s->mtx);
        chan_fini(&c->ch);
        free(c);
    }
    nng_mtx_lock(s->mtx);
    s->nthreads -= full ? 0 : 1;
    nng_mtx_unlock(s->mtx);
    atomic_fetch_add(&s->refused, 1);
    px_log(s->sys, PX_LOG_WARN, "admin: refused a connection from %s: %s", addr, why);
}

static void acceptor(void *arg) {
    px_admin_server *s = arg;
    while (!atomic_load(&s->stopping)) {
        reap(s, false);
        nng_aio_set_timeout(s->acc_aio, REAP_MS);
        nng_mtx_lock(s->mtx); /* against stop: started before the close, or not at all */
        bool stopping = atomic_load(&s->stopping);
        if (!stopping) {
            nng_stream_listener_accept(s->lst, s->acc_aio);
        }
        nng_mtx_unlock(s->mtx);
        if (stopping) {
            break;
        }
        nng_aio_wait(s->acc_aio);
        int rv = nng_aio_result(s->acc_aio);
        if (rv == 0) {
            nng_stream *st = nng_aio_get_output(s->acc_aio, 0);
            if (atomic_load(&s->stopping)) {
                nng_stream_free(st);
            } else {
                conn_start(s, st);
            }
        } else if (rv != NNG_ETIMEDOUT && rv != NNG_ECLOSED && !atomic_load(&s->stopping)) {
            px_log(s->sys, PX_LOG_WARN, "admin: accept on %s: %s", s->url, nng_strerror(rv));
            nng_msleep(10); /* a persistent error (out of descriptors) must not spin */
        }
    }
}

static px_err bad_cfg(char *err, size_t errlen, const char *what) {
    if (err != NULL && errlen > 0) {
        snprintf(err, errlen, "admin config: %s", what);
    }
    return PX_EINVAL;
}

/* Checks cfg and fills *c with it and the defaults. */
static px_err cfg_check(const px_admin_server_cfg *cfg, px_admin_server_cfg *c, char *err,
                        size_t errlen) {
    *c = *cfg;
    c->max_clients = c->max_clients ? c->max_clients : 16;
    c->max_msg = c->max_msg ? c->max_msg : 4u << 20;
    c->idle_ms = c->idle_ms ? c->idle_ms : 300000;
    c->handshake_ms = c->handshake_ms ? c->handshake_ms : 5000;
    if (c->listen == NULL || c->listen[0] == '\0') {
        return bad_cfg(err, errlen, "listen is required");
    }
    if (c->sys == NULL || c->identity == NULL || c->cluster_key == NULL || c->handler == NULL) {
        return bad_cfg(err, errlen, "sys, identity, cluster_key and handler are required");
    }
    if (c->n_allowed > 0 && c->allowed == NULL) {
        return bad_cfg(err, errlen, "n_allowed > 0 needs allowed");
    }
    if (c->max_clients > MAX_CLIENTS_LIMIT) {
        return bad_cfg(err, errlen, "max_clients is over 1024");
    }
    if (c->max_msg < 1024 || c->max_msg > MAX_MSG_LIMIT) {
        return bad_cfg(err, errlen, "max_msg must be 1 KiB..1 GiB");
    }
    return PX_OK;
}

/* The address bound: a tcp port 0 resolved. */
static char *bound_url(px_admin_server *s) {
    nng_sockaddr sa;
    if (nng_stream_listener_get_addr(s->lst, NNG_OPT_LOCADDR, &sa) == 0 &&
        (sa.s_family == NNG_AF_INET || sa.s_family == NNG_AF_INET6)) {
        char ip[INET6_ADDRSTRLEN] = "?", buf[INET6_ADDRSTRLEN + 32];
        if (sa.s_family == NNG_AF_INET) {
            inet_ntop(AF_INET, &sa.s_in.sa_addr, ip, sizeof(ip));
            snprintf(buf, sizeof(buf), "tcp://%s:%u", ip, (unsigned)ntohs(sa.s_in.sa_port));
        } else {
            inet_ntop(AF_INET6, sa.s_in6.sa_addr, ip, sizeof(ip));
            snprintf(buf, sizeof(buf), "tcp://[%s]:%u", ip, (unsigned)ntohs(sa.s_in6.sa_port));
        }
        return strdup(buf);
    }
    return strdup(s->listen);
}

px_err px_admin_server_start(const px_admin_server_cfg *cfg, px_admin_server **out, char *err,
                             size_t errlen) {
    if (out == NULL || cfg == NULL) {
        return bad_cfg(err, errlen, "no config or no out");
    }
    *out = NULL;
    px_admin_server_cfg c;
    px_err rv = cfg_check(cfg, &c, err, errlen);
    if (rv != PX_OK) {
        return rv;
    }
    if (sodium_init() < 0) {
        return PX_ESYS;
    }
    px_admin_server *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return PX_ENOMEM;
    }
    s->cfg = c;
    s->sys = c.sys;
    memcpy(s->key, c.cluster_key, PX_SECRET_BYTES);
    s->cfg.cluster_key = s->key;
    s->listen = strdup(c.listen);
    s->cfg.listen = s->listen;
    if (c.n_allowed > 0) {
        s->allowed = malloc(c.n_allowed * sizeof(*s->allowed));
        if (s->allowed != NULL) {
            memcpy(s->allowed, c.allowed, c.n_allowed * sizeof(*s->allowed));
        }
    }
    s->cfg.allowed = (const uint8_t(*)[PX_PUBKEY_BYTES])s->allowed;
    if (s->listen == NULL || (c.n_allowed > 0 && s->allowed == NULL) ||
        nng_mtx_alloc(&s->mtx) != 0 || nng_aio_alloc(&s->acc_aio, NULL, NULL) != 0) {
        px_admin_server_stop(s);
        return PX_ENOMEM;
    }
    int e = nng_stream_listener_alloc(&s->lst, s->listen);
    if (e == 0) {
        (void)nng_stream_listener_set_bool(s->lst, NNG_OPT_TCP_NODELAY, true); /* not on ipc */
        e = nng_stream_listener_listen(s->lst);
    }
    if (e != 0) {
        if (err != NULL && errlen > 0) {
            snprintf(err, errlen, "admin: cannot listen on %s: %s", s->listen, nng_strerror(e));
        }
        px_admin_server_stop(s);
        return e == NNG_EADDRINVAL || e == NNG_ENOTSUP ? PX_EINVAL : PX_EIO;
    }
    s->url = bound_url(s);
    if (s->url == NULL) {
        px_admin_server_stop(s);
        return PX_ENOMEM;
    }
    const char *name = px_system_node_name(s->sys);
    s->self = (pxn_self){.node_name = name,
                         .node_id = px_node_id(name),
                         .id = c.identity,
                         .cluster_key = s->key,
                         .max_frame = c.max_msg + PXN_TAG_BYTES,
                         .max_msg = c.max_msg,
                         .advertise = s->url};
    if (nng_thread_create(&s->acc_thr, acceptor, s) != 0) {
        s->acc_thr = NULL;
        px_admin_server_stop(s);
        return PX_ESYS;
    }
    nng_thread_set_name(s->acc_thr, "px-admin-accept");
    px_log(s->sys, PX_LOG_INFO, "admin channel listening on %s (at most %u clients%s)", s->url,
           c.max_clients, c.n_allowed > 0 ? ", allow-list" : "");
    *out = s;
    return PX_OK;
}

const char *px_admin_server_url(const px_admin_server *s) { return s != NULL ? s->url : NULL; }

void px_admin_server_stats(px_admin_server *s, px_admin_stats *out) {
    if (out == NULL) {
        return;
    }
    memset(out, 0, sizeof(*out));
    if (s == NULL) {
        return;
    }
    out->accepted = atomic_load(&s->accepted);
    out->refused = atomic_load(&s->refused);
    out->bad_frames = atomic_load(&s->bad_frames);
    out->requests = atomic_load(&s->requests);
    out->clients = atomic_load(&s->clients);
}

void px_admin_server_stop(px_admin_server *s) {
    if (s == NULL) {
        return;
    }
    if (s->mtx != NULL) {
        nng_mtx_lock(s->mtx);
    }
    atomic_store(&s->stopping, true);
    if (s->lst != NULL) {
        nng_stream_listener_close(s->lst); /* ends the acceptor's wait */
    }
    if (s->mtx != NULL) {
        nng_mtx_unlock(s->mtx);
    }
    if (s->acc_thr != NULL) {
        nng_thread_destroy(s->acc_thr);
    }
    if (s->mtx != NULL) {
        nng_mtx_lock(s->mtx);
        for (px_admin_conn *c = s->conns; c != NULL; c = c->next) {
            chan_shut(&c->ch); /* ends its waits, its writes, its handler's sends */
        }
        nng_mtx_unlock(s->mtx);
        reap(s, true);
        nng_mtx_free(s->mtx);
    }
    if (s->lst != NULL) {
        nng_stream_listener_free(s->lst);
    }
    nng_aio_free(s->acc_aio);
    if (s->url != NULL) {
        px_log(s->sys, PX_LOG_INFO, "admin channel on %s stopped", s->url);
    }
    free(s->listen);
    free(s->url);
    free(s->allowed);
    sodium_memzero(s->key, sizeof(s->key));
    free(s);
}

px_err px_admin_send(px_admin_conn *conn, const uint8_t *data, size_t len) {
    if (conn == NULL || (data == NULL && len > 0)) {
        return PX_EINVAL;
    }
    px_admin_server *s = conn->srv;
    if (len > s->cfg.max_msg || len > conn->ch.peer_max_frame - PXN_TAG_BYTES) {
        return PX_EMSGSIZE;
    }
    if (conn->broken || atomic_load(&s->stopping) || chan_ended(&conn->ch)) {
        return PX_ECLOSED;
    }
    px_err rv = chan_send(&conn->ch, data, len, nng_clock() + SEND_MS);
    if (rv == PX_ENOMEM) {
        return rv; /* nothing went out: the stream is still in step */
    }
    if (rv != PX_OK) {
        conn->broken = true;
        chan_shut(&conn->ch);
        return PX_ECLOSED;
    }
    return PX_OK;
}

bool px_admin_conn_closing(px_admin_conn *conn) {
    return conn == NULL || conn->broken || atomic_load(&conn->srv->stopping) ||
           chan_ended(&conn->ch);
}

/* ---- the client ---- */

struct px_admin_client {
    chan ch;
    bool dead; /* a write failed or a frame was bad: the stream is closed */
};

static px_err fail(px_err rv, char *err, size_t errlen, const char *fmt, const char *a,
                   const char *b) {
    if (err != NULL && errlen > 0) {
        snprintf(err, errlen, fmt, a, b);
    }
    return rv;
}

/* The dialing side of the handshake, on c's connected stream. */
static px_err client_handshake(px_admin_client *c, const pxn_self *self, nng_time dl,
                               char *node, char *err, size_t errlen) {
    char why[320] = "";
    pxn_hs hs;
    px_err rv = pxn_hs_init(&hs, PXN_DIALER, self, PLEXUS__LANE__LANE_ADMIN, NULL, NULL);
    size_t n = 0;
    uint8_t *hello = rv == PX_OK ? pxn_hello_wire(&hs, &n) : NULL;
    rv = rv != PX_OK ? rv : hello != NULL ? chan_write(&c->ch, hello, n, dl) : PX_ENOMEM;
    free(hello);
    if (rv != PX_OK) {
        snprintf(why, sizeof(why), "cannot send the hello: %s", px_strerror(rv));
    }
    const uint8_t *hd = NULL;
    if (rv == PX_OK) {
        rv = chan_hello(&c->ch, dl, &hd, &n, why, sizeof(why));
    }
    if (rv == PX_OK) {
        Plexus__Refuse__Reason rr = PLEXUS__REFUSE__REASON__UNSPECIFIED;
        rv = pxn_hs_peer(&hs, hd, n, PLEXUS__LANE__LANE_ADMIN, &rr, why, sizeof(why));
        if (rv != PX_OK && rr != PLEXUS__REFUSE__REASON__UNSPECIFIED) {
            uint8_t *b = pxn_refuse_wire(rr, why, false, &n);
            if (b != NULL) {
                (void)chan_write(&c->ch, b, n, dl);
            }
            free(b);
        }
        rv = rv == PX_ECLOSED ? PX_EAUTH : rv; /* the node refused us */
    }
    if (rv == PX_OK) {
        rv = auth_exchange(&c->ch, &hs, dl, why, sizeof(why));
    }
    if (rv == PX_OK && node != NULL) {
        snprintf(node, 64, "%s", hs.peer->node_name);
    }
    pxn_hs_fini(&hs);
    if (rv != PX_OK) {
        fail(rv, err, errlen, "admin handshake with %s: %s", c->ch.addr, why);
    }
    return rv;
}

px_err px_admin_dial(const char *url, const char *name, const px_identity *id,
                     const uint8_t *cluster_key, uint32_t timeout_ms, px_admin_client **out,
                     char *node, char *err, size_t errlen) {
    if (out != NULL) {
        *out = NULL;
    }
    if (url == NULL || id == NULL || cluster_key == NULL || out == NULL) {
        return fail(PX_EINVAL, err, errlen, "admin dial: %s%s", "missing argument", "");
    }
    if (!pxn_name_ok(name)) {
        return fail(PX_EINVAL, err, errlen, "admin dial: bad client name '%.63s'%s",
                    name ? name : "", " (1..63 chars of [A-Za-z0-9._-])");
    }
    if (sodium_init() < 0) {
        return PX_ESYS;
    }
    nng_time dl = nng_clock() + timeout_ms;
    nng_stream_dialer *d = NULL;
    nng_aio *aio = NULL;
    int e = nng_stream_dialer_alloc(&d, url);
    if (e != 0) {
        return fail(PX_EINVAL, err, errlen, "admin dial: bad address %s: %s", url,
                    nng_strerror(e));
    }
    (void)nng_stream_dialer_set_bool(d, NNG_OPT_TCP_NODELAY, true); /* not on ipc */
    if (nng_aio_alloc(&aio, NULL, NULL) != 0) {
        nng_stream_dialer_free(d);
        return PX_ENOMEM;
    }
    nng_aio_set_timeout(aio, until(dl) > 0 ? until(dl) : 1);
    nng_stream_dialer_dial(d, aio);
    nng_aio_wait(aio);
    e = nng_aio_result(aio);
    nng_stream *st = e == 0 ? nng_aio_get_output(aio, 0) : NULL;
    nng_aio_free(aio);
    nng_stream_dialer_free(d);
    if (e != 0) {
        return fail(e == NNG_ETIMEDOUT ? PX_ETIMEDOUT : PX_EUNREACHABLE, err, errlen,
                    "admin dial: cannot reach %s: %s", url, nng_strerror(e));
    }
    px_admin_client *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        nng_stream_free(st);
        return PX_ENOMEM;
    }
    if (chan_init(&c->ch, st) != PX_OK) {
        free(c);
        return PX_ENOMEM;
    }
    snprintf(c->ch.addr, sizeof(c->ch.addr), "%s", url);
    c->ch.max_frame = PX_ADMIN_CLIENT_MAX_MSG + PXN_TAG_BYTES;
    pxn_self self = {.node_name = name,
                     .node_id = px_node_id(name),
                     .id = id,
                     .cluster_key = cluster_key,
                     .max_frame = c->ch.max_frame,
                     .max_msg = PX_ADMIN_CLIENT_MAX_MSG};
    px_err rv = client_handshake(c, &self, dl, node, err, errlen);
    if (rv != PX_OK) {
        px_admin_client_close(c);
        return rv;
    }
    *out = c;
    return PX_OK;
}

static px_err client_dead(px_admin_client *c, px_err rv) {
    c->dead = true;
    chan_shut(&c->ch);
    return rv;
}

px_err px_admin_client_send(px_admin_client *c, const uint8_t *data, size_t len,
                            uint32_t timeout_ms) {
    if (c == NULL || (data == NULL && len > 0)) {
        return PX_EINVAL;
    }
    if (len > PX_ADMIN_CLIENT_MAX_MSG || len > c->ch.peer_max_frame - PXN_TAG_BYTES) {
        return PX_EMSGSIZE;
    }
    if (c->dead) {
        return PX_ECLOSED;
    }
    px_err rv = chan_send(&c->ch, data, len, nng_clock() + timeout_ms);
    if (rv == PX_OK || rv == PX_ENOMEM) {
        return rv;
    }
    return client_dead(c, rv == PX_ETIMEDOUT ? PX_ETIMEDOUT : PX_ECLOSED);
}

px_err px_admin_client_recv(px_admin_client *c, uint32_t timeout_ms, uint8_t **data,
                            size_t *len) {
    if (c == NULL || data == NULL || len == NULL) {
        return PX_EINVAL;
    }
    *data = NULL;
    *len = 0;
    if (c->dead) {
        return PX_ECLOSED;
    }
    uint8_t *pt = NULL;
    size_t n = 0;
    px_err rv = chan_frame(&c->ch, nng_clock() + timeout_ms, &pt, &n);
    if (rv == PX_ETIMEDOUT || rv == PX_ENOMEM) {
        return rv; /* nothing consumed: still usable */
    }
    if (rv != PX_OK) {
        return client_dead(c, rv == PX_EMSGSIZE ? PX_EPROTO : rv);
    }
    *data = malloc(n ? n : 1);
    if (*data == NULL) {
        return PX_ENOMEM; /* the frame is consumed; the stream stays in step */
    }
    memcpy(*data, pt, n);
    *len = n;
    return PX_OK;
}

void px_admin_client_close(px_admin_client *c) {
    if (c == NULL) {
        return;
    }
    chan_fini(&c->ch);
    free(c);
}
