/* A caller built before options grew: it declares, as its own header did, only the calls that
 * existed then (no nasnet.h, no nasnet_options_set_ort_library, no batch calls), and must still
 * work against this library. Options are an opaque handle changed by setters, so adding an
 * option adds a function and leaves every existing caller's layout alone.
 *
 *   old_caller MODEL_DIR IMAGE */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct NasnetOptions NasnetOptions;
typedef struct NasnetModel NasnetModel;
typedef struct {
    size_t index;
    float probability;
    float logit;
    const char *label;
} NasnetPrediction;

#define OLD_ABI_VERSION 3
NasnetOptions *nasnet_options_new(uint32_t abi_version);
int nasnet_options_set_threads(NasnetOptions *options, uint32_t threads);
void nasnet_options_free(NasnetOptions *options);
int nasnet_model_open(const char *dir, const NasnetOptions *options, NasnetModel **out);
int nasnet_classify_file(const NasnetModel *model, const char *path, size_t k,
                         NasnetPrediction *out, size_t out_len, size_t *written);
int nasnet_model_close(NasnetModel **model);

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    NasnetOptions *o = nasnet_options_new(OLD_ABI_VERSION);
    if (o == NULL || nasnet_options_set_threads(o, 1) != 0) return 1;
    NasnetModel *m = NULL;
    int status = nasnet_model_open(argv[1], o, &m);
    nasnet_options_free(o);
    if (status != 0) return 1;
    NasnetPrediction p[3];
    size_t n = 0;
    status = nasnet_classify_file(m, argv[2], 3, p, 3, &n);
    nasnet_model_close(&m);
    if (status != 0 || n != 3 || p[0].label == NULL) return 1;
    printf("bindings: a caller of ABI %d with the options it knew still works\n", OLD_ABI_VERSION);
    return 0;
}
