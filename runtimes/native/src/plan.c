/* A component's launch plan, kernel sources and weights, checked as edgegen/core/launch_plan.py
   check_plan and runtimes/launch_plan.py PlanComponent check them (same limits). */
#include <stdlib.h>
#include <string.h>

#include "artifact.h"
#include "safetensors.h"

#define MAX_BYTES ((uint64_t)1 << 36)      /* 68719476736, the schema's bound */
#define MAX_DIM 2147483647.0
#define MAX_INVOCATIONS ((uint64_t)1 << 32)
#define MAX_PLAN_BYTES ((size_t)64 << 20)
#define MAX_KERNELS_BYTES ((size_t)256 << 20)
#define MAX_WEIGHTS_BYTES ((size_t)1 << 40)
#define PROGRAM_MARK "// edgegen-program: "

typedef struct {
    const char *where;
    char *err;
    size_t errlen;
} ctx;

#define BAD(...) eg_fail(c->err, c->errlen, EG_ERR_ARTIFACT, __VA_ARGS__)

static int is_int(const eg_json *v, double lo, double hi) {
    return v && v->type == EG_JSON_NUMBER && v->number >= lo && v->number <= hi && v->number == (double)(int64_t)v->number;
}

static int is_identifier(const eg_json *v) {
    if (!v || v->type != EG_JSON_STRING || v->string_len < 1 || v->string_len > 255) return 0;
    const char *s = v->string;
    if (!((s[0] >= 'A' && s[0] <= 'Z') || (s[0] >= 'a' && s[0] <= 'z') || s[0] == '_')) return 0;
    for (size_t i = 0; i < v->string_len; i++) {
        char ch = s[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_')) return 0;
    }
    return 1;
}

static int is_name(const eg_json *v) {
    return v && v->type == EG_JSON_STRING && v->string_len >= 1 && v->string_len <= 1000 &&
           strlen(v->string) == v->string_len;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(((const struct eg_name_index *)a)->name, ((const struct eg_name_index *)b)->name);
}

int eg_plan_find(const eg_plan *p, const char *name) {
    struct eg_name_index key = {name, -1};
    const struct eg_name_index *hit = bsearch(&key, p->sorted, p->n_tensors, sizeof key, cmp_name);
    return hit ? hit->index : -1;
}

/* prod(shape) * size, or UINT64_MAX when over MAX_BYTES */
static uint64_t shape_bytes(const int64_t *shape, int ndim, size_t size) {
    uint64_t n = size;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] != 0 && n > MAX_BYTES / (uint64_t)shape[i]) return UINT64_MAX;
        n *= (uint64_t)shape[i];
    }
    return n;
}

static eg_status read_dims(ctx *c, const eg_json *arr, int64_t *shape, int *ndim, const char *what, const char *name) {
    if (!arr || arr->type != EG_JSON_ARRAY || arr->count > EG_MAX_DIMS)
        return BAD("%s: tensors/%s: %s is not a list of at most %d dimensions; rebuild the artifact.", c->where, name,
                   what, EG_MAX_DIMS);
    for (size_t i = 0; i < arr->count; i++) {
        if (!is_int(&arr->items[i], 1, MAX_DIM))
            return BAD("%s: tensors/%s: %s[%zu] is not an integer in 1..2147483647; rebuild the artifact.", c->where,
                       name, what, i);
        shape[i] = (int64_t)arr->items[i].number;
    }
    *ndim = (int)arr->count;
    return EG_OK;
}

