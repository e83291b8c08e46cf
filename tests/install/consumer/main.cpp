// A user program built against an installed terra.
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>

#include <terra/terra.hpp>

int main() {
  namespace tr = terra;
  if (std::strcmp(tr::version(), EXPECTED_VERSION) != 0) {
    std::fprintf(stderr, "headers say version %s, package says %s\n", tr::version(),
                 EXPECTED_VERSION);
    return 1;
  }
  auto a = tr::arange(6.0).view({2, 3});
  auto b = tr::tensor<float>({10, 20, 30});
  auto c = a + b;  // broadcasting [2, 3] + [3]
  std::cout << c << "\n";
  auto v = c.to_vector<float>();
  if (c.shape() != tr::Shape({2, 3}) || v[0] != 10.0f || v[5] != 35.0f) {
    std::fprintf(stderr, "wrong result\n");
    return 1;
  }
  // Checkpoints record the same version in their JSON header.
  const std::string path = "consumer_checkpoint.tck";
  tr::save(tr::StateDict{{"c", c}}, path);
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.find(std::string("\"version\":\"") + EXPECTED_VERSION + "\"") == std::string::npos) {
    std::fprintf(stderr, "the checkpoint header does not record version %s\n", EXPECTED_VERSION);
    return 1;
  }
  try {
    (void)tr::tensor<float>({1, 2, 3}).view({2, 2});
    return 1;
  } catch (const tr::Error& e) {
    std::cout << "error as expected: " << e.what() << "\n";
  }
  return 0;
}
