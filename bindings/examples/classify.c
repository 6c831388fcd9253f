/* Classify images with libnasnet and print one JSON object per image, in the format of
 * `nasnet classify --json`:
 *
 *   classify [--top-k K] [--backend tract|ort] [--check-errors] MODEL_DIR IMAGE...
 *
 * --check-errors first exercises the error paths (null arguments, bad sizes and strides, a
 * missing file, a too-small buffer, a double close) and fails if any of them misbehaves. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nasnet.h"

static void json_string(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

#define EXPECT(call, status)                                                         \
    do {                                                                             \
        NasnetStatus s_ = (call);                                                    \
        if (s_ != (status)) {                                                        \
            fprintf(stderr, "%s:%d: %s returned %d, expected %d (%s)\n", __FILE__,   \
                    __LINE__, #call, (int)s_, (int)(status),                          \
                    nasnet_last_error() ? nasnet_last_error() : "no message");        \
            return 1;                                                                \
        }                                                                            \
    } while (0)

static int check_errors(const char *dir, const char *image) {
    NasnetModel *m = NULL;
    NasnetPrediction out[5];
    size_t n = 0;
    unsigned char pixels[4 * 4 * 4] = {0};
    float features[4];

    EXPECT(nasnet_model_open(NULL, NULL, &m), NASNET_STATUS_NULL_ARGUMENT);
    if (!nasnet_last_error()) return 1;
    EXPECT(nasnet_model_open(dir, NULL, NULL), NASNET_STATUS_NULL_ARGUMENT);
    EXPECT(nasnet_model_open("/nonexistent/model", NULL, &m), NASNET_STATUS_MODEL);
    EXPECT(nasnet_model_open_zoo("../escape", NULL, &m), NASNET_STATUS_INVALID_ARGUMENT);
    EXPECT(nasnet_model_open(dir, NULL, &m), NASNET_STATUS_OK);
    EXPECT(nasnet_classify_file(NULL, image, 5, out, 5, &n), NASNET_STATUS_NULL_ARGUMENT);
    EXPECT(nasnet_classify_file(m, "/nonexistent.jpg", 5, out, 5, &n), NASNET_STATUS_IO);
    EXPECT(nasnet_classify_file(m, image, 5, out, 2, &n), NASNET_STATUS_BUFFER_TOO_SMALL);
    if (n != 5) return 1;
    EXPECT(nasnet_classify_file(m, image, 5, NULL, 5, &n), NASNET_STATUS_NULL_ARGUMENT);
    EXPECT(nasnet_classify_image(m, pixels, 0, 4, 16, NASNET_PIXEL_FORMAT_RGBA8, 5, out, 5, &n),
           NASNET_STATUS_INVALID_ARGUMENT);
    EXPECT(nasnet_classify_image(m, pixels, 4, 4, 15, NASNET_PIXEL_FORMAT_RGBA8, 5, out, 5, &n),
           NASNET_STATUS_INVALID_ARGUMENT);
    EXPECT(nasnet_classify_image(m, NULL, 4, 4, 16, NASNET_PIXEL_FORMAT_RGBA8, 5, out, 5, &n),
           NASNET_STATUS_NULL_ARGUMENT);
    EXPECT(nasnet_classify_image(m, pixels, 4, 4, 16, NASNET_PIXEL_FORMAT_RGBA8, 5, out, 5, &n),
           NASNET_STATUS_OK);
    /* Values outside the named constants are rejected, not undefined behaviour. */
    EXPECT(nasnet_classify_image(m, pixels, 4, 4, 16, 42, 5, out, 5, &n),
           NASNET_STATUS_INVALID_ARGUMENT);
    if (!strstr(nasnet_last_error(), "pixel format 42")) return 1;
    EXPECT(nasnet_classify_tensor(m, features, 1, 4, 5, out, 5, &n), NASNET_STATUS_INVALID_ARGUMENT);
    EXPECT(nasnet_features_file(m, image, features, 4, &n), NASNET_STATUS_BUFFER_TOO_SMALL);
    /* A batch of two images gives each its own top-k, equal to one image's. */
    NasnetPrediction one[5], two[10];
    NasnetImage batch[2] = {{pixels, 4, 4, 16, NASNET_PIXEL_FORMAT_RGBA8},
                            {pixels, 2, 2, 16, NASNET_PIXEL_FORMAT_RGBA8}};
    EXPECT(nasnet_classify_image(m, pixels, 4, 4, 16, NASNET_PIXEL_FORMAT_RGBA8, 5, one, 5, &n),
           NASNET_STATUS_OK);
    EXPECT(nasnet_classify_images(m, batch, 2, 5, two, 9, &n), NASNET_STATUS_BUFFER_TOO_SMALL);
    if (n != 10) return 1;
    EXPECT(nasnet_classify_images(m, batch, 2, 5, two, 10, &n), NASNET_STATUS_OK);
    if (n != 10) return 1;
    for (int j = 0; j < 5; j++)
        if (two[j].index != one[j].index || two[j].label != one[j].label) return 1;
    batch[1].format = 42;
    EXPECT(nasnet_classify_images(m, batch, 2, 5, two, 10, &n), NASNET_STATUS_INVALID_ARGUMENT);
    if (!strstr(nasnet_last_error(), "image 1")) return 1;
    EXPECT(nasnet_classify_images(m, batch, 0, 5, two, 10, &n), NASNET_STATUS_INVALID_ARGUMENT);
    /* Features from pixels and from a tensor. */
    NasnetModelInfo info;
    EXPECT(nasnet_model_info(m, &info), NASNET_STATUS_OK);
    float *emb = calloc(info.num_features, sizeof *emb);
    EXPECT(nasnet_features_image(m, pixels, 4, 4, 16, NASNET_PIXEL_FORMAT_RGBA8, emb,
                                 info.num_features, &n), NASNET_STATUS_OK);
    if (n != info.num_features) return 1;
    size_t t = 3 * (size_t)info.input_size * info.input_size;
    float *tensor = calloc(t, sizeof *tensor);
    EXPECT(nasnet_features_tensor(m, tensor, t, emb, info.num_features, &n), NASNET_STATUS_OK);
    EXPECT(nasnet_features_tensor(m, tensor, t - 1, emb, info.num_features, &n),
           NASNET_STATUS_INVALID_ARGUMENT);
    NasnetPrediction rows[10];
    float *tensors = calloc(2 * t, sizeof *tensors);
    EXPECT(nasnet_classify_tensor(m, tensors, 2, 2 * t, 5, rows, 10, &n), NASNET_STATUS_OK);
    if (n != 10 || rows[0].index != rows[5].index) return 1;
    free(tensors);
    free(tensor);
    free(emb);
    if (nasnet_model_label(m, 1u << 30) != NULL) return 1;
    NasnetPrediction *owned = NULL;
    size_t count = 0;
    EXPECT(nasnet_classify_file_alloc(m, image, 3, &owned, &count), NASNET_STATUS_OK);
    if (count != 3 || owned == NULL) return 1;
    nasnet_predictions_free(owned, count);
    nasnet_predictions_free(NULL, 0);
    EXPECT(nasnet_model_close(&m), NASNET_STATUS_OK);
    if (m != NULL) return 1;
    EXPECT(nasnet_model_close(&m), NASNET_STATUS_NULL_ARGUMENT); /* double close */
    EXPECT(nasnet_model_close(NULL), NASNET_STATUS_NULL_ARGUMENT);
    /* Options: made for this header's ABI, every value checked. */
    if (nasnet_options_new(NASNET_ABI_VERSION + 1) != NULL) return 1;
    if (!strstr(nasnet_last_error(), "ABI version")) return 1;
    NasnetOptions *o = nasnet_options_new(NASNET_ABI_VERSION);
    if (o == NULL) return 1;
    EXPECT(nasnet_options_set_backend(o, 42), NASNET_STATUS_INVALID_ARGUMENT);
    if (!strstr(nasnet_last_error(), "backend 42")) return 1;
    EXPECT(nasnet_options_set_backend(NULL, NASNET_BACKEND_TRACT), NASNET_STATUS_NULL_ARGUMENT);
    EXPECT(nasnet_options_set_device(o, -2), NASNET_STATUS_INVALID_ARGUMENT);
    EXPECT(nasnet_options_set_threads(o, 1), NASNET_STATUS_OK);
    EXPECT(nasnet_options_set_ort_library(o, "/nonexistent/libonnxruntime.so"), NASNET_STATUS_OK);
    EXPECT(nasnet_options_set_backend(o, NASNET_BACKEND_ORT), NASNET_STATUS_OK);
    /* Either the library it names is missing, or this build has no ONNX Runtime backend. */
    EXPECT(nasnet_model_open(dir, o, &m), NASNET_STATUS_UNAVAILABLE);
    if (m != NULL || !(strstr(nasnet_last_error(), "/nonexistent/libonnxruntime.so") ||
                       strstr(nasnet_last_error(), "ort backend is not compiled"))) return 1;
    EXPECT(nasnet_options_set_backend(o, NASNET_BACKEND_TRACT), NASNET_STATUS_OK);
    EXPECT(nasnet_options_set_ort_library(o, NULL), NASNET_STATUS_OK);
    EXPECT(nasnet_options_set_tract_cache(o, 42, NULL), NASNET_STATUS_INVALID_ARGUMENT);
    if (!strstr(nasnet_last_error(), "tract cache mode 42")) return 1;
    EXPECT(nasnet_options_set_tract_cache(o, NASNET_TRACT_CACHE_DIR, NULL), NASNET_STATUS_NULL_ARGUMENT);
    if (!strstr(nasnet_last_error(), "needs a directory")) return 1;
    EXPECT(nasnet_options_set_tract_cache(o, NASNET_TRACT_CACHE_OFF, "/tmp"), NASNET_STATUS_INVALID_ARGUMENT);
    if (!strstr(nasnet_last_error(), "takes no directory")) return 1;
    EXPECT(nasnet_options_set_tract_cache(o, NASNET_TRACT_CACHE_OFF, NULL), NASNET_STATUS_OK);
    EXPECT(nasnet_model_open(dir, o, &m), NASNET_STATUS_OK);
    EXPECT(nasnet_model_close(&m), NASNET_STATUS_OK);
    nasnet_options_free(o);
    nasnet_options_free(NULL);
    if (strcmp(nasnet_status_str(NASNET_STATUS_INVALID_ARGUMENT),
               "an argument was out of range or malformed") != 0) return 1;
    if (strcmp(nasnet_status_str(1000), "unknown status") != 0) return 1;
    if (nasnet_abi_version() != NASNET_ABI_VERSION) return 1;
    fprintf(stderr, "error paths: ok\n");
    return 0;
}

