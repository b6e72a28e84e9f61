/*
 * plexusd — the plexus node daemon.
 *
 *   plexusd --config plexusd.yaml [flags]     run a node
 *   plexusd --check-config [...]              validate, print the effective config
 *   plexusd --config-reference                the config keys as Markdown
 *   plexusd --help | --version
 *
 * Start: config (file < env < flags), the node's identity key (created on
 * first start) and the cluster secret, a system with the built-in
 * behaviors and the plugins (--load), the transport, the admin channel,
 * HTTP, membership (etcd, or standalone without endpoints) and the mesh,
 * then the config's roots. Prints one line on stdout when ready:
 *   plexusd: ready node=NAME listen=URL admin=URL http=URL
 * SIGTERM / SIGINT drain the node (ops.h) and exit 0; SIGHUP reloads what
 * can change at run time (log level, default mailbox bound).
 * Exit codes: 0 clean stop, 1 could not start (the log says why),
 * 2 bad configuration or usage.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <sodium.h>

#include "builtins.h"
#include "load.h"
#include "config.h"
#include "daemon.h"
#include "httpd.h"
#include "ops.h"
#include "text.h"

extern char **environ;

static const char *const extra_flags[] = {"--check-config", "--config-reference", "--help",
                                          "--version", NULL};

/* ---- logs ---- */

/* One line per event: key=value fields, or a JSON object per line. */
static void log_sink(void *arg, px_log_level level, const char *node, const char *line) {
    pxd_node *n = arg;
    if ((unsigned)level <= PX_LOG_OFF) {
        atomic_fetch_add_explicit(&n->log_lines[level], 1, memory_order_relaxed);
    }
    char ts[48];
    pxu_iso_ms(pxu_wall_ms(), ts, sizeof ts);
    if (n->cfg->log_json) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "ts", ts, "level",
                              px_log_level_name(level), "node", node, "msg", line);
        char *t = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        if (t != NULL) {
            fprintf(stderr, "%s\n", t);
            free(t);
        }
        return;
    }
    /* msg quoted with its quotes and backslashes escaped: one line, parseable */
    char esc[2048];
    size_t k = 0;
    for (const char *p = line; *p != '\0' && k + 3 < sizeof esc; p++) {
        if (*p == '"' || *p == '\\') {
            esc[k++] = '\\';
        }
        esc[k++] = *p == '\n' ? ' ' : *p;
    }
    esc[k] = '\0';
    fprintf(stderr, "ts=%s level=%s node=%s msg=\"%s\"\n", ts, px_log_level_name(level), node,
            esc);
}

/* ---- start ---- */

typedef px_err (*plugin_fn)(px_system *sys);

/* dlopen's each --load library and calls its plexus_plugin_register. */
static int load_plugins(pxd_node *n) {
    for (size_t i = 0; i < n->cfg->plugins.n; i++) {
        const char *path = n->cfg->plugins.v[i];
        void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (h == NULL) {
            px_log(n->sys, PX_LOG_CRIT, "plugin %s: cannot load: %s", path, dlerror());
            return -1;
        }
        plugin_fn fn;
        *(void **)&fn = dlsym(h, "plexus_plugin_register");
        if (fn == NULL) {
            px_log(n->sys, PX_LOG_CRIT,
                   "plugin %s: no plexus_plugin_register(px_system *) in it", path);
            dlclose(h);
            return -1;
        }
        px_err e = fn(n->sys);
        if (e != PX_OK) {
            px_log(n->sys, PX_LOG_CRIT, "plugin %s: plexus_plugin_register failed: %s", path,
                   px_strerror(e));
            dlclose(h);
            return -1;
        }
        px_log(n->sys, PX_LOG_INFO, "plugin %s loaded", path);
        /* the library stays loaded for the process's life: its behaviors are in use */
    }
    return 0;
}

