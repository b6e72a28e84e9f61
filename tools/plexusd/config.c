/*
 * config.c — plexusd's configuration, driven by one table of keys.
 *
 * Design. `keys[]` below describes every setting once: its dotted name,
 * its PLEXUS_* variable, its flag, its type and range, its default (as
 * text, parsed by the same code as every other source, so the default
 * column of the reference is exactly what init applies), whether it is
 * required, secret or reloadable, one line of description and where it
 * lives in pxd_config. The YAML walker, the environment and flag scanners,
 * the dump, the reload diff, the Markdown reference and the usage text are
 * loops over that table; nothing else names a key except the cross-key
 * rules in check_rules() and node.advertise's fallback to node.listen
 * (fill_advertise). `roots:` is a list of records, file only, with its
 * own small table (root_fields).
 *
 * Loading builds a fresh pxd_config (defaults, file, environment, flags,
 * then the rules) and swaps it in only when every source was clean; a
 * reload builds the same way and then moves only the reloadable values
 * across. Errors are collected, never fatal: each is one line
 * "SOURCE: key: message", where SOURCE is what the value's source column
 * would have said ("plexusd.yaml:12", "env PLEXUS_X", "flag --x").
 *
 * Lists: YAML sequences in the file; comma-separated in the environment
 * and in flags (entries are trimmed; "" is the empty list). Within the
 * flags, the first use of a list flag replaces the list and each repeat
 * appends, so `--peer "a tcp://h:1 KEY" --peer "b ..."` and `--peer
 * "a ...,b ..."` are the same. Names, URLs, base64 keys and peers never
 * hold a comma; a plugin path that does must come from the file.
 *
 * A flag's value is after '=' or else the next argument, unless that
 * starts with "--" (then the value is missing: write --x=--odd); a bool
 * flag alone means true.
 *
 * Concurrency: none inside. A pxd_config belongs to its caller, who
 * serialises init, load, reload, dump and free on it.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <yaml.h>

#include <plexus/transport.h>

#include "config.h"

#include "text.h"

#define KIB 1024ull
#define MIB (1024ull * KIB)
#define GIB (1024ull * MIB)
#define MAX_FILE_BYTES (1024 * 1024)

/* ---- the key table ---- */

typedef enum key_kind {
    K_STR,   /* char *; NULL when unset or "" */
    K_URL,   /* char *, an address checked by the key's check */
    K_PATH,  /* char *, a file name */
    K_INT,   /* uint32_t in min..max */
    K_SIZE,  /* uint64_t bytes in min..max, "16 MiB" */
    K_BOOL,  /* bool */
    K_ENUM,  /* one of en->words, stored through en->set */
    K_LIST,  /* pxd_list; each entry checked by the key's check */
    K_LEVEL, /* px_log_level */
} key_kind;

enum {
    F_SECRET = 1u << 0,   /* masked as "***" when printed */
    F_RELOAD = 1u << 1,   /* pxd_config_reload applies it */
    F_REQUIRED = 1u << 2, /* no default: some source must set it */
};

/* Checks a string value or a list entry; on failure writes what was
 * expected ("expected ...") to why. */
typedef bool (*check_fn)(const char *v, char *why, size_t whylen);

typedef struct enum_def {
    const char *words[6];
    int vals[6];
    size_t n;
    int (*get)(const pxd_config *c);
    void (*set)(pxd_config *c, int v);
} enum_def;

typedef struct key {
    const char *name;    /* dotted, as in the file */
    const char *env;     /* PLEXUS_ + name upper-cased, dots -> underscores */
    const char *flag;    /* "--name" */
    key_kind kind;
    unsigned flags;      /* F_* */
    const char *def;     /* default as text; NULL = unset / empty list */
    const char *def_doc; /* the reference's default column when def is not the story */
    uint64_t min, max;   /* K_INT, K_SIZE */
    check_fn check;      /* K_STR, K_URL, K_PATH value; K_LIST entry; NULL = any */
    const enum_def *en;  /* K_ENUM */
    size_t off;          /* offsetof(pxd_config, field); unused for K_ENUM */
    const char *desc;    /* one line, no '|' (it is a Markdown table cell) */
} key;

static bool check_name(const char *v, char *why, size_t whylen);
static bool check_node_addr(const char *v, char *why, size_t whylen);
static bool check_advertise(const char *v, char *why, size_t whylen);
static bool check_http_listen(const char *v, char *why, size_t whylen);
static bool check_etcd_url(const char *v, char *why, size_t whylen);
static bool check_nonempty(const char *v, char *why, size_t whylen);
static bool check_pubkey(const char *v, char *why, size_t whylen);
static bool check_peer(const char *v, char *why, size_t whylen);

static int get_policy(const pxd_config *c) { return (int)c->mailbox_policy; }
static void set_policy(pxd_config *c, int v) { c->mailbox_policy = (px_overflow)v; }
static int get_log_json(const pxd_config *c) { return c->log_json ? 1 : 0; }
static void set_log_json(pxd_config *c, int v) { c->log_json = v != 0; }

static const enum_def policy_enum = {
    {"block", "drop_newest", "drop_oldest", "error"},
    {PX_OVERFLOW_BLOCK, PX_OVERFLOW_DROP_NEWEST, PX_OVERFLOW_DROP_OLDEST, PX_OVERFLOW_ERROR},
    4,
    get_policy,
    set_policy,
};
static const enum_def log_format_enum = {{"text", "json"}, {0, 1}, 2, get_log_json, set_log_json};

#define OFF(field) offsetof(pxd_config, field)

static const key keys[] = {
    {"node.name", "PLEXUS_NODE_NAME", "--name", K_STR, F_REQUIRED, NULL, NULL, 0, 0,
     check_name, NULL, OFF(node_name),
     "this node's name, unique in the cluster: 1..63 characters of [A-Za-z0-9._-]"},
    {"node.listen", "PLEXUS_NODE_LISTEN", "--listen", K_URL, 0, "tcp://127.0.0.1:7100", NULL, 0,
     0, check_node_addr, NULL, OFF(listen),
     "where the node accepts links from peers: tcp://HOST:PORT or ipc://PATH"},
    {"node.advertise", "PLEXUS_NODE_ADVERTISE", "--advertise", K_URL, 0, NULL, "node.listen", 0,
     0, check_advertise, NULL, OFF(advertise),
     "the address peers dial, when it is not the listen address (NAT, 0.0.0.0)"},
    {"node.key_file", "PLEXUS_NODE_KEY_FILE", "--key-file", K_PATH, 0, "plexus-node.key", NULL,
     0, 0, check_nonempty, NULL, OFF(key_file),
     "the node's ed25519 identity key; created on first start"},
    {"node.roles", "PLEXUS_NODE_ROLES", "--roles", K_LIST, 0, NULL, NULL, 0, 0, check_name, NULL,
     OFF(roles), "roles this node offers (names; placement role:ROLE picks among them)"},
    {"node.workers", "PLEXUS_NODE_WORKERS", "--workers", K_INT, 0, "0", NULL, 0, 256, NULL,
     NULL, OFF(workers), "scheduler threads; 0 = one per online CPU"},
    {"cluster.name", "PLEXUS_CLUSTER_NAME", "--cluster", K_STR, 0, "plexus", NULL, 0, 0,
     check_name, NULL, OFF(cluster), "the cluster's name: a node joins only its own cluster"},
    {"cluster.secret_file", "PLEXUS_CLUSTER_SECRET_FILE", "--secret-file", K_PATH, F_REQUIRED,
     NULL, NULL, 0, 0, check_nonempty, NULL, OFF(secret_file),
     "file holding the cluster's shared secret, which every link proves"},
    {"cluster.etcd_endpoints", "PLEXUS_CLUSTER_ETCD_ENDPOINTS", "--etcd", K_LIST, 0, NULL, NULL,
     0, 0, check_etcd_url, NULL, OFF(etcd),
     "etcd URLs (http:// or https://) for membership and global names; empty = standalone"},
    {"cluster.lease_ttl_s", "PLEXUS_CLUSTER_LEASE_TTL_S", "--lease-ttl", K_INT, 0, "5", NULL, 2,
     600, NULL, NULL, OFF(lease_ttl_s),
     "seconds before a silent node's lease expires and the others see it down"},
    {"cluster.etcd_ca_file", "PLEXUS_CLUSTER_ETCD_CA_FILE", "--etcd-ca-file", K_PATH, 0, NULL,
     NULL, 0, 0, NULL, NULL, OFF(etcd_ca_file),
     "CA bundle that checks the etcd servers' certificates (https:// endpoints)"},
    {"cluster.etcd_user", "PLEXUS_CLUSTER_ETCD_USER", "--etcd-user", K_STR, 0, NULL, NULL, 0, 0,
     NULL, NULL, OFF(etcd_user), "etcd user name (goes with cluster.etcd_password)"},
    {"cluster.etcd_password", "PLEXUS_CLUSTER_ETCD_PASSWORD", "--etcd-password", K_STR, F_SECRET,
     NULL, NULL, 0, 0, NULL, NULL, OFF(etcd_password),
     "etcd password; prefer the environment variable to the flag"},
    {"transport.peers", "PLEXUS_TRANSPORT_PEERS", "--peer", K_LIST, 0, NULL, NULL, 0, 0,
     check_peer, NULL, OFF(peers),
     "static peers, each \"NAME ADDRESS PUBKEY\" (ADDRESS tcp:// or ipc://, PUBKEY base64)"},
    {"transport.max_msg", "PLEXUS_TRANSPORT_MAX_MSG", "--max-msg", K_SIZE, 0, "16 MiB", NULL, KIB,
     2 * GIB, NULL, NULL, OFF(max_msg),
     "largest message a link carries, in bytes (suffixes KiB, MiB, GiB)"},
    {"transport.plaintext", "PLEXUS_TRANSPORT_PLAINTEXT", "--plaintext", K_BOOL, 0, "false",
     NULL, 0, 0, NULL, NULL, OFF(plaintext),
     "links without encryption (benchmarks only; every node must agree)"},
    {"transport.latency_mode", "PLEXUS_TRANSPORT_LATENCY_MODE", "--latency-mode", K_BOOL, 0,
     "false", NULL, 0, 0, NULL, NULL, OFF(latency_mode),
     "idle scheduler workers read node links while they spin (50 us after their last work, "
     "up to 1 ms while they keep being woken soon after parking) instead of parking at "
     "once: round trips of ~20 us instead of ~140, for CPU time spent spinning"},
    {"limits.mailbox_capacity", "PLEXUS_LIMITS_MAILBOX_CAPACITY", "--mailbox-capacity", K_INT,
     F_RELOAD, "0", NULL, 0, 1u << 20, NULL, NULL, OFF(mailbox_capacity),
     "default mailbox bound, in messages; 0 = unbounded"},
    {"limits.mailbox_policy", "PLEXUS_LIMITS_MAILBOX_POLICY", "--mailbox-policy", K_ENUM,
     F_RELOAD, "error", NULL, 0, 0, NULL, &policy_enum, 0,
     "what a full bounded mailbox does with one more message"},
    {"limits.max_actors", "PLEXUS_LIMITS_MAX_ACTORS", "--max-actors", K_INT, 0, "16777216", NULL,
     16, 1u << 28, NULL, NULL, OFF(max_actors), "live actors on this node, at most"},
    {"http.listen", "PLEXUS_HTTP_LISTEN", "--http", K_URL, 0, "http://127.0.0.1:9100", NULL, 0, 0,
     check_http_listen, NULL, OFF(http_listen),
     "HTTP endpoint for metrics and health checks: http://HOST:PORT; empty = off"},
    {"admin.listen", "PLEXUS_ADMIN_LISTEN", "--admin", K_URL, 0, "tcp://127.0.0.1:7200", NULL, 0,
     0, check_node_addr, NULL, OFF(admin_listen),
     "the admin channel plexctl talks to: tcp://HOST:PORT or ipc://PATH"},
    {"admin.keys", "PLEXUS_ADMIN_KEYS", "--admin-key", K_LIST, 0, NULL, NULL, 0, 0, check_pubkey,
     NULL, OFF(admin_keys),
     "base64 public keys allowed on the admin channel; empty = any holder of the secret"},
    {"log.level", "PLEXUS_LOG_LEVEL", "--log-level", K_LEVEL, F_RELOAD, "info", NULL, 0, 0, NULL,
     NULL, OFF(log_level), "least severe level logged: trace, debug, info, warn, error, crit, off"},
    {"log.format", "PLEXUS_LOG_FORMAT", "--log-format", K_ENUM, 0, "text", NULL, 0, 0, NULL,
     &log_format_enum, 0, "log lines as text or as JSON objects, one a line"},
    {"drain.timeout_ms", "PLEXUS_DRAIN_TIMEOUT_MS", "--drain-timeout", K_INT, 0, "10000", NULL, 0,
     3600000, NULL, NULL, OFF(drain_timeout_ms),
     "how long a drain (SIGTERM, plexctl drain) lets actors finish before stopping them"},
    {"plugins", "PLEXUS_PLUGINS", "--load", K_LIST, 0, NULL, NULL, 0, 0, check_nonempty, NULL,
     OFF(plugins), "shared objects loaded at start (the behaviors they register)"},
};

