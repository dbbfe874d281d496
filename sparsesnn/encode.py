"""Spike encoders: analog input ``[B, ...]`` -> binary spike trains ``[T, B, ...]`` (float 0/1).

Random encoders take a ``seed`` and draw from their own ``torch.Generator``, so the spikes do
not depend on (and do not advance) the global RNG: the same seed gives the same spikes on every
rank and every run.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["rate", "poisson", "bernoulli", "latency", "delta"]


def _check_x(x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"x: expected a floating-point tensor, got dtype {x.dtype}")


def _check_T(T: int) -> int:
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T: expected an integer >= 1, got {T!r}")
    return T


def _check_unit(x: Tensor) -> None:
    if x.numel() and (bool((x < 0).any()) or bool((x > 1).any())):
        raise ValueError(f"x: expected values in [0, 1], got min {x.min().item():g}, max {x.max().item():g}")


def _generator(seed: Optional[int], device: torch.device) -> Optional[torch.Generator]:
    if seed is None:
        return None
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def bernoulli(x: Tensor, T: int, *, seed: Optional[int] = None) -> Tensor:
    """Rate code: each step spikes with probability ``x`` (in [0, 1]), independently.

    Shapes: ``x [B, ...]`` -> ``[T, B, ...]``. ``seed`` None uses the global RNG.
    """
    _check_x(x)
    _check_unit(x)
    T = _check_T(T)
    u = torch.rand((T, *x.shape), generator=_generator(seed, x.device), device=x.device, dtype=x.dtype)
    return (u < x).to(x.dtype)


def poisson(x: Tensor, T: int, *, dt: float = 1e-3, max_rate: float = 1000.0,
            seed: Optional[int] = None) -> Tensor:
    """Poisson rate code: ``x`` in [0, 1] scales ``max_rate`` (Hz); a step of ``dt`` seconds
    spikes with probability ``1 - exp(-rate * dt)`` (a Poisson process seen through bins that
    hold at most one spike). Shapes: ``x [B, ...]`` -> ``[T, B, ...]``.
    """
    _check_x(x)
    _check_unit(x)
    if not dt > 0 or not max_rate > 0:
        raise ValueError(f"dt, max_rate: expected > 0, got dt={dt}, max_rate={max_rate}")
    p = -torch.expm1(-x * (max_rate * dt))
    return bernoulli(p, T, seed=seed)


def rate(x: Tensor, T: int, *, seed: Optional[int] = None) -> Tensor:
    """Alias of :func:`bernoulli` (the rate code SpikingJelly's PoissonEncoder and snnTorch's
    ``spikegen.rate`` implement)."""
    return bernoulli(x, T, seed=seed)


def latency(x: Tensor, T: int, *, threshold: float = 0.0, linear: bool = True,
            tau: float = 1.0) -> Tensor:
    """Time-to-first-spike code: one spike per input, earlier for larger ``x`` (in [0, 1]).

    ``linear=True``: spike at step ``round((1 - x) * (T - 1))``; else the RC-charging time
    ``tau * ln(x / (x - threshold))`` scaled to ``[0, T-1]`` over the batch's largest finite time.
    Inputs ``<= threshold`` never spike. Shapes: ``x [B, ...]`` -> ``[T, B, ...]``.
    """
    _check_x(x)
    _check_unit(x)
    T = _check_T(T)
    fires = x > threshold
    if linear:
        t = torch.round((1 - x) * (T - 1))
    else:
        if not tau > 0:
            raise ValueError(f"tau: expected > 0, got {tau}")
        safe = torch.where(fires, x, torch.ones_like(x))
        t = tau * torch.log(safe / (safe - threshold).clamp_min(torch.finfo(x.dtype).tiny))
        tmax = t[fires].max() if bool(fires.any()) else torch.ones((), dtype=x.dtype)
        t = torch.round(t / tmax.clamp_min(torch.finfo(x.dtype).tiny) * (T - 1))
    steps = torch.arange(T, device=x.device, dtype=x.dtype).reshape(T, *([1] * x.dim()))
    return ((steps == t.clamp(0, T - 1)) & fires).to(x.dtype)


def delta(x: Tensor, *, threshold: float = 0.1, off_spikes: bool = False,
          padding: bool = False) -> Tensor:
    """Delta (change) code of a time-major signal ``x [T, B, ...]``: a spike where
    ``x[t] - x[t-1] >= threshold``; with ``off_spikes`` also ``-1`` where it is ``<= -threshold``.

    ``padding=False``: step 0 compares against 0 (the signal's onset is a change); True: step 0
    compares against itself (no spike at t=0). Output has the shape of ``x``.
    """
    _check_x(x)
    if x.dim() < 1 or x.shape[0] < 1:
        raise ValueError(f"x: expected a time-major tensor [T, ...] with T >= 1, got shape {tuple(x.shape)}")
    if not threshold > 0:
        raise ValueError(f"threshold: expected > 0, got {threshold}")
    prev = torch.cat([x[:1] if padding else torch.zeros_like(x[:1]), x[:-1]])
    d = x - prev
    out = (d >= threshold).to(x.dtype)
    if off_spikes:
        out = out - (d <= -threshold).to(x.dtype)
    return out
