/*
 * bench_util.h — shared scaffolding of the core benchmarks.
 *
 * Each benchmark program prints one line per figure on stdout, exactly
 * "name value unit", and nothing else; diagnostics go to stderr. A failed
 * check exits non-zero through bench_die. Completion is signalled from actor
 * context through a bench_done (mutex + condition variable), never polled.
 */
#ifndef PLEXUS_BENCH_UTIL_H
#define PLEXUS_BENCH_UTIL_H

#include <pthread.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#include <plexus/plexus.h>

/* A one-shot completion flag. Thread-safe. */
typedef struct bench_done {
    pthread_mutex_t mtx;
    pthread_cond_t cv;
    int done;     /* guarded by mtx */
    int failed;   /* guarded by mtx */
    uint64_t t_ns; /* time of bench_done_signal, guarded by mtx */
} bench_done;

void bench_done_init(bench_done *d);
void bench_done_fini(bench_done *d);
/* Records the current time and wakes the waiter. Callable from any thread. */
void bench_done_signal(bench_done *d);
/* Like bench_done_signal but marks the run as failed. */
void bench_done_fail(bench_done *d);
/* Waits up to timeout_s; exits the process (bench_die) on timeout or
 * failure. Returns the time of the signal (bench_now_ns clock). */
uint64_t bench_done_wait(bench_done *d, unsigned timeout_s, const char *what);

/* Actor context: sends an 8-byte `v` under `tag` to `to`. On error frees the
 * message, says so on stderr, fails `d` and returns the error. */
px_err bench_send_u64(px_ctx *ctx, px_ref to, uint32_t tag, uint64_t v, bench_done *d);

/* From outside the actors (main): sends a u64 0 under `tag` to `to`, dying
 * on error (`what` names the send). The message is built first; returns the
 * time (bench_now_ns) taken just before the send, for the clock start. */
uint64_t bench_kick(px_system *sys, px_ref to, uint32_t tag, const char *what);

/* Monotonic clock in ns. */
uint64_t bench_now_ns(void);
/* Process CPU time in ns (all threads). */
uint64_t bench_cpu_ns(void);
/* Resident set size in bytes, from /proc/self/statm. */
uint64_t bench_rss_bytes(void);

/* Prints "fmt" to stderr with a "bench: " prefix and exits with status 1. */
void bench_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* Dies unless err is PX_OK. */
void bench_check(px_err err, const char *what);

/* A system with the benchmark configuration (workers = online CPUs or
 * $PX_BENCH_WORKERS, log level WARN); dies on error. max_actors may be 0
 * for the default. */
px_system *bench_system(uint32_t max_actors);
/* The same, logging through `sink` with `arg` (NULL sink: px_log_stderr). */
px_system *bench_system_sink(uint32_t max_actors, px_log_sink sink, void *arg);
/* The system's stats; dies on error. */
px_system_stats bench_stats(px_system *sys);
/* Shuts the system down and frees it; dies if shutdown fails. */
void bench_system_free(px_system *sys);

/* Prints one figure line "name value unit" on stdout and flushes. */
void bench_figure_u64(const char *name, uint64_t value, const char *unit);
void bench_figure_f(const char *name, double value, int decimals, const char *unit);

/* A system like bench_system but named `node_name` (two nodes in one
 * benchmark need distinct names, hence node ids) and logging at `level`;
 * $PX_BENCH_SPIN_US overrides cfg.spin_us (profiling aid). Dies on error. */
px_system *bench_system_named(const char *node_name, uint32_t max_actors, px_log_level level);

/* Sorts v[0..n) ascending, in place. */
void bench_sort_u64(uint64_t *v, size_t n);
/* The q-quantile (0 < q <= 1, nearest rank) of sorted[0..n); 0 if n is 0. */
uint64_t bench_pct_u64(const uint64_t *sorted, size_t n, double q);

/* The program `name` on PATH (e.g. "etcd") into path[0..len); false if
 * there is none. */
bool bench_find_program(const char *name, char *path, size_t len);

/* Sleeps ms milliseconds (pacing between polls, never synchronization). */
void bench_nap_ms(int ms);

/* Parses an optional count override from argv[1] (for quick runs). */
uint64_t bench_arg_u64(int argc, char **argv, int idx, uint64_t dflt);

#endif
