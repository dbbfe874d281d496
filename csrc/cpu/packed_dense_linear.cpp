// Dense-path linear over packed weights, for analog input or very high spike density:
// fp32 accumulation of x[m, k] * u[k, n] over the nonzero x of a row, per 256-output tile
// (16 fp32 registers; a 16-byte chunk is zero-extended to 16 int32 lanes, then one shift,
// mask and convert per code slot), with the code offset and the per-output scale applied
// once per group: y = scale * (mul * sum x u - off * sum x) + bias.
#include <cstring>
#include <vector>

#include "packed_common.h"
#include "parallel.h"
#include "sparsesnn/pack.h"
#include "sparsesnn/packed_linear.h"

namespace sparsesnn {
namespace {

using packed_detail::for_group_runs;
using packed_detail::group_len;
using packed_detail::list_nonzero;
using packed_detail::work_chunk;

constexpr int kTile = 256;

// accf[(c * P + s) * 16 + l] += x * slot s of byte 16 c + l of the tile, over the run.
// For BITS == 32 the "bytes" are floats and accf is in natural order.
template <int BITS>
void float_tile(const uint8_t* w, int64_t rb, int64_t byte0, int64_t tile_bytes,
                const int32_t* act, int64_t nact, const float* xr, float* accf) {
#if defined(SPARSESNN_PACKED_AVX512)
  if constexpr (BITS == 32) {
    __mmask16 masks[16];
    const int64_t tn = tile_bytes / 4;
    for (int c = 0; c < 16; ++c) {
      const int64_t left = tn - 16 * c;
      masks[c] = left >= 16 ? 0xffff : (left <= 0 ? 0 : static_cast<__mmask16>((1u << left) - 1u));
    }
    __m512 acc[16];
#pragma GCC unroll 16
    for (int c = 0; c < 16; ++c) acc[c] = _mm512_loadu_ps(accf + 16 * c);
    for (int64_t i = 0; i < nact; ++i) {
      const float* row = reinterpret_cast<const float*>(w + act[i] * rb + byte0);
      const __m512 xv = _mm512_set1_ps(xr[act[i]]);
#pragma GCC unroll 16
      for (int c = 0; c < 16; ++c)
        acc[c] = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(masks[c], row + 16 * c), acc[c]);
    }
#pragma GCC unroll 16
    for (int c = 0; c < 16; ++c) _mm512_storeu_ps(accf + 16 * c, acc[c]);
  } else {
    constexpr int P = 8 / BITS;
    constexpr int C = 16 / P;  // 16-byte chunks per tile
    __mmask16 masks[C];
    for (int c = 0; c < C; ++c) {
      const int64_t left = tile_bytes - 16 * c;
      masks[c] = left >= 16 ? 0xffff : (left <= 0 ? 0 : static_cast<__mmask16>((1u << left) - 1u));
    }
    const __m512i vmask = _mm512_set1_epi32((1 << BITS) - 1);
    __m512 acc[16];
#pragma GCC unroll 16
    for (int r = 0; r < 16; ++r) acc[r] = _mm512_loadu_ps(accf + 16 * r);
    for (int64_t i = 0; i < nact; ++i) {
      const uint8_t* row = w + act[i] * rb + byte0;
      const __m512 xv = _mm512_set1_ps(xr[act[i]]);
#pragma GCC unroll 16
      for (int c = 0; c < C; ++c) {
        const __m512i v = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(masks[c], row + 16 * c));
#pragma GCC unroll 8
        for (int s = 0; s < P; ++s) {
          __m512i u = s == 0 ? v : _mm512_srli_epi32(v, s * BITS);
          if (s + 1 < P) u = _mm512_and_si512(u, vmask);
          acc[c * P + s] = _mm512_fmadd_ps(xv, _mm512_cvtepi32_ps(u), acc[c * P + s]);
        }
      }
    }
#pragma GCC unroll 16
    for (int r = 0; r < 16; ++r) _mm512_storeu_ps(accf + 16 * r, acc[r]);
  }
#else
  for (int64_t i = 0; i < nact; ++i) {
    const float xv = xr[act[i]];
    if constexpr (BITS == 32) {
      const float* row = reinterpret_cast<const float*>(w + act[i] * rb + byte0);
      const int64_t tn = tile_bytes / 4;
#pragma omp simd
      for (int64_t n = 0; n < tn; ++n) accf[n] += xv * row[n];
    } else {
      constexpr int P = 8 / BITS;
      constexpr unsigned M = (1u << BITS) - 1u;
      const uint8_t* row = w + act[i] * rb + byte0;
      for (int64_t j = 0; j < tile_bytes; ++j) {
        const unsigned v = row[j];
        float* dst = accf + (j / 16) * P * 16 + (j % 16);
        for (int s = 0; s < P; ++s) dst[s * 16] += xv * static_cast<float>((v >> (s * BITS)) & M);
      }
    }
  }
#endif
}

