// Non-temporal ("streaming") stores for outputs too large to stay in cache. A normal store
// first reads the line it writes (read-for-ownership), so writing a big output costs two
// memory transfers per byte; a streaming store costs one and does not evict useful data.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <thread>

#if defined(__linux__)
#include <sched.h>
#endif

#include "sparsesnn/cache_info.h"

#if defined(__AVX512F__) || defined(__AVX__) || defined(__SSE2__)
#include <immintrin.h>
#define SPARSESNN_HAVE_STREAM 1
#endif

namespace sparsesnn {

// CPUs this process may run on (its affinity mask on Linux).
inline int64_t usable_cpus() {
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
#endif
  return std::max(1u, std::thread::hardware_concurrency());
}

// Outputs of at least this many bytes are streamed. An output is still cached when the next
// op reads it only if it fits in the share of the caches this process can count on. The
// last-level cache is shared with every other core of the socket -- on a VM or a busy server,
// with other tenants -- so its reported size (260 MiB on a 2-core Xeon VM) overstates that
// share badly: there, a 32 MiB LIF output written with normal stores made the forward 2-4x
// slower than streaming it. The share is taken as this process's CPUs x (L2 + 2 MiB, the L3
// slice per core of current server parts), at most half the reported L3, within 4-64 MiB.
inline int64_t stream_min_bytes() {
  static const int64_t bytes = [] {
    const CacheSizes& cs = cache_sizes();
    const int64_t share = std::min(cs.l3 / 2, usable_cpus() * (cs.l2 + (int64_t(2) << 20)));
    return std::clamp<int64_t>(share, int64_t(4) << 20, int64_t(64) << 20);
  }();
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
