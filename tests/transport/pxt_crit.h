/*
 * tests/transport/pxt_crit.h — the Criterion side of driving node processes
 * (tests/transport/test_multiproc.c, tests/cluster/test_scenarios.c): a
 * failure that shows the end of the node's log, a bounded poll of a
 * condition, a command and its answer, a clean quit. pxt_util.h is the part
 * that asserts nothing.
 *
 * Call these from the test's own thread only (Criterion asserts there).
 */
#ifndef PXT_CRIT_H
#define PXT_CRIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include <criterion/criterion.h>

#include "pxt_util.h"

/* Fails the test with a message and the tail of the log at log_path of the
 * node called who. */
#define PXT_FAIL_LOG(who, log_path, ...)                                                      \
    do {                                                                                      \
        char msg_[1024], tail_[2048];                                                         \
        snprintf(msg_, sizeof msg_, __VA_ARGS__);                                             \
        pxt_file_tail((log_path), tail_, sizeof tail_);                                       \
        cr_assert_fail("%s: %s\n--- end of %s ---\n%s", (who), msg_, (log_path), tail_);      \
    } while (0)

/* Polls cond (which may talk to nodes) every 5 ms until it holds, or fails
 * the test after ms with the message given (printf-style, may be empty). */
#define PXT_AWAIT(cond, ms, ...)                                                              \
    do {                                                                                      \
        int64_t dl_ = pxt_mono_ms() + (ms);                                                   \
        while (!(cond)) {                                                                     \
            if (pxt_mono_ms() > dl_) {                                                        \
                char why_[1024];                                                              \
                snprintf(why_, sizeof why_, " " __VA_ARGS__);                                 \
                cr_assert_fail("not within %d ms:%s (%s)", (int)(ms), why_, #cond);           \
            }                                                                                 \
            pxt_nap_ms(5);                                                                    \
        }                                                                                     \
    } while (0)

void pxt_nap_ms(int ms);

/* Sends the command line fmt... to p (the node who, logging to log_path)
 * and, unless prefix is NULL, waits up to timeout_ms for its answer: the
 * first line starting with prefix, into line. Fails the test otherwise. */
void pxt_cmd(pxt_proc *p, const char *who, const char *log_path, int timeout_ms,
             const char *prefix, char *line, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 8, 9)));

/* Stops p with "quit" (pxt_proc_stop, grace_ms) and fails the test unless it
 * exited 0 by itself (under ASan that includes a clean leak check). */
void pxt_quit(pxt_proc *p, const char *who, const char *log_path, int grace_ms);


#endif
