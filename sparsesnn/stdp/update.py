"""``stdp_update_``: event-driven pair STDP, in place, on the compiled kernel.

A plain function (no autograd: STDP is a local learning rule, not a gradient), called once per
time step. Arguments are checked here, before any pointer is taken.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .. import _ext
from ..fixed_point import ROUNDINGS
from ..ops._checks import check_finite, check_tensor
from . import reference

__all__ = ["stdp_update_"]


def _vector(name: str, t: object, n: int, like: Tensor) -> Tensor:
    t = check_tensor(name, t)
    if t.dtype != torch.float32:
        raise ValueError(f"{name}: expected dtype float32, got {str(t.dtype).replace('torch.', '')}")
    if tuple(t.shape) != (n,):
        raise ValueError(f"{name}: expected shape ({n},), got {tuple(t.shape)}")
    if t.device != like.device:
        raise ValueError(f"{name}: expected device {like.device} (same as weight_t), got {t.device}")
    return t.contiguous()


def stdp_update_(weight_t: Tensor, pre: Tensor, post: Tensor, x_pre: Tensor, x_post: Tensor, *,
                 eta_pre: float, eta_post: float, w_min: float = 0.0, w_max: float = 1.0,
                 step: float = 0.0, rounding: str = "nearest", seed: int = 0) -> int:
    """Pair STDP with traces on ``weight_t [K, N]`` (pre x post, fp32, contiguous), in place.

    Depression first, on the rows of active inputs ``pre [K]``: ``w -= eta_pre * x_post``;
    then potentiation, on the columns of active outputs ``post [N]``: ``w += eta_post * x_pre``.
    Each updated weight is clamped to ``[w_min, w_max]``; with ``step > 0`` it is rounded onto
    the grid ``step * k`` (``rounding``: nearest, truncate or stochastic with a counter-based
    hash of ``(seed, index)``; pass a new ``seed`` each call). Returns the number of synapse
    updates performed (``#pre * N + K * #post``).
    """
    w = check_tensor("weight_t", weight_t)
    if w.dtype != torch.float32 or w.dim() != 2:
        raise ValueError(f"weight_t: expected a 2-D float32 tensor [K, N], got dtype "
                         f"{str(w.dtype).replace('torch.', '')} and shape {tuple(w.shape)}")
    if not w.is_contiguous():
        raise ValueError("weight_t: expected a contiguous tensor (updated in place), got strides "
                         f"{w.stride()}")
    K, N = w.shape
    pre = _vector("pre", pre, K, w)
    post = _vector("post", post, N, w)
    x_pre = _vector("x_pre", x_pre, K, w)
    x_post = _vector("x_post", x_post, N, w)
    eta_pre, eta_post = check_finite("eta_pre", eta_pre), check_finite("eta_post", eta_post)
    w_min, w_max = check_finite("w_min", w_min), check_finite("w_max", w_max)
    if not w_min <= w_max:
        raise ValueError(f"w_min, w_max: expected w_min <= w_max, got {w_min} and {w_max}")
    step = check_finite("step", step)
    if step < 0:
        raise ValueError(f"step: expected >= 0 (0: no rounding), got {step}")
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding: expected one of {tuple(ROUNDINGS)}, got {rounding!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 32:
        raise ValueError(f"seed: expected an integer in [0, 2**32), got {seed!r}")
    mode = ROUNDINGS[rounding]
    if K == 0 or N == 0:
        return 0
    if not _ext.use_kernel(w):
        return reference.stdp_update(w, pre, post, x_pre, x_post, eta_pre=eta_pre, eta_post=eta_post,
                                     w_min=w_min, w_max=w_max, step=step, rounding=mode, seed=seed)
    p = _ext._C.StdpParams()
    p.K, p.N = K, N
    p.eta_pre, p.eta_post, p.w_min, p.w_max, p.step = eta_pre, eta_post, w_min, w_max, step
    p.rounding, p.seed, p.threads = mode, seed, _ext.num_threads()
    args = (p, w.data_ptr(), pre.data_ptr(), post.data_ptr(), x_pre.data_ptr(), x_post.data_ptr())
    if w.device.type == "cuda":
        _ext._C.stdp_update_cuda(*args, w.device.index, _ext.cuda_stream(w.device))
        return int((pre != 0).sum()) * N + K * int((post != 0).sum())
    return int(_ext._C.stdp_update_cpu(*args))
