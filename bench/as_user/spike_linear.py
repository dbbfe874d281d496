"""A user's check: F.spike_linear(s, w) (same w every call) vs torch F.linear, 5% spikes,
M=256, K=N=2048, one library per fresh process, median of 9 calls after 2 warm-ups.

    python bench/as_user/spike_linear.py ssnn
    python bench/as_user/spike_linear.py torch
"""
import statistics, sys, time
import torch
lib = sys.argv[1] if len(sys.argv) > 1 else ''
if lib not in ('ssnn', 'torch'):
    sys.exit(f'usage: {sys.argv[0]} ssnn|torch (the library to time), got {lib!r}')
g = torch.Generator().manual_seed(0)
s = (torch.rand(256, 2048, generator=g) < 0.05).float()
w = torch.randn(2048, 2048, generator=g) * 0.02
if lib == "ssnn":
    from sparsesnn import functional as F
    f = lambda: F.spike_linear(s, w)
else:
    import torch.nn.functional as TF
    f = lambda: TF.linear(s, w)
ts = []
with torch.no_grad():
    for i in range(11):
        t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
print(lib, "first %.2f ms" % (ts[0] * 1e3), "median %.2f ms" % (statistics.median(ts[2:]) * 1e3))
