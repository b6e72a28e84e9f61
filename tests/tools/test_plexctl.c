/*
 * test_plexctl.c — plexctl against a real three-node cluster: a real etcd
 * (pxt_etcd) and three plexusd processes on loopback, every subcommand's
 * human and JSON output, exit codes (usage, unreachable, errors), a client
 * without the cluster secret refused by the admin endpoint, /metrics read
 * over HTTP and checked by promcheck, config errors that name their
 * source, and a drain that shows progress and lets the node exit.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <jansson.h>

#include "promcheck.h"
#include "pxt_etcd.h"
#include "pxt_util.h"

static char tdir[128];

/* ---- running plexctl / plexusd to completion ---- */

typedef struct run_out {
    int rc; /* exit code, or -1 if killed at the bound */
    char out[65536];
    char err[8192];
} run_out;

/* Runs argv (NULL-ended) with the current environment, capturing stdout
 * and stderr, for at most timeout_ms (then SIGKILL). */
static void run(run_out *r, int timeout_ms, char *const argv[]) {
    memset(r, 0, sizeof *r);
    int po[2], pe[2];
    cr_assert_eq(pipe(po), 0);
    cr_assert_eq(pipe(pe), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        dup2(po[1], 1);
        dup2(pe[1], 2);
        close(po[0]), close(pe[0]), close(po[1]), close(pe[1]);
        int devnull = open("/dev/null", O_RDONLY);
        dup2(devnull, 0);
        execv(argv[0], argv);
        _exit(127);
    }
    close(po[1]), close(pe[1]);
    size_t no = 0, ne = 0;
    int64_t end = pxt_mono_ms() + timeout_ms;
    bool open_o = true, open_e = true;
    while ((open_o || open_e) && pxt_mono_ms() < end) {
        struct pollfd fds[2] = {{po[0], POLLIN, 0}, {pe[0], POLLIN, 0}};
        if (poll(fds, 2, 100) <= 0) {
            continue;
        }
        if (open_o && (fds[0].revents & (POLLIN | POLLHUP))) {
            ssize_t k = read(po[0], r->out + no, sizeof r->out - 1 - no);
            if (k <= 0) {
                open_o = false;
            } else {
                no += (size_t)k;
            }
        }
        if (open_e && (fds[1].revents & (POLLIN | POLLHUP))) {
            ssize_t k = read(pe[0], r->err + ne, sizeof r->err - 1 - ne);
            if (k <= 0) {
                open_e = false;
            } else {
                ne += (size_t)k;
            }
        }
    }
    int st = 0;
    if (open_o || open_e) {
        kill(pid, SIGKILL);
    }
    waitpid(pid, &st, 0);
    close(po[0]), close(pe[0]);
    r->rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* plexctl ARGS... (a NULL-ended list), 20 s bound. */
#define CTL(r, ...)                                                                    \
    do {                                                                               \
        char *const ctl_argv_[] = {PXT_PLEXCTL, __VA_ARGS__, NULL};                    \
        run((r), 20000, ctl_argv_);                                                    \
    } while (0)

/* ---- the cluster ---- */

typedef struct node {
    pxt_proc p;
    char name[8];
    char admin[96], http[96];
    char log[192];
} node;

static pxt_etcd etcd;
static node nodes[3];

static void write_file(const char *path, const char *text) {
    cr_assert_eq(pxt_file_write(path, text, 0600), 0, "write %s", path);
}

static void node_start(node *n, const char *name, const char *config) {
    memset(n, 0, sizeof *n);
    snprintf(n->name, sizeof n->name, "%s", name);
    snprintf(n->log, sizeof n->log, "%s/%s.log", tdir, name);
    char key[192], secret[192], cfgpath[192];
    snprintf(key, sizeof key, "%s/%s.key", tdir, name);
    snprintf(secret, sizeof secret, "%s/secret", tdir);
    snprintf(cfgpath, sizeof cfgpath, "%s/%s.yaml", tdir, name);
    write_file(cfgpath, config != NULL ? config : "node:\n  roles: [worker]\n");
    char *const argv[] = {PXT_PLEXUSD, "--config", cfgpath, "--name", (char *)name,
                          "--listen", "tcp://127.0.0.1:0", "--admin", "tcp://127.0.0.1:0",
                          "--http", "http://127.0.0.1:0", "--key-file", key,
                          "--secret-file", secret, "--etcd", etcd.url, "--cluster", "t",
                          "--lease-ttl", "3", NULL};
    cr_assert_eq(pxt_proc_spawn(&n->p, argv, n->log), 0);
    char line[512];
    int rv = pxt_proc_expect(&n->p, "plexusd: ready", 20000, line, sizeof line);
    if (rv != 0) {
        char tail[2048];
        pxt_file_tail(n->log, tail, sizeof tail);
        cr_assert_fail("node %s did not start: %d\n%s", name, rv, tail);
    }
    cr_assert(pxt_kv(line, "admin", n->admin, sizeof n->admin), "%s", line);
    cr_assert(pxt_kv(line, "http", n->http, sizeof n->http), "%s", line);
}

static const char *root_cfg = "node:\n"
                              "  roles: [front]\n"
                              "roots:\n"
                              "  - name: kv\n"
                              "    global_name: kv\n"
                              "    supervisor: one_for_one\n"
                              "    behavior: kv.shard\n"
                              "    children: 4\n"
                              "    placement: role:worker\n"
                              "  - name: echo\n"
                              "    global_name: echo\n"
                              "    behavior: echo\n";

/* Every node sees the three up (plexctl nodes --json), bounded. */
static void await_three_up(void) {
    run_out *r = malloc(sizeof *r);
    int64_t end = pxt_mono_ms() + 15000;
    int up = 0;
    while (pxt_mono_ms() < end) {
        CTL(r, "nodes", "--json");
        json_t *j = r->rc == 0 ? json_loads(r->out, 0, NULL) : NULL;
        up = 0;
        size_t i;
        json_t *e;
        json_array_foreach(j, i, e) {
            up += strcmp(json_string_value(json_object_get(e, "state")), "up") == 0;
        }
        json_decref(j);
        if (up == 3) {
            break;
        }
        usleep(100 * 1000); /* polling a condition, bounded by end */
    }
    cr_assert_eq(up, 3, "three nodes up: %s %s", r->out, r->err);
    free(r);
}

static void cluster_up_with(const char *a_cfg, const char *bc_cfg) {
    char secret[192], key[192];
    snprintf(secret, sizeof secret, "%s/secret", tdir);
    snprintf(key, sizeof key, "%s/plexctl.key", tdir);
    write_file(secret, "a test cluster secret of enough length\n");
    cr_assert_eq(pxt_etcd_start(&etcd), 0);
    setenv("PLEXUS_CLUSTER_ETCD_ENDPOINTS", etcd.url, 1);
    setenv("PLEXUS_CLUSTER_NAME", "t", 1);
    setenv("PLEXUS_CLUSTER_SECRET_FILE", secret, 1);
    setenv("PLEXCTL_KEY_FILE", key, 1);
    node_start(&nodes[1], "b", bc_cfg);
    node_start(&nodes[2], "c", bc_cfg);
    node_start(&nodes[0], "a", a_cfg); /* places its children on b and c */
    await_three_up();
}

static void cluster_up(void) { cluster_up_with(root_cfg, NULL); }

static void setup(void) {
    snprintf(tdir, sizeof tdir, "/tmp/plexctl-test.XXXXXX");
    cr_assert_not_null(mkdtemp(tdir));
    memset(&etcd, 0, sizeof etcd);
}

static void teardown(void) {
    for (int i = 0; i < 3; i++) {
        if (nodes[i].p.pid > 0 && !nodes[i].p.reaped) {
            kill(nodes[i].p.pid, SIGCONT); /* a test may have stopped it */
            kill(nodes[i].p.pid, SIGTERM);
            if (pxt_proc_wait(&nodes[i].p, 10000) != 0) {
                pxt_proc_kill(&nodes[i].p);
            }
        }
        pxt_proc_release(&nodes[i].p);
    }
    if (etcd.running) {
        pxt_etcd_stop(&etcd);
    }
    pxt_procs_kill_all();
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tdir);
    (void)system(cmd);
}

