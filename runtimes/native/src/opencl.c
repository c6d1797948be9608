#include "opencl.h"

#include <ctype.h>
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

static const char *const LIBRARIES[] = {
    "libOpenCL.so", "libOpenCL.so.1",
    /* Android: the vendor's driver (the paths TVM's and MNN's OpenCL wrappers try) */
    "/system/vendor/lib64/libOpenCL.so", "/system/lib64/libOpenCL.so", "/vendor/lib64/libOpenCL.so",
    "/system/vendor/lib64/egl/libGLES_mali.so", "/system/lib64/egl/libGLES_mali.so",
    "/vendor/lib64/egl/libGLES_mali.so", "/system/vendor/lib64/libPVROCL.so", "/vendor/lib64/libPVROCL.so",
    "/system/vendor/lib/libOpenCL.so", "/system/lib/libOpenCL.so", "/vendor/lib/libOpenCL.so",
    "/system/vendor/lib/egl/libGLES_mali.so", "/system/lib/egl/libGLES_mali.so", "/vendor/lib/egl/libGLES_mali.so",
    "/system/vendor/lib/libPVROCL.so", "/data/data/org.pocl.libs/files/lib64/libpocl.so",
};

#define SYM(field, name)                                                             \
    do {                                                                             \
        void *f_ = dlsym(cl->lib, name);                                             \
        if (!f_) { missing = name; goto fail; }                                      \
        memcpy(&cl->field, &f_, sizeof f_);                                          \
    } while (0)

eg_status eg_cl_load(eg_cl *cl, char *err, size_t errlen) {
    memset(cl, 0, sizeof *cl);
    for (size_t i = 0; i < sizeof LIBRARIES / sizeof *LIBRARIES && !cl->lib; i++)
        cl->lib = dlopen(LIBRARIES[i], RTLD_NOW | RTLD_LOCAL);
    if (!cl->lib)
        return eg_fail(err, errlen, EG_ERR_UNAVAILABLE, "no OpenCL library found (tried libOpenCL.so, libOpenCL.so.1 "
                       "and the Android vendor paths); install the GPU vendor's OpenCL driver, or PoCL on a CPU "
                       "(apt-get install pocl-opencl-icd ocl-icd-libopencl1)");
    const char *missing = NULL;
    SYM(GetPlatformIDs, "clGetPlatformIDs");
    SYM(GetPlatformInfo, "clGetPlatformInfo");
    SYM(GetDeviceIDs, "clGetDeviceIDs");
    SYM(GetDeviceInfo, "clGetDeviceInfo");
    SYM(CreateContext, "clCreateContext");
    SYM(CreateCommandQueue, "clCreateCommandQueue");
    SYM(CreateBuffer, "clCreateBuffer");
    SYM(CreateSubBuffer, "clCreateSubBuffer");
    SYM(CreateProgramWithSource, "clCreateProgramWithSource");
    SYM(CreateProgramWithBinary, "clCreateProgramWithBinary");
    SYM(BuildProgram, "clBuildProgram");
    SYM(GetProgramInfo, "clGetProgramInfo");
    SYM(GetProgramBuildInfo, "clGetProgramBuildInfo");
    SYM(CreateKernel, "clCreateKernel");
    SYM(SetKernelArg, "clSetKernelArg");
    SYM(EnqueueNDRangeKernel, "clEnqueueNDRangeKernel");
    SYM(EnqueueWriteBuffer, "clEnqueueWriteBuffer");
    SYM(EnqueueReadBuffer, "clEnqueueReadBuffer");
    SYM(Finish, "clFinish");
    SYM(ReleaseMemObject, "clReleaseMemObject");
    SYM(ReleaseKernel, "clReleaseKernel");
    SYM(ReleaseProgram, "clReleaseProgram");
    SYM(ReleaseCommandQueue, "clReleaseCommandQueue");
    SYM(ReleaseContext, "clReleaseContext");
    return EG_OK;
fail:
    eg_cl_unload(cl);
    return eg_fail(err, errlen, EG_ERR_UNAVAILABLE, "the OpenCL library lacks %s (OpenCL 1.2 is required)", missing);
}

void eg_cl_unload(eg_cl *cl) {
    /* the library stays loaded: ICD loaders and drivers do not all survive dlclose and a reload */
    memset(cl, 0, sizeof *cl);
}

