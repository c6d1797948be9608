/* Opening an artifact: the manifest (format, schema version, components, files), every listed
   file's size and SHA-256, each OpenCL component's plan, kernels and weights. */
#include "artifact.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "sha256.h"

#define MAX_MANIFEST_BYTES ((size_t)16 << 20)
#define SCHEMA_VERSION 1

static const char *const STATUS_NAMES[] = {"ok", "bad argument", "I/O error", "bad artifact", "bad input",
                                           "unavailable", "device error", "out of memory", "cancelled",
                                           "signature error"};

const char *eg_status_name(eg_status status) {
    return (unsigned)status < sizeof STATUS_NAMES / sizeof *STATUS_NAMES ? STATUS_NAMES[status] : "unknown";
}

void eg_options_init(eg_options *o) {
    memset(o, 0, sizeof *o);
    o->verify_checksums = 1;
    o->use_program_cache = 1;
}

size_t eg_spec_count(const eg_spec *spec) {
    size_t n = 1;
    for (int d = 0; d < spec->ndim; d++) n *= (size_t)spec->shape[d];
    return n;
}

static eg_status read_specs(const char *where, const eg_json *list, eg_spec **out, size_t *n, char *err,
                            size_t errlen) {
    if (!list || list->type != EG_JSON_ARRAY || list->count > 64)
        return eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s: not a list of tensor specs; rebuild the artifact.", where);
    *out = calloc(list->count + 1, sizeof **out);
    if (!*out) return eg_fail(err, errlen, EG_ERR_MEMORY, "out of memory");
    *n = list->count;
    for (size_t i = 0; i < list->count; i++) {
        const eg_json *s = &list->items[i], *name = eg_json_get(s, "name"), *dt = eg_json_get(s, "dtype"),
                      *shape = eg_json_get(s, "shape"), *range = eg_json_get(s, "range");
        eg_spec *sp = &(*out)[i];
        if (!name || name->type != EG_JSON_STRING || !dt || dt->type != EG_JSON_STRING ||
            eg_dtype_from_name(dt->string, &sp->dtype) || !shape || shape->type != EG_JSON_ARRAY ||
            shape->count > EG_MAX_DIMS)
            return eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s: spec %zu lacks a name, a known dtype or a shape; "
                           "rebuild the artifact.", where, i);
        sp->name = eg_strdup(name->string);
        if (!sp->name) return eg_fail(err, errlen, EG_ERR_MEMORY, "out of memory");
        sp->ndim = (int)shape->count;
        for (size_t d = 0; d < shape->count; d++) {
            const eg_json *v = &shape->items[d];
            if (v->type != EG_JSON_NUMBER || v->number < 1 || v->number > 2147483647.0 || v->number != (double)(int64_t)v->number)
                return eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s: spec %s has a bad shape; rebuild the artifact.",
                               where, sp->name);
            sp->shape[d] = (int64_t)v->number;
        }
        if (range && range->type != EG_JSON_NULL) {
            if (range->type != EG_JSON_ARRAY || range->count != 2 || range->items[0].type != EG_JSON_NUMBER ||
                range->items[1].type != EG_JSON_NUMBER || fabs(range->items[0].number) > 9e15 ||
                fabs(range->items[1].number) > 9e15)
                return eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s: spec %s has a bad range; rebuild the artifact.",
                               where, sp->name);
            sp->has_range = 1;
            sp->lo = (int64_t)range->items[0].number;
            sp->hi = (int64_t)range->items[1].number;
        }
    }
    return EG_OK;
}

/* The range of an integer input that indexes a table, from the weight specs (input_ranges.py). */
static void infer_ranges(eg_spec *inputs, size_t n, const eg_json *weights) {
    static const char *const TABLES[][2] = {{"class_labels", "class_embedder_embedding_table_weight"},
                                            {"input_ids", "token_embedding_weight"}};
    if (!weights || weights->type != EG_JSON_ARRAY) return;
    for (size_t i = 0; i < n; i++) {
        eg_spec *s = &inputs[i];
        if (s->has_range || (s->dtype != EG_INT32 && s->dtype != EG_INT64 && s->dtype != EG_UINT8 &&
                             s->dtype != EG_INT8 && s->dtype != EG_UINT32))
            continue;
        for (size_t t = 0; t < 2; t++) {
            if (strcmp(s->name, TABLES[t][0]) != 0) continue;
            size_t suffix = strlen(TABLES[t][1]);
            for (size_t w = 0; w < weights->count; w++) {
                const eg_json *name = eg_json_get(&weights->items[w], "name"), *shape = eg_json_get(&weights->items[w], "shape");
                if (!name || name->type != EG_JSON_STRING || !shape || shape->type != EG_JSON_ARRAY || shape->count != 2 ||
                    shape->items[0].type != EG_JSON_NUMBER || !(shape->items[0].number >= 1) ||
                    shape->items[0].number > 2147483647.0 || name->string_len < suffix ||
                    strcmp(name->string + name->string_len - suffix, TABLES[t][1]) != 0)
                    continue;
                int64_t rows = (int64_t)shape->items[0].number;
                if (!s->has_range || rows - 1 < s->hi) { s->has_range = 1; s->lo = 0; s->hi = rows - 1; }
            }
        }
    }
}

