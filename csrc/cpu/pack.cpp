// pack / unpack of signed codes into the input-major bit layout documented in pack.h.
#include "sparsesnn/pack.h"

#include <cstring>

#include "parallel.h"

namespace sparsesnn {

void pack_cpu(const int8_t* codes, int64_t N, int64_t K, int bits, uint8_t* packed, int threads) {
  const int64_t rb = packed_row_bytes(N, bits);
  const int mul = code_mul(bits), off = code_off(bits);
  const int per = 8 / bits;
  // One packed row (input k) gathers column k of codes; tiles of inputs keep reads cached.
  parallel_chunks(K, 64, threads, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      uint8_t* row = packed + k * rb;
      if (bits == 8) {
        for (int64_t n = 0; n < N; ++n) row[n] = static_cast<uint8_t>(codes[n * K + k] + off);
        continue;
      }
      std::memset(row, 0, static_cast<size_t>(rb));
      for (int64_t n = 0; n < N; ++n) {
        const unsigned u = static_cast<unsigned>((codes[n * K + k] + off) / mul);
        row[n / per] |= static_cast<uint8_t>(u << ((n % per) * bits));
      }
    }
  });
}

void unpack_cpu(const uint8_t* packed, int64_t N, int64_t K, int bits, int8_t* codes, int threads) {
  const int64_t rb = packed_row_bytes(N, bits);
  const int mul = code_mul(bits), off = code_off(bits);
  const int per = 8 / bits;
  const unsigned mask = (1u << bits) - 1u;
  parallel_chunks(N, 64, threads, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      const int64_t byte = n / per;
      const int shift = static_cast<int>((n % per) * bits);
      for (int64_t k = 0; k < K; ++k) {
        const unsigned u = (packed[k * rb + byte] >> shift) & mask;
        codes[n * K + k] = static_cast<int8_t>(static_cast<int>(u) * mul - off);
      }
    }
  });
}

void pack_stream_cpu(const int8_t* codes, int64_t nnz, int bits, uint8_t* out) {
  const int mul = code_mul(bits), off = code_off(bits);
  const int per = 8 / bits;
  std::memset(out, 0, static_cast<size_t>(packed_row_bytes(nnz, bits)));
  for (int64_t j = 0; j < nnz; ++j) {
    const unsigned u = static_cast<unsigned>((codes[j] + off) / mul);
    out[j / per] |= static_cast<uint8_t>(u << ((j % per) * bits));
  }
}

}  // namespace sparsesnn
