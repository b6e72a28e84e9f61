/*
 * fuzz_envelope.c — libFuzzer target: envelopes, the part of a frame that
 * reaches core.
 *
 * Input: a packed Envelope or a packed Batch (both are tried; protobuf
 * accepts many inputs as either). Each envelope goes down link.c's path
 * (common.c): a bytes message, or the payload unpacked as the registered
 * type it names (seven of plexus.proto's messages, ChildFailure among them,
 * which nests itself), then px_system_deliver_remote to the actor id/inc
 * it names on this node (the root guardian, or a dead letter); a system
 * envelope's Undelivered notice goes to px_system_notify_undelivered; a
 * bulk header waits for chunks that never come (fuzz_frame sends them).
 * Each message is checked against its payload and repacked. Everything is
 * freed.
 *
 * ChildFailure nested some 8,000 deep (about 25 KiB) overflowed an 8 MiB
 * stack inside protobuf-c's unpack, which has no depth limit: payloads now
 * pass pxn_pb_depth_ok (at most PXN_PB_MAX_DEPTH levels) first, as in
 * link.c; test_wire checks the 10,000-deep input.
 */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    pxf_rx rx = {0};
    Plexus__Envelope *v = plexus__envelope__unpack(NULL, size, data);
    if (v != NULL) {
        pxf_check_repack(&v->base);
        Plexus__Envelope *one[1] = {v};
        Plexus__Batch b = PLEXUS__BATCH__INIT;
        b.n_envelopes = 1;
        b.envelopes = one;
        (void)pxf_deliver_batch(&rx, &b);
        plexus__envelope__free_unpacked(v, NULL);
    }
    pxf_rx_fini(&rx);
    Plexus__Batch *b = plexus__batch__unpack(NULL, size, data);
    if (b != NULL) {
        pxf_check_repack(&b->base);
        (void)pxf_deliver_batch(&rx, b);
        plexus__batch__free_unpacked(b, NULL);
    }
    pxf_rx_fini(&rx);
    return 0;
}
