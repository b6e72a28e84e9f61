/*
 * plexctl — the plexus cluster admin CLI. `plexctl help` has the usage;
 * README "plexctl" has the reference. Talks to etcd (the node list) and
 * to nodes' admin channels (plexus/admin.h: authenticated with the
 * cluster secret and this client's key, encrypted).
 *
 * Exit codes: 0 ok, 1 the operation failed (unknown actor, bad message,
 * refused), 2 usage, 3 unreachable (etcd, or no node answered).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <nng/nng.h>
#include <sodium.h>

#include <plexus/admin.h>
#include <plexus/etcd.h>
#include <plexus/plexus.h>
#include <plexus/transport.h>

#include "plexus/admin.pb-c.h"
#include "text.h"
#include "plexus/plexus.pb-c.h"

enum { EXIT_OK = 0, EXIT_ERR = 1, EXIT_USAGE = 2, EXIT_UNREACHABLE = 3 };

#define MAX_NODES 64
#define MAX_ARGS 8
#define DEFAULT_TIMEOUT_MS 10000 /* --timeout when not given */
#define STR_(x) #x
#define STR(x) STR_(x)

typedef struct opts {
    const char *endpoints, *cluster, *secret_file, *key_file, *node, *admin;
    bool json, help;
    uint32_t timeout_ms;
    /* per command */
    uint32_t limit;
    const char *on, *role, *name, *global, *arg_type, *arg;
    bool membership, failures;
    long count;
    uint32_t for_ms;
    const char *pos[MAX_ARGS];
    int npos;
} opts;

typedef struct node_ent {
    char name[64];
    char address[160], admin[160], http[160];
    uint32_t inc;
    int64_t started_ms;
    uint64_t actors;
    bool leaving, in_etcd;
    char roles[256];
    char state[24];
    char why[160];
} node_ent;

static const char *prog = "plexctl";

static void die_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die_usage(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", prog);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (plexctl help)\n");
    va_end(ap);
    exit(EXIT_USAGE);
}

static int fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return code;
}

/* ---- help ---- */

/* A command: its words (the command itself included) and its help. */
typedef struct cmd_help {
    const char *name;
    int min_words, max_words;
    const char *synopsis, *text, *examples;
} cmd_help;

static const cmd_help helps[] = {
    {"nodes", 1, 1, "nodes", "The nodes of the cluster: those registered in etcd (state up, or leaving),\n"
     "and those one reachable node remembers (down, left, fenced), with the cause of\n"
     "their last change.",
     "plexctl nodes\n  plexctl nodes --json | jq '.[] | select(.state != \"up\")'"},
    {"why", 2, 2, "why NODE", "NODE's membership history as a node sees it (--node picks the observer):\n"
     "every state change with its cause and time.",
     "plexctl why b\n  plexctl why b --node c --json"},
    {"actors", 1, 1, "actors [--node N] [--limit K]", "Live actors with their supervisor's view and\n"
     "mailbox figures, on every node (or N).",
     "plexctl actors --node a\n  plexctl actors --json | jq '.[].actors | length'"},
    {"top", 1, 1, "top [--node N] [--limit K]", "The busiest mailboxes (deepest first), default 10 per node.",
     "plexctl top --limit 5"},
    {"tree", 1, 1, "tree [--node N]", "Supervision trees of every node (or N). A child placed on another\n"
     "node shows where it runs (on=NODE) and its instance there.",
     "plexctl tree\n  plexctl tree --node a --json"},
    {"spawn", 2, 2, "spawn BEHAVIOR [--name N] [--global G] [--arg-type TYPE --arg JSON] [--on NODE | --role R]",
     "Starts an actor. The node asked (--node, or any) runs it, or places it on NODE / a\n"
     "node with role R. --name registers a local name, --global a cluster-wide one (only\n"
     "on the node that runs it).",
     "plexctl spawn kv.shard --node b --global kv.extra\n"
     "  plexctl spawn echo --on c"},
    {"send", 4, 4, "send TARGET TYPE JSON", "Sends a message: TARGET is a ref (as printed by actors/tree), a\n"
     "local name of the node asked, or a global name; TYPE a registered protobuf type\n"
     "(plexctl types); JSON the message (proto3 JSON mapping).",
     "plexctl send kv.0 plexus.kv.Put '{\"key\":\"k\",\"value\":\"aGk=\"}'"},
    {"ask", 4, 4, "ask TARGET TYPE JSON [--timeout MS]", "Like send, and prints the reply.",
     "plexctl ask kv.0 plexus.kv.Get '{\"key\":\"k\"}'\n"
     "  plexctl ask echo plexus.kv.Ping '{\"text\":\"hi\"}' --json"},
    {"stop", 2, 2, "stop TARGET", "Stops an actor (its supervisor decides what happens next).",
     "plexctl stop 0c1d2e3f.5a/12.1"},
    {"watch", 1, 1, "watch [--membership] [--failures] [--count N] [--for MS]",
     "Streams membership changes and actor failures from every node (or --node) until\n"
     "interrupted, N events, or MS milliseconds.",
     "plexctl watch --failures\n  plexctl watch --count 1 --for 10000 --json"},
    {"stats", 1, 1, "stats [--node N]", "Counters of each node: actors, messages, dead letters, restarts,\n"
     "links, membership, admin.", "plexctl stats --node a --json"},
    {"drain", 2, 2, "drain NODE [--timeout MS]", "Drains NODE: it leaves the cluster (supervisors elsewhere\n"
     "re-place its children), works off its mailboxes, flushes its links and exits.\n"
     "Progress is shown as it goes.", "plexctl drain c"},
    {"names", 1, 1, "names", "Global names and the actors they point to.", "plexctl names --json"},
    {"types", 1, 1, "types [--node N]", "Behaviors and message types a node knows.", "plexctl types"},
    {"info", 1, 1, "info [--node N]", "One node's identity, addresses, phase and readiness.",
     "plexctl info --node a"},
};

