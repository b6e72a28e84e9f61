/* Tests for tools/plexusd/config.h: defaults, the file, the environment
 * and flags with their precedence, every error naming its source, lists,
 * roots, the dump, the reference, reload. Files live in a mkdtemp
 * directory made and removed around each test; the environment is a fake
 * envp array, never the real one. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <plexus/transport.h>

#include "config.h"

static char dir[64];
static char made[16][128]; /* files written, removed in fini */
static size_t n_made;
static char pubkey[PX_PUBKEY_B64_LEN]; /* a well-formed key */

static void setup(void) {
    snprintf(dir, sizeof dir, "/tmp/pxcfg-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    n_made = 0;
    uint8_t pk[PX_PUBKEY_BYTES];
    for (size_t i = 0; i < sizeof pk; i++) {
        pk[i] = (uint8_t)(i * 7 + 1);
    }
    px_pubkey_format(pk, pubkey);
}

static void teardown(void) {
    for (size_t i = 0; i < n_made; i++) {
        unlink(made[i]);
    }
    rmdir(dir);
}

TestSuite(tools_config, .init = setup, .fini = teardown, .timeout = 30);

/* Writes dir/name with text; returns its path (static per name slot). */
static const char *write_file(const char *name, const char *text) {
    cr_assert_lt(n_made, 16);
    char *path = made[n_made];
    snprintf(path, sizeof made[0], "%s/%s", dir, name);
    bool again = false;
    for (size_t i = 0; i < n_made; i++) {
        if (strcmp(made[i], path) == 0) {
            path = made[i];
            again = true;
        }
    }
    if (!again) {
        n_made++;
    }
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "fopen %s", path);
    cr_assert_eq(fputs(text, f) >= 0, true);
    cr_assert_eq(fclose(f), 0);
    return path;
}

/* The argc of av, a NULL-ended argv array. */
#define ARGC(av) ((int)(sizeof(av) / sizeof((av)[0])) - 1)
static char *const no_env[] = {NULL};

/* The minimum a load needs besides the file. */
#define REQUIRED "node:\n  name: a\ncluster:\n  secret_file: s.key\n"

typedef struct loaded {
    pxd_config c;
    px_err rc;
    char err[4096];
} loaded;

static void load_with(loaded *l, int argc, char *const *argv, char *const *envp) {
    pxd_config_init(&l->c);
    l->rc = pxd_config_load(&l->c, argc, argv, envp, NULL, l->err, sizeof l->err);
}

/* Loads `file_text` (written as dir/plexusd.yaml) with extra args. */
static void load_file(loaded *l, const char *file_text, char *const *envp) {
    const char *p = write_file("plexusd.yaml", file_text);
    char *const av[] = {"plexusd", "--config", (char *)p, NULL};
    load_with(l, 3, av, envp);
}

static size_t count_lines(const char *s) {
    size_t n = 0;
    for (; *s; s++) {
        n += *s == '\n';
    }
    return n;
}

#define assert_err_has(l, needle)                                                              \
    cr_assert_not_null(strstr((l)->err, (needle)), "error text lacks [%s]:\n%s", (needle),     \
                       (l)->err)

Test(tools_config, init_fills_every_documented_default) {
    pxd_config c;
    pxd_config_init(&c);
    cr_assert_null(c.node_name);
    cr_assert_str_eq(c.listen, "tcp://127.0.0.1:7100");
    cr_assert_str_eq(c.advertise, "tcp://127.0.0.1:7100");
    cr_assert_str_eq(c.key_file, "plexus-node.key");
    cr_assert_eq(c.roles.n, 0);
    cr_assert_eq(c.workers, 0);
    cr_assert_str_eq(c.cluster, "plexus");
    cr_assert_null(c.secret_file);
    cr_assert_eq(c.etcd.n, 0);
    cr_assert_eq(c.lease_ttl_s, 5);
    cr_assert_null(c.etcd_password);
    cr_assert_eq(c.max_msg, 16u << 20);
    cr_assert_eq(c.plaintext, false);
    cr_assert_eq(c.mailbox_capacity, 0);
    cr_assert_eq(c.mailbox_policy, PX_OVERFLOW_ERROR);
    cr_assert_eq(c.max_actors, 1u << 24);
    cr_assert_str_eq(c.http_listen, "http://127.0.0.1:9100");
    cr_assert_str_eq(c.admin_listen, "tcp://127.0.0.1:7200");
    cr_assert_eq(c.log_level, PX_LOG_INFO);
    cr_assert_eq(c.log_json, false);
    cr_assert_eq(c.drain_timeout_ms, 10000);
    cr_assert_eq(c.n_roots, 0);
    cr_assert_null(c.file);
    cr_assert_str_eq(pxd_config_source(&c, "node.workers"), "default");
    cr_assert_null(pxd_config_source(&c, "node.nope"));
    pxd_config_free(&c);
    pxd_config_free(&c); /* zeroed: a second free is harmless */
    pxd_config_free(NULL);
}

Test(tools_config, missing_required_keys_are_each_reported) {
    loaded l;
    char *const av[] = {"plexusd", NULL};
    load_with(&l, 1, av, no_env);
    cr_assert_eq(l.rc, PX_EINVAL);
    assert_err_has(&l, "node.name: required");
    assert_err_has(&l, "PLEXUS_NODE_NAME");
    assert_err_has(&l, "--name");
    assert_err_has(&l, "cluster.secret_file: required");
    cr_assert_eq(count_lines(l.err), 1, "two lines:\n%s", l.err);
    /* c is left as it was: the defaults. */
    cr_assert_str_eq(l.c.listen, "tcp://127.0.0.1:7100");
    pxd_config_free(&l.c);
}

