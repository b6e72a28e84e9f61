/*
 * fuzz_frame.c — libFuzzer target: the frames a linked peer sends.
 *
 * Input: the byte stream that follows the handshake, as beta (the listener
 * of the fixture, fuzz.h) receives it from alpha: u32le n | n bytes, repeated.
 * The stream is read as link.c's rx_cb reads it — a length of 0 or over
 * max_frame (1 MiB) ends the stream before anything is allocated, a short
 * tail is a frame that never arrives — and each frame is copied into a
 * buffer of exactly n + 4 bytes (body, then the header as AD) and opened in
 * place, as link.c does. It is read three times:
 *   plain  — a plaintext-mode cipher (the frame is the packed Frame);
 *   sealed — the fixture's session key, counter from 0, and link.c's rule
 *            that the first frame is an Auth whose signature verifies; a
 *            frame that fails to open ends the stream. Random bytes never
 *            authenticate, so this pass matters for the seeds (real sealed
 *            frames) and the mutations that keep them whole;
 *   reseal — each frame's bytes are taken as a packed Frame, sealed with
 *            pxn_seal and opened with pxn_open (must give them back; a
 *            flipped bit must not open), so the decoder behind the AEAD
 *            sees fuzzed plaintext.
 * Every decoded Frame is handled as link.c's on_frame_locked does: Auth is
 * verified, a Batch's envelopes become px_msgs delivered through core or
 * bulk headers, Chunks are reassembled into bulk payloads (common.c), a
 * Ping is answered with a sealed Pong, Goodbye ends the stream; the other
 * bodies are ignored. Frames from all of a peer's lanes share the one
 * stream (link.c takes batches only on NORMAL and CONTROL, chunks only on
 * BULK). Everything is freed before returning.
 */
#include <string.h>

#include "fuzz.h"

enum pass { PASS_PLAIN, PASS_SEALED, PASS_RESEAL };

/* One direction of a link, as beta holds it. */
typedef struct rx_state {
    pxf_rx link;        /* bulk payloads in progress */
    pxn_cipher rx;      /* opens alpha's frames */
    pxn_cipher tx;      /* seals beta's answers (Pong) */
    pxn_cipher peer_tx; /* alpha's sealing side (reseal pass) */
    bool authed;
    bool strict; /* only link.c's order: Auth first, nothing before it */
} rx_state;

static void reply_pong(rx_state *s, const Plexus__Heartbeat *ping) {
    Plexus__Heartbeat hb = *ping;
    Plexus__Frame r = PLEXUS__FRAME__INIT;
    r.body_case = PLEXUS__FRAME__BODY_PONG;
    r.pong = &hb;
    size_t n = plexus__frame__get_packed_size(&r);
    uint8_t *b = malloc(pxn_sealed_len(&s->tx, n));
    PXF_CHECK(b != NULL);
    PXF_CHECK(plexus__frame__pack(&r, b + PXN_LEN_BYTES) == n);
    PXF_CHECK(pxn_seal(&s->tx, b + PXN_LEN_BYTES, n, b) == pxn_sealed_len(&s->tx, n));
    free(b);
}

/* One opened frame. Returns false when the link would close. */
static bool on_frame(rx_state *s, const uint8_t *pt, size_t n) {
    const pxf_env *e = pxf_env_get();
    Plexus__Frame *f = plexus__frame__unpack(NULL, n, pt);
    if (f == NULL) {
        return false; /* "a frame that does not decode" */
    }
    pxf_check_repack(&f->base);
    bool go_on = true;
    if (f->body_case == PLEXUS__FRAME__BODY_AUTH || !s->authed) {
        bool ok = f->body_case == PLEXUS__FRAME__BODY_AUTH && f->auth != NULL &&
                  pxn_hs_verify(&e->l, f->auth->sig.data, f->auth->sig.len) == PX_OK;
        if (ok) {
            /* Only the fixture's dialer can sign this transcript. */
            PXF_CHECK(f->auth->sig.len == 64);
        }
        if (!s->authed && s->strict) {
            s->authed = ok;
            plexus__frame__free_unpacked(f, NULL);
            return ok; /* "the peer did not prove its identity" */
        }
        s->authed = s->authed || ok;
    }
    const char *bad = NULL;
    switch (f->body_case) {
    case PLEXUS__FRAME__BODY_BATCH:
        bad = f->batch != NULL ? pxf_deliver_batch(&s->link, f->batch) : "no batch";
        break;
    case PLEXUS__FRAME__BODY_CHUNK:
        bad = f->chunk != NULL ? pxf_rx_chunk(&s->link, f->chunk) : "no chunk";
        break;
    case PLEXUS__FRAME__BODY_PING:
        if (f->ping != NULL) {
            reply_pong(s, f->ping);
        }
        break;
    case PLEXUS__FRAME__BODY_GOODBYE:
        PXF_CHECK(f->goodbye != NULL && f->goodbye->reason != NULL);
        (void)strlen(f->goodbye->reason);
        go_on = false; /* "the peer said goodbye" */
        break;
    default:
        break; /* PONG, CREDIT, unknown bodies: ignored */
    }
    plexus__frame__free_unpacked(f, NULL);
    return go_on && bad == NULL;
}