static void usage(FILE *f) {
    fprintf(f,
            "usage: plexctl [options] COMMAND [args]\n\n"
            "Commands:\n");
    for (size_t i = 0; i < sizeof helps / sizeof helps[0]; i++) {
        fprintf(f, "  %s\n", helps[i].synopsis);
    }
    fprintf(f,
            "  help [COMMAND]\n\n"
            "Options (also after the command):\n"
            "  --endpoints URLS   etcd endpoints, comma-separated (env\n"
            "                     PLEXUS_CLUSTER_ETCD_ENDPOINTS, as plexusd reads it)\n"
            "  --cluster NAME     cluster name (env PLEXUS_CLUSTER_NAME, default plexus)\n"
            "  --secret-file PATH the cluster secret (env PLEXUS_CLUSTER_SECRET_FILE); never on the\n"
            "                     command line itself\n"
            "  --key-file PATH    this client's identity key, created if missing (env\n"
            "                     PLEXCTL_KEY_FILE, default ~/.config/plexus/plexctl.key)\n"
            "  --node NAME        the node to ask (default: every node, or any one)\n"
            "  --admin URL        ask the node at this admin address (no etcd needed;\n"
            "                     env PLEXCTL_ADMIN)\n"
            "  --json             JSON for scripts instead of tables\n"
            "  --timeout MS       per request (default " STR(DEFAULT_TIMEOUT_MS) ")\n\n"
            "Exit codes: 0 ok, 1 the operation failed, 2 usage, 3 unreachable (etcd or nodes).\n");
}

/* The command named cmd, or NULL. */
static const cmd_help *find_cmd(const char *cmd) {
    for (size_t i = 0; i < sizeof helps / sizeof helps[0]; i++) {
        if (strcmp(helps[i].name, cmd) == 0) {
            return &helps[i];
        }
    }
    return NULL;
}

static int help_cmd(const char *cmd) {
    const cmd_help *h = find_cmd(cmd);
    if (h == NULL) {
        return fail(EXIT_USAGE, "no command \"%s\" (plexctl help)", cmd);
    }
    printf("usage: plexctl %s\n\n%s\n\nExamples:\n  %s\n", h->synopsis, h->text, h->examples);
    return EXIT_OK;
}

/* ---- options ---- */

static uint32_t parse_u32(const char *flag, const char *v) {
    char *end = NULL;
    errno = 0;
    unsigned long x = strtoul(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0' || x > UINT32_MAX || v[0] == '-') {
        die_usage("%s: \"%s\" is not a number", flag, v);
    }
    return (uint32_t)x;
}

static void parse_opts(int argc, char **argv, opts *o) {
    memset(o, 0, sizeof *o);
    o->endpoints = getenv("PLEXUS_CLUSTER_ETCD_ENDPOINTS");
    o->cluster = getenv("PLEXUS_CLUSTER_NAME");
    o->secret_file = getenv("PLEXUS_CLUSTER_SECRET_FILE");
    o->key_file = getenv("PLEXCTL_KEY_FILE");
    o->admin = getenv("PLEXCTL_ADMIN");
    o->timeout_ms = DEFAULT_TIMEOUT_MS;
    o->count = -1;
    static const char *const valued[] = {"--endpoints", "--cluster", "--secret-file", "--key-file",
                                         "--node", "--admin", "--timeout", "--limit", "--on",
                                         "--role", "--name", "--global", "--arg-type", "--arg",
                                         "--count", "--for", NULL};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
            if (o->npos >= MAX_ARGS) {
                die_usage("too many arguments");
            }
            o->pos[o->npos++] = a;
            continue;
        }
        char key[32];
        const char *val = NULL;
        const char *eq = strchr(a, '=');
        snprintf(key, sizeof key, "%.*s", eq != NULL ? (int)(eq - a) : (int)strlen(a), a);
        bool takes = false;
        for (size_t k = 0; valued[k] != NULL; k++) {
            takes = takes || strcmp(valued[k], key) == 0;
        }
        if (takes) {
            if (eq != NULL) {
                val = eq + 1;
            } else if (i + 1 < argc) {
                val = argv[++i];
            } else {
                die_usage("%s needs a value", key);
            }
        } else if (eq != NULL) {
            die_usage("%s takes no value", key);
        }
        if (strcmp(key, "--json") == 0) o->json = true;
        else if (strcmp(key, "--help") == 0) o->help = true;
        else if (strcmp(key, "--membership") == 0) o->membership = true;
        else if (strcmp(key, "--failures") == 0) o->failures = true;
        else if (strcmp(key, "--endpoints") == 0) o->endpoints = val;
        else if (strcmp(key, "--cluster") == 0) o->cluster = val;
        else if (strcmp(key, "--secret-file") == 0) o->secret_file = val;
        else if (strcmp(key, "--key-file") == 0) o->key_file = val;
        else if (strcmp(key, "--node") == 0) o->node = val;
        else if (strcmp(key, "--admin") == 0) o->admin = val;
        else if (strcmp(key, "--timeout") == 0) o->timeout_ms = parse_u32(key, val);
        else if (strcmp(key, "--limit") == 0) o->limit = parse_u32(key, val);
        else if (strcmp(key, "--on") == 0) o->on = val;
        else if (strcmp(key, "--role") == 0) o->role = val;
        else if (strcmp(key, "--name") == 0) o->name = val;
        else if (strcmp(key, "--global") == 0) o->global = val;
        else if (strcmp(key, "--arg-type") == 0) o->arg_type = val;
        else if (strcmp(key, "--arg") == 0) o->arg = val;
        else if (strcmp(key, "--count") == 0) o->count = parse_u32(key, val);
        else if (strcmp(key, "--for") == 0) o->for_ms = parse_u32(key, val);
        else die_usage("unknown option %s", key);
    }
    if (o->cluster == NULL || o->cluster[0] == '\0') {
        o->cluster = "plexus";
    }
    if (o->timeout_ms == 0) {
        die_usage("--timeout must be at least 1 ms");
    }
}

/* ---- credentials ---- */

typedef struct creds {
    px_identity id;
    uint8_t key[PX_SECRET_BYTES];
} creds;

