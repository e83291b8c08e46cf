// The CUDA kernels of cat, the indexing ops (index_select, gather, scatter_add, masked_select,
// one_hot, embedding) and dropout, against the CPU kernels: the same values (exactly, except
// scatter_add's float sums, whose order differs), over dims, dtypes and strided device inputs;
// the same dropout mask bit for bit for the same generator state; the same error messages.
#include <random>

#include "cuda/cuda_test.hpp"

namespace {

using terra::DType;
using terra::Shape;
using terra::Tensor;
using tt::kCuda;



// The device result equals the CPU's: same shape, dtype, device and values.
void expect_same(const Tensor& gpu, const Tensor& cpu, const std::string& what) {
  EXPECT_EQ(gpu.device(), kCuda) << what;
  EXPECT_EQ(gpu.dtype(), cpu.dtype()) << what;
  ASSERT_EQ(gpu.shape(), cpu.shape()) << what;
  EXPECT_EQ(tt::f64(gpu), tt::f64(cpu)) << what;
}

// The message of the terra::Error that f throws ("no error" when none).
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const terra::Error& e) {
    return e.what();
  }
  return "no error";
}

const DType kAll[] = {DType::Float32, DType::Float64, DType::Float16, DType::BFloat16,
                      DType::Int32,   DType::Int64,   DType::Bool};

}  // namespace

// ---- cat ----
TEST(CudaIndex, CatDimsLayoutsAndPromotion) {
  TERRA_REQUIRE_GPU();
  Tensor a = tt::random({3, 4, 5}, DType::Float32, 1);
  for (int64_t d : {0, 1, 2, -1, -3}) {
    Shape sb = a.shape();
    sb[size_t(d < 0 ? d + 3 : d)] = 2;
    Tensor b = tt::random(sb, DType::Float32, 2);
    Tensor cpu = terra::cat({a, b, a}, d);
    for (const Tensor& ad : tt::device_layouts(a))
      for (const Tensor& bd : tt::device_layouts(b))
        expect_same(terra::cat({ad, bd, ad}, d), cpu, "cat dim " + std::to_string(d));
  }
  // Promotion and conversion exactly as the CPU's copy: every dtype pair.
  for (DType x : kAll)
    for (DType y : kAll) {
      Tensor p = tt::random({2, 3}, x, 3), q = tt::random({2, 5}, y, 4);
      expect_same(terra::cat({p.to(kCuda), q.to(kCuda)}, 1), terra::cat({p, q}, 1),
                  std::string("cat ") + terra::dtype_name(x) + " " + terra::dtype_name(y));
    }
}

TEST(CudaIndex, CatManyInputsBroadcastViewsAndEmpty) {
  TERRA_REQUIRE_GPU();
  std::vector<Tensor> cpu, gpu;
  for (int i = 0; i < 9; ++i) {
    cpu.push_back(tt::random({i % 3, 6}, DType::Float16, uint32_t(10 + i)));  // sizes 0, 1, 2
    gpu.push_back(cpu.back().to(kCuda));
  }
  expect_same(terra::cat(gpu, 0), terra::cat(cpu, 0), "cat of 9, some empty");
  Tensor row = tt::random({1, 6}, DType::Float32, 20);  // expanded: stride 0 on the device
  Tensor e = row.to(kCuda).expand({4, 6});
  expect_same(terra::cat({e, cpu[2].to(DType::Float32).to(kCuda)}, 0),
              terra::cat({row.expand({4, 6}), cpu[2].to(DType::Float32)}, 0), "expanded input");
  Tensor z = terra::zeros({0, 6});
  expect_same(terra::cat({z.to(kCuda), z.to(kCuda)}, 0), terra::cat({z, z}, 0), "all empty");
}

