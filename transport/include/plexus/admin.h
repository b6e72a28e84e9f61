/*
 * plexus/admin.h — the admin channel: an authenticated, encrypted
 * request/reply connection between an operator's client (plexctl) and a
 * node (plexusd), with the same trust as node links.
 *
 * The server listens on its own address (admin.listen). A client dials it
 * and runs the node-link handshake (proto/README.md §4) on lane LANE_ADMIN
 * (3): both sides prove they hold the cluster secret (the session keys are
 * derived with it) and sign the transcript with their identity key. A
 * client without the secret, with a bad signature, on another lane, of
 * another protocol version, or — when the server has an allow-list — with
 * a key not on it, is refused: counted, logged once with its address, and
 * disconnected. A node link's listener refuses an admin client (lane 3)
 * the same way, and this server refuses a node link (lanes 0..2) with
 * BAD_HELLO. After the handshake every frame is sealed (XChaCha20-Poly1305,
 * counter nonces), so tampered, replayed or truncated frames drop the
 * connection. Never plaintext.
 *
 * Messages are opaque byte strings (plexctl and plexusd put
 * plexus.admin.AdminRequest / AdminReply in them, proto/admin.proto), one
 * per frame: a frame's plaintext is the message itself, with no
 * plexus.Frame around it (proto/README.md §9 has the bytes). Each side
 * takes messages up to its max_msg (the server's cfg.max_msg, a client's
 * PX_ADMIN_CLIENT_MAX_MSG), announces max_msg + 16 as max_frame in its
 * Hello, and never sends the other more.
 *
 * The server runs each connection on its own thread: at most max_clients
 * connections past the handshake's Hello (more are refused with Refuse
 * SHUTTING_DOWN, detail "too many admin clients"), and at most
 * max_clients + 8 connection threads in all (a connection beyond that is
 * closed at once, unanswered). It calls the handler once per message the
 * client sends, in order; the handler answers with px_admin_send, any
 * number of times (a long operation streams progress), and may block: it
 * only holds up its own connection. A connection with no message from the
 * client for idle_ms (while no handler runs) is closed.
 */
#ifndef PLEXUS_ADMIN_H
#define PLEXUS_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <plexus/system.h>
#include <plexus/transport.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The largest message a client sends or takes (its Hello says so: a
 * server never sends it more). */
#define PX_ADMIN_CLIENT_MAX_MSG (4u << 20)

typedef struct px_admin_server px_admin_server;
typedef struct px_admin_conn px_admin_conn; /* one client connection, server side */

/* Called on the connection's thread for each message from the client, in
 * order, with no plexus lock held. data, `peer` (the client's name from
 * its Hello) and `peer_pk` (its identity key, 32 bytes) are borrowed for
 * the call; conn is valid until the handler returns. */
typedef void (*px_admin_handler)(void *arg, px_admin_conn *conn, const char *peer,
                                 const uint8_t *peer_pk, const uint8_t *data, size_t len);

typedef struct px_admin_server_cfg {
    const char *listen;             /* "tcp://127.0.0.1:7200" (port 0 = any), ipc:// too */
    px_system *sys;                 /* its node name and log; required */
    const px_identity *identity;    /* the node's key; required, borrowed */
    const uint8_t *cluster_key;     /* PX_SECRET_BYTES; required, borrowed */
    const uint8_t (*allowed)[PX_PUBKEY_BYTES]; /* NULL/0: any key that proves the secret;
                                                  copied */
    size_t n_allowed;
    px_admin_handler handler;       /* required */
    void *arg;
    /* 0 = the default: */
    uint32_t max_clients;           /* 1..1024; default 16 */
    uint32_t max_msg;               /* largest message either way, 1 KiB..1 GiB; default 4 MiB */
    uint32_t idle_ms;               /* default 300000 */
    uint32_t handshake_ms;          /* from accept to the client's Auth; default 5000 */
} px_admin_server_cfg;

typedef struct px_admin_stats {
    uint64_t accepted;   /* connections that completed the handshake */
    uint64_t refused;    /* connections refused or failed before the handshake's end (bad
                            secret, key, lane, version, garbage, too many), one each */
    uint64_t bad_frames; /* frames that did not open or were too large (connection dropped) */
    uint64_t requests;   /* messages handed to the handler */
    uint64_t clients;    /* connections open now */
} px_admin_stats;

