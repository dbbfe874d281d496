"""from_snntorch: the time-major converted net gives snnTorch's own per-step loop's spikes.

Skipped when snnTorch is not installed (`pip install --no-deps snntorch`).
"""
import pytest
import torch
from torch import nn

snn = pytest.importorskip("snntorch")
from snntorch import surrogate as sn_surrogate  # noqa: E402
from snntorch import utils as sn_utils  # noqa: E402

from sparsesnn.convert import LeakyLoop, PerStep, UnconvertibleError, from_snntorch  # noqa: E402
from sparsesnn.nn import IF, LIF  # noqa: E402


def _mlp(beta=0.9, **kw):
    net = nn.Sequential(nn.Linear(20, 64), snn.Leaky(beta=beta, init_hidden=True, **kw),
                        nn.Linear(64, 10), snn.Leaky(beta=beta, init_hidden=True, output=True, **kw))
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                m.weight.mul_(3.0)
    return net


def _snntorch_loop(net, x):
    """What an snnTorch user runs: reset, then one call per step."""
    sn_utils.reset(net)
    outs = []
    for t in range(x.shape[0]):
        o = net(x[t])
        outs.append(o[0] if isinstance(o, tuple) else o)
    return torch.stack(outs)


@pytest.mark.parametrize("beta,kw,fused", [
    (0.9, dict(reset_mechanism="zero"), LIF),
    (0.5, dict(reset_mechanism="zero", reset_delay=False), LIF),
    (1.0, dict(reset_mechanism="zero"), IF),
    (0.9, dict(), LeakyLoop),  # default: subtract, reset_delay=True
    (0.8, dict(reset_mechanism="subtract", reset_delay=False), LeakyLoop),
    (0.95, dict(reset_mechanism="none"), LeakyLoop),
    (0.9, dict(reset_mechanism="zero", learn_beta=True), LeakyLoop),
])
def test_leaky_mlp_identical_spikes_on_1000_inputs(beta, kw, fused):
    theirs = _mlp(beta, **kw)
    ours = from_snntorch(theirs)
    assert isinstance(ours.net[1], fused)
    x = torch.rand(8, 1000, 20)
    with torch.no_grad():
        a, b = ours(x), _snntorch_loop(theirs, x)
        assert a.sum() > 0 and (1 - a).sum() > 0, "degenerate test"
        assert torch.equal(a, b), f"{(a != b).sum().item()} spikes differ"
        # a second call is a new sequence (state reset), as after utils.reset
        assert torch.equal(ours(x[:, :50]), b[:, :50])


@pytest.mark.parametrize("kw", [dict(reset_mechanism="zero"), dict(), dict(reset_delay=False)])
@pytest.mark.parametrize("grad", [None, sn_surrogate.sigmoid(slope=5), sn_surrogate.fast_sigmoid(slope=1)])
def test_gradients_match_snntorch(kw, grad):
    theirs = _mlp(0.75, spike_grad=grad, **kw)  # 0.75: 1 - beta is exact in fp32
    ours = from_snntorch(theirs)
    x = torch.rand(6, 16, 20)
    a, b = ours(x), _snntorch_loop(theirs, x)
    assert torch.equal(a, b)
    g = torch.randn_like(a)
    (a * g).sum().backward()
    (b * g).sum().backward()
    for pa, pb in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-4, atol=1e-5)


def test_conv_pool_bn_net():
    theirs = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.MaxPool2d(2),
                           snn.Leaky(beta=0.5, init_hidden=True, reset_mechanism="zero"),
                           nn.Flatten(), nn.Linear(4 * 4 * 4, 5),
                           snn.Leaky(beta=0.5, init_hidden=True))
    ours = from_snntorch(theirs)
    assert isinstance(ours.net[1], PerStep)
    x = torch.rand(5, 7, 1, 8, 8) * 2
    a, b = ours(x), _snntorch_loop(theirs, x)  # training mode: BN statistics per step
    assert a.sum() > 0 and torch.equal(a, b)


def test_unconvertible_modules_listed_in_one_error():
    model = nn.Sequential(nn.Linear(3, 3), snn.Synaptic(alpha=0.5, beta=0.5, init_hidden=True),
                          snn.Leaky(beta=0.5),  # init_hidden=False: state passed by the caller
                          snn.Leaky(beta=0.5, init_hidden=True, learn_threshold=True,
                                    spike_grad=sn_surrogate.triangular()))
    with pytest.raises(UnconvertibleError) as e:
        from_snntorch(model)
    assert [p for p, _, _ in e.value.items] == ["1", "2", "3"]
    msg = str(e.value)
    assert "Synaptic" in msg and "init_hidden=False" in msg and "learn_threshold" in msg
    assert "triangular" in msg


def test_time_major_input_checked():
    ours = from_snntorch(_mlp())
    with pytest.raises(ValueError, match="time-major"):
        ours(torch.rand(20))
