/*
 * plexus/router.h — how core hands a non-local send to the layers above.
 *
 * Core never includes transport or cluster headers. When a send targets a
 * ref whose node is not this node, core calls the installed router (a table
 * of function pointers the cluster layer installs at start-up). With none
 * installed, such sends fail with PX_EUNREACHABLE.
 */
#ifndef PLEXUS_ROUTER_H
#define PLEXUS_ROUTER_H

#include <plexus/msg.h>
#include <plexus/system.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct px_router {
    /* Takes ownership of msg on PX_OK; on error the caller keeps it. Called
     * from any thread (often a worker): must not block. */
    px_err (*send)(void *arg, px_ref to, px_msg *msg);
    void *arg;
} px_router;

/* Installs (or, with NULL, removes) the router. The table is copied. Not
 * concurrent with sends to remote refs: install before traffic starts. */
void px_system_set_router(px_system *sys, const px_router *r);

#ifdef __cplusplus
}
#endif
#endif
