#include "schedulers.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "util.h"

enum { KIND_DDIM, KIND_EULER, KIND_LCM, KIND_EULER_A, KIND_DPM, KIND_FLOW };
enum { PRED_EPSILON, PRED_SAMPLE, PRED_V };
enum { SPACING_DEFAULT, SPACING_LINSPACE, SPACING_LEADING, SPACING_TRAILING, SPACING_OTHER };

#define MAX_TRAIN_TIMESTEPS 100000

struct eg_scheduler {
    int kind;
    int prediction;
    int n_train;
    int spacing;            /* as the config gives it; SPACING_DEFAULT when absent */
    char spacing_name[64];  /* for the error of an unsupported spacing */
    long long steps_offset;
    int clip_sample;
    float clip_range;
    float final_alpha_cumprod;
    float *alphas_cumprod;  /* [n_train] */
    float *train_sigmas;    /* Euler: [n_train] */
    int count;
    int ratio;              /* DDIM: n_train / steps */
    float *timesteps;       /* [count] */
    float *sigmas;          /* Euler, Euler ancestral, DPM: [count + 1] */
    /* LCM */
    int original_steps;
    float timestep_scaling;
    /* DPM-Solver */
    int dpm_plus, dpm_order, dpm_heun, dpm_karras, dpm_final_zero, dpm_lower_order_final, dpm_euler_at_final;
    int beta_cosine;        /* squaredcos_cap_v2: Karras timesteps stay unrounded */
    /* flow matching */
    double shift, sigma_max, sigma_min, shift_terminal, base_len, max_len, base_shift, max_shift;
    int dynamic_shift, linear_time_shift;
    long image_seq_len;     /* 0 until eg_scheduler_set_image_seq_len */
    float *history;         /* the previous step's converted model output [history_n] */
    float *work;
    size_t history_n;
    int has_history;
};

static const char *const KIND_NAMES[] = {"DDIM", "Euler", "LCM", "Euler", "DPM-Solver", "FlowMatchEuler"};

/* Python's repr of a JSON value (close enough for messages; integral floats print as integers). */
static void repr(const eg_json *v, char *buf, size_t len)
{
    switch (v->type) {
    case EG_JSON_NULL: snprintf(buf, len, "None"); break;
    case EG_JSON_BOOL: snprintf(buf, len, "%s", v->boolean ? "True" : "False"); break;
    case EG_JSON_NUMBER:
        for (int digits = 1; digits <= 17; digits++) {
            snprintf(buf, len, "%.*g", digits, v->number);
            if (strtod(buf, NULL) == v->number)
                break;
        }
        break;
    case EG_JSON_STRING: snprintf(buf, len, "'%.40s'", v->string); break;
    case EG_JSON_ARRAY: {
        size_t used = (size_t)snprintf(buf, len, "[");
        for (size_t i = 0; i < v->count && used + 8 < len; i++) {
            char item[40];
            repr(&v->items[i], item, sizeof item);
            used += (size_t)snprintf(buf + used, len - used, "%s%s", i ? ", " : "", item);
        }
        if (used < len)
            snprintf(buf + used, len - used, "]");
        break;
    }
    default: snprintf(buf, len, "{...}"); break;
    }
}

static int number_opt(const eg_json *cfg, const char *key, double def, double *out, char *err, size_t errlen)
{
    const eg_json *v = eg_json_get(cfg, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (v->type == EG_JSON_NUMBER)
        *out = v->number;
    else if (v->type == EG_JSON_BOOL)
        *out = v->boolean;
    else {
        (void)eg_fail(err, errlen, EG_ERR_ARTIFACT, "scheduler config: %s must be a number", key);
        return -1;
    }
    return 0;
}

static int truthy(const eg_json *v)
{
    switch (v->type) {
    case EG_JSON_NULL: return 0;
    case EG_JSON_BOOL: return v->boolean;
    case EG_JSON_NUMBER: return v->number != 0;
    case EG_JSON_STRING: return v->string_len != 0;
    default: return v->count != 0;
    }
}

static int bool_opt(const eg_json *cfg, const char *key, int def)
{
    const eg_json *v = eg_json_get(cfg, key);
    return v ? truthy(v) : def;
}

/* def when absent, NULL when not a string; repr_buf gets the value as Python shows it. */
static const char *string_opt(const eg_json *cfg, const char *key, const char *def, char *repr_buf, size_t len)
{
    const eg_json *v = eg_json_get(cfg, key);
    if (!v)
        return def;
    repr(v, repr_buf, len);
    return v->type == EG_JSON_STRING ? v->string : NULL;
}

static int check_options(const char *kind, const eg_json *cfg, int allow_dpm, char *err, size_t errlen)
{
    static const struct { const char *key; int type; const char *def; } opts[] = {
        {"trained_betas", EG_JSON_NULL, "None"},
        {"thresholding", EG_JSON_BOOL, "False"},
        {"rescale_betas_zero_snr", EG_JSON_BOOL, "False"},
        {"use_karras_sigmas", EG_JSON_BOOL, "False"},
        {"use_exponential_sigmas", EG_JSON_BOOL, "False"},
        {"use_beta_sigmas", EG_JSON_BOOL, "False"},
        {"interpolation_type", EG_JSON_STRING, "linear"},
        {"timestep_type", EG_JSON_STRING, "discrete"},
        {"final_sigmas_type", EG_JSON_STRING, "zero"},
    };
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
        if (allow_dpm && (!strcmp(opts[i].key, "use_karras_sigmas") || !strcmp(opts[i].key, "final_sigmas_type")))
            continue;
        const eg_json *v = eg_json_get(cfg, opts[i].key);
        if (!v || v->type == EG_JSON_NULL)
            continue;
        int same;
        if (opts[i].type == EG_JSON_BOOL)
            same = (v->type == EG_JSON_BOOL && !v->boolean) || (v->type == EG_JSON_NUMBER && v->number == 0);
        else if (opts[i].type == EG_JSON_STRING)
            same = v->type == EG_JSON_STRING && strcmp(v->string, opts[i].def) == 0;
        else
            same = 0;
        if (!same) {
            char r[64];
            repr(v, r, sizeof r);
            const char *q = opts[i].type == EG_JSON_STRING ? "'" : "";
            (void)eg_fail(err, errlen, EG_ERR_ARTIFACT,
                    "%s scheduler option %s=%s is not implemented by edgegen's runtime (it supports %s=%s%s%s); "
                    "change it in scheduler_config.json or pick another scheduler.",
                    kind, opts[i].key, r, opts[i].key, q, opts[i].def, q);
            return -1;
        }
    }
    char r[64] = "";
    const char *prediction = string_opt(cfg, "prediction_type", "epsilon", r, sizeof r);
    if (!prediction || (strcmp(prediction, "epsilon") && strcmp(prediction, "v_prediction") &&
                        strcmp(prediction, "sample"))) {
        (void)eg_fail(err, errlen, EG_ERR_ARTIFACT,
                      "prediction_type %s is not supported; use epsilon, v_prediction or sample.", r);
        return -1;
    }
    return 0;
}

