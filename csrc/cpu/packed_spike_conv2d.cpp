// Event-driven conv2d over packed weights (see packed_conv2d.h).
// Binary spikes with one scale group take the register-tiled gather kernel (conv_gather.h).
// The general kernel below serves analog input, scale groups and fp32 rows. Per image: list the nonzero
// input pixels, and for each one and each kernel tap that lands on an output position, add
// the packed row (c, ky, kx) -- all O output channels -- into that position's accumulators.
// Binary input accumulates the unsigned codes in int32 plus a per-position event count (the
// code offset is removed once at the end); analog input accumulates x * u in fp32.
// Accumulators per position are de-interleaved ([slot][byte]) so the row add is unit-stride.
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "conv_gather.h"
#include "packed_common.h"
#include "parallel.h"
#include "sparsesnn/pack.h"
#include "sparsesnn/packed_conv2d.h"

namespace sparsesnn {
namespace {

using packed_detail::group_len;
using packed_detail::num_groups;
using packed_detail::list_nonzero;

// acc[s * stride_s + j] += slot s of row byte j (times xv for the analog path), j < nbytes.
template <int BITS, typename Acc>
inline void add_row(const uint8_t* row, int64_t nbytes, Acc* acc, int64_t stride_s, float xv) {
  constexpr int P = 8 / BITS;
  constexpr unsigned MASK = (1u << BITS) - 1u;
#if defined(SPARSESNN_PACKED_AVX512)
  const __m512i vm = _mm512_set1_epi32(static_cast<int>(MASK));
  const __m512 xvv = _mm512_set1_ps(xv);
  for (int64_t j = 0; j < nbytes; j += 16) {
    const int64_t left = nbytes - j;
    const __mmask16 m = left >= 16 ? 0xffff : static_cast<__mmask16>((1u << left) - 1u);
    const __m512i v = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, row + j));
#pragma GCC unroll 8
    for (int s = 0; s < P; ++s) {
      __m512i u = s == 0 ? v : _mm512_srli_epi32(v, s * BITS);
      if (s + 1 < P) u = _mm512_and_si512(u, vm);
      Acc* a = acc + s * stride_s + j;
      if constexpr (std::is_same_v<Acc, int32_t>) {
        _mm512_mask_storeu_epi32(a, m, _mm512_add_epi32(_mm512_maskz_loadu_epi32(m, a), u));
      } else {
        const __m512 f = _mm512_fmadd_ps(xvv, _mm512_cvtepi32_ps(u), _mm512_maskz_loadu_ps(m, a));
        _mm512_mask_storeu_ps(a, m, f);
      }
    }
  }
#else
  for (int s = 0; s < P; ++s) {
    Acc* as = acc + s * stride_s;
#pragma omp simd
    for (int64_t j = 0; j < nbytes; ++j) {
      const unsigned u = (static_cast<unsigned>(row[j]) >> (s * BITS)) & MASK;
      if constexpr (std::is_same_v<Acc, int32_t>) as[j] += static_cast<Acc>(u);
      else as[j] += xv * static_cast<float>(u);
    }
  }
#endif
}

