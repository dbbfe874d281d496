// Rounding of a value onto a fixed-point grid (step * k, clamped), host and device.
// Must match sparsesnn/fixed_point.py bit for bit.
#pragma once
#include <cmath>
#include <cstdint>

#include "sparsesnn/surrogate.h"  // SSNN_HD

namespace sparsesnn {

enum Rounding : int { kNearest = 0, kTruncate = 1, kStochastic = 2 };

// Murmur3 finalizer: a cheap, well-mixed 32-bit hash.
SSNN_HD uint32_t mix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}

// Uniform in [0, 1) from (seed, index), 24 random bits; counter-based, so the same seed gives
// the same numbers on every device and thread layout.
SSNN_HD float hash_uniform(uint32_t seed, uint64_t index) {
  const uint32_t hi = static_cast<uint32_t>(index >> 32), lo = static_cast<uint32_t>(index);
  const uint32_t h = mix32(lo ^ mix32(seed + hi * 0x9e3779b9u));
  return static_cast<float>(h >> 8) * (1.0f / 16777216.0f);
}

SSNN_HD float round_to_grid(float x, float step, float lo, float hi, int mode, float u) {
  const float k = x / step;
  float r;
  if (mode == kNearest) r = roundf(k);
  else if (mode == kTruncate) r = truncf(k);
  else r = floorf(k + u);
  const float q = r * step;
  return fminf(fmaxf(q, lo), hi);
}

}  // namespace sparsesnn