static int load_creds(const opts *o, creds *c) {
    if (o->secret_file == NULL || o->secret_file[0] == '\0') {
        die_usage("the cluster secret is needed: --secret-file PATH or PLEXUS_CLUSTER_SECRET_FILE");
    }
    char err[256] = "";
    if (px_secret_load(o->secret_file, c->key, err, sizeof err) != PX_OK) {
        return fail(EXIT_ERR, "secret file %s: %s", o->secret_file, err);
    }
    char path[512];
    if (o->key_file != NULL && o->key_file[0] != '\0') {
        snprintf(path, sizeof path, "%s", o->key_file);
    } else {
        const char *home = getenv("HOME");
        if (home == NULL || home[0] == '\0') {
            die_usage("no HOME for the default key file: give --key-file or PLEXCTL_KEY_FILE");
        }
        snprintf(path, sizeof path, "%s/.config", home);
        (void)mkdir(path, 0700);
        snprintf(path, sizeof path, "%s/.config/plexus", home);
        (void)mkdir(path, 0700);
        snprintf(path, sizeof path, "%s/.config/plexus/plexctl.key", home);
    }
    if (px_identity_load(path, true, &c->id, err, sizeof err) != PX_OK) {
        return fail(EXIT_ERR, "key file %s: %s", path, err);
    }
    return EXIT_OK;
}

/* The bound on connecting (etcd requests, admin dials): --timeout, at most 5 s. */
static uint32_t connect_timeout_ms(const opts *o) {
    return o->timeout_ms < 5000 ? o->timeout_ms : 5000;
}

/* ---- etcd: the node list ---- */

/* The nodes registered in etcd into out (up to MAX_NODES), their number in
 * *n. o->endpoints is set: the callers die_usage without it. */
static int etcd_nodes(const opts *o, node_ent *out, size_t *n) {
    *n = 0;
    px_etcd_cfg ec;
    px_etcd_cfg_init(&ec);
    ec.endpoints = o->endpoints;
    ec.request_timeout_ms = connect_timeout_ms(o);
    ec.log_level = PX_LOG_OFF;
    px_etcd *e = NULL;
    char err[256] = "";
    if (px_etcd_open(&e, &ec, err, sizeof err) != PX_OK) {
        return fail(EXIT_USAGE, "--endpoints %s: %s", o->endpoints, err);
    }
    char prefix[256];
    snprintf(prefix, sizeof prefix, "/plexus/%s/nodes/", o->cluster);
    px_etcd_waiter *w = NULL;
    px_etcd_res *r = NULL;
    px_err rv = px_etcd_waiter_alloc(&w);
    if (rv == PX_OK) {
        rv = px_etcd_get(e, prefix, true, 0, 0, px_etcd_waiter_cb, w);
        if (rv == PX_OK) {
            rv = px_etcd_waiter_take(w, &r);
        } else {
            px_etcd_waiter_free(w);
        }
    }
    int code = EXIT_OK;
    if (rv != PX_OK) {
        code = fail(EXIT_UNREACHABLE, "etcd at %s: %s%s%s", o->endpoints, px_strerror(rv),
                    r != NULL && r->msg[0] ? ": " : "", r != NULL ? r->msg : "");
    }
    for (size_t i = 0; rv == PX_OK && r != NULL && i < r->nkvs && *n < MAX_NODES; i++) {
        Plexus__NodeInfo *ni =
            plexus__node_info__unpack(NULL, r->kvs[i].value_len, r->kvs[i].value);
        if (ni == NULL) {
            fprintf(stderr, "%s: etcd key %s does not hold a NodeInfo; skipped\n", prog,
                    r->kvs[i].key);
            continue;
        }
        node_ent *ne = &out[(*n)++];
        memset(ne, 0, sizeof *ne);
        snprintf(ne->name, sizeof ne->name, "%s", ni->name);
        snprintf(ne->address, sizeof ne->address, "%s", ni->address);
        snprintf(ne->admin, sizeof ne->admin, "%s", ni->admin_address);
        snprintf(ne->http, sizeof ne->http, "%s", ni->http_address);
        ne->inc = ni->node_inc;
        ne->started_ms = ni->started_ms;
        ne->actors = ni->actors;
        ne->leaving = ni->leaving;
        ne->in_etcd = true;
        snprintf(ne->state, sizeof ne->state, "%s", ni->leaving ? "leaving" : "up");
        for (size_t k = 0; k < ni->n_roles; k++) {
            size_t l = strlen(ne->roles);
            snprintf(ne->roles + l, sizeof ne->roles - l, "%s%s", k ? "," : "", ni->roles[k]);
        }
        plexus__node_info__free_unpacked(ni, NULL);
    }
    px_etcd_res_free(r);
    px_etcd_close(e);
    return code;
}

/* ---- the admin channel ---- */

typedef struct conn {
    px_admin_client *c;
    char node[64];
    uint64_t next_id;
} conn;

static int dial(const opts *o, const creds *cr, const char *url, conn *out, bool quiet) {
    memset(out, 0, sizeof *out);
    char name[64], err[256] = "";
    snprintf(name, sizeof name, "plexctl-%ld", (long)getpid());
    px_err e = px_admin_dial(url, name, &cr->id, cr->key, connect_timeout_ms(o), &out->c, out->node,
                             err, sizeof err);
    if (e == PX_OK) {
        out->next_id = 1;
        return EXIT_OK;
    }
    int code = e == PX_EAUTH || e == PX_EVERSION ? EXIT_ERR : EXIT_UNREACHABLE;
    if (!quiet) {
        fail(code, "admin endpoint %s: %s%s%s", url, px_strerror(e), err[0] ? ": " : "", err);
    }
    return code;
}

/* Sends rq (id set here). */
static int send_req(const opts *o, conn *c, Plexus__Admin__AdminRequest *rq) {
    rq->id = c->next_id++;
    size_t len = plexus__admin__admin_request__get_packed_size(rq);
    uint8_t *buf = malloc(len > 0 ? len : 1);
    if (buf == NULL) {
        return fail(EXIT_ERR, "out of memory");
    }
    plexus__admin__admin_request__pack(rq, buf);
    px_err e = px_admin_client_send(c->c, buf, len, o->timeout_ms);
    free(buf);
    if (e != PX_OK) {
        return fail(EXIT_UNREACHABLE, "node %s: %s", c->node, px_strerror(e));
    }
    return EXIT_OK;
}

/* The next reply (PX_ETIMEDOUT: none within ms). */
static px_err recv_reply(conn *c, uint32_t ms, Plexus__Admin__AdminReply **out) {
    uint8_t *d = NULL;
    size_t len = 0;
    px_err e = px_admin_client_recv(c->c, ms, &d, &len);
    if (e != PX_OK) {
        return e;
    }
    *out = plexus__admin__admin_reply__unpack(NULL, len, d);
    free(d);
    return *out != NULL ? PX_OK : PX_EPROTO;
}

