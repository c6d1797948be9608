#ifndef EG_SHA256_H
#define EG_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t h[8];
    uint64_t len;
    uint8_t buf[64];
    size_t used;
} eg_sha256;

void eg_sha256_init(eg_sha256 *s);
void eg_sha256_update(eg_sha256 *s, const void *data, size_t n);
void eg_sha256_final(eg_sha256 *s, uint8_t out[32]);
void eg_sha256_hex(const void *data, size_t n, char hex[65]);

#endif
