"""PyTorch peer of paper program 6 (examples/programs/music_transformer.hpp): a Music
Transformer decoder with relative global attention (skewing trick), 2 pre-LN layers, a
sequence length drawn on the host from {32, 48, 64} for every batch."""
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common_b import Program, main  # noqa: E402

CONFIGS = {
    "paper": dict(vocab=388, d=128, heads=8, layers=2, d_ff=512, batch=8),
    "tiny": dict(vocab=48, d=32, heads=4, layers=2, d_ff=64, batch=2),
}
LENGTHS = [32, 48, 64]


class RelativeAttention(nn.Module):
    def __init__(self, d, heads, max_len):
        super().__init__()
        self.h, self.dh, self.max_len = heads, d // heads, max_len
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.e_rel = nn.Parameter(torch.randn(max_len, self.dh) / math.sqrt(self.dh))

    def forward(self, x):
        b, l, d = x.shape
        q, k, v = self.qkv(x).view(b, l, 3, self.h, self.dh).permute(2, 0, 3, 1, 4).unbind(0)
        e = self.e_rel[self.max_len - l:]
        qe = torch.matmul(q, e.t())  # [B, H, L, L], column = distance + L - 1
        # Skewing: pad a zero column in front, view as [L + 1, L], drop the first row.
        s_rel = F.pad(qe, (1, 0)).reshape(b, self.h, l + 1, l)[:, :, 1:, :]
        logits = (torch.matmul(q, k.transpose(-2, -1)) + s_rel) / math.sqrt(self.dh)
        mask = torch.ones(l, l, dtype=torch.bool, device=x.device).triu(1)
        logits = logits.masked_fill(mask, float("-inf"))
        y = torch.matmul(torch.softmax(logits, -1), v)
        return self.out(y.transpose(1, 2).reshape(b, l, d))


class DecoderLayer(nn.Module):
    def __init__(self, d, heads, d_ff, max_len):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = RelativeAttention(d, heads, max_len)
        self.ff1, self.ff2 = nn.Linear(d, d_ff), nn.Linear(d_ff, d)

    def forward(self, x):
        h = x + self.attn(self.ln1(x))
        return h + self.ff2(torch.relu(self.ff1(self.ln2(h))))


class MusicTransformer(nn.Module):
    def __init__(self, vocab, d, heads, layers, d_ff, max_len):
        super().__init__()
        self.scale = math.sqrt(d)
        self.embed = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList([DecoderLayer(d, heads, d_ff, max_len) for _ in range(layers)])
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)

    def forward(self, tokens):
        h = self.embed(tokens) * self.scale
        for layer in self.layers:
            h = layer(h)
        return self.head(self.ln(h))


def make_sequences(rng, b, l, vocab):
    """A random walk over the events with repeating motifs: [b, l + 1] int64."""
    tok = np.zeros((b, l + 1), dtype=np.int64)
    for i in range(b):
        period = int(rng.integers(4, 9))
        t = int(rng.integers(0, vocab))
        for j in range(l + 1):
            if j >= period and j % period != 0:
                tok[i, j] = tok[i, j - period]
            else:
                t = (t + int(rng.integers(-3, 4))) % vocab
                tok[i, j] = t
    return tok


def build(config):
    c = CONFIGS[config]
    model = MusicTransformer(c["vocab"], c["d"], c["heads"], c["layers"], c["d_ff"], max(LENGTHS))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(6)
    losses = []

    def step(net, i):
        l = int(rng.choice(LENGTHS))  # this batch's sequence length
        seq = torch.from_numpy(make_sequences(rng, c["batch"], l, c["vocab"]))
        logits = net(seq[:, :l])
        loss = F.cross_entropy(logits.reshape(-1, c["vocab"]), seq[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i % 10 == 0:
            losses.append(loss.item())

    return Program(model, step, example=lambda: (torch.zeros(c["batch"], 32, dtype=torch.long),))


if __name__ == "__main__":
    main("music_transformer", build)
