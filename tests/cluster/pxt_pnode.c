/*
 * tests/cluster/pxt_pnode.c — node processes in a cluster (pxt_pnode.h).
 */
#include "pxt_pnode.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <plexus/plexus.h>

#ifndef PXT_NODE
#error "PXT_NODE (path of the pxt_node program) must be defined by the build"
#endif

void pxt_pworld_setup(pxt_pworld *w, const char *what, const char *tag, const char *cluster,
                      int ttl_s) {
    memset(w, 0, sizeof *w);
    w->what = what;
    w->cluster = cluster;
    w->ttl_s = ttl_s;
    snprintf(w->dir, sizeof w->dir, "/tmp/pxt-%s-XXXXXX", tag);
    cr_assert_not_null(mkdtemp(w->dir));
    snprintf(w->secret, sizeof w->secret, "%s/cluster.secret", w->dir);
    cr_assert_eq(pxt_file_write(w->secret, "the secret of the test's node processes\n", 0600), 0);
    w->etcd.extra[0] = "--heartbeat-interval=20";
    w->etcd.extra[1] = "--election-timeout=200";
    int rv = pxt_etcd_start(&w->etcd);
    cr_assert_eq(rv, 0, "etcd did not start (%s); its log: %s", strerror(-rv), w->etcd.log);
}

void pxt_pworld_teardown(pxt_pworld *w) {
    for (int i = 0; i < w->nn; i++) {
        if (w->nodes[i].p.pid > 0) {
            kill(w->nodes[i].p.pid, SIGCONT);
            pxt_proc_kill(&w->nodes[i].p);
        }
        pxt_proc_release(&w->nodes[i].p);
    }
    w->nn = 0;
    w->etcd.keep_log = !w->passed;
    if (w->etcd.keep_log || getenv("PXT_KEEP") != NULL) {
        fprintf(stderr, "%s: etcd's log: %s\n", w->what, w->etcd.log);
    }
    pxt_etcd_stop(&w->etcd);
    pxt_procs_kill_all();
    pxt_dir_finish(w->dir, w->passed, w->what);
}

pxt_pnode *pxt_pnode_new(pxt_pworld *w, const char *name, const char *roles) {
    cr_assert_lt(w->nn, PXT_PNODE_MAX);
    pxt_pnode *n = &w->nodes[w->nn++];
    memset(n, 0, sizeof *n);
    n->p.in_fd = n->p.out_fd = -1;
    snprintf(n->name, sizeof n->name, "%s", name);
    snprintf(n->roles, sizeof n->roles, "%s", roles != NULL ? roles : "");
    n->silence_ms = 3000;
    int port = pxt_free_port();
    cr_assert_gt(port, 0, "no free port: %s", strerror(-port));
    snprintf(n->addr, sizeof n->addr, "tcp://127.0.0.1:%d", port);
    snprintf(n->etcd, sizeof n->etcd, "%s", w->etcd.url);
    snprintf(n->id_path, sizeof n->id_path, "%s/%s.key", w->dir, name);
    snprintf(n->log_path, sizeof n->log_path, "%s/%s.log", w->dir, name);
    return n;
}

void pxt_pnode_start(pxt_pworld *w, pxt_pnode *n) {
    char ttl[8], silence[16];
    snprintf(ttl, sizeof ttl, "%d", w->ttl_s);
    snprintf(silence, sizeof silence, "%d", n->silence_ms);
    char *argv[32] = {PXT_NODE,     "--name",        n->name,  "--listen",        n->addr,
                      "--identity", n->id_path,      "--secret", w->secret,       "--heartbeat",
                      "100",        "--unreachable", silence,  "--reconnect-max", "300",
                      "--etcd",     n->etcd,         "--cluster", (char *)w->cluster, "--ttl",
                      ttl,          NULL};
    int k = 21;
    if (n->roles[0] != '\0') {
        argv[k++] = "--roles";
        argv[k++] = n->roles;
    }
    if (n->adv[0] != '\0') {
        argv[k++] = "--advertise";
        argv[k++] = n->adv;
    }
    argv[k] = NULL;
    pxt_proc_release(&n->p);
    int rv = pxt_proc_spawn(&n->p, argv, n->log_path);
    cr_assert_eq(rv, 0, "spawn %s: %s", n->name, strerror(-rv));
    char line[1024];
    rv = pxt_proc_expect(&n->p, "ready ", PXT_PNODE_CMD_MS, line, sizeof line);
    if (rv != 0) {
        PXT_FAIL_LOG(n->name, n->log_path, "no ready line (%s)", strerror(-rv));
    }
    cr_assert(strstr(line, " cluster=1") != NULL, "%s", line);
    cr_assert(pxt_kv(line, "sink", n->sink, sizeof n->sink) &&
                  pxt_kv(line, "echo", n->echo, sizeof n->echo) &&
                  pxt_kv(line, "fwd", n->fwd, sizeof n->fwd),
              "%s", line);
    n->id = (uint32_t)pxt_kv_num(line, "node", true, 0);
    n->inc = (uint32_t)pxt_kv_num(line, "inc", true, 0);
    cr_assert_eq(n->id, px_node_id(n->name), "%s", line);
    cr_assert_neq(n->inc, 0, "%s", line);
}

void pxt_pnode_quit(pxt_pnode *n) { pxt_quit(&n->p, n->name, n->log_path, 10000); }

void pxt_pworld_finish(pxt_pworld *w, pxt_pnode **n, int k) {
    for (int i = 0; i < k; i++) {
        if (n[i] != NULL && !n[i]->p.reaped) {
            pxt_pnode_quit(n[i]);
        }
    }
    w->passed = true;
}

bool pxt_pnode_sees(pxt_pnode *n, const pxt_pnode *who, const char *st, uint32_t inc) {
    char line[256], prefix[64], v[32];
    snprintf(prefix, sizeof prefix, "member name=%s ", who->name);
    PXT_PNODE_CMD(n, prefix, line, sizeof line, "member %s", who->name);
    if (strstr(line, "rc=PX_OK") == NULL) {
        return false;
    }
    cr_assert(pxt_kv(line, "state", v, sizeof v), "%s", line);
    return strcmp(v, st) == 0 && (inc == 0 || (uint32_t)pxt_kv_num(line, "inc", true, 0) == inc);
}

bool pxt_pnodes_all_see_up(pxt_pnode **obs, int nobs, pxt_pnode **who, int nwho) {
    for (int i = 0; i < nobs; i++) {
        for (int j = 0; j < nwho; j++) {
            if (!pxt_pnode_sees(obs[i], who[j], "up", who[j]->inc)) {
                return false;
            }
        }
    }
    return true;
}
