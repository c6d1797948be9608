/* A component on the OpenCL device, as runtimes/opencl.py: arena with sub-buffers at the plan's
   offsets, one buffer per weight, programs built once, each launch's kernel bound once; a run
   writes the inputs, enqueues the launches in order and reads the outputs. */
#include "session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "progcache.h"

#define ARENA_ALIGNMENT 256

static eg_status cl_fail(char *err, size_t errlen, const char *what, cl_int rc) {
    return eg_fail(err, errlen, rc == -4 || rc == -6 ? EG_ERR_MEMORY : EG_ERR_DEVICE, "%s failed (%d, %s)", what, rc,
                   eg_cl_error_name(rc));
}

const eg_spec *eg_session_spec(const eg_session *s, int output, const char *name, size_t *index) {
    const eg_spec *specs = output ? s->comp->outputs : s->comp->inputs;
    size_t n = output ? s->comp->n_outputs : s->comp->n_inputs;
    for (size_t i = 0; name && i < n; i++)
        if (strcmp(specs[i].name, name) == 0) { if (index) *index = i; return &specs[i]; }
    return NULL;
}

static eg_status bind_scalar(eg_session *s, cl_kernel k, cl_uint index, eg_dtype dtype, double value) {
    union { float f; uint16_t h; int32_t i32; int64_t i64; uint8_t u8; int8_t i8; uint32_t u32; } v;
    size_t size = eg_dtype_size(dtype);
    switch (dtype) {
    case EG_FLOAT32: v.f = (float)value; break;
    case EG_FLOAT16: v.h = eg_float_to_half((float)value); break;
    case EG_INT32: v.i32 = (int32_t)value; break;
    case EG_INT64: v.i64 = (int64_t)value; break;
    case EG_UINT8: v.u8 = (uint8_t)value; break;
    case EG_INT8: v.i8 = (int8_t)value; break;
    case EG_UINT32: v.u32 = (uint32_t)value; break;
    }
    return s->cl.SetKernelArg(k, index, size, &v) == CL_SUCCESS ? EG_OK : EG_ERR_DEVICE;
}

#define HOST_ARENA_ALIGNMENT 4096

static uint64_t arena_size(const eg_plan *p) { return p->arena_bytes > ARENA_ALIGNMENT ? p->arena_bytes : ARENA_ALIGNMENT; }

/* whether the device's extension list names cl_khr_fp16 */
static int has_fp16(const eg_session *s) {
    size_t n = 0;
    if (s->cl.GetDeviceInfo(s->dev, CL_DEVICE_EXTENSIONS, 0, NULL, &n) != CL_SUCCESS || n == 0 || n > (1 << 20))
        return 0;
    char *list = calloc(n + 1, 1);
    int found = 0;
    if (list && s->cl.GetDeviceInfo(s->dev, CL_DEVICE_EXTENSIONS, n, list, NULL) == CL_SUCCESS)
        for (const char *q = list; !found && (q = strstr(q, "cl_khr_fp16")) != NULL; q += 11)
            found = (q == list || q[-1] == ' ') && (q[11] == ' ' || q[11] == '\0');
    free(list);
    return found;
}

