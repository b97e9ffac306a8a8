/* Calls every function of the C ABI with good and bad input. For each bad input it checks the
 * exact status and that the optimizer (variables, iterations, config) and the caller's buffers
 * are unchanged. Built with -Wall -Wextra -Wpedantic -Werror and sanitizers by tools/test-c.sh. */
#include <math.h>

#include "expect.h"

/* ---- a small model: kernel [2,3] and bias [3] ---- */
static const size_t kernel_shape[2] = {2, 3};
static const size_t bias_shape[1] = {3};

static adamw_optimizer *make(adamw_config cfg, float *kernel, float *bias) {
    adamw_optimizer *opt = NULL;
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &opt), ADAMW_STATUS_OK);
    adamw_variable vars[2] = {
        {"dense/kernel", ADAMW_DTYPE_FLOAT32, 2, kernel_shape, kernel, 0, 0, 0},
        {"dense/bias", ADAMW_DTYPE_FLOAT32, 1, bias_shape, bias, 0, 0, 0},
    };
    EXPECT_STATUS(adamw_optimizer_build(opt, vars, 2), ADAMW_STATUS_OK);
    return opt;
}

static adamw_gradient dense_entry(size_t index, float *data, size_t len, const float *grad) {
    adamw_gradient g = {0};
    g.variable = index;
    g.dtype = ADAMW_DTYPE_FLOAT32;
    g.data = data;
    g.len = len;
    g.dense = grad;
    return g;
}

