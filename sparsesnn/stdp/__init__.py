"""Unsupervised STDP learning: the event-driven update kernel and a Diehl & Cook-style network,
with tinySNN's quantized learning (:mod:`sparsesnn.stdp.quant`)."""
from .network import DiehlCookNetwork, QuantSettings, STDPConfig, assign_labels, predict
from .update import stdp_update_

__all__ = ["stdp_update_", "DiehlCookNetwork", "STDPConfig", "QuantSettings", "assign_labels", "predict"]
