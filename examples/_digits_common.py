"""Shared by the examples: digits data, a trained dense SpikingMLP, and a metrics summary."""
from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from sparsesnn import metrics as M  # noqa: E402
from sparsesnn.compress import evaluate, fit, reset_states  # noqa: E402
from sparsesnn.data import load_digits, loaders  # noqa: E402
from sparsesnn.models import SpikingMLP  # noqa: E402


def dense_digits(hidden=(512, 512), T: int = 4, epochs: int = 8, seed: int = 0):
    """(split, train loader, test loader, trained dense model)."""
    torch.manual_seed(seed)
    split = load_digits(seed=seed)
    tr, te = loaders(split, 64, seed)
    model = SpikingMLP(split.features, hidden, split.classes, T, init_gain=4.0)
    fit(model, tr, torch.optim.Adam(model.parameters(), 1e-3), epochs=epochs, desc="dense")
    reset_states(model)
    print(f"dense fp32: test accuracy {evaluate(model, te)['acc']:.4f}")
    return split, tr, te, model


def summary(name: str, dense: torch.nn.Module, deployed: torch.nn.Module, split, te) -> None:
    """Accuracy, bytes, spike rate, SynOps and batch-1 latency of ``deployed`` vs ``dense``."""
    x1 = split.x_test[:1].contiguous()
    rows = []
    for label, m in (("dense fp32", dense), (name, deployed)):
        m.eval()
        rep = M.report(m, split.x_test)["total"]
        lat = M.measure_latency(lambda: m(x1), runs=100, warmup=10)["median_ms"]
        rows.append((label, evaluate(m, te)["acc"], rep["bytes"], rep["spike_rate"],
                     getattr(m, "T", None), rep["synops"], lat))
    print(f"{'model':<28}{'acc':>8}{'bytes':>12}{'spike rate':>12}{'T':>4}{'SynOps':>12}{'ms (b=1)':>10}")
    for r in rows:
        print(f"{r[0]:<28}{r[1]:>8.4f}{r[2]:>12,}{r[3]:>12.4f}{r[4]:>4}{r[5]:>12,.0f}{r[6]:>10.3f}")
