// examples/common.hpp: the progress line and the final check shared by the training examples.
#pragma once

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <terra/terra.hpp>

namespace example {

// Where to train: `--device cuda` (or TERRA_DEVICE=cuda) picks the GPU, else the CPU. The same
// source builds the CPU example and, with one .cu unit for terra's CUDA kernels, the GPU one.
inline terra::Device device(int argc, char** argv) {
  std::string name = std::getenv("TERRA_DEVICE") ? std::getenv("TERRA_DEVICE") : "cpu";
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == "--device") name = argv[i + 1];
  return name == "cuda" ? terra::Device::cuda() : terra::Device::cpu();
}
// Exit code 77 (CTest's "skipped") when the GPU was asked for and there is none.
#if defined(TERRA_WITH_CUDA)
inline bool gpu_missing(terra::Device d) { return d.is_cuda() && !terra::cuda::is_available(); }
#else
inline bool gpu_missing(terra::Device d) { return d.is_cuda(); }
#endif
inline constexpr int kSkipped = 77;

class Progress {
 public:
  explicit Progress(int batch) : batch_(batch), start_(clock::now()), last_(start_) {}
  // "step 50  loss 0.4123  1234 samples/s" every `every` steps (and at the last one).
  void report(int step, double loss, int every, int total) {
    ++since_;
    if (step % every != 0 && step != total - 1) return;
    auto now = clock::now();
    double secs = std::chrono::duration<double>(now - last_).count();
    std::printf("step %4d  loss %.4f  %8.0f samples/s\n", step, loss, since_ * batch_ / (secs > 0 ? secs : 1e-9));
    std::fflush(stdout);
    last_ = now;
    since_ = 0;
  }
  double seconds() const { return std::chrono::duration<double>(clock::now() - start_).count(); }

 private:
  using clock = std::chrono::steady_clock;
  int batch_;
  clock::time_point start_, last_;
  int since_ = 0;
};

// Print the verdict; the exit code tells CTest whether the threshold was reached.
inline int finish(const char* what, double value, double threshold, double seconds) {
  bool ok = value < threshold;
  std::printf("%s %.4f (threshold %.4f) after %.1f s: %s\n", what, value, threshold, seconds, ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}

}  // namespace example
