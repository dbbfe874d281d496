"""Fold batch normalization into the preceding conv / linear layer (for deployment).

In eval mode ``BN(conv(x)) = conv'(x)`` with, per output channel ``o``,
``c_o = gamma_o / sqrt(var_o + eps)``, ``W'_o = c_o W_o`` and ``b'_o = beta_o + (b_o - mean_o) c_o``.
A layer quantized per output channel (codes ``q_o``, scale ``s_o``, as ADMM leaves it) stays
exactly on a grid after folding: ``W'_o = (sign(c_o) q_o) (|c_o| s_o)``, so the compression state's
scale becomes ``|c_o| s_o`` and the packed model computes the folded function with the same
codes (up to sign). Pairs are adjacent ``(conv/linear, BatchNorm)`` entries of an
``nn.Sequential``, which is how the models in ``sparsesnn.models`` are built.
"""
from __future__ import annotations

import copy
from dataclasses import replace

import torch
from torch import nn

from .compress.state import get_state, set_state

__all__ = ["fold_batchnorm", "batchnorm_pairs"]

_PAIRS = ((nn.Conv2d, nn.BatchNorm2d), (nn.Linear, nn.BatchNorm1d), (nn.Conv1d, nn.BatchNorm1d))


def batchnorm_pairs(model: nn.Module) -> list[tuple[nn.Sequential, int]]:
    """``(sequential, i)`` for every ``sequential[i]`` (conv/linear) directly followed by a
    matching BatchNorm ``sequential[i + 1]``."""
    pairs = []
    for seq in model.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        mods = list(seq)
        for i in range(len(mods) - 1):
            a, b = mods[i], mods[i + 1]
            if any(isinstance(a, la) and isinstance(b, lb) for la, lb in _PAIRS):
                pairs.append((seq, i))
    return pairs


@torch.no_grad()
def _fold(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> None:
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f"model: {type(bn).__name__} without running statistics "
                         "(track_running_stats=False) normalizes with batch statistics at "
                         "inference and cannot be folded")
    w = layer.weight
    if bn.num_features != w.shape[0]:
        raise ValueError(f"model: {type(bn).__name__}({bn.num_features}) follows a layer with "
                         f"{w.shape[0]} outputs")
    var, mean = bn.running_var.float(), bn.running_mean.float()
    gamma = bn.weight.float() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.float() if bn.bias is not None else torch.zeros_like(var)
    c = gamma / torch.sqrt(var + bn.eps)
    b = layer.bias.float() if layer.bias is not None else torch.zeros_like(var)
    w.copy_((w.float() * c.view(-1, *([1] * (w.dim() - 1)))).to(w.dtype))
    new_bias = (beta + (b - mean) * c).to(w.dtype)
    if layer.bias is None:
        layer.bias = nn.Parameter(new_bias, requires_grad=w.requires_grad)
    else:
        layer.bias.copy_(new_bias)
    st = get_state(layer)
    if st is not None and st.scale is not None:
        s = st.scale.float()
        s2 = s * c.abs().to(s.device).view(-1, *([1] * (s.dim() - 1)))
        # a zero c_o zeroes the row (codes 0 under any scale); keep the old, positive scale
        set_state(layer, replace(st, scale=torch.where(s2 > 0, s2, s)))


def fold_batchnorm(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """``model`` (or a copy) with every foldable BatchNorm merged into the preceding conv/linear
    and replaced by ``nn.Identity``; the result in eval mode computes what ``model.eval()`` does
    (up to float rounding). BatchNorms not directly after a conv/linear in an ``nn.Sequential``
    are left as they are."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: expected an nn.Module, got {type(model).__name__}")
    out = model if inplace else copy.deepcopy(model)
    for seq, i in batchnorm_pairs(out):
        _fold(seq[i], seq[i + 1])
        seq[i + 1] = nn.Identity()
    return out
