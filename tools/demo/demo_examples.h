/* demo_examples.h — the second part of plexus-demo: the shipped example
 * supervision trees (px_examples), run briefly on a system of their own;
 * and the CHECK line both parts print. */
#ifndef PX_DEMO_EXAMPLES_H
#define PX_DEMO_EXAMPLES_H

#include <stdio.h>

#include <plexus/plexus.h>

/* Both parts' expectations: unless cond holds, prints "  CHECK FAILED: "
 * and the printf-style message (a literal format first) on a line of its
 * own, and clears the int lvalue `ok`. */
#define DEMO_CHECK(ok, cond, ...)                                              \
    do {                                                                       \
        if (!(cond)) {                                                         \
            printf("  CHECK FAILED: " __VA_ARGS__);                            \
            printf("\n");                                                      \
            (ok) = 0;                                                          \
        }                                                                      \
    } while (0)

/* Runs ex.pool, ex.pipeline, ex.trio and ex.hier on a fresh system logging
 * at `level`, prints one line per example and a CHECK FAILED line for every
 * expectation that does not hold. Returns 1 if all held, else 0 (also when
 * the system cannot be made). Main thread only, not from actor context;
 * not reentrant (one static result flag); owns and frees its system. */
int demo_run_examples(px_log_level level);

#endif
