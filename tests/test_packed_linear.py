"""PackedSpikingLinear / sparsesnn::packed_linear against the references."""
import io

import pytest
import torch
import torch.nn.functional as F

from sparsesnn import reference
from sparsesnn.nn import PackedSpikingLinear
from sparsesnn.ops.packed_linear import packed_linear_op
from sparsesnn.quant import QuantSpec, dequantize, quantize

FORMATS = ["int8", "int4", "int2", "ternary", "binary", None]
DENSITIES = [0.0, 0.001, 0.01, 0.05, 0.2, 0.5, 1.0]


def spikes(shape, density, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) < density).float()


def make(K, N, fmt, group_size=None, bias=True, seed=0, **kw):
    torch.manual_seed(seed)
    lin = torch.nn.Linear(K, N, bias=bias)
    spec = QuantSpec(fmt, group_size=group_size) if fmt else None
    return lin, PackedSpikingLinear.from_float(lin, spec, **kw)


def int_reference(m, x):
    """Exact integer-sum reference (codes summed in float64, scale once in fp32)."""
    return reference.packed_linear(x.reshape(-1, m.in_features), m.weights, m.scale, m.bias, m.bits,
                                   m.out_features, m.group_size).reshape(*x.shape[:-1], m.out_features)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("density", DENSITIES)
