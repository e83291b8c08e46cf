// Co-execution on a real GPU: the graph runner queues the device kernels of compiled blocks
// while the host thread keeps going. The programs are the ones the stand-in device runs in
// test_device (bit for bit there); here the GPU's kernels run, so eager and co-executed runs
// are compared within float32 tolerance (the runner thread has its own cuBLAS handle, and
// atomics-based kernels may sum in another order), with the engine's counts.
#include <cmath>
#include <cstring>

#include "cuda/cuda_test.hpp"
#include "exec/programs.hpp"

namespace tr = terra;

namespace {

std::vector<float> floats(const std::vector<unsigned char>& bytes) {
  std::vector<float> v(bytes.size() / sizeof(float));
  std::memcpy(v.data(), bytes.data(), v.size() * sizeof(float));
  return v;
}

void expect_close(const std::vector<double>& got, const std::vector<double>& want, double tol,
                  const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_LE(std::abs(got[i] - want[i]), tol * std::max(1.0, std::abs(want[i])))
        << what << " " << i << ": " << got[i] << " vs " << want[i];
}

}  // namespace

// A dynamic program (host batches, a host-picked head, a loss term added after a fetch, Adam)
// co-executed on the GPU gives eager's values, and most iterations really co-execute.
namespace {
void expect_matches_eager(const tr::EngineOptions& opts) {
  progs::Outcome eager = progs::device_dynamic(tt::kCuda, false);
  progs::Outcome co = progs::device_dynamic(tt::kCuda, true, 60, opts);
  std::cout << co.stats << "\n";
  EXPECT_EQ(co.decisions, eager.decisions);  // the host saw the same values
  expect_close(co.fetched, eager.fetched, 1e-5, "fetched loss");
  ASSERT_EQ(co.params.size(), eager.params.size());
  for (size_t i = 0; i < co.params.size(); ++i) {
    std::vector<float> a = floats(co.params[i]), b = floats(eager.params[i]);
    expect_close(std::vector<double>(a.begin(), a.end()), std::vector<double>(b.begin(), b.end()),
                 1e-4, "parameter");
  }
  EXPECT_GE(co.stats.coexecuted, 40);
  EXPECT_LE(co.stats.fallbacks, 12);
  if (opts.cuda_graphs) {  // the device stretches of the runs were launched as CUDA graphs
    EXPECT_GT(co.stats.graph_launches, 0) << co.stats;
    EXPECT_EQ(co.stats.graph_failures, 0) << co.stats;
  }
}
}  // namespace

TEST(CudaCoExec, DynamicTrainingMatchesEager) {
  TERRA_REQUIRE_GPU();
  expect_matches_eager({});
}

// The same with every stretch of device kernels recorded and launched as one CUDA graph
// (stream capture every run, cudaGraphExecUpdate in place).
TEST(CudaCoExec, DynamicTrainingWithCudaGraphsMatchesEager) {
  TERRA_REQUIRE_GPU();
  expect_matches_eager({.cuda_graphs = true});
}

// A kernel that fails inside a co-executed run on the GPU (an index out of range, checked on
// the device) surfaces at the read and at the next iteration(), naming the op.
TEST(CudaCoExec, KernelErrorInsideARunSurfaces) {
  TERRA_REQUIRE_GPU();
  progs::expect_error_at_the_read(progs::kernel_error_in_run(tt::kCuda));
}

// With CUDA graphs on, index_select runs outside them (its check reads back): same report.
TEST(CudaCoExec, KernelErrorSurfacesWithCudaGraphsOn) {
  TERRA_REQUIRE_GPU();
  progs::expect_error_at_the_read(progs::kernel_error_in_run(tt::kCuda, {.cuda_graphs = true}));
}
