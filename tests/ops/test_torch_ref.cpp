// tests/ops/test_torch_ref.cpp: terra's results against values computed by PyTorch.
// The reference files tests/data/torch_ref_<family>.json are made once by
// tests/data/gen_torch_refs.py (see its header for the layout); this test needs no torch.
// Each case runs three times: inputs as stored (contiguous), the same inputs as strided views,
// and float inputs widened to float64; the result dtypes must match torch's as well.
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "op_test.hpp"

namespace {

using json = nlohmann::json;
using terra::DType;
using terra::Shape;
using terra::Tensor;
using Tensors = std::vector<Tensor>;

// TERRA_TEST_DATA (set by CTest), else tests/data next to this source file.
std::string data_dir() {
  if (const char* d = std::getenv("TERRA_TEST_DATA"); d && *d) return d;
#ifdef TERRA_TEST_DATA_DIR
  return TERRA_TEST_DATA_DIR;
#else
  std::string here = __FILE__;  // .../tests/ops/test_torch_ref.cpp
  for (int i = 0; i < 2; ++i) here = here.substr(0, here.find_last_of('/'));
  return here + "/data";
#endif
}

DType dtype_named(const std::string& name) {
  for (DType t : {DType::Bool, DType::Int32, DType::Int64, DType::Float16, DType::BFloat16,
                  DType::Float32, DType::Float64})
    if (name == terra::dtype_name(t)) return t;
  throw std::runtime_error("unknown dtype " + name);
}

bool is_float(DType t) { return t == DType::Float32 || t == DType::Float64; }

Shape shape_of(const json& j) {
  Shape s;
  for (const json& d : j) s.push_back(d.get<int64_t>());
  return s;
}

Tensor tensor_of(const json& j) {
  Shape shape = shape_of(j.at("shape"));
  DType dt = dtype_named(j.at("dtype"));
  const json& data = j.at("data");
  if (dt == DType::Bool) return terra::tensor(data.get<std::vector<bool>>(), shape);
  if (is_float(dt)) return terra::tensor(data.get<std::vector<double>>(), shape).to(dt);
  return terra::tensor(data.get<std::vector<int64_t>>(), shape).to(dt);
}

std::vector<double> values_of(const json& j) {
  std::vector<double> v;
  for (const json& x : j.at("data"))
    v.push_back(x.is_boolean() ? double(x.get<bool>()) : x.get<double>());
  return v;
}

int64_t int_of(const json& a, const char* key) { return a.at(key).get<int64_t>(); }
bool bool_of(const json& a, const char* key) { return a.at(key).get<bool>(); }
double double_of(const json& a, const char* key) { return a.at(key).get<double>(); }

terra::Dims dims_of(const json& a) {
  terra::Dims d;
  for (const json& x : a.at("dims")) d.push_back(x.get<int64_t>());
  return d;
}

// The one place that spells the pair type of conv2d/pooling arguments.
terra::IntPair pair_of(const json& a, const char* key) {
  return terra::IntPair{a.at(key).at(0).get<int64_t>(), a.at(key).at(1).get<int64_t>()};
}

Tensor optional_input(const Tensors& in, size_t i) { return i < in.size() ? in[i] : Tensor(); }

// ---- one function per op name in the files: the terra call with the case's attrs ----
Tensors run_add(const Tensors& in, const json&) { return {in[0] + in[1]}; }
Tensors run_div(const Tensors& in, const json&) { return {in[0] / in[1]}; }
Tensors run_gelu(const Tensors& in, const json& a) {
  return {terra::gelu(in[0], a.at("approximate").get<std::string>())};
}
Tensors run_softplus(const Tensors& in, const json& a) {
  return {terra::softplus(in[0], double_of(a, "beta"), double_of(a, "threshold"))};
}
Tensors run_sum(const Tensors& in, const json& a) {
  return {terra::sum(in[0], dims_of(a), bool_of(a, "keepdim"))};
}
Tensors run_mean(const Tensors& in, const json& a) {
  return {terra::mean(in[0], dims_of(a), bool_of(a, "keepdim"))};
}
Tensors run_var(const Tensors& in, const json& a) {
  return {terra::var(in[0], dims_of(a), int_of(a, "correction"), bool_of(a, "keepdim"))};
}
Tensors run_logsumexp(const Tensors& in, const json& a) {
  return {terra::logsumexp(in[0], dims_of(a), bool_of(a, "keepdim"))};
}
Tensors run_softmax(const Tensors& in, const json& a) {
  return {terra::softmax(in[0], int_of(a, "dim"))};
}
Tensors run_log_softmax(const Tensors& in, const json& a) {
  return {terra::log_softmax(in[0], int_of(a, "dim"))};
}
// inputs: x, then weight and bias when the case has them.
Tensors run_layer_norm(const Tensors& in, const json& a) {
  return {terra::layer_norm(in[0], shape_of(a.at("normalized_shape")), optional_input(in, 1),
                            optional_input(in, 2), double_of(a, "eps"))};
}
Tensors run_matmul(const Tensors& in, const json&) { return {terra::matmul(in[0], in[1])}; }
// inputs: x, w, then bias when the case has one.
Tensors run_conv2d(const Tensors& in, const json& a) {
  return {terra::conv2d(in[0], in[1], optional_input(in, 2), pair_of(a, "stride"),
                        pair_of(a, "padding"), pair_of(a, "dilation"), int_of(a, "groups"))};
}
Tensors run_max_pool2d(const Tensors& in, const json& a) {
  return {terra::max_pool2d(in[0], pair_of(a, "kernel_size"), pair_of(a, "stride"),
                            pair_of(a, "padding"), pair_of(a, "dilation"),
                            bool_of(a, "ceil_mode"))};
}
Tensors run_avg_pool2d(const Tensors& in, const json& a) {
  return {terra::avg_pool2d(in[0], pair_of(a, "kernel_size"), pair_of(a, "stride"),
                            pair_of(a, "padding"), bool_of(a, "ceil_mode"),
                            bool_of(a, "count_include_pad"))};
}
Tensors run_adaptive_avg_pool2d(const Tensors& in, const json& a) {
  return {terra::adaptive_avg_pool2d(in[0], pair_of(a, "output_size"))};
}
Tensors run_cumsum(const Tensors& in, const json& a) {
  return {terra::cumsum(in[0], int_of(a, "dim"))};
}
Tensors run_topk(const Tensors& in, const json& a) {
  auto [values, indices] = terra::topk(in[0], int_of(a, "k"), int_of(a, "dim"),
                                       bool_of(a, "largest"), bool_of(a, "sorted"));
  return {values, indices};
}
Tensors run_gather(const Tensors& in, const json& a) {
  return {terra::gather(in[0], int_of(a, "dim"), in[1])};
}
Tensors run_one_hot(const Tensors& in, const json& a) {
  return {terra::one_hot(in[0], int_of(a, "num_classes"))};
}

using OpFn = Tensors (*)(const Tensors&, const json&);
const std::map<std::string, OpFn>& runners() {
  static const std::map<std::string, OpFn> m = {
      {"add", run_add},
      {"div", run_div},
      {"gelu", run_gelu},
      {"softplus", run_softplus},
      {"sum", run_sum},
      {"mean", run_mean},
      {"var", run_var},
      {"logsumexp", run_logsumexp},
      {"softmax", run_softmax},
      {"log_softmax", run_log_softmax},
      {"layer_norm", run_layer_norm},
      {"matmul", run_matmul},
      {"conv2d", run_conv2d},
      {"max_pool2d", run_max_pool2d},
      {"avg_pool2d", run_avg_pool2d},
      {"adaptive_avg_pool2d", run_adaptive_avg_pool2d},
      {"cumsum", run_cumsum},
      {"topk", run_topk},
      {"gather", run_gather},
      {"one_hot", run_one_hot},
  };
  return m;
}

enum class Mode { kContiguous, kStrided, kFloat64 };
const char* mode_name(Mode m) {
  return m == Mode::kContiguous ? "contiguous" : m == Mode::kStrided ? "strided" : "float64";
}

Tensor prepare(const Tensor& x, Mode mode) {
  if (mode == Mode::kFloat64) return is_float(x.dtype()) ? x.to(DType::Float64) : x;
  if (mode == Mode::kStrided && x.dim() >= 1) return tt::layouts(x).back();  // a strided slice
  return x;
}

void check_case(const json& c, Mode mode) {
  std::string what = c.at("name").get<std::string>() + " [" + mode_name(mode) + "]";
  SCOPED_TRACE(what);
  auto it = runners().find(c.at("op"));
  ASSERT_NE(it, runners().end()) << "no runner for op " << c.at("op");
  Tensors in;
  for (const json& j : c.at("inputs")) in.push_back(prepare(tensor_of(j), mode));
  if (mode == Mode::kStrided) {
    for (const Tensor& x : in) EXPECT_TRUE(x.numel() <= 1 || !x.is_contiguous());
  }
  Tensors out;
  try {
    out = it->second(in, c.at("attrs"));
  } catch (const terra::Error& e) {
    ADD_FAILURE() << what << " threw terra::Error: " << e.what();
    return;
  }
  const json& expect = c.at("outputs");
  ASSERT_EQ(out.size(), expect.size());
  for (size_t i = 0; i < out.size(); ++i) {
    DType want = dtype_named(expect[i].at("dtype"));
    if (mode == Mode::kFloat64 && want == DType::Float32) want = DType::Float64;
    EXPECT_EQ(out[i].dtype(), want) << what << " output " << i;
    double rtol = 0, atol = 0;  // integer and bool results must match exactly
    if (is_float(want)) {
      const json& tol = c.at("tol").at(terra::dtype_name(want));
      rtol = tol.at(0);
      atol = tol.at(1);
    }
    tt::expect_close(out[i], shape_of(expect[i].at("shape")), values_of(expect[i]), rtol, atol,
                     what + " output " + std::to_string(i));
  }
}

// Runs every case of tests/data/torch_ref_<family>.json in each mode.
void check_file(const std::string& family) {
  std::string path = data_dir() + "/torch_ref_" + family + ".json";
  std::ifstream f(path);
  ASSERT_TRUE(f.good()) << "cannot open " << path << " (set TERRA_TEST_DATA)";
  json doc = json::parse(f);
  const json& cases = doc.at("cases");
  ASSERT_FALSE(cases.empty()) << path;
  for (const json& c : cases) {
    bool has_float = false;
    for (const json& j : c.at("inputs")) has_float |= is_float(dtype_named(j.at("dtype")));
    check_case(c, Mode::kContiguous);
    check_case(c, Mode::kStrided);
    if (has_float) check_case(c, Mode::kFloat64);
  }
}

TEST(TorchRef, Elementwise) { check_file("elementwise"); }
TEST(TorchRef, Reduce) { check_file("reduce"); }
TEST(TorchRef, Nn) { check_file("nn"); }
TEST(TorchRef, Linalg) { check_file("linalg"); }
TEST(TorchRef, Conv) { check_file("conv"); }
TEST(TorchRef, Index) { check_file("index"); }

}  // namespace
