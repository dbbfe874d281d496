"""sparsesnn.runtime, conv paths: the analog stem conv, max pooling of spikes and pooled spikes
listed into a linear layer equal the eager deployed model bit for bit; the conv demo model."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsesnn import runtime
from sparsesnn.deploy import deploy
from sparsesnn.nn import LIF, Flatten, MaxPool2d, PackedSpikingConv2d, PackedSpikingLinear
from sparsesnn.quant import QuantSpec

from _runtime_cases import eager as _eager, require_runtime  # noqa: E402

require_runtime()

T = 4


def _analog_input(shape, seed):
    """Values of both signs with exact zeros (skipped by the kernels) and exact ones."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    x[torch.rand(shape, generator=g) < 0.3] = 0.0
    x[torch.rand(shape, generator=g) < 0.1] = 1.0
    return x


def _conv(c, o, k, stride=1, padding=0, dilation=1, gain=1.0, seed=0):
    torch.manual_seed(seed)
    conv = nn.Conv2d(c, o, k, stride=stride, padding=padding, dilation=dilation)
    with torch.no_grad():
        conv.weight.mul_(gain)
    return conv


@pytest.mark.parametrize("bits", ["int8", "int4", "int2", "binary"])
@pytest.mark.parametrize("geom", [(3, 1, 1, 1), (3, 2, 1, 1), (3, 1, 0, 2), (1, 1, 0, 1), (5, 2, 2, 1), (2, 3, 0, 1)],
                         ids=lambda g: "k{}s{}p{}d{}".format(*g))
def test_analog_conv_bit_identical(bits, geom):
    """Analog input (the direct-encoded stem): the plan runs the eager module's analog gather
    kernel and gives exactly its floats."""
    k, s, p, d = geom
    layer = PackedSpikingConv2d.from_float(_conv(3, 37, k, s, p, d, seed=k + s), bits)
    for batch in (1, 3):
        x = _analog_input((T, batch, 3, 9, 8), seed=batch)
        got, want = runtime.compile(layer, x)(x), _eager(layer, x)
        assert torch.equal(got, want)


def test_analog_conv_other_formats_and_modes():
    """Scale groups (general kernel), fp32 rows, and binary input forced down the analog path."""
    conv = _conv(4, 9, 3, padding=1, seed=2)
    layers = [PackedSpikingConv2d.from_float(conv, QuantSpec(4, group_size=8)),
              PackedSpikingConv2d.from_float(conv, None),
              PackedSpikingConv2d.from_float(conv, "int4", input_mode="analog")]
    x = _analog_input((T, 2, 4, 6, 7), seed=3)
    spikes = (torch.rand(T, 2, 4, 6, 7, generator=torch.Generator().manual_seed(4)) < 0.3).float()
    for layer in layers:
        for inp in (x, spikes):
            got, want = runtime.compile(layer, inp)(inp), _eager(layer, inp)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
            if layer.bits == 4 and layer.group_size in (0, None):
                assert torch.equal(got, want)


def test_stem_spikes_identical():
    """The neuron after an analog conv fires exactly where the eager one does."""
    layer = PackedSpikingConv2d.from_float(_conv(2, 16, 3, padding=1, gain=4.0, seed=5), "int4")
    model = nn.Sequential(layer, LIF())
    x = torch.rand(T, 5, 2, 8, 8, generator=torch.Generator().manual_seed(6))
    got, want = runtime.compile(model, x)(x), _eager(model, x)
    assert 0 < want.mean() < 1 and torch.equal(got, want)


@pytest.mark.parametrize("pool", [(2, 2, 0), (3, 2, 1), (3, 1, 1), (2, 1, 0), (1, 1, 0)],
                         ids=lambda p: "k{}s{}p{}".format(*p))
@pytest.mark.parametrize("size", [(8, 8), (9, 7)])
def test_max_pool_of_spikes(pool, size):
    k, s, p = pool
    layer = PackedSpikingConv2d.from_float(_conv(2, 6, 3, padding=1, gain=4.0, seed=7), "int4")
    model = nn.Sequential(layer, LIF(), MaxPool2d(k, s, p))
    x = torch.rand(T, 3, 2, *size, generator=torch.Generator().manual_seed(8))
    got, want = runtime.compile(model, x)(x), _eager(model, x)
    assert 0 < want.mean() < 1 and torch.equal(got, want)


