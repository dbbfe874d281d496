// Surrogate derivatives of a block of membrane values, g[i] = sg'(h[i] - vth), for the CPU
// backward. The surrogate is most of the backward's arithmetic, so the default (sigmoid) has
// hand-vectorized AVX-512 and AVX2 versions; every other case is a loop the compiler vectorizes.
#pragma once
#include <cstdint>

#include "sparsesnn/surrogate.h"

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

namespace sparsesnn {

template <int SG>
inline void surrogate_block(const float* h, float vth, float alpha, float* g, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) g[i] = surrogate_grad_t<SG>(h[i] - vth, alpha);
}

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
// 2^f for |f| <= 1/2: 1 + f * (c1 + f * (c2 + ... + f * c6)), coefficients c1..c6 (relative
// error 1.6e-8, least squares on Chebyshev nodes); shared by both vector forms below.
constexpr float kExp2Poly[6] = {6.9314718246e-1f, 2.4022646248e-1f, 5.5503290147e-2f,
                                9.6185198054e-3f, 1.3399859890e-3f, 1.5337577497e-4f};
constexpr float kLog2E = 1.44269504088896341f;
#endif

#if defined(__AVX512F__)
// alpha * sigmoid'(alpha * x) = alpha * e / (1 + e)^2 with e = exp(-alpha |x|) in (0, 1]:
// 2^t for t <= 0 as 2^round(t) (vscalefps, which underflows cleanly to 0, so no clamping)
// times kExp2Poly for 2^f, and 1 / (1 + e) from vrcp14ps plus one Newton step. About 20 vector
// instructions instead of the ~30 the compiler makes of the portable formula.
template <>
inline void surrogate_block<kSigmoid>(const float* h, float vth, float alpha, float* g,
                                      int64_t n) {
  const __m512 vth_v = _mm512_set1_ps(vth), k = _mm512_set1_ps(-alpha * kLog2E);
  const __m512 alpha_v = _mm512_set1_ps(alpha), one = _mm512_set1_ps(1.0f);
  const __m512 two = _mm512_set1_ps(2.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
    const __m512 x = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, h + i), vth_v);
    const __m512 t = _mm512_mul_ps(_mm512_abs_ps(x), k);  // log2(e) = -alpha |x| log2(e)
    const __m512 r = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 f = _mm512_sub_ps(t, r);
    __m512 p = _mm512_set1_ps(kExp2Poly[5]);
    for (int j = 4; j >= 0; --j) p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp2Poly[j]));
    p = _mm512_fmadd_ps(p, f, one);
    const __m512 e = _mm512_scalef_ps(p, r);
    const __m512 d = _mm512_add_ps(one, e);
    __m512 inv = _mm512_rcp14_ps(d);
    inv = _mm512_mul_ps(inv, _mm512_fnmadd_ps(d, inv, two));
    const __m512 out = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(alpha_v, e), inv), inv);
    _mm512_mask_storeu_ps(g + i, m, out);
  }
}
#elif defined(__AVX2__) && defined(__FMA__)
// The same method in 8 lanes. AVX2 has no vscalefps, so 2^round(t) is built in the exponent
// field, with t clamped at -126 to stay normal (the derivative there is ~1e-38 either way);
// 1 / (1 + e) is vrcpps (12 bits) plus one Newton step instead of a vdivps, which on AVX2
// cores takes several times the throughput of everything else in the loop.
inline __m256 sigmoid_grad8(__m256 h, __m256 vth, __m256 k, __m256 alpha) {
  const __m256 one = _mm256_set1_ps(1.0f), two = _mm256_set1_ps(2.0f);
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const __m256 x = _mm256_and_ps(_mm256_sub_ps(h, vth), abs_mask);
  // max(-126, t) returns its second operand for a NaN, so a NaN membrane stays NaN.
  const __m256 t = _mm256_max_ps(_mm256_set1_ps(-126.0f), _mm256_mul_ps(x, k));
  const __m256 r = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 f = _mm256_sub_ps(t, r);
  __m256 p = _mm256_set1_ps(kExp2Poly[5]);
  for (int j = 4; j >= 0; --j) p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(kExp2Poly[j]));
  p = _mm256_fmadd_ps(p, f, one);
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(r), _mm256_set1_epi32(127)), 23);
  const __m256 e = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
  const __m256 d = _mm256_add_ps(one, e);
  __m256 inv = _mm256_rcp_ps(d);
  inv = _mm256_mul_ps(inv, _mm256_fnmadd_ps(d, inv, two));
  return _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(alpha, e), inv), inv);
}

template <>
inline void surrogate_block<kSigmoid>(const float* h, float vth, float alpha, float* g,
                                      int64_t n) {
  const __m256 vth_v = _mm256_set1_ps(vth), k = _mm256_set1_ps(-alpha * kLog2E);
  const __m256 alpha_v = _mm256_set1_ps(alpha);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(g + i, sigmoid_grad8(_mm256_loadu_ps(h + i), vth_v, k, alpha_v));
  if (i < n) {
    const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n - i)),
                                         _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    _mm256_maskstore_ps(g + i, m, sigmoid_grad8(_mm256_maskload_ps(h + i, m), vth_v, k, alpha_v));
  }
}
#endif

}  // namespace sparsesnn
