/* What a load does and refuses (docs/numerics.md §13, §15, §19), from C:
 * - the loss scale through every load function, for every pair of kinds (no loss scale, a fixed
 *   one, a dynamic one) saved and loaded, as tf-keras 2.15 does (measured by
 *   tools/keras_loss_scale_loads.py into tests/data/loss_scale_loads/keras.json): only a dynamic
 *   scale takes a dynamic scale's value and count from a checkpoint; anything else keeps its own;
 * - Keras' files never change a loss scale;
 * - a LossScaleOptimizer around another, and hostile loss-scale numbers, refused with one status
 *   and message by set_loss_scale, config JSON and Keras' archives;
 * - checkpoints that record another dtype or master copy for a variable, refused by name;
 * - checkpoints of format v2 (libadamw 0.1.0, tests/data/checkpoints) still load;
 * - the overlap error names both entries.
 * Every refusal is checked to change nothing. Built by tools/test-c.sh with ASan + UBSan. */
#include <math.h>

#include "expect.h"

enum kind { NONE, FIXED, DYNAMIC };
static const char *const kind_names[3] = {"none", "fixed", "dynamic"};
static const size_t shape3[1] = {3};

static adamw_optimizer *with_loss_scale(adamw_config cfg, enum kind kind, double scale, int64_t growth) {
    adamw_optimizer *opt = NULL;
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &opt), ADAMW_STATUS_OK);
    if (kind != NONE) {
        EXPECT_STATUS(adamw_optimizer_set_loss_scale(opt, kind == DYNAMIC, scale, growth), ADAMW_STATUS_OK);
    }
    return opt;
}

/* An optimizer over one float32 variable of 3, with a loss scale of `kind`. */
static adamw_optimizer *small(enum kind kind, double scale, int64_t growth, float *w) {
    adamw_config cfg = adamw_config_default();
    cfg.learning_rate = 0.01;
    adamw_optimizer *opt = with_loss_scale(cfg, kind, scale, growth);
    adamw_variable var = {"dense/kernel", ADAMW_DTYPE_FLOAT32, 1, shape3, w, 0, 0, 0};
    EXPECT_STATUS(adamw_optimizer_build(opt, &var, 1), ADAMW_STATUS_OK);
    return opt;
}

/* One step of `grad` times the current scale for variable 0 (of `len` elements). */
static void scaled_step(adamw_optimizer *opt, float *w, size_t len, const float *grad) {
    float scale = 1, scaled[12];
    adamw_optimizer_loss_scale(opt, &scale, NULL); /* stays 1 without a loss scale */
    for (size_t i = 0; i < len; i++) scaled[i] = grad[i] * scale;
    adamw_gradient entry = {.variable = 0, .dtype = ADAMW_DTYPE_FLOAT32, .data = w, .len = len, .dense = scaled};
    EXPECT_STATUS(adamw_optimizer_apply_gradients(opt, &entry, 1, NULL), ADAMW_STATUS_OK);
}

/* A dynamic scale moved away from its initial value (a skipped step halves it), so that "kept
   as it was" and "reset" differ. */
static void halve_scale(adamw_optimizer *opt, float *w, size_t len) {
    float inf[12];
    for (size_t i = 0; i < len; i++) inf[i] = INFINITY;
    scaled_step(opt, w, len, inf);
}

typedef struct {
    int has; /* the optimizer has a loss scale */
    float scale;
    int64_t counter;
} loss_scale_state;

static loss_scale_state loss_scale_of(const adamw_optimizer *opt) {
    loss_scale_state s = {0, 0, 0};
    s.has = adamw_optimizer_loss_scale(opt, &s.scale, &s.counter) == ADAMW_STATUS_OK;
    return s;
}

static int64_t iterations_of(const adamw_optimizer *opt) {
    int64_t it = -1;
    EXPECT_STATUS(adamw_optimizer_iterations(opt, &it), ADAMW_STATUS_OK);
    return it;
}

