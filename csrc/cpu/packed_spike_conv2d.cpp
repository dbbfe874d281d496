// Event-driven conv2d over packed weights (see packed_conv2d.h). Per image: list the nonzero
// input pixels, and for each one and each kernel tap that lands on an output position, add
// the packed row (c, ky, kx) -- all O output channels -- into that position's accumulators.
// Binary input accumulates the unsigned codes in int32 plus a per-position event count (the
// code offset is removed once at the end); analog input accumulates x * u in fp32.
// Accumulators per position are de-interleaved ([slot][byte]) so the row add is unit-stride.
#include <cstring>
#include <vector>

#include "packed_common.h"
#include "parallel.h"
#include "sparsesnn/pack.h"
#include "sparsesnn/packed_conv2d.h"

namespace sparsesnn {
namespace {

using packed_detail::group_len;
using packed_detail::list_nonzero;

template <int BITS, bool SPIKE>
void run(const PackedConv2dParams& p, const float* x, const uint8_t* w, const float* scale,
         const float* bias, float* y) {
  constexpr bool F32 = BITS == 32;
  constexpr int P = F32 ? 1 : 8 / BITS;
  constexpr unsigned MASK = F32 ? 0u : (1u << (F32 ? 1 : BITS)) - 1u;
  const int64_t O = p.O, KH = p.KH, KW = p.KW, H = p.H, W = p.W, OH = p.OH, OW = p.OW;
  const int64_t CHW = p.C * H * W, HW = H * W, KK = p.C * KH * KW, OP = OH * OW;
  const int64_t rb = F32 ? O * 4 : packed_row_bytes(O, BITS);
  const int64_t stride_pos = F32 ? O : P * rb;  // accumulator entries per output position
  const int64_t glen = group_len(KK, p.group_size), G = (KK + glen - 1) / glen;
  const float mul = F32 ? 1.0f : static_cast<float>(code_mul(BITS));
  const float off = F32 ? 0.0f : static_cast<float>(code_off(BITS));
  parallel_chunks(p.NB, 1, p.threads, [&](int64_t b0, int64_t b1) {
    std::vector<int32_t> act(static_cast<size_t>(CHW));
    using Acc = std::conditional_t<SPIKE && !F32, int32_t, float>;
    std::vector<Acc> acc(static_cast<size_t>(OP * stride_pos));
    std::vector<float> cnt(static_cast<size_t>(OP));
    std::vector<float> yf(static_cast<size_t>(OP * O));
    for (int64_t b = b0; b < b1; ++b) {
      const float* xb = x + b * CHW;
      const int64_t na = list_nonzero(xb, CHW, act.data());
      std::fill(yf.begin(), yf.end(), 0.0f);
      for (int64_t g = 0; g < G; ++g) {
        std::fill(acc.begin(), acc.end(), Acc(0));
        std::fill(cnt.begin(), cnt.end(), 0.0f);
        bool any = false;
        for (int64_t i = 0; i < na; ++i) {
          const int64_t e = act[i], c = e / HW, iy = (e % HW) / W, ix = e % W;
          const float xv = xb[e];
          for (int64_t ky = 0; ky < KH; ++ky) {
            const int64_t ny = iy + p.ph - ky * p.dh;
            if (ny < 0 || ny % p.sh) continue;
            const int64_t oy = ny / p.sh;
            if (oy >= OH) continue;
            for (int64_t kx = 0; kx < KW; ++kx) {
              const int64_t r = (c * KH + ky) * KW + kx;
              if (r / glen != g) continue;
              const int64_t nx = ix + p.pw - kx * p.dw;
              if (nx < 0 || nx % p.sw) continue;
              const int64_t ox = nx / p.sw;
              if (ox >= OW) continue;
              any = true;
              const int64_t pos = oy * OW + ox;
              Acc* a = acc.data() + pos * stride_pos;
              if constexpr (F32) {
                const float* row = reinterpret_cast<const float*>(w + r * rb);
#pragma omp simd
                for (int64_t o = 0; o < O; ++o) a[o] += SPIKE ? row[o] : xv * row[o];
              } else {
                const uint8_t* row = w + r * rb;
                cnt[pos] += SPIKE ? 1.0f : xv;
                for (int s = 0; s < P; ++s) {
                  Acc* as = a + s * rb;
#pragma omp simd
                  for (int64_t j = 0; j < rb; ++j) {
                    const unsigned u = (static_cast<unsigned>(row[j]) >> (s * (F32 ? 0 : BITS))) & MASK;
                    if constexpr (SPIKE) as[j] += static_cast<Acc>(u);
                    else as[j] += xv * static_cast<float>(u);
                  }
                }
              }
            }
          }
        }
        if (!any) continue;
        for (int64_t pos = 0; pos < OP; ++pos) {
          const Acc* a = acc.data() + pos * stride_pos;
          float* out = yf.data() + pos * O;
          if constexpr (F32) {
            for (int64_t o = 0; o < O; ++o) out[o] += static_cast<float>(a[o]);
          } else {
            const float oc = off * cnt[pos];
            for (int64_t o = 0; o < O; ++o) {
              const Acc av = a[(o % P) * rb + o / P];
              float codes;
              // Integer path: mul * acc - off * count is exact in int32 before the scale.
              if constexpr (SPIKE)
                codes = static_cast<float>(code_mul(BITS) * av -
                                           code_off(BITS) * static_cast<int32_t>(cnt[pos]));
              else
                codes = mul * av - oc;
              out[o] += scale[o * G + g] * codes;
            }
          }
        }
      }
      float* yb = y + b * O * OP;
      for (int64_t o = 0; o < O; ++o) {
        const float bo = bias ? bias[o] : 0.0f;
        for (int64_t pos = 0; pos < OP; ++pos) yb[o * OP + pos] = yf[pos * O + o] + bo;
      }
    }
  });
}

template <bool SPIKE>
void dispatch(const PackedConv2dParams& p, const float* x, const uint8_t* w, const float* scale,
              const float* bias, float* y) {
  switch (p.bits) {
    case 8: run<8, SPIKE>(p, x, w, scale, bias, y); break;
    case 4: run<4, SPIKE>(p, x, w, scale, bias, y); break;
    case 2: run<2, SPIKE>(p, x, w, scale, bias, y); break;
    case 1: run<1, SPIKE>(p, x, w, scale, bias, y); break;
    default: run<32, SPIKE>(p, x, w, scale, bias, y); break;
  }
}

}  // namespace

void packed_spike_conv2d_cpu(const PackedConv2dParams& p, bool spike, const float* x,
                             const void* weights, const float* scale, const float* bias,
                             float* y) {
  if (p.NB == 0 || p.O == 0 || p.OH == 0 || p.OW == 0) return;
  const auto* w = static_cast<const uint8_t*>(weights);
  if (spike) dispatch<true>(p, x, w, scale, bias, y);
  else dispatch<false>(p, x, w, scale, bias, y);
}

}  // namespace sparsesnn
