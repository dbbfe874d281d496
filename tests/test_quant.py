"""Quantizers, rounding schemes, QuantSpec validation and fake-quant (STE)."""
import pytest
import torch

from sparsesnn.quant import FakeQuantize, FakeQuantLinear, QuantSpec, dequantize, fake_quantize, quantize, round_values

FORMATS = ["int8", "int4", "int2", "ternary", "binary"]


@pytest.mark.parametrize("bits,name", [(8, "int8"), (4, "int4"), (2, "int2"), ("int4", "int4"),
                                       ("ternary", "ternary"), ("BINARY", "binary")])
def test_spec_accepts(bits, name):
    assert QuantSpec(bits).format == name


@pytest.mark.parametrize("bits", [3, 0, 1, 16, "int3", "float", True, 4.0, None])
def test_spec_rejects_bits(bits):
    with pytest.raises(ValueError, match="^bits: "):
        QuantSpec(bits)


def test_spec_rejects_rounding_and_group():
    with pytest.raises(ValueError, match="^rounding: "):
        QuantSpec(4, rounding="up")
    with pytest.raises(ValueError, match="group_size"):
        QuantSpec(4, group_size=0)
    with pytest.raises(ValueError, match="group_size"):
        QuantSpec(4, group_size=8, per_channel=False)


def test_storage_bits_and_qmax():
    assert [QuantSpec(f).storage_bits for f in FORMATS] == [8, 4, 2, 2, 1]
    assert [QuantSpec(f).qmax for f in FORMATS] == [127, 7, 1, 1, 1]


@pytest.mark.parametrize("fmt,qmax", [("int8", 127), ("int4", 7), ("int2", 1)])
def test_uniform_per_row(fmt, qmax):
    torch.manual_seed(0)
    w = torch.randn(13, 37)
    w[3] = 0.0
    codes, scale = quantize(w, QuantSpec(fmt))
    assert codes.dtype == torch.int8 and codes.shape == w.shape and scale.shape == (13,)
    expect = w.abs().amax(1) / qmax
    expect[3] = 1.0
    torch.testing.assert_close(scale, expect)
    torch.testing.assert_close(codes.float(), torch.clamp(torch.round(w / expect[:, None]), -qmax, qmax))
    assert int(codes.abs().max()) == qmax
    assert bool((codes[3] == 0).all())
    err = (dequantize(codes, scale) - w).abs()
    assert bool((err <= scale[:, None] / 2 + 1e-6).all())  # nearest rounding: half a step


def test_ternary_twn():
    torch.manual_seed(1)
    w = torch.randn(9, 50)
    codes, scale = quantize(w, QuantSpec("ternary"))
    delta = 0.7 * w.abs().mean(1, keepdim=True)
    sel = w.abs() > delta
    assert torch.equal(codes.float(), torch.sign(w) * sel)
    torch.testing.assert_close(scale, (w.abs() * sel).sum(1) / sel.sum(1))


def test_binary():
    w = torch.tensor([[0.5, -1.5, 0.0, 2.0], [-1.0, -1.0, 1.0, 0.0]])
    codes, scale = quantize(w, QuantSpec("binary"))
    assert codes.tolist() == [[1, -1, 1, 1], [-1, -1, 1, 1]]
    torch.testing.assert_close(scale, w.abs().mean(1))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("group_size", [None, 8, 11])
def test_requantize_on_grid_is_exact(fmt, group_size):
    torch.manual_seed(2)
    spec = QuantSpec(fmt, group_size=group_size)
    w = torch.randn(6, 40)
    codes, scale = quantize(w, spec)
    wq = dequantize(codes, scale, spec)
    codes2, scale2 = quantize(wq, spec, scale=scale)
    assert torch.equal(codes2, codes) and torch.equal(scale2, scale)


def test_groups_shape_and_values():
    torch.manual_seed(3)
    w = torch.randn(4, 20)
    spec = QuantSpec(4, group_size=8)  # groups [0,8), [8,16), [16,20)
    codes, scale = quantize(w, spec)
    assert scale.shape == (4, 3)
    for g, sl in enumerate([slice(0, 8), slice(8, 16), slice(16, 20)]):
        torch.testing.assert_close(scale[:, g], w[:, sl].abs().amax(1) / 7)
    deq = dequantize(codes, scale, spec)
    assert bool(((deq - w).abs() <= scale.repeat_interleave(8, 1)[:, :20] / 2 + 1e-6).all())


def test_per_tensor_scale():
    w = torch.randn(5, 7)
    codes, scale = quantize(w, QuantSpec(8, per_channel=False))
    assert scale.shape == (5,) and bool((scale == w.abs().max() / 127).all())