static eg_status read_tensors(ctx *c, eg_plan *p, const eg_json *tensors) {
    if (!tensors || tensors->type != EG_JSON_OBJECT || tensors->count < 1)
        return BAD("%s: tensors is not a non-empty object; rebuild the artifact.", c->where);
    p->n_tensors = tensors->count;
    p->tensors = calloc(p->n_tensors, sizeof *p->tensors);
    p->sorted = calloc(p->n_tensors, sizeof *p->sorted);
    if (!p->tensors || !p->sorted) return eg_fail(c->err, c->errlen, EG_ERR_MEMORY, "out of memory");
    for (size_t i = 0; i < tensors->count; i++) {
        const char *name = tensors->keys[i];
        const eg_json *t = &tensors->items[i];
        eg_tensor *out = &p->tensors[i];
        size_t nlen = strlen(name);
        if (nlen < 1 || nlen > 1000) return BAD("%s: a tensor name is empty or longer than 1000; rebuild the artifact.", c->where);
        if (t->type != EG_JSON_OBJECT) return BAD("%s: tensors/%s is not an object; rebuild the artifact.", c->where, name);
        out->name = name;
        out->of = -1;
        const eg_json *dtype = eg_json_get(t, "dtype"), *storage = eg_json_get(t, "storage");
        if (!dtype || dtype->type != EG_JSON_STRING || eg_dtype_from_name(dtype->string, &out->dtype))
            return BAD("%s: tensors/%s: dtype is absent or unknown; rebuild the artifact.", c->where, name);
        eg_status st = read_dims(c, eg_json_get(t, "shape"), out->shape, &out->ndim, "shape", name);
        if (st) return st;
        const eg_json *bytes = eg_json_get(t, "bytes");
        if (!is_int(bytes, 0, (double)MAX_BYTES))
            return BAD("%s: tensors/%s: bytes is not an integer in 0..%llu; rebuild the artifact.", c->where, name,
                       (unsigned long long)MAX_BYTES);
        out->bytes = (uint64_t)bytes->number;
        uint64_t need = shape_bytes(out->shape, out->ndim, eg_dtype_size(out->dtype));
        if (need != out->bytes)
            return BAD("%s: tensors/%s: bytes %llu, its shape of %s needs %s%llu; rebuild the artifact.", c->where,
                       name, (unsigned long long)out->bytes, eg_dtype_name(out->dtype),
                       need == UINT64_MAX ? "more than " : "", (unsigned long long)(need == UINT64_MAX ? MAX_BYTES : need));
        if (!storage || storage->type != EG_JSON_STRING)
            return BAD("%s: tensors/%s: storage is absent; rebuild the artifact.", c->where, name);
        if (strcmp(storage->string, "arena") == 0) {
            const eg_json *off = eg_json_get(t, "offset");
            out->storage = EG_ARENA;
            if (!is_int(off, 0, (double)MAX_BYTES))
                return BAD("%s: tensors/%s: offset is absent or not an integer in 0..%llu; rebuild the artifact.",
                           c->where, name, (unsigned long long)MAX_BYTES);
            out->offset = (uint64_t)off->number;
            if (out->offset + out->bytes > p->arena_bytes)
                return BAD("%s: tensors/%s lies outside the arena; rebuild the artifact.", c->where, name);
        } else if (strcmp(storage->string, "weight") == 0) {
            out->storage = EG_WEIGHT;
        } else if (strcmp(storage->string, "view") == 0) {
            out->storage = EG_VIEW;
            if (!is_name(eg_json_get(t, "of")))
                return BAD("%s: tensors/%s: a view without a valid `of`; rebuild the artifact.", c->where, name);
        } else {
            return BAD("%s: tensors/%s: unknown storage %.40s; rebuild the artifact.", c->where, name, storage->string);
        }
        p->sorted[i].name = name;
        p->sorted[i].index = (int)i;
    }
    qsort(p->sorted, p->n_tensors, sizeof *p->sorted, cmp_name);
    for (size_t i = 1; i < p->n_tensors; i++)
        if (strcmp(p->sorted[i - 1].name, p->sorted[i].name) == 0)
            return BAD("%s: tensor %s is declared twice; rebuild the artifact.", c->where, p->sorted[i].name);
    for (size_t i = 0; i < p->n_tensors; i++) p->tensors[i].base = p->tensors[i].storage == EG_VIEW ? -1 : (int)i;
    for (size_t i = 0; i < p->n_tensors; i++) {
        eg_tensor *t = &p->tensors[i];
        if (t->storage != EG_VIEW) continue;
        int cur = (int)i;
        size_t hops = 0;
        while (p->tensors[cur].storage == EG_VIEW && p->tensors[cur].base < 0) {
            int of = eg_plan_find(p, eg_json_get(&tensors->items[cur], "of")->string);
            if (of < 0)
                return BAD("%s: tensors/%s is a view of an unknown tensor; rebuild the artifact.", c->where, t->name);
            if (cur == (int)i) t->of = of;
            if (++hops > p->n_tensors)
                return BAD("%s: tensors/%s: its views form a cycle; rebuild the artifact.", c->where, t->name);
            cur = of;
        }
        int base = p->tensors[cur].base;
        if (p->tensors[base].bytes < t->bytes)
            return BAD("%s: tensors/%s is a view larger than the tensor it views; rebuild the artifact.", c->where,
                       t->name);
        t->base = base;
    }
    return EG_OK;
}