/* One request, its final reply's JSON into *result (json_t, yours).
 * progress (may be NULL) gets each `more` reply's JSON. */
static int call(const opts *o, conn *c, Plexus__Admin__AdminRequest *rq, json_t **result,
                void (*progress)(const opts *, conn *, json_t *)) {
    *result = NULL;
    int code = send_req(o, c, rq);
    if (code != EXIT_OK) {
        return code;
    }
    for (;;) {
        Plexus__Admin__AdminReply *r = NULL;
        px_err e = recv_reply(c, o->timeout_ms, &r);
        if (e != PX_OK) {
            return fail(EXIT_UNREACHABLE, "node %s: no answer: %s", c->node, px_strerror(e));
        }
        if (r->id != rq->id) {
            plexus__admin__admin_reply__free_unpacked(r, NULL);
            continue;
        }
        if (r->code != 0) {
            code = fail(EXIT_ERR, "%s: %s", c->node, r->error[0] ? r->error : px_strerror(r->code));
            plexus__admin__admin_reply__free_unpacked(r, NULL);
            return code;
        }
        json_t *j = json_loads(r->json, 0, NULL);
        bool more = r->more;
        plexus__admin__admin_reply__free_unpacked(r, NULL);
        if (more) {
            if (progress != NULL && j != NULL) {
                progress(o, c, j);
            }
            json_decref(j);
            continue;
        }
        if (j == NULL) {
            return fail(EXIT_ERR, "node %s sent a result that is not JSON", c->node);
        }
        *result = j;
        return EXIT_OK;
    }
}

/* The admin addresses to ask: --admin, or --node's from etcd, or all. */
typedef struct targets {
    node_ent n[MAX_NODES];
    size_t count;
} targets;

static int find_targets(const opts *o, targets *t, bool all) {
    t->count = 0;
    if (o->admin != NULL && o->admin[0] != '\0') {
        memset(&t->n[0], 0, sizeof t->n[0]);
        snprintf(t->n[0].admin, sizeof t->n[0].admin, "%s", o->admin);
        snprintf(t->n[0].name, sizeof t->n[0].name, "%s", o->node ? o->node : "");
        t->count = 1;
        return EXIT_OK;
    }
    if (o->endpoints == NULL || o->endpoints[0] == '\0') {
        die_usage("no cluster to ask: give --endpoints (or PLEXUS_CLUSTER_ETCD_ENDPOINTS), or --admin URL");
    }
    node_ent *all_n = calloc(MAX_NODES, sizeof *all_n);
    size_t k = 0;
    int code = all_n != NULL ? etcd_nodes(o, all_n, &k) : fail(EXIT_ERR, "out of memory");
    for (size_t i = 0; code == EXIT_OK && i < k; i++) {
        if (all_n[i].admin[0] == '\0') {
            continue; /* a node without an admin endpoint (not plexusd) */
        }
        if (o->node != NULL && strcmp(o->node, all_n[i].name) != 0) {
            continue;
        }
        if (!all && o->node == NULL && t->count == 1) {
            break;
        }
        t->n[t->count++] = all_n[i];
    }
    free(all_n);
    if (code != EXIT_OK) {
        return code;
    }
    if (t->count == 0) {
        return o->node != NULL
                   ? fail(EXIT_UNREACHABLE, "node %s is not registered in cluster %s", o->node,
                          o->cluster)
                   : fail(EXIT_UNREACHABLE, "no node with an admin endpoint is registered in "
                                            "cluster %s", o->cluster);
    }
    return EXIT_OK;
}

/* find_targets into a new targets (Caller owns result: free it). On failure
 * *out stays NULL and nothing needs freeing. */
static int get_targets(const opts *o, bool all, targets **out) {
    *out = NULL;
    targets *t = calloc(1, sizeof *t);
    if (t == NULL) {
        return fail(EXIT_ERR, "out of memory");
    }
    int code = find_targets(o, t, all);
    if (code != EXIT_OK) {
        free(t);
        return code;
    }
    *out = t;
    return EXIT_OK;
}

/* Connects to the first target that answers (any one is fine). */
static int dial_any(const opts *o, const creds *cr, targets *t, conn *c) {
    int code = EXIT_UNREACHABLE;
    for (size_t i = 0; i < t->count; i++) {
        code = dial(o, cr, t->n[i].admin, c, t->count > 1 && i + 1 < t->count);
        if (code == EXIT_OK || code == EXIT_ERR) {
            return code;
        }
    }
    return code;
}

/* ---- output helpers ---- */

static void print_json(json_t *j) {
    char *t = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (t != NULL) {
        printf("%s\n", t);
        free(t);
    }
}

/* j as one compact line ({} if it cannot be dumped). */
static void print_json_line(json_t *j) {
    char *t = json_dumps(j, JSON_COMPACT);
    printf("%s\n", t != NULL ? t : "{}");
    free(t);
}

static const char *js(json_t *o, const char *k) {
    const char *s = json_string_value(json_object_get(o, k));
    return s != NULL ? s : "";
}

static long long ji(json_t *o, const char *k) {
    return (long long)json_integer_value(json_object_get(o, k));
}

static void fmt_time(int64_t ms, char *out, size_t len) {
    if (ms <= 0) {
        snprintf(out, len, "-");
        return;
    }
    pxu_iso_ms(ms, out, len);
}

/* ---- commands ---- */

static Plexus__Admin__Empty empty = PLEXUS__ADMIN__EMPTY__INIT;

