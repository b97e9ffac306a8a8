/* Every status a function's header doc lists ("Errors: ...", include/adamw.h) is one it returns,
 * and it returns no other: the program reads the header, drives each function into each listed
 * failure, and checks that
 *   1. each drive returns the status it aims at, and that status is in the function's list;
 *   2. every listed (function, status) pair is driven, except the few in `not_driven` (an
 *      allocation that fails, a thread that cannot start), each with its reason.
 * Three drives apply to every function that takes a handle: NULL (NULL_ARGUMENT), a pointer that
 * is not a handle (INVALID_ARGUMENT) and a call from a callback of the same optimizer's step
 * (BUSY). Run from the repository root by tools/test-c.sh (ASan + UBSan). */
#include <math.h>

#include "expect.h"

/* ---- the header's lists ---- */
#define MAX_FUNCTIONS 80
#define MAX_STATUSES 32
typedef struct {
    char name[64];
    int listed[MAX_STATUSES]; /* by status value */
    int driven[MAX_STATUSES];
} function_doc;
static function_doc docs[MAX_FUNCTIONS];
static int num_docs = 0;
static int num_statuses = 0;

static function_doc *doc_of(const char *name) {
    for (int i = 0; i < num_docs; i++) {
        if (strcmp(docs[i].name, name) == 0) return &docs[i];
    }
    return NULL;
}

/* A status's short name ("NULL_ARGUMENT") as the docs write it. */
static const char *short_name(int status) { return adamw_status_name((uint32_t)status) + strlen("ADAMW_STATUS_"); }

/* Whether `word` occurs in `text` as a whole word. */
static int has_word(const char *text, const char *word) {
    size_t n = strlen(word);
    for (const char *p = strstr(text, word); p != NULL; p = strstr(p + 1, word)) {
        int before = p == text || !(p[-1] == '_' || (p[-1] >= 'A' && p[-1] <= 'Z'));
        int after = !(p[n] == '_' || (p[n] >= 'A' && p[n] <= 'Z'));
        if (before && after) return 1;
    }
    return 0;
}

static void read_header(void) {
    while (strcmp(adamw_status_name((uint32_t)num_statuses), "ADAMW_STATUS_UNKNOWN") != 0) num_statuses++;
    FILE *f = fopen("include/adamw.h", "r");
    EXPECT(f != NULL);
    if (f == NULL) return;
    static char comment[16384];
    char line[1024];
    comment[0] = '\0';
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "//", 2) == 0) {
            if (strlen(comment) + strlen(line) < sizeof comment) strcat(comment, line + 2);
            continue;
        }
        const char *decl = "enum adamw_status adamw_";
        if (strncmp(line, decl, strlen(decl)) == 0 && num_docs < MAX_FUNCTIONS) {
            function_doc *d = &docs[num_docs++];
            size_t n = strcspn(line + strlen("enum adamw_status "), "(");
            memcpy(d->name, line + strlen("enum adamw_status "), n < 63 ? n : 63);
            const char *errors = strstr(comment, "Errors:");
            EXPECT(errors != NULL);
            if (errors == NULL) fprintf(stderr, "  %s documents no Errors:\n", d->name);
            for (int s = 1; errors != NULL && s < num_statuses; s++) d->listed[s] = has_word(errors, short_name(s));
        }
        comment[0] = '\0';
    }
    fclose(f);
}

/* ---- driving ---- */
static void drove(const char *function, adamw_status expected, adamw_status got, int line) {
    function_doc *d = doc_of(function);
    checks++;
    if (got != expected) {
        char message[512];
        adamw_last_error(message, sizeof message, NULL);
        failures++;
        fprintf(stderr, "tests/c/test_statuses.c:%d: %s returned %s, expected %s (%s)\n", line, function,
                adamw_status_name(got), adamw_status_name(expected), message);
    }
    checks++;
    if (d == NULL || (got != ADAMW_STATUS_OK && (int)got < num_statuses && !d->listed[got])) {
        failures++;
        fprintf(stderr, "tests/c/test_statuses.c:%d: %s returns %s, which its header doc does not list\n", line,
                function, adamw_status_name(got));
    }
    if (d != NULL && (int)got < num_statuses) d->driven[got] = 1;
}

/* DRIVE(function, expected status, the call) */
#define DRIVE(function, expected, call) drove(#function, expected, (call), __LINE__)

/* The fixture: a built optimizer over float32 w [3] (and its buffers). */
static const size_t shape3[1] = {3};
static float w[3] = {1, 2, 3}, grad[3] = {0.1f, 0.2f, 0.3f};

static adamw_optimizer *built(adamw_config cfg) {
    adamw_optimizer *opt = NULL;
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &opt), ADAMW_STATUS_OK);
    adamw_variable var = {"w", ADAMW_DTYPE_FLOAT32, 1, shape3, w, 0, 0, 0};
    EXPECT_STATUS(adamw_optimizer_build(opt, &var, 1), ADAMW_STATUS_OK);
    return opt;
}

static adamw_optimizer *unbuilt(void) {
    adamw_config cfg = adamw_config_default();
    adamw_optimizer *opt = NULL;
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &opt), ADAMW_STATUS_OK);
    return opt;
}

static int32_t no_gradients(void *user_data, const adamw_gradient *entries, size_t n) {
    (void)user_data, (void)entries, (void)n;
    return 0;
}

