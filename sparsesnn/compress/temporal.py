"""Temporal pruning (Chowdhury, Garg, Roy 2021): fine-tune while reducing the number of time
steps T step by step, down to a target or until accuracy drops more than a tolerance.

At each step of the schedule (e.g. ``T = 8 -> 6 -> 4 -> 3 -> 2 -> 1``) the model is switched to
the new T, fine-tuned for a few epochs, and evaluated. If the accuracy is more than
``tolerance`` below the accuracy at the start, that step is undone (weights and T restored) and
the search stops; otherwise it continues to the next T.

The model must expose its number of steps: a ``set_timesteps(T)`` method, or a ``T`` attribute
(as :class:`sparsesnn.models.SpikingMLP`, whose thermometer-encoder thresholds are rebuilt). The
input may be rate-coded (SpikingMLP) or direct: an analog input applied at every step (a model
whose forward repeats ``x`` ``T`` times, e.g. the conv SNN of ``bench/compare_methods.py``); the
paper starts from T >= 8 (its trained models use 25 or more steps).

:func:`precision_sweep` then quantizes the pruned model's weights post-training at several
grids (8, 6, 5, 4, 3, 2 bits) and reports the accuracy of each, as the paper reports that the
spatio-temporally pruned networks stay stable down to 5 bits.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch
from torch import nn

from ..ops._checks import check_finite, check_positive_int
from . import distributed as D
from ._finetune import finetune
from .train import evaluate

__all__ = ["get_timesteps", "set_timesteps", "make_schedule", "temporal_prune", "TemporalResult",
           "precision_sweep"]


def get_timesteps(model: nn.Module) -> int:
    """The model's current T (``model.T``)."""
    T = getattr(model, "T", None)
    if isinstance(T, bool) or not isinstance(T, int):
        raise ValueError(f"model: expected a model with an integer attribute T (time steps), "
                         f"got {type(model).__name__}")
    return T


def set_timesteps(model: nn.Module, T: int) -> None:
    """Switch ``model`` to ``T`` steps (``set_timesteps`` method, else ``.T`` + encoder)."""
    T = check_positive_int("T", T)
    if callable(getattr(model, "set_timesteps", None)):
        model.set_timesteps(T)
        return
    get_timesteps(model)
    model.T = T
    th = getattr(model, "thresholds", None)
    if isinstance(th, torch.Tensor):
        # SpikingMLP's deterministic rate code: s[t] = x > (t + 0.5) / T
        new = ((torch.arange(T, dtype=th.dtype, device=th.device) + 0.5) / T).view(T, *th.shape[1:])
        model.thresholds = new  # a registered buffer: assignment keeps it a buffer


def make_schedule(start: int, target: int, step: int = 1) -> list[int]:
    """Decreasing T values after ``start`` down to ``target``: ``start-step, ..., target``."""
    start = check_positive_int("start", start)
    target = check_positive_int("target", target)
    step = check_positive_int("step", step)
    if target > start:
        raise ValueError(f"target: expected <= the current T ({start}), got {target}")
    out = list(range(start - step, target, -step))
    if start != target:
        out.append(target)
    return out


@dataclass
class TemporalResult:
    T_start: int
    T_final: int
    baseline_acc: float
    final_acc: float
    stopped: str  # "target" | "tolerance"
    history: list[dict[str, float]] = field(default_factory=list)  # one record per tried T


