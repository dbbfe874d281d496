"""Compressive + timestep search after LitE-SNN (Liu et al., IJCAI 2024): per-layer mixed
precision and pruning, plus the number of time steps, learned jointly under a cost penalty or a
hard budget. It is not the paper's full method: there is no cell-level architecture search
(the network's layers are fixed), and the time steps are mixed by running the model at each
candidate T (the paper runs once at the largest T and weights the losses of the prefixes, which
needs an input code whose first T_j steps are the T_j code -- direct or Poisson input; the
thermometer code of ``SpikingMLP`` is not).

Search space and relaxation (differentiable, one level: weights and architecture parameters are
trained together by the task loss + cost, with separate learning rates):

- **Mixed precision**: layer ``l`` has logits ``alpha_l`` over candidate bit widths ``B``
  (default 8, 4, 2 -- formats the packed kernels run). Its effective weight is the
  softmax-weighted mix of the fake-quantized weights, ``sum_i softmax(alpha_l)_i Q_{b_i}(W)``
  (straight-through gradient to ``W``); expected bits ``E[b_l] = sum_i softmax(alpha_l)_i b_i``.
- **Pruning**: a learned threshold ``theta_l`` on the RMS-normalized magnitude. Forward uses the
  hard mask ``|w|/rms > theta_l``; its gradient is the one of the soft mask
  ``sigmoid((|w|/rms - theta_l) / tau)`` (straight-through), so ``theta_l`` is learned.
- **Time steps**: logits ``beta`` over candidate T values; the output is
  ``sum_j softmax(beta)_j model_{T_j}(x)`` and ``E[T] = sum_j softmax(beta)_j T_j``.
- **Cost** (normalized by the dense fp32 model): model bits
  ``sum_l keep_l numel_l E[b_l] / (32 sum_l numel_l)`` and bit-SynOps
  ``sum_l E[T] rate_l K_l N_l keep_l E[b_l] / sum_l T_max rate_l K_l N_l 32`` (rate_l: the
  measured input spike rate of layer ``l``). Penalty mode adds ``lam_bits * bits +
  lam_ops * bitsynops`` to the loss. Hard-budget mode (``budget``, a fraction of the dense
  fp32 weight bits) raises ``lam_bits`` by dual ascent while over budget, and :meth:`decode`
  enforces the budget exactly (greedily lowering bits / raising sparsity of the largest layer).

:meth:`JointSearch.decode` returns a concrete per-layer configuration (bits, sparsity) and T;
:func:`apply_config` removes the relaxation, sets T, prunes + quantizes the weights with
:class:`~sparsesnn.compress.ADMM`'s hard projection and fine-tunes them masked and
fake-quantized, so the result deploys with ``sparsesnn.deploy.deploy``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..ops._checks import check_finite, check_greater, check_positive_int
from ..quant import QuantSpec, dequantize, quantize
from . import distributed as D
from .admm import ADMM
from .minimax import check_budget
from .state import compressible_layers
from .temporal import get_timesteps, set_timesteps
from ._finetune import finetune

__all__ = ["SEARCH_BITS", "MixedWeight", "JointSearch", "SearchConfig", "apply_config",
           "config_bits", "deployed_layer_bits", "lite_search"]

SEARCH_BITS = (8, 4, 2)


def _fake_quant_ste(w: torch.Tensor, bits: int) -> torch.Tensor:
    codes, scale = quantize(w.detach().reshape(w.shape[0], -1), QuantSpec(bits))
    wq = dequantize(codes, scale).reshape(w.shape).to(w.dtype)
    return w + (wq - w).detach()


class MixedWeight(nn.Module):
    """Parametrization of a layer's weight: learned prune mask x softmax-mixed quantization."""

    def __init__(self, bits: Sequence[int], init_threshold: float = 0.0, tau: float = 0.1) -> None:
        super().__init__()
        self.bits = tuple(int(b) for b in bits)
        self.alpha = nn.Parameter(torch.zeros(len(self.bits)))
        self.theta = nn.Parameter(torch.tensor(float(init_threshold)))
        self.tau = float(tau)
        self.register_buffer("_bits_t", torch.tensor(self.bits, dtype=torch.float32), persistent=False)

    def scores(self, w: torch.Tensor) -> torch.Tensor:
        a = w.detach().abs()
        rms = a.pow(2).mean().sqrt().clamp_min(1e-12)
        return a / rms

    def soft_mask(self, w: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid((self.scores(w) - self.theta) / self.tau)

    def hard_mask(self, w: torch.Tensor) -> torch.Tensor:
        return self.scores(w) > self.theta.detach()

    def probs(self) -> torch.Tensor:
        return torch.softmax(self.alpha, 0)

    def expected_bits(self) -> torch.Tensor:
        return (self.probs() * self._bits_t).sum()

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        soft = self.soft_mask(w)
        mask = self.hard_mask(w).to(w.dtype) + soft - soft.detach()
        p = self.probs()
        mixed = sum(p[i] * _fake_quant_ste(w, b) for i, b in enumerate(self.bits))
        return mask * mixed


class _TimeMix(nn.Module):
    """Wraps the model: output = sum_j softmax(beta)_j * model run with T_j steps."""

    def __init__(self, model: nn.Module, T_candidates: Sequence[int]) -> None:
        super().__init__()
        self.model = model
        self.T_candidates = tuple(T_candidates)
        self.beta = nn.Parameter(torch.zeros(len(self.T_candidates)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.T_candidates) == 1:
            return self.model(x)
        p = torch.softmax(self.beta, 0)
        out = 0
        for j, T in enumerate(self.T_candidates):
            set_timesteps(self.model, T)
            out = out + p[j] * self.model(x)
        return out

    def expected_T(self) -> torch.Tensor:
        p = torch.softmax(self.beta, 0)
        return (p * torch.tensor(self.T_candidates, dtype=p.dtype, device=p.device)).sum()


@dataclass
class SearchConfig:
    """A decoded configuration: per layer ``{"bits": b, "sparsity": s}``, and T."""

    layers: dict[str, dict[str, Any]]
    T: int
    model_bits: float = 0.0  # sum_l nnz_l * bits_l
    dense_bits: float = 0.0  # 32 * sum_l numel_l
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def bits_fraction(self) -> float:
        return self.model_bits / self.dense_bits if self.dense_bits else 0.0


def config_bits(numels: dict[str, int], layers: dict[str, dict[str, Any]]) -> float:
    """Model weight bits of a configuration: ``sum_l round((1 - s_l) numel_l) * b_l``."""
    return float(sum((numels[n] - int(round(c["sparsity"] * numels[n]))) * c["bits"]
                     for n, c in layers.items()))


def deployed_layer_bits(shape: Sequence[int], bits: int | None, sparsity: float,
                        bias: bool = True) -> float:
    """Bits ``sparsesnn.deploy`` stores for one layer of weight ``shape`` at ``bits`` (None:
    fp32) with ``sparsity``: packed codes + fp32 scales + bias; a linear layer takes the
    compressed-row layout (int32 row pointers, 16/32-bit indices, codes) only when smaller;
    conv layers store every code."""
    n = int(shape[0])
    k = int(math.prod(shape[1:]))
    sb = 32 if bits is None else int(bits)
    extra = 32 * n * (int(bias) + int(bits is not None))
    dense = n * math.ceil(k * sb / 8) * 8
    if len(shape) != 2 or sparsity <= 0:
        return float(dense + extra)
    nnz = n * k - int(round(sparsity * n * k))
    pruned = 32 * (k + 1) + nnz * (16 if n <= 65536 else 32) + math.ceil(nnz * sb / 8) * 8
    return float(min(dense, pruned) + extra)


class JointSearch:
    """Differentiable joint search over bits, pruning and T (see module docstring).

    Args:
        model: the network (``T`` attribute / ``set_timesteps`` needed when T is searched).
        bit_candidates: subset of (8, 4, 2).
        T_candidates: T values to choose from (default: the model's current T only).
        layers: names of the layers to search (default: every compressible layer).
        lam_bits, lam_ops: penalty weights of normalized model bits and bit-SynOps (>= 0).
        budget: hard budget on model weight bits as a fraction of dense fp32, in (0, 1]
            (ValueError naming ``budget`` otherwise); None for penalty mode.
        dual_lr: dual-ascent step of ``lam_bits`` in budget mode.
        prune: learn a pruning threshold (else dense, bits only).
        max_sparsity: cap of the decoded per-layer sparsity.
        budget_on: what the hard budget counts: "deployed" (default: every bit ``deploy`` will
            store -- codes, indices of the pruned layout when it is the smaller one, scales and
            biases -- against the fp32 weights and biases) or "codes" (kept weights x bits, the
            old accounting, which ignores index and scale overhead).
    """

    def __init__(self, model: nn.Module, *, bit_candidates: Sequence[int] = SEARCH_BITS,
                 T_candidates: Sequence[int] | None = None, layers: Iterable[str] | None = None,
                 lam_bits: float = 0.1, lam_ops: float = 0.0, budget: float | None = None,
                 dual_lr: float = 0.05, prune: bool = True, max_sparsity: float = 0.99,
                 tau: float = 0.2, budget_on: str = "deployed") -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model: expected an nn.Module, got {type(model).__name__}")
        if D.unwrap(model) is not model:
            raise ValueError("model: JointSearch adds parameters (alpha, theta, beta) that an "
                             "existing DDP wrapper would not see; build it on the bare model and "
                             "wrap JointSearch.model in DistributedDataParallel afterwards")
        bits = list(bit_candidates)
        if not bits or any(isinstance(b, bool) or b not in SEARCH_BITS for b in bits):
            raise ValueError(f"bit_candidates: expected a non-empty subset of {SEARCH_BITS}, got {bit_candidates!r}")
        if T_candidates is None:
            T_candidates = [get_timesteps(model)] if hasattr(model, "T") else [1]
        Ts = [check_positive_int("T_candidates", t) for t in T_candidates]
        if not Ts or len(set(Ts)) != len(Ts):
            raise ValueError(f"T_candidates: expected distinct integers >= 1, got {T_candidates!r}")
        if len(Ts) > 1:
            get_timesteps(model)
        self.lam_bits = check_finite("lam_bits", lam_bits)
        self.lam_ops = check_finite("lam_ops", lam_ops)
        if self.lam_bits < 0 or self.lam_ops < 0:
            raise ValueError(f"lam_bits/lam_ops: expected numbers >= 0, got {lam_bits!r}, {lam_ops!r}")
        self.budget = None if budget is None else check_budget(budget)
        self.dual_lr = check_greater("dual_lr", dual_lr, 0.0)
        self.max_sparsity = check_finite("max_sparsity", max_sparsity)
        if not 0.0 <= self.max_sparsity < 1.0:
            raise ValueError(f"max_sparsity: expected a number in [0, 1), got {max_sparsity!r}")
        if budget_on not in ("deployed", "codes"):
            raise ValueError(f"budget_on: expected 'deployed' or 'codes', got {budget_on!r}")
        self.budget_on = budget_on
        available = compressible_layers(model)
        names = list(available) if layers is None else list(layers)
        bad = [n for n in names if n not in available]
        if bad:
            raise ValueError(f"layers: unknown layer names {bad}; compressible layers are {list(available)}")
        if not names:
            raise ValueError("layers: no layer to search")
        self.base = model
        self.prune = bool(prune)
        self.layers = {n: available[n] for n in names}
        self.numels = {n: m.weight.numel() for n, m in self.layers.items()}
        self.fan = {n: (m.weight[0].numel(), m.weight.shape[0]) for n, m in self.layers.items()}
        self.shapes = {n: tuple(m.weight.shape) for n, m in self.layers.items()}
        self.has_bias = {n: getattr(m, "bias", None) is not None for n, m in self.layers.items()}
        self.mixers: dict[str, MixedWeight] = {}
        # threshold 0: starts dense (scores > 0) with a useful soft-mask gradient for small weights
        for n, m in self.layers.items():
            mw = MixedWeight(bits, init_threshold=0.0 if self.prune else -1e9, tau=tau)
            if not self.prune:
                mw.theta.requires_grad_(False)
            parametrize.register_parametrization(m, "weight", mw)
            self.mixers[n] = mw
        self.model = _TimeMix(model, Ts)
        if len(Ts) == 1:
            # beta is unused with one T: no gradient ever, and DDP rejects parameters that get none
            self.model.beta.requires_grad_(False)
        self.T_max = max(Ts)
        self._rates: dict[str, float] = {n: 0.0 for n in self.layers}
        # per-forward local input rates, folded into _rates at the next costs(): under DDP they
        # are averaged over ranks first (local data), so the EMA is identical on every rank
        self._pending: dict[str, list[float]] = {n: [] for n in self.layers}
        self._rate_hooks = [m.register_forward_pre_hook(self._rate_hook(n)) for n, m in self.layers.items()]
        self.history: list[dict[str, float]] = []
        self.last_cost: dict[str, float] = {}

    def _rate_hook(self, name: str):
        def hook(mod: nn.Module, inputs: Any) -> None:
            x = inputs[0]
            if D.active() and not torch.is_grad_enabled():
                return  # a rank-local evaluation forward (e.g. rank 0 only) must not feed shared state
            with torch.no_grad():
                self._pending[name].append(float(x.detach().float().mean()))
        return hook

    def _flush_rates(self) -> None:
        """Running mean of the input spike rates; one all-reduce under DDP (a collective)."""
        names = list(self._pending)
        flat = [v for n in names for v in self._pending[n]]
        flat = D.all_reduce_floats(flat, "mean")
        i = 0
        for n in names:
            for _ in self._pending[n]:
                self._rates[n] = 0.9 * self._rates[n] + 0.1 * flat[i]
                i += 1
            self._pending[n].clear()

    # ------------------------------------------------------------------ parameters and cost
    def arch_parameters(self) -> list[nn.Parameter]:
        ps: list[nn.Parameter] = [self.model.beta]
        for mw in self.mixers.values():
            ps.append(mw.alpha)
            if self.prune:
                ps.append(mw.theta)
        return ps

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.model.parameters() if id(p) not in arch and p.requires_grad]

    def costs(self) -> dict[str, torch.Tensor]:
        """Normalized expected model bits and bit-SynOps (differentiable in the arch params)."""
        self._flush_rates()
        bits = 0.0
        ops = 0.0
        ops_dense = 0.0
        e_t = self.model.expected_T()
        for n, m in self.layers.items():
            mw = self.mixers[n]
            w = m.parametrizations.weight.original
            keep = mw.soft_mask(w).mean() if self.prune else torch.ones(())
            eb = mw.expected_bits()
            bits = bits + keep * self.numels[n] * eb
            k, o = self.fan[n]
            r = max(self._rates[n], 1e-6)
            ops = ops + e_t * r * k * o * keep * eb
            ops_dense += self.T_max * r * k * o * 32.0
        dense_bits = 32.0 * sum(self.numels.values())
        return {"bits": bits / dense_bits, "bitsynops": ops / ops_dense}

    def penalty(self) -> torch.Tensor:
        c = self.costs()
        self.last_cost = {k: float(v.detach()) for k, v in c.items()}
        return self.lam_bits * c["bits"] + self.lam_ops * c["bitsynops"]

    def step(self) -> None:
        """Dual ascent on ``lam_bits`` in budget mode (after each optimizer step)."""
        if self.budget is not None and self.last_cost:
            self.lam_bits = max(0.0, self.lam_bits + self.dual_lr * (self.last_cost["bits"] - self.budget) * 10.0)
        if self.last_cost:
            self.history.append({**self.last_cost, "lam_bits": self.lam_bits,
                                 "E_T": float(self.model.expected_T().detach())})

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Everything that must agree across ranks: architecture parameters, the dual
        ``lam_bits``, the running input spike rates and the (float) weights."""
        out: dict[str, torch.Tensor] = {"beta": self.model.beta.detach(),
                                        "lam_bits": torch.tensor(self.lam_bits, dtype=torch.float64)}
        for n, m in self.layers.items():
            mw = self.mixers[n]
            out[f"{n}.alpha"] = mw.alpha.detach()
            out[f"{n}.theta"] = mw.theta.detach()
            out[f"{n}.rate"] = torch.tensor(self._rates[n], dtype=torch.float64)
            out[f"{n}.weight"] = m.parametrizations.weight.original.detach()
        return out

    # ------------------------------------------------------------------ decode
    @torch.no_grad()
    def decode(self) -> SearchConfig:
        """Concrete configuration: argmax bits, hard-mask sparsity, argmax T; within budget."""
        cfg: dict[str, dict[str, Any]] = {}
        for n, m in self.layers.items():
            mw = self.mixers[n]
            w = m.parametrizations.weight.original
            b = mw.bits[int(torch.argmax(mw.alpha))]
            s = 1.0 - float(mw.hard_mask(w).float().mean()) if self.prune else 0.0
            s = min(max(round(s, 4), 0.0), self.max_sparsity)
            cfg[n] = {"bits": b, "sparsity": s}
        T = self.model.T_candidates[int(torch.argmax(self.model.beta))]
        if self.budget_on == "deployed":
            dense_bits = sum(deployed_layer_bits(self.shapes[n], None, 0.0, self.has_bias[n]) for n in cfg)
        else:
            dense_bits = 32.0 * sum(self.numels.values())
        if self.budget is not None:
            self._enforce_budget(cfg, self.budget * dense_bits)
        return SearchConfig(cfg, T, self._cost(cfg), dense_bits, list(self.history))

    def _cost(self, cfg: dict[str, dict[str, Any]]) -> float:
        """Bits of ``cfg`` as the budget counts them (``budget_on``)."""
        if self.budget_on == "codes":
            return config_bits(self.numels, cfg)
        return sum(deployed_layer_bits(self.shapes[n], c["bits"], c["sparsity"], self.has_bias[n])
                   for n, c in cfg.items())

    def _enforce_budget(self, cfg: dict[str, dict[str, Any]], limit: float) -> None:
        """Greedy: shrink the costliest layer that can still shrink -- lower precision first,
        then 5% more sparsity. Under ``budget_on="deployed"`` a conv layer is never pruned for
        the budget (deploy stores all its codes, so pruning would cost accuracy and save no
        byte)."""
        bits_sorted = sorted(self.mixers[next(iter(cfg))].bits, reverse=True)

        def can_prune(n: str) -> bool:
            return self.budget_on == "codes" or len(self.shapes[n]) == 2

        while self._cost(cfg) > limit:
            for n in sorted(cfg, key=lambda k: self._cost({k: cfg[k]}), reverse=True):
                c = cfg[n]
                lower = [b for b in bits_sorted if b < c["bits"]]
                if lower:
                    c["bits"] = lower[0]
                    break
                if can_prune(n) and c["sparsity"] < self.max_sparsity:
                    c["sparsity"] = min(self.max_sparsity, round(c["sparsity"] + 0.05, 4))
                    break
            else:
                raise ValueError(f"budget: {limit:.0f} bits cannot be met even at sparsity "
                                 f"{self.max_sparsity} and {bits_sorted[-1]} bits")

    def remove(self) -> nn.Module:
        """Drop the relaxation: original float weights back, plain layers, hooks removed."""
        for h in self._rate_hooks:
            h.remove()
        self._rate_hooks.clear()
        for m in self.layers.values():
            if parametrize.is_parametrized(m, "weight"):
                parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
        return self.base


def apply_config(model: nn.Module, config: SearchConfig, train_loader: Iterable | None = None, *,
                 epochs: int = 1, lr: float = 5e-4, progress: bool = False) -> ADMM:
    """Set T, prune + quantize per ``config`` (hard projection), masked fake-quant fine-tuning.

    ``model`` must be free of the search relaxation (:meth:`JointSearch.remove`). Returns the
    ADMM object in its retraining phase (its compression state is what ``deploy`` reads).
    """
    if not isinstance(config, SearchConfig):
        raise ValueError(f"config: expected a SearchConfig, got {type(config).__name__}")
    if hasattr(model, "T") or config.T != 1:
        set_timesteps(model, config.T)
    admm = ADMM(model, targets={n: {"sparsity": c["sparsity"] if c["sparsity"] > 0 else None,
                                     "bits": c["bits"]} for n, c in config.layers.items()},
                exclude=[n for n in compressible_layers(model) if n not in config.layers])
    admm.finalize()
    if train_loader is not None and epochs > 0:
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        finetune(D.ddp_wrap(model), train_loader, opt, epochs=epochs, hooks=[admm], desc="search fine-tune",
            progress=progress)
    return admm


def lite_search(model: nn.Module, train_loader: Iterable, *, epochs: int = 2,
                finetune_epochs: int = 1, lr: float = 5e-4, arch_lr: float = 5e-2,
                warmup_epochs: int = 0, progress: bool = True,
                **kwargs: Any) -> tuple[SearchConfig, ADMM]:
    """Warm up, search for ``epochs`` (weights + arch params jointly), decode, apply, fine-tune.

    ``warmup_epochs`` (as the paper): train only the weights of the relaxed supernet first,
    architecture parameters frozen and no cost penalty, so the search starts from weights that
    work under every candidate. ``kwargs`` go to :class:`JointSearch`. ``model`` is modified in
    place and ends with the decoded T, pruned and quantized weights (deploy it with
    ``sparsesnn.deploy.deploy``).
    """
    epochs = check_positive_int("epochs", epochs, minimum=0)
    warmup_epochs = check_positive_int("warmup_epochs", warmup_epochs, minimum=0)
    js = JointSearch(model, **kwargs)
    opt = torch.optim.Adam([{"params": js.weight_parameters(), "lr": lr},
                            {"params": js.arch_parameters(), "lr": arch_lr}])
    try:
        if warmup_epochs:
            warm = torch.optim.Adam(js.weight_parameters(), lr=lr)
            finetune(D.ddp_wrap(js.model), train_loader, warm, epochs=warmup_epochs,
                     desc="LitE warm-up", progress=progress)
        if epochs:
            finetune(D.ddp_wrap(js.model), train_loader, opt, epochs=epochs, hooks=[js], desc="LitE search",
                progress=progress)
        cfg = js.decode()
    finally:
        js.remove()
    admm = apply_config(model, cfg, train_loader, epochs=finetune_epochs, lr=lr, progress=progress)
    return cfg, admm
