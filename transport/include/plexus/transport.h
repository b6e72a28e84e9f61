/*
 * plexus/transport.h — links between nodes: node identity, the cluster
 * secret, the wire protocol version, and the transport that carries actor
 * messages to other nodes (proto/README.md has the wire format).
 *
 * A transport listens on one address and keeps a link to every peer it
 * knows: the static ones of its configuration and those added later
 * (px_transport_peer_add, as membership finds them). It installs itself as the system's router: px_send to a ref on a
 * peer node goes out on that peer's link, and messages from peers are
 * delivered to local actors. Delivery is at-most-once and, between one
 * sender actor and one target actor, in send order. A send to a peer that
 * cannot be reached fails with PX_EUNREACHABLE; a link queue that is full
 * (bounded in messages and bytes) fails the send with PX_EFULL; a payload
 * larger than max_msg (this node's or the peer's) fails with PX_EMSGSIZE —
 * the link stays up.
 *
 * Lanes: a link to a peer is three connections. CONTROL carries heartbeats
 * (and system messages), NORMAL the batched envelopes, BULK the chunks of
 * payloads above bulk_threshold (their envelope goes on NORMAL, and the
 * receiver holds back later messages from the same sender to the same
 * target until the large one is complete). A large payload in flight
 * therefore never delays a heartbeat. The peer is UP when all three are;
 * when one drops, all three are closed and redialled.
 *
 * Keys:
 *  - A node's identity is an ed25519 key pair. Its file holds the 32-byte
 *    seed, base64, under a header line; it is created on first start with
 *    mode 0600 and refused if group or others may read it.
 *  - The cluster secret is any file of 16 bytes or more (trailing
 *    whitespace ignored); nodes that hold the same file may link. It never
 *    travels: the handshake proves it by keying the session with it.
 *
 * All functions are thread-safe and never abort on bad input: they return a
 * px_err and, where given an `err` buffer, a one-line reason for the log.
 */
#ifndef PLEXUS_TRANSPORT_H
#define PLEXUS_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <plexus/error.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The wire protocol this build speaks, and the oldest it still accepts. */
#define PX_WIRE_VERSION 2
#define PX_WIRE_MIN_VERSION 2

#define PX_PUBKEY_BYTES 32
#define PX_SECKEY_BYTES 64
#define PX_SECRET_BYTES 32
/* base64 (with padding) of a public key, plus the NUL. */
#define PX_PUBKEY_B64_LEN 45

typedef struct px_identity {
    uint8_t pk[PX_PUBKEY_BYTES]; /* ed25519 public key */
    uint8_t sk[PX_SECKEY_BYTES]; /* ed25519 secret key (seed || pk) */
} px_identity;

/* Loads the identity at path; if the file does not exist and create is
 * true, makes a new key pair and writes it there (mode 0600, written to a
 * temporary file and renamed). PX_ENOENT (missing, create false), PX_EIO
 * (cannot read or write), PX_EAUTH (file readable by group or others),
 * PX_EPROTO (not an identity file), PX_ESYS (libsodium failed to start). */
px_err px_identity_load(const char *path, bool create, px_identity *out, char *err,
                        size_t errlen);

/* Derives the 32-byte cluster key from the secret file at path (BLAKE2b of
 * its contents without trailing whitespace). PX_ENOENT, PX_EIO, PX_EINVAL (shorter
 * than 16 bytes, or larger than 64 KiB). */
px_err px_secret_load(const char *path, uint8_t key[PX_SECRET_BYTES], char *err,
                      size_t errlen);

/* The same from bytes in memory (tests, embedding). */
px_err px_secret_from_bytes(const void *data, size_t len, uint8_t key[PX_SECRET_BYTES]);

/* ---- the transport ---- */

#include <plexus/system.h>

/* A node this one links to: its name, the address it listens on and its
 * identity public key (the handshake checks both). */
typedef struct px_peer {
    const char *name;    /* node name, as in its px_config.node_name */
    const char *address; /* "tcp://127.0.0.1:7001", "ipc:///run/plexus/a.sock" */
    uint8_t pk[PX_PUBKEY_BYTES];
} px_peer;

