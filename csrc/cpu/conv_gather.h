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
// channel). Per output pixel: the lists of its receptive-field taps are concatenated into one
// list of kernel rows; per output tile (up to 2 chunks in registers) each listed row is
// unpacked with a shift and a mask per slot and summed into uint8 lanes (no multiplies),
// widened to uint16 before they could overflow and to int32 at the end; the scale is applied
// once per output: y = scale * (mul * sum u - off * events) + bias.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

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

// Active channels of every input pixel of one image: entries row[ptr[q], ptr[q+1]) are c * KKs
// for the active channels c of pixel q (ascending). Returns the event count.
inline int64_t list_pixels(const float* xb, int64_t C, int64_t HW, int64_t KKs, Scratch<>& tmp,
                           std::vector<int32_t>& ptr, Scratch<>& rows) {
  // Pass 1: per channel plane, the active pixels (vector compress), counted per pixel.
  int32_t* pix = tmp.get(C * HW + kSlack + C + 1);
  int32_t* coff = pix + C * HW + kSlack;
  ptr.assign(static_cast<size_t>(HW + 1), 0);
  int64_t n = 0;
  for (int64_t c = 0; c < C; ++c) {
    coff[c] = static_cast<int32_t>(n);
    const int k = event::list_active_f32(xb + c * HW, HW, 0, pix + n);
    for (int i = 0; i < k; ++i) ++ptr[pix[n + i] + 1];
    n += k;
  }
  coff[C] = static_cast<int32_t>(n);
  for (int64_t q = 0; q < HW; ++q) ptr[q + 1] += ptr[q];
  // Pass 2: transpose into per-pixel channel lists.
  int32_t* out = rows.get(n + kSlack);
  std::vector<int32_t> fill(ptr.begin(), ptr.end() - 1);
  for (int64_t c = 0; c < C; ++c) {
    const int32_t base = static_cast<int32_t>(c * KKs);
    for (int32_t i = coff[c]; i < coff[c + 1]; ++i) out[fill[pix[i]]++] = base;
  }
  std::fill(out + n, out + n + kSlack, 0);  // the list copies may read past the end
  return n;
}

// dst = kernel rows of the n entries c*KK of src at tap t: (c*KK + t), or, with a row map
// (pruned layout), map[c*KK + t] dropping the -1 (pruned) ones. Returns the count written.
inline int append_rows(int32_t* dst, const int32_t* src, int n, int32_t t, const int32_t* map) {
  if (!map) return event::append_offset(dst, src, n, t);
  int k = 0;
#if defined(__AVX512F__)
  const __m512i off = _mm512_set1_epi32(t), zero = _mm512_setzero_si512();
  for (int j = 0; j < n; j += 16) {
    const __mmask16 live = n - j >= 16 ? 0xffff : static_cast<__mmask16>((1u << (n - j)) - 1u);
    const __m512i idx = _mm512_add_epi32(_mm512_loadu_si512(src + j), off);
    const __m512i r = _mm512_mask_i32gather_epi32(zero, live, idx, map, 4);
    const __mmask16 keep = _mm512_mask_cmpge_epi32_mask(live, r, zero);
    _mm512_storeu_si512(dst + k, _mm512_maskz_compress_epi32(keep, r));
    k += __builtin_popcount(static_cast<unsigned>(keep));
  }
#else
  for (int j = 0; j < n; ++j) {
    const int32_t r = map[src[j] + t];
    dst[k] = r;
    k += r >= 0;
  }
#endif
  return k;
}