template <int BITS, bool SPIKE>
void run(const PackedConv2dParams& p, const float* x, const uint8_t* w, const float* scale,
         const float* bias, float* y) {
  constexpr bool F32 = BITS == 32;
  constexpr int P = F32 ? 1 : 8 / BITS;
  const int64_t O = p.O, KH = p.KH, KW = p.KW, H = p.H, W = p.W, OH = p.OH, OW = p.OW;
  const int64_t CHW = p.C * H * W, HW = H * W, KK = p.C * KH * KW, OP = OH * OW;
  const int64_t rb = F32 ? O * 4 : packed_row_bytes(O, BITS);  // full row stride
  const int64_t glen = group_len(KK, p.group_size), G = num_groups(KK, p.group_size);
  const float mul = F32 ? 1.0f : static_cast<float>(code_mul(BITS));
  const float off = F32 ? 0.0f : static_cast<float>(code_off(BITS));
  // Fewer images than threads: also split the output channels (at multiples of 8 so every
  // part starts on a byte boundary of the packed rows).
  const int64_t parts = p.NB >= p.threads ? 1 : std::max<int64_t>(1, std::min<int64_t>(p.threads, O / 32));
  parallel_chunks(p.NB * parts, 1, p.threads, [&](int64_t w0, int64_t w1) {
    std::vector<int32_t> act(static_cast<size_t>(CHW));
    using Acc = std::conditional_t<SPIKE && !F32, int32_t, float>;
    std::vector<Acc> acc;
    std::vector<float> cnt(static_cast<size_t>(OP));
    std::vector<float> yf;
    for (int64_t wi = w0; wi < w1; ++wi) {
      const int64_t b = wi / parts, part = wi % parts;
      const int64_t o0 = (O * part / parts) / 8 * 8;
      const int64_t o1 = part + 1 == parts ? O : (O * (part + 1) / parts) / 8 * 8;
      const int64_t Op = o1 - o0;
      if (Op <= 0) continue;
      // Part-local row segment: Op codes starting at byte o0 * bits / 8 (or float o0).
      const int64_t seg0 = F32 ? o0 * 4 : o0 * BITS / 8;
      const int64_t rbp = F32 ? Op * 4 : packed_row_bytes(Op, BITS);
      const int64_t stride_pos = F32 ? Op : P * rbp;  // accumulator entries per position
      acc.resize(static_cast<size_t>(OP * stride_pos));
      yf.assign(static_cast<size_t>(OP * Op), 0.0f);
      const float* xb = x + b * CHW;
      const int64_t na = list_nonzero(xb, CHW, act.data());
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
                const float* row = reinterpret_cast<const float*>(w + r * rb + seg0);
#pragma omp simd
                for (int64_t o = 0; o < Op; ++o) a[o] += SPIKE ? row[o] : xv * row[o];
              } else {
                const uint8_t* row = w + r * rb + seg0;
                cnt[pos] += SPIKE ? 1.0f : xv;
                add_row<F32 ? 8 : BITS, Acc>(row, rbp, a, rbp, xv);
              }
            }
          }
        }
        if (!any) continue;
        for (int64_t pos = 0; pos < OP; ++pos) {
          const Acc* a = acc.data() + pos * stride_pos;
          float* out = yf.data() + pos * Op;
          if constexpr (F32) {
            for (int64_t o = 0; o < Op; ++o) out[o] += static_cast<float>(a[o]);
          } else {
            const float oc = off * cnt[pos];
            for (int64_t o = 0; o < Op; ++o) {
              const Acc av = a[(o % P) * rbp + o / P];
              float codes;
              // Integer path: mul * acc - off * count is exact in int32 before the scale.
              if constexpr (SPIKE)
                codes = static_cast<float>(code_mul(BITS) * av -
                                           code_off(BITS) * static_cast<int32_t>(cnt[pos]));
              else
                codes = mul * av - oc;
              out[o] += scale[(o0 + o) * G + g] * codes;
            }
          }
        }
      }
      float* yb = y + b * O * OP;
      for (int64_t o = 0; o < Op; ++o) {
        const float bo = bias ? bias[o0 + o] : 0.0f;
        for (int64_t pos = 0; pos < OP; ++pos) yb[(o0 + o) * OP + pos] = yf[pos * Op + o] + bo;
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

bool packed_spike_conv2d_chunked_cpu(const PackedConv2dParams& p, const float* x,
                                     const uint8_t* wk, const float* scale, const float* bias,
                                     float* y) {
  return conv_gather::dispatch(p, x, wk, nullptr, scale, bias, y);
}

bool packed_conv2d_chunked_analog_cpu(const PackedConv2dParams& p, const float* x, const uint8_t* wk,
                                      const int32_t* row_map, const float* scale, const float* bias,
                                      float* y) {
  return conv_gather::dispatch_analog(p, x, wk, row_map, scale, bias, y);
}

}  // namespace sparsesnn
