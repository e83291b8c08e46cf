"""PyTorch peer of examples/programs/bert_cls.hpp: BERT encoder + pooler + classifier; each
batch padded on the host to its longest sentence rounded up to a multiple of 8; logits fetched
and accuracy computed on the host every step."""

import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import common

CONFIGS = {
    "paper": dict(enc=common.bert_sizes(True), batch=16, classes=2, min_len=8, mean_extra=12,
                  lr=5e-4, weight_decay=0.01, print=True, seed=3),
    "tiny": dict(enc=dict(common.bert_sizes(False), vocab=50), batch=4, classes=2, min_len=4,
                 mean_extra=5, lr=5e-4, weight_decay=0.01, print=False, seed=3),
}


class Classifier(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["enc"]["d"]
        self.encoder = common.BertEncoder(c["enc"])
        self.pooler = nn.Linear(d, d)
        self.drop = nn.Dropout(c["enc"]["dropout"])
        self.head = nn.Linear(d, c["classes"])

    def forward(self, ids, segments):
        h = self.encoder(ids, segments)
        return self.head(self.drop(torch.tanh(self.pooler(h[:, 0]))))


def make_batch(c, rng):
    """Sentences of min_len + an exponential draw words; label: do lower-half words win?"""
    e = c["enc"]
    half = (e["vocab"] + common.FIRST_WORD) // 2
    sents, labels = [], []
    for _ in range(c["batch"]):
        n = min(c["min_len"] + int(rng.exponential(c["mean_extra"])), e["max_pos"] - 2)
        words = rng.integers(common.FIRST_WORD, e["vocab"], n)
        labels.append(int(2 * np.count_nonzero(words < half) > n))
        sents.append([common.CLS, *words.tolist(), common.SEP])
    length = min((max(len(s) for s in sents) + 7) // 8 * 8, e["max_pos"])
    ids = np.full((c["batch"], length), common.PAD, dtype=np.int64)
    for i, s in enumerate(sents):
        ids[i, :len(s)] = s
    ids = torch.from_numpy(ids)
    return ids, torch.zeros_like(ids), torch.tensor(labels), np.array(labels), length


def build(c, mode, notes):
    common.seed_everything(c["seed"])
    rng = np.random.default_rng(c["seed"])
    model = Classifier(c)
    opt = torch.optim.AdamW(model.parameters(), lr=c["lr"], weight_decay=c["weight_decay"])
    ids0, seg0, *_ = make_batch(c, rng)
    net = common.prepare(model, mode, (ids0, seg0), notes)
    seen = [0, 0]  # correct, total

    def step(i):
        ids, segments, labels, y, length = make_batch(c, rng)
        logits = net(ids, segments)
        loss = F.cross_entropy(logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        pred = logits.detach().numpy().argmax(axis=1)  # a fetch; accuracy on the host
        seen[0] += int(np.count_nonzero(pred == y))
        seen[1] += len(y)
        if c["print"] and i % 10 == 0:
            print(f"bert_cls {mode} step {i} length {length} loss {loss.item():.4f} accuracy "
                  f"{seen[0] / seen[1]:.3f}", file=sys.stderr)

    return step


if __name__ == "__main__":
    sys.exit(common.main("bert_cls", CONFIGS, build))
