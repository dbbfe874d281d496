// Event-driven linear over packed low-bit weights (binary spikes x integer codes).
//
// Per output tile of 512 neurons (64 * bits bytes of every packed row) and per input row m:
// the packed tile rows of m's active inputs are unpacked with a shift and a mask per code
// slot and summed into 16 uint16 vector registers (no multiplications); they are widened
// into int32 before 65535 / (2^bits - 1) additions could overflow, and the per-output scale
// is applied once per group. Accumulators are "de-interleaved": register (c, s) holds slot s
// of the 32 bytes of chunk c, i.e. outputs (32 c + l) * P + s, l = 0..31, P = 8 / bits.
// The bits == 32 path is the fp32 event-driven kernel over input-major weights [K, N].
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

constexpr int kIntTile = 512;  // outputs per integer tile (16 registers of 32 uint16)
constexpr int kF32Tile = 256;  // outputs per fp32 tile (16 registers of 16 floats)

// acc32[(c * P + s) * 32 + l] += sum over act of slot s of byte 32 c + l of the tile.
template <int BITS>
void int_tile(const uint8_t* w, int64_t rb, int64_t byte0, int64_t tile_bytes,
              const int32_t* act, int64_t nact, int32_t* acc32) {
  constexpr int P = 8 / BITS;
  constexpr unsigned M = (1u << BITS) - 1u;
  constexpr int64_t kMaxAdds = 65535 / M;  // uint16 lanes cannot overflow within a chunk
#if defined(SPARSESNN_PACKED_AVX512)
  constexpr int C = 2 * BITS;  // 32-byte chunks per tile
  // chunks the tile really has: a narrow layer (a 10-way readout: 5 bytes at int4) loads and
  // adds one chunk per event, not C (the guards are uniform per call, so they predict well)
  const int used = static_cast<int>(std::min<int64_t>(C, (tile_bytes + 31) / 32));
  __mmask32 masks[C];
  for (int c = 0; c < C; ++c) {
    const int64_t left = tile_bytes - 32 * c;
    masks[c] = left >= 32 ? 0xffffffffu : (left <= 0 ? 0u : ((1u << left) - 1u));
  }
  const __m512i vmask = _mm512_set1_epi16(static_cast<short>(M));
  for (int64_t i0 = 0; i0 < nact; i0 += kMaxAdds) {
    const int64_t i1 = std::min(nact, i0 + kMaxAdds);
    __m512i acc[C * P];
#pragma GCC unroll 16
    for (int r = 0; r < C * P; ++r) acc[r] = _mm512_setzero_si512();
    for (int64_t i = i0; i < i1; ++i) {
      const uint8_t* row = w + act[i] * rb + byte0;
      if (i + 4 < i1) {
        const char* nxt = reinterpret_cast<const char*>(w + act[i + 4] * rb + byte0);
        for (int64_t b = 0; b < tile_bytes; b += 64) _mm_prefetch(nxt + b, _MM_HINT_T0);
      }
#pragma GCC unroll 16
      for (int c = 0; c < C; ++c) {
        if (c >= used) break;
        const __m512i v = _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(masks[c], row + 32 * c));
#pragma GCC unroll 8
        for (int s = 0; s < P; ++s) {
          __m512i u = s == 0 ? v : _mm512_srli_epi16(v, s * BITS);
          if (s + 1 < P) u = _mm512_and_si512(u, vmask);
          acc[c * P + s] = _mm512_add_epi16(acc[c * P + s], u);
        }
      }
    }
#pragma GCC unroll 16
    for (int r = 0; r < C * P; ++r) {
      if (r >= used * P) break;  // constant indices after unrolling: acc stays in registers
      int32_t* dst = acc32 + r * 32;
      const __m512i lo = _mm512_cvtepu16_epi32(_mm512_castsi512_si256(acc[r]));
      const __m512i hi = _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(acc[r], 1));
      _mm512_storeu_si512(dst, _mm512_add_epi32(_mm512_loadu_si512(dst), lo));
      _mm512_storeu_si512(dst + 16, _mm512_add_epi32(_mm512_loadu_si512(dst + 16), hi));
    }
  }
