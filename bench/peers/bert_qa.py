"""PyTorch peer of examples/programs/bert_qa.hpp: BERT encoder + start/end span head at a fixed
length; start/end logits fetched every step; the host searches the top-5 x top-5 candidates
with validity rules (inside the context, end >= start, at most 8 tokens) for exact match."""

import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import common

CONFIGS = {
    "paper": dict(enc=common.bert_sizes(True), length=64, batch=16, min_question=6,
                  max_question=16, max_answer=8, top_k=5, lr=5e-4, weight_decay=0.01,
                  print=True, seed=4),
    "tiny": dict(enc=dict(common.bert_sizes(False), vocab=60), length=24, batch=4,
                 min_question=3, max_question=5, max_answer=8, top_k=5, lr=5e-4,
                 weight_decay=0.01, print=False, seed=4),
}


class SpanModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.encoder = common.BertEncoder(c["enc"])
        self.span = nn.Linear(c["enc"]["d"], 2)

    def forward(self, ids, segments):
        s = self.span(self.encoder(ids, segments))
        return s[:, :, 0], s[:, :, 1]


def make_batch(c, rng):
    """[CLS] question [SEP] context [SEP] [PAD]...; the answer is 1 to max_answer words from
    the top 10% of the vocabulary, the rest of the context from the bottom 90%."""
    v, n = c["enc"]["vocab"], c["length"]
    marked = v - max((v - common.FIRST_WORD) // 10, 2)
    ids = np.full((c["batch"], n), common.PAD, dtype=np.int64)
    seg = np.zeros_like(ids)
    spans = []  # (context begin, context end, gold start, gold end)
    for i in range(c["batch"]):
        q = int(rng.integers(c["min_question"], c["max_question"] + 1))
        room = n - q - 3
        ctx = room // 2 + int(rng.integers(0, room // 2 + 1))
        ans = 1 + int(rng.integers(0, min(c["max_answer"], ctx)))
        begin = q + 2
        at = begin + int(rng.integers(0, ctx - ans + 1))
        ids[i, 0] = common.CLS
        ids[i, 1] = rng.integers(marked, v)
        ids[i, 2:q + 1] = rng.integers(common.FIRST_WORD, marked, q - 1)
        ids[i, q + 1] = common.SEP
        ids[i, begin:begin + ctx] = rng.integers(common.FIRST_WORD, marked, ctx)
        ids[i, at:at + ans] = rng.integers(marked, v, ans)
        ids[i, begin + ctx] = common.SEP
        seg[i, begin:begin + ctx] = 1
        spans.append((begin, begin + ctx, at, at + ans - 1))
    gold = torch.tensor([[s[2], s[3]] for s in spans])
    return torch.from_numpy(ids), torch.from_numpy(seg), gold[:, 0], gold[:, 1], spans


def top_k(v, k):
    """Indices of the k largest values, ties by lower index."""
    return sorted(range(len(v)), key=lambda i: (-v[i], i))[:k]


def best_span(s, e, span, c):
    begin, end = span[0], span[1]
    best, best_s, best_e = 0.0, -1, -1
    for si in top_k(s, c["top_k"]):
        for ei in top_k(e, c["top_k"]):
            valid = si >= begin and ei < end and ei >= si and ei - si + 1 <= c["max_answer"]
            if not valid or (best_s >= 0 and s[si] + e[ei] <= best):
                continue
            best, best_s, best_e = s[si] + e[ei], si, ei
    return best_s, best_e


def build(c, mode, notes):
    common.seed_everything(c["seed"])
    rng = np.random.default_rng(c["seed"])
    model = SpanModel(c)
    opt = torch.optim.AdamW(model.parameters(), lr=c["lr"], weight_decay=c["weight_decay"])
    ids0, seg0, *_ = make_batch(c, rng)
    net = common.prepare(model, mode, (ids0, seg0), notes)
    seen = [0, 0]  # exact matches, examples

    def step(i):
        ids, segments, start, end, spans = make_batch(c, rng)
        start_logits, end_logits = net(ids, segments)
        loss = (F.cross_entropy(start_logits, start) + F.cross_entropy(end_logits, end)) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        sl, el = start_logits.detach().tolist(), end_logits.detach().tolist()  # the fetch
        for k, span in enumerate(spans):
            seen[0] += best_span(sl[k], el[k], span, c) == (span[2], span[3])
        seen[1] += len(spans)
        if c["print"] and i % 10 == 0:
            print(f"bert_qa {mode} step {i} loss {loss.item():.4f} exact match "
                  f"{seen[0] / seen[1]:.3f}", file=sys.stderr)

    return step


if __name__ == "__main__":
    sys.exit(common.main("bert_qa", CONFIGS, build))
