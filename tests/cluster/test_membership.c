/*
 * Tests for cluster/src/membership.c against a real etcd: several nodes in
 * this process (each its own px_cluster and etcd client) join, leave, stop
 * renewing, and live through etcd pauses. The scenarios with node
 * processes (SIGKILL, SIGSTOP) build on these.
 */
#include <criterion/criterion.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <plexus/cluster.h>

#include "pxt_etcd.h"

static pxt_etcd etcd;

static void setup(void) {
    int rv = pxt_etcd_start(&etcd);
    cr_assert_eq(rv, 0, "etcd did not start (%d)", rv);
}

static void teardown(void) {
    pxt_etcd_stop(&etcd);
    pxt_procs_kill_all();
}

TestSuite(cluster_membership, .init = setup, .fini = teardown, .timeout = 90);

static px_cluster *node(const char *name, uint32_t ttl) {
    px_cluster_cfg cfg;
    px_cluster_cfg_init(&cfg);
    cfg.cluster = "t";
    cfg.node = name;
    cfg.node_inc = 1;
    cfg.address = "tcp://127.0.0.1:1";
    cfg.ttl_s = ttl;
    cfg.etcd.endpoints = etcd.url;
    cfg.etcd.request_timeout_ms = 1000;
    cfg.etcd.connect_timeout_ms = 300;
    cfg.etcd.watch_retry_max_ms = 200;
    cfg.etcd.log = pxt_etcd_quiet_log;
    px_cluster *c = NULL;
    char err[200] = "";
    px_err rv = px_cluster_start(&cfg, &c, err, sizeof(err));
    cr_assert_eq(rv, PX_OK, "%s: %s (%s)", name, px_errname(rv), err);
    return c;
}

/* Waits (bounded) until c sees name in state st; returns the ms it took or
 * -1. */
static int64_t wait_state(px_cluster *c, const char *name, px_member_state st, int ms) {
    int64_t t0 = pxt_mono_ms();
    while (pxt_mono_ms() - t0 < ms) {
        px_member m;
        if (px_cluster_member(c, name, &m) == PX_OK && m.state == st) {
            return pxt_mono_ms() - t0;
        }
        struct timespec ts = {0, 5 * 1000000};
        nanosleep(&ts, NULL);
    }
    return -1;
}

static bool audit_has(px_cluster *c, const char *name, px_member_state st, const char *cause) {
    px_member_event ev[64];
    size_t n = 0;
    px_cluster_audit(c, ev, 64, &n);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(ev[i].m.name, name) == 0 && ev[i].m.state == st &&
            strstr(ev[i].cause, cause) != NULL) {
            return true;
        }
    }
    return false;
}

Test(cluster_membership, three_nodes_join_and_each_sees_three_up) {
    px_cluster *c[3] = {node("a", 3), node("b", 3), node("c", 3)};
    const char *names[] = {"a", "b", "c"};
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 3; j++) {
            cr_assert_geq(wait_state(c[i], names[j], PX_MEMBER_UP, 5000), 0, "%s sees %s up",
                          names[i], names[j]);
        }
        px_member ms[8];
        size_t n = 0;
        px_cluster_members(c[i], ms, 8, &n);
        cr_assert_eq(n, 3);
        int64_t lease, rev;
        cr_assert_eq(px_cluster_token(c[i], &lease, &rev), PX_OK);
        cr_assert_gt(lease, 0);
        cr_assert_gt(rev, 0);
    }
    px_member b;
    cr_assert_eq(px_cluster_member(c[0], "b", &b), PX_OK);
    cr_assert_str_eq(b.address, "tcp://127.0.0.1:1");
    cr_assert_eq(b.node_inc, 1);
    cr_assert(audit_has(c[0], "c", PX_MEMBER_UP, "registered"));
    for (int i = 0; i < 3; i++) {
        px_cluster_stop(c[i], true);
    }
}

Test(cluster_membership, a_graceful_leave_is_seen_as_left_within_a_second) {
    px_cluster *a = node("a", 3), *b = node("b", 3);
    cr_assert_geq(wait_state(a, "b", PX_MEMBER_UP, 5000), 0);
    int64_t t0 = pxt_mono_ms();
    px_cluster_stop(b, true);
    int64_t took = wait_state(a, "b", PX_MEMBER_LEFT, 3000);
    cr_assert_geq(took, 0, "a saw b leave");
    cr_assert_lt(pxt_mono_ms() - t0, 1000, "within 1 s (took %lld ms)", (long long)(pxt_mono_ms() - t0));
    cr_assert(audit_has(a, "b", PX_MEMBER_LEFT, "left gracefully"));
    px_cluster_stop(a, true);
}

Test(cluster_membership, a_node_that_stops_renewing_is_down_within_ttl_plus_a_second) {
    px_cluster *a = node("a", 2), *b = node("b", 2);
    cr_assert_geq(wait_state(a, "b", PX_MEMBER_UP, 5000), 0);
    int64_t t0 = pxt_mono_ms();
    px_cluster_stop(b, false); /* as if it died: no goodbye, no more keepalives */
    cr_assert_geq(wait_state(a, "b", PX_MEMBER_DOWN, 6000), 0, "a saw b down");
    int64_t took = pxt_mono_ms() - t0;
    cr_assert_leq(took, 3000, "down within TTL + 1 s (took %lld ms)", (long long)took);
    cr_assert(audit_has(a, "b", PX_MEMBER_DOWN, "lease expired"));
    fprintf(stderr, "down detected after %lld ms (TTL 2 s)\n", (long long)took);
    px_cluster_stop(a, true);
}

