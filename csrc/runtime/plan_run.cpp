// Executor: all ops, all T steps, in one call. Each op writes its own preallocated buffer in a
// per-call workspace (taken from the plan's pool, so concurrent calls never share one); the
// layers are the kernels of csrc/cpu/ called directly.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "../cpu/parallel.h"
#include "format.h"
#include "plan.h"
#include "sparsesnn/pruned_blocks.h"
#include "sparsesnn/pruned_conv2d.h"
#include "spike_pool.h"

namespace sparsesnn {
namespace runtime {
namespace {

namespace F = plan_format;

int64_t count_nonzero(const float* x, int64_t n) {
  int64_t c = 0;
  for (int64_t i = 0; i < n; ++i) c += x[i] != 0.0f;
  return c;
}

// The eager modules' choice (PackedSpiking*._spike_mode): analog mode or non-binary input ->
// dense path; binary input -> spike kernel unless its density is above dense_threshold.
bool spike_mode(const Op& op, const float* x, int64_t n, const char* name) {
  if (op.input_mode == 2) return false;
  if (n == 0) return true;
  if (!op.in_binary && !is_binary_f32_cpu(x, n)) {
    if (op.input_mode == 1)
      throw InputError(std::string(name) + ": input_mode 'spike' but the input is not binary (0/1)");
    return false;
  }
  if (op.dense_threshold >= 1.0f) return true;
  return static_cast<double>(count_nonzero(x, n)) / static_cast<double>(n) <= op.dense_threshold;
}

void pool2d(const Op& op, bool is_max, const float* x, int64_t planes, float* y, int threads) {
  const int64_t H = op.in.dims[1], W = op.in.dims[2], OH = op.out.dims[1], OW = op.out.dims[2];
  const float div = static_cast<float>(op.kh * op.kw);
  const int nt = threads_for(planes * H * W, threads);
  parallel_chunks(planes, 1, nt, [&](int64_t p0, int64_t p1) {
  for (int64_t pl = p0; pl < p1; ++pl) {
    const float* xp = x + pl * H * W;
    float* yp = y + pl * OH * OW;
    for (int64_t oy = 0; oy < OH; ++oy)
      for (int64_t ox = 0; ox < OW; ++ox) {
        const int64_t y0 = oy * op.sh - op.ph, x0 = ox * op.sw - op.pw;
        float acc = is_max ? -std::numeric_limits<float>::infinity() : 0.0f;
        for (int64_t iy = std::max<int64_t>(y0, 0); iy < std::min<int64_t>(y0 + op.kh, H); ++iy)
          for (int64_t ix = std::max<int64_t>(x0, 0); ix < std::min<int64_t>(x0 + op.kw, W); ++ix) {
            const float v = xp[iy * W + ix];
            acc = is_max ? (v > acc || std::isnan(v) ? v : acc) : acc + v;
          }
        yp[oy * OW + ox] = is_max ? acc : acc / div;
      }
  }
  });
}

void adaptive_avg_pool2d(const Op& op, const float* x, int64_t planes, float* y) {
  const int64_t H = op.in.dims[1], W = op.in.dims[2], OH = op.out.dims[1], OW = op.out.dims[2];
  for (int64_t pl = 0; pl < planes; ++pl) {
    const float* xp = x + pl * H * W;
    for (int64_t oy = 0; oy < OH; ++oy) {
      const int64_t y0 = oy * H / OH, y1 = ((oy + 1) * H + OH - 1) / OH;
      for (int64_t ox = 0; ox < OW; ++ox) {
        const int64_t x0 = ox * W / OW, x1 = ((ox + 1) * W + OW - 1) / OW;
        float acc = 0.0f;
        for (int64_t iy = y0; iy < y1; ++iy)
          for (int64_t ix = x0; ix < x1; ++ix) acc += xp[iy * W + ix];
        y[(pl * OH + oy) * OW + ox] = acc / static_cast<float>((y1 - y0) * (x1 - x0));
      }
    }
  }
}

}  // namespace

void Plan::execute(Workspace& ws, const float* input, int64_t B, float* output, int threads) const {
  if (ws.batch < B) {  // grow once; later calls with this batch or smaller allocate nothing
    ws.out.assign(ops.size(), {});
    ws.vlast.assign(ops.size(), {});
    ws.lists.assign(ops.size(), {});
    for (size_t i = 0; i < ops.size(); ++i) {
      const Op& op = ops[i];
      if (op.kind == F::kFlatten || op.kind == F::kSave || op.kind == F::kLoad) continue;  // aliases
      const int64_t rows = (op.out.time ? T : 1) * B;
      ws.out[i].resize(static_cast<size_t>(rows * op.out.numel()));
      if (op.kind == F::kNeuron) ws.vlast[i].resize(static_cast<size_t>(B * op.in.numel()));
      if (op.lists_out) ws.lists[i].reserve(rows, op.out.numel());
    }
    ws.batch = B;
  }
  const float* cur = input;
  const float* saved[F::kSlots] = {};
  for (size_t i = 0; i < ops.size(); ++i) {
    const Op& op = ops[i];
    const int64_t rows = (op.in.time ? T : 1) * B;
    const int64_t n_in = rows * op.in.numel();
    float* out = ws.out[i].data();
    switch (op.kind) {
      case F::kEncodeThreshold: {
        const int64_t n = B * op.in.numel();
        const float* thr = op.thr.as<float>();
        for (uint32_t t = 0; t < T; ++t)
          for (int64_t j = 0; j < n; ++j) out[t * n + j] = cur[j] > thr[t] ? 1.0f : 0.0f;
        if (op.lists_nested) ws.lists[i].thermometer(cur, thr, T, B, op.out.numel());
        else if (op.lists_out) ws.lists[i].from_dense(out, T * B, op.out.numel(), threads);
        break;
      }
      case F::kRepeat: {
        const int64_t n = B * op.in.numel();
        for (uint32_t t = 0; t < T; ++t) std::memcpy(out + t * n, cur, sizeof(float) * n);
        break;
      }
      case F::kLinear: {
        const int64_t M = rows;
        const float* bias = op.bias.count ? op.bias.as<float>() : nullptr;
        if (op.lists_from >= 0) {  // listed spikes: dense kernel only above dense_threshold
          const SpikeLists& s = ws.lists[op.lists_from];
          PackedLinearParams p = op.lin;
          p.M = M;
          p.threads = threads;
          if (op.dense_threshold >= 1.0f ||
              static_cast<double>(s.total) / static_cast<double>(n_in) <= op.dense_threshold)
            event_linear_lists(p, s, op.weights.as<uint8_t>(), op.scale.as<float>(), bias, out);
          else
            packed_dense_linear_cpu(p, cur, op.weights.data(), op.scale.as<float>(), bias, out);
          break;
        }
        const bool spike = spike_mode(op, cur, n_in, "linear");
        if (op.layout == 0) {
          PackedLinearParams p = op.lin;
          p.M = M;
          p.threads = threads;
          if (spike) packed_spike_linear_cpu(p, cur, op.weights.data(), op.scale.as<float>(), bias, out);
          else packed_dense_linear_cpu(p, cur, op.weights.data(), op.scale.as<float>(), bias, out);
        } else {
          PrunedLinearParams p = op.pruned;
          p.M = M;
          p.threads = threads;
          if (spike && op.has_blocks)
            pruned_blocks_spike_linear_cpu(p, cur, op.block_ptr.as<int32_t>(), op.block_id.as<uint16_t>(),
                                           op.block_mask.as<uint16_t>(), op.block_code.as<int32_t>(),
                                           op.codes.as<int8_t>(), op.scale.as<float>(), bias, out);
          else
            pruned_linear_cpu(p, spike, cur, op.row_ptr.as<int32_t>(), op.index.data(), op.values.data(),
                              op.scale.as<float>(), bias, out);
        }
        break;
      }
      case F::kConv2d: {
        const bool spike = spike_mode(op, cur, n_in, "conv2d");
        PackedConv2dParams p = op.conv;
        p.NB = rows;
        p.threads = threads;
        const float* bias = op.bias.count ? op.bias.as<float>() : nullptr;
        // The eager module's kernel for spikes too; it refuses input that is not 0/1 where the
        // convolution reads it (spike_mode checked already), and the analog kernel then runs.
        const bool done = spike && op.chunked.count &&
            (op.row_map.count
                 ? pruned_spike_conv2d_cpu(p, cur, op.pruned_chunked.as<uint8_t>(), op.row_map.as<int32_t>(),
                                           op.scale.as<float>(), bias, out)
                 : packed_spike_conv2d_chunked_cpu(p, cur, op.chunked.as<uint8_t>(), op.scale.as<float>(),
                                                   bias, out));
        const bool spike_kernel = spike && !op.chunked.count;
        // Other input: the eager module's analog gather kernel (the same sums in the same
        // order: bit-identical), else the general kernel.
        const bool analog_done = !done && !spike_kernel && op.chunked.count &&
            packed_conv2d_chunked_analog_cpu(p, cur, op.chunked.as<uint8_t>(), nullptr, op.scale.as<float>(),
                                             bias, out);
        if (!done && !analog_done)
          packed_spike_conv2d_cpu(p, spike_kernel, cur, op.weights.data(), op.scale.as<float>(), bias, out);
        break;
      }
      case F::kNeuron: {
        LifParams p = op.lif;
        p.T = T;
        p.N = B * op.in.numel();
        p.threads = threads;
        lif_forward_cpu(p, cur, nullptr, out, ws.vlast[i].data());
        if (op.lists_out) ws.lists[i].from_dense(out, T * B, op.out.numel(), threads);
        break;
      }
      case F::kFlatten:
        out = const_cast<float*>(cur);  // same memory, new shape
        break;
      case F::kSave:
        saved[op.slot] = cur;
        out = const_cast<float*>(cur);
        break;
      case F::kLoad:
        out = const_cast<float*>(saved[op.slot]);
        break;
      case F::kAdd: {
        const float* s = saved[op.slot];
        for (int64_t j = 0; j < n_in; ++j) out[j] = s[j] + cur[j];
        break;
      }
      case F::kMul: {
        const float* s = saved[op.slot];
        for (int64_t j = 0; j < n_in; ++j) out[j] = s[j] * cur[j];
        break;
      }
      case F::kIand: {
        const float* s = saved[op.slot];
        for (int64_t j = 0; j < n_in; ++j) out[j] = (1.0f - s[j]) * cur[j];
        break;
      }
      case F::kAdaptiveAvgPool2d:
        adaptive_avg_pool2d(op, cur, rows * op.in.dims[0], out);
        break;
      case F::kMeanT: {
        const int64_t n = B * op.in.numel();
        std::memcpy(out, cur, sizeof(float) * n);
        for (uint32_t t = 1; t < T; ++t)
          for (int64_t j = 0; j < n; ++j) out[j] += cur[t * n + j];
        const float div = static_cast<float>(T);
        for (int64_t j = 0; j < n; ++j) out[j] /= div;
        break;
      }
      case F::kMaxPool2d:
        if (op.in_binary) {  // spikes: max is OR (spike_pool.h)
          PoolShape ps{0, op.in.dims[1], op.in.dims[2], op.out.dims[1], op.out.dims[2],
                       op.kh, op.kw, op.sh, op.sw, op.ph, op.pw};
          const int64_t planes = rows * op.in.dims[0], in_plane = ps.H * ps.W, out_plane = ps.OH * ps.OW;
          parallel_chunks(planes, 64, threads_for(planes * in_plane, threads), [&](int64_t p0, int64_t p1) {
            PoolShape part = ps;
            part.planes = p1 - p0;
            max_pool_spikes(part, cur + p0 * in_plane, out + p0 * out_plane);
          });
          if (op.lists_out) ws.lists[i].from_dense(out, rows, op.out.numel(), threads);
          break;
        }
        pool2d(op, true, cur, rows * op.in.dims[0], out, threads);
        break;
      case F::kAvgPool2d:
        pool2d(op, false, cur, rows * op.in.dims[0], out, threads);
        break;
      default:
        throw std::logic_error("unknown op kind");
    }
    cur = out;
  }
  const int64_t n_out = (this->output.time ? T : 1) * B * this->output.numel();
  std::memcpy(output, cur, sizeof(float) * n_out);
}

void Plan::run(const float* input, int64_t batch, float* output, int threads) {
  std::unique_ptr<Workspace> ws;
  {
    std::lock_guard<std::mutex> g(pool_mutex_);
    if (!pool_.empty()) {
      ws = std::move(pool_.back());
      pool_.pop_back();
    }
  }
  if (!ws) ws = std::make_unique<Workspace>();
  execute(*ws, input, batch, output, std::max(1, threads));
  std::lock_guard<std::mutex> g(pool_mutex_);
  pool_.push_back(std::move(ws));
}

}  // namespace runtime
}  // namespace sparsesnn
