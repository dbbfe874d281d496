// Dense-path linear over packed weights, for analog input or very high spike density:
// fp32 accumulation of x[m, k] * u[k, n], with the code offset and the per-output scale
// applied once per group: y = scale * (mul * sum x u - off * sum x) + bias.
// AVX-512: blocks of weight rows x 64 outputs are decoded to fp32 once and reused by every
// input row (register block 4 rows x 64 outputs); each thread owns a range of outputs and
// walks the rows in order (few input rows: one weight row at a time, front to back).
// Portable build: per 256-output tile, fp32 accumulation over the nonzero x of a row.
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
using packed_detail::list_rows_nonzero;
using packed_detail::threads_for_events;
using packed_detail::num_groups;
using packed_detail::work_chunk;

constexpr int kTile = 256;

// Portable path (no AVX-512): accf[(c * P + s) * 16 + l] += x * slot s of byte 16 c + l of
// the tile, over the run. For BITS == 32 the "bytes" are floats and accf is in natural order.
template <int BITS>
void float_tile(const uint8_t* w, int64_t rb, int64_t byte0, int64_t tile_bytes,
                const int32_t* act, int64_t nact, const float* xr, float* accf) {
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
}

#if defined(SPARSESNN_PACKED_AVX512)
// ---- Blocked path for >= 4 rows: decode a [kPanelK x 64] block of codes to fp32 once and
// reuse it for every row (register block of 4 rows x 64 outputs = 16 accumulators). Panel
// register q lane l holds output (16 (q / P) + l) * P + q % P (P = codes per byte; 1 for
// fp32 and binary), matching the decode order.
constexpr int kPanelN = 64;
constexpr int kPanelK = 256;

template <int BITS>
constexpr int panel_p() { return (BITS == 32 || BITS == 1) ? 1 : 8 / BITS; }

template <int BITS>
void decode_panel(const uint8_t* w, int64_t rb, int64_t n0, int64_t tile_n, int64_t k0, int64_t k1,
                  float* buf) {
  if constexpr (BITS == 32) {
    __mmask16 masks[4];
    for (int c = 0; c < 4; ++c) {
      const int64_t left = tile_n - 16 * c;
      masks[c] = left >= 16 ? 0xffff : (left <= 0 ? 0 : static_cast<__mmask16>((1u << left) - 1u));
    }
    for (int64_t k = k0; k < k1; ++k) {
      const float* row = reinterpret_cast<const float*>(w + k * rb) + n0;
      float* dst = buf + (k - k0) * kPanelN;
      for (int c = 0; c < 4; ++c) _mm512_storeu_ps(dst + 16 * c, _mm512_maskz_loadu_ps(masks[c], row + 16 * c));
    }
  } else if constexpr (BITS == 1) {
    const int64_t tile_bytes = (tile_n + 7) / 8, byte0 = n0 / 8;
    const __m512 ones = _mm512_set1_ps(1.0f);
    for (int64_t k = k0; k < k1; ++k) {
      const uint8_t* row = w + k * rb + byte0;
      uint8_t bytes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      for (int64_t j = 0; j < tile_bytes; ++j) bytes[j] = row[j];
      float* dst = buf + (k - k0) * kPanelN;
      for (int c = 0; c < 4; ++c) {
        const __mmask16 m = static_cast<__mmask16>(bytes[2 * c] | (bytes[2 * c + 1] << 8));
        _mm512_storeu_ps(dst + 16 * c, _mm512_maskz_mov_ps(m, ones));
      }
    }
  } else {
    constexpr int P = 8 / BITS;
    constexpr int C = 4 / P;  // 16-byte chunks per panel row
    const int64_t tile_bytes = packed_row_bytes(tile_n, BITS), byte0 = n0 * BITS / 8;
    __mmask16 masks[C];
    for (int c = 0; c < C; ++c) {
      const int64_t left = tile_bytes - 16 * c;
      masks[c] = left >= 16 ? 0xffff : (left <= 0 ? 0 : static_cast<__mmask16>((1u << left) - 1u));
    }
    const __m512i vmask = _mm512_set1_epi32((1 << BITS) - 1);
    for (int64_t k = k0; k < k1; ++k) {
      const uint8_t* row = w + k * rb + byte0;
      float* dst = buf + (k - k0) * kPanelN;
      for (int c = 0; c < C; ++c) {
        const __m512i v = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(masks[c], row + 16 * c));
        for (int s = 0; s < P; ++s) {
          __m512i u = s == 0 ? v : _mm512_srli_epi32(v, s * BITS);
          if (s + 1 < P) u = _mm512_and_si512(u, vmask);
          _mm512_storeu_ps(dst + 16 * (c * P + s), _mm512_cvtepi32_ps(u));
        }
      }
    }
  }
}