TestSuite(plexctl, .init = setup, .fini = teardown, .timeout = 180);

/* ---- helpers on outputs ---- */

static json_t *json_of(const run_out *r) {
    json_error_t je;
    json_t *j = json_loads(r->out, 0, &je);
    cr_assert_not_null(j, "not JSON (%s): %s", je.text, r->out);
    return j;
}

/* A plain HTTP GET on 127.0.0.1:port path: the status, body into out. */
static int http_get(const char *url, const char *path, char *out, size_t len) {
    int port = 0;
    cr_assert_eq(sscanf(url, "http://127.0.0.1:%d", &port), 1, "%s", url);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    char req[256];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
    cr_assert_eq(write(fd, req, (size_t)n), n);
    size_t got = 0;
    ssize_t k;
    struct pollfd pfd = {fd, POLLIN, 0};
    while (got + 1 < len && poll(&pfd, 1, 5000) > 0 && (k = read(fd, out + got, len - 1 - got)) > 0) {
        got += (size_t)k;
    }
    out[got] = '\0';
    close(fd);
    int status = 0;
    cr_assert_eq(sscanf(out, "HTTP/1.%*d %d", &status), 1, "%s", out);
    char *body = strstr(out, "\r\n\r\n");
    if (body != NULL) {
        memmove(out, body + 4, strlen(body + 4) + 1);
    }
    return status;
}

/* ---- tests ---- */

Test(plexctl, usage_errors_exit_2_and_every_subcommand_has_help) {
    run_out *r = malloc(sizeof *r);
    CTL(r, "help");
    cr_assert_eq(r->rc, 0);
    cr_assert(strstr(r->out, "Exit codes") != NULL);
    const char *cmds[] = {"nodes", "why", "actors", "top", "tree", "spawn", "send", "ask",
                          "stop", "watch", "stats", "drain", "names", "types", "info"};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        CTL(r, (char *)cmds[i], "--help");
        cr_assert_eq(r->rc, 0, "%s --help", cmds[i]);
        cr_assert(strstr(r->out, "Examples:") != NULL, "%s --help: %s", cmds[i], r->out);
        cr_assert(strstr(r->out, cmds[i]) != NULL);
    }
    char *const none[] = {PXT_PLEXCTL, NULL};
    run(r, 5000, none);
    cr_assert_eq(r->rc, 2);
    CTL(r, "frobnicate");
    cr_assert_eq(r->rc, 2);
    cr_assert(strstr(r->err, "unknown command") != NULL, "%s", r->err);
    CTL(r, "nodes", "--bogus");
    cr_assert_eq(r->rc, 2);
    CTL(r, "why");
    cr_assert_eq(r->rc, 2, "why without a node");
    CTL(r, "ask", "x", "plexus.kv.Ping", "{not json");
    cr_assert_eq(r->rc, 2);
    cr_assert(strstr(r->err, "not JSON") != NULL, "%s", r->err);
    CTL(r, "stats", "--timeout", "soon");
    cr_assert_eq(r->rc, 2);
    unsetenv("PLEXUS_CLUSTER_SECRET_FILE");
    CTL(r, "names", "--admin", "tcp://127.0.0.1:1");
    cr_assert_eq(r->rc, 2, "no secret file: %s", r->err);
    cr_assert(strstr(r->err, "secret") != NULL);
    free(r);
}

