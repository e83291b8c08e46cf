// Device tensors above the kernels, on a stand-in GPU backed by host memory
// (support/fake_device.hpp): moving values, mixed-device errors, autograd across devices,
// modules, optimizers, checkpoints and co-execution of device blocks. The real CUDA kernels are
// checked by tests/cuda/ on a GPU.
#include <filesystem>
#include <random>

#include "op_test.hpp"
#include "exec/programs.hpp"
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

// A small CNN with batch norm (an int64 buffer too), SGD with momentum and gradient clipping.
std::vector<double> train_cnn(Device dev) {
  tr::manual_seed(12);
  tr::nn::Sequential net(tr::nn::Conv2d(3, 4, 3), tr::nn::BatchNorm2d(4), tr::nn::ReLU(),
                         tr::nn::MaxPool2d(2), tr::nn::Flatten(), tr::nn::Linear(16, 3));
  net->to(dev);
  tr::optim::SGD opt(net->parameters(), {.lr = 0.05, .momentum = 0.9});
  Tensor x = tt::random({4, 3, 6, 6}, tr::DType::Float32, 1).to(dev);
  Tensor t = tr::tensor(std::vector<int64_t>{0, 2, 1, 0}).to(dev);
  for (int i = 0; i < 3; ++i) {
    opt.zero_grad();
    tr::nn::functional::cross_entropy(net->forward(x), t).backward();
    tr::optim::clip_grad_norm_(net->parameters(), 0.5);
    opt.step();
  }
  std::vector<double> out;
  for (const auto& [name, b] : net->named_buffers()) {
    EXPECT_EQ(b.device(), dev) << name;
    for (double v : tt::f64(b)) out.push_back(v);
  }
  for (Tensor p : net->parameters())
    for (double v : tt::f64(p)) out.push_back(v);
  return out;
}
}  // namespace

