// Spike matrices as event lists, shared by the event-driven linear kernels (internal):
//  * RowLists:   per row m, the active inputs k (CSR), built in parallel with vector listings,
//  * InputLists: the same events by input k (per chunk of rows), each entry a row's offset in
//                the consumer's buffer, in increasing m.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "event_accum.h"
#include "parallel.h"

namespace sparsesnn {
namespace event {

// Active inputs of every row as CSR: row m's list is idx[off[m]] .. idx[off[m] + cnt[m]).
struct RowLists {
  std::vector<int64_t> off;
  std::vector<int32_t> cnt;
  std::vector<int32_t> idx;
};

inline int64_t count_row(const void* s, int type, int64_t offset, int64_t n) {
  int64_t c = 0;
  if (type == kSpikeF32) {
    const float* v = static_cast<const float*>(s) + offset;
#pragma omp simd reduction(+ : c)
    for (int64_t k = 0; k < n; ++k) c += v[k] != 0.0f;
  } else {
    const uint8_t* v = static_cast<const uint8_t*>(s) + offset;
#pragma omp simd reduction(+ : c)
    for (int64_t k = 0; k < n; ++k) c += v[k] != 0;
  }
  return c;
}

// Two passes (count, then fill) so the lists are one flat array. Rows are handed to threads in
// contiguous chunks; each chunk's region ends with kListSlack spare entries because the vector
// list writer may store past a row's end (the next row of the same chunk overwrites it later).
inline RowLists build_row_lists(const void* s, int type, int64_t M, int64_t K, int threads) {
  RowLists L;
  L.off.assign(M + 1, 0);
  L.cnt.assign(M, 0);
  if (M == 0) return L;
  const int64_t chunk = std::max<int64_t>(1, (M + 4 * threads - 1) / (4 * threads));
  parallel_chunks(M, chunk, threads, [&](int64_t a, int64_t b) {
    for (int64_t m = a; m < b; ++m) L.cnt[m] = static_cast<int32_t>(count_row(s, type, m * K, K));
  });
  int64_t pos = 0;
  for (int64_t m = 0; m < M; ++m) {
    if (m % chunk == 0 && m > 0) pos += kListSlack;
    L.off[m] = pos;
    pos += L.cnt[m];
  }
  L.off[M] = pos;
  L.idx.resize(pos + kListSlack);
  parallel_chunks(M, chunk, threads, [&](int64_t a, int64_t b) {
    for (int64_t m = a; m < b; ++m) list_active(s, type, m * K, K, 0, L.idx.data() + L.off[m]);
  });
  return L;
}

// The events of L by input, for chunks of `chunk` rows: the rows of chunk c where input k
// fired are at[off[c * K + k]] .. at[off[c * K + k + 1]), in increasing m, each stored as
// (m - c * chunk) * scale (a row number for scale 1, a buffer offset otherwise).
struct InputLists {
  std::vector<int64_t> off;
  std::vector<int32_t> at;
};

inline InputLists by_input(const RowLists& L, int64_t M, int64_t K, int64_t chunk, int32_t scale) {
  const int64_t nchunks = std::max<int64_t>(1, (M + chunk - 1) / chunk);
  InputLists I;
  I.off.assign(nchunks * K + 1, 0);
  for (int64_t m = 0; m < M; ++m) {  // counting sort by (chunk, k)
    const int32_t* row = L.idx.data() + L.off[m];
    int64_t* count = I.off.data() + (m / chunk) * K + 1;
    for (int32_t i = 0; i < L.cnt[m]; ++i) ++count[row[i]];
  }
  for (int64_t i = 0; i < nchunks * K; ++i) I.off[i + 1] += I.off[i];
  I.at.resize(I.off.back() + 1);
  std::vector<int64_t> fill(I.off.begin(), I.off.end() - 1);
  for (int64_t m = 0; m < M; ++m) {
    const int32_t* row = L.idx.data() + L.off[m];
    int64_t* f = fill.data() + (m / chunk) * K;
    const int32_t v = static_cast<int32_t>((m % chunk) * scale);
    for (int32_t i = 0; i < L.cnt[m]; ++i) I.at[f[row[i]]++] = v;
  }
  return I;
}

}  // namespace event
}  // namespace sparsesnn
