// Core pieces: dtypes, shapes, small vectors, storage lifetime, errors.
#include <gtest/gtest.h>

#include <string>

#include <atomic>
#include <cstring>
#include <mutex>
#include <vector>

#include <terra/terra.hpp>

namespace tr = terra;

TEST(Core, DTypeFacts) {
  EXPECT_EQ(tr::itemsize(tr::DType::Float16), 2u);
  EXPECT_EQ(tr::itemsize(tr::DType::Int64), 8u);
  EXPECT_STREQ(tr::dtype_name(tr::DType::BFloat16), "bfloat16");
  EXPECT_TRUE(tr::is_floating(tr::DType::Float16));
  EXPECT_FALSE(tr::is_floating(tr::DType::Int32));
  EXPECT_EQ(tr::promote_types(tr::DType::Int32, tr::DType::Float16), tr::DType::Float16);
  EXPECT_EQ(tr::promote_types(tr::DType::Bool, tr::DType::Int32), tr::DType::Int32);
}

TEST(Core, ShapesAndBroadcasting) {
  EXPECT_EQ(tr::contiguous_strides({2, 3, 4}), tr::Strides({12, 4, 1}));
  EXPECT_EQ(tr::broadcast_shapes({3, 1}, {1, 4}, "t"), tr::Shape({3, 4}));
  EXPECT_EQ(tr::broadcast_shapes({}, {2}, "t"), tr::Shape({2}));
  EXPECT_THROW(tr::broadcast_shapes({3}, {4}, "t"), tr::Error);
  EXPECT_EQ(tr::wrap_dim(-1, 3, "t"), 2);
  EXPECT_THROW(tr::wrap_dim(3, 3, "t"), tr::Error);
  EXPECT_EQ(tr::wrap_dims({-1, 0}, 3, "t"), tr::Dims({0, 2}));
  EXPECT_THROW(tr::wrap_dims({1, -2}, 3, "t"), tr::Error);
  EXPECT_EQ(tr::numel_of({}), 1);
  EXPECT_EQ(tr::numel_of({3, 0}), 0);
}

TEST(Core, SmallVectorGrowsPastInlineCapacity) {
  tr::SmallVector<int64_t, 2> v{1, 2};
  for (int i = 3; i <= 10; ++i) v.push_back(i);
  EXPECT_EQ(v.size(), 10u);
  EXPECT_EQ(v[9], 10);
  tr::SmallVector<int64_t, 2> w = std::move(v);
  EXPECT_EQ(w.size(), 10u);
  w.erase(w.begin());
  EXPECT_EQ(w.front(), 2);
  w.insert(w.begin(), 0);
  EXPECT_EQ(w[0], 0);
  EXPECT_EQ(w[1], 2);
  tr::SmallVector<int64_t, 2> c = w;
  EXPECT_EQ(c, w);
}

// The trivially-copyable fast paths (whole inline buffer copies) and the generic ones agree.
TEST(Core, SmallVectorCopiesAndMovesKeepEveryElement) {
  using V = tr::SmallVector<int64_t, 4>;
  V small{1, 2, 3};
  V big{1, 2, 3, 4, 5, 6};
  V grown = big;
  grown.clear();  // on the heap, empty
  grown = small;  // an inline source into a heap destination
  EXPECT_EQ(grown, small);
  grown.push_back(9);
  grown.push_back(10);
  EXPECT_EQ(grown.size(), 5u);
  EXPECT_EQ(grown[4], 10);
  big.erase(big.begin());
  big.erase(big.begin());
  big.erase(big.begin());  // on the heap, 3 elements
  V from_heap = big;
  EXPECT_EQ(from_heap, (V{4, 5, 6}));
  V moved = std::move(from_heap);
  EXPECT_EQ(moved, (V{4, 5, 6}));
  V inline_moved = V{7, 8};
  EXPECT_EQ(inline_moved, (V{7, 8}));
  EXPECT_NE(inline_moved, (V{7, 8, 0}));
  EXPECT_NE(inline_moved, (V{7, 9}));
  V none{};  // value-initialized: empty, usable
  EXPECT_TRUE(none.empty());
  none = V{};
  EXPECT_TRUE(none.empty());
  // Non-trivial elements take the element-wise paths.
  tr::SmallVector<std::string, 2> ss{"a", std::string(40, 'b')};
  auto copy = ss;
  auto stolen = std::move(ss);
  EXPECT_EQ(copy, stolen);
  EXPECT_EQ(stolen[1], std::string(40, 'b'));
}

TEST(Core, TensorBasics) {
  auto a = tr::arange(6.0).view({2, 3});
  auto b = tr::tensor<float>({10, 20, 30});
  auto c = a + b;
  EXPECT_EQ(c.shape(), tr::Shape({2, 3}));
  EXPECT_EQ(c.to_vector<float>(), (std::vector<float>{10, 21, 32, 13, 24, 35}));
  EXPECT_EQ(c.size(-1), 3);
  EXPECT_EQ(c.stride(0), 3);
  EXPECT_EQ(c.nbytes(), 24u);
  EXPECT_TRUE(c.device().is_cpu());
  EXPECT_FALSE(tr::Tensor().defined());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(tr::zeros({7}).raw_data()) % 64, 0u);  // aligned
}

