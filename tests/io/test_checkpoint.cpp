// Checkpoints: round trips, atomic writes, and a loader that survives truncation, bit flips
// and mismatched files with a terra::Error.
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "op_test.hpp"

namespace tr = terra;
namespace nn = terra::nn;
using tr::DType;
using tr::Tensor;

namespace {
// A directory per test process, removed when the process ends.
struct TempDir {
  std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("terra_ckpt_" + std::to_string(::getpid()));
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};
std::string temp_path(const std::string& name) {
  static TempDir temp;
  std::filesystem::create_directories(temp.dir);
  return (temp.dir / name).string();
}
std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}
void spit(const std::string& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f << bytes;
}
struct SmallImpl : nn::Module {
  SmallImpl() : Module("Small") {
    fc = register_module("fc", nn::Linear(3, 2));
    bn = register_module("bn", nn::BatchNorm1d(2));
  }
  Tensor forward(const Tensor& x) override { return bn(fc(x)); }
  nn::Linear fc{nullptr};
  nn::BatchNorm1d bn{nullptr};
};
TERRA_MODULE(Small);
}  // namespace

TEST(Checkpoint, RoundTripAllDtypes) {
  tr::StateDict d;
  for (DType t : {DType::Bool, DType::Int32, DType::Int64, DType::Float16, DType::BFloat16, DType::Float32, DType::Float64})
    d.emplace_back(std::string("t_") + tr::dtype_name(t), tt::random({3, 2}, t, 4));
  d.emplace_back("scalar", tr::full({}, 2.5));
  d.emplace_back("empty", tr::zeros({0, 4}));
  d.emplace_back("strided", tr::arange(12).view({3, 4}).t());
  std::string p = temp_path("all.tck");
  tr::save(d, p);
  tr::StateDict back = tr::load_state_dict(p);
  ASSERT_EQ(back.size(), d.size());
  for (size_t i = 0; i < d.size(); ++i) {
    EXPECT_EQ(back[i].first, d[i].first);
    EXPECT_EQ(back[i].second.dtype(), d[i].second.dtype());
    EXPECT_EQ(back[i].second.shape(), d[i].second.shape());
    EXPECT_EQ(back[i].second.to_vector<double>(), d[i].second.to_vector<double>()) << d[i].first;
  }
}

TEST(Checkpoint, ModuleSaveLoadAndMismatches) {
  tr::manual_seed(1);
  Small a, b;
  std::string p = temp_path("m.tck");
  tr::save(*a, p);
  tr::load(*b, p);
  EXPECT_EQ(a->fc->weight.to_vector<float>(), b->fc->weight.to_vector<float>());
  nn::Linear other(3, 5);
  tt::expect_error([&] { tr::load(*other, p); }, {"[terra::load_state_dict]", "weight"});
  Small c;
  c->to(DType::Float64);
  tt::expect_error([&] { tr::load(*c, p); }, {"[terra::load]", "dtype"});
  tt::expect_error([&] { tr::load_state_dict(temp_path("missing.tck")); }, {"[terra::load]", "cannot open"});
}

TEST(Checkpoint, EveryTruncationAndBitFlipIsAnError) {
  tr::StateDict d = {{"w", tt::random({4, 5}, DType::Float32, 2)}, {"i", tr::arange(7, {.dtype = DType::Int64})}};
  std::string p = temp_path("fuzz.tck"), q = temp_path("fuzz_bad.tck");
  tr::save(d, p);
  std::string good = slurp(p);
  for (size_t n = 0; n < good.size(); n += std::max<size_t>(1, good.size() / 97)) {
    spit(q, good.substr(0, n));
    EXPECT_THROW(tr::load_state_dict(q), tr::Error) << "truncated to " << n;
  }
  for (size_t at = 0; at < good.size(); at += 3) {
    std::string bad = good;
    bad[at] = char(bad[at] ^ (1 << (at % 8)));
    spit(q, bad);
    EXPECT_THROW(tr::load_state_dict(q), tr::Error) << "bit flip at " << at;
  }
  spit(q, good);
  EXPECT_NO_THROW(tr::load_state_dict(q));
}

