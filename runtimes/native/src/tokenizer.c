#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "util.h"
#include "unicode_tables.h"

#define MAX_FILE_BYTES ((size_t)64 << 20)
#define MAX_PROMPT_BYTES ((size_t)1 << 20)
#define EOW "</w>"

typedef struct {
    const char *key; /* into the tokenizer's key storage, not NUL-terminated */
    uint32_t len;
    int32_t id;
} vocab_slot;

typedef struct {
    uint64_t pair; /* (left id << 32) | right id; 0 with rank < 0 marks an empty slot */
    int32_t rank;
    int32_t new_id;
} merge_slot;

struct eg_tokenizer {
    int max_length;
    int32_t bos, eos, pad, unk;
    vocab_slot *vocab;
    size_t vocab_cap, vocab_count;
    char *keys;
    merge_slot *merges;
    size_t merges_cap;
    int32_t byte_id[256], byte_end_id[256]; /* the byte's character, alone and with "</w>"; -1 if absent */
};

/* ---- growable code point arrays ---- */

typedef struct {
    uint32_t *v;
    size_t n, cap;
} cpvec;

static int push(cpvec *a, uint32_t c)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        uint32_t *v = realloc(a->v, cap * sizeof *v);
        if (!v)
            return -1;
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = c;
    return 0;
}

/* ---- UTF-8 ---- */

/* Decodes one strict UTF-8 sequence at s[0..len); returns its length, 0 when invalid. */
static size_t utf8_decode(const unsigned char *s, size_t len, uint32_t *cp)
{
    unsigned char b = s[0];
    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    size_t n;
    uint32_t c, min;
    if (b >= 0xC2 && b <= 0xDF) {
        n = 2;
        c = b & 0x1F;
        min = 0x80;
    } else if (b >= 0xE0 && b <= 0xEF) {
        n = 3;
        c = b & 0x0F;
        min = 0x800;
    } else if (b >= 0xF0 && b <= 0xF4) {
        n = 4;
        c = b & 0x07;
        min = 0x10000;
    } else {
        return 0;
    }
    if (len < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c < 0xE000))
        return 0;
    *cp = c;
    return n;
}

static size_t utf8_encode(uint32_t c, char *out)
{
    if (c < 0x80) {
        out[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        out[0] = (char)(0xC0 | (c >> 6));
        out[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        out[0] = (char)(0xE0 | (c >> 12));
        out[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        out[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (c >> 18));
    out[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((c >> 6) & 0x3F));
    out[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

/* ---- Unicode data ---- */

static int in_ranges(const uint32_t (*r)[2], size_t n, uint32_t c)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < r[mid][0])
            hi = mid;
        else if (c > r[mid][1])
            lo = mid + 1;
        else
            return 1;
    }
    return 0;
}

#define COUNT(t) (sizeof t / sizeof t[0])

static int is_letter(uint32_t c)
{
    if (c < 0x80)
        return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
    return in_ranges(eg_uni_letter, COUNT(eg_uni_letter), c);
}

static int is_number(uint32_t c)
{
    if (c < 0x80)
        return c >= '0' && c <= '9';
    return in_ranges(eg_uni_number, COUNT(eg_uni_number), c);
}

static int is_space(uint32_t c)
{
    return in_ranges(eg_uni_space, COUNT(eg_uni_space), c);
}

/* Python's str.isspace (str.split, str.strip): White_Space plus U+001C..U+001F. */
static int is_py_space(uint32_t c)
{
    return (c >= 0x1C && c <= 0x1F) || is_space(c);
}

static int ccc_of(uint32_t c)
{
    if (c < 0x300)
        return 0;
    size_t lo = 0, hi = COUNT(eg_uni_ccc);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < eg_uni_ccc[mid][0])
            hi = mid;
        else if (c > eg_uni_ccc[mid][1])
            lo = mid + 1;
        else
            return (int)eg_uni_ccc[mid][2];
    }
    return 0;
}

/* Binary search of a table sorted by its first column (rows of `width` uint32). */
static const uint32_t *find_row(const uint32_t *table, size_t rows, size_t width, uint32_t key)
{
    size_t lo = 0, hi = rows;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        uint32_t k = table[mid * width];
        if (key < k)
            hi = mid;
        else if (key > k)
            lo = mid + 1;
        else
            return table + mid * width;
    }
    return NULL;
}

