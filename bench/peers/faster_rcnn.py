"""PyTorch peer of paper program 9 (examples/programs/faster_rcnn.hpp): a stride-8 conv
backbone, an RPN head (9 anchors per cell) and a 2-FC ROI head on 64x64 images. Every step the
host (NumPy) makes the anchors, labels and samples them by IoU, fetches and decodes the RPN
outputs, keeps the top 150 and runs NMS, labels and samples the ROIs, and builds the indices
that gather the ROI features."""
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common_b import Program, decode, encode, iou_matrix, main, make_scene, nms, smooth_l1  # noqa: E402

CONFIGS = {
    "paper": dict(batch=4, width=64, hidden=256, rpn_samples=64, roi_samples=32),
    "tiny": dict(batch=2, width=16, hidden=32, rpn_samples=32, roi_samples=16),
}
IMAGE, CLASSES, STRIDE, A, POOL, MAX_OBJECTS, TOP = 64, 3, 8, 9, 4, 3, 150


class Detector(nn.Module):
    """forward(images) -> (features, objectness [N, g*g*A], deltas [N, g*g*A, 4])."""

    def __init__(self, w, hidden):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, w // 4, 3, 2, 1), nn.ReLU(),
                                      nn.Conv2d(w // 4, w // 2, 3, 2, 1), nn.ReLU(),
                                      nn.Conv2d(w // 2, w, 3, 2, 1), nn.ReLU())
        self.rpn_conv = nn.Conv2d(w, w, 3, 1, 1)
        self.rpn_cls = nn.Conv2d(w, A, 1)
        self.rpn_reg = nn.Conv2d(w, 4 * A, 1)
        self.fc1, self.fc2 = nn.Linear(POOL * POOL * w, hidden), nn.Linear(hidden, hidden)
        self.cls, self.reg = nn.Linear(hidden, CLASSES + 1), nn.Linear(hidden, 4)
        self.anchors = A

    def forward(self, x):
        feat = self.backbone(x)
        n, _, g, _ = feat.shape
        h = torch.relu(self.rpn_conv(feat))
        a = self.anchors
        obj = self.rpn_cls(h).permute(0, 2, 3, 1).reshape(n, g * g * a)
        deltas = self.rpn_reg(h).view(n, a, 4, g, g).permute(0, 3, 4, 1, 2).reshape(n, g * g * a, 4)
        return feat, obj, deltas


def make_anchors(g):
    out = []
    for y in range(g):
        for x in range(g):
            for size in (8.0, 16.0, 32.0):
                for ratio in (0.5, 1.0, 2.0):
                    cx, cy = (x + 0.5) * STRIDE, (y + 0.5) * STRIDE
                    w, h = size / np.sqrt(ratio), size * np.sqrt(ratio)
                    out.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    return np.array(out, dtype=np.float32)


def sample(rng, cand, objs, fg, bg, rpn, n, fg_frac):
    """(indices, labels, deltas, weights) of up to n sampled rows of cand."""
    iou = iou_matrix(cand, objs[:, :4])
    best, which = iou.max(1), iou.argmax(1)
    pos, neg = np.flatnonzero(best >= fg), np.flatnonzero(best < bg)
    if rpn:  # each object's best anchor is positive
        arg = iou.argmax(0)
        pos = np.union1d(pos, arg)
        neg = np.setdiff1d(neg, arg)
    pos = rng.permutation(pos)[: int(n * fg_frac)]
    neg = rng.permutation(neg)[: n - len(pos)]
    idx = np.concatenate([pos, neg]).astype(np.int64)
    labels = np.zeros(len(idx), dtype=np.int64)
    labels[: len(pos)] = 1 if rpn else objs[which[pos], 4].astype(np.int64) + 1
    deltas = np.zeros((len(idx), 4), dtype=np.float32)
    deltas[: len(pos)] = encode(cand[pos], objs[which[pos], :4])
    weights = np.zeros((len(idx), 1), dtype=np.float32)
    weights[: len(pos)] = 1
    return idx, labels, deltas, weights


def roi_rows(rois, img, g):
    """Rows of the [N*g*g, C] feature matrix at a POOL x POOL grid inside each ROI."""
    t = (np.arange(POOL) + 0.5) / POOL
    ys = rois[:, 1:2] + t[None] * (rois[:, 3:4] - rois[:, 1:2])
    xs = rois[:, 0:1] + t[None] * (rois[:, 2:3] - rois[:, 0:1])
    cy = np.clip((ys / STRIDE).astype(np.int64), 0, g - 1)
    cx = np.clip((xs / STRIDE).astype(np.int64), 0, g - 1)
    return ((img * g + cy[:, :, None]) * g + cx[:, None, :]).reshape(-1)


def build(config):
    c = CONFIGS[config]
    model = Detector(c["width"], c["hidden"])
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    rng = np.random.default_rng(9)
    b, g = c["batch"], IMAGE // STRIDE
    na = g * g * A
    losses = []

    def step(net, i):
        images, objs = make_scene(rng, b, IMAGE, CLASSES, MAX_OBJECTS)
        anchors = make_anchors(g)
        feat, obj, deltas = net(images)
        parts = [sample(rng, anchors, objs[k], 0.7, 0.3, True, c["rpn_samples"], 0.5) for k in range(b)]
        ridx = torch.from_numpy(np.concatenate([p[0] + k * na for k, p in enumerate(parts)]))
        rlab = torch.from_numpy(np.concatenate([p[1] for p in parts]).astype(np.float32))
        rdel = torch.from_numpy(np.concatenate([p[2] for p in parts]))
        rw = torch.from_numpy(np.concatenate([p[3] for p in parts]))
        rpn_cls = F.binary_cross_entropy_with_logits(obj.reshape(-1)[ridx], rlab)
        rpn_reg = (smooth_l1(deltas.reshape(-1, 4)[ridx] - rdel, 1 / 9) * rw).sum() / len(ridx)

        score = torch.sigmoid(obj.detach()).numpy()  # fetch and decode on the host
        dnp = deltas.detach().numpy()
        qidx, qlab, qdel, qw, rows = [], [], [], [], []
        for k in range(b):
            prop = decode(anchors, dnp[k], IMAGE)
            keep = nms(prop, score[k], TOP, 0.7)
            rois = np.concatenate([prop[keep], objs[k][:, :4]])  # ground truth joins
            idx, lab, dl, w = sample(rng, rois, objs[k], 0.5, 0.5, False, c["roi_samples"], 0.25)
            qlab.append(lab), qdel.append(dl), qw.append(w)
            rows.append(roi_rows(rois[idx], k, g))
        nq = sum(len(x) for x in qlab)
        flat = feat.permute(0, 2, 3, 1).reshape(b * g * g, -1)
        pooled = flat[torch.from_numpy(np.concatenate(rows))].view(nq, -1)
        z = torch.relu(net.fc2(torch.relu(net.fc1(pooled))))
        roi_cls = F.cross_entropy(net.cls(z), torch.from_numpy(np.concatenate(qlab)))
        roi_reg = (smooth_l1(net.reg(z) - torch.from_numpy(np.concatenate(qdel)), 1.0) *
                   torch.from_numpy(np.concatenate(qw))).sum() / nq
        loss = rpn_cls + rpn_reg + roi_cls + roi_reg
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i % 10 == 0:
            losses.append(loss.item())

    return Program(model, step, example=lambda: (torch.zeros(b, 3, IMAGE, IMAGE),))


if __name__ == "__main__":
    main("faster_rcnn", build)
