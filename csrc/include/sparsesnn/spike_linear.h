// Event-driven spike x weight product (fully connected layer).
//
//   out[m, :] = bias + sum_{k : s[m, k] != 0} weight_t[k, :]          (s binary)
//
// Layout: s is [M, K] contiguous (fp32 or uint8/bool, see SpikeType), weight_t is the
// input-major copy [K, N] of the layer weight [N, K] so an active input reads one contiguous
// row; out is [M, N] fp32. The backward's grad_weight is event-driven too:
//
//   grad_weight[n, k] = sum_{m : s[m, k] != 0} grad_out[m, n]
//
// written straight into the [N, K] layout of the parameter. grad_s (dense) is left to BLAS.
#pragma once
#include <cstdint>

namespace sparsesnn {

struct SpikeLinearParams {
  int64_t M = 0;       // rows (batch x time, folded)
  int64_t K = 0;       // inputs
  int64_t N = 0;       // outputs
  int spike_type = 0;  // 0: fp32, 1: uint8 / bool (one byte per spike)
  int threads = 1;     // CPU threads (caller passes torch.get_num_threads())
  int64_t ldw = 0;     // row stride of weight_t in floats (0: N); CPU forward only
  // CPU forward only: > 0 when weight_t is in column panels instead, [ceil(N / panel)][K][panel]
  // (the last panel zero-padded); must equal spike_linear_panel_width().
  int64_t panel = 0;
  // CPU forward only: 0 picks the schedule by shape and density; 1 forces the row order, 2 the
  // input order (tests and benchmarks compare them).
  int order = 0;
};

// Columns per weight panel of the CPU forward (its output tile: 64 with AVX2, 128 with AVX-512).
int64_t spike_linear_panel_width();

// bias may be null.
void spike_linear_forward_cpu(const SpikeLinearParams& p, const void* s, const float* weight_t,
                              const float* bias, float* out);

// grad_out [M, N] contiguous fp32 -> grad_weight [N, K] fp32 (overwritten).
void spike_linear_grad_weight_cpu(const SpikeLinearParams& p, const void* s,
                                  const float* grad_out, float* grad_weight);

// One pass over n spikes: how many are non-zero, and how many are neither 0 nor 1.
void spike_count_cpu(const void* s, int spike_type, int64_t n, int threads, int64_t* nonzero,
                     int64_t* nonbinary);

#if defined(SPARSESNN_WITH_CUDA)
// CUDA: s fp32 or uint8/bool, weights and outputs fp32; device: the tensors' CUDA device
// (made current for the call); stream is a cudaStream_t. Launch failures throw.
void spike_linear_forward_cuda(const SpikeLinearParams& p, const void* s, const float* weight_t,
                               const float* bias, float* out, int device, void* stream);
void spike_linear_grad_weight_cuda(const SpikeLinearParams& p, const void* s,
                                   const float* grad_out, float* grad_weight, int device,
                                   void* stream);
#endif

}  // namespace sparsesnn
