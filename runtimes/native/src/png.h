#ifndef EG_PNG_H
#define EG_PNG_H

#include <stddef.h>
#include <stdint.h>

#include "edgegen.h"

/* Writes 8-bit pixels (height x width x channels, channels 1, 3 or 4) as a PNG with stored
   (uncompressed) deflate blocks: no zlib needed. */
eg_status eg_png_write(const char *path, const uint8_t *pixels, int width, int height, int channels, char *err,
                       size_t errlen);

#endif
