// Surrogate derivative sg'(x) evaluated in the backward pass; host and device.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include "sparsesnn/common.h"

#if defined(__CUDACC__)
#define SSNN_HD __host__ __device__ __forceinline__
#else
#define SSNN_HD inline
#endif

namespace sparsesnn {

// exp(x) to about 2 ulp (Cephes range reduction + degree-6 polynomial). Written without
// library calls so the CPU compiler vectorizes loops that use it; CUDA uses its own expf.
SSNN_HD float exp_approx(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);  // selects vectorize; fminf may not
  const float n = floorf(x * 1.44269504088896341f + 0.5f);
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
#endif
}

SSNN_HD float surrogate_grad(int kind, float x, float alpha) {
  switch (kind) {
    case kSigmoid: {
      const float s = 1.0f / (1.0f + exp_approx(-alpha * x));
      return alpha * s * (1.0f - s);
    }
    case kAtan: {
      const float u = 1.5707963267948966f * alpha * x;
      return alpha / (2.0f * (1.0f + u * u));
    }
    case kPiecewiseQuadratic: {
      const float g = alpha - alpha * alpha * fabsf(x);
      return g <= 0.0f ? 0.0f : g;  // written so a NaN stays NaN, as torch's clamp keeps it
    }
    case kSuperSpike: {
      const float d = 1.0f + fabsf(x);
      return alpha / (d * d);
    }
    default: {  // kTriangle
      const float g = 1.0f - fabsf(x);
      return g <= 0.0f ? 0.0f : alpha * g;
    }
  }
}

// Compile-time surrogate so the CPU loops contain no switch and vectorize.
template <int KIND>
SSNN_HD float surrogate_grad_t(float x, float alpha) {
  return surrogate_grad(KIND, x, alpha);
}

}  // namespace sparsesnn
