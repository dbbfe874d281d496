"""tinySNN-style quantization (Putra & Shafique, "tinySNN: Towards Memory- and Energy-Efficient
Spiking Neural Networks"): weights *and* neuron parameters / membrane state in fixed point,
post-training vs in-training quantization, precision levels, rounding schemes, and a design
space exploration returning the memory/accuracy Pareto front and the smallest model that meets
an accuracy constraint.

- Weights: per-channel two's-complement integer codes, as fixed point stores them
  (``sparsesnn.quant`` with ``full_range=True``: 8, 4 and 2 bits use all ``2^k`` codes
  ``[-2^(k-1), 2^(k-1) - 1]``, so 2-bit weights have four levels -2, -1, 0, 1 times the
  scale), the scale fitted per channel by least squares on that grid (5 alternating rounds);
  ternary and binary as the packed kernels run them; each ``w / scale`` rounded with the chosen
  scheme. Or fixed-point Qm.n at any precision (:func:`quantize_weights_fixed`, scale
  ``2^-n``, codes ``[-2^(m+n), 2^(m+n) - 1]``).
- Neurons: :class:`sparsesnn.FixedPoint` with ``bits`` total and ``bits - 1 - int_bits``
  fraction bits; ``neuron.quantize_state(fmt)`` puts threshold, reset and decay on the grid and
  makes the LIF kernel round the membrane potential every step with the same rounding.
- Rounding: ``truncate`` (toward zero), ``nearest``, ``stochastic`` (``floor(x + u)``,
  ``u ~ U[0, 1)``: unbiased in expectation).
- Post-training (``mode='post'``): quantize a trained model once. In-training (``mode='in'``,
  the paper's): the weights live on the grid; every optimizer update is rounded back onto the
  grid (fixed scale) with the chosen rounding -- no full-precision copy is kept, so with
  ``nearest`` an update smaller than half a step is lost and ``stochastic`` keeps it in
  expectation. Quantization-aware training (``mode='qat'``, the old ``'in'`` here): the
  optimizer updates a float shadow copy (straight-through) re-quantized after every step.
- Stochastic rounding of the neuron state draws fresh noise on every forward pass (the seed
  of each neuron's fixed-point format advances per call), not the same noise each time.

Memory counted (batch 1): the bytes ``sparsesnn.deploy.deploy`` stores for the synaptic
layers (packed codes, fp32 scales, biases, in the layout deploy picks) + membrane state (one
value per neuron) + neuron parameters (threshold, reset, decay) per layer, at their storage
precision. A quantized model deploys with ``sparsesnn.deploy.deploy``.
"""
from __future__ import annotations

import copy
import itertools
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from ..fixed_point import FixedPoint
from ..ops._checks import check_finite, check_positive_int
from ..quant import QuantSpec, dequantize, quantize, round_values
from . import distributed as D
from .activity import neuron_layers
from .state import CompressionState, compressible_layers, get_state, set_state
from ._finetune import finetune
from .train import evaluate

__all__ = ["ROUNDINGS", "WEIGHT_PRECISIONS", "MODES", "check_rounding", "QuantConfig",
           "state_format", "fit_scale", "quantize_weights", "quantize_weights_fixed", "quantize_neurons", "InTrainingQuantizer",
           "apply_config", "memory_bytes", "pareto_front", "smallest_meeting", "explore",
           "Exploration"]

ROUNDINGS = ("truncate", "nearest", "stochastic")
WEIGHT_PRECISIONS = (8, 4, 2, "ternary", "binary", None)  # None: fp32 weights
MODES = ("post", "in", "qat")


def check_rounding(rounding: object) -> str:
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding: expected one of {ROUNDINGS}, got {rounding!r}")
    return rounding  # type: ignore[return-value]


def _check_weight_bits(bits: object) -> Any:
    if isinstance(bits, bool) or bits not in WEIGHT_PRECISIONS:
        raise ValueError(f"weight_bits: expected one of {WEIGHT_PRECISIONS}, got {bits!r}")
    return bits


