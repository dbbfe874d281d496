// Max pooling of binary spike maps (spike_pool.h).
#include "spike_pool.h"

#include <algorithm>

namespace sparsesnn {
namespace runtime {
namespace {

void pool_2x2(const PoolShape& s, const float* x, float* y) {
  const int64_t H = s.H, W = s.W, OH = s.OH, OW = s.OW;
  for (int64_t pl = 0; pl < s.planes; ++pl) {
    const float* xp = x + pl * H * W;
    float* yp = y + pl * OH * OW;
    for (int64_t oy = 0; oy < OH; ++oy) {
      const float* r0 = xp + 2 * oy * W;
      const float* r1 = r0 + W;
      float* out = yp + oy * OW;
#pragma omp simd
      for (int64_t ox = 0; ox < OW; ++ox)
        out[ox] = std::max(std::max(r0[2 * ox], r0[2 * ox + 1]), std::max(r1[2 * ox], r1[2 * ox + 1]));
    }
  }
}

}  // namespace

void max_pool_spikes(const PoolShape& s, const float* x, float* y) {
  if (s.kh == 2 && s.kw == 2 && s.sh == 2 && s.sw == 2 && s.ph == 0 && s.pw == 0)
    return pool_2x2(s, x, y);
  const int64_t H = s.H, W = s.W, OH = s.OH, OW = s.OW;
  for (int64_t pl = 0; pl < s.planes; ++pl) {
    const float* xp = x + pl * H * W;
    float* yp = y + pl * OH * OW;
    for (int64_t oy = 0; oy < OH; ++oy) {
      const int64_t y0 = oy * s.sh - s.ph, ya = std::max<int64_t>(y0, 0), yb = std::min<int64_t>(y0 + s.kh, H);
      for (int64_t ox = 0; ox < OW; ++ox) {
        const int64_t x0 = ox * s.sw - s.pw, xa = std::max<int64_t>(x0, 0), xb = std::min<int64_t>(x0 + s.kw, W);
        float m = 0.0f;  // every window holds at least one input (padding <= kernel / 2)
        for (int64_t iy = ya; iy < yb; ++iy)
          for (int64_t ix = xa; ix < xb; ++ix) m = std::max(m, xp[iy * W + ix]);
        yp[oy * OW + ox] = m;
      }
    }
  }
}

}  // namespace runtime
}  // namespace sparsesnn