eg_status eg_check_input_range(const eg_spec *spec, const void *data, size_t n, const char *where, char *err,
                               size_t errlen) {
    if (!spec->has_range) return EG_OK;
    for (size_t i = 0; i < n; i++) {
        int64_t v;
        switch (spec->dtype) {
        case EG_INT32: v = ((const int32_t *)data)[i]; break;
        case EG_INT64: v = ((const int64_t *)data)[i]; break;
        case EG_UINT8: v = ((const uint8_t *)data)[i]; break;
        case EG_INT8: v = ((const int8_t *)data)[i]; break;
        case EG_UINT32: v = ((const uint32_t *)data)[i]; break;
        default: return EG_OK;
        }
        if (v < spec->lo || v > spec->hi)
            return eg_fail(err, errlen, EG_ERR_INPUT,
                           "%s: input %s holds %lld, outside its valid range %lld..%lld (it indexes a table of %lld "
                           "rows); pass values in that range.",
                           where, spec->name, (long long)v, (long long)spec->lo, (long long)spec->hi,
                           (long long)spec->hi + 1);
    }
    return EG_OK;
}

/* A listed file must be a plain file inside the root: relative, no `..`, no links on the way. */
static eg_status check_path(const char *root, const char *rel, char **full, char *err, size_t errlen) {
    *full = NULL;
    int bad = rel[0] == 0 || rel[0] == '/' || strlen(rel) > 1000;
    for (const char *p = rel; !bad && *p;) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.') || memchr(p, '\\', n)) bad = 1;
        p += n + (slash ? 1 : 0);
        if (slash && !*p) bad = 1;
    }
    if (bad)
        return eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s: file %.200s lies outside the artifact folder; an artifact "
                       "holds plain files only. Copy the artifact again or rebuild it.", root, rel);
    char *path = eg_path_join(root, rel);
    if (!path) return eg_fail(err, errlen, EG_ERR_MEMORY, "out of memory");
    for (char *p = path + strlen(root) + 1;; p++) {
        if (*p != '/' && *p != 0) continue;
        char keep = *p;
        *p = 0;
        struct stat st;
        int r = lstat(path, &st);
        *p = keep;
        if (r != 0) {
            free(path);
            return eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s: file %.200s is missing; the artifact is incomplete. "
                           "Rebuild it.", root, rel);
        }
        if (S_ISLNK(st.st_mode) || (keep == 0 && !S_ISREG(st.st_mode))) {
            free(path);
            return eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s: file %.200s is a link or not a plain file; an artifact "
                           "holds plain files only. Copy the artifact again or rebuild it.", root, rel);
        }
        if (keep == 0) break;
    }
    *full = path;
    return EG_OK;
}

static eg_status check_files(eg_artifact *a, const eg_options *o, char *err, size_t errlen) {
    const eg_json *files = eg_json_get(a->manifest, "files");
    if (!files || files->type != EG_JSON_OBJECT)
        return eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s: the manifest has no files table; rebuild the artifact.", a->root);
    for (size_t i = 0; i < files->count; i++) {
        const char *rel = files->keys[i];
        const eg_json *sha = eg_json_get(&files->items[i], "sha256"), *bytes = eg_json_get(&files->items[i], "bytes");
        if (!sha || sha->type != EG_JSON_STRING || sha->string_len != 64 || !bytes || bytes->type != EG_JSON_NUMBER)
            return eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s: files/%.200s lacks sha256 or bytes; rebuild the artifact.",
                           a->root, rel);
        char *path;
        eg_status st = check_path(a->root, rel, &path, err, errlen);
        if (st) return st;
        eg_file f;
        st = eg_file_map(path, (size_t)1 << 40, &f, err, errlen);
        free(path);
        if (st) return st;
        if ((double)f.size != bytes->number) {
            eg_file_unmap(&f);
            return eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s: file %.200s has %zu bytes, the manifest says %.0f; it is "
                           "truncated or was replaced. Copy the artifact again or rebuild it.", a->root, rel, f.size,
                           bytes->number);
        }
        if (o->verify_checksums) {
            char hex[65];
            eg_sha256_hex(f.data, f.size, hex);
            if (strcmp(hex, sha->string) != 0) {
                eg_file_unmap(&f);
                return eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s: file %.200s fails its SHA-256 checksum; it is corrupt "
                               "or was edited. Copy the artifact again or rebuild it.", a->root, rel);
            }
        }
        eg_file_unmap(&f);
    }
    return EG_OK;
}