static eg_status setup(eg_session *s, const char *cache_dir, void *host, size_t host_bytes, char *err, size_t errlen) {
    const eg_plan *p = s->plan;
    cl_int rc = 0;
    cl_uint align_bits = 0;
    cl_ulong max_alloc = 0;
    s->cl.GetDeviceInfo(s->dev, CL_DEVICE_MEM_BASE_ADDR_ALIGN, sizeof align_bits, &align_bits, NULL);
    s->cl.GetDeviceInfo(s->dev, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof max_alloc, &max_alloc, NULL);
    size_t align = align_bits / 8 ? align_bits / 8 : 1;
    uint64_t arena_bytes = arena_size(p);
    if (max_alloc && arena_bytes > max_alloc)
        return eg_fail(err, errlen, EG_ERR_UNAVAILABLE, "%s: the arena of component %s needs %llu bytes in one buffer, "
                       "more than this device's CL_DEVICE_MAX_MEM_ALLOC_SIZE (%llu); rebuild the artifact for a smaller "
                       "size or use a device with more memory.", s->device_name, s->comp->name,
                       (unsigned long long)arena_bytes, (unsigned long long)max_alloc);
    if ((uint64_t)(size_t)arena_bytes != arena_bytes)
        return eg_fail(err, errlen, EG_ERR_MEMORY, "the arena does not fit this process's address space");
    s->ctx = s->cl.CreateContext(NULL, 1, &s->dev, NULL, NULL, &rc);
    if (!s->ctx) return cl_fail(err, errlen, "clCreateContext", rc);
    s->queue = s->cl.CreateCommandQueue(s->ctx, s->dev, 0, &rc);
    if (!s->queue) return cl_fail(err, errlen, "clCreateCommandQueue", rc);
    if (host && (host_bytes < arena_bytes || (uintptr_t)host % HOST_ARENA_ALIGNMENT))
        return eg_fail(err, errlen, EG_ERR_ARGUMENT, "the arena memory of component %s must hold %llu bytes and be "
                       "aligned to %d bytes (got %zu bytes at %p)", s->comp->name, (unsigned long long)arena_bytes,
                       HOST_ARENA_ALIGNMENT, host_bytes, host);
    s->arena = s->cl.CreateBuffer(s->ctx, CL_MEM_READ_WRITE | (host ? CL_MEM_USE_HOST_PTR : 0), (size_t)arena_bytes,
                                  host, &rc);
    if (!s->arena) return cl_fail(err, errlen, "allocating the arena (clCreateBuffer)", rc);
    s->mems = calloc(p->n_tensors, sizeof *s->mems);
    s->programs = calloc(p->n_programs, sizeof *s->programs);
    s->kernels = calloc(p->n_launches, sizeof *s->kernels);
    if (!s->mems || !s->programs || !s->kernels) return eg_fail(err, errlen, EG_ERR_MEMORY, "out of memory");
    for (size_t l = 0; l < p->n_launches; l++) {
        for (size_t a = 0; a < p->launches[l].n_args; a++) {
            int b = p->tensors[p->launches[l].args[a]].base;
            const eg_tensor *t = &p->tensors[b];
            if (s->mems[b]) continue;
            if (t->storage == EG_WEIGHT) {
                if (max_alloc && t->bytes > max_alloc)
                    return eg_fail(err, errlen, EG_ERR_UNAVAILABLE, "weight %s (%llu bytes) is larger than this device's "
                                   "CL_DEVICE_MAX_MEM_ALLOC_SIZE", t->name, (unsigned long long)t->bytes);
                s->mems[b] = s->cl.CreateBuffer(s->ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                                                t->bytes ? (size_t)t->bytes : 1, (void *)t->data, &rc);
                if (!s->mems[b]) return cl_fail(err, errlen, "uploading a weight (clCreateBuffer)", rc);
            } else {
                if (t->offset % align)
                    return eg_fail(err, errlen, EG_ERR_UNAVAILABLE, "%s aligns sub-buffers to %zu B; tensor %s lies at "
                                   "offset %llu of the arena, not a multiple; rebuild the artifact.", s->device_name,
                                   align, t->name, (unsigned long long)t->offset);
                struct { size_t origin, size; } region = {(size_t)t->offset, t->bytes ? (size_t)t->bytes : 1};
                s->mems[b] = s->cl.CreateSubBuffer(s->arena, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, &region, &rc);
                if (!s->mems[b]) return cl_fail(err, errlen, "clCreateSubBuffer", rc);
            }
        }
    }
    const eg_program *programs = p->programs;
    const char *kernels_path = s->comp->kernels_path;
    if (p->fp16_arithmetic && !has_fp16(s)) {
        if (!p->fallback_programs)
            return eg_fail(err, errlen, EG_ERR_UNAVAILABLE, "component %s: its kernels compute in float16, and %s has "
                           "no cl_khr_fp16; rebuild it with --precision fp32, or run it on a device that computes in "
                           "float16.", s->comp->name, s->device_name);
        programs = p->fallback_programs;
        kernels_path = s->comp->fallback_kernels_path;
        size_t used = strlen(s->device_name);
        snprintf(s->device_name + used, sizeof s->device_name - used, ", float32-arithmetic kernels (no cl_khr_fp16)");
    }
    for (size_t i = 0; i < p->n_programs; i++) {
        int cached = 0;
        eg_status st = eg_program_build(&s->cl, s->ctx, s->dev, cache_dir, programs[i].source,
                                        programs[i].source_len, "", &s->programs[i], &cached, err, errlen);
        if (st) {
            char inner[700];
            snprintf(inner, sizeof inner, "%s", err ? err : "");
            return eg_fail(err, errlen, st, "component %s: program %s of %s: %s", s->comp->name, programs[i].name,
                           kernels_path, inner);
        }
        s->cached_programs += cached;
    }
    for (size_t l = 0; l < p->n_launches; l++) {
        const eg_launch *L = &p->launches[l];
        s->kernels[l] = s->cl.CreateKernel(s->programs[L->program], L->kernel, &rc);
        if (!s->kernels[l])
            return eg_fail(err, errlen, EG_ERR_ARTIFACT, "component %s: launch %zu: kernel %s: clCreateKernel failed (%d, "
                           "%s); the kernel file does not belong to this plan: rebuild the artifact.", s->comp->name, l,
                           L->kernel, rc, eg_cl_error_name(rc));
        cl_uint arg = 0;
        for (size_t a = 0; a < L->n_args; a++, arg++) {
            cl_mem m = s->mems[p->tensors[L->args[a]].base];
            if ((rc = s->cl.SetKernelArg(s->kernels[l], arg, sizeof m, &m)) != CL_SUCCESS) goto bad_arg;
        }
        for (size_t k = 0; k < L->n_scalars; k++, arg++)
            if (bind_scalar(s, s->kernels[l], arg, L->scalar_dtypes[k], L->scalar_values[k])) { rc = -50; goto bad_arg; }
        continue;
    bad_arg:
        return eg_fail(err, errlen, EG_ERR_ARTIFACT, "component %s: launch %zu (%s): binding argument %u failed (%d, %s); "
                       "the plan does not match its kernels: rebuild the artifact.", s->comp->name, l, L->kernel, arg,
                       rc, eg_cl_error_name(rc));
    }
    s->inputs = calloc(s->comp->n_inputs + 1, sizeof *s->inputs);
    s->outputs = calloc(s->comp->n_outputs + 1, sizeof *s->outputs);
    if (!s->inputs || !s->outputs) return eg_fail(err, errlen, EG_ERR_MEMORY, "out of memory");
    for (size_t o = 0; o < s->comp->n_outputs; o++) {
        s->outputs[o] = malloc(eg_spec_count(&s->comp->outputs[o]) * eg_dtype_size(s->comp->outputs[o].dtype) + 1);
        if (!s->outputs[o]) return eg_fail(err, errlen, EG_ERR_MEMORY, "out of memory");
    }
    return EG_OK;
}

