/* Tests for the registries: local names, behaviors by name, proto types. */
#include "helpers.h"

#include "test.pb-c.h"

/* --- names ------------------------------------------------------------- */

Test(core_registry, register_whereis_and_unregister_a_name, .timeout = 10) {
    px_system *sys = pxt_system();
    pxt_rec *r = pxt_rec_new();
    px_ref a = pxt_rec_spawn(sys, r, NULL);
    px_ref w = PX_REF_NIL;
    cr_assert_eq(px_whereis(sys, "svc", &w), PX_ENOENT);
    cr_assert_eq(px_register(sys, "svc", a), PX_OK);
    cr_assert_eq(px_whereis(sys, "svc", &w), PX_OK);
    cr_assert(px_ref_eq(w, a));
    cr_assert_eq(px_unregister(sys, "svc"), PX_OK);
    cr_assert_eq(px_whereis(sys, "svc", &w), PX_ENOENT);
    cr_assert_eq(px_unregister(sys, "svc"), PX_ENOENT);
    cr_assert(px_is_alive(sys, a), "unregistering does not stop the actor");
    /* The actor may take a name again after unregistering. */
    cr_assert_eq(px_register(sys, "svc2", a), PX_OK);
    px_system_free(sys);
    free(r);
}

Test(core_registry, register_of_a_taken_name_is_eexist, .timeout = 10) {
    px_system *sys = pxt_system();
    pxt_rec *r1 = pxt_rec_new(), *r2 = pxt_rec_new();
    px_ref a = pxt_rec_spawn(sys, r1, NULL);
    px_ref b = pxt_rec_spawn(sys, r2, NULL);
    cr_assert_eq(px_register(sys, "taken", a), PX_OK);
    cr_assert_eq(px_register(sys, "taken", b), PX_EEXIST);
    cr_assert_eq(px_register(sys, "taken", a), PX_EEXIST);
    px_ref w = PX_REF_NIL;
    cr_assert_eq(px_whereis(sys, "taken", &w), PX_OK);
    cr_assert(px_ref_eq(w, a), "the first owner keeps the name");
    px_system_free(sys);
    free(r1);
    free(r2);
}

Test(core_registry, an_actor_has_at_most_one_name, .timeout = 10) {
    px_system *sys = pxt_system();
    pxt_rec *r = pxt_rec_new();
    px_ref a = pxt_rec_spawn(sys, r, NULL);
    cr_assert_eq(px_register(sys, "first", a), PX_OK);
    cr_assert_eq(px_register(sys, "second", a), PX_EEXIST);
    px_ref w = PX_REF_NIL;
    cr_assert_eq(px_whereis(sys, "second", &w), PX_ENOENT);
    px_system_free(sys);
    free(r);
}

Test(core_registry, register_validates_the_name_length, .timeout = 10) {
    px_system *sys = pxt_system();
    pxt_rec *r = pxt_rec_new();
    px_ref a = pxt_rec_spawn(sys, r, NULL);
    char n127[128], n128[129];
    memset(n127, 'a', 127);
    n127[127] = '\0';
    memset(n128, 'b', 128);
    n128[128] = '\0';
    cr_assert_eq(px_register(sys, "", a), PX_EINVAL);
    cr_assert_eq(px_register(sys, NULL, a), PX_EINVAL);
    cr_assert_eq(px_register(sys, n128, a), PX_EINVAL);
    cr_assert_eq(px_register(sys, n127, a), PX_OK);
    px_ref w = PX_REF_NIL;
    cr_assert_eq(px_whereis(sys, n127, &w), PX_OK);
    cr_assert(px_ref_eq(w, a));
    px_system_free(sys);
    free(r);
}

Test(core_registry, register_of_a_dead_ref_is_edead, .timeout = 10) {
    px_system *sys = pxt_system();
    pxt_rec *r = pxt_rec_new();
    px_ref a = pxt_rec_spawn(sys, r, NULL);
    cr_assert_eq(px_stop(sys, a), PX_OK);
    PXT_AWAIT(!px_is_alive(sys, a), 5000);
    cr_assert_eq(px_register(sys, "late", a), PX_EDEAD);
    px_ref root = px_system_root(sys);
    px_ref never = {root.node, root.node_inc, 0x00ffff00u, 3};
    cr_assert_eq(px_register(sys, "late", never), PX_EDEAD);
    px_ref w = PX_REF_NIL;
    cr_assert_eq(px_whereis(sys, "late", &w), PX_ENOENT);
    px_system_free(sys);
    free(r);
}

