"""Spatial structured pruning by PCA of the average accumulated membrane potential
(Chowdhury, Garg, Roy 2021, "Spatio-Temporal Pruning and Quantization for Low-latency SNNs").

For every hidden layer ``fc -> neuron -> fc_next`` of a feed-forward SNN:

1. Run a calibration set and record, per sample, the average accumulated membrane potential of
   each neuron: the membrane potential after leak, integration and reset at every step,
   summed over the T steps and divided by T, ``u[b, n] = mean_t v[t, b, n]`` -> matrix
   ``U [samples, N]`` (the paper's criterion). ``criterion="current"`` uses the time-averaged
   input current ``mean_t (W x[t] + bias)`` instead (the old behaviour here): it is linear in
   the layer's input, so a first layer fed ``F`` inputs never keeps more than ``F`` neurons.
2. PCA of ``U``: the width ``k`` is the number of principal components whose cumulative
   explained variance reaches ``variance`` (default 0.999) -- :func:`explained_components`.
3. Rebuild at width ``k`` with *real* smaller tensors: keep the ``k`` neurons that span the
   principal subspace best (column-pivoted QR of the centred ``U``: the most linearly independent
   neurons first), so ``fc`` becomes ``[k, K]`` and ``fc_next`` ``[N2, k]``.
4. Compensate the next layer's inputs: the spikes of the dropped neurons are regressed (least
   squares over the calibration set, all time steps) on the spikes of the kept ones plus a
   constant, and their outgoing weights are folded into the kept columns and the bias. Dropped
   neurons that duplicate kept ones or never change (dead / always-on) are removed exactly.
5. Fine-tune (:func:`pca_prune`) to recover the rest.

Supported models: :class:`sparsesnn.models.SpikingMLP` and ``nn.Sequential`` chains (or
modules listing their layers in ``_order``) of ``nn.Linear`` / neuron (LIF, IF, PLIF) layers,
and of ``Conv2d`` (``SpikingConv2d``) / neuron / ``Conv2d`` (or / ``Flatten`` / ``Linear`` head):
channel PCA, every (batch, H, W) position a sample. Apply PCA before other compression (the rebuilt
layers carry no compression state).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from ..ops._checks import check_finite, check_positive_int
from .activity import neuron_types
from . import distributed as D
from ._finetune import finetune
from .train import reset_states

__all__ = ["check_variance", "explained_components", "select_neurons", "prunable_layers",
           "collect_membrane", "membrane_trace", "spatial_prune", "pca_prune", "PCAResult"]


def check_variance(variance: object) -> float:
    """The explained-variance threshold must be a number in (0, 1]."""
    if isinstance(variance, bool) or not isinstance(variance, (int, float)):
        raise ValueError(f"variance: expected a number in (0, 1], got {variance!r}")
    v = check_finite("variance", variance)
    if not 0.0 < v <= 1.0:
        raise ValueError(f"variance: expected a number in (0, 1], got {variance!r}")
    return v


def explained_components(acts: torch.Tensor, variance: float = 0.999, rtol: float = 1e-6) -> int:
    """Number of principal components of ``acts`` ``[samples, N]`` explaining ``variance``.

    Eigenvalues of the covariance below ``rtol * largest`` count as zero (numerical noise), so
    ``variance=1.0`` returns the numerical rank of the centred data. At least 1.
    """
    variance = check_variance(variance)
    if not isinstance(acts, torch.Tensor) or acts.dim() != 2:
        raise ValueError(f"acts: expected a 2-D tensor [samples, N], got {getattr(acts, 'shape', acts)!r}")
    if acts.shape[1] == 0:
        raise ValueError("acts: expected at least one neuron (N >= 1)")
    x = acts.detach().double()
    x = x - x.mean(0, keepdim=True)
    # singular values of the centred data = sqrt of the covariance eigenvalues * (n-1)
    ev = torch.linalg.svdvals(x).pow(2) if x.shape[0] > 0 else x.new_zeros(1)
    if ev.numel() == 0 or float(ev[0]) <= 0.0:
        return 1
    ev = torch.where(ev >= rtol * ev[0], ev, torch.zeros_like(ev))
    ratio = torch.cumsum(ev, 0) / ev.sum()
    # first k with ratio >= variance (small slack so variance=1.0 is reached at the rank)
    k = int((ratio < variance - 1e-12).sum()) + 1
    return max(1, min(k, acts.shape[1]))


def select_neurons(acts: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (sorted) of ``k`` neurons spanning the principal subspace of ``acts`` best:
    the first ``k`` pivots of a column-pivoted QR of the centred ``acts`` ``[samples, N]``."""
    from scipy.linalg import qr  # scipy comes with scikit-learn (the demo extra)

    x = acts.detach().double()
    x = (x - x.mean(0, keepdim=True)).cpu().numpy()
    _, _, piv = qr(x, mode="economic", pivoting=True)
    keep = torch.as_tensor(piv[:k].copy(), dtype=torch.long)
    return keep.sort().values