eg_status eg_artifact_arena_bytes(const eg_artifact *a, const char *component, size_t *bytes, char *err,
                                  size_t errlen) {
    const eg_component *c = eg_find_component(a, component);
    if (!c || !c->plan || !bytes)
        return eg_fail(err, errlen, EG_ERR_ARGUMENT, "no OpenCL component %s", component ? component : "(null)");
    *bytes = (size_t)arena_size(c->plan);
    return EG_OK;
}

eg_status eg_session_open(eg_artifact *a, const char *component, eg_session **out, char *err, size_t errlen) {
    return eg_session_open_arena(a, component, NULL, 0, out, err, errlen);
}

eg_status eg_session_open_arena(eg_artifact *a, const char *component, void *memory, size_t bytes, eg_session **out,
                                char *err, size_t errlen) {
    if (!a || !out) return eg_fail(err, errlen, EG_ERR_ARGUMENT, "eg_session_open: artifact and out are required");
    *out = NULL;
    const eg_component *c = eg_find_component(a, component);
    if (!c) return eg_fail(err, errlen, EG_ERR_ARGUMENT, "%s has no component %s", a->root, component ? component : "(null)");
    if (!c->plan)
        return eg_fail(err, errlen, EG_ERR_UNAVAILABLE, "component %s runs on backend %s; this runtime executes OpenCL "
                       "launch plans only (rebuild for a GPU target: mali, adreno or opencl).", c->name, c->backend);
    eg_session *s = calloc(1, sizeof *s);
    if (!s) return eg_fail(err, errlen, EG_ERR_MEMORY, "out of memory");
    s->comp = c;
    s->plan = c->plan;
    eg_status st = eg_cl_load(&s->cl, err, errlen);
    if (!st) st = eg_cl_pick_device(&s->cl, a->device, &s->dev, s->device_name, sizeof s->device_name, err, errlen);
    if (!st) st = setup(s, a->use_program_cache ? a->cache_dir : NULL, memory, bytes, err, errlen);
    if (st) { eg_session_close(s); return st; }
    *out = s;
    return EG_OK;
}