Test(cluster_membership, etcd_paused_past_the_ttl_fences_the_nodes_and_they_rejoin) {
    px_cluster *a = node("a", 2), *b = node("b", 2);
    cr_assert_geq(wait_state(a, "b", PX_MEMBER_UP, 5000), 0);
    cr_assert_eq(pxt_etcd_pause(&etcd), 0);
    /* Bounded wait for a to fence itself (its keepalives go unanswered). */
    int64_t t0 = pxt_mono_ms();
    px_cluster_health h = {0};
    while (pxt_mono_ms() - t0 < 6000) {
        px_cluster_health_get(a, &h);
        if (h.fenced) {
            break;
        }
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
    cr_assert(h.fenced, "a fenced itself while etcd was paused");
    cr_assert_neq(h.etcd_down_since_ms, 0, "health says since when etcd is unreachable");
    int64_t lease, rev;
    cr_assert_eq(px_cluster_token(a, &lease, &rev), PX_EFENCED, "no fencing token while fenced");
    cr_assert_eq(pxt_etcd_resume(&etcd), 0);
    /* Both register again as incarnation 2 and see each other up. */
    t0 = pxt_mono_ms();
    px_member m = {0};
    while (pxt_mono_ms() - t0 < 10000) {
        if (px_cluster_member(a, "b", &m) == PX_OK && m.state == PX_MEMBER_UP && m.node_inc == 2) {
            break;
        }
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
    cr_assert_eq(m.node_inc, 2, "b rejoined as a new incarnation (a sees inc %u)", m.node_inc);
    cr_assert_eq(m.state, PX_MEMBER_UP);
    /* a's own registration may land just after b's: wait for it too (bounded). */
    t0 = pxt_mono_ms();
    do {
        px_cluster_health_get(a, &h);
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    } while (!(h.registered && !h.fenced) && pxt_mono_ms() - t0 < 5000);
    cr_assert(h.registered && !h.fenced);
    cr_assert_eq(h.node_inc, 2);
    cr_assert_geq(h.fences, 1);
    cr_assert_eq(px_cluster_token(a, &lease, &rev), PX_OK);
    cr_assert(audit_has(a, "a", PX_MEMBER_FENCED, "fenced"));
    px_cluster_stop(a, true);
    px_cluster_stop(b, true);
}

Test(cluster_membership, a_short_etcd_restart_causes_no_false_down) {
    px_cluster *a = node("a", 3), *b = node("b", 3);
    cr_assert_geq(wait_state(a, "b", PX_MEMBER_UP, 5000), 0);
    pxt_etcd_kill(&etcd);
    cr_assert_eq(pxt_etcd_restart(&etcd), 0);
    /* Wait for a keepalive to succeed after the restart. */
    px_cluster_health h0, h;
    px_cluster_health_get(a, &h0);
    int64_t t0 = pxt_mono_ms();
    do {
        struct timespec ts = {0, 20 * 1000000};
        nanosleep(&ts, NULL);
        px_cluster_health_get(a, &h);
    } while (h.keepalives <= h0.keepalives && pxt_mono_ms() - t0 < 5000);
    cr_assert_gt(h.keepalives, h0.keepalives, "keepalives go on after etcd restarted");
    cr_assert_eq(h.fences, 0, "no fencing for a short outage");
    px_member m;
    cr_assert_eq(px_cluster_member(a, "b", &m), PX_OK);
    cr_assert_eq(m.state, PX_MEMBER_UP, "b never looked down");
    cr_assert(!audit_has(a, "b", PX_MEMBER_DOWN, ""), "no false down in the audit");
    px_cluster_stop(a, true);
    px_cluster_stop(b, true);
}

Test(cluster_membership, bad_configurations_are_refused) {
    px_cluster_cfg cfg;
    px_cluster_cfg_init(&cfg);
    px_cluster *c = NULL;
    char err[200] = "";
    cfg.etcd.endpoints = etcd.url;
    cr_assert_eq(px_cluster_start(&cfg, &c, err, sizeof(err)), PX_EINVAL);
    cr_assert(strstr(err, "node name") != NULL, "%s", err);
    cfg.node = "x";
    cfg.ttl_s = 1;
    cr_assert_eq(px_cluster_start(&cfg, &c, err, sizeof(err)), PX_EINVAL);
    cr_assert(strstr(err, "ttl") != NULL, "%s", err);
    cfg.ttl_s = 2;
    cfg.cluster = "a/b";
    cr_assert_eq(px_cluster_start(&cfg, &c, err, sizeof(err)), PX_EINVAL);
    cfg.cluster = "ok";
    char dead[64];
    snprintf(dead, sizeof(dead), "http://127.0.0.1:%d", pxt_free_port());
    cfg.etcd.endpoints = dead;
    cfg.etcd.request_timeout_ms = 500;
    cr_assert_eq(px_cluster_start(&cfg, &c, err, sizeof(err)), PX_EUNREACHABLE);
    cr_assert_null(c);
}
