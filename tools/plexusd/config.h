/*
 * config.h — plexusd's configuration: one table of keys (config.c) drives
 * the YAML file parser (libyaml), the PLEXUS_* environment variables, the
 * command-line flags, `plexusd --check-config` and the README's config
 * reference (`plexusd --config-reference`), so they cannot drift apart.
 *
 * Precedence: defaults < file < environment < flags. Every value remembers
 * its source ("plexusd.yaml:12", "env PLEXUS_NODE_WORKERS", "flag
 * --workers", "default"), and every error names it:
 *   plexusd.yaml:12: node.workers: expected an integer 0..256, got "lots"
 * An unknown key (file: with its line; env: a PLEXUS_ variable that names
 * no key, PLEXUS_CONFIG aside; flag) is an error too. Loading never exits
 * or aborts: it returns PX_EINVAL with every problem found, one per line,
 * in the error text.
 *
 * Lists are YAML sequences in the file and comma-separated in the
 * environment and in flags; a list flag may be repeated (--peer, --load,
 * --admin-key...): its first use replaces the list, each repeat appends.
 * A flag takes `--x VALUE` or `--x=VALUE` (a next argument that starts
 * with "--" is not taken as a value); a bool flag alone means true
 * (--plaintext; --plaintext=false).
 *
 * String fields are malloc'd and NULL when unset (or set to ""). Not
 * thread-safe: the owner of a pxd_config serialises every call on it.
 */
#ifndef PXD_CONFIG_H
#define PXD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <plexus/error.h>
#include <plexus/log.h>
#include <plexus/system.h>

#define PXD_MAX_LIST 32  /* entries of a list value (roles, endpoints, peers, plugins, keys) */
#define PXD_MAX_ROOTS 32
#define PXD_SRC_LEN 160

/* A list of strings (each malloc'd). */
typedef struct pxd_list {
    char *v[PXD_MAX_LIST];
    size_t n;
} pxd_list;

/* One entry of `roots:` (file only): an actor (or a supervisor with
 * children) started when the node has joined. */
typedef struct pxd_root {
    char *name;          /* required; registered as a local name on the node */
    char *global_name;   /* optional; registered cluster-wide (follows failover) */
    char *behavior;      /* required; the actor's behavior, or the children's under a supervisor */
    char *supervisor;    /* NULL = a plain actor; else "one_for_one" | "all_for_one" | "rest_for_one" */
    uint32_t children;   /* with supervisor: how many children (1..1024, default 1) */
    char *placement;     /* children's placement: "here" (default), "round_robin",
                            "least_loaded", "node:NAME", "role:ROLE" */
    uint32_t max_restarts; /* default 10 */
    uint32_t within_ms;    /* default 5000 */
    char *arg_type;        /* a plain actor's start argument: a registered protobuf type... */
    char *arg;             /* ...given as a JSON object (NULL = {}) */
    char src[PXD_SRC_LEN]; /* "plexusd.yaml:31" */
} pxd_root;

typedef struct pxd_config {
    /* node */
    char *node_name;      /* node.name; required */
    char *listen;         /* node.listen; default "tcp://127.0.0.1:7100" */
    char *advertise;      /* node.advertise; unset = a copy of listen */
    char *key_file;       /* node.key_file; default "plexus-node.key" (created on first start) */
    pxd_list roles;       /* node.roles */
    uint32_t workers;     /* node.workers; 0 = online CPUs */
    /* cluster */
    char *cluster;        /* cluster.name; default "plexus" */
    char *secret_file;    /* cluster.secret_file; required */
    pxd_list etcd;        /* cluster.etcd_endpoints; empty = standalone */
    uint32_t lease_ttl_s; /* cluster.lease_ttl_s; 2..600, default 5 */
    char *etcd_ca_file;   /* cluster.etcd_ca_file */
    char *etcd_user;      /* cluster.etcd_user */
    char *etcd_password;  /* cluster.etcd_password (secret: masked when printed) */
    pxd_list peers;       /* transport.peers: "NAME ADDRESS PUBKEY" static peers */
    uint64_t max_msg;     /* transport.max_msg; bytes, default 16 MiB */
    bool plaintext;       /* transport.plaintext; default false (benchmarks only) */
    bool latency_mode;    /* transport.latency_mode: px_transport_cfg.poll_rx; default false */
    /* actors */
    uint32_t mailbox_capacity;  /* limits.mailbox_capacity; 0 = unbounded (reloadable) */
    px_overflow mailbox_policy; /* limits.mailbox_policy: block | drop_newest | drop_oldest | error */
    uint32_t max_actors;        /* limits.max_actors */
    /* endpoints */
    char *http_listen;    /* http.listen; default "http://127.0.0.1:9100"; "" = off (NULL) */
    char *admin_listen;   /* admin.listen; default "tcp://127.0.0.1:7200" */
    pxd_list admin_keys;  /* admin.keys: base64 identity keys allowed; empty = any holder of the secret */
    /* logs */
    px_log_level log_level; /* log.level (reloadable) */
    bool log_json;          /* log.format: text | json */
    /* drain */
    uint32_t drain_timeout_ms; /* drain.timeout_ms; default 10000 */
    /* plugins and roots */
    pxd_list plugins;     /* plugins (flag --load, repeatable) */
    pxd_root roots[PXD_MAX_ROOTS];
    size_t n_roots;
    /* where each key's value came from, parallel to the key table */
    char (*src)[PXD_SRC_LEN];
    char *file;           /* the config file read (NULL = none) */
} pxd_config;

