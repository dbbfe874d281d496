"""Randomized differential tests: every op against ``reference.py`` over random shapes (empty and
size-1 dims included), strides, dtypes, densities 0..1, parameters and seeds (hypothesis).

Default run: ``DEFAULT_CASES`` cases per op. At scale (>= 10,000 cases per op)::

    python -m pytest -m fuzz tests/test_differential.py -q
"""
import math
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparsesnn import FixedPoint, reference
from sparsesnn import functional as F
from sparsesnn.nn import PackedSpikingConv2d, PackedSpikingLinear
from sparsesnn.quant import QuantSpec, dequantize, pack, quantize, unpack
from sparsesnn.surrogate import SURROGATES

pytestmark = pytest.mark.usefixtures("kernel_required")

DEFAULT_CASES = int(os.environ.get("SPARSESNN_DIFF_CASES", "100"))
FUZZ_CASES = int(os.environ.get("SPARSESNN_FUZZ_CASES", "10000"))
FORMATS = ("int8", "int4", "int2", "ternary", "binary")


def _twice(strategy, body):
    """(default test, fuzz-marked test) of one property: same strategy, different case counts."""
    def make(n, mark):
        @settings(max_examples=n, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(case=strategy)
        def test(case):
            body(case)
        return mark(test) if mark else test
    return make(DEFAULT_CASES, None), make(FUZZ_CASES, pytest.mark.fuzz)


def _spikes(seed: int, shape, density: float, dtype=torch.float32, strided: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if strided and len(shape) >= 2:  # a transposed (non-contiguous) view with the same shape
        t = (torch.rand(*shape[:-2], shape[-1], shape[-2], generator=g) < density).transpose(-1, -2)
    else:
        t = torch.rand(*shape, generator=g) < density
    return t if dtype == torch.bool else t.to(dtype)


dims = st.integers(0, 5) | st.integers(6, 40)
seeds = st.integers(0, 2**31 - 1)
densities = st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0)


# ---- neurons: LIF / IF / PLIF forward + backward, every option ------------------------------
neuron_cases = st.fixed_dictionaries({
    "kind": st.sampled_from(["lif", "if", "plif"]), "T": st.integers(0, 6),
    "shape": st.lists(st.integers(0, 9), min_size=1, max_size=3) | st.tuples(st.integers(10, 3000)),
    "tau": st.floats(1.01, 20.0), "v_threshold": st.floats(0.05, 3.0),
    "v_reset": st.none() | st.floats(-1.0, 0.5), "decay_input": st.booleans(),
    "detach_reset": st.booleans(), "surrogate": st.sampled_from(sorted(SURROGATES)),
    "alpha": st.none() | st.floats(0.1, 8.0), "v0": st.booleans(), "seed": seeds,
    "w": st.floats(-3.0, 3.0), "quant": st.none() | st.tuples(st.integers(6, 20), st.integers(0, 8),
                                                             st.sampled_from(["nearest", "truncate", "stochastic"]))})


def _neuron(case):
    g = torch.Generator().manual_seed(case["seed"])
    x = torch.randn(case["T"], *case["shape"], generator=g) * 1.5
    v0 = torch.randn(*case["shape"], generator=g) * 0.5 if case["v0"] else None
    fmt = None
    if case["quant"] is not None:
        bits, frac, rounding = case["quant"]
        fmt = FixedPoint(bits, min(frac, bits - 2), rounding, seed=case["seed"] % 2**32)
    kind = case["kind"]
    common = dict(v_threshold=case["v_threshold"], v_reset=case["v_reset"], detach_reset=case["detach_reset"],
                  surrogate=case["surrogate"], alpha=case["alpha"], state_quant=fmt)
    w = torch.tensor(case["w"])
    if kind == "lif":
        s, v = F.lif(x, v0, tau=case["tau"], decay_input=case["decay_input"], **common)
        decay, decay_input = 1.0 / case["tau"], case["decay_input"]
    elif kind == "if":
        s, v = F.if_neuron(x, v0, **common)
        decay, decay_input = 1.0, True
    else:
        s, v = F.plif(x, w, v0, decay_input=case["decay_input"], **common)
        decay, decay_input = float(torch.sigmoid(w)), case["decay_input"]
    rs, rv, _ = reference.lif_forward(x, v0, decay, case["v_threshold"], case["v_reset"], decay_input,
                                      kind != "if", fmt)
    assert s.shape == rs.shape and v.shape == rv.shape
    assert torch.equal(s, rs), "spikes differ"
    torch.testing.assert_close(v, rv, rtol=1e-5, atol=1e-5)
    if fmt is not None or case["T"] == 0:
        return
    # backward (fp32 state): kernel gradient vs autograd through the reference loop
    xk = x.clone().requires_grad_()
    xr = x.clone().requires_grad_()
    wk = w.clone().requires_grad_()
    wr = w.clone().requires_grad_()
    common["state_quant"] = None
    if kind == "lif":
        sk, vk = F.lif(xk, v0, tau=case["tau"], decay_input=case["decay_input"], **common)
    elif kind == "if":
        sk, vk = F.if_neuron(xk, v0, **common)
    else:
        sk, vk = F.plif(xk, wk, v0, decay_input=case["decay_input"], **common)
    d = torch.sigmoid(wr) if kind == "plif" else decay
    sr, vr = reference.lif_autograd(xr, v0, d, case["v_threshold"], case["v_reset"], decay_input,
                                    kind != "if", case["detach_reset"], case["surrogate"], case["alpha"])
    gs = torch.randn(sk.shape, generator=torch.Generator().manual_seed(case["seed"] + 1))
    gv = torch.randn(vk.shape, generator=torch.Generator().manual_seed(case["seed"] + 2))
    ((sk * gs).sum() + (vk * gv).sum()).backward()
    ((sr * gs).sum() + (vr * gv).sum()).backward()
    scale = 1.0 + float(xr.grad.abs().max()) if xr.grad.numel() else 1.0
    torch.testing.assert_close(xk.grad, xr.grad, rtol=1e-3, atol=1e-4 * scale)
    if kind == "plif":
        scale = 1.0 + abs(float(wr.grad))
        torch.testing.assert_close(wk.grad, wr.grad, rtol=1e-3, atol=1e-3 * scale * max(1, x.numel()) ** 0.5)


test_neurons, test_neurons_fuzz = _twice(neuron_cases, _neuron)


# ---- spike_linear forward + grad_weight -------------------------------------------------------
linear_cases = st.fixed_dictionaries({
    "lead": st.lists(dims, min_size=1, max_size=2), "K": dims, "N": dims, "density": densities,
    "dtype": st.sampled_from([torch.float32, torch.bool, torch.uint8]), "strided": st.booleans(),
    "bias": st.booleans(), "seed": seeds})


def _spike_linear(case):
    K, N = case["K"], case["N"]
    s = _spikes(case["seed"], (*case["lead"], K), case["density"], case["dtype"], case["strided"])
    g = torch.Generator().manual_seed(case["seed"])
    w = torch.randn(N, K, generator=g).requires_grad_()
    b = torch.randn(N, generator=g) if case["bias"] else None
    y = F.spike_linear(s, w, b)
    want = reference.spike_linear(s, w.detach(), b)
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-4)
    go = torch.randn(y.shape, generator=g)
    y.backward(go)
    rows = math.prod(case["lead"])
    gw = reference.spike_linear_grad_weight(s.reshape(rows, K), go.reshape(rows, N))
    torch.testing.assert_close(w.grad, gw, rtol=1e-5, atol=1e-4)


