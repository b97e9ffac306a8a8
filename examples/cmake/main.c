/* Uses an installed libadamw: version check, one step, Keras' first-step value. */
#include <stdio.h>
#include <string.h>

#include <adamw.h>

int main(void) {
    if (adamw_abi_version() != ADAMW_ABI_VERSION) {
        fprintf(stderr, "ABI %u linked, %d in the header\n", adamw_abi_version(), ADAMW_ABI_VERSION);
        return 1;
    }
    adamw_config config = adamw_config_default();
    adamw_optimizer *opt = NULL;
    float x[3] = {0.5f, -1.5f, 2.0f}, g[3] = {0.1f, -0.2f, 0.3f};
    const size_t shape[1] = {3};
    adamw_variable var = {.name = "x", .dtype = ADAMW_DTYPE_FLOAT32, .ndim = 1, .shape = shape};
    adamw_gradient entry = {.variable = 0, .dtype = ADAMW_DTYPE_FLOAT32, .data = x, .len = 3, .dense = g};
    if (adamw_optimizer_new(&config, &opt) || adamw_optimizer_build(opt, &var, 1) ||
        adamw_optimizer_apply_gradients(opt, &entry, 1, NULL)) {
        return 1;
    }
    adamw_optimizer_free(opt);
    unsigned bits;
    memcpy(&bits, &x[0], 4);
    printf("consumer (C): libadamw %s, x[0] = %#x\n", adamw_version(), bits);
    return bits == 0x3eff7cacu ? 0 : 1;
}
