"""Thin multi-step wrappers for the stateless layers sparsesnn.nn has no module for.

A stateless layer (BatchNorm, pooling, flatten) computes the same on every timestep, so in
multi-step mode it runs once on the time-folded batch ``[T*B, ...]``; this is what
SpikingJelly's ``SeqToANNContainer`` and multi-step layers do, so results match exactly.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..ops import _checks as C

__all__ = ["SeqToANN", "SequenceDropout"]


class SeqToANN(nn.Sequential):
    """Apply ``modules`` (a torch ``nn.Sequential``) per timestep.

    ``step_mode='m'``: input ``[T, B, ...]`` is folded to ``[T*B, ...]``, run through the
    modules and unfolded to ``[T, B, ...]``. ``step_mode='s'``: input ``[B, ...]`` runs as is.
    """

    def __init__(self, *modules: nn.Module, step_mode: str = "m") -> None:
        super().__init__(*modules)
        C.check_choice("step_mode", step_mode, ("m", "s"))
        self.step_mode = step_mode

    def forward(self, x: Tensor) -> Tensor:
        if self.step_mode == "s":
            return super().forward(x)
        if x.dim() < 2:
            raise ValueError(f"x: expected a time-major tensor [T, B, ...], got shape {tuple(x.shape)}")
        T, B = x.shape[:2]
        y = super().forward(x.flatten(0, 1))
        return y.reshape(T, B, *y.shape[1:])

    def extra_repr(self) -> str:
        return f"step_mode={self.step_mode}"


class SequenceDropout(nn.Module):
    """Dropout with one mask per input sequence, shared by all T steps (SpikingJelly
    ``layer.Dropout`` / ``Dropout2d`` in multi-step mode).

    Redrawing the mask every step would average dropout out over time (see SpikingJelly's
    docstring), so the mask is drawn once per call from the first step's shape, with the same
    ``F.dropout(ones)`` draw SpikingJelly makes: under the same RNG state the masks agree.
    ``channel=True`` drops whole channels (``Dropout2d``). Input ``[T, B, ...]``.
    """

    def __init__(self, p: float = 0.5, channel: bool = False) -> None:
        super().__init__()
        if not 0.0 <= float(p) < 1.0:
            raise ValueError(f"p: expected 0 <= p < 1, got {p}")
        self.p = float(p)
        self.channel = bool(channel)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        drop = F.dropout2d if self.channel else F.dropout
        mask = drop(torch.ones_like(x[0]), self.p, True)
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}, channel={self.channel}"
