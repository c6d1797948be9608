/* edgegen native runtime: runs an edgegen GPU artifact (launch plans of OpenCL C kernels).
 *
 * Every call returns an eg_status and, on failure, writes a message into the caller's
 * err buffer (errlen bytes, always NUL-terminated). Handles are opaque; no global state. */
#ifndef EDGEGEN_H
#define EDGEGEN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define EG_API __attribute__((visibility("default")))
#else
#define EG_API
#endif

typedef enum {
    EG_OK = 0,
    EG_ERR_ARGUMENT = 1,    /* a bad argument from the caller */
    EG_ERR_IO = 2,          /* a file cannot be read */
    EG_ERR_ARTIFACT = 3,    /* the artifact is corrupt, truncated, unsigned or not for this runtime */
    EG_ERR_INPUT = 4,       /* an input has the wrong name, dtype, shape or an out-of-range value */
    EG_ERR_UNAVAILABLE = 5, /* no OpenCL library or device, or libsodium is missing */
    EG_ERR_DEVICE = 6,      /* the OpenCL driver failed */
    EG_ERR_MEMORY = 7,
    EG_ERR_CANCELLED = 8,
    EG_ERR_SIGNATURE = 9    /* the manifest's signature is absent, invalid or from an untrusted key */
} eg_status;

typedef enum { EG_FLOAT32, EG_FLOAT16, EG_INT32, EG_INT64, EG_UINT8, EG_INT8, EG_UINT32 } eg_dtype;

#define EG_MAX_DIMS 8

typedef struct {
    int verify_checksums;               /* 1 (default): SHA-256 of every file a component uses */
    const char *const *trusted_keys;    /* Ed25519 public keys (.pub PEM paths); NULL: signature not required */
    size_t n_trusted_keys;
    const char *cache_dir;              /* program binary cache; NULL: $EDGEGEN_CACHE_DIR, $XDG_CACHE_HOME/edgegen, ~/.cache/edgegen */
    int use_program_cache;              /* 1 (default) */
    const char *device;                 /* device name substring; NULL: $EDGEGEN_OPENCL_DEVICE, else the first GPU */
} eg_options;

typedef struct eg_artifact eg_artifact;
typedef struct eg_session eg_session;

EG_API void eg_options_init(eg_options *options);
EG_API const char *eg_status_name(eg_status status);

/* Reads and checks the manifest, the checksums and every component's plan, kernels and weights. */
EG_API eg_status eg_artifact_open(const char *path, const eg_options *options, eg_artifact **out, char *err,
                                  size_t errlen);
EG_API void eg_artifact_close(eg_artifact *artifact);
EG_API const char *eg_artifact_kind(const eg_artifact *artifact);     /* pipeline kind, "" if none */
EG_API size_t eg_artifact_component_count(const eg_artifact *artifact);
EG_API const char *eg_artifact_component_name(const eg_artifact *artifact, size_t index);

/* One component on the OpenCL device: programs built (or read from the cache), kernels bound. */
EG_API eg_status eg_session_open(eg_artifact *artifact, const char *component, eg_session **out, char *err,
                                 size_t errlen);
/* A component's arena size: the memory eg_session_open_arena needs. */
EG_API eg_status eg_artifact_arena_bytes(const eg_artifact *artifact, const char *component, size_t *bytes, char *err,
                                         size_t errlen);
/* As eg_session_open, with the arena in the caller's memory (CL_MEM_USE_HOST_PTR; zero-copy on
   unified-memory GPUs): at least eg_artifact_arena_bytes, aligned to 4096 bytes, kept alive until
   eg_session_close. */
EG_API eg_status eg_session_open_arena(eg_artifact *artifact, const char *component, void *memory, size_t bytes,
                                       eg_session **out, char *err, size_t errlen);
EG_API void eg_session_close(eg_session *session);
EG_API const char *eg_session_device_name(const eg_session *session);
EG_API int eg_session_used_cached_binaries(const eg_session *session);   /* programs read from the cache */
/* Inputs and outputs by name, in the component's (host) dtype: count, names, dtype and shape. */
EG_API size_t eg_session_tensor_count(const eg_session *session, int output);
EG_API const char *eg_session_tensor_name(const eg_session *session, int output, size_t index);
EG_API eg_status eg_session_tensor_info(const eg_session *session, int output, const char *name, eg_dtype *dtype,
                                        int64_t shape[EG_MAX_DIMS], int *ndim, size_t *bytes, char *err,
                                        size_t errlen);
/* data: the input's host dtype and shape, `bytes` long; checked (size, value ranges) and copied. */
EG_API eg_status eg_session_set_input(eg_session *session, const char *name, const void *data, size_t bytes,
                                      char *err, size_t errlen);
EG_API eg_status eg_session_run(eg_session *session, char *err, size_t errlen);
EG_API eg_status eg_session_get_output(eg_session *session, const char *name, void *data, size_t bytes, char *err,
                                       size_t errlen);
/* Enqueue every launch on the arena as it is and wait (benchmarks: the kernels' time alone). */
EG_API eg_status eg_session_launch_all(eg_session *session, char *err, size_t errlen);

/* Pipelines. The callback runs after each denoising step; a nonzero return cancels. */
typedef int (*eg_step_callback)(void *user, int step, int total_steps, float timestep);

typedef struct eg_pipeline eg_pipeline;
EG_API eg_status eg_pipeline_open(eg_artifact *artifact, eg_pipeline **out, char *err, size_t errlen);
EG_API void eg_pipeline_close(eg_pipeline *pipeline);
/* Size of one generated image (uint8, height x width x channels, row-major). */
EG_API void eg_pipeline_image_shape(const eg_pipeline *pipeline, int *height, int *width, int *channels);
/* Images per model call (class-conditional: the artifact's batch; text-to-image: 1) and default steps. */
EG_API int eg_pipeline_batch(const eg_pipeline *pipeline);
EG_API int eg_pipeline_default_steps(const eg_pipeline *pipeline);
/* A class-conditional artifact's class id from one of its names (id2label, e.g. "7" or "seven"). */
EG_API eg_status eg_pipeline_label_id(const eg_pipeline *pipeline, const char *name, int32_t *id, char *err,
                                      size_t errlen);

typedef struct {
    const int32_t *labels;      /* class ids, one per image */
    size_t n_labels;
    int steps;                  /* 0: the artifact's default */
    uint64_t seed;
    float guidance;             /* < 0: the artifact's default */
    const char *scheduler;      /* NULL, "ddim", "euler", "lcm", "euler_a" or "dpm" */
    eg_step_callback callback;
    void *user;
    const volatile int *cancel; /* nonzero at a step boundary cancels */
} eg_class_options;

typedef struct {
    const char *prompt;
    const char *negative_prompt; /* NULL: "" */
    int steps;
    uint64_t seed;
    float guidance;
    const char *scheduler;
    eg_step_callback callback;
    void *user;
    const volatile int *cancel;
} eg_text_options;

EG_API void eg_class_options_init(eg_class_options *options);
EG_API void eg_text_options_init(eg_text_options *options);
/* pixels: n_labels images of eg_pipeline_image_shape, bytes >= their size. */
EG_API eg_status eg_pipeline_class_conditional(eg_pipeline *pipeline, const eg_class_options *options,
                                               uint8_t *pixels, size_t bytes, char *err, size_t errlen);
/* pixels: one image of eg_pipeline_image_shape. */
EG_API eg_status eg_pipeline_text_to_image(eg_pipeline *pipeline, const eg_text_options *options, uint8_t *pixels,
                                           size_t bytes, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
