"""Minimax budgeted pruning: ends within budget, dual ascent pushes s up, deploys, errors."""
import copy
import math

import pytest
import torch

from sparsesnn.compress.minimax import MinimaxPruner, check_budget, minimax_prune
from sparsesnn.compress.state import get_state
from sparsesnn.models import SpikingMLP


@pytest.mark.parametrize("budget", [0.05, 0.3, 0.77])
def test_ends_within_budget(digits, budget):
    model, tr, te = digits
    m = copy.deepcopy(model)
    pruner = minimax_prune(m, tr, budget, epochs=1, finetune_epochs=1, progress=False)
    n = pruner.n
    kept = sum(int((layer.weight != 0).sum()) for layer in pruner.layers.values())
    assert kept <= math.floor(budget * n)
    assert pruner.kept_fraction() <= budget
    # the hard mask is what fine-tuning kept: every pruned weight is still exactly zero
    for layer in pruner.layers.values():
        st = get_state(layer)
        assert st is not None and st.mask is not None and st.spec is None
        assert bool((layer.weight[~st.mask] == 0).all())
    assert sum(int(get_state(layer).mask.sum()) for layer in pruner.layers.values()) <= math.floor(budget * n)


def test_dual_ascent_raises_pruned_fraction(digits):
    model, tr, _ = digits
    m = copy.deepcopy(model)
    pr = MinimaxPruner(m, 0.2, lr_y=0.2)
    for _ in range(30):
        pr.compress_step()
    ps = [h["p"] for h in pr.history]
    ys = [h["y"] for h in pr.history]
    assert ys[1] > ys[0] > 0  # over budget: the price of kept weights rises
    assert ps[-1] > 0.5 and max(ps) >= 0.75  # ... and s follows
    # proximal step: the weights below the cut shrank, the largest ones did not
    w0 = torch.cat([l.weight.detach().flatten() for l in copy.deepcopy(model).modules()
                    if isinstance(l, torch.nn.Linear)])
    w1 = torch.cat([l.weight.detach().flatten() for l in m.modules() if isinstance(l, torch.nn.Linear)])
    assert (w1.abs() <= w0.abs() + 1e-7).all()
    assert (w1.abs() < 0.5 * w0.abs()).float().mean() > 0.3


def test_deploys_with_pruned_layout(digits):
    from sparsesnn.deploy import deploy, layer_formats

    model, tr, te = digits
    m = copy.deepcopy(model)
    minimax_prune(m, tr, 0.2, epochs=1, finetune_epochs=1, progress=False)
    d = deploy(m)
    fmts = layer_formats(d)
    assert all(f["layout"] != "dense" for f in fmts.values()), fmts
    x = next(iter(te))[0]
    with torch.no_grad():
        torch.testing.assert_close(d(x), m.eval()(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("bad", [0, 0.0, -0.5, 1.01, float("nan"), float("inf"), True, None, "0.5"])
def test_bad_budget(bad):
    with pytest.raises(ValueError, match="budget"):
        check_budget(bad)
    with pytest.raises(ValueError, match="budget"):
        MinimaxPruner(SpikingMLP(4, (5,), 2, T=2), bad)


def test_bad_other_arguments():
    m = SpikingMLP(4, (5,), 2, T=2)
    with pytest.raises(ValueError, match="exclude"):
        MinimaxPruner(m, 0.5, exclude=["nope"])
    with pytest.raises(ValueError, match="rho"):
        MinimaxPruner(m, 0.5, rho=0)
    with pytest.raises(ValueError, match="model"):
        MinimaxPruner("not a model", 0.5)


@pytest.mark.parametrize("normalize", [False, True])
def test_scale_free_dynamics(digits, normalize):
    # p's gradient compares the cut magnitude relative to the RMS of all weights: scaling the
    # weights (or not normalizing per layer) must not let s run away and wipe the model
    model, tr, te = digits
    m = copy.deepcopy(model)
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(0.01)
    pr = MinimaxPruner(m, 0.3, normalize=normalize)
    for _ in range(100):
        pr.compress_step()
    assert 0.5 < pr.p < 0.95
    pr.finalize()
    assert 0.1 <= pr.kept_fraction() <= 0.3
