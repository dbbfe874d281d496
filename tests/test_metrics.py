"""metrics.report on hand-computed small cases; latency measurement."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsesnn import metrics as M
from sparsesnn.compress import ADMM
from sparsesnn.deploy import deploy
from sparsesnn.nn import LIF


def _linear_case():
    lin = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]]))
    model = nn.Sequential(lin, LIF(v_threshold=1.5))
    # time-major [T=2, B=1, K=3]
    s = torch.tensor([[[1.0, 1.0, 0.0]], [[1.0, 0.0, 1.0]]])
    return model, s


def test_linear_hand_computed():
    model, s = _linear_case()
    r = M.report(model, s, batch_size=1)
    (row,) = r["layers"]
    assert row["params"] == 6 and row["nonzeros"] == 3 and row["weights"] == 6
    assert row["sparsity"] == pytest.approx(0.5)
    assert row["bits"] == 32 and row["bytes"] == 24 and row["compression"] == pytest.approx(1.0)
    # events: input 0 twice (fan-out 1), input 1 once (fan-out 0), input 2 once (fan-out 2)
    assert row["synops"] == pytest.approx(2 * 1 + 1 * 0 + 1 * 2)
    assert row["dense_macs"] == pytest.approx(2 * 6)
    assert row["binary_input"] and row["input_spike_rate"] == pytest.approx(4 / 6)
    assert row["energy_pj"] == pytest.approx(4 * 0.9)
    assert row["dense_energy_pj"] == pytest.approx(12 * 4.6)
    # LIF (tau 2, threshold 1.5): currents t0 [1, 0] -> H [0.5, 0]; t1 [3, 3] -> H [1.75, 1.5]
    (neu,) = r["neurons"]
    assert neu["spikes_per_sample"] == pytest.approx(2.0)
    assert neu["spike_rate"] == pytest.approx(2 / 4)
    t = r["total"]
    assert t["synops"] == pytest.approx(4) and t["spike_rate"] == pytest.approx(0.5)
    assert "estimate" in r["energy_note"]


def test_analog_input_counts_macs():
    model, s = _linear_case()
    r = M.report(model, s * 0.5, batch_size=1)
    row = r["layers"][0]
    assert not row["binary_input"]
    assert row["energy_pj"] == pytest.approx(4 * 4.6)


def test_batch_normalization_per_sample():
    model, s = _linear_case()
    s2 = torch.cat([s, s], dim=1)  # B = 2, same spikes
    r = M.report(model, s2, batch_size=2)
    assert r["layers"][0]["synops"] == pytest.approx(4)
    assert r["layers"][0]["dense_macs"] == pytest.approx(12)


def test_conv_synops_exact():
    conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.weight[1, 0, 0, :] = 0.0  # channel 1 keeps 6 taps
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 1, 1] = 1.0  # interior pixel: every tap lands inside -> 9 + 6
    x[0, 0, 0, 0] = 1.0  # corner: channel 0 reaches 4 outputs, channel 1 (no top row taps) 4
    r = M.report(conv, x)
    row = r["layers"][0]
    # brute force: count (output position, tap) pairs that read a spike through a kept weight
    expect = 0
    for c in range(2):
        for oy in range(4):
            for ox in range(4):
                for ky in range(3):
                    for kx in range(3):
                        iy, ix = oy + ky - 1, ox + kx - 1
                        if 0 <= iy < 4 and 0 <= ix < 4 and x[0, 0, iy, ix] and conv.weight[c, 0, ky, kx]:
                            expect += 1
    assert row["synops"] == pytest.approx(expect)
    assert row["dense_macs"] == pytest.approx(2 * 16 * 9)
    assert row["nonzeros"] == 15


def test_deployed_sizes_and_totals():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), LIF(), nn.Linear(64, 8))
    ADMM(model, sparsity=0.75, bits=4).finalize()
    r_float = M.report(model)
    assert [row["bits"] for row in r_float["layers"]] == [4, 4]  # from the compression state
    d = deploy(model)
    s = (torch.rand(3, 5, 32) < 0.2).float()
    r = M.report(d, s, batch_size=5)
    rows = r["layers"]
    assert [row["type"] for row in rows] == ["PackedSpikingLinear"] * 2
    assert [row["bytes"] for row in rows] == [d[0].model_bytes(), d[2].model_bytes()]
    assert r["total"]["bytes"] == sum(row["bytes"] for row in rows)
    assert r["total"]["nonzeros"] == sum(row["nonzeros"] for row in rows)
    assert r["total"]["nonzeros"] <= 0.25 * (32 * 64 + 64 * 8) + 1
    assert r["total"]["compression"] == pytest.approx(r["total"]["dense_fp32_bytes"] / r["total"]["bytes"])
    assert r["total"]["bits"] == 4
    assert r["total"]["synops"] == pytest.approx(sum(row["synops"] for row in rows))
    assert r["total"]["synops"] < r["total"]["dense_macs"]


def test_latency_measured():
    model, s = _linear_case()
    r = M.report(model, s, latency_input=s, latency_runs=15, batch_size=1)
    lat = r["latency"]
    assert lat["runs"] >= 15 and 0 < lat["p10_ms"] <= lat["median_ms"] <= lat["p90_ms"]