#define N_KEYS (sizeof(keys) / sizeof(keys[0]))

/* PLEXUS_* variables that are not keys. */
static const char *const env_not_keys[] = {"PLEXUS_CONFIG", NULL};

#define AT(c, k, T) ((T *)(void *)((char *)(c) + (k)->off))
#define AT_C(c, k, T) ((const T *)(const void *)((const char *)(c) + (k)->off))

static ptrdiff_t key_index(const char *name, size_t len) {
    for (size_t i = 0; i < N_KEYS; i++) {
        if (strlen(keys[i].name) == len && memcmp(keys[i].name, name, len) == 0) {
            return (ptrdiff_t)i;
        }
    }
    return -1;
}

/* ---- text helpers ---- */

static void fmt_into(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fmt_into(char *buf, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(buf, n, fmt, ap); /* truncation is acceptable here */
    va_end(ap);
}

/* The dumps' text: tools/common/text.h. */
typedef pxu_text sb;

static void sb_pad(sb *b, size_t line_start, size_t col) {
    size_t w = b->len - line_start;
    pxu_text_add(b, "%*s", (int)(w < col ? col - w : 1), "");
}


/* v quoted for a message, shortened, control bytes as '?'; secrets not shown. */
static const char *quote(const char *v, bool secret, char *buf, size_t n) {
    if (secret) {
        return "\"***\"";
    }
    size_t o = 0, j = 0, max = n - 6; /* room left for ...", NUL */
    buf[o++] = '"';
    for (; v[j] != '\0' && o < max; j++) {
        buf[o++] = ((unsigned char)v[j] < 0x20 || v[j] == 0x7f) ? '?' : v[j];
    }
    if (v[j] != '\0') {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

static void fmt_size(uint64_t v, char *buf, size_t n) {
    if (v != 0 && v % GIB == 0) {
        fmt_into(buf, n, "%llu GiB", (unsigned long long)(v / GIB));
    } else if (v != 0 && v % MIB == 0) {
        fmt_into(buf, n, "%llu MiB", (unsigned long long)(v / MIB));
    } else if (v != 0 && v % KIB == 0) {
        fmt_into(buf, n, "%llu KiB", (unsigned long long)(v / KIB));
    } else {
        fmt_into(buf, n, "%llu", (unsigned long long)v);
    }
}

/* ---- value parsers and checks ---- */

/* Decimal digits only, no sign, no spaces; false on overflow. */
static bool parse_uint(const char *s, uint64_t *out) {
    uint64_t v = 0;
    if (*s == '\0') {
        return false;
    }
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > (UINT64_MAX - 9) / 10) {
            return false;
        }
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return true;
}

/* "1048576", "64KiB", "16 MiB", "1 GiB" (suffixes case-insensitive, "B" too). */
static bool parse_size(const char *s, uint64_t *out) {
    static const struct {
        const char *sfx;
        uint64_t mul;
    } units[] = {{"", 1}, {"b", 1}, {"kib", KIB}, {"mib", MIB}, {"gib", GIB}};
    char num[24];
    size_t n = 0;
    while (s[n] >= '0' && s[n] <= '9') {
        n++;
    }
    if (n == 0 || n >= sizeof num) {
        return false;
    }
    memcpy(num, s, n);
    num[n] = '\0';
    const char *sfx = s + n;
    while (*sfx == ' ') {
        sfx++;
    }
    uint64_t v;
    if (!parse_uint(num, &v)) {
        return false;
    }
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcasecmp(sfx, units[i].sfx) == 0) {
            if (v > UINT64_MAX / units[i].mul) {
                return false;
            }
            *out = v * units[i].mul;
            return true;
        }
    }
    return false;
}

static bool parse_bool(const char *s, bool *out) {
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

static bool is_name(const char *v, size_t max) {
    size_t n = strlen(v);
    if (n == 0 || n > max) {
        return false;
    }
    for (const char *p = v; *p; p++) {
        char ch = *p;
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-')) {
            return false;
        }
    }
    return true;
}

static bool check_name(const char *v, char *why, size_t whylen) {
    if (is_name(v, 63)) {
        return true;
    }
    fmt_into(why, whylen, "expected 1..63 characters of [A-Za-z0-9._-]");
    return false;
}

static bool check_nonempty(const char *v, char *why, size_t whylen) {
    if (v[0] != '\0') {
        return true;
    }
    fmt_into(why, whylen, "expected a file name");
    return false;
}

/* s (after the scheme) is HOST:PORT, HOST or [V6]: the port, when there,
 * 0..65535; then a "/..." path only if allow_path. */
static bool host_port(const char *s, bool need_port, bool allow_path) {
    size_t end = allow_path ? strcspn(s, "/") : strlen(s);
    const char *host = s, *hend, *colon = NULL;
    if (*s == '[') {
        hend = memchr(s, ']', end);
        if (hend == NULL) {
            return false;
        }
        host = s + 1;
        if (hend + 1 < s + end) {
            if (hend[1] != ':') {
                return false;
            }
            colon = hend + 1;
        }
    } else {
        for (size_t i = 0; i < end; i++) {
            if (s[i] == ':') {
                colon = s + i;
            }
        }
        hend = colon ? colon : s + end;
    }
    if (hend == host) {
        return false;
    }
    for (const char *p = host; p < hend; p++) {
        if ((unsigned char)*p <= ' ' || *p == '/' || *p == '@' || *p == '[' || *p == ']') {
            return false;
        }
    }
    if (colon == NULL) {
        return !need_port;
    }
    size_t plen = (size_t)(s + end - (colon + 1));
    if (plen == 0 || plen > 5) {
        return false;
    }
    unsigned port = 0;
    for (size_t i = 0; i < plen; i++) {
        char ch = colon[1 + i];
        if (ch < '0' || ch > '9') {
            return false;
        }
        port = port * 10 + (unsigned)(ch - '0');
    }
    if (port > 65535) {
        return false;
    }
    for (const char *p = s + end; *p; p++) {
        if ((unsigned char)*p <= ' ') {
            return false;
        }
    }
    return true;
}

static bool is_node_addr(const char *v) {
    if (strncmp(v, "tcp://", 6) == 0) {
        return host_port(v + 6, true, false);
    }
    if (strncmp(v, "ipc://", 6) == 0) {
        return v[6] != '\0';
    }
    return false;
}

