// AVX2 stand-in for AVX-512's compress: pack the lanes selected by an 8-bit mask to the
// front of a vector (through a 256-entry permutation table), so the event listings build
// their index lists branch-free on CPUs without AVX-512 (e.g. AMD Zen 2/3).
#pragma once
#if defined(__AVX2__)
#include <immintrin.h>

#include <array>
#include <cstdint>

namespace sparsesnn {
namespace avx2 {

// kCompress[m]: the positions of the set bits of m, ascending, one per byte (the lane order
// _mm256_permutevar8x32_epi32 needs to pack the selected lanes to the front).
inline constexpr std::array<uint64_t, 256> make_compress_table() {
  std::array<uint64_t, 256> t{};
  for (int m = 0; m < 256; ++m) {
    uint64_t v = 0;
    int k = 0;
    for (int b = 0; b < 8; ++b)
      if (m >> b & 1) v |= static_cast<uint64_t>(b) << (8 * k++);
    t[m] = v;
  }
  return t;
}
inline constexpr std::array<uint64_t, 256> kCompress = make_compress_table();

// Writes the lanes of ids selected by mask (8 bits) to dst, packed and in order; all 8 lanes
// are stored (the entries past the selected ones are garbage). Returns how many were selected.
inline int compress_store(int32_t* dst, __m256i ids, int mask) {
  const __m256i perm = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<long long>(kCompress[mask])));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm256_permutevar8x32_epi32(ids, perm));
  return __builtin_popcount(static_cast<unsigned>(mask));
}

// The indices k (plus base) of the nonzero v[k] over the whole blocks of 8 of v[0, n),
// appended to idx at count. Each block stores 8 entries at idx + count, and count never
// exceeds the block's position, so nothing is written past idx + n. Returns the inputs covered.
inline int64_t list_nonzero_blocks(const float* v, int64_t n, int32_t base, int32_t* idx, int64_t& count) {
  const __m256 zero = _mm256_setzero_ps();
  const __m256i step = _mm256_set1_epi32(8);
  __m256i ids = _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(base));
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    count += compress_store(idx + count, ids, _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(v + k), zero, _CMP_NEQ_UQ)));
    ids = _mm256_add_epi32(ids, step);
  }
  return k;
}

// The same over bytes (uint8 / bool spikes), 32 per step.
inline int64_t list_nonzero_blocks(const uint8_t* v, int64_t n, int32_t base, int32_t* idx, int64_t& count) {
  const __m256i zero = _mm256_setzero_si256(), step = _mm256_set1_epi32(8);
  __m256i ids = _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(base));
  int64_t k = 0;
  for (; k + 32 <= n; k += 32) {
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + k));
    uint32_t m = ~static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_cmpeq_epi8(b, zero)));
    for (int part = 0; part < 4; ++part, m >>= 8) {
      count += compress_store(idx + count, ids, static_cast<int>(m & 0xffu));
      ids = _mm256_add_epi32(ids, step);
    }
  }
  return k;
}

}  // namespace avx2
}  // namespace sparsesnn
#endif
