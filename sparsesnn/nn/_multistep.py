"""Shared helper: run a per-frame module on multi-step input by folding time into the batch."""
from __future__ import annotations

from typing import Callable

from torch import Tensor


def fold_time(fn: Callable[[Tensor], Tensor], x: Tensor, frame_dims: int) -> Tensor:
    """Apply ``fn`` (which takes ``[N, *frame]``) to ``x``: ``[N, *frame]`` as it is, or
    multi-step ``[T, B, *frame]`` with ``T`` and ``B`` folded into one batch of ``T * B``
    (SpikingJelly's ``seq_to_ann_forward``). ``frame_dims`` is ``len(frame)``."""
    if x.dim() == frame_dims + 2:
        T, B = x.shape[:2]
        y = fn(x.flatten(0, 1))
        return y.reshape(T, B, *y.shape[1:])
    if x.dim() != frame_dims + 1:
        raise ValueError(f"input: expected {frame_dims + 1} dims [N, ...] or {frame_dims + 2} dims "
                         f"[T, B, ...], got shape {tuple(x.shape)}")
    return fn(x)
