"""LitE-SNN-style cell-level supernet search for small conv SNNs (Liu et al., IJCAI 2024).

A cell with three edges (node0 -> node1, node0 -> node2, node1 -> node2; each node sums its
incoming edges, then BatchNorm + LIF) sits between a fixed stem (3x3 conv, 8-bit) and a fixed
head (2x2 average pool, linear, 8-bit). Every edge mixes, with softmax weights ``alpha``, the
candidates: CompConv (one shared 3x3 weight, magnitude-pruned to ``keep`` and fake-quantized to
``bits``, at every setting of ``comp_settings``), fp32 3x3 and 5x5 convs, skip, 3x3 average
pooling and none. The network runs ``max(T_choices)`` steps; the output mixes the running mean
of the first ``T`` readouts with softmax weights ``beta`` over ``T_choices``. :func:`search` is
bilevel (first-order DARTS): weights on one part of the training data, architecture
(``alpha``) and timestep weights (``beta``) on a held-out validation part, under a hinge on the
expected deployed bytes above ``byte_budget`` plus a weight on the expected bit-SynOps (bits x
surviving fan-out x input spike rate x expected T).

:func:`decode` enforces the byte budget as a hard constraint: among the cells that fit, the one
with the most probable operation per edge (CompConv's probability summed over its settings,
"none" excluded as DARTS decodes), then the most probable CompConv settings; T is the argmax of
``beta``. :func:`search` returns that genotype with the CompConv settings chosen on its
validation part instead (:func:`select_settings`). :func:`decode` builds a :class:`CellNet`
whose layers carry their compression state (mask, spec), so :func:`sparsesnn.deploy.deploy`
packs them; :func:`train_net` retrains it with the same fake quantization.

Byte cost model (matches the packed kernels): a conv stores ``O`` packed rows of
``ceil(C * k * k * bits / 8)`` bytes plus a 4-byte scale per row (fp32: 4 bytes per weight);
pruning does not shrink the packed conv (zeros stay in the rows) but removes SynOps.
"""
from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from typing import NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn import LIF
from ..quant import as_spec, fake_quantize
from .state import CompressionState, set_state

__all__ = ["COMP_SETTINGS", "Candidate", "candidates", "LiteSupernet", "CellNet", "decode",
           "search", "select_settings", "train_net", "evaluate", "SearchResult"]

COMP_SETTINGS: tuple[tuple[int, float], ...] = ((8, 1.0), (4, 1.0), (4, 0.5), (2, 0.5))
EDGES = ((0, 1), (0, 2), (1, 2))


class Candidate(NamedTuple):
    name: str
    bits: int      # 32: fp32; 0: no weights
    keep: float    # fraction of weights kept (pruning)
    kernel: int    # 0: no weights


def candidates(comp_settings: Sequence[tuple[int, float]] = COMP_SETTINGS) -> list[Candidate]:
    comp = [Candidate(f"comp{b}b_keep{k:g}", int(b), float(k), 3) for b, k in comp_settings]
    return comp + [Candidate("conv3", 32, 1.0, 3), Candidate("conv5", 32, 1.0, 5),
                   Candidate("skip", 0, 0.0, 0), Candidate("avgpool", 0, 0.0, 0),
                   Candidate("none", 0, 0.0, 0)]


def conv_bytes(C_in: int, C_out: int, k: int, bits: int) -> int:
    """Deployed bytes of a conv: packed rows + per-row scale (fp32: 4 bytes per weight)."""
    if bits >= 32:
        return 4 * C_in * C_out * k * k
    return C_out * (math.ceil(C_in * k * k * bits / 8) + 4)


def _fold(fn, x: Tensor) -> Tensor:
    """Apply a 4-D op to ``[T, B, C, H, W]`` with time folded into the batch."""
    T, B = x.shape[:2]
    y = fn(x.flatten(0, 1))
    return y.reshape(T, B, *y.shape[1:])


def magnitude_mask(w: Tensor, keep: float) -> Optional[Tensor]:
    """Bool mask of the ``ceil(keep * numel)`` largest-magnitude weights (None: keep all)."""
    if keep >= 1.0:
        return None
    k = max(1, math.ceil(keep * w.numel()))
    a = w.detach().abs().flatten()
    thresh = a.kthvalue(a.numel() - k + 1).values
    return w.detach().abs() >= thresh


