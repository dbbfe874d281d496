// Shared definitions for the torch-free kernels: surrogate ids and a thread helper.
#pragma once
#include <cstdint>

namespace sparsesnn {

// Must match sparsesnn/surrogate.py.
enum Surrogate : int {
  kSigmoid = 0,             // alpha * sig(alpha x) * (1 - sig(alpha x))
  kAtan = 1,                // alpha / (2 (1 + (pi/2 alpha x)^2))
  kPiecewiseQuadratic = 2,  // max(0, alpha - alpha^2 |x|)
  kSuperSpike = 3,          // alpha / (1 + |x|)^2
  kTriangle = 4,            // alpha * max(0, 1 - |x|)
};

// Element dtypes a kernel may be asked to read or write (CUDA supports all, CPU fp32).
enum DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

}  // namespace sparsesnn