TEST(Device, ModulesAndOptimizersTrainOnTheDevice) {
  // The stand-in runs the CPU kernels, so the device run must match the CPU run exactly.
  EXPECT_EQ(train(kDev), train(Device::cpu()));
  EXPECT_EQ(train_cnn(kDev), train_cnn(Device::cpu()));
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

TEST(Device, EngineCoExecutesDeviceIterations) {
  Tensor w = tt::random({8, 8}, tr::DType::Float32, 1).to(kDev);
  tr::Engine engine;
  std::vector<double> got, want;
  for (int i = 0; i < 8; ++i) {
    Tensor x = tt::random({4, 8}, tr::DType::Float32, 20 + i);
    {
      auto it = engine.iteration();
      Tensor y = tr::matmul(x.to(kDev), w).tanh().sum();  // a host batch fed to the device
      EXPECT_EQ(y.device(), kDev);
      got.push_back(y.item<double>());
    }
    want.push_back(tr::matmul(x, w.to(Device::cpu())).tanh().sum().item<double>());
  }
  EXPECT_EQ(got, want);
  tr::EngineStats s = engine.stats();
  EXPECT_EQ(s.eager, 1) << s;
  EXPECT_EQ(s.traced, 2) << s;
  EXPECT_EQ(s.coexecuted, 5) << s;
  EXPECT_EQ(s.fallbacks, 0) << s;
  // The compiled blocks keep device values in a device arena and fuse no device nodes.
  int device_plans = 0;
  for (const auto& [key, gs] : engine.graphs())
    for (const auto& c : gs.compiled) {
      if (!c.plan) continue;
      const tr::graph::Plan& p = *c.plan;
      if (p.devices.empty()) continue;
      ++device_plans;
      EXPECT_EQ(p.devices, std::vector<Device>{kDev});
      for (const auto& st : p.steps) {
        if (!st.fused) continue;
        for (int32_t n : st.nodes) EXPECT_TRUE(p.ir.nodes[n].outs[0].device.is_cpu());
      }
      for (size_t b = 0; b < p.ir.bufs.size(); ++b) {
        if (p.arena_offset[b] < 0 || p.ir.bufs[b].device.is_cpu()) continue;
        EXPECT_LT(p.arena_offset[b], p.device_arenas.at(0).second);
      }
    }
  EXPECT_GE(device_plans, 1);
}


// Co-executed on the device, a dynamic program gives eager's values bit for bit (the stand-in
// device runs the CPU kernels; the blocks' buffers live in the device's own arena).
TEST(Device, CoExecutedTrainingMatchesEager) {
  progs::Outcome eager = progs::device_dynamic(kDev, false), co = progs::device_dynamic(kDev, true);
  EXPECT_EQ(co.fetched, eager.fetched);
  EXPECT_EQ(co.decisions, eager.decisions);
  EXPECT_EQ(co.params, eager.params);
  std::cout << co.stats << "\n";
  EXPECT_EQ(co.stats.iterations, 60);
  EXPECT_GE(co.stats.coexecuted, 40);
  EXPECT_LE(co.stats.fallbacks, 12);
  // and the CPU gives the same bits too (the stand-in device runs the CPU kernels)
  EXPECT_EQ(progs::device_dynamic(Device::cpu(), false).params, eager.params);
}

// A kernel that fails inside a co-executed run on the device surfaces at the read, naming the
// op, and the engine goes on.
TEST(Device, KernelErrorInsideADeviceRunSurfaces) {
  progs::expect_error_at_the_read(progs::kernel_error_in_run(kDev));
}

// ---- device graphs (EngineOptions::cuda_graphs) on the stand-in's recording ----
// The stand-in records as CUDA stream capture does (kernels kept, not run, until the launch),
// so these check the executor's side: which stretches are recorded, that results stay eager's,
// and that a failed recording leaves nothing half run.

namespace {
bool has_reason(const tr::EngineStats& s, const std::string& part) {
  for (const auto& [why, n] : s.not_captured)
    if (why.find(part) != std::string::npos) return true;
  return false;
}
struct GraphControlReset {
  ~GraphControlReset() {
    auto& g = tt::fake_device::graphs();
    g.fail_op = -1;
    g.refuse_launch = false;
  }
};
}  // namespace

TEST(Device, GraphsLaunchDeviceStretchesAndMatchEager) {
  auto& g = tt::fake_device::graphs();
  int launched = g.launched, live = g.live;
  progs::Outcome eager = progs::device_dynamic(kDev, false);
  progs::Outcome co = progs::device_dynamic(kDev, true, 60, {.cuda_graphs = true});
  EXPECT_EQ(co.fetched, eager.fetched);
  EXPECT_EQ(co.decisions, eager.decisions);
  EXPECT_EQ(co.params, eager.params);
  const tr::EngineStats& s = co.stats;
  std::cout << s << "\n";
  EXPECT_GE(s.coexecuted, 40) << s;
  EXPECT_GT(s.graph_launches, 0) << s;
  EXPECT_EQ(g.launched - launched, s.graph_launches);
  EXPECT_GE(s.graph_kernels, 2 * s.graph_launches) << s;
  EXPECT_EQ(s.graph_failures, 0) << s;
  // The host batches' copies to the device stay outside graphs, and the stats say so.
  EXPECT_TRUE(has_reason(s, "to_device: copies between the host and a device")) << s;
  EXPECT_EQ(g.live, live) << "the engine's executors left CUDA graphs behind";
  // Off by default: nothing recorded.
  launched = g.launched;
  EXPECT_EQ(progs::device_dynamic(kDev, true).stats.graph_launches, 0);
  EXPECT_EQ(g.launched, launched);
}

// A recording that fails part-way (a kernel that cannot be recorded) ran nothing: the stretch
// runs kernel by kernel and the results stay eager's bit for bit (no kernel ran twice, none
// was lost). Each stretch gives up recording after two failures.
TEST(Device, AFailedRecordingRunsItsStretchKernelByKernel) {
  GraphControlReset reset;
  auto& g = tt::fake_device::graphs();
  progs::Outcome eager = progs::device_dynamic(kDev, false);
  g.fail_op = int(tr::Op::Relu);
  progs::Outcome co = progs::device_dynamic(kDev, true, 60, {.cuda_graphs = true});
  EXPECT_EQ(co.fetched, eager.fetched);
  EXPECT_EQ(co.decisions, eager.decisions);
  EXPECT_EQ(co.params, eager.params);
  const tr::EngineStats& s = co.stats;
  EXPECT_GT(s.graph_failures, 0) << s;
  EXPECT_GT(s.graph_launches, 0) << s;  // the stretches without a relu still launch
  EXPECT_TRUE(has_reason(s, "recording failed: [terra::relu] cannot be recorded")) << s;
  // Launches declined by the backend: same results, no launch at all, and few attempts.
  g.fail_op = -1;
  g.refuse_launch = true;
  int begun = g.begun;
  co = progs::device_dynamic(kDev, true, 60, {.cuda_graphs = true});
  EXPECT_EQ(co.params, eager.params);
  EXPECT_EQ(co.fetched, eager.fetched);
  EXPECT_EQ(co.stats.graph_launches, 0) << co.stats;
  EXPECT_EQ(g.begun - begun, co.stats.graph_failures);
  EXPECT_LT(co.stats.graph_failures, co.stats.launches) << co.stats;
}

// Which stretches a plan records: device kernels only, never a host/device copy, never a kernel
// the backend says reads values back (index_select on the CUDA backend), two kernels at least.
TEST(Device, GraphSegmentsHoldOnlyRecordableDeviceKernels) {
  Tensor w = tt::random({8, 8}, tr::DType::Float32, 1).to(kDev);
  Tensor idx = tr::tensor(std::vector<int64_t>{3, 1, 0, 2}, {4}).to(kDev);
  tr::Engine engine({.cuda_graphs = true});
  std::vector<double> got, want;
  for (int i = 0; i < 8; ++i) {
    Tensor x = tt::random({4, 8}, tr::DType::Float32, 20 + i);
    {
      auto it = engine.iteration();
      Tensor h = tr::matmul(x.to(kDev), w).tanh();
      Tensor y = (tr::index_select(h, 0, idx) * 2.0).exp().sum();
      got.push_back(y.item<double>());
    }
    Tensor hc = tr::matmul(x, w.to(Device::cpu())).tanh();
    want.push_back((tr::index_select(hc, 0, idx.to(Device::cpu())) * 2.0).exp().sum().item<double>());
  }
  EXPECT_EQ(got, want);
  tr::EngineStats s = engine.stats();
  EXPECT_GE(s.coexecuted, 5) << s;
  EXPECT_GE(s.graph_launches, 5) << s;
  EXPECT_TRUE(has_reason(s, "index_select: reads device values back on the host")) << s;
  int segments = 0;
  for (const auto& [key, gs] : engine.graphs())
    for (const auto& c : gs.compiled) {
      if (!c.exec) continue;
      const tr::graph::Plan& p = c.exec->plan();
      for (const tr::exec::GraphSegment& seg : c.exec->graph_segments()) {
        ++segments;
        EXPECT_GE(seg.kernels, 2);
        EXPECT_EQ(seg.device, kDev);
        EXPECT_LE(seg.failures, tr::exec::GraphSegment::kMaxFailures);
        for (int32_t n = seg.first_node; n <= seg.last_node; ++n) {
          const tr::graph::IrNode& node = p.ir.nodes[n];
          EXPECT_NE(node.op, tr::Op::IndexSelect);
          EXPECT_NE(node.op, tr::Op::ToDevice);
          for (const auto& v : node.ins) EXPECT_EQ(v.device, kDev);
          for (const auto& v : node.outs) EXPECT_EQ(v.device, kDev);
        }
      }
    }
  EXPECT_GE(segments, 2);  // matmul + tanh before the index_select; mul + exp + sum after it
}

// An out-of-range index inside a run with graphs on is still reported at the read, naming the
// op: index_select runs outside graphs, with its checks.
TEST(Device, KernelErrorSurfacesWithGraphsOn) {
  progs::RunErrorOutcome o = progs::kernel_error_in_run(kDev, {.cuda_graphs = true});
  progs::expect_error_at_the_read(o);
}

namespace {
// One public-API call on inputs that live on `dev`; every floating input requires grad.
struct Case {
  const char* name;
  std::vector<Tensor> inputs;  // made on the CPU
  std::function<std::vector<Tensor>(const std::vector<Tensor>&)> fn;
};

namespace F = terra::nn::functional;

std::vector<Case> cases() {
  auto f = [](tr::Shape s, uint32_t seed) { return tt::random(s, tr::DType::Float32, seed); };
  auto idx = [](std::vector<int64_t> v, tr::Shape s) { return tr::tensor(v, s); };
  Tensor img = f({2, 3, 6, 6}, 1);
  return {
      {"elementwise", {f({2, 3}, 1), f({3}, 2)},
       [](auto& x) { return std::vector<Tensor>{tr::where(x[0] > 0, x[0] * x[1], x[0].exp()) + 2.0}; }},
      {"reductions", {f({3, 4}, 3)},
       [](auto& x) {
         auto [mx, arg] = x[0].max(1);
         return std::vector<Tensor>{x[0].sum({0}), x[0].mean(), x[0].var({1}), x[0].logsumexp({1}), mx,
                                    arg, x[0].argmin(0), x[0].amax({0})};
       }},
      {"sort_topk_cumsum", {f({3, 5}, 4)},
       [](auto& x) {
         auto [v, i] = tr::sort(x[0], 1, true);
         auto [tv, ti] = tr::topk(x[0], 2, 1);
         return std::vector<Tensor>{v, i, tv, ti, tr::cumsum(x[0], 1)};
       }},
      {"index", {f({5, 3}, 5), idx({4, 0, 2}, {3}), idx({0, 1, 2, 1, 0, 2}, {2, 3})},
       [](auto& x) {
         return std::vector<Tensor>{tr::index_select(x[0], 0, x[1]), tr::gather(x[0], 0, x[2]),
                                    tr::scatter_add(x[0], 0, x[2], x[0].narrow(0, 0, 2)),
                                    tr::masked_select(x[0], x[0] > 0), tr::one_hot(x[1], 5),
                                    tr::embedding(x[0], x[2])};
       }},
      {"shape", {f({2, 3}, 6), f({2, 2}, 7)},
       [](auto& x) {
         return std::vector<Tensor>{tr::cat({x[0], x[1]}, 1), tr::stack({x[0], x[0]}, 0),
                                    x[0].t().contiguous(), x[0].unsqueeze(0).expand({4, 2, 3}).sum({0})};
       }},
      {"linalg", {f({2, 4, 3}, 8), f({3, 5}, 9), f({5}, 10)},
       [](auto& x) {
         return std::vector<Tensor>{tr::matmul(x[0], x[1]), tr::linear(x[0], x[1].t(), x[2])};
       }},
      {"conv_pool", {img, f({4, 3, 3, 3}, 11), f({4}, 12), f({3, 2, 2, 2}, 13)},
       [](auto& x) {
         Tensor y = tr::conv2d(x[0], x[1], x[2], 1, 1);
         return std::vector<Tensor>{y, tr::max_pool2d(y, 2), tr::avg_pool2d(y, 2),
                                    tr::adaptive_avg_pool2d(y, {1, 1}),
                                    tr::conv_transpose2d(x[0], x[3], {}, 2)};
       }},
      {"norms_softmax", {f({4, 6}, 14), f({6}, 15), f({6}, 16), img},
       [](auto& x) {
         Tensor rm = tr::zeros({3}, {.device = x[3].device()}), rv = tr::ones({3}, {.device = x[3].device()});
         return std::vector<Tensor>{tr::softmax(x[0], 1), tr::log_softmax(x[0], 0),
                                    tr::layer_norm(x[0], {6}, x[1], x[2]),
                                    tr::batch_norm(x[3], {}, {}, rm, rv, true), rm, rv};
       }},
      {"losses", {f({4, 3}, 17), idx({0, 2, 1, 2}, {4}), f({4, 3}, 18)},
       [](auto& x) {
         return std::vector<Tensor>{F::cross_entropy(x[0], x[1]), F::mse_loss(x[0], x[2]),
                                    F::l1_loss(x[0], x[2]),
                                    F::binary_cross_entropy_with_logits(x[0], (x[2] > 0).to(tr::DType::Float32)),
                                    F::leaky_relu(x[0], 0.1)};
       }},
      {"attention", {f({1, 2, 4, 8}, 19), f({1, 2, 4, 8}, 20), f({1, 2, 4, 8}, 21)},
       [](auto& x) {
         Tensor m = tr::nn::functional::causal_mask(4, 4, x[0].device());
         auto [o, w] = F::scaled_dot_product_attention(x[0], x[1], x[2], m);
         return std::vector<Tensor>{o, w};
       }},
      {"random", {f({64}, 22)},
       [](auto& x) {
         tr::manual_seed(5);
         return std::vector<Tensor>{tr::dropout(x[0], 0.3, true), tr::rand({8}, {.device = x[0].device()}),
                                    tr::randn({8}, {.device = x[0].device()}),
                                    tr::randint(0, 9, {8}, {.dtype = tr::kInt64, .device = x[0].device()})};
       }},
  };
}

// Outputs and input gradients of one case with its inputs on `dev`, all read back to the host.
std::vector<std::vector<double>> run_case(const Case& c, Device dev) {
  std::vector<Tensor> in;
  for (const Tensor& t : c.inputs) {
    Tensor d = t.to(dev);
    if (d.is_floating_point()) d = d.detach().set_requires_grad(true);
    in.push_back(d);
  }
  std::vector<Tensor> out = c.fn(in);
  std::vector<std::vector<double>> r;
  Tensor loss;
  for (size_t i = 0; i < out.size(); ++i) {
    EXPECT_EQ(out[i].device(), dev) << c.name << " output " << i;
    r.push_back(tt::f64(out[i]));
    if (!out[i].requires_grad()) continue;
    Tensor term = (out[i] * double(i + 1)).sum();
    loss = loss.defined() ? loss + term : term;
  }
  if (loss.defined()) loss.backward();
  for (const Tensor& t : in) {
    if (!t.requires_grad() || !t.grad().defined()) continue;
    EXPECT_EQ(t.grad().device(), dev) << c.name;
    r.push_back(tt::f64(t.grad()));
  }
  return r;
}
}  // namespace

// The public API on device tensors: the same values and gradients as on the CPU (the stand-in
// runs the CPU kernels, so any difference comes from the layers above them: a helper tensor
// made on the wrong device, a host read of device memory, a lost gradient).
TEST(Device, PublicOpsGiveTheCpuValuesAndGradients) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    std::vector<std::vector<double>> cpu, dev;
    ASSERT_NO_THROW(cpu = run_case(c, Device::cpu()));
    try {
      dev = run_case(c, kDev);
    } catch (const terra::Error& e) {
      ADD_FAILURE() << c.name << " on the device threw: " << e.what();
      continue;
    }
    EXPECT_EQ(dev, cpu);
  }
}

// Every case of the op list, co-executed on the device five times under one engine (its
// forward, its backward and the host reads): eager's values and gradients every time.
TEST(Device, EngineCoExecutesEveryCase) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    std::vector<std::vector<double>> want = run_case(c, kDev);
    tr::Engine engine;
    for (int i = 0; i < 5; ++i) {
      std::vector<std::vector<double>> got;
      {
        auto it = engine.iteration();
        got = run_case(c, kDev);
      }
      EXPECT_EQ(got, want) << "iteration " << i;
    }
    EXPECT_GE(engine.stats().coexecuted, 2) << engine.stats();
  }
}
