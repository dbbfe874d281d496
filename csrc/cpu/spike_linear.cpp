// Event-driven spike x weight on CPU: forward and the event-driven grad_weight.
//
// Both passes first turn the spikes into per-row lists of active inputs (CSR, row_lists.h).
// The forward then runs in row order (below) or input order (spike_linear_by_input.cpp),
// whichever suits the shape and density; grad_weight sums grad_out rows per input with the
// row order's inner loop (an output tile of kTile floats in registers).
#include "sparsesnn/spike_linear.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "event_accum.h"
#include "parallel.h"
#include "row_lists.h"
#include "sparsesnn/cache_info.h"
#include "spike_linear_by_input.h"
namespace sparsesnn {

using event::kTile;

// Inputs per K block of the forward: a weight block [kb, kTile] fills half of this CPU's L2,
// so it stays there while every row of the item adds its events from that block.
inline int64_t k_block() {
  static const int64_t kb = std::clamp<int64_t>(
      cache_sizes().l2 / 2 / (kTile * int64_t(sizeof(float))) / 64 * 64, 64, 8192);
  return kb;
}

int64_t spike_linear_panel_width() { return kTile; }

namespace {

// Input order (spike_linear_by_input.cpp) when each input fires in at least ~2 rows of an L1
// chunk, so a weight segment loaded once serves several rows, and the rows fit in two chunks.
// Otherwise row order: at small M almost every event reads a weight row no other row uses
// (input order would stream the whole weight for them); at large M the row order's L2-resident
// weight block is reused by so many rows that it matched or beat input order (measured on a
// Zen 3, K=N=2048: 0.75-1.0x input order's time at M=1024, 1.1-2.1x at M=16-256 with 2-13
// events per input). AVX-512 builds keep the row order: with 128-column tiles it ran 13x dense
// at M=256, 5% on a Zen 5, and input order is not yet measured there (bench_spike_linear.py's
// diagnostic columns time both).
bool prefer_by_input(int64_t M, int64_t K, int64_t events) {
#if defined(__AVX512F__)
  (void)M, (void)K, (void)events;
  return false;
#else
  const int64_t chunk = by_input_chunk_rows();
  return M <= 2 * chunk && 2 * M * K <= events * std::min(M, chunk);
#endif
}

// Row order: an output tile of kTile columns lives in registers while the weight rows of the
// row's events are added to it; work items are (column tile, row block) pairs so each thread
// keeps its [K block, kTile] weight block hot in L2 while it walks many rows.
void forward_by_row(const SpikeLinearParams& p, const event::RowLists& L, const WeightView& w,
                    const float* bias, float* out, int threads) {
  const int64_t M = p.M, K = p.K, N = p.N, kKBlock = k_block();
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
  event::parallel_items(ntiles * mblocks, threads, [&](int64_t item) {
    const int64_t tile = item / mblocks, mb = item % mblocks;
    const int64_t n0 = tile * kTile;
    const int width = static_cast<int>(std::min<int64_t>(kTile, N - n0));
    const int64_t m0 = mb * mrows, m1 = std::min(M, m0 + mrows);
    const float* col = w.column(n0);
    event::with_regs(width, [&](auto r) {
      event::AccFor<decltype(r)> acc(width);
      for (int64_t kb = 0; kb < nkb; ++kb) {
        for (int64_t m = m0; m < m1; ++m) {
          const int32_t* sp = split.data() + m * (nkb + 1);
          float* o = out + m * N + n0;
          acc.set(kb > 0 ? o : (bias ? bias + n0 : nullptr));
          event::add_rows(acc, col, w.ld, L.idx.data() + L.off[m] + sp[kb], sp[kb + 1] - sp[kb]);
          acc.store(o);
        }
      }
    });
  });
}

}  // namespace

void spike_linear_forward_cpu(const SpikeLinearParams& p, const void* s, const float* weight_t,
                              const float* bias, float* out) {
  const int64_t M = p.M, K = p.K, N = p.N;
  if (p.panel != 0 && p.panel != kTile)
    throw std::invalid_argument("spike_linear_forward_cpu: panel must be 0 or " +
                                std::to_string(kTile) + ", got " + std::to_string(p.panel));
  if (p.order < 0 || p.order > 2)
    throw std::invalid_argument("spike_linear_forward_cpu: order must be 0, 1 or 2, got " +
                                std::to_string(p.order));
  if (M == 0 || N == 0) return;
  const WeightView w{weight_t, K, p.panel ? kTile : p.ldw > 0 ? p.ldw : N, p.panel};
  const event::RowLists L = event::build_row_lists(s, p.spike_type, M, K, event::threads_for(M * K, p.threads));
  int64_t events = 0;
  for (int64_t m = 0; m < M; ++m) events += L.cnt[m];
  const int threads = event::threads_for((events + M) * N, p.threads);
  if (p.order == 2 || (p.order == 0 && prefer_by_input(M, K, events))) return spike_linear_forward_by_input(p, L, w, bias, out, threads);
  forward_by_row(p, L, w, bias, out, threads);
}

void spike_linear_grad_weight_cpu(const SpikeLinearParams& p, const void* s,
                                  const float* grad_out, float* grad_weight) {
  const int64_t M = p.M, K = p.K, N = p.N;
  if (K == 0 || N == 0) return;
  const event::RowLists L = event::build_row_lists(s, p.spike_type, M, K, event::threads_for(M * K, p.threads));
  const int threads = event::threads_for((L.off[M] + K) * N, p.threads);
  // The lists by input (one chunk of all rows): input k's rows in increasing m, so grad_out
  // rows are read in order.
  const event::InputLists I = event::by_input(L, M, K, std::max<int64_t>(M, 1), 1);
  const int64_t* coff = I.off.data();
  const int32_t* cidx = I.at.data();
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
        event::AccFor<decltype(r)> acc(width);
        for (int i = 0; i < nk; ++i) {
          const int64_t k = k0 + i;
          acc.set(nullptr);
          event::add_rows(acc, grad_out + n0, N, cidx + coff[k],
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
