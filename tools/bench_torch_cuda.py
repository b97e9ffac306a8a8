"""torch.optim.AdamW(fused=True) on the GPU, for tools/gpu-check.sh: milliseconds per step and the
bytes a step moves per second (28 per float32 parameter, 14 per bfloat16 one: read the parameter,
gradient and both moments, write the parameter and moments), at the sizes benches/device.rs uses,
next to a device-to-device copy measured in the same run."""
import torch


def timed(f, reps):
    f()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        f()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / reps


for log2 in (20, 24, 26, 28):
    n = 1 << log2
    copy_bytes = max(4 * n, 1 << 30)
    src = torch.empty(copy_bytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    copy_s = timed(lambda: dst.copy_(src), 10)
    copy_gbs = 2 * copy_bytes / copy_s / 1e9
    for dtype, bytes_per_param in ((torch.float32, 28), (torch.bfloat16, 14)):
        p = torch.nn.Parameter(torch.linspace(-0.5, 0.5, n, device="cuda", dtype=dtype))
        p.grad = torch.full_like(p, 0.01)
        opt = torch.optim.AdamW([p], lr=1e-3, weight_decay=0.004, eps=1e-7, fused=True)
        step_s = timed(opt.step, 20)
        gbs = bytes_per_param * n / step_s / 1e9
        print(f"{n >> 20:>5}M params  torch fused {str(dtype):<15} {step_s * 1e3:8.3f} ms  {gbs:7.1f} GB/s  "
              f"copy {copy_gbs:7.1f} GB/s  ratio {gbs / copy_gbs:.2f}")
        del p, opt
    del src, dst
