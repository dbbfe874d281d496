"""Fixed-point (quantized-state) mode of the LIF kernel and the FixedPoint grid."""
import pytest
import torch

from sparsesnn import FixedPoint
from sparsesnn import reference as R
from sparsesnn.fixed_point import hash_uniform
from sparsesnn.nn import LIF
from sparsesnn.ops.lif import Neuron, lif_backward_op, lif_op


@pytest.mark.parametrize("rounding", ["nearest", "truncate", "stochastic"])
@pytest.mark.parametrize("bits,frac", [(8, 4), (16, 8), (4, 1)])
@pytest.mark.parametrize("v_reset", [0.0, None])
def test_quantized_state_kernel_matches_reference(backend, rounding, bits, frac, v_reset):
    fmt = FixedPoint(bits, frac, rounding, seed=7)
    x = torch.randn(11, 3, 129) * 1.2 + 0.3
    v0 = fmt.quantize(torch.rand(3, 129))
    n = Neuron(1.0, v_reset, 4.0, state=(fmt.bits, fmt.frac_bits, fmt.mode, fmt.seed))
    s, v, _ = lif_op(x, v0, 0.5, *n.pack(), True)
    s_r, v_r, h_r = R.lif_forward(x, v0, 0.5, 1.0, v_reset, True, True, fmt)
    assert torch.equal(s, s_r) and torch.equal(v, v_r)
    # every membrane value is on the grid and inside the range
    for state in (h_r, v):
        k = state / fmt.step
        assert torch.equal(k, k.round()) and state.min() >= fmt.min and state.max() <= fmt.max
    # backward is straight-through over the quantized H, same as the reference recurrence;
    # the kernel recomputes that H from x (stochastic rounding included)
    gs, gv = torch.randn_like(s), torch.randn_like(v)
    gx, gv0, _ = lif_backward_op(gs, gv, x, None, v0, torch.tensor(0.5), *n.pack(), False)
    gx_r, gv0_r, _ = R.lif_backward(gs, gv, h_r, v0, 0.5, 1.0, v_reset, True, True, False, "sigmoid", 4.0)
    torch.testing.assert_close(gx, gx_r)
    torch.testing.assert_close(gv0, gv0_r)
    # a wrong seed recomputes a different H, so the test above can tell
    if rounding == "stochastic":
        wrong_seed = n._replace(state=(fmt.bits, fmt.frac_bits, fmt.mode, fmt.seed + 1))
        gx_w, _, _ = lif_backward_op(gs, gv, x, None, v0, torch.tensor(0.5), *wrong_seed.pack(), False)
        assert not torch.allclose(gx_w, gx_r)


def test_stochastic_rounding_is_seeded():
    x = torch.randn(6, 200) + 0.5
    run = lambda seed: lif_op(x, None, 0.5, *Neuron(state=(8, 3, 2, seed)).pack(), True)[:2]
    a, b, c = run(1), run(1), run(2)
    assert all(map(torch.equal, a, b)) and not all(map(torch.equal, a, c))


def test_rounding_definitions():
    fmt = lambda r: FixedPoint(8, 0, r)
    x = torch.tensor([0.5, -0.5, 1.5, 2.5, -2.5, 1.49, -1.7, 0.0])
    assert fmt("nearest").quantize(x).tolist() == [1, -1, 2, 3, -3, 1, -2, 0]  # half away from 0
    assert fmt("truncate").quantize(x).tolist() == [0, 0, 1, 2, -2, 1, -1, 0]  # toward zero
    s = FixedPoint(8, 0, "stochastic", seed=3).quantize(torch.full((200_000,), 0.3))
    assert set(s.unique().tolist()) == {0.0, 1.0}
    assert abs(s.mean().item() - 0.3) < 0.005  # unbiased in expectation
    big = FixedPoint(4, 1).quantize(torch.tensor([100.0, -100.0]))
    assert big.tolist() == [3.5, -4.0]  # clamped to the representable range


def test_hash_uniform_is_uniform():
    u = hash_uniform(0, torch.arange(100_000))
    assert u.min() >= 0 and u.max() < 1
    hist = torch.histc(u, bins=10, min=0, max=1)
    assert (hist - 10_000).abs().max() < 500


def test_module_quantize_state_puts_parameters_on_grid():
    fmt = FixedPoint(8, 3)
    lif = LIF(tau=3.0, v_threshold=0.77, v_reset=0.1).quantize_state(fmt)
    for value in (lif.v_threshold, lif.v_reset, 1.0 / lif.tau):
        assert abs(value / fmt.step - round(value / fmt.step)) < 1e-6
    s = lif(torch.randn(5, 2, 30))
    assert s.shape == (5, 2, 30) and torch.all((lif.v / fmt.step).round() * fmt.step == lif.v)


@pytest.mark.parametrize("kwargs,match", [
    (dict(bits=1), "bits"), (dict(bits=40), "bits"), (dict(frac_bits=-1), "frac_bits"),
    (dict(rounding="floor"), "rounding"), (dict(seed=-1), "seed"),
])
def test_bad_fixed_point(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FixedPoint(**kwargs)


def test_bad_state_quant_argument():
    from sparsesnn import functional as F
    with pytest.raises(ValueError, match="state_quant"):
        F.lif(torch.randn(3, 4), state_quant=8)