void eg_session_close(eg_session *s) {
    if (!s) return;
    if (s->cl.lib) {
        if (s->queue) s->cl.Finish(s->queue);
        for (size_t l = 0; s->kernels && l < s->plan->n_launches; l++)
            if (s->kernels[l]) s->cl.ReleaseKernel(s->kernels[l]);
        for (size_t i = 0; s->programs && i < s->plan->n_programs; i++)
            if (s->programs[i]) s->cl.ReleaseProgram(s->programs[i]);
        for (size_t t = 0; s->mems && t < s->plan->n_tensors; t++)
            if (s->mems[t] && s->plan->tensors[t].storage == EG_ARENA) s->cl.ReleaseMemObject(s->mems[t]);
        for (size_t t = 0; s->mems && t < s->plan->n_tensors; t++)
            if (s->mems[t] && s->plan->tensors[t].storage == EG_WEIGHT) s->cl.ReleaseMemObject(s->mems[t]);
        if (s->arena) s->cl.ReleaseMemObject(s->arena);
        if (s->queue) s->cl.ReleaseCommandQueue(s->queue);
        if (s->ctx) s->cl.ReleaseContext(s->ctx);
    }
    for (size_t i = 0; s->inputs && i < s->comp->n_inputs; i++) free(s->inputs[i]);
    for (size_t i = 0; s->outputs && i < s->comp->n_outputs; i++) free(s->outputs[i]);
    free(s->inputs);
    free(s->outputs);
    free(s->mems);
    free(s->programs);
    free(s->kernels);
    eg_cl_unload(&s->cl);
    free(s);
}

const char *eg_session_device_name(const eg_session *s) { return s ? s->device_name : ""; }
int eg_session_used_cached_binaries(const eg_session *s) { return s ? s->cached_programs : 0; }

size_t eg_session_tensor_count(const eg_session *s, int output) {
    return !s ? 0 : output ? s->comp->n_outputs : s->comp->n_inputs;
}

const char *eg_session_tensor_name(const eg_session *s, int output, size_t i) {
    if (!s || i >= eg_session_tensor_count(s, output)) return NULL;
    return output ? s->comp->outputs[i].name : s->comp->inputs[i].name;
}

eg_status eg_session_tensor_info(const eg_session *s, int output, const char *name, eg_dtype *dtype,
                                 int64_t shape[EG_MAX_DIMS], int *ndim, size_t *bytes, char *err, size_t errlen) {
    const eg_spec *sp = s ? eg_session_spec(s, output, name, NULL) : NULL;
    if (!sp) return eg_fail(err, errlen, EG_ERR_ARGUMENT, "no %s named %s", output ? "output" : "input", name ? name : "(null)");
    if (dtype) *dtype = sp->dtype;
    if (shape) memcpy(shape, sp->shape, sizeof sp->shape);
    if (ndim) *ndim = sp->ndim;
    if (bytes) *bytes = eg_spec_count(sp) * eg_dtype_size(sp->dtype);
    return EG_OK;
}

eg_status eg_session_set_input(eg_session *s, const char *name, const void *data, size_t bytes, char *err, size_t errlen) {
    size_t i;
    const eg_spec *sp = s ? eg_session_spec(s, 0, name, &i) : NULL;
    if (!sp) {
        char names[400] = "";
        for (size_t k = 0; s && k < s->comp->n_inputs; k++)
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", k ? ", " : "", s->comp->inputs[k].name);
        return eg_fail(err, errlen, EG_ERR_INPUT, "component %s has no input %s; its inputs are [%s]",
                       s ? s->comp->name : "?", name ? name : "(null)", names);
    }
    size_t n = eg_spec_count(sp), need = n * eg_dtype_size(sp->dtype);
    if (!data || bytes != need)
        return eg_fail(err, errlen, EG_ERR_INPUT, "component %s: input %s must be %zu bytes (%s of %zu values), got %zu",
                       s->comp->name, name, need, eg_dtype_name(sp->dtype), n, bytes);
    eg_status st = eg_check_input_range(sp, data, n, s->comp->name, err, errlen);
    if (st) return st;
    const eg_tensor *t = &s->plan->tensors[s->plan->input_tensor[i]];
    uint8_t *buf = malloc(t->bytes ? (size_t)t->bytes : 1);
    if (!buf) return eg_fail(err, errlen, EG_ERR_MEMORY, "out of memory");
    if (t->dtype == EG_FLOAT16 && sp->dtype == EG_FLOAT32)
        for (size_t k = 0; k < n; k++) ((uint16_t *)buf)[k] = eg_float_to_half(((const float *)data)[k]);
    else if (t->dtype == EG_FLOAT32 && sp->dtype == EG_FLOAT16)
        for (size_t k = 0; k < n; k++) ((float *)buf)[k] = eg_half_to_float(((const uint16_t *)data)[k]);
    else
        memcpy(buf, data, need);
    free(s->inputs[i]);
    s->inputs[i] = buf;
    return EG_OK;
}