static int cmd_nodes(const opts *o, const creds *cr) {
    node_ent *ns = calloc(MAX_NODES, sizeof *ns);
    if (ns == NULL) {
        return fail(EXIT_ERR, "out of memory");
    }
    size_t k = 0;
    if (o->endpoints == NULL || o->endpoints[0] == '\0') {
        free(ns);
        die_usage("nodes reads etcd: give --endpoints or PLEXUS_CLUSTER_ETCD_ENDPOINTS");
    }
    int code = etcd_nodes(o, ns, &k);
    if (code != EXIT_OK) {
        free(ns);
        return code;
    }
    /* One reachable node's view adds the causes and the nodes gone from etcd. */
    targets *t = calloc(1, sizeof *t);
    conn c;
    for (size_t i = 0; t != NULL && i < k && t->count < MAX_NODES; i++) {
        if (ns[i].admin[0] != '\0') {
            t->n[t->count++] = ns[i];
        }
    }
    if (t != NULL && t->count > 0 && dial_any(o, cr, t, &c) == EXIT_OK) {
        Plexus__Admin__AdminRequest rq = PLEXUS__ADMIN__ADMIN_REQUEST__INIT;
        Plexus__Admin__WhyReq wr = PLEXUS__ADMIN__WHY_REQ__INIT;
        rq.op_case = PLEXUS__ADMIN__ADMIN_REQUEST__OP_WHY;
        rq.why = &wr;
        json_t *res = NULL;
        if (call(o, &c, &rq, &res, NULL) == EXIT_OK) {
            size_t i;
            json_t *ev;
            json_array_foreach(json_object_get(res, "events"), i, ev) {
                node_ent *ne = NULL;
                for (size_t j = 0; j < k; j++) {
                    if (strcmp(ns[j].name, js(ev, "member")) == 0) {
                        ne = &ns[j];
                    }
                }
                if (ne == NULL && k < MAX_NODES) {
                    ne = &ns[k++];
                    memset(ne, 0, sizeof *ne);
                    snprintf(ne->name, sizeof ne->name, "%s", js(ev, "member"));
                }
                if (ne == NULL) {
                    continue;
                }
                snprintf(ne->why, sizeof ne->why, "%s", js(ev, "cause"));
                if (!ne->in_etcd) {
                    snprintf(ne->state, sizeof ne->state, "%s", js(ev, "to"));
                    ne->inc = (uint32_t)ji(ev, "inc");
                } else if (!ne->leaving && (uint32_t)ji(ev, "inc") == ne->inc) {
                    /* registered: the observer's latest word (joining while
                     * its link is not up, unreachable, up) */
                    snprintf(ne->state, sizeof ne->state, "%s", js(ev, "to"));
                }
            }
            json_decref(res);
        }
        px_admin_client_close(c.c);
    }
    free(t);
    if (o->json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < k; i++) {
            node_ent *e = &ns[i];
            json_array_append_new(arr, json_pack("{s:s, s:s, s:I, s:s, s:s, s:s, s:s, s:I, s:I, s:s, s:b}",
                                                 "name", e->name, "state", e->state, "inc", (json_int_t)e->inc,
                                                 "address", e->address, "admin", e->admin, "http", e->http,
                                                 "roles", e->roles, "actors", (json_int_t)e->actors,
                                                 "started_ms", (json_int_t)e->started_ms, "why", e->why,
                                                 "registered", e->in_etcd));
        }
        print_json(arr);
        json_decref(arr);
    } else {
        printf("%-12s %-12s %-9s %-26s %-26s %-14s %7s  %s\n", "NAME", "STATE", "INC", "ADDRESS",
               "ADMIN", "ROLES", "ACTORS", "WHY");
        for (size_t i = 0; i < k; i++) {
            node_ent *e = &ns[i];
            char inc[16];
            snprintf(inc, sizeof inc, "%x", e->inc);
            printf("%-12s %-12s %-9s %-26s %-26s %-14s %7" PRIu64 "  %s\n", e->name, e->state, inc,
                   e->address[0] ? e->address : "-", e->admin[0] ? e->admin : "-",
                   e->roles[0] ? e->roles : "-", e->actors, e->why[0] ? e->why : "-");
        }
    }
    free(ns);
    return EXIT_OK;
}

/* Runs rq on one node (any, or --node) and hands the result to show. */
static int one_node(const opts *o, const creds *cr, Plexus__Admin__AdminRequest *rq,
                    void (*show)(const opts *, json_t *), void (*progress)(const opts *, conn *, json_t *)) {
    targets *t = NULL;
    int code = get_targets(o, false, &t);
    if (code != EXIT_OK) {
        return code;
    }
    conn c;
    code = dial_any(o, cr, t, &c);
    free(t);
    if (code != EXIT_OK) {
        return code;
    }
    json_t *res = NULL;
    code = call(o, &c, rq, &res, progress);
    px_admin_client_close(c.c);
    if (code == EXIT_OK) {
        if (o->json || show == NULL) {
            print_json(res);
        } else {
            show(o, res);
        }
    }
    json_decref(res);
    return code;
}

/* Runs rq on every node (or --node); results keyed by node. */
static int all_nodes(const opts *o, const creds *cr, Plexus__Admin__AdminRequest *rq,
                     void (*show)(const opts *, const char *, json_t *)) {
    targets *t = NULL;
    int code = get_targets(o, true, &t);
    if (code != EXIT_OK) {
        return code;
    }
    json_t *all = json_object();
    int worst = EXIT_OK, ok = 0;
    for (size_t i = 0; i < t->count; i++) {
        conn c;
        int cc = dial(o, cr, t->n[i].admin, &c, false);
        json_t *res = NULL;
        if (cc == EXIT_OK) {
            cc = call(o, &c, rq, &res, NULL);
            px_admin_client_close(c.c);
        }
        const char *name = t->n[i].name[0] ? t->n[i].name : c.node;
        if (cc != EXIT_OK) {
            worst = cc > worst ? cc : worst;
            continue;
        }
        ok++;
        if (o->json) {
            json_object_set_new(all, name, res);
        } else {
            show(o, name, res);
            json_decref(res);
        }
    }
    if (o->json) {
        print_json(all);
    }
    json_decref(all);
    free(t);
    /* a node that did not answer is an error even when others did */
    return ok == 0 && worst == EXIT_OK ? EXIT_UNREACHABLE : worst;
}

static void show_why(const opts *o, json_t *r) {
    (void)o;
    printf("membership history as %s sees it:\n", js(r, "observer"));
    printf("%-25s %-10s %-5s %-12s %-12s %s\n", "TIME", "NODE", "INC", "FROM", "TO", "CAUSE");
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(r, "events"), i, e) {
        char t[40], inc[16];
        fmt_time(ji(e, "at_ms"), t, sizeof t);
        snprintf(inc, sizeof inc, "%llx", ji(e, "inc"));
        printf("%-25s %-10s %-5s %-12s %-12s %s\n", t, js(e, "member"), inc,
               js(e, "from")[0] ? js(e, "from") : "-", js(e, "to"), js(e, "cause"));
    }
}

