// terra/core/device_backend.hpp: what core/ needs from a device backend (memory, copies,
// synchronization), as a table of function pointers the backend fills in when it is linked.
// core/ knows nothing of CUDA: a CPU-only program simply has no entry for DeviceType::CUDA, and
// every use of such a device reports that no backend was built in.
#pragma once

#include <cstddef>
#include <string>

#include "terra/core/device.hpp"
#include "terra/core/error.hpp"

namespace terra {

struct DeviceBackend {
  const char* name;  // "cuda"
  // nbytes on device `index`; throws terra::Error (with the allocator's state) when out of memory.
  void* (*alloc)(size_t nbytes, int index);
  void (*free)(void* p, size_t nbytes, int index);
  // nbytes from src to dst, where at least one side is this backend's device. non_blocking: may
  // return before the copy is done (host-to-device only; the host source is staged first, so
  // the caller may reuse it at once). Device-to-host copies are complete on return.
  void (*copy)(void* dst, Device dst_dev, const void* src, Device src_dev, size_t nbytes,
               bool non_blocking);
  // Waits until the work queued on device `index` (all streams) is done.
  void (*synchronize)(int index);
  // Optional (null: the backend has no streams). The calling thread's current stream on device
  // `index`, as an opaque handle, and making `stream` (null: the default) its current stream.
  // A graph runner queues a run's kernels on the stream the host thread had when it launched
  // the run, so they are ordered after every op the host queued before.
  void* (*get_stream)(int index) = nullptr;
  void (*set_stream)(void* stream, int index) = nullptr;
  // Optional (null: no graphs). Recording part of a run as one device graph (exec::CpuExecutor,
  // EngineOptions::cuda_graphs). begin_capture switches the calling thread to a private stream
  // of device `index` that records the work queued on it instead of running it; false (with
  // *why) when recording cannot start. end_capture stops recording and makes the previous
  // stream current again; when `ok` it turns the recording into *graph (updating the
  // executable there in place when only kernel arguments and addresses changed, making a new
  // one otherwise) and queues it on that stream, where the recorded work would have run.
  // False (with *why) when it did not queue it: nothing recorded has run then. A failed
  // launch throws. destroy_graph frees an executable end_capture left in *graph.
  // capturable(op) says whether op's kernels may be recorded: false for kernels that read
  // device values back to the host (the index checks of index_select and its kin), which run
  // outside graphs so their errors are reported as eager execution reports them.
  bool (*begin_capture)(int index, std::string* why) = nullptr;
  bool (*end_capture)(int index, void** graph, bool ok, std::string* why) = nullptr;
  void (*destroy_graph)(void* graph) = nullptr;
  bool (*capturable)(int op) = nullptr;
};

namespace detail {
// Per device type; null where no backend is linked. Written once, by the backend's registration
// (a static initializer of its header), before main.
inline const DeviceBackend*& device_backend_slot(DeviceType t) {
  static const DeviceBackend* table[kNumDeviceTypes] = {};
  return table[static_cast<int>(t)];
}
}  // namespace detail

// The backend of `d`; throws terra::Error naming `what` when this program has none.
inline const DeviceBackend& device_backend(Device d, const char* what) {
  const DeviceBackend* b = detail::device_backend_slot(d.type);
  if (TERRA_UNLIKELY(b == nullptr)) {
    detail::fail(what, "no backend for ", d,
                 " in this program: link terra::cuda (CMake) so that TERRA_WITH_CUDA is defined, "
                 "and include <terra/cuda.hpp> in one .cu unit for the kernels");
  }
  return *b;
}

}  // namespace terra