static eg_status read_programs(ctx *c, eg_plan *p, const eg_json *programs) {
    if (!programs || programs->type != EG_JSON_OBJECT || programs->count < 1)
        return BAD("%s: programs is not a non-empty object; rebuild the artifact.", c->where);
    p->n_programs = programs->count;
    p->programs = calloc(p->n_programs, sizeof *p->programs);
    if (!p->programs) return eg_fail(c->err, c->errlen, EG_ERR_MEMORY, "out of memory");
    for (size_t i = 0; i < programs->count; i++) {
        eg_json key = {EG_JSON_STRING, 0, 0, programs->keys[i], strlen(programs->keys[i]), 0, NULL, NULL};
        const eg_json *kernels = eg_json_get(&programs->items[i], "kernels");
        if (!is_identifier(&key))
            return BAD("%s: program name %.60s is not an identifier; rebuild the artifact.", c->where, programs->keys[i]);
        if (!kernels || kernels->type != EG_JSON_ARRAY || kernels->count < 1)
            return BAD("%s: programs/%s: kernels is not a non-empty list; rebuild the artifact.", c->where, key.string);
        for (size_t k = 0; k < kernels->count; k++)
            if (!is_identifier(&kernels->items[k]))
                return BAD("%s: programs/%s: kernel %zu is not an identifier; rebuild the artifact.", c->where,
                           key.string, k);
        p->programs[i].name = programs->keys[i];
    }
    return EG_OK;
}

static int find_program(const eg_json *programs, const char *name) {
    for (size_t i = 0; i < programs->count; i++)
        if (strcmp(programs->keys[i], name) == 0) return (int)i;
    return -1;
}

static const char *const SCALAR_TYPES[] = {"float32", "float16", "int32", "int64", "uint8", "int8", "uint32"};

