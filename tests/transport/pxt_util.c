/*
 * pxt_util.c — see pxt_util.h. Child processes: fork + execv with pipes,
 * PR_SET_PDEATHSIG and a pid registry so every path reaps. The proxy: one
 * thread, poll() over the listener and each pair of sockets, blocking
 * writes (loopback, small frames).
 */
#define _GNU_SOURCE /* pipe2, accept4 */
#include "pxt_util.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int64_t pxt_mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void nap_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- the registry of children ---- */

#define REG_MAX 64
static pid_t reg[REG_MAX];
static bool reg_atexit;

static void reg_add(pid_t pid) {
    for (int i = 0; i < REG_MAX; i++) {
        if (reg[i] == 0) {
            reg[i] = pid;
            return;
        }
    }
}

static void reg_del(pid_t pid) {
    for (int i = 0; i < REG_MAX; i++) {
        if (reg[i] == pid) {
            reg[i] = 0;
        }
    }
}

static void kill_all_atexit(void) { pxt_procs_kill_all(); }

void pxt_procs_kill_all(void) {
    for (int i = 0; i < REG_MAX; i++) {
        if (reg[i] > 0) {
            kill(reg[i], SIGKILL);
        }
    }
    for (int i = 0; i < REG_MAX; i++) {
        if (reg[i] > 0) {
            int64_t dl = pxt_mono_ms() + 10000;
            while (waitpid(reg[i], NULL, WNOHANG) == 0 && pxt_mono_ms() < dl) {
                nap_ms(2);
            }
            reg[i] = 0;
        }
    }
}

/* ---- child processes ---- */

int pxt_proc_spawn(pxt_proc *p, char *const argv[], const char *log_path) {
    memset(p, 0, sizeof(*p));
    p->in_fd = p->out_fd = -1;
    if (!reg_atexit) {
        reg_atexit = true;
        atexit(kill_all_atexit);
        signal(SIGPIPE, SIG_IGN); /* a write to a dead child's stdin is -EPIPE, not death */
    }
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) != 0) {
        return -errno;
    }
    if (pipe2(out, O_CLOEXEC) != 0) {
        int e = errno;
        close(in[0]);
        close(in[1]);
        return -e;
    }
    int logfd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (logfd < 0) {
        int e = errno;
        close(in[0]);
        close(in[1]);
        close(out[0]);
        close(out[1]);
        return -e;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        /* Only async-signal-safe calls between fork and exec. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) {
            _exit(127);
        }
        if (dup2(in[0], 0) < 0 || dup2(out[1], 1) < 0 || dup2(logfd, 2) < 0) {
            _exit(127);
        }
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = SIG_DFL;
        sigaction(SIGPIPE, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execv(argv[0], argv);
        _exit(127);
    }
    int e = errno;
    close(in[0]);
    close(out[1]);
    close(logfd);
    if (pid < 0) {
        close(in[1]);
        close(out[0]);
        return -e;
    }
    p->pid = pid;
    p->in_fd = in[1];
    p->out_fd = out[0];
    reg_add(pid);
    return 0;
}

int pxt_proc_send(pxt_proc *p, const char *fmt, ...) {
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(line) - 1) {
        return -EINVAL;
    }
    line[n++] = '\n';
    if (p->in_fd < 0) {
        return -EPIPE;
    }
    for (int off = 0; off < n;) {
        ssize_t w = write(p->in_fd, line + off, (size_t)(n - off));
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        off += (int)w;
    }
    return 0;
}

int pxt_proc_expect(pxt_proc *p, const char *prefix, int timeout_ms, char *out, size_t len) {
    size_t plen = strlen(prefix);
    int64_t dl = pxt_mono_ms() + timeout_ms;
    for (;;) {
        size_t at = 0;
        while (at < p->blen) {
            char *nl = memchr(p->buf + at, '\n', p->blen - at);
            if (nl == NULL) {
                break;
            }
            size_t ll = (size_t)(nl - (p->buf + at));
            if (ll >= plen && memcmp(p->buf + at, prefix, plen) == 0) {
                if (out != NULL && len > 0) {
                    size_t k = ll < len - 1 ? ll : len - 1;
                    memcpy(out, p->buf + at, k);
                    out[k] = '\0';
                }
                memmove(p->buf + at, nl + 1, p->blen - (at + ll + 1));
                p->blen -= ll + 1;
                return 0;
            }
            at += ll + 1;
        }
        if (p->eof || p->out_fd < 0) {
            return -EPIPE;
        }
        int64_t left = dl - pxt_mono_ms();
        if (left <= 0) {
            return -ETIMEDOUT;
        }
        struct pollfd pf = {.fd = p->out_fd, .events = POLLIN};
        int rv = poll(&pf, 1, (int)left);
        if (rv < 0 && errno != EINTR) {
            return -errno;
        }
        if (rv <= 0) {
            continue;
        }
        if (p->bcap - p->blen < 4096) {
            size_t nc = p->bcap ? p->bcap * 2 : 16384;
            char *nb = realloc(p->buf, nc);
            if (nb == NULL) {
                return -ENOMEM;
            }
            p->buf = nb;
            p->bcap = nc;
        }
        ssize_t r = read(p->out_fd, p->buf + p->blen, p->bcap - p->blen);
        if (r < 0 && errno != EINTR) {
            p->eof = true;
        } else if (r == 0) {
            p->eof = true;
        } else if (r > 0) {
            p->blen += (size_t)r;
        }
    }
}

int pxt_proc_wait(pxt_proc *p, int timeout_ms) {
    if (p->pid <= 0 || p->reaped) {
        return 0;
    }
    int64_t dl = pxt_mono_ms() + timeout_ms;
    for (;;) {
        int st = 0;
        pid_t r = waitpid(p->pid, &st, WNOHANG);
        if (r == p->pid || (r < 0 && errno == ECHILD)) {
            p->reaped = true;
            p->status = r == p->pid ? st : -1; /* reaped elsewhere: not a clean exit */
            reg_del(p->pid);
            return 0;
        }
        if (pxt_mono_ms() >= dl) {
            return -ETIMEDOUT;
        }
        nap_ms(2);
    }
}