static void test_versions_and_errors(void) {
    EXPECT(adamw_abi_version() == ADAMW_ABI_VERSION);
    char expected[32];
    snprintf(expected, sizeof expected, "%d.%d.%d", ADAMW_VERSION_MAJOR, ADAMW_VERSION_MINOR, ADAMW_VERSION_PATCH);
    EXPECT(strcmp(adamw_version(), expected) == 0);
    EXPECT(strcmp(adamw_status_name(ADAMW_STATUS_SHAPE_MISMATCH), "ADAMW_STATUS_SHAPE_MISMATCH") == 0);
    EXPECT(strcmp(adamw_status_name(9999), "ADAMW_STATUS_UNKNOWN") == 0);

    /* Produce an error, then read it with a size query, a short buffer and a full buffer. */
    EXPECT_STATUS(adamw_optimizer_new(NULL, NULL), ADAMW_STATUS_NULL_ARGUMENT);
    size_t len = 0;
    EXPECT_STATUS(adamw_last_error(NULL, 0, &len), ADAMW_STATUS_OK);
    EXPECT(len > 0);
    char small[4];
    EXPECT_STATUS(adamw_last_error(small, sizeof small, &len), ADAMW_STATUS_BUFFER_TOO_SMALL);
    EXPECT(strlen(small) == 3);
    char full[256];
    EXPECT_STATUS(adamw_last_error(full, sizeof full, &len), ADAMW_STATUS_OK);
    EXPECT(strcmp(full, "`config` must not be NULL") == 0);
    len = 12345;
    EXPECT_STATUS(adamw_last_error(NULL, 10, &len), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT(len == 12345); /* not written on failure */
}

static void test_create(void) {
    adamw_config cfg = adamw_config_default();
    EXPECT(cfg.learning_rate == 0.001 && cfg.weight_decay == 0.004 && cfg.beta_1 == 0.9 && cfg.beta_2 == 0.999);
    EXPECT(cfg.epsilon == 1e-7 && cfg.ema_momentum == 0.99 && cfg.amsgrad == 0 && cfg.name == NULL);
    adamw_optimizer *opt = (adamw_optimizer *)0x1;
    EXPECT_STATUS(adamw_optimizer_new(&cfg, NULL), ADAMW_STATUS_NULL_ARGUMENT);

    adamw_config bad = cfg;
    bad.amsgrad = 2;
    EXPECT_STATUS(adamw_optimizer_new(&bad, &opt), ADAMW_STATUS_INVALID_ARGUMENT);
    EXPECT(opt == (adamw_optimizer *)0x1); /* out-parameter untouched on failure */
    bad = cfg;
    bad.clipnorm = 1.0;
    bad.global_clipnorm = 1.0;
    EXPECT_STATUS(adamw_optimizer_new(&bad, &opt), ADAMW_STATUS_INVALID_ARGUMENT);
    char msg[256];
    size_t len;
    adamw_last_error(msg, sizeof msg, &len);
    EXPECT(strcmp(msg, "At most one of `clipnorm` and `global_clipnorm` can be set. Received: clipnorm=1.0, global_clipnorm=1.0.") == 0);
    bad = cfg;
    bad.use_ema = 1;
    bad.ema_momentum = 1.5;
    EXPECT_STATUS(adamw_optimizer_new(&bad, &opt), ADAMW_STATUS_INVALID_ARGUMENT);
    bad.ema_momentum = NAN; /* Keras' range check lets NaN through, and so do we */
    EXPECT_STATUS(adamw_optimizer_new(&bad, &opt), ADAMW_STATUS_OK);
    adamw_optimizer_free(opt);
    bad = cfg;
    bad.use_ema = 1;
    bad.ema_overwrite_frequency = -1;
    EXPECT_STATUS(adamw_optimizer_new(&bad, &opt), ADAMW_STATUS_INVALID_ARGUMENT);
    bad = cfg;
    bad.name = "\xff\xfe";
    EXPECT_STATUS(adamw_optimizer_new(&bad, &opt), ADAMW_STATUS_INVALID_ARGUMENT);

    /* schedules */
    adamw_schedule s;
    EXPECT_STATUS(adamw_schedule_init(0, &s), ADAMW_STATUS_INVALID_ARGUMENT);
    EXPECT_STATUS(adamw_schedule_init(7, &s), ADAMW_STATUS_INVALID_ARGUMENT);
    EXPECT_STATUS(adamw_schedule_init(ADAMW_SCHEDULE_KIND_COSINE_DECAY, NULL), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_STATUS(adamw_schedule_init(ADAMW_SCHEDULE_KIND_PIECEWISE_CONSTANT_DECAY, &s), ADAMW_STATUS_OK);
    s.num_boundaries = 2; /* but no arrays */
    bad = cfg;
    bad.learning_rate_schedule = &s;
    EXPECT_STATUS(adamw_optimizer_new(&bad, &opt), ADAMW_STATUS_NULL_ARGUMENT);
    s.kind = 42;
    EXPECT_STATUS(adamw_optimizer_new(&bad, &opt), ADAMW_STATUS_INVALID_ARGUMENT);
    EXPECT_STATUS(adamw_schedule_init(ADAMW_SCHEDULE_KIND_EXPONENTIAL_DECAY, &s), ADAMW_STATUS_OK);
    s.initial_learning_rate = 0.1;
    s.decay_steps = 3;
    s.decay_rate = 0.5;
    s.staircase = 1;
    EXPECT_STATUS(adamw_optimizer_new(&bad, &opt), ADAMW_STATUS_OK);
    float lr = 0;
    EXPECT_STATUS(adamw_optimizer_current_learning_rate(opt, &lr), ADAMW_STATUS_OK);
    EXPECT(lr == 0.1f);
    EXPECT_STATUS(adamw_optimizer_set_learning_rate(opt, 0.5), ADAMW_STATUS_INVALID_ARGUMENT);
    size_t n = 0;
    EXPECT_STATUS(adamw_optimizer_get_config(opt, NULL, 0, &n), ADAMW_STATUS_OK);
    char *json = malloc(n + 1);
    EXPECT_STATUS(adamw_optimizer_get_config(opt, json, n + 1, &n), ADAMW_STATUS_OK);
    EXPECT(strstr(json, "\"class_name\":\"ExponentialDecay\"") != NULL);
    EXPECT(strstr(json, "\"decay_steps\":3,") != NULL);
    free(json);
    adamw_optimizer_free(opt);

    /* JSON */
    const char *good = "{\"learning_rate\": 0.01, \"amsgrad\": true}";
    EXPECT_STATUS(adamw_optimizer_from_config_json(good, strlen(good), NULL), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_from_config_json(NULL, 5, &opt), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_from_config_json("{", 1, &opt), ADAMW_STATUS_INVALID_CONFIG);
    EXPECT_STATUS(adamw_optimizer_from_config_json("{\"foo\": 1}", 10, &opt), ADAMW_STATUS_INVALID_CONFIG);
    const char *wd_none = "{\"weight_decay\": null}";
    EXPECT_STATUS(adamw_optimizer_from_config_json(wd_none, strlen(wd_none), &opt), ADAMW_STATUS_INVALID_ARGUMENT);
    const char *bad_sched = "{\"learning_rate\": {\"class_name\": \"Nope\", \"config\": {}}}";
    EXPECT_STATUS(adamw_optimizer_from_config_json(bad_sched, strlen(bad_sched), &opt), ADAMW_STATUS_INVALID_CONFIG);
    EXPECT_STATUS(adamw_optimizer_from_config_json(good, strlen(good), &opt), ADAMW_STATUS_OK);

    /* get_config round trip: from_config(get_config()) has the same config */
    EXPECT_STATUS(adamw_optimizer_get_config(opt, NULL, 0, NULL), ADAMW_STATUS_NULL_ARGUMENT);
    n = 777;
    EXPECT_STATUS(adamw_optimizer_get_config(opt, NULL, 5, &n), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT(n == 777);
    EXPECT_STATUS(adamw_optimizer_get_config(opt, NULL, 0, &n), ADAMW_STATUS_OK);
    char tiny[8];
    size_t reported = 0;
    EXPECT_STATUS(adamw_optimizer_get_config(opt, tiny, sizeof tiny, &reported), ADAMW_STATUS_BUFFER_TOO_SMALL);
    EXPECT(reported == n);
    char *first = malloc(n + 1);
    EXPECT_STATUS(adamw_optimizer_get_config(opt, first, n + 1, &n), ADAMW_STATUS_OK);
    adamw_optimizer *copy = NULL;
    EXPECT_STATUS(adamw_optimizer_from_config_json(first, n, &copy), ADAMW_STATUS_OK);
    char *second = malloc(n + 1);
    EXPECT_STATUS(adamw_optimizer_get_config(copy, second, n + 1, &n), ADAMW_STATUS_OK);
    EXPECT(strcmp(first, second) == 0);
    free(first);
    free(second);
    adamw_optimizer_free(copy);
    adamw_optimizer_free(opt);
    adamw_optimizer_free(NULL); /* no-op */
}

static void test_null_handle(void) {
    int64_t it;
    float lr;
    size_t n;
    adamw_variable_info info;
    EXPECT_STATUS(adamw_optimizer_iterations(NULL, &it), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_set_iterations(NULL, 3), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_current_learning_rate(NULL, &lr), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_set_learning_rate(NULL, 0.1), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_build(NULL, NULL, 0), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_apply_gradients(NULL, NULL, 0, NULL), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_minimize(NULL, NULL, 0, NULL, NULL, NULL), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_finalize_variable_values(NULL, NULL, 0), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_num_variables(NULL, &n), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_variable_info(NULL, 0, &info), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_variable_name(NULL, 0, NULL, 0, &n), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_get_variable(NULL, 0, ADAMW_DTYPE_INT64, &it, 1), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_set_weights(NULL, NULL, 0), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_save_own_variables(NULL, NULL, 0, &n), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_load_own_variables(NULL, NULL, 0), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_get_config(NULL, NULL, 0, &n), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_exclude_from_weight_decay(NULL, NULL, 0, NULL, 0), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_reserve_sparse(NULL, 10), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_set_threads(NULL, 1), ADAMW_STATUS_NULL_ARGUMENT);
    /* A pointer that is not a handle is recognized (most of the time) rather than trusted. */
    uint64_t not_a_handle[8] = {0};
    EXPECT_STATUS(adamw_optimizer_iterations((adamw_optimizer *)not_a_handle, &it), ADAMW_STATUS_INVALID_ARGUMENT);
}

static void test_build(void) {
    adamw_config cfg = adamw_config_default();
    adamw_optimizer *opt = NULL;
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &opt), ADAMW_STATUS_OK);
    float kernel[6] = {0};
    float grad[6] = {1, 1, 1, 1, 1, 1};
    adamw_gradient g = dense_entry(0, kernel, 6, grad);
    EXPECT_REJECTED(opt, adamw_optimizer_apply_gradients(opt, &g, 1, NULL), ADAMW_STATUS_NOT_BUILT);
    EXPECT_STATUS(adamw_optimizer_set_iterations(opt, 5), ADAMW_STATUS_OK);

    size_t huge_shape[2] = {SIZE_MAX / 2, 3};
    size_t many_dims[40] = {0};
    adamw_variable v = {"w", ADAMW_DTYPE_FLOAT32, 1, bias_shape, NULL, 0, 0, 0};
    EXPECT_REJECTED(opt, adamw_optimizer_build(opt, NULL, 1), ADAMW_STATUS_NULL_ARGUMENT);
    v.dtype = 9;
    EXPECT_REJECTED(opt, adamw_optimizer_build(opt, &v, 1), ADAMW_STATUS_INVALID_ARGUMENT);
    v.dtype = ADAMW_DTYPE_INT64;
    EXPECT_REJECTED(opt, adamw_optimizer_build(opt, &v, 1), ADAMW_STATUS_DTYPE_MISMATCH);
    v.dtype = ADAMW_DTYPE_FLOAT32;
    v.name = NULL;
    EXPECT_REJECTED(opt, adamw_optimizer_build(opt, &v, 1), ADAMW_STATUS_NULL_ARGUMENT);
    v.name = "w";
    v.ndim = 40;
    v.shape = many_dims;
    EXPECT_REJECTED(opt, adamw_optimizer_build(opt, &v, 1), ADAMW_STATUS_INVALID_ARGUMENT);
    v.ndim = 2;
    v.shape = huge_shape;
    EXPECT_REJECTED(opt, adamw_optimizer_build(opt, &v, 1), ADAMW_STATUS_OUT_OF_MEMORY);
    /* Resource limits: a shape whose element count fits in size_t but not in memory (2^40
     * floats, 4 TiB) fails the allocation cleanly instead of aborting; a name that is not UTF-8. */
    size_t four_tebibytes[2] = {(size_t)1 << 20, (size_t)1 << 20};
    v.ndim = 2;
    v.shape = four_tebibytes;
    EXPECT_REJECTED(opt, adamw_optimizer_build(opt, &v, 1), ADAMW_STATUS_OUT_OF_MEMORY);
    v.shape = huge_shape;
    v.name = "\xc3\x28"; /* an invalid UTF-8 sequence */
    v.ndim = 1;
    v.shape = bias_shape;
    EXPECT_REJECTED(opt, adamw_optimizer_build(opt, &v, 1), ADAMW_STATUS_INVALID_ARGUMENT);
    v.name = "w";
    v.ndim = 2;
    v.shape = huge_shape;
    size_t empty_but_huge_rows[3] = {0, SIZE_MAX / 2, 3}; /* 0 elements, but rows overflow */
    v.ndim = 3;
    v.shape = empty_but_huge_rows;
    EXPECT_REJECTED(opt, adamw_optimizer_build(opt, &v, 1), ADAMW_STATUS_OUT_OF_MEMORY);
    v.ndim = 1;
    v.shape = NULL;
    EXPECT_REJECTED(opt, adamw_optimizer_build(opt, &v, 1), ADAMW_STATUS_NULL_ARGUMENT);
    v.shape = bias_shape;

    const char *bad_regex[1] = {"(unclosed"};
    EXPECT_REJECTED(opt, adamw_optimizer_exclude_from_weight_decay(opt, NULL, 0, bad_regex, 1), ADAMW_STATUS_INVALID_ARGUMENT);
    size_t beyond[1] = {4};
    EXPECT_STATUS(adamw_optimizer_exclude_from_weight_decay(opt, beyond, 1, NULL, 0), ADAMW_STATUS_OK);
    EXPECT_REJECTED(opt, adamw_optimizer_build(opt, &v, 1), ADAMW_STATUS_UNKNOWN_VARIABLE);
    const char *patterns[1] = {"^w:0$"};
    EXPECT_STATUS(adamw_optimizer_exclude_from_weight_decay(opt, NULL, 0, patterns, 1), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_build(opt, &v, 1), ADAMW_STATUS_OK);
    EXPECT_REJECTED(opt, adamw_optimizer_build(opt, &v, 1), ADAMW_STATUS_ALREADY_BUILT);
    EXPECT_REJECTED(opt, adamw_optimizer_set_iterations(opt, 1), ADAMW_STATUS_ALREADY_BUILT);
    EXPECT_REJECTED(opt, adamw_optimizer_exclude_from_weight_decay(opt, NULL, 0, patterns, 1), ADAMW_STATUS_ALREADY_BUILT);

    /* The preset counter continues, and the excluded variable does not decay: with a zero
     * gradient, Adam moves nothing and only decay could change the values. */
    float w[3] = {1, 2, 3}, zero[3] = {0};
    adamw_gradient gw = dense_entry(0, w, 3, zero);
    int64_t it = 0;
    EXPECT_STATUS(adamw_optimizer_apply_gradients(opt, &gw, 1, &it), ADAMW_STATUS_OK);
    EXPECT(it == 6);
    EXPECT(w[0] == 1 && w[1] == 2 && w[2] == 3);
    adamw_optimizer_free(opt);
}

static int lr_calls = 0;
static int32_t lr_fn(int64_t step, void *user_data, double *out) {
    (void)user_data;
    lr_calls++;
    if (step >= 3) return 7; /* fails from the fourth step on */
    *out = 0.01 * (double)(step + 1);
    return 0;
}
static int32_t nan_fn(int64_t step, void *user_data, double *out) {
    (void)user_data;
    *out = step >= 1 ? NAN : 0.9;
    return 0;
}
typedef struct {
    adamw_status seen;
    adamw_optimizer *opt;
} reentry;

static int32_t reentrant_fn(int64_t step, void *user_data, double *out) {
    int64_t it;
    reentry *ctx = (reentry *)user_data;
    /* Calls back into the optimizer being stepped: must be refused, not deadlock. */
    if (step > 0) ctx->seen = adamw_optimizer_iterations(ctx->opt, &it);
    /* Freeing it from here would pull the memory out from under the running call: refused. */
    if (step == 1) adamw_optimizer_free(ctx->opt);
    *out = 0.001;
    return 0;
}

static double big_variable_storage[3]; /* 8-byte aligned room for 6 floats */
static float *const big_variable = (float *)(void *)big_variable_storage;

static void test_apply(void) {
    float kernel[6] = {0.5f, -1.5f, 2.0f, 0.1f, 0.2f, 0.3f}, bias[3] = {0.1f, 0.2f, 0.3f};
    adamw_optimizer *opt = make(adamw_config_default(), kernel, bias);
    float gk[6] = {0.1f, -0.2f, 0.3f, 0.4f, 0.5f, 0.6f}, gb[3] = {1, 2, 3};
    adamw_gradient entries[2] = {dense_entry(0, kernel, 6, gk), dense_entry(1, bias, 3, gb)};
    int64_t it = -1;
    EXPECT_STATUS(adamw_optimizer_apply_gradients(opt, entries, 2, &it), ADAMW_STATUS_OK);
    EXPECT(it == 1);
    EXPECT(kernel[0] == 0.49899804592132568f); /* Keras' first step from the spec's example */

    float saved_kernel[6];
    memcpy(saved_kernel, kernel, sizeof kernel);
    adamw_gradient bad[2];

    memcpy(bad, entries, sizeof bad);
    bad[0].len = 5;
    EXPECT_REJECTED(opt, adamw_optimizer_apply_gradients(opt, bad, 2, NULL), ADAMW_STATUS_SHAPE_MISMATCH);
    memcpy(bad, entries, sizeof bad);
    double wide[3] = {0.1, 0.2, 0.3}, wide_grad[3] = {1, 2, 3}; /* real doubles, the wrong dtype */
    bad[1].dtype = ADAMW_DTYPE_FLOAT64;
    bad[1].data = wide;
    bad[1].dense = wide_grad;
    EXPECT_REJECTED(opt, adamw_optimizer_apply_gradients(opt, bad, 2, NULL), ADAMW_STATUS_DTYPE_MISMATCH);
    bad[1].dtype = 77;
    EXPECT_REJECTED(opt, adamw_optimizer_apply_gradients(opt, bad, 2, NULL), ADAMW_STATUS_INVALID_ARGUMENT);
    /* float32 buffers declared as float64: sized at 8 bytes an element, the kernel's buffer would
       reach into the bias's (or, 4 bytes off, be misaligned), but the dtype is checked before
       any buffer is sized by it, so the call is a DTYPE_MISMATCH either way. */
    _Alignas(8) float packed[10] = {0};
    for (int shift = 0; shift < 2; shift++) {
        memcpy(bad, entries, sizeof bad);
        bad[0].data = packed + shift; /* kernel: 6 floats */
        bad[0].dtype = ADAMW_DTYPE_FLOAT64;
        bad[1].data = packed + shift + 6; /* bias: the 3 floats right after */
        EXPECT_REJECTED(opt, adamw_optimizer_apply_gradients(opt, bad, 2, NULL), ADAMW_STATUS_DTYPE_MISMATCH);
        bad[0].dtype = ADAMW_DTYPE_FLOAT32; /* declared right, the same buffers are fine to check */
        bad[1].dense = NULL;
        bad[0].dense = NULL;
        EXPECT_REJECTED(opt, adamw_optimizer_apply_gradients(opt, bad, 2, NULL), ADAMW_STATUS_NO_GRADIENTS);
    }
    memcpy(bad, entries, sizeof bad);
    bad[1].variable = 9;
    EXPECT_REJECTED(opt, adamw_optimizer_apply_gradients(opt, bad, 2, NULL), ADAMW_STATUS_UNKNOWN_VARIABLE);
    memcpy(bad, entries, sizeof bad);
    bad[1] = bad[0];
    bad[1].data = saved_kernel; /* distinct memory, same variable twice */
    EXPECT_REJECTED(opt, adamw_optimizer_apply_gradients(opt, bad, 2, NULL), ADAMW_STATUS_INVALID_ARGUMENT);
    memcpy(bad, entries, sizeof bad);
    bad[0].dense = NULL;
    bad[1].dense = NULL;
    EXPECT_REJECTED(opt, adamw_optimizer_apply_gradients(opt, bad, 2, NULL), ADAMW_STATUS_NO_GRADIENTS);
    memcpy(bad, entries, sizeof bad);
    bad[0].data = NULL;
    EXPECT_REJECTED(opt, adamw_optimizer_apply_gradients(opt, bad, 2, NULL), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_REJECTED(opt, adamw_optimizer_apply_gradients(opt, NULL, 2, NULL), ADAMW_STATUS_NULL_ARGUMENT);
    memcpy(bad, entries, sizeof bad);
    bad[0].dense = kernel; /* the gradient aliases the variable being written */
    EXPECT_REJECTED(opt, adamw_optimizer_apply_gradients(opt, bad, 2, NULL), ADAMW_STATUS_INVALID_ARGUMENT);
    memcpy(bad, entries, sizeof bad);
    bad[0].dense = (const char *)gk + 1; /* misaligned */
    bad[0].len = 5;
    EXPECT_REJECTED(opt, adamw_optimizer_apply_gradients(opt, bad, 2, NULL), ADAMW_STATUS_INVALID_ARGUMENT);

    /* sparse: rows of the kernel [2,3] */
    int64_t idx[3] = {1, 0, 1};
    float rows[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    memcpy(bad, entries, sizeof bad);
    bad[0].dense = NULL;
    bad[0].indices = idx;
    bad[0].num_indices = 3;
    bad[0].values = rows;
    bad[0].num_values = 8;
    EXPECT_REJECTED(opt, adamw_optimizer_apply_gradients(opt, bad, 2, NULL), ADAMW_STATUS_SHAPE_MISMATCH);
    bad[0].num_values = 9;
    idx[2] = 2;
    EXPECT_REJECTED(opt, adamw_optimizer_apply_gradients(opt, bad, 2, NULL), ADAMW_STATUS_INDEX_OUT_OF_RANGE);
    idx[2] = -1;
    EXPECT_REJECTED(opt, adamw_optimizer_apply_gradients(opt, bad, 2, NULL), ADAMW_STATUS_INDEX_OUT_OF_RANGE);
    idx[2] = 1;
    bad[0].dense = gk;
    EXPECT_REJECTED(opt, adamw_optimizer_apply_gradients(opt, bad, 2, NULL), ADAMW_STATUS_INVALID_ARGUMENT);
    bad[0].values = NULL; /* dense with indices alone is ambiguous too */
    EXPECT_REJECTED(opt, adamw_optimizer_apply_gradients(opt, bad, 2, NULL), ADAMW_STATUS_INVALID_ARGUMENT);
    bad[0].values = rows;
    bad[0].dense = NULL;
    /* indices stored inside the variable being written */
    int64_t *inside = (int64_t *)(void *)big_variable;
    inside[0] = 0;
    adamw_gradient alias = bad[0];
    alias.data = big_variable;
    alias.len = 6;
    alias.indices = inside;
    alias.num_indices = 1;
    alias.num_values = 3;
    EXPECT_REJECTED(opt, adamw_optimizer_apply_gradients(opt, &alias, 1, NULL), ADAMW_STATUS_INVALID_ARGUMENT);
    bad[0].dense = NULL;
    bad[1].indices = idx; /* the bias is 1-D: rows are single numbers */
    bad[1].num_indices = 1;
    bad[1].dense = NULL;
    bad[1].values = gb;
    bad[1].num_values = 1;
    EXPECT_STATUS(adamw_optimizer_reserve_sparse(opt, 16), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_set_threads(opt, 3), ADAMW_STATUS_OK); /* a pool of its own */
    EXPECT_STATUS(adamw_optimizer_set_threads(opt, 1), ADAMW_STATUS_OK); /* the caller's thread */
    EXPECT_STATUS(adamw_optimizer_apply_gradients(opt, bad, 2, &it), ADAMW_STATUS_OK);
    EXPECT(it == 2);
    EXPECT(memcmp(saved_kernel, kernel, sizeof kernel) != 0);

    /* A constant learning rate is settable, from the next step on. */
    EXPECT_STATUS(adamw_optimizer_set_learning_rate(opt, 0.25), ADAMW_STATUS_OK);
    float lr = 0;
    EXPECT_STATUS(adamw_optimizer_current_learning_rate(opt, &lr), ADAMW_STATUS_OK);
    EXPECT(lr == 0.25f);
    EXPECT_STATUS(adamw_optimizer_current_learning_rate(opt, NULL), ADAMW_STATUS_NULL_ARGUMENT);

    /* An empty call is a no-op. */
    EXPECT_STATUS(adamw_optimizer_apply_gradients(opt, NULL, 0, &it), ADAMW_STATUS_OK);
    EXPECT(it == 2);
    adamw_optimizer_free(opt);
}

static void test_non_finite_guard(void) {
    adamw_config cfg = adamw_config_default();
    cfg.reject_non_finite_gradients = 2;
    adamw_optimizer *opt = NULL;
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &opt), ADAMW_STATUS_INVALID_ARGUMENT);
    cfg.reject_non_finite_gradients = 1;
    float kernel[6] = {1, 1, 1, 1, 1, 1}, bias[3] = {0};
    opt = make(cfg, kernel, bias);
    float g[6] = {0.1f, 0.1f, 0.1f, 0.1f, 0.1f, 0.1f};
    adamw_gradient e = dense_entry(0, kernel, 6, g);
    EXPECT_STATUS(adamw_optimizer_apply_gradients(opt, &e, 1, NULL), ADAMW_STATUS_OK);
    float saved[6];
    memcpy(saved, kernel, sizeof kernel);
    g[4] = NAN;
    EXPECT_REJECTED(opt, adamw_optimizer_apply_gradients(opt, &e, 1, NULL), ADAMW_STATUS_NON_FINITE_GRADIENT);
    g[4] = -INFINITY;
    EXPECT_REJECTED(opt, adamw_optimizer_apply_gradients(opt, &e, 1, NULL), ADAMW_STATUS_NON_FINITE_GRADIENT);
    EXPECT(memcmp(saved, kernel, sizeof kernel) == 0);
    EXPECT(strcmp(adamw_status_name(ADAMW_STATUS_NON_FINITE_GRADIENT), "ADAMW_STATUS_NON_FINITE_GRADIENT") == 0);
    size_t n = 0;
    EXPECT_STATUS(adamw_optimizer_get_config(opt, NULL, 0, &n), ADAMW_STATUS_OK);
    char *json = malloc(n + 1);
    EXPECT_STATUS(adamw_optimizer_get_config(opt, json, n + 1, &n), ADAMW_STATUS_OK);
    EXPECT(strstr(json, "\"reject_non_finite_gradients\":true") != NULL);
    free(json);
    adamw_optimizer_free(opt);
}

static void test_callbacks(void) {
    adamw_config cfg = adamw_config_default();
    cfg.learning_rate_fn = lr_fn;
    float kernel[6] = {0}, bias[3] = {0};
    adamw_optimizer *opt = make(cfg, kernel, bias);
    EXPECT(lr_calls == 1); /* evaluated once at creation, with step 0 */
    float gk[6] = {1, 1, 1, 1, 1, 1};
    adamw_gradient e = dense_entry(0, kernel, 6, gk);
    float lr = 0;
    for (int i = 0; i < 3; i++) EXPECT_STATUS(adamw_optimizer_apply_gradients(opt, &e, 1, NULL), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_current_learning_rate(opt, &lr), ADAMW_STATUS_OK);
    EXPECT(lr == (float)0.03);
    EXPECT_REJECTED(opt, adamw_optimizer_apply_gradients(opt, &e, 1, NULL), ADAMW_STATUS_CALLBACK_FAILED);
    EXPECT_STATUS(adamw_optimizer_set_learning_rate(opt, 0.5), ADAMW_STATUS_INVALID_ARGUMENT);
    adamw_optimizer_free(opt);

    cfg = adamw_config_default();
    cfg.beta_1_fn = nan_fn;
    opt = make(cfg, kernel, bias);
    EXPECT_STATUS(adamw_optimizer_apply_gradients(opt, &e, 1, NULL), ADAMW_STATUS_OK);
    EXPECT_REJECTED(opt, adamw_optimizer_apply_gradients(opt, &e, 1, NULL), ADAMW_STATUS_CALLBACK_FAILED);
    adamw_optimizer_free(opt);

    /* a callback calling its own optimizer gets BUSY */
    reentry ctx = {ADAMW_STATUS_OK, NULL};
    cfg = adamw_config_default();
    cfg.learning_rate_fn = reentrant_fn;
    cfg.learning_rate_user_data = &ctx;
    ctx.opt = make(cfg, kernel, bias);
    EXPECT_STATUS(adamw_optimizer_apply_gradients(ctx.opt, &e, 1, NULL), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_apply_gradients(ctx.opt, &e, 1, NULL), ADAMW_STATUS_OK);
    EXPECT(ctx.seen == ADAMW_STATUS_BUSY);
    char msg[256];
    size_t len;
    adamw_last_error(msg, sizeof msg, &len);
    EXPECT(strstr(msg, "it was not freed") != NULL);
    int64_t it = 0;
    EXPECT_STATUS(adamw_optimizer_iterations(ctx.opt, &it), ADAMW_STATUS_OK); /* still alive */
    EXPECT(it == 2);
    adamw_optimizer_free(ctx.opt);
}

/* minimize: loss = sum((w - 3)^2), gradient 2 (w - 3) */
static int32_t quadratic_grad(void *user_data, const adamw_gradient *entries, size_t n) {
    float *grad = (float *)user_data;
    if (n != 1) return 1;
    const float *w = (const float *)entries[0].data;
    for (size_t i = 0; i < entries[0].len; i++) grad[i] = 2.0f * (w[i] - 3.0f);
    return 0;
}
static int32_t failing_grad(void *user_data, const adamw_gradient *entries, size_t n) {
    (void)user_data;
    (void)entries;
    (void)n;
    return -1;
}

static void test_minimize(void) {
    adamw_config cfg = adamw_config_default();
    cfg.learning_rate = 0.1;
    float kernel[6] = {0}, bias[3] = {0};
    adamw_optimizer *opt = make(cfg, kernel, bias);
    float grad[6];
    adamw_gradient e = dense_entry(0, kernel, 6, grad);
    int64_t it = 0;
    for (int i = 0; i < 200; i++) EXPECT_STATUS(adamw_optimizer_minimize(opt, &e, 1, quadratic_grad, grad, &it), ADAMW_STATUS_OK);
    EXPECT(it == 200);
    EXPECT(fabsf(kernel[0] - 3.0f) < 0.1f);
    EXPECT_REJECTED(opt, adamw_optimizer_minimize(opt, &e, 1, failing_grad, NULL, NULL), ADAMW_STATUS_CALLBACK_FAILED);
    EXPECT_REJECTED(opt, adamw_optimizer_minimize(opt, &e, 1, NULL, NULL, NULL), ADAMW_STATUS_NULL_ARGUMENT);
    adamw_optimizer_free(opt);
}

static void test_variables_and_weights(void) {
    adamw_config cfg = adamw_config_default();
    cfg.amsgrad = 1;
    cfg.use_ema = 1;
    float kernel[6] = {1, 2, 3, 4, 5, 6}, bias[3] = {7, 8, 9};
    adamw_optimizer *unbuilt = NULL;
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &unbuilt), ADAMW_STATUS_OK);
    size_t n = 0;
    EXPECT_STATUS(adamw_optimizer_num_variables(unbuilt, &n), ADAMW_STATUS_OK);
    EXPECT(n == 1);
    adamw_weight w0 = {ADAMW_DTYPE_INT64, 0, NULL, NULL};
    int64_t seven = 7;
    w0.data = &seven;
    EXPECT_REJECTED(unbuilt, adamw_optimizer_set_weights(unbuilt, &w0, 1), ADAMW_STATUS_NOT_BUILT);
    adamw_variable no_data = {"k", ADAMW_DTYPE_FLOAT32, 1, bias_shape, NULL, 0, 0, 0};
    EXPECT_REJECTED(unbuilt, adamw_optimizer_build(unbuilt, &no_data, 1), ADAMW_STATUS_NULL_ARGUMENT);
    adamw_optimizer_free(unbuilt);

    adamw_optimizer *opt = make(cfg, kernel, bias);
    EXPECT_STATUS(adamw_optimizer_num_variables(opt, &n), ADAMW_STATUS_OK);
    EXPECT(n == 1 + 2 + 4 + 2); /* iteration, 2 averages, m/v x2, 2 vhat */
    const char *names[9] = {"iteration", "AdamW/average/dense/kernel", "AdamW/average/dense/bias", "AdamW/m/dense/kernel",
                            "AdamW/v/dense/kernel", "AdamW/m/dense/bias", "AdamW/v/dense/bias", "AdamW/vhat/dense/kernel",
                            "AdamW/vhat/dense/bias"};
    for (size_t i = 0; i < 9; i++) {
        char name[64];
        size_t len;
        EXPECT_STATUS(adamw_optimizer_variable_name(opt, i, name, sizeof name, &len), ADAMW_STATUS_OK);
        EXPECT(strcmp(name, names[i]) == 0);
    }
    char short_name[4];
    size_t name_len = 0;
    EXPECT_STATUS(adamw_optimizer_variable_name(opt, 3, short_name, sizeof short_name, &name_len), ADAMW_STATUS_BUFFER_TOO_SMALL);
    EXPECT(name_len == strlen("AdamW/m/dense/kernel"));
    EXPECT_STATUS(adamw_optimizer_variable_name(opt, 9, short_name, sizeof short_name, &name_len), ADAMW_STATUS_UNKNOWN_VARIABLE);
    adamw_variable_info info;
    EXPECT_STATUS(adamw_optimizer_variable_info(opt, 1, &info), ADAMW_STATUS_OK);
    EXPECT(info.dtype == ADAMW_DTYPE_FLOAT32 && info.ndim == 2 && info.shape[0] == 2 && info.shape[1] == 3 && info.len == 6);
    EXPECT_STATUS(adamw_optimizer_variable_info(opt, 9, &info), ADAMW_STATUS_UNKNOWN_VARIABLE);
    EXPECT_STATUS(adamw_optimizer_variable_info(opt, 0, NULL), ADAMW_STATUS_NULL_ARGUMENT);
    float avg[6];
    EXPECT_STATUS(adamw_optimizer_get_variable(opt, 1, ADAMW_DTYPE_FLOAT32, avg, 6), ADAMW_STATUS_OK);
    EXPECT(avg[0] == 1 && avg[5] == 6); /* averages start as copies */
    EXPECT_STATUS(adamw_optimizer_get_variable(opt, 1, ADAMW_DTYPE_FLOAT64, avg, 6), ADAMW_STATUS_DTYPE_MISMATCH);
    EXPECT_STATUS(adamw_optimizer_get_variable(opt, 1, ADAMW_DTYPE_FLOAT32, avg, 5), ADAMW_STATUS_SHAPE_MISMATCH);
    EXPECT_STATUS(adamw_optimizer_get_variable(opt, 1, ADAMW_DTYPE_FLOAT32, NULL, 6), ADAMW_STATUS_NULL_ARGUMENT);

    /* set_weights: a prefix (counter and first average), checked before anything is assigned */
    size_t shape23[2] = {2, 3}, shape6[1] = {6};
    float values[6] = {-1, -2, -3, -4, -5, -6};
    adamw_weight ws[2] = {w0, {ADAMW_DTYPE_FLOAT32, 1, shape6, values}};
    EXPECT_REJECTED(opt, adamw_optimizer_set_weights(opt, ws, 2), ADAMW_STATUS_SHAPE_MISMATCH);
    char msg[256];
    size_t len;
    adamw_last_error(msg, sizeof msg, &len);
    EXPECT(strcmp(msg, "Optimizer variable AdamW/average/dense/kernel has shape (2, 3) not compatible with provided weight shape (6,).") == 0);
    ws[1].shape = shape23;
    ws[1].ndim = 2;
    ws[1].dtype = ADAMW_DTYPE_FLOAT64;
    EXPECT_REJECTED(opt, adamw_optimizer_set_weights(opt, ws, 2), ADAMW_STATUS_DTYPE_MISMATCH);
    ws[1].dtype = 0;
    EXPECT_REJECTED(opt, adamw_optimizer_set_weights(opt, ws, 2), ADAMW_STATUS_INVALID_ARGUMENT);
    ws[1].dtype = ADAMW_DTYPE_FLOAT32;
    EXPECT_STATUS(adamw_optimizer_set_weights(opt, ws, 2), ADAMW_STATUS_OK);
    int64_t it = 0;
    EXPECT_STATUS(adamw_optimizer_iterations(opt, &it), ADAMW_STATUS_OK);
    EXPECT(it == 7);
    EXPECT_STATUS(adamw_optimizer_get_variable(opt, 1, ADAMW_DTYPE_FLOAT32, avg, 6), ADAMW_STATUS_OK);
    EXPECT(avg[0] == -1 && avg[5] == -6);

    /* finalize: the variables take their averages */
    adamw_variable_data vd = {0, ADAMW_DTYPE_FLOAT32, kernel, 6};
    vd.len = 4;
    EXPECT_STATUS(adamw_optimizer_finalize_variable_values(opt, &vd, 1), ADAMW_STATUS_SHAPE_MISMATCH);
    EXPECT(kernel[0] == 1);
    vd.len = 6;
    vd.variable = 5;
    EXPECT_STATUS(adamw_optimizer_finalize_variable_values(opt, &vd, 1), ADAMW_STATUS_UNKNOWN_VARIABLE);
    vd.variable = 0;
    EXPECT_STATUS(adamw_optimizer_finalize_variable_values(opt, &vd, 1), ADAMW_STATUS_OK);
    EXPECT(kernel[0] == -1 && kernel[5] == -6);
    adamw_optimizer_free(opt);
}

