"""The workloads of bench/bench_cuda.cpp through PyTorch on the same GPU, timed the same way
(CUDA events around the GPU work; the tiny-op case times host launches). Prints Google-Benchmark
style JSON (name, real_time in ms, extra counters) on stdout. Used by scripts/bench_cuda.py."""
import json
import sys

import torch


def time_gpu(body, iters=20):
    for _ in range(3):
        body()
    torch.cuda.synchronize()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(iters):
        start.record()
        body()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    times.sort()
    return times[len(times) // 2]  # median, ms


def main():
    dev = torch.device("cuda")
    out = []
    n = 1 << 26
    a, b = torch.ones(n, device=dev), torch.ones(n, device=dev)
    c = torch.empty(n, device=dev)
    ms = time_gpu(lambda: c.copy_(a))
    out.append({"name": "BM_copy/67108864/manual_time", "real_time": ms, "bytes_per_second": n * 8 / (ms / 1e3)})
    ms = time_gpu(lambda: a + b)
    out.append({"name": "BM_add/67108864/manual_time", "real_time": ms, "bytes_per_second": n * 12 / (ms / 1e3)})
    ms = time_gpu(lambda: a.sum())
    out.append({"name": "BM_sum/67108864/manual_time", "real_time": ms, "bytes_per_second": n * 4 / (ms / 1e3)})

    x, y = torch.ones(1, device=dev), torch.ones(1, device=dev)
    import time
    for _ in range(100):
        x + y
    torch.cuda.synchronize()
    reps = 200
    t0 = time.perf_counter()
    for _ in range(reps):
        for _ in range(100):
            x + y
        torch.cuda.synchronize()
    us = (time.perf_counter() - t0) / (reps * 100) * 1e6
    out.append({"name": "BM_tiny_add/real_time", "real_time": us * 100 / 1e3, "us_per_op": us})

    m = 4096
    for code, label in ((0, "f32"), (1, "tf32"), (2, "bf16")):
        torch.backends.cuda.matmul.allow_tf32 = code == 1
        dt = torch.bfloat16 if code == 2 else torch.float32
        p, q = torch.rand(m, m, device=dev, dtype=dt), torch.rand(m, m, device=dev, dtype=dt)
        ms = time_gpu(lambda: p @ q)
        out.append({"name": f"BM_matmul/{code}/{m}/manual_time", "label": label, "real_time": ms,
                    "TFLOPs": 2 * m ** 3 / (ms / 1e3) / 1e12})
    torch.backends.cuda.matmul.allow_tf32 = False

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(784, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024),
                              torch.nn.ReLU(), torch.nn.Linear(1024, 10)).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    xb, yb = torch.randn(256, 784, device=dev), torch.randint(0, 10, (256,), device=dev)

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xb), yb).backward()
        opt.step()
    ms = time_gpu(step)
    out.append({"name": "BM_train_mlp/manual_time", "real_time": ms})
    json.dump({"context": {"torch": torch.__version__, "device": torch.cuda.get_device_name()},
               "benchmarks": out}, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
