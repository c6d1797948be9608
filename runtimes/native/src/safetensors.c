#include "safetensors.h"

#include <stdlib.h>
#include <string.h>

#define MAX_HEADER ((uint64_t)100 << 20)

static const struct { const char *st; int dtype; size_t size; } DTYPES[] = {
    {"F32", EG_FLOAT32, 4}, {"F16", EG_FLOAT16, 2}, {"I32", EG_INT32, 4}, {"I64", EG_INT64, 8},
    {"U8", EG_UINT8, 1},    {"I8", EG_INT8, 1},     {"U32", EG_UINT32, 4}, {"BF16", -1, 2},
    {"F64", -1, 8},         {"I16", -1, 2},         {"U16", -1, 2},        {"BOOL", -1, 1}, {"U64", -1, 8}};

static int whole(const eg_json *v) {
    return v && v->type == EG_JSON_NUMBER && v->number >= 0 && v->number <= 9007199254740992.0 &&
           v->number == (double)(uint64_t)v->number;
}

eg_status eg_safetensors_bind(const char *path, const eg_file *file, eg_plan *plan, char *err, size_t errlen) {
    if (file->size < 8)
        return eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s: not a safetensors file (shorter than 8 bytes)", path);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | file->data[i];
    if (n > MAX_HEADER || n > file->size - 8)
        return eg_fail(err, errlen, EG_ERR_ARTIFACT,
                       "%s: safetensors header length %llu exceeds the file; it is truncated or corrupt", path,
                       (unsigned long long)n);
    eg_json *h = NULL;
    char jerr[160];
    if (eg_json_parse((const char *)file->data + 8, (size_t)n, &h, jerr, sizeof jerr))
        return eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s: safetensors header is not valid JSON (%s)", path, jerr);
    eg_status st = EG_OK;
    const uint8_t *data = file->data + 8 + n;
    uint64_t data_bytes = file->size - 8 - n;
    if (h->type != EG_JSON_OBJECT) {
        st = eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s: safetensors header is not a JSON object; it is corrupt", path);
        goto done;
    }
    for (size_t i = 0; i < h->count; i++) {
        const char *name = h->keys[i];
        if (strcmp(name, "__metadata__") == 0) continue;
        const eg_json *e = &h->items[i], *dt = eg_json_get(e, "dtype"), *shape = eg_json_get(e, "shape"),
                      *offs = eg_json_get(e, "data_offsets");
        if (!dt || dt->type != EG_JSON_STRING || !shape || shape->type != EG_JSON_ARRAY || !offs ||
            offs->type != EG_JSON_ARRAY || offs->count != 2 || !whole(&offs->items[0]) || !whole(&offs->items[1])) {
            st = eg_fail(err, errlen, EG_ERR_ARTIFACT,
                         "%s: tensor %.100s: its header entry lacks dtype, shape or data_offsets; the file is corrupt",
                         path, name);
            goto done;
        }
        size_t k = 0, nd = sizeof DTYPES / sizeof *DTYPES;
        while (k < nd && strcmp(DTYPES[k].st, dt->string) != 0) k++;
        if (k == nd) {
            st = eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s: tensor %.100s: unsupported dtype %.20s; the file is corrupt",
                         path, name, dt->string);
            goto done;
        }
        uint64_t need = DTYPES[k].size;
        int overflow = shape->count > EG_MAX_DIMS;
        for (size_t d = 0; d < shape->count && !overflow; d++) {
            if (!whole(&shape->items[d])) { overflow = 1; break; }
            uint64_t dim = (uint64_t)shape->items[d].number;
            if (dim && need > data_bytes / dim + 1) overflow = 1;
            else need *= dim;
        }
        uint64_t lo = (uint64_t)offs->items[0].number, hi = (uint64_t)offs->items[1].number;
        if (overflow || lo > hi || hi > data_bytes || hi - lo != need) {
            st = eg_fail(err, errlen, EG_ERR_ARTIFACT,
                         "%s: tensor %.100s: shape or data_offsets [%llu, %llu] do not fit the file's %llu data bytes; "
                         "the file is corrupt",
                         path, name, (unsigned long long)lo, (unsigned long long)hi, (unsigned long long)data_bytes);
            goto done;
        }
        int t = eg_plan_find(plan, name);
        if (t < 0 || plan->tensors[t].storage != EG_WEIGHT) continue;
        eg_tensor *pt = &plan->tensors[t];
        int same = DTYPES[k].dtype == (int)pt->dtype && (int)shape->count == pt->ndim;
        for (int d = 0; same && d < pt->ndim; d++) same = (int64_t)shape->items[d].number == pt->shape[d];
        if (!same) {
            st = eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s: weight %.100s is %s of another shape than the plan's %s; "
                         "rebuild the artifact.", path, name, dt->string, eg_dtype_name(pt->dtype));
            goto done;
        }
        pt->data = data + lo;
    }
    for (size_t t = 0; t < plan->n_tensors; t++)
        if (plan->tensors[t].storage == EG_WEIGHT && !plan->tensors[t].data) {
            st = eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s: weight %.100s is absent; rebuild the artifact.", path,
                         plan->tensors[t].name);
            goto done;
        }
done:
    eg_json_free(h);
    return st;
}
