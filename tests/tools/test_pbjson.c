/* Tests for tools/common/pbjson.h: exact JSON of plexus's messages, round
 * trips (message -> JSON -> message packs to the same bytes), the flags,
 * and strict input: each bad input is refused with its field path. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "pbjson.h"
#include "plexus/admin.pb-c.h"
#include "plexus/kv.pb-c.h"
#include "plexus/plexus.pb-c.h"

/* ---- helpers ---- */

static void expect_text(const void *m, int flags, const char *want) {
    char *got = pxj_to_text(m, flags);
    cr_assert_not_null(got);
    cr_assert_str_eq(got, want);
    free(got);
}

static ProtobufCMessage *parse_ok(const ProtobufCMessageDescriptor *d, const char *text) {
    char err[256] = "";
    ProtobufCMessage *m = NULL;
    px_err rc = pxj_from_text(d, text, &m, err, sizeof err);
    cr_assert_eq(rc, PX_OK, "%s: %s", text, err);
    cr_assert_not_null(m);
    cr_assert_eq(m->descriptor, d);
    return m;
}

/* text is refused with PX_EINVAL and exactly the reason want. */
static void expect_error(const ProtobufCMessageDescriptor *d, const char *text, const char *want) {
    char err[256] = "";
    ProtobufCMessage *m = (ProtobufCMessage *)&err; /* must be reset to NULL */
    cr_assert_eq(pxj_from_text(d, text, &m, err, sizeof err), PX_EINVAL, "%s", text);
    cr_assert_null(m);
    cr_assert_str_eq(err, want, "%s", text);
}

static uint8_t *packed(const ProtobufCMessage *m, size_t *len) {
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(*len + 1);
    cr_assert_not_null(buf);
    cr_assert_eq(protobuf_c_message_pack(m, buf), *len);
    return buf;
}

/* m -> text -> message packs to m's bytes and prints the same text again,
 * with each flag combination. */
static void expect_round_trip(const ProtobufCMessage *m) {
    size_t want_len, got_len;
    uint8_t *want = packed(m, &want_len);
    for (int flags = 0; flags <= (PXJ_EMIT_DEFAULTS | PXJ_PROTO_NAMES); flags++) {
        char *text = pxj_to_text(m, flags);
        cr_assert_not_null(text);
        ProtobufCMessage *back = parse_ok(m->descriptor, text);
        uint8_t *got = packed(back, &got_len);
        cr_assert_eq(got_len, want_len, "%s", text);
        cr_assert_eq(memcmp(got, want, want_len), 0, "%s", text);
        char *again = pxj_to_text(back, flags);
        cr_assert_str_eq(again, text);
        free(again);
        free(got);
        protobuf_c_message_free_unpacked(back, NULL);
        free(text);
    }
    free(want);
}

/* ---- exact output ---- */

Test(tools_pbjson, put_prints_its_key_and_bytes_as_base64) {
    Plexus__Kv__Put put = PLEXUS__KV__PUT__INIT;
    put.key = "k";
    put.value = (ProtobufCBinaryData){3, (uint8_t *)"\x00\x01\xff"};
    expect_text(&put, 0, "{\"key\":\"k\",\"value\":\"AAH/\"}");
}

Test(tools_pbjson, uint64_prints_as_a_decimal_string_and_empty_fields_are_omitted) {
    Plexus__Kv__Pong pong = PLEXUS__KV__PONG__INIT;
    pong.text = "hi";
    pong.served = UINT64_MAX;
    expect_text(&pong, 0, "{\"text\":\"hi\",\"served\":\"18446744073709551615\"}");
}

Test(tools_pbjson, oneof_prints_its_one_member_with_camel_case_names) {
    Plexus__Admin__SpawnReq spawn = PLEXUS__ADMIN__SPAWN_REQ__INIT;
    spawn.behavior = "kv.shard";
    spawn.global_name = "kv";
    Plexus__Admin__AdminRequest req = PLEXUS__ADMIN__ADMIN_REQUEST__INIT;
    req.id = 7;
    req.op_case = PLEXUS__ADMIN__ADMIN_REQUEST__OP_SPAWN;
    req.spawn = &spawn;
    expect_text(&req, 0,
                "{\"id\":\"7\",\"spawn\":{\"behavior\":\"kv.shard\",\"globalName\":\"kv\"}}");
    expect_text(&req, PXJ_PROTO_NAMES,
                "{\"id\":\"7\",\"spawn\":{\"behavior\":\"kv.shard\",\"global_name\":\"kv\"}}");
}

Test(tools_pbjson, an_empty_oneof_message_member_prints_as_an_empty_object) {
    Plexus__Admin__Empty empty = PLEXUS__ADMIN__EMPTY__INIT;
    Plexus__Admin__AdminRequest req = PLEXUS__ADMIN__ADMIN_REQUEST__INIT;
    req.op_case = PLEXUS__ADMIN__ADMIN_REQUEST__OP_INFO;
    req.info = &empty;
    expect_text(&req, 0, "{\"info\":{}}");
    expect_text(&req, PXJ_EMIT_DEFAULTS, "{\"id\":\"0\",\"info\":{}}");
}