static bool check_node_addr(const char *v, char *why, size_t whylen) {
    if (is_node_addr(v)) {
        return true;
    }
    fmt_into(why, whylen, "expected tcp://HOST:PORT or ipc://PATH");
    return false;
}

static bool check_advertise(const char *v, char *why, size_t whylen) {
    if (v[0] == '\0' || is_node_addr(v)) {
        return true;
    }
    fmt_into(why, whylen, "expected tcp://HOST:PORT or ipc://PATH (or empty: node.listen)");
    return false;
}

static bool check_http_listen(const char *v, char *why, size_t whylen) {
    if (v[0] == '\0' || (strncmp(v, "http://", 7) == 0 && host_port(v + 7, true, false))) {
        return true;
    }
    fmt_into(why, whylen, "expected http://HOST:PORT (or empty: off)");
    return false;
}

static bool check_etcd_url(const char *v, char *why, size_t whylen) {
    if ((strncmp(v, "http://", 7) == 0 && host_port(v + 7, false, true)) ||
        (strncmp(v, "https://", 8) == 0 && host_port(v + 8, false, true))) {
        return true;
    }
    fmt_into(why, whylen, "expected an http:// or https:// URL (http://HOST:PORT)");
    return false;
}

static bool check_pubkey(const char *v, char *why, size_t whylen) {
    uint8_t pk[PX_PUBKEY_BYTES];
    if (px_pubkey_parse(v, pk) == PX_OK) {
        return true;
    }
    fmt_into(why, whylen, "expected a base64 ed25519 public key (44 characters)");
    return false;
}

static bool check_peer(const char *v, char *why, size_t whylen) {
    char buf[512];
    char *f[4] = {NULL, NULL, NULL, NULL};
    size_t nf = 0;
    if (strlen(v) >= sizeof buf) {
        fmt_into(why, whylen, "expected \"NAME ADDRESS PUBKEY\" (too long)");
        return false;
    }
    memcpy(buf, v, strlen(v) + 1);
    for (char *save = NULL, *t = strtok_r(buf, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
        if (nf < 4) {
            f[nf] = t;
        }
        nf++;
    }
    if (nf != 3) {
        fmt_into(why, whylen, "expected \"NAME ADDRESS PUBKEY\" (3 words, %zu given)", nf);
        return false;
    }
    uint8_t pk[PX_PUBKEY_BYTES];
    if (!is_name(f[0], 63)) {
        fmt_into(why, whylen, "expected \"NAME ADDRESS PUBKEY\" with NAME of 1..63 [A-Za-z0-9._-]");
    } else if (!is_node_addr(f[1])) {
        fmt_into(why, whylen,
                 "expected \"NAME ADDRESS PUBKEY\" with ADDRESS tcp://HOST:PORT or ipc://PATH");
    } else if (px_pubkey_parse(f[2], pk) != PX_OK) {
        fmt_into(why, whylen,
                 "expected \"NAME ADDRESS PUBKEY\" with PUBKEY a base64 ed25519 public key");
    } else {
        return true;
    }
    return false;
}

/* ---- collected errors ---- */

typedef struct errs {
    char *buf;  /* the caller's; NULL = count only */
    size_t cap;
    size_t len;
    size_t n;   /* problems found, also those that did not fit */
    bool full;  /* buf ends in "..." */
    bool oom;
} errs;

static void errs_add(errs *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void errs_add(errs *e, const char *fmt, ...) {
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int r = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (r < 0) {
        fmt_into(line, sizeof line, "(unprintable problem)");
    } else if ((size_t)r >= sizeof line) {
        memcpy(line + sizeof line - 4, "...", 4);
    }
    e->n++;
    if (e->buf == NULL || e->cap == 0 || e->full) {
        return;
    }
    size_t sep = e->len > 0 ? 1 : 0, ll = strlen(line);
    if (e->len + sep + ll < e->cap) {
        if (sep) {
            e->buf[e->len++] = '\n';
        }
        memcpy(e->buf + e->len, line, ll + 1);
        e->len += ll;
        return;
    }
    /* Fill what is left, then mark the cut. */
    e->full = true;
    size_t room = e->cap - 1 - e->len;
    if (sep && room > 0) {
        e->buf[e->len++] = '\n';
        room--;
    }
    memcpy(e->buf + e->len, line, room);
    e->len += room;
    e->buf[e->len] = '\0';
    if (e->cap >= 4) {
        memcpy(e->buf + e->cap - 4, "...", 4);
        e->len = e->cap - 1;
    }
}

/* ---- setting values ---- */

typedef struct loader {
    pxd_config *c;
    errs *e;
    const char *file;    /* for messages */
    int line[N_KEYS];    /* line where the file set each key; 0 = not yet */
    bool by_flag[N_KEYS]; /* a flag has set this key: a repeated list flag appends */
    bool bad[N_KEYS];     /* some source gave a value that was refused */
} loader;

static void set_src(pxd_config *c, size_t i, const char *src) {
    if (c->src) {
        fmt_into(c->src[i], PXD_SRC_LEN, "%s", src);
    }
}

static bool set_string(loader *ld, char **slot, const char *v) {
    char *d = NULL;
    if (v[0] != '\0') {
        d = strdup(v);
        if (d == NULL) {
            ld->e->oom = true;
            return false;
        }
    }
    free(*slot);
    *slot = d;
    return true;
}

/* Applies a scalar value from src to key i, or records why not. */
static void set_scalar(loader *ld, size_t i, const char *v, const char *src) {
    const key *k = &keys[i];
    pxd_config *c = ld->c;
    char why[256], q[96], lo[24], hi[24];
    bool secret = (k->flags & F_SECRET) != 0;
    uint64_t u;
    bool b;
    why[0] = '\0';
    switch (k->kind) {
    case K_STR:
    case K_URL:
    case K_PATH:
        if (k->check && !k->check(v, why, sizeof why)) {
            break;
        }
        if (set_string(ld, AT(c, k, char *), v)) {
            set_src(c, i, src);
        }
        return;
    case K_INT:
        if (parse_uint(v, &u) && u >= k->min && u <= k->max) {
            *AT(c, k, uint32_t) = (uint32_t)u;
            set_src(c, i, src);
            return;
        }
        fmt_into(why, sizeof why, "expected an integer %llu..%llu", (unsigned long long)k->min,
                 (unsigned long long)k->max);
        break;
    case K_SIZE:
        if (parse_size(v, &u) && u >= k->min && u <= k->max) {
            *AT(c, k, uint64_t) = u;
            set_src(c, i, src);
            return;
        }
        fmt_size(k->min, lo, sizeof lo);
        fmt_size(k->max, hi, sizeof hi);
        fmt_into(why, sizeof why, "expected a size %s..%s (bytes, or a number with KiB, MiB, GiB)",
                 lo, hi);
        break;
    case K_BOOL:
        if (parse_bool(v, &b)) {
            *AT(c, k, bool) = b;
            set_src(c, i, src);
            return;
        }
        fmt_into(why, sizeof why, "expected true or false");
        break;
    case K_ENUM: {
        for (size_t w = 0; w < k->en->n; w++) {
            if (strcasecmp(v, k->en->words[w]) == 0) {
                k->en->set(c, k->en->vals[w]);
                set_src(c, i, src);
                return;
            }
        }
        fmt_into(why, sizeof why, "expected one of");
        for (size_t w = 0; w < k->en->n; w++) {
            size_t o = strlen(why);
            fmt_into(why + o, sizeof why - o, "%s %s", w ? "," : "", k->en->words[w]);
        }
        break;
    }
    case K_LEVEL: {
        px_log_level l;
        if (px_log_level_parse(v, &l) == PX_OK) {
            *AT(c, k, px_log_level) = l;
            set_src(c, i, src);
            return;
        }
        fmt_into(why, sizeof why, "expected one of trace, debug, info, warn, error, crit, off");
        break;
    }
    case K_LIST:
        fmt_into(why, sizeof why, "expected a list");
        break;
    }
    ld->bad[i] = true;
    errs_add(ld->e, "%s: %s: %s, got %s", src, k->name, why, quote(v, secret, q, sizeof q));
}

/* Checks one list entry of key i; reports it under src. */
static bool check_item(loader *ld, size_t i, const char *v, const char *src) {
    const key *k = &keys[i];
    char why[256], q[96];
    if (v[0] == '\0') {
        ld->bad[i] = true;
        errs_add(ld->e, "%s: %s: empty list entry", src, k->name);
        return false;
    }
    if (k->check && !k->check(v, why, sizeof why)) {
        ld->bad[i] = true;
        errs_add(ld->e, "%s: %s: %s, got %s", src, k->name, why,
                 quote(v, (k->flags & F_SECRET) != 0, q, sizeof q));
        return false;
    }
    return true;
}

/* Stores n checked entries into list key i, replacing or appending. */
static void put_list(loader *ld, size_t i, const char *const *items, size_t n, bool append,
                     const char *src) {
    const key *k = &keys[i];
    pxd_list *l = AT(ld->c, k, pxd_list);
    size_t base = append ? l->n : 0;
    if (base + n > PXD_MAX_LIST) {
        errs_add(ld->e, "%s: %s: more than %d entries", src, k->name, PXD_MAX_LIST);
        return;
    }
    char *v[PXD_MAX_LIST];
    for (size_t j = 0; j < n; j++) {
        v[j] = strdup(items[j]);
        if (v[j] == NULL) {
            while (j > 0) {
                free(v[--j]);
            }
            ld->e->oom = true;
            return;
        }
    }
    if (!append) {
        for (size_t j = 0; j < l->n; j++) {
            free(l->v[j]);
            l->v[j] = NULL;
        }
        l->n = 0;
    }
    for (size_t j = 0; j < n; j++) {
        l->v[l->n++] = v[j];
    }
    set_src(ld->c, i, src);
}

/* A comma-separated list (environment, flags) for key i. */
static void set_list_text(loader *ld, size_t i, const char *text, bool append, const char *src) {
    char *copy = strdup(text);
    const char *items[PXD_MAX_LIST + 1];
    size_t n = 0;
    bool ok = true;
    if (copy == NULL) {
        ld->e->oom = true;
        return;
    }
    char *p = copy;
    while (*p == ' ' || *p == '\t') {
        p++;
    }
    if (*p != '\0') {
        for (;;) {
            char *comma = strchr(p, ',');
            if (comma) {
                *comma = '\0';
            }
            while (*p == ' ' || *p == '\t') {
                p++;
            }
            size_t len = strlen(p);
            while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t')) {
                p[--len] = '\0';
            }
            ok = check_item(ld, i, p, src) && ok;
            if (n < PXD_MAX_LIST + 1) {
                items[n] = p;
            }
            n++;
            if (comma == NULL) {
                break;
            }
            p = comma + 1;
        }
    }
    if (ok && n > PXD_MAX_LIST) {
        errs_add(ld->e, "%s: %s: more than %d entries", src, keys[i].name, PXD_MAX_LIST);
    } else if (ok) {
        put_list(ld, i, items, n, append, src);
    }
    free(copy);
}

/* A value given as text (environment, flag). */
static void set_text(loader *ld, size_t i, const char *v, bool append, const char *src) {
    if (keys[i].kind == K_LIST) {
        set_list_text(ld, i, v, append, src);
    } else {
        set_scalar(ld, i, v, src);
    }
}

/* ---- defaults ---- */

static void free_root(pxd_root *r) {
    free(r->name);
    free(r->global_name);
    free(r->arg_type);
    free(r->arg);
    free(r->behavior);
    free(r->supervisor);
    free(r->placement);
    memset(r, 0, sizeof(*r));
}

/* node.advertise unset: node.listen. False if out of memory. */
static bool fill_advertise(pxd_config *c) {
    if (c->advertise == NULL && c->listen != NULL) {
        c->advertise = strdup(c->listen);
        if (c->advertise == NULL) {
            return false;
        }
        set_src(c, (size_t)key_index("node.advertise", strlen("node.advertise")),
                "default (node.listen)");
    }
    return true;
}

/* c := the defaults (node.advertise still unset). PX_ENOMEM leaves what
 * could not be allocated NULL. */
static px_err defaults(pxd_config *c) {
    errs e = {0};
    memset(c, 0, sizeof(*c));
    c->src = calloc(N_KEYS, sizeof(*c->src));
    loader ld = {.c = c, .e = &e};
    for (size_t i = 0; i < N_KEYS; i++) {
        if (keys[i].def != NULL) {
            set_scalar(&ld, i, keys[i].def, "default");
        }
        set_src(c, i, "default");
    }
    return e.oom || c->src == NULL ? PX_ENOMEM : PX_OK;
}

void pxd_config_init(pxd_config *c) {
    if (c != NULL && defaults(c) == PX_OK) {
        (void)fill_advertise(c);
    }
}

void pxd_config_free(pxd_config *c) {
    if (c == NULL) {
        return;
    }
    for (size_t i = 0; i < N_KEYS; i++) {
        const key *k = &keys[i];
        if (k->kind == K_STR || k->kind == K_URL || k->kind == K_PATH) {
            free(*AT(c, k, char *));
        } else if (k->kind == K_LIST) {
            pxd_list *l = AT(c, k, pxd_list);
            for (size_t j = 0; j < l->n; j++) {
                free(l->v[j]);
            }
        }
    }
    for (size_t r = 0; r < c->n_roots; r++) {
        free_root(&c->roots[r]);
    }
    free(c->src);
    free(c->file);
    memset(c, 0, sizeof(*c));
}

/* ---- the file ---- */

static bool read_all(const char *path, char **out, size_t *len, int *err) {
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n = 0, cap = 0;
    if (f == NULL) {
        *err = errno;
        return false;
    }
    for (;;) {
        if (n == cap) {
            if (cap >= MAX_FILE_BYTES) {
                *err = EFBIG;
                break;
            }
            cap = cap ? cap * 2 : 4096;
            char *b = realloc(buf, cap + 1);
            if (b == NULL) {
                *err = ENOMEM;
                break;
            }
            buf = b;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) {
            if (ferror(f)) {
                *err = errno ? errno : EIO;
                break;
            }
            fclose(f);
            buf[n] = '\0';
            *out = buf;
            *len = n;
            return true;
        }
    }
    fclose(f);
    free(buf);
    return false;
}

/* YAML's null: a plain scalar that is empty, ~ or null. */
static bool is_null(const yaml_node_t *n) {
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) {
        return false;
    }
    const char *v = (const char *)n->data.scalar.value;
    return v[0] == '\0' || strcmp(v, "~") == 0 || strcasecmp(v, "null") == 0;
}

