/* Sharded state under MPI: the optimizer state each rank holds and the time of a rank's step
   over its shard, against an unsharded optimizer stepping the whole variable in the same
   process, taking turns (7 rounds, the median counts). It measures; it asserts nothing.

   mpicc -O2 -Iinclude tools/bench/sharded.c target/release/libadamw.a -lm -ldl -lpthread -o sharded
   mpirun -np 2 ./sharded [n]   (add --oversubscribe beyond the core count) */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adamw.h"

static int32_t all_reduce(double *values, size_t count, void *user_data) {
    (void)user_data;
    return MPI_Allreduce(MPI_IN_PLACE, values, (int)count, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD) == MPI_SUCCESS ? 0 : 1;
}

typedef struct side {
    adamw_optimizer *opt;
    float *w, *g;
    size_t len;
} side;

static side make(size_t n, size_t offset, size_t len, double clipnorm, int sharded) {
    adamw_config cfg = adamw_config_default();
    cfg.clipnorm = clipnorm;
    cfg.threads = 1;
    if (sharded) cfg.mesh_all_reduce = all_reduce;
    side s = {NULL, malloc(len * 4 + 4), malloc(len * 4 + 4), len};
    for (size_t i = 0; i < len; i++) {
        s.w[i] = 0.5f;
        s.g[i] = (float)((offset + i) % 13) * 0.01f - 0.06f;
    }
    adamw_optimizer_new(&cfg, &s.opt);
    const size_t shape[1] = {n};
    adamw_variable v = {"w", ADAMW_DTYPE_FLOAT32, 1, shape, NULL, (uint8_t)sharded, offset, len};
    if (adamw_optimizer_build(s.opt, &v, 1) != ADAMW_STATUS_OK) MPI_Abort(MPI_COMM_WORLD, 1);
    return s;
}

static double seconds_per_step(side *s, int steps) {
    adamw_gradient e = {.variable = 0, .dtype = ADAMW_DTYPE_FLOAT32, .data = s->w, .len = s->len, .dense = s->g};
    MPI_Barrier(MPI_COMM_WORLD);
    double t = MPI_Wtime();
    for (int k = 0; k < steps; k++) adamw_optimizer_apply_gradients(s->opt, &e, 1, NULL);
    return (MPI_Wtime() - t) / steps;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, ranks;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &ranks);
    size_t n = argc > 1 ? (size_t)strtoull(argv[1], NULL, 10) : (size_t)1 << 24;
    size_t offset = n * (size_t)rank / (size_t)ranks, len = n * (size_t)(rank + 1) / (size_t)ranks - offset;
    for (int clipped = 0; clipped < 2; clipped++) {
        double clipnorm = clipped ? 1.0 : 0.0;
        side shard = make(n, offset, len, clipnorm, 1), whole = make(n, 0, n, clipnorm, 0);
        int steps = (int)(((size_t)1 << 26) / n) + 3;
        double t_shard[7], t_whole[7];
        seconds_per_step(&shard, 1);
        seconds_per_step(&whole, 1);
        for (int r = 0; r < 7; r++) {
            t_shard[r] = seconds_per_step(&shard, steps);
            t_whole[r] = seconds_per_step(&whole, steps);
        }
        qsort(t_shard, 7, sizeof(double), by_value);
        qsort(t_whole, 7, sizeof(double), by_value);
        size_t count = 0, bytes = 0;
        adamw_optimizer_num_variables(shard.opt, &count);
        for (size_t i = 1; i < count; i++) {
            adamw_variable_info info;
            adamw_optimizer_variable_info(shard.opt, i, &info);
            bytes += info.len * 4;
        }
        double mine[3] = {t_shard[3], t_whole[3], (double)bytes}, all[3 * 64];
        MPI_Gather(mine, 3, MPI_DOUBLE, all, 3, MPI_DOUBLE, 0, MPI_COMM_WORLD);
        if (rank == 0) {
            printf("%d ranks, n %zu, %s:\n", ranks, n, clipped ? "clipnorm=1 (one all-reduce of the norm's leaves per step)" : "no clipping");
            for (int r = 0; r < ranks && r < 64; r++)
                printf("  rank %d: state %.1f MiB (unsharded %.1f MiB, %.2fx), step %.3f ms (unsharded %.3f ms, %.2fx)\n", r,
                       all[3 * r + 2] / 1048576.0, 8.0 * (double)n / 1048576.0, all[3 * r + 2] / (8.0 * (double)n),
                       all[3 * r] * 1e3, all[3 * r + 1] * 1e3, all[3 * r] / all[3 * r + 1]);
        }
        adamw_optimizer_free(shard.opt);
        adamw_optimizer_free(whole.opt);
        free(shard.w);
        free(shard.g);
        free(whole.w);
        free(whole.g);
    }
    MPI_Finalize();
    return 0;
}