def temporal_prune(model: nn.Module, train_loader: Iterable, val_loader: Iterable, *,
                   target_T: int = 1, schedule: Sequence[int] | None = None, step: int = 1,
                   epochs_per_step: int = 1, tolerance: float = 0.01, lr: float = 1e-3,
                   hooks: Sequence = (), progress: bool = True) -> TemporalResult:
    """Reduce T with fine-tuning, in place.

    Args:
        model: has ``T`` / ``set_timesteps`` (see module docstring).
        train_loader, val_loader: fine-tuning and accuracy-check data.
        target_T: lowest T to try (>= 1).
        schedule: explicit strictly decreasing T values (each < current T, >= 1); default
            ``make_schedule(T, target_T, step)``.
        epochs_per_step: fine-tuning epochs after each reduction (>= 0).
        tolerance: largest allowed accuracy drop (fraction, e.g. 0.01 = 1 point) versus the
            accuracy at the start; a step that drops more is undone and the search stops.
        hooks: passed to :func:`fit` (e.g. an ADMM object in its retraining phase).

    Under DDP pass the wrapped model or the bare one (then wrapped for fine-tuning) and shard
    both loaders (``DistributedSampler``): accuracies are all-reduced and the accept/undo
    decision is rank 0's, broadcast, so every rank takes the same path and ends with the same T.
    """
    core = D.unwrap(model)  # T, state_dict and evaluation live on the user's model
    T0 = get_timesteps(core)
    target_T = check_positive_int("target_T", target_T)
    epochs_per_step = check_positive_int("epochs_per_step", epochs_per_step, minimum=0)
    tol = check_finite("tolerance", tolerance)
    if tol < 0:
        raise ValueError(f"tolerance: expected a number >= 0, got {tolerance!r}")
    if schedule is None:
        sched = make_schedule(T0, min(target_T, T0), step)
    else:
        sched = [check_positive_int("schedule", t) for t in schedule]
        prev = T0
        for t in sched:
            if t >= prev:
                raise ValueError(f"schedule: expected strictly decreasing values below T={T0}, "
                                 f"got {list(schedule)}")
            prev = t
    base = evaluate(core, val_loader, reduce=True)["acc"]
    res = TemporalResult(T0, T0, base, base, "target")
    for T in sched:
        saved = copy.deepcopy(core.state_dict())
        prev_T = get_timesteps(core)
        set_timesteps(core, T)
        if epochs_per_step > 0:
            opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
            finetune(D.ddp_wrap(model), train_loader, opt, epochs=epochs_per_step, hooks=hooks,
                desc=f"temporal T={T}", progress=progress)
        acc = evaluate(core, val_loader, reduce=True)["acc"]
        ok = bool(D.broadcast_object(base - acc <= tol))
        res.history.append({"T": T, "acc": acc, "accepted": float(ok)})
        if not ok:
            set_timesteps(core, prev_T)
            core.load_state_dict(saved)
            res.stopped = "tolerance"
            break
        res.T_final, res.final_acc = T, acc
    return res


def precision_sweep(model: nn.Module, val_loader: Iterable, bits: Sequence[int] = (8, 6, 5, 4, 3, 2),
                    scale_fit: str = "maxabs") -> list[dict[str, float]]:
    """Post-training weight quantization of a copy of ``model`` at each grid in ``bits``
    (every compressible layer, symmetric per-channel grid ``{-qmax..qmax}``, 3/5/6 bits stored
    in the next wider container): ``[{"bits": b, "acc": accuracy on val_loader}, ...]``.
    ``model`` is not changed; the quantized copies carry the compression state that
    ``sparsesnn.deploy.deploy`` reads, but are not kept.
    """
    from . import projections as P
    from .state import CompressionState, compressible_layers, get_state, set_state

    out: list[dict[str, float]] = []
    for b in bits:
        P.check_bits("bits", b)
        if not isinstance(b, int):
            raise ValueError(f"bits: expected integer grids, got {b!r}")
        m = copy.deepcopy(D.unwrap(model))
        with torch.no_grad():
            for layer in compressible_layers(m).values():
                st = get_state(layer)
                mask = st.mask if st is not None else None
                scale = P.fit_scale(layer.weight, b, method=scale_fit)
                z, _, s = P.project(layer.weight, None, P.make_spec(b), scale=scale, mask=mask)
                layer.weight.copy_(z)
                set_state(layer, CompressionState(mask=mask, spec=P.make_spec(b), scale=s))
        out.append({"bits": b, "acc": evaluate(m, val_loader, reduce=True)["acc"]})
    return out
