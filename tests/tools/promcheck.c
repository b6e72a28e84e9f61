/*
 * tests/tools/promcheck.c — the strict Prometheus text-format checker of
 * promcheck.h.
 *
 * One pass over the lines. Each line is parsed into a series (name, label
 * names, unescaped label values in a scratch buffer) and checked on its
 * own; what spans lines lives in the checker's state: the families seen
 * (HELP/TYPE flags, whether their block of lines is finished), the set of
 * series seen (canonical keys: name, then labels sorted by name with
 * length-prefixed values, so label order and escaping do not matter), and
 * for histograms and summaries one group per label set without le /
 * quantile, checked when the family's block ends.
 *
 * Single-threaded; everything allocated is freed before returning.
 */
#include "promcheck.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LABELS 64

enum { T_NONE = 0, T_COUNTER, T_GAUGE, T_HISTOGRAM, T_SUMMARY, T_UNTYPED };
static const char *const type_names[] = {"", "counter", "gauge", "histogram", "summary",
                                         "untyped"};

/* How a sample's name relates to its family's. */
enum { R_PLAIN = 1, R_BUCKET, R_SUM, R_COUNT, R_TOTAL };

typedef struct label {
    const char *name;
    size_t nlen;
    const char *value; /* unescaped, in the scratch buffer */
    size_t vlen;
} label;

typedef struct series {
    const char *name;
    size_t nlen;
    label labels[MAX_LABELS];
    size_t nlabels;
} series;

typedef struct key {
    char *p;
    size_t n;
} key;

/* One histogram or summary series: its labels without le / quantile. */
typedef struct group {
    key k;
    int line; /* last line of the group */
    size_t nbuckets;
    double last_le, last_bucket;
    bool has_inf, has_sum, has_count;
    double inf, count;
    size_t nquantiles;
    double last_q;
} group;

typedef struct family {
    char *name;
    int type;
    bool has_help, has_type, closed;
    size_t nsamples;
    int counter_form; /* 0 none yet, R_PLAIN or R_TOTAL */
    int last_line;
    group *groups;
    size_t ngroups, capgroups;
} family;

typedef struct checker {
    char *err;
    size_t errlen;
    family *fams;
    size_t nfams, capfams;
    long cur; /* index of the family whose block is open, -1 none */
    key *set; /* open addressing on the series keys */
    size_t setcap, setn;
    int samples;
} checker;

