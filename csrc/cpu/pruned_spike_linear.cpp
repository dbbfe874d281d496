// Event-driven linear over the pruned compressed-row layout (see pruned_linear.h): each active
// input walks only its surviving synapses and scatters into per-row accumulators (int32 codes
// for binary spikes, fp32 otherwise); scale applied once per output and group.
#include <algorithm>
#include <cstring>
#include <vector>

#include "packed_common.h"
#include "parallel.h"
#include "sparsesnn/pack.h"
#include "sparsesnn/pruned_linear.h"

namespace sparsesnn {
namespace {

using packed_detail::for_group_runs;
using packed_detail::group_len;
using packed_detail::list_nonzero;

template <int BITS>
inline int32_t code_at(const uint8_t* vals, int64_t j) {
  constexpr int P = 8 / BITS;
  constexpr unsigned M = (1u << BITS) - 1u;
  const unsigned u = (vals[j / P] >> ((j % P) * BITS)) & M;
  return static_cast<int32_t>(u) * (BITS == 1 ? 2 : 1) - (BITS == 1 ? 1 : (1 << (BITS - 1)));
}

template <int BITS, bool SPIKE, typename Idx>
void run(const PrunedLinearParams& p, const float* x, const int32_t* rp, const Idx* idx,
         const void* values, const float* scale, const float* bias, float* y) {
  const int64_t M = p.M, K = p.K, N = p.N;
  const int64_t glen = group_len(K, p.group_size);
  const int64_t G = (K + glen - 1) / glen;
  // Few rows: also split the outputs between threads. Indices are ascending within an input's
  // entries, so each thread finds its output range by binary search and owns its outputs.
  // Work bound: every row touching every stored synapse.
  const int nt = threads_for(M * int64_t(rp[K]), p.threads);
  const int64_t parts = M >= nt ? 1 : std::max<int64_t>(1, std::min<int64_t>(nt, N / 256));
  parallel_chunks(M * parts, 1, nt, [&](int64_t w0, int64_t w1) {
    std::vector<int32_t> act(static_cast<size_t>(K));
    std::vector<int32_t> iacc(static_cast<size_t>(N));
    std::vector<float> facc(static_cast<size_t>(N)), yf(static_cast<size_t>(N));
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t m = w / parts, part = w % parts;
      const int64_t n0 = N * part / parts, n1 = N * (part + 1) / parts;
      const float* xr = x + m * K;
      float* out = y + m * N;
      const int64_t na = list_nonzero(xr, K, act.data());
      // Entry range of input k restricted to outputs [n0, n1).
      auto range = [&](int32_t k, int64_t& j0, int64_t& j1) {
        j0 = rp[k];
        j1 = rp[k + 1];
        if (parts == 1) return;
        j0 = std::lower_bound(idx + j0, idx + j1, static_cast<Idx>(n0)) - idx;
        j1 = n1 >= N ? j1 : std::lower_bound(idx + j0, idx + j1, static_cast<Idx>(n1)) - idx;
      };
      if constexpr (BITS == 32) {
        const float* v = static_cast<const float*>(values);
        std::fill(facc.begin() + n0, facc.begin() + n1, 0.0f);
        for (int64_t i = 0; i < na; ++i) {
          const int32_t k = act[i];
          const float xv = xr[k];
          int64_t j0, j1;
          range(k, j0, j1);
          for (int64_t j = j0; j < j1; ++j) {
            if constexpr (SPIKE) facc[idx[j]] += v[j];
            else facc[idx[j]] += xv * v[j];
          }
        }
        for (int64_t n = n0; n < n1; ++n) out[n] = facc[n] + (bias ? bias[n] : 0.0f);
      } else {
        const auto* v = static_cast<const uint8_t*>(values);
        std::fill(yf.begin() + n0, yf.begin() + n1, 0.0f);
        for_group_runs(act.data(), na, glen, [&](int64_t b, int64_t e, int64_t g) {
          if constexpr (SPIKE) {
            std::fill(iacc.begin() + n0, iacc.begin() + n1, 0);
            for (int64_t i = b; i < e; ++i) {
              int64_t j0, j1;
              range(act[i], j0, j1);
              for (int64_t j = j0; j < j1; ++j) iacc[idx[j]] += code_at<BITS>(v, j);
            }
            for (int64_t n = n0; n < n1; ++n) yf[n] += scale[n * G + g] * static_cast<float>(iacc[n]);
          } else {
            std::fill(facc.begin() + n0, facc.begin() + n1, 0.0f);
            for (int64_t i = b; i < e; ++i) {
              const float xv = xr[act[i]];
              int64_t j0, j1;
              range(act[i], j0, j1);
              for (int64_t j = j0; j < j1; ++j) facc[idx[j]] += xv * static_cast<float>(code_at<BITS>(v, j));
            }
            for (int64_t n = n0; n < n1; ++n) yf[n] += scale[n * G + g] * facc[n];
          }
        });
        for (int64_t n = n0; n < n1; ++n) out[n] = yf[n] + (bias ? bias[n] : 0.0f);
      }
    }
  });
}

template <bool SPIKE, typename Idx>
void dispatch_bits(const PrunedLinearParams& p, const float* x, const int32_t* rp, const Idx* idx,
                   const void* values, const float* scale, const float* bias, float* y) {
  switch (p.bits) {
    case 8: run<8, SPIKE>(p, x, rp, idx, values, scale, bias, y); break;
    case 4: run<4, SPIKE>(p, x, rp, idx, values, scale, bias, y); break;
    case 2: run<2, SPIKE>(p, x, rp, idx, values, scale, bias, y); break;
    case 1: run<1, SPIKE>(p, x, rp, idx, values, scale, bias, y); break;
    default: run<32, SPIKE>(p, x, rp, idx, values, scale, bias, y); break;
  }
}

}  // namespace

void pruned_linear_cpu(const PrunedLinearParams& p, bool spike, const float* x,
                       const int32_t* row_ptr, const void* index, const void* values,
                       const float* scale, const float* bias, float* y) {
  if (p.M == 0 || p.N == 0) return;
  if (p.index16) {
    const auto* idx = static_cast<const uint16_t*>(index);
    if (spike) dispatch_bits<true>(p, x, row_ptr, idx, values, scale, bias, y);
    else dispatch_bits<false>(p, x, row_ptr, idx, values, scale, bias, y);
  } else {
    const auto* idx = static_cast<const int32_t*>(index);
    if (spike) dispatch_bits<true>(p, x, row_ptr, idx, values, scale, bias, y);
    else dispatch_bits<false>(p, x, row_ptr, idx, values, scale, bias, y);
  }
}

}  // namespace sparsesnn