/* Fills defaults (and allocates c->src). Out of memory leaves the fields it
 * could not allocate NULL; pxd_config_load then reports PX_ENOMEM. */
void pxd_config_init(pxd_config *c);
/* Frees every string, list entry and root and zeroes c. NULL-safe. */
void pxd_config_free(pxd_config *c);

/* Loads everything: `--config FILE` (or env PLEXUS_CONFIG) then env then
 * the other flags of argv (argv[0] skipped; argv may hold flags this
 * module does not know only if they are in `extra_flags`, a NULL-ended
 * list of names such as "--check-config" that the caller handles; they
 * take no value). Then checks required keys and cross-key rules. c must
 * have been initialised; it is replaced only on success (on error it is
 * as it was). PX_EINVAL with every problem, one per line, in err (cut
 * with "..." at errlen). PX_ENOMEM. */
px_err pxd_config_load(pxd_config *c, int argc, char *const *argv, char *const *envp,
                       const char *const *extra_flags, char *err, size_t errlen);

/* Re-reads the file (SIGHUP) and applies only the reloadable keys
 * (log.level, limits.mailbox_capacity, limits.mailbox_policy) into c;
 * *changed lists what changed ("log.level info -> debug; ..."; then
 * "not applied until a restart: node.workers, roots" for other keys that
 * differ; malloc'd, caller owns it; NULL when nothing changed). Env and
 * flags still win. PX_EINVAL or PX_ENOMEM leaves c as it was. */
px_err pxd_config_reload(pxd_config *c, int argc, char *const *argv, char *const *envp,
                         const char *const *extra_flags, char **changed, char *err,
                         size_t errlen);

/* The effective config, one "key = value    # source" line per key in
 * table order, then one "roots[i] = {...}   # FILE:LINE" line per root
 * ("roots = []" when none); secrets that are set print as "***".
 * Caller owns result (malloc'd); NULL if out of memory. */
char *pxd_config_dump(const pxd_config *c);

/* Markdown: the reference table (key, env, flag, type, default,
 * reloadable, description), one row per key, then a paragraph on `roots:`
 * — the README's config section is this text. Caller owns result. */
char *pxd_config_reference(void);

/* Usage text for the flags (plexusd --help) with examples; only the
 * config's flags and --config (the caller adds its extra_flags). Caller
 * owns result. */
char *pxd_config_usage(void);

/* The key table, read-only: for --check-config, tests and tools. */
typedef struct pxd_key_info {
    const char *name; /* "node.workers" */
    const char *env;  /* "PLEXUS_NODE_WORKERS" */
    const char *flag; /* "--workers" */
    const char *def;  /* default as text; "" = none */
    bool secret, reloadable, required;
} pxd_key_info;

size_t pxd_config_key_count(void);
/* Key i (0..count-1) into *out (static strings); false past the end. */
bool pxd_config_key(size_t i, pxd_key_info *out);

/* Where key `key_name`'s value came from ("default", "plexusd.yaml:12",
 * "env PLEXUS_NODE_WORKERS", "flag --workers"); borrowed from c. NULL for
 * an unknown key. */
const char *pxd_config_source(const pxd_config *c, const char *key_name);

#endif
