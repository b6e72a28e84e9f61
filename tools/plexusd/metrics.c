/*
 * metrics.c — the node's figures as Prometheus text (exposition format
 * 0.0.4), rendered on demand for GET /metrics.
 *
 * Every figure is read from the parts' own counters at render time (the
 * system's totals, one walk of the actor table for the mailbox depth
 * histogram, the transport's totals and each known peer's link, the
 * membership's view and standing, the mesh, the admin server); nothing is
 * cached here, so two renders never disagree with the parts. A family
 * whose part is absent (standalone: no transport, cluster or mesh; a node
 * half started or drained) is left out, not reported as zero.
 *
 * Each family is written as # HELP, # TYPE, then its samples, contiguous;
 * counters end in _total; label values are escaped (\\, \", \n).
 *
 * Concurrency: any thread. n->t, n->c and n->m are read under
 * n->parts_mtx (the drain takes them out under it); the calls made under
 * it are the parts' snapshot functions, which do not block on actors.
 */
#include "metrics.h"
#include "text.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nng/nng.h>
#include <nng/supplemental/util/platform.h>


/* Histogram buckets of plexus_mailbox_depth (messages); +Inf follows. */
static const uint64_t depth_bounds[] = {0, 1, 8, 64, 512, 4096, 32768};
#define NBOUNDS (sizeof(depth_bounds) / sizeof(depth_bounds[0]))

/* The page: tools/common/text.h's buffer (after a failed allocation
 * every append is a no-op and the render returns NULL). */
typedef pxu_text buf;

/* A label value escaped for the exposition format into out (truncated to
 * outlen, never inside an escape). */
static const char *esc(const char *v, char *out, size_t outlen) {
    size_t o = 0;
    for (; v != NULL && *v != '\0'; v++) {
        const char *rep = *v == '\\' ? "\\\\" : *v == '"' ? "\\\"" : *v == '\n' ? "\\n" : NULL;
        size_t need = rep != NULL ? 2 : 1;
        if (o + need >= outlen) {
            break;
        }
        if (rep != NULL) {
            memcpy(out + o, rep, 2);
        } else {
            out[o] = *v;
        }
        o += need;
    }
    out[o] = '\0';
    return out;
}

