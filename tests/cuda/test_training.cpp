// Autograd, nn and optim unchanged on CUDA: the same small training runs (an MLP with Adam, a
// CNN with batch norm and SGD momentum, a causal transformer block with AdamW) on the CPU and
// on the GPU, step by step, and device checkpoints saved and loaded. Float32 with TF32 off:
// the GPU sums in other orders, so losses agree to about 1e-5 relative per step; 1e-3 over five
// steps leaves room for that drift and still catches a wrong kernel or a lost gradient.
#include <filesystem>

#include "cuda/cuda_test.hpp"

namespace tr = terra;
namespace nn = terra::nn;
namespace F = terra::nn::functional;
using tr::Device;
using tr::Tensor;

namespace {

struct BlockImpl : nn::Module {
  BlockImpl() : Module("Block") {
    ln1 = register_module("ln1", nn::LayerNorm(tr::Shape{16}));
    attn = register_module("attn", nn::MultiheadAttention(16, 2, nn::MultiheadAttentionOptions{.batch_first = true}));
    ln2 = register_module("ln2", nn::LayerNorm(tr::Shape{16}));
    fc = register_module("fc", nn::Linear(16, 16));
    emb = register_module("emb", nn::Embedding(11, 16));
    head = register_module("head", nn::Linear(16, 11));
  }
  // idx: [B, T] int64 -> logits [B, T, 11]
  Tensor forward(const Tensor& idx) override {
    Tensor x = emb(idx);
    Tensor h = ln1(x);
    Tensor y = x + attn->forward(h, h, h, {}, false, {}, /*is_causal=*/true).first;
    return head(y + fc(tr::gelu(ln2(y))));
  }
  nn::LayerNorm ln1{nullptr}, ln2{nullptr};
  nn::MultiheadAttention attn{nullptr};
  nn::Linear fc{nullptr}, head{nullptr};
  nn::Embedding emb{nullptr};
};
TERRA_MODULE(Block);

enum class Model { Mlp, Cnn, Transformer };

// Five steps on `dev` from the same initial weights and data; the loss of each step.
std::vector<double> train(Model which, Device dev) {
  tr::manual_seed(7);
  std::shared_ptr<nn::Module> net;
  Tensor x, t;
  if (which == Model::Mlp) {
    net = nn::Sequential(nn::Linear(32, 64), nn::ReLU(), nn::Linear(64, 10)).ptr();
    x = tt::random({64, 32}, tr::DType::Float32, 1);
    t = tr::randint(0, 10, {64});
  } else if (which == Model::Cnn) {
    net = nn::Sequential(nn::Conv2d(3, 8, 3, nn::Conv2dOptions{.padding = 1}), nn::BatchNorm2d(8),
                         nn::ReLU(), nn::MaxPool2d(2), nn::Flatten(), nn::Linear(8 * 4 * 4, 5))
              .ptr();
    x = tt::random({8, 3, 8, 8}, tr::DType::Float32, 2);
    t = tr::randint(0, 5, {8});
  } else {
    net = Block().ptr();
    x = tr::randint(0, 11, {4, 12});
    t = tr::randint(0, 11, {4 * 12});
  }
  net->to(dev);
  x = x.to(dev);
  t = t.to(dev);
  std::vector<Tensor> params = net->parameters();
  std::unique_ptr<tr::optim::Optimizer> opt;
  if (which == Model::Cnn) opt = std::make_unique<tr::optim::SGD>(params, tr::optim::SGDOptions{.lr = 0.05, .momentum = 0.9});
  else if (which == Model::Mlp) opt = std::make_unique<tr::optim::Adam>(params, tr::optim::AdamOptions{.lr = 1e-2});
  else opt = std::make_unique<tr::optim::AdamW>(params, tr::optim::AdamWOptions{.lr = 1e-2});
  std::vector<double> losses;
  for (int step = 0; step < 5; ++step) {
    opt->zero_grad();
    Tensor out = net->forward(x);
    if (which == Model::Transformer) out = out.reshape({-1, 11});
    Tensor loss = F::cross_entropy(out, t);
    loss.backward();
    opt->step();
    EXPECT_EQ(loss.device(), dev);
    losses.push_back(loss.item<double>());
  }
  for (const Tensor& p : params) EXPECT_EQ(p.device(), dev);
  return losses;
}

void expect_same_run(Model which) {
  std::vector<double> cpu = train(which, Device::cpu()), gpu = train(which, tt::kCuda);
  ASSERT_EQ(cpu.size(), gpu.size());
  for (size_t i = 0; i < cpu.size(); ++i) EXPECT_NEAR(gpu[i], cpu[i], 1e-3 * std::fabs(cpu[i])) << "step " << i;
  EXPECT_LT(gpu.back(), gpu.front());  // it learns
}

}  // namespace

TEST(CudaTraining, MlpWithAdamMatchesTheCpu) {
  TERRA_REQUIRE_GPU();
  expect_same_run(Model::Mlp);
}
TEST(CudaTraining, CnnWithBatchNormAndSgdMatchesTheCpu) {
  TERRA_REQUIRE_GPU();
  expect_same_run(Model::Cnn);
}
TEST(CudaTraining, TransformerBlockWithAdamWMatchesTheCpu) {
  TERRA_REQUIRE_GPU();
  expect_same_run(Model::Transformer);
}

TEST(CudaTraining, CheckpointsSaveAndLoadDeviceModules) {
  TERRA_REQUIRE_GPU();
  tr::manual_seed(3);
  nn::Linear a(4, 3), b(4, 3);
  a->to(tt::kCuda);
  b->to(tt::kCuda);
  std::string path = (std::filesystem::temp_directory_path() / "terra_test_cuda_ckpt.terra").string();
  tr::save(*a.ptr(), path);
  tr::load(*b.ptr(), path);
  EXPECT_EQ(b->weight.device(), tt::kCuda);
  EXPECT_EQ(tt::f64(b->weight), tt::f64(a->weight));
  nn::Linear c(4, 3);  // into a CPU module
  tr::load(*c.ptr(), path);
  EXPECT_EQ(tt::f64(c->weight), tt::f64(a->weight));
  std::filesystem::remove(path);
}
