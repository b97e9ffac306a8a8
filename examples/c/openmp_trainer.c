/* A training engine that runs on OpenMP gives libadamw its OpenMP threads.
 *
 * The engine computes its forward and backward passes with `#pragma omp parallel for`; its
 * optimizer step is libadamw, whose tasks run on the same OpenMP threads through
 * adamw_optimizer_set_parallel_for. So no second pool fights the engine's spinning OpenMP threads
 * for the cores, and the results are the same bits as with libadamw's own threads (checked at
 * the end by training again without the hook).
 *
 * The model: a one-hidden-layer network (256 inputs, 1024 tanh units, 1 output) fitting a fixed
 * random teacher, full-batch of 64 examples, 60 steps. As GPT-2 trainers do, only the matrices
 * are decayed (adamw_optimizer_set_weight_decay_min_ndim(opt, 2): the biases are not), and the
 * progress line logs the gradient norm, which libadamw takes in its update pass
 * (adamw_optimizer_set_report_gradient_norms) instead of a second pass over the gradients.
 *
 * Build: cc -O2 -fopenmp -Iinclude examples/c/openmp_trainer.c target/release/libadamw.a -lm -ldl -lpthread
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adamw.h"

enum { IN = 256, HIDDEN = 1024, BATCH = 64, STEPS = 60 };

/* libadamw's tasks on the engine's OpenMP threads: a static schedule gives each thread the same
   tasks every step, so each finds its part of the weights in its own cache. */
static void omp_parallel_for(void *user_data, size_t n_tasks, adamw_task_fn task, void *task_data) {
    (void)user_data;
#pragma omp parallel for schedule(static)
    for (long i = 0; i < (long)n_tasks; i++) task(task_data, (size_t)i);
}

static float uniform(uint32_t *state) { /* in [-1, 1) */
    *state = *state * 1664525u + 1013904223u;
    return (float)(*state >> 8) / 8388608.0f - 1.0f;
}

typedef struct {
    float w1[HIDDEN * IN], b1[HIDDEN], w2[HIDDEN], b2[1];
} model;

typedef struct {
    float x[BATCH][IN], y[BATCH];
} batch;

/* Forward and backward over the batch; returns the mean squared error. */
static float forward_backward(const model *m, const batch *d, model *grad) {
    static float h[BATCH][HIDDEN], err[BATCH];
    float loss = 0;
#pragma omp parallel for reduction(+ : loss)
    for (int n = 0; n < BATCH; n++) {
        float out = m->b2[0];
        for (int j = 0; j < HIDDEN; j++) {
            float a = m->b1[j];
            for (int i = 0; i < IN; i++) a += m->w1[j * IN + i] * d->x[n][i];
            h[n][j] = tanhf(a);
            out += m->w2[j] * h[n][j];
        }
        err[n] = out - d->y[n];
        loss += err[n] * err[n] / BATCH;
    }
    grad->b2[0] = 0;
    for (int n = 0; n < BATCH; n++) grad->b2[0] += 2 * err[n] / BATCH;
#pragma omp parallel for
    for (int j = 0; j < HIDDEN; j++) {
        float gw2 = 0, gb1 = 0;
        float *gw1 = &grad->w1[j * IN];
        memset(gw1, 0, IN * sizeof(float));
        for (int n = 0; n < BATCH; n++) {
            float e = 2 * err[n] / BATCH;
            gw2 += e * h[n][j];
            float back = e * m->w2[j] * (1 - h[n][j] * h[n][j]);
            gb1 += back;
            for (int i = 0; i < IN; i++) gw1[i] += back * d->x[n][i];
        }
        grad->w2[j] = gw2;
        grad->b1[j] = gb1;
    }
    return loss;
}

static void check(adamw_status status, const char *what) {
    if (status != ADAMW_STATUS_OK) {
        char message[512];
        size_t len = 0;
        adamw_last_error(message, sizeof message, &len);
        fprintf(stderr, "%s: %s: %s\n", what, adamw_status_name(status), message);
        exit(1);
    }
}

static int hook_calls = 0;
static void counted_omp_parallel_for(void *user_data, size_t n_tasks, adamw_task_fn task, void *task_data) {
    hook_calls++;
    omp_parallel_for(user_data, n_tasks, task, task_data);
}