def test_conv_shaped_weight():
    w = torch.randn(8, 3, 3, 3)
    codes, scale = quantize(w, QuantSpec(4))
    assert codes.shape == w.shape and scale.shape == (8,)
    torch.testing.assert_close(scale, w.reshape(8, -1).abs().amax(1) / 7)


def test_rounding_schemes():
    x = torch.tensor([-2.7, -1.5, -0.2, 0.2, 0.5, 1.5, 2.7])
    assert round_values(x, "truncate").tolist() == [-2.0, -1.0, -0.0, 0.0, 0.0, 1.0, 2.0]
    assert round_values(x, "nearest").tolist() == [-3.0, -2.0, -0.0, 0.0, 0.0, 2.0, 3.0]
    a = round_values(x, "stochastic", seed=7)
    b = round_values(x, "stochastic", seed=7)
    assert torch.equal(a, b)
    assert bool(((a == torch.floor(x)) | (a == torch.ceil(x))).all())
    big = torch.full((200000,), 0.3)
    assert abs(float(round_values(big, "stochastic", seed=1).mean()) - 0.3) < 0.01  # unbiased
    with pytest.raises(ValueError, match="^rounding: "):
        round_values(x, "banker")


def test_truncate_and_stochastic_quantize():
    torch.manual_seed(4)
    w = torch.randn(3, 1000)
    c_t, s = quantize(w, QuantSpec(4, rounding="truncate"))
    assert torch.equal(c_t.float(), torch.clamp(torch.trunc(w / s[:, None]), -7, 7))
    c1, _ = quantize(w, QuantSpec(4, rounding="stochastic", seed=3))
    c2, _ = quantize(w, QuantSpec(4, rounding="stochastic", seed=3))
    assert torch.equal(c1, c2)
    # unbiased: the mean dequantization error is ~0 (nearest is also ~0; truncate is not)
    err = (c1.float() * s[:, None] - w).mean().abs()
    assert float(err) < 0.01


def test_bad_inputs():
    w = torch.randn(4, 6)
    w_nan = w.clone()
    w_nan[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"^w: contains NaN or inf"):
        quantize(w_nan, QuantSpec(4))
    with pytest.raises(ValueError, match="^scale: "):
        quantize(w, QuantSpec(4), scale=torch.ones(5))
    with pytest.raises(ValueError, match="^scale: "):
        quantize(w, QuantSpec(4, group_size=4), scale=torch.ones(4))
    with pytest.raises(ValueError, match="^scale: "):
        quantize(w, QuantSpec(4), scale=torch.tensor([1.0, -1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"^w: expected at least 2 dims"):
        quantize(torch.randn(5), QuantSpec(4))
    with pytest.raises(ValueError, match="^spec: "):
        quantize(w, None)
    with pytest.raises(ValueError, match="^bits: "):
        quantize(w, 3)


def test_fake_quant_ste():
    torch.manual_seed(5)
    w = torch.randn(6, 10, requires_grad=True)
    spec = QuantSpec("int2")
    out = fake_quantize(w, spec)
    codes, scale = quantize(w.detach(), spec)
    torch.testing.assert_close(out.detach(), dequantize(codes, scale))
    g = torch.randn(6, 10)
    out.backward(g)
    torch.testing.assert_close(w.grad, g)  # straight-through
    fq = FakeQuantize(spec, enabled=False)
    assert fq(w) is w
    lin = FakeQuantLinear(10, 3, 4)
    x = torch.randn(2, 10)
    c, s = quantize(lin.weight.detach(), QuantSpec(4))
    torch.testing.assert_close(lin(x), torch.nn.functional.linear(x, dequantize(c, s), lin.bias))
    lin(x).sum().backward()
    assert lin.weight.grad is not None and bool(lin.weight.grad.abs().sum() > 0)


def test_full_range_int_codes_use_twos_complement():
    """``full_range``: int2 codes take four values (-2..1), the scale clips neither side."""
    from sparsesnn.quant import QuantSpec, dequantize, pack, quantize, unpack

    w = torch.tensor([[-1.0, -0.5, 0.0, 0.5, 0.2, -0.26]])
    spec = QuantSpec(2, full_range=True)
    assert (spec.qmin, spec.qmax) == (-2, 1) and QuantSpec(2).qmin == -1
    codes, scale = quantize(w, spec)
    assert codes.tolist() == [[-2, -1, 0, 1, 0, -1]] and float(scale) == 0.5
    torch.testing.assert_close(dequantize(codes, scale), torch.tensor([[-1.0, -0.5, 0.0, 0.5, 0.0, -0.5]]))
    assert torch.equal(unpack(pack(codes, spec), spec, codes.shape), codes)
    assert quantize(w, QuantSpec(2))[0].min() == -1  # the default stays symmetric
    with pytest.raises(ValueError, match="full_range"):
        QuantSpec(4, full_range=1)
