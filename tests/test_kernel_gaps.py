"""Paths the other kernel tests did not reach: surrogate alpha, the packed kernels' narrow-accumulator
overflow guard below 8 bits, fixed-point state across chunk/thread boundaries, the analog packed
path across a 256-input block and with M < 4 rows, packed/pruned backward against an independent
dequantization, and the threaded spike-list building.

Planted bugs these tests caught (each applied, rebuilt, run, reverted): the backward kernel using
a fixed alpha (lif_backward.cpp) -> all 30 alpha cases fail; the uint16 chunk length 16x too long
(packed_spike_linear.cpp kMaxAdds) -> all 5 overflow cases fail; the stochastic-rounding index
restarting every 8192 neurons (lif.cpp) -> the 5 stochastic fixed-point cases fail; scale rows
permuted in packed dequantized_weight (used by backward) -> the 5 dense backward cases fail."""
import pytest
import torch
from torch import nn

from sparsesnn import FixedPoint, reference
from sparsesnn import functional as F
from sparsesnn.nn import PackedSpikingLinear
from sparsesnn.quant import QuantSpec
from sparsesnn.surrogate import SURROGATES

pytestmark = pytest.mark.usefixtures("kernel_required")

# code ranges of the formats: symmetric integers (binary: +-1)
_RANGE = {"int8": 127, "int4": 7, "int2": 1, "ternary": 1, "binary": 1}


def _grid_layer(fmt: str, N: int, K: int, codes: str = "random", seed: int = 0):
    """A float Linear whose weight lies exactly on the format's grid, plus that weight in float64
    computed here from integer codes and scales (independent of the library's dequantization)."""
    g = torch.Generator().manual_seed(seed)
    r = _RANGE[fmt]
    if codes == "max":
        c = torch.full((N, K), r, dtype=torch.int64)
    elif fmt == "binary":
        c = torch.randint(0, 2, (N, K), generator=g) * 2 - 1
    else:
        c = torch.randint(-r, r + 1, (N, K), generator=g)
    scale = torch.rand(N, 1, generator=g, dtype=torch.float64) * 0.01 + 0.001
    scale = scale.float().double()  # exactly representable in fp32
    w64 = c.double() * scale
    lin = nn.Linear(K, N, bias=False)
    with torch.no_grad():
        lin.weight.copy_(w64.float())
    return lin, w64, scale.float()


@pytest.mark.parametrize("surrogate", sorted(SURROGATES))
@pytest.mark.parametrize("alpha", [0.7, 3.3])
@pytest.mark.parametrize("neuron", ["lif", "if", "plif"])
def test_surrogate_alpha_reaches_the_gradient(surrogate, alpha, neuron):
    x = (torch.randn(5, 3, 33) * 0.8 + 0.6).requires_grad_()
    w = torch.tensor(0.4, requires_grad=True)

    def run(fn_alpha, impl):
        xi = x.detach().clone().requires_grad_()
        wi = w.detach().clone().requires_grad_()
        if impl == "kernel":
            if neuron == "lif":
                s, v = F.lif(xi, tau=2.5, surrogate=surrogate, alpha=fn_alpha)
            elif neuron == "if":
                s, v = F.if_neuron(xi, surrogate=surrogate, alpha=fn_alpha)
            else:
                s, v = F.plif(xi, wi, surrogate=surrogate, alpha=fn_alpha)
        else:
            decay = {"lif": 1 / 2.5, "if": 1.0, "plif": torch.sigmoid(wi)}[neuron]
            s, v = reference.lif_autograd(xi, None, decay, leak=neuron != "if", surrogate=surrogate,
                                          alpha=fn_alpha)
        g = torch.linspace(-1, 1, s.numel()).reshape(s.shape)
        (s * g).sum().add(v.sum()).backward()
        return xi.grad, (wi.grad if neuron == "plif" else None)

    gx, gw = run(alpha, "kernel")
    rx, rw = run(alpha, "reference")
    torch.testing.assert_close(gx, rx, rtol=1e-4, atol=1e-5)
    if neuron == "plif":
        torch.testing.assert_close(gw, rw, rtol=1e-4, atol=1e-4)
    # and alpha matters: the default alpha gives a different gradient
    dx, _ = run(None, "kernel")
    assert (dx - gx).abs().max() > 1e-3


@pytest.mark.parametrize("fmt, K", [("int4", 9000), ("int2", 22500), ("ternary", 22500),
                                    ("binary", 66000), ("int8", 600)])