#else
  (void)kMaxAdds;
  // Per 32-byte chunk and code slot the 32 sums are contiguous: unit-stride loops that the
  // compiler vectorizes (AVX2: 8 lanes), not a scalar walk over bytes.
  for (int64_t i = 0; i < nact; ++i) {
    const uint8_t* row = w + act[i] * rb + byte0;
    for (int64_t c0 = 0; c0 < tile_bytes; c0 += 32) {
      const int len = static_cast<int>(std::min<int64_t>(32, tile_bytes - c0));
      int32_t* dst = acc32 + (c0 / 32) * P * 32;
      for (int s = 0; s < P; ++s) {
#pragma omp simd
        for (int l = 0; l < len; ++l)
          dst[s * 32 + l] += static_cast<int32_t>((row[c0 + l] >> (s * BITS)) & M);
      }
    }
  }
#endif
}

// yf[n] += scale[n, g] * (mul * acc - off * count) for the tile's outputs.
template <int BITS>
void fold_int(const int32_t* acc32, int64_t tile_n, int64_t count, const float* scale,
              int64_t G, int64_t g, float* yf) {
  constexpr int P = 8 / BITS;
  const int32_t mul = code_mul(BITS), offc = code_off(BITS) * static_cast<int32_t>(count);
  for (int64_t j = 0; j * P < tile_n; ++j) {
    const int32_t* src = acc32 + (j / 32) * P * 32 + (j % 32);
    for (int s = 0; s < P; ++s) {
      const int64_t n = j * P + s;
      if (n >= tile_n) break;
      yf[n] += scale[n * G + g] * static_cast<float>(mul * src[s * 32] - offc);
    }
  }
}

template <int BITS>
void run_int(const PackedLinearParams& p, const float* x, const uint8_t* w, const float* scale,
             const float* bias, float* y) {
  const int64_t M = p.M, K = p.K, N = p.N;
  const int64_t rb = packed_row_bytes(N, BITS);
  const int64_t glen = group_len(K, p.group_size), G = num_groups(K, p.group_size);
  const auto lists = list_rows_nonzero(x, M, K, p.threads);
  const std::vector<int32_t>& act = lists.first;
  const std::vector<int64_t>& cnt = lists.second;
  const int64_t tiles = (N + kIntTile - 1) / kIntTile;
  const int nt = threads_for_events(cnt, N, p.threads);
  parallel_chunks(tiles * M, work_chunk(tiles, M, nt), nt, [&](int64_t i0, int64_t i1) {
    alignas(64) int32_t acc32[kIntTile];
    alignas(64) float yf[kIntTile];
    for (int64_t it = i0; it < i1; ++it) {
      const int64_t t = it / M, m = it % M;
      const int64_t n0 = t * kIntTile, tile_n = std::min<int64_t>(kIntTile, N - n0);
      const int64_t byte0 = n0 * BITS / 8, tile_bytes = packed_row_bytes(tile_n, BITS);
      std::memset(yf, 0, sizeof(yf));
      for_group_runs(act.data() + m * K, cnt[m], glen, [&](int64_t b, int64_t e, int64_t g) {
        std::memset(acc32, 0, sizeof(acc32));
        int_tile<BITS>(w, rb, byte0, tile_bytes, act.data() + m * K + b, e - b, acc32);
        fold_int<BITS>(acc32, tile_n, e - b, scale + n0 * G, G, g, yf);
      });
      float* out = y + m * N + n0;
      for (int64_t n = 0; n < tile_n; ++n) out[n] = yf[n] + (bias ? bias[n0 + n] : 0.0f);
    }
  });
}

