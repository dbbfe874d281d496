"""A Diehl & Cook (2015)-style unsupervised STDP network, with direct lateral inhibition.

Input: Poisson spike trains of the pixels (``sparsesnn.encode.poisson``), all-to-all plastic
synapses onto ``n_exc`` excitatory LIF neurons with adaptive thresholds (``theta`` grows by
``theta_plus`` at each spike). Lateral inhibition is *direct* (tinySNN's operation reduction):
a spike lowers the membrane of every other excitatory neuron by ``w_inh`` instead of going
through a separate inhibitory layer. Learning is trace-based pair STDP on the compiled
event-driven kernel (:func:`sparsesnn.stdp.stdp_update_`), one sample at a time, followed by
normalizing each neuron's incoming weights to sum ``norm``. After training, each neuron is
labelled with the class it responds to most (:func:`assign_labels`) and a sample is classified
by the class whose neurons spike most on average (:func:`predict`).

Time is in steps (``dt`` = one step); decays are per-step factors ``exp(-1/tau)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor

from .. import _ext, encode
from ..fixed_point import FixedPoint
from . import reference

__all__ = ["STDPConfig", "QuantSettings", "DiehlCookNetwork", "assign_labels", "predict"]


@dataclass(frozen=True)
class QuantSettings:
    """Quantization of the learning (tinySNN): weights on a ``weight_bits`` unsigned grid over
    ``[0, w_max]``, every STDP update and normalization rounded with ``rounding``; neuron
    parameters (threshold, adaptation, leak and trace decays, inhibition) and the learned
    thresholds ``theta`` as ``param_bits`` fixed-point numbers, each parameter with its own
    binary point fitted to its range (:meth:`format_for`)."""

    weight_bits: int = 8
    param_bits: int = 8
    rounding: str = "nearest"
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.weight_bits, bool) or not isinstance(self.weight_bits, int) \
                or not 1 <= self.weight_bits <= 16:
            raise ValueError(f"weight_bits: expected an integer in [1, 16], got {self.weight_bits!r}")
        self.format_for(1.0)  # validates param_bits, rounding, seed

    def format_for(self, max_abs: float, rounding: Optional[str] = None) -> FixedPoint:
        """``param_bits`` fixed point whose integer part holds ``max_abs`` (sign bit included)."""
        int_bits = max(0, math.floor(math.log2(max_abs)) + 1) if max_abs > 0 else 0
        frac = min(30, max(0, self.param_bits - 1 - int_bits))
        return FixedPoint(self.param_bits, frac, rounding or self.rounding, self.seed)

    def weight_step(self, w_max: float) -> float:
        return w_max / (2 ** self.weight_bits - 1)


@dataclass(frozen=True)
class STDPConfig:
    """Settings of the network and its learning (defaults: tuned for 8x8 digits)."""

    n_exc: int = 400
    T: int = 64                 # steps per presentation
    rate: float = 0.3           # spike probability per step of a pixel at intensity 1
    rate_boost: float = 0.15    # added per retry when a sample drives too few spikes
    min_spikes: int = 3
    max_tries: int = 3
    tau_v: float = 16.0
    v_th: float = 8.0
    v_reset: float = 0.0
    v_min: float = -4.0         # floor of the membrane (inhibition cannot push it lower)
    theta_plus: float = 0.1
    w_inh: float = 8.0
    tau_pre: float = 8.0
    tau_post: float = 8.0
    eta_pre: float = 0.001
    eta_post: float = 0.01
    w_max: float = 1.0
    norm: float = 8.0           # sum of each neuron's incoming weights after every sample
    epochs: int = 1

    def __post_init__(self) -> None:
        for name in ("n_exc", "T", "max_tries", "epochs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {v!r}")
        for name in ("rate", "tau_v", "v_th", "tau_pre", "tau_post", "w_max", "norm"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{name}: expected a finite number > 0, got {v!r}")
        if not 0 < self.rate <= 1:
            raise ValueError(f"rate: expected a spike probability in (0, 1], got {self.rate}")


@dataclass
class _Params:
    """Scalar neuron parameters as the simulation uses them (possibly on a fixed-point grid)."""

    decay_v: float
    decay_pre: float
    decay_post: float
    v_th: float
    theta_plus: float
    w_inh: float


@dataclass
class TrainStats:
    """Operation counts of training (per sample averages are derived by the caller)."""

    samples: int = 0
    steps: int = 0
    input_spikes: int = 0
    synops: int = 0            # accumulates of the forward pass (input spikes x fan-out)
    stdp_updates: int = 0      # synapse updates of the learning rule (event-driven)
    norm_updates: int = 0      # weight rescalings of the normalization
    output_spikes: int = 0
    extra: dict = field(default_factory=dict)


class DiehlCookNetwork:
    """Excitatory layer ``[n_in -> n_exc]`` with adaptive thresholds and direct inhibition.

    ``weight_t [n_in, n_exc]`` (input-major, as the event-driven kernels store it), ``theta
    [n_exc]``, ``labels [n_exc]`` after :meth:`assign`. ``quant`` quantizes the learning itself.
    """

    def __init__(self, n_in: int, config: STDPConfig = STDPConfig(), *, seed: int = 0,
                 quant: Optional[QuantSettings] = None) -> None:
        if isinstance(n_in, bool) or not isinstance(n_in, int) or n_in < 1:
            raise ValueError(f"n_in: expected an integer >= 1, got {n_in!r}")
        self.n_in, self.config, self.seed, self.quant = n_in, config, int(seed), quant
        g = torch.Generator().manual_seed(self.seed)
        w = torch.rand(n_in, config.n_exc, generator=g) * 0.3 * config.w_max
        self.weight_t = w.contiguous()
        self.theta = torch.zeros(config.n_exc)
        self.labels: Optional[Tensor] = None
        self.params = self._params()
        self._normalize()
        self.stats = TrainStats()

    # -- parameters -------------------------------------------------------------------------
    def _params(self) -> _Params:
        c = self.config
        p = _Params(math.exp(-1.0 / c.tau_v), math.exp(-1.0 / c.tau_pre), math.exp(-1.0 / c.tau_post),
                    c.v_th, c.theta_plus, c.w_inh)
        if self.quant is not None:
            q = self.quant
            p = _Params(*(q.format_for(abs(v)).quantize_value(v) for v in (
                p.decay_v, p.decay_pre, p.decay_post, p.v_th, p.theta_plus, p.w_inh)))
        return p

    def theta_format(self) -> FixedPoint:
        """Format of the learned thresholds: room for twice the base threshold."""
        assert self.quant is not None
        return self.quant.format_for(2.0 * self.config.v_th)

    def _round_weights(self, w: Tensor, offset: int) -> Tensor:
        """Weights onto the ``weight_bits`` grid (training-time rounding of the normalization)."""
        q = self.quant
        if q is None:
            return w.clamp(0.0, self.config.w_max)
        fmt = FixedPoint(32, 0, q.rounding, q.seed)  # only its rounding is used: grid below
        step = q.weight_step(self.config.w_max)
        return fmt_round(w, step, 0.0, self.config.w_max, fmt, offset)

    def _round_theta(self, offset: int) -> None:
        if self.quant is not None:
            self.theta = self.theta_format().quantize(self.theta, index_offset=offset).clamp_min(0)

    def _normalize(self, offset: int = 0) -> None:
        col = self.weight_t.sum(0, keepdim=True).clamp_min(1e-12)
        self.weight_t = self._round_weights(self.weight_t * (self.config.norm / col), offset).contiguous()

    # -- simulation -------------------------------------------------------------------------
    def _encode(self, x: Tensor, rate: float, seed: int) -> Tensor:
        return encode.bernoulli((x * rate).clamp(0, 1), self.config.T, seed=seed)

    @torch.no_grad()
    def responses(self, x: Tensor, *, seed: int = 0) -> Tensor:
        """Spike counts ``[B, n_exc]`` of a frozen network (no learning, theta fixed) for
        inputs ``x [B, n_in]`` in [0, 1]; samples below ``min_spikes`` are re-presented with
        a higher rate, as in training."""
        x = _check_input(x, self.n_in)
        c = self.config
        counts = torch.zeros(x.shape[0], c.n_exc)
        todo = torch.arange(x.shape[0])
        for attempt in range(c.max_tries):
            if todo.numel() == 0:
                break
            s_in = self._encode(x[todo], c.rate + attempt * c.rate_boost, seed * 7919 + attempt)
            counts[todo] = self._run_frozen(s_in)
            todo = todo[counts[todo].sum(1) < c.min_spikes]
        return counts

    def _run_frozen(self, s_in: Tensor) -> Tensor:
        p, c = self.params, self.config
        B = s_in.shape[1]
        v = torch.full((B, c.n_exc), c.v_reset)
        th = p.v_th + self.theta
        counts = torch.zeros(B, c.n_exc)
        drive = (s_in.reshape(-1, self.n_in) @ self.weight_t).reshape(c.T, B, c.n_exc)
        for t in range(c.T):
            v = c.v_reset + (v - c.v_reset) * p.decay_v + drive[t]
            s = (v >= th).float()
            counts += s
            v = torch.where(s > 0, torch.full_like(v, c.v_reset), v)
            v = (v - p.w_inh * (s.sum(1, keepdim=True) - s)).clamp_min(c.v_min)
        return counts

    @torch.no_grad()
    def train_sample(self, x: Tensor, seed: int) -> Tensor:
        """Present one sample ``x [n_in]`` with learning on; returns its spike counts ``[n_exc]``."""
        c = self.config
        for attempt in range(c.max_tries):
            s_in = self._encode(x[None], c.rate + attempt * c.rate_boost, seed * 7919 + attempt)[:, 0]
            counts = self._learn(s_in, seed * 16 + attempt)
            if counts.sum() >= c.min_spikes:
                break
        return counts

    def _learn(self, s_in: Tensor, seed: int) -> Tensor:
        """All ``T`` steps of one sample with learning: the compiled loop when built."""
        if not _ext.available():
            return self._learn_reference(s_in, seed)
        p, c, q = self.params, self.config, self.quant
        prm = _ext._C.StdpPresentParams()
        prm.T = c.T
        prm.stdp = self._stdp_params(seed)
        prm.decay_v, prm.decay_pre, prm.decay_post = p.decay_v, p.decay_pre, p.decay_post
        prm.v_th, prm.v_reset, prm.v_min = p.v_th, c.v_reset, c.v_min
        prm.theta_plus, prm.w_inh = p.theta_plus, p.w_inh
        if q is not None:
            fmt = self.theta_format()
            prm.theta_step, prm.theta_lo, prm.theta_hi = fmt.step, fmt.min, fmt.max
            prm.theta_rounding, prm.theta_seed, prm.theta_offset = fmt.mode, fmt.seed, seed * c.T
        s_in = s_in.contiguous()
        counts = torch.empty(c.n_exc)
        n_in, n_out, n_upd = _ext._C.stdp_present_cpu(prm, self.weight_t.data_ptr(), self.theta.data_ptr(),
                                                      s_in.data_ptr(), counts.data_ptr())
        st = self.stats
        st.input_spikes += n_in
        st.output_spikes += n_out
        st.stdp_updates += n_upd
        st.steps += c.T
        return counts

    def _stdp_params(self, seed: int):
        c, q = self.config, self.quant
        prm = _ext._C.StdpParams()
        prm.K, prm.N = self.n_in, c.n_exc
        prm.eta_pre, prm.eta_post, prm.w_min, prm.w_max = c.eta_pre, c.eta_post, 0.0, c.w_max
        prm.step = q.weight_step(c.w_max) if q is not None else 0.0
        prm.rounding = {"nearest": 0, "truncate": 1, "stochastic": 2}[q.rounding] if q is not None else 0
        prm.seed = self._seed_base(seed)
        prm.threads = 1
        return prm

    def _seed_base(self, seed: int) -> int:
        return ((self.quant.seed if self.quant is not None else 0) * 1_000_003 + seed * 4099) & 0xFFFFFFFF

    def _learn_reference(self, s_in: Tensor, seed: int) -> Tensor:
        """The step loop in PyTorch (reference of the compiled ``stdp_present_cpu``)."""
        p, c, st = self.params, self.config, self.stats
        n = c.n_exc
        v = torch.full((n,), c.v_reset)
        x_pre, x_post = torch.zeros(self.n_in), torch.zeros(n)
        counts = torch.zeros(n)
        kernel = self._kernel_call(seed)
        active = (s_in.sum(1) > 0).tolist()
        for t in range(c.T):
            s_pre = s_in[t]
            drive = s_pre @ self.weight_t if active[t] else 0.0
            v = c.v_reset + (v - c.v_reset) * p.decay_v + drive
            s = (v >= p.v_th + self.theta).float()
            x_pre = torch.maximum(x_pre * p.decay_pre, s_pre)
            x_post = torch.maximum(x_post * p.decay_post, s)
            n_spk = float(s.sum())
            if n_spk:
                counts += s
                v = torch.where(s > 0, torch.full_like(v, c.v_reset), v)
                v = (v - p.w_inh * (n_spk - s)).clamp_min(c.v_min)
                self.theta = self.theta + p.theta_plus * s
                self._round_theta(seed * c.T + t)
            if active[t] or n_spk:
                st.stdp_updates += kernel(s_pre, s, x_pre, x_post, t)
            st.input_spikes += int(s_pre.sum())
            st.output_spikes += int(n_spk)
        st.steps += c.T
        return counts

    def _kernel_call(self, seed: int):
        """One STDP update per step for the reference loop (the kernel when built)."""
        c, q = self.config, self.quant
        step = q.weight_step(c.w_max) if q is not None else 0.0
        mode = {"nearest": 0, "truncate": 1, "stochastic": 2}[q.rounding] if q is not None else 0
        base = self._seed_base(seed)
        if _ext.available():
            prm = self._stdp_params(seed)

            def call(pre: Tensor, post: Tensor, xp: Tensor, xq: Tensor, t: int) -> int:
                prm.seed = (base + t) & 0xFFFFFFFF
                return int(_ext._C.stdp_update_cpu(prm, self.weight_t.data_ptr(), pre.data_ptr(),
                                                   post.data_ptr(), xp.data_ptr(), xq.data_ptr()))
            return call

        def ref(pre: Tensor, post: Tensor, xp: Tensor, xq: Tensor, t: int) -> int:
            return reference.stdp_update(self.weight_t, pre, post, xp, xq, eta_pre=c.eta_pre,
                                         eta_post=c.eta_post, w_min=0.0, w_max=c.w_max, step=step,
                                         rounding=mode, seed=(base + t) & 0xFFFFFFFF)
        return ref

    @torch.no_grad()
    def fit(self, x: Tensor, *, progress: bool = False) -> "DiehlCookNetwork":
        """Unsupervised training on ``x [n, n_in]`` (labels are not used), ``epochs`` passes in
        a seeded random order."""
        x = _check_input(x, self.n_in)
        g = torch.Generator().manual_seed(self.seed + 1)
        k = 0
        for _ in range(self.config.epochs):
            for i in torch.randperm(x.shape[0], generator=g).tolist():
                self.train_sample(x[i], seed=self.seed * 1_000_000 + k)
                self._normalize(offset=(k + 1) * self.n_in * self.config.n_exc)
                self.stats.samples += 1
                self.stats.norm_updates += self.n_in * self.config.n_exc
                k += 1
        self.stats.synops = self.stats.input_spikes * self.config.n_exc
        return self

    def assign(self, x: Tensor, y: Tensor, *, seed: int = 1) -> Tensor:
        """Label each neuron from the frozen network's responses to labelled ``x``."""
        self.labels = assign_labels(self.responses(x, seed=seed), y)
        return self.labels

    def accuracy(self, x: Tensor, y: Tensor, *, seed: int = 2) -> float:
        if self.labels is None:
            raise ValueError("labels: call assign(x, y) before accuracy()")
        return float((predict(self.responses(x, seed=seed), self.labels) == y).float().mean())

    def clone(self, **changes) -> "DiehlCookNetwork":
        """A copy sharing nothing (``changes`` replace attributes such as ``quant``)."""
        net = DiehlCookNetwork.__new__(DiehlCookNetwork)
        net.__dict__.update({k: (v.clone() if isinstance(v, Tensor) else v) for k, v in self.__dict__.items()})
        net.stats = TrainStats()
        net.__dict__.update(changes)
        net.params = net._params()
        return net


