// Autograd of the reductions, cumsum/sort/topk and the index ops: every vjp against finite
// differences (float64; several shapes, dims, keepdim, non-contiguous inputs), hand values for
// ties, zeros and repeated indices, and double backward.
#include <optional>

#include "op_test.hpp"

namespace tr = terra;
namespace ag = terra::autograd;
using tr::Dims;
using tr::DType;
using tr::Shape;
using tr::Tensor;
using Fn = std::function<Tensor(const std::vector<Tensor>&)>;
using Unary = std::function<Tensor(const Tensor&)>;

namespace {
using tt::rnd;
// gradcheck, plus a check that every analytic gradient is finite (a NaN would compare as a
// match against finite differences).
void expect_gradcheck(const Fn& f, const std::vector<Tensor>& in, const std::string& what) {
  std::string err = ag::gradcheck(f, in);
  EXPECT_TRUE(err.empty()) << what << ": " << err;
  std::vector<Tensor> xs;
  for (const Tensor& x : in) xs.push_back(x.detach().clone().set_requires_grad(true));
  auto gs = ag::grad({f(xs).sum()}, xs, {}, std::nullopt, false, /*allow_unused=*/true);
  for (const Tensor& g : gs) {
    if (!g.defined()) continue;
    for (double v : g.to_vector<double>()) ASSERT_TRUE(std::isfinite(v)) << what << ": " << v;
  }
}

// Layouts of the first input, as the op sees it: 0 contiguous, 1 a transposed view, 2 every
// other element of a wider tensor. Returns the leaf to create and how f views it.
struct Layout {
  Tensor leaf;
  Unary view;
};
Layout layout(const Shape& s, int kind, uint32_t seed, double lo = -2, double hi = 2) {
  int64_t r = int64_t(s.size());
  if (kind == 1 && r >= 2) {
    Shape t = s;
    std::swap(t[0], t[r - 1]);
    return {rnd(t, seed, lo, hi), [r](const Tensor& x) { return x.transpose(0, r - 1); }};
  }
  if (kind == 2 && r >= 1) {
    Shape w = s;
    w.back() *= 2;
    return {rnd(w, seed, lo, hi),
            [r, n = w.back()](const Tensor& x) { return x.slice(r - 1, 0, n, 2); }};
  }
  return {rnd(s, seed, lo, hi), [](const Tensor& x) { return x; }};
}
std::string describe(const Shape& s, const Dims& d, bool keepdim, int kind) {
  std::ostringstream os;
  os << " shape " << s << " dims " << Shape(d.begin(), d.end()) << " keepdim " << keepdim
     << " layout " << kind;
  return os.str();
}

// Gradcheck op(view(x)) over each layout.
void check_layouts(const Shape& s, const Unary& op, const std::string& what, double lo = -2,
                   double hi = 2) {
  for (int kind = 0; kind < 3; ++kind) {
    if ((kind == 1 && s.size() < 2) || (kind == 2 && s.empty())) continue;
    Layout l = layout(s, kind, 11 + kind, lo, hi);
    expect_gradcheck([&](auto& v) { return op(l.view(v[0])); }, {l.leaf},
                     what + " layout " + std::to_string(kind));
  }
}

// x -> d/dx sum(sin(f(x)) * w), with the graph kept, so gradcheck of it checks second
// derivatives through f's vjp.
Fn first_gradient(const Unary& f, uint32_t seed = 77) {
  return [f, seed](const std::vector<Tensor>& v) {
    tr::EnableGradGuard on;
    Tensor x = v[0].requires_grad() ? v[0] : v[0].detach().clone().set_requires_grad(true);
    Tensor y = f(x);
    Tensor w = rnd(y.shape(), seed);
    return ag::grad({(tr::sin(y) * w).sum()}, {x}, {}, std::nullopt, /*create_graph=*/true)[0];
  };
}

std::vector<double> grad_of(const Unary& f, const Tensor& x0) {
  Tensor x = x0.detach().clone().set_requires_grad(true);
  f(x).sum().backward();
  return x.grad().to_vector<double>();
}

const std::vector<std::pair<Shape, Dims>> kReduceCases = {
    {{3, 4, 5}, {}}, {{3, 4, 5}, {1}}, {{3, 4, 5}, {-1, 0}}, {{4, 5}, {-2}}, {{5}, {0}}, {{}, {}}};
}  // namespace

