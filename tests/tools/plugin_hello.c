/*
 * plugin_hello.c — a plexusd plugin for the tests (`plexusd --load`):
 * behavior plugin.hello answers plexus.kv.Ping with a Pong of the same
 * text whose node is "plugin.hello@" and the node's name. It links nothing: its plexus
 * symbols are plexusd's own (plexusd exports them).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <plexus/plexus.h>

#include "plexus/kv.pb-c.h"

static px_err hello_receive(px_ctx *ctx, px_msg *m) {
    const ProtobufCMessage *pb = px_msg_pb(m);
    if (pb == NULL || pb->descriptor != &plexus__kv__ping__descriptor || px_msg_corr(m) == 0) {
        return PX_OK;
    }
    const char *text = ((const Plexus__Kv__Ping *)pb)->text;
    Plexus__Kv__Pong *p = malloc(sizeof *p);
    if (p == NULL) {
        return PX_OK;
    }
    plexus__kv__pong__init(p);
    const char *node = px_system_node_name(px_ctx_system(ctx));
    size_t n = strlen(node) + 16;
    p->text = strdup(text);
    p->node = malloc(n);
    px_msg *out = NULL;
    if (p->text == NULL || p->node == NULL) {
        protobuf_c_message_free_unpacked(&p->base, NULL);
        return PX_OK;
    }
    snprintf(p->node, n, "plugin.hello@%s", node);
    if (px_msg_proto(&out, &p->base, NULL) != PX_OK) {
        protobuf_c_message_free_unpacked(&p->base, NULL);
        return PX_OK;
    }
    if (px_reply(ctx, m, &out) != PX_OK) {
        px_msg_free(out);
    }
    return PX_OK;
}

static const px_behavior hello_beh = {.name = "plugin.hello", .receive = hello_receive};

px_err plexus_plugin_register(px_system *sys);
px_err plexus_plugin_register(px_system *sys) { return px_behavior_register(sys, &hello_beh); }
