// Views and movement ops: views share storage (no copies), reshape copies only when it must,
// cat/stack/split/chunk, and every error path.
#include "op_test.hpp"

namespace tr = terra;
using tr::DType;
using tr::Shape;
using tr::Tensor;

TERRA_COVERS("view", "permute", "slice", "select", "expand", "unsqueeze", "squeeze", "cat");

namespace {
std::vector<float> iota(int n) {
  std::vector<float> v(n);
  for (int i = 0; i < n; ++i) v[i] = float(i);
  return v;
}
bool shares(const Tensor& a, const Tensor& b) { return a.storage() == b.storage(); }
}  // namespace

TEST(Views, ViewAndReshape) {
  Tensor x = tr::tensor(iota(24), {2, 3, 4});
  Tensor v = x.view({6, -1});
  EXPECT_EQ(v.shape(), Shape({6, 4}));
  EXPECT_TRUE(shares(v, x));
  EXPECT_EQ(v.to_vector<float>(), iota(24));
  // A transposed tensor cannot be viewed flat, but reshape copies.
  Tensor t = x.transpose(0, 2);
  EXPECT_EQ(t.shape(), Shape({4, 3, 2}));
  tt::expect_error([&] { t.view({24}); }, {"[terra::view]", "[4, 3, 2]", "reshape"});
  Tensor r = t.reshape({24});
  EXPECT_FALSE(shares(r, x));
  EXPECT_EQ(r.to_vector<float>()[1], 12.0f);
  // Splitting a dim of a permuted tensor is still a view.
  Tensor p = x.permute({2, 0, 1});  // [4, 2, 3]
  Tensor pv = p.view({4, 2, 3, 1});
  EXPECT_TRUE(shares(pv, x));
  Tensor sub = x.slice(2, 0, 4, 2).reshape({2, 3, 2});
  EXPECT_TRUE(shares(sub, x));
  EXPECT_EQ(sub.to_vector<float>(), (std::vector<float>{0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22}));
  EXPECT_EQ(tr::zeros({0, 3}).view({3, 0}).shape(), Shape({3, 0}));
  EXPECT_EQ(tr::full({}, 5).view({1, 1}).to_vector<float>(), (std::vector<float>{5}));
  tt::expect_error([&] { x.view({5, -1}); }, {"[terra::view]", "24"});
  tt::expect_error([&] { x.view({-1, -1}); }, {"[terra::view]", "one dimension"});
  tt::expect_error([&] { x.reshape({7}); }, {"[terra::reshape]", "[7]", "24"});
}

TEST(Views, PermuteTransposeT) {
  Tensor x = tr::tensor(iota(6), {2, 3});
  Tensor t = x.t();
  EXPECT_TRUE(shares(t, x));
  EXPECT_EQ(t.strides(), tr::Strides({1, 3}));
  EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{0, 3, 1, 4, 2, 5}));
  EXPECT_FALSE(t.is_contiguous());
  EXPECT_TRUE(t.contiguous().is_contiguous());
  Tensor y = tr::tensor(iota(24), {2, 3, 4}).permute({1, 2, 0});
  EXPECT_EQ(y.shape(), Shape({3, 4, 2}));
  EXPECT_EQ(y.to_vector<float>()[1], 12.0f);
  tt::expect_error([&] { x.permute({0}); }, {"[terra::permute]", "rank 2"});
  tt::expect_error([&] { x.permute({0, 0}); }, {"[terra::permute]", "repeated"});
  tt::expect_error([&] { x.transpose(0, 2); }, {"[terra::transpose]", "dim 2"});
  tt::expect_error([&] { tr::ones({2, 2, 2}).t(); }, {"[terra::t]"});
}