/* A scalar's text ("" for null); NULL (reported) if it holds a NUL byte. */
static const char *scalar_text(loader *ld, const yaml_node_t *n, const char *what, int line) {
    const char *v = (const char *)n->data.scalar.value;
    if (strlen(v) != n->data.scalar.length) {
        errs_add(ld->e, "%s:%d: %s: contains a NUL byte", ld->file, line, what);
        return NULL;
    }
    return is_null(n) ? "" : v;
}

static int line_of(const yaml_node_t *n) { return (int)n->start_mark.line + 1; }

static const char *node_kind(const yaml_node_t *n) {
    return n->type == YAML_SEQUENCE_NODE ? "a list" : n->type == YAML_MAPPING_NODE ? "a map" : "a value";
}

/* The file's value for key i (key's line kline). */
static void apply_node(loader *ld, size_t i, yaml_document_t *doc, yaml_node_t *vn, int kline) {
    const key *k = &keys[i];
    char src[PXD_SRC_LEN + 32];
    if (ld->line[i] != 0) {
        errs_add(ld->e, "%s:%d: %s: set twice in the file (first at line %d)", ld->file, kline,
                 k->name, ld->line[i]);
        return;
    }
    ld->line[i] = kline;
    fmt_into(src, sizeof src, "%s:%d", ld->file, kline);
    if (k->kind != K_LIST) {
        if (vn->type != YAML_SCALAR_NODE) {
            errs_add(ld->e, "%s: %s: expected a single value, got %s", src, k->name, node_kind(vn));
            return;
        }
        const char *v = scalar_text(ld, vn, k->name, kline);
        if (v != NULL) {
            set_scalar(ld, i, v, src);
        }
        return;
    }
    if (is_null(vn)) {
        put_list(ld, i, NULL, 0, false, src);
        return;
    }
    if (vn->type != YAML_SEQUENCE_NODE) {
        errs_add(ld->e, "%s: %s: expected a list (a YAML sequence: [a, b] or lines \"- a\"), got %s",
                 src, k->name, node_kind(vn));
        return;
    }
    const char *items[PXD_MAX_LIST];
    size_t n = 0;
    bool ok = true;
    for (yaml_node_item_t *it = vn->data.sequence.items.start; it < vn->data.sequence.items.top;
         it++) {
        yaml_node_t *in = yaml_document_get_node(doc, *it);
        char isrc[PXD_SRC_LEN + 32];
        fmt_into(isrc, sizeof isrc, "%s:%d", ld->file, line_of(in));
        if (in->type != YAML_SCALAR_NODE) {
            errs_add(ld->e, "%s: %s: expected a list of values, got %s as an entry", isrc, k->name,
                     node_kind(in));
            ok = false;
            continue;
        }
        const char *v = scalar_text(ld, in, k->name, line_of(in));
        if (v == NULL || !check_item(ld, i, v, isrc)) {
            ok = false;
            continue;
        }
        if (n == PXD_MAX_LIST) {
            errs_add(ld->e, "%s: %s: more than %d entries", src, k->name, PXD_MAX_LIST);
            return;
        }
        items[n++] = v;
    }
    if (ok) {
        put_list(ld, i, items, n, false, src);
    }
}

/* ---- roots ---- */

typedef enum root_kind { R_NAME, R_SUPERVISOR, R_UINT, R_PLACEMENT, R_JSON } root_kind;

static const struct root_field {
    const char *name;
    root_kind kind;
    size_t off;
    uint32_t min, max;
    bool empty_ok; /* "" or null = unset */
} root_fields[] = {
    {"name", R_NAME, offsetof(pxd_root, name), 0, 0, false},
    {"global_name", R_NAME, offsetof(pxd_root, global_name), 0, 0, true},
    {"behavior", R_NAME, offsetof(pxd_root, behavior), 0, 0, false},
    {"supervisor", R_SUPERVISOR, offsetof(pxd_root, supervisor), 0, 0, true},
    {"children", R_UINT, offsetof(pxd_root, children), 1, 1024, false},
    {"placement", R_PLACEMENT, offsetof(pxd_root, placement), 0, 0, false},
    {"max_restarts", R_UINT, offsetof(pxd_root, max_restarts), 0, 1000000, false},
    {"within_ms", R_UINT, offsetof(pxd_root, within_ms), 1, 86400000, false},
    {"arg_type", R_NAME, offsetof(pxd_root, arg_type), 0, 0, true},
    {"arg", R_JSON, offsetof(pxd_root, arg), 0, 0, true},
};

#define N_ROOT_FIELDS (sizeof(root_fields) / sizeof(root_fields[0]))

static size_t root_field_index(const char *name) {
    size_t f = 0;
    while (f < N_ROOT_FIELDS && strcmp(root_fields[f].name, name) != 0) {
        f++;
    }
    return f;
}

static const char *const supervisors[] = {"one_for_one", "all_for_one", "rest_for_one"};

