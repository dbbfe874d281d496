// Event-driven 2-D convolution of binary spikes on CPU, forward and grad_weight.
//
// Forward, per chunk of images:
//  1. every channel plane (contiguous H*W) is scanned once; each active pixel appends its
//     channel to that pixel's list (per group), giving channels-last event lists;
//  2. for every output pixel, the lists of its receptive-field taps are concatenated into one
//     list of weight rows, and each event adds one contiguous row (O/G outputs of weight_r
//     [G, KH, KW, C/G, O/G]) to an output-channel tile held in registers. A block of output
//     rows is parked channels-last in a small buffer and written to NCHW as long runs with
//     streaming stores.
// grad_weight: per input channel (parallel), the active pixels of its plane in every image
// add the grad_out rows (channels-last) of the output pixels they reach to a per-tap
// accumulator that stays in L1.
#include "sparsesnn/spike_conv2d.h"

#include <algorithm>
#include <vector>

#include "event_accum.h"
#include "parallel.h"

namespace sparsesnn {
namespace {

using event::kListSlack;
using event::kTile;

// Bound on the event-list scratch (int32 entries) per chunk of images: 8 MiB, so the lists
// written in step 1 are still cached when step 2 reads them.
constexpr int64_t kListBudget = int64_t(2) << 20;

// grad_weight of one (image, input channel): each of the k active pixels adds, for every tap,
// the grad_out row of the output pixel it reached to that tap's accumulator (acc [KK, Og]).
// UNIT: stride 1, so the output pixel needs no (slow, runtime-divisor) division.
template <bool UNIT>
void scatter_events(const SpikeConv2dParams& p, const int32_t* pix, int k, int64_t n, int64_t g,
                    int64_t Og, const float* grad_out_cl, float* acc) {
  for (int i = 0; i < k; ++i) {
    const int64_t iy = pix[i] / p.W, ix = pix[i] - iy * p.W;
    for (int64_t ky = 0; ky < p.KH; ++ky) {
      int64_t oy = iy + p.pad_top - ky * p.dil_h;
      if (oy < 0) continue;
      if (!UNIT) {
        if (oy % p.stride_h != 0) continue;
        oy /= p.stride_h;
      }
      if (oy >= p.OH) continue;
      for (int64_t kx = 0; kx < p.KW; ++kx) {
        int64_t ox = ix + p.pad_left - kx * p.dil_w;
        if (ox < 0) continue;
        if (!UNIT) {
          if (ox % p.stride_w != 0) continue;
          ox /= p.stride_w;
        }
        if (ox >= p.OW) continue;
        const float* grow = grad_out_cl + ((n * p.OH + oy) * p.OW + ox) * p.O + g * Og;
        float* dst = acc + (ky * p.KW + kx) * Og;
#pragma omp simd
        for (int64_t o = 0; o < Og; ++o) dst[o] += grow[o];
      }
    }
  }
}

}  // namespace

void spike_conv2d_forward_cpu(const SpikeConv2dParams& p, const void* s, const float* weight_r,
                              const float* bias, float* out) {
  const int64_t HW = p.H * p.W, G = p.groups, Cg = p.C / G, Og = p.O / G;
  if (p.N == 0 || p.O == 0 || p.OH == 0 || p.OW == 0) return;
  const int64_t per_image = std::max<int64_t>(1, p.C * HW);
  const int64_t nb = std::max<int64_t>(1, std::min<int64_t>(p.N, kListBudget / per_image));
  // Scratch reused across calls of this (Python) thread: no allocation, zeroing or page
  // faults per call. cnt is cleared per image below; idx entries are written before read.
  // (Raw pointers: inside the parallel region a thread_local name would be the worker's own.)
  static thread_local std::vector<int32_t> idx_store, cnt_store;
  if (idx_store.size() < static_cast<size_t>(nb * per_image + kListSlack))
    idx_store.resize(nb * per_image + kListSlack);
  if (cnt_store.size() < static_cast<size_t>(nb * HW * G)) cnt_store.resize(nb * HW * G);
  int32_t* const idx = idx_store.data();
  int32_t* const cnt = cnt_store.data();
  const int64_t otiles = (Og + kTile - 1) / kTile;

  for (int64_t n0 = 0; n0 < p.N; n0 += nb) {
    const int64_t nn = std::min(nb, p.N - n0);
    // 1. Event lists: slot (image, pixel, group) holds up to Cg active channels.
    parallel_chunks(nn, 1, event::threads_for(nn * per_image, p.threads), [&](int64_t a, int64_t b) {
      std::vector<int32_t> plane(HW + kListSlack);
      for (int64_t nl = a; nl < b; ++nl) {
        int32_t* c_img = cnt + nl * HW * G;
        std::fill(c_img, c_img + HW * G, 0);
        int32_t* i_img = idx + nl * HW * G * Cg;
        for (int64_t c = 0; c < p.C; ++c) {
          const int64_t g = c / Cg, cl = c % Cg;
          const int k = event::list_active(s, p.spike_type, ((n0 + nl) * p.C + c) * HW, HW, 0,
                                           plane.data());
          for (int i = 0; i < k; ++i) {
            const int64_t slot = plane[i] * G + g;
            i_img[slot * Cg + c_img[slot]++] = static_cast<int32_t>(cl);
          }
        }
      }
    });
    // 2. Output: items (image, group, output-channel tile, block of rb output rows). The block's
    // outputs are parked channels-last in buf and written to NCHW as runs of rb * OW floats:
    // per-row runs would be short stores at plane stride, which alias in the cache sets.
    const int64_t rb = std::max<int64_t>(1, std::min<int64_t>(p.OH, 256 / std::max<int64_t>(1, p.OW)));
    const int64_t yblocks = (p.OH + rb - 1) / rb;
    const int64_t items = nn * G * otiles * yblocks;
    // Work: one output tile per pixel plus the events (counted while the lists were built).
    int64_t events = 0;
    for (int64_t i = 0; i < nn * HW * G; ++i) events += cnt[i];
    const int threads = event::threads_for((events * p.KH * p.KW + nn * HW) * Og, p.threads);
    event::parallel_items(items, threads, [&](int64_t item) {
      int64_t rest = item;
      const int64_t yb = rest % yblocks;
      rest /= yblocks;
      const int64_t ot = rest % otiles;
      rest /= otiles;
      const int64_t g = rest % G, nl = rest / G;
      const int64_t o0 = ot * kTile, y0 = yb * rb, y1 = std::min(p.OH, y0 + rb);
      const int width = static_cast<int>(std::min<int64_t>(kTile, Og - o0));
      const int32_t* c_img = cnt + nl * HW * G;
      const int32_t* i_img = idx + nl * HW * G * Cg;
      std::vector<float> buf((y1 - y0) * p.OW * kTile);
      // The events of all taps of one output pixel, as rows of this group's weight block
      // (tap * Cg + c): one accumulation loop per pixel instead of one per tap, so the
      // variable list lengths cost one hard-to-predict loop exit, not one per tap.
      std::vector<int32_t> flat(p.KH * p.KW * Cg + 16);
      const float* wg = weight_r + g * p.KH * p.KW * Cg * Og + o0;
      event::with_regs(width, [&](auto r) {
        event::AccFor<decltype(r)> acc(width);
        for (int64_t oy = y0; oy < y1; ++oy) {
          for (int64_t ox = 0; ox < p.OW; ++ox) {
            int k = 0;
            for (int64_t ky = 0; ky < p.KH; ++ky) {
              const int64_t iy = oy * p.stride_h - p.pad_top + ky * p.dil_h;
              if (iy < 0 || iy >= p.H) continue;
              for (int64_t kx = 0; kx < p.KW; ++kx) {
                const int64_t ix = ox * p.stride_w - p.pad_left + kx * p.dil_w;
                if (ix < 0 || ix >= p.W) continue;
                const int64_t slot = (iy * p.W + ix) * G + g;
                k += event::append_offset(flat.data() + k, i_img + slot * Cg, c_img[slot],
                                          static_cast<int32_t>((ky * p.KW + kx) * Cg));
              }
            }
            acc.set(bias ? bias + g * Og + o0 : nullptr);
            event::add_rows(acc, wg, Og, flat.data(), k);
            acc.store(buf.data() + ((oy - y0) * p.OW + ox) * kTile);
          }
        }
      });
      const int64_t run = (y1 - y0) * p.OW;
      for (int j = 0; j < width; ++j) {
        float* dst = out + (((n0 + nl) * p.O + g * Og + o0 + j) * p.OH + y0) * p.OW;
        int64_t q = 0;
#if defined(__AVX512F__)
        // Streaming stores: the output is written once and should not evict the weights
        // (which the next items reuse) from L2.
        if ((reinterpret_cast<uintptr_t>(dst) & 63) == 0) {
          const __m512i step = _mm512_mullo_epi32(
              _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
              _mm512_set1_epi32(kTile));
          for (; q + 16 <= run; q += 16)
            _mm512_stream_ps(dst + q, _mm512_i32gather_ps(step, buf.data() + q * kTile + j, 4));
        }
#endif
        for (; q < run; ++q) dst[q] = buf[q * kTile + j];
      }
#if defined(__AVX512F__)
      _mm_sfence();  // this thread's streaming stores are complete before the region ends
#endif
    });
  }
}

void spike_conv2d_grad_weight_cpu(const SpikeConv2dParams& p, const void* s,
                                  const float* grad_out_cl, float* grad_weight) {
  const int64_t HW = p.H * p.W, G = p.groups, Cg = p.C / G, Og = p.O / G;
  const int64_t KK = p.KH * p.KW;
  if (p.C == 0 || p.O == 0) return;
  const int threads = event::threads_for(p.N * p.C * HW * KK * Og / 8, p.threads);
  const bool unit_stride = p.stride_h == 1 && p.stride_w == 1;
  // Items are blocks of input channels; inside one, images are the outer loop so one image's
  // grad_out (channels-last) stays in L2 while every channel of the block scatters into it,
  // instead of being streamed again for each channel.
  const int64_t cb = std::max<int64_t>(1, std::min<int64_t>(16, p.C / (2 * threads)));
  const int64_t blocks = (p.C + cb - 1) / cb;
  event::parallel_items(blocks, threads, [&](int64_t blk) {
    const int64_t c0 = blk * cb, c1 = std::min(p.C, c0 + cb);
    std::vector<int32_t> plane(HW + kListSlack);
    std::vector<float> acc((c1 - c0) * KK * Og, 0.0f);
    for (int64_t n = 0; n < p.N && p.OH > 0 && p.OW > 0; ++n) {
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t g = c / Cg;
        float* acc_c = acc.data() + (c - c0) * KK * Og;
        const int k = event::list_active(s, p.spike_type, (n * p.C + c) * HW, HW, 0, plane.data());
        if (unit_stride) scatter_events<true>(p, plane.data(), k, n, g, Og, grad_out_cl, acc_c);
        else scatter_events<false>(p, plane.data(), k, n, g, Og, grad_out_cl, acc_c);
      }
    }
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t g = c / Cg, cl = c % Cg;
      const float* acc_c = acc.data() + (c - c0) * KK * Og;
      for (int64_t o = 0; o < Og; ++o) {
        float* dst = grad_weight + ((g * Og + o) * Cg + cl) * KK;
        for (int64_t kk = 0; kk < KK; ++kk) dst[kk] = acc_c[kk * Og + o];
      }
    }
  });
}

}  // namespace sparsesnn
