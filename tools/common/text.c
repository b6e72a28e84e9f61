/*
 * text.c — the growable printf buffer and the clocks of text.h. The buffer
 * formats straight into its free space and, when that is too small, grows
 * (doubling) and formats again: one vsnprintf per append in the common case.
 */
#include "text.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void pxu_text_add(pxu_text *t, const char *fmt, ...) {
    if (t->oom) {
        return;
    }
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int r = vsnprintf(t->s ? t->s + t->len : NULL, t->s ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);
        if (r < 0) {
            t->oom = true;
            return;
        }
        if (t->s && t->len + (size_t)r < t->cap) {
            t->len += (size_t)r;
            return;
        }
        size_t cap = t->cap ? t->cap : 256;
        while (cap <= t->len + (size_t)r) {
            cap *= 2;
        }
        char *s = realloc(t->s, cap);
        if (s == NULL) {
            t->oom = true;
            return;
        }
        t->s = s;
        t->cap = cap;
    }
}

char *pxu_text_take(pxu_text *t) {
    char *s = t->s;
    bool oom = t->oom;
    memset(t, 0, sizeof *t);
    if (oom) {
        free(s);
        return NULL;
    }
    return s != NULL ? s : strdup("");
}

static int64_t clock_ms(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t pxu_wall_ms(void) { return clock_ms(CLOCK_REALTIME); }
int64_t pxu_mono_ms(void) { return clock_ms(CLOCK_MONOTONIC); }

int64_t pxu_mono_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void pxu_iso_ms(int64_t wall_ms, char *out, size_t len) {
    time_t s = (time_t)(wall_ms / 1000);
    struct tm tm;
    char b[32] = "";
    if (gmtime_r(&s, &tm) != NULL) {
        strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%S", &tm);
    }
    snprintf(out, len, "%s.%03dZ", b, (int)(wall_ms % 1000));
}
