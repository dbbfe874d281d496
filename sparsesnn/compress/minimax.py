"""Resource-constrained minimax pruning (Chen et al., ACM MM 2023, arXiv 2308.04672).

The budget is on the kept fraction of the weights: ``R(p) = 1 - p <= budget`` where ``p`` is
the (global, learnable, continuous) fraction of pruned weights -- ``s = p * n`` weights. The
problem is the minimax of the Lagrangian

    min_{W, p} max_{y >= 0}  L(W) + rho/2 * ||W_{(p)}||^2 / n + y * (1 - p - budget)

where ``W_{(p)}`` are the ``round(p n)`` smallest weights (globally, ranked by raw ``w^2`` as the
authors do; ``normalize=True`` ranks by magnitude over each layer's RMS instead), i.e. the ones
the current ``s`` marks for pruning. The first compressible layer is left dense and out of the
budget by default (the authors' ``ignore_first_layer``; ``exclude_first=False`` prunes it).

One compression step (``step()``,
interleaved with the task optimizer's fine-tuning steps) does

    proximal step on W:   the smallest s weights are shrunk, w <- w / (1 + eta * rho)
                          (the prox of the quadratic penalty), others untouched;
    gradient step on p:   p <- clip(p - lr_s * (rho/2 * w_(s)^2 - y), 0, p_max)
                          (w_(s) = the magnitude at the cut: the marginal cost of one more
                          pruned weight, against the price y of one more kept weight);
    dual ascent on y:     y <- max(0, y + lr_y * (1 - p - budget)).

So the dual variable rises while the model is over budget and pushes ``s`` up; the shrunken
weights fade before they are cut. With ``hard_mask=True`` (default, as the authors' search) the
current ``s`` smallest weights are also set to zero after every compression step, so the network
is trained as pruned throughout the search; a zeroed weight that the task gradient regrows above
the cut comes back at the next step.

:func:`minimax_prune` runs a staged budget schedule by default (``0.25 -> ... -> budget``,
geometric): at each stage a search, the hard mask at that stage's budget, masked fine-tuning,
and the best checkpoint on ``val_loader`` kept (the authors' progressive schedule). :meth:`MinimaxPruner.finalize` applies the hard global mask
with exactly ``floor(budget n)`` kept weights while the constraint is active (``y > 0``), else
``round((1-p) n)`` -- the result is always within budget -- and masked fine-tuning follows (``step()`` keeps pruned weights at zero).
The layers carry a :class:`~sparsesnn.compress.state.CompressionState` mask, so
``sparsesnn.deploy.deploy`` uses the pruned (compressed-row) layout.
"""
from __future__ import annotations

import math
import copy
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from ..ops._checks import check_finite, check_greater, check_positive_int
from . import distributed as D
from .state import CompressionState, compressible_layers, set_state
from ._finetune import finetune
from .train import evaluate

__all__ = ["check_budget", "budget_stages", "budget_for_bytes", "MinimaxPruner", "minimax_prune"]


def check_budget(budget: object, name: str = "budget") -> float:
    """A kept-resource fraction must be a number in (0, 1]."""
    if isinstance(budget, bool) or not isinstance(budget, (int, float)):
        raise ValueError(f"{name}: expected a fraction in (0, 1], got {budget!r}")
    b = check_finite(name, budget)
    if not 0.0 < b <= 1.0:
        raise ValueError(f"{name}: expected a fraction in (0, 1], got {budget!r}")
    return b


