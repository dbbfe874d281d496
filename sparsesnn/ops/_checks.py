"""Argument checks shared by every op: errors name the argument, expected and actual value.

All checks run before any pointer is taken, so bad input raises ``ValueError`` and never
reaches a kernel.
"""
from __future__ import annotations

import math
import os
from typing import Iterable, Optional

import torch


def _memory_limit() -> int:
    """Bytes one tensor may take: the machine's physical memory (larger cannot succeed)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # non-POSIX: no bound known, allow 1 TiB
        return 1 << 40


# Read once: physical memory does not change, and torch.compile cannot trace os.sysconf.
_MEMORY_LIMIT = _memory_limit()


def check_alloc(name: str, numel: int, itemsize: int, what: str) -> None:
    """ValueError naming ``name`` when ``what`` (``numel`` elements) would not fit in memory,
    instead of a raw allocator error (or an OOM kill) later."""
    nbytes = int(numel) * int(itemsize)
    limit = _MEMORY_LIMIT
    if nbytes > limit:
        raise ValueError(f"{name}: {what} would need {nbytes / 2**30:.1f} GiB, more than this "
                         f"machine's {limit / 2**30:.1f} GiB of memory")


def check_tensor(name: str, t: object) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    return t


def check_dtype(name: str, t: torch.Tensor, allowed: Iterable[torch.dtype]) -> None:
    allowed = tuple(allowed)
    if t.dtype not in allowed:
        names = ", ".join(str(d).replace("torch.", "") for d in allowed)
        raise ValueError(f"{name}: expected dtype in ({names}), got {str(t.dtype).replace('torch.', '')}")


def check_min_dim(name: str, t: torch.Tensor, min_dim: int, what: str) -> None:
    if t.dim() < min_dim:
        raise ValueError(f"{name}: expected at least {min_dim} dims {what}, got shape {tuple(t.shape)}")


def check_dim(name: str, t: torch.Tensor, dim: int, what: str) -> None:
    if t.dim() != dim:
        raise ValueError(f"{name}: expected {dim} dims {what}, got shape {tuple(t.shape)}")


def check_shape(name: str, t: torch.Tensor, shape: Iterable[int]) -> None:
    shape = tuple(shape)
    if tuple(t.shape) != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {tuple(t.shape)}")


def check_same_device(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if t.device != ref.device:
        raise ValueError(f"{name}: expected device {ref.device} (same as {ref_name}), got {t.device}")


def check_finite(name: str, value: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a finite number, got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value}")
    return value


def check_greater(name: str, value: float, bound: float) -> float:
    value = check_finite(name, value)
    if not value > bound:
        raise ValueError(f"{name}: expected a number > {bound}, got {value}")
    return value


def check_choice(name: str, value: object, choices: Iterable[object]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name}: expected one of {choices}, got {value!r}")


def check_positive_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return value


def check_binary(name: str, t: torch.Tensor) -> None:
    """Spike tensors must hold only 0 and 1 (the event-driven kernels rely on it)."""
    if t.dtype == torch.bool or t.numel() == 0:
        return
    if not bool(((t == 0) | (t == 1)).all()):
        bad = t[(t != 0) & (t != 1)].flatten()[0].item()
        raise ValueError(
            f"{name}: expected binary spikes (0/1) for the event-driven kernel, found value {bad}; "
            "route analog input through the dense path"
        )


# Data-dependent checks (binary spikes) read a result back to the host: on CUDA that stalls the
# stream and breaks CUDA graph capture, so there they run only when enabled (tests, debugging).
CUDA_CHECKS = os.environ.get("SPARSESNN_CUDA_CHECKS", "0") not in ("", "0")


def data_checks(t: torch.Tensor) -> bool:
    """Whether data-dependent checks run for ``t``: always on CPU, on CUDA only with
    ``SPARSESNN_CUDA_CHECKS=1`` (or ``_checks.CUDA_CHECKS = True``)."""
    return not t.is_cuda or CUDA_CHECKS


def check_devices(ref_name: str, ref: torch.Tensor, **tensors: Optional[torch.Tensor]) -> None:
    """Every given tensor (None skipped) must be on ``ref``'s device: a kernel reads them all
    through raw pointers, where a host pointer on the GPU is an illegal address."""
    for name, t in tensors.items():
        if t is not None and t.device != ref.device:
            raise ValueError(f"{name}: expected device {ref.device} (same as {ref_name}), got {t.device}")
