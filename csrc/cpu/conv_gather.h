// Event-driven conv2d of binary spikes over low-bit codes in the "chunked" kernel layout,
// shared by the packed (every tap row stored) and pruned (zero tap rows dropped) kernels.
//
// Chunked layout (built once per weight, sparsesnn/ops/packed_conv2d.py): kernel row r (tap
// row (c, ky, kx), or a kept row of the pruned layout) holds nch chunks of 64 bytes; byte j
// of chunk q carries, in its slot s (bits [s*bits, s*bits + bits)), the unsigned code u of
// output q * 64P + s * 64 + j, P = 8 / bits (pack.h encoding, zero for padding outputs).
// So slot s of a 64-byte load is 64 consecutive outputs: no de-interleaving anywhere.
//
// Per image: the active channels of every input pixel are listed once (CSR by pixel, ascending
// channel; for the pruned layout the kept rows per (pixel, tap), so dropped taps cost
// nothing past the listing). Per output pixel: the lists of its receptive-field taps are concatenated into one
// list of kernel rows; per output tile (up to 2 chunks in registers) each listed row is
// unpacked with a shift and a mask per slot and summed into uint8 lanes (no multiplies),
// widened to uint16 before they could overflow; the scale is applied once per output from the
// registers: y = scale * (mul * sum u - off * events) + bias. 16 output pixels are staged
// channels-last and written to NCHW through 16 x 16 register transposes.
// Cache use is decided at run time (cache_sizes()): output channels are split into groups
// whose kernel rows fit in half of L2, so the rows every output pixel walks stay cached.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "conv_gather_avx2.h"
#include "event_accum.h"
#include "parallel.h"
#include "sparsesnn/cache_info.h"
#include "sparsesnn/pack.h"
#include "sparsesnn/packed_conv2d.h"

namespace sparsesnn {
namespace conv_gather {

constexpr int kChunk = 64;   // bytes per chunk (one zmm load)
constexpr int kSlack = 64;   // int32 entries the vector list copies may touch past an end
constexpr int kAhead = 8;    // events prefetched ahead
constexpr int kChanAhead = 2;  // input channel bands prefetched ahead of the listing scan
constexpr int64_t kPixBlock = 16;  // output pixels per channels-last staging block

inline int64_t chunk_outputs(int bits) { return kChunk * 8 / bits; }
inline int64_t num_chunks(int64_t O, int bits) {
  return (O + chunk_outputs(bits) - 1) / chunk_outputs(bits);
}

// Uninitialised scratch that grows but is never shrunk or zeroed (page faults only on first
// touch), kept per thread across calls.
template <typename T = int32_t>
struct Scratch {
  std::unique_ptr<T[]> data;
  int64_t size = 0;
  T* get(int64_t n) {
    if (n > size) {
      data.reset(new T[static_cast<size_t>(n)]);
      size = n;
    }
    return data.get();
  }
};

// Prefetch n floats from v into L1: a channel plane's band, kChanAhead channels before the
// listing scans it. Each band is a short run (often on a new page) that the hardware
// prefetcher would lock onto too late, paying full memory latency on its first lines.
inline void prefetch_floats(const float* v, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) __builtin_prefetch(v + i, 0, 3);
}

// Indices k (offset by `base`) with v[k] != 0, written to idx (up to 16 entries past the
// returned count are written); returns the count. Sets `analog` if a nonzero value is not 1
// (the input is not binary spikes; NaN included). Branch-free per 16 inputs: at the spike
// densities of conv layers a "skip empty vector" branch is taken about half the time, and
// its mispredictions cost more than the compress and store it saves.
inline int list_active_rows(const float* v, int64_t n, int32_t base, int32_t* idx, bool& analog) {
  int count = 0;
  int64_t k = 0;
#if defined(__AVX512F__)
  const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f);
  const __m512i step = _mm512_set1_epi32(16);
  __m512i ids = _mm512_add_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                 _mm512_set1_epi32(base));
  __mmask16 bad = 0;
  for (; k + 16 <= n; k += 16) {
    const __m512 x = _mm512_loadu_ps(v + k);
    const __mmask16 m = _mm512_cmp_ps_mask(x, zero, _CMP_NEQ_UQ);
    bad |= _mm512_mask_cmp_ps_mask(m, x, one, _CMP_NEQ_UQ);
    _mm512_storeu_si512(idx + count, _mm512_maskz_compress_epi32(m, ids));
    count += __builtin_popcount(m);
    ids = _mm512_add_epi32(ids, step);
  }
  if (k < n) {
    const __mmask16 tail = static_cast<__mmask16>((1u << (n - k)) - 1u);
    const __m512 x = _mm512_maskz_loadu_ps(tail, v + k);
    const __mmask16 m = _mm512_mask_cmp_ps_mask(tail, x, zero, _CMP_NEQ_UQ);
    bad |= _mm512_mask_cmp_ps_mask(m, x, one, _CMP_NEQ_UQ);
    _mm512_storeu_si512(idx + count, _mm512_maskz_compress_epi32(m, ids));
    count += __builtin_popcount(m);
  }
  if (bad) analog = true;
#else
#if defined(__AVX2__)
  k = avx2::list_active_blocks(v, n, base, idx, count, analog);  // whole blocks of 8