static eg_status read_component(eg_artifact *a, const char *name, const eg_json *c, eg_component *out, char *err,
                                size_t errlen) {
    char where[300];
    snprintf(where, sizeof where, "%s: component %.100s", a->root, name);
    out->name = eg_strdup(name);
    const eg_json *backend = eg_json_get(c, "backend"), *files = eg_json_get(c, "files");
    if (!out->name || c->type != EG_JSON_OBJECT || !backend || backend->type != EG_JSON_STRING || !files ||
        files->type != EG_JSON_OBJECT)
        return eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s lacks a backend or files; rebuild the artifact.", where);
    out->backend = eg_strdup(backend->string);
    const eg_json *listed = eg_json_get(a->manifest, "files");
    for (size_t i = 0; i < files->count; i++) {
        const eg_json *rel = &files->items[i];
        if (rel->type != EG_JSON_STRING || !eg_json_get(listed, rel->string))
            return eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s names file %.200s, which the manifest does not list.",
                           where, rel->type == EG_JSON_STRING ? rel->string : "?");
        char **slot = strcmp(files->keys[i], "plan") == 0      ? &out->plan_path
                      : strcmp(files->keys[i], "kernels") == 0 ? &out->kernels_path
                      : strcmp(files->keys[i], "weights") == 0 ? &out->weights_path
                      : strcmp(files->keys[i], "kernels_fp32_arithmetic") == 0 ? &out->fallback_kernels_path
                                                               : NULL;
        if (slot && !*slot && !(*slot = eg_path_join(a->root, rel->string)))
            return eg_fail(err, errlen, EG_ERR_MEMORY, "out of memory");
    }
    char w2[400];
    snprintf(w2, sizeof w2, "%s: inputs", where);
    eg_status st = read_specs(w2, eg_json_get(c, "inputs"), &out->inputs, &out->n_inputs, err, errlen);
    if (st) return st;
    snprintf(w2, sizeof w2, "%s: outputs", where);
    st = read_specs(w2, eg_json_get(c, "outputs"), &out->outputs, &out->n_outputs, err, errlen);
    if (st) return st;
    infer_ranges(out->inputs, out->n_inputs, eg_json_get(c, "weights"));
    if (strcmp(out->backend, "opencl") == 0) return eg_plan_load(out, &out->plan, err, errlen);
    return EG_OK;
}

static char *default_cache_dir(void) {
    const char *env = getenv("EDGEGEN_CACHE_DIR");
    if (env && *env) return eg_strdup(env);
    env = getenv("XDG_CACHE_HOME");
    if (env && *env) return eg_path_join(env, "edgegen");
    env = getenv("HOME");
    if (env && *env) return eg_path_join(env, ".cache/edgegen");
    return NULL;
}