/* ---- every function that takes a handle, called with otherwise valid arguments ---- */
static uint8_t checkpoint[4096];
static size_t checkpoint_len = 0;
static char text[4096];
static size_t out_len;

static adamw_status call_save_own_variables(adamw_optimizer *o) { return adamw_optimizer_save_own_variables(o, NULL, 0, &out_len); }
static adamw_status call_load_own_variables(adamw_optimizer *o) { return adamw_optimizer_load_own_variables(o, checkpoint, checkpoint_len); }
static adamw_status call_load_shards(adamw_optimizer *o) {
    const uint8_t *c[1] = {checkpoint};
    return adamw_optimizer_load_shards(o, c, &checkpoint_len, 1);
}
static adamw_status call_save_file(adamw_optimizer *o) { return adamw_optimizer_save_file(o, "target/c-tests/statuses.ckpt"); }
static adamw_status call_load_file(adamw_optimizer *o) { return adamw_optimizer_load_file(o, "target/c-tests/statuses.ckpt"); }
static adamw_status call_load_keras_file(adamw_optimizer *o) { return adamw_optimizer_load_keras_file(o, "tests/data/keras_files/dense_amsgrad.keras"); }
static adamw_status call_save_keras_file(adamw_optimizer *o) {
    return adamw_optimizer_save_keras_file(o, "tests/data/keras_files/dense_amsgrad.keras", "target/c-tests/statuses.keras");
}
static adamw_status call_load_keras_store(adamw_optimizer *o) { return adamw_optimizer_load_keras_store(o, checkpoint, checkpoint_len); }
static adamw_status call_get_config(adamw_optimizer *o) { return adamw_optimizer_get_config(o, text, sizeof text, &out_len); }
static adamw_status call_iterations(adamw_optimizer *o) {
    int64_t it;
    return adamw_optimizer_iterations(o, &it);
}
static adamw_status call_set_iterations(adamw_optimizer *o) { return adamw_optimizer_set_iterations(o, 3); }
static adamw_status call_current_learning_rate(adamw_optimizer *o) {
    float lr;
    return adamw_optimizer_current_learning_rate(o, &lr);
}
static adamw_status call_set_learning_rate(adamw_optimizer *o) { return adamw_optimizer_set_learning_rate(o, 0.5); }
static adamw_status call_exclude_from_weight_decay(adamw_optimizer *o) {
    const size_t v[1] = {0};
    return adamw_optimizer_exclude_from_weight_decay(o, v, 1, NULL, 0);
}
static adamw_status call_build(adamw_optimizer *o) {
    adamw_variable var = {"w", ADAMW_DTYPE_FLOAT32, 1, shape3, w, 0, 0, 0};
    return adamw_optimizer_build(o, &var, 1);
}
static adamw_status call_set_threads(adamw_optimizer *o) { return adamw_optimizer_set_threads(o, 1); }
static void no_tasks(void *user_data, size_t n, adamw_task_fn task, void *task_data) {
    (void)user_data;
    (void)n;
    (void)task;
    (void)task_data;
}
static adamw_status call_set_parallel_for(adamw_optimizer *o) { return adamw_optimizer_set_parallel_for(o, no_tasks, NULL); }
static adamw_status call_set_device(adamw_optimizer *o) { return adamw_optimizer_set_device(o, ADAMW_DEVICE_KIND_CPU, 0); }
static adamw_status call_set_stream(adamw_optimizer *o) { return adamw_optimizer_set_stream(o, NULL); }
static adamw_status call_set_master_weights(adamw_optimizer *o) { return adamw_optimizer_set_master_weights(o, 1); }
static adamw_status call_set_loss_scale(adamw_optimizer *o) { return adamw_optimizer_set_loss_scale(o, 1, 64, 2); }
static adamw_status call_loss_scale(adamw_optimizer *o) {
    float scale;
    return adamw_optimizer_loss_scale(o, &scale, NULL);
}
static adamw_status call_reserve_sparse(adamw_optimizer *o) { return adamw_optimizer_reserve_sparse(o, 8); }
static adamw_status call_set_variable_multipliers(adamw_optimizer *o) {
    return adamw_optimizer_set_variable_multipliers(o, 0, 1.0, 1.0);
}
static adamw_status call_set_weight_decay_min_ndim(adamw_optimizer *o) { return adamw_optimizer_set_weight_decay_min_ndim(o, 2); }
static adamw_status call_set_gradient_accumulation_steps(adamw_optimizer *o) {
    return adamw_optimizer_set_gradient_accumulation_steps(o, 2);
}
static adamw_status call_gradient_accumulation(adamw_optimizer *o) {
    int64_t steps, calls;
    return adamw_optimizer_gradient_accumulation(o, &steps, &calls);
}
static adamw_status call_add_variables(adamw_optimizer *o) {
    static const size_t shape[1] = {3};
    adamw_variable added = {"added", ADAMW_DTYPE_FLOAT32, 1, shape, NULL, 0, 0, 0};
    return adamw_optimizer_add_variables(o, &added, 1);
}
static adamw_status call_step_report(adamw_optimizer *o) {
    adamw_step_report report;
    return adamw_optimizer_step_report(o, &report);
}
static adamw_status call_gradient_norms(adamw_optimizer *o) {
    double norms[1];
    return adamw_optimizer_gradient_norms(o, norms, 1);
}
static adamw_status call_set_report_gradient_norms(adamw_optimizer *o) { return adamw_optimizer_set_report_gradient_norms(o, 1); }
static adamw_status call_reset_variable(adamw_optimizer *o) {
    return adamw_optimizer_reset_variable(o, 0, ADAMW_DTYPE_FLOAT32, w, 3);
}
static adamw_status call_variable_properties(adamw_optimizer *o) {
    adamw_variable_properties properties;
    return adamw_optimizer_variable_properties(o, 0, &properties);
}
static adamw_gradient entry(void) {
    adamw_gradient e = {.variable = 0, .dtype = ADAMW_DTYPE_FLOAT32, .data = w, .len = 3, .dense = grad};
    return e;
}
static adamw_status call_apply_gradients(adamw_optimizer *o) {
    adamw_gradient e = entry();
    return adamw_optimizer_apply_gradients(o, &e, 1, NULL);
}
static adamw_status call_minimize(adamw_optimizer *o) {
    adamw_gradient e = entry();
    return adamw_optimizer_minimize(o, &e, 1, no_gradients, NULL, NULL);
}
static adamw_status call_finalize_variable_values(adamw_optimizer *o) {
    adamw_variable_data v = {0, ADAMW_DTYPE_FLOAT32, w, 3};
    return adamw_optimizer_finalize_variable_values(o, &v, 1);
}
static adamw_status call_num_variables(adamw_optimizer *o) {
    size_t n;
    return adamw_optimizer_num_variables(o, &n);
}
static adamw_status call_variable_info(adamw_optimizer *o) {
    adamw_variable_info info;
    return adamw_optimizer_variable_info(o, 0, &info);
}
static adamw_status call_variable_name(adamw_optimizer *o) { return adamw_optimizer_variable_name(o, 0, text, sizeof text, &out_len); }
static adamw_status call_get_variable(adamw_optimizer *o) {
    int64_t it;
    return adamw_optimizer_get_variable(o, 0, ADAMW_DTYPE_INT64, &it, 1);
}
static adamw_status call_set_weights(adamw_optimizer *o) {
    int64_t it = 1;
    adamw_weight weight = {ADAMW_DTYPE_INT64, 0, NULL, &it};
    return adamw_optimizer_set_weights(o, &weight, 1);
}

