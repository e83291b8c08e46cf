// The CUDA runtime layer: devices, streams, events, the caching allocator, copies between host
// and device. Every test skips on a machine without a GPU; the availability test runs anywhere.
#include "cuda/cuda_test.hpp"

namespace tr = terra;
namespace cu = terra::cuda;
using tr::Device;
using tr::Tensor;

// Without a driver or device every query answers "none" instead of throwing.
TEST(CudaRuntime, AvailabilityNeverThrows) {
  int n = -1;
  EXPECT_NO_THROW(n = cu::device_count());
  EXPECT_GE(n, 0);
  EXPECT_EQ(cu::is_available(), n > 0);
  if (n == 0) {
    tt::expect_error([] { (void)tr::ones({2}).to(Device::cuda()); }, {"cuda:0 does not exist", "0 CUDA devices"});
  }
}

TEST(CudaRuntime, BadDeviceIndexIsAnError) {
  TERRA_REQUIRE_GPU();
  int n = cu::device_count();
  tt::expect_error([&] { cu::set_device(n); }, {"cuda::set_device", "does not exist"});
  tt::expect_error([&] { (void)tr::zeros({2}, {.device = Device::cuda(n)}); }, {"does not exist"});
}

TEST(CudaRuntime, RoundTripKeepsValuesAndDtypes) {
  TERRA_REQUIRE_GPU();
  for (tr::DType dt : {tr::DType::Float32, tr::DType::Float64, tr::DType::Float16, tr::DType::BFloat16,
                       tr::DType::Int32, tr::DType::Int64, tr::DType::Bool}) {
    Tensor x = tt::random({3, 5}, dt, 7);
    Tensor d = x.to(Device::cuda());
    EXPECT_EQ(d.device(), Device::cuda());
    EXPECT_EQ(d.dtype(), dt);
    Tensor back = d.to(Device::cpu());
    EXPECT_EQ(tt::f64(back), tt::f64(x)) << tr::dtype_name(dt);
  }
}

TEST(CudaRuntime, StridedSourceIsCopiedInItsOwnOrder) {
  TERRA_REQUIRE_GPU();
  Tensor x = tt::random({4, 6}, tr::DType::Float32, 3);
  Tensor t = x.t();  // not contiguous
  EXPECT_EQ(tt::f64(t.to(Device::cuda()).to(Device::cpu())), tt::f64(t.contiguous()));
  Tensor d = x.to(Device::cuda()).t();  // strided on the device
  EXPECT_EQ(tt::f64(d), tt::f64(t.contiguous()));
}

TEST(CudaRuntime, NonBlockingCopyMayReuseTheSourceAtOnce) {
  TERRA_REQUIRE_GPU();
  Tensor x = tr::full({1 << 20}, 3.0f);
  Tensor d = x.to(Device::cuda(), /*non_blocking=*/true);
  x.fill_(-1.0f);  // staged before the call returned: the device copy keeps 3
  std::vector<float> v = d.to_vector<float>();
  EXPECT_EQ(v.front(), 3.0f);
  EXPECT_EQ(v.back(), 3.0f);
}

TEST(CudaRuntime, AllocatorCachesAndCounts) {
  TERRA_REQUIRE_GPU();
  cu::synchronize();
  cu::empty_cache();
  cu::AllocatorStats s0 = cu::memory_stats();
  {
    Tensor a = tr::empty({1 << 18}, {.device = Device::cuda()});  // 1 MiB
    cu::AllocatorStats s1 = cu::memory_stats();
    EXPECT_EQ(s1.allocated, s0.allocated + (size_t(1) << 20));
    EXPECT_GE(s1.reserved, s1.allocated);
    EXPECT_GE(s1.peak_allocated, s1.allocated);
  }
  cu::AllocatorStats s2 = cu::memory_stats();
  EXPECT_EQ(s2.allocated, s0.allocated);
  {
    Tensor b = tr::empty({1 << 18}, {.device = Device::cuda()});  // the cached block again
    EXPECT_EQ(cu::memory_stats().cache_hits, s2.cache_hits + 1);
    EXPECT_EQ(cu::memory_stats().device_mallocs, s2.device_mallocs);
  }
  cu::empty_cache();
  EXPECT_EQ(cu::memory_stats().reserved, cu::memory_stats().allocated);
}

TEST(CudaRuntime, OutOfMemoryIsAnErrorWithTheAllocatorState) {
  TERRA_REQUIRE_GPU();
  tt::expect_error([] { (void)tr::empty({int64_t(1) << 50}, {.device = Device::cuda()}); },
                   {"cuda_alloc", "out of memory on cuda:0", "MiB reserved"});
  Tensor ok = tr::empty({16}, {.device = Device::cuda()});  // the device still works
  EXPECT_EQ(ok.numel(), 16);
}

TEST(CudaRuntime, StreamsAndEvents) {
  TERRA_REQUIRE_GPU();
  cu::Stream s = cu::Stream::create(0);
  EXPECT_NE(s.get(), cu::current_stream(0));
  {
    cu::StreamGuard g(s);
    EXPECT_EQ(cu::current_stream(0), s.get());
    Tensor d = tr::full({1000}, 2.0f).to(Device::cuda());
    cu::Event e(true), start(true);
    start.record();
    e.record();
    e.synchronize();
    EXPECT_TRUE(e.query());
    EXPECT_GE(e.elapsed_ms(start), 0.0f);
    EXPECT_EQ(d.to_vector<float>()[999], 2.0f);
  }
  EXPECT_NE(cu::current_stream(0), s.get());
}

TEST(CudaRuntime, MixedDevicesAreAnError) {
  TERRA_REQUIRE_GPU();
  Tensor a = tr::ones({3}).to(Device::cuda());
  Tensor b = tr::ones({3});
  tt::expect_error([&] { (void)(a + b); }, {"add", "one device", "cuda:0", "cpu"});
}

// The kernels register before main, GPU or not: every row of the op table must have one (the
// ggml-style guarantee that a program which runs on the CPU finds all its ops on CUDA).
TEST(CudaKernels, EveryOpOfTheTableHasACudaKernel) {
  std::string missing;
  for (int i = 0; i < tr::kNumOps; ++i)
    if (tr::op_info(tr::Op(i)).kind != tr::OpKind::View &&  // views alias, no kernel runs
        tr::find_kernel(tr::Op(i), Device::cuda()) == nullptr)
      missing += std::string(" ") + tr::op_name(tr::Op(i));
  EXPECT_TRUE(missing.empty()) << "no CUDA kernel for:" << missing;
}
