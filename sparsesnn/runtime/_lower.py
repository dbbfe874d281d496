"""Deployed model -> the op list of a plan (``csrc/runtime/format.h``).

Containers are walked in forward order; every leaf module becomes zero or more ops. A module
with no lowering raises one ``ValueError`` naming its path and type, so nothing is guessed.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor, nn

from ..nn import (IF, LIF, PLIF, AdaptiveAvgPool2d, AvgPool2d, Flatten, MaxPool2d, PackedSpikingConv2d,
                  PackedSpikingLinear, SEWBlock)
from ..nn import Dropout as SNNDropout
from ..ops.pruned_blocks import cpu_blocks, spike_layout
from ..ops.pruned_conv2d import dense_rows
from . import _format as F

_MODES = {"auto": 0, "spike": 1, "analog": 2}
# Let the plan re-lay pruned integer layers out as dense packed rows where that is faster
# (same results, see _pruned_as_dense); tests switch it off to cover the pruned kernels.
PRUNED_TO_DENSE = True


class Lowering:
    """The ops collected so far plus the per-sample shape they produce."""

    def __init__(self, T: int, time_major: bool, dims: tuple[int, ...]) -> None:
        self.T, self.input_time_major, self.input_dims = T, time_major, tuple(dims)
        self.ops: list[tuple[int, bytes]] = []
        self.binary = False  # the current value is known to be 0/1 spikes
        self.slot_binary: dict[int, bool] = {}
        self.next_slot = 0

    # ops after which the value is spikes / no longer known to be spikes (others keep it);
    # the same rule as the C++ loader's.
    _MAKES_SPIKES = {F.ENCODE_THRESHOLD, F.NEURON}
    _MAKES_ANALOG = {F.LINEAR, F.CONV2D, F.MEAN_T, F.AVG_POOL2D, F.ADD, F.ADAPTIVE_AVG_POOL2D}

    def add(self, kind: int, payload: Optional[F.Payload] = None) -> None:
        self.ops.append((kind, payload.bytes() if payload is not None else b""))
        if kind in self._MAKES_SPIKES:
            self.binary = True
        elif kind in self._MAKES_ANALOG:
            self.binary = False

    def slot_op(self, kind: int, slot: int) -> None:
        """SAVE / LOAD / ADD / MUL / IAND with a saved value."""
        self.ops.append((kind, F.Payload().u32(slot).bytes()))
        if kind == F.SAVE:
            self.slot_binary[slot] = self.binary
        elif kind == F.LOAD:
            self.binary = self.slot_binary[slot]
        elif kind == F.ADD:
            self.binary = False
        else:
            self.binary = self.binary and self.slot_binary[slot]

    def new_slots(self, n: int) -> list[int]:
        """``n`` slots for a block; blocks run one after another, so slots are reused."""
        return list(range(n))

    def to_bytes(self) -> bytes:
        return F.write_plan(self.T, self.input_time_major, self.input_dims, self.ops)


def _pruned_as_dense(m: PackedSpikingLinear, low: Lowering) -> Optional[torch.Tensor]:
    """Dense packed rows for a pruned integer layer fed with spikes, where the eager CPU kernel
    would read them too (``ops.pruned_blocks.spike_layout``: bit-identical, cheaper)."""
    if not PRUNED_TO_DENSE or not (low.binary and m.input_mode != "analog" and m.dense_threshold >= 1.0):
        return None
    layout = spike_layout(m.row_ptr, m.index, m.values, m.bits, m.out_features)
    return layout[1] if layout is not None and layout[0] == "dense" else None


def _linear(m: PackedSpikingLinear, low: Lowering, path: str) -> None:
    dense = _pruned_as_dense(m, low) if m.layout == "pruned" else None
    pruned = m.layout == "pruned" and dense is None
    p = F.Payload().u32(m.in_features, m.out_features, m.bits, m.group_size,
                        int(pruned), _MODES[m.input_mode]).f32(m.dense_threshold)
    p.tensor(m.scale if m.bits != 32 else None).tensor(m.bias)
    if pruned:
        index_dtype = torch.uint16 if m.index.dtype == torch.uint16 else torch.int32
        p.tensor(m.row_ptr, torch.int32).tensor(m.index, index_dtype)
        p.tensor(m.values, torch.float32 if m.bits == 32 else torch.uint8)
        blocks = cpu_blocks(m.row_ptr, m.index, m.values, m.bits, m.out_features)
        p.u32(blocks is not None)
        if blocks is not None:  # the layout the eager CPU spike kernel reads, built by the same code
            for t, dt in zip(blocks, (torch.int32, torch.uint16, torch.uint16, torch.int32, torch.int8)):
                p.tensor(t, dt)
    else:
        w = dense if dense is not None else m.weights
        p.tensor(w, torch.float32 if m.bits == 32 else torch.uint8)
    low.add(F.LINEAR, p)


def _conv_rows(m: PackedSpikingConv2d) -> torch.Tensor:
    """The dense packed tap rows (a pruned layer's dropped rows hold code 0), so the plan
    computes exactly what the pruned layer does (its own kernel is not in the runtime)."""
    if getattr(m, "layout", "dense") == "dense":
        return m.weights
    taps = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
    return dense_rows(m.index, m.values, m.bits, m.out_channels, taps)


def _conv(m: PackedSpikingConv2d, low: Lowering, path: str) -> None:
    p = F.Payload().u32(m.in_channels, m.out_channels, *m.kernel_size, *m.stride, *m.padding,
                        *m.dilation, m.bits, m.group_size, _MODES[m.input_mode]).f32(m.dense_threshold)
    p.tensor(m.scale if m.bits != 32 else None).tensor(m.bias)
    p.tensor(_conv_rows(m), torch.float32 if m.bits == 32 else torch.uint8)
    low.add(F.CONV2D, p)


def _neuron(m: nn.Module, low: Lowering, path: str) -> None:
    if m.step_mode != "m":
        raise ValueError(f"runtime: module '{path}' ({type(m).__name__}) has step_mode "
                         f"{m.step_mode!r}; the runtime runs multi-step ('m') neurons")
    if isinstance(m, LIF):
        leak, decay = True, 1.0 / m.tau  # as functional.lif computes it
    elif isinstance(m, PLIF):
        leak, decay = True, float(torch.sigmoid(m.w.detach().reshape(()).to(torch.float32)))
    else:
        leak, decay = False, 1.0
    decay_input = getattr(m, "decay_input", True)
    q = m.state_quant
    p = F.Payload().u32(leak, m.v_reset is not None, decay_input)
    p.f32(decay, m.v_threshold, m.v_reset if m.v_reset is not None else 0.0)
    if q is None:
        p.u32(0, 0, 0).f32(0.0, 0.0, 0.0)
    else:
        p.u32(1, q.mode, q.seed).f32(q.step, q.min, q.max)
    low.add(F.NEURON, p)


def _skip(m: nn.Module, low: Lowering, path: str) -> None:
    """Identity at inference (nn.Identity, dropout in eval mode)."""


def _unsupported(m: nn.Module, path: str, why: str) -> ValueError:
    return ValueError(f"runtime: module '{path}' ({type(m).__name__}): {why}")


def _pool(m: nn.Module, low: Lowering, path: str) -> None:
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    k = pair(m.kernel_size)
    st = pair(m.stride if m.stride is not None else m.kernel_size)
    pad = pair(m.padding)
    if m.ceil_mode:
        raise _unsupported(m, path, "ceil_mode=True is not supported")
    if isinstance(m, nn.MaxPool2d):
        if pair(m.dilation) != (1, 1) or m.return_indices:
            raise _unsupported(m, path, "dilation and return_indices are not supported")
        kind = F.MAX_POOL2D
    else:
        if m.divisor_override is not None or (not m.count_include_pad and max(pad) > 0):
            raise _unsupported(m, path, "divisor_override / count_include_pad=False are not supported")
        kind = F.AVG_POOL2D
    low.add(kind, F.Payload().u32(*k, *st, *pad))


def _adaptive_pool(m: nn.Module, low: Lowering, path: str) -> None:
    size = (m.output_size, m.output_size) if isinstance(m.output_size, int) else tuple(m.output_size)
    if None in size:
        raise _unsupported(m, path, "output_size with None is not supported")
    low.add(F.ADAPTIVE_AVG_POOL2D, F.Payload().u32(*size))


def _flatten(m: nn.Module, low: Lowering, path: str) -> None:
    if m.step_mode != "m":
        raise _unsupported(m, path, "the runtime runs multi-step (step_mode='m') modules")
    low.add(F.FLATTEN)


def _dropout(m: nn.Module, low: Lowering, path: str) -> None:
    if m.training and m.p > 0:
        raise _unsupported(m, path, "dropout in training mode (call .eval())")


def _sew(m: nn.Module, low: Lowering, path: str) -> None:
    """``g(conv2(conv1(x)), shortcut(x))`` with the input kept in a slot."""
    x_slot, a_slot = low.new_slots(2)
    low.slot_op(F.SAVE, x_slot)
    lower_module(m.conv1, low, f"{path}.conv1")
    lower_module(m.conv2, low, f"{path}.conv2")
    low.slot_op(F.SAVE, a_slot)
    low.slot_op(F.LOAD, x_slot)
    if m.downsample is not None:
        lower_module(m.downsample, low, f"{path}.downsample")
    low.slot_op({"ADD": F.ADD, "AND": F.MUL, "IAND": F.IAND}[m.connect], a_slot)


# Leaf lowerings by exact type (a subclass may change forward, so it must be listed itself).
LEAVES: dict[type, Callable[[nn.Module, Lowering, str], None]] = {
    PackedSpikingLinear: _linear, PackedSpikingConv2d: _conv, LIF: _neuron, IF: _neuron,
    PLIF: _neuron, nn.Identity: _skip, nn.Dropout: _dropout, SNNDropout: _dropout,
    MaxPool2d: _pool, AvgPool2d: _pool, AdaptiveAvgPool2d: _adaptive_pool, Flatten: _flatten,
    SEWBlock: _sew,
}


def lower_module(m: nn.Module, low: Lowering, path: str) -> None:
    """Appends ``m``'s ops (containers: their children in order)."""
    fn = LEAVES.get(type(m))
    if fn is not None:
        return fn(m, low, path)
    if type(m) is nn.Sequential:
        for name, child in m.named_children():
            lower_module(child, low, f"{path}.{name}" if path else name)
        return
    raise ValueError(f"runtime: module '{path or '<root>'}' of type {type(m).__module__}."
                     f"{type(m).__qualname__} has no native lowering; supported: "
                     + ", ".join(sorted(t.__name__ for t in LEAVES)) + ", nn.Sequential, "
                     + ", ".join(sorted(t.__name__ for t in MODELS)))


def _spiking_mlp(model: nn.Module, example: Tensor) -> Lowering:
    if example.dim() != 2:
        raise ValueError(f"example_input: SpikingMLP takes [B, F], got shape {tuple(example.shape)}")
    low = Lowering(model.T, False, tuple(example.shape[1:]))
    low.add(F.ENCODE_THRESHOLD, F.Payload().tensor(model.thresholds.reshape(-1).float()))
    for name in model._order:
        lower_module(model._modules[name], low, name)
    low.add(F.MEAN_T)
    return low


def _time_major(model: nn.Module, example: Tensor) -> Lowering:
    if example.dim() < 3:
        raise ValueError("example_input: a time-major model takes [T, B, ...] with at least one "
                         f"feature dim, got shape {tuple(example.shape)}")
    low = Lowering(int(example.shape[0]), True, tuple(example.shape[2:]))
    lower_module(model, low, "")
    return low


def _conv_snn(model: nn.Module, example: Tensor) -> Lowering:
    """``ConvSNN.forward``: stem (once, then repeated: "direct"; after the rate code: "rate"),
    body, head, mean over T."""
    if example.dim() != 4 or example.shape[1] != model.in_channels:
        raise ValueError(f"example_input: {type(model).__name__} takes [B, {model.in_channels}, H, W], "
                         f"got shape {tuple(example.shape)}")
    low = Lowering(model.T, False, tuple(example.shape[1:]))
    if model.encoder == "direct":
        lower_module(model.stem, low, "stem")
        low.add(F.REPEAT)
    else:
        th = (torch.arange(model.T, dtype=example.dtype) + 0.5) / model.T
        low.add(F.ENCODE_THRESHOLD, F.Payload().tensor(th.float()))
        lower_module(model.stem, low, "stem")
    lower_module(model.body, low, "body")
    lower_module(model.head, low, "head")
    low.add(F.MEAN_T)
    return low


def _models() -> dict[type, Callable[[nn.Module, Tensor], Lowering]]:
    from ..models import SEWResNet, SpikingLeNet, SpikingMLP, SpikingVGG

    return {SpikingMLP: _spiking_mlp, SpikingVGG: _conv_snn, SpikingLeNet: _conv_snn, SEWResNet: _conv_snn}


MODELS = _models()


def lower(model: nn.Module, example_input: Tensor) -> Lowering:
    """The plan of ``model`` for inputs shaped like ``example_input`` (any batch size)."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: expected an nn.Module, got {type(model).__name__}")
    if not isinstance(example_input, Tensor):
        raise ValueError(f"example_input: expected a tensor, got {type(example_input).__name__}")
    fn = MODELS.get(type(model), _time_major)
    return fn(model, example_input)
