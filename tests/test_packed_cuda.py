"""CUDA packed / pruned kernels against the CPU kernels.

Skipped without a GPU; with a GPU but without the CUDA kernels these tests fail (conftest).
"""
import pytest
import torch

from sparsesnn.nn import PackedSpikingConv2d, PackedSpikingLinear
from sparsesnn.ops.packed_conv2d import packed_conv2d_op
from sparsesnn.ops.packed_linear import packed_linear_op
from sparsesnn.ops.pruned_linear import pruned_linear_op
from sparsesnn.quant import QuantSpec, pack, unpack

from conftest import requires_cuda

pytestmark = requires_cuda

FORMATS = ["int8", "int4", "int2", "ternary", "binary", None]
# (bits, lowest code, highest code) of every packed format
EXTREMES = [(8, -128, 127), (4, -8, 7), (2, -2, 1), (1, -1, 1)]


def spikes(shape, density, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) < density).float()


@pytest.mark.parametrize("bits", [8, 4, 2, 1])
def test_pack_cuda(bits):
    c = torch.randint(-1, 2, (37, 19), dtype=torch.int8)
    if bits == 1:
        c = torch.where(c >= 0, 1, -1).to(torch.int8)
    p = pack(c, bits)
    assert torch.equal(pack(c.cuda(), bits).cpu(), p)
    assert torch.equal(unpack(p.cuda(), bits, c.shape).cpu(), c)


@pytest.mark.parametrize("bits,lo,hi", EXTREMES)
def test_pack_cuda_code_extremes(bits, lo, hi):
    """The lowest and highest code of each width (sign bit, offset) round-trip on the GPU."""
    from sparsesnn.ops.pack import pack_op, unpack_op

    g = torch.Generator().manual_seed(bits)
    c = torch.where(torch.rand(41, 23, generator=g) < 0.5, lo, hi).to(torch.int8)
    if bits == 1:
        c[0, 0], c[-1, -1] = -1, 1
    p_cpu = pack_op(c, bits)
    p_gpu = pack_op(c.cuda(), bits)
    assert torch.equal(p_gpu.cpu(), p_cpu)
    assert torch.equal(unpack_op(p_gpu, bits, 41).cpu(), c)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("pruned", [False, True])
