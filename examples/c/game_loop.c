/* On-device learning in a fixed-step game loop: a point mass is steered toward a moving target by
 * a small linear controller whose weights libadamw tunes every frame.
 *
 * What a game or simulation engine needs, and what this example shows:
 *  - the engine's own threads: config.threads = 1 runs every step on the calling thread, and the
 *    optimizer never starts a thread of its own (usage: game_loop [THREADS], default 1);
 *  - no allocation in the step: malloc and friends are wrapped at link time
 *    (-Wl,--wrap=malloc,...), which also catches calls made inside libadamw.a; the loop counts
 *    them and, with one thread, must see none after build;
 *  - determinism: the run prints a checksum of every weight's bits; two runs, and runs with any
 *    thread setting, print the same checksum (tools/run-examples.sh checks it);
 *  - robustness: the non-finite guard is on, so a frame whose gradient holds a NaN (a glitch,
 *    simulated at frame 777) is refused whole and changes nothing; the game just skips learning
 *    that frame;
 *  - quick saves: every 250 frames the weights and the optimizer's state are saved to memory
 *    (buffers sized once, before the loop); at frame 1500 the player "loads" the save of frame
 *    1250 and plays those frames again, reaching the same bits as the first time.
 *
 * Build: see tools/run-examples.sh. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adamw.h"

/* ---- allocation counting (the linker routes malloc & co. here) ---- */
static long allocations = 0;
void *__real_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t size);
int __real_posix_memalign(void **p, size_t align, size_t size);
void *__wrap_malloc(size_t size) { allocations++; return __real_malloc(size); }
void *__wrap_calloc(size_t n, size_t size) { allocations++; return __real_calloc(n, size); }
void *__wrap_realloc(void *p, size_t size) { allocations++; return __real_realloc(p, size); }
int __wrap_posix_memalign(void **p, size_t align, size_t size) { allocations++; return __real_posix_memalign(p, align, size); }

