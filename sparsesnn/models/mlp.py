"""The demo SNN: a wide spiking MLP with a deterministic rate (thermometer) encoder.

Input ``x [B, F]`` in ``[0, 1]`` becomes binary spikes ``[T, B, F]`` (``s[t] = x > (t + 0.5)/T``:
about ``round(x T)`` spikes per pixel, no randomness, so the float and the deployed model see
the same input). Every synaptic layer therefore receives binary spikes, which is what the
event-driven, packed kernels need. Readout: the last layer's output averaged over T.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..nn import LIF
from ._native import native_forward


class SpikingMLP(nn.Module):
    """``F -> hidden[0] -> ... -> classes`` with LIF neurons; layers ``fc1..fcN``, ``lif1..``.

    Shapes: ``x [B, F]`` -> logits ``[B, classes]``. The neuron state is reset at every call,
    so one call = one input sequence of ``T`` steps.
    """

    def __init__(self, in_features: int = 64, hidden: Sequence[int] = (2048, 2048),
                 classes: int = 10, T: int = 4, tau: float = 2.0, v_threshold: float = 1.0,
                 init_gain: float = 1.0) -> None:
        super().__init__()
        if T < 1:
            raise ValueError(f"T: expected an integer >= 1, got {T}")
        self.T = int(T)
        self.register_buffer("thresholds", ((torch.arange(T, dtype=torch.float32) + 0.5) / T)
                             .view(T, 1, 1), persistent=False)
        sizes = [in_features, *hidden, classes]
        self._order: list[str] = []  # names in forward order (modules registered once, by name)
        for i, (k, n) in enumerate(zip(sizes[:-1], sizes[1:])):
            fc = nn.Linear(k, n)
            with torch.no_grad():
                # spikes are sparse 0/1 inputs: scale the init so LIF neurons fire from the start
                fc.weight.mul_(init_gain)
            self.add_module(f"fc{i + 1}", fc)
            self._order.append(f"fc{i + 1}")
            if i < len(sizes) - 2:
                lif = LIF(tau=tau, v_threshold=v_threshold, detach_reset=True, surrogate="sigmoid")
                self.add_module(f"lif{i + 1}", lif)
                self._order.append(f"lif{i + 1}")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic rate code: ``[B, F]`` in [0, 1] -> binary ``[T, B, F]``."""
        return (x.unsqueeze(0) > self.thresholds).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = native_forward(self, x)  # a deployed model's inference call: one native plan
        if y is not None:
            return y
        h = self.encode(x)
        for name in self._order:
            m = self._modules[name]
            if isinstance(m, LIF):
                m.reset()  # one call = one sequence
            h = m(h)
        return h.mean(0)