static void show_actors(const opts *o, const char *node, json_t *r) {
    (void)o;
    printf("node %s: %lld actors\n", node, ji(r, "total"));
    printf("  %-24s %-26s %-18s %-10s %8s %10s %8s\n", "REF", "BEHAVIOR", "ID", "STATE", "MAILBOX",
           "PROCESSED", "RESTARTS");
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(r, "actors"), i, a) {
        printf("  %-24s %-26s %-18s %-10s %8lld %10lld %8lld%s%s\n", js(a, "ref"),
               js(a, "behavior"), js(a, "id"), js(a, "state"), ji(a, "mailbox_depth"),
               ji(a, "processed"), ji(a, "restarts"), js(a, "node")[0] ? "  on=" : "",
               js(a, "node"));
    }
}

static void tree_lines(json_t *kids, const char *prefix) {
    size_t i, n = json_array_size(kids);
    json_t *k;
    json_array_foreach(kids, i, k) {
        bool last = i + 1 == n;
        printf("%s%s %s [%s] %s %s restarts=%lld mailbox=%lld", prefix, last ? "`--" : "|--",
               js(k, "id"), js(k, "behavior"), js(k, "ref"), js(k, "state"), ji(k, "restarts"),
               ji(k, "mailbox_depth"));
        if (js(k, "node")[0] != '\0') {
            printf(" on=%s remote=%s", js(k, "node"), js(k, "remote"));
        }
        if (js(k, "last_reason")[0] != '\0') {
            printf(" last=\"%s\"", js(k, "last_reason"));
        }
        printf("\n");
        char p[512];
        snprintf(p, sizeof p, "%s%s", prefix, last ? "    " : "|   ");
        tree_lines(json_object_get(k, "children"), p);
    }
}

static void show_tree(const opts *o, const char *node, json_t *r) {
    (void)o;
    printf("node %s (root %s)\n", node, js(r, "root"));
    tree_lines(json_object_get(r, "children"), "");
}

static void show_stats(const opts *o, const char *node, json_t *r) {
    (void)o;
    json_t *s = json_object_get(r, "system"), *t = json_object_get(r, "transport");
    json_t *c = json_object_get(r, "cluster"), *m = json_object_get(r, "mesh");
    printf("node %s\n", node);
    printf("  actors   live=%lld spawned=%lld stopped=%lld failures=%lld restarts=%lld\n",
           ji(s, "live_actors"), ji(s, "spawned"), ji(s, "stopped"), ji(s, "failures"),
           ji(s, "restarts"));
    printf("  messages delivered=%lld dead_letters=%lld dropped=%lld rejected=%lld "
           "ask_timeouts=%lld\n",
           ji(s, "messages"), ji(s, "dead_letters"), ji(s, "dropped"), ji(s, "rejected"),
           ji(s, "ask_timeouts"));
    if (t != NULL) {
        printf("  links    msgs_out=%lld msgs_in=%lld bytes_out=%lld bytes_in=%lld refused=%lld "
               "bad_frames=%lld\n",
               ji(t, "msgs_out"), ji(t, "msgs_in"), ji(t, "bytes_out"), ji(t, "bytes_in"),
               ji(t, "refused"), ji(t, "bad_frames"));
    }
    if (c != NULL) {
        printf("  cluster  registered=%s fenced=%s fences=%lld etcd_down_since_ms=%lld\n",
               json_is_true(json_object_get(c, "registered")) ? "yes" : "no",
               json_is_true(json_object_get(c, "fenced")) ? "yes" : "no", ji(c, "fences"),
               ji(c, "etcd_down_since_ms"));
    }
    if (m != NULL) {
        printf("  mesh     proxies=%lld hosted=%lld remote_watches=%lld lost_children=%lld\n",
               ji(m, "proxies"), ji(m, "hosted"), ji(m, "remote_watches"), ji(m, "lost_children"));
    }
}

static void show_spawn(const opts *o, json_t *r) {
    (void)o;
    printf("spawned %s on %s as %s\n", js(r, "behavior"), js(r, "node")[0] ? js(r, "node") : "?",
           js(r, "ref"));
}

static void show_send(const opts *o, json_t *r) {
    (void)o;
    json_t *rep = json_object_get(r, "reply");
    if (rep == NULL) {
        printf("sent to %s\n", js(r, "to"));
        return;
    }
    char *m = json_dumps(json_object_get(rep, "message") ? json_object_get(rep, "message") : rep,
                         JSON_COMPACT | JSON_PRESERVE_ORDER);
    printf("%s %s  (from %s in %lld ms)\n", js(rep, "type"), m != NULL ? m : "", js(r, "to"),
           ji(r, "ms"));
    free(m);
}

static void show_stop(const opts *o, json_t *r) {
    (void)o;
    printf("stopped %s\n", js(r, "stopped"));
}

static void show_names(const opts *o, json_t *r) {
    (void)o;
    printf("%-32s %-24s %s\n", "NAME", "REF", "NODE");
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(r, "names"), i, e) {
        printf("%-32s %-24s %s\n", js(e, "name"), js(e, "ref"), js(e, "node"));
    }
}

static void show_types(const opts *o, json_t *r) {
    (void)o;
    size_t i;
    json_t *e;
    printf("behaviors:\n");
    json_array_foreach(json_object_get(r, "behaviors"), i, e) {
        printf("  %s\n", json_string_value(e));
    }
    printf("message types:\n");
    json_array_foreach(json_object_get(r, "types"), i, e) {
        printf("  %s\n", json_string_value(e));
    }
}

static void show_info(const opts *o, json_t *r) {
    (void)o;
    bool ready = json_is_true(json_object_get(r, "ready"));
    printf("node %s: %s, %s%s%s\n", js(r, "node"), js(r, "phase"), ready ? "ready" : "not ready",
           ready ? "" : ": ", js(r, "not_ready"));
    printf("  address %s\n  admin   %s\n  cluster %s%s\n  uptime  %lld ms\n", js(r, "address"),
           js(r, "admin"), js(r, "cluster"),
           json_is_true(json_object_get(r, "standalone")) ? " (standalone)" : "",
           ji(r, "uptime_ms"));
}

