// Non-temporal ("streaming") stores for outputs too large to stay in cache. A normal store
// first reads the line it writes (read-for-ownership), so writing a big output costs two
// memory transfers per byte; a streaming store costs one and does not evict useful data.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "sparsesnn/cache_info.h"

#if defined(__AVX512F__) || defined(__AVX__) || defined(__SSE2__)
#include <immintrin.h>
#define SPARSESNN_HAVE_STREAM 1
#endif

namespace sparsesnn {

// Outputs of at least this many bytes are streamed: half the last-level cache as the OS
// reports it (within 4-64 MiB), above which an output is evicted before the next op could
// read it from cache. A judgment, not a tuned value.
inline int64_t stream_min_bytes() {
  static const int64_t bytes =
      std::min<int64_t>(std::max<int64_t>(cache_sizes().l3 / 2, int64_t(4) << 20), int64_t(64) << 20);
  return bytes;
}

// dst[0:n] = src[0:n] with streaming stores where the ISA has them.
inline void stream_row(float* dst, const float* src, int64_t n) {
#if defined(SPARSESNN_HAVE_STREAM)
#if defined(__AVX512F__)
  constexpr int kLanes = 16;
#elif defined(__AVX__)
  constexpr int kLanes = 8;
#else
  constexpr int kLanes = 4;
#endif
  constexpr uintptr_t kAlign = kLanes * sizeof(float);
  while (n > 0 && reinterpret_cast<uintptr_t>(dst) % kAlign != 0) {
    *dst++ = *src++;
    --n;
  }
  for (; n >= kLanes; n -= kLanes, dst += kLanes, src += kLanes) {
#if defined(__AVX512F__)
    _mm512_stream_ps(dst, _mm512_loadu_ps(src));
#elif defined(__AVX__)
    _mm256_stream_ps(dst, _mm256_loadu_ps(src));
#else
    _mm_stream_ps(dst, _mm_loadu_ps(src));
#endif
  }
#endif
  std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
}

// Streaming stores are weakly ordered: call once a thread has finished its streamed writes,
// before other threads may read them.
inline void stream_fence() {
#if defined(SPARSESNN_HAVE_STREAM)
  _mm_sfence();
#endif
}

}  // namespace sparsesnn
