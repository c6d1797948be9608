/* Unit checks without a device: SHA-256 vectors, float16 round trips, PNG bytes, API argument errors.
   With two file arguments it converts float32s (argv[1]) to float16s (argv[2]) for the pytest that
   compares them with numpy. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "artifact.h"
#include "png.h"
#include "sha256.h"

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #c); failures++; } } while (0)

static int convert(const char *in, const char *out) {
    char err[256];
    eg_file f;
    if (eg_file_map(in, (size_t)1 << 30, &f, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 2; }
    size_t n = f.size / 4;
    uint16_t *h = malloc(n * 2 + 2);
    for (size_t i = 0; i < n; i++) {
        float v;
        memcpy(&v, f.data + 4 * i, 4);
        h[i] = eg_float_to_half(v);
    }
    FILE *o = fopen(out, "wb");
    int bad = !o || fwrite(h, 2, n, o) != n;
    if (o) fclose(o);
    free(h);
    eg_file_unmap(&f);
    return bad ? 2 : 0;
}

int main(int argc, char **argv) {
    if (argc == 3) return convert(argv[1], argv[2]);
    char hex[65], err[512];
    eg_sha256_hex("", 0, hex);
    CHECK(!strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    eg_sha256_hex("abc", 3, hex);
    CHECK(!strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    char million[1000];
    memset(million, 'a', sizeof million);
    eg_sha256 s;
    uint8_t d[32];
    eg_sha256_init(&s);
    for (int i = 0; i < 1000; i++) eg_sha256_update(&s, million, 1000);
    eg_sha256_final(&s, d);
    CHECK(d[0] == 0xcd && d[1] == 0xc7 && d[31] == 0xd0);  /* cdc76e5c...2046a0d0 (10^6 x 'a') */
    for (uint32_t h = 0; h < 65536; h++) {
        uint16_t back = eg_float_to_half(eg_half_to_float((uint16_t)h));
        int nan = (h & 0x7C00) == 0x7C00 && (h & 0x3FF);
        CHECK(nan ? (back & 0x7C00) == 0x7C00 && (back & 0x3FF) : back == h);
    }
    CHECK(eg_float_to_half(65520.0f) == 0x7C00 && eg_float_to_half(65519.0f) == 0x7BFF);
    CHECK(eg_float_to_half(1.0f + 1.0f / 2048) == 0x3C00 && eg_float_to_half(1.0f + 3.0f / 2048) == 0x3C02);
    eg_artifact *a = (eg_artifact *)1;
    CHECK(eg_artifact_open("/nonexistent/artifact", NULL, &a, err, sizeof err) == EG_ERR_ARTIFACT && !a &&
          strstr(err, "manifest.json is missing"));
    CHECK(eg_artifact_open(NULL, NULL, &a, err, sizeof err) == EG_ERR_ARGUMENT);
    eg_session *sess = NULL;
    CHECK(eg_session_open(NULL, "x", &sess, err, sizeof err) == EG_ERR_ARGUMENT);
    CHECK(eg_session_run(NULL, err, sizeof err) == EG_ERR_ARGUMENT);
    CHECK(eg_session_set_input(NULL, "x", "", 0, err, sizeof err) == EG_ERR_INPUT);
    CHECK(eg_pipeline_open(NULL, NULL, err, sizeof err) == EG_ERR_ARGUMENT);
    CHECK(!strcmp(eg_status_name(EG_ERR_SIGNATURE), "signature error") && !strcmp(eg_status_name(99), "unknown"));
    eg_artifact_close(NULL);
    eg_session_close(NULL);
    eg_pipeline_close(NULL);
    uint8_t px[2 * 3 * 3] = {0, 255, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150, 160};
    const char *path = "/tmp/edgegen-test-core-units.png";
    CHECK(eg_png_write(path, px, 3, 2, 3, err, sizeof err) == EG_OK);
    eg_file f;
    CHECK(eg_file_map(path, 1 << 20, &f, err, sizeof err) == EG_OK && f.size > 33 &&
          !memcmp(f.data, "\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR", 16));
    eg_file_unmap(&f);
    remove(path);
    CHECK(eg_png_write(path, px, 0, 2, 3, err, sizeof err) == EG_ERR_ARGUMENT);
    if (failures) { fprintf(stderr, "%d failures\n", failures); return 1; }
    printf("units ok\n");
    return 0;
}
