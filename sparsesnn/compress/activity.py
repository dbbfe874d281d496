"""Activity regularization: a penalty on spike counts that lowers firing rates.

Forward hooks on the spiking neuron layers record their output spikes ``[T, B, ...]``;
``penalty()`` returns ``sum_l weight_l * mean(spikes_l)`` (the firing rate, differentiable through
the surrogate gradient), optionally only above a target rate. Used alone or with ADMM
(Deng et al. 2021 add it to the ADMM loss to cut the number of accumulates).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
from torch import nn

from ..ops._checks import check_finite
from . import distributed as D


def neuron_types() -> tuple[type, ...]:
    """Our spiking neuron classes that are present in this build."""
    from .. import nn as snn

    return tuple(getattr(snn, n) for n in ("LIF", "PLIF", "IF") if hasattr(snn, n))


def neuron_layers(model: nn.Module) -> dict[str, nn.Module]:
    """``{name: neuron module}`` for every LIF/PLIF/IF in ``model``."""
    types = neuron_types()
    if not types:
        return {}
    return {n: m for n, m in model.named_modules() if isinstance(m, types)}


class ActivityRegularizer:
    """Penalize spike counts of chosen neuron layers.

    Args:
        model: the network.
        weight: default penalty weight per layer (>= 0).
        layers: names of the layers to watch (default: every LIF/PLIF/IF); unknown names raise
            ValueError naming ``layers``. A mapping ``{name: weight}`` gives per-layer weights.
        target_rate: penalize only the excess ``relu(rate - target_rate)`` (default 0).
        by_count: weight each layer's rate by its share of the neurons, times the number of
            layers, ``L * N_l / sum_k N_k`` (default True), so the penalty tracks the total
            spike count (Deng et al.) and equals the plain sum of rates when all layers are
            equally wide; False: the plain sum of per-layer rates (the old behaviour).
    """

    def __init__(self, model: nn.Module, weight: float = 1e-2, *,
                 layers: Iterable[str] | Mapping[str, float] | None = None,
                 target_rate: float = 0.0, by_count: bool = True) -> None:
        self.weight = check_finite("weight", weight)
        if self.weight < 0:
            raise ValueError(f"weight: expected a number >= 0, got {weight}")
        self.target_rate = check_finite("target_rate", target_rate)
        if not 0.0 <= self.target_rate <= 1.0:
            raise ValueError(f"target_rate: expected a rate in [0, 1], got {target_rate}")
        # DDP: hook the wrapped model's neurons; names may carry the 'module.' prefix
        wrapped = D.unwrap(model) is not model
        model = D.unwrap(model)
        if isinstance(layers, Mapping):
            layers = {D.strip_prefix(n, wrapped): w for n, w in layers.items()}
        elif layers is not None:
            layers = [D.strip_prefix(n, wrapped) for n in layers]
        modules = dict(model.named_modules())
        if layers is None:
            chosen = {n: self.weight for n in neuron_layers(model)}
            if not chosen:
                raise ValueError("layers: model has no LIF/PLIF/IF layer; name the spiking layers")
        else:
            items = layers.items() if isinstance(layers, Mapping) else ((n, self.weight) for n in layers)
            chosen = {n: check_finite(f"layers[{n!r}]", w) for n, w in items}
            bad = [n for n in chosen if n not in modules]
            if bad:
                raise ValueError(f"layers: unknown layer names {bad}")
        self.layer_weights = chosen
        self.by_count = bool(by_count)
        self._neurons: dict[str, int] = {}  # neurons per sample, seen by the hooks
        self.enabled = True
        self._captured: dict[str, list[torch.Tensor]] = {n: [] for n in chosen}
        self._spikes: dict[str, float] = {n: 0.0 for n in chosen}  # running sums for rates
        self._counts: dict[str, int] = {n: 0 for n in chosen}
        self.last_rates: dict[str, float] = {}  # global (all-rank) rates of the last penalty()
        self._hooks = [modules[n].register_forward_hook(self._make_hook(n)) for n in chosen]

    def _make_hook(self, name: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            s = output[0] if isinstance(output, tuple) else output
            if not isinstance(s, torch.Tensor):
                return
            with torch.no_grad():
                # [T, B, ...] (multi-step) or [B, ...]: neurons per sample
                lead = s.shape[0] * s.shape[1] if s.dim() >= 3 else s.shape[0]
                self._neurons[name] = s.numel() // max(lead, 1)
                self._spikes[name] += float(s.detach().sum())
                self._counts[name] += s.numel()
            if self.enabled and s.requires_grad:
                self._captured[name].append(s)
        return hook

    def penalty(self) -> torch.Tensor:
        """Weighted firing-rate penalty of the forwards since the last call; clears the record.

        Under DDP the rate is the *global* one (all ranks' spikes, one all-reduce per call), so
        the ``relu(rate - target_rate)`` gate and the loss value agree on every rank and equal
        the single-process value on the global batch; the gradient stays the local rate's,
        which DDP then averages into the global rate's gradient.
        """
        rates: dict[str, torch.Tensor] = {}
        for name, w in self.layer_weights.items():
            caps = self._captured[name]
            if caps and w != 0:
                rates[name] = torch.stack([c.float().mean() for c in caps]).mean()
            caps.clear()
        if rates and D.active():
            glob = D.all_reduce_(torch.stack([r.detach() for r in rates.values()]), "mean")
            rates = {n: r + (g - r.detach()) for (n, r), g in zip(rates.items(), glob)}
        self.last_rates = {n: float(r.detach()) for n, r in rates.items()}
        total: torch.Tensor | None = None
        share = self._shares(list(rates))
        for name, rate in rates.items():
            if self.target_rate > 0:
                rate = torch.relu(rate - self.target_rate)
            term = self.layer_weights[name] * share[name] * rate
            total = term if total is None else total + term
        return total if total is not None else torch.zeros(())

    def _shares(self, names: list[str]) -> dict[str, float]:
        """``L * N_l / sum_k N_k`` per layer (``by_count``), else 1."""
        if not self.by_count or not names:
            return {n: 1.0 for n in names}
        sizes = {n: self._neurons.get(n, 1) for n in names}
        tot = sum(sizes.values())
        return {n: len(names) * sizes[n] / tot for n in names}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The global rates the last penalty used (identical on every rank under DDP)."""
        return {f"{n}.rate": torch.tensor(r, dtype=torch.float64) for n, r in self.last_rates.items()}

    def spike_rates(self, reset: bool = True, reduce: bool = False) -> dict[str, float]:
        """Mean firing rate per watched layer since the last reset.

        ``reduce=True`` sums spikes and counts over all ranks first (a collective: every rank
        must call it); the default stays local so rank-0-only reporting cannot hang.
        """
        names = list(self._spikes)
        spikes, counts = [self._spikes[n] for n in names], [self._counts[n] for n in names]
        if reduce:
            both = D.all_reduce_floats(spikes + counts, "sum")
            spikes, counts = both[:len(names)], both[len(names):]
        out = {n: (s / c if c else 0.0) for n, s, c in zip(names, spikes, counts)}
        if reset:
            self.reset_stats()
        return out

    def reset_stats(self) -> None:
        for n in self._spikes:
            self._spikes[n] = 0.0
            self._counts[n] = 0

    def step(self) -> None:
        """Nothing to update per step (hook-compatible with ADMM)."""

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
