"""Kernel layouts of weights (input-major copies, rearranged conv taps), built once per weight
version instead of once per call.

A layout is keyed on the weight tensor object and checked against its version counter, data
pointer and shape, so any in-place update (optimizer steps, ``copy_``, masks applied under
``no_grad``) or in-place resize/restride (``resize_``, ``t_``, ``as_strided_``: each bumps the
version) rebuilds it, and ``.to()`` makes a new tensor with its own entry. The check is three
attribute reads (~1 us): on a batch-1 call it is a visible share of the time. The cache holds
only a weak reference to the weight: the layout is dropped when the weight dies. Limitation:
writes through ``weight.data`` bypass the version counter; call :func:`clear` after such a write.
"""
from __future__ import annotations

import threading
import weakref
from typing import Callable, Hashable

from torch import Tensor

_entries: dict[tuple[int, str], tuple] = {}
_lock = threading.Lock()


def _signature(w: Tensor) -> tuple:
    return (w._version, w.data_ptr(), w.shape)


def cached_layout(weight: Tensor, kind: Hashable, build: Callable[[Tensor], Tensor]) -> Tensor:
    """``build(weight)``, reused while ``weight`` is unchanged. ``kind`` names the layout
    (one weight may have several, e.g. per conv ``groups``); a tuple is cheaper than a
    formatted string."""
    key = (id(weight), kind)
    sig = _signature(weight)
    entry = _entries.get(key)
    if entry is not None and entry[1] == sig and entry[0]() is weight:
        return entry[2]
    out = build(weight)

    def forget(_ref, key=key):
        with _lock:
            current = _entries.get(key)
            if current is not None and current[0] is _ref:
                del _entries[key]

    with _lock:
        _entries[key] = (weakref.ref(weight, forget), sig, out)
    return out


def clear() -> None:
    """Drop every cached layout (e.g. after writing a weight through ``.data``)."""
    with _lock:
        _entries.clear()