enum { S_BASE = 0xAC00, L_BASE = 0x1100, V_BASE = 0x1161, T_BASE = 0x11A7, L_COUNT = 19, V_COUNT = 21,
       T_COUNT = 28, N_COUNT = V_COUNT * T_COUNT, S_COUNT = L_COUNT * N_COUNT };

static int decompose(uint32_t c, cpvec *out, int depth)
{
    if (c >= S_BASE && c < S_BASE + S_COUNT) {
        uint32_t s = c - S_BASE, t = T_BASE + s % T_COUNT;
        if (push(out, L_BASE + s / N_COUNT) || push(out, V_BASE + (s % N_COUNT) / T_COUNT))
            return -1;
        return t != T_BASE ? push(out, t) : 0;
    }
    uint64_t row = 0;
    size_t lo = 0, hi = c >= 0xC0 && depth < 8 ? COUNT(eg_uni_decomp) : 0;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        uint32_t k = (uint32_t)(eg_uni_decomp[mid] >> 42);
        if (c < k)
            hi = mid;
        else if (c > k)
            lo = mid + 1;
        else {
            row = eg_uni_decomp[mid];
            break;
        }
    }
    if (!row)
        return push(out, c);
    uint32_t first = (uint32_t)(row >> 21) & 0x1FFFFF, second = (uint32_t)row & 0x1FFFFF;
    if (decompose(first, out, depth + 1))
        return -1;
    return second ? decompose(second, out, depth + 1) : 0;
}

static uint32_t compose(uint32_t a, uint32_t b)
{
    if (a >= L_BASE && a < L_BASE + L_COUNT && b >= V_BASE && b < V_BASE + V_COUNT)
        return S_BASE + ((a - L_BASE) * V_COUNT + (b - V_BASE)) * T_COUNT;
    if (a >= S_BASE && a < S_BASE + S_COUNT && (a - S_BASE) % T_COUNT == 0 && b > T_BASE && b < T_BASE + T_COUNT)
        return a + (b - T_BASE);
    uint64_t key = (uint64_t)a << 21 | b;
    size_t lo = 0, hi = COUNT(eg_uni_comp);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        uint64_t row = eg_uni_decomp[eg_uni_comp[mid]];
        uint64_t k = row & (((uint64_t)1 << 42) - 1);
        if (key < k)
            hi = mid;
        else if (key > k)
            lo = mid + 1;
        else
            return (uint32_t)(row >> 42);
    }
    return 0;
}

/* NFC of in[0..n) into out (UAX #15: canonical decomposition, ordering, composition). */
static int nfc(const uint32_t *in, size_t n, cpvec *out)
{
    out->n = 0;
    for (size_t i = 0; i < n; i++)
        if (decompose(in[i], out, 0))
            return -1;
    uint32_t *x = out->v;
    size_t len = out->n;
    for (size_t i = 1; i < len; i++) {
        int k = ccc_of(x[i]);
        for (size_t j = i; k && j > 0 && ccc_of(x[j - 1]) > k; j--) {
            uint32_t t = x[j];
            x[j] = x[j - 1];
            x[j - 1] = t;
        }
    }
    if (len == 0)
        return 0;
    size_t starter = 0, w = 1;
    int last = ccc_of(x[0]) ? 256 : 0;
    for (size_t i = 1; i < len; i++) {
        uint32_t c = x[i];
        int k = ccc_of(c);
        uint32_t composite = compose(x[starter], c);
        if (composite && (last < k || last == 0)) {
            x[starter] = composite;
            continue;
        }
        if (k == 0)
            starter = w;
        last = k;
        x[w++] = c;
    }
    out->n = w;
    return 0;
}

static int lower_into(uint32_t c, cpvec *out)
{
    if (c < 0x80)
        return push(out, c >= 'A' && c <= 'Z' ? c + 32 : c);
    size_t lo = 0, hi = COUNT(eg_uni_lower);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const uint32_t *r = eg_uni_lower[mid];
        uint32_t count = r[1] >> 8, stride = r[1] & 0xFF;
        if (c < r[0])
            hi = mid;
        else if (c > r[0] + (count - 1) * stride)
            lo = mid + 1;
        else if ((c - r[0]) % stride == 0)
            return push(out, c + r[2]);
        else
            break;
    }
    const uint32_t *row = find_row(&eg_uni_lower2[0][0], COUNT(eg_uni_lower2), 3, c);
    if (row)
        return push(out, row[1]) || push(out, row[2]);
    return push(out, c);
}

