"""NIR (Neuromorphic Intermediate Representation) export and import.

``export(model, x)`` -> ``nir.NIRGraph``; ``load(graph)`` -> a time-major sparsesnn model
(:class:`~sparsesnn.convert.TimeMajor`). Both handle feed-forward chains (the graphs snnTorch
and SpikingJelly write for sequential nets); anything else is listed in one error.

Time-step convention. NIR neurons are continuous-time ODEs; sparsesnn runs discrete steps. A
sparsesnn step is ``dt`` seconds of NIR time (forward-Euler, as snnTorch's and Norse's NIR
bridges use; ``dt=1e-4`` is snnTorch's choice and the default here). NIR ``LIF``:
``tau dv/dt = (v_leak - v) + r I``, one Euler step ``v += dt/tau (v_leak - v + r I)``, maps to
sparsesnn ``LIF`` with ``tau_sparsesnn = tau / dt`` (``decay = dt / tau``), ``v_reset =
v_leak`` and
- ``r = 1``: ``decay_input=True`` (input scaled by the decay);
- ``r = tau / dt``: ``decay_input=False`` (input added unscaled; snnTorch's Leaky).
NIR ``IF`` (``dv/dt = r I``) needs ``r = 1/dt``; ``CubaLIF`` is representable only when its
synaptic current does not outlast a step (``tau_syn = dt``: then ``I[t] = w_in * x[t]`` and
``w_in`` must be 1). Only hard reset exists in NIR: sparsesnn neurons with soft reset
(``v_reset=None``) cannot be exported. sparsesnn fires on ``v >= v_threshold``; snnTorch on
``v > v_threshold``: they differ only when a potential equals the threshold exactly.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn

from .convert._tree import UnconvertibleError
from .convert.layers import SeqToANN
from .convert.snntorch import TimeMajor
from .nn import IF, LIF, PLIF, BaseNeuron, SpikingConv2d, SpikingLinear, reset_net

__all__ = ["export", "load", "DEFAULT_DT"]

DEFAULT_DT = 1e-4


def _nir():
    try:
        import nir
    except ImportError as e:
        raise ImportError("NIR support needs the nir package: pip install nir") from e
    return nir


def _check_dt(dt: float) -> float:
    if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt: expected a finite number > 0, got {dt!r}")
    return float(dt)


# ------------------------------------------------------------------------------------ export

def _chain(model: nn.Module, folded: bool = False) -> list[tuple[str, nn.Module, bool]]:
    """``(path, module, folded)`` in execution order; ``folded``: runs on ``[T*B, ...]``."""
    if isinstance(model, TimeMajor):
        return [(f"net.{p}" if p else "net", m, f) for p, m, f in _chain(model.net)]
    if isinstance(model, SeqToANN):
        folded = model.step_mode == "m"
    if isinstance(model, (nn.Sequential, SeqToANN)):
        out = []
        for name, child in model.named_children():
            out += [(f"{name}.{p}" if p else name, m, f) for p, m, f in _chain(child, folded)]
        return out
    return [("", model, folded)]


def _full(value: float, shape) -> np.ndarray:
    return np.full(tuple(shape), value, dtype=np.float32)


def _neuron_node(m: BaseNeuron, shape, dt: float):
    nir = _nir()
    if m.v_reset is None:
        return "soft reset (v_reset=None) has no NIR form (NIR neurons reset to v_reset)"
    if m.state_quant is not None:
        return "fixed-point state (quantize_state) has no NIR form"
    thr, vr = _full(m.v_threshold, shape), _full(m.v_reset, shape)
    if isinstance(m, IF):
        return nir.IF(r=_full(1.0 / dt, shape), v_threshold=thr, v_reset=vr)
    if isinstance(m, (LIF, PLIF)):
        tau = float(m.tau)
        r = 1.0 if m.decay_input else tau
        return nir.LIF(tau=_full(tau * dt, shape), r=_full(r, shape), v_leak=vr.copy(),
                       v_threshold=thr, v_reset=vr)
    return f"neuron {type(m).__name__} has no NIR mapping"


def _node(m: nn.Module, in_shape: tuple, dt: float):
    """NIR node for ``m`` given its per-sample input shape, or a reason string."""
    nir = _nir()
    if isinstance(m, BaseNeuron):
        return _neuron_node(m, in_shape, dt)
    if type(m) in (nn.Linear, SpikingLinear):
        w = m.weight.detach().cpu().numpy()
        if m.bias is None:
            return nir.Linear(weight=w)
        return nir.Affine(weight=w, bias=m.bias.detach().cpu().numpy())
    if type(m) in (nn.Conv2d, SpikingConv2d):
        if m.padding_mode != "zeros":
            return f"padding_mode={m.padding_mode!r} (NIR Conv2d pads with zeros)"
        bias = m.bias.detach().cpu().numpy() if m.bias is not None else np.zeros(m.out_channels, np.float32)
        return nir.Conv2d(input_shape=tuple(in_shape[-2:]), weight=m.weight.detach().cpu().numpy(),
                          stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups,
                          bias=bias)
    if type(m) is nn.Flatten:
        # NIR dims exclude the batch (and time) dimension
        start = m.start_dim - 1 if m.start_dim > 0 else m.start_dim
        end = m.end_dim - 1 if m.end_dim > 0 else m.end_dim
        if start < 0 and m.start_dim == 0:
            return "Flatten over the batch dimension"
        return nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=start, end_dim=end)
    if type(m) is nn.AvgPool2d:
        k, st, p = (_pair(v) for v in (m.kernel_size, m.stride or m.kernel_size, m.padding))
        if m.ceil_mode:
            return "ceil_mode=True"
        args = dict(kernel_size=np.array(k), stride=np.array(st), padding=np.array(p))
        if m.divisor_override == 1:
            return nir.SumPool2d(**args)  # zero padding adds nothing to a sum
        if m.divisor_override is None and p == (0, 0):
            return nir.AvgPool2d(**args)
        return (f"divisor_override={m.divisor_override}, padding={p}: only plain average "
                "pooling without padding, or a sum (divisor_override=1), has a NIR form")
    if isinstance(m, (nn.Identity, nn.Dropout)):
        return None  # the identity at inference
    return "no NIR mapping"


def _pair(v) -> tuple[int, int]:
    """``(h, w)`` from an int, a pair, or a NIR scalar / array field."""
    a = np.asarray(v).astype(np.int64).ravel()
    return (int(a[0]), int(a[0])) if a.size == 1 else (int(a[0]), int(a[1]))


def export(model: nn.Module, example_input: Tensor, *, dt: float = DEFAULT_DT) -> Any:
    """NIR graph of a feed-forward sparsesnn model.

    Args:
        model: a ``TimeMajor`` / ``nn.Sequential`` chain (nesting and ``SeqToANN`` allowed)
            of LIF / PLIF / IF (hard reset), Linear / SpikingLinear, Conv2d / SpikingConv2d,
            Flatten, AvgPool2d (``divisor_override=1``: SumPool2d), Identity, Dropout.
        example_input: a time-major input ``[T, B, ...]`` used to infer the shapes.
        dt: seconds of NIR time per sparsesnn step (see the module docstring).
    Returns:
        ``nir.NIRGraph`` with nodes ``input``, ``0``, ``1``, ... (the chain order), ``output``.
    Raises:
        UnconvertibleError (a ValueError) listing every module without a NIR form.
    """
    nir = _nir()
    dt = _check_dt(dt)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example_input, Tensor) or example_input.dim() < 3:
        raise ValueError("example_input: expected a time-major tensor [T, B, ...], got "
                         f"{getattr(example_input, 'shape', type(example_input).__name__)}")
    chain = _chain(model)
    nodes: dict[str, Any] = {"input": nir.Input(input_type=np.array(example_input.shape[2:]))}
    refused, order = [], ["input"]
    x = example_input
    was_training = model.training
    model.eval()
    reset_net(model)
    with torch.no_grad():
        for path, m, folded in chain:
            T, B = x.shape[:2]
            in_shape = tuple(x.shape[2:])
            node = _node(m, in_shape, dt)
            y = m(x.flatten(0, 1)) if folded else m(x)
            x = y.reshape(T, B, *y.shape[1:]) if folded else y
            if isinstance(node, str):
                refused.append((path, f"{type(m).__module__}.{type(m).__qualname__}", node))
            elif node is not None:
                name = str(len(order) - 1)
                nodes[name] = node
                order.append(name)
    reset_net(model)
    model.train(was_training)
    if refused:
        raise UnconvertibleError("sparsesnn", refused, target="NIR")
    nodes["output"] = nir.Output(output_type=np.array(x.shape[2:]))
    order.append("output")
    return nir.NIRGraph(nodes=nodes, edges=list(zip(order[:-1], order[1:])))


# ------------------------------------------------------------------------------------ import

def _scalar(node_name: str, field: str, value) -> Union[float, str]:
    a = np.asarray(value, dtype=np.float64).ravel()
    if a.size == 0:
        return f"{field} is empty"
    if not np.all(a == a[0]):
        return f"{field} differs across neurons (sparsesnn neurons share one value per layer)"
    return float(a[0])


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-5, abs_tol=0.0)


def _lif_module(name: str, node, dt: float, cuba: bool):
    fields = {"tau": node.tau_mem if cuba else node.tau, "r": node.r, "v_leak": node.v_leak,
              "v_threshold": node.v_threshold}
    fields["v_reset"] = node.v_reset if node.v_reset is not None else node.v_leak
    vals = {}
    for f, v in fields.items():
        s = _scalar(name, f, v)
        if isinstance(s, str):
            return s
        vals[f] = s
    if cuba:
        tau_syn = _scalar(name, "tau_syn", node.tau_syn)
        w_in = _scalar(name, "w_in", node.w_in)
        if isinstance(tau_syn, str) or isinstance(w_in, str):
            return tau_syn if isinstance(tau_syn, str) else w_in
        if not _close(tau_syn, dt) or not _close(w_in, 1.0):
            return (f"CubaLIF with tau_syn={tau_syn:g}, w_in={w_in:g}: a synaptic current that "
                    f"outlasts one step (dt={dt:g}) has no sparsesnn neuron; representable only "
                    "with tau_syn=dt and w_in=1")
    if vals["v_leak"] != vals["v_reset"]:
        return f"v_leak={vals['v_leak']:g} != v_reset={vals['v_reset']:g} (sparsesnn leaks toward v_reset)"
    tau = vals["tau"] / dt
    if not tau > 1.0:
        return f"tau={vals['tau']:g} <= dt={dt:g}: sparsesnn needs tau/dt > 1"
    if _close(vals["r"], 1.0):
        decay_input = True
    elif _close(vals["r"], tau):
        decay_input = False
    else:
        return f"r={vals['r']:g}: representable only as r=1 or r=tau/dt={tau:g}"
    return LIF(tau=tau, v_threshold=vals["v_threshold"], v_reset=vals["v_reset"], decay_input=decay_input)


def _module(name: str, node, dt: float, nir):
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = torch.as_tensor(np.asarray(node.weight), dtype=torch.float32)
        if w.dim() != 2:
            return f"weight of shape {tuple(w.shape)} (expected [out, in])"
        has_bias = isinstance(node, nir.Affine)
        m = SpikingLinear(w.shape[1], w.shape[0], bias=has_bias)
        with torch.no_grad():
            m.weight.copy_(w)
            if has_bias:
                m.bias.copy_(torch.as_tensor(np.asarray(node.bias), dtype=torch.float32))
        return m
    if isinstance(node, nir.Conv2d):
        w = torch.as_tensor(np.asarray(node.weight), dtype=torch.float32)
        pad = node.padding if isinstance(node.padding, str) else _pair(node.padding)
        m = SpikingConv2d(w.shape[1] * int(node.groups), w.shape[0], tuple(w.shape[2:]),
                          stride=_pair(node.stride), padding=pad, dilation=_pair(node.dilation),
                          groups=int(node.groups), bias=True)
        with torch.no_grad():
            m.weight.copy_(w)
            m.bias.copy_(torch.as_tensor(np.asarray(node.bias), dtype=torch.float32).reshape(-1))
        return m
    if isinstance(node, nir.CubaLIF):
        return _lif_module(name, node, dt, cuba=True)
    if isinstance(node, nir.LIF):
        return _lif_module(name, node, dt, cuba=False)
    if isinstance(node, nir.IF):
        vals = {f: _scalar(name, f, getattr(node, f)) for f in ("r", "v_threshold")}
        vals["v_reset"] = _scalar(name, "v_reset", node.v_reset if node.v_reset is not None else 0.0)
        bad = [v for v in vals.values() if isinstance(v, str)]
        if bad:
            return bad[0]
        if not _close(vals["r"] * dt, 1.0):
            return f"r={vals['r']:g}: representable only as r=1/dt={1 / dt:g}"
        return IF(v_threshold=vals["v_threshold"], v_reset=vals["v_reset"])
    if isinstance(node, nir.Flatten):
        start, end = int(node.start_dim), int(node.end_dim)
        return SeqToANN(nn.Flatten(start + 1 if start >= 0 else start, end + 1 if end >= 0 else end))
    if isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
        k, st, p = (_pair(v) for v in (node.kernel_size, node.stride, node.padding))
        div = 1 if isinstance(node, nir.SumPool2d) else None
        return SeqToANN(nn.AvgPool2d(k, st, p, divisor_override=div))
    return "no sparsesnn mapping"


def _order(graph, nir) -> Union[list[str], str]:
    """Node names from the single input to the single output, or why the graph is no chain."""
    succ: dict[str, list[str]] = {}
    pred: dict[str, list[str]] = {}
    for a, b in graph.edges:
        succ.setdefault(a, []).append(b)
        pred.setdefault(b, []).append(a)
    inputs = [n for n, v in graph.nodes.items() if isinstance(v, nir.Input)]
    if len(inputs) != 1:
        return f"expected one Input node, found {len(inputs)}"
    order, cur = [], inputs[0]
    while True:
        order.append(cur)
        nxt = succ.get(cur, [])
        if not nxt:
            break
        if len(nxt) > 1 or len(pred.get(nxt[0], [])) > 1:
            return f"node {cur!r} branches or merges (only feed-forward chains are supported)"
        if nxt[0] in order:
            return f"recurrent edge {cur!r} -> {nxt[0]!r} (only feed-forward chains are supported)"
        cur = nxt[0]
    if len(order) != len(graph.nodes):
        return f"{len(graph.nodes) - len(order)} node(s) not on the input-output chain"
    return order


def load(graph: Any, *, dt: float = DEFAULT_DT) -> TimeMajor:
    """A time-major sparsesnn model computing ``graph`` (a ``nir.NIRGraph`` or a path to a
    NIR HDF5 file), with ``dt`` seconds of NIR time per step (see the module docstring).

    The result takes ``[T, B, ...]`` and resets its neurons at each call.
    Raises:
        UnconvertibleError (a ValueError) listing every node that cannot be mapped.
    """
    nir = _nir()
    dt = _check_dt(dt)
    if isinstance(graph, (str, bytes)) or hasattr(graph, "__fspath__"):
        graph = nir.read(graph)
    if not isinstance(graph, nir.NIRGraph):
        raise ValueError(f"graph: expected a nir.NIRGraph or a file path, got {type(graph).__name__}")
    order = _order(graph, nir)
    if isinstance(order, str):
        raise UnconvertibleError("NIR", [("<graph>", "nir.NIRGraph", order)], what="node")
    modules, refused = [], []
    for name in order:
        node = graph.nodes[name]
        if isinstance(node, (nir.Input, nir.Output)):
            continue
        m = _module(name, node, dt, nir)
        if isinstance(m, str):
            refused.append((name, f"nir.{type(node).__name__}", m))
        else:
            modules.append(m)
    if refused:
        raise UnconvertibleError("NIR", refused, what="node")
    return TimeMajor(nn.Sequential(*modules))
