"""Surrogate derivatives for the spike nonlinearity (SpikingJelly's definitions).

The forward is always the Heaviside step ``S = (x >= 0)``; backward uses ``sg'(x)``. Ids match
``csrc/include/sparsesnn/common.h``.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

# name -> (kernel id, default alpha)
SURROGATES: dict[str, tuple[int, float]] = {
    "sigmoid": (0, 4.0),
    "atan": (1, 2.0),
    "piecewise_quadratic": (2, 1.0),
    "superspike": (3, 1.0),
    "triangle": (4, 1.0),
}
ALIASES = {"fast_sigmoid": "superspike", "arctan": "atan"}


def resolve(name: str, alpha: float | None) -> tuple[str, int, float]:
    """Canonical name, kernel id and alpha (default when ``alpha`` is None); ValueError if unknown."""
    if not isinstance(name, str):
        raise ValueError(f"surrogate: expected a name in {sorted(SURROGATES)}, got {name!r}")
    key = ALIASES.get(name.lower(), name.lower())
    if key not in SURROGATES:
        raise ValueError(f"surrogate: expected one of {sorted(SURROGATES) + sorted(ALIASES)}, got {name!r}")
    kind, default_alpha = SURROGATES[key]
    if alpha is None:
        alpha = default_alpha
    alpha = float(alpha)
    if not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha: expected a finite number > 0, got {alpha}")
    return key, kind, alpha


def _sigmoid(x: torch.Tensor, a: float) -> torch.Tensor:
    s = torch.sigmoid(a * x)
    return a * s * (1 - s)


def _atan(x: torch.Tensor, a: float) -> torch.Tensor:
    return a / (2 * (1 + (math.pi / 2 * a * x) ** 2))


def _piecewise_quadratic(x: torch.Tensor, a: float) -> torch.Tensor:
    return (a - a * a * x.abs()).clamp_min(0)


def _superspike(x: torch.Tensor, a: float) -> torch.Tensor:
    return a / (1 + x.abs()) ** 2


def _triangle(x: torch.Tensor, a: float) -> torch.Tensor:
    return a * (1 - x.abs()).clamp_min(0)


GRADS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "sigmoid": _sigmoid,
    "atan": _atan,
    "piecewise_quadratic": _piecewise_quadratic,
    "superspike": _superspike,
    "triangle": _triangle,
}


def surrogate_grad(name: str, x: torch.Tensor, alpha: float | None = None) -> torch.Tensor:
    """``sg'(x)`` for surrogate ``name``."""
    key, _, a = resolve(name, alpha)
    return GRADS[key](x, a)


class _SpikeFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, name: str, alpha: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.name, ctx.alpha = name, alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * GRADS[ctx.name](x, ctx.alpha), None, None


def spike(x: torch.Tensor, name: str = "sigmoid", alpha: float | None = None) -> torch.Tensor:
    """Heaviside ``x >= 0`` with the surrogate gradient ``name`` (pure PyTorch)."""
    key, _, a = resolve(name, alpha)
    return _SpikeFn.apply(x, key, a)
