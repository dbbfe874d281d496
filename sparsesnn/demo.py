"""End-to-end demo: train a dense SNN, compress it (ADMM pruning + 4-bit quantization +
activity regularization), deploy it on the packed event-driven kernels, and measure.
``model="mlp"`` trains the wide spiking MLP, ``model="conv"`` a small VGG-style conv SNN with
BatchNorm (folded at deployment; see :mod:`sparsesnn.demo_conv`).

Writes ``demo.json``, ``demo.md`` and ``demo.png`` to the output directory and returns the
result dict. Everything in the table is computed in this run; latencies are measured here,
energies are estimates (see :data:`sparsesnn.metrics.ENERGY_NOTE`).
"""
from __future__ import annotations

import copy
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from . import metrics as M
from ._ext import info as build_info
from .compress import ADMM, ActivityRegularizer, evaluate, fit
from .data import Split, load_digits, load_mnist, loaders
from .demo_conv import as_images, conv_model, conv_targets
from .deploy import deploy, layer_formats, load, save
from .models import SpikingMLP


@dataclass
class DemoConfig:
    data: str = "digits"
    model: str = "mlp"         # "mlp" | "conv"
    path: str | None = None
    out: str = "results/demo"
    hidden: tuple[int, ...] = (2048, 2048)
    T: int = 4
    epochs: int = 8            # dense training
    admm_epochs: int = 8       # ADMM phase (penalty + per-epoch Z/U updates)
    retrain_epochs: int = 8    # masked, fake-quantized retraining after the hard projection
    batch_size: int = 64
    lr: float = 1e-3
    # Only the wide hidden layer is pruned: for the small first/last layers the packed 4-bit
    # dense layout is already smaller than a pruned one (2-byte index per kept weight) and
    # they are the most accuracy-sensitive. Overall weight sparsity is still > 90%.
    sparsity: dict[str, float] = field(default_factory=lambda: {"fc1": 0.0, "fc2": 0.95, "fc3": 0.0})
    bits: int | str = 4
    rho: float = 0.05
    proximal: float = 0.03     # decoupled ADMM pull toward Z per step (works with Adam)
    activity: float = 0.3
    seed: int = 0
    latency_runs: int = 300
    threads: int | None = None
    progress: bool = True
    quick: bool = False
    ablate_activity: bool = True  # also compress without activity regularization (ablation)
    # model="conv": SpikingVGG layers (ints: 3x3 conv + BN + LIF; "M": 2x2 max pooling), hidden
    # fully connected widths, and the sparsity of every layer but the first conv and the readout
    conv: tuple = (32, "M", 64, "M")
    conv_hidden: tuple[int, ...] = (256,)
    conv_sparsity: float = 0.95

    def validate(self) -> "DemoConfig":
        """Every setting checked before any work starts (ValueError naming the setting)."""
        from .compress.projections import check_bits, check_sparsity
        from .ops._checks import check_finite, check_positive_int

        if self.data not in ("digits", "mnist"):
            raise ValueError(f"data: expected 'digits' or 'mnist', got {self.data!r}")
        if self.data == "mnist" and not self.path:
            raise ValueError("path: --data mnist needs --path DIR with the four MNIST IDX files")
        if self.data == "mnist" and not os.path.isdir(self.path):
            raise ValueError(f"path: {self.path!r} is not a directory")
        if not self.hidden or any(isinstance(h, bool) or not isinstance(h, int) or not 1 <= h <= 1 << 16
                                  for h in self.hidden):
            raise ValueError(f"hidden: expected one or more widths in [1, 65536], got {self.hidden!r}")
        check_positive_int("T", self.T)
        if self.T > 4096:
            raise ValueError(f"T: expected at most 4096 timesteps, got {self.T}")
        for name in ("epochs", "admm_epochs", "retrain_epochs"):
            check_positive_int(name, getattr(self, name), 0)
        check_positive_int("batch_size", self.batch_size)
        check_positive_int("latency_runs", self.latency_runs)
        if check_finite("lr", self.lr) <= 0:
            raise ValueError(f"lr: expected a number > 0, got {self.lr}")
        for name in ("rho", "proximal", "activity"):
            if check_finite(name, getattr(self, name)) < 0:
                raise ValueError(f"{name}: expected a number >= 0, got {getattr(self, name)}")
        check_bits("bits", self.bits)
        if not isinstance(self.sparsity, dict):
            raise ValueError(f"sparsity: expected {{layer: sparsity}}, got {self.sparsity!r}")
        layers = {f"fc{i + 1}" for i in range(len(self.hidden) + 1)}
        for name, v in self.sparsity.items():
            if name not in layers:
                raise ValueError(f"sparsity: unknown layer {name!r}; the model has {sorted(layers)}")
            check_sparsity(f"sparsity[{name!r}]", v)
        if self.model not in ("mlp", "conv"):
            raise ValueError(f"model: expected 'mlp' or 'conv', got {self.model!r}")
        check_sparsity("conv_sparsity", self.conv_sparsity)
        if not self.conv or any(c != "M" and (isinstance(c, bool) or not isinstance(c, int) or c < 1)
                                for c in self.conv):
            raise ValueError(f"conv: expected channel counts and 'M', got {self.conv!r}")
        if self.threads is not None:
            check_positive_int("threads", self.threads)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed: expected an integer, got {self.seed!r}")
        return self