def comp_weight(w: Tensor, bits: int, keep: float) -> Tensor:
    """CompConv's effective weight: pruned to ``keep``, fake-quantized to ``bits`` (STE)."""
    m = magnitude_mask(w, keep)
    if m is not None:
        w = w * m
    return fake_quantize(w, as_spec(bits)) if bits < 32 else w


class _Fold(nn.Module):
    """A 4-D module (BatchNorm2d, AvgPool2d) applied to ``[T, B, C, H, W]``."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        return _fold(self.inner, x)


class CompConv(nn.Conv2d):
    """A conv that trains through :func:`comp_weight` and carries its compression state, so
    ``deploy`` packs it (``bits`` 32: fp32; ``keep`` < 1: pruned by magnitude). Training runs
    dense (``F.conv2d``); the deployed copy runs the packed event-driven kernel."""

    def __init__(self, C_in: int, C_out: int, k: int, bits: int = 32, keep: float = 1.0) -> None:
        super().__init__(C_in, C_out, k, padding=k // 2, bias=False)
        self.bits, self.keep = int(bits), float(keep)

    def forward(self, x: Tensor) -> Tensor:
        w = comp_weight(self.weight, self.bits, self.keep)
        return _fold(lambda z: F.conv2d(z, w, None, 1, self.padding), x) if x.dim() == 5 else \
            F.conv2d(x, w, None, 1, self.padding)

    def finalize(self) -> None:
        """Attach mask and spec for ``deploy`` (weights stay the latent fp32 ones)."""
        mask = magnitude_mask(self.weight, self.keep)
        spec = as_spec(self.bits) if self.bits < 32 else None
        set_state(self, CompressionState(mask=mask, spec=spec,
                                         sparsity=None if mask is None else 1 - self.keep))

    def deployed_bytes(self) -> int:
        return conv_bytes(self.in_channels, self.out_channels, self.kernel_size[0], self.bits)


class _Stem(nn.Module):
    def __init__(self, C: int, side: int) -> None:
        super().__init__()
        self.side = side
        self.conv = CompConv(1, C, 3, bits=8)
        self.bn = _Fold(nn.BatchNorm2d(C))
        self.lif = LIF()

    def forward(self, x: Tensor, T: int) -> Tensor:
        img = x.reshape(x.shape[0], 1, self.side, self.side)
        return self.lif(self.bn(self.conv(img.unsqueeze(0).expand(T, *img.shape))))


class _Head(nn.Module):
    def __init__(self, C: int, side: int, n_classes: int) -> None:
        super().__init__()
        self.pool = _Fold(nn.AvgPool2d(2))
        self.fc = nn.Linear(C * (side // 2) ** 2, n_classes)
        self.bits = 8

    def forward(self, x: Tensor) -> Tensor:
        z = self.pool(x).flatten(2)
        if isinstance(self.fc, nn.Linear) and not hasattr(self.fc, "sparsesnn_compression"):
            return F.linear(z, fake_quantize(self.fc.weight, as_spec(self.bits)), self.fc.bias)
        return self.fc(z)

    def finalize(self) -> None:
        set_state(self.fc, CompressionState(spec=as_spec(self.bits)))

    def deployed_bytes(self) -> int:
        n, k = self.fc.weight.shape
        return n * (math.ceil(k * self.bits / 8) + 4) + 4 * n  # + fp32 bias


def _readouts(logits: Tensor, T_choices: Sequence[int]) -> Tensor:
    """``[T, B, classes]`` -> ``[len(T_choices), B, classes]``: the mean of the first T readouts."""
    cum = logits.cumsum(0)
    return torch.stack([cum[t - 1] / t for t in T_choices])


class MixedEdge(nn.Module):
    def __init__(self, C: int, cands: Sequence[Candidate]) -> None:
        super().__init__()
        self.cands = list(cands)
        self.shared = nn.Parameter(torch.empty(C, C, 3, 3))  # CompConv: one weight, all settings
        self.w3 = nn.Parameter(torch.empty(C, C, 3, 3))
        self.w5 = nn.Parameter(torch.empty(C, C, 5, 5))
        for w in (self.shared, self.w3, self.w5):
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))

    def op(self, c: Candidate, x: Tensor) -> Optional[Tensor]:
        if c.name == "none":
            return None
        if c.name == "skip":
            return x
        if c.name == "avgpool":
            return _fold(lambda z: F.avg_pool2d(z, 3, 1, 1, count_include_pad=False), x)
        if c.name == "conv3":
            w = self.w3
        elif c.name == "conv5":
            w = self.w5
        else:
            w = comp_weight(self.shared, c.bits, c.keep)
        return _fold(lambda z: F.conv2d(z, w, None, 1, w.shape[-1] // 2), x)

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        out = torch.zeros_like(x)
        for c, w in zip(self.cands, weights):
            if float(w.detach()) == 0.0:  # a one-hot restriction (see select_settings): skip the dead ops
                continue
            y = self.op(c, x)
            if y is not None:
                out = out + w * y
        return out


class LiteSupernet(nn.Module):
    """Stem -> searched cell -> head, with architecture weights ``alpha [3, n_candidates]``
    and timestep weights ``beta [len(T_choices)]``. Input ``[B, side*side]`` in [0, 1]
    (direct encoding: the image is the stem's input at every step); output ``[B, classes]``."""

    def __init__(self, C: int = 8, side: int = 8, n_classes: int = 10,
                 T_choices: Sequence[int] = (1, 2, 3, 4),
                 comp_settings: Sequence[tuple[int, float]] = COMP_SETTINGS) -> None:
        super().__init__()
        if isinstance(C, bool) or not isinstance(C, int) or C < 1:
            raise ValueError(f"C: expected an integer >= 1, got {C!r}")
        T_choices = tuple(int(t) for t in T_choices)
        if not T_choices or min(T_choices) < 1 or list(T_choices) != sorted(set(T_choices)):
            raise ValueError(f"T_choices: expected increasing integers >= 1, got {T_choices}")
        for b, k in comp_settings:
            if b not in (2, 4, 8) or not 0 < k <= 1:
                raise ValueError(f"comp_settings: expected (bits in 2/4/8, keep in (0, 1]), got {(b, k)}")
        self.C, self.side, self.T_choices = C, side, T_choices
        self.cands = candidates(comp_settings)
        self.stem = _Stem(C, side)
        self.edges = nn.ModuleList(MixedEdge(C, self.cands) for _ in EDGES)
        self.bn = nn.ModuleList(_Fold(nn.BatchNorm2d(C)) for _ in range(2))
        self.lif = nn.ModuleList(LIF() for _ in range(2))
        self.head = _Head(C, side, n_classes)
        self.alpha = nn.Parameter(torch.zeros(len(EDGES), len(self.cands)))
        self.beta = nn.Parameter(torch.zeros(len(T_choices)))
        self.edge_rates = torch.zeros(len(EDGES))  # input spike rate of each edge (last batch)

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha, self.beta]

    def weight_parameters(self) -> list[nn.Parameter]:
        ids = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in ids]

    def forward(self, x: Tensor) -> Tensor:
        """``[B, side*side]`` -> ``[B, classes]``: the readouts of every T mixed by ``softmax(beta)``."""
        return (F.softmax(self.beta, 0)[:, None, None] * self.readouts(x)).sum(0)

    def expected_loss(self, x: Tensor, y: Tensor) -> Tensor:
        """Cross-entropy of each T's readout, averaged with weights ``softmax(beta)``: ``beta``
        moves to the T whose own readout is best on the batch."""
        ce = torch.stack([F.cross_entropy(r, y) for r in self.readouts(x)])
        return (F.softmax(self.beta, 0) * ce).sum()

    def readouts(self, x: Tensor) -> Tensor:
        """``[B, side*side]`` -> ``[len(T_choices), B, classes]``: the running-mean readout at each T."""
        for m in self.modules():
            if isinstance(m, LIF):
                m.reset()
        a = F.softmax(self.alpha, -1)
        n0 = self.stem(x, self.T_choices[-1])
        n1 = self.lif[0](self.bn[0](self.edges[0](n0, a[0])))
        n2 = self.lif[1](self.bn[1](self.edges[1](n0, a[1]) + self.edges[2](n1, a[2])))
        self.edge_rates = torch.stack([n0.detach().mean(), n0.detach().mean(), n1.detach().mean()])
        return _readouts(self.head(n2), self.T_choices)

    def fixed_bytes(self) -> int:
        """Deployed bytes that do not depend on the cell's ops: stem, head, BatchNorm buffers."""
        return self.stem.conv.deployed_bytes() + self.head.deployed_bytes() + 3 * 16 * self.C

    def op_bytes(self) -> list[int]:
        """Deployed bytes of each candidate on one edge (0 for the weightless ones)."""
        return [conv_bytes(self.C, self.C, c.kernel, c.bits) if c.kernel else 0 for c in self.cands]

    def expected_cost(self) -> dict[str, Tensor]:
        """Differentiable expected deployed bytes (the whole model, as
        :meth:`CellNet.deployed_bytes` counts it), bit-SynOps per sample and T."""
        a = F.softmax(self.alpha, -1)
        bt = F.softmax(self.beta, 0)
        T = (bt * torch.tensor(self.T_choices, dtype=bt.dtype)).sum()
        C, hw = self.C, self.side * self.side
        op_bytes = torch.tensor(self.op_bytes(), dtype=a.dtype)
        op_bitops = torch.tensor([c.bits * c.keep * C * c.kernel ** 2 if c.kernel else 0.0 for c in self.cands],
                                 dtype=a.dtype)  # per input spike: surviving fan-out x bits
        model_bytes = self.fixed_bytes() + (a * op_bytes).sum()
        bit_synops = T * (self.edge_rates[:, None] * C * hw * a * op_bitops).sum()
        return {"bytes": model_bytes, "bit_synops": bit_synops, "T": T}

    def genotype(self, byte_budget: Optional[float] = None) -> dict:
        """The discrete network, decoded hierarchically as LitE-SNN's search space is built:
        per edge first the operation (CompConv, conv3, conv5, skip, avgpool; "none" excluded, as
        DARTS decodes), CompConv's probability being the sum over its (bits, keep) settings, then
        the setting; T is the argmax of the timestep weights. (A flat argmax would split
        CompConv's vote over its settings and hand the edge to a weightless op.)

        With ``byte_budget`` (a hard budget), only combinations whose deployed bytes
        (:meth:`CellNet.deployed_bytes`) are <= ``byte_budget`` are considered: the one with the
        most probable operations, then the most probable settings (all combinations are
        enumerated: 3 edges). Raises ``ValueError`` if none fits."""
        p = F.softmax(self.alpha.detach().double(), -1)
        family = [c.name if c.name in ("conv3", "conv5", "skip", "avgpool", "none") else "comp" for c in self.cands]
        fam_p = torch.stack([p[:, [j for j, f in enumerate(family) if f == family[i]]].sum(-1)
                             for i in range(len(self.cands))], -1)  # [edges, cands]: P(op family)
        fam_logp, set_logp = fam_p.log(), (p / fam_p).log()
        allowed = [i for i, c in enumerate(self.cands) if c.name != "none"]
        cost, fixed = self.op_bytes(), self.fixed_bytes()
        budget = math.inf if byte_budget is None else byte_budget
        fits = [combo for combo in itertools.product(allowed, repeat=len(EDGES))
                if fixed + sum(cost[i] for i in combo) <= budget]
        if not fits:
            cheapest = fixed + len(EDGES) * min(cost[i] for i in allowed)
            raise ValueError(f"byte_budget: expected >= {cheapest} (the smallest cell), got {byte_budget}")
        ops = max(fits, key=lambda combo: (sum(float(fam_logp[e, i]) for e, i in enumerate(combo)),
                                           sum(float(set_logp[e, i]) for e, i in enumerate(combo))))
        T = self.T_choices[int(self.beta.detach().argmax())]
        return {"edges": [self.cands[i]._asdict() for i in ops], "T": T}