typedef struct {
    const char *name;
    adamw_status (*call)(adamw_optimizer *);
} handle_call;

#define HANDLE_CALL(short) {"adamw_optimizer_" #short, call_##short}
static const handle_call handle_calls[] = {
    HANDLE_CALL(save_own_variables), HANDLE_CALL(load_own_variables), HANDLE_CALL(load_shards),
    HANDLE_CALL(save_file), HANDLE_CALL(load_file), HANDLE_CALL(load_keras_file), HANDLE_CALL(save_keras_file),
    HANDLE_CALL(load_keras_store), HANDLE_CALL(get_config), HANDLE_CALL(iterations), HANDLE_CALL(set_iterations),
    HANDLE_CALL(current_learning_rate), HANDLE_CALL(set_learning_rate), HANDLE_CALL(exclude_from_weight_decay),
    HANDLE_CALL(build), HANDLE_CALL(set_threads), HANDLE_CALL(set_parallel_for), HANDLE_CALL(set_device), HANDLE_CALL(set_stream),
    HANDLE_CALL(set_master_weights), HANDLE_CALL(set_loss_scale), HANDLE_CALL(loss_scale), HANDLE_CALL(reserve_sparse),
    HANDLE_CALL(apply_gradients), HANDLE_CALL(minimize), HANDLE_CALL(finalize_variable_values),
    HANDLE_CALL(num_variables), HANDLE_CALL(variable_info), HANDLE_CALL(variable_name), HANDLE_CALL(get_variable),
    HANDLE_CALL(set_weights), HANDLE_CALL(set_variable_multipliers), HANDLE_CALL(set_weight_decay_min_ndim),
    HANDLE_CALL(variable_properties), HANDLE_CALL(step_report), HANDLE_CALL(gradient_norms),
    HANDLE_CALL(set_report_gradient_norms), HANDLE_CALL(reset_variable),
    HANDLE_CALL(set_gradient_accumulation_steps), HANDLE_CALL(gradient_accumulation), HANDLE_CALL(add_variables),
};
#define NUM_HANDLE_CALLS (sizeof handle_calls / sizeof handle_calls[0])

/* A call from inside the step's learning-rate callback, on the optimizer that is stepping. */
static const handle_call *reentrant = NULL;
static adamw_optimizer *stepping = NULL;
static adamw_status reentrant_status;
static int32_t reenter(int64_t step, void *user_data, double *out) {
    (void)step, (void)user_data;
    if (reentrant != NULL) reentrant_status = reentrant->call(stepping);
    *out = 0.01;
    return 0;
}

