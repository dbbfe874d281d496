"""Whole-model inference: a VGG-11-style SNN at CIFAR-10 shape, as called, per library.

Model: ``SpikingVGG("vgg11")`` (3x3 conv + BN + LIF, 2x2 max pooling, ``Linear(512, 10)``),
input 3x32x32 (seeded uniform random images; direct/analog input to the first conv, which runs
once and is repeated over time in every variant), T = 4, batch 1 and 16.

Spike rates are *set*, not trained: for each target rate (5%, 10%, 20%) every conv layer's
weights are scaled, layer by layer in forward order, until the measured rate of the LIF after it
(on the batch-16 calibration input) hits the target (bisection on the scale). The
int4 + 90%-pruned model is pruned first and calibrated separately, so all variants run at the
same rates. Each variant then reports the rates it actually measured.

Pruning is the granularity the deployed layouts store: every conv keeps the 10% of its tap rows
``(c, ky, kx)`` with the largest L2 norm (``sparsesnn.ops.pruned_conv2d.tap_mask``; the pruned
conv layout stores only kept tap rows, so unstructured zeros would leave it the dense layout),
the classifier keeps its 10% largest weights (the pruned linear layout is per weight). ``deploy``
then chooses each layer's layout by its actual bytes; the chosen layouts are reported.

Variants, each library in its own fresh process with identical weights and inputs:
  * torch dense fp32: ``nn.Conv2d``/``BatchNorm2d``/``MaxPool2d`` + a PyTorch LIF loop;
  * SpikingJelly: ``layer.Conv2d``/``BatchNorm2d``/``MaxPool2d``/``Linear`` + ``neuron.LIFNode``
    (multi-step, default backend);
  * sparsesnn event-driven: the float ``SpikingVGG`` (fp32 weights, density dispatch);
  * sparsesnn deployed int4: ``ADMM(bits=4).finalize()`` + ``deploy`` (BN folded, packed);
  * sparsesnn deployed int4 + 90% pruned: the pruned weights, ``ADMM(bits=4).finalize()`` +
    ``deploy`` (zeros stay zero through quantization; deploy reads them as the mask).
Checks in every run: logits of the fp32 variants agree (same function), and each deployed model's
logits agree with its float model after ``finalize`` with BN folded (``fold_batchnorm``: the
function deploy computes; a spike exactly at the threshold may still flip on float rounding).
Weight bytes are the real bytes of the deployed buffers (codes, indices, scales, biases).

    python bench/bench_model.py [--quick | --smoke] [--threads N] [--name model_vgg11]

Writes ``bench/results/<name>.{json,md,png}``.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bc  # noqa: E402

VGG11 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]
T, TAU, CLASSES, PRUNE = 4, 2.0, 10, 0.9
VARIANTS = ("torch_fp32", "spikingjelly", "sparsesnn_event_fp32", "sparsesnn_int4", "sparsesnn_int4_pruned90")


def plan(size: str) -> dict:
    if size == "smoke":
        return dict(cfg=[8, "M", 16, "M"], image=8, rates=[0.1], batches=[1, 2], timing=bc.SMOKE_TIMING)
    # A batch-16 forward takes long enough that a few samples give a stable median.
    timing = {"warmup": 1, "min_time": 0.05, "repeat": 3 if size == "quick" else 5}
    rates = [0.1] if size == "quick" else [0.05, 0.1, 0.2]
    return dict(cfg=VGG11, image=32, rates=rates, batches=[1, 16], timing=timing)


def _images(n: int, image: int) -> torch.Tensor:
    return torch.rand(n, 3, image, image, generator=bc.generator("images", n, image))


# ---- calibration (a sparsesnn process) ----------------------------------------------------
def _vgg(cfg, image):
    from sparsesnn.models import SpikingVGG

    torch.manual_seed(0)
    return SpikingVGG(cfg, 3, CLASSES, T, image_size=image, tau=TAU).eval()


def _set_rates(model, x: torch.Tensor, rate: float, iters: int = 16) -> list[float]:
    """Scale each synaptic layer that feeds a neuron until that neuron's rate is ``rate``."""
    from sparsesnn.nn import BaseNeuron

    mods = [*model.stem, "repeat", *model.body, *model.head]
    h, i, achieved = x, 0, []
    with torch.no_grad():
        while i < len(mods):
            m = mods[i]
            k = i + 1
            while k < len(mods) and (mods[k] == "repeat" or isinstance(mods[k], nn.modules.batchnorm._BatchNorm)):
                k += 1
            if not isinstance(m, (nn.Conv2d, nn.Linear)) or k == len(mods) or not isinstance(mods[k], BaseNeuron):
                h = h.unsqueeze(0).expand(T, *h.shape).contiguous() if m == "repeat" else m(h)
                i += 1
                continue
            group, w0 = mods[i:k + 1], m.weight.clone()

            def run(log_scale: float) -> torch.Tensor:
                m.weight.copy_(w0 * float(torch.exp(torch.tensor(log_scale))))
                out = h
                for g in group:
                    if isinstance(g, BaseNeuron):
                        g.reset()
                    out = out.unsqueeze(0).expand(T, *out.shape).contiguous() if g == "repeat" else g(out)
                return out

            lo, hi = -8.0, 8.0
            for _ in range(iters):  # the rate grows with the scale
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if float(run(mid).mean()) < rate else (lo, mid)
            h = run(hi)
            achieved.append(float(h.mean()))
            i = k + 1
    return achieved