Test(core_registry, a_name_is_released_when_its_actor_stops, .timeout = 10) {
    px_system *sys = pxt_system();
    pxt_rec *r1 = pxt_rec_new(), *r2 = pxt_rec_new();
    px_ref a = pxt_rec_spawn(sys, r1, NULL);
    cr_assert_eq(px_register(sys, "worker", a), PX_OK);
    cr_assert_eq(px_stop(sys, a), PX_OK);
    px_ref w = PX_REF_NIL;
    PXT_AWAIT(px_whereis(sys, "worker", &w) == PX_ENOENT, 5000);
    px_ref b = pxt_rec_spawn(sys, r2, NULL);
    cr_assert_eq(px_register(sys, "worker", b), PX_OK, "the name is free again");
    cr_assert_eq(px_whereis(sys, "worker", &w), PX_OK);
    cr_assert(px_ref_eq(w, b));
    px_system_free(sys);
    free(r1);
    free(r2);
}

Test(core_registry, a_name_is_released_when_its_actor_fails, .timeout = 10) {
    px_system *sys = pxt_system();
    pxt_rec *r = pxt_rec_new();
    atomic_store(&r->fail_on_tag, 3);
    px_spawn_opts so = {.name = "fragile"};
    px_ref a = pxt_rec_spawn(sys, r, &so);
    px_ref w = PX_REF_NIL;
    cr_assert_eq(px_whereis(sys, "fragile", &w), PX_OK);
    cr_assert(px_ref_eq(w, a));
    pxt_send_u64(sys, a, 3, 0);
    PXT_AWAIT(px_whereis(sys, "fragile", &w) == PX_ENOENT, 5000);
    px_system_free(sys);
    free(r);
}

Test(core_registry, spawn_with_a_name_registers_it_and_a_taken_name_fails_the_spawn,
     .timeout = 10) {
    px_system *sys = pxt_system();
    pxt_rec *r1 = pxt_rec_new(), *r2 = pxt_rec_new();
    px_spawn_opts so = {.name = "single"};
    px_ref a = pxt_rec_spawn(sys, r1, &so);
    px_ref w = PX_REF_NIL;
    cr_assert_eq(px_whereis(sys, "single", &w), PX_OK);
    cr_assert(px_ref_eq(w, a));
    px_msg *arg = pxt_ptr_msg(r2);
    px_ref b = PX_REF_NIL;
    uint64_t live = pxt_live(sys);
    cr_assert_eq(px_system_spawn(sys, pxt_rec_behavior(), &arg, &so, &b), PX_EEXIST);
    cr_assert_not_null(arg, "the caller keeps the argument on error");
    px_msg_free(arg);
    cr_assert_eq(pxt_live(sys), live, "no actor left behind");
    cr_assert_eq(atomic_load(&r2->stopped), 0);
    px_system_free(sys);
    free(r1);
    free(r2);
}

Test(core_registry, whereis_of_an_unknown_name_is_enoent, .timeout = 10) {
    px_system *sys = pxt_system();
    px_ref w = PX_REF_NIL;
    cr_assert_eq(px_whereis(sys, "nobody", &w), PX_ENOENT);
    cr_assert(px_ref_is_nil(w));
    px_system_free(sys);
}

/* --- behaviors --------------------------------------------------------- */

static atomic_int named_received;
static px_err named_receive(px_ctx *ctx, px_msg *m) {
    (void)ctx;
    atomic_fetch_add(&named_received, (int)px_msg_get_u64(m));
    return PX_OK;
}
static const px_behavior named_b = {.name = "t.named", .receive = named_receive};

Test(core_registry, spawn_by_a_registered_behavior_name, .timeout = 10) {
    px_system *sys = pxt_system();
    cr_assert_null(px_behavior_lookup(sys, "t.named"));
    cr_assert_eq(px_behavior_register(sys, &named_b), PX_OK);
    cr_assert_eq(px_behavior_lookup(sys, "t.named"), &named_b);
    px_ref a = PX_REF_NIL;
    cr_assert_eq(px_system_spawn_named(sys, "t.named", NULL, NULL, &a), PX_OK);
    cr_assert(px_is_alive(sys, a));
    pxt_send_u64(sys, a, 1, 5);
    PXT_AWAIT(atomic_load(&named_received) == 5, 5000);
    px_system_free(sys);
}