// ---- index_select, embedding ----
TEST(CudaIndex, IndexSelectDimsDtypesLayouts) {
  TERRA_REQUIRE_GPU();
  for (DType dt : kAll) {
    Tensor x = tt::random({5, 6, 7}, dt, 30);
    for (int64_t d : {0, 1, 2, -1, -2})
      for (DType it : {DType::Int64, DType::Int32}) {
        int64_t n = x.shape()[size_t(d < 0 ? d + 3 : d)];
        Tensor idx = tt::random_index({9}, n, uint32_t(31 + d), it);
        Tensor cpu = terra::index_select(x, d, idx);
        for (const Tensor& xd : tt::device_layouts(x))
          for (const Tensor& id : tt::device_layouts(idx))
            expect_same(
                terra::index_select(xd, d, id), cpu,
                std::string("index_select ") + terra::dtype_name(dt) + " dim " + std::to_string(d));
      }
  }
}

TEST(CudaIndex, IndexSelectScalarsEmptyAndEmbedding) {
  TERRA_REQUIRE_GPU();
  Tensor s = terra::full({}, 2.5);
  Tensor i0 = tt::ints({0}, {});
  expect_same(terra::index_select(s.to(kCuda), 0, i0.to(kCuda)), terra::index_select(s, 0, i0),
              "0-d input, 0-d index");
  Tensor x = tt::random({4, 3}, DType::Float32, 40);
  Tensor none = tt::ints({}, {0});
  expect_same(terra::index_select(x.to(kCuda), 1, none.to(kCuda)), terra::index_select(x, 1, none),
              "empty index");
  Tensor w = tt::random({10, 4}, DType::Float32, 41);
  Tensor tok = tt::random_index({2, 3}, 10, 42);
  expect_same(terra::embedding(w.to(kCuda), tok.to(kCuda)), terra::embedding(w, tok), "embedding");
  Tensor big = tt::random({1000, 64}, DType::BFloat16, 43);
  Tensor many = tt::random_index({4096}, 1000, 44, DType::Int32);
  expect_same(terra::embedding(big.to(kCuda), many.to(kCuda)), terra::embedding(big, many),
              "large embedding");
}

// ---- gather ----
TEST(CudaIndex, GatherDimsDtypesLayouts) {
  TERRA_REQUIRE_GPU();
  for (DType dt : kAll) {
    Tensor x = tt::random({4, 5, 6}, dt, 50);
    for (int64_t d : {0, 1, 2, -1, -3})
      for (DType it : {DType::Int64, DType::Int32}) {
        int64_t n = x.shape()[size_t(d < 0 ? d + 3 : d)];
        Shape is{3, 4, 5};
        is[size_t(d < 0 ? d + 3 : d)] = 7;  // longer than x along d: indices repeat
        Tensor idx = tt::random_index(is, n, uint32_t(51 + d), it);
        Tensor cpu = terra::gather(x, d, idx);
        for (const Tensor& xd : tt::device_layouts(x))
          for (const Tensor& id : tt::device_layouts(idx))
            expect_same(
                terra::gather(xd, d, id), cpu,
                std::string("gather ") + terra::dtype_name(dt) + " dim " + std::to_string(d));
      }
  }
  Tensor x = tt::random({3, 4}, DType::Float32, 52);
  Tensor e = tt::ints({}, {0, 4});
  expect_same(terra::gather(x.to(kCuda), 0, e.to(kCuda)), terra::gather(x, 0, e), "empty index");
}

// ---- scatter_add ----
TEST(CudaIndex, ScatterAddDimsDtypesLayouts) {
  TERRA_REQUIRE_GPU();
  for (DType dt : kAll) {
    Tensor x = tt::random({5, 6}, dt, 60);
    for (int64_t d : {0, 1, -1, -2}) {
      int64_t dd = d < 0 ? d + 2 : d;
      Shape is{4, 5}, ss{4, 6};
      is[size_t(dd)] = 12;  // many more contributions than slots: atomics collide
      ss[size_t(dd)] = 13;
      Tensor idx = tt::random_index(is, x.shape()[size_t(dd)], uint32_t(61 + d));
      Tensor src = tt::random(ss, dt, uint32_t(62 + d));
      Tensor cpu = terra::scatter_add(x, d, idx, src);
      std::string what =
          std::string("scatter_add ") + terra::dtype_name(dt) + " dim " + std::to_string(d);
      for (const Tensor& xd : tt::device_layouts(x))
        for (const Tensor& sd : tt::device_layouts(src)) {
          Tensor gpu = terra::scatter_add(xd, d, idx.to(DType::Int32).to(kCuda), sd);
          EXPECT_EQ(gpu.dtype(), dt) << what;
          if (terra::is_floating(dt))  // the order of the sums differs: close, not equal
            tt::expect_close(gpu, cpu.shape(), tt::f64(cpu), tt::rtol_of(dt),
                             dt == DType::Float64 ? 1e-12 : 4 * tt::rtol_of(dt), what);
          else
            expect_same(gpu, cpu, what);
        }
    }
  }
  Tensor x = tt::random({3, 4}, DType::Float32, 63);
  Tensor e = tt::ints({}, {0, 4});
  Tensor src = tt::random({2, 4}, DType::Float32, 64);
  expect_same(terra::scatter_add(x.to(kCuda), 0, e.to(kCuda), src.to(kCuda)),
              terra::scatter_add(x, 0, e, src), "empty index: x itself");
}

