/*
 * tests/transport/pxt_util.h — helpers for the multi-process transport
 * tests (test_multiproc.c driving pxt_node processes):
 *  - child processes that speak lines on stdin/stdout, started with
 *    fork/exec and always reaped (a registry kills what is left);
 *  - free loopback ports, "key=value" lines, refs as text, log greps;
 *  - a man-in-the-middle TCP proxy that parses the stream framing of
 *    transport/src/wire.h and can tamper with or replay one frame.
 *
 * Nothing here asserts (no Criterion): functions return 0 or a negative
 * errno and the tests decide. Not thread-safe unless stated: one test
 * thread drives the processes; the proxy runs its own thread.
 */
#ifndef PXT_UTIL_H
#define PXT_UTIL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <plexus/msg.h>

/* ---- child processes ---- */

typedef struct pxt_proc {
    pid_t pid;     /* 0 before spawn */
    bool reaped;   /* waitpid done; status holds the result */
    int status;
    int in_fd;     /* its stdin (we write commands), -1 once closed */
    int out_fd;    /* its stdout (we read lines), -1 once closed */
    char *buf;     /* stdout bytes not consumed yet */
    size_t blen, bcap;
    bool eof;
} pxt_proc;

/* Starts argv[0] (a path) with stdin and stdout on pipes and stderr
 * appended to log_path. The child gets SIGKILL if the thread that started
 * it dies (PR_SET_PDEATHSIG) and exits by itself when its stdin closes, so
 * nothing outlives a crashed or timed-out test. The pid is registered for
 * pxt_procs_kill_all. 0 or -errno. */
int pxt_proc_spawn(pxt_proc *p, char *const argv[], const char *log_path);

/* Writes one command line (a newline is added). 0 or -errno. */
int pxt_proc_send(pxt_proc *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Waits up to timeout_ms for a line of output that starts with prefix;
 * lines that do not match stay queued for later calls. The line (without
 * its newline) goes to out. 0, -ETIMEDOUT, or -EPIPE (stdout closed). */
int pxt_proc_expect(pxt_proc *p, const char *prefix, int timeout_ms, char *out, size_t len);

/* Reaps p if it exits within timeout_ms. 0 (p->status set) or -ETIMEDOUT. */
int pxt_proc_wait(pxt_proc *p, int timeout_ms);

/* Stops p: sends "quit" and waits grace_ms; then SIGTERM and grace_ms; then
 * SIGKILL. Always reaps. Returns 0 if p exited on "quit" by itself, 1 if it
 * needed a signal. */
int pxt_proc_stop(pxt_proc *p, int grace_ms);

/* SIGKILL and reap (bounded: 10 s). */
void pxt_proc_kill(pxt_proc *p);

/* Closes p's pipes and frees its buffer (after it was reaped). */
void pxt_proc_release(pxt_proc *p);

/* SIGKILLs and reaps every registered child not reaped yet. For a test's
 * fini and atexit; safe to call more than once. */
void pxt_procs_kill_all(void);

/* "exited 0", "killed by signal 9", ... for messages. Static buffer. */
const char *pxt_status_str(int status);

/* ---- small things ---- */

int64_t pxt_mono_ms(void);

/* A loopback TCP port that is free now and that the kernel will not hand
 * out to bind(0) or connect() for a while (it is left in TIME_WAIT, which a
 * listener with SO_REUSEADDR, as nng's, may bind). Port or -errno. */
int pxt_free_port(void);

/* The value of " key=" in a "word key=value key=value" line (up to the next
 * space) into out. true if found. */
bool pxt_kv(const char *line, const char *key, char *out, size_t len);
/* Same as a number (base 0: decimal or 0x-hex; hex=true reads bare hex);
 * dflt if missing or not a number. */
long long pxt_kv_num(const char *line, const char *key, bool hex, long long dflt);

/* Parses px_ref_format's "<node hex>.<node_inc hex>/<id>.<inc>". 0/-EINVAL. */
int pxt_ref_parse(const char *s, px_ref *out);

/* Lines of the file at path that contain every one of the (up to 3,
 * NULL-terminated) needles. -errno if the file cannot be read. */
int pxt_file_count(const char *path, const char *a, const char *b, const char *c);

/* The last len-1 bytes of a file (for failure messages). */
void pxt_file_tail(const char *path, char *out, size_t len);

/* Writes text to path with mode. 0 or -errno. */
int pxt_file_write(const char *path, const char *text, unsigned mode);

/* ---- a framing-aware man-in-the-middle proxy ---- */

enum { PXT_MITM_HONEST = 0, PXT_MITM_TAMPER = 1, PXT_MITM_REPLAY = 2 };

/* Listens on 127.0.0.1 (port), forwards each accepted connection to
 * 127.0.0.1:upstream. In the client-to-upstream direction it parses the
 * preamble, the handshake frame and the sealed frames; the other direction
 * is passed through. A command applies once, to the next sealed frame
 * after the Auth frame (index >= 1) on any connection: TAMPER flips one
 * ciphertext byte, REPLAY forwards the frame and then the same bytes again.
 * Then it is honest again. */
typedef struct pxt_mitm {
    int lfd, wake[2];
    int port, upstream;
    pthread_t th;
    bool running;
    atomic_int stop;
    atomic_int cmd;       /* PXT_MITM_*, reset to HONEST once applied */
    atomic_int accepted;  /* client connections accepted */
    atomic_int tampered;  /* frames tampered with */
    atomic_int replayed;  /* frames replayed */
    atomic_llong frames;  /* sealed frames forwarded client -> upstream */
} pxt_mitm;

/* Starts the proxy thread. 0 or -errno. */
int pxt_mitm_start(pxt_mitm *m, int upstream_port);
/* Stops the thread and closes every socket. Idempotent. */
void pxt_mitm_stop(pxt_mitm *m);

/* Writes all n bytes to the socket fd (send, MSG_NOSIGNAL, retried on
 * EINTR). 0, or -1 once the peer is gone or another error came. */
int pxt_write_all(int fd, const void *buf, size_t n);

/* A test's temporary directory at its end: removed if the test passed
 * (unless PXT_KEEP is set), else kept and named on stderr, prefixed by
 * `who`. Asserts nothing (for a fini, or a benchmark's exit). */
void pxt_dir_finish(const char *dir, bool passed, const char *who);

#endif