def _check_state_bits(bits: object, int_bits: int) -> Any:
    if bits is None:
        return None
    if isinstance(bits, bool) or not isinstance(bits, int) or not int_bits + 2 <= bits <= 32:
        raise ValueError(f"state_bits: expected None or an integer in [{int_bits + 2}, 32] "
                         f"(sign + {int_bits} integer bits + >= 1 fraction bit), got {bits!r}")
    return bits


@dataclass(frozen=True)
class QuantConfig:
    """One point of the design space.

    weight_bits: 8 | 4 | 2 | 'ternary' | 'binary' | None (fp32).
    state_bits: total bits of the membrane state / neuron parameters, or None (fp32).
    rounding: 'truncate' | 'nearest' | 'stochastic' (weights and state).
    mode: 'post' (post-training) | 'in' (in-training: weights on the grid, updates rounded) |
        'qat' (fine-tuned with a float shadow copy, straight-through).
    int_bits: integer bits of the fixed-point state (range about +-2**int_bits).
    """

    weight_bits: Any = 8
    state_bits: Any = 16
    rounding: str = "nearest"
    mode: str = "post"
    int_bits: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        _check_weight_bits(self.weight_bits)
        check_positive_int("int_bits", self.int_bits, minimum=0)
        _check_state_bits(self.state_bits, self.int_bits)
        check_rounding(self.rounding)
        if self.mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {self.mode!r}")

    def label(self) -> str:
        w = "fp32" if self.weight_bits is None else f"w{self.weight_bits}"
        s = "fp32" if self.state_bits is None else f"s{self.state_bits}"
        return f"{w}/{s}/{self.rounding}/{self.mode}"


def state_format(bits: int, int_bits: int = 3, rounding: str = "nearest", seed: int = 0) -> FixedPoint:
    """Fixed-point format with ``bits`` total: sign + ``int_bits`` + ``bits - 1 - int_bits`` fraction."""
    check_rounding(rounding)
    _check_state_bits(bits, int_bits)
    return FixedPoint(bits, bits - 1 - int_bits, rounding, seed)


def _spec(bits: Any, rounding: str, seed: int | None) -> QuantSpec:
    """Per-channel spec; integer grids in full two's complement (int2: four levels)."""
    return QuantSpec(bits=bits, per_channel=True, rounding=rounding, seed=seed,
                     full_range=isinstance(bits, int))


def fit_scale(w2: torch.Tensor, bits: Any, iters: int = 5) -> torch.Tensor | None:
    """Per-row scale ``[N]`` of the two's-complement grid ``s * [-2^(k-1), 2^(k-1) - 1]`` for
    ``w2`` ``[N, K]``: start at the scale that clips neither side, then ``iters`` rounds of
    ``q = clamp(round(w / s))``, ``s = <w, q> / <q, q>`` (least squares; uses every level, where
    the no-clip scale leaves the lowest one nearly empty). None for ternary/binary."""
    if not isinstance(bits, int):
        return None
    spec = _spec(bits, "nearest", None)
    _, s = quantize(w2, spec)
    for _ in range(iters):
        q = torch.clamp(torch.round(w2 / s[:, None]), spec.qmin, spec.qmax)
        qq = (q * q).sum(1)
        s_new = (w2 * q).sum(1) / qq.clamp_min(1e-30)
        s = torch.where((qq > 0) & (s_new > 0), s_new, s)
    return s.float().contiguous()


@torch.no_grad()
def _quantize_layer(layer: nn.Module, latent: torch.Tensor, bits: Any, rounding: str,
                    seed: int | None) -> None:
    w2 = latent.reshape(latent.shape[0], -1).float()
    codes, scale = quantize(w2, _spec(bits, rounding, seed), scale=fit_scale(w2, bits))
    layer.weight.copy_(dequantize(codes, scale).reshape(layer.weight.shape).to(layer.weight.dtype))
    # deploy re-quantizes weights that are already on the grid with this scale: nearest is exact
    set_state(layer, CompressionState(mask=None, spec=_spec(bits, "nearest", None),
                                      scale=scale.reshape(-1).float(), sparsity=None))


