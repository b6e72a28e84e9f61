/*
 * pbjson.c — protobuf-c messages <-> JSON by descriptor (see pbjson.h for
 * the mapping).
 *
 * Reading builds the message the way protobuf-c's own unpacker would, so
 * that protobuf_c_message_free_unpacked(m, NULL) is its destructor: every
 * message, string, bytes buffer and repeated array comes from malloc, and
 * the message is consistent after every store. A value is parsed into a
 * local (pbval) first and stored only when complete; a oneof's case is set
 * together with its member; a repeated array is hung on the message before
 * its elements are parsed and its count grows one element at a time. So an
 * error anywhere only has to free the top-level message. Strings left at
 * their default pointer (protobuf_c_empty_string, a descriptor default) are
 * never freed by free_unpacked, and a field is stored at most once (a key
 * given twice under its two spellings is an error), so no store overwrites
 * something we own.
 *
 * Presence on output follows protobuf-c's packer: a oneof member when the
 * case names it, an optional scalar when its has_ flag is set, an optional
 * string or message when its pointer is neither NULL nor the default, an
 * unlabeled (proto3) field when it is not zero, empty or NULL.
 *
 * Recursion is bounded by PXJ_MAX_DEPTH both ways. Errors name the field
 * path as the input spelled it. No global state: thread-safe.
 */
#include "pbjson.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

/* ---- shared: types and names ---- */

/* One parsed value of any field type; every member sits at offset 0, so
 * storing it is a memcpy of elt_size(type) bytes. */
typedef union {
    int32_t i32;
    uint32_t u32;
    int64_t i64;
    uint64_t u64;
    float f;
    double d;
    protobuf_c_boolean b;
    char *s;
    ProtobufCBinaryData bytes;
    ProtobufCMessage *m;
} pbval;

/* The in-memory size of one value of type t (as protobuf-c lays out a
 * singular member or an element of a repeated array). */
static size_t elt_size(ProtobufCType t) {
    switch (t) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return sizeof(uint64_t);
    case PROTOBUF_C_TYPE_DOUBLE:
        return sizeof(double);
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(ProtobufCMessage *);
    default: /* 32-bit integers, float, enum (protobuf-c forces int size) */
        return sizeof(uint32_t);
    }
}

static bool is_pointer_type(ProtobufCType t) {
    return t == PROTOBUF_C_TYPE_STRING || t == PROTOBUF_C_TYPE_MESSAGE;
}

/* lowerCamelCase as protoc computes a default json_name: drop each '_' and
 * upper-case the letter after it. */
static void camel_copy(char *dst, const char *name) {
    bool up = false;
    for (; *name; name++) {
        if (*name == '_') {
            up = true;
        } else {
            *dst++ = (up && *name >= 'a' && *name <= 'z') ? (char)(*name - 'a' + 'A') : *name;
            up = false;
        }
    }
    *dst = '\0';
}

/* Whether key is the lowerCamelCase of name, without building it. */
static bool camel_eq(const char *name, const char *key) {
    bool up = false;
    for (; *name; name++) {
        if (*name == '_') {
            up = true;
            continue;
        }
        char c = (up && *name >= 'a' && *name <= 'z') ? (char)(*name - 'a' + 'A') : *name;
        up = false;
        if (*key++ != c) {
            return false;
        }
    }
    return *key == '\0';
}

/* ---- JSON -> message ---- */

typedef struct {
    char *err; /* NULL: no reason wanted */
    size_t errlen;
    char path[256]; /* "spec.policy.backoffMultiplier", "roles[2]" */
    size_t plen;
} reader;

/* PX_EINVAL, with "path: reason" in r->err. */
__attribute__((format(printf, 2, 3))) static px_err fail(reader *r, const char *fmt, ...) {
    if (r->err != NULL && r->errlen > 0) {
        char why[192];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, sizeof why, fmt, ap);
        va_end(ap);
        snprintf(r->err, r->errlen, "%s%s%s", r->path, r->plen > 0 ? ": " : "", why);
    }
    return PX_EINVAL;
}

