"""Pruned compressed-row layout (optionally with packed values) against the references."""
import io

import pytest
import torch
import torch.nn.functional as F

from sparsesnn import reference
from sparsesnn.nn import PackedSpikingLinear
from sparsesnn.ops.pruned_linear import pruned_linear_op
from sparsesnn.quant import QuantSpec, dequantize, quantize

FORMATS = ["int8", "int4", "int2", "ternary", "binary", None]


def spikes(shape, density, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) < density).float()


def make(K, N, fmt, keep=0.2, group_size=None, seed=0):
    torch.manual_seed(seed)
    lin = torch.nn.Linear(K, N)
    mask = torch.rand(N, K) < keep
    spec = QuantSpec(fmt, group_size=group_size) if fmt else None
    return lin, mask, PackedSpikingLinear.from_float(lin, spec, mask=mask)


def int_reference(m, x):
    x2 = x.reshape(-1, m.in_features)
    y = reference.pruned_linear(x2, m.row_ptr, m.index, m.values, m.scale, m.bias, m.bits,
                                m.out_features, m.group_size)
    return y.reshape(*x.shape[:-1], m.out_features)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("density", [0.0, 0.001, 0.01, 0.05, 0.2, 0.5, 1.0])
def test_spike(fmt, density):
    lin, mask, m = make(300, 211, fmt)
    assert m.layout == "pruned" and m.nnz() == int(mask.sum())
    x = spikes((2, 4, 300), density, seed=int(density * 100))
    y = m(x)
    W = m.dequantized_weight()
    assert not bool(W[~mask].any())  # pruned synapses are gone
    if fmt is None:
        torch.testing.assert_close(W, lin.weight.detach() * mask)
        torch.testing.assert_close(y, F.linear(x, lin.weight * mask, lin.bias), rtol=1e-5, atol=1e-5)
    else:
        assert torch.equal(y, int_reference(m, x))
        codes, scale = quantize(lin.weight * mask, QuantSpec(fmt))
        torch.testing.assert_close(W, dequantize(codes, scale) * mask)
        torch.testing.assert_close(y, F.linear(x, W, lin.bias), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fmt", FORMATS)
def test_analog_and_groups(fmt):
    lin, mask, m = make(130, 77, fmt, keep=0.3, group_size=32 if fmt else None)
    x = torch.randn(5, 130)
    torch.testing.assert_close(m(x), F.linear(x, m.dequantized_weight(), lin.bias), rtol=1e-4, atol=1e-4)
    xs = spikes((5, 130), 0.3)
    torch.testing.assert_close(m(xs), F.linear(xs, m.dequantized_weight(), lin.bias), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("keep", [0.0, 1.0])
def test_empty_and_full_masks(keep):
    lin, mask, m = make(40, 30, "int4", keep=keep)
    x = spikes((3, 40), 0.5)
    torch.testing.assert_close(m(x), F.linear(x, m.dequantized_weight(), lin.bias))
    if keep == 0.0:
        torch.testing.assert_close(m(x), lin.bias.detach().expand(3, 30))


def test_auto_layout_from_zeros():
    torch.manual_seed(0)
    lin = torch.nn.Linear(100, 50)
    with torch.no_grad():
        lin.weight[torch.rand(50, 100) < 0.7] = 0.0
    m = PackedSpikingLinear.from_float(lin, None)
    assert m.layout == "pruned" and m.nnz() == int((lin.weight != 0).sum())
    x = spikes((4, 100), 0.2)
    torch.testing.assert_close(m(x), F.linear(x, lin.weight, lin.bias), rtol=1e-5, atol=1e-5)
    dense = PackedSpikingLinear.from_float(torch.nn.Linear(100, 50), None)
    assert dense.layout == "dense"


def test_model_bytes_smaller_than_dense():
    lin, mask, m = make(512, 512, "int4", keep=0.1)
    dense = PackedSpikingLinear.from_float(lin, QuantSpec(4))
    nnz = int(mask.sum())
    assert m.model_bytes() == (513 * 4) + nnz * 2 + (nnz * 4 + 7) // 8 + 512 * 4 + 512 * 4
    assert m.model_bytes() < 0.6 * dense.model_bytes()  # 10% kept: (16-bit index + 4-bit code) / 4 bits


def test_int32_index_for_wide_layers():
    lin = torch.nn.Linear(2, 65537)
    mask = torch.zeros(65537, 2, dtype=torch.bool)
    mask[[0, 40000, 65536], 0] = True
    mask[[1, 65535], 1] = True
    m = PackedSpikingLinear.from_float(lin, QuantSpec(8), mask=mask)
    assert m.index.dtype == torch.int32
    x = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    torch.testing.assert_close(m(x), F.linear(x, m.dequantized_weight(), lin.bias))
    m16 = PackedSpikingLinear.from_float(torch.nn.Linear(2, 300), QuantSpec(8), mask=torch.rand(300, 2) < 0.5)
    assert m16.index.dtype == torch.uint16


def test_state_dict_roundtrip():
    lin, mask, m = make(256, 128, "int2", keep=0.1)
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    assert buf.tell() <= m.model_bytes() + 8192
    buf.seek(0)
    m2 = PackedSpikingLinear(4, 4, QuantSpec(8))
    m2.load_state_dict(torch.load(buf))
    assert m2.layout == "pruned" and m2.weights is None
    x = spikes((3, 256), 0.2)
    assert torch.equal(m2(x), m(x))


def test_backward_and_opcheck():
    lin, mask, m = make(48, 20, "int4")
    x = torch.randn(3, 48, requires_grad=True)
    m(x).sum().backward()
    torch.testing.assert_close(x.grad, m.dequantized_weight().sum(0).expand(3, 48), rtol=1e-5, atol=1e-5)
    xs = spikes((3, 48), 0.3)
    args = (xs, m.row_ptr, m.index, m.values, m.scale, m.bias, m.bits, 20, m.group_size, True)
    torch.library.opcheck(pruned_linear_op, args)
    lin, mask, mf = make(48, 20, None)
    xa = torch.randn(3, 48, requires_grad=True)
    torch.library.opcheck(pruned_linear_op, (xa, mf.row_ptr, mf.index, mf.values, mf.scale, mf.bias,
                                             32, 20, 0, False))


def test_mask_errors():
    lin = torch.nn.Linear(8, 4)
    with pytest.raises(ValueError, match="mask"):
        PackedSpikingLinear.from_float(lin, QuantSpec(4), mask=torch.ones(4, 7, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        PackedSpikingLinear.from_float(lin, QuantSpec(4), mask=torch.full((4, 8), 0.5))


@pytest.mark.parametrize("fmt", ["int4", None])
def test_single_row_split_outputs(fmt):
    # One input row and many outputs: the CPU kernel splits outputs between threads.
    lin, mask, m = make(300, 1030, fmt, keep=0.15, group_size=64 if fmt else None)
    for x in [spikes((1, 300), 0.2), spikes((300,), 0.05, seed=3), torch.randn(1, 300)]:
        torch.testing.assert_close(m(x), F.linear(x, m.dequantized_weight(), lin.bias), rtol=1e-5, atol=1e-4)
