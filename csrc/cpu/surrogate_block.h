// Surrogate derivatives of a block of membrane values, g[i] = sg'(h[i] - vth), for the CPU
// backward. The surrogate is most of the backward's arithmetic, so the default (sigmoid) has a
// hand-vectorized AVX-512 version; every other case is a loop the compiler vectorizes.
#pragma once
#include <cstdint>

#include "sparsesnn/surrogate.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace sparsesnn {

template <int SG>
inline void surrogate_block(const float* h, float vth, float alpha, float* g, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) g[i] = surrogate_grad_t<SG>(h[i] - vth, alpha);
}

#if defined(__AVX512F__)
// alpha * sigmoid'(alpha * x) = alpha * e / (1 + e)^2 with e = exp(-alpha |x|) in (0, 1]:
// 2^t for t <= 0 as 2^round(t) (vscalefps, which underflows cleanly to 0, so no clamping)
// times a degree-6 polynomial for 2^f, |f| <= 1/2 (relative error 1.6e-8, least squares on
// Chebyshev nodes), and 1 / (1 + e) from vrcp14ps plus one Newton step. About 20 vector
// instructions instead of the ~30 the compiler makes of the portable formula.
template <>
inline void surrogate_block<kSigmoid>(const float* h, float vth, float alpha, float* g,
                                      int64_t n) {
  const __m512 vth_v = _mm512_set1_ps(vth), k = _mm512_set1_ps(-alpha * 1.44269504088896341f);
  const __m512 alpha_v = _mm512_set1_ps(alpha), one = _mm512_set1_ps(1.0f);
  const __m512 two = _mm512_set1_ps(2.0f);
  const __m512 c6 = _mm512_set1_ps(1.5337577497e-4f), c5 = _mm512_set1_ps(1.3399859890e-3f);
  const __m512 c4 = _mm512_set1_ps(9.6185198054e-3f), c3 = _mm512_set1_ps(5.5503290147e-2f);
  const __m512 c2 = _mm512_set1_ps(2.4022646248e-1f), c1 = _mm512_set1_ps(6.9314718246e-1f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
    const __m512 x = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, h + i), vth_v);
    const __m512 t = _mm512_mul_ps(_mm512_abs_ps(x), k);  // log2(e) = -alpha |x| log2(e)
    const __m512 r = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 f = _mm512_sub_ps(t, r);
    __m512 p = _mm512_fmadd_ps(c6, f, c5);
    p = _mm512_fmadd_ps(p, f, c4);
    p = _mm512_fmadd_ps(p, f, c3);
    p = _mm512_fmadd_ps(p, f, c2);
    p = _mm512_fmadd_ps(p, f, c1);
    p = _mm512_fmadd_ps(p, f, one);
    const __m512 e = _mm512_scalef_ps(p, r);
    const __m512 d = _mm512_add_ps(one, e);
    __m512 inv = _mm512_rcp14_ps(d);
    inv = _mm512_mul_ps(inv, _mm512_fnmadd_ps(d, inv, two));
    const __m512 out = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(alpha_v, e), inv), inv);
    _mm512_mask_storeu_ps(g + i, m, out);
  }
}
#endif

}  // namespace sparsesnn
