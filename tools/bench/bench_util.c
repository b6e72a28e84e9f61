/*
 * bench_util.c — timing, RSS, completion and output helpers shared by the
 * core benchmarks (see bench_util.h). Nothing here touches plexus internals:
 * only the public API.
 */
#include "bench_util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void bench_done_init(bench_done *d)
{
    memset(d, 0, sizeof(*d));
    pthread_mutex_init(&d->mtx, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&d->cv, &ca);
    pthread_condattr_destroy(&ca);
}

void bench_done_fini(bench_done *d)
{
    pthread_cond_destroy(&d->cv);
    pthread_mutex_destroy(&d->mtx);
}

static void done_set(bench_done *d, int failed)
{
    uint64_t t = bench_now_ns();
    pthread_mutex_lock(&d->mtx);
    if (!d->done) {
        d->t_ns = t;
    }
    d->done = 1;
    d->failed |= failed;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mtx);
}

void bench_done_signal(bench_done *d) { done_set(d, 0); }
void bench_done_fail(bench_done *d) { done_set(d, 1); }

uint64_t bench_done_wait(bench_done *d, unsigned timeout_s, const char *what)
{
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += (time_t)timeout_s;
    pthread_mutex_lock(&d->mtx);
    while (!d->done) {
        int rc = pthread_cond_timedwait(&d->cv, &d->mtx, &dl);
        if (rc == ETIMEDOUT && !d->done) {
            pthread_mutex_unlock(&d->mtx);
            bench_die("%s: did not complete within %u s", what, timeout_s);
        }
    }
    int failed = d->failed;
    uint64_t t = d->t_ns;
    pthread_mutex_unlock(&d->mtx);
    if (failed) {
        bench_die("%s: failed (see above)", what);
    }
    return t;
}

uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t bench_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t bench_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL) {
        bench_die("cannot open /proc/self/statm: %s", strerror(errno));
    }
    unsigned long size = 0, resident = 0;
    int n = fscanf(f, "%lu %lu", &size, &resident);
    fclose(f);
    if (n != 2) {
        bench_die("cannot parse /proc/self/statm");
    }
    return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

void bench_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fflush(stdout);
    exit(1);
}

void bench_check(px_err err, const char *what)
{
    if (err != PX_OK) {
        bench_die("%s: %s (%s)", what, px_strerror(err), px_errname(err));
    }
}

px_system *bench_system(uint32_t max_actors)
{
    return bench_system_sink(max_actors, NULL, NULL);
}

/* The one place a benchmark system is configured: the profiling aids
 * PX_BENCH_WORKERS, PX_BENCH_SPIN_US and PX_BENCH_SPIN_MAX_US apply to every
 * benchmark. */
static px_system *system_of(const char *node_name, uint32_t max_actors, px_log_level level,
                            px_log_sink sink, void *arg)
{
    px_config cfg;
    px_config_init(&cfg);
    cfg.node_name = node_name;
    cfg.log_level = level;
    if (sink != NULL) {
        cfg.log_sink = sink;
        cfg.log_arg = arg;
    }
    const char *wk = getenv("PX_BENCH_WORKERS"); /* profiling aid */
    if (wk != NULL) {
        cfg.workers = (uint32_t)strtoul(wk, NULL, 10);
    }
    const char *spin = getenv("PX_BENCH_SPIN_US"); /* profiling aid */
    if (spin != NULL) {
        cfg.spin_us = (uint32_t)strtoul(spin, NULL, 10);
    }
    const char *spin_max = getenv("PX_BENCH_SPIN_MAX_US"); /* profiling aid */
    if (spin_max != NULL) {
        cfg.spin_max_us = (uint32_t)strtoul(spin_max, NULL, 10);
    }
    if (max_actors != 0) {
        cfg.max_actors = max_actors;
    }
    char why[256] = "";
    if (px_config_check(&cfg, why, sizeof(why)) != PX_OK) {
        bench_die("config: %s", why);
    }
    px_system *sys = NULL;
    bench_check(px_system_alloc(&sys, &cfg), "px_system_alloc");
    return sys;
}

px_system *bench_system_sink(uint32_t max_actors, px_log_sink sink, void *arg)
{
    return system_of("bench", max_actors, PX_LOG_WARN, sink, arg);
}


px_system_stats bench_stats(px_system *sys)
{
    px_system_stats st;
    bench_check(px_system_stats_get(sys, &st), "stats");
    return st;
}

void bench_system_free(px_system *sys)
{
    px_err err = px_system_shutdown(sys);
    if (err != PX_OK) {
        bench_die("px_system_shutdown: %s", px_strerror(err));
    }
    px_system_free(sys);
}

void bench_figure_u64(const char *name, uint64_t value, const char *unit)
{
    printf("%s %" PRIu64 " %s\n", name, value, unit);
    fflush(stdout);
}

void bench_figure_f(const char *name, double value, int decimals, const char *unit)
{
    printf("%s %.*f %s\n", name, decimals, value, unit);
    fflush(stdout);
}

uint64_t bench_arg_u64(int argc, char **argv, int idx, uint64_t dflt)
{
    if (argc <= idx) {
        return dflt;
    }
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(argv[idx], &end, 10);
    if (errno != 0 || end == argv[idx] || *end != '\0' || v == 0) {
        bench_die("bad count '%s'", argv[idx]);
    }
    return (uint64_t)v;
}

px_err bench_send_u64(px_ctx *ctx, px_ref to, uint32_t tag, uint64_t v, bench_done *d)
{
    px_msg *m = NULL;
    px_err err = px_msg_u64(&m, tag, v);
    if (err == PX_OK) {
        err = px_send(ctx, to, &m);
    }
    if (err != PX_OK) {
        px_msg_free(m);
        fprintf(stderr, "bench: send: %s\n", px_strerror(err));
        bench_done_fail(d);
    }
    return err;
}

uint64_t bench_kick(px_system *sys, px_ref to, uint32_t tag, const char *what)
{
    px_msg *m = NULL;
    bench_check(px_msg_u64(&m, tag, 0), "px_msg_u64");
    uint64_t t0 = bench_now_ns();
    bench_check(px_system_send(sys, to, &m), what);
    return t0;
}

px_system *bench_system_named(const char *node_name, uint32_t max_actors, px_log_level level)
{
    return system_of(node_name, max_actors, level, NULL, NULL);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

void bench_sort_u64(uint64_t *v, size_t n)
{
    qsort(v, n, sizeof(*v), cmp_u64);
}

uint64_t bench_pct_u64(const uint64_t *sorted, size_t n, double q)
{
    if (n == 0) {
        return 0;
    }
    double want = q * (double)n;
    size_t rank = (size_t)want; /* ceil(q * n), 1-based */
    if ((double)rank < want) {
        rank++;
    }
    if (rank < 1) {
        rank = 1;
    }
    if (rank > n) {
        rank = n;
    }
    return sorted[rank - 1];
}

bool bench_find_program(const char *name, char *path, size_t len) {
    const char *env = getenv("PATH");
    char *dup = strdup(env != NULL ? env : "/usr/local/bin:/usr/bin:/bin");
    bool found = false;
    for (char *save = NULL, *d = dup ? strtok_r(dup, ":", &save) : NULL; d != NULL && !found;
         d = strtok_r(NULL, ":", &save)) {
        snprintf(path, len, "%s/%s", d[0] != '\0' ? d : ".", name);
        struct stat st;
        found = stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
    }
    free(dup);
    return found;
}

void bench_nap_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}
