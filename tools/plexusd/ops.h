/*
 * ops.h — what plexusd does for admin requests (proto/admin.proto), the
 * events a `watch` streams, and the drain both SIGTERM and `plexctl drain`
 * run.
 */
#ifndef PXD_OPS_H
#define PXD_OPS_H

#include "daemon.h"

/* The admin server's handler (px_admin_handler); arg is the pxd_node. */
void pxd_admin_handle(void *arg, px_admin_conn *conn, const char *peer, const uint8_t *peer_pk,
                      const uint8_t *data, size_t len);

/* Starts recording events for watchers: membership changes (an actor
 * subscribed to the cluster) and actor failures (px_system_on_failure).
 * PX_OK standalone too (failures only). */
px_err pxd_events_start(pxd_node *n);
void pxd_events_stop(pxd_node *n);

/* Drains the node (once; a second call waits for the first): readyz goes
 * 503, the node leaves the cluster (others see LEFT at once and re-place
 * children they supervise here), mailboxes are worked off and the system
 * shut down in drain mode, queued link traffic is flushed, within
 * timeout_ms overall. progress (may be NULL) gets one JSON object per
 * step: {"step": "...", ...}. Ends with phase STOPPED. Returns PX_OK, or
 * PX_ETIMEDOUT when the bound cut a step short (what was left is in the
 * last progress line and the log). */
px_err pxd_drain(pxd_node *n, uint32_t timeout_ms,
                 void (*progress)(void *arg, const char *json), void *arg);

/* A message of the registered protobuf type `type` from JSON text (NULL
 * or "" = {}). PX_ETYPE (unknown type), PX_EINVAL (bad JSON, with the
 * field path in why), PX_ENOMEM. */
px_err pxd_msg_from_json(px_system *sys, const char *type, const char *json, px_msg **out,
                         char *why, size_t whylen);

/* Parses a target: a ref as px_ref_format prints it, a local name, or a
 * global name (tried in that order). PX_ENOENT when nothing matches. */
px_err pxd_resolve(pxd_node *n, const char *target, px_ref *out);

#endif
