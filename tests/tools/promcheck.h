/*
 * tests/tools/promcheck.h — a strict checker of the Prometheus text
 * exposition format, version 0.0.4, for the tests of plexusd's /metrics
 * (test_httpd.c) and of plexctl (test_plexctl.c). Plain C, no Criterion:
 * the tests decide what to assert.
 *
 * What it checks, beyond what Prometheus' own parser accepts:
 *  - every family has exactly one # HELP and one # TYPE line, both before
 *    its first sample, and the type is counter, gauge, histogram, summary
 *    or untyped;
 *  - a family's lines (HELP, TYPE, samples) are contiguous;
 *  - layout is canonical: no blank-padding, one space between the series,
 *    its value and the optional timestamp, labels right after the name;
 *  - names and label names follow the grammar (label names starting with
 *    "__" are reserved), label values use only \\, \" and \n escapes and
 *    are valid UTF-8; no label name twice in a series, no series twice;
 *  - values are Go floats in decimal (or NaN, +Inf, -Inf), timestamps
 *    int64 milliseconds;
 *  - a counter's samples are all named like the family or all like
 *    family_total, never negative;
 *  - a histogram's series have _bucket samples with le in increasing
 *    order and non-decreasing counts, a le="+Inf" bucket equal to _count,
 *    and _sum and _count; a summary's have quantile labels in increasing
 *    order within [0, 1], and _sum and _count;
 *  - the text ends with a newline (an empty text is fine: no samples).
 */
#ifndef PXT_PROMCHECK_H
#define PXT_PROMCHECK_H

#include <stddef.h>

/* Checks text (NUL-terminated). Returns the number of samples (>= 0), or
 * -1 with "line N: reason" in err (errlen bytes, may be 0). Borrows text;
 * not thread-safe only in that err is written. */
int promcheck(const char *text, char *err, size_t errlen);

/* The value of one series of text: `series` is a name with optional
 * labels in exposition syntax, in any order ("plexus_actors_live",
 * "plexus_link_state{peer=\"b\",state=\"up\"}"). The series must match
 * exactly: same name, same label set. NAN if absent or if series does not
 * parse. Does not check the rest of text (use promcheck for that). */
double promcheck_value(const char *text, const char *series);

#endif