typedef enum px_link_state {
    PX_LINK_CONNECTING = 0, /* never connected yet, or reconnecting after a close */
    PX_LINK_UP = 1,         /* handshake done; messages flow */
    PX_LINK_UNREACHABLE = 2, /* a dial or the handshake failed, or the peer went silent */
    PX_LINK_GONE = 3         /* removed (px_transport_peer_remove): not dialled, its
                                connections refused, sends fail with PX_EUNREACHABLE */
} px_link_state;

typedef struct px_transport_cfg {
    const char *listen;          /* required: "tcp://host:port" (port 0 = any), "ipc:///path" */
    const px_identity *identity; /* required; borrowed for the transport's life */
    uint8_t cluster_key[PX_SECRET_BYTES]; /* px_secret_load */
    const px_peer *peers;        /* copied */
    size_t npeers;
    uint32_t max_frame;          /* largest frame, 4 KiB..64 MiB; default 1 MiB */
    uint64_t max_msg;            /* largest payload, chunked on BULK, 1 KiB..1 GiB;
                                    default 64 MiB */
    uint32_t bulk_threshold;     /* payloads above this go on BULK; at most
                                    max_frame - 1 KiB; default 64 KiB */
    uint32_t queue_msgs;         /* per-link queue bound; default 65536 */
    uint64_t queue_bytes;        /* per-link bound, >= max_msg; default 128 MiB: on the
                                    bytes queued for NORMAL (a small send), and on those
                                    plus the bulk bytes not sent yet (a bulk send), so a
                                    bulk backlog never refuses a small message */
    uint32_t bulk_delay_ms;      /* BULK yields to the other lanes: the bytes it has in
                                    flight (sent, not yet credited by the peer) stay
                                    within a window that halves whenever the CONTROL
                                    round trip rises this far above its quiet level
                                    (queues on the path), and grows while it does not;
                                    default 25, at most 10000; 0 = no window (BULK
                                    fills the socket: a slow link's queue then delays
                                    and drops the other lanes' packets) */
    uint32_t heartbeat_ms;       /* ping period on an idle link; default 250 */
    uint32_t unreachable_ms;     /* silence that makes a peer unreachable; default 2000 */
    uint32_t reconnect_max_ms;   /* cap of the reconnect backoff; default 5000 */
    uint32_t max_peers;          /* peers it can know, the static ones and those added
                                    later (px_transport_peer_add); default 256 */
    /* Optional: told of every change of a peer link's state, or of the
     * peer's incarnation, in order per peer, from the transport's timer
     * thread with no transport lock held (within ~50 ms of the change).
     * Must not block or call px_transport_stop; may call the other
     * px_transport_* functions. */
    void (*on_link)(void *arg, const char *name, px_link_state state, uint32_t node_inc);
    void *link_arg;
    bool plaintext;              /* frames unencrypted after the handshake: benchmarks only */
    /* Latency mode, off by default: the scheduler's idle workers read the
     * inbound NORMAL connections themselves while they spin (core's
     * spin_us, which must be > 0 for it to matter), and run what they read
     * at once — no I/O thread and no worker is woken for a message that
     * arrives within a spin. Costs CPU: every spinning worker makes read
     * system calls instead of pausing, and after each actor turn one worker
     * reads again if nobody has for 20 us. Reads fall back to nng's I/O
     * threads when the workers park. Up to 16 inbound connections are read
     * this way (the rest as usual). Pair it with an adaptive spin
     * (px_config.spin_max_us, e.g. 1000 as plexusd does): without it the
     * spin is at most spin_us (50 us) and shrinks while parks outlast it,
     * so it parks during a slow round trip, the next message then takes
     * nng's threads (~140 us here), and the spin expires again; with it
     * the spin stretches until messages are caught again. */
    bool poll_rx;
} px_transport_cfg;

/* Defaults for everything but listen, identity, cluster_key and peers. */
void px_transport_cfg_init(px_transport_cfg *cfg);

typedef struct px_transport px_transport;

/* Starts listening, dials every peer and installs the router on sys.
 * PX_EINVAL (bad config: the log says which field), PX_EIO (cannot listen),
 * PX_ENOMEM. Not from actor context. */
px_err px_transport_start(px_system *sys, const px_transport_cfg *cfg, px_transport **out);

/* The address the transport listens on, with the real port when the
 * configured one was 0. Borrowed; lives as long as the transport. */
const char *px_transport_address(const px_transport *t);

