"""Deployed models answer inference calls with their native plan (sparsesnn.models._native):
the same outputs as their eager modules, and the eager modules whenever the plan cannot or
must not answer (hooks, autograd, training dropout, a refused model, the flag off)."""
import copy

import pytest
import torch

from _runtime_cases import eager, require_runtime
from sparsesnn import deploy as D
from sparsesnn.compress import ADMM
from sparsesnn.models import SpikingLeNet, SpikingMLP
from sparsesnn.models import _native

require_runtime()


def _mlp(seed=0):
    torch.manual_seed(seed)
    m = SpikingMLP(16, (48, 40), 5, T=4, init_gain=4.0)
    ad = ADMM(m, targets={"fc1": {"bits": 4}, "fc2": {"sparsity": 0.8, "bits": 4}, "fc3": {"bits": 8}})
    ad.finalize()
    ad.remove()
    return D.deploy(m)


def _native_matches_eager(d, x, tol=1e-5):
    """One inference call: a plan was compiled for it, and its output is the eager modules'."""
    with torch.no_grad():
        y = d(x)
    assert _plan_of(d, x) is not None
    torch.testing.assert_close(y, eager(d, x), rtol=tol, atol=tol)
    return y


def _plan_of(model, x):
    entry = _native.__dict__["_PLANS"].get(model, {"plans": {}})["plans"].get(tuple(x.shape[1:]))
    return None if entry is None else entry[1]


@pytest.mark.parametrize("batch", [1, 7])
def test_inference_call_runs_the_plan_and_matches_the_eager_modules(batch):
    d = _mlp()
    x = torch.rand(batch, 16)
    y = _native_matches_eager(d, x, tol=1e-6)
    y2 = d(x)  # grad mode on, input without grad: still an inference call
    assert torch.equal(y2, y) and not y2.requires_grad


def test_conv_model_matches_eager():
    torch.manual_seed(1)
    m = SpikingLeNet(1, 10, T=3, image_size=8, channels=(4, 8), kernel_size=3, hidden=(32,))
    d = D.deploy(m, default_bits=4)
    assert d.native_inference is True
    _native_matches_eager(d, torch.rand(3, 1, 8, 8))


def test_a_changed_buffer_or_T_recompiles():
    d = _mlp()
    x = torch.rand(4, 16)
    with torch.no_grad():
        before = d(x)
        first = _plan_of(d, x)
        d.fc3.bias.add_(1.0)  # in place: the buffer's version moves
        after = d(x)
    assert _plan_of(d, x) is not first
    torch.testing.assert_close(after, before + 1.0, rtol=0, atol=1e-5)
    torch.testing.assert_close(after, eager(d, x), rtol=0, atol=1e-6)
    d.T = 2
    d.thresholds = (torch.arange(2).float() + 0.5).div(2).view(2, 1, 1)
    with torch.no_grad():
        y = d(x)
    torch.testing.assert_close(y, eager(d, x), rtol=0, atol=1e-6)


def test_hooks_autograd_and_the_flag_take_the_eager_modules():
    d = _mlp()
    x = torch.rand(2, 16)
    seen = []
    h = d.fc1.register_forward_hook(lambda mod, i, o: seen.append(o.shape))
    with torch.no_grad():
        d(x)
    h.remove()
    assert seen and _plan_of(d, x) is None  # the hook saw the eager layer; no plan was built
    xg = x.clone().requires_grad_(True)  # autograd wanted: the eager modules answer
    assert torch.equal(d(xg), eager(d, x)) and _plan_of(d, x) is None
    d.native_inference = False
    with torch.no_grad():
        d(x)
    assert _plan_of(d, x) is None
    assert D.deploy(SpikingMLP(16, (8,), 5, T=2), native=False).native_inference is False


def test_a_model_the_runtime_refuses_runs_eagerly(monkeypatch):
    from sparsesnn import runtime

    def refuse(model, example):
        raise ValueError("model: not supported (test)")

    d = _mlp()
    x = torch.rand(2, 16)
    ref = eager(d, x)
    monkeypatch.setattr(runtime, "compile", refuse)
    with torch.no_grad():
        assert torch.equal(d(x), ref)
    assert tuple(x.shape[1:]) in _native.__dict__["_PLANS"][d]["plans"] and _plan_of(d, x) is None


def test_copies_and_loaded_models_compile_their_own(tmp_path):
    d = _mlp()
    x = torch.rand(3, 16)
    with torch.no_grad():
        y = d(x)
    c = copy.deepcopy(d)
    with torch.no_grad():
        assert torch.equal(c(x), y)
    assert _plan_of(c, x) is not None and _plan_of(c, x) is not _plan_of(d, x)
    D.save(d, tmp_path / "m.ssnn")
    loaded = D.load(tmp_path / "m.ssnn")
    assert loaded.native_inference is True
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), y, rtol=0, atol=1e-6)
    assert _plan_of(loaded, x) is not None


def test_training_dropout_takes_the_eager_modules():
    from sparsesnn.models import SpikingVGG

    torch.manual_seed(2)
    m = SpikingVGG([4, "M"], in_channels=1, num_classes=5, T=2, image_size=4, hidden=(8,), dropout=0.5)
    d = D.deploy(m, default_bits=8, native=True)
    x = torch.rand(2, 1, 4, 4)
    d.train()  # our multi-step Dropout draws masks in training mode: no plan for that
    with torch.no_grad():
        d(x)
    assert _plan_of(d, x) is None
    d.eval()
    _native_matches_eager(d, x)


def test_each_input_shape_takes_the_path_measured_faster():
    d = _mlp()
    x = torch.rand(3, 16)
    with torch.no_grad():
        y = d(x)
    faster = _native.__dict__["_PLANS"][d]["faster"]
    assert isinstance(faster[(3, 16)], bool)  # measured on the first call of this shape
    for plan_wins in (True, False):
        faster[(3, 16)] = plan_wins
        d.lif1.reset()
        with torch.no_grad():
            assert torch.equal(d(x), y)
        # the eager modules leave the neuron state of the call behind; a plan call does not
        assert (d.lif1.v is None) == plan_wins
    with torch.no_grad():
        d(torch.rand(5, 16))
    assert set(faster) == {(3, 16), (5, 16)}  # one plan per sample shape, one choice per batch