/* The checkpoint bytes of `opt` (free them). */
static uint8_t *checkpoint_of(const adamw_optimizer *opt, size_t *len) {
    EXPECT_STATUS(adamw_optimizer_save_own_variables(opt, NULL, 0, len), ADAMW_STATUS_OK);
    uint8_t *bytes = malloc(*len);
    EXPECT_STATUS(adamw_optimizer_save_own_variables(opt, bytes, *len, len), ADAMW_STATUS_OK);
    return bytes;
}

/* Optimizer variable 1 (m of variable 0) of two optimizers is the same: the slots were loaded. */
static int same_m(const adamw_optimizer *a, const adamw_optimizer *b, size_t len) {
    float ma[12], mb[12];
    EXPECT_STATUS(adamw_optimizer_get_variable(a, 1, ADAMW_DTYPE_FLOAT32, ma, len), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_get_variable(b, 1, ADAMW_DTYPE_FLOAT32, mb, len), ADAMW_STATUS_OK);
    return memcmp(ma, mb, len * sizeof(float)) == 0;
}

/* ---- the loss scale through libadamw's own checkpoints ---- */
enum load_function { OWN_VARIABLES, FILE_, SHARDS };
static const char *const load_names[3] = {"load_own_variables", "load_file", "load_shards"};

static adamw_status load_with(enum load_function how, adamw_optimizer *opt, const uint8_t *bytes, size_t len,
                              const char *path) {
    switch (how) {
        case OWN_VARIABLES: return adamw_optimizer_load_own_variables(opt, bytes, len);
        case FILE_: return adamw_optimizer_load_file(opt, path);
        default: return adamw_optimizer_load_shards(opt, &bytes, &len, 1);
    }
}

static void test_loss_scale_pairs(void) {
    for (int saved_kind = NONE; saved_kind <= DYNAMIC; saved_kind++) {
        /* Saved: three finite steps; a dynamic 512 growing every 2 finite steps is then 1024, count 1. */
        float ws[3] = {0.5f, -1.5f, 2.0f};
        adamw_optimizer *saved = small((enum kind)saved_kind, saved_kind == DYNAMIC ? 512 : 8, 2, ws);
        const float grad[3] = {0.25f, -0.5f, 1.0f};
        for (int step = 0; step < 3; step++) scaled_step(saved, ws, 3, grad);
        if (saved_kind == DYNAMIC) {
            loss_scale_state s = loss_scale_of(saved);
            EXPECT(s.scale == 1024.0f && s.counter == 1);
        }
        size_t len = 0;
        uint8_t *bytes = checkpoint_of(saved, &len);
        char path[256];
        snprintf(path, sizeof path, "target/c-tests/loss_scale_%s.ckpt", kind_names[saved_kind]);
        EXPECT_STATUS(adamw_optimizer_save_file(saved, path), ADAMW_STATUS_OK);
        for (int loaded_kind = NONE; loaded_kind <= DYNAMIC; loaded_kind++) {
            for (int how = OWN_VARIABLES; how <= SHARDS; how++) {
                float wl[3] = {1.0f, 1.0f, 1.0f};
                adamw_optimizer *loaded = small((enum kind)loaded_kind, 4, 1000, wl);
                if (loaded_kind == DYNAMIC) halve_scale(loaded, wl, 3);
                loss_scale_state before = loss_scale_of(loaded);
                adamw_status status = load_with((enum load_function)how, loaded, bytes, len, path);
                if (status != ADAMW_STATUS_OK) {
                    fprintf(stderr, "%s -> %s by %s:\n", kind_names[saved_kind], kind_names[loaded_kind],
                            load_names[how]);
                }
                EXPECT_STATUS(status, ADAMW_STATUS_OK);
                EXPECT(iterations_of(loaded) == 3 && same_m(saved, loaded, 3));
                loss_scale_state after = loss_scale_of(loaded);
                EXPECT(after.has == (loaded_kind != NONE));
                if (saved_kind == DYNAMIC && loaded_kind == DYNAMIC) {
                    EXPECT(after.scale == 1024.0f && after.counter == 1); /* Keras restores both */
                } else {
                    /* Keras keeps its own: a fixed 4, a dynamic one halved to 2. */
                    EXPECT(after.scale == before.scale && after.counter == before.counter);
                }
                if (loaded_kind == FIXED) {
                    /* get_config and the scale agree: the fixed 4 stays. */
                    char config[4096];
                    size_t n = 0;
                    EXPECT_STATUS(adamw_optimizer_get_config(loaded, config, sizeof config, &n), ADAMW_STATUS_OK);
                    EXPECT(strstr(config, "\"initial_scale\":4.0") != NULL && after.scale == 4.0f);
                }
                adamw_optimizer_free(loaded);
            }
        }
        free(bytes);
        adamw_optimizer_free(saved);
    }
}

