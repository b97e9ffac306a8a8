/* adamw_optimizer_set_parallel_for: the caller's parallel-for runs the steps' tasks.
 *
 * - Whatever a hook does within its contract (tasks in reverse order, on other threads, each
 *   index twice, none at all, half of them), the variables and the whole checkpoint are the
 *   bits of one thread and of the library's own pool: float32 and a bfloat16 variable with a
 *   master copy, large enough to be cut into tasks, a global clip norm, a dynamic loss scale
 *   with one step that overflows (skipped) and a learning-rate callback.
 * - With a hook set, the library starts no thread of its own (/proc/self/task counted), while
 *   its own pool does start threads (so the count would see them).
 * - A hook with a sharded variable and its all-reduce: the two shards take the one-process bits.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>

#include "expect.h"

#define N_F32 300000  /* > 64K: cut into tasks */
#define N_BF16 200000 /* with a master copy */
#define STEPS 4

/* ---- hooks ---- */
static void hook_reversed(void *user_data, size_t n, adamw_task_fn task, void *task_data) {
    (void)user_data;
    for (size_t i = n; i-- > 0;) task(task_data, i);
}

static void hook_twice(void *user_data, size_t n, adamw_task_fn task, void *task_data) {
    (void)user_data;
    for (size_t i = 0; i < 2 * n; i++) task(task_data, i % n);
}

static int none_calls = 0;
static void hook_none(void *user_data, size_t n, adamw_task_fn task, void *task_data) {
    (void)user_data;
    (void)n;
    (void)task;
    (void)task_data;
    none_calls++;
}

static void hook_half(void *user_data, size_t n, adamw_task_fn task, void *task_data) {
    (void)user_data;
    for (size_t i = 0; i < n / 2; i++) task(task_data, i);
}

/* Three threads of the caller's, each taking every third index. */
typedef struct {
    size_t n, first;
    adamw_task_fn task;
    void *task_data;
} stride_job;

static void *run_stride(void *arg) {
    stride_job *job = arg;
    for (size_t i = job->first; i < job->n; i += 3) job->task(job->task_data, i);
    return NULL;
}

static atomic_int threaded_calls = 0;
static void hook_threads(void *user_data, size_t n, adamw_task_fn task, void *task_data) {
    (void)user_data;
    atomic_fetch_add(&threaded_calls, 1);
    pthread_t threads[3];
    stride_job jobs[3];
    for (size_t t = 0; t < 3; t++) {
        jobs[t] = (stride_job){n, t, task, task_data};
        pthread_create(&threads[t], NULL, run_stride, &jobs[t]);
    }
    for (size_t t = 0; t < 3; t++) pthread_join(threads[t], NULL);
}

/* ---- a run: the state after STEPS steps ---- */
typedef struct {
    float *w;
    uint16_t *b;
    uint8_t *checkpoint;
    size_t len;
    float loss_scale;
} result;

static uint16_t to_bf16(float x) { /* x is exactly a bfloat16 here */
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return (uint16_t)(u >> 16);
}

/* A learning-rate callback: callbacks keep working with a hook set. */
static int32_t decaying_rate(int64_t step, void *user_data, double *out) {
    (void)user_data;
    *out = 0.01 / (double)(step + 1);
    return 0;
}

