/*
 * race.h — what the plain concurrency drivers (race_core, race_link) share:
 * programs without Criterion, so they run under ThreadSanitizer (Criterion
 * cannot: Snaipe/Criterion#274). A scenario function keeps `int ok = 1`,
 * CHECKs conditions (a failed one prints where and why and clears ok) and
 * AWAITs conditions with a bound; each driver counts `failures` itself.
 */
#ifndef PX_TESTS_RACE_H
#define PX_TESTS_RACE_H

#include <stdint.h>
#include <stdio.h>
#include <time.h>

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "  FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);  \
            fprintf(stderr, __VA_ARGS__);                                      \
            fprintf(stderr, "\n");                                             \
            ok = 0;                                                            \
        }                                                                      \
    } while (0)

static inline int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void nap(void) {
    struct timespec ts = {0, 500 * 1000};
    nanosleep(&ts, NULL);
}

/* Polls cond up to ms; a pause between polls is not synchronization. */
#define AWAIT(cond, ms)                                                        \
    ({                                                                         \
        int64_t dl_ = now_ms() + (ms);                                         \
        while (!(cond) && now_ms() < dl_) {                                    \
            nap();                                                             \
        }                                                                      \
        (cond);                                                                \
    })

#endif