test_spike_linear, test_spike_linear_fuzz = _twice(linear_cases, _spike_linear)


# ---- spike_conv2d forward ---------------------------------------------------------------------
conv_cases = st.fixed_dictionaries({
    "N": st.integers(0, 3), "C": st.integers(1, 6), "O": st.integers(1, 6), "H": st.integers(1, 12),
    "W": st.integers(1, 12), "k": st.tuples(st.integers(1, 4), st.integers(1, 4)),
    "stride": st.tuples(st.integers(1, 3), st.integers(1, 3)), "padding": st.tuples(st.integers(0, 3), st.integers(0, 3)),
    "dilation": st.tuples(st.integers(1, 2), st.integers(1, 2)), "groups": st.sampled_from([1, 2, 3]),
    "density": densities, "bias": st.booleans(), "seed": seeds})


def _conv_ok(c) -> bool:
    return all(c[h] + 2 * c["padding"][i] >= c["dilation"][i] * (c["k"][i] - 1) + 1 for i, h in enumerate("HW"))


def _spike_conv2d(case):
    if not _conv_ok(case):
        return
    groups = case["groups"]
    C, O = case["C"] * groups, case["O"] * groups
    s = _spikes(case["seed"], (case["N"], C, case["H"], case["W"]), case["density"])
    g = torch.Generator().manual_seed(case["seed"])
    w = torch.randn(O, C // groups, *case["k"], generator=g)
    b = torch.randn(O, generator=g) if case["bias"] else None
    y = F.spike_conv2d(s, w, b, case["stride"], case["padding"], case["dilation"], groups)
    want = torch.nn.functional.conv2d(s.double(), w.double(), None if b is None else b.double(),
                                      case["stride"], case["padding"], case["dilation"], groups)
    torch.testing.assert_close(y.double(), want, rtol=1e-5, atol=1e-4)


test_spike_conv2d, test_spike_conv2d_fuzz = _twice(conv_cases, _spike_conv2d)


# ---- packed / pruned linear: every format, group size, spike and analog input ----------------
packed_cases = st.fixed_dictionaries({
    "fmt": st.sampled_from(("fp32",) + FORMATS), "group": st.sampled_from([None, 1, 3, 16, 64]),
    "M": dims, "K": st.integers(1, 5) | st.integers(6, 600), "N": st.integers(1, 5) | st.integers(6, 90),
    "prune": st.none() | st.floats(0.0, 1.0), "density": densities, "analog": st.booleans(),
    "bias": st.booleans(), "seed": seeds})


def _packed_linear(case):
    fmt, K, N = case["fmt"], case["K"], case["N"]
    g = torch.Generator().manual_seed(case["seed"])
    lin = torch.nn.Linear(K, N, bias=case["bias"])
    with torch.no_grad():
        lin.weight.copy_(torch.randn(N, K, generator=g))
    spec = None if fmt == "fp32" else QuantSpec(fmt, group_size=case["group"])
    mask = None
    if case["prune"] is not None and fmt != "binary":
        mask = torch.rand(N, K, generator=g) >= case["prune"]
    m = PackedSpikingLinear.from_float(lin, spec, mask=mask)
    x = torch.randn(case["M"], K, generator=g) if case["analog"] else _spikes(case["seed"], (case["M"], K), case["density"])
    y = m(x)
    if m.layout == "pruned":
        want = reference.pruned_linear(x, m.row_ptr, m.index, m.values, m.scale, m.bias, m.bits, N, m.group_size)
    else:
        want = reference.packed_linear(x, m.weights, m.scale, m.bias, m.bits, N, m.group_size)
    tol = 1e-4 * (1 + float(want.abs().max())) if want.numel() else 0
    torch.testing.assert_close(y.double(), want.double(), rtol=1e-4, atol=tol)


test_packed_linear, test_packed_linear_fuzz = _twice(packed_cases, _packed_linear)


# ---- packed conv ------------------------------------------------------------------------------
pconv_cases = st.fixed_dictionaries({
    "fmt": st.sampled_from(("fp32",) + FORMATS), "N": st.integers(0, 3), "C": st.integers(1, 6),
    "O": st.integers(1, 20), "H": st.integers(1, 10), "W": st.integers(1, 10),
    "k": st.tuples(st.integers(1, 3), st.integers(1, 3)), "stride": st.tuples(st.integers(1, 2), st.integers(1, 2)),
    "padding": st.tuples(st.integers(0, 2), st.integers(0, 2)), "dilation": st.tuples(st.integers(1, 2), st.integers(1, 2)),
    "density": densities, "analog": st.booleans(), "bias": st.booleans(), "seed": seeds})


def _packed_conv(case):
    if not _conv_ok(case):
        return
    g = torch.Generator().manual_seed(case["seed"])
    conv = torch.nn.Conv2d(case["C"], case["O"], case["k"], case["stride"], case["padding"], case["dilation"],
                           bias=case["bias"])
    spec = None if case["fmt"] == "fp32" else QuantSpec(case["fmt"])
    m = PackedSpikingConv2d.from_float(conv, spec)
    shape = (case["N"], case["C"], case["H"], case["W"])
    x = torch.randn(*shape, generator=g) if case["analog"] else _spikes(case["seed"], shape, case["density"])
    y = m(x)
    want = torch.nn.functional.conv2d(x.double(), m.dequantized_weight().double(),
                                      None if m.bias is None else m.bias.double(), m.stride, m.padding, m.dilation)
    tol = 1e-4 * (1 + float(want.abs().max())) if want.numel() else 0
    torch.testing.assert_close(y.double(), want, rtol=1e-4, atol=tol)


test_packed_conv2d, test_packed_conv2d_fuzz = _twice(pconv_cases, _packed_conv)


# ---- pack / unpack, quantize / dequantize -----------------------------------------------------
pack_cases = st.fixed_dictionaries({"fmt": st.sampled_from(FORMATS), "N": dims, "K": dims, "seed": seeds,
                                    "group": st.sampled_from([None, 1, 2, 7, 32]), "spread": st.floats(1e-3, 1e3)})


def _pack_quant(case):
    fmt, N, K = case["fmt"], case["N"], case["K"]
    spec = QuantSpec(fmt, group_size=case["group"])
    g = torch.Generator().manual_seed(case["seed"])
    w = torch.randn(N, K, generator=g) * case["spread"]
    codes, scale = quantize(w, spec)
    bits = spec.storage_bits
    p = pack(codes, bits)
    assert torch.equal(p, reference.pack_codes(codes, bits))
    assert torch.equal(unpack(p, bits, (N, K)), codes)
    lo, hi = {"int8": (-127, 127), "int4": (-7, 7), "int2": (-1, 1), "ternary": (-1, 1), "binary": (-1, 1)}[fmt]
    assert codes.numel() == 0 or (int(codes.min()) >= lo and int(codes.max()) <= hi)
    if fmt == "binary":
        assert codes.numel() == 0 or bool((codes != 0).all())
    deq = dequantize(codes, scale, spec)
    G = math.ceil(K / case["group"]) if case["group"] and case["group"] < K and K else 1
    s = scale.reshape(N, G).repeat_interleave(case["group"] if G > 1 else max(K, 1), dim=1)[:, :K] if N and K else scale
    if N and K:
        torch.testing.assert_close(deq, codes.float() * s, rtol=0, atol=0)


test_pack_quantize, test_pack_quantize_fuzz = _twice(pack_cases, _pack_quant)


# ---- regressions found by the randomized tests ------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("shape", [(0, 0), (3, 0), (0, 5)])
def test_quantize_empty_weight(fmt, shape):
    """Found by test_pack_quantize: quantize() of a weight with no inputs (K == 0) raised
    IndexError from an empty amax; it now returns empty codes and a unit scale."""
    codes, scale = quantize(torch.zeros(shape), QuantSpec(fmt))
    assert codes.shape == shape and codes.dtype == torch.int8
    assert scale.shape == (shape[0],)
    assert torch.equal(dequantize(codes, scale, QuantSpec(fmt)), torch.zeros(shape))