int pxt_proc_stop(pxt_proc *p, int grace_ms) {
    if (p->pid <= 0 || p->reaped) {
        return 0;
    }
    pxt_proc_send(p, "quit");
    if (pxt_proc_wait(p, grace_ms) == 0) {
        return 0;
    }
    kill(p->pid, SIGTERM);
    if (pxt_proc_wait(p, grace_ms) == 0) {
        return 1;
    }
    pxt_proc_kill(p);
    return 1;
}

void pxt_proc_kill(pxt_proc *p) {
    if (p->pid <= 0 || p->reaped) {
        return;
    }
    kill(p->pid, SIGKILL);
    pxt_proc_wait(p, 10000);
}

void pxt_proc_release(pxt_proc *p) {
    if (p->in_fd >= 0) {
        close(p->in_fd);
    }
    if (p->out_fd >= 0) {
        close(p->out_fd);
    }
    p->in_fd = p->out_fd = -1;
    free(p->buf);
    p->buf = NULL;
    p->blen = p->bcap = 0;
}

const char *pxt_status_str(int status) {
    static char b[64];
    if (WIFEXITED(status)) {
        snprintf(b, sizeof(b), "exited %d", WEXITSTATUS(status));
    } else if (WIFSIGNALED(status)) {
        snprintf(b, sizeof(b), "killed by signal %d", WTERMSIG(status));
    } else {
        snprintf(b, sizeof(b), "status 0x%x", (unsigned)status);
    }
    return b;
}

/* ---- small things ---- */

static struct sockaddr_in loopback(int port) {
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)port);
    return sa;
}