static double alpha_bar(double t)
{
    double c = cos((t + 0.008) / 1.008 * 3.14159265358979311599796346854 / 2);
    return c * c;
}

/* np.linspace(start, stop, num) in float64: i * step + start, the last value exactly stop. */
static double linspace_at(double start, double stop, long num, long i)
{
    if (num > 1 && i == num - 1)
        return stop;
    double div = num > 1 ? (double)(num - 1) : 1.0;
    double step = (stop - start) / div;
    if (step == 0)
        return (double)i / div * (stop - start) + start;
    return (double)i * step + start;
}

static int make_betas(const eg_json *cfg, int kind, int n, float *betas, char *err, size_t errlen)
{
    double start, end;
    int lcm = kind == KIND_LCM;  /* LCM's defaults are SD's schedule */
    if (number_opt(cfg, "beta_start", lcm ? 0.00085 : 0.0001, &start, err, errlen) ||
        number_opt(cfg, "beta_end", lcm ? 0.012 : 0.02, &end, err, errlen))
        return -1;
    char r[64] = "";
    const char *schedule = string_opt(cfg, "beta_schedule", lcm ? "scaled_linear" : "linear", r, sizeof r);
    if (schedule && !strcmp(schedule, "linear")) {
        for (int i = 0; i < n; i++)
            betas[i] = (float)linspace_at(start, end, n, i);
    } else if (schedule && !strcmp(schedule, "scaled_linear")) {
        double a = pow(start, 0.5), b = pow(end, 0.5);
        for (int i = 0; i < n; i++) {
            float x = (float)linspace_at(a, b, n, i);
            betas[i] = x * x;
        }
    } else if (schedule && !strcmp(schedule, "squaredcos_cap_v2")) {
        for (int i = 0; i < n; i++) {
            double v = 1 - alpha_bar((double)(i + 1) / n) / alpha_bar((double)i / n);
            betas[i] = (float)(v < 0.999 ? v : 0.999);
        }
    } else {
        (void)eg_fail(err, errlen, EG_ERR_ARTIFACT,
                "scheduler beta_schedule %s is not supported; use linear, scaled_linear or squaredcos_cap_v2.", r);
        return -1;
    }
    return 0;
}

/* DPM-Solver's own options: the values edgegen implements, in runtimes/schedulers.py's order and words. */
static int dpm_options(const eg_json *cfg, eg_scheduler *s, char *err, size_t errlen)
{
    char r[64] = "", shown[64];
    const eg_json *v;
    const char *algo = string_opt(cfg, "algorithm_type", "dpmsolver++", r, sizeof r);
    if (!algo || (strcmp(algo, "dpmsolver++") && strcmp(algo, "dpmsolver")))
        return eg_fail(err, errlen, EG_ERR_ARTIFACT, "DPM-Solver scheduler option algorithm_type=%s is not "
                       "implemented by edgegen's runtime (it supports 'dpmsolver++' or 'dpmsolver'); change it in "
                       "scheduler_config.json or pick another scheduler.", r), -1;
    s->dpm_plus = !strcmp(algo, "dpmsolver++");
    double order = 2;
    v = eg_json_get(cfg, "solver_order");
    if (v && v->type == EG_JSON_NUMBER)
        order = v->number;
    if ((v && v->type != EG_JSON_NUMBER) || (order != 1 && order != 2)) {
        repr(v, shown, sizeof shown);
        return eg_fail(err, errlen, EG_ERR_ARTIFACT, "DPM-Solver scheduler option solver_order=%s is not implemented "
                       "by edgegen's runtime (it supports 1 or 2); change it in scheduler_config.json or pick "
                       "another scheduler.", shown), -1;
    }
    s->dpm_order = (int)order;
    const char *type = string_opt(cfg, "solver_type", "midpoint", r, sizeof r);
    if (!type || (strcmp(type, "midpoint") && strcmp(type, "heun")))
        return eg_fail(err, errlen, EG_ERR_ARTIFACT, "DPM-Solver scheduler option solver_type=%s is not implemented "
                       "by edgegen's runtime (it supports 'midpoint' or 'heun'); change it in "
                       "scheduler_config.json or pick another scheduler.", r), -1;
    s->dpm_heun = !strcmp(type, "heun");
    const char *final = string_opt(cfg, "final_sigmas_type", "zero", r, sizeof r);
    if (!final || (strcmp(final, "zero") && strcmp(final, "sigma_min")))
        return eg_fail(err, errlen, EG_ERR_ARTIFACT, "DPM-Solver scheduler option final_sigmas_type=%s is not "
                       "implemented by edgegen's runtime (it supports 'zero' or 'sigma_min'); change it in "
                       "scheduler_config.json or pick another scheduler.", r), -1;
    s->dpm_final_zero = !strcmp(final, "zero");
    v = eg_json_get(cfg, "variance_type");
    if (v && v->type != EG_JSON_NULL) {
        repr(v, shown, sizeof shown);
        return eg_fail(err, errlen, EG_ERR_ARTIFACT, "DPM-Solver scheduler option variance_type=%s is not "
                       "implemented by edgegen's runtime (it supports None); change it in scheduler_config.json "
                       "or pick another scheduler.", shown), -1;
    }
    static const char *const off[] = {"use_lu_lambdas", "use_flow_sigmas"};
    for (int i = 0; i < 2; i++) {
        v = eg_json_get(cfg, off[i]);
        if (v && !((v->type == EG_JSON_BOOL && !v->boolean) || (v->type == EG_JSON_NUMBER && v->number == 0))) {
            repr(v, shown, sizeof shown);
            return eg_fail(err, errlen, EG_ERR_ARTIFACT, "DPM-Solver scheduler option %s=%s is not implemented by "
                           "edgegen's runtime (it supports False); change it in scheduler_config.json or pick "
                           "another scheduler.", off[i], shown), -1;
        }
    }
    v = eg_json_get(cfg, "lambda_min_clipped");
    if (v && !(v->type == EG_JSON_NUMBER && isinf(v->number) && v->number < 0)) {
        repr(v, shown, sizeof shown);
        return eg_fail(err, errlen, EG_ERR_ARTIFACT, "DPM-Solver scheduler option lambda_min_clipped=%s is not "
                       "implemented by edgegen's runtime (it supports -inf); change it in scheduler_config.json or "
                       "pick another scheduler.", shown), -1;
    }
    if (!s->dpm_plus && s->dpm_final_zero)
        return eg_fail(err, errlen, EG_ERR_ARTIFACT, "DPM-Solver: algorithm_type 'dpmsolver' needs "
                       "final_sigmas_type 'sigma_min' (diffusers refuses 'zero' too); change it in "
                       "scheduler_config.json."), -1;
    s->dpm_karras = bool_opt(cfg, "use_karras_sigmas", 0);
    s->dpm_lower_order_final = bool_opt(cfg, "lower_order_final", 1);
    s->dpm_euler_at_final = bool_opt(cfg, "euler_at_final", 0);
    return 0;
}

