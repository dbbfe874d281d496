"""``QuantSpec``: which low-bit format, scale granularity and rounding scheme to use."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

FORMATS = ("int8", "int4", "int2", "ternary", "binary")
ROUNDINGS = ("nearest", "truncate", "stochastic")
_INT_ALIASES = {8: "int8", 4: "int4", 2: "int2"}
# Bits a code occupies in the packed layout (ternary uses a 2-bit code).
STORAGE_BITS = {"int8": 8, "int4": 4, "int2": 2, "ternary": 2, "binary": 1}


@dataclass(frozen=True)
class QuantSpec:
    """Symmetric low-bit weight format.

    Args:
        bits: ``8 | 4 | 2 | 'int8' | 'int4' | 'int2' | 'ternary' | 'binary'``.
        per_channel: one scale per output row (else one per tensor, repeated per row).
        group_size: inputs per scale group along K (scale ``[N, ceil(K / group_size)]``);
            ``None`` for one scale per row.
        rounding: ``nearest`` | ``truncate`` (toward zero) | ``stochastic`` (seeded, unbiased).
        seed: seed of the stochastic rounding generator (``None``: nondeterministic).
        full_range: uniform k-bit codes use the whole two's-complement range
            ``[-2^(k-1), 2^(k-1) - 1]`` (int2: four levels -2, -1, 0, 1, as fixed-point Qm.n
            stores them) instead of the symmetric ``[-qmax, qmax]``. The packed layout stores
            both; only the quantizer differs. Ignored for ternary and binary.
    """

    bits: Union[int, str]
    per_channel: bool = True
    group_size: Optional[int] = None
    rounding: str = "nearest"
    seed: Optional[int] = None
    full_range: bool = False

    def __post_init__(self) -> None:
        b = self.bits
        if isinstance(b, bool):
            raise ValueError(f"bits: expected one of 8, 4, 2, {FORMATS}, got {b!r}")
        if isinstance(b, int):
            if b not in _INT_ALIASES:
                raise ValueError(f"bits: expected one of 8, 4, 2, {FORMATS}, got {b!r}")
            b = _INT_ALIASES[b]
        elif isinstance(b, str):
            b = b.lower()
            if b not in FORMATS:
                raise ValueError(f"bits: expected one of 8, 4, 2, {FORMATS}, got {self.bits!r}")
        else:
            raise ValueError(f"bits: expected one of 8, 4, 2, {FORMATS}, got {b!r}")
        object.__setattr__(self, "bits", b)
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"rounding: expected one of {ROUNDINGS}, got {self.rounding!r}")
        gs = self.group_size
        if gs is not None and (isinstance(gs, bool) or not isinstance(gs, int) or gs < 1):
            raise ValueError(f"group_size: expected None or an integer >= 1, got {gs!r}")
        if not isinstance(self.full_range, bool):
            raise ValueError(f"full_range: expected a bool, got {self.full_range!r}")
        if gs is not None and not self.per_channel:
            raise ValueError("group_size: groups need per_channel=True")

    @property
    def format(self) -> str:
        """Canonical name: ``int8 | int4 | int2 | ternary | binary``."""
        return str(self.bits)

    @property
    def storage_bits(self) -> int:
        """Bits per code in the packed layout (8, 4, 2, 2, 1)."""
        return STORAGE_BITS[self.format]

    @property
    def qmax(self) -> int:
        """Largest code magnitude: ``2^(k-1) - 1`` for k-bit ints, 1 for ternary/binary."""
        f = self.format
        if f.startswith("int"):
            return 2 ** (int(f[3:]) - 1) - 1
        return 1

    @property
    def qmin(self) -> int:
        """Smallest code: ``-2^(k-1)`` with ``full_range`` for k-bit ints, else ``-qmax``."""
        f = self.format
        if self.full_range and f.startswith("int"):
            return -(2 ** (int(f[3:]) - 1))
        return -self.qmax

    def to_dict(self) -> dict:
        return {"bits": self.format, "per_channel": self.per_channel,
                "group_size": self.group_size, "rounding": self.rounding, "seed": self.seed,
                "full_range": self.full_range}


def as_spec(spec: Union["QuantSpec", int, str, None]) -> Optional[QuantSpec]:
    """Accepts a QuantSpec, a bits value (``4``, ``'ternary'``) or None."""
    if spec is None or isinstance(spec, QuantSpec):
        return spec
    if isinstance(spec, dict):
        return QuantSpec(**spec)
    return QuantSpec(spec)
