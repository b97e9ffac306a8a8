/* ZeRO stage 1 with MPI: data-parallel training of a linear model (32 inputs, 8 outputs: 264
   parameters in one flat vector) where each rank holds the optimizer state of its shard only.

   Every step, each rank computes the gradient of the mean squared error on its part of the
   batch; MPI_Reduce_scatter sums the gradients and hands each rank its shard; libadamw steps the
   shard (global_clipnorm takes the norm over all shards through the mesh all-reduce, exactly as
   one process would); MPI_Allgatherv puts the updated parameters back together on every rank.

   Build and run (tools/run-examples.sh does):
     mpicc -Iinclude examples/mpi/zero1.c target/release/libadamw.a -lm -ldl -lpthread -o zero1
     mpirun -np 2 ./zero1 */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "adamw.h"

#define IN 32
#define OUT 8
#define PARAMS (IN * OUT + OUT) /* W row-major [IN][OUT], then b [OUT] */
#define BATCH 96
#define STEPS 300

/* The mesh's all-reduce: MPI's sum over the ranks. */
static int32_t all_reduce(double *values, size_t count, void *user_data) {
    MPI_Comm comm = *(MPI_Comm *)user_data;
    return MPI_Allreduce(MPI_IN_PLACE, values, (int)count, MPI_DOUBLE, MPI_SUM, comm) == MPI_SUCCESS ? 0 : 1;
}

static void check(adamw_status status, const char *what) {
    if (status != ADAMW_STATUS_OK) {
        char message[512];
        size_t len = 0;
        adamw_last_error(message, sizeof message, &len);
        fprintf(stderr, "%s: %s: %s\n", what, adamw_status_name(status), message);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
}

/* A deterministic input in [-1, 1) for sample s, feature j (the same on every rank). */
static float feature(int s, int j) { return (float)((s * 37 + j * 11) % 200) / 100.0f - 1.0f; }

/* The teacher the model learns: y = x . T + c. */
static float teacher(int j, int k) { return (float)((j * 7 + k * 3) % 11 - 5) * 0.1f; }

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, ranks;
    MPI_Comm comm = MPI_COMM_WORLD;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &ranks);

    /* Uneven shards of the flat parameter vector, one per rank. */
    int counts[64], displs[64];
    if (ranks > 64) MPI_Abort(comm, 1);
    for (int r = 0; r < ranks; r++) {
        displs[r] = PARAMS * r / ranks;
        counts[r] = PARAMS * (r + 1) / ranks - displs[r];
    }
    size_t offset = (size_t)displs[rank], len = (size_t)counts[rank];

    adamw_config cfg = adamw_config_default();
    cfg.learning_rate = 0.02;
    cfg.global_clipnorm = 1.0;
    cfg.mesh_all_reduce = all_reduce;
    cfg.mesh_user_data = &comm;
    cfg.threads = 1;
    adamw_optimizer *opt = NULL;
    check(adamw_optimizer_new(&cfg, &opt), "new");
    const size_t shape[1] = {PARAMS};
    adamw_variable params_var = {"params", ADAMW_DTYPE_FLOAT32, 1, shape, NULL, 1, offset, len};
    check(adamw_optimizer_build(opt, &params_var, 1), "build");

    float params[PARAMS] = {0}, grad[PARAMS], shard_grad[PARAMS];
    /* This rank's samples of each batch. */
    int first = BATCH * rank / ranks, last = BATCH * (rank + 1) / ranks;
    double loss = 0;
    for (int step = 0; step < STEPS; step++) {
        double local_loss = 0;
        for (int i = 0; i < PARAMS; i++) grad[i] = 0;
        for (int s = first; s < last; s++) {
            int sample = step * BATCH + s;
            float x[IN];
            for (int j = 0; j < IN; j++) x[j] = feature(sample, j);
            for (int k = 0; k < OUT; k++) {
                float y = params[IN * OUT + k], target = 0.5f;
                for (int j = 0; j < IN; j++) {
                    y += x[j] * params[j * OUT + k];
                    target += x[j] * teacher(j, k);
                }
                float err = y - target;
                local_loss += (double)err * err / (BATCH * OUT);
                float d = 2.0f * err / (BATCH * OUT);
                for (int j = 0; j < IN; j++) grad[j * OUT + k] += d * x[j];
                grad[IN * OUT + k] += d;
            }
        }
        /* The gradient summed over the ranks; each rank receives its shard of it. */
        MPI_Reduce_scatter(grad, shard_grad, counts, MPI_FLOAT, MPI_SUM, comm);
        adamw_gradient entry = {.variable = 0, .dtype = ADAMW_DTYPE_FLOAT32, .data = params + offset, .len = len,
                                .dense = shard_grad};
        check(adamw_optimizer_apply_gradients(opt, &entry, 1, NULL), "apply_gradients");
        /* Every rank gets the whole updated parameter vector back. */
        MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_FLOAT, params, counts, displs, MPI_FLOAT, comm);
        MPI_Allreduce(&local_loss, &loss, 1, MPI_DOUBLE, MPI_SUM, comm);
        if (rank == 0 && (step % 100 == 0 || step == STEPS - 1)) printf("step %3d  loss %.6f\n", step, loss);
    }

    /* The optimizer state this rank holds: m and v of its shard (and the counter). */
    size_t n = 0, bytes = 0;
    check(adamw_optimizer_num_variables(opt, &n), "num_variables");
    for (size_t i = 1; i < n; i++) {
        adamw_variable_info info;
        check(adamw_optimizer_variable_info(opt, i, &info), "variable_info");
        bytes += info.len * 4;
    }
    unsigned long all[64], mine = (unsigned long)bytes;
    MPI_Gather(&mine, 1, MPI_UNSIGNED_LONG, all, 1, MPI_UNSIGNED_LONG, 0, comm);
    if (rank == 0) {
        printf("optimizer state per rank (m and v of its shard):");
        for (int r = 0; r < ranks; r++) printf(" %lu", all[r]);
        printf(" bytes; unsharded: %d bytes\n", 2 * PARAMS * 4);
        printf("final loss %.6f\n", loss);
    }
    adamw_optimizer_free(opt);
    MPI_Finalize();
    return loss < 1e-3 ? 0 : 1;
}
