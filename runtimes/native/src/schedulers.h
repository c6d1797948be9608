#ifndef EG_SCHEDULERS_H
#define EG_SCHEDULERS_H

#include <stddef.h>

/* DDIM (eta 0), EulerDiscrete, LCM, EulerAncestralDiscrete, DPMSolverMultistep (2M, Karras or not) and
   FlowMatchEulerDiscrete (static or resolution-dependent shift), computed
   as runtimes/schedulers.py computes them (float32 state, float64 where numpy uses it), configured from a diffusers
   scheduler_config.json. */
typedef struct eg_scheduler eg_scheduler;

/* override: NULL (use the config's _class_name), "ddim", "euler", "lcm", "euler_a", "dpm" or "flow" (flow only for a
   FlowMatchEulerDiscreteScheduler config, and it only that). */
int eg_scheduler_open(const char *config_json, size_t len, const char *override, eg_scheduler **out, char *err,
                      size_t errlen);
/* Flow matching with use_dynamic_shifting: the image's token count, which sets the shift; before set_timesteps. */
void eg_scheduler_set_image_seq_len(eg_scheduler *s, long image_seq_len);
int eg_scheduler_set_timesteps(eg_scheduler *s, int steps, char *err, size_t errlen);
int eg_scheduler_count(const eg_scheduler *s);
float eg_scheduler_timestep(const eg_scheduler *s, int index);
/* sigma of step index for Euler, Euler ancestral, DPM and flow matching (index in 0..count), 0 for DDIM and LCM. */
float eg_scheduler_sigma(const eg_scheduler *s, int index);
float eg_scheduler_init_noise_sigma(const eg_scheduler *s);
void eg_scheduler_scale_model_input(const eg_scheduler *s, int index, const float *in, float *out, size_t n);
/* Whether step() takes noise: LCM and Euler ancestral add fresh noise at each step. */
int eg_scheduler_needs_noise(const eg_scheduler *s);
/* out may alias sample or model_output. noise [n]: the step's draw (eg_step_noise_fill) where the scheduler needs
   it, else NULL. DPM-Solver keeps the previous step's output: call the steps in order after set_timesteps.
   Returns -1 where noise is missing or memory runs out. */
int eg_scheduler_step(eg_scheduler *s, const float *model_output, int index, const float *sample, const float *noise,
                      float *out, size_t n);
void eg_scheduler_free(eg_scheduler *s);

#endif