static void drain_progress(const opts *o, conn *c, json_t *j) {
    if (o->json) {
        print_json_line(j);
    } else {
        const char *step = js(j, "step");
        if (strcmp(step, "mailboxes") == 0) {
            printf("  %s: %lld messages queued\n", c->node, ji(j, "queued"));
        } else if (json_object_get(j, "ms") != NULL) {
            printf("  %s: %s (%lld ms)\n", c->node, step, ji(j, "ms"));
        } else {
            printf("  %s: %s\n", c->node, step);
        }
    }
    fflush(stdout);
}

static void show_drain(const opts *o, json_t *r) {
    (void)o;
    printf("%s drained in %lld ms\n", js(r, "node"), ji(r, "ms"));
}

static int cmd_drain(const opts *o, const creds *cr) {
    opts o2 = *o;
    o2.node = o->pos[1];
    if (o2.timeout_ms < 60000) {
        o2.timeout_ms = 60000; /* the drain's own bound applies; this is the wait per reply */
    }
    Plexus__Admin__AdminRequest rq = PLEXUS__ADMIN__ADMIN_REQUEST__INIT;
    Plexus__Admin__DrainReq dr = PLEXUS__ADMIN__DRAIN_REQ__INIT;
    dr.timeout_ms = o->timeout_ms != DEFAULT_TIMEOUT_MS ? o->timeout_ms : 0;
    rq.op_case = PLEXUS__ADMIN__ADMIN_REQUEST__OP_DRAIN;
    rq.drain = &dr;
    if (!o->json) {
        printf("draining %s...\n", o2.node);
    }
    return one_node(&o2, cr, &rq, show_drain, drain_progress);
}

static void print_event(const opts *o, const char *node, json_t *e) {
    if (o->json) {
        print_json_line(e);
    } else if (strcmp(js(e, "event"), "member") == 0) {
        char t[40];
        fmt_time(ji(e, "at_ms"), t, sizeof t);
        printf("%s  %-8s member %s: %s -> %s (%s)\n", t, node, js(e, "member"),
               js(e, "from")[0] ? js(e, "from") : "new", js(e, "to"), js(e, "cause"));
    } else {
        char t[40];
        fmt_time(ji(e, "at_ms"), t, sizeof t);
        printf("%s  %-8s failure %s (%s): %s %s\n", t, node, js(e, "ref"), js(e, "behavior"),
               js(e, "code"), js(e, "reason"));
    }
    fflush(stdout);
}

static int cmd_watch(const opts *o, const creds *cr) {
    targets *t = NULL;
    int code = get_targets(o, true, &t);
    if (code != EXIT_OK) {
        return code;
    }
    conn *cs = calloc(MAX_NODES, sizeof *cs);
    size_t nc = 0;
    Plexus__Admin__AdminRequest rq = PLEXUS__ADMIN__ADMIN_REQUEST__INIT;
    Plexus__Admin__WatchReq wr = PLEXUS__ADMIN__WATCH_REQ__INIT;
    wr.membership = o->membership;
    wr.failures = o->failures;
    rq.op_case = PLEXUS__ADMIN__ADMIN_REQUEST__OP_WATCH;
    rq.watch = &wr;
    for (size_t i = 0; cs != NULL && i < t->count; i++) {
        if (dial(o, cr, t->n[i].admin, &cs[nc], false) == EXIT_OK) {
            if (send_req(o, &cs[nc], &rq) == EXIT_OK) {
                nc++;
            } else {
                px_admin_client_close(cs[nc].c);
            }
        }
    }
    free(t);
    if (code == EXIT_OK && nc == 0) {
        code = fail(EXIT_UNREACHABLE, "no node to watch answered");
    }
    long seen = 0;
    int64_t end = o->for_ms > 0 ? pxu_mono_ms() + o->for_ms : INT64_MAX;
    size_t open = nc;
    while (code == EXIT_OK && open > 0 && (o->count < 0 || seen < o->count) && pxu_mono_ms() < end) {
        for (size_t i = 0; i < nc && (o->count < 0 || seen < o->count); i++) {
            if (cs[i].c == NULL) {
                continue;
            }
            Plexus__Admin__AdminReply *r = NULL;
            px_err e = recv_reply(&cs[i], 50, &r);
            if (e == PX_ETIMEDOUT) {
                continue;
            }
            if (e != PX_OK || !r->more) {
                if (e == PX_OK && r->code != 0) {
                    fail(EXIT_ERR, "%s: %s", cs[i].node, r->error);
                }
                if (r != NULL) {
                    plexus__admin__admin_reply__free_unpacked(r, NULL);
                }
                px_admin_client_close(cs[i].c);
                cs[i].c = NULL;
                open--;
                continue;
            }
            json_t *j = json_loads(r->json, 0, NULL);
            plexus__admin__admin_reply__free_unpacked(r, NULL);
            const char *ev = js(j, "event");
            if (j != NULL && strcmp(ev, "tick") != 0 && strcmp(ev, "watching") != 0) {
                print_event(o, cs[i].node, j);
                seen++;
            }
            json_decref(j);
        }
    }
    for (size_t i = 0; cs != NULL && i < nc; i++) {
        px_admin_client_close(cs[i].c);
    }
    free(cs);
    if (code == EXIT_OK && o->count > 0 && seen < o->count) {
        return fail(EXIT_ERR, "%ld of %ld events seen before the end", seen, o->count);
    }
    return code;
}

