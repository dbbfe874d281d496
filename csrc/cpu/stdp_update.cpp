// Event-driven pair STDP update on the CPU (see stdp_update.h). Built with -ffp-contract=off so
// `w - eta * x` rounds exactly as the PyTorch reference does (no fused multiply-add).
#include "sparsesnn/stdp_update.h"

#include <algorithm>
#include <vector>

#include "sparsesnn/fixed_point.h"

namespace sparsesnn {

namespace {

inline float settle(float w, const StdpParams& p, uint64_t index) {
  if (p.step > 0.f) {
    const float u = p.rounding == kStochastic ? hash_uniform(p.seed, index) : 0.f;
    return round_to_grid(w, p.step, p.w_min, p.w_max, p.rounding, u);
  }
  return std::fmin(std::fmax(w, p.w_min), p.w_max);
}

std::vector<int64_t> active(const float* s, int64_t n) {
  std::vector<int64_t> idx;
  for (int64_t i = 0; i < n; ++i)
    if (s[i] != 0.f) idx.push_back(i);
  return idx;
}

}  // namespace

int64_t stdp_update_cpu(const StdpParams& p, float* w, const float* pre, const float* post,
                        const float* x_pre, const float* x_post) {
  const int64_t K = p.K, N = p.N;
  const std::vector<int64_t> rows = active(pre, K), cols = active(post, N);
  const int64_t n_rows = static_cast<int64_t>(rows.size()), n_cols = static_cast<int64_t>(cols.size());
  // Threads only pay off for large layers; tiny updates run inline.
  const bool par1 = p.threads > 1 && n_rows * N >= (1 << 15);
  const bool par2 = p.threads > 1 && K * n_cols >= (1 << 15);
  (void)par1;  // unused without OpenMP
  (void)par2;
#if defined(SPARSESNN_OPENMP)
#pragma omp parallel for num_threads(p.threads) schedule(static) if (par1)
#endif
  for (int64_t r = 0; r < n_rows; ++r) {
    const int64_t i = rows[r];
    float* wi = w + i * N;
    for (int64_t j = 0; j < N; ++j) {
      const float d = p.eta_pre * x_post[j];
      wi[j] = settle(wi[j] - d, p, static_cast<uint64_t>(i * N + j));
    }
  }
  if (n_cols > 0) {
    const uint64_t base = static_cast<uint64_t>(K * N);
#if defined(SPARSESNN_OPENMP)
#pragma omp parallel for num_threads(p.threads) schedule(static) if (par2)
#endif
    for (int64_t i = 0; i < K; ++i) {
      float* wi = w + i * N;
      const float d = p.eta_post * x_pre[i];
      for (int64_t c = 0; c < n_cols; ++c) {
        const int64_t j = cols[c];
        wi[j] = settle(wi[j] + d, p, base + static_cast<uint64_t>(i * N + j));
      }
    }
  }
  return n_rows * N + K * n_cols;
}

}  // namespace sparsesnn
