/*
 * plexus/error.h — the one error enum of plexus.
 *
 * Every public function that can fail returns a px_err: PX_OK (0) on success,
 * a negative code otherwise. Codes and their strings come from one X-macro
 * table so they can never drift apart.
 */
#ifndef PLEXUS_ERROR_H
#define PLEXUS_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

/* X(name, value, text) */
#define PX_ERR_MAP(X)                                                          \
    X(PX_OK, 0, "success")                                                     \
    X(PX_EINVAL, -1, "invalid argument")                                      \
    X(PX_ENOMEM, -2, "out of memory")                                         \
    X(PX_ENOENT, -3, "no such entry")                                         \
    X(PX_EEXIST, -4, "already exists")                                        \
    X(PX_EFULL, -5, "mailbox full")                                           \
    X(PX_ETIMEDOUT, -6, "timed out")                                          \
    X(PX_ECLOSED, -7, "closed")                                               \
    X(PX_ELIMIT, -8, "limit exceeded")                                        \
    X(PX_EMSGSIZE, -9, "message too large")                                   \
    X(PX_EDEAD, -10, "actor is not alive")                                    \
    X(PX_EUNREACHABLE, -11, "node unreachable")                               \
    X(PX_ECONTEXT, -12, "not allowed from this thread context")               \
    X(PX_EINIT, -13, "actor init failed")                                     \
    X(PX_ETYPE, -14, "unknown or mismatched message type")                    \
    X(PX_ESYS, -15, "system call or dependency failed")                       \
    X(PX_EFAIL, -16, "actor failed")                                          \
    X(PX_EPROTO, -17, "malformed or unexpected data from a peer")             \
    X(PX_EAUTH, -18, "authentication failed")                                 \
    X(PX_EVERSION, -19, "incompatible protocol version")                      \
    X(PX_EIO, -20, "I/O error")                                               \
    X(PX_ECOMPACTED, -21, "revision compacted")                               \
    X(PX_EFENCED, -22, "node fenced: its membership lease was lost")          \
    X(PX_ENODEDOWN, -23, "node down: its membership lease expired")

typedef enum px_err {
#define PX_ERR_ENUM_(name, value, text) name = value,
    PX_ERR_MAP(PX_ERR_ENUM_)
#undef PX_ERR_ENUM_
} px_err;

/* px_strerror returns a static, immutable string for err ("unknown error"
 * for a value outside the table). Thread-safe. */
const char *px_strerror(px_err err);

/* px_errname returns the enumerator's name ("PX_EFULL"). Thread-safe. */
const char *px_errname(px_err err);

#ifdef __cplusplus
}
#endif
#endif
