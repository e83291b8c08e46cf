// Every op of the table has a CPU kernel (or is a view) and at least one test.
#include "op_test.hpp"

TEST(OpTable, EveryOpHasACpuKernelAndATest) {
  for (int i = 0; i < terra::kNumOps; ++i) {
    auto op = static_cast<terra::Op>(i);
    const terra::OpInfo& info = terra::op_info(op);
    if (info.kind != terra::OpKind::View) {
      EXPECT_NE(terra::find_kernel(op, terra::Device::cpu()), nullptr) << info.name << " has no CPU kernel";
    }
    EXPECT_TRUE(tt::covered_ops().count(info.name)) << info.name << " has no test (TERRA_COVERS)";
  }
}
