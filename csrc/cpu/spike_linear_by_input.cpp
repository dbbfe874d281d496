// spike_linear forward in input order (see spike_linear_by_input.h). Per output segment of
// kSeg columns and chunk of rows: walk the inputs k in order; the rows where k fired each add
// k's weight segment (held in registers) to their row of an L1 buffer. Weights stream in order
// (prefetched), so each is read once per chunk instead of once per event as in the row order;
// the price is a load and a store of the output per event, which L1 serves.
#include "spike_linear_by_input.h"

#include <algorithm>
#include <cstring>

#include "sparsesnn/cache_info.h"

namespace sparsesnn {
namespace {

constexpr int kSeg = 32;        // output columns per segment
constexpr int kMaxRows = 256;   // buffer rows (32 KiB)
constexpr int kPrefetchRows = 16;

// buf rows += w[0, live) for each buffer offset in at[b, e).
inline void add_segment(float* buf, const float* w, int live, const int32_t* at, int64_t b, int64_t e) {
#if defined(__AVX512F__)
  const __mmask16 m0 = live >= 16 ? 0xffff : static_cast<__mmask16>((1u << live) - 1u);
  const __mmask16 m1 = live >= 32 ? 0xffff : live <= 16 ? 0 : static_cast<__mmask16>((1u << (live - 16)) - 1u);
  const __m512 w0 = _mm512_maskz_loadu_ps(m0, w), w1 = _mm512_maskz_loadu_ps(m1, w + 16);
  for (int64_t i = b; i < e; ++i) {
    float* o = buf + at[i];
    _mm512_store_ps(o, _mm512_add_ps(_mm512_load_ps(o), w0));
    _mm512_store_ps(o + 16, _mm512_add_ps(_mm512_load_ps(o + 16), w1));
  }
#elif defined(__AVX2__)
  __m256 v[4];
  if (live == kSeg) {
    for (int q = 0; q < 4; ++q) v[q] = _mm256_loadu_ps(w + 8 * q);
  } else {  // the last segment: columns past N are neither read nor (later) written
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int q = 0; q < 4; ++q)
      v[q] = _mm256_maskload_ps(w + 8 * q, _mm256_cmpgt_epi32(_mm256_set1_epi32(live - 8 * q), iota));
  }
  for (int64_t i = b; i < e; ++i) {
    float* o = buf + at[i];
    for (int q = 0; q < 4; ++q) _mm256_store_ps(o + 8 * q, _mm256_add_ps(_mm256_load_ps(o + 8 * q), v[q]));
  }
#else
  float v[kSeg] = {};
  for (int j = 0; j < live; ++j) v[j] = w[j];
  for (int64_t i = b; i < e; ++i) {
    float* o = buf + at[i];
#pragma omp simd
    for (int j = 0; j < kSeg; ++j) o[j] += v[j];
  }
#endif
}

}  // namespace

int64_t by_input_chunk_rows() {
  static const int64_t rows = std::clamp<int64_t>(
      cache_sizes().l1d / 2 / (kSeg * int64_t(sizeof(float))), 16, kMaxRows);
  return rows;
}

void spike_linear_forward_by_input(const SpikeLinearParams& p, const event::RowLists& L,
                                   const WeightView& w, const float* bias, float* out, int threads) {
  const int64_t M = p.M, K = p.K, N = p.N, chunk = by_input_chunk_rows();
  const int64_t nchunks = (M + chunk - 1) / chunk, nseg = (N + kSeg - 1) / kSeg;
  const event::InputLists I = event::by_input(L, M, K, chunk, kSeg);
  // One item per segment, walking every row chunk: the segment's weight column ([K, kSeg])
  // comes from L2 after the first chunk.
  event::parallel_items(nseg, threads, [&](int64_t seg) {
    alignas(64) float buf[kMaxRows * kSeg];
    const int64_t n0 = seg * kSeg;
    const int live = static_cast<int>(std::min<int64_t>(kSeg, N - n0));
    float init[kSeg] = {};
    for (int j = 0; j < live && bias; ++j) init[j] = bias[n0 + j];
    const float* col = w.column(n0);
    for (int64_t c = 0; c < nchunks; ++c) {
      const int64_t m0 = c * chunk, rows = std::min(M, m0 + chunk) - m0;
      for (int64_t r = 0; r < rows; ++r) std::memcpy(buf + r * kSeg, init, sizeof(init));
      const int64_t* off = I.off.data() + c * K;
      for (int64_t k = 0; k < K; ++k) {
        // The hardware prefetcher does not follow a strided walk far enough ahead.
        if (k + kPrefetchRows < K) {
          const float* ahead = col + (k + kPrefetchRows) * w.ld;
          __builtin_prefetch(ahead);
          __builtin_prefetch(ahead + 16);
        }
        if (off[k + 1] > off[k]) add_segment(buf, col + k * w.ld, live, I.at.data(), off[k], off[k + 1]);
      }
      float* o = out + m0 * N + n0;
      if (live == kSeg) {  // a fixed-size copy is inlined; a variable one is a libc call per row
        for (int64_t r = 0; r < rows; ++r) std::memcpy(o + r * N, buf + r * kSeg, sizeof(float) * kSeg);
      } else {
        for (int64_t r = 0; r < rows; ++r) std::memcpy(o + r * N, buf + r * kSeg, sizeof(float) * live);
      }
    }
  });
}

}  // namespace sparsesnn