int main(int argc, char **argv) {
    size_t k = 5;
    int check = 0, i = 1;
    NasnetOptions *opts = nasnet_options_new(NASNET_ABI_VERSION);
    if (opts == NULL) {
        fprintf(stderr, "classify: %s\n", nasnet_last_error());
        return 1;
    }
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--top-k") == 0 && i + 1 < argc) k = (size_t)atoi(argv[++i]);
        else if (strcmp(argv[i], "--backend") == 0 && i + 1 < argc)
            nasnet_options_set_backend(opts, strcmp(argv[++i], "ort") == 0 ? NASNET_BACKEND_ORT
                                                                           : NASNET_BACKEND_TRACT);
        else if (strcmp(argv[i], "--check-errors") == 0) check = 1;
        else break;
    }
    if (argc - i < 2) {
        fprintf(stderr, "usage: %s [--top-k K] [--backend tract|ort] [--check-errors] MODEL_DIR IMAGE...\n", argv[0]);
        nasnet_options_free(opts);
        return 2;
    }
    const char *dir = argv[i++];
    if (check && check_errors(dir, argv[i]) != 0) {
        nasnet_options_free(opts);
        return 1;
    }

    NasnetModel *model = NULL;
    NasnetStatus opened = nasnet_model_open(dir, opts, &model);
    nasnet_options_free(opts);
    if (opened != NASNET_STATUS_OK) {
        fprintf(stderr, "classify: %s\n", nasnet_last_error());
        return 1;
    }
    NasnetModelInfo info;
    nasnet_model_info(model, &info);
    if (k > info.num_classes) k = info.num_classes;
    NasnetPrediction *preds = calloc(k ? k : 1, sizeof *preds);
    int failed = 0;
    for (; i < argc; i++) {
        size_t n = 0;
        if (nasnet_classify_file(model, argv[i], k, preds, k, &n) != NASNET_STATUS_OK) {
            fprintf(stderr, "classify: %s\n", nasnet_last_error());
            failed = 1;
            continue;
        }
        printf("{\"input\":");
        json_string(argv[i]);
        printf(",\"model\":");
        json_string(nasnet_model_name(model));
        printf(",\"backend\":");
        json_string(nasnet_model_backend(model));
        printf(",\"predictions\":[");
        for (size_t j = 0; j < n; j++) {
            printf("%s{\"index\":%zu,\"label\":", j ? "," : "", preds[j].index);
            json_string(preds[j].label);
            printf(",\"probability\":%.9g,\"logit\":%.9g}", preds[j].probability, preds[j].logit);
        }
        printf("]}\n");
    }
    free(preds);
    nasnet_model_close(&model);
    return failed;
}
