#ifndef EG_RNG_H
#define EG_RNG_H

#include <stddef.h>
#include <stdint.h>

/* The seeded standard-normal generator (SplitMix64 -> Box-Muller in double -> float32).
   runtimes/noise.py's normal(seed, shape) documents the definition and draws the same values. */
void eg_normal_fill(uint64_t seed, float *out, size_t n);

/* The k-th output (k >= 1) of SplitMix64 started at state seed. */
uint64_t eg_splitmix64(uint64_t seed, uint64_t k);

/* The noise a sampler adds at denoising step index (0-based), for a run with this seed: eg_normal_fill from
   eg_step_seed, the (index + 1)-th SplitMix64 output of seed ^ EG_STEP_SEED_SALT (runtimes/noise.py's step_noise). */
#define EG_STEP_SEED_SALT 0x5354455053454544ull /* "STEPSEED" */
uint64_t eg_step_seed(uint64_t seed, int index);
void eg_step_noise_fill(uint64_t seed, int index, float *out, size_t n);

#endif