TEST(VjpReduce, ReductionsMatchFiniteDifferences) {
  for (auto& [s, dims] : kReduceCases) {
    for (bool keep : {false, true}) {
      for (int kind = 0; kind < 3; ++kind) {
        if ((kind == 1 && s.size() < 2) || (kind == 2 && s.empty())) continue;
        Layout l = layout(s, kind, 3 + kind, -1.5, 1.5);
        Dims d = dims;
        std::string at = describe(s, dims, keep, kind);
        auto run = [&](const char* name, std::function<Tensor(const Tensor&)> op) {
          expect_gradcheck([&](auto& v) { return op(l.view(v[0])); }, {l.leaf}, name + at);
        };
        run("sum", [&](const Tensor& x) { return tr::sum(x, d, keep); });
        run("mean", [&](const Tensor& x) { return tr::mean(x, d, keep); });
        run("prod", [&](const Tensor& x) { return tr::prod(x, d, keep); });
        run("amax", [&](const Tensor& x) { return tr::amax(x, d, keep); });
        run("amin", [&](const Tensor& x) { return tr::amin(x, d, keep); });
        run("var0", [&](const Tensor& x) { return tr::var(x, d, 0, keep); });
        if (!s.empty()) run("var1", [&](const Tensor& x) { return tr::var(x, d, 1, keep); });
        if (!s.empty()) run("std", [&](const Tensor& x) { return tr::std(x, d, 1, keep); });
        run("logsumexp", [&](const Tensor& x) { return tr::logsumexp(x, d, keep); });
      }
    }
  }
}

TEST(VjpReduce, MaxMinAlongDim) {
  for (Shape s : {Shape{3, 4, 5}, Shape{4, 5}, Shape{5}, Shape{}}) {
    for (int64_t dim : {0, 1, -1}) {
      if (dim >= int64_t(std::max<size_t>(s.size(), 1))) continue;
      for (bool keep : {false, true}) {
        std::string at = describe(s, {dim}, keep, 0);
        check_layouts(
            s, [=](const Tensor& x) { return tr::max(x, dim, keep).first; }, "max" + at);
        check_layouts(
            s, [=](const Tensor& x) { return tr::min(x, dim, keep).first * 2.0; }, "min" + at);
      }
    }
  }
  Tensor x = rnd({3, 4}, 1).set_requires_grad();
  auto [v, i] = tr::max(x, 1);
  EXPECT_TRUE(v.requires_grad());
  EXPECT_FALSE(i.requires_grad());  // int64 indices carry no gradient
}

TEST(VjpReduce, TiesSplitEvenlyForAmaxButNotForMax) {
  Tensor x = tr::tensor<double>({1, 3, 3, 2, 2, 2}, {2, 3});
  auto amax1 = [](const Tensor& t) { return tr::amax(t, {1}); };
  tt::expect_close(tr::tensor(grad_of(amax1, x), {2, 3}), {2, 3},
                   {0, 0.5, 0.5, 1. / 3, 1. / 3, 1. / 3});
  auto amax_all = [](const Tensor& t) { return tr::amax(t); };
  tt::expect_close(tr::tensor(grad_of(amax_all, x), {2, 3}), {2, 3}, {0, 0.5, 0.5, 0, 0, 0});
  auto amin0 = [](const Tensor& t) { return tr::amin(t, {0}, true); };
  tt::expect_close(tr::tensor(grad_of(amin0, x), {2, 3}), {2, 3}, {1, 0, 0, 0, 1, 1});
  Tensor y = tr::tensor<double>({2, 2, 2, 1}, {2, 2});
  auto amin_all = [](const Tensor& t) { return tr::amin(t, {0, 1}); };
  tt::expect_close(tr::tensor(grad_of(amin_all, y), {2, 2}), {2, 2}, {0, 0, 0, 1});
  // max along a dim sends the whole gradient to the index it returns (the first of the ties).
  auto max1 = [](const Tensor& t) { return tr::max(t, 1).first; };
  tt::expect_close(tr::tensor(grad_of(max1, x), {2, 3}), {2, 3}, {0, 1, 0, 1, 0, 0});
  // float32 gives the same split.
  Tensor xf = tr::tensor<float>({5, 5, 1, 5});
  xf.set_requires_grad();
  tr::amax(xf).backward();
  tt::expect_close(xf.grad(), {4}, {1. / 3, 1. / 3, 0, 1. / 3});
}

