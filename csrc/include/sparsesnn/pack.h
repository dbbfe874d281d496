// Low-bit weight packing: signed integer codes <-> input-major packed rows.
//
// Bit layout (the same on CPU, CUDA and in sparsesnn/reference.py):
//   codes  int8 [N, K]  (nn.Linear order: output n, input k)
//   packed uint8 [K, row_bytes], row_bytes = ceil(N * bits / 8); row k holds the codes of
//          input k for all N outputs, so one spike reads one contiguous packed row.
//   The code of output n sits at bits [n*bits, n*bits + bits) of its row: byte n*bits/8,
//   starting at bit (n*bits) % 8 (bit 0 = least significant); codes never straddle bytes.
//   Stored value u is the code plus an offset so it is unsigned:
//     bits 8, 4, 2:  u = code + 2^(bits-1)   (int8 codes -127..127 -> 1..255; ternary and
//                                              int2 {-1,0,1} -> {1,2,3} in 2 bits)
//     bits 1:        u = (code + 1) / 2      (binary {-1,+1} -> {0,1})
//   so code = kMul * u - kOff with (kMul, kOff) = (1, 2^(bits-1)) or (2, 1) for binary.
//   Unused high bits of a row's last byte are zero.
// The same encoding is used for the value stream of the pruned (compressed-row) layout,
// where value j sits at bits [j*bits, j*bits + bits) of one flat byte buffer.
#pragma once
#include <cstdint>

namespace sparsesnn {

inline int64_t packed_row_bytes(int64_t n, int bits) { return (n * bits + 7) / 8; }
inline int code_mul(int bits) { return bits == 1 ? 2 : 1; }
inline int code_off(int bits) { return bits == 1 ? 1 : (1 << (bits - 1)); }

// codes [N, K] int8 -> packed [K, row_bytes]. Codes must lie in the format's range.
void pack_cpu(const int8_t* codes, int64_t N, int64_t K, int bits, uint8_t* packed, int threads);
// packed [K, row_bytes] -> codes [N, K].
void unpack_cpu(const uint8_t* packed, int64_t N, int64_t K, int bits, int8_t* codes, int threads);
// values [nnz] int8 -> flat bit stream of ceil(nnz*bits/8) bytes (pruned layout).
void pack_stream_cpu(const int8_t* codes, int64_t nnz, int bits, uint8_t* out);

#if defined(SPARSESNN_WITH_CUDA)
// device: the tensors' CUDA device (made current for the call); stream: a cudaStream_t.
void pack_cuda(const int8_t* codes, int64_t N, int64_t K, int bits, uint8_t* packed, int device,
               void* stream);
void unpack_cuda(const uint8_t* packed, int64_t N, int64_t K, int bits, int8_t* codes, int device,
                 void* stream);
#endif

}  // namespace sparsesnn