static eg_status read_launches(ctx *c, eg_plan *p, const eg_json *launches, const eg_json *programs) {
    if (!launches || launches->type != EG_JSON_ARRAY || launches->count < 1 || launches->count > 1000000)
        return BAD("%s: launches is not a list of 1..1000000 launches; rebuild the artifact.", c->where);
    p->n_launches = launches->count;
    p->launches = calloc(p->n_launches, sizeof *p->launches);
    if (!p->launches) return eg_fail(c->err, c->errlen, EG_ERR_MEMORY, "out of memory");
    for (size_t i = 0; i < launches->count; i++) {
        const eg_json *l = &launches->items[i];
        eg_launch *out = &p->launches[i];
        const eg_json *prog = eg_json_get(l, "program"), *kern = eg_json_get(l, "kernel"), *args = eg_json_get(l, "args"),
                      *scalars = eg_json_get(l, "scalars"), *grid = eg_json_get(l, "grid"),
                      *block = eg_json_get(l, "block"), *call = eg_json_get(l, "call");
        if (l->type != EG_JSON_OBJECT || !is_identifier(prog) || !is_identifier(kern))
            return BAD("%s: launch %zu: program or kernel is absent or not an identifier; rebuild the artifact.",
                       c->where, i);
        if (call && !is_int(call, 0, 9007199254740992.0))
            return BAD("%s: launch %zu: call is not a non-negative integer; rebuild the artifact.", c->where, i);
        if (!args || args->type != EG_JSON_ARRAY || args->count < 1 || args->count > 64)
            return BAD("%s: launch %zu: args is not a list of 1..64 names; rebuild the artifact.", c->where, i);
        if (!scalars || scalars->type != EG_JSON_ARRAY || scalars->count > 64)
            return BAD("%s: launch %zu: scalars is not a list of at most 64; rebuild the artifact.", c->where, i);
        out->kernel = kern->string;
        out->args = calloc(args->count, sizeof *out->args);
        out->scalar_dtypes = calloc(scalars->count + 1, sizeof *out->scalar_dtypes);
        out->scalar_values = calloc(scalars->count + 1, sizeof *out->scalar_values);
        if (!out->args || !out->scalar_dtypes || !out->scalar_values)
            return eg_fail(c->err, c->errlen, EG_ERR_MEMORY, "out of memory");
        out->n_args = args->count;
        for (size_t a = 0; a < args->count; a++) {
            if (!is_name(&args->items[a]))
                return BAD("%s: launch %zu: argument %zu is not a tensor name; rebuild the artifact.", c->where, i, a);
            out->args[a] = eg_plan_find(p, args->items[a].string);
            if (out->args[a] < 0)
                return BAD("%s: launch %zu (%s) names undeclared tensor %.100s; rebuild the artifact.", c->where, i,
                           kern->string, args->items[a].string);
        }
        out->program = find_program(programs, prog->string);
        if (out->program < 0)
            return BAD("%s: launch %zu names unknown program %s; rebuild the artifact.", c->where, i, prog->string);
        const eg_json *kernels = eg_json_get(&programs->items[out->program], "kernels");
        int found = 0;
        for (size_t k = 0; k < kernels->count && !found; k++) found = strcmp(kernels->items[k].string, kern->string) == 0;
        if (!found)
            return BAD("%s: launch %zu: kernel %s is not in program %s; rebuild the artifact.", c->where, i,
                       kern->string, prog->string);
        out->n_scalars = scalars->count;
        for (size_t s = 0; s < scalars->count; s++) {
            const eg_json *dt = eg_json_get(&scalars->items[s], "dtype"), *v = eg_json_get(&scalars->items[s], "value");
            if (!dt || dt->type != EG_JSON_STRING || eg_dtype_from_name(dt->string, &out->scalar_dtypes[s]) ||
                !v || v->type != EG_JSON_NUMBER)
                return BAD("%s: launch %zu: scalar %zu lacks a known dtype or a numeric value; rebuild the artifact.",
                           c->where, i, s);
            static const double LO[] = {0, 0, -2147483648.0, -9223372036854775808.0, 0, -128, 0};
            static const double HI[] = {0, 0, 2147483647.0, 9223372036854775807.0, 255, 127, 4294967295.0};
            eg_dtype d = out->scalar_dtypes[s];
            if (d != EG_FLOAT32 && d != EG_FLOAT16 &&
                !(v->number >= LO[d] && v->number <= HI[d] && !(d == EG_INT64 && v->number >= 9223372036854775807.0) &&
                  v->number == (double)(int64_t)v->number))
                return BAD("%s: launch %zu: scalar %g is not a %s; rebuild the artifact.", c->where, i, v->number,
                           SCALAR_TYPES[d]);
            out->scalar_values[s] = v->number;
        }
        long double work = 1;
        for (int d = 0; d < 3; d++) {
            if (!grid || grid->type != EG_JSON_ARRAY || grid->count != 3 || !block || block->type != EG_JSON_ARRAY ||
                block->count != 3 || !is_int(&grid->items[d], 1, MAX_DIM) || !is_int(&block->items[d], 1, MAX_DIM))
                return BAD("%s: launch %zu: grid and block must be 3 integers in 1..2147483647; rebuild the artifact.",
                           c->where, i);
            out->grid[d] = (uint64_t)grid->items[d].number;
            out->block[d] = (uint64_t)block->items[d].number;
            work *= (long double)out->grid[d] * (long double)out->block[d];
        }
        if (work > (long double)MAX_INVOCATIONS)
            return BAD("%s: launch %zu: grid x block is %.0Lf work items, over %llu; rebuild the artifact.", c->where, i,
                       work, (unsigned long long)MAX_INVOCATIONS);
    }
    return EG_OK;
}

static int valid_utf8(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned char b = s[i];
        size_t len;
        uint32_t cp;
        if (b < 0x80) { i++; continue; }
        else if ((b & 0xE0) == 0xC0) { len = 2; cp = b & 0x1F; }
        else if ((b & 0xF0) == 0xE0) { len = 3; cp = b & 0x0F; }
        else if ((b & 0xF8) == 0xF0) { len = 4; cp = b & 0x07; }
        else return 0;
        if (i + len > n) return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += len;
    }
    return 1;
}

/* Each `// edgegen-program: <name>` line starts a program's source, as split_programs does. */
static eg_status split_programs(ctx *c, const char *text, size_t len, eg_program *programs, size_t n_programs,
                                const char *path) {
    const char *end = text + len;
    if (!valid_utf8((const unsigned char *)text, len))
        return BAD("%s: kernel source is not UTF-8 text; rebuild the artifact.", path);
    size_t marks = strlen(PROGRAM_MARK);
    for (const char *line = text; line < end;) {
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        const char *next = nl ? nl + 1 : end;
        if ((size_t)(end - line) >= marks && memcmp(line, PROGRAM_MARK, marks) == 0) {
            const char *a = line + marks, *b = nl ? nl : end;
            while (a < b && (*a == ' ' || *a == '\t' || *a == '\r')) a++;
            while (b > a && (b[-1] == ' ' || b[-1] == '\t' || b[-1] == '\r')) b--;
            for (size_t i = 0; i < n_programs; i++) {
                eg_program *pr = &programs[i];
                if (strlen(pr->name) == (size_t)(b - a) && memcmp(pr->name, a, (size_t)(b - a)) == 0) {
                    pr->source = next; /* a later section of the same name wins, as in the dict */
                    const char *q = next;
                    while (q < end) {
                        const char *qn = memchr(q, '\n', (size_t)(end - q));
                        if ((size_t)(end - q) >= marks && memcmp(q, PROGRAM_MARK, marks) == 0) break;
                        q = qn ? qn + 1 : end;
                    }
                    pr->source_len = (size_t)(q - next);
                }
            }
        }
        line = next;
    }
    for (size_t i = 0; i < n_programs; i++)
        if (!programs[i].source)
            return BAD("%s: kernel source lacks program %s; rebuild the artifact.", path, programs[i].name);
    return EG_OK;
}

