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
    torch.manual_seed(0)
    cnn = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
                              torch.nn.MaxPool2d(2), torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.BatchNorm2d(64),
                              torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
                              torch.nn.Linear(64 * 8 * 8, 10)).to(dev)
    copt = torch.optim.SGD(cnn.parameters(), lr=0.01, momentum=0.9)
    xc, yc = torch.randn(64, 3, 32, 32, device=dev), torch.randint(0, 10, (64,), device=dev)

    def cnn_step():
        copt.zero_grad()
        torch.nn.functional.cross_entropy(cnn(xc), yc).backward()
        copt.step()
    out.append({"name": "BM_train_cnn/manual_time", "real_time": time_gpu(cnn_step)})

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(1000, 256)
            self.ln1, self.ln2 = torch.nn.LayerNorm(256), torch.nn.LayerNorm(256)
            self.attn = torch.nn.MultiheadAttention(256, 8, batch_first=True)
            self.fc1, self.fc2 = torch.nn.Linear(256, 1024), torch.nn.Linear(1024, 256)
            self.head = torch.nn.Linear(256, 1000)
            self.register_buffer("mask", torch.triu(torch.ones(128, 128, dtype=torch.bool), 1))

        def forward(self, idx):
            x = self.emb(idx)
            h = self.ln1(x)
            y = x + self.attn(h, h, h, attn_mask=self.mask, need_weights=False)[0]
            return self.head(y + self.fc2(torch.nn.functional.gelu(self.fc1(self.ln2(y)))))
    blk = Block().to(dev)
    bopt = torch.optim.AdamW(blk.parameters(), lr=1e-3)
    xt, yt = torch.randint(0, 1000, (16, 128), device=dev), torch.randint(0, 1000, (16 * 128,), device=dev)

    def block_step():
        bopt.zero_grad()
        torch.nn.functional.cross_entropy(blk(xt).reshape(-1, 1000), yt).backward()
        bopt.step()
    out.append({"name": "BM_train_transformer/manual_time", "real_time": time_gpu(block_step)})

    out.extend(small_steps(dev))
    json.dump({"context": {"torch": torch.__version__, "device": torch.cuda.get_device_name()},
               "benchmarks": out}, sys.stdout, indent=1)


def small_steps(dev):
    """The launch-bound step of terra_bench_cuda's small_step cases (a 64-wide MLP, batch 32,
    Adam), 20 steps then a read of the loss, wall-clock: PyTorch eager, a hand-captured CUDA
    graph of the whole step, and torch.compile(mode="reduce-overhead") where torch >= 2."""
    import time
    F = torch.nn.functional

    def make():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64),
                                   torch.nn.ReLU(), torch.nn.Linear(64, 10)).to(dev)
    xs, ys = torch.randn(32, 64, device=dev), torch.randint(0, 10, (32,), device=dev)

    def wall(step, reps=30):
        def twenty():
            for _ in range(20):
                loss = step()
            loss.item()
        for _ in range(3):
            twenty()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            twenty()
            times.append(time.perf_counter() - t0)
        times.sort()
        return times[len(times) // 2] * 1e3  # ms per 20 steps

    rows = []
    net = make()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def eager():
        opt.zero_grad()
        loss = F.cross_entropy(net(xs), ys)
        loss.backward()
        opt.step()
        return loss
    rows.append({"name": "BM_small_step_eager/real_time", "real_time": wall(eager)})

    # The whole step captured once, as PyTorch's documentation captures a whole network.
    gnet = make()
    gopt = torch.optim.Adam(gnet.parameters(), lr=1e-3, capturable=True)
    sx, sy = xs.clone(), ys.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            gopt.zero_grad(set_to_none=True)
            F.cross_entropy(gnet(sx), sy).backward()
            gopt.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    gopt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        static_loss = F.cross_entropy(gnet(sx), sy)
        static_loss.backward()
        gopt.step()

    def replay():
        graph.replay()
        return static_loss
    rows.append({"name": "torch_small_step_cuda_graph", "real_time": wall(replay)})

    if hasattr(torch, "compile"):
        try:
            cnet = make()
            copt = torch.optim.Adam(cnet.parameters(), lr=1e-3)

            @torch.compile(mode="reduce-overhead")
            def compiled():
                copt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(cnet(xs), ys)
                loss.backward()
                copt.step()
                return loss
            rows.append({"name": "torch_small_step_compile_reduce_overhead", "real_time": wall(compiled)})
        except Exception as e:  # report, do not hide, a compile that fails
            rows.append({"name": "torch_small_step_compile_reduce_overhead", "real_time": float("nan"),
                         "error": f"{type(e).__name__}: {e}"[:200]})
    return rows


if __name__ == "__main__":
    main()