// fp32 event-driven kernel: the baseline the packed formats are measured against.
void run_f32(const PackedLinearParams& p, const float* x, const float* wt, const float* bias,
             float* y) {
  const int64_t M = p.M, K = p.K, N = p.N;
  const auto lists = list_rows_nonzero(x, M, K, p.threads);
  const std::vector<int32_t>& act = lists.first;
  const std::vector<int64_t>& cnt = lists.second;
  const int64_t tiles = (N + kF32Tile - 1) / kF32Tile;
  const int nt = threads_for_events(cnt, N, p.threads);
  parallel_chunks(tiles * M, work_chunk(tiles, M, nt), nt, [&](int64_t i0, int64_t i1) {
    for (int64_t it = i0; it < i1; ++it) {
      const int64_t t = it / M, m = it % M;
      const int64_t n0 = t * kF32Tile, tile_n = std::min<int64_t>(kF32Tile, N - n0);
      const int32_t* a = act.data() + m * K;
      const int64_t na = cnt[m];
      float* out = y + m * N + n0;
#if defined(SPARSESNN_PACKED_AVX512)
      __mmask16 masks[16];
      for (int c = 0; c < 16; ++c) {
        const int64_t left = tile_n - 16 * c;
        masks[c] = left >= 16 ? 0xffff : (left <= 0 ? 0 : static_cast<__mmask16>((1u << left) - 1u));
      }
      __m512 acc[16];
#pragma GCC unroll 16
      for (int c = 0; c < 16; ++c) acc[c] = _mm512_setzero_ps();
      for (int64_t i = 0; i < na; ++i) {
        const float* row = wt + a[i] * N + n0;
        if (i + 4 < na) {
          const char* nxt = reinterpret_cast<const char*>(wt + a[i + 4] * N + n0);
          for (int64_t b = 0; b < tile_n * 4; b += 64) _mm_prefetch(nxt + b, _MM_HINT_T0);
        }
#pragma GCC unroll 16
        for (int c = 0; c < 16; ++c)
          acc[c] = _mm512_add_ps(acc[c], _mm512_maskz_loadu_ps(masks[c], row + 16 * c));
      }
#pragma GCC unroll 16
      for (int c = 0; c < 16; ++c) {
        __m512 v = acc[c];
        if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(masks[c], bias + n0 + 16 * c));
        _mm512_mask_storeu_ps(out + 16 * c, masks[c], v);
      }
#else
      alignas(64) float acc[kF32Tile] = {};
      for (int64_t i = 0; i < na; ++i) {
        const float* row = wt + a[i] * N + n0;
#pragma omp simd
        for (int64_t n = 0; n < tile_n; ++n) acc[n] += row[n];
      }
      for (int64_t n = 0; n < tile_n; ++n) out[n] = acc[n] + (bias ? bias[n0 + n] : 0.0f);
#endif
    }
  });
}

}  // namespace

bool is_binary_f32_cpu(const float* x, int64_t n) {
  int64_t i = 0;
#if defined(SPARSESNN_PACKED_AVX512)
  const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f);
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    const __mmask16 ok = _mm512_cmp_ps_mask(v, zero, _CMP_EQ_OQ) | _mm512_cmp_ps_mask(v, one, _CMP_EQ_OQ);
    if (ok != 0xffff) return false;
  }
#endif
  bool ok = true;
  for (; i < n; ++i) ok &= (x[i] == 0.0f) | (x[i] == 1.0f);
  return ok;
}

void packed_spike_linear_cpu(const PackedLinearParams& p, const float* x, const void* weights,
                             const float* scale, const float* bias, float* y) {
  if (p.M == 0 || p.N == 0) return;
  const auto* w = static_cast<const uint8_t*>(weights);
  switch (p.bits) {
    case 8: run_int<8>(p, x, w, scale, bias, y); break;
    case 4: run_int<4>(p, x, w, scale, bias, y); break;
    case 2: run_int<2>(p, x, w, scale, bias, y); break;
    case 1: run_int<1>(p, x, w, scale, bias, y); break;
    default: run_f32(p, x, static_cast<const float*>(weights), bias, y); break;
  }
}

}  // namespace sparsesnn