int main(int argc, char **argv) {
    opts o;
    parse_opts(argc, argv, &o);
    if (o.npos == 0) {
        usage(o.help ? stdout : stderr);
        return o.help ? EXIT_OK : EXIT_USAGE;
    }
    const char *cmd = o.pos[0];
    if (strcmp(cmd, "help") == 0) {
        if (o.npos > 1) {
            return help_cmd(o.pos[1]);
        }
        usage(stdout);
        return EXIT_OK;
    }
    if (o.help) {
        return help_cmd(cmd);
    }
    const cmd_help *h = find_cmd(cmd);
    if (h == NULL) {
        die_usage("unknown command \"%s\"", cmd);
    }
    /* Arity is checked before anything touches the network. */
    if (o.npos < h->min_words || o.npos > h->max_words) {
        die_usage("usage: plexctl %s", h->synopsis);
    }
    if ((o.on != NULL || o.role != NULL || o.name != NULL || o.global != NULL || o.arg != NULL ||
         o.arg_type != NULL) && strcmp(cmd, "spawn") != 0) {
        die_usage("--on, --role, --name, --global, --arg and --arg-type are for spawn");
    }
    if ((o.arg != NULL) != (o.arg_type != NULL)) {
        die_usage("--arg and --arg-type go together");
    }
    if (o.on != NULL && o.role != NULL) {
        die_usage("spawn: --on or --role, not both");
    }
    if (o.arg != NULL) {
        json_error_t je;
        json_t *j = json_loads(o.arg, 0, &je);
        if (j == NULL) {
            die_usage("--arg: not JSON: %s (column %d)", je.text, je.column);
        }
        json_decref(j);
    }
    if (strcmp(cmd, "send") == 0 || strcmp(cmd, "ask") == 0) {
        json_error_t je;
        json_t *j = json_loads(o.pos[3], 0, &je);
        if (j == NULL) {
            die_usage("%s: the message is not JSON: %s (column %d)", cmd, je.text, je.column);
        }
        json_decref(j);
    }
    creds cr;
    int code = load_creds(&o, &cr);
    if (code != EXIT_OK) {
        return code;
    }
    Plexus__Admin__AdminRequest rq = PLEXUS__ADMIN__ADMIN_REQUEST__INIT;
    if (strcmp(cmd, "nodes") == 0) {
        code = cmd_nodes(&o, &cr);
    } else if (strcmp(cmd, "why") == 0) {
        Plexus__Admin__WhyReq wr = PLEXUS__ADMIN__WHY_REQ__INIT;
        wr.node = (char *)o.pos[1];
        rq.op_case = PLEXUS__ADMIN__ADMIN_REQUEST__OP_WHY;
        rq.why = &wr;
        code = one_node(&o, &cr, &rq, show_why, NULL);
    } else if (strcmp(cmd, "actors") == 0 || strcmp(cmd, "top") == 0) {
        Plexus__Admin__ActorsReq ar = PLEXUS__ADMIN__ACTORS_REQ__INIT;
        ar.by_depth = strcmp(cmd, "top") == 0;
        ar.limit = o.limit > 0 ? o.limit : ar.by_depth ? 10 : 0;
        rq.op_case = PLEXUS__ADMIN__ADMIN_REQUEST__OP_ACTORS;
        rq.actors = &ar;
        code = all_nodes(&o, &cr, &rq, show_actors);
    } else if (strcmp(cmd, "tree") == 0) {
        rq.op_case = PLEXUS__ADMIN__ADMIN_REQUEST__OP_TREE;
        rq.tree = &empty;
        code = all_nodes(&o, &cr, &rq, show_tree);
    } else if (strcmp(cmd, "spawn") == 0) {
        Plexus__Admin__SpawnReq sr = PLEXUS__ADMIN__SPAWN_REQ__INIT;
        sr.behavior = (char *)o.pos[1];
        sr.name = (char *)(o.name ? o.name : "");
        sr.global_name = (char *)(o.global ? o.global : "");
        sr.arg_type = (char *)(o.arg_type ? o.arg_type : "");
        sr.arg_json = (char *)(o.arg ? o.arg : "");
        sr.node = (char *)(o.on ? o.on : "");
        sr.role = (char *)(o.role ? o.role : "");
        rq.op_case = PLEXUS__ADMIN__ADMIN_REQUEST__OP_SPAWN;
        rq.spawn = &sr;
        code = one_node(&o, &cr, &rq, show_spawn, NULL);
    } else if (strcmp(cmd, "send") == 0 || strcmp(cmd, "ask") == 0) {
        Plexus__Admin__SendReq sr = PLEXUS__ADMIN__SEND_REQ__INIT;
        sr.target = (char *)o.pos[1];
        sr.type = (char *)o.pos[2];
        sr.json = (char *)o.pos[3];
        sr.ask = strcmp(cmd, "ask") == 0;
        sr.timeout_ms = o.timeout_ms;
        rq.op_case = PLEXUS__ADMIN__ADMIN_REQUEST__OP_SEND;
        rq.send = &sr;
        opts o2 = o;
        o2.timeout_ms = o.timeout_ms + 2000; /* the node's ask times out first */
        code = one_node(&o2, &cr, &rq, show_send, NULL);
    } else if (strcmp(cmd, "stop") == 0) {
        Plexus__Admin__TargetReq tr = PLEXUS__ADMIN__TARGET_REQ__INIT;
        tr.target = (char *)o.pos[1];
        rq.op_case = PLEXUS__ADMIN__ADMIN_REQUEST__OP_STOP;
        rq.stop = &tr;
        code = one_node(&o, &cr, &rq, show_stop, NULL);
    } else if (strcmp(cmd, "watch") == 0) {
        code = cmd_watch(&o, &cr);
    } else if (strcmp(cmd, "stats") == 0) {
        rq.op_case = PLEXUS__ADMIN__ADMIN_REQUEST__OP_STATS;
        rq.stats = &empty;
        code = all_nodes(&o, &cr, &rq, show_stats);
    } else if (strcmp(cmd, "drain") == 0) {
        code = cmd_drain(&o, &cr);
    } else if (strcmp(cmd, "names") == 0) {
        rq.op_case = PLEXUS__ADMIN__ADMIN_REQUEST__OP_NAMES;
        rq.names = &empty;
        code = one_node(&o, &cr, &rq, show_names, NULL);
    } else if (strcmp(cmd, "types") == 0) {
        rq.op_case = PLEXUS__ADMIN__ADMIN_REQUEST__OP_TYPES;
        rq.types = &empty;
        code = one_node(&o, &cr, &rq, show_types, NULL);
    } else if (strcmp(cmd, "info") == 0) {
        rq.op_case = PLEXUS__ADMIN__ADMIN_REQUEST__OP_INFO;
        rq.info = &empty;
        code = one_node(&o, &cr, &rq, show_info, NULL);
    }
    sodium_memzero(cr.key, sizeof cr.key);
    fflush(stdout);
    return code;
}
