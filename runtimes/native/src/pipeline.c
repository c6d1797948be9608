/* Pipelines over the component sessions, computing what runtimes/class_conditional.py computes
   (same float32 operations in the same order). */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "schedulers.h"
#include "session.h"
#include "tokenizer.h"

#define MAX_STEPS 1000
#define MAX_IMAGES 4096

#define SD_DEFAULT_STEPS 20
#define SD_DEFAULT_GUIDANCE 7.5

struct eg_pipeline {
    eg_artifact *artifact;
    int text_to_image;
    eg_session *text_encoder, *unet, *vae;
    eg_tokenizer *tokenizer;
    int max_length;
    int64_t latent_shape[4];
    float scaling_factor;
    eg_session *transformer;
    int batch, channels, null_class, height, width;
    int64_t sample_shape[4]; /* one batch: [batch, channels, height, width] */
    int default_steps;
    double default_guidance;
    int cfg;                 /* text-to-image: 1 (batch 2, classifier-free guidance) or 0 (guidance "none", batch 1) */
    char *scheduler_config;
    size_t scheduler_len;
};

static int json_int(const eg_json *v, int lo, int hi, int *out) {
    if (!v || v->type != EG_JSON_NUMBER || v->number < lo || v->number > hi || v->number != (int)v->number) return -1;
    *out = (int)v->number;
    return 0;
}

static eg_status read_scheduler_config(eg_pipeline *p, char *err, size_t errlen) {
    const eg_artifact *a = p->artifact;
    const eg_json *rel = eg_json_get(a->pipeline, "scheduler_config");
    if (!rel || rel->type != EG_JSON_STRING || !eg_json_get(eg_json_get(a->manifest, "files"), rel->string))
        return eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s: pipeline/scheduler_config names no file the manifest lists; "
                       "rebuild the artifact.", a->root);
    char *path = eg_path_join(a->root, rel->string);
    if (!path) return eg_fail(err, errlen, EG_ERR_MEMORY, "out of memory");
    eg_status st = eg_file_read(path, (size_t)1 << 20, &p->scheduler_config, &p->scheduler_len, err, errlen);
    free(path);
    if (st) return st;
    eg_scheduler *s = NULL;
    if (eg_scheduler_open(p->scheduler_config, p->scheduler_len, NULL, &s, err, errlen))
        return EG_ERR_ARTIFACT;
    eg_scheduler_free(s);
    return EG_OK;
}

static eg_status open_class_conditional(eg_pipeline *p, char *err, size_t errlen) {
    const eg_json *cfg = p->artifact->pipeline, *shape = eg_json_get(cfg, "sample_shape");
    if (json_int(eg_json_get(cfg, "batch"), 1, 4096, &p->batch) ||
        json_int(eg_json_get(cfg, "in_channels"), 1, 64, &p->channels) ||
        json_int(eg_json_get(cfg, "null_class"), 1, 1 << 24, &p->null_class) || !shape ||
        shape->type != EG_JSON_ARRAY || shape->count != 4)
        return eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s: the class-conditional pipeline section lacks batch, in_channels, "
                       "null_class or a 4-d sample_shape; rebuild the artifact.", p->artifact->root);
    for (int d = 0; d < 4; d++) {
        int v;
        if (json_int(&shape->items[d], 1, 1 << 16, &v))
            return eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s: pipeline/sample_shape is not 4 positive integers", p->artifact->root);
        p->sample_shape[d] = v;
    }
    p->height = (int)p->sample_shape[2];
    p->width = (int)p->sample_shape[3];
    const eg_json *sampling = eg_json_get(cfg, "sampling"), *steps = eg_json_get(sampling, "steps"),
                  *g = eg_json_get(sampling, "guidance_scale");
    p->default_steps = 25;
    p->default_guidance = 4.0;
    if (steps && json_int(steps, 1, MAX_STEPS, &p->default_steps))
        return eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s: pipeline/sampling/steps is not in 1..%d", p->artifact->root, MAX_STEPS);
    if (g && g->type == EG_JSON_NUMBER) p->default_guidance = g->number;
    eg_status st = read_scheduler_config(p, err, errlen);
    if (st) return st;
    st = eg_session_open(p->artifact, "transformer", &p->transformer, err, errlen);
    if (st) return st;
    const eg_component *c = p->transformer->comp;
    const eg_spec *sample = eg_session_spec(p->transformer, 0, "sample", NULL),
                  *t = eg_session_spec(p->transformer, 0, "timestep", NULL),
                  *y = eg_session_spec(p->transformer, 0, "class_labels", NULL),
                  *out = eg_session_spec(p->transformer, 1, "noise_pred", NULL);
    int ok = sample && t && y && out && c->n_inputs == 3 && sample->dtype == EG_FLOAT32 && sample->ndim == 4 &&
             sample->shape[0] == 2 * p->batch && sample->shape[1] == p->channels && sample->shape[2] == p->height &&
             sample->shape[3] == p->width && t->dtype == EG_FLOAT32 && t->ndim == 1 && t->shape[0] == 2 * p->batch &&
             y->dtype == EG_INT32 && y->ndim == 1 && y->shape[0] == 2 * p->batch && out->dtype == EG_FLOAT32 &&
             out->ndim == 4 && out->shape[0] == 2 * p->batch && out->shape[1] >= p->channels &&
             out->shape[2] == p->height && out->shape[3] == p->width;
    if (!ok)
        return eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s: component transformer's inputs and outputs do not match the "
                       "pipeline's batch and sample shape; rebuild the artifact.", p->artifact->root);
    return EG_OK;
}