def test_packed_integer_accumulator_overflow_guard(fmt, K):
    """All K inputs active with maximal codes: per-lane sums exceed uint16 (65535) unless the
    kernel widens in time (int4 > 4369 adds, 2-bit > 21845, binary > 65535)."""
    N = 40
    lin, w64, scale = _grid_layer(fmt, N, K, codes="max")
    m = PackedSpikingLinear.from_float(lin, QuantSpec(fmt), scale=scale, input_mode="spike")
    x = torch.ones(2, K)
    x[1, ::3] = 0
    y = m(x)
    want = x.double() @ w64.t()
    torch.testing.assert_close(y.double(), want, rtol=2e-6, atol=1e-6)


_FMT_LAYOUTS = [(f, p) for f in ("int8", "int4", "int2", "ternary", "binary") for p in (False, True)
                if not (f == "binary" and p)]  # binary codes have no zero: no pruned layout


@pytest.mark.parametrize("fmt, pruned", _FMT_LAYOUTS)
@pytest.mark.parametrize("M", [1, 2, 3, 4, 7])
def test_packed_analog_path_crosses_block_and_small_m(fmt, M, pruned):
    K, N = 600, 37  # K crosses the 256-input blocks twice; M < 4 takes the row-at-a-time branch
    lin, w64, scale = _grid_layer(fmt, N, K, seed=M)
    mask = None
    if pruned:
        mask = torch.rand(N, K, generator=torch.Generator().manual_seed(1)) > 0.6
        w64 = w64 * mask
    m = PackedSpikingLinear.from_float(lin, QuantSpec(fmt), scale=scale, mask=mask, input_mode="analog")
    x = torch.randn(M, K)
    torch.testing.assert_close(m(x).double(), x.double() @ w64.t(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fmt, pruned", _FMT_LAYOUTS)
def test_packed_backward_against_independent_dequantization(fmt, pruned):
    K, N = 300, 50
    lin, w64, scale = _grid_layer(fmt, N, K, seed=3)
    mask = None
    if pruned:
        mask = torch.rand(N, K, generator=torch.Generator().manual_seed(2)) > 0.5
        w64 = w64 * mask
    m = PackedSpikingLinear.from_float(lin, QuantSpec(fmt), scale=scale, mask=mask)
    assert m.layout == ("pruned" if pruned else "dense")
    for x in ((torch.rand(6, K) > 0.7).float(), torch.randn(6, K)):
        x = x.requires_grad_()
        g = torch.randn(6, N)
        m(x).backward(g)
        torch.testing.assert_close(x.grad.double(), g.double() @ w64, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["lif", "if", "plif", "lif_detach", "lif_soft"])
@pytest.mark.parametrize("rounding", ["nearest", "truncate", "stochastic"])
def test_fixed_point_state_across_chunks_and_threads(kind, rounding):
    """A state large enough for several chunks and both threads: the per-element rounding
    (stochastic: hash of the flat index + t * numel) must not restart at chunk boundaries."""
    fmt = FixedPoint(12, 6, rounding, seed=11)
    T, shape = 3, (2, 12289)  # 3+ chunks of 8192 neurons (2 threads); odd: edges inside vector lanes
    x = torch.rand(T, *shape) * 1.2
    v0 = torch.rand(shape) * 0.5
    decay = {"lif": 0.5, "if": 1.0, "plif": 0.3125, "lif_detach": 0.5, "lif_soft": 0.5}[kind]
    v_reset = None if kind == "lif_soft" else 0.0
    kw = dict(v_reset=v_reset, state_quant=fmt)
    if kind in ("lif", "lif_detach", "lif_soft"):
        s, v = F.lif(x, v0, tau=1 / decay, detach_reset=kind == "lif_detach", **kw)
    elif kind == "if":
        s, v = F.if_neuron(x, v0, **kw)
    else:
        s, v = F.plif(x, torch.logit(torch.tensor(decay)), v0, **kw)
    rs, rv, _ = reference.lif_forward(x, v0, decay, 1.0, v_reset, True, kind != "if", fmt)
    assert torch.equal(s, rs)
    torch.testing.assert_close(v, rv, rtol=0, atol=1e-6)


def test_threaded_spike_list_building():
    """Above the per-thread work threshold (2^19 inputs) the active lists are built by several
    threads; the result must equal one thread's and the reference."""
    x = (torch.rand(160, 16384) < 0.05).float()  # 2.6M inputs
    w = torch.randn(8, 16384)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = F.spike_linear(x, w)
        torch.set_num_threads(max(2, before))
        many = F.spike_linear(x, w)
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(many, reference.spike_linear(x, w), rtol=1e-5, atol=1e-4)
    assert torch.equal(one, many)
