/*
 * registry.c — open-addressing string map (linear probing, FNV-1a hash,
 * tombstones on delete, rehash at 70% load). Small and single-threaded;
 * callers lock.
 */
#include <stdlib.h>
#include <string.h>

#include "registry.h"

struct pxi_strmap_ent {
    char *key; /* NULL = empty; TOMB = deleted */
    uint32_t hash;
    pxi_strval val;
};

static char tomb_marker;
#define TOMB (&tomb_marker)

uint32_t pxi_fnv1a(const char *s) {
    uint32_t h = 2166136261u;
    for (; *s; s++) {
        h = (h ^ (uint8_t)*s) * 16777619u;
    }
    return h;
}

void pxi_strmap_init(pxi_strmap *m) { memset(m, 0, sizeof(*m)); }

void pxi_strmap_init_borrowed(pxi_strmap *m) {
    pxi_strmap_init(m);
    m->borrow = 1;
}

void pxi_strmap_fini(pxi_strmap *m) {
    for (size_t i = 0; i < m->cap && !m->borrow; i++) {
        if (m->ents[i].key != NULL && m->ents[i].key != TOMB) {
            free(m->ents[i].key);
        }
    }
    free(m->ents);
    memset(m, 0, sizeof(*m));
}

static struct pxi_strmap_ent *find(const pxi_strmap *m, const char *key, uint32_t h) {
    if (m->cap == 0) {
        return NULL;
    }
    for (size_t i = h & (m->cap - 1), n = 0; n < m->cap; i = (i + 1) & (m->cap - 1), n++) {
        struct pxi_strmap_ent *e = &m->ents[i];
        if (e->key == NULL) {
            return NULL;
        }
        if (e->key != TOMB && e->hash == h && strcmp(e->key, key) == 0) {
            return e;
        }
    }
    return NULL;
}

static px_err grow(pxi_strmap *m) {
    size_t ncap = m->cap ? m->cap * 2 : 16;
    if (m->used * 2 < m->cap) {
        ncap = m->cap; /* mostly tombstones: rehash in place size */
    }
    struct pxi_strmap_ent *ne = calloc(ncap, sizeof(*ne));
    if (ne == NULL) {
        return PX_ENOMEM;
    }
    for (size_t i = 0; i < m->cap; i++) {
        struct pxi_strmap_ent *e = &m->ents[i];
        if (e->key == NULL || e->key == TOMB) {
            continue;
        }
        size_t j = e->hash & (ncap - 1);
        while (ne[j].key != NULL) {
            j = (j + 1) & (ncap - 1);
        }
        ne[j] = *e;
    }
    free(m->ents);
    m->ents = ne;
    m->cap = ncap;
    m->tomb = 0;
    return PX_OK;
}

void pxi_strmap_prefetch(const pxi_strmap *m, uint32_t h) {
    if (m->cap > 0) {
        __builtin_prefetch(&m->ents[h & (m->cap - 1)], 1);
    }
}

px_err pxi_strmap_put(pxi_strmap *m, const char *key, pxi_strval v, pxi_strval *old) {
    return pxi_strmap_put_hashed(m, key, pxi_fnv1a(key), v, old);
}

px_err pxi_strmap_put_hashed(pxi_strmap *m, const char *key, uint32_t h, pxi_strval v,
                             pxi_strval *old) {
    struct pxi_strmap_ent *e = find(m, key, h);
    if (e != NULL) {
        if (old != NULL) {
            *old = e->val;
        }
        return PX_EEXIST;
    }
    if ((m->used + m->tomb + 1) * 10 >= m->cap * 7) {
        px_err rv = grow(m);
        if (rv != PX_OK) {
            return rv;
        }
    }
    char *k = m->borrow ? (char *)(uintptr_t)key : strdup(key);
    if (k == NULL) {
        return PX_ENOMEM;
    }
    size_t i = h & (m->cap - 1);
    while (m->ents[i].key != NULL && m->ents[i].key != TOMB) {
        i = (i + 1) & (m->cap - 1);
    }
    if (m->ents[i].key == TOMB) {
        m->tomb--;
    }
    m->ents[i].key = k;
    m->ents[i].hash = h;
    m->ents[i].val = v;
    m->used++;
    return PX_OK;
}

px_err pxi_strmap_get(const pxi_strmap *m, const char *key, pxi_strval *out) {
    struct pxi_strmap_ent *e = find(m, key, pxi_fnv1a(key));
    if (e == NULL) {
        return PX_ENOENT;
    }
    if (out != NULL) {
        *out = e->val;
    }
    return PX_OK;
}

px_err pxi_strmap_del(pxi_strmap *m, const char *key, pxi_strval *old) {
    struct pxi_strmap_ent *e = find(m, key, pxi_fnv1a(key));
    if (e == NULL) {
        return PX_ENOENT;
    }
    if (old != NULL) {
        *old = e->val;
    }
    if (!m->borrow) {
        free(e->key);
    }
    e->key = TOMB;
    m->used--;
    m->tomb++;
    return PX_OK;
}

void pxi_strmap_each(const pxi_strmap *m, void (*fn)(void *arg, const char *key, pxi_strval v),
                     void *arg) {
    for (size_t i = 0; i < m->cap; i++) {
        if (m->ents[i].key != NULL && m->ents[i].key != TOMB) {
            fn(arg, m->ents[i].key, m->ents[i].val);
        }
    }
}