TEST(Checkpoint, HostileHeadersAreRejected) {
  // A well-formed file (valid checksum) whose header lies about sizes and offsets.
  auto forge = [](const std::string& header, size_t data_bytes) {
    std::string out("TERRACKP", 8);
    out += std::string("\x01\0\0\0\0\0\0\0", 8);
    for (int i = 0; i < 8; ++i) out.push_back(char((header.size() >> (8 * i)) & 0xff));
    out += header;
    out.append((64 - out.size() % 64) % 64, '\0');
    out.append(data_bytes, '\0');
    uint64_t h = tr::io::fnv1a(reinterpret_cast<const unsigned char*>(out.data()), out.size());
    for (int i = 0; i < 8; ++i) out.push_back(char((h >> (8 * i)) & 0xff));
    return out;
  };
  std::string q = temp_path("hostile.tck");
  auto expect_rejected = [&](const std::string& header, std::initializer_list<const char*> frags) {
    spit(q, forge(header, 64));
    tt::expect_error([&] { tr::load_state_dict(q); }, frags);
  };
  expect_rejected(R"({"tensors":[{"name":"a","dtype":"float32","shape":[4],"offset":0,"nbytes":160}]})", {"bytes for shape"});
  expect_rejected(R"({"tensors":[{"name":"a","dtype":"float32","shape":[16],"offset":32,"nbytes":64}]})", {"outside the file"});
  expect_rejected(R"({"tensors":[{"name":"a","dtype":"float32","shape":[-1],"offset":0,"nbytes":4}]})", {"bad shape"});
  expect_rejected(R"({"tensors":[{"name":"a","dtype":"float32","shape":[1099511627775,1099511627775],"offset":0,"nbytes":4}]})", {"a"});
  expect_rejected(R"({"tensors":[{"name":"a","dtype":"complex","shape":[1],"offset":0,"nbytes":4}]})", {"unknown dtype"});
  expect_rejected(R"({"tensors":[{"name":"a","dtype":"float32","shape":[1],"offset":0,"nbytes":4},{"name":"a","dtype":"float32","shape":[1],"offset":0,"nbytes":4}]})", {"duplicate"});
  expect_rejected(R"({"tensors":5})", {"malformed header"});
  expect_rejected(R"(not json)", {"malformed header"});
  expect_rejected(R"({"tensors":[{"name":1}]})", {"malformed tensor entry"});
}

TEST(Checkpoint, WritesAreAtomic) {
  std::string p = temp_path("atomic.tck");
  tr::save(tr::StateDict{{"v", tr::ones({3})}}, p);
  std::string before = slurp(p);
  // A save that fails midway (an undefined tensor) leaves the old file and no temporaries.
  EXPECT_THROW(tr::save(tr::StateDict{{"v", tr::ones({3})}, {"bad", Tensor()}}, p), tr::Error);
  EXPECT_EQ(slurp(p), before);
  EXPECT_THROW(tr::save(tr::StateDict{{"v", tr::ones({3})}}, temp_path("no/such/dir/x.tck")), tr::Error);
  for (auto& e : std::filesystem::directory_iterator(std::filesystem::path(p).parent_path()))
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << e.path();
}

TEST(Checkpoint, ResumedTrainingIsBitIdentical) {
  auto train = [](Small& m, tr::optim::Adam& opt, int steps, int from) {
    for (int s = from; s < from + steps; ++s) {
      tr::manual_seed(uint64_t(1000 + s));
      Tensor x = tr::randn({8, 3});
      opt.zero_grad();
      (m(x) * m(x)).mean().backward();
      opt.step();
    }
  };
  tr::manual_seed(7);
  Small ref;
  Small run;
  run->load_state_dict(ref->state_dict());
  tr::optim::Adam opt_ref(ref->parameters(), {.lr = 0.01});
  train(ref, opt_ref, 10, 0);
  tr::optim::Adam opt_run(run->parameters(), {.lr = 0.01});
  train(run, opt_run, 4, 0);
  std::string pm = temp_path("resume_m.tck"), po = temp_path("resume_o.tck");
  tr::save(*run, pm);
  tr::save(opt_run, po);
  Small resumed;
  tr::load(*resumed, pm);
  tr::optim::Adam opt_res(resumed->parameters(), {.lr = 0.5});
  tr::load(opt_res, po);
  EXPECT_EQ(opt_res.lr(), 0.01);
  train(resumed, opt_res, 6, 4);
  for (size_t i = 0; i < ref->state_dict().size(); ++i)
    EXPECT_EQ(ref->state_dict()[i].second.to_vector<double>(), resumed->state_dict()[i].second.to_vector<double>())
        << ref->state_dict()[i].first;
  tr::optim::Adam wrong(std::vector<Tensor>{tr::ones({2}).set_requires_grad()});
  tt::expect_error([&] { tr::load(wrong, po); }, {"[terra::load]", "parameters"});
  tt::expect_error([&] { tr::load(wrong, pm); }, {"[terra::load]", "not an optimizer"});
}