/* "arithmetic": "fp16": the plan's kernels compute in float16; its float32-arithmetic twins, when the
   component ships them, run on a device without cl_khr_fp16. */
static eg_status read_fallback(ctx *c, eg_plan *p, const eg_component *comp) {
    const eg_json *arith = eg_json_get(p->doc, "arithmetic");
    if (!arith) return EG_OK;
    if (arith->type != EG_JSON_STRING || (strcmp(arith->string, "fp16") && strcmp(arith->string, "fp32")))
        return BAD("%s: arithmetic is not \"fp16\" or \"fp32\"; rebuild the artifact.", c->where);
    p->fp16_arithmetic = strcmp(arith->string, "fp16") == 0;
    if (!p->fp16_arithmetic || !comp->fallback_kernels_path) return EG_OK;
    p->fallback_programs = calloc(p->n_programs, sizeof *p->fallback_programs);
    if (!p->fallback_programs) return eg_fail(c->err, c->errlen, EG_ERR_MEMORY, "out of memory");
    for (size_t i = 0; i < p->n_programs; i++) p->fallback_programs[i].name = p->programs[i].name;
    eg_status st = eg_file_read(comp->fallback_kernels_path, MAX_KERNELS_BYTES, &p->fallback_text, &p->fallback_len,
                                c->err, c->errlen);
    return st ? st : split_programs(c, p->fallback_text, p->fallback_len, p->fallback_programs, p->n_programs,
                                    comp->fallback_kernels_path);
}

static int same_kind(eg_dtype a, eg_dtype b) {
    int fa = a == EG_FLOAT32 || a == EG_FLOAT16, fb = b == EG_FLOAT32 || b == EG_FLOAT16;
    return a == b || (fa && fb);
}

static eg_status match_specs(ctx *c, eg_plan *p, const eg_component *comp, const char *role, const eg_spec *specs,
                             size_t n, int *out) {
    const eg_json *map = eg_json_get(p->doc, role);
    if (!map || map->type != EG_JSON_OBJECT) return BAD("%s: %s is not an object; rebuild the artifact.", c->where, role);
    for (size_t i = 0; i < map->count; i++) {
        int t = is_name(&map->items[i]) ? eg_plan_find(p, map->items[i].string) : -1;
        if (t < 0 || p->tensors[p->tensors[t].base].storage != EG_ARENA)
            return BAD("%s: %s/%s names %.100s, not a tensor in the arena; rebuild the artifact.", c->where, role,
                       map->keys[i], map->items[i].type == EG_JSON_STRING ? map->items[i].string : "?");
    }
    for (size_t s = 0; s < n; s++) {
        const eg_json *name = eg_json_get(map, specs[s].name);
        int t = name ? eg_plan_find(p, name->string) : -1;
        int ok = t >= 0 && same_kind(p->tensors[t].dtype, specs[s].dtype) && p->tensors[t].ndim == specs[s].ndim;
        for (int d = 0; ok && d < specs[s].ndim; d++) ok = p->tensors[t].shape[d] == specs[s].shape[d];
        if (!ok)
            return BAD("%s: %s/%s does not match the manifest's spec of component %s; rebuild the artifact.", c->where,
                       role, specs[s].name, comp->name);
        out[s] = t;
    }
    return EG_OK;
}