/* FlowMatchEulerDiscrete's options, checked in runtimes/schedulers.py's order and words; the train schedule's
   first and last sigma (float32, shifted unless the shift is dynamic). */
static int flow_options(const eg_json *cfg, eg_scheduler *s, char *err, size_t errlen)
{
    static const char *const flags[] = {"invert_sigmas", "stochastic_sampling"};
    char r[64] = "";
    for (int i = 0; i < 2; i++) {
        const eg_json *v = eg_json_get(cfg, flags[i]);
        if (v && truthy(v)) {
            repr(v, r, sizeof r);
            return eg_fail(err, errlen, EG_ERR_ARTIFACT, "FlowMatchEuler scheduler option %s=%s is not implemented "
                           "by edgegen's runtime (it supports %s=False); change it in scheduler_config.json.",
                           flags[i], r, flags[i]), -1;
        }
    }
    const char *shift_type = string_opt(cfg, "time_shift_type", "exponential", r, sizeof r);
    if (!shift_type || (strcmp(shift_type, "exponential") && strcmp(shift_type, "linear")))
        return eg_fail(err, errlen, EG_ERR_ARTIFACT, "FlowMatchEuler time_shift_type %s is not supported; use "
                       "exponential or linear.", r), -1;
    s->linear_time_shift = !strcmp(shift_type, "linear");
    double n_train, base_len, max_len, base_shift, max_shift, terminal = 0;
    if (number_opt(cfg, "num_train_timesteps", 1000, &n_train, err, errlen) ||
        number_opt(cfg, "shift", 1.0, &s->shift, err, errlen) ||
        number_opt(cfg, "base_image_seq_len", 256, &base_len, err, errlen) ||
        number_opt(cfg, "max_image_seq_len", 4096, &max_len, err, errlen) ||
        number_opt(cfg, "base_shift", 0.5, &base_shift, err, errlen) ||
        number_opt(cfg, "max_shift", 1.15, &max_shift, err, errlen))
        return -1;
    const eg_json *t = eg_json_get(cfg, "shift_terminal");
    if (t && t->type != EG_JSON_NULL && number_opt(cfg, "shift_terminal", 0, &terminal, err, errlen))
        return -1;
    n_train = trunc(n_train);
    if (!(n_train >= 1 && n_train <= MAX_TRAIN_TIMESTEPS))
        return eg_fail(err, errlen, EG_ERR_ARTIFACT, "scheduler config: num_train_timesteps must be in 1..%d",
                       MAX_TRAIN_TIMESTEPS), -1;
    if (!(s->shift > 0))
        return eg_fail(err, errlen, EG_ERR_ARTIFACT, "scheduler config: shift must be positive; fix "
                       "scheduler_config.json"), -1;
    s->n_train = (int)n_train;
    s->shift_terminal = terminal;
    s->dynamic_shift = bool_opt(cfg, "use_dynamic_shifting", 0);
    s->base_len = trunc(base_len);
    s->max_len = trunc(max_len);
    s->base_shift = base_shift;
    s->max_shift = max_shift;
    float first = 1.0f, last = 1.0f / (float)s->n_train;
    if (!s->dynamic_shift) {
        float sh = (float)s->shift, sh1 = (float)(s->shift - 1.0);
        first = sh * first / (1.0f + sh1 * first);
        last = sh * last / (1.0f + sh1 * last);
    }
    s->sigma_max = first;
    s->sigma_min = last;
    s->sigmas = calloc(1, sizeof *s->sigmas);
    if (!s->sigmas)
        return eg_fail(err, errlen, EG_ERR_ARTIFACT, "scheduler: out of memory"), -1;
    return 0;
}

