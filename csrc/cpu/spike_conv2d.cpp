// Event-driven 2-D convolution of binary spikes on CPU, forward and grad_weight.
//
// Forward, per chunk of images:
//  1. every channel plane (contiguous H*W) is scanned once; each active pixel appends its
//     channel to that pixel's list (per group), giving channels-last event lists;
//  2. for every output pixel, the lists of the receptive-field taps are walked and each event
//     adds one contiguous weight row (O/G outputs of weight_r [G, KH, KW, C/G, O/G]) to an
//     output-channel tile held in registers. A row of output pixels is parked in a small
//     buffer and written to NCHW as contiguous runs.
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
    parallel_chunks(nn, 1, p.threads, [&](int64_t a, int64_t b) {
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
    // 2. Output rows: items (image, group, output row, output-channel tile).
    const int64_t items = nn * G * p.OH * otiles;
    parallel_chunks(items, 1, p.threads, [&](int64_t a, int64_t b) {
      std::vector<float> buf(p.OW * kTile);
      for (int64_t item = a; item < b; ++item) {
        int64_t rest = item;
        const int64_t ot = rest % otiles;
        rest /= otiles;
        const int64_t oy = rest % p.OH;
        rest /= p.OH;
        const int64_t g = rest % G, nl = rest / G;
        const int64_t o0 = ot * kTile;
        const int width = static_cast<int>(std::min<int64_t>(kTile, Og - o0));
        const int32_t* c_img = cnt + nl * HW * G;
        const int32_t* i_img = idx + nl * HW * G * Cg;
        event::with_regs(width, [&](auto r) {
          constexpr int R = decltype(r)::value;
          event::RowAcc<R> acc(width);
          for (int64_t ox = 0; ox < p.OW; ++ox) {
            acc.set(bias ? bias + g * Og + o0 : nullptr);
            for (int64_t ky = 0; ky < p.KH; ++ky) {
              const int64_t iy = oy * p.stride_h - p.pad_top + ky * p.dil_h;
              if (iy < 0 || iy >= p.H) continue;
              for (int64_t kx = 0; kx < p.KW; ++kx) {
                const int64_t ix = ox * p.stride_w - p.pad_left + kx * p.dil_w;
                if (ix < 0 || ix >= p.W) continue;
                const int64_t slot = (iy * p.W + ix) * G + g;
                const int n = c_img[slot];
                if (n == 0) continue;
                const float* wrow = weight_r + ((g * p.KH + ky) * p.KW + kx) * Cg * Og + o0;
                event::add_rows(acc, wrow, Og, i_img + slot * Cg, n);
              }
            }
            acc.store(buf.data() + ox * kTile);
          }
        });
        for (int j = 0; j < width; ++j) {
          float* dst = out + (((n0 + nl) * p.O + g * Og + o0 + j) * p.OH + oy) * p.OW;
          for (int64_t ox = 0; ox < p.OW; ++ox) dst[ox] = buf[ox * kTile + j];
        }
      }
    });
  }
}

void spike_conv2d_grad_weight_cpu(const SpikeConv2dParams& p, const void* s,
                                  const float* grad_out_cl, float* grad_weight) {
  const int64_t HW = p.H * p.W, G = p.groups, Cg = p.C / G, Og = p.O / G;
  const int64_t KK = p.KH * p.KW;
  if (p.C == 0 || p.O == 0) return;
  parallel_chunks(p.C, 1, p.threads, [&](int64_t a, int64_t b) {
    std::vector<int32_t> plane(HW + kListSlack);
    std::vector<float> acc(KK * Og);
    for (int64_t c = a; c < b; ++c) {
      const int64_t g = c / Cg, cl = c % Cg;
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t n = 0; n < p.N && p.OH > 0 && p.OW > 0; ++n) {
        const int k = event::list_active(s, p.spike_type, (n * p.C + c) * HW, HW, 0, plane.data());
        for (int i = 0; i < k; ++i) {
          const int64_t iy = plane[i] / p.W, ix = plane[i] % p.W;
          for (int64_t ky = 0; ky < p.KH; ++ky) {
            const int64_t ty = iy + p.pad_top - ky * p.dil_h;
            if (ty < 0 || ty % p.stride_h != 0 || ty / p.stride_h >= p.OH) continue;
            const int64_t oy = ty / p.stride_h;
            for (int64_t kx = 0; kx < p.KW; ++kx) {
              const int64_t tx = ix + p.pad_left - kx * p.dil_w;
              if (tx < 0 || tx % p.stride_w != 0 || tx / p.stride_w >= p.OW) continue;
              const int64_t ox = tx / p.stride_w;
              const float* grow = grad_out_cl + ((n * p.OH + oy) * p.OW + ox) * p.O + g * Og;
              float* dst = acc.data() + (ky * p.KW + kx) * Og;
#pragma omp simd
              for (int64_t o = 0; o < Og; ++o) dst[o] += grow[o];
            }
          }
        }
      }
      for (int64_t o = 0; o < Og; ++o) {
        float* dst = grad_weight + ((g * Og + o) * Cg + cl) * KK;
        for (int64_t kk = 0; kk < KK; ++kk) dst[kk] = acc[kk * Og + o];
      }
    }
  });
}

}  // namespace sparsesnn