static int fail(checker *c, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(checker *c, int line, const char *fmt, ...) {
    if (c->errlen > 0) {
        int n = snprintf(c->err, c->errlen, "line %d: ", line);
        if (n >= 0 && (size_t)n < c->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return -1;
}

/* ---- lexical pieces ---- */

static bool name_start(char ch, bool metric) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' ||
           (metric && ch == ':');
}

static bool name_char(char ch, bool metric) {
    return name_start(ch, metric) || (ch >= '0' && ch <= '9');
}

/* Length of the name at p (0 if none starts there). */
static size_t name_len(const char *p, const char *end, bool metric) {
    if (p >= end || !name_start(*p, metric)) {
        return 0;
    }
    size_t n = 1;
    while (p + n < end && name_char(p[n], metric)) {
        n++;
    }
    return n;
}

static bool utf8_ok(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned char b = s[i];
        size_t more;
        uint32_t cp;
        if (b < 0x80) {
            i++;
            continue;
        } else if (b >= 0xc2 && b <= 0xdf) {
            more = 1;
            cp = b & 0x1fu;
        } else if (b >= 0xe0 && b <= 0xef) {
            more = 2;
            cp = b & 0x0fu;
        } else if (b >= 0xf0 && b <= 0xf4) {
            more = 3;
            cp = b & 0x07u;
        } else {
            return false;
        }
        for (size_t k = 1; k <= more; k++) {
            if (i + k >= n || (s[i + k] & 0xc0u) != 0x80u) {
                return false;
            }
            cp = (cp << 6) | (s[i + k] & 0x3fu);
        }
        if ((more == 2 && cp < 0x800) || (more == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff)) {
            return false;
        }
        i += more + 1;
    }
    return true;
}

/* A Go float as the format allows it: decimal with optional fraction and
 * exponent, or exactly NaN, +Inf, -Inf. */
static bool parse_float(const char *p, size_t n, double *out) {
    if (n == 3 && memcmp(p, "NaN", 3) == 0) {
        *out = NAN;
        return true;
    }
    if (n == 4 && (memcmp(p, "+Inf", 4) == 0 || memcmp(p, "-Inf", 4) == 0)) {
        *out = p[0] == '-' ? -INFINITY : INFINITY;
        return true;
    }
    size_t i = 0, digits = 0;
    if (i < n && (p[i] == '+' || p[i] == '-')) {
        i++;
    }
    while (i < n && p[i] >= '0' && p[i] <= '9') {
        i++;
        digits++;
    }
    if (i < n && p[i] == '.') {
        i++;
        while (i < n && p[i] >= '0' && p[i] <= '9') {
            i++;
            digits++;
        }
    }
    if (digits == 0) {
        return false;
    }
    if (i < n && (p[i] == 'e' || p[i] == 'E')) {
        i++;
        if (i < n && (p[i] == '+' || p[i] == '-')) {
            i++;
        }
        size_t ed = 0;
        while (i < n && p[i] >= '0' && p[i] <= '9') {
            i++;
            ed++;
        }
        if (ed == 0) {
            return false;
        }
    }
    if (i != n || n >= 128) {
        return false;
    }
    char buf[128];
    memcpy(buf, p, n);
    buf[n] = '\0';
    *out = strtod(buf, NULL);
    return true;
}

static bool parse_timestamp(const char *p, size_t n) {
    size_t i = (n > 0 && (p[0] == '+' || p[0] == '-')) ? 1 : 0;
    if (i == n || n - i > 19) {
        return false;
    }
    for (size_t k = i; k < n; k++) {
        if (p[k] < '0' || p[k] > '9') {
            return false;
        }
    }
    char buf[32];
    memcpy(buf, p, n);
    buf[n] = '\0';
    errno = 0;
    (void)strtoll(buf, NULL, 10);
    return errno == 0;
}

/* Parses a series (name, then labels if '{' follows) at p. Unescaped
 * label values go to scratch (room for end - p bytes). Returns the end of
 * the series, or NULL with *why set. */
static const char *parse_series(const char *p, const char *end, series *s, char *scratch,
                                const char **why) {
    memset(s, 0, sizeof(*s));
    s->nlen = name_len(p, end, true);
    if (s->nlen == 0) {
        *why = "expected a metric name";
        return NULL;
    }
    s->name = p;
    p += s->nlen;
    if (p == end || *p != '{') {
        return p;
    }
    p++;
    for (;;) {
        if (p < end && *p == '}') {
            return p + 1;
        }
        size_t ln = name_len(p, end, false);
        if (ln == 0) {
            *why = "expected a label name";
            return NULL;
        }
        if (ln >= 2 && p[0] == '_' && p[1] == '_') {
            *why = "label names starting with __ are reserved";
            return NULL;
        }
        for (size_t i = 0; i < s->nlabels; i++) {
            if (s->labels[i].nlen == ln && memcmp(s->labels[i].name, p, ln) == 0) {
                *why = "a label name appears twice";
                return NULL;
            }
        }
        if (s->nlabels == MAX_LABELS) {
            *why = "more than 64 labels";
            return NULL;
        }
        label *l = &s->labels[s->nlabels++];
        l->name = p;
        l->nlen = ln;
        p += ln;
        if (p >= end || *p != '=') {
            *why = "expected = after a label name";
            return NULL;
        }
        p++;
        if (p >= end || *p != '"') {
            *why = "expected \" to open a label value";
            return NULL;
        }
        p++;
        l->value = scratch;
        for (;;) {
            if (p >= end) {
                *why = "unterminated label value";
                return NULL;
            }
            if (*p == '"') {
                p++;
                break;
            }
            if (*p == '\\') {
                if (p + 1 >= end) {
                    *why = "unterminated label value";
                    return NULL;
                }
                char e = p[1];
                if (e != '\\' && e != '"' && e != 'n') {
                    *why = "bad escape in a label value (only \\\\, \\\" and \\n)";
                    return NULL;
                }
                *scratch++ = e == 'n' ? '\n' : e;
                p += 2;
                continue;
            }
            *scratch++ = *p++;
        }
        l->vlen = (size_t)(scratch - l->value);
        if (!utf8_ok((const unsigned char *)l->value, l->vlen)) {
            *why = "label value is not valid UTF-8";
            return NULL;
        }
        if (p < end && *p == ',') {
            p++;
            continue;
        }
        if (p < end && *p == '}') {
            return p + 1;
        }
        *why = "expected , or } after a label value";
        return NULL;
    }
}

static const label *find_label(const series *s, const char *name) {
    size_t n = strlen(name);
    for (size_t i = 0; i < s->nlabels; i++) {
        if (s->labels[i].nlen == n && memcmp(s->labels[i].name, name, n) == 0) {
            return &s->labels[i];
        }
    }
    return NULL;
}

static int label_cmp(const void *a, const void *b) {
    const label *x = *(const label *const *)a, *y = *(const label *const *)b;
    size_t n = x->nlen < y->nlen ? x->nlen : y->nlen;
    int c = memcmp(x->name, y->name, n);
    return c != 0 ? c : (x->nlen > y->nlen) - (x->nlen < y->nlen);
}

/* The canonical key of s: with its name or not, without the label
 * `skip` (NULL: none). malloc'd; NULL when out of memory. */
static char *make_key(const series *s, bool with_name, const char *skip, size_t *len) {
    const label *ls[MAX_LABELS];
    size_t n = 0, total = with_name ? s->nlen + 1 : 1;
    for (size_t i = 0; i < s->nlabels; i++) {
        const label *l = &s->labels[i];
        if (skip != NULL && l->nlen == strlen(skip) && memcmp(l->name, skip, l->nlen) == 0) {
            continue;
        }
        ls[n++] = l;
        total += l->nlen + l->vlen + 24;
    }
    qsort(ls, n, sizeof(ls[0]), label_cmp);
    char *k = malloc(total);
    if (k == NULL) {
        return NULL;
    }
    size_t o = 0;
    if (with_name) {
        memcpy(k, s->name, s->nlen);
        o = s->nlen;
    }
    for (size_t i = 0; i < n; i++) {
        o += (size_t)sprintf(k + o, "\x01%.*s=%zu:", (int)ls[i]->nlen, ls[i]->name, ls[i]->vlen);
        memcpy(k + o, ls[i]->value, ls[i]->vlen);
        o += ls[i]->vlen;
    }
    *len = o;
    return k;
}

/* ---- the series set ---- */

static uint64_t hash(const char *p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
    }
    return h;
}