def prune(model: nn.Module, sparsity: float) -> None:
    """Zero ``sparsity`` of every conv's tap rows (``tap_mask``) and of every linear's weights."""
    from sparsesnn.compress import project_sparse
    from sparsesnn.ops.pruned_conv2d import tap_mask

    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, nn.Conv2d):
                layer.weight.mul_(tap_mask(layer.weight, sparsity))
            elif isinstance(layer, nn.Linear):
                layer.weight.copy_(project_sparse(layer.weight, sparsity)[0])


def calibrate(cfg, image: int, rates, batch: int, path: str) -> dict:
    """Weights for every rate (dense and 90%-pruned), saved to ``path``; rates achieved."""
    x = _images(batch, image)
    weights, achieved = {}, {}
    for rate in rates:
        for variant in ("dense", "pruned"):
            m = _vgg(cfg, image)
            if variant == "pruned":
                prune(m, PRUNE)
            achieved[f"{rate}/{variant}"] = _set_rates(m, x, rate)
            weights[f"{rate}/{variant}"] = {k: v.clone() for k, v in m.state_dict().items()}
    torch.save(weights, path)
    return achieved


# ---- plain PyTorch and SpikingJelly models ------------------------------------------------
class _TorchLIF(nn.Module):
    """LIF, decay_input, hard reset to 0 (sparsesnn's / SpikingJelly's default), in PyTorch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v, out = torch.zeros_like(x[0]), []
        for t in range(x.shape[0]):
            v = v + (x[t] - v) / TAU
            s = (v >= 1.0).to(x.dtype)
            v = v * (1.0 - s)
            out.append(s)
        return torch.stack(out)


class _Fold(nn.Module):
    """Run a per-frame module on ``[T, B, ...]`` (time folded into the batch)."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.m(x.flatten(0, 1))
        return y.reshape(*x.shape[:2], *y.shape[1:])


class _Net(nn.Module):
    """stem (conv + BN, once) -> repeat over T -> body -> head -> mean over T."""

    def __init__(self, stem, body, head) -> None:
        super().__init__()
        self.stem, self.body, self.head = stem, body, head
        self.before = lambda: None  # (not "reset": SpikingJelly's reset_net would call it)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.before()
        h = self.stem(x)
        h = h.unsqueeze(0).expand(T, *h.shape)
        return self.head(self.body(h)).mean(0)


