/*
 * bench_etcd.h — the set-up the cluster and mesh benchmarks share: a
 * temporary directory holding the cluster secret, a real etcd on loopback
 * (pxt_etcd), and their removal at exit — after bench_die too, and on
 * SIGINT / SIGTERM: etcd stopped by PID first, then any node process left
 * (pxt_procs), then the files, which $PX_BENCH_<SUITE>_KEEP keeps.
 * From main only (one set-up per process).
 */
#ifndef PX_BENCH_ETCD_H
#define PX_BENCH_ETCD_H

#include <stdbool.h>

#include "pxt_etcd.h"

typedef struct bench_etcd {
    pxt_etcd etcd;
    char dir[64];     /* the temporary directory: node keys and logs go here */
    char secret[128]; /* the cluster secret's file in it */
    char bin[512];    /* the etcd program */
} bench_etcd;

/* Whether etcd is on PATH; if not, says so on stderr for `suite` ("mesh",
 * "cluster"): the caller then exits 2. */
bool bench_etcd_found(const char *suite);

/* Makes the directory and the secret, starts etcd and arranges the
 * clean-up; dies (bench_die) on any failure. Call after bench_etcd_found. */
bench_etcd *bench_etcd_start(const char *suite);

#endif
