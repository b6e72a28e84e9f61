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
 *
 * Input is strict: an unknown field, a wrong JSON type, an out-of-range
 * number, bad base64 or an unknown enum name is an error naming the field
 * path ("value.items[2].key: expected a string"), never a crash. Nesting
 * deeper than PXJ_MAX_DEPTH is refused.
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
    PXJ_EMIT_DEFAULTS = 1, /* print fields that hold their default value */
    PXJ_PROTO_NAMES = 2,   /* print the .proto field names, not lowerCamelCase */
};

/* Builds a new message of type d from a JSON value (an object). *out is
 * freed with protobuf_c_message_free_unpacked(*out, NULL). PX_EINVAL with a
 * one-line reason in err (which may be NULL) on bad input; PX_ENOMEM. */
px_err pxj_from_json(const ProtobufCMessageDescriptor *d, const json_t *in,
                     ProtobufCMessage **out, char *err, size_t errlen);

/* The same from JSON text (a parse error is PX_EINVAL with jansson's line
 * and column in err). */
px_err pxj_from_text(const ProtobufCMessageDescriptor *d, const char *text,
                     ProtobufCMessage **out, char *err, size_t errlen);

/* A new JSON object for m (NULL only when out of memory). */
json_t *pxj_to_json(const ProtobufCMessage *m, int flags);

/* The same as compact JSON text (free() it; NULL when out of memory). */
char *pxj_to_text(const ProtobufCMessage *m, int flags);

#ifdef __cplusplus
}
#endif
#endif
