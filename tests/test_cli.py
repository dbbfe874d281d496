"""CLI smoke tests: `sparsesnn info`, a tiny `sparsesnn demo --quick` on digits and on IDX files."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sparsesnn.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_info(capsys):
    assert main(["info"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "extension" in out and "version" in out


def test_python_dash_m_info():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "sparsesnn", "info"], capture_output=True, text=True,
                       env=env, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "torch" in json.loads(r.stdout)


def test_demo_quick(tmp_path, capsys):
    out = tmp_path / "demo"
    # 4 epochs per phase and a wide net: enough to learn the 256-sample quick split well above
    # chance, so a compression stage that wrecks the model fails the accuracy floors below
    rc = main(["demo", "--quick", "--epochs", "4", "--hidden", "512", "512", "--out", str(out),
               "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| Test accuracy (%)" in printed and "Latency batch 1" in printed
    for name in ("demo.json", "demo.md", "demo.png", "deployed.pt", "model.ssnnp"):
        assert (out / name).stat().st_size > 0
    res = json.loads((out / "demo.json").read_text())
    native = res["native_plan"]  # the exported native plan: same predictions, timed
    assert native["prediction_agreement_with_eager"] == 1.0 and native["median_ms"] > 0
    metrics = {r["metric"] for r in res["table"]}
    assert {"Latency batch 1, plan file (runtime.load), ms (measured)",
            "Latency batch 1, eager modules (native_inference=False), ms"} <= metrics
    assert res["latency_ms"]["deployed_eager_modules"]["median_ms"] > 0
    assert {"Weight sparsity (%)", "Bits per weight", "Weight bytes", "SynOps per sample (AC)",
            "Energy estimate, uJ/sample"} <= metrics
    assert res["deployed_vs_float"]["prediction_agreement"] >= 0.99
    assert res["metrics"]["deployed"]["total"]["bits"] == 4
    layers = {r["name"]: r for r in res["metrics"]["deployed"]["layers"]}
    assert layers["fc2"]["sparsity"] >= 0.94  # the demo prunes the wide hidden layer to 95%
    assert res["layer_formats"]["fc2"] == {"format": "int4", "layout": "pruned", "bits": 4,
                                           "bytes": layers["fc2"]["bytes"]}
    assert res["latency_ms"]["deployed"]["median_ms"] > 0
    assert "estimate" in res["energy_note"]
    # floors well below what seeds 0-2 reach (dense 0.63-0.77, deployed 0.54-0.64, ablation
    # 0.57-0.67 of 128 test digits) and far above chance (0.1); a collapsed compression gave 0.08
    acc = res["accuracy"]
    assert acc["dense"] >= 0.4 and acc["deployed"] >= 0.35, acc
    assert acc["deployed"] == pytest.approx(acc["compressed_float"], abs=0.02), acc
    abl = res["ablation_no_activity_reg"]  # on by default: isolates activity regularization
    assert abl["spikes_per_sample"] > 0 and abl["accuracy"] >= 0.35, abl


def test_demo_mnist_idx(tmp_path, capsys):
    from test_data import _mnist_dir

    _mnist_dir(tmp_path, n_train=64, n_test=16)
    rc = main(["demo", "--data", "mnist", "--path", str(tmp_path), "--quick", "--epochs", "1",
               "--hidden", "32", "32", "--out", str(tmp_path / "o"), "--no-progress"])
    assert rc == 0
    res = json.loads((tmp_path / "o" / "demo.json").read_text())
    assert res["dataset"]["name"] == "mnist" and res["dataset"]["features"] == 784


def test_demo_bad_args(tmp_path, capsys):
    assert main(["demo", "--data", "mnist", "--out", str(tmp_path)]) == 2
    assert "path" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo", "--data", "cifar"])
