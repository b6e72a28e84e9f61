/*
 * plexus/log.h — levels and a pluggable sink.
 *
 * Each system logs through its own sink (stderr by default). The hot paths
 * (send, dispatch) never format a line unless the level asks for it:
 * PX_LOG_TRACE adds one line per actor lifecycle event (spawn, stop,
 * dead letter).
 */
#ifndef PLEXUS_LOG_H
#define PLEXUS_LOG_H

#include <plexus/error.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum px_log_level {
    PX_LOG_TRACE = 0, /* actor lifecycle, dead letters: one line each */
    PX_LOG_DEBUG = 1,
    PX_LOG_INFO = 2,
    PX_LOG_WARN = 3,
    PX_LOG_ERROR = 4,
    PX_LOG_CRIT = 5,
    PX_LOG_OFF = 6,
} px_log_level;

/* A log sink receives one formatted line (no trailing newline). It may be
 * called from any thread, concurrently; it must not call back into plexus.
 * `node` is the system's node name. The line is borrowed for the call. */
typedef void (*px_log_sink)(void *arg, px_log_level level, const char *node,
                            const char *line);

/* The default sink: "2026-11-21T07:35:26.123Z WARN  node: line" on stderr. */
void px_log_stderr(void *arg, px_log_level level, const char *node,
                   const char *line);

/* Short upper-case name of a level ("WARN"). Static string. */
const char *px_log_level_name(px_log_level level);

/* Parses "trace", "debug", "info", "warn", "error", "crit", "off"
 * (case-insensitive). PX_EINVAL on anything else. */
px_err px_log_level_parse(const char *s, px_log_level *out);

#ifdef __cplusplus
}
#endif
#endif
