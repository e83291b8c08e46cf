// Conan test_package: a small program against the packaged headers.
#include <cstdio>
#include <cstring>

#include <terra/terra.hpp>

int main() {
  auto x = terra::arange(6.0).view({2, 3});
  auto y = (x * 2).sum();
  std::printf("terra %s: sum = %g\n", terra::version(), y.item<double>());
  if (std::strcmp(terra::version(), EXPECTED_VERSION) != 0) {
    std::fprintf(stderr, "headers say %s, the package says %s\n", terra::version(),
                 EXPECTED_VERSION);
    return 1;
  }
  return y.item<double>() == 30.0 ? 0 : 1;
}
