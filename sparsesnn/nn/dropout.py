"""Dropout with one mask for all time steps (SpikingJelly ``layer.Dropout``, multi-step)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..ops import _checks as C


class Dropout(nn.Module):
    """In training, zeroes the same units at every time step of a sequence and scales the kept
    ones by ``1 / (1 - p)``; identity in eval mode. ``step_mode='m'``: input ``[T, B, *]``, the
    mask is ``[B, *]``; ``'s'``: a fresh mask per call (input ``[B, *]``).

    Why one mask: a unit dropped at some steps only would still pass its spike train through
    at the others, so the regularization would mostly average out over T.
    """

    def __init__(self, p: float = 0.5, step_mode: str = "m") -> None:
        super().__init__()
        p = C.check_finite("p", p)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"p: expected a probability in [0, 1), got {p!r}")
        C.check_choice("step_mode", step_mode, ("m", "s"))
        self.p, self.step_mode = float(p), step_mode

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        shape = x.shape[1:] if self.step_mode == "m" else x.shape
        keep = 1.0 - self.p
        dtype = x.dtype if x.is_floating_point() else torch.float32
        mask = torch.empty(shape, device=x.device, dtype=dtype).bernoulli_(keep).div_(keep)
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}, step_mode={self.step_mode}"
