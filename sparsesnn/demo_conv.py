"""The conv variant of the demo (``sparsesnn demo --model conv``): a small VGG-style SNN on the
images of the dataset (8x8 digits: ``[B, 1, 8, 8]``), BN after every conv (folded at deploy),
direct analog input to the first conv (deployed on the analog packed path)."""
from __future__ import annotations

import math
from typing import Any

from torch import nn

from .compress import compressible_layers
from .data import Split
from .models import SpikingVGG

CONV_EPOCHS = 6  # per phase (dense, ADMM, retrain): enough for this model on digits


def as_images(split: Split) -> Split:
    """The split with square single-channel images ``[n, 1, side, side]``."""
    side = math.isqrt(split.features)
    if side * side != split.features:
        raise ValueError(f"data: the conv demo needs square images, got {split.features} features")
    img = lambda x: x.reshape(-1, 1, side, side)  # noqa: E731
    return Split(img(split.x_train), split.y_train, img(split.x_test), split.y_test, split.name)


def conv_model(cfg: Any, images: Split) -> SpikingVGG:
    """``SpikingVGG(cfg.conv)`` for ``images`` (``[n, 1, side, side]``)."""
    return SpikingVGG(list(cfg.conv), images.x_train.shape[1], images.classes, cfg.T,
                      image_size=images.x_train.shape[-1], hidden=tuple(cfg.conv_hidden))


def conv_targets(model: nn.Module, cfg: Any) -> dict[str, dict[str, Any]]:
    """ADMM targets: every layer ``cfg.bits``; all but the first conv and the readout pruned
    to ``cfg.conv_sparsity`` (those two are small and the most sensitive; the overall weight
    sparsity is still above 90%)."""
    names = list(compressible_layers(model))
    return {n: {"sparsity": 0.0 if i in (0, len(names) - 1) else cfg.conv_sparsity, "bits": cfg.bits}
            for i, n in enumerate(names)}
