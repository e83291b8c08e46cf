// terra/backend/cuda/graphs.hpp: recording part of a co-executed run as one CUDA graph (the
// DeviceBackend capture hooks; exec::CpuExecutor decides what to record, see
// docs/coexecution.md "CUDA graphs").
//
// Each run records its segment again with stream capture (which submits nothing to the
// device) and updates the segment's executable in place with cudaGraphExecUpdate: kernel
// arguments (host scalars such as the learning rate, Adam's step, Philox offsets) and addresses
// (values the host holds, temporaries) may change from run to run without a new
// instantiation; the device then runs the segment from one graph launch. Recording every run
// also keeps temporaries safe without a private pool (see Recorders).
#pragma once

#include <string>

#include "terra/backend/cuda/runtime.hpp"
#include "terra/ops/op.hpp"

namespace terra::cuda::detail {

// Gives the cached blocks made for stream s back to the driver (allocator.hpp).
inline void release_stream_blocks(int device, cudaStream_t s);

// Per thread and device: the private stream this thread records on, made on first use and
// destroyed with the thread. Never shared between threads: a temporary taken from the caching
// allocator while recording is cached for this stream, and reused only by this thread's later
// recordings, whose graphs run after the earlier ones (a run ends once its device is idle).
struct Recorders {
  cudaStream_t streams[kMaxDevices] = {};
  cudaStream_t get(int device) {
    cudaStream_t& s = streams[device];
    if (!s) {
      DeviceGuard g(device);
      TERRA_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    }
    return s;
  }
  ~Recorders() {  // errors ignored: at exit the runtime may already be gone
    for (int d = 0; d < kMaxDevices; ++d) {
      if (!streams[d]) continue;
      release_stream_blocks(d, streams[d]);
      cudaStreamDestroy(streams[d]);
      cudaGetLastError();
    }
  }
};
inline Recorders& recorders() {
  thread_local Recorders r;
  return r;
}

// Per thread and device: the stream a recording replaced (restored by end_capture).
struct Recording {
  bool on = false;
  cudaStream_t prev = nullptr;      // thread_streams()[device] before (null: the default)
  cudaStream_t recorder = nullptr;  // the private stream being recorded
};
inline Recording* recordings() {
  thread_local Recording table[kMaxDevices] = {};
  return table;
}

inline std::string cuda_why(const char* call, cudaError_t e) {
  cudaGetLastError();
  return std::string(call) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
}

inline bool backend_begin_capture(int index, std::string* why) {
  Recording& r = recordings()[index];
  TERRA_CHECK(!r.on, "graph.run", "a CUDA graph is already being recorded on cuda:", index);
  DeviceGuard g(index);
  cudaStream_t s = recorders().get(index);
  // Relaxed: allocator misses (cudaMalloc) and library set-up (cuBLAS, cuDNN handles) may
  // happen while recording; calls that wait on the stream still fail, and end the recording.
  cudaError_t e = cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed);
  if (e != cudaSuccess) {
    *why = cuda_why("cudaStreamBeginCapture", e);
    return false;
  }
  r = {true, thread_streams()[index], s};
  thread_streams()[index] = s;
  return true;
}

inline bool backend_end_capture(int index, void** graph, bool ok, std::string* why) {
  Recording& r = recordings()[index];
  TERRA_CHECK(r.on, "graph.run", "no CUDA graph is being recorded on cuda:", index);
  DeviceGuard g(index);
  thread_streams()[index] = r.prev;
  cudaStream_t s = r.recorder;
  r = {};
  cudaGraph_t rec = nullptr;
  cudaError_t e = cudaStreamEndCapture(s, &rec);
  if (e != cudaSuccess || rec == nullptr) {
    if (ok) *why = cuda_why("cudaStreamEndCapture", e);
    cudaGetLastError();
    if (rec) cudaGraphDestroy(rec);
    return false;
  }
  if (!ok) {
    cudaGraphDestroy(rec);
    return false;
  }
  auto exec = static_cast<cudaGraphExec_t>(*graph);
  if (exec) {  // same kernels in the same order: only arguments and addresses change
    cudaGraphExecUpdateResultInfo info{};
    if (cudaGraphExecUpdate(exec, rec, &info) != cudaSuccess) {
      cudaGetLastError();
      cudaGraphExecDestroy(exec);
      exec = nullptr;
      *graph = nullptr;
    }
  }
  if (!exec) {
    e = cudaGraphInstantiate(&exec, rec, 0);
    if (e != cudaSuccess) {
      *why = cuda_why("cudaGraphInstantiate", e);
      cudaGraphDestroy(rec);
      return false;
    }
    *graph = exec;
  }
  cudaGraphDestroy(rec);
  TERRA_CUDA_CHECK(cudaGraphLaunch(exec, current_stream(index)));
  return true;
}

inline void backend_destroy_graph(void* graph) {
  // At exit the runtime may be gone before the last executor: nothing to report then.
  if (graph && cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(graph)) != cudaSuccess)
    cudaGetLastError();
}

// Kernels that read device values back to check them (index ranges) cannot be recorded; they run
// outside graphs and report bad indices exactly as eager execution does.
inline bool backend_capturable(int op) {
  switch (static_cast<Op>(op)) {
    case Op::IndexSelect:
    case Op::Gather:
    case Op::ScatterAdd:
    case Op::MaskedSelect:
    case Op::OneHot:
    case Op::MaxPool2dBackward:
      return false;
    default:
      return true;
  }
}

}  // namespace terra::cuda::detail
