/*
 * dheap.c — the deadline heap (dheap.h): a binary min-heap in an array.
 */
#include "dheap.h"

#include <stdlib.h>

static void put(pxi_dheap *h, uint32_t pos, pxi_dheap_ent x) {
    h->e[pos] = x;
    h->placed(h->ctx, x.item, (int32_t)pos);
}

/* Moves the entry at pos up or down to where it belongs. */
static void settle(pxi_dheap *h, uint32_t pos) {
    pxi_dheap_ent x = h->e[pos];
    while (pos > 0 && x.due < h->e[(pos - 1) / 2].due) {
        put(h, pos, h->e[(pos - 1) / 2]);
        pos = (pos - 1) / 2;
    }
    for (;;) {
        uint32_t l = 2 * pos + 1, r = l + 1, m = pos;
        uint64_t md = x.due;
        if (l < h->n && h->e[l].due < md) {
            m = l;
            md = h->e[l].due;
        }
        if (r < h->n && h->e[r].due < md) {
            m = r;
        }
        if (m == pos) {
            break;
        }
        put(h, pos, h->e[m]);
        pos = m;
    }
    put(h, pos, x);
}

bool pxi_dheap_reserve(pxi_dheap *h, uint32_t cap) {
    if (cap <= h->cap) {
        return true;
    }
    pxi_dheap_ent *ne = realloc(h->e, (size_t)cap * sizeof(*ne));
    if (ne == NULL) {
        return false;
    }
    h->e = ne;
    h->cap = cap;
    return true;
}

void pxi_dheap_push(pxi_dheap *h, uint64_t due, uintptr_t item) {
    uint32_t pos = h->n++;
    h->e[pos] = (pxi_dheap_ent){.due = due, .item = item};
    settle(h, pos);
}

void pxi_dheap_remove(pxi_dheap *h, uint32_t pos) {
    uintptr_t item = h->e[pos].item;
    uint32_t last = --h->n;
    if (pos != last) {
        h->e[pos] = h->e[last];
        settle(h, pos);
    }
    h->placed(h->ctx, item, -1);
}

void pxi_dheap_rekey(pxi_dheap *h, uint32_t pos, uint64_t due) {
    h->e[pos].due = due;
    settle(h, pos);
}

void pxi_dheap_free(pxi_dheap *h) {
    free(h->e);
    h->e = NULL;
    h->n = h->cap = 0;
}