/* 1..127 bytes, no spaces or control bytes (px_register's names). */
static bool is_actor_name(const char *v) {
    size_t n = strlen(v);
    if (n == 0 || n > 127) {
        return false;
    }
    for (const char *p = v; *p; p++) {
        if ((unsigned char)*p <= ' ' || *p == 0x7f) {
            return false;
        }
    }
    return true;
}

static bool is_placement(const char *v) {
    if (strcmp(v, "here") == 0 || strcmp(v, "round_robin") == 0 ||
        strcmp(v, "least_loaded") == 0) {
        return true;
    }
    if (strncmp(v, "node:", 5) == 0) {
        return is_name(v + 5, 63);
    }
    if (strncmp(v, "role:", 5) == 0) {
        return is_name(v + 5, 63);
    }
    return false;
}

/* One field of roots[idx]; false if it was not set. */
static bool root_field(loader *ld, pxd_root *r, size_t idx, const struct root_field *f,
                       const char *v, int line) {
    char q[96], range[224];
    const char *expect = NULL;
    uint64_t u = 0;
    switch (f->kind) {
    case R_NAME:
        expect = is_actor_name(v) ? NULL : "1..127 characters without spaces";
        break;
    case R_SUPERVISOR:
        expect = strcmp(v, supervisors[0]) == 0 || strcmp(v, supervisors[1]) == 0 ||
                         strcmp(v, supervisors[2]) == 0
                     ? NULL
                     : "one_for_one, all_for_one or rest_for_one";
        break;
    case R_PLACEMENT:
        expect = is_placement(v) ? NULL
                                 : "here, round_robin, least_loaded, node:NAME or role:ROLE";
        break;
    case R_UINT:
        if (!parse_uint(v, &u) || u < f->min || u > f->max) {
            fmt_into(range, sizeof range, "an integer %u..%u", f->min, f->max);
            expect = range;
        }
        break;
    case R_JSON: {
        json_error_t je;
        json_t *j = json_loads(v, JSON_REJECT_DUPLICATES, &je);
        if (j == NULL || !json_is_object(j)) {
            fmt_into(range, sizeof range, "a JSON object%s%s", j == NULL ? ": " : "",
                     j == NULL ? je.text : "");
            expect = range;
        }
        json_decref(j);
        break;
    }
    }
    if (expect != NULL) {
        errs_add(ld->e, "%s:%d: roots[%zu].%s: expected %s, got %s", ld->file, line, idx, f->name,
                 expect, quote(v, false, q, sizeof q));
        return false;
    }
    if (f->kind == R_UINT) {
        *(uint32_t *)(void *)((char *)r + f->off) = (uint32_t)u;
        return true;
    }
    char *d = strdup(v);
    if (d == NULL) {
        ld->e->oom = true;
        return false;
    }
    char **slot = (char **)(void *)((char *)r + f->off);
    free(*slot);
    *slot = d;
    return true;
}

static void parse_root(loader *ld, yaml_document_t *doc, yaml_node_t *m, size_t idx) {
    pxd_config *c = ld->c;
    int line = line_of(m);
    if (m->type != YAML_MAPPING_NODE) {
        errs_add(ld->e, "%s:%d: roots[%zu]: expected a map (name:, behavior:, ...), got %s",
                 ld->file, line, idx, node_kind(m));
        return;
    }
    pxd_root *r = &c->roots[c->n_roots++];
    memset(r, 0, sizeof(*r));
    r->children = 1;
    r->max_restarts = 10;
    r->within_ms = 5000;
    fmt_into(r->src, sizeof r->src, "%s:%d", ld->file, line);
    int seen[N_ROOT_FIELDS] = {0};
    for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        yaml_node_t *kn = yaml_document_get_node(doc, p->key);
        yaml_node_t *vn = yaml_document_get_node(doc, p->value);
        int kline = line_of(kn);
        if (kn->type != YAML_SCALAR_NODE) {
            errs_add(ld->e, "%s:%d: roots[%zu]: keys must be words, got %s", ld->file, kline, idx,
                     node_kind(kn));
            continue;
        }
        const char *kname = (const char *)kn->data.scalar.value;
        size_t f = root_field_index(kname);
        if (f == N_ROOT_FIELDS) {
            char q[96];
            errs_add(ld->e,
                     "%s:%d: roots[%zu].%s: unknown key (known: name, global_name, behavior, "
                     "supervisor, children, placement, max_restarts, within_ms, arg_type, arg)",
                     ld->file, kline, idx, quote(kname, false, q, sizeof q));
            continue;
        }
        if (seen[f]) {
            errs_add(ld->e, "%s:%d: roots[%zu].%s: set twice (first at line %d)", ld->file, kline,
                     idx, root_fields[f].name, seen[f]);
            continue;
        }
        seen[f] = kline;
        if (vn->type != YAML_SCALAR_NODE) {
            errs_add(ld->e, "%s:%d: roots[%zu].%s: expected a single value, got %s", ld->file,
                     kline, idx, root_fields[f].name, node_kind(vn));
            continue;
        }
        const char *v = scalar_text(ld, vn, "roots", kline);
        if (v != NULL && !(v[0] == '\0' && root_fields[f].empty_ok)) {
            (void)root_field(ld, r, idx, &root_fields[f], v, kline);
        }
    }
    /* Fields not given at all (a bad value was reported already). */
    if (seen[root_field_index("name")] == 0) {
        errs_add(ld->e, "%s:%d: roots[%zu].name: required", ld->file, line, idx);
    }
    if (seen[root_field_index("behavior")] == 0) {
        errs_add(ld->e, "%s:%d: roots[%zu].behavior: required", ld->file, line, idx);
    }
    int children = seen[root_field_index("children")];
    if (children != 0 && seen[root_field_index("supervisor")] == 0) {
        errs_add(ld->e, "%s:%d: roots[%zu].children: needs a supervisor", ld->file, children, idx);
    }
    int arg_line = seen[root_field_index("arg")], type_line = seen[root_field_index("arg_type")];
    if (r->arg_type != NULL && r->supervisor != NULL) {
        errs_add(ld->e, "%s:%d: roots[%zu].arg_type: a start argument is for a plain actor, not "
                 "a supervisor", ld->file, type_line, idx);
    }
    if (r->arg != NULL && type_line == 0) {
        errs_add(ld->e, "%s:%d: roots[%zu].arg: needs arg_type (the protobuf type it is, as "
                 "`plexctl types` lists them)", ld->file, arg_line, idx);
    }
    if (r->placement == NULL) {
        r->placement = strdup("here");
        if (r->placement == NULL) {
            ld->e->oom = true;
        }
    }
    for (size_t o = 0; o + 1 < c->n_roots; o++) {
        const pxd_root *a = &c->roots[o];
        if (r->name && a->name && strcmp(r->name, a->name) == 0) {
            errs_add(ld->e, "%s: roots[%zu].name: \"%s\" is also the name of roots[%zu] (%s)", r->src,
                     idx, r->name, o, a->src);
        }
        if (r->global_name && a->global_name && strcmp(r->global_name, a->global_name) == 0) {
            errs_add(ld->e, "%s: roots[%zu].global_name: \"%s\" is also that of roots[%zu] (%s)",
                     r->src, idx, r->global_name, o, a->src);
        }
    }
}

static void parse_roots(loader *ld, yaml_document_t *doc, yaml_node_t *seq, int kline) {
    if (is_null(seq)) {
        return;
    }
    if (seq->type != YAML_SEQUENCE_NODE) {
        errs_add(ld->e, "%s:%d: roots: expected a list of maps (\"- name: ...\"), got %s", ld->file,
                 kline, node_kind(seq));
        return;
    }
    size_t idx = 0;
    for (yaml_node_item_t *it = seq->data.sequence.items.start; it < seq->data.sequence.items.top;
         it++, idx++) {
        if (ld->c->n_roots == PXD_MAX_ROOTS) {
            errs_add(ld->e, "%s:%d: roots: more than %d entries", ld->file, kline, PXD_MAX_ROOTS);
            return;
        }
        parse_root(ld, doc, yaml_document_get_node(doc, *it), idx);
    }
}

/* ---- walking the document ---- */

/* Line of an earlier key of map equal to the scalar key kn; 0 if none
 * (YAML keys are unique; libyaml does not check). */
static int earlier_key(yaml_document_t *doc, yaml_node_t *map, yaml_node_pair_t *upto,
                       const yaml_node_t *kn) {
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < upto; p++) {
        yaml_node_t *o = yaml_document_get_node(doc, p->key);
        if (o->type == YAML_SCALAR_NODE && o->data.scalar.length == kn->data.scalar.length &&
            memcmp(o->data.scalar.value, kn->data.scalar.value, kn->data.scalar.length) == 0) {
            return line_of(o);
        }
    }
    return 0;
}

/* True if some key's name starts with "prefix.". */
static bool is_section(const char *prefix) {
    size_t n = strlen(prefix);
    for (size_t i = 0; i < N_KEYS; i++) {
        if (strncmp(keys[i].name, prefix, n) == 0 && keys[i].name[n] == '.') {
            return true;
        }
    }
    return false;
}