Test(tools_pbjson, enums_print_by_name_and_unknown_numbers_as_numbers) {
    Plexus__Refuse refuse = PLEXUS__REFUSE__INIT;
    refuse.reason = PLEXUS__REFUSE__REASON__DUPLICATE;
    refuse.detail = "again";
    refuse.version = 1;
    Plexus__Handshake hs = PLEXUS__HANDSHAKE__INIT;
    hs.msg_case = PLEXUS__HANDSHAKE__MSG_REFUSE;
    hs.refuse = &refuse;
    expect_text(&hs, 0,
                "{\"refuse\":{\"reason\":\"DUPLICATE\",\"detail\":\"again\",\"version\":1}}");

    Plexus__MemberEvent ev = PLEXUS__MEMBER_EVENT__INIT;
    ev.name = "a";
    ev.state = PLEXUS__MEMBER_STATE__MEMBER_UP;
    ev.from = (Plexus__MemberState)42;
    ev.at_ms = -5;
    expect_text(&ev, 0, "{\"name\":\"a\",\"state\":\"MEMBER_UP\",\"from\":42,\"atMs\":\"-5\"}");
}

Test(tools_pbjson, repeated_fields_print_as_arrays) {
    char *roles[] = {"kv", "edge"};
    Plexus__NodeInfo ni = PLEXUS__NODE_INFO__INIT;
    ni.name = "n1";
    ni.n_roles = 2;
    ni.roles = roles;
    ni.leaving = 1;
    expect_text(&ni, 0, "{\"name\":\"n1\",\"roles\":[\"kv\",\"edge\"],\"leaving\":true}");
}

Test(tools_pbjson, emit_defaults_prints_zero_fields_but_not_absent_messages) {
    Plexus__Kv__Value v = PLEXUS__KV__VALUE__INIT;
    expect_text(&v, 0, "{}");
    expect_text(&v, PXJ_EMIT_DEFAULTS,
                "{\"key\":\"\",\"found\":false,\"value\":\"\",\"node\":\"\"}");

    Plexus__Refuse refuse = PLEXUS__REFUSE__INIT;
    expect_text(&refuse, PXJ_EMIT_DEFAULTS | PXJ_PROTO_NAMES,
                "{\"reason\":\"UNSPECIFIED\",\"detail\":\"\",\"version\":0,\"min_version\":0}");

    Plexus__Frame frame = PLEXUS__FRAME__INIT; /* no oneof member set */
    expect_text(&frame, PXJ_EMIT_DEFAULTS, "{}");

    Plexus__NodeInfo ni = PLEXUS__NODE_INFO__INIT;
    json_t *j = pxj_to_json(&ni.base, PXJ_EMIT_DEFAULTS);
    cr_assert_not_null(j);
    cr_assert(json_is_array(json_object_get(j, "roles")));
    cr_assert_eq(json_array_size(json_object_get(j, "roles")), 0);
    cr_assert_str_eq(json_string_value(json_object_get(j, "startedMs")), "0");
    cr_assert_str_eq(json_string_value(json_object_get(j, "identityPk")), "");
    json_decref(j);

    Plexus__SpawnRequest sr = PLEXUS__SPAWN_REQUEST__INIT;
    j = pxj_to_json(&sr.base, PXJ_EMIT_DEFAULTS);
    cr_assert_not_null(j);
    cr_assert_null(json_object_get(j, "spec"), "an unset message field stays out");
    cr_assert_not_null(json_object_get(j, "unreachableMs"));
    json_decref(j);
}

Test(tools_pbjson, doubles_print_as_numbers_or_nan_and_infinity_strings) {
    Plexus__RestartPolicy p = PLEXUS__RESTART_POLICY__INIT;
    p.backoff_multiplier = 2.5;
    p.backoff_jitter = NAN;
    expect_text(&p, 0, "{\"backoffMultiplier\":2.5,\"backoffJitter\":\"NaN\"}");
    p.backoff_multiplier = INFINITY;
    p.backoff_jitter = -INFINITY;
    expect_text(&p, 0, "{\"backoffMultiplier\":\"Infinity\",\"backoffJitter\":\"-Infinity\"}");
}

Test(tools_pbjson, strings_that_are_not_utf8_print_with_replacement_characters) {
    Plexus__Goodbye bye = PLEXUS__GOODBYE__INIT;
    bye.reason = "a\xff" /* a byte UTF-8 never uses, then a cut 3-byte sequence */
                 "b\xe2\x82";
    expect_text(&bye, 0,
                "{\"reason\":\"a\xef\xbf\xbd"
                "b\xef\xbf\xbd\xef\xbf\xbd\"}");
}

/* ---- round trips ---- */

