/* The Ed25519 signature of manifest.json (edgegen/core/signing.py: manifest.sig holds the signer's
   public key and the signature over the manifest's exact bytes), verified with libsodium loaded
   at run time, against the caller's trusted keys (PEM public keys or 32 raw bytes). */
#include <dirent.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "artifact.h"

#define MAX_SIGNATURE_BYTES 4096

static int b64value(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Strict base64 (padding required, no other characters unless skip_space); -1 on bad input. */
static long b64decode(const char *s, size_t n, uint8_t *out, size_t cap, int skip_space) {
    uint32_t acc = 0;
    int bits = 0, pad = 0;
    size_t o = 0, chars = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (skip_space && (c == '\n' || c == '\r' || c == ' ' || c == '\t')) continue;
        chars++;
        if (c == '=') { pad++; continue; }
        int v = b64value(c);
        if (v < 0 || pad) return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o >= cap) return -1;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    if (chars % 4 || pad > 2) return -1;
    return (long)o;
}

static const uint8_t SPKI_PREFIX[12] = {0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00};

static eg_status read_key(const char *path, uint8_t key[32], char *err, size_t errlen) {
    char *text = NULL;
    size_t len = 0;
    eg_status st = eg_file_read(path, 65536, &text, &len, err, errlen);
    if (st) return eg_fail(err, errlen, EG_ERR_ARGUMENT, "trusted key %s: cannot be read", path);
    if (len == 32) { memcpy(key, text, 32); free(text); return EG_OK; }
    const char *begin = strstr(text, "-----BEGIN PUBLIC KEY-----"), *end = begin ? strstr(begin, "-----END PUBLIC KEY-----") : NULL;
    uint8_t der[128];
    long n = -1;
    if (begin && end) {
        begin += strlen("-----BEGIN PUBLIC KEY-----");
        n = b64decode(begin, (size_t)(end - begin), der, sizeof der, 1);
    }
    free(text);
    if (n != 44 || memcmp(der, SPKI_PREFIX, 12) != 0)
        return eg_fail(err, errlen, EG_ERR_ARGUMENT, "trusted key %s: not an Ed25519 PEM public key or 32 raw bytes; "
                       "pass the .pub file `edgegen keygen` wrote.", path);
    memcpy(key, der + 12, 32);
    return EG_OK;
}

typedef int (*sodium_init_fn)(void);
typedef int (*verify_fn)(const unsigned char *, const unsigned char *, unsigned long long, const unsigned char *);