static void drive_every_handle_call(void) {
    /* Not a handle: readable memory that does not start with a handle's mark. */
    static uint64_t not_a_handle[64];
    adamw_config cfg = adamw_config_default();
    cfg.learning_rate_fn = reenter;
    stepping = built(cfg);
    for (size_t i = 0; i < NUM_HANDLE_CALLS; i++) {
        const handle_call *c = &handle_calls[i];
        drove(c->name, ADAMW_STATUS_NULL_ARGUMENT, c->call(NULL), __LINE__);
        drove(c->name, ADAMW_STATUS_INVALID_ARGUMENT, c->call((adamw_optimizer *)(void *)not_a_handle), __LINE__);
        reentrant = c;
        reentrant_status = ADAMW_STATUS_OK;
        EXPECT_STATUS(call_apply_gradients(stepping), ADAMW_STATUS_OK);
        reentrant = NULL;
        drove(c->name, ADAMW_STATUS_BUSY, reentrant_status, __LINE__);
    }
    adamw_optimizer_free(stepping);
}

/* ---- each listed failure of each function ---- */
static void drive_checkpoints(void) {
    adamw_optimizer *opt = built(adamw_config_default());
    adamw_optimizer *empty = unbuilt();
    /* A checkpoint of another model: two variables. */
    static const size_t shape2[1] = {2};
    float a[3] = {0}, b[2] = {0};
    adamw_optimizer *other = unbuilt();
    adamw_variable vars[2] = {{"a", ADAMW_DTYPE_FLOAT32, 1, shape3, a, 0, 0, 0}, {"b", ADAMW_DTYPE_FLOAT32, 1, shape2, b, 0, 0, 0}};
    EXPECT_STATUS(adamw_optimizer_build(other, vars, 2), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_save_own_variables(other, checkpoint, sizeof checkpoint, &checkpoint_len), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_save_file(other, "target/c-tests/statuses_other.ckpt"), ADAMW_STATUS_OK);
    uint8_t garbage[64] = {1, 2, 3};
    const uint8_t *one[1] = {garbage};
    size_t garbage_len = sizeof garbage;

    DRIVE(adamw_optimizer_save_own_variables, ADAMW_STATUS_BUFFER_TOO_SMALL, adamw_optimizer_save_own_variables(opt, garbage, 1, &out_len));
    DRIVE(adamw_optimizer_load_own_variables, ADAMW_STATUS_INVALID_CHECKPOINT, adamw_optimizer_load_own_variables(opt, garbage, sizeof garbage));
    DRIVE(adamw_optimizer_load_own_variables, ADAMW_STATUS_CHECKPOINT_MISMATCH, adamw_optimizer_load_own_variables(opt, checkpoint, checkpoint_len));
    DRIVE(adamw_optimizer_load_shards, ADAMW_STATUS_NOT_BUILT, call_load_shards(empty));
    DRIVE(adamw_optimizer_load_shards, ADAMW_STATUS_INVALID_CHECKPOINT, adamw_optimizer_load_shards(opt, one, &garbage_len, 1));
    DRIVE(adamw_optimizer_load_shards, ADAMW_STATUS_CHECKPOINT_MISMATCH, adamw_optimizer_load_shards(opt, NULL, NULL, 0));
    DRIVE(adamw_optimizer_save_file, ADAMW_STATUS_IO, adamw_optimizer_save_file(opt, "target/c-tests/no-such-dir/x.ckpt"));
    DRIVE(adamw_optimizer_load_file, ADAMW_STATUS_IO, adamw_optimizer_load_file(opt, "target/c-tests/no-such-file.ckpt"));
    DRIVE(adamw_optimizer_load_file, ADAMW_STATUS_INVALID_CHECKPOINT, adamw_optimizer_load_file(opt, "tests/data/README.md"));
    DRIVE(adamw_optimizer_load_file, ADAMW_STATUS_CHECKPOINT_MISMATCH, adamw_optimizer_load_file(opt, "target/c-tests/statuses_other.ckpt"));

    /* Keras' files: the model of dense_amsgrad is not this optimizer's. */
    const char *keras = "tests/data/keras_files/dense_amsgrad.keras", *nested = "tests/data/loss_scale_loads/nested.keras";
    DRIVE(adamw_optimizer_load_keras_file, ADAMW_STATUS_INVALID_CONFIG, adamw_optimizer_load_keras_file(opt, nested));
    DRIVE(adamw_optimizer_load_keras_file, ADAMW_STATUS_NOT_BUILT, adamw_optimizer_load_keras_file(empty, keras));
    DRIVE(adamw_optimizer_load_keras_file, ADAMW_STATUS_INVALID_CHECKPOINT, adamw_optimizer_load_keras_file(opt, "tests/data/README.md"));
    DRIVE(adamw_optimizer_load_keras_file, ADAMW_STATUS_CHECKPOINT_MISMATCH, adamw_optimizer_load_keras_file(opt, keras));
    DRIVE(adamw_optimizer_load_keras_file, ADAMW_STATUS_IO, adamw_optimizer_load_keras_file(opt, "tests/data/missing.keras"));
    const char *out = "target/c-tests/statuses.keras";
    DRIVE(adamw_optimizer_save_keras_file, ADAMW_STATUS_INVALID_CONFIG, adamw_optimizer_save_keras_file(opt, nested, out));
    DRIVE(adamw_optimizer_save_keras_file, ADAMW_STATUS_INVALID_CHECKPOINT, adamw_optimizer_save_keras_file(opt, "tests/data/README.md", out));
    DRIVE(adamw_optimizer_save_keras_file, ADAMW_STATUS_CHECKPOINT_MISMATCH, adamw_optimizer_save_keras_file(opt, keras, out));
    DRIVE(adamw_optimizer_save_keras_file, ADAMW_STATUS_IO, adamw_optimizer_save_keras_file(opt, "tests/data/missing.keras", out));
    DRIVE(adamw_keras_file_optimizer_config, ADAMW_STATUS_NULL_ARGUMENT, adamw_keras_file_optimizer_config(NULL, NULL, 0, &out_len));
    DRIVE(adamw_keras_file_optimizer_config, ADAMW_STATUS_INVALID_ARGUMENT,
          adamw_keras_file_optimizer_config("tests/data/loss_scale_loads/initial_scale_0.keras", NULL, 0, &out_len));
    DRIVE(adamw_keras_file_optimizer_config, ADAMW_STATUS_INVALID_CONFIG, adamw_keras_file_optimizer_config(nested, NULL, 0, &out_len));
    DRIVE(adamw_keras_file_optimizer_config, ADAMW_STATUS_BUFFER_TOO_SMALL, adamw_keras_file_optimizer_config(keras, text, 2, &out_len));
    DRIVE(adamw_keras_file_optimizer_config, ADAMW_STATUS_INVALID_CHECKPOINT,
          adamw_keras_file_optimizer_config("tests/data/keras_files/dense_amsgrad.weights.h5", NULL, 0, &out_len));
    DRIVE(adamw_keras_file_optimizer_config, ADAMW_STATUS_IO, adamw_keras_file_optimizer_config("tests/data/missing.keras", NULL, 0, &out_len));
    size_t store_len = 0;
    FILE *f = fopen("tests/data/keras_files/dense_amsgrad.store.safetensors", "rb");
    EXPECT(f != NULL);
    uint8_t store[8192];
    if (f != NULL) {
        store_len = fread(store, 1, sizeof store, f);
        fclose(f);
    }
    DRIVE(adamw_optimizer_load_keras_store, ADAMW_STATUS_NOT_BUILT, adamw_optimizer_load_keras_store(empty, store, store_len));
    DRIVE(adamw_optimizer_load_keras_store, ADAMW_STATUS_INVALID_CHECKPOINT, adamw_optimizer_load_keras_store(opt, garbage, sizeof garbage));
    DRIVE(adamw_optimizer_load_keras_store, ADAMW_STATUS_CHECKPOINT_MISMATCH, adamw_optimizer_load_keras_store(opt, store, store_len));
    adamw_optimizer_free(opt);
    adamw_optimizer_free(empty);
    adamw_optimizer_free(other);
}