/* Removes the router, closes every link and the listener, and frees t.
 * Messages still queued for peers are counted as dead letters. NULL-safe.
 * Call before px_system_free; not from actor context. */
void px_transport_stop(px_transport *t);


/* Replaces cfg.on_link (NULL: none). Every known peer's current state is
 * reported to the new function on the next tick. Once this returns, the
 * old function is not running and will not be called. Not from on_link
 * itself. Thread-safe. */
void px_transport_set_on_link(px_transport *t,
                              void (*fn)(void *arg, const char *name, px_link_state state,
                                         uint32_t node_inc),
                              void *arg);

/* ---- system envelopes for the layer above (cluster: the mesh) ---- */

/* A system envelope (proto SysOp other than SYS_UNDELIVERED, which the
 * transport handles) from peer `peer`: to, from, corr, sysop and the packed
 * payload (borrowed for the call). Called on a transport receive thread
 * with transport locks held: copy what you need and return; never call
 * back into the transport or send from here. */
typedef void (*px_sys_fn)(void *arg, const char *peer, px_ref to, px_ref from, uint64_t corr,
                          uint32_t sysop, const uint8_t *payload, size_t len);

/* Installs the handler of incoming system envelopes (NULL: none; they are
 * then counted undeliverable). Install one only while none is installed
 * (a call could otherwise pair the old fn with the new arg). Removing it
 * (fn NULL) returns once no call to the old handler is running and none
 * will start, so what arg points at may be freed then; never remove it
 * from inside the handler or another transport callback. Not concurrent
 * with itself. */
void px_transport_set_on_sys(px_transport *t, px_sys_fn fn, void *arg);

/* Queues a system envelope for the node of `to` (a ref on a peer):
 * sysop, payload (packed with pb's own descriptor; NULL for none), from,
 * corr. ordered = 0 sends it on the CONTROL lane (ahead of user traffic),
 * 1 on the NORMAL lane behind what was sent before it to that node.
 * PX_EUNREACHABLE (unknown, gone or unreachable peer, or an older
 * incarnation of it), PX_EFULL (its queue is full), PX_ENOMEM. Any thread;
 * never blocks. */
px_err px_transport_send_sys(px_transport *t, px_ref to, px_ref from, uint64_t corr,
                             uint32_t sysop, const ProtobufCMessage *pb, int ordered);

/* This node's identity public key (32 bytes, borrowed: lives as long as
 * t), NULL for a NULL t. Thread-safe. */
const uint8_t *px_transport_pk(const px_transport *t);

/* Closes every link, in and out; they are redialled at once. For a node
 * that became a new incarnation (px_system_reincarnate): the handshakes
 * then tell its peers. `why` goes to the log. Thread-safe; not from
 * on_link. */
void px_transport_reconnect(px_transport *t, const char *why);

/* "connecting", "up", "unreachable", "gone" (static strings; "unknown"
 * outside the enum). Thread-safe; cannot fail. */
const char *px_link_state_name(px_link_state s);

/* Adds a peer to link to (membership found it), or updates a known one:
 *  - a new name: a new slot, dialled at once. PX_EFULL when max_peers
 *    slots are in use, PX_EEXIST when another peer has its key or node id.
 *  - a known name with the same key: its address is updated if it
 *    changed (its links are redialled there) and a removed peer is
 *    dialled again. A restarted peer (new incarnation) needs nothing more:
 *    the handshake tells, and refs to its old incarnation become dead.
 *  - a known name with another key: the old peer is dropped for good and
 *    the new one takes its name.
 * PX_EINVAL for a missing name or address, this node's own name, or an
 * address nng cannot dial. Thread-safe; not from actor context. */
px_err px_transport_peer_add(px_transport *t, const px_peer *p);

/* The peer left the cluster (or is down): its links are closed and not
 * redialled, connections from it are refused, messages queued for it become
 * dead letters and sends to it fail with PX_EUNREACHABLE; its state is
 * PX_LINK_GONE until px_transport_peer_add brings it back. PX_ENOENT if no
 * such peer. Thread-safe; not from actor context. */
px_err px_transport_peer_remove(px_transport *t, const char *name);

/* The state of the link to the peer named `name`, and the peer's
 * incarnation seen in its last handshake (0 if none). PX_ENOENT if no such
 * peer is known. */
px_err px_transport_peer_state(px_transport *t, const char *name, px_link_state *state,
                               uint32_t *node_inc);

