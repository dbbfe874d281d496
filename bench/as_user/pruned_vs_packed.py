"""A user's check of the pruned-layout target: `PackedSpikingLinear` int4 with 90% of weights
pruned against the same layer int4 without pruning, batch 1, 4096 -> 4096, binary spikes.
Both modules in one process, timed in alternating rounds (so both see the same machine
state), median of each module's round times.

    python bench/as_user/pruned_vs_packed.py [density]   # default 0.05
"""
import statistics, sys, time
import torch
from sparsesnn.nn import PackedSpikingLinear
from sparsesnn.quant import QuantSpec
density = float(sys.argv[1]) if len(sys.argv) > 1 else 0.05
if not 0.0 < density <= 1.0:
    sys.exit(f"density: expected a value in (0, 1], got {density}")
g = torch.Generator().manual_seed(0)
lin = torch.nn.Linear(4096, 4096)
pruned_mask = torch.rand(4096, 4096, generator=g) >= 0.9
packed = PackedSpikingLinear.from_float(lin, QuantSpec(4))
pruned = PackedSpikingLinear.from_float(lin, QuantSpec(4), mask=pruned_mask)
x = (torch.rand(1, 4096, generator=g) < density).float()
times = {"packed": [], "pruned": []}
with torch.no_grad():
    for _ in range(9):
        for name, m in (("packed", packed), ("pruned", pruned)):
            for _ in range(20):
                m(x)
            t0 = time.perf_counter()
            for _ in range(200):
                m(x)
            times[name].append((time.perf_counter() - t0) / 200)
a, b = statistics.median(times["packed"]), statistics.median(times["pruned"])
print(f"density {density}: packed int4 {a * 1e3:.4f} ms ({packed.layout}), "
      f"pruned int4 {b * 1e3:.4f} ms ({pruned.layout}), pruned vs packed {a / b:.2f}x, "
      f"threads {torch.get_num_threads()}")
