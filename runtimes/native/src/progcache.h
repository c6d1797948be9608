/* OpenCL program binaries cached per device in $EDGEGEN_CACHE_DIR/opencl: key = SHA-256 of the
   source, device name, driver version and build options; entries are checked (magic, key,
   length, SHA-256 of the binary) and rebuilt from source when stale or corrupt; written to a
   temporary file and renamed into place. */
#ifndef EG_PROGCACHE_H
#define EG_PROGCACHE_H

#include "opencl.h"

eg_status eg_program_build(const eg_cl *cl, cl_context ctx, cl_device_id dev, const char *cache_dir,
                           const char *source, size_t len, const char *options, cl_program *out, int *from_cache,
                           char *err, size_t errlen);

#endif
