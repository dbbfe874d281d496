// Event-driven spike x weight on CPU: forward and the event-driven grad_weight.
//
// Both passes first turn the spikes into per-row lists of active inputs (CSR), then run the
// same inner loop: an output tile of kTile floats lives in registers while the weight rows
// (forward) or grad_out rows (grad_weight) of the active events are added to it. Work is
// split over (column tile, row block) pairs so each thread keeps one weight column tile
// ([K, kTile] floats) hot in its L2 while it walks many rows.
#include "sparsesnn/spike_linear.h"

#include <algorithm>
#include <vector>

#include "event_accum.h"
#include "parallel.h"
#include "sparsesnn/cache_info.h"

namespace sparsesnn {
namespace {

using event::kListSlack;
using event::kTile;

// Active inputs of every row as CSR: row m's list is idx[off[m]] .. idx[off[m] + cnt[m]).
struct RowLists {
  std::vector<int64_t> off;
  std::vector<int32_t> cnt;
  std::vector<int32_t> idx;
};

inline int64_t count_row(const void* s, int type, int64_t offset, int64_t n) {
  int64_t c = 0;
  if (type == event::kSpikeF32) {
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
RowLists build_row_lists(const void* s, int type, int64_t M, int64_t K, int threads) {
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
    for (int64_t m = a; m < b; ++m) event::list_active(s, type, m * K, K, 0, L.idx.data() + L.off[m]);
  });
  return L;
}

}  // namespace

// Inputs per K block of the forward: a weight block [kb, kTile] fills half of this CPU's L2,
// so it stays there while every row of the item adds its events from that block.
inline int64_t k_block() {
  static const int64_t kb = std::clamp<int64_t>(
      cache_sizes().l2 / 2 / (kTile * int64_t(sizeof(float))) / 64 * 64, 64, 8192);
  return kb;
}

void spike_linear_forward_cpu(const SpikeLinearParams& p, const void* s, const float* weight_t,
                              const float* bias, float* out) {
  const int64_t M = p.M, K = p.K, N = p.N, ldw = p.ldw > 0 ? p.ldw : N;
  if (M == 0 || N == 0) return;
  const int64_t kKBlock = k_block();
  const RowLists L = build_row_lists(s, p.spike_type, M, K, event::threads_for(M * K, p.threads));
  const int threads = event::threads_for((L.off[M] + M) * N, p.threads);
  // Where each row's (sorted) list crosses into the next K block: split[m * (nkb + 1) + b].
  const int64_t nkb = std::max<int64_t>(1, (K + kKBlock - 1) / kKBlock);
  std::vector<int32_t> split(M * (nkb + 1));
  for (int64_t m = 0; m < M; ++m) {
    const int32_t* row = L.idx.data() + L.off[m];
    int32_t* sp = split.data() + m * (nkb + 1);
    int32_t i = 0;
    for (int64_t b = 0; b < nkb; ++b) {
      sp[b] = i;
      while (i < L.cnt[m] && row[i] < (b + 1) * kKBlock) ++i;
    }
    sp[nkb] = L.cnt[m];
  }
  // Column tiles first; split rows too when there are fewer tiles than ~4 per thread.
  const int64_t ntiles = (N + kTile - 1) / kTile;
  const int64_t mblocks =
      std::min<int64_t>(M, std::max<int64_t>(1, (4 * threads + ntiles - 1) / ntiles));
  const int64_t mrows = (M + mblocks - 1) / mblocks;
  event::parallel_items(ntiles * mblocks, threads, [&](int64_t a) {
    const int64_t b = a + 1;
    for (int64_t item = a; item < b; ++item) {
      const int64_t tile = item / mblocks, mb = item % mblocks;
      const int64_t n0 = tile * kTile;
      const int width = static_cast<int>(std::min<int64_t>(kTile, N - n0));
      const int64_t m0 = mb * mrows, m1 = std::min(M, m0 + mrows);
      event::with_regs(width, [&](auto r) {
        constexpr int R = decltype(r)::value;
        event::RowAcc<R> acc(width);
        for (int64_t kb = 0; kb < nkb; ++kb) {
          for (int64_t m = m0; m < m1; ++m) {
            const int32_t* sp = split.data() + m * (nkb + 1);
            float* o = out + m * N + n0;
            acc.set(kb > 0 ? o : (bias ? bias + n0 : nullptr));
            event::add_rows(acc, weight_t + n0, ldw, L.idx.data() + L.off[m] + sp[kb],
                            sp[kb + 1] - sp[kb]);
            acc.store(o);
          }
        }
      });
    }
  });
}

void spike_linear_grad_weight_cpu(const SpikeLinearParams& p, const void* s,
                                  const float* grad_out, float* grad_weight) {
  const int64_t M = p.M, K = p.K, N = p.N;
  if (K == 0 || N == 0) return;
  const RowLists L = build_row_lists(s, p.spike_type, M, K, event::threads_for(M * K, p.threads));
  const int threads = event::threads_for((L.off[M] + K) * N, p.threads);
  // Transpose the lists (counting sort by input k): col k lists the rows m where s[m, k] = 1,
  // in increasing m, so grad_out rows are read in order.
  std::vector<int64_t> coff(K + 1, 0);
  for (int64_t m = 0; m < M; ++m) {
    const int32_t* row = L.idx.data() + L.off[m];
    for (int32_t i = 0; i < L.cnt[m]; ++i) ++coff[row[i] + 1];
  }
  for (int64_t k = 0; k < K; ++k) coff[k + 1] += coff[k];
  std::vector<int32_t> cidx(coff[K] + 1);
  {
    std::vector<int64_t> fill(coff.begin(), coff.end() - 1);
    for (int64_t m = 0; m < M; ++m) {
      const int32_t* row = L.idx.data() + L.off[m];
      for (int32_t i = 0; i < L.cnt[m]; ++i) cidx[fill[row[i]]++] = static_cast<int32_t>(m);
    }
  }
  // Items: (column tile of N, block of kKB inputs). Each input's sum is built in registers,
  // parked in a small buffer, and the block is written transposed into grad_weight [N, K]
  // as kKB-wide contiguous runs.
  constexpr int kKB = 16;
  const int64_t ntiles = (N + kTile - 1) / kTile;
  const int64_t kblocks = (K + kKB - 1) / kKB;
  event::parallel_items(ntiles * kblocks, threads, [&](int64_t a) {
    const int64_t b = a + 1;
    alignas(64) float buf[kKB][kTile];
    for (int64_t item = a; item < b; ++item) {
      const int64_t tile = item / kblocks, kb = item % kblocks;
      const int64_t n0 = tile * kTile, k0 = kb * kKB;
      const int width = static_cast<int>(std::min<int64_t>(kTile, N - n0));
      const int nk = static_cast<int>(std::min<int64_t>(kKB, K - k0));
      event::with_regs(width, [&](auto r) {
        constexpr int R = decltype(r)::value;
        event::RowAcc<R> acc(width);
        for (int i = 0; i < nk; ++i) {
          const int64_t k = k0 + i;
          acc.set(nullptr);
          event::add_rows(acc, grad_out + n0, N, cidx.data() + coff[k],
                          static_cast<int>(coff[k + 1] - coff[k]));
          acc.store(buf[i]);
        }
      });
      for (int j = 0; j < width; ++j) {
        float* dst = grad_weight + (n0 + j) * K + k0;
        for (int i = 0; i < nk; ++i) dst[i] = buf[i][j];
      }
    }
  });
}

void spike_count_cpu(const void* s, int spike_type, int64_t n, int threads, int64_t* nonzero,
                     int64_t* nonbinary) {
  constexpr int64_t kChunk = 1 << 16;
  const int64_t nchunks = (n + kChunk - 1) / kChunk;
  std::vector<int64_t> nz(nchunks, 0), nb(nchunks, 0);
  parallel_chunks(nchunks, 1, event::threads_for(n, threads), [&](int64_t a, int64_t b) {
    for (int64_t c = a; c < b; ++c) {
      const int64_t i0 = c * kChunk, i1 = std::min(n, i0 + kChunk);
      int64_t z = 0, bad = 0;
      if (spike_type == event::kSpikeF32) {
        const float* v = static_cast<const float*>(s);
#pragma omp simd reduction(+ : z, bad)
        for (int64_t i = i0; i < i1; ++i) {
          z += v[i] != 0.0f;
          bad += (v[i] != 0.0f) & (v[i] != 1.0f);
        }
      } else {
        const uint8_t* v = static_cast<const uint8_t*>(s);
#pragma omp simd reduction(+ : z, bad)
        for (int64_t i = i0; i < i1; ++i) {
          z += v[i] != 0;
          bad += v[i] > 1;
        }
      }
      nz[c] = z;
      nb[c] = bad;
    }
  });
  int64_t z = 0, bad = 0;
  for (int64_t c = 0; c < nchunks; ++c) {
    z += nz[c];
    bad += nb[c];
  }
  *nonzero = z;
  *nonbinary = bad;
}

}  // namespace sparsesnn
