// The input-order schedule of the CPU spike_linear forward (internal; spike_linear.cpp picks
// it): each active input's weight segment is loaded into registers once and added to the
// output rows (kept in L1) of every row where that input fired.
#pragma once
#include <cstdint>

#include "row_lists.h"
#include "sparsesnn/spike_linear.h"

namespace sparsesnn {

// The input-major weight as the forward reads it: rows of stride ld, or column panels
// [ceil(N / panel)][K][panel] (SpikeLinearParams::panel).
struct WeightView {
  const float* w;
  int64_t K, ld, panel;
  // Row 0 of column n; the following rows are ld() floats apart. With panels, n and the
  // columns read from it must lie in one panel.
  const float* column(int64_t n) const { return panel ? w + (n / panel) * K * panel + n % panel : w + n; }
};

// Rows of one L1-resident output chunk.
int64_t by_input_chunk_rows();

// out [M, N] = bias + the events of L times the weight.
void spike_linear_forward_by_input(const SpikeLinearParams& p, const event::RowLists& L,
                                   const WeightView& w, const float* bias, float* out, int threads);

}  // namespace sparsesnn
