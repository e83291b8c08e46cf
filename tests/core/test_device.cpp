// Device tensors above the kernels, on a stand-in GPU backed by host memory
// (support/fake_device.hpp): moving values, mixed-device errors, autograd across devices,
// modules, optimizers, checkpoints and the engine's eager fallback. The real CUDA kernels are
// checked by tests/cuda/ on a GPU.
#include <filesystem>

#include "op_test.hpp"
#include "support/fake_device.hpp"

namespace tr = terra;
using tr::Device;
using tr::Tensor;

namespace {
const Device kDev = Device::cuda();
struct Install {
  Install() { tt::fake_device::install(); }
} install_once;

std::string temp_path(const char* name) {
  return (std::filesystem::temp_directory_path() / (std::string("terra_test_device_") + name)).string();
}
}  // namespace

TEST(Device, ToAndBackKeepsValuesDtypesAndLayouts) {
  for (tr::DType dt : {tr::DType::Float32, tr::DType::Float64, tr::DType::BFloat16, tr::DType::Int64, tr::DType::Bool}) {
    Tensor x = tt::random({3, 4}, dt, 5);
    Tensor d = x.to(kDev);
    EXPECT_EQ(d.device(), kDev);
    EXPECT_EQ(d.dtype(), dt);
    EXPECT_EQ(tt::f64(d.to(Device::cpu())), tt::f64(x));
    EXPECT_EQ(tt::f64(d), tt::f64(x));  // host reads go through a copy
  }
  Tensor x = tt::random({4, 6}, tr::DType::Float32, 2);
  EXPECT_EQ(tt::f64(x.t().to(kDev)), tt::f64(x.t().contiguous()));  // strided source
  EXPECT_TRUE(x.to(Device::cpu()).is_same(x));                     // already there: itself
  Tensor nb = x.to(kDev, /*non_blocking=*/true);
  EXPECT_EQ(tt::f64(nb), tt::f64(x));
}

TEST(Device, OpsOnDeviceTensorsStayThere) {
  Tensor a = tt::random({2, 3}, tr::DType::Float32, 1).to(kDev);
  Tensor b = tt::random({3}, tr::DType::Float32, 2).to(kDev);
  Tensor y = (a * b + 1.0).relu().sum({1});
  EXPECT_EQ(y.device(), kDev);
  Tensor ref = (a.to(Device::cpu()) * b.to(Device::cpu()) + 1.0).relu().sum({1});
  EXPECT_EQ(tt::f64(y), tt::f64(ref));
  EXPECT_FLOAT_EQ(y.sum().item<float>(), ref.sum().item<float>());
  Tensor z = tr::zeros({2, 2}, {.device = kDev});
  EXPECT_EQ(z.device(), kDev);
  EXPECT_EQ(tr::ones_like(z).device(), kDev);
  EXPECT_NE(z.to_string().find("0.0000"), std::string::npos);
}

TEST(Device, MixedDevicesAreAClearError) {
  Tensor a = tr::ones({3}).to(kDev);
  Tensor b = tr::ones({3});
  tt::expect_error([&] { (void)(a + b); }, {"[terra::add]", "one device", "cuda:0", "cpu"});
  tt::expect_error([&] { (void)tr::matmul(a.reshape({1, 3}), b.reshape({3, 1})); }, {"matmul", "cuda:0", "cpu"});
  tt::expect_error([&] { (void)tr::ones({2}).to(Device::cuda(3)); }, {"cuda:3 does not exist"});
  // copy_ moves values across devices, as torch's does
  Tensor c = tr::zeros({3}, {.device = kDev});
  c.copy_(tr::full({3}, 2.0));
  EXPECT_EQ(tt::f64(c), (std::vector<double>{2, 2, 2}));
  b.copy_(c);
  EXPECT_EQ(tt::f64(b), (std::vector<double>{2, 2, 2}));
}

