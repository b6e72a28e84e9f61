/*
 * dheap.h — a min-heap of deadlines: entries (due, item) ordered by due,
 * where every move of an item is told to its owner (`placed`), so the
 * owner knows each item's position and can remove or re-key it in
 * O(log n). The owner reserves room and does the locking. alarm.c keeps
 * its alarms in one (items: px_alarm pointers), timer.c its timers
 * (items: slot indices).
 */
#ifndef PXI_DHEAP_H
#define PXI_DHEAP_H

#include <stdbool.h>
#include <stdint.h>

typedef struct pxi_dheap_ent {
    uint64_t due;
    uintptr_t item;
} pxi_dheap_ent;

typedef struct pxi_dheap {
    pxi_dheap_ent *e; /* e[0] is the earliest while n > 0 */
    uint32_t n, cap;
    /* item now sits at pos; pos -1: it left the heap */
    void (*placed)(void *ctx, uintptr_t item, int32_t pos);
    void *ctx;
} pxi_dheap;

/* Room for at least cap entries; false (nothing changed) without memory. */
bool pxi_dheap_reserve(pxi_dheap *h, uint32_t cap);

/* Adds item due at `due`; the caller reserved room for it. */
void pxi_dheap_push(pxi_dheap *h, uint64_t due, uintptr_t item);

/* Removes the entry at pos (< n). */
void pxi_dheap_remove(pxi_dheap *h, uint32_t pos);

/* Gives the entry at pos (< n) a new due. */
void pxi_dheap_rekey(pxi_dheap *h, uint32_t pos, uint64_t due);

/* Frees the entries (the heap is empty and without room afterwards). */
void pxi_dheap_free(pxi_dheap *h);

#endif
