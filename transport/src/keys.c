/*
 * keys.c — node identity files and the cluster secret (plexus/transport.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include <plexus/transport.h>

#define ID_HEADER "plexus-identity-v1 ed25519\n"
#define SECRET_MIN 16
#define SECRET_MAX (64 * 1024)

static void set_err(char *err, size_t errlen, const char *fmt, const char *path, int e) {
    if (err != NULL && errlen > 0) {
        snprintf(err, errlen, fmt, path, e ? strerror(e) : "");
    }
}

/* Reads a whole small file. PX_ENOENT, PX_EIO, PX_EINVAL (over max). */
static px_err read_small(const char *path, size_t max, uint8_t **out, size_t *len, int *eno,
                         struct stat *st) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        *eno = errno;
        return errno == ENOENT ? PX_ENOENT : PX_EIO;
    }
    if (fstat(fd, st) != 0) {
        *eno = errno;
        close(fd);
        return PX_EIO;
    }
    if (!S_ISREG(st->st_mode)) {
        *eno = EINVAL; /* a directory, a fifo, a device */
        close(fd);
        return PX_EIO;
    }
    if ((size_t)st->st_size > max) {
        close(fd);
        *eno = EFBIG;
        return PX_EINVAL;
    }
    uint8_t *buf = malloc((size_t)st->st_size + 1);
    if (buf == NULL) {
        close(fd);
        return PX_ENOMEM;
    }
    size_t n = 0;
    while (n < (size_t)st->st_size) {
        ssize_t r = read(fd, buf + n, (size_t)st->st_size - n);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            *eno = r < 0 ? errno : EIO;
            free(buf);
            close(fd);
            return PX_EIO;
        }
        n += (size_t)r;
    }
    close(fd);
    buf[n] = 0;
    *out = buf;
    *len = n;
    return PX_OK;
}

static px_err write_identity(const char *path, const uint8_t seed[32], int *eno) {
    char b64[sodium_base64_ENCODED_LEN(32, sodium_base64_VARIANT_ORIGINAL)];
    sodium_bin2base64(b64, sizeof(b64), seed, 32, sodium_base64_VARIANT_ORIGINAL);
    char tmp[4096];
    int n = snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        *eno = ENAMETOOLONG;
        return PX_EIO;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        *eno = errno;
        return PX_EIO;
    }
    char text[128];
    int tl = snprintf(text, sizeof(text), "%s%s\n", ID_HEADER, b64);
    sodium_memzero(b64, sizeof(b64));
    bool ok = write(fd, text, (size_t)tl) == tl && fsync(fd) == 0;
    *eno = ok ? 0 : errno;
    sodium_memzero(text, sizeof(text));
    ok = close(fd) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        *eno = *eno ? *eno : errno;
        unlink(tmp);
        return PX_EIO;
    }
    return PX_OK;
}