// acc32[0, NCH * 64P) += sum over the n listed rows of the unsigned codes of the tile's NCH
// chunks (starting at byte byte0 of each kernel row of ld bytes), in output order.
template <int BITS, int NCH>
inline void accumulate(const uint8_t* w, int64_t ld, int64_t byte0, const int32_t* rows, int n,
                       int32_t* acc32) {
  constexpr int P = 8 / BITS;
  constexpr unsigned M = (1u << BITS) - 1u;
#if defined(__AVX512BW__)
  // uint16 lanes hold 65535 / M events; uint8 lanes (BITS < 8) 255 / M.
  constexpr int k8 = BITS == 8 ? 1 : 255 / M;
  constexpr int k16 = static_cast<int>(65535 / M) / k8 * k8;
  const __m512i vm = _mm512_set1_epi8(static_cast<char>(M));
  const uint8_t* base = w + byte0;
  for (int i0 = 0; i0 < n; i0 += k16) {
    const int i1 = std::min(n, i0 + k16);
    __m512i a16[NCH][P][2];
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
#else
  for (int i = 0; i < n; ++i) {
    const uint8_t* row = w + int64_t(rows[i]) * ld + byte0;
    for (int q = 0; q < NCH; ++q)
      for (int j = 0; j < kChunk; ++j) {
        const unsigned v = row[kChunk * q + j];
        for (int s = 0; s < P; ++s)
          acc32[q * kChunk * P + s * kChunk + j] += static_cast<int32_t>((v >> (s * BITS)) & M);
      }
  }
#endif
}

// out[o] = scale[o] * (mul * acc32[o] - off * events) + bias[o] for o < width (exact integer
// code sums; the multiply and the add are rounded separately, as on CUDA and in reference.py).
template <int BITS>
inline void fold(const int32_t* acc32, int64_t width, int64_t events, const float* scale,
                 const float* bias, float* out) {
  const int32_t mul = code_mul(BITS), offc = code_off(BITS) * static_cast<int32_t>(events);
  int64_t o = 0;
#if defined(__AVX512F__)
  const __m512i vmul = _mm512_set1_epi32(mul), voff = _mm512_set1_epi32(offc);
  for (; o < width; o += 16) {
    const __mmask16 m = width - o >= 16 ? 0xffff : static_cast<__mmask16>((1u << (width - o)) - 1u);
    const __m512i codes = _mm512_sub_epi32(_mm512_mullo_epi32(vmul, _mm512_loadu_si512(acc32 + o)), voff);
    __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, scale + o), _mm512_cvtepi32_ps(codes));
    if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, bias + o));
    _mm512_mask_storeu_ps(out + o, m, v);
  }
#endif
  for (; o < width; ++o) {
    const float v = scale[o] * static_cast<float>(mul * acc32[o] - offc);
    out[o] = bias ? v + bias[o] : v;
  }
}

// Writes the channels-last block buf [npix, ldb] (outputs o0.. o0+width) into y's NCHW planes
// (plane stride OP) starting at pixel pix0.
inline void store_nchw(const float* buf, int64_t npix, int64_t ldb, int64_t width, float* y,
                       int64_t OP, int64_t pix0) {
  for (int64_t o = 0; o < width; ++o) {
    float* dst = y + o * OP + pix0;
    int64_t q = 0;
#if defined(__AVX512F__)
    const __m512i step = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(static_cast<int32_t>(ldb)));
    for (; q + 16 <= npix; q += 16)
      _mm512_storeu_ps(dst + q, _mm512_i32gather_ps(step, buf + q * ldb + o, 4));
#endif
    for (; q < npix; ++q) dst[q] = buf[q * ldb + o];
  }
}

