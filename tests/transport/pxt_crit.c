/*
 * tests/transport/pxt_crit.c — see pxt_crit.h.
 */
#include "pxt_crit.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

void pxt_nap_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

void pxt_cmd(pxt_proc *p, const char *who, const char *log_path, int timeout_ms,
             const char *prefix, char *line, size_t len, const char *fmt, ...) {
    char cmd[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rv = pxt_proc_send(p, "%s", cmd);
    if (rv == 0 && prefix != NULL) {
        rv = pxt_proc_expect(p, prefix, timeout_ms, line, len);
    }
    if (rv != 0) {
        PXT_FAIL_LOG(who, log_path, "command '%s': %s", cmd, strerror(-rv));
    }
}

void pxt_quit(pxt_proc *p, const char *who, const char *log_path, int grace_ms) {
    int64_t t0 = pxt_mono_ms();
    int rv = pxt_proc_stop(p, grace_ms);
    if (rv != 0 || !WIFEXITED(p->status) || WEXITSTATUS(p->status) != 0) {
        PXT_FAIL_LOG(who, log_path, "did not stop cleanly on quit: %s after %lld ms%s",
                     pxt_status_str(p->status), (long long)(pxt_mono_ms() - t0),
                     rv ? " (needed a signal)" : "");
    }
}

