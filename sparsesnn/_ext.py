"""Loads the compiled kernels (``sparsesnn._C``) and reports what was built.

``import sparsesnn`` never fails because of the extension: without it (or with
``SPARSESNN_DISABLE_EXT=1``) every op runs its pure-PyTorch reference from ``reference.py``.
"""
from __future__ import annotations

import os
import platform
import warnings
from typing import Any

import torch

_C: Any = None
_load_error: str | None = None

if os.environ.get("SPARSESNN_DISABLE_EXT", "0") not in ("", "0"):
    _load_error = "disabled by SPARSESNN_DISABLE_EXT=1"
else:
    try:
        from . import _C  # type: ignore[no-redef]
    except ImportError as exc:  # pragma: no cover - depends on the build
        _load_error = f"{type(exc).__name__}: {exc}"
        warnings.warn(
            "sparsesnn: compiled extension not available "
            f"({_load_error}); every op falls back to the pure-PyTorch reference (slow). "
            "Reinstall with `pip install .` to build it.",
            RuntimeWarning,
            stacklevel=2,
        )


def available() -> bool:
    """True when the compiled CPU kernels are loaded."""
    return _C is not None


def cuda_available() -> bool:
    """True when the compiled module has CUDA kernels and a GPU is present."""
    return _C is not None and bool(_C.build_info()["cuda"]) and torch.cuda.is_available()


def use_kernel(*tensors: torch.Tensor) -> bool:
    """Whether the compiled kernel can serve these tensors (else: reference fallback)."""
    if _C is None:
        return False
    device = tensors[0].device.type
    if device == "cpu":
        return True
    return device == "cuda" and cuda_available()


def num_threads() -> int:
    """CPU threads a kernel may use: PyTorch's setting, so we never oversubscribe."""
    return max(1, torch.get_num_threads())


def cuda_stream(device: torch.device) -> int:
    """Handle of the current CUDA stream on ``device`` as an integer for the kernels."""
    return torch.cuda.current_stream(device).cuda_stream


def info() -> dict[str, Any]:
    """What was built and what will run: extension version, CPU ISA, threads, CUDA archs."""
    out: dict[str, Any] = {
        "extension": _C is not None,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "allocator_tuned": _allocator_tuned,
    }
    if _C is None:
        out["reason"] = _load_error
        out["backend"] = "reference (pure PyTorch)"
        return out
    out.update(_C.build_info())
    out["backend"] = "compiled kernels"
    return out


_allocator_tuned = False
ENV_TUNE_ALLOCATOR = "SPARSESNN_TUNE_ALLOCATOR"


def tune_allocator(mmap_threshold: int = 1 << 30) -> bool:
    """Keep large CPU tensors on glibc's heap instead of fresh ``mmap`` pages.

    By default glibc serves every allocation above 32 MiB (and, until its threshold adapts,
    above 128 KiB) with a new ``mmap``, so each large output tensor page-faults on first
    touch; for memory-bound ops like the fused neuron that costs more than the kernel itself
    (a 32 MiB output: ~8k faults per call). Raising the mmap and trim thresholds lets freed
    blocks be reused, as jemalloc/tcmalloc setups do for PyTorch. The price is resident
    memory: freed blocks below ``2 * mmap_threshold`` stay mapped in the process instead of
    going back to the OS. Applied once at ``import sparsesnn`` (``SPARSESNN_TUNE_ALLOCATOR=0``
    turns that off); calling it again is harmless. Returns whether it was applied (False off
    glibc).
    """
    global _allocator_tuned
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = bool(libc.mallopt(m_mmap_threshold, int(mmap_threshold)))
        ok = bool(libc.mallopt(m_trim_threshold, 2 * int(mmap_threshold))) and ok
    except (OSError, AttributeError):
        ok = False
    _allocator_tuned = _allocator_tuned or ok
    return ok


if os.environ.get(ENV_TUNE_ALLOCATOR, "1").strip() not in ("0", "false", "no", "off") \
        and platform.system() == "Linux":
    tune_allocator()