/* Adds k (taking it). 1 added, 0 already there (k freed), -1 no memory. */
static int set_add(checker *c, key k) {
    if ((c->setn + 1) * 2 > c->setcap) {
        size_t cap = c->setcap ? c->setcap * 2 : 256;
        key *ns = calloc(cap, sizeof(*ns));
        if (ns == NULL) {
            free(k.p);
            return -1;
        }
        for (size_t i = 0; i < c->setcap; i++) {
            if (c->set[i].p != NULL) {
                size_t j = hash(c->set[i].p, c->set[i].n) & (cap - 1);
                while (ns[j].p != NULL) {
                    j = (j + 1) & (cap - 1);
                }
                ns[j] = c->set[i];
            }
        }
        free(c->set);
        c->set = ns;
        c->setcap = cap;
    }
    size_t j = hash(k.p, k.n) & (c->setcap - 1);
    while (c->set[j].p != NULL) {
        if (c->set[j].n == k.n && memcmp(c->set[j].p, k.p, k.n) == 0) {
            free(k.p);
            return 0;
        }
        j = (j + 1) & (c->setcap - 1);
    }
    c->set[j] = k;
    c->setn++;
    return 1;
}

/* ---- families ---- */

static family *fam_find(checker *c, const char *name, size_t n) {
    for (size_t i = 0; i < c->nfams; i++) {
        if (strlen(c->fams[i].name) == n && memcmp(c->fams[i].name, name, n) == 0) {
            return &c->fams[i];
        }
    }
    return NULL;
}

static family *fam_add(checker *c, const char *name, size_t n) {
    if (c->nfams == c->capfams) {
        size_t cap = c->capfams ? c->capfams * 2 : 32;
        family *nf = realloc(c->fams, cap * sizeof(*nf));
        if (nf == NULL) {
            return NULL;
        }
        c->fams = nf;
        c->capfams = cap;
    }
    family *f = &c->fams[c->nfams];
    memset(f, 0, sizeof(*f));
    if ((f->name = malloc(n + 1)) == NULL) {
        return NULL;
    }
    memcpy(f->name, name, n);
    f->name[n] = '\0';
    c->nfams++;
    return f;
}

