"""Per-shape call plans for the packed / pruned conv gather kernels (the module fast path).

An eager CPU inference call of ``PackedSpikingConv2d`` on fp32 contiguous input would otherwise
rebuild the same things every call: the validated geometry, the kernel's parameter struct
(17 attributes set through pybind11), the output shape and the cached-layout lookup. That is
tens of microseconds per call, as much as a small layer's whole kernel. A plan, built on the
first call for an input shape, keeps them; a later call checks that the weight buffer, its
version and the thread count are unchanged and goes straight to the compiled kernel.

A plan is valid only while its layout is still the one in ``layout_cache`` (so
``layout_cache.clear()`` after a write through ``.data`` also drops it), the module's weight
buffer is the same object at the same version and data pointer, and torch's thread count is
the one it was built for. Scale and bias are read from the module's buffers at every call.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from .. import _ext
from . import layout_cache
from .packed_conv2d import chunked_rows, kernel_params, one_group


class PlanCache(dict):
    """input shape -> :class:`ConvPlan`. Copies and pickles of a module start empty (a plan
    holds pointers and a pybind11 struct)."""

    def __reduce__(self):
        return (PlanCache, ())

    def __deepcopy__(self, memo):
        return PlanCache()


class ConvPlan:
    """What one input shape needs: kernel parameters, output shape, layout tensors."""

    __slots__ = ("ref", "index", "version", "ptr", "threads", "entry_key", "entry", "params", "out_shape", "run",
                 "run_analog")

    def __init__(self, ref: Tensor, index: Optional[Tensor], threads: int, entry_key: tuple, entry: tuple,
                 params, out_shape: tuple, run: Callable[[int, int, int, int], bool],
                 run_analog: Callable[[int, int, int, int], bool]) -> None:
        self.ref, self.index, self.version, self.ptr = ref, index, ref._version, ref.data_ptr()
        self.threads, self.entry_key, self.entry = threads, entry_key, entry
        # run: the spike kernel (False: an input value is not 0/1); run_analog: any values.
        self.params, self.out_shape, self.run, self.run_analog = params, out_shape, run, run_analog

    def valid(self, ref: Tensor, index: Optional[Tensor]) -> bool:
        """Whether the plan still describes the module's buffers and torch's thread count."""
        return (ref is self.ref and index is self.index and ref._version == self.version
                and ref.data_ptr() == self.ptr and torch.get_num_threads() == self.threads
                and layout_cache._entries.get(self.entry_key) is self.entry)


def build_plan(x: Tensor, *, pruned: bool, ref: Tensor, index: Optional[Tensor], bits: int, out_channels: int,
               kernel_size: list[int], stride: list[int], padding: list[int], dilation: list[int],
               group_size: int, out_shape: tuple) -> Optional[ConvPlan]:
    """A plan for input shaped like ``x`` (fp32 contiguous ``[NB, C, H, W]``, already validated
    by the module; ``out_shape`` the module's output shape, ``[..., O, OH, OW]``), or None where
    the gather kernel does not serve this layer."""
    rows = x.shape[1] * kernel_size[0] * kernel_size[1]
    if bits == 32 or not one_group(rows, group_size) or _ext._C is None or x.numel() == 0:
        return None
    OH, OW = out_shape[-2:]
    if OH * OW == 0 or out_channels == 0:
        return None
    p = kernel_params(x, out_channels, kernel_size, stride, padding, dilation, bits, group_size, OH, OW)
    if pruned:
        from .pruned_conv2d import kernel_layout

        kind = f"pruned_conv_{bits}_{out_channels}_{rows}_{index.data_ptr()}"
        wk, rmap = kernel_layout(index, ref, bits, out_channels, rows)
        wk_ptr, map_ptr, C = wk.data_ptr(), rmap.data_ptr(), _ext._C

        def run(xp: int, sp: int, bp: int, yp: int) -> bool:
            return C.pruned_conv2d_cpu(p, xp, wk_ptr, map_ptr, sp, bp, yp)
    else:
        map_ptr = 0
        kind = f"conv_chunked_{bits}_{out_channels}"
        wk = layout_cache.cached_layout(ref, kind, lambda w: chunked_rows(w, bits, out_channels))
        wk_ptr, C = wk.data_ptr(), _ext._C

        def run(xp: int, sp: int, bp: int, yp: int) -> bool:
            return C.packed_conv2d_chunked_cpu(p, xp, wk_ptr, sp, bp, yp)

    def run_analog(xp: int, sp: int, bp: int, yp: int) -> bool:
        return C.packed_conv2d_chunked_analog_cpu(p, xp, wk_ptr, map_ptr, sp, bp, yp)
    key = (id(ref), kind)
    entry = layout_cache._entries.get(key)
    if entry is None:
        return None
    return ConvPlan(ref, index if pruned else None, p.threads, key, entry, p, tuple(out_shape), run, run_analog)
