/* libadamw inside an OpenMP program: its own threads (threads = 0), its tasks on the program's
 * OpenMP threads through adamw_optimizer_set_parallel_for, and the loop such a program writes
 * itself (Keras' formula in plain float32, one OpenMP parallel region per tensor, each thread's
 * share a vectorized loop), each
 * timed alternating in one process, round after round; the median step time counts.
 *
 * Shapes: 100 tensors of 1K (a game's small model), 16 tensors of a GPT-2-like model (3.15M),
 * one tensor of 1M, one of 16M. "busy": a parallel region of the program's own runs just before
 * each step (as a forward/backward would), so its OpenMP threads are spinning when the step
 * starts; only the step is timed.
 *
 * Arguments: [seconds per round, default 0.05] [one way only: 0, 1 or 2] [shape sets whose name
 * contains this]; BENCH_ROUNDS=N sets the rounds (default 11, at most 101); BENCH_PRINT_ROUNDS=1
 * prints every round's time to stderr.
 * Build and run: bash tools/bench_threads.sh (gcc -O3 -march=native -fno-math-errno, so that
 * the loop vectorizes; prints the machine and the table). It measures;
 * it asserts nothing. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "adamw.h"
#include "plain_adamw.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ---- the program's own AdamW: Keras' formula, float32, a parallel for per tensor ---- */
typedef struct {
    size_t n;
    float *w, *g, *m, *v;
} tensor;

static void omp_adamw(tensor *t, size_t count, int64_t step) {
    const double lr = 0.001, b1 = 0.9, b2 = 0.999, eps = 1e-7, wd = 0.004;
    const float alpha = (float)(lr * sqrt(1.0 - pow(b2, (double)step)) / (1.0 - pow(b1, (double)step)));
    const float decay = (float)(wd * lr), one_b1 = (float)(1.0 - b1), one_b2 = (float)(1.0 - b2);
    for (size_t k = 0; k < count; k++) {
        tensor x = t[k];
#pragma omp parallel
        {
            long n = (long)x.n, threads = omp_get_num_threads(), me = omp_get_thread_num();
            long lo = n * me / threads, hi = n * (me + 1) / threads;
            adamw_range(x.w + lo, x.g + lo, x.m + lo, x.v + lo, hi - lo, alpha, decay, one_b1, one_b2, (float)eps);
        }
    }
}

/* ---- the hook: libadamw's tasks on the program's OpenMP threads ---- */
static void omp_parallel_for(void *user_data, size_t n_tasks, adamw_task_fn task, void *task_data) {
    (void)user_data;
#pragma omp parallel for schedule(static)
    for (long i = 0; i < (long)n_tasks; i++) task(task_data, (size_t)i);
}

/* The program's own parallel work before a step: a short region over its threads. */
static volatile float busy_sink;
static void busy_region(void) {
    float total = 0;
#pragma omp parallel reduction(+ : total)
    {
        float x = (float)omp_get_thread_num();
        for (int i = 0; i < 2000; i++) x = x * 0.999f + 1.0f;
        total += x;
    }
    busy_sink = total;
}

typedef struct {
    const char *name;
    size_t count;
    size_t sizes[100];
} shape_set;

enum { LIB_DEFAULT, LIB_HOOK, OMP_LOOP, N_WAYS };
static const char *const way_names[N_WAYS] = {"libadamw default", "libadamw + OpenMP hook", "OpenMP loop"};

typedef struct {
    tensor *t;
    size_t count;
    adamw_optimizer *opt[2]; /* default, hook */
    adamw_gradient *entries;
    int64_t step;
} bench;

static void check(adamw_status s, const char *what) {
    if (s != ADAMW_STATUS_OK) {
        char msg[256];
        size_t len = 0;
        adamw_last_error(msg, sizeof msg, &len);
        fprintf(stderr, "%s: %s (%s)\n", what, adamw_status_name(s), msg);
        exit(1);
    }
}

static bench make(const shape_set *set) {
    bench b = {calloc(set->count, sizeof(tensor)), set->count, {NULL, NULL}, calloc(set->count, sizeof(adamw_gradient)), 0};
    adamw_variable *vars = calloc(set->count, sizeof(adamw_variable));
    size_t *shapes = calloc(set->count, sizeof(size_t));
    char (*names)[16] = calloc(set->count, 16);
    for (size_t k = 0; k < set->count; k++) {
        size_t n = set->sizes[k];
        tensor *t = &b.t[k];
        t->n = n;
        t->w = malloc(n * sizeof(float));
        t->g = malloc(n * sizeof(float));
        t->m = calloc(n, sizeof(float));
        t->v = calloc(n, sizeof(float));
        for (size_t i = 0; i < n; i++) {
            t->w[i] = (float)((i * 7919) % 1000) * 1e-3f - 0.5f;
            t->g[i] = (float)((i * 613) % 977) * 1e-3f - 0.488f;
        }
        shapes[k] = n;
        snprintf(names[k], 16, "t%zu", k);
        vars[k] = (adamw_variable){names[k], ADAMW_DTYPE_FLOAT32, 1, &shapes[k], NULL, 0, 0, 0};
        b.entries[k] = (adamw_gradient){.variable = k, .dtype = ADAMW_DTYPE_FLOAT32, .data = t->w, .len = n, .dense = t->g};
    }
    for (int o = 0; o < 2; o++) {
        adamw_config cfg = adamw_config_default();
        check(adamw_optimizer_new(&cfg, &b.opt[o]), "new");
        if (o == 1) check(adamw_optimizer_set_parallel_for(b.opt[o], omp_parallel_for, NULL), "set_parallel_for");
        check(adamw_optimizer_build(b.opt[o], vars, set->count), "build");
    }
    free(vars);
    free(shapes);
    free(names);
    return b;
}

