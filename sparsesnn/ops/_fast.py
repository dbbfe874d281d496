"""The inference fast path: calls that need no autograd and no tracing skip ``torch.library``.

A custom-op call costs tens of microseconds of dispatch (schema walk, autograd wrapper,
device routing) around kernels that take a few microseconds on small tensors. When nothing
needs to see the op -- no gradient, no ``torch.compile``/``jit`` tracing, no ``vmap``, no
torch function or dispatch mode, plain CPU tensors -- the callers run the op's own Python
implementation directly: same code, same checks before it, no dispatcher. Everything else
(training, compile, opcheck, fake tensors) goes through the registered op as before.
"""
from __future__ import annotations

import sys
from typing import Any, Callable, Optional

import torch
from torch import Tensor
from torch.nn import Parameter

from .. import _ext

_C = torch._C
_is_compiling = torch.compiler.is_compiling


def eager_cpu(*tensors: Optional[Tensor]) -> bool:
    """Whether a call on ``tensors`` (``None`` entries ignored) may bypass the dispatcher."""
    if _ext._C is None:
        return False
    grad = _C.is_grad_enabled()
    for t in tensors:
        if t is not None and ((type(t) is not Tensor and type(t) is not Parameter) or not t.is_cpu
                              or (grad and t.requires_grad)):
            return False
    return not (_is_compiling() or _C._get_tracing_state() is not None
                or _C._is_torch_function_mode_enabled() or _C._len_torch_dispatch_stack()
                or _C._are_functorch_transforms_active())


def direct(op: Any) -> Callable:
    """The Python implementation registered for a custom op (what its CPU kernel runs)."""
    return getattr(op, "_init_fn", op)


def defer_dynamo_import(op: Any) -> None:
    """Make the op's first call cheap: torch wraps each custom-op implementation in
    ``torch._dynamo.disable``, which imports ``torch._dynamo`` on the first call (1.5-3 s).
    Until something else imports dynamo nothing can be compiling, so the wrapper is not
    needed; once dynamo is loaded, torch's own wrapper takes over. If torch's internals
    differ from what this expects, nothing changes (the first call is just slower)."""
    for wrapper in getattr(op, "_backend_fns", {}).values():
        raw = getattr(wrapper, "__wrapped__", None)
        if raw is None or "__dynamo_disable" in getattr(raw, "__dict__", {}):
            continue

        def plain(*args, _raw=raw, _wrapper=wrapper, **kwargs):
            if "torch._dynamo" not in sys.modules:
                return _raw(*args, **kwargs)
            _raw.__dict__.pop("__dynamo_disable", None)  # torch's wrapper caches its own
            return _wrapper(*args, **kwargs)

        raw.__dict__["__dynamo_disable"] = plain
