/*
 * log.c — the default stderr sink and level names. Formatting happens in
 * px_log (system.c) only when the level passes, so disabled levels cost one
 * comparison.
 */
#include <stdio.h>
#include <strings.h>
#include <time.h>

#include <plexus/log.h>

static const char *const level_names[] = {"TRACE", "DEBUG", "INFO", "WARN",
                                          "ERROR", "CRIT",  "OFF"};

const char *px_log_level_name(px_log_level level) {
    if ((unsigned)level > PX_LOG_OFF) {
        return "?";
    }
    return level_names[level];
}

px_err px_log_level_parse(const char *s, px_log_level *out) {
    if (s == NULL || out == NULL) {
        return PX_EINVAL;
    }
    for (int i = 0; i <= PX_LOG_OFF; i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (px_log_level)i;
            return PX_OK;
        }
    }
    return PX_EINVAL;
}

void px_log_stderr(void *arg, px_log_level level, const char *node,
                   const char *line) {
    (void)arg;
    struct timespec ts;
    struct tm tm;
    char when[32];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    /* One fprintf per line: stdio locks the stream, so lines never interleave. */
    fprintf(stderr, "%s.%03ldZ %-5s %s: %s\n", when, ts.tv_nsec / 1000000,
            px_log_level_name(level), node, line);
}