/* Seals body[0..n) as alpha would, opens it as beta: the plaintext comes
 * back, and one flipped ciphertext bit makes it fail. Returns the opened
 * buffer (free it); *ptlen gets its length. */
static uint8_t *reseal(rx_state *s, const uint8_t *body, size_t n, size_t *ptlen) {
    size_t wn = pxn_sealed_len(&s->peer_tx, n);
    uint8_t *w = malloc(wn);
    PXF_CHECK(w != NULL);
    PXF_CHECK(pxn_seal(&s->peer_tx, body, n, w) == wn);
    size_t cn = wn - PXN_LEN_BYTES;
    PXF_CHECK(pxn_get_u32(w) == cn);

    pxn_cipher bad = s->rx;
    size_t bit = (n * 7 + 3) % (cn * 8);
    w[PXN_LEN_BYTES + bit / 8] ^= (uint8_t)(1u << (bit % 8));
    size_t sl = 0;
    uint8_t *tmp = malloc(cn);
    PXF_CHECK(tmp != NULL);
    PXF_CHECK(pxn_open(&bad, w, w + PXN_LEN_BYTES, cn, tmp, &sl) == PX_EAUTH);
    PXF_CHECK(bad.ctr == s->rx.ctr);
    free(tmp);
    w[PXN_LEN_BYTES + bit / 8] ^= (uint8_t)(1u << (bit % 8));

    /* As link.c holds it: body, then the header. */
    uint8_t *buf = malloc(cn + PXN_LEN_BYTES);
    PXF_CHECK(buf != NULL);
    memcpy(buf, w + PXN_LEN_BYTES, cn);
    memcpy(buf + cn, w, PXN_LEN_BYTES);
    free(w);
    PXF_CHECK(pxn_open(&s->rx, buf + cn, buf, cn, buf, ptlen) == PX_OK);
    PXF_CHECK(*ptlen == n);
    PXF_CHECK(n == 0 || memcmp(buf, body, n) == 0);
    return buf;
}

/* The frames of one stream, until the link would close. */
static void read_stream(rx_state *s, const uint8_t *data, size_t size, enum pass p) {
    while (size >= PXN_LEN_BYTES) {
        uint32_t n = pxn_get_u32(data);
        if (n == 0 || n > PXF_MAX_FRAME) {
            return; /* "frame of %u bytes (limit %u)" */
        }
        if (size - PXN_LEN_BYTES < n) {
            return; /* the rest never arrives */
        }
        const uint8_t *body = data + PXN_LEN_BYTES;
        uint8_t *buf;
        size_t pl = 0;
        bool ok;
        if (p == PASS_RESEAL) {
            buf = reseal(s, body, n, &pl);
            ok = on_frame(s, buf, pl);
        } else {
            buf = malloc((size_t)n + PXN_LEN_BYTES);
            PXF_CHECK(buf != NULL);
            memcpy(buf, body, n);
            memcpy(buf + n, data, PXN_LEN_BYTES);
            uint64_t ctr = s->rx.ctr;
            px_err rv = pxn_open(&s->rx, buf + n, buf, n, buf, &pl);
            if (rv != PX_OK) {
                /* Only a short frame is malformed; the rest fails the tag.
                 * Neither moves the counter. */
                PXF_CHECK(p == PASS_SEALED);
                PXF_CHECK(rv == (n < PXN_TAG_BYTES ? PX_EPROTO : PX_EAUTH));
                PXF_CHECK(s->rx.ctr == ctr);
                free(buf);
                return;
            }
            PXF_CHECK(s->rx.ctr == ctr + 1);
            PXF_CHECK(pl == (p == PASS_PLAIN ? n : n - PXN_TAG_BYTES));
            ok = on_frame(s, buf, pl);
        }
        free(buf);
        if (!ok) {
            return;
        }
        data += PXN_LEN_BYTES + n;
        size -= PXN_LEN_BYTES + n;
    }
}

static void walk(const uint8_t *data, size_t size, enum pass p) {
    const pxf_env *e = pxf_env_get();
    rx_state s = {.rx = e->l_rx, .tx = e->l_tx, .peer_tx = e->d_tx, .strict = p == PASS_SEALED};
    s.rx.plaintext = p == PASS_PLAIN;
    s.tx.plaintext = p == PASS_PLAIN;
    read_stream(&s, data, size, p);
    pxf_rx_fini(&s.link);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    walk(data, size, PASS_PLAIN);
    walk(data, size, PASS_SEALED);
    walk(data, size, PASS_RESEAL);
    return 0;
}
