"""The CPU spike layouts of pruned weights (blocked, or dense packed rows) against the
reference, over shapes that cross block, group and thread-split boundaries."""
import pytest
import torch

from sparsesnn import _ext, reference
from sparsesnn.nn import PackedSpikingLinear
from sparsesnn.ops import pruned_blocks
from sparsesnn.ops.pruned_blocks import build_blocks, cpu_blocks, dense_codes, spike_layout
from sparsesnn.quant import QuantSpec

pytestmark = pytest.mark.usefixtures("kernel_required")  # fails without the extension unless SPARSESNN_DISABLE_EXT=1


def _layer(K, N, sparsity, bits, group_size, seed):
    g = torch.Generator().manual_seed(seed)
    lin = torch.nn.Linear(K, N)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(N, K, generator=g))
        lin.weight.mul_((torch.rand(N, K, generator=g) >= sparsity).float())
    spec = QuantSpec(bits, group_size=group_size or None)
    return PackedSpikingLinear.from_float(lin, spec, mask=lin.weight != 0)


@pytest.mark.parametrize("K,N", [(1, 1), (7, 15), (33, 17), (64, 513), (300, 2048)])
@pytest.mark.parametrize("bits", [8, 4, 2, "binary"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("prefer", ["blocks", "dense", "auto"])
def test_spike_layouts_match_reference(K, N, bits, threads, prefer, monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    monkeypatch.setattr(pruned_blocks, "PREFER", prefer)
    for M, density, sparsity, group in ((1, 0.3, 0.8, 0), (3, 0.5, 0.95, 0), (5, 1.0, 0.5, 7),
                                        (2, 0.0, 0.9, 0)):
        if bits == "binary" and sparsity:
            sparsity = 0.0  # binary codes cannot hold pruned zeros
        layer = _layer(K, N, sparsity, bits, group if bits != "binary" else 0, seed=K * N + M)
        if layer.layout != "pruned":
            continue
        x = (torch.rand(M, K) < density).float()
        expected = reference.pruned_linear(x, layer.row_ptr, layer.index, layer.values, layer.scale,
                                           layer.bias, layer.bits, N, layer.group_size)
        kind = spike_layout(layer.row_ptr, layer.index, layer.values, layer.bits, N)[0]
        assert kind == ("blocks" if bits == "binary" else prefer) or prefer == "auto", kind
        with torch.no_grad():
            torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_blocks_describe_exactly_the_survivors():
    layer = _layer(40, 37, 0.7, 4, 0, seed=3)
    block_ptr, block_id, block_mask, block_code, codes = build_blocks(
        layer.row_ptr, layer.index, layer.values, 4, 37)
    dense = reference.pruned_dense_codes(layer.row_ptr, layer.index, layer.values, 4, 37)
    rebuilt = torch.zeros_like(dense)
    for k in range(40):
        for j in range(int(block_ptr[k]), int(block_ptr[k + 1])):
            mask, c = int(block_mask[j].to(torch.int32)), int(block_code[j])
            for bit in range(16):
                if mask >> bit & 1:
                    rebuilt[int(block_id[j].to(torch.int32)) * 16 + bit, k] = codes[c]
                    c += 1
    assert torch.equal(rebuilt, dense)
    assert codes.numel() == layer.index.numel() + 16  # padding for 16-byte vector loads


def test_blocks_rebuilt_when_buffers_change():
    layer = _layer(32, 48, 0.8, 4, 0, seed=5)
    first = cpu_blocks(layer.row_ptr, layer.index, layer.values, 4, 48)
    assert cpu_blocks(layer.row_ptr, layer.index, layer.values, 4, 48) is first
    other = _layer(32, 48, 0.6, 4, 0, seed=6)
    layer.load_state_dict(other.state_dict())
    x = (torch.rand(4, 32) < 0.5).float()
    with torch.no_grad():
        torch.testing.assert_close(layer(x), other(x))


def test_dense_codes_hold_zero_for_pruned_entries():
    layer = _layer(40, 37, 0.7, 4, 0, seed=3)
    codes = reference.pruned_dense_codes(layer.row_ptr, layer.index, layer.values, 4, 37)
    from sparsesnn.quant import unpack

    got = unpack(dense_codes(layer.row_ptr, layer.index, layer.values, 4, 37), 4, (37, 40))
    assert torch.equal(got, codes) and int((got == 0).sum()) >= int(0.7 * 37 * 40) - 60


@pytest.mark.parametrize("sparsity,expected", [(0.9, "dense"), (0.999, "blocks")])
def test_auto_picks_fewer_vector_steps(sparsity, expected):
    """Unstructured 90%: nearly every 16-output block keeps a weight, so per active input the
    blocked kernel does ~2.5x more steps than a dense int4 row has 64-byte lines; at 99.9% the
    blocks are far fewer."""
    layer = _layer(256, 2048, sparsity, 4, 0, seed=7)
    assert layer.layout == "pruned"
    assert spike_layout(layer.row_ptr, layer.index, layer.values, 4, 2048)[0] == expected
