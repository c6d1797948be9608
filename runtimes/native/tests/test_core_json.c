#include <stdio.h>
#include <string.h>

#include "json.h"

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #c); failures++; } } while (0)

int main(void) {
    char err[256];
    eg_json *v;
    const char *doc = "{\"a\": [1, 2.5e1, -3], \"s\": \"x\\u00e9\\ud83d\\ude00\\n\", \"t\": true, \"n\": null}";
    CHECK(eg_json_parse(doc, strlen(doc), &v, err, sizeof err) == 0);
    const eg_json *a = eg_json_get(v, "a");
    CHECK(a && a->type == EG_JSON_ARRAY && a->count == 3 && a->items[1].number == 25.0);
    const eg_json *s = eg_json_get(v, "s");
    CHECK(s && s->string_len == 8 && strcmp(s->string, "x\xc3\xa9\xf0\x9f\x98\x80\n") == 0);
    CHECK(eg_json_get(v, "t")->boolean == 1 && eg_json_get(v, "n")->type == EG_JSON_NULL);
    CHECK(eg_json_get(v, "zz") == NULL && eg_json_get(a, "a") == NULL);
    eg_json_free(v);
    const char *bad[] = {"", "{", "[1,", "{\"a\" 1}", "\"\\ud800\"", "01", "1e999", "[1] x", "\"abc", "tru", "{\"a\":}", "-"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err[0] = 0;
        CHECK(eg_json_parse(bad[i], strlen(bad[i]), &v, err, sizeof err) != 0 && err[0] && v == NULL);
    }
    char deep[200];
    memset(deep, '[', sizeof deep);
    CHECK(eg_json_parse(deep, sizeof deep, &v, err, sizeof err) != 0);
    /* every truncation of a valid document fails cleanly */
    for (size_t n = 0; n < strlen(doc); n++) {
        CHECK(eg_json_parse(doc, n, &v, err, sizeof err) != 0);
    }
    if (failures) { fprintf(stderr, "%d failures\n", failures); return 1; }
    printf("json ok\n");
    return 0;
}
