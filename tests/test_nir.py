"""sparsesnn.nir: export / load round trip, and graphs exchanged with snnTorch.

Skipped without the ``nir`` package; the snnTorch cases without snnTorch (+ nirtorch).
"""
import numpy as np
import pytest
import torch
from torch import nn

nir = pytest.importorskip("nir")

from sparsesnn import nir as snir  # noqa: E402
from sparsesnn.convert import SeqToANN, TimeMajor, UnconvertibleError  # noqa: E402
from sparsesnn.nn import IF, LIF, SpikingConv2d, SpikingLinear  # noqa: E402


def _model():
    net = nn.Sequential(
        SpikingConv2d(2, 4, 3, padding=1), LIF(tau=2.0, v_reset=0.0),
        SeqToANN(nn.AvgPool2d(2)), LIF(tau=4.0, decay_input=False, v_threshold=0.5),
        SeqToANN(nn.AvgPool2d(2, divisor_override=1)),  # sum pooling
        SeqToANN(nn.Flatten()), SpikingLinear(4 * 2 * 2, 16),
        IF(v_reset=-0.2), SpikingLinear(16, 5, bias=False), LIF(tau=3.0, v_threshold=0.7))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0)
    return TimeMajor(net)


def test_round_trip_identical(tmp_path):
    ours = _model()
    x = (torch.rand(6, 1000, 2, 8, 8) < 0.5).float()
    g = snir.export(ours, x[:, :2])
    kinds = [type(g.nodes[str(i)]).__name__ for i in range(9)]
    assert kinds == ["Conv2d", "LIF", "AvgPool2d", "LIF", "SumPool2d", "Flatten", "Affine", "IF", "Linear"]
    path = tmp_path / "net.nir"
    nir.write(path, g)
    with torch.no_grad():
        ref = ours(x)
        assert ref.sum() > 0, "degenerate test"
        for back in (snir.load(g), snir.load(path)):
            assert [type(m) for m in back.net] == [type(m) for m in ours.net]
            out = back(x)
            assert torch.equal(out, ref), f"{(out != ref).sum().item()} spikes differ"


def test_dt_convention():
    m = TimeMajor(nn.Sequential(SpikingLinear(3, 4), LIF(tau=5.0, decay_input=False),
                                LIF(tau=5.0, decay_input=True)))
    g = snir.export(m, torch.zeros(2, 1, 3), dt=1e-3)
    np.testing.assert_allclose(g.nodes["1"].tau, 5e-3)  # tau_nir = tau_steps * dt
    np.testing.assert_allclose(g.nodes["1"].r, 5.0)     # decay_input=False: r = tau / dt
    np.testing.assert_allclose(g.nodes["2"].r, 1.0)     # decay_input=True: r = 1
    back = snir.load(g, dt=1e-3).net
    assert back[1].tau == pytest.approx(5.0) and back[1].decay_input is False
    assert back[2].tau == pytest.approx(5.0) and back[2].decay_input is True
    # Read with another dt, the r = tau/dt neuron's input gain r*dt/tau is no longer 1: refused
    with pytest.raises(UnconvertibleError, match="r=5"):
        snir.load(g, dt=5e-4)


def test_unexportable_listed():
    m = nn.Sequential(SpikingLinear(3, 4), LIF(v_reset=None), nn.ReLU(), IF(v_reset=None))
    with pytest.raises(UnconvertibleError) as e:
        snir.export(m, torch.zeros(2, 1, 3))
    assert [p for p, _, _ in e.value.items] == ["1", "2", "3"]
    assert "soft reset" in str(e.value)


def test_unloadable_nodes_listed():
    g = nir.NIRGraph.from_list(
        nir.Affine(weight=np.ones((4, 3), np.float32), bias=np.zeros(4, np.float32)),
        nir.LIF(tau=np.full(4, 1e-3), r=np.full(4, 2.0), v_leak=np.zeros(4), v_threshold=np.ones(4)),
        nir.LI(tau=np.full(4, 1e-3), r=np.ones(4), v_leak=np.zeros(4)))
    with pytest.raises(UnconvertibleError) as e:
        snir.load(g)
    names = [p for p, _, _ in e.value.items]
    assert names == ["lif", "li"] and "r=2" in str(e.value)


