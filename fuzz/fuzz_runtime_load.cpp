// libFuzzer harness for the native runtime's plan loader (csrc/runtime, C ABI).
//
// Every input is loaded with ssnn_load_memory; the CRC-32 trailer is first recomputed over the
// mutated bytes, otherwise nearly every mutation would stop at the checksum and the parser
// behind it would go unexercised. A plan that loads is run once on a small input when its work
// is small (the loader accepts T up to 65,536 and large layers, which are valid but take
// seconds to minutes to run under ASan: the fuzzer's target is the loader), then freed.
//
//   fuzz/build_runtime_fuzzer.sh && /tmp/fuzz_runtime_load fuzz/runtime_corpus -runs=1000000
#include <cstdint>
#include <cstring>
#include <vector>

#include "format.h"
#include "plan.h"
#include "sparsesnn_runtime.h"

namespace {

namespace F = sparsesnn::plan_format;

// Work of one batch-1 call, saturating at `cap`: multiply-accumulates plus activations, plus
// 1,000 per op and time step (each step of each op is a kernel call; under ASan a plan of 8 ops
// over T = 32,770 steps with tiny layers ran 10 s).
int64_t work_of(const sparsesnn::runtime::Plan& p, int64_t cap) {
  int64_t w = 0;
  for (const auto& op : p.ops) {
    const int64_t rows = op.in.time ? p.T : 1, out = (op.out.time ? p.T : 1) * op.out.numel();
    w += 1000 * rows;
    int64_t per_out = 1;  // inputs read per output value
    if (op.kind == F::kLinear) per_out = op.lin.K;
    if (op.kind == F::kConv2d) per_out = int64_t(op.conv.C) * op.conv.KH * op.conv.KW;
    if (op.kind == F::kMaxPool2d || op.kind == F::kAvgPool2d) per_out = int64_t(op.kh) * op.kw;
    if (op.kind == F::kAdaptiveAvgPool2d) per_out = op.in.numel() / op.in.dims[0];
    if (per_out > cap || out > cap / per_out) return cap;
    w += out * per_out + rows * op.in.numel();
    if (w >= cap) return cap;
  }
  return w;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> buf(data, data + size);
  if (buf.size() >= 4) {
    const uint32_t crc = F::crc32(buf.data(), buf.size() - 4);
    std::memcpy(buf.data() + buf.size() - 4, &crc, 4);  // little-endian hosts only (x86-64)
  }
  ssnn_model* m = nullptr;
  if (ssnn_load_memory(buf.data(), buf.size(), &m) != SSNN_OK) return 0;
  // The same bytes loaded, so the C++ loader accepts them too: read the plan's work from it.
  const auto plan = sparsesnn::runtime::Plan::load(buf.data(), buf.size());
  const int64_t cap = int64_t(1) << 23;
  int64_t in_dims[8], out_dims[8];
  int in_rank = 0, out_rank = 0, batch_axis = 0;
  int64_t in_n = 1, out_n = 1;
  if (work_of(*plan, cap) < cap && ssnn_input_shape(m, in_dims, 8, &in_rank, &batch_axis) == SSNN_OK &&
      ssnn_output_shape(m, out_dims, 8, &out_rank, &batch_axis) == SSNN_OK) {
    for (int i = 0; i < in_rank; ++i) in_n *= in_dims[i];
    for (int i = 0; i < out_rank; ++i) out_n *= out_dims[i];
    if (in_n > 0 && out_n > 0 && in_n <= (1 << 16) && out_n <= (1 << 16)) {
      std::vector<float> x(static_cast<size_t>(in_n)), y(static_cast<size_t>(out_n));
      for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 2654435761u) % 7) / 3.0f;
      ssnn_run(m, x.data(), 1, y.data(), 1);
    }
  }
  ssnn_free(m);
  return 0;
}