def fmt_round(w: Tensor, step: float, lo: float, hi: float, fmt: FixedPoint, offset: int) -> Tensor:
    """``w`` onto the grid ``step * k`` in ``[lo, hi]`` with ``fmt``'s rounding (stochastic noise
    indexed by flat position + ``offset``)."""
    from ..fixed_point import hash_uniform, round_to_grid
    u = None
    if fmt.rounding == "stochastic":
        idx = torch.arange(w.numel(), dtype=torch.int64) + offset
        u = hash_uniform(fmt.seed, idx).reshape(w.shape)
    return round_to_grid(w.float(), step, lo, hi, fmt.mode, u)


def _check_input(x: object, n_in: int) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ValueError(f"x: expected a floating-point torch.Tensor, got {type(x).__name__}")
    if x.dim() == 1:
        x = x[None]
    if x.dim() != 2 or x.shape[1] != n_in:
        raise ValueError(f"x: expected shape [B, {n_in}], got {tuple(x.shape)}")
    if x.numel() and (bool((x < 0).any()) or bool((x > 1).any())):
        raise ValueError("x: expected values in [0, 1]")
    return x.float()


def assign_labels(responses: Tensor, y: Tensor, n_classes: Optional[int] = None) -> Tensor:
    """Label of each neuron: the class with the highest mean response. ``responses [n, N]``,
    ``y [n]`` -> ``[N]`` int64."""
    if responses.dim() != 2 or y.shape != (responses.shape[0],):
        raise ValueError(f"responses, y: expected [n, N] and [n], got {tuple(responses.shape)} and {tuple(y.shape)}")
    n_classes = int(y.max()) + 1 if n_classes is None else n_classes
    means = torch.zeros(n_classes, responses.shape[1])
    for c in range(n_classes):
        sel = y == c
        if sel.any():
            means[c] = responses[sel].float().mean(0)
    return means.argmax(0)


def predict(responses: Tensor, labels: Tensor, n_classes: Optional[int] = None) -> Tensor:
    """Class per sample: the one whose labelled neurons spike most on average. ``[n, N]`` -> ``[n]``."""
    n_classes = int(labels.max()) + 1 if n_classes is None else n_classes
    votes = torch.full((responses.shape[0], n_classes), -1.0)
    for c in range(n_classes):
        sel = labels == c
        if sel.any():
            votes[:, c] = responses[:, sel].float().mean(1)
    return votes.argmax(1)
