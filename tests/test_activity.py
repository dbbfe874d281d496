"""Activity regularization: penalty value, lower spike rate after training, bad arguments."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsesnn.compress import ActivityRegularizer, fit, neuron_layers
from sparsesnn.nn import LIF


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(16, 64)
        self.lif1 = LIF()
        self.fc2 = nn.Linear(64, 4)
        with torch.no_grad():
            self.fc1.weight.mul_(3.0)

    def forward(self, x):  # x [B, 16] -> [B, 4]; 6 timesteps of constant current
        self.lif1.reset()
        h = self.lif1(self.fc1(x.unsqueeze(0).expand(6, *x.shape)))
        return self.fc2(h).mean(0)


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(128, 16, generator=g)
    y = (x[:, :4].argmax(1))
    return [(x[i:i + 32], y[i:i + 32]) for i in range(0, 128, 32)]


def _rate(model, data):
    act = ActivityRegularizer(model, 0.0)
    with torch.no_grad():
        for x, _ in data:
            model(x)
    r = act.spike_rates()["lif1"]
    act.remove()
    return r


def test_finds_neurons_and_clears():
    net = Net()
    assert list(neuron_layers(net)) == ["lif1"]
    act = ActivityRegularizer(net, 0.5)
    net(torch.rand(8, 16))
    pen = act.penalty()
    assert pen.requires_grad and pen.item() > 0
    assert act.penalty().item() == 0.0  # cleared after use


def test_penalty_is_weighted_mean_rate():
    net = Net()
    act = ActivityRegularizer(net, layers={"lif1": 2.0})
    x = torch.rand(8, 16)
    net(x)
    with torch.no_grad():
        net.lif1.reset()
        s = net.lif1(net.fc1(x.unsqueeze(0).expand(6, 8, 16)))
    # second forward happened under no_grad: not captured for the penalty
    pen = act.penalty()
    assert torch.isclose(pen, 2.0 * s.mean(), atol=1e-6)


def test_target_rate_only_penalizes_excess():
    net = Net()
    act = ActivityRegularizer(net, 1.0, target_rate=1.0)
    net(torch.rand(4, 16))
    assert act.penalty().item() == 0.0


def test_activity_regularization_lowers_spike_rate():
    data = _data()
    base, reg = Net(), Net()
    r0 = _rate(base, data)
    fit(base, data, torch.optim.Adam(base.parameters(), 3e-3), epochs=8, progress=False)
    act = ActivityRegularizer(reg, 2.0)
    fit(reg, data, torch.optim.Adam(reg.parameters(), 3e-3), epochs=8, hooks=[act],
        activity=act, progress=False)
    r_base, r_reg = _rate(base, data), _rate(reg, data)
    assert r0 > 0.05
    assert r_reg < 0.7 * r_base


def test_watch_only_does_not_keep_graphs():
    net = Net()
    act = ActivityRegularizer(net, 1.0)
    fit(net, _data(), torch.optim.SGD(net.parameters(), 0.0), epochs=1, activity=act, progress=False)
    assert all(len(v) == 0 for v in act._captured.values())


@pytest.mark.parametrize("kwargs,match", [
    ({"layers": ["nope"]}, "layers"),
    ({"weight": -1.0}, "weight"),
    ({"weight": float("inf")}, "weight"),
    ({"target_rate": 2.0}, "target_rate"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ActivityRegularizer(Net(), **kwargs)


def test_model_without_neurons():
    with pytest.raises(ValueError, match="^layers: "):
        ActivityRegularizer(nn.Linear(3, 3))


def test_penalty_weighted_by_neuron_count():
    # widths 10 (all spiking) and 30 (silent): by neuron count the penalty tracks the total
    # spike count, 2 * (10 * 1 + 30 * 0) / 40 = 0.5 per unit weight; the plain sum of rates
    # (the old behaviour, by_count=False) gives 1.0
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = LIF(), LIF()

    for by_count, want in ((True, 0.5), (False, 1.0)):
        net = Two()
        reg = ActivityRegularizer(net, 1.0, by_count=by_count)
        sa = torch.ones(4, 2, 10, requires_grad=True)
        sb = torch.zeros(4, 2, 30, requires_grad=True)
        reg._make_hook("a")(net.a, (sa,), sa)
        reg._make_hook("b")(net.b, (sb,), sb)
        assert float(reg.penalty()) == pytest.approx(want)
