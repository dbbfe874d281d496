// Helpers shared by the packed / pruned CPU kernels (internal to csrc/cpu).
#pragma once
#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "compress_avx2.h"
#include "parallel.h"
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#include <immintrin.h>
#define SPARSESNN_PACKED_AVX512 1
#endif

namespace sparsesnn {
namespace packed_detail {

// Writes the indices of the nonzero entries of x[0, K) to idx (ascending); returns the count.
inline int64_t list_nonzero(const float* x, int64_t K, int32_t* idx) {
  int64_t n = 0, k = 0;
#if defined(SPARSESNN_PACKED_AVX512)
  __m512i iv = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i step = _mm512_set1_epi32(16);
  const __m512 zero = _mm512_setzero_ps();
  for (; k + 16 <= K; k += 16) {
    const __mmask16 m = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + k), zero, _CMP_NEQ_UQ);
    _mm512_mask_compressstoreu_epi32(idx + n, m, iv);
    n += __builtin_popcount(static_cast<unsigned>(m));
    iv = _mm512_add_epi32(iv, step);
  }
#elif defined(__AVX2__)
  k = avx2::list_nonzero_blocks(x, K, 0, idx, n);
#endif
  for (; k < K; ++k)
    if (x[k] != 0.0f) idx[n++] = static_cast<int32_t>(k);
  return n;
}

// Active input lists of every row of x [M, K]: row m's nonzero indices are
// idx[m*K, m*K + count[m]). Returns (idx, count).
inline std::pair<std::vector<int32_t>, std::vector<int64_t>> list_rows_nonzero(
    const float* x, int64_t M, int64_t K, int threads) {
  std::vector<int32_t> idx(static_cast<size_t>(M * K));
  std::vector<int64_t> count(static_cast<size_t>(M));
  parallel_chunks(M, 16, threads, [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) count[m] = list_nonzero(x + m * K, K, idx.data() + m * K);
  });
  return {std::move(idx), std::move(count)};
}

// Threads worth using for kernels that touch `per_event` weights for each listed input.
inline int threads_for_events(const std::vector<int64_t>& count, int64_t per_event, int threads) {
  int64_t events = 0;
  for (const int64_t c : count) events += c;
  return threads_for(events * per_event, threads);
}

// Inputs per scale group (the whole row when group_size is 0 or covers K).
inline int64_t group_len(int64_t K, int64_t group_size) {
  return (group_size <= 0 || group_size >= K) ? std::max<int64_t>(K, 1) : group_size;
}
inline int64_t num_groups(int64_t K, int64_t group_size) {
  return (K + group_len(K, group_size) - 1) / group_len(K, group_size);
}

// Calls body(begin, end, g) for the runs of the ascending index list act[0, n) that fall in
// the same scale group g.
template <typename F>
inline void for_group_runs(const int32_t* act, int64_t n, int64_t glen, F&& body) {
  int64_t i = 0;
  while (i < n) {
    const int64_t g = act[i] / glen;
    const int64_t end_k = (g + 1) * glen;
    int64_t j = i;
    while (j < n && act[j] < end_k) ++j;
    body(i, j, g);
    i = j;
  }
}

// How many (tile, row) work items each thread chunk takes: whole tiles when there are enough
// of them (rows of one tile share cached weight rows), else a balanced split.
inline int64_t work_chunk(int64_t tiles, int64_t rows, int threads) {
  const int64_t total = tiles * rows;
  if (tiles >= threads) return rows;
  return std::max<int64_t>(1, (total + threads - 1) / threads);
}

}  // namespace packed_detail
}  // namespace sparsesnn
