/* test_text_rng SEED N [STEP]: writes eg_normal_fill(SEED, N values) to stdout as raw float32, or with STEP
   the noise of that denoising step, eg_step_noise_fill(SEED, STEP, N values). */
#include <stdio.h>
#include <stdlib.h>

#include "../src/rng.h"

int main(int argc, char **argv)
{
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: %s SEED N [STEP]\n", argv[0]);
        return 2;
    }
    unsigned long long seed = strtoull(argv[1], NULL, 10);
    size_t n = (size_t)strtoull(argv[2], NULL, 10);
    float *out = malloc(n ? n * sizeof *out : 1);
    if (!out)
        return 1;
    if (argc == 4)
        eg_step_noise_fill((uint64_t)seed, atoi(argv[3]), out, n);
    else
        eg_normal_fill((uint64_t)seed, out, n);
    int ok = fwrite(out, sizeof *out, n, stdout) == n;
    free(out);
    return ok ? 0 : 1;
}
