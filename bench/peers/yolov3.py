"""PyTorch peer of paper program 10 (examples/programs/yolov3.hpp): a tiny Darknet backbone
with YOLO heads at strides 16 and 8 (3 anchors each), 64x64 images, Adam. Targets are built
on the host (NumPy) every step: the best of the 6 anchors for each box picks the scale, the
anchor and the cell; the masks go back to select the elements of MSE + BCE."""
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common_b import Program, main, make_scene  # noqa: E402

CONFIGS = {"paper": dict(batch=8, width=16), "tiny": dict(batch=4, width=4)}
IMAGE, CLASSES, MAX_OBJECTS, IGNORE, NOOBJ_SCALE = 64, 3, 3, 0.5, 100.0
STRIDES = (16, 8)
ANCHORS = np.array([[[20, 20], [24, 40], [40, 24]], [[8, 8], [10, 16], [16, 10]]], dtype=np.float32)


class ConvUnit(nn.Module):
    def __init__(self, cin, cout, k):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.leaky_relu(self.bn(self.conv(x)), 0.1)


class Net(nn.Module):
    def __init__(self, w):
        super().__init__()
        out = 3 * (5 + CLASSES)
        self.c1, self.c2 = ConvUnit(3, w, 3), ConvUnit(w, 2 * w, 3)
        self.c3, self.c4 = ConvUnit(2 * w, 4 * w, 3), ConvUnit(4 * w, 8 * w, 3)
        self.c5, self.lat = ConvUnit(8 * w, 8 * w, 3), ConvUnit(8 * w, 2 * w, 1)
        self.c6 = ConvUnit(6 * w, 4 * w, 3)
        self.head16, self.head8 = nn.Conv2d(8 * w, out, 1), nn.Conv2d(4 * w, out, 1)

    def forward(self, x):
        r8 = F.max_pool2d(self.c3(F.max_pool2d(self.c2(F.max_pool2d(self.c1(x), 2)), 2)), 2)
        r16 = self.c5(F.max_pool2d(self.c4(r8), 2))
        up = F.interpolate(self.lat(r16), scale_factor=2.0, mode="nearest")
        return self.head16(r16), self.head8(self.c6(torch.cat([up, r8], 1)))


def wh_iou(w, h, aw, ah):
    inter = np.minimum(w, aw) * np.minimum(h, ah)
    return inter / (w * h + aw * ah - inter)


def build_targets(objects, n):
    t = []
    for s, stride in enumerate(STRIDES):
        g = IMAGE // stride
        t.append(dict(g=g, obj=np.zeros((n, 3, g, g), bool), noobj=np.ones((n, 3, g, g), bool),
                      tx=np.zeros((n, 3, g, g), np.float32), ty=np.zeros((n, 3, g, g), np.float32),
                      tw=np.zeros((n, 3, g, g), np.float32), th=np.zeros((n, 3, g, g), np.float32),
                      tcls=np.zeros((n, 3, g, g, CLASSES), np.float32)))
    for b, objs in enumerate(objects):
        for x1, y1, x2, y2, cls in objs:
            w, h = x2 - x1, y2 - y1
            cx, cy = x1 + w / 2, y1 + h / 2
            ious = wh_iou(w, h, ANCHORS[..., 0], ANCHORS[..., 1])  # [2, 3]
            s, a = np.unravel_index(int(np.argmax(ious)), ious.shape)
            st = t[s]
            gx, gy = cx / STRIDES[s], cy / STRIDES[s]
            gi, gj = min(int(gx), st["g"] - 1), min(int(gy), st["g"] - 1)
            st["noobj"][b, ious[s] > IGNORE, gj, gi] = False
            st["obj"][b, a, gj, gi], st["noobj"][b, a, gj, gi] = True, False
            st["tx"][b, a, gj, gi], st["ty"][b, a, gj, gi] = gx - gi, gy - gj
            st["tw"][b, a, gj, gi] = np.log(w / ANCHORS[s, a, 0])
            st["th"][b, a, gj, gi] = np.log(h / ANCHORS[s, a, 1])
            st["tcls"][b, a, gj, gi, int(cls)] = 1
    return t


def build(config):
    c = CONFIGS[config]
    model = Net(c["width"])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(10)
    n = c["batch"]
    losses = []

    def step(net, i):
        images, objects = make_scene(rng, n, IMAGE, CLASSES, MAX_OBJECTS)
        outs = net(images)
        targets = build_targets(objects, n)
        loss = torch.zeros(())
        for out, st in zip(outs, targets):
            g = st["g"]
            p = out.view(n, 3, 5 + CLASSES, g, g).permute(0, 1, 3, 4, 2)
            obj, noobj = torch.from_numpy(st["obj"]), torch.from_numpy(st["noobj"])
            conf = p[..., 4]
            empty = conf[noobj]
            loss = loss + NOOBJ_SCALE * F.binary_cross_entropy_with_logits(empty, torch.zeros_like(empty))
            if not st["obj"].any():
                continue
            tgt = lambda k: torch.from_numpy(st[k])[obj]  # noqa: E731
            loss = (loss + F.mse_loss(torch.sigmoid(p[..., 0])[obj], tgt("tx")) +
                    F.mse_loss(torch.sigmoid(p[..., 1])[obj], tgt("ty")) +
                    F.mse_loss(p[..., 2][obj], tgt("tw")) + F.mse_loss(p[..., 3][obj], tgt("th")) +
                    F.binary_cross_entropy_with_logits(conf[obj], obj[obj].float()) +
                    F.binary_cross_entropy_with_logits(p[..., 5:][obj], tgt("tcls")))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i % 10 == 0:
            losses.append(loss.item())

    return Program(model, step, example=lambda: (torch.zeros(n, 3, IMAGE, IMAGE),))


if __name__ == "__main__":
    main("yolov3", build)
