// List-fed event-driven linear over int4 packed rows (spike_lists.h).
//
// Per tile of 512 outputs (256 bytes of each packed row, four 64-byte chunks) and per row of
// spikes: the listed inputs' chunks are split into low and high nibbles and summed in uint8
// lanes (17 adds * 15 fit in a byte), widened into uint16 every 17 inputs and into int32 every
// 4369 (65535 / 15). That is 6 vector operations per 64 bytes, half the work of widening each
// byte first. Low nibble of byte j = output 2j, high nibble = output 2j + 1 (pack.h).
#include "spike_lists.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "../cpu/packed_common.h"
#include "sparsesnn/pack.h"

namespace sparsesnn {
namespace runtime {

using packed_detail::for_group_runs;
using packed_detail::group_len;
using packed_detail::list_nonzero;
using packed_detail::num_groups;
using packed_detail::work_chunk;

void SpikeLists::reserve(int64_t rows_, int64_t K_) {
  if (static_cast<int64_t>(idx.size()) < rows_ * K_) idx.resize(static_cast<size_t>(rows_ * K_));
  if (static_cast<int64_t>(cnt.size()) < rows_) cnt.resize(static_cast<size_t>(rows_));
  rows = rows_;
  K = K_;
}

void SpikeLists::from_dense(const float* x, int64_t rows_, int64_t K_, int threads) {
  reserve(rows_, K_);
  parallel_chunks(rows, 64, threads_for(rows * K, threads), [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m)
      cnt[m] = static_cast<int32_t>(list_nonzero(x + m * K, K, idx.data() + m * K));
  });
  total = 0;
  for (int64_t m = 0; m < rows; ++m) total += cnt[m];
  nested = false;
}

void SpikeLists::thermometer(const float* x, const float* thr, int64_t steps_, int64_t B, int64_t K_) {
  reserve(steps_ * B, K_);
  if (static_cast<int64_t>(active.size()) < rows) active.resize(static_cast<size_t>(rows));
  nested = true;
  steps = steps_;
  total = 0;
  for (int64_t b = 0; b < B; ++b) {
    const float* xb = x + b * K;
    int64_t running = 0;
    for (int64_t t = steps - 1; t >= 0; --t) {
      const int64_t m = t * B + b;
      const float lo = thr[t], hi = t + 1 < steps ? thr[t + 1] : 0.0f;
      int32_t* out = idx.data() + m * K;
      int32_t n = 0;
      for (int64_t k = 0; k < K; ++k)  // active at t, and not already at t + 1
        if (xb[k] > lo && !(t + 1 < steps && xb[k] > hi)) out[n++] = static_cast<int32_t>(k);
      cnt[m] = n;
      running += n;
      active[m] = static_cast<int32_t>(running);
      total += running;
    }
  }
}

#if defined(SPARSESNN_PACKED_AVX512)
namespace {

constexpr int kTileBytes = 256;  // 512 int4 outputs
constexpr int64_t kByteAdds = 17;     // 17 * 15 <= 255
constexpr int64_t kShortAdds = 4369;  // 4369 * 15 <= 65535

// lo[j] (hi[j]) += the sum over act of the low (high) nibble of byte j of the tile, j < 64 * CH.
template <int CH>
void tile_sums(const uint8_t* w, int64_t rb, int64_t byte0, int64_t tile_bytes, const int32_t* act,
               int64_t n, int32_t* lo, int32_t* hi) {
  __mmask64 masks[CH];
  for (int c = 0; c < CH; ++c) {
    const int64_t left = tile_bytes - 64 * c;
    masks[c] = left >= 64 ? ~__mmask64(0) : ((__mmask64(1) << left) - 1);
  }
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  for (int64_t i0 = 0; i0 < n; i0 += kShortAdds) {
    const int64_t i1 = std::min(n, i0 + kShortAdds);
    __m512i s16[CH][4];  // per chunk: low nibbles of bytes 0-31, 32-63; high nibbles likewise
#pragma GCC unroll 16
    for (int c = 0; c < CH; ++c)
      for (int h = 0; h < 4; ++h) s16[c][h] = _mm512_setzero_si512();
    for (int64_t i = i0; i < i1;) {
      const int64_t e = std::min(i1, i + kByteAdds);
      __m512i s8[CH][2];
#pragma GCC unroll 8
      for (int c = 0; c < CH; ++c) s8[c][0] = s8[c][1] = _mm512_setzero_si512();
      // Two inputs per iteration: their nibbles are added together first, so the running
      // sums are updated once per pair (fewer register moves in GCC's loop).
      for (; i + 1 < e; i += 2) {
        const uint8_t* r0 = w + act[i] * rb + byte0;
        const uint8_t* r1 = w + act[i + 1] * rb + byte0;
        // Branch-free prefetch (a branch here splits the loop and costs register moves).
        const char* n0 = reinterpret_cast<const char*>(w + act[std::min(i + 4, i1 - 1)] * rb + byte0);
        const char* n1 = reinterpret_cast<const char*>(w + act[std::min(i + 5, i1 - 1)] * rb + byte0);
#pragma GCC unroll 4
        for (int c = 0; c < CH; ++c) {
          _mm_prefetch(n0 + 64 * c, _MM_HINT_T0);
          _mm_prefetch(n1 + 64 * c, _MM_HINT_T0);
        }
#pragma GCC unroll 4
        for (int c = 0; c < CH; ++c) {
          const __m512i v0 = _mm512_maskz_loadu_epi8(masks[c], r0 + 64 * c);
          const __m512i v1 = _mm512_maskz_loadu_epi8(masks[c], r1 + 64 * c);
          const __m512i lo = _mm512_add_epi8(_mm512_and_si512(v0, m4), _mm512_and_si512(v1, m4));
          const __m512i hi = _mm512_add_epi8(_mm512_and_si512(_mm512_srli_epi16(v0, 4), m4),
                                             _mm512_and_si512(_mm512_srli_epi16(v1, 4), m4));
          s8[c][0] = _mm512_add_epi8(s8[c][0], lo);
          s8[c][1] = _mm512_add_epi8(s8[c][1], hi);
        }
      }
      for (; i < e; ++i) {
        const uint8_t* row = w + act[i] * rb + byte0;
#pragma GCC unroll 4
        for (int c = 0; c < CH; ++c) {
          const __m512i v = _mm512_maskz_loadu_epi8(masks[c], row + 64 * c);
          s8[c][0] = _mm512_add_epi8(s8[c][0], _mm512_and_si512(v, m4));
          s8[c][1] = _mm512_add_epi8(s8[c][1], _mm512_and_si512(_mm512_srli_epi16(v, 4), m4));
        }
      }
#pragma GCC unroll 4
      for (int c = 0; c < CH; ++c)
        for (int h = 0; h < 2; ++h) {
          s16[c][2 * h] = _mm512_add_epi16(s16[c][2 * h], _mm512_cvtepu8_epi16(_mm512_castsi512_si256(s8[c][h])));
          s16[c][2 * h + 1] = _mm512_add_epi16(s16[c][2 * h + 1],
                                               _mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64(s8[c][h], 1)));
        }
    }
#pragma GCC unroll 4
    for (int c = 0; c < CH; ++c)
      for (int h = 0; h < 4; ++h) {
        int32_t* dst = (h < 2 ? lo : hi) + 64 * c + 32 * (h & 1);
        const __m512i a = _mm512_cvtepu16_epi32(_mm512_castsi512_si256(s16[c][h]));
        const __m512i b = _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(s16[c][h], 1));
        _mm512_store_si512(dst, _mm512_add_epi32(_mm512_load_si512(dst), a));
        _mm512_store_si512(dst + 16, _mm512_add_epi32(_mm512_load_si512(dst + 16), b));
      }
  }
}

