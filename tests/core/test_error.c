/* Tests for plexus/error.h: the error table, px_strerror and px_errname. */
#include "helpers.h"

static const struct {
    px_err code;
    const char *name;
} all_codes[] = {
#define X_(name, value, text) {name, #name},
    PX_ERR_MAP(X_)
#undef X_
};
#define N_CODES (sizeof all_codes / sizeof all_codes[0])

Test(core_error, strerror_is_non_null_and_distinct_for_every_code, .timeout = 10) {
    cr_assert_eq(N_CODES, 24, "the table has 24 codes");
    for (size_t i = 0; i < N_CODES; i++) {
        const char *s = px_strerror(all_codes[i].code);
        cr_assert_not_null(s, "px_strerror(%s) is NULL", all_codes[i].name);
        cr_assert_gt(strlen(s), 0, "px_strerror(%s) is empty", all_codes[i].name);
        for (size_t j = 0; j < i; j++) {
            cr_assert_str_neq(s, px_strerror(all_codes[j].code), "%s and %s share a string",
                              all_codes[i].name, all_codes[j].name);
        }
    }
}

Test(core_error, strerror_matches_the_table_text, .timeout = 10) {
#define X_(name, value, text) cr_assert_str_eq(px_strerror(name), text);
    PX_ERR_MAP(X_)
#undef X_
}

Test(core_error, strerror_of_a_value_outside_the_table_is_unknown_error, .timeout = 10) {
    cr_assert_str_eq(px_strerror((px_err)-9999), "unknown error");
    cr_assert_str_eq(px_strerror((px_err)1), "unknown error");
    cr_assert_str_eq(px_strerror((px_err)-24), "unknown error");
}

Test(core_error, strerror_returns_the_same_static_string_each_time, .timeout = 10) {
    for (size_t i = 0; i < N_CODES; i++) {
        cr_assert_eq(px_strerror(all_codes[i].code), px_strerror(all_codes[i].code));
    }
}

Test(core_error, errname_is_the_enumerator_name_for_every_code, .timeout = 10) {
    for (size_t i = 0; i < N_CODES; i++) {
        const char *n = px_errname(all_codes[i].code);
        cr_assert_not_null(n, "px_errname(%d) is NULL", (int)all_codes[i].code);
        cr_assert_str_eq(n, all_codes[i].name);
    }
}

Test(core_error, errname_of_a_value_outside_the_table_is_not_null, .timeout = 10) {
    const char *n = px_errname((px_err)-9999);
    cr_assert_not_null(n);
    for (size_t i = 0; i < N_CODES; i++) {
        cr_assert_str_neq(n, all_codes[i].name);
    }
}
