"""Temporal pruning: T is reduced, a step that drops accuracy too much is undone, errors."""
import copy

import pytest
import torch

from sparsesnn.compress import evaluate, fit, reset_states
from sparsesnn.compress import temporal
from sparsesnn.compress.temporal import get_timesteps, make_schedule, set_timesteps, temporal_prune
from sparsesnn.models import SpikingMLP


@pytest.fixture(scope="module")
def digits():
    from sparsesnn.data import load_digits, loaders

    torch.manual_seed(0)
    tr, te = loaders(load_digits(), batch_size=64)
    m = SpikingMLP(64, (64, 64), 10, T=6, init_gain=3.0)
    fit(m, tr, torch.optim.Adam(m.parameters(), 3e-3), epochs=3, progress=False)
    reset_states(m)
    return m, tr, te


def test_set_timesteps_rebuilds_encoder():
    m = SpikingMLP(4, (5,), 2, T=4)
    set_timesteps(m, 2)
    assert m.T == 2 and m.thresholds.flatten().tolist() == [0.25, 0.75]
    assert "thresholds" in dict(m.named_buffers())
    x = torch.rand(3, 4)
    assert m.encode(x).shape == (2, 3, 4)
    assert m(x).shape == (3, 2)


def test_make_schedule():
    assert make_schedule(8, 2, 2) == [6, 4, 2]
    assert make_schedule(8, 3, 2) == [6, 4, 3]
    assert make_schedule(4, 1) == [3, 2, 1]
    assert make_schedule(4, 4) == []


def test_reduces_T_to_target(digits):
    model, tr, te = digits
    m = copy.deepcopy(model)
    res = temporal_prune(m, tr, te, target_T=2, step=2, tolerance=1.0, progress=False)
    assert res.T_start == 6 and res.T_final == 2 and res.stopped == "target"
    assert get_timesteps(m) == 2 and [h["T"] for h in res.history] == [4, 2]
    assert evaluate(m, te)["acc"] == pytest.approx(res.final_acc)
    # tolerance=1.0 accepts every step, so hold the result to a floor of its own: T=6 -> 2 with
    # fine-tuning keeps digits at 0.88 here (baseline 0.88); chance is 0.1
    assert res.baseline_acc >= 0.75 and res.final_acc >= 0.7, (res.baseline_acc, res.history)
    # the reduced model deploys and runs T=2 on the packed kernels with the same predictions
    from sparsesnn.deploy import deploy

    d = deploy(m)
    x = next(iter(te))[0]
    with torch.no_grad():
        assert torch.equal(d(x).argmax(-1), m.eval()(x).argmax(-1))


def test_stops_and_restores_on_tolerance(digits, monkeypatch):
    model, tr, te = digits
    m = copy.deepcopy(model)
    # scripted accuracies: start 0.90, T=5 -> 0.895 (ok), T=4 -> 0.80 (drop 0.10 > 0.02: undo)
    accs = iter([0.90, 0.895, 0.80])
    monkeypatch.setattr(temporal, "evaluate", lambda *a, **k: {"acc": next(accs)})
    snapshots = []
    real_finetune = temporal.finetune

    def spy(model, *a, **k):
        out = real_finetune(model, *a, **k)
        snapshots.append(copy.deepcopy(model.state_dict()))
        return out

    monkeypatch.setattr(temporal, "finetune", spy)
    res = temporal_prune(m, tr, te, schedule=[5, 4, 3], tolerance=0.02, progress=False)
    assert res.stopped == "tolerance" and res.T_final == 5 and get_timesteps(m) == 5
    assert [h["accepted"] for h in res.history] == [1.0, 0.0]
    # weights are those after the accepted T=5 fine-tuning, not the rejected T=4 ones
    for k, v in m.state_dict().items():
        assert torch.equal(v, snapshots[0][k])
    assert any(not torch.equal(snapshots[0][k], snapshots[1][k]) for k in snapshots[0])


@pytest.mark.parametrize("kwargs,name", [
    ({"tolerance": -0.1}, "tolerance"), ({"tolerance": float("nan")}, "tolerance"),
    ({"target_T": 0}, "target_T"), ({"schedule": [3, 3]}, "schedule"),
    ({"schedule": [4]}, "schedule"), ({"schedule": [0]}, "schedule"),
    ({"epochs_per_step": -1}, "epochs_per_step"), ({"step": 0}, "step"),
])
def test_bad_arguments(kwargs, name):
    m = SpikingMLP(4, (5,), 2, T=4)
    data = [(torch.rand(4, 4), torch.tensor([0, 1, 0, 1]))]
    with pytest.raises(ValueError, match=name):
        temporal_prune(m, data, data, progress=False, **kwargs)


def test_model_without_T():
    with pytest.raises(ValueError, match="^model: "):
        get_timesteps(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"^T: expected an integer >= 1"):
        set_timesteps(SpikingMLP(4, (5,), 2, T=4), 0)


def test_precision_sweep_on_the_pruned_model(digits):
    from sparsesnn.compress.temporal import precision_sweep

    model, tr, te = digits
    m = copy.deepcopy(model)
    before = copy.deepcopy(m.state_dict())
    float_acc = evaluate(m, te)["acc"]
    res = precision_sweep(m, te, bits=(8, 5, 2))
    assert [r["bits"] for r in res] == [8, 5, 2]
    assert abs(res[0]["acc"] - float_acc) <= 0.02  # 8 bits: essentially lossless
    assert res[1]["acc"] >= float_acc - 0.05  # the paper: stable down to 5 bits
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())  # model untouched
    with pytest.raises(ValueError, match="^bits: "):
        precision_sweep(m, te, bits=(7,))


class DirectInput(torch.nn.Module):
    """Analog input applied at every step (direct coding): ``x [B, F] -> [B, classes]``."""

    def __init__(self, T=8):
        super().__init__()
        from sparsesnn.nn import LIF

        self.T = T
        self.fc1, self.lif1, self.fc2 = torch.nn.Linear(64, 64), LIF(detach_reset=True), torch.nn.Linear(64, 10)

    def forward(self, x):
        self.lif1.reset()
        h = self.lif1(self.fc1(x.unsqueeze(0).expand(self.T, *x.shape)))
        return self.fc2(h).mean(0)


def test_direct_input_from_T8(digits):
    _, tr, te = digits
    torch.manual_seed(0)
    m = DirectInput(T=8)
    fit(m, tr, torch.optim.Adam(m.parameters(), 3e-3), epochs=2, progress=False)
    res = temporal_prune(m, tr, te, schedule=[4, 2], epochs_per_step=1, tolerance=0.05, progress=False)
    assert res.T_start == 8 and m.T == res.T_final < 8
    assert res.baseline_acc >= 0.6, res.baseline_acc  # a relative bound alone passes a collapse
    assert evaluate(m, te)["acc"] >= res.baseline_acc - 0.05