def _load(cfg: DemoConfig) -> Split:
    if cfg.data == "digits":
        split = load_digits(seed=cfg.seed)
        if cfg.quick:  # smoke test: a few batches are enough to exercise every stage
            split = Split(split.x_train[:256], split.y_train[:256], split.x_test[:128],
                          split.y_test[:128], split.name)
        return split
    if cfg.data == "mnist":
        if not cfg.path:
            raise ValueError("path: --data mnist needs --path DIR with the four MNIST IDX files")
        return load_mnist(cfg.path, limit_train=2000 if cfg.quick else None,
                          limit_test=500 if cfg.quick else None)
    raise ValueError(f"data: expected 'digits' or 'mnist', got {cfg.data!r}")


def _agreement(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> tuple[float, float]:
    a.eval()  # BatchNorm: running statistics, as folded into the deployed model
    b.eval()
    with torch.inference_mode():
        ya, yb = a(x), b(x)
    return float((ya.argmax(-1) == yb.argmax(-1)).float().mean()), float((ya - yb).abs().max())


def run(cfg: DemoConfig) -> dict[str, Any]:
    """Train, compress, deploy, measure; returns the results dict (also written to ``cfg.out``)."""
    cfg.validate()
    t_start = time.perf_counter()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    if cfg.model not in ("mlp", "conv"):
        raise ValueError(f"model: expected 'mlp' or 'conv', got {cfg.model!r}")
    split = _load(cfg)
    if cfg.model == "conv":
        split = as_images(split)
    train, test = loaders(split, cfg.batch_size, cfg.seed)
    say = print if cfg.progress else (lambda *a, **k: None)
    arch = (f"conv {list(cfg.conv)} + fc {list(cfg.conv_hidden)}" if cfg.model == "conv" else
            f"{split.features}->{'->'.join(map(str, cfg.hidden))}")
    say(f"[sparsesnn demo] {split.name}: {len(split.y_train)} train / {len(split.y_test)} test, "
        f"model {arch}->{split.classes}, T={cfg.T}, {torch.get_num_threads()} threads")

    # 1. dense fp32 SNN
    if cfg.model == "conv":
        dense = conv_model(cfg, split)
    else:
        dense = SpikingMLP(split.features, cfg.hidden, split.classes, cfg.T, init_gain=4.0)
    fit(dense, train, torch.optim.Adam(dense.parameters(), cfg.lr), epochs=cfg.epochs,
        desc="1/3 dense", progress=cfg.progress)
    watch = ActivityRegularizer(dense, 0.0)
    dense_eval = evaluate(dense, test, activity=watch)
    watch.remove()

    # 2. compress: ADMM (prune + quantize) jointly with activity regularization
    comp, admm, hist_admm, hist_re, comp_eval = _compress(cfg, dense, train, test, cfg.activity, "")
    ablation = None
    if cfg.ablate_activity:  # same compression without activity regularization
        abl, _, _, _, abl_eval = _compress(cfg, dense, train, test, 0.0, " (no act. reg.)")
        abl_rep = M.report(abl.eval(), split.x_test)
        ablation = {"accuracy": abl_eval["acc"],
                    "spikes_per_sample": abl_rep["total"]["spikes_per_sample"]}

    # 3. deploy on the packed kernels, check agreement, save/load round trip
    deployed = deploy(comp)
    os.makedirs(cfg.out, exist_ok=True)
    model_path = os.path.join(cfg.out, "deployed.pt")
    save(deployed, model_path)
    deployed = load(model_path)
    agree, max_diff = _agreement(comp, deployed, split.x_test)
    dep_eval = evaluate(deployed, test)

    # 4. metrics (per-sample ops on the test set) and measured batch-1 latency
    x1 = split.x_test[:1].contiguous()
    say("[sparsesnn demo] measuring batch-1 latency (median of "
        f"{cfg.latency_runs} runs each, same machine, same T)...")
    rep_dense = M.report(dense.eval(), split.x_test)
    rep_dep = M.report(deployed, split.x_test)
    lat_dense, lat_dep = _latency_pair(dense, deployed, x1, cfg.latency_runs)
    lat_eager = _eager_latency(deployed, x1, cfg.latency_runs)

    native = _native_plan(deployed, x1, split.x_test, cfg, say)

    res = _summarize(cfg, split, dense_eval, comp_eval, dep_eval, rep_dense, rep_dep,
                     lat_dense, lat_dep, agree, max_diff, admm, hist_admm, hist_re, deployed)
    res["native_plan"] = native
    res["latency_ms"]["deployed_eager_modules"] = lat_eager
    res["table"].append({"metric": "Latency batch 1, eager modules (native_inference=False), ms",
                         "dense_fp32": lat_dense["median_ms"], "compressed_deployed": lat_eager["median_ms"],
                         "change": f"{lat_dense['median_ms'] / lat_eager['median_ms']:.1f}x faster"})
    if native.get("median_ms"):
        res["table"].append({"metric": "Latency batch 1, plan file (runtime.load), ms (measured)",
                             "dense_fp32": lat_dense["median_ms"], "compressed_deployed": native["median_ms"],
                             "change": f"{lat_dense['median_ms'] / native['median_ms']:.1f}x faster than dense, "
                                       f"{lat_eager['median_ms'] / native['median_ms']:.1f}x than the eager modules"})
    if ablation is not None:
        sp = rep_dep["total"]["spikes_per_sample"]
        ablation["spike_reduction_by_activity_reg"] = 1.0 - sp / max(ablation["spikes_per_sample"], 1e-12)
        res["ablation_no_activity_reg"] = ablation
        res["table"].insert(5, {"metric": "Spikes/sample, same compression w/o activity reg.",
                                "dense_fp32": rep_dense["total"]["spikes_per_sample"],
                                "compressed_deployed": ablation["spikes_per_sample"],
                                "change": f"act. reg. removes {100 * ablation['spike_reduction_by_activity_reg']:.1f}% more"})
    res["seconds"] = time.perf_counter() - t_start
    _write(cfg.out, res)
    return res


def _compress(cfg: DemoConfig, dense: torch.nn.Module, train, test, activity: float, tag: str):
    """ADMM phase, hard projection, masked fake-quant retraining; returns the float model."""
    comp = copy.deepcopy(dense)
    if cfg.model == "conv":
        targets = conv_targets(comp, cfg)
    else:
        targets = {name: {"sparsity": s, "bits": cfg.bits} for name, s in cfg.sparsity.items()}
    admm = ADMM(comp, targets, rho=cfg.rho, proximal=cfg.proximal)
    act = ActivityRegularizer(comp, activity)
    opt = torch.optim.Adam(comp.parameters(), cfg.lr)
    hist_admm = fit(comp, train, opt, epochs=cfg.admm_epochs, hooks=[admm, act], activity=act,
                    desc="2/3 ADMM" + tag, progress=cfg.progress)
    admm.finalize()
    opt = torch.optim.Adam(comp.parameters(), cfg.lr)
    # cosine decay: the fixed-scale 4-bit grid needs small final steps to settle
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.retrain_epochs, 1))
    hist_re = fit(comp, train, opt, epochs=cfg.retrain_epochs, hooks=[admm, act], activity=act,
                  scheduler=sched, desc="3/3 retrain" + tag, progress=cfg.progress)
    comp_eval = evaluate(comp, test, activity=act)
    act.remove()
    admm.remove()
    return comp, admm, hist_admm, hist_re, comp_eval


