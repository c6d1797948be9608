#include "schedulers.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "util.h"

enum { KIND_DDIM, KIND_EULER };
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
    float *sigmas;          /* Euler: [count + 1] */
};

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

static int check_options(const char *kind, const eg_json *cfg, char *err, size_t errlen)
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

static int make_betas(const eg_json *cfg, int n, float *betas, char *err, size_t errlen)
{
    double start, end;
    if (number_opt(cfg, "beta_start", 0.0001, &start, err, errlen) ||
        number_opt(cfg, "beta_end", 0.02, &end, err, errlen))
        return -1;
    char r[64] = "";
    const char *schedule = string_opt(cfg, "beta_schedule", "linear", r, sizeof r);
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

static int open_from(const eg_json *cfg, int kind, eg_scheduler **out, char *err, size_t errlen)
{
    if (check_options(kind == KIND_DDIM ? "DDIM" : "Euler", cfg, err, errlen))
        return -1;
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
    s->n_train = (int)n_train;
    s->steps_offset = (long long)trunc(offset);
    s->clip_range = (float)clip_range;
    s->clip_sample = bool_opt(cfg, "clip_sample", 1);
    char r[64] = "";
    const char *prediction = string_opt(cfg, "prediction_type", "epsilon", r, sizeof r);
    s->prediction = !strcmp(prediction, "epsilon") ? PRED_EPSILON : !strcmp(prediction, "sample") ? PRED_SAMPLE : PRED_V;
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
    if (make_betas(cfg, s->n_train, betas, err, errlen))
        goto fail;
    float acc = 1.0f;
    for (int i = 0; i < s->n_train; i++) {
        acc *= 1.0f - betas[i];
        s->alphas_cumprod[i] = acc;
    }
    s->final_alpha_cumprod = bool_opt(cfg, "set_alpha_to_one", 1) ? 1.0f : s->alphas_cumprod[0];
    if (kind == KIND_EULER) {
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

int eg_scheduler_open(const char *config_json, size_t len, const char *override, eg_scheduler **out, char *err,
                      size_t errlen)
{
    if (!out || !config_json) {
        (void)eg_fail(err, errlen, EG_ERR_ARTIFACT, "eg_scheduler_open: NULL argument");
        return -1;
    }
    *out = NULL;
    int kind;
    if (override) {
        if (!strcmp(override, "ddim"))
            kind = KIND_DDIM;
        else if (!strcmp(override, "euler"))
            kind = KIND_EULER;
        else {
            (void)eg_fail(err, errlen, EG_ERR_ARTIFACT,
                          "unknown scheduler '%.40s'; choose one of ['ddim', 'euler']", override);
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
        if (name && !strcmp(name, "DDIMScheduler"))
            kind = KIND_DDIM;
        else if (name && !strcmp(name, "EulerDiscreteScheduler"))
            kind = KIND_EULER;
        else {
            char r[64] = "None";
            if (cls)
                repr(cls, r, sizeof r);
            (void)eg_fail(err, errlen, EG_ERR_ARTIFACT,
                    "scheduler %s is not implemented by edgegen's runtime; it implements ['DDIMScheduler', "
                    "'EulerDiscreteScheduler']. Pass scheduler='ddim' or 'euler' (CLI: --scheduler) to use one of "
                    "them with this config.", r);
            eg_json_free(cfg);
            return -1;
        }
    }
    int rc = open_from(cfg, kind, out, err, errlen);
    eg_json_free(cfg);
    return rc;
}

/* np.arange(start, 0, step) for a negative float step, as numpy fills it: start + i * (start + step - start). */
static long arange_len(double start, double step)
{
    double len = ceil((0.0 - start) / step);
    return len > 0 ? (long)len : 0;
}

int eg_scheduler_set_timesteps(eg_scheduler *s, int steps, char *err, size_t errlen)
{
    int n = s->n_train;
    if (steps < 1 || steps > n) {
        (void)eg_fail(err, errlen, EG_ERR_ARTIFACT, "num_inference_steps must be in 1..%d, got %d", n, steps);
        return -1;
    }
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
    float *sigmas = s->kind == KIND_EULER ? malloc(sizeof *sigmas * (count + 1)) : NULL;
    if (!t || (s->kind == KIND_EULER && !sigmas)) {
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
        for (long i = 0; i < count; i++) {
            double x = (double)t[i];
            double y;
            if (x <= 0)
                y = s->train_sigmas[0];
            else if (x >= n - 1)
                y = s->train_sigmas[n - 1];
            else {
                long j = (long)floor(x);
                double f0 = s->train_sigmas[j], f1 = s->train_sigmas[j + 1];
                y = x == (double)j ? f0 : (f1 - f0) * (x - (double)j) + f0;
            }
            sigmas[i] = (float)y;
        }
        sigmas[count] = 0.0f;
    }
    free(s->timesteps);
    s->timesteps = t;
    if (sigmas) {
        free(s->sigmas);
        s->sigmas = sigmas;
    }
    s->count = (int)count;
    s->ratio = n / steps;
    return 0;
}

int eg_scheduler_count(const eg_scheduler *s)
{
    return s->count;
}

float eg_scheduler_timestep(const eg_scheduler *s, int index)
{
    return index >= 0 && index < s->count ? s->timesteps[index] : NAN;
}

float eg_scheduler_sigma(const eg_scheduler *s, int index)
{
    if (s->kind != KIND_EULER)
        return 0.0f;
    return index >= 0 && index <= s->count ? s->sigmas[index] : NAN;
}

float eg_scheduler_init_noise_sigma(const eg_scheduler *s)
{
    if (s->kind == KIND_DDIM)
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
    if (s->kind == KIND_DDIM || index < 0 || index >= s->count) {
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

void eg_scheduler_step(const eg_scheduler *s, const float *model_output, int index, const float *sample, float *out,
                       size_t n)
{
    if (index < 0 || index >= s->count) {
        if (out != sample)
            memmove(out, sample, n * sizeof *out);
        return;
    }
    if (s->kind == KIND_DDIM)
        ddim_step(s, model_output, index, sample, out, n);
    else
        euler_step(s, model_output, index, sample, out, n);
}

void eg_scheduler_free(eg_scheduler *s)
{
    if (!s)
        return;
    free(s->alphas_cumprod);
    free(s->train_sigmas);
    free(s->timesteps);
    free(s->sigmas);
    free(s);
}
