// What every CUDA entry point does around its launches: run on the tensors' device, and turn a
// failed launch into an exception (pybind11 raises it in Python as RuntimeError naming the op),
// so a bad launch never returns uninitialised memory as a result.
#pragma once
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace sparsesnn {

[[noreturn]] inline void throw_cuda(const char* op, const char* what, cudaError_t err) {
  throw std::runtime_error(std::string("sparsesnn::") + op + " (CUDA): " + what + ": " +
                           cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
}

// Makes `device` current for the scope and restores the previous device after, as
// c10::cuda::CUDAGuard does (csrc does not link libtorch). Without it, tensors on cuda:1
// while cuda:0 is current would be launched on the wrong GPU.
class DeviceGuard {
 public:
  DeviceGuard(int device, const char* op) {
    cudaError_t err = cudaGetDevice(&prev_);
    if (err != cudaSuccess) throw_cuda(op, "cudaGetDevice failed", err);
    if (prev_ != device) {
      err = cudaSetDevice(device);
      if (err != cudaSuccess) throw_cuda(op, ("cudaSetDevice(" + std::to_string(device) + ") failed").c_str(), err);
      restore_ = true;
    }
  }
  ~DeviceGuard() {
    if (restore_) cudaSetDevice(prev_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = 0;
  bool restore_ = false;
};

// Call right after a launch: a bad configuration (grid/block limits, shared memory) or a
// sticky error from an earlier fault is reported here instead of being silently dropped.
inline void check_launch(const char* op) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw_cuda(op, "kernel launch failed", err);
}

constexpr int64_t kMaxGridY = 65535;  // hardware limit of gridDim.y (and z)

}  // namespace sparsesnn