class CellNet(nn.Module):
    """The decoded network: the same stem, cell and head with one op per edge, ``T`` steps."""

    def __init__(self, C: int, side: int, n_classes: int, ops: Sequence[Candidate], T: int) -> None:
        super().__init__()
        self.T, self.ops = int(T), [Candidate(*o) for o in ops]
        self.stem = _Stem(C, side)
        self.edges = nn.ModuleList(self._make(c, C) for c in self.ops)
        self.bn = nn.ModuleList(_Fold(nn.BatchNorm2d(C)) for _ in range(2))
        self.lif = nn.ModuleList(LIF() for _ in range(2))
        self.head = _Head(C, side, n_classes)

    @staticmethod
    def _make(c: Candidate, C: int) -> nn.Module:
        if c.kernel:
            return CompConv(C, C, c.kernel, c.bits, c.keep)
        if c.name == "avgpool":
            return _Fold(nn.AvgPool2d(3, 1, 1, count_include_pad=False))
        return nn.Identity() if c.name == "skip" else _Zero()

    def forward(self, x: Tensor) -> Tensor:
        for m in self.modules():
            if isinstance(m, LIF):
                m.reset()
        n0 = self.stem(x, self.T)
        n1 = self.lif[0](self.bn[0](self.edges[0](n0)))
        n2 = self.lif[1](self.bn[1](self.edges[1](n0) + self.edges[2](n1)))
        return self.head(n2).mean(0)

    def finalize(self) -> "CellNet":
        """Attach compression state to every conv/linear so ``deploy`` packs them."""
        for m in self.modules():
            if isinstance(m, (CompConv, _Head)):
                m.finalize()
        return self

    def deployed_bytes(self) -> int:
        """Weights as deployed plus the (unfolded, fp32) BatchNorm buffers and parameters."""
        convs = sum(m.deployed_bytes() for m in self.modules() if isinstance(m, CompConv))
        bn = sum(4 * 4 * m.num_features for m in self.modules() if isinstance(m, nn.BatchNorm2d))
        return convs + self.head.deployed_bytes() + bn


