/*
 * plexus/alarm.h — one-shot alarms whose callback runs on nng's task
 * threads, like an nng_sleep_aio completion, without nng 1.5's timer cost.
 *
 * Why not nng_sleep_aio: the timer thread of nng 1.5 (Debian 12's libnng1
 * 1.5.2) completes a sleep only once its millisecond deadline is strictly in
 * the past, and loops without sleeping through that last millisecond. Every
 * sleep — a zero one included — costs up to a millisecond of a CPU and ends
 * up to a millisecond late: a transport ticking every 5 ms spent a fifth of
 * a core there. Alarms wait on one condition variable instead (one thread
 * per process, started with the first alarm and joined with the last) and
 * hand the callback to nng's task threads through an aio of their own.
 */
#ifndef PLEXUS_ALARM_H
#define PLEXUS_ALARM_H

#include <stdint.h>

#include <plexus/error.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct px_alarm px_alarm;
/* Runs on an nng task thread (never two at once for one alarm); must not
 * block for long — other aio callbacks share those threads. */
typedef void (*px_alarm_fn)(void *arg);

/* A disarmed alarm that will call fn(arg). Caller owns *out (release with
 * px_alarm_free); *out is untouched on failure. PX_ENOMEM, PX_EINVAL (fn or
 * out NULL). Thread-safe. */
px_err px_alarm_new(px_alarm **out, px_alarm_fn fn, void *arg);

/* (Re)arms a: fn runs once, not before ms milliseconds from now (and about
 * a millisecond after at most, on an idle machine); 0 = at once, on a task
 * thread. A pending setting is replaced, earlier or later. Setting it again
 * before a fired callback has started runs fn once for both. Any thread,
 * fn included; ignored once px_alarm_stop began. Never fails: the alarm
 * holds its place from px_alarm_new. */
void px_alarm_set(px_alarm *a, uint32_t ms);

/* Disarms a for good and waits for a callback in progress. Not from fn. */
void px_alarm_stop(px_alarm *a);

/* px_alarm_stop, then frees a (takes ownership). NULL is fine. Not from fn. */
void px_alarm_free(px_alarm *a);

#ifdef __cplusplus
}
#endif

#endif