Test(plexctl, unreachable_etcd_or_node_exits_3) {
    run_out *r = malloc(sizeof *r);
    char secret[192], key[192], ep[64], adm[64];
    snprintf(secret, sizeof secret, "%s/secret", tdir);
    snprintf(key, sizeof key, "%s/k.key", tdir);
    write_file(secret, "a test cluster secret of enough length\n");
    setenv("PLEXUS_CLUSTER_SECRET_FILE", secret, 1);
    setenv("PLEXCTL_KEY_FILE", key, 1);
    int port = pxt_free_port();
    snprintf(ep, sizeof ep, "http://127.0.0.1:%d", port);
    snprintf(adm, sizeof adm, "tcp://127.0.0.1:%d", port);
    CTL(r, "nodes", "--endpoints", ep, "--timeout", "2000");
    cr_assert_eq(r->rc, 3, "rc %d: %s", r->rc, r->err);
    CTL(r, "names", "--admin", adm);
    cr_assert_eq(r->rc, 3, "rc %d: %s", r->rc, r->err);
    free(r);
}

Test(plexctl, a_three_node_cluster_answers_every_subcommand) {
    cluster_up();
    run_out *r = malloc(sizeof *r);

    /* nodes: human and JSON */
    CTL(r, "nodes");
    cr_assert_eq(r->rc, 0, "%s", r->err);
    cr_assert(strstr(r->out, "NAME") && strstr(r->out, "a ") && strstr(r->out, "b ") &&
              strstr(r->out, "c "), "%s", r->out);
    cr_assert(strstr(r->out, "front") != NULL, "roles shown: %s", r->out);

    /* info, types */
    CTL(r, "info", "--node", "a", "--json");
    cr_assert_eq(r->rc, 0, "%s", r->err);
    json_t *j = json_of(r);
    cr_assert_str_eq(json_string_value(json_object_get(j, "node")), "a");
    cr_assert(json_is_true(json_object_get(j, "ready")));
    json_decref(j);
    CTL(r, "types");
    cr_assert_eq(r->rc, 0, "%s", r->err);
    cr_assert(strstr(r->out, "kv.shard") && strstr(r->out, "plexus.kv.Put"), "%s", r->out);

    /* tree: the kv supervisor on a, its four children placed on b and c */
    CTL(r, "tree");
    cr_assert_eq(r->rc, 0, "%s", r->err);
    cr_assert(strstr(r->out, "node a") && strstr(r->out, "node b") && strstr(r->out, "node c"));
    for (int i = 0; i < 4; i++) {
        char id[32];
        snprintf(id, sizeof id, "kv.shard.%d", i);
        cr_assert(strstr(r->out, id) != NULL, "%s in %s", id, r->out);
    }
    cr_assert(strstr(r->out, "on=b") && strstr(r->out, "on=c"), "%s", r->out);
    CTL(r, "tree", "--node", "a", "--json");
    cr_assert_eq(r->rc, 0);
    j = json_of(r);
    cr_assert_not_null(json_object_get(j, "a"));
    json_decref(j);

    /* actors / top */
    CTL(r, "actors", "--node", "b");
    cr_assert_eq(r->rc, 0, "%s", r->err);
    cr_assert(strstr(r->out, "kv.shard") != NULL, "hosted shards on b: %s", r->out);
    CTL(r, "top", "--limit", "2", "--json");
    cr_assert_eq(r->rc, 0, "%s", r->err);
    j = json_of(r);
    cr_assert_eq(json_object_size(j), 3);
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v) {
        cr_assert_leq(json_array_size(json_object_get(v, "actors")), 2);
    }
    json_decref(j);

    /* spawn on another node with a global name, ask it, stop it */
    CTL(r, "spawn", "kv.shard", "--node", "b", "--global", "store", "--json");
    cr_assert_eq(r->rc, 0, "%s", r->err);
    j = json_of(r);
    cr_assert_str_eq(json_string_value(json_object_get(j, "node")), "b");
    char ref[64];
    snprintf(ref, sizeof ref, "%s", json_string_value(json_object_get(j, "ref")));
    json_decref(j);
    CTL(r, "ask", "store", "plexus.kv.Put", "{\"key\":\"k1\",\"value\":\"aGVsbG8=\"}", "--node", "c");
    cr_assert_eq(r->rc, 0, "ask through c: %s", r->err);
    cr_assert(strstr(r->out, "plexus.kv.Ack") != NULL, "%s", r->out);
    CTL(r, "ask", "store", "plexus.kv.Get", "{\"key\":\"k1\"}", "--json");
    cr_assert_eq(r->rc, 0, "%s", r->err);
    j = json_of(r);
    json_t *msg = json_object_get(json_object_get(j, "reply"), "message");
    cr_assert(json_is_true(json_object_get(msg, "found")), "%s", r->out);
    cr_assert_str_eq(json_string_value(json_object_get(msg, "value")), "aGVsbG8=");
    cr_assert_str_eq(json_string_value(json_object_get(msg, "node")), "b");
    json_decref(j);
    CTL(r, "send", "store", "plexus.kv.Del", "{\"key\":\"k1\"}");
    cr_assert_eq(r->rc, 0, "%s", r->err);
    cr_assert(strstr(r->out, "sent") != NULL);

    /* errors: unknown actor, unknown type, a bad field */
    CTL(r, "ask", "nobody.here", "plexus.kv.Get", "{}");
    cr_assert_eq(r->rc, 1);
    cr_assert(strstr(r->err, "no actor") != NULL, "%s", r->err);
    CTL(r, "ask", "store", "plexus.kv.Nope", "{}");
    cr_assert_eq(r->rc, 1);
    cr_assert(strstr(r->err, "unknown message type") != NULL, "%s", r->err);
    CTL(r, "ask", "store", "plexus.kv.Get", "{\"kee\":\"x\"}");
    cr_assert_eq(r->rc, 1);
    cr_assert(strstr(r->err, "kee") != NULL, "the field is named: %s", r->err);
    CTL(r, "spawn", "no.such.behavior", "--node", "a");
    cr_assert_eq(r->rc, 1);
    cr_assert(strstr(r->err, "no behavior") != NULL, "%s", r->err);

    /* names */
    CTL(r, "names");
    cr_assert_eq(r->rc, 0, "%s", r->err);
    cr_assert(strstr(r->out, "store") && strstr(r->out, "echo") && strstr(r->out, "kv"), "%s",
              r->out);

    CTL(r, "stop", ref, "--node", "a");
    cr_assert_eq(r->rc, 0, "%s", r->err);
    CTL(r, "ask", ref, "plexus.kv.Get", "{\"key\":\"k1\"}", "--timeout", "1500");
    cr_assert_eq(r->rc, 1, "a stopped actor: %s", r->out);

    /* stats, why */
    CTL(r, "stats", "--json");
    cr_assert_eq(r->rc, 0, "%s", r->err);
    j = json_of(r);
    cr_assert_geq(json_integer_value(json_object_get(json_object_get(json_object_get(j, "a"),
                                                                     "system"), "live_actors")), 2);
    json_decref(j);
    CTL(r, "stats", "--node", "b");
    cr_assert_eq(r->rc, 0);
    cr_assert(strstr(r->out, "actors") && strstr(r->out, "links"), "%s", r->out);
    CTL(r, "why", "b", "--node", "a");
    cr_assert_eq(r->rc, 0, "%s", r->err);
    cr_assert(strstr(r->out, "up") != NULL, "%s", r->out);
    CTL(r, "why", "zz", "--node", "a");
    cr_assert_eq(r->rc, 1, "an unknown node");

    /* metrics and health over HTTP */
    static char body[262144];
    cr_assert_eq(http_get(nodes[0].http, "/healthz", body, sizeof body), 200);
    cr_assert_eq(http_get(nodes[0].http, "/readyz", body, sizeof body), 200, "%s", body);
    cr_assert_eq(http_get(nodes[0].http, "/metrics", body, sizeof body), 200);
    char err[256] = "";
    int samples = promcheck(body, err, sizeof err);
    cr_assert_gt(samples, 10, "promcheck: %s", err);
    /* a node in a cluster has talked to etcd and to its peers on the
     * control and normal lanes */
    cr_assert_gt(promcheck_value(body, "plexus_etcd_requests_total"), 0.0);
    cr_assert_gt(promcheck_value(body, "plexus_etcd_request_duration_seconds_count"), 0.0);
    cr_assert_gt(promcheck_value(body, "plexus_etcd_request_duration_seconds_sum"), 0.0);
    cr_assert_geq(promcheck_value(body, "plexus_etcd_errors_total"), 0.0);
    cr_assert_eq(promcheck_value(body, "plexus_cluster_registered"), 1.0);
    cr_assert_eq(promcheck_value(body, "plexus_cluster_holding"), 0.0, "etcd answers");
    cr_assert_gt(promcheck_value(
                     body, "plexus_transport_lane_messages_total{lane=\"control\",direction=\"in\"}"),
                 0.0);
    cr_assert_gt(promcheck_value(
                     body, "plexus_transport_lane_messages_total{lane=\"normal\",direction=\"out\"}"),
                 0.0);
    cr_assert_gt(promcheck_value(
                     body, "plexus_transport_lane_bytes_total{lane=\"control\",direction=\"out\"}"),
                 0.0);
    cr_assert_geq(promcheck_value(
                      body, "plexus_transport_lane_bytes_total{lane=\"bulk\",direction=\"in\"}"),
                  0.0);

    /* a client without the cluster secret is refused, and counted */
    char bad[192];
    snprintf(bad, sizeof bad, "%s/wrong-secret", tdir);
    write_file(bad, "another secret entirely, not the cluster's\n");
    CTL(r, "names", "--secret-file", bad, "--admin", nodes[0].admin);
    cr_assert_eq(r->rc, 1, "rc %d: %s", r->rc, r->err);
    CTL(r, "stats", "--node", "a", "--json");
    j = json_of(r);
    cr_assert_geq(json_integer_value(json_object_get(
                      json_object_get(json_object_get(j, "a"), "admin"), "refused")), 1, "%s", r->out);
    json_decref(j);
    free(r);
}

