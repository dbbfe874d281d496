"""Break-even calibration, its cache and overrides (sparsesnn.dispatch)."""
from __future__ import annotations

import json

import pytest
import torch

import sparsesnn
from sparsesnn import dispatch


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


def test_calibrate_writes_cache_and_lookup_uses_it(isolated_dispatch):
    result = sparsesnn.calibrate(quick=True)
    assert set(result) == {"linear", "conv2d"}
    for op in result.values():
        assert len(op["m"]) == len(op["break_even"]) >= 1
        assert all(0.0 <= b <= 1.0 for b in op["break_even"])
    data = json.loads(isolated_dispatch.read_text())
    entry = data["machines"][dispatch.machine_key("cpu")]
    assert entry["linear"] == result["linear"] and "measured_at" in entry
    # A fresh process (empty memory) reads the file instead of measuring again.
    dispatch._memory.clear()
    m = result["linear"]["m"][0]
    assert dispatch.break_even("linear", m) == pytest.approx(result["linear"]["break_even"][0])


def test_lookup_from_cache_file_without_measuring(isolated_dispatch, monkeypatch):
    key = dispatch.machine_key("cpu")
    isolated_dispatch.write_text(json.dumps({"format": dispatch._FORMAT, "machines": {key: {
        "linear": {"m": [1, 100], "break_even": [0.5, 0.3]},
        "conv2d": {"m": [64], "break_even": [0.1]}}}}))
    monkeypatch.setattr(dispatch, "calibrate", lambda *a, **k: pytest.fail("should not measure"))
    assert dispatch.break_even("linear", 100) == pytest.approx(0.3)
    assert dispatch.break_even("conv2d", 5) == pytest.approx(0.1)
    assert dispatch.use_event("linear", 0.2, 100, "cpu") and not dispatch.use_event("linear", 0.35, 100, "cpu")


def test_missing_cache_triggers_one_calibration(isolated_dispatch, monkeypatch):
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


def test_env_and_argument_overrides(isolated_dispatch, monkeypatch):
    monkeypatch.setattr(dispatch, "calibrate", lambda *a, **k: pytest.fail("should not measure"))
    monkeypatch.setenv(dispatch.ENV_BREAK_EVEN, "0.25")
    assert dispatch.break_even("linear") == 0.25 and dispatch.break_even("conv2d") == 0.25
    monkeypatch.setenv(dispatch.ENV_BREAK_EVEN, "linear=0.4, conv2d=0.1")
    assert dispatch.break_even("linear") == 0.4 and dispatch.break_even("conv2d") == 0.1
    assert dispatch.break_even("linear", override=0.05) == 0.05  # argument beats env
    monkeypatch.setenv(dispatch.ENV_BREAK_EVEN, "fast")
    with pytest.raises(ValueError, match=dispatch.ENV_BREAK_EVEN):
        dispatch.break_even("linear")


def test_module_uses_env_break_even(isolated_dispatch, monkeypatch):
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


def _counted(name: str, seconds: float, calls: list):
    import time

    def fn():
        calls.append(name)
        time.sleep(seconds)
        return name
    return fn


def test_choose_measures_each_shape_once(isolated_dispatch, monkeypatch):
    """No calibration: the first call of a shape times both paths twice and keeps the faster's
    output; later calls of that shape (same M octave) run one path, by the recorded break-even."""
    monkeypatch.setattr(dispatch, "calibrate", lambda *a, **k: pytest.fail("should not calibrate"))
    calls: list = []
    dense, event = _counted("dense", 0.004, calls), _counted("event", 0.001, calls)
    assert dispatch.choose("linear", 0.1, 64, "cpu", None, (8, 8), dense, event) == ("event", "event")
    assert sorted(calls) == ["dense", "dense", "event", "event"]
    be, at = dispatch._probed[("linear", "cpu", (8, 8), 7)]
    assert 0.2 < be <= 1.0 and at == 0.1  # 0.1 * ~4 ms / ~1 ms
    calls.clear()
    assert dispatch.choose("linear", 0.1, 100, "cpu", None, (8, 8), dense, event)[0] == "event"
    assert dispatch.choose("linear", 0.15, 100, "cpu", None, (8, 8), dense, event)[0] == "event"
    assert calls == ["event", "event"]  # same octave of M, within 2x of the measured density
    calls.clear()
    dispatch.choose("linear", 0.1, 1024, "cpu", None, (8, 8), dense, event)  # another octave
    dispatch.choose("linear", 0.1, 64, "cpu", None, (8, 9), dense, event)  # another shape
    assert len(calls) == 8