int pxt_free_port(void) {
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l < 0) {
        return -errno;
    }
    int on = 1, c = -1, a = -1, port = -EIO;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    struct sockaddr_in sa = loopback(0);
    socklen_t sl = sizeof(sa);
    if (bind(l, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(l, 1) != 0 ||
        getsockname(l, (struct sockaddr *)&sa, &sl) != 0) {
        port = -errno;
        goto out;
    }
    /* Connect, accept, close the accepted side first: the port stays in
     * TIME_WAIT on our side, reserved against bind(0) but open to a
     * listener with SO_REUSEADDR. */
    c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c < 0 || connect(c, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        port = -errno;
        goto out;
    }
    a = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    if (a < 0) {
        port = -errno;
        goto out;
    }
    port = ntohs(sa.sin_port);
out:
    if (a >= 0) {
        close(a);
    }
    if (c >= 0) {
        close(c);
    }
    close(l);
    return port;
}

bool pxt_kv(const char *line, const char *key, char *out, size_t len) {
    size_t kl = strlen(key);
    for (const char *s = line; (s = strstr(s, key)) != NULL; s++) {
        if ((s == line || s[-1] == ' ') && s[kl] == '=') {
            const char *v = s + kl + 1;
            size_t n = strcspn(v, " ");
            if (n >= len) {
                n = len - 1;
            }
            memcpy(out, v, n);
            out[n] = '\0';
            return true;
        }
    }
    return false;
}

long long pxt_kv_num(const char *line, const char *key, bool hex, long long dflt) {
    char v[64], *end = NULL;
    if (!pxt_kv(line, key, v, sizeof(v)) || v[0] == '\0') {
        return dflt;
    }
    errno = 0;
    long long n = strtoll(v, &end, hex ? 16 : 0);
    return errno == 0 && end != NULL && *end == '\0' ? n : dflt;
}

int pxt_ref_parse(const char *s, px_ref *out) {
    unsigned node, inc, id, ainc;
    int used = 0;
    if (sscanf(s, "%x.%x/%u.%u%n", &node, &inc, &id, &ainc, &used) != 4 || s[used] != '\0') {
        return -EINVAL;
    }
    *out = (px_ref){node, inc, id, ainc};
    return 0;
}

int pxt_file_count(const char *path, const char *a, const char *b, const char *c) {
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return -errno;
    }
    char *line = NULL;
    size_t cap = 0;
    int n = 0;
    while (getline(&line, &cap, f) >= 0) {
        if ((a == NULL || strstr(line, a)) && (b == NULL || strstr(line, b)) &&
            (c == NULL || strstr(line, c))) {
            n++;
        }
    }
    free(line);
    fclose(f);
    return n;
}

void pxt_file_tail(const char *path, char *out, size_t len) {
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(out, len, "(cannot read %s)", path);
        return;
    }
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    long from = sz > (long)len - 1 ? sz - ((long)len - 1) : 0;
    fseek(f, from, SEEK_SET);
    size_t n = fread(out, 1, len - 1, f);
    out[n] = '\0';
    fclose(f);
}

int pxt_file_write(const char *path, const char *text, unsigned mode) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) {
        return -errno;
    }
    size_t n = strlen(text);
    ssize_t w = write(fd, text, n);
    int e = w == (ssize_t)n ? 0 : -EIO;
    close(fd);
    return e;
}

/* ---- the proxy ---- */

enum { MP_PRE = 0, MP_HS, MP_FRAMES, MP_RAW };
#define MITM_PAIRS 16

typedef struct mpair {
    int c, u;        /* client (the dialing node), upstream (the real listener) */
    int phase;
    uint8_t *buf;    /* the client->upstream unit being assembled */
    size_t have, need, cap;
    long index;      /* sealed frames seen on this connection; 0 is Auth */
} mpair;

