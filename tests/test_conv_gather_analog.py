"""The gather conv kernel on analog input (``packed_conv2d_chunked_analog_cpu``): dense and pruned
layouts, every packed format, against the references -- bit for bit on integer-valued input
(SEW sums: exact in fp32), to float rounding on real values; NaN propagates."""
import pytest
import torch
import torch.nn.functional as F

from sparsesnn import _ext, reference
from sparsesnn.nn import PackedSpikingConv2d
from sparsesnn.ops.packed_conv2d import packed_conv2d_op
from sparsesnn.ops.pruned_conv2d import dense_rows, pruned_conv2d_op, tap_mask
from sparsesnn.quant import QuantSpec

from _conv_cases import CONV_GEOMS  # noqa: E402

pytestmark = pytest.mark.skipif(not _ext.available(), reason="needs the extension")
FORMATS = ["int8", "int4", "int2", "ternary", "binary"]


def rows_of(m):
    if m.layout == "dense":
        return m.weights
    return dense_rows(m.index, m.values, m.bits, m.out_channels, m.in_channels * m.kernel_size[0] * m.kernel_size[1])


def reference_of(m, x):
    return reference.packed_conv2d(x, rows_of(m), m.scale, m.bias, m.bits, m.out_channels, m.kernel_size,
                                   m.stride, m.padding, m.dilation, m.group_size)


def op_call(m, x):
    geom = (list(m.kernel_size), list(m.stride), list(m.padding), list(m.dilation))
    if m.layout == "pruned":
        return pruned_conv2d_op(x, m.index, m.values, m.scale, m.bias, m.bits, m.out_channels, *geom,
                                m.group_size, False)
    return packed_conv2d_op(x, m.weights, m.scale, m.bias, m.bits, m.out_channels, *geom, m.group_size, False)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("geom", CONV_GEOMS)
@pytest.mark.parametrize("pruned", [False, True])
def test_analog_gather_matches_reference(fmt, geom, pruned):
    C, O, k, s, p, d, H, W = geom
    torch.manual_seed(7)
    conv = torch.nn.Conv2d(C, O, k, stride=s, padding=p, dilation=d)
    mask = tap_mask(conv.weight, 0.6) if pruned and fmt != "binary" else None
    m = PackedSpikingConv2d.from_float(conv, QuantSpec(fmt), mask=mask)
    g = torch.Generator().manual_seed(C * 31 + O)
    counts = torch.randint(-2, 4, (3, C, H, W), generator=g).float()  # integer sums, some negative
    counts[0, 0] = 0.0  # a silent plane
    for x in (counts, counts * 0.5):  # halves and small integers: exact in fp32 in any order
        assert torch.equal(op_call(m, x), reference_of(m, x))
        assert torch.equal(m(x), reference_of(m, x))
    xa = torch.randn(3, C, H, W, generator=g)
    want = F.conv2d(xa, m.dequantized_weight(), conv.bias, s, p, d)
    torch.testing.assert_close(op_call(m, xa), want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(m(xa), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("pruned", [False, True])
def test_analog_gather_large_layer_threads_and_nonfinite(pruned):
    """A layer with output chunks beyond one register tile, in row bands on 1 and 2 threads,
    time-major input; a NaN input poisons the outputs whose window reads it (dense layout:
    exactly the reference's)."""
    torch.manual_seed(8)
    conv = torch.nn.Conv2d(24, 300, 3, padding=1)
    m = PackedSpikingConv2d.from_float(conv, "int4", mask=tap_mask(conv.weight, 0.8) if pruned else None)
    assert m.layout == ("pruned" if pruned else "dense")
    g = torch.Generator().manual_seed(9)
    x = torch.rand(2, 1, 24, 20, 20, generator=g) * (torch.rand(2, 1, 24, 20, 20, generator=g) < 0.4)
    threads = torch.get_num_threads()
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            want = F.conv2d(x.flatten(0, 1), m.dequantized_weight(), conv.bias, 1, 1).reshape(2, 1, 300, 20, 20)
            torch.testing.assert_close(m(x), want, rtol=1e-4, atol=1e-4)
            xi = (x * 4).round()
            assert torch.equal(m(xi).flatten(0, 1), reference_of(m, xi.flatten(0, 1)))
    finally:
        torch.set_num_threads(threads)
    xn = x[:, 0].clone()
    xn[1, 3, 7, 7] = float("nan")
    got, want = op_call(m, xn), reference_of(m, xn)
    if pruned:  # a pruned tap does not read its input: the NaN reaches the kept taps' outputs only
        assert bool(got.isnan().any()) and not bool((got.isnan() & ~want.isnan()).any())
    else:
        assert torch.equal(got.isnan(), want.isnan())
    ok = ~want.isnan()
    torch.testing.assert_close(got[ok & ~got.isnan()], want[ok & ~got.isnan()], rtol=1e-4, atol=1e-4)
