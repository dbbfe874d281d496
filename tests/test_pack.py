"""pack / unpack: exact inverses, documented bit layout, C++ == reference, errors."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsesnn import reference
from sparsesnn.ops.pack import pack_op, pack_stream, unpack_op
from sparsesnn.quant import QuantSpec, code_range, pack, quantize, unpack


def random_codes(N, K, bits, seed=0):
    g = torch.Generator().manual_seed(seed)
    lo, hi = code_range(bits)
    c = torch.randint(lo, hi + 1, (N, K), generator=g, dtype=torch.int8)
    if bits == 1:
        c = torch.where(c >= 0, 1, -1).to(torch.int8)
    return c


@pytest.mark.parametrize("bits", [8, 4, 2, 1])
@pytest.mark.parametrize("N,K", [(1, 1), (1, 7), (7, 1), (3, 5), (9, 33), (64, 64), (65, 130), (257, 3)])
def test_roundtrip_and_reference(bits, N, K):
    c = random_codes(N, K, bits, seed=N * 1000 + K)
    p = pack(c, bits)
    assert p.dtype == torch.uint8 and p.shape == (K, (N * bits + 7) // 8)
    assert torch.equal(p, reference.pack_codes(c, bits))
    assert torch.equal(unpack(p, bits, c.shape), c)
    assert torch.equal(reference.unpack_codes(p, bits, N), c)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([8, 4, 2, 1]), st.integers(1, 70), st.integers(1, 20), st.integers(0, 2**16))
def test_roundtrip_property(bits, N, K, seed):
    c = random_codes(N, K, bits, seed)
    assert torch.equal(unpack(pack(c, bits), bits, (N, K)), c)


def test_bit_layout_documented():
    # int4, N=3 outputs, K=1 input: u = code + 8 -> 9, 6, 15; LSB-first nibbles.
    c = torch.tensor([[1], [-2], [7]], dtype=torch.int8)
    assert pack(c, 4).tolist() == [[0x69, 0x0F]]
    # binary: u = (code + 1) / 2, bit n of the row
    c = torch.tensor([[1], [-1], [1], [1], [-1], [-1], [-1], [-1], [1]], dtype=torch.int8)
    assert pack(c, 1).tolist() == [[0b00001101, 0b1]]
    # 2 bits (ternary): u = code + 2
    c = torch.tensor([[-1], [0], [1]], dtype=torch.int8)
    assert pack(c, "ternary").tolist() == [[1 | (2 << 2) | (3 << 4)]]
    # input-major: row k holds input k's codes
    c = torch.tensor([[1, -1], [2, -2]], dtype=torch.int8)
    assert pack(c, 8).tolist() == [[129, 130], [127, 126]]


def test_conv_shape_and_formats():
    w = torch.randn(6, 3, 3, 3)
    for fmt in ["int8", "int4", "int2", "ternary", "binary"]:
        spec = QuantSpec(fmt)
        codes, _ = quantize(w, spec)
        p = pack(codes, spec)
        assert p.shape == (27, (6 * spec.storage_bits + 7) // 8)
        assert torch.equal(unpack(p, spec, codes.shape), codes)


def test_stream_pack():
    c = random_codes(23, 1, 4).reshape(-1)
    s = pack_stream(c, 4)
    assert s.shape == (12,)
    assert torch.equal(reference.unpack_codes(s.reshape(1, -1), 4, 23).reshape(-1), c)


def test_empty():
    c = torch.zeros(0, 5, dtype=torch.int8)
    p = pack(c, 4)
    assert p.shape == (5, 0)
    assert unpack(p, 4, (0, 5)).shape == (0, 5)


def test_errors():
    with pytest.raises(ValueError, match="^codes: "):
        pack(torch.tensor([[8]], dtype=torch.int8), 4)
    with pytest.raises(ValueError, match="^codes: "):
        pack(torch.tensor([[0]], dtype=torch.int8), 1)
    with pytest.raises(ValueError, match="^codes: "):
        pack(torch.tensor([[1]], dtype=torch.int32), 8)
    with pytest.raises(ValueError, match="^bits: "):
        pack(torch.zeros(2, 2, dtype=torch.int8), 3)
    p = pack(torch.zeros(4, 4, dtype=torch.int8), 4)
    with pytest.raises(ValueError, match="packed"):
        unpack(p, 4, (5, 4))
    with pytest.raises(ValueError, match="packed"):
        unpack(p.float(), 4, (4, 4))


def test_opcheck():
    c = random_codes(11, 6, 4)
    torch.library.opcheck(pack_op, (c, 4))
    torch.library.opcheck(unpack_op, (pack(c, 4), 4, 11))
