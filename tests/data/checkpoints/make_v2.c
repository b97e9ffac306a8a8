/* Wrote the format-v2 checkpoints beside this file with libadamw 0.1.0 (commit c37a696, the last
 * release to write v2), so that tests/checkpoint_files.rs can check that later releases still
 * load them:
 *   cc -std=c11 -Iinclude tests/data/checkpoints/make_v2.c target/release/libadamw.a -lm -ldl -lpthread
 *   ./a.out tests/data/checkpoints
 * Each optimizer takes two steps of the gradients below from the values below. */
#include <adamw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(call)                                                  \
    do {                                                             \
        if ((call) != ADAMW_STATUS_OK) {                             \
            char message[512];                                       \
            adamw_last_error(message, sizeof message, NULL);         \
            fprintf(stderr, "%s: %s\n", #call, message);             \
            exit(1);                                                 \
        }                                                            \
    } while (0)

static void save(adamw_optimizer *opt, const char *dir, const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    CHECK(adamw_optimizer_save_file(opt, path));
    adamw_optimizer_free(opt);
}

/* float32 [3], with a loss scale (dynamic or fixed) of `scale`. */
static void float32_with_loss_scale(const char *dir, const char *name, uint8_t dynamic, double scale) {
    const size_t shape[1] = {3};
    float w[3] = {0.5f, -1.5f, 2.0f};
    adamw_config config = adamw_config_default();
    config.learning_rate = 0.01;
    adamw_optimizer *opt = NULL;
    CHECK(adamw_optimizer_new(&config, &opt));
    CHECK(adamw_optimizer_set_loss_scale(opt, dynamic, scale, dynamic ? 1000 : -1));
    adamw_variable var = {.name = "dense/kernel", .dtype = ADAMW_DTYPE_FLOAT32, .ndim = 1, .shape = shape, .data = w};
    CHECK(adamw_optimizer_build(opt, &var, 1));
    for (int step = 0; step < 2; step++) {
        float grad[3] = {(float)(0.25 * scale), (float)(-0.5 * scale), (float)(step * scale)};
        adamw_gradient entry = {.variable = 0, .dtype = ADAMW_DTYPE_FLOAT32, .data = w, .len = 3, .dense = grad};
        CHECK(adamw_optimizer_apply_gradients(opt, &entry, 1, NULL));
    }
    save(opt, dir, name);
}

/* bfloat16 [4] with float32 master weights, and a float32 [2]. */
static void bfloat16_with_masters(const char *dir, const char *name) {
    const size_t shape16[1] = {4}, shape32[1] = {2};
    uint16_t w16[4] = {0x3f00, 0xbfc0, 0x4000, 0x3e80}; /* 0.5, -1.5, 2, 0.25 */
    float w32[2] = {1.0f, -2.0f};
    adamw_config config = adamw_config_default();
    config.learning_rate = 0.01;
    adamw_optimizer *opt = NULL;
    CHECK(adamw_optimizer_new(&config, &opt));
    CHECK(adamw_optimizer_set_master_weights(opt, 1));
    adamw_variable vars[2] = {
        {.name = "embedding", .dtype = ADAMW_DTYPE_BFLOAT16, .ndim = 1, .shape = shape16, .data = w16},
        {.name = "bias", .dtype = ADAMW_DTYPE_FLOAT32, .ndim = 1, .shape = shape32, .data = w32},
    };
    CHECK(adamw_optimizer_build(opt, vars, 2));
    for (int step = 0; step < 2; step++) {
        uint16_t g16[4] = {0x3e80, 0xbf00, 0x3f80, (uint16_t)(step ? 0x3f00 : 0x0000)};
        float g32[2] = {0.125f, -0.75f};
        adamw_gradient entries[2] = {
            {.variable = 0, .dtype = ADAMW_DTYPE_BFLOAT16, .data = w16, .len = 4, .dense = g16},
            {.variable = 1, .dtype = ADAMW_DTYPE_FLOAT32, .data = w32, .len = 2, .dense = g32},
        };
        CHECK(adamw_optimizer_apply_gradients(opt, entries, 2, NULL));
    }
    save(opt, dir, name);
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : ".";
    float32_with_loss_scale(dir, "v2_dynamic_scale_512.safetensors", 1, 512.0);
    float32_with_loss_scale(dir, "v2_fixed_scale_8.safetensors", 0, 8.0);
    bfloat16_with_masters(dir, "v2_bfloat16_masters.safetensors");
    puts("wrote three v2 checkpoints");
    return 0;
}