static int open_from(const eg_json *cfg, int kind, eg_scheduler **out, char *err, size_t errlen)
{
    if (check_options(KIND_NAMES[kind], cfg, kind == KIND_DPM, err, errlen))
        return -1;
    if (kind == KIND_FLOW) {
        eg_scheduler *f = calloc(1, sizeof *f);
        if (!f)
            return eg_fail(err, errlen, EG_ERR_ARTIFACT, "scheduler: out of memory"), -1;
        f->kind = KIND_FLOW;
        if (flow_options(cfg, f, err, errlen)) {
            eg_scheduler_free(f);
            return -1;
        }
        *out = f;
        return 0;
    }
    double n_train, offset, clip_range;
    if (number_opt(cfg, "num_train_timesteps", 1000, &n_train, err, errlen) ||
        number_opt(cfg, "steps_offset", 0, &offset, err, errlen) ||
        number_opt(cfg, "clip_sample_range", 1.0, &clip_range, err, errlen))
        return -1;
    n_train = trunc(n_train);
    if (!(n_train >= 1 && n_train <= MAX_TRAIN_TIMESTEPS)) {
        (void)eg_fail(err, errlen, EG_ERR_ARTIFACT,
                      "scheduler config: num_train_timesteps must be in 1..%d", MAX_TRAIN_TIMESTEPS);
        return -1;
    }
    if (!(fabs(offset) <= MAX_TRAIN_TIMESTEPS)) {
        (void)eg_fail(err, errlen, EG_ERR_ARTIFACT,
                      "scheduler config: steps_offset must be in -%d..%d", MAX_TRAIN_TIMESTEPS,
                MAX_TRAIN_TIMESTEPS);
        return -1;
    }
    eg_scheduler *s = calloc(1, sizeof *s);
    float *betas = NULL;
    if (!s)
        goto oom;
    s->kind = kind;
    if (kind == KIND_DPM && dpm_options(cfg, s, err, errlen))
        goto fail;
    double original_steps, scaling;
    if (kind == KIND_LCM && (number_opt(cfg, "original_inference_steps", 50, &original_steps, err, errlen) ||
                             number_opt(cfg, "timestep_scaling", 10.0, &scaling, err, errlen)))
        goto fail;
    if (kind == KIND_LCM) {
        if (!(original_steps >= 1 && original_steps <= MAX_TRAIN_TIMESTEPS)) {
            (void)eg_fail(err, errlen, EG_ERR_ARTIFACT,
                          "scheduler config: original_inference_steps must be in 1..%d", MAX_TRAIN_TIMESTEPS);
            goto fail;
        }
        s->original_steps = (int)original_steps;
        s->timestep_scaling = (float)scaling;
    }
    s->n_train = (int)n_train;
    s->steps_offset = (long long)trunc(offset);
    s->clip_range = (float)clip_range;
    s->clip_sample = bool_opt(cfg, "clip_sample", kind != KIND_LCM);
    char r[64] = "";
    const char *prediction = string_opt(cfg, "prediction_type", "epsilon", r, sizeof r);
    s->prediction = !strcmp(prediction, "epsilon") ? PRED_EPSILON : !strcmp(prediction, "sample") ? PRED_SAMPLE : PRED_V;
    if (kind == KIND_EULER_A && s->prediction == PRED_SAMPLE) {
        (void)eg_fail(err, errlen, EG_ERR_ARTIFACT, "prediction_type 'sample' is not implemented by "
                      "EulerAncestralDiscreteScheduler (diffusers neither); use epsilon or v_prediction, or another "
                      "scheduler.");
        goto fail;
    }
    const char *schedule = string_opt(cfg, "beta_schedule", "", r, sizeof r);
    s->beta_cosine = schedule && !strcmp(schedule, "squaredcos_cap_v2");
    const eg_json *spacing = eg_json_get(cfg, "timestep_spacing");
    if (!spacing) {
        s->spacing = SPACING_DEFAULT;
    } else {
        repr(spacing, s->spacing_name, sizeof s->spacing_name);
        const char *v = spacing->type == EG_JSON_STRING ? spacing->string : "";
        s->spacing = !strcmp(v, "linspace") ? SPACING_LINSPACE : !strcmp(v, "leading") ? SPACING_LEADING
                   : !strcmp(v, "trailing") ? SPACING_TRAILING : SPACING_OTHER;
    }
    betas = malloc(sizeof *betas * s->n_train);
    s->alphas_cumprod = malloc(sizeof *s->alphas_cumprod * s->n_train);
    if (!betas || !s->alphas_cumprod)
        goto oom;
    if (make_betas(cfg, kind, s->n_train, betas, err, errlen))
        goto fail;
    double acc = 1.0;  /* accumulated in double, as torch.cumprod does for diffusers */
    for (int i = 0; i < s->n_train; i++) {
        acc *= (double)(1.0f - betas[i]);
        s->alphas_cumprod[i] = (float)acc;
    }
    s->final_alpha_cumprod = bool_opt(cfg, "set_alpha_to_one", 1) ? 1.0f : s->alphas_cumprod[0];
    if (kind == KIND_EULER || kind == KIND_EULER_A || kind == KIND_DPM) {
        s->train_sigmas = malloc(sizeof *s->train_sigmas * s->n_train);
        s->sigmas = calloc(1, sizeof *s->sigmas);
        if (!s->train_sigmas || !s->sigmas)
            goto oom;
        for (int i = 0; i < s->n_train; i++) {
            float a = s->alphas_cumprod[i];
            s->train_sigmas[i] = sqrtf((1.0f - a) / a);
        }
    }
    free(betas);
    *out = s;
    return 0;
oom:
    (void)eg_fail(err, errlen, EG_ERR_ARTIFACT, "scheduler: out of memory");
fail:
    free(betas);
    eg_scheduler_free(s);
    return -1;
}

static const struct { const char *id, *class_name; int kind; } KINDS[] = {
    {"ddim", "DDIMScheduler", KIND_DDIM},
    {"euler", "EulerDiscreteScheduler", KIND_EULER},
    {"lcm", "LCMScheduler", KIND_LCM},
    {"euler_a", "EulerAncestralDiscreteScheduler", KIND_EULER_A},
    {"dpm", "DPMSolverMultistepScheduler", KIND_DPM},
    {"flow", "FlowMatchEulerDiscreteScheduler", KIND_FLOW},
};
#define N_KINDS ((int)(sizeof KINDS / sizeof KINDS[0]))

/* A flow-matching model predicts a velocity, a DDPM one noise (or x0, v): an override across the two families would
   run and return noise, so it is refused (runtimes/schedulers.py's _check_family). */
static int check_family(const eg_json *cfg, int kind, char *err, size_t errlen)
{
    const eg_json *cls = eg_json_get(cfg, "_class_name");
    int flow_model = cls && cls->type == EG_JSON_STRING && !strcmp(cls->string, "FlowMatchEulerDiscreteScheduler");
    if (flow_model && kind != KIND_FLOW) {
        const char *id = "";
        for (int k = 0; k < N_KINDS; k++)
            if (KINDS[k].kind == kind)
                id = KINDS[k].id;
        return eg_fail(err, errlen, EG_ERR_ARTIFACT, "scheduler '%s' samples noise-prediction models, and this model "
                       "was trained for flow matching (FlowMatchEulerDiscreteScheduler); use 'flow'", id), -1;
    }
    if (kind == KIND_FLOW && !flow_model) {
        char r[64] = "None";
        if (cls)
            repr(cls, r, sizeof r);
        return eg_fail(err, errlen, EG_ERR_ARTIFACT, "scheduler 'flow' samples flow-matching models, and this config's "
                       "%s is a noise-prediction model's; use one of ['ddim', 'dpm', 'euler', 'euler_a', 'lcm']", r), -1;
    }
    return 0;
}

