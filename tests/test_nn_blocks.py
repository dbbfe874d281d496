"""Multi-step building blocks: BatchNorm, pooling, Flatten, Dropout, SEW block; integer-count
input (SEW ADD sums) through the event-driven and packed layers."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF
from torch import nn

from sparsesnn import functional as F
from sparsesnn.nn import (AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, Dropout, Flatten,
                          MaxPool2d, PackedSpikingConv2d, PackedSpikingLinear, SEWBlock,
                          SpikingConv2d, SpikingLinear, reset_net)


def _spikes(*shape, p=0.2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(*shape, generator=g) < p).float()


def test_batchnorm2d_folds_time_into_batch():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 5, 6, 6) * 2 + 1
    bn, ref = BatchNorm2d(5), nn.BatchNorm2d(5)
    y = bn(x)
    want = ref(x.flatten(0, 1)).reshape(x.shape)
    assert torch.allclose(y, want, atol=1e-6)
    # statistics over T * B * H * W: each channel of the output has mean 0, variance 1
    assert torch.allclose(y.mean((0, 1, 3, 4)), torch.zeros(5), atol=1e-5)
    assert torch.allclose(bn.running_mean, ref.running_mean) and torch.allclose(bn.running_var, ref.running_var)
    bn.eval()
    ref.eval()
    assert torch.allclose(bn(x[0]), ref(x[0]), atol=1e-6)  # single step [N, C, H, W]
    with pytest.raises(ValueError, match="^input: "):
        bn(torch.randn(5, 6, 6))


def test_batchnorm1d_multistep():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 7)
    bn, ref = BatchNorm1d(7), nn.BatchNorm1d(7)
    assert torch.allclose(bn(x), ref(x.flatten(0, 1)).reshape(x.shape), atol=1e-6)


@pytest.mark.parametrize("cls,ref", [(MaxPool2d, TF.max_pool2d), (AvgPool2d, TF.avg_pool2d)])
def test_pooling_multistep(cls, ref):
    s = _spikes(3, 2, 4, 8, 8, p=0.3)
    y = cls(2)(s)
    assert y.shape == (3, 2, 4, 4, 4)
    assert torch.equal(y, ref(s.flatten(0, 1), 2).reshape(3, 2, 4, 4, 4))
    if cls is MaxPool2d:  # max of spikes is a spike: the next layer stays event-driven
        assert bool(((y == 0) | (y == 1)).all())
    assert torch.equal(cls(2)(s[0]), ref(s[0], 2))


def test_adaptive_avg_pool_global():
    s = _spikes(2, 3, 4, 5, 5)
    y = AdaptiveAvgPool2d(1)(s)
    assert torch.allclose(y[..., 0, 0], s.mean((-1, -2)))


def test_flatten_keeps_time():
    x = torch.randn(3, 2, 4, 5, 5)
    assert torch.equal(Flatten()(x), x.reshape(3, 2, 100))
    assert torch.equal(Flatten(step_mode="s")(x[0]), x[0].reshape(2, 100))
    with pytest.raises(ValueError, match="^step_mode: "):
        Flatten(step_mode="x")


def test_dropout_one_mask_over_time():
    torch.manual_seed(0)
    d = Dropout(0.4)
    x = torch.ones(5, 8, 300)
    y = d(x)
    assert all(torch.equal(y[t], y[0]) for t in range(5))  # same units dropped at every step
    kept = y[0] != 0
    assert abs(float(kept.float().mean()) - 0.6) < 0.03
    assert torch.allclose(y[0][kept], torch.full_like(y[0][kept], 1 / 0.6))
    y2 = d(x)
    assert not torch.equal(y2, y)  # a new mask per sequence
    d.eval()
    assert d(x) is x
    assert torch.equal(Dropout(0.0)(x), x)
    with pytest.raises(ValueError, match=r"^p: expected a probability in \[0, 1\)"):
        Dropout(1.0)


def test_dropout_matches_spikingjelly_semantics():
    sj_layer = pytest.importorskip("spikingjelly.activation_based.layer")
    torch.manual_seed(0)
    x = torch.ones(4, 2, 50)
    y_sj = sj_layer.Dropout(0.5, step_mode="m")(x)
    # SpikingJelly also shares the mask over time (and scales by 1/(1-p))
    assert all(torch.equal(y_sj[t], y_sj[0]) for t in range(4))
    assert set(torch.unique(y_sj).tolist()) <= {0.0, 2.0}


def test_blocks_match_spikingjelly():
    sj_layer = pytest.importorskip("spikingjelly.activation_based.layer")
    torch.manual_seed(0)
    x = torch.randn(3, 2, 4, 8, 8)
    bn_sj = sj_layer.BatchNorm2d(4, step_mode="m")
    bn = BatchNorm2d(4)
    assert torch.allclose(bn(x), bn_sj(x), atol=1e-6)
    assert torch.allclose(bn.running_var, bn_sj.running_var)
    assert torch.equal(MaxPool2d(2)(x), sj_layer.MaxPool2d(2, step_mode="m")(x))
    assert torch.allclose(AvgPool2d(2)(x), sj_layer.AvgPool2d(2, step_mode="m")(x))
    assert torch.equal(Flatten()(x), sj_layer.Flatten(step_mode="m")(x))


# ---- SEW block -----------------------------------------------------------------------------
@pytest.mark.parametrize("connect", ["ADD", "AND", "IAND"])
@pytest.mark.parametrize("cin,cout,stride", [(4, 4, 1), (4, 8, 2)])
def test_sew_block(connect, cin, cout, stride):
    torch.manual_seed(0)
    blk = SEWBlock(cin, cout, stride, connect=connect)
    s = _spikes(3, 2, cin, 8, 8, p=0.3)
    y = blk(s)
    assert y.shape == (3, 2, cout, 8 // stride, 8 // stride)
    reset_net(blk)
    a = blk.conv2(blk.conv1(s))
    short = s if blk.downsample is None else blk.downsample(s)
    want = {"ADD": a + short, "AND": a * short, "IAND": (1 - a) * short}[connect]
    assert torch.equal(y, want)
    vals = set(torch.unique(y).tolist())
    assert vals <= ({0.0, 1.0, 2.0} if connect == "ADD" else {0.0, 1.0})
    y.sum().backward()
    assert blk.conv1[0].weight.grad is not None
    assert (blk.downsample is None) == (cin == cout and stride == 1)
    assert (blk.in_channels, blk.out_channels, blk.stride, blk.connect) == (cin, cout, stride, connect)


def test_sew_block_bad_args():
    with pytest.raises(ValueError, match="connect"):
        SEWBlock(4, 4, connect="OR")
    with pytest.raises(ValueError, match="^neuron: "):
        SEWBlock(4, 4, neuron="relu")
    with pytest.raises(ValueError, match="^input: "):
        SEWBlock(4, 4)(torch.zeros(2, 3, 8, 8))


# ---- integer spike counts (SEW ADD output) through the synaptic layers --------------------------
def _counts(*shape, seed=0):
    """Sparse small integers 0..2, like the sum of two spike maps."""
    return _spikes(*shape, p=0.15, seed=seed) + _spikes(*shape, p=0.15, seed=seed + 1)


@pytest.mark.parametrize("mode", ["auto", "event"])
def test_spiking_conv_takes_counts(mode):
    torch.manual_seed(0)
    conv = SpikingConv2d(6, 5, 3, padding=1, mode=mode, break_even=1.0, min_macs=0)
    x = _counts(2, 3, 6, 8, 8)
    assert float(x.max()) == 2.0
    y = conv(x)
    want = TF.conv2d(x.flatten(0, 1), conv.weight, conv.bias, padding=1).reshape(y.shape)
    assert torch.allclose(y, want, atol=1e-5)
    assert conv.last_path == "dense"  # the event kernel counts any non-zero as one spike
    conv(_spikes(2, 3, 6, 8, 8))
    assert conv.last_path == "event"


@pytest.mark.parametrize("mode", ["auto", "event"])
def test_spiking_linear_takes_counts(mode):
    torch.manual_seed(0)
    lin = SpikingLinear(64, 7, mode=mode, break_even=1.0, min_macs=0)
    x = _counts(3, 4, 64)
    assert torch.allclose(lin(x), TF.linear(x, lin.weight, lin.bias), atol=1e-5)
    assert lin.last_path == "dense"


def test_functional_spike_ops_reject_counts():
    x = _counts(2, 6, 8, 8)
    with pytest.raises(ValueError, match=r"^s: expected binary spikes \(0/1\)"):
        F.spike_conv2d(x, torch.randn(5, 6, 3, 3), padding=1)
    with pytest.raises(ValueError, match=r"^s: expected binary spikes \(0/1\)"):
        F.spike_linear(x.reshape(2, -1), torch.randn(5, 384))


@pytest.mark.parametrize("bits", [8, 4, None])
def test_packed_layers_take_counts(bits):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 5, 3, padding=1)
    pc = PackedSpikingConv2d.from_float(conv, bits)
    x = _counts(2, 3, 6, 8, 8)
    want = TF.conv2d(x.flatten(0, 1), pc.dequantized_weight(), pc.bias, padding=1).reshape(2, 3, 5, 8, 8)
    assert torch.allclose(pc(x), want, atol=1e-4)
    lin = nn.Linear(64, 7)
    pl = PackedSpikingLinear.from_float(lin, bits)
    xl = _counts(3, 4, 64)
    assert torch.allclose(pl(xl), TF.linear(xl, pl.dequantized_weight(), pl.bias), atol=1e-4)
    with pytest.raises(ValueError, match="^input: "):
        PackedSpikingConv2d.from_float(conv, bits, input_mode="spike")(x)


@pytest.mark.parametrize("shape", [(3, 2, 4, 8, 8), (5, 3, 7, 9), (2, 1, 3, 2, 2), (4, 2, 5, 3)])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_max_pool_two_by_two_inference_path(shape, ceil_mode):
    """Inference 2x2/2 pooling (two strided maximums) equals max_pool2d: spikes, analog values,
    NaN and -inf, odd sizes (floor mode drops the last row/column), ceil mode (standard path
    where it adds windows); with autograd the standard path keeps max_pool2d's tie gradient."""
    g = torch.Generator().manual_seed(len(shape))
    x = torch.randn(shape, generator=g)
    x.view(-1)[::7] = float("-inf")
    x.view(-1)[3] = float("nan")
    pool = MaxPool2d(2, ceil_mode=ceil_mode)
    for inp in (x, (x > 0.5).float()):
        flat = inp.flatten(0, 1) if inp.dim() == 5 else inp
        want = TF.max_pool2d(flat, 2, ceil_mode=ceil_mode)
        with torch.no_grad():
            got = pool(inp)
        assert torch.equal(got.reshape(want.shape).isnan(), want.isnan())
        assert torch.equal(got.reshape(want.shape).nan_to_num(), want.nan_to_num())
        assert got.shape == (*inp.shape[:-3], *want.shape[1:])
    s = (x > 0).float().requires_grad_(True)
    pool(s).sum().backward()
    s2 = s.detach().flatten(0, 1 if s.dim() == 5 else 0).clone().requires_grad_(True)
    TF.max_pool2d(s2, 2, ceil_mode=ceil_mode).sum().backward()
    assert torch.equal(s.grad.reshape(s2.shape), s2.grad)