static px_err no_memory(reader *r) {
    if (r->err != NULL && r->errlen > 0) {
        snprintf(r->err, r->errlen, "out of memory");
    }
    return PX_ENOMEM;
}

/* Appends ".key" (or "key" at the top) or "[i]" to the path; returns the
 * length to restore with path_pop. A path too long for the buffer is cut. */
static size_t path_push(reader *r, const char *key, size_t index) {
    size_t old = r->plen;
    size_t room = sizeof r->path - old;
    int n = key != NULL ? snprintf(r->path + old, room, "%s%s", old > 0 ? "." : "", key)
                        : snprintf(r->path + old, room, "[%zu]", index);
    r->plen = (n < 0 || (size_t)n >= room) ? sizeof r->path - 1 : old + (size_t)n;
    return old;
}

static void path_pop(reader *r, size_t old) {
    r->plen = old;
    r->path[old] = '\0';
}

static const char *json_kind(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a fractional number";
    case JSON_TRUE:
        return "true";
    case JSON_FALSE:
        return "false";
    default:
        return "null";
    }
}

static px_err wrong_type(reader *r, const char *want, const json_t *v) {
    return fail(r, "expected %s, got %s", want, json_kind(v));
}

/* An integer as sign and magnitude, from a JSON integer, an integral JSON
 * real, or a string of decimal digits with an optional '-'. */
static px_err read_integer(reader *r, const json_t *v, const char *type, bool *neg, uint64_t *mag) {
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        *neg = i < 0;
        *mag = i < 0 ? (uint64_t)(-(i + 1)) + 1 : (uint64_t)i;
        return PX_OK;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (!isfinite(d) || trunc(d) != d) {
            return fail(r, "expected an integer, got a fraction");
        }
        if (fabs(d) >= 18446744073709551616.0) {
            return fail(r, "out of range for %s", type);
        }
        *neg = d < 0;
        *mag = (uint64_t)fabs(d);
        return PX_OK;
    }
    if (!json_is_string(v)) {
        return wrong_type(r, "an integer", v);
    }
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    size_t i = s[0] == '-' ? 1 : 0;
    if (i == len) {
        return fail(r, "expected an integer, got \"%.40s\"", s);
    }
    *neg = i == 1;
    *mag = 0;
    for (; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return fail(r, "expected an integer, got \"%.40s\"", s);
        }
        unsigned digit = (unsigned)(s[i] - '0');
        if (*mag > (UINT64_MAX - digit) / 10) {
            return fail(r, "out of range for %s", type);
        }
        *mag = *mag * 10 + digit;
    }
    return PX_OK;
}

/* An integer of type t (or an enum's number) within its range. */
static px_err read_int_field(reader *r, ProtobufCType t, const json_t *v, pbval *out) {
    bool is64 = elt_size(t) == sizeof(uint64_t);
    bool is_signed = t != PROTOBUF_C_TYPE_UINT32 && t != PROTOBUF_C_TYPE_FIXED32 &&
                     t != PROTOBUF_C_TYPE_UINT64 && t != PROTOBUF_C_TYPE_FIXED64;
    const char *type = is64 ? (is_signed ? "int64" : "uint64") : (is_signed ? "int32" : "uint32");
    uint64_t max =
        is64 ? (is_signed ? INT64_MAX : UINT64_MAX) : (is_signed ? INT32_MAX : UINT32_MAX);
    bool neg = false;
    uint64_t mag = 0;
    px_err rc = read_integer(r, v, type, &neg, &mag);
    if (rc != PX_OK) {
        return rc;
    }
    /* the negative range of a signed type reaches one further */
    if (neg && mag > 0 && (!is_signed || mag > max + 1)) {
        return fail(r, "out of range for %s", type);
    }
    if (!neg && mag > max) {
        return fail(r, "out of range for %s", type);
    }
    /* -(mag - 1) - 1 reaches the minimum without overflowing */
    int64_t sv = neg && mag > 0 ? -(int64_t)(mag - 1) - 1 : (int64_t)mag;
    if (is64) {
        out->u64 = is_signed ? (uint64_t)sv : mag;
    } else if (is_signed) {
        out->i32 = (int32_t)sv;
    } else {
        out->u32 = (uint32_t)mag;
    }
    return PX_OK;
}