static int contains_ci(const char *hay, const char *needle) {
    size_t n = strlen(needle);
    for (; *hay; hay++) {
        size_t i = 0;
        while (i < n && hay[i] && tolower((unsigned char)hay[i]) == tolower((unsigned char)needle[i])) i++;
        if (i == n) return 1;
    }
    return n == 0;
}

eg_status eg_cl_pick_device(const eg_cl *cl, const char *wanted, cl_device_id *out, char *name, size_t namelen,
                            char *err, size_t errlen) {
    cl_platform_id platforms[16];
    cl_device_id devices[64];
    cl_uint np = 0, nd = 0;
    if (cl->GetPlatformIDs(16, platforms, &np) != CL_SUCCESS) np = 0;
    if (np > 16) np = 16;
    for (cl_uint p = 0; p < np && nd < 64; p++) {
        cl_uint got = 0;
        if (cl->GetDeviceIDs(platforms[p], CL_DEVICE_TYPE_ALL, 64 - nd, devices + nd, &got) == CL_SUCCESS)
            nd += got < 64 - nd ? got : 64 - nd;
    }
    if (nd == 0)
        return eg_fail(err, errlen, EG_ERR_UNAVAILABLE, "no OpenCL device on this machine; install the GPU vendor's "
                       "OpenCL driver, or PoCL on a CPU (apt-get install pocl-opencl-icd)");
    int pick = -1, gpu = -1;
    char names[512] = "", dn[256];
    for (cl_uint i = 0; i < nd; i++) {
        dn[0] = 0;
        cl->GetDeviceInfo(devices[i], CL_DEVICE_NAME, sizeof dn - 1, dn, NULL);
        dn[sizeof dn - 1] = 0;
        cl_bitfield type = 0;
        cl->GetDeviceInfo(devices[i], CL_DEVICE_TYPE, sizeof type, &type, NULL);
        if (gpu < 0 && (type & CL_DEVICE_TYPE_GPU)) gpu = (int)i;
        if (wanted && pick < 0 && contains_ci(dn, wanted)) pick = (int)i;
        size_t used = strlen(names);
        snprintf(names + used, sizeof names - used, "%s'%s'", used ? ", " : "", dn);
    }
    if (wanted && pick < 0)
        return eg_fail(err, errlen, EG_ERR_UNAVAILABLE, "no OpenCL device matches EDGEGEN_OPENCL_DEVICE='%s'; devices "
                       "here: [%s]", wanted, names);
    if (pick < 0) pick = gpu >= 0 ? gpu : 0;
    *out = devices[pick];
    name[0] = 0;
    cl->GetDeviceInfo(devices[pick], CL_DEVICE_NAME, namelen - 1, name, NULL);
    name[namelen - 1] = 0;
    return EG_OK;
}

const char *eg_cl_error_name(cl_int code) {
    switch (code) {
    case -1: return "CL_DEVICE_NOT_FOUND";
    case -2: return "CL_DEVICE_NOT_AVAILABLE";
    case -3: return "CL_COMPILER_NOT_AVAILABLE";
    case -4: return "CL_MEM_OBJECT_ALLOCATION_FAILURE";
    case -5: return "CL_OUT_OF_RESOURCES";
    case -6: return "CL_OUT_OF_HOST_MEMORY";
    case -11: return "CL_BUILD_PROGRAM_FAILURE";
    case -13: return "CL_MISALIGNED_SUB_BUFFER_OFFSET";
    case -30: return "CL_INVALID_VALUE";
    case -38: return "CL_INVALID_MEM_OBJECT";
    case -42: return "CL_INVALID_BINARY";
    case -44: return "CL_INVALID_PROGRAM";
    case -46: return "CL_INVALID_KERNEL_NAME";
    case -48: return "CL_INVALID_KERNEL";
    case -49: return "CL_INVALID_ARG_INDEX";
    case -50: return "CL_INVALID_ARG_VALUE";
    case -51: return "CL_INVALID_ARG_SIZE";
    case -52: return "CL_INVALID_KERNEL_ARGS";
    case -54: return "CL_INVALID_WORK_GROUP_SIZE";
    case -55: return "CL_INVALID_WORK_ITEM_SIZE";
    case -61: return "CL_INVALID_BUFFER_SIZE";
    default: return "an OpenCL error";
    }
}
