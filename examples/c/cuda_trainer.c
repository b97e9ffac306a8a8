/* A training loop whose weights live on the GPU: libadamw's CUDA engine steps them on the
 * caller's own CUDA stream, after the caller's upload of the gradients and before its download
 * of the weights, with the CPU engine's bits.
 *
 * The model is a linear layer (64 inputs, 16 outputs) fitted to a fixed random linear map by
 * mean squared error. The weights and gradients are device memory; the forward and backward
 * passes run on the host here (an engine would run its own kernels on the same stream), so
 * each step is: upload the gradients, apply_gradients, download the weights, all enqueued on
 * one stream, then one synchronize. The same loop with an optimizer on the CPU must reach the
 * same bits (global_clipnorm and amsgrad on, to take the device's reductions along).
 *
 * The CUDA driver is loaded at run time (dlopen "libcuda.so.1"), so the example builds with
 * nothing but a C compiler. Where there is no GPU it runs on libadamw's host-kernels device
 * (the CUDA kernels compiled for the host, a library built with `--features host-kernels`),
 * where host memory stands for device memory: the same calls, the same bits.
 *
 * Usage: cuda_trainer [--host-kernels] (prefer the emulated device even with a GPU). */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adamw.h"

#define CHECK(call)                                                                             \
    do {                                                                                        \
        adamw_status status_ = (call);                                                          \
        if (status_ != ADAMW_STATUS_OK) {                                                       \
            char message_[512];                                                                 \
            size_t len_ = 0;                                                                    \
            adamw_last_error(message_, sizeof message_, &len_);                                 \
            fprintf(stderr, "%s failed: %s: %s\n", #call, adamw_status_name(status_), message_); \
            exit(1);                                                                            \
        }                                                                                       \
    } while (0)

enum { INPUTS = 64, OUTPUTS = 16, BATCH = 32, STEPS = 200 };

/* ---- the few CUDA driver calls the caller makes, or host memory standing for the device ---- */
typedef int CUresult; /* 0 is CUDA_SUCCESS */
typedef unsigned long long CUdeviceptr;
typedef void *CUstream;
static struct {
    int on_gpu;
    CUstream stream;
    CUresult (*init)(unsigned);
    CUresult (*device_get)(int *, int);
    CUresult (*primary_ctx_retain)(void **, int);
    CUresult (*ctx_set_current)(void *);
    CUresult (*mem_alloc)(CUdeviceptr *, size_t);
    CUresult (*mem_free)(CUdeviceptr);
    CUresult (*upload)(CUdeviceptr, const void *, size_t, CUstream);
    CUresult (*download)(void *, CUdeviceptr, size_t, CUstream);
    CUresult (*stream_create)(CUstream *, unsigned);
    CUresult (*stream_synchronize)(CUstream);
    CUresult (*stream_destroy)(CUstream);
} cuda;

#define CU(call)                                                                  \
    do {                                                                          \
        CUresult result_ = (call);                                                \
        if (result_ != 0) { fprintf(stderr, "%s: CUDA error %d\n", #call, result_); exit(1); } \
    } while (0)

/* Opens the CUDA driver and GPU 0's primary context (the one libadamw uses); 0 if there is none. */
static int open_gpu(void) {
    void *driver = dlopen("libcuda.so.1", RTLD_NOW);
    if (!driver) return 0;
    const struct { void *slot; const char *name; } symbols[] = {
        {&cuda.init, "cuInit"}, {&cuda.device_get, "cuDeviceGet"},
        {&cuda.primary_ctx_retain, "cuDevicePrimaryCtxRetain"}, {&cuda.ctx_set_current, "cuCtxSetCurrent"},
        {&cuda.mem_alloc, "cuMemAlloc_v2"}, {&cuda.mem_free, "cuMemFree_v2"},
        {&cuda.upload, "cuMemcpyHtoDAsync_v2"}, {&cuda.download, "cuMemcpyDtoHAsync_v2"},
        {&cuda.stream_create, "cuStreamCreate"}, {&cuda.stream_synchronize, "cuStreamSynchronize"},
        {&cuda.stream_destroy, "cuStreamDestroy_v2"},
    };
    for (size_t i = 0; i < sizeof symbols / sizeof symbols[0]; i++) {
        void *function = dlsym(driver, symbols[i].name);
        if (!function) return 0;
        memcpy(symbols[i].slot, &function, sizeof function); /* a data pointer to a function pointer */
    }
    int device = 0;
    void *context = NULL;
    if (cuda.init(0) != 0 || cuda.device_get(&device, 0) != 0) return 0; /* a driver, no GPU */
    CU(cuda.primary_ctx_retain(&context, device));
    CU(cuda.ctx_set_current(context));
    CU(cuda.stream_create(&cuda.stream, 1 /* CU_STREAM_NON_BLOCKING */));
    return 1;
}

static void *device_alloc(size_t bytes) {
    if (!cuda.on_gpu) return calloc(1, bytes);
    CUdeviceptr pointer = 0;
    CU(cuda.mem_alloc(&pointer, bytes));
    return (void *)(uintptr_t)pointer;
}
static void device_free(void *pointer) {
    if (cuda.on_gpu) CU(cuda.mem_free((CUdeviceptr)(uintptr_t)pointer));
    else free(pointer);
}
static void upload(void *device, const void *host, size_t bytes) {
    if (cuda.on_gpu) CU(cuda.upload((CUdeviceptr)(uintptr_t)device, host, bytes, cuda.stream));
    else memcpy(device, host, bytes);
}
static void download(void *host, const void *device, size_t bytes) {
    if (cuda.on_gpu) CU(cuda.download(host, (CUdeviceptr)(uintptr_t)device, bytes, cuda.stream));
    else memcpy(host, device, bytes);
}
static void synchronize(void) {
    if (cuda.on_gpu) CU(cuda.stream_synchronize(cuda.stream));
}

/* ---- the model: y = W x + b, mean squared error against a fixed random map ---- */
static uint32_t rng_state = 2024;
static float uniform(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)(rng_state >> 8) / 16777216.0f * 2.0f - 1.0f;
}
static float target_w[OUTPUTS][INPUTS], x[STEPS][BATCH][INPUTS];

/* The loss of batch `step` and its gradient (dw, db) at the weights (w, b). */
static float loss_and_gradient(int step, const float *w, const float *b, float *dw, float *db) {
    float loss = 0;
    memset(dw, 0, sizeof(float) * OUTPUTS * INPUTS);
    memset(db, 0, sizeof(float) * OUTPUTS);
    for (int n = 0; n < BATCH; n++) {
        for (int o = 0; o < OUTPUTS; o++) {
            float y = b[o], want = 0;
            for (int i = 0; i < INPUTS; i++) {
                y += w[o * INPUTS + i] * x[step][n][i];
                want += target_w[o][i] * x[step][n][i];
            }
            float error = (y - want) / (BATCH * OUTPUTS);
            loss += (y - want) * error;
            for (int i = 0; i < INPUTS; i++) dw[o * INPUTS + i] += 2 * error * x[step][n][i];
            db[o] += 2 * error;
        }
    }
    return loss;
}

static adamw_optimizer *new_optimizer(uint32_t device_kind) {
    adamw_config config = adamw_config_default();
    config.learning_rate = 0.01;
    config.global_clipnorm = 1.0;
    config.amsgrad = 1;
    config.jit_compile = 1; /* Keras' device path: needed for a device */
    adamw_optimizer *optimizer = NULL;
    CHECK(adamw_optimizer_new(&config, &optimizer));
    if (device_kind != ADAMW_DEVICE_KIND_CPU) CHECK(adamw_optimizer_set_device(optimizer, device_kind, 0));
    const size_t w_shape[2] = {OUTPUTS, INPUTS}, b_shape[1] = {OUTPUTS};
    adamw_variable variables[2] = {
        {.name = "dense/kernel", .dtype = ADAMW_DTYPE_FLOAT32, .ndim = 2, .shape = w_shape},
        {.name = "dense/bias", .dtype = ADAMW_DTYPE_FLOAT32, .ndim = 1, .shape = b_shape},
    };
    CHECK(adamw_optimizer_build(optimizer, variables, 2));
    return optimizer;
}

static float host_w[OUTPUTS * INPUTS], host_b[OUTPUTS], dw[OUTPUTS * INPUTS], db[OUTPUTS];
static float cpu_w[OUTPUTS * INPUTS], cpu_b[OUTPUTS];

int main(int argc, char **argv) {
    int want_host_kernels = argc > 1 && strcmp(argv[1], "--host-kernels") == 0;
    for (int o = 0; o < OUTPUTS; o++)
        for (int i = 0; i < INPUTS; i++) target_w[o][i] = uniform();
    for (int s = 0; s < STEPS; s++)
        for (int n = 0; n < BATCH; n++)
            for (int i = 0; i < INPUTS; i++) x[s][n][i] = uniform();

    /* The device: a GPU if there is one, else the host-kernels device. */
    uint32_t kind = ADAMW_DEVICE_KIND_HOST_KERNELS;
    cuda.on_gpu = !want_host_kernels && open_gpu();
    if (cuda.on_gpu) kind = ADAMW_DEVICE_KIND_CUDA;
    adamw_optimizer *on_device = new_optimizer(kind);
    if (cuda.on_gpu) CHECK(adamw_optimizer_set_stream(on_device, cuda.stream)); /* the caller's stream */
    printf("device: %s\n", cuda.on_gpu ? "CUDA GPU 0, the caller's stream"
                                       : "host kernels (no GPU here: host memory stands for device memory)");
    adamw_optimizer *on_cpu = new_optimizer(ADAMW_DEVICE_KIND_CPU);

    float *w = device_alloc(sizeof host_w), *b = device_alloc(sizeof host_b);
    float *grad_w = device_alloc(sizeof dw), *grad_b = device_alloc(sizeof db);
    upload(w, host_w, sizeof host_w); /* zeros: the initial weights */
    upload(b, host_b, sizeof host_b);
    synchronize();
    adamw_gradient entries[2] = {
        {.variable = 0, .dtype = ADAMW_DTYPE_FLOAT32, .data = w, .len = OUTPUTS * INPUTS, .dense = grad_w},
        {.variable = 1, .dtype = ADAMW_DTYPE_FLOAT32, .data = b, .len = OUTPUTS, .dense = grad_b},
    };
    adamw_gradient cpu_entries[2] = {
        {.variable = 0, .dtype = ADAMW_DTYPE_FLOAT32, .data = cpu_w, .len = OUTPUTS * INPUTS, .dense = dw},
        {.variable = 1, .dtype = ADAMW_DTYPE_FLOAT32, .data = cpu_b, .len = OUTPUTS, .dense = db},
    };
    int same_bits = 1;
    for (int step = 0; step < STEPS; step++) {
        /* On the device: the gradients up, the step, the weights down, on one stream. */
        float loss = loss_and_gradient(step, host_w, host_b, dw, db);
        upload(grad_w, dw, sizeof dw);
        upload(grad_b, db, sizeof db);
        CHECK(adamw_optimizer_apply_gradients(on_device, entries, 2, NULL));
        download(host_w, w, sizeof host_w);
        download(host_b, b, sizeof host_b);
        synchronize(); /* before the host reads the weights or rewrites dw, db */
        /* The same step on the CPU engine, from its own weights. */
        loss_and_gradient(step, cpu_w, cpu_b, dw, db);
        CHECK(adamw_optimizer_apply_gradients(on_cpu, cpu_entries, 2, NULL));
        same_bits &= memcmp(host_w, cpu_w, sizeof cpu_w) == 0 && memcmp(host_b, cpu_b, sizeof cpu_b) == 0;
        if (step % 50 == 0 || step == STEPS - 1) printf("step %3d  loss %.6f\n", step, loss);
    }
    printf("after %d steps the device's weights are %s the CPU engine's\n", STEPS,
           same_bits ? "the same bits as" : "NOT the same bits as");
    device_free(w);
    device_free(b);
    device_free(grad_w);
    device_free(grad_b);
    adamw_optimizer_free(on_device); /* waits for the work enqueued on the stream */
    adamw_optimizer_free(on_cpu);
    if (cuda.on_gpu) CU(cuda.stream_destroy(cuda.stream));
    return same_bits ? 0 : 1;
}
