"""Projections onto the ADMM constraint sets: sparse (per-layer magnitude) and quantized grids.

Weights are ``[N, ...]`` (``nn.Linear`` ``[N, K]``, ``nn.Conv2d`` ``[N, C, kh, kw]``); per-channel
means per output row ``N``. The quantizer is ``sparsesnn.quant.quantize`` when that package is
available, so the fake-quantized float model and the packed deployed model use the very same
grid; :func:`_quantize_rows_fallback` implements the identical formula for builds without it.
"""
from __future__ import annotations

from typing import Any

import torch

from ..ops._checks import check_finite

#: Weight formats the packed kernels implement (``sparsesnn.quant.QuantSpec``).
PACKED_BITS: tuple[Any, ...] = (8, 4, 2, "ternary", "binary")
#: Weight grids the projections accept: the packed formats plus 3-, 5- and 6-bit grids, stored
#: in the next wider container (3 -> int4 codes in [-3, 3]; 5, 6 -> int8 codes in [-15, 15],
#: [-31, 31]) with a scale fitted for the narrower grid.
VALID_BITS: tuple[Any, ...] = (8, 6, 5, 4, 3, 2, "ternary", "binary")
#: Scale fits: per-channel max-abs (``max|w| / qmax``), the ADMM paper's least squares, or
#: LitE-SNN's std-based step (``STD_STEPS[b] * std(W)``, one step per layer).
SCALE_FITS = ("maxabs", "als", "std")
#: LitE-SNN's quantization steps in units of the layer's weight std (the uniform quantizer's
#: steps for a unit Gaussian at 1, 2 and 4 bits, as the authors' code tabulates them).
STD_STEPS = {"binary": 1.596, 2: 0.996, 4: 0.336}


def container_bits(bits: int | str) -> int | str:
    """The packed format that stores a grid: 3 -> 4, 5 and 6 -> 8, others unchanged."""
    return {3: 4, 5: 8, 6: 8}.get(bits, bits)  # type: ignore[arg-type]


def grid_qmax(bits: int | str) -> int:
    """Largest code of a symmetric integer grid ``[-qmax, qmax]`` (``2^(bits-1) - 1``)."""
    if not isinstance(bits, int):
        raise ValueError(f"bits: expected an integer grid, got {bits!r}")
    return 2 ** (bits - 1) - 1


def fit_scale(w: torch.Tensor, bits: int | str, *, method: str = "maxabs",
              per_channel: bool = True, iters: int = 5) -> torch.Tensor | None:
    """Scale ``[N]`` of the grid ``alpha * {-qmax..qmax}`` for ``w`` ``[N, ...]``.

    ``"maxabs"``: ``max|w| / qmax`` (per row when ``per_channel``). ``"als"`` (Deng et al.):
    one alpha for the whole layer, alternating ``Q = clip(round(W / alpha))`` and
    ``alpha = <W, Q> / <Q, Q>`` for ``iters`` rounds, started at ``max|w| / qmax`` (the
    returned ``[N]`` repeats it). None for ternary/binary (their own fitted scale).
    ``"std"`` (LitE-SNN): step ``STD_STEPS[bits] * std(W)`` (of the nonzero weights when some
    are pruned) for the whole layer on the
    two's-complement grid (:func:`make_spec` with ``full_range``); binary: ``+-step / 2``, the
    paper's 1-bit levels exactly; 8 bits (no tabulated step): per-channel max-abs. Other
    grids: ValueError.
    """
    if method not in SCALE_FITS:
        raise ValueError(f"method: expected one of {SCALE_FITS}, got {method!r}")
    if method == "std":
        if bits == 8:
            return fit_scale(w, 8, method="maxabs", per_channel=per_channel)
        if bits not in STD_STEPS:
            raise ValueError(f"bits: the std-based step is defined for {tuple(STD_STEPS) + (8,)}, got {bits!r}")
        w2 = w.detach().float().reshape(w.shape[0], -1)
        # a pruned layer: the std of its kept weights (the zeros would shrink the step until
        # every kept weight clips: a 98%-pruned 2-bit layer went silent)
        kept = w2[w2 != 0] if bool((w2 == 0).any()) else w2.flatten()
        std = float(kept.std()) if kept.numel() > 1 else 0.0
        step = STD_STEPS[bits] * std * (0.5 if bits == "binary" else 1.0)
        return torch.full((w2.shape[0],), step if step > 0 else 1.0)
    if not isinstance(bits, int):
        return None
    qmax = grid_qmax(bits)
    w2 = w.detach().float().reshape(w.shape[0], -1)
    n = w2.shape[0]
    if method == "maxabs":
        s = w2.abs().amax(dim=1) / qmax if per_channel else (w2.abs().amax() / qmax).expand(n)
        return torch.where(s > 0, s, torch.ones_like(s)).contiguous()
    alpha = w2.abs().amax() / qmax
    if float(alpha) <= 0:
        return torch.ones(n)
    for _ in range(iters):
        q = torch.clamp(torch.round(w2 / alpha), -qmax, qmax)
        qq = (q * q).sum()
        if float(qq) == 0:
            break
        alpha = (w2 * q).sum() / qq
    return alpha.abs().expand(n).contiguous()

