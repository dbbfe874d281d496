"""Pure-PyTorch reference of the event-driven STDP update (tests and fallback).

Same arithmetic as ``csrc/cpu/stdp_update.cpp``: depression of the rows of active inputs, then
potentiation of the columns of active outputs, each followed by clamping (or rounding onto the
weight grid, see :mod:`sparsesnn.fixed_point`).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..fixed_point import hash_uniform, round_to_grid


def _settle(w: Tensor, index: Tensor, w_min: float, w_max: float, step: float, rounding: int,
            seed: int) -> Tensor:
    if step > 0:
        u = hash_uniform(seed, index) if rounding == 2 else None
        return round_to_grid(w, step, w_min, w_max, rounding, u)
    return w.clamp(w_min, w_max)


def stdp_update(weight_t: Tensor, pre: Tensor, post: Tensor, x_pre: Tensor, x_post: Tensor, *,
                eta_pre: float, eta_post: float, w_min: float, w_max: float, step: float = 0.0,
                rounding: int = 0, seed: int = 0) -> int:
    """In place on ``weight_t [K, N]``; ``pre, x_pre [K]``, ``post, x_post [N]`` fp32.

    Returns the number of synapse updates performed.
    """
    K, N = weight_t.shape
    dev = weight_t.device
    rows = torch.nonzero(pre != 0).flatten()
    cols = torch.nonzero(post != 0).flatten()
    f32 = torch.float32
    if rows.numel():
        d = torch.tensor(eta_pre, dtype=f32, device=dev) * x_post  # rounded like the kernel
        idx = rows[:, None] * N + torch.arange(N, device=dev)[None, :]
        weight_t[rows] = _settle(weight_t[rows] - d[None, :], idx, w_min, w_max, step, rounding, seed)
    if cols.numel():
        d = torch.tensor(eta_post, dtype=f32, device=dev) * x_pre
        idx = K * N + torch.arange(K, device=dev)[:, None] * N + cols[None, :]
        weight_t[:, cols] = _settle(weight_t[:, cols] + d[:, None], idx, w_min, w_max, step,
                                    rounding, seed)
    return int(rows.numel()) * N + K * int(cols.numel())
