// AVX2 forms of the conv gather kernel's inner pieces (conv_gather.h), for CPUs without
// AVX-512 (e.g. AMD Zen 2): 16 ymm registers and no mask registers, so
//  * the event listing compresses through a permutation table (compress_avx2.h),
//  * code sums keep only the uint8 lanes in registers and widen them into a uint16 tile in L1
//    every sub-round (255 / M events), instead of holding both widths in registers,
//  * channels-last staging is written to NCHW through 8 x 8 register transposes.
#pragma once
#if defined(__AVX2__) && !defined(__AVX512BW__)
#include <immintrin.h>

#include <cstdint>

#include "compress_avx2.h"

namespace sparsesnn {
namespace conv_gather {
namespace avx2 {

// conv_gather::list_active_rows over the whole blocks of 8 of v[0, n): appends the indices
// of the nonzero v[k] (plus base) to idx at `count` (up to 8 entries written past it) and
// sets `analog` on a nonzero value other than 1. Returns how many inputs it covered.
inline int64_t list_active_blocks(const float* v, int64_t n, int32_t base, int32_t* idx, int& count,
                                  bool& analog) {
  const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
  const __m256i step = _mm256_set1_epi32(8);
  __m256i ids = _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(base));
  int bad = 0;
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    const __m256 x = _mm256_loadu_ps(v + k);
    const __m256 nz = _mm256_cmp_ps(x, zero, _CMP_NEQ_UQ);
    const int m = _mm256_movemask_ps(nz);
    bad |= _mm256_movemask_ps(_mm256_and_ps(nz, _mm256_cmp_ps(x, one, _CMP_NEQ_UQ)));
    count += sparsesnn::avx2::compress_store(idx + count, ids, m);
    ids = _mm256_add_epi32(ids, step);
  }
  if (bad) analog = true;
  return k;
}

// s16[o] += the sum of the unsigned codes of output o (tile order: chunk q, slot s, byte j at
// q * 64P + s * 64 + j) over rows[i0, i1), at most 65535 / M of them (no uint16 overflow).
// Chunks are 64 bytes; rows[] are byte offsets from base.
template <int BITS, int NCH>
inline void tile_sums(const uint8_t* base, const int32_t* rows, int i0, int i1, uint16_t* s16) {
  constexpr int P = 8 / BITS, kAhead = 8;
  constexpr unsigned M = (1u << BITS) - 1u;
  if constexpr (BITS == 8) {  // codes widen straight to uint16: 4 x 16 lanes per chunk
    __m256i a[NCH][4];
    for (int q = 0; q < NCH; ++q)
      for (int h = 0; h < 4; ++h) a[q][h] = _mm256_setzero_si256();
    for (int i = i0; i < i1; ++i) {
      if (i + kAhead < i1) _mm_prefetch(reinterpret_cast<const char*>(base + rows[i + kAhead]), _MM_HINT_T0);
      const uint8_t* row = base + rows[i];
      for (int q = 0; q < NCH; ++q)
        for (int h = 0; h < 4; ++h) {
          const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 64 * q + 16 * h));
          a[q][h] = _mm256_add_epi16(a[q][h], _mm256_cvtepu8_epi16(b));
        }
    }
    for (int q = 0; q < NCH; ++q)
      for (int h = 0; h < 4; ++h) {
        __m256i* d = reinterpret_cast<__m256i*>(s16 + 64 * q + 16 * h);
        _mm256_storeu_si256(d, _mm256_add_epi16(_mm256_loadu_si256(d), a[q][h]));
      }
  } else {
    constexpr int k8 = 255 / M;  // events per uint8 sub-round
    const __m256i vm = _mm256_set1_epi8(static_cast<char>(M));
    for (int j0 = i0; j0 < i1; j0 += k8) {
      const int j1 = j0 + k8 < i1 ? j0 + k8 : i1;
      __m256i a8[NCH][P][2];
      for (int q = 0; q < NCH; ++q)
        for (int s = 0; s < P; ++s) a8[q][s][0] = a8[q][s][1] = _mm256_setzero_si256();
      for (int i = j0; i < j1; ++i) {
        if (i + kAhead < i1) _mm_prefetch(reinterpret_cast<const char*>(base + rows[i + kAhead]), _MM_HINT_T0);
        const uint8_t* row = base + rows[i];
#pragma GCC unroll 2
        for (int q = 0; q < NCH; ++q)
#pragma GCC unroll 2
          for (int h = 0; h < 2; ++h) {
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 64 * q + 32 * h));
#pragma GCC unroll 8
            for (int s = 0; s < P; ++s) {
              const __m256i u = _mm256_and_si256(s == 0 ? v : _mm256_srli_epi16(v, s * BITS), vm);
              a8[q][s][h] = _mm256_add_epi8(a8[q][s][h], u);
            }
          }
      }
      for (int q = 0; q < NCH; ++q)
        for (int s = 0; s < P; ++s)
          for (int h = 0; h < 2; ++h) {
            __m256i* d = reinterpret_cast<__m256i*>(s16 + q * 64 * P + s * 64 + h * 32);
            const __m256i lo = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(a8[q][s][h]));
            const __m256i hi = _mm256_cvtepu8_epi16(_mm256_extracti128_si256(a8[q][s][h], 1));
            _mm256_storeu_si256(d, _mm256_add_epi16(_mm256_loadu_si256(d), lo));
            _mm256_storeu_si256(d + 1, _mm256_add_epi16(_mm256_loadu_si256(d + 1), hi));
          }
    }
  }
}

