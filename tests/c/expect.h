/* The C tests' checks: EXPECT, EXPECT_STATUS, EXPECT_MESSAGE, read_whole, and EXPECT_REJECTED, which runs a
 * call that must fail between two snapshots of everything observable about an optimizer (its
 * checkpoint bytes, config, counter and loss scale) and checks that nothing changed. Each test
 * program includes it once. */
#ifndef ADAMW_TESTS_EXPECT_H
#define ADAMW_TESTS_EXPECT_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adamw.h"

static int failures = 0;
static int checks = 0;

#define EXPECT(cond)                                                              \
    do {                                                                          \
        checks++;                                                                 \
        if (!(cond)) {                                                            \
            failures++;                                                           \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                         \
    } while (0)

#define EXPECT_STATUS(call, expected)                                                   \
    do {                                                                                \
        adamw_status got_ = (call);                                                     \
        checks++;                                                                       \
        if (got_ != (expected)) {                                                       \
            char msg_[512];                                                             \
            size_t len_ = 0;                                                            \
            adamw_last_error(msg_, sizeof msg_, &len_);                                 \
            failures++;                                                                 \
            fprintf(stderr, "%s:%d: %s returned %s, expected %s (%s)\n", __FILE__, __LINE__, \
                    #call, adamw_status_name(got_), adamw_status_name(expected), msg_);  \
        }                                                                               \
    } while (0)

/* ---- snapshots: everything observable about an optimizer ---- */
typedef struct {
    uint8_t *bytes;
    size_t len;
    char *config;
    int64_t iterations;
    float loss_scale;
    int64_t loss_scale_counter;
} snapshot;

static inline snapshot take(const adamw_optimizer *opt) {
    snapshot s = {0};
    size_t len = 0;
    if (adamw_optimizer_save_own_variables(opt, NULL, 0, &len) == ADAMW_STATUS_OK) {
        s.bytes = malloc(len ? len : 1);
        s.len = len;
        adamw_optimizer_save_own_variables(opt, s.bytes, len, &len);
    }
    if (adamw_optimizer_get_config(opt, NULL, 0, &len) == ADAMW_STATUS_OK) {
        s.config = malloc(len + 1);
        adamw_optimizer_get_config(opt, s.config, len + 1, &len);
    }
    adamw_optimizer_iterations(opt, &s.iterations);
    /* Only a LossScaleOptimizer's config has an inner optimizer (asking another would fail, and
       replace the message of the call under test). */
    if (s.config != NULL && strstr(s.config, "\"inner_optimizer\"") != NULL) {
        adamw_optimizer_loss_scale(opt, &s.loss_scale, &s.loss_scale_counter);
    }
    return s;
}

static inline int same(snapshot a, snapshot b) {
    return a.len == b.len && memcmp(a.bytes, b.bytes, a.len) == 0 && strcmp(a.config, b.config) == 0 &&
           a.iterations == b.iterations && a.loss_scale == b.loss_scale &&
           a.loss_scale_counter == b.loss_scale_counter;
}

static inline void release(snapshot s) {
    free(s.bytes);
    free(s.config);
}

/* A failing call must change nothing: run it between two snapshots. */
#define EXPECT_REJECTED(opt, call, expected)             \
    do {                                                 \
        snapshot before_ = take(opt);                    \
        EXPECT_STATUS(call, expected);                   \
        snapshot after_ = take(opt);                     \
        EXPECT(same(before_, after_));                   \
        release(before_);                                \
        release(after_);                                 \
    } while (0)

/* The last error's message contains `needle`. */
static inline int last_error_contains(const char *needle) {
    char message[2048];
    size_t len = 0;
    adamw_last_error(message, sizeof message, &len);
    if (strstr(message, needle) != NULL) return 1;
    fprintf(stderr, "  the message \"%s\" does not contain \"%s\"\n", message, needle);
    return 0;
}

#define EXPECT_MESSAGE(needle) EXPECT(last_error_contains(needle))

/* The whole file at `path` (free it), its size in `*len`; NULL (a failed check) if unreadable. */
static inline uint8_t *read_whole(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    EXPECT(f != NULL);
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *bytes = malloc(*len ? *len : 1);
    EXPECT(fread(bytes, 1, *len, f) == *len);
    fclose(f);
    return bytes;
}

/* The closing line: "N passed, N failed", and the exit status. */
static inline int report(void) {
    printf("%d passed, %d failed\n", checks - failures, failures);
    return failures == 0 ? 0 : 1;
}

#endif
