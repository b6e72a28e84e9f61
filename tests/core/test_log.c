/* Tests for plexus/log.h and the system's logging: levels, parsing, sinks. */
#include "helpers.h"

/* A system at `level` whose log lines go to cap (node name `node` unless
 * NULL). */
static px_system *log_system(pxt_logcap *cap, px_log_level level, const char *node) {
    pxt_logcap_init(cap);
    px_config cfg;
    pxt_config(&cfg);
    if (node) {
        cfg.node_name = node;
    }
    cfg.log_level = level;
    cfg.log_sink = pxt_logcap_sink;
    cfg.log_arg = cap;
    return pxt_system_with(&cfg);
}

Test(core_log, level_names_are_short_upper_case_strings, .timeout = 10) {
    const char *want[] = {"TRACE", "DEBUG", "INFO", "WARN", "ERROR", "CRIT", "OFF"};
    for (int l = PX_LOG_TRACE; l <= PX_LOG_OFF; l++) {
        const char *n = px_log_level_name((px_log_level)l);
        cr_assert_not_null(n);
        cr_assert_str_eq(n, want[l]);
    }
}

Test(core_log, parse_accepts_every_level_name_case_insensitively, .timeout = 10) {
    const char *in[] = {"trace", "DEBUG", "Info", "warn", "ERROR", "crit", "Off"};
    for (int l = PX_LOG_TRACE; l <= PX_LOG_OFF; l++) {
        px_log_level out = (px_log_level)-1;
        cr_assert_eq(px_log_level_parse(in[l], &out), PX_OK, "parse(%s)", in[l]);
        cr_assert_eq(out, (px_log_level)l, "parse(%s) gave %d", in[l], (int)out);
    }
}

Test(core_log, parse_rejects_anything_else, .timeout = 10) {
    const char *bad[] = {"", "warning", "inf", "trace ", "7", "verbose"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        px_log_level out = PX_LOG_INFO;
        cr_assert_eq(px_log_level_parse(bad[i], &out), PX_EINVAL, "parse(\"%s\")", bad[i]);
    }
}

Test(core_log, system_sink_gets_lines_at_or_above_the_threshold_only, .timeout = 10) {
    pxt_logcap cap;
    px_system *sys = log_system(&cap, PX_LOG_WARN, "lognode");

    cr_assert(px_log_enabled(sys, PX_LOG_WARN));
    cr_assert(px_log_enabled(sys, PX_LOG_CRIT));
    cr_assert_not(px_log_enabled(sys, PX_LOG_INFO));
    cr_assert_not(px_log_enabled(sys, PX_LOG_TRACE));

    int before = pxt_logcap_lines(&cap);
    px_log(sys, PX_LOG_INFO, "below the threshold %d", 1);
    cr_assert_eq(pxt_logcap_lines(&cap), before, "an INFO line passed a WARN threshold");
    px_log(sys, PX_LOG_WARN, "hello %s %d", "sink", 42);
    cr_assert_eq(pxt_logcap_lines(&cap), before + 1);
    pthread_mutex_lock(&cap.mu);
    cr_assert_str_eq(cap.last, "hello sink 42", "the sink gets the formatted line");
    cr_assert_str_eq(cap.node, "lognode", "the sink gets the node name");
    pthread_mutex_unlock(&cap.mu);
    px_system_free(sys);
}

Test(core_log, the_threshold_can_change_while_the_system_runs, .timeout = 10) {
    pxt_logcap cap;
    px_system *sys = log_system(&cap, PX_LOG_WARN, NULL);
    int before = pxt_logcap_lines(&cap);
    px_log(sys, PX_LOG_INFO, "hidden");
    cr_assert_eq(pxt_logcap_lines(&cap), before);
    cr_assert_eq(px_system_set_log_level(sys, PX_LOG_DEBUG), PX_OK);
    cr_assert(px_log_enabled(sys, PX_LOG_DEBUG));
    px_log(sys, PX_LOG_INFO, "shown now");
    cr_assert_eq(pxt_logcap_lines(&cap), before + 1);
    cr_assert_eq(px_system_set_log_level(sys, PX_LOG_OFF), PX_OK);
    cr_assert_not(px_log_enabled(sys, PX_LOG_CRIT));
    cr_assert_eq(px_system_set_log_level(sys, (px_log_level)7), PX_EINVAL);
    cr_assert_eq(px_system_set_log_level(NULL, PX_LOG_INFO), PX_EINVAL);
    cr_assert_not(px_log_enabled(sys, PX_LOG_CRIT), "a refused level changes nothing");
    px_system_free(sys);
}

Test(core_log, level_off_silences_everything, .timeout = 10) {
    pxt_logcap cap;
    px_system *sys = log_system(&cap, PX_LOG_OFF, NULL);
    px_log(sys, PX_LOG_CRIT, "not shown");
    cr_assert_not(px_log_enabled(sys, PX_LOG_CRIT));
    px_system_free(sys);
    cr_assert_eq(pxt_logcap_lines(&cap), 0);
}

Test(core_log, trace_level_logs_actor_lifecycle_events, .timeout = 10) {
    pxt_logcap cap;
    px_system *sys = log_system(&cap, PX_LOG_TRACE, NULL);
    int before = pxt_logcap_lines(&cap);
    pxt_rec *r = pxt_rec_new();
    px_ref a = pxt_rec_spawn(sys, r, NULL);
    PXT_AWAIT(pxt_logcap_lines(&cap) > before, 5000); /* the spawn line */
    int after_spawn = pxt_logcap_lines(&cap);
    cr_assert_eq(px_stop(sys, a), PX_OK);
    PXT_AWAIT(pxt_logcap_lines(&cap) > after_spawn, 5000); /* the stop line */
    px_system_free(sys);
    free(r);
}

Test(core_log, default_level_info_hides_trace_lines, .timeout = 10) {
    pxt_logcap cap;
    px_system *sys = log_system(&cap, PX_LOG_INFO, NULL);
    pxt_rec *r = pxt_rec_new();
    px_ref a = pxt_rec_spawn(sys, r, NULL);
    pxt_send_u64(sys, a, 1, 1);
    PXT_AWAIT(pxt_rec_count(r) == 1, 5000);
    pthread_mutex_lock(&cap.mu);
    int trace = cap.by_level[PX_LOG_TRACE], debug = cap.by_level[PX_LOG_DEBUG];
    pthread_mutex_unlock(&cap.mu);
    cr_assert_eq(trace, 0);
    cr_assert_eq(debug, 0);
    px_system_free(sys);
    free(r);
}
