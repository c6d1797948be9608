/* The artifact as read and checked: manifest, components, launch plans, weights. */
#ifndef EG_ARTIFACT_H
#define EG_ARTIFACT_H

#include <stddef.h>
#include <stdint.h>

#include "edgegen.h"
#include "json.h"
#include "util.h"

typedef struct {
    char *name;
    eg_dtype dtype;
    int ndim;
    int64_t shape[EG_MAX_DIMS];
    int has_range;
    int64_t lo, hi;
} eg_spec;

enum { EG_ARENA, EG_WEIGHT, EG_VIEW };
struct eg_name_index { const char *name; int index; };

typedef struct {
    const char *name;   /* points into the plan's JSON */
    int storage;
    eg_dtype dtype;
    int ndim;
    int64_t shape[EG_MAX_DIMS];
    uint64_t bytes, offset;
    int of;             /* view: the tensor viewed */
    int base;           /* the tensor whose storage this one uses (itself unless a view) */
    const uint8_t *data;/* weight: its bytes in the mapped weights file */
} eg_tensor;

typedef struct {
    int program;
    const char *kernel;
    int *args;
    size_t n_args;
    eg_dtype *scalar_dtypes;
    double *scalar_values;
    size_t n_scalars;
    uint64_t grid[3], block[3];
} eg_launch;

typedef struct {
    const char *name;
    const char *source;  /* points into the kernels file copy */
    size_t source_len;
} eg_program;

typedef struct {
    eg_json *doc;
    uint64_t arena_bytes;
    eg_tensor *tensors;
    size_t n_tensors;
    struct eg_name_index *sorted; /* tensors sorted by name */
    eg_launch *launches;
    size_t n_launches;
    eg_program *programs;
    size_t n_programs;
    /* "arithmetic": "fp16" plans: kernels that compute in float16 (they need cl_khr_fp16), and the same
       programs computing in float32 from the component's kernels_fp32_arithmetic file (NULL if absent) */
    int fp16_arithmetic;
    eg_program *fallback_programs;
    char *fallback_text;
    size_t fallback_len;
    int *input_tensor, *output_tensor;   /* per component spec, the plan tensor */
    char *kernels_text;
    size_t kernels_len;
    eg_file weights;
} eg_plan;

typedef struct {
    char *name;
    char *backend;
    char *plan_path, *kernels_path, *weights_path;  /* full paths; NULL when absent */
    char *fallback_kernels_path;                    /* files/kernels_fp32_arithmetic, NULL when absent */
    eg_spec *inputs, *outputs;
    size_t n_inputs, n_outputs;
    eg_plan *plan;     /* NULL for components without a launch plan */
} eg_component;

struct eg_artifact {
    char *root;
    char *manifest_text;
    eg_json *manifest;
    const eg_json *pipeline;
    eg_component *components;
    size_t n_components;
    char *cache_dir;
    char *device;
    int use_program_cache;
};

const eg_component *eg_find_component(const eg_artifact *a, const char *name);
int eg_plan_find(const eg_plan *p, const char *name); /* tensor index or -1 */

/* Reads and checks a component's plan, kernels and weights against its specs. */
eg_status eg_plan_load(eg_component *c, eg_plan **out, char *err, size_t errlen);
void eg_plan_free(eg_plan *p);

/* Checks data (host dtype and shape of spec) against the spec's range. */
eg_status eg_check_input_range(const eg_spec *spec, const void *data, size_t n, const char *where, char *err,
                               size_t errlen);
size_t eg_spec_count(const eg_spec *spec);

/* The signature of a manifest against trusted keys (signing.c). */
eg_status eg_verify_signature(const char *root, const char *manifest, size_t manifest_len,
                              const char *const *keys, size_t n_keys, char *err, size_t errlen);
/* No file under root besides those `files` lists, the manifest and its signature. */
eg_status eg_check_unlisted(const char *root, const eg_json *files, char *err, size_t errlen);

#endif
