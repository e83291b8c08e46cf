"""Shared helpers of the PyTorch peers of the paper programs (bench/peers/<name>.py).

Each peer is the same training program as examples/programs/<name>.hpp, written the way a
PyTorch user writes it. A peer defines its sizes (CONFIGS["tiny"|"paper"]) and a
``build(cfg, mode)`` that returns ``step(i)``, one training iteration; ``main`` times the steps
and prints one JSON line:

    {"program", "mode", "median_step_s", "steps", "ok", "error"}

Modes: ``eager``; ``torchscript`` (torch.jit.script, else torch.jit.trace, with the reason in
"error"); and, where torch >= 2, ``compile`` and ``compile-ro`` (torch.compile default and
mode="reduce-overhead").
"""

import argparse
import json
import random
import statistics
import sys
import time
import traceback

import numpy as np
import torch

MODES = ("eager", "torchscript", "compile", "compile-ro")


def torch_major():
    return int(torch.__version__.split(".")[0])


def parse_args(program, argv=None):
    p = argparse.ArgumentParser(description=f"PyTorch peer of the terra program {program}")
    p.add_argument("--mode", choices=MODES, default="eager")
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--config", choices=("tiny", "paper"), default="tiny")
    p.add_argument("--warmup", type=int, default=3,
                   help="iterations left out of the median (first-call costs, compilation)")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: default)")
    return p.parse_args(argv)


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Notes:
    """What happened while preparing the model: a fallback from script to trace, say."""

    def __init__(self):
        self.messages = []

    def add(self, msg):
        self.messages.append(msg)

    def text(self):
        return "; ".join(self.messages)


def first_line(exc):
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


def prepare(module, mode, example_inputs, notes):
    """The module as `mode` runs it. example_inputs: a tuple for torch.jit.trace."""
    if mode == "eager":
        return module
    if mode == "torchscript":
        try:
            return torch.jit.script(module)
        except Exception as e:  # noqa: BLE001 - any scripting failure is reported
            notes.add(f"torch.jit.script failed ({first_line(e)}); used torch.jit.trace")
        return torch.jit.trace(module, example_inputs, check_trace=False)
    if torch_major() < 2:
        raise RuntimeError(f"mode {mode} needs torch >= 2 (found {torch.__version__})")
    if mode == "compile":
        return torch.compile(module)
    return torch.compile(module, mode="reduce-overhead")


def main(program, configs, build, argv=None):
    """Runs `build(cfg, mode, notes)`'s step function and prints the JSON line."""
    args = parse_args(program, argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    result = {"program": program, "mode": args.mode, "median_step_s": None, "steps": 0,
              "ok": False, "error": ""}
    notes = Notes()
    try:
        step = build(dict(configs[args.config]), args.mode, notes)
        times = []
        for i in range(args.iters):
            t0 = time.perf_counter()
            step(i)
            times.append(time.perf_counter() - t0)
            result["steps"] = i + 1
        kept = times[args.warmup:] if len(times) > args.warmup else times
        result["median_step_s"] = statistics.median(kept) if kept else None
        result["ok"] = True
    except Exception as e:  # noqa: BLE001 - the runner reads failures from the JSON
        notes.add(first_line(e))
        traceback.print_exc(file=sys.stderr)
    result["error"] = notes.text()
    print(json.dumps(result))
    return 0 if result["ok"] else 1


# ---- the BERT encoder shared by bert_cls.py and bert_qa.py (examples/programs/bert.hpp) ----
PAD, CLS, SEP, FIRST_WORD = 0, 1, 2, 3


class BertLayer(torch.nn.Module):
    """Post-LN: self-attention with a key-padding mask, then a GELU feed-forward."""

    def __init__(self, e):
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(e["d"], e["heads"], dropout=e["dropout"],
                                                batch_first=True)
        self.ln1 = torch.nn.LayerNorm(e["d"], eps=1e-12)
        self.fc1 = torch.nn.Linear(e["d"], e["ffn"])
        self.fc2 = torch.nn.Linear(e["ffn"], e["d"])
        self.ln2 = torch.nn.LayerNorm(e["d"], eps=1e-12)
        self.drop = torch.nn.Dropout(e["dropout"])

    def forward(self, x, pad):
        a = self.attn(x, x, x, key_padding_mask=pad, need_weights=False)[0]
        h = self.ln1(x + self.drop(a))
        return self.ln2(h + self.drop(self.fc2(torch.nn.functional.gelu(self.fc1(h)))))


class BertEncoder(torch.nn.Module):
    def __init__(self, e):
        super().__init__()
        self.tok = torch.nn.Embedding(e["vocab"], e["d"])
        self.pos = torch.nn.Embedding(e["max_pos"], e["d"])
        self.seg = torch.nn.Embedding(2, e["d"])
        self.ln = torch.nn.LayerNorm(e["d"], eps=1e-12)
        self.drop = torch.nn.Dropout(e["dropout"])
        self.layers = torch.nn.ModuleList([BertLayer(e) for _ in range(e["layers"])])
        self.pad_id = PAD
        for emb in (self.tok, self.pos, self.seg):
            torch.nn.init.normal_(emb.weight, 0, 0.02)

    def forward(self, ids, segments):
        positions = torch.arange(ids.size(1), device=ids.device)
        h = self.drop(self.ln(self.tok(ids) + self.pos(positions) + self.seg(segments)))
        pad = ids == self.pad_id
        for layer in self.layers:
            h = layer(h, pad)
        return h


def bert_sizes(paper):
    """The encoder sizes of the paper and tiny configurations."""
    if paper:
        return dict(vocab=1000, max_pos=128, d=128, heads=4, ffn=512, layers=2, dropout=0.1)
    return dict(vocab=50, max_pos=24, d=32, heads=2, ffn=64, layers=1, dropout=0.1)