/* ---- vocabulary and merges ---- */

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static vocab_slot *vocab_slot_for(const eg_tokenizer *t, const char *s, size_t n)
{
    size_t mask = t->vocab_cap - 1;
    for (size_t i = (size_t)hash_bytes(s, n) & mask;; i = (i + 1) & mask) {
        vocab_slot *slot = &t->vocab[i];
        if (!slot->key || (slot->len == n && memcmp(slot->key, s, n) == 0))
            return slot;
    }
}

static int32_t vocab_get(const eg_tokenizer *t, const char *s, size_t n)
{
    const vocab_slot *slot = vocab_slot_for(t, s, n);
    return slot->key ? slot->id : -1;
}

static uint64_t hash_pair(uint64_t p)
{
    p ^= p >> 33;
    p *= 0xFF51AFD7ED558CCDull;
    p ^= p >> 33;
    return p;
}

static merge_slot *merge_slot_for(const eg_tokenizer *t, uint64_t pair)
{
    size_t mask = t->merges_cap - 1;
    for (size_t i = (size_t)hash_pair(pair) & mask;; i = (i + 1) & mask) {
        merge_slot *slot = &t->merges[i];
        if (slot->rank < 0 || slot->pair == pair)
            return slot;
    }
}

static char *read_file(const char *path, size_t *len, const char *what, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        (void)eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s: cannot open %s", path, what);
        return NULL;
    }
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            if (cap >= MAX_FILE_BYTES) {
                (void)eg_fail(err, errlen, EG_ERR_ARTIFACT,
                              "%s: %s is larger than %zu bytes", path, what, MAX_FILE_BYTES);
                goto fail;
            }
            cap = cap ? cap * 2 : 1 << 16;
            char *bigger = realloc(buf, cap + 1);
            if (!bigger) {
                (void)eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s: out of memory reading %s", path, what);
                goto fail;
            }
            buf = bigger;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) {
            if (ferror(f)) {
                (void)eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s: cannot read %s", path, what);
                goto fail;
            }
            break;
        }
    }
    fclose(f);
    buf[n] = 0;
    *len = n;
    return buf;
fail:
    fclose(f);
    free(buf);
    return NULL;
}

static size_t pow2_at_least(size_t n)
{
    size_t c = 16;
    while (c < n)
        c *= 2;
    return c;
}

static int load_vocab(eg_tokenizer *t, const char *path, char *err, size_t errlen)
{
    size_t len;
    char *text = read_file(path, &len, "the vocabulary", err, errlen);
    if (!text)
        return -1;
    eg_json *root = NULL;
    char jerr[256];
    int rc = -1;
    int32_t *seen = NULL;
    if (eg_json_parse(text, len, &root, jerr, sizeof jerr)) {
        (void)eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s: not valid JSON (%s); rebuild the artifact.", path, jerr);
        goto done;
    }
    if (root->type != EG_JSON_OBJECT || root->count == 0 || root->count > (size_t)INT32_MAX / 2) {
        (void)eg_fail(err, errlen, EG_ERR_ARTIFACT,
                      "%s: not a vocabulary (an object of token -> non-negative integer id); "
                "rebuild the artifact.", path);
        goto done;
    }
    size_t key_bytes = 0;
    for (size_t i = 0; i < root->count; i++) {
        const eg_json *v = &root->items[i];
        if (v->type != EG_JSON_NUMBER || !(v->number >= 0 && v->number <= INT32_MAX) ||
            v->number != (double)(int32_t)v->number) {
            (void)eg_fail(err, errlen, EG_ERR_ARTIFACT,
                          "%s: not a vocabulary (an object of token -> non-negative integer id); "
                    "rebuild the artifact.", path);
            goto done;
        }
        key_bytes += strlen(root->keys[i]);
    }
    t->vocab_cap = pow2_at_least(root->count * 2);
    t->vocab = calloc(t->vocab_cap, sizeof *t->vocab);
    t->keys = malloc(key_bytes + 1);
    size_t id_cap = pow2_at_least(root->count * 2);
    seen = malloc(id_cap * sizeof *seen);
    if (!t->vocab || !t->keys || !seen) {
        (void)eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s: out of memory", path);
        goto done;
    }
    memset(seen, 0xFF, id_cap * sizeof *seen);
    char *store = t->keys;
    for (size_t i = 0; i < root->count; i++) {
        size_t n = strlen(root->keys[i]);
        int32_t id = (int32_t)root->items[i].number;
        vocab_slot *slot = vocab_slot_for(t, root->keys[i], n);
        if (slot->key) {
            (void)eg_fail(err, errlen, EG_ERR_ARTIFACT,
                          "%s: not valid JSON (token '%.40s' twice); rebuild the artifact.", path,
                    root->keys[i]);
            goto done;
        }
        size_t h = (size_t)hash_pair((uint64_t)id) & (id_cap - 1);
        while (seen[h] >= 0 && seen[h] != id)
            h = (h + 1) & (id_cap - 1);
        if (seen[h] == id) {
            (void)eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s: two tokens share one id; rebuild the artifact.", path);
            goto done;
        }
        seen[h] = id;
        memcpy(store, root->keys[i], n);
        slot->key = store;
        slot->len = (uint32_t)n;
        slot->id = id;
        store += n;
        t->vocab_count++;
    }
    rc = 0;
done:
    free(seen);
    eg_json_free(root);
    free(text);
    return rc;
}