#endif
  for (; k < n; ++k)
    if (v[k] != 0.0f) {
      if (v[k] != 1.0f) analog = true;
      idx[count++] = base + static_cast<int32_t>(k);
    }
#endif
  return count;
}

// Active channels of the input pixels of one image in a band of input rows: entries
// row[ptr[q], ptr[q+1]) are c * KKs for the active channels c of band pixel q (ascending).
// xb points at the band's first pixel of channel 0; planes are `plane` floats apart and the
// band holds `npix` pixels. Returns the event count.
// With `vals`, vals[i] is the input value of entry i (the analog kernel's weights).
inline int64_t list_pixels(const float* xb, int64_t C, int64_t plane, int64_t npix, int64_t KKs,
                           Scratch<>& tmp, std::vector<int32_t>& ptr, Scratch<>& rows, bool& analog,
                           Scratch<float>* vals = nullptr) {
  // Pass 1: per channel plane, the active pixels (vector compress), counted per pixel.
  int32_t* pix = tmp.get(C * npix + kSlack + C + 1);
  int32_t* coff = pix + C * npix + kSlack;
  ptr.assign(static_cast<size_t>(npix + 1), 0);
  int64_t n = 0;
  for (int64_t c = 0; c < std::min<int64_t>(kChanAhead, C); ++c) prefetch_floats(xb + c * plane, npix);
  for (int64_t c = 0; c < C; ++c) {
    coff[c] = static_cast<int32_t>(n);
    if (c + kChanAhead < C) prefetch_floats(xb + (c + kChanAhead) * plane, npix);
    const int k = list_active_rows(xb + c * plane, npix, 0, pix + n, analog);
    for (int i = 0; i < k; ++i) ++ptr[pix[n + i] + 1];
    n += k;
  }
  coff[C] = static_cast<int32_t>(n);
  for (int64_t q = 0; q < npix; ++q) ptr[q + 1] += ptr[q];
  // Pass 2: transpose into per-pixel channel lists.
  int32_t* out = rows.get(n + kSlack);
  std::vector<int32_t> fill(ptr.begin(), ptr.end() - 1);
  float* val = vals ? vals->get(n + kSlack) : nullptr;
  for (int64_t c = 0; c < C; ++c) {
    const int32_t base = static_cast<int32_t>(c * KKs);
    if (val) {
      for (int32_t i = coff[c]; i < coff[c + 1]; ++i) {
        const int32_t at = fill[pix[i]]++;
        out[at] = base;
        val[at] = xb[c * plane + pix[i]];
      }
    } else {
      for (int32_t i = coff[c]; i < coff[c + 1]; ++i) out[fill[pix[i]]++] = base;
    }
  }
  std::fill(out + n, out + n + kSlack, 0);  // the list copies may read past the end
  if (val) std::fill(val + n, val + n + kSlack, 0.0f);
  return n;
}

// The kept taps of the pruned layout, per input channel: entries [ptr[c], ptr[c+1]) give the
// tap's (ky, kx) and its row in the pruned values.
struct KeptTaps {
  std::vector<int32_t> ptr, ky, kx, row;
  std::vector<int32_t> live;  // the channels with at least one kept tap, ascending
  // row_stride: what a kept row's entry is multiplied by (1: row ids; the row bytes: offsets).
  KeptTaps(const PackedConv2dParams& p, const int32_t* map, int64_t row_stride = 1)
      : ptr(static_cast<size_t>(p.C + 1), 0) {
    // Built every call (from the row map): sized first, then filled without reallocation.
    const int64_t n = p.C * p.KH * p.KW;
    int64_t kept = 0;
    for (int64_t i = 0; i < n; ++i) kept += map[i] >= 0;
    ky.resize(static_cast<size_t>(kept));
    kx.resize(static_cast<size_t>(kept));
    row.resize(static_cast<size_t>(kept));
    int32_t j = 0;
    for (int64_t c = 0; c < p.C; ++c) {
      for (int32_t y = 0; y < p.KH; ++y)
        for (int32_t x = 0; x < p.KW; ++x) {
          const int32_t r = map[(c * p.KH + y) * p.KW + x];
          if (r < 0) continue;
          ky[j] = y;
          kx[j] = x;
          row[j++] = static_cast<int32_t>(r * row_stride);
        }
      ptr[c + 1] = j;
      if (j > ptr[c]) live.push_back(static_cast<int32_t>(c));
    }
  }
};

