"""LitE-SNN-style joint search: hard budget respected, decode -> valid config that deploys."""
import copy

import pytest
import torch
from torch.nn.utils import parametrize

from sparsesnn.compress import evaluate
from sparsesnn.compress.search import (JointSearch, SearchConfig, apply_config, config_bits,
                                       lite_search)
from sparsesnn.compress.state import get_state
from sparsesnn.models import SpikingMLP


def _check_valid(cfg: SearchConfig, js: JointSearch):
    assert set(cfg.layers) == set(js.layers)
    for c in cfg.layers.values():
        assert c["bits"] in (8, 4, 2) and 0.0 <= c["sparsity"] <= js.max_sparsity
    assert cfg.T in js.model.T_candidates
    assert cfg.model_bits == js._cost(cfg.layers)


@pytest.mark.parametrize("budget,on", [(0.02, "codes"), (0.06, "codes"), (0.3, "codes"),
                                       (0.2, "deployed"), (0.3, "deployed")])
def test_decode_respects_hard_budget_without_training(budget, on):
    torch.manual_seed(0)
    m = SpikingMLP(16, (32, 32), 4, T=4)
    js = JointSearch(m, budget=budget, T_candidates=(2, 4), budget_on=on)
    cfg = js.decode()  # untrained: 8 bits dense = 0.25 of fp32 -> the budget forces cuts
    _check_valid(cfg, js)
    assert cfg.model_bits <= budget * cfg.dense_bits
    js.remove()
    assert not any(parametrize.is_parametrized(l) for l in m.modules())


def test_impossible_budget():
    m = SpikingMLP(16, (32,), 4, T=2)
    js = JointSearch(m, budget=1e-5)
    with pytest.raises(ValueError, match="^budget: "):
        js.decode()


def test_search_respects_budget_and_deploys(digits):
    from sparsesnn.deploy import deploy, layer_formats

    model, tr, te = digits
    m = copy.deepcopy(model)
    cfg, admm = lite_search(m, tr, epochs=1, finetune_epochs=1, T_candidates=(2, 3, 4),
                            budget=0.05, lam_ops=0.05, progress=False, budget_on="codes")
    assert cfg.model_bits <= 0.05 * cfg.dense_bits
    assert cfg.history and {"bits", "bitsynops", "E_T", "lam_bits"} <= set(cfg.history[0])
    assert m.T == cfg.T
    assert not any(parametrize.is_parametrized(l) for l in m.modules())
    # the model realizes the config: per-layer nonzeros and grid
    real_bits = 0
    for name, c in cfg.layers.items():
        layer = getattr(m, name)
        st = get_state(layer)
        assert st.spec.format == f"int{c['bits']}"
        nnz = int((layer.weight != 0).sum())
        assert nnz <= layer.weight.numel() - round(c["sparsity"] * layer.weight.numel())
        real_bits += nnz * c["bits"]
    assert real_bits <= 0.05 * cfg.dense_bits
    assert evaluate(m, te)["acc"] > 0.5
    d = deploy(m)
    fmts = layer_formats(d)
    assert {f["bits"] for f in fmts.values()} <= {8, 4, 2}
    x = next(iter(te))[0]
    with torch.no_grad():
        torch.testing.assert_close(d(x), m.eval()(x), atol=1e-4, rtol=1e-4)


def test_penalty_is_differentiable_and_lowers_bits(digits):
    model, tr, _ = digits
    m = copy.deepcopy(model)
    js = JointSearch(m, lam_bits=5.0, T_candidates=(2, 4))
    x, y = next(iter(tr))
    out = js.model(x)
    loss = torch.nn.functional.cross_entropy(out, y) + js.penalty()
    loss.backward()
    for mw in js.mixers.values():
        assert mw.alpha.grad is not None and mw.theta.grad is not None
        # cheaper precision gets a negative gradient (its logit goes up under descent)
        assert mw.alpha.grad[-1] < mw.alpha.grad[0]
    assert js.model.beta.grad is not None
    js.remove()


@pytest.mark.parametrize("kwargs,name", [
    ({"budget": 0}, "budget"), ({"budget": 1.5}, "budget"), ({"budget": -0.1}, "budget"),
    ({"bit_candidates": (3,)}, "bit_candidates"), ({"bit_candidates": ()}, "bit_candidates"),
    ({"T_candidates": (0, 2)}, "T_candidates"), ({"T_candidates": (2, 2)}, "T_candidates"),
    ({"layers": ["fc7"]}, "layers"), ({"lam_bits": -1.0}, "lam_bits"),
    ({"max_sparsity": 1.0}, "max_sparsity"),
])
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        JointSearch(SpikingMLP(4, (5,), 2, T=2), **kwargs)


def test_apply_config_rejects_non_config():
    with pytest.raises(ValueError, match="^config: "):
        apply_config(SpikingMLP(4, (5,), 2, T=2), {"fc1": {"bits": 4}})


def test_budget_counts_deployed_bytes(digits):
    # the default budget counts what deploy stores (indices, scales, biases): the deployed
    # model is within it; the old accounting (codes only) ignores the index overhead
    from sparsesnn.deploy import deploy, layer_formats
    from sparsesnn.compress.search import deployed_layer_bits

    model, tr, te = digits
    m = copy.deepcopy(model)
    fp32_bytes = sum(deployed_layer_bits(tuple(l.weight.shape), None, 0.0) / 8
                     for l in (m.fc1, m.fc2, m.fc3))
    cfg, admm = lite_search(m, tr, epochs=1, finetune_epochs=0, budget=0.1, progress=False)
    admm.remove()
    stored = sum(f["bytes"] for f in layer_formats(deploy(m)).values())
    assert stored <= 0.1 * fp32_bytes
    assert cfg.model_bits / 8 == pytest.approx(stored, rel=0.01)


def test_warmup_trains_weights_only(digits):
    model, tr, _ = digits
    m = copy.deepcopy(model)
    w0 = m.fc2.weight.detach().clone()
    cfg, _ = lite_search(m, tr, epochs=0, warmup_epochs=1, finetune_epochs=0, progress=False)
    # arch parameters untouched (uniform logits decode to the first candidate, no pruning) ...
    assert all(c["bits"] == 8 and c["sparsity"] == 0.0 for c in cfg.layers.values())
    assert cfg.history == []  # no search step ran: no cost penalty, no dual update
    # ... while the weights trained
    assert not torch.allclose(m.fc2.weight.detach(), w0, atol=1e-3)
    with pytest.raises(ValueError, match="warmup_epochs"):
        lite_search(copy.deepcopy(model), tr, warmup_epochs=-1, progress=False)
