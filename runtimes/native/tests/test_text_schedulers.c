/* test_text_schedulers CONFIG.json OVERRIDE|- STEPS N IN.bin OUT.bin [IMAGE_SEQ_LEN]
   IN.bin: float32 triples (sample[N], model_output[N], noise[N]), one per step (noise only where the scheduler
   takes it).
   OUT.bin: float32 count, init_noise_sigma, timesteps[count], sigmas[count + 1],
            then per step scale_model_input(sample)[N] and step(model_output, sample)[N].
   A failure prints the error to stderr and exits 1. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/schedulers.h"

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            char *bigger = realloc(buf, cap *= 2);
            if (!bigger)
                free(buf);
            buf = bigger;
        }
    }
    fclose(f);
    *len = n;
    return buf;
}

int main(int argc, char **argv)
{
    if (argc != 7 && argc != 8) {
        fprintf(stderr, "usage: %s CONFIG.json OVERRIDE|- STEPS N IN.bin OUT.bin [IMAGE_SEQ_LEN]\n", argv[0]);
        return 2;
    }
    char err[512] = "";
    size_t len, in_len;
    char *json = slurp(argv[1], &len);
    char *in = slurp(argv[5], &in_len);
    if (!json || !in) {
        fprintf(stderr, "cannot read inputs\n");
        return 2;
    }
    const char *override = strcmp(argv[2], "-") ? argv[2] : NULL;
    int steps = atoi(argv[3]);
    size_t n = (size_t)atol(argv[4]);
    eg_scheduler *s = NULL;
    int opened = !eg_scheduler_open(json, len, override, &s, err, sizeof err);
    if (opened && argc == 8)
        eg_scheduler_set_image_seq_len(s, atol(argv[7]));
    if (!opened || eg_scheduler_set_timesteps(s, steps, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        eg_scheduler_free(s);
        free(json);
        free(in);
        return 1;
    }
    int count = eg_scheduler_count(s);
    FILE *out = fopen(argv[6], "wb");
    float head[2] = {(float)count, eg_scheduler_init_noise_sigma(s)};
    fwrite(head, sizeof(float), 2, out);
    for (int i = 0; i < count; i++) {
        float t = eg_scheduler_timestep(s, i);
        fwrite(&t, sizeof t, 1, out);
    }
    for (int i = 0; i <= count; i++) {
        float sigma = eg_scheduler_sigma(s, i);
        fwrite(&sigma, sizeof sigma, 1, out);
    }
    float *buf = malloc(sizeof(float) * (n ? n : 1));
    const float *pairs = (const float *)in;
    for (int i = 0; i < count && (size_t)(i + 1) * 3 * n * sizeof(float) <= in_len; i++) {
        const float *sample = pairs + (size_t)i * 3 * n, *model = sample + n, *noise = model + n;
        eg_scheduler_scale_model_input(s, i, sample, buf, n);
        fwrite(buf, sizeof(float), n, out);
        if (eg_scheduler_step(s, model, i, sample, eg_scheduler_needs_noise(s) ? noise : NULL, buf, n)) {
            fprintf(stderr, "step %d failed\n", i);
            return 1;
        }
        fwrite(buf, sizeof(float), n, out);
    }
    fclose(out);
    free(buf);
    eg_scheduler_free(s);
    free(json);
    free(in);
    return 0;
}