/* The sample names a family of type t owns: suffixes of its name. */
static size_t owned_suffixes(int t, const char *out[3]) {
    switch (t) {
    case T_COUNTER:
        out[0] = "";
        out[1] = "_total";
        return 2;
    case T_HISTOGRAM:
        out[0] = "_bucket";
        out[1] = "_sum";
        out[2] = "_count";
        return 3;
    case T_SUMMARY:
        out[0] = "";
        out[1] = "_sum";
        out[2] = "_count";
        return 3;
    default:
        out[0] = "";
        return 1;
    }
}

/* Whether families a (type ta) and b (type tb) could both own a sample. */
static bool clash(const char *a, int ta, const char *b, int tb, char *which, size_t wlen) {
    const char *sa[3], *sb[3];
    size_t na = owned_suffixes(ta, sa), nb = owned_suffixes(tb, sb);
    for (size_t i = 0; i < na; i++) {
        for (size_t j = 0; j < nb; j++) {
            char x[512], y[512];
            snprintf(x, sizeof(x), "%s%s", a, sa[i]);
            snprintf(y, sizeof(y), "%s%s", b, sb[j]);
            if (strcmp(x, y) == 0) {
                snprintf(which, wlen, "%s", x);
                return true;
            }
        }
    }
    return false;
}

/* End of a family's block: every histogram / summary series complete. */
static int fam_close(checker *c, family *f) {
    f->closed = true;
    if (!f->has_type) {
        return fail(c, f->last_line, "family %s has # HELP but no # TYPE", f->name);
    }
    for (size_t i = 0; i < f->ngroups; i++) {
        group *g = &f->groups[i];
        if (f->type == T_HISTOGRAM) {
            if (!g->has_inf) {
                return fail(c, g->line, "histogram %s: a series has no le=\"+Inf\" bucket",
                            f->name);
            }
            if (!g->has_count) {
                return fail(c, g->line, "histogram %s: a series has no %s_count", f->name,
                            f->name);
            }
            if (!g->has_sum) {
                return fail(c, g->line, "histogram %s: a series has no %s_sum", f->name, f->name);
            }
            if (!(g->inf == g->count)) {
                return fail(c, g->line,
                            "histogram %s: the +Inf bucket (%.17g) differs from _count (%.17g)",
                            f->name, g->inf, g->count);
            }
        } else if (f->type == T_SUMMARY && (!g->has_sum || !g->has_count)) {
            return fail(c, g->line, "summary %s: a series has no %s", f->name,
                        g->has_sum ? "_count" : "_sum");
        }
    }
    return 0;
}

/* f's lines start or go on at `line`: the block of the previous family
 * ends, and f must not have had a block before. */
static int fam_enter(checker *c, family *f, int line) {
    long idx = f - c->fams;
    if (c->cur != idx) {
        if (c->cur >= 0 && fam_close(c, &c->fams[c->cur]) != 0) {
            return -1;
        }
        if (f->closed) {
            return fail(c, line, "the lines of family %s are not contiguous", f->name);
        }
        c->cur = idx;
    }
    f->last_line = line;
    return 0;
}

static group *group_get(family *f, key k, int line) {
    for (size_t i = 0; i < f->ngroups; i++) {
        if (f->groups[i].k.n == k.n && memcmp(f->groups[i].k.p, k.p, k.n) == 0) {
            free(k.p);
            f->groups[i].line = line;
            return &f->groups[i];
        }
    }
    if (f->ngroups == f->capgroups) {
        size_t cap = f->capgroups ? f->capgroups * 2 : 8;
        group *ng = realloc(f->groups, cap * sizeof(*ng));
        if (ng == NULL) {
            free(k.p);
            return NULL;
        }
        f->groups = ng;
        f->capgroups = cap;
    }
    group *g = &f->groups[f->ngroups++];
    memset(g, 0, sizeof(*g));
    g->k = k;
    g->line = line;
    return g;
}

/* ---- lines ---- */

static bool ends_with(const char *p, size_t n, const char *suf) {
    size_t m = strlen(suf);
    return n > m && memcmp(p + n - m, suf, m) == 0;
}