def _sequence(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Forward-ordered ``(name, module)`` of a supported feed-forward model."""
    order = getattr(model, "_order", None)
    if isinstance(order, (list, tuple)):
        return [(n, getattr(model, n)) for n in order]
    if isinstance(model, nn.Sequential):
        return list(model.named_children())
    raise ValueError(f"model: expected a SpikingMLP or an nn.Sequential of Linear/Conv2d/neuron layers, "
                     f"got {type(model).__name__}")


def prunable_layers(model: nn.Module) -> list[tuple[str, str, str]]:
    """``(fc, neuron, fc_next)`` name triples whose width PCA can prune, in forward order."""
    seq = _sequence(model)
    ntypes = neuron_types()
    out = []
    for i in range(len(seq) - 2):
        (a, ma), (b, mb), (c, mc) = seq[i], seq[i + 1], seq[i + 2]
        linear = type(ma) is nn.Linear and type(mc) is nn.Linear
        conv = _plain_conv(ma) and _plain_conv(mc)
        if (linear or conv) and isinstance(mb, ntypes):
            out.append((a, b, c))
        elif _plain_conv(ma) and isinstance(mb, ntypes) and _is_flatten(mc) and i + 3 < len(seq) \
                and type(seq[i + 3][1]) is nn.Linear:  # conv -> neuron -> flatten -> linear head
            out.append((a, b, seq[i + 3][0]))
    return out


def _is_flatten(m: nn.Module) -> bool:
    """A flatten of each sample's (C, H, W) in channel-major order (ours or torch's, dims >= 1)."""
    from ..nn import Flatten

    return isinstance(m, Flatten) or (type(m) is nn.Flatten and m.start_dim in (1, 2) and m.end_dim == -1)


def _plain_conv(m: nn.Module) -> bool:
    """A Conv2d (or subclass, e.g. SpikingConv2d) whose channels PCA can drop."""
    return isinstance(m, nn.Conv2d) and m.groups == 1 and m.padding_mode == "zeros"


CRITERIA = ("membrane", "current")


@torch.no_grad()
def membrane_trace(neuron: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Membrane potential after each step (after leak, integration and reset) of a copy of
    ``neuron`` driven by ``x`` ``[T, B, ...]`` from rest: ``[T, B, ...]``."""
    probe = copy.deepcopy(neuron)
    for k, v in vars(probe).items():  # no hooks on the probe (ours would recurse)
        if k.startswith(("_forward", "_backward")) and "hooks" in k and isinstance(v, dict):
            v.clear()
    probe.step_mode = "s"
    probe.reset()
    vs = []
    for t in range(x.shape[0]):
        probe(x[t])
        vs.append(probe.v.detach().float())
    return torch.stack(vs)


