"""What a user would write to compare LIF training steps: one library per fresh process, the
library's LIF module, ``out.sum().backward()``, median of 9 calls after 2 warm-ups.

    python bench/as_user/lif_fwd_bwd.py ssnn      # sparsesnn.nn.LIF
    python bench/as_user/lif_fwd_bwd.py sj        # SpikingJelly LIFNode(step_mode="m")
"""
import statistics, sys, time
import torch
lib = sys.argv[1] if len(sys.argv) > 1 else ''
if lib not in ('ssnn', 'sj'):
    sys.exit(f'usage: {sys.argv[0]} ssnn|sj (the library to time), got {lib!r}')
T, N = 32, 1 << 18
shape = (T, N)
if lib == "ssnn":
    from sparsesnn.nn import LIF
    neuron = LIF()
    def run(x):
        neuron.reset()
        return neuron(x)
else:
    from spikingjelly.activation_based import neuron as sjn, functional as sjf
    neuron = sjn.LIFNode(step_mode="m")
    def run(x):
        sjf.reset_net(neuron)
        return neuron(x)
x = (torch.randn(*shape) + 0.5).requires_grad_(True)
ts = []
for i in range(11):
    t0 = time.perf_counter()
    run(x).sum().backward()
    x.grad = None
    ts.append(time.perf_counter() - t0)
print(lib, shape, "first %.1f ms" % (ts[0] * 1e3), "median %.1f ms" % (statistics.median(ts[2:]) * 1e3), "threads", torch.get_num_threads())