static int armed = 0;
static int32_t fails_when_armed(int64_t step, void *user_data, double *out) {
    (void)step, (void)user_data;
    *out = 0.01;
    return armed;
}

static int32_t failing_gradient(void *user_data, const adamw_gradient *entries, size_t n) {
    (void)user_data, (void)entries, (void)n;
    return 1;
}

static int32_t failing_scalar(int64_t step, void *user_data, double *out) {
    (void)step, (void)user_data;
    *out = 0;
    return 1;
}

static void drive_creation_and_settings(void) {
    adamw_schedule schedule;
    DRIVE(adamw_schedule_init, ADAMW_STATUS_NULL_ARGUMENT, adamw_schedule_init(ADAMW_SCHEDULE_KIND_COSINE_DECAY, NULL));
    DRIVE(adamw_schedule_init, ADAMW_STATUS_INVALID_ARGUMENT, adamw_schedule_init(99, &schedule));
    adamw_config cfg = adamw_config_default();
    adamw_optimizer *opt = NULL;
    DRIVE(adamw_optimizer_new, ADAMW_STATUS_OK, adamw_optimizer_new(&cfg, &opt));
    adamw_optimizer_free(opt);
    DRIVE(adamw_optimizer_new, ADAMW_STATUS_NULL_ARGUMENT, adamw_optimizer_new(NULL, &opt));
    cfg.clipnorm = 1, cfg.global_clipnorm = 1;
    DRIVE(adamw_optimizer_new, ADAMW_STATUS_INVALID_ARGUMENT, adamw_optimizer_new(&cfg, &opt));
    cfg = adamw_config_default();
    cfg.learning_rate_fn = failing_scalar;
    DRIVE(adamw_optimizer_new, ADAMW_STATUS_CALLBACK_FAILED, adamw_optimizer_new(&cfg, &opt));
    const char *both = "{\"clipnorm\": 1.0, \"global_clipnorm\": 1.0}";
    DRIVE(adamw_optimizer_from_config_json, ADAMW_STATUS_NULL_ARGUMENT, adamw_optimizer_from_config_json(both, strlen(both), NULL));
    DRIVE(adamw_optimizer_from_config_json, ADAMW_STATUS_INVALID_ARGUMENT, adamw_optimizer_from_config_json(both, strlen(both), &opt));
    DRIVE(adamw_optimizer_from_config_json, ADAMW_STATUS_INVALID_CONFIG, adamw_optimizer_from_config_json("{", 1, &opt));

    opt = built(adamw_config_default());
    DRIVE(adamw_optimizer_get_config, ADAMW_STATUS_BUFFER_TOO_SMALL, adamw_optimizer_get_config(opt, text, 2, &out_len));
    DRIVE(adamw_optimizer_set_iterations, ADAMW_STATUS_ALREADY_BUILT, adamw_optimizer_set_iterations(opt, 3));
    DRIVE(adamw_optimizer_exclude_from_weight_decay, ADAMW_STATUS_ALREADY_BUILT, call_exclude_from_weight_decay(opt));
    DRIVE(adamw_optimizer_build, ADAMW_STATUS_ALREADY_BUILT, call_build(opt));
    DRIVE(adamw_optimizer_set_device, ADAMW_STATUS_ALREADY_BUILT, call_set_device(opt));
    DRIVE(adamw_optimizer_set_master_weights, ADAMW_STATUS_ALREADY_BUILT, call_set_master_weights(opt));
    DRIVE(adamw_optimizer_set_loss_scale, ADAMW_STATUS_ALREADY_BUILT, call_set_loss_scale(opt));
    DRIVE(adamw_optimizer_reserve_sparse, ADAMW_STATUS_OUT_OF_MEMORY, adamw_optimizer_reserve_sparse(opt, SIZE_MAX));
    DRIVE(adamw_optimizer_set_weight_decay_min_ndim, ADAMW_STATUS_ALREADY_BUILT, call_set_weight_decay_min_ndim(opt));
    DRIVE(adamw_optimizer_set_gradient_accumulation_steps, ADAMW_STATUS_ALREADY_BUILT, call_set_gradient_accumulation_steps(opt));
    {
        static const size_t huge_shape[2] = {SIZE_MAX / 2, 4};
        adamw_variable same_name = {"w", ADAMW_DTYPE_FLOAT32, 1, shape3, w, 0, 0, 0};
        adamw_variable integers = {"n", ADAMW_DTYPE_INT64, 1, shape3, NULL, 0, 0, 0};
        adamw_variable huge_variable = {"h", ADAMW_DTYPE_FLOAT32, 2, huge_shape, NULL, 0, 0, 0};
        DRIVE(adamw_optimizer_add_variables, ADAMW_STATUS_INVALID_ARGUMENT, adamw_optimizer_add_variables(opt, &same_name, 1));
        DRIVE(adamw_optimizer_add_variables, ADAMW_STATUS_DTYPE_MISMATCH, adamw_optimizer_add_variables(opt, &integers, 1));
        DRIVE(adamw_optimizer_add_variables, ADAMW_STATUS_OUT_OF_MEMORY, adamw_optimizer_add_variables(opt, &huge_variable, 1));
    }
    DRIVE(adamw_optimizer_set_variable_multipliers, ADAMW_STATUS_UNKNOWN_VARIABLE,
          adamw_optimizer_set_variable_multipliers(opt, 99, 1.0, 1.0));
    adamw_variable_properties properties;
    DRIVE(adamw_optimizer_variable_properties, ADAMW_STATUS_UNKNOWN_VARIABLE, adamw_optimizer_variable_properties(opt, 99, &properties));
    DRIVE(adamw_optimizer_variable_properties, ADAMW_STATUS_NULL_ARGUMENT, adamw_optimizer_variable_properties(opt, 0, NULL));
    double norms[4];
    DRIVE(adamw_optimizer_gradient_norms, ADAMW_STATUS_INVALID_ARGUMENT, adamw_optimizer_gradient_norms(opt, norms, 4));
    DRIVE(adamw_optimizer_step_report, ADAMW_STATUS_NULL_ARGUMENT, adamw_optimizer_step_report(opt, NULL));
    DRIVE(adamw_optimizer_set_report_gradient_norms, ADAMW_STATUS_INVALID_ARGUMENT, adamw_optimizer_set_report_gradient_norms(opt, 7));
    DRIVE(adamw_optimizer_reset_variable, ADAMW_STATUS_UNKNOWN_VARIABLE, adamw_optimizer_reset_variable(opt, 99, ADAMW_DTYPE_FLOAT32, w, 3));
    DRIVE(adamw_optimizer_reset_variable, ADAMW_STATUS_DTYPE_MISMATCH, adamw_optimizer_reset_variable(opt, 0, ADAMW_DTYPE_FLOAT16, w, 3));
    DRIVE(adamw_optimizer_reset_variable, ADAMW_STATUS_SHAPE_MISMATCH, adamw_optimizer_reset_variable(opt, 0, ADAMW_DTYPE_FLOAT32, w, 2));
    DRIVE(adamw_optimizer_reset_variable, ADAMW_STATUS_NULL_ARGUMENT, adamw_optimizer_reset_variable(opt, 0, ADAMW_DTYPE_FLOAT32, NULL, 3));
    adamw_optimizer_free(opt);

    adamw_optimizer *fresh = unbuilt();
    DRIVE(adamw_optimizer_set_variable_multipliers, ADAMW_STATUS_NOT_BUILT, call_set_variable_multipliers(fresh));
    DRIVE(adamw_optimizer_variable_properties, ADAMW_STATUS_NOT_BUILT, call_variable_properties(fresh));
    DRIVE(adamw_optimizer_gradient_norms, ADAMW_STATUS_NOT_BUILT, call_gradient_norms(fresh));
    DRIVE(adamw_optimizer_reset_variable, ADAMW_STATUS_NOT_BUILT, call_reset_variable(fresh));
    DRIVE(adamw_optimizer_add_variables, ADAMW_STATUS_NOT_BUILT, call_add_variables(fresh));
    DRIVE(adamw_optimizer_set_weight_decay_min_ndim, ADAMW_STATUS_INVALID_ARGUMENT, adamw_optimizer_set_weight_decay_min_ndim(fresh, 33));
    DRIVE(adamw_optimizer_set_gradient_accumulation_steps, ADAMW_STATUS_INVALID_ARGUMENT,
          adamw_optimizer_set_gradient_accumulation_steps(fresh, 1));
    /* No CUDA device 99, whether or not this machine has a GPU. */
    DRIVE(adamw_optimizer_set_device, ADAMW_STATUS_DEVICE, adamw_optimizer_set_device(fresh, ADAMW_DEVICE_KIND_CUDA, 99));
    static const size_t huge[2] = {SIZE_MAX / 2, 4};
    adamw_variable too_big = {"big", ADAMW_DTYPE_FLOAT32, 2, huge, NULL, 0, 0, 0};
    DRIVE(adamw_optimizer_build, ADAMW_STATUS_OUT_OF_MEMORY, adamw_optimizer_build(fresh, &too_big, 1));
    adamw_variable counter = {"n", ADAMW_DTYPE_INT64, 1, shape3, NULL, 0, 0, 0};
    DRIVE(adamw_optimizer_build, ADAMW_STATUS_DTYPE_MISMATCH, adamw_optimizer_build(fresh, &counter, 1));
    const size_t beyond[1] = {5};
    EXPECT_STATUS(adamw_optimizer_exclude_from_weight_decay(fresh, beyond, 1, NULL, 0), ADAMW_STATUS_OK);
    DRIVE(adamw_optimizer_build, ADAMW_STATUS_UNKNOWN_VARIABLE, call_build(fresh));
    adamw_optimizer_free(fresh);
}

