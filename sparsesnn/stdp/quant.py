"""tinySNN on its own setting: quantized STDP learning, post-training quantization, and the
precision x rounding x scheme exploration that returns the smallest network meeting an
accuracy target, with memory and energy of both phases.

Schemes: ``"in"`` trains with every STDP update (and weight normalization, and threshold
adaptation) rounded onto the low-precision grid (the kernel rounds in place); ``"post"`` trains
in fp32 and rounds the learned weights and parameters afterwards. Roundings: truncation,
nearest, stochastic (:mod:`sparsesnn.fixed_point`).

Conventions (as :mod:`sparsesnn.metrics`): memory is the real byte count of packed weights
(``ceil(K * N * bits / 8)``) plus the learned thresholds and the scalar neuron parameters at
their precision; energy is an *estimate* with 0.9 pJ per accumulate and 4.6 pJ per
multiply-accumulate (32-bit, 45 nm), not scaled down for fewer bits, so a quantized model's
energy figure is an upper bound and the saving shows in memory. Training energy counts the
forward accumulates, the event-driven STDP updates (one MAC each) and the normalization (one
MAC per synapse per sample); inference energy counts the forward accumulates. Membrane and
trace state are simulated in fp32 in both schemes (not quantized here).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict
from typing import Iterable, Optional, Sequence

import torch
from torch import Tensor

from ..fixed_point import ROUNDINGS
from ..metrics import E_AC_PJ, E_MAC_PJ, ENERGY_NOTE
from .network import DiehlCookNetwork, QuantSettings, STDPConfig, fmt_round

__all__ = ["parameter_memory", "quantize_after_training", "train", "explore", "SCALAR_PARAMS"]

SCALAR_PARAMS = 6  # decay_v, decay_pre, decay_post, v_th, theta_plus, w_inh


def parameter_memory(net: DiehlCookNetwork) -> dict[str, float]:
    """Bytes of what the network stores: packed weights, learned thresholds, scalar params."""
    K, N = net.n_in, net.config.n_exc
    wb = 32 if net.quant is None else net.quant.weight_bits
    pb = 32 if net.quant is None else net.quant.param_bits
    weights = math.ceil(K * N * wb / 8)
    theta = math.ceil(N * pb / 8)
    params = math.ceil(SCALAR_PARAMS * pb / 8)  # binary points are design constants, as fp32's format
    return {"weight_bytes": weights, "theta_bytes": theta, "param_bytes": params,
            "memory_bytes": weights + theta + params, "fp32_bytes": 4 * (K * N + N + SCALAR_PARAMS)}


def quantize_after_training(net: DiehlCookNetwork, quant: QuantSettings) -> DiehlCookNetwork:
    """A copy of a trained fp32 network with weights, thresholds and parameters rounded."""
    q = net.clone(quant=quant)
    fmt = q.theta_format()
    q.weight_t = fmt_round(q.weight_t, quant.weight_step(net.config.w_max), 0.0, net.config.w_max,
                           fmt, 0).contiguous()
    q.theta = fmt.quantize(q.theta, index_offset=net.n_in * net.config.n_exc).clamp_min(0)
    return q


def train(x: Tensor, config: STDPConfig = STDPConfig(), *, seed: int = 0,
          quant: Optional[QuantSettings] = None) -> DiehlCookNetwork:
    """Train a network on ``x [n, n_in]`` (``quant``: in-training quantization)."""
    net = DiehlCookNetwork(int(x.shape[1]), config, seed=seed, quant=quant)
    return net.fit(x)


def phase_costs(net: DiehlCookNetwork, train_net: DiehlCookNetwork, x_eval: Tensor) -> dict[str, float]:
    """Per-sample operations and energy estimate of training (from ``train_net``'s counters)
    and of inference (from ``net``'s responses to ``x_eval``); memory of both phases."""
    st = train_net.stats
    n = max(st.samples, 1)
    K, N = net.n_in, net.config.n_exc
    train_ac = st.synops / n
    train_mac = (st.stdp_updates + st.norm_updates) / n
    counts = net.responses(x_eval, seed=3)
    s_in = net._encode(x_eval, net.config.rate, 0)  # same code the evaluation draws from
    infer_ac = float(s_in.sum()) * N / x_eval.shape[0]
    mem = parameter_memory(net)
    state_bytes = 4 * (2 * N + K)  # membrane + post traces + pre traces, fp32
    return {"train_ac_per_sample": train_ac, "train_mac_per_sample": train_mac,
            "train_energy_uj_per_sample": (train_ac * E_AC_PJ + train_mac * E_MAC_PJ) * 1e-6,
            "infer_ac_per_sample": infer_ac,
            "infer_energy_uj_per_sample": infer_ac * E_AC_PJ * 1e-6,
            "infer_spikes_per_sample": float(counts.sum(1).mean()),
            "train_memory_bytes": mem["memory_bytes"] + state_bytes,
            "infer_memory_bytes": mem["memory_bytes"] + 4 * N,  # + membrane
            **mem}


def _evaluate(net: DiehlCookNetwork, assign: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor],
              test: tuple[Tensor, Tensor]) -> dict[str, float]:
    net.assign(*assign)
    return {"val_acc": net.accuracy(*val, seed=4), "test_acc": net.accuracy(*test)}


def explore(fp32_net: DiehlCookNetwork, x_train: Tensor, assign: tuple[Tensor, Tensor],
            val: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], *,
            weight_bits: Sequence[int] = (8, 6, 4, 3), param_bits: int = 8,
            roundings: Iterable[str] = ("truncate", "nearest", "stochastic"),
            schemes: Iterable[str] = ("post", "in"), max_drop: float = 0.01,
            progress: bool = False) -> dict:
    """Every (weight bits, rounding, scheme); the smallest model whose *validation* accuracy
    is within ``max_drop`` of the fp32 network's. Returns ``{"fp32": ..., "records": [...],
    "models": [networks, parallel to records], "best": record or None, "energy_note": ...}``;
    test accuracy is reported, not selected on."""
    for r in roundings:
        if r not in ROUNDINGS:
            raise ValueError(f"roundings: expected values in {tuple(ROUNDINGS)}, got {r!r}")
    for s in schemes:
        if s not in ("post", "in"):
            raise ValueError(f"schemes: expected values in ('post', 'in'), got {s!r}")
    base = {"scheme": "fp32", "weight_bits": 32, "param_bits": 32, "rounding": "-",
            **_evaluate(fp32_net, assign, val, test), **phase_costs(fp32_net, fp32_net, test[0])}
    records, models = [], []
    for scheme in schemes:
        for bits in weight_bits:
            for rounding in roundings:
                q = QuantSettings(bits, param_bits, rounding, seed=fp32_net.seed)
                t0 = time.perf_counter()
                if scheme == "post":
                    net = quantize_after_training(fp32_net, q)
                    trained = fp32_net  # training ran in fp32
                else:
                    net = train(x_train, fp32_net.config, seed=fp32_net.seed, quant=q)
                    trained = net
                rec = {"scheme": scheme, "weight_bits": bits, "param_bits": param_bits,
                       "rounding": rounding, **_evaluate(net, assign, val, test),
                       **phase_costs(net, trained, test[0]),
                       "seconds": time.perf_counter() - t0}
                records.append(rec)
                models.append(net)
                if progress:
                    print(f"  {scheme:4s} w{bits} p{param_bits} {rounding:10s} val {rec['val_acc']:.3f} "
                          f"test {rec['test_acc']:.3f} mem {rec['memory_bytes']} B", flush=True)
    ok = [r for r in records if r["val_acc"] >= base["val_acc"] - max_drop]
    best = min(ok, key=lambda r: (r["memory_bytes"], -r["val_acc"])) if ok else None
    return {"fp32": base, "records": records, "models": models, "best": best, "max_drop": max_drop,
            "config": asdict(fp32_net.config), "energy_note": ENERGY_NOTE}