// acc[r][0..64) += sum_{k in [k0,k1)} x[r][k] * buf[k - k0][0..64) for RB rows.
template <int RB>
void panel_fma(const float* x, int64_t K, int64_t k0, int64_t k1, const float* buf, float* acc) {
  __m512 a[RB][4];
  for (int r = 0; r < RB; ++r)
    for (int q = 0; q < 4; ++q) a[r][q] = _mm512_loadu_ps(acc + r * kPanelN + 16 * q);
  for (int64_t k = k0; k < k1; ++k) {
    const float* b = buf + (k - k0) * kPanelN;
    const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
    const __m512 b2 = _mm512_loadu_ps(b + 32), b3 = _mm512_loadu_ps(b + 48);
#pragma GCC unroll 4
    for (int r = 0; r < RB; ++r) {
      const __m512 xv = _mm512_set1_ps(x[r * K + k]);
      a[r][0] = _mm512_fmadd_ps(xv, b0, a[r][0]);
      a[r][1] = _mm512_fmadd_ps(xv, b1, a[r][1]);
      a[r][2] = _mm512_fmadd_ps(xv, b2, a[r][2]);
      a[r][3] = _mm512_fmadd_ps(xv, b3, a[r][3]);
    }
  }
  for (int r = 0; r < RB; ++r)
    for (int q = 0; q < 4; ++q) _mm512_storeu_ps(acc + r * kPanelN + 16 * q, a[r][q]);
}