static const char *json_string(const eg_json *obj, const char *key) {
    const eg_json *v = eg_json_get(obj, key);
    return v && v->type == EG_JSON_STRING ? v->string : NULL;
}

static int spec_is(const eg_spec *s, eg_dtype dtype, int ndim, const int64_t *shape) {
    if (!s || s->dtype != dtype || s->ndim != ndim) return 0;
    for (int d = 0; d < ndim; d++) if (s->shape[d] != shape[d]) return 0;
    return 1;
}

static eg_status open_text_to_image(eg_pipeline *p, char *err, size_t errlen) {
    const eg_artifact *a = p->artifact;
    const eg_json *cfg = a->pipeline, *tok = eg_json_get(cfg, "tokenizer"), *shape = eg_json_get(cfg, "latent_shape"),
                  *scale = eg_json_get(cfg, "vae_scaling_factor"), *files = eg_json_get(a->manifest, "files");
    const char *vocab = json_string(tok, "vocab"), *merges = json_string(tok, "merges");
    if (json_int(eg_json_get(cfg, "height"), 1, 1 << 16, &p->height) ||
        json_int(eg_json_get(cfg, "width"), 1, 1 << 16, &p->width) || !shape || shape->type != EG_JSON_ARRAY ||
        shape->count != 4 || !scale || scale->type != EG_JSON_NUMBER || scale->number == 0 || !vocab || !merges ||
        !eg_json_get(files, vocab) || !eg_json_get(files, merges) ||
        json_int(eg_json_get(tok, "max_length"), 1, 4096, &p->max_length) || !json_string(tok, "bos_token") ||
        !json_string(tok, "eos_token") || !json_string(tok, "pad_token") || !json_string(tok, "unk_token"))
        return eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s: the stable-diffusion pipeline section lacks height, width, "
                       "latent_shape, vae_scaling_factor or a tokenizer whose files the manifest lists; rebuild the "
                       "artifact.", a->root);
    for (int d = 0; d < 4; d++) {
        int v;
        if (json_int(&shape->items[d], 1, 1 << 16, &v))
            return eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s: pipeline/latent_shape is not 4 positive integers", a->root);
        p->latent_shape[d] = v;
    }
    if (p->latent_shape[0] != 1)
        return eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s: latent_shape must hold one image", a->root);
    if (eg_json_get(cfg, "vae_tiling"))
        return eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s: the VAE decoder was built for latent tiles (--vae-tile), "
                       "which this native runtime does not decode yet; run it with the Python runtime, or rebuild "
                       "without --vae-tile.", a->root);
    p->scaling_factor = (float)scale->number;
    p->channels = 3;
    p->batch = 1;
    const char *guidance = json_string(cfg, "guidance");
    p->cfg = !guidance || strcmp(guidance, "none") != 0;
    const eg_json *sampling = eg_json_get(cfg, "sampling"), *steps = eg_json_get(sampling, "steps"),
                  *g = eg_json_get(sampling, "guidance_scale");
    p->default_steps = SD_DEFAULT_STEPS;
    p->default_guidance = p->cfg ? SD_DEFAULT_GUIDANCE : 1.0;
    if (steps && json_int(steps, 1, MAX_STEPS, &p->default_steps))
        return eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s: pipeline/sampling/steps is not in 1..%d", a->root, MAX_STEPS);
    if (g && g->type == EG_JSON_NUMBER) p->default_guidance = g->number;
    char *vp = eg_path_join(a->root, vocab), *mp = eg_path_join(a->root, merges);
    int bad = !vp || !mp ||
              eg_tokenizer_open(vp, mp, p->max_length, json_string(tok, "bos_token"), json_string(tok, "eos_token"),
                                json_string(tok, "pad_token"), json_string(tok, "unk_token"), &p->tokenizer, err,
                                errlen);
    free(vp);
    free(mp);
    if (bad) return EG_ERR_ARTIFACT;
    eg_status st = read_scheduler_config(p, err, errlen);
    if (st || (st = eg_session_open(p->artifact, "text_encoder", &p->text_encoder, err, errlen)) ||
        (st = eg_session_open(p->artifact, "unet", &p->unet, err, errlen)) ||
        (st = eg_session_open(p->artifact, "vae_decoder", &p->vae, err, errlen)))
        return st;
    const eg_spec *ids = eg_session_spec(p->text_encoder, 0, "input_ids", NULL),
                  *hidden = eg_session_spec(p->text_encoder, 1, "last_hidden_state", NULL);
    int64_t b = p->cfg ? 2 : 1;  /* the text encoder's and UNet's batch */
    int64_t ids_shape[2] = {b, p->max_length}, l2[4], lat[4], img[4] = {1, 3, p->height, p->width};
    memcpy(l2, p->latent_shape, sizeof l2);
    l2[0] = b;
    memcpy(lat, p->latent_shape, sizeof lat);
    int64_t two[1] = {b};
    int ok = spec_is(ids, EG_INT32, 2, ids_shape) && hidden && hidden->dtype == EG_FLOAT32 && hidden->ndim == 3 &&
             hidden->shape[0] == b && p->text_encoder->comp->n_inputs == 1 &&
             spec_is(eg_session_spec(p->unet, 0, "sample", NULL), EG_FLOAT32, 4, l2) &&
             spec_is(eg_session_spec(p->unet, 0, "timestep", NULL), EG_FLOAT32, 1, two) &&
             spec_is(eg_session_spec(p->unet, 0, "encoder_hidden_states", NULL), EG_FLOAT32, 3, hidden->shape) &&
             spec_is(eg_session_spec(p->unet, 1, "out_sample", NULL), EG_FLOAT32, 4, l2) && p->unet->comp->n_inputs == 3 &&
             spec_is(eg_session_spec(p->vae, 0, "latent_sample", NULL), EG_FLOAT32, 4, lat) && p->vae->comp->n_inputs == 1 &&
             spec_is(eg_session_spec(p->vae, 1, "sample", NULL), EG_FLOAT32, 4, img);
    if (!ok)
        return eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s: the text encoder, UNet and VAE decoder's inputs and outputs do "
                       "not fit together and the pipeline's shapes; rebuild the artifact.", a->root);
    return EG_OK;
}