/* ---- Keras' files hold no loss scale: a load never changes one ---- */
static const size_t keras_shapes[4][2] = {{4, 3}, {3, 0}, {3, 2}, {2, 0}};

static adamw_optimizer *keras_model(enum kind kind, uint8_t amsgrad, float *values[4]) {
    adamw_config cfg = adamw_config_default();
    cfg.amsgrad = amsgrad;
    adamw_optimizer *opt = with_loss_scale(cfg, kind, 4, 1000);
    static const char *const names[4] = {"hidden/kernel", "hidden/bias", "out/kernel", "out/bias"};
    adamw_variable vars[4];
    for (int i = 0; i < 4; i++) {
        adamw_variable v = {names[i], ADAMW_DTYPE_FLOAT32, keras_shapes[i][1] ? 2 : 1, keras_shapes[i], values[i], 0, 0, 0};
        vars[i] = v;
    }
    EXPECT_STATUS(adamw_optimizer_build(opt, vars, 4), ADAMW_STATUS_OK);
    return opt;
}

static void test_keras_files_keep_the_loss_scale(void) {
    /* A bare AdamW's files (with amsgrad) and a LossScaleOptimizer's, both saved after 3 steps. */
    static const char *const cases[2] = {"dense_amsgrad", "loss_scale_dense"};
    for (int c = 0; c < 2; c++) {
        for (int kind = NONE; kind <= DYNAMIC; kind++) {
            for (int how = 0; how < 3; how++) {
                float kernel[12] = {0}, bias[3] = {0}, out_kernel[6] = {0}, out_bias[2] = {0};
                float *values[4] = {kernel, bias, out_kernel, out_bias};
                adamw_optimizer *opt = keras_model((enum kind)kind, c == 0, values);
                if (kind == DYNAMIC) halve_scale(opt, kernel, 12);
                loss_scale_state before = loss_scale_of(opt);
                char path[256];
                static const char *const suffixes[3] = {".keras", ".weights.h5", ".store.safetensors"};
                snprintf(path, sizeof path, "tests/data/keras_files/%s%s", cases[c], suffixes[how]);
                if (how < 2) {
                    EXPECT_STATUS(adamw_optimizer_load_keras_file(opt, path), ADAMW_STATUS_OK);
                } else {
                    size_t len = 0;
                    uint8_t *store = read_whole(path, &len);
                    EXPECT_STATUS(adamw_optimizer_load_keras_store(opt, store, len), ADAMW_STATUS_OK);
                    free(store);
                }
                loss_scale_state after = loss_scale_of(opt);
                EXPECT(iterations_of(opt) == 3);
                EXPECT(after.has == before.has && after.scale == before.scale && after.counter == before.counter);
                adamw_optimizer_free(opt);
            }
        }
    }
}

