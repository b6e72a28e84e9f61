/*
 * plexus/admin.h — the admin channel: an authenticated, encrypted
 * request/reply connection between an operator's client (plexctl) and a
 * node (plexusd), with the same trust as node links.
 *
 * The server listens on its own address (admin.listen). A client dials it
 * and runs the node-link handshake (proto/README.md) on lane LANE_ADMIN:
 * both sides prove they hold the cluster secret (the session keys are
 * derived with it) and sign the transcript with their identity key. A
 * client without the secret, with a bad signature, or — when the server
 * has an allow-list — with a key not on it, is refused: counted, logged
 * once with its address, and disconnected. After the handshake every frame
 * is sealed (XChaCha20-Poly1305, counter nonces), so tampered, replayed or
 * truncated frames drop the connection. Never plaintext.
 *
 * Messages are opaque byte strings (plexctl and plexusd put
 * plexus.admin.AdminRequest / AdminReply in them, proto/admin.proto), one
 * per frame, up to max_msg bytes each way. The server runs each
 * connection on its own thread (at most max_clients at once; more are
 * refused with a Refuse SHUTTING_DOWN-style reason "too many admin
 * clients") and calls the handler once per message the client sends; the
 * handler answers with px_admin_send, any number of times (a long
 * operation streams progress), and may block: it only holds up its own
 * connection. A connection idle for idle_ms is closed.
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

typedef struct px_admin_server px_admin_server;
typedef struct px_admin_conn px_admin_conn; /* one client connection, server side */

/* Called on the connection's thread for each message from the client
 * (data borrowed for the call). `peer` is the client's name from its Hello
 * and `peer_pk` its identity key (32 bytes). */
typedef void (*px_admin_handler)(void *arg, px_admin_conn *conn, const char *peer,
                                 const uint8_t *peer_pk, const uint8_t *data, size_t len);

typedef struct px_admin_server_cfg {
    const char *listen;             /* "tcp://127.0.0.1:7200" (port 0 = any), ipc:// too */
    px_system *sys;                 /* its node name and log; required */
    const px_identity *identity;    /* the node's key; required, borrowed */
    const uint8_t *cluster_key;     /* PX_SECRET_BYTES; required, borrowed */
    const uint8_t (*allowed)[PX_PUBKEY_BYTES]; /* NULL/0: any key that proves the secret */
    size_t n_allowed;
    px_admin_handler handler;       /* required */
    void *arg;
    uint32_t max_clients;           /* default 16 */
    uint32_t max_msg;               /* default 4 MiB */
    uint32_t idle_ms;               /* default 300000 */
    uint32_t handshake_ms;          /* default 5000 */
} px_admin_server_cfg;

typedef struct px_admin_stats {
    uint64_t accepted;   /* connections that completed the handshake */
    uint64_t refused;    /* handshakes refused or failed (bad secret, key, version, garbage) */
    uint64_t bad_frames; /* frames that did not open or were too large (connection dropped) */
    uint64_t requests;   /* messages handed to the handler */
    uint64_t clients;    /* connections open now */
} px_admin_stats;

/* Starts listening. PX_EINVAL (bad cfg; reason in err), PX_EIO (cannot
 * listen), PX_ENOMEM. Not from actor context. */
px_err px_admin_server_start(const px_admin_server_cfg *cfg, px_admin_server **out, char *err,
                             size_t errlen);

/* The address actually bound (a tcp port 0 resolved). Borrowed. */
const char *px_admin_server_url(const px_admin_server *s);

void px_admin_server_stats(px_admin_server *s, px_admin_stats *out);

/* Closes the listener and every connection, waits for their threads (a
 * handler still running sees px_admin_send fail with PX_ECLOSED and
 * px_admin_conn_closing true). NULL-safe. Not from a handler. */
void px_admin_server_stop(px_admin_server *s);

/* Sends one message to the client (sealed, blocking up to 5 s). PX_ECLOSED
 * when the client is gone or the server stops, PX_EMSGSIZE above max_msg.
 * Only from the handler of that connection. */
px_err px_admin_send(px_admin_conn *conn, const uint8_t *data, size_t len);

/* True once the server is stopping or the client has closed its end (the
 * connection's reader noticed). A streaming handler polls it between
 * sends. */
bool px_admin_conn_closing(px_admin_conn *conn);

/* ---- client ---- */

typedef struct px_admin_client px_admin_client;

/* Dials url and completes the handshake as `name` (1..63 chars of
 * [A-Za-z0-9._-]) with identity id, within timeout_ms. On success *node
 * (may be NULL; room for 64) gets the node's name. PX_EUNREACHABLE (no
 * answer / connection refused), PX_ETIMEDOUT, PX_EAUTH (the node refused
 * us, or its key or signature does not check: reason in err),
 * PX_EVERSION, PX_EINVAL, PX_ENOMEM. */
px_err px_admin_dial(const char *url, const char *name, const px_identity *id,
                     const uint8_t *cluster_key, uint32_t timeout_ms, px_admin_client **out,
                     char *node, char *err, size_t errlen);

/* Sends one message. PX_ECLOSED, PX_EMSGSIZE (above 4 MiB), PX_ETIMEDOUT. */
px_err px_admin_client_send(px_admin_client *c, const uint8_t *data, size_t len,
                            uint32_t timeout_ms);

/* Receives the next message into *data (malloc'd; free it), *len.
 * PX_ETIMEDOUT (nothing within timeout_ms; the connection stays usable),
 * PX_ECLOSED (the node closed it), PX_EAUTH (a frame did not open). */
px_err px_admin_client_recv(px_admin_client *c, uint32_t timeout_ms, uint8_t **data,
                            size_t *len);

void px_admin_client_close(px_admin_client *c); /* NULL-safe */

#ifdef __cplusplus
}
#endif
#endif
