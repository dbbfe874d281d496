"""from_spikingjelly: same spikes and gradients as SpikingJelly's own model.

Skipped when SpikingJelly is not installed (`pip install --no-deps spikingjelly loguru`).
"""
import copy

import pytest
import torch
from torch import nn

sj_layer = pytest.importorskip("spikingjelly.activation_based.layer")
sj_neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
sj_surrogate = pytest.importorskip("spikingjelly.activation_based.surrogate")
sj_functional = pytest.importorskip("spikingjelly.activation_based.functional")

from sparsesnn.convert import UnconvertibleError, from_spikingjelly  # noqa: E402
from sparsesnn.nn import IF, LIF, PLIF, SpikingConv2d, SpikingLinear, reset_net  # noqa: E402


def _csnn():
    """SpikingJelly's CSNN shape: (conv-BN-LIF) x2, pool, flatten, linear-LIF; multi-step."""
    lif = lambda: sj_neuron.LIFNode(tau=2.0, surrogate_function=sj_surrogate.ATan(),  # noqa: E731
                                    detach_reset=True)
    net = nn.Sequential(
        sj_layer.Conv2d(1, 6, 3, padding=1, bias=False), sj_layer.BatchNorm2d(6), lif(),
        sj_layer.Conv2d(6, 8, 3, padding=1, bias=False), sj_layer.BatchNorm2d(8), lif(),
        sj_layer.MaxPool2d(2), sj_layer.Flatten(), sj_layer.Linear(8 * 4 * 4, 10), lif())
    sj_functional.set_step_mode(net, "m")
    with torch.no_grad():  # non-trivial BN statistics so eval mode is not the identity
        for m in net:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(4.0)  # default init is too weak to make 0/1 inputs fire
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    return net


def _x(T=4, B=1000):
    return (torch.rand(T, B, 1, 8, 8) < 0.4).float() * 2.0  # spikes in, as after an encoder


def test_csnn_identical_spikes_on_1000_inputs():
    theirs = _csnn().eval()
    ours = from_spikingjelly(theirs).eval()
    assert isinstance(ours[0], SpikingConv2d) and isinstance(ours[2], LIF) and isinstance(ours[8], SpikingLinear)
    x = _x()
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    assert a.sum() > 0, "degenerate test: no output spikes"
    assert torch.equal(a, b), f"{(a != b).sum().item()} spikes differ"


def test_csnn_gradients_match_in_training_mode():
    theirs = _csnn().train()
    ours = from_spikingjelly(theirs)  # a deep copy: separate parameters, same values
    x = _x(B=16)
    a, b = ours(x), theirs(x)
    assert torch.equal(a, b)
    g = torch.randn_like(a)
    (a * g).sum().backward()
    (b * g).sum().backward()
    pairs = list(zip(ours.parameters(), theirs.named_parameters()))
    assert len(pairs) == len(list(theirs.parameters())) == 8
    for pa, (name, pb) in pairs:
        assert pa.shape == pb.shape and pa is not pb
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-4, atol=1e-5, msg=name)
    # BN running statistics were updated identically (BN runs on the folded T*B batch)
    torch.testing.assert_close(ours[1][0].running_mean, theirs[1].running_mean)


SURROGATES = [(sj_surrogate.Sigmoid, "sigmoid", 3.0), (sj_surrogate.ATan, "atan", 1.5),
              (sj_surrogate.PiecewiseQuadratic, "piecewise_quadratic", 0.8),
              (sj_surrogate.SuperSpike, "superspike", 1.0)]


