/* Error messages, whole-file reads, read-only mappings, dtype sizes and float16 conversion. */
#ifndef EG_UTIL_H
#define EG_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "edgegen.h"

#if defined(__GNUC__)
#define EG_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define EG_PRINTF(a, b)
#endif

/* Writes the message into err (if any) and returns status. */
eg_status eg_fail(char *err, size_t errlen, eg_status status, const char *fmt, ...) EG_PRINTF(4, 5);

typedef struct {
    const uint8_t *data;
    size_t size;
    void *map;       /* munmap target, NULL when data is malloc'd or empty */
    size_t map_size;
} eg_file;

/* Maps a regular file read-only (at most max_bytes); an empty file gives size 0. */
eg_status eg_file_map(const char *path, size_t max_bytes, eg_file *out, char *err, size_t errlen);
void eg_file_unmap(eg_file *f);
/* The file's bytes plus a NUL, malloc'd. */
eg_status eg_file_read(const char *path, size_t max_bytes, char **out, size_t *len, char *err, size_t errlen);
char *eg_strdup(const char *s);
char *eg_path_join(const char *a, const char *b);

int eg_dtype_from_name(const char *name, eg_dtype *out); /* 0 ok */
const char *eg_dtype_name(eg_dtype d);
size_t eg_dtype_size(eg_dtype d);

float eg_half_to_float(uint16_t h);
uint16_t eg_float_to_half(float f); /* round to nearest even, as numpy */

#endif