int eg_scheduler_open(const char *config_json, size_t len, const char *override, eg_scheduler **out, char *err,
                      size_t errlen)
{
    if (!out || !config_json) {
        (void)eg_fail(err, errlen, EG_ERR_ARTIFACT, "eg_scheduler_open: NULL argument");
        return -1;
    }
    *out = NULL;
    int kind = -1;
    if (override) {
        for (int k = 0; k < N_KINDS; k++)
            if (!strcmp(override, KINDS[k].id))
                kind = KINDS[k].kind;
        if (kind < 0) {
            (void)eg_fail(err, errlen, EG_ERR_ARTIFACT,
                          "unknown scheduler '%.40s'; choose one of ['ddim', 'dpm', 'euler', 'euler_a', 'flow', "
                          "'lcm']",
                          override);
            return -1;
        }
    }
    eg_json *cfg = NULL;
    char jerr[200];
    if (eg_json_parse(config_json, len, &cfg, jerr, sizeof jerr)) {
        (void)eg_fail(err, errlen, EG_ERR_ARTIFACT, "scheduler config: %s", jerr);
        return -1;
    }
    if (cfg->type != EG_JSON_OBJECT) {
        eg_json_free(cfg);
        (void)eg_fail(err, errlen, EG_ERR_ARTIFACT, "scheduler config: not a JSON object");
        return -1;
    }
    if (!override) {
        const eg_json *cls = eg_json_get(cfg, "_class_name");
        const char *name = cls && cls->type == EG_JSON_STRING ? cls->string : NULL;
        for (int k = 0; name && k < N_KINDS; k++)
            if (!strcmp(name, KINDS[k].class_name))
                kind = KINDS[k].kind;
        if (kind < 0) {
            char r[64] = "None";
            if (cls)
                repr(cls, r, sizeof r);
            (void)eg_fail(err, errlen, EG_ERR_ARTIFACT,
                    "scheduler %s is not implemented by edgegen's runtime; it implements ['DDIMScheduler', "
                    "'DPMSolverMultistepScheduler', 'EulerAncestralDiscreteScheduler', 'EulerDiscreteScheduler', "
                    "'FlowMatchEulerDiscreteScheduler', 'LCMScheduler']. Pass scheduler='ddim' or 'euler' (CLI: --scheduler) to use one of "
                    "them with this config.", r);
            eg_json_free(cfg);
            return -1;
        }
    }
    if (override && check_family(cfg, kind, err, errlen)) {
        eg_json_free(cfg);
        return -1;
    }
    int rc = open_from(cfg, kind, out, err, errlen);
    eg_json_free(cfg);
    return rc;
}

void eg_scheduler_set_image_seq_len(eg_scheduler *s, long image_seq_len)
{
    if (s)
        s->image_seq_len = image_seq_len;
}

/* np.arange(start, 0, step) for a negative float step, as numpy fills it: start + i * (start + step - start). */
static long arange_len(double start, double step)
{
    double len = ceil((0.0 - start) / step);
    return len > 0 ? (long)len : 0;
}

/* np.interp(x, arange(n), train_sigmas): clamped at both ends. */
static float interp_sigma(const eg_scheduler *s, double x)
{
    int n = s->n_train;
    if (x <= 0)
        return s->train_sigmas[0];
    if (x >= n - 1)
        return s->train_sigmas[n - 1];
    long j = (long)floor(x);
    double f0 = s->train_sigmas[j], f1 = s->train_sigmas[j + 1];
    return (float)(x == (double)j ? f0 : (f1 - f0) * (x - (double)j) + f0);
}

static int install(eg_scheduler *s, float *t, float *sigmas, long count, char *err, size_t errlen)
{
    if (!t || (s->train_sigmas && !sigmas)) {
        free(t);
        free(sigmas);
        (void)eg_fail(err, errlen, EG_ERR_ARTIFACT, "scheduler: out of memory");
        return -1;
    }
    free(s->timesteps);
    s->timesteps = t;
    if (sigmas) {
        free(s->sigmas);
        s->sigmas = sigmas;
    }
    s->count = (int)count;
    s->has_history = 0;
    return 0;
}

/* LCM's distillation schedule (every k-th training step), then `steps` of it evenly by index. */
static int lcm_timesteps(eg_scheduler *s, int steps, char *err, size_t errlen)
{
    int n = s->n_train, orig = s->original_steps;
    if (orig > n)
        return eg_fail(err, errlen, EG_ERR_ARTIFACT, "LCM original_inference_steps %d is more than "
                       "num_train_timesteps %d; fix scheduler_config.json", orig, n), -1;
    if (steps > orig)
        return eg_fail(err, errlen, EG_ERR_ARTIFACT, "num_inference_steps must be at most LCM's "
                       "original_inference_steps (%d), got %d", orig, steps), -1;
    int k = n / orig;
    float *t = malloc(sizeof *t * steps);
    for (int i = 0; t && i < steps; i++) {
        long pick = (long)floor((double)i * ((double)orig / steps));
        t[i] = (float)((orig - pick) * k - 1);
    }
    return install(s, t, NULL, steps, err, errlen);
}

/* Fractional training timestep of sigma, interpolating log-sigma between its neighbours (diffusers' _sigma_to_t). */
static double sigma_to_t(const float *log_sigmas, int n, double sigma)
{
    double ls = log(sigma > 1e-10 ? sigma : 1e-10);
    int low = 0;
    for (int j = 0; j < n; j++)
        if (ls - (double)log_sigmas[j] >= 0)
            low = j;
    if (low > n - 2)
        low = n - 2;
    double lo = log_sigmas[low], hi = log_sigmas[low + 1];
    double w = (lo - ls) / (lo - hi);
    w = w < 0 ? 0 : w > 1 ? 1 : w;
    return (1 - w) * low + w * (low + 1);
}

