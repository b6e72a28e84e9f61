/*
 * bench_etcd.c — see bench_etcd.h. One static set-up per process, so that
 * the atexit handler can find it; signals exit(1), which runs it.
 */
#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_etcd.h"
#include "bench_util.h"
#include "pxt_util.h"

static bench_etcd g_be;
static char g_suite[16], g_keep_env[48];

static void cleanup(void)
{
    bool keep = getenv(g_keep_env) != NULL;
    g_be.etcd.keep_log = keep;
    pxt_etcd_stop(&g_be.etcd);
    pxt_procs_kill_all();
    if (g_be.dir[0] != '\0') {
        char who[32];
        snprintf(who, sizeof(who), "bench_%s", g_suite);
        pxt_dir_finish(g_be.dir, !keep, who);
    }
}

static void on_signal(int sig)
{
    (void)sig;
    exit(1); /* atexit: cleanup */
}

bool bench_etcd_found(const char *suite)
{
    if (bench_find_program("etcd", g_be.bin, sizeof(g_be.bin))) {
        return true;
    }
    fprintf(stderr,
            "bench_%s: etcd is not installed (no etcd on PATH); the %s suite needs a real "
            "etcd (Debian: apt-get install etcd-server)\n",
            suite, suite);
    return false;
}

bench_etcd *bench_etcd_start(const char *suite)
{
    snprintf(g_suite, sizeof(g_suite), "%s", suite);
    int n = snprintf(g_keep_env, sizeof(g_keep_env), "PX_BENCH_%s_KEEP", suite);
    for (int i = (int)strlen("PX_BENCH_"); i < n && g_keep_env[i] != '_'; i++) {
        g_keep_env[i] = (char)toupper((unsigned char)g_keep_env[i]);
    }
    snprintf(g_be.dir, sizeof(g_be.dir), "/tmp/px-bench-%s.XXXXXX", suite);
    if (mkdtemp(g_be.dir) == NULL) {
        g_be.dir[0] = '\0';
        bench_die("mkdtemp: %s", strerror(errno));
    }
    snprintf(g_be.secret, sizeof(g_be.secret), "%s/cluster.secret", g_be.dir);
    g_be.etcd.bin = g_be.bin;
    char text[96];
    snprintf(text, sizeof(text), "the %s benchmark's secret, for loopback only\n", suite);
    int rv = pxt_file_write(g_be.secret, text, 0600);
    if (rv == 0) {
        rv = pxt_etcd_start(&g_be.etcd);
    }
    /* registered after pxt_util's own kill-everything handler: runs first */
    atexit(cleanup);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    if (rv != 0) {
        bench_die("etcd (%s) did not start: %s; its log: %s", g_be.bin, strerror(-rv),
                  g_be.etcd.log);
    }
    fprintf(stderr, "bench_%s: etcd %s at %s; node logs in %s\n", suite, g_be.bin,
            g_be.etcd.url, g_be.dir);
    return &g_be;
}
