// conv_transpose2d (composed of public ops) against a float64 scatter reference, its
// gradients, and its errors.
#include <sstream>

#include "op_test.hpp"

namespace {

using terra::IntPair;
using terra::Shape;
using terra::Tensor;

std::string str(const Shape& s) {
  std::ostringstream os;
  os << s;
  return os.str();
}

struct Tp {
  IntPair stride = 1, pad = 0, out_pad = 0;
};

// Every input pixel scatters x * w into the output window it covers. x [N, C, H, W] or
// [C, H, W], w [C, O, kh, kw], b [O] or undefined.
std::vector<double> ref_tconv(const Tensor& x, const Tensor& w, const Tensor& b, Tp p, Shape* s) {
  std::vector<double> xv = tt::f64(x), wv = tt::f64(w);
  bool unb = x.dim() == 3;
  int64_t n = unb ? 1 : x.size(0), c = x.size(-3), h = x.size(-2), wd = x.size(-1);
  int64_t o = w.size(1), kh = w.size(2), kw = w.size(3);
  int64_t oh = (h - 1) * p.stride.h - 2 * p.pad.h + kh + p.out_pad.h;
  int64_t ow = (wd - 1) * p.stride.w - 2 * p.pad.w + kw + p.out_pad.w;
  std::vector<double> out(size_t(n * o * oh * ow), 0.0);
  for (int64_t in = 0; in < n; ++in)
    for (int64_t oc = 0; oc < o; ++oc) {
      double bias = b.defined() ? tt::f64(b)[size_t(oc)] : 0.0;
      for (int64_t k = 0; k < oh * ow; ++k) out[size_t((in * o + oc) * oh * ow + k)] = bias;
      for (int64_t ic = 0; ic < c; ++ic)
        for (int64_t y = 0; y < h; ++y)
          for (int64_t xx = 0; xx < wd; ++xx)
            for (int64_t i = 0; i < kh; ++i)
              for (int64_t j = 0; j < kw; ++j) {
                int64_t oy = y * p.stride.h - p.pad.h + i, ox = xx * p.stride.w - p.pad.w + j;
                if (oy < 0 || oy >= oh || ox < 0 || ox >= ow) continue;
                out[size_t(((in * o + oc) * oh + oy) * ow + ox)] +=
                    xv[size_t(((in * c + ic) * h + y) * wd + xx)] *
                    wv[size_t(((ic * o + oc) * kh + i) * kw + j)];
              }
    }
  *s = unb ? Shape{o, oh, ow} : Shape{n, o, oh, ow};
  return out;
}

struct Case {
  Shape x, w;
  Tp p;
  bool bias;
};

const Case kCases[] = {
    {{2, 3, 4, 4}, {3, 5, 4, 4}, {2, 1, 0}, true},       // DCGAN's upsampling layer
    {{2, 6, 1, 1}, {6, 4, 4, 4}, {1, 0, 0}, false},      // DCGAN's first layer: 1x1 -> 4x4
    {{1, 2, 3, 5}, {2, 3, 3, 2}, {{2, 3}, {1, 0}, {1, 2}}, true},  // asymmetric, output_padding
    {{2, 5, 5}, {2, 2, 3, 3}, {1, 1, 0}, true},           // unbatched, stride 1
    {{1, 2, 4, 4}, {2, 3, 2, 2}, {2, 3, 0}, true},        // padding beyond k - 1: crops
};

TEST(ConvTranspose2d, MatchesScatterReference) {
  for (const Case& k : kCases)
    for (terra::DType dt : {terra::DType::Float32, terra::DType::Float64}) {
      Tensor x = tt::random(k.x, dt, 3), w = tt::random(k.w, dt, 4);
      Tensor b = k.bias ? tt::random({k.w[1]}, dt, 5) : Tensor();
      Shape s;
      std::vector<double> want = ref_tconv(x, w, b, k.p, &s);
      for (const Tensor& xl : tt::layouts(x)) {
        Tensor got = terra::conv_transpose2d(xl, w, b, k.p.stride, k.p.pad, k.p.out_pad);
        double r = tt::rtol_of(dt);
        tt::expect_close(got, s, want, r, r * 40, "x " + str(k.x));
      }
    }
}

TEST(ConvTranspose2d, Float16RoundTrips) {
  Tensor x = tt::random({1, 2, 3, 3}, terra::DType::Float16, 6);
  Tensor w = tt::random({2, 2, 2, 2}, terra::DType::Float16, 7);
  Shape s;
  std::vector<double> want = ref_tconv(x, w, {}, {2, 0, 0}, &s);
  Tensor got = terra::conv_transpose2d(x, w, {}, 2);
  EXPECT_EQ(got.dtype(), terra::DType::Float16);
  tt::expect_close(got, s, want, 4e-3, 2e-2, "float16");
}

TEST(ConvTranspose2d, Gradients) {
  for (const Case& k : kCases) {
    // Reserved up front: GCC 12 warns (-Warray-bounds, a false positive) on growing a vector
    // made from a two-element list.
    std::vector<Tensor> in;
    in.reserve(3);
    in.push_back(tt::rnd(k.x, 11));
    in.push_back(tt::rnd(k.w, 12));
    if (k.bias) in.push_back(tt::rnd({k.w[1]}, 13));
    tt::expect_gradcheck(
        [&](const std::vector<Tensor>& v) {
          return terra::conv_transpose2d(v[0], v[1], v.size() > 2 ? v[2] : Tensor(), k.p.stride,
                                         k.p.pad, k.p.out_pad);
        },
        in, "x " + str(k.x));
  }
}

TEST(ConvTranspose2d, Module) {
  terra::thread_manual_seed(3);
  terra::nn::ConvTranspose2d m(4, 2, 4,
                               terra::nn::ConvTranspose2dOptions{.stride = 2, .padding = 1});
  EXPECT_EQ(m->weight.shape(), Shape({4, 2, 4, 4}));
  Tensor y = m(terra::randn({3, 4, 5, 5}));
  EXPECT_EQ(y.shape(), Shape({3, 2, 10, 10}));
}

TEST(ConvTranspose2d, Errors) {
  Tensor x = terra::zeros({1, 3, 4, 4});
  tt::expect_error([&] { terra::conv_transpose2d(x, terra::zeros({2, 5, 3, 3})); },
                   {"conv_transpose2d", "[2, 5, 3, 3]", "[1, 3, 4, 4]"});
  tt::expect_error([&] { terra::conv_transpose2d(x, terra::zeros({3, 5, 3, 3}), {}, 0); },
                   {"conv_transpose2d", "stride must be positive"});
  tt::expect_error(
      [&] { terra::conv_transpose2d(x, terra::zeros({3, 5, 3, 3}), {}, 2, 0, 2); },
      {"conv_transpose2d", "output_padding (2, 2)"});
  tt::expect_error([&] { terra::conv_transpose2d(x, terra::zeros({3, 5, 3, 3}), {}, 1, 4); },
                   {"conv_transpose2d", "empty output"});
  tt::expect_error(
      [&] { terra::conv_transpose2d(x, terra::zeros({3, 5, 3, 3}), terra::zeros({3})); },
      {"conv_transpose2d", "bias of shape [3]"});
  tt::expect_error(
      [&] { terra::conv_transpose2d(terra::zeros({4, 4}), terra::zeros({3, 5, 3, 3})); },
      {"conv_transpose2d", "[4, 4]"});
}

}  // namespace