try:  # the packed-weight package (merged from the "packed" branch)
    from ..quant import QuantSpec as _QuantSpec  # type: ignore[attr-defined]
    from ..quant import dequantize as _q_dequantize  # type: ignore[attr-defined]
    from ..quant import quantize as _q_quantize  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on which branches are merged
    _QuantSpec = None
    _q_quantize = None
    _q_dequantize = None


def check_sparsity(name: str, value: object) -> float:
    """Sparsity must be a number in ``[0, 1)`` (1 would delete the layer)."""
    if isinstance(value, bool):
        raise ValueError(f"{name}: expected a sparsity in [0, 1), got {value!r}")
    v = check_finite(name, value)
    if not 0.0 <= v < 1.0:
        raise ValueError(f"{name}: expected a sparsity in [0, 1), got {value!r}")
    return v


def check_bits(name: str, value: object) -> int | str:
    """Bits must name a grid: 8, 6, 5, 4, 3, 2, 'ternary' or 'binary'."""
    if isinstance(value, bool) or value not in VALID_BITS:
        raise ValueError(f"{name}: expected one of {VALID_BITS}, got {value!r}")
    return value  # type: ignore[return-value]


def make_spec(bits: int | str, per_channel: bool = True, full_range: bool = False) -> Any:
    """A ``QuantSpec`` of the container format (or a plain dict when the quant package is
    absent); 3/5/6-bit grids get the int4/int8 container (see :data:`VALID_BITS`).
    ``full_range``: the two's-complement grid ``[-2^(k-1), 2^(k-1) - 1]`` (8/4/2 bits only)."""
    bits = container_bits(check_bits("bits", bits)) if not full_range else check_bits("bits", bits)
    if full_range and bits not in (8, 4, 2, "binary", "ternary"):
        raise ValueError(f"bits: the two's-complement grid needs 8, 4 or 2 bits, got {bits!r}")
    if _QuantSpec is not None:
        return _QuantSpec(bits=bits, per_channel=per_channel, full_range=full_range)
    return {"bits": bits, "per_channel": per_channel}


def spec_bits(spec: Any) -> int | str:
    """The format of a spec: 8/4/2 (ints) or 'ternary'/'binary'."""
    b = spec["bits"] if isinstance(spec, dict) else spec.bits
    if isinstance(b, str) and b.startswith("int"):
        return int(b[3:])
    return b


def spec_per_channel(spec: Any) -> bool:
    return bool(spec["per_channel"] if isinstance(spec, dict) else spec.per_channel)


def bits_per_weight(bits: int | str) -> float:
    """Storage bits of one code: ternary is stored in 2-bit codes, binary in 1."""
    return {"ternary": 2.0, "binary": 1.0}.get(bits, float(bits))  # type: ignore[arg-type]


STRUCTURES = ("weights", "taps")


def check_structure(name: str, value: object) -> str:
    if value not in STRUCTURES:
        raise ValueError(f"{name}: expected one of {STRUCTURES}, got {value!r}")
    return value  # type: ignore[return-value]


def sparsity_mask(w: torch.Tensor, sparsity: float, structure: str = "weights") -> torch.Tensor:
    """Keep the ``numel - round(sparsity * numel)`` largest ``|w|`` (exactly; ties by index).

    ``structure="taps"`` on a conv weight ``[O, C, KH, KW]`` keeps whole tap rows ``(c, ky, kx)``
    instead: the ``1 - sparsity`` fraction with the largest L2 norm over the O outputs (the
    Euclidean projection onto "at most that many nonzero tap rows"), which the pruned conv
    layout turns into speed; other weights are pruned per weight. Returns a bool mask with the
    shape of ``w``.
    """
    sparsity = check_sparsity("sparsity", sparsity)
    if check_structure("structure", structure) == "taps" and w.dim() == 4:
        from ..ops.pruned_conv2d import tap_mask

        return tap_mask(w, sparsity)
    n = w.numel()
    keep = n - int(round(sparsity * n))
    flat = w.detach().abs().flatten()
    mask = torch.zeros(n, dtype=torch.bool, device=w.device)
    if keep > 0:
        idx = torch.topk(flat, keep, largest=True, sorted=False).indices
        mask[idx] = True
    return mask.view_as(w)


