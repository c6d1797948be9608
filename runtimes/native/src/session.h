#ifndef EG_SESSION_H
#define EG_SESSION_H

#include "artifact.h"
#include "opencl.h"

struct eg_session {
    eg_cl cl;
    const eg_component *comp;
    const eg_plan *plan;
    cl_device_id dev;
    cl_context ctx;
    cl_command_queue queue;
    cl_mem arena;
    cl_mem *mems;          /* per plan tensor: a weight's buffer or an arena tensor's sub-buffer */
    cl_program *programs;
    cl_kernel *kernels;    /* per launch */
    uint8_t **inputs;      /* per input spec: its bytes in the plan's dtype, NULL until set */
    uint8_t **outputs;     /* per output spec: host dtype, after a run */
    int have_outputs;
    int cached_programs;
    char device_name[300];
};

const eg_spec *eg_session_spec(const eg_session *s, int output, const char *name, size_t *index);

#endif
