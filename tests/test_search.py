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
        assert c["bits"] in (8, 4, 2, 1) and 0.0 <= c["sparsity"] <= js.max_sparsity
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


def test_a_budget_below_the_lowest_precision_prunes_hidden_layers_together():
    torch.manual_seed(0)
    m = SpikingMLP(64, (256, 256), 10, T=4)
    js = JointSearch(m, budget=1 / 32, T_candidates=(4,), budget_on="deployed", bit_candidates=(4, 2, 1))
    cfg = js.decode()  # binary everywhere is over 1/32 of fp32 here: pruning must make the rest
    _check_valid(cfg, js)
    assert cfg.model_bits <= cfg.dense_bits / 32
    sp = {n: c["sparsity"] for n, c in cfg.layers.items()}
    assert sp["fc3"] == 0.0  # the 10-way readout stays whole while the hidden layers can pay
    assert 0.8 < sp["fc1"] < js.max_sparsity and 0.8 < sp["fc2"] < js.max_sparsity
    assert sp["fc2"] > sp["fc1"]  # Erdos-Renyi: the larger layer is cut harder
    js.remove()


def test_std_step_of_a_pruned_layer_comes_from_its_kept_weights():
    from sparsesnn.compress.projections import STD_STEPS, fit_scale

    torch.manual_seed(0)
    w = torch.randn(32, 64)
    pruned = w * (torch.rand_like(w) < 0.05)
    kept_std = float(pruned[pruned != 0].std())
    assert torch.allclose(fit_scale(pruned, 2, method="std"), torch.full((32,), STD_STEPS[2] * kept_std))
    assert torch.allclose(fit_scale(w, 2, method="std"), torch.full((32,), STD_STEPS[2] * float(w.std())))


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
        assert st.spec.format == ("binary" if c["bits"] == 1 else f"int{c['bits']}")
        nnz = int((layer.weight != 0).sum())
        assert nnz <= layer.weight.numel() - round(c["sparsity"] * layer.weight.numel())
        real_bits += nnz * c["bits"]
    assert real_bits <= 0.05 * cfg.dense_bits
    assert evaluate(m, te)["acc"] > 0.5
    d = deploy(m)
    fmts = layer_formats(d)
    assert {f["bits"] for f in fmts.values()} <= {8, 4, 2, 1}
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
    assert js.model.beta.grad is not None
    for mw in js.mixers.values():
        mw.alpha.grad = None
    js.penalty().backward()
    for mw in js.mixers.values():
        # the penalty: cheaper precision gets a negative gradient (its logit goes up under descent)
        assert mw.alpha.grad[-1] < mw.alpha.grad[0]
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
    assert all(c["bits"] == 4 and c["sparsity"] == 0.0 for c in cfg.layers.values())
    assert cfg.history == []  # no search step ran: no cost penalty, no dual update
    # ... while the weights trained
    assert not torch.allclose(m.fc2.weight.detach(), w0, atol=1e-3)
    with pytest.raises(ValueError, match="warmup_epochs"):
        lite_search(copy.deepcopy(model), tr, warmup_epochs=-1, progress=False)


# ---- the paper's quantizer, prefix timestep losses, learned scores (issue 14) -------------
class _DirectNet(torch.nn.Module):
    """Direct (analog) input repeated every step: the first T' steps are the T' input."""

    def __init__(self, T: int = 6) -> None:
        super().__init__()
        from sparsesnn.nn import LIF

        torch.manual_seed(0)
        self.T = T
        self.fc1 = torch.nn.Linear(8, 16)
        self.lif1 = LIF(tau=2.0, detach_reset=True)
        self.fc2 = torch.nn.Linear(16, 3)
        with torch.no_grad():
            self.fc1.weight.mul_(3.0)

    def forward(self, x):
        self.lif1.reset()
        h = self.lif1(self.fc1(x.unsqueeze(0).expand(self.T, *x.shape)))
        return self.fc2(h).mean(0)


@pytest.mark.parametrize("bits,c,levels", [(1, 1.596, {-0.5, 0.5}), (2, 0.996, {-2, -1, 0, 1}),
                                           (4, 0.336, set(range(-8, 8)))])
def test_std_based_step(bits, c, levels):
    from sparsesnn.compress.search import _quantized

    torch.manual_seed(0)
    w = torch.randn(64, 128) * 0.3
    q = _quantized(w, bits, "std")
    k = q / (c * float(w.std()))
    torch.testing.assert_close(k, k.mul(2).round().div(2), atol=1e-4, rtol=0)
    got = set(k.mul(2).round().div(2).unique().tolist())
    assert got <= {float(v) for v in levels} and len(got) >= len(levels) - 1


def test_prefix_losses_equal_separate_runs_for_direct_input():
    from sparsesnn.compress.search import JointSearch

    m = _DirectNet(6)
    x, y = torch.rand(10, 8), torch.randint(0, 3, (10,))
    js = JointSearch(m, T_candidates=(2, 4, 6), prune=False, bit_candidates=(4,))
    assert js.time_mix == "prefix"
    calls = []
    h = m.fc2.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        js.model.beta.copy_(torch.tensor([0.3, -0.2, 0.5]))
    out = js.model(x)
    assert len(calls) == 1  # one run, at the largest T
    prefix = [o.detach() for o in js.model.outputs]
    loss = js.model.loss(out, y)
    p = torch.softmax(js.model.beta.detach(), 0)
    want = sum(p[j] * torch.nn.functional.cross_entropy(o, y) for j, o in enumerate(prefix))
    torch.testing.assert_close(loss.detach(), want)
    loss.backward()
    assert js.model.beta.grad is not None and bool(js.model.beta.grad.abs().sum() > 0)
    h.remove()
    # each prefix output is what the (relaxed) model computes when run at that T on its own
    with torch.no_grad():
        for T, o in zip((2, 4, 6), prefix):
            m.T = T
            torch.testing.assert_close(o, m(x), atol=1e-5, rtol=1e-5)
    js.remove()