template <int BITS>
void run_panels(const PackedLinearParams& p, const float* x, const uint8_t* w, const float* scale,
                const float* bias, float* y) {
  const int64_t M = p.M, K = p.K, N = p.N;
  const int64_t rb = BITS == 32 ? N * 4 : packed_row_bytes(N, BITS);
  const int64_t glen = group_len(K, p.group_size), G = num_groups(K, p.group_size);
  constexpr int P = panel_p<BITS>();
  const float mul = BITS == 32 ? 1.0f : static_cast<float>(code_mul(BITS == 32 ? 8 : BITS));
  const float off = BITS == 32 ? 0.0f : static_cast<float>(code_off(BITS == 32 ? 8 : BITS));
  // Sum of x per row and group: the code offset correction.
  std::vector<float> xs(static_cast<size_t>(M * G), 0.0f);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) xs[m * G + k / glen] += x[m * K + k];
  const int64_t panels = (N + kPanelN - 1) / kPanelN;
  const int nt = threads_for(M * K * N, p.threads);
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(nt, panels));
  // Each thread owns a contiguous range of output panels; the k blocks run outermost so a
  // block of weight rows stays cached (and its pages in the TLB) while all panels use it.
  // Few rows (M < 4): a block is one row k, read once front to back.
  const int64_t kblock = M >= 4 ? kPanelK : 1;
  parallel_chunks(parts, 1, nt, [&](int64_t q0, int64_t q1) {
    for (int64_t part = q0; part < q1; ++part) {
      const int64_t t0 = panels * part / parts, t1 = panels * (part + 1) / parts;
      const int64_t width = (t1 - t0) * kPanelN;
      std::vector<float> buf(static_cast<size_t>(kPanelK * kPanelN));
      std::vector<float> acc(static_cast<size_t>(M * width)), yf(static_cast<size_t>(M * width), 0.0f);
      for (int64_t g = 0; g < G; ++g) {
        std::fill(acc.begin(), acc.end(), 0.0f);
        const int64_t gk1 = std::min(K, (g + 1) * glen);
        for (int64_t k0 = g * glen; k0 < gk1; k0 += kblock) {
          const int64_t k1 = std::min(gk1, k0 + kblock);
          if (kblock == 1) {  // skip inputs that are zero in every row
            bool any = false;
            for (int64_t m = 0; m < M; ++m) any |= x[m * K + k0] != 0.0f;
            if (!any) continue;
          }
          for (int64_t t = t0; t < t1; ++t) {
            const int64_t n0 = t * kPanelN, tile_n = std::min<int64_t>(kPanelN, N - n0);
            decode_panel<BITS>(w, rb, n0, tile_n, k0, k1, buf.data());
            float* a = acc.data() + (t - t0) * kPanelN;
            int64_t m = 0;
            for (; m + 4 <= M; m += 4) {
              // rows of the register block are `width` apart in acc
              alignas(64) float tmp[4 * kPanelN];
              for (int r = 0; r < 4; ++r) std::memcpy(tmp + r * kPanelN, a + (m + r) * width, sizeof(float) * kPanelN);
              panel_fma<4>(x + m * K, K, k0, k1, buf.data(), tmp);
              for (int r = 0; r < 4; ++r) std::memcpy(a + (m + r) * width, tmp + r * kPanelN, sizeof(float) * kPanelN);
            }
            for (; m < M; ++m) panel_fma<1>(x + m * K, K, k0, k1, buf.data(), a + m * width);
          }
        }
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t n0 = t * kPanelN, tile_n = std::min<int64_t>(kPanelN, N - n0);
          for (int64_t m = 0; m < M; ++m) {
            const float oc = off * xs[m * G + g];
            const float* a = acc.data() + m * width + (t - t0) * kPanelN;
            float* out = yf.data() + m * width + (t - t0) * kPanelN;
            for (int q = 0; q < 4; ++q)
              for (int l = 0; l < 16; ++l) {
                const int64_t n = (16 * (q / P) + l) * P + q % P;
                if (n >= tile_n) continue;
                const float v = a[16 * q + l];
                out[n] += BITS == 32 ? v : scale[(n0 + n) * G + g] * (mul * v - oc);
              }
          }
        }
      }
      for (int64_t m = 0; m < M; ++m) {
        const int64_t n_begin = t0 * kPanelN, n_end = std::min(N, t1 * kPanelN);
        for (int64_t n = n_begin; n < n_end; ++n)
          y[m * N + n] = yf[m * width + (n - n_begin)] + (bias ? bias[n] : 0.0f);
      }
    }
  });
}
#endif

template <int BITS>
void run(const PackedLinearParams& p, const float* x, const uint8_t* w, const float* scale,
         const float* bias, float* y) {
#if defined(SPARSESNN_PACKED_AVX512)
  run_panels<BITS>(p, x, w, scale, bias, y);
#else
  const int64_t M = p.M, K = p.K, N = p.N;
  const int64_t rb = BITS == 32 ? N * 4 : packed_row_bytes(N, BITS);
  const int64_t glen = group_len(K, p.group_size), G = num_groups(K, p.group_size);
  const auto lists = list_rows_nonzero(x, M, K, p.threads);
  const std::vector<int32_t>& act = lists.first;
  const std::vector<int64_t>& cnt = lists.second;
  const int64_t tiles = (N + kTile - 1) / kTile;
  const int nt = threads_for_events(cnt, N, p.threads);
  parallel_chunks(tiles * M, work_chunk(tiles, M, nt), nt, [&](int64_t i0, int64_t i1) {
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
#endif
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