static int start_transport(pxd_node *n) {
    pxd_config *cfg = n->cfg;
    px_peer *peers = calloc(cfg->peers.n + 1, sizeof *peers);
    char *copies[PXD_MAX_LIST] = {0};
    int rc = -1;
    for (size_t i = 0; peers != NULL && i < cfg->peers.n; i++) {
        /* "NAME ADDRESS PUBKEY", checked by the config */
        copies[i] = strdup(cfg->peers.v[i]);
        char *save = NULL, *name = strtok_r(copies[i], " \t", &save);
        char *addr = strtok_r(NULL, " \t", &save), *pk = strtok_r(NULL, " \t", &save);
        if (name == NULL || addr == NULL || pk == NULL || px_pubkey_parse(pk, peers[i].pk) != PX_OK) {
            px_log(n->sys, PX_LOG_CRIT, "transport.peers[%zu]: \"%s\" is not NAME ADDRESS PUBKEY", i,
                   cfg->peers.v[i]);
            goto out;
        }
        peers[i].name = name;
        peers[i].address = addr;
    }
    px_transport_cfg tc;
    px_transport_cfg_init(&tc);
    tc.listen = cfg->listen;
    tc.identity = &n->id;
    memcpy(tc.cluster_key, n->cluster_key, PX_SECRET_BYTES);
    tc.peers = peers;
    tc.npeers = cfg->peers.n;
    tc.max_msg = cfg->max_msg;
    tc.plaintext = cfg->plaintext;
    tc.poll_rx = cfg->latency_mode;
    if (tc.queue_bytes < tc.max_msg) {
        tc.queue_bytes = tc.max_msg * 2;
    }
    px_transport *t = NULL;
    px_err e = px_transport_start(n->sys, &tc, &t);
    if (e != PX_OK) {
        px_log(n->sys, PX_LOG_CRIT, "transport on %s: %s", cfg->listen, px_strerror(e));
        goto out;
    }
    pxd_part_set(n, PXD_PART_T, t);
    rc = 0;
out:
    for (size_t i = 0; i < PXD_MAX_LIST; i++) {
        free(copies[i]);
    }
    free(peers);
    return rc;
}

static int start_admin(pxd_node *n) {
    uint8_t(*allowed)[PX_PUBKEY_BYTES] = NULL;
    size_t na = n->cfg->admin_keys.n;
    if (na > 0) {
        allowed = calloc(na, sizeof *allowed);
        for (size_t i = 0; allowed != NULL && i < na; i++) {
            if (px_pubkey_parse(n->cfg->admin_keys.v[i], allowed[i]) != PX_OK) {
                px_log(n->sys, PX_LOG_CRIT, "admin.keys[%zu]: not a public key", i);
                free(allowed);
                return -1;
            }
        }
    }
    px_admin_server_cfg ac = {.listen = n->cfg->admin_listen,
                              .sys = n->sys,
                              .identity = &n->id,
                              .cluster_key = n->cluster_key,
                              .allowed = (const uint8_t(*)[PX_PUBKEY_BYTES])allowed,
                              .n_allowed = na,
                              .handler = pxd_admin_handle,
                              .arg = n};
    char err[256] = "";
    px_err e = px_admin_server_start(&ac, &n->admin, err, sizeof err);
    free(allowed);
    if (e != PX_OK) {
        px_log(n->sys, PX_LOG_CRIT, "admin endpoint on %s: %s: %s", n->cfg->admin_listen,
               px_strerror(e), err);
        return -1;
    }
    return 0;
}

