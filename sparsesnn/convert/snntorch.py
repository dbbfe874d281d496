"""snnTorch model (``nn.Sequential`` of torch layers and ``snn.Leaky``) -> time-major sparsesnn.

snnTorch runs one timestep per call and keeps each neuron's ``mem`` between calls
(``init_hidden=True``); sparsesnn runs a whole ``[T, B, ...]`` sequence per call. The converted
model is wrapped in :class:`TimeMajor`, which resets the state and runs the sequence at once, so
``TimeMajor(x)[t]`` is the spike output of snnTorch's own loop at step ``t``.

``snn.Leaky`` mapping (from snnTorch's equations, ``U`` = mem, ``R`` = detached reset signal
``U[t-1] > thr``):
- ``reset_mechanism="zero"``: ``U[t] = beta*(1-R)*U[t-1] + X[t]``, ``S[t] = U[t] > thr`` is
  sparsesnn's LIF with ``decay_input=False``, ``decay = 1 - beta`` (``tau = 1/(1-beta)``),
  hard reset to 0, ``detach_reset=True`` (``beta = 1``: IF). snnTorch's strict ``>`` becomes
  ``>=`` the next float32 above ``thr``. Spikes are identical whatever ``reset_delay`` is (only
  the stored ``mem`` differs: snnTorch keeps it before the pending reset).
- ``"subtract"`` / ``"none"``, a learnable or per-neuron ``beta``: no exact fused-kernel form
  (see :mod:`sparsesnn.convert.leaky`); converted to :class:`LeakyLoop`, same spikes, Python loop.
"""
from __future__ import annotations

import inspect
from typing import Optional

import torch
from torch import Tensor, nn

from ..nn import IF, LIF, SpikingConv2d, SpikingLinear, reset_net
from ..ops import _checks as C
from ._tree import KEEP, RECURSE, Refuse, convert_tree
from .layers import SeqToANN
from .leaky import LeakyLoop

__all__ = ["from_snntorch", "TimeMajor", "PerStep"]

# snnTorch surrogate factory -> (sparsesnn name, name of the closure variable holding alpha).
# atan and sigmoid have the same derivative formula here; fast_sigmoid(slope) is
# 1/(slope|x|+1)^2, sparsesnn's superspike alpha/(|x|+1)^2: equal only for slope 1.
_SURROGATES = {"atan": ("atan", "alpha"), "sigmoid": ("sigmoid", "slope"),
               "fast_sigmoid": ("superspike", "slope")}
# Elementwise torch modules: the same on [T, B, ...] as per step.
_ELEMENTWISE = (nn.Identity, nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Dropout)


class TimeMajor(nn.Module):
    """Run a converted (multi-step) network on a time-major sequence ``[T, B, ...]``.

    ``reset_each_call=True``: every call is one new sequence (state reset first), as an
    snnTorch loop that calls ``utils.reset(net)`` before each batch.
    """

    def __init__(self, net: nn.Module, reset_each_call: bool = True) -> None:
        super().__init__()
        self.net = net
        self.reset_each_call = bool(reset_each_call)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2:
            raise ValueError(f"x: expected a time-major tensor [T, B, ...], got shape {tuple(x.shape)}")
        if self.reset_each_call:
            reset_net(self.net)
        return self.net(x)


