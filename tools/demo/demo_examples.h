/* demo_examples.h — the second part of plexus-demo: the shipped example
 * supervision trees (px_examples), each run briefly on its own system. */
#ifndef PX_DEMO_EXAMPLES_H
#define PX_DEMO_EXAMPLES_H

#include <plexus/plexus.h>

/* Runs ex.pool, ex.pipeline, ex.trio and ex.hier on a fresh system logging
 * at `level`, prints one line per example and a CHECK FAILED line for every
 * expectation that does not hold. Returns 1 if all held, else 0. */
int demo_run_examples(px_log_level level);

#endif
