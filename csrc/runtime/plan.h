// A loaded plan: the validated layer list of an exported model plus a pool of per-call
// workspaces. Immutable after load, so run() may be called from several threads at once.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "sparsesnn/lif.h"
#include "sparsesnn/packed_conv2d.h"
#include "sparsesnn/packed_linear.h"
#include "sparsesnn/pruned_linear.h"
#include "spike_lists.h"

namespace sparsesnn {
namespace runtime {

// An owned, 64-byte aligned array read from the file.
struct Blob {
  uint8_t dtype = 0;
  int64_t count = 0;
  std::shared_ptr<uint8_t> mem;
  const void* data() const { return mem.get(); }
  template <typename U> const U* as() const { return reinterpret_cast<const U*>(mem.get()); }
  int64_t bytes() const;
};

struct Shape {
  bool time = false;          // leading T dimension present
  std::vector<int64_t> dims;  // per sample
  int64_t numel() const;
};

struct Op {
  uint32_t kind = 0;
  Shape in, out;
  bool in_binary = false;   // input known to be 0/1 (spikes), so no check is needed
  bool lists_out = false;   // ENCODE / NEURON: also list the spikes for the next layer
  bool lists_nested = false;  // ENCODE: thresholds non-decreasing, so nested lists (spike_lists.h)
  int lists_from = -1;      // LINEAR: read the active-input lists of this earlier op
  // LINEAR / CONV2D
  int layout = 0, input_mode = 0;
  float dense_threshold = 1.0f;
  PackedLinearParams lin;
  PrunedLinearParams pruned;
  PackedConv2dParams conv;
  Blob scale, bias, weights, row_ptr, index, values;
  Blob chunked;  // CONV2D: the gather kernel's layout of `weights` (binary spikes, one scale group)
  // CONV2D with dropped tap rows (pruned layout smaller, as deploy chose): the pruned gather
  // kernel's kept rows (chunked) and row map [C*KH*KW] (kept row -> position, dropped -> -1)
  Blob pruned_chunked, row_map;
  bool has_blocks = false;
  Blob block_ptr, block_id, block_mask, block_code, codes;
  // NEURON
  LifParams lif;
  // ENCODE_THRESHOLD
  Blob thr;
  // pooling
  int kh = 1, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0;
  // SAVE / ADD
  uint32_t slot = 0;
};

struct Workspace {
  int64_t batch = 0;
  std::vector<std::vector<float>> out;  // per op (empty for ops that alias their input)
  std::vector<std::vector<float>> vlast;
  std::vector<SpikeLists> lists;  // per op with lists_out
};

class Plan {
 public:
  // Parses and validates a whole file image; throws plan_format::FormatError (bad data) or
  // VersionError (a newer format).
  static std::unique_ptr<Plan> load(const uint8_t* data, size_t size);

  // Throws InputError for input the model cannot take.
  void run(const float* input, int64_t batch, float* output, int threads);

  uint32_t T = 1;
  Shape input, output;
  std::vector<Op> ops;
  int64_t weight_bytes = 0;

 private:
  void execute(Workspace& ws, const float* input, int64_t batch, float* output, int threads) const;
  std::mutex pool_mutex_;
  std::vector<std::unique_ptr<Workspace>> pool_;
};

struct VersionError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct InputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace runtime
}  // namespace sparsesnn
