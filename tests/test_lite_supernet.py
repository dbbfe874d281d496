"""compress.lite: the cell-level supernet's cost model, decoding and deployment of the result."""
import pytest
import torch

from sparsesnn.compress import lite
from sparsesnn.deploy import deploy
from sparsesnn.metrics import report


def _data(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 64, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_candidates_and_byte_model():
    names = [c.name for c in lite.candidates()]
    assert names[-5:] == ["conv3", "conv5", "skip", "avgpool", "none"]
    assert lite.conv_bytes(8, 8, 3, 4) == 8 * (36 + 4)
    assert lite.conv_bytes(8, 8, 5, 32) == 4 * 8 * 8 * 25


def test_expected_cost_follows_the_architecture_weights():
    torch.manual_seed(0)
    net = lite.LiteSupernet(C=4)
    x, _ = _data(8)
    net(x)
    cands = [c.name for c in net.cands]
    with torch.no_grad():
        net.alpha.fill_(-30.0)
        net.alpha[:, cands.index("conv5")] = 30.0
        big = net.expected_cost()
        net.alpha.fill_(-30.0)
        net.alpha[:, cands.index("none")] = 30.0
        small = net.expected_cost()
        assert all(e["name"] != "none" for e in net.genotype()["edges"])  # decode skips "none"
        net.beta.copy_(torch.tensor([30.0, -30, -30, -30]))
        assert abs(float(net.expected_cost()["T"]) - 1.0) < 1e-6
    fixed = net.stem.conv.deployed_bytes() + net.head.deployed_bytes()
    assert abs(float(small["bytes"]) - fixed) < 1e-3
    assert abs(float(big["bytes"]) - fixed - 3 * lite.conv_bytes(4, 4, 5, 32)) < 1e-2
    assert float(big["bit_synops"]) > 0 and float(small["bit_synops"]) < 1e-12


def test_search_gradients_reach_arch_and_timestep_weights():
    net = lite.LiteSupernet(C=4)
    x, y = _data(16)
    loss = torch.nn.functional.cross_entropy(net(x), y) + net.expected_cost()["bytes"] / 1e4
    loss.backward()
    assert net.alpha.grad is not None and net.alpha.grad.abs().sum() > 0
    assert net.beta.grad is not None and net.beta.grad.abs().sum() > 0


def test_decoded_net_deploys_on_packed_kernels_with_the_same_outputs():
    torch.manual_seed(0)
    ops = [lite.Candidate("comp4b_keep0.5", 4, 0.5, 3), lite.Candidate("conv5", 32, 1.0, 5),
           lite.Candidate("comp8b_keep1", 8, 1.0, 3)]
    net = lite.CellNet(4, 8, 10, ops, T=3)
    x, y = _data(32)
    lite.train_net(net, x, y, epochs=1)  # BatchNorm statistics and non-trivial weights
    net.finalize().eval()
    dep = deploy(net)
    packed = [type(m).__name__ for m in dep.modules() if "Packed" in type(m).__name__]
    assert packed.count("PackedSpikingConv2d") == 4 and packed.count("PackedSpikingLinear") == 1
    with torch.no_grad():
        a, b = net(x), dep(x)
    assert torch.allclose(a, b, atol=1e-3), (a - b).abs().max()
    conv_bytes = report(dep)["total"]["bytes"]
    assert conv_bytes <= net.deployed_bytes()  # BatchNorm bytes are counted on top in ours


def test_search_runs_and_decodes():
    x, y = _data(32)
    r = lite.search(x, y, byte_budget=3000, C=4, epochs=2, warmup=1, batch=16)
    assert len(r.history) == 2 and r.genotype["T"] in (1, 2, 3, 4)
    net = lite.decode(r.supernet)
    assert [c.name for c in net.ops] == [e["name"] for e in r.genotype["edges"]]
    assert net(x).shape == (32, 10)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"^C: expected an integer >= 1"):
        lite.LiteSupernet(C=0)
    with pytest.raises(ValueError, match="T_choices"):
        lite.LiteSupernet(T_choices=(2, 1))
    with pytest.raises(ValueError, match="comp_settings"):
        lite.LiteSupernet(comp_settings=((3, 0.5),))
    x, y = _data(8)
    with pytest.raises(ValueError, match="byte_budget"):
        lite.search(x, y, byte_budget=0)