eg_status eg_plan_load(eg_component *comp, eg_plan **out, char *err, size_t errlen) {
    *out = NULL;
    ctx cc = {comp->plan_path, err, errlen}, *c = &cc;
    if (!comp->plan_path || !comp->kernels_path || !comp->weights_path)
        return eg_fail(err, errlen, EG_ERR_ARTIFACT,
                       "component %s: the manifest names no plan, kernels or weights file; rebuild the artifact.",
                       comp->name);
    eg_plan *p = calloc(1, sizeof *p);
    if (!p) return eg_fail(err, errlen, EG_ERR_MEMORY, "out of memory");
    char *text = NULL;
    size_t len = 0;
    eg_status st = eg_file_read(comp->plan_path, MAX_PLAN_BYTES, &text, &len, err, errlen);
    if (st) goto fail;
    char jerr[160];
    if (eg_json_parse(text, len, &p->doc, jerr, sizeof jerr)) {
        st = BAD("%s: not valid JSON (%s); rebuild the artifact.", c->where, jerr);
        goto fail;
    }
    free(text);
    text = NULL;
    const eg_json *fmt = eg_json_get(p->doc, "format"), *ver = eg_json_get(p->doc, "version"),
                  *lang = eg_json_get(p->doc, "language"), *arena = eg_json_get(p->doc, "arena_bytes");
    if (!fmt || fmt->type != EG_JSON_STRING || strcmp(fmt->string, "edgegen-launch-plan") != 0) {
        st = BAD("%s: not an edgegen launch plan; rebuild the artifact.", c->where);
        goto fail;
    }
    if (!ver || ver->type != EG_JSON_NUMBER || ver->number != 1) {
        st = BAD("%s: launch plan version is not 1; rebuild the artifact with this edgegen or upgrade the runtime.",
                 c->where);
        goto fail;
    }
    if (lang && (lang->type != EG_JSON_STRING || strcmp(lang->string, "opencl-c") != 0)) {
        st = BAD("%s: plan language is not opencl-c; this runtime executes OpenCL plans only.", c->where);
        goto fail;
    }
    if (!is_int(arena, 0, (double)MAX_BYTES)) {
        st = BAD("%s: arena_bytes is not an integer in 0..%llu; rebuild the artifact.", c->where,
                 (unsigned long long)MAX_BYTES);
        goto fail;
    }
    p->arena_bytes = (uint64_t)arena->number;
    const eg_json *aw = eg_json_get(p->doc, "arena_bytes_without_reuse");
    if (aw && !is_int(aw, 0, 1e300)) { st = BAD("%s: arena_bytes_without_reuse is not an integer", c->where); goto fail; }
    const eg_json *programs = eg_json_get(p->doc, "programs");
    if ((st = read_tensors(c, p, eg_json_get(p->doc, "tensors"))) ||
        (st = read_programs(c, p, programs)) ||
        (st = read_launches(c, p, eg_json_get(p->doc, "launches"), programs)))
        goto fail;
    p->input_tensor = calloc(comp->n_inputs + 1, sizeof(int));
    p->output_tensor = calloc(comp->n_outputs + 1, sizeof(int));
    if (!p->input_tensor || !p->output_tensor) { st = eg_fail(err, errlen, EG_ERR_MEMORY, "out of memory"); goto fail; }
    if ((st = match_specs(c, p, comp, "inputs", comp->inputs, comp->n_inputs, p->input_tensor)) ||
        (st = match_specs(c, p, comp, "outputs", comp->outputs, comp->n_outputs, p->output_tensor)))
        goto fail;
    if ((st = eg_file_read(comp->kernels_path, MAX_KERNELS_BYTES, &p->kernels_text, &p->kernels_len, err, errlen)) ||
        (st = split_programs(c, p->kernels_text, p->kernels_len, p->programs, p->n_programs, comp->kernels_path)) ||
        (st = read_fallback(c, p, comp)))
        goto fail;
    if ((st = eg_file_map(comp->weights_path, MAX_WEIGHTS_BYTES, &p->weights, err, errlen)) ||
        (st = eg_safetensors_bind(comp->weights_path, &p->weights, p, err, errlen)))
        goto fail;
    *out = p;
    return EG_OK;
fail:
    free(text);
    eg_plan_free(p);
    return st;
}

void eg_plan_free(eg_plan *p) {
    if (!p) return;
    for (size_t i = 0; p->launches && i < p->n_launches; i++) {
        free(p->launches[i].args);
        free(p->launches[i].scalar_dtypes);
        free(p->launches[i].scalar_values);
    }
    free(p->launches);
    free(p->tensors);
    free(p->sorted);
    free(p->programs);
    free(p->input_tensor);
    free(p->output_tensor);
    free(p->kernels_text);
    free(p->fallback_programs);
    free(p->fallback_text);
    eg_file_unmap(&p->weights);
    eg_json_free(p->doc);
    free(p);
}