eg_status eg_verify_signature(const char *root, const char *manifest, size_t manifest_len,
                              const char *const *keys, size_t n_keys, char *err, size_t errlen) {
    uint8_t (*trusted)[32] = calloc(n_keys, 32);
    if (!trusted) return eg_fail(err, errlen, EG_ERR_MEMORY, "out of memory");
    eg_status st = EG_OK;
    for (size_t i = 0; i < n_keys && !st; i++) st = read_key(keys[i], trusted[i], err, errlen);
    char *path = eg_path_join(root, "manifest.sig"), *text = NULL;
    eg_json *sig = NULL;
    struct stat lst;
    if (st) goto done;
    if (!path || lstat(path, &lst) != 0 || !S_ISREG(lst.st_mode)) {
        st = eg_fail(err, errlen, EG_ERR_SIGNATURE, "%s: manifest.sig is missing: the artifact is unsigned, and only "
                     "artifacts signed by a trusted key are accepted. Sign it (`edgegen sign %s --key KEYFILE`) or "
                     "get a signed copy.", root, root);
        goto done;
    }
    size_t len = 0;
    char jerr[160];
    uint8_t public_key[33], signature[65];
    const eg_json *fmt, *alg, *pk, *sg;
    long npk = -1, nsg = -1;
    if (eg_file_read(path, MAX_SIGNATURE_BYTES, &text, &len, err, errlen) == EG_OK &&
        eg_json_parse(text, len, &sig, jerr, sizeof jerr) == 0 && (fmt = eg_json_get(sig, "format")) &&
        (alg = eg_json_get(sig, "algorithm")) && (pk = eg_json_get(sig, "public_key")) &&
        (sg = eg_json_get(sig, "signature")) && fmt->type == EG_JSON_STRING && alg->type == EG_JSON_STRING &&
        pk->type == EG_JSON_STRING && sg->type == EG_JSON_STRING && !strcmp(fmt->string, "edgegen-signature") &&
        !strcmp(alg->string, "ed25519")) {
        npk = b64decode(pk->string, pk->string_len, public_key, sizeof public_key, 0);
        nsg = b64decode(sg->string, sg->string_len, signature, sizeof signature, 0);
    }
    if (npk != 32 || nsg != 64) {
        st = eg_fail(err, errlen, EG_ERR_SIGNATURE, "%s: not a readable ed25519 signature; the artifact is refused. "
                     "Sign it again or get a signed copy.", path);
        goto done;
    }
    int known = 0;
    for (size_t i = 0; i < n_keys && !known; i++) known = memcmp(trusted[i], public_key, 32) == 0;
    if (!known) {
        st = eg_fail(err, errlen, EG_ERR_SIGNATURE, "%s: signed by a key that is not trusted here (public key %.60s); "
                     "the artifact is refused.", path, pk->string);
        goto done;
    }
    void *lib = dlopen("libsodium.so.23", RTLD_NOW | RTLD_LOCAL);
    if (!lib) lib = dlopen("libsodium.so", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        st = eg_fail(err, errlen, EG_ERR_UNAVAILABLE, "checking the signature of %s needs libsodium, which is not "
                     "installed (apt-get install libsodium23; on Android, bundle libsodium.so with the app)", root);
        goto done;
    }
    sodium_init_fn init;
    verify_fn verify;
    void *f1 = dlsym(lib, "sodium_init"), *f2 = dlsym(lib, "crypto_sign_ed25519_verify_detached");
    memcpy(&init, &f1, sizeof f1);
    memcpy(&verify, &f2, sizeof f2);
    if (!f1 || !f2 || init() < 0) {
        st = eg_fail(err, errlen, EG_ERR_UNAVAILABLE, "libsodium lacks crypto_sign_ed25519_verify_detached or fails to "
                     "initialise");
        goto done;
    }
    if (verify(signature, (const unsigned char *)manifest, manifest_len, public_key) != 0)
        st = eg_fail(err, errlen, EG_ERR_SIGNATURE, "%s: manifest.json does not match its signature in manifest.sig: the "
                     "manifest was changed after signing. The artifact is refused.", root);
done:
    eg_json_free(sig);
    free(text);
    free(path);
    free(trusted);
    return st;
}

/* Files under dir (relative names from prefix) that `files` does not list, besides the manifest
   and its signature: a signed artifact holds nothing else. */
static eg_status unlisted(const char *root, const char *rel, const eg_json *files, int depth, char *err, size_t errlen) {
    if (depth > 16) return eg_fail(err, errlen, EG_ERR_SIGNATURE, "%s: folders nested too deep", root);
    char *dir = rel[0] ? eg_path_join(root, rel) : eg_strdup(root);
    DIR *d = dir ? opendir(dir) : NULL;
    if (!d) { free(dir); return eg_fail(err, errlen, EG_ERR_IO, "%s: cannot list %s", root, rel[0] ? rel : "."); }
    eg_status st = EG_OK;
    struct dirent *e;
    while (!st && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *name = rel[0] ? eg_path_join(rel, e->d_name) : eg_strdup(e->d_name);
        char *full = name ? eg_path_join(root, name) : NULL;
        struct stat s;
        if (!full || lstat(full, &s) != 0) st = eg_fail(err, errlen, EG_ERR_IO, "%s: cannot read %s", root, e->d_name);
        else if (S_ISDIR(s.st_mode)) st = unlisted(root, name, files, depth + 1, err, errlen);
        else if (!eg_json_get(files, name) && strcmp(name, "manifest.json") && strcmp(name, "manifest.sig"))
            st = eg_fail(err, errlen, EG_ERR_SIGNATURE, "%s: file %.200s is not in the signed manifest: it was added "
                         "after signing. The artifact is refused.", root, name);
        free(full);
        free(name);
    }
    closedir(d);
    free(dir);
    return st;
}

eg_status eg_check_unlisted(const char *root, const eg_json *files, char *err, size_t errlen) {
    return unlisted(root, "", files, 0, err, errlen);
}