def quantize_weights(model: nn.Module, bits: Any, rounding: str = "nearest", seed: int = 0,
                     layers: Iterable[str] | None = None) -> dict[str, nn.Module]:
    """Quantize the synaptic layers' weights in place (post-training); returns the layers."""
    _check_weight_bits(bits)
    check_rounding(rounding)
    chosen = _layers(model, layers)
    if bits is None:
        return chosen
    for i, (name, layer) in enumerate(chosen.items()):
        _quantize_layer(layer, layer.weight.detach().clone(), bits, rounding, seed + i)
    return chosen


def quantize_weights_fixed(model: nn.Module, int_bits: int, frac_bits: int,
                           rounding: str = "nearest", seed: int = 0,
                           layers: Iterable[str] | None = None) -> dict[str, nn.Module]:
    """Fixed-point Qm.n weights at any precision (post-training, in place): every weight
    becomes ``k * 2^-n`` with ``-2^(m+n) <= k <= 2^(m+n) - 1`` (two's complement: sign + ``m``
    integer + ``n`` fraction bits; Q0.1 is the four-level 2-bit grid -1, -0.5, 0, 0.5),
    rounded with ``rounding``. With ``1 + m + n <= 8`` the layers deploy as packed
    int2/int4/int8 codes (scale ``2^-n``); wider formats keep fp32 values on the grid.
    Returns the layers."""
    check_rounding(rounding)
    m_ = check_positive_int("int_bits", int_bits, minimum=0)
    n_ = check_positive_int("frac_bits", frac_bits, minimum=0)
    total = 1 + m_ + n_
    if total > 32:
        raise ValueError(f"int_bits + frac_bits: expected at most 31 bits, got {m_} + {n_}")
    container = next((b for b in (2, 4, 8) if total <= b), None)
    kmin, kmax = -(2 ** (m_ + n_)), 2 ** (m_ + n_) - 1
    chosen = _layers(model, layers)
    with torch.no_grad():
        for i, layer in enumerate(chosen.values()):
            w = layer.weight.detach().float() * 2.0 ** n_
            k = round_values(w.reshape(w.shape[0], -1).contiguous(), rounding, seed + i)
            k = k.reshape(w.shape).clamp(kmin, kmax)
            layer.weight.copy_((k * 2.0 ** -n_).to(layer.weight.dtype))
            if container is not None:
                scale = torch.full((w.shape[0],), 2.0 ** -n_)
                set_state(layer, CompressionState(mask=None, spec=_spec(container, "nearest", None),
                                                  scale=scale, sparsity=None))
    return chosen


def _layers(model: nn.Module, layers: Iterable[str] | None) -> dict[str, nn.Module]:
    wrapped = D.unwrap(model) is not model  # DDP: its layers, names with or without 'module.'
    available = compressible_layers(D.unwrap(model))
    if layers is None:
        return available
    layers = [D.strip_prefix(n, wrapped) for n in layers]
    bad = [n for n in layers if n not in available]
    if bad:
        raise ValueError(f"layers: unknown layer names {bad}; compressible layers are {list(available)}")
    return {n: available[n] for n in layers}


_NOISE_HOOK = "_sparsesnn_fresh_noise"


def _advance_seed(neuron: nn.Module, inputs: Any) -> None:
    """Forward pre-hook: a new stochastic-rounding seed for this call (fresh noise per pass).
    Deterministic (a counter, not the global RNG), so DDP ranks draw the same noise."""
    fmt = neuron.state_quant
    if fmt is not None and fmt.rounding == "stochastic":
        neuron.state_quant = FixedPoint(fmt.bits, fmt.frac_bits, fmt.rounding,
                                        (fmt.seed + 0x9E3779B1) % 2**32)


