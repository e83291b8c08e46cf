"""PyTorch peer of paper program 8 (examples/programs/sdpoint.hpp): a small ResNet (stem + 8
basic blocks) with stochastic downsampling; every iteration the host picks the point (none,
after the stem, after any block) and the ratio (0.5 or 0.75) and pools to round(size * ratio)."""
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common_b import BasicBlock, Program, Stem, main, make_images  # noqa: E402

CONFIGS = {"paper": dict(width=16, batch=16), "tiny": dict(width=4, batch=4)}
CLASSES, IMAGE, RATIOS = 10, 32, [0.5, 0.75]


class Net(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.stem = Stem(w)
        widths = [w, w, 2 * w, 2 * w, 4 * w, 4 * w, 8 * w, 8 * w]
        ins = [w] + widths[:-1]
        self.blocks = nn.ModuleList([BasicBlock(ins[i], widths[i], 2 if i > 0 and i % 2 == 0 else 1)
                                     for i in range(8)])
        self.fc = nn.Linear(8 * w, CLASSES)

    def downsample(self, h, ratio: float):
        oh = max(int(round(h.shape[2] * ratio)), 1)
        ow = max(int(round(h.shape[3] * ratio)), 1)
        return F.adaptive_avg_pool2d(h, [oh, ow])

    def forward(self, x, point: int, ratio: float):
        h = self.stem(x)
        if point == 0:
            h = self.downsample(h, ratio)
        i = 0
        for block in self.blocks:
            h = block(h)
            i += 1
            if point == i:
                h = self.downsample(h, ratio)
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


def build(config):
    c = CONFIGS[config]
    model = Net(c["width"])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(8)
    losses = []

    def step(net, i):
        point = int(rng.integers(-1, 9))
        ratio = RATIOS[int(rng.integers(0, len(RATIOS)))]
        x, y = make_images(rng, c["batch"], IMAGE, CLASSES)
        loss = F.cross_entropy(net(x, point, ratio), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i % 10 == 0:
            losses.append(loss.item())

    return Program(model, step,
                   example=lambda: (torch.zeros(c["batch"], 3, IMAGE, IMAGE), -1, 0.5))


if __name__ == "__main__":
    main("sdpoint", build)
