"""ADMM pruning/quantization: exact projections, convergence, masked retraining, bad configs."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import sparsesnn.nn as snn
from sparsesnn.compress import ADMM, get_state, project, project_sparse, sparsity_mask
from sparsesnn.compress import projections as P
from sparsesnn.quant import QuantSpec
from sparsesnn.quant import quantize as q_quantize

SPARSITIES = [0.0, 0.001, 0.01, 0.05, 0.2, 0.5, 0.9, 0.99]
SHAPES = [(1, 1), (7, 13), (64, 33), (5, 3, 3, 3)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_sparse_projection_exact(shape, sparsity):
    torch.manual_seed(0)
    w = torch.randn(shape)
    z, mask = project_sparse(w, sparsity)
    n = w.numel()
    assert int((z == 0).sum()) == int(round(sparsity * n)) == P.expected_zeros(n, sparsity)
    assert mask.shape == w.shape and mask.dtype == torch.bool
    assert torch.equal(z[mask], w[mask])  # survivors unchanged
    if mask.any() and (~mask).any():  # the largest magnitudes survive
        assert w[mask].abs().min() >= w[~mask].abs().max()


@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("per_channel", [True, False])
def test_quantized_projection_on_grid(bits, per_channel):
    torch.manual_seed(1)
    w = torch.randn(17, 40)
    spec = QuantSpec(bits=bits, per_channel=per_channel)
    z, _, scale = project(w, None, spec)
    qmax = 2 ** (bits - 1) - 1
    codes = z / scale[:, None]
    assert torch.allclose(codes, codes.round(), atol=1e-4)
    assert codes.abs().max() <= qmax + 1e-4
    # nearest grid point: error at most half a step (inside the clamp range)
    assert ((z - w).abs() <= scale[:, None] / 2 + 1e-6).all()
    if not per_channel:
        assert torch.allclose(scale, scale[0].expand_as(scale))


@pytest.mark.parametrize("bits", ["ternary", "binary"])
def test_ternary_binary_projection_levels(bits):
    torch.manual_seed(2)
    w = torch.randn(9, 31)
    z, _, scale = project(w, None, QuantSpec(bits=bits))
    for r in range(9):
        levels = set(torch.unique(z[r] / scale[r]).round().tolist())
        assert levels <= ({-1.0, 0.0, 1.0} if bits == "ternary" else {-1.0, 1.0})
    if bits == "binary":
        assert torch.allclose(scale, w.abs().mean(1))


@pytest.mark.parametrize("bits", [8, 4, 2, "ternary", "binary"])
def test_joint_projection_pruned_and_on_grid(bits):
    torch.manual_seed(3)
    w = torch.randn(16, 50)
    spec = QuantSpec(bits=bits)
    z, mask, scale = project(w, 0.75, spec)
    assert int((~mask).sum()) == 600
    assert (z[~mask] == 0).all()  # pruned stay pruned, even for binary codes
    assert int((z == 0).sum()) >= 600
    codes = z / scale[:, None]
    assert torch.allclose(codes, codes.round(), atol=1e-4)


@pytest.mark.parametrize("bits", [8, 4, 2, "ternary", "binary"])
@pytest.mark.parametrize("per_channel", [True, False])
def test_fallback_formula_matches_quant_package(bits, per_channel):
    """The in-package fallback quantizer is the same formula as sparsesnn.quant.quantize."""
    torch.manual_seed(4)
    w = torch.randn(11, 23)
    w[3] = 0.0  # all-zero row
    spec = QuantSpec(bits=bits, per_channel=per_channel)
    c_ref, s_ref = q_quantize(w, spec)
    c, s = P._quantize_rows_fallback(w, P.spec_bits(spec), per_channel, None)
    assert torch.equal(c, c_ref)
    assert torch.allclose(s, s_ref.reshape(-1))
    c2, _ = P._quantize_rows_fallback(w, P.spec_bits(spec), per_channel, s_ref.reshape(-1))
    c2_ref, _ = q_quantize(w, spec, scale=s_ref)
    assert torch.equal(c2, c2_ref)


def test_grid_weights_requantize_exactly():
    torch.manual_seed(5)
    spec = QuantSpec(bits=4)
    z, _, scale = project(torch.randn(8, 20), None, spec)
    z2, _, _ = project(z, None, spec, scale=scale)
    assert torch.equal(z, z2)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 48), nn.ReLU(), nn.Linear(48, 5))


def _batches(n=4):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(32, 20, generator=g), torch.randint(0, 5, (32,), generator=g)) for _ in range(n)]


@pytest.mark.parametrize("mode", ["penalty", "proximal"])
def test_admm_reduces_residual(mode):
    model = _mlp()
    kw = {"proximal": 0.1} if mode == "proximal" else {"rho": 2.0}
    admm = ADMM(model, sparsity=0.8, bits=4, update_every=4, **kw)
    opt = (torch.optim.Adam(model.parameters(), 1e-3) if mode == "proximal"
           else torch.optim.SGD(model.parameters(), 0.1))
    start = admm.residual()
    data = _batches(4)
    for _ in range(6):
        for x, y in data:
            loss = nn.functional.cross_entropy(model(x), y) + admm.penalty()
            opt.zero_grad()
            loss.backward()
            opt.step()
            admm.step()
    assert len(admm.history) == 6
    assert admm.history[-1] < 0.5 * start
    assert admm.history[-1] < admm.history[0]


def test_penalty_value_and_gradient():
    model = _mlp()
    admm = ADMM(model, {"0": {"sparsity": 0.5}}, rho=0.2)
    w = model[0].weight
    expected = 0.1 * (w - admm.Z["0"] + admm.U["0"]).pow(2).sum()
    pen = admm.penalty()
    assert torch.allclose(pen, expected)
    pen.backward()
    assert torch.allclose(w.grad, 0.2 * (w - admm.Z["0"]).detach())
    assert model[2].weight.grad is None  # not a target


def test_masked_retraining_keeps_constraints():
    model = _mlp()
    admm = ADMM(model, sparsity=0.7, bits=4)
    states = admm.finalize()
    masks = {n: s.mask.clone() for n, s in states.items()}
    opt = torch.optim.AdamW(model.parameters(), 1e-2, weight_decay=0.1)
    before = model[0].weight.detach().clone()
    for x, y in _batches():
        loss = nn.functional.cross_entropy(model(x), y) + admm.penalty()
        opt.zero_grad()
        loss.backward()
        opt.step()
        admm.step()
    assert not torch.equal(before, model[0].weight)  # it did train
    for name, layer in admm.layers.items():
        st = get_state(layer)
        assert torch.equal(st.mask, masks[name])
        assert (layer.weight[~st.mask] == 0).all()
        codes = layer.weight.detach() / st.scale[:, None]
        assert torch.allclose(codes, codes.round(), atol=1e-4)
        assert codes.abs().max() <= 7 + 1e-4
    w0 = model[0].weight
    assert int((w0 == 0).sum()) >= round(0.7 * w0.numel())


def test_conv_and_linear_layers_and_targets():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    admm = ADMM(model, {"0": {"sparsity": 0.5, "bits": "ternary"}, "3": {"sparsity": 0.9}})
    admm.finalize()
    assert int((model[0].weight == 0).sum()) >= round(0.5 * model[0].weight.numel())
    assert int((model[3].weight == 0).sum()) == round(0.9 * model[3].weight.numel())
    assert get_state(model[3]).spec is None and get_state(model[0]).spec is not None
    assert model(torch.randn(2, 3, 6, 6)).shape == (2, 10)


def test_exclude_and_defaults():
    model = _mlp()
    admm = ADMM(model, sparsity=0.5, exclude=["2"])
    assert list(admm.layers) == ["0"]


@pytest.mark.skipif(not hasattr(snn, "SpikingLinear"), reason="SpikingLinear not merged")
def test_spiking_linear_layers_are_found():
    model = nn.Sequential(snn.SpikingLinear(10, 20), snn.LIF(), snn.SpikingLinear(20, 4))
    admm = ADMM(model, sparsity=0.5, bits=4)
    assert list(admm.layers) == ["0", "2"]
    admm.finalize()
    assert int((model[0].weight == 0).sum()) >= 100


@pytest.mark.parametrize("kwargs,match", [
    ({"sparsity": 1.0}, "sparsity"),
    ({"sparsity": -0.1}, "sparsity"),
    ({"sparsity": float("nan")}, "sparsity"),
    ({"bits": 0}, "bits"),
    ({"bits": 7}, "bits"),
    ({"sparsity": 0.5, "scale_fit": "l1"}, "scale_fit"),
    ({"bits": "int5"}, "bits"),
    ({"targets": {"nope": {"sparsity": 0.5}}}, "targets"),
    ({"targets": {"0": {"sparsity": 1.5}}}, "sparsity"),
    ({"targets": {"0": {"bits": 0}}}, "bits"),
    ({"targets": {"0": {"sparsty": 0.5}}}, "targets"),
    ({"sparsity": 0.5, "exclude": ["fc9"]}, "exclude"),
    ({"sparsity": 0.5, "rho": 0.0}, "rho"),
    ({"sparsity": 0.5, "proximal": 2.0}, "proximal"),
    ({"sparsity": 0.5, "update_every": 0}, "update_every"),
    ({}, "targets"),
])
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ADMM(_mlp(), **kwargs)


def test_sparsity_mask_bad_value():
    with pytest.raises(ValueError, match="^sparsity: "):
        sparsity_mask(torch.randn(3, 3), 1.0)


@pytest.mark.skipif(not hasattr(snn, "SpikingConv2d"), reason="SpikingConv2d not merged")
def test_spiking_conv_layers_are_found():
    torch.manual_seed(0)
    model = nn.Sequential(snn.SpikingConv2d(2, 4, 3, padding=1), snn.LIF())
    admm = ADMM(model, sparsity=0.5, bits=8)
    assert list(admm.layers) == ["0"]
    admm.finalize()
    w = model[0].weight
    assert int((w == 0).sum()) >= w.numel() // 2


# ---- 3/5/6-bit grids and the paper's ALS alpha (issue 14) ---------------------------------
@pytest.mark.parametrize("bits,container,qmax", [(3, "int4", 3), (5, "int8", 15), (6, "int8", 31)])
def test_narrow_grids_in_wider_container(bits, container, qmax):
    from sparsesnn.deploy import deploy, layer_formats

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 12), nn.Linear(12, 6))
    ADMM(model, bits=bits).finalize()
    for layer in model:
        scale = get_state(layer).scale
        codes = layer.weight.detach() / scale[:, None]
        assert torch.allclose(codes, codes.round(), atol=1e-4)
        assert int(codes.round().abs().max()) == qmax  # the full narrow grid is used, no more
    d = deploy(model)
    assert {f["format"] for f in layer_formats(d).values()} == {container}
    x = (torch.rand(4, 20) > 0.5).float()
    torch.testing.assert_close(d(x), model(x), atol=1e-4, rtol=1e-4)


def test_als_alpha_one_per_layer_and_better_fit():
    from sparsesnn.compress.projections import fit_scale

    torch.manual_seed(0)
    w = torch.randn(32, 64)
    w[0, 0] = 8.0  # an outlier: max-abs wastes the grid on it
    a_als = fit_scale(w, 4, method="als")
    assert torch.all(a_als == a_als[0])  # one alpha for the layer
    a_max = fit_scale(w, 4, method="maxabs", per_channel=False)

    def err(a):
        q = torch.clamp(torch.round(w / a[0]), -7, 7)
        return float((w - a[0] * q).pow(2).sum())

    assert err(a_als) < 0.8 * err(a_max)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 12))
    ADMM(model, bits=4, scale_fit="als").finalize()
    s = get_state(model[0]).scale
    assert torch.all(s == s[0])
