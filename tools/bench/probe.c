/* The memory probe of tools/bench_peers.py: one pass that reads four float32 arrays and writes
 * three, like an AdamW step, but with no division or square root, so that it runs at the speed
 * the memory system allows. Parallel with OpenMP (OMP_NUM_THREADS threads). */
#include <stddef.h>

void memory_probe(float *p, const float *g, float *m, float *v, long n) {
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) {
        float gi = g[i];
        float mi = m[i] * 0.9f + gi * 0.1f;
        float vi = v[i] * 0.999f + gi * gi * 0.001f;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] - mi * 0.001f - vi * 0.0001f;
    }
}
