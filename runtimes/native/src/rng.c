#include "rng.h"

#include <math.h>

#define EG_PI 3.14159265358979311599796346854 /* the double nearest pi, as numpy's np.pi */

uint64_t eg_splitmix64(uint64_t seed, uint64_t k)
{
    uint64_t z = seed + k * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void eg_normal_fill(uint64_t seed, float *out, size_t n)
{
    uint64_t k = 1;
    for (size_t i = 0; i < n; i += 2, k += 2) {
        uint64_t a = eg_splitmix64(seed, k), b = eg_splitmix64(seed, k + 1);
        double u1 = (double)((a >> 11) + 1) * 0x1p-53;
        double u2 = (double)(b >> 11) * 0x1p-53;
        double r = sqrt(-2.0 * log(u1));
        double theta = (2.0 * EG_PI) * u2;
        out[i] = (float)(r * cos(theta));
        if (i + 1 < n)
            out[i + 1] = (float)(r * sin(theta));
    }
}

uint64_t eg_step_seed(uint64_t seed, int index)
{
    return eg_splitmix64(seed ^ EG_STEP_SEED_SALT, (uint64_t)index + 1);
}

void eg_step_noise_fill(uint64_t seed, int index, float *out, size_t n)
{
    eg_normal_fill(eg_step_seed(seed, index), out, n);
}
