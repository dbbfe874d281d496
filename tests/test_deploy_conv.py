"""deploy() of conv SNNs: BN folded before quantization, exact packed layers, binary spikes
after max pooling, analog input where it is analog, layouts chosen by bytes."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsesnn.compress import ADMM, get_state
from sparsesnn.deploy import deploy, fold_batchnorm, layer_formats
from sparsesnn.models import SEWResNet, SpikingLeNet, SpikingVGG
from sparsesnn.nn import PackedSpikingConv2d, PackedSpikingLinear


def _warm_bn(m, shape, seed=0):
    """Random affine BN parameters (some gamma < 0) and running stats from a few batches."""
    g = torch.Generator().manual_seed(seed)
    for bn in m.modules():
        if isinstance(bn, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                bn.weight.copy_(torch.randn(bn.num_features, generator=g) * 0.5 + 1.0)
                bn.weight[0] = -0.7
                bn.bias.copy_(torch.randn(bn.num_features, generator=g) * 0.3 + 0.5)
            bn.momentum = None  # running stats = the plain average over the warm-up batches
    m.train()
    with torch.no_grad():
        for _ in range(3):
            m(torch.rand(8, *shape, generator=g))
    return m.eval()


def _models():
    torch.manual_seed(0)
    return {
        "vgg": (SpikingVGG([8, "M", 16, "A", 16, "M"], 3, 5, T=3, image_size=8, hidden=(24,)), (3, 8, 8)),
        "lenet": (SpikingLeNet(1, 10, T=3, image_size=8, channels=(6, 12), kernel_size=3, hidden=(32,),
                               encoder="rate"), (1, 8, 8)),
        "resnet": (SEWResNet((1, 1), (8, 16), 3, 5, T=3), (3, 8, 8)),
    }


def _x(shape, n=32, seed=5):
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ["vgg", "lenet", "resnet"])
def test_fold_batchnorm_same_function(name):
    m, shape = _models()[name]
    _warm_bn(m, shape)
    f = fold_batchnorm(m)
    assert not any(isinstance(l, nn.modules.batchnorm._BatchNorm) for l in f.modules())
    assert any(isinstance(l, nn.modules.batchnorm._BatchNorm) for l in m.modules())  # copy
    # BN folded into the conv before it: same pre-activations
    conv, bn = m.stem[0], m.stem[1]
    x = _x(shape)
    with torch.no_grad():
        assert torch.allclose(f.stem(x), bn(conv(x)), atol=1e-5)
        ya, yb = m(x), f(x)
    assert (ya.argmax(1) == yb.argmax(1)).float().mean() >= 0.95
    assert torch.allclose(ya, yb, atol=0.15)  # a spike may flip at a threshold by rounding


def test_fold_rejects_bn_without_running_stats():
    seq = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3, track_running_stats=False))
    with pytest.raises(ValueError, match="running statistics"):
        fold_batchnorm(seq)


@pytest.mark.parametrize("name", ["vgg", "lenet", "resnet"])
@pytest.mark.parametrize("bits,sparsity", [(4, 0.9), (8, 0.5), (None, 0.0)])
def test_deploy_conv_matches_folded_float(name, bits, sparsity):
    m, shape = _models()[name]
    _warm_bn(m, shape)
    if bits is not None:
        ADMM(m, sparsity=sparsity, bits=bits).finalize()
    d = deploy(m)
    assert not any(isinstance(l, nn.modules.batchnorm._BatchNorm) for l in d.modules())
    assert not any(type(l) in (nn.Conv2d, nn.Linear) or isinstance(l, (nn.Conv2d, nn.Linear))
                   for l in d.modules())
    f = fold_batchnorm(m)
    x = _x(shape)
    with torch.no_grad():
        ya, yb = f(x), d(x)
    assert torch.allclose(ya, yb, atol=1e-4, rtol=1e-4)
    assert torch.equal(ya.argmax(1), yb.argmax(1))
    if bits is not None:  # folded weights stay on a grid: same codes, scale |c| * s
        for name_, layer in d.named_modules():
            if isinstance(layer, PackedSpikingConv2d):
                fl = f.get_submodule(name_)
                assert torch.allclose(layer.dequantized_weight(), fl.weight, atol=1e-6), name_


def test_admm_tap_structure_deploys_pruned_conv_layout():
    """structure="taps": conv sparsity removes whole tap rows (c, ky, kx), so deploy stores the
    convs in the pruned layout; linear layers are pruned per weight; outputs match."""
    m, shape = _models()["vgg"]
    _warm_bn(m, shape)
    ADMM(m, sparsity=0.9, bits=4, structure="taps").finalize()
    convs = [l for l in m.modules() if isinstance(l, nn.Conv2d)]
    for conv in convs:
        rows = conv.weight.detach().permute(1, 2, 3, 0).flatten(0, 2)  # [C*KH*KW, O]
        alive = rows.abs().sum(1) > 0
        kept = rows.shape[0] - round(0.9 * rows.shape[0])
        assert int(alive.sum()) <= kept  # whole rows zero (rounding may zero more)
        assert float((conv.weight == 0).float().mean()) >= (rows.shape[0] - kept) / rows.shape[0] - 1e-6
    d = deploy(m)
    fm = layer_formats(d)
    for name, layer in d.named_modules():
        if isinstance(layer, PackedSpikingConv2d):
            assert layer.layout == "pruned", (name, fm[name])
    f = fold_batchnorm(m)
    x = _x(shape)
    with torch.no_grad():
        assert torch.allclose(f(x), d(x), atol=1e-4, rtol=1e-4)


def test_admm_structure_errors():
    m, _ = _models()["lenet"]
    with pytest.raises(ValueError, match="^structure: expected one of"):
        ADMM(m, sparsity=0.5, structure="channels")


def test_deployed_spikes_binary_after_max_analog_after_avg():
    m, shape = _models()["vgg"]
    _warm_bn(m, shape)
    with torch.no_grad():
        m.head[1].weight.mul_(4)  # the hidden FC layer fires too
    ADMM(m, sparsity=0.5, bits=4).finalize()
    d = deploy(m)
    inputs = {}
    hooks = [l.register_forward_hook(lambda mod, i, o, n=n: inputs.__setitem__(n, i[0]))
             for n, l in d.named_modules() if isinstance(l, (PackedSpikingConv2d, PackedSpikingLinear))]
    with torch.no_grad():
        d(_x(shape))
    for h in hooks:
        h.remove()
    binary = {n: bool(((x == 0) | (x == 1)).all()) for n, x in inputs.items()}
    # stem: the analog image (first layer on the analog path); body.2 after max pooling: spikes;
    # body.6 after average pooling: fractions; the classifier after max pooling: spikes
    assert binary == {"stem.0": False, "body.2": True, "body.6": False, "head.1": True, "head.3": True}
    assert all(float(x.mean()) > 0.01 for x in inputs.values())  # the layers are active
    assert inputs["stem.0"].dim() == 4  # direct input: the stem runs once, not T times


def test_layout_chosen_by_bytes():
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(256, 128), nn.Linear(128, 64))
    ADMM(seq, targets={"0": {"sparsity": 0.95, "bits": 4}, "1": {"sparsity": 0.2, "bits": 4}}).finalize()
    d = deploy(seq)
    fm = layer_formats(d)
    assert fm["0"]["layout"] == "pruned" and fm["1"]["layout"] == "dense"
    for name in ("0", "1"):
        st = get_state(seq.get_submodule(name))
        sizes = [PackedSpikingLinear.from_float(seq.get_submodule(name), st.spec, scale=st.scale,
                                                mask=st.mask, layout=lay).model_bytes()
                 for lay in ("dense", "pruned")]
        assert fm[name]["bytes"] == min(sizes)
    x = (torch.rand(4, 256) < 0.2).float()
    with torch.no_grad():
        assert torch.allclose(d(x), seq(x), atol=1e-4)


def test_fold_model_straight_out_of_training():
    m, shape = _models()["lenet"]
    x = _x(shape, n=8)
    m.train()
    m(x).sum().backward()  # neuron state now carries autograd history
    f = fold_batchnorm(m)
    assert not any(isinstance(l, nn.modules.batchnorm._BatchNorm) for l in f.modules())