eg_status eg_pipeline_open(eg_artifact *artifact, eg_pipeline **out, char *err, size_t errlen) {
    if (!artifact || !out) return eg_fail(err, errlen, EG_ERR_ARGUMENT, "eg_pipeline_open: artifact and out are required");
    *out = NULL;
    const char *kind = eg_artifact_kind(artifact);
    int t2i = strcmp(kind, "stable-diffusion") == 0;
    if (!t2i && strcmp(kind, "class-conditional-dit") != 0)
        return eg_fail(err, errlen, EG_ERR_UNAVAILABLE, "%s: pipeline kind '%s' is not supported by this runtime "
                       "(it runs class-conditional-dit and stable-diffusion)", artifact->root, kind);
    eg_pipeline *p = calloc(1, sizeof *p);
    if (!p) return eg_fail(err, errlen, EG_ERR_MEMORY, "out of memory");
    p->artifact = artifact;
    p->text_to_image = t2i;
    eg_status st = t2i ? open_text_to_image(p, err, errlen) : open_class_conditional(p, err, errlen);
    if (st) { eg_pipeline_close(p); return st; }
    *out = p;
    return EG_OK;
}

void eg_pipeline_close(eg_pipeline *p) {
    if (!p) return;
    eg_session_close(p->transformer);
    eg_session_close(p->text_encoder);
    eg_session_close(p->unet);
    eg_session_close(p->vae);
    eg_tokenizer_free(p->tokenizer);
    free(p->scheduler_config);
    free(p);
}