// The whole convolution. wk: chunked kernel rows (ld = nch * 64 bytes); map: null (row
// c*KK + t) or the pruned layout's row map [C*KK] (-1: dropped). scale [O] (one group).
template <int BITS>
void run(const PackedConv2dParams& p, const float* x, const uint8_t* wk, const int32_t* map,
         const float* scale, const float* bias, float* y) {
  constexpr int64_t CO = kChunk * 8 / BITS;  // outputs per chunk
  const int64_t C = p.C, HW = p.H * p.W, KKs = p.KH * p.KW, KK = C * KKs, O = p.O;
  const int64_t OP = p.OH * p.OW, nch = num_chunks(O, BITS), ld = nch * kChunk;
  const CacheSizes& cs = cache_sizes();
  // Output tile in registers: 2 chunks where 2 chunks' uint8 + uint16 accumulators fit in the
  // 32 vector registers (bits 8 and 4), else 1.
  constexpr int kTileChunks = BITS >= 4 ? 2 : 1;
  // Output-channel groups: the kernel rows' bytes of one group stay within half of L2, so the
  // rows walked for every output pixel are L2 hits (one group for the usual layer sizes).
  const int64_t wbytes = std::max<int64_t>(1, KK * ld);
  const int64_t ngroups = std::min<int64_t>(nch, (wbytes + cs.l2 / 2 - 1) / (cs.l2 / 2));
  const int64_t gch = (nch + ngroups - 1) / ngroups;  // chunks per group
  // Output rows per work item: the channels-last block (pixels x group outputs) stays within
  // half of L2 next to the weights; enough blocks that every thread has work.
  const int64_t gw = std::min<int64_t>(O, gch * CO);
  int64_t rb = std::max<int64_t>(1, cs.l2 / 2 / std::max<int64_t>(1, p.OW * gw * 4));
  const int64_t want_items = 4 * static_cast<int64_t>(p.threads);
  if (p.NB * ngroups < want_items)
    rb = std::min(rb, std::max<int64_t>(1, p.OH * p.NB * ngroups / want_items));
  rb = std::min(rb, p.OH);
  const int64_t yblocks = (p.OH + rb - 1) / rb;

  // 1. Event lists per image (parallel over images).
  std::vector<std::vector<int32_t>> ptrs(static_cast<size_t>(p.NB));
  std::vector<Scratch<>> rows(static_cast<size_t>(p.NB));
  std::vector<int64_t> nev(static_cast<size_t>(p.NB));
  const int lt = threads_for(p.NB * C * HW, p.threads);
  event::parallel_items(p.NB, lt, [&](int64_t b) {
    static thread_local Scratch<> tmp;
    nev[b] = list_pixels(x + b * C * HW, C, HW, KKs, tmp, ptrs[b], rows[b]);
  });
  int64_t events = 0;
  for (const int64_t e : nev) events += e;
  // 2. Outputs: items (image, output group, block of output rows).
  const int nt = threads_for(events * KKs * O / 8 + p.NB * OP * O, p.threads);
  event::parallel_items(p.NB * ngroups * yblocks, nt, [&](int64_t item) {
    const int64_t yb = item % yblocks, g = (item / yblocks) % ngroups, b = item / (yblocks * ngroups);
    const int64_t q0 = g * gch, q1 = std::min(nch, q0 + gch);
    const int64_t o0 = q0 * CO, o1 = std::min(O, q1 * CO), width = o1 - o0;
    if (width <= 0) return;
    const int64_t y0 = yb * rb, y1 = std::min(p.OH, y0 + rb);
    static thread_local Scratch<> flat_s, acc_s;
    static thread_local Scratch<float> buf_s;
    int32_t* flat = flat_s.get(KK + kSlack);
    float* buf = buf_s.get((y1 - y0) * p.OW * width + 16);
    int32_t* acc32 = acc_s.get(kTileChunks * CO + 16);
    const int32_t* ptr = ptrs[b].data();
    const int32_t* ev = rows[b].data.get();
    const int64_t ldb = width;
    for (int64_t oy = y0; oy < y1; ++oy) {
      for (int64_t ox = 0; ox < p.OW; ++ox) {
        int k = 0;
        for (int64_t ky = 0; ky < p.KH; ++ky) {
          const int64_t iy = oy * p.sh - p.ph + ky * p.dh;
          if (iy < 0 || iy >= p.H) continue;
          for (int64_t kx = 0; kx < p.KW; ++kx) {
            const int64_t ix = ox * p.sw - p.pw + kx * p.dw;
            if (ix < 0 || ix >= p.W) continue;
            const int64_t q = iy * p.W + ix;
            k += append_rows(flat + k, ev + ptr[q], ptr[q + 1] - ptr[q],
                             static_cast<int32_t>(ky * p.KW + kx), map);
          }
        }
        float* out = buf + ((oy - y0) * p.OW + ox) * ldb;
        for (int64_t q = q0; q < q1; q += kTileChunks) {
          const int64_t qn = std::min<int64_t>(kTileChunks, q1 - q);
          const int64_t ta = (q - q0) * CO, tw = std::min(o1, (q + qn) * CO) - q * CO;
          std::memset(acc32, 0, sizeof(int32_t) * qn * CO);
          if (qn == 2) accumulate<BITS, 2>(wk, ld, q * kChunk, flat, k, acc32);
          else accumulate<BITS, 1>(wk, ld, q * kChunk, flat, k, acc32);
          fold<BITS>(acc32, tw, k, scale + o0 + ta, bias ? bias + o0 + ta : nullptr, out + ta);
        }
      }
    }
    store_nchw(buf, (y1 - y0) * p.OW, ldb, width, y + (b * O + o0) * OP, OP, y0 * p.OW);
  });
}

inline void dispatch(const PackedConv2dParams& p, const float* x, const uint8_t* wk,
                     const int32_t* map, const float* scale, const float* bias, float* y) {
  if (p.NB == 0 || p.O == 0 || p.OH == 0 || p.OW == 0) return;
  switch (p.bits) {
    case 8: run<8>(p, x, wk, map, scale, bias, y); break;
    case 4: run<4>(p, x, wk, map, scale, bias, y); break;
    case 2: run<2>(p, x, wk, map, scale, bias, y); break;
    default: run<1>(p, x, wk, map, scale, bias, y); break;
  }
}

}  // namespace conv_gather
}  // namespace sparsesnn
