"""One table of every compression method on the same digits SNN, all deployed and measured.

    python bench/compare_methods.py            # full (~10 min on 2 cores)
    python bench/compare_methods.py --quick    # small model, few epochs (~1-2 min)
    python bench/compare_methods.py --smoke    # tiny model, one epoch: checks the script runs

Trains one dense SpikingMLP on scikit-learn digits, then applies each method to a copy of it:
ADMM prune + 4-bit + activity regularization (issue 5), PCA spatial pruning, PCA + temporal
pruning, minimax budgeted pruning, tinySNN quantization (exploration; the smallest model within
1.5 points of dense), LitE-SNN-style joint search under a hard bit budget. Each result is
deployed with ``sparsesnn.deploy.deploy`` and measured in this run: test accuracy of the
deployed model, real packed bytes, compression ratio vs dense fp32, spike rate, T, SynOps per
sample (``sparsesnn.metrics.report``), and batch-1 latency against the dense fp32 PyTorch model.
Latency is timed as a user runs a saved model: each model is written with
``sparsesnn.deploy.save`` and timed in its own fresh process (``deploy.load``, default
settings), so no model profits from the allocator state or caches the others (or the training)
left behind. Writes ``bench/results/compare_methods.{json,md,png}``.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

import _common as bc  # noqa: E402
from _common import RESULTS, pyplot  # noqa: E402

from sparsesnn import metrics as M  # noqa: E402
from sparsesnn.compress import ADMM, ActivityRegularizer, evaluate, fit, reset_states  # noqa: E402
from sparsesnn.compress import minimax, pca, search, temporal, tinysnn  # noqa: E402
from sparsesnn.data import load_digits, loaders  # noqa: E402
from sparsesnn.demo import DemoConfig, format_number  # noqa: E402
from sparsesnn.deploy import deploy, save  # noqa: E402
from sparsesnn.models import SpikingMLP  # noqa: E402


def _args(argv=None) -> argparse.Namespace:
    p = bc.parser(__doc__)
    p.add_argument("--hidden", type=int, nargs="+", default=None, help="hidden widths (default 1024 1024)")
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--epochs", type=int, default=None, help="dense training epochs")
    p.add_argument("--latency-runs", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--progress", action="store_true", help="show progress bars")
    return p.parse_args(argv)


class Plan:
    """Epoch counts per method (quick mode divides the work; smoke does the least that runs
    every method)."""

    def __init__(self, quick: bool, epochs: int | None, smoke: bool = False) -> None:
        q = quick or smoke
        self.dense = epochs or (5 if q else 10)
        dc = DemoConfig()
        self.admm, self.admm_retrain = (3, 2) if q else (dc.admm_epochs, dc.retrain_epochs)
        self.pca_ft = 1 if q else 6
        self.temporal_per_step = 1 if q else 2
        self.minimax, self.minimax_ft = (2, 1) if q else (4, 4)
        self.tiny_qat = 1
        self.tiny_weights = (8, 4, 2)
        self.tiny_states = (16, 8) if q else (16, 10, 8)
        self.search, self.search_ft = (1, 1) if q else (3, 3)
        self.latency_runs = 60 if q else 200
        if smoke:
            self.dense = epochs or 1
            self.admm, self.admm_retrain, self.minimax, self.minimax_ft = 1, 1, 1, 1
            self.tiny_weights, self.tiny_states = (4,), (8,)
            self.latency_runs = 10


def run(a: argparse.Namespace) -> dict[str, Any]:
    t_all = time.perf_counter()
    torch.manual_seed(a.seed)
    hidden = tuple(a.hidden) if a.hidden else ((32, 32) if a.smoke else (256, 256) if a.quick else (1024, 1024))
    plan = Plan(a.quick, a.epochs, a.smoke)
    split = load_digits(seed=a.seed)
    tr, te = loaders(split, 64, a.seed)
    say = print
    say(f"[compare] digits {len(split.y_train)}/{len(split.y_test)}, model 64->{'->'.join(map(str, hidden))}->10, "
        f"T={a.T}, {torch.get_num_threads()} threads{' (quick)' if a.quick else ''}")

    t0 = time.perf_counter()
    dense = SpikingMLP(split.features, hidden, split.classes, a.T, init_gain=4.0)
    fit(dense, tr, torch.optim.Adam(dense.parameters(), 1e-3), epochs=plan.dense, desc="dense",
        progress=a.progress)
    reset_states(dense)
    dense_acc = evaluate(dense, te)["acc"]
    say(f"[compare] dense fp32: acc {dense_acc:.4f} ({time.perf_counter() - t0:.0f} s)")
    entries: list[dict[str, Any]] = [{"method": "dense fp32 (PyTorch)", "model": dense, "deployed": dense,
                                      "seconds": time.perf_counter() - t0, "notes": "baseline"}]

    def method(name: str, fn: Callable[[torch.nn.Module], Any], base: torch.nn.Module | None = None) -> None:
        nonlocal tr, te
        t = time.perf_counter()
        torch.manual_seed(a.seed)
        tr, te = loaders(split, 64, a.seed)  # same data order for every method
        m = copy.deepcopy(dense if base is None else base)
        notes = fn(m)
        if isinstance(notes, tuple):  # the method returned a new model
            m, notes = notes
        reset_states(m)
        entries.append({"method": name, "model": m, "deployed": deploy(m),
                        "seconds": time.perf_counter() - t, "notes": notes})
        say(f"[compare] {name}: float acc {evaluate(m, te)['acc']:.4f} ({time.perf_counter() - t:.0f} s) {notes}")

    def admm(m):  # the demo's recipe (issue 5: sparsesnn.demo.DemoConfig), same epochs in full mode
        dc = DemoConfig()
        targets = {name: {"sparsity": sp, "bits": dc.bits} for name, sp in dc.sparsity.items()}
        ad = ADMM(m, targets, rho=dc.rho, proximal=dc.proximal)
        act = ActivityRegularizer(m, dc.activity)
        fit(m, tr, torch.optim.Adam(m.parameters(), dc.lr), epochs=plan.admm, hooks=[ad, act],
            desc="ADMM", progress=a.progress)
        ad.finalize()
        opt = torch.optim.Adam(m.parameters(), dc.lr / 2)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(plan.admm_retrain, 1))
        fit(m, tr, opt, epochs=plan.admm_retrain, hooks=[ad, act], scheduler=sched,
            desc="ADMM retrain", progress=a.progress)
        act.remove()
        ad.remove()
        sp = "/".join(f"{100 * v:.0f}" for v in dc.sparsity.values())
        return f"demo recipe: sparsity {sp}%, int{dc.bits}, proximal {dc.proximal}, activity {dc.activity}"

    def pca_only(m):
        r = pca.pca_prune(m, tr, tr, variance=0.999, epochs=plan.pca_ft, lr=3e-3, progress=a.progress)
        return f"variance 0.999: {r.summary()}"

    def pca_temporal(m):  # starts from the PCA row's model: the temporal step alone is timed
        tr_res = temporal.temporal_prune(m, tr, te, target_T=1, epochs_per_step=plan.temporal_per_step,
                                         tolerance=0.02, progress=a.progress)
        tried = ", ".join(f"T={h['T']}: {100 * h['acc']:.1f}%{'' if h['accepted'] else ' (undone)'}"
                          for h in tr_res.history)
        return (f"on the PCA model: T {tr_res.T_start}->{tr_res.T_final} (tolerance 2 pts vs the PCA "
                f"model's {100 * tr_res.baseline_acc:.1f}%; tried {tried})")

    def minimax_fn(m):
        pr = minimax.minimax_prune(m, tr, 0.1, epochs=plan.minimax, finetune_epochs=plan.minimax_ft,
                                   progress=a.progress)
        return f"budget kept <= 10%: kept {100 * pr.kept_fraction():.2f}%"

    tiny_info: dict[str, Any] = {}

    def tiny(m):
        ex = tinysnn.explore(m, te, tr, weight_bits=plan.tiny_weights, state_bits=plan.tiny_states,
                             roundings=tinysnn.ROUNDINGS, modes=("post", "in"),
                             accuracy_constraint=max(dense_acc - 0.015, 0.0), epochs=plan.tiny_qat)
        tiny_info.update(records=ex.records, front=ex.front, best=ex.best)
        if ex.best_model is None:  # nothing meets the constraint: take the most accurate
            best = max(ex.records, key=lambda r: r["acc"])
            cfg = tinysnn.QuantConfig(best["weight_bits"], best["state_bits"], best["rounding"], best["mode"])
            ex.best, ex.best_model = best, tinysnn.apply_config(m, cfg, tr, epochs=plan.tiny_qat)
        b = ex.best
        return ex.best_model, (f"{len(ex.records)} configs, best within 1.5 pts: {b['label']} "
                               f"({b['memory_bytes'] / 1024:.1f} KiB incl. state)")

    search_info: dict[str, Any] = {}

    def lite(m):
        cfg, _ = search.lite_search(m, tr, epochs=plan.search, finetune_epochs=plan.search_ft,
                                    T_candidates=(2, 3, 4), budget=0.02, lam_ops=0.05,
                                    progress=a.progress)
        search_info.update(layers=cfg.layers, T=cfg.T, bits_fraction=cfg.bits_fraction)
        per = ", ".join(f"{n}:{c['bits']}b/{100 * c['sparsity']:.0f}%" for n, c in cfg.layers.items())
        return f"budget 2% of fp32 bits: {per}, T={cfg.T}"

    method("ADMM prune+int4+activity", admm)
    method("PCA spatial", pca_only)
    method("PCA + temporal", pca_temporal, base=entries[-1]["model"])
    method("minimax (budget 10%)", minimax_fn)
    method("tinySNN quantization", tiny)
    method("LitE-SNN search (2% bits)", lite)

    # ---- measure every deployed model the same way
    say("[compare] measuring (accuracy, metrics; batch-1 latency of each saved model in its own process)...")
    runs = a.latency_runs or plan.latency_runs
    rounds = 5
    times: dict[int, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(split.x_test[:1].contiguous(), f"{tmp}/x1.pt")
        for i, e in enumerate(entries):
            save(e["deployed"], f"{tmp}/{i}.pt")
            times[i] = bc.isolated("compare_methods:latency", model=f"{tmp}/{i}.pt", x=f"{tmp}/x1.pt",
                                   rounds=rounds, runs=max(runs // rounds, 5))
    rows = []
    dense_bytes = None
    for i, e in enumerate(entries):
        d = e["deployed"]
        rep = M.report(d, split.x_test, reset=reset_states)
        tot = rep["total"]
        acc = evaluate(d, te)["acc"]
        lat = sorted(times[i])[rounds // 2]
        if dense_bytes is None:
            dense_bytes, dense_lat = tot["bytes"], lat
        rows.append({
            "method": e["method"], "acc": acc, "delta_acc_pts": 100 * (acc - dense_acc),
            "bytes": tot["bytes"], "compression": dense_bytes / max(tot["bytes"], 1),
            "params": tot["params"], "nonzeros": tot["nonzeros"], "sparsity": tot["sparsity"],
            "bits": tot["bits"], "spike_rate": tot["spike_rate"],
            "spikes_per_sample": tot["spikes_per_sample"], "T": int(getattr(d, "T", a.T)),
            "synops": tot["synops"], "dense_macs": tot["dense_macs"], "energy_uj": tot["energy_pj"] * 1e-6,
            "latency_ms": lat, "latency_rounds_ms": times[i], "speedup": dense_lat / lat,
            "seconds": e["seconds"], "notes": e["notes"],
        })
    res = {"rows": rows, "dense_acc": dense_acc, "hidden": list(hidden), "T": a.T, "quick": a.quick,
           "plan": vars(plan), "tinysnn": tiny_info, "search": search_info,
           "energy_note": M.ENERGY_NOTE, "machine": a.machine, "method": bc.AS_CALLED,
           "latency_note": (f"batch 1, each model saved and timed in its own fresh process, median of "
                            f"{rounds} rounds of {max(runs // rounds, 5)} runs"),
           "seconds": time.perf_counter() - t_all,
           "command": "python bench/compare_methods.py" + {"full": ""}.get(a.size, f" --{a.size}"),
           "processes": bc.PROCESSES}
    return res


def latency(model: str, x: str, rounds: int, runs: int) -> list[float]:
    """Batch-1 latency (ms, median of each round) of a model saved with ``deploy.save``, loaded
    and run in this fresh process as a user would (run through ``_common.isolated``)."""
    from sparsesnn.deploy import load

    d, x1 = load(model), torch.load(x)
    return [M.measure_latency(lambda: d(x1), runs=runs, warmup=5)["median_ms"] for _ in range(rounds)]


HEADERS = ["Method", "Acc %", "Δ pts", "Bytes", "Compr.", "Bits", "Sparsity %", "Spike rate",
           "T", "SynOps/sample", "Latency ms", "Speedup", "Compress s"]


def markdown(res: dict[str, Any]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|---|" + "---:|" * (len(HEADERS) - 1)]
    for r in res["rows"]:
        vals = [r["method"], 100 * r["acc"], f"{r['delta_acc_pts']:+.2f}", int(r["bytes"]),
                f"{r['compression']:.1f}x", r["bits"], 100 * r["sparsity"], r["spike_rate"], r["T"],
                r["synops"], r["latency_ms"], f"{r['speedup']:.2f}x", r["seconds"]]
        lines.append("| " + " | ".join(format_number(v) for v in vals) + " |")
    m = res["machine"]
    notes = [f"- {r['method']}: {r['notes']}" for r in res["rows"]]
    return "\n".join([
        f"# Compression methods compared on digits (model 64-{'-'.join(map(str, res['hidden']))}-10, T={res['T']})",
        "", bc.describe(m), "", bc.AS_CALLED, "", *lines, "",
        "All rows are the deployed model (`sparsesnn.deploy.deploy`) except the dense fp32 baseline "
        "(PyTorch nn.Linear + fused LIF). Acc: test accuracy of that model. Bytes: real stored weight "
        "bytes (packed codes + scales + indices + biases). Compr.: dense fp32 bytes / bytes. Spike rate: "
        "fraction of neuron-steps that spike. SynOps: accumulates actually performed per sample. "
        f"Latency: {res['latency_note']}; speedup vs the dense fp32 model. Compress s: time to compress "
        "(training included) in this run.", "",
        *notes, "",
        f"- Machine: {m['cpu']}, {m['torch_threads']} threads, torch {m['torch']}; run time {res['seconds']:.0f} s "
        "(shared machine: latencies are noisy)",
        f"- Command: `{res['command']}`", ""])


def plot(res: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    rows = res["rows"]
    names = [r["method"].replace(" (", "\n(") for r in rows]
    panels = [("acc", "test accuracy", False), ("bytes", "weight bytes (log)", True),
              ("synops", "SynOps / sample (log)", True), ("latency_ms", "latency ms, batch 1", False)]
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.8))
    colors = ["#888888"] + ["#2a7ab0"] * (len(rows) - 1)
    for ax, (key, label, log) in zip(axes, panels):
        vals = [r[key] for r in rows]
        ax.barh(range(len(rows)), vals, color=colors)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(names if ax is axes[0] else [], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(label)
        if log:
            ax.set_xscale("log")
        if key == "acc":
            ax.set_xlim(max(0.0, min(vals) - 0.05), 1.0)
    fig.suptitle("sparsesnn: compression methods on the same digits SNN (deployed, measured)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    a = bc.start(_args(argv))
    res = run(a)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "compare_methods.json", "w") as f:
        json.dump(res, f, indent=1, default=str)
    md = markdown(res)
    (out / "compare_methods.md").write_text(md)
    plot(res, out / "compare_methods.png")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
