"""A small training helper with progress bars; replace it with your own loop at will.

Compression algorithms plug in as hooks: any object with (optional) ``penalty()`` (added to the
loss), ``step()`` (after ``optimizer.step()``) and ``epoch_end()``. That is all the loop needs,
so a user loop does the same in four lines.
"""
from __future__ import annotations

import sys
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed as D


def reset_states(model: nn.Module) -> None:
    """Clear the membrane state of every stateful neuron (modules with ``.v`` and ``.reset()``)."""
    for m in model.modules():
        if m is not model and hasattr(m, "v") and callable(getattr(m, "reset", None)):
            m.reset()


def _progress(iterable: Iterable, total: int | None, desc: str, enabled: bool, leave: bool = False):
    # Bars only on a terminal: redirected to a log they would be thousands of lines.
    if not enabled or not sys.stderr.isatty():
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is in the `demo` extra; without it, no bars
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=leave, dynamic_ncols=True)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, *, activity: Any = None,
             progress: bool = False, desc: str = "eval", reduce: bool = False) -> dict[str, float]:
    """Accuracy and loss of ``model`` on ``loader`` (batches ``(x, y)``); spike rate if ``activity``.

    ``reduce=True`` (under torch.distributed, each rank holding a shard of the data) sums the
    counts over all ranks so every rank gets the same, global result. It is a collective: all
    ranks must call it; decisions taken from accuracy (temporal pruning, tinySNN's exploration)
    use it so ranks cannot decide differently.
    """
    model = D.unwrap(model)  # no DDP forward here: its buffer broadcast would be a collective
    was_training = model.training
    model.eval()
    correct, total, loss_sum = 0, 0, 0.0
    if activity is not None:
        activity.reset_stats()
    for x, y in _progress(loader, _len(loader), desc, progress):
        reset_states(model)
        out = model(x)
        loss_sum += float(F.cross_entropy(out, y, reduction="sum"))
        correct += int((out.argmax(-1) == y).sum())
        total += y.numel()
    model.train(was_training)
    if reduce:
        correct, total, loss_sum = D.all_reduce_floats([correct, total, loss_sum], "sum")
    res = {"acc": correct / max(total, 1), "loss": loss_sum / max(total, 1)}
    if activity is not None:
        rates = activity.spike_rates(reduce=reduce)
        res["spike_rate"] = sum(rates.values()) / max(len(rates), 1)
    return res


def _len(loader: Iterable) -> int | None:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


def fit(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer, *, epochs: int,
        hooks: Sequence[Any] = (), loss_fn: Callable[..., torch.Tensor] = F.cross_entropy,
        val_loader: Iterable | None = None, scheduler: Any = None, activity: Any = None,
        desc: str = "train", progress: bool = True) -> list[dict[str, float]]:
    """Train for ``epochs``; returns one dict per epoch (loss, train acc, val acc, spike rate).

    ``hooks``: objects with optional ``penalty()``, ``step()``, ``epoch_end()`` (e.g.
    :class:`~sparsesnn.compress.ADMM`, :class:`~sparsesnn.compress.ActivityRegularizer`).
    ``activity`` (an ActivityRegularizer, may also be in ``hooks``) adds spike rates to the bars.
    """
    history: list[dict[str, float]] = []
    # a regularizer passed only for statistics must not keep autograd graphs alive
    watch_only = activity is not None and all(h is not activity for h in hooks)
    if watch_only:
        was_enabled, activity.enabled = activity.enabled, False
    try:
        return _fit(model, loader, optimizer, epochs, hooks, loss_fn, val_loader, scheduler,
                    activity, desc, progress, history)
    finally:
        if watch_only:
            activity.enabled = was_enabled


def _fit(model, loader, optimizer, epochs, hooks, loss_fn, val_loader, scheduler, activity,
         desc, progress, history):
    bar = _progress(range(epochs), epochs, desc, progress, leave=True)
    for epoch in bar:
        model.train()
        if activity is not None:
            activity.reset_stats()
        loss_sum, correct, seen = 0.0, 0, 0
        sampler = getattr(loader, "sampler", None)
        if callable(getattr(sampler, "set_epoch", None)):
            sampler.set_epoch(epoch)  # DistributedSampler: a new shuffle per epoch, same on all ranks
        inner = _progress(loader, _len(loader), f"{desc} epoch {epoch + 1}/{epochs}", progress)
        for x, y in inner:
            reset_states(model)
            out = model(x)
            loss = loss_fn(out, y)
            for h in hooks:
                if hasattr(h, "penalty"):
                    loss = loss + h.penalty()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for h in hooks:
                if hasattr(h, "step"):
                    h.step()
            loss_sum += float(loss.detach()) * y.numel()
            correct += int((out.detach().argmax(-1) == y).sum())
            seen += y.numel()
            if hasattr(inner, "set_postfix"):
                inner.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        if scheduler is not None:
            scheduler.step()
        for h in hooks:
            if hasattr(h, "epoch_end"):
                h.epoch_end()
        rec = {"epoch": epoch + 1, "loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1)}
        if activity is not None:
            rec["spike_rate"] = sum(activity.spike_rates().values()) / max(len(activity.layer_weights), 1)
        if val_loader is not None:
            rec["val_acc"] = evaluate(model, val_loader)["acc"]
        for h in hooks:
            if hasattr(h, "residual"):
                rec["admm_residual"] = h.residual()
        history.append(rec)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix({k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in rec.items()
                             if k != "epoch"})
    reset_states(model)  # drop the last batch's state (and its autograd graph): deepcopy/deploy work
    return history