def _channels_last(a: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` -> ``[B * H * W, C]`` (conv: every position is a sample); ``[B, N]`` as is."""
    return a.movedim(1, -1).reshape(-1, a.shape[1]) if a.dim() > 2 else a


@torch.no_grad()
def collect_membrane(model: nn.Module, loader: Iterable, neuron: nn.Module,
                     max_samples: int = 512, criterion: str = "membrane"
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``loader`` through ``model`` and record at ``neuron``:

    Returns ``(U [samples, N], S [samples * T, N])``: the average accumulated membrane potential
    (``criterion="membrane"``: ``mean_t v[t]`` after leak and reset; ``"current"``: the
    time-averaged input current) per sample, and the output spikes of every step.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion: expected one of {CRITERIA}, got {criterion!r}")
    us: list[torch.Tensor] = []
    ss: list[torch.Tensor] = []

    def hook(mod: nn.Module, inputs: Any, output: Any) -> None:
        x = inputs[0].detach().float()
        s = output[0] if isinstance(output, tuple) else output
        u = membrane_trace(mod, x) if criterion == "membrane" else x
        us.append(_channels_last(u.mean(0)))
        ss.append(_channels_last(s.detach().float().flatten(0, 1)))

    h = neuron.register_forward_hook(hook)
    was_training = model.training
    model.eval()
    seen = 0
    try:
        for batch in loader:
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
            x = x[: max_samples - seen]
            reset_states(model)
            model(x)
            seen += x.shape[0]
            if seen >= max_samples:
                break
    finally:
        h.remove()
        model.train(was_training)
    if not us:
        raise ValueError("loader: produced no calibration batch")
    # DDP: every rank sees its own shard; gather all ranks' samples (rank order) so the PCA,
    # the kept neurons and the least-squares fold are the same computation on every rank
    return D.all_gather_cat(torch.cat(us)), D.all_gather_cat(torch.cat(ss))


@dataclass
class PCAResult:
    """What :func:`spatial_prune` did: per layer ``N -> k`` and the kept neuron indices."""

    widths_before: dict[str, int] = field(default_factory=dict)
    widths_after: dict[str, int] = field(default_factory=dict)
    kept: dict[str, torch.Tensor] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)  # fine-tuning epochs

    @property
    def parameters_before(self) -> int:
        return sum(self.widths_before.values())

    def summary(self) -> str:
        return ", ".join(f"{n}: {self.widths_before[n]} -> {self.widths_after[n]}"
                         for n in self.widths_before)


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def _conv_like(conv: nn.Conv2d, in_ch: int, out_ch: int) -> nn.Conv2d:
    """A new conv of ``conv``'s class and geometry with other channel counts."""
    return type(conv)(in_ch, out_ch, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                      1, conv.bias is not None, conv.padding_mode,
                      device=conv.weight.device, dtype=conv.weight.dtype)


def _narrowed(layer: nn.Module, keep: torch.Tensor) -> nn.Module:
    """A copy of ``layer`` (Linear or Conv2d) with only output neurons / channels ``keep``."""
    if isinstance(layer, nn.Conv2d):
        out = _conv_like(layer, layer.in_channels, keep.numel())
    else:
        out = nn.Linear(layer.in_features, keep.numel(), bias=layer.bias is not None,
                        device=layer.weight.device, dtype=layer.weight.dtype)
    out.weight.copy_(layer.weight[keep])
    if layer.bias is not None:
        out.bias.copy_(layer.bias[keep])
    return out


def _fold_fit(spikes: torch.Tensor, keep: torch.Tensor, drop_idx: torch.Tensor, dev) -> torch.Tensor:
    """Least-squares ``A`` with ``S_drop ~= [S_keep, 1] @ A``: the dropped neurons' fan-out is
    folded into the kept ones (and a bias) through it."""
    s = spikes.to(dev).double()
    design = torch.cat([s[:, keep], torch.ones(s.shape[0], 1, dtype=s.dtype, device=dev)], 1)
    return torch.linalg.lstsq(design, s[:, drop_idx], driver="gelsd").solution


def _folded_inputs(w: torch.Tensor, bias: torch.Tensor | None, keep: torch.Tensor,
                   spikes: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The next layer's weight ``w [O, N, ...]`` (``...``: kernel taps or flattened positions)
    restricted to inputs ``keep``, with the dropped inputs' fan-out folded into the kept ones
    and the bias by the least-squares fit of their spikes (the fit is per position, so it
    holds at every tap/position; the constant is exact away from a zero-padded border).
    Returns float64 ``(weight, bias)``; the bias is None only if there was none and nothing
    was folded."""
    w = w.detach().double()
    drop = torch.ones(w.shape[1], dtype=torch.bool, device=w.device)
    drop[keep] = False
    drop_idx = drop.nonzero().flatten()
    w_new = w[:, keep].clone()
    b_new = None if bias is None else bias.detach().double().clone()
    if spikes is not None and drop_idx.numel() > 0:
        sol = _fold_fit(spikes, keep, drop_idx, w.device)  # [k+1, d]
        w_new += torch.einsum("od...,kd->ok...", w[:, drop_idx], sol[:-1])
        const = torch.einsum("od...,d->o", w[:, drop_idx], sol[-1])
        b_new = const if b_new is None else b_new + const
    return w_new, b_new


@torch.no_grad()
def _rebuild(model: nn.Module, fc_name: str, next_name: str, keep: torch.Tensor,
             spikes: torch.Tensor | None) -> None:
    """``fc`` (Linear or Conv2d) keeps output neurons/channels ``keep``; ``next`` (Linear,
    Conv2d, or the Linear head after a flatten: channel ``c`` owns columns ``c*P .. c*P+P-1``)
    keeps the same inputs, the dropped ones folded in (:func:`_folded_inputs`)."""
    fc = model.get_submodule(fc_name)
    nxt = model.get_submodule(next_name)
    keep = keep.to(fc.weight.device)
    width = fc.out_channels if isinstance(fc, nn.Conv2d) else fc.out_features
    w = nxt.weight
    if isinstance(fc, nn.Conv2d) and isinstance(nxt, nn.Linear):  # conv -> flatten -> head
        if nxt.in_features % width:
            raise ValueError(f"model: {next_name} takes {nxt.in_features} inputs, not a multiple of "
                             f"{fc_name}'s {width} channels")
        w = w.reshape(nxt.out_features, width, -1)
    w_new, b_new = _folded_inputs(w, nxt.bias, keep, spikes)
    dev, dt = nxt.weight.device, nxt.weight.dtype
    if isinstance(nxt, nn.Conv2d):
        new_next = type(nxt)(keep.numel(), nxt.out_channels, nxt.kernel_size, nxt.stride, nxt.padding,
                             nxt.dilation, 1, b_new is not None, nxt.padding_mode, device=dev, dtype=dt)
    else:
        new_next = nn.Linear(w_new[0].numel(), nxt.out_features, bias=b_new is not None, device=dev, dtype=dt)
    new_next.weight.copy_(w_new.reshape(new_next.weight.shape).to(dt))
    if b_new is not None:
        new_next.bias.copy_(b_new.to(dt))
    _set_module(model, fc_name, _narrowed(fc, keep))
    _set_module(model, next_name, new_next)


def spatial_prune(model: nn.Module, calib_loader: Iterable, variance: float = 0.999, *,
                  layers: Sequence[str] | None = None, max_samples: int = 512,
                  compensate: bool = True, min_width: int = 1, criterion: str = "membrane",
                  widths: dict[str, int] | None = None) -> PCAResult:
    """PCA width reduction of the hidden layers of ``model`` (in place, no fine-tuning).

    Args:
        model: a SpikingMLP or ``nn.Sequential`` (see module docstring).
        calib_loader: batches ``(x, y)`` or ``x``; up to ``max_samples`` samples are used.
        variance: explained-variance threshold in (0, 1] (else ValueError naming ``variance``).
        layers: names of the ``fc`` layers to prune (default: every prunable hidden layer;
            unknown names raise ValueError naming ``layers``).
        compensate: fold the dropped neurons into the next layer by least squares.
        min_width: never go below this many neurons.
        criterion: "membrane" (the paper's average accumulated membrane potential, default) or
            "current" (time-averaged input current, the old default).
        widths: ``{fc name: k}`` fixes the width of those layers instead of the variance rule
            (an operating point by size); the kept neurons are still the PCA-selected ones.
    Returns:
        a :class:`PCAResult` with the widths before/after and the kept neuron indices.
    """
    variance = check_variance(variance)
    if D.unwrap(model) is not model:
        raise ValueError("model: spatial_prune rebuilds layers with new shapes, which a DDP "
                         "wrapper cannot follow; run it on the bare model on every rank, then "
                         "wrap the result in DistributedDataParallel")
    max_samples = check_positive_int("max_samples", max_samples)
    min_width = check_positive_int("min_width", min_width)
    triples = prunable_layers(model)
    if layers is not None:
        names = [t[0] for t in triples]
        bad = [n for n in layers if n not in names]
        if bad:
            raise ValueError(f"layers: {bad} are not prunable hidden layers; prunable: {names}")
        triples = [t for t in triples if t[0] in set(layers)]
    if not triples:
        raise ValueError("model: no hidden Linear -> neuron -> Linear block to prune")
    res = PCAResult()
    for fc_name, neuron_name, next_name in triples:  # in order: later layers see the rebuilt ones
        neuron = model.get_submodule(neuron_name)
        u, s = collect_membrane(model, calib_loader, neuron, max_samples, criterion)
        N = u.shape[1]
        if widths is not None and fc_name in widths:
            k = check_positive_int("widths", widths[fc_name])
            k = min(k, N)
        else:
            k = max(min(explained_components(u, variance), N), min(min_width, N))
        keep = select_neurons(u, k) if k < N else torch.arange(N)  # CPU indices, moved in _rebuild
        res.widths_before[fc_name] = N
        res.widths_after[fc_name] = int(k)
        res.kept[fc_name] = keep
        if k < N:
            _rebuild(model, fc_name, next_name, keep, s if compensate else None)
    reset_states(model)
    return res


def pca_prune(model: nn.Module, calib_loader: Iterable, train_loader: Iterable | None = None, *,
              variance: float = 0.999, epochs: int = 2, lr: float = 1e-3,
              val_loader: Iterable | None = None, layers: Sequence[str] | None = None,
              max_samples: int = 512, progress: bool = True, criterion: str = "membrane",
              widths: dict[str, int] | None = None, mode: str = "finetune",
              init_gain: float = 1.0) -> PCAResult:
    """:func:`spatial_prune` then train with Adam for ``epochs`` (0: no training).

    ``mode="finetune"`` (default) continues from the pruned weights; ``mode="retrain"``
    re-initializes the reduced-width network (``reset_parameters()``, weights times
    ``init_gain``) and trains it from scratch, as the paper's retraining of the smaller
    architecture (give it the dense model's epochs for a like-for-like comparison).
    """
    if mode not in ("finetune", "retrain"):
        raise ValueError(f"mode: expected 'finetune' or 'retrain', got {mode!r}")
    variance = check_variance(variance)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs: expected an integer >= 0, got {epochs!r}")
    if check_finite("lr", lr) <= 0 or math.isnan(lr):
        raise ValueError(f"lr: expected a number > 0, got {lr!r}")
    res = spatial_prune(model, calib_loader, variance, layers=layers, max_samples=max_samples,
                        criterion=criterion, widths=widths)
    if mode == "retrain":
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, (nn.Linear, nn.Conv2d)):
                    m.reset_parameters()
                    m.weight.mul_(init_gain)
    if epochs > 0 and train_loader is not None:
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        res.history = finetune(D.ddp_wrap(model), train_loader, opt, epochs=epochs, val_loader=val_loader,
                          desc="pca fine-tune", progress=progress)
    return res