/* Python's str.splitlines boundaries; returns the boundary's byte length at s (0 if none). */
static size_t line_break(const unsigned char *s, size_t left)
{
    unsigned char b = s[0];
    if (b == '\r')
        return left > 1 && s[1] == '\n' ? 2 : 1;
    if (b == '\n' || b == 0x0B || b == 0x0C || b == 0x1C || b == 0x1D || b == 0x1E)
        return 1;
    if (b == 0xC2 && left > 1 && s[1] == 0x85)
        return 2;
    if (b == 0xE2 && left > 2 && s[1] == 0x80 && (s[2] == 0xA8 || s[2] == 0xA9))
        return 3;
    return 0;
}

static int add_merge(eg_tokenizer *t, const char *a, size_t na, const char *b, size_t nb, int32_t rank,
                     const char *path, char *err, size_t errlen)
{
    int32_t ia = vocab_get(t, a, na), ib = vocab_get(t, b, nb), inew = -1;
    if (ia >= 0 && ib >= 0) {
        char *joined = malloc(na + nb);
        if (!joined) {
            (void)eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s: out of memory", path);
            return -1;
        }
        memcpy(joined, a, na);
        memcpy(joined + na, b, nb);
        inew = vocab_get(t, joined, na + nb);
        free(joined);
    }
    if (inew < 0) {
        int la = (int)(na > 40 ? 40 : na), lb = (int)(nb > 40 ? 40 : nb);
        if (ia < 0 || ib < 0)
            (void)eg_fail(err, errlen, EG_ERR_ARTIFACT,
                          "%s: the tokenizer cannot be built from it (merge %d: token '%.*s' is not in "
                    "the vocabulary); rebuild the artifact.", path, rank + 1, ia < 0 ? la : lb, ia < 0 ? a : b);
        else
            (void)eg_fail(err, errlen, EG_ERR_ARTIFACT,
                          "%s: the tokenizer cannot be built from it (merge %d: '%.*s%.*s' is not in "
                    "the vocabulary); rebuild the artifact.", path, rank + 1, la, a, lb, b);
        return -1;
    }
    uint64_t pair = ((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib;
    merge_slot *slot = merge_slot_for(t, pair);
    slot->pair = pair;
    slot->rank = rank; /* a pair given twice keeps its last rank, as the tokenizers library's map does */
    slot->new_id = inew;
    return 0;
}

static int load_merges(eg_tokenizer *t, const char *path, char *err, size_t errlen)
{
    size_t len;
    char *text = read_file(path, &len, "the merges", err, errlen);
    if (!text)
        return -1;
    const unsigned char *s = (const unsigned char *)text;
    int rc = -1;
    size_t lines = 1;
    for (size_t i = 0; i < len;) {
        uint32_t c;
        size_t n = utf8_decode(s + i, len - i, &c);
        if (!n) {
            (void)eg_fail(err, errlen, EG_ERR_ARTIFACT,
                          "%s: cannot be read as UTF-8 text (invalid byte at %zu); rebuild the artifact.",
                    path, i);
            goto done;
        }
        lines += line_break(s + i, len - i) != 0;
        i += n;
    }
    t->merges_cap = pow2_at_least(lines * 2);
    t->merges = malloc(t->merges_cap * sizeof *t->merges);
    if (!t->merges) {
        (void)eg_fail(err, errlen, EG_ERR_ARTIFACT, "%s: out of memory", path);
        goto done;
    }
    for (size_t i = 0; i < t->merges_cap; i++)
        t->merges[i].rank = -1;
    int32_t rank = 0;
    size_t number = 0;
    for (size_t pos = 0; pos < len;) {
        size_t end = pos, brk = 0;
        while (end < len && !(brk = line_break(s + end, len - end)))
            end++;
        number++;
        const char *line = text + pos;
        size_t line_len = end - pos;
        pos = end + brk;
        if (line_len >= 8 && memcmp(line, "#version", 8) == 0)
            continue;
        const char *tok[3];
        size_t tok_len[3], count = 0;
        for (size_t i = 0; i < line_len;) {
            uint32_t c;
            size_t n = utf8_decode((const unsigned char *)line + i, line_len - i, &c);
            if (is_py_space(c)) {
                i += n;
                continue;
            }
            size_t start = i;
            while (i < line_len) {
                n = utf8_decode((const unsigned char *)line + i, line_len - i, &c);
                if (is_py_space(c))
                    break;
                i += n;
            }
            if (count < 3) {
                tok[count] = line + start;
                tok_len[count] = i - start;
            }
            count++;
        }
        if (count == 0)
            continue;
        if (count != 2) {
            (void)eg_fail(err, errlen, EG_ERR_ARTIFACT,
                          "%s: line %zu is not a pair of tokens; rebuild the artifact.", path, number);
            goto done;
        }
        if (add_merge(t, tok[0], tok_len[0], tok[1], tok_len[1], rank, path, err, errlen))
            goto done;
        rank++;
    }
    rc = 0;
done:
    free(text);
    return rc;
}

/* GPT-2/CLIP's reversible map from bytes to printable characters. */
static uint32_t byte_char(int b)
{
    if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF))
        return (uint32_t)b;
    int extra = 0;
    for (int i = 0; i < b; i++)
        if (!((i >= '!' && i <= '~') || (i >= 0xA1 && i <= 0xAC) || (i >= 0xAE && i <= 0xFF)))
            extra++;
    return 256u + (uint32_t)extra;
}

