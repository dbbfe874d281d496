"""Rounding schemes for quantization: nearest, truncate (toward zero), stochastic (seeded)."""
from __future__ import annotations

from typing import Optional

import torch

from .spec import ROUNDINGS


def round_values(x: torch.Tensor, rounding: str = "nearest", seed: Optional[int] = None) -> torch.Tensor:
    """Rounds ``x`` to integers (float result, same shape).

    ``nearest`` rounds half to even (``torch.round``); ``truncate`` rounds toward zero;
    ``stochastic`` returns ``floor(x + U[0, 1))`` so ``E[result] = x``; with ``seed`` it is
    reproducible (a private generator, the global RNG is untouched).
    """
    if rounding == "nearest":
        return torch.round(x)
    if rounding == "truncate":
        return torch.trunc(x)
    if rounding == "stochastic":
        gen = None
        if seed is not None:
            gen = torch.Generator(device=x.device)
            gen.manual_seed(int(seed))
        noise = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        return torch.floor(x + noise)
    raise ValueError(f"rounding: expected one of {ROUNDINGS}, got {rounding!r}")
