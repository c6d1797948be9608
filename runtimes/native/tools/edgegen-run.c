/* edgegen-run: generate an image from an edgegen GPU artifact, check an artifact, or benchmark it.
   Errors: a message on stderr and a nonzero exit. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "edgegen.h"
#include "png.h"
#include "rng.h"

#define MAX_LABELS 1024

static const char USAGE[] =
    "usage: edgegen-run ARTIFACT [options]\n"
    "  --label K           class id or name (repeat, or a comma list), class-conditional artifacts\n"
    "  --prompt TEXT       prompt, text-to-image artifacts\n"
    "  --negative-prompt TEXT\n"
    "  --steps N           denoising steps (default: the artifact's)\n"
    "  --seed S            noise seed (default 0)\n"
    "  --guidance G        classifier-free guidance scale (default: the artifact's)\n"
    "  --scheduler NAME    ddim, euler, lcm, euler_a or dpm (default: the artifact's)\n"
    "  --out PATH          PNG to write (several images are tiled in a row; default image.png)\n"
    "  --check             check the artifact (manifest, checksums, plans, weights) without a device\n"
    "  --bench             print the bench worker's JSON event lines (edgegen bench)\n"
    "  --runs N --warmup N timed and untimed calls per component with --bench (default 10, 1)\n"
    "  --device SUBSTR     OpenCL device by name (default $EDGEGEN_OPENCL_DEVICE, else the first GPU)\n"
    "  --cache-dir DIR     program binary cache (default $EDGEGEN_CACHE_DIR, ~/.cache/edgegen)\n"
    "  --no-cache          build programs from source, do not read or write the cache\n"
    "  --no-verify         skip the SHA-256 checksums (sizes are still checked)\n"
    "  --trusted-key PUB   accept only an artifact signed by this Ed25519 public key (repeatable; libsodium)\n"
    "  --quiet             no progress on stderr\n";

typedef struct {
    const char *artifact, *prompt, *negative, *scheduler, *out, *device, *cache_dir;
    int steps, check, bench, runs, warmup, quiet, no_cache, no_verify;
    uint64_t seed;
    float guidance;
    int32_t labels[MAX_LABELS];
    char *label_names[MAX_LABELS]; /* a name where the label is not an integer, else NULL */
    size_t n_labels;
    const char *keys[16];
    size_t n_keys;
} args_t;

static eg_status eg_fail_msg(char *err, size_t errlen, eg_status st, const char *msg) {
    snprintf(err, errlen, "%s", msg);
    return st;
}

static int fail(const char *msg) {
    fprintf(stderr, "edgegen-run: %s\n", msg);
    return 2;
}