static void test_checkpoints(void) {
    float kernel[6] = {0.5f, -1.5f, 2.0f, 0.1f, 0.2f, 0.3f}, bias[3] = {0.1f, 0.2f, 0.3f};
    adamw_optimizer *opt = make(adamw_config_default(), kernel, bias);
    float gk[6] = {0.1f, -0.2f, 0.3f, 0.4f, 0.5f, 0.6f}, gb[3] = {1, 2, 3};
    adamw_gradient entries[2] = {dense_entry(0, kernel, 6, gk), dense_entry(1, bias, 3, gb)};
    for (int i = 0; i < 3; i++) EXPECT_STATUS(adamw_optimizer_apply_gradients(opt, entries, 2, NULL), ADAMW_STATUS_OK);

    size_t len = 0;
    EXPECT_STATUS(adamw_optimizer_save_own_variables(opt, NULL, 0, NULL), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_save_own_variables(opt, NULL, 0, &len), ADAMW_STATUS_OK);
    uint8_t *bytes = malloc(len);
    size_t small = 0;
    EXPECT_STATUS(adamw_optimizer_save_own_variables(opt, bytes, len - 1, &small), ADAMW_STATUS_BUFFER_TOO_SMALL);
    EXPECT(small == len);
    EXPECT_STATUS(adamw_optimizer_save_own_variables(opt, bytes, len, &len), ADAMW_STATUS_OK);

    /* a fresh optimizer built the same way, resumed from the checkpoint, continues identically */
    float k2[6], b2[3];
    memcpy(k2, kernel, sizeof kernel);
    memcpy(b2, bias, sizeof bias);
    adamw_optimizer *resumed = make(adamw_config_default(), k2, b2);
    EXPECT_REJECTED(resumed, adamw_optimizer_load_own_variables(resumed, bytes, len - 1), ADAMW_STATUS_INVALID_CHECKPOINT);
    EXPECT_REJECTED(resumed, adamw_optimizer_load_own_variables(resumed, bytes, 7), ADAMW_STATUS_INVALID_CHECKPOINT);
    EXPECT_REJECTED(resumed, adamw_optimizer_load_own_variables(resumed, NULL, 4), ADAMW_STATUS_NULL_ARGUMENT);
    uint8_t *flipped = malloc(len);
    memcpy(flipped, bytes, len);
    flipped[12] ^= 0x20; /* inside the JSON header */
    EXPECT_REJECTED(resumed, adamw_optimizer_load_own_variables(resumed, flipped, len), ADAMW_STATUS_INVALID_CHECKPOINT);
    free(flipped);
    const uint8_t foreign[16] = "not a checkpoint";
    EXPECT_REJECTED(resumed, adamw_optimizer_load_own_variables(resumed, foreign, sizeof foreign), ADAMW_STATUS_INVALID_CHECKPOINT);
    EXPECT_STATUS(adamw_optimizer_load_own_variables(resumed, bytes, len), ADAMW_STATUS_OK);
    adamw_gradient e2[2] = {dense_entry(0, k2, 6, gk), dense_entry(1, b2, 3, gb)};
    EXPECT_STATUS(adamw_optimizer_apply_gradients(opt, entries, 2, NULL), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_apply_gradients(resumed, e2, 2, NULL), ADAMW_STATUS_OK);
    EXPECT(memcmp(kernel, k2, sizeof kernel) == 0 && memcmp(bias, b2, sizeof bias) == 0);

    /* checkpoints of differently built optimizers are rejected */
    adamw_config ams = adamw_config_default();
    ams.amsgrad = 1;
    adamw_optimizer *other = make(ams, k2, b2);
    EXPECT_REJECTED(other, adamw_optimizer_load_own_variables(other, bytes, len), ADAMW_STATUS_CHECKPOINT_MISMATCH);
    adamw_optimizer *shaped = NULL;
    EXPECT_STATUS(adamw_optimizer_new(&ams, &shaped), ADAMW_STATUS_OK);
    size_t shape32[2] = {3, 2};
    adamw_variable vars[2] = {{"dense/kernel", ADAMW_DTYPE_FLOAT32, 2, shape32, NULL, 0, 0, 0},
                              {"dense/bias", ADAMW_DTYPE_FLOAT32, 1, bias_shape, NULL, 0, 0, 0}};
    adamw_config plain = adamw_config_default();
    adamw_optimizer *transposed = NULL;
    EXPECT_STATUS(adamw_optimizer_new(&plain, &transposed), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_build(transposed, vars, 2), ADAMW_STATUS_OK);
    EXPECT_REJECTED(transposed, adamw_optimizer_load_own_variables(transposed, bytes, len), ADAMW_STATUS_CHECKPOINT_MISMATCH);
    vars[0].dtype = ADAMW_DTYPE_FLOAT64;
    vars[0].shape = kernel_shape;
    adamw_optimizer *wide = NULL;
    EXPECT_STATUS(adamw_optimizer_new(&plain, &wide), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_build(wide, vars, 2), ADAMW_STATUS_OK);
    EXPECT_REJECTED(wide, adamw_optimizer_load_own_variables(wide, bytes, len), ADAMW_STATUS_CHECKPOINT_MISMATCH);

    /* files: atomic save, load, and the failures */
    EXPECT_STATUS(adamw_optimizer_save_file(opt, NULL), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_save_file(opt, ""), ADAMW_STATUS_INVALID_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_save_file(opt, "target/c-tests/no/such/dir/opt.safetensors"), ADAMW_STATUS_IO);
    EXPECT_STATUS(adamw_optimizer_save_file(opt, "target/c-tests/opt.safetensors"), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_save_file(NULL, "target/c-tests/opt.safetensors"), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_REJECTED(other, adamw_optimizer_load_file(other, "target/c-tests/opt.safetensors"), ADAMW_STATUS_CHECKPOINT_MISMATCH);
    EXPECT_REJECTED(resumed, adamw_optimizer_load_file(resumed, "target/c-tests/missing.safetensors"), ADAMW_STATUS_IO);
    EXPECT_REJECTED(resumed, adamw_optimizer_load_file(resumed, NULL), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_load_file(resumed, "target/c-tests/opt.safetensors"), ADAMW_STATUS_OK);
    /* a flipped data byte is caught by the checksum */
    size_t len2 = 0;
    EXPECT_STATUS(adamw_optimizer_save_own_variables(opt, NULL, 0, &len2), ADAMW_STATUS_OK);
    uint8_t *corrupt = malloc(len2);
    EXPECT_STATUS(adamw_optimizer_save_own_variables(opt, corrupt, len2, &len2), ADAMW_STATUS_OK);
    corrupt[len2 - 3] ^= 0x04;
    EXPECT_REJECTED(resumed, adamw_optimizer_load_own_variables(resumed, corrupt, len2), ADAMW_STATUS_INVALID_CHECKPOINT);
    free(corrupt);

    free(bytes);
    adamw_optimizer_free(wide);
    adamw_optimizer_free(transposed);
    adamw_optimizer_free(shaped);
    adamw_optimizer_free(other);
    adamw_optimizer_free(resumed);
    adamw_optimizer_free(opt);
}

/* A one-rank "cluster": the sum over ranks is the value itself. */
static int32_t identity_all_reduce(double *values, size_t count, void *user_data) {
    (void)values;
    (void)count;
    *(int *)user_data += 1;
    return 0;
}
static int32_t failing_all_reduce(double *values, size_t count, void *user_data) {
    (void)values;
    (void)count;
    (void)user_data;
    return 5;
}

static void test_sharded(void) {
    float shard[5] = {1, 2, 3, 4, 5}, grad[5] = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f};
    size_t shape[2] = {4, 3};
    adamw_variable v = {.name = "w", .dtype = ADAMW_DTYPE_FLOAT32, .ndim = 2, .shape = shape, .data = shard,
                        .sharded = 1, .shard_offset = 4, .shard_len = 5};
    adamw_config cfg = adamw_config_default();
    cfg.clipnorm = 1.0;
    adamw_optimizer *opt = NULL;
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &opt), ADAMW_STATUS_OK);
    EXPECT_REJECTED(opt, adamw_optimizer_build(opt, &v, 1), ADAMW_STATUS_INVALID_ARGUMENT); /* no mesh */
    adamw_optimizer_free(opt);

    int calls = 0;
    cfg.mesh_all_reduce = identity_all_reduce;
    cfg.mesh_user_data = &calls;
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &opt), ADAMW_STATUS_OK);
    v.sharded = 2;
    EXPECT_REJECTED(opt, adamw_optimizer_build(opt, &v, 1), ADAMW_STATUS_INVALID_ARGUMENT);
    v.sharded = 1;
    v.shard_offset = 8; /* 8 + 5 > 12 */
    EXPECT_REJECTED(opt, adamw_optimizer_build(opt, &v, 1), ADAMW_STATUS_INVALID_ARGUMENT);
    v.shard_offset = 4;
    EXPECT_STATUS(adamw_optimizer_build(opt, &v, 1), ADAMW_STATUS_OK);
    char short_name[4];
    size_t name_len = 0;
    EXPECT_STATUS(adamw_optimizer_variable_name(opt, 1, short_name, sizeof short_name, &name_len), ADAMW_STATUS_BUFFER_TOO_SMALL);
    EXPECT(name_len == strlen("AdamW/m/w"));
    EXPECT_STATUS(adamw_optimizer_variable_name(opt, 9, short_name, sizeof short_name, &name_len), ADAMW_STATUS_UNKNOWN_VARIABLE);
    adamw_variable_info info;
    EXPECT_STATUS(adamw_optimizer_variable_info(opt, 1, &info), ADAMW_STATUS_OK);
    EXPECT(info.ndim == 1 && info.shape[0] == 5 && info.len == 5); /* slots hold the shard */
    float whole[12] = {0}, whole_grad[12] = {0};
    adamw_gradient e = dense_entry(0, whole, 12, whole_grad); /* the whole variable, not the shard */
    EXPECT_REJECTED(opt, adamw_optimizer_apply_gradients(opt, &e, 1, NULL), ADAMW_STATUS_SHAPE_MISMATCH);
    e = dense_entry(0, shard, 5, grad);
    /* Alone on its mesh, the shard leaves elements 0..3 and 9..11 to nobody: the first step that
       clips finds it (after the header and the census), and changes nothing. */
    EXPECT_REJECTED(opt, adamw_optimizer_apply_gradients(opt, &e, 1, NULL), ADAMW_STATUS_INVALID_ARGUMENT);
    EXPECT(calls == 2);
    adamw_optimizer_free(opt);

    /* One rank whose shard is the whole variable: the header, the census once, the norms. */
    calls = 0;
    float all[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, all_grad[12] = {0.5f};
    adamw_variable whole_shard = v;
    whole_shard.data = all;
    whole_shard.shard_offset = 0;
    whole_shard.shard_len = 12;
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &opt), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_build(opt, &whole_shard, 1), ADAMW_STATUS_OK);
    adamw_gradient all_entry = dense_entry(0, all, 12, all_grad);
    EXPECT_STATUS(adamw_optimizer_apply_gradients(opt, &all_entry, 1, NULL), ADAMW_STATUS_OK);
    EXPECT(calls == 3);
    /* A sparse gradient is whole on every rank: its norm is taken there, only the header travels. */
    int64_t rows_idx[2] = {2, 1};
    float rows[6] = {1, 1, 1, 1, 1, 1};
    adamw_gradient sp = {.variable = 0, .dtype = ADAMW_DTYPE_FLOAT32, .data = all, .len = 12,
                         .indices = rows_idx, .num_indices = 2, .values = rows, .num_values = 6};
    EXPECT_STATUS(adamw_optimizer_apply_gradients(opt, &sp, 1, NULL), ADAMW_STATUS_OK);
    EXPECT(calls == 5);
    adamw_optimizer_free(opt);

    cfg.mesh_all_reduce = failing_all_reduce;
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &opt), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_build(opt, &v, 1), ADAMW_STATUS_OK);
    float before[5];
    memcpy(before, shard, sizeof shard);
    EXPECT_REJECTED(opt, adamw_optimizer_apply_gradients(opt, &e, 1, NULL), ADAMW_STATUS_CALLBACK_FAILED);
    EXPECT(memcmp(before, shard, sizeof shard) == 0);
    adamw_optimizer_free(opt);
}

