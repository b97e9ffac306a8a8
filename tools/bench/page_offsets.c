/* How the page offsets of a loop's buffers change its speed: a plain float32 AdamW loop (the
 * OpenMP loop of threads.c, one thread) over w, g, m, v placed at chosen offsets within a page,
 * each placement timed in turn, the best of 15 rounds; the time relative to all four at offset 0.
 * Shows 4K aliasing (a load that agrees in its low 12 bits with a store in flight waits for it)
 * and cache-line splits, which decide where libadamw places its state (src/aligned.rs).
 * Build and run (it measures; it asserts nothing):
 *   gcc -O3 -march=native -fno-math-errno tools/bench/page_offsets.c -lm -o /tmp/page_offsets
 *   /tmp/page_offsets 65536; /tmp/page_offsets 1048576 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "plain_adamw.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* n floats starting `offset` bytes into a page. */
static float *placed(long n, long offset) {
    char *p;
    if (posix_memalign((void **)&p, 4096, (size_t)n * 4 + 8192)) exit(1);
    memset(p, 0, (size_t)n * 4 + 8192);
    return (float *)(p + offset);
}

enum { PLACEMENTS = 11 };
static const long offsets[PLACEMENTS][4] = {
    {0, 0, 0, 0},       {16, 16, 16, 16},     {0, 0, 64, 64},  {16, 16, 64, 64},
    {16, 16, 0, 0},     {0, 0, 128, 128},     {0, 0, 512, 512}, {0, 0, 1024, 2048},
    {16, 16, 1040, 2064}, {0, 0, 3968, 3968}, {0, 0, 4032, 4032},
};

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 65536;
    float *a[PLACEMENTS][4];
    for (int k = 0; k < PLACEMENTS; k++)
        for (int j = 0; j < 4; j++) {
            a[k][j] = placed(n, offsets[k][j]);
            if (j < 2)
                for (long i = 0; i < n; i++) a[k][j][i] = (float)((i * 7919 + j) % 1000) * 1e-3f - 0.5f;
        }
    double best[PLACEMENTS];
    for (int k = 0; k < PLACEMENTS; k++) best[k] = 1e30;
    for (int r = 0; r < 15; r++)
        for (int k = 0; k < PLACEMENTS; k++) {
            int reps = (int)(2e7 / (double)n) + 1;
            double t = now();
            for (int q = 0; q < reps; q++) adamw_range(a[k][0], a[k][1], a[k][2], a[k][3], n, 1e-3f, 4e-6f, 0.1f, 0.001f, 1e-7f);
            double us = (now() - t) / reps * 1e6;
            if (us < best[k]) best[k] = us;
        }
    printf("# %ld elements, one thread; page offsets in bytes; best of 15 rounds\n", n);
    for (int k = 0; k < PLACEMENTS; k++)
        printf("w %4ld  g %4ld  m %4ld  v %4ld : %9.1f us  (%.2f)\n", offsets[k][0], offsets[k][1], offsets[k][2],
               offsets[k][3], best[k], best[k] / best[0]);
    return 0;
}
