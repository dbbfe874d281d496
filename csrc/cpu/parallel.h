// Splits [0, n) into chunks processed by at most `threads` OpenMP threads.
#pragma once
#include <algorithm>
#include <cstdint>

namespace sparsesnn {

// Threads worth using for `work` elementary operations (float adds / spikes scanned): a
// parallel region costs a fork/join, and on a loaded machine waiting for a descheduled worker
// can cost far more than the whole job, so small jobs stay on the calling thread.
inline int threads_for(int64_t work, int threads) {
  constexpr int64_t kMinWorkPerThread = int64_t(1) << 19;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, work / kMinWorkPerThread)));
}


template <typename F>
inline void parallel_chunks(int64_t n, int64_t chunk, int threads, F&& body) {
  const int64_t nchunks = (n + chunk - 1) / chunk;
  const int nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, nchunks)));
  if (nt == 1) {  // no parallel region at all: even an if(false) one costs a team start (~1 us)
    for (int64_t begin = 0; begin < n; begin += chunk) body(begin, std::min(n, begin + chunk));
    return;
  }
#if defined(SPARSESNN_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
#endif
  for (int64_t c = 0; c < nchunks; ++c) {
    const int64_t begin = c * chunk;
    body(begin, std::min(n, begin + chunk));
  }
  (void)nt;
}

}  // namespace sparsesnn