static int parse_long(const char *s, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv, args_t *a) {
    memset(a, 0, sizeof *a);
    a->guidance = -1;
    a->runs = 10;
    a->warmup = 1;
    a->out = "image.png";
    char msg[300];
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long long n;
#define NEED_VALUE() do { if (!v) { snprintf(msg, sizeof msg, "%s needs a value", o); return fail(msg); } i++; } while (0)
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) { fputs(USAGE, stdout); exit(0); }
        else if (!strcmp(o, "--check")) a->check = 1;
        else if (!strcmp(o, "--bench")) a->bench = 1;
        else if (!strcmp(o, "--quiet")) a->quiet = 1;
        else if (!strcmp(o, "--no-cache")) a->no_cache = 1;
        else if (!strcmp(o, "--no-verify")) a->no_verify = 1;
        else if (!strcmp(o, "--prompt")) { NEED_VALUE(); a->prompt = v; }
        else if (!strcmp(o, "--negative-prompt")) { NEED_VALUE(); a->negative = v; }
        else if (!strcmp(o, "--scheduler")) {
            NEED_VALUE();
            if (strcmp(v, "ddim") && strcmp(v, "euler") && strcmp(v, "lcm") && strcmp(v, "euler_a") && strcmp(v, "dpm"))
                return fail("--scheduler must be ddim, euler, lcm, euler_a or dpm");
            a->scheduler = v;
        } else if (!strcmp(o, "--out")) { NEED_VALUE(); a->out = v; }
        else if (!strcmp(o, "--device")) { NEED_VALUE(); a->device = v; }
        else if (!strcmp(o, "--trusted-key")) {
            NEED_VALUE();
            if (a->n_keys >= 16) return fail("at most 16 trusted keys");
            a->keys[a->n_keys++] = v;
        }
        else if (!strcmp(o, "--cache-dir")) { NEED_VALUE(); a->cache_dir = v; }
        else if (!strcmp(o, "--steps")) {
            NEED_VALUE();
            if (parse_long(v, 1, 1000, &n)) return fail("--steps must be an integer in 1..1000");
            a->steps = (int)n;
        } else if (!strcmp(o, "--runs") || !strcmp(o, "--warmup")) {
            NEED_VALUE();
            if (parse_long(v, 0, 100000, &n)) return fail("--runs and --warmup take an integer in 0..100000");
            *(!strcmp(o, "--runs") ? &a->runs : &a->warmup) = (int)n;
        } else if (!strcmp(o, "--seed")) {
            NEED_VALUE();
            char *end;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 10);
            if (errno || end == v || *end || v[0] == '-') return fail("--seed must be a non-negative integer");
            a->seed = s;
        } else if (!strcmp(o, "--guidance")) {
            NEED_VALUE();
            char *end;
            double g = strtod(v, &end);
            if (end == v || *end || !(g >= 0 && g <= 1000)) return fail("--guidance must be a number in 0..1000");
            a->guidance = (float)g;
        } else if (!strcmp(o, "--label")) {
            NEED_VALUE();
            char buf[1024];
            snprintf(buf, sizeof buf, "%s", v);
            for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
                while (*tok == ' ') tok++;
                if (a->n_labels >= MAX_LABELS) return fail("too many labels");
                if (parse_long(tok, -2147483647LL, 2147483647LL, &n)) {
                    a->label_names[a->n_labels] = strdup(tok);
                    n = -1;
                }
                a->labels[a->n_labels++] = (int32_t)n;
            }
        } else if (o[0] == '-' && o[1]) {
            snprintf(msg, sizeof msg, "unknown option %s (see --help)", o);
            return fail(msg);
        } else if (!a->artifact) a->artifact = o;
        else return fail("one artifact only (see --help)");
    }
    if (!a->artifact) { fputs(USAGE, stderr); return 2; }
    return 0;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int on_step(void *user, int step, int total, float t) {
    (void)t;
    if (!*(int *)user) fprintf(stderr, "\rstep %d/%d", step, total);
    if (!*(int *)user && step == total) fputc('\n', stderr);
    return 0;
}