@pytest.mark.parametrize("lists", ["1", "0"])
def test_pooled_spikes_listed_into_linear(lists, monkeypatch):
    """conv -> LIF -> max pool -> flatten -> int4 linear: the pool lists its spikes for the
    linear layer (or, SSNN_SPIKE_LISTS=0, passes the fp32 map): same outputs either way."""
    monkeypatch.setenv("SSNN_SPIKE_LISTS", lists)
    torch.manual_seed(9)
    conv = PackedSpikingConv2d.from_float(_conv(2, 8, 3, padding=1, gain=4.0, seed=9), "int4")
    fc = nn.Linear(8 * 4 * 4, 40)
    with torch.no_grad():
        fc.weight.mul_(4.0)
    for fmt in ("int4", QuantSpec(4, group_size=32)):
        model = nn.Sequential(conv, LIF(), MaxPool2d(2), Flatten(), PackedSpikingLinear.from_float(fc, fmt), LIF())
        for batch in (1, 6):
            x = torch.rand(T, batch, 2, 8, 8, generator=torch.Generator().manual_seed(batch))
            got, want = runtime.compile(model, x)(x), _eager(model, x)
            assert 0 < want.mean() < 1 and torch.equal(got, want)


def test_conv_demo_model_matches_eager():
    """The conv demo's architecture (sparsesnn.demo_conv: direct stem, BN folded, pruned int4
    convs and linears) with trained-like BN statistics."""
    from sparsesnn.models import SpikingVGG
    from sparsesnn.nn import BatchNorm2d
    from sparsesnn.nn.neurons import BaseNeuron

    torch.manual_seed(10)
    model = SpikingVGG([32, "M", 64, "M"], 1, 10, T, image_size=8, hidden=(256,)).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(1.0, 3.0)
            elif getattr(m, "weight", None) is not None and m.weight.dim() in (2, 4):
                m.weight.mul_(3.0)
                keep = torch.rand(m.weight.shape) < (0.3 if m.weight.dim() == 4 and m.weight.shape[1] > 1 else 1.0)
                m.weight.mul_(keep.float())
    d = deploy(model, default_bits=4)
    rates = []
    for m in d.modules():
        if isinstance(m, BaseNeuron):
            m.register_forward_hook(lambda mod, i, o: rates.append(float(o.mean())))
    for batch in (1, 5):
        x = torch.rand(batch, 1, 8, 8, generator=torch.Generator().manual_seed(batch))
        got = runtime.compile(d, x[:1])(x)
        rates.clear()
        want = _eager(d, x)
        assert all(0 < r < 1 for r in rates), rates
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        assert torch.equal(got.argmax(1), want.argmax(1))


@pytest.mark.parametrize("bits", ["int8", "int4", "int2", "binary"])
@pytest.mark.parametrize("geom", [(3, 1, 1, 1), (3, 2, 1, 1), (3, 1, 0, 2), (1, 1, 0, 1), (5, 2, 2, 1)],
                         ids=lambda g: "k{}s{}p{}d{}".format(*g))
@pytest.mark.parametrize("size", [(6, 5), (40, 36)], ids=["small_map", "large_map"])
def test_spike_conv_bit_identical(bits, geom, size):
    """A conv fed by a neuron (spikes known at load, so no binary check) gives exactly the
    eager floats, on small and large maps."""
    k, s, p, d = geom
    layer = PackedSpikingConv2d.from_float(_conv(5, 70, k, s, p, d, gain=3.0, seed=k + 2 * s), bits)
    model = nn.Sequential(LIF(), layer)
    for batch in (1, 3):
        x = 2.5 * torch.rand(T, batch, 5, *size, generator=torch.Generator().manual_seed(batch))
        got, want = runtime.compile(model, x)(x), _eager(model, x)
        assert torch.equal(got, want)


@pytest.mark.parametrize("bits", ["int8", "int4", "int2"])
@pytest.mark.parametrize("sparsity", [0.5, 0.9, 1.0])
@pytest.mark.parametrize("geom", [(3, 1, 1, 1), (3, 2, 1, 1), (5, 1, 2, 2)], ids=lambda g: "k{}s{}p{}d{}".format(*g))
def test_tap_pruned_conv_runs_the_pruned_kernel_bit_identical(bits, sparsity, geom):
    """A conv deployed in the pruned tap-row layout: the plan finds its dropped rows in the
    dense rows it is written with and runs the eager module's pruned gather kernel."""
    from sparsesnn.ops.pruned_conv2d import tap_mask

    k, s, p, d = geom
    conv = _conv(6, 21, k, s, p, d, gain=3.0, seed=int(10 * sparsity) + k)
    mask = tap_mask(conv.weight, sparsity)
    layer = PackedSpikingConv2d.from_float(conv, bits, mask=mask)
    assert layer.layout == "pruned"
    model = nn.Sequential(layer, LIF())
    for batch in (1, 4):
        x = (torch.rand(T, batch, 6, 11, 9, generator=torch.Generator().manual_seed(batch)) < 0.2).float()
        plan = runtime.compile(model, x)
        got, want = plan(x), _eager(model, x)
        assert torch.equal(got, want)
    dense_plan = runtime.compile(nn.Sequential(PackedSpikingConv2d.from_float(conv, bits), LIF()), x)
    # the pruned kernel's row map (an int32 per tap row) and kept rows come on top of the
    # dense rows: proof the loader took the pruned path
    assert plan.weight_bytes() - dense_plan.weight_bytes() >= 6 * k * k * 4