def budget_for_bytes(model: nn.Module, nbytes: float, *, bits: int | str | None = 8,
                     exclude: Iterable[str] = (), exclude_first: bool = True) -> float:
    """The kept-weight budget whose pruned model, deployed with ``bits`` weights (None: fp32),
    stores at most ``nbytes`` bytes -- whichever layers the global ranking prunes.

    ``deploy`` stores a pruned linear layer in the smaller of two layouts; the compressed-row
    one costs int32 row pointers + per kept weight a 16-bit index (32-bit past 65536 outputs)
    and its packed code. So ``bytes <= fixed + kept * per_weight``, where ``fixed`` holds the
    row pointers, scales, biases, the excluded layers dense and conv layers' codes (deploy
    stores every conv code) and ``per_weight`` is the largest index+code cost. Returns
    ``kept / n`` for :class:`MinimaxPruner` (ValueError naming ``nbytes`` when even the fixed
    part is over)."""
    from .search import deployed_layer_bits

    nbytes = check_greater("nbytes", nbytes, 0.0)
    sb = 32 if bits is None else {"ternary": 2, "binary": 1}.get(bits, bits)  # type: ignore[arg-type]
    available = compressible_layers(D.unwrap(model))
    excluded = set(exclude)
    if exclude_first and len(available) > 1:
        excluded.add(next(iter(available)))
    fixed_bits, n, per_weight = 0.0, 0, 0.0
    for name, m in available.items():
        shape = tuple(m.weight.shape)
        bias = getattr(m, "bias", None) is not None
        if name in excluded:
            fixed_bits += deployed_layer_bits(shape, bits, 0.0, bias)
            continue
        n += m.weight.numel()
        if len(shape) != 2:  # conv: every code stored, pruned or not
            fixed_bits += deployed_layer_bits(shape, bits, 0.0, bias)
            continue
        out = shape[0]
        fixed_bits += 32 * (math.prod(shape[1:]) + 1) + 32 * out * (int(bias) + int(bits is not None)) + 8
        per_weight = max(per_weight, (16 if out <= 65536 else 32) + sb)
    if n == 0:
        raise ValueError("exclude: no layer left to prune")
    room = 8 * nbytes - fixed_bits
    if room <= 0 or per_weight == 0:
        raise ValueError(f"nbytes: {nbytes:.0f} bytes cannot be met: the unpruned parts alone take "
                         f"{fixed_bits / 8:.0f} bytes")
    return min(1.0, math.floor(room / per_weight) / n)


