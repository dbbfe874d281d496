// Building blocks of the event-driven CPU kernels (spike_linear, spike_conv2d):
//  * list_active:  indices of the non-zero entries of a spike vector (fp32 or uint8/bool),
//  * RowAcc<R>:    an output tile of R*16 floats held in registers, to which whole weight
//                  rows (one per active input) are added.
// The hot loop of every event-driven kernel is "for each active input: acc += row", so the
// output tile never leaves registers and the only memory traffic is one contiguous weight
// row segment per event.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "parallel.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif
#include "compress_avx2.h"

namespace sparsesnn {
namespace event {

// Runs body(item) for item in [0, n) on up to `threads` OpenMP threads, dynamically scheduled:
// event counts (and so item costs) vary with where the spikes fall, and on a shared machine a
// thread may lose its core for a while; dynamic hand-out keeps the other thread busy.
template <typename F>
inline void parallel_items(int64_t n, int threads, F&& body) {
  const int nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, n)));
#if defined(SPARSESNN_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (nt > 1)
#endif
  for (int64_t i = 0; i < n; ++i) body(i);
  (void)nt;
}

using sparsesnn::threads_for;  // defined in parallel.h

// Floats per output tile: 8 vector accumulators (AVX-512: 128 floats, 512 B of each weight row
// per event) keep the per-event work long enough to hide the row fetch while leaving registers
// free. AVX2 has 16 ymm registers, so its tile is 8 ymm (64 floats).
#if defined(__AVX512F__)
constexpr int kTileRegs = 8;
#else
constexpr int kTileRegs = 4;
#endif
constexpr int kTile = kTileRegs * 16;
// list_active writes up to this many entries past the returned count (vector stores).
constexpr int kListSlack = 64;

// Indices k (offset by `base`) with v[k] != 0, written to idx; returns the count.
inline int list_active_f32(const float* v, int64_t n, int32_t base, int32_t* idx) {
  int count = 0;
  int64_t k = 0;
#if defined(__AVX512F__)
  const __m512 zero = _mm512_setzero_ps();
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (; k + 16 <= n; k += 16) {
    const __mmask16 m = _mm512_cmp_ps_mask(_mm512_loadu_ps(v + k), zero, _CMP_NEQ_UQ);
    if (m) {
      // Register-form compress + full store: the memory form is microcoded on some CPUs.
      const __m512i ids = _mm512_add_epi32(iota, _mm512_set1_epi32(base + static_cast<int32_t>(k)));
      _mm512_storeu_si512(idx + count, _mm512_maskz_compress_epi32(m, ids));
      count += __builtin_popcount(m);
    }
  }
#elif defined(__AVX2__)
  int64_t c = 0;
  k = avx2::list_nonzero_blocks(v, n, base, idx, c);
  count = static_cast<int>(c);
#endif
  for (; k < n; ++k)
    if (v[k] != 0.0f) idx[count++] = base + static_cast<int32_t>(k);
  return count;
}

inline int list_active_u8(const uint8_t* v, int64_t n, int32_t base, int32_t* idx) {
  int count = 0;
  int64_t k = 0;
#if defined(__AVX512BW__)
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (; k + 64 <= n; k += 64) {
    const __m512i bytes = _mm512_loadu_si512(v + k);
    uint64_t m = _mm512_test_epi8_mask(bytes, bytes);
    for (int part = 0; m != 0 && part < 4; ++part, m >>= 16) {
      const __mmask16 mm = static_cast<__mmask16>(m & 0xffffu);
      if (!mm) continue;
      const __m512i ids =
          _mm512_add_epi32(iota, _mm512_set1_epi32(base + static_cast<int32_t>(k + 16 * part)));
      _mm512_storeu_si512(idx + count, _mm512_maskz_compress_epi32(mm, ids));
      count += __builtin_popcount(mm);
    }
  }
#elif defined(__AVX2__)
  int64_t c = 0;
  k = avx2::list_nonzero_blocks(v, n, base, idx, c);
  count = static_cast<int>(c);
#endif
  for (; k < n; ++k)
    if (v[k] != 0) idx[count++] = base + static_cast<int32_t>(k);
  return count;
}

// Spike element types the CPU kernels read (bool is stored as one byte 0/1, like uint8).
enum SpikeType : int { kSpikeF32 = 0, kSpikeU8 = 1 };

inline int list_active(const void* v, int type, int64_t offset, int64_t n, int32_t base,
                       int32_t* idx) {
  if (type == kSpikeF32) return list_active_f32(static_cast<const float*>(v) + offset, n, base, idx);
  return list_active_u8(static_cast<const uint8_t*>(v) + offset, n, base, idx);
}

// An output tile of up to R*16 floats accumulated in registers. `width` <= R*16 columns are
// live; the last register is masked (unless the tile is known full) so tails need no scalar
// loop.
template <int R, bool Masked = true>
struct RowAcc {
#if defined(__AVX512F__)
  __m512 a[R];
  __mmask16 last;
  explicit RowAcc(int width) {
    const int rem = width - (R - 1) * 16;
    last = rem >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << rem) - 1u);
  }
  inline void set(const float* init) {
    if (init) {
      for (int r = 0; r < R - 1; ++r) a[r] = _mm512_loadu_ps(init + 16 * r);
      a[R - 1] = _mm512_maskz_loadu_ps(last, init + 16 * (R - 1));
    } else {
      for (int r = 0; r < R; ++r) a[r] = _mm512_setzero_ps();
    }
  }
  inline void add(const float* row) {
    for (int r = 0; r < R - 1; ++r) a[r] = _mm512_add_ps(a[r], _mm512_loadu_ps(row + 16 * r));
    a[R - 1] = _mm512_add_ps(a[R - 1], _mm512_maskz_loadu_ps(last, row + 16 * (R - 1)));
  }
  inline void store(float* out) const {
    for (int r = 0; r < R - 1; ++r) _mm512_storeu_ps(out + 16 * r, a[r]);
    _mm512_mask_storeu_ps(out + 16 * (R - 1), last, a[R - 1]);
  }
