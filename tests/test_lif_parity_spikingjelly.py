"""Same spikes, potentials and gradients as SpikingJelly's multi-step neurons.

Skipped when SpikingJelly is not installed (`pip install --no-deps spikingjelly loguru`).
"""
import itertools

import pytest
import torch

sj_neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
sj_surrogate = pytest.importorskip("spikingjelly.activation_based.surrogate")

from sparsesnn.nn import IF, LIF, PLIF  # noqa: E402

SJ_SURROGATES = {
    "sigmoid": lambda: sj_surrogate.Sigmoid(alpha=4.0),
    "atan": lambda: sj_surrogate.ATan(alpha=2.0),
    "piecewise_quadratic": lambda: sj_surrogate.PiecewiseQuadratic(alpha=1.0),
    "superspike": lambda: sj_surrogate.SuperSpike(alpha=1.0),
}


def _run_both(ours, theirs, x, steps=2):
    """Two consecutive calls (state carried), then a backward through both."""
    xa = x.clone().requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    outs_a = [ours(xa[i::steps]) for i in range(steps)]
    outs_b = [theirs(xb[i::steps]) for i in range(steps)]
    for a, b in zip(outs_a, outs_b):
        assert torch.equal(a, b), f"{(a != b).sum().item()} spikes differ"
    torch.testing.assert_close(ours.v, theirs.v, rtol=1e-5, atol=1e-5)
    g = torch.randn(x.shape)
    loss_a = sum((o * g[i::steps]).sum() for i, o in enumerate(outs_a)) + ours.v.sum()
    loss_b = sum((o * g[i::steps]).sum() for i, o in enumerate(outs_b)) + theirs.v.sum()
    loss_a.backward()
    loss_b.backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-5)


# tau 2 and 4: 1/tau is exact, so SpikingJelly's division and our multiplication agree bit for bit.
@pytest.mark.parametrize("tau,v_reset,decay_input,detach_reset,surrogate", list(itertools.product(
    [2.0, 4.0], [0.0, -0.5, None], [True, False], [False, True], sorted(SJ_SURROGATES))))
def test_lif_matches_spikingjelly(tau, v_reset, decay_input, detach_reset, surrogate):
    kw = dict(v_threshold=1.0, v_reset=v_reset, decay_input=decay_input, detach_reset=detach_reset)
    ours = LIF(tau=tau, surrogate=surrogate, **kw)
    theirs = sj_neuron.LIFNode(tau=tau, surrogate_function=SJ_SURROGATES[surrogate](),
                               step_mode="m", **kw)
    x = torch.randn(16, 4, 33) * 1.5 + 0.5
    # one sequence of 16 steps as two chunks of 8 (state carried across calls)
    _run_both(ours, theirs, x.reshape(2, 8, 4, 33).transpose(0, 1).reshape(16, 4, 33))


@pytest.mark.parametrize("v_reset", [0.0, None])
def test_if_matches_spikingjelly(v_reset):
    ours = IF(v_reset=v_reset, surrogate="atan")
    theirs = sj_neuron.IFNode(v_reset=v_reset, surrogate_function=sj_surrogate.ATan(), step_mode="m")
    _run_both(ours, theirs, torch.randn(12, 3, 17))


@pytest.mark.parametrize("v_reset,decay_input", [(0.0, True), (None, True), (0.0, False)])
def test_plif_matches_spikingjelly(v_reset, decay_input):
    ours = PLIF(init_tau=2.0, v_reset=v_reset, decay_input=decay_input)
    theirs = sj_neuron.ParametricLIFNode(init_tau=2.0, v_reset=v_reset, decay_input=decay_input,
                                         step_mode="m")
    x = torch.randn(10, 5, 21) + 0.3
    ya, yb = ours(x), theirs(x)
    assert torch.equal(ya, yb)
    g = torch.randn_like(ya)
    (ya * g).sum().backward()
    (yb * g).sum().backward()
    torch.testing.assert_close(ours.w.grad, theirs.w.grad, rtol=1e-4, atol=1e-5)