// Pruned layout: kept kernel rows per *output* pixel of output rows [y0, y1) of one image,
// entries rows[ptr[o], ptr[o+1]) for output pixel y0 * OW + o. Every event (input pixel,
// channel) goes straight to the outputs its kept taps reach, so an output pixel's rows are one
// contiguous list (no per-tap lists to join: at high tap sparsity most would be empty) and a
// channel whose taps were all pruned is not even scanned. Input rows [ir0, ir1) are the ones
// output rows [y0, y1) read. Returns the entry count.
// With `vals`, vals[i] is the input value of entry i (the analog kernel's weights).
inline int64_t list_outputs(const float* xb, const PackedConv2dParams& p, int64_t y0, int64_t y1,
                            int64_t ir0, int64_t ir1, const KeptTaps& kt, Scratch<>& tmp,
                            std::vector<int32_t>& ptr, Scratch<>& rows, bool& analog,
                            Scratch<float>* vals = nullptr) {
  const int64_t W = p.W, HW = p.H * p.W, OW = p.OW, KH = p.KH, KW = p.KW;
  const int64_t nrow = ir1 - ir0, nout = (y1 - y0) * OW;
  // Output row (relative to y0) of band row r through kernel row ky, and output column of
  // input column ix through kernel column kx; -1 where none (padding, stride, band edge).
  const int64_t npix = nrow * W;
  int32_t* ty = tmp.get(nrow * KH + W * KW + npix + kSlack);
  int32_t* tx = ty + nrow * KH;
  int32_t* pix = tx + W * KW;  // the active pixels of one channel's band
  for (int64_t r = 0; r < nrow; ++r)
    for (int64_t ky = 0; ky < KH; ++ky) {
      const int64_t ny = ir0 + r + p.ph - ky * p.dh, oy = ny / p.sh;
      ty[r * KH + ky] = ny >= 0 && ny % p.sh == 0 && oy >= y0 && oy < y1 ? static_cast<int32_t>((oy - y0) * OW) : -1;
    }
  for (int64_t ix = 0; ix < W; ++ix)
    for (int64_t kx = 0; kx < KW; ++kx) {
      const int64_t nx = ix + p.pw - kx * p.dw, ox = nx / p.sw;
      tx[ix * KW + kx] = nx >= 0 && nx % p.sw == 0 && ox < OW ? static_cast<int32_t>(ox) : -1;
    }
  // Band pixel q is (row q / W, column q % W); the row through a double multiply (exact: q +
  // 0.5 is at least 0.5 / W from a multiple of W, far beyond the rounding error).
  const double inv_w = 1.0 / static_cast<double>(W);
  // Pass 1: (output pixel, kept row) of every event and kept tap, counted per output pixel.
  // One scan per channel over its whole band (the band's rows are contiguous in the plane).
  static thread_local std::vector<int32_t> hits;  // pairs; grown, never shrunk
  static thread_local std::vector<float> hit_vals;  // with vals: the input value of each hit
  ptr.assign(static_cast<size_t>(nout + 1), 0);
  int64_t nh = 0;
  const int64_t nlive = static_cast<int64_t>(kt.live.size());
  const auto band = [&](int64_t i) { return xb + kt.live[static_cast<size_t>(i)] * HW + ir0 * W; };
  for (int64_t i = 0; i < std::min<int64_t>(kChanAhead, nlive); ++i) prefetch_floats(band(i), npix);
  for (int64_t li = 0; li < nlive; ++li) {  // channels whose taps were all pruned are skipped
    const int64_t c = kt.live[static_cast<size_t>(li)];
    const int32_t j0 = kt.ptr[c], j1 = kt.ptr[c + 1];
    if (li + kChanAhead < nlive) prefetch_floats(band(li + kChanAhead), npix);
    const float* xc = band(li);
    const int k = list_active_rows(xc, npix, 0, pix, analog);
    const int64_t need = nh + int64_t(k) * (j1 - j0);
    if (static_cast<int64_t>(hits.size()) < 2 * need) hits.resize(static_cast<size_t>(4 * need));
    if (vals && static_cast<int64_t>(hit_vals.size()) < need) hit_vals.resize(static_cast<size_t>(2 * need));
    // Raw pointers: through the vectors, every store below would make the compiler reload them.
    int32_t* __restrict h = hits.data() + 2 * nh;
    int32_t* __restrict cnt = ptr.data() + 1;
    float* __restrict hv = vals ? hit_vals.data() + nh : nullptr;
    const int32_t *kty = kt.ky.data(), *ktx = kt.kx.data(), *ktr = kt.row.data();
    int64_t m = 0;
    for (int i = 0; i < k; ++i) {
      const int32_t q = pix[i], r = static_cast<int32_t>((q + 0.5) * inv_w);
      const int32_t* tyr = ty + r * KH;
      const int32_t* txc = tx + (q - r * W) * KW;
      for (int32_t j = j0; j < j1; ++j) {
        const int32_t a = tyr[kty[j]], b = txc[ktx[j]];
        if ((a | b) < 0) continue;
        const int32_t o = a + b;
        ++cnt[o];
        h[2 * m] = o;
        h[2 * m + 1] = ktr[j];
        if (hv) hv[m] = xc[q];
        ++m;
      }
    }
    nh += m;
  }
  // Pass 2: into per-output-pixel lists.
  for (int64_t o = 0; o < nout; ++o) ptr[o + 1] += ptr[o];
  const int64_t total = ptr[nout];
  int32_t* out = rows.get(total + kSlack);
  std::vector<int32_t> fill(ptr.begin(), ptr.end() - 1);
  const int32_t* h = hits.data();
  if (vals) {
    float* val = vals->get(total + kSlack);
    for (int64_t e = 0; e < nh; ++e) {
      const int32_t at = fill[h[2 * e]]++;
      out[at] = h[2 * e + 1];
      val[at] = hit_vals[static_cast<size_t>(e)];
    }
  } else {
    for (int64_t e = 0; e < nh; ++e) out[fill[h[2 * e]]++] = h[2 * e + 1];
  }
  return total;
}