@pytest.mark.parametrize("group_size", [None, 48])
def test_linear_cuda_matches_cpu(fmt, pruned, group_size):
    if fmt is None and group_size:
        pytest.skip("no groups without quantization")
    torch.manual_seed(0)
    lin = torch.nn.Linear(200, 333)
    mask = torch.rand(333, 200) < 0.3 if pruned else None
    m = PackedSpikingLinear.from_float(lin, QuantSpec(fmt, group_size=group_size) if fmt else None, mask=mask)
    x = spikes((4, 200), 0.1)
    xa = torch.randn(3, 200)
    ref, ref_a = m(x), m(xa)
    mc = m.cuda()
    if fmt is not None or pruned:
        # integer sums, scale folded with spelled-out rounding, same order as the CPU: exact,
        # with one group and with several
        assert torch.equal(mc(x.cuda()).cpu(), ref)
    torch.testing.assert_close(mc(x.cuda()).cpu(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mc(xa.cuda()).cpu(), ref_a, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("pruned", [False, True])
@pytest.mark.parametrize("fmt", ["int4", None])
def test_linear_cuda_more_rows_than_grid_y(pruned, fmt):
    """M = 70000 > 65535 (the gridDim.y limit): every row is computed, none left garbage."""
    torch.manual_seed(2)
    lin = torch.nn.Linear(24, 40)
    mask = torch.rand(40, 24) < 0.5 if pruned else None
    m = PackedSpikingLinear.from_float(lin, QuantSpec(fmt, group_size=8) if fmt else None, mask=mask)
    x = spikes((70000, 24), 0.3, seed=3)
    ref = m(x)
    out = m.cuda()(x.cuda()).cpu()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[-5:], ref[-5:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fmt", ["int8", None])
def test_pruned_cuda_int32_index(fmt):
    """N > 65536 outputs: the compressed rows use int32 indices."""
    torch.manual_seed(4)
    N, K = 70001, 16
    w = torch.randn(N, K) * (torch.rand(N, K) < 0.05)
    lin = torch.nn.Linear(K, N)
    lin.weight.data = w
    m = PackedSpikingLinear.from_float(lin, QuantSpec(fmt) if fmt else None, mask=w != 0)
    assert m.layout == "pruned" and m.index.dtype == torch.int32
    x = spikes((5, K), 0.5, seed=5)
    torch.testing.assert_close(m.cuda()(x.cuda()).cpu(), m.cpu()(x), rtol=1e-5, atol=1e-5)


def test_pruned_cuda_is_deterministic():
    """No fp32 atomics: analog input gives the same bits on every run."""
    torch.manual_seed(6)
    lin = torch.nn.Linear(512, 300)
    m = PackedSpikingLinear.from_float(lin, None, mask=torch.rand(300, 512) < 0.4).cuda()
    x = torch.randn(64, 512, device="cuda")
    first = m(x)
    for _ in range(5):
        assert torch.equal(m(x), first)


@pytest.mark.parametrize("pruned", [False, True])
def test_spike_mode_with_analog_input_on_cuda_is_correct(pruned):
    """spike=True is not verified on CUDA by default (a host sync): the kernels must still
    sum non-binary input correctly instead of counting it as 1."""
    torch.manual_seed(7)
    lin = torch.nn.Linear(64, 32)
    mask = torch.rand(32, 64) < 0.5 if pruned else None
    m = PackedSpikingLinear.from_float(lin, QuantSpec("int4", group_size=16), mask=mask).cuda()
    x = torch.randn(10, 64, device="cuda")
    args = ((x, m.row_ptr, m.index, m.values) if pruned else (x, m.weights))
    if pruned:
        y = pruned_linear_op(*args, m.scale, m.bias, m.bits, 32, m.group_size, True)
    else:
        y = packed_linear_op(*args, m.scale, m.bias, m.bits, 32, m.group_size, True)
    ref = torch.nn.functional.linear(x, m.dequantized_weight(), m.bias)
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4)


def test_cuda_ops_check_every_tensor_device():
    lin = torch.nn.Linear(8, 6)
    m = PackedSpikingLinear.from_float(lin, "int8").cuda()
    x = spikes((2, 8), 0.5).cuda()
    with pytest.raises(ValueError, match="scale: expected device cuda"):
        packed_linear_op(x, m.weights, m.scale.cpu(), m.bias, 8, 6, 0, True)
    with pytest.raises(ValueError, match="bias: expected device cuda"):
        packed_linear_op(x, m.weights, m.scale, m.bias.cpu(), 8, 6, 0, True)
    mp = PackedSpikingLinear.from_float(lin, "int8", mask=torch.rand(6, 8) < 0.5).cuda()
    for name in ("row_ptr", "index"):
        t = {k: getattr(mp, k) for k in ("row_ptr", "index", "values")}
        t[name] = t[name].cpu()
        with pytest.raises(ValueError, match=f"{name}: expected device cuda"):
            pruned_linear_op(x, t["row_ptr"], t["index"], t["values"], mp.scale, mp.bias, 8, 6, 0, True)


@pytest.mark.parametrize("fmt", FORMATS)
def test_conv_cuda_matches_cpu(fmt):
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(5, 12, 3, stride=2, padding=1)
    m = PackedSpikingConv2d.from_float(conv, QuantSpec(fmt, group_size=20) if fmt else None)
    x = spikes((2, 5, 11, 9), 0.2)
    ref = m(x)
    torch.testing.assert_close(m.cuda()(x.cuda()).cpu(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fmt", ["int8", "int2", "binary", None])
@pytest.mark.parametrize("conv_kw", [dict(kernel_size=(1, 5), padding=(0, 2)),
                                     dict(kernel_size=5, stride=(2, 1), dilation=2, padding=3),
                                     dict(kernel_size=(2, 3), stride=3)])
@pytest.mark.parametrize("analog", [False, True])
def test_conv_cuda_shapes_and_analog_input(fmt, conv_kw, analog):
    """Non-3x3 kernels, stride/dilation, and analog input (fp32 lanes) to the packed conv."""
    torch.manual_seed(8)
    conv = torch.nn.Conv2d(6, 10, **conv_kw)
    m = PackedSpikingConv2d.from_float(conv, QuantSpec(fmt, group_size=7) if fmt else None)
    x = torch.randn(3, 6, 13, 12) if analog else spikes((3, 6, 13, 12), 0.3)
    ref = m(x)
    torch.testing.assert_close(m.cuda()(x.cuda()).cpu(), ref, rtol=1e-4, atol=1e-4)
    direct = torch.nn.functional.conv2d(x, m.cpu().dequantized_weight(), m.bias, conv.stride,
                                        conv.padding, conv.dilation)
    torch.testing.assert_close(ref, direct, rtol=1e-4, atol=1e-4)