Test(plexctl, watch_streams_failures_and_drain_shows_progress_and_stops_the_node) {
    cluster_up();
    run_out *r = malloc(sizeof *r);
    /* a watcher process for one failure event */
    char secret[192];
    snprintf(secret, sizeof secret, "%s/secret", tdir);
    pxt_proc w;
    char *const wargv[] = {PXT_PLEXCTL, "watch", "--failures", "--count", "1", "--for", "15000",
                           "--json", "--node", "a", NULL};
    char wlog[192];
    snprintf(wlog, sizeof wlog, "%s/watch.log", tdir);
    cr_assert_eq(pxt_proc_spawn(&w, wargv, wlog), 0);
    /* the watch is open once the node counts its client */
    int64_t end = pxt_mono_ms() + 10000;
    bool open = false;
    while (!open && pxt_mono_ms() < end) {
        CTL(r, "stats", "--node", "a", "--json");
        json_t *j = r->rc == 0 ? json_loads(r->out, 0, NULL) : NULL;
        open = json_integer_value(json_object_get(
                   json_object_get(json_object_get(j, "a"), "admin"), "clients")) >= 2;
        json_decref(j);
        if (!open) {
            usleep(100 * 1000);
        }
    }
    cr_assert(open, "the watcher connected");
    CTL(r, "ask", "echo", "plexus.kv.Ping", "{\"text\":\"fail\"}", "--timeout", "1000");
    cr_assert_eq(r->rc, 1, "the failing echo does not answer");
    char line[1024];
    cr_assert_eq(pxt_proc_expect(&w, "{", 10000, line, sizeof line), 0, "an event line");
    cr_assert(strstr(line, "\"failure\"") && strstr(line, "echo"), "%s", line);
    cr_assert_eq(pxt_proc_wait(&w, 10000), 0);
    cr_assert(WIFEXITED(w.status) && WEXITSTATUS(w.status) == 0, "%s", pxt_status_str(w.status));
    pxt_proc_release(&w);
    /* echo was restarted by its root policy or stopped; either way the node serves */
    CTL(r, "ask", "store-none", "plexus.kv.Get", "{}");
    cr_assert_eq(r->rc, 1);

    /* drain c: progress lines, exit 0, and c leaves */
    CTL(r, "drain", "c");
    cr_assert_eq(r->rc, 0, "%s %s", r->out, r->err);
    cr_assert(strstr(r->out, "left") && strstr(r->out, "drained"), "%s", r->out);
    cr_assert_eq(pxt_proc_wait(&nodes[2].p, 15000), 0, "c exits after its drain");
    cr_assert(WIFEXITED(nodes[2].p.status) && WEXITSTATUS(nodes[2].p.status) == 0, "%s",
              pxt_status_str(nodes[2].p.status));
    CTL(r, "nodes", "--json");
    cr_assert_eq(r->rc, 0, "%s", r->err);
    json_t *j = json_of(r);
    size_t i;
    json_t *e;
    bool c_left = false;
    json_array_foreach(j, i, e) {
        if (strcmp(json_string_value(json_object_get(e, "name")), "c") == 0) {
            c_left = strcmp(json_string_value(json_object_get(e, "state")), "left") == 0;
        }
    }
    cr_assert(c_left, "%s", r->out);
    json_decref(j);
    /* the kv children that ran on c were placed again, on b */
    end = pxt_mono_ms() + 10000;
    bool moved = false;
    while (!moved && pxt_mono_ms() < end) {
        CTL(r, "tree", "--node", "a");
        moved = r->rc == 0 && strstr(r->out, "on=c") == NULL && strstr(r->out, "on=b") != NULL;
        if (!moved) {
            usleep(100 * 1000);
        }
    }
    cr_assert(moved, "%s", r->out);
    free(r);
}

