"""PackedSpikingConv2d / sparsesnn::packed_conv2d against the references."""
import io

import pytest
import torch
import torch.nn.functional as F

from sparsesnn import reference
from sparsesnn.nn import PackedSpikingConv2d
from sparsesnn.ops.packed_conv2d import packed_conv2d_op
from sparsesnn.quant import QuantSpec, dequantize, quantize

from _conv_cases import CONV_GEOMS  # noqa: E402

FORMATS = ["int8", "int4", "int2", "ternary", "binary", None]
GEOMS = CONV_GEOMS


def spikes(shape, density, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) < density).float()


def int_reference(m, x):
    return reference.packed_conv2d(x, m.weights, m.scale, m.bias, m.bits, m.out_channels, m.kernel_size,
                                   m.stride, m.padding, m.dilation, m.group_size)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("geom", GEOMS)
def test_spike_exact(fmt, geom):
    C, O, k, s, p, d, H, W = geom
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(C, O, k, stride=s, padding=p, dilation=d)
    m = PackedSpikingConv2d.from_float(conv, QuantSpec(fmt) if fmt else None)
    x = spikes((3, C, H, W), 0.2)
    y = m(x)
    Wd = m.dequantized_weight()
    ref = F.conv2d(x, Wd, conv.bias, s, p, d)
    assert y.shape == ref.shape
    if fmt is None:
        torch.testing.assert_close(Wd, conv.weight.detach())
    else:
        assert torch.equal(y, int_reference(m, x))
        codes, scale = quantize(conv.weight, QuantSpec(fmt))
        torch.testing.assert_close(Wd, dequantize(codes, scale))
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("density", [0.0, 0.001, 0.01, 0.05, 0.2, 0.5, 1.0])
def test_densities_time_major(density):
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(4, 12, 3, padding=1)
    m = PackedSpikingConv2d.from_float(conv, QuantSpec(4))
    x = spikes((3, 2, 4, 8, 8), density, seed=int(density * 1000))
    y = m(x)
    assert y.shape == (3, 2, 12, 8, 8)
    assert torch.equal(y.reshape(6, 12, 8, 8), int_reference(m, x.reshape(6, 4, 8, 8)))


@pytest.mark.parametrize("fmt", FORMATS)
def test_analog_and_groups(fmt):
    torch.manual_seed(2)
    conv = torch.nn.Conv2d(3, 10, 3, stride=2, padding=1)
    m = PackedSpikingConv2d.from_float(conv, QuantSpec(fmt, group_size=10) if fmt else None)
    x = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(m(x), F.conv2d(x, m.dequantized_weight(), conv.bias, 2, 1), rtol=1e-4, atol=1e-4)
    xs = spikes((2, 3, 9, 9), 0.3)
    torch.testing.assert_close(m(xs), F.conv2d(xs, m.dequantized_weight(), conv.bias, 2, 1), rtol=1e-5, atol=1e-5)


def test_mask_and_bytes():
    torch.manual_seed(3)
    conv = torch.nn.Conv2d(8, 16, 3, padding=1, bias=False)
    mask = torch.rand(16, 8, 3, 3) < 0.5
    m = PackedSpikingConv2d.from_float(conv, QuantSpec(4), mask=mask)
    assert not bool(m.dequantized_weight()[~mask].any())
    x = spikes((2, 8, 6, 6), 0.3)
    torch.testing.assert_close(m(x), F.conv2d(x, m.dequantized_weight(), None, 1, 1), rtol=1e-5, atol=1e-5)
    assert m.model_bytes() == 72 * 8 + 16 * 4
    with pytest.raises(ValueError, match="mask"):
        PackedSpikingConv2d.from_float(conv, QuantSpec("binary"), mask=mask)


def test_state_dict_roundtrip():
    torch.manual_seed(4)
    conv = torch.nn.Conv2d(16, 32, 3, stride=2, padding=1)
    m = PackedSpikingConv2d.from_float(conv, QuantSpec("ternary"))
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    assert buf.tell() <= m.model_bytes() + 8192
    buf.seek(0)
    m2 = PackedSpikingConv2d()
    m2.load_state_dict(torch.load(buf))
    assert (m2.kernel_size, m2.stride, m2.padding) == ((3, 3), (2, 2), (1, 1))
    x = spikes((2, 16, 8, 8), 0.1)
    assert torch.equal(m2(x), m(x))


def test_backward_and_opcheck():
    torch.manual_seed(5)
    conv = torch.nn.Conv2d(3, 6, 3, padding=1)
    m = PackedSpikingConv2d.from_float(conv, QuantSpec(8))
    x = torch.randn(2, 3, 5, 5, requires_grad=True)
    m(x).pow(2).sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    F.conv2d(x2, m.dequantized_weight(), conv.bias, 1, 1).pow(2).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-4)
    xs = spikes((2, 3, 5, 5), 0.3)
    args = (xs, m.weights, m.scale, m.bias, m.bits, 6, [3, 3], [1, 1], [1, 1], [1, 1], 0, True)
    torch.library.opcheck(packed_conv2d_op, args)


def test_errors():
    with pytest.raises(ValueError, match=r"^conv\.groups: only groups=1"):
        PackedSpikingConv2d.from_float(torch.nn.Conv2d(4, 4, 3, groups=2), QuantSpec(4))
    with pytest.raises(ValueError, match="^bits: "):
        PackedSpikingConv2d.from_float(torch.nn.Conv2d(4, 4, 3), 3)
    conv = torch.nn.Conv2d(2, 4, 3)
    with torch.no_grad():
        conv.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"^conv\.weight: contains NaN or inf"):
        PackedSpikingConv2d.from_float(conv, QuantSpec(4))
    m = PackedSpikingConv2d.from_float(torch.nn.Conv2d(2, 4, 3), QuantSpec(4))
    with pytest.raises(ValueError, match="^input: "):
        m(torch.zeros(1, 3, 5, 5))
    with pytest.raises(ValueError, match="^input: "):
        m(torch.zeros(3, 5, 5))
    with pytest.raises(ValueError, match="^input: "):
        m(torch.zeros(1, 2, 2, 2))


@pytest.mark.parametrize("fmt", ["int4", "int2", "binary", None])
def test_single_image_split_channels(fmt):
    # One image and many output channels: the CPU kernel splits channels between threads.
    torch.manual_seed(6)
    conv = torch.nn.Conv2d(3, 70, 3, padding=1)
    m = PackedSpikingConv2d.from_float(conv, QuantSpec(fmt, group_size=9) if fmt else None)
    x = spikes((1, 3, 7, 6), 0.3)
    y = m(x)
    if fmt is not None:
        torch.testing.assert_close(y, int_reference(m, x), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(y, F.conv2d(x, m.dequantized_weight(), conv.bias, 1, 1), rtol=1e-5, atol=1e-5)
    xa = torch.randn(1, 3, 7, 6)
    torch.testing.assert_close(m(xa), F.conv2d(xa, m.dequantized_weight(), conv.bias, 1, 1), rtol=1e-4, atol=1e-4)