class MinimaxPruner:
    """Budgeted global pruning by the minimax (primal-dual) scheme above.

    Args:
        model: the network; its compressible layers (``nn.Linear``/``nn.Conv2d``...) are pruned.
        budget: largest kept fraction of their weights, in (0, 1].
        exclude: layer names left dense (not counted in the budget).
        rho: weight of the shrinking penalty (> 0).
        prox_lr: step size ``eta`` of the proximal shrink (> 0).
        lr_s, lr_y: step sizes of the pruned fraction ``p`` and of the dual variable ``y``.
        update_every: run a compression step every this many ``step()`` calls.
        normalize: rank magnitudes across layers after dividing by each layer's RMS (the old
            default here); False (default) ranks raw ``w^2`` globally, as the paper.
        exclude_first: leave the first compressible layer dense (the authors'
            ``ignore_first_layer``; default True).
        hard_mask: zero the current ``s`` smallest weights after every search step (default
            True); False only shrinks them (the old behaviour).
    """

    def __init__(self, model: nn.Module, budget: float, *, exclude: Iterable[str] = (),
                 rho: float = 1.0, prox_lr: float = 0.05, lr_s: float = 0.05,
                 lr_y: float = 0.2, update_every: int = 1, normalize: bool = False,
                 exclude_first: bool = True, hard_mask: bool = True) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model: expected an nn.Module, got {type(model).__name__}")
        self.budget = check_budget(budget)
        self.rho = check_greater("rho", rho, 0.0)
        self.prox_lr = check_greater("prox_lr", prox_lr, 0.0)
        self.lr_s = check_greater("lr_s", lr_s, 0.0)
        self.lr_y = check_greater("lr_y", lr_y, 0.0)
        self.update_every = check_positive_int("update_every", update_every)
        self.normalize = bool(normalize)
        self.hard_mask = bool(hard_mask)
        # DDP: prune the wrapped model's layers (same parameters); accept 'module.' names
        wrapped = D.unwrap(model) is not model
        model = D.unwrap(model)
        available = compressible_layers(model)
        exclude = [D.strip_prefix(n, wrapped) for n in exclude]
        bad = [n for n in exclude if n not in available]
        if bad:
            raise ValueError(f"exclude: unknown layer names {bad}; compressible layers are {list(available)}")
        if exclude_first and available and len(available) > 1:
            exclude = [*exclude, next(iter(available))]
        self.excluded = list(dict.fromkeys(exclude))
        self.layers = {n: m for n, m in available.items() if n not in exclude}
        if not self.layers:
            raise ValueError("exclude: no layer left to prune")
        self.model = model
        self.n = sum(m.weight.numel() for m in self.layers.values())
        self.p = 0.0  # pruned fraction (s = p * n)
        self.y = 0.0  # dual variable of the budget constraint
        self.phase = "search"
        self.steps = 0
        self.history: list[dict[str, float]] = []
        self._masks: dict[str, torch.Tensor] = {}
        self._hooks: list[Any] = []
        self.stage_history: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ helpers
    def _scores(self) -> list[torch.Tensor]:
        # |w| orders exactly as w^2 does: ranking by |w| is ranking by raw w^2
        out = []
        for m in self.layers.values():
            a = m.weight.detach().abs().flatten()
            if self.normalize:
                rms = a.pow(2).mean().sqrt()
                a = a / rms if float(rms) > 0 else a
            out.append(a)
        return out

    def kept_fraction(self) -> float:
        """Current fraction of non-zero weights in the pruned layers."""
        nz = sum(int((m.weight != 0).sum()) for m in self.layers.values())
        return nz / self.n

    def target_kept(self) -> int:
        """Kept-weight count the hard mask will have: within budget by construction.

        While the dual variable is positive the budget constraint is active (complementary
        slackness), so the mask keeps exactly ``floor(budget n)`` weights; with ``y = 0`` the
        learned ``s`` is below budget on its own and is used as is.
        """
        cap = math.floor(self.budget * self.n + 1e-9)
        learned = int(round((1.0 - self.p) * self.n))
        return max(1, cap if self.y > 0 else min(learned, cap))

    # ------------------------------------------------------------------ search phase
    @torch.no_grad()
    def compress_step(self) -> dict[str, float]:
        """One proximal step on W, one gradient step on ``p``, one dual ascent step on ``y``."""
        scores = self._scores()
        flat = torch.cat(scores)
        s = int(round(self.p * self.n))
        cut = 0.0
        if s > 0:
            # threshold = s-th smallest score: shrink everything at or below it
            thr = torch.kthvalue(flat, min(s, self.n)).values
            cut = float(thr)
            for m, sc in zip(self.layers.values(), scores):
                small = (sc <= thr).view_as(m.weight)
                m.weight.mul_(torch.where(small, 1.0 / (1.0 + self.prox_lr * self.rho), 1.0))
        else:
            cut = float(flat.min()) if flat.numel() else 0.0
        if self.hard_mask and 0 < s < self.n:
            # the s smallest are zero after the hard mask: the marginal cost of pruning one
            # more is the smallest *kept* magnitude (else p would run away on zeros)
            cut = float(torch.kthvalue(flat, s + 1).values)
        # marginal cost of one more pruned weight (magnitude^2 at the cut, relative to the mean
        # square of all scores so rho and y are scale-free) against the price y of a kept one
        ms = float(flat.pow(2).mean()) if flat.numel() else 1.0
        if self.hard_mask and 0 < s < self.n:  # zeros would shrink the scale: kept ones only
            ms = float(torch.topk(flat, self.n - s).values.pow(2).mean())
        grad_p = 0.5 * self.rho * cut * cut / max(ms, 1e-30) - self.y
        # with the hard mask a pruned weight is gone until training regrows it: s never goes
        # past the budget (an overshoot of the dual would wipe weights for nothing)
        p_max = 1.0 - (max(self.budget, 1.0 / self.n) if self.hard_mask else 1.0 / self.n)
        self.p = min(max(self.p - self.lr_s * grad_p, 0.0), p_max)
        violation = (1.0 - self.p) - self.budget
        self.y = max(0.0, self.y + self.lr_y * violation)
        s_new = int(round(self.p * self.n))
        if self.hard_mask and s_new > 0:
            self._zero_smallest(torch.cat(self._scores()), s_new)
        rec = {"step": self.steps, "p": self.p, "y": self.y, "violation": violation}
        self.history.append(rec)
        return rec

    def _zero_smallest(self, flat: torch.Tensor, s: int) -> None:
        """Hard mask of the current ``s``: zero the ``s`` smallest scores (exactly ``s``)."""
        idx = torch.topk(flat, min(s, self.n), largest=False, sorted=False).indices
        keep = torch.ones(self.n, dtype=torch.bool, device=flat.device)
        keep[idx] = False
        off = 0
        for m in self.layers.values():
            k = m.weight.numel()
            m.weight.mul_(keep[off:off + k].view_as(m.weight).to(m.weight.device))
            off += k

    def step(self) -> None:
        """Call after every ``optimizer.step()``: compression step (search) or re-masking."""
        self.steps += 1
        if self.phase == "search":
            if self.steps % self.update_every == 0:
                self.compress_step()
        else:
            self._apply_masks()

    def penalty(self) -> torch.Tensor:
        """The task loss needs no extra term: the penalty acts through the proximal step."""
        return next(iter(self.layers.values())).weight.new_zeros(())

    # ------------------------------------------------------------------ finalize
    @torch.no_grad()
    def finalize(self) -> dict[str, CompressionState]:
        """Hard global mask keeping exactly :meth:`target_kept` weights (<= budget * n).

        Attaches the mask as compression state (for ``deploy``), masks gradients, and switches
        ``step()`` to keeping pruned weights at zero during fine-tuning.
        """
        if self.phase == "finetune":
            return self.states()
        keep = self.target_kept()
        flat = torch.cat(self._scores())
        idx = torch.topk(flat, keep, largest=True, sorted=False).indices
        gmask = torch.zeros(self.n, dtype=torch.bool, device=flat.device)
        gmask[idx] = True
        off = 0
        for name, m in self.layers.items():
            k = m.weight.numel()
            mask = gmask[off:off + k].view_as(m.weight).to(m.weight.device)
            off += k
            m.weight.mul_(mask)
            self._masks[name] = mask
            set_state(m, CompressionState(mask=mask, spec=None, scale=None,
                                          sparsity=1.0 - float(mask.float().mean())))
            mf = mask.to(m.weight.dtype)
            self._hooks.append(m.weight.register_hook(lambda g, mf=mf: g * mf))
        self.phase = "finetune"
        return self.states()

    @torch.no_grad()
    def _apply_masks(self) -> None:
        # Adam's momentum can move masked weights even with zero gradients: re-zero them
        for name, m in self.layers.items():
            m.weight.mul_(self._masks[name])

    def states(self) -> dict[str, CompressionState]:
        return {n: getattr(m, "sparsesnn_compression") for n, m in self.layers.items()
                if hasattr(m, "sparsesnn_compression")}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """State that must agree across ranks: pruned fraction ``p``, dual ``y``, step count,
        weights and (after finalize) masks. ``p``/``y`` follow from the weights alone, which DDP
        keeps identical, so they agree without communication; this lets a test check it."""
        out: dict[str, torch.Tensor] = {"p": torch.tensor(self.p, dtype=torch.float64),
                                        "y": torch.tensor(self.y, dtype=torch.float64),
                                        "steps": torch.tensor(self.steps)}
        for n, m in self.layers.items():
            out[f"{n}.weight"] = m.weight.detach()
            if n in self._masks:
                out[f"{n}.mask"] = self._masks[n]
        return out

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()


