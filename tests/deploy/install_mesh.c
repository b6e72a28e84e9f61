/*
 * install_mesh.c — built by test_install.sh against an installed plexus
 * (pkg-config plexus-mesh): one node with its transport (loopback tcp), a
 * standalone cluster and the mesh started (the mesh's router installed),
 * a local actor asked, then everything stopped: every library of
 * plexus-mesh links and starts. Prints "install_mesh: ok" or why not;
 * exits non-zero on any failure.
 */
#include <stdio.h>
#include <string.h>

#include <plexus/cluster.h>
#include <plexus/mesh.h>
#include <plexus/plexus.h>
#include <plexus/transport.h>

static px_err echo_receive(px_ctx *ctx, px_msg *m) {
    px_msg *r = NULL;
    px_err e = px_msg_u64(&r, 0, 2 * px_msg_get_u64(m));
    if (e == PX_OK) {
        e = px_reply(ctx, m, &r);
    }
    px_msg_free(r);
    return e;
}

static const px_behavior echo_b = {.name = "install.echo", .receive = echo_receive};

#define FAIL(...)                                                                              \
    do {                                                                                       \
        fprintf(stderr, "install_mesh: " __VA_ARGS__);                                         \
        fputc('\n', stderr);                                                                   \
        return 1;                                                                              \
    } while (0)

int main(int argc, char **argv) {
    if (argc != 2) {
        FAIL("usage: install_mesh KEY_FILE");
    }
    px_config cfg;
    px_config_init(&cfg);
    cfg.node_name = "solo";
    cfg.log_level = PX_LOG_WARN;
    px_system *sys = NULL;
    if (px_system_alloc(&sys, &cfg) != PX_OK) {
        FAIL("px_system_alloc");
    }
    char err[256] = "";
    px_identity id;
    if (px_identity_load(argv[1], true, &id, err, sizeof err) != PX_OK) {
        FAIL("identity: %s", err);
    }
    px_transport_cfg tc;
    px_transport_cfg_init(&tc);
    tc.listen = "tcp://127.0.0.1:0";
    tc.identity = &id;
    const char *secret = "the install test's cluster secret";
    if (px_secret_from_bytes(secret, strlen(secret), tc.cluster_key) != PX_OK) {
        FAIL("secret");
    }
    px_transport *t = NULL;
    if (px_transport_start(sys, &tc, &t) != PX_OK) {
        FAIL("px_transport_start");
    }
    px_cluster_cfg cc;
    px_cluster_cfg_init(&cc);
    cc.cluster = "install";
    cc.sys = sys;
    cc.transport = t; /* no etcd endpoints: standalone */
    px_cluster *c = NULL;
    px_err e = px_cluster_start(&cc, &c, err, sizeof err);
    if (e != PX_OK) {
        FAIL("px_cluster_start: %s: %s", px_strerror(e), err);
    }
    px_mesh *m = NULL;
    px_mesh_cfg mc = {.sys = sys, .transport = t, .cluster = c};
    if (px_mesh_start(&mc, &m) != PX_OK) {
        FAIL("px_mesh_start");
    }
    px_ref a = PX_REF_NIL;
    if (px_system_spawn(sys, &echo_b, NULL, NULL, &a) != PX_OK) {
        FAIL("spawn");
    }
    px_msg *q = NULL, *r = NULL;
    if (px_msg_u64(&q, 0, 21) != PX_OK || px_system_ask(sys, a, &q, 2000, &r) != PX_OK ||
        px_msg_get_u64(r) != 42) {
        FAIL("the ask did not come back with 42");
    }
    px_msg_free(q);
    px_msg_free(r);
    char addr[128];
    snprintf(addr, sizeof addr, "%s", px_transport_address(t));
    px_mesh_stop(m);
    px_cluster_stop(c, true);
    px_transport_stop(t);
    px_system_free(sys);
    printf("install_mesh: ok (listened on %s)\n", addr);
    return 0;
}