static int special_id(const eg_tokenizer *t, const char *token, const char *path, int32_t *id, char *err,
                      size_t errlen)
{
    *id = token ? vocab_get(t, token, strlen(token)) : -1;
    if (*id < 0) {
        (void)eg_fail(err, errlen, EG_ERR_ARTIFACT,
                      "%s: special token '%.60s' is not in the vocabulary; rebuild the artifact.", path,
                token ? token : "(null)");
        return -1;
    }
    return 0;
}

int eg_tokenizer_open(const char *vocab_json_path, const char *merges_txt_path, int max_length, const char *bos,
                      const char *eos, const char *pad, const char *unk, eg_tokenizer **out, char *err,
                      size_t errlen)
{
    if (!out || !vocab_json_path || !merges_txt_path) {
        (void)eg_fail(err, errlen, EG_ERR_ARTIFACT, "eg_tokenizer_open: NULL argument");
        return -1;
    }
    *out = NULL;
    if (max_length < 2 || max_length > 1 << 20) {
        (void)eg_fail(err, errlen, EG_ERR_ARTIFACT,
                      "tokenizer max_length must be in 2..%d, got %d", 1 << 20, max_length);
        return -1;
    }
    eg_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        (void)eg_fail(err, errlen, EG_ERR_ARTIFACT, "tokenizer: out of memory");
        return -1;
    }
    t->max_length = max_length;
    if (load_vocab(t, vocab_json_path, err, errlen) ||
        special_id(t, bos, vocab_json_path, &t->bos, err, errlen) ||
        special_id(t, eos, vocab_json_path, &t->eos, err, errlen) ||
        special_id(t, pad, vocab_json_path, &t->pad, err, errlen) ||
        special_id(t, unk, vocab_json_path, &t->unk, err, errlen) ||
        load_merges(t, merges_txt_path, err, errlen)) {
        eg_tokenizer_free(t);
        return -1;
    }
    for (int b = 0; b < 256; b++) {
        char s[8];
        size_t n = utf8_encode(byte_char(b), s);
        t->byte_id[b] = vocab_get(t, s, n);
        memcpy(s + n, EOW, 4);
        t->byte_end_id[b] = vocab_get(t, s, n + 4);
    }
    *out = t;
    return 0;
}

