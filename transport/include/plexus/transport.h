/*
 * plexus/transport.h — node identity, the cluster secret and the wire
 * protocol version. (Links between nodes are being built on top of these;
 * see proto/README.md for the wire format.)
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
#define PX_WIRE_VERSION 1
#define PX_WIRE_MIN_VERSION 1

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

/* Public keys as text: standard base64 with padding (44 characters). */
void px_pubkey_format(const uint8_t pk[PX_PUBKEY_BYTES], char out[PX_PUBKEY_B64_LEN]);
px_err px_pubkey_parse(const char *b64, uint8_t pk[PX_PUBKEY_BYTES]);

#ifdef __cplusplus
}
#endif
#endif
