#include "json.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *p, *end, *start;
    char *err;
    size_t errlen;
    int failed;
} parser;

static void fail(parser *ps, const char *fmt, ...) {
    if (ps->failed) return;
    ps->failed = 1;
    if (!ps->err || !ps->errlen) return;
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(ps->err, ps->errlen, "JSON at byte %zu: %s", (size_t)(ps->p - ps->start), msg);
}

static void skip_ws(parser *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')) ps->p++;
}

static void free_value(eg_json *v) {
    if (!v) return;
    free(v->string);
    if (v->items) for (size_t i = 0; i < v->count; i++) free_value(&v->items[i]);
    if (v->keys) for (size_t i = 0; i < v->count; i++) free(v->keys[i]);
    free(v->items);
    free(v->keys);
    memset(v, 0, sizeof *v);
}

static int hex4(parser *ps, unsigned *out) {
    if (ps->end - ps->p < 4) { fail(ps, "truncated \\u escape"); return -1; }
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = ps->p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else { fail(ps, "bad \\u escape"); return -1; }
    }
    ps->p += 4;
    *out = v;
    return 0;
}

static size_t put_utf8(char *dst, unsigned cp) {
    if (cp < 0x80) { dst[0] = (char)cp; return 1; }
    if (cp < 0x800) { dst[0] = (char)(0xC0 | (cp >> 6)); dst[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        dst[0] = (char)(0xE0 | (cp >> 12)); dst[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        dst[2] = (char)(0x80 | (cp & 0x3F)); return 3;
    }
    dst[0] = (char)(0xF0 | (cp >> 18)); dst[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    dst[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); dst[3] = (char)(0x80 | (cp & 0x3F)); return 4;
}

/* The string at ps->p (after the opening quote); decoded output is never longer than the input. */
static char *parse_string(parser *ps, size_t *len_out) {
    const char *s = ps->p;
    size_t cap = 0;
    while (s < ps->end && *s != '"') { if (*s == '\\') s++; s++; cap++; }
    if (s >= ps->end) { fail(ps, "unterminated string"); return NULL; }
    char *out = malloc((size_t)(s - ps->p) + 1);
    if (!out) { fail(ps, "out of memory"); return NULL; }
    size_t n = 0;
    while (ps->p < ps->end && *ps->p != '"') {
        unsigned char c = (unsigned char)*ps->p;
        if (c < 0x20) { fail(ps, "control character in string"); free(out); return NULL; }
        if (c != '\\') { out[n++] = (char)c; ps->p++; continue; }
        ps->p++;
        if (ps->p >= ps->end) { fail(ps, "truncated escape"); free(out); return NULL; }
        char e = *ps->p++;
        switch (e) {
        case '"': out[n++] = '"'; break;
        case '\\': out[n++] = '\\'; break;
        case '/': out[n++] = '/'; break;
        case 'b': out[n++] = '\b'; break;
        case 'f': out[n++] = '\f'; break;
        case 'n': out[n++] = '\n'; break;
        case 'r': out[n++] = '\r'; break;
        case 't': out[n++] = '\t'; break;
        case 'u': {
            unsigned cp;
            if (hex4(ps, &cp)) { free(out); return NULL; }
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                unsigned lo;
                if (ps->end - ps->p >= 6 && ps->p[0] == '\\' && ps->p[1] == 'u') {
                    ps->p += 2;
                    if (hex4(ps, &lo)) { free(out); return NULL; }
                    if (lo >= 0xDC00 && lo <= 0xDFFF) cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    else { fail(ps, "unpaired surrogate"); free(out); return NULL; }
                } else { fail(ps, "unpaired surrogate"); free(out); return NULL; }
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) { fail(ps, "unpaired surrogate"); free(out); return NULL; }
            n += put_utf8(out + n, cp); /* \uXXXX is 6 bytes of input, at most 4 of output */
            break;
        }
        default: fail(ps, "bad escape \\%c", e); free(out); return NULL;
        }
    }
    (void)cap;
    if (ps->p >= ps->end) { fail(ps, "unterminated string"); free(out); return NULL; }
    ps->p++;
    out[n] = 0;
    *len_out = n;
    return out;
}

static int parse_number(parser *ps, eg_json *v) {
    const char *s = ps->p;
    if (s < ps->end && *s == '-') s++;
    if (s >= ps->end || *s < '0' || *s > '9') { fail(ps, "bad number"); return -1; }
    if (*s == '0') s++;
    else while (s < ps->end && *s >= '0' && *s <= '9') s++;
    if (s < ps->end && *s == '.') {
        s++;
        if (s >= ps->end || *s < '0' || *s > '9') { fail(ps, "bad number"); return -1; }
        while (s < ps->end && *s >= '0' && *s <= '9') s++;
    }
    if (s < ps->end && (*s == 'e' || *s == 'E')) {
        s++;
        if (s < ps->end && (*s == '+' || *s == '-')) s++;
        if (s >= ps->end || *s < '0' || *s > '9') { fail(ps, "bad number"); return -1; }
        while (s < ps->end && *s >= '0' && *s <= '9') s++;
    }
    size_t n = (size_t)(s - ps->p);
    if (n > 64) { fail(ps, "number too long"); return -1; }
    char buf[80];
    memcpy(buf, ps->p, n);
    buf[n] = 0;
    v->type = EG_JSON_NUMBER;
    v->number = strtod(buf, NULL);
    if (!isfinite(v->number)) { fail(ps, "number out of range"); return -1; }
    ps->p = s;
    return 0;
}

static int parse_value(parser *ps, eg_json *v, int depth);

static int grow(parser *ps, eg_json *v, size_t *cap, int with_keys) {
    if (v->count < *cap) return 0;
    size_t nc = *cap ? *cap * 2 : 4;
    eg_json *items = realloc(v->items, nc * sizeof *items);
    if (!items) { fail(ps, "out of memory"); return -1; }
    v->items = items;
    if (with_keys) {
        char **keys = realloc(v->keys, nc * sizeof *keys);
        if (!keys) { fail(ps, "out of memory"); return -1; }
        v->keys = keys;
    }
    *cap = nc;
    return 0;
}

static int parse_container(parser *ps, eg_json *v, int depth, int object) {
    char close = object ? '}' : ']';
    size_t cap = 0;
    v->type = object ? EG_JSON_OBJECT : EG_JSON_ARRAY;
    ps->p++;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == close) { ps->p++; return 0; }
    for (;;) {
        if (grow(ps, v, &cap, object)) return -1;
        eg_json *item = &v->items[v->count];
        memset(item, 0, sizeof *item);
        if (object) {
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != '"') { fail(ps, "expected a key string"); return -1; }
            ps->p++;
            size_t klen;
            char *key = parse_string(ps, &klen);
            if (!key) return -1;
            v->keys[v->count] = key;
            v->count++; /* counted now so that free_value releases the key if the value fails */
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':') { fail(ps, "expected ':'"); return -1; }
            ps->p++;
            if (parse_value(ps, item, depth + 1)) return -1;
        } else {
            v->count++;
            if (parse_value(ps, item, depth + 1)) return -1;
        }
        skip_ws(ps);
        if (ps->p >= ps->end) { fail(ps, "truncated %s", object ? "object" : "array"); return -1; }
        if (*ps->p == ',') { ps->p++; continue; }
        if (*ps->p == close) { ps->p++; return 0; }
        fail(ps, "expected ',' or '%c'", close);
        return -1;
    }
}