static int start_cluster(pxd_node *n) {
    pxd_config *cfg = n->cfg;
    const char *roles[PXD_MAX_LIST + 1] = {0};
    for (size_t i = 0; i < cfg->roles.n; i++) {
        roles[i] = cfg->roles.v[i];
    }
    char endpoints[2048] = "";
    for (size_t i = 0; i < cfg->etcd.n; i++) {
        size_t k = strlen(endpoints);
        snprintf(endpoints + k, sizeof endpoints - k, "%s%s", i ? "," : "", cfg->etcd.v[i]);
    }
    px_cluster_cfg cc;
    px_cluster_cfg_init(&cc);
    cc.cluster = cfg->cluster;
    cc.sys = n->sys;
    cc.transport = n->t;
    /* the default advertise is the listen address, whose port may be 0:
     * then the transport's bound address is the one to publish */
    cc.address = cfg->advertise != NULL && strcmp(cfg->advertise, cfg->listen) != 0
                     ? cfg->advertise
                     : NULL;
    cc.roles = roles;
    cc.ttl_s = cfg->lease_ttl_s;
    cc.admin_address = px_admin_server_url(n->admin);
    cc.http_address = n->http != NULL ? pxd_httpd_url(n->http) : NULL;
    cc.etcd.endpoints = endpoints;
    cc.etcd.ca_file = cfg->etcd_ca_file;
    cc.etcd.user = cfg->etcd_user;
    cc.etcd.password = cfg->etcd_password;
    cc.etcd.log = log_sink;
    cc.etcd.log_arg = n;
    cc.etcd.log_level = cfg->log_level;
    char err[256] = "";
    px_cluster *c = NULL;
    px_err e = px_cluster_start(&cc, &c, err, sizeof err);
    if (e != PX_OK) {
        px_log(n->sys, PX_LOG_CRIT, "membership (etcd %s): %s: %s",
               endpoints[0] ? endpoints : "none", px_strerror(e), err);
        return -1;
    }
    pxd_part_set(n, PXD_PART_C, c); /* the admin and HTTP threads already run */
    px_mesh *m = NULL;
    px_mesh_cfg mc = {.sys = n->sys, .transport = n->t, .cluster = c};
    e = px_mesh_start(&mc, &m);
    if (e != PX_OK) {
        px_log(n->sys, PX_LOG_CRIT, "mesh: %s", px_strerror(e));
        return -1;
    }
    pxd_part_set(n, PXD_PART_M, m);
    return 0;
}

/* Everything that was started, in reverse order (what the drain already
 * stopped is NULL). */
static void teardown(pxd_node *n) {
    pxd_httpd_stop(n->http);
    n->http = NULL;
    px_admin_server_stop(n->admin);
    n->admin = NULL;
    px_mesh *m = pxd_part_take(n, PXD_PART_M);
    px_cluster *c = pxd_part_take(n, PXD_PART_C);
    px_transport *t = pxd_part_take(n, PXD_PART_T);
    px_mesh_stop(m);
    px_cluster_stop(c, true);
    px_transport_stop(t);
    if (n->sys != NULL) {
        px_system_shutdown(n->sys);
    }
    pxd_events_stop(n);
    px_system_free(n->sys);
    pxd_load_bind(n, false);
    n->sys = NULL;
}

static void reload(pxd_node *n, int argc, char **argv) {
    char err[4096] = "", *changed = NULL;
    px_err e = pxd_config_reload(n->cfg, argc, argv, environ, extra_flags, &changed, err,
                                 sizeof err);
    if (e != PX_OK) {
        px_log(n->sys, PX_LOG_ERROR, "SIGHUP: config not reloaded: %s", err);
        return;
    }
    (void)px_system_set_log_level(n->sys, n->cfg->log_level);
    px_log(n->sys, PX_LOG_INFO, "SIGHUP: config reloaded: %s",
           changed != NULL && changed[0] ? changed : "nothing changed");
    free(changed);
}

static void drain_log(void *arg, const char *json) {
    pxd_node *n = arg;
    px_log(n->sys, PX_LOG_INFO, "drain: %s", json);
}

