"""ADMM pruning and quantization (Deng et al., TNNLS 2021).

Problem: ``min_W loss(W)  s.t.  W_l in S_l`` for each chosen layer ``l``, where ``S_l`` is the
set of weights with at most ``(1 - sparsity) * numel`` non-zeros, and/or on a k-bit (or
ternary/binary) grid with a fitted per-channel scale. ADMM splits ``W = Z`` and iterates

    W  <- SGD on  loss(W) + rho/2 * ||W - Z + U||^2       (penalty(), every batch)
    Z  <- Proj_S(W + U)                                   (update(), every k steps or epoch)
    U  <- U + W - Z

then ``finalize()`` projects W onto S (hard), fixes the mask and the scale, and the model is
retrained with masked, fake-quantized weights (``step()`` after each optimizer step keeps the
constraints exact via a float shadow copy of the weights: straight-through estimator).

The class does not own the training loop: call ``penalty()`` in the loss, ``step()`` after
``optimizer.step()``, ``epoch_end()`` at the end of an epoch, and ``finalize()`` once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from ..ops._checks import check_greater, check_positive_int
from . import distributed as D
from . import projections as P
from .state import CompressionState, compressible_layers, set_state


@dataclass(frozen=True)
class LayerTarget:
    """Constraint for one layer: ``sparsity`` in [0, 1) and/or ``bits`` (8, 6, 5, 4, 3, 2,
    'ternary', 'binary'; 3/5/6-bit grids are stored in int4/int8 codes)."""

    sparsity: float | None = None
    bits: int | str | None = None
    per_channel: bool = True

    def validate(self, where: str) -> "LayerTarget":
        if self.sparsity is not None:
            P.check_sparsity(f"sparsity ({where})", self.sparsity)
        if self.bits is not None:
            P.check_bits(f"bits ({where})", self.bits)
        return self

    @property
    def active(self) -> bool:
        return (self.sparsity is not None and self.sparsity > 0) or self.bits is not None


def _as_target(name: str, value: Any, per_channel: bool) -> LayerTarget:
    if isinstance(value, LayerTarget):
        return value.validate(name)
    if not isinstance(value, Mapping):
        raise ValueError(f"targets[{name!r}]: expected a dict(sparsity=..., bits=...) or LayerTarget, "
                         f"got {type(value).__name__}")
    unknown = set(value) - {"sparsity", "bits", "per_channel"}
    if unknown:
        raise ValueError(f"targets[{name!r}]: unknown keys {sorted(unknown)}; "
                         "expected sparsity, bits, per_channel")
    return LayerTarget(value.get("sparsity"), value.get("bits"),
                       bool(value.get("per_channel", per_channel))).validate(name)


class ADMM:
    """ADMM compression of the synaptic layers of ``model`` (ours or plain nn.Linear/nn.Conv2d).

    Args:
        model: the network; layers found by :func:`compressible_layers`.
        targets: ``{layer name: {"sparsity": s, "bits": b}}`` per-layer constraints; names must
            be compressible layers of ``model`` (else ValueError naming ``targets``).
        sparsity, bits: defaults for every compressible layer not named in ``targets``
            (and not in ``exclude``).
        exclude: layer names left uncompressed.
        rho: penalty weight (> 0); ``rho_growth`` multiplies it at every ``update()`` up to ``rho_max``.
        update_every: run ``update()`` every this many ``step()`` calls; None = once per epoch
            (``epoch_end()``).
        proximal: if set (in (0, 1]), the penalty is applied decoupled from the optimizer:
            ``step()`` moves ``W <- W - proximal * (W - Z + U)`` (a gradient step on the penalty
            with step ``proximal / rho``) and ``penalty()`` returns 0. Use it with adaptive
            optimizers (Adam), whose per-weight normalization otherwise makes the pull toward Z
            too weak to converge in few steps (as decoupled weight decay in AdamW).
        scale_fit: how the quantization grid's scale is fitted at every projection:
            "maxabs" (default, per-channel ``max|w| / qmax``) or "als" (the paper: one alpha per
            layer by alternating least squares, ``als_iters`` rounds, the authors' 5) or "std"
            (LitE-SNN: step ``STD_STEPS[b] * std(W)`` per layer on the two's-complement grid;
            bits 8, 4, 2 or 'binary').
        structure: what a sparsity target prunes in conv weights: "weights" (default, each
            weight) or "taps" (whole tap rows ``(c, ky, kx)`` across all outputs, by L2 norm:
            the pattern the pruned conv layout skips; unstructured zeros keep the dense layout).
            Linear weights are pruned per weight either way.
    """

    def __init__(self, model: nn.Module, targets: Mapping[str, Any] | None = None, *,
                 sparsity: float | None = None, bits: int | str | None = None,
                 exclude: Iterable[str] = (), per_channel: bool = True, rho: float = 1e-3,
                 rho_growth: float = 1.0, rho_max: float = 1.0,
                 update_every: int | None = None, proximal: float | None = None,
                 scale_fit: str = "maxabs", als_iters: int = 5, structure: str = "weights") -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model: expected an nn.Module, got {type(model).__name__}")
        # under DDP the layers are the wrapped model's; names may come with the 'module.' prefix
        wrapped = D.unwrap(model) is not model
        model = D.unwrap(model)
        self.model = model
        self.rho = check_greater("rho", rho, 0.0)
        self.rho_growth = check_greater("rho_growth", rho_growth, 0.0)
        self.rho_max = check_greater("rho_max", rho_max, 0.0)
        self.update_every = None if update_every is None else check_positive_int("update_every", update_every)
        if proximal is not None:
            proximal = check_greater("proximal", proximal, 0.0)
            if proximal > 1.0:
                raise ValueError(f"proximal: expected a step in (0, 1], got {proximal}")
        self.proximal = proximal
        if scale_fit not in P.SCALE_FITS:
            raise ValueError(f"scale_fit: expected one of {P.SCALE_FITS}, got {scale_fit!r}")
        self.scale_fit = scale_fit
        self.als_iters = check_positive_int("als_iters", als_iters)
        self.structure = P.check_structure("structure", structure)
        if sparsity is not None:
            P.check_sparsity("sparsity", sparsity)
        if bits is not None:
            P.check_bits("bits", bits)
        available = compressible_layers(model)
        exclude = [D.strip_prefix(n, wrapped) for n in exclude]
        targets = {D.strip_prefix(n, wrapped): v for n, v in dict(targets or {}).items()}
        for where, names in (("targets", list(targets)), ("exclude", exclude)):
            bad = [n for n in names if n not in available]
            if bad:
                raise ValueError(f"{where}: unknown layer names {bad}; compressible layers are "
                                 f"{list(available)}")
        self.targets: dict[str, LayerTarget] = {}
        for name in available:
            if name in exclude:
                continue
            if name in targets:
                t = _as_target(name, targets[name], per_channel)
            else:
                t = LayerTarget(sparsity, bits, per_channel)
            if t.active:
                self.targets[name] = t
        if not self.targets:
            raise ValueError("targets: no layer to compress (give sparsity=/bits= or per-layer targets)")
        self.layers = {n: available[n] for n in self.targets}
        if scale_fit == "std":
            for n, t in self.targets.items():
                if t.bits is not None and t.bits not in (8, *P.STD_STEPS):
                    raise ValueError(f"bits: scale_fit='std' needs bits 8, 4, 2 or 'binary', got {t.bits!r} for {n!r}")
        self.specs = {n: (P.make_spec(t.bits, t.per_channel, full_range=scale_fit == "std" and isinstance(t.bits, int))
                          if t.bits is not None else None)
                      for n, t in self.targets.items()}
        self.Z: dict[str, torch.Tensor] = {}
        self.U: dict[str, torch.Tensor] = {}
        self.phase = "admm"
        self.steps = 0
        self.history: list[float] = []  # primal residual ||W - Z|| after each update
        self._latent: dict[str, torch.Tensor] = {}
        self._last: dict[str, torch.Tensor] = {}
        self._hooks: list[Any] = []
        self._init_auxiliary()

    # ------------------------------------------------------------------ ADMM phase
    def _project_full(self, name: str, w: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Prune, fit the grid's scale (``scale_fit``) on the kept weights, quantize."""
        t = self.targets[name]
        mask = P.sparsity_mask(w, t.sparsity, self.structure) if t.sparsity else None
        scale = None
        if t.bits is not None:
            wm = w.detach() * mask if mask is not None else w.detach()
            scale = P.fit_scale(wm, t.bits, method=self.scale_fit, per_channel=t.per_channel,
                                iters=self.als_iters)
        return P.project(w, None, self.specs[name], scale=scale, mask=mask)

    def _project(self, name: str, w: torch.Tensor) -> torch.Tensor:
        return self._project_full(name, w)[0]

    @torch.no_grad()
    def _init_auxiliary(self) -> None:
        for name, layer in self.layers.items():
            w = layer.weight.detach()
            self.Z[name] = self._project(name, w)
            self.U[name] = torch.zeros_like(w)

    def penalty(self) -> torch.Tensor:
        """``rho/2 * sum_l ||W_l - Z_l + U_l||^2`` (differentiable in W); 0 after ``finalize()``."""
        first = next(iter(self.layers.values())).weight
        total = first.new_zeros(())
        if self.phase != "admm" or self.proximal is not None:
            return total
        for name, layer in self.layers.items():
            total = total + (layer.weight - self.Z[name] + self.U[name]).pow(2).sum()
        return 0.5 * self.rho * total

    @torch.no_grad()
    def update(self) -> float:
        """Z <- Proj(W + U); U <- U + W - Z. Returns the primal residual ``||W - Z||``."""
        if self.phase != "admm":
            return self.residual()
        for name, layer in self.layers.items():
            w = layer.weight.detach()
            self.Z[name] = self._project(name, w + self.U[name])
            self.U[name] += w - self.Z[name]
        self.rho = min(self.rho * self.rho_growth, self.rho_max)
        r = self.residual()
        self.history.append(r)
        return r

    @torch.no_grad()
    def residual(self) -> float:
        """Primal residual ``sqrt(sum_l ||W_l - Z_l||^2)`` (0 after ``finalize()``)."""
        if self.phase != "admm":
            return 0.0
        s = sum(float((layer.weight - self.Z[n]).pow(2).sum()) for n, layer in self.layers.items())
        return s ** 0.5

    def step(self) -> None:
        """Call after every ``optimizer.step()``.

        ADMM phase: counts steps and runs ``update()`` every ``update_every`` steps.
        Retraining phase: folds the optimizer's change into the float shadow weights and
        re-projects (mask + fixed-scale quantization), so constraints hold exactly.
        """
        self.steps += 1
        if self.phase == "admm":
            if self.proximal is not None:
                with torch.no_grad():
                    for name, layer in self.layers.items():
                        layer.weight.sub_(self.proximal * (layer.weight - self.Z[name] + self.U[name]))
            if self.update_every is not None and self.steps % self.update_every == 0:
                self.update()
            return
        self._reproject()

    def epoch_end(self) -> None:
        """Per-epoch ADMM update when ``update_every`` is None."""
        if self.phase == "admm" and self.update_every is None:
            self.update()

    # ------------------------------------------------------------------ retraining phase
    @torch.no_grad()
    def finalize(self) -> dict[str, CompressionState]:
        """Hard projection of W onto the constraint set; fixes masks and scales for retraining.

        Attaches a :class:`CompressionState` to each layer (read by ``deploy``), masks the
        gradients of pruned weights, and switches ``step()`` to masked fake-quant retraining.
        """
        if self.phase == "retrain":
            return self.states()
        for name, layer in self.layers.items():
            t = self.targets[name]
            w = layer.weight.detach()
            z, mask, scale = self._project_full(name, w)
            layer.weight.copy_(z)
            set_state(layer, CompressionState(mask=mask, spec=self.specs[name], scale=scale,
                                              sparsity=t.sparsity))
            self._latent[name] = z.clone()
            self._last[name] = z.clone()
            if mask is not None:
                m = mask.to(w.dtype)
                self._hooks.append(layer.weight.register_hook(lambda g, m=m: g * m))
        self.phase = "retrain"
        self.Z.clear()
        self.U.clear()
        return self.states()

    @torch.no_grad()
    def _reproject(self) -> None:
        for name, layer in self.layers.items():
            w = layer.weight.detach()
            latent = self._latent[name]
            latent += w - self._last[name]  # straight-through: the update lands on the shadow copy
            st = getattr(layer, "sparsesnn_compression")
            if st.mask is not None:
                latent *= st.mask
            z, _, _ = P.project(latent, None, st.spec, scale=st.scale, mask=st.mask)
            layer.weight.copy_(z)
            self._last[name] = z.clone()

    def states(self) -> dict[str, CompressionState]:
        return {n: getattr(layer, "sparsesnn_compression") for n, layer in self.layers.items()
                if hasattr(layer, "sparsesnn_compression")}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Everything that must agree across ranks (``distributed.check_consistent``): weights,
        Z, U, rho and step count (ADMM phase); masks, scales and shadow weights (retraining)."""
        out: dict[str, torch.Tensor] = {"rho": torch.tensor(self.rho, dtype=torch.float64),
                                        "steps": torch.tensor(self.steps)}
        for n, layer in self.layers.items():
            out[f"{n}.weight"] = layer.weight.detach()
            for key, d in (("Z", self.Z), ("U", self.U), ("latent", self._latent), ("last", self._last)):
                if n in d:
                    out[f"{n}.{key}"] = d[n]
            st = getattr(layer, "sparsesnn_compression", None)
            if st is not None and st.mask is not None:
                out[f"{n}.mask"] = st.mask
            if st is not None and st.scale is not None:
                out[f"{n}.scale"] = st.scale
        return out

    def sparsity(self) -> dict[str, float]:
        """Measured fraction of zero weights per layer."""
        return {n: float((layer.weight == 0).float().mean()) for n, layer in self.layers.items()}

    def remove(self) -> None:
        """Drop the gradient hooks (the attached compression state stays for ``deploy``)."""
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