static int literal(parser *ps, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0) { fail(ps, "unexpected character"); return -1; }
    ps->p += n;
    return 0;
}

static int parse_value(parser *ps, eg_json *v, int depth) {
    if (depth > EG_JSON_MAX_DEPTH) { fail(ps, "nested deeper than %d", EG_JSON_MAX_DEPTH); return -1; }
    skip_ws(ps);
    if (ps->p >= ps->end) { fail(ps, "unexpected end of input"); return -1; }
    switch (*ps->p) {
    case '{': return parse_container(ps, v, depth, 1);
    case '[': return parse_container(ps, v, depth, 0);
    case '"': {
        ps->p++;
        v->type = EG_JSON_STRING;
        v->string = parse_string(ps, &v->string_len);
        return v->string ? 0 : -1;
    }
    case 't': v->type = EG_JSON_BOOL; v->boolean = 1; return literal(ps, "true");
    case 'f': v->type = EG_JSON_BOOL; v->boolean = 0; return literal(ps, "false");
    case 'n': v->type = EG_JSON_NULL; return literal(ps, "null");
    default: return parse_number(ps, v);
    }
}

int eg_json_parse(const char *text, size_t len, eg_json **out, char *err, size_t errlen) {
    parser ps = {text, text + len, text, err, errlen, 0};
    *out = NULL;
    if (!text) { fail(&ps, "no text"); return -1; }
    if (len > EG_JSON_MAX_BYTES) { fail(&ps, "document larger than %zu bytes", (size_t)EG_JSON_MAX_BYTES); return -1; }
    eg_json *v = calloc(1, sizeof *v);
    if (!v) { fail(&ps, "out of memory"); return -1; }
    if (parse_value(&ps, v, 0) == 0) {
        skip_ws(&ps);
        if (ps.p != ps.end) fail(&ps, "trailing characters after the value");
    }
    if (ps.failed) { free_value(v); free(v); return -1; }
    *out = v;
    return 0;
}

void eg_json_free(eg_json *value) {
    if (!value) return;
    free_value(value);
    free(value);
}

const eg_json *eg_json_get(const eg_json *object, const char *key) {
    if (!object || object->type != EG_JSON_OBJECT || !key) return NULL;
    for (size_t i = 0; i < object->count; i++)
        if (strcmp(object->keys[i], key) == 0) return &object->items[i];
    return NULL;
}