static int has_flag(int argc, char **argv, const char *f) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], f) == 0) {
            return 1;
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    if (has_flag(argc, argv, "--help")) {
        char *u = pxd_config_usage();
        fputs(u != NULL ? u : "plexusd: out of memory\n", stdout);
        free(u);
        return 0;
    }
    if (has_flag(argc, argv, "--version")) {
        printf("plexusd %s (wire protocol %d)\n", PXD_VERSION, PX_WIRE_VERSION);
        return 0;
    }
    if (has_flag(argc, argv, "--config-reference")) {
        char *r = pxd_config_reference();
        fputs(r != NULL ? r : "", stdout);
        free(r);
        return r != NULL ? 0 : 1;
    }
    static pxd_config cfg;
    pxd_config_init(&cfg);
    char err[8192] = "";
    if (pxd_config_load(&cfg, argc, argv, environ, extra_flags, err, sizeof err) != PX_OK) {
        fprintf(stderr, "plexusd: bad configuration:\n%s\n", err);
        pxd_config_free(&cfg);
        return 2;
    }
    if (has_flag(argc, argv, "--check-config")) {
        char *d = pxd_config_dump(&cfg);
        fputs(d != NULL ? d : "", stdout);
        free(d);
        /* the files the config names must be usable too */
        uint8_t key[PX_SECRET_BYTES];
        char why[256] = "";
        int rc = 0;
        if (px_secret_load(cfg.secret_file, key, why, sizeof why) != PX_OK) {
            fprintf(stderr, "plexusd: %s: cluster.secret_file %s: %s\n",
                    pxd_config_source(&cfg, "cluster.secret_file"), cfg.secret_file, why);
            rc = 2;
        }
        sodium_memzero(key, sizeof key);
        px_identity id;
        px_err ie = px_identity_load(cfg.key_file, false, &id, why, sizeof why);
        if (ie != PX_OK && ie != PX_ENOENT) {
            fprintf(stderr, "plexusd: %s: node.key_file %s: %s\n",
                    pxd_config_source(&cfg, "node.key_file"), cfg.key_file, why);
            rc = 2;
        }
        for (size_t i = 0; i < cfg.plugins.n; i++) {
            void *h = dlopen(cfg.plugins.v[i], RTLD_NOW | RTLD_LOCAL);
            if (h == NULL || dlsym(h, "plexus_plugin_register") == NULL) {
                fprintf(stderr, "plexusd: %s: plugin %s: %s\n", pxd_config_source(&cfg, "plugins"),
                        cfg.plugins.v[i],
                        h == NULL ? dlerror() : "no plexus_plugin_register in it");
                rc = 2;
            }
            if (h != NULL) {
                dlclose(h);
            }
        }
        printf("%s\n", rc == 0 ? "config ok" : "config has errors");
        pxd_config_free(&cfg);
        return rc;
    }

    /* Signals are taken by sigtimedwait on this thread only. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    static pxd_node node;
    pxd_node *n = &node;
    n->cfg = &cfg;
    n->started_ms = pxu_wall_ms();
    if (nng_mtx_alloc(&n->parts_mtx) != 0 || nng_cv_alloc(&n->parts_cv, n->parts_mtx) != 0 ||
        nng_mtx_alloc(&n->drain_mtx) != 0) {
        fprintf(stderr, "plexusd: out of memory\n");
        return 1;
    }
    px_config sc;
    px_config_init(&sc);
    sc.node_name = cfg.node_name;
    sc.workers = cfg.workers;
    if (cfg.latency_mode) {
        sc.spin_max_us = 1000; /* the workers poll the links while they spin */
    }
    sc.mailbox.capacity = cfg.mailbox_capacity;
    sc.mailbox.overflow = cfg.mailbox_policy;
    if (cfg.max_actors > 0) {
        sc.max_actors = cfg.max_actors;
    }
    sc.shutdown_mode = PX_SHUTDOWN_DRAIN;
    sc.shutdown_timeout_ms = cfg.drain_timeout_ms;
    sc.log_level = cfg.log_level;
    sc.log_sink = log_sink;
    sc.log_arg = n;
    int rc = 1;
    px_err e = px_system_alloc(&n->sys, &sc);
    if (e != PX_OK) {
        fprintf(stderr, "plexusd: cannot start the actor system: %s\n", px_strerror(e));
        goto out;
    }
    pxd_load_bind(n, true);
    if ((e = pxd_builtins_register(n->sys)) != PX_OK) {
        px_log(n->sys, PX_LOG_CRIT, "built-in behaviors: %s", px_strerror(e));
        goto out;
    }
    if (load_plugins(n) != 0) {
        goto out;
    }
    if (px_identity_load(cfg.key_file, true, &n->id, err, sizeof err) != PX_OK) {
        px_log(n->sys, PX_LOG_CRIT, "%s: node.key_file %s: %s",
               pxd_config_source(&cfg, "node.key_file"), cfg.key_file, err);
        goto out;
    }
    if (px_secret_load(cfg.secret_file, n->cluster_key, err, sizeof err) != PX_OK) {
        px_log(n->sys, PX_LOG_CRIT, "%s: cluster.secret_file %s: %s",
               pxd_config_source(&cfg, "cluster.secret_file"), cfg.secret_file, err);
        goto out;
    }
    if (cfg.plaintext) {
        px_log(n->sys, PX_LOG_WARN, "transport.plaintext is ON: node links are NOT encrypted "
                                    "(benchmarks only)");
    }
    if (start_transport(n) != 0 || start_admin(n) != 0) {
        goto out;
    }
    if (cfg.http_listen != NULL && cfg.http_listen[0] != '\0' &&
        pxd_httpd_start(n, cfg.http_listen, &n->http, err, sizeof err) != PX_OK) {
        px_log(n->sys, PX_LOG_CRIT, "http endpoint on %s: %s", cfg.http_listen, err);
        goto out;
    }
    if (start_cluster(n) != 0) {
        goto out;
    }
    if ((e = pxd_events_start(n)) != PX_OK) {
        px_log(n->sys, PX_LOG_CRIT, "events: %s", px_strerror(e));
        goto out;
    }
    if ((e = pxd_roots_start(n, err, sizeof err)) != PX_OK) {
        px_log(n->sys, PX_LOG_CRIT, "%s", err);
        goto out;
    }
    n->roots_inc = px_system_node_inc(n->sys);
    /* Copied before RUNNING: from then on an admin drain may take t out. */
    char listen[256];
    snprintf(listen, sizeof listen, "%s", px_transport_address(n->t));
    atomic_store(&n->phase, PXD_RUNNING);
    px_log(n->sys, PX_LOG_INFO, "ready: listen=%s admin=%s http=%s etcd=%s", listen,
           px_admin_server_url(n->admin), n->http != NULL ? pxd_httpd_url(n->http) : "off",
           cfg.etcd.n > 0 ? cfg.etcd.v[0] : "none (standalone)");
    printf("plexusd: ready node=%s listen=%s admin=%s http=%s\n", cfg.node_name, listen,
           px_admin_server_url(n->admin), n->http != NULL ? pxd_httpd_url(n->http) : "off");
    fflush(stdout);

    rc = 0;
    for (;;) {
        struct timespec tick = {0, 200 * 1000000};
        int sig = sigtimedwait(&sigs, NULL, &tick);
        if (sig == SIGHUP) {
            reload(n, argc, argv);
        } else if (sig == SIGTERM || sig == SIGINT) {
            px_log(n->sys, PX_LOG_INFO, "%s: draining (bound %u ms)",
                   sig == SIGTERM ? "SIGTERM" : "SIGINT", cfg.drain_timeout_ms);
            if (pxd_drain(n, cfg.drain_timeout_ms, drain_log, n) != PX_OK) {
                rc = 1;
            }
            break;
        } else if (atomic_load(&n->phase) == PXD_STOPPED) {
            nng_mtx_lock(n->drain_mtx); /* the drain's last steps are done */
            nng_mtx_unlock(n->drain_mtx);
            /* drained through the admin channel: let its last reply reach
             * the client (it hangs up then), bounded */
            for (int i = 0; i < 100; i++) {
                px_admin_stats as;
                px_admin_server_stats(n->admin, &as);
                if (as.clients == 0) {
                    break;
                }
                nng_msleep(20);
            }
            break;
        } else if (sig < 0 && errno != EAGAIN && errno != EINTR) {
            px_log(n->sys, PX_LOG_ERROR, "sigtimedwait: %s", strerror(errno));
        }
        pxd_roots_follow(n); /* after a fence: the roots again, as the new incarnation */
    }
    px_log(n->sys, PX_LOG_INFO, "stopped");
out:
    teardown(n);
    sodium_memzero(n->cluster_key, sizeof n->cluster_key);
    nng_cv_free(n->parts_cv);
    nng_mtx_free(n->parts_mtx);
    nng_mtx_free(n->drain_mtx);
    pxd_config_free(&cfg);
    return rc;
}