Test(tools_config, file_values_are_read_with_their_line_as_source) {
    loaded l;
    load_file(&l,
              "# plexusd\n"
              "node:\n"
              "  name: alpha\n"               /* 3 */
              "  listen: tcp://0.0.0.0:7101\n"
              "  workers: 3\n"                /* 5 */
              "cluster:\n"
              "  secret_file: /etc/plexus/secret\n"
              "  lease_ttl_s: 9\n"
              "transport:\n"
              "  max_msg: 64 KiB\n"           /* 10 */
              "  plaintext: yes\n"
              "limits: {mailbox_capacity: 128, mailbox_policy: drop_oldest}\n"
              "http:\n"
              "  listen: \"\"\n"
              "log:\n"
              "  level: debug\n"
              "  format: json\n"
              "drain: {timeout_ms: 0}\n",
              no_env);
    cr_assert_eq(l.rc, PX_OK, "%s", l.err);
    cr_assert_str_eq(l.c.node_name, "alpha");
    cr_assert_str_eq(l.c.listen, "tcp://0.0.0.0:7101");
    cr_assert_str_eq(l.c.advertise, "tcp://0.0.0.0:7101", "advertise follows listen");
    cr_assert_eq(l.c.workers, 3);
    cr_assert_str_eq(l.c.secret_file, "/etc/plexus/secret");
    cr_assert_eq(l.c.lease_ttl_s, 9);
    cr_assert_eq(l.c.max_msg, 64 * 1024);
    cr_assert_eq(l.c.plaintext, true);
    cr_assert_eq(l.c.mailbox_capacity, 128);
    cr_assert_eq(l.c.mailbox_policy, PX_OVERFLOW_DROP_OLDEST);
    cr_assert_null(l.c.http_listen, "\"\" turns http off");
    cr_assert_eq(l.c.log_level, PX_LOG_DEBUG);
    cr_assert_eq(l.c.log_json, true);
    cr_assert_eq(l.c.drain_timeout_ms, 0);
    cr_assert_not_null(l.c.file);
    char want[256];
    snprintf(want, sizeof want, "%s:5", l.c.file);
    cr_assert_str_eq(pxd_config_source(&l.c, "node.workers"), want);
    snprintf(want, sizeof want, "%s:10", l.c.file);
    cr_assert_str_eq(pxd_config_source(&l.c, "transport.max_msg"), want);
    cr_assert_str_eq(pxd_config_source(&l.c, "node.advertise"), "default (node.listen)");
    cr_assert_str_eq(pxd_config_source(&l.c, "cluster.name"), "default");
    pxd_config_free(&l.c);
}

Test(tools_config, environment_beats_file_and_flags_beat_environment) {
    const char *p = write_file("p.yaml", "node:\n  name: a\n  workers: 2\n  roles: [x]\n"
                                         "cluster:\n  secret_file: s.key\n  name: file\n");
    char cfgvar[256];
    snprintf(cfgvar, sizeof cfgvar, "PLEXUS_CONFIG=%s", p);
    char *const env_file[] = {cfgvar, "HOME=/root", NULL};
    char *const env[] = {cfgvar, "PLEXUS_NODE_WORKERS=3", "PLEXUS_CLUSTER_NAME=env", NULL};
    loaded l;

    /* The file only (named by PLEXUS_CONFIG). */
    char *const av0[] = {"plexusd", NULL};
    load_with(&l, 1, av0, env_file);
    cr_assert_eq(l.rc, PX_OK, "%s", l.err);
    cr_assert_eq(l.c.workers, 2);
    cr_assert_str_eq(l.c.cluster, "file");
    pxd_config_free(&l.c);

    /* The environment over the file. */
    load_with(&l, 1, av0, env);
    cr_assert_eq(l.rc, PX_OK, "%s", l.err);
    cr_assert_eq(l.c.workers, 3);
    cr_assert_str_eq(l.c.cluster, "env");
    cr_assert_str_eq(pxd_config_source(&l.c, "node.workers"), "env PLEXUS_NODE_WORKERS");
    pxd_config_free(&l.c);

    /* Flags over the environment, in both spellings. */
    char *const av[] = {"plexusd", "--workers", "4", "--cluster=flag", NULL};
    load_with(&l, ARGC(av), av, env);
    cr_assert_eq(l.rc, PX_OK, "%s", l.err);
    cr_assert_eq(l.c.workers, 4);
    cr_assert_str_eq(l.c.cluster, "flag");
    cr_assert_str_eq(pxd_config_source(&l.c, "node.workers"), "flag --workers");
    cr_assert_str_eq(pxd_config_source(&l.c, "cluster.name"), "flag --cluster");
    cr_assert_eq(l.c.roles.n, 1);
    cr_assert_str_eq(l.c.roles.v[0], "x", "a key no later source sets keeps the file's value");
    pxd_config_free(&l.c);

    /* A repeated scalar flag: the last one wins. */
    char *const av2[] = {"plexusd", "--workers=5", "--workers", "6", NULL};
    load_with(&l, ARGC(av2), av2, env);
    cr_assert_eq(l.rc, PX_OK, "%s", l.err);
    cr_assert_eq(l.c.workers, 6);
    pxd_config_free(&l.c);

    /* --config over PLEXUS_CONFIG. */
    const char *q = write_file("q.yaml", REQUIRED "drain:\n  timeout_ms: 77\n");
    char *const av3[] = {"plexusd", "--config", (char *)q, NULL};
    load_with(&l, ARGC(av3), av3, env_file);
    cr_assert_eq(l.rc, PX_OK, "%s", l.err);
    cr_assert_eq(l.c.drain_timeout_ms, 77);
    cr_assert_eq(l.c.workers, 0, "p.yaml was not read");
    cr_assert_str_eq(l.c.file, q);
    pxd_config_free(&l.c);
}

/* One bad value per case, given at once in the file (on line 4), in the
 * environment and as a flag: three errors, each naming its source. */