def budget_stages(budget: float, start: float = 0.25) -> list[float]:
    """Staged budgets ``start -> ... -> budget``, geometric with ratio about 1/2 (one stage when
    ``budget >= start``): e.g. 0.1 -> [0.25, 0.158, 0.1]."""
    budget = check_budget(budget)
    start = check_budget(start, "start")
    if budget >= start:
        return [budget]
    n = 1 + math.ceil(math.log(start / budget, 2) - 1e-9)
    return [start * (budget / start) ** (i / (n - 1)) for i in range(n - 1)] + [budget]


def _finetune_keep_best(model: nn.Module, train_loader: Iterable, val_loader: Iterable | None,
                        pruner: MinimaxPruner, epochs: int, lr: float, progress: bool, desc: str
                        ) -> list[dict[str, float]]:
    """Masked fine-tuning, one epoch at a time; restores the epoch best on ``val_loader``."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    hist: list[dict[str, float]] = []
    best_acc, best_state = -1.0, None
    for e in range(epochs):
        finetune(D.ddp_wrap(model), train_loader, opt, epochs=1, hooks=[pruner], desc=desc,
                 progress=progress)
        if val_loader is None:
            continue
        acc = evaluate(model, val_loader, reduce=True)["acc"]
        hist.append({"epoch": e + 1, "val_acc": acc})
        if acc > best_acc:
            best_acc, best_state = acc, copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)  # same masks: pruned weights stay zero
    return hist


def minimax_prune(model: nn.Module, train_loader: Iterable, budget: float, *, epochs: int = 3,
                  finetune_epochs: int = 2, lr: float = 1e-3, val_loader: Iterable | None = None,
                  progress: bool = True, stages: Sequence[float] | str | None = "auto",
                  **kwargs: Any) -> MinimaxPruner:
    """Budgeted pruning by stages; at each stage: search (fine-tuning interleaved with
    compression steps) for ``epochs``, the hard mask at the stage's budget, masked fine-tuning
    for ``finetune_epochs`` keeping the best epoch on ``val_loader`` (last epoch without one).

    ``stages``: "auto" = :func:`budget_stages` (``0.25 -> ... -> budget``); an explicit
    decreasing list of budgets ending at ``budget``; None = one stage (the old behaviour).
    So the training epochs are ``len(stages) * (epochs + finetune_epochs)``. Returns the last
    stage's pruner (its ``history`` has p, y and the violation per step; ``stage_history`` the
    stages). ``kwargs`` go to :class:`MinimaxPruner`.
    """
    budget = check_budget(budget)
    epochs = check_positive_int("epochs", epochs, minimum=0)
    finetune_epochs = check_positive_int("finetune_epochs", finetune_epochs, minimum=0)
    if stages is None:
        plan = [budget]
    elif isinstance(stages, str):
        if stages != "auto":
            raise ValueError(f"stages: expected 'auto', None or a list of budgets, got {stages!r}")
        plan = budget_stages(budget)
    else:
        plan = [check_budget(b, "stages") for b in stages]
        if not plan or abs(plan[-1] - budget) > 1e-12 or any(b2 >= b1 for b1, b2 in zip(plan, plan[1:])):
            raise ValueError(f"stages: expected strictly decreasing budgets ending at {budget}, got {list(stages)}")
    stage_history: list[dict[str, Any]] = []
    pruner: MinimaxPruner | None = None
    for b in plan:
        if pruner is not None:
            pruner.remove()  # the previous stage's gradient masks: the new search may regrow
        p0 = pruner.p if pruner is not None else 0.0
        pruner = MinimaxPruner(model, b, **kwargs)
        pruner.p = min(p0, 1.0 - 1.0 / pruner.n)  # start from where the last stage ended
        if epochs:
            opt = torch.optim.Adam(model.parameters(), lr=lr)
            finetune(D.ddp_wrap(model), train_loader, opt, epochs=epochs, hooks=[pruner],
                     desc=f"minimax search {b:.3g}", progress=progress)
        pruner.finalize()
        hist = _finetune_keep_best(model, train_loader, val_loader, pruner, finetune_epochs, lr,
                                   progress, f"minimax fine-tune {b:.3g}")
        stage_history.append({"budget": b, "kept": pruner.kept_fraction(), "finetune": hist})
    assert pruner is not None
    pruner.stage_history = stage_history
    return pruner