def test_bad_arguments():
    with pytest.raises(ValueError, match="^dt: expected a finite number > 0"):
        snir.load(nir.NIRGraph.from_list(nir.Linear(weight=np.ones((2, 2)))), dt=0)
    with pytest.raises(ValueError, match="example_input"):
        snir.export(_model(), torch.zeros(3, 2))


# ---------------------------------------------------------------------------- snnTorch peer

def _snntorch_net(snn, beta=0.5):
    # Per-neuron (uniform) beta and threshold: snnTorch 1.0's exporter writes scalar ones as
    # 0-d arrays that fail NIR's type check.
    def leaky(n, **kw):
        return snn.Leaky(beta=torch.full((n,), beta), threshold=torch.ones(n), init_hidden=True,
                         reset_mechanism="zero", **kw)

    net = nn.Sequential(nn.Linear(12, 32), leaky(32), nn.Linear(32, 6), leaky(6, output=True))
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                m.weight.mul_(3.0)
    return net


def _snntorch_run(net, x):
    from snntorch import utils

    utils.reset(net)
    outs = []
    for t in range(x.shape[0]):
        o = net(x[t])
        outs.append(o[0] if isinstance(o, tuple) else o)
    return torch.stack(outs)


@pytest.mark.parametrize("beta", [0.5, 0.75, 0.9])
def test_snntorch_exported_graph_gives_snntorch_spikes(beta):
    snn = pytest.importorskip("snntorch")
    pytest.importorskip("nirtorch")
    from snntorch.export_nir import export_to_nir

    net = _snntorch_net(snn, beta)
    g = export_to_nir(net, torch.zeros(1, 12), ignore_dims=[0])
    ours = snir.load(g)  # snnTorch writes dt = 1e-4, our default
    x = torch.rand(8, 1000, 12)
    with torch.no_grad():
        a, b = ours(x), _snntorch_run(net, x)
    assert a.sum() > 0 and torch.equal(a, b), f"{(a != b).sum().item()} spikes differ"


def test_our_graph_runs_in_snntorch():
    snn = pytest.importorskip("snntorch")
    pytest.importorskip("nirtorch")
    from snntorch.import_nir import import_from_nir

    ours = TimeMajor(nn.Sequential(SpikingLinear(12, 32), LIF(tau=2.0, decay_input=False),
                                   SpikingLinear(32, 6), LIF(tau=4.0, decay_input=False)))
    with torch.no_grad():
        for p in ours.parameters():
            p.mul_(3.0)
    x = torch.rand(8, 500, 12)
    theirs = import_from_nir(snir.export(ours, x[:, :1]))
    from snntorch import utils

    utils.reset(theirs)
    outs = []
    with torch.no_grad():
        for t in range(x.shape[0]):
            o = theirs(x[t])
            outs.append(o[0] if isinstance(o, tuple) else o)
        b = torch.stack(outs)
        a = ours(x)
    assert a.sum() > 0 and torch.equal(a, b), f"{(a != b).sum().item()} spikes differ"


def test_our_graph_runs_in_norse():
    nt = pytest.importorskip("norse.torch")
    pytest.importorskip("nirtorch")
    # Norse's NIR LIF (LIFBoxCell) is the r = 1 form: sparsesnn decay_input=True. (Norse warns
    # and ignores r != 1, so decay_input=False graphs do not run there as written.)
    ours = TimeMajor(nn.Sequential(SpikingLinear(12, 32), LIF(tau=2.0), SpikingLinear(32, 6),
                                   LIF(tau=4.0, v_threshold=0.8)))
    with torch.no_grad():
        for p in ours.parameters():
            p.mul_(8.0)
    x = torch.rand(8, 500, 12)
    theirs = nt.from_nir(snir.export(ours, x[:, :1]), dt=snir.DEFAULT_DT)
    with torch.no_grad():
        a = ours(x)
        state, outs = None, []
        for t in range(x.shape[0]):
            o, state = theirs(x[t], state)
            outs.append(o)
        b = torch.stack(outs)
    assert a.sum() > 0 and torch.equal(a, b), f"{(a != b).sum().item()} spikes differ"