Test(tools_config, every_type_reports_bad_values_with_their_source) {
    static const struct {
        const char *key, *env, *flag, *bad, *expect;
    } cases[] = {
        {"node.workers", "PLEXUS_NODE_WORKERS", "--workers", "lots",
         "expected an integer 0..256, got \"lots\""},
        {"node.workers", "PLEXUS_NODE_WORKERS", "--workers", "257",
         "expected an integer 0..256, got \"257\""},
        {"node.workers", "PLEXUS_NODE_WORKERS", "--workers", "-1",
         "expected an integer 0..256"},
        {"cluster.lease_ttl_s", "PLEXUS_CLUSTER_LEASE_TTL_S",
         "--lease-ttl", "1", "expected an integer 2..600"},
        {"transport.max_msg", "PLEXUS_TRANSPORT_MAX_MSG", "--max-msg",
         "16 XB", "expected a size 1 KiB..2 GiB"},
        {"transport.max_msg", "PLEXUS_TRANSPORT_MAX_MSG", "--max-msg",
         "3 GiB", "expected a size 1 KiB..2 GiB"},
        {"transport.plaintext", "PLEXUS_TRANSPORT_PLAINTEXT",
         "--plaintext", "maybe", "expected true or false, got \"maybe\""},
        {"limits.mailbox_capacity",
         "PLEXUS_LIMITS_MAILBOX_CAPACITY", "--mailbox-capacity", "1048577",
         "expected an integer 0..1048576"},
        {"limits.mailbox_policy", "PLEXUS_LIMITS_MAILBOX_POLICY",
         "--mailbox-policy", "sometimes",
         "expected one of block, drop_newest, drop_oldest, error, got \"sometimes\""},
        {"log.level", "PLEXUS_LOG_LEVEL", "--log-level", "loud",
         "expected one of trace, debug, info, warn, error, crit, off"},
        {"log.format", "PLEXUS_LOG_FORMAT", "--log-format", "xml",
         "expected one of text, json"},
        {"node.listen", "PLEXUS_NODE_LISTEN", "--listen", "http://h:1",
         "expected tcp://HOST:PORT or ipc://PATH"},
        {"node.listen", "PLEXUS_NODE_LISTEN", "--listen", "tcp://host",
         "expected tcp://HOST:PORT or ipc://PATH"},
        {"node.advertise", "PLEXUS_NODE_ADVERTISE", "--advertise",
         "tcp://h:99999", "expected tcp://HOST:PORT"},
        {"http.listen", "PLEXUS_HTTP_LISTEN", "--http", "tcp://h:1",
         "expected http://HOST:PORT"},
        {"admin.listen", "PLEXUS_ADMIN_LISTEN", "--admin", "h:1",
         "expected tcp://HOST:PORT or ipc://PATH"},
        {"node.name", "PLEXUS_NODE_NAME", "--name", "no spaces",
         "expected 1..63 characters of [A-Za-z0-9._-], got \"no spaces\""},
        {"cluster.name", "PLEXUS_CLUSTER_NAME", "--cluster", "a/b",
         "expected 1..63 characters of [A-Za-z0-9._-]"},
        {"node.key_file", "PLEXUS_NODE_KEY_FILE", "--key-file", "",
         "expected a file name, got \"\""},
        {"node.roles", "PLEXUS_NODE_ROLES", "--roles", "web!",
         "expected 1..63 characters of [A-Za-z0-9._-], got \"web!\""},
        {"cluster.etcd_endpoints", "PLEXUS_CLUSTER_ETCD_ENDPOINTS",
         "--etcd", "ftp://e:1", "expected an http:// or https:// URL"},
        {"admin.keys", "PLEXUS_ADMIN_KEYS", "--admin-key", "notakey",
         "expected a base64 ed25519 public key"},
        {"transport.peers", "PLEXUS_TRANSPORT_PEERS", "--peer",
         "b tcp://h:1", "expected \"NAME ADDRESS PUBKEY\" (3 words, 2 given)"},
        {"transport.peers", "PLEXUS_TRANSPORT_PEERS", "--peer",
         "b h:1 AAAA",
         "expected \"NAME ADDRESS PUBKEY\" with ADDRESS tcp://HOST:PORT or ipc://PATH"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char section[32];
        const char *leaf = strchr(cases[i].key, '.') + 1;
        snprintf(section, sizeof section, "%.*s", (int)(leaf - 1 - cases[i].key), cases[i].key);
        bool list = strstr("node.roles cluster.etcd_endpoints admin.keys transport.peers",
                           cases[i].key) != NULL;
        char text[512], envvar[256], flag[256];
        snprintf(text, sizeof text,
                 "# line 1\n"
                 "\n"
                 "%s:\n"
                 "  %s: %s\"%s\"%s\n",
                 section, leaf, list ? "[" : "", cases[i].bad, list ? "]" : "");
        snprintf(envvar, sizeof envvar, "%s=%s", cases[i].env, cases[i].bad);
        snprintf(flag, sizeof flag, "%s=%s", cases[i].flag, cases[i].bad);
        const char *p = write_file("bad.yaml", text);
        /* The required keys come from the environment (node.name's case
         * gives its own, bad, value). */
        char *const env[] = {envvar, "PLEXUS_CLUSTER_SECRET_FILE=s",
                             strcmp(cases[i].key, "node.name") ? "PLEXUS_NODE_NAME=a" : NULL,
                             NULL};
        char *const av[] = {"plexusd", "--config", (char *)p, flag, NULL};
        loaded l;
        load_with(&l, ARGC(av), av, env);
        cr_assert_eq(l.rc, PX_EINVAL, "case %zu (%s) loaded", i, cases[i].key);
        char want[512];
        snprintf(want, sizeof want, "%s:4: %s: %s", p, cases[i].key, cases[i].expect);
        assert_err_has(&l, want);
        snprintf(want, sizeof want, "env %s: %s: %s", cases[i].env, cases[i].key,
                 cases[i].expect);
        assert_err_has(&l, want);
        snprintf(want, sizeof want, "flag %s: %s: %s", cases[i].flag, cases[i].key,
                 cases[i].expect);
        assert_err_has(&l, want);
        cr_assert_eq(count_lines(l.err), 2, "case %zu: exactly three problems:\n%s", i, l.err);
        pxd_config_free(&l.c);
    }
}

Test(tools_config, good_values_of_each_type_parse) {
    char peer[256], keys[256];
    snprintf(peer, sizeof peer, "--peer=b tcp://[::1]:7101 %s", pubkey);
    snprintf(keys, sizeof keys, "PLEXUS_ADMIN_KEYS=%s, %s", pubkey, pubkey);
    char *const env[] = {keys, "PLEXUS_TRANSPORT_MAX_MSG=1GiB", "PLEXUS_LOG_LEVEL=WARN",
                         "PLEXUS_LOG_FORMAT=json", "PLEXUS_TRANSPORT_PLAINTEXT=on", NULL};
    char *const av[] = {"plexusd", "--name", "n-1.x_y", "--secret-file", "s",
                        "--listen", "ipc:///tmp/n.sock", "--http", "", "--etcd",
                        "https://e1:2379/v3,http://e2", "--etcd-ca-file", "ca.pem",
                        "--etcd-user", "u", "--etcd-password", "pw", "--mailbox-policy",
                        "drop_newest", peer, "--max-actors", "16", "--lease-ttl", "600",
                        "--plaintext=false", "--admin", "tcp://localhost:0", NULL};
    loaded l;
    load_with(&l, ARGC(av), av, env);
    cr_assert_eq(l.rc, PX_OK, "%s", l.err);
    cr_assert_str_eq(l.c.node_name, "n-1.x_y");
    cr_assert_str_eq(l.c.listen, "ipc:///tmp/n.sock");
    cr_assert_str_eq(l.c.advertise, "ipc:///tmp/n.sock");
    cr_assert_null(l.c.http_listen, "--http \"\" turns it off");
    cr_assert_eq(l.c.etcd.n, 2);
    cr_assert_str_eq(l.c.etcd.v[0], "https://e1:2379/v3");
    cr_assert_str_eq(l.c.etcd.v[1], "http://e2");
    cr_assert_str_eq(l.c.etcd_user, "u");
    cr_assert_str_eq(l.c.etcd_password, "pw");
    cr_assert_eq(l.c.admin_keys.n, 2);
    cr_assert_str_eq(l.c.admin_keys.v[1], pubkey, "entries are trimmed");
    cr_assert_eq(l.c.peers.n, 1);
    cr_assert_eq(l.c.max_msg, 1ull << 30);
    cr_assert_eq(l.c.log_level, PX_LOG_WARN);
    cr_assert_eq(l.c.log_json, true);
    cr_assert_eq(l.c.plaintext, false, "the flag beats the environment");
    cr_assert_eq(l.c.mailbox_policy, PX_OVERFLOW_DROP_NEWEST);
    cr_assert_eq(l.c.max_actors, 16);
    cr_assert_eq(l.c.lease_ttl_s, 600);
    pxd_config_free(&l.c);

    /* A bool flag alone means true. */
    char *const av2[] = {"plexusd", "--name", "a", "--secret-file", "s", "--plaintext", NULL};
    load_with(&l, ARGC(av2), av2, no_env);
    cr_assert_eq(l.rc, PX_OK, "%s", l.err);
    cr_assert_eq(l.c.plaintext, true);
    pxd_config_free(&l.c);
}

Test(tools_config, unknown_keys_in_file_env_and_flags_are_errors) {
    loaded l;
    const char *p = write_file("u.yaml",
                               "node:\n"
                               "  name: a\n"
                               "  wrokers: 2\n"           /* 3 */
                               "cluster: {secret_file: s}\n"
                               "bogus: 1\n"               /* 5 */
                               "log:\n"
                               "  level:\n"
                               "    deep: 1\n");          /* 7: a map for a value */
    char *const env[] = {"PLEXUS_NODE_WRKERS=1", "PLEXUS_CONFIG=/nonexistent/ignored.yaml",
                         "HOME=/root", "PLEXUS_ROOTS=x", NULL};
    char *const av[] = {"plexusd", "--config", (char *)p, "--wrkers", "3", "stray", NULL};
    load_with(&l, ARGC(av), av, env);
    cr_assert_eq(l.rc, PX_EINVAL);
    char want[256];
    snprintf(want, sizeof want, "%s:3: node.wrokers: unknown key", p);
    assert_err_has(&l, want);
    snprintf(want, sizeof want, "%s:5: bogus: unknown key", p);
    assert_err_has(&l, want);
    snprintf(want, sizeof want, "%s:7: log.level: expected a single value, got a map", p);
    assert_err_has(&l, want);
    assert_err_has(&l, "env PLEXUS_NODE_WRKERS: unknown variable");
    assert_err_has(&l, "env PLEXUS_ROOTS: unknown variable");
    assert_err_has(&l, "flag --wrkers: unknown flag");
    /* "3" follows an unknown flag: it is an argument of its own. */
    assert_err_has(&l, "argument \"3\": unexpected");
    assert_err_has(&l, "argument \"stray\": unexpected");
    cr_assert_null(strstr(l.err, "PLEXUS_CONFIG"), "PLEXUS_CONFIG is not a key:\n%s", l.err);
    cr_assert_null(strstr(l.err, "HOME"));
    cr_assert_eq(count_lines(l.err), 7, "eight problems:\n%s", l.err);
    pxd_config_free(&l.c);
}

Test(tools_config, extra_flags_pass_through_and_take_no_value) {
    static const char *const extra[] = {"--check-config", "--help", NULL};
    char *const av[] = {"plexusd", "--check-config", "--name", "a", "--secret-file", "s", NULL};
    pxd_config c;
    char err[512];
    pxd_config_init(&c);
    cr_assert_eq(pxd_config_load(&c, ARGC(av), av, no_env, extra, err, sizeof err), PX_OK, "%s",
                 err);
    cr_assert_str_eq(c.node_name, "a");
    cr_assert_eq(pxd_config_load(&c, ARGC(av), av, no_env, NULL, err, sizeof err), PX_EINVAL);
    cr_assert_str_eq(err, "flag --check-config: unknown flag (plexusd --help lists them)");
    cr_assert_str_eq(c.node_name, "a", "a failed load leaves c as it was");
    char *const av2[] = {"plexusd", "--help=yes", "--name", "a", "--secret-file", "s", NULL};
    cr_assert_eq(pxd_config_load(&c, ARGC(av2), av2, no_env, extra, err, sizeof err),
                 PX_EINVAL);
    cr_assert_str_eq(err, "flag --help: takes no value");
    pxd_config_free(&c);
}

Test(tools_config, a_flag_without_its_value_is_reported) {
    loaded l;
    char *const av[] = {"plexusd", "--name", "a", "--secret-file", "s", "--listen",
                        "--workers", "2", "--log-level", NULL};
    load_with(&l, ARGC(av), av, no_env);
    cr_assert_eq(l.rc, PX_EINVAL);
    assert_err_has(&l, "flag --listen: node.listen: missing value");
    assert_err_has(&l, "flag --log-level: log.level: missing value");
    cr_assert_eq(count_lines(l.err), 1, "%s", l.err);
    pxd_config_free(&l.c);

    char *const av2[] = {"plexusd", "--name", "a", "--secret-file", "s", "--config", NULL};
    load_with(&l, ARGC(av2), av2, no_env);
    cr_assert_eq(l.rc, PX_EINVAL);
    cr_assert_str_eq(l.err, "flag --config: missing value (--config FILE)");
    pxd_config_free(&l.c);
}

Test(tools_config, yaml_syntax_errors_carry_line_and_column) {
    loaded l;
    load_file(&l, REQUIRED "log:\n  level: [debug\n  format: json\n", no_env);
    cr_assert_eq(l.rc, PX_EINVAL);
    char want[256];
    snprintf(want, sizeof want, "%s/plexusd.yaml:7:", dir);
    assert_err_has(&l, want);
    assert_err_has(&l, "YAML syntax error: ");
    assert_err_has(&l, "(while parsing a flow sequence at line 6)");
    pxd_config_free(&l.c);

    load_file(&l, "node:\n  name: a\n bad: 1\n", no_env);
    cr_assert_eq(l.rc, PX_EINVAL);
    snprintf(want, sizeof want, "%s/plexusd.yaml:3:2: YAML syntax error:", dir);
    assert_err_has(&l, want);
    pxd_config_free(&l.c);

    load_file(&l, "- a\n- b\n", no_env);
    cr_assert_eq(l.rc, PX_EINVAL);
    snprintf(want, sizeof want, "%s/plexusd.yaml:1: expected a map of keys at the top", dir);
    assert_err_has(&l, want);
    pxd_config_free(&l.c);

    load_file(&l, REQUIRED "---\nnode: {workers: 1}\n", no_env);
    cr_assert_eq(l.rc, PX_EINVAL);
    snprintf(want, sizeof want, "%s/plexusd.yaml:6: a second YAML document", dir);
    assert_err_has(&l, want);
    pxd_config_free(&l.c);

    /* An empty file is no settings at all. */
    const char *e = write_file("empty.yaml", "");
    char *const av[] = {"plexusd", "--config", (char *)e, "--name", "a", "--secret-file", "s",
                        NULL};
    load_with(&l, ARGC(av), av, no_env);
    cr_assert_eq(l.rc, PX_OK, "%s", l.err);
    pxd_config_free(&l.c);
}

Test(tools_config, keys_set_twice_in_the_file_are_errors) {
    loaded l;
    load_file(&l,
              REQUIRED "limits:\n"
                       "  max_actors: 100\n" /* 6 */
                       "  max_actors: 200\n" /* 7 */
                       "limits.max_actors: 300\n"
                       "node:\n"             /* 9 */
                       "  workers: 1\n",
              no_env);
    cr_assert_eq(l.rc, PX_EINVAL);
    char want[256];
    snprintf(want, sizeof want, "%s/plexusd.yaml:7: limits.max_actors: set twice in the file "
                                "(first at line 6)", dir);
    assert_err_has(&l, want);
    snprintf(want, sizeof want, "%s/plexusd.yaml:8: limits.max_actors: set twice", dir);
    assert_err_has(&l, want);
    snprintf(want, sizeof want, "%s/plexusd.yaml:9: node: set twice in the file (first at line 1)",
             dir);
    assert_err_has(&l, want);
    cr_assert_eq(count_lines(l.err), 2, "%s", l.err);
    pxd_config_free(&l.c);
}

Test(tools_config, an_unreadable_file_names_the_file_and_the_reason) {
    loaded l;
    char missing[128];
    snprintf(missing, sizeof missing, "%s/none.yaml", dir);
    char *const av[] = {"plexusd", "--config", missing, "--name", "a", "--secret-file", "s",
                        NULL};
    load_with(&l, ARGC(av), av, no_env);
    cr_assert_eq(l.rc, PX_EINVAL);
    char want[256];
    snprintf(want, sizeof want, "%s: cannot read: No such file or directory", missing);
    cr_assert_str_eq(l.err, want);
    pxd_config_free(&l.c);

    char *const av2[] = {"plexusd", "--config", dir, "--name", "a", "--secret-file", "s", NULL};
    load_with(&l, ARGC(av2), av2, no_env);
    cr_assert_eq(l.rc, PX_EINVAL);
    snprintf(want, sizeof want, "%s: cannot read: Is a directory", dir);
    cr_assert_str_eq(l.err, want);
    pxd_config_free(&l.c);
}

Test(tools_config, lists_come_from_sequences_commas_and_repeated_flags) {
    char peer_a[160], peer_b[160], peer_file[400];
    snprintf(peer_a, sizeof peer_a, "a tcp://10.0.0.1:7100 %s", pubkey);
    snprintf(peer_b, sizeof peer_b, "b ipc:///run/b.sock %s", pubkey);
    snprintf(peer_file, sizeof peer_file,
             "cluster: {secret_file: s}\n"
             "node:\n  name: a\n  roles:\n    - kv\n    - web\n"
             "transport:\n  peers: [\"%s\"]\n"
             "plugins: [/usr/lib/plexus/kv.so]\n",
             peer_a);
    const char *p = write_file("l.yaml", peer_file);
    loaded l;
    char flag_b[200];
    snprintf(flag_b, sizeof flag_b, "--peer=%s", peer_b);

    /* The file. */
    char *const av0[] = {"plexusd", "--config", (char *)p, NULL};
    load_with(&l, ARGC(av0), av0, no_env);
    cr_assert_eq(l.rc, PX_OK, "%s", l.err);
    cr_assert_eq(l.c.roles.n, 2);
    cr_assert_str_eq(l.c.roles.v[1], "web");
    cr_assert_eq(l.c.peers.n, 1);
    cr_assert_str_eq(l.c.peers.v[0], peer_a);
    cr_assert_eq(l.c.plugins.n, 1);
    pxd_config_free(&l.c);

    /* The environment replaces (comma-separated, trimmed; "" = empty);
     * the first list flag replaces, each repeat appends. */
    char *const env[] = {"PLEXUS_NODE_ROLES= x , y ", "PLEXUS_PLUGINS=", NULL};
    char *const av[] = {"plexusd", "--config", (char *)p, "--peer", peer_b, flag_b,
                        "--load", "a.so,b.so", "--load", "c.so", NULL};
    load_with(&l, ARGC(av), av, env);
    cr_assert_eq(l.rc, PX_OK, "%s", l.err);
    cr_assert_eq(l.c.roles.n, 2);
    cr_assert_str_eq(l.c.roles.v[0], "x");
    cr_assert_str_eq(l.c.roles.v[1], "y");
    cr_assert_eq(l.c.peers.n, 2, "file's peer replaced, then appended");
    cr_assert_str_eq(l.c.peers.v[0], peer_b);
    cr_assert_str_eq(l.c.peers.v[1], peer_b);
    cr_assert_eq(l.c.plugins.n, 3);
    cr_assert_str_eq(l.c.plugins.v[2], "c.so");
    cr_assert_str_eq(pxd_config_source(&l.c, "node.roles"), "env PLEXUS_NODE_ROLES");
    pxd_config_free(&l.c);

    char *const env_empty[] = {"PLEXUS_NODE_ROLES=", NULL};
    load_with(&l, ARGC(av0), av0, env_empty);
    cr_assert_eq(l.rc, PX_OK, "%s", l.err);
    cr_assert_eq(l.c.roles.n, 0, "an empty variable empties the list");
    pxd_config_free(&l.c);

    /* Empty entries, too many entries, a scalar where a list belongs. */
    char many[400] = "--roles=r0";
    for (int i = 1; i <= PXD_MAX_LIST; i++) {
        size_t o = strlen(many);
        snprintf(many + o, sizeof many - o, ",r%d", i);
    }
    const char *q = write_file("s.yaml", "node: {name: a, roles: kv}\ncluster: {secret_file: s}\n");
    char *const env2[] = {"PLEXUS_NODE_ROLES=a,,b", NULL};
    char *const av2[] = {"plexusd", "--config", (char *)q, many, NULL};
    load_with(&l, ARGC(av2), av2, env2);
    cr_assert_eq(l.rc, PX_EINVAL);
    char want[256];
    snprintf(want, sizeof want, "%s:1: node.roles: expected a list", q);
    assert_err_has(&l, want);
    assert_err_has(&l, "env PLEXUS_NODE_ROLES: node.roles: empty list entry");
    assert_err_has(&l, "flag --roles: node.roles: more than 32 entries");
    cr_assert_eq(count_lines(l.err), 2, "%s", l.err);
    pxd_config_free(&l.c);
}

Test(tools_config, roots_are_parsed_with_defaults_and_their_lines) {
    loaded l;
    load_file(&l,
              REQUIRED "roots:\n"
                       "  - name: kv\n"                /* 6 */
                       "    global_name: kv.global\n"
                       "    behavior: kv_store\n"
                       "  - name: workers\n"           /* 9 */
                       "    supervisor: rest_for_one\n"
                       "    behavior: worker\n"
                       "    children: 4\n"
                       "    placement: role:compute\n"
                       "    max_restarts: 3\n"
                       "    within_ms: 1000\n"
                       "  - {name: pinned, behavior: b, placement: \"node:n-2\"}\n"
                       "  - name: load\n"
                       "    behavior: load.client\n"
                       "    arg_type: plexus.kv.LoadSpec\n"
                       "    arg: '{\"target\": \"kv\"}'\n",
              no_env);
    cr_assert_eq(l.rc, PX_OK, "%s", l.err);
    cr_assert_eq(l.c.n_roots, 4);
    cr_assert_str_eq(l.c.roots[3].arg_type, "plexus.kv.LoadSpec");
    cr_assert_str_eq(l.c.roots[3].arg, "{\"target\": \"kv\"}");
    cr_assert_null(l.c.roots[2].arg_type);
    const pxd_root *r = &l.c.roots[0];
    cr_assert_str_eq(r->name, "kv");
    cr_assert_str_eq(r->global_name, "kv.global");
    cr_assert_str_eq(r->behavior, "kv_store");
    cr_assert_null(r->supervisor);
    cr_assert_eq(r->children, 1);
    cr_assert_str_eq(r->placement, "here");
    cr_assert_eq(r->max_restarts, 10);
    cr_assert_eq(r->within_ms, 5000);
    char want[256];
    snprintf(want, sizeof want, "%s:6", l.c.file);
    cr_assert_str_eq(r->src, want);
    r = &l.c.roots[1];
    cr_assert_str_eq(r->supervisor, "rest_for_one");
    cr_assert_eq(r->children, 4);
    cr_assert_str_eq(r->placement, "role:compute");
    cr_assert_eq(r->max_restarts, 3);
    cr_assert_eq(r->within_ms, 1000);
    snprintf(want, sizeof want, "%s:9", l.c.file);
    cr_assert_str_eq(r->src, want);
    cr_assert_null(l.c.roots[1].global_name);
    cr_assert_str_eq(l.c.roots[2].placement, "node:n-2");
    pxd_config_free(&l.c);
}

/* An error expected at a line of the file. */
typedef struct line_err {
    int line;
    const char *text;
} line_err;

/* Each of want is in l's errors as "FILE:LINE: text", and nothing else is. */
static void assert_errs_at(const loaded *l, const char *f, const line_err *want, size_t n) {
    for (size_t i = 0; i < n; i++) {
        char w[300];
        snprintf(w, sizeof w, "%s:%d: %s", f, want[i].line, want[i].text);
        assert_err_has(l, w);
    }
    cr_assert_eq(count_lines(l->err) + 1, n, "%s", l->err);
}

Test(tools_config, bad_roots_are_reported_at_their_lines) {
    loaded l;
    load_file(&l,
              REQUIRED "roots:\n"
                       "  - name: a\n"                  /* 6 */
                       "    behavior: b\n"
                       "    placement: everywhere\n"    /* 8 */
                       "  - name: c\n"                  /* 9: no behavior */
                       "    supervisor: one_for_one\n"
                       "    children: 0\n"              /* 11 */
                       "  - name: d\n"                  /* 12 */
                       "    behavior: b\n"
                       "    children: 2000\n"           /* 14 */
                       "    supervisor: one_for_all\n"  /* 15 */
                       "    colour: red\n"              /* 16 */
                       "  - name: a\n"                  /* 17: a second "a" */
                       "    behavior: b\n"
                       "    children: 2\n"              /* 19: no supervisor */
                       "    placement: \"node:\"\n"     /* 20 */
                       "  - just a string\n",           /* 21 */
              no_env);
    cr_assert_eq(l.rc, PX_EINVAL);
    const char *f = made[n_made - 1];
    static const line_err want[] = {
        {8, "roots[0].placement: expected here, round_robin, least_loaded, node:NAME or "
            "role:ROLE, got \"everywhere\""},
        {9, "roots[1].behavior: required"},
        {11, "roots[1].children: expected an integer 1..1024, got \"0\""},
        {14, "roots[2].children: expected an integer 1..1024, got \"2000\""},
        {15, "roots[2].supervisor: expected one_for_one, all_for_one or rest_for_one"},
        {16, "roots[2].\"colour\": unknown key"},
        {19, "roots[3].children: needs a supervisor"},
        {20, "roots[3].placement: expected here"},
        {17, "roots[3].name: \"a\" is also the name of roots[0]"},
        {21, "roots[4]: expected a map"},
    };
    assert_errs_at(&l, f, want, sizeof want / sizeof want[0]);
    pxd_config_free(&l.c);

    /* start arguments */
    load_file(&l,
              REQUIRED "roots:\n"
                       "  - name: a\n"                               /* 6 */
                       "    behavior: b\n"
                       "    arg: '{\"x\": 1}'\n"                     /* 8: no arg_type */
                       "  - name: c\n"                               /* 9 */
                       "    behavior: b\n"
                       "    arg_type: t.T\n"
                       "    arg: '{\"x\": '\n"                       /* 12: not JSON */
                       "  - name: d\n"                               /* 13 */
                       "    behavior: b\n"
                       "    supervisor: one_for_one\n"
                       "    arg_type: t.T\n"                         /* 16 */
                       "  - name: e\n"                               /* 17 */
                       "    behavior: b\n"
                       "    arg_type: t.T\n"
                       "    arg: '[1, 2]'\n",                        /* 20: not an object */
              no_env);
    cr_assert_eq(l.rc, PX_EINVAL);
    f = made[n_made - 1];
    static const line_err want2[] = {
        {8, "roots[0].arg: needs arg_type"},
        {12, "roots[1].arg: expected a JSON object: "},
        {16, "roots[2].arg_type: a start argument is for a plain actor, not a supervisor"},
        {20, "roots[3].arg: expected a JSON object, got \"[1, 2]\""},
    };
    assert_errs_at(&l, f, want2, sizeof want2 / sizeof want2[0]);
    pxd_config_free(&l.c);

    load_file(&l, REQUIRED "roots: {name: a}\n", no_env);
    cr_assert_eq(l.rc, PX_EINVAL);
    char w[300];
    snprintf(w, sizeof w, "%s:5: roots: expected a list of maps", made[n_made - 1]);
    assert_err_has(&l, w);
    pxd_config_free(&l.c);
}

Test(tools_config, rules_across_keys_are_checked) {
    loaded l;
    char *const env[] = {"PLEXUS_CLUSTER_ETCD_PASSWORD=pw", "PLEXUS_CLUSTER_ETCD_CA_FILE=ca.pem",
                         NULL};
    char *const av[] = {"plexusd", "--name", "a", "--secret-file", "s", "--etcd",
                        "http://e:2379", "--admin", "tcp://127.0.0.1:7100", NULL};
    load_with(&l, ARGC(av), av, env);
    cr_assert_eq(l.rc, PX_EINVAL);
    assert_err_has(&l, "env PLEXUS_CLUSTER_ETCD_PASSWORD: cluster.etcd_password: set without "
                       "cluster.etcd_user");
    assert_err_has(&l, "env PLEXUS_CLUSTER_ETCD_CA_FILE: cluster.etcd_ca_file: set, but no "
                       "cluster.etcd_endpoints is https://");
    assert_err_has(&l, "flag --admin: admin.listen: the same address as node.listen (default)");
    cr_assert_eq(count_lines(l.err), 2, "%s", l.err);
    pxd_config_free(&l.c);

    /* Port 0 twice is two ephemeral ports, not one address. */
    char *const av2[] = {"plexusd", "--name", "a", "--secret-file", "s", "--listen",
                         "tcp://127.0.0.1:0", "--admin", "tcp://127.0.0.1:0", NULL};
    load_with(&l, ARGC(av2), av2, no_env);
    cr_assert_eq(l.rc, PX_OK, "%s", l.err);
    pxd_config_free(&l.c);
}

Test(tools_config, dump_masks_the_secret_and_shows_every_source) {
    loaded l;
    char *const env[] = {"PLEXUS_CLUSTER_ETCD_PASSWORD=hunter2", NULL};
    char *const av[] = {"plexusd", "--name", "a", "--secret-file", "s", "--etcd-user", "u",
                        NULL};
    load_with(&l, ARGC(av), av, env);
    cr_assert_eq(l.rc, PX_OK, "%s", l.err);
    char *d = pxd_config_dump(&l.c);
    cr_assert_not_null(d);
    cr_assert_null(strstr(d, "hunter2"), "%s", d);
    cr_assert_not_null(strstr(d, "cluster.etcd_password = ***"), "%s", d);
    cr_assert_not_null(strstr(d, "# env PLEXUS_CLUSTER_ETCD_PASSWORD\n"), "%s", d);
    cr_assert_not_null(strstr(d, "cluster.etcd_user = u "), "%s", d);
    cr_assert_not_null(strstr(d, "# flag --etcd-user\n"), "%s", d);
    cr_assert_not_null(strstr(d, "node.workers = 0 "), "%s", d);
    cr_assert_not_null(strstr(d, "transport.max_msg = 16 MiB "), "%s", d);
    cr_assert_not_null(strstr(d, "limits.mailbox_policy = error "), "%s", d);
    cr_assert_not_null(strstr(d, "log.level = info "), "%s", d);
    cr_assert_not_null(strstr(d, "roots = []"), "%s", d);
    cr_assert_eq(count_lines(d), pxd_config_key_count() + 1, "%s", d);
    /* Every line is "key = value ... # source". */
    for (char *line = d; *line;) {
        char *nl = strchr(line, '\n');
        cr_assert_not_null(nl);
        *nl = '\0';
        cr_assert_not_null(strstr(line, " = "), "%s", line);
        cr_assert_not_null(strstr(line, "   # "), "%s", line);
        line = nl + 1;
    }
    free(d);
    pxd_config_free(&l.c);

    /* Unset, the secret prints empty: no "***" to suggest a value. */
    pxd_config c;
    pxd_config_init(&c);
    d = pxd_config_dump(&c);
    cr_assert_not_null(d);
    cr_assert_null(strstr(d, "***"), "%s", d);
    cr_assert_not_null(strstr(d, "cluster.etcd_password =  "), "%s", d);
    free(d);
    pxd_config_free(&c);
}

Test(tools_config, dump_lists_roots_with_their_source) {
    loaded l;
    load_file(&l, REQUIRED "roots:\n  - {name: kv, behavior: kv_store, supervisor: one_for_one}\n",
              no_env);
    cr_assert_eq(l.rc, PX_OK, "%s", l.err);
    char *d = pxd_config_dump(&l.c);
    cr_assert_not_null(d);
    char want[300];
    snprintf(want, sizeof want, "# %s:6\n", l.c.file);
    cr_assert_not_null(strstr(d, "roots[0] = {name: kv, behavior: kv_store, supervisor: "
                                 "one_for_one, children: 1, placement: here"),
                       "%s", d);
    cr_assert_not_null(strstr(d, want), "%s", d);
    free(d);
    pxd_config_free(&l.c);
}

/* PLEXUS_ + the key upper-cased, dots to underscores. */
static void env_name_of(const char *key, char *out, size_t n) {
    size_t o = (size_t)snprintf(out, n, "PLEXUS_");
    for (; *key && o + 1 < n; key++) {
        out[o++] = *key == '.' ? '_' : (char)((*key >= 'a' && *key <= 'z') ? *key - 32 : *key);
    }
    out[o] = '\0';
}

Test(tools_config, reference_has_one_row_per_key_with_env_and_flag) {
    char *ref = pxd_config_reference();
    cr_assert_not_null(ref);
    cr_assert(strncmp(ref, "| key | env | flag | type | default | reload | description |\n", 60) ==
              0);
    size_t n = pxd_config_key_count();
    cr_assert_gt(n, 20);
    pxd_key_info k;
    for (size_t i = 0; i < n; i++) {
        cr_assert(pxd_config_key(i, &k));
        char env[128], row[300];
        env_name_of(k.name, env, sizeof env);
        cr_assert_str_eq(k.env, env, "key %s", k.name);
        cr_assert(strncmp(k.flag, "--", 2) == 0);
        snprintf(row, sizeof row, "| `%s` | `%s` | `%s", k.name, k.env, k.flag);
        cr_assert_not_null(strstr(ref, row), "no row for %s", k.name);
    }
    cr_assert_not(pxd_config_key(n, &k));
    /* Rows: lines that start with "| `", each with 8 bars (7 cells). */
    size_t rows = 0;
    for (const char *line = ref; *line;) {
        const char *nl = strchr(line, '\n');
        cr_assert_not_null(nl);
        if (strncmp(line, "| `", 3) == 0) {
            rows++;
            size_t bars = 0;
            for (const char *c = line; c < nl; c++) {
                bars += *c == '|';
            }
            cr_assert_eq(bars, 8, "%.*s", (int)(nl - line), line);
        }
        line = nl + 1;
    }
    cr_assert_eq(rows, n);
    cr_assert_not_null(strstr(ref, "| `log.level` | `PLEXUS_LOG_LEVEL` | `--log-level` | log level"
                                   " | `info` | yes |"),
                       "%s", ref);
    cr_assert_not_null(strstr(ref, "| `node.name` | `PLEXUS_NODE_NAME` | `--name` | name | "
                                   "*required* | no |"));
    cr_assert_not_null(strstr(ref, "`roots:`"));
    cr_assert_not_null(strstr(ref, "round_robin"));

    /* The dump has as many key lines as the table has rows. */
    pxd_config c;
    pxd_config_init(&c);
    char *d = pxd_config_dump(&c);
    cr_assert_not_null(d);
    size_t keylines = 0;
    for (const char *line = d; *line; line = strchr(line, '\n') + 1) {
        keylines += strncmp(line, "roots", 5) != 0;
    }
    cr_assert_eq(keylines, rows);
    free(d);
    pxd_config_free(&c);
    free(ref);
}

Test(tools_config, usage_lists_every_flag) {
    char *u = pxd_config_usage();
    cr_assert_not_null(u);
    pxd_key_info k;
    for (size_t i = 0; pxd_config_key(i, &k); i++) {
        char f[64];
        snprintf(f, sizeof f, "  %s", k.flag);
        cr_assert_not_null(strstr(u, f), "usage lacks %s", k.flag);
    }
    cr_assert_not_null(strstr(u, "--config FILE"));
    /* and the commands that start no node (main.c's extra flags) */
    const char *cmds[] = {"--check-config", "--config-reference", "--version", "--help"};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        char f[64];
        snprintf(f, sizeof f, "  %s ", cmds[i]);
        cr_assert_not_null(strstr(u, f), "usage lacks %s", cmds[i]);
    }
    cr_assert_not_null(strstr(u, "Examples:"));
    free(u);
}