static void drive_steps(void) {
    adamw_config cfg = adamw_config_default();
    adamw_optimizer *empty = unbuilt();
    adamw_optimizer *opt = built(cfg);
    cfg.reject_non_finite_gradients = 1;
    adamw_optimizer *guarded = built(cfg);
    cfg = adamw_config_default();
    cfg.learning_rate_fn = fails_when_armed;
    adamw_optimizer *failing = built(cfg);
    armed = 1;
    float two[2] = {0}, nan_grad[3] = {NAN, 0, 0};
    double wide[3] = {0};
    int64_t rows[1] = {7};
    for (int minimize = 0; minimize < 2; minimize++) {
        const char *name = minimize ? "adamw_optimizer_minimize" : "adamw_optimizer_apply_gradients";
#define STEP(o, e, n) \
    (minimize ? adamw_optimizer_minimize(o, e, n, no_gradients, NULL, NULL) : adamw_optimizer_apply_gradients(o, e, n, NULL))
        adamw_gradient e = entry();
        e.len = 2, e.data = two, e.dense = grad;
        drove(name, ADAMW_STATUS_SHAPE_MISMATCH, STEP(opt, &e, 1), __LINE__);
        e = entry();
        e.dtype = ADAMW_DTYPE_FLOAT64, e.data = wide, e.dense = wide;
        drove(name, ADAMW_STATUS_DTYPE_MISMATCH, STEP(opt, &e, 1), __LINE__);
        e = entry();
        e.variable = 4;
        drove(name, ADAMW_STATUS_UNKNOWN_VARIABLE, STEP(opt, &e, 1), __LINE__);
        e = entry();
        e.dense = NULL, e.indices = rows, e.num_indices = 1, e.values = grad, e.num_values = 1;
        /* A row of 1 element in a variable of 3 rows: index 7 is out of range. */
        drove(name, ADAMW_STATUS_INDEX_OUT_OF_RANGE, STEP(opt, &e, 1), __LINE__);
        e = entry();
        drove(name, ADAMW_STATUS_NOT_BUILT, STEP(empty, &e, 1), __LINE__);
        e.dense = NULL;
        drove(name, ADAMW_STATUS_NO_GRADIENTS, STEP(opt, &e, 1), __LINE__);
        e = entry();
        e.dense = nan_grad;
        drove(name, ADAMW_STATUS_NON_FINITE_GRADIENT, STEP(guarded, &e, 1), __LINE__);
        e = entry();
        drove(name, ADAMW_STATUS_CALLBACK_FAILED, STEP(failing, &e, 1), __LINE__);
        e.len = SIZE_MAX / 2;
        drove(name, ADAMW_STATUS_OUT_OF_MEMORY, STEP(opt, &e, 1), __LINE__);
#undef STEP
    }
    adamw_gradient e = entry();
    DRIVE(adamw_optimizer_minimize, ADAMW_STATUS_CALLBACK_FAILED, adamw_optimizer_minimize(opt, &e, 1, failing_gradient, NULL, NULL));
    armed = 0;
    adamw_optimizer_free(empty);
    adamw_optimizer_free(opt);
    adamw_optimizer_free(guarded);
    adamw_optimizer_free(failing);
}

