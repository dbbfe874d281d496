"""Deployed models answer inference calls with one native plan (:mod:`sparsesnn.runtime`).

``deploy`` marks the models it returns (``native_inference = True``, :func:`native_by_default`).
Their ``forward`` then runs an inference call -- CPU float32 input, no autograd, no tracing, no
hooks, no dropout in training mode -- as the compiled plan of the model as it is now: compiled
on first use (tens of ms) and again after a buffer is replaced or written in place, or ``T``
changes; on the first call of each input shape both the plan and the eager modules are timed
and the faster one answers that shape from then on. Anything else, or a model the runtime
cannot run, takes the eager modules. The outputs are the same (the
runtime's tests check plan against eager, spikes bit for bit), but neuron state attributes
(``lif.v``) are not updated by a plan call; set ``model.native_inference = False`` to always
run the eager modules. Why by default: at batch 1 the eager modules cost about 10 us of Python
and dispatch each, several times the plan's whole call (README, end-to-end demo).
"""
from __future__ import annotations

import time
import weakref
from typing import Any, Optional

import torch
from torch import Tensor, nn
from torch.nn.modules import module as _M

from ..nn import Dropout

# model -> {per-sample input shape: (signature, plan or None when the runtime refused it)}.
# Weak keys: a model's plans go with it; a deep copy compiles its own.
_PLANS: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()
_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, Dropout)


def _signature(model: nn.Module, grad: bool) -> Optional[tuple[Any, ...]]:
    """What the plan was built from (buffers' storage and version, ``T``), or None when this
    call must run eagerly (a hook, a trainable parameter under autograd, dropout in training).
    On the batch-1 path: one pass, plain dict reads."""
    sig: list[Any] = [getattr(model, "T", None)]
    stack = [model]  # modules() builds a name per module: a plain walk costs a third
    while stack:
        m = stack.pop()
        d = m.__dict__
        stack.extend(c for c in d["_modules"].values() if c is not None)
        if d["_forward_hooks"] or d["_forward_pre_hooks"] or d["_backward_hooks"] or d["_backward_pre_hooks"]:
            return None
        if d["training"] and isinstance(m, _DROPOUT):
            return None
        for b in d["_buffers"].values():
            if b is not None:
                sig.append((b.data_ptr(), b._version))
        for p in d["_parameters"].values():
            if p is not None:
                if grad and p.requires_grad:
                    return None
                sig.append((p.data_ptr(), p._version))
    return tuple(sig)


def _global_hooks() -> bool:
    return bool(_M._global_forward_hooks or _M._global_forward_pre_hooks or _M._global_backward_hooks
                or _M._global_backward_pre_hooks)


def native_forward(model: nn.Module, x: Tensor) -> Optional[Tensor]:
    """The plan's output for ``x`` ``[B, ...]`` when this call can take it, else None (run
    the eager modules)."""
    if not model.__dict__.get("native_inference", False):
        return None
    if type(x) is not Tensor or x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() < 2 \
            or x.shape[0] < 1:
        return None
    grad = torch.is_grad_enabled()
    if (grad and x.requires_grad) or torch.jit.is_scripting() or torch.jit.is_tracing() \
            or torch.compiler.is_compiling() or _global_hooks():
        return None
    sig = _signature(model, grad)
    if sig is None:
        return None
    state = _PLANS.setdefault(model, {"plans": {}, "faster": {}})
    sample, full = tuple(x.shape[1:]), tuple(x.shape)
    entry = state["plans"].get(sample)
    if entry is None or entry[0] != sig:
        from .. import runtime  # late: the runtime imports the models

        state["plans"][sample] = (sig, None)  # lowering may run the model: that call goes eager
        try:
            plan = runtime.compile(model, x[:1])
        except (ValueError, runtime.RuntimeLibraryError):
            plan = None  # e.g. a module the runtime does not run: eager for this model state
        entry = state["plans"][sample] = (sig, plan)
        state["faster"] = {k: v for k, v in state["faster"].items() if k[1:] != sample}
    plan = entry[1]
    if plan is None:
        return None
    faster = state["faster"].get(full)
    if faster is None:
        faster = _plan_is_faster(model, plan, x, state["faster"])
    return plan(x) if faster else None


def _plan_is_faster(model: nn.Module, plan: nn.Module, x: Tensor, faster: dict) -> bool:
    """Times the eager modules and the plan on ``x`` (twice each, alternating, best of each)
    and records which is faster for this input shape. Which wins depends on the model, the
    batch and the CPU (VGG-11 int4 + 90% pruned on a 2-core Xeon: plan 1.2x faster at batch 1,
    0.85x at 16; the digits MLP: 2.7x at batch 1), so it is measured, once per shape."""
    if len(faster) >= 16:  # many input shapes: keep the record small
        faster.clear()
    full = tuple(x.shape)
    faster[full] = False  # the eager call below must not come back here
    t_eager = t_plan = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        model(x)
        t1 = time.perf_counter()
        plan(x)
        t2 = time.perf_counter()
        t_eager, t_plan = min(t_eager, t1 - t0), min(t_plan, t2 - t1)
    faster[full] = t_plan <= t_eager
    return faster[full]


def native_by_default(model: nn.Module) -> bool:
    """Whether ``deploy`` turns the native path on for ``model``: the models of
    :mod:`sparsesnn.models` the runtime runs (``SpikingMLP`` and the conv SNNs); each input
    shape then takes whichever of plan and eager modules measured faster on it."""
    from ._base import ConvSNN
    from .mlp import SpikingMLP

    return isinstance(model, (SpikingMLP, ConvSNN))