/* A number, or "NaN", "Infinity", "-Infinity", or a decimal number in a
 * string. */
static px_err read_floating(reader *r, ProtobufCType t, const json_t *v, pbval *out) {
    double d;
    if (json_is_number(v)) {
        d = json_number_value(v);
    } else if (!json_is_string(v)) {
        return wrong_type(r, "a number", v);
    } else {
        const char *s = json_string_value(v);
        if (strcmp(s, "NaN") == 0) {
            d = NAN;
        } else if (strcmp(s, "Infinity") == 0) {
            d = INFINITY;
        } else if (strcmp(s, "-Infinity") == 0) {
            d = -INFINITY;
        } else {
            /* strtod alone would take " 1", "inf", "0x1p3" */
            char *end = NULL;
            size_t len = json_string_length(v);
            bool digits = strspn(s, "0123456789.eE+-") == len && strpbrk(s, "0123456789");
            d = digits ? strtod(s, &end) : 0;
            if (!digits || end == s || *end != '\0' || !isfinite(d)) {
                return fail(r, "expected a number, got \"%.40s\"", s);
            }
        }
    }
    if (t == PROTOBUF_C_TYPE_FLOAT) {
        if (isfinite(d) && fabs(d) > FLT_MAX) {
            return fail(r, "out of range for float");
        }
        out->f = (float)d;
    } else {
        out->d = d;
    }
    return PX_OK;
}

static px_err read_enum(reader *r, const ProtobufCFieldDescriptor *f, const json_t *v, pbval *out) {
    const ProtobufCEnumDescriptor *ed = f->descriptor;
    if (!json_is_string(v)) {
        if (!json_is_number(v)) {
            return wrong_type(r, "an enum name or number", v);
        }
        return read_int_field(r, PROTOBUF_C_TYPE_ENUM, v, out);
    }
    const ProtobufCEnumValue *ev =
        protobuf_c_enum_descriptor_get_value_by_name(ed, json_string_value(v));
    if (ev == NULL) {
        return fail(r, "unknown value \"%.40s\" of enum %s", json_string_value(v), ed->name);
    }
    out->i32 = ev->value;
    return PX_OK;
}

static px_err read_string(reader *r, const json_t *v, pbval *out) {
    if (!json_is_string(v)) {
        return wrong_type(r, "a string", v);
    }
    size_t len = json_string_length(v);
    const char *s = json_string_value(v);
    if (memchr(s, '\0', len) != NULL) {
        return fail(r, "a string field cannot hold a NUL character");
    }
    if ((out->s = malloc(len + 1)) == NULL) {
        return no_memory(r);
    }
    memcpy(out->s, s, len + 1);
    return PX_OK;
}

/* Standard base64, padded or not; URL-safe when it uses '-' or '_'. */
static px_err read_bytes(reader *r, const json_t *v, pbval *out) {
    if (!json_is_string(v)) {
        return wrong_type(r, "a base64 string", v);
    }
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    size_t bare = len;
    while (bare > 0 && len - bare < 2 && s[bare - 1] == '=') {
        bare--;
    }
    if (bare < len && len % 4 != 0) {
        return fail(r, "bad base64 padding");
    }
    out->bytes = (ProtobufCBinaryData){0, NULL};
    if (bare == 0) {
        return PX_OK;
    }
    int variant = strpbrk(s, "-_") != NULL ? sodium_base64_VARIANT_URLSAFE_NO_PADDING
                                           : sodium_base64_VARIANT_ORIGINAL_NO_PADDING;
    size_t cap = bare / 4 * 3 + 3;
    uint8_t *buf = malloc(cap);
    if (buf == NULL) {
        return no_memory(r);
    }
    size_t n = 0;
    const char *end = NULL;
    if (sodium_base642bin(buf, cap, s, bare, NULL, &n, &end, variant) != 0 || end != s + bare) {
        free(buf);
        return fail(r, "bad base64");
    }
    out->bytes = (ProtobufCBinaryData){n, buf};
    return PX_OK;
}

static px_err read_message(reader *r, const ProtobufCMessageDescriptor *d, const json_t *in,
                           unsigned depth, ProtobufCMessage **out);