static void walk_map(loader *ld, yaml_document_t *doc, yaml_node_t *map, const char *prefix) {
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *kn = yaml_document_get_node(doc, p->key);
        yaml_node_t *vn = yaml_document_get_node(doc, p->value);
        int line = line_of(kn);
        char path[256], q[96];
        if (kn->type != YAML_SCALAR_NODE) {
            errs_add(ld->e, "%s:%d: %s%skeys must be words, got %s", ld->file, line, prefix,
                     prefix[0] ? ": " : "", node_kind(kn));
            continue;
        }
        const char *kname = (const char *)kn->data.scalar.value;
        int r = snprintf(path, sizeof path, "%s%s%s", prefix, prefix[0] ? "." : "", kname);
        if (r < 0 || (size_t)r >= sizeof path) {
            errs_add(ld->e, "%s:%d: %s: unknown key", ld->file, line, quote(kname, false, q, sizeof q));
            continue;
        }
        int first = earlier_key(doc, map, p, kn);
        if (first != 0) {
            errs_add(ld->e, "%s:%d: %s: set twice in the file (first at line %d)", ld->file, line,
                     path, first);
            continue;
        }
        if (prefix[0] == '\0' && strcmp(kname, "roots") == 0) {
            parse_roots(ld, doc, vn, line);
            continue;
        }
        ptrdiff_t i = key_index(path, strlen(path));
        if (i >= 0) {
            apply_node(ld, (size_t)i, doc, vn, line);
        } else if (is_section(path)) {
            if (vn->type == YAML_MAPPING_NODE) {
                walk_map(ld, doc, vn, path);
            } else if (!is_null(vn)) {
                errs_add(ld->e, "%s:%d: %s: expected a map of keys (%s: {key: value}), got %s",
                         ld->file, line, path, path, node_kind(vn));
            }
        } else {
            errs_add(ld->e, "%s:%d: %s: unknown key", ld->file, line, path);
        }
    }
}

static void yaml_problem(loader *ld, const yaml_parser_t *p, const char *text) {
    if (p->error == YAML_MEMORY_ERROR) {
        ld->e->oom = true;
        return;
    }
    if (p->error == YAML_READER_ERROR) {
        size_t line = 1;
        for (size_t o = 0; o < p->problem_offset && text[o]; o++) {
            line += text[o] == '\n';
        }
        errs_add(ld->e, "%s:%zu: YAML: %s", ld->file, line, p->problem ? p->problem : "unreadable");
        return;
    }
    char ctx[160] = "";
    if (p->context) {
        fmt_into(ctx, sizeof ctx, " (%s at line %zu)", p->context, p->context_mark.line + 1);
    }
    errs_add(ld->e, "%s:%zu:%zu: YAML syntax error: %s%s", ld->file, p->problem_mark.line + 1,
             p->problem_mark.column + 1, p->problem ? p->problem : "invalid", ctx);
}

static void read_config_file(loader *ld, const char *path) {
    char *text = NULL;
    size_t len = 0;
    int err = 0;
    ld->file = path;
    if (!read_all(path, &text, &len, &err)) {
        char msg[128];
        if (err == EFBIG) {
            fmt_into(msg, sizeof msg, "larger than %d bytes", MAX_FILE_BYTES);
        } else if (strerror_r(err, msg, sizeof msg) != 0) {
            fmt_into(msg, sizeof msg, "error %d", err);
        }
        if (err == ENOMEM) {
            ld->e->oom = true;
        }
        errs_add(ld->e, "%s: cannot read: %s", path, msg);
        return;
    }
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) {
        ld->e->oom = true;
        free(text);
        return;
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    yaml_document_t doc;
    if (!yaml_parser_load(&p, &doc)) {
        yaml_problem(ld, &p, text);
    } else {
        yaml_node_t *root = yaml_document_get_root_node(&doc);
        if (root != NULL && root->type == YAML_MAPPING_NODE) {
            walk_map(ld, &doc, root, "");
        } else if (root != NULL && !is_null(root)) {
            errs_add(ld->e, "%s:%d: expected a map of keys at the top (node:, cluster:, ...), got %s",
                     path, line_of(root), node_kind(root));
        }
        if (root != NULL) {
            yaml_document_t more;
            if (!yaml_parser_load(&p, &more)) {
                yaml_problem(ld, &p, text);
            } else {
                yaml_node_t *r2 = yaml_document_get_root_node(&more);
                if (r2 != NULL) {
                    errs_add(ld->e, "%s:%d: a second YAML document: the file holds one", path,
                             line_of(r2));
                }
                yaml_document_delete(&more);
            }
        }
        yaml_document_delete(&doc);
    }
    yaml_parser_delete(&p);
    free(text);
}

/* ---- environment ---- */

static void read_env(loader *ld, char *const *envp) {
    for (char *const *e = envp; e != NULL && *e != NULL; e++) {
        const char *var = *e, *eq = strchr(var, '=');
        if (strncmp(var, "PLEXUS_", 7) != 0 || eq == NULL) {
            continue;
        }
        size_t nl = (size_t)(eq - var);
        bool skip = false;
        for (const char *const *a = env_not_keys; *a; a++) {
            skip = skip || (strlen(*a) == nl && memcmp(*a, var, nl) == 0);
        }
        if (skip) {
            continue;
        }
        size_t i = 0;
        while (i < N_KEYS && !(strlen(keys[i].env) == nl && memcmp(keys[i].env, var, nl) == 0)) {
            i++;
        }
        if (i == N_KEYS) {
            errs_add(ld->e, "env %.*s: unknown variable (no config key has this name%s)", (int)nl,
                     var, nl == 12 && memcmp(var, "PLEXUS_ROOTS", 12) == 0 ? "; roots: is file only" : "");
            continue;
        }
        char src[PXD_SRC_LEN];
        fmt_into(src, sizeof src, "env %s", keys[i].env);
        set_text(ld, i, eq + 1, false, src);
    }
}

static const char *env_get(char *const *envp, const char *name) {
    size_t n = strlen(name);
    for (char *const *e = envp; e != NULL && *e != NULL; e++) {
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=') {
            return *e + n + 1;
        }
    }
    return NULL;
}

/* ---- flags ---- */

static bool is_extra(const char *const *extra, const char *a, size_t nl) {
    for (const char *const *x = extra; x != NULL && *x != NULL; x++) {
        if (strlen(*x) == nl && memcmp(*x, a, nl) == 0) {
            return true;
        }
    }
    return false;
}

/* Walks argv. With ld == NULL only finds --config (into *config, last one
 * wins); otherwise applies every other flag and reports every problem. */
static void scan_flags(loader *ld, int argc, char *const *argv, const char *const *extra,
                       const char **config) {
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (arg == NULL) {
            break;
        }
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0' || arg[2] == '=') {
            if (ld) {
                char q[96];
                errs_add(ld->e, "argument %s: unexpected (settings are --flag VALUE)",
                         quote(arg, false, q, sizeof q));
            }
            continue;
        }
        const char *eq = strchr(arg, '=');
        size_t nl = eq ? (size_t)(eq - arg) : strlen(arg);
        if (is_extra(extra, arg, nl)) {
            if (ld && eq) {
                errs_add(ld->e, "flag %.*s: takes no value", (int)nl, arg);
            }
            continue;
        }
        size_t i = 0;
        bool is_config = nl == 8 && memcmp(arg, "--config", 8) == 0;
        while (!is_config && i < N_KEYS &&
               !(strlen(keys[i].flag) == nl && memcmp(keys[i].flag, arg, nl) == 0)) {
            i++;
        }
        if (!is_config && i == N_KEYS) {
            if (ld) {
                errs_add(ld->e, "flag %.*s: unknown flag (plexusd --help lists them)", (int)nl, arg);
            }
            continue;
        }
        /* The value: after '=', else the next argument unless it is a flag;
         * a bool flag alone means true. */
        const char *v = eq ? eq + 1 : NULL;
        if (v == NULL && !is_config && keys[i].kind == K_BOOL) {
            v = "true";
        } else if (v == NULL && a + 1 < argc && argv[a + 1] != NULL &&
                   strncmp(argv[a + 1], "--", 2) != 0) {
            v = argv[++a];
        }
        if (is_config) {
            if (v == NULL && ld) {
                errs_add(ld->e, "flag --config: missing value (--config FILE)");
            } else if (v != NULL && ld == NULL) {
                *config = v;
            }
            continue;
        }
        if (ld == NULL) {
            continue;
        }
        char src[PXD_SRC_LEN];
        fmt_into(src, sizeof src, "flag %s", keys[i].flag);
        if (v == NULL) {
            errs_add(ld->e, "%s: %s: missing value (%s VALUE or %s=VALUE)", src, keys[i].name,
                     keys[i].flag, keys[i].flag);
            continue;
        }
        set_text(ld, i, v, ld->by_flag[i], src);
        ld->by_flag[i] = true;
    }
}

/* ---- rules across keys ---- */

static const char *src_of(const pxd_config *c, const char *name) {
    ptrdiff_t i = key_index(name, strlen(name));
    return c->src && i >= 0 ? c->src[i] : "?";
}

static void check_rules(loader *ld) {
    pxd_config *c = ld->c;
    for (size_t i = 0; i < N_KEYS; i++) {
        const key *k = &keys[i];
        if ((k->flags & F_REQUIRED) && *AT(c, k, char *) == NULL && !ld->bad[i]) {
            errs_add(ld->e, "%s: required: set it in the file, with env %s or with flag %s",
                     k->name, k->env, k->flag);
        }
    }
    if ((c->etcd_user == NULL) != (c->etcd_password == NULL)) {
        bool user = c->etcd_user != NULL;
        const char *set = user ? "cluster.etcd_user" : "cluster.etcd_password";
        const char *unset = user ? "cluster.etcd_password" : "cluster.etcd_user";
        errs_add(ld->e, "%s: %s: set without %s", src_of(c, set), set, unset);
    }
    if (c->etcd_ca_file != NULL) {
        bool https = false;
        for (size_t j = 0; j < c->etcd.n; j++) {
            https = https || strncmp(c->etcd.v[j], "https://", 8) == 0;
        }
        if (!https) {
            errs_add(ld->e,
                     "%s: cluster.etcd_ca_file: set, but no cluster.etcd_endpoints is https://",
                     src_of(c, "cluster.etcd_ca_file"));
        }
    }
    size_t ll = c->listen ? strlen(c->listen) : 0;
    bool any_port = ll > 2 && strcmp(c->listen + ll - 2, ":0") == 0; /* each binds its own */
    if (c->listen && c->admin_listen && !any_port && strcmp(c->listen, c->admin_listen) == 0) {
        errs_add(ld->e, "%s: admin.listen: the same address as node.listen (%s)",
                 src_of(c, "admin.listen"), src_of(c, "node.listen"));
    }
}

