"""Pruned tap-row conv layout (sparsesnn::pruned_conv2d, PackedSpikingConv2d layout="pruned")
and the register-tiled gather kernel of packed_conv2d, against the references."""
import io

import pytest
import torch
import torch.nn.functional as F

from sparsesnn import reference
from sparsesnn.nn import PackedSpikingConv2d
from sparsesnn.ops import packed_conv2d as packed_mod
from sparsesnn.ops import pruned_conv2d as pruned_mod
from sparsesnn.ops.pruned_conv2d import pruned_conv2d_op, tap_mask
from sparsesnn.quant import QuantSpec

from _conv_cases import CONV_GEOMS, dense_reference, spikes  # noqa: E402

FORMATS = ["int8", "int4", "int2", "ternary", None]
GEOMS = CONV_GEOMS + [
    (8, 130, 3, 1, 1, 1, 6, 5),  # several output chunks / tiles
]


def pruned_layer(C, O, k, s, p, d, fmt, sparsity=0.7, seed=0, bias=True, group_size=None):
    torch.manual_seed(seed)
    conv = torch.nn.Conv2d(C, O, k, stride=s, padding=p, dilation=d, bias=bias)
    spec = QuantSpec(fmt, group_size=group_size) if fmt else None
    return conv, PackedSpikingConv2d.from_float(conv, spec, mask=tap_mask(conv.weight, sparsity))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("geom", GEOMS)
