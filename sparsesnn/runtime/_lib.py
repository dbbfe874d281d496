"""ctypes binding of ``libsparsesnn_runtime`` (the C ABI of ``sparsesnn_runtime.h``).

Python uses exactly the entry points a C program uses, so the two cannot disagree. ctypes
releases the GIL during each call, so plans run concurrently from several Python threads.
"""
from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
from typing import Optional

_ERRORS = {1: "io", 2: "format", 3: "version", 4: "argument", 5: "input", 6: "memory", 7: "internal"}


class RuntimeLibraryError(RuntimeError):
    """The native runtime library is missing or failed (the message says why)."""


def _candidates() -> list[str]:
    here = os.path.dirname(os.path.abspath(__file__))
    dirs = [here]
    try:  # editable installs put built files beside the compiled module, not in the source tree
        spec = importlib.util.find_spec("sparsesnn._C")
        if spec is not None and spec.origin:
            dirs.insert(0, os.path.join(os.path.dirname(spec.origin), "runtime"))
    except (ImportError, ValueError):  # pragma: no cover - no compiled module at all
        pass
    return [os.path.join(d, "libsparsesnn_runtime.so") for d in dirs]


def library_path() -> str:
    """Absolute path of ``libsparsesnn_runtime.so`` (link C programs against it)."""
    for p in _candidates():
        if os.path.isfile(p):
            return p
    raise RuntimeLibraryError("libsparsesnn_runtime.so was not found (searched "
                              + ", ".join(_candidates()) + "); reinstall sparsesnn with its native build")


def include_path() -> str:
    """Directory holding ``sparsesnn_runtime.h``."""
    lib_dir = os.path.dirname(library_path())
    for d in (os.path.join(lib_dir, "include"),
              os.path.join(os.path.dirname(__file__), "..", "..", "csrc", "runtime")):
        if os.path.isfile(os.path.join(d, "sparsesnn_runtime.h")):
            return os.path.abspath(d)
    raise RuntimeLibraryError("sparsesnn_runtime.h was not found next to the runtime library")


@functools.lru_cache(maxsize=None)
def lib() -> ctypes.CDLL:
    """The loaded library with argument types declared (loaded once)."""
    L = ctypes.CDLL(library_path())
    P, i64, c_int = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    L.ssnn_version.restype = ctypes.c_char_p
    L.ssnn_format_version.restype = ctypes.c_uint32
    L.ssnn_last_error.restype = ctypes.c_char_p
    L.ssnn_load_memory.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(P)]
    L.ssnn_load_file.argtypes = [ctypes.c_char_p, ctypes.POINTER(P)]
    L.ssnn_free.argtypes = [P]
    L.ssnn_free.restype = None
    shape_args = [P, ctypes.POINTER(i64), c_int, ctypes.POINTER(c_int), ctypes.POINTER(c_int)]
    L.ssnn_input_shape.argtypes = shape_args
    L.ssnn_output_shape.argtypes = shape_args
    L.ssnn_run.argtypes = [P, P, i64, P, c_int]
    L.ssnn_weight_bytes.argtypes = [P]
    L.ssnn_weight_bytes.restype = i64
    return L


def check(rc: int) -> None:
    """Raise for a non-zero status, with the library's message."""
    if rc != 0:
        msg = lib().ssnn_last_error().decode(errors="replace")
        kind = _ERRORS.get(rc, str(rc))
        if kind in ("format", "version", "argument", "input", "io"):
            raise ValueError(f"sparsesnn runtime ({kind} error): {msg}")
        raise RuntimeLibraryError(f"sparsesnn runtime ({kind} error): {msg}")


class Handle:
    """An owned ``ssnn_model*`` (freed with the object)."""

    def __init__(self, data: Optional[bytes] = None, path: Optional[str] = None) -> None:
        self.ptr = ctypes.c_void_p()
        L = lib()
        self._run = L.ssnn_run
        if path is not None:
            check(L.ssnn_load_file(os.fsencode(path), ctypes.byref(self.ptr)))
        else:
            check(L.ssnn_load_memory(data, len(data), ctypes.byref(self.ptr)))

    def _shape(self, fn) -> tuple[tuple[int, ...], int]:
        dims = (ctypes.c_int64 * 8)()
        rank, axis = ctypes.c_int(), ctypes.c_int()
        check(fn(self.ptr, dims, 8, ctypes.byref(rank), ctypes.byref(axis)))
        return tuple(dims[: rank.value]), axis.value

    def input_shape(self) -> tuple[tuple[int, ...], int]:
        return self._shape(lib().ssnn_input_shape)

    def output_shape(self) -> tuple[tuple[int, ...], int]:
        return self._shape(lib().ssnn_output_shape)

    def weight_bytes(self) -> int:
        return int(lib().ssnn_weight_bytes(self.ptr))

    def run(self, x_ptr: int, batch: int, y_ptr: int, threads: int) -> None:
        rc = self._run(self.ptr, x_ptr, batch, y_ptr, threads)
        if rc:
            check(rc)

    def __del__(self) -> None:
        if getattr(self, "ptr", None) is not None and self.ptr.value:
            lib().ssnn_free(self.ptr)
            self.ptr = ctypes.c_void_p()
