"""deploy(): packed layers chosen from the compression state, same predictions, save/load."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsesnn.compress import ADMM, get_state
from sparsesnn.deploy import deploy, layer_formats, load, save
from sparsesnn.models import SpikingMLP
from sparsesnn.nn import LIF, PackedSpikingConv2d, PackedSpikingLinear


def _model(T=4):
    torch.manual_seed(0)
    return SpikingMLP(16, (48, 40), 5, T=T, init_gain=4.0)


def _x(n=64):
    return torch.rand(n, 16, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("bits", [8, 4, 2, "ternary", "binary", None])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9])
def test_deployed_matches_float(bits, sparsity):
    if bits is None and sparsity == 0.0:
        pytest.skip("nothing to compress")
    m = _model()
    admm = ADMM(m, sparsity=sparsity or None, bits=bits)
    admm.finalize()
    d = deploy(m)
    assert all(isinstance(getattr(d, f"fc{i}"), PackedSpikingLinear) for i in (1, 2, 3))
    assert isinstance(d.lif1, LIF) and isinstance(d.lif2, LIF)
    x = _x()
    with torch.no_grad():
        ya, yb = m(x), d(x)
    assert torch.allclose(ya, yb, atol=1e-4, rtol=1e-4)
    assert torch.equal(ya.argmax(1), yb.argmax(1))
    fmts = layer_formats(d)
    want = {8: "int8", 4: "int4", 2: "int2", "ternary": "ternary", "binary": "binary", None: "fp32"}[bits]
    assert {f["format"] for f in fmts.values()} == {want}
    for name, f in fmts.items():  # the layout with fewer bytes (pruned: index bytes per kept weight)
        st = get_state(getattr(m, name))
        other = "dense" if f["layout"] == "pruned" else "pruned"
        try:
            alt = PackedSpikingLinear.from_float(getattr(m, name), st.spec, scale=st.scale, mask=st.mask,
                                                 layout=other).model_bytes()
        except ValueError:  # binary codes hold no zeros in the dense layout
            continue
        assert f["bytes"] <= alt
    if sparsity >= 0.9 and bits == 4:
        assert fmts["fc2"]["layout"] == "pruned"  # the largest layer; tiny ones may stay dense
    assert isinstance(m.fc1, nn.Linear)  # original untouched


def test_deployed_is_smaller_and_frozen():
    m = _model()
    ADMM(m, sparsity=0.9, bits=4).finalize()
    d = deploy(m)
    packed = sum(f["bytes"] for f in layer_formats(d).values())
    dense = sum(p.numel() * 4 for n, p in m.named_parameters() if n.startswith("fc"))
    assert packed * 5 < dense
    assert not d.training and not any(p.requires_grad for p in d.parameters())


def test_save_load_roundtrip(tmp_path):
    m = _model()
    ADMM(m, sparsity=0.8, bits=4).finalize()
    d = deploy(m)
    path = str(tmp_path / "m.pt")
    save(d, path)
    d2 = load(path)
    x = _x()
    with torch.no_grad():
        assert torch.equal(d(x), d2(x))
    assert layer_formats(d2) == layer_formats(d)
    torch.save({"not": "a model"}, str(tmp_path / "bad.pt"))
    with pytest.raises(ValueError, match=r"^file: this is a pickle-based file"):
        load(str(tmp_path / "bad.pt"))


def test_uncompressed_layers_default_bits():
    m = _model()
    d = deploy(m, default_bits=8)
    assert {f["format"] for f in layer_formats(d).values()} == {"int8"}
    d32 = deploy(m)
    x = _x()
    with torch.no_grad():
        assert torch.allclose(d32(x), m(x), atol=1e-4)


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2, 6, 3, padding=1)
        self.lif = LIF()
        self.fc = nn.Linear(6 * 5 * 5, 3)
        with torch.no_grad():
            self.conv.weight.mul_(4)

    def forward(self, s):  # s [T, B, 2, 5, 5] binary
        self.lif.reset()
        T, B = s.shape[:2]
        h = self.conv(s.flatten(0, 1)).unflatten(0, (T, B))
        h = self.lif(h)
        return self.fc(h.flatten(2)).mean(0)


def test_plain_conv_and_linear_deploy():
    net = ConvNet()
    ADMM(net, {"conv": {"sparsity": 0.5, "bits": 4}, "fc": {"sparsity": 0.6, "bits": 8}}).finalize()
    d = deploy(net)
    assert isinstance(d.conv, PackedSpikingConv2d) and isinstance(d.fc, PackedSpikingLinear)
    s = (torch.rand(3, 4, 2, 5, 5, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    with torch.no_grad():
        assert torch.allclose(net(s), d(s), atol=1e-4)


def test_bad_model():
    with pytest.raises(ValueError, match="^model: "):
        deploy("not a model")  # type: ignore[arg-type]


def test_spiking_linear_model_deploys():
    from sparsesnn.nn import SpikingLinear

    torch.manual_seed(0)
    model = nn.Sequential(SpikingLinear(24, 32), LIF(), SpikingLinear(32, 6))
    with torch.no_grad():
        model[0].weight.mul_(4)
    ADMM(model, sparsity=0.8, bits="ternary").finalize()
    d = deploy(model)
    assert isinstance(d[0], PackedSpikingLinear) and isinstance(d[2], PackedSpikingLinear)
    s = (torch.rand(4, 3, 24, generator=torch.Generator().manual_seed(2)) < 0.3).float()
    with torch.no_grad():
        model[1].reset()
        ya = model(s)
        d[1].reset()
        yb = d(s)
    assert torch.allclose(ya, yb, atol=1e-4)


def _trained_with_hooks():
    from sparsesnn.compress import ADMM, ActivityRegularizer
    from sparsesnn.models import SpikingMLP

    torch.manual_seed(0)
    model = SpikingMLP(16, (32,), 4, T=3, init_gain=3.0)
    admm = ADMM(model, {"fc1": {"sparsity": 0.5, "bits": 4}})
    act = ActivityRegularizer(model, 0.1)
    x = torch.rand(8, 16)
    loss = model(x).sum() + admm.penalty() + act.penalty()
    loss.backward()
    admm.finalize()
    model(x).sum().backward()  # the neuron state now holds autograd history
    return model, x


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules())


def test_deploy_straight_out_of_training(tmp_path):
    model, x = _trained_with_hooks()
    assert model.lif1.v is not None and model.lif1.v.grad_fn is not None
    hooks = _hook_count(model)
    assert hooks > 0
    deployed = deploy(model)
    assert _hook_count(deployed) == 0
    assert _hook_count(model) == hooks          # the user's model keeps its hooks
    assert model.lif1.v.grad_fn is not None     # ... and its state
    save(deployed, tmp_path / "m.pt")
    with torch.no_grad():
        assert torch.equal(load(tmp_path / "m.pt")(x), deployed(x))


def test_deploy_inplace_drops_hooks():
    model, x = _trained_with_hooks()
    out = deploy(model, inplace=True)
    assert out is model and _hook_count(model) == 0
    assert model.lif1.v is None


@pytest.mark.parametrize("sparsity,layout", [(0.5, "dense"), (0.95, "pruned")])
def test_index_layout_only_when_smaller(sparsity, layout):
    # int4 codes: the index layout costs 2 B of index + 0.5 B of code per kept weight, so at
    # 50% sparsity the plain packed codes (0.5 B per weight) are smaller (issue 14)
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(256, 128))
    ADMM(m, sparsity=sparsity, bits=4).finalize()
    d = deploy(m)
    f = layer_formats(d)["0"]
    assert f["layout"] == layout
    st = m[0].sparsesnn_compression
    both = [PackedSpikingLinear.from_float(m[0], st.spec, scale=st.scale, mask=st.mask, layout=lay)
            for lay in ("dense", "pruned")]
    assert f["bytes"] == min(b.model_bytes() for b in both)
    x = (torch.rand(3, 256) > 0.5).float()
    torch.testing.assert_close(d(x), m(x), atol=1e-4, rtol=1e-4)


def test_from_float_layout_argument():
    lin = nn.Linear(8, 4)
    with pytest.raises(ValueError, match="layout"):
        PackedSpikingLinear.from_float(lin, 8, layout="csr")
    mask = torch.rand(4, 8) > 0.5
    dense = PackedSpikingLinear.from_float(lin, None, mask=mask, layout="dense")
    assert dense.layout == "dense"
    torch.testing.assert_close(dense.dequantized_weight(), lin.weight.detach() * mask)
