// tests/core/test_print.cpp: the printed layout of tensors (io/print.hpp), as exact strings.
#include <gtest/gtest.h>

#include <limits>
#include <sstream>
#include <string>

#include <terra/terra.hpp>

namespace tr = terra;

namespace {

std::string streamed(const tr::Tensor& t) {
  std::ostringstream os;
  os << t;
  return os.str();
}

}  // namespace

TEST(Print, Float2D) {
  EXPECT_EQ(tr::arange(6.0).view({2, 3}).to_string(),
            "tensor([[0.0000, 1.0000, 2.0000],\n"
            "        [3.0000, 4.0000, 5.0000]], shape=[2, 3], dtype=float32)");
}

TEST(Print, StreamMatchesToString) {
  auto t = tr::arange(4.0).view({2, 2});
  EXPECT_EQ(streamed(t), t.to_string());
}

TEST(Print, ColumnsAlignedWithSigns) {
  EXPECT_EQ(tr::tensor<float>({0.5f, -1.25f, 3.0f, 100.0f}).to_string(),
            "tensor([  0.5000,  -1.2500,   3.0000, 100.0000], shape=[4], dtype=float32)");
}

TEST(Print, Int3DSeparatesBlocksWithABlankLine) {
  EXPECT_EQ(tr::arange(24.0).view({2, 3, 4}).to(tr::kInt64).to_string(),
            "tensor([[[ 0,  1,  2,  3],\n"
            "         [ 4,  5,  6,  7],\n"
            "         [ 8,  9, 10, 11]],\n"
            "\n"
            "        [[12, 13, 14, 15],\n"
            "         [16, 17, 18, 19],\n"
            "         [20, 21, 22, 23]]], shape=[2, 3, 4], dtype=int64)");
}

TEST(Print, NegativeInt32) {
  EXPECT_EQ(tr::tensor<int32_t>({-7, 12, 0}).to_string(),
            "tensor([-7, 12,  0], shape=[3], dtype=int32)");
}

TEST(Print, Bool) {
  EXPECT_EQ(tr::tensor<bool>({true, false, true}).to_string(),
            "tensor([ True, False,  True], shape=[3], dtype=bool)");
}

TEST(Print, ZeroDim) {
  EXPECT_EQ(tr::scalar_tensor(3.5).to_string(), "tensor(3.5000, shape=[], dtype=float64)");
  EXPECT_EQ(tr::scalar_tensor(int64_t{-4}).to_string(), "tensor(-4, shape=[], dtype=int64)");
}

TEST(Print, Empty) {
  EXPECT_EQ(tr::zeros({0, 3}).to_string(), "tensor([], shape=[0, 3], dtype=float32)");
  EXPECT_EQ(tr::zeros({0}, {.dtype = tr::kInt32}).to_string(),
            "tensor([], shape=[0], dtype=int32)");
}

TEST(Print, ScientificWhenMagnitudesSpreadWide) {
  EXPECT_EQ(tr::tensor<double>({1e-5, 1.0, 2e9, -3.0}).to_string(),
            "tensor([ 1.0000e-05,  1.0000e+00,  2.0000e+09, -3.0000e+00], shape=[4], "
            "dtype=float64)");
  // Zeros do not count towards the magnitude range.
  EXPECT_EQ(tr::tensor<float>({0.0f, 0.25f, 2.0f}).to_string(),
            "tensor([0.0000, 0.2500, 2.0000], shape=[3], dtype=float32)");
}

TEST(Print, NanAndInf) {
  float nan = std::numeric_limits<float>::quiet_NaN();
  float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(tr::tensor<float>({nan, inf, -inf, 1.5f}).to_string(),
            "tensor([   nan,    inf,   -inf, 1.5000], shape=[4], dtype=float32)");
}

TEST(Print, ReducedFloats) {
  EXPECT_EQ(tr::tensor<float>({0.5f, -2.0f}).to(tr::kFloat16).to_string(),
            "tensor([ 0.5000, -2.0000], shape=[2], dtype=float16)");
  EXPECT_EQ(tr::tensor<float>({0.5f, -2.0f}).to(tr::kBFloat16).to_string(),
            "tensor([ 0.5000, -2.0000], shape=[2], dtype=bfloat16)");
}

TEST(Print, NonContiguousViews) {
  auto x = tr::arange(6.0).view({2, 3});
  EXPECT_EQ(x.t().to_string(),
            "tensor([[0.0000, 3.0000],\n"
            "        [1.0000, 4.0000],\n"
            "        [2.0000, 5.0000]], shape=[3, 2], dtype=float32)");
  EXPECT_EQ(tr::arange(10.0).to(tr::kInt64).slice(0, 1, 10, 3).to_string(),
            "tensor([1, 4, 7], shape=[3], dtype=int64)");
  EXPECT_EQ(tr::tensor<int32_t>({1, 2}).unsqueeze(1).expand({2, 3}).to_string(),
            "tensor([[1, 1, 1],\n"
            "        [2, 2, 2]], shape=[2, 3], dtype=int32)");
  EXPECT_EQ(x.select(1, 2).to_string(), "tensor([2.0000, 5.0000], shape=[2], dtype=float32)");
}

TEST(Print, LongRowsWrapAt80Columns) {
  EXPECT_EQ(tr::arange(30.0).to(tr::kInt64).to_string(),
            "tensor([ 0,  1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11, 12, 13, 14, 15, 16, 17,\n"
            "        18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29], shape=[30], dtype=int64)");
}

TEST(Print, LargeTensorsAreSummarized) {
  EXPECT_EQ(tr::arange(1200.0).view({40, 30}).to(tr::kInt32).to_string(),
            "tensor([[   0,    1,    2, ...,   27,   28,   29],\n"
            "        [  30,   31,   32, ...,   57,   58,   59],\n"
            "        [  60,   61,   62, ...,   87,   88,   89],\n"
            "        ...,\n"
            "        [1110, 1111, 1112, ..., 1137, 1138, 1139],\n"
            "        [1140, 1141, 1142, ..., 1167, 1168, 1169],\n"
            "        [1170, 1171, 1172, ..., 1197, 1198, 1199]], shape=[40, 30], dtype=int32)");
  EXPECT_EQ(tr::arange(1001.0).to(tr::kInt64).to_string(),
            "tensor([   0,    1,    2, ...,  998,  999, 1000], shape=[1001], dtype=int64)");
}

TEST(Print, SummaryKeepsShortDims) {
  // Dims of at most 6 entries are shown whole even in a summarized tensor.
  std::string s = tr::zeros({2, 600}, {.dtype = tr::kInt64}).to_string();
  EXPECT_EQ(s,
            "tensor([[0, 0, 0, ..., 0, 0, 0],\n"
            "        [0, 0, 0, ..., 0, 0, 0]], shape=[2, 600], dtype=int64)");
}

TEST(Print, ThresholdIsOneThousandElements) {
  std::string s = tr::zeros({1000}, {.dtype = tr::kBool}).to_string();
  EXPECT_EQ(s.find("..."), std::string::npos);
  EXPECT_NE(tr::zeros({1001}, {.dtype = tr::kBool}).to_string().find("..."), std::string::npos);
}

TEST(Print, UndefinedTensor) { EXPECT_EQ(tr::Tensor().to_string(), "tensor(undefined)"); }