/* A JSON string body with quotes, backslashes and control characters escaped. */
static void json_str(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

static void emit_error(const char *prefix, const char *msg) {
    printf("{\"event\": \"error\", \"error\": ");
    char buf[1200];
    snprintf(buf, sizeof buf, "%s%s", prefix, msg);
    json_str(buf);
    printf("}\n");
    fflush(stdout);
}

static long peak_rss_bytes(void) {
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_maxrss * 1024L : -1;
}

/* The bench worker of edgegen/bench.py, its event lines exactly. */
static int bench(const args_t *a, const eg_options *opt) {
    char err[1024];
    double t0 = now();
    eg_artifact *art = NULL;
    eg_status st = eg_artifact_open(a->artifact, opt, &art, err, sizeof err);
    size_t nc = st ? 0 : eg_artifact_component_count(art);
    eg_session *sessions[64] = {0};
    void *feeds[64][16] = {{0}};
    size_t feed_bytes[64][16] = {{0}};
    double first_call[64] = {0}, call_s[64] = {0};
    int rc = 0;
    for (size_t c = 0; !st && c < nc && c < 64; c++) {
        st = eg_session_open(art, eg_artifact_component_name(art, c), &sessions[c], err, sizeof err);
        for (size_t i = 0; !st && i < eg_session_tensor_count(sessions[c], 0) && i < 16; i++) {
            const char *name = eg_session_tensor_name(sessions[c], 0, i);
            eg_dtype dt;
            int64_t shape[EG_MAX_DIMS];
            int nd;
            size_t bytes;
            eg_session_tensor_info(sessions[c], 0, name, &dt, shape, &nd, &bytes, err, sizeof err);
            feeds[c][i] = calloc(1, bytes + 1);
            feed_bytes[c][i] = bytes;
            if (!feeds[c][i]) { st = EG_ERR_MEMORY; snprintf(err, sizeof err, "out of memory"); break; }
            if (dt == EG_FLOAT32) {
                size_t n = bytes / 4;
                if (nd == 1) for (size_t k = 0; k < n; k++) ((float *)feeds[c][i])[k] = 500.0f;
                else eg_normal_fill(0, feeds[c][i], n);
            } else if (dt == EG_FLOAT16) {
                /* left zero: a float16 host input gets no random values here */
            }
            st = eg_session_set_input(sessions[c], name, feeds[c][i], bytes, err, sizeof err);
        }
        if (!st) {
            double t = now();
            st = eg_session_run(sessions[c], err, sizeof err);
            first_call[c] = now() - t;
        }
    }
    if (st) {
        emit_error("load: ", err);
        rc = 1;
        goto done;
    }
    double expect = 0;
    for (size_t c = 0; c < nc; c++) expect = first_call[c] > expect ? first_call[c] : expect;
    printf("{\"event\": \"cold_start\", \"seconds\": %.4f, \"threads\": null, \"expect_s\": %.3f}\n", now() - t0, expect);
    fflush(stdout);
    for (size_t c = 0; c < nc; c++) {
        double *times = calloc((size_t)(a->warmup + a->runs) + 1, sizeof(double));
        int nt = 0;
        for (int i = 0; times && i < a->warmup + a->runs; i++) {
            for (size_t k = 0; k < eg_session_tensor_count(sessions[c], 0) && k < 16; k++)
                eg_session_set_input(sessions[c], eg_session_tensor_name(sessions[c], 0, k), feeds[c][k],
                                     feed_bytes[c][k], err, sizeof err);
            double t = now();
            st = eg_session_run(sessions[c], err, sizeof err);
            double dt = now() - t;
            if (i < a->warmup) continue;
            printf("{\"event\": \"run\", \"component\": ");
            json_str(eg_artifact_component_name(art, c));
            if (st) { printf(", \"error\": "); json_str(err); printf("}\n"); }
            else { times[nt++] = dt; printf(", \"ms\": %.4f}\n", dt * 1e3); }
            fflush(stdout);
        }
        call_s[c] = first_call[c];
        if (nt) { /* the median */
            for (int x = 1; x < nt; x++) for (int y = x; y > 0 && times[y - 1] > times[y]; y--) {
                double tmp = times[y]; times[y] = times[y - 1]; times[y - 1] = tmp;
            }
            call_s[c] = nt % 2 ? times[nt / 2] : (times[nt / 2 - 1] + times[nt / 2]) / 2;
        }
        free(times);
    }
    (void)call_s;
    eg_pipeline *pipe = NULL;
    for (size_t c = 0; c < nc; c++) { eg_session_close(sessions[c]); sessions[c] = NULL; }
    st = eg_pipeline_open(art, &pipe, err, sizeof err);
    if (!st) {
        int h, w, ch, steps = a->steps ? a->steps : 0;
        eg_pipeline_image_shape(pipe, &h, &w, &ch);
        int class_cond = !strcmp(eg_artifact_kind(art), "class-conditional-dit");
        size_t per_image = class_cond ? (size_t)eg_pipeline_batch(pipe) : 1;
        if (per_image > MAX_LABELS) per_image = MAX_LABELS;
        int32_t labels[MAX_LABELS];
        for (size_t i = 0; i < per_image; i++) labels[i] = (int32_t)i;
        double expect_s = 0;
        int steps_used = steps ? steps : eg_pipeline_default_steps(pipe);
        for (size_t c = 0; c < nc; c++) {
            const char *name = eg_artifact_component_name(art, c);
            int denoiser = !strcmp(name, "unet") || !strcmp(name, "transformer");
            expect_s += call_s[c] * (denoiser ? steps_used : 1);
        }
        printf("{\"event\": \"expect\", \"expect_s\": %.3f}\n", expect_s * (double)per_image);
        fflush(stdout);
        size_t image_bytes = per_image * (size_t)h * w * ch;
        uint8_t *px = malloc(image_bytes + 1);
        double t = now();
        if (!px) st = eg_fail_msg(err, sizeof err, EG_ERR_MEMORY, "out of memory");
        else if (class_cond) {
            eg_class_options co;
            eg_class_options_init(&co);
            co.labels = labels;
            co.n_labels = per_image;
            co.steps = steps;
            co.seed = 0;
            st = eg_pipeline_class_conditional(pipe, &co, px, image_bytes, err, sizeof err);
        } else {
            eg_text_options to;
            eg_text_options_init(&to);
            to.prompt = "a photo of an astronaut riding a horse";
            to.steps = steps;
            to.seed = 0;
            st = eg_pipeline_text_to_image(pipe, &to, px, image_bytes, err, sizeof err);
        }
        if (!st) {
            printf("{\"event\": \"image\", \"seconds\": %.4f}\n", (now() - t) / (double)per_image);
            fflush(stdout);
        }
        free(px);
        eg_pipeline_close(pipe);
    }
    if (st) emit_error("end-to-end: ", err);
    printf("{\"event\": \"memory\", \"rss_bytes\": %ld, \"note\": \"peak resident set size of the process that loaded "
           "and ran the artifact\"}\n", peak_rss_bytes());
    fflush(stdout);
done:
    for (size_t c = 0; c < 64; c++) {
        eg_session_close(sessions[c]);
        for (int i = 0; i < 16; i++) free(feeds[c][i]);
    }
    eg_artifact_close(art);
    return rc;
}

static int generate(args_t *a, const eg_options *opt) {
    char err[1024];
    eg_artifact *art = NULL;
    eg_pipeline *pipe = NULL;
    uint8_t *px = NULL, *tiled = NULL;
    int rc = 1;
    double t0 = now();
    eg_status st = eg_artifact_open(a->artifact, opt, &art, err, sizeof err);
    if (!st) st = eg_pipeline_open(art, &pipe, err, sizeof err);
    if (st) goto out;
    double t_load = now() - t0;
    int h, w, c;
    eg_pipeline_image_shape(pipe, &h, &w, &c);
    int quiet = a->quiet;
    size_t n = 1, per = (size_t)h * w * c;
    t0 = now();
    if (!strcmp(eg_artifact_kind(art), "class-conditional-dit")) {
        if (!a->n_labels) { st = EG_ERR_ARGUMENT; snprintf(err, sizeof err, "this artifact generates a class: pass --label ID"); goto out; }
        n = a->n_labels;
        int32_t *ids = a->labels;
        for (size_t i = 0; i < n && !st; i++)
            if (a->label_names[i]) st = eg_pipeline_label_id(pipe, a->label_names[i], &ids[i], err, sizeof err);
        if (st) goto out;
        px = malloc(n * per);
        if (!px) { st = EG_ERR_MEMORY; snprintf(err, sizeof err, "out of memory"); goto out; }
        eg_class_options o;
        eg_class_options_init(&o);
        o.labels = a->labels; o.n_labels = n; o.steps = a->steps; o.seed = a->seed; o.guidance = a->guidance;
        o.scheduler = a->scheduler; o.callback = on_step; o.user = &quiet;
        st = eg_pipeline_class_conditional(pipe, &o, px, n * per, err, sizeof err);
    } else {
        if (!a->prompt) { st = EG_ERR_ARGUMENT; snprintf(err, sizeof err, "pass --prompt TEXT"); goto out; }
        px = malloc(per);
        if (!px) { st = EG_ERR_MEMORY; snprintf(err, sizeof err, "out of memory"); goto out; }
        eg_text_options o;
        eg_text_options_init(&o);
        o.prompt = a->prompt; o.negative_prompt = a->negative; o.steps = a->steps; o.seed = a->seed;
        o.guidance = a->guidance; o.scheduler = a->scheduler; o.callback = on_step; o.user = &quiet;
        st = eg_pipeline_text_to_image(pipe, &o, px, per, err, sizeof err);
    }
    if (st) goto out;
    double t_gen = now() - t0;
    tiled = malloc(n * per);
    if (!tiled) { st = EG_ERR_MEMORY; snprintf(err, sizeof err, "out of memory"); goto out; }
    for (size_t i = 0; i < n; i++)
        for (int y = 0; y < h; y++)
            memcpy(tiled + ((size_t)y * n * w + i * w) * c, px + i * per + (size_t)y * w * c, (size_t)w * c);
    st = eg_png_write(a->out, tiled, (int)(w * n), h, c, err, sizeof err);
    if (st) goto out;
    if (!a->quiet) fprintf(stderr, "wrote %s (load %.3f s, generate %.3f s)\n", a->out, t_load, t_gen);
    rc = 0;
out:
    if (rc) fprintf(stderr, "edgegen-run: %s: %s\n", eg_status_name(st), err);
    free(px);
    free(tiled);
    eg_pipeline_close(pipe);
    eg_artifact_close(art);
    return rc;
}

int main(int argc, char **argv) {
    args_t a;
    int r = parse_args(argc, argv, &a);
    if (r) return r;
    eg_options opt;
    eg_options_init(&opt);
    opt.device = a.device;
    opt.cache_dir = a.cache_dir;
    opt.use_program_cache = !a.no_cache;
    opt.verify_checksums = !a.no_verify;
    opt.trusted_keys = a.n_keys ? a.keys : NULL;
    opt.n_trusted_keys = a.n_keys;
    if (a.check) {
        char err[1024];
        eg_artifact *art = NULL;
        eg_status st = eg_artifact_open(a.artifact, &opt, &art, err, sizeof err);
        if (st) { fprintf(stderr, "edgegen-run: %s: %s\n", eg_status_name(st), err); return 1; }
        printf("ok: %s (%s, %zu components)\n", a.artifact, eg_artifact_kind(art), eg_artifact_component_count(art));
        eg_artifact_close(art);
        return 0;
    }
    if (a.bench) return bench(&a, &opt);
    r = generate(&a, &opt);
    for (size_t i = 0; i < a.n_labels; i++) free(a.label_names[i]);
    return r;
}