/* "# HELP name doc" or "# TYPE name type" (p after "# HELP " / "# TYPE "). */
static int meta_line(checker *c, int line, bool help, const char *p, const char *end) {
    size_t n = name_len(p, end, true);
    if (n == 0 || (p + n < end && p[n] != ' ')) {
        return fail(c, line, "# %s: expected a metric name", help ? "HELP" : "TYPE");
    }
    const char *name = p;
    const char *rest = p + n < end ? p + n + 1 : end;
    family *f = fam_find(c, name, n);
    if (f == NULL && (f = fam_add(c, name, n)) == NULL) {
        return fail(c, line, "out of memory");
    }
    if (fam_enter(c, f, line) != 0) {
        return -1;
    }
    if (help) {
        if (f->has_help) {
            return fail(c, line, "a second # HELP for %s", f->name);
        }
        if (f->nsamples > 0) {
            return fail(c, line, "# HELP for %s after its samples", f->name);
        }
        if (rest >= end) {
            return fail(c, line, "# HELP for %s has no text", f->name);
        }
        for (const char *q = rest; q < end; q++) {
            if (*q == '\\') {
                if (q + 1 >= end || (q[1] != '\\' && q[1] != 'n')) {
                    return fail(c, line, "# HELP for %s: bad escape (only \\\\ and \\n)",
                                f->name);
                }
                q++;
            }
        }
        if (!utf8_ok((const unsigned char *)rest, (size_t)(end - rest))) {
            return fail(c, line, "# HELP for %s is not valid UTF-8", f->name);
        }
        f->has_help = true;
        return 0;
    }
    if (f->has_type) {
        return fail(c, line, "a second # TYPE for %s", f->name);
    }
    if (f->nsamples > 0) {
        return fail(c, line, "# TYPE for %s after its samples", f->name);
    }
    int t = T_NONE;
    for (int i = T_COUNTER; i <= T_UNTYPED; i++) {
        if ((size_t)(end - rest) == strlen(type_names[i]) &&
            memcmp(rest, type_names[i], strlen(type_names[i])) == 0) {
            t = i;
        }
    }
    if (t == T_NONE) {
        return fail(c, line, "# TYPE for %s: \"%.*s\" is not a type", f->name,
                    (int)(end - rest), rest);
    }
    for (size_t i = 0; i < c->nfams; i++) {
        char which[512];
        family *o = &c->fams[i];
        if (o != f && o->has_type && clash(f->name, t, o->name, o->type, which, sizeof(which))) {
            return fail(c, line, "%s %s clashes with %s %s: both would own %s", type_names[t],
                        f->name, type_names[o->type], o->name, which);
        }
    }
    f->type = t;
    f->has_type = true;
    return 0;
}

/* The family that owns a sample named (name, n), and the sample's role. */
static family *owner(checker *c, const char *name, size_t n, int *role) {
    family *f = fam_find(c, name, n);
    if (f != NULL && f->has_type && f->type != T_HISTOGRAM) {
        *role = R_PLAIN;
        return f;
    }
    static const struct {
        const char *suf;
        int role;
    } sufs[] = {{"_bucket", R_BUCKET}, {"_sum", R_SUM}, {"_count", R_COUNT}, {"_total", R_TOTAL}};
    for (size_t i = 0; i < sizeof(sufs) / sizeof(sufs[0]); i++) {
        if (!ends_with(name, n, sufs[i].suf)) {
            continue;
        }
        family *p = fam_find(c, name, n - strlen(sufs[i].suf));
        if (p == NULL || !p->has_type) {
            continue;
        }
        bool ok = (sufs[i].role == R_BUCKET && p->type == T_HISTOGRAM) ||
                  ((sufs[i].role == R_SUM || sufs[i].role == R_COUNT) &&
                   (p->type == T_HISTOGRAM || p->type == T_SUMMARY)) ||
                  (sufs[i].role == R_TOTAL && p->type == T_COUNTER);
        if (ok) {
            *role = sufs[i].role;
            return p;
        }
    }
    return NULL;
}