// Events per accumulation round: uint16 lanes hold 65535 / M code sums, uint8 lanes (BITS <
// 8) 255 / M; a round is a whole number of uint8 sub-rounds.
template <int BITS>
constexpr int round_events() {
  constexpr int M = (1 << BITS) - 1, k8 = BITS == 8 ? 1 : 255 / M;
  return 65535 / M / k8 * k8;
}

#if defined(__AVX512BW__)

// a16[q][s][h] = per output (uint16 lanes, output order q * 64P + s * 64 + h * 32 + lane) the
// sum of the unsigned codes of rows[i0, i1) (at most round_events) in the tile's NCH chunks.
template <int BITS, int NCH>
inline void round_sum(const uint8_t* base, int64_t ld, const int32_t* rows, int i0, int i1,
                      __m512i (&a16)[NCH][8 / BITS][2]) {
  constexpr int P = 8 / BITS;
  constexpr unsigned M = (1u << BITS) - 1u;
  constexpr int k8 = BITS == 8 ? 1 : 255 / M;
  const __m512i vm = _mm512_set1_epi8(static_cast<char>(M));
  for (int q = 0; q < NCH; ++q)
    for (int s = 0; s < P; ++s) a16[q][s][0] = a16[q][s][1] = _mm512_setzero_si512();
  if constexpr (BITS == 8) {
    for (int i = i0; i < i1; ++i) {
      if (i + kAhead < i1) _mm_prefetch(reinterpret_cast<const char*>(base + int64_t(rows[i + kAhead]) * ld), _MM_HINT_T0);
      const uint8_t* row = base + int64_t(rows[i]) * ld;
#pragma GCC unroll 4
      for (int q = 0; q < NCH; ++q) {
        const __m256i* r = reinterpret_cast<const __m256i*>(row + kChunk * q);
        a16[q][0][0] = _mm512_add_epi16(a16[q][0][0], _mm512_cvtepu8_epi16(_mm256_loadu_si256(r)));
        a16[q][0][1] = _mm512_add_epi16(a16[q][0][1], _mm512_cvtepu8_epi16(_mm256_loadu_si256(r + 1)));
      }
    }
  } else {
    for (int j0 = i0; j0 < i1; j0 += k8) {
      const int j1 = std::min(i1, j0 + k8);
      __m512i a8[NCH][P];
      for (int q = 0; q < NCH; ++q)
        for (int s = 0; s < P; ++s) a8[q][s] = _mm512_setzero_si512();
      for (int i = j0; i < j1; ++i) {
        if (i + kAhead < i1) _mm_prefetch(reinterpret_cast<const char*>(base + int64_t(rows[i + kAhead]) * ld), _MM_HINT_T0);
        const uint8_t* row = base + int64_t(rows[i]) * ld;
#pragma GCC unroll 4
        for (int q = 0; q < NCH; ++q) {
          const __m512i v = _mm512_loadu_si512(row + kChunk * q);
#pragma GCC unroll 8
          for (int s = 0; s < P; ++s) {
            const __m512i u = _mm512_and_si512(s == 0 ? v : _mm512_srli_epi16(v, s * BITS), vm);
            a8[q][s] = _mm512_add_epi8(a8[q][s], u);
          }
        }
      }
      for (int q = 0; q < NCH; ++q)
        for (int s = 0; s < P; ++s) {
          a16[q][s][0] = _mm512_add_epi16(a16[q][s][0], _mm512_cvtepu8_epi16(_mm512_castsi512_si256(a8[q][s])));
          a16[q][s][1] = _mm512_add_epi16(a16[q][s][1], _mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64(a8[q][s], 1)));
        }
    }
  }
}
#endif

