/*
 * pbjson.h — protobuf-c messages <-> JSON (jansson), by descriptor, after
 * the proto3 JSON mapping: field names in lowerCamelCase on output (the
 * proto name is accepted on input too), 64-bit integers as decimal strings
 * (numbers accepted on input when exact), bytes as standard base64
 * (libsodium; both padded and unpadded accepted), enums by name (numbers
 * accepted), nested messages as objects, repeated fields as arrays, oneofs
 * as their one set member, bool as true/false, float/double as numbers
 * ("NaN", "Infinity", "-Infinity" strings). Default values are omitted on
 * output unless PXJ_EMIT_DEFAULTS. Map fields are encoded as protobuf-c
 * sees them (repeated entry messages) — plexus's protos have none.
 * protobuf-c keeps no json_name, so the lowerCamelCase name is computed
 * from the .proto name as protoc does by default (foo_bar_baz -> fooBarBaz).
 *
 * Input is strict: an unknown field, a wrong JSON type, an out-of-range
 * number, a fraction for an integer, bad base64, an unknown enum name, one
 * field given under both of its names, or two members of one oneof is an
 * error naming the field path as the input spelled it
 * ("batch.envelopes[1].to.node: out of range for uint32"), never a crash.
 * null stands for the field's default (it is not allowed inside an array).
 * Messages nested more than PXJ_MAX_DEPTH deep (the top-level message
 * counts as 1) are refused both ways.
 *
 * No global state: every function is thread-safe.
 */
#ifndef PX_PBJSON_H
#define PX_PBJSON_H

#include <stddef.h>

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

#include <plexus/error.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PXJ_MAX_DEPTH 32

enum {
    /* Also print fields without presence that hold their default value
     * (0, "", false, the zero enum, an empty repeated field as []). Fields
     * with presence are printed only when set, as always: an absent
     * message field, an unset oneof, an optional field without its has_. */
    PXJ_EMIT_DEFAULTS = 1,
    PXJ_PROTO_NAMES = 2, /* print the .proto field names, not lowerCamelCase */
};

/* Builds a new message of type d from a JSON value (an object); borrows in.
 * Caller owns *out, freed with protobuf_c_message_free_unpacked(*out, NULL)
 * (everything in it comes from malloc). PX_EINVAL with a one-line reason
 * "path: why" in err (which may be NULL; cut to errlen) on bad input;
 * PX_ENOMEM. On error *out is NULL and nothing needs freeing. */
px_err pxj_from_json(const ProtobufCMessageDescriptor *d, const json_t *in,
                     ProtobufCMessage **out, char *err, size_t errlen);

/* The same from JSON text (a parse error is PX_EINVAL with jansson's line
 * and column in err; a key repeated in the text is a parse error). jansson
 * reports some of its own allocation failures as parse errors, so out of
 * memory can also come back as PX_EINVAL. */
px_err pxj_from_text(const ProtobufCMessageDescriptor *d, const char *text,
                     ProtobufCMessage **out, char *err, size_t errlen);

/* A new JSON object for m; borrows m, caller owns the result (json_decref).
 * NULL when out of memory, when m is NULL, or when m nests messages deeper
 * than PXJ_MAX_DEPTH. A string that is not UTF-8 (protobuf-c does not check)
 * is printed with U+FFFD for each bad byte. */
json_t *pxj_to_json(const ProtobufCMessage *m, int flags);

/* The same as compact JSON text; caller owns the result and free()s it (it
 * comes from malloc even if jansson's allocator was replaced). NULL as for
 * pxj_to_json. */
char *pxj_to_text(const ProtobufCMessage *m, int flags);

#ifdef __cplusplus
}
#endif
#endif
