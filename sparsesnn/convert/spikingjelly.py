"""SpikingJelly (``spikingjelly.activation_based``) model -> sparsesnn modules, same spikes.

Neurons map onto the fused kernels (``LIFNode`` -> :class:`~sparsesnn.nn.LIF`, ``IFNode`` ->
:class:`~sparsesnn.nn.IF`, ``ParametricLIFNode`` -> :class:`~sparsesnn.nn.PLIF`), synaptic
layers onto the event-driven ones (``Linear`` -> ``SpikingLinear``, ``Conv2d`` ->
``SpikingConv2d``), stateless step-wise layers onto plain torch modules run on the folded
``[T*B, ...]`` batch (:class:`~sparsesnn.convert.layers.SeqToANN`). Parameters and BN
statistics are shared with (not copied from) the model that is converted.
"""
from __future__ import annotations

from typing import Optional

from torch import nn

from ..nn import IF, LIF, PLIF, SpikingConv2d, SpikingLinear
from ..ops import _checks as C
from ._tree import KEEP, RECURSE, Refuse, Wrap, convert_tree
from .layers import SeqToANN, SequenceDropout

__all__ = ["from_spikingjelly"]

# SpikingJelly surrogate class -> sparsesnn surrogate name (same derivative formula; checked
# against SpikingJelly's *_backward functions in tests/test_convert_spikingjelly.py).
_SURROGATES = {"Sigmoid": "sigmoid", "ATan": "atan", "PiecewiseQuadratic": "piecewise_quadratic",
               "SuperSpike": "superspike"}

# SpikingJelly step-wise layers that are a torch layer applied per timestep.
_STATELESS = ("BatchNorm1d", "BatchNorm2d", "MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d",
              "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "Flatten", "Upsample", "GroupNorm")


def _sj():
    try:
        from spikingjelly.activation_based import layer, neuron
    except ImportError as e:  # pragma: no cover - exercised only without the peer
        raise ImportError("from_spikingjelly needs SpikingJelly: pip install spikingjelly") from e
    return layer, neuron


def _torch_twin(m: nn.Module) -> nn.Module:
    """The torch base-class module of a SpikingJelly wrapper (``layer.MaxPool2d`` ->
    ``nn.MaxPool2d``), sharing its parameters and buffers; its forward is torch's own."""
    base = next(c for c in type(m).__mro__ if c.__module__.startswith("torch.nn."))
    twin = base.__new__(base)
    twin.__dict__.update(m.__dict__)
    for attr in ("_parameters", "_buffers", "_modules"):
        setattr(twin, attr, dict(getattr(m, attr)))
    twin.__dict__.pop("step_mode", None)
    return twin


def _surrogate(m: nn.Module) -> tuple[Optional[str], Optional[float], Optional[str]]:
    sg = m.surrogate_function
    name = _SURROGATES.get(type(sg).__name__)
    if name is None or not type(sg).__module__.startswith("spikingjelly"):
        return None, None, f"surrogate {type(sg).__name__} has no sparsesnn equivalent " \
                           f"(supported: {sorted(_SURROGATES)})"
    if not getattr(sg, "spiking", True):
        return None, None, "surrogate in non-spiking (analog) mode is not supported"
    return name, float(sg.alpha), None


def _neuron_args(m: nn.Module) -> tuple[Optional[dict], Optional[str]]:
    surrogate, alpha, why = _surrogate(m)
    if why:
        return None, why
    for attr in ("v_threshold", "v_reset"):
        val = getattr(m, attr)
        if val is not None and not isinstance(val, (int, float)):
            return None, f"{attr} of type {type(val).__name__} (only a number is supported)"
    if m.step_mode not in ("s", "m"):
        return None, f"step_mode {m.step_mode!r}"
    return dict(v_threshold=float(m.v_threshold),
                v_reset=None if m.v_reset is None else float(m.v_reset),
                detach_reset=bool(m.detach_reset), surrogate=surrogate, alpha=alpha,
                step_mode=m.step_mode), None


def _rule(layer_mod, neuron_mod, mode: str):
    def neuron(m: nn.Module):
        kw, why = _neuron_args(m)
        if why:
            return Refuse(why)
        t = type(m)
        if t is neuron_mod.LIFNode:
            if not float(m.tau) > 1.0:
                return Refuse(f"tau={m.tau}: sparsesnn needs tau > 1")
            return LIF(tau=float(m.tau), decay_input=bool(m.decay_input), **kw)
        if t is neuron_mod.IFNode:
            return IF(**kw)
        new = PLIF(decay_input=bool(m.decay_input), **kw)
        new.w = m.w  # share the learnable decay parameter
        return new

    neurons = (neuron_mod.LIFNode, neuron_mod.IFNode, neuron_mod.ParametricLIFNode)
    stateless = tuple(getattr(layer_mod, n) for n in _STATELESS if hasattr(layer_mod, n))

    def rule(m: nn.Module, path: str):
        t = type(m)
        if t in neurons:
            return neuron(m)
        if t in (layer_mod.Linear, nn.Linear):
            return SpikingLinear.from_linear(m, mode=mode)
        if t in (layer_mod.Conv2d, nn.Conv2d):
            return SpikingConv2d.from_conv(m, mode=mode)
        if t in stateless:
            twin = _torch_twin(m)
            return SeqToANN(twin, step_mode="m") if m.step_mode == "m" else twin
        if t in (layer_mod.Dropout, layer_mod.Dropout2d):
            if m.step_mode != "m":
                return Refuse("single-step Dropout keeps its mask across calls until reset(); "
                              "only multi-step mode is supported")
            new = SequenceDropout(m.p, channel=t is layer_mod.Dropout2d)
            return new.train(m.training)
        if t is layer_mod.SeqToANNContainer:
            # Its children are plain torch modules run on [T*B, ...]: keep the folding, convert
            # the children (Linear/Conv2d -> event-driven ones).
            return Wrap(SeqToANN(*m.children(), step_mode="m").train(m.training))
        if t.__module__.startswith("spikingjelly"):
            return Refuse("no sparsesnn equivalent")
        if len(m._modules) == 0:
            return KEEP  # a torch or user module that does not depend on SpikingJelly
        return RECURSE

    return rule


def from_spikingjelly(model: nn.Module, *, inplace: bool = False, mode: str = "auto") -> nn.Module:
    """Convert a SpikingJelly model to sparsesnn modules (same spikes, same gradients).

    Args:
        model: a model built from ``spikingjelly.activation_based`` modules (any container,
            incl. a user class whose ``forward`` calls its children: the children are replaced,
            the forward is kept).
        inplace: replace the modules of ``model`` itself instead of a deep copy.
        mode: dispatch mode of the ``SpikingLinear`` / ``SpikingConv2d`` layers (``"auto"``,
            ``"event"`` or ``"dense"``).
    Returns:
        the converted model. Reset its state with :func:`sparsesnn.nn.reset_net` (SpikingJelly's
        ``functional.reset_net`` does not know sparsesnn neurons).
    Raises:
        UnconvertibleError (a ValueError) listing every module that cannot be mapped, with its
        path, type and reason; ``model`` is then left unchanged.
    """
    C.check_choice("mode", mode, ("auto", "event", "dense"))
    layer_mod, neuron_mod = _sj()
    return convert_tree(model, _rule(layer_mod, neuron_mod, mode), "SpikingJelly", inplace)
