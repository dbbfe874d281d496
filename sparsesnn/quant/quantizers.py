"""Symmetric low-bit quantizers: int8 / int4 / int2 (uniform), ternary (TWN), binary.

Weights are ``[N, *]`` (output first: ``nn.Linear`` ``[N, K]`` or conv ``[O, C, kh, kw]``);
the trailing dims are flattened to ``K`` for scales and groups. Codes are ``int8`` in the
weight's shape; scales are fp32 ``[N]`` (one group) or ``[N, G]`` with
``G = ceil(K / group_size)`` (group g covers inputs ``[g * group_size, (g+1) * group_size)``).
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor

from .rounding import round_values
from .spec import QuantSpec, as_spec

__all__ = ["quantize", "dequantize", "num_groups"]


def num_groups(K: int, group_size: Optional[int]) -> int:
    """Scale groups along K (1 when ``group_size`` is None or covers K)."""
    if group_size is None or group_size >= K or K == 0:
        return 1
    return math.ceil(K / group_size)


def _spec(spec) -> QuantSpec:
    s = as_spec(spec)
    if s is None:
        raise ValueError("spec: expected a QuantSpec (or bits value), got None")
    return s


def _weight2d(w: Tensor, name: str = "w") -> Tensor:
    if not isinstance(w, Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(w).__name__}")
    if w.dim() < 2:
        raise ValueError(f"{name}: expected at least 2 dims [N, K...], got shape {tuple(w.shape)}")
    if not w.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got dtype {w.dtype}")
    w2 = w.detach().reshape(w.shape[0], math.prod(w.shape[1:])).float()
    if not bool(torch.isfinite(w2).all()):
        raise ValueError(f"{name}: contains NaN or inf values; cannot quantize")
    return w2


def _grouped(w2: Tensor, G: int, group_size: Optional[int]) -> tuple[Tensor, int]:
    """``[N, K]`` -> ``[N, G, L]`` zero-padded, L = inputs per group."""
    N, K = w2.shape
    if G == 1:
        return w2.reshape(N, 1, K), max(K, 1)
    L = int(group_size)
    pad = G * L - K
    return torch.nn.functional.pad(w2, (0, pad)).reshape(N, G, L), L


def _check_scale(scale: Tensor, N: int, G: int, device) -> Tensor:
    if not isinstance(scale, Tensor):
        raise ValueError(f"scale: expected a torch.Tensor, got {type(scale).__name__}")
    shape = tuple(scale.shape)
    ok = shape == (N, G) or (G == 1 and shape in ((N,), (N, 1)))
    if not ok:
        want = f"({N},)" if G == 1 else f"({N}, {G})"
        raise ValueError(f"scale: expected shape {want} (one per output row / group), got {shape}")
    s = scale.detach().to(device=device, dtype=torch.float32).reshape(N, G)
    if not bool(torch.isfinite(s).all()) or not bool((s > 0).all()):
        raise ValueError("scale: expected finite positive values")
    return s


def _fit_scale(wg: Tensor, spec: QuantSpec, K: int, L: int) -> Tensor:
    """Per-(row, group) scale from the data, ``[N, G]``."""
    a = wg.abs()
    N, G, _ = a.shape
    # Real element count per group (the last group may be padded).
    counts = torch.full((G,), float(L), device=a.device)
    if G * L > K:
        counts[-1] = float(K - (G - 1) * L)
    counts = counts.clamp_min(1.0)
    f = spec.format
    if not spec.per_channel:  # one scale for the whole tensor, repeated per row
        a = a.reshape(1, 1, -1)
        counts = torch.tensor([float(max(K * N, 1))], device=a.device)
    if f.startswith("int") and spec.qmin != -spec.qmax:
        # two's complement: the negative side reaches -2^(k-1), the positive 2^(k-1) - 1;
        # the smallest scale that clips neither side
        pos, neg = wg.clamp_min(0), (-wg).clamp_min(0)
        if not spec.per_channel:
            pos, neg = pos.reshape(1, 1, -1), neg.reshape(1, 1, -1)
        s = torch.maximum(pos.amax(-1) / max(spec.qmax, 1), neg.amax(-1) / -spec.qmin)
    elif f.startswith("int"):
        s = a.amax(-1) / spec.qmax
    elif f == "ternary":
        delta = 0.7 * a.sum(-1) / counts
        sel = a > delta.unsqueeze(-1)
        s = (a * sel).sum(-1) / sel.sum(-1).clamp_min(1)
    else:  # binary
        s = a.sum(-1) / counts
    s = torch.where(s > 0, s, torch.ones_like(s))
    return s.expand(N, G).contiguous() if not spec.per_channel else s


def quantize(w: Tensor, spec: Union[QuantSpec, int, str], scale: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """Quantizes ``w`` ``[N, *]`` to signed integer codes.

    Uniform k-bit: ``qmax = 2^(k-1) - 1``, ``scale = max|w| / qmax`` per row (or group; 1 for an
    all-zero row), ``codes = clamp(round(w / scale), -qmax, qmax)`` with the spec's rounding.
    Ternary (TWN): ``delta = 0.7 mean|w|``, codes ``sign(w) * (|w| > delta)``, scale = mean of
    ``|w|`` over ``|w| > delta``. Binary: ``codes = sign(w)`` (0 -> +1), scale = mean ``|w|``.
    ``spec.full_range``: codes in ``[-2^(k-1), 2^(k-1) - 1]``, scale the smallest that clips
    neither ``max(w)`` nor ``min(w)``.
    With ``scale`` given it is used as is (ternary/binary then round ``w / scale`` to the grid),
    so a weight already on the grid (``codes * scale``) re-quantizes exactly.

    Returns:
        ``(codes int8 [w.shape], scale fp32 [N] or [N, G])``.
    """
    spec = _spec(spec)
    w2 = _weight2d(w)
    N, K = w2.shape
    G = num_groups(K, spec.group_size)
    wg, L = _grouped(w2, G, spec.group_size)
    f = spec.format
    if scale is not None:
        s = _check_scale(scale, N, G, w2.device)
        if f == "binary":
            q = torch.where(wg >= 0, 1.0, -1.0)
        else:
            q = round_values(wg / s.unsqueeze(-1), spec.rounding, spec.seed).clamp(spec.qmin, spec.qmax)
    else:
        # no inputs (K == 0): nothing to fit, scale 1 (an empty max would raise)
        s = _fit_scale(wg, spec, K, L) if K else torch.ones(N, G, device=w2.device)
        if f == "binary":
            q = torch.where(wg >= 0, 1.0, -1.0)
        elif f == "ternary":
            a = wg.abs()
            if spec.per_channel:
                delta = 0.7 * a.sum(-1, keepdim=True) / _counts(K, G, L, a.device).view(1, G, 1)
            else:
                delta = 0.7 * a.sum() / max(N * K, 1)
            q = torch.sign(wg) * (a > delta)
        else:
            q = round_values(wg / s.unsqueeze(-1), spec.rounding, spec.seed).clamp(spec.qmin, spec.qmax)
    codes = q.reshape(N, G * wg.shape[-1])[:, :K].to(torch.int8).reshape(w.shape)
    return codes, (s.reshape(N) if G == 1 else s)


def _counts(K: int, G: int, L: int, device) -> Tensor:
    c = torch.full((G,), float(L), device=device)
    if G * L > K:
        c[-1] = float(K - (G - 1) * L)
    return c.clamp_min(1.0)


def dequantize(codes: Tensor, scale: Tensor, spec: Union[QuantSpec, int, str, None] = None) -> Tensor:
    """``codes * scale`` in fp32, shape of ``codes``. ``spec`` gives the group size when the
    scale is ``[N, G]`` with ``G > 1``."""
    if not isinstance(codes, Tensor) or codes.dim() < 2:
        raise ValueError(f"codes: expected a tensor with at least 2 dims, got {getattr(codes, 'shape', codes)!r}")
    N = codes.shape[0]
    c2 = codes.reshape(N, math.prod(codes.shape[1:])).float()
    K = c2.shape[1]
    s = scale.detach().float() if isinstance(scale, Tensor) else None
    if s is None:
        raise ValueError(f"scale: expected a torch.Tensor, got {type(scale).__name__}")
    if s.dim() == 1 or (s.dim() == 2 and s.shape[1] == 1):
        if s.shape[0] != N:
            raise ValueError(f"scale: expected {N} rows (codes.shape[0]), got shape {tuple(s.shape)}")
        return (c2 * s.reshape(N, 1).to(c2.device)).reshape(codes.shape)
    spec = as_spec(spec)
    gs = spec.group_size if spec is not None else None
    G = num_groups(K, gs)
    if s.dim() != 2 or tuple(s.shape) != (N, G):
        raise ValueError(f"scale: expected shape ({N}, {G}) for group_size {gs}, got {tuple(s.shape)}")
    L = gs if G > 1 else K
    per_input = s.to(c2.device).repeat_interleave(L, dim=1)[:, :K]
    return (c2 * per_input).reshape(codes.shape)