TEST(Core, ErrorsNameTheOp) {
  try {
    tr::ones({2, 3}) + tr::ones({4, 5});
    FAIL();
  } catch (const tr::Error& e) {
    EXPECT_STREQ(e.what(), "[terra::add] shapes [2, 3] and [4, 5] cannot be broadcast together");
  }
}

// The number itself is checked against the packages by tests/packaging/check_version.cmake.
TEST(Core, Version) {
  EXPECT_EQ(std::string(tr::version()), std::to_string(TERRA_VERSION_MAJOR) + "." +
                                            std::to_string(TERRA_VERSION_MINOR) + "." +
                                            std::to_string(TERRA_VERSION_PATCH));
  EXPECT_STREQ(tr::version(), TERRA_VERSION_STRING);
  EXPECT_EQ(TERRA_VERSION,
            TERRA_VERSION_MAJOR * 10000 + TERRA_VERSION_MINOR * 100 + TERRA_VERSION_PATCH);
}

// parallel_for on thread teams: every index exactly once for any thread count, and an
// exception thrown in one chunk reaches the caller (never std::terminate, as an OpenMP region
// would) with the team still usable afterwards.
TEST(Core, ParallelForCoversEveryIndexAndRethrows) {
  for (int threads : {1, 2, 3}) {
    terra::set_num_threads(threads);
    const int64_t n = 1 << 16;
    std::vector<std::atomic<int>> hits(n);
    terra::parallel_for(n, terra::kParallelGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
    });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "index " << i;
    EXPECT_THROW(terra::parallel_for(n, terra::kParallelGrain,
                                     [&](int64_t b, int64_t e) {
                                       if (b <= n / 2 && n / 2 < e)
                                         throw terra::Error("[terra::test] chunk failed");
                                     }),
                 terra::Error);
    int64_t sum = 0;
    std::mutex mu;
    terra::parallel_for(n, terra::kParallelGrain, [&](int64_t b, int64_t e) {
      std::lock_guard lk(mu);
      sum += e - b;
    });
    EXPECT_EQ(sum, n);
  }
  terra::set_num_threads(0);
}

// The CPU block cache: nearby sizes share blocks (a class, or up to a quarter larger), a
// block goes back under its real size, far larger requests get fresh memory, and the limit
// bounds what is kept.
TEST(Core, CpuBlockCacheReusesNearbySizes) {
  if (!tr::detail::kCacheEnabled) GTEST_SKIP() << "sanitizer build: blocks are never cached";
  size_t limit = size_t(256) << 20;
  tr::set_cpu_cache_limit(limit);  // also empties it
  EXPECT_EQ(tr::cpu_cached_bytes(), 0u);
  EXPECT_EQ(tr::detail::size_class(100000), 106496u);  // 64 KiB + 5 steps of 8 KiB
  EXPECT_EQ(tr::detail::size_class(16384), 16384u);
  EXPECT_EQ(tr::detail::size_class(16385), 20480u);    // the 4 KiB granule
  void* a = tr::cpu_alloc(110000);                      // class 114688
  ASSERT_NE(a, nullptr);
  std::memset(a, 1, 110000);
  tr::cpu_free(a, 110000);
  EXPECT_EQ(tr::cpu_cached_bytes(), 114688u);
  void* b = tr::cpu_alloc(100000);  // class 106496: takes the 114688 block (within a quarter)
  EXPECT_EQ(b, a);
  EXPECT_EQ(tr::cpu_cached_bytes(), 0u);
  tr::cpu_free(b, 100000);  // back under its real size
  EXPECT_EQ(tr::cpu_cached_bytes(), 114688u);
  void* c = tr::cpu_alloc(60000);  // class 61440: a block twice its size is not taken
  EXPECT_NE(c, a);
  void* d = tr::cpu_alloc(200000);  // larger than anything cached
  EXPECT_NE(d, a);
  EXPECT_EQ(tr::cpu_cached_bytes(), 114688u);
  tr::cpu_free(c, 60000);
  tr::cpu_free(d, 200000);
  EXPECT_EQ(tr::cpu_cached_bytes(), 114688u + 61440u + 212992u);
  // Small blocks bypass the cache; a full cache frees what comes back.
  void* s = tr::cpu_alloc(1000);
  tr::cpu_free(s, 1000);
  tr::set_cpu_cache_limit(150000);
  void* e = tr::cpu_alloc(120000);
  void* f = tr::cpu_alloc(120000);
  tr::cpu_free(e, 120000);
  tr::cpu_free(f, 120000);
  EXPECT_EQ(tr::cpu_cached_bytes(), 122880u);
  tr::set_cpu_cache_limit(limit);
  EXPECT_EQ(tr::cpu_cached_bytes(), 0u);
}
