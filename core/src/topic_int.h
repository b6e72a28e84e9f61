/*
 * topic_int.h — the topic broker (topic.c) as the system and the actor code
 * see it. Its public side is plexus/topic.h and the topic parts of
 * plexus/router.h.
 */
#ifndef PX_TOPIC_INT_H
#define PX_TOPIC_INT_H

#include "runtime.h"

/* Makes the broker of sys (after sys->nworkers is known, before any actor
 * runs). PX_ENOMEM; on error *out stays NULL. */
px_err pxi_topics_alloc(px_system *sys, struct pxi_topics **out);

/* Frees the broker and every subscription left. Only once nothing runs
 * (workers joined, no outside caller); calls no hook. NULL-safe. */
void pxi_topics_free(struct pxi_topics *b);

/* Owner context, when a ends (stops, or its init failed): drops each of
 * its subscriptions (PXI_AF_SUBSCRIBED says it has some), reporting topics
 * left without a subscriber to the router's topic_interest. */
void pxi_topics_actor_gone(px_actor *a);

/* A worker that published during an actor's turn stays in its read
 * section until the turn ends (topic.c: one fence per turn, not per
 * publication); pxi_actor_run calls this after each turn to leave it. */
extern _Thread_local struct pxi_rslot *pxi_topics_held;
void pxi_topics_release(void);
static inline void pxi_topics_turn_end(void) {
    if (pxi_topics_held != NULL) {
        pxi_topics_release();
    }
}

/* Adds the broker's counters to out (the publish_* fields). */
void pxi_topics_stats(struct pxi_topics *b, px_system_stats *out);

#endif