TEST(VjpReduce, ProdWithZeros) {
  auto p = [](const Tensor& t) { return tr::prod(t); };
  EXPECT_EQ(grad_of(p, tr::tensor<double>({2, 3, 4})), (std::vector<double>{12, 8, 6}));
  EXPECT_EQ(grad_of(p, tr::tensor<double>({2, 0, 3})), (std::vector<double>{0, 6, 0}));
  EXPECT_EQ(grad_of(p, tr::tensor<double>({0, 2, 0})), (std::vector<double>{0, 0, 0}));
  // Per row: no zero, one zero, two zeros.
  Tensor x = tr::tensor<double>({1, 2, 3, 4, 0, 5, 0, 6, 0}, {3, 3});
  auto rows = [](const Tensor& t) { return tr::prod(t, {-1}); };
  EXPECT_EQ(grad_of(rows, x), (std::vector<double>{6, 3, 2, 0, 20, 0, 0, 0, 0}));
  expect_gradcheck([&](auto& v) { return tr::prod(v[0], {1}); }, {x}, "prod rows with zeros");
  expect_gradcheck([&](auto& v) { return tr::prod(v[0].t(), {0}, true); }, {x},
                   "prod cols with zeros");
  expect_gradcheck([&](auto& v) { return tr::prod(v[0]); }, {tr::tensor<double>({1.5, 0, -2, 0.5})},
                   "prod one zero");
  expect_gradcheck(first_gradient([](const Tensor& t) { return tr::prod(t, {1}); }), {x},
                   "prod double backward");
  expect_gradcheck(first_gradient([](const Tensor& t) { return tr::prod(t); }),
                   {tr::tensor<double>({1.5, 0, -2, 0.5})}, "prod double backward, one zero");
  expect_gradcheck(first_gradient([](const Tensor& t) { return tr::prod(t, {0}); }),
                   {tr::tensor<double>({0, 1.5, 0, 0, 0, 2, 0, 0, -3}, {3, 3})},
                   "prod double backward, two and three zeros");
}

TEST(VjpReduce, DoubleBackward) {
  for (auto& [s, dims] : kReduceCases) {
    for (bool keep : {false, true}) {
      Tensor x = rnd(s, 21, -1.5, 1.5);
      Dims d = dims;
      std::string at = describe(s, dims, keep, 0);
      expect_gradcheck(first_gradient([&](const Tensor& t) { return tr::sum(t, d, keep); }), {x},
                       "sum" + at);
      expect_gradcheck(first_gradient([&](const Tensor& t) { return tr::mean(t, d, keep); }), {x},
                       "mean" + at);
      expect_gradcheck(first_gradient([&](const Tensor& t) { return tr::var(t, d, 0, keep); }), {x},
                       "var" + at);
      expect_gradcheck(first_gradient([&](const Tensor& t) { return tr::logsumexp(t, d, keep); }),
                       {x}, "logsumexp" + at);
      expect_gradcheck(first_gradient([&](const Tensor& t) { return tr::prod(t, d, keep); }), {x},
                       "prod" + at);
      expect_gradcheck(first_gradient([&](const Tensor& t) { return tr::amax(t, d, keep); }), {x},
                       "amax" + at);
    }
  }
  Tensor x = rnd({3, 4}, 5);
  expect_gradcheck(first_gradient([](const Tensor& t) { return tr::max(t, -1).first; }), {x},
                   "max");
  expect_gradcheck(first_gradient([](const Tensor& t) { return tr::cumsum(t, 1); }), {x}, "cumsum");
  expect_gradcheck(first_gradient([](const Tensor& t) { return tr::sort(t, 0).first; }), {x},
                   "sort");
  expect_gradcheck(first_gradient([](const Tensor& t) { return tr::topk(t, 2, 1).first; }), {x},
                   "topk");
}

