// The sparsesnn plan file format (".ssnnp"), version 1: the one specification. Written by
// sparsesnn/runtime/_format.py, read by plan.cpp. Everything is little-endian, unpadded.
//
//   (The name is a convention, not checked: the magic decides. A model file written by
//   sparsesnn.deploy.save, ".ssnn", starts with "SSNNMODL" and is refused with a hint.)
//   file    = header, op[n_ops], u32 checksum
//   header  = char magic[8] = "SSNNPLAN"
//             u32 version (= 1)        u32 flags (= 0)
//             u32 T (timesteps, 1..65536)
//             u32 input_time_major     (1: input [T, B, dims...]; 0: [B, dims...])
//             u32 input_rank (1..6)    i64 input_dims[input_rank] (per sample, no T, no batch)
//             u32 n_ops (1..4096)
//   op      = u32 kind, u64 payload_bytes, payload (read with bounds checks; must be consumed
//             exactly)
//   tensor  = u8 dtype (0 f32, 1 i32, 2 u16, 3 u8, 4 i8), u64 count, count elements
//   checksum = CRC-32 (IEEE 802.3, as zlib.crc32) of every byte before it (detects truncation
//             and bit flips; the
//             loader also validates every size and index, so a crafted file cannot make the
//             kernels read out of bounds).
//
// Ops (the current value is [T?, B, dims...]; "T?" present once an op made it time-major):
//   1 ENCODE_THRESHOLD  tensor f32 thr[T]. [B, d] -> [T, B, d], s[t] = (x > thr[t]) ? 1 : 0.
//   2 REPEAT            [B, d] -> [T, B, d] (the same input at every step).
//   3 LINEAR            u32 K, N, bits (32, 8, 4, 2, 1), group_size, layout (0 dense, 1 pruned),
//                       input_mode (0 auto, 1 spike, 2 analog), f32 dense_threshold;
//                       tensor scale f32 [N*G] (empty for bits 32), tensor bias f32 [N] or [0];
//                       dense:  tensor weights (u8 [K*ceil(N*bits/8)], or f32 [K*N] input-major)
//                       pruned: tensor row_ptr i32 [K+1], tensor index (u16 or i32) [nnz],
//                               tensor values (f32 [nnz] or u8 [ceil(nnz*bits/8)]),
//                               u32 has_blocks, then if 1: tensors block_ptr i32 [K+1],
//                               block_id u16 [nb], block_mask u16 [nb], block_code i32 [nb],
//                               codes i8 [nnz+16] (pruned_blocks.h).
//                       [.., K] -> [.., N]. G = ceil(K / group) groups of inputs.
//   4 CONV2D            u32 C, O, KH, KW, sh, sw, ph, pw, dh, dw, bits, group_size, input_mode,
//                       f32 dense_threshold; tensors scale f32 [O*G], bias f32 [O] or [0],
//                       weights (u8 [C*KH*KW*ceil(O*bits/8)] or f32 [C*KH*KW*O]).
//                       [.., C, H, W] -> [.., O, OH, OW].
//   5 NEURON            u32 leak, hard_reset, decay_input; f32 decay, v_threshold, v_reset;
//                       u32 fixed_point, rounding, seed; f32 state_step, state_min, state_max.
//                       LIF/IF/PLIF over all T steps from the reset state (needs time-major).
//   6 FLATTEN           per-sample dims -> one dim.
//   7 MEAN_T            [T, B, d] -> [B, d] (mean over time).
//   8 MAX_POOL2D        u32 kh, kw, sh, sw, ph, pw. [.., C, H, W] -> [.., C, OH, OW]
//   9 AVG_POOL2D        as 8; zero padding counted (PyTorch's count_include_pad=True).
//  10 SAVE              u32 slot (0..15): remember the current value.
//  11 ADD               u32 slot: current = saved + current (same shape).
//  12 LOAD              u32 slot: current = saved value.
//  13 MUL               u32 slot: current = saved * current (SEW "AND").
//  14 IAND              u32 slot: current = (1 - saved) * current (SEW "IAND").
//  15 ADAPTIVE_AVG_POOL2D  u32 oh, ow: PyTorch's adaptive windows [floor(i*H/oh), ceil((i+1)*H/oh)).
#pragma once
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

namespace sparsesnn {
namespace plan_format {

constexpr char kMagic[8] = {'S', 'S', 'N', 'N', 'P', 'L', 'A', 'N'};
constexpr uint32_t kVersion = 1;
constexpr uint32_t kMaxOps = 4096, kMaxRank = 6, kMaxT = 65536, kSlots = 16;

enum OpKind : uint32_t {
  kEncodeThreshold = 1, kRepeat = 2, kLinear = 3, kConv2d = 4, kNeuron = 5, kFlatten = 6,
  kMeanT = 7, kMaxPool2d = 8, kAvgPool2d = 9, kSave = 10, kAdd = 11, kLoad = 12, kMul = 13,
  kIand = 14, kAdaptiveAvgPool2d = 15,
};
enum DTypeCode : uint8_t { kF32 = 0, kI32 = 1, kU16 = 2, kU8 = 3, kI8 = 4 };

inline size_t dtype_size(uint8_t d) {
  switch (d) {
    case kF32: case kI32: return 4;
    case kU16: return 2;
    case kU8: case kI8: return 1;
    default: return 0;
  }
}

inline uint32_t crc32(const uint8_t* p, size_t n) {
  static const auto table = [] {
    struct T { uint32_t v[256]; } t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t.v[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) c = table.v[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

// Thrown by the reader and validators; the C ABI turns it into SSNN_ERR_FORMAT.
struct FormatError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Bounds-checked little-endian reader over [p, p + n).
class Reader {
 public:
  Reader(const uint8_t* p, size_t n, std::string what) : p_(p), n_(n), what_(std::move(what)) {}
  size_t left() const { return n_ - pos_; }
  size_t pos() const { return pos_; }
  const uint8_t* take(size_t k, const char* field) {
    if (k > left())
      throw FormatError(what_ + ": truncated while reading " + field + " (needs " +
                        std::to_string(k) + " bytes at offset " + std::to_string(pos_) + ", " +
                        std::to_string(left()) + " left)");
    const uint8_t* q = p_ + pos_;
    pos_ += k;
    return q;
  }
  template <typename U>
  U get(const char* field) {
    U v;
    std::memcpy(&v, take(sizeof(U), field), sizeof(U));  // hosts are little-endian (checked)
    return v;
  }
  uint32_t u32(const char* f) { return get<uint32_t>(f); }
  float f32(const char* f) { return get<float>(f); }

 private:
  const uint8_t* p_;
  size_t n_, pos_ = 0;
  std::string what_;
};

}  // namespace plan_format
}  // namespace sparsesnn
