"""What a user would write to compare LIF training steps: one library per fresh process, the
library's LIF module, ``loss(out).backward()``, median of 9 calls after 2 warm-ups.

    python bench/as_user/lif_fwd_bwd.py ssnn [sum|mean|mse]   # sparsesnn.nn.LIF
    python bench/as_user/lif_fwd_bwd.py sj [sum|mean|mse]     # SpikingJelly LIFNode(step_mode="m")

The loss (default ``sum``) decides the gradient the neuron gets: ``sum`` one broadcast value,
``mean`` a dense tensor autograd builds from it, ``mse`` (against a fixed random target) a
dense gradient of its own.
"""
import statistics, sys, time
import torch
lib = sys.argv[1] if len(sys.argv) > 1 else ''
if lib not in ('ssnn', 'sj'):
    sys.exit(f'usage: {sys.argv[0]} ssnn|sj (the library to time), got {lib!r}')
loss_name = sys.argv[2] if len(sys.argv) > 2 else 'sum'
if loss_name not in ('sum', 'mean', 'mse'):
    sys.exit(f'loss: expected sum, mean or mse, got {loss_name!r}')
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
target = torch.rand(*shape)
loss = {'sum': lambda out: out.sum(), 'mean': lambda out: out.mean(),
        'mse': lambda out: torch.nn.functional.mse_loss(out, target)}[loss_name]
ts = []
for i in range(11):
    t0 = time.perf_counter()
    loss(run(x)).backward()
    x.grad = None
    ts.append(time.perf_counter() - t0)
print(lib, shape, loss_name, "first %.1f ms" % (ts[0] * 1e3), "median %.1f ms" % (statistics.median(ts[2:]) * 1e3), "threads", torch.get_num_threads())