TEST(VjpSort, CumsumSortTopk) {
  auto cs = [](const Tensor& t) { return tr::cumsum(t, 0); };
  EXPECT_EQ(grad_of(cs, tr::tensor<double>({1, 2, 3})), (std::vector<double>{3, 2, 1}));
  for (Shape s : {Shape{3, 4, 5}, Shape{4, 5}, Shape{6}, Shape{}}) {
    for (int64_t dim : {0, 1, -1}) {
      if (dim >= int64_t(std::max<size_t>(s.size(), 1))) continue;
      std::string at = describe(s, {dim}, false, 0);
      check_layouts(
          s, [=](const Tensor& x) { return tr::cumsum(x, dim); }, "cumsum" + at);
      for (bool desc : {false, true})
        check_layouts(
            s, [=](const Tensor& x) { return tr::sort(x, dim, desc).first; },
            "sort desc " + std::to_string(desc) + at);
      int64_t n = s.empty() ? 1 : s[dim < 0 ? s.size() + dim : dim];
      for (int64_t k : {int64_t(1), std::min<int64_t>(3, n)})
        for (bool largest : {true, false})
          for (bool sorted : {true, false})
            check_layouts(
                s, [=](const Tensor& x) { return tr::topk(x, k, dim, largest, sorted).first; },
                "topk k " + std::to_string(k) + at);
    }
  }
  // The sorted values' gradient lands where each value came from.
  Tensor x = tr::tensor<double>({3, 1, 2}).set_requires_grad();
  Tensor w = tr::tensor<double>({10, 20, 30});
  (tr::sort(x).first * w).sum().backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{30, 10, 20}));
  Tensor y = tr::tensor<double>({3, 1, 2, 5}).set_requires_grad();
  (tr::topk(y, 2).first * tr::tensor<double>({7, 9})).sum().backward();
  EXPECT_EQ(y.grad().to_vector<double>(), (std::vector<double>{9, 0, 0, 7}));
}

TEST(VjpIndex, IndexSelectAccumulatesDuplicates) {
  Tensor idx = tr::tensor<int64_t>({0, 2, 0, 3, 0});
  for (int64_t dim : {0, 1, -1}) {
    Shape s{4, 4, 5};
    check_layouts(
        s, [=](const Tensor& x) { return tr::index_select(x, dim, idx); },
        "index_select dim " + std::to_string(dim));
  }
  check_layouts(
      {4, 3},
      [](const Tensor& x) {
        return tr::index_select(x, 1, tr::tensor<int32_t>({2, 2}));
      },
      "index_select int32");
  check_layouts(
      {4, 3},
      [](const Tensor& x) {
        return tr::index_select(x, 0, tr::full({}, 1, {.dtype = tr::kInt64}));
      },
      "index_select 0-d index");
  check_layouts(
      {}, [](const Tensor& x) { return tr::index_select(x, 0, tr::tensor<int64_t>({0})); },
      "index_select 0-d input");
  auto f = [](const Tensor& t) { return tr::index_select(t, 0, tr::tensor<int64_t>({0, 2, 0})); };
  EXPECT_EQ(grad_of(f, tr::zeros({3, 2}, {.dtype = DType::Float64})),
            (std::vector<double>{2, 2, 0, 0, 1, 1}));
  expect_gradcheck(first_gradient([&](const Tensor& t) { return tr::index_select(t, 1, idx); }),
                   {rnd({3, 4}, 2)}, "index_select double backward");
}

TEST(VjpIndex, EmbeddingAccumulatesRepeatedRows) {
  Tensor weight = tr::zeros({4, 3}, {.dtype = DType::Float64}).set_requires_grad();
  Tensor ids = tr::tensor<int64_t>({1, 1, 3, 1}, {2, 2});
  Tensor out = tr::embedding(weight, ids);
  EXPECT_EQ(out.shape(), (Shape{2, 2, 3}));
  out.sum().backward();
  EXPECT_EQ(weight.grad().to_vector<double>(),
            (std::vector<double>{0, 0, 0, 3, 3, 3, 0, 0, 0, 1, 1, 1}));
  expect_gradcheck([&](auto& v) { return tr::embedding(v[0], ids); }, {rnd({4, 3}, 9)},
                   "embedding");
}

