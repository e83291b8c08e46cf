"""Shared driver of the PyTorch peers of paper programs 6-10 (bench/peers/<name>.py).

Each peer module defines `build(config) -> Program` and calls `main(name, build)`. A Program
holds the nn.Module whose forward is the part a graph converter can capture (`model`), an
`example()` returning inputs for torch.jit.trace, and `step(model, i)`, one training
iteration written as a PyTorch user writes it (host RNG, branches, NumPy calls) that calls
`model` (the eager module, or its scripted / traced / compiled form).

main() hands the program to common.main, which times it and prints the JSON line.
"""
import math as _math

import numpy as _np
import torch
import torch.nn as _nn

import common


class Program:
    def __init__(self, model, step, example=None):
        self.model = model
        self.step = step
        self.example = example
        self.total_iters = 50  # set by main() to --iters (host schedules read it)


def main(name, build):
    """Runs `build(config_name)`'s Program through common.main (the shared timing loop, mode
    preparation and JSON line of every peer)."""
    args = common.parse_args(name)

    def make_step(cfg, mode, notes):
        torch.manual_seed(0)
        prog = build(cfg["name"])
        prog.total_iters = args.iters
        example = prog.example() if mode == "torchscript" and prog.example else ()
        model = common.prepare(prog.model, mode, example, notes)
        return lambda i: prog.step(model, i)

    return common.main(name, {c: {"name": c} for c in ("tiny", "paper")}, make_step)


# ---- the small ResNet of dropblock and sdpoint (examples/programs/small_resnet.hpp) ----


def conv_bn(cin, cout, k, stride=1):
    return _nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)


class BasicBlock(_nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1, self.bn1 = conv_bn(cin, cout, 3, stride), _nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = conv_bn(cout, cout, 3), _nn.BatchNorm2d(cout)
        self.proj = _nn.Sequential()
        if stride != 1 or cin != cout:
            self.proj = _nn.Sequential(conv_bn(cin, cout, 1, stride), _nn.BatchNorm2d(cout))

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.proj(x))


class Stem(_nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv, self.bn = conv_bn(3, c, 3), _nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


def make_images(rng, n, size, classes):
    """[n, 3, size, size] stripe images whose frequency/orientation encode the label."""
    ys = rng.integers(0, classes, size=n)
    r, q = _np.meshgrid(_np.arange(size), _np.arange(size), indexing="ij")
    px = _np.empty((n, 3, size, size), dtype=_np.float32)
    for i, y in enumerate(ys):
        freq, angle, ph = 0.2 + 0.15 * (y % 5), 0.6 * y, rng.uniform(0, 2 * _math.pi)
        base = freq * (_math.cos(angle) * q + _math.sin(angle) * r) + ph
        for c in range(3):
            px[i, c] = _np.sin(base + c)
    px += rng.normal(0, 0.5, size=px.shape).astype(_np.float32)
    return torch.from_numpy(px), torch.from_numpy(ys.astype(_np.int64))


# ---- host box code of faster_rcnn and yolov3 (examples/programs/boxes.hpp), NumPy ----
def iou_matrix(a, b):
    """IoU of every box of a [n, 4] with every box of b [m, 4] (x1, y1, x2, y2) -> [n, m]."""
    iw = _np.minimum(a[:, None, 2], b[None, :, 2]) - _np.maximum(a[:, None, 0], b[None, :, 0])
    ih = _np.minimum(a[:, None, 3], b[None, :, 3]) - _np.maximum(a[:, None, 1], b[None, :, 1])
    inter = _np.clip(iw, 0, None) * _np.clip(ih, 0, None)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def encode(src, dst):
    """Regression targets [n, 4] moving boxes src onto dst."""
    sw, sh = src[:, 2] - src[:, 0], src[:, 3] - src[:, 1]
    dw, dh = dst[:, 2] - dst[:, 0], dst[:, 3] - dst[:, 1]
    return _np.stack([(dst[:, 0] + 0.5 * dw - src[:, 0] - 0.5 * sw) / sw,
                      (dst[:, 1] + 0.5 * dh - src[:, 1] - 0.5 * sh) / sh,
                      _np.log(dw / sw), _np.log(dh / sh)], 1).astype(_np.float32)


def decode(boxes, d, size):
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cx, cy = boxes[:, 0] + 0.5 * w + d[:, 0] * w, boxes[:, 1] + 0.5 * h + d[:, 1] * h
    m = _math.log(1000.0 / 16)
    nw, nh = w * _np.exp(_np.minimum(d[:, 2], m)), h * _np.exp(_np.minimum(d[:, 3], m))
    out = _np.stack([cx - 0.5 * nw, cy - 0.5 * nh, cx + 0.5 * nw, cy + 0.5 * nh], 1)
    return _np.clip(out, 0, size)


def nms(boxes, scores, top, thresh):
    order = _np.argsort(-scores, kind="stable")[:top]
    keep = []
    for i in order:
        b = boxes[i]
        if b[2] - b[0] < 1 or b[3] - b[1] < 1:
            continue
        if keep and iou_matrix(b[None], boxes[keep]).max() > thresh:
            continue
        keep.append(int(i))
    return keep


def make_scene(rng, n, size, classes, max_objects):
    """Images [n, 3, size, size] of 1..max_objects coloured rectangles on noise, and per image
    an array of objects [k, 5] (x1, y1, x2, y2, class)."""
    px = rng.normal(0, 0.2, size=(n, 3, size, size)).astype(_np.float32)
    objects = []
    for i in range(n):
        k = int(rng.integers(1, max_objects + 1))
        objs = _np.zeros((k, 5), dtype=_np.float32)
        for j in range(k):
            w, h = rng.uniform(0.15 * size, 0.5 * size, size=2)
            x, y = rng.uniform(0, 1, size=2) * (size - _np.array([w, h]))
            cls = int(rng.integers(0, classes))
            objs[j] = (x, y, x + w, y + h, cls)
            for c in range(3):
                colour = 1.5 if (cls + c) % 3 == 0 else -0.5 + 0.5 * (cls % 2)
                r0, r1, q0, q1 = int(y), int(y + h), int(x), int(x + w)
                px[i, c, r0:r1, q0:q1] = colour + rng.normal(0, 0.2, size=(r1 - r0, q1 - q0))
        objects.append(objs)
    return torch.from_numpy(px), objects


def smooth_l1(d, beta):
    a = d.abs()
    return torch.where(a < beta, 0.5 * d * d / beta, a - 0.5 * beta)
