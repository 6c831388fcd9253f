/* One model handle used from several threads at once: every thread must get the answer the
 * main thread got.   threads MODEL_DIR IMAGE [THREADS] [ROUNDS] */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "nasnet.h"

static NasnetModel *model;
static const char *image;
static NasnetPrediction expected[3];
static int rounds = 3;

static void *worker(void *arg) {
    (void)arg;
    for (int r = 0; r < rounds; r++) {
        NasnetPrediction got[3];
        size_t n = 0;
        if (nasnet_classify_file(model, image, 3, got, 3, &n) != NASNET_STATUS_OK || n != 3) {
            fprintf(stderr, "threads: %s\n", nasnet_last_error());
            return (void *)1;
        }
        for (int j = 0; j < 3; j++)
            if (got[j].index != expected[j].index || got[j].probability != expected[j].probability) {
                fprintf(stderr, "threads: thread result differs at rank %d\n", j);
                return (void *)1;
            }
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL_DIR IMAGE [THREADS] [ROUNDS]\n", argv[0]);
        return 2;
    }
    int threads = argc > 3 ? atoi(argv[3]) : 4;
    if (argc > 4) rounds = atoi(argv[4]);
    image = argv[2];
    if (nasnet_model_open(argv[1], NULL, &model) != NASNET_STATUS_OK) {
        fprintf(stderr, "threads: %s\n", nasnet_last_error());
        return 1;
    }
    size_t n = 0;
    if (nasnet_classify_file(model, image, 3, expected, 3, &n) != NASNET_STATUS_OK) return 1;
    pthread_t t[64];
    if (threads > 64) threads = 64;
    for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, worker, NULL);
    int failed = 0;
    for (int i = 0; i < threads; i++) {
        void *r;
        pthread_join(t[i], &r);
        failed |= r != NULL;
    }
    nasnet_model_close(&model);
    if (!failed) printf("threads: %d threads x %d rounds agree\n", threads, rounds);
    return failed;
}