Test(core_registry, spawn_by_an_unknown_behavior_name_is_enoent, .timeout = 10) {
    px_system *sys = pxt_system();
    px_msg *arg = pxt_u64(1, 1);
    px_ref a = PX_REF_NIL;
    cr_assert_eq(px_system_spawn_named(sys, "t.nope", &arg, NULL, &a), PX_ENOENT);
    cr_assert_not_null(arg);
    px_msg_free(arg);
    cr_assert(px_ref_is_nil(a));
    cr_assert_eq(pxt_live(sys), 0);
    px_system_free(sys);
}

typedef struct named_spawner {
    atomic_int done, known_err, unknown_err;
    px_ref child;
} named_spawner;
static px_err named_spawner_receive(px_ctx *ctx, px_msg *m) {
    (void)m;
    named_spawner *s = px_state(ctx);
    atomic_store(&s->unknown_err, px_spawn_named(ctx, "t.nope", NULL, NULL, NULL));
    atomic_store(&s->known_err, px_spawn_named(ctx, "t.named", NULL, NULL, &s->child));
    atomic_store(&s->done, 1);
    return PX_OK;
}
static const px_behavior named_spawner_b = {.name = "t.nspawner", .init = pxt_init_ptr_state,
                                            .receive = named_spawner_receive};

Test(core_registry, an_actor_spawns_children_by_behavior_name, .timeout = 10) {
    px_system *sys = pxt_system();
    cr_assert_eq(px_behavior_register(sys, &named_b), PX_OK);
    named_spawner s = {0};
    px_ref p = pxt_spawn(sys, &named_spawner_b, &s, NULL);
    pxt_send_u64(sys, p, 1, 0);
    PXT_AWAIT(atomic_load(&s.done), 5000);
    cr_assert_eq(atomic_load(&s.unknown_err), PX_ENOENT);
    cr_assert_eq(atomic_load(&s.known_err), PX_OK);
    cr_assert(px_is_alive(sys, s.child));
    px_system_free(sys);
}

Test(core_registry, behavior_register_refuses_duplicates_and_invalid_tables, .timeout = 10) {
    static const px_behavior dup = {.name = "t.named", .receive = named_receive};
    static const px_behavior no_name = {.receive = named_receive};
    static const px_behavior no_receive = {.name = "t.norecv"};
    px_system *sys = pxt_system();
    cr_assert_eq(px_behavior_register(sys, &named_b), PX_OK);
    cr_assert_eq(px_behavior_register(sys, &dup), PX_EEXIST);
    cr_assert_eq(px_behavior_lookup(sys, "t.named"), &named_b);
    cr_assert_eq(px_behavior_register(sys, NULL), PX_EINVAL);
    cr_assert_eq(px_behavior_register(sys, &no_name), PX_EINVAL);
    cr_assert_eq(px_behavior_register(sys, &no_receive), PX_EINVAL);
    cr_assert_null(px_behavior_lookup(sys, "t.norecv"));
    px_system_free(sys);
}

/* --- types ------------------------------------------------------------- */

Test(core_registry, type_register_and_lookup_by_full_name, .timeout = 10) {
    px_system *sys = pxt_system();
    cr_assert_null(px_type_lookup(sys, "plexus.test.Ping"));
    cr_assert_eq(px_type_register(sys, &plexus__test__ping__descriptor), PX_OK);
    cr_assert_eq(px_type_lookup(sys, "plexus.test.Ping"), &plexus__test__ping__descriptor);
    cr_assert_null(px_type_lookup(sys, "plexus.test.Pong"));
    cr_assert_null(px_type_lookup(sys, "Ping"), "lookup is by full name");
    cr_assert_eq(px_type_register(sys, &plexus__test__pong__descriptor), PX_OK);
    cr_assert_eq(px_type_lookup(sys, "plexus.test.Pong"), &plexus__test__pong__descriptor);
    px_system_free(sys);
}

Test(core_registry, type_register_twice_is_ok_and_another_descriptor_under_the_name_is_eexist,
     .timeout = 10) {
    px_system *sys = pxt_system();
    cr_assert_eq(px_type_register(sys, &plexus__test__ping__descriptor), PX_OK);
    cr_assert_eq(px_type_register(sys, &plexus__test__ping__descriptor), PX_OK);
    /* A copy of Pong's descriptor renamed to Ping: same name, another desc. */
    static ProtobufCMessageDescriptor fake;
    fake = plexus__test__pong__descriptor;
    fake.name = "plexus.test.Ping";
    cr_assert_eq(px_type_register(sys, &fake), PX_EEXIST);
    cr_assert_eq(px_type_lookup(sys, "plexus.test.Ping"), &plexus__test__ping__descriptor);
    px_system_free(sys);
}