/* ---- a LossScaleOptimizer around another, hostile numbers ---- */
static void test_nested_loss_scale_optimizer(void) {
    static const char *const nested =
        "{\"inner_optimizer\": {\"class_name\": \"LossScaleOptimizerV3\", \"config\": {\"inner_optimizer\": "
        "{\"class_name\": \"AdamW\", \"config\": {}}, \"dynamic\": true}}, \"dynamic\": true}";
    static const char *const nested_bare =
        "{\"inner_optimizer\": {\"inner_optimizer\": {\"class_name\": \"AdamW\", \"config\": {}}}, \"dynamic\": false, "
        "\"initial_scale\": 8}";
    static const char *const keras_sentence = "LossScaleOptimizer cannot wrap another LossScaleOptimizer";
    adamw_optimizer *opt = NULL;
    EXPECT_STATUS(adamw_optimizer_from_config_json(nested, strlen(nested), &opt), ADAMW_STATUS_INVALID_CONFIG);
    EXPECT_MESSAGE(keras_sentence);
    EXPECT(opt == NULL);
    EXPECT_STATUS(adamw_optimizer_from_config_json(nested_bare, strlen(nested_bare), &opt), ADAMW_STATUS_INVALID_CONFIG);
    EXPECT_MESSAGE(keras_sentence);
    size_t len = 0;
    const char *archive = "tests/data/loss_scale_loads/nested.keras";
    EXPECT_STATUS(adamw_keras_file_optimizer_config(archive, NULL, 0, &len), ADAMW_STATUS_INVALID_CONFIG);
    EXPECT_MESSAGE(keras_sentence);
    /* Its state is not loaded either: the archive's optimizer is not one libadamw can be. */
    float kernel[12] = {0}, bias[3] = {0}, out_kernel[6] = {0}, out_bias[2] = {0};
    float *values[4] = {kernel, bias, out_kernel, out_bias};
    adamw_optimizer *model = keras_model(DYNAMIC, 0, values);
    EXPECT_REJECTED(model, adamw_optimizer_load_keras_file(model, archive), ADAMW_STATUS_INVALID_CONFIG);
    EXPECT_MESSAGE(keras_sentence);
    EXPECT_MESSAGE("the load was refused and nothing changed");
    adamw_optimizer_free(model);
}

typedef struct {
    const char *name; /* the archive in tests/data/loss_scale_loads */
    uint8_t dynamic;
    double initial_scale;
    int64_t growth_steps;
    const char *json_scale; /* as the config JSON writes initial_scale */
    const char *reason;     /* in the message */
} hostile_case;

