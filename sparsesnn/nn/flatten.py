"""``Flatten`` that keeps the time (and batch) dimensions."""
from __future__ import annotations

from torch import Tensor, nn

from ..ops import _checks as C


class Flatten(nn.Module):
    """Flattens each sample: ``[T, B, *]`` -> ``[T, B, prod(*)]`` (``step_mode='m'``, default)
    or ``[B, *]`` -> ``[B, prod(*)]`` (``step_mode='s'``)."""

    def __init__(self, step_mode: str = "m") -> None:
        super().__init__()
        C.check_choice("step_mode", step_mode, ("m", "s"))
        self.step_mode = step_mode

    def forward(self, x: Tensor) -> Tensor:
        keep = 2 if self.step_mode == "m" else 1
        if x.dim() < keep:
            raise ValueError(f"input: expected at least {keep} dims for step_mode={self.step_mode!r}, "
                             f"got shape {tuple(x.shape)}")
        return x.flatten(keep) if x.dim() > keep else x.unsqueeze(-1)

    def extra_repr(self) -> str:
        return f"step_mode={self.step_mode}"
