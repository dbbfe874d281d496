"""Builds the neuron of a block or model from plain settings (so configs stay data)."""
from __future__ import annotations

from torch import nn

from ..ops import _checks as C
from .neurons import IF, LIF, PLIF

NEURONS = ("lif", "if", "plif")


def check_neuron(neuron: str) -> str:
    C.check_choice("neuron", neuron, NEURONS)
    return neuron


def make_neuron(neuron: str = "lif", tau: float = 2.0, v_threshold: float = 1.0,
                detach_reset: bool = True, surrogate: str = "sigmoid") -> nn.Module:
    """A multi-step ``LIF`` / ``IF`` / ``PLIF`` (``tau`` is PLIF's initial tau; IF ignores it)."""
    check_neuron(neuron)
    if neuron == "lif":
        return LIF(tau=tau, v_threshold=v_threshold, detach_reset=detach_reset, surrogate=surrogate)
    if neuron == "plif":
        return PLIF(init_tau=tau, v_threshold=v_threshold, detach_reset=detach_reset, surrogate=surrogate)
    return IF(v_threshold=v_threshold, detach_reset=detach_reset, surrogate=surrogate)
