// kernels.cu compiled for the host: each launch runs every block and thread of its grid in
// turn on the calling thread. Entry points for engine::device::host.
#include "host_shim.h"

#include "kernels.cu"

template <class Params>
static void launch(void (*kernel)(Params), const void* params, unsigned grid, unsigned block) {
    Params p;
    memcpy(&p, params, sizeof p);
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    for (unsigned b = 0; b < grid; b++) {
        for (unsigned t = 0; t < block; t++) {
            blockIdx = {b, 0, 0};
            threadIdx = {t, 0, 0};
            kernel(p);
        }
    }
}

// The step's launch, as adamw_step runs it on a GPU: each block's threads run `step_block`,
// then, where the block takes the report's group lanes, `block_group_lane` (the barrier between
// the two is the end of the first loop).
extern "C" void adamw_host_step(const void* params, unsigned grid, unsigned block) {
    adamw_step_params p;
    memcpy(&p, params, sizeof p);
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    static thread_local u64 squares[ADAMW_BLOCK_ELEMENTS];  // the block's shared memory
    for (unsigned b = 0; b < grid; b++) {
        blockIdx = {b, 0, 0};
        for (u64 at = b; at < p.total_blocks; at += grid) {
            const adamw_entry& e = step_entry(p, at);
            const u64 base = (at - e.first_block) * ADAMW_BLOCK_ELEMENTS;
            for (unsigned t = 0; t < block; t++) {
                threadIdx = {t, 0, 0};
                step_block(p, e, base, t, squares);
            }
            for (unsigned t = 0; (e.flags & ADAMW_REPORT) && t < block; t++) {
                threadIdx = {t, 0, 0};
                block_group_lane(e, base, squares, t);
            }
        }
    }
}

extern "C" void adamw_host_leaf_sums(const void* params, unsigned grid, unsigned block) {
    launch(adamw_leaf_sums, params, grid, block);
}

extern "C" void adamw_host_first_non_finite(const void* params, unsigned grid, unsigned block) {
    launch(adamw_first_non_finite, params, grid, block);
}

extern "C" void adamw_host_group_lanes(const void* params, unsigned grid, unsigned block) {
    launch(adamw_group_lanes, params, grid, block);
}

extern "C" void adamw_host_task_sums(const void* params, unsigned grid, unsigned block) {
    launch(adamw_task_sums, params, grid, block);
}
