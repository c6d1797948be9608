#ifndef EG_RNG_H
#define EG_RNG_H

#include <stddef.h>
#include <stdint.h>

/* The seeded standard-normal generator (SplitMix64 -> Box-Muller in double -> float32).
   runtimes/noise.py's normal(seed, shape) documents the definition and draws the same values. */
void eg_normal_fill(uint64_t seed, float *out, size_t n);

/* The k-th output (k >= 1) of SplitMix64 started at state seed. */
uint64_t eg_splitmix64(uint64_t seed, uint64_t k);

#endif