def quantize_neurons(model: nn.Module, bits: int | None, rounding: str = "nearest",
                     int_bits: int = 3, seed: int = 0, fresh_noise: bool = True) -> FixedPoint | None:
    """Put every LIF/IF/PLIF on a fixed-point state grid (``None``: back to fp32).

    ``fresh_noise`` (stochastic rounding): advance each neuron's seed on every forward call, so
    every pass draws new rounding noise; False keeps one fixed noise pattern (old behaviour).
    """
    check_rounding(rounding)
    neurons = neuron_layers(model)
    fmt = None if bits is None else state_format(bits, int_bits, rounding, seed)
    for i, n in enumerate(neurons.values()):
        # a different seed per layer: independent stochastic rounding noise
        n.quantize_state(None if fmt is None else FixedPoint(fmt.bits, fmt.frac_bits, rounding, seed + i))
        old = n.__dict__.pop(_NOISE_HOOK, None)
        if old is not None:
            old.remove()
        if fmt is not None and rounding == "stochastic" and fresh_noise:
            n.__dict__[_NOISE_HOOK] = n.register_forward_pre_hook(_advance_seed)
    return fmt


class InTrainingQuantizer:
    """Hook for :func:`sparsesnn.compress.fit`: quantized weights in every forward pass.

    ``shadow=True`` (QAT, ``mode='qat'``): float shadow weights updated by the optimizer
    (straight-through), re-quantized after each step (scale refitted). ``shadow=False``
    (in-training, ``mode='in'``): no float copy; after each step the updated weight is rounded
    back onto the grid of the scale fitted at the start, with the chosen rounding.

    Stochastic rounding draws fresh noise every step (seed + step), as in-training stochastic
    rounding does; :meth:`finalize` quantizes the shadow weights once more and fixes them.
    The noise comes from that explicit seed, never the global RNG, so under DDP every rank
    draws the same noise and the quantized weights stay identical.
    """

    def __init__(self, model: nn.Module, bits: Any, rounding: str = "nearest", seed: int = 0,
                 layers: Iterable[str] | None = None, shadow: bool = True) -> None:
        self.bits = _check_weight_bits(bits)
        self.rounding = check_rounding(rounding)
        self.seed = int(seed)
        self.shadow = bool(shadow)
        self.layers = _layers(model, layers)
        self.steps = 0
        self._latent = {n: m.weight.detach().clone() for n, m in self.layers.items()}
        self._last: dict[str, torch.Tensor] = {}
        self._requantize()
        if not self.shadow:
            self._latent.clear()  # in-training: the grid weights are the only copy

    @torch.no_grad()
    def _round_on_grid(self) -> None:
        """In-training: round each updated weight onto its layer's fixed grid."""
        if self.bits is None:
            return
        for i, (name, layer) in enumerate(self.layers.items()):
            st = getattr(layer, "sparsesnn_compression")
            w2 = layer.weight.detach().reshape(layer.weight.shape[0], -1).float()
            spec = _spec(self.bits, self.rounding, self.seed + 7919 * self.steps + i)
            codes, scale = quantize(w2, spec, scale=st.scale)
            layer.weight.copy_(dequantize(codes, scale).reshape(layer.weight.shape).to(layer.weight.dtype))

    @torch.no_grad()
    def _requantize(self) -> None:
        for i, (name, layer) in enumerate(self.layers.items()):
            if self.bits is not None:
                _quantize_layer(layer, self._latent[name], self.bits, self.rounding,
                                self.seed + 7919 * self.steps + i)
            self._last[name] = layer.weight.detach().clone()

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        if not self.shadow:
            self._round_on_grid()
            return
        for name, layer in self.layers.items():
            self._latent[name] += layer.weight.detach() - self._last[name]
        self._requantize()

    def finalize(self) -> None:
        if self.shadow:
            self._requantize()

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Shadow and quantized weights, scales and step count (identical on every rank)."""
        out: dict[str, torch.Tensor] = {"steps": torch.tensor(self.steps)}
        for n, layer in self.layers.items():
            if n in self._latent:
                out[f"{n}.latent"] = self._latent[n]
            out[f"{n}.weight"] = layer.weight.detach()
            st = getattr(layer, "sparsesnn_compression", None)
            if st is not None and st.scale is not None:
                out[f"{n}.scale"] = st.scale
        return out


def apply_config(model: nn.Module, config: QuantConfig, train_loader: Iterable | None = None, *,
                 epochs: int = 1, lr: float = 5e-4, progress: bool = False) -> nn.Module:
    """A quantized copy of ``model`` for ``config`` (in-training mode fine-tunes it)."""
    if not isinstance(config, QuantConfig):
        raise ValueError(f"config: expected a QuantConfig, got {type(config).__name__}")
    m = copy.deepcopy(D.unwrap(model))
    quantize_neurons(m, config.state_bits, config.rounding, config.int_bits, config.seed)
    if config.mode == "post":
        quantize_weights(m, config.weight_bits, config.rounding, config.seed)
        return m
    if train_loader is None:
        raise ValueError(f"train_loader: mode={config.mode!r} (training quantized) needs training data")
    epochs = check_positive_int("epochs", epochs)
    q = InTrainingQuantizer(m, config.weight_bits, config.rounding, config.seed,
                            shadow=config.mode == "qat")
    opt = torch.optim.Adam(m.parameters(), lr=lr)
    # DDP: the copy is trained through its own wrapper, or each rank would fit its own shard
    finetune(D.ddp_wrap(m), train_loader, opt, epochs=epochs, hooks=[q], desc=f"qat {config.label()}",
             progress=progress)
    q.finalize()
    return m


def memory_bytes(model: nn.Module, config: QuantConfig) -> dict[str, float]:
    """Storage of ``model`` under ``config`` (batch 1): the bytes ``deploy`` stores for the
    weights (packed codes, or fp32 values, with the indices of a pruned layout), scales and
    biases, plus neuron state and parameters. A model whose layers are not quantized yet is
    quantized (a copy) with ``config.weight_bits`` first."""
    from ..deploy import deploy  # deploy imports this package: import at call time

    m = D.unwrap(model)
    layers = compressible_layers(m)
    if config.weight_bits is not None and any(get_state(x) is None for x in layers.values()):
        m = copy.deepcopy(m)
        quantize_weights(m, config.weight_bits, "nearest")
    wbytes = sbytes = bbytes = 0.0
    for layer in deploy(m).modules():
        bufs = {n: b for n, b in getattr(layer, "_buffers", {}).items() if n in _PACKED_BUFFERS and b is not None}
        if not bufs or not hasattr(layer, "model_bytes"):
            continue
        size = {n: float(b.numel() * b.element_size()) for n, b in bufs.items()}
        sbytes += size.pop("scale", 0.0)
        bbytes += size.pop("bias", 0.0)
        wbytes += sum(size.values())
    state_bits = 32 if config.state_bits is None else config.state_bits
    n_neurons = _neuron_count(model)
    state = n_neurons * state_bits / 8.0
    params = 3 * len(neuron_layers(model)) * state_bits / 8.0
    total = wbytes + sbytes + bbytes + state + params
    return {"weight_bytes": wbytes, "scale_bytes": sbytes, "bias_bytes": bbytes,
            "state_bytes": state, "param_bytes": params, "memory_bytes": total}


_PACKED_BUFFERS = ("weights", "scale", "bias", "row_ptr", "index", "values")


def _neuron_count(model: nn.Module) -> int:
    """Membrane values per sample: from the last recorded state of each neuron, else the
    width of the synaptic layer right before it (MLP)."""
    total = 0
    last_width = 0
    neurons = {id(m) for m in neuron_layers(model).values()}
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last_width = m.out_features
        if id(m) in neurons:
            v = getattr(m, "v", None)
            total += int(v[0].numel()) if isinstance(v, torch.Tensor) and v.dim() > 0 else last_width
    return total


def pareto_front(records: Sequence[dict], cost: str = "memory_bytes", score: str = "acc") -> list[dict]:
    """Non-dominated records (lower ``cost``, higher ``score``), sorted by cost ascending.

    A record is dominated when another has cost <= and score >= with one strict. Records with
    identical (cost, score) appear once (the first).
    """
    for r in records:
        if cost not in r or score not in r:
            raise ValueError(f"records: every record needs keys {cost!r} and {score!r}, got {sorted(r)}")
    ordered = sorted(range(len(records)), key=lambda i: (records[i][cost], -records[i][score], i))
    front: list[dict] = []
    best = -math.inf
    for i in ordered:
        r = records[i]
        if r[score] > best:  # cheaper ones all score lower: not dominated
            front.append(r)
            best = r[score]
    return front


def smallest_meeting(records: Sequence[dict], min_acc: float, cost: str = "memory_bytes",
                     score: str = "acc") -> dict | None:
    """Cheapest record with ``score >= min_acc`` (ties: higher score), or None."""
    ok = [r for r in records if r[score] >= min_acc]
    if not ok:
        return None
    return min(ok, key=lambda r: (r[cost], -r[score]))


@dataclass
class Exploration:
    records: list[dict] = field(default_factory=list)
    front: list[dict] = field(default_factory=list)
    best: dict | None = None
    best_model: nn.Module | None = None


def explore(model: nn.Module, val_loader: Iterable, train_loader: Iterable | None = None, *,
            weight_bits: Sequence[Any] = (8, 4, 2), state_bits: Sequence[Any] = (16, 8),
            roundings: Sequence[str] = ROUNDINGS, modes: Sequence[str] = ("post", "in"),
            accuracy_constraint: float | None = None, epochs: int = 1, lr: float = 5e-4,
            int_bits: int = 3, seed: int = 0, progress: bool = False) -> Exploration:
    """Evaluate every combination; return records, the Pareto front and the smallest model
    with accuracy >= ``accuracy_constraint`` (an absolute accuracy in [0, 1]; None: the
    smallest on the front). ``best_model`` is that model, quantized (deployable).
    Under torch.distributed every rank must call it (accuracies are all-reduced so all ranks
    pick the same configuration)."""
    for b in weight_bits:
        _check_weight_bits(b)
    for s in state_bits:
        _check_state_bits(s, int_bits)
    for r in roundings:
        check_rounding(r)
    for md in modes:
        if md not in MODES:
            raise ValueError(f"modes: expected values in {MODES}, got {md!r}")
    if accuracy_constraint is not None:
        a = check_finite("accuracy_constraint", accuracy_constraint)
        if not 0.0 <= a <= 1.0:
            raise ValueError(f"accuracy_constraint: expected an accuracy in [0, 1], got {accuracy_constraint!r}")
    if ({"in", "qat"} & set(modes)) and train_loader is None:
        raise ValueError("train_loader: in-training quantization (modes 'in'/'qat') needs training data")
    res = Exploration()
    models: dict[int, nn.Module] = {}
    combos = list(itertools.product(modes, weight_bits, state_bits, roundings))
    for idx, (md, wb, sb, rd) in enumerate(combos):
        cfg = QuantConfig(wb, sb, rd, md, int_bits, seed)
        m = apply_config(model, cfg, train_loader, epochs=epochs, lr=lr, progress=progress)
        # reduce: under DDP the choice of the best model must be the same on every rank
        acc = evaluate(m, val_loader, reduce=True)["acc"]
        rec = {**asdict(cfg), "label": cfg.label(), "acc": acc, **memory_bytes(m, cfg), "index": idx}
        res.records.append(rec)
        cur = smallest_meeting(res.records, accuracy_constraint if accuracy_constraint is not None else -1.0)
        if cur is rec:
            models = {idx: m}  # keep only the current winner's model
    res.front = pareto_front(res.records)
    if accuracy_constraint is None:
        res.best = res.front[0] if res.front else None
        # the smallest front point: rebuild it deterministically unless we kept it
        if res.best is not None and res.best["index"] not in models:
            b = res.best
            cfg = QuantConfig(b["weight_bits"], b["state_bits"], b["rounding"], b["mode"], int_bits, seed)
            models = {b["index"]: apply_config(model, cfg, train_loader, epochs=epochs, lr=lr)}
    else:
        res.best = smallest_meeting(res.records, accuracy_constraint)
    if res.best is not None:
        res.best_model = models.get(res.best["index"])
    return res