/* One value of field f's type from v (not null); on success out owns what
 * it points to (a string, bytes, a message). */
static px_err read_value(reader *r, const ProtobufCFieldDescriptor *f, const json_t *v,
                         unsigned depth, pbval *out) {
    switch (f->type) {
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE:
        return read_floating(r, f->type, v, out);
    case PROTOBUF_C_TYPE_BOOL:
        if (!json_is_boolean(v)) {
            return wrong_type(r, "true or false", v);
        }
        out->b = json_is_true(v);
        return PX_OK;
    case PROTOBUF_C_TYPE_ENUM:
        return read_enum(r, f, v, out);
    case PROTOBUF_C_TYPE_STRING:
        return read_string(r, v, out);
    case PROTOBUF_C_TYPE_BYTES:
        return read_bytes(r, v, out);
    case PROTOBUF_C_TYPE_MESSAGE:
        if (!json_is_object(v)) {
            return wrong_type(r, "an object", v);
        }
        return read_message(r, f->descriptor, v, depth + 1, &out->m);
    default:
        return read_int_field(r, f->type, v, out);
    }
}

static px_err read_repeated(reader *r, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f,
                            const json_t *v, unsigned depth) {
    if (!json_is_array(v)) {
        return wrong_type(r, "an array", v);
    }
    size_t n = json_array_size(v);
    if (n == 0) {
        return PX_OK;
    }
    size_t sz = elt_size(f->type);
    char *arr = calloc(n, sz);
    if (arr == NULL) {
        return no_memory(r);
    }
    /* hung on m at once: free_unpacked frees it and its first *count
     * elements, whatever happens below */
    size_t *count = (size_t *)((char *)m + f->quantifier_offset);
    *(void **)((char *)m + f->offset) = arr;
    *count = 0;
    for (size_t i = 0; i < n; i++) {
        size_t old = path_push(r, NULL, i);
        const json_t *e = json_array_get(v, i);
        if (json_is_null(e)) {
            return fail(r, "null is not allowed in a repeated field");
        }
        pbval val;
        px_err rc = read_value(r, f, e, depth, &val);
        if (rc != PX_OK) {
            return rc;
        }
        memcpy(arr + i * sz, &val, sz);
        *count = i + 1;
        path_pop(r, old);
    }
    return PX_OK;
}

static px_err read_field(reader *r, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f,
                         const json_t *v, unsigned depth) {
    char *base = (char *)m;
    if (json_is_null(v)) {
        return PX_OK; /* proto3 JSON: null is the default value */
    }
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
        return read_repeated(r, m, f, v, depth);
    }
    uint32_t *oneof_case = NULL;
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        oneof_case = (uint32_t *)(base + f->quantifier_offset);
        if (*oneof_case != 0) {
            const ProtobufCFieldDescriptor *other =
                protobuf_c_message_descriptor_get_field(m->descriptor, *oneof_case);
            return fail(r, "only one member of a oneof may be set, and %s is",
                        other != NULL ? other->name : "another");
        }
    }
    pbval val;
    px_err rc = read_value(r, f, v, depth, &val);
    if (rc != PX_OK) {
        return rc;
    }
    /* what this overwrites is the initializer's value (a default pointer
     * at most): each field is stored once */
    memcpy(base + f->offset, &val, elt_size(f->type));
    if (oneof_case != NULL) {
        *oneof_case = f->id;
    } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && !is_pointer_type(f->type)) {
        *(protobuf_c_boolean *)(base + f->quantifier_offset) = 1;
    }
    return PX_OK;
}

/* The field that key names: its .proto name or its lowerCamelCase. */
static const ProtobufCFieldDescriptor *find_field(const ProtobufCMessageDescriptor *d,
                                                  const char *key) {
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, key);
    for (unsigned i = 0; f == NULL && i < d->n_fields; i++) {
        if (camel_eq(d->fields[i].name, key)) {
            f = &d->fields[i];
        }
    }
    return f;
}