def test_pruned_matches_reference(fmt, geom):
    C, O, k, s, p, d, H, W = geom
    conv, m = pruned_layer(C, O, k, s, p, d, fmt)
    mask = tap_mask(conv.weight, 0.7)
    rows = mask[0].numel()
    kept = int(mask[0].sum())
    rb = O * 4 if fmt is None else (O * m.bits + 7) // 8
    assert m.layout == ("pruned" if kept * (rb + 4) < rows * rb else "dense")  # by bytes
    Wd = m.dequantized_weight()
    assert not bool(Wd[~mask].any())
    for B in (1, 3):
        x = spikes((B, C, H, W), 0.3, seed=B)
        y = m(x)
        if fmt is not None:
            assert torch.equal(y, dense_reference(m, x))
        torch.testing.assert_close(y, F.conv2d(x, Wd, conv.bias, s, p, d), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("density", [0.0, 0.01, 0.05, 0.2, 1.0])
@pytest.mark.parametrize("sparsity", [0.5, 0.9, 1.0])
def test_pruned_densities_batches(density, sparsity):
    conv, m = pruned_layer(16, 24, 3, 1, 1, 1, "int4", sparsity=sparsity, seed=1)
    for B in (1, 2, 16):
        x = spikes((B, 16, 7, 7), density, seed=B)
        assert torch.equal(m(x), dense_reference(m, x))
    if sparsity == 1.0:  # every tap dropped: only the bias remains
        assert m.index.numel() == 0
        x = spikes((2, 16, 7, 7), 0.5)
        assert torch.equal(m(x), conv.bias.detach().view(1, -1, 1, 1).expand(2, -1, 7, 7))


def test_pruned_time_major_noncontiguous_and_dtypes():
    conv, m = pruned_layer(6, 20, 3, 1, 1, 1, "int4", sparsity=0.8, seed=2)
    x = spikes((3, 2, 6, 8, 8), 0.2)
    y = m(x)
    assert y.shape == (3, 2, 20, 8, 8)
    assert torch.equal(y.flatten(0, 1), dense_reference(m, x.flatten(0, 1)))
    xt = x.flatten(0, 1).transpose(2, 3)  # non-contiguous
    assert torch.equal(m(xt), dense_reference(m, xt.contiguous()))
    assert torch.equal(m(x.bool()), y)
    assert torch.equal(m(x.to(torch.uint8)), y)


@pytest.mark.parametrize("fmt", ["int8", "int4", None])
def test_pruned_analog_integer_and_groups(fmt):
    conv, m = pruned_layer(3, 10, 3, 2, 1, 1, fmt, sparsity=0.6, seed=3)
    counts = torch.randint(0, 4, (2, 3, 9, 9)).float()  # SEW-style integer sums
    Wd = m.dequantized_weight()
    torch.testing.assert_close(m(counts), F.conv2d(counts, Wd, conv.bias, 2, 1), rtol=1e-5, atol=1e-5)
    xa = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(m(xa), F.conv2d(xa, Wd, conv.bias, 2, 1), rtol=1e-4, atol=1e-4)
    if fmt is not None:
        conv, mg = pruned_layer(3, 10, 3, 2, 1, 1, fmt, sparsity=0.6, seed=3, group_size=9)
        assert mg.layout == "pruned"
        xs = spikes((2, 3, 9, 9), 0.3)
        torch.testing.assert_close(mg(xs), F.conv2d(xs, mg.dequantized_weight(), conv.bias, 2, 1),
                                   rtol=1e-5, atol=1e-5)


def test_layout_chosen_by_bytes():
    torch.manual_seed(4)
    conv = torch.nn.Conv2d(16, 32, 3, padding=1)
    W = conv.weight.detach()
    unstructured = W.abs() > W.abs().flatten().kthvalue(int(0.9 * W.numel())).values
    dense = PackedSpikingConv2d.from_float(conv, "int4", mask=unstructured)
    assert dense.layout == "dense" and dense.index is None  # almost no tap row is all zero
    pruned = PackedSpikingConv2d.from_float(conv, "int4", mask=tap_mask(W, 0.9))
    assert pruned.layout == "pruned" and pruned.weights is None
    kept = round(0.1 * 16 * 9)
    assert pruned.index.numel() == kept
    assert pruned.model_bytes() == kept * (16 + 4) + 32 * 4 + 32 * 4  # rows + index + scale + bias
    assert pruned.model_bytes() < dense.model_bytes()
    assert pruned.nnz() == kept * 32
    assert "layout=pruned" in repr(pruned)
    full = PackedSpikingConv2d.from_float(conv, "binary")
    assert full.layout == "dense"


def test_pruned_state_dict_roundtrip():
    conv, m = pruned_layer(8, 12, 3, 2, 1, 1, "int4", sparsity=0.75, seed=5)
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    m2 = PackedSpikingConv2d()
    m2.load_state_dict(torch.load(buf))
    assert m2.layout == "pruned" and m2.model_bytes() == m.model_bytes()
    x = spikes((2, 8, 9, 9), 0.2)
    assert torch.equal(m2(x), m(x))


def test_layouts_built_once(monkeypatch):
    """Kernel layouts (chunked rows, row map) come from the layout cache, not per call."""
    calls = []
    real = packed_mod.chunked_rows

    def counting(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(packed_mod, "chunked_rows", counting)
    monkeypatch.setattr(pruned_mod, "chunked_rows", counting)
    torch.manual_seed(6)
    conv = torch.nn.Conv2d(8, 16, 3, padding=1)
    for mask in (None, tap_mask(conv.weight, 0.5)):
        m = PackedSpikingConv2d.from_float(conv, "int4", mask=mask)
        calls.clear()
        with torch.no_grad():
            for i in range(3):
                m(spikes((2, 8, 6, 6), 0.2, seed=i))
        assert len(calls) == 1


def test_pruned_backward_and_opcheck():
    conv, m = pruned_layer(8, 6, 3, 1, 1, 1, "int8", sparsity=0.5, seed=7)
    assert m.layout == "pruned"
    x = torch.randn(2, 8, 5, 5, requires_grad=True)
    m(x).pow(2).sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    F.conv2d(x2, m.dequantized_weight(), conv.bias, 1, 1).pow(2).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-4)
    xs = spikes((2, 8, 5, 5), 0.3)
    for spike in (True, False):
        args = (xs, m.index, m.values, m.scale, m.bias, m.bits, 6, [3, 3], [1, 1], [1, 1], [1, 1], 0, spike)
        torch.library.opcheck(pruned_conv2d_op, args)


def test_pruned_op_errors():
    conv, m = pruned_layer(8, 16, 3, 1, 1, 1, "int4", sparsity=0.5, seed=8)
    assert m.layout == "pruned"
    xs = spikes((1, 8, 5, 5), 0.3)
    geom = ([3, 3], [1, 1], [1, 1], [1, 1], 0, True)
    with pytest.raises(ValueError, match="^index: "):
        pruned_conv2d_op(xs, m.index.long(), m.values, m.scale, m.bias, 4, 16, *geom)
    with pytest.raises(ValueError, match="^values: "):
        pruned_conv2d_op(xs, m.index, m.values[:, :1], m.scale, m.bias, 4, 16, *geom)
    bad = m.index.clone()
    bad[-1] = 72
    with pytest.raises(ValueError, match="^index: "):
        pruned_conv2d_op(xs, bad, m.values, m.scale, m.bias, 4, 16, *geom)
    with pytest.raises(ValueError, match="^sparsity: "):
        tap_mask(conv.weight, 1.5)


# ---- the gather kernel of packed_conv2d at its limits ------------------------------------
@pytest.mark.parametrize("fmt,C", [("int4", 512), ("int8", 32), ("int2", 16), ("binary", 32), ("ternary", 16)])
def test_packed_many_events_per_pixel(fmt, C):
    """All-ones input: more events per output pixel than the narrow accumulator lanes hold
    (uint8: 255 / max code, uint16: 65535 / max code), so every widening step runs."""
    torch.manual_seed(9)
    conv = torch.nn.Conv2d(C, 70, 3, padding=1)
    m = PackedSpikingConv2d.from_float(conv, fmt)
    x = torch.ones(1, C, 3, 3)
    assert torch.equal(m(x), dense_reference(m, x))


def test_packed_output_groups_beyond_l2():
    """Weights larger than half of L2: the kernel splits output channels into groups."""
    torch.manual_seed(10)
    conv = torch.nn.Conv2d(256, 1100, 3, padding=1, bias=False)
    m = PackedSpikingConv2d.from_float(conv, "int8")
    x = spikes((2, 256, 3, 4), 0.1)
    assert torch.equal(m(x), dense_reference(m, x))


@pytest.mark.parametrize("B", [1, 2, 5, 16])
def test_packed_batches_noncontiguous(B):
    torch.manual_seed(11)
    conv = torch.nn.Conv2d(12, 40, 3, stride=2, padding=2, dilation=2)
    m = PackedSpikingConv2d.from_float(conv, "int4")
    x = spikes((B, 12, 11, 9), 0.1, seed=B).transpose(2, 3)
    assert torch.equal(m(x), dense_reference(m, x.contiguous()))


@pytest.mark.parametrize("fmt", ["int8", "int4", "binary"])
def test_packed_aligned_planes(fmt):
    """Output planes of a multiple of 16 pixels (the streaming-store path), O not a multiple of 16."""
    torch.manual_seed(12)
    conv = torch.nn.Conv2d(9, 40, 3, padding=1)
    m = PackedSpikingConv2d.from_float(conv, fmt)
    x = spikes((3, 9, 8, 8), 0.2)
    assert torch.equal(m(x), dense_reference(m, x))
    mp = PackedSpikingConv2d.from_float(conv, fmt, mask=tap_mask(conv.weight, 0.8)) if fmt != "binary" else m
    assert torch.equal(mp(x), dense_reference(mp, x))


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("stride", [1, 2])
def test_parallel_row_bands(B, stride):
    """A layer big enough for every thread: each work item lists the input rows its band of
    output rows reads (bands overlap by the kernel's reach), for both layouts."""
    torch.manual_seed(13)
    conv = torch.nn.Conv2d(64, 128, 3, stride=stride, padding=1)
    x = spikes((B, 64, 32, 32), 0.05, seed=B)
    for mask in (None, tap_mask(conv.weight, 0.9)):
        m = PackedSpikingConv2d.from_float(conv, "int4", mask=mask)
        assert m.layout == ("dense" if mask is None else "pruned")
        assert torch.equal(m(x), dense_reference(m, x))


@pytest.mark.parametrize("value", [0.5, 2.0, -1.0])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_unchecked_input_falls_back_to_analog(value, where):
    """Default modules skip the separate binarity pass: the spike kernel detects a value other
    than 0/1 while listing (here a single one, in one band of one image) and the analog kernel
    runs; the result is the float convolution either way."""
    torch.manual_seed(14)
    conv = torch.nn.Conv2d(8, 24, 3, padding=1)
    x = spikes((3, 8, 12, 12), 0.2, seed=3)
    pos = {"first": (0, 0, 0, 0), "middle": (1, 4, 6, 5), "last": (2, 7, 11, 11)}[where]
    x[pos] = value
    for mask in (None, tap_mask(conv.weight, 0.5)):
        m = PackedSpikingConv2d.from_float(conv, "int4", mask=mask)
        want = F.conv2d(x, m.dequantized_weight(), conv.bias, 1, 1)
        torch.testing.assert_close(m(x), want, rtol=1e-5, atol=1e-5)
        assert torch.equal(m(x), dense_reference(m, x))  # the reference's analog path, bit for bit
