/* Fuzz of the artifact checks: mutations of a real artifact's plan.json, weights and kernels
   (truncation, bit flips, numbers out of range, wrong versions, huge header lengths), each
   loaded with eg_plan_load; and of manifest.json through eg_artifact_open. Every case must end
   in a status with a message or a clean success.
   usage: test_core_fuzz ARTIFACT WORKDIR CASES [SEED] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "artifact.h"

static uint64_t rng_state;
static uint64_t next(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}
static size_t pick(size_t n) { return n ? (size_t)(next() % n) : 0; }

static const char *const NUMBERS[] = {"0", "-1", "1", "255", "256", "4294967296", "68719476736", "68719476737",
                                      "2147483648", "99999999999999999999999", "1e308", "-1e308", "3.5", "1e-9",
                                      "9223372036854775807", "18446744073709551616", "\"x\"", "null", "[]", "{}"};

/* Replaces the n-th run of digits in buf with a chosen number. */
static size_t mutate_number(char *buf, size_t len, size_t cap) {
    size_t runs = 0;
    for (size_t i = 0; i < len; i++)
        if (buf[i] >= '0' && buf[i] <= '9' && (i == 0 || buf[i - 1] < '0' || buf[i - 1] > '9')) runs++;
    if (!runs) return len;
    size_t target = pick(runs), seen = 0;
    for (size_t i = 0; i < len; i++) {
        if (!(buf[i] >= '0' && buf[i] <= '9' && (i == 0 || buf[i - 1] < '0' || buf[i - 1] > '9'))) continue;
        if (seen++ != target) continue;
        size_t j = i;
        while (j < len && buf[j] >= '0' && buf[j] <= '9') j++;
        const char *num = NUMBERS[pick(sizeof NUMBERS / sizeof *NUMBERS)];
        size_t nl = strlen(num);
        if (len - (j - i) + nl > cap) return len;
        memmove(buf + i + nl, buf + j, len - j);
        memcpy(buf + i, num, nl);
        return len - (j - i) + nl;
    }
    return len;
}

static const char *const SWAPS[][2] = {
    {"\"version\": 1", "\"version\": 2"}, {"\"arena\"", "\"view\""}, {"\"weight\"", "\"arena\""},
    {"\"float16\"", "\"float64\""}, {"\"float16\"", "\"int32\""}, {"edgegen-launch-plan", "edgegen-launch-plam"},
    {"\"F16\"", "\"F32\""}, {"\"F16\"", "\"Q4\""}, {"\"kernels\": [", "\"kernels\": [1, "},
    {"\"args\": [\"", "\"args\": [\"nope\", \""}, {"\"of\": \"", "\"of\": \"t1"}, {"__kernel", "__kernal"},
    {"edgegen-program: ", "edgegen-program: x"}, {"\"grid\": [", "\"grid\": [65536, "}, {"\"block\": [", "\"block\": ["},
    {"\"storage\": \"view\", \"of\": \"", "\"storage\": \"view\", \"of\": \"t"}, {"\"program\": \"", "\"program\": \"_"},
    {"\"data_offsets\": [", "\"data_offsets\": [7, "}, {"\"shape\": [", "\"shape\": [1, 1, 1, 1, 1, 1, 1, 1, "},
    {"\"scalars\": []", "\"scalars\": [{\"dtype\": \"int8\", \"value\": 300}]"},
    {"\"schema_version\": 1", "\"schema_version\": 7"}, {"\"bytes\": ", "\"bytes\": 1"},
    {"\"range\": [0, ", "\"range\": [5, "}, {"\"transformer/plan.json\"", "\"../plan.json\""},
};

static size_t swap_text(char *buf, size_t len, size_t cap) {
    for (int tries = 0; tries < 8; tries++) {
        const char *const *s = SWAPS[pick(sizeof SWAPS / sizeof *SWAPS)];
        char *hit = NULL;
        size_t fl = strlen(s[0]), tl = strlen(s[1]);
        for (size_t i = 0; i + fl <= len; i++)
            if (memcmp(buf + i, s[0], fl) == 0 && (!hit || pick(4) == 0)) hit = buf + i;
        if (!hit || len - fl + tl > cap) continue;
        size_t at = (size_t)(hit - buf);
        memmove(buf + at + tl, buf + at + fl, len - at - fl);
        memcpy(buf + at, s[1], tl);
        return len - fl + tl;
    }
    return len;
}