/* ---- SIGTERM drain under a request/reply workload ---- */

/* a supervises one echo placed on b or c under the global name svc.0, and
 * runs a load.client asking svc.0 (looked up per request, so it follows
 * the child when it moves). */
static const char *load_cfg = "node:\n"
                              "  roles: [front]\n"
                              "roots:\n"
                              "  - name: svc\n"
                              "    global_name: svc\n"
                              "    supervisor: one_for_one\n"
                              "    behavior: echo\n"
                              "    placement: role:echo\n"
                              "  - name: load\n"
                              "    behavior: load.client\n"
                              "    arg_type: plexus.kv.LoadSpec\n"
                              "    arg: '{\"target\": \"svc.0\", \"rate\": 400, "
                              "\"timeoutMs\": 8000}'\n";

typedef struct load_stats {
    long long sent, ok, failed, lost, wrong, refused, in_flight;
    char last_node[16];
} load_stats;

/* load's counts, asked through plexctl (so also plexctl ask --json). */
static load_stats stats_of_load(run_out *r) {
    CTL(r, "ask", "load", "plexus.kv.LoadStatsRequest", "{}", "--node", "a", "--json");
    cr_assert_eq(r->rc, 0, "%s %s", r->out, r->err);
    json_t *j = json_of(r);
    json_t *m = json_object_get(json_object_get(j, "reply"), "message");
    cr_assert_not_null(m, "%s", r->out);
    load_stats s;
    memset(&s, 0, sizeof s);
    /* proto3 JSON: uint64 as strings, zero values left out */
    const char *names[] = {"sent", "ok", "failed", "lost", "wrong", "refused", "inFlight"};
    long long *slots[] = {&s.sent, &s.ok, &s.failed, &s.lost, &s.wrong, &s.refused, &s.in_flight};
    for (size_t i = 0; i < 7; i++) {
        json_t *v = json_object_get(m, names[i]);
        *slots[i] = v != NULL ? atoll(json_string_value(v)) : 0;
    }
    snprintf(s.last_node, sizeof s.last_node, "%s",
             json_string_value(json_object_get(m, "lastNode")) ?: "");
    json_decref(j);
    return s;
}