int eg_tokenizer_max_length(const eg_tokenizer *tok)
{
    return tok->max_length;
}

void eg_tokenizer_free(eg_tokenizer *tok)
{
    if (!tok)
        return;
    free(tok->vocab);
    free(tok->keys);
    free(tok->merges);
    free(tok);
}

/* ---- BPE on one pre-token (the tokenizers library's Word::merge_all) ---- */

typedef struct {
    int32_t id;
    int prev, next;
    int alive;
} symbol;

typedef struct {
    int32_t rank, new_id;
    int pos;
} candidate;

static int before(const candidate *a, const candidate *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(candidate *h, size_t *n, candidate c)
{
    size_t i = (*n)++;
    h[i] = c;
    while (i > 0 && before(&h[i], &h[(i - 1) / 2])) {
        candidate t = h[i];
        h[i] = h[(i - 1) / 2];
        h[(i - 1) / 2] = t;
        i = (i - 1) / 2;
    }
}

static candidate heap_pop(candidate *h, size_t *n)
{
    candidate top = h[0];
    h[0] = h[--*n];
    for (size_t i = 0;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < *n && before(&h[l], &h[m]))
            m = l;
        if (r < *n && before(&h[r], &h[m]))
            m = r;
        if (m == i)
            break;
        candidate t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
    return top;
}

static const merge_slot *merge_of(const eg_tokenizer *t, int32_t a, int32_t b)
{
    const merge_slot *slot = merge_slot_for(t, ((uint64_t)(uint32_t)a << 32) | (uint32_t)b);
    return slot->rank >= 0 ? slot : NULL;
}

typedef struct {
    symbol *sym;
    candidate *heap;
    size_t cap;
} bpe_scratch;

/* Appends the BPE ids of the word (UTF-8 bytes) to ids[*count..limit). */
static int bpe_word(const eg_tokenizer *t, const unsigned char *word, size_t n, bpe_scratch *sc, int32_t *ids,
                    size_t *count, size_t limit)
{
    if (n > sc->cap) {
        size_t cap = n * 2;
        symbol *sym = realloc(sc->sym, cap * sizeof *sym);
        if (sym)
            sc->sym = sym;
        candidate *heap = realloc(sc->heap, 2 * cap * sizeof *heap);
        if (heap)
            sc->heap = heap;
        if (!sym || !heap)
            return -1;
        sc->cap = cap;
    }
    symbol *sym = sc->sym;
    for (size_t i = 0; i < n; i++) {
        int32_t id = i + 1 == n ? t->byte_end_id[word[i]] : t->byte_id[word[i]];
        sym[i] = (symbol){id >= 0 ? id : t->unk, (int)i - 1, i + 1 < n ? (int)i + 1 : -1, 1};
    }
    /* Pairs pushed: n - 1 at first, at most two per merge after, and at most n - 1 merges. */
    size_t heap_n = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        const merge_slot *m = merge_of(t, sym[i].id, sym[i + 1].id);
        if (m)
            heap_push(sc->heap, &heap_n, (candidate){m->rank, m->new_id, (int)i});
    }
    while (heap_n) {
        candidate top = heap_pop(sc->heap, &heap_n);
        symbol *cur = &sym[top.pos];
        if (!cur->alive || cur->next < 0)
            continue;
        symbol *right = &sym[cur->next];
        const merge_slot *m = merge_of(t, cur->id, right->id);
        if (!m || m->new_id != top.new_id)
            continue;
        cur->id = top.new_id;
        right->alive = 0;
        cur->next = right->next;
        if (right->next >= 0)
            sym[right->next].prev = top.pos;
        if (cur->prev >= 0 && (m = merge_of(t, sym[cur->prev].id, cur->id)))
            heap_push(sc->heap, &heap_n, (candidate){m->rank, m->new_id, cur->prev});
        if (cur->next >= 0 && (m = merge_of(t, cur->id, sym[cur->next].id)))
            heap_push(sc->heap, &heap_n, (candidate){m->rank, m->new_id, top.pos});
    }
    for (size_t i = 0; i < n && *count < limit; i++)
        if (sym[i].alive)
            ids[(*count)++] = sym[i].id;
    return 0;
}