/* adamw_optimizer_load_shards: the checkpoints of two shards (steps without clipping need no
   all-reduce) load into an unsharded optimizer, which then saves exactly what an unsharded
   optimizer given the whole gradients saves; bad sets of shards are refused and change nothing. */
static uint8_t *saved(const adamw_optimizer *opt, size_t *len) {
    adamw_optimizer_save_own_variables(opt, NULL, 0, len);
    uint8_t *bytes = malloc(*len);
    EXPECT_STATUS(adamw_optimizer_save_own_variables(opt, bytes, *len, len), ADAMW_STATUS_OK);
    return bytes;
}

static void test_load_shards(void) {
    const size_t shape[1] = {6};
    float whole[6] = {1, 2, 3, 4, 5, 6}, grad[6] = {0.5f, -0.25f, 0.125f, 1, -1, 2};
    float part[2][3] = {{1, 2, 3}, {4, 5, 6}};
    adamw_config cfg = adamw_config_default();
    adamw_optimizer *reference = NULL, *ranks[2] = {NULL, NULL}, *target = NULL;
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &reference), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &target), ADAMW_STATUS_OK);
    adamw_variable v = {"w", ADAMW_DTYPE_FLOAT32, 1, shape, NULL, 0, 0, 0};
    const uint8_t *none[1] = {NULL};
    size_t zero[1] = {0};
    EXPECT_STATUS(adamw_optimizer_load_shards(target, none, zero, 1), ADAMW_STATUS_NOT_BUILT);
    EXPECT_STATUS(adamw_optimizer_build(reference, &v, 1), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_build(target, &v, 1), ADAMW_STATUS_OK);
    adamw_gradient e = dense_entry(0, whole, 6, grad);
    EXPECT_STATUS(adamw_optimizer_apply_gradients(reference, &e, 1, NULL), ADAMW_STATUS_OK);
    int calls = 0;
    cfg.mesh_all_reduce = identity_all_reduce;
    cfg.mesh_user_data = &calls;
    uint8_t *shard_bytes[2];
    size_t shard_lens[2];
    for (int r = 0; r < 2; r++) {
        EXPECT_STATUS(adamw_optimizer_new(&cfg, &ranks[r]), ADAMW_STATUS_OK);
        adamw_variable shard = {"w", ADAMW_DTYPE_FLOAT32, 1, shape, NULL, 1, (size_t)(3 * r), 3};
        EXPECT_STATUS(adamw_optimizer_build(ranks[r], &shard, 1), ADAMW_STATUS_OK);
        adamw_gradient g = dense_entry(0, part[r], 3, grad + 3 * r);
        EXPECT_STATUS(adamw_optimizer_apply_gradients(ranks[r], &g, 1, NULL), ADAMW_STATUS_OK);
        shard_bytes[r] = saved(ranks[r], &shard_lens[r]);
    }
    EXPECT(calls == 0);
    const uint8_t *both[2] = {shard_bytes[1], shard_bytes[0]}; /* any order */
    size_t both_lens[2] = {shard_lens[1], shard_lens[0]};
    EXPECT_STATUS(adamw_optimizer_load_shards(NULL, both, both_lens, 2), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_REJECTED(target, adamw_optimizer_load_shards(target, NULL, both_lens, 2), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_REJECTED(target, adamw_optimizer_load_shards(target, both, NULL, 2), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_REJECTED(target, adamw_optimizer_load_shards(target, NULL, NULL, 0), ADAMW_STATUS_CHECKPOINT_MISMATCH);
    EXPECT_REJECTED(target, adamw_optimizer_load_shards(target, both, both_lens, 1), ADAMW_STATUS_CHECKPOINT_MISMATCH);
    const uint8_t *twice[3] = {shard_bytes[0], shard_bytes[1], shard_bytes[1]};
    size_t twice_lens[3] = {shard_lens[0], shard_lens[1], shard_lens[1]};
    EXPECT_REJECTED(target, adamw_optimizer_load_shards(target, twice, twice_lens, 3), ADAMW_STATUS_CHECKPOINT_MISMATCH);
    shard_bytes[0][shard_lens[0] - 1] ^= 1;
    EXPECT_REJECTED(target, adamw_optimizer_load_shards(target, both, both_lens, 2), ADAMW_STATUS_INVALID_CHECKPOINT);
    shard_bytes[0][shard_lens[0] - 1] ^= 1;
    EXPECT_STATUS(adamw_optimizer_load_shards(target, both, both_lens, 2), ADAMW_STATUS_OK);
    size_t got_len = 0, want_len = 0;
    uint8_t *got = saved(target, &got_len), *want = saved(reference, &want_len);
    EXPECT(got_len == want_len && memcmp(got, want, got_len) == 0);
    free(got);
    free(want);
    for (int r = 0; r < 2; r++) {
        free(shard_bytes[r]);
        adamw_optimizer_free(ranks[r]);
    }
    adamw_optimizer_free(target);
    adamw_optimizer_free(reference);
}

/* bfloat16 and float16 variables, passed as their bits: Keras' own 16-bit semantics (slots in the
   variable's dtype, every operation rounded to it). The expected bits are tf-keras 2.15.1's for
   AdamW(learning_rate=0.01) on [0.5, -1.5, 2.0] with the gradient [0.1, -0.2, 0.3]. */
static void test_16_bit(void) {
    adamw_config cfg = adamw_config_default();
    cfg.learning_rate = 0.01;
    adamw_optimizer *opt = NULL;
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &opt), ADAMW_STATUS_OK);
    uint16_t wb[3] = {0x3f00, 0xbfc0, 0x4000}, gb[3] = {0x3dcd, 0xbe4d, 0x3e9a}; /* bfloat16 */
    uint16_t wh[3] = {0x3800, 0xbe00, 0x4000}, gh[3] = {0x2e66, 0xb266, 0x34cd}; /* float16 */
    const size_t shape[1] = {3};
    adamw_variable vars[2] = {
        {"b", ADAMW_DTYPE_BFLOAT16, 1, shape, wb, 0, 0, 0},
        {"h", ADAMW_DTYPE_FLOAT16, 1, shape, wh, 0, 0, 0},
    };
    EXPECT_STATUS(adamw_optimizer_build(opt, vars, 2), ADAMW_STATUS_OK);
    adamw_gradient entries[2] = {{0}, {0}};
    entries[0] = (adamw_gradient){.variable = 0, .dtype = ADAMW_DTYPE_BFLOAT16, .data = wb, .len = 3, .dense = gb};
    entries[1] = (adamw_gradient){.variable = 1, .dtype = ADAMW_DTYPE_FLOAT16, .data = wh, .len = 3, .dense = gh};

    /* Rejected before anything changes: a float16 buffer declared as bfloat16, a float32
       gradient for a bfloat16 variable, an unknown dtype. */
    adamw_gradient bad[2];
    memcpy(bad, entries, sizeof bad);
    bad[1].dtype = ADAMW_DTYPE_BFLOAT16;
    EXPECT_REJECTED(opt, adamw_optimizer_apply_gradients(opt, bad, 2, NULL), ADAMW_STATUS_DTYPE_MISMATCH);
    float g32[3] = {0.1f, -0.2f, 0.3f};
    memcpy(bad, entries, sizeof bad);
    bad[0].dtype = ADAMW_DTYPE_FLOAT32;
    bad[0].dense = g32;
    EXPECT_REJECTED(opt, adamw_optimizer_apply_gradients(opt, bad, 2, NULL), ADAMW_STATUS_DTYPE_MISMATCH);
    memcpy(bad, entries, sizeof bad);
    bad[0].dtype = 6;
    EXPECT_REJECTED(opt, adamw_optimizer_apply_gradients(opt, bad, 2, NULL), ADAMW_STATUS_INVALID_ARGUMENT);

    EXPECT_STATUS(adamw_optimizer_apply_gradients(opt, entries, 2, NULL), ADAMW_STATUS_OK);
    /* bfloat16: f32(0.999) rounds to 1.0 in bfloat16, so 1 - beta_2^t is 0 and Keras' step is 0. */
    EXPECT(wb[0] == 0x3f00 && wb[1] == 0xbfc0 && wb[2] == 0x4000);
    EXPECT(wh[0] == 0x37d8 && wh[1] == 0xbdf6 && wh[2] == 0x3ff6);

    /* The slots have the variable's dtype: m and v of `b` are optimizer variables 1 and 2. */
    adamw_variable_info info;
    EXPECT_STATUS(adamw_optimizer_variable_info(opt, 1, &info), ADAMW_STATUS_OK);
    EXPECT(info.dtype == ADAMW_DTYPE_BFLOAT16 && info.len == 3);
    uint16_t m[3] = {0}, v[3] = {0};
    EXPECT_STATUS(adamw_optimizer_get_variable(opt, 1, ADAMW_DTYPE_BFLOAT16, m, 3), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_get_variable(opt, 2, ADAMW_DTYPE_BFLOAT16, v, 3), ADAMW_STATUS_OK);
    EXPECT(m[0] == 0x3c24 && m[1] == 0xbca4 && m[2] == 0x3cf7);
    EXPECT(v[0] == 0x3728 && v[1] == 0x3828 && v[2] == 0x38bd);
    EXPECT_STATUS(adamw_optimizer_get_variable(opt, 3, ADAMW_DTYPE_FLOAT16, m, 3), ADAMW_STATUS_OK);
    EXPECT(m[0] == 0x211e && m[1] == 0xa51e && m[2] == 0x27ae);
    EXPECT_STATUS(adamw_optimizer_get_variable(opt, 4, ADAMW_DTYPE_FLOAT16, v, 3), ADAMW_STATUS_OK);
    EXPECT(v[0] == 0x00a8 && v[1] == 0x029f && v[2] == 0x05e7); /* float16 subnormals, kept */
    EXPECT_STATUS(adamw_optimizer_get_variable(opt, 3, ADAMW_DTYPE_BFLOAT16, m, 3), ADAMW_STATUS_DTYPE_MISMATCH);

    /* A checkpoint holds the 16-bit slots and restores them into a fresh optimizer. */
    size_t len = 0;
    EXPECT_STATUS(adamw_optimizer_save_own_variables(opt, NULL, 0, &len), ADAMW_STATUS_OK);
    uint8_t *bytes = malloc(len);
    EXPECT_STATUS(adamw_optimizer_save_own_variables(opt, bytes, len, &len), ADAMW_STATUS_OK);
    adamw_optimizer *copy = NULL;
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &copy), ADAMW_STATUS_OK);
    vars[0].dtype = ADAMW_DTYPE_FLOAT16; /* another dtype: the checkpoint does not fit */
    EXPECT_STATUS(adamw_optimizer_build(copy, vars, 2), ADAMW_STATUS_OK);
    EXPECT_REJECTED(copy, adamw_optimizer_load_own_variables(copy, bytes, len), ADAMW_STATUS_CHECKPOINT_MISMATCH);
    adamw_optimizer_free(copy);
    copy = NULL;
    vars[0].dtype = ADAMW_DTYPE_BFLOAT16;
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &copy), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_build(copy, vars, 2), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_load_own_variables(copy, bytes, len), ADAMW_STATUS_OK);
    uint16_t m2[3] = {0};
    EXPECT_STATUS(adamw_optimizer_get_variable(copy, 4, ADAMW_DTYPE_FLOAT16, m2, 3), ADAMW_STATUS_OK);
    EXPECT(memcmp(m2, v, sizeof v) == 0);
    /* set_weights takes 16-bit weights of the slot's dtype only. */
    adamw_weight w = {ADAMW_DTYPE_FLOAT16, 1, shape, m2};
    adamw_weight ws[2] = {{ADAMW_DTYPE_INT64, 0, NULL, &(int64_t){4}}, w};
    EXPECT_REJECTED(copy, adamw_optimizer_set_weights(copy, ws, 2), ADAMW_STATUS_DTYPE_MISMATCH);
    ws[1].dtype = ADAMW_DTYPE_BFLOAT16;
    EXPECT_STATUS(adamw_optimizer_set_weights(copy, ws, 2), ADAMW_STATUS_OK);
    free(bytes);
    adamw_optimizer_free(copy);
    adamw_optimizer_free(opt);
}