Test(plexctl, a_sigterm_drain_loses_no_request_of_a_running_workload) {
    cluster_up_with(load_cfg, "node:\n  roles: [echo]\n");
    run_out *r = malloc(sizeof *r);
    load_stats s = {0};
    int64_t end = pxt_mono_ms() + 15000;
    while (pxt_mono_ms() < end && (s = stats_of_load(r)).ok < 200) {
        usleep(100 * 1000); /* polling a condition, bounded by end */
    }
    cr_assert_geq(s.ok, 200, "the workload runs: ok %lld", s.ok);
    node *host = strcmp(s.last_node, "b") == 0 ? &nodes[1] : &nodes[2];
    node *other = host == &nodes[1] ? &nodes[2] : &nodes[1];
    cr_assert_str_eq(s.last_node, host->name);

    /* SIGTERM the node serving the workload: it drains and exits 0 */
    int64_t t0 = pxt_mono_ms();
    cr_assert_eq(kill(host->p.pid, SIGTERM), 0);
    cr_assert_eq(pxt_proc_wait(&host->p, 20000), 0, "%s exits after its drain", host->name);
    cr_assert(WIFEXITED(host->p.status) && WEXITSTATUS(host->p.status) == 0, "%s",
              pxt_status_str(host->p.status));
    long long drained_ms = (long long)(pxt_mono_ms() - t0);

    /* the supervisor on a placed the echo again on the other node, and
     * the workload goes on there */
    load_stats after = s;
    end = pxt_mono_ms() + 15000;
    while (pxt_mono_ms() < end) {
        after = stats_of_load(r);
        if (strcmp(after.last_node, other->name) == 0 && after.ok >= s.ok + 400) {
            break;
        }
        usleep(100 * 1000);
    }
    cr_assert_str_eq(after.last_node, other->name, "answers come from %s now", other->name);
    cr_assert_geq(after.ok, s.ok + 400);
    /* every request sent ended in an answer or an error, none in silence */
    cr_assert_eq(after.lost, 0, "requests lost (timed out without an answer or an error): %lld",
                 after.lost);
    cr_assert_eq(after.wrong, 0);
    cr_assert_eq(after.sent, after.ok + after.failed + after.lost + after.wrong + after.in_flight,
                 "sent %lld = ok %lld + failed %lld + in flight %lld", after.sent, after.ok,
                 after.failed, after.in_flight);
    fprintf(stderr,
            "drain under load: %s drained in %lld ms; sent %lld ok %lld failed %lld lost %lld "
            "refused %lld (no target while the child moved)\n",
            host->name, drained_ms, after.sent, after.ok, after.failed, after.lost,
            after.refused);
    free(r);
}

/* A remote spawn that waits (its target node is stopped, SIGSTOP) holds
 * the mesh, not the node's parts lock: /metrics and /readyz on the
 * spawning node answer at once meanwhile; a drain of that node waits for
 * the spawn to let go of the mesh, then finishes; the spawn ends with its
 * reason (c is continued only after it). */
Test(plexctl, a_waiting_remote_spawn_does_not_stall_metrics_readiness_or_a_drain) {
    cluster_up_with(NULL, NULL);
    node *a = &nodes[0], *c = &nodes[2];
    cr_assert_eq(kill(c->p.pid, SIGSTOP), 0); /* teardown continues it */
    char log[192];
    snprintf(log, sizeof log, "%s/spawn.log", tdir);
    char *const argv[] = {PXT_PLEXCTL, "spawn", "echo", "--node", "a", "--on", "c", NULL};
    pxt_proc sp;
    int64_t t0 = pxt_mono_ms();
    cr_assert_eq(pxt_proc_spawn(&sp, argv, log), 0);
    /* For 1 s (the spawn waits until c is seen down, ~3 s with TTL 3 s, or
     * its own bound of 5 s), GETs are timed; those sent while the spawn
     * is still pending are counted. */
    char body[65536];
    int gets = 0, pending = 0;
    int64_t slowest = 0;
    while (pxt_mono_ms() < t0 + 1000) {
        int64_t g0 = pxt_mono_ms();
        cr_assert_eq(http_get(a->http, gets % 2 ? "/readyz" : "/metrics", body, sizeof body),
                     200, "%s", body);
        int64_t took = pxt_mono_ms() - g0;
        slowest = took > slowest ? took : slowest;
        gets++;
        pending += pxt_proc_wait(&sp, 0) != 0;
        usleep(50 * 1000); /* paces the GETs; each one is timed, nothing awaited */
    }
    cr_assert_lt(slowest, 1000, "a GET took %lld ms while the spawn waited", (long long)slowest);
    cr_assert_geq(pending, 5, "only %d of %d GETs while the spawn was pending (%s)", pending,
                  gets, pxt_status_str(sp.status));
    run_out *r = malloc(sizeof *r);
    CTL(r, "drain", "a");
    int64_t drained = pxt_mono_ms() - t0;
    cr_assert_eq(r->rc, 0, "drain: %s %s", r->out, r->err);
    cr_assert_eq(pxt_proc_wait(&sp, 0), 0, "the spawn ended before the drain did");
    cr_assert_eq(pxt_proc_wait(&a->p, 20000), 0, "a exits after its drain");
    cr_assert(WIFEXITED(a->p.status) && WEXITSTATUS(a->p.status) == 0, "%s",
              pxt_status_str(a->p.status));
    char tail[2048];
    pxt_file_tail(log, tail, sizeof tail);
    cr_assert(WIFEXITED(sp.status) && WEXITSTATUS(sp.status) != 0 && strstr(tail, "spawn") != NULL,
              "the spawn fails with its reason (%s): %s", pxt_status_str(sp.status), tail);
    fprintf(stderr,
            "waiting remote spawn: %d GETs (%d while it waited), slowest %lld ms; the drain of a "
            "ended after %lld ms; the spawn: %s",
            gets, pending, (long long)slowest, (long long)drained, tail);
    free(r);
    pxt_proc_release(&sp);
}

