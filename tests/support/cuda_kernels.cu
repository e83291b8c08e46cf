// terra's CUDA kernels, compiled once (by nvcc) for the CUDA tests and benchmarks, which are
// ordinary .cpp units: the kernels register themselves before main.
#include <terra/cuda.hpp>
