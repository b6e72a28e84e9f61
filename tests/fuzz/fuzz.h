/*
 * tests/fuzz/fuzz.h — what the wire fuzz targets share (common.c).
 *
 * Each target, tests/fuzz/fuzz_<name>.c, defines LLVMFuzzerTestOneInput.
 * Built with PLEXUS_FUZZ (clang, `tests/run.sh --fuzz`) it links libFuzzer;
 * in the ordinary builds it links driver.c, a main() that replays the
 * committed seeds in corpus/fuzz_<name>/ under ctest.
 *
 * Everything here is deterministic: two nodes and a handshake made from
 * the inputs of the test vectors (tests/transport/test_wire.c,
 * proto/README.md section 7), and one px_system with a few registered
 * message types. A broken invariant aborts (PXF_CHECK), which libFuzzer and
 * the seed driver both report as a crash. Not thread-safe: one input at a
 * time, as libFuzzer runs them.
 */
#ifndef PXF_FUZZ_H
#define PXF_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <plexus/plexus.h>
#include <plexus/router.h>
#include <plexus/transport.h>

#include "link_int.h"
#include "wire.h"

/* The libFuzzer entry point each target defines: one input, borrowed. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Aborts with the failed condition: the fuzzer saves the input. */
#define PXF_CHECK(cond)                                                                  \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                     \
        }                                                                                \
    } while (0)

/* Largest frame the fuzz targets accept: link.c's default max_frame. */
#define PXF_MAX_FRAME (1u << 20)
/* Largest bulk payload (link.c's max_msg; its default is 64 MiB, this one
 * keeps a fuzzing run's memory small). */
#define PXF_MAX_MSG (4u << 20)

/* A node made from the test vectors' inputs: "alpha" (dialer, identity
 * seed 0x01, kx seed 0x11, hello nonce 0x33) or "beta" (listener, 0x02,
 * 0x22, 0x44), both with the cluster secret "correct horse battery
 * staple", node_inc 7; node_id is px_node_id of the name. */
typedef struct pxf_node {
    px_identity id;
    uint8_t key[PX_SECRET_BYTES];
    uint8_t kx_seed[32];
    uint8_t nonce[32];
    pxn_self self;
} pxf_node;

/* The shared, read-only fixture. d and l hold the finished handshake (alpha
 * dialed beta on the NORMAL lane); d_tx seals alpha's frames with counter 0
 * and l_rx opens them (the same key). */
typedef struct pxf_env {
    pxf_node alpha, beta;
    pxn_hs d, l;
    pxn_cipher d_tx, d_rx, l_tx, l_rx;
    px_system *sys; /* types below registered; freed at exit */
} pxf_env;

/* The fixture, built on the first call (aborts if it cannot be). */
const pxf_env *pxf_env_get(void);

/* A handshake with the node's vector seeds: pxn_hs_init of `role` (alpha
 * dials, beta listens) for `lane`. Caller owns hs (pxn_hs_fini). */
void pxf_hs_start(pxn_hs *hs, int role, uint32_t lane);

/* One inbound link's receiving state: link.c's own (link_int.h), made on
 * first use. Zero-initialise; pxf_rx_fini frees it. */
typedef struct pxf_rx {
    struct pxf_link *l;
} pxf_rx;

/* A batch from the link's NORMAL connection, through link.c's
 * pxl_deliver_batch: each envelope is delivered, held back, parked, turned
 * into an undelivered notice, or is a bulk payload's header. The targets are
 * re-addressed to this node and incarnation first (the actor id and inc stay
 * the input's); b's envelopes are modified for that. Returns link.c's
 * reason to drop the link, or NULL. */
const char *pxf_deliver_batch(pxf_rx *rx, const Plexus__Batch *b);

/* A chunk from the link's BULK connection, through link.c's pxl_rx_chunk. */
const char *pxf_rx_chunk(pxf_rx *rx, const Plexus__Chunk *ch);

/* Drops whatever the link still holds and frees it. */
void pxf_rx_fini(pxf_rx *rx);

/* Packs m (a message unpacked from the wire) into a buffer of exactly
 * get_packed_size bytes and unpacks the result again, which must work if
 * m kept no unknown fields. Borrows m. */
void pxf_check_repack(const ProtobufCMessage *m);

#endif