typedef struct px_peer_info {
    px_link_state state;
    uint32_t node_inc;     /* as px_transport_peer_state */
    uint32_t rtt_us;       /* last heartbeat round trip on the CONTROL lane (0: none yet) */
    uint32_t rtt_max_us;   /* largest since the link came up, or since a call
                              with reset_max */
    uint32_t rtt_p99_us;   /* p99 of the last rtt_samples round trips (at
                              most 128, counted like rtt_max_us) */
    uint32_t rtt_samples;
    size_t queued_msgs;    /* envelopes waiting to go out */
    uint64_t queued_bytes; /* payload bytes waiting to go out (bulk included) */
    uint32_t ping_age_ms;  /* since its last heartbeat reached us (UINT32_MAX: none) */
    uint32_t etcd_silent_ms; /* how long it has gone without an acknowledged etcd
                                request, as its last heartbeat said plus that
                                heartbeat's age; 0 = etcd answers it (or it says
                                nothing: no etcd, an older peer) */
    uint64_t bulk_window;   /* BULK's window in bytes (cfg.bulk_delay_ms); 0 = not
                               paced (turned off, not up, or a peer that sends no
                               Credit) */
    uint64_t bulk_inflight; /* chunk bytes sent on BULK and not credited yet */
    uint32_t rtt_base_us;   /* the quiet CONTROL round trip BULK's window is judged
                               against (0: none yet) */
} px_peer_info;

/* The cluster layer says an etcd request of this node's was just
 * acknowledged: from now on every heartbeat this node sends carries how
 * long ago the last one was (Heartbeat.etcd_silent_ms), so its peers can
 * tell whether etcd is down for everyone or only for some. Never called =
 * heartbeats say nothing. Thread-safe, cheap (one atomic store). */
void px_transport_etcd_ok(px_transport *t);

/* More about the link to `name`; with reset_max, rtt_max_us and the p99's
 * samples start over after this call. PX_ENOENT if no such peer is configured. */
px_err px_transport_peer_info(px_transport *t, const char *name, bool reset_max,
                              px_peer_info *out);

typedef struct px_transport_stats {
    uint64_t msgs_out, msgs_in;     /* envelopes sent / delivered */
    uint64_t frames_out, frames_in;
    uint64_t bytes_out, bytes_in;   /* on the wire, headers included */
    uint64_t handshakes;            /* completed */
    uint64_t refused;               /* handshakes refused (either side) */
    uint64_t bad_frames;            /* failed to open or decode: link dropped */
    uint64_t undeliverable;         /* arrived but could not be delivered */
    uint64_t pings, pongs;
    uint64_t bulk_out, bulk_in;     /* payloads sent / received in chunks on BULK */
    uint64_t held;                  /* envelopes held back behind a waiting one of their
                                       (sender, target) pair */
    uint64_t notices, notices_lost; /* "undelivered" notices sent to senders on peers /
                                       lost (queue full, peer down) */
    uint64_t bulk_cuts;             /* BULK windows halved: a CONTROL round trip rose
                                       bulk_delay_ms above its quiet level */
    uint64_t bulk_waits;            /* times BULK had data but waited for Credit */
    uint64_t reads_polled;          /* latency mode (cfg.poll_rx): reads that found bytes,
                                       done by a spinning or between-turns worker */
    uint64_t writes_inline;         /* latency mode: frames written whole by the thread
                                       that packed them, no completion hand-off */
    /* By lane, indexed 0 control, 1 normal, 2 bulk (proto/plexus.proto's
     * Lane): envelopes packed into frames / received in frames (on bulk:
     * chunked payloads sent / reassembled), bytes written / read. Received
     * counts what arrived, before delivery (msgs_in counts delivered). */
    uint64_t lane_msgs_out[3], lane_msgs_in[3];
    uint64_t lane_bytes_out[3], lane_bytes_in[3];
} px_transport_stats;

void px_transport_stats_get(px_transport *t, px_transport_stats *out);

/* Public keys as text: standard base64 with padding (44 characters). */
void px_pubkey_format(const uint8_t pk[PX_PUBKEY_BYTES], char out[PX_PUBKEY_B64_LEN]);
px_err px_pubkey_parse(const char *b64, uint8_t pk[PX_PUBKEY_BYTES]);

#ifdef __cplusplus
}
#endif
#endif
