"""PyTorch peer of paper program 7 (examples/programs/dropblock.hpp): a small ResNet (stem + 4
basic blocks) with DropBlock after stages 3 and 4; linear host schedule of the drop
probability from 0, a host draw (p = 0.8) to apply each DropBlock, block seeds sampled on the
host with NumPy every step."""
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common_b import BasicBlock, Program, Stem, main, make_images  # noqa: E402

CONFIGS = {
    "paper": dict(width=16, batch=16, max_drop=0.1),
    "tiny": dict(width=4, batch=4, max_drop=0.3),
}
CLASSES, IMAGE, BLOCK, APPLY_P = 10, 32, 3, 0.8


class DropBlock(nn.Module):
    def __init__(self, block_size, rng):
        super().__init__()
        self.bs, self.rng, self.drop_prob = block_size, rng, 0.0

    def forward(self, x):
        if not self.training or self.drop_prob == 0:
            return x
        if self.rng.random() >= APPLY_P:
            return x
        n, c, h, w = x.shape
        vh, vw, half = h - self.bs + 1, w - self.bs + 1, self.bs // 2
        gamma = self.drop_prob / self.bs ** 2 * (h * w) / (vh * vw)
        valid = n * c * vh * vw
        count = self.rng.binomial(valid, gamma)
        p = self.rng.integers(0, valid, size=count)
        seeds = np.zeros((n * c, h, w), dtype=np.float32)
        seeds[p // (vh * vw), p % (vh * vw) // vw + half, p % vw + half] = 1.0
        seeds = torch.from_numpy(seeds.reshape(n, c, h, w))
        mask = 1.0 - F.max_pool2d(seeds, self.bs, 1, self.bs // 2)
        return x * mask * (mask.numel() / mask.sum())


class Net(nn.Module):
    def __init__(self, w, rng):
        super().__init__()
        self.stem = Stem(w)
        self.b1, self.b2 = BasicBlock(w, w, 1), BasicBlock(w, 2 * w, 2)
        self.b3, self.b4 = BasicBlock(2 * w, 4 * w, 2), BasicBlock(4 * w, 8 * w, 2)
        self.drop3, self.drop4 = DropBlock(BLOCK, rng), DropBlock(BLOCK, rng)
        self.fc = nn.Linear(8 * w, CLASSES)

    def forward(self, x):
        h = self.drop3(self.b3(self.b2(self.b1(self.stem(x)))))
        h = self.drop4(self.b4(h))
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


def build(config):
    c = CONFIGS[config]
    rng = np.random.default_rng(7)
    model = Net(c["width"], rng)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    losses = []

    def step(net, i):
        p = c["max_drop"] * i / prog.total_iters  # linear schedule from 0
        model.drop3.drop_prob = model.drop4.drop_prob = p
        x, y = make_images(rng, c["batch"], IMAGE, CLASSES)
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i % 10 == 0:
            losses.append(loss.item())

    prog = Program(model, step, example=lambda: (torch.zeros(c["batch"], 3, IMAGE, IMAGE),))
    return prog


if __name__ == "__main__":
    main("dropblock", build)
