"""Compression metrics in one call: size, sparsity, bits, spikes, SynOps, energy, latency.

``report(model, x)`` runs ``model`` once on ``x`` with hooks and returns, per synaptic layer and
in total: parameters, non-zeros, bits per weight, real bytes (packed buffers for deployed
layers, fp32 for float ones), compression ratio against fp32, input spike rate, SynOps
(accumulates actually performed: each input spike x its surviving fan-out) against the dense
MACs, and an energy *estimate* (0.9 pJ per AC, 4.6 pJ per MAC, 45 nm CMOS, Horowitz 2014);
per neuron layer the spike rate; optionally the measured batch-1 latency.

Conventions: numbers of operations and energy are per sample (divided by the batch size of
``x``). An input that is not binary (analog) makes its layer's operations MACs, not ACs.
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .compress.activity import neuron_types
from .compress.projections import bits_per_weight, spec_bits
from .compress.state import compressible_layers, get_state
from .nn import PackedSpikingConv2d, PackedSpikingLinear

E_AC_PJ = 0.9
E_MAC_PJ = 4.6
ENERGY_NOTE = ("estimate, not a measurement: 0.9 pJ per accumulate (AC) and 4.6 pJ per "
               "multiply-accumulate (MAC), 32-bit float, 45 nm CMOS (Horowitz, ISSCC 2014)")

_PACKED = (PackedSpikingLinear, PackedSpikingConv2d)

__all__ = ["report", "measure_latency", "synaptic_layers", "noise_robustness", "E_AC_PJ", "E_MAC_PJ",
           "ENERGY_NOTE"]


def synaptic_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Float compressible layers and deployed packed layers, in module order."""
    float_layers = compressible_layers(model)
    return {n: m for n, m in model.named_modules() if n in float_layers or isinstance(m, _PACKED)}


def _weight(layer: nn.Module) -> torch.Tensor:
    """The fp32 weight the layer computes with (dequantized for packed layers)."""
    if isinstance(layer, _PACKED):
        return layer.dequantized_weight()
    return layer.weight.detach().float()


def _size(layer: nn.Module, w: torch.Tensor) -> dict[str, Any]:
    bias = getattr(layer, "bias", None)
    n_bias = int(bias.numel()) if isinstance(bias, torch.Tensor) else 0
    params = int(w.numel()) + n_bias
    dense_bytes = 4 * params
    if isinstance(layer, _PACKED):
        bits: float = float(layer.bits)
        nbytes = int(layer.model_bytes())
    else:
        st = get_state(layer)
        bits = bits_per_weight(spec_bits(st.spec)) if st is not None and st.spec is not None else 32.0
        nbytes = w.numel() * w.element_size() + 4 * n_bias  # what is stored now (float)
    nnz = int(torch.count_nonzero(w))
    return {"params": params, "weights": int(w.numel()), "nonzeros": nnz,
            "sparsity": 1.0 - nnz / max(w.numel(), 1), "bits": bits, "bytes": nbytes,
            "dense_fp32_bytes": dense_bytes, "compression": dense_bytes / max(nbytes, 1)}


def _conv_args(layer: nn.Module) -> dict[str, Any]:
    return {k: getattr(layer, k) for k in ("stride", "padding", "dilation", "groups") if hasattr(layer, k)}


