// Loader of the plan format (format.h): parse, then validate every size and index so that the
// kernels, which trust their inputs, can never be driven out of bounds by a file.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "format.h"
#include "plan.h"
#include "sparsesnn/pack.h"

namespace sparsesnn {
namespace runtime {
namespace {

using plan_format::FormatError;
using plan_format::Reader;
namespace F = plan_format;

constexpr int64_t kMaxElems = int64_t(1) << 40;  // no single dimension product beyond this
// run() keeps every op's output (T rows for time-major ones) per sample: a file may declare at
// most 2^32 floats (16 GiB) of them, so an absurd T or shape is a clear error at load, not an
// allocator failure (or an out-of-memory kill) at the first call.
constexpr int64_t kMaxWorkspaceFloats = int64_t(1) << 32;

[[noreturn]] void fail(const std::string& where, const std::string& msg) {
  throw FormatError(where + ": " + msg);
}

int64_t checked_mul(int64_t a, int64_t b, const std::string& where) {
  if (a < 0 || b < 0 || (a && b > kMaxElems / a)) fail(where, "sizes overflow");
  return a * b;
}

// A zeroed, 64-byte aligned blob of `nbytes` (+ 64 bytes of slack, as read_blob).
Blob zeroed_blob(uint8_t dtype, int64_t count, size_t nbytes) {
  Blob b;
  b.dtype = dtype;
  b.count = count;
  const size_t total = ((nbytes + 64) + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, total);
  if (!p) throw std::bad_alloc();
  std::memset(p, 0, total);
  b.mem = std::shared_ptr<uint8_t>(static_cast<uint8_t*>(p), [](uint8_t* q) { std::free(q); });
  return b;
}

// The gather conv kernel's layout (packed_conv2d.h, as sparsesnn/ops/packed_conv2d.py's
// chunked_rows): in 64-byte chunk q of a row, bits [s*bits, (s+1)*bits) of byte j hold the
// stored code of output q*(512/bits) + s*64 + j; packed rows hold output o in byte o/per at
// bit (o%per)*bits. Padding outputs stay 0.
Blob chunked_conv_rows(const Blob& rows, int64_t R, int64_t O, int bits) {
  const int per = 8 / bits, cw = 64 * per;
  const int64_t nch = std::max<int64_t>(1, (O + cw - 1) / cw), rb = packed_row_bytes(O, bits);
  Blob out = zeroed_blob(F::kU8, R * nch * 64, static_cast<size_t>(R * nch * 64));
  uint8_t* dst = const_cast<uint8_t*>(out.as<uint8_t>());
  const uint8_t* src = rows.as<uint8_t>();
  const int mask = (1 << bits) - 1;
  for (int64_t r = 0; r < R; ++r)
    for (int64_t o = 0; o < O; ++o) {
      const int code = (src[r * rb + o / per] >> ((o % per) * bits)) & mask;
      const int64_t q = o / cw, s = (o % cw) / 64, j = o % 64;
      dst[r * nch * 64 + q * 64 + j] |= static_cast<uint8_t>(code << (s * bits));
    }
  return out;
}

// A conv layer written as dense rows whose dropped tap rows (every code the stored zero) make
// the pruned layout smaller -- the layout deploy chose for the module -- also gets the pruned
// gather kernel's form of its kept rows, so the plan runs the kernel the eager module runs.
void prune_conv_rows(Op& op, int64_t rows) {
  const PackedConv2dParams& p = op.conv;
  const int bits = p.bits;
  if (bits == 1) return;  // binary codes cannot hold a zero weight: nothing was dropped
  const int per = 8 / bits, mask = (1 << bits) - 1, zero = code_off(bits);
  const int64_t rb = packed_row_bytes(p.O, bits);
  const uint8_t* src = op.weights.as<uint8_t>();
  std::vector<int32_t> map(static_cast<size_t>(rows), -1);
  int64_t kept = 0;
  for (int64_t r = 0; r < rows; ++r) {
    bool dropped = true;
    for (int64_t o = 0; o < p.O && dropped; ++o)
      dropped = ((src[r * rb + o / per] >> ((o % per) * bits)) & mask) == zero;
    if (!dropped) map[r] = static_cast<int32_t>(kept++);
  }
  if (kept * (rb + 4) >= rows * rb) return;  // as deploy's choice by bytes: dense rows
  Blob kept_rows = zeroed_blob(F::kU8, kept * rb, static_cast<size_t>(kept * rb));
  uint8_t* dst = const_cast<uint8_t*>(kept_rows.as<uint8_t>());
  for (int64_t r = 0; r < rows; ++r)
    if (map[r] >= 0) std::memcpy(dst + map[r] * rb, src + r * rb, static_cast<size_t>(rb));
  op.pruned_chunked = chunked_conv_rows(kept_rows, kept, p.O, bits);
  op.row_map = zeroed_blob(F::kI32, rows, static_cast<size_t>(rows) * 4);
  std::memcpy(const_cast<int32_t*>(op.row_map.as<int32_t>()), map.data(), static_cast<size_t>(rows) * 4);
}

Blob read_blob(Reader& r, const std::string& where, const char* name) {
  Blob b;
  b.dtype = r.get<uint8_t>(name);
  const size_t es = F::dtype_size(b.dtype);
  if (!es) fail(where, std::string(name) + ": unknown dtype code " + std::to_string(b.dtype));
  const uint64_t count = r.get<uint64_t>(name);
  if (count > static_cast<uint64_t>(r.left() / es))
    fail(where, std::string(name) + ": " + std::to_string(count) + " elements exceed the " +
                    std::to_string(r.left()) + " bytes left");
  b.count = static_cast<int64_t>(count);
  const size_t nbytes = static_cast<size_t>(count) * es;
  // 64 bytes of zeroed slack: vector loads near the end stay inside the allocation.
  void* p = std::aligned_alloc(64, ((nbytes + 64) + 63) / 64 * 64);
  if (!p) throw std::bad_alloc();
  std::memset(p, 0, ((nbytes + 64) + 63) / 64 * 64);
  std::memcpy(p, r.take(nbytes, name), nbytes);
  b.mem = std::shared_ptr<uint8_t>(static_cast<uint8_t*>(p), [](uint8_t* q) { std::free(q); });
  return b;
}

void expect(const Blob& b, uint8_t dtype, int64_t count, const std::string& where, const char* name) {
  if (b.dtype != dtype || b.count != count)
    fail(where, std::string(name) + ": expected dtype " + std::to_string(dtype) + " and " +
                    std::to_string(count) + " elements, got dtype " + std::to_string(b.dtype) +
                    " and " + std::to_string(b.count));
}

uint32_t read_u32_in(Reader& r, const char* name, uint32_t lo, uint32_t hi, const std::string& where) {
  const uint32_t v = r.u32(name);
  if (v < lo || v > hi)
    fail(where, std::string(name) + ": expected " + std::to_string(lo) + ".." +
                    std::to_string(hi) + ", got " + std::to_string(v));
  return v;
}

float read_finite(Reader& r, const char* name, const std::string& where) {
  const float v = r.f32(name);
  if (!std::isfinite(v)) fail(where, std::string(name) + ": not finite");
  return v;
}

bool valid_bits(uint32_t b) { return b == 32 || b == 8 || b == 4 || b == 2 || b == 1; }

int64_t num_groups(int64_t K, int64_t group) {
  const int64_t g = (group <= 0 || group >= K) ? K : group;
  return g ? (K + g - 1) / g : 1;
}

void read_scale_bias(Reader& r, Op& op, int bits, int64_t N, int64_t K, int64_t group,
                     const std::string& where) {
  op.scale = read_blob(r, where, "scale");
  expect(op.scale, F::kF32, bits == 32 ? 0 : checked_mul(N, num_groups(K, group), where), where, "scale");
  op.bias = read_blob(r, where, "bias");
  if (op.bias.count != 0) expect(op.bias, F::kF32, N, where, "bias");
  if (op.bias.dtype != F::kF32) fail(where, "bias: expected dtype f32");
}

void read_linear(Reader& r, Op& op, const std::string& where) {
  const int64_t K = read_u32_in(r, "K", 1, 1u << 30, where);
  const int64_t N = read_u32_in(r, "N", 1, 1u << 30, where);
  const uint32_t bits = r.u32("bits");
  if (!valid_bits(bits)) fail(where, "bits: expected 32, 8, 4, 2 or 1, got " + std::to_string(bits));
  const int64_t group = r.u32("group_size");
  op.layout = static_cast<int>(read_u32_in(r, "layout", 0, 1, where));
  op.input_mode = static_cast<int>(read_u32_in(r, "input_mode", 0, 2, where));
  op.dense_threshold = read_finite(r, "dense_threshold", where);
  if (op.in.dims.empty() || op.in.dims.back() != K)
    fail(where, "input: expected last dim " + std::to_string(K));
  read_scale_bias(r, op, bits, N, K, group, where);
  op.lin.K = op.pruned.K = K;
  op.lin.N = op.pruned.N = N;
  op.lin.bits = op.pruned.bits = static_cast<int>(bits);
  op.lin.group_size = op.pruned.group_size = group;
  if (op.layout == 0) {
    op.weights = read_blob(r, where, "weights");
    if (bits == 32) expect(op.weights, F::kF32, checked_mul(K, N, where), where, "weights");
    else expect(op.weights, F::kU8, checked_mul(K, packed_row_bytes(N, bits), where), where, "weights");
  } else {
    op.row_ptr = read_blob(r, where, "row_ptr");
    expect(op.row_ptr, F::kI32, K + 1, where, "row_ptr");
    const int32_t* rp = op.row_ptr.as<int32_t>();
    if (rp[0] != 0) fail(where, "row_ptr[0]: expected 0");
    for (int64_t k = 0; k < K; ++k)
      if (rp[k + 1] < rp[k]) fail(where, "row_ptr: not non-decreasing at " + std::to_string(k));
    const int64_t nnz = rp[K];
    op.index = read_blob(r, where, "index");
    if (op.index.dtype != F::kU16 && op.index.dtype != F::kI32) fail(where, "index: expected u16 or i32");
    expect(op.index, op.index.dtype, nnz, where, "index");
    op.pruned.index16 = op.index.dtype == F::kU16;
    for (int64_t k = 0; k < K; ++k)
      for (int64_t j = rp[k]; j < rp[k + 1]; ++j) {
        const int64_t n = op.pruned.index16 ? op.index.as<uint16_t>()[j] : op.index.as<int32_t>()[j];
        const int64_t prev = j > rp[k] ? (op.pruned.index16 ? op.index.as<uint16_t>()[j - 1]
                                                            : op.index.as<int32_t>()[j - 1]) : -1;
        if (n < 0 || n >= N || n <= prev)
          fail(where, "index: entry " + std::to_string(j) + " out of range or not ascending");
      }
    op.values = read_blob(r, where, "values");
    if (bits == 32) expect(op.values, F::kF32, nnz, where, "values");
    else expect(op.values, F::kU8, packed_row_bytes(nnz, bits), where, "values");
    op.has_blocks = read_u32_in(r, "has_blocks", 0, 1, where) == 1;
    if (op.has_blocks) {
      if (bits == 32) fail(where, "blocks: given for fp32 values");
      const int64_t NB = (N + 15) / 16;
      if (NB > 65536) fail(where, "blocks: more than 16 * 65536 outputs");
      op.block_ptr = read_blob(r, where, "block_ptr");
      expect(op.block_ptr, F::kI32, K + 1, where, "block_ptr");
      const int32_t* bp = op.block_ptr.as<int32_t>();
      if (bp[0] != 0) fail(where, "block_ptr[0]: expected 0");
      for (int64_t k = 0; k < K; ++k)
        if (bp[k + 1] < bp[k]) fail(where, "block_ptr: not non-decreasing");
      const int64_t nb = bp[K];
      op.block_id = read_blob(r, where, "block_id");
      expect(op.block_id, F::kU16, nb, where, "block_id");
      op.block_mask = read_blob(r, where, "block_mask");
      expect(op.block_mask, F::kU16, nb, where, "block_mask");
      op.block_code = read_blob(r, where, "block_code");
      expect(op.block_code, F::kI32, nb, where, "block_code");
      op.codes = read_blob(r, where, "codes");
      expect(op.codes, F::kI8, nnz + 16, where, "codes");
      for (int64_t b = 0; b < nb; ++b) {
        const int64_t id = op.block_id.as<uint16_t>()[b], c = op.block_code.as<int32_t>()[b];
        const int pc = __builtin_popcount(op.block_mask.as<uint16_t>()[b]);
        // The kernel accumulates into 16 outputs at 16*id and reads 16 codes from c.
        if (id >= NB || c < 0 || c + std::max(pc, 16) > nnz + 16)
          fail(where, "blocks: entry " + std::to_string(b) + " out of range");
      }
    }
  }
  op.out = op.in;
  op.out.dims.back() = N;
}

void read_conv(Reader& r, Op& op, const std::string& where) {
  auto& p = op.conv;
  p.C = read_u32_in(r, "C", 1, 1u << 20, where);
  p.O = read_u32_in(r, "O", 1, 1u << 20, where);
  p.KH = read_u32_in(r, "KH", 1, 1024, where);
  p.KW = read_u32_in(r, "KW", 1, 1024, where);
  p.sh = read_u32_in(r, "sh", 1, 1024, where);
  p.sw = read_u32_in(r, "sw", 1, 1024, where);
  p.ph = read_u32_in(r, "ph", 0, 1024, where);
  p.pw = read_u32_in(r, "pw", 0, 1024, where);
  p.dh = read_u32_in(r, "dh", 1, 1024, where);
  p.dw = read_u32_in(r, "dw", 1, 1024, where);
  const uint32_t bits = r.u32("bits");
  if (!valid_bits(bits)) fail(where, "bits: expected 32, 8, 4, 2 or 1");
  p.bits = static_cast<int>(bits);
  p.group_size = r.u32("group_size");
  op.input_mode = static_cast<int>(read_u32_in(r, "input_mode", 0, 2, where));
  op.dense_threshold = read_finite(r, "dense_threshold", where);
  const auto& d = op.in.dims;
  if (d.size() != 3 || d[0] != p.C) fail(where, "input: expected per-sample [C, H, W] with C = " + std::to_string(p.C));
  p.H = d[1];
  p.W = d[2];
  p.OH = (p.H + 2 * p.ph - p.dh * (p.KH - 1) - 1) / p.sh + 1;
  p.OW = (p.W + 2 * p.pw - p.dw * (p.KW - 1) - 1) / p.sw + 1;
  if (p.H + 2 * p.ph < p.dh * (p.KH - 1) + 1 || p.W + 2 * p.pw < p.dw * (p.KW - 1) + 1)
    fail(where, "input: spatial size smaller than the (dilated) kernel");
  const int64_t rows = checked_mul(checked_mul(p.C, p.KH, where), p.KW, where);
  read_scale_bias(r, op, p.bits, p.O, rows, p.group_size, where);
  op.weights = read_blob(r, where, "weights");
  if (bits == 32) expect(op.weights, F::kF32, checked_mul(rows, p.O, where), where, "weights");
  else expect(op.weights, F::kU8, checked_mul(rows, packed_row_bytes(p.O, bits), where), where, "weights");
  if (bits != 32 && (p.group_size <= 0 || p.group_size >= rows)) {  // one scale group: gather kernel
    op.chunked = chunked_conv_rows(op.weights, rows, p.O, p.bits);
    prune_conv_rows(op, rows);
  }
  op.out = op.in;
  op.out.dims = {p.O, p.OH, p.OW};
}

void read_neuron(Reader& r, Op& op, const std::string& where) {
  auto& p = op.lif;
  p.leak = read_u32_in(r, "leak", 0, 1, where);
  p.hard_reset = read_u32_in(r, "hard_reset", 0, 1, where);
  p.decay_input = read_u32_in(r, "decay_input", 0, 1, where);
  p.decay = read_finite(r, "decay", where);
  p.v_threshold = read_finite(r, "v_threshold", where);
  p.v_reset = read_finite(r, "v_reset", where);
  const bool fixed = read_u32_in(r, "fixed_point", 0, 1, where);
  p.state_rounding = static_cast<int>(read_u32_in(r, "rounding", 0, 2, where));
  p.seed = r.u32("seed");
  const float step = read_finite(r, "state_step", where), lo = read_finite(r, "state_min", where),
              hi = read_finite(r, "state_max", where);
  if (fixed) {
    if (!(step > 0.0f) || lo > hi) fail(where, "fixed point: expected step > 0 and min <= max");
    p.state_step = step;
    p.state_min = lo;
    p.state_max = hi;
  }
  p.detach_reset = false;
  if (!op.in.time) fail(where, "a neuron needs a time-major input (an encoder or REPEAT before it)");
  op.out = op.in;
}

void read_pool(Reader& r, Op& op, const std::string& where) {
  op.kh = static_cast<int>(read_u32_in(r, "kh", 1, 1024, where));
  op.kw = static_cast<int>(read_u32_in(r, "kw", 1, 1024, where));
  op.sh = static_cast<int>(read_u32_in(r, "sh", 1, 1024, where));
  op.sw = static_cast<int>(read_u32_in(r, "sw", 1, 1024, where));
  op.ph = static_cast<int>(read_u32_in(r, "ph", 0, 512, where));
  op.pw = static_cast<int>(read_u32_in(r, "pw", 0, 512, where));
  const auto& d = op.in.dims;
  if (d.size() != 3) fail(where, "input: expected per-sample [C, H, W]");
  if (2 * op.ph > op.kh || 2 * op.pw > op.kw) fail(where, "padding: at most half the kernel");
  if (d[1] + 2 * op.ph < op.kh || d[2] + 2 * op.pw < op.kw) fail(where, "input: smaller than the kernel");
  op.out = op.in;
  op.out.dims = {d[0], (d[1] + 2 * op.ph - op.kh) / op.sh + 1, (d[2] + 2 * op.pw - op.kw) / op.sw + 1};
}

}  // namespace

int64_t Blob::bytes() const { return count * static_cast<int64_t>(F::dtype_size(dtype)); }

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

std::unique_ptr<Plan> Plan::load(const uint8_t* data, size_t size) {
  {
    const uint16_t probe = 1;
    uint8_t first;
    std::memcpy(&first, &probe, 1);
    if (first != 1) throw FormatError("this runtime needs a little-endian host");
  }
  if (size >= 8 && std::memcmp(data, "SSNNMODL", 8) == 0)
    throw FormatError("this is a sparsesnn model file (sparsesnn.deploy.save), not a native plan: "
                      "load it with sparsesnn.deploy.load and write a plan with sparsesnn.runtime.export");
  if (size < 8 || std::memcmp(data, F::kMagic, 8) != 0)
    throw FormatError("not a sparsesnn plan file (bad magic; expected \"SSNNPLAN\")");
  if (size < 8 + 8 + 8) throw FormatError("plan file truncated (" + std::to_string(size) + " bytes)");
  {
    Reader hr(data + 8, size - 8, "header");
    const uint32_t version = hr.u32("version");
    if (version != F::kVersion)
      throw VersionError("plan format version " + std::to_string(version) +
                         " is not supported (this runtime reads version " +
                         std::to_string(F::kVersion) + ")");
  }
  uint32_t stored;
  std::memcpy(&stored, data + size - 4, 4);
  if (F::crc32(data, size - 4) != stored)
    throw FormatError("plan file corrupted or truncated (checksum mismatch)");

  Reader r(data + 8, size - 12, "header");
  auto plan = std::make_unique<Plan>();
  r.u32("version");
  if (r.u32("flags") != 0) throw FormatError("header: unknown flags");
  plan->T = read_u32_in(r, "T", 1, F::kMaxT, "header");
  Shape cur;
  cur.time = read_u32_in(r, "input_time_major", 0, 1, "header");
  const uint32_t rank = read_u32_in(r, "input_rank", 1, F::kMaxRank, "header");
  int64_t numel = 1;
  for (uint32_t i = 0; i < rank; ++i) {
    const int64_t d = r.get<int64_t>("input_dims");
    if (d < 1 || d > (int64_t(1) << 31)) throw FormatError("header: input dim out of range");
    numel = checked_mul(numel, d, "header");
    cur.dims.push_back(d);
  }
  plan->input = cur;
  const uint32_t n_ops = read_u32_in(r, "n_ops", 1, F::kMaxOps, "header");
  bool binary = false;
  int64_t workspace = 0;  // floats per sample, as Plan::execute allocates them
  std::vector<Shape> slots(F::kSlots);
  std::vector<bool> slot_set(F::kSlots, false), slot_binary(F::kSlots, false);
  for (uint32_t i = 0; i < n_ops; ++i) {
    const std::string where = "op " + std::to_string(i);
    Op op;
    op.kind = r.u32("op kind");
    const uint64_t len = r.get<uint64_t>("op payload size");
    Reader pr(r.take(len > r.left() ? r.left() + 1 : static_cast<size_t>(len), "op payload"),
              static_cast<size_t>(len), where);
    op.in = cur;
    op.in_binary = binary;
    switch (op.kind) {
      case F::kEncodeThreshold:
        if (cur.time) fail(where, "encoder: input is already time-major");
        op.thr = read_blob(pr, where, "thresholds");
        expect(op.thr, F::kF32, plan->T, where, "thresholds");
        op.out = cur;
        op.out.time = true;
        binary = true;
        break;
      case F::kRepeat:
        if (cur.time) fail(where, "repeat: input is already time-major");
        op.out = cur;
        op.out.time = true;
        break;
      case F::kLinear:
        read_linear(pr, op, where);
        binary = false;
        break;
      case F::kConv2d:
        read_conv(pr, op, where);
        binary = false;
        break;
      case F::kNeuron:
        read_neuron(pr, op, where);
        binary = true;
        break;
      case F::kFlatten:
        op.out = cur;
        op.out.dims = {cur.numel()};
        break;
      case F::kMeanT:
        if (!cur.time) fail(where, "mean over time: input has no time dimension");
        op.out = cur;
        op.out.time = false;
        binary = false;
        break;
      case F::kMaxPool2d:
        read_pool(pr, op, where);
        break;
      case F::kAvgPool2d:
        read_pool(pr, op, where);
        binary = false;
        break;
      case F::kAdaptiveAvgPool2d: {
        const int64_t oh = read_u32_in(pr, "oh", 1, 1u << 20, where), ow = read_u32_in(pr, "ow", 1, 1u << 20, where);
        if (cur.dims.size() != 3) fail(where, "input: expected per-sample [C, H, W]");
        op.out = cur;
        op.out.dims = {cur.dims[0], oh, ow};
        binary = false;
        break;
      }
      case F::kSave:
      case F::kAdd:
      case F::kLoad:
      case F::kMul:
      case F::kIand: {
        op.slot = read_u32_in(pr, "slot", 0, F::kSlots - 1, where);
        op.out = cur;
        if (op.kind == F::kSave) {
          slots[op.slot] = cur;
          slot_set[op.slot] = true;
          slot_binary[op.slot] = binary;
          break;
        }
        if (!slot_set[op.slot]) fail(where, "slot " + std::to_string(op.slot) + " is empty");
        if (op.kind == F::kLoad) {
          op.out = slots[op.slot];
          binary = slot_binary[op.slot];
          break;
        }
        if (slots[op.slot].dims != cur.dims || slots[op.slot].time != cur.time)
          fail(where, "slot " + std::to_string(op.slot) + " has a different shape");
        binary = op.kind == F::kAdd ? false : (binary && slot_binary[op.slot]);
        break;
      }
      default:
        fail(where, "unknown op kind " + std::to_string(op.kind));
    }
    if (pr.left() != 0) fail(where, "payload has " + std::to_string(pr.left()) + " unread bytes");
    if (op.out.numel() < 1 || op.out.numel() > (int64_t(1) << 34)) fail(where, "output size out of range");
    if (op.kind != F::kFlatten && op.kind != F::kSave && op.kind != F::kLoad) {
      workspace += (op.out.time ? plan->T : 1) * op.out.numel() + (op.kind == F::kNeuron ? op.in.numel() : 0);
      if (workspace > kMaxWorkspaceFloats)  // each term < 2^51: the sum cannot overflow first
        fail(where, "activations need " + std::to_string(workspace) + " floats per sample (T = " +
                        std::to_string(plan->T) + "), more than the 2^32 (16 GiB) a plan may declare");
    }
    if (op.kind == F::kLinear && op.has_blocks && op.in_binary && op.input_mode != 2 &&
        op.dense_threshold >= 1.0f) {
      // Spikes in, so only the blocked layout is ever read: drop the compressed rows.
      op.row_ptr = op.index = op.values = Blob();
    }
    for (const Blob* b : {&op.scale, &op.bias, &op.weights, &op.row_ptr, &op.index, &op.values,
                          &op.block_ptr, &op.block_id, &op.block_mask, &op.block_code, &op.codes, &op.chunked,
                          &op.pruned_chunked, &op.row_map})
      if (b->mem) plan->weight_bytes += b->bytes();
    cur = op.out;
    plan->ops.push_back(std::move(op));
  }
  if (r.left() != 0) throw FormatError("plan file has " + std::to_string(r.left()) + " trailing bytes");
  plan->output = cur;
  // Spikes go to an event-driven int4 linear as active-input lists written by their producer
  // (an encoder, a neuron or a max pool of spikes, possibly through FLATTEN, which only renames
  // the dims).
  // SSNN_SPIKE_LISTS=0 keeps dense fp32 spikes everywhere (a diagnostic: bench_runtime.py
  // measures the difference).
  const char* lists_env = std::getenv("SSNN_SPIKE_LISTS");
  const bool use_lists = !(lists_env && std::strcmp(lists_env, "0") == 0);
  for (size_t i = 0; use_lists && i < plan->ops.size(); ++i) {
    Op& src = plan->ops[i];
    const bool pooled_spikes = src.kind == F::kMaxPool2d && src.in_binary;  // max of 0/1 is 0/1
    if (src.kind != F::kEncodeThreshold && src.kind != F::kNeuron && !pooled_spikes) continue;
    size_t j = i + 1;
    while (j < plan->ops.size() && plan->ops[j].kind == F::kFlatten) ++j;
    if (j == plan->ops.size()) continue;
    Op& dst = plan->ops[j];
    if (dst.kind == F::kLinear && dst.layout == 0 && dst.input_mode != 2 && dst.in_binary &&
        event_linear_lists_supported(dst.lin)) {
      src.lists_out = true;
      dst.lists_from = static_cast<int>(i);
      if (src.kind == F::kEncodeThreshold && num_groups(dst.lin.K, dst.lin.group_size) == 1) {
        const float* thr = src.thr.as<float>();
        src.lists_nested = std::is_sorted(thr, thr + plan->T);
      }
    }
  }
  return plan;
}

}  // namespace runtime
}  // namespace sparsesnn
