"""``sparsesnn demo --model conv`` (quick settings): every stage runs, the report is complete,
the deployed conv model has no BatchNorm and predicts like the fake-quantized float model."""
from __future__ import annotations

import json

import pytest

from sparsesnn.cli import main
from sparsesnn.data import Split
from sparsesnn.demo_conv import as_images


def test_demo_conv_quick(tmp_path, capsys):
    out = tmp_path / "demo_conv"
    rc = main(["demo", "--model", "conv", "--quick", "--epochs", "1", "--out", str(out), "--no-progress",
               "--no-ablation"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| Test accuracy (%)" in printed and "Latency batch 1" in printed
    for name in ("demo.json", "demo.md", "demo.png", "deployed.pt"):
        assert (out / name).stat().st_size > 0
    res = json.loads((out / "demo.json").read_text())
    assert res["config"]["model"] == "conv" and res["dataset"]["features"] == 64
    assert "BatchNorm" not in res["model"] and "PackedSpikingConv2d" in res["model"]
    assert res["deployed_vs_float"]["prediction_agreement"] >= 0.99
    assert res["metrics"]["deployed"]["total"]["bits"] == 4
    layers = res["metrics"]["deployed"]["layers"]
    assert layers[0]["name"] == "stem.0" and layers[0]["binary_input"] is False  # analog first layer
    assert layers[1]["binary_input"] is True  # spikes after max pooling
    assert res["metrics"]["deployed"]["total"]["sparsity"] > 0.8


def test_as_images_rejects_non_square():
    import torch

    split = Split(torch.zeros(4, 10), torch.zeros(4).long(), torch.zeros(2, 10), torch.zeros(2).long(), "x")
    with pytest.raises(ValueError, match="square"):
        as_images(split)