TEST(Views, SliceNarrowSelect) {
  Tensor x = tr::tensor(iota(20), {4, 5});
  Tensor s = x.slice(1, 1, 5, 2);  // columns 1 and 3
  EXPECT_EQ(s.shape(), Shape({4, 2}));
  EXPECT_EQ(s.to_vector<float>(), (std::vector<float>{1, 3, 6, 8, 11, 13, 16, 18}));
  EXPECT_EQ(x.slice(0, -2, 100).shape(), Shape({2, 5}));  // clamped like Python
  EXPECT_EQ(x.slice(0, 3, 1).shape(), Shape({0, 5}));
  EXPECT_EQ(x.narrow(1, 2, 2).to_vector<float>(),
            (std::vector<float>{2, 3, 7, 8, 12, 13, 17, 18}));
  EXPECT_EQ(x.select(0, -1).to_vector<float>(), (std::vector<float>{15, 16, 17, 18, 19}));
  EXPECT_EQ(x[1][2].item<float>(), 7.0f);
  EXPECT_EQ(x.select(1, 4).dim(), 1);
  EXPECT_TRUE(shares(x.select(1, 4), x));
  tt::expect_error([&] { x.select(0, 4); }, {"[terra::select]", "index 4", "size 4"});
  tt::expect_error([&] { x.narrow(1, 3, 3); }, {"[terra::narrow]", "size 5"});
  tt::expect_error([&] { x.slice(1, 0, 5, 0); }, {"[terra::slice]", "step"});
  tt::expect_error([&] { tr::full({}, 1).select(0, 0); }, {"[terra::select]", "0-d"});
}

TEST(Views, ExpandUnsqueezeSqueezeFlatten) {
  Tensor x = tr::tensor<float>({1, 2, 3}, {3, 1});
  Tensor e = x.expand({2, 3, 4});
  EXPECT_EQ(e.shape(), Shape({2, 3, 4}));
  EXPECT_EQ(e.strides(), tr::Strides({0, 1, 0}));
  EXPECT_EQ(e.sum().item<float>(), 48.0f);
  EXPECT_EQ(x.expand({-1, 2}).to_vector<float>(), (std::vector<float>{1, 1, 2, 2, 3, 3}));
  tt::expect_error([&] { x.expand({2, 4}); }, {"[terra::expand]", "[3, 1]", "[2, 4]"});
  tt::expect_error([&] { x.expand({3}); }, {"[terra::expand]", "fewer"});
  Tensor u = x.unsqueeze(0);
  EXPECT_EQ(u.shape(), Shape({1, 3, 1}));
  EXPECT_EQ(x.unsqueeze(-1).shape(), Shape({3, 1, 1}));
  EXPECT_EQ(u.squeeze().shape(), Shape({3}));
  EXPECT_EQ(u.squeeze(0).shape(), Shape({3, 1}));
  EXPECT_EQ(u.squeeze(1).shape(), Shape({1, 3, 1}));  // size 3: unchanged
  EXPECT_EQ(tr::full({}, 2).unsqueeze(0).shape(), Shape({1}));
  EXPECT_EQ(tr::full({}, 2).squeeze().shape(), Shape({}));
  tt::expect_error([&] { x.unsqueeze(3); }, {"[terra::unsqueeze]", "dim 3"});
  Tensor f = tr::tensor(iota(24), {2, 3, 4});
  EXPECT_EQ(f.flatten().shape(), Shape({24}));
  EXPECT_EQ(f.flatten(1).shape(), Shape({2, 12}));
  EXPECT_EQ(f.flatten(0, 1).shape(), Shape({6, 4}));
  EXPECT_EQ(f.transpose(1, 2).flatten(1).to_vector<float>()[1], 4.0f);
  EXPECT_EQ(tr::full({}, 3).flatten().shape(), Shape({1}));
}

TEST(Views, WritesThroughViewsReachTheBase) {
  Tensor x = tr::zeros({3, 4});
  x.slice(1, 1, 3).fill_(1);
  x.select(0, 2).copy_(tr::tensor<float>({5, 6, 7, 8}));
  EXPECT_EQ(x.to_vector<float>(), (std::vector<float>{0, 1, 1, 0, 0, 1, 1, 0, 5, 6, 7, 8}));
}