// out[o] = scale[o] * (mul * S[o] - off * n) + bias[o] for o < width, S[o] the sum of the
// unsigned codes of output o (tile-relative) over the n listed rows: exact integer code sums;
// the multiply and the add are rounded separately, as on CUDA and in reference.py.
// acc32: scratch of NCH * 64P int32 (used only when n exceeds one accumulation round).
template <int BITS, int NCH>
inline void accumulate_fold(const uint8_t* w, int64_t ld, int64_t byte0, const int32_t* rows,
                            int n, int32_t* acc32, int64_t width, const float* scale,
                            const float* bias, float* out) {
  constexpr int P = 8 / BITS;
  [[maybe_unused]] constexpr unsigned M = (1u << BITS) - 1u;
  const int32_t mul = code_mul(BITS), offc = code_off(BITS) * n;
#if defined(__AVX512BW__)
  constexpr int kr = round_events<BITS>();
  const uint8_t* base = w + byte0;
  __m512i a16[NCH][P][2];
  if (n > kr) {  // rare (more than ~4000 events into one output pixel): spill rounds to int32
    std::memset(acc32, 0, sizeof(int32_t) * NCH * kChunk * P);
    for (int i0 = 0; i0 < n; i0 += kr) {
      round_sum<BITS, NCH>(base, ld, rows, i0, std::min(n, i0 + kr), a16);
      for (int q = 0; q < NCH; ++q)
        for (int s = 0; s < P; ++s)
          for (int h = 0; h < 2; ++h) {
            int32_t* dst = acc32 + q * kChunk * P + s * kChunk + h * 32;
            const __m512i lo = _mm512_cvtepu16_epi32(_mm512_castsi512_si256(a16[q][s][h]));
            const __m512i hi = _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(a16[q][s][h], 1));
            _mm512_storeu_si512(dst, _mm512_add_epi32(_mm512_loadu_si512(dst), lo));
            _mm512_storeu_si512(dst + 16, _mm512_add_epi32(_mm512_loadu_si512(dst + 16), hi));
          }
    }
  } else {
    round_sum<BITS, NCH>(base, ld, rows, 0, n, a16);
  }
  const __m512i vmul = _mm512_set1_epi32(mul), voff = _mm512_set1_epi32(offc);
  for (int q = 0; q < NCH; ++q)
    for (int s = 0; s < P; ++s)
      for (int h = 0; h < 2; ++h)
        for (int half = 0; half < 2; ++half) {
          const int64_t o = q * kChunk * P + s * kChunk + h * 32 + half * 16;
          if (o >= width) continue;
          const __mmask16 m = width - o >= 16 ? 0xffff : static_cast<__mmask16>((1u << (width - o)) - 1u);
          const __m512i sum = n > kr ? _mm512_loadu_si512(acc32 + o)
                                     : _mm512_cvtepu16_epi32(half ? _mm512_extracti64x4_epi64(a16[q][s][h], 1)
                                                                  : _mm512_castsi512_si256(a16[q][s][h]));
          const __m512i codes = _mm512_sub_epi32(BITS == 1 ? _mm512_mullo_epi32(vmul, sum) : sum, voff);
          __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, scale + o), _mm512_cvtepi32_ps(codes));
          if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, bias + o));
          _mm512_mask_storeu_ps(out + o, m, v);
        }
#elif defined(__AVX2__)
  constexpr int kr = round_events<BITS>();
  alignas(32) uint16_t s16[NCH * kChunk * P];
  const uint8_t* base = w + byte0;
  if (n > kr) std::memset(acc32, 0, sizeof(int32_t) * NCH * kChunk * P);
  for (int i0 = 0; i0 < n || i0 == 0; i0 += kr) {
    std::memset(s16, 0, sizeof(s16));
    avx2::tile_sums<BITS, NCH>(base, rows, i0, std::min(n, i0 + kr), s16);
    if (n > kr)  // rare (more than ~4000 events into one output pixel): spill rounds to int32
      for (int o = 0; o < NCH * kChunk * P; ++o) acc32[o] += s16[o];
  }
  avx2::fold(s16, n > kr ? acc32 : nullptr, width, mul, offc, scale, bias, out);
  (void)ld;
#else
  std::memset(acc32, 0, sizeof(int32_t) * NCH * kChunk * P);
  for (int i = 0; i < n; ++i) {
    const uint8_t* row = w + int64_t(rows[i]) * ld + byte0;
    for (int q = 0; q < NCH; ++q)
      for (int j = 0; j < kChunk; ++j) {
        const unsigned v = row[kChunk * q + j];
        for (int s = 0; s < P; ++s)
          acc32[q * kChunk * P + s * kChunk + j] += static_cast<int32_t>((v >> (s * BITS)) & M);
      }
  }
  for (int64_t o = 0; o < width; ++o) {
    const float v = scale[o] * static_cast<float>(mul * acc32[o] - offc);
    out[o] = bias ? v + bias[o] : v;
  }
#endif
}

// The analog form of accumulate_fold over one chunk (up to 64P outputs, `width` of them live):
// A[o] = sum_i vals[i] * u_i[o] in fp32 (rows[i] are byte offsets into w + byte0), V = sum_i
// vals[i], out[o] = scale[o] * (mul * A[o] - off * V) + bias[o] (the general kernel's formula).
// One code slot (64 outputs, 4 registers) at a time, so any bit width fits in registers.
template <int BITS>
inline void accumulate_fold_analog(const uint8_t* w, int64_t byte0, const int32_t* rows, const float* vals,
                                   int n, int64_t width, const float* scale, const float* bias,
                                   float* out) {
  constexpr int P = 8 / BITS;
  constexpr unsigned M = (1u << BITS) - 1u;
  const float mul = static_cast<float>(code_mul(BITS)), off = static_cast<float>(code_off(BITS));
  float vsum = 0.0f;
  for (int i = 0; i < n; ++i) vsum += vals[i];
  const float offv = off * vsum;
  const uint8_t* base = w + byte0;
  for (int s = 0; s < P && s * kChunk < width; ++s) {
    const int64_t o0 = int64_t(s) * kChunk, live = std::min<int64_t>(kChunk, width - o0);
#if defined(__AVX512BW__)
    const __m512i vm = _mm512_set1_epi8(static_cast<char>(M));
    __m512 a[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int i = 0; i < n; ++i) {
      if (i + kAhead < n) _mm_prefetch(reinterpret_cast<const char*>(base + rows[i + kAhead]), _MM_HINT_T0);
      const __m512i v = _mm512_loadu_si512(base + rows[i]);
      const __m512i u = _mm512_and_si512(s == 0 ? v : _mm512_srli_epi16(v, s * BITS), vm);
      const __m512 xv = _mm512_set1_ps(vals[i]);
      a[0] = _mm512_fmadd_ps(xv, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(u, 0))), a[0]);
      a[1] = _mm512_fmadd_ps(xv, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(u, 1))), a[1]);
      a[2] = _mm512_fmadd_ps(xv, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(u, 2))), a[2]);
      a[3] = _mm512_fmadd_ps(xv, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(u, 3))), a[3]);
    }
    const __m512 vmul = _mm512_set1_ps(mul), voff = _mm512_set1_ps(offv);
    for (int h = 0; h < 4 && h * 16 < live; ++h) {
      const int64_t rem = live - h * 16;
      const __mmask16 m = rem >= 16 ? 0xffff : static_cast<__mmask16>((1u << rem) - 1u);
      const int64_t o = o0 + h * 16;
      const __m512 codes = _mm512_sub_ps(_mm512_mul_ps(vmul, a[h]), voff);
      __m512 y = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, scale + o), codes);
      if (bias) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(m, bias + o));
      _mm512_mask_storeu_ps(out + o, m, y);
    }