/* ---- encode ---- */

static size_t piece_end(const uint32_t *x, size_t n, size_t i)
{
    uint32_t c = x[i];
    if (c == '\'' && i + 1 < n) {
        uint32_t d = x[i + 1], e = i + 2 < n ? x[i + 2] : 0;
        if (d == 's' || d == 't')
            return i + 2;
        if ((d == 'r' && e == 'e') || (d == 'v' && e == 'e'))
            return i + 3;
        if (d == 'm')
            return i + 2;
        if (d == 'l' && e == 'l')
            return i + 3;
        if (d == 'd')
            return i + 2;
    }
    if (is_letter(c)) {
        while (i < n && is_letter(x[i]))
            i++;
        return i;
    }
    if (is_number(c))
        return i + 1;
    while (i < n && !is_space(x[i]) && !is_letter(x[i]) && !is_number(x[i]))
        i++;
    return i;
}

int eg_tokenizer_encode(const eg_tokenizer *tok, const char *utf8, size_t len, int32_t *ids, char *err,
                        size_t errlen)
{
    if (!tok || !ids || (!utf8 && len)) {
        (void)eg_fail(err, errlen, EG_ERR_ARTIFACT, "eg_tokenizer_encode: NULL argument");
        return -1;
    }
    if (len > MAX_PROMPT_BYTES) {
        (void)eg_fail(err, errlen, EG_ERR_ARTIFACT, "prompt is %zu bytes; the limit is %zu", len, MAX_PROMPT_BYTES);
        return -1;
    }
    cpvec in = {0}, a = {0}, b = {0};
    bpe_scratch sc = {0};
    char *bytes = NULL;
    int rc = -1;
    const unsigned char *s = (const unsigned char *)utf8;
    for (size_t i = 0; i < len;) {
        uint32_t c;
        size_t n = utf8_decode(s + i, len - i, &c);
        if (!n) {
            (void)eg_fail(err, errlen, EG_ERR_ARTIFACT, "prompt is not valid UTF-8 (byte %zu)", i);
            goto done;
        }
        if (push(&in, c))
            goto oom;
        i += n;
    }
    if (nfc(in.v, in.n, &a))
        goto oom;
    for (size_t i = 0; i < a.n; i++) {
        if (is_space(a.v[i])) {
            while (i + 1 < a.n && is_space(a.v[i + 1]))
                i++;
            if (push(&b, ' '))
                goto oom;
        } else if (lower_into(a.v[i], &b)) {
            goto oom;
        }
    }
    bytes = malloc(4 * b.n + 1);
    if (!bytes)
        goto oom;
    size_t limit = (size_t)tok->max_length - 2, count = 0;
    ids[0] = tok->bos;
    for (size_t i = 0; i < b.n && count < limit;) {
        if (is_space(b.v[i])) {
            i++;
            continue;
        }
        size_t end = piece_end(b.v, b.n, i), nbytes = 0;
        for (size_t j = i; j < end; j++)
            nbytes += utf8_encode(b.v[j], bytes + nbytes);
        if (bpe_word(tok, (const unsigned char *)bytes, nbytes, &sc, ids + 1, &count, limit))
            goto oom;
        i = end;
    }
    ids[1 + count] = tok->eos;
    for (size_t i = count + 2; i < (size_t)tok->max_length; i++)
        ids[i] = tok->pad;
    rc = 0;
    goto done;
oom:
    (void)eg_fail(err, errlen, EG_ERR_ARTIFACT, "tokenizer: out of memory");
done:
    free(in.v);
    free(a.v);
    free(b.v);
    free(bytes);
    free(sc.sym);
    free(sc.heap);
    return rc;
}