def _build(cfg, image: int, conv, bn, pool, neuron, flatten, linear, fold) -> _Net:
    """The SpikingVGG layout from the given layer factories (names match its state_dict)."""
    first = cfg[0]
    stem = nn.Sequential(nn.Conv2d(3, first, 3, 1, 1, bias=False), nn.BatchNorm2d(first))
    body, c, side = [neuron()], first, image
    for v in cfg[1:]:
        if v == "M":
            body.append(pool())
            side //= 2
        else:
            body += [conv(c, v), bn(v), neuron()]
            c = v
    head = nn.Sequential(flatten(), linear(c * side * side, CLASSES))
    return _Net(stem, nn.Sequential(*body), head)


def _load(net: nn.Module, state: dict) -> None:
    own = net.state_dict()
    mapped = {}
    for k, v in state.items():  # the peers' modules may wrap the layer (``.m.``)
        cand = [o for o in own if o.replace(".m.", ".") == k]
        if len(cand) == 1:
            mapped[cand[0]] = v
    net.load_state_dict(mapped, strict=True)


def _time_all(net, batches, image, timing) -> dict:
    out = {}
    with torch.inference_mode():
        for b in batches:
            x = _images(b, image)
            out[str(b)] = {"seconds": bc.timeit(lambda: net(x), **timing), "logits": net(x).tolist()}
    return out


def run_torch(cfg, image, batches, timing, weights: str, rate: float, **_) -> dict:
    net = _build(cfg, image, lambda c, o: _Fold(nn.Conv2d(c, o, 3, 1, 1, bias=False)),
                 lambda c: _Fold(nn.BatchNorm2d(c)), lambda: _Fold(nn.MaxPool2d(2)), _TorchLIF,
                 lambda: nn.Flatten(2), nn.Linear, _Fold)
    _load(net, torch.load(weights, weights_only=True)[f"{rate}/dense"])
    return _time_all(net.eval(), batches, image, timing)


def run_spikingjelly(cfg, image, batches, timing, weights: str, rate: float, **_) -> dict:
    from spikingjelly.activation_based import functional, layer, neuron

    net = _build(cfg, image, lambda c, o: layer.Conv2d(c, o, 3, 1, 1, bias=False, step_mode="m"),
                 lambda c: layer.BatchNorm2d(c, step_mode="m"), lambda: layer.MaxPool2d(2, step_mode="m"),
                 lambda: neuron.LIFNode(tau=TAU, detach_reset=True, step_mode="m"),
                 lambda: layer.Flatten(step_mode="m"), lambda k, n: layer.Linear(k, n, step_mode="m"), None)
    net.before = lambda: functional.reset_net(net)
    _load(net, torch.load(weights, weights_only=True)[f"{rate}/dense"])
    return _time_all(net.eval(), batches, image, timing)


def run_sparsesnn(cfg, image, batches, timing, weights: str, rate: float, **_) -> dict:
    from sparsesnn.compress import ADMM
    from sparsesnn.deploy import deploy, fold_batchnorm, layer_formats
    from sparsesnn.nn import BaseNeuron

    state = torch.load(weights, weights_only=True)
    res = {}
    for variant in ("sparsesnn_event_fp32", "sparsesnn_int4", "sparsesnn_int4_pruned90"):
        m = _vgg(cfg, image)
        m.load_state_dict(state[f"{rate}/{'pruned' if variant.endswith('90') else 'dense'}"])
        check = {}
        if variant != "sparsesnn_event_fp32":
            # Quantization only: the pruned weights are already zero (at the layouts' granularity).
            ADMM(m, bits=4).finalize()
            folded = fold_batchnorm(m).eval()  # the float function deploy must compute
            with torch.inference_mode():
                fake = {str(b): folded(_images(b, image)).tolist() for b in batches}
            m = deploy(m)
            formats = layer_formats(m)
            nbytes = sum(f["bytes"] for f in formats.values())
            layouts = {n: f"{f['layout']} {f['format']} {f['bytes']} B" for n, f in formats.items()}
        else:
            nbytes = sum(p.numel() * 4 for n, p in m.named_parameters() if "weight" in n and p.dim() > 1)
            nbytes += sum(p.numel() * 4 for n, p in m.named_parameters() if n.endswith("bias"))
            layouts, fake = {}, None
        rates = []
        hooks = [l.register_forward_hook(lambda mod, i, o: rates.append(float(o.float().mean())))
                 for l in m.modules() if isinstance(l, BaseNeuron)]
        with torch.inference_mode():
            m(_images(max(batches), image))
        for h in hooks:
            h.remove()
        res[variant] = {"bytes": nbytes, "layouts": layouts, "spike_rates": rates,
                        **_time_all(m.eval(), batches, image, timing)}
        if fake is not None:
            res[variant]["check_vs_fake_quant"] = {b: _agreement(res[variant][b]["logits"], fake[b]) for b in fake}
    return res