int pxt_write_all(int fd, const void *buf, size_t n) {
    const uint8_t *b = buf;
    while (n > 0) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

static void pair_close(mpair *p) {
    if (p->c >= 0) {
        close(p->c);
    }
    if (p->u >= 0) {
        close(p->u);
    }
    free(p->buf);
    memset(p, 0, sizeof(*p));
    p->c = p->u = -1;
}

static uint32_t le32(const uint8_t *b) {
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

/* A unit of the client's stream is complete in p->buf[0..need): act on it.
 * 1: it was a length prefix, keep reading the body after it; 0: forward
 * the unit; -1: the connection broke. */
static int unit_done(pxt_mitm *m, mpair *p) {
    switch (p->phase) {
    case MP_PRE:
        p->phase = MP_HS;
        p->need = 4;
        break;
    case MP_HS:
    case MP_FRAMES:
        if (p->need == 4) { /* a length prefix: read the body with it */
            uint32_t n = le32(p->buf);
            if (n == 0 || n > (64u << 20)) {
                p->phase = MP_RAW; /* not ours to judge: pass the rest through */
                break;
            }
            p->need = 4 + (size_t)n;
            return 1;
        }
        if (p->phase == MP_HS) {
            p->phase = MP_FRAMES;
        } else {
            long idx = p->index++;
            int want = atomic_load(&m->cmd);
            if (idx >= 1 && want == PXT_MITM_TAMPER &&
                atomic_compare_exchange_strong(&m->cmd, &want, PXT_MITM_HONEST)) {
                p->buf[4 + (p->need - 4) / 2] ^= 0x20; /* one byte inside the ciphertext */
                atomic_fetch_add(&m->tampered, 1);
            } else if (idx >= 1 && want == PXT_MITM_REPLAY &&
                       atomic_compare_exchange_strong(&m->cmd, &want, PXT_MITM_HONEST)) {
                if (pxt_write_all(p->u, p->buf, p->need) != 0) {
                    return -1;
                }
                atomic_fetch_add(&m->replayed, 1);
            }
            atomic_fetch_add(&m->frames, 1);
        }
        p->need = 4;
        break;
    default:
        break;
    }
    return 0;
}

/* Data from the client: assemble units (or pass through in RAW). */
static int from_client(pxt_mitm *m, mpair *p) {
    if (p->phase == MP_RAW) {
        uint8_t b[16384];
        ssize_t r = recv(p->c, b, sizeof(b), 0);
        return r <= 0 ? -1 : pxt_write_all(p->u, b, (size_t)r);
    }
    if (p->cap < p->need) {
        uint8_t *nb = realloc(p->buf, p->need);
        if (nb == NULL) {
            return -1;
        }
        p->buf = nb;
        p->cap = p->need;
    }
    ssize_t r = recv(p->c, p->buf + p->have, p->need - p->have, 0);
    if (r <= 0) {
        return -1;
    }
    p->have += (size_t)r;
    if (p->have < p->need) {
        return 0;
    }
    size_t was = p->need;
    int rv = unit_done(m, p);
    if (rv != 0) {
        return rv > 0 ? 0 : -1;
    }
    rv = pxt_write_all(p->u, p->buf, was);
    p->have = 0;
    return rv;
}

static int from_upstream(mpair *p) {
    uint8_t b[16384];
    ssize_t r = recv(p->u, b, sizeof(b), 0);
    return r <= 0 ? -1 : pxt_write_all(p->c, b, (size_t)r);
}

static void *mitm_main(void *arg) {
    pxt_mitm *m = arg;
    mpair pairs[MITM_PAIRS];
    for (int i = 0; i < MITM_PAIRS; i++) {
        memset(&pairs[i], 0, sizeof(pairs[i]));
        pairs[i].c = pairs[i].u = -1;
    }
    while (!atomic_load(&m->stop)) {
        struct pollfd pf[2 + 2 * MITM_PAIRS];
        int who[2 + 2 * MITM_PAIRS];
        int n = 0;
        pf[n] = (struct pollfd){.fd = m->lfd, .events = POLLIN};
        who[n++] = -1;
        pf[n] = (struct pollfd){.fd = m->wake[0], .events = POLLIN};
        who[n++] = -2;
        for (int i = 0; i < MITM_PAIRS; i++) {
            if (pairs[i].c >= 0) {
                pf[n] = (struct pollfd){.fd = pairs[i].c, .events = POLLIN};
                who[n++] = 2 * i;
                pf[n] = (struct pollfd){.fd = pairs[i].u, .events = POLLIN};
                who[n++] = 2 * i + 1;
            }
        }
        if (poll(pf, (nfds_t)n, 1000) <= 0) {
            continue;
        }
        for (int k = 0; k < n; k++) {
            if (pf[k].revents == 0) {
                continue;
            }
            if (who[k] == -2) {
                continue; /* woken to stop */
            }
            if (who[k] == -1) {
                int c = accept4(m->lfd, NULL, NULL, SOCK_CLOEXEC);
                if (c < 0) {
                    continue;
                }
                atomic_fetch_add(&m->accepted, 1);
                int u = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                struct sockaddr_in sa = loopback(m->upstream);
                int slot = -1;
                for (int i = 0; i < MITM_PAIRS && slot < 0; i++) {
                    if (pairs[i].c < 0) {
                        slot = i;
                    }
                }
                if (u < 0 || slot < 0 || connect(u, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
                    close(c);
                    if (u >= 0) {
                        close(u);
                    }
                    continue;
                }
                pairs[slot] = (mpair){.c = c, .u = u, .phase = MP_PRE, .need = 8};
                continue;
            }
            mpair *p = &pairs[who[k] / 2];
            if (p->c < 0) {
                continue; /* closed earlier in this round */
            }
            int rv = who[k] % 2 == 0 ? from_client(m, p) : from_upstream(p);
            if (rv != 0) {
                pair_close(p);
            }
        }
    }
    for (int i = 0; i < MITM_PAIRS; i++) {
        if (pairs[i].c >= 0) {
            pair_close(&pairs[i]);
        }
    }
    return NULL;
}

int pxt_mitm_start(pxt_mitm *m, int upstream_port) {
    memset(m, 0, sizeof(*m));
    m->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    m->wake[0] = m->wake[1] = -1;
    if (m->lfd < 0) {
        return -errno;
    }
    int on = 1;
    setsockopt(m->lfd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    struct sockaddr_in sa = loopback(0);
    socklen_t sl = sizeof(sa);
    if (bind(m->lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(m->lfd, 16) != 0 ||
        getsockname(m->lfd, (struct sockaddr *)&sa, &sl) != 0 || pipe2(m->wake, O_CLOEXEC) != 0) {
        int e = errno;
        close(m->lfd);
        m->lfd = -1;
        return -e;
    }
    m->port = ntohs(sa.sin_port);
    m->upstream = upstream_port;
    int e = pthread_create(&m->th, NULL, mitm_main, m);
    if (e != 0) {
        close(m->lfd);
        close(m->wake[0]);
        close(m->wake[1]);
        m->lfd = -1;
        return -e;
    }
    m->running = true;
    return 0;
}

void pxt_mitm_stop(pxt_mitm *m) {
    if (!m->running) {
        return;
    }
    atomic_store(&m->stop, 1);
    ssize_t w = write(m->wake[1], "x", 1);
    (void)w;
    pthread_join(m->th, NULL);
    close(m->lfd);
    close(m->wake[0]);
    close(m->wake[1]);
    m->running = false;
}

void pxt_dir_finish(const char *dir, bool passed, const char *who) {
    if (passed && getenv("PXT_KEEP") == NULL) {
        char cmd[160];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0) {
            fprintf(stderr, "%s: cannot remove %s\n", who, dir);
        }
    } else {
        fprintf(stderr, "%s: node logs kept in %s\n", who, dir);
    }
}
