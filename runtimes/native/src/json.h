/* Internal JSON parser: a DOM of eg_json values. UTF-8 strings, depth and size limits. */
#ifndef EG_JSON_H
#define EG_JSON_H

#include <stddef.h>

typedef enum { EG_JSON_NULL, EG_JSON_BOOL, EG_JSON_NUMBER, EG_JSON_STRING, EG_JSON_ARRAY, EG_JSON_OBJECT } eg_json_type;
typedef struct eg_json eg_json;
struct eg_json {
    eg_json_type type;
    int boolean;
    double number;
    char *string;
    size_t string_len;
    size_t count;
    eg_json *items;
    char **keys; /* object: keys[i] -> items[i] */
};

#define EG_JSON_MAX_DEPTH 64
#define EG_JSON_MAX_BYTES ((size_t)256 << 20)

int eg_json_parse(const char *text, size_t len, eg_json **out, char *err, size_t errlen); /* 0 ok */
void eg_json_free(eg_json *value);
const eg_json *eg_json_get(const eg_json *object, const char *key); /* NULL if absent or not an object */

#endif