/* Starts listening (an acceptor thread). On success *out is the server;
 * on error *out is NULL, err (may be NULL) gets the reason and nothing
 * needs freeing. PX_EINVAL (bad cfg or listen address), PX_EIO (cannot
 * listen), PX_ENOMEM, PX_ESYS. Logs through cfg->sys, which must outlive
 * the server. Not from actor context. */
px_err px_admin_server_start(const px_admin_server_cfg *cfg, px_admin_server **out, char *err,
                             size_t errlen);

/* The address actually bound ("tcp://127.0.0.1:40123": a tcp port 0
 * resolved; ipc as given). Borrowed: lives as long as s. Thread-safe. */
const char *px_admin_server_url(const px_admin_server *s);

/* A snapshot of the counters (zeros for a NULL s). Thread-safe. */
void px_admin_server_stats(px_admin_server *s, px_admin_stats *out);

/* Closes the listener and every connection, waits for their threads and
 * frees s. A handler still running sees px_admin_send fail with PX_ECLOSED
 * and px_admin_conn_closing true, and must then return: stop joins its
 * thread. NULL-safe. Not from a handler; before px_system_free. */
void px_admin_server_stop(px_admin_server *s);

/* Sends one message to the client (sealed, blocking up to 5 s; data
 * borrowed). PX_ECLOSED when the client is gone, did not take it within
 * 5 s (the connection is then closed) or the server stops; PX_EMSGSIZE
 * above max_msg or the client's limit (the connection stays); PX_ENOMEM.
 * Only from the handler of that connection, on its thread. */
px_err px_admin_send(px_admin_conn *conn, const uint8_t *data, size_t len);

/* True once the server is stopping, a send failed, or the client has
 * closed its end (a receive is kept in flight while the handler runs, so
 * this is seen within a round trip). A streaming handler polls it between
 * sends. Only from the handler of that connection. */
bool px_admin_conn_closing(px_admin_conn *conn);

/* ---- client ---- */

typedef struct px_admin_client px_admin_client;

/* Dials url and completes the handshake as `name` (1..63 chars of
 * [A-Za-z0-9._-]) with identity id and the cluster key (both borrowed for
 * the call), within timeout_ms in all. On success *out is the client
 * (caller owns it: px_admin_client_close) and *node (may be NULL; room for
 * 64) gets the node's name; on error *out is NULL and err (may be NULL)
 * gets the reason. PX_EUNREACHABLE (connection refused, no such socket),
 * PX_ETIMEDOUT, PX_EAUTH (the node refused us — bad hello, unknown key,
 * too many clients: the node's reason in err — or its Auth does not open
 * or does not check: not our cluster secret), PX_EVERSION (no common
 * protocol version), PX_ECLOSED (the node hung up without a reason),
 * PX_EPROTO (not a plexus node), PX_EINVAL, PX_ENOMEM, PX_ESYS.
 * A client is used by one thread at a time. */
px_err px_admin_dial(const char *url, const char *name, const px_identity *id,
                     const uint8_t *cluster_key, uint32_t timeout_ms, px_admin_client **out,
                     char *node, char *err, size_t errlen);

/* Sends one message (data borrowed). PX_EMSGSIZE above
 * PX_ADMIN_CLIENT_MAX_MSG or the node's max_msg (the client stays usable);
 * PX_ETIMEDOUT, PX_ECLOSED (after either, the client is closed: later
 * calls give PX_ECLOSED); PX_ENOMEM. */
px_err px_admin_client_send(px_admin_client *c, const uint8_t *data, size_t len,
                            uint32_t timeout_ms);

/* Receives the next message into *data (caller owns it: free it), *len.
 * PX_ETIMEDOUT (no whole message within timeout_ms; the connection stays
 * usable and nothing is lost), PX_ECLOSED (the node closed it), PX_EAUTH
 * (a frame did not open), PX_EPROTO (a frame length out of bounds); after
 * these three the client is closed. PX_ENOMEM. */
px_err px_admin_client_recv(px_admin_client *c, uint32_t timeout_ms, uint8_t **data,
                            size_t *len);

/* Closes the connection and frees c. NULL-safe. */
void px_admin_client_close(px_admin_client *c);

#ifdef __cplusplus
}
#endif
#endif
