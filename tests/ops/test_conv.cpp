// Tests of conv2d and the 2-D pools against float64 references computed with plain loops.
#include "op_test.hpp"

namespace {

using terra::DType;
using terra::IntPair;
using terra::Shape;
using terra::Tensor;

TERRA_COVERS("conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d");

struct Conv {
  IntPair stride = 1, pad = 0, dil = 1;
  int64_t groups = 1;
};

// x [N, C, H, W] (or [C, H, W]), w [O, C / g, kh, kw], b [O] or undefined.
std::vector<double> ref_conv(const Tensor& x, const Tensor& w, const Tensor& b, Conv p, Shape* s) {
  std::vector<double> xv = tt::f64(x), wv = tt::f64(w),
                      bv = b.defined() ? tt::f64(b) : std::vector<double>();
  bool unb = x.dim() == 3;
  int64_t n = unb ? 1 : x.shape()[0], c = x.size(-3), h = x.size(-2), wd = x.size(-1);
  int64_t o = w.shape()[0], kh = w.shape()[2], kw = w.shape()[3], cg = c / p.groups,
          og = o / p.groups;
  int64_t oh = (h + 2 * p.pad.h - p.dil.h * (kh - 1) - 1) / p.stride.h + 1;
  int64_t ow = (wd + 2 * p.pad.w - p.dil.w * (kw - 1) - 1) / p.stride.w + 1;
  std::vector<double> out;
  for (int64_t in = 0; in < n; ++in)
    for (int64_t oc = 0; oc < o; ++oc)
      for (int64_t y = 0; y < oh; ++y)
        for (int64_t xx = 0; xx < ow; ++xx) {
          double acc = b.defined() ? bv[oc] : 0.0;
          for (int64_t ic = 0; ic < cg; ++ic)
            for (int64_t i = 0; i < kh; ++i)
              for (int64_t j = 0; j < kw; ++j) {
                int64_t iy = y * p.stride.h - p.pad.h + i * p.dil.h;
                int64_t ix = xx * p.stride.w - p.pad.w + j * p.dil.w;
                if (iy < 0 || iy >= h || ix < 0 || ix >= wd) continue;
                int64_t ch = oc / og * cg + ic;
                acc +=
                    xv[((in * c + ch) * h + iy) * wd + ix] * wv[((oc * cg + ic) * kh + i) * kw + j];
              }
          out.push_back(acc);
        }
  *s = unb ? Shape{o, oh, ow} : Shape{n, o, oh, ow};
  return out;
}

void check_conv(const Tensor& x, const Tensor& w, const Tensor& b, Conv p, double rtol,
                const std::string& what) {
  Shape s;
  std::vector<double> want = ref_conv(x, w, b, p, &s);
  Tensor got = terra::conv2d(x, w, b, p.stride, p.pad, p.dil, p.groups);
  tt::expect_close(got, s, want, rtol, rtol * 10 * double(w.numel() / w.shape()[0] + 1), what);
}

struct ConvCase {
  Shape x, w;
  Conv p;
  bool bias;
};

const std::vector<ConvCase> kConvCases = {
    {{2, 3, 7, 6}, {4, 3, 3, 2}, {}, false},
    {{2, 3, 7, 6}, {4, 3, 3, 2}, {{2, 1}, {1, 2}, {1, 2}, 1}, true},
    {{1, 2, 9, 8}, {3, 2, 3, 3}, {2, 1, 2, 1}, true},
    {{2, 4, 6, 6}, {6, 2, 3, 3}, {1, 1, 1, 2}, true},                  // groups 2
    {{2, 3, 8, 8}, {3, 1, 3, 3}, {2, 1, 1, 3}, true},                  // depthwise
    {{2, 3, 8, 7}, {6, 1, 3, 2}, {{1, 2}, {1, 0}, {2, 1}, 3}, false},  // channel multiplier
    {{3, 5, 4, 4}, {7, 5, 1, 1}, {}, true},                            // 1x1, batched into one gemm
    {{2, 3, 48, 47}, {4, 3, 1, 1}, {}, true},                          // 1x1 reading x in place
    {{2, 3, 48, 47}, {4, 3, 3, 3}, {1, 1, 1, 1}, true},                // one image per gemm
    {{3, 7, 7}, {2, 3, 3, 3}, {1, 1, 1, 1}, true},                     // unbatched
    {{1, 2, 3, 3}, {2, 2, 3, 3}, {}, false},                           // kernel = input
    {{1, 1, 2, 2}, {1, 1, 3, 3}, {1, 1, 1, 1}, true},                  // kernel > input, padded
    {{7, 2, 24, 24}, {3, 2, 3, 3}, {1, 1, 1, 1}, true},  // batch chunks of 4 + 3 images
    // Output as wide as the input (im2col copies each kernel offset's rows at once): dilated,
    // and with more height padding than width padding.
    {{2, 3, 9, 9}, {4, 3, 3, 3}, {1, 2, 2, 1}, true},
    {{2, 2, 6, 5}, {3, 2, 5, 3}, {1, {3, 1}, 1, 1}, false},
};

TEST(Conv2d, CasesAndDtypes) {
  for (DType dt : {DType::Float32, DType::Float64}) {
    uint32_t seed = 1;
    for (const ConvCase& k : kConvCases) {
      Tensor x = tt::random(k.x, dt, seed++), w = tt::random(k.w, dt, seed++);
      Tensor b = k.bias ? tt::random({k.w[0]}, dt, seed++) : Tensor();
      check_conv(
          x, w, b, k.p, tt::rtol_of(dt) * 10,
          terra::shape_str(k.x) + " * " + terra::shape_str(k.w) + " " + terra::dtype_name(dt));
    }
  }
}

TEST(Conv2d, NonContiguousInputs) {
  Tensor x = tt::random({2, 4, 6, 5}, DType::Float32, 20),
         w = tt::random({4, 2, 2, 3}, DType::Float32, 21);
  Tensor b = tt::random({4}, DType::Float32, 22);
  for (const Tensor& vx : tt::layouts(x))
    for (const Tensor& vw : tt::layouts(w))
      for (const Tensor& vb : tt::layouts(b)) check_conv(vx, vw, vb, {1, 1, 1, 2}, 1e-4, "layouts");
}

TEST(Conv2d, IntegersMixedHalfAndEmptyBatch) {
  Tensor x = tt::random({2, 2, 5, 5}, DType::Int64, 30),
         w = tt::random({3, 2, 3, 3}, DType::Int64, 31);
  check_conv(x, w, tt::random({3}, DType::Int64, 32), {2, 1, 1, 1}, 0, "int64");
  check_conv(x, tt::random({3, 2, 3, 3}, DType::Float32, 33), Tensor(), {}, 1e-5,
             "int64 * float32");
  EXPECT_EQ(terra::conv2d(x, tt::random({3, 2, 3, 3}, DType::Float32, 33)).dtype(), DType::Float32);
  Tensor h = tt::random({1, 2, 6, 6}, DType::Float16, 34),
         hw = tt::random({2, 2, 3, 3}, DType::Float16, 35);
  Tensor hr = terra::conv2d(h, hw, {}, 1, 1);
  EXPECT_EQ(hr.dtype(), DType::Float16);
  check_conv(h, hw, Tensor(), {1, 1, 1, 1}, 4e-3, "float16");
  Tensor e = terra::conv2d(terra::zeros({0, 3, 5, 5}), terra::ones({4, 3, 3, 3}), terra::ones({4}));
  EXPECT_EQ(e.shape(), (Shape{0, 4, 3, 3}));
}

TEST(Conv2d, Errors) {
  using terra::ones;
  auto x = ones({1, 4, 5, 5});
  tt::expect_error(
      [&] {
        terra::conv2d(ones({4, 5}), ones({2, 4, 3, 3}));
      },
      {"[terra::conv2d]", "[4, 5]"});
  tt::expect_error(
      [&] {
        terra::conv2d(ones({1, 0, 5, 5}), ones({2, 1, 3, 3}));
      },
      {"[terra::conv2d]", "[1, 0, 5, 5]"});
  tt::expect_error(
      [&] {
        terra::conv2d(x, ones({2, 4, 3}));
      },
      {"[terra::conv2d]", "4-D", "[2, 4, 3]"});
  tt::expect_error(
      [&] {
        terra::conv2d(x, ones({2, 4, 3, 3}), {}, 1, 0, 1, 3);
      },
      {"[terra::conv2d]", "divisible by groups 3"});
  tt::expect_error(
      [&] {
        terra::conv2d(x, ones({3, 2, 3, 3}), {}, 1, 0, 1, 2);
      },
      {"[terra::conv2d]", "divisible by groups 2"});
  tt::expect_error(
      [&] {
        terra::conv2d(x, ones({2, 3, 3, 3}));
      },
      {"[terra::conv2d]", "[2, 3, 3, 3]", "[1, 4, 5, 5]"});
  tt::expect_error(
      [&] {
        terra::conv2d(x, ones({2, 4, 6, 3}));
      },
      {"[terra::conv2d]", "larger than the padded input", "(6, 3)", "(5, 5)"});
  tt::expect_error(
      [&] {
        terra::conv2d(x, ones({2, 4, 3, 3}), {}, 1, 0, {3, 1});
      },
      {"[terra::conv2d]", "larger than the padded input", "(7, 3)"});
  tt::expect_error(
      [&] {
        terra::conv2d(x, ones({2, 4, 3, 3}), {}, {1, 0});
      },
      {"[terra::conv2d]", "stride", "(1, 0)"});
  tt::expect_error(
      [&] {
        terra::conv2d(x, ones({2, 4, 3, 3}), {}, 1, -1);
      },
      {"[terra::conv2d]", "padding", "(-1, -1)"});
  tt::expect_error(
      [&] {
        terra::conv2d(x, ones({2, 4, 3, 3}), {}, 1, 0, 0);
      },
      {"[terra::conv2d]", "dilation", "(0, 0)"});
  tt::expect_error(
      [&] {
        terra::conv2d(x, ones({2, 4, 3, 3}), {}, 1, 0, 1, 0);
      },
      {"[terra::conv2d]", "groups must be positive"});
  tt::expect_error(
      [&] {
        terra::conv2d(x, ones({2, 4, 3, 3}), ones({3}));
      },
      {"[terra::conv2d]", "bias", "[3]"});
  tt::expect_error(
      [&] {
        terra::conv2d(ones({1, 1, 3, 3}, {.dtype = DType::Bool}),
                      ones({1, 1, 1, 1}, {.dtype = DType::Bool}));
      },
      {"[terra::conv2d]", "bool"});
}

// ---- pools ----
struct Pool {
  IntPair k = 2, s = 2, pad = 0, dil = 1;
  bool ceil = false, include_pad = true;
};

int64_t ref_out(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil) {
  double len = double(in + 2 * p - d * (k - 1) - 1) / double(s);
  int64_t out = int64_t(ceil ? std::ceil(len) : std::floor(len)) + 1;
  if (ceil && (out - 1) * s >= in + p) --out;
  return out;
}

// kind: 0 max (values; indices into *idx), 1 avg.
std::vector<double> ref_pool(const Tensor& x, Pool p, int kind, Shape* s,
                             std::vector<double>* idx) {
  std::vector<double> xv = tt::f64(x), out;
  int64_t h = x.size(-2), w = x.size(-1), planes = x.numel() / (h * w);
  int64_t oh = ref_out(h, p.k.h, p.s.h, p.pad.h, p.dil.h, p.ceil);
  int64_t ow = ref_out(w, p.k.w, p.s.w, p.pad.w, p.dil.w, p.ceil);
  for (int64_t q = 0; q < planes; ++q)
    for (int64_t y = 0; y < oh; ++y)
      for (int64_t xx = 0; xx < ow; ++xx) {
        double best = -INFINITY, sum = 0;
        int64_t bi = -1, cnt = 0, cnt_pad = 0;
        for (int64_t i = 0; i < p.k.h; ++i)
          for (int64_t j = 0; j < p.k.w; ++j) {
            int64_t iy = y * p.s.h - p.pad.h + i * p.dil.h, ix = xx * p.s.w - p.pad.w + j * p.dil.w;
            if (iy < h + p.pad.h && ix < w + p.pad.w) ++cnt_pad;  // a padded or real position
            if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
            double v = xv[(q * h + iy) * w + ix];
            if (bi < 0 || v > best || std::isnan(v)) best = v, bi = iy * w + ix;
            sum += v;
            ++cnt;
          }
        out.push_back(kind == 0 ? best : sum / double(p.include_pad ? cnt_pad : cnt));
        if (idx) idx->push_back(double(bi));
      }
  *s = x.shape();
  s->back() = ow;
  (*s)[s->size() - 2] = oh;
  return out;
}

const std::vector<std::pair<Shape, Pool>> kPoolCases = {
    {{2, 3, 6, 6}, {}},
    {{2, 3, 7, 5}, {3, 2, 1, 1}},
    {{1, 2, 7, 7}, {3, 2, 1, 1, true}},
    {{1, 2, 8, 9}, {{3, 2}, {2, 3}, {1, 1}, 1, true}},
    {{2, 1, 9, 9}, {3, 2, 1, 2}},        // dilation (max only)
    {{1, 2, 5, 5}, {3, 3, 1, 1, true}},  // last window would start in the padding
    {{3, 6, 5}, {2, 1, 1, 1, false}},    // unbatched
    {{1, 1, 4, 4}, {{2, 3}, 1, {1, 0}, 1, true}},
};

TEST(MaxPool2d, CasesLayoutsDtypes) {
  for (DType dt : {DType::Float32, DType::Float64, DType::Int64}) {
    uint32_t seed = 1;
    for (const auto& [shape, p] : kPoolCases) {
      Tensor x = tt::random(shape, dt, seed++, -5, 5);
      Shape s;
      std::vector<double> idx;
      std::vector<double> want = ref_pool(x, p, 0, &s, &idx);
      for (const Tensor& v : tt::layouts(x)) {
        auto [val, ind] = terra::max_pool2d_with_indices(v, p.k, p.s, p.pad, p.dil, p.ceil);
        std::string what = terra::shape_str(shape) + " " + terra::dtype_name(dt);
        EXPECT_EQ(val.dtype(), dt);
        EXPECT_EQ(ind.dtype(), DType::Int64);
        tt::expect_close(val, s, want, 0, 0, what);
        tt::expect_close(ind, s, idx, 0, 0, what + " indices");
        tt::expect_close(terra::max_pool2d(v, p.k, p.s, p.pad, p.dil, p.ceil), s, want, 0, 0, what);
      }
    }
  }
}

TEST(MaxPool2d, DefaultStrideNanAndHalf) {
  Tensor x = terra::tensor(std::vector<double>{1, 9, 2, 3, NAN, 4, 5, 6, 7, 8, 0, 1, 2, 3, 4, 5},
                           {1, 1, 4, 4});
  auto [v, i] = terra::max_pool2d_with_indices(x, 2);
  tt::expect_close(v, {1, 1, 2, 2}, {NAN, 6, 8, 5});
  tt::expect_close(i, {1, 1, 2, 2}, {4, 7, 9, 15});
  Tensor h = tt::random({2, 2, 5, 5}, DType::Float16, 9);
  Shape s;
  Pool p{3, 2, 1};
  tt::expect_close(terra::max_pool2d(h, 3, 2, 1), {2, 2, 3, 3}, ref_pool(h, p, 0, &s, nullptr), 0,
                   0);
  EXPECT_EQ(terra::max_pool2d(h, 3, 2, 1).dtype(), DType::Float16);
  EXPECT_EQ(terra::max_pool2d(terra::zeros({0, 2, 4, 4}), 2).shape(), (Shape{0, 2, 2, 2}));
}

TEST(AvgPool2d, CasesLayoutsDtypes) {
  for (DType dt : {DType::Float32, DType::Float64}) {
    uint32_t seed = 1;
    for (auto [shape, p] : kPoolCases) {
      if (p.dil.h != 1) continue;
      for (bool inc : {true, false}) {
        p.include_pad = inc;
        Tensor x = tt::random(shape, dt, seed++);
        Shape s;
        std::vector<double> want = ref_pool(x, p, 1, &s, nullptr);
        for (const Tensor& v : tt::layouts(x))
          tt::expect_close(terra::avg_pool2d(v, p.k, p.s, p.pad, p.ceil, inc), s, want,
                           tt::rtol_of(dt) * 10, tt::rtol_of(dt) * 10, terra::shape_str(shape));
      }
    }
  }
}

TEST(AvgPool2d, KnownValuesAndHalf) {
  // PyTorch: avg_pool2d(arange(16).view(1, 1, 4, 4), 3, 2, 1) with and without the padding.
  Tensor x = terra::arange(16.0).view({1, 1, 4, 4});
  tt::expect_close(terra::avg_pool2d(x, 3, 2, 1), {1, 1, 2, 2}, {10.0 / 9, 24.0 / 9, 51.0 / 9, 10});
  tt::expect_close(terra::avg_pool2d(x, 3, 2, 1, false, false), {1, 1, 2, 2}, {2.5, 4, 8.5, 10});
  Tensor h = tt::random({1, 2, 6, 6}, DType::BFloat16, 3);
  Shape s;
  Pool p{2, 2, 0};
  Tensor r = terra::avg_pool2d(h, 2);
  EXPECT_EQ(r.dtype(), DType::BFloat16);
  tt::expect_close(r, {1, 2, 3, 3}, ref_pool(h, p, 1, &s, nullptr), 1e-2, 1e-2);
}

TEST(AdaptiveAvgPool2d, Sizes) {
  for (DType dt : {DType::Float32, DType::Float64}) {
    Tensor x = tt::random({2, 3, 7, 5}, dt, 4);
    std::vector<double> xv = tt::f64(x);
    for (IntPair o : {IntPair(3, 2), IntPair(7, 5), IntPair(1), IntPair(10, 8), IntPair(4, 1)}) {
      std::vector<double> want;
      for (int64_t q = 0; q < 6; ++q)
        for (int64_t i = 0; i < o.h; ++i)
          for (int64_t j = 0; j < o.w; ++j) {
            int64_t y0 = int64_t(std::floor(double(i) * 7 / o.h)),
                    y1 = int64_t(std::ceil(double(i + 1) * 7 / o.h));
            int64_t x0 = int64_t(std::floor(double(j) * 5 / o.w)),
                    x1 = int64_t(std::ceil(double(j + 1) * 5 / o.w));
            double sum = 0;
            for (int64_t y = y0; y < y1; ++y)
              for (int64_t xx = x0; xx < x1; ++xx) sum += xv[(q * 7 + y) * 5 + xx];
            want.push_back(sum / double((y1 - y0) * (x1 - x0)));
          }
      for (const Tensor& v : tt::layouts(x))
        tt::expect_close(terra::adaptive_avg_pool2d(v, o), {2, 3, o.h, o.w}, want,
                         tt::rtol_of(dt) * 10, tt::rtol_of(dt) * 10);
    }
  }
  Tensor u = tt::random({3, 4, 4}, DType::Float16, 5);
  Tensor r = terra::adaptive_avg_pool2d(u, 1);
  EXPECT_EQ(r.shape(), (Shape{3, 1, 1}));
  EXPECT_EQ(r.dtype(), DType::Float16);
}

TEST(Pools, Errors) {
  using terra::ones;
  Tensor x = ones({1, 1, 4, 4});
  tt::expect_error([&] { terra::max_pool2d(ones({4, 4}), 2); }, {"[terra::max_pool2d]", "[4, 4]"});
  tt::expect_error(
      [&] {
        terra::max_pool2d(ones({1, 0, 4, 4}), 2);
      },
      {"[terra::max_pool2d]", "[1, 0, 4, 4]"});
  tt::expect_error([&] { terra::max_pool2d(x, 0); },
                   {"[terra::max_pool2d]", "kernel size", "(0, 0)"});
  tt::expect_error(
      [&] {
        terra::max_pool2d(x, 2, IntPair{0, 1});
      },
      {"[terra::max_pool2d]", "stride", "(0, 1)"});
  tt::expect_error([&] { terra::max_pool2d(x, 3, 1, 2); },
                   {"[terra::max_pool2d]", "padding (2, 2)", "half the kernel size (3, 3)"});
  tt::expect_error([&] { terra::max_pool2d(x, 2, 1, 0, 0); }, {"[terra::max_pool2d]", "dilation"});
  tt::expect_error([&] { terra::max_pool2d(x, 5); },
                   {"[terra::max_pool2d]", "too small", "[1, 1, 4, 4]"});
  tt::expect_error([&] { terra::max_pool2d(x, 2, {}, 0, 4); },
                   {"[terra::max_pool2d]", "too small"});
  tt::expect_error(
      [&] {
        terra::max_pool2d(ones({1, 1, 4, 4}, {.dtype = DType::Bool}), 2);
      },
      {"[terra::max_pool2d]", "bool"});
  tt::expect_error([&] { terra::avg_pool2d(x, 2, 2, -1); },
                   {"[terra::avg_pool2d]", "padding (-1, -1)"});
  tt::expect_error(
      [&] {
        terra::avg_pool2d(x, {2, 3}, {}, {1, 2});
      },
      {"[terra::avg_pool2d]", "padding (1, 2)", "(2, 3)"});
  tt::expect_error(
      [&] {
        terra::avg_pool2d(ones({1, 1, 4, 4}, {.dtype = DType::Int64}), 2);
      },
      {"[terra::avg_pool2d]", "floating", "int64"});
  tt::expect_error(
      [&] {
        terra::avg_pool2d(ones({2, 2, 2}), 3);
      },
      {"[terra::avg_pool2d]", "too small"});
  tt::expect_error(
      [&] {
        terra::adaptive_avg_pool2d(x, {0, 2});
      },
      {"[terra::adaptive_avg_pool2d]", "output size", "(0, 2)"});
  tt::expect_error([&] { terra::adaptive_avg_pool2d(ones({4}), 2); },
                   {"[terra::adaptive_avg_pool2d]", "[4]"});
  tt::expect_error(
      [&] {
        terra::adaptive_avg_pool2d(ones({2, 2, 2}, {.dtype = DType::Int32}), 1);
      },
      {"[terra::adaptive_avg_pool2d]", "floating", "int32"});
}

}  // namespace