def _native_plan(deployed, x1, x_test, cfg: DemoConfig, say) -> dict[str, Any]:
    """Export the deployed model as a native plan file (``model.ssnnp``, runs from C without
    Python), check it against the eager model and time it at batch 1."""
    from . import runtime

    try:
        path = os.path.join(cfg.out, "model" + runtime.PLAN_SUFFIX)
        size = runtime.export(deployed, path, x1)
        plan = runtime.load(path)
    except runtime.RuntimeLibraryError as exc:
        return {"error": str(exc)}
    was = deployed.__dict__.get("native_inference", False)
    deployed.native_inference = False  # against the eager modules, not the same plan again
    try:
        with torch.inference_mode():
            agree = float((plan(x_test).argmax(-1) == deployed(x_test).argmax(-1)).float().mean())
    finally:
        deployed.native_inference = was
    rounds = [M.measure_latency(lambda: plan(x1), runs=max(cfg.latency_runs // 5, 5), warmup=5)
              for _ in range(5)]
    med = sorted(r["median_ms"] for r in rounds)[2]
    say(f"[sparsesnn demo] native plan: {path} ({size:,} bytes), batch-1 latency {med:.3f} ms, "
        f"{100 * agree:.1f}% same predictions as the eager deployed model")
    return {"file": path, "file_bytes": size, "median_ms": med, "rounds": rounds,
            "prediction_agreement_with_eager": agree, "weight_bytes_read": plan.weight_bytes()}


def _eager_latency(deployed, x1, runs) -> dict[str, Any]:
    """Batch-1 latency of the deployed model's eager modules (its native plan turned off)."""
    was = deployed.__dict__.get("native_inference", False)
    deployed.native_inference = False
    try:
        rounds = [M.measure_latency(lambda: deployed(x1), runs=max(runs // 5, 5), warmup=5) for _ in range(5)]
    finally:
        deployed.native_inference = was
    return {"median_ms": sorted(r["median_ms"] for r in rounds)[2], "rounds": rounds}


def _latency_pair(dense, deployed, x1, runs):
    """Interleaved rounds so background load hits both models alike; median over all rounds."""
    dense.eval()
    rounds = 5
    d_times, p_times = [], []
    for _ in range(rounds):
        d_times.append(M.measure_latency(lambda: dense(x1), runs=max(runs // rounds, 5), warmup=5))
        p_times.append(M.measure_latency(lambda: deployed(x1), runs=max(runs // rounds, 5), warmup=5))
    med = lambda xs: sorted(t["median_ms"] for t in xs)[len(xs) // 2]  # noqa: E731
    return ({"median_ms": med(d_times), "rounds": d_times},
            {"median_ms": med(p_times), "rounds": p_times})


def _summarize(cfg, split, dense_eval, comp_eval, dep_eval, rep_dense, rep_dep, lat_dense,
               lat_dep, agree, max_diff, admm, hist_admm, hist_re, deployed) -> dict[str, Any]:
    td, tp = rep_dense["total"], rep_dep["total"]
    spike_red = 1.0 - tp["spikes_per_sample"] / max(td["spikes_per_sample"], 1e-12)
    rows = [
        ("Test accuracy (%)", 100 * dense_eval["acc"], 100 * dep_eval["acc"],
         f"{100 * (dep_eval['acc'] - dense_eval['acc']):+.2f} pts"),
        ("Weight sparsity (%)", 100 * td["sparsity"], 100 * tp["sparsity"], ""),
        ("Bits per weight", td["bits"], tp["bits"], ""),
        ("Weight bytes", td["bytes"], tp["bytes"], f"{td['bytes'] / max(tp['bytes'], 1):.1f}x smaller"),
        ("Spikes per sample", td["spikes_per_sample"], tp["spikes_per_sample"], f"{-100 * spike_red:+.1f}%"),
        ("Spike rate (per neuron-step)", td["spike_rate"], tp["spike_rate"], ""),
        ("SynOps per sample (AC)", td["synops"], tp["synops"], f"{td['synops'] / max(tp['synops'], 1):.1f}x fewer"),
        ("Dense MACs per sample", td["dense_macs"], td["dense_macs"], ""),
        ("Energy estimate, uJ/sample", td["dense_energy_pj"] * 1e-6, tp["energy_pj"] * 1e-6,
         f"{td['dense_energy_pj'] / max(tp['energy_pj'], 1e-12):.1f}x less (estimate)"),
        ("Latency batch 1, ms (measured)", lat_dense["median_ms"], lat_dep["median_ms"],
         f"{lat_dense['median_ms'] / lat_dep['median_ms']:.1f}x faster"),
    ]
    import sparsesnn

    return {
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "dataset": {"name": split.name, "train": len(split.y_train), "test": len(split.y_test),
                    "features": split.x_train[0].numel(), "classes": split.classes},
        "model": repr(deployed),
        "table": [{"metric": r[0], "dense_fp32": r[1], "compressed_deployed": r[2], "change": r[3]}
                  for r in rows],
        "accuracy": {"dense": dense_eval["acc"], "compressed_float": comp_eval["acc"],
                     "deployed": dep_eval["acc"]},
        "deployed_vs_float": {"prediction_agreement": agree, "max_abs_logit_diff": max_diff},
        "spike_count_reduction": spike_red,
        "compression_ratio": td["bytes"] / max(tp["bytes"], 1),
        "speedup_batch1": lat_dense["median_ms"] / lat_dep["median_ms"],
        "latency_ms": {"dense_fp32": lat_dense, "deployed": lat_dep},
        "metrics": {"dense": rep_dense, "deployed": rep_dep},
        "layer_formats": layer_formats(deployed),
        "admm_residual": admm.history,
        "history": {"admm": hist_admm, "retrain": hist_re},
        "energy_note": M.ENERGY_NOTE,
        "baseline": ("the dense model itself: fp32 conv/linear (event/dense dispatch) + BatchNorm + "
                     "sparsesnn fused LIF, same T, batch 1" if cfg.model == "conv" else
                     "the dense model itself: fp32 nn.Linear (MKL) + sparsesnn fused LIF, same T, batch 1"),
        "machine": {"sparsesnn": sparsesnn.__version__, "info": build_info(),
                    "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
                    "platform": platform.platform(), "processor": _cpu_model(),
                    "threads": torch.get_num_threads()},
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def format_number(v: Any) -> str:
    """A table cell: thousands separators for large numbers, 3 significant digits for small."""
    if isinstance(v, float):
        if abs(v) >= 1e5:
            return f"{v:,.0f}"
        return f"{v:.3g}" if abs(v) < 10 else f"{v:,.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def table_markdown(res: dict[str, Any]) -> str:
    lines = ["| Metric | Dense fp32 | Compressed + deployed | Change |", "|---|---:|---:|---|"]
    for r in res["table"]:
        lines.append(f"| {r['metric']} | {format_number(r['dense_fp32'])} | {format_number(r['compressed_deployed'])} | {r['change']} |")
    return "\n".join(lines)


def _write(out: str, res: dict[str, Any]) -> None:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "demo.json"), "w") as f:
        json.dump(res, f, indent=1, default=str)
    m = res["machine"]
    model = res["config"].get("model", "mlp")
    md = [f"# sparsesnn demo ({res['dataset']['name']}, {model} model)", "", table_markdown(res), "",
          f"- Deployed vs fake-quantized float model: {100 * res['deployed_vs_float']['prediction_agreement']:.2f}% "
          f"same predictions, max |logit diff| {res['deployed_vs_float']['max_abs_logit_diff']:.2e}",
          f"- Energy: {res['energy_note']}",
          f"- Latency baseline: {res['baseline']}; median of interleaved rounds",
          "- Energy columns: dense fp32 = every synapse every step as a MAC (4.6 pJ); compressed = "
          "SynOps (input spikes x surviving fan-out) as ACs (0.9 pJ)",
          "- Spike reduction is ADMM + activity regularization together"
          + ("; the ablation row isolates activity regularization" if "ablation_no_activity_reg" in res
             else " (run without --no-ablation to isolate activity regularization)"),
          f"- Machine: {m['processor']}, {m['threads']} threads, {m['platform']}, torch {m['info'].get('torch')}, "
          f"1-min load average {m['load_average_1m'] or 0:.2f} during the run (latency is noisy on a loaded machine)",
          f"- Run time: {res['seconds']:.0f} s", ""]
    with open(os.path.join(out, "demo.md"), "w") as f:
        f.write("\n".join(md))
    _plot(out, res)


def _plot(out: str, res: dict[str, Any]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is in the demo extra
        return
    t = {r["metric"]: r for r in res["table"]}
    panels = [("Test accuracy (%)", "accuracy %"), ("Weight bytes", "weight bytes"),
              ("Spikes per sample", "spikes / sample"), ("Latency batch 1, ms (measured)", "latency ms (batch 1)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(14, 3.4))
    for ax, (key, label) in zip(axes, panels):
        vals = [t[key]["dense_fp32"], t[key]["compressed_deployed"]]
        names, colors = ["dense fp32", "compressed"], ["#888888", "#2a7ab0"]
        abl = res.get("ablation_no_activity_reg")
        if key == "Spikes per sample" and abl:
            vals.insert(1, abl["spikes_per_sample"])
            names.insert(1, "compr. w/o\nact. reg.")
            colors.insert(1, "#9cc3de")
        ax.bar(names, vals, color=colors)
        ax.set_title(label)
        if key == "Weight bytes":
            ax.set_yscale("log")
        for i, v in enumerate(vals):
            ax.text(i, v, format_number(float(v)), ha="center", va="bottom", fontsize=8)
    fig.suptitle(f"sparsesnn demo on {res['dataset']['name']}: {res['compression_ratio']:.1f}x smaller, "
                 f"{res['speedup_batch1']:.1f}x faster (batch 1), spikes {-100 * res['spike_count_reduction']:+.0f}%")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "demo.png"), dpi=110)
    plt.close(fig)
