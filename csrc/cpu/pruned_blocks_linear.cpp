// Event-driven spike linear over the blocked pruned layout (pruned_blocks.h). Per row: list
// the active inputs, then for each active input walk its non-empty 16-output blocks and add
// the survivors' codes into int32 accumulators (integers only; scale once per group).
#include <algorithm>
#include <cstdint>
#include <vector>

#include "packed_common.h"
#include "parallel.h"
#include "sparsesnn/pruned_blocks.h"

#if !defined(SPARSESNN_PACKED_AVX512) && defined(__AVX2__)
#include <immintrin.h>
#endif

namespace sparsesnn {
namespace {

using packed_detail::for_group_runs;
using packed_detail::group_len;
using packed_detail::list_rows_nonzero;
using packed_detail::threads_for_events;

#if !defined(SPARSESNN_PACKED_AVX512) && defined(__AVX2__)
// AVX2 has no expand: lane i of an 8-lane half takes code number popcount(m & ((1 << i) - 1)),
// a permutation looked up by the half's mask byte m (lanes whose bit is clear are zeroed).
struct ExpandTable {
  int32_t lane[256][8];
};
constexpr ExpandTable make_expand_table() {
  ExpandTable t{};
  for (int m = 0; m < 256; ++m)
    for (int i = 0, c = 0; i < 8; ++i) {
      t.lane[m][i] = c;
      c += (m >> i) & 1;
    }
  return t;
}
alignas(32) constexpr ExpandTable kExpand = make_expand_table();

inline __m256i expand8(__m256i codes, unsigned m) {
  const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  const __m256i live = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(static_cast<int>(m)), bit), bit);
  const __m256i perm = _mm256_load_si256(reinterpret_cast<const __m256i*>(kExpand.lane[m]));
  return _mm256_and_si256(_mm256_permutevar8x32_epi32(codes, perm), live);
}
#endif

// acc[i] += the codes c[0, popcount(mask)), placed at the set bits i of mask. Reads up to 16
// bytes from c (the codes buffer has 16 bytes of slack).
inline void add_block(int32_t* acc, uint16_t mask, const int8_t* c) {
#if defined(SPARSESNN_PACKED_AVX512)
  const __m512i v = _mm512_maskz_expand_epi32(
      static_cast<__mmask16>(mask),
      _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c))));
  _mm512_storeu_si512(acc, _mm512_add_epi32(_mm512_loadu_si512(acc), v));
#elif defined(__AVX2__)
  // Branch-free: the scalar loop below mispredicts on its survivor count (0-16, data-driven).
  const unsigned lo = mask & 0xFFu, hi = mask >> 8;
  const __m256i c_lo = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(c)));
  const __m256i c_hi = _mm256_cvtepi8_epi32(
      _mm_loadl_epi64(reinterpret_cast<const __m128i*>(c + __builtin_popcount(lo))));
  __m256i* a = reinterpret_cast<__m256i*>(acc);
  _mm256_storeu_si256(a, _mm256_add_epi32(_mm256_loadu_si256(a), expand8(c_lo, lo)));
  _mm256_storeu_si256(a + 1, _mm256_add_epi32(_mm256_loadu_si256(a + 1), expand8(c_hi, hi)));
#else
  for (unsigned m = mask; m; m &= m - 1) acc[__builtin_ctz(m)] += *c++;
#endif
}

}  // namespace

void pruned_blocks_spike_linear_cpu(const PrunedLinearParams& p, const float* x,
                                    const int32_t* block_ptr, const uint16_t* block_id,
                                    const uint16_t* block_mask, const int32_t* block_code,
                                    const int8_t* codes, const float* scale, const float* bias,
                                    float* y) {
  const int64_t M = p.M, K = p.K, N = p.N;
  if (M == 0 || N == 0) return;
  const int64_t NB = (N + 15) / 16, glen = group_len(K, p.group_size);
  const int64_t G = (K + glen - 1) / glen;
  const auto lists = list_rows_nonzero(x, M, K, p.threads);
  // Work: each active input touches its blocks (16 outputs each), about the average count.
  const int nt = threads_for_events(lists.second, 16 * block_ptr[K] / std::max<int64_t>(K, 1) + 1,
                                    p.threads);
  // Few rows: also split the output blocks between threads (each owns its blocks).
  const int64_t parts = M >= nt ? 1 : std::max<int64_t>(1, std::min<int64_t>(nt, NB / 16));
  parallel_chunks(M * parts, 1, nt, [&](int64_t w0, int64_t w1) {
    // 64-byte aligned accumulators: a block's add is then one cache line, not a split load
    // and store (split accesses also defeat store-to-load forwarding between inputs).
    std::vector<int32_t> iacc_buf(static_cast<size_t>(NB * 16 + 16));
    int32_t* iacc = iacc_buf.data() + (16 - (reinterpret_cast<uintptr_t>(iacc_buf.data()) / 4) % 16) % 16;
    std::vector<float> yf(static_cast<size_t>(NB * 16));
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t m = w / parts, part = w % parts;
      const int64_t b0 = NB * part / parts, b1 = NB * (part + 1) / parts;
      const int64_t n0 = b0 * 16, n1 = std::min(N, b1 * 16);
      const int32_t* act = lists.first.data() + m * K;
      const int64_t na = lists.second[m];
      std::fill(yf.begin() + n0, yf.begin() + b1 * 16, 0.0f);
      for_group_runs(act, na, glen, [&](int64_t b, int64_t e, int64_t g) {
        std::fill(iacc + n0, iacc + b1 * 16, 0);
        for (int64_t i = b; i < e; ++i) {
          const int32_t k = act[i];
          // Blocks are independent (each has its own code offset): no chain through a
          // running code pointer, so consecutive blocks overlap in the pipeline.
          for (int64_t j = block_ptr[k], j1 = block_ptr[k + 1]; j < j1; ++j) {
            const int64_t id = block_id[j];
            if (id < b0) continue;  // another thread's outputs
            if (id >= b1) break;
            add_block(iacc + id * 16, block_mask[j], codes + block_code[j]);
          }
        }
        for (int64_t n = n0; n < n1; ++n) yf[n] += scale[n * G + g] * static_cast<float>(iacc[n]);
      });
      float* out = y + m * N;
      for (int64_t n = n0; n < n1; ++n) out[n] = yf[n] + (bias ? bias[n] : 0.0f);
    }
  });
}

}  // namespace sparsesnn
