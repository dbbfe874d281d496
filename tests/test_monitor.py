"""sparsesnn.monitor: firing rates from forward hooks, raster and histogram PNGs."""
import pytest
import torch
from torch import nn

from sparsesnn.monitor import SpikeMonitor, plot_raster, plot_rate_histogram
from sparsesnn.nn import LIF, IF


def _net():
    return nn.Sequential(nn.Linear(10, 20), LIF(), nn.Linear(20, 4), IF())


def test_rates_match_outputs():
    net = _net()
    x1, x2 = torch.randn(5, 3, 10) * 3, torch.randn(7, 2, 10) * 3
    with SpikeMonitor(net, record_spikes=True) as mon, torch.no_grad():
        h1 = net[1](net[0](x1))
        net[1].reset()
        h2 = net[1](net[0](x2))
    assert mon.layers == ["1", "3"]
    expected = torch.cat([h1.reshape(-1, 20), h2.reshape(-1, 20)]).mean(0)
    torch.testing.assert_close(mon.neuron_rates("1"), expected)
    assert mon.firing_rates() == {"1": pytest.approx(float(expected.mean()))}  # "3" never ran
    assert len(mon.spikes["1"]) == 2 and mon.spikes["1"][0].dtype == torch.bool
    net[1].reset()
    net(x1)  # hooks removed on exit: nothing more recorded
    assert len(mon.spikes["1"]) == 2


def test_single_step_layer_and_reset():
    lif = LIF(step_mode="s")
    mon = SpikeMonitor(nn.Sequential(lif))
    s = lif(torch.full((4, 6), 2.0))
    assert s.sum() == 24
    assert mon.firing_rates() == {"0": 1.0}
    mon.reset()
    assert mon.firing_rates() == {}
    mon.remove()


def test_bad_arguments():
    with pytest.raises(ValueError, match="^layers: "):
        SpikeMonitor(_net(), layers=["nope"])
    with pytest.raises(ValueError, match="no sparsesnn neuron"):
        SpikeMonitor(nn.Linear(2, 2))
    mon = SpikeMonitor(_net())
    with pytest.raises(ValueError, match="has not run"):
        mon.neuron_rates("1")
    with pytest.raises(ValueError, match="^spikes: "):
        plot_raster(torch.zeros(3), "x.png")


def test_pngs(tmp_path):
    pytest.importorskip("matplotlib")
    net = _net()
    with SpikeMonitor(net, record_spikes=True) as mon:
        net(torch.randn(8, 2, 10) * 3)
    raster = plot_raster(mon.spikes["1"][0], str(tmp_path / "raster.png"))
    hist = plot_rate_histogram(mon, str(tmp_path / "rates.png"))
    for p in (raster, hist):
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
