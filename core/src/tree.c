/*
 * tree.c — px_tree_dump: the supervision tree of a node, as text or JSON.
 *
 * Children lists belong to their parents' contexts, so the dump is taken by
 * the actors themselves: a PXI_SYS_DUMP signal starts at the root guardian;
 * each actor, in its own turn, records one entry per child (what it knows
 * as their supervisor: id, state, counters) and passes the signal on to
 * them. A collector counts signals in flight; the caller waits (bounded)
 * until none is left, then renders the entries. An actor that ended before
 * its signal was handled answers it from its drain. Each parent's entries
 * are consistent with each other; the tree as a whole is a snapshot taken
 * over a few turns.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "runtime.h"

typedef struct dump_ent {
    px_ref parent, ref;
    px_child_info info;
    char behavior[64];
    uint64_t depth, processed;
} dump_ent;

struct pxi_dump {
    nng_mtx *mtx;
    nng_cv *cv;
    uint32_t refs;     /* signals in flight + the caller */
    uint32_t inflight; /* signals in flight */
    dump_ent *ents;
    uint32_t n, cap;
    bool oom;
};

static void dump_unref(pxi_dump *d) {
    nng_mtx_lock(d->mtx);
    bool last = --d->refs == 0;
    nng_mtx_unlock(d->mtx);
    if (last) {
        nng_cv_free(d->cv);
        nng_mtx_free(d->mtx);
        free(d->ents);
        free(d);
    }
}

/* Sends the signal to `a` (pinned or a known child). */
static void dump_send(pxi_dump *d, px_actor *a) {
    nng_mtx_lock(d->mtx);
    d->refs++;
    d->inflight++;
    nng_mtx_unlock(d->mtx);
    pxi_send_sys(a, PXI_SYS_DUMP, (uint64_t)(uintptr_t)d, 0);
}

/* The signal was handled (or dropped): one fewer in flight. */
static void dump_done(pxi_dump *d) {
    nng_mtx_lock(d->mtx);
    if (--d->inflight == 0) {
        nng_cv_wake(d->cv);
    }
    nng_mtx_unlock(d->mtx);
    dump_unref(d);
}

void pxi_dump_drop(pxi_dump *d) { dump_done(d); }

void pxi_dump_handle(px_actor *a, pxi_dump *d) {
    px_actor **kids;
    uint32_t n;
    if (pxi_children_in_order(a, &kids, &n) != PX_OK) {
        nng_mtx_lock(d->mtx);
        d->oom = true;
        nng_mtx_unlock(d->mtx);
    }
    px_ref me = pxi_ref_of(a);
    for (uint32_t i = 0; i < n; i++) {
        px_actor *c = kids[i];
        dump_ent e;
        memset(&e, 0, sizeof(e));
        e.parent = me;
        pxi_child_info(a, c, &e.info);
        e.ref = e.info.ref;
        pxi_scopy(e.behavior, sizeof(e.behavior), c->beh && c->beh->name ? c->beh->name : "?");
        e.processed = atomic_load_explicit(&c->processed, memory_order_relaxed);
        e.depth = c->bq != NULL ? 0
                                : atomic_load_explicit(&c->pushed, memory_order_relaxed) -
                                      atomic_load_explicit(&c->popped, memory_order_relaxed);
        nng_mtx_lock(d->mtx);
        if (d->n == d->cap) {
            uint32_t nc = d->cap ? d->cap * 2 : 64;
            dump_ent *ne = realloc(d->ents, nc * sizeof(*ne));
            if (ne == NULL) {
                d->oom = true;
            } else {
                d->ents = ne;
                d->cap = nc;
            }
        }
        if (d->n < d->cap) {
            d->ents[d->n++] = e;
        }
        nng_mtx_unlock(d->mtx);
        dump_send(d, c);
    }
    free(kids);
    dump_done(d);
}