static void test_hostile_loss_scales(void) {
    const hostile_case cases[] = {
        {"initial_scale_0", 1, 0.0, 2, "0.0", "it is not positive"},
        {"initial_scale_negative", 1, -4.0, 2, "-4.0", "it is not positive"},
        {"initial_scale_nan", 1, NAN, 2, "\"NaN\"", "it is NaN"},
        {"initial_scale_infinity", 1, INFINITY, 2, "\"Infinity\"", "beyond the largest finite float32"},
        {"initial_scale_2e200", 1, 1.6069380442589903e+60, 2, "1.6069380442589903e+60",
         "beyond the largest finite float32"},
        {"dynamic_growth_steps_0", 1, 64.0, 0, "64.0", "dynamic_growth_steps must be at least 1, got 0"},
        {"dynamic_growth_steps_negative", 1, 64.0, -3, "64.0", "dynamic_growth_steps must be at least 1, got -3"},
        {NULL, 0, 0.0, 0, "0.0", "it is not positive"},       /* a fixed scale of 0 */
        {NULL, 0, 1e-45, 0, "1e-45", "float32 cannot hold it"}, /* a float32 subnormal: 1 / scale overflows */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const hostile_case *c = &cases[i];
        adamw_config cfg = adamw_config_default();
        adamw_optimizer *opt = NULL;
        EXPECT_STATUS(adamw_optimizer_new(&cfg, &opt), ADAMW_STATUS_OK);
        EXPECT_REJECTED(opt, adamw_optimizer_set_loss_scale(opt, c->dynamic, c->initial_scale, c->growth_steps),
                        ADAMW_STATUS_INVALID_ARGUMENT);
        EXPECT_MESSAGE(c->reason);
        char from_setter[512], from_json[512], from_archive[512];
        adamw_last_error(from_setter, sizeof from_setter, NULL);
        /* The same status and message from a LossScaleOptimizer's config JSON. */
        char json[512];
        if (c->dynamic) {
            snprintf(json, sizeof json,
                     "{\"inner_optimizer\": {\"class_name\": \"AdamW\", \"config\": {}}, \"dynamic\": true, "
                     "\"initial_scale\": %s, \"dynamic_growth_steps\": %lld}",
                     c->json_scale, (long long)c->growth_steps);
        } else {
            snprintf(json, sizeof json,
                     "{\"inner_optimizer\": {\"class_name\": \"AdamW\", \"config\": {}}, \"dynamic\": false, "
                     "\"initial_scale\": %s}",
                     c->json_scale);
        }
        adamw_optimizer *from_config = NULL;
        EXPECT_STATUS(adamw_optimizer_from_config_json(json, strlen(json), &from_config), ADAMW_STATUS_INVALID_ARGUMENT);
        adamw_last_error(from_json, sizeof from_json, NULL);
        EXPECT(strcmp(from_setter, from_json) == 0);
        /* And from a Keras archive whose LossScaleOptimizer has the number. */
        if (c->name != NULL) {
            char path[256];
            size_t len = 0;
            snprintf(path, sizeof path, "tests/data/loss_scale_loads/%s.keras", c->name);
            EXPECT_STATUS(adamw_keras_file_optimizer_config(path, NULL, 0, &len), ADAMW_STATUS_INVALID_ARGUMENT);
            adamw_last_error(from_archive, sizeof from_archive, NULL);
            EXPECT(strcmp(from_setter, from_archive) == 0);
        }
        adamw_optimizer_free(opt);
    }
    /* The boundaries are accepted: the largest finite float32, a growth of 1, the smallest normal. */
    adamw_config cfg = adamw_config_default();
    adamw_optimizer *opt = NULL;
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &opt), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_set_loss_scale(opt, 1, 3.4028234663852886e+38, 1), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_set_loss_scale(opt, 0, 1.1754943508222875e-38, 0), ADAMW_STATUS_OK);
    adamw_optimizer_free(opt);
}

/* ---- checkpoints know their variables' dtypes and master copies ---- */
static adamw_optimizer *sixteen_bit(uint32_t dtype, uint8_t masters, uint16_t *w16, float *w32) {
    static const size_t s4[1] = {4}, s2[1] = {2};
    adamw_config cfg = adamw_config_default();
    adamw_optimizer *opt = NULL;
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &opt), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_set_master_weights(opt, masters), ADAMW_STATUS_OK);
    adamw_variable vars[2] = {
        {"embedding", dtype, 1, s4, w16, 0, 0, 0},
        {"bias", ADAMW_DTYPE_FLOAT32, 1, s2, w32, 0, 0, 0},
    };
    EXPECT_STATUS(adamw_optimizer_build(opt, vars, 2), ADAMW_STATUS_OK);
    return opt;
}