eg_status eg_artifact_open(const char *path, const eg_options *options, eg_artifact **out, char *err, size_t errlen) {
    eg_options defaults;
    if (!out || !path) return eg_fail(err, errlen, EG_ERR_ARGUMENT, "eg_artifact_open: path and out are required");
    *out = NULL;
    if (!options) { eg_options_init(&defaults); options = &defaults; }
    eg_artifact *a = calloc(1, sizeof *a);
    if (!a) return eg_fail(err, errlen, EG_ERR_MEMORY, "out of memory");
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    a->root = malloc(n + 1);
    if (!a->root) { eg_artifact_close(a); return eg_fail(err, errlen, EG_ERR_MEMORY, "out of memory"); }
    memcpy(a->root, path, n);
    a->root[n] = 0;
    a->use_program_cache = options->use_program_cache;
    a->cache_dir = options->cache_dir ? eg_strdup(options->cache_dir) : default_cache_dir();
    const char *dev = options->device ? options->device : getenv("EDGEGEN_OPENCL_DEVICE");
    if (dev && *dev) a->device = eg_strdup(dev);
    char *mpath = eg_path_join(a->root, "manifest.json");
    size_t len = 0;
    eg_status st = mpath ? eg_file_read(mpath, MAX_MANIFEST_BYTES, &a->manifest_text, &len, err, errlen) : EG_ERR_MEMORY;
    free(mpath);
    if (st) {
        if (st == EG_ERR_IO)
            eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s is not an edgegen artifact: manifest.json is missing or unreadable. "
                    "Build one with `edgegen build MODEL_DIR --out %s`.", a->root, a->root);
        eg_artifact_close(a);
        return st == EG_ERR_IO ? EG_ERR_ARTIFACT : st;
    }
    if (options->trusted_keys && options->n_trusted_keys) {
        st = eg_verify_signature(a->root, a->manifest_text, len, options->trusted_keys, options->n_trusted_keys, err,
                                 errlen);
        if (st) { eg_artifact_close(a); return st; }
    }
    char jerr[160];
    if (eg_json_parse(a->manifest_text, len, &a->manifest, jerr, sizeof jerr)) {
        eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s/manifest.json is not valid JSON (%s); copy the artifact again.", a->root, jerr);
        eg_artifact_close(a);
        return EG_ERR_ARTIFACT;
    }
    const eg_json *fmt = eg_json_get(a->manifest, "format"), *ver = eg_json_get(a->manifest, "schema_version"),
                  *comps = eg_json_get(a->manifest, "components");
    if (!fmt || fmt->type != EG_JSON_STRING || strcmp(fmt->string, "edgegen-artifact") != 0) {
        eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s/manifest.json is not an edgegen manifest (no format "
                "'edgegen-artifact').", a->root);
        eg_artifact_close(a);
        return EG_ERR_ARTIFACT;
    }
    if (!ver || ver->type != EG_JSON_NUMBER || ver->number != SCHEMA_VERSION) {
        eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s uses artifact schema %.0f; this runtime reads schema %d. Rebuild the "
                "artifact or upgrade the runtime.", a->root, ver && ver->type == EG_JSON_NUMBER ? ver->number : -1.0,
                SCHEMA_VERSION);
        eg_artifact_close(a);
        return EG_ERR_ARTIFACT;
    }
    if (!comps || comps->type != EG_JSON_OBJECT || comps->count > 64) {
        eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s: the manifest has no components table; rebuild the artifact.", a->root);
        eg_artifact_close(a);
        return EG_ERR_ARTIFACT;
    }
    a->pipeline = eg_json_get(a->manifest, "pipeline");
    if (options->trusted_keys && options->n_trusted_keys &&
        (st = eg_check_unlisted(a->root, eg_json_get(a->manifest, "files"), err, errlen))) {
        eg_artifact_close(a);
        return st;
    }
    if ((st = check_files(a, options, err, errlen))) { eg_artifact_close(a); return st; }
    a->components = calloc(comps->count + 1, sizeof *a->components);
    if (!a->components) { eg_artifact_close(a); return eg_fail(err, errlen, EG_ERR_MEMORY, "out of memory"); }
    for (size_t i = 0; i < comps->count; i++) {
        a->n_components = i + 1;
        st = read_component(a, comps->keys[i], &comps->items[i], &a->components[i], err, errlen);
        if (st) { eg_artifact_close(a); return st; }
    }
    *out = a;
    return EG_OK;
}

static void free_specs(eg_spec *s, size_t n) {
    for (size_t i = 0; s && i < n; i++) free(s[i].name);
    free(s);
}

void eg_artifact_close(eg_artifact *a) {
    if (!a) return;
    for (size_t i = 0; i < a->n_components; i++) {
        eg_component *c = &a->components[i];
        free(c->name); free(c->backend); free(c->plan_path); free(c->kernels_path); free(c->weights_path);
        free(c->fallback_kernels_path);
        free_specs(c->inputs, c->n_inputs);
        free_specs(c->outputs, c->n_outputs);
        eg_plan_free(c->plan);
    }
    free(a->components);
    eg_json_free(a->manifest);
    free(a->manifest_text);
    free(a->root);
    free(a->cache_dir);
    free(a->device);
    free(a);
}

const char *eg_artifact_kind(const eg_artifact *a) {
    const eg_json *k = a ? eg_json_get(a->pipeline, "kind") : NULL;
    return k && k->type == EG_JSON_STRING ? k->string : "";
}

size_t eg_artifact_component_count(const eg_artifact *a) { return a ? a->n_components : 0; }

const char *eg_artifact_component_name(const eg_artifact *a, size_t i) {
    return a && i < a->n_components ? a->components[i].name : NULL;
}

const eg_component *eg_find_component(const eg_artifact *a, const char *name) {
    for (size_t i = 0; a && name && i < a->n_components; i++)
        if (strcmp(a->components[i].name, name) == 0) return &a->components[i];
    return NULL;
}