template <int BITS>
void run(const PackedLinearParams& p, const float* x, const uint8_t* w, const float* scale,
         const float* bias, float* y) {
  const int64_t M = p.M, K = p.K, N = p.N;
  const int64_t rb = BITS == 32 ? N * 4 : packed_row_bytes(N, BITS);
  const int64_t glen = group_len(K, p.group_size), G = (K + glen - 1) / glen;
  std::vector<int32_t> act(static_cast<size_t>(M * K));
  std::vector<int64_t> cnt(static_cast<size_t>(M));
  parallel_chunks(M, 16, p.threads, [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) cnt[m] = list_nonzero(x + m * K, K, act.data() + m * K);
  });
  const int64_t tiles = (N + kTile - 1) / kTile;
  parallel_chunks(tiles * M, work_chunk(tiles, M, p.threads), p.threads, [&](int64_t i0, int64_t i1) {
    alignas(64) float accf[kTile];
    alignas(64) float yf[kTile];
    for (int64_t it = i0; it < i1; ++it) {
      const int64_t t = it / M, m = it % M;
      const int64_t n0 = t * kTile, tile_n = std::min<int64_t>(kTile, N - n0);
      const float* xr = x + m * K;
      const int32_t* a = act.data() + m * K;
      float* out = y + m * N + n0;
      if constexpr (BITS == 32) {
        std::memset(accf, 0, sizeof(accf));
        float_tile<32>(w, rb, n0 * 4, tile_n * 4, a, cnt[m], xr, accf);
        for (int64_t n = 0; n < tile_n; ++n) out[n] = accf[n] + (bias ? bias[n0 + n] : 0.0f);
      } else {
        constexpr int P = 8 / BITS;
        const float mul = static_cast<float>(code_mul(BITS)), off = static_cast<float>(code_off(BITS));
        const int64_t byte0 = n0 * BITS / 8, tile_bytes = packed_row_bytes(tile_n, BITS);
        std::memset(yf, 0, sizeof(yf));
        for_group_runs(a, cnt[m], glen, [&](int64_t b, int64_t e, int64_t g) {
          std::memset(accf, 0, sizeof(accf));
          float_tile<BITS>(w, rb, byte0, tile_bytes, a + b, e - b, xr, accf);
          float xs = 0.0f;
          for (int64_t i = b; i < e; ++i) xs += xr[a[i]];
          const float* sc = scale + n0 * G;
          for (int64_t j = 0; j * P < tile_n; ++j) {
            const float* src = accf + (j / 16) * P * 16 + (j % 16);
            for (int s = 0; s < P; ++s) {
              const int64_t n = j * P + s;
              if (n >= tile_n) break;
              yf[n] += sc[n * G + g] * (mul * src[s * 16] - off * xs);
            }
          }
        });
        for (int64_t n = 0; n < tile_n; ++n) out[n] = yf[n] + (bias ? bias[n0 + n] : 0.0f);
      }
    }
  });
}

}  // namespace

void packed_dense_linear_cpu(const PackedLinearParams& p, const float* x, const void* weights,
                             const float* scale, const float* bias, float* y) {
  if (p.M == 0 || p.N == 0) return;
  const auto* w = static_cast<const uint8_t*>(weights);
  switch (p.bits) {
    case 8: run<8>(p, x, w, scale, bias, y); break;
    case 4: run<4>(p, x, w, scale, bias, y); break;
    case 2: run<2>(p, x, w, scale, bias, y); break;
    case 1: run<1>(p, x, w, scale, bias, y); break;
    default: run<32>(p, x, w, scale, bias, y); break;
  }
}

}  // namespace sparsesnn
