// examples/demo.cpp: a tour of terra's eager CPU tensors: factories, broadcasting,
// reductions, views without copies, and printing. Run with `bash scripts/demo.sh`.
#include <cstdio>
#include <iostream>

#include <terra/terra.hpp>

namespace tr = terra;

int main() {
  std::printf("terra %s\n\n", tr::version());
  tr::manual_seed(0);

  // ---- tensors ----
  auto x = tr::arange(12.0).view({3, 4});  // float32 [3, 4]
  std::cout << "x = arange(12).view({3, 4}):\n" << x << "\n\n";
  auto noise = tr::randn({3, 4});  // Philox: the same numbers for the same seed
  std::cout << "randn({3, 4}) with seed 0:\n" << noise << "\n\n";

  // ---- broadcasting: [3, 4] * [4] + [3, 1] -> [3, 4] ----
  auto scale = tr::tensor<float>({0.5f, 1, 2, 4});
  auto shift = tr::tensor<float>({-1, 0, 1}, {3, 1});
  auto y = x * scale + shift;
  std::cout << "y = x * [0.5, 1, 2, 4] + [[-1], [0], [1]]:\n" << y << "\n\n";

  // ---- reductions ----
  std::cout << "x.sum() = " << x.sum().item<float>() << "\n";
  std::cout << "x.mean({0}) (column means):\n" << x.mean({0}) << "\n";
  std::cout << "x.sum({1}, /*keepdim=*/true):\n" << x.sum({1}, true) << "\n\n";

  // ---- views share storage: writing through one shows in the other ----
  auto xt = x.t();                  // [4, 3], strides swapped, no copy
  auto row = x.select(0, 1);        // the second row, [4]
  auto cols = x.slice(1, 0, 4, 2);  // every other column, [3, 2]
  std::cout << "x.t() contiguous? " << std::boolalpha << xt.is_contiguous()
            << ", shares storage with x? " << (xt.storage() == x.storage()) << "\n";
  row.fill_(-1.0);
  std::cout << "after x.select(0, 1).fill_(-1), x.slice(1, 0, 4, 2):\n" << cols << "\n\n";

  // ---- dtypes and promotion ----
  auto ints = tr::arange(6.0).to(tr::kInt64).view({2, 3});
  std::cout << "int64 tensor:\n" << ints << "\n";
  std::cout << "ints > 2:\n" << (ints > 2) << "\n";
  std::cout << "ints / 2 (true division promotes to float32):\n" << ints / 2 << "\n\n";

  // ---- errors name the op and the offending shapes ----
  try {
    auto bad = x + tr::ones({2, 4});
    (void)bad;
  } catch (const tr::Error& e) {
    std::cout << "caught: " << e.what() << "\n\n";
  }

  // ---- large tensors print summarized ----
  std::cout << "arange(3000).view({30, 100}):\n"
            << tr::arange(3000.0).view({30, 100}).to(tr::kInt32) << "\n";
  return 0;
}