TEST(VjpIndex, GatherAndScatterAdd) {
  Tensor i0 = tr::tensor<int64_t>({0, 3, 3, 1, 0, 2, 2, 2, 0, 1, 1, 3, 0, 0, 0}, {3, 5});
  check_layouts(
      {4, 5}, [&](const Tensor& x) { return tr::gather(x, 0, i0); }, "gather dim 0");
  Tensor i1 = tr::tensor<int64_t>({4, 4, 0, 1, 1, 1}, {2, 3});  // smaller than x outside dim
  check_layouts(
      {4, 5}, [&](const Tensor& x) { return tr::gather(x, -1, i1); }, "gather dim -1");
  auto g = [&](const Tensor& t) { return tr::gather(t, 1, i1); };
  EXPECT_EQ(grad_of(g, tr::zeros({2, 5}, {.dtype = DType::Float64})),
            (std::vector<double>{1, 0, 0, 0, 2, 0, 3, 0, 0, 0}));
  expect_gradcheck(first_gradient(g), {rnd({2, 5}, 4)}, "gather double backward");

  // scatter_add: x gets g, src gets g at the index (zero where src is larger than the index).
  Tensor si = tr::tensor<int64_t>({0, 3, 3, 1, 0, 0}, {3, 2});
  for (int64_t dim : {0, -2}) {
    expect_gradcheck([&](auto& v) { return tr::scatter_add(v[0], dim, si, v[1]) * 1.5; },
                     {rnd({4, 5}, 1), rnd({3, 4}, 2)}, "scatter_add dim " + std::to_string(dim));
  }
  expect_gradcheck(
      [&](auto& v) { return tr::scatter_add(v[0].t(), 1, si.t(), v[1].slice(1, 0, 6, 2)); },
      {rnd({5, 4}, 3), rnd({2, 6}, 4)}, "scatter_add non-contiguous");
  Tensor x = tr::zeros({4, 2}, {.dtype = DType::Float64}).set_requires_grad();
  Tensor src = tr::zeros({3, 3}, {.dtype = DType::Float64}).set_requires_grad();
  (tr::scatter_add(x, 0, si, src) * tr::arange(8.0, {.dtype = DType::Float64}).reshape({4, 2}))
      .sum()
      .backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{0, 1, 2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(src.grad().to_vector<double>(), (std::vector<double>{0, 7, 0, 6, 3, 0, 0, 1, 0}));
  expect_gradcheck(
      first_gradient([&](const Tensor& t) { return tr::scatter_add(t, 0, si, t.slice(0, 0, 3)); }),
      {rnd({4, 2}, 6)}, "scatter_add double backward");
}

TEST(VjpIndex, MaskedSelect) {
  Tensor m = tt::random({3, 4}, DType::Bool, 8);
  check_layouts(
      {3, 4}, [&](const Tensor& x) { return tr::masked_select(x, m); }, "masked_select");
  Tensor row = tr::tensor<bool>({true, false, true, true});
  check_layouts(
      {3, 4}, [&](const Tensor& x) { return tr::masked_select(x, row); },
      "masked_select mask broadcast");
  check_layouts(
      {4}, [&](const Tensor& x) { return tr::masked_select(x, m); }, "masked_select x broadcast");
  Tensor none = tr::zeros({3, 4}, {.dtype = DType::Bool});
  check_layouts(
      {3, 4}, [&](const Tensor& x) { return tr::masked_select(x, none); }, "masked_select empty");
  auto f = [&](const Tensor& t) {
    return tr::masked_select(t, tr::tensor<bool>({true, false, true, false, false, true}, {2, 3}));
  };
  EXPECT_EQ(grad_of(f, tr::zeros({3}, {.dtype = DType::Float64})), (std::vector<double>{1, 0, 2}));
  expect_gradcheck(first_gradient([&](const Tensor& t) { return tr::masked_select(t, m); }),
                   {rnd({3, 4}, 3)}, "masked_select double backward");
}
