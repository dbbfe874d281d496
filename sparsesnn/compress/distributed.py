"""torch.distributed helpers that keep compression state identical on every rank under DDP.

Where ranks can diverge, and what the compressors do about it:

- Parameters are identical after DDP's gradient all-reduce, so anything computed from them alone
  (ADMM projections, masks, scales; minimax's proximal step, ``p`` and ``y``; LitE's decode) is
  the same deterministic computation on the same numbers: identical without communication.
  :func:`check_consistent` verifies that instead of assuming it.
- Anything computed from *local data* (spike counts, input spike rates, membrane statistics,
  validation accuracy) is all-reduced or all-gathered first, then every rank runs the same math.
- Random choices take explicit seeds (tinySNN stochastic rounding), never the global RNG.

Every helper is a no-op (identity) when ``torch.distributed`` is not initialized or the world
has one rank, so the compressors call them unconditionally and single-process runs are
unchanged. Those that communicate (the all-reduce/gather/broadcast helpers, :func:`gather_state`,
:func:`check_consistent`, and :func:`ddp_wrap`, whose DDP constructor syncs) are *collectives*:
every rank must call them in the same order (as it does when all ranks run the same loop).
"""
from __future__ import annotations

import hashlib
from typing import Any, Iterable, Mapping

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["active", "rank", "world_size", "is_main", "unwrap", "strip_prefix", "all_reduce_",
           "all_reduce_floats", "all_gather_cat", "broadcast_object",
           "state_tensors", "gather_state", "check_consistent", "ddp_wrap"]


def active() -> bool:
    """True when a process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0 (or a single process): the one that deploys, saves and prints."""
    return rank() == 0


def unwrap(model: nn.Module) -> nn.Module:
    """The user's model inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper.

    Compressors keep references to the inner layers; DDP shares the very same parameters, so
    the wrapper and its ``.module`` see one set of weights.
    """
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


def strip_prefix(name: str, wrapped: bool) -> str:
    """Layer names given for a wrapped model may carry DDP's ``module.`` prefix: drop it."""
    return name[len("module."):] if wrapped and name.startswith("module.") else name


def all_reduce_(t: torch.Tensor, op: str = "mean") -> torch.Tensor:
    """In-place all-reduce (``mean`` or ``sum``) of a tensor; returns it."""
    if op not in ("mean", "sum"):
        raise ValueError(f"op: expected 'mean' or 'sum', got {op!r}")
    if active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        if op == "mean":
            t.div_(dist.get_world_size())
    return t


def all_reduce_floats(values: Iterable[float], op: str = "sum") -> list[float]:
    """All-reduce a few Python numbers in one collective (fp64, so counts stay exact)."""
    vals = [float(v) for v in values]
    if not active() or not vals:
        return vals
    # NCCL reduces CUDA tensors only; gloo takes CPU ones
    dev = (torch.device("cuda", torch.cuda.current_device())
           if dist.get_backend() == "nccl" else torch.device("cpu"))
    return all_reduce_(torch.tensor(vals, dtype=torch.float64, device=dev), op).tolist()


def all_gather_cat(t: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Concatenate every rank's ``t`` (sizes along ``dim`` may differ) in rank order.

    Every rank gets the same tensor, so statistics computed from it are identical.
    """
    if not active():
        return t
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, t.detach().cpu())
    return torch.cat(parts, dim).to(t.device)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s (picklable) ``obj`` on every rank: decisions made once, applied everywhere."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def state_tensors(obj: Any) -> dict[str, torch.Tensor]:
    """The rank-consistency-relevant state of a compressor (``obj.state_tensors()``), a model
    (its ``state_dict``) or a mapping of tensors, as ``{name: tensor}``."""
    if hasattr(obj, "state_tensors"):
        return dict(obj.state_tensors())
    if isinstance(obj, nn.Module):
        return dict(unwrap(obj).state_dict())
    if isinstance(obj, Mapping):
        return {str(k): v for k, v in obj.items()}
    raise ValueError(f"obj: expected a compressor with state_tensors(), an nn.Module or a "
                     f"mapping of tensors, got {type(obj).__name__}")


def _digest(t: torch.Tensor) -> str:
    t = t.detach().cpu().contiguous()
    # bit pattern, not value: -0.0 vs 0.0 or NaN payloads count as different
    raw = t.to(torch.uint8) if t.dtype == torch.bool else t.reshape(-1).view(torch.uint8)
    h = hashlib.sha256(raw.numpy().tobytes())
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    return h.hexdigest()


def gather_state(obj: Any) -> list[dict[str, torch.Tensor]]:
    """Every rank's :func:`state_tensors` (CPU copies), in rank order, on every rank."""
    mine = {k: v.detach().cpu().clone() for k, v in state_tensors(obj).items()}
    if not active():
        return [mine]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, mine)
    return out


def check_consistent(obj: Any, what: str = "compression state") -> None:
    """Raise ``RuntimeError`` naming the entries whose bits differ between ranks (collective).

    Compares SHA-256 digests of the raw bytes, so the check is exact and cheap to send.
    """
    if not active():
        return
    mine = {k: _digest(v) for k, v in state_tensors(obj).items()}
    every: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(every, mine)
    ref = every[0]
    bad = sorted({k for d in every[1:] for k in set(d) | set(ref) if d.get(k) != ref.get(k)})
    if bad:
        raise RuntimeError(f"{what}: differs between ranks in {bad[:10]}"
                           f"{' ...' if len(bad) > 10 else ''} ({len(bad)} entries)")


def ddp_wrap(model: nn.Module) -> nn.Module:
    """``DistributedDataParallel(model)`` when a multi-rank group runs, else ``model`` as is.

    Used by the one-call helpers (``minimax_prune``, ``lite_search``, ``pca_prune``, tinySNN
    in-training) that fine-tune a model they built or changed: without the wrapper each rank
    would train on its own shard and drift apart. DDP's defaults stay (rank 0's buffers, e.g.
    batch-norm statistics, are broadcast before each training forward); evaluation runs on the
    unwrapped model, so it never becomes a collective.
    """
    if not active() or isinstance(model, nn.parallel.DistributedDataParallel):
        return model
    dev = next(model.parameters()).device
    return nn.parallel.DistributedDataParallel(model, device_ids=[dev] if dev.type == "cuda" else None)