/* DPM-Solver's spacing (steps + 1 points, the last dropped), or Karras sigmas and their timesteps. */
static int dpm_timesteps(eg_scheduler *s, int steps, char *err, size_t errlen)
{
    int n = s->n_train;
    int spacing = s->spacing == SPACING_DEFAULT ? SPACING_LINSPACE : s->spacing;
    if (spacing == SPACING_OTHER)
        return eg_fail(err, errlen, EG_ERR_ARTIFACT,
                       "timestep_spacing %s is not supported; use linspace, leading or trailing.", s->spacing_name), -1;
    long count = steps;
    double start = n, step = -(double)n / steps;
    if (spacing == SPACING_TRAILING && !s->dpm_karras)
        count = arange_len(start, step);
    float *t = malloc(sizeof *t * (count ? count : 1));
    float *sigmas = malloc(sizeof *sigmas * (count + 1));
    if (!t || !sigmas)
        return install(s, t, sigmas, 0, err, errlen);  /* frees both, reports out of memory */
    if (s->dpm_karras) {
        float *log_sigmas = malloc(sizeof *log_sigmas * n);
        if (!log_sigmas) {
            free(t);
            return install(s, NULL, sigmas, 0, err, errlen);
        }
        for (int j = 0; j < n; j++)
            log_sigmas[j] = logf(s->train_sigmas[j]);
        double rho = 7.0, lo = pow((double)s->train_sigmas[0], 1 / rho), hi = pow((double)s->train_sigmas[n - 1], 1 / rho);
        for (long i = 0; i < count; i++) {
            double sigma = pow(hi + linspace_at(0, 1, steps, i) * (lo - hi), rho);
            double ts = sigma_to_t(log_sigmas, n, sigma);
            sigmas[i] = (float)sigma;
            t[i] = (float)(long long)(s->beta_cosine ? ts : rint(ts));
        }
        free(log_sigmas);
    } else {
        double delta = (start + step) - start;
        for (long i = 0; i < count; i++) {
            double v;
            if (spacing == SPACING_LINSPACE)
                v = rint(linspace_at(0, n - 1, steps + 1, steps - i));
            else if (spacing == SPACING_LEADING)
                v = (double)((long long)(steps - i) * (n / (steps + 1)) + s->steps_offset);
            else
                v = rint(start + (double)i * delta) - 1;
            t[i] = (float)v;
            sigmas[i] = interp_sigma(s, v);
        }
    }
    sigmas[count] = s->dpm_final_zero ? 0.0f : s->train_sigmas[0];
    return install(s, t, sigmas, count, err, errlen);
}

/* Flow matching's spacing: linspace between the train schedule's ends, shifted (by `shift`, or by exp(mu) of the
   image's token count), optionally stretched to end at shift_terminal; in float64, then float32 as diffusers. */
static int flow_timesteps(eg_scheduler *s, int steps, char *err, size_t errlen)
{
    int n = s->n_train;
    double scale = 0;
    if (s->dynamic_shift) {
        if (s->image_seq_len <= 0)
            return eg_fail(err, errlen, EG_ERR_ARTIFACT, "this flow-matching scheduler shifts by the image size "
                           "(use_dynamic_shifting): pass set_timesteps(steps, image_seq_len=)"), -1;
        if (s->base_len == s->max_len)
            return eg_fail(err, errlen, EG_ERR_ARTIFACT, "scheduler config: max_image_seq_len must differ from "
                           "base_image_seq_len (both %.0f); fix scheduler_config.json", s->base_len), -1;
        /* runtimes/schedulers.py's flow_shift_mu: the pipelines' line through (base, base_shift), (max, max_shift) */
        double m = (s->max_shift - s->base_shift) / (s->max_len - s->base_len);
        double mu = (double)s->image_seq_len * m + (s->base_shift - m * s->base_len);
        scale = s->linear_time_shift ? mu : exp(mu);
    }
    double *v = malloc(sizeof *v * steps);
    if (!v)
        return eg_fail(err, errlen, EG_ERR_ARTIFACT, "scheduler: out of memory"), -1;
    for (int i = 0; i < steps; i++) {
        double x = linspace_at(s->sigma_max * n, s->sigma_min * n, steps, i) / n;
        v[i] = s->dynamic_shift ? scale / (scale + (1 / x - 1)) : s->shift * x / (1 + (s->shift - 1) * x);
    }
    if (s->shift_terminal != 0) {
        double last = 1 - v[steps - 1];
        if (last == 0) {
            free(v);
            return eg_fail(err, errlen, EG_ERR_ARTIFACT, "shift_terminal stretches the schedule from its last "
                           "sigma, which is 1 at %d step(s); run at least 2 steps", steps), -1;
        }
        double factor = last / (1 - s->shift_terminal);
        for (int i = 0; i < steps; i++)
            v[i] = 1 - (1 - v[i]) / factor;
    }
    float *t = malloc(sizeof *t * steps), *sigmas = malloc(sizeof *sigmas * (steps + 1));
    for (int i = 0; t && sigmas && i < steps; i++) {
        sigmas[i] = (float)v[i];
        t[i] = sigmas[i] * (float)n;
    }
    if (sigmas)
        sigmas[steps] = 0.0f;
    free(v);
    if (!t || !sigmas) {
        free(t);
        free(sigmas);
        return eg_fail(err, errlen, EG_ERR_ARTIFACT, "scheduler: out of memory"), -1;
    }
    return install(s, t, sigmas, steps, err, errlen);
}

