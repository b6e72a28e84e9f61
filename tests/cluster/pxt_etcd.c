/*
 * tests/cluster/pxt_etcd.c — see pxt_etcd.h. Health and set-up requests use
 * libcurl's easy interface (the code under test is the multi one).
 */
#include "pxt_etcd.h"

#include <curl/curl.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct sink {
    char *p;
    size_t len, cap;
} sink;

static size_t on_body(char *p, size_t sz, size_t n, void *ud) {
    sink *s = ud;
    size_t k = sz * n;
    if (s->p != NULL && s->len + 1 < s->cap) {
        size_t c = k < s->cap - 1 - s->len ? k : s->cap - 1 - s->len;
        memcpy(s->p + s->len, p, c);
        s->len += c;
        s->p[s->len] = '\0';
    }
    return k;
}

static int http(const char *url, const char *json, char *out, size_t len) {
    CURL *c = curl_easy_init();
    if (c == NULL) {
        return -ENOMEM;
    }
    sink s = {out, 0, len};
    if (out != NULL && len > 0) {
        out[0] = '\0';
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 2000L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L); /* set-up only */
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
    if (json != NULL) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, json);
    }
    CURLcode rc = curl_easy_perform(c);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    return rc == CURLE_OK ? (int)code : -ECONNREFUSED;
}

int pxt_etcd_post(const char *url, const char *path, const char *json, char *out, size_t len) {
    char u[256];
    snprintf(u, sizeof(u), "%s%s", url, path);
    return http(u, json, out, len);
}

int pxt_etcd_wait_healthy(pxt_etcd *e, int timeout_ms) {
    char u[128], body[256];
    snprintf(u, sizeof(u), "%s/health", e->url);
    int64_t end = pxt_mono_ms() + timeout_ms;
    while (pxt_mono_ms() < end) {
        if (http(u, NULL, body, sizeof(body)) == 200 && strstr(body, "\"true\"") != NULL) {
            return 0;
        }
        if (e->proc.pid > 0 && pxt_proc_wait(&e->proc, 0) == 0) {
            return -ECHILD; /* etcd exited */
        }
        struct timespec ts = {0, 20 * 1000000};
        nanosleep(&ts, NULL);
    }
    return -ETIMEDOUT;
}

static int spawn(pxt_etcd *e) {
    char client[96], peer[96], adv_peer[120], cluster[140];
    snprintf(client, sizeof(client), "%s://127.0.0.1:%d", e->scheme, e->port);
    snprintf(peer, sizeof(peer), "http://127.0.0.1:%d", e->peer_port);
    snprintf(adv_peer, sizeof(adv_peer), "%s", peer);
    snprintf(cluster, sizeof(cluster), "n1=%s", peer);
    char *bin = (char *)(e->bin != NULL ? e->bin : "/usr/bin/etcd");
    char *argv[40] = {bin, "--name", "n1", "--data-dir", e->dir,
                      "--listen-client-urls", client, "--advertise-client-urls", client,
                      "--listen-peer-urls", peer, "--initial-advertise-peer-urls", adv_peer,
                      "--initial-cluster", cluster, "--logger=zap", "--log-level=error"};
    int n = 17;
    for (int i = 0; i < 8 && e->extra[i] != NULL; i++) {
        argv[n++] = (char *)e->extra[i];
    }
    argv[n] = NULL;
    if (e->proc.pid > 0) {
        pxt_proc_release(&e->proc);
    }
    memset(&e->proc, 0, sizeof(e->proc));
    int rv = pxt_proc_spawn(&e->proc, argv, e->log);
    if (rv != 0) {
        return rv;
    }
    e->running = true;
    rv = pxt_etcd_wait_healthy(e, 15000);
    if (rv != 0) {
        pxt_etcd_kill(e);
    }
    return rv;
}

int pxt_etcd_start(pxt_etcd *e) {
    if (e->scheme == NULL) {
        e->scheme = "http";
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    snprintf(e->dir, sizeof(e->dir), "/tmp/pxt-etcd.XXXXXX");
    if (mkdtemp(e->dir) == NULL) {
        return -errno;
    }
    snprintf(e->log, sizeof(e->log), "%s.log", e->dir);
    e->port = pxt_free_port();
    e->peer_port = pxt_free_port();
    if (e->port < 0 || e->peer_port < 0) {
        return -EADDRNOTAVAIL;
    }
    snprintf(e->url, sizeof(e->url), "%s://127.0.0.1:%d", e->scheme, e->port);
    return spawn(e);
}

int pxt_etcd_restart(pxt_etcd *e) {
    if (e->running) {
        pxt_etcd_kill(e);
    }
    return spawn(e);
}

void pxt_etcd_kill(pxt_etcd *e) {
    if (e->running) {
        kill(e->proc.pid, SIGCONT);
        pxt_proc_kill(&e->proc);
        e->running = false;
    }
}

int pxt_etcd_pause(pxt_etcd *e) {
    return e->running && kill(e->proc.pid, SIGSTOP) == 0 ? 0 : -ESRCH;
}

int pxt_etcd_resume(pxt_etcd *e) {
    return e->running && kill(e->proc.pid, SIGCONT) == 0 ? 0 : -ESRCH;
}

void pxt_etcd_stop(pxt_etcd *e) {
    if (e->running) {
        kill(e->proc.pid, SIGCONT);
        kill(e->proc.pid, SIGTERM);
        if (pxt_proc_wait(&e->proc, 5000) != 0) {
            pxt_proc_kill(&e->proc);
        }
        e->running = false;
    }
    if (e->proc.pid > 0) {
        pxt_proc_release(&e->proc);
        e->proc.pid = 0;
    }
    if (e->dir[0] != '\0') {
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", e->dir);
        if (system(cmd) != 0) {
            fprintf(stderr, "pxt_etcd: could not remove %s\n", e->dir);
        }
        e->dir[0] = '\0';
    }
    if (e->log[0] != '\0' && !e->keep_log && getenv("PXT_KEEP") == NULL) {
        unlink(e->log);
        e->log[0] = '\0';
    }
}

void pxt_etcd_quiet_log(void *arg, px_log_level level, const char *node, const char *line) {
    (void)arg;
    if (getenv("PXT_LOG") != NULL || level >= PX_LOG_ERROR) {
        fprintf(stderr, "[%s] %s %s\n", node, px_log_level_name(level), line);
    }
}