static void drive_variables(void) {
    adamw_optimizer *empty = unbuilt();
    adamw_optimizer *opt = built(adamw_config_default());
    float two[2], three[3];
    double wide[3];
    adamw_variable_data v = {0, ADAMW_DTYPE_FLOAT32, two, 2};
    DRIVE(adamw_optimizer_finalize_variable_values, ADAMW_STATUS_SHAPE_MISMATCH, adamw_optimizer_finalize_variable_values(opt, &v, 1));
    adamw_variable_data vd = {0, ADAMW_DTYPE_FLOAT64, wide, 3};
    DRIVE(adamw_optimizer_finalize_variable_values, ADAMW_STATUS_DTYPE_MISMATCH, adamw_optimizer_finalize_variable_values(opt, &vd, 1));
    adamw_variable_data vu = {4, ADAMW_DTYPE_FLOAT32, three, 3};
    DRIVE(adamw_optimizer_finalize_variable_values, ADAMW_STATUS_UNKNOWN_VARIABLE, adamw_optimizer_finalize_variable_values(opt, &vu, 1));
    adamw_variable_data ok = {0, ADAMW_DTYPE_FLOAT32, three, 3};
    DRIVE(adamw_optimizer_finalize_variable_values, ADAMW_STATUS_NOT_BUILT, adamw_optimizer_finalize_variable_values(empty, &ok, 1));
    adamw_variable_info info;
    DRIVE(adamw_optimizer_variable_info, ADAMW_STATUS_UNKNOWN_VARIABLE, adamw_optimizer_variable_info(opt, 9, &info));
    DRIVE(adamw_optimizer_variable_name, ADAMW_STATUS_UNKNOWN_VARIABLE, adamw_optimizer_variable_name(opt, 9, text, sizeof text, &out_len));
    DRIVE(adamw_optimizer_variable_name, ADAMW_STATUS_BUFFER_TOO_SMALL, adamw_optimizer_variable_name(opt, 1, text, 2, &out_len));
    DRIVE(adamw_optimizer_get_variable, ADAMW_STATUS_SHAPE_MISMATCH, adamw_optimizer_get_variable(opt, 1, ADAMW_DTYPE_FLOAT32, two, 2));
    DRIVE(adamw_optimizer_get_variable, ADAMW_STATUS_DTYPE_MISMATCH, adamw_optimizer_get_variable(opt, 1, ADAMW_DTYPE_FLOAT64, wide, 3));
    DRIVE(adamw_optimizer_get_variable, ADAMW_STATUS_UNKNOWN_VARIABLE, adamw_optimizer_get_variable(opt, 9, ADAMW_DTYPE_FLOAT32, three, 3));
    int64_t it = 1;
    adamw_weight weights[2] = {{ADAMW_DTYPE_INT64, 0, NULL, &it}, {ADAMW_DTYPE_FLOAT32, 1, shape3, three}};
    DRIVE(adamw_optimizer_set_weights, ADAMW_STATUS_NOT_BUILT, adamw_optimizer_set_weights(empty, weights, 1));
    static const size_t shape2[1] = {2};
    weights[1].shape = shape2;
    DRIVE(adamw_optimizer_set_weights, ADAMW_STATUS_SHAPE_MISMATCH, adamw_optimizer_set_weights(opt, weights, 2));
    weights[1].shape = shape3, weights[1].dtype = ADAMW_DTYPE_FLOAT64, weights[1].data = wide;
    DRIVE(adamw_optimizer_set_weights, ADAMW_STATUS_DTYPE_MISMATCH, adamw_optimizer_set_weights(opt, weights, 2));
    /* adamw_last_error */
    char message[4];
    DRIVE(adamw_last_error, ADAMW_STATUS_BUFFER_TOO_SMALL, adamw_last_error(message, sizeof message, &out_len));
    DRIVE(adamw_last_error, ADAMW_STATUS_NULL_ARGUMENT, adamw_last_error(NULL, 8, &out_len));
    DRIVE(adamw_last_error, ADAMW_STATUS_OK, adamw_last_error(text, sizeof text, &out_len));
    adamw_optimizer_free(empty);
    adamw_optimizer_free(opt);
}

