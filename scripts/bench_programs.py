#!/usr/bin/env python3
"""The paper programs' benchmark: terra eager and co-executed (build/.../terra_programs) and the
PyTorch peers (bench/peers/<name>.py: eager, TorchScript, and torch.compile where torch >= 2),
all on this machine in one invocation. Writes <out>.json (every measurement), <out>.md (the
table) and, when matplotlib is installed, <out>.png (speed-up over each program's PyTorch eager
step, per system).

  scripts/bench_programs.py --programs build/release/bench/terra_programs \\
      [--config tiny|paper] [--iters 50] [--skip 10] [--threads N] [--only a,b] [--out F]
      [--python /usr/bin/python3] [--no-peers]
  scripts/bench_programs.py --render --out F   # remake F.md and F.png from F.json

Step times are medians over the iterations after the first --skip (warm-up, tracing, compiling).
"""

import argparse
import json
import os
import subprocess
import sys

PROGRAMS = ["resnet50", "dcgan", "bert_cls", "bert_qa", "gpt2", "music_transformer",
            "dropblock", "sdpoint", "faster_rcnn", "yolov3"]
PEER_MODES = ["eager", "torchscript", "compile", "compile-ro"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_json_lines(cmd, env):
    """Runs cmd; returns its JSON lines (a failure to start or a crash becomes an error row)."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    except OSError as e:
        return [], f"could not run {cmd[0]}: {e}"
    rows = []
    for line in p.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    err = "" if p.returncode == 0 else f"exit code {p.returncode}: {p.stderr.strip()[-300:]}"
    return rows, err


def terra_rows(args, env):
    cmd = [args.programs, "--config", args.config, "--iters", str(args.iters), "--skip",
           str(args.skip)]
    if args.only:
        cmd += ["--only", args.only]
    rows, err = run_json_lines(cmd, env)
    if err:
        print(f"terra_programs: {err}", file=sys.stderr)
    return rows


def torch_major(python):
    try:
        out = subprocess.run([python, "-c", "import torch; print(torch.__version__)"],
                             capture_output=True, text=True, check=True).stdout.strip()
        return int(out.split(".")[0]), out
    except (OSError, subprocess.CalledProcessError, ValueError):
        return 0, ""


def peer_rows(args, env, programs):
    major, version = torch_major(args.python)
    if not major:
        print(f"{args.python}: no torch; skipping the PyTorch peers", file=sys.stderr)
        return []
    rows = []
    for name in programs:
        for mode in PEER_MODES:
            if mode.startswith("compile") and major < 2:
                rows.append({"program": name, "system": "pytorch", "mode": mode, "ok": False,
                             "error": f"torch.compile needs torch >= 2 (found {version})"})
                continue
            cmd = [args.python, os.path.join(ROOT, "bench", "peers", f"{name}.py"), "--mode", mode,
                   "--iters", str(args.iters), "--config", args.config]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            got, err = run_json_lines(cmd, env)
            row = got[-1] if got else {"program": name, "mode": mode, "ok": False, "error": err}
            row["system"] = "pytorch"
            row["torch_version"] = version
            rows.append(row)
            print(f"  pytorch {name} {mode}: {row.get('median_step_s')} {row.get('error', '')}",
                  file=sys.stderr)
    return rows


def fmt_ms(s):
    return "-" if s is None else f"{1e3 * s:.2f}"


def find(rows, program, system, mode):
    for r in rows:
        if r["program"] == program and r.get("system") == system and r["mode"] == mode:
            return r
    return None


def step(r):
    if not r or r.get("error") and r.get("median_step_s") is None:
        return None
    if r.get("system") == "pytorch" and not r.get("ok"):
        return None
    return r.get("median_step_s")


def markdown(rows, programs, config):
    lines = [f"Median step time in ms ({config} configuration); ratios are speed-ups "
             "(> 1: faster).", "",
             "| program | terra eager | terra co-exec | co-exec / eager | steady co-exec / eager "
             "| matches eager | co-executed / fallen back | replay baseline | PyTorch eager | "
             "TorchScript | compile | compile-ro | co-exec vs PyTorch eager |",
             "|---|---:|---:|---:|---:|---|---|---|---:|---:|---:|---:|---:|"]
    for p in programs:
        te, tc = find(rows, p, "terra", "eager"), find(rows, p, "terra", "coexec")
        pe = find(rows, p, "pytorch", "eager")
        se, sc, spe = step(te), step(tc), step(pe)
        match = "-" if not tc else ("yes" if tc.get("matches_eager") else
                                    f"NO: {tc.get('mismatch') or tc.get('error')}")
        stats = "-"
        if tc and "stats" in tc:
            stats = f"{tc['stats']['coexecuted']} / {tc['stats']['fallbacks']}"
        peers = []
        for m in PEER_MODES[1:]:
            r = find(rows, p, "pytorch", m)
            peers.append(fmt_ms(step(r)) if step(r) else "fails" if r and r.get("ok") is False
                         and "needs torch" not in r.get("error", "") else "-")
        rp = find(rows, p, "terra", "replay")
        if not rp:
            replay = "-"
        elif rp.get("error"):
            replay = "fails: " + rp["error"][:80]
        elif rp.get("matches_eager"):
            replay = f"{fmt_ms(step(rp))} (correct)"
        else:
            replay = f"{fmt_ms(step(rp))} WRONG: {rp.get('mismatch', '')[:60]}"
        ratio = f"{se / sc:.2f}x" if se and sc else "-"
        # Only the windows of 5 iterations that were all co-executed (no tracing, no fallback).
        steady, windows = (tc or {}).get("steady_median_step_s"), (tc or {}).get("steady_windows")
        steady_ratio = f"{se / steady:.2f}x ({windows} w)" if se and steady and windows else "-"
        vs_torch = f"{spe / sc:.2f}x" if spe and sc else "-"
        lines.append(f"| {p} | {fmt_ms(se)} | {fmt_ms(sc)} | {ratio} | {steady_ratio} | "
                     f"{match} | {stats} | "
                     f"{replay} | {fmt_ms(spe)} | " + " | ".join(peers) + f" | {vs_torch} |")
    notes = sorted({f"{r['program']} {r['mode']}: {r['error']}" for r in rows
                    if r.get("system") == "pytorch" and r.get("error")})
    if notes:
        lines += ["", "PyTorch notes:"] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def chart(rows, programs, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (Debian: python3-matplotlib); no chart", file=sys.stderr)
        return False
    systems = [("terra", "eager", "terra eager"), ("terra", "coexec", "terra co-executed"),
               ("pytorch", "torchscript", "TorchScript"), ("pytorch", "compile", "torch.compile"),
               ("pytorch", "compile-ro", "torch.compile reduce-overhead")]
    fig, ax = plt.subplots(figsize=(12, 4.5))
    width = 0.8 / len(systems)
    for k, (sys_, mode, label) in enumerate(systems):
        xs, ys = [], []
        for i, p in enumerate(programs):
            base, v = step(find(rows, p, "pytorch", "eager")), step(find(rows, p, sys_, mode))
            if base and v:
                xs.append(i + (k - len(systems) / 2 + 0.5) * width)
                ys.append(base / v)
        if xs:
            ax.bar(xs, ys, width, label=label)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(programs)))
    ax.set_xticklabels(programs, rotation=20)
    ax.set_ylabel("speed-up over PyTorch eager")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--programs", default=os.path.join(ROOT, "build", "release", "bench",
                                                       "terra_programs"))
    ap.add_argument("--config", choices=["tiny", "paper"], default="paper")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--skip", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS and torch threads")
    ap.add_argument("--only", default="")
    ap.add_argument("--out", default="programs")
    ap.add_argument("--python", default="/usr/bin/python3")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--render", action="store_true",
                    help="measure nothing: remake <out>.md and <out>.png from <out>.json")
    args = ap.parse_args()
    if args.render:
        with open(args.out + ".json") as f:
            saved = json.load(f)
        programs = [p for p in PROGRAMS if any(r["program"] == p for r in saved["rows"])]
        md = markdown(saved["rows"], programs, saved["config"])
        with open(args.out + ".md", "w") as f:
            f.write(md)
        print(md)
        if chart(saved["rows"], programs, args.out + ".png"):
            print(f"chart: {args.out}.png")
        return 0
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    programs = [p for p in PROGRAMS if not args.only or p in args.only.split(",")]
    rows = terra_rows(args, env)
    for r in rows:
        print(f"  terra {r['program']} {r['mode']}: {r.get('median_step_s')} "
              f"{r.get('mismatch', '')}{r.get('error', '')}", file=sys.stderr)
    if not args.no_peers:
        rows += peer_rows(args, env, programs)
    with open(args.out + ".json", "w") as f:
        json.dump({"config": args.config, "iters": args.iters, "skip": args.skip,
                   "threads": args.threads, "rows": rows}, f, indent=1)
    md = markdown(rows, programs, args.config)
    with open(args.out + ".md", "w") as f:
        f.write(md)
    print(md)
    if chart(rows, programs, args.out + ".png"):
        print(f"chart: {args.out}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