static int sample_line(checker *c, int line, const char *p, const char *end, char *scratch) {
    series s;
    const char *why = NULL;
    const char *q = parse_series(p, end, &s, scratch, &why);
    if (q == NULL) {
        return fail(c, line, "%s", why);
    }
    if (q >= end || *q != ' ') {
        return fail(c, line, "expected one space and a value after %.*s", (int)s.nlen, s.name);
    }
    const char *v = q + 1, *ve = v;
    while (ve < end && *ve != ' ') {
        ve++;
    }
    double val;
    if (!parse_float(v, (size_t)(ve - v), &val)) {
        return fail(c, line, "\"%.*s\" is not a sample value", (int)(ve - v), v);
    }
    if (ve < end && !parse_timestamp(ve + 1, (size_t)(end - ve - 1))) {
        return fail(c, line, "\"%.*s\" is not a timestamp (int64 milliseconds)",
                    (int)(end - ve - 1), ve + 1);
    }
    int role = R_PLAIN;
    family *f = owner(c, s.name, s.nlen, &role);
    if (f == NULL) {
        family *same = fam_find(c, s.name, s.nlen);
        if (same != NULL && same->type == T_HISTOGRAM) {
            return fail(c, line, "histogram %s: samples are named %s_bucket, _sum or _count",
                        same->name, same->name);
        }
        return fail(c, line, "sample %.*s before a # TYPE for its family", (int)s.nlen, s.name);
    }
    if (fam_enter(c, f, line) != 0) {
        return -1;
    }
    if (!f->has_help) {
        return fail(c, line, "sample of %s before its # HELP", f->name);
    }
    size_t klen = 0;
    char *kp = make_key(&s, true, NULL, &klen);
    if (kp == NULL) {
        return fail(c, line, "out of memory");
    }
    int added = set_add(c, (key){kp, klen});
    if (added < 0) {
        return fail(c, line, "out of memory");
    }
    if (added == 0) {
        return fail(c, line, "series %.*s appears twice", (int)(q - p), p);
    }
    f->nsamples++;
    c->samples++;

    if (f->type == T_COUNTER) {
        if (f->counter_form != 0 && f->counter_form != role) {
            return fail(c, line, "counter %s mixes samples named %s and %s_total", f->name,
                        f->name, f->name);
        }
        if (role == R_TOTAL && ends_with(f->name, strlen(f->name), "_total")) {
            return fail(c, line, "counter %s already ends in _total: its samples are %s", f->name,
                        f->name);
        }
        f->counter_form = role;
        if (val < 0) {
            return fail(c, line, "counter %s is negative", f->name);
        }
        return 0;
    }
    if (f->type != T_HISTOGRAM && f->type != T_SUMMARY) {
        return 0;
    }
    const char *special = f->type == T_HISTOGRAM ? "le" : "quantile";
    const label *sl = find_label(&s, special);
    bool wants = (f->type == T_HISTOGRAM && role == R_BUCKET) ||
                 (f->type == T_SUMMARY && role == R_PLAIN);
    if (wants && sl == NULL) {
        return fail(c, line, "%s %s: %.*s has no %s label", type_names[f->type], f->name,
                    (int)s.nlen, s.name, special);
    }
    if (!wants && sl != NULL) {
        return fail(c, line, "%s %s: %.*s must not have a %s label", type_names[f->type],
                    f->name, (int)s.nlen, s.name, special);
    }
    kp = make_key(&s, false, special, &klen);
    group *g = kp != NULL ? group_get(f, (key){kp, klen}, line) : NULL;
    if (g == NULL) {
        return fail(c, line, "out of memory");
    }
    if (role == R_SUM) {
        g->has_sum = true;
        return 0;
    }
    if (val < 0 || isnan(val)) {
        return fail(c, line, "%s %s: %.*s is negative or NaN", type_names[f->type], f->name,
                    (int)s.nlen, s.name);
    }
    if (role == R_COUNT) {
        g->has_count = true;
        g->count = val;
        return 0;
    }
    double b;
    if (!parse_float(sl->value, sl->vlen, &b) || isnan(b)) {
        return fail(c, line, "%s %s: %s=\"%.*s\" is not a number", type_names[f->type], f->name,
                    special, (int)sl->vlen, sl->value);
    }
    if (f->type == T_SUMMARY) {
        if (b < 0 || b > 1) {
            return fail(c, line, "summary %s: quantile %g outside [0, 1]", f->name, b);
        }
        if (g->nquantiles > 0 && !(b > g->last_q)) {
            return fail(c, line, "summary %s: quantiles not in increasing order", f->name);
        }
        g->nquantiles++;
        g->last_q = b;
        return 0;
    }
    if (g->nbuckets > 0 && !(b > g->last_le)) {
        return fail(c, line, "histogram %s: buckets not in increasing le order (le=\"%.*s\")",
                    f->name, (int)sl->vlen, sl->value);
    }
    if (g->nbuckets > 0 && val < g->last_bucket) {
        return fail(c, line,
                    "histogram %s: bucket le=\"%.*s\" (%.17g) below the previous one (%.17g): "
                    "buckets are cumulative",
                    f->name, (int)sl->vlen, sl->value, val, g->last_bucket);
    }
    g->nbuckets++;
    g->last_le = b;
    g->last_bucket = val;
    if (isinf(b) && b > 0) {
        g->has_inf = true;
        g->inf = val;
    }
    return 0;
}

