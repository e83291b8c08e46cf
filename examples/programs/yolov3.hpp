// examples/programs/yolov3.hpp: paper program 10, YOLOv3 (Redmon and Farhadi 2018) scaled
// down: a tiny Darknet backbone with YOLO heads at strides 16 and 8, 3 anchors per scale,
// 64x64 images, batch 8, Adam. Every step the host builds the targets (the best of the 6
// anchors for each box picks the scale, the anchor and the cell), sends the masks back, and the
// loss is MSE + BCE over the elements the masks select (masked_select: the sizes depend on the
// data).
#pragma once

#include <array>
#include <random>
#include <vector>

#include "examples/programs/boxes.hpp"

namespace programs {

struct Yolov3Config {
  int64_t image = 64, batch = 8, classes = 3, width = 16;
  int max_objects = 3;
  double ignore_iou = 0.5, noobj_scale = 100.0, lr = 1e-3;
  uint64_t seed = 10;
  static Yolov3Config paper() { return {}; }
  static Yolov3Config tiny() {
    Yolov3Config c;
    c.batch = 4, c.width = 4;
    return c;
  }
};

namespace yolo {

constexpr int64_t kStrides[2] = {16, 8};
// Anchor (w, h) in pixels: 3 for the stride-16 head (large), 3 for the stride-8 head.
constexpr float kAnchors[2][3][2] = {{{20, 20}, {24, 40}, {40, 24}}, {{8, 8}, {10, 16}, {16, 10}}};

// conv-BN-LeakyReLU(0.1), Darknet's unit.
class ConvUnitImpl : public nn::Module {
 public:
  ConvUnitImpl(int64_t in, int64_t out, int64_t k) : nn::Module("ConvUnit") {
    conv = register_module(
        "conv", nn::Conv2d(in, out, k, nn::Conv2dOptions{.padding = k / 2, .bias = false}));
    bn = register_module("bn", nn::BatchNorm2d(out));
  }
  tr::Tensor forward(const tr::Tensor& x) override { return F::leaky_relu(bn(conv(x)), 0.1); }
  nn::Conv2d conv{nullptr};
  nn::BatchNorm2d bn{nullptr};
};
TERRA_MODULE(ConvUnit);

// Nearest-neighbour 2x upsampling: [N, C, H, W] -> [N, C, 2H, 2W].
inline tr::Tensor upsample2(const tr::Tensor& x) {
  int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  return x.view({n, c, h, 1, w, 1}).expand({n, c, h, 2, w, 2}).reshape({n, c, 2 * h, 2 * w});
}

class NetImpl : public nn::Module {
 public:
  NetImpl(int64_t w, int64_t classes) : nn::Module("Yolov3Tiny") {
    int64_t out = 3 * (5 + classes);
    c1 = register_module("c1", ConvUnit(3, w, 3));
    c2 = register_module("c2", ConvUnit(w, 2 * w, 3));
    c3 = register_module("c3", ConvUnit(2 * w, 4 * w, 3));
    c4 = register_module("c4", ConvUnit(4 * w, 8 * w, 3));
    c5 = register_module("c5", ConvUnit(8 * w, 8 * w, 3));
    head16 = register_module("head16", nn::Conv2d(8 * w, out, 1));
    lat = register_module("lat", ConvUnit(8 * w, 2 * w, 1));
    c6 = register_module("c6", ConvUnit(6 * w, 4 * w, 3));
    head8 = register_module("head8", nn::Conv2d(4 * w, out, 1));
  }
  // x: [N, 3, 64, 64] -> {[N, out, 4, 4] (stride 16), [N, out, 8, 8] (stride 8)}
  std::array<tr::Tensor, 2> forward2(const tr::Tensor& x) {
    tr::Tensor r8 = tr::max_pool2d(c3(tr::max_pool2d(c2(tr::max_pool2d(c1(x), 2)), 2)), 2);
    tr::Tensor r16 = c5(tr::max_pool2d(c4(r8), 2));
    tr::Tensor up = upsample2(lat(r16));
    return {head16(r16), head8(c6(tr::cat({up, r8}, 1)))};
  }
  ConvUnit c1{nullptr}, c2{nullptr}, c3{nullptr}, c4{nullptr}, c5{nullptr}, lat{nullptr},
      c6{nullptr};
  nn::Conv2d head16{nullptr}, head8{nullptr};
};
TERRA_MODULE(Net);

// IoU of two boxes of sizes (w, h) sharing a centre: how well an anchor's shape fits a box.
inline float wh_iou(float w1, float h1, float w2, float h2) {
  float inter = std::min(w1, w2) * std::min(h1, h2);
  return inter / (w1 * h1 + w2 * h2 - inter);
}

// One scale's host-built targets, laid out as the predictions: [N, 3, g, g] (+ [.., classes]).
struct ScaleTargets {
  int64_t g;
  std::vector<bool> obj, noobj;
  std::vector<float> tx, ty, tw, th, tcls;
  int64_t count = 0;  // objects assigned to this scale
  void init(int64_t n, int64_t grid, int64_t classes) {
    g = grid;
    size_t cells = size_t(n * 3 * g * g);
    obj.assign(cells, false), noobj.assign(cells, true);
    tx.assign(cells, 0.f), ty.assign(cells, 0.f), tw.assign(cells, 0.f), th.assign(cells, 0.f);
    tcls.assign(cells * size_t(classes), 0.f);
  }
};

inline void build_targets(const std::vector<std::vector<boxes::Object>>& objs, int64_t image,
                          int64_t classes, double ignore, std::array<ScaleTargets, 2>& t) {
  int64_t n = int64_t(objs.size());
  for (int s = 0; s < 2; ++s) t[s].init(n, image / kStrides[s], classes);
  for (int64_t b = 0; b < n; ++b)
    for (const auto& o : objs[size_t(b)]) {
      float w = o.box.w(), h = o.box.h(), cx = o.box.x1 + 0.5f * w, cy = o.box.y1 + 0.5f * h;
      int best_s = 0, best_a = 0;
      float best = -1;
      for (int s = 0; s < 2; ++s)
        for (int a = 0; a < 3; ++a)
          if (float v = wh_iou(w, h, kAnchors[s][a][0], kAnchors[s][a][1]); v > best)
            best = v, best_s = s, best_a = a;
      ScaleTargets& st = t[best_s];
      float gx = cx / float(kStrides[best_s]), gy = cy / float(kStrides[best_s]);
      int64_t gi = std::min<int64_t>(int64_t(gx), st.g - 1),
              gj = std::min<int64_t>(int64_t(gy), st.g - 1);
      auto cell = [&](int a) { return size_t(((b * 3 + a) * st.g + gj) * st.g + gi); };
      for (int a = 0; a < 3; ++a)  // anchors that fit well enough are not punished as empty
        if (wh_iou(w, h, kAnchors[best_s][a][0], kAnchors[best_s][a][1]) > ignore)
          st.noobj[cell(a)] = false;
      size_t k = cell(best_a);
      st.count += !st.obj[k];
      st.obj[k] = true, st.noobj[k] = false;
      st.tx[k] = gx - float(gi), st.ty[k] = gy - float(gj);
      st.tw[k] = std::log(w / kAnchors[best_s][best_a][0]);
      st.th[k] = std::log(h / kAnchors[best_s][best_a][1]);
      st.tcls[k * size_t(classes) + size_t(o.cls)] = 1.f;
    }
}

}  // namespace yolo

inline Outcome run_yolov3(const Yolov3Config& cfg, Mode mode, int iters) {
  tr::thread_manual_seed(cfg.seed);
  std::mt19937 rng(uint32_t(cfg.seed));
  Outcome o;
  yolo::Net net(cfg.width, cfg.classes);
  tr::optim::Adam opt(net->parameters(), {.lr = cfg.lr});
  const int64_t n = cfg.batch, nc = cfg.classes;
  run_loop(mode, iters, o, [&](int step) {
    std::vector<std::vector<boxes::Object>> objs;
    auto px = boxes::make_scene(rng, n, cfg.image, nc, cfg.max_objects, objs);
    auto out = net->forward2(tr::tensor(px, {n, 3, cfg.image, cfg.image}));
    std::array<yolo::ScaleTargets, 2> t;
    yolo::build_targets(objs, cfg.image, nc, cfg.ignore_iou, t);
    tr::Tensor loss = tr::zeros({});
    for (int s = 0; s < 2; ++s) {
      const yolo::ScaleTargets& st = t[size_t(s)];
      o.decisions.push_back(st.count);
      int64_t g = st.g;
      tr::Shape cells{n, 3, g, g};
      tr::Tensor p = out[size_t(s)].view({n, 3, 5 + nc, g, g}).permute({0, 1, 3, 4, 2});
      tr::Tensor obj = tr::tensor(st.obj, cells), noobj = tr::tensor(st.noobj, cells);
      tr::Tensor conf = p.select(4, 4);
      tr::Tensor empty_conf = tr::masked_select(conf, noobj);
      loss = loss + cfg.noobj_scale *
                        F::binary_cross_entropy_with_logits(empty_conf, tr::zeros_like(empty_conf));
      if (st.count == 0) continue;  // nothing assigned to this scale in this batch
      auto sel = [&](const tr::Tensor& x) { return tr::masked_select(x, obj); };
      auto target = [&](const std::vector<float>& v) { return sel(tr::tensor(v, cells)); };
      loss = loss + F::mse_loss(sel(tr::sigmoid(p.select(4, 0))), target(st.tx)) +
             F::mse_loss(sel(tr::sigmoid(p.select(4, 1))), target(st.ty)) +
             F::mse_loss(sel(p.select(4, 2)), target(st.tw)) +
             F::mse_loss(sel(p.select(4, 3)), target(st.th)) +
             F::binary_cross_entropy_with_logits(
                 sel(conf), target(std::vector<float>(st.obj.begin(), st.obj.end())));
      tr::Tensor cls_mask = obj.unsqueeze(4);
      loss = loss + F::binary_cross_entropy_with_logits(
                        tr::masked_select(p.narrow(4, 5, nc), cls_mask),
                        tr::masked_select(tr::tensor(st.tcls, {n, 3, g, g, nc}), cls_mask));
    }
    opt.zero_grad();
    loss.backward();
    opt.step();
    if (step % 10 == 0) o.fetched.push_back(loss.item<double>());
  });
  collect_params(o, net->parameters());
  return o;
}

}  // namespace programs
