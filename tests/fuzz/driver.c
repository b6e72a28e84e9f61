/*
 * driver.c — main() for a fuzz target built without libFuzzer (the plain
 * and ASan builds): replays seed files through LLVMFuzzerTestOneInput, so
 * every ctest run exercises the targets' code and their invariants.
 *
 * Usage: fuzz_<name> PATH... — each PATH is a file or a directory of files
 * (read in name order). Each file runs whole, then cut at every shorter
 * length (truncation is the most common malformed input on a stream).
 * Prints "fuzz_<name>: N seeds, N runs" and exits 0; exits 1 if no seed was
 * found or a file cannot be read. A broken invariant or a sanitizer report
 * aborts the process.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

static size_t seeds, runs;

static int run_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    size_t got;
    while (buf != NULL && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            uint8_t *nb = realloc(buf, cap * 2);
            if (nb == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    int bad = ferror(f) || buf == NULL;
    fclose(f);
    if (bad) {
        fprintf(stderr, "%s: cannot read\n", path);
        free(buf);
        return -1;
    }
    /* Each length in a buffer of exactly that size, so ASan sees any read
     * past the end. */
    for (size_t len = n + 1; len-- > 0;) {
        uint8_t *in = malloc(len ? len : 1);
        if (in == NULL) {
            free(buf);
            return -1;
        }
        memcpy(in, buf, len);
        LLVMFuzzerTestOneInput(in, len);
        free(in);
        runs++;
    }
    free(buf);
    seeds++;
    return 0;
}

static int skip_name(const struct dirent *d) { return d->d_name[0] != '.'; }

static int run_path(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        return run_file(path);
    }
    struct dirent **list = NULL;
    int n = scandir(path, &list, skip_name, alphasort);
    if (n < 0) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return -1;
    }
    int rv = 0;
    for (int i = 0; i < n; i++) {
        char sub[4096];
        snprintf(sub, sizeof(sub), "%s/%s", path, list[i]->d_name);
        if (rv == 0 && run_file(sub) != 0) {
            rv = -1;
        }
        free(list[i]);
    }
    free(list);
    return rv;
}

int main(int argc, char **argv) {
    const char *me = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
    if (argc < 2) {
        fprintf(stderr, "usage: %s SEED_FILE_OR_DIR...\n", me);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        if (run_path(argv[i]) != 0) {
            return 1;
        }
    }
    printf("%s: %zu seeds, %zu runs\n", me, seeds, runs);
    if (seeds == 0) {
        fprintf(stderr, "%s: no seed files found\n", me);
        return 1;
    }
    return 0;
}
