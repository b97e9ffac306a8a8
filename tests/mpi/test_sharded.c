/* Sharded state on real MPI ranks: every rank holds an uneven shard of each variable (some
   empty, one smaller than the rank count), its all-reduce is MPI_Allreduce, and after every step
   its values and every optimizer variable equal its part of a one-process optimizer's, bit for
   bit, in every mode. Every rank also runs that one-process optimizer (on the whole variables
   and the same gradients) for the comparison. Run by tools/test-mpi.sh under
   `mpirun -np 2` and `mpirun -np 3 --oversubscribe`; rank 0 prints "N passed, N failed". */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adamw.h"

#define NVARS 4
#define STEPS 4

static int rank, ranks;
static long passed, failed;

#define EXPECT(cond, ...)                                                   \
    do {                                                                    \
        if (cond) {                                                         \
            passed++;                                                       \
        } else {                                                            \
            failed++;                                                       \
            fprintf(stderr, "rank %d: %s:%d: ", rank, __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                                   \
            fputc('\n', stderr);                                            \
        }                                                                   \
    } while (0)

/* The model: a large float32 vector (several of Eigen's leaves), a small float32 embedding with
   sparse gradients, a bfloat16 vector and a float32 pair (fewer elements than ranks). */
static const char *names[NVARS] = {"dense", "embedding", "half", "pair"};
static const uint32_t dtypes[NVARS] = {ADAMW_DTYPE_FLOAT32, ADAMW_DTYPE_FLOAT32, ADAMW_DTYPE_BFLOAT16,
                                       ADAMW_DTYPE_FLOAT32};
static const size_t shapes[NVARS][2] = {{300000, 1}, {7, 5}, {20001, 1}, {2, 1}};
static const size_t ndims[NVARS] = {1, 2, 1, 1};
static size_t numel(int v) { return shapes[v][0] * shapes[v][1]; }
static size_t esize(int v) { return dtypes[v] == ADAMW_DTYPE_BFLOAT16 ? 2 : 4; }

/* Rank r holds elements cut(v, r) .. cut(v, r + 1): quadratic cuts, so the shards are uneven,
   fall inside rows and leaves, and small variables leave the first ranks empty. */
static size_t cut(int v, int r) { return (size_t)((double)numel(v) * r * r / ((double)ranks * ranks)); }

static uint16_t bf16_rne(float x) {
    uint32_t b;
    memcpy(&b, &x, 4);
    return (uint16_t)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

/* Element i of variable v's gradient at `step` (the same on every rank). */
static float grad_value(int step, int v, size_t i) {
    uint64_t h = (uint64_t)i * 2654435761u + (uint64_t)step * 97u + (uint64_t)v * 31u;
    return (float)((long)(h % 2001) - 1000) * 1e-4f * (float)(1 + v);
}

static void fill(void *dst, int v, size_t first, size_t n, float (*value)(int, int, size_t), int step) {
    for (size_t k = 0; k < n; k++) {
        float x = value(step, v, first + k);
        if (dtypes[v] == ADAMW_DTYPE_BFLOAT16)
            ((uint16_t *)dst)[k] = bf16_rne(x);
        else
            ((float *)dst)[k] = x;
    }
}

static float init_value(int step, int v, size_t i) {
    (void)step;
    return (float)((long)((i * 7919u + (size_t)v * 13u) % 1000) - 500) * 1e-3f;
}

static int32_t mpi_all_reduce(double *values, size_t count, void *user_data) {
    (void)user_data;
    return MPI_Allreduce(MPI_IN_PLACE, values, (int)count, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD) == MPI_SUCCESS ? 0 : 1;
}

typedef struct mode {
    const char *name;
    adamw_config cfg;
    int master;          /* float32 master weights for the bfloat16 variable */
    int loss_scale;      /* a dynamic loss scale, and an overflow on the last rank at step 2 */
    int nan_on_rank0;    /* reject_non_finite_gradients, and a NaN held by rank 0 at step 2 */
    int reshard;         /* at the end, the ranks' checkpoints loaded into one unsharded optimizer */
} mode;

typedef struct side {
    adamw_optimizer *opt;
    void *values[NVARS];
    void *grads[NVARS];
    size_t first[NVARS], len[NVARS];
} side;

static const float dummy[1];

/* Builds one side: the shard of every variable (sharded) or the whole variables. */
static void build(side *s, const mode *m, int sharded) {
    adamw_config cfg = m->cfg;
    if (sharded) cfg.mesh_all_reduce = mpi_all_reduce;
    if (adamw_optimizer_new(&cfg, &s->opt) != ADAMW_STATUS_OK) {
        fprintf(stderr, "rank %d: cannot create the optimizer for %s\n", rank, m->name);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    if (m->master) adamw_optimizer_set_master_weights(s->opt, 1);
    if (m->loss_scale) adamw_optimizer_set_loss_scale(s->opt, 1, 1024.0, 2);
    adamw_variable vars[NVARS];
    for (int v = 0; v < NVARS; v++) {
        s->first[v] = sharded ? cut(v, rank) : 0;
        s->len[v] = sharded ? cut(v, rank + 1) - cut(v, rank) : numel(v);
        s->values[v] = calloc(s->len[v] + 1, esize(v));
        s->grads[v] = calloc(numel(v) + 1, esize(v));
        fill(s->values[v], v, s->first[v], s->len[v], init_value, 0);
        vars[v] = (adamw_variable){names[v], dtypes[v], ndims[v], shapes[v], s->values[v], (uint8_t)sharded,
                                   s->first[v], s->len[v]};
    }
    adamw_status st = adamw_optimizer_build(s->opt, vars, NVARS);
    if (st != ADAMW_STATUS_OK) {
        char msg[512];
        size_t n = 0;
        adamw_last_error(msg, sizeof msg, &n);
        fprintf(stderr, "rank %d: build (%s): %s\n", rank, m->name, msg);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
}

/* One step of one side; returns the status. The embedding takes the same whole IndexedSlices on
   every rank; the others a dense gradient of the elements held. */
static adamw_status step(side *s, const mode *m, int k) {
    static const int64_t rows[6] = {1, 6, 1, 3, 0, 6};
    adamw_gradient e[NVARS];
    for (int v = 0; v < NVARS; v++) {
        size_t n = v == 1 ? 6 * shapes[1][1] : s->len[v];
        size_t first = v == 1 ? 0 : s->first[v];
        fill(s->grads[v], v, first, n, grad_value, k);
        e[v] = (adamw_gradient){.variable = (size_t)v, .dtype = dtypes[v], .data = s->values[v], .len = s->len[v]};
        if (v == 1) {
            e[v].indices = rows;
            e[v].num_indices = 6;
            e[v].values = s->grads[v];
            e[v].num_values = n;
        } else {
            e[v].dense = s->len[v] ? s->grads[v] : dummy; /* an empty shard still has a gradient */
        }
    }
    /* Non-finite elements that only one rank holds: the last element of `dense` (the last rank's)
       overflows under the loss scale; element 0 (rank 0's) is NaN for the guard. */
    size_t last = numel(0) - 1;
    if (m->loss_scale && k == 2 && s->first[0] <= last && last < s->first[0] + s->len[0])
        ((float *)s->grads[0])[last - s->first[0]] = 1.0f / 0.0f;
    if (m->nan_on_rank0 && k == 2 && s->first[0] == 0 && s->len[0] > 0) ((float *)s->grads[0])[0] = 0.0f / 0.0f;
    return adamw_optimizer_apply_gradients(s->opt, e, NVARS, NULL);
}

/* The variable `name` ("AdamW/m/dense", "AdamW/master/half", ...) belongs to. */
static int owner(const char *name) {
    const char *slash = strrchr(name, '/');
    const char *tail = slash ? slash + 1 : name;
    for (int v = 0; v < NVARS; v++)
        if (strcmp(tail, names[v]) == 0) return v;
    return -1;
}

/* This rank's part of the one-process optimizer equals its shard: values and every variable. */
static void compare(const side *shard, const side *whole, const mode *m, int k) {
    for (int v = 0; v < NVARS; v++) {
        const char *ref = (const char *)whole->values[v] + shard->first[v] * esize(v);
        EXPECT(memcmp(shard->values[v], ref, shard->len[v] * esize(v)) == 0, "%s, step %d: values of %s differ", m->name,
               k, names[v]);
    }
    size_t n = 0, n_whole = 0;
    adamw_optimizer_num_variables(shard->opt, &n);
    adamw_optimizer_num_variables(whole->opt, &n_whole);
    EXPECT(n == n_whole, "%s: %zu optimizer variables sharded, %zu whole", m->name, n, n_whole);
    for (size_t i = 0; i < n && i < n_whole; i++) {
        adamw_variable_info a, b;
        char name[128];
        size_t len = 0;
        adamw_optimizer_variable_info(shard->opt, i, &a);
        adamw_optimizer_variable_info(whole->opt, i, &b);
        adamw_optimizer_variable_name(shard->opt, i, name, sizeof name, &len);
        size_t size = a.dtype == ADAMW_DTYPE_BFLOAT16 ? 2 : a.dtype == ADAMW_DTYPE_FLOAT32 ? 4 : 8;
        char *x = malloc(a.len * size + 8), *y = malloc(b.len * size + 8);
        adamw_optimizer_get_variable(shard->opt, i, a.dtype, x, a.len);
        adamw_optimizer_get_variable(whole->opt, i, b.dtype, y, b.len);
        int v = owner(name);
        size_t offset = v >= 0 ? shard->first[v] : 0;
        EXPECT(a.dtype == b.dtype && offset + a.len <= b.len && memcmp(x, y + offset * size, a.len * size) == 0,
               "%s, step %d: optimizer variable %zu (%s) differs", m->name, k, i, name);
        free(x);
        free(y);
    }
}

static void run(const mode *m) {
    side shard, whole;
    build(&shard, m, 1);
    build(&whole, m, 0);
    for (int k = 0; k < STEPS; k++) {
        adamw_status a = step(&shard, m, k), b = step(&whole, m, k);
        EXPECT(a == b, "%s, step %d: status %s sharded, %s whole", m->name, k, adamw_status_name(a), adamw_status_name(b));
        if (m->nan_on_rank0 && k == 2) EXPECT(a == ADAMW_STATUS_NON_FINITE_GRADIENT, "%s: the NaN was not rejected", m->name);
        compare(&shard, &whole, m, k);
    }
    /* Resharding R ranks into one: every rank gathers all the shards' checkpoints and loads
       them into an unsharded optimizer, which then saves exactly the one-process bytes. */
    if (m->reshard) {
        size_t mine = 0, whole_len = 0;
        adamw_optimizer_save_own_variables(shard.opt, NULL, 0, &mine);
        adamw_optimizer_save_own_variables(whole.opt, NULL, 0, &whole_len);
        uint8_t *own = malloc(mine + 1), *expected = malloc(whole_len + 1);
        adamw_optimizer_save_own_variables(shard.opt, own, mine, &mine);
        adamw_optimizer_save_own_variables(whole.opt, expected, whole_len, &whole_len);
        int len = (int)mine, *lens = malloc(sizeof(int) * (size_t)ranks), *displs = malloc(sizeof(int) * (size_t)ranks);
        MPI_Allgather(&len, 1, MPI_INT, lens, 1, MPI_INT, MPI_COMM_WORLD);
        int total = 0;
        for (int r = 0; r < ranks; r++) {
            displs[r] = total;
            total += lens[r];
        }
        uint8_t *all = malloc((size_t)total + 1);
        MPI_Allgatherv(own, len, MPI_BYTE, all, lens, displs, MPI_BYTE, MPI_COMM_WORLD);
        const uint8_t **bufs = malloc(sizeof(uint8_t *) * (size_t)ranks);
        size_t *sizes = malloc(sizeof(size_t) * (size_t)ranks);
        for (int r = 0; r < ranks; r++) {
            bufs[r] = all + displs[r];
            sizes[r] = (size_t)lens[r];
        }
        side fresh;
        build(&fresh, m, 0);
        if (ranks > 1)
            EXPECT(adamw_optimizer_load_shards(fresh.opt, bufs, sizes, (size_t)ranks - 1) == ADAMW_STATUS_CHECKPOINT_MISMATCH,
                   "%s: a missing shard was not refused", m->name);
        EXPECT(adamw_optimizer_load_shards(fresh.opt, bufs, sizes, (size_t)ranks) == ADAMW_STATUS_OK, "%s: load_shards",
               m->name);
        size_t got_len = 0;
        adamw_optimizer_save_own_variables(fresh.opt, NULL, 0, &got_len);
        uint8_t *got = malloc(got_len + 1);
        adamw_optimizer_save_own_variables(fresh.opt, got, got_len, &got_len);
        EXPECT(got_len == whole_len && memcmp(got, expected, got_len) == 0,
               "%s: the resharded state differs from the one-process state", m->name);
        for (int v = 0; v < NVARS; v++) {
            free(fresh.values[v]);
            free(fresh.grads[v]);
        }
        adamw_optimizer_free(fresh.opt);
        free(got);
        free(bufs);
        free(sizes);
        free(all);
        free(lens);
        free(displs);
        free(own);
        free(expected);
    }
    if (m->loss_scale) {
        float sa = 0, sb = 0;
        int64_t ca = 0, cb = 0;
        adamw_optimizer_loss_scale(shard.opt, &sa, &ca);
        adamw_optimizer_loss_scale(whole.opt, &sb, &cb);
        EXPECT(sa == sb && ca == cb && sa == 1024.0f, "%s: loss scale %g/%lld sharded, %g/%lld whole", m->name, sa,
               (long long)ca, sb, (long long)cb);
    }
    for (int v = 0; v < NVARS; v++) {
        free(shard.values[v]);
        free(shard.grads[v]);
        free(whole.values[v]);
        free(whole.grads[v]);
    }
    adamw_optimizer_free(shard.opt);
    adamw_optimizer_free(whole.opt);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &ranks);
    adamw_config base = adamw_config_default();
    base.learning_rate = 0.01;
    base.beta_2 = 0.99; /* bfloat16 tells it from 1 */
    base.threads = 1;
    mode modes[] = {
        {"plain", base, 0, 0, 0, 0},
        {"clipvalue", base, 0, 0, 0, 0},
        {"clipnorm", base, 0, 0, 0, 0},
        {"global_clipnorm", base, 0, 0, 0, 0},
        {"amsgrad and EMA with overwrite", base, 0, 0, 0, 1},
        {"clipnorm with float32 master weights", base, 1, 0, 0, 1},
        {"global_clipnorm with a dynamic loss scale", base, 0, 1, 0, 1},
        {"clipnorm with the non-finite guard", base, 0, 0, 1, 0},
    };
    modes[1].cfg.clipvalue = 0.01;
    modes[2].cfg.clipnorm = 0.5;
    modes[3].cfg.global_clipnorm = 1.0;
    modes[4].cfg.amsgrad = 1;
    modes[4].cfg.use_ema = 1;
    modes[4].cfg.ema_momentum = 0.9;
    modes[4].cfg.ema_overwrite_frequency = 2;
    modes[5].cfg.clipnorm = 0.5;
    modes[6].cfg.global_clipnorm = 1.0;
    modes[7].cfg.clipnorm = 0.5;
    modes[7].cfg.reject_non_finite_gradients = 1;
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) run(&modes[i]);

    long counts[2] = {passed, failed}, total[2];
    MPI_Reduce(counts, total, 2, MPI_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rank == 0) printf("%d ranks: %ld passed, %ld failed\n", ranks, total[0], total[1]);
    MPI_Finalize();
    return failed ? 1 : 0;
}