static void test_checkpoint_dtypes(void) {
    uint16_t w16[4] = {0x3c00, 0x3c00, 0x3c00, 0x3c00};
    float w32[2] = {1, 2};
    adamw_optimizer *bf16 = sixteen_bit(ADAMW_DTYPE_BFLOAT16, 1, w16, w32);
    adamw_optimizer *f16 = sixteen_bit(ADAMW_DTYPE_FLOAT16, 1, w16, w32);
    size_t bf16_len = 0, f16_len = 0;
    uint8_t *bf16_bytes = checkpoint_of(bf16, &bf16_len), *f16_bytes = checkpoint_of(f16, &f16_len);
    EXPECT_STATUS(adamw_optimizer_save_file(bf16, "target/c-tests/bf16_masters.ckpt"), ADAMW_STATUS_OK);
    /* bfloat16 with masters into float16 with masters: the same float32 state, refused by name. */
    EXPECT_REJECTED(f16, adamw_optimizer_load_own_variables(f16, bf16_bytes, bf16_len), ADAMW_STATUS_CHECKPOINT_MISMATCH);
    EXPECT_MESSAGE("variable 0 (`embedding`) is float16 with a float32 master copy here");
    EXPECT_MESSAGE("was bfloat16 with a float32 master copy");
    EXPECT_MESSAGE("the load was refused and nothing changed");
    EXPECT_REJECTED(f16, adamw_optimizer_load_file(f16, "target/c-tests/bf16_masters.ckpt"), ADAMW_STATUS_CHECKPOINT_MISMATCH);
    EXPECT_MESSAGE("variable 0 (`embedding`) is float16 with a float32 master copy here");
    const uint8_t *shards[1] = {bf16_bytes};
    EXPECT_REJECTED(f16, adamw_optimizer_load_shards(f16, shards, &bf16_len, 1), ADAMW_STATUS_CHECKPOINT_MISMATCH);
    EXPECT_MESSAGE("variable 0 (`embedding`) is float16 with a float32 master copy here");
    /* The converse. */
    EXPECT_REJECTED(bf16, adamw_optimizer_load_own_variables(bf16, f16_bytes, f16_len), ADAMW_STATUS_CHECKPOINT_MISMATCH);
    EXPECT_MESSAGE("variable 0 (`embedding`) is bfloat16 with a float32 master copy here, but the checkpoint's variable 0 was float16 with a float32 master copy");
    /* Without masters into with: named too (before the count of tensors would say it). */
    adamw_optimizer *plain = sixteen_bit(ADAMW_DTYPE_BFLOAT16, 0, w16, w32);
    size_t plain_len = 0;
    uint8_t *plain_bytes = checkpoint_of(plain, &plain_len);
    EXPECT_REJECTED(bf16, adamw_optimizer_load_own_variables(bf16, plain_bytes, plain_len), ADAMW_STATUS_CHECKPOINT_MISMATCH);
    EXPECT_MESSAGE("variable 0 (`embedding`) is bfloat16 with a float32 master copy here, but the checkpoint's variable 0 was bfloat16");
    /* Its own checkpoint loads. */
    EXPECT_STATUS(adamw_optimizer_load_own_variables(bf16, bf16_bytes, bf16_len), ADAMW_STATUS_OK);
    free(bf16_bytes);
    free(f16_bytes);
    free(plain_bytes);
    adamw_optimizer_free(bf16);
    adamw_optimizer_free(f16);
    adamw_optimizer_free(plain);
}

