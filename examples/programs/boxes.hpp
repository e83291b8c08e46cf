// examples/programs/boxes.hpp: host-side box arithmetic shared by the detection programs
// (faster_rcnn, yolov3): IoU, the (dx, dy, dw, dh) box encoding, non-maximum suppression, and
// synthetic scenes of coloured rectangles. Plain standard-library code, run on the host.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "examples/programs/common.hpp"

namespace programs::boxes {

struct Box {
  float x1, y1, x2, y2;
  float w() const { return x2 - x1; }
  float h() const { return y2 - y1; }
  float area() const { return std::max(0.f, w()) * std::max(0.f, h()); }
};

inline float iou(const Box& a, const Box& b) {
  float iw = std::min(a.x2, b.x2) - std::max(a.x1, b.x1);
  float ih = std::min(a.y2, b.y2) - std::max(a.y1, b.y1);
  if (iw <= 0 || ih <= 0) return 0;
  float inter = iw * ih;
  return inter / (a.area() + b.area() - inter);
}

// The regression target that moves `from` onto `to`.
inline std::array<float, 4> encode(const Box& from, const Box& to) {
  float fw = from.w(), fh = from.h(), tw = to.w(), th = to.h();
  return {(to.x1 + 0.5f * tw - from.x1 - 0.5f * fw) / fw,
          (to.y1 + 0.5f * th - from.y1 - 0.5f * fh) / fh, std::log(tw / fw), std::log(th / fh)};
}
// Applies deltas d to box b (sizes clamped as in Faster R-CNN), clipped to [0, size].
inline Box decode(const Box& b, const float* d, float size) {
  const float max_log = std::log(1000.f / 16.f);
  float w = b.w(), h = b.h(), cx = b.x1 + 0.5f * w + d[0] * w, cy = b.y1 + 0.5f * h + d[1] * h;
  float nw = w * std::exp(std::min(d[2], max_log)), nh = h * std::exp(std::min(d[3], max_log));
  auto clip = [&](float v) { return std::clamp(v, 0.f, size); };
  return {clip(cx - 0.5f * nw), clip(cy - 0.5f * nh), clip(cx + 0.5f * nw), clip(cy + 0.5f * nh)};
}

// Greedy NMS over the `top` best-scoring boxes; returns the survivors' indices, best first.
// Ties in score keep index order, so the result never depends on the sort's internals.
inline std::vector<int> nms(const std::vector<Box>& b, const std::vector<float>& score, int top,
                            float thresh) {
  std::vector<int> order(b.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int i, int j) { return score[i] > score[j]; });
  if (int(order.size()) > top) order.resize(size_t(top));
  std::vector<int> keep;
  for (int i : order) {
    bool ok = b[i].w() >= 1.f && b[i].h() >= 1.f;  // drop degenerate boxes
    for (size_t k = 0; ok && k < keep.size(); ++k) ok = iou(b[i], b[keep[k]]) <= thresh;
    if (ok) keep.push_back(i);
  }
  return keep;
}

struct Object {
  Box box;
  int64_t cls;
};
// Images [n, 3, size, size] of 1..max_objects rectangles per image on noise; each class has
// its own colour. Returns the pixels and every image's objects.
inline std::vector<float> make_scene(std::mt19937& rng, int64_t n, int64_t size, int64_t classes,
                                     int max_objects, std::vector<std::vector<Object>>& objects) {
  std::normal_distribution<float> noise(0.f, 0.2f);
  std::uniform_int_distribution<int> count(1, max_objects);
  std::uniform_real_distribution<float> side(0.15f * float(size), 0.5f * float(size)), u(0.f, 1.f);
  std::uniform_int_distribution<int64_t> cls(0, classes - 1);
  std::vector<float> px(static_cast<size_t>(n * 3 * size * size));
  for (auto& v : px) v = noise(rng);
  objects.assign(size_t(n), {});
  for (int64_t i = 0; i < n; ++i) {
    int k = count(rng);
    for (int j = 0; j < k; ++j) {
      float w = side(rng), h = side(rng), x = u(rng) * (float(size) - w),
            y = u(rng) * (float(size) - h);
      Object o{{x, y, x + w, y + h}, cls(rng)};
      objects[size_t(i)].push_back(o);
      for (int64_t c = 0; c < 3; ++c) {
        float colour = ((o.cls + c) % 3 == 0) ? 1.5f : -0.5f + 0.5f * float(o.cls % 2);
        for (int64_t r = int64_t(y); r < int64_t(y + h); ++r)
          for (int64_t q = int64_t(x); q < int64_t(x + w); ++q)
            px[size_t(((i * 3 + c) * size + r) * size + q)] = colour + noise(rng);
      }
    }
  }
  return px;
}

// Huber loss with threshold beta, elementwise (Faster R-CNN's box regression loss).
inline tr::Tensor smooth_l1(const tr::Tensor& d, double beta) {
  tr::Tensor a = d.abs();
  return tr::where(a < beta, d * d * (0.5 / beta), a - 0.5 * beta);
}

}  // namespace programs::boxes