int eg_scheduler_set_timesteps(eg_scheduler *s, int steps, char *err, size_t errlen)
{
    int n = s->n_train;
    if (steps < 1 || steps > n) {
        (void)eg_fail(err, errlen, EG_ERR_ARTIFACT, "num_inference_steps must be in 1..%d, got %d", n, steps);
        return -1;
    }
    if (s->kind == KIND_LCM)
        return lcm_timesteps(s, steps, err, errlen);
    if (s->kind == KIND_DPM)
        return dpm_timesteps(s, steps, err, errlen);
    if (s->kind == KIND_FLOW)
        return flow_timesteps(s, steps, err, errlen);
    int spacing = s->spacing;
    if (spacing == SPACING_DEFAULT)
        spacing = s->kind == KIND_DDIM ? SPACING_LEADING : SPACING_LINSPACE;
    int integer = s->kind == KIND_DDIM;
    long count = steps;
    double start = n, step = -(double)n / steps;
    if (spacing == SPACING_TRAILING)
        count = arange_len(start, step);
    else if (spacing == SPACING_OTHER) {
        (void)eg_fail(err, errlen, EG_ERR_ARTIFACT,
                      "timestep_spacing %s is not supported; use linspace, leading or trailing.",
                s->spacing_name);
        return -1;
    }
    float *t = malloc(sizeof *t * (count ? count : 1));
    float *sigmas = s->train_sigmas ? malloc(sizeof *sigmas * (count + 1)) : NULL;
    if (!t || (s->train_sigmas && !sigmas)) {
        free(t);
        free(sigmas);
        (void)eg_fail(err, errlen, EG_ERR_ARTIFACT, "scheduler: out of memory");
        return -1;
    }
    double delta = (start + step) - start;
    for (long i = 0; i < count; i++) {
        long j = count - 1 - i;  /* the schedules run backwards */
        double v;
        if (spacing == SPACING_LINSPACE) {
            v = linspace_at(0, n - 1, steps, j);
            v = integer ? rint(v) : (double)(float)v;
        } else if (spacing == SPACING_LEADING) {
            v = rint((double)j * (n / steps));
            v = integer ? v + (double)s->steps_offset : (double)((float)v + (float)s->steps_offset);
        } else {
            v = rint(start + (double)i * delta);
            v = integer ? v - 1 : (double)((float)v - 1.0f);
        }
        t[i] = (float)v;
        if (integer && (v < 0 || v > n - 1)) {
            free(t);
            free(sigmas);
            (void)eg_fail(err, errlen, EG_ERR_ARTIFACT,
                          "timestep %.0f is outside 0..%d (steps_offset %lld); fix scheduler_config.json",
                    v, n - 1, s->steps_offset);
            return -1;
        }
    }
    if (sigmas) {
        for (long i = 0; i < count; i++)
            sigmas[i] = interp_sigma(s, (double)t[i]);
        sigmas[count] = 0.0f;
    }
    s->ratio = n / steps;
    return install(s, t, sigmas, count, err, errlen);
}

int eg_scheduler_count(const eg_scheduler *s)
{
    return s->count;
}

float eg_scheduler_timestep(const eg_scheduler *s, int index)
{
    return index >= 0 && index < s->count ? s->timesteps[index] : NAN;
}

int eg_scheduler_needs_noise(const eg_scheduler *s)
{
    return s->kind == KIND_LCM || s->kind == KIND_EULER_A;
}

float eg_scheduler_sigma(const eg_scheduler *s, int index)
{
    if (!s->sigmas)
        return 0.0f;
    return index >= 0 && index <= s->count ? s->sigmas[index] : NAN;
}

float eg_scheduler_init_noise_sigma(const eg_scheduler *s)
{
    if (s->kind == KIND_DDIM || s->kind == KIND_LCM || s->kind == KIND_DPM || s->kind == KIND_FLOW)
        return 1.0f;
    float top = s->sigmas[0];
    for (int i = 1; i <= s->count; i++)
        if (s->sigmas[i] > top)
            top = s->sigmas[i];
    if (s->spacing == SPACING_DEFAULT || s->spacing == SPACING_LINSPACE || s->spacing == SPACING_TRAILING)
        return top;
    return (float)sqrt((double)top * top + 1);
}

void eg_scheduler_scale_model_input(const eg_scheduler *s, int index, const float *in, float *out, size_t n)
{
    if ((s->kind != KIND_EULER && s->kind != KIND_EULER_A) || index < 0 || index >= s->count) {
        if (out != in)
            memmove(out, in, n * sizeof *out);
        return;
    }
    float sigma = s->sigmas[index];
    float d = sqrtf(sigma * sigma + 1.0f);
    for (size_t i = 0; i < n; i++)
        out[i] = in[i] / d;
}

static void ddim_step(const eg_scheduler *s, const float *model_output, int index, const float *sample, float *out,
                      size_t n)
{
    int t = (int)s->timesteps[index];
    int prev = t - s->ratio;
    float a_t = s->alphas_cumprod[t];
    float a_prev = prev >= 0 ? s->alphas_cumprod[prev] : s->final_alpha_cumprod;
    float b_t = 1.0f - a_t;
    float sa = sqrtf(a_t), sb = sqrtf(b_t), sp = sqrtf(a_prev), sq = sqrtf(1.0f - a_prev);
    float lo = -s->clip_range, hi = s->clip_range;
    for (size_t i = 0; i < n; i++) {
        float m = model_output[i], x = sample[i], x0, eps;
        if (s->prediction == PRED_EPSILON) {
            x0 = (x - sb * m) / sa;
            eps = m;
        } else if (s->prediction == PRED_SAMPLE) {
            x0 = m;
            eps = (x - sa * x0) / sb;
        } else {
            x0 = sa * x - sb * m;
            eps = sa * m + sb * x;
        }
        if (s->clip_sample)
            x0 = x0 < lo ? lo : x0 > hi ? hi : x0;
        out[i] = sp * x0 + sq * eps;
    }
}

static void euler_step(const eg_scheduler *s, const float *model_output, int index, const float *sample, float *out,
                       size_t n)
{
    float sigma = s->sigmas[index], dt = s->sigmas[index + 1] - sigma;
    float s2 = sigma * sigma + 1.0f;
    float c_out = -sigma / sqrtf(s2);
    for (size_t i = 0; i < n; i++) {
        float m = model_output[i], x = sample[i], x0;
        if (s->prediction == PRED_EPSILON)
            x0 = x - sigma * m;
        else if (s->prediction == PRED_SAMPLE)
            x0 = m;
        else
            x0 = m * c_out + x / s2;
        float derivative = (x - x0) / sigma;
        out[i] = x + derivative * dt;
    }
}

