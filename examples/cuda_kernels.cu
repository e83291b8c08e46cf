// terra's CUDA kernels for the GPU builds of the examples: the one unit compiled by nvcc; the
// examples themselves are ordinary C++ (they register before main).
#include <terra/cuda.hpp>