TEST(Device, GradientsFlowBackAcrossDevices) {
  Tensor x = tt::random({4}, tr::DType::Float32, 3).set_requires_grad(true);
  Tensor y = x.to(kDev);
  Tensor loss = (y * y).sum();
  EXPECT_EQ(loss.device(), kDev);
  loss.backward();
  ASSERT_TRUE(x.grad().defined());
  EXPECT_EQ(x.grad().device(), Device::cpu());
  tt::expect_close(x.grad(), {4}, tt::f64(x * 2.0));
  // and a leaf that lives on the device gets its gradient there
  Tensor w = tt::random({4}, tr::DType::Float32, 4).to(kDev).set_requires_grad(true);
  (w.to(Device::cpu()) * 3.0).sum().backward();
  EXPECT_EQ(w.grad().device(), kDev);
  EXPECT_EQ(tt::f64(w.grad()), (std::vector<double>{3, 3, 3, 3}));
}

namespace {
// A few training steps of a small MLP with Adam on `dev`; the parameters after them.
std::vector<double> train(Device dev) {
  tr::manual_seed(11);
  tr::nn::Sequential net(tr::nn::Linear(4, 8), tr::nn::ReLU(), tr::nn::Linear(8, 2));
  net->to(dev);
  for (Tensor p : net->parameters()) EXPECT_EQ(p.device(), dev);
  tr::optim::Adam opt(net->parameters(), {.lr = 1e-2});
  Tensor x = tt::random({16, 4}, tr::DType::Float32, 9).to(dev);
  Tensor t = tt::random({16, 2}, tr::DType::Float32, 10).to(dev);
  for (int i = 0; i < 3; ++i) {
    opt.zero_grad();
    Tensor loss = tr::nn::functional::mse_loss(net->forward(x), t);
    loss.backward();
    opt.step();
  }
  std::vector<double> out;
  for (Tensor p : net->parameters()) {
    EXPECT_EQ(p.device(), dev);
    for (double v : tt::f64(p)) out.push_back(v);
  }
  return out;
}
}  // namespace

TEST(Device, ModulesAndOptimizersTrainOnTheDevice) {
  // The stand-in runs the CPU kernels, so the device run must match the CPU run exactly.
  EXPECT_EQ(train(kDev), train(Device::cpu()));
}

TEST(Device, CheckpointsSaveAndLoadDeviceTensors) {
  tr::manual_seed(3);
  tr::nn::Linear a(3, 2), b(3, 2);
  a->to(kDev);
  b->to(kDev);
  std::string path = temp_path("linear.terra");
  tr::save(*a.ptr(), path);
  tr::load(*b.ptr(), path);
  for (const auto& [name, t] : b->named_parameters()) {
    EXPECT_EQ(t.device(), kDev) << name;
  }
  EXPECT_EQ(tt::f64(b->weight), tt::f64(a->weight));
  tr::nn::Linear c(3, 2);  // a CPU module loads the device checkpoint too
  tr::load(*c.ptr(), path);
  EXPECT_EQ(tt::f64(c->weight), tt::f64(a->weight));
  std::filesystem::remove(path);
}

TEST(Device, EngineRunsDeviceIterationsEagerly) {
  Tensor w = tt::random({8, 8}, tr::DType::Float32, 1).to(kDev);
  tr::Engine engine;
  std::vector<double> got, want;
  for (int i = 0; i < 6; ++i) {
    Tensor x = tt::random({4, 8}, tr::DType::Float32, 20 + i);
    {
      auto it = engine.iteration();
      got.push_back(tr::matmul(x.to(kDev), w).tanh().sum().item<double>());
    }
    want.push_back(tr::matmul(x, w.to(Device::cpu())).tanh().sum().item<double>());
  }
  EXPECT_EQ(got, want);
  EXPECT_EQ(engine.stats().coexecuted, 0);
  bool said = false;
  for (const auto& [why, n] : engine.stats().reasons) said |= why.find("non-CPU device") != std::string::npos;
  EXPECT_TRUE(said) << engine.stats();
}
