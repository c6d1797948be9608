#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

eg_status eg_fail(char *err, size_t errlen, eg_status status, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return status;
}

eg_status eg_file_map(const char *path, size_t max_bytes, eg_file *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return eg_fail(err, errlen, EG_ERR_IO, "%s: cannot open (%s)", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return eg_fail(err, errlen, EG_ERR_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > max_bytes) {
        close(fd);
        return eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s: %lld bytes, more than the %zu this runtime reads", path,
                       (long long)st.st_size, max_bytes);
    }
    if (st.st_size == 0) { close(fd); return EG_OK; }
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) return eg_fail(err, errlen, EG_ERR_IO, "%s: cannot map (%s)", path, strerror(errno));
    out->data = m;
    out->size = (size_t)st.st_size;
    out->map = m;
    out->map_size = (size_t)st.st_size;
    return EG_OK;
}

void eg_file_unmap(eg_file *f) {
    if (f->map) munmap(f->map, f->map_size);
    memset(f, 0, sizeof *f);
}

eg_status eg_file_read(const char *path, size_t max_bytes, char **out, size_t *len, char *err, size_t errlen) {
    eg_file f;
    *out = NULL;
    eg_status st = eg_file_map(path, max_bytes, &f, err, errlen);
    if (st) return st;
    char *buf = malloc(f.size + 1);
    if (!buf) { eg_file_unmap(&f); return eg_fail(err, errlen, EG_ERR_MEMORY, "%s: out of memory", path); }
    if (f.size) memcpy(buf, f.data, f.size);
    buf[f.size] = 0;
    *len = f.size;
    *out = buf;
    eg_file_unmap(&f);
    return EG_OK;
}

char *eg_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

char *eg_path_join(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    char *p = malloc(na + nb + 2);
    if (!p) return NULL;
    memcpy(p, a, na);
    p[na] = '/';
    memcpy(p + na + 1, b, nb + 1);
    return p;
}

static const char *const DTYPE_NAMES[] = {"float32", "float16", "int32", "int64", "uint8", "int8", "uint32"};
static const size_t DTYPE_SIZES[] = {4, 2, 4, 8, 1, 1, 4};

int eg_dtype_from_name(const char *name, eg_dtype *out) {
    for (int i = 0; i < 7; i++)
        if (strcmp(name, DTYPE_NAMES[i]) == 0) { *out = (eg_dtype)i; return 0; }
    return -1;
}

const char *eg_dtype_name(eg_dtype d) { return (unsigned)d < 7 ? DTYPE_NAMES[d] : "?"; }
size_t eg_dtype_size(eg_dtype d) { return (unsigned)d < 7 ? DTYPE_SIZES[d] : 0; }

float eg_half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, mant = h & 0x3FF, bits;
    if (exp == 0) {
        if (mant == 0) bits = sign;
        else {
            exp = 127 - 15 + 1;
            while (!(mant & 0x400)) { mant <<= 1; exp--; }
            bits = sign | (exp << 23) | ((mant & 0x3FF) << 13);
        }
    } else if (exp == 31) bits = sign | 0x7F800000u | (mant << 13);
    else bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t eg_float_to_half(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t exp = (x >> 23) & 0xFF, mant = x & 0x7FFFFF;
    if (exp == 0xFF) return (uint16_t)(sign | 0x7C00 | (mant ? 0x200 | (mant >> 13) : 0));
    int e = (int)exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7C00);
    if (e <= 0) {
        if (e < -10) return (uint16_t)sign;
        mant |= 0x800000;
        int shift = 14 - e;
        uint32_t half = mant >> shift, rem = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = ((uint32_t)e << 10) | (mant >> 13), rem = mant & 0x1FFF;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++; /* may carry into the exponent: still right */
    return (uint16_t)(sign | half);
}