void eg_pipeline_image_shape(const eg_pipeline *p, int *height, int *width, int *channels) {
    if (height) *height = p ? p->height : 0;
    if (width) *width = p ? p->width : 0;
    if (channels) *channels = p ? p->channels : 0;
}

int eg_pipeline_batch(const eg_pipeline *p) { return p ? p->batch : 0; }
int eg_pipeline_default_steps(const eg_pipeline *p) { return p ? p->default_steps : 0; }

/* names: "7, seven" -> is `want` (trimmed, case-insensitive) one of the comma-separated names? */
static int names_match(const char *names, const char *want) {
    size_t wl = strlen(want);
    while (wl && (want[wl - 1] == ' ' || want[wl - 1] == '\t')) wl--;
    while (*want == ' ' || *want == '\t') { want++; wl--; }
    for (const char *p = names;;) {
        const char *comma = strchr(p, ','), *end = comma ? comma : p + strlen(p);
        const char *a = p, *b = end;
        while (a < b && (*a == ' ' || *a == '\t')) a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t')) b--;
        if ((size_t)(b - a) == wl && wl) {
            size_t i = 0;
            while (i < wl && tolower((unsigned char)a[i]) == tolower((unsigned char)want[i])) i++;
            if (i == wl) return 1;
        }
        if (!comma) return 0;
        p = comma + 1;
    }
}

eg_status eg_pipeline_label_id(const eg_pipeline *p, const char *name, int32_t *id, char *err, size_t errlen) {
    if (!p || !name || !id) return eg_fail(err, errlen, EG_ERR_ARGUMENT, "pipeline, name and id are required");
    const eg_json *map = eg_json_get(p->artifact->pipeline, "id2label");
    for (size_t i = 0; map && map->type == EG_JSON_OBJECT && i < map->count; i++) {
        char *end;
        long k = strtol(map->keys[i], &end, 10);
        if (*end || end == map->keys[i] || k < 0 || k >= p->null_class || map->items[i].type != EG_JSON_STRING) continue;
        if (names_match(map->items[i].string, name)) { *id = (int32_t)k; return EG_OK; }
    }
    return eg_fail(err, errlen, EG_ERR_INPUT, "unknown class label '%.100s'; this model knows the names in its "
                   "manifest's pipeline/id2label", name);
}

void eg_class_options_init(eg_class_options *o) {
    memset(o, 0, sizeof *o);
    o->guidance = -1;
}

void eg_text_options_init(eg_text_options *o) {
    memset(o, 0, sizeof *o);
    o->guidance = -1;
}

/* VAE-style output in [-1, 1], NCHW -> uint8 NHWC, as runtimes/image.py to_uint8. */
static void to_uint8(const float *x, int n, int c, int h, int w, uint8_t *out) {
    for (int i = 0; i < n; i++)
        for (int y = 0; y < h; y++)
            for (int xx = 0; xx < w; xx++)
                for (int k = 0; k < c; k++) {
                    float v = x[(((size_t)i * c + k) * h + y) * w + xx] / 2.0f + 0.5f;
                    v = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
                    out[(((size_t)i * h + y) * w + xx) * c + k] = (uint8_t)rintf(v * 255.0f);
                }
}

typedef struct {
    const eg_class_options *o;
    int done, total;
} progress;

