#!/usr/bin/env python3
"""Prints terra's times beside LibTorch's from a Google Benchmark JSON file.

    python3 scripts/bench_ratios.py build-bench/bench.json [more.json ...] [--markdown]

Several files (terra_bench's and terra_bench_train's) make one table, in file order. Pairs BM_terra_<case> with BM_torch_<case> and prints wall-clock time (real_time) per
iteration and the ratio terra/torch (below 1: terra is faster). With repetitions, the median
aggregate is used when present, else the median of the repetitions. Standard library only.
"""

import json
import re
import statistics
import sys

TO_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}
NAME = re.compile(r"^BM_(terra|torch)_(.+?)(/real_time)?$")


def fmt_time(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if ns >= scale:
            return "%.3g %s" % (ns / scale, unit)
    return "%.3g ns" % ns


def load(paths):
    docs = []
    for path in paths:
        with open(path) as f:
            text = f.read()
        # A binary whose cases a --benchmark_filter all excluded leaves an empty file.
        if text.strip():
            docs.append(json.loads(text))
    runs, medians, errors, order = {}, {}, {}, []
    for b in (b for doc in docs for b in doc.get("benchmarks", [])):
        m = NAME.match(b.get("run_name", b["name"]))
        if not m:
            continue
        key = (m.group(2), m.group(1))  # (case, library)
        if m.group(2) not in order:
            order.append(m.group(2))
        if b.get("error_occurred"):
            errors[key] = b.get("error_message", "error")
            continue
        ns = b["real_time"] * TO_NS[b.get("time_unit", "ns")]
        if b.get("run_type") == "aggregate":
            if b.get("aggregate_name") == "median":
                medians[key] = ns
        else:
            runs.setdefault(key, []).append(ns)
    times = {k: statistics.median(v) for k, v in runs.items()}
    times.update(medians)
    return (docs[0].get("context", {}) if docs else {}), order, times, errors


def cell(key, times, errors):
    if key in times:
        return fmt_time(times[key])
    if key in errors:
        return "error: " + errors[key][:40]
    return "-"


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    if not args:
        sys.exit(__doc__)
    markdown = "--markdown" in argv
    context, order, times, errors = load(args)
    rows = []
    for case in order:
        t, p = (case, "terra"), (case, "torch")
        ratio = "%.2f" % (times[t] / times[p]) if t in times and p in times else "-"
        rows.append((case, cell(t, times, errors), cell(p, times, errors), ratio))
    head = ("case", "terra", "torch", "terra/torch")
    print("threads: terra %s, torch %s, openblas %s; host %s, %s CPUs" % (
        context.get("terra_threads", "?"), context.get("torch_threads", "?"),
        context.get("openblas_threads", "?"), context.get("host_name", "?"),
        context.get("num_cpus", "?")))
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join(["---"] + ["---:"] * 3) + "|")
        for r in rows:
            print("| " + " | ".join(r) + " |")
        return
    if not rows:
        print("no BM_terra_/BM_torch_ results")
        return
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
    for r in [head] + rows:
        print("  ".join([r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in range(1, 4)]))


if __name__ == "__main__":
    main(sys.argv)