def test_spike_exact(fmt, density):
    lin, m = make(300, 517, fmt)
    x = spikes((4, 3, 300), density, seed=int(density * 1000))
    y = m(x)
    assert y.shape == (4, 3, 517)
    W = m.dequantized_weight()
    if fmt is None:
        torch.testing.assert_close(y, F.linear(x, lin.weight, lin.bias), rtol=1e-5, atol=1e-5)
    else:
        assert torch.equal(y, int_reference(m, x))  # exact: integer sums, one scale multiply
        codes, scale = quantize(lin.weight, QuantSpec(fmt))
        torch.testing.assert_close(W, dequantize(codes, scale))
        torch.testing.assert_close(y, F.linear(x, W, lin.bias), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fmt", FORMATS[:-1])
@pytest.mark.parametrize("K,N", [(1, 1), (1, 9), (7, 1), (33, 65), (129, 1000), (64, 513), (1000, 31)])
def test_odd_sizes(fmt, K, N):
    lin, m = make(K, N, fmt, seed=K + N)
    x = spikes((5, K), 0.3, seed=K)
    assert torch.equal(m(x), int_reference(m, x))
    torch.testing.assert_close(m(x), F.linear(x, m.dequantized_weight(), lin.bias), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fmt", FORMATS[:-1])
@pytest.mark.parametrize("group_size", [16, 100])
def test_groups(fmt, group_size):
    lin, m = make(250, 70, fmt, group_size=group_size)
    assert m.scale.shape == (70, -(-250 // group_size))
    x = spikes((6, 250), 0.2)
    y = m(x)
    W = m.dequantized_weight()
    codes, scale = quantize(lin.weight, QuantSpec(fmt, group_size=group_size))
    torch.testing.assert_close(W, dequantize(codes, scale, QuantSpec(fmt, group_size=group_size)))
    torch.testing.assert_close(y, int_reference(m, x), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(y, F.linear(x, W, lin.bias), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("group_size", [None, 64])
def test_analog_dense_path(fmt, group_size):
    if fmt is None and group_size:
        pytest.skip("no groups without quantization")
    lin, m = make(200, 300, fmt, group_size=group_size)
    x = torch.randn(7, 200)
    x[x.abs() < 0.5] = 0.0
    y = m(x)
    torch.testing.assert_close(y, F.linear(x, m.dequantized_weight(), lin.bias), rtol=1e-4, atol=1e-4)


def test_dense_threshold_dispatch_same_result():
    lin, m = make(128, 96, "int4", dense_threshold=0.0)
    x = spikes((4, 128), 0.3)
    torch.testing.assert_close(m(x), int_reference(m, x), rtol=1e-5, atol=1e-5)


def test_input_kinds_and_layouts():
    lin, m = make(96, 40, "int4")
    x = spikes((2, 3, 96), 0.1)
    ref = int_reference(m, x)
    assert torch.equal(m(x.bool()), ref)
    assert torch.equal(m(x.to(torch.uint8)), ref)
    xt = spikes((96, 6), 0.1).t()  # non-contiguous
    assert torch.equal(m(xt), int_reference(m, xt.contiguous()))
    assert m(torch.zeros(0, 96)).shape == (0, 40)
    assert m(spikes((96,), 0.5)).shape == (40,)


def test_no_bias_and_zero_input():
    lin, m = make(50, 20, "int8", bias=False)
    assert m.bias is None
    assert torch.equal(m(torch.zeros(3, 50)), torch.zeros(3, 20))


def test_model_bytes_and_ratio():
    lin, m = make(1024, 1024, "int4")
    fp32 = (1024 * 1024 + 1024) * 4
    assert m.model_bytes() == 1024 * 512 + 1024 * 4 + 1024 * 4  # packed + scales + bias
    assert fp32 / m.model_bytes() >= 7.0
    sizes = {f: make(256, 256, f)[1].model_bytes() for f in ["int8", "int4", "int2", "ternary", "binary"]}
    assert sizes["int8"] > sizes["int4"] > sizes["int2"] == sizes["ternary"] > sizes["binary"]


@pytest.mark.parametrize("fmt", ["int4", "binary", None])
def test_state_dict_small_and_restores(fmt):
    lin, m = make(512, 256, fmt, group_size=128 if fmt else None)
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    assert buf.tell() <= m.model_bytes() + 8192  # only the packed buffers (+ pickle overhead)
    if fmt == "int4":
        assert buf.tell() < (512 * 256 * 4) / 6
    buf.seek(0)
    m2 = PackedSpikingLinear()
    m2.load_state_dict(torch.load(buf))
    assert (m2.in_features, m2.out_features, m2.format, m2.group_size) == (512, 256, m.format, m.group_size)
    x = spikes((3, 512), 0.1)
    assert torch.equal(m2(x), m(x))
    assert m2.model_bytes() == m.model_bytes()


def test_backward_to_input():
    lin, m = make(64, 32, "int4")
    x = torch.randn(5, 64, requires_grad=True)
    m(x).pow(2).sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    F.linear(x2, m.dequantized_weight(), lin.bias).pow(2).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fmt", ["int4", None])
def test_opcheck(fmt):
    lin, m = make(40, 24, fmt, group_size=16 if fmt else None)
    x = spikes((3, 40), 0.3)
    torch.library.opcheck(packed_linear_op, (x, m.weights, m.scale, m.bias, m.bits, 24, m.group_size, True))
    xa = torch.randn(3, 40, requires_grad=True)
    torch.library.opcheck(packed_linear_op, (xa, m.weights, m.scale, m.bias, m.bits, 24, m.group_size, False))


def test_given_scale_on_grid():
    torch.manual_seed(0)
    codes = torch.randint(-7, 8, (16, 32), dtype=torch.int8)
    scale = torch.rand(16) + 0.5
    lin = torch.nn.Linear(32, 16)
    with torch.no_grad():
        lin.weight.copy_(codes.float() * scale[:, None])
    m = PackedSpikingLinear.from_float(lin, QuantSpec(4), scale=scale)
    torch.testing.assert_close(m.dequantized_weight(), lin.weight.detach())


def test_errors():
    lin = torch.nn.Linear(8, 4)
    with pytest.raises(ValueError, match="^bits: "):
        PackedSpikingLinear.from_float(lin, 3)
    with pytest.raises(ValueError, match="^scale: "):
        PackedSpikingLinear.from_float(lin, QuantSpec(4), scale=torch.ones(5))
    with pytest.raises(ValueError, match="^scale: "):
        PackedSpikingLinear.from_float(lin, None, scale=torch.ones(4))
    bad = torch.nn.Linear(8, 4)
    with torch.no_grad():
        bad.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"^layer\.weight: contains NaN or inf"):
        PackedSpikingLinear.from_float(bad, QuantSpec(4))
    with pytest.raises(ValueError, match="mask"):
        PackedSpikingLinear.from_float(lin, QuantSpec(4), mask=torch.ones(3, 8, dtype=torch.bool))
    m = PackedSpikingLinear.from_float(lin, QuantSpec(4), input_mode="spike")
    with pytest.raises(ValueError, match="^input: "):
        m(torch.randn(2, 9))
    with pytest.raises(ValueError, match="^input: "):
        m(torch.randn(2, 8))  # analog input with input_mode='spike'
    with pytest.raises(ValueError, match="^input_mode: "):
        PackedSpikingLinear(8, 4, input_mode="fast")


def test_torch_compile_traces_op():
    lin, m = make(64, 48, "int4")
    x = spikes((5, 64), 0.2)

    def f(x):
        return packed_linear_op(x, m.weights, m.scale, m.bias, m.bits, 48, 0, True) * 2.0

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    assert torch.equal(compiled(x), f(x))