/* Trains from the same start; returns a checksum of the final weights' bits. */
static uint64_t train(const batch *data, int use_hook, int verbose) {
    static model m, grad;
    uint32_t seed = 7;
    for (size_t i = 0; i < sizeof m.w1 / sizeof(float); i++) m.w1[i] = uniform(&seed) * 0.0625f;
    for (int j = 0; j < HIDDEN; j++) m.b1[j] = 0, m.w2[j] = uniform(&seed) * 0.03125f;
    m.b2[0] = 0;

    adamw_config config = adamw_config_default();
    config.learning_rate = 0.001; /* doubles, as Keras' Python floats: 0.9, not 0.9f */
    config.beta_1 = 0.9;
    config.weight_decay = 0.004;
    adamw_optimizer *opt = NULL;
    check(adamw_optimizer_new(&config, &opt), "adamw_optimizer_new");
    if (use_hook) check(adamw_optimizer_set_parallel_for(opt, counted_omp_parallel_for, NULL), "set_parallel_for");
    check(adamw_optimizer_set_weight_decay_min_ndim(opt, 2), "set_weight_decay_min_ndim"); /* no decay for biases */
    check(adamw_optimizer_set_report_gradient_norms(opt, 1), "set_report_gradient_norms");
    const size_t w1_shape[2] = {HIDDEN, IN}, vec_shape[1] = {HIDDEN}, w2_shape[2] = {HIDDEN, 1}, one[1] = {1};
    const adamw_variable variables[4] = {
        {"dense/kernel", ADAMW_DTYPE_FLOAT32, 2, w1_shape, NULL, 0, 0, 0},
        {"dense/bias", ADAMW_DTYPE_FLOAT32, 1, vec_shape, NULL, 0, 0, 0},
        {"out/kernel", ADAMW_DTYPE_FLOAT32, 2, w2_shape, NULL, 0, 0, 0},
        {"out/bias", ADAMW_DTYPE_FLOAT32, 1, one, NULL, 0, 0, 0},
    };
    check(adamw_optimizer_build(opt, variables, 4), "adamw_optimizer_build");
    if (verbose) {
        printf("decayed:");
        for (size_t v = 0; v < 4; v++) {
            adamw_variable_properties p;
            check(adamw_optimizer_variable_properties(opt, v, &p), "variable_properties");
            printf(" %s %s", variables[v].name, p.decayed ? "yes" : "no");
        }
        printf("\n");
    }
    adamw_gradient entries[4] = {
        {.variable = 0, .dtype = ADAMW_DTYPE_FLOAT32, .data = m.w1, .len = HIDDEN * IN, .dense = grad.w1},
        {.variable = 1, .dtype = ADAMW_DTYPE_FLOAT32, .data = m.b1, .len = HIDDEN, .dense = grad.b1},
        {.variable = 2, .dtype = ADAMW_DTYPE_FLOAT32, .data = m.w2, .len = HIDDEN, .dense = grad.w2},
        {.variable = 3, .dtype = ADAMW_DTYPE_FLOAT32, .data = m.b2, .len = 1, .dense = grad.b2},
    };
    for (int step = 1; step <= STEPS; step++) {
        float loss = forward_backward(&m, data, &grad);
        check(adamw_optimizer_apply_gradients(opt, entries, 4, NULL), "apply_gradients");
        if (verbose && (step == 1 || step % 10 == 0)) {
            adamw_step_report report; /* what the step saw: no pass over the gradients */
            check(adamw_optimizer_step_report(opt, &report), "step_report");
            printf("step %3d  loss %.6f  grad norm %.6f\n", step, loss, report.global_norm);
        }
    }
    adamw_optimizer_free(opt);
    uint64_t sum = 1469598103934665603u; /* FNV-1a over the weights' bytes */
    const unsigned char *bytes = (const unsigned char *)&m;
    for (size_t i = 0; i < sizeof m; i++) sum = (sum ^ bytes[i]) * 1099511628211u;
    return sum;
}

int main(void) {
    static batch data;
    static float teacher[IN];
    uint32_t seed = 1;
    for (int i = 0; i < IN; i++) teacher[i] = uniform(&seed) * 0.1f;
    for (int n = 0; n < BATCH; n++) {
        float dot = 0;
        for (int i = 0; i < IN; i++) dot += teacher[i] * (data.x[n][i] = uniform(&seed));
        data.y[n] = tanhf(dot);
    }
    printf("OpenMP threads: %d\n", omp_get_max_threads());
    uint64_t with_hook = train(&data, 1, 1);
    uint64_t own_threads = train(&data, 0, 0);
    printf("parallel-for calls: %d (the %d x %d kernel is cut into tasks; the small variables run on the calling thread)\n",
           hook_calls, HIDDEN, IN);
    printf("weights checksum: %016llx with the OpenMP hook, %016llx with libadamw's own threads\n",
           (unsigned long long)with_hook, (unsigned long long)own_threads);
    if (with_hook != own_threads || hook_calls == 0) {
        fprintf(stderr, "error: the hook gave other bits, or was never called\n");
        return 1;
    }
    return 0;
}
