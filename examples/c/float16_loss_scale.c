/* Trains a float16 linear regression with dynamic loss scaling, as mixed-precision engines do.
 *
 * The parameters are float16 (passed to libadamw as their bits) with float32 master copies kept
 * by the optimizer. Each step computes the gradient of the loss multiplied by the current loss
 * scale and stores it in float16, as a float16 backward pass would: while the scale is too large
 * the scaled gradient overflows to infinity, libadamw skips that step and halves the scale, and
 * the run prints each back-off. Then the loss falls.
 *
 * Build: cc -Iinclude examples/c/float16_loss_scale.c target/release/libadamw.a -lm -ldl -lpthread */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adamw.h"

#define SAMPLES 128
#define FEATURES 4
#define STEPS 400

/* Every libadamw call returns a status; on failure the message says what was wrong. */
#define CHECK(call)                                                                              \
    do {                                                                                         \
        adamw_status status_ = (call);                                                           \
        if (status_ != ADAMW_STATUS_OK) {                                                        \
            char message_[512];                                                                  \
            size_t len_ = 0;                                                                     \
            adamw_last_error(message_, sizeof message_, &len_);                                  \
            fprintf(stderr, "%s failed: %s: %s\n", #call, adamw_status_name(status_), message_); \
            exit(1);                                                                             \
        }                                                                                        \
    } while (0)

/* float32 -> float16 bits, rounded to nearest even (subnormals kept, overflow to infinity). */
static uint16_t to_half(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu, out;
    if (a >= 0x47800000u) {
        out = a > 0x7f800000u ? 0x7e00u : 0x7c00u;
    } else if (a < 0x38800000u) {
        float magnitude;
        memcpy(&magnitude, &a, sizeof magnitude);
        magnitude += 0.5f;
        memcpy(&out, &magnitude, sizeof out);
        out -= 0x3f000000u;
    } else {
        out = (a + 0xc8000fffu + ((a >> 13) & 1u)) >> 13;
    }
    return (uint16_t)(sign | out);
}

/* float16 bits -> float32 (exact). */
static float from_half(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu, u;
    if (exponent == 0x1fu) {
        u = sign | 0x7f800000u | (mantissa << 13);
    } else if (exponent != 0) {
        u = sign | ((exponent + 112u) << 23) | (mantissa << 13);
    } else {
        float f = (float)mantissa * 5.9604644775390625e-08f;
        memcpy(&u, &f, sizeof u);
        u |= sign;
    }
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t rng_state = 2024;
static float uniform(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)(rng_state >> 8) / 16777216.0f * 2.0f - 1.0f;
}

int main(void) {
    static float x[SAMPLES][FEATURES], y[SAMPLES];
    const float truth[FEATURES] = {1.5f, -2.0f, 0.5f, 3.0f};
    for (int i = 0; i < SAMPLES; i++) {
        y[i] = 0.25f;
        for (int k = 0; k < FEATURES; k++) {
            x[i][k] = uniform();
            y[i] += truth[k] * x[i][k];
        }
    }

    adamw_config config = adamw_config_default();
    config.learning_rate = 0.02;
    adamw_optimizer *opt = NULL;
    CHECK(adamw_optimizer_new(&config, &opt));
    CHECK(adamw_optimizer_set_master_weights(opt, 1));
    /* Keras' defaults would start at 2^15 and grow every 2000 steps; this run starts far too
       high (2^24) so that the first steps overflow float16 and the scale backs off. */
    CHECK(adamw_optimizer_set_loss_scale(opt, 1, 16777216.0, 100));

    uint16_t w[FEATURES], b[1], gw[FEATURES], gb[1];
    for (int k = 0; k < FEATURES; k++) w[k] = to_half(0.0f);
    b[0] = to_half(0.0f);
    const size_t w_shape[1] = {FEATURES}, b_shape[1] = {1};
    adamw_variable vars[2] = {
        {"dense/kernel", ADAMW_DTYPE_FLOAT16, 1, w_shape, w, 0, 0, 0},
        {"dense/bias", ADAMW_DTYPE_FLOAT16, 1, b_shape, b, 0, 0, 0},
    };
    CHECK(adamw_optimizer_build(opt, vars, 2));
    adamw_gradient entries[2] = {
        {.variable = 0, .dtype = ADAMW_DTYPE_FLOAT16, .data = w, .len = FEATURES, .dense = gw},
        {.variable = 1, .dtype = ADAMW_DTYPE_FLOAT16, .data = b, .len = 1, .dense = gb},
    };

    float previous_scale = 0, loss = 0;
    int skipped = 0;
    for (int step = 0; step < STEPS; step++) {
        float scale;
        CHECK(adamw_optimizer_loss_scale(opt, &scale, NULL));
        /* Forward and backward in float32, the loss multiplied by the scale, the gradient then
           stored in float16 (where a too large scale overflows). */
        float grad_w[FEATURES] = {0}, grad_b = 0;
        loss = 0;
        for (int i = 0; i < SAMPLES; i++) {
            float err = from_half(b[0]) - y[i];
            for (int k = 0; k < FEATURES; k++) err += from_half(w[k]) * x[i][k];
            loss += err * err / SAMPLES;
            for (int k = 0; k < FEATURES; k++) grad_w[k] += 2.0f * err * x[i][k] / SAMPLES * scale;
            grad_b += 2.0f * err / SAMPLES * scale;
        }
        for (int k = 0; k < FEATURES; k++) gw[k] = to_half(grad_w[k]);
        gb[0] = to_half(grad_b);
        CHECK(adamw_optimizer_apply_gradients(opt, entries, 2, NULL));
        float new_scale;
        CHECK(adamw_optimizer_loss_scale(opt, &new_scale, NULL));
        if (new_scale < scale) {
            skipped++;
            printf("step %3d: the scaled gradient overflowed float16; step skipped, loss scale %g -> %g\n", step,
                   scale, new_scale);
        } else if (new_scale > scale && previous_scale != 0) {
            printf("step %3d: %d finite steps in a row; loss scale %g -> %g\n", step, 100, scale, new_scale);
        }
        previous_scale = new_scale;
        if (step % 100 == 0) printf("step %3d: loss %.6f\n", step, loss);
    }
    printf("final    loss %.6f  w = [%.3f, %.3f, %.3f, %.3f]  b = %.3f  (truth: [1.5, -2, 0.5, 3], 0.25)\n", loss,
           from_half(w[0]), from_half(w[1]), from_half(w[2]), from_half(w[3]), from_half(b[0]));
    printf("%d steps skipped by the loss scaler, final loss scale %g\n", skipped, previous_scale);
    adamw_optimizer_free(opt);
    if (skipped == 0 || !(loss < 0.01f)) {
        fprintf(stderr, "error: expected the scale to back off and the loss to fall below 0.01\n");
        return 1;
    }
    return 0;
}