/* The documented statuses no test can bring about, and why. */
static const struct {
    const char *function, *status, *why;
} not_driven[] = {
    {"*", "OUT_OF_MEMORY", "an allocation that fails (only the overflowing sizes above are drivable)"},
    {"adamw_optimizer_set_threads", "OUT_OF_MEMORY", "the system refuses to start a thread"},
    {"adamw_optimizer_reset_variable", "DEVICE", "a GPU that fails while the reset state is copied to it"},
};

static int exempt(const char *function, const char *status, int drivable_elsewhere) {
    for (size_t i = 0; i < sizeof not_driven / sizeof not_driven[0]; i++) {
        int fn = strcmp(not_driven[i].function, function) == 0 || (strcmp(not_driven[i].function, "*") == 0 && !drivable_elsewhere);
        if (fn && strcmp(not_driven[i].status, status) == 0) return 1;
    }
    return 0;
}

static void check_every_listed_status_was_driven(void) {
    for (int i = 0; i < num_docs; i++) {
        for (int s = 1; s < num_statuses; s++) {
            if (!docs[i].listed[s] || docs[i].driven[s]) continue;
            if (exempt(docs[i].name, short_name(s), 0)) continue;
            checks++;
            failures++;
            fprintf(stderr, "%s lists %s, which no drive brings about\n", docs[i].name, short_name(s));
        }
    }
}

int main(void) {
    read_header();
    drive_every_handle_call();
    drive_checkpoints();
    drive_creation_and_settings();
    drive_steps();
    drive_variables();
    check_every_listed_status_was_driven();
    return report();
}
