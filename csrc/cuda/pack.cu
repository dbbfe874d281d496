// pack / unpack on CUDA (layout: sparsesnn/pack.h). One thread per packed byte / per code.
#include <cuda_runtime.h>

#include "launch.cuh"
#include "sparsesnn/pack.h"

namespace sparsesnn {
namespace {

constexpr int kThreads = 256;

__global__ void pack_kernel(const int8_t* __restrict__ codes, int64_t N, int64_t K, int bits,
                            int64_t rb, uint8_t* __restrict__ packed) {
  const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;  // byte index in [K, rb]
  if (i >= K * rb) return;
  const int64_t k = i / rb, j = i % rb;
  const int per = 8 / bits, mul = bits == 1 ? 2 : 1, off = bits == 1 ? 1 : (1 << (bits - 1));
  unsigned byte = 0;
  for (int s = 0; s < per; ++s) {
    const int64_t n = j * per + s;
    if (n >= N) break;
    const unsigned u = static_cast<unsigned>((codes[n * K + k] + off) / mul);
    byte |= u << (s * bits);
  }
  packed[i] = static_cast<uint8_t>(byte);
}

__global__ void unpack_kernel(const uint8_t* __restrict__ packed, int64_t N, int64_t K, int bits,
                              int64_t rb, int8_t* __restrict__ codes) {
  const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;  // index in [N, K]
  if (i >= N * K) return;
  const int64_t n = i / K, k = i % K;
  const int per = 8 / bits, mul = bits == 1 ? 2 : 1, off = bits == 1 ? 1 : (1 << (bits - 1));
  const unsigned u = (packed[k * rb + n / per] >> ((n % per) * bits)) & ((1u << bits) - 1u);
  codes[i] = static_cast<int8_t>(static_cast<int>(u) * mul - off);
}

}  // namespace

void pack_cuda(const int8_t* codes, int64_t N, int64_t K, int bits, uint8_t* packed, int device,
               void* stream) {
  const int64_t rb = packed_row_bytes(N, bits), total = K * rb;
  if (total == 0) return;
  DeviceGuard guard(device, "pack");
  const auto s = static_cast<cudaStream_t>(stream);
  pack_kernel<<<(total + kThreads - 1) / kThreads, kThreads, 0, s>>>(codes, N, K, bits, rb, packed);
  check_launch("pack");
}

void unpack_cuda(const uint8_t* packed, int64_t N, int64_t K, int bits, int8_t* codes, int device,
                 void* stream) {
  const int64_t rb = packed_row_bytes(N, bits), total = N * K;
  if (total == 0) return;
  DeviceGuard guard(device, "unpack");
  const auto s = static_cast<cudaStream_t>(stream);
  unpack_kernel<<<(total + kThreads - 1) / kThreads, kThreads, 0, s>>>(packed, N, K, bits, rb, codes);
  check_launch("unpack");
}

}  // namespace sparsesnn