/* Float32 master weights (an extension): a bfloat16 variable is stepped as Keras steps a float32
   one (the float32 bits below are tf-keras 2.15.1's for AdamW(learning_rate=0.01) on the widened
   values and gradients) and receives the master rounded to nearest even; a float64 variable
   beside it is unaffected. */
static void test_master_weights(void) {
    adamw_config cfg = adamw_config_default();
    cfg.learning_rate = 0.01;
    adamw_optimizer *opt = NULL;
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &opt), ADAMW_STATUS_OK);
    EXPECT_REJECTED(opt, adamw_optimizer_set_master_weights(opt, 2), ADAMW_STATUS_INVALID_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_set_master_weights(NULL, 1), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_set_master_weights(opt, 1), ADAMW_STATUS_OK);
    uint16_t wb[3] = {0x3f00, 0xbfc0, 0x4000}, gb[3] = {0x3dcd, 0xbe4d, 0x3e9a};
    double wd[2] = {1.0, -2.0}, gd[2] = {0.5, 0.25};
    const size_t shape3[1] = {3}, shape2[1] = {2};
    adamw_variable vars[2] = {
        {"b", ADAMW_DTYPE_BFLOAT16, 1, shape3, NULL, 0, 0, 0},
        {"d", ADAMW_DTYPE_FLOAT64, 1, shape2, wd, 0, 0, 0},
    };
    /* The masters start as copies: build needs the values. */
    EXPECT_REJECTED(opt, adamw_optimizer_build(opt, vars, 2), ADAMW_STATUS_NULL_ARGUMENT);
    vars[0].data = wb;
    EXPECT_STATUS(adamw_optimizer_build(opt, vars, 2), ADAMW_STATUS_OK);
    EXPECT_REJECTED(opt, adamw_optimizer_set_master_weights(opt, 0), ADAMW_STATUS_ALREADY_BUILT);
    size_t n = 0;
    EXPECT_STATUS(adamw_optimizer_num_variables(opt, &n), ADAMW_STATUS_OK);
    EXPECT(n == 6); /* iteration, m and v of each variable, one master (none for float64) */
    adamw_variable_info info;
    EXPECT_STATUS(adamw_optimizer_variable_info(opt, 5, &info), ADAMW_STATUS_OK);
    EXPECT(info.dtype == ADAMW_DTYPE_FLOAT32 && info.len == 3);
    EXPECT_STATUS(adamw_optimizer_variable_info(opt, 1, &info), ADAMW_STATUS_OK);
    EXPECT(info.dtype == ADAMW_DTYPE_FLOAT32); /* the bfloat16 variable's m is float32 */
    char name[64];
    EXPECT_STATUS(adamw_optimizer_variable_name(opt, 5, name, sizeof name, &n), ADAMW_STATUS_OK);
    EXPECT(strcmp(name, "AdamW/master/b") == 0);

    adamw_gradient entries[2] = {{0}, {0}};
    entries[0] = (adamw_gradient){.variable = 0, .dtype = ADAMW_DTYPE_BFLOAT16, .data = wb, .len = 3, .dense = gb};
    entries[1] = (adamw_gradient){.variable = 1, .dtype = ADAMW_DTYPE_FLOAT64, .data = wd, .len = 2, .dense = gd};
    EXPECT_STATUS(adamw_optimizer_apply_gradients(opt, entries, 2, NULL), ADAMW_STATUS_OK);
    float master[3];
    EXPECT_STATUS(adamw_optimizer_get_variable(opt, 5, ADAMW_DTYPE_FLOAT32, master, 3), ADAMW_STATUS_OK);
    uint32_t bits[3];
    memcpy(bits, master, sizeof bits);
    EXPECT(bits[0] == 0x3efadeb6u && bits[1] == 0xbfbeb65du && bits[2] == 0x3ffeb5b4u);
    EXPECT(wb[0] == 0x3efb && wb[1] == 0xbfbf && wb[2] == 0x3fff);
    EXPECT(wd[0] == 0.9899601302246331 && wd[1] == -2.00991980652842);

    /* The config says so, and a checkpoint with masters fits only an optimizer with them. */
    char config[1024];
    EXPECT_STATUS(adamw_optimizer_get_config(opt, config, sizeof config, &n), ADAMW_STATUS_OK);
    EXPECT(strstr(config, "\"master_weights\":true") != NULL);
    size_t len = 0;
    EXPECT_STATUS(adamw_optimizer_save_own_variables(opt, NULL, 0, &len), ADAMW_STATUS_OK);
    uint8_t *bytes = malloc(len);
    EXPECT_STATUS(adamw_optimizer_save_own_variables(opt, bytes, len, &len), ADAMW_STATUS_OK);
    adamw_optimizer *plain = NULL;
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &plain), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_build(plain, vars, 2), ADAMW_STATUS_OK);
    EXPECT_REJECTED(plain, adamw_optimizer_load_own_variables(plain, bytes, len), ADAMW_STATUS_CHECKPOINT_MISMATCH);
    adamw_optimizer *again = NULL;
    EXPECT_STATUS(adamw_optimizer_from_config_json(config, strlen(config), &again), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_build(again, vars, 2), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_load_own_variables(again, bytes, len), ADAMW_STATUS_OK);
    float restored[3];
    EXPECT_STATUS(adamw_optimizer_get_variable(again, 5, ADAMW_DTYPE_FLOAT32, restored, 3), ADAMW_STATUS_OK);
    EXPECT(memcmp(restored, master, sizeof master) == 0);
    free(bytes);
    adamw_optimizer_free(again);
    adamw_optimizer_free(plain);
    adamw_optimizer_free(opt);
}

/* bfloat16 bits of x rounded to nearest even (x finite). */
static uint16_t bf16_rne(float x) {
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    return (uint16_t)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

/* A bfloat16 variable with a master takes float32 gradients too (accumulated in float32), its
   dtype in the entry's high bits: the master then follows a float32 variable given the same
   gradients, bit for bit (the first step's bits are tf-keras 2.15.1's for
   AdamW(learning_rate=0.01) on [0.5, -1.5, 2] with [0.1, -0.2, 0.3]), and the variable holds
   its rounding. Mixed dtypes anywhere else are rejected and change nothing. */
static void test_master_float32_gradients(void) {
    adamw_config cfg = adamw_config_default();
    cfg.learning_rate = 0.01;
    adamw_optimizer *mixed = NULL, *wide = NULL, *plain = NULL;
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &mixed), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &wide), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &plain), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_set_master_weights(mixed, 1), ADAMW_STATUS_OK);
    uint16_t wb[3] = {0x3f00, 0xbfc0, 0x4000}, wp[3] = {0x3f00, 0xbfc0, 0x4000};
    float wf[3] = {0.5f, -1.5f, 2.0f};
    const size_t shape[1] = {3};
    adamw_variable vb = {"w", ADAMW_DTYPE_BFLOAT16, 1, shape, wb, 0, 0, 0};
    adamw_variable vf = {"w", ADAMW_DTYPE_FLOAT32, 1, shape, wf, 0, 0, 0};
    EXPECT_STATUS(adamw_optimizer_build(mixed, &vb, 1), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_build(wide, &vf, 1), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_build(plain, &vb, 1), ADAMW_STATUS_OK);
    const uint32_t bf16_with_f32 = ADAMW_DTYPE_BFLOAT16 | (ADAMW_DTYPE_FLOAT32 << ADAMW_GRADIENT_DTYPE_SHIFT);
    const float grads[3][3] = {{0.1f, -0.2f, 0.3f}, {-0.37f, 0.011f, 2.5e-3f}, {1.0e-4f, 0.8f, -0.65f}};
    for (int step = 0; step < 3; step++) {
        adamw_gradient eb = {.variable = 0, .dtype = bf16_with_f32, .data = wb, .len = 3, .dense = grads[step]};
        adamw_gradient ef = {.variable = 0, .dtype = ADAMW_DTYPE_FLOAT32, .data = wf, .len = 3, .dense = grads[step]};
        EXPECT_STATUS(adamw_optimizer_apply_gradients(mixed, &eb, 1, NULL), ADAMW_STATUS_OK);
        EXPECT_STATUS(adamw_optimizer_apply_gradients(wide, &ef, 1, NULL), ADAMW_STATUS_OK);
        float master[3];
        EXPECT_STATUS(adamw_optimizer_get_variable(mixed, 3, ADAMW_DTYPE_FLOAT32, master, 3), ADAMW_STATUS_OK);
        EXPECT(memcmp(master, wf, sizeof wf) == 0);
        for (int i = 0; i < 3; i++) EXPECT(wb[i] == bf16_rne(wf[i]));
        if (step == 0) {
            uint32_t bits[3];
            memcpy(bits, wf, sizeof bits);
            EXPECT(bits[0] == 0x3efadeb6u && bits[1] == 0xbfbeb65du && bits[2] == 0x3ffeb5b4u);
        }
    }
    /* Without a master, a bfloat16 variable takes bfloat16 gradients only. */
    adamw_gradient e = {.variable = 0, .dtype = bf16_with_f32, .data = wp, .len = 3, .dense = grads[0]};
    EXPECT_REJECTED(plain, adamw_optimizer_apply_gradients(plain, &e, 1, NULL), ADAMW_STATUS_DTYPE_MISMATCH);
    EXPECT(wp[0] == 0x3f00 && wp[1] == 0xbfc0 && wp[2] == 0x4000);
    /* An unknown gradient dtype, and a float64 one, are rejected too. */
    e.dtype = ADAMW_DTYPE_BFLOAT16 | (9u << ADAMW_GRADIENT_DTYPE_SHIFT);
    e.data = wb;
    EXPECT_REJECTED(mixed, adamw_optimizer_apply_gradients(mixed, &e, 1, NULL), ADAMW_STATUS_INVALID_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_apply_gradients(mixed, &e, 1, NULL), ADAMW_STATUS_INVALID_ARGUMENT);
    char message[256];
    size_t message_len = 0;
    EXPECT_STATUS(adamw_last_error(message, sizeof message, &message_len), ADAMW_STATUS_OK);
    EXPECT(strstr(message, "the gradient's dtype") != NULL);
    const double g64[3] = {0.1, 0.2, 0.3};
    e.dtype = ADAMW_DTYPE_BFLOAT16 | (ADAMW_DTYPE_FLOAT64 << ADAMW_GRADIENT_DTYPE_SHIFT);
    e.dense = g64;
    EXPECT_REJECTED(mixed, adamw_optimizer_apply_gradients(mixed, &e, 1, NULL), ADAMW_STATUS_DTYPE_MISMATCH);
    /* A float32 gradient for a float32 variable may name its dtype twice. */
    adamw_gradient ef = {.variable = 0, .dtype = ADAMW_DTYPE_FLOAT32 | (ADAMW_DTYPE_FLOAT32 << ADAMW_GRADIENT_DTYPE_SHIFT),
                         .data = wf, .len = 3, .dense = grads[0]};
    EXPECT_STATUS(adamw_optimizer_apply_gradients(wide, &ef, 1, NULL), ADAMW_STATUS_OK);
    adamw_optimizer_free(plain);
    adamw_optimizer_free(wide);
    adamw_optimizer_free(mixed);
}

