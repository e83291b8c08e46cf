// terra/core/philox.hpp: the counter-based random number generator (Philox-4x32-10).
// Element i of a random tensor is a pure function of (seed, offset + i), so every device, and
// every replay of a graph fed the same (seed, offset), draws the same numbers.
#pragma once

#include <atomic>
#include <cmath>
#include <cstdint>

#include "terra/core/config.hpp"

namespace terra {

struct Philox4 {
  uint32_t v[4];
};

// Philox-4x32's round multipliers and key increments (Salmon et al., SC'11). Dropout's vector
// paths (backend/cpu/nn.hpp) run the same rounds 8 or 16 blocks at a time with these.
inline constexpr uint32_t kPhiloxM0 = 0xD2511F53u, kPhiloxM1 = 0xCD9E8D57u;
inline constexpr uint32_t kPhiloxW0 = 0x9E3779B9u, kPhiloxW1 = 0xBB67AE85u;

// One Philox-4x32 block: 10 rounds over a 128-bit counter with a 64-bit key.
TERRA_HD Philox4 philox4x32_10(uint64_t counter, uint64_t key) {
  uint32_t c0 = uint32_t(counter), c1 = uint32_t(counter >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = uint32_t(key), k1 = uint32_t(key >> 32);
  for (int r = 0; r < 10; ++r) {
    uint64_t p0 = uint64_t(kPhiloxM0) * c0, p1 = uint64_t(kPhiloxM1) * c2;
    uint32_t n0 = uint32_t(p1 >> 32) ^ c1 ^ k0, n2 = uint32_t(p0 >> 32) ^ c3 ^ k1;
    c1 = uint32_t(p1);
    c3 = uint32_t(p0);
    c0 = n0;
    c2 = n2;
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  return {{c0, c1, c2, c3}};
}

// The draws of element `index` of a tensor generated at (seed, offset): one Philox block each.
struct PhiloxDraw {
  // [0, 1) with 24 random bits.
  static TERRA_HD float uniform_f32(uint64_t seed, uint64_t index) {
    return float(philox4x32_10(index, seed).v[0] >> 8) * (1.0f / 16777216.0f);
  }
  // [0, 1) with 53 random bits.
  static TERRA_HD double uniform_f64(uint64_t seed, uint64_t index) {
    Philox4 r = philox4x32_10(index, seed);
    uint64_t bits = (uint64_t(r.v[0]) << 21) ^ uint64_t(r.v[1] >> 11);
    return double(bits & ((uint64_t(1) << 53) - 1)) * (1.0 / 9007199254740992.0);
  }
  // Standard normal by Box-Muller, computed in double so devices agree to the last bit of a
  // float32 result.
  static TERRA_HD double normal(uint64_t seed, uint64_t index) {
    Philox4 r = philox4x32_10(index, seed);
    uint64_t a = (uint64_t(r.v[0]) << 32) | r.v[1], b = (uint64_t(r.v[2]) << 32) | r.v[3];
    double u1 = (double(a >> 11) + 1.0) * (1.0 / 9007199254740992.0);  // (0, 1]
    double u2 = double(b >> 11) * (1.0 / 9007199254740992.0);          // [0, 1)
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
  }
  // 64 random bits.
  static TERRA_HD uint64_t bits64(uint64_t seed, uint64_t index) {
    Philox4 r = philox4x32_10(index, seed);
    return (uint64_t(r.v[0]) << 32) | r.v[1];
  }
};

// A generator is (seed, offset); each random op takes `numel` consecutive offsets.
struct Generator {
  uint64_t seed = 0;
  uint64_t offset = 0;

  // Reserve n counters and return the first.
  uint64_t advance(uint64_t n) {
    uint64_t o = offset;
    offset += n;
    return o;
  }
};

namespace detail {
inline std::atomic<uint64_t>& default_seed() {
  static std::atomic<uint64_t> s{67280421310721ull};
  return s;
}
struct ThreadGenerator {
  Generator gen;
  uint64_t epoch = ~uint64_t(0);  // the process seed epoch this generator was seeded from
};
inline std::atomic<uint64_t>& seed_epoch() {
  static std::atomic<uint64_t> e{0};
  return e;
}
}  // namespace detail

// The calling thread's default generator. Each host thread has its own, so two threads
// training at once draw reproducible numbers; manual_seed() reseeds all of them.
inline Generator& default_generator() {
  thread_local detail::ThreadGenerator tg;
  uint64_t epoch = detail::seed_epoch().load(std::memory_order_acquire);
  if (tg.epoch != epoch) {
    tg.gen = Generator{detail::default_seed().load(std::memory_order_relaxed), 0};
    tg.epoch = epoch;
  }
  return tg.gen;
}

// Seed every thread's default generator (each restarts at offset 0).
inline void manual_seed(uint64_t seed) {
  detail::default_seed().store(seed, std::memory_order_relaxed);
  detail::seed_epoch().fetch_add(1, std::memory_order_release);
}

// Seed only the calling thread's default generator (restarting at offset 0), so that threads
// training side by side are each reproducible whatever the others do; a later manual_seed()
// reseeds this one too.
inline void thread_manual_seed(uint64_t seed) {
  Generator& g = default_generator();  // brings the thread up to the current epoch first
  g = Generator{seed, 0};
}

}  // namespace terra