using TileFn = void (*)(const uint8_t*, int64_t, int64_t, int64_t, const int32_t*, int64_t, int32_t*, int32_t*);
constexpr TileFn kTiles[4] = {tile_sums<1>, tile_sums<2>, tile_sums<3>, tile_sums<4>};

// yf[n] += scale[n * G + g] * float(acc[n] - off * count), acc[2j] = lo[j], acc[2j+1] = hi[j].
void fold(const int32_t* lo, const int32_t* hi, int64_t tile_n, int64_t count, const float* scale,
          int64_t G, int64_t g, float* yf) {
  const int32_t offc = code_off(4) * static_cast<int32_t>(count);
  if (G != 1) {
    // Output pairs (2j, 2j + 1) from lo[j], hi[j]. (A per-output form, (n & 1 ? hi : lo)[n / 2],
    // is miscompiled by gcc 12 at -O3 under ASan+UBSan: the index register is clobbered.)
    for (int64_t j = 0; 2 * j < tile_n; ++j) {
      yf[2 * j] += scale[2 * j * G + g] * static_cast<float>(lo[j] - offc);
      if (2 * j + 1 < tile_n) yf[2 * j + 1] += scale[(2 * j + 1) * G + g] * static_cast<float>(hi[j] - offc);
    }
    return;
  }
  const __m512i even = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i odd = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  const __m512i off = _mm512_set1_epi32(offc);
  for (int64_t n = 0; n < tile_n; n += 32) {
    const __m512i L = _mm512_load_si512(lo + n / 2), H = _mm512_load_si512(hi + n / 2);
    const __m512i parts[2] = {_mm512_permutex2var_epi32(L, even, H), _mm512_permutex2var_epi32(L, odd, H)};
    for (int q = 0; q < 2; ++q) {
      const int64_t n0 = n + 16 * q, left = tile_n - n0;
      if (left <= 0) break;
      const __mmask16 k = left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1u);
      const __m512 v = _mm512_cvtepi32_ps(_mm512_sub_epi32(parts[q], off));
      const __m512 prod = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, scale + n0), v);
      _mm512_mask_storeu_ps(yf + n0, k, _mm512_add_ps(_mm512_maskz_loadu_ps(k, yf + n0), prod));
    }
  }
}

}  // namespace

bool event_linear_lists_supported(const PackedLinearParams& p) { return p.bits == 4; }

