"""Fixed-point grids for neuron parameters and membrane state (tinySNN-style quantization).

A :class:`FixedPoint` format with ``bits`` total (sign included) and ``frac_bits`` fraction
bits represents ``k * 2**-frac_bits`` for integers ``k`` in ``[-2**(bits-1), 2**(bits-1)-1]``.
Rounding: ``nearest`` (half away from zero), ``truncate`` (toward zero), ``stochastic``
(``floor(x/step + u)``, ``u`` from a counter-based hash of ``(seed, index)``, unbiased in
expectation). The same arithmetic runs in the LIF kernels (``csrc/include/sparsesnn/fixed_point.h``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

ROUNDINGS = {"nearest": 0, "truncate": 1, "stochastic": 2}
_M32 = 0xFFFFFFFF


@dataclass(frozen=True)
class FixedPoint:
    bits: int = 16
    frac_bits: int = 8
    rounding: str = "nearest"
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 2 <= self.bits <= 32:
            raise ValueError(f"bits: expected an integer in [2, 32], got {self.bits!r}")
        if isinstance(self.frac_bits, bool) or not isinstance(self.frac_bits, int) or not 0 <= self.frac_bits <= 30:
            raise ValueError(f"frac_bits: expected an integer in [0, 30], got {self.frac_bits!r}")
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"rounding: expected one of {tuple(ROUNDINGS)}, got {self.rounding!r}")
        if not isinstance(self.seed, int) or not 0 <= self.seed <= _M32:
            raise ValueError(f"seed: expected an integer in [0, 2**32), got {self.seed!r}")

    @property
    def step(self) -> float:
        return 2.0 ** -self.frac_bits

    @property
    def min(self) -> float:
        return -(2 ** (self.bits - 1)) * self.step

    @property
    def max(self) -> float:
        return (2 ** (self.bits - 1) - 1) * self.step

    @property
    def mode(self) -> int:
        return ROUNDINGS[self.rounding]

    def quantize(self, x: Tensor, index_offset: int = 0) -> Tensor:
        """Round fp32 ``x`` onto the grid (stochastic noise indexed by flat position + offset)."""
        u = None
        if self.rounding == "stochastic":
            idx = torch.arange(x.numel(), dtype=torch.int64, device=x.device) + index_offset
            u = hash_uniform(self.seed, idx).reshape(x.shape)
        return round_to_grid(x.float(), self.step, self.min, self.max, self.mode, u)

    def quantize_value(self, value: float) -> float:
        """A scalar parameter (threshold, reset, decay) on the grid, rounded to nearest."""
        return float(round_to_grid(torch.tensor([value], dtype=torch.float32), self.step,
                                   self.min, self.max, ROUNDINGS["nearest"], None)[0])


def _mix32(h: Tensor) -> Tensor:
    h = h ^ (h >> 16)
    h = (h * 0x85EBCA6B) & _M32
    h = h ^ (h >> 13)
    h = (h * 0xC2B2AE35) & _M32
    return h ^ (h >> 16)


def hash_uniform(seed: int, index: Tensor) -> Tensor:
    """Uniform [0, 1) fp32 from ``(seed, index)``; same numbers as the kernels' hash."""
    lo, hi = index & _M32, (index >> 32) & _M32
    h = _mix32(lo ^ _mix32((seed + hi * 0x9E3779B9) & _M32))
    return (h >> 8).to(torch.float32) * (1.0 / 16777216.0)


def round_to_grid(x: Tensor, step: float, lo: float, hi: float, mode: int, u: Tensor | None) -> Tensor:
    k = x / step
    if mode == 0:  # half away from zero, exactly as C roundf
        t = torch.trunc(k)
        r = t + torch.sign(k) * ((k - t).abs() >= 0.5).to(k.dtype)
    elif mode == 1:
        r = torch.trunc(k)
    else:
        r = torch.floor(k + u)
    return (r * step).clamp(lo, hi)