static const char *state_name(px_child_state s) {
    switch (s) {
    case PX_CHILD_RUNNING: return "running";
    case PX_CHILD_SUSPENDED: return "suspended";
    case PX_CHILD_RESTARTING: return "restarting";
    case PX_CHILD_OPEN: return "breaker-open";
    case PX_CHILD_STOPPING: return "stopping";
    }
    return "?";
}

static const char *breaker_name(px_breaker_state b) {
    switch (b) {
    case PX_BREAKER_OFF: return "off";
    case PX_BREAKER_CLOSED: return "closed";
    case PX_BREAKER_OPEN: return "open";
    case PX_BREAKER_HALF_OPEN: return "half-open";
    }
    return "?";
}

/* Entries whose parent is `parent`, in the order they were recorded (each
 * parent records its children in start order, all at once). */
static void render_text(FILE *b, const dump_ent *e, uint32_t n, px_ref parent, char *prefix,
                        size_t plen, uint32_t depth) {
    uint32_t count = 0, seen = 0;
    for (uint32_t i = 0; i < n; i++) {
        count += px_ref_eq(e[i].parent, parent) ? 1 : 0;
    }
    for (uint32_t i = 0; i < n && depth < 64; i++) {
        if (!px_ref_eq(e[i].parent, parent)) {
            continue;
        }
        bool last = ++seen == count;
        char rb[48];
        const px_child_info *ci = &e[i].info;
        fprintf(b, "%.*s%s %s [%s] %s %s instance=%u restarts=%u failures=%llu mailbox=%llu",
                  (int)plen, prefix, last ? "`--" : "|--", ci->id, e[i].behavior,
                  px_ref_format(e[i].ref, rb, sizeof(rb)), state_name(ci->state), ci->instance,
                  ci->restarts, (unsigned long long)ci->failures,
                  (unsigned long long)e[i].depth);
        if (ci->breaker != PX_BREAKER_OFF) {
            fprintf(b, " breaker=%s", breaker_name(ci->breaker));
        }
        if (ci->last_reason[0] != '\0') {
            fprintf(b, " last=\"%s\"", ci->last_reason);
        }
        if (!px_ref_is_nil(ci->remote)) {
            char rr[48];
            fprintf(b, " on=%s remote=%s", ci->node[0] ? ci->node : "-",
                    px_ref_format(ci->remote, rr, sizeof(rr)));
        }
        fprintf(b, "\n");
        if (plen + 4 < 256) {
            memcpy(prefix + plen, last ? "    " : "|   ", 4);
            render_text(b, e, n, e[i].ref, prefix, plen + 4, depth + 1);
        }
    }
}

static json_t *render_json(const dump_ent *e, uint32_t n, px_ref parent, uint32_t depth) {
    json_t *arr = json_array();
    for (uint32_t i = 0; arr != NULL && i < n && depth < 64; i++) {
        if (!px_ref_eq(e[i].parent, parent)) {
            continue;
        }
        const px_child_info *ci = &e[i].info;
        char rb[48];
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:I, s:I}",
                              "id", ci->id, "behavior", e[i].behavior, "ref",
                              px_ref_format(e[i].ref, rb, sizeof(rb)), "state",
                              state_name(ci->state), "breaker", breaker_name(ci->breaker),
                              "instance", (json_int_t)ci->instance, "restarts",
                              (json_int_t)ci->restarts, "failures", (json_int_t)ci->failures,
                              "consecutive_failures", (json_int_t)ci->consecutive_failures,
                              "last_failure_ms", (json_int_t)ci->last_failure_ms, "started_ms",
                              (json_int_t)ci->started_ms, "last_reason", ci->last_reason,
                              "mailbox_depth", (json_int_t)e[i].depth, "processed",
                              (json_int_t)e[i].processed);
        if (o == NULL) {
            json_decref(arr);
            return NULL;
        }
        if (!px_ref_is_nil(ci->remote)) { /* placed elsewhere */
            char rr[48];
            if (json_object_set_new(o, "node", json_string(ci->node)) != 0 ||
                json_object_set_new(o, "remote", json_string(px_ref_format(ci->remote, rr,
                                                                           sizeof(rr)))) != 0) {
                json_decref(o);
                json_decref(arr);
                return NULL;
            }
        }
        json_t *kids = render_json(e, n, e[i].ref, depth + 1);
        if (kids == NULL || json_object_set_new(o, "children", kids) != 0 ||
            json_array_append_new(arr, o) != 0) {
            json_decref(arr);
            return NULL;
        }
    }
    return arr;
}

