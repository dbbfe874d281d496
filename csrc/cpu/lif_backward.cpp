// Fused multi-step LIF backward on CPU.
//
// Backward does not read a saved H: per chunk of neurons it recomputes H from x into a
// per-thread buffer that stays in L2 (lif.cpp, exact), then runs the reverse recurrence over
// it. Forward+backward then moves 20 bytes per neuron-step instead of 24, and training
// forward costs no more than inference. This file may use FMA contraction: gradients are
// checked with a tolerance, and the surrogate arithmetic is the backward's hot spot.
#include <vector>

#include "lif_common.h"
#include "parallel.h"
#include "sparsesnn/lif.h"
#include "surrogate_block.h"

namespace sparsesnn {
namespace lif_cpu {
namespace {

// Backward chunks are sized so the recomputed H (T x chunk floats) takes a quarter of L2
// (within 128 KiB - 1 MiB), leaving room for the rows streamed through beside it.
int64_t h_buffer_bytes() {
  static const int64_t bytes =
      std::clamp<int64_t>(cache_sizes().l2 / 4, int64_t(128) << 10, int64_t(1) << 20);
  return bytes;
}

// Neurons per backward chunk: as many as keep T rows of recomputed H within h_buffer_bytes(),
// a multiple of 16 (whole cache lines), at least 16.
int64_t backward_chunk_size(int64_t T) {
  const int64_t fit = h_buffer_bytes() / int64_t(sizeof(float)) / std::max<int64_t>(T, 1);
  return std::clamp<int64_t>(fit / 16 * 16, 16, kChunk);
}

// This thread's buffer for the recomputed H of one chunk.
float* h_buffer(int64_t floats) {
  thread_local std::vector<float> buf;
  if (static_cast<int64_t>(buf.size()) < floats) buf.resize(static_cast<size_t>(floats));
  return buf.data();
}

// Reverse recurrence over the recomputed H of one chunk. gV carries dL/dV[t] backwards. For
// PLIF (DECAY) V[t-1] is rebuilt from H[t-1] (or v0 at t = 0) to get dH/d(decay). Every flag
// is a template parameter so the inner loop has no branches and vectorizes.
template <int CHARGE, bool HARD, int SG, bool DETACH, bool DECAY>
void backward_chunk(const LifParams& p, const float* gs, const float* gv_last, const float* x,
                    const float* v0, float* gx, float* gv0, double* gdecay_out, int64_t n0,
                    int64_t n1, bool stream) {
  const int64_t len = n1 - n0, N = p.N, gs_step = p.grad_t_stride < 0 ? N : p.grad_t_stride;
  const float d = p.decay, vth = p.v_threshold, vr = HARD ? p.v_reset : 0.0f, a = p.alpha;
  const float dh_dv = CHARGE == kNoLeak ? 1.0f : 1.0f - d;
  const float dh_dx = CHARGE == kDecayInput ? d : 1.0f;
  float* hb = h_buffer(p.T * len);
  recompute_h(p, x, v0, hb, n0, n1);
  float gv[kChunk];
  float vinit[kChunk];  // V[-1], for the decay gradient at t = 0
  float sg[kBlock];     // surrogate derivatives of the current block
  for (int64_t i = 0; i < len; ++i) vinit[i] = v0 ? v0[n0 + i] : vr;
  for (int64_t i = 0; i < len; ++i) gv[i] = gv_last ? gv_last[n0 + i] : 0.0f;
  double gdecay = 0.0;
  for (int64_t t = p.T - 1; t >= 0; --t) {
    float* ht = hb + t * len;
    const float* hprev = t > 0 ? ht - len : vinit;
    const bool prev_is_h = t > 0;
    const float* gst = gs + t * gs_step + n0;
    float* gxt = gx + t * N + n0;
    // A streamed row is first written over its own H (each H[t][i] is read before that
    // element is written), then copied out with streaming stores.
    float* out = stream ? ht : gxt;
    float acc = 0.0f;
    for (int64_t b0 = 0; b0 < len; b0 += kBlock) {
      const int64_t b1 = std::min(len, b0 + kBlock);
      if (t > 0 && gs_step) prefetch_block(gst - gs_step + b0, b1 - b0);
      surrogate_block<SG>(ht + b0, vth, a, sg, b1 - b0);
#pragma omp simd reduction(+ : acc)
      for (int64_t i = b0; i < b1; ++i) {
        const float hh = ht[i];
        const float s = hh >= vth ? 1.0f : 0.0f;
        const float g = sg[i - b0];
        float dv_dh;
        if constexpr (HARD) dv_dh = DETACH ? 1.0f - s : 1.0f - s + (vr - hh) * g;
        else dv_dh = DETACH ? 1.0f : 1.0f - vth * g;
        const float gh = gst[i] * g + gv[i] * dv_dh;
        if constexpr (DECAY) {
          const float hp = hprev[i];
          const float sp = prev_is_h && hp >= vth ? 1.0f : 0.0f;  // V[-1] = v0 never "spiked"
          const float vprev = after_spike<HARD>(hp, sp, vth, vr);
          // dH/dd: decay_input -> X - (V - Vr) = (H - V) / d; otherwise -(V - Vr).
          const float dh_dd = CHARGE == kDecayInput ? (hh - vprev) / d : -(vprev - vr);
          acc += gh * dh_dd;
        }
        out[i] = gh * dh_dx;
        gv[i] = gh * dh_dv;
      }
    }
    if (stream) stream_row(gxt, ht, len);
    gdecay += acc;
  }
  if (gv0) std::copy(gv, gv + len, gv0 + n0);
  if (stream) stream_fence();
  if (DECAY) {
#if defined(SPARSESNN_OPENMP)
#pragma omp atomic
#endif
    *gdecay_out += gdecay;
  }
}

template <int CHARGE, bool HARD, int SG>
void backward_dispatch_flags(const LifParams& p, const float* gs, const float* gvl,
                             const float* x, const float* v0, float* gx, float* gv0, double* gd) {
  const bool detach = p.detach_reset, decay = gd != nullptr && CHARGE != kNoLeak;
  const bool stream = streams(p);
  parallel_chunks(p.N, backward_chunk_size(p.T), p.threads, [&](int64_t a, int64_t b) {
#define SSNN_BWD(DT, DC) \
  backward_chunk<CHARGE, HARD, SG, DT, DC>(p, gs, gvl, x, v0, gx, gv0, gd, a, b, stream)
    if (detach && decay) SSNN_BWD(true, true);
    else if (detach) SSNN_BWD(true, false);
    else if (decay) SSNN_BWD(false, true);
    else SSNN_BWD(false, false);
#undef SSNN_BWD
  });
}

template <int CHARGE, bool HARD>
void backward_dispatch_sg(const LifParams& p, const float* gs, const float* gvl, const float* x,
                          const float* v0, float* gx, float* gv0, double* gd) {
  switch (p.surrogate) {
    case kSigmoid: backward_dispatch_flags<CHARGE, HARD, kSigmoid>(p, gs, gvl, x, v0, gx, gv0, gd); break;
    case kAtan: backward_dispatch_flags<CHARGE, HARD, kAtan>(p, gs, gvl, x, v0, gx, gv0, gd); break;
    case kPiecewiseQuadratic:
      backward_dispatch_flags<CHARGE, HARD, kPiecewiseQuadratic>(p, gs, gvl, x, v0, gx, gv0, gd);
      break;
    case kSuperSpike: backward_dispatch_flags<CHARGE, HARD, kSuperSpike>(p, gs, gvl, x, v0, gx, gv0, gd); break;
    default: backward_dispatch_flags<CHARGE, HARD, kTriangle>(p, gs, gvl, x, v0, gx, gv0, gd); break;
  }
}

template <int CHARGE>
void backward_dispatch_reset(const LifParams& p, const float* gs, const float* gvl,
                             const float* x, const float* v0, float* gx, float* gv0,
                             double* gd) {
  if (p.hard_reset) backward_dispatch_sg<CHARGE, true>(p, gs, gvl, x, v0, gx, gv0, gd);
  else backward_dispatch_sg<CHARGE, false>(p, gs, gvl, x, v0, gx, gv0, gd);
}

}  // namespace
}  // namespace lif_cpu

void lif_backward_cpu(const LifParams& p, const float* grad_spikes, const float* grad_v_last,
                      const float* x, const float* v0, float* grad_x, float* grad_v0,
                      double* grad_decay) {
  using namespace lif_cpu;
  if (grad_decay) *grad_decay = 0.0;
  if (p.N == 0) return;
  switch (charge_of(p)) {
    case kDecayInput:
      backward_dispatch_reset<kDecayInput>(p, grad_spikes, grad_v_last, x, v0, grad_x, grad_v0, grad_decay);
      break;
    case kNoDecayInput:
      backward_dispatch_reset<kNoDecayInput>(p, grad_spikes, grad_v_last, x, v0, grad_x, grad_v0, grad_decay);
      break;
    default:
      backward_dispatch_reset<kNoLeak>(p, grad_spikes, grad_v_last, x, v0, grad_x, grad_v0, grad_decay);
      break;
  }
}

}  // namespace sparsesnn
