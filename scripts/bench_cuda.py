#!/usr/bin/env python3
"""Runs terra's CUDA benchmarks (terra_bench_cuda) and the same workloads through PyTorch
(bench/peers/cuda_torch.py) on the same GPU, one after the other, and prints one table:
terra's time, PyTorch's, their ratio, and for the bandwidth cases the fraction of the measured
copy bandwidth; for matmul terra's TFLOP/s against cuBLAS called directly.
  python3 scripts/bench_cuda.py --bin build/cuda/bench/terra_bench_cuda [--out results.json]"""
import argparse
import json
import os
import subprocess
import sys


def run_terra(binary):
    res = subprocess.run([binary, "--benchmark_format=json", "--benchmark_repetitions=5",
                          "--benchmark_report_aggregates_only=true"], check=True,
                         capture_output=True, text=True)
    rows = {}
    for b in json.loads(res.stdout)["benchmarks"]:
        if b.get("aggregate_name") != "median":
            continue
        rows[b["run_name"]] = b
    return rows


def run_torch():
    here = os.path.dirname(os.path.abspath(__file__))
    res = subprocess.run([sys.executable, os.path.join(here, "..", "bench", "peers", "cuda_torch.py")],
                         check=True, capture_output=True, text=True)
    return {b["name"]: b for b in json.loads(res.stdout)["benchmarks"]}


def ms(b):
    unit = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b.get("time_unit", "ms")]
    return b["real_time"] * unit


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--out")
    args = ap.parse_args()
    terra, torch = run_terra(args.bin), run_torch()
    copy_bw = terra.get("BM_copy/67108864/manual_time", {}).get("bytes_per_second")
    print(f"{'case':40} {'terra ms':>10} {'torch ms':>10} {'terra/torch':>11}  note")
    for name, t in terra.items():
        p = torch.get(name)
        note = ""
        if "bytes_per_second" in t and copy_bw:
            note = f"{t['bytes_per_second'] / copy_bw:.0%} of copy bandwidth"
        if "TFLOPs" in t:
            cub = terra.get(name.replace("BM_matmul", "BM_cublas"), {}).get("TFLOPs")
            note = f"{t['TFLOPs']:.1f} TFLOP/s" + (f", {t['TFLOPs'] / cub:.0%} of cuBLAS" if cub else "")
        if "us_per_op" in t:
            note = f"{t['us_per_op']:.2f} us/op"
        for mode, what in (("coexec", "co-executed"), ("graphs", "co-executed with CUDA graphs")):
            if f"small_step_{mode}" in name:
                eager = terra.get(name.replace(mode, "eager"))
                if eager:
                    note = f"{what} / terra eager {ms(t) / ms(eager):.2f}"
                if "graph_launches" in t:
                    note += f" ({t['graph_launches']:.0f} graph launches, {t['graph_failures']:.0f} failed)"
        pt = ms(p) if p else float("nan")
        print(f"{name:40} {ms(t):10.3f} {pt:10.3f} {ms(t) / pt:11.2f}  {note}")
    # PyTorch rows without a terra twin (whole-step CUDA graph, torch.compile), against terra's
    # co-executed small step, without and with CUDA graphs.
    co = terra.get("BM_small_step_coexec/real_time")
    gr = terra.get("BM_small_step_graphs/real_time")
    for name, p in torch.items():
        if name in terra:
            continue
        note = p.get("error", "")
        ratio = ms(co) / ms(p) if co and ms(p) == ms(p) else float("nan")
        gratio = ms(gr) / ms(p) if gr and ms(p) == ms(p) else float("nan")
        print(f"{name:40} {float('nan'):10.3f} {ms(p):10.3f} {ratio:11.2f}  terra co-executed / this "
              f"(with CUDA graphs: {gratio:.2f}) {note}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"terra": terra, "torch": torch}, f, indent=1)


if __name__ == "__main__":
    main()
