#define _POSIX_C_SOURCE 199309L
/* Per-call cost of small steps through the C ABI, in nanoseconds (best of 5 rounds): one
 * variable of 1K float32 parameters (with the default thread setting and with threads = 1), and
 * a 10-variable MLP of 9,996 parameters (kernels 48x48 x4 and 48x12, with their biases).
 * Prints one JSON object. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "adamw.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* Builds an optimizer over `count` variables of the given lengths and times `reps` steps. */
static double ns_per_call(size_t count, const size_t *lens, uint32_t threads, int reps) {
    adamw_config config = adamw_config_default();
    config.threads = threads;
    adamw_optimizer *opt = NULL;
    if (adamw_optimizer_new(&config, &opt)) exit(1);
    adamw_variable vars[16];
    adamw_gradient entries[16];
    size_t shapes[16][1];
    float *data[16], *grads[16];
    char names[16][8];
    for (size_t i = 0; i < count; i++) {
        shapes[i][0] = lens[i];
        data[i] = calloc(lens[i], sizeof(float));
        grads[i] = malloc(lens[i] * sizeof(float));
        for (size_t k = 0; k < lens[i]; k++) grads[i][k] = (float)(k % 7) * 0.01f;
        snprintf(names[i], sizeof names[i], "v%zu", i);
        vars[i] = (adamw_variable){.name = names[i], .dtype = ADAMW_DTYPE_FLOAT32, .ndim = 1, .shape = shapes[i]};
        entries[i] = (adamw_gradient){.variable = i, .dtype = ADAMW_DTYPE_FLOAT32, .data = data[i], .len = lens[i], .dense = grads[i]};
    }
    if (adamw_optimizer_build(opt, vars, count)) exit(1);
    for (int i = 0; i < 1000; i++) adamw_optimizer_apply_gradients(opt, entries, count, NULL);
    double best = 1e30;
    for (int round = 0; round < 5; round++) {
        double t = now();
        for (int i = 0; i < reps; i++) adamw_optimizer_apply_gradients(opt, entries, count, NULL);
        double per = (now() - t) / reps * 1e9;
        if (per < best) best = per;
    }
    for (size_t i = 0; i < count; i++) {
        free(data[i]);
        free(grads[i]);
    }
    adamw_optimizer_free(opt);
    return best;
}

int main(void) {
    size_t one[1] = {1024};
    size_t mlp[10] = {48 * 48, 48, 48 * 48, 48, 48 * 48, 48, 48 * 48, 48, 48 * 12, 12};
    size_t total = 0;
    for (int i = 0; i < 10; i++) total += mlp[i];
    printf("{\"per_call_ns_1k\": %.1f, \"per_call_ns_1k_threads1\": %.1f, \"per_call_ns_mlp10k\": %.1f, \"mlp_params\": %zu}\n",
           ns_per_call(1, one, 0, 200000), ns_per_call(1, one, 1, 200000), ns_per_call(10, mlp, 0, 50000), total);
    return 0;
}