def _ops(layer: nn.Module, w: torch.Tensor, s: torch.Tensor, out_numel: int) -> dict[str, Any]:
    """SynOps (input events x surviving fan-out, exact) and dense MACs for one forward."""
    s = s.detach().float()
    binary = bool(((s == 0) | (s == 1)).all())
    nz = (s != 0).float()
    fan = (w != 0).float()
    if w.dim() == 2:
        k = w.shape[1]
        events = nz.reshape(-1, k).sum(0)  # [K] events per input neuron
        synops = float((events * fan.sum(0)).sum())
        dense = float(nz.numel() // k) * w.numel()
    else:
        # exact: every output position counts the nonzero inputs under its surviving taps
        x = nz.reshape(-1, *nz.shape[-3:])
        synops = float(F.conv2d(x, fan, **_conv_args(layer)).sum())
        dense = float(out_numel) * (w[0].numel())
    return {"binary_input": binary, "input_rate": float(nz.mean()) if nz.numel() else 0.0,
            "synops": synops, "dense_macs": dense}


@torch.no_grad()
def measure_latency(fn: Callable[[], Any], *, runs: int = 200, warmup: int = 20,
                    min_time_s: float = 0.0) -> dict[str, float]:
    """Median (and p10/p90) wall time of ``fn()`` in milliseconds after ``warmup`` calls."""
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < runs or time.perf_counter() - start < min_time_s:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    times.sort()
    q = lambda p: times[min(len(times) - 1, int(p * len(times)))]  # noqa: E731
    return {"median_ms": 1e3 * statistics.median(times), "p10_ms": 1e3 * q(0.1),
            "p90_ms": 1e3 * q(0.9), "runs": len(times)}


@torch.no_grad()
def report(model: nn.Module, x: torch.Tensor | None = None, *, latency_input: torch.Tensor | None = None,
           latency_runs: int = 200, e_ac_pj: float = E_AC_PJ, e_mac_pj: float = E_MAC_PJ,
           reset: Callable[[nn.Module], None] | None = None,
           batch_size: int | None = None) -> dict[str, Any]:
    """Metrics of ``model``; activity metrics need a batch ``x`` (``[B, ...]`` as the model takes).

    ``batch_size``: samples in ``x`` (default ``x.shape[0]``; give it for time-major input).
    Returns ``{"layers": [...], "neurons": [...], "total": {...}, "energy_note": str,
    "latency": {...} (only with latency_input)}``; per-sample op counts and energies.
    """
    syn = synaptic_layers(model)
    weights = {n: _weight(m) for n, m in syn.items()}
    rows = {n: {"name": n, "type": type(m).__name__, **_size(m, weights[n])} for n, m in syn.items()}
    neurons: dict[str, dict[str, Any]] = {}
    batch = 0
    if x is not None:
        batch = int(x.shape[0]) if batch_size is None else int(batch_size)
        captured: dict[str, dict[str, Any]] = {}
        hooks = []
        for n, m in syn.items():
            def hook(mod, inp, out, n=n):
                captured[n] = _ops(mod, weights[n], inp[0], out.numel())
            hooks.append(m.register_forward_hook(hook))
        ntypes = neuron_types()
        for n, m in model.named_modules():
            if ntypes and isinstance(m, ntypes):
                def nhook(mod, inp, out, n=n):
                    o = out.detach().float()
                    neurons[n] = {"name": n, "neurons": int(o[0].numel() // max(batch, 1)) if o.dim() > 1 else int(o.numel()),
                                  "spike_rate": float(o.mean()), "spikes_per_sample": float(o.sum()) / max(batch, 1),
                                  "elements": int(o.numel())}
                hooks.append(m.register_forward_hook(nhook))
        was_training = model.training
        model.eval()
        try:
            if reset is not None:
                reset(model)
            model(x)
        finally:
            model.train(was_training)
            for h in hooks:
                h.remove()
        for n, c in captured.items():
            per = 1.0 / batch
            ac = c["synops"] * per if c["binary_input"] else 0.0
            mac = 0.0 if c["binary_input"] else c["synops"] * per
            rows[n].update({"input_spike_rate": c["input_rate"], "binary_input": c["binary_input"],
                            "synops": c["synops"] * per, "dense_macs": c["dense_macs"] * per,
                            "energy_pj": ac * e_ac_pj + mac * e_mac_pj,
                            "dense_energy_pj": c["dense_macs"] * per * e_mac_pj})
    layer_rows = list(rows.values())
    total: dict[str, Any] = {}
    for key in ("params", "weights", "nonzeros", "bytes", "dense_fp32_bytes"):
        total[key] = sum(r[key] for r in layer_rows)
    total["sparsity"] = 1.0 - total["nonzeros"] / max(total["weights"], 1)
    total["compression"] = total["dense_fp32_bytes"] / max(total["bytes"], 1)
    total["bits"] = (sum(r["bits"] * r["weights"] for r in layer_rows) / max(total["weights"], 1)
                     if layer_rows else 0.0)  # weight-averaged bits per weight
    if x is not None:
        for key in ("synops", "dense_macs", "energy_pj", "dense_energy_pj"):
            total[key] = sum(r.get(key, 0.0) for r in layer_rows)
        elements = sum(r["elements"] for r in neurons.values())
        total["spikes_per_sample"] = sum(r["spikes_per_sample"] for r in neurons.values())
        # fraction of (neuron, step) slots that spiked, over all watched neurons
        total["spike_rate"] = total["spikes_per_sample"] * batch / elements if elements else 0.0
    out: dict[str, Any] = {"layers": layer_rows, "neurons": list(neurons.values()), "total": total,
                           "energy_note": ENERGY_NOTE, "batch": batch}
    if latency_input is not None:
        out["latency"] = measure_latency(lambda: model(latency_input), runs=latency_runs)
    return out



@torch.no_grad()
def noise_robustness(predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                     sigmas: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.5), *, seed: int = 0,
                     clamp: tuple[float, float] | None = (0.0, 1.0)) -> dict[str, Any]:
    """Accuracy on inputs corrupted by Gaussian noise, one figure per ``sigma`` (Chowdhury et
    al. report pruned SNNs against unpruned ones this way).

    ``predict`` maps a batch ``x [B, ...]`` to labels ``[B]`` or scores ``[B, C]`` (argmax
    taken); the noisy input is ``x + sigma * N(0, 1)``, clamped to ``clamp`` (default [0, 1],
    the range rate encoders accept; None: unclamped). The noise comes from its own generator
    seeded with ``seed``, the same draw for every model compared. Returns ``{"sigmas": [...],
    "accuracy": [...], "seed": seed}``.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"x: expected a floating-point torch.Tensor, got {type(x).__name__}")
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.shape[0] != x.shape[0]:
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"y: expected labels of shape ({x.shape[0]},), got {shape}")
    sig = [float(s) for s in sigmas]
    if not sig or any(not (s >= 0 and s < float("inf")) for s in sig):
        raise ValueError(f"sigmas: expected finite numbers >= 0, got {list(sigmas)}")
    if clamp is not None and not clamp[0] < clamp[1]:
        raise ValueError(f"clamp: expected (low, high) with low < high, got {clamp}")
    g = torch.Generator(device=x.device).manual_seed(int(seed))
    noise = torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
    accs = []
    for s in sig:
        xn = x + s * noise
        if clamp is not None:
            xn = xn.clamp(*clamp)
        out = predict(xn)
        pred = out.argmax(-1) if out.dim() == 2 else out
        if pred.shape != y.shape:
            raise ValueError(f"predict: expected labels [{y.shape[0]}] or scores [{y.shape[0]}, C], "
                             f"got shape {tuple(out.shape)}")
        accs.append(float((pred.to(y.device) == y).float().mean()))
    return {"sigmas": sig, "accuracy": accs, "seed": int(seed)}
