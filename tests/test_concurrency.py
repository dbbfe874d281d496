"""Concurrency and resources: 4 Python threads give the serial results; calibrate() on concurrent
first use runs once and writes its cache atomically; a corrupt cache is ignored with a warning;
repeated calls leave resident memory flat."""
import json
import os
import threading

import pytest
import torch
from torch import nn

from sparsesnn import dispatch
from sparsesnn import functional as F
from sparsesnn.nn import LIF, PackedSpikingConv2d, PackedSpikingLinear, SpikingConv2d, SpikingLinear

pytestmark = pytest.mark.usefixtures("kernel_required")


def _calls():
    torch.manual_seed(0)
    spikes = (torch.rand(4, 8, 300) < 0.2).float()
    w = torch.randn(50, 300)
    img = (torch.rand(2, 3, 12, 12) < 0.3).float()
    lin = nn.Linear(300, 50)
    mods = {
        "spiking_linear": SpikingLinear(300, 50, mode="event"),
        "spiking_conv": SpikingConv2d(3, 6, 3, padding=1, mode="event"),
        "packed_int4": PackedSpikingLinear.from_float(lin, 4),
        "pruned_ternary": PackedSpikingLinear.from_float(lin, "ternary", mask=torch.rand(50, 300) > 0.7),
        "packed_conv": PackedSpikingConv2d.from_float(nn.Conv2d(3, 6, 3), 8),
    }
    return {
        "spike_linear": lambda: F.spike_linear(spikes, w),
        "lif": lambda: F.lif(spikes * 2.0, tau=3.0)[0],
        "lif_grad": lambda: _lif_grad(spikes),
        "spike_conv2d": lambda: F.spike_conv2d(img, torch.randn(6, 3, 3, 3, generator=torch.Generator().manual_seed(1))),
        "spiking_linear": lambda: mods["spiking_linear"](spikes),
        "spiking_conv": lambda: mods["spiking_conv"](img),
        "packed_int4": lambda: mods["packed_int4"](spikes),
        "packed_int4_analog": lambda: mods["packed_int4"](spikes * 0.5 + 0.1),
        "pruned_ternary": lambda: mods["pruned_ternary"](spikes),
        "packed_conv": lambda: mods["packed_conv"](img),
    }


def _lif_grad(spikes):
    x = (spikes * 2.0).requires_grad_()
    s, v = F.lif(x, tau=3.0)
    (s.sum() + v.sum()).backward()
    return x.grad


def test_four_threads_match_serial():
    calls = _calls()
    serial = {k: f() for k, f in calls.items()}
    results: dict = {}
    errors: list = []

    def worker(i):
        try:
            for rep in range(5):
                for k, f in calls.items():
                    results[(i, rep, k)] = f()
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 4 * 5 * len(calls)
    for (i, rep, k), y in results.items():
        assert torch.equal(y, serial[k]), (i, rep, k)


def test_neuron_modules_in_threads_are_independent():
    x = torch.rand(6, 4, 100) * 2
    want = LIF(tau=2.0)(x)
    out: list = [None] * 4

    def run(i):
        m = LIF(tau=2.0)  # a module per thread (state is per module)
        out[i] = m(x)

    ts = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert all(torch.equal(o, want) for o in out)


def test_calibrate_runs_once_on_concurrent_first_use(isolated_dispatch, monkeypatch):
    runs = []
    real = dispatch.calibrate

    def counted(*a, **k):
        runs.append(threading.get_ident())
        k["quick"] = True
        return real(*a, **k)

    monkeypatch.setattr(dispatch, "calibrate", counted)
    barrier = threading.Barrier(4)
    got: list = []

    def first_use():
        barrier.wait()
        got.append(dispatch.break_even("linear", 64))

    ts = [threading.Thread(target=first_use) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len(runs) == 1 and len(set(got)) == 1
    data = json.loads(isolated_dispatch.read_text())
    assert "linear" in next(iter(data["machines"].values()))
    assert [p for p in os.listdir(isolated_dispatch.parent) if p.endswith(".tmp")] == []


def test_crash_mid_write_keeps_old_file(isolated_dispatch, monkeypatch):
    dispatch.calibrate(("linear",), quick=True)
    old = isolated_dispatch.read_text()

    def crash(*a, **k):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(dispatch.json, "dumps", crash)
    with pytest.raises(KeyboardInterrupt):
        dispatch.calibrate(("linear",), quick=True)
    assert isolated_dispatch.read_text() == old
    assert [p for p in os.listdir(isolated_dispatch.parent) if p.endswith(".tmp")] == []


@pytest.mark.parametrize("content", [
    "{not json", '{"format": 2, "machines": [1, 2]}',
    '{"format": 2, "machines": {"KEY": {"linear": {"m": [64], "break_even": ["x"]}}}}',
    '{"format": 2, "machines": {"KEY": {"linear": {"m": [], "break_even": []}}}}',
])
def test_corrupt_calibration_file_is_ignored_with_warning(isolated_dispatch, content):
    isolated_dispatch.write_text(content.replace("KEY", dispatch.machine_key("cpu")))
    layer = SpikingLinear(2048, 512)  # large enough for "auto" to consult the calibration
    x = (torch.rand(4, 2048) < 0.05).float()
    with pytest.warns(RuntimeWarning, match="ignoring corrupt calibration"):
        dispatch.calibrate(("linear",), quick=True)  # re-measures, rewrites a valid file
    y = layer(x)
    torch.testing.assert_close(y, torch.nn.functional.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-4)
    assert json.loads(isolated_dispatch.read_text())["format"] == 2


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _memory_flat(calls_per_op: int, bound_mib: int) -> None:
    """``calls_per_op`` calls of each op; resident memory over the second half may not grow by
    more than ``bound_mib`` (a leak of one output per call would be tens to hundreds of MiB)."""
    half = calls_per_op // 2
    for name, f in _calls().items():
        for _ in range(100):  # warm up caches / allocator pools
            f()
        for _ in range(half - 100):
            f()
        mid = _rss_kib()
        for _ in range(half):
            f()
        grown = _rss_kib() - mid
        assert grown < bound_mib * 1024, f"{name}: resident memory grew by {grown} KiB over {half} calls"


needs_proc = pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")


@needs_proc
def test_thousand_calls_leave_memory_flat():
    _memory_flat(1000, 8)


@needs_proc
@pytest.mark.fuzz
def test_ten_thousand_calls_leave_memory_flat():
    _memory_flat(10000, 16)
