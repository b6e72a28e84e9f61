/*
 * ops.h — what plexusd does for admin requests (proto/admin.proto), the
 * events a `watch` streams, and the drain both SIGTERM and `plexctl drain`
 * run.
 */
#ifndef PXD_OPS_H
#define PXD_OPS_H

#include "daemon.h"

/* The admin server's handler (px_admin_handler); arg is the pxd_node.
 * Runs on the connection's thread (one per client, several at once) and
 * blocks for as long as the op takes (a drain, a watch, an ask): that
 * holds up only its own connection. Borrows its arguments. Answers with
 * AdminReply frames through px_admin_send (progress with more set, then
 * one final reply); errors go into the reply's code and error, and each
 * final reply is counted in n->admin_ok or n->admin_err. */
void pxd_admin_handle(void *arg, px_admin_conn *conn, const char *peer, const uint8_t *peer_pk,
                      const uint8_t *data, size_t len);

/* Starts recording events for watchers: membership changes (an actor
 * subscribed to the cluster) and actor failures (px_system_on_failure).
 * PX_OK standalone too (failures only). */
px_err pxd_events_start(pxd_node *n);

/* Unhooks the failure callback and frees the event ring (n->ev becomes
 * NULL); does nothing when events were not started. It does not wait for
 * their users: main thread, after the admin server is stopped (no watch
 * reads the ring) and the system shut down (which also stops the
 * subscriber actor). Cannot fail. */
void pxd_events_stop(pxd_node *n);

/* Drains the node (once; a second call waits for the first): readyz goes
 * 503, the node leaves the cluster (others see LEFT at once and re-place
 * children they supervise here), mailboxes are worked off and the system
 * shut down in drain mode, queued link traffic is flushed, within
 * timeout_ms overall. progress (may be NULL) gets one JSON object per
 * step: {"step": "...", ...}. Ends with phase STOPPED. Returns PX_OK, or
 * PX_ETIMEDOUT when the bound cut a step short (what was left is in the
 * last progress line and the log); a call after the drain returns PX_OK
 * with one progress line, {"step": "already drained"}. Blocks: from the
 * main thread (SIGTERM) or an admin connection's thread (`plexctl
 * drain`), not from actor context (it shuts the system down). progress
 * runs on the calling thread with n->drain_mtx held (so it must not
 * drain) and borrows json for the call. */
px_err pxd_drain(pxd_node *n, uint32_t timeout_ms,
                 void (*progress)(void *arg, const char *json), void *arg);

/* A message of the registered protobuf type `type` from JSON text (NULL
 * or "" = {}). Borrows its inputs; caller owns result (*out, on PX_OK
 * only: on error *out is left as it was and why says what went wrong).
 * PX_ETYPE (unknown type), PX_EINVAL (bad JSON, with the field path in
 * why), PX_ENOMEM. Thread-safe. */
px_err pxd_msg_from_json(px_system *sys, const char *type, const char *json, px_msg **out,
                         char *why, size_t whylen);

#endif
