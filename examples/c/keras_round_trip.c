/* Train in Keras, continue in C, and back: the optimizer state of a model trained with tf-keras
 * 2.15 goes into libadamw through Keras' own `.keras` file, training continues here with Keras'
 * bits, and the state goes back into a `.keras` file that Keras loads and continues from.
 *
 * The model (tests/data/keras_files/dense_amsgrad.keras) is Dense(3, relu) then Dense(2), trained
 * by Keras for 3 steps of AdamW(learning_rate=0.01, weight_decay=0.01, amsgrad=True) and saved
 * with model.save. Keras' own numbers (tools/keras_files.py made them; dense_amsgrad.steps.txt
 * holds them as bits) give the weights at the save, the gradients of the next steps, and where
 * Keras' own continuation went. This program:
 *   1. builds the optimizer from the archive's own config and loads its state from the archive;
 *   2. takes Keras' 2 continuation steps and compares the weights with Keras' continuation;
 *   3. writes its state back into a copy of the archive (continued.keras);
 *   4. loads that file into a new optimizer, takes 2 more steps, and compares with the weights
 *      Keras reached when it loaded libadamw's file and took the same steps.
 * Every comparison is in units in the last place (ulp); all must be 0.
 *
 * Usage: keras_round_trip [DATA_DIR [OUT_DIR]] (defaults: tests/data/keras_files and /tmp). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adamw.h"

#define CHECK(call)                                                                             \
    do {                                                                                        \
        adamw_status status_ = (call);                                                          \
        if (status_ != ADAMW_STATUS_OK) {                                                       \
            char message_[512];                                                                 \
            size_t len_ = 0;                                                                    \
            adamw_last_error(message_, sizeof message_, &len_);                                 \
            fprintf(stderr, "%s failed: %s: %s\n", #call, adamw_status_name(status_), message_); \
            exit(1);                                                                            \
        }                                                                                       \
    } while (0)

/* The model's trainable variables, in Keras' order (model.trainable_variables). */
enum { VARIABLES = 4, STEPS = 2 };
static const char *const names[VARIABLES] = {"hidden/kernel", "hidden/bias", "out/kernel", "out/bias"};
static const size_t shapes[VARIABLES][2] = {{4, 3}, {3, 0}, {3, 2}, {2, 0}};
static const size_t ranks[VARIABLES] = {2, 1, 2, 1};
static const size_t sizes[VARIABLES] = {12, 3, 6, 2};

/* Reads the array labelled `label` from Keras' numbers: a line `LABEL COUNT HEX...`. */
static void read_array(const char *path, const char *label, float *out, size_t count) {
    FILE *file = fopen(path, "r");
    if (!file) { perror(path); exit(1); }
    char name[64];
    size_t n;
    while (fscanf(file, "%63s", name) == 1) {
        if (name[0] == '#') { /* a comment line */
            int c;
            while ((c = fgetc(file)) != '\n' && c != EOF) {}
            continue;
        }
        if (fscanf(file, "%zu", &n) != 1) break;
        int wanted = strcmp(name, label) == 0;
        if (wanted && n != count) { fprintf(stderr, "%s: %s has %zu values, not %zu\n", path, label, n, count); exit(1); }
        for (size_t i = 0; i < n; i++) {
            uint32_t bits;
            if (fscanf(file, "%" SCNx32, &bits) != 1) { fprintf(stderr, "%s: %s is cut short\n", path, name); exit(1); }
            if (wanted) memcpy(&out[i], &bits, 4);
        }
        if (wanted) { fclose(file); return; }
    }
    fprintf(stderr, "%s: no %s\n", path, label);
    exit(1);
}

/* How far apart two floats are, in representable float32 values. */
static uint32_t ulp_distance(float a, float b) {
    int32_t x, y;
    memcpy(&x, &a, 4);
    memcpy(&y, &b, 4);
    int64_t ox = x < 0 ? (int64_t)INT32_MIN - x : x, oy = y < 0 ? (int64_t)INT32_MIN - y : y;
    return (uint32_t)(ox > oy ? ox - oy : oy - ox);
}

static float weights[VARIABLES][12], gradients[VARIABLES][12];