/* proto2 required fields: present in the object, under either spelling. */
static px_err check_required(reader *r, const ProtobufCMessageDescriptor *d, const json_t *in) {
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->label != PROTOBUF_C_LABEL_REQUIRED) {
            continue;
        }
        bool found = false;
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)in, key, v) {
            found = found || (!json_is_null(v) && find_field(d, key) == f);
        }
        if (!found) {
            size_t old = path_push(r, f->name, 0);
            px_err rc = fail(r, "required field missing");
            path_pop(r, old);
            return rc;
        }
    }
    return PX_OK;
}

/* A new message of type d from the object in, depth messages deep (the
 * top-level one is 1). On error *out is untouched and nothing is kept. */
static px_err read_message(reader *r, const ProtobufCMessageDescriptor *d, const json_t *in,
                           unsigned depth, ProtobufCMessage **out) {
    if (depth > PXJ_MAX_DEPTH) {
        return fail(r, "messages nested deeper than %d", PXJ_MAX_DEPTH);
    }
    ProtobufCMessage *m = malloc(d->sizeof_message);
    if (m == NULL) {
        return no_memory(r);
    }
    protobuf_c_message_init(d, m);
    const char *key;
    json_t *v;
    px_err rc = PX_OK;
    json_object_foreach((json_t *)in, key, v) {
        size_t old = path_push(r, key, 0);
        const ProtobufCFieldDescriptor *f = find_field(d, key);
        if (f == NULL) {
            rc = fail(r, "no such field in %s", d->name);
        } else if (strcmp(key, f->name) != 0 && json_object_get(in, f->name) != NULL) {
            rc = fail(r, "given twice (also as \"%s\")", f->name);
        } else {
            rc = read_field(r, m, f, v, depth);
        }
        if (rc != PX_OK) {
            protobuf_c_message_free_unpacked(m, NULL);
            return rc;
        }
        path_pop(r, old);
    }
    if ((rc = check_required(r, d, in)) != PX_OK) {
        protobuf_c_message_free_unpacked(m, NULL);
        return rc;
    }
    *out = m;
    return PX_OK;
}

px_err pxj_from_json(const ProtobufCMessageDescriptor *d, const json_t *in, ProtobufCMessage **out,
                     char *err, size_t errlen) {
    reader r = {.err = err, .errlen = errlen};
    if (err != NULL && errlen > 0) {
        err[0] = '\0';
    }
    if (out != NULL) {
        *out = NULL;
    }
    if (d == NULL || d->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC || in == NULL ||
        out == NULL) {
        return fail(&r, "no descriptor, input or output");
    }
    if (!json_is_object(in)) {
        return wrong_type(&r, "a JSON object", in);
    }
    return read_message(&r, d, in, 1, out);
}

px_err pxj_from_text(const ProtobufCMessageDescriptor *d, const char *text, ProtobufCMessage **out,
                     char *err, size_t errlen) {
    reader r = {.err = err, .errlen = errlen};
    if (out != NULL) {
        *out = NULL;
    }
    if (text == NULL) {
        return fail(&r, "no JSON text");
    }
    json_error_t je;
    json_t *in = json_loads(text, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &je);
    if (in == NULL) {
        /* an empty reason: jansson failed to allocate before parsing */
        if (json_error_code(&je) == json_error_out_of_memory || je.text[0] == '\0') {
            return no_memory(&r);
        }
        return fail(&r, "invalid JSON at line %d column %d: %s", je.line, je.column, je.text);
    }
    px_err rc = pxj_from_json(d, in, out, err, errlen);
    json_decref(in);
    return rc;
}

/* ---- message -> JSON ---- */

/* The length of the valid UTF-8 sequence at s (n bytes left), 0 if none. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    size_t len = c < 0x80                 ? 1
                 : c >= 0xc2 && c <= 0xdf ? 2
                 : c >= 0xe0 && c <= 0xef ? 3
                 : c >= 0xf0 && c <= 0xf4 ? 4
                                          : 0;
    if (len == 0 || len > n) {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            return 0;
        }
    }
    /* overlong forms, UTF-16 surrogates, beyond U+10FFFF */
    if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] > 0x9f) || (c == 0xf0 && s[1] < 0x90) ||
        (c == 0xf4 && s[1] > 0x8f)) {
        return 0;
    }
    return len;
}

