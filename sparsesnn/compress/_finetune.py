"""``fit`` followed by a state reset, shared by the compression methods of issue 6.

After a training loop the neurons still hold the last batch's membrane potential, which is part
of the autograd graph: ``copy.deepcopy`` (used by ``deploy``) refuses such tensors. Resetting the
state after training makes the fine-tuned model copyable/deployable right away.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from .train import fit, reset_states


def finetune(model: nn.Module, *args: Any, **kwargs: Any) -> list[dict[str, float]]:
    """:func:`sparsesnn.compress.fit` then :func:`reset_states` (also on error)."""
    try:
        return fit(model, *args, **kwargs)
    finally:
        reset_states(model)