static result run(uint32_t threads, adamw_parallel_for_fn hook) {
    result r = {malloc(N_F32 * sizeof(float)), malloc(N_BF16 * sizeof(uint16_t)), NULL, 0, 0};
    float *gw = malloc(N_F32 * sizeof(float));
    uint16_t *gb = malloc(N_BF16 * sizeof(uint16_t));
    for (size_t i = 0; i < N_F32; i++) r.w[i] = (float)((i * 7919) % 1000) * 1e-3f - 0.5f;
    for (size_t i = 0; i < N_BF16; i++) r.b[i] = to_bf16((float)((i * 104729) % 512) / 256.0f - 1.0f);

    adamw_config cfg = adamw_config_default();
    cfg.learning_rate_fn = decaying_rate;
    cfg.global_clipnorm = 1.0;
    cfg.threads = threads;
    adamw_optimizer *opt = NULL;
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &opt), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_set_master_weights(opt, 1), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_set_loss_scale(opt, 1, 1024.0, 2), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_set_parallel_for(opt, hook, NULL), ADAMW_STATUS_OK);
    const size_t shape_w[1] = {N_F32}, shape_b[2] = {400, N_BF16 / 400};
    adamw_variable vars[2] = {
        {"w", ADAMW_DTYPE_FLOAT32, 1, shape_w, r.w, 0, 0, 0},
        {"b", ADAMW_DTYPE_BFLOAT16, 2, shape_b, r.b, 0, 0, 0},
    };
    EXPECT_STATUS(adamw_optimizer_build(opt, vars, 2), ADAMW_STATUS_OK);
    for (int step = 0; step < STEPS; step++) {
        for (size_t i = 0; i < N_F32; i++) gw[i] = (float)(((i + 31 * (size_t)step) * 613) % 977) - 488.0f;
        for (size_t i = 0; i < N_BF16; i++) gb[i] = to_bf16((float)((i * 37 + (size_t)step) % 64) - 32.0f);
        if (step == 2) gw[N_F32 - 5] = INFINITY; /* found in the last task: the step is skipped */
        adamw_gradient entries[2] = {
            {.variable = 0, .dtype = ADAMW_DTYPE_FLOAT32, .data = r.w, .len = N_F32, .dense = gw},
            {.variable = 1, .dtype = ADAMW_DTYPE_BFLOAT16, .data = r.b, .len = N_BF16, .dense = gb},
        };
        EXPECT_STATUS(adamw_optimizer_apply_gradients(opt, entries, 2, NULL), ADAMW_STATUS_OK);
    }
    EXPECT_STATUS(adamw_optimizer_loss_scale(opt, &r.loss_scale, NULL), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_save_own_variables(opt, NULL, 0, &r.len), ADAMW_STATUS_OK);
    r.checkpoint = malloc(r.len);
    EXPECT_STATUS(adamw_optimizer_save_own_variables(opt, r.checkpoint, r.len, &r.len), ADAMW_STATUS_OK);
    adamw_optimizer_free(opt);
    free(gw);
    free(gb);
    return r;
}

static void expect_same(result a, result b, const char *what) {
    int same = memcmp(a.w, b.w, N_F32 * sizeof(float)) == 0 && memcmp(a.b, b.b, N_BF16 * sizeof(uint16_t)) == 0 &&
               a.len == b.len && memcmp(a.checkpoint, b.checkpoint, a.len) == 0 && a.loss_scale == b.loss_scale;
    if (!same) fprintf(stderr, "differs from one thread: %s\n", what);
    EXPECT(same);
}

static void release_result(result r) {
    free(r.w);
    free(r.b);
    free(r.checkpoint);
}

static int thread_count(void) {
    DIR *dir = opendir("/proc/self/task");
    if (!dir) return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(dir)) != NULL;)
        if (e->d_name[0] != '.') n++;
    closedir(dir);
    return n;
}

static void test_no_thread_of_its_own(void) {
    int before = thread_count();
    EXPECT(before == 1);
    /* threads 0 (the shared pool) and 3 (a pool of its own), both with a hook set first */
    for (uint32_t threads = 0; threads <= 3; threads += 3) {
        result r = run(threads, hook_reversed);
        EXPECT(thread_count() == before);
        release_result(r);
    }
    /* Without a hook the pool does start threads: the count sees them. */
    result r = run(3, NULL);
    EXPECT(thread_count() == before); /* an optimizer's own pool stops with it */
    release_result(r);
    adamw_config cfg = adamw_config_default();
    cfg.threads = 3;
    adamw_optimizer *opt = NULL;
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &opt), ADAMW_STATUS_OK);
    const size_t shape[1] = {N_F32};
    adamw_variable var = {"w", ADAMW_DTYPE_FLOAT32, 1, shape, NULL, 0, 0, 0};
    EXPECT_STATUS(adamw_optimizer_build(opt, &var, 1), ADAMW_STATUS_OK);
    float *w = calloc(N_F32, sizeof(float)), *g = calloc(N_F32, sizeof(float));
    adamw_gradient e = {.variable = 0, .dtype = ADAMW_DTYPE_FLOAT32, .data = w, .len = N_F32, .dense = g};
    EXPECT_STATUS(adamw_optimizer_apply_gradients(opt, &e, 1, NULL), ADAMW_STATUS_OK);
    EXPECT(thread_count() == before + 2); /* the caller and two workers */
    adamw_optimizer_free(opt);
    EXPECT(thread_count() == before);
    free(w);
    free(g);
}

static void test_contract(void) {
    result one = run(1, NULL);
    result pool = run(2, NULL);
    expect_same(one, pool, "a pool of 2");
    release_result(pool);
    pool = run(0, NULL);
    expect_same(one, pool, "the shared pool");
    release_result(pool);
    struct {
        const char *name;
        adamw_parallel_for_fn hook;
    } hooks[] = {{"reversed", hook_reversed}, {"other threads", hook_threads}, {"twice", hook_twice},
                 {"none", hook_none},         {"half", hook_half}};
    for (size_t h = 0; h < sizeof hooks / sizeof hooks[0]; h++) {
        result r = run(1, hooks[h].hook);
        expect_same(one, r, hooks[h].name);
        release_result(r);
    }
    EXPECT(none_calls > 0 && atomic_load(&threaded_calls) > 0); /* the hooks were called */
    /* NULL restores the threads of the config, and a bad handle is refused. */
    EXPECT_STATUS(adamw_optimizer_set_parallel_for(NULL, hook_half, NULL), ADAMW_STATUS_NULL_ARGUMENT);
    release_result(one);
}

