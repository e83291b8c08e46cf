// vjps of matmul (every rank combination, broadcast batches) and linear.
#include "op_test.hpp"

namespace tr = terra;
using tr::DType;
using tr::Shape;
using tr::Tensor;

namespace {
Tensor rnd(const Shape& s, uint32_t seed) { return tt::random(s, DType::Float64, seed); }
void check(const std::function<Tensor(const std::vector<Tensor>&)>& f, const std::vector<Tensor>& in,
           const std::string& what) {
  std::string err = tr::autograd::gradcheck(f, in);
  EXPECT_TRUE(err.empty()) << what << ": " << err;
}
}  // namespace

TEST(VjpLinalg, MatmulAllRanks) {
  auto mm = [](auto& v) { return tr::matmul(v[0], v[1]); };
  const std::vector<std::pair<Shape, Shape>> cases = {
      {{3}, {3}}, {{3}, {3, 4}}, {{2, 3}, {3}}, {{2, 3}, {3, 4}}, {{5, 2, 3}, {3, 4}},
      {{2, 3}, {5, 3, 4}}, {{2, 1, 2, 3}, {4, 3, 2}}, {{3}, {2, 3, 4}}, {{2, 2, 3}, {3}}};
  for (auto& [sa, sb] : cases)
    check(mm, {rnd(sa, 1), rnd(sb, 2)}, tr::shape_str(sa) + " @ " + tr::shape_str(sb));
  check([](auto& v) { return tr::matmul(v[0].t(), v[1].transpose(0, 1)); }, {rnd({3, 2}, 3), rnd({4, 3}, 4)},
        "transposed operands");
}

TEST(VjpLinalg, Linear) {
  check([](auto& v) { return tr::linear(v[0], v[1], v[2]); }, {rnd({2, 3, 4}, 1), rnd({5, 4}, 2), rnd({5}, 3)},
        "linear with bias");
  check([](auto& v) { return tr::linear(v[0], v[1]); }, {rnd({4}, 1), rnd({5, 4}, 2)}, "linear 1-D input");
  check([](auto& v) { return tr::linear(v[0].t(), v[1]); }, {rnd({4, 6}, 1), rnd({5, 4}, 2)}, "linear strided");
}