static void step(bench *b, int way) {
    b->step++;
    if (way == OMP_LOOP) {
        omp_adamw(b->t, b->count, b->step);
    } else {
        check(adamw_optimizer_apply_gradients(b->opt[way], b->entries, b->count, NULL), "apply_gradients");
    }
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#define MAX_ROUNDS 101

int main(int argc, char **argv) {
    double seconds_per_round = argc > 1 ? atof(argv[1]) : 0.05;
    int only = argc > 2 ? atoi(argv[2]) : -1; /* time one way only: 0, 1 or 2 (-1: all) */
    const char *set_filter = argc > 3 ? argv[3] : ""; /* shape sets whose name contains this */
    int rounds = getenv("BENCH_ROUNDS") ? atoi(getenv("BENCH_ROUNDS")) : 11;
    if (rounds < 1 || rounds > MAX_ROUNDS) rounds = 11;
    shape_set sets[4] = {{"100 x 1K", 100, {0}}, {"GPT-like 16 (3.15M)", 16, {0}}, {"1M", 1, {1 << 20}}, {"16M", 1, {1 << 24}}};
    for (size_t k = 0; k < 100; k++) sets[0].sizes[k] = 1024;
    /* A GPT-2-like block at width 256: wte, wpe, ln1 w/b, qkv w/b, attention projection w/b,
       ln2 w/b, fc w/b, fc projection w/b, final ln w/b. */
    const size_t c = 256, gpt[16] = {8192 * c, 1024 * c, c, c, c * 3 * c, 3 * c, c * c, c, c, c, c * 4 * c, 4 * c, 4 * c * c, c, c, c};
    memcpy(sets[1].sizes, gpt, sizeof gpt);
    printf("# OpenMP threads %d; median of %d rounds, each way alternating; microseconds per step; \"/r\": the median of the\n"
           "# rounds' own ratios to the OpenMP loop's round beside them\n",
           omp_get_max_threads(), rounds);
    printf("%-22s %-6s %14s %14s %14s %10s %10s %10s %10s\n", "shapes", "busy", way_names[0], way_names[1], way_names[2],
           "default/omp", "hook/omp", "default/r", "hook/r");
    for (size_t s = 0; s < 4; s++) {
        if (!strstr(sets[s].name, set_filter)) continue;
        bench b = make(&sets[s]);
        for (int busy = 0; busy <= 1; busy++) {
            /* steps per round: about seconds_per_round of the OpenMP loop */
            double t0 = now();
            int calibrate = 0;
            while (now() - t0 < 0.02) {
                step(&b, OMP_LOOP);
                calibrate++;
            }
            int steps = (int)(calibrate * seconds_per_round / (now() - t0)) + 1;
            double times[N_WAYS][MAX_ROUNDS] = {{0}};
            for (int r = 0; r < rounds; r++) {
                for (int w0 = 0; w0 < N_WAYS; w0++) {
                    int way = (w0 + r) % N_WAYS; /* rotate who goes first */
                    if (only >= 0 && way != only) continue;
                    /* Each way starts from rest: the threads the previous way left spinning
                       (OpenMP's spin for a few milliseconds after a region) have gone to sleep. */
                    struct timespec rest = {0, 30 * 1000 * 1000};
                    nanosleep(&rest, NULL);
                    double spent = 0;
                    for (int i = 0; i < steps; i++) {
                        if (busy) busy_region();
                        double start = now();
                        step(&b, way);
                        spent += now() - start;
                    }
                    times[way][r] = spent / steps * 1e6;
                }
            }
            if (getenv("BENCH_PRINT_ROUNDS"))
                for (int w = 0; w < N_WAYS; w++) {
                    for (int r = 0; r < rounds; r++) fprintf(stderr, " %7.0f", times[w][r]);
                    fprintf(stderr, "  <- %s\n", way_names[w]);
                }
            /* Each round's ratio to the OpenMP loop's round beside it, before the times are
               sorted: the ways of one round ran close together (within a quarter of a second at the
               default 0.05 s a round), so the machine's slower phases, which last seconds, move
               both sides of a ratio. */
            double ratio[2][MAX_ROUNDS];
            for (int w = 0; w < 2; w++) {
                for (int r = 0; r < rounds; r++) ratio[w][r] = times[w][r] / times[OMP_LOOP][r];
                qsort(ratio[w], (size_t)rounds, sizeof(double), by_value);
            }
            double median[N_WAYS];
            for (int w = 0; w < N_WAYS; w++) {
                qsort(times[w], (size_t)rounds, sizeof(double), by_value);
                median[w] = times[w][rounds / 2];
            }
            printf("%-22s %-6s %14.1f %14.1f %14.1f %10.2f %10.2f %10.2f %10.2f\n", sets[s].name, busy ? "yes" : "no",
                   median[LIB_DEFAULT], median[LIB_HOOK], median[OMP_LOOP], median[LIB_DEFAULT] / median[OMP_LOOP],
                   median[LIB_HOOK] / median[OMP_LOOP], ratio[LIB_DEFAULT][rounds / 2], ratio[LIB_HOOK][rounds / 2]);
            fflush(stdout);
        }
        for (size_t k = 0; k < b.count; k++) {
            free(b.t[k].w);
            free(b.t[k].g);
            free(b.t[k].m);
            free(b.t[k].v);
        }
        adamw_optimizer_free(b.opt[0]);
        adamw_optimizer_free(b.opt[1]);
        free(b.t);
        free(b.entries);
    }
    return 0;
}