#elif defined(__AVX2__)
  // 2R ymm accumulators. A masked tile's last two are masked (its live width is
  // (R-1)*16 + 1..16); a full one uses plain loads and stores (masked stores are slow on AMD).
  __m256 a[2 * R];
  __m256i lo, hi;
  explicit RowAcc(int width) {
    const int rem = width - (R - 1) * 16;
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    lo = _mm256_cmpgt_epi32(_mm256_set1_epi32(rem), iota);
    hi = _mm256_cmpgt_epi32(_mm256_set1_epi32(rem - 8), iota);
  }
  static constexpr int kPlain = Masked ? 2 * R - 2 : 2 * R;  // registers without a mask
  inline void set(const float* init) {
    if (init) {
      for (int r = 0; r < kPlain; ++r) a[r] = _mm256_loadu_ps(init + 8 * r);
      if constexpr (Masked) {
        a[2 * R - 2] = _mm256_maskload_ps(init + 16 * (R - 1), lo);
        a[2 * R - 1] = _mm256_maskload_ps(init + 16 * (R - 1) + 8, hi);
      }
    } else {
      for (int r = 0; r < 2 * R; ++r) a[r] = _mm256_setzero_ps();
    }
  }
  inline void add(const float* row) {
    for (int r = 0; r < kPlain; ++r) a[r] = _mm256_add_ps(a[r], _mm256_loadu_ps(row + 8 * r));
    if constexpr (Masked) {
      a[2 * R - 2] = _mm256_add_ps(a[2 * R - 2], _mm256_maskload_ps(row + 16 * (R - 1), lo));
      a[2 * R - 1] = _mm256_add_ps(a[2 * R - 1], _mm256_maskload_ps(row + 16 * (R - 1) + 8, hi));
    }
  }
  inline void store(float* out) const {
    for (int r = 0; r < kPlain; ++r) _mm256_storeu_ps(out + 8 * r, a[r]);
    if constexpr (Masked) {
      _mm256_maskstore_ps(out + 16 * (R - 1), lo, a[2 * R - 2]);
      _mm256_maskstore_ps(out + 16 * (R - 1) + 8, hi, a[2 * R - 1]);
    }
  }
#else
  float a[R * 16];
  int width;
  explicit RowAcc(int w) : width(w) {}
  inline void set(const float* init) {
    for (int j = 0; j < width; ++j) a[j] = init ? init[j] : 0.0f;
  }
  inline void add(const float* row) {
#pragma omp simd
    for (int j = 0; j < width; ++j) a[j] += row[j];
  }
  inline void store(float* out) const { std::memcpy(out, a, sizeof(float) * width); }
#endif
};

// acc += sum_i src[idx[i] * ld], prefetching a few events ahead (the rows are scattered).
template <int R, bool Masked>
inline void add_rows(RowAcc<R, Masked>& acc, const float* src, int64_t ld, const int32_t* idx, int n) {
  constexpr int kAhead = 6;
  int i = 0;
  for (; i + kAhead < n; ++i) {
    const float* next = src + static_cast<int64_t>(idx[i + kAhead]) * ld;
    for (int r = 0; r < R; r += 4) __builtin_prefetch(next + 16 * r);
    acc.add(src + static_cast<int64_t>(idx[i]) * ld);
  }
  for (; i < n; ++i) acc.add(src + static_cast<int64_t>(idx[i]) * ld);
}

// dst[i] = src[i] + offset for i < n; returns n. Copies 16 entries per step (it may read up
// to 15 entries past src[n) and write as many past dst[n), both inside the callers' slack),
// so a list of up to 16 events costs no data-dependent branch.
inline int append_offset(int32_t* dst, const int32_t* src, int n, int32_t offset) {
#if defined(__AVX512F__)
  const __m512i off = _mm512_set1_epi32(offset);
  for (int j = 0; j < n; j += 16)
    _mm512_storeu_si512(dst + j, _mm512_add_epi32(_mm512_loadu_si512(src + j), off));
#else
  for (int j = 0; j < n; ++j) dst[j] = src[j] + offset;
#endif
  return n;
}

// The register shape of a tile: R (16-float) registers, the last one masked or not.
template <int R, bool M>
struct Regs {
  static constexpr int regs = R;
  static constexpr bool masked = M;
};
template <class S>
using AccFor = RowAcc<S::regs, S::masked>;

// Calls f(Regs<R, masked>{}) with R = registers needed for `width` columns; a full tile
// (width == kTile) gets the unmasked shape.
template <typename F>
inline void with_regs(int width, F&& f) {
  if (width == kTile) return f(Regs<kTileRegs, false>{});
  switch ((width + 15) / 16) {
    case 1: f(Regs<1, true>{}); break;
    case 2: f(Regs<2, true>{}); break;
    case 3: f(Regs<3, true>{}); break;
    case 4: f(Regs<4, true>{}); break;
    case 5: f(Regs<5, true>{}); break;
    case 6: f(Regs<6, true>{}); break;
    case 7: f(Regs<7, true>{}); break;
    default: f(Regs<8, true>{}); break;
  }
}

}  // namespace event
}  // namespace sparsesnn