#else
    float a[kChunk] = {};
#if defined(__AVX2__)
    avx2::analog_slot_sums<BITS>(base, rows, vals, n, s, a);
#else
    for (int i = 0; i < n; ++i) {
      const uint8_t* row = base + rows[i];
      for (int j = 0; j < kChunk; ++j) a[j] += vals[i] * static_cast<float>((row[j] >> (s * BITS)) & M);
    }
#endif
    for (int64_t j = 0; j < live; ++j) {
      const float codes = mul * a[j] - offv;
      const float y = scale[o0 + j] * codes;
      out[o0 + j] = bias ? y + bias[o0 + j] : y;
    }
#endif
  }
}

#if defined(__AVX512F__)
// r[i][j] -> r[j][i] for a 16 x 16 float block in registers (unpack, 64-bit shuffle, two
// 128-bit lane shuffles).
inline void transpose16(__m512 (&r)[16]) {
  __m512 a[16], b[16];
  for (int i = 0; i < 8; ++i) {
    a[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    a[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int g = 0; g < 4; ++g) {  // b[4g + m], lane L: rows 4g..4g+3 at column 4L + m
    b[4 * g + 0] = _mm512_shuffle_ps(a[4 * g], a[4 * g + 2], 0x44);
    b[4 * g + 1] = _mm512_shuffle_ps(a[4 * g], a[4 * g + 2], 0xEE);
    b[4 * g + 2] = _mm512_shuffle_ps(a[4 * g + 1], a[4 * g + 3], 0x44);
    b[4 * g + 3] = _mm512_shuffle_ps(a[4 * g + 1], a[4 * g + 3], 0xEE);
  }
  for (int m = 0; m < 4; ++m) {
    const __m512 c = _mm512_shuffle_f32x4(b[m], b[4 + m], 0x88);
    const __m512 d = _mm512_shuffle_f32x4(b[m], b[4 + m], 0xDD);
    const __m512 e = _mm512_shuffle_f32x4(b[8 + m], b[12 + m], 0x88);
    const __m512 f = _mm512_shuffle_f32x4(b[8 + m], b[12 + m], 0xDD);
    r[m] = _mm512_shuffle_f32x4(c, e, 0x88);
    r[4 + m] = _mm512_shuffle_f32x4(d, f, 0x88);
    r[8 + m] = _mm512_shuffle_f32x4(c, e, 0xDD);
    r[12 + m] = _mm512_shuffle_f32x4(d, f, 0xDD);
  }
}
#endif

// Writes the channels-last block buf [npix, ldb] (outputs 0..width) into y's NCHW planes
// (plane stride OP) at pixel pix0. Full 16-pixel blocks go through 16 x 16 register
// transposes; aligned rows use streaming stores (y is written once and never read here, and
// regular stores to planes 4 KiB apart would queue on cache misses that later loads of buf
// wait for through 4K aliasing).
inline void store_nchw(const float* buf, int64_t npix, int64_t ldb, int64_t width, float* y,
                       int64_t OP, int64_t pix0) {
#if defined(__AVX512F__)
  if (npix == 16) {
    float* dst = y + pix0;
    const bool aligned = (reinterpret_cast<uintptr_t>(dst) & 63) == 0 && OP % 16 == 0;
    for (int64_t o0 = 0; o0 < width; o0 += 16) {
      const int64_t n = std::min<int64_t>(16, width - o0);
      const __mmask16 m = n == 16 ? 0xffff : static_cast<__mmask16>((1u << n) - 1u);
      __m512 r[16];
      for (int q = 0; q < 16; ++q) r[q] = _mm512_maskz_loadu_ps(m, buf + q * ldb + o0);
      transpose16(r);
      for (int64_t j = 0; j < n; ++j) {
        if (aligned) _mm512_stream_ps(dst + (o0 + j) * OP, r[j]);
        else _mm512_storeu_ps(dst + (o0 + j) * OP, r[j]);
      }
    }
    return;
  }
#elif defined(__AVX2__)
  if (npix == 16) return avx2::store16_nchw(buf, ldb, width, y, OP, pix0);
#endif
  for (int64_t o = 0; o < width; ++o)
    for (int64_t q = 0; q < npix; ++q) y[o * OP + pix0 + q] = buf[q * ldb + o];
}

// body(item) for item in [0, n): on the calling thread alone when nt == 1 (not even an
// OpenMP region, whose team start costs about a microsecond), else event::parallel_items.
template <typename F>
inline void for_items(int64_t n, int nt, F&& body) {
  if (nt <= 1) {
    for (int64_t i = 0; i < n; ++i) body(i);
    return;
  }
  event::parallel_items(n, nt, body);
}

// The whole convolution. wk: chunked kernel rows (ld = nch * 64 bytes); map: null (row
// c*KKs + t) or the pruned layout's row map [C*KKs] (-1: dropped). scale [O] (one group).
// Work items are (image, output-channel group, band of output rows); each lists the events of
// the input rows its band reads itself, so the listing runs in parallel even for one image.
// Returns false (y then undefined) if an input value the convolution reads is neither 0 nor 1:
// the caller runs the analog kernel instead, so binary input needs no separate check pass.
// ANALOG: any input values (each listed row weighted by its value, fp32 sums); never false
// unless the weight is too large for the row offsets.
template <int BITS, bool ANALOG = false>
bool run(const PackedConv2dParams& p, const float* x, const uint8_t* wk, const int32_t* map,
         const float* scale, const float* bias, float* y) {
  constexpr int64_t CO = kChunk * 8 / BITS;  // outputs per chunk
  const int64_t C = p.C, HW = p.H * p.W, KKs = p.KH * p.KW, KK = C * KKs, O = p.O;
  const int64_t OP = p.OH * p.OW, nch = num_chunks(O, BITS), ld = nch * kChunk;
  const CacheSizes& cs = cache_sizes();
  // Output tile in registers: 2 chunks where 2 chunks' uint8 + uint16 accumulators fit in the
  // 32 vector registers (bits 8 and 4), else 1.
  constexpr int kTileChunks = BITS >= 4 ? 2 : 1;
  const bool pruned = map != nullptr;
  const KeptTaps kept = pruned ? KeptTaps(p, map, ld) : KeptTaps(PackedConv2dParams{}, nullptr);
  // Output-channel groups: the stored kernel rows' bytes of one group stay within half of L2, so
  // the rows walked for every output pixel are L2 hits (one group for the usual layer sizes;
  // each group lists the events again, so the pruned layout counts only its kept rows).
  const int64_t wbytes = std::max<int64_t>(1, (pruned ? static_cast<int64_t>(kept.row.size()) : KK) * ld);
  const int64_t ngroups = std::min<int64_t>(nch, (wbytes + cs.l2 / 2 - 1) / (cs.l2 / 2));
  const int64_t gch = (nch + ngroups - 1) / ngroups;  // chunks per group
  // The row lists hold byte offsets of kernel rows (no multiply per row in the hot loop); a
  // weight too large for int32 offsets is refused (the caller's general kernel runs).
  if (wbytes > INT32_MAX) return false;
  // Work before the events are known: the input scan plus the per-output fold and store.
  const int nt = threads_for(p.NB * (C * HW + 8 * OP * O), p.threads);
  // Output rows per work item: a whole image, unless that leaves a thread without work; then
  // bands, two per thread (some balance if a thread loses its core). Each band lists the
  // input rows it reads itself, so its halo rows are listed twice: few bands, little waste.
  int64_t rb = p.OH;
  const int64_t want_items = 2 * static_cast<int64_t>(nt);
  if (nt > 1 && p.NB * ngroups < want_items)
    rb = std::max<int64_t>(1, (p.OH * p.NB * ngroups + want_items - 1) / want_items);
  const int64_t yblocks = (p.OH + rb - 1) / rb;
  std::atomic<bool> any_analog{false};
  for_items(p.NB * ngroups * yblocks, nt, [&](int64_t item) {
    const int64_t yb = item % yblocks, g = (item / yblocks) % ngroups, b = item / (yblocks * ngroups);
    const int64_t q0 = g * gch, q1 = std::min(nch, q0 + gch);
    const int64_t o0 = q0 * CO, o1 = std::min(O, q1 * CO), width = o1 - o0;
    if (width <= 0) return;
    const int64_t y0 = yb * rb, y1 = std::min(p.OH, y0 + rb);
    // Input rows read by output rows [y0, y1).
    const int64_t ir0 = std::max<int64_t>(0, y0 * p.sh - p.ph);
    const int64_t ir1 = std::min<int64_t>(p.H, (y1 - 1) * p.sh - p.ph + (p.KH - 1) * p.dh + 1);
    static thread_local Scratch<> flat_s, acc_s, tmp_s, rows_s;
    static thread_local Scratch<float> buf_s, vals_s, flat_vals_s;
    static thread_local std::vector<int32_t> ptr;
    const float* xb = x + b * C * HW;
    bool analog = false;
    Scratch<float>* vals = ANALOG ? &vals_s : nullptr;
    if (ir1 <= ir0) ptr.assign(static_cast<size_t>((pruned ? (y1 - y0) * p.OW : 0) + 1), 0);
    else if (pruned) list_outputs(xb, p, y0, y1, ir0, ir1, kept, tmp_s, ptr, rows_s, analog, vals);
    else list_pixels(xb + ir0 * p.W, C, HW, (ir1 - ir0) * p.W, KKs * ld, tmp_s, ptr, rows_s, analog, vals);
    if (!ANALOG) {
      if (analog) any_analog.store(true, std::memory_order_relaxed);
      if (any_analog.load(std::memory_order_relaxed)) return;  // the result will be discarded
    }
    int32_t* flat = flat_s.get(KK + kSlack);
    float* flat_vals = ANALOG ? flat_vals_s.get(KK + kSlack) : nullptr;
    const float* ev_vals = ANALOG ? vals_s.get(kSlack) : nullptr;
    // 16 output pixels at a time are parked channels-last in an L1-sized buffer, then written
    // to the NCHW planes as 16-float runs.
    float* buf = buf_s.get(kPixBlock * width + 16);
    int32_t* acc32 = acc_s.get(kTileChunks * CO + 16);
    const int32_t* ev = rows_s.get(kSlack);
    // A raw pointer: each access to a thread_local from a shared library is a TLS lookup call.
    const int32_t* lp = ptr.data();
    float* ydst = y + (b * O + o0) * OP;
    for (int64_t pb = y0 * p.OW; pb < y1 * p.OW; pb += kPixBlock) {
      const int64_t pe = std::min(y1 * p.OW, pb + kPixBlock);
      for (int64_t pi = pb; pi < pe; ++pi) {
        const int32_t* list = flat;
        const float* list_vals = flat_vals;
        int k = 0;
        if (pruned) {
          const int64_t o = pi - y0 * p.OW;
          list = ev + lp[o];
          if (ANALOG) list_vals = ev_vals + lp[o];
          k = lp[o + 1] - lp[o];
        } else {
          const int64_t oy = pi / p.OW, ox = pi - oy * p.OW;
          for (int64_t ky = 0; ky < p.KH; ++ky) {
            const int64_t iy = oy * p.sh - p.ph + ky * p.dh;
            if (iy < 0 || iy >= p.H) continue;
            for (int64_t kx = 0; kx < p.KW; ++kx) {
              const int64_t ix = ox * p.sw - p.pw + kx * p.dw;
              if (ix < 0 || ix >= p.W) continue;
              const int64_t q = (iy - ir0) * p.W + ix;
              if (ANALOG) std::memcpy(flat_vals + k, ev_vals + lp[q], sizeof(float) * (lp[q + 1] - lp[q]));
              k += event::append_offset(flat + k, ev + lp[q], lp[q + 1] - lp[q],
                                        static_cast<int32_t>((ky * p.KW + kx) * ld));
            }
          }
        }
        float* out = buf + (pi - pb) * width;
        if (ANALOG) {
          for (int64_t q = q0; q < q1; ++q) {
            const int64_t ta = (q - q0) * CO, tw = std::min(o1, (q + 1) * CO) - q * CO;
            accumulate_fold_analog<BITS>(wk, q * kChunk, list, list_vals, k, tw, scale + o0 + ta,
                                         bias ? bias + o0 + ta : nullptr, out + ta);
          }
          continue;
        }
        for (int64_t q = q0; q < q1; q += kTileChunks) {
          const int64_t qn = std::min<int64_t>(kTileChunks, q1 - q);
          const int64_t ta = (q - q0) * CO, tw = std::min(o1, (q + qn) * CO) - q * CO;
          const float* bt = bias ? bias + o0 + ta : nullptr;
          if (qn == 2) accumulate_fold<BITS, 2>(wk, 1, q * kChunk, list, k, acc32, tw, scale + o0 + ta, bt, out + ta);
          else accumulate_fold<BITS, 1>(wk, 1, q * kChunk, list, k, acc32, tw, scale + o0 + ta, bt, out + ta);
        }
      }
      store_nchw(buf, pe - pb, width, width, ydst, OP, pb);
    }
#if defined(__AVX512F__) || defined(__AVX2__)
    _mm_sfence();  // this item's streaming stores are complete before the region ends
#endif
  });
  return !any_analog.load();
}

inline bool dispatch(const PackedConv2dParams& p, const float* x, const uint8_t* wk,
                     const int32_t* map, const float* scale, const float* bias, float* y) {
  if (p.NB == 0 || p.O == 0 || p.OH == 0 || p.OW == 0) return true;
  switch (p.bits) {
    case 8: return run<8>(p, x, wk, map, scale, bias, y);
    case 4: return run<4>(p, x, wk, map, scale, bias, y);
    case 2: return run<2>(p, x, wk, map, scale, bias, y);
    default: return run<1>(p, x, wk, map, scale, bias, y);
  }
}

// The same convolution for any input values (analog input, integer sums): each listed row is
// weighted by its input value in fp32. Returns false only for weights too large for the row
// offsets (the caller's general kernel runs then).
inline bool dispatch_analog(const PackedConv2dParams& p, const float* x, const uint8_t* wk,
                            const int32_t* map, const float* scale, const float* bias, float* y) {
  if (p.NB == 0 || p.O == 0 || p.OH == 0 || p.OW == 0) return true;
  switch (p.bits) {
    case 8: return run<8, true>(p, x, wk, map, scale, bias, y);
    case 4: return run<4, true>(p, x, wk, map, scale, bias, y);
    case 2: return run<2, true>(p, x, wk, map, scale, bias, y);
    default: return run<1, true>(p, x, wk, map, scale, bias, y);
  }
}

}  // namespace conv_gather
}  // namespace sparsesnn