def project_sparse(w: torch.Tensor, sparsity: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean projection onto ``{W : nnz(W) <= (1 - sparsity) numel}``: (projected, mask)."""
    mask = sparsity_mask(w, sparsity)
    return w.detach() * mask, mask


def _quantize_rows_fallback(w2: torch.Tensor, bits: int | str, per_channel: bool,
                            scale: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Same formula as ``sparsesnn.quant.quantize`` on ``[N, K]``: int8 codes, fp32 scale ``[N]``."""
    w2 = w2.detach().float()
    n = w2.shape[0]
    a = w2.abs()
    if bits == "ternary":
        if per_channel:
            delta = 0.7 * a.mean(dim=1, keepdim=True)
        else:
            delta = (0.7 * a.mean()).expand(n, 1)
        keep = a > delta
        codes = torch.sign(w2) * keep
        if scale is None:
            if per_channel:
                cnt = keep.sum(dim=1).clamp(min=1)
                scale = (a * keep).sum(dim=1) / cnt
            else:
                scale = ((a * keep).sum() / keep.sum().clamp(min=1)).expand(n)
            scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        else:
            codes = torch.clamp(torch.round(w2 / scale.reshape(n, 1)), -1, 1)
        return codes.to(torch.int8), scale.float().reshape(n).contiguous()
    if bits == "binary":
        codes = torch.where(w2 >= 0, 1, -1)
        if scale is None:
            scale = a.mean(dim=1) if per_channel else a.mean().expand(n)
            scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        return codes.to(torch.int8), scale.float().reshape(n).contiguous()
    qmax = 2 ** (int(bits) - 1) - 1
    if scale is None:
        scale = a.amax(dim=1) / qmax if per_channel else (a.amax() / qmax).expand(n)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # all-zero row: scale 1
    scale = scale.float().reshape(n)
    codes = torch.clamp(torch.round(w2 / scale[:, None]), -qmax, qmax)
    return codes.to(torch.int8), scale.contiguous()


def quantize(w: torch.Tensor, spec: Any, scale: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize ``w`` ``[N, ...]`` row-wise: int8 codes with ``w``'s shape and fp32 scale ``[N]``.

    A given ``scale`` is used as is, so weights already on the grid re-quantize exactly.
    """
    w2 = w.detach().reshape(w.shape[0], -1)
    if _q_quantize is not None and not isinstance(spec, dict):
        codes, s = _q_quantize(w2.float().contiguous(), spec, scale=scale)
    else:
        codes, s = _quantize_rows_fallback(w2, spec_bits(spec), spec_per_channel(spec), scale)
    s = s.float().reshape(-1)
    if s.numel() == 1 and w.shape[0] != 1:
        s = s.expand(w.shape[0]).contiguous()
    return codes.reshape(w.shape), s


def dequantize(codes: torch.Tensor, scale: torch.Tensor, spec: Any) -> torch.Tensor:
    """Float weights ``codes * scale`` (row-wise), shape of ``codes``."""
    c2 = codes.reshape(codes.shape[0], -1)
    if _q_dequantize is not None and not isinstance(spec, dict):
        w2 = _q_dequantize(c2, scale, spec)
    else:
        w2 = c2.float() * scale.reshape(-1, 1)
    return w2.reshape(codes.shape).float()


def fake_quantize(w: torch.Tensor, spec: Any, scale: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest point on the quantized grid: (``dequantize(quantize(w))``, scale ``[N]``)."""
    codes, s = quantize(w, spec, scale)
    return dequantize(codes, s, spec).to(w.dtype), s


def project(w: torch.Tensor, sparsity: float | None, spec: Any | None,
            scale: torch.Tensor | None = None, mask: torch.Tensor | None = None
            ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Project onto the joint set: prune (or apply a fixed ``mask``), then quantize.

    Returns ``(Z, mask or None, scale or None)``. Quantizing after pruning keeps pruned weights
    at zero (0 maps to code 0); rounding may zero a few more, so sparsity is ``>=`` the target.
    """
    z = w.detach()
    if mask is None and sparsity is not None and sparsity > 0:
        mask = sparsity_mask(z, sparsity)
    if mask is not None:
        z = z * mask
    s = None
    if spec is not None:
        z, s = fake_quantize(z, spec, scale)
        if mask is not None:
            z = z * mask  # binary codes are never 0: the mask keeps pruned weights pruned
    return z, mask, s


def expected_zeros(numel: int, sparsity: float) -> int:
    """Number of zeros :func:`sparsity_mask` produces (for tests and reports)."""
    return int(round(check_sparsity("sparsity", sparsity) * numel))


__all__ = [
    "VALID_BITS", "PACKED_BITS", "SCALE_FITS", "STD_STEPS", "container_bits", "grid_qmax", "fit_scale",
    "check_sparsity", "check_bits", "make_spec", "spec_bits", "bits_per_weight",
    "sparsity_mask", "project_sparse", "quantize", "dequantize", "fake_quantize", "project",
    "expected_zeros",
]
