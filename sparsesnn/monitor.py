"""Spike / firing-rate monitor with forward hooks, and the plots people look at.

``with SpikeMonitor(model) as mon: model(x)`` records every neuron layer's output; then
``mon.firing_rates()`` gives each layer's mean rate and ``mon.neuron_rates(name)`` each neuron's.
:func:`plot_raster` and :func:`plot_rate_histogram` write PNGs (matplotlib is optional: only
these two functions need it).
"""
from __future__ import annotations

from typing import Iterable, Optional

import torch
from torch import Tensor, nn

from .nn import BaseNeuron

__all__ = ["SpikeMonitor", "plot_raster", "plot_rate_histogram"]


class SpikeMonitor:
    """Forward hooks on the neuron layers of ``model``.

    Args:
        model: any module.
        layers: names (as in ``named_modules``) to watch; default every sparsesnn neuron.
        record_spikes: also keep the spike tensors (on CPU, as bool) for rasters.
    Per-neuron sums are accumulated on the fly, so memory stays ``O(neurons)`` unless
    ``record_spikes``. Outputs are ``[T, B, ...]`` for multi-step layers (``step_mode='m'``,
    the default for modules without one) and ``[B, ...]`` for single-step ones.
    """

    def __init__(self, model: nn.Module, layers: Optional[Iterable[str]] = None,
                 record_spikes: bool = False) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        modules = dict(model.named_modules())
        if layers is None:
            names = [n for n, m in modules.items() if isinstance(m, BaseNeuron)]
        else:
            names = list(layers)
            missing = [n for n in names if n not in modules]
            if missing:
                raise ValueError(f"layers: {missing} not in the model; expected names from "
                                 f"named_modules(), e.g. {list(modules)[1:6]}")
        if not names:
            raise ValueError("layers: the model has no sparsesnn neuron to monitor; pass layer names")
        self.record_spikes = bool(record_spikes)
        self._sum: dict[str, Tensor] = {}
        self._steps: dict[str, int] = {}
        self.spikes: dict[str, list[Tensor]] = {n: [] for n in names}
        self._handles = [modules[n].register_forward_hook(self._hook(n, modules[n])) for n in names]

    def _hook(self, name: str, module: nn.Module):
        multi = getattr(module, "step_mode", "m") == "m"

        def hook(_mod, _inp, out):
            s = out[0] if isinstance(out, tuple) else out
            s = s.detach()
            lead = 2 if multi and s.dim() >= 2 else 1  # time and batch dims averaged over
            flat = s.reshape(*s.shape[:lead], -1).float()
            total = flat.sum(dim=tuple(range(lead))).cpu()
            self._sum[name] = self._sum.get(name, 0) + total
            self._steps[name] = self._steps.get(name, 0) + int(torch.tensor(s.shape[:lead]).prod())
            if self.record_spikes:
                self.spikes[name].append((s != 0).cpu())
        return hook

    @property
    def layers(self) -> list[str]:
        return list(self.spikes)

    def neuron_rates(self, name: str) -> Tensor:
        """Spikes per neuron per step (``[neurons]``), averaged over every recorded call."""
        if name not in self.spikes:
            raise ValueError(f"name: expected one of {self.layers}, got {name!r}")
        if name not in self._sum:
            raise ValueError(f"name: layer {name!r} has not run since the monitor started")
        return self._sum[name] / self._steps[name]

    def firing_rates(self) -> dict[str, float]:
        """Mean firing rate (spikes per neuron per step) of every layer that ran."""
        return {n: float(self.neuron_rates(n).mean()) for n in self.layers if n in self._sum}

    def reset(self) -> None:
        """Forget what was recorded (hooks stay)."""
        self._sum.clear()
        self._steps.clear()
        for v in self.spikes.values():
            v.clear()

    def remove(self) -> None:
        """Remove the hooks."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> "SpikeMonitor":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")  # files only; never needs a display
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("plotting needs matplotlib: pip install matplotlib") from e
    return plt


def plot_raster(spikes: Tensor, path: str, *, sample: int = 0, max_neurons: int = 512,
                title: str = "") -> str:
    """Spike raster PNG of ``spikes`` ``[T, B, ...]`` (batch element ``sample``) or ``[T, N]``:
    a dot at (step, neuron) for each spike. Returns ``path``."""
    if not isinstance(spikes, Tensor) or spikes.dim() < 2:
        raise ValueError(f"spikes: expected a tensor [T, N] or [T, B, ...], got "
                         f"{getattr(spikes, 'shape', type(spikes).__name__)}")
    s = spikes if spikes.dim() == 2 else spikes[:, sample].reshape(spikes.shape[0], -1)
    s = s[:, :max_neurons].detach().cpu()
    t, n = torch.nonzero(s, as_tuple=True)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.scatter(t.numpy(), n.numpy(), s=4, marker="|", color="k")
    ax.set_xlim(-0.5, s.shape[0] - 0.5)
    ax.set_ylim(-0.5, s.shape[1] - 0.5)
    ax.set_xlabel("timestep")
    ax.set_ylabel("neuron")
    ax.set_title(title or f"spike raster ({int(s.sum())} spikes)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_rate_histogram(monitor: SpikeMonitor, path: str, *, bins: int = 20) -> str:
    """One histogram per monitored layer of its neurons' firing rates (PNG). Returns ``path``."""
    if not isinstance(monitor, SpikeMonitor):
        raise ValueError(f"monitor: expected a SpikeMonitor, got {type(monitor).__name__}")
    names = list(monitor.firing_rates())
    if not names:
        raise ValueError("monitor: no layer has run yet; run the model inside the monitor first")
    plt = _pyplot()
    fig, axes = plt.subplots(len(names), 1, figsize=(6, 2.2 * len(names)), squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        r = monitor.neuron_rates(name).numpy()
        ax.hist(r, bins=bins, range=(0.0, max(1.0, float(r.max()))), color="tab:blue")
        ax.set_title(f"{name}: mean rate {r.mean():.3f}", fontsize=9)
        ax.set_ylabel("neurons")
    axes[-1, 0].set_xlabel("firing rate (spikes / neuron / step)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
