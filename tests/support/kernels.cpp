// The kernels of the test binaries, compiled once (TERRA_SEPARATE_KERNELS).
#include <terra/kernels_tu.hpp>
