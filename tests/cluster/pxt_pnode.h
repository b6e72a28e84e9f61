/*
 * tests/cluster/pxt_pnode.h — node processes in a cluster, for the
 * Criterion suites that run them (test_scenarios.c, test_mesh_procs.c):
 * pxt_node (tests/transport/pxt_node.c) started with --etcd against a real
 * etcd (pxt_etcd) in a temporary directory that holds the identities, the
 * cluster secret and the logs, and the membership checks those suites
 * share. What differs per suite (its proxies, its commands) stays there.
 *
 * Call these from the test's own thread only (Criterion asserts there).
 * The build defines PXT_NODE, the path of the pxt_node program.
 */
#ifndef PXT_PNODE_H
#define PXT_PNODE_H

#include <stdbool.h>
#include <stdint.h>

#include "pxt_crit.h"
#include "pxt_etcd.h"

#define PXT_PNODE_MAX 12
#define PXT_PNODE_CMD_MS 10000 /* bound for one command's answer */

typedef struct pxt_pnode {
    pxt_proc p;
    char name[16];
    char addr[64];   /* where it listens */
    char adv[64];    /* what it publishes ("" = addr) */
    char etcd[64];   /* the etcd URL it is given (a proxy's, to cut it off) */
    char roles[32];  /* --roles ("" = none) */
    int silence_ms;  /* --unreachable */
    char id_path[256], log_path[256];
    /* its first incarnation's actors (from its ready line) */
    char sink[48], echo[48], fwd[48];
    uint32_t id;     /* node id */
    uint32_t inc;    /* its current incarnation as the test last learnt it */
} pxt_pnode;

/* One test's cluster: the directory, the secret, etcd and the nodes. */
typedef struct pxt_pworld {
    const char *what;    /* the suite, in messages ("scenarios") */
    const char *cluster; /* --cluster */
    int ttl_s;           /* --ttl */
    char dir[64], secret[128];
    pxt_etcd etcd;
    pxt_pnode nodes[PXT_PNODE_MAX];
    int nn;
    bool passed; /* set by pxt_pworld_finish: the logs go */
} pxt_pworld;

/* A fresh directory (/tmp/pxt-<tag>-XXXXXX) with a secret, and etcd with
 * quick elections. */
void pxt_pworld_setup(pxt_pworld *w, const char *what, const char *tag, const char *cluster,
                      int ttl_s);

/* Kills (SIGCONT first: a test may have stopped it) and reaps every node
 * left, stops etcd, and removes the directory unless the test failed or
 * PXT_KEEP is set (then says where it is). */
void pxt_pworld_teardown(pxt_pworld *w);

/* A node not started yet: a free loopback port, the world's etcd, roles
 * (NULL: none), --unreachable 3000 ms. */
pxt_pnode *pxt_pnode_new(pxt_pworld *w, const char *name, const char *roles);

/* Starts n's process and reads its ready line (it has joined by then). */
void pxt_pnode_start(pxt_pworld *w, pxt_pnode *n);

/* Sends a command to n and returns its answer (the line starting with
 * prefix) in line. */
#define PXT_PNODE_CMD(n, prefix, line, len, ...)                                              \
    pxt_cmd(&(n)->p, (n)->name, (n)->log_path, PXT_PNODE_CMD_MS, (prefix), (line), (len),      \
            __VA_ARGS__)

/* Stops n with "quit" (it leaves the cluster) and asserts it exited 0 by
 * itself (under ASan that includes a clean leak check). */
void pxt_pnode_quit(pxt_pnode *n);

/* Quits those of n[0..k) still running (NULL ones are skipped) and marks
 * the test passed. */
void pxt_pworld_finish(pxt_pworld *w, pxt_pnode **n, int k);

/* n's view of `who`: true if it is in state st (and of incarnation inc,
 * unless inc is 0). */
bool pxt_pnode_sees(pxt_pnode *n, const pxt_pnode *who, const char *st, uint32_t inc);

/* Every observer sees every node of who[] (itself included) up with its
 * current incarnation. */
bool pxt_pnodes_all_see_up(pxt_pnode **obs, int nobs, pxt_pnode **who, int nwho);

#endif
