"""What the conv SNNs share: input encoding, time steps, state reset, readout.

A model is ``stem -> body -> head``: ``stem`` is the first conv + BN, ``body`` the spiking
layers, ``head`` the classifier; the logits are the head's output averaged over ``T``.
Encoders: ``"direct"`` feeds the analog image to the first conv at every step (computed once
and repeated, since the input does not change over time: ``T`` times fewer first-layer MACs);
``"rate"`` turns it into binary spikes with the deterministic thermometer code of
``SpikingMLP`` (``s[t] = x > (t + 0.5) / T`` for ``x`` in [0, 1]), so the first layer is
event-driven too.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import Tensor, nn

from ..nn import reset_net
from ..nn._neuron_factory import check_neuron, make_neuron
from ..ops import _checks as C
from ._native import native_forward

ENCODERS = ("direct", "rate")


def pair(v: Union[int, Sequence[int]], name: str) -> tuple[int, int]:
    """``v`` or ``(h, w)`` as a validated pair of positive ints."""
    t = (v, v) if isinstance(v, int) else tuple(v)
    if len(t) != 2:
        raise ValueError(f"{name}: expected an int or a pair of ints, got {v!r}")
    return (C.check_positive_int(name, t[0]), C.check_positive_int(name, t[1]))


class ConvSNN(nn.Module):
    """Base of the conv SNNs: ``x [B, C, H, W]`` -> logits ``[B, classes]``.

    The neuron state is reset at every call (one call = one input sequence of ``T`` steps), so
    ``reset_net`` between calls is harmless but not needed.
    """

    def __init__(self, in_channels: int, num_classes: int, T: int, encoder: str, neuron: str,
                 tau: float, v_threshold: float, detach_reset: bool, surrogate: str) -> None:
        super().__init__()
        self.in_channels = C.check_positive_int("in_channels", in_channels)
        self.num_classes = C.check_positive_int("num_classes", num_classes)
        self.T = C.check_positive_int("T", T)
        C.check_choice("encoder", encoder, ENCODERS)
        self.encoder, self.neuron = encoder, check_neuron(neuron)
        self.tau = C.check_greater("tau", tau, 1.0)
        self.v_threshold = C.check_finite("v_threshold", v_threshold)
        self.detach_reset, self.surrogate = bool(detach_reset), surrogate
        make_neuron(neuron, tau, v_threshold, detach_reset, surrogate)  # validates the surrogate

    def make_neuron(self) -> nn.Module:
        return make_neuron(self.neuron, self.tau, self.v_threshold, self.detach_reset, self.surrogate)

    def set_timesteps(self, T: int) -> None:
        """Run with ``T`` steps from now on (temporal pruning, LitE's T search)."""
        self.T = C.check_positive_int("T", T)

    def encode(self, x: Tensor) -> Tensor:
        """Rate code: ``[B, C, H, W]`` in [0, 1] -> binary ``[T, B, C, H, W]``."""
        th = (torch.arange(self.T, device=x.device, dtype=x.dtype) + 0.5) / self.T
        return (x.unsqueeze(0) > th.view(self.T, 1, 1, 1, 1)).to(x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x: expected [B, {self.in_channels}, H, W], got shape {tuple(x.shape)}")
        y = native_forward(self, x)  # a deployed model's inference call: one native plan
        if y is not None:
            return y
        reset_net(self)
        if self.encoder == "direct":
            h = self.stem(x)
            h = h.unsqueeze(0).expand(self.T, *h.shape)
        else:
            h = self.stem(self.encode(x))
        return self.head(self.body(h)).mean(0)
