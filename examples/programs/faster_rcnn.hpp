// examples/programs/faster_rcnn.hpp: paper program 9, Faster R-CNN (Ren et al. 2015) scaled
// down: a stride-8 conv backbone, an RPN head with 9 anchors per cell and a 2-FC ROI head on
// 64x64 images, batch 4. Every step the host generates the anchors, labels and samples them by
// IoU, fetches and decodes the RPN outputs, keeps the top 150 and runs NMS (the survivor count
// depends on the values), labels and samples the ROIs, and gathers the ROI features with
// indices it builds itself.
#pragma once

#include <array>
#include <random>
#include <vector>

#include "examples/programs/boxes.hpp"

namespace programs {

struct FasterRcnnConfig {
  int64_t image = 64, batch = 4, classes = 3, width = 64, hidden = 256;
  int64_t rpn_samples = 64, roi_samples = 32, pool = 4;  // per image; pool x pool ROI grid
  int max_objects = 3, pre_nms_top = 150;
  double lr = 0.01;
  uint64_t seed = 9;
  static FasterRcnnConfig paper() { return {}; }
  static FasterRcnnConfig tiny() {
    FasterRcnnConfig c;
    c.batch = 2, c.width = 16, c.hidden = 32, c.rpn_samples = 32, c.roi_samples = 16;
    return c;
  }
};

namespace rcnn {

constexpr int64_t kStride = 8, kAnchors = 9;

class DetectorImpl : public nn::Module {
 public:
  explicit DetectorImpl(const FasterRcnnConfig& c) : nn::Module("FasterRcnn") {
    int64_t w = c.width;
    auto conv = [](int64_t in, int64_t out, int64_t k, int64_t s) {
      return nn::Conv2d(in, out, k, nn::Conv2dOptions{.stride = s, .padding = k / 2});
    };
    backbone = register_module(
        "backbone", nn::Sequential(conv(3, w / 4, 3, 2), nn::ReLU(), conv(w / 4, w / 2, 3, 2),
                                   nn::ReLU(), conv(w / 2, w, 3, 2), nn::ReLU()));
    rpn_conv = register_module("rpn_conv", conv(w, w, 3, 1));
    rpn_cls = register_module("rpn_cls", conv(w, kAnchors, 1, 1));
    rpn_reg = register_module("rpn_reg", conv(w, 4 * kAnchors, 1, 1));
    fc1 = register_module("fc1", nn::Linear(c.pool * c.pool * w, c.hidden));
    fc2 = register_module("fc2", nn::Linear(c.hidden, c.hidden));
    cls = register_module("cls", nn::Linear(c.hidden, c.classes + 1));
    reg = register_module("reg", nn::Linear(c.hidden, 4));
  }
  nn::Sequential backbone{nullptr};
  nn::Conv2d rpn_conv{nullptr}, rpn_cls{nullptr}, rpn_reg{nullptr};
  nn::Linear fc1{nullptr}, fc2{nullptr}, cls{nullptr}, reg{nullptr};
};
TERRA_MODULE(Detector);

// Anchors of every cell of a g x g map, cell-major then 3 sizes x 3 aspect ratios.
inline std::vector<boxes::Box> make_anchors(int64_t g) {
  std::vector<boxes::Box> a;
  for (int64_t y = 0; y < g; ++y)
    for (int64_t x = 0; x < g; ++x)
      for (float size : {8.f, 16.f, 32.f})
        for (float ratio : {0.5f, 1.f, 2.f}) {
          float cx = (float(x) + 0.5f) * kStride, cy = (float(y) + 0.5f) * kStride;
          float w = size / std::sqrt(ratio), h = size * std::sqrt(ratio);
          a.push_back({cx - 0.5f * w, cy - 0.5f * h, cx + 0.5f * w, cy + 0.5f * h});
        }
  return a;
}

// For each candidate, the best IoU with any object and which object.
inline void match(const std::vector<boxes::Box>& cand, const std::vector<boxes::Object>& objs,
                  std::vector<float>& best, std::vector<int>& which) {
  best.assign(cand.size(), 0.f);
  which.assign(cand.size(), 0);
  for (size_t i = 0; i < cand.size(); ++i)
    for (size_t j = 0; j < objs.size(); ++j)
      if (float v = boxes::iou(cand[i], objs[j].box); v > best[i]) best[i] = v, which[i] = int(j);
}

// Host-built training targets of one sampled set (anchors or ROIs), all images together.
struct Targets {
  std::vector<int64_t> index;  // which rows were sampled
  std::vector<int64_t> label;  // RPN: 0/1; ROI: class + 1, 0 = background
  std::vector<float> delta;    // 4 per row
  std::vector<float> weight;   // 1 for foreground rows (box regression counts), else 0
};

// Samples up to n rows of `cand`: up to n * fg_frac foreground (IoU >= fg), the rest
// background (IoU < bg); rows in between are ignored. Appends to t with row offset `base`.
inline int sample(std::mt19937& rng, const std::vector<boxes::Box>& cand,
                  const std::vector<boxes::Object>& objs, float fg, float bg, bool rpn, int64_t n,
                  double fg_frac, int64_t base, Targets& t) {
  std::vector<float> best;
  std::vector<int> which;
  match(cand, objs, best, which);
  std::vector<int64_t> pos, neg;
  for (size_t i = 0; i < cand.size(); ++i) {
    if (best[i] >= fg)
      pos.push_back(int64_t(i));
    else if (best[i] < bg)
      neg.push_back(int64_t(i));
  }
  if (rpn) {  // every object's best anchor is positive, however low its IoU
    for (const auto& o : objs) {
      size_t arg = 0;
      float b = -1;
      for (size_t i = 0; i < cand.size(); ++i)
        if (float v = boxes::iou(cand[i], o.box); v > b) b = v, arg = i;
      if (best[arg] < fg) pos.push_back(int64_t(arg)), best[arg] = fg;
      neg.erase(std::remove(neg.begin(), neg.end(), int64_t(arg)), neg.end());
    }
  }
  std::shuffle(pos.begin(), pos.end(), rng);
  std::shuffle(neg.begin(), neg.end(), rng);
  pos.resize(std::min<size_t>(pos.size(), size_t(double(n) * fg_frac)));
  neg.resize(std::min<size_t>(neg.size(), size_t(n) - pos.size()));
  for (int64_t i : pos) {
    const auto& o = objs[size_t(which[size_t(i)])];
    t.index.push_back(base + i);
    t.label.push_back(rpn ? 1 : o.cls + 1);
    auto d = boxes::encode(cand[size_t(i)], o.box);
    t.delta.insert(t.delta.end(), d.begin(), d.end());
    t.weight.push_back(1.f);
  }
  for (int64_t i : neg) {
    t.index.push_back(base + i);
    t.label.push_back(0);
    t.delta.insert(t.delta.end(), 4, 0.f);
    t.weight.push_back(0.f);
  }
  return int(pos.size());
}

// Feature-map rows (into [N * g * g, C]) of a pool x pool grid of points inside each ROI.
inline void roi_grid(const boxes::Box& r, int64_t img, int64_t g, int64_t pool,
                     std::vector<int64_t>& rows) {
  for (int64_t i = 0; i < pool; ++i)
    for (int64_t j = 0; j < pool; ++j) {
      float y = r.y1 + (float(i) + 0.5f) * r.h() / float(pool);
      float x = r.x1 + (float(j) + 0.5f) * r.w() / float(pool);
      int64_t cy = std::clamp<int64_t>(int64_t(y / kStride), 0, g - 1);
      int64_t cx = std::clamp<int64_t>(int64_t(x / kStride), 0, g - 1);
      rows.push_back((img * g + cy) * g + cx);
    }
}

}  // namespace rcnn

inline Outcome run_faster_rcnn(const FasterRcnnConfig& cfg, Mode mode, int iters) {
  tr::thread_manual_seed(cfg.seed);
  std::mt19937 rng(uint32_t(cfg.seed));
  Outcome o;
  rcnn::Detector net(cfg);
  tr::optim::SGD opt(net->parameters(), {.lr = cfg.lr, .momentum = 0.9, .weight_decay = 1e-4});
  const int64_t b = cfg.batch, g = cfg.image / rcnn::kStride, na = g * g * rcnn::kAnchors;
  run_loop(mode, iters, o, [&](int step) {
    std::vector<std::vector<boxes::Object>> objs;
    auto px = boxes::make_scene(rng, b, cfg.image, cfg.classes, cfg.max_objects, objs);
    tr::Tensor images = tr::tensor(px, {b, 3, cfg.image, cfg.image});
    std::vector<boxes::Box> anchors = rcnn::make_anchors(g);

    // RPN: objectness and deltas per anchor, in the anchors' (cell, anchor) order.
    tr::Tensor feat = net->backbone(images);
    tr::Tensor h = tr::relu(net->rpn_conv(feat));
    tr::Tensor obj = net->rpn_cls(h).permute({0, 2, 3, 1}).reshape({b * na});
    tr::Tensor del = net->rpn_reg(h)
                         .view({b, rcnn::kAnchors, 4, g, g})
                         .permute({0, 3, 4, 1, 2})
                         .reshape({b * na, 4});
    rcnn::Targets rt;
    for (int64_t i = 0; i < b; ++i)
      o.decisions.push_back(rcnn::sample(rng, anchors, objs[size_t(i)], 0.7f, 0.3f, true,
                                         cfg.rpn_samples, 0.5, i * na, rt));
    int64_t nr = int64_t(rt.index.size());
    tr::Tensor ridx = tr::tensor(rt.index, {nr});
    std::vector<float> rlabel(rt.label.begin(), rt.label.end());
    tr::Tensor rpn_cls_loss = F::binary_cross_entropy_with_logits(tr::index_select(obj, 0, ridx),
                                                                  tr::tensor(rlabel, {nr}));
    tr::Tensor rpn_reg_loss =
        (boxes::smooth_l1(tr::index_select(del, 0, ridx) - tr::tensor(rt.delta, {nr, 4}), 1.0 / 9) *
         tr::tensor(rt.weight, {nr, 1}))
            .sum() /
        double(nr);

    // Proposals: fetch, decode, top-150, NMS; then ROI sampling against the objects.
    std::vector<float> score = tr::sigmoid(obj.detach()).to_vector<float>();
    std::vector<float> delta = del.detach().to_vector<float>();
    for (float v : score) o.fetched.push_back(v);
    for (float v : delta) o.fetched.push_back(v);
    rcnn::Targets qt;
    std::vector<int64_t> rows;
    for (int64_t i = 0; i < b; ++i) {
      std::vector<boxes::Box> prop(static_cast<size_t>(na));
      std::vector<float> s(score.begin() + i * na, score.begin() + (i + 1) * na);
      for (int64_t a = 0; a < na; ++a)
        prop[size_t(a)] =
            boxes::decode(anchors[size_t(a)], &delta[size_t((i * na + a) * 4)], float(cfg.image));
      std::vector<int> keep = boxes::nms(prop, s, cfg.pre_nms_top, 0.7f);
      o.decisions.push_back(int64_t(keep.size()));
      std::vector<boxes::Box> rois;
      for (int k : keep) rois.push_back(prop[size_t(k)]);
      for (const auto& ob : objs[size_t(i)]) rois.push_back(ob.box);  // ground truth joins
      size_t first = qt.index.size();
      o.decisions.push_back(rcnn::sample(rng, rois, objs[size_t(i)], 0.5f, 0.5f, false,
                                         cfg.roi_samples, 0.25, 0, qt));
      for (size_t r = first; r < qt.index.size(); ++r)
        rcnn::roi_grid(rois[size_t(qt.index[r])], i, g, cfg.pool, rows);
    }

    // ROI head on features gathered at host-built rows.
    int64_t nq = int64_t(qt.index.size()), c = feat.size(1);
    tr::Tensor flat = feat.permute({0, 2, 3, 1}).reshape({b * g * g, c});
    tr::Tensor pooled = tr::index_select(flat, 0, tr::tensor(rows, {nq * cfg.pool * cfg.pool}))
                            .view({nq, cfg.pool * cfg.pool * c});
    tr::Tensor z = tr::relu(net->fc2(tr::relu(net->fc1(pooled))));
    tr::Tensor roi_cls_loss = F::cross_entropy(net->cls(z), tr::tensor(qt.label, {nq}));
    tr::Tensor roi_reg_loss = (boxes::smooth_l1(net->reg(z) - tr::tensor(qt.delta, {nq, 4}), 1.0) *
                               tr::tensor(qt.weight, {nq, 1}))
                                  .sum() /
                              double(nq);

    tr::Tensor loss = rpn_cls_loss + rpn_reg_loss + roi_cls_loss + roi_reg_loss;
    opt.zero_grad();
    loss.backward();
    opt.step();
    if (step % 10 == 0) o.fetched.push_back(loss.item<double>());
  });
  collect_params(o, net->parameters());
  return o;
}

}  // namespace programs
