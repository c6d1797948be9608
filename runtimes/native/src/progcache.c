#include "progcache.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sha256.h"
#include "util.h"

#define MAGIC "EGCLBIN1"
#define HEADER (8 + 32 + 8 + 32)
#define MAX_BINARY ((size_t)512 << 20)

static void cache_key(const eg_cl *cl, cl_device_id dev, const char *source, size_t len, const char *options,
                      uint8_t key[32]) {
    char name[256] = "", driver[256] = "", version[256] = "";
    cl->GetDeviceInfo(dev, CL_DEVICE_NAME, sizeof name - 1, name, NULL);
    cl->GetDeviceInfo(dev, CL_DRIVER_VERSION, sizeof driver - 1, driver, NULL);
    cl->GetDeviceInfo(dev, CL_DEVICE_VERSION, sizeof version - 1, version, NULL);
    eg_sha256 s;
    eg_sha256_init(&s);
    eg_sha256_update(&s, "edgegen-opencl-binary-1", 24);
    eg_sha256_update(&s, source, len);
    eg_sha256_update(&s, "", 1);
    eg_sha256_update(&s, name, strlen(name) + 1);
    eg_sha256_update(&s, driver, strlen(driver) + 1);
    eg_sha256_update(&s, version, strlen(version) + 1);
    eg_sha256_update(&s, options, strlen(options) + 1);
    eg_sha256_final(&s, key);
}

static char *entry_path(const char *cache_dir, const uint8_t key[32]) {
    char name[80];
    for (int i = 0; i < 32; i++) snprintf(name + 2 * i, 3, "%02x", key[i]);
    strcat(name, ".bin");
    char *dir = eg_path_join(cache_dir, "opencl");
    char *path = dir ? eg_path_join(dir, name) : NULL;
    free(dir);
    return path;
}

static int mkdirs(const char *path) {
    char *p = eg_strdup(path);
    if (!p) return -1;
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST) { free(p); return -1; }
        *s = '/';
    }
    int r = mkdir(p, 0755) != 0 && errno != EEXIST ? -1 : 0;
    free(p);
    return r;
}

static cl_program from_cache(const eg_cl *cl, cl_context ctx, cl_device_id dev, const char *path, const uint8_t key[32],
                             const char *options) {
    eg_file f;
    char err[16];
    if (eg_file_map(path, MAX_BINARY + HEADER, &f, err, sizeof err)) return NULL;
    cl_program prog = NULL;
    uint64_t n = 0;
    if (f.size >= HEADER && memcmp(f.data, MAGIC, 8) == 0 && memcmp(f.data + 8, key, 32) == 0) {
        for (int i = 7; i >= 0; i--) n = n << 8 | f.data[40 + i];
        uint8_t digest[32];
        eg_sha256 s;
        if (n == f.size - HEADER && n > 0) {
            eg_sha256_init(&s);
            eg_sha256_update(&s, f.data + HEADER, (size_t)n);
            eg_sha256_final(&s, digest);
            if (memcmp(digest, f.data + 48, 32) == 0) {
                const unsigned char *bin = f.data + HEADER;
                size_t size = (size_t)n;
                cl_int status = 0, rc = 0;
                prog = cl->CreateProgramWithBinary(ctx, 1, &dev, &size, &bin, &status, &rc);
                if (prog && (rc != CL_SUCCESS || status != CL_SUCCESS ||
                             cl->BuildProgram(prog, 1, &dev, options, NULL, NULL) != CL_SUCCESS)) {
                    cl->ReleaseProgram(prog);
                    prog = NULL;
                }
            }
        }
    }
    eg_file_unmap(&f);
    return prog;
}

static void store(const eg_cl *cl, cl_program prog, const char *cache_dir, const char *path, const uint8_t key[32]) {
    size_t size = 0;
    if (cl->GetProgramInfo(prog, CL_PROGRAM_BINARY_SIZES, sizeof size, &size, NULL) != CL_SUCCESS || size == 0 ||
        size > MAX_BINARY)
        return;
    unsigned char *buf = malloc(HEADER + size);
    if (!buf) return;
    unsigned char *bin = buf + HEADER;
    if (cl->GetProgramInfo(prog, CL_PROGRAM_BINARIES, sizeof bin, &bin, NULL) != CL_SUCCESS) { free(buf); return; }
    memcpy(buf, MAGIC, 8);
    memcpy(buf + 8, key, 32);
    for (int i = 0; i < 8; i++) buf[40 + i] = (unsigned char)((uint64_t)size >> (8 * i));
    eg_sha256 s;
    eg_sha256_init(&s);
    eg_sha256_update(&s, bin, size);
    eg_sha256_final(&s, buf + 48);
    char *dir = eg_path_join(cache_dir, "opencl");
    size_t tl = strlen(path) + 32;
    char *tmp = malloc(tl);
    if (dir && tmp && mkdirs(dir) == 0) {
        snprintf(tmp, tl, "%s.tmp.XXXXXX", path);
        int fd = mkstemp(tmp);
        if (fd >= 0) {
            size_t total = HEADER + size, done = 0;
            while (done < total) {
                ssize_t w = write(fd, buf + done, total - done);
                if (w <= 0) break;
                done += (size_t)w;
            }
            int ok = done == total && fsync(fd) == 0;
            close(fd);
            if (!ok || rename(tmp, path) != 0) unlink(tmp);
        }
    }
    free(dir);
    free(tmp);
    free(buf);
}

eg_status eg_program_build(const eg_cl *cl, cl_context ctx, cl_device_id dev, const char *cache_dir,
                           const char *source, size_t len, const char *options, cl_program *out, int *cached,
                           char *err, size_t errlen) {
    uint8_t key[32];
    char *path = NULL;
    *cached = 0;
    if (cache_dir) {
        cache_key(cl, dev, source, len, options, key);
        path = entry_path(cache_dir, key);
        if (path && (*out = from_cache(cl, ctx, dev, path, key, options))) {
            *cached = 1;
            free(path);
            return EG_OK;
        }
    }
    cl_int rc = 0;
    cl_program prog = cl->CreateProgramWithSource(ctx, 1, &source, &len, &rc);
    if (!prog || rc != CL_SUCCESS) {
        free(path);
        return eg_fail(err, errlen, EG_ERR_DEVICE, "clCreateProgramWithSource failed (%d, %s)", rc, eg_cl_error_name(rc));
    }
    rc = cl->BuildProgram(prog, 1, &dev, options, NULL, NULL);
    if (rc != CL_SUCCESS) {
        char log[600] = "";
        cl->GetProgramBuildInfo(prog, dev, CL_PROGRAM_BUILD_LOG, sizeof log - 1, log, NULL);
        log[sizeof log - 1] = 0;
        for (char *c = log; *c; c++) if (*c == '\n') *c = ' ';
        cl->ReleaseProgram(prog);
        free(path);
        return eg_fail(err, errlen, EG_ERR_ARTIFACT, "building the program failed (%d, %s): %.400s; the kernel file is "
                       "corrupt or not for this device: copy the artifact again or rebuild it.", rc,
                       eg_cl_error_name(rc), log);
    }
    if (path) store(cl, prog, cache_dir, path, key);
    free(path);
    *out = prog;
    return EG_OK;
}