static px_err build_in(pxd_config *c, int argc, char *const *argv, char *const *envp,
                       const char *const *extra, char *err, size_t errlen) {
    errs e = {.buf = err, .cap = errlen};
    if (err && errlen) {
        err[0] = '\0';
    }
    if (defaults(c) != PX_OK) {
        errs_add(&e, "out of memory");
        return PX_ENOMEM;
    }
    loader ld = {.c = c, .e = &e};
    const char *path = NULL;
    scan_flags(NULL, argc, argv, extra, &path);
    if (path == NULL) {
        path = env_get(envp, "PLEXUS_CONFIG");
    }
    if (path != NULL && path[0] != '\0') {
        c->file = strdup(path);
        if (c->file == NULL) {
            e.oom = true;
        } else {
            read_config_file(&ld, c->file);
        }
    }
    read_env(&ld, envp);
    scan_flags(&ld, argc, argv, extra, NULL);
    if (!fill_advertise(c)) {
        e.oom = true;
    }
    check_rules(&ld);
    if (e.oom) {
        errs_add(&e, "out of memory");
        return PX_ENOMEM;
    }
    return e.n > 0 ? PX_EINVAL : PX_OK;
}

/* c := defaults < file < env < flags, checked. On PX_EINVAL/PX_ENOMEM c
 * is freed again. */
static px_err build(pxd_config *c, int argc, char *const *argv, char *const *envp,
                    const char *const *extra, char *err, size_t errlen) {
    px_err rc = build_in(c, argc, argv, envp, extra, err, errlen);
    if (rc != PX_OK) {
        pxd_config_free(c);
    }
    return rc;
}

px_err pxd_config_load(pxd_config *c, int argc, char *const *argv, char *const *envp,
                       const char *const *extra_flags, char *err, size_t errlen) {
    pxd_config n;
    if (c == NULL) {
        return PX_EINVAL;
    }
    px_err rc = build(&n, argc, argv, envp, extra_flags, err, errlen);
    if (rc != PX_OK) {
        return rc;
    }
    pxd_config_free(c);
    *c = n;
    return PX_OK;
}

/* ---- printing values ---- */

/* Appends key k's value in c as text (secrets as "***" when mask). */
static void value_text(sb *b, const pxd_config *c, const key *k, bool mask) {
    char buf[32];
    switch (k->kind) {
    case K_STR:
    case K_URL:
    case K_PATH: {
        const char *v = *AT_C(c, k, char *);
        pxu_text_add(b, "%s", v == NULL ? "" : mask && (k->flags & F_SECRET) ? "***" : v);
        break;
    }
    case K_INT:
        pxu_text_add(b, "%u", (unsigned)*AT_C(c, k, uint32_t));
        break;
    case K_SIZE:
        fmt_size(*AT_C(c, k, uint64_t), buf, sizeof buf);
        pxu_text_add(b, "%s", buf);
        break;
    case K_BOOL:
        pxu_text_add(b, "%s", *AT_C(c, k, bool) ? "true" : "false");
        break;
    case K_ENUM: {
        int v = k->en->get(c);
        const char *w = "?";
        for (size_t j = 0; j < k->en->n; j++) {
            if (k->en->vals[j] == v) {
                w = k->en->words[j];
            }
        }
        pxu_text_add(b, "%s", w);
        break;
    }
    case K_LEVEL: {
        const char *nm = px_log_level_name(*AT_C(c, k, px_log_level));
        size_t j = 0;
        for (; nm[j] && j + 1 < sizeof buf; j++) {
            buf[j] = (char)((nm[j] >= 'A' && nm[j] <= 'Z') ? nm[j] - 'A' + 'a' : nm[j]);
        }
        buf[j] = '\0';
        pxu_text_add(b, "%s", buf);
        break;
    }
    case K_LIST: {
        const pxd_list *l = AT_C(c, k, pxd_list);
        for (size_t j = 0; j < l->n; j++) {
            pxu_text_add(b, "%s%s", j ? ", " : "", mask && (k->flags & F_SECRET) ? "***" : l->v[j]);
        }
        break;
    }
    }
}

static void root_text(sb *b, const pxd_root *r) {
    pxu_text_add(b, "{name: %s", r->name ? r->name : "");
    if (r->global_name) {
        pxu_text_add(b, ", global_name: %s", r->global_name);
    }
    pxu_text_add(b, ", behavior: %s", r->behavior ? r->behavior : "");
    if (r->supervisor) {
        pxu_text_add(b, ", supervisor: %s, children: %u", r->supervisor, (unsigned)r->children);
    }
    pxu_text_add(b, ", placement: %s, max_restarts: %u, within_ms: %u",
           r->placement ? r->placement : "here", (unsigned)r->max_restarts,
           (unsigned)r->within_ms);
    if (r->arg_type) {
        pxu_text_add(b, ", arg_type: %s, arg: %s", r->arg_type, r->arg ? r->arg : "{}");
    }
    pxu_text_add(b, "}");
}

#define DUMP_COL 48

char *pxd_config_dump(const pxd_config *c) {
    sb b = {0};
    if (c == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < N_KEYS; i++) {
        size_t start = b.len;
        pxu_text_add(&b, "%s = ", keys[i].name);
        value_text(&b, c, &keys[i], true);
        sb_pad(&b, start, DUMP_COL);
        pxu_text_add(&b, "# %s\n", c->src ? c->src[i] : "?");
    }
    if (c->n_roots == 0) {
        size_t start = b.len;
        pxu_text_add(&b, "roots = []");
        sb_pad(&b, start, DUMP_COL);
        pxu_text_add(&b, "# default\n");
    }
    for (size_t r = 0; r < c->n_roots; r++) {
        size_t start = b.len;
        pxu_text_add(&b, "roots[%zu] = ", r);
        root_text(&b, &c->roots[r]);
        sb_pad(&b, start, DUMP_COL);
        pxu_text_add(&b, "# %s\n", c->roots[r].src);
    }
    return pxu_text_take(&b);
}

/* ---- reload ---- */

static void value_swap(pxd_config *a, pxd_config *b, const key *k) {
    switch (k->kind) {
    case K_STR:
    case K_URL:
    case K_PATH: {
        char *t = *AT(a, k, char *);
        *AT(a, k, char *) = *AT(b, k, char *);
        *AT(b, k, char *) = t;
        break;
    }
    case K_LIST: {
        pxd_list t = *AT(a, k, pxd_list);
        *AT(a, k, pxd_list) = *AT(b, k, pxd_list);
        *AT(b, k, pxd_list) = t;
        break;
    }
    case K_INT:
        *AT(a, k, uint32_t) = *AT(b, k, uint32_t);
        break;
    case K_SIZE:
        *AT(a, k, uint64_t) = *AT(b, k, uint64_t);
        break;
    case K_BOOL:
        *AT(a, k, bool) = *AT(b, k, bool);
        break;
    case K_ENUM:
        k->en->set(a, k->en->get(b));
        break;
    case K_LEVEL:
        *AT(a, k, px_log_level) = *AT(b, k, px_log_level);
        break;
    }
}

static bool roots_equal(const pxd_config *a, const pxd_config *b) {
    sb x = {0}, y = {0};
    for (size_t r = 0; r < a->n_roots; r++) {
        root_text(&x, &a->roots[r]);
    }
    for (size_t r = 0; r < b->n_roots; r++) {
        root_text(&y, &b->roots[r]);
    }
    bool eq = !x.oom && !y.oom && a->n_roots == b->n_roots &&
              (x.s == NULL ? y.s == NULL : (y.s != NULL && strcmp(x.s, y.s) == 0));
    free(x.s);
    free(y.s);
    return eq;
}

px_err pxd_config_reload(pxd_config *c, int argc, char *const *argv, char *const *envp,
                         const char *const *extra_flags, char **changed, char *err,
                         size_t errlen) {
    pxd_config n;
    if (changed) {
        *changed = NULL;
    }
    if (c == NULL) {
        return PX_EINVAL;
    }
    px_err rc = build(&n, argc, argv, envp, extra_flags, err, errlen);
    if (rc != PX_OK) {
        return rc;
    }
    /* First the text (may fail: then nothing is applied), then the moves. */
    sb out = {0}, later = {0};
    bool apply[N_KEYS] = {false};
    for (size_t i = 0; i < N_KEYS; i++) {
        const key *k = &keys[i];
        sb x = {0}, y = {0};
        value_text(&x, c, k, true);
        value_text(&y, &n, k, true);
        if (!x.oom && !y.oom) {
            const char *xs = x.s ? x.s : "", *ys = y.s ? y.s : "";
            bool differ = strcmp(xs, ys) != 0 ||
                          ((k->flags & F_SECRET) && strcmp(xs, "***") == 0 &&
                           strcmp(*AT(c, k, char *), *AT(&n, k, char *)) != 0);
            if (differ && (k->flags & F_RELOAD)) {
                apply[i] = true;
                pxu_text_add(&out, "%s%s %s -> %s", out.len ? "; " : "", k->name, xs, ys);
            } else if (differ) {
                pxu_text_add(&later, "%s%s", later.len ? ", " : "", k->name);
            }
        } else {
            out.oom = true;
        }
        free(x.s);
        free(y.s);
    }
    if (!roots_equal(c, &n)) {
        pxu_text_add(&later, "%sroots", later.len ? ", " : "");
    }
    if (later.len) {
        pxu_text_add(&out, "%snot applied until a restart: %s", out.len ? "; " : "", later.s);
    }
    free(later.s);
    if (out.oom || later.oom) {
        free(out.s);
        pxd_config_free(&n);
        return PX_ENOMEM;
    }
    for (size_t i = 0; i < N_KEYS; i++) {
        if (apply[i]) {
            value_swap(c, &n, &keys[i]);
            if (c->src && n.src) {
                memcpy(c->src[i], n.src[i], PXD_SRC_LEN);
            }
        }
    }
    pxd_config_free(&n);
    if (changed) {
        *changed = out.s; /* NULL when nothing changed */
    } else {
        free(out.s);
    }
    return PX_OK;
}

