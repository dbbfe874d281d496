"""Conv SNNs in sparsesnn.models: shapes, training step, reset, torch.compile, and the
compression methods on conv weights."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF
from torch import nn

from sparsesnn.compress import ADMM, compressible_layers, get_state, minimax_prune, tinysnn
from sparsesnn.compress.search import lite_search
from sparsesnn.compress.temporal import temporal_prune
from sparsesnn.models import SEWResNet, SpikingLeNet, SpikingMLP, SpikingVGG
from sparsesnn.nn import LIF, BatchNorm2d, SEWBlock, SpikingConv2d, reset_net


def _lenet(**kw):
    torch.manual_seed(0)
    return SpikingLeNet(1, 10, T=3, image_size=8, channels=(4, 8), kernel_size=3, hidden=(32,), **kw)


def _vgg(**kw):
    torch.manual_seed(0)
    return SpikingVGG([8, "M", 16, "A", 16], 3, 5, T=2, image_size=8, hidden=(16,), dropout=0.2, **kw)


def _resnet(**kw):
    torch.manual_seed(0)
    return SEWResNet((1, 1), (8, 16), 3, 5, T=2, **kw)


BUILDERS = {"lenet": (_lenet, (1, 8, 8)), "vgg": (_vgg, (3, 8, 8)), "resnet": (_resnet, (3, 8, 8))}


def _x(shape, n=6, seed=0):
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))


def test_mlp_import_path_kept():
    from sparsesnn.models.mlp import SpikingMLP as M

    assert M is SpikingMLP


@pytest.mark.parametrize("name", list(BUILDERS))
@pytest.mark.parametrize("encoder", ["direct", "rate"])
def test_forward_backward(name, encoder):
    build, shape = BUILDERS[name]
    m = build(encoder=encoder)
    x = _x(shape)
    y = m(x)
    assert y.shape == (6, m.num_classes) and torch.isfinite(y).all()
    TF.cross_entropy(y, torch.arange(6) % m.num_classes).backward()
    convs = [l for l in m.modules() if isinstance(l, nn.Conv2d)]
    assert convs and all(c.weight.grad is not None and c.weight.grad.abs().sum() > 0 for c in convs)
    # one call = one sequence: the state of the last call does not leak into the next
    m.eval()
    with torch.no_grad():
        assert torch.equal(m(x), m(x))
        reset_net(m)
        assert torch.equal(m(x), m(x))


def test_vgg_structure_and_bad_args():
    m = SpikingVGG("vgg11", 3, 10, T=4)
    convs = [l for l in m.modules() if isinstance(l, SpikingConv2d)]
    assert len(convs) == 8 and sum(isinstance(l, BatchNorm2d) for l in m.modules()) == 8
    assert m.head[-1].in_features == 512  # 32 / 2^5 = 1
    assert m.cfg[:2] == [64, "M"] and m.T == 4 and m.image_size == (32, 32)
    with pytest.raises(ValueError, match=r"^cfg: expected a list starting with a channel count"):
        SpikingVGG(["M", 64])
    with pytest.raises(ValueError, match=r"^cfg: entries must be channel counts"):
        SpikingVGG([64, "X"])
    with pytest.raises(ValueError, match=r"^cfg: too many poolings"):
        SpikingVGG([8, "M", "M", "M", "M"], image_size=8)
    with pytest.raises(ValueError, match="^encoder: "):
        SpikingVGG([8], encoder="poisson")
    with pytest.raises(ValueError, match=r"^x: expected \[B, 3, H, W\]"):
        SpikingVGG([8], 3, 10)(torch.zeros(2, 1, 32, 32))


def test_resnet_carries_counts_between_blocks():
    m = _resnet(connect="ADD")
    sew = [b for b in m.modules() if isinstance(b, SEWBlock)]
    assert len(sew) == 2 and sew[1].stride == 2 and sew[1].downsample is not None
    seen = []
    h = sew[0].register_forward_hook(lambda mod, i, o: seen.append(o.detach()))
    with torch.no_grad():
        m(_x((3, 8, 8)))
    h.remove()
    vals = set(torch.unique(seen[0]).tolist())
    assert vals <= {0.0, 1.0, 2.0} and 2.0 in vals  # integer spike counts reach the next block


def test_rebuild_from_attributes():
    """Constructor arguments are plain attributes (a config dict rebuilds the model)."""
    m = _vgg()
    cfg = dict(cfg=m.cfg, in_channels=m.in_channels, num_classes=m.num_classes, T=m.T,
               image_size=m.image_size, hidden=m.hidden, dropout=m.dropout, encoder=m.encoder,
               neuron=m.neuron, tau=m.tau, v_threshold=m.v_threshold)
    m2 = SpikingVGG(**cfg)
    m2.load_state_dict(m.state_dict())
    m.eval(), m2.eval()
    x = _x((3, 8, 8))
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))


def test_torch_compile():
    build, shape = BUILDERS["resnet"]  # SEW blocks, BN, pooling, flatten, conv and linear
    m = build().eval()
    x = _x(shape)
    with torch.no_grad():
        want = m(x)
        got = torch.compile(m, backend="aot_eager")(x)
    assert torch.allclose(got, want, atol=1e-5)


# ---- compression methods on conv weights -------------------------------------------------------
def _loader(shape, n=48, batch=16, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *shape, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return [(x[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)]


def _conv_sparsity(m):
    w = [l.weight for l in m.modules() if isinstance(l, nn.Conv2d)]
    return float(sum(int((x == 0).sum()) for x in w) / sum(x.numel() for x in w))


def test_admm_on_conv_weights():
    m = _lenet()
    admm = ADMM(m, sparsity=0.8, bits=4, rho=0.05)
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    for x, y in _loader((1, 8, 8)):
        loss = TF.cross_entropy(m(x), y) + admm.penalty()
        opt.zero_grad()
        loss.backward()
        opt.step()
        admm.step()
    admm.finalize()
    for name, layer in compressible_layers(m).items():
        st = get_state(layer)
        assert st is not None and st.spec is not None and st.mask is not None, name
        assert abs(float((layer.weight == 0).float().mean()) - 0.8) < 0.05
        codes = layer.weight.detach() / st.scale.view(-1, *[1] * (layer.weight.dim() - 1))
        assert torch.allclose(codes, codes.round(), atol=1e-4) and float(codes.round().abs().max()) <= 7


def test_minimax_on_conv():
    m = _lenet()
    pruner = minimax_prune(m, _loader((1, 8, 8)), budget=0.3, epochs=1, finetune_epochs=1, progress=False)
    assert pruner.history
    convs = [l for l in m.modules() if isinstance(l, nn.Conv2d)]
    assert any(get_state(c) is not None and get_state(c).mask is not None for c in convs)
    assert _conv_sparsity(m) > 0.3


def test_tinysnn_on_conv():
    m = _lenet()
    tinysnn.quantize_weights(m, 4)
    for l in m.modules():
        if isinstance(l, nn.Conv2d):
            assert len(torch.unique(l.weight[0])) <= 15  # 4-bit symmetric grid per channel
    assert torch.isfinite(m(_x((1, 8, 8)))).all()


def test_lite_search_on_conv():
    m = _lenet()
    cfg, admm = lite_search(m, _loader((1, 8, 8)), epochs=1, finetune_epochs=1, progress=False,
                            T_candidates=[2, 3])
    assert m.T == cfg.T and cfg.T in (2, 3)
    assert {n for n in cfg.layers} == set(compressible_layers(m))
    assert torch.isfinite(m(_x((1, 8, 8)))).all()


def test_temporal_prune_on_conv():
    m = _vgg()
    res = temporal_prune(m, _loader((3, 8, 8), classes=5), _loader((3, 8, 8), classes=5, seed=1),
                         target_T=1, epochs_per_step=1, tolerance=1.0, progress=False)
    assert m.T == 1 and res is not None
    assert m(_x((3, 8, 8))).shape == (6, 5)
