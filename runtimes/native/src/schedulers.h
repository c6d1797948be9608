#ifndef EG_SCHEDULERS_H
#define EG_SCHEDULERS_H

#include <stddef.h>

/* DDIM (eta 0) and EulerDiscrete, computed as runtimes/schedulers.py computes them (float32 state,
   float64 where numpy uses it), configured from a diffusers scheduler_config.json. */
typedef struct eg_scheduler eg_scheduler;

/* override: NULL (use the config's _class_name), "ddim" or "euler". */
int eg_scheduler_open(const char *config_json, size_t len, const char *override, eg_scheduler **out, char *err,
                      size_t errlen);
int eg_scheduler_set_timesteps(eg_scheduler *s, int steps, char *err, size_t errlen);
int eg_scheduler_count(const eg_scheduler *s);
float eg_scheduler_timestep(const eg_scheduler *s, int index);
/* sigma of step index for Euler (index in 0..count, the last is 0), 0 for DDIM. */
float eg_scheduler_sigma(const eg_scheduler *s, int index);
float eg_scheduler_init_noise_sigma(const eg_scheduler *s);
void eg_scheduler_scale_model_input(const eg_scheduler *s, int index, const float *in, float *out, size_t n);
/* out may alias sample or model_output. */
void eg_scheduler_step(const eg_scheduler *s, const float *model_output, int index, const float *sample, float *out,
                       size_t n);
void eg_scheduler_free(eg_scheduler *s);

#endif