/* Keras' LossScaleOptimizer around AdamW: scaled gradients in, unscaled on the way; the values
   are tf-keras 2.15.1's for AdamW(learning_rate=0.01) in LossScaleOptimizer(dynamic=True,
   initial_scale=4096, dynamic_growth_steps=3) on [0.5, 1.5] with scaled gradients [100, -200]. */
static void test_loss_scale(void) {
    adamw_config cfg = adamw_config_default();
    cfg.learning_rate = 0.01;
    adamw_optimizer *opt = NULL;
    float scale = 0;
    int64_t counter = -1, it = 0;
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &opt), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_loss_scale(opt, &scale, NULL), ADAMW_STATUS_INVALID_ARGUMENT); /* none set */
    EXPECT_REJECTED(opt, adamw_optimizer_set_loss_scale(opt, 2, 4096, 3), ADAMW_STATUS_INVALID_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_set_loss_scale(NULL, 1, 4096, 3), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_set_loss_scale(opt, 1, 4096, 3), ADAMW_STATUS_OK);
    /* Read before build: the initial scale, as Keras' lso.loss_scale reads. */
    EXPECT_STATUS(adamw_optimizer_loss_scale(opt, &scale, &counter), ADAMW_STATUS_OK);
    EXPECT(scale == 4096.0f && counter == 0);
    EXPECT_STATUS(adamw_optimizer_loss_scale(opt, NULL, &counter), ADAMW_STATUS_NULL_ARGUMENT);
    float w[2] = {0.5f, 1.5f}, g[2] = {100.0f, -200.0f};
    const size_t shape[1] = {2};
    adamw_variable var = {"w", ADAMW_DTYPE_FLOAT32, 1, shape, w, 0, 0, 0};
    EXPECT_STATUS(adamw_optimizer_build(opt, &var, 1), ADAMW_STATUS_OK);
    EXPECT_REJECTED(opt, adamw_optimizer_set_loss_scale(opt, 0, 8, 0), ADAMW_STATUS_ALREADY_BUILT);
    adamw_gradient entry = dense_entry(0, w, 2, g);
    EXPECT_STATUS(adamw_optimizer_apply_gradients(opt, &entry, 1, &it), ADAMW_STATUS_OK);
    EXPECT(w[0] == 0.48998135328292847f && w[1] == 1.5099393129348755f);
    EXPECT_STATUS(adamw_optimizer_loss_scale(opt, &scale, &counter), ADAMW_STATUS_OK);
    EXPECT(scale == 4096.0f && counter == 1);
    EXPECT_STATUS(adamw_optimizer_apply_gradients(opt, &entry, 1, &it), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_apply_gradients(opt, &entry, 1, &it), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_loss_scale(opt, &scale, &counter), ADAMW_STATUS_OK);
    EXPECT(scale == 8192.0f && counter == 0 && it == 3); /* the third finite step in a row doubles it */
    EXPECT(w[0] == 0.4699443578720093f && w[1] == 1.5298171043395996f);
    /* An overflowed gradient: the step is skipped, the counter still advances, the scale halves. */
    float overflowed[2] = {INFINITY, 1.0f};
    entry.dense = overflowed;
    EXPECT_STATUS(adamw_optimizer_apply_gradients(opt, &entry, 1, &it), ADAMW_STATUS_OK);
    EXPECT(it == 4 && w[0] == 0.4699443578720093f && w[1] == 1.5298171043395996f);
    EXPECT_STATUS(adamw_optimizer_loss_scale(opt, &scale, &counter), ADAMW_STATUS_OK);
    EXPECT(scale == 4096.0f && counter == 0);

    /* The config is the LossScaleOptimizer's; the scale and its counter are in checkpoints. */
    char config[2048];
    size_t n = 0;
    EXPECT_STATUS(adamw_optimizer_get_config(opt, config, sizeof config, &n), ADAMW_STATUS_OK);
    EXPECT(strstr(config, "\"inner_optimizer\"") != NULL && strstr(config, "\"dynamic_growth_steps\":3") != NULL);
    size_t len = 0;
    EXPECT_STATUS(adamw_optimizer_save_own_variables(opt, NULL, 0, &len), ADAMW_STATUS_OK);
    uint8_t *bytes = malloc(len);
    EXPECT_STATUS(adamw_optimizer_save_own_variables(opt, bytes, len, &len), ADAMW_STATUS_OK);
    adamw_optimizer *plain = NULL;
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &plain), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_build(plain, &var, 1), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_load_own_variables(plain, bytes, len), ADAMW_STATUS_OK); /* as Keras: no scale */
    adamw_optimizer *again = NULL;
    EXPECT_STATUS(adamw_optimizer_from_config_json(config, strlen(config), &again), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_loss_scale(again, &scale, &counter), ADAMW_STATUS_OK);
    EXPECT(scale == 4096.0f && counter == 0);
    EXPECT_STATUS(adamw_optimizer_build(again, &var, 1), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_apply_gradients(again, &entry, 1, &it), ADAMW_STATUS_OK); /* skipped: 4096 -> 2048 */
    EXPECT_STATUS(adamw_optimizer_load_own_variables(again, bytes, len), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_loss_scale(again, &scale, &counter), ADAMW_STATUS_OK);
    EXPECT(scale == 4096.0f && counter == 0);
    EXPECT_STATUS(adamw_optimizer_iterations(again, &it), ADAMW_STATUS_OK);
    EXPECT(it == 4);
    free(bytes);
    adamw_optimizer_free(again);
    adamw_optimizer_free(plain);
    adamw_optimizer_free(opt);

    /* The non-finite guard and a dynamic scale both handle non-finite gradients: one at a time. */
    cfg.reject_non_finite_gradients = 1;
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &opt), ADAMW_STATUS_OK);
    EXPECT_REJECTED(opt, adamw_optimizer_set_loss_scale(opt, 1, 4096, 3), ADAMW_STATUS_INVALID_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_set_loss_scale(opt, 0, 3.0, 0), ADAMW_STATUS_OK); /* a fixed scale */
    adamw_optimizer_free(opt);
}

/* The device entry point: the kernels run on the host (ADAMW_DEVICE_KIND_HOST_KERNELS, in the test
 * build) give the CPU's bits; bad arguments and an unavailable device change nothing. */
static void test_device(void) {
    adamw_config cfg = adamw_config_default();
    cfg.learning_rate = 0.01;
    cfg.clipnorm = 0.5;
    cfg.amsgrad = 1;
    adamw_optimizer *cpu = NULL, *dev = NULL;
    cfg.jit_compile = 0; /* no device path without jit_compile */
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &cpu), ADAMW_STATUS_OK);
    EXPECT_REJECTED(cpu, adamw_optimizer_set_device(cpu, ADAMW_DEVICE_KIND_HOST_KERNELS, 0), ADAMW_STATUS_INVALID_ARGUMENT);
    adamw_optimizer_free(cpu);
    cfg.jit_compile = 1;
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &cpu), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &dev), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_set_device(NULL, ADAMW_DEVICE_KIND_CPU, 0), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_REJECTED(dev, adamw_optimizer_set_device(dev, 7, 0), ADAMW_STATUS_INVALID_ARGUMENT);
    /* GPU 4096 exists nowhere: without a driver or with one, a DEVICE status and no change. */
    EXPECT_REJECTED(dev, adamw_optimizer_set_device(dev, ADAMW_DEVICE_KIND_CUDA, 4096), ADAMW_STATUS_DEVICE);
    adamw_status on_host = adamw_optimizer_set_device(dev, ADAMW_DEVICE_KIND_HOST_KERNELS, 0);
    EXPECT(on_host == ADAMW_STATUS_OK || on_host == ADAMW_STATUS_DEVICE);
    if (on_host != ADAMW_STATUS_OK) {
        fprintf(stderr, "note: this libadamw has no host kernels (built without `host-kernels`)\n");
        adamw_optimizer_free(cpu);
        adamw_optimizer_free(dev);
        return;
    }
    enum { N = 3000 };
    static float w_cpu[N], w_dev[N], g[N];
    for (int i = 0; i < N; i++) {
        w_cpu[i] = w_dev[i] = 0.001f * (float)(i % 97) - 0.04f;
        g[i] = 0.01f * (float)((i * 7) % 13) - 0.06f;
    }
    const size_t shape[1] = {N};
    adamw_variable v_cpu = {"w", ADAMW_DTYPE_FLOAT32, 1, shape, w_cpu, 0, 0, 0};
    adamw_variable v_dev = {"w", ADAMW_DTYPE_FLOAT32, 1, shape, w_dev, 0, 0, 0};
    EXPECT_STATUS(adamw_optimizer_build(cpu, &v_cpu, 1), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_build(dev, &v_dev, 1), ADAMW_STATUS_OK);
    EXPECT_REJECTED(dev, adamw_optimizer_set_device(dev, ADAMW_DEVICE_KIND_CPU, 0), ADAMW_STATUS_ALREADY_BUILT);
    EXPECT_REJECTED(cpu, adamw_optimizer_set_stream(cpu, NULL), ADAMW_STATUS_INVALID_ARGUMENT); /* not on a device */
    EXPECT_STATUS(adamw_optimizer_set_stream(NULL, NULL), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_set_stream(dev, NULL), ADAMW_STATUS_OK);
    int64_t it = 0;
    for (int step = 0; step < 3; step++) {
        adamw_gradient a = dense_entry(0, w_cpu, N, g), b = dense_entry(0, w_dev, N, g);
        EXPECT_STATUS(adamw_optimizer_apply_gradients(cpu, &a, 1, &it), ADAMW_STATUS_OK);
        EXPECT_STATUS(adamw_optimizer_apply_gradients(dev, &b, 1, &it), ADAMW_STATUS_OK);
    }
    EXPECT(memcmp(w_cpu, w_dev, sizeof w_cpu) == 0);
    /* Sparse rows, the indices in host memory or (flagged) in device memory: the same step. */
    const int64_t rows_at[3] = {7, 2, 7};
    const float rows[3] = {0.5f, -0.25f, 0.125f};
    adamw_gradient sa = dense_entry(0, w_cpu, N, NULL), sb = dense_entry(0, w_dev, N, NULL);
    sa.dense = sb.dense = NULL;
    sa.indices = sb.indices = rows_at;
    sa.num_indices = sb.num_indices = 3;
    sa.values = sb.values = rows;
    sa.num_values = sb.num_values = 3;
    sb.dtype |= ADAMW_INDICES_ON_DEVICE;
    EXPECT_REJECTED(cpu, adamw_optimizer_apply_gradients(cpu, &sb, 1, &it), ADAMW_STATUS_INVALID_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_apply_gradients(cpu, &sa, 1, &it), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_apply_gradients(dev, &sb, 1, &it), ADAMW_STATUS_OK);
    EXPECT(memcmp(w_cpu, w_dev, sizeof w_cpu) == 0);
    const int64_t outside[1] = {N};
    sb.indices = outside;
    sb.num_indices = 1;
    sb.num_values = 1;
    EXPECT_REJECTED(dev, adamw_optimizer_apply_gradients(dev, &sb, 1, &it), ADAMW_STATUS_INDEX_OUT_OF_RANGE);
    /* A rejected call on the device changes nothing either. */
    adamw_gradient wrong = dense_entry(0, w_dev, N - 1, g);
    EXPECT_REJECTED(dev, adamw_optimizer_apply_gradients(dev, &wrong, 1, &it), ADAMW_STATUS_SHAPE_MISMATCH);
    snapshot a = take(cpu), b = take(dev);
    EXPECT(a.len == b.len && memcmp(a.bytes, b.bytes, a.len) == 0); /* the same checkpoint bytes */
    EXPECT(strstr(b.config, "\"jit_compile\":true") != NULL && strstr(a.config, "\"jit_compile\":false") != NULL);
    release(a);
    release(b);
    adamw_optimizer_free(cpu);
    adamw_optimizer_free(dev);
}

/* ---- Keras' own files (tests/data/keras_files, written by tf-keras 2.15) ---- */
#define KERAS_DIR "tests/data/keras_files/"

static adamw_optimizer *from_keras_archive(const char *path) {
    size_t len = 0;
    adamw_optimizer *opt = NULL;
    EXPECT_STATUS(adamw_keras_file_optimizer_config(path, NULL, 0, &len), ADAMW_STATUS_OK);
    char *json = malloc(len + 1);
    size_t small = 0;
    EXPECT_STATUS(adamw_keras_file_optimizer_config(path, json, len, &small), ADAMW_STATUS_BUFFER_TOO_SMALL);
    EXPECT_STATUS(adamw_keras_file_optimizer_config(path, json, len + 1, &len), ADAMW_STATUS_OK);
    EXPECT(strstr(json, "\"clipnorm\":0.5") != NULL);
    EXPECT_STATUS(adamw_optimizer_from_config_json(json, len, &opt), ADAMW_STATUS_OK);
    free(json);
    static const size_t kernel[2] = {5, 3}, bias[1] = {3};
    adamw_variable vars[2] = {
        {.name = "wide/kernel", .dtype = ADAMW_DTYPE_FLOAT64, .ndim = 2, .shape = kernel},
        {.name = "wide/bias", .dtype = ADAMW_DTYPE_FLOAT64, .ndim = 1, .shape = bias},
    };
    EXPECT_STATUS(adamw_optimizer_build(opt, vars, 2), ADAMW_STATUS_OK);
    return opt;
}