static int check_line(checker *c, int line, const char *p, const char *end, char *scratch) {
    if (p == end) {
        return 0; /* empty lines are ignored */
    }
    for (const char *q = p; q < end; q++) {
        if (*q == '\r') {
            return fail(c, line, "carriage return");
        }
    }
    if (*p == ' ' || *p == '\t' || end[-1] == ' ' || end[-1] == '\t') {
        return fail(c, line, "leading or trailing blanks");
    }
    if (*p != '#') {
        return sample_line(c, line, p, end, scratch);
    }
    size_t n = (size_t)(end - p);
    bool help = n >= 6 && memcmp(p, "# HELP", 6) == 0 && (n == 6 || p[6] == ' ');
    bool type = n >= 6 && memcmp(p, "# TYPE", 6) == 0 && (n == 6 || p[6] == ' ');
    if (!help && !type) {
        return 0; /* a plain comment */
    }
    if (n <= 7) {
        return fail(c, line, "# %s without a metric name", help ? "HELP" : "TYPE");
    }
    return meta_line(c, line, help, p + 7, end);
}

static void checker_free(checker *c) {
    for (size_t i = 0; i < c->nfams; i++) {
        for (size_t j = 0; j < c->fams[i].ngroups; j++) {
            free(c->fams[i].groups[j].k.p);
        }
        free(c->fams[i].groups);
        free(c->fams[i].name);
    }
    free(c->fams);
    for (size_t i = 0; i < c->setcap; i++) {
        free(c->set[i].p);
    }
    free(c->set);
}

int promcheck(const char *text, char *err, size_t errlen) {
    checker c = {.err = err, .errlen = errlen, .cur = -1};
    if (errlen > 0) {
        err[0] = '\0';
    }
    if (text == NULL) {
        return fail(&c, 0, "no text");
    }
    size_t len = strlen(text);
    char *scratch = malloc(len + 1);
    if (scratch == NULL) {
        return fail(&c, 0, "out of memory");
    }
    int rv = 0, line = 0;
    const char *p = text, *end = text + len;
    while (rv == 0 && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl != NULL ? nl : end;
        line++;
        rv = check_line(&c, line, p, le, scratch);
        if (rv == 0 && nl == NULL) {
            rv = fail(&c, line, "no newline at the end of the text");
        }
        p = nl != NULL ? nl + 1 : end;
    }
    if (rv == 0 && c.cur >= 0) {
        rv = fam_close(&c, &c.fams[c.cur]);
    }
    free(scratch);
    checker_free(&c);
    return rv == 0 ? c.samples : -1;
}

double promcheck_value(const char *text, const char *query) {
    if (text == NULL || query == NULL) {
        return NAN;
    }
    size_t qlen = strlen(query), tlen = strlen(text);
    char *qs = malloc(qlen + 1), *ts = malloc(tlen + 1);
    series want, s;
    const char *why = NULL;
    double result = NAN;
    size_t wlen = 0;
    char *wkey = NULL;
    if (qs == NULL || ts == NULL ||
        parse_series(query, query + qlen, &want, qs, &why) != query + qlen ||
        (wkey = make_key(&want, true, NULL, &wlen)) == NULL) {
        goto done;
    }
    for (const char *p = text, *end = text + tlen; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl != NULL ? nl : end;
        const char *q = *p != '#' ? parse_series(p, le, &s, ts, &why) : NULL;
        if (q != NULL && q < le && *q == ' ' && s.nlen == want.nlen &&
            memcmp(s.name, want.name, s.nlen) == 0) {
            size_t klen = 0;
            char *k = make_key(&s, true, NULL, &klen);
            bool same = k != NULL && klen == wlen && memcmp(k, wkey, klen) == 0;
            free(k);
            if (same) {
                const char *v = q + 1, *ve = v;
                while (ve < le && *ve != ' ') {
                    ve++;
                }
                double d;
                if (parse_float(v, (size_t)(ve - v), &d)) {
                    result = d;
                }
                goto done;
            }
        }
        p = nl != NULL ? nl + 1 : end;
    }
done:
    free(wkey);
    free(qs);
    free(ts);
    return result;
}