class _Zero(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.zeros_like(x)


def decode(net: LiteSupernet, byte_budget: Optional[float] = None, genotype: Optional[dict] = None) -> CellNet:
    """The :class:`CellNet` of ``genotype`` (default ``net.genotype(byte_budget)``; pass
    :attr:`SearchResult.genotype` for the settings chosen on validation). Fresh weights:
    retrain it."""
    g = net.genotype(byte_budget) if genotype is None else genotype
    return CellNet(net.C, net.side, net.head.fc.out_features, [Candidate(**e) for e in g["edges"]], g["T"])


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch: int = 512) -> float:
    was = model.training
    model.eval()
    correct = 0
    for i in range(0, x.shape[0], batch):
        correct += int((model(x[i:i + batch]).argmax(-1) == y[i:i + batch]).sum())
    model.train(was)
    return correct / max(x.shape[0], 1)


def _batches(n: int, batch: int, g: torch.Generator):
    perm = torch.randperm(n, generator=g)
    for i in range(0, n, batch):
        yield perm[i:i + batch]


def train_net(model: nn.Module, x: Tensor, y: Tensor, *, epochs: int = 15, lr: float = 3e-3,
              batch: int = 64, seed: int = 0) -> nn.Module:
    """Plain supervised training (surrogate gradients, fake quantization in the forward)."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    model.train()
    for _ in range(epochs):
        for idx in _batches(x.shape[0], batch, g):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return model


@torch.no_grad()
def select_settings(net: LiteSupernet, x: Tensor, y: Tensor, byte_budget: float) -> tuple[dict, list[dict]]:
    """Decode ``net`` under the hard budget, then choose the CompConv settings on validation.

    The operations per edge and T come from :meth:`LiteSupernet.genotype`. CompConv's settings
    share one weight, so every combination of settings that fits ``byte_budget`` can be scored
    by the supernet itself restricted to it (one-hot architecture weights): the one with the
    best accuracy on ``x [N, side*side]``, ``y [N]`` (then lowest cross-entropy, then highest
    probability) wins. (The settings' architecture weights differ by little more than noise:
    the shared weight makes them nearly interchangeable during the search.) Returns the
    genotype and every scored candidate."""
    g = net.genotype(byte_budget)
    names = [c.name for c in net.cands]
    comp = [i for i, n in enumerate(names) if n.startswith("comp")]
    per_edge = [comp if e["name"].startswith("comp") else [names.index(e["name"])] for e in g["edges"]]
    cost, fixed = net.op_bytes(), net.fixed_bytes()
    t_idx = net.T_choices.index(g["T"])
    logp = F.log_softmax(net.alpha.detach(), -1)
    alpha, was = net.alpha.detach().clone(), net.training
    net.eval()
    scored = []
    try:
        for combo in itertools.product(*per_edge):
            if fixed + sum(cost[i] for i in combo) > byte_budget:
                continue
            net.alpha.fill_(-math.inf)
            net.alpha[list(range(len(EDGES))), list(combo)] = 0.0
            out = net.readouts(x)[t_idx]
            scored.append({"edges": [names[i] for i in combo], "val_acc": float((out.argmax(-1) == y).float().mean()),
                           "val_ce": float(F.cross_entropy(out, y)),
                           "logp": float(sum(logp[e, i] for e, i in enumerate(combo))), "combo": combo})
    finally:
        net.alpha.copy_(alpha)
        net.train(was)
    best = max(scored, key=lambda r: (r["val_acc"], -r["val_ce"], r["logp"]))
    g["edges"] = [net.cands[i]._asdict() for i in best["combo"]]
    for r in scored:
        del r["combo"]
    return g, scored


@dataclass
class SearchResult:
    supernet: LiteSupernet
    genotype: dict
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    byte_budget: float = 0.0
    candidates: list[dict] = field(default_factory=list)  # the settings scored on validation


def _cycle(n: int, batch: int, g: torch.Generator):
    while True:
        yield from _batches(n, batch, g)


def search(x: Tensor, y: Tensor, *, byte_budget: float, C: int = 8, side: int = 8,
           T_choices: Sequence[int] = (1, 2, 3, 4), epochs: int = 8, warmup: int = 2,
           lr: float = 3e-3, arch_lr: float = 3e-2, lam_bytes: float = 1.0, lam_ops: float = 0.0,
           ops_ref: float = 1e6, val_fraction: float = 0.25, batch: int = 64, seed: int = 0,
           comp_settings: Sequence[tuple[int, float]] = COMP_SETTINGS) -> SearchResult:
    """Bilevel search (first-order DARTS) under a hard byte budget.

    ``x [N, side*side]``, ``y [N]`` are split (seeded) into a weight part and a validation
    part (``val_fraction``). Each step trains the weights (Adam, ``lr``) on a weight batch, with
    the readout of every T weighted equally (weights trained mostly for the T that ``beta``
    favours would make that T look best and lock it in), and, after ``warmup`` epochs, the
    architecture and timestep weights (Adam, ``arch_lr``) on a validation batch with loss
    :meth:`LiteSupernet.expected_loss` + ``lam_bytes`` * relu(E[bytes] / ``byte_budget`` - 1)
    + ``lam_ops`` * E[bit-SynOps] / ``ops_ref`` (the hinge steers the supernet into the budget).
    The result is decoded with the hard budget (:meth:`LiteSupernet.genotype`: the most probable
    operations whose deployed bytes are <= ``byte_budget``), the CompConv settings chosen on the
    validation part (:func:`select_settings`). ``SearchResult.genotype`` is the decoded cell."""
    if not byte_budget > 0:
        raise ValueError(f"byte_budget: expected > 0, got {byte_budget}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction: expected in (0, 1), got {val_fraction}")
    n_val = int(round(val_fraction * x.shape[0]))
    if n_val < 1 or n_val >= x.shape[0]:
        raise ValueError(f"val_fraction: leaves {n_val} of {x.shape[0]} samples for validation")
    torch.manual_seed(seed)
    net = LiteSupernet(C, side, int(y.max()) + 1, T_choices, comp_settings)
    net.genotype(byte_budget)  # raises if no cell fits the budget
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(x.shape[0], generator=g)
    xv, yv, xw, yw = x[perm[:n_val]], y[perm[:n_val]], x[perm[n_val:]], y[perm[n_val:]]
    w_opt = torch.optim.Adam(net.weight_parameters(), lr=lr)
    a_opt = torch.optim.Adam(net.arch_parameters(), lr=arch_lr)
    val_batches = _cycle(n_val, batch, g)
    hist = []
    t0 = time.perf_counter()
    for ep in range(epochs):
        for idx in _batches(xw.shape[0], batch, g):
            if ep >= warmup:
                v = next(val_batches)
                cost = net.expected_cost()
                a_loss = net.expected_loss(xv[v], yv[v]) + lam_ops * cost["bit_synops"] / ops_ref \
                    + lam_bytes * F.relu(cost["bytes"] / byte_budget - 1)
                a_opt.zero_grad()
                a_loss.backward()
                a_opt.step()
            loss = torch.stack([F.cross_entropy(r, yw[idx]) for r in net.readouts(xw[idx])]).mean()
            w_opt.zero_grad()
            loss.backward()
            w_opt.step()
        cost = net.expected_cost()
        hist.append({"epoch": ep, "loss": float(loss.detach()), "val_acc": evaluate(net, xv, yv),
                     "expected_bytes": float(cost["bytes"].detach()), "expected_T": float(cost["T"].detach()),
                     "alpha": F.softmax(net.alpha.detach(), -1).tolist(), "beta": F.softmax(net.beta.detach(), 0).tolist(),
                     "genotype": net.genotype(byte_budget)})
    geno, scored = select_settings(net, xv, yv, byte_budget)
    return SearchResult(net, geno, hist, time.perf_counter() - t0, float(byte_budget), scored)