// ---- masked_select ----
TEST(CudaIndex, MaskedSelectBroadcastDtypesLayouts) {
  TERRA_REQUIRE_GPU();
  for (DType dt : kAll) {
    Tensor x = tt::random({4, 6}, dt, 70);
    for (Shape ms : {Shape{4, 6}, Shape{6}, Shape{4, 1}, Shape{}}) {
      Tensor mask = tt::random(ms, DType::Bool, 71);
      Tensor cpu = terra::masked_select(x, mask);
      for (const Tensor& xd : tt::device_layouts(x))
        expect_same(terra::masked_select(xd, mask.to(kCuda)), cpu,
                    std::string("masked_select ") + terra::dtype_name(dt));
    }
  }
  Tensor x = tt::random({3, 5}, DType::Float32, 72);
  Tensor big = tt::random({300, 1000}, DType::Float32, 73);
  Tensor bm = tt::random({300, 1000}, DType::Bool, 74);  // a scan over several CUB tiles
  expect_same(terra::masked_select(big.to(kCuda), bm.to(kCuda)), terra::masked_select(big, bm),
              "large");
  Tensor off = terra::zeros({3, 5}, {.dtype = DType::Bool});
  expect_same(terra::masked_select(x.to(kCuda), off.to(kCuda)), terra::masked_select(x, off),
              "nothing selected");
  Tensor z = terra::zeros({0, 5});
  Tensor zm = terra::zeros({0, 5}, {.dtype = DType::Bool});
  expect_same(terra::masked_select(z.to(kCuda), zm.to(kCuda)), terra::masked_select(z, zm),
              "empty");
}

// ---- one_hot ----
TEST(CudaIndex, OneHotShapesAndLayouts) {
  TERRA_REQUIRE_GPU();
  for (DType it : {DType::Int64, DType::Int32}) {
    Tensor idx = tt::random_index({3, 4}, 6, 80, it);
    for (int64_t nc : {int64_t(-1), int64_t(6), int64_t(9)})
      for (const Tensor& id : tt::device_layouts(idx))
        expect_same(terra::one_hot(id, nc), terra::one_hot(idx, nc),
                    "one_hot num_classes " + std::to_string(nc));
  }
  Tensor e = tt::ints({}, {0});
  expect_same(terra::one_hot(e.to(kCuda), 3), terra::one_hot(e, 3), "empty index");
  Tensor s = tt::ints({2}, {});
  expect_same(terra::one_hot(s.to(kCuda), 4), terra::one_hot(s, 4), "0-d index");
}

// ---- dropout ----
TEST(CudaIndex, DropoutMaskIsTheCpusBitForBit) {
  TERRA_REQUIRE_GPU();
  for (DType dt : {DType::Float32, DType::Float64, DType::Float16, DType::BFloat16})
    for (double p : {0.0, 0.1, 0.5, 0.9, 1.0}) {
      Tensor x = tt::random({123, 457}, dt, 90);  // several grid-stride rounds' worth
      std::string what =
          std::string("dropout ") + terra::dtype_name(dt) + " p " + std::to_string(p);
      terra::thread_manual_seed(2024);
      auto [y1, m1] = terra::native_dropout(x, p);
      auto [y2, m2] = terra::native_dropout(x, p);  // a nonzero offset
      for (const Tensor& xd : tt::device_layouts(x)) {
        terra::thread_manual_seed(2024);
        auto [g1, n1] = terra::native_dropout(xd, p);
        auto [g2, n2] = terra::native_dropout(xd, p);
        EXPECT_EQ(n1.device(), kCuda) << what;
        EXPECT_EQ(n1.to_vector<bool>(), m1.to_vector<bool>()) << what;
        EXPECT_EQ(n2.to_vector<bool>(), m2.to_vector<bool>()) << what << " (second call)";
        expect_same(g1, y1, what);
        expect_same(g2, y2, what + " (second call)");
      }
    }
}

