// Linear layer over pruned weights in a compressed-row layout indexed by input neuron:
// a spike on input k touches only its surviving synapses.
//
//   row_ptr [K + 1] int32: entries of input k are [row_ptr[k], row_ptr[k+1])
//   index   [nnz]  output neuron of each entry, uint16 (N <= 65536) or int32, ascending
//                  within each input's entries
//   values  [nnz]  fp32 (bits == 32) or codes packed as a bit stream (pack.h encoding,
//                  value j at bits [j*bits, j*bits+bits))
//   scale   [N, G] per output (and group of inputs), unused for fp32 values
// Binary x: integer accumulation of the codes, scale applied once per group at the end.
// Analog x (spike == false): fp32 accumulation of x * value over x != 0.
#pragma once
#include <cstdint>

namespace sparsesnn {

struct PrunedLinearParams {
  int64_t M = 0, K = 0, N = 0;
  int bits = 32;           // 32 (fp32 values) or 8/4/2/1 (packed codes)
  int64_t group_size = 0;  // 0 or >= K: one group
  bool index16 = true;     // index is uint16 (else int32)
  int threads = 1;
};

void pruned_linear_cpu(const PrunedLinearParams& p, bool spike, const float* x,
                       const int32_t* row_ptr, const void* index, const void* values,
                       const float* scale, const float* bias, float* y);

#if defined(SPARSESNN_WITH_CUDA)
// Deterministic (no atomics; same summation order as the CPU kernel). Requires index strictly
// ascending within each input's entries. y is overwritten. work: pruned_linear_cuda_work_floats(p)
// floats of scratch, zero-filled by the caller once (the kernel leaves it zero). spike: as
// packed_linear_cuda (non-binary x is still summed correctly). device: the tensors' device.
int64_t pruned_linear_cuda_work_floats(const PrunedLinearParams& p);
void pruned_linear_cuda(const PrunedLinearParams& p, bool spike, const float* x,
                        const int32_t* row_ptr, const void* index, const void* values,
                        const float* scale, const float* bias, float* y, float* work,
                        int device, void* stream);
#endif

}  // namespace sparsesnn