def test_time_mix_auto_and_prefix_checks():
    from sparsesnn.compress.search import JointSearch

    js = JointSearch(SpikingMLP(4, (5,), 2, T=4), T_candidates=(2, 4))
    assert js.time_mix == "separate"  # thermometer code: prefixes are not shorter codes
    js.remove()

    class NotMean(_DirectNet):
        def forward(self, x):
            return super().forward(x) * 2.0  # output is not the mean of the readout

    js = JointSearch(NotMean(4), T_candidates=(2, 4), time_mix="prefix")
    with pytest.raises(ValueError, match="time_mix"):
        js.model(torch.rand(3, 8))
    js.remove()
    with pytest.raises(ValueError, match="time_mix"):
        JointSearch(_DirectNet(4), time_mix="prefixes")


def test_learned_scores_fixed_keep_ratio(digits):
    from sparsesnn.compress.search import JointSearch

    model, tr, te = digits
    m = copy.deepcopy(model)
    cfg, admm = lite_search(m, tr, epochs=1, finetune_epochs=1, scores="learned", keep_ratio=0.3,
                            bit_candidates=(4, 2), progress=False)
    for n, c in cfg.layers.items():
        w = getattr(m, n).weight.detach()
        keep = round(0.3 * w.numel())
        assert abs(c["sparsity"] - (1 - keep / w.numel())) < 1e-9
        mask = cfg.masks[n]
        assert int(mask.sum()) == keep
        # the deployed weights are exactly the learned mask's (not a magnitude re-selection)
        # (a kept weight below half a step rounds to code 0: the step is fitted to the kept
        # weights' std, so a few do)
        assert bool(((w != 0) <= mask).all()) and int((w != 0).sum()) >= 0.97 * keep
    assert evaluate(m, te)["acc"] > 0.5
    # the scores are parameters the architecture optimizer trains
    js = JointSearch(copy.deepcopy(model), scores="learned", keep_ratio=0.5)
    x, y = next(iter(tr))
    torch.nn.functional.cross_entropy(js.model(x), y).backward()
    assert all(mw.scores_param.grad is not None and bool(mw.scores_param.grad.abs().sum() > 0)
               for mw in js.mixers.values())
    assert all(any(p is mw.scores_param for p in js.arch_parameters()) for mw in js.mixers.values())
    js.remove()
    with pytest.raises(ValueError, match="keep_ratio"):
        JointSearch(copy.deepcopy(model), scores="learned")
    with pytest.raises(ValueError, match="keep_ratio"):
        JointSearch(copy.deepcopy(model), scores="learned", keep_ratio=1.5)


@pytest.mark.parametrize("keep", [None, 0.1])
def test_relaxed_cost_is_in_deployed_bits(keep):
    """The cost the dual ascent compares with the budget counts what deploy stores (indices,
    scales, biases), in the budget's units -- not kept weights x bits."""
    from sparsesnn.compress.search import deployed_layer_bits

    m = SpikingMLP(64, (128,), 10, T=2)
    kw = {"scores": "learned", "keep_ratio": keep} if keep else {"prune": False}
    js = JointSearch(m, bit_candidates=(4,), budget=0.5, **kw)
    shapes = [tuple(l.weight.shape) for l in (m.fc1, m.fc2)]
    sp = 0.0 if keep is None else 1.0 - keep
    want = sum(deployed_layer_bits(s, 4, sp) for s in shapes) / sum(deployed_layer_bits(s, None, 0.0) for s in shapes)
    assert float(js.costs()["bits"]) == pytest.approx(want, rel=0.01)
    js.remove()


def test_admm_std_step_grid():
    from sparsesnn.compress import ADMM

    torch.manual_seed(0)
    m = SpikingMLP(16, (32,), 4, T=2)
    std = float(m.fc1.weight.std())
    ad = ADMM(m, bits=2, scale_fit="std", exclude=["fc2"])
    ad.finalize()
    k = m.fc1.weight.detach() / (0.996 * std)
    torch.testing.assert_close(k, k.round(), atol=1e-4, rtol=0)
    assert set(k.round().int().unique().tolist()) <= {-2, -1, 0, 1}
    m2 = SpikingMLP(16, (32,), 4, T=2)
    std2 = float(m2.fc1.weight.std())
    ADMM(m2, bits="binary", scale_fit="std", exclude=["fc2"]).finalize()
    vals = m2.fc1.weight.detach().abs().unique()
    assert vals.numel() == 1 and float(vals) == pytest.approx(0.798 * std2, rel=1e-4)
    with pytest.raises(ValueError, match="bits"):
        ADMM(SpikingMLP(16, (32,), 4, T=2), bits=3, scale_fit="std")