static void lcm_step(const eg_scheduler *s, const float *model_output, int index, const float *sample,
                     const float *noise, float *out, size_t n)
{
    int t = (int)s->timesteps[index], last = index == s->count - 1;
    int prev = last ? t : (int)s->timesteps[index + 1];
    float a_t = s->alphas_cumprod[t];
    float a_prev = prev >= 0 ? s->alphas_cumprod[prev] : s->final_alpha_cumprod;
    float sa = sqrtf(a_t), sb = sqrtf(1.0f - a_t), sp = sqrtf(a_prev), sq = sqrtf(1.0f - a_prev);
    float scaled = (float)t * s->timestep_scaling;
    float c_skip = 0.25f / (scaled * scaled + 0.25f), c_out = scaled / sqrtf(scaled * scaled + 0.25f);
    float lo = -s->clip_range, hi = s->clip_range;
    for (size_t i = 0; i < n; i++) {
        float m = model_output[i], x = sample[i], x0;
        if (s->prediction == PRED_EPSILON)
            x0 = (x - sb * m) / sa;
        else if (s->prediction == PRED_SAMPLE)
            x0 = m;
        else
            x0 = sa * x - sb * m;
        if (s->clip_sample)
            x0 = x0 < lo ? lo : x0 > hi ? hi : x0;
        float denoised = c_out * x0 + c_skip * x;
        out[i] = last ? denoised : sp * denoised + sq * noise[i];
    }
}

static void euler_a_step(const eg_scheduler *s, const float *model_output, int index, const float *sample,
                         const float *noise, float *out, size_t n)
{
    float sigma = s->sigmas[index], to = s->sigmas[index + 1];
    float up = sqrtf(to * to * (sigma * sigma - to * to) / (sigma * sigma));
    /* diffusers' formula gives NaN where to/sigma is under float32's epsilon: clamped at 0, as in numpy */
    float down = sqrtf(fmaxf(to * to - up * up, 0.0f)), dt = down - sigma;
    float s2 = sigma * sigma + 1.0f, c_out = -sigma / sqrtf(s2);
    for (size_t i = 0; i < n; i++) {
        float m = model_output[i], x = sample[i];
        float x0 = s->prediction == PRED_EPSILON ? x - sigma * m : m * c_out + x / s2;
        float prev = x + (x - x0) / sigma * dt;
        out[i] = prev + noise[i] * up;
    }
}

static void dpm_alpha_sigma(float sigma, float *alpha, float *sigma_t, float *lambda)
{
    *alpha = 1.0f / sqrtf(sigma * sigma + 1.0f);
    *sigma_t = sigma * *alpha;
    *lambda = logf(*alpha) - logf(*sigma_t);
}

static int dpm_step(eg_scheduler *s, const float *model_output, int index, const float *sample, float *out, size_t n)
{
    if (s->history_n != n) {
        float *h = realloc(s->history, sizeof *h * (n ? n : 1)), *w = h ? realloc(s->work, sizeof *w * (n ? n : 1)) : NULL;
        if (h)
            s->history = h;
        if (w)
            s->work = w;
        if (!h || !w)
            return -1;
        s->history_n = n;
        s->has_history = 0;
    }
    int count = s->count;
    int final = index == count - 1 && (s->dpm_euler_at_final || (s->dpm_lower_order_final && count < 15) ||
                                       s->dpm_final_zero);
    int second = !(s->dpm_order == 1 || !s->has_history || final);
    float alpha_t, sigma_t, lambda_t, alpha_s, sigma_s, lambda_s, a1, s1, lambda_s1 = 0;
    dpm_alpha_sigma(s->sigmas[index + 1], &alpha_t, &sigma_t, &lambda_t);
    dpm_alpha_sigma(s->sigmas[index], &alpha_s, &sigma_s, &lambda_s);
    if (second)
        dpm_alpha_sigma(s->sigmas[index - 1], &a1, &s1, &lambda_s1);
    float h = lambda_t - lambda_s, em = expf(-h), ep = expf(h);
    float c1, c2, coef = 0, inv_r0 = 0;
    if (s->dpm_plus) {
        c1 = sigma_t / sigma_s;
        c2 = alpha_t * (em - 1.0f);
    } else {
        c1 = alpha_t / alpha_s;
        c2 = sigma_t * (ep - 1.0f);
    }
    if (second) {
        inv_r0 = 1.0f / ((lambda_s - lambda_s1) / h);
        if (s->dpm_plus)
            coef = s->dpm_heun ? alpha_t * ((em - 1.0f) / h + 1.0f) : -0.5f * (alpha_t * (em - 1.0f));
        else
            coef = s->dpm_heun ? -(sigma_t * ((ep - 1.0f) / h - 1.0f)) : -0.5f * (sigma_t * (ep - 1.0f));
    }
    for (size_t i = 0; i < n; i++) {
        float m = model_output[i], x = sample[i], m0;
        if (s->dpm_plus)
            m0 = s->prediction == PRED_EPSILON ? (x - sigma_s * m) / alpha_s
               : s->prediction == PRED_SAMPLE ? m : alpha_s * x - sigma_s * m;
        else
            m0 = s->prediction == PRED_EPSILON ? m
               : s->prediction == PRED_SAMPLE ? (x - alpha_s * m) / sigma_s : alpha_s * m + sigma_s * x;
        float y = c1 * x - c2 * m0;
        if (second)
            y = y + coef * (inv_r0 * (m0 - s->history[i]));
        s->work[i] = m0;
        out[i] = y;
    }
    float *tmp = s->history;
    s->history = s->work;
    s->work = tmp;
    s->has_history = 1;
    return 0;
}

int eg_scheduler_step(eg_scheduler *s, const float *model_output, int index, const float *sample, const float *noise,
                      float *out, size_t n)
{
    if (index < 0 || index >= s->count) {
        if (out != sample)
            memmove(out, sample, n * sizeof *out);
        return 0;
    }
    if (eg_scheduler_needs_noise(s) && !noise)
        return -1;
    switch (s->kind) {
    case KIND_DDIM: ddim_step(s, model_output, index, sample, out, n); return 0;
    case KIND_EULER: euler_step(s, model_output, index, sample, out, n); return 0;
    case KIND_LCM: lcm_step(s, model_output, index, sample, noise, out, n); return 0;
    case KIND_EULER_A: euler_a_step(s, model_output, index, sample, noise, out, n); return 0;
    case KIND_FLOW: {
        float dt = s->sigmas[index + 1] - s->sigmas[index];
        for (size_t i = 0; i < n; i++)
            out[i] = sample[i] + dt * model_output[i];
        return 0;
    }
    default: return dpm_step(s, model_output, index, sample, out, n);
    }
}

void eg_scheduler_free(eg_scheduler *s)
{
    if (!s)
        return;
    free(s->alphas_cumprod);
    free(s->train_sigmas);
    free(s->timesteps);
    free(s->sigmas);
    free(s->history);
    free(s->work);
    free(s);
}