eg_status eg_session_run(eg_session *s, char *err, size_t errlen) {
    if (!s) return eg_fail(err, errlen, EG_ERR_ARGUMENT, "eg_session_run: no session");
    const eg_plan *p = s->plan;
    for (size_t i = 0; i < s->comp->n_inputs; i++)
        if (!s->inputs[i])
            return eg_fail(err, errlen, EG_ERR_INPUT, "component %s: input %s was not set", s->comp->name,
                           s->comp->inputs[i].name);
    cl_int rc;
    for (size_t i = 0; i < s->comp->n_inputs; i++) {
        const eg_tensor *t = &p->tensors[p->input_tensor[i]];
        rc = s->cl.EnqueueWriteBuffer(s->queue, s->arena, CL_TRUE, (size_t)p->tensors[t->base].offset, (size_t)t->bytes,
                                      s->inputs[i], 0, NULL, NULL);
        if (rc != CL_SUCCESS) return cl_fail(err, errlen, "writing an input (clEnqueueWriteBuffer)", rc);
    }
    eg_status st = eg_session_launch_all(s, err, errlen);
    if (st) return st;
    for (size_t o = 0; o < s->comp->n_outputs; o++) {
        const eg_spec *sp = &s->comp->outputs[o];
        const eg_tensor *t = &p->tensors[p->output_tensor[o]];
        size_t n = eg_spec_count(sp);
        uint8_t *raw = malloc(t->bytes ? (size_t)t->bytes : 1);
        if (!raw) return eg_fail(err, errlen, EG_ERR_MEMORY, "out of memory");
        rc = s->cl.EnqueueReadBuffer(s->queue, s->arena, CL_TRUE, (size_t)p->tensors[t->base].offset, (size_t)t->bytes,
                                     raw, 0, NULL, NULL);
        if (rc != CL_SUCCESS) { free(raw); return cl_fail(err, errlen, "reading an output (clEnqueueReadBuffer)", rc); }
        if (t->dtype == EG_FLOAT16 && sp->dtype == EG_FLOAT32)
            for (size_t k = 0; k < n; k++) ((float *)s->outputs[o])[k] = eg_half_to_float(((uint16_t *)raw)[k]);
        else if (t->dtype == EG_FLOAT32 && sp->dtype == EG_FLOAT16)
            for (size_t k = 0; k < n; k++) ((uint16_t *)s->outputs[o])[k] = eg_float_to_half(((float *)raw)[k]);
        else
            memcpy(s->outputs[o], raw, n * eg_dtype_size(sp->dtype));
        free(raw);
    }
    s->have_outputs = 1;
    return EG_OK;
}

eg_status eg_session_launch_all(eg_session *s, char *err, size_t errlen) {
    if (!s) return eg_fail(err, errlen, EG_ERR_ARGUMENT, "eg_session_launch_all: no session");
    const eg_plan *p = s->plan;
    for (size_t l = 0; l < p->n_launches; l++) {
        const eg_launch *L = &p->launches[l];
        size_t global[3], local[3];
        for (int d = 0; d < 3; d++) {
            local[d] = (size_t)L->block[d];
            global[d] = (size_t)(L->grid[d] * L->block[d]);
        }
        cl_int rc = s->cl.EnqueueNDRangeKernel(s->queue, s->kernels[l], 3, NULL, global, local, 0, NULL, NULL);
        if (rc != CL_SUCCESS)
            return eg_fail(err, errlen, EG_ERR_DEVICE, "component %s: launch %zu (%s) failed (%d, %s)", s->comp->name, l,
                           L->kernel, rc, eg_cl_error_name(rc));
    }
    cl_int rc = s->cl.Finish(s->queue);
    return rc == CL_SUCCESS ? EG_OK : cl_fail(err, errlen, "running the kernels (clFinish)", rc);
}

eg_status eg_session_get_output(eg_session *s, const char *name, void *data, size_t bytes, char *err, size_t errlen) {
    size_t i;
    const eg_spec *sp = s ? eg_session_spec(s, 1, name, &i) : NULL;
    if (!sp) return eg_fail(err, errlen, EG_ERR_ARGUMENT, "no output named %s", name ? name : "(null)");
    size_t need = eg_spec_count(sp) * eg_dtype_size(sp->dtype);
    if (!data || bytes != need)
        return eg_fail(err, errlen, EG_ERR_ARGUMENT, "output %s is %zu bytes, the buffer is %zu", name, need, bytes);
    if (!s->have_outputs) return eg_fail(err, errlen, EG_ERR_ARGUMENT, "output %s: nothing has run yet", name);
    memcpy(data, s->outputs[i], need);
    return EG_OK;
}
