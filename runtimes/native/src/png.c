#include "png.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static uint32_t crc_update(uint32_t crc, const uint8_t *p, size_t n) {
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1)));
    }
    return ~crc;
}

static void be32(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v; }

static int chunk(FILE *f, const char *type, const uint8_t *data, size_t n) {
    uint8_t head[8], tail[4];
    be32(head, (uint32_t)n);
    memcpy(head + 4, type, 4);
    uint32_t crc = crc_update(crc_update(0, (const uint8_t *)type, 4), data, n);
    be32(tail, crc);
    return fwrite(head, 1, 8, f) == 8 && (n == 0 || fwrite(data, 1, n, f) == n) && fwrite(tail, 1, 4, f) == 4 ? 0 : -1;
}

eg_status eg_png_write(const char *path, const uint8_t *pixels, int width, int height, int channels, char *err,
                       size_t errlen) {
    static const int COLOR[] = {0, 0, 0, 2, 6};
    if (width < 1 || height < 1 || width > 1 << 20 || height > 1 << 20 || (channels != 1 && channels != 3 && channels != 4))
        return eg_fail(err, errlen, EG_ERR_ARGUMENT, "png: %dx%d with %d channels cannot be written", width, height, channels);
    size_t row = (size_t)width * channels + 1, raw_n = row * height;
    size_t blocks = raw_n / 65535 + 1, z_n = 2 + raw_n + 5 * blocks + 4;
    uint8_t *z = malloc(z_n);
    if (!z) return eg_fail(err, errlen, EG_ERR_MEMORY, "png: out of memory");
    size_t o = 0, done = 0;
    uint32_t a = 1, b = 0;
    z[o++] = 0x78;
    z[o++] = 0x01;
    for (size_t blk = 0; blk < blocks; blk++) {
        size_t n = raw_n - done < 65535 ? raw_n - done : 65535;
        z[o++] = blk + 1 == blocks ? 1 : 0;
        z[o++] = (uint8_t)n; z[o++] = (uint8_t)(n >> 8);
        z[o++] = (uint8_t)~n; z[o++] = (uint8_t)(~n >> 8);
        for (size_t i = 0; i < n; i++, done++) {
            size_t y = done / row, x = done % row;
            uint8_t v = x == 0 ? 0 : pixels[y * (row - 1) + x - 1];
            z[o++] = v;
            a = (a + v) % 65521;
            b = (b + a) % 65521;
        }
    }
    be32(z + o, b << 16 | a);
    o += 4;
    uint8_t ihdr[13];
    be32(ihdr, (uint32_t)width);
    be32(ihdr + 4, (uint32_t)height);
    ihdr[8] = 8; ihdr[9] = (uint8_t)COLOR[channels]; ihdr[10] = 0; ihdr[11] = 0; ihdr[12] = 0;
    FILE *f = fopen(path, "wb");
    if (!f) { free(z); return eg_fail(err, errlen, EG_ERR_IO, "%s: cannot write (%s)", path, strerror(errno)); }
    int bad = fwrite("\x89PNG\r\n\x1a\n", 1, 8, f) != 8 || chunk(f, "IHDR", ihdr, 13) || chunk(f, "IDAT", z, o) ||
              chunk(f, "IEND", NULL, 0);
    bad |= fclose(f) != 0;
    free(z);
    return bad ? eg_fail(err, errlen, EG_ERR_IO, "%s: write failed", path) : EG_OK;
}
