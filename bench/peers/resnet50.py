"""PyTorch peer of examples/programs/resnet50.hpp: ResNet-50 layout at 1/8 width, CIFAR stem,
SGD with momentum, host-drawn batches, loss fetched and printed every 10 steps."""

import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import common

CONFIGS = {
    "paper": dict(width=8, blocks=[3, 4, 6, 3], image=32, batch=8, classes=10, lr=0.05,
                  momentum=0.9, weight_decay=5e-4, print=True, seed=1),
    "tiny": dict(width=4, blocks=[1, 1, 1, 1], image=16, batch=4, classes=10, lr=0.05,
                 momentum=0.9, weight_decay=5e-4, print=False, seed=1),
}


class Bottleneck(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        out = planes * 4
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != out:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out))

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        return F.relu(h + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, c):
        super().__init__()
        w = c["width"]
        self.stem = nn.Conv2d(3, w, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(w)
        layers, cin = [], w
        for s, n in enumerate(c["blocks"]):
            planes = w << s
            for b in range(n):
                layers.append(Bottleneck(cin, planes, 2 if b == 0 and s > 0 else 1))
                cin = planes * 4
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, c["classes"])

    def forward(self, x):
        h = self.layers(F.relu(self.stem_bn(self.stem(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))


class Data:
    """A fixed smooth pattern per class; an image is its class's pattern plus noise."""

    def __init__(self, c, rng):
        self.c, self.rng = c, rng
        n, k = c["image"], c["classes"]
        fy = 0.5 + 0.2 * rng.standard_normal(k)
        fx = 0.5 + 0.2 * rng.standard_normal(k)
        ph = rng.standard_normal(k)
        y, x = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        ch = np.arange(1, 4).reshape(3, 1, 1)
        self.templates = np.stack([np.sin(fy[i] * y + fx[i] * x + ph[i] * ch)
                                   for i in range(k)]).astype(np.float32)

    def batch(self):
        c = self.c
        y = self.rng.integers(0, c["classes"], c["batch"])
        noise = self.rng.normal(0, 0.5, (c["batch"], 3, c["image"], c["image"]))
        x = self.templates[y] + noise.astype(np.float32)
        return torch.from_numpy(x), torch.from_numpy(y)


def build(c, mode, notes):
    common.seed_everything(c["seed"])
    rng = np.random.default_rng(c["seed"])
    model = ResNet(c)
    data = Data(c, rng)
    opt = torch.optim.SGD(model.parameters(), lr=c["lr"], momentum=c["momentum"],
                          weight_decay=c["weight_decay"])
    x0, _ = data.batch()
    net = common.prepare(model, mode, (x0,), notes)

    def step(i):
        x, y = data.batch()
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i % 10 == 0:
            v = loss.item()
            if c["print"]:
                print(f"resnet50 {mode} step {i} loss {v:.4f}", file=sys.stderr)

    return step


if __name__ == "__main__":
    sys.exit(common.main("resnet50", CONFIGS, build))