/* An optimizer from the archive's own config (Keras' get_config), built over the model. */
static adamw_optimizer *optimizer_from_archive(const char *archive) {
    size_t len = 0;
    CHECK(adamw_keras_file_optimizer_config(archive, NULL, 0, &len));
    char *json = malloc(len + 1);
    if (!json) exit(1);
    CHECK(adamw_keras_file_optimizer_config(archive, json, len + 1, &len));
    adamw_optimizer *optimizer = NULL;
    CHECK(adamw_optimizer_from_config_json(json, len, &optimizer));
    free(json);
    adamw_variable variables[VARIABLES];
    for (int v = 0; v < VARIABLES; v++) {
        variables[v] = (adamw_variable){.name = names[v], .dtype = ADAMW_DTYPE_FLOAT32,
                                        .ndim = ranks[v], .shape = shapes[v]};
    }
    CHECK(adamw_optimizer_build(optimizer, variables, VARIABLES));
    CHECK(adamw_optimizer_load_keras_file(optimizer, archive));
    return optimizer;
}

/* Takes Keras' steps `part/S/V` on the weights and returns the largest ulp distance from the
 * weights Keras reached (`part/V`). */
static uint32_t continue_like_keras(adamw_optimizer *optimizer, const char *steps, const char *part) {
    char label[64];
    for (int s = 0; s < STEPS; s++) {
        adamw_gradient entries[VARIABLES];
        for (int v = 0; v < VARIABLES; v++) {
            snprintf(label, sizeof label, "%s/%d/%d", part, s, v);
            read_array(steps, label, gradients[v], sizes[v]);
            entries[v] = (adamw_gradient){.variable = (size_t)v, .dtype = ADAMW_DTYPE_FLOAT32,
                                          .data = weights[v], .len = sizes[v], .dense = gradients[v]};
        }
        int64_t iterations = 0;
        CHECK(adamw_optimizer_apply_gradients(optimizer, entries, VARIABLES, &iterations));
        printf("  step %d: iterations %" PRId64 "\n", s + 1, iterations);
    }
    uint32_t worst = 0;
    for (int v = 0; v < VARIABLES; v++) {
        float keras[12];
        snprintf(label, sizeof label, "%s/%d", part, v);
        read_array(steps, label, keras, sizes[v]);
        for (size_t i = 0; i < sizes[v]; i++) {
            uint32_t d = ulp_distance(weights[v][i], keras[i]);
            if (d > worst) worst = d;
        }
    }
    return worst;
}

int main(int argc, char **argv) {
    const char *data = argc > 1 ? argv[1] : "tests/data/keras_files";
    const char *out_dir = argc > 2 ? argv[2] : "/tmp";
    char archive[512], steps[512], continued[512];
    snprintf(archive, sizeof archive, "%s/dense_amsgrad.keras", data);
    snprintf(steps, sizeof steps, "%s/dense_amsgrad.steps.txt", data);
    snprintf(continued, sizeof continued, "%s/continued.keras", out_dir);

    /* 1. Keras' archive: the config, the optimizer state, and the weights at the save. */
    adamw_optimizer *optimizer = optimizer_from_archive(archive);
    char label[64];
    for (int v = 0; v < VARIABLES; v++) {
        snprintf(label, sizeof label, "saved/%d", v);
        read_array(steps, label, weights[v], sizes[v]);
    }
    int64_t iterations = 0;
    CHECK(adamw_optimizer_iterations(optimizer, &iterations));
    printf("loaded %s: Keras' AdamW state after %" PRId64 " steps\n", archive, iterations);

    /* 2. Continue where Keras left off. */
    uint32_t from_keras = continue_like_keras(optimizer, steps, "continuation");
    printf("continued in C: %u ulp from Keras' own continuation of the same file\n", from_keras);

    /* 3. Back into Keras' format: a copy of the archive with this optimizer's state. */
    CHECK(adamw_optimizer_save_keras_file(optimizer, archive, continued));
    adamw_optimizer_free(optimizer);
    printf("wrote %s\n", continued);

    /* 4. From the written file: Keras loaded libadamw's file and took these steps. */
    adamw_optimizer *reloaded = optimizer_from_archive(continued);
    uint32_t from_written = continue_like_keras(reloaded, steps, "round_trip");
    printf("continued from the written file: %u ulp from Keras' continuation of libadamw's file\n", from_written);
    adamw_optimizer_free(reloaded);
    return from_keras == 0 && from_written == 0 ? 0 : 1;
}