/* A JSON string of s; bytes that are not UTF-8 (protobuf-c does not check
 * what it unpacks) become U+FFFD. */
static json_t *string_json(const char *s) {
    if (s == NULL) {
        return json_string("");
    }
    size_t n = strlen(s);
    size_t bad = 0;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq((const unsigned char *)s + i, n - i);
        bad += k == 0;
        i += k > 0 ? k : 1;
    }
    if (bad == 0) {
        return json_stringn(s, n);
    }
    char *fixed = malloc(n + 2 * bad + 1);
    if (fixed == NULL) {
        return NULL;
    }
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq((const unsigned char *)s + i, n - i);
        if (k == 0) {
            memcpy(fixed + o, "\xef\xbf\xbd", 3); /* U+FFFD */
            o += 3;
            i++;
        } else {
            memcpy(fixed + o, s + i, k);
            o += k;
            i += k;
        }
    }
    json_t *j = json_stringn(fixed, o);
    free(fixed);
    return j;
}

static json_t *bytes_json(const ProtobufCBinaryData *b) {
    const int variant = sodium_base64_VARIANT_ORIGINAL;
    if (b->len > SIZE_MAX / 4 * 3 - 3) {
        return NULL;
    }
    size_t cap = sodium_base64_ENCODED_LEN(b->len, variant);
    char *s = malloc(cap);
    if (s == NULL) {
        return NULL;
    }
    sodium_bin2base64(s, cap, b->len > 0 ? b->data : (const unsigned char *)"", b->len, variant);
    json_t *j = json_string(s);
    free(s);
    return j;
}

static json_t *floating_json(double d) {
    if (isnan(d)) {
        return json_string("NaN");
    }
    if (isinf(d)) {
        return json_string(d > 0 ? "Infinity" : "-Infinity");
    }
    return json_real(d);
}

static json_t *write_message(const ProtobufCMessage *m, int flags, unsigned depth);

/* The JSON of one value of field f's type at p. */
static json_t *write_value(const ProtobufCFieldDescriptor *f, const void *p, int flags,
                           unsigned depth) {
    char num[24];
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        return json_integer(*(const int32_t *)p);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return json_integer(*(const uint32_t *)p);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        snprintf(num, sizeof num, "%" PRId64, *(const int64_t *)p);
        return json_string(num);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        snprintf(num, sizeof num, "%" PRIu64, *(const uint64_t *)p);
        return json_string(num);
    case PROTOBUF_C_TYPE_FLOAT:
        return floating_json(*(const float *)p);
    case PROTOBUF_C_TYPE_DOUBLE:
        return floating_json(*(const double *)p);
    case PROTOBUF_C_TYPE_BOOL:
        return json_boolean(*(const protobuf_c_boolean *)p);
    case PROTOBUF_C_TYPE_ENUM: {
        int32_t n = *(const int32_t *)p;
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, n);
        return ev != NULL ? json_string(ev->name) : json_integer(n);
    }
    case PROTOBUF_C_TYPE_STRING:
        return string_json(*(char *const *)p);
    case PROTOBUF_C_TYPE_BYTES:
        return bytes_json(p);
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *sub = *(ProtobufCMessage *const *)p;
        return sub != NULL ? write_message(sub, flags, depth + 1) : json_object();
    }
    }
    return NULL;
}

static json_t *write_repeated(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f,
                              int flags, unsigned depth) {
    size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
    const char *arr = *(char *const *)((const char *)m + f->offset);
    if (arr == NULL) {
        n = 0; /* protobuf_c_message_check refuses this too */
    }
    size_t sz = elt_size(f->type);
    json_t *a = json_array();
    for (size_t i = 0; a != NULL && i < n; i++) {
        if (json_array_append_new(a, write_value(f, arr + i * sz, flags, depth)) != 0) {
            json_decref(a);
            a = NULL;
        }
    }
    return a;
}