/* A standalone node (no etcd) with a plugin, a root with a start
 * argument, and SIGHUP: the plugin's behavior answers, the load client
 * drives it, a reload changes the log level, and a root whose argument
 * does not fit its type stops the node at start with the root's line. */
Test(plexctl, a_standalone_node_runs_a_plugin_and_a_root_with_a_start_argument) {
    char cfg[192], secret[192], key[192], log[192];
    snprintf(cfg, sizeof cfg, "%s/solo.yaml", tdir);
    snprintf(secret, sizeof secret, "%s/secret", tdir);
    snprintf(key, sizeof key, "%s/solo.key", tdir);
    snprintf(log, sizeof log, "%s/solo.log", tdir);
    write_file(secret, "a test cluster secret of enough length\n");
    setenv("PLEXUS_CLUSTER_SECRET_FILE", secret, 1);
    static const char *solo = "log:\n"
                              "  level: info\n"
                              "roots:\n"
                              "  - name: hello\n"
                              "    behavior: plugin.hello\n"
                              "  - name: load\n"
                              "    behavior: load.client\n"
                              "    arg_type: plexus.kv.LoadSpec\n"
                              "    arg: '{\"target\": \"hello\", \"rate\": 300}'\n";
    write_file(cfg, solo);
    node *n = &nodes[0];
    memset(n, 0, sizeof *n);
    snprintf(n->name, sizeof n->name, "a");
    char *const argv[] = {PXT_PLEXUSD, "--config", cfg, "--name", "a", "--load", PXT_PLUGIN,
                          "--listen", "tcp://127.0.0.1:0", "--admin", "tcp://127.0.0.1:0",
                          "--http", "", "--key-file", key, "--secret-file", secret, NULL};
    cr_assert_eq(pxt_proc_spawn(&n->p, argv, log), 0);
    char line[512];
    int rv = pxt_proc_expect(&n->p, "plexusd: ready", 20000, line, sizeof line);
    char tail[2048];
    if (rv != 0) {
        pxt_file_tail(log, tail, sizeof tail);
        cr_assert_fail("the node did not start: %d\n%s", rv, tail);
    }
    cr_assert(pxt_kv(line, "admin", n->admin, sizeof n->admin), "%s", line);
    run_out *r = malloc(sizeof *r);
    CTL(r, "ask", "hello", "plexus.kv.Ping", "{\"text\":\"hi\"}", "--admin", n->admin, "--json");
    cr_assert_eq(r->rc, 0, "%s %s", r->out, r->err);
    cr_assert(strstr(r->out, "\"plugin.hello@a\"") != NULL && strstr(r->out, "\"hi\"") != NULL,
              "%s", r->out);
    /* the load client, started with its LoadSpec, is answered by the plugin */
    int64_t end = pxt_mono_ms() + 10000;
    bool going = false;
    while (!going && pxt_mono_ms() < end) {
        CTL(r, "ask", "load", "plexus.kv.LoadStatsRequest", "{}", "--admin", n->admin, "--json");
        json_t *j = r->rc == 0 ? json_loads(r->out, 0, NULL) : NULL;
        json_t *ok = json_object_get(json_object_get(json_object_get(j, "reply"), "message"), "ok");
        going = ok != NULL && atoll(json_string_value(ok)) >= 100;
        json_decref(j);
        if (!going) {
            usleep(100 * 1000); /* polling a condition, bounded by end */
        }
    }
    cr_assert(going, "%s", r->out);
    /* SIGHUP: the new log level is applied, the roots' change waits */
    write_file(cfg, "log:\n  level: debug\nroots: []\n");
    cr_assert_eq(kill(n->p.pid, SIGHUP), 0);
    end = pxt_mono_ms() + 10000;
    bool reloaded = false;
    while (!reloaded && pxt_mono_ms() < end) {
        pxt_file_tail(log, tail, sizeof tail);
        reloaded = strstr(tail, "config reloaded") != NULL;
        if (!reloaded) {
            usleep(50 * 1000);
        }
    }
    cr_assert(reloaded, "%s", tail);
    cr_assert(strstr(tail, "log.level info -> debug") != NULL, "%s", tail);
    cr_assert(strstr(tail, "not applied until a restart: roots") != NULL, "%s", tail);
    CTL(r, "info", "--admin", n->admin, "--json");
    cr_assert_eq(r->rc, 0, "%s", r->err);
    cr_assert_eq(kill(n->p.pid, SIGTERM), 0);
    cr_assert_eq(pxt_proc_wait(&n->p, 15000), 0);
    cr_assert(WIFEXITED(n->p.status) && WEXITSTATUS(n->p.status) == 0, "%s",
              pxt_status_str(n->p.status));
    pxt_file_tail(log, tail, sizeof tail);
    cr_assert(strstr(tail, "load.client stopped") != NULL && strstr(tail, "lost=0") != NULL,
              "%s", tail);
    pxt_proc_release(&n->p);

    /* a start argument that does not fit its type: the node does not start */
    write_file(cfg, "roots:\n"
                    "  - name: load\n"
                    "    behavior: load.client\n"
                    "    arg_type: plexus.kv.LoadSpec\n"
                    "    arg: '{\"target\": \"x\", \"speed\": 3}'\n");
    char *const a2[] = {PXT_PLEXUSD, "--config", cfg, "--name", "a", "--listen",
                        "tcp://127.0.0.1:0", "--admin", "tcp://127.0.0.1:0", "--http", "",
                        "--key-file", key, "--secret-file", secret, "--log-format", "json", NULL};
    run(r, 15000, a2);
    cr_assert_eq(r->rc, 1, "%s", r->err);
    char where[256];
    snprintf(where, sizeof where, "(%s:2): arg: plexus.kv.LoadSpec: speed: no such field", cfg);
    /* --log-format json: every line is one JSON object; the CRIT one says why */
    bool found = false;
    int lines = 0;
    for (char *save = NULL, *ln = strtok_r(r->err, "\n", &save); ln != NULL;
         ln = strtok_r(NULL, "\n", &save), lines++) {
        json_t *j = json_loads(ln, 0, NULL);
        cr_assert_not_null(j, "not a JSON line: %s", ln);
        cr_assert(json_is_string(json_object_get(j, "level")) &&
                      json_is_string(json_object_get(j, "msg")) &&
                      json_is_string(json_object_get(j, "ts")),
                  "%s", ln);
        const char *msg = json_string_value(json_object_get(j, "msg"));
        if (strcmp(json_string_value(json_object_get(j, "level")), "CRIT") == 0 &&
            strstr(msg, "roots[0]") != NULL && strstr(msg, where) != NULL) {
            found = true;
        }
        json_decref(j);
    }
    cr_assert_gt(lines, 2);
    cr_assert(found, "no CRIT line naming roots[0] and %s", where);
    free(r);
}