TEST(CudaIndex, DropoutEvalAndEmpty) {
  TERRA_REQUIRE_GPU();
  Tensor x = tt::random({7, 9}, DType::Float16, 91);
  auto [y, m] = terra::native_dropout(x, 0.5, /*train=*/false);
  auto [g, n] = terra::native_dropout(x.to(kCuda).t(), 0.5, /*train=*/false);
  auto [yt, mt] = terra::native_dropout(x.t(), 0.5, /*train=*/false);
  expect_same(g, yt, "eval: the identity");
  EXPECT_EQ(n.to_vector<bool>(), mt.to_vector<bool>());
  Tensor z = terra::zeros({0, 3}).to(kCuda);
  EXPECT_EQ(terra::dropout(z, 0.5).shape(), (Shape{0, 3}));
}

// ---- errors: the CPU kernels' messages, and the device stays usable ----
TEST(CudaIndex, OutOfRangeIndicesGiveTheCpuMessages) {
  TERRA_REQUIRE_GPU();
  Tensor x = tt::random({4, 3}, DType::Float32, 100);
  Tensor xd = x.to(kCuda);
  // Several bad values: the first in row-major order is the one named.
  Tensor bad = tt::ints({0, 9, -3, 7});
  Tensor neg = tt::ints({1, -1}, {-1}, DType::Int32);
  auto same = [](const std::function<void()>& cpu, const std::function<void()>& gpu,
                 std::initializer_list<const char*> frags) {
    std::string c = error_of(cpu), g = error_of(gpu);
    EXPECT_EQ(g, c);
    for (const char* f : frags) EXPECT_NE(g.find(f), std::string::npos) << g;
  };
  same([&] { terra::index_select(x, 0, bad); }, [&] { terra::index_select(xd, 0, bad.to(kCuda)); },
       {"index 9", "[0, 4)"});
  same([&] { terra::index_select(x, 1, neg); }, [&] { terra::index_select(xd, 1, neg.to(kCuda)); },
       {"index -1", "[0, 3)"});
  Tensor empty_rows = terra::zeros({0, 3});  // an empty result still checks its index
  same([&] { terra::index_select(empty_rows, 1, tt::ints({5})); },
       [&] { terra::index_select(empty_rows.to(kCuda), 1, tt::ints({5}).to(kCuda)); },
       {"index 5", "dim 1"});
  Tensor gi = tt::ints({0, 1, 2, 1, 3, 8}, {2, 3});
  same([&] { terra::gather(x, 0, gi); }, [&] { terra::gather(xd, 0, gi.to(kCuda)); },
       {"index 8", "[0, 4)"});
  Tensor si = tt::ints({2, -2, 5}, {1, 3}, DType::Int32);
  Tensor src = tt::random({1, 3}, DType::Float16, 101);
  same([&] { terra::scatter_add(x.to(DType::Float16), 0, si, src); },
       [&] { terra::scatter_add(x.to(DType::Float16).to(kCuda), 0, si.to(kCuda), src.to(kCuda)); },
       {"index -2"});
  Tensor oi = tt::ints({1, 3, 0, 4}, {2, 2});
  same([&] { terra::one_hot(oi, 3); }, [&] { terra::one_hot(oi.to(kCuda), 3); },
       {"class value 3", "num_classes 3"});
  // No sticky CUDA error: the next op on the device works.
  expect_same(terra::index_select(xd, 0, tt::ints({3, 0}).to(kCuda)),
              terra::index_select(x, 0, tt::ints({3, 0})), "after the errors");
}
