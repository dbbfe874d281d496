"""Trained/compressed float model -> inference model on the packed, pruned, event-driven kernels.

``deploy(model)`` replaces every synaptic layer (``nn.Linear``, ``SpikingLinear``, ``nn.Conv2d``,
``SpikingConv2d``) by ``PackedSpikingLinear`` / ``PackedSpikingConv2d``, choosing each layer's
format from the compression state that :class:`sparsesnn.compress.ADMM` attached (mask ->
compressed-row layout by input neuron, quantization spec + fitted scale -> packed low-bit
codes; a linear layer keeps the compressed-row layout only when it stores fewer bytes than
the plain packed codes). Neurons and every other module are kept. Because the float model's weights already lie
on the quantized grid with the same scale, the packed layers compute the same function as the
fake-quantized float model (up to float summation order).
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from .compress.state import compressible_layers, get_state
from .compress.train import reset_states
from .quant import as_spec
from .nn import PackedSpikingConv2d, PackedSpikingLinear

__all__ = ["deploy", "save", "load", "layer_formats"]


def _convert(layer: nn.Module, default_spec: Any) -> nn.Module:
    st = get_state(layer)
    spec, scale, mask = (default_spec, None, None)
    if st is not None:
        spec, scale, mask = st.spec, st.scale, st.mask
    is_conv = layer.weight.dim() == 4
    if is_conv:
        return PackedSpikingConv2d.from_float(layer, spec, scale=scale, mask=mask)
    return _smallest_linear(layer, spec, scale, mask)


def _smallest_linear(layer: nn.Module, spec: Any, scale: Any, mask: Any) -> nn.Module:
    """The index (pruned) layout only when it stores fewer bytes than plain packed codes."""
    binary = spec is not None and getattr(as_spec(spec), "format", None) == "binary"
    if binary and mask is not None and not bool(mask.all()):
        # binary codes cannot store a zero: only the index layout keeps pruned weights pruned
        return PackedSpikingLinear.from_float(layer, spec, scale=scale, mask=mask, layout="pruned")
    dense = PackedSpikingLinear.from_float(layer, spec, scale=scale, mask=mask, layout="dense")
    if mask is None and not bool((layer.weight == 0).any()):
        return dense  # nothing pruned: the index layout cannot be smaller
    pruned = PackedSpikingLinear.from_float(layer, spec, scale=scale, mask=mask, layout="pruned")
    return pruned if pruned.model_bytes() < dense.model_bytes() else dense


def _hook_dicts(module: nn.Module) -> list[dict]:
    """The module's forward/backward hook registries (hooks left by compressors, monitors)."""
    return [v for k, v in vars(module).items()
            if k.startswith(("_forward", "_backward")) and "hooks" in k and isinstance(v, dict)]


def _history_free_copy(model: nn.Module) -> nn.Module:
    """``copy.deepcopy(model)`` without what a trained model may carry that an inference copy
    must not: hooks (the copy gets empty registries), and tensors in module attributes that
    still hold autograd history from the last batch (neuron state), which deepcopy refuses;
    the copy gets them detached."""
    memo: dict[int, object] = {}
    originals = []  # keeps the memo's ids valid during the copy
    for m in model.modules():
        for hooks in _hook_dicts(m):
            memo[id(hooks)] = type(hooks)()
            originals.append(hooks)
        for value in vars(m).values():
            if isinstance(value, torch.Tensor) and value.grad_fn is not None:
                memo[id(value)] = value.detach().clone()
                originals.append(value)
    return copy.deepcopy(model, memo)


def deploy(model: nn.Module, *, default_bits: int | str | None = None,
           inplace: bool = False) -> nn.Module:
    """Packed inference copy of ``model`` (eval mode, no gradients).

    Args:
        model: float model; layers compressed by ADMM carry their mask/spec/scale.
        default_bits: format for layers without compression state (None: fp32 values).
            Linear layers with pruned (zero) weights take the compressed-row layout only when
            it is smaller than the plain packed codes (ties: plain codes).
        inplace: convert ``model`` itself instead of a deep copy.
    Works on a model straight out of training: neuron state is reset, and the result carries
    no forward/backward hooks (those of compressors and monitors stay on ``model`` unless
    ``inplace``, where they are removed).
    Returns:
        the deployed model; ``deploy(model)(x)`` matches ``model(x)`` for binary-spike inputs.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: expected an nn.Module, got {type(model).__name__}")
    default_spec = as_spec(default_bits) if default_bits is not None else None
    out = model if inplace else _history_free_copy(model)
    if inplace:
        for m in out.modules():
            for hooks in _hook_dicts(m):
                hooks.clear()
    layers = compressible_layers(out)
    for name, layer in layers.items():
        if layer.weight.dim() not in (2, 4):
            continue  # Conv1d etc.: no packed kernel, stays float
        new = _convert(layer, default_spec)
        if name == "":
            out = new
            break
        parent_name, _, child = name.rpartition(".")
        parent = out.get_submodule(parent_name) if parent_name else out
        setattr(parent, child, new)
    reset_states(out)
    out.eval()
    for p in out.parameters():
        p.requires_grad_(False)
    return out


def layer_formats(model: nn.Module) -> dict[str, dict[str, Any]]:
    """``{name: {format, layout, bits, bytes}}`` of the packed layers of a deployed model."""
    res = {}
    for name, m in model.named_modules():
        if isinstance(m, (PackedSpikingLinear, PackedSpikingConv2d)):
            res[name] = {"format": m.format, "layout": getattr(m, "layout", "dense"),
                         "bits": m.bits, "bytes": m.model_bytes()}
    return res


def save(model: nn.Module, path: str) -> None:
    """Save a deployed model (architecture + packed buffers) to ``path``."""
    reset_states(model)  # do not pickle the membrane state of the last batch
    torch.save({"format": "sparsesnn.deployed/1", "model": model}, path)


def load(path: str, map_location: Any = "cpu") -> nn.Module:
    """Load a model written by :func:`save`. Uses pickle: load only files you trust."""
    obj = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(obj, dict) or obj.get("format") != "sparsesnn.deployed/1":
        raise ValueError(f"path: {path} is not a sparsesnn deployed model")
    return obj["model"].eval()
