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
        if r["method"] != "dense fp32":  # near its byte target (scales/biases weigh more when tiny)
            assert r["bytes"] <= 2.0 * r["fp32_bytes"] / 16, r
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