/* One batch: labels and noise fill the artifact's batch exactly; x (batch samples) is the result. */
static eg_status denoise(eg_pipeline *p, const int32_t *labels, const float *noise, int steps, float guidance,
                         progress *pr, float *x, char *err, size_t errlen) {
    int n = p->batch, c = p->channels;
    size_t per = (size_t)c * p->height * p->width, half = (size_t)n * per;
    const eg_spec *outspec = eg_session_spec(p->transformer, 1, "noise_pred", NULL);
    size_t cout = (size_t)outspec->shape[1], out_count = (size_t)2 * n * cout * p->height * p->width;
    eg_scheduler *s = NULL;
    float *inp = malloc(2 * half * sizeof(float)), *scaled = malloc(2 * half * sizeof(float)),
          *ts = malloc(2 * (size_t)n * sizeof(float)), *out = malloc(out_count * sizeof(float)),
          *guided = malloc(half * sizeof(float));
    int32_t *y = malloc(2 * (size_t)n * sizeof(int32_t));
    eg_status st = EG_OK;
    if (!inp || !scaled || !ts || !out || !guided || !y) { st = eg_fail(err, errlen, EG_ERR_MEMORY, "out of memory"); goto done; }
    if (eg_scheduler_open(p->scheduler_config, p->scheduler_len, pr->o->scheduler, &s, err, errlen) ||
        eg_scheduler_set_timesteps(s, steps, err, errlen)) { st = EG_ERR_ARGUMENT; goto done; }
    if (eg_scheduler_needs_noise(s)) {
        st = eg_fail(err, errlen, EG_ERR_ARGUMENT, "this scheduler adds noise at each step, which class-conditional "
                     "pipelines do not draw; use ddim, euler or dpm");
        goto done;
    }
    for (int i = 0; i < n; i++) { y[i] = labels[i]; y[n + i] = p->null_class; }
    float sigma = eg_scheduler_init_noise_sigma(s);
    for (size_t k = 0; k < half; k++) x[k] = noise[k] * sigma;
    int count = eg_scheduler_count(s);
    for (int i = 0; i < count; i++) {
        if (pr->o->cancel && *pr->o->cancel) { st = eg_fail(err, errlen, EG_ERR_CANCELLED, "cancelled"); goto done; }
        memcpy(inp, x, half * sizeof(float));
        memcpy(inp + half, x, half * sizeof(float));
        eg_scheduler_scale_model_input(s, i, inp, scaled, 2 * half);
        float t = eg_scheduler_timestep(s, i);
        for (int k = 0; k < 2 * n; k++) ts[k] = t;
        if ((st = eg_session_set_input(p->transformer, "sample", scaled, 2 * half * sizeof(float), err, errlen)) ||
            (st = eg_session_set_input(p->transformer, "timestep", ts, 2 * (size_t)n * sizeof(float), err, errlen)) ||
            (st = eg_session_set_input(p->transformer, "class_labels", y, 2 * (size_t)n * sizeof(int32_t), err, errlen)) ||
            (st = eg_session_run(p->transformer, err, errlen)) ||
            (st = eg_session_get_output(p->transformer, "noise_pred", out, out_count * sizeof(float), err, errlen)))
            goto done;
        size_t hw = (size_t)p->height * p->width;
        for (int b = 0; b < n; b++)
            for (size_t k = 0; k < per; k++) {
                float cond = out[(size_t)b * cout * hw + k], uncond = out[(size_t)(n + b) * cout * hw + k];
                guided[(size_t)b * per + k] = guidance > 1 ? uncond + guidance * (cond - uncond) : cond;
            }
        if (eg_scheduler_step(s, guided, i, x, NULL, x, half)) { st = eg_fail(err, errlen, EG_ERR_MEMORY, "out of memory"); goto done; }
        pr->done++;
        if (pr->o->callback && pr->o->callback(pr->o->user, pr->done, pr->total, t)) {
            st = eg_fail(err, errlen, EG_ERR_CANCELLED, "cancelled by the step callback");
            goto done;
        }
    }
done:
    eg_scheduler_free(s);
    free(inp); free(scaled); free(ts); free(out); free(guided); free(y);
    return st;
}

