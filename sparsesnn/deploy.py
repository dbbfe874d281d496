"""Trained/compressed float model -> inference model on the packed, pruned, event-driven kernels.

``deploy(model)`` replaces every synaptic layer (``nn.Linear``, ``SpikingLinear``, ``nn.Conv2d``,
``SpikingConv2d``) by ``PackedSpikingLinear`` / ``PackedSpikingConv2d``, choosing each layer's
format from the compression state that :class:`sparsesnn.compress.ADMM` attached (quantization
spec + fitted scale -> packed low-bit codes; mask -> pruned weights) and its layout (dense
packed rows or compressed rows of the surviving weights) by the actual byte count of each.
BatchNorm layers are first folded into the preceding conv/linear (:mod:`sparsesnn.fold`), so
none is left. Neurons, pooling and every other module are kept. Because the float model's
weights already lie on the quantized grid with the same scale (folding keeps them on a grid),
the packed layers compute the same function as the BN-folded, fake-quantized float model (up
to float summation order). Layers decide per call between the event-driven kernels (binary
spikes: max pooling keeps them binary) and the dense/analog path (direct image input, average
pooling, SEW residual sums).
"""
from __future__ import annotations

import copy
import inspect
import os
from typing import Any

import torch
from torch import nn

from . import model_file
from .compress.state import compressible_layers, get_state
from .compress.train import reset_states
from .fold import fold_batchnorm
from .quant import as_spec
from .models._native import native_by_default
from .nn import PackedSpikingConv2d, PackedSpikingLinear

__all__ = ["deploy", "save", "load", "convert_legacy", "layer_formats", "fold_batchnorm"]


def _layouts(cls: type) -> tuple[Any, ...]:
    """The layouts ``cls.from_float`` can be asked for (None: its own default only)."""
    if "layout" in inspect.signature(cls.from_float).parameters:
        return ("dense", "pruned")
    return (None,)


def _convert(layer: nn.Module, default_spec: Any) -> nn.Module:
    """The packed layer with the fewest bytes among the layouts that hold ``layer`` exactly."""
    st = get_state(layer)
    spec, scale, mask = (default_spec, None, None)
    if st is not None:
        spec, scale, mask = st.spec, st.scale, st.mask
    cls = PackedSpikingConv2d if layer.weight.dim() == 4 else PackedSpikingLinear
    if mask is None and bool((layer.weight == 0).any()):
        mask = layer.weight.detach() != 0  # zeros are pruned weights: the pruned layout may be smaller
    best, errors = None, []
    for layout in _layouts(cls):
        kwargs = {} if layout is None else {"layout": layout}
        try:
            cand = cls.from_float(layer, spec, scale=scale, mask=mask, **kwargs)
        except ValueError as exc:  # e.g. binary codes cannot hold pruned zeros in some layouts
            errors.append(exc)
            continue
        if best is None or cand.model_bytes() < best.model_bytes():
            best = cand
    if best is None:
        raise errors[0]
    return best


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
           inplace: bool = False, native: bool | None = None) -> nn.Module:
    """Packed inference copy of ``model`` (eval mode, no gradients).

    Args:
        model: float model; layers compressed by ADMM carry their mask/spec/scale.
        default_bits: format for layers without compression state (None: fp32 values, pruned
            layout when >= 50% of the weights are zero).
        inplace: convert ``model`` itself instead of a deep copy.
        native: a ``SpikingMLP`` or conv SNN of :mod:`sparsesnn.models` answers inference
            calls (CPU, no autograd, no hooks) with one native plan of :mod:`sparsesnn.runtime`
            where that is faster: compiled on first use, then for each input shape whichever
            of plan and eager modules measured faster on its first call
            (:mod:`sparsesnn.models._native`); the same outputs either way. None (default):
            on for those models; False: always the eager modules. ``model.native_inference``
            changes it later.
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
    fold_batchnorm(out, inplace=True)
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
    out.native_inference = native_by_default(out) if native is None else bool(native)
    return out


def layer_formats(model: nn.Module) -> dict[str, dict[str, Any]]:
    """``{name: {format, layout, bits, bytes}}`` of the packed layers of a deployed model."""
    res = {}
    for name, m in model.named_modules():
        if isinstance(m, (PackedSpikingLinear, PackedSpikingConv2d)):
            res[name] = {"format": m.format, "layout": getattr(m, "layout", "dense"),
                         "bits": m.bits, "bytes": m.model_bytes()}
    return res


def save(model: nn.Module, path: str | os.PathLike) -> None:
    """Save a deployed model to ``path`` in the safe model-file format (architecture as JSON,
    tensors as raw bytes, no pickle; see :mod:`sparsesnn.model_file`). Neuron state is reset
    first (the membrane state of the last batch is not part of the model)."""
    reset_states(model)
    model_file.save(model, path)


def load(path: str | os.PathLike, map_location: Any = "cpu") -> nn.Module:
    """Load a model written by :func:`save`, in eval mode. Safe on files from anywhere: loading
    never runs code from the file; anything malformed is a ``ValueError``. Files of the old
    pickle-based format are refused with a pointer to :func:`convert_legacy`."""
    model = model_file.load(path, map_location)
    model.native_inference = native_by_default(model)  # as deploy() made it (its ``native``)
    return model


def convert_legacy(path: str | os.PathLike, out: str | os.PathLike, *, trust: bool = False) -> nn.Module:
    """Rewrite a model saved by sparsesnn <= 0.1 (pickle-based ``"sparsesnn.deployed/1"``) in
    the safe format at ``out``; returns the model.

    Unpickling runs code stored in the file: pass ``trust=True`` only for files whose source
    you trust (e.g. ones you wrote yourself).
    """
    if trust is not True:
        raise ValueError("trust: converting a pickle-based file unpickles it, which runs any code "
                         "stored in it; pass trust=True only for a file from a trusted source")
    obj = torch.load(os.fspath(path), map_location="cpu", weights_only=False)
    if not isinstance(obj, dict) or obj.get("format") != model_file.LEGACY_FORMAT:
        raise ValueError(f"path: {os.fspath(path)} is not a {model_file.LEGACY_FORMAT!r} file")
    model = obj["model"].eval()
    save(model, out)
    return model
