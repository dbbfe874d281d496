"""CUDA packed / pruned kernels against the CPU kernels (run only where a GPU is present)."""
import pytest
import torch

from sparsesnn import _ext
from sparsesnn.nn import PackedSpikingConv2d, PackedSpikingLinear
from sparsesnn.quant import QuantSpec, pack, unpack

pytestmark = pytest.mark.skipif(not _ext.cuda_available(), reason="needs the CUDA build and a GPU")

FORMATS = ["int8", "int4", "int2", "ternary", "binary", None]


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
    if fmt is not None and group_size is None:
        assert torch.equal(mc(x.cuda()).cpu(), ref)  # integer sums: exact on both devices
    torch.testing.assert_close(mc(x.cuda()).cpu(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mc(xa.cuda()).cpu(), ref_a, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fmt", FORMATS)
def test_conv_cuda_matches_cpu(fmt):
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(5, 12, 3, stride=2, padding=1)
    m = PackedSpikingConv2d.from_float(conv, QuantSpec(fmt, group_size=20) if fmt else None)
    x = spikes((2, 5, 11, 9), 0.2)
    ref = m(x)
    torch.testing.assert_close(m.cuda()(x.cuda()).cpu(), ref, rtol=1e-5, atol=1e-5)