eg_status eg_pipeline_class_conditional(eg_pipeline *p, const eg_class_options *o, uint8_t *pixels, size_t bytes,
                                        char *err, size_t errlen) {
    if (!p || !o || !pixels) return eg_fail(err, errlen, EG_ERR_ARGUMENT, "pipeline, options and pixels are required");
    if (!p->transformer) return eg_fail(err, errlen, EG_ERR_ARGUMENT, "this pipeline is not class-conditional");
    if (!o->labels || o->n_labels < 1 || o->n_labels > MAX_IMAGES)
        return eg_fail(err, errlen, EG_ERR_INPUT, "pass 1..%d class labels", MAX_IMAGES);
    size_t per = (size_t)p->channels * p->height * p->width;
    if (bytes < o->n_labels * per) return eg_fail(err, errlen, EG_ERR_ARGUMENT, "pixels: %zu bytes, %zu needed", bytes, o->n_labels * per);
    for (size_t i = 0; i < o->n_labels; i++)
        if (o->labels[i] < 0 || o->labels[i] >= p->null_class)
            return eg_fail(err, errlen, EG_ERR_INPUT, "class id %d is out of range 0..%d.", o->labels[i], p->null_class - 1);
    int steps = o->steps ? o->steps : p->default_steps;
    if (steps < 1 || steps > MAX_STEPS) return eg_fail(err, errlen, EG_ERR_INPUT, "steps must be in 1..%d", MAX_STEPS);
    float guidance = o->guidance < 0 ? (float)p->default_guidance : o->guidance;
    size_t n = o->n_labels, nb = (n + (size_t)p->batch - 1) / (size_t)p->batch;
    float *noise = malloc(n * per * sizeof(float)), *bn = malloc((size_t)p->batch * per * sizeof(float)),
          *x = malloc((size_t)p->batch * per * sizeof(float)), *final = malloc(n * per * sizeof(float));
    int32_t *bl = malloc((size_t)p->batch * sizeof(int32_t));
    eg_status st = EG_OK;
    if (!noise || !bn || !x || !final || !bl) { st = eg_fail(err, errlen, EG_ERR_MEMORY, "out of memory"); goto done; }
    eg_normal_fill(o->seed, noise, n * per);
    progress pr = {o, 0, (int)(steps * nb)};
    for (size_t start = 0; start < n; start += (size_t)p->batch) {
        size_t chunk = n - start < (size_t)p->batch ? n - start : (size_t)p->batch;
        for (size_t i = 0; i < (size_t)p->batch; i++) {
            size_t src = i < chunk ? start + i : start; /* pad the static batch with the chunk's first */
            bl[i] = o->labels[src];
            memcpy(bn + i * per, noise + src * per, per * sizeof(float));
        }
        if ((st = denoise(p, bl, bn, steps, guidance, &pr, x, err, errlen))) goto done;
        memcpy(final + start * per, x, chunk * per * sizeof(float));
    }
    to_uint8(final, (int)n, p->channels, p->height, p->width, pixels);
done:
    free(noise); free(bn); free(x); free(final); free(bl);
    return st;
}

