"""bench/compare_methods.py --quick: the whole protocol runs end to end (every method, the
validation split, deploy, measurement, summary with intervals, plots) on tiny models."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import compare_methods as C  # noqa: E402


def test_quick_protocol_runs(tmp_path):
    assert C.main(["--quick", "--part", "mlp", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "compare_methods.json").read_text())
    runs = res["families"]["mlp"]["runs"]
    assert {r["method"] for r in runs} == {"dense fp32", *C.METHODS}
    for r in runs:
        assert "error" not in r, r
        assert 0.0 <= r["acc"] <= 1.0 and r["bytes"] > 0 and r["latency_ms"] > 0
        if r["method"] != "dense fp32":  # every method's deployed bytes meet its byte target
            assert r["bytes"] <= r["fp32_bytes"] / 16, r
    assert (tmp_path / "compare_methods.md").read_text().count("| 1/16 |") == len(C.METHODS)
    if C.pyplot() is not None:
        assert (tmp_path / "compare_methods_mlp.png").stat().st_size > 0


def test_validation_is_carved_from_training():
    from sparsesnn.data import load_digits

    split = load_digits(seed=0)
    tr, va, te = C.carve_validation(split, seed=0)
    n_tr, n_va = len(tr.dataset), len(va.dataset)
    assert n_tr + n_va == len(split.y_train) and n_va == round(0.2 * len(split.y_train))
    assert len(te.dataset) == len(split.y_test)
    # disjoint: no validation sample is a training sample
    seen = {tuple(x.tolist()) for x, _ in tr.dataset}
    assert sum(tuple(x.tolist()) in seen for x, _ in va.dataset) <= 5  # digits has few duplicates


def test_mean_ci_and_bisect():
    m, ci = C.mean_ci([0.9, 0.92, 0.94])
    assert m == pytest.approx(0.92) and ci == pytest.approx(4.303 * 0.02 / 3 ** 0.5)
    assert C.mean_ci([0.5]) == (0.5, 0.0)
    assert C.bisect(lambda x: x * x, 0.25, 0.0, 1.0) == pytest.approx(0.5, abs=1e-6)


@pytest.mark.parametrize("shape,bits,density", [((256, 64), 4, 0.1), ((10, 256), 8, 1.0), ((33, 17), 2, 0.3),
                                                ((256, 256), None, 0.05), ((7, 5), "binary", 1.0)])
def test_byte_formula_is_what_deploy_stores(shape, bits, density):
    import torch

    from sparsesnn.compress.projections import make_spec
    from sparsesnn.compress.state import CompressionState, set_state
    from sparsesnn.deploy import deploy, layer_formats

    torch.manual_seed(0)
    layer = torch.nn.Sequential(torch.nn.Linear(shape[1], shape[0]))
    w = layer[0].weight
    mask = None
    if density < 1.0:
        k = int(round(density * w.numel()))
        mask = torch.zeros(w.numel(), dtype=torch.bool)
        mask[torch.randperm(w.numel())[:k]] = True
        mask = mask.view_as(w)
    set_state(layer[0], CompressionState(mask=mask, spec=None if bits is None else make_spec(bits)))
    stored = sum(f["bytes"] for f in layer_formats(deploy(layer)).values())
    assert C._layer_bytes(w, bits, density, True) == stored


def test_erk_allocation_meets_target_and_favours_small_layers():
    from sparsesnn.models import SpikingMLP

    m = SpikingMLP(64, (256, 256), 10, T=2)
    target = C.fp32_bytes(m) / 16
    size = lambda d: C.model_bytes(m, 4, {**d, "fc3": 1.0})  # noqa: E731
    dens = C.erk_densities(m, ["fc1", "fc2"], size, target)
    assert size(dens) <= target and size({n: 1.05 * d for n, d in dens.items()}) > target
    assert dens["fc1"] == pytest.approx(2.5 * dens["fc2"], rel=1e-3)  # (64+256)/64 vs (256+256)/256


def test_conv_model_saves_and_loads(tmp_path):
    """The conv family's deployed models are timed after deploy.save/load in a fresh process."""
    import torch

    from sparsesnn.deploy import deploy, load, save

    m = C.DigitsConvSNN(2, 4, T=2)
    d = deploy(m)
    save(d, tmp_path / "conv.pt")
    x = torch.rand(3, 64)
    with torch.no_grad():
        torch.testing.assert_close(load(tmp_path / "conv.pt")(x), d(x))