class PerStep(nn.Module):
    """Apply ``module`` to each timestep separately. For layers whose training-mode result
    depends on the batch (BatchNorm: statistics per step, as snnTorch computes them)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([self.module(x[t]) for t in range(x.shape[0])])


def _surrogate(fn) -> tuple[Optional[str], Optional[float], Optional[str]]:
    qual = getattr(fn, "__qualname__", "")
    factory = qual.split(".<locals>")[0]
    if getattr(fn, "__module__", "") != "snntorch.surrogate" or factory not in _SURROGATES:
        return None, None, f"spike_grad {qual or type(fn).__name__} has no sparsesnn equivalent " \
                           f"(supported: snntorch.surrogate.{', '.join(sorted(_SURROGATES))})"
    name, var = _SURROGATES[factory]
    alpha = float(inspect.getclosurevars(fn).nonlocals[var])
    if factory == "fast_sigmoid" and alpha != 1.0:
        return None, None, f"fast_sigmoid(slope={alpha}): sparsesnn's superspike matches only slope=1"
    return name, alpha, None


def _leaky(m: nn.Module):
    why = []
    if m.inhibition:
        why.append("inhibition=True")
    if isinstance(m.threshold, nn.Parameter):
        why.append("learn_threshold=True")
    if isinstance(m.graded_spikes_factor, nn.Parameter) or float(m.graded_spikes_factor) != 1.0:
        why.append("graded spikes (graded_spikes_factor != 1)")
    if m.state_quant:
        why.append("state_quant")
    if getattr(m, "surrogate_disable", False):
        why.append("surrogate_disable=True")
    if not m.init_hidden:
        why.append("init_hidden=False (the state is passed by the caller's forward; "
                   "build the net with init_hidden=True)")
    if m.threshold.numel() != 1:
        why.append("per-neuron threshold")
    surrogate, alpha, bad = _surrogate(m.spike_grad)
    if bad:
        why.append(bad)
    if why:
        return Refuse("; ".join(why))
    thr = float(m.threshold)
    beta = m.beta.detach()
    mech = m.reset_mechanism
    if mech == "zero" and beta.numel() == 1 and not isinstance(m.beta, nn.Parameter):
        b = float(beta.clamp(0, 1))
        # the next float32 above thr: ">= thr_up" is snnTorch's "> thr" on float32 values
        thr_up = float(torch.nextafter(torch.tensor(thr), torch.tensor(float("inf"))))
        kw = dict(v_threshold=thr_up, v_reset=0.0, detach_reset=True, surrogate=surrogate, alpha=alpha)
        if b == 1.0:
            return IF(**kw)
        if b > 0.0:
            return LIF(tau=1.0 / (1.0 - b), decay_input=False, **kw)
    new = LeakyLoop(m.beta, thr, mech, m.reset_delay, isinstance(m.beta, nn.Parameter),
                    surrogate, alpha)
    if isinstance(m.beta, nn.Parameter):
        new.beta = m.beta  # share the learnable parameter with the converted-from model
    return new


def _rule(snn, mode: str):
    def rule(m: nn.Module, path: str):
        t = type(m)
        if t is snn.Leaky:
            return _leaky(m)
        if t is nn.Linear:
            return SpikingLinear.from_linear(m, mode=mode)
        if t is nn.Conv2d:
            return SpikingConv2d.from_conv(m, mode=mode)
        if t is nn.Sequential:
            return RECURSE
        if t.__module__.startswith("snntorch"):
            return Refuse("no sparsesnn equivalent (supported snnTorch neuron: Leaky)")
        if m._modules:
            return Refuse("a container with its own forward runs one step per call; only "
                          "nn.Sequential nets can be run time-major")
        if isinstance(m, _ELEMENTWISE):
            return KEEP
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            return PerStep(m)
        if t.__module__.startswith("torch.nn"):
            return SeqToANN(m, step_mode="m")  # per-sample layer: fold time into the batch
        return Refuse("unknown module: cannot tell whether it is per-step")
    return rule


def from_snntorch(model: nn.Module, *, inplace: bool = False, mode: str = "auto",
                  reset_each_call: bool = True) -> TimeMajor:
    """Convert an snnTorch ``nn.Sequential`` (``init_hidden=True`` neurons) to a time-major
    sparsesnn model: ``from_snntorch(net)(x[T, B, ...])[t]`` equals snnTorch's spikes at step t.

    Args:
        model: ``nn.Sequential`` (nesting allowed) of torch layers and ``snn.Leaky``.
        inplace: convert ``model``'s modules in place instead of a deep copy.
        mode: dispatch mode of the converted ``SpikingLinear`` / ``SpikingConv2d`` layers.
        reset_each_call: see :class:`TimeMajor`.
    Returns:
        :class:`TimeMajor` wrapping the converted network. It returns the last layer's spikes
        ``[T, B, ...]``; an ``output=True`` Leaky's membrane trace is not returned.
    Raises:
        UnconvertibleError (a ValueError) listing every module that cannot be mapped.
    """
    C.check_choice("mode", mode, ("auto", "event", "dense"))
    try:
        import snntorch as snn
    except ImportError as e:  # pragma: no cover - exercised only without the peer
        raise ImportError("from_snntorch needs snnTorch: pip install snntorch") from e
    return TimeMajor(convert_tree(model, _rule(snn, mode), "snnTorch", inplace), reset_each_call)