namespace {

// out = yf + bias (or + 0, as packed_spike_linear_cpu writes it).
void write_row(const float* yf, const float* bias, int64_t tile_n, float* out) {
  if (bias)
    for (int64_t n = 0; n < tile_n; ++n) out[n] = yf[n] + bias[n];
  else
    for (int64_t n = 0; n < tile_n; ++n) out[n] = yf[n] + 0.0f;
}

// Listed inputs a nested consumer reads (each once per sample).
int64_t nested_events(const SpikeLists& s) {
  int64_t e = 0;
  for (int64_t m = 0; m < s.rows; ++m) e += s.cnt[m];
  return e;
}

// Nested lists, one scale group: per (tile, sample), steps from last to first, the integer
// sums carried from step to step.
void nested_lists(const PackedLinearParams& p, const SpikeLists& s, const uint8_t* w,
                  const float* scale, const float* bias, float* y, int nt) {
  const int64_t N = p.N, B = s.rows / s.steps, rb = packed_row_bytes(N, 4);
  const int64_t tiles = (N + 2 * kTileBytes - 1) / (2 * kTileBytes);
  parallel_chunks(tiles * B, work_chunk(tiles, B, nt), nt, [&](int64_t i0, int64_t i1) {
    alignas(64) int32_t lo[kTileBytes], hi[kTileBytes];
    alignas(64) float yf[2 * kTileBytes];
    for (int64_t it = i0; it < i1; ++it) {
      const int64_t tile = it / B, b = it % B;
      const int64_t n0 = tile * 2 * kTileBytes, tile_n = std::min<int64_t>(2 * kTileBytes, N - n0);
      const int64_t byte0 = n0 / 2, tile_bytes = (tile_n + 1) / 2;
      const int ch = static_cast<int>((tile_bytes + 63) / 64);
      std::memset(lo, 0, sizeof(int32_t) * 64 * ch);
      std::memset(hi, 0, sizeof(int32_t) * 64 * ch);
      for (int64_t t = s.steps - 1; t >= 0; --t) {
        const int64_t m = t * B + b;
        if (s.cnt[m]) kTiles[ch - 1](w, rb, byte0, tile_bytes, s.row(m), s.cnt[m], lo, hi);
        std::memset(yf, 0, sizeof(float) * tile_n);
        if (s.active[m]) fold(lo, hi, tile_n, s.active[m], scale + n0, 1, 0, yf);
        write_row(yf, bias ? bias + n0 : nullptr, tile_n, y + m * N + n0);
      }
    }
  });
}

}  // namespace

void event_linear_lists(const PackedLinearParams& p, const SpikeLists& s, const uint8_t* w,
                        const float* scale, const float* bias, float* y) {
  const int64_t M = p.M, K = p.K, N = p.N;
  if (M == 0 || N == 0) return;
  const int64_t rb = packed_row_bytes(N, 4), glen = group_len(K, p.group_size), G = num_groups(K, p.group_size);
  const int64_t tiles = (N + 2 * kTileBytes - 1) / (2 * kTileBytes);
  if (s.nested) {
    if (G != 1) throw std::logic_error("event_linear_lists: nested lists need one scale group");
    return nested_lists(p, s, w, scale, bias, y, threads_for(nested_events(s) * rb * 4 + M * N, p.threads));
  }
  // Work: every listed input reads its row's bytes of all tiles.
  const int nt = threads_for(s.total * rb * 4 + M * N, p.threads);
  parallel_chunks(tiles * M, work_chunk(tiles, M, nt), nt, [&](int64_t i0, int64_t i1) {
    alignas(64) int32_t lo[kTileBytes], hi[kTileBytes];
    alignas(64) float yf[2 * kTileBytes];
    for (int64_t it = i0; it < i1; ++it) {
      const int64_t t = it / M, m = it % M;
      const int64_t n0 = t * 2 * kTileBytes, tile_n = std::min<int64_t>(2 * kTileBytes, N - n0);
      const int64_t byte0 = n0 / 2, tile_bytes = (tile_n + 1) / 2;
      const int ch = static_cast<int>((tile_bytes + 63) / 64);
      std::memset(yf, 0, sizeof(float) * tile_n);
      for_group_runs(s.row(m), s.cnt[m], glen, [&](int64_t b, int64_t e, int64_t g) {
        std::memset(lo, 0, sizeof(int32_t) * 64 * ch);
        std::memset(hi, 0, sizeof(int32_t) * 64 * ch);
        kTiles[ch - 1](w, rb, byte0, tile_bytes, s.row(m) + b, e - b, lo, hi);
        fold(lo, hi, tile_n, e - b, scale + n0 * G, G, g, yf);
      });
      write_row(yf, bias ? bias + n0 : nullptr, tile_n, y + m * N + n0);
    }
  });
}

#else  // no AVX-512: the plan keeps packed_spike_linear_cpu

bool event_linear_lists_supported(const PackedLinearParams&) { return false; }

void event_linear_lists(const PackedLinearParams&, const SpikeLists&, const uint8_t*, const float*,
                        const float*, float*) {
  throw std::logic_error("event_linear_lists: not built (no AVX-512)");
}

#endif

}  // namespace runtime
}  // namespace sparsesnn
