/* Every export of libnasnet called with null, zero and out-of-range arguments: each must
 * return its documented status (or null), never crash, leak or touch memory it was not given
 * (run under valgrind by scripts/test-bindings.sh).
 *
 *   misuse MODEL_DIR IMAGE */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "nasnet.h"

typedef struct {
    const char *call;
    int got;
    int want;
} Row;

#define ROW(call, want) {#call, (int)(call), (int)(want)}
#define IS_NULL(ptr_call) ((ptr_call) == NULL ? 1 : 0)

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL_DIR IMAGE\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1], *image = argv[2];
    NasnetModel *m = NULL;
    if (nasnet_model_open(dir, NULL, &m) != NASNET_STATUS_OK) {
        fprintf(stderr, "misuse: %s\n", nasnet_last_error());
        return 1;
    }
    NasnetOptions *o = nasnet_options_new(NASNET_ABI_VERSION);
    NasnetModel *closed = NULL;
    NasnetPrediction out[4];
    NasnetPrediction *owned = NULL;
    NasnetModelInfo info;
    NasnetImage img = {NULL, 4, 4, 12, NASNET_PIXEL_FORMAT_RGB8};
    NasnetImage empty = {(const uint8_t *)"", 0, 0, 0, NASNET_PIXEL_FORMAT_RGB8};
    unsigned char px[4 * 4 * 4] = {0};
    float f[8] = {0};
    size_t n = 0, count = 0;
    const uint32_t BIG = UINT32_MAX;

    Row rows[] = {
        /* strings and versions */
        ROW(IS_NULL(nasnet_status_str(BIG)), 0),
        ROW(IS_NULL(nasnet_options_new(0)), 1),
        ROW(IS_NULL(nasnet_options_new(BIG)), 1),
        /* options */
        ROW(nasnet_options_set_backend(NULL, NASNET_BACKEND_TRACT), NASNET_STATUS_NULL_ARGUMENT),
        ROW(nasnet_options_set_backend(o, BIG), NASNET_STATUS_INVALID_ARGUMENT),
        ROW(nasnet_options_set_backend(o, 42), NASNET_STATUS_INVALID_ARGUMENT),
        ROW(nasnet_options_set_device(NULL, -1), NASNET_STATUS_NULL_ARGUMENT),
        ROW(nasnet_options_set_device(o, INT32_MIN), NASNET_STATUS_INVALID_ARGUMENT),
        ROW(nasnet_options_set_threads(NULL, 1), NASNET_STATUS_NULL_ARGUMENT),
        ROW(nasnet_options_set_threads(o, BIG), NASNET_STATUS_OK),
        ROW(nasnet_options_set_threads(o, 0), NASNET_STATUS_OK),
        ROW(nasnet_options_set_ort_library(NULL, NULL), NASNET_STATUS_NULL_ARGUMENT),
        ROW(nasnet_options_set_ort_library(o, "\xff\xfe"), NASNET_STATUS_INVALID_ARGUMENT),
        ROW(nasnet_options_set_tract_cache(NULL, NASNET_TRACT_CACHE_OFF, NULL), NASNET_STATUS_NULL_ARGUMENT),
        ROW(nasnet_options_set_tract_cache(o, NASNET_TRACT_CACHE_DIR, NULL), NASNET_STATUS_NULL_ARGUMENT),
        ROW(nasnet_options_set_tract_cache(o, NASNET_TRACT_CACHE_DIR, "\xff\xfe"), NASNET_STATUS_INVALID_ARGUMENT),
        ROW(nasnet_options_set_tract_cache(o, NASNET_TRACT_CACHE_OFF, "/tmp"), NASNET_STATUS_INVALID_ARGUMENT),
        ROW(nasnet_options_set_tract_cache(o, 42, NULL), NASNET_STATUS_INVALID_ARGUMENT),
        ROW(nasnet_options_set_tract_cache(o, NASNET_TRACT_CACHE_BESIDE_MODEL, NULL), NASNET_STATUS_OK),
        /* opening and closing */
        ROW(nasnet_model_open(NULL, o, &closed), NASNET_STATUS_NULL_ARGUMENT),
        ROW(nasnet_model_open(dir, o, NULL), NASNET_STATUS_NULL_ARGUMENT),
        ROW(nasnet_model_open("", o, &closed), NASNET_STATUS_MODEL),
        ROW(nasnet_model_open("\xff", NULL, &closed), NASNET_STATUS_INVALID_ARGUMENT),
        ROW(nasnet_model_open_zoo(NULL, NULL, &closed), NASNET_STATUS_NULL_ARGUMENT),
        ROW(nasnet_model_open_zoo("", NULL, &closed), NASNET_STATUS_INVALID_ARGUMENT),
        ROW(nasnet_model_open_zoo("a/../../b", NULL, &closed), NASNET_STATUS_INVALID_ARGUMENT),
        ROW(nasnet_model_open_zoo("no-such-model@9.9.9", NULL, &closed), NASNET_STATUS_MODEL),
        ROW(nasnet_model_close(NULL), NASNET_STATUS_NULL_ARGUMENT),
        ROW(nasnet_model_close(&closed), NASNET_STATUS_NULL_ARGUMENT),
        /* model queries */
        ROW(nasnet_model_info(NULL, &info), NASNET_STATUS_NULL_ARGUMENT),
        ROW(nasnet_model_info(m, NULL), NASNET_STATUS_NULL_ARGUMENT),
        ROW(IS_NULL(nasnet_model_name(NULL)), 1),
        ROW(IS_NULL(nasnet_model_backend(NULL)), 1),
        ROW(IS_NULL(nasnet_model_label(NULL, 0)), 1),
        ROW(IS_NULL(nasnet_model_label(m, SIZE_MAX)), 1),
        /* one image */
        ROW(nasnet_classify_image(NULL, px, 4, 4, 12, 0, 4, out, 4, &n), NASNET_STATUS_NULL_ARGUMENT),
        ROW(nasnet_classify_image(m, NULL, 4, 4, 12, 0, 4, out, 4, &n), NASNET_STATUS_NULL_ARGUMENT),
        ROW(nasnet_classify_image(m, px, 0, 4, 12, 0, 4, out, 4, &n), NASNET_STATUS_INVALID_ARGUMENT),
        ROW(nasnet_classify_image(m, px, 4, 0, 12, 0, 4, out, 4, &n), NASNET_STATUS_INVALID_ARGUMENT),
        ROW(nasnet_classify_image(m, px, 4, 4, 11, 0, 4, out, 4, &n), NASNET_STATUS_INVALID_ARGUMENT),
        ROW(nasnet_classify_image(m, px, 4, 4, 12, BIG, 4, out, 4, &n), NASNET_STATUS_INVALID_ARGUMENT),
        ROW(nasnet_classify_image(m, px, 4, 4, 12, 42, 4, out, 4, &n), NASNET_STATUS_INVALID_ARGUMENT),
        ROW(nasnet_classify_image(m, px, BIG, BIG, SIZE_MAX, 0, 4, out, 4, &n), NASNET_STATUS_INVALID_ARGUMENT),
        ROW(nasnet_classify_image(m, px, 4, 4, 12, 0, 4, NULL, 4, &n), NASNET_STATUS_NULL_ARGUMENT),
        ROW(nasnet_classify_image(m, px, 4, 4, 12, 0, 4, out, 4, NULL), NASNET_STATUS_NULL_ARGUMENT),
        ROW(nasnet_classify_image(m, px, 4, 4, 12, 0, 4, out, 0, &n), NASNET_STATUS_BUFFER_TOO_SMALL),
        ROW(nasnet_classify_image(m, px, 4, 4, 12, 0, 0, NULL, 0, &n), NASNET_STATUS_OK),
        ROW(nasnet_classify_image(m, px, 4, 4, 12, 0, SIZE_MAX, out, 4, &n), NASNET_STATUS_BUFFER_TOO_SMALL),
        /* batches */
        ROW(nasnet_classify_images(NULL, &img, 1, 4, out, 4, &n), NASNET_STATUS_NULL_ARGUMENT),
        ROW(nasnet_classify_images(m, NULL, 1, 4, out, 4, &n), NASNET_STATUS_NULL_ARGUMENT),
        ROW(nasnet_classify_images(m, NULL, 0, 4, out, 4, &n), NASNET_STATUS_INVALID_ARGUMENT),
        ROW(nasnet_classify_images(m, &img, 1, 4, out, 4, &n), NASNET_STATUS_NULL_ARGUMENT),
        ROW(nasnet_classify_images(m, &empty, 1, 4, out, 4, &n), NASNET_STATUS_INVALID_ARGUMENT),
        ROW(nasnet_classify_tensor(m, NULL, 1, 3, 4, out, 4, &n), NASNET_STATUS_INVALID_ARGUMENT),
        ROW(nasnet_classify_tensor(m, f, 0, 0, 4, out, 4, &n), NASNET_STATUS_INVALID_ARGUMENT),
        ROW(nasnet_classify_tensor(m, f, SIZE_MAX, 8, 4, out, 4, &n), NASNET_STATUS_INVALID_ARGUMENT),
        /* files */
        ROW(nasnet_classify_file(m, NULL, 4, out, 4, &n), NASNET_STATUS_NULL_ARGUMENT),
        ROW(nasnet_classify_file(m, "", 4, out, 4, &n), NASNET_STATUS_IO),
        ROW(nasnet_classify_file(m, dir, 4, out, 4, &n), NASNET_STATUS_IO),
        ROW(nasnet_classify_file_alloc(m, image, 4, NULL, &count), NASNET_STATUS_NULL_ARGUMENT),
        ROW(nasnet_classify_file_alloc(m, image, 4, &owned, NULL), NASNET_STATUS_NULL_ARGUMENT),
        ROW(nasnet_classify_file_alloc(m, "/nonexistent.jpg", 4, &owned, &count), NASNET_STATUS_IO),
        ROW(nasnet_classify_file_alloc(NULL, image, 4, &owned, &count), NASNET_STATUS_NULL_ARGUMENT),
        /* features */
        ROW(nasnet_features_file(NULL, image, f, 8, &n), NASNET_STATUS_NULL_ARGUMENT),
        ROW(nasnet_features_file(m, image, f, 8, NULL), NASNET_STATUS_NULL_ARGUMENT),
        ROW(nasnet_features_file(m, image, NULL, 0, &n), NASNET_STATUS_BUFFER_TOO_SMALL),
        ROW(nasnet_features_image(m, px, 4, 4, 12, 7, f, 8, &n), NASNET_STATUS_INVALID_ARGUMENT),
        ROW(nasnet_features_image(m, NULL, 4, 4, 12, 0, f, 8, &n), NASNET_STATUS_NULL_ARGUMENT),
        ROW(nasnet_features_tensor(m, NULL, 0, f, 8, &n), NASNET_STATUS_INVALID_ARGUMENT),
        ROW(nasnet_features_tensor(m, f, 8, f, 8, &n), NASNET_STATUS_INVALID_ARGUMENT),
    };
    nasnet_predictions_free(NULL, 0);
    nasnet_predictions_free(NULL, SIZE_MAX);
    nasnet_options_free(NULL);
    nasnet_options_free(o);
    int bad = 0;
    size_t total = sizeof rows / sizeof rows[0];
    for (size_t i = 0; i < total; i++) {
        if (rows[i].got != rows[i].want) {
            fprintf(stderr, "misuse: %s gave %d, expected %d\n", rows[i].call, rows[i].got,
                    rows[i].want);
            bad = 1;
        }
    }
    if (m == NULL || closed != NULL || owned != NULL) bad = 1;
    nasnet_model_close(&m);
    if (!bad) printf("bindings: %zu misuse calls gave their documented status\n", total);
    return bad;
}
