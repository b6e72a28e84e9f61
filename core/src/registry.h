/*
 * registry.h — a string-keyed map, the one structure behind the behavior
 * registry, the type registry and the local name table.
 *
 * Not thread-safe by itself: each owner guards its map with its own mutex.
 * Keys are copied (or borrowed, if the map is made so); values are borrowed
 * pointers or small values.
 */
#ifndef PX_REGISTRY_H
#define PX_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include <plexus/error.h>

typedef struct pxi_strmap {
    struct pxi_strmap_ent *ents;
    size_t cap;  /* power of two, or 0 */
    size_t used; /* live entries */
    size_t tomb; /* deleted markers */
    int borrow;  /* keys are the caller's (see pxi_strmap_init_borrowed) */
} pxi_strmap;

/* Value slot: a pointer or an integer-sized blob. */
typedef union pxi_strval {
    const void *ptr;
    struct {
        uint32_t a, b, c, d;
    } u4;
} pxi_strval;

/* FNV-1a, 32 bits: the map's hash, and the node id of a node name. */
uint32_t pxi_fnv1a(const char *s);

void pxi_strmap_init(pxi_strmap *m);
/* A map that keeps the key pointers it is given instead of copies: each key
 * must stay valid and unchanged until its entry is deleted or the map is
 * finished (e.g. the key lives in the value it maps to). */
void pxi_strmap_init_borrowed(pxi_strmap *m);
void pxi_strmap_fini(pxi_strmap *m); /* frees copied keys, not values */

/* Inserts key -> v. PX_EEXIST if present (then *old, if non-NULL, gets the
 * current value), PX_ENOMEM. */
px_err pxi_strmap_put(pxi_strmap *m, const char *key, pxi_strval v, pxi_strval *old);
/* pxi_strmap_put with h = pxi_fnv1a(key) computed by the caller, who may
 * have called pxi_strmap_prefetch(m, h) earlier to hide the table miss of a
 * large map behind other work. */
px_err pxi_strmap_put_hashed(pxi_strmap *m, const char *key, uint32_t h, pxi_strval v,
                             pxi_strval *old);
void pxi_strmap_prefetch(const pxi_strmap *m, uint32_t h);
/* PX_OK and *out, or PX_ENOENT. */
px_err pxi_strmap_get(const pxi_strmap *m, const char *key, pxi_strval *out);
/* PX_OK (and *old) or PX_ENOENT. */
px_err pxi_strmap_del(pxi_strmap *m, const char *key, pxi_strval *old);
/* Calls fn for each live entry, in no particular order. */
void pxi_strmap_each(const pxi_strmap *m, void (*fn)(void *arg, const char *key, pxi_strval v),
                     void *arg);

#endif