#define CHECK(call)                                                                            \
    do {                                                                                       \
        adamw_status s_ = (call);                                                              \
        if (s_ != ADAMW_STATUS_OK) {                                                           \
            char m_[256];                                                                      \
            size_t n_;                                                                         \
            adamw_last_error(m_, sizeof m_, &n_);                                              \
            fprintf(stderr, "%s: %s: %s\n", #call, adamw_status_name(s_), m_);                 \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

#define FRAMES 2000
#define DT 0.02f

/* The controller: force = W * [dx, dy, vx, vy] + b, with W 2x4 and b 2. */
typedef struct {
    float w[8], b[2];
    float grad_w[8], grad_b[2];
} controller;

/* One frame: the force that steers the mass, the next state, and the gradient of the squared
 * distance to the target after the step with respect to W and b (a one-step model). */
static float frame(controller *c, float state[4], const float target[2]) {
    float features[4] = {target[0] - state[0], target[1] - state[1], state[2], state[3]};
    float force[2];
    for (int i = 0; i < 2; i++) {
        force[i] = c->b[i];
        for (int j = 0; j < 4; j++) force[i] += c->w[i * 4 + j] * features[j];
    }
    for (int i = 0; i < 2; i++) {
        state[2 + i] = 0.98f * state[2 + i] + DT * force[i]; /* velocity, with drag */
        state[i] += DT * state[2 + i];                       /* position */
    }
    float loss = 0;
    for (int i = 0; i < 2; i++) {
        float error = state[i] - target[i];
        loss += error * error;
        float dforce = 2 * error * DT * DT; /* d loss / d force_i through this step */
        c->grad_b[i] = dforce;
        for (int j = 0; j < 4; j++) c->grad_w[i * 4 + j] = dforce * features[j];
    }
    return loss;
}

/* FNV-1a over the controller's weights' bits. */
static uint64_t weights_hash(const controller *c) {
    uint64_t hash = 1469598103934665603ull;
    const unsigned char *bytes = (const unsigned char *)c->w;
    for (size_t i = 0; i < sizeof c->w + sizeof c->b; i++) hash = (hash ^ bytes[i]) * 1099511628211ull;
    return hash;
}

/* Runs the whole game; returns an FNV-1a checksum of the final weights' bits. */
static uint64_t play(int verbose, uint32_t threads, long *setup_allocations, long *step_allocations) {
    long at_start = allocations;
    controller c;
    memset(&c, 0, sizeof c);
    float state[4] = {0, 0, 0, 0};

    adamw_config config = adamw_config_default();
    config.learning_rate = 0.05;
    config.clipnorm = 1.0; /* robust to an occasional large gradient */
    config.reject_non_finite_gradients = 1; /* a NaN gradient is refused, nothing changed */
    config.threads = threads;
    adamw_optimizer *opt = NULL;
    CHECK(adamw_optimizer_new(&config, &opt));
    const size_t w_shape[2] = {2, 4}, b_shape[1] = {2};
    const adamw_variable vars[2] = {
        {.name = "policy/w", .dtype = ADAMW_DTYPE_FLOAT32, .ndim = 2, .shape = w_shape},
        {.name = "policy/b", .dtype = ADAMW_DTYPE_FLOAT32, .ndim = 1, .shape = b_shape},
    };
    CHECK(adamw_optimizer_build(opt, vars, 2)); /* all optimizer memory is allocated here */
    const adamw_gradient step[2] = {
        {.variable = 0, .dtype = ADAMW_DTYPE_FLOAT32, .data = c.w, .len = 8, .dense = c.grad_w},
        {.variable = 1, .dtype = ADAMW_DTYPE_FLOAT32, .data = c.b, .len = 2, .dense = c.grad_b},
    };

    /* The quick save: the optimizer's checkpoint and the game's own state, in buffers sized here. */
    size_t save_len = 0;
    CHECK(adamw_optimizer_save_own_variables(opt, NULL, 0, &save_len));
    uint8_t *saved_optimizer = malloc(save_len);
    controller saved_controller = c;
    float saved_state[4] = {0, 0, 0, 0};
    int replayed = 0;
    uint64_t at_1500 = 0; /* the weights' hash when frame 1500 is first reached */

    *setup_allocations = allocations - at_start; /* the handle, m and v: proves the count works */
    long in_steps = 0; /* allocations inside apply_gradients only */
    float recent = 0;
    for (int t = 0; t < FRAMES; t++) {
        if (t == 1500 && replayed) { /* the replayed frames reached the same bits */
            if (weights_hash(&c) != at_1500) {
                fprintf(stderr, "error: the replay from the quick save reached other weights\n");
                exit(1);
            }
            if (verbose) printf("frame 1500 again: the same weights as the first time\n");
        }
        if (t == 1500 && !replayed) { /* the player loads the last save and plays on from it */
            replayed = 1;
            at_1500 = weights_hash(&c);
            recent = 0;
            CHECK(adamw_optimizer_load_own_variables(opt, saved_optimizer, save_len));
            c = saved_controller;
            memcpy(state, saved_state, sizeof saved_state);
            t = 1250;
            if (verbose) printf("frame 1500: loaded the quick save of frame 1250\n");
        }
        if (t % 250 == 0) { /* quick save */
            CHECK(adamw_optimizer_save_own_variables(opt, saved_optimizer, save_len, &save_len));
            saved_controller = c;
            memcpy(saved_state, state, sizeof saved_state);
        }
        float target[2] = {(t / 500) % 2 ? 1.0f : -1.0f, (t / 250) % 2 ? 0.5f : -0.5f};
        float loss = frame(&c, state, target);
        if (t == 777) c.grad_w[3] = NAN; /* a glitch */
        long before = allocations;
        adamw_status status = adamw_optimizer_apply_gradients(opt, step, 2, NULL);
        /* A refused call writes its message for adamw_last_error (an allocation); steps that
           go through allocate nothing. */
        if (status == ADAMW_STATUS_OK) in_steps += allocations - before;
        if (status == ADAMW_STATUS_NON_FINITE_GRADIENT) {
            if (verbose) printf("frame %4d: a NaN gradient, refused (nothing changed)\n", t);
        } else {
            CHECK(status);
        }
        recent += loss;
        if (verbose && (t + 1) % 250 == 0) {
            printf("frame %4d  mean distance^2 over the last 250 frames: %.4f\n", t + 1, recent / 250);
            recent = 0;
        }
    }
    free(saved_optimizer);
    *step_allocations = in_steps;
    adamw_optimizer_free(opt);

    return weights_hash(&c);
}

int main(int argc, char **argv) {
    uint32_t threads = argc > 1 ? (uint32_t)strtoul(argv[1], NULL, 10) : 1;
    long setup = 0, allocs_first = 0, allocs_second = 0;
    uint64_t first = play(1, threads, &setup, &allocs_first);
    uint64_t second = play(0, threads, &setup, &allocs_second);
    printf("allocations: %ld while creating and building, %ld in the steps (second run: %ld)\n", setup, allocs_first,
           allocs_second);
    printf("weights checksum: %016llx (second run: %016llx, %s)\n", (unsigned long long)first,
           (unsigned long long)second, first == second ? "identical" : "DIFFERENT");
    /* With one thread nothing may be allocated; with a pool, its threads start in the background
     * and the counter sees every thread, so only the bits are checked then. */
    int allocations_ok = threads != 1 || (allocs_first == 0 && allocs_second == 0);
    return setup > 0 && allocations_ok && first == second ? 0 : 1;
}
