"""Compressive + timestep search after LitE-SNN (Liu et al., IJCAI 2024): per-layer mixed
precision and pruning, plus the number of time steps, learned jointly under a cost penalty or a
hard budget. What this is: LitE-SNN's *compressive* search (bits and pruning per layer) and its
*timestep* search on a network whose layers are fixed. What it is not: the paper's cell-level
architecture search (operations and connections of each cell); a cell-level supernet with
compressive convolutions is in :mod:`sparsesnn.compress.lite`.

Search space and relaxation (differentiable, one level: weights and architecture parameters are
trained together by the task loss + cost, with separate learning rates):

- **Mixed precision**: layer ``l`` has logits ``alpha_l`` over candidate bit widths ``B``
  (default 4, 2, 1 as the paper). Its effective weight is the softmax-weighted mix of the
  quantized weights, ``sum_i softmax(alpha_l)_i Q_{b_i}(W)`` (straight-through gradient to
  ``W``); expected bits ``E[b_l] = sum_i softmax(alpha_l)_i b_i``. ``quantizer="std"`` (the
  paper's): step ``c_b * std(W)`` per layer (``c = 1.596, 0.996, 0.336`` for 1, 2, 4 bits);
  1 bit is ``+-step/2`` (binary codes, exactly the paper's levels); 2 and 4 bits use that step
  on the two's-complement grid ``k * step``, ``k in [-2^(b-1), 2^(b-1) - 1]`` -- the paper's
  mid-rise levels (odd multiples of ``step/2``, no zero) would need ``b + 1`` bits per packed
  code, this grid packs in ``b`` bits and holds pruned zeros; 8 bits uses per-channel max-abs.
  ``quantizer="maxabs"``: the symmetric per-channel max-abs grid (the old behaviour).
- **Pruning**, ``scores="magnitude"`` (default): a learned threshold ``theta_l`` on the
  RMS-normalized magnitude; forward uses the hard mask ``|w|/rms > theta_l``, its gradient is
  the soft mask's ``sigmoid((|w|/rms - theta_l) / tau)`` (straight-through), so the sparsity is
  learned under the cost. ``scores="learned"`` with ``keep_ratio`` (the paper's): a learned
  score per weight (initialized from ``|w|``), the mask keeps the ``keep_ratio`` fraction with
  the largest ``|score|`` (straight-through gradient to the scores); the sparsity is fixed.
- **Time steps** (``time_mix="prefix"``, the paper's): the model runs once at the largest
  candidate ``T_max``; the output at every candidate ``T_j`` is the mean of the readout's
  first ``T_j`` steps (the prefix of the same run), and the loss is ``sum_j softmax(beta)_j
  CE(out_{T_j}, y)``. This needs an input code whose first ``T_j`` steps are the ``T_j`` code
  (direct/analog input repeated each step, Poisson input) and a model whose output is the mean
  over T of its last layer (checked: ValueError otherwise). ``time_mix="separate"`` runs the
  model once per candidate T (for the thermometer code of ``SpikingMLP``, whose prefixes are
  not shorter codes); ``"auto"`` (default) picks "separate" for a model with that code
  (a ``thresholds`` buffer) and "prefix" otherwise. ``E[T] = sum_j softmax(beta)_j T_j``.
- **Cost** (normalized by the dense fp32 model): model bits -- with ``budget_on="deployed"``
  (default) the bits ``deploy`` stores, relaxed (the smaller of dense codes and compressed rows
  with an index per kept weight, plus scales and biases, at ``E[b_l]`` and the soft kept
  fraction), with ``"codes"`` ``sum_l keep_l numel_l E[b_l] / (32 sum_l numel_l)`` -- and bit-SynOps
  ``sum_l E[T] rate_l K_l N_l keep_l E[b_l] / sum_l T_max rate_l K_l N_l 32`` (rate_l: the
  measured input spike rate of layer ``l``). Penalty mode adds ``lam_bits * bits +
  lam_ops * bitsynops`` to the loss. Hard-budget mode (``budget``, a fraction of the dense
  fp32 model's deployed bytes) raises ``lam_bits`` by dual ascent while over budget, and
  :meth:`decode` enforces the budget exactly on the bytes ``deploy`` will store (greedily
  lowering bits / raising sparsity of the largest layer).
- **Warm-up** (``warmup_epochs`` of :func:`lite_search`): the weights of the relaxed network
  are trained first with the architecture parameters frozen (uniform mixes) and no cost.

:meth:`JointSearch.decode` returns a concrete per-layer configuration (bits, sparsity, and the
learned mask with ``scores="learned"``) and T; :func:`apply_config` removes the relaxation, sets
T, prunes + quantizes the weights with :class:`~sparsesnn.compress.ADMM`'s hard projection (same
quantizer) and fine-tunes them masked and fake-quantized, so the result deploys with
``sparsesnn.deploy.deploy``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ..ops._checks import check_finite, check_greater, check_positive_int
from ..quant import QuantSpec, dequantize, quantize
from . import distributed as D
from . import projections as P
from .admm import ADMM
from .minimax import check_budget
from .state import compressible_layers
from .temporal import get_timesteps, set_timesteps
from ._finetune import finetune

__all__ = ["SEARCH_BITS", "QUANTIZERS", "TIME_MIXES", "grid_bits", "MixedWeight", "JointSearch", "SearchConfig", "apply_config",
           "config_bits", "deployed_layer_bits", "lite_search"]

SEARCH_BITS = (8, 4, 2, 1)
QUANTIZERS = ("std", "maxabs")
TIME_MIXES = ("auto", "prefix", "separate")


def grid_bits(bits: int) -> int | str:
    """Search bits -> projection grid: 1 is the binary format."""
    return "binary" if bits == 1 else bits


def _quantized(w: torch.Tensor, bits: int, quantizer: str) -> torch.Tensor:
    """``w`` on the ``bits`` grid of ``quantizer`` (no gradient)."""
    g = grid_bits(bits)
    w = w.detach()
    if quantizer == "std":
        spec = P.make_spec(g, full_range=isinstance(g, int))
        return P.fake_quantize(w, spec, P.fit_scale(w, g, method="std"))[0]
    if g == "binary":
        return P.fake_quantize(w, P.make_spec(g))[0]
    codes, scale = quantize(w.reshape(w.shape[0], -1), QuantSpec(bits))
    return dequantize(codes, scale).reshape(w.shape).to(w.dtype)


def _fake_quant_ste(w: torch.Tensor, bits: int, quantizer: str = "std") -> torch.Tensor:
    return w + (_quantized(w, bits, quantizer) - w).detach()


class _TopK(torch.autograd.Function):
    """Mask of the ``k`` largest ``|scores|``; the gradient passes straight through."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, k: int) -> torch.Tensor:  # type: ignore[override]
        mask = torch.zeros_like(scores)
        if k > 0:
            mask.view(-1)[torch.topk(scores.detach().abs().flatten(), k, sorted=False).indices] = 1.0
        return mask

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        return g, None


