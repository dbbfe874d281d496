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
    fixed = net.stem.conv.deployed_bytes() + net.head.deployed_bytes() + 3 * 16 * 4  # + 3 BatchNorms
    assert net.fixed_bytes() == fixed
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


def test_hard_budget_decode_picks_the_most_probable_cell_that_fits():
    net = lite.LiteSupernet(C=4)
    names = [c.name for c in net.cands]
    with torch.no_grad():  # prefer fp32 5x5 everywhere, then 8-bit CompConv, then 2-bit
        net.alpha.zero_()
        net.alpha[:, names.index("conv5")] = 3.0
        net.alpha[:, names.index("comp8b_keep1")] = 2.0
        net.alpha[:, names.index("comp2b_keep0.5")] = 1.0
        net.alpha[:, names.index("none")] = 9.0  # never decoded
    fixed, b8, b2 = net.fixed_bytes(), lite.conv_bytes(4, 4, 3, 8), lite.conv_bytes(4, 4, 3, 2)
    assert [e["name"] for e in net.genotype()["edges"]] == ["conv5"] * 3  # no budget: argmax
    budget = fixed + 2 * b8 + b2  # two 8-bit edges and one 2-bit edge fit; three 8-bit do not
    g = net.genotype(budget)
    assert sorted(e["name"] for e in g["edges"]) == ["comp2b_keep0.5", "comp8b_keep1", "comp8b_keep1"]
    cell = lite.decode(net, budget)
    assert cell.deployed_bytes() == budget  # the supernet's byte model is the deployed one
    assert all(e["name"] in ("skip", "avgpool") for e in net.genotype(fixed)["edges"])  # weightless cell
    with pytest.raises(ValueError, match=r"^byte_budget: expected >= "):
        net.genotype(fixed - 1)


def test_decode_sums_compconv_over_its_settings():
    net = lite.LiteSupernet(C=4)
    names = [c.name for c in net.cands]
    comp = [i for i, n in enumerate(names) if n.startswith("comp")]
    with torch.no_grad():  # avgpool beats each CompConv setting, not CompConv (4 e > e^2)
        net.alpha.zero_()
        net.alpha[:, comp] = 1.0
        net.alpha[:, comp[1]] = 1.1  # the preferred setting
        net.alpha[:, names.index("avgpool")] = 2.0
    assert [e["name"] for e in net.genotype()["edges"]] == [names[comp[1]]] * 3
    with torch.no_grad():
        net.alpha[:, names.index("avgpool")] = 2.5  # now e^2.5 > the CompConv total
    assert [e["name"] for e in net.genotype()["edges"]] == ["avgpool"] * 3


def test_search_runs_and_decodes_within_the_budget():
    x, y = _data(32)
    probe = lite.LiteSupernet(C=4)
    budget = probe.fixed_bytes() + 2 * lite.conv_bytes(4, 4, 3, 4)
    r = lite.search(x, y, byte_budget=budget, C=4, epochs=2, warmup=1, batch=8)
    assert len(r.history) == 2 and r.genotype["T"] in (1, 2, 3, 4)
    assert all(0 <= h["val_acc"] <= 1 for h in r.history)
    assert not torch.equal(r.supernet.alpha.detach(), torch.zeros_like(r.supernet.alpha))  # arch weights trained
    net = lite.decode(r.supernet, budget)
    assert [c.name for c in net.ops] == [e["name"] for e in r.genotype["edges"]]
    assert net.deployed_bytes() <= budget
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
    with pytest.raises(ValueError, match="byte_budget: expected >= "):
        lite.search(x, y, byte_budget=100, C=4)  # below the stem + head + BatchNorm bytes
    with pytest.raises(ValueError, match="val_fraction"):
        lite.search(x, y, byte_budget=1e5, C=4, val_fraction=1.0)


def test_select_settings_scores_every_fitting_setting_and_restores_the_supernet():
    torch.manual_seed(0)
    net = lite.LiteSupernet(C=4)
    x, y = _data(24)
    names = [c.name for c in net.cands]
    with torch.no_grad():
        net.alpha.zero_()
        net.alpha[:, [i for i, n in enumerate(names) if n.startswith("comp")]] = 2.0
        net.alpha[1, names.index("skip")] = 4.0  # edge 0->2: skip; edges 0->1, 1->2: CompConv
    alpha = net.alpha.detach().clone()
    budget = net.fixed_bytes() + lite.conv_bytes(4, 4, 3, 8) + lite.conv_bytes(4, 4, 3, 4)
    g, scored = lite.select_settings(net, x, y, budget)
    assert torch.equal(net.alpha.detach(), alpha) and net.training
    assert g["edges"][1]["name"] == "skip"
    # 4 x 4 settings on the two CompConv edges, minus the one that does not fit (8-bit twice)
    assert len(scored) == 15 and all(s["edges"][1] == "skip" for s in scored)
    best = max(s["val_acc"] for s in scored)
    chosen = [e["name"] for e in g["edges"]]
    assert [s["val_acc"] for s in scored if s["edges"] == chosen] == [best]
    assert lite.decode(net, genotype=g).deployed_bytes() <= budget
    with torch.no_grad():  # the score is the supernet restricted to those ops
        net.alpha.fill_(-float("inf"))
        for e, n in enumerate(chosen):
            net.alpha[e, names.index(n)] = 0.0
        net.eval()
        acc = float((net.readouts(x)[net.T_choices.index(g["T"])].argmax(-1) == y).float().mean())
    assert acc == best