Test(tools_config, reload_applies_only_reloadable_keys_and_says_what_changed) {
    const char *p = write_file("r.yaml", "node: {name: a, workers: 2}\n"
                             "cluster: {secret_file: s}\n"
                             "log:\n  level: info\n");
    char *const av[] = {"plexusd", "--config", (char *)p, NULL};
    pxd_config c;
    char err[1024];
    char *changed = (char *)"untouched";
    pxd_config_init(&c);
    cr_assert_eq(pxd_config_load(&c, ARGC(av), av, no_env, NULL, err, sizeof err), PX_OK, "%s",
                 err);

    write_file("r.yaml", "node: {name: a, workers: 4}\n"
                         "cluster: {secret_file: s}\n"
                         "limits: {mailbox_capacity: 100, mailbox_policy: block}\n"
                         "log:\n  level: debug\n"
                         "roots: [{name: x, behavior: y}]\n");
    cr_assert_eq(pxd_config_reload(&c, ARGC(av), av, no_env, NULL, &changed, err, sizeof err),
                 PX_OK, "%s", err);
    cr_assert_eq(c.log_level, PX_LOG_DEBUG);
    cr_assert_eq(c.mailbox_capacity, 100);
    cr_assert_eq(c.mailbox_policy, PX_OVERFLOW_BLOCK);
    cr_assert_eq(c.workers, 2, "not reloadable");
    cr_assert_eq(c.n_roots, 0, "not reloadable");
    cr_assert_not_null(changed);
    cr_assert_str_eq(changed, "limits.mailbox_capacity 0 -> 100; limits.mailbox_policy error -> "
                              "block; log.level info -> debug; not applied until a restart: "
                              "node.workers, roots");
    char want[256];
    snprintf(want, sizeof want, "%s:5", p);
    cr_assert_str_eq(pxd_config_source(&c, "log.level"), want);
    snprintf(want, sizeof want, "%s:1", p);
    cr_assert_str_eq(pxd_config_source(&c, "node.workers"), want);
    free(changed);

    /* Nothing new: changed is NULL. The environment still wins. */
    write_file("r.yaml", "node: {name: a, workers: 2}\n"
                         "cluster: {secret_file: s}\n"
                         "limits: {mailbox_capacity: 100, mailbox_policy: block}\n"
                         "log:\n  level: debug\n");
    cr_assert_eq(pxd_config_reload(&c, ARGC(av), av, no_env, NULL, &changed, err, sizeof err),
                 PX_OK, "%s", err);
    cr_assert_null(changed);
    char *const env[] = {"PLEXUS_LOG_LEVEL=warn", NULL};
    cr_assert_eq(pxd_config_reload(&c, ARGC(av), av, env, NULL, &changed, err, sizeof err),
                 PX_OK, "%s", err);
    cr_assert_eq(c.log_level, PX_LOG_WARN);
    cr_assert_str_eq(changed, "log.level debug -> warn");
    cr_assert_str_eq(pxd_config_source(&c, "log.level"), "env PLEXUS_LOG_LEVEL");
    free(changed);

    /* A broken file: PX_EINVAL, c as it was. */
    write_file("r.yaml", "node: {name: a}\ncluster: {secret_file: s}\nlog: {level: chatty}\n");
    changed = (char *)"untouched";
    cr_assert_eq(pxd_config_reload(&c, ARGC(av), av, no_env, NULL, &changed, err, sizeof err),
                 PX_EINVAL);
    cr_assert_null(changed);
    cr_assert_eq(c.log_level, PX_LOG_WARN);
    snprintf(want, sizeof want, "%s:3: log.level: expected one of", p);
    cr_assert_not_null(strstr(err, want), "%s", err);
    pxd_config_free(&c);
}

Test(tools_config, a_small_error_buffer_is_cut_with_dots) {
    char *const env[] = {"PLEXUS_A=1", "PLEXUS_B=1", "PLEXUS_C=1", "PLEXUS_D=1", NULL};
    char *const av[] = {"plexusd", NULL};
    pxd_config c;
    char err[64];
    memset(err, 'x', sizeof err);
    pxd_config_init(&c);
    cr_assert_eq(pxd_config_load(&c, 1, av, env, NULL, err, sizeof err), PX_EINVAL);
    cr_assert_eq(strlen(err), sizeof err - 1, "[%s]", err);
    cr_assert_str_eq(err + sizeof err - 4, "...");
    cr_assert(strncmp(err, "env PLEXUS_A: unknown variable", 30) == 0, "%s", err);
    /* No buffer at all: still the code. */
    cr_assert_eq(pxd_config_load(&c, 1, av, env, NULL, NULL, 0), PX_EINVAL);
    pxd_config_free(&c);
}