px_err px_identity_load(const char *path, bool create, px_identity *out, char *err,
                        size_t errlen) {
    if (path == NULL || out == NULL) {
        return PX_EINVAL;
    }
    if (sodium_init() < 0) {
        set_err(err, errlen, "identity %s: libsodium failed to initialise%s", path, 0);
        return PX_ESYS;
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    int eno = 0;
    struct stat st;
    px_err rv = read_small(path, 4096, &buf, &len, &eno, &st);
    uint8_t seed[32];
    if (rv == PX_ENOENT && create) {
        randombytes_buf(seed, sizeof(seed));
        rv = write_identity(path, seed, &eno);
        if (rv != PX_OK) {
            set_err(err, errlen, "identity %s: cannot create: %s", path, eno);
            sodium_memzero(seed, sizeof(seed));
            return rv;
        }
    } else if (rv != PX_OK) {
        set_err(err, errlen,
                rv == PX_ENOENT ? "identity %s: no such file%s" : "identity %s: cannot read: %s",
                path, rv == PX_ENOENT ? 0 : eno);
        return rv;
    } else {
        if ((st.st_mode & 077) != 0) {
            free(buf);
            set_err(err, errlen,
                    "identity %s: readable by group or others (chmod 600 it)%s", path, 0);
            return PX_EAUTH;
        }
        size_t hl = strlen(ID_HEADER);
        size_t bl = 0;
        const char *end = NULL;
        bool ok = len > hl && memcmp(buf, ID_HEADER, hl) == 0 &&
                  sodium_base642bin(seed, sizeof(seed), (const char *)buf + hl, len - hl, "\n\r ",
                                    &bl, &end, sodium_base64_VARIANT_ORIGINAL) == 0 &&
                  bl == sizeof(seed) && end != NULL &&
                  strspn(end, "\n\r ") == strlen(end); /* nothing after the seed */
        sodium_memzero(buf, len);
        free(buf);
        if (!ok) {
            set_err(err, errlen, "identity %s: not a plexus identity file%s", path, 0);
            return PX_EPROTO;
        }
    }
    rv = crypto_sign_seed_keypair(out->pk, out->sk, seed) == 0 ? PX_OK : PX_ESYS;
    sodium_memzero(seed, sizeof(seed));
    return rv;
}

px_err px_secret_from_bytes(const void *data, size_t len, uint8_t key[PX_SECRET_BYTES]) {
    if (data == NULL || key == NULL) {
        return PX_EINVAL;
    }
    const uint8_t *p = data;
    while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\n' || p[len - 1] == '\r' ||
                       p[len - 1] == '\t')) {
        len--;
    }
    if (len < SECRET_MIN || len > SECRET_MAX) {
        return PX_EINVAL;
    }
    if (sodium_init() < 0) {
        return PX_ESYS;
    }
    static const uint8_t ctx[] = "plexus/cluster-secret/v1";
    return crypto_generichash(key, PX_SECRET_BYTES, p, len, ctx, sizeof(ctx) - 1) == 0 ? PX_OK
                                                                                    : PX_ESYS;
}

px_err px_secret_load(const char *path, uint8_t key[PX_SECRET_BYTES], char *err, size_t errlen) {
    if (path == NULL || key == NULL) {
        return PX_EINVAL;
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    int eno = 0;
    struct stat st;
    px_err rv = read_small(path, SECRET_MAX, &buf, &len, &eno, &st);
    if (rv != PX_OK) {
        set_err(err, errlen,
                rv == PX_EINVAL ? "cluster secret %s: larger than 64 KiB%s"
                                : "cluster secret %s: cannot read: %s",
                path, rv == PX_EINVAL ? 0 : eno);
        return rv;
    }
    rv = px_secret_from_bytes(buf, len, key);
    sodium_memzero(buf, len);
    free(buf);
    if (rv == PX_EINVAL) {
        set_err(err, errlen, "cluster secret %s: shorter than 16 bytes%s", path, 0);
    }
    return rv;
}

void px_pubkey_format(const uint8_t pk[PX_PUBKEY_BYTES], char out[PX_PUBKEY_B64_LEN]) {
    sodium_bin2base64(out, PX_PUBKEY_B64_LEN, pk, PX_PUBKEY_BYTES,
                      sodium_base64_VARIANT_ORIGINAL);
}

px_err px_pubkey_parse(const char *b64, uint8_t pk[PX_PUBKEY_BYTES]) {
    if (b64 == NULL || pk == NULL) {
        return PX_EINVAL;
    }
    size_t bl = 0;
    const char *end = NULL;
    if (sodium_init() < 0) {
        return PX_ESYS;
    }
    if (sodium_base642bin(pk, PX_PUBKEY_BYTES, b64, strlen(b64), NULL, &bl, &end,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        bl != PX_PUBKEY_BYTES || *end != '\0') {
        return PX_EINVAL;
    }
    return PX_OK;
}