/* Whether f holds nothing (proto3 implicit presence). */
static bool is_zero(const ProtobufCFieldDescriptor *f, const void *p) {
    switch (f->type) {
    case PROTOBUF_C_TYPE_FLOAT:
        return *(const float *)p == 0;
    case PROTOBUF_C_TYPE_DOUBLE:
        return *(const double *)p == 0;
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        return s == NULL || s[0] == '\0';
    }
    case PROTOBUF_C_TYPE_BYTES:
        return ((const ProtobufCBinaryData *)p)->len == 0;
    case PROTOBUF_C_TYPE_MESSAGE:
        return *(ProtobufCMessage *const *)p == NULL;
    default: {
        uint64_t z = 0;
        return memcmp(p, &z, elt_size(f->type)) == 0;
    }
    }
}

/* Whether f of m is printed: present as protobuf-c's packer sees it, or a
 * field without presence and PXJ_EMIT_DEFAULTS. */
static bool is_printed(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f, int flags) {
    const char *p = (const char *)m + f->offset;
    const void *q = (const char *)m + f->quantifier_offset;
    const void *ptr = is_pointer_type(f->type) ? *(void *const *)p : NULL;
    bool set_ptr = ptr != NULL && ptr != f->default_value;
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        return *(const uint32_t *)q == f->id && (!is_pointer_type(f->type) || set_ptr);
    }
    switch (f->label) {
    case PROTOBUF_C_LABEL_REQUIRED:
        return true;
    case PROTOBUF_C_LABEL_OPTIONAL:
        return is_pointer_type(f->type) ? set_ptr : *(const protobuf_c_boolean *)q != 0;
    case PROTOBUF_C_LABEL_REPEATED:
        return *(const size_t *)q > 0 || (flags & PXJ_EMIT_DEFAULTS);
    default: /* NONE */
        if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
            return ptr != NULL;
        }
        return !is_zero(f, p) || (flags & PXJ_EMIT_DEFAULTS);
    }
}

/* Sets o[name of f] = v (taking v; NULL v fails). */
static int set_field(json_t *o, const ProtobufCFieldDescriptor *f, int flags, json_t *v) {
    if (flags & PXJ_PROTO_NAMES) {
        return json_object_set_new(o, f->name, v);
    }
    char small[64];
    size_t n = strlen(f->name) + 1;
    char *name = n <= sizeof small ? small : malloc(n);
    if (name == NULL) {
        json_decref(v);
        return -1;
    }
    camel_copy(name, f->name);
    int rc = json_object_set_new(o, name, v);
    if (name != small) {
        free(name);
    }
    return rc;
}

static json_t *write_message(const ProtobufCMessage *m, int flags, unsigned depth) {
    if (depth > PXJ_MAX_DEPTH) {
        return NULL;
    }
    const ProtobufCMessageDescriptor *d = m->descriptor;
    json_t *o = json_object();
    for (unsigned i = 0; o != NULL && i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (!is_printed(m, f, flags)) {
            continue;
        }
        json_t *v = f->label == PROTOBUF_C_LABEL_REPEATED
                        ? write_repeated(m, f, flags, depth)
                        : write_value(f, (const char *)m + f->offset, flags, depth);
        if (set_field(o, f, flags, v) != 0) {
            json_decref(o);
            o = NULL;
        }
    }
    return o;
}

json_t *pxj_to_json(const ProtobufCMessage *m, int flags) {
    if (m == NULL || m->descriptor == NULL ||
        m->descriptor->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC) {
        return NULL;
    }
    return write_message(m, flags, 1);
}

char *pxj_to_text(const ProtobufCMessage *m, int flags) {
    json_t *j = pxj_to_json(m, flags);
    if (j == NULL) {
        return NULL;
    }
    /* into our own malloc'd buffer: json_dumps would use jansson's
     * allocator, which the host may have replaced */
    size_t n = json_dumpb(j, NULL, 0, JSON_COMPACT);
    char *s = n > 0 ? malloc(n + 1) : NULL;
    /* dumping allocates too (jansson's loop check), so it can fail twice */
    if (s != NULL && json_dumpb(j, s, n, JSON_COMPACT) != n) {
        free(s);
        s = NULL;
    }
    if (s != NULL) {
        s[n] = '\0';
    }
    json_decref(j);
    return s;
}