static size_t mutate(char *buf, size_t len, size_t cap, int binary_header) {
    switch (pick(binary_header ? 7 : 6)) {
    case 0: return pick(len + 1); /* truncation */
    case 1: for (int k = 0, n = 1 + (int)pick(8); k < n && len; k++) buf[pick(len)] ^= (char)(1u << pick(8)); return len;
    case 2: if (len) buf[pick(len)] = (char)next(); return len;
    case 3: return mutate_number(buf, len, cap);
    case 4: return swap_text(buf, len, cap);
    case 5: { /* a chunk duplicated */
        size_t a = pick(len + 1), n = pick(64);
        if (a + n > len || len + n > cap) return len;
        memmove(buf + a + n, buf + a, len - a);
        return len + n;
    }
    default: { /* the safetensors header length */
        static const uint64_t L[] = {0, 1, 7, 8, 1ull << 20, 100ull << 20, (100ull << 20) + 1, 1ull << 63, ~0ull};
        uint64_t v = pick(2) ? L[pick(sizeof L / sizeof *L)] : next();
        for (int i = 0; i < 8 && (size_t)i < len; i++) buf[i] = (char)(v >> (8 * i));
        return len;
    }
    }
}

static int write_file(const char *path, const char *buf, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int bad = len && fwrite(buf, 1, len, f) != len;
    return fclose(f) || bad ? -1 : 0;
}

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: %s ARTIFACT WORKDIR CASES [SEED]\n", argv[0]); return 2; }
    const char *root = argv[1], *work = argv[2];
    int cases = atoi(argv[3]);
    rng_state = argc > 4 ? strtoull(argv[4], NULL, 10) * 2654435761u + 88172645463325252ull : 88172645463325252ull;
    char err[1024];
    eg_options opt;
    eg_options_init(&opt);
    opt.verify_checksums = 0;
    eg_artifact *a = NULL;
    if (eg_artifact_open(root, &opt, &a, err, sizeof err)) { fprintf(stderr, "the original fails: %s\n", err); return 2; }
    const eg_component *orig = NULL;
    for (size_t i = 0; i < a->n_components && !orig; i++) if (a->components[i].plan) orig = &a->components[i];
    if (!orig) { fprintf(stderr, "no OpenCL component\n"); return 2; }
    const char *srcs[3] = {orig->plan_path, orig->kernels_path, orig->weights_path};
    char *data[4];
    size_t lens[4];
    char *mpath = eg_path_join(root, "manifest.json");
    for (int k = 0; k < 4; k++)
        if (eg_file_read(k < 3 ? srcs[k] : mpath, (size_t)1 << 30, &data[k], &lens[k], err, sizeof err)) {
            fprintf(stderr, "%s\n", err);
            return 2;
        }
    char *paths[3];
    static const char *const NAMES[3] = {"plan.json", "kernels.cl", "weights.safetensors"};
    for (int k = 0; k < 3; k++) paths[k] = eg_path_join(work, NAMES[k]);
    int ok = 0, errors = 0, bad = 0;
    for (int c = 0; c < cases; c++) {
        int target = (int)pick(10);
        target = target < 4 ? 0 : target < 6 ? 1 : target < 9 ? 2 : 3;
        eg_status st;
        err[0] = 0;
        if (target == 3) { /* the manifest, in a copy of the artifact whose files are hard links */
            size_t cap = lens[3] * 2 + 4096;
            char *buf = malloc(cap);
            memcpy(buf, data[3], lens[3]);
            size_t n = mutate(buf, lens[3], cap, 0);
            char dir[4096];
            snprintf(dir, sizeof dir, "%s/art", work);
            char *mp = eg_path_join(dir, "manifest.json");
            write_file(mp, buf, n);
            eg_artifact *b = NULL;
            st = eg_artifact_open(dir, &opt, &b, err, sizeof err);
            eg_artifact_close(b);
            free(mp);
            free(buf);
        } else {
            size_t cap = lens[target] * 2 + 4096;
            char *buf = malloc(cap);
            memcpy(buf, data[target], lens[target]);
            size_t n = mutate(buf, lens[target], cap, target == 2);
            if (pick(3) == 0) n = mutate(buf, n, cap, target == 2);
            for (int k = 0; k < 3; k++) write_file(paths[k], k == target ? buf : data[k], k == target ? n : lens[k]);
            free(buf);
            eg_component comp = *orig;
            comp.plan_path = paths[0];
            comp.kernels_path = paths[1];
            comp.weights_path = paths[2];
            comp.plan = NULL;
            eg_plan *p = NULL;
            st = eg_plan_load(&comp, &p, err, sizeof err);
            eg_plan_free(p);
        }
        if (st == EG_OK) ok++;
        else if (err[0]) errors++;
        else { bad++; fprintf(stderr, "case %d: status %d without a message\n", c, st); }
        if (getenv("FUZZ_VERBOSE")) fprintf(stderr, "case %d target %d: %d %s\n", c, target, st, err);
    }
    printf("cases %d ok %d errors %d without-message %d\n", cases, ok, errors, bad);
    for (int k = 0; k < 4; k++) free(data[k]);
    for (int k = 0; k < 3; k++) free(paths[k]);
    free(mpath);
    eg_artifact_close(a);
    return bad ? 1 : 0;
}