px_err px_tree_dump(px_system *sys, px_tree_format fmt, uint32_t timeout_ms, char **out) {
    if (sys == NULL || out == NULL || (fmt != PX_TREE_TEXT && fmt != PX_TREE_JSON) ||
        timeout_ms == 0 || timeout_ms > PXI_MAX_DELAY_MS) {
        return PX_EINVAL;
    }
    *out = NULL;
    if (pxi_current_worker() != NULL) {
        return PX_ECONTEXT;
    }
    pxi_dump *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        return PX_ENOMEM;
    }
    if (nng_mtx_alloc(&d->mtx) != 0 || nng_cv_alloc(&d->cv, d->mtx) != 0) {
        if (d->mtx != NULL) {
            nng_mtx_free(d->mtx);
        }
        free(d);
        return PX_ENOMEM;
    }
    d->refs = 1;
    px_actor *root = sys->root;
    if (!pxi_pin(root, atomic_load(&root->inc))) {
        dump_unref(d);
        return PX_ECLOSED;
    }
    dump_send(d, root);
    pxi_unpin(root);
    nng_time until = nng_clock() + timeout_ms;
    nng_mtx_lock(d->mtx);
    int rv = 0;
    while (d->inflight > 0 && rv == 0) {
        rv = nng_cv_until(d->cv, until);
    }
    bool complete = d->inflight == 0;
    /* Render from a copy: late signals may still append. */
    uint32_t n = d->n;
    dump_ent *e = n ? malloc(n * sizeof(*e)) : NULL;
    if (e != NULL) {
        memcpy(e, d->ents, n * sizeof(*e));
    }
    bool oom = d->oom || (n > 0 && e == NULL);
    nng_mtx_unlock(d->mtx);
    dump_unref(d);
    if (!complete) {
        free(e);
        return PX_ETIMEDOUT;
    }
    if (oom) {
        free(e);
        return PX_ENOMEM;
    }
    px_ref rootref = pxi_ref_of(root);
    px_err err = PX_OK;
    if (fmt == PX_TREE_TEXT) {
        char *text = NULL;
        size_t len = 0;
        FILE *b = open_memstream(&text, &len);
        if (b == NULL) {
            free(e);
            return PX_ENOMEM;
        }
        char rb[48];
        fprintf(b, "%s root guardian %s\n", sys->node_name,
                px_ref_format(rootref, rb, sizeof(rb)));
        char prefix[260];
        render_text(b, e, n, rootref, prefix, 0, 0);
        bool bad = ferror(b) != 0;
        if (fclose(b) != 0 || bad) {
            free(text);
            err = PX_ENOMEM;
        } else {
            *out = text;
        }
    } else {
        json_t *kids = render_json(e, n, rootref, 0);
        char rb[48];
        json_t *top = kids ? json_pack("{s:s, s:s, s:o}", "node", sys->node_name, "root",
                                       px_ref_format(rootref, rb, sizeof(rb)), "children", kids)
                           : NULL;
        char *s = top ? json_dumps(top, JSON_INDENT(2)) : NULL;
        json_decref(top);
        if (s == NULL) {
            err = PX_ENOMEM;
        } else {
            *out = s; /* jansson allocates with malloc: free() releases it */
        }
    }
    free(e);
    return err;
}