static void test_keras_files(void) {
    const char *archive = KERAS_DIR "float64_clipnorm.keras", *weights = KERAS_DIR "float64_clipnorm.weights.h5";
    adamw_optimizer *opt = from_keras_archive(archive);
    EXPECT_STATUS(adamw_optimizer_load_keras_file(opt, archive), ADAMW_STATUS_OK);
    int64_t iterations = 0;
    EXPECT_STATUS(adamw_optimizer_iterations(opt, &iterations), ADAMW_STATUS_OK);
    EXPECT(iterations == 3); /* Keras saved after three steps */
    snapshot from_archive = take(opt);
    EXPECT_STATUS(adamw_optimizer_load_keras_file(opt, weights), ADAMW_STATUS_OK);
    snapshot from_weights = take(opt);
    EXPECT(same(from_archive, from_weights));

    /* refusals change nothing */
    size_t len = 0;
    EXPECT_STATUS(adamw_keras_file_optimizer_config(weights, NULL, 0, &len), ADAMW_STATUS_INVALID_CHECKPOINT);
    EXPECT_STATUS(adamw_keras_file_optimizer_config(NULL, NULL, 0, &len), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_STATUS(adamw_keras_file_optimizer_config(archive, NULL, 0, NULL), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_STATUS(adamw_keras_file_optimizer_config(archive, NULL, 16, &len), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_REJECTED(opt, adamw_optimizer_load_keras_store(opt, NULL, 4), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_save_keras_file(opt, NULL, "target/c-tests/x.keras"), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_save_keras_file(opt, archive, NULL), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_save_keras_file(NULL, archive, "target/c-tests/x.keras"), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_load_keras_file(NULL, archive), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_REJECTED(opt, adamw_optimizer_load_keras_file(opt, KERAS_DIR "missing.keras"), ADAMW_STATUS_IO);
    EXPECT_REJECTED(opt, adamw_optimizer_load_keras_file(opt, KERAS_DIR "dense_amsgrad.keras"), ADAMW_STATUS_CHECKPOINT_MISMATCH);
    EXPECT_REJECTED(opt, adamw_optimizer_load_keras_file(opt, KERAS_DIR "float64_clipnorm.json"), ADAMW_STATUS_INVALID_CHECKPOINT);
    EXPECT_REJECTED(opt, adamw_optimizer_load_keras_file(opt, NULL), ADAMW_STATUS_NULL_ARGUMENT);

    /* the plain store Keras' variables make, through its own call only */
    uint8_t *store = read_whole(KERAS_DIR "float64_clipnorm.store.safetensors", &len);
    EXPECT_REJECTED(opt, adamw_optimizer_load_own_variables(opt, store, len), ADAMW_STATUS_INVALID_CHECKPOINT);
    EXPECT_REJECTED(opt, adamw_optimizer_load_keras_store(opt, store, len / 2), ADAMW_STATUS_INVALID_CHECKPOINT);
    EXPECT_STATUS(adamw_optimizer_load_keras_store(opt, store, len), ADAMW_STATUS_OK);
    snapshot from_store = take(opt);
    EXPECT(same(from_archive, from_store));
    free(store);

    /* written back into a copy of the archive, the state reads back whole */
    const char *out = "target/c-tests/float64_clipnorm.out.keras";
    EXPECT_STATUS(adamw_optimizer_save_keras_file(opt, archive, out), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_save_keras_file(opt, KERAS_DIR "dense_amsgrad.keras", "target/c-tests/refused.keras"),
                  ADAMW_STATUS_CHECKPOINT_MISMATCH);
    EXPECT(fopen("target/c-tests/refused.keras", "rb") == NULL);
    adamw_optimizer *again = from_keras_archive(out);
    EXPECT_STATUS(adamw_optimizer_load_keras_file(again, out), ADAMW_STATUS_OK);
    snapshot reread = take(again);
    EXPECT(same(from_archive, reread));
    release(from_archive);
    release(from_weights);
    release(from_store);
    release(reread);
    adamw_optimizer_free(again);
    adamw_optimizer_free(opt);
}

/* Per-variable multipliers and weight_decay_min_ndim: one step computed by hand, operation by
 * operation in float32 (compiled with -ffp-contract=off), from docs/numerics.md §22: the variable
 * steps as Keras' AdamW with learning_rate fl32(lr32 * r) and weight_decay fl64(wd * d). */
static void test_multipliers(void) {
    adamw_config cfg = adamw_config_default();
    cfg.learning_rate = 0.01;
    cfg.weight_decay = 0.05;
    adamw_optimizer *opt = NULL;
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &opt), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_set_variable_multipliers(opt, 0, 0.5, 1.0), ADAMW_STATUS_NOT_BUILT);
    EXPECT_REJECTED(opt, adamw_optimizer_set_weight_decay_min_ndim(opt, ADAMW_MAX_NDIM + 1), ADAMW_STATUS_INVALID_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_set_weight_decay_min_ndim(NULL, 2), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_set_weight_decay_min_ndim(opt, 2), ADAMW_STATUS_OK);
    adamw_variable_properties props;
    EXPECT_STATUS(adamw_optimizer_variable_properties(opt, 0, &props), ADAMW_STATUS_NOT_BUILT);
    const size_t w_shape[2] = {2, 3}, b_shape[1] = {3};
    adamw_variable vars[3] = {
        {.name = "dense/kernel", .dtype = ADAMW_DTYPE_FLOAT32, .ndim = 2, .shape = w_shape},
        {.name = "dense/bias", .dtype = ADAMW_DTYPE_FLOAT32, .ndim = 1, .shape = b_shape},
        {.name = "temperature", .dtype = ADAMW_DTYPE_FLOAT32, .ndim = 0, .shape = NULL},
    };
    EXPECT_STATUS(adamw_optimizer_build(opt, vars, 3), ADAMW_STATUS_OK);
    EXPECT_REJECTED(opt, adamw_optimizer_set_weight_decay_min_ndim(opt, 1), ADAMW_STATUS_ALREADY_BUILT);
    const double r = 0.37, d = 2.5;
    EXPECT_STATUS(adamw_optimizer_set_variable_multipliers(opt, 0, r, d), ADAMW_STATUS_OK);
    /* Refused, and nothing changes (the multipliers included: checked through the step below). */
    EXPECT_REJECTED(opt, adamw_optimizer_set_variable_multipliers(opt, 0, -1.0, 1.0), ADAMW_STATUS_INVALID_ARGUMENT);
    EXPECT_REJECTED(opt, adamw_optimizer_set_variable_multipliers(opt, 0, 1.0, NAN), ADAMW_STATUS_INVALID_ARGUMENT);
    EXPECT_REJECTED(opt, adamw_optimizer_set_variable_multipliers(opt, 0, INFINITY, 1.0), ADAMW_STATUS_INVALID_ARGUMENT);
    EXPECT_REJECTED(opt, adamw_optimizer_set_variable_multipliers(opt, 3, 1.0, 1.0), ADAMW_STATUS_UNKNOWN_VARIABLE);
    EXPECT_MESSAGE("out of range");
    EXPECT_STATUS(adamw_optimizer_set_variable_multipliers(NULL, 0, 1.0, 1.0), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_variable_properties(opt, 0, NULL), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_variable_properties(opt, 3, &props), ADAMW_STATUS_UNKNOWN_VARIABLE);

    EXPECT_STATUS(adamw_optimizer_variable_properties(opt, 0, &props), ADAMW_STATUS_OK);
    EXPECT(props.dtype == ADAMW_DTYPE_FLOAT32 && props.ndim == 2 && props.decayed == 1 && props.excluded == 0);
    EXPECT(props.learning_rate_multiplier == r && props.weight_decay_multiplier == d && props.has_master == 0);
    EXPECT_STATUS(adamw_optimizer_variable_properties(opt, 1, &props), ADAMW_STATUS_OK);
    EXPECT(props.ndim == 1 && props.decayed == 0 && props.excluded == 1 && props.learning_rate_multiplier == 1.0);
    EXPECT_STATUS(adamw_optimizer_variable_properties(opt, 2, &props), ADAMW_STATUS_OK);
    EXPECT(props.ndim == 0 && props.decayed == 0 && props.excluded == 1);
    char json[2048];
    size_t len = 0;
    EXPECT_STATUS(adamw_optimizer_get_config(opt, json, sizeof json, &len), ADAMW_STATUS_OK);
    EXPECT(strstr(json, "\"weight_decay_min_ndim\":2") != NULL);

    float w[6] = {0.5f, -1.25f, 2.0f, -0.0f, 0.75f, -3.0f}, gw[6] = {0.1f, -0.2f, 0.3f, 0.05f, -0.4f, 0.25f};
    float b[3] = {0.5f, -0.5f, 1.5f}, gb[3] = {0.3f, 0.2f, -0.1f};
    float t[1] = {1.0f}, gt[1] = {-0.7f};
    float w0[6], b0[3];
    memcpy(w0, w, sizeof w);
    memcpy(b0, b, sizeof b);
    adamw_gradient entries[3] = {
        {.variable = 0, .dtype = ADAMW_DTYPE_FLOAT32, .data = w, .len = 6, .dense = gw},
        {.variable = 1, .dtype = ADAMW_DTYPE_FLOAT32, .data = b, .len = 3, .dense = gb},
        {.variable = 2, .dtype = ADAMW_DTYPE_FLOAT32, .data = t, .len = 1, .dense = gt},
    };
    EXPECT_STATUS(adamw_optimizer_apply_gradients(opt, entries, 3, NULL), ADAMW_STATUS_OK);

    /* Step 1 by hand: beta powers 0.9f and 0.999f; 1 - beta in double, rounded to float. */
    const float lr32 = (float)0.01, one_minus_b1 = (float)(1.0 - 0.9), one_minus_b2 = (float)(1.0 - 0.999);
    const float eps = (float)1e-7, b1_power = 0.9f, b2_power = 0.999f;
    const float lr_w = (float)((double)lr32 * r), wd_w = (float)(0.05 * d);
    const float alpha_w = (lr_w * sqrtf(1.0f - b2_power)) / (1.0f - b1_power);
    const float alpha = (lr32 * sqrtf(1.0f - b2_power)) / (1.0f - b1_power);
    int same = 1;
    for (int i = 0; i < 6; i++) {
        float x = w0[i] - (w0[i] * wd_w) * lr_w; /* decayed, with the variable's rate and decay */
        float m = 0.0f + (gw[i] - 0.0f) * one_minus_b1, v = 0.0f + (gw[i] * gw[i] - 0.0f) * one_minus_b2;
        float want = x - (m * alpha_w) / (sqrtf(v) + eps);
        same &= memcmp(&want, &w[i], 4) == 0;
    }
    EXPECT(same);
    same = 1;
    for (int i = 0; i < 3; i++) { /* excluded (1 dimension): no decay, the shared rate */
        float m = 0.0f + (gb[i] - 0.0f) * one_minus_b1, v = 0.0f + (gb[i] * gb[i] - 0.0f) * one_minus_b2;
        float want = b0[i] - (m * alpha) / (sqrtf(v) + eps);
        same &= memcmp(&want, &b[i], 4) == 0;
    }
    EXPECT(same);
    /* Without the multipliers the kernel moves otherwise: the check above is not vacuous. */
    float plain = w0[1] - (w0[1] * (float)0.05) * lr32;
    plain = plain - ((0.0f + gw[1] * one_minus_b1) * alpha) / (sqrtf(0.0f + (gw[1] * gw[1]) * one_minus_b2) + eps);
    EXPECT(memcmp(&plain, &w[1], 4) != 0);
    adamw_optimizer_free(opt);
}

/* The step report: the norms from the update pass in the documented order (for gradients of
 * at most 32 values each square is one float32 lane: the sum is the float32 squares widened and
 * added in order), a loss scale's skipped step, and global_clipnorm's Keras norm and factor. */
static void test_step_report(void) {
    adamw_config cfg = adamw_config_default();
    adamw_optimizer *opt = NULL;
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &opt), ADAMW_STATUS_OK);
    adamw_step_report report;
    EXPECT_STATUS(adamw_optimizer_step_report(opt, &report), ADAMW_STATUS_OK);
    EXPECT(report.iterations == 0 && report.applied == 0 && report.norms == ADAMW_NORM_SOURCE_NONE);
    EXPECT(isnan(report.global_norm));
    double norms[2];
    EXPECT_STATUS(adamw_optimizer_gradient_norms(opt, norms, 2), ADAMW_STATUS_NOT_BUILT);
    EXPECT_REJECTED(opt, adamw_optimizer_set_report_gradient_norms(opt, 2), ADAMW_STATUS_INVALID_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_set_report_gradient_norms(opt, 1), ADAMW_STATUS_OK);
    const size_t w_shape[1] = {6}, b_shape[1] = {3};
    adamw_variable vars[2] = {
        {.name = "w", .dtype = ADAMW_DTYPE_FLOAT32, .ndim = 1, .shape = w_shape},
        {.name = "b", .dtype = ADAMW_DTYPE_FLOAT32, .ndim = 1, .shape = b_shape},
    };
    EXPECT_STATUS(adamw_optimizer_build(opt, vars, 2), ADAMW_STATUS_OK);
    float w[6] = {0.5f, -1.25f, 2.0f, 0.0f, 0.75f, -3.0f}, gw[6] = {0.1f, -0.2f, 0.3f, 0.05f, -0.4f, 0.25f};
    float b[3] = {0.5f, -0.5f, 1.5f}, gb[3] = {0.3f, 0.2f, -0.1f};
    adamw_gradient entries[2] = {
        {.variable = 0, .dtype = ADAMW_DTYPE_FLOAT32, .data = w, .len = 6, .dense = gw},
        {.variable = 1, .dtype = ADAMW_DTYPE_FLOAT32, .data = b, .len = 3, .dense = gb},
    };
    EXPECT_STATUS(adamw_optimizer_apply_gradients(opt, entries, 2, NULL), ADAMW_STATUS_OK);
    double sum_w = 0, sum_b = 0;
    for (int i = 0; i < 6; i++) sum_w += (double)(gw[i] * gw[i]);
    for (int i = 0; i < 3; i++) sum_b += (double)(gb[i] * gb[i]);
    EXPECT_STATUS(adamw_optimizer_step_report(opt, &report), ADAMW_STATUS_OK);
    EXPECT(report.iterations == 1 && report.applied == 1 && report.has_loss_scale == 0);
    EXPECT(report.norms == ADAMW_NORM_SOURCE_UPDATE_PASS && report.clip_factor == 1.0);
    EXPECT(report.global_norm == sqrt(0.0 + sum_w + sum_b));
    EXPECT_STATUS(adamw_optimizer_gradient_norms(opt, norms, 2), ADAMW_STATUS_OK);
    EXPECT(norms[0] == sqrt(sum_w) && norms[1] == sqrt(sum_b));
    EXPECT_REJECTED(opt, adamw_optimizer_gradient_norms(opt, norms, 3), ADAMW_STATUS_INVALID_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_gradient_norms(opt, NULL, 2), ADAMW_STATUS_NULL_ARGUMENT);
    /* Only the bias listed: the kernel's norm is NaN. */
    EXPECT_STATUS(adamw_optimizer_apply_gradients(opt, &entries[1], 1, NULL), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_gradient_norms(opt, norms, 2), ADAMW_STATUS_OK);
    EXPECT(isnan(norms[0]) && norms[1] == sqrt(sum_b));
    adamw_optimizer_free(opt);

    /* A dynamic loss scale skips a step whose gradient overflowed, and the report says so. */
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &opt), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_set_loss_scale(opt, 1, 1024.0, 2000), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_build(opt, vars, 1), ADAMW_STATUS_OK);
    gw[2] = INFINITY;
    EXPECT_STATUS(adamw_optimizer_apply_gradients(opt, entries, 1, NULL), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_step_report(opt, &report), ADAMW_STATUS_OK);
    EXPECT(report.iterations == 1 && report.applied == 0 && report.has_loss_scale == 1 && report.loss_scale == 1024.0f);
    gw[2] = 0.3f;
    adamw_optimizer_free(opt);

    /* global_clipnorm: Keras' norm (a float32) and its factor, at no extra cost. */
    cfg.global_clipnorm = 0.25;
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &opt), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_build(opt, vars, 2), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_apply_gradients(opt, entries, 2, NULL), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_step_report(opt, &report), ADAMW_STATUS_OK);
    EXPECT(report.norms == ADAMW_NORM_SOURCE_GLOBAL_CLIPNORM);
    EXPECT(report.global_norm == (double)(float)report.global_norm);
    EXPECT(fabs(report.global_norm - sqrt(sum_w + sum_b)) < 1e-6);
    float factor = 0.25f * fminf(1.0f / (float)report.global_norm, 1.0f / 0.25f);
    EXPECT(report.clip_factor == (double)factor && report.clip_factor < 1.0);
    adamw_optimizer_free(opt);
}

