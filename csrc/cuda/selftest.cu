// A launch that always fails, so tests can check on a GPU that a failed launch surfaces as a
// Python RuntimeError naming the op (a real op cannot be made to fail on demand).
#include <cuda_runtime.h>

#include "launch.cuh"

namespace sparsesnn {
namespace {
__global__ void noop_kernel() {}
}  // namespace

void cuda_launch_error_selftest(int device) {
  DeviceGuard guard(device, "launch_error_selftest");
  noop_kernel<<<1, 4096>>>();  // > 1024 threads per block: cudaErrorInvalidConfiguration
  check_launch("launch_error_selftest");
}

}  // namespace sparsesnn
