#ifndef EG_SAFETENSORS_H
#define EG_SAFETENSORS_H

#include "artifact.h"

/* Checks a mapped safetensors file (header length, JSON, every tensor's dtype, shape and byte
   range inside the file) and points each of the plan's weight tensors at its bytes, after
   checking its dtype and shape equal the plan's. */
eg_status eg_safetensors_bind(const char *path, const eg_file *file, eg_plan *plan, char *err, size_t errlen);

#endif