/* Resetting one variable: its moments zeroed, its EMA average from the new values, the other
 * variable untouched; refusals change nothing. */
static void test_reset_variable(void) {
    adamw_config cfg = adamw_config_default();
    cfg.use_ema = 1;
    adamw_optimizer *opt = NULL;
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &opt), ADAMW_STATUS_OK);
    float w[4] = {1, 2, 3, 4}, b[2] = {0.5f, -0.5f}, gw[4] = {0.1f, 0.2f, 0.3f, 0.4f}, gb[2] = {1, -1};
    const size_t w_shape[1] = {4}, b_shape[1] = {2};
    adamw_variable vars[2] = {
        {.name = "w", .dtype = ADAMW_DTYPE_FLOAT32, .ndim = 1, .shape = w_shape, .data = w},
        {.name = "b", .dtype = ADAMW_DTYPE_FLOAT32, .ndim = 1, .shape = b_shape, .data = b},
    };
    EXPECT_STATUS(adamw_optimizer_reset_variable(opt, 0, ADAMW_DTYPE_FLOAT32, w, 4), ADAMW_STATUS_NOT_BUILT);
    EXPECT_STATUS(adamw_optimizer_build(opt, vars, 2), ADAMW_STATUS_OK);
    adamw_gradient entries[2] = {
        {.variable = 0, .dtype = ADAMW_DTYPE_FLOAT32, .data = w, .len = 4, .dense = gw},
        {.variable = 1, .dtype = ADAMW_DTYPE_FLOAT32, .data = b, .len = 2, .dense = gb},
    };
    EXPECT_STATUS(adamw_optimizer_apply_gradients(opt, entries, 2, NULL), ADAMW_STATUS_OK);
    /* Keras' order: iteration, average w, average b, m w, v w, m b, v b. */
    float b_m_before[2], b_m_after[2], slot[4];
    EXPECT_STATUS(adamw_optimizer_get_variable(opt, 5, ADAMW_DTYPE_FLOAT32, b_m_before, 2), ADAMW_STATUS_OK);
    const float fresh[4] = {-1, -2, -3, -4};
    double wide[4] = {0};
    EXPECT_REJECTED(opt, adamw_optimizer_reset_variable(opt, 0, ADAMW_DTYPE_FLOAT32, NULL, 0), ADAMW_STATUS_INVALID_ARGUMENT);
    EXPECT_REJECTED(opt, adamw_optimizer_reset_variable(opt, 0, ADAMW_DTYPE_FLOAT64, wide, 4), ADAMW_STATUS_DTYPE_MISMATCH);
    EXPECT_REJECTED(opt, adamw_optimizer_reset_variable(opt, 0, ADAMW_DTYPE_FLOAT32, fresh, 3), ADAMW_STATUS_SHAPE_MISMATCH);
    EXPECT_REJECTED(opt, adamw_optimizer_reset_variable(opt, 2, ADAMW_DTYPE_FLOAT32, fresh, 4), ADAMW_STATUS_UNKNOWN_VARIABLE);
    EXPECT_REJECTED(opt, adamw_optimizer_reset_variable(opt, 0, ADAMW_DTYPE_FLOAT32, NULL, 4), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_reset_variable(opt, 0, ADAMW_DTYPE_FLOAT32, fresh, 4), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_get_variable(opt, 1, ADAMW_DTYPE_FLOAT32, slot, 4), ADAMW_STATUS_OK);
    EXPECT(memcmp(slot, fresh, sizeof fresh) == 0); /* the average starts again from the new values */
    EXPECT_STATUS(adamw_optimizer_get_variable(opt, 3, ADAMW_DTYPE_FLOAT32, slot, 4), ADAMW_STATUS_OK);
    EXPECT(slot[0] == 0 && slot[1] == 0 && slot[2] == 0 && slot[3] == 0); /* m */
    EXPECT_STATUS(adamw_optimizer_get_variable(opt, 4, ADAMW_DTYPE_FLOAT32, slot, 4), ADAMW_STATUS_OK);
    EXPECT(slot[0] == 0 && slot[3] == 0); /* v */
    EXPECT_STATUS(adamw_optimizer_get_variable(opt, 5, ADAMW_DTYPE_FLOAT32, b_m_after, 2), ADAMW_STATUS_OK);
    EXPECT(memcmp(b_m_before, b_m_after, sizeof b_m_after) == 0 && b_m_after[0] != 0); /* untouched */
    int64_t it = 0;
    EXPECT_STATUS(adamw_optimizer_iterations(opt, &it), ADAMW_STATUS_OK);
    EXPECT(it == 1);
    adamw_optimizer_free(opt);
}

/* Keras 3's gradient accumulation against Keras 3's own numbers (keras 3.15.1, tensorflow-cpu
 * 2.20.0, eager; the script is in docs/numerics.md §25): two calls a window, global_clipnorm 1,
 * weight_decay 0.01, learning_rate 0.1; three calls, so the last one only accumulates. */
static void test_gradient_accumulation(void) {
    adamw_config cfg = adamw_config_default();
    cfg.learning_rate = 0.1;
    cfg.weight_decay = 0.01;
    cfg.global_clipnorm = 1.0;
    adamw_optimizer *opt = NULL;
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &opt), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_set_gradient_accumulation_steps(NULL, 2), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_REJECTED(opt, adamw_optimizer_set_gradient_accumulation_steps(opt, 1), ADAMW_STATUS_INVALID_ARGUMENT);
    EXPECT_MESSAGE("gradient_accumulation_steps");
    EXPECT_REJECTED(opt, adamw_optimizer_set_gradient_accumulation_steps(opt, -4), ADAMW_STATUS_INVALID_ARGUMENT);
    EXPECT_REJECTED(opt, adamw_optimizer_set_gradient_accumulation_steps(opt, (int64_t)1 << 40), ADAMW_STATUS_INVALID_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_set_gradient_accumulation_steps(opt, 2), ADAMW_STATUS_OK);
    EXPECT_REJECTED(opt, adamw_optimizer_set_master_weights(opt, 1), ADAMW_STATUS_INVALID_ARGUMENT);
    const size_t w_shape[1] = {3}, b_shape[1] = {2};
    adamw_variable vars[2] = {
        {.name = "w", .dtype = ADAMW_DTYPE_FLOAT32, .ndim = 1, .shape = w_shape},
        {.name = "b", .dtype = ADAMW_DTYPE_FLOAT32, .ndim = 1, .shape = b_shape},
    };
    EXPECT_STATUS(adamw_optimizer_build(opt, vars, 2), ADAMW_STATUS_OK);
    EXPECT_REJECTED(opt, adamw_optimizer_set_gradient_accumulation_steps(opt, 3), ADAMW_STATUS_ALREADY_BUILT);
    float w[3] = {0.5f, -1.0f, 2.0f}, b[2] = {0.25f, -0.75f};
    const float gw[3][3] = {{0.1f, 0.2f, -0.3f}, {0.3f, -0.1f, 0.5f}, {1.0f, 1.0f, 1.0f}};
    const float gb[3][2] = {{0.5f, 0.5f}, {-1.5f, 2.0f}, {0.0f, 3.0f}};
    const int64_t want_iterations[3] = {0, 1, 1};
    for (int call = 0; call < 3; call++) {
        adamw_gradient entries[2] = {
            {.variable = 0, .dtype = ADAMW_DTYPE_FLOAT32, .data = w, .len = 3, .dense = gw[call]},
            {.variable = 1, .dtype = ADAMW_DTYPE_FLOAT32, .data = b, .len = 2, .dense = gb[call]},
        };
        int64_t iterations = -1, steps = -1, calls = -1;
        EXPECT_STATUS(adamw_optimizer_apply_gradients(opt, entries, 2, &iterations), ADAMW_STATUS_OK);
        EXPECT(iterations == want_iterations[call]);
        EXPECT_STATUS(adamw_optimizer_gradient_accumulation(opt, &steps, &calls), ADAMW_STATUS_OK);
        EXPECT(steps == 2 && calls == call + 1);
        if (call == 0) { /* only accumulated */
            EXPECT(w[0] == 0.5f && w[1] == -1.0f && w[2] == 2.0f && b[0] == 0.25f && b[1] == -0.75f);
        }
    }
    /* Keras 3 after the update call (the third only accumulates). */
    EXPECT(w[0] == 0x1.991746p-2f && w[1] == -0x1.195774p+0f && w[2] == 0x1.e5e3a8p+0f);
    EXPECT(b[0] == 0x1.662478p-2f && b[1] == -0x1.b2d0c4p-1f);
    /* The accumulators, the last two optimizer variables: the third call's gradients. */
    size_t count = 0;
    EXPECT_STATUS(adamw_optimizer_num_variables(opt, &count), ADAMW_STATUS_OK);
    EXPECT(count == 1 + 4 + 2);
    float acc_w[3], acc_b[2];
    EXPECT_STATUS(adamw_optimizer_get_variable(opt, count - 2, ADAMW_DTYPE_FLOAT32, acc_w, 3), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_get_variable(opt, count - 1, ADAMW_DTYPE_FLOAT32, acc_b, 2), ADAMW_STATUS_OK);
    EXPECT(acc_w[0] == 1.0f && acc_w[1] == 1.0f && acc_w[2] == 1.0f && acc_b[0] == 0.0f && acc_b[1] == 3.0f);
    int64_t counter = 0;
    EXPECT_STATUS(adamw_optimizer_get_variable(opt, 0, ADAMW_DTYPE_INT64, &counter, 1), ADAMW_STATUS_OK);
    EXPECT(counter == 3);
    char json[2048];
    size_t len = 0;
    EXPECT_STATUS(adamw_optimizer_get_config(opt, json, sizeof json, &len), ADAMW_STATUS_OK);
    EXPECT(strstr(json, "\"gradient_accumulation_steps\":2") != NULL);
    EXPECT_STATUS(adamw_optimizer_gradient_accumulation(opt, NULL, NULL), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_gradient_accumulation(NULL, NULL, NULL), ADAMW_STATUS_NULL_ARGUMENT);
    adamw_optimizer_free(opt);
}

/* Variables added after build: an optimizer that adds `b` after a step steps it exactly as one
 * built over [w, b] whose first step listed `b` without a gradient (Keras' semantics of a slot
 * made late: zero moments, the optimizer's iterations). */
static void test_add_variables(void) {
    adamw_config cfg = adamw_config_default();
    cfg.learning_rate = 0.1;
    cfg.use_ema = 1;
    const size_t w_shape[1] = {3}, b_shape[1] = {2};
    float w_init[3] = {0.5f, -1.0f, 2.0f}, b_init[2] = {0.25f, -0.75f};
    adamw_variable vars[2] = {
        {.name = "w", .dtype = ADAMW_DTYPE_FLOAT32, .ndim = 1, .shape = w_shape, .data = w_init},
        {.name = "b", .dtype = ADAMW_DTYPE_FLOAT32, .ndim = 1, .shape = b_shape, .data = b_init},
    };
    adamw_optimizer *late = NULL, *early = NULL;
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &late), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &early), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_add_variables(late, &vars[1], 1), ADAMW_STATUS_NOT_BUILT);
    EXPECT_STATUS(adamw_optimizer_build(late, vars, 1), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_build(early, vars, 2), ADAMW_STATUS_OK);
    float w1[3], w2[3], b1[2], b2[2];
    memcpy(w1, w_init, sizeof w1), memcpy(w2, w_init, sizeof w2), memcpy(b1, b_init, sizeof b1), memcpy(b2, b_init, sizeof b2);
    const float gw[3] = {0.1f, 0.2f, -0.3f}, gb[2] = {0.5f, -1.5f};
    adamw_gradient first_late[1] = {{.variable = 0, .dtype = ADAMW_DTYPE_FLOAT32, .data = w1, .len = 3, .dense = gw}};
    adamw_gradient first_early[2] = {
        {.variable = 0, .dtype = ADAMW_DTYPE_FLOAT32, .data = w2, .len = 3, .dense = gw},
        {.variable = 1, .dtype = ADAMW_DTYPE_FLOAT32, .data = b2, .len = 2},
    };
    EXPECT_STATUS(adamw_optimizer_apply_gradients(late, first_late, 1, NULL), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_apply_gradients(early, first_early, 2, NULL), ADAMW_STATUS_OK);
    /* Refused, nothing changed: a name that exists; no values with EMA. */
    EXPECT_REJECTED(late, adamw_optimizer_add_variables(late, &vars[0], 1), ADAMW_STATUS_INVALID_ARGUMENT);
    EXPECT_MESSAGE("exists");
    adamw_variable no_data = vars[1];
    no_data.data = NULL;
    EXPECT_REJECTED(late, adamw_optimizer_add_variables(late, &no_data, 1), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_add_variables(NULL, &vars[1], 1), ADAMW_STATUS_NULL_ARGUMENT);
    EXPECT_STATUS(adamw_optimizer_add_variables(late, &vars[1], 1), ADAMW_STATUS_OK);
    for (int step = 0; step < 2; step++) {
        adamw_gradient both_late[2] = {
            {.variable = 0, .dtype = ADAMW_DTYPE_FLOAT32, .data = w1, .len = 3, .dense = gw},
            {.variable = 1, .dtype = ADAMW_DTYPE_FLOAT32, .data = b1, .len = 2, .dense = gb},
        };
        adamw_gradient both_early[2] = {
            {.variable = 0, .dtype = ADAMW_DTYPE_FLOAT32, .data = w2, .len = 3, .dense = gw},
            {.variable = 1, .dtype = ADAMW_DTYPE_FLOAT32, .data = b2, .len = 2, .dense = gb},
        };
        EXPECT_STATUS(adamw_optimizer_apply_gradients(late, both_late, 2, NULL), ADAMW_STATUS_OK);
        EXPECT_STATUS(adamw_optimizer_apply_gradients(early, both_early, 2, NULL), ADAMW_STATUS_OK);
    }
    EXPECT(memcmp(w1, w2, sizeof w1) == 0 && memcmp(b1, b2, sizeof b1) == 0 && b1[0] != b_init[0]);
    size_t n_late = 0, n_early = 0;
    EXPECT_STATUS(adamw_optimizer_save_own_variables(late, NULL, 0, &n_late), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_save_own_variables(early, NULL, 0, &n_early), ADAMW_STATUS_OK);
    EXPECT(n_late == n_early);
    adamw_optimizer_free(late);
    adamw_optimizer_free(early);
}

int main(void) {
    test_versions_and_errors();
    test_create();
    test_null_handle();
    test_build();
    test_apply();
    test_callbacks();
    test_non_finite_guard();
    test_minimize();
    test_variables_and_weights();
    test_checkpoints();
    test_sharded();
    test_load_shards();
    test_16_bit();
    test_master_weights();
    test_master_float32_gradients();
    test_loss_scale();
    test_device();
    test_keras_files();
    test_multipliers();
    test_step_report();
    test_reset_variable();
    test_gradient_accumulation();
    test_add_variables();
    return report();
}