# ---- orchestration ------------------------------------------------------------------------
def _agreement(a: list, b: list) -> dict:
    ta, tb = torch.tensor(a), torch.tensor(b)
    return {"max_abs_diff": float((ta - tb).abs().max()),
            "same_argmax": float((ta.argmax(-1) == tb.argmax(-1)).float().mean())}


def main() -> None:
    p = bc.parser(__doc__)
    p.add_argument("--name", default="model_vgg11")
    args = bc.start(p.parse_args())
    cfg = plan(args.size)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "weights.pt")
        achieved = bc.isolated("bench_model:calibrate", cfg=cfg["cfg"], image=cfg["image"],
                               rates=cfg["rates"], batch=max(cfg["batches"]), path=path)
        print("per-layer spike rates set by weight scaling:", achieved, flush=True)
        runs: dict[float, dict[str, Any]] = {}
        for rate in cfg["rates"]:
            kw = dict(cfg, weights=path, rate=rate)
            r = {"torch_fp32": bc.isolated("bench_model:run_torch", **kw),
                 "spikingjelly": bc.isolated("bench_model:run_spikingjelly", optional=True, **kw)}
            r.update(bc.isolated("bench_model:run_sparsesnn", **kw))
            runs[rate] = r
    records, rows = [], []
    for rate, r in runs.items():
        base = r["torch_fp32"]
        for b in cfg["batches"]:
            rec = {"rate": rate, "batch": b}
            for v in VARIANTS:
                if r.get(v) is None:
                    continue
                rec[f"{v}_ms"] = 1e3 * r[v][str(b)]["seconds"]
                if v != "torch_fp32":
                    rec[f"{v}_vs_torch"] = base[str(b)]["seconds"] / r[v][str(b)]["seconds"]
                if r.get("spikingjelly") and v.startswith("sparsesnn"):
                    rec[f"{v}_vs_sj"] = r["spikingjelly"][str(b)]["seconds"] / r[v][str(b)]["seconds"]
            rec["check_sparsesnn_vs_torch"] = _agreement(r["sparsesnn_event_fp32"][str(b)]["logits"],
                                                         base[str(b)]["logits"])
            if r.get("spikingjelly"):
                rec["check_sj_vs_torch"] = _agreement(r["spikingjelly"][str(b)]["logits"], base[str(b)]["logits"])
            records.append(rec)
            rows.append([rate, b] + [rec.get(f"{v}_ms") for v in VARIANTS]
                        + [rec.get("sparsesnn_int4_pruned90_vs_torch"), rec.get("sparsesnn_int4_pruned90_vs_sj")])
    dense_bytes = runs[cfg["rates"][0]]["sparsesnn_event_fp32"]["bytes"]
    sizes = {v: runs[cfg["rates"][0]][v]["bytes"] for v in VARIANTS if v.startswith("sparsesnn")}
    measured = {rate: {v: r[v]["spike_rates"] for v in VARIANTS if v.startswith("sparsesnn")}
                for rate, r in runs.items()}
    md = [f"Model: SpikingVGG cfg {cfg['cfg']}, input 3x{cfg['image']}x{cfg['image']}, T={T}, LIF tau {TAU}; "
          "per-layer spike rates set by scaling each layer's weights until its LIF's measured rate hits the "
          "target (bisection, batch-16 calibration input); the pruned model is calibrated after pruning.",
          "", bc.markdown_table(["target rate", "batch"] + [f"{v} ms" for v in VARIANTS]
                                + ["int4+pruned speedup vs torch", "vs SpikingJelly"], rows), "",
          "Weight bytes: " + ", ".join(f"{v} {n:,}" for v, n in sizes.items())
          + f" (fp32 {dense_bytes / sizes['sparsesnn_int4']:.1f}x / "
            f"{dense_bytes / sizes['sparsesnn_int4_pruned90']:.1f}x of int4 / int4+pruned)", "",
          "Measured per-layer spike rates (batch " + str(max(cfg["batches"])) + "): "
          + "; ".join(f"target {rate}: " + ", ".join(f"{v.replace('sparsesnn_', '')} "
                                                      f"[{' '.join(f'{x:.3f}' for x in rs)}]" for v, rs in d.items())
                      for rate, d in measured.items()), "",
          "Same function check (logits vs torch fp32): " + "; ".join(
              f"rate {r['rate']} batch {r['batch']}: sparsesnn max|diff| {r['check_sparsesnn_vs_torch']['max_abs_diff']:.2g}"
              + (f", SpikingJelly {r['check_sj_vs_torch']['max_abs_diff']:.2g}" if "check_sj_vs_torch" in r else "")
              for r in records),
          "", "Deployed vs its float model after finalize (fake-quantized weights, BN folded), logits: " + "; ".join(
              f"rate {rate} {v.replace('sparsesnn_', '')} batch {b}: max|diff| {c['max_abs_diff']:.2g}, "
              f"same argmax {100 * c['same_argmax']:.0f}%"
              for rate, r in runs.items() for v in ("sparsesnn_int4", "sparsesnn_int4_pruned90")
              for b, c in r[v]["check_vs_fake_quant"].items()),
          "", "Layouts chosen by deploy (by bytes), int4 + 90% pruned: " + ", ".join(
              f"{n}: {f}" for n, f in runs[cfg["rates"][0]]["sparsesnn_int4_pruned90"]["layouts"].items())]
    layouts = {v: runs[cfg["rates"][0]][v]["layouts"] for v in ("sparsesnn_int4", "sparsesnn_int4_pruned90")}
    bc.write_results(args.name, {"config": cfg, "calibrated_rates": achieved, "measured_rates": measured,
                                 "bytes": sizes, "dense_fp32_bytes": dense_bytes, "layouts": layouts,
                                 "checks_vs_fake_quant": {rate: {v: r[v]["check_vs_fake_quant"] for v in layouts}
                                                          for rate, r in runs.items()},
                                 "records": records},
                     "\n".join(md), args.machine)
    _plot(args.name, records, cfg)
    print("\n".join(md))


def _plot(name: str, records: list, cfg: dict) -> None:
    plt = bc.pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, len(cfg["batches"]), figsize=(6 * len(cfg["batches"]), 4), squeeze=False)
    for ax, b in zip(axes[0], cfg["batches"]):
        sel = [r for r in records if r["batch"] == b]
        width = 0.8 / len(VARIANTS)
        for j, v in enumerate(VARIANTS):
            xs = [i + j * width for i in range(len(sel))]
            ax.bar(xs, [r.get(f"{v}_ms", 0) for r in sel], width, label=v)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(sel))])
        ax.set_xticklabels([f"{100 * r['rate']:.0f}% spikes" for r in sel])
        ax.set_yscale("log")
        ax.set_ylabel("ms per forward (T steps)")
        ax.set_title(f"batch {b}")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"Whole-model inference, SpikingVGG {cfg['cfg'][:4]}..., T={T}")
    fig.tight_layout()
    fig.savefig(bc.RESULTS / f"{name}.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
