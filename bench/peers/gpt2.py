"""PyTorch peer of examples/programs/gpt2.hpp: GPT-2 style decoder (pre-LN, causal attention,
tied embeddings), AdamW + clip_grad_norm_ + a warm-up/cosine learning rate set from the host
every step; every gen_every steps, eval-mode generation with host top-k sampling until the end
token or gen_max tokens."""

import math
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import common

BASE = dict(ctx=32, d=128, heads=4, layers=2, batch=8, dropout=0.1, lr=3e-3, min_lr=3e-4,
            weight_decay=0.1, clip=1.0, warmup=10, schedule_steps=500, gen_every=20,
            gen_max=16, top_k=5, temperature=1.0, print=True, seed=5)
CONFIGS = {
    "paper": BASE,
    "tiny": dict(BASE, ctx=16, d=32, heads=2, layers=1, batch=4, schedule_steps=50, warmup=5,
                 print=False),
}

END, VOCAB = 0, 28  # 0 = end of sentence, 1 = space, 2..27 = 'a'..'z'
WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "to", "tree", "and", "then",
         "slept"]


def token(ch):
    return 1 if ch == " " else 2 + ord(ch) - ord("a")


def letter(t):
    return "." if t == END else " " if t == 1 else chr(ord("a") + t - 2)


def corpus(n, rng):
    out = []
    while len(out) < n:
        words = [WORDS[k] for k in rng.integers(0, len(WORDS), int(rng.integers(2, 7)))]
        out.extend(token(ch) for ch in " ".join(words))
        out.append(END)
    return np.array(out[:n], dtype=np.int64)


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.ln1 = nn.LayerNorm(c["d"])
        self.attn = nn.MultiheadAttention(c["d"], c["heads"], dropout=c["dropout"],
                                          batch_first=True)
        self.ln2 = nn.LayerNorm(c["d"])
        self.fc = nn.Linear(c["d"], 4 * c["d"])
        self.proj = nn.Linear(4 * c["d"], c["d"])
        self.drop = nn.Dropout(c["dropout"])

    def forward(self, x):
        t = x.size(1)
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        h = self.ln1(x)
        y = x + self.drop(self.attn(h, h, h, attn_mask=mask, need_weights=False)[0])
        return y + self.drop(self.proj(F.gelu(self.fc(self.ln2(y)), approximate="tanh")))


class Gpt2(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.wte = nn.Embedding(VOCAB, c["d"])
        self.wpe = nn.Embedding(c["ctx"], c["d"])
        self.drop = nn.Dropout(c["dropout"])
        self.blocks = nn.Sequential(*[Block(c) for _ in range(c["layers"])])
        self.ln_f = nn.LayerNorm(c["d"])
        nn.init.normal_(self.wte.weight, 0, 0.02)
        nn.init.normal_(self.wpe.weight, 0, 0.02)

    def forward(self, ids):
        positions = torch.arange(ids.size(1), device=ids.device)
        h = self.blocks(self.drop(self.wte(ids) + self.wpe(positions)))
        return F.linear(self.ln_f(h), self.wte.weight)  # tied output layer


def learning_rate(c, step):
    if step < c["warmup"]:
        return c["lr"] * (step + 1) / c["warmup"]
    p = min(1.0, (step - c["warmup"]) / (c["schedule_steps"] - c["warmup"]))
    return c["min_lr"] + 0.5 * (c["lr"] - c["min_lr"]) * (1 + math.cos(math.pi * p))


def sample_top_k(logits, c, rng):
    top = sorted(range(len(logits)), key=lambda i: (-logits[i], i))[:c["top_k"]]
    w = np.exp((np.array([logits[i] for i in top]) - logits[top[0]]) / c["temperature"])
    return top[int(rng.choice(len(top), p=w / w.sum()))]


@torch.no_grad()
def generate(model, net, c, rng):
    model.eval()
    net.eval()
    ids = [token(ch) for ch in WORDS[int(rng.integers(0, len(WORDS)))]]
    out = []
    while len(out) < c["gen_max"]:
        window = ids[-c["ctx"]:]
        logits = net(torch.tensor([window]))
        nxt = sample_top_k(logits[0, -1].tolist(), c, rng)  # the fetch, every token
        out.append(nxt)
        if nxt == END:
            break
        ids.append(nxt)
    model.train()
    net.train()
    return out


def build(c, mode, notes):
    common.seed_everything(c["seed"])
    rng = np.random.default_rng(c["seed"])
    text = corpus(20000, rng)
    model = Gpt2(c)
    opt = torch.optim.AdamW(model.parameters(), lr=c["lr"], weight_decay=c["weight_decay"])
    b, t = c["batch"], c["ctx"]
    net = common.prepare(model, mode, (torch.from_numpy(text[:b * t].reshape(b, t)),), notes)

    def step(i):
        at = rng.integers(0, len(text) - t - 1, b)
        x = torch.from_numpy(np.stack([text[a:a + t] for a in at]))
        y = torch.from_numpy(np.stack([text[a + 1:a + t + 1] for a in at]))
        lr = learning_rate(c, i)
        for group in opt.param_groups:
            group["lr"] = lr
        logits = net(x)
        loss = F.cross_entropy(logits.view(b * t, VOCAB), y.view(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), c["clip"])
        opt.step()
        if i % 10 == 0:
            v = loss.item()
            if c["print"]:
                print(f"gpt2 {mode} step {i} lr {lr:.2e} loss {v:.4f}", file=sys.stderr)
        if i % c["gen_every"] == 0:
            gen = generate(model, net, c, rng)
            if c["print"]:
                print(f"gpt2 {mode} step {i} sample: \"{''.join(map(letter, gen))}\"",
                      file=sys.stderr)

    return step


if __name__ == "__main__":
    sys.exit(common.main("gpt2", CONFIGS, build))