Test(tools_pbjson, kv_messages_round_trip) {
    Plexus__Kv__Put put = PLEXUS__KV__PUT__INIT;
    put.key = "user/42";
    put.value = (ProtobufCBinaryData){5, (uint8_t *)"\x00hi\xfe\xff"};
    expect_round_trip(&put.base);

    Plexus__Kv__Value val = PLEXUS__KV__VALUE__INIT;
    val.key = "k";
    val.found = 1;
    val.value = (ProtobufCBinaryData){1, (uint8_t *)"x"};
    val.node = "n2";
    expect_round_trip(&val.base);

    Plexus__Kv__Pong pong = PLEXUS__KV__PONG__INIT;
    pong.text = "caf\xc3\xa9 \"quoted\" \\ \n";
    pong.served = 9007199254740993ULL; /* not exact as a double */
    expect_round_trip(&pong.base);
}

Test(tools_pbjson, a_frame_with_a_batch_of_envelopes_round_trips) {
    Plexus__Envelope e1 = PLEXUS__ENVELOPE__INIT, e2 = PLEXUS__ENVELOPE__INIT;
    e1.to_node = 0xdeadbeef00000003ULL; /* fixed64s past a double's 53 bits */
    e1.to_actor = 17ULL << 32 | 1;
    e1.from_node = 1ULL << 32;
    e1.corr = UINT64_MAX;
    e1.flags = 1;
    e1.type = "plexus.kv.Put";
    e1.payload = (ProtobufCBinaryData){4, (uint8_t *)"\x0a\x01k\x00"};
    e2.to_node = e1.to_node;
    e2.to_actor = e1.to_actor;
    e2.tag = 9;
    e2.bulk_id = 1ULL << 40;
    e2.bulk_len = 123456789012ULL;
    e2.sysop = 12;
    Plexus__Envelope *envs[] = {&e1, &e2};
    Plexus__Batch batch = PLEXUS__BATCH__INIT;
    batch.n_envelopes = 2;
    batch.envelopes = envs;
    Plexus__Frame frame = PLEXUS__FRAME__INIT;
    frame.body_case = PLEXUS__FRAME__BODY_BATCH;
    frame.batch = &batch;
    expect_round_trip(&frame.base);

    Plexus__Heartbeat hb = PLEXUS__HEARTBEAT__INIT;
    hb.seq = 5;
    Plexus__Frame ping = PLEXUS__FRAME__INIT;
    ping.body_case = PLEXUS__FRAME__BODY_PONG;
    ping.pong = &hb;
    expect_round_trip(&ping.base);
    expect_text(&ping, 0, "{\"pong\":{\"seq\":\"5\"}}");
}

Test(tools_pbjson, handshake_hello_and_refuse_round_trip) {
    uint8_t pk[32];
    for (unsigned i = 0; i < sizeof pk; i++) {
        pk[i] = (uint8_t)(i * 37 + 1);
    }
    Plexus__Hello hello = PLEXUS__HELLO__INIT;
    hello.version = 1;
    hello.min_version = 1;
    hello.node_name = "node-a.1";
    hello.node_id = 0x811c9dc5;
    hello.identity_pk = (ProtobufCBinaryData){32, pk};
    hello.kx_pk = (ProtobufCBinaryData){31, pk};
    hello.nonce = (ProtobufCBinaryData){30, pk};
    hello.advertise = "tcp://127.0.0.1:7000";
    hello.plaintext = 1;
    hello.max_msg = 1ULL << 33;
    Plexus__Handshake hs = PLEXUS__HANDSHAKE__INIT;
    hs.msg_case = PLEXUS__HANDSHAKE__MSG_HELLO;
    hs.hello = &hello;
    expect_round_trip(&hs.base);

    Plexus__Refuse refuse = PLEXUS__REFUSE__INIT;
    refuse.reason = PLEXUS__REFUSE__REASON__SHUTTING_DOWN;
    hs.msg_case = PLEXUS__HANDSHAKE__MSG_REFUSE;
    hs.refuse = &refuse;
    expect_round_trip(&hs.base);
}

Test(tools_pbjson, node_info_and_member_events_round_trip) {
    char *roles[] = {"kv", "", "edge"};
    char *behaviors[] = {"echo"};
    Plexus__NodeInfo ni = PLEXUS__NODE_INFO__INIT;
    ni.name = "n1";
    ni.node_id = UINT32_MAX;
    ni.address = "tcp://[::1]:7000";
    ni.identity_pk = (ProtobufCBinaryData){2, (uint8_t *)"\xfb\xff"};
    ni.started_ms = INT64_MIN;
    ni.n_roles = 3;
    ni.roles = roles;
    ni.n_behaviors = 1;
    ni.behaviors = behaviors;
    ni.actors = 12;
    ni.mailbox_depth = UINT64_MAX - 1;
    expect_round_trip(&ni.base);

    Plexus__MemberEvent ev = PLEXUS__MEMBER_EVENT__INIT;
    ev.name = "n2";
    ev.state = PLEXUS__MEMBER_STATE__MEMBER_UNREACHABLE;
    ev.from = PLEXUS__MEMBER_STATE__MEMBER_UP;
    ev.at_ms = INT64_MAX;
    ev.revision = -1;
    expect_round_trip(&ev.base);
}