/* ---- reference and usage ---- */

/* Per kind: the reference's type word and the usage's value placeholder. */
static const struct {
    const char *type, *meta;
} kind_doc[] = {
    [K_STR] = {"string", "TEXT"}, [K_URL] = {"url", "URL"},      [K_PATH] = {"path", "FILE"},
    [K_INT] = {"int", "N"},       [K_SIZE] = {"size", "SIZE"},   [K_BOOL] = {"bool", "[=BOOL]"},
    [K_ENUM] = {"", ""},          [K_LIST] = {"list", "A,B"},    [K_LEVEL] = {"log level", "LEVEL"},
};

static void enum_words(sb *b, const key *k, const char *sep) {
    for (size_t j = 0; j < k->en->n; j++) {
        pxu_text_add(b, "%s%s", j ? sep : "", k->en->words[j]);
    }
}

static void type_text(sb *b, const key *k) {
    char lo[24], hi[24];
    if (k->kind == K_ENUM) {
        enum_words(b, k, ", ");
    } else if (k->kind == K_STR && k->check == check_name) {
        pxu_text_add(b, "name");
    } else if (k->kind == K_INT) {
        pxu_text_add(b, "int %llu..%llu", (unsigned long long)k->min, (unsigned long long)k->max);
    } else if (k->kind == K_SIZE) {
        fmt_size(k->min, lo, sizeof lo);
        fmt_size(k->max, hi, sizeof hi);
        pxu_text_add(b, "size %s..%s", lo, hi);
    } else if (k->kind == K_LIST) {
        pxu_text_add(b, "list of %s",
               k->check == check_name       ? "names"
               : k->check == check_etcd_url ? "urls"
               : k->check == check_pubkey   ? "keys"
               : k->check == check_peer     ? "peers"
                                            : "paths");
    } else {
        pxu_text_add(b, "%s", kind_doc[k->kind].type);
    }
}

static void meta_text(sb *b, const key *k) {
    if (k->kind == K_ENUM) {
        enum_words(b, k, "|");
    } else if (k->kind == K_STR && k->check == check_name) {
        pxu_text_add(b, "NAME");
    } else if (k->kind == K_LIST && k->check == check_peer) {
        pxu_text_add(b, "\"NAME ADDR KEY\"");
    } else {
        pxu_text_add(b, "%s", kind_doc[k->kind].meta);
    }
}

char *pxd_config_reference(void) {
    sb b = {0};
    pxu_text_add(&b, "| key | env | flag | type | default | reload | description |\n"
               "| --- | --- | --- | --- | --- | --- | --- |\n");
    for (size_t i = 0; i < N_KEYS; i++) {
        const key *k = &keys[i];
        pxu_text_add(&b, "| `%s` | `%s` | `%s`%s | ", k->name, k->env, k->flag,
               k->kind == K_LIST ? " (repeatable)" : "");
        type_text(&b, k);
        if (k->flags & F_REQUIRED) {
            pxu_text_add(&b, " | *required* | ");
        } else if (k->def_doc) {
            pxu_text_add(&b, " | = %s | ", k->def_doc);
        } else if (k->def) {
            pxu_text_add(&b, " | `%s` | ", k->def);
        } else {
            pxu_text_add(&b, " | | ");
        }
        pxu_text_add(&b, "%s | %s%s |\n", (k->flags & F_RELOAD) ? "yes" : "no", k->desc,
               (k->flags & F_SECRET) ? " (masked in dumps)" : "");
    }
    pxu_text_add(&b,
           "\nPrecedence: defaults < file (`--config FILE` or `PLEXUS_CONFIG`) < environment < "
           "flags. In the file a key is nested maps (`node: {workers: 4}`) and a list is a YAML "
           "sequence; in the environment and in flags a list is comma-separated, and a list "
           "flag may be repeated to append. `plexusd --check-config` prints each value with "
           "its source.\n"
           "\n"
           "`roots:` (file only) is a list of actors started once the node has joined. Each "
           "entry has `name` (required; a local name), `global_name` (optional; registered "
           "cluster-wide, follows failover), `behavior` (required; the actor's behavior, or "
           "its children's under a supervisor), `supervisor` (`one_for_one`, `all_for_one` or "
           "`rest_for_one`; absent = a plain actor), `children` (with a supervisor, 1..1024, "
           "default 1), `placement` (`here` (default), `round_robin`, `least_loaded`, "
           "`node:NAME` or `role:ROLE`), `max_restarts` (default 10), `within_ms` (default "
           "5000), and for a plain actor a start argument: `arg_type` (a registered protobuf "
           "type, as `plexctl types` lists them) and `arg` (that message as a JSON object, "
           "default `{}`). When the node was fenced and rejoins as a new incarnation, its "
           "roots (actors of the old one, dead to the other nodes) are stopped and started "
           "again.\n"
           "\n"
           "```yaml\n"
           "roots:\n"
           "  - name: kv\n"
           "    global_name: kv\n"
           "    behavior: kv.shard\n"
           "  - name: workers\n"
           "    supervisor: one_for_one\n"
           "    behavior: echo\n"
           "    children: 4\n"
           "    placement: round_robin\n"
           "  - name: load\n"
           "    behavior: load.client\n"
           "    arg_type: plexus.kv.LoadSpec\n"
           "    arg: '{\"target\": \"kv\", \"kind\": \"kv\", \"rate\": 200}'\n"
           "```\n");
    return pxu_text_take(&b);
}

char *pxd_config_usage(void) {
    sb b = {0};
    pxu_text_add(&b, "Usage: plexusd [--config FILE] [FLAG...]\n"
               "\n"
               "Each flag sets a key of the YAML config file; so does each PLEXUS_<KEY>\n"
               "environment variable (PLEXUS_NODE_WORKERS=4 sets node.workers). Flags win over\n"
               "the environment, which wins over the file. A flag takes its value as\n"
               "`--flag VALUE` or `--flag=VALUE`; --plaintext alone means true. List flags take\n"
               "comma-separated values and may be repeated to append.\n"
               "\n");
    size_t start = b.len;
    pxu_text_add(&b, "  --config FILE");
    sb_pad(&b, start, 34);
    pxu_text_add(&b, "the YAML config file (env PLEXUS_CONFIG)\n");
    for (size_t i = 0; i < N_KEYS; i++) {
        const key *k = &keys[i];
        start = b.len;
        pxu_text_add(&b, "  %s%s", k->flag, k->kind == K_BOOL ? "" : " ");
        meta_text(&b, k);
        if (b.len - start >= 33) {
            pxu_text_add(&b, "\n");
            start = b.len;
        }
        sb_pad(&b, start, 34);
        pxu_text_add(&b, "%s: %s", k->name, k->desc);
        if (k->flags & F_REQUIRED) {
            pxu_text_add(&b, " (required)");
        } else if (k->def_doc) {
            pxu_text_add(&b, " (default: %s)", k->def_doc);
        } else if (k->def) {
            pxu_text_add(&b, " (default: %s)", k->def);
        }
        pxu_text_add(&b, "%s\n", (k->flags & F_RELOAD) ? " [reloadable]" : "");
    }
    pxu_text_add(&b, "\n"
               "Other commands (they start no node):\n"
               "  --check-config                  print the effective config (file < environment\n"
               "                                  < flags) and check it and the files it names\n"
               "                                  (secret, key, plugins): exit 0, or 2 with\n"
               "                                  each error and its source\n"
               "  --config-reference              every key as a Markdown table (the README's)\n"
               "  --version                       version and wire protocol\n"
               "  --help                          this text\n"
               "\n"
               "Examples:\n"
               "  plexusd --config /etc/plexus/plexusd.yaml\n"
               "  plexusd --name a --secret-file cluster.secret --listen tcp://10.0.0.1:7100 \\\n"
               "          --etcd http://10.0.0.9:2379 --roles kv,web --workers 4\n"
               "  PLEXUS_LOG_LEVEL=debug plexusd --config plexusd.yaml --mailbox-capacity=1000\n"
               "  plexusd --name b --secret-file cluster.secret \\\n"
               "          --peer \"a tcp://10.0.0.1:7100 <a's base64 public key>\"\n");
    return pxu_text_take(&b);
}

/* ---- the table, read-only ---- */

size_t pxd_config_key_count(void) { return N_KEYS; }

bool pxd_config_key(size_t i, pxd_key_info *out) {
    if (i >= N_KEYS || out == NULL) {
        return false;
    }
    const key *k = &keys[i];
    out->name = k->name;
    out->env = k->env;
    out->flag = k->flag;
    out->def = k->def ? k->def : "";
    out->secret = (k->flags & F_SECRET) != 0;
    out->reloadable = (k->flags & F_RELOAD) != 0;
    out->required = (k->flags & F_REQUIRED) != 0;
    return true;
}

const char *pxd_config_source(const pxd_config *c, const char *key_name) {
    if (c == NULL || c->src == NULL || key_name == NULL) {
        return NULL;
    }
    ptrdiff_t i = key_index(key_name, strlen(key_name));
    return i >= 0 ? c->src[i] : NULL;
}