class MixedWeight(nn.Module):
    """Parametrization of a layer's weight: prune mask x softmax-mixed quantization.

    ``keep_ratio`` None: magnitude scores with a learned threshold ``theta``. Otherwise a
    learned score per weight (``scores``, initialized from the weight) and a fixed keep ratio.
    """

    def __init__(self, bits: Sequence[int], init_threshold: float = 0.0, tau: float = 0.1,
                 quantizer: str = "std", keep_ratio: float | None = None,
                 weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.bits = tuple(int(b) for b in bits)
        self.quantizer = quantizer
        self.alpha = nn.Parameter(torch.zeros(len(self.bits)))
        self.theta = nn.Parameter(torch.tensor(float(init_threshold)))
        self.tau = float(tau)
        self.keep_ratio = keep_ratio
        if keep_ratio is not None:
            if weight is None:
                raise ValueError("weight: learned scores need the layer's weight to start from")
            self.theta.requires_grad_(False)
            w = weight.detach().float()
            self.scores_param = nn.Parameter(w / w.abs().max().clamp_min(1e-12))
            self.k = max(1, int(round(keep_ratio * w.numel())))
        self.register_buffer("_bits_t", torch.tensor(self.bits, dtype=torch.float32), persistent=False)

    def scores(self, w: torch.Tensor) -> torch.Tensor:
        a = w.detach().abs()
        rms = a.pow(2).mean().sqrt().clamp_min(1e-12)
        return a / rms

    def soft_mask(self, w: torch.Tensor) -> torch.Tensor:
        if self.keep_ratio is not None:
            return torch.full_like(w, self.k / w.numel())
        return torch.sigmoid((self.scores(w) - self.theta) / self.tau)

    def hard_mask(self, w: torch.Tensor) -> torch.Tensor:
        if self.keep_ratio is not None:
            return _TopK.apply(self.scores_param, self.k).detach() > 0
        return self.scores(w) > self.theta.detach()

    def probs(self) -> torch.Tensor:
        return torch.softmax(self.alpha, 0)

    def expected_bits(self) -> torch.Tensor:
        return (self.probs() * self._bits_t).sum()

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.keep_ratio is not None:
            mask = _TopK.apply(self.scores_param, self.k).to(w.dtype)
        else:
            soft = self.soft_mask(w)
            mask = self.hard_mask(w).to(w.dtype) + soft - soft.detach()
        p = self.probs()
        mixed = sum(p[i] * _fake_quant_ste(w, b, self.quantizer) for i, b in enumerate(self.bits))
        return mask * mixed


class _TimeMix(nn.Module):
    """Wraps the model; keeps the output at every candidate T (``outputs``) for the loss.

    "separate": the model runs once per candidate T. "prefix": once at the largest T; the
    output at ``T_j`` is the mean of the readout layer's first ``T_j`` steps. The returned
    output is ``sum_j softmax(beta)_j out_{T_j}``.
    """

    def __init__(self, model: nn.Module, T_candidates: Sequence[int], mode: str = "separate",
                 readout: nn.Module | None = None) -> None:
        super().__init__()
        self.model = model
        self.T_candidates = tuple(T_candidates)
        self.beta = nn.Parameter(torch.zeros(len(self.T_candidates)))
        self.mode = mode
        self.outputs: list[torch.Tensor] = []
        self._steps: torch.Tensor | None = None
        self._checked = False
        self._hook = None
        if mode == "prefix" and len(self.T_candidates) > 1:
            if readout is None:
                raise ValueError("time_mix: 'prefix' needs a readout layer (the model's last synaptic layer)")
            self._hook = readout.register_forward_hook(self._capture)

    def _capture(self, mod: nn.Module, inputs: Any, out: torch.Tensor) -> None:
        self._steps = out

    def remove(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.T_candidates) == 1:
            out = self.model(x)
            self.outputs = [out]
            return out
        p = torch.softmax(self.beta, 0)
        if self.mode == "prefix":
            T_max = max(self.T_candidates)
            set_timesteps(self.model, T_max)
            self._steps = None
            out = self.model(x)
            steps = self._steps
            if not isinstance(steps, torch.Tensor) or steps.dim() < 2 or steps.shape[0] != T_max:
                raise ValueError(f"time_mix: 'prefix' needs the last synaptic layer to see all {T_max} "
                                 f"steps at once ([T, ...]), got {getattr(steps, 'shape', None)}; use "
                                 "time_mix='separate'")
            if not self._checked:
                if not torch.allclose(steps.mean(0), out, atol=1e-5, rtol=1e-4):
                    raise ValueError("time_mix: 'prefix' needs a model whose output is the mean over T "
                                     "of its last layer's output; use time_mix='separate'")
                self._checked = True
            csum = steps.cumsum(0)
            self.outputs = [csum[T - 1] / T for T in self.T_candidates]
        else:
            self.outputs = []
            for T in self.T_candidates:
                set_timesteps(self.model, T)
                self.outputs.append(self.model(x))
        return sum(p[j] * o for j, o in enumerate(self.outputs))

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``sum_j softmax(beta)_j CE(out_{T_j}, y)`` (the paper's weighted timestep losses)."""
        if len(self.outputs) <= 1:
            return F.cross_entropy(out, y)
        p = torch.softmax(self.beta, 0)
        return sum(p[j] * F.cross_entropy(o, y) for j, o in enumerate(self.outputs))

    def expected_T(self) -> torch.Tensor:
        p = torch.softmax(self.beta, 0)
        return (p * torch.tensor(self.T_candidates, dtype=p.dtype, device=p.device)).sum()


@dataclass
class SearchConfig:
    """A decoded configuration: per layer ``{"bits": b, "sparsity": s}`` (b = 1: binary), T,
    the quantizer the weights are projected with, and the learned masks (``scores="learned"``)."""

    layers: dict[str, dict[str, Any]]
    T: int
    model_bits: float = 0.0  # what the budget counts (deployed bits, or kept weights x bits)
    dense_bits: float = 0.0  # the same for the dense fp32 model
    history: list[dict[str, float]] = field(default_factory=list)
    quantizer: str = "maxabs"
    masks: dict[str, torch.Tensor] = field(default_factory=dict)

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
    # packed rows are input-major: K rows of ceil(N * bits / 8) bytes (fp32: N * K values)
    dense = k * math.ceil(n * sb / 8) * 8
    if len(shape) != 2 or sparsity <= 0:
        return float(dense + extra)
    nnz = n * k - int(round(sparsity * n * k))
    pruned = 32 * (k + 1) + nnz * (16 if n <= 65536 else 32) + math.ceil(nnz * sb / 8) * 8
    if sb == 1:  # binary codes cannot hold pruned zeros in the dense layout
        return float(pruned + extra)
    return float(min(dense, pruned) + extra)


class JointSearch:
    """Differentiable joint search over bits, pruning and T (see module docstring).

    Args:
        model: the network (``T`` attribute / ``set_timesteps`` needed when T is searched).
        bit_candidates: subset of (8, 4, 2, 1); default (4, 2, 1) as the paper (1: binary).
        T_candidates: T values to choose from (default: the model's current T only).
        quantizer: "std" (the paper's std-based step) or "maxabs" (see module docstring).
        time_mix: "auto" | "prefix" (one run at the largest T, prefix losses) | "separate".
        scores: "magnitude" (learned threshold) or "learned" (a score per weight, fixed
            ``keep_ratio``, the paper's).
        keep_ratio: fraction of each layer's weights kept with ``scores="learned"``.
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

    def __init__(self, model: nn.Module, *, bit_candidates: Sequence[int] = (4, 2, 1),
                 T_candidates: Sequence[int] | None = None, layers: Iterable[str] | None = None,
                 lam_bits: float = 0.1, lam_ops: float = 0.0, budget: float | None = None,
                 dual_lr: float = 0.05, prune: bool = True, max_sparsity: float = 0.99,
                 tau: float = 0.2, budget_on: str = "deployed", quantizer: str = "std",
                 time_mix: str = "auto", scores: str = "magnitude",
                 keep_ratio: float | None = None) -> None:
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
        if quantizer not in QUANTIZERS:
            raise ValueError(f"quantizer: expected one of {QUANTIZERS}, got {quantizer!r}")
        self.quantizer = quantizer
        if time_mix not in TIME_MIXES:
            raise ValueError(f"time_mix: expected one of {TIME_MIXES}, got {time_mix!r}")
        if time_mix == "auto":  # SpikingMLP's thermometer code: prefixes are not shorter codes
            time_mix = "separate" if isinstance(getattr(model, "thresholds", None), torch.Tensor) else "prefix"
        self.time_mix = time_mix
        if scores not in ("magnitude", "learned"):
            raise ValueError(f"scores: expected 'magnitude' or 'learned', got {scores!r}")
        if scores == "learned":
            if keep_ratio is None or isinstance(keep_ratio, bool):
                raise ValueError(f"keep_ratio: scores='learned' needs a keep ratio in (0, 1], got {keep_ratio!r}")
            keep_ratio = check_finite("keep_ratio", keep_ratio)
            if not 0.0 < keep_ratio <= 1.0:
                raise ValueError(f"keep_ratio: expected a number in (0, 1], got {keep_ratio!r}")
            if not prune:
                raise ValueError("scores: 'learned' prunes; it cannot be combined with prune=False")
        elif keep_ratio is not None:
            raise ValueError("keep_ratio: only used with scores='learned'")
        self.scores = scores
        self.keep_ratio = keep_ratio
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
            mw = MixedWeight(bits, init_threshold=0.0 if self.prune else -1e9, tau=tau,
                             quantizer=quantizer, keep_ratio=keep_ratio, weight=m.weight)
            if not self.prune:
                mw.theta.requires_grad_(False)
            parametrize.register_parametrization(m, "weight", mw)
            self.mixers[n] = mw
        readout = list(available.values())[-1]
        self.model = _TimeMix(model, Ts, self.time_mix, readout)
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
            if self.keep_ratio is not None:
                ps.append(mw.scores_param)
            elif self.prune:
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
            k, o = self.fan[n]
            if self.budget_on == "deployed":
                bits = bits + self._expected_deployed_bits(n, keep, eb)
            else:
                bits = bits + keep * self.numels[n] * eb
            r = max(self._rates[n], 1e-6)
            ops = ops + e_t * r * k * o * keep * eb
            ops_dense += self.T_max * r * k * o * 32.0
        if self.budget_on == "deployed":
            dense_bits = sum(deployed_layer_bits(self.shapes[n], None, 0.0, self.has_bias[n]) for n in self.layers)
        else:
            dense_bits = 32.0 * sum(self.numels.values())
        return {"bits": bits / dense_bits, "bitsynops": ops / ops_dense}

    def _expected_deployed_bits(self, name: str, keep: torch.Tensor, eb: torch.Tensor) -> torch.Tensor:
        """:func:`deployed_layer_bits` relaxed (expected bits, soft kept fraction, no rounding):
        the smaller of the dense codes and the compressed rows (an index per kept weight) for
        a linear layer, every code for a conv layer; plus scales and biases. The cost the
        budget's dual ascent compares with the budget, in the same units."""
        k, o = self.fan[name]
        extra = 32.0 * o * (1 + int(self.has_bias[name]))
        dense = k * o * eb
        if len(self.shapes[name]) != 2 or not self.prune:
            return dense + extra
        pruned = 32.0 * (k + 1) + keep * k * o * ((16.0 if o <= 65536 else 32.0) + eb)
        return torch.minimum(dense, pruned) + extra

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
        masks: dict[str, torch.Tensor] = {}
        for n, m in self.layers.items():
            mw = self.mixers[n]
            w = m.parametrizations.weight.original
            b = mw.bits[int(torch.argmax(mw.alpha))]
            conv = len(self.shapes[n]) != 2
            if self.keep_ratio is not None and not (conv and b == 1):
                masks[n] = mw.hard_mask(w).clone()
                s = 1.0 - mw.k / w.numel()  # exact: the projection keeps exactly these weights
            else:
                s = 1.0 - float(mw.hard_mask(w).float().mean()) if self.prune else 0.0
                s = min(max(round(s, 4), 0.0), self.max_sparsity)
            if conv and b == 1:
                s = 0.0  # binary conv codes cannot hold pruned zeros (and conv pruning saves no byte)
            cfg[n] = {"bits": b, "sparsity": s}
        T = self.model.T_candidates[int(torch.argmax(self.model.beta))]
        if self.budget_on == "deployed":
            dense_bits = sum(deployed_layer_bits(self.shapes[n], None, 0.0, self.has_bias[n]) for n in cfg)
        else:
            dense_bits = 32.0 * sum(self.numels.values())
        if self.budget is not None:
            self._enforce_budget(cfg, self.budget * dense_bits)
        for n in list(masks):
            if cfg[n]["bits"] == 1 and len(self.shapes[n]) != 2:
                del masks[n]
        return SearchConfig(cfg, T, self._cost(cfg), dense_bits, list(self.history),
                            self.quantizer, masks)

    def _cost(self, cfg: dict[str, dict[str, Any]]) -> float:
        """Bits of ``cfg`` as the budget counts them (``budget_on``)."""
        if self.budget_on == "codes":
            return config_bits(self.numels, cfg)
        return sum(deployed_layer_bits(self.shapes[n], c["bits"], c["sparsity"], self.has_bias[n])
                   for n, c in cfg.items())

    def _enforce_budget(self, cfg: dict[str, dict[str, Any]], limit: float) -> None:
        """Within ``limit``: (1) lower precision, costliest layer first; (2) if the lowest
        precision is still over, prune the prunable layers together by the Erdos-Renyi rule
        (density of a ``K -> N`` layer proportional to ``(K + N) / (K N)``, one factor set by
        bisection, never below the sparsity a layer has); (3) give pruned layers back the
        precision they were decoded with while the budget allows (an index costs 16 bits per
        kept weight, so their codes are cheap). Cutting the costliest layer alone in 5% steps
        left the MLP at 1/32 of fp32 with 1% of fc2 and a dead network in every seed. Under
        ``budget_on="deployed"`` a conv layer is never pruned for the budget (deploy stores
        all its codes, so pruning would cost accuracy and save no byte)."""
        bits_sorted = sorted(self.mixers[next(iter(cfg))].bits, reverse=True)
        decoded = {n: c["bits"] for n, c in cfg.items()}
        while self._cost(cfg) > limit:
            for n in sorted(cfg, key=lambda k: self._cost({k: cfg[k]}), reverse=True):
                c = cfg[n]
                # binary conv codes cannot be pruned: a conv layer goes binary only unpruned
                lower = [b for b in bits_sorted if b < c["bits"]
                         and not (b == 1 and len(self.shapes[n]) != 2 and c["sparsity"] > 0)]
                if lower:
                    c["bits"] = lower[0]
                    break
            else:
                break
        if self._cost(cfg) > limit:
            low = {n: c["bits"] for n, c in cfg.items()}
            for n, c in cfg.items():  # pruned layers keep their decoded precision if it fits
                if len(self.shapes[n]) == 2:
                    c["bits"] = decoded[n]
            try:
                self._prune_for_budget(cfg, limit, bits_sorted[-1])
            except ValueError:
                for n, c in cfg.items():
                    c["bits"] = low[n]
                self._prune_for_budget(cfg, limit, bits_sorted[-1])
        for n in sorted(cfg, key=lambda k: cfg[k]["sparsity"], reverse=True):
            c = cfg[n]
            if c["sparsity"] <= 0 or len(self.shapes[n]) != 2:
                continue
            for b in sorted(b for b in bits_sorted if c["bits"] < b <= decoded[n]):
                before, c["bits"] = c["bits"], b
                if self._cost(cfg) > limit:
                    c["bits"] = before
                    break

    def _prune_for_budget(self, cfg: dict[str, dict[str, Any]], limit: float, low_bits: int) -> None:
        """Step (2) of :meth:`_enforce_budget`: Erdos-Renyi sparsities meeting ``limit``; the
        output layer is left unpruned when the others can meet it alone (a pruned 10-way
        readout loses classes)."""
        names = [n for n in cfg if (len(self.shapes[n]) == 2 or self.budget_on == "codes")
                 and not (cfg[n]["bits"] == 1 and len(self.shapes[n]) != 2)]
        last = list(cfg)[-1]
        if last in names and len(names) > 1:
            saved = {n: cfg[n]["sparsity"] for n in names}
            try:
                self._erk_sparsities(cfg, [n for n in names if n != last], limit, low_bits)
                return
            except ValueError:
                for n, v in saved.items():
                    cfg[n]["sparsity"] = v
        self._erk_sparsities(cfg, names, limit, low_bits)

    def _erk_sparsities(self, cfg: dict[str, dict[str, Any]], names: list[str], limit: float,
                        low_bits: int) -> None:
        shape = {n: (int(math.prod(self.shapes[n][1:])), int(self.shapes[n][0])) for n in names}
        raw = {n: (k + o) / (k * o) for n, (k, o) in shape.items()}
        floor = {n: cfg[n]["sparsity"] for n in names}

        def apply(eps: float) -> float:
            for n in names:
                s = max(floor[n], 1.0 - min(1.0, eps * raw[n]))
                cfg[n]["sparsity"] = round(min(s, self.max_sparsity), 4)
            return self._cost(cfg)

        if not names or apply(0.0) > limit:
            raise ValueError(f"budget: {limit:.0f} bits cannot be met even at sparsity "
                             f"{self.max_sparsity} and {low_bits} bits")
        lo, hi = 0.0, 1.0 / min(raw.values())
        for _ in range(40):  # the cost rises with eps (denser layers): largest eps within limit
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if apply(mid) <= limit else (lo, mid)
        apply(lo)

    def remove(self) -> nn.Module:
        """Drop the relaxation: original float weights back, plain layers, hooks removed."""
        for h in self._rate_hooks:
            h.remove()
        self._rate_hooks.clear()
        self.model.remove()
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
    layers = compressible_layers(model)
    with torch.no_grad():  # learned masks: zero the pruned weights; the magnitude projection
        for n, mask in config.masks.items():  # at the same (or a higher) sparsity keeps them out
            layers[n].weight.mul_(mask.to(layers[n].weight.dtype))
    admm = ADMM(model, targets={n: {"sparsity": c["sparsity"] if c["sparsity"] > 0 else None,
                                     "bits": grid_bits(c["bits"])} for n, c in config.layers.items()},
                exclude=[n for n in layers if n not in config.layers],
                scale_fit="std" if config.quantizer == "std" else "maxabs")
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
                     loss_fn=js.model.loss, desc="LitE warm-up", progress=progress)
        if epochs:
            finetune(D.ddp_wrap(js.model), train_loader, opt, epochs=epochs, hooks=[js],
                     loss_fn=js.model.loss, desc="LitE search", progress=progress)
        cfg = js.decode()
    finally:
        js.remove()
    admm = apply_config(model, cfg, train_loader, epochs=finetune_epochs, lr=lr, progress=progress)
    return cfg, admm
