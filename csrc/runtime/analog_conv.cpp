// Analog-input conv2d over decoded codes (analog_conv.h). Built with -ffp-contract=off (as
// packed_spike_conv2d.cpp): every multiply and add below rounds as the eager kernel's does.
#include "analog_conv.h"

#include <algorithm>
#include <cmath>

#include "../cpu/packed_common.h"
#include "sparsesnn/pack.h"

namespace sparsesnn {
namespace runtime {

std::vector<float> decode_conv_codes(const uint8_t* rows, int64_t R, int64_t O, int bits) {
  const int per = 8 / bits, mask = (1 << bits) - 1;
  const int64_t rb = packed_row_bytes(O, bits);
  std::vector<float> out(static_cast<size_t>(R * O));
  for (int64_t r = 0; r < R; ++r)
    for (int64_t o = 0; o < O; ++o)
      out[r * O + o] = static_cast<float>((rows[r * rb + o / per] >> ((o % per) * bits)) & mask);
  return out;
}

namespace {

// a[o] += xv * u[o], rounded as the eager kernel's add_row: one FMA where it uses AVX-512.
inline void add_codes(float* a, const float* u, int64_t O, float xv) {
#if defined(SPARSESNN_PACKED_AVX512)
#pragma omp simd
  for (int64_t o = 0; o < O; ++o) a[o] = std::fma(xv, u[o], a[o]);
#else
  for (int64_t o = 0; o < O; ++o) a[o] += xv * u[o];
#endif
}

// Output row of input row iy through kernel row ky (ty[iy * KH + ky]), output column of input
// column ix through kernel column kx (tx[ix * KW + kx]); -1 where none. Tables, so that the
// scatter loop has no integer divisions (tens of cycles each).
void output_tables(const PackedConv2dParams& p, std::vector<int32_t>& ty, std::vector<int32_t>& tx) {
  ty.resize(static_cast<size_t>(p.H * p.KH));
  tx.resize(static_cast<size_t>(p.W * p.KW));
  for (int64_t iy = 0; iy < p.H; ++iy)
    for (int64_t ky = 0; ky < p.KH; ++ky) {
      const int64_t ny = iy + p.ph - ky * p.dh;
      ty[iy * p.KH + ky] = ny >= 0 && ny % p.sh == 0 && ny / p.sh < p.OH ? static_cast<int32_t>(ny / p.sh) : -1;
    }
  for (int64_t ix = 0; ix < p.W; ++ix)
    for (int64_t kx = 0; kx < p.KW; ++kx) {
      const int64_t nx = ix + p.pw - kx * p.dw;
      tx[ix * p.KW + kx] = nx >= 0 && nx % p.sw == 0 && nx / p.sw < p.OW ? static_cast<int32_t>(nx / p.sw) : -1;
    }
}

struct Scratch {
  std::vector<float> acc, cnt;
  std::vector<int32_t> ty, tx;
};

void one_image(const PackedConv2dParams& p, const float* xb, const float* codes, const float* scale,
               const float* bias, float* yb, Scratch& s) {
  const int64_t O = p.O, OP = p.OH * p.OW;
  std::vector<float>& acc = s.acc;
  std::vector<float>& cnt = s.cnt;
  acc.assign(static_cast<size_t>(OP * O), 0.0f);
  cnt.assign(static_cast<size_t>(OP), 0.0f);
  // Inputs in ascending order, each adding its code rows into the outputs it reaches: per
  // output the same sequence of additions as the eager kernel's scatter.
  for (int64_t c = 0; c < p.C; ++c)
    for (int64_t iy = 0; iy < p.H; ++iy)
      for (int64_t ix = 0; ix < p.W; ++ix) {
        const float xv = xb[(c * p.H + iy) * p.W + ix];
        if (xv == 0.0f) continue;  // NaN is not skipped (as list_nonzero)
        for (int64_t ky = 0; ky < p.KH; ++ky) {
          const int32_t oy = s.ty[iy * p.KH + ky];
          if (oy < 0) continue;
          for (int64_t kx = 0; kx < p.KW; ++kx) {
            const int32_t ox = s.tx[ix * p.KW + kx];
            if (ox < 0) continue;
            const int64_t pos = oy * p.OW + ox;
            add_codes(acc.data() + pos * O, codes + ((c * p.KH + ky) * p.KW + kx) * O, O, xv);
            cnt[pos] += xv;
          }
        }
      }
  const float mul = static_cast<float>(code_mul(p.bits)), off = static_cast<float>(code_off(p.bits));
  for (int64_t o = 0; o < O; ++o) {
    const float bo = bias ? bias[o] : 0.0f;
    float* yo = yb + o * OP;
    for (int64_t pos = 0; pos < OP; ++pos) {
      const float v = mul * acc[pos * O + o] - off * cnt[pos];
      float yf = 0.0f;  // the eager kernel's per-group sum, one group
      yf += scale[o] * v;
      yo[pos] = yf + bo;
    }
  }
}

}  // namespace

void analog_conv2d(const PackedConv2dParams& p, const float* x, const float* codes,
                   const float* scale, const float* bias, float* y) {
  const int64_t in = p.C * p.H * p.W, out = p.O * p.OH * p.OW;
  const int nt = threads_for(p.NB * in * p.KH * p.KW * p.O, p.threads);
  parallel_chunks(p.NB, 1, nt, [&](int64_t b0, int64_t b1) {
    static thread_local Scratch s;  // grown once, reused by later calls
    output_tables(p, s.ty, s.tx);
    for (int64_t b = b0; b < b1; ++b) one_image(p, x + b * in, codes, scale, bias, y + b * out, s);
  });
}

}  // namespace runtime
}  // namespace sparsesnn
