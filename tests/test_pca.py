"""PCA spatial pruning: component counts, real smaller tensors, function preserved, errors."""
import copy
import math

import pytest
import torch
from torch import nn

from sparsesnn.compress import evaluate, fit, reset_states
from sparsesnn.compress.pca import (collect_membrane, explained_components, pca_prune,
                                    prunable_layers, select_neurons, spatial_prune)
from sparsesnn.models import SpikingMLP
from sparsesnn.nn import LIF, Flatten, SpikingConv2d


def _spectrum_data(sigmas, n=300, dim=20, seed=0):
    """Centred data whose covariance eigenvalues are exactly proportional to sigmas**2."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, len(sigmas), generator=g, dtype=torch.float64)
    u, _ = torch.linalg.qr(z - z.mean(0))  # orthonormal, centred columns
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    return (u * torch.tensor(sigmas, dtype=torch.float64)) @ q[: len(sigmas)] + 3.0


@pytest.mark.parametrize("variance,k", [(0.5, 1), (0.9, 1), (0.95, 2), (0.99, 2), (0.999, 3),
                                        (0.9999, 4), (1.0, 4)])
def test_components_constructed_spectrum(variance, k):
    # eigenvalues 100, 10, 1, 0.1 (+16 zeros): cumulative 0.9001, 0.9901, 0.99910, 1
    x = _spectrum_data([10.0, math.sqrt(10.0), 1.0, math.sqrt(0.1)])
    assert explained_components(x, variance) == k


@pytest.mark.parametrize("rank", [1, 3, 7])
def test_components_low_rank_equals_rank(rank):
    g = torch.Generator().manual_seed(rank)
    x = torch.randn(200, rank, generator=g) @ torch.randn(rank, 40, generator=g)
    assert explained_components(x, 1.0) == rank
    assert explained_components(x.float(), 0.999) <= rank


def test_select_neurons_skips_duplicates_and_constants():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(100, 3, generator=g)
    acts = torch.cat([base, base[:, :1], torch.full((100, 1), 2.0), base[:, 1:2]], 1)  # 6 cols
    keep = select_neurons(acts, 3)
    assert sorted(acts[:, keep].T.tolist()) == sorted(base.T.tolist())


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.0001, 2, float("nan"), float("inf"), True, "0.9"])
def test_bad_variance(bad):
    x = torch.randn(10, 4)
    with pytest.raises(ValueError, match="variance"):
        explained_components(x, bad)
    model = SpikingMLP(4, (6,), 2, T=2)
    with pytest.raises(ValueError, match="variance"):
        spatial_prune(model, [(x[:, :4].clamp(0, 1), None)], bad)


def _rank_deficient_mlp():
    torch.manual_seed(0)
    m = SpikingMLP(8, (7,), 3, T=4)
    with torch.no_grad():
        a = torch.randn(3, 8) * 2.0
        ba = torch.randn(3) * 0.5 + 0.5
        # rows: a0 a1 a2, duplicates of a0 and a2, a dead neuron, a duplicate of a1
        m.fc1.weight.copy_(torch.stack([a[0], a[1], a[2], a[0], a[2], torch.zeros(8), a[1]]))
        m.fc1.bias.copy_(torch.stack([ba[0], ba[1], ba[2], ba[0], ba[2], torch.tensor(-1.0), ba[1]]))
    return m


def test_rebuild_same_function_rank_deficient():
    m = _rank_deficient_mlp()
    x = torch.rand(256, 8)
    ref = copy.deepcopy(m)
    with torch.no_grad():
        y0 = ref(x)
    u, s = collect_membrane(m, [(x, None)], m.lif1)
    assert u.shape == (256, 7) and s.shape == (256 * 4, 7)
    assert s.sum() > 0  # the kept neurons do spike: the test is not trivially all-zero
    res = spatial_prune(m, [(x, None)], variance=1.0)
    assert res.widths_before == {"fc1": 7} and res.widths_after == {"fc1": 3}
    # real smaller tensors
    assert tuple(m.fc1.weight.shape) == (3, 8) and tuple(m.fc1.bias.shape) == (3,)
    assert tuple(m.fc2.weight.shape) == (3, 3)
    assert sum(p.numel() for p in m.parameters()) < sum(p.numel() for p in ref.parameters())
    with torch.no_grad():
        y1 = m(x)
    torch.testing.assert_close(y1, y0, atol=1e-4, rtol=1e-4)


def test_rebuild_without_compensation_changes_function():
    m = _rank_deficient_mlp()
    x = torch.rand(256, 8)
    with torch.no_grad():
        y0 = m(x)
    spatial_prune(m, [(x, None)], variance=1.0, compensate=False)
    with torch.no_grad():
        y1 = m(x)
    assert (y1 - y0).abs().max() > 1e-3  # the fold-in above is what keeps the function


@pytest.fixture(scope="module")
def digits():
    from sparsesnn.data import load_digits, loaders

    torch.manual_seed(0)
    tr, te = loaders(load_digits(), batch_size=64)
    m = SpikingMLP(64, (64, 64), 10, T=4, init_gain=3.0)
    fit(m, tr, torch.optim.Adam(m.parameters(), 3e-3), epochs=4, progress=False)
    reset_states(m)  # drop the last batch's graph-attached state so the model deep-copies
    return m, tr, te


def test_pca_prune_trained_model_and_deploy(digits):
    from sparsesnn.deploy import deploy

    model, tr, te = digits
    m = copy.deepcopy(model)
    assert [t[0] for t in prunable_layers(m)] == ["fc1", "fc2"]
    res = pca_prune(m, tr, tr, variance=0.99, epochs=1, progress=False, max_samples=256)
    for name in ("fc1", "fc2"):
        assert res.widths_after[name] < res.widths_before[name] == 64
    assert m.fc1.out_features == res.widths_after["fc1"] == m.fc2.in_features
    assert m.fc2.out_features == res.widths_after["fc2"] == m.fc3.in_features
    assert evaluate(m, te)["acc"] > 0.7  # dense: ~0.90; compensated + fine-tuned keeps most
    d = deploy(m)
    x = next(iter(te))[0]
    with torch.no_grad():
        assert torch.equal(d(x).argmax(-1), m.eval()(x).argmax(-1))


def test_unknown_layers_and_unsupported_model():
    m = SpikingMLP(4, (6,), 2, T=2)
    x = torch.rand(8, 4)
    with pytest.raises(ValueError, match="^layers: "):
        spatial_prune(m, [(x, None)], layers=["fc9"])
    with pytest.raises(ValueError, match="^model: "):
        spatial_prune(nn.Linear(3, 3), [(x, None)])


# ---- the paper's criterion, sizes and retraining (issue 14) -------------------------------
def _wide_first_layer(F=8, H=48):
    torch.manual_seed(0)
    return SpikingMLP(F, (H, H), 3, T=6, init_gain=4.0)


def _loader(F=8, n=256):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, F, generator=g)
    return [(x[i:i + 64], torch.zeros(64, dtype=torch.long)) for i in range(0, n, 64)]


def test_membrane_criterion_is_not_bounded_by_the_input_width():
    # the time-averaged input current of fc1 is linear in the F inputs: rank <= F, so the old
    # criterion could never keep more than F neurons; the membrane potential (after reset) is not
    m, data = _wide_first_layer(), _loader()
    u, s = collect_membrane(m, data, m.lif1)  # default: the paper's membrane potential
    assert u.shape == (256, 48) and s.shape == (256 * 6, 48)
    assert explained_components(u, 1.0) > 8
    u_cur, _ = collect_membrane(m, data, m.lif1, criterion="current")
    assert explained_components(u_cur, 1.0) <= 8


def test_membrane_trace_matches_the_neuron():
    from sparsesnn.compress.pca import membrane_trace
    from sparsesnn.nn import LIF

    x = torch.rand(5, 3, 7) * 2
    n = LIF(tau=2.0)
    vs = membrane_trace(n, x)
    ref = LIF(tau=2.0)
    for t in range(5):  # the state after each step of the real neuron
        ref(x[: t + 1])
        assert torch.allclose(vs[t], ref.v, atol=1e-6)
        ref.reset()


def test_widths_fix_the_operating_point_and_retrain_reinitializes():
    m, data = _wide_first_layer(), _loader()
    res = spatial_prune(m, data, widths={"fc1": 5, "fc2": 7})
    assert (m.fc1.out_features, m.fc2.in_features, m.fc2.out_features, m.fc3.in_features) == (5, 5, 7, 7)
    assert res.widths_after == {"fc1": 5, "fc2": 7}
    m2 = _wide_first_layer()
    keep = copy.deepcopy(m2)
    pca_prune(m2, data, data, widths={"fc1": 5}, epochs=0, mode="retrain", init_gain=4.0)
    kept_rows = m2.fc1.weight.detach()
    # re-initialized: none of the kept rows is the trained row it came from
    assert not any(torch.allclose(kept_rows[i], keep.fc1.weight[j]) for i in range(5) for j in range(48))
    with pytest.raises(ValueError, match="^mode: "):
        pca_prune(_wide_first_layer(), data, mode="scratch")
    with pytest.raises(ValueError, match="criterion"):
        collect_membrane(m, data, m.lif1, criterion="voltage")


def test_collect_membrane_conv_channels():
    from sparsesnn.nn import LIF

    net = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), LIF())

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):  # [B, 1, 5, 5] -> [T=3, B, 6, 5, 5]
            net[1].reset()
            return net[1](net[0](x.unsqueeze(0).expand(3, *x.shape).flatten(0, 1)).unflatten(0, (3, -1)))

    x = torch.rand(4, 1, 5, 5)
    u, s = collect_membrane(Wrap(), [(x, None)], net[1])
    assert u.shape == (4 * 25, 6) and s.shape == (3 * 4 * 25, 6)  # samples = batch x H x W


class _ConvNet(nn.Module):
    """conv(1->4) LIF conv(4->3) over T=3 steps of direct input; ``_order`` lists the chain."""

    def __init__(self):
        super().__init__()
        from sparsesnn.nn import LIF, SpikingConv2d

        torch.manual_seed(0)
        self.conv1, self.lif1, self.conv2 = SpikingConv2d(1, 4, 3, padding=1), LIF(), SpikingConv2d(4, 3, 3, padding=1)
        self._order = ["conv1", "lif1", "conv2"]
        with torch.no_grad():
            self.conv1.weight.mul_(4.0)
            self.conv1.weight[3] = self.conv1.weight[0]  # channel 3 duplicates channel 0
            self.conv1.bias[3] = self.conv1.bias[0]

    def forward(self, x):  # [B, 1, 6, 6] -> [T, B, 3, 6, 6]
        self.lif1.reset()
        return self.conv2(self.lif1(self.conv1(x.unsqueeze(0).expand(3, *x.shape))))


def test_conv_channel_pca_folds_duplicate_channels_exactly():
    m = _ConvNet()
    x = torch.rand(16, 1, 6, 6)
    with torch.no_grad():
        before = m(x)
    assert prunable_layers(m) == [("conv1", "lif1", "conv2")]
    res = spatial_prune(m, [(x, None)], variance=1.0)
    kept = res.kept["conv1"].tolist()
    assert res.widths_after["conv1"] <= 3 and (0 in kept) != (3 in kept)  # one of the twins
    assert m.conv1.out_channels == m.conv2.in_channels == res.widths_after["conv1"]
    assert type(m.conv1).__name__ == "SpikingConv2d"
    with torch.no_grad():
        torch.testing.assert_close(m(x), before, atol=1e-4, rtol=1e-4)


class _ConvHeadNet(nn.Module):
    """conv -> LIF -> Flatten -> Linear head; conv channel 3 duplicates channel 1."""

    def __init__(self, flatten: nn.Module):
        super().__init__()
        torch.manual_seed(1)
        self.conv1, self.lif1, self.flat, self.fc = SpikingConv2d(1, 4, 3, padding=1), LIF(), flatten, nn.Linear(4 * 36, 5)
        self._order = ["conv1", "lif1", "flat", "fc"]
        with torch.no_grad():
            self.conv1.weight.mul_(4.0)
            self.conv1.weight[3] = self.conv1.weight[1]
            self.conv1.bias[3] = self.conv1.bias[1]

    def forward(self, x):  # [B, 1, 6, 6] -> [T, B, 5]
        self.lif1.reset()
        return self.fc(self.flat(self.lif1(self.conv1(x.unsqueeze(0).expand(3, *x.shape)))))


@pytest.mark.parametrize("flatten", [lambda: Flatten(), lambda: nn.Flatten(2)], ids=["ours", "torch"])
def test_conv_channel_pca_into_a_linear_head_folds_duplicates_exactly(flatten):
    m = _ConvHeadNet(flatten())
    x = torch.rand(16, 1, 6, 6)
    with torch.no_grad():
        before = m(x)
    assert prunable_layers(m) == [("conv1", "lif1", "fc")]
    res = spatial_prune(m, [(x, None)], variance=1.0)
    kept = res.kept["conv1"].tolist()
    assert res.widths_after["conv1"] <= 3 and (1 in kept) != (3 in kept)
    assert m.fc.in_features == 36 * m.conv1.out_channels
    with torch.no_grad():
        torch.testing.assert_close(m(x), before, atol=1e-4, rtol=1e-4)


def test_conv_channel_pca_into_a_linear_head_keeps_the_kept_channels_columns():
    m = _ConvHeadNet(Flatten())
    w = m.fc.weight.detach().clone().reshape(5, 4, 36)
    conv_w = m.conv1.weight.detach().clone()
    res = spatial_prune(m, [(torch.rand(8, 1, 6, 6), None)], widths={"conv1": 2}, compensate=False)
    keep = res.kept["conv1"]
    assert keep.numel() == 2
    torch.testing.assert_close(m.conv1.weight, conv_w[keep])
    torch.testing.assert_close(m.fc.weight.reshape(5, 2, 36), w[:, keep])  # channel-major columns
