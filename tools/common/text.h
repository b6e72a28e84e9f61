/*
 * text.h — small things plexusd and plexctl both need: a growable printf
 * buffer (config dumps, the metrics page) and the two clocks.
 */
#ifndef PXU_TEXT_H
#define PXU_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A growable string, zero-initialised ({0}) before use. s is NULL until
 * the first append, then NUL-terminated with len bytes; after a failed
 * allocation oom is set and every later append is a no-op. Owned by its
 * user: free(s) (or take it with pxu_text_take). Not thread-safe. */
typedef struct pxu_text {
    char *s;
    size_t len, cap;
    bool oom;
} pxu_text;

void pxu_text_add(pxu_text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The text (malloc'd, "" when nothing was added; the caller frees it), or
 * NULL after an allocation failed (the buffer is freed then). */
char *pxu_text_take(pxu_text *t);

/* Milliseconds: wall clock (CLOCK_REALTIME, since the epoch) and
 * monotonic (CLOCK_MONOTONIC, for intervals); microseconds, monotonic.
 * Any thread. */
int64_t pxu_wall_ms(void);
int64_t pxu_mono_ms(void);
int64_t pxu_mono_us(void);

/* A wall-clock time in ms since the epoch as UTC RFC 3339 with
 * milliseconds ("2026-11-21T13:01:42.167Z") into out (cut to len; 25
 * bytes hold it all). Any thread. */
void pxu_iso_ms(int64_t wall_ms, char *out, size_t len);

#endif
