/* The AdamW loop a C engine writes itself: Keras' formula in plain float32 over one range, with
 * restrict pointers so that the compiler vectorizes it without alias checks (built with
 * `-O3 -march=native -fno-math-errno`, GCC also contracts it into FMAs). Shared by the
 * benchmarks in this folder. */
#ifndef PLAIN_ADAMW_H
#define PLAIN_ADAMW_H
#include <math.h>

static void adamw_range(float *restrict w, const float *restrict g, float *restrict m, float *restrict v, long n,
                        float alpha, float decay, float one_b1, float one_b2, float eps) {
    for (long i = 0; i < n; i++) {
        float x = w[i] - w[i] * decay;
        m[i] += (g[i] - m[i]) * one_b1;
        v[i] += (g[i] * g[i] - v[i]) * one_b2;
        w[i] = x - m[i] * alpha / (sqrtf(v[i]) + eps);
    }
}

#endif