Test(tools_pbjson, spawn_requests_with_nested_specs_and_doubles_round_trip) {
    Plexus__RestartPolicy pol = PLEXUS__RESTART_POLICY__INIT;
    pol.max_restarts = 3;
    pol.backoff_multiplier = 0.1;
    pol.backoff_jitter = 1e-300;
    Plexus__ChildSpec spec = PLEXUS__CHILD_SPEC__INIT;
    spec.id = "worker";
    spec.behavior = "kv.shard";
    spec.arg_type = "plexus.kv.Put";
    spec.arg = (ProtobufCBinaryData){1, (uint8_t *)"\x0a"};
    spec.policy = &pol;
    Plexus__ActorRef parent = PLEXUS__ACTOR_REF__INIT;
    parent.id = 4;
    Plexus__SpawnRequest sr = PLEXUS__SPAWN_REQUEST__INIT;
    sr.spec = &spec;
    sr.parent = &parent;
    sr.unreachable_ms = 2500;
    sr.global_name = "shard-1";
    expect_round_trip(&sr.base);

    pol.backoff_multiplier = NAN;
    pol.backoff_jitter = -INFINITY;
    expect_round_trip(&sr.base); /* NaN packs to the same bits */
}

Test(tools_pbjson, every_admin_request_op_round_trips) {
    Plexus__Admin__Empty empty = PLEXUS__ADMIN__EMPTY__INIT;
    Plexus__Admin__WhyReq why = PLEXUS__ADMIN__WHY_REQ__INIT;
    why.node = "n3";
    Plexus__Admin__ActorsReq actors = PLEXUS__ADMIN__ACTORS_REQ__INIT;
    actors.limit = 10;
    actors.by_depth = 1;
    Plexus__Admin__SendReq send = PLEXUS__ADMIN__SEND_REQ__INIT;
    send.target = "kv";
    send.type = "plexus.kv.Get";
    send.json = "{\"key\":\"a\"}";
    send.ask = 1;
    send.timeout_ms = 100;
    Plexus__Admin__AdminRequest req = PLEXUS__ADMIN__ADMIN_REQUEST__INIT;
    req.id = 1;
    req.op_case = PLEXUS__ADMIN__ADMIN_REQUEST__OP_STATS;
    req.stats = &empty;
    expect_round_trip(&req.base);
    req.op_case = PLEXUS__ADMIN__ADMIN_REQUEST__OP_WHY;
    req.why = &why;
    expect_round_trip(&req.base);
    req.op_case = PLEXUS__ADMIN__ADMIN_REQUEST__OP_ACTORS;
    req.actors = &actors;
    expect_round_trip(&req.base);
    req.op_case = PLEXUS__ADMIN__ADMIN_REQUEST__OP_SEND;
    req.send = &send;
    expect_round_trip(&req.base);
}

Test(tools_pbjson, a_recursive_message_round_trips_at_the_depth_limit) {
    Plexus__ChildFailure chain[PXJ_MAX_DEPTH];
    for (int i = 0; i < PXJ_MAX_DEPTH; i++) {
        chain[i] = (Plexus__ChildFailure)PLEXUS__CHILD_FAILURE__INIT;
        chain[i].code = -i;
        chain[i].time_ms = -1000 * i;
        chain[i].cause = i + 1 < PXJ_MAX_DEPTH ? &chain[i + 1] : NULL;
    }
    expect_round_trip(&chain[0].base);
}

/* ---- input ---- */

Test(tools_pbjson, input_accepts_proto_names_and_camel_case) {
    Plexus__Hello *h = (Plexus__Hello *)parse_ok(
        &plexus__hello__descriptor, "{\"node_name\":\"a\",\"minVersion\":2,\"max_msg\":\"9\"}");
    cr_assert_str_eq(h->node_name, "a");
    cr_assert_eq(h->min_version, 2);
    cr_assert_eq(h->max_msg, 9);
    protobuf_c_message_free_unpacked(&h->base, NULL);
}

Test(tools_pbjson, input_accepts_integers_as_numbers_or_decimal_strings) {
    Plexus__Kv__Pong *p = (Plexus__Kv__Pong *)parse_ok(&plexus__kv__pong__descriptor,
                                                       "{\"served\":\"18446744073709551615\"}");
    cr_assert_eq(p->served, UINT64_MAX);
    protobuf_c_message_free_unpacked(&p->base, NULL);
    p = (Plexus__Kv__Pong *)parse_ok(&plexus__kv__pong__descriptor, "{\"served\":42}");
    cr_assert_eq(p->served, 42);
    protobuf_c_message_free_unpacked(&p->base, NULL);
    p = (Plexus__Kv__Pong *)parse_ok(&plexus__kv__pong__descriptor, "{\"served\":1e3}");
    cr_assert_eq(p->served, 1000, "an exact real is an integer");
    protobuf_c_message_free_unpacked(&p->base, NULL);

    Plexus__ChildFailure *cf = (Plexus__ChildFailure *)parse_ok(
        &plexus__child_failure__descriptor,
        "{\"timeMs\":\"-9223372036854775808\",\"code\":-2147483648,"
        "\"countInWindow\":\"4294967295\"}");
    cr_assert_eq(cf->time_ms, INT64_MIN);
    cr_assert_eq(cf->code, INT32_MIN);
    cr_assert_eq(cf->count_in_window, UINT32_MAX);
    protobuf_c_message_free_unpacked(&cf->base, NULL);
}

