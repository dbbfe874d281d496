// A whole presentation with learning in one call (see stdp_present.h). Built with
// -ffp-contract=off: the Python reference must see the same rounding step by step.
#include "sparsesnn/stdp_present.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "sparsesnn/fixed_point.h"

namespace sparsesnn {

StdpPresentStats stdp_present_cpu(const StdpPresentParams& p, float* w, float* theta,
                                  const float* s_in, float* counts) {
  const int64_t K = p.stdp.K, N = p.stdp.N;
  StdpPresentStats st;
  std::vector<float> v(N, p.v_reset), drive(N), s(N), x_pre(K, 0.f), x_post(N, 0.f);
  std::fill(counts, counts + N, 0.f);
  StdpParams sp = p.stdp;
  sp.threads = 1;  // one sample, small layer: the update runs inline
  for (int64_t t = 0; t < p.T; ++t) {
    const float* pre = s_in + t * K;
    std::fill(drive.begin(), drive.end(), 0.f);
    int64_t n_in = 0;
    for (int64_t k = 0; k < K; ++k) {
      if (pre[k] == 0.f) continue;
      ++n_in;
      const float* wk = w + k * N;
      for (int64_t j = 0; j < N; ++j) drive[j] += wk[j];
    }
    int64_t n_spk = 0;
    for (int64_t j = 0; j < N; ++j) {
      const float h = p.v_reset + (v[j] - p.v_reset) * p.decay_v;
      v[j] = n_in ? h + drive[j] : h;
      s[j] = v[j] >= p.v_th + theta[j] ? 1.f : 0.f;
      n_spk += s[j] != 0.f;
      x_post[j] = std::fmax(x_post[j] * p.decay_post, s[j]);
    }
    for (int64_t k = 0; k < K; ++k) x_pre[k] = std::fmax(x_pre[k] * p.decay_pre, pre[k]);
    if (n_spk) {
      const float n_f = static_cast<float>(n_spk);
      for (int64_t j = 0; j < N; ++j) {
        counts[j] += s[j];
        const float vr = s[j] != 0.f ? p.v_reset : v[j];
        v[j] = std::fmax(vr - p.w_inh * (n_f - s[j]), p.v_min);
        float th = theta[j] + p.theta_plus * s[j];
        if (p.theta_step > 0.f) {
          const float u = p.theta_rounding == kStochastic
                              ? hash_uniform(p.theta_seed, static_cast<uint64_t>(p.theta_offset + t + j))
                              : 0.f;
          th = std::fmax(round_to_grid(th, p.theta_step, p.theta_lo, p.theta_hi, p.theta_rounding, u), 0.f);
        }
        theta[j] = th;
      }
    }
    if (n_in || n_spk) {
      sp.seed = p.stdp.seed + static_cast<uint32_t>(t);
      st.stdp_updates += stdp_update_cpu(sp, w, pre, s.data(), x_pre.data(), x_post.data());
    }
    st.input_spikes += n_in;
    st.output_spikes += n_spk;
  }
  return st;
}

}  // namespace sparsesnn
