"""Native plans of deployed models: the whole network, all T steps, in one C++ call.

``compile(deployed, example_input)`` lowers a model made by :func:`sparsesnn.deploy.deploy`
to the plan format (``csrc/runtime/format.h``), loads it through the C ABI of
``libsparsesnn_runtime`` (the same loader and executor a C program uses) and returns a
:class:`CompiledPlan` module. ``export(deployed, path)`` writes the same bytes to a file that
``examples/c/run_model.c`` (or any C program linked against :func:`library_path`) runs
without Python.

Each call is one input sequence: neuron state starts from reset (like ``SpikingMLP``, which
resets every call; an eager ``nn.Sequential`` keeps state until ``reset_net``).
"""
from __future__ import annotations

import os
from typing import Optional

import torch
from torch import Tensor, nn

from ._lib import Handle, RuntimeLibraryError, include_path, library_path
from ._lower import lower

__all__ = ["compile", "export", "load", "to_bytes", "CompiledPlan", "library_path",
           "include_path", "RuntimeLibraryError", "PLAN_SUFFIX"]

# File name suffix of exported plans ("sparsesnn plan"); deploy.save's model files use ".ssnn".
# Only a convention: loaders read the header, whatever the name.
PLAN_SUFFIX = ".ssnnp"


def to_bytes(model: nn.Module, example_input: Tensor) -> bytes:
    """The plan file image of ``model`` for inputs shaped like ``example_input``."""
    with torch.no_grad():
        return lower(model, example_input).to_bytes()


def export(model: nn.Module, path: str | os.PathLike, example_input: Tensor) -> int:
    """Writes the plan of ``model`` to ``path`` (checked by loading it back); returns its size.
    Name it ``*.ssnnp`` (:data:`PLAN_SUFFIX`) by convention; any name loads."""
    data = to_bytes(model, example_input)
    Handle(data)  # the native loader must accept what we write
    with open(path, "wb") as f:
        f.write(data)
    return len(data)


class CompiledPlan(nn.Module):
    """A deployed model as one native plan. ``forward(x)``: ``x`` with the example input's
    per-sample shape and any batch size -> the model's output (fp32, CPU). Thread-safe."""

    def __init__(self, handle: Handle, data: Optional[bytes] = None) -> None:
        super().__init__()
        self._handle = handle
        self.data = data
        (self.in_dims, self.in_axis) = handle.input_shape()
        (self.out_dims, self.out_axis) = handle.output_shape()
        # Precomputed for forward, which is on the batch-1 latency path (a few us matter).
        self._rank = len(self.in_dims) + 1
        self._out_head, self._out_tail = self.out_dims[:self.out_axis], self.out_dims[self.out_axis:]

    def weight_bytes(self) -> int:
        """Bytes of weights, scales and indices the plan reads per call."""
        return self._handle.weight_bytes()

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise ValueError(f"x: expected a tensor, got {type(x).__name__}")
        if not x.is_cpu:
            raise ValueError(f"x: the native plan runs on CPU, got device {x.device}")
        ax, shape = self.in_axis, tuple(x.shape)  # tuple slicing is far cheaper than Size's
        if len(shape) != self._rank or shape[:ax] + shape[ax + 1:] != self.in_dims or shape[ax] < 1:
            want = self.in_dims[:ax] + ("B",) + self.in_dims[ax:]
            raise ValueError(f"x: expected shape {tuple(want)} (B >= 1), got {tuple(shape)}")
        B = shape[ax]
        if x.dtype != torch.float32:
            x = x.float()
        if not x.is_contiguous():
            x = x.contiguous()
        y = torch.empty(self._out_head + (B,) + self._out_tail)
        self._handle.run(x.data_ptr(), B, y.data_ptr(), max(1, torch.get_num_threads()))
        return y

    def extra_repr(self) -> str:
        return (f"input={self.in_dims} (batch axis {self.in_axis}), output={self.out_dims}, "
                f"weight_bytes={self.weight_bytes()}")


def compile(model: nn.Module, example_input: Tensor) -> CompiledPlan:  # noqa: A001 - public name
    """Native plan of a deployed ``model``; ``example_input`` fixes the per-sample shape
    (``[B, F]`` for the demo's ``SpikingMLP``, time-major ``[T, B, ...]`` otherwise).
    Raises ``ValueError`` naming the first module the runtime cannot run."""
    data = to_bytes(model, example_input)
    return CompiledPlan(Handle(data), data)


def load(path: str | os.PathLike) -> CompiledPlan:
    """A :class:`CompiledPlan` from a file written by :func:`export` (no pickle)."""
    return CompiledPlan(Handle(path=os.fspath(path)))