Test(tools_pbjson, input_accepts_enum_names_and_numbers) {
    Plexus__MemberEvent *ev = (Plexus__MemberEvent *)parse_ok(
        &plexus__member_event__descriptor, "{\"state\":\"MEMBER_DOWN\",\"from\":6}");
    cr_assert_eq(ev->state, PLEXUS__MEMBER_STATE__MEMBER_DOWN);
    cr_assert_eq(ev->from, PLEXUS__MEMBER_STATE__MEMBER_UNREACHABLE);
    protobuf_c_message_free_unpacked(&ev->base, NULL);
}

Test(tools_pbjson, input_accepts_padded_unpadded_and_url_safe_base64) {
    static const struct {
        const char *text;
        size_t len;
        const char *bytes;
    } cases[] = {
        {"{\"value\":\"AQ==\"}", 1, "\x01"},         {"{\"value\":\"AQ\"}", 1, "\x01"},
        {"{\"value\":\"AAH/\"}", 3, "\x00\x01\xff"}, {"{\"value\":\"AAH_\"}", 3, "\x00\x01\xff"},
        {"{\"value\":\"+/8=\"}", 2, "\xfb\xff"},     {"{\"value\":\"\"}", 0, ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Plexus__Kv__Put *p =
            (Plexus__Kv__Put *)parse_ok(&plexus__kv__put__descriptor, cases[i].text);
        cr_assert_eq(p->value.len, cases[i].len, "%s", cases[i].text);
        cr_assert(cases[i].len == 0 || memcmp(p->value.data, cases[i].bytes, cases[i].len) == 0,
                  "%s", cases[i].text);
        protobuf_c_message_free_unpacked(&p->base, NULL);
    }
}

Test(tools_pbjson, input_accepts_nan_infinity_and_numeric_strings_for_doubles) {
    Plexus__RestartPolicy *p = (Plexus__RestartPolicy *)parse_ok(
        &plexus__restart_policy__descriptor,
        "{\"backoffMultiplier\":\"NaN\",\"backoffJitter\":\"-Infinity\"}");
    cr_assert(isnan(p->backoff_multiplier));
    cr_assert(isinf(p->backoff_jitter) && p->backoff_jitter < 0);
    protobuf_c_message_free_unpacked(&p->base, NULL);
    p = (Plexus__RestartPolicy *)parse_ok(&plexus__restart_policy__descriptor,
                                          "{\"backoffMultiplier\":\"1.5e2\",\"backoffJitter\":3}");
    cr_assert_eq(p->backoff_multiplier, 150.0);
    cr_assert_eq(p->backoff_jitter, 3.0);
    protobuf_c_message_free_unpacked(&p->base, NULL);
}

Test(tools_pbjson, null_leaves_a_field_at_its_default) {
    Plexus__Frame *f = (Plexus__Frame *)parse_ok(&plexus__frame__descriptor,
                                                 "{\"auth\":null,\"batch\":{\"envelopes\":null}}");
    cr_assert_eq(f->body_case, PLEXUS__FRAME__BODY_BATCH);
    cr_assert_eq(f->batch->n_envelopes, 0);
    protobuf_c_message_free_unpacked(&f->base, NULL);
}

Test(tools_pbjson, from_json_takes_a_jansson_value_and_leaves_it_alone) {
    json_t *in = json_pack("{s:s, s:[s,s]}", "name", "n", "roles", "a", "b");
    ProtobufCMessage *m = NULL;
    cr_assert_eq(pxj_from_json(&plexus__node_info__descriptor, in, &m, NULL, 0), PX_OK);
    Plexus__NodeInfo *ni = (Plexus__NodeInfo *)m;
    cr_assert_eq(ni->n_roles, 2);
    cr_assert_str_eq(ni->roles[1], "b");
    cr_assert_eq(in->refcount, 1);
    protobuf_c_message_free_unpacked(m, NULL);
    json_decref(in);
}

/* ---- refused input ---- */

Test(tools_pbjson, unknown_fields_are_refused) {
    expect_error(&plexus__kv__put__descriptor, "{\"key\":\"a\",\"bogus\":1}",
                 "bogus: no such field in plexus.kv.Put");
    expect_error(&plexus__spawn_request__descriptor, "{\"spec\":{\"policy\":{\"backoff\":1}}}",
                 "spec.policy.backoff: no such field in plexus.RestartPolicy");
}

Test(tools_pbjson, wrong_json_types_are_refused) {
    expect_error(&plexus__kv__put__descriptor, "{\"key\":5}",
                 "key: expected a string, got an integer");
    expect_error(&plexus__kv__value__descriptor, "{\"found\":\"true\"}",
                 "found: expected true or false, got a string");
    expect_error(&plexus__kv__pong__descriptor, "{\"served\":true}",
                 "served: expected an integer, got true");
    expect_error(&plexus__node_info__descriptor, "{\"roles\":\"kv\"}",
                 "roles: expected an array, got a string");
    expect_error(&plexus__node_info__descriptor, "{\"roles\":[\"a\",3]}",
                 "roles[1]: expected a string, got an integer");
    expect_error(&plexus__node_info__descriptor, "{\"roles\":[\"a\",null]}",
                 "roles[1]: null is not allowed in a repeated field");
    expect_error(&plexus__frame__descriptor, "{\"batch\":[]}",
                 "batch: expected an object, got an array");
    expect_error(&plexus__restart_policy__descriptor, "{\"backoffJitter\":\"inf\"}",
                 "backoffJitter: expected a number, got \"inf\"");
    expect_error(&plexus__kv__put__descriptor, "{\"value\":7}",
                 "value: expected a base64 string, got an integer");
}

Test(tools_pbjson, errors_deep_inside_name_the_whole_path) {
    expect_error(&plexus__frame__descriptor,
                 "{\"batch\":{\"envelopes\":[{},{\"sysop\":-1}]}}",
                 "batch.envelopes[1].sysop: out of range for uint32");
    expect_error(&plexus__child_failure__descriptor,
                 "{\"cause\":{\"cause\":{\"child\":{\"node\":-1}}}}",
                 "cause.cause.child.node: out of range for uint32");
}

Test(tools_pbjson, bad_base64_is_refused) {
    expect_error(&plexus__kv__put__descriptor, "{\"value\":\"!!!!\"}", "value: bad base64");
    expect_error(&plexus__kv__put__descriptor, "{\"value\":\"AQ=\"}", "value: bad base64 padding");
    expect_error(&plexus__kv__put__descriptor, "{\"value\":\"A\"}", "value: bad base64");
    expect_error(&plexus__kv__put__descriptor, "{\"value\":\"AR==\"}", "value: bad base64");
    expect_error(&plexus__kv__put__descriptor, "{\"value\":\"A+_B\"}", "value: bad base64");
}

Test(tools_pbjson, integers_out_of_range_or_not_whole_are_refused) {
    expect_error(&plexus__kv__pong__descriptor, "{\"served\":\"18446744073709551616\"}",
                 "served: out of range for uint64");
    expect_error(&plexus__kv__pong__descriptor, "{\"served\":\"99999999999999999999999\"}",
                 "served: out of range for uint64");
    expect_error(&plexus__kv__pong__descriptor, "{\"served\":-1}",
                 "served: out of range for uint64");
    expect_error(&plexus__kv__pong__descriptor, "{\"served\":1.5}",
                 "served: expected an integer, got a fraction");
    expect_error(&plexus__kv__pong__descriptor, "{\"served\":\"1.0\"}",
                 "served: expected an integer, got \"1.0\"");
    expect_error(&plexus__kv__pong__descriptor, "{\"served\":\"\"}",
                 "served: expected an integer, got \"\"");
    expect_error(&plexus__kv__pong__descriptor, "{\"served\":\" 1\"}",
                 "served: expected an integer, got \" 1\"");
    expect_error(&plexus__kv__pong__descriptor, "{\"served\":1e30}",
                 "served: out of range for uint64");
    expect_error(&plexus__admin__actors_req__descriptor, "{\"limit\":-1}",
                 "limit: out of range for uint32");
    expect_error(&plexus__admin__actors_req__descriptor, "{\"limit\":4294967296}",
                 "limit: out of range for uint32");
    expect_error(&plexus__terminated__descriptor, "{\"code\":2147483648}",
                 "code: out of range for int32");
    expect_error(&plexus__terminated__descriptor, "{\"code\":\"-2147483649\"}",
                 "code: out of range for int32");
    expect_error(&plexus__child_failure__descriptor, "{\"timeMs\":\"-9223372036854775809\"}",
                 "timeMs: out of range for int64");
    expect_error(&plexus__child_failure__descriptor, "{\"timeMs\":\"9223372036854775808\"}",
                 "timeMs: out of range for int64");
}

Test(tools_pbjson, unknown_enum_names_are_refused) {
    expect_error(&plexus__handshake__descriptor, "{\"refuse\":{\"reason\":\"NOPE\"}}",
                 "refuse.reason: unknown value \"NOPE\" of enum plexus.Refuse.Reason");
    expect_error(
        &plexus__member_event__descriptor, "{\"state\":\"plexus__member_state__member_up\"}",
        "state: unknown value \"plexus__member_state__member_up\" of enum plexus.MemberState");
    expect_error(&plexus__member_event__descriptor, "{\"state\":4294967295}",
                 "state: out of range for int32");
}

Test(tools_pbjson, both_spellings_of_one_field_are_refused) {
    expect_error(&plexus__hello__descriptor, "{\"node_name\":\"a\",\"nodeName\":\"b\"}",
                 "nodeName: given twice (also as \"node_name\")");
    expect_error(&plexus__hello__descriptor, "{\"nodeName\":\"a\",\"node_name\":\"b\"}",
                 "nodeName: given twice (also as \"node_name\")");
}

Test(tools_pbjson, a_key_given_twice_is_invalid_json) {
    char err[256] = "";
    ProtobufCMessage *m = NULL;
    cr_assert_eq(pxj_from_text(&plexus__kv__put__descriptor, "{\"key\":\"a\",\"key\":\"b\"}", &m,
                               err, sizeof err),
                 PX_EINVAL);
    cr_assert_null(m);
    cr_assert(strstr(err, "duplicate object key") != NULL, "%s", err);
}

Test(tools_pbjson, two_members_of_one_oneof_are_refused) {
    expect_error(&plexus__frame__descriptor, "{\"auth\":{},\"batch\":{}}",
                 "batch: only one member of a oneof may be set, and auth is");
    expect_error(&plexus__admin__admin_request__descriptor,
                 "{\"id\":1,\"spawn\":{\"behavior\":\"b\"},\"stop\":{\"target\":\"t\"}}",
                 "stop: only one member of a oneof may be set, and spawn is");
}

Test(tools_pbjson, nesting_deeper_than_the_limit_is_refused) {
    /* PXJ_MAX_DEPTH + 1 ChildFailure objects, each the cause of the last */
    char text[1024] = "";
    for (int i = 0; i <= PXJ_MAX_DEPTH; i++) {
        strcat(text, i == 0 ? "{" : "\"cause\":{");
    }
    for (int i = 0; i <= PXJ_MAX_DEPTH; i++) {
        strcat(text, "}");
    }
    char err[512] = "";
    ProtobufCMessage *m = NULL;
    cr_assert_eq(pxj_from_text(&plexus__child_failure__descriptor, text, &m, err, sizeof err),
                 PX_EINVAL);
    cr_assert_null(m);
    cr_assert(strstr(err, "cause.cause.") == err, "%s", err);
    cr_assert(strstr(err, ": messages nested deeper than 32") != NULL, "%s", err);

    /* one level less is fine */
    text[strlen("{")] = '\0';
    for (int i = 1; i < PXJ_MAX_DEPTH; i++) {
        strcat(text, "\"cause\":{");
    }
    for (int i = 0; i < PXJ_MAX_DEPTH; i++) {
        strcat(text, "}");
    }
    m = parse_ok(&plexus__child_failure__descriptor, text);
    protobuf_c_message_free_unpacked(m, NULL);
}

Test(tools_pbjson, output_of_a_message_nested_too_deep_is_null) {
    Plexus__ChildFailure chain[PXJ_MAX_DEPTH + 1];
    for (int i = 0; i <= PXJ_MAX_DEPTH; i++) {
        chain[i] = (Plexus__ChildFailure)PLEXUS__CHILD_FAILURE__INIT;
        chain[i].cause = i < PXJ_MAX_DEPTH ? &chain[i + 1] : NULL;
    }
    cr_assert_null(pxj_to_json(&chain[0].base, 0));
    cr_assert_null(pxj_to_text(&chain[0].base, 0));
    char *text = pxj_to_text(&chain[1].base, 0);
    cr_assert_not_null(text);
    free(text);
}

Test(tools_pbjson, a_top_level_that_is_not_an_object_is_refused) {
    expect_error(&plexus__kv__put__descriptor, "[1]", "expected a JSON object, got an array");
    expect_error(&plexus__kv__put__descriptor, "42", "expected a JSON object, got an integer");
    expect_error(&plexus__kv__put__descriptor, "null", "expected a JSON object, got null");
}

Test(tools_pbjson, invalid_json_text_is_refused_with_line_and_column) {
    char err[256] = "";
    ProtobufCMessage *m = NULL;
    cr_assert_eq(
        pxj_from_text(&plexus__kv__put__descriptor, "{\"key\":\n  \"a\",}", &m, err, sizeof err),
        PX_EINVAL);
    cr_assert_null(m);
    cr_assert(strncmp(err, "invalid JSON at line 2 column ",
                      strlen("invalid JSON at line 2 column ")) == 0,
              "%s", err);
    cr_assert_eq(pxj_from_text(&plexus__kv__put__descriptor, "", &m, err, sizeof err), PX_EINVAL);
    cr_assert_eq(pxj_from_text(&plexus__kv__put__descriptor, NULL, &m, err, sizeof err), PX_EINVAL);
}

Test(tools_pbjson, strings_with_a_nul_character_are_refused) {
    json_t *in = json_object();
    json_object_set_new(in, "key", json_stringn("a\0b", 3));
    char err[256] = "";
    ProtobufCMessage *m = NULL;
    cr_assert_eq(pxj_from_json(&plexus__kv__put__descriptor, in, &m, err, sizeof err), PX_EINVAL);
    cr_assert_null(m);
    cr_assert_str_eq(err, "key: a string field cannot hold a NUL character");
    json_decref(in);
}

Test(tools_pbjson, a_short_or_missing_error_buffer_is_respected) {
    char err[8];
    memset(err, 'x', sizeof err);
    ProtobufCMessage *m = NULL;
    cr_assert_eq(pxj_from_text(&plexus__kv__put__descriptor, "{\"bogus\":1}", &m, err, sizeof err),
                 PX_EINVAL);
    cr_assert_str_eq(err, "bogus: ");
    cr_assert_eq(pxj_from_text(&plexus__kv__put__descriptor, "{\"bogus\":1}", &m, NULL, 0),
                 PX_EINVAL);
    cr_assert_eq(pxj_from_text(&plexus__kv__put__descriptor, "{", &m, NULL, 0), PX_EINVAL);
}

Test(tools_pbjson, missing_arguments_are_refused) {
    ProtobufCMessage *m = NULL;
    json_t *in = json_object();
    cr_assert_eq(pxj_from_json(NULL, in, &m, NULL, 0), PX_EINVAL);
    cr_assert_eq(pxj_from_json(&plexus__kv__put__descriptor, NULL, &m, NULL, 0), PX_EINVAL);
    cr_assert_eq(pxj_from_json(&plexus__kv__put__descriptor, in, NULL, NULL, 0), PX_EINVAL);
    cr_assert_null(m);
    cr_assert_null(pxj_to_json(NULL, 0));
    cr_assert_null(pxj_to_text(NULL, 0));
    json_decref(in);
}

/* An error late in a message with every kind of owned member already
 * filled: free_unpacked of the half-built message must free exactly what
 * was allocated (ASan and LeakSanitizer check). */
Test(tools_pbjson, an_error_after_many_allocations_frees_them_all) {
    expect_error(
        &plexus__frame__descriptor,
        "{\"batch\":{\"envelopes\":[{\"type\":\"t\",\"payload\":\"AAAA\",\"toActor\":\"1\"},"
        "{\"type\":\"u\",\"payload\":\"AQ\",\"fromActor\":\"2\",\"tag\":\"x\"}]}}",
        "batch.envelopes[1].tag: expected an integer, got \"x\"");
    expect_error(
        &plexus__node_info__descriptor,
        "{\"name\":\"n\",\"identityPk\":\"AAAA\",\"roles\":[\"a\",\"b\"],\"behaviors\":[\"c\",1]}",
        "behaviors[1]: expected a string, got an integer");
    expect_error(&plexus__spawn_request__descriptor,
                 "{\"spec\":{\"id\":\"i\",\"arg\":\"AQ\",\"policy\":{\"maxRestarts\":1}},"
                 "\"globalName\":\"g\","
                 "\"parent\":{\"node\":1},\"proxy\":{\"bogus\":0}}",
                 "proxy.bogus: no such field in plexus.ActorRef");
}

/* ---- allocation failure (jansson's allocations) ---- */

static int allocs_left;

static void *failing_malloc(size_t n) {
    if (allocs_left-- <= 0) {
        return NULL;
    }
    return malloc(n);
}

Test(tools_pbjson, output_fails_cleanly_whenever_jansson_runs_out_of_memory) {
    char *roles[] = {"kv", "edge"};
    Plexus__NodeInfo ni = PLEXUS__NODE_INFO__INIT;
    ni.name = "n1";
    ni.identity_pk = (ProtobufCBinaryData){2, (uint8_t *)"ab"};
    ni.n_roles = 2;
    ni.roles = roles;
    ni.actors = 3;
    char *want = pxj_to_text(&ni.base, 0);
    cr_assert_not_null(want);
    json_set_alloc_funcs(failing_malloc, free);
    bool done = false;
    for (int n = 0; n < 1000 && !done; n++) {
        allocs_left = n;
        json_t *j = pxj_to_json(&ni.base, 0);
        if (j != NULL) {
            char *got = pxj_to_text(&ni.base, 0);
            allocs_left = 1000;
            if (got != NULL) {
                cr_assert_str_eq(got, want);
                done = true;
            }
            free(got);
            json_decref(j);
        }
    }
    json_set_alloc_funcs(malloc, free);
    cr_assert(done);
    free(want);
}

Test(tools_pbjson, input_fails_cleanly_whenever_jansson_runs_out_of_memory) {
    const char *text =
        "{\"batch\":{\"envelopes\":[{\"type\":\"t\",\"toActor\":\"1\"},{\"payload\":\"AQ\"}]}}";
    json_set_alloc_funcs(failing_malloc, free);
    bool done = false;
    int out_of_memory = 0;
    for (int n = 0; n < 1000 && !done; n++) {
        allocs_left = n;
        char err[256] = "";
        ProtobufCMessage *m = NULL;
        px_err rc = pxj_from_text(&plexus__frame__descriptor, text, &m, err, sizeof err);
        /* jansson reports some failed allocations of its lexer as syntax
         * errors, so PX_EINVAL is possible too */
        cr_assert(rc == PX_OK || rc == PX_ENOMEM || rc == PX_EINVAL, "%d %s", rc, err);
        if (rc == PX_ENOMEM) {
            cr_assert_str_eq(err, "out of memory");
            out_of_memory++;
        }
        if (rc != PX_OK) {
            cr_assert_null(m);
        } else {
            done = true;
            protobuf_c_message_free_unpacked(m, NULL);
        }
    }
    json_set_alloc_funcs(malloc, free);
    cr_assert(done);
    cr_assert_gt(out_of_memory, 0);
}
