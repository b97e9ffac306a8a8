/* Trains a linear regression y = w . x + b with libadamw and prints the loss falling.
 *
 * The data is generated (y = 3 x0 - 2 x1 + 0.5 + noise); the model, its gradient and the loop
 * are plain C. The optimizer uses a cosine-decay schedule, excludes the bias from weight decay
 * by name, and its state is saved and restored halfway to show that training resumes exactly.
 *
 * Build: see README.md (tools/run-example.sh builds and runs it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adamw.h"

#define SAMPLES 256
#define FEATURES 2
#define STEPS 300

/* Every libadamw call returns a status; on failure the message says what was wrong. */
#define CHECK(call)                                                              \
    do {                                                                         \
        adamw_status status_ = (call);                                           \
        if (status_ != ADAMW_STATUS_OK) {                                        \
            char message_[512];                                                  \
            size_t len_ = 0;                                                     \
            adamw_last_error(message_, sizeof message_, &len_);                  \
            fprintf(stderr, "%s failed: %s: %s\n", #call, adamw_status_name(status_), message_); \
            exit(1);                                                             \
        }                                                                        \
    } while (0)

/* A small deterministic generator, so that every run prints the same numbers. */
static uint32_t rng_state = 12345;
static float uniform(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)(rng_state >> 8) / 16777216.0f * 2.0f - 1.0f;
}

static float x[SAMPLES][FEATURES], y[SAMPLES];

/* Mean squared error and its gradient with respect to w and b. */
static float loss_and_gradient(const float *w, const float *b, float *grad_w, float *grad_b) {
    float loss = 0;
    memset(grad_w, 0, FEATURES * sizeof *grad_w);
    *grad_b = 0;
    for (int i = 0; i < SAMPLES; i++) {
        float error = w[0] * x[i][0] + w[1] * x[i][1] + *b - y[i];
        loss += error * error / SAMPLES;
        for (int j = 0; j < FEATURES; j++) grad_w[j] += 2 * error * x[i][j] / SAMPLES;
        *grad_b += 2 * error / SAMPLES;
    }
    return loss;
}

int main(void) {
    if (adamw_abi_version() != ADAMW_ABI_VERSION) {
        fprintf(stderr, "libadamw ABI %u does not match the header's %d\n", adamw_abi_version(), ADAMW_ABI_VERSION);
        return 1;
    }
    for (int i = 0; i < SAMPLES; i++) {
        x[i][0] = uniform();
        x[i][1] = uniform();
        y[i] = 3 * x[i][0] - 2 * x[i][1] + 0.5f + 0.05f * uniform();
    }

    /* The model's parameters: owned by us, passed to the optimizer at each call. */
    float w[FEATURES] = {0, 0}, b = 0;
    float grad_w[FEATURES], grad_b;

    /* Keras' defaults, then a cosine-decay schedule from 0.1 over the run. */
    adamw_schedule schedule;
    CHECK(adamw_schedule_init(ADAMW_SCHEDULE_KIND_COSINE_DECAY, &schedule));
    schedule.initial_learning_rate = 0.1;
    schedule.decay_steps = STEPS;
    schedule.alpha = 0.01;
    adamw_config config = adamw_config_default();
    config.learning_rate_schedule = &schedule;
    config.weight_decay = 0.01;

    adamw_optimizer *opt = NULL;
    CHECK(adamw_optimizer_new(&config, &opt));
    const char *no_decay[] = {"bias"}; /* a regex, searched in "dense/bias:0" */
    CHECK(adamw_optimizer_exclude_from_weight_decay(opt, NULL, 0, no_decay, 1));
    const size_t w_shape[1] = {FEATURES}, b_shape[1] = {1};
    const adamw_variable variables[2] = {
        {.name = "dense/kernel", .dtype = ADAMW_DTYPE_FLOAT32, .ndim = 1, .shape = w_shape, .data = w},
        {.name = "dense/bias", .dtype = ADAMW_DTYPE_FLOAT32, .ndim = 1, .shape = b_shape, .data = &b},
    };
    CHECK(adamw_optimizer_build(opt, variables, 2));

    /* One entry per variable: where its values are (updated in place) and its gradient. */
    adamw_gradient step[2] = {
        {.variable = 0, .dtype = ADAMW_DTYPE_FLOAT32, .data = w, .len = FEATURES, .dense = grad_w},
        {.variable = 1, .dtype = ADAMW_DTYPE_FLOAT32, .data = &b, .len = 1, .dense = &grad_b},
    };

    uint8_t *checkpoint = NULL;
    size_t checkpoint_len = 0;
    float w_at_checkpoint[FEATURES] = {0, 0}, b_at_checkpoint = 0;
    for (int t = 0; t < STEPS; t++) {
        float loss = loss_and_gradient(w, &b, grad_w, &grad_b);
        if (t % 30 == 0) {
            float lr;
            CHECK(adamw_optimizer_current_learning_rate(opt, &lr));
            printf("step %3d  loss %.6f  lr %.5f  w = [%.4f, %.4f]  b = %.4f\n", t, loss, lr, w[0], w[1], b);
        }
        if (t == STEPS / 2) {
            /* Save the optimizer's state (size query first, then fill). */
            CHECK(adamw_optimizer_save_own_variables(opt, NULL, 0, &checkpoint_len));
            checkpoint = malloc(checkpoint_len);
            CHECK(adamw_optimizer_save_own_variables(opt, checkpoint, checkpoint_len, &checkpoint_len));
            memcpy(w_at_checkpoint, w, sizeof w);
            b_at_checkpoint = b;
        }
        CHECK(adamw_optimizer_apply_gradients(opt, step, 2, NULL));
    }
    float final_loss = loss_and_gradient(w, &b, grad_w, &grad_b);
    printf("final     loss %.6f  w = [%.4f, %.4f]  b = %.4f  (truth: [3, -2], 0.5)\n", final_loss, w[0], w[1], b);

    /* Resume from the checkpoint in a new optimizer: the second half replays to the same bits. */
    float w_first_run[FEATURES] = {w[0], w[1]}, b_first_run = b;
    memcpy(w, w_at_checkpoint, sizeof w);
    b = b_at_checkpoint;
    adamw_optimizer *resumed = NULL;
    CHECK(adamw_optimizer_new(&config, &resumed));
    CHECK(adamw_optimizer_exclude_from_weight_decay(resumed, NULL, 0, no_decay, 1));
    CHECK(adamw_optimizer_build(resumed, variables, 2));
    CHECK(adamw_optimizer_load_own_variables(resumed, checkpoint, checkpoint_len));
    for (int t = STEPS / 2; t < STEPS; t++) {
        loss_and_gradient(w, &b, grad_w, &grad_b);
        CHECK(adamw_optimizer_apply_gradients(resumed, step, 2, NULL));
    }
    int identical = memcmp(w, w_first_run, sizeof w) == 0 && memcmp(&b, &b_first_run, sizeof b) == 0;
    printf("resumed from step %d: %s\n", STEPS / 2, identical ? "identical to the uninterrupted run" : "DIFFERENT");

    free(checkpoint);
    adamw_optimizer_free(resumed);
    adamw_optimizer_free(opt);
    return identical && final_loss < 0.01f ? 0 : 1;
}
