#define _POSIX_C_SOURCE 199309L
/* The C side of tools/bench_go.sh: the steps the Go package's benchmarks time
 * (bindings/go/adamw/bench_test.go), through the C ABI, with the same data, configuration and
 * iteration count. Prints the nanoseconds of one step.
 *
 *   go_peer N COUNT GLOBAL_CLIPNORM ITERATIONS
 *
 * COUNT float32 variables of N elements each, Keras' defaults plus global_clipnorm (0: none);
 * one untimed step, then ITERATIONS timed ones. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "adamw.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void must(adamw_status status) {
    if (status != ADAMW_STATUS_OK) {
        char message[512];
        adamw_last_error(message, sizeof message, NULL);
        fprintf(stderr, "go_peer: %s: %s\n", adamw_status_name(status), message);
        exit(1);
    }
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: go_peer N COUNT GLOBAL_CLIPNORM ITERATIONS\n");
        return 2;
    }
    size_t n = strtoull(argv[1], NULL, 10), count = strtoull(argv[2], NULL, 10);
    long iterations = strtol(argv[4], NULL, 10);
    adamw_config config = adamw_config_default();
    config.global_clipnorm = strtod(argv[3], NULL);
    adamw_optimizer *opt = NULL;
    must(adamw_optimizer_new(&config, &opt));
    adamw_variable *vars = calloc(count, sizeof *vars);
    adamw_gradient *entries = calloc(count, sizeof *entries);
    char (*names)[24] = calloc(count, sizeof *names);
    for (size_t i = 0; i < count; i++) {
        float *w = calloc(n, sizeof *w), *g = malloc(n * sizeof *g);
        for (size_t k = 0; k < n; k++) g[k] = (float)(k % 7) * 0.1f - 0.3f; /* gradientOf in Go */
        snprintf(names[i], sizeof names[i], "w%zu", i);
        vars[i] = (adamw_variable){.name = names[i], .dtype = ADAMW_DTYPE_FLOAT32, .ndim = 1, .shape = &n};
        entries[i] = (adamw_gradient){.variable = i, .dtype = ADAMW_DTYPE_FLOAT32, .data = w, .len = n, .dense = g};
    }
    must(adamw_optimizer_build(opt, vars, count));
    must(adamw_optimizer_apply_gradients(opt, entries, count, NULL));
    double start = now();
    for (long i = 0; i < iterations; i++) must(adamw_optimizer_apply_gradients(opt, entries, count, NULL));
    printf("%.1f\n", (now() - start) / (double)iterations * 1e9);
    for (size_t i = 0; i < count; i++) {
        free(entries[i].data);
        free((void *)entries[i].dense);
    }
    free(vars);
    free(entries);
    free(names);
    adamw_optimizer_free(opt);
    return 0;
}