eg_status eg_pipeline_text_to_image(eg_pipeline *p, const eg_text_options *o, uint8_t *pixels, size_t bytes, char *err,
                                    size_t errlen) {
    if (!p || !o || !pixels) return eg_fail(err, errlen, EG_ERR_ARGUMENT, "pipeline, options and pixels are required");
    if (!p->text_to_image) return eg_fail(err, errlen, EG_ERR_ARGUMENT, "this pipeline is not text-to-image");
    if (!o->prompt) return eg_fail(err, errlen, EG_ERR_INPUT, "a prompt is required");
    size_t image = (size_t)p->height * p->width * 3;
    if (bytes < image) return eg_fail(err, errlen, EG_ERR_ARGUMENT, "pixels: %zu bytes, %zu needed", bytes, image);
    int steps = o->steps ? o->steps : p->default_steps;
    if (steps < 1 || steps > MAX_STEPS) return eg_fail(err, errlen, EG_ERR_INPUT, "steps must be in 1..%d", MAX_STEPS);
    float guidance = o->guidance < 0 ? (float)p->default_guidance : o->guidance;
    const char *neg = o->negative_prompt ? o->negative_prompt : "";
    if (!p->cfg && guidance > 1)
        return eg_fail(err, errlen, EG_ERR_INPUT, "guidance %g: this artifact was built without classifier-free "
                       "guidance (--guidance none: a batch-1 UNet); use a guidance <= 1, or rebuild with --guidance cfg",
                       (double)guidance);
    if (!p->cfg && *neg)
        return eg_fail(err, errlen, EG_ERR_INPUT, "negative prompt: this artifact was built without classifier-free "
                       "guidance (--guidance none), which has no negative branch; rebuild with --guidance cfg");
    size_t b = p->cfg ? 2 : 1;
    const eg_spec *hidden = eg_session_spec(p->text_encoder, 1, "last_hidden_state", NULL);
    size_t n = (size_t)(p->latent_shape[0] * p->latent_shape[1] * p->latent_shape[2] * p->latent_shape[3]);
    size_t emb_n = eg_spec_count(hidden), L = (size_t)p->max_length;
    int32_t *ids = malloc(2 * L * sizeof(int32_t));
    float *emb = malloc(emb_n * sizeof(float)), *latents = malloc(n * sizeof(float)), *x = malloc(n * sizeof(float)),
          *x2 = malloc(2 * n * sizeof(float)), *noise = malloc(2 * n * sizeof(float)),
          *guided = malloc(n * sizeof(float)), *decoded = malloc(image * sizeof(float));
    eg_scheduler *s = NULL;
    eg_status st = EG_OK;
    if (!ids || !emb || !latents || !x || !x2 || !noise || !guided || !decoded) {
        st = eg_fail(err, errlen, EG_ERR_MEMORY, "out of memory");
        goto done;
    }
    eg_normal_fill(o->seed, latents, n);
    if ((p->cfg && eg_tokenizer_encode(p->tokenizer, neg, strlen(neg), ids, err, errlen)) ||
        eg_tokenizer_encode(p->tokenizer, o->prompt, strlen(o->prompt), ids + (b - 1) * L, err, errlen)) {
        st = EG_ERR_INPUT;
        goto done;
    }
    if ((st = eg_session_set_input(p->text_encoder, "input_ids", ids, b * L * sizeof(int32_t), err, errlen)) ||
        (st = eg_session_run(p->text_encoder, err, errlen)) ||
        (st = eg_session_get_output(p->text_encoder, "last_hidden_state", emb, emb_n * sizeof(float), err, errlen)))
        goto done;
    if (eg_scheduler_open(p->scheduler_config, p->scheduler_len, o->scheduler, &s, err, errlen) ||
        eg_scheduler_set_timesteps(s, steps, err, errlen)) {
        st = EG_ERR_ARGUMENT;
        goto done;
    }
    float sigma = eg_scheduler_init_noise_sigma(s);
    for (size_t k = 0; k < n; k++) latents[k] = latents[k] * sigma;
    int count = eg_scheduler_count(s);
    for (int i = 0; i < count; i++) {
        if (o->cancel && *o->cancel) { st = eg_fail(err, errlen, EG_ERR_CANCELLED, "cancelled"); goto done; }
        eg_scheduler_scale_model_input(s, i, latents, x, n);
        memcpy(x2, x, n * sizeof(float));
        memcpy(x2 + n, x, n * sizeof(float));
        float t = eg_scheduler_timestep(s, i), tt[2] = {t, t};
        if ((st = eg_session_set_input(p->unet, "sample", x2, b * n * sizeof(float), err, errlen)) ||
            (st = eg_session_set_input(p->unet, "timestep", tt, b * sizeof(float), err, errlen)) ||
            (st = eg_session_set_input(p->unet, "encoder_hidden_states", emb, emb_n * sizeof(float), err, errlen)) ||
            (st = eg_session_run(p->unet, err, errlen)) ||
            (st = eg_session_get_output(p->unet, "out_sample", noise, b * n * sizeof(float), err, errlen)))
            goto done;
        for (size_t k = 0; k < n; k++) {
            float uncond = noise[k], cond = noise[(b - 1) * n + k];
            guided[k] = guidance > 1 ? uncond + guidance * (cond - uncond) : cond;
        }
        if (eg_scheduler_needs_noise(s))
            eg_step_noise_fill(o->seed, i, x, n);  /* x is free once the UNet has its input */
        if (eg_scheduler_step(s, guided, i, latents, eg_scheduler_needs_noise(s) ? x : NULL, latents, n)) {
            st = eg_fail(err, errlen, EG_ERR_MEMORY, "out of memory");
            goto done;
        }
        if (o->callback && o->callback(o->user, i + 1, count, t)) {
            st = eg_fail(err, errlen, EG_ERR_CANCELLED, "cancelled by the step callback");
            goto done;
        }
    }
    for (size_t k = 0; k < n; k++) x[k] = latents[k] / p->scaling_factor;
    if ((st = eg_session_set_input(p->vae, "latent_sample", x, n * sizeof(float), err, errlen)) ||
        (st = eg_session_run(p->vae, err, errlen)) ||
        (st = eg_session_get_output(p->vae, "sample", decoded, image * sizeof(float), err, errlen)))
        goto done;
    to_uint8(decoded, 1, 3, p->height, p->width, pixels);
done:
    eg_scheduler_free(s);
    free(ids); free(emb); free(latents); free(x); free(x2); free(noise); free(guided); free(decoded);
    return st;
}