/* Two shards of one variable on a simulated mesh of two ranks, stepped in lockstep on two
   threads (the all-reduce sums the ranks' values), each with a hook: their parts are the bits
   of one process's step over the whole variable. */
#define N_SHARDED 200000
typedef struct {
    pthread_barrier_t *barrier;
    double *exchange[2];
    size_t counts[2];
    int rank;
} mesh;

static int32_t mesh_all_reduce(double *values, size_t count, void *user_data) {
    mesh *m = user_data;
    m->exchange[m->rank] = values;
    m->counts[m->rank] = count;
    pthread_barrier_wait(m->barrier);
    mesh *other = m->rank == 0 ? m + 1 : m - 1;
    double *theirs = other->exchange[other->rank];
    double *sum = malloc(count * sizeof(double));
    for (size_t i = 0; i < count; i++) sum[i] = values[i] + theirs[i];
    pthread_barrier_wait(m->barrier);
    memcpy(values, sum, count * sizeof(double));
    free(sum);
    return 0;
}

typedef struct {
    mesh *mesh;
    float *whole, *grad;
    size_t offset, len;
} rank_job;

static void step_sharded(adamw_config cfg, float *values, const float *grad, size_t offset, size_t len,
                         adamw_parallel_for_fn hook) {
    adamw_optimizer *opt = NULL;
    EXPECT_STATUS(adamw_optimizer_new(&cfg, &opt), ADAMW_STATUS_OK);
    EXPECT_STATUS(adamw_optimizer_set_parallel_for(opt, hook, NULL), ADAMW_STATUS_OK);
    const size_t shape[1] = {N_SHARDED};
    adamw_variable var = {"w", ADAMW_DTYPE_FLOAT32, 1, shape, values, cfg.mesh_all_reduce != NULL, offset, len};
    EXPECT_STATUS(adamw_optimizer_build(opt, &var, 1), ADAMW_STATUS_OK);
    adamw_gradient e = {.variable = 0, .dtype = ADAMW_DTYPE_FLOAT32, .data = values, .len = len, .dense = grad};
    for (int step = 0; step < 3; step++) EXPECT_STATUS(adamw_optimizer_apply_gradients(opt, &e, 1, NULL), ADAMW_STATUS_OK);
    adamw_optimizer_free(opt);
}

static void *run_rank(void *arg) {
    rank_job *job = arg;
    adamw_config cfg = adamw_config_default();
    cfg.clipnorm = 0.5;
    cfg.mesh_all_reduce = mesh_all_reduce;
    cfg.mesh_user_data = job->mesh;
    step_sharded(cfg, job->whole + job->offset, job->grad + job->offset, job->offset, job->len, hook_threads);
    return NULL;
}

static void test_sharded(void) {
    float *one = malloc(N_SHARDED * sizeof(float)), *shards = malloc(N_SHARDED * sizeof(float));
    float *grad = malloc(N_SHARDED * sizeof(float));
    for (size_t i = 0; i < N_SHARDED; i++) {
        one[i] = shards[i] = (float)((i * 7919) % 1000) * 1e-3f;
        grad[i] = (float)((i * 613) % 977) * 1e-2f - 4.88f;
    }
    adamw_config cfg = adamw_config_default();
    cfg.clipnorm = 0.5;
    step_sharded(cfg, one, grad, 0, N_SHARDED, NULL);

    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, 2);
    mesh ranks[2] = {{&barrier, {NULL, NULL}, {0, 0}, 0}, {&barrier, {NULL, NULL}, {0, 0}, 1}};
    size_t cut = 123457; /* inside a leaf of the norm's tree and a task */
    rank_job jobs[2] = {{&ranks[0], shards, grad, 0, cut}, {&ranks[1], shards, grad, cut, N_SHARDED - cut}};
    pthread_t threads[2];
    for (int r = 0; r < 2; r++) pthread_create(&threads[r], NULL, run_rank, &jobs[r]);
    for (int r = 0; r < 2; r++) pthread_join(threads[r], NULL);
    pthread_barrier_destroy(&barrier);
    EXPECT(memcmp(one, shards, N_SHARDED * sizeof(float)) == 0);
    EXPECT(one[0] != 0.0f); /* the steps moved it from 0 */
    free(one);
    free(shards);
    free(grad);
}

int main(void) {
    test_no_thread_of_its_own(); /* first: no other thread exists yet */
    test_contract();
    test_sharded();
    printf("test_parallel_for: %d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