def test_choose_measures_again_far_above_a_sparse_measurement(isolated_dispatch):
    """Event time = fixed cost + per-event cost: measured at 1% (fixed cost dominant), the
    break-even estimate is too low; a call near it at a much higher density measures again."""
    calls: list = []
    dense = _counted("dense", 0.008, calls)
    event_at = {0.01: 0.002, 0.2: 0.004}  # 2 ms fixed + 10 ms per unit density
    dispatch.choose("linear", 0.01, 64, "cpu", None, (3,), dense, _counted("event", event_at[0.01], calls))
    be, at = dispatch._probed[("linear", "cpu", (3,), 7)]
    assert at == 0.01 and be < 0.1  # 0.01 * 8 / ~2: far below the true ~0.6
    calls.clear()
    path, _ = dispatch.choose("linear", 0.2, 64, "cpu", None, (3,), dense, _counted("event", event_at[0.2], calls))
    assert path == "event" and sorted(calls) == ["dense", "dense", "event", "event"]
    be, at = dispatch._probed[("linear", "cpu", (3,), 7)]
    assert at == 0.2 and be > 0.25  # 0.2 * 8 / ~4
    calls.clear()
    assert dispatch.choose("linear", 0.22, 64, "cpu", None, (3,), dense, _counted("event", 0.004, calls))[0] == "event"
    assert calls == ["event"]  # within 2x of the last measurement: no new one


def test_choose_keeps_dense_where_event_is_slower(isolated_dispatch):
    calls: list = []
    dense, event = _counted("dense", 0.001, calls), _counted("event", 0.004, calls)
    assert dispatch.choose("conv2d", 0.2, 64, "cpu", None, ("c",), dense, event) == ("dense", "dense")
    be, at = dispatch._probed[("conv2d", "cpu", ("c",), 7)]
    assert be < 0.1 and at == 0.2  # 0.2 * ~1 ms / ~4 ms
    calls.clear()
    # Above the break-even and within 2x of the measured density: dense, no new measurement.
    assert dispatch.choose("conv2d", 0.15, 64, "cpu", None, ("c",), dense, event)[0] == "dense"
    assert calls == ["dense"]


def test_choose_without_spikes_or_with_a_given_break_even_does_not_measure(isolated_dispatch, monkeypatch):
    calls: list = []
    dense, event = _counted("dense", 0.0, calls), _counted("event", 0.0, calls)
    assert dispatch.choose("linear", 0.0, 64, "cpu", None, (1,), dense, event)[0] == "event"
    assert dispatch.choose("linear", 0.3, 64, "cpu", 0.5, (1,), dense, event)[0] == "event"
    assert dispatch.choose("linear", 0.6, 64, "cpu", 0.5, (1,), dense, event)[0] == "dense"
    monkeypatch.setenv(dispatch.ENV_BREAK_EVEN, "0.05")
    assert dispatch.choose("linear", 0.1, 64, "cpu", None, (1,), dense, event)[0] == "dense"
    assert calls == ["event", "event", "dense", "dense"] and not dispatch._probed


def test_choose_ignores_the_machine_wide_calibration(isolated_dispatch):
    """A cached calibration (generic sizes) does not decide for a module's own shape."""
    key = dispatch.machine_key("cpu")
    isolated_dispatch.write_text(json.dumps({"format": dispatch._FORMAT, "machines": {key: {
        "linear": {"m": [1, 100], "break_even": [0.0, 0.0]}}}}))
    calls: list = []
    dense, event = _counted("dense", 0.004, calls), _counted("event", 0.001, calls)
    assert dispatch.choose("linear", 0.1, 100, "cpu", None, (1,), dense, event)[0] == "event"
    assert len(calls) == 4 and dispatch.break_even("linear", 100) == 0.0


@pytest.mark.parametrize("make", [lambda: sparsesnn.nn.SpikingLinear(1024, 512),
                                  lambda: sparsesnn.nn.SpikingConv2d(32, 32, 3, padding=1)])
def test_module_first_call_does_not_calibrate(isolated_dispatch, monkeypatch, make):
    """A module's first call measures its own shape (a few kernel calls), never a calibration
    of seconds; both paths give the same result, so the kept output is correct either way."""
    monkeypatch.setattr(dispatch, "calibrate", lambda *a, **k: pytest.fail("should not calibrate"))
    mod = make()
    x = (torch.rand(16, 1024) < 0.1).float() if isinstance(mod, torch.nn.Linear) else \
        (torch.rand(4, 32, 16, 16) < 0.1).float()
    y = mod(x)
    dense = (torch.nn.functional.linear(x, mod.weight, mod.bias) if isinstance(mod, torch.nn.Linear)
             else torch.nn.functional.conv2d(x, mod.weight, mod.bias, padding=1))
    torch.testing.assert_close(y, dense, rtol=1e-4, atol=1e-4)
    assert mod.last_path in ("event", "dense") and len(dispatch._probed) == 1