static void family(buf *b, const char *name, const char *type, const char *help) {
    pxu_text_add(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A family with one unlabelled sample. */
static void one_u64(buf *b, const char *name, const char *type, const char *help, uint64_t v) {
    family(b, name, type, help);
    pxu_text_add(b, "%s %" PRIu64 "\n", name, v);
}

static void one_f(buf *b, const char *name, const char *type, const char *help, double v) {
    family(b, name, type, help);
    pxu_text_add(b, "%s %.3f\n", name, v);
}

/* A counter family with one sample per direction. */
static void in_out(buf *b, const char *name, const char *help, uint64_t in, uint64_t out) {
    family(b, name, "counter", help);
    pxu_text_add(b, "%s{direction=\"in\"} %" PRIu64 "\n%s{direction=\"out\"} %" PRIu64 "\n", name, in,
        name, out);
}

/* Families of one unlabelled sample each, read from a stats struct. */
typedef struct field {
    const char *name, *type, *help;
    size_t off; /* of a uint64_t in the stats struct */
} field;

#define SYS(f) offsetof(px_system_stats, f)
#define TRANSPORT(f) offsetof(px_transport_stats, f)
#define MESH(f) offsetof(px_mesh_stats, f)

static void fields(buf *b, const field *f, size_t n, const void *stats) {
    for (size_t i = 0; i < n; i++) {
        uint64_t v;
        memcpy(&v, (const char *)stats + f[i].off, sizeof v);
        one_u64(b, f[i].name, f[i].type, f[i].help, v);
    }
}

/* ---- the node ---- */

static void render_node(buf *b, pxd_node *n) {
    char why[128];
    family(b, "plexus_build_info", "gauge", "Always 1; the version of plexusd in a label.");
    pxu_text_add(b, "plexus_build_info{version=\"%s\"} 1\n", PXD_VERSION);
    one_f(b, "plexus_node_start_time_seconds", "gauge",
          "When the node started, in seconds since the Unix epoch.",
          (double)n->started_ms / 1000.0);
    int64_t up = n->started_ms > 0 ? pxu_wall_ms() - n->started_ms : 0;
    one_f(b, "plexus_node_uptime_seconds", "gauge", "Seconds since the node started.",
          (double)(up > 0 ? up : 0) / 1000.0);
    int phase = atomic_load(&n->phase);
    family(b, "plexus_node_phase", "gauge",
           "1 for the phase the node is in (starting, running, draining, stopped), else 0.");
    for (int i = PXD_STARTING; i <= PXD_STOPPED; i++) {
        pxu_text_add(b, "plexus_node_phase{phase=\"%s\"} %d\n", pxd_phase_name(i),
                     i == phase ? 1 : 0);
    }
    one_u64(b, "plexus_node_ready", "gauge",
            "1 when the node is ready for work (GET /readyz answers 200), else 0.",
            pxd_ready(n, why, sizeof why) ? 1 : 0);
    static const char *const levels[] = {"trace", "debug", "info", "warn", "error", "crit"};
    family(b, "plexus_log_lines_total", "counter", "Log lines written, by level.");
    for (int l = PX_LOG_TRACE; l <= PX_LOG_CRIT; l++) {
        pxu_text_add(b, "plexus_log_lines_total{level=\"%s\"} %" PRIu64 "\n", levels[l],
            (uint64_t)atomic_load_explicit(&n->log_lines[l], memory_order_relaxed));
    }
    family(b, "plexus_admin_requests_total", "counter",
           "Admin channel requests answered, by outcome (ok, error).");
    pxu_text_add(b, "plexus_admin_requests_total{outcome=\"ok\"} %" PRIu64 "\n",
        (uint64_t)atomic_load(&n->admin_ok));
    pxu_text_add(b, "plexus_admin_requests_total{outcome=\"error\"} %" PRIu64 "\n",
        (uint64_t)atomic_load(&n->admin_err));
}

/* ---- the actor system ---- */

typedef struct depth_hist {
    uint64_t count[NBOUNDS + 1]; /* per bucket, not cumulative; last = above all bounds */
    uint64_t sum, actors, max;
} depth_hist;

static void depth_add(void *arg, px_ref ref, const char *behavior, const char *name,
                      const px_actor_stats *st) {
    (void)ref;
    (void)behavior;
    (void)name;
    depth_hist *h = arg;
    size_t i = 0;
    while (i < NBOUNDS && st->depth > depth_bounds[i]) {
        i++;
    }
    h->count[i]++;
    h->sum += st->depth;
    h->actors++;
    if (st->depth > h->max) {
        h->max = st->depth;
    }
}

static void render_system(buf *b, px_system *sys) {
    px_system_stats s;
    if (px_system_stats_get(sys, &s) != PX_OK) {
        return;
    }
    static const field sys_fields[] = {
        {"plexus_actors_live", "gauge", "Actors alive now.", SYS(live_actors)},
        {"plexus_actors_spawned_total", "counter", "Actors spawned.", SYS(spawned)},
        {"plexus_actors_stopped_total", "counter", "Actors stopped.", SYS(stopped)},
        {"plexus_messages_total", "counter", "Messages delivered to a receive callback.",
         SYS(messages)},
        {"plexus_dead_letters_total", "counter",
         "Messages sent to a dead or unknown actor, or discarded at its stop.",
         SYS(dead_letters)},
        {"plexus_messages_dropped_total", "counter",
         "Messages dropped by a bounded mailbox's overflow policy.", SYS(dropped)},
        {"plexus_sends_rejected_total", "counter",
         "Sends refused (limits, closed system, full mailbox).", SYS(rejected)},
        {"plexus_late_replies_total", "counter",
         "Replies that arrived after their ask had timed out.", SYS(late_replies)},
        {"plexus_ask_timeouts_total", "counter", "Asks that timed out.", SYS(ask_timeouts)},
        {"plexus_actor_failures_total", "counter", "Actor failures (init, receive, px_fail).",
         SYS(failures)},
        {"plexus_actor_restarts_total", "counter",
         "Actor instances restarted by their supervisors.", SYS(restarts)},
        {"plexus_actor_resumes_total", "counter",
         "Failures answered with Resume (the failing message dropped).", SYS(resumed)},
        {"plexus_actor_escalations_total", "counter", "Failures passed up to a grandparent.",
         SYS(escalations)},
        {"plexus_topic_publishes_total", "counter",
         "Publications made on this node (px_publish calls that took their message).",
         SYS(published)},
        {"plexus_topic_received_total", "counter", "Publications received from other nodes.",
         SYS(publish_received)},
        {"plexus_topic_deliveries_total", "counter",
         "Messages handed to local subscribers' mailboxes.", SYS(publish_deliveries)},
        {"plexus_topic_unrouted_total", "counter", "Publications that reached no subscriber.",
         SYS(publish_unrouted)},
        {"plexus_topic_refused_total", "counter",
         "Deliveries a subscriber's full bounded mailbox refused.", SYS(publish_refused)},
    };
    fields(b, sys_fields, sizeof(sys_fields) / sizeof(sys_fields[0]), &s);

    depth_hist h;
    memset(&h, 0, sizeof h);
    (void)px_system_actors(sys, depth_add, &h);
    family(b, "plexus_mailbox_depth", "histogram",
           "Messages queued in each live actor's mailbox, one observation per actor.");
    uint64_t cum = 0;
    for (size_t i = 0; i < NBOUNDS; i++) {
        cum += h.count[i];
        pxu_text_add(b, "plexus_mailbox_depth_bucket{le=\"%" PRIu64 "\"} %" PRIu64 "\n", depth_bounds[i],
            cum);
    }
    cum += h.count[NBOUNDS];
    pxu_text_add(b, "plexus_mailbox_depth_bucket{le=\"+Inf\"} %" PRIu64 "\n", cum);
    pxu_text_add(b, "plexus_mailbox_depth_sum %" PRIu64 "\nplexus_mailbox_depth_count %" PRIu64 "\n",
        h.sum, h.actors);
    one_u64(b, "plexus_mailbox_depth_max", "gauge",
            "The deepest live actor's mailbox, in messages.", h.max);
}

/* ---- transport ---- */

/* The peers whose links to report: the static ones of the config and
 * every member of the view but this node, each name once. */
typedef struct peer_names {
    char (*v)[PX_MEMBER_NAME_MAX];
    size_t n, cap;
} peer_names;

static void peer_add(peer_names *p, const char *name, const char *self) {
    if (name == NULL || name[0] == '\0' || (self != NULL && strcmp(name, self) == 0)) {
        return;
    }
    for (size_t i = 0; i < p->n; i++) {
        if (strcmp(p->v[i], name) == 0) {
            return;
        }
    }
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        void *nv = realloc(p->v, cap * sizeof(p->v[0]));
        if (nv == NULL) {
            return; /* that peer goes unreported in this render */
        }
        p->v = nv;
        p->cap = cap;
    }
    snprintf(p->v[p->n++], sizeof(p->v[0]), "%s", name);
}

/* A counter family with lane and direction labels. */
static void by_lane(buf *b, const char *name, const char *help, const uint64_t in[3],
                    const uint64_t out[3]) {
    static const char *const lanes[3] = {"control", "normal", "bulk"};
    family(b, name, "counter", help);
    for (int l = 0; l < 3; l++) {
        pxu_text_add(b, "%s{lane=\"%s\",direction=\"in\"} %" PRIu64 "\n", name, lanes[l], in[l]);
        pxu_text_add(b, "%s{lane=\"%s\",direction=\"out\"} %" PRIu64 "\n", name, lanes[l],
                     out[l]);
    }
}

static void render_transport(buf *b, px_transport *t, const peer_names *peers) {
    px_transport_stats s;
    memset(&s, 0, sizeof s);
    px_transport_stats_get(t, &s);
    in_out(b, "plexus_transport_messages_total",
           "Envelopes sent to and delivered from other nodes.", s.msgs_in, s.msgs_out);
    in_out(b, "plexus_transport_frames_total", "Frames on the node links.", s.frames_in,
           s.frames_out);
    in_out(b, "plexus_transport_bytes_total", "Bytes on the node links, headers included.",
           s.bytes_in, s.bytes_out);
    in_out(b, "plexus_transport_bulk_total", "Payloads sent or received in chunks on BULK.",
           s.bulk_in, s.bulk_out);
    by_lane(b, "plexus_transport_lane_messages_total",
            "Envelopes by lane (chunked payloads on bulk), sent and received before delivery.",
            s.lane_msgs_in, s.lane_msgs_out);
    by_lane(b, "plexus_transport_lane_bytes_total", "Bytes read and written, by lane.",
            s.lane_bytes_in, s.lane_bytes_out);
    family(b, "plexus_transport_heartbeats_total", "counter", "Heartbeat frames received, by kind (ping, pong).");
    pxu_text_add(b, "plexus_transport_heartbeats_total{kind=\"ping\"} %" PRIu64 "\n", s.pings);
    pxu_text_add(b, "plexus_transport_heartbeats_total{kind=\"pong\"} %" PRIu64 "\n", s.pongs);
    static const field t_fields[] = {
        {"plexus_transport_handshakes_total", "counter", "Link handshakes completed.",
         TRANSPORT(handshakes)},
        {"plexus_transport_handshakes_refused_total", "counter",
         "Link handshakes refused, by either side.", TRANSPORT(refused)},
        {"plexus_transport_bad_frames_total", "counter",
         "Frames that failed to open or decode (the link was dropped).", TRANSPORT(bad_frames)},
        {"plexus_transport_undeliverable_total", "counter",
         "Envelopes that arrived but could not be delivered.", TRANSPORT(undeliverable)},
        {"plexus_transport_held_total", "counter",
         "Envelopes held back behind a waiting one of their sender and target.", TRANSPORT(held)},
        {"plexus_transport_notices_total", "counter",
         "Undelivered notices sent to senders on other nodes.", TRANSPORT(notices)},
        {"plexus_transport_notices_lost_total", "counter",
         "Undelivered notices lost (queue full, peer down).", TRANSPORT(notices_lost)},
        {"plexus_transport_bulk_window_cuts_total", "counter",
         "Bulk windows halved because a heartbeat round trip rose (a queue on the path).",
         TRANSPORT(bulk_cuts)},
        {"plexus_transport_bulk_credit_waits_total", "counter",
         "Times the bulk lane had data but waited for the peer's credit.", TRANSPORT(bulk_waits)},
        {"plexus_transport_reads_polled_total", "counter",
         "Latency mode: reads done by spinning scheduler workers.", TRANSPORT(reads_polled)},
        {"plexus_transport_writes_inline_total", "counter",
         "Latency mode: frames written whole by the thread that packed them.",
         TRANSPORT(writes_inline)},
    };
    fields(b, t_fields, sizeof(t_fields) / sizeof(t_fields[0]), &s);

    /* Per peer: one read of each link, then one family after another. */
    px_peer_info *pi = peers->n > 0 ? calloc(peers->n, sizeof *pi) : NULL;
    bool *known = peers->n > 0 ? calloc(peers->n, sizeof *known) : NULL;
    if (peers->n > 0 && (pi == NULL || known == NULL)) {
        b->oom = true;
        free(pi);
        free(known);
        return;
    }
    for (size_t i = 0; i < peers->n; i++) {
        known[i] = px_transport_peer_info(t, peers->v[i], false, &pi[i]) == PX_OK;
    }
    char e[3 * PX_MEMBER_NAME_MAX];
    static const px_link_state states[] = {PX_LINK_CONNECTING, PX_LINK_UP, PX_LINK_UNREACHABLE,
                                           PX_LINK_GONE};
    family(b, "plexus_link_state", "gauge",
           "1 for the state the link to each peer is in (connecting, up, unreachable, gone), "
           "else 0.");
    for (size_t i = 0; i < peers->n; i++) {
        for (size_t k = 0; known[i] && k < sizeof(states) / sizeof(states[0]); k++) {
            pxu_text_add(b, "plexus_link_state{peer=\"%s\",state=\"%s\"} %d\n",
                esc(peers->v[i], e, sizeof e), px_link_state_name(states[k]),
                pi[i].state == states[k] ? 1 : 0);
        }
    }
    static const struct {
        const char *name, *help;
    } rtts[] = {
        {"plexus_link_rtt_seconds", "Last heartbeat round trip to each peer (0: none yet)."},
        {"plexus_link_rtt_max_seconds", "Largest heartbeat round trip since the link came up."},
        {"plexus_link_rtt_p99_seconds", "p99 of the last (up to 128) heartbeat round trips."},
    };
    for (size_t r = 0; r < sizeof(rtts) / sizeof(rtts[0]); r++) {
        family(b, rtts[r].name, "gauge", rtts[r].help);
        for (size_t i = 0; i < peers->n; i++) {
            uint32_t us = r == 0 ? pi[i].rtt_us : r == 1 ? pi[i].rtt_max_us : pi[i].rtt_p99_us;
            if (known[i]) {
                pxu_text_add(b, "%s{peer=\"%s\"} %.6f\n", rtts[r].name, esc(peers->v[i], e, sizeof e),
                    (double)us / 1e6);
            }
        }
    }
    static const struct {
        const char *name, *help;
    } sizes[] = {
        {"plexus_link_queued_messages", "Envelopes waiting to go out to each peer."},
        {"plexus_link_queued_bytes", "Payload bytes waiting to go out to each peer (bulk included)."},
        {"plexus_link_bulk_window_bytes",
         "The bulk lane's window to each peer (0: not paced)."},
        {"plexus_link_bulk_inflight_bytes",
         "Bulk chunk bytes sent to each peer and not credited yet."},
    };
    for (size_t r = 0; r < sizeof(sizes) / sizeof(sizes[0]); r++) {
        family(b, sizes[r].name, "gauge", sizes[r].help);
        for (size_t i = 0; i < peers->n; i++) {
            uint64_t v = r == 0   ? (uint64_t)pi[i].queued_msgs
                         : r == 1 ? pi[i].queued_bytes
                         : r == 2 ? pi[i].bulk_window
                                  : pi[i].bulk_inflight;
            if (known[i]) {
                pxu_text_add(b, "%s{peer=\"%s\"} %" PRIu64 "\n", sizes[r].name,
                    esc(peers->v[i], e, sizeof e), v);
            }
        }
    }
    free(pi);
    free(known);
}

/* ---- cluster and mesh ---- */

static void render_cluster(buf *b, px_cluster *c, const px_member *ms, size_t nm) {
    static const px_member_state states[] = {PX_MEMBER_JOINING, PX_MEMBER_UP,
                                              PX_MEMBER_UNREACHABLE, PX_MEMBER_LEFT,
                                              PX_MEMBER_DOWN, PX_MEMBER_FENCED};
    family(b, "plexus_cluster_members", "gauge",
           "Members of this node's view of the cluster, by state.");
    for (size_t k = 0; k < sizeof(states) / sizeof(states[0]); k++) {
        uint64_t count = 0;
        for (size_t i = 0; i < nm; i++) {
            count += ms[i].state == states[k];
        }
        pxu_text_add(b, "plexus_cluster_members{state=\"%s\"} %" PRIu64 "\n",
            px_member_state_name(states[k]), count);
    }
    px_cluster_health h;
    memset(&h, 0, sizeof h);
    px_cluster_health_get(c, &h);
    one_u64(b, "plexus_cluster_registered", "gauge",
            "1 while this node holds its lease and is not fenced.", h.registered ? 1 : 0);
    one_u64(b, "plexus_cluster_fenced", "gauge",
            "1 while this node is fenced (lost its lease), else 0.", h.fenced ? 1 : 0);
    one_u64(b, "plexus_cluster_holding", "gauge",
            "1 while this node's lease is unconfirmed for a TTL but etcd is down for every "
            "member it knows, so it serves on its last view instead of fencing.",
            h.holding ? 1 : 0);
    one_u64(b, "plexus_cluster_fences_total", "counter", "Times this node fenced itself.",
            h.fences);
    one_u64(b, "plexus_cluster_incarnation", "gauge", "This node's current incarnation.",
            h.node_inc);
    one_u64(b, "plexus_cluster_keepalives_total", "counter", "Lease keepalives sent to etcd.",
            h.keepalives);
    one_u64(b, "plexus_cluster_keepalive_errors_total", "counter",
            "Lease keepalives that failed.", h.keepalive_errors);
    int64_t down = h.etcd_down_since_ms > 0 ? pxu_wall_ms() - h.etcd_down_since_ms : 0;
    one_f(b, "plexus_cluster_etcd_down_seconds", "gauge",
          "Seconds since etcd requests started failing in a row (0: etcd is fine).",
          (double)(down > 0 ? down : 0) / 1000.0);
    px_etcd_stats es;
    px_cluster_etcd_stats(c, &es);
    one_u64(b, "plexus_etcd_requests_total", "counter",
            "Unary etcd requests completed (failed ones included).", es.requests);
    one_u64(b, "plexus_etcd_errors_total", "counter", "Unary etcd requests that failed.",
            es.errors);
    one_u64(b, "plexus_etcd_bad_responses_total", "counter",
            "etcd responses that could not be parsed.", es.bad_responses);
    one_u64(b, "plexus_etcd_failovers_total", "counter",
            "Moves to the next etcd endpoint.", es.failovers);
    one_u64(b, "plexus_etcd_watch_connects_total", "counter",
            "etcd watch streams connected or reconnected.", es.watch_connects);
    uint64_t ok = es.requests >= es.errors ? es.requests - es.errors : 0;
    family(b, "plexus_etcd_request_duration_seconds", "summary",
           "Latency of successful unary etcd requests.");
    pxu_text_add(b, "plexus_etcd_request_duration_seconds_sum %.6f\n"
                    "plexus_etcd_request_duration_seconds_count %" PRIu64 "\n",
                 (double)es.latency_sum_us / 1e6, ok);
    one_f(b, "plexus_etcd_request_duration_max_seconds", "gauge",
          "The slowest successful unary etcd request so far.", (double)es.max_latency_us / 1e6);
    one_f(b, "plexus_etcd_request_duration_last_seconds", "gauge",
          "The last successful unary etcd request.", (double)es.last_latency_us / 1e6);
}

static void render_mesh(buf *b, px_mesh *m) {
    px_mesh_stats s;
    memset(&s, 0, sizeof s);
    px_mesh_stats_get(m, &s);
    static const field gauges[] = {
        {"plexus_mesh_remote_watches", "gauge", "Watches of remote actors open now.",
         MESH(remote_watches)},
        {"plexus_mesh_proxies", "gauge", "Children placed on other nodes, running.",
         MESH(proxies)},
        {"plexus_mesh_hosted", "gauge", "Children here whose parents are elsewhere.",
         MESH(hosted)},
    };
    fields(b, gauges, sizeof(gauges) / sizeof(gauges[0]), &s);
    family(b, "plexus_mesh_spawns_total", "counter",
           "Remote spawns sent to other nodes and served for them.");
    pxu_text_add(b, "plexus_mesh_spawns_total{direction=\"sent\"} %" PRIu64 "\n", s.spawns_sent);
    pxu_text_add(b, "plexus_mesh_spawns_total{direction=\"served\"} %" PRIu64 "\n", s.spawns_served);
    static const field counters[] = {
        {"plexus_mesh_node_down_terminations_total", "counter",
         "Terminated notices (node down or fenced) delivered to watchers.",
         MESH(node_down_terminated)},
        {"plexus_mesh_lost_children_total", "counter",
         "Proxies told their child's node was lost.", MESH(lost_children)},
        {"plexus_mesh_orphans_stopped_total", "counter",
         "Hosted children stopped because their parent's node was lost.", MESH(orphans_stopped)},
        {"plexus_mesh_bad_sys_total", "counter", "Malformed system envelopes received.",
         MESH(bad_sys)},
        {"plexus_mesh_asks_failed_total", "counter",
         "Asks to a lost or unreachable node ended with an error before their timeout.",
         MESH(asks_failed)},
    };
    fields(b, counters, sizeof(counters) / sizeof(counters[0]), &s);
    family(b, "plexus_mesh_publications_total", "counter",
           "Publication frames sent to subscribing nodes and received from other nodes.");
    pxu_text_add(b, "plexus_mesh_publications_total{direction=\"sent\"} %" PRIu64 "\n",
        s.publications_sent);
    pxu_text_add(b, "plexus_mesh_publications_total{direction=\"received\"} %" PRIu64 "\n",
        s.publications_received);
}

static void render_admin(buf *b, px_admin_server *a) {
    px_admin_stats s;
    memset(&s, 0, sizeof s);
    px_admin_server_stats(a, &s);
    family(b, "plexus_admin_connections_total", "counter",
           "Admin channel connections, by outcome of their handshake (accepted, refused).");
    pxu_text_add(b, "plexus_admin_connections_total{outcome=\"accepted\"} %" PRIu64 "\n", s.accepted);
    pxu_text_add(b, "plexus_admin_connections_total{outcome=\"refused\"} %" PRIu64 "\n", s.refused);
    one_u64(b, "plexus_admin_clients", "gauge", "Admin channel connections open now.",
            s.clients);
    one_u64(b, "plexus_admin_messages_total", "counter",
            "Messages from admin clients handed to the request handler.", s.requests);
    one_u64(b, "plexus_admin_bad_frames_total", "counter",
            "Admin frames that did not open or were too large (connection dropped).",
            s.bad_frames);
}

char *pxd_metrics_render(pxd_node *n) {
    buf b = {0};
    if (n == NULL) {
        return pxu_text_take(&b);
    }
    render_node(&b, n);
    if (n->sys != NULL) {
        render_system(&b, n->sys);
    }
    /* The parts are held (parts_mtx) only while they are read. */
    if (n->parts_mtx != NULL) {
        nng_mtx_lock(n->parts_mtx);
    }
    px_member *ms = NULL;
    size_t nm = 0;
    if (n->c != NULL) {
        size_t total = 0;
        px_cluster_members(n->c, NULL, 0, &total);
        if (total > 0 && (ms = calloc(total, sizeof *ms)) != NULL) {
            px_cluster_members(n->c, ms, total, &nm);
            nm = nm < total ? nm : total;
        }
        if (total > 0 && ms == NULL) {
            b.oom = true;
        }
    }
    if (n->t != NULL) {
        peer_names peers = {0};
        const char *self = n->sys != NULL ? px_system_node_name(n->sys) : NULL;
        for (size_t i = 0; n->cfg != NULL && i < n->cfg->peers.n; i++) {
            /* "NAME ADDRESS PUBKEY": the name is the first word. */
            char name[PX_MEMBER_NAME_MAX];
            const char *line = n->cfg->peers.v[i];
            size_t len = strcspn(line, " \t");
            if (len < sizeof name) {
                memcpy(name, line, len);
                name[len] = '\0';
                peer_add(&peers, name, self);
            }
        }
        for (size_t i = 0; i < nm; i++) {
            peer_add(&peers, ms[i].name, self);
        }
        render_transport(&b, n->t, &peers);
        free(peers.v);
    }
    if (n->c != NULL) {
        render_cluster(&b, n->c, ms, nm);
    }
    if (n->m != NULL) {
        render_mesh(&b, n->m);
    }
    if (n->parts_mtx != NULL) {
        nng_mtx_unlock(n->parts_mtx);
    }
    free(ms);
    if (n->admin != NULL) {
        render_admin(&b, n->admin);
    }
    return pxu_text_take(&b);
}