@pytest.mark.parametrize("cls,name,alpha", SURROGATES)
@pytest.mark.parametrize("kind,kw", [
    ("lif", dict(tau=2.0, decay_input=True, v_reset=0.0)),
    ("lif", dict(tau=4.0, decay_input=False, v_reset=None, detach_reset=True)),
    ("lif", dict(tau=2.0, v_threshold=0.5, v_reset=-0.25)),
    ("if", dict(v_reset=None)),
    ("plif", dict(init_tau=2.0, decay_input=False)),
])
def test_neuron_options(kind, kw, cls, name, alpha):
    sj = {"lif": sj_neuron.LIFNode, "if": sj_neuron.IFNode, "plif": sj_neuron.ParametricLIFNode}[kind]
    theirs = sj(surrogate_function=cls(alpha=alpha), step_mode="m", **kw)
    ours = from_spikingjelly(theirs)
    assert isinstance(ours, {"lif": LIF, "if": IF, "plif": PLIF}[kind])
    assert (ours.surrogate, ours.alpha) == (name, alpha)
    x = torch.randn(12, 4, 19) + 0.4
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    a, b = ours(xa), theirs(xb)
    assert torch.equal(a, b)
    g = torch.randn_like(a)
    (a * g).sum().backward()
    (b * g).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-5)
    if kind == "plif":
        torch.testing.assert_close(ours.w.grad, theirs.w.grad, rtol=1e-4, atol=1e-5)


def test_single_step_neuron_keeps_state_across_calls():
    theirs = sj_neuron.LIFNode(tau=2.0, step_mode="s")
    ours = from_spikingjelly(theirs)
    for xt in torch.randn(6, 3, 5) + 0.5:
        assert torch.equal(ours(xt), theirs(xt))


def test_seq_to_ann_container_and_dropout():
    theirs = nn.Sequential(
        sj_layer.SeqToANNContainer(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4)),
        sj_neuron.LIFNode(step_mode="m"),
        sj_layer.Dropout(0.3, step_mode="m"),
        sj_layer.SeqToANNContainer(nn.Flatten(), nn.Linear(4 * 4 * 4, 6)),
        sj_neuron.LIFNode(step_mode="m"))
    ours = from_spikingjelly(theirs)
    assert isinstance(ours[0][0], SpikingConv2d) and isinstance(ours[3][1], SpikingLinear)
    x = torch.rand(5, 3, 2, 6, 6) * 3
    torch.manual_seed(1)
    a = ours(x)
    torch.manual_seed(1)
    b = theirs(x)
    assert torch.equal(a, b)  # same dropout mask under the same RNG state, shared over T


def test_unconvertible_modules_listed_in_one_error():
    model = nn.Sequential(
        sj_layer.Linear(4, 4),
        sj_neuron.LIFNode(surrogate_function=sj_surrogate.Erf()),
        nn.Sequential(sj_layer.Conv1d(1, 1, 1), sj_neuron.IzhikevichNode()))
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(UnconvertibleError) as e:
        from_spikingjelly(model, inplace=True)
    msg = str(e.value)
    assert [p for p, _, _ in e.value.items] == ["1", "2.0", "2.1"]
    assert "Erf" in msg and "Conv1d" in msg and "IzhikevichNode" in msg
    assert isinstance(model[0], sj_layer.Linear)  # nothing replaced on failure
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_converted_model_trains_and_deploys():
    from sparsesnn.deploy import deploy

    theirs = nn.Sequential(sj_layer.Linear(20, 32), sj_neuron.LIFNode(step_mode="m"),
                           sj_layer.Linear(32, 5), sj_neuron.LIFNode(step_mode="m"))
    ours = from_spikingjelly(theirs)
    opt = torch.optim.SGD(ours.parameters(), lr=0.5)
    x = (torch.rand(4, 8, 20) < 0.5).float()
    w0 = ours[0].weight.detach().clone()
    loss = (ours(x).mean(0) - 0.5).pow(2).sum()
    loss.backward()
    opt.step()
    assert not torch.equal(w0, ours[0].weight)
    reset_net(ours)
    with torch.no_grad():
        ref = ours(x)
        reset_net(ours)
        dep = deploy(ours)(x)
    assert torch.equal(ref, dep)
