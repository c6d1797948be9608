/* The pipeline API on a class-conditional artifact: step callbacks, cancelling from the callback
   and by the flag, option checks. usage: test_core_pipeline ARTIFACT */
#include <stdio.h>
#include <string.h>

#include "edgegen.h"

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: %s (%s)\n", __FILE__, __LINE__, #c, err); failures++; } } while (0)

typedef struct { int calls, stop_at, last_total; } counter;

static int on_step(void *user, int step, int total, float t) {
    counter *c = user;
    (void)t;
    c->calls++;
    c->last_total = total;
    return c->stop_at && step >= c->stop_at;
}

int main(int argc, char **argv) {
    char err[1024] = "";
    if (argc != 2) { fprintf(stderr, "usage: %s ARTIFACT\n", argv[0]); return 2; }
    eg_artifact *a = NULL;
    eg_pipeline *p = NULL;
    if (eg_artifact_open(argv[1], NULL, &a, err, sizeof err) || eg_pipeline_open(a, &p, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    int h, w, c;
    eg_pipeline_image_shape(p, &h, &w, &c);
    int batch = eg_pipeline_batch(p);
    uint8_t px[4096];
    int32_t labels[3] = {1, 2, 3};
    eg_class_options o;
    eg_class_options_init(&o);
    counter cnt = {0, 0, 0};
    o.labels = labels; o.n_labels = 3; o.steps = 2; o.callback = on_step; o.user = &cnt;
    CHECK((size_t)3 * h * w * c <= sizeof px);
    CHECK(eg_pipeline_class_conditional(p, &o, px, sizeof px, err, sizeof err) == EG_OK);
    int batches = (3 + batch - 1) / batch;
    CHECK(cnt.calls == 2 * batches && cnt.last_total == 2 * batches);
    cnt = (counter){0, 1, 0};
    CHECK(eg_pipeline_class_conditional(p, &o, px, sizeof px, err, sizeof err) == EG_ERR_CANCELLED && cnt.calls == 1);
    volatile int cancel = 1;
    cnt = (counter){0, 0, 0};
    o.cancel = &cancel;
    CHECK(eg_pipeline_class_conditional(p, &o, px, sizeof px, err, sizeof err) == EG_ERR_CANCELLED && cnt.calls == 0);
    o.cancel = NULL;
    CHECK(eg_pipeline_class_conditional(p, &o, px, 10, err, sizeof err) == EG_ERR_ARGUMENT);
    labels[1] = 10;
    CHECK(eg_pipeline_class_conditional(p, &o, px, sizeof px, err, sizeof err) == EG_ERR_INPUT && strstr(err, "out of range"));
    labels[1] = 2;
    o.steps = 100000;
    CHECK(eg_pipeline_class_conditional(p, &o, px, sizeof px, err, sizeof err) == EG_ERR_INPUT);
    o.steps = 1;
    o.scheduler = "plms";
    CHECK(eg_pipeline_class_conditional(p, &o, px, sizeof px, err, sizeof err) != EG_OK && err[0]);
    eg_text_options t;
    eg_text_options_init(&t);
    t.prompt = "x";
    CHECK(eg_pipeline_text_to_image(p, &t, px, sizeof px, err, sizeof err) == EG_ERR_ARGUMENT);
    int32_t id = -1;
    CHECK(eg_pipeline_label_id(p, " Seven ", &id, err, sizeof err) == EG_OK && id == 7);
    CHECK(eg_pipeline_label_id(p, "7", &id, err, sizeof err) == EG_OK && id == 7);
    eg_pipeline_close(p);
    eg_artifact_close(a);
    if (failures) { fprintf(stderr, "%d failures\n", failures); return 1; }
    printf("pipeline ok\n");
    return 0;
}