TEST(Movement, CatStackSplitChunk) {
  Tensor a = tr::tensor(iota(6), {2, 3});
  Tensor b = tr::tensor<double>({10, 11, 12}, {1, 3});
  Tensor c = tr::cat({a, b}, 0);
  EXPECT_EQ(c.shape(), Shape({3, 3}));
  EXPECT_EQ(c.dtype(), DType::Float64);
  EXPECT_EQ(c.to_vector<double>(), (std::vector<double>{0, 1, 2, 3, 4, 5, 10, 11, 12}));
  Tensor d = tr::cat({a.t(), a.t()}, 1);  // strided inputs
  EXPECT_EQ(d.shape(), Shape({3, 4}));
  EXPECT_EQ(d.to_vector<float>(), (std::vector<float>{0, 3, 0, 3, 1, 4, 1, 4, 2, 5, 2, 5}));
  EXPECT_EQ(tr::cat({a, tr::zeros({0, 3})}, 0).shape(), Shape({2, 3}));
  EXPECT_EQ(tr::cat({a, a}, -1).shape(), Shape({2, 6}));
  Tensor s = tr::stack({a, a, a}, 1);
  EXPECT_EQ(s.shape(), Shape({2, 3, 3}));
  EXPECT_EQ(s.select(1, 2).to_vector<float>(), a.to_vector<float>());
  auto parts = tr::tensor(iota(7)).split(3);
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[2].to_vector<float>(), (std::vector<float>{6}));
  auto sized = tr::split(tr::tensor(iota(7)), std::vector<int64_t>{2, 5}, 0);
  EXPECT_EQ(sized[1].shape(), Shape({5}));
  auto ch = a.chunk(2, 1);
  ASSERT_EQ(ch.size(), 2u);
  EXPECT_EQ(ch[0].shape(), Shape({2, 2}));
  EXPECT_EQ(ch[1].to_vector<float>(), (std::vector<float>{2, 5}));
  tt::expect_error([&] { tr::cat({a, tr::ones({2, 2})}, 0); }, {"[terra::cat]", "[2, 2]", "[2, 3]"});
  tt::expect_error([&] { tr::cat({a, tr::ones({3})}, 0); }, {"[terra::cat]", "rank"});
  tt::expect_error([&] { tr::cat({}, 0); }, {"[terra::cat]"});
  tt::expect_error([&] { tr::stack({a, b}, 0); }, {"[terra::stack]", "[1, 3]"});
  tt::expect_error([&] { tr::split(a, std::vector<int64_t>{1, 1}, 1); }, {"[terra::split]", "3"});
  tt::expect_error([&] { a.split(0); }, {"[terra::split]"});
}

TEST(Movement, HostAccess) {
  Tensor x = tr::tensor<int32_t>({1, 2, 3, 4}, {2, 2});
  EXPECT_EQ(x.data<int32_t>()[3], 4);
  EXPECT_EQ(x.t().data_ptr<int32_t>()[1], 2);  // strided pointer access
  tt::expect_error([&] { x.t().data<int32_t>(); }, {"[terra::data]", "contiguous"});
  tt::expect_error([&] { x.data<float>(); }, {"[terra::data]", "float32", "int32"});
  tt::expect_error([&] { x.item<int>(); }, {"[terra::item]", "4 elements"});
  EXPECT_EQ(x.t().to_vector<int64_t>(), (std::vector<int64_t>{1, 3, 2, 4}));
  EXPECT_TRUE(bool(x[0][1] == 2));
  tt::expect_error([&] { (void)bool(x == 2); }, {"[terra::bool]", "ambiguous"});
  tt::expect_error([&] { x.to(tr::Device::cuda()); }, {"[terra::to]", "cuda"});
}

// to_device: the op itself is tested on devices by tests/core/test_device.cpp (a stand-in
// device) and tests/cuda/ (a GPU); a CPU-only program reports the missing backend.
TERRA_COVERS("to_device");
TEST(ToDevice, SameDeviceIsTheTensorItselfAndAMissingBackendIsAClearError) {
  Tensor x = tr::ones({2, 3});
  EXPECT_TRUE(x.to(tr::Device::cpu()).is_same(x));
  tt::expect_error([&] { (void)x.to(tr::Device::cuda()); },
                   {"[terra::to]", "no backend for cuda:0", "terra/cuda.hpp"});
  tt::expect_error([&] { (void)tr::zeros({2}, {.device = tr::Device::cuda()}); },
                   {"no backend for cuda:0"});
}