Test(plexctl, the_readme_config_reference_is_what_plexusd_prints) {
    run_out *r = malloc(sizeof *r);
    char *const a[] = {PXT_PLEXUSD, "--config-reference", NULL};
    run(r, 10000, a);
    cr_assert_eq(r->rc, 0);
    FILE *f = fopen(PXT_README, "r");
    cr_assert_not_null(f);
    static char readme[1 << 20];
    size_t n = fread(readme, 1, sizeof readme - 1, f);
    fclose(f);
    readme[n] = '\0';
    const char *b = strstr(readme, "<!-- config-reference:begin -->\n");
    const char *e = strstr(readme, "<!-- config-reference:end -->");
    cr_assert(b != NULL && e != NULL && e > b, "README has the markers");
    b += strlen("<!-- config-reference:begin -->\n");
    cr_assert_eq((size_t)(e - b), strlen(r->out), "README's reference differs from "
                 "`plexusd --config-reference`: paste it again");
    cr_assert(strncmp(b, r->out, (size_t)(e - b)) == 0, "README's reference differs");
    free(r);
}

Test(plexctl, plexusd_config_errors_name_their_source) {
    run_out *r = malloc(sizeof *r);
    char cfg[192], secret[192];
    snprintf(cfg, sizeof cfg, "%s/bad.yaml", tdir);
    snprintf(secret, sizeof secret, "%s/secret", tdir);
    write_file(secret, "a test cluster secret of enough length\n");
    write_file(cfg, "node:\n  name: a\n  workers: lots\ncluster:\n  secret_file: x\n");
    char *const a1[] = {PXT_PLEXUSD, "--config", cfg, NULL};
    run(r, 10000, a1);
    cr_assert_eq(r->rc, 2, "%s", r->err);
    cr_assert(strstr(r->err, "bad.yaml:3") != NULL && strstr(r->err, "node.workers"), "%s", r->err);
    char *const a2[] = {PXT_PLEXUSD, "--name", "a", "--secret-file", secret, "--workers", "-3",
                        NULL};
    run(r, 10000, a2);
    cr_assert_eq(r->rc, 2);
    cr_assert(strstr(r->err, "--workers") != NULL, "%s", r->err);
    setenv("PLEXUS_NODE_WORKERS", "many", 1);
    char *const a3[] = {PXT_PLEXUSD, "--name", "a", "--secret-file", secret, "--check-config",
                        NULL};
    run(r, 10000, a3);
    unsetenv("PLEXUS_NODE_WORKERS");
    cr_assert_eq(r->rc, 2);
    cr_assert(strstr(r->err, "PLEXUS_NODE_WORKERS") != NULL, "%s", r->err);
    setenv("PLEXUS_CLUSTER_ETCD_USER", "root", 1);
    setenv("PLEXUS_CLUSTER_ETCD_PASSWORD", "hunter2", 1);
    run(r, 10000, a3);
    unsetenv("PLEXUS_CLUSTER_ETCD_USER");
    unsetenv("PLEXUS_CLUSTER_ETCD_PASSWORD");
    cr_assert_eq(r->rc, 0, "%s", r->err);
    cr_assert(strstr(r->out, "hunter2") == NULL, "the password is masked: %s", r->out);
    cr_assert(strstr(r->out, "config ok") != NULL);
    char *const a4[] = {PXT_PLEXUSD, "--name", "a", "--secret-file", secret, "--load",
                        "/nonexistent/plugin.so", "--check-config", NULL};
    run(r, 10000, a4);
    cr_assert_eq(r->rc, 2);
    cr_assert(strstr(r->err, "/nonexistent/plugin.so") != NULL, "%s", r->err);
    /* a file the config names that cannot be read: its key's source too */
    char *const a5[] = {PXT_PLEXUSD, "--name", "a", "--secret-file", "/nonexistent/secret",
                        "--check-config", NULL};
    run(r, 10000, a5);
    cr_assert_eq(r->rc, 2);
    cr_assert(strstr(r->err, "flag --secret-file: cluster.secret_file /nonexistent/secret") !=
                  NULL,
              "%s", r->err);
    free(r);
}