// out[o] = scale[o] * (mul * S[o] - offc) + bias[o] for o < width, S from the uint16 tile or
// (wide) the int32 one; the multiply and the add are rounded separately, as everywhere else.
inline void fold(const uint16_t* s16, const int32_t* s32, int64_t width, int32_t mul, int32_t offc,
                 const float* scale, const float* bias, float* out) {
  const __m256i vmul = _mm256_set1_epi32(mul), voff = _mm256_set1_epi32(offc);
  int64_t o = 0;
  for (; o + 8 <= width; o += 8) {
    const __m256i sum = s32 ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s32 + o))
                            : _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s16 + o)));
    const __m256i codes = _mm256_sub_epi32(_mm256_mullo_epi32(vmul, sum), voff);
    __m256 v = _mm256_mul_ps(_mm256_loadu_ps(scale + o), _mm256_cvtepi32_ps(codes));
    if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + o));
    _mm256_storeu_ps(out + o, v);
  }
  for (; o < width; ++o) {
    const float v = scale[o] * static_cast<float>(mul * (s32 ? s32[o] : s16[o]) - offc);
    out[o] = bias ? v + bias[o] : v;
  }
}

// a[j] = sum_i vals[i] * u_i[j], u_i[j] the slot-s code of byte j of the 64-byte chunk at
// base + rows[i] (the analog kernel's sums, fp32, 8 registers).
template <int BITS>
inline void analog_slot_sums(const uint8_t* base, const int32_t* rows, const float* vals, int n, int s,
                             float* a) {
  constexpr unsigned M = (1u << BITS) - 1u;
  constexpr int kAhead = 8;
  const __m256i vm = _mm256_set1_epi8(static_cast<char>(M));
  const __m128i sh = _mm_cvtsi32_si128(s * BITS);
  __m256 acc[8];
  for (int r = 0; r < 8; ++r) acc[r] = _mm256_setzero_ps();
  const auto widen = [](__m128i b) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b)); };
  for (int i = 0; i < n; ++i) {
    if (i + kAhead < n) _mm_prefetch(reinterpret_cast<const char*>(base + rows[i + kAhead]), _MM_HINT_T0);
    const __m256 xv = _mm256_set1_ps(vals[i]);
    for (int h = 0; h < 2; ++h) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(base + rows[i] + 32 * h));
      const __m256i u = _mm256_and_si256(_mm256_srl_epi16(v, sh), vm);
      const __m128i lo = _mm256_castsi256_si128(u), hi = _mm256_extracti128_si256(u, 1);
      acc[4 * h + 0] = _mm256_fmadd_ps(xv, widen(lo), acc[4 * h + 0]);
      acc[4 * h + 1] = _mm256_fmadd_ps(xv, widen(_mm_srli_si128(lo, 8)), acc[4 * h + 1]);
      acc[4 * h + 2] = _mm256_fmadd_ps(xv, widen(hi), acc[4 * h + 2]);
      acc[4 * h + 3] = _mm256_fmadd_ps(xv, widen(_mm_srli_si128(hi, 8)), acc[4 * h + 3]);
    }
  }
  for (int r = 0; r < 8; ++r) _mm256_storeu_ps(a + 8 * r, acc[r]);
}

// r[i][j] -> r[j][i] for an 8 x 8 float block in registers.
inline void transpose8(__m256 (&r)[8]) {
  __m256 t[8], s[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int g = 0; g < 2; ++g) {
    s[4 * g + 0] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
    s[4 * g + 1] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
    s[4 * g + 2] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
    s[4 * g + 3] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
  }
  for (int m = 0; m < 4; ++m) {
    r[m] = _mm256_permute2f128_ps(s[m], s[4 + m], 0x20);
    r[4 + m] = _mm256_permute2f128_ps(s[m], s[4 + m], 0x31);
  }
}

// The 16-pixel channels-last block buf [16, ldb] (outputs 0..width) into the NCHW planes of y
// (plane stride OP) at pixel pix0. buf may be read up to 7 floats past a row's width (the
// staging buffer has that slack); only live outputs are written. Both halves of a plane's 16
// pixels are stored back to back, so a streaming store fills whole 64-byte lines (a partly
// filled write-combining buffer is flushed at great cost).
inline void store16_nchw(const float* buf, int64_t ldb, int64_t width, float* y, int64_t OP, int64_t pix0) {
  float* dst = y + pix0;
  const bool aligned = (reinterpret_cast<uintptr_t>(dst) & 63) == 0 && OP % 16 == 0;
  for (int64_t o0 = 0; o0 < width; o0 += 8) {
    const int64_t n = width - o0 < 8 ? width - o0 : 8;
    __m256 a[8], b[8];
    for (int q = 0; q < 8; ++q) {
      a[q] = _mm256_loadu_ps(buf + q * ldb + o0);
      b[q] = _mm256_loadu_ps(buf + (8 + q) * ldb + o0);
    }
    transpose8(a);
    transpose8(b);
    for (int64_t j = 0; j < n; ++j) {
      float* d = dst + (o0 + j) * OP;
      if (aligned) {
        _mm256_stream_ps(d, a[j]);
        _mm256_stream_ps(d + 8, b[j]);
      } else {
        _mm256_storeu_ps(d, a[j]);
        _mm256_storeu_ps(d + 8, b[j]);
      }
    }
  }
}

}  // namespace avx2
}  // namespace conv_gather
}  // namespace sparsesnn
#endif
