"""Break-even calibration, its cache and overrides (sparsesnn.dispatch)."""
from __future__ import annotations

import json

import pytest
import torch

import sparsesnn
from sparsesnn import dispatch


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """A private cache file, no env override, and an empty in-memory cache."""
    path = tmp_path / "calibration.json"
    monkeypatch.setenv(dispatch.ENV_CACHE_FILE, str(path))
    monkeypatch.delenv(dispatch.ENV_BREAK_EVEN, raising=False)
    monkeypatch.setattr(dispatch, "_memory", {})
    return path


def test_crossing_interpolates():
    assert dispatch._crossing([0.1, 0.2, 0.3], [0.5, 0.8, 1.2]) == pytest.approx(0.25)
    assert dispatch._crossing([0.1, 0.2], [0.5, 0.9]) == 0.2  # never crosses: last density tried
    assert dispatch._crossing([0.1, 0.2], [2.0, 3.0]) == pytest.approx(0.05)  # always slower
    # One noisy low-density point does not hide the real (last) crossing.
    assert dispatch._crossing([0.01, 0.03, 0.06, 0.1], [0.5, 1.1, 0.6, 1.5]) == pytest.approx(0.06 + 0.04 * 0.4 / 0.9)
    # Slower only at the lowest density (a noisy first point) and faster everywhere after:
    # event-driven wins through the last density tried, not below the first.
    assert dispatch._crossing([0.01, 0.03, 0.06], [1.2, 0.8, 0.7]) == 0.06
    assert dispatch._stop([0.5, 1.4]) is False and dispatch._stop([1.4, 1.5]) is True


def test_interpolate_in_log_m():
    entry = {"m": [10, 1000], "break_even": [0.4, 0.2]}
    assert dispatch._interpolate(entry, 1) == 0.4
    assert dispatch._interpolate(entry, 100) == pytest.approx(0.3)
    assert dispatch._interpolate(entry, 10**6) == 0.2


def test_calibrate_writes_cache_and_lookup_uses_it(isolated):
    result = sparsesnn.calibrate(quick=True)
    assert set(result) == {"linear", "conv2d"}
    for op in result.values():
        assert len(op["m"]) == len(op["break_even"]) >= 1
        assert all(0.0 <= b <= 1.0 for b in op["break_even"])
    data = json.loads(isolated.read_text())
    entry = data["machines"][dispatch.machine_key("cpu")]
    assert entry["linear"] == result["linear"] and "measured_at" in entry
    # A fresh process (empty memory) reads the file instead of measuring again.
    dispatch._memory.clear()
    m = result["linear"]["m"][0]
    assert dispatch.break_even("linear", m) == pytest.approx(result["linear"]["break_even"][0])


def test_lookup_from_cache_file_without_measuring(isolated, monkeypatch):
    key = dispatch.machine_key("cpu")
    isolated.write_text(json.dumps({"format": dispatch._FORMAT, "machines": {key: {
        "linear": {"m": [1, 100], "break_even": [0.5, 0.3]},
        "conv2d": {"m": [64], "break_even": [0.1]}}}}))
    monkeypatch.setattr(dispatch, "calibrate", lambda *a, **k: pytest.fail("should not measure"))
    assert dispatch.break_even("linear", 100) == pytest.approx(0.3)
    assert dispatch.break_even("conv2d", 5) == pytest.approx(0.1)
    assert dispatch.use_event("linear", 0.2, 100, "cpu") and not dispatch.use_event("linear", 0.35, 100, "cpu")


def test_missing_cache_triggers_one_calibration(isolated, monkeypatch):
    calls = []

    def fake(ops, device="cpu", **kw):
        calls.append(ops)
        entry = {op: {"m": [1], "break_even": [0.42]} for op in ops}
        dispatch._memory.setdefault(dispatch.machine_key(device), {}).update(entry)
        return entry

    monkeypatch.setattr(dispatch, "calibrate", fake)
    assert dispatch.break_even("linear", 10) == pytest.approx(0.42)
    assert dispatch.break_even("linear", 20) == pytest.approx(0.42)
    assert calls == [("linear",)]


def test_env_and_argument_overrides(isolated, monkeypatch):
    monkeypatch.setattr(dispatch, "calibrate", lambda *a, **k: pytest.fail("should not measure"))
    monkeypatch.setenv(dispatch.ENV_BREAK_EVEN, "0.25")
    assert dispatch.break_even("linear") == 0.25 and dispatch.break_even("conv2d") == 0.25
    monkeypatch.setenv(dispatch.ENV_BREAK_EVEN, "linear=0.4, conv2d=0.1")
    assert dispatch.break_even("linear") == 0.4 and dispatch.break_even("conv2d") == 0.1
    assert dispatch.break_even("linear", override=0.05) == 0.05  # argument beats env
    monkeypatch.setenv(dispatch.ENV_BREAK_EVEN, "fast")
    with pytest.raises(ValueError, match=dispatch.ENV_BREAK_EVEN):
        dispatch.break_even("linear")


def test_module_uses_env_break_even(isolated, monkeypatch):
    monkeypatch.setattr(dispatch, "calibrate", lambda *a, **k: pytest.fail("should not measure"))
    mod = sparsesnn.nn.SpikingLinear(64, 8, min_macs=0)
    s = (torch.rand(16, 64) < 0.1).float()
    monkeypatch.setenv(dispatch.ENV_BREAK_EVEN, "0.5")
    mod(s)
    assert mod.last_path == "event"
    monkeypatch.setenv(dispatch.ENV_BREAK_EVEN, "0.01")
    mod(s)
    assert mod.last_path == "dense"


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"^op: expected one of"):
        dispatch.break_even("matmul")
    with pytest.raises(ValueError, match=r"^ops: expected a subset of"):
        sparsesnn.calibrate(("matmul",), save=False)
    with pytest.raises(ValueError, match="^device: "):
        sparsesnn.calibrate(device="tpu", save=False)