/* ---- format v2: written by libadamw 0.1.0 (tests/data/checkpoints/make_v2.c), still read ---- */
static void test_format_v2(void) {
    /* A fixed scale of 8 in a v2 checkpoint: a fixed scale keeps its own 4. A v2 checkpoint does
       not say whether its scale was fixed, so a dynamic scale takes it (as it takes a dynamic one). */
    const char *fixed8 = "tests/data/checkpoints/v2_fixed_scale_8.safetensors";
    const char *dynamic512 = "tests/data/checkpoints/v2_dynamic_scale_512.safetensors";
    for (int kind = NONE; kind <= DYNAMIC; kind++) {
        for (int file = 0; file < 2; file++) {
            float w[3] = {0, 0, 0};
            adamw_optimizer *opt = small((enum kind)kind, 4, 1000, w);
            loss_scale_state before = loss_scale_of(opt);
            EXPECT_STATUS(adamw_optimizer_load_file(opt, file == 0 ? fixed8 : dynamic512), ADAMW_STATUS_OK);
            EXPECT(iterations_of(opt) == 2);
            loss_scale_state after = loss_scale_of(opt);
            if (kind == DYNAMIC) {
                EXPECT(file == 0 ? (after.scale == 8.0f && after.counter == 0) : (after.scale == 512.0f && after.counter == 2));
            } else {
                EXPECT(after.has == before.has && after.scale == before.scale && after.counter == before.counter);
            }
            adamw_optimizer_free(opt);
        }
    }
    /* bfloat16 with masters: v2 records no dtypes, so the tensors alone are checked. */
    uint16_t w16[4] = {0};
    float w32[2] = {0};
    adamw_optimizer *bf16 = sixteen_bit(ADAMW_DTYPE_BFLOAT16, 1, w16, w32);
    EXPECT_STATUS(adamw_optimizer_load_file(bf16, "tests/data/checkpoints/v2_bfloat16_masters.safetensors"),
                  ADAMW_STATUS_OK);
    EXPECT(iterations_of(bf16) == 2);
    /* Resaved, it is v3 and holds the same state. */
    size_t len = 0;
    uint8_t *bytes = checkpoint_of(bf16, &len);
    adamw_optimizer *again = sixteen_bit(ADAMW_DTYPE_BFLOAT16, 1, w16, w32);
    EXPECT_STATUS(adamw_optimizer_load_own_variables(again, bytes, len), ADAMW_STATUS_OK);
    snapshot a = take(bf16), b = take(again);
    EXPECT(same(a, b));
    release(a);
    release(b);
    free(bytes);
    adamw_optimizer_free(bf16);
    adamw_optimizer_free(again);
}

/* ---- messages that name what is involved ---- */
static void test_overlap_names_both_entries(void) {
    static const size_t s3[1] = {3};
    float a[3] = {1, 2, 3}, g[3] = {0.5f, 0.5f, 0.5f}, shared[4] = {0.1f, 0.2f, 0.3f, 0.4f};
    adamw_config cfg = adamw_config_default();
    adamw_optimizer *opt = NULL;
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &opt), ADAMW_STATUS_OK);
    adamw_variable vars[2] = {{"layer/a", ADAMW_DTYPE_FLOAT32, 1, s3, NULL, 0, 0, 0},
                              {"layer/b", ADAMW_DTYPE_FLOAT32, 1, s3, NULL, 0, 0, 0}};
    EXPECT_STATUS(adamw_optimizer_build(opt, vars, 2), ADAMW_STATUS_OK);
    /* Variable 1's values, which the step writes, share two floats with variable 0's gradient. */
    adamw_gradient entries[2] = {
        {.variable = 0, .dtype = ADAMW_DTYPE_FLOAT32, .data = a, .len = 3, .dense = shared},
        {.variable = 1, .dtype = ADAMW_DTYPE_FLOAT32, .data = shared + 1, .len = 3, .dense = g},
    };
    float a_before[3], shared_before[4];
    memcpy(a_before, a, sizeof a);
    memcpy(shared_before, shared, sizeof shared);
    EXPECT_REJECTED(opt, adamw_optimizer_apply_gradients(opt, entries, 2, NULL), ADAMW_STATUS_INVALID_ARGUMENT);
    EXPECT_MESSAGE("entries[0].dense (variable 0, `layer/a`) overlaps entries[1].data (variable 1, `layer/b`)");
    EXPECT(memcmp(a, a_before, sizeof a) == 0 && memcmp(shared, shared_before, sizeof shared) == 0);
    adamw_optimizer_free(opt);
}

int main(void) {
    test_loss_scale_pairs();
    test_keras_files_keep_the_loss_scale();
    test_nested_loss_scale_optimizer();
    test_hostile_loss_scales();
    test_checkpoint_dtypes();
    test_format_v2();
    test_overlap_names_both_entries();
    return report();
}
