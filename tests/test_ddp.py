"""Training and compression under torch.distributed DDP: 2 gloo processes on CPU.

Each test spawns two fresh processes (``_launch``) that run a worker below; rank 0 writes what it
gathered to a file and the assertions run here, in the pytest process. Every collective has a
timeout and the launcher a deadline, so a broken test fails instead of hanging.
"""
from __future__ import annotations

import datetime
import multiprocessing
import os
import socket
import sys
import time

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo needed")

WORLD = 2
GLOBAL_BATCH = 16
COLLECTIVE_TIMEOUT_S = 20


# ---------------------------------------------------------------------------- launcher
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(fn, rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)  # 2 processes on a 2-core machine: no oversubscription
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD,
                            timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    try:
        fn(rank, out)
        dist.barrier()  # no rank leaves while a peer still talks to it
    except BaseException:
        dist.destroy_process_group()
        raise
    # Work done on every rank. gloo's own teardown (destroy_process_group, then interpreter exit
    # with its threads) aborts now and then with "terminate called without an active exception"
    # (seen once in CI, exit -6): that is torch's teardown, not the code under test, so a rank
    # that finished its work leaves at once with 0.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _launch(fn, tmp_path, deadline_s: float = 90.0) -> list[int | None]:
    """Run ``fn(rank, out_path)`` on 2 ranks; returns exit codes (None: killed at the deadline)."""
    ctx = multiprocessing.get_context("spawn")
    port = _free_port()
    out = str(tmp_path / "result.pt")
    procs = [ctx.Process(target=_entry, args=(fn, r, port, out)) for r in range(WORLD)]
    for p in procs:
        p.start()
    end = time.monotonic() + deadline_s
    for p in procs:
        p.join(max(0.0, end - time.monotonic()))
    codes = []
    for p in procs:
        if p.is_alive():  # hung: kill it (ours, by handle) and report None
            p.kill()
            p.join(5)
            codes.append(None)
        else:
            codes.append(p.exitcode)
    return codes


def _run_ok(fn, tmp_path, deadline_s: float = 90.0) -> dict:
    codes = _launch(fn, tmp_path, deadline_s)
    assert codes == [0] * WORLD, f"worker exit codes {codes} (None = hung past {deadline_s}s)"
    return torch.load(tmp_path / "result.pt", weights_only=False)


def _assert_identical(per_rank: list[dict], what: str) -> None:
    ref = per_rank[0]
    assert ref, f"{what}: no state gathered"
    for r, st in enumerate(per_rank[1:], 1):
        assert st.keys() == ref.keys(), f"{what}: rank {r} has keys {sorted(st)} != {sorted(ref)}"
        for k in ref:
            assert torch.equal(st[k], ref[k]), f"{what}: {k!r} differs between rank 0 and {r}"


# ---------------------------------------------------------------------------- models and data
class _Net(nn.Module):
    """Spiking conv -> LIF -> spiking linear -> PLIF (learnable decay) -> linear readout."""

    def __init__(self, T: int = 4) -> None:
        super().__init__()
        from sparsesnn.nn import LIF, PLIF, SpikingConv2d, SpikingLinear

        self.T = T
        self.conv = SpikingConv2d(1, 4, 3, padding=1)
        self.lif = LIF(detach_reset=True)
        self.fc = SpikingLinear(4 * 8 * 8, 32)
        self.plif = PLIF()
        self.out = nn.Linear(32, 10)
        with torch.no_grad():
            self.conv.weight.mul_(3.0)
            self.fc.weight.mul_(12.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [B, 1, 8, 8] in [0, 1]
        th = (torch.arange(self.T, dtype=x.dtype) + 0.5) / self.T
        s = (x.unsqueeze(0) > th.view(-1, 1, 1, 1, 1)).to(x.dtype)  # [T, B, 1, 8, 8]
        self.lif.reset()
        self.plif.reset()
        h = self.lif(self.conv(s)).flatten(2)
        return self.out(self.plif(self.fc(h))).mean(0)


def _dataset(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic 10-class 8x8 images in [0, 1]: noisy class prototypes (no sklearn import, so a
    spawned worker starts fast), learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    proto = torch.rand(10, 64, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    x = (proto[y] + 0.25 * torch.randn(n, 64, generator=g)).clamp(0, 1)
    return x.reshape(n, 1, 8, 8), y


def _data(steps: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    x, y = _dataset(steps * GLOBAL_BATCH, seed)
    return [(x[i * GLOBAL_BATCH:(i + 1) * GLOBAL_BATCH], y[i * GLOBAL_BATCH:(i + 1) * GLOBAL_BATCH])
            for i in range(steps)]


def _shard(batch, rank: int):
    n = GLOBAL_BATCH // WORLD
    return tuple(t[rank * n:(rank + 1) * n] for t in batch)


def _mlp(seed: int = 0):
    from sparsesnn.models import SpikingMLP

    torch.manual_seed(seed)
    return SpikingMLP(64, (32, 32), 10, T=4, init_gain=4.0)


def _flat(batch):
    return batch[0].reshape(batch[0].shape[0], -1), batch[1]


# ---------------------------------------------------------------------------- (a) DDP == 1 process
STEPS_A = 20


def _train_a(model, batches, rank: int | None):
    """SGD with activity regularization (target rate: the relu gate needs the global rate)."""
    from sparsesnn.compress import ActivityRegularizer

    act = ActivityRegularizer(model, 0.5, target_rate=0.05)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    losses, first_grads = [], None
    for i, b in enumerate(batches):
        x, y = b if rank is None else _shard(b, rank)
        loss = F.cross_entropy(model(x), y) + act.penalty()
        opt.zero_grad()
        loss.backward()
        if i == 0:
            first_grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
        opt.step()
        lv = loss.detach().clone()
        if rank is not None:  # local mean of each rank -> global mean (equal shards)
            dist.all_reduce(lv)
            lv /= WORLD
        losses.append(float(lv))
    return losses, first_grads


def _activity_gate(rank: int) -> list:
    """Rank 0 fires at 2%, rank 1 at 8%, target 4%: only the global rate (5%) opens the
    ``relu(rate - target)`` gate on both ranks; local rates would give rank 0 no penalty."""
    from sparsesnn.compress import ActivityRegularizer

    layer = nn.Sequential(nn.Identity())
    act = ActivityRegularizer(layer, 0.5, layers=["0"], target_rate=0.04)
    s = torch.zeros(1, 100)
    s[0, :2 if rank == 0 else 8] = 1.0
    s.requires_grad_(True)
    layer(s)  # the forward hook records the spikes
    pen = act.penalty()
    pen.backward()
    got = [None] * WORLD
    dist.all_gather_object(got, (float(pen), float(s.grad.abs().sum())))
    return got


def _worker_a(rank: int, out: str) -> None:
    torch.manual_seed(0)
    net = _Net()
    # ranks dispatch differently (event-driven on one, dense on the other): same results
    for m in (net.conv, net.fc):
        m.mode = "event" if rank == 0 else "dense"
    model = DDP(net)
    losses, grads = _train_a(model, _data(STEPS_A), rank)
    paths = [None] * WORLD
    dist.all_gather_object(paths, (net.conv.last_path, net.fc.last_path))
    gate = _activity_gate(rank)
    if rank == 0:
        grads = {n.removeprefix("module."): g for n, g in grads.items()}
        torch.save({"losses": losses, "grads": grads, "paths": paths, "gate": gate,
                    "params": {n: p.detach() for n, p in model.module.named_parameters()}}, out)


def test_ddp_matches_single_process(tmp_path):
    res = _run_ok(_worker_a, tmp_path)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    ref = _Net()
    losses, grads = _train_a(ref, _data(STEPS_A), None)
    assert grads.keys() == res["grads"].keys()
    assert res["paths"] == [("event", "event"), ("dense", "dense")], res["paths"]
    for pen, g in res["gate"]:  # global rate 0.05: penalty 0.5 * (0.05 - 0.04), gradient on both
        assert pen == pytest.approx(0.005, rel=1e-5) and g > 0, res["gate"]
    assert "plif.w" in grads and float(grads["plif.w"].abs()) > 0, "PLIF decay got no gradient"
    for n, g in grads.items():  # one step on the same global batch: same gradient
        torch.testing.assert_close(res["grads"][n], g, rtol=1e-4, atol=1e-6, msg=f"grad {n}")
    rel = [abs(a - b) / abs(b) for a, b in zip(res["losses"], losses)]
    assert len(rel) == STEPS_A and max(rel) < 1e-4, f"loss curves differ: max rel {max(rel):.2e}"
    assert sum(losses[-5:]) < sum(losses[:5]), "training did not reduce the loss"
    for n, p in ref.named_parameters():  # after 20 steps the weights still agree
        torch.testing.assert_close(res["params"][n], p.detach(), rtol=1e-3, atol=1e-5, msg=f"param {n}")


# ---------------------------------------------------------------------------- (b) ADMM
def _gather_to(out: str, rank: int, **objs) -> dict:
    from sparsesnn.compress import distributed as D

    got = {k: D.gather_state(v) for k, v in objs.items()}
    if rank == 0:
        torch.save(got, out)
    return got


def _worker_admm(rank: int, out: str) -> None:
    from sparsesnn.compress import ADMM, distributed as D, reset_states
    from sparsesnn.deploy import deploy

    model = D.ddp_wrap(_mlp())
    # names with DDP's prefix work; per-layer sparsity + 4-bit, Z/U update every 3 steps
    admm = ADMM(model, {"module.fc1": {"sparsity": 0.5, "bits": 4}, "fc2": {"sparsity": 0.8, "bits": 4}},
                rho=0.05, update_every=3)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    batches = [_flat(_shard(b, rank)) for b in _data(14, seed=1)]

    def train(bs):
        for x, y in bs:
            loss = F.cross_entropy(model(x), y) + admm.penalty()
            opt.zero_grad()
            loss.backward()
            opt.step()
            admm.step()
            D.check_consistent(admm, "ADMM state")  # raises on any differing bit

    train(batches[:9])
    admm_phase = D.gather_state(admm)
    admm.finalize()
    train(batches[9:])
    got = _gather_to(out, rank, retrain=admm)
    if rank == 0:
        got["admm_phase"] = admm_phase
        reset_states(model)  # drop the last batch's membrane state (and its graph) before copying
        dep = deploy(D.unwrap(model))  # rank 0 deploys
        x = batches[0][0]
        got["deployed_agrees"] = bool(torch.equal(dep(x).argmax(-1), model.module(x).argmax(-1)))
        torch.save(got, out)


def test_admm_state_identical_across_ranks(tmp_path):
    res = _run_ok(_worker_admm, tmp_path)
    _assert_identical(res["admm_phase"], "ADMM phase")
    _assert_identical(res["retrain"], "ADMM retraining")
    keys = res["admm_phase"][0].keys()
    assert {"fc1.Z", "fc1.U", "fc2.Z", "fc2.U"} <= keys
    assert float(res["admm_phase"][0]["fc1.U"].abs().sum()) > 0, "U never updated"
    assert {"fc1.mask", "fc1.scale", "fc2.mask", "fc2.scale"} <= res["retrain"][0].keys()
    assert res["deployed_agrees"]


# ---------------------------------------------------------------------------- (c) minimax, LitE
def _worker_minimax_lite(rank: int, out: str) -> None:
    from sparsesnn.compress import JointSearch, MinimaxPruner, distributed as D

    batches = [_flat(_shard(b, rank)) for b in _data(10, seed=2)]
    model = D.ddp_wrap(_mlp())
    pruner = MinimaxPruner(model, budget=0.3, lr_s=0.2)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for i, (x, y) in enumerate(batches):
        if i == 6:
            pruner.finalize()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        pruner.step()
        D.check_consistent(pruner, "minimax state")
    mm = D.gather_state(pruner)

    bare = _mlp(seed=1)
    js = JointSearch(bare, T_candidates=[2, 4], budget=0.2, lam_ops=0.1)
    wrapped = D.ddp_wrap(js.model)
    opt = torch.optim.Adam([{"params": js.weight_parameters(), "lr": 1e-3},
                            {"params": js.arch_parameters(), "lr": 5e-2}])
    for x, y in batches[:6]:
        loss = F.cross_entropy(wrapped(x), y) + js.penalty()
        opt.zero_grad()
        loss.backward()
        opt.step()
        js.step()
        D.check_consistent(js, "LitE state")
    cfg = js.decode()
    lite = D.gather_state(js)
    configs = [None] * WORLD
    dist.all_gather_object(configs, (cfg.layers, cfg.T))
    if rank == 0:
        torch.save({"minimax": mm, "lite": lite, "configs": configs,
                    "minimax_history": pruner.history, "lite_history": js.history}, out)


def test_minimax_and_lite_state_identical_across_ranks(tmp_path):
    res = _run_ok(_worker_minimax_lite, tmp_path)
    _assert_identical(res["minimax"], "minimax")
    _assert_identical(res["lite"], "LitE")
    assert {"p", "y", "fc2.mask"} <= res["minimax"][0].keys()  # fc1: left dense (first layer)
    assert float(res["minimax"][0]["y"]) > 0, "budget dual never rose"
    assert {"beta", "lam_bits", "fc1.alpha", "fc1.theta", "fc1.rate"} <= res["lite"][0].keys()
    assert float(res["lite"][0]["fc2.rate"]) > 0, "input spike rates not recorded"
    assert res["configs"][0] == res["configs"][1], "ranks decoded different configurations"


# ---------------------------------------------------------------------------- tinySNN, temporal, PCA
def _worker_other(rank: int, out: str) -> None:
    from torch.utils.data import DataLoader, TensorDataset
    from torch.utils.data.distributed import DistributedSampler

    from sparsesnn.compress import distributed as D, minimax_prune, pca, temporal_prune, tinysnn

    model = D.ddp_wrap(_mlp())
    q = tinysnn.InTrainingQuantizer(model, 4, rounding="stochastic", seed=3)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for x, y in [_flat(_shard(b, rank)) for b in _data(4, seed=3)]:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        q.step()
    tiny = D.gather_state(q)

    x, y = _dataset(256, seed=5)
    ds = TensorDataset(x.reshape(256, -1), y)
    # different shards per rank: decisions from local accuracy alone would differ
    tr = DataLoader(ds, batch_size=16, sampler=DistributedSampler(ds, shuffle=False))
    bare = _mlp(seed=4)
    pres = pca.spatial_prune(bare, tr, variance=0.99)
    pca_state = D.gather_state(bare)
    temporal = D.ddp_wrap(bare)
    tres = temporal_prune(temporal, tr, tr, target_T=2, tolerance=0.02, epochs_per_step=1,
                          progress=False)
    # one-call helper: wraps its search and its fine-tuning in DDP itself (two wrappers in turn)
    mm_model = _mlp(seed=6)
    minimax_prune(mm_model, tr, budget=0.4, epochs=1, finetune_epochs=1, progress=False)
    # tinySNN exploration: each rank evaluates its shard; the reduced accuracies pick one model
    ex = tinysnn.explore(_mlp(seed=7), tr, weight_bits=(4, 2), state_bits=(8,),
                         roundings=("stochastic",), modes=("post",))
    got = {"tiny": tiny, "pca": pca_state, "pca_widths": pres.widths_after,
           "explore": [None] * WORLD,
           "minimax_prune": D.gather_state(mm_model),
           "temporal": D.gather_state(temporal), "T": [None] * WORLD}
    dist.all_gather_object(got["T"], (tres.T_final, tres.history))
    dist.all_gather_object(got["explore"], ([r["acc"] for r in ex.records], ex.best["label"]))
    if rank == 0:
        torch.save(got, out)


def test_tinysnn_pca_temporal_helpers_identical_across_ranks(tmp_path):
    res = _run_ok(_worker_other, tmp_path)
    _assert_identical(res["tiny"], "tinySNN stochastic rounding")
    assert {"fc1.latent", "fc1.scale"} <= res["tiny"][0].keys()
    _assert_identical(res["pca"], "PCA-pruned model")
    _assert_identical(res["temporal"], "temporally pruned model")
    _assert_identical(res["minimax_prune"], "minimax_prune model")
    assert res["T"][0] == res["T"][1], f"ranks took different temporal decisions: {res['T']}"
    assert len(res["T"][0][1]) >= 1, "temporal pruning tried no T"
    assert res["explore"][0] == res["explore"][1], f"tinySNN exploration differs: {res['explore']}"
    assert min(res["pca_widths"].values()) < 32, f"PCA pruned nothing: {res['pca_widths']}"


# ---------------------------------------------------------------------------- (d) failure
def _worker_fail(rank: int, out: str) -> None:
    if rank == 1:
        raise RuntimeError("rank 1 fails on purpose")
    dist.all_reduce(torch.ones(3))  # rank 0 waits for a peer that is gone


def test_failing_rank_does_not_hang_the_others(tmp_path):
    t0 = time.monotonic()
    codes = _launch(_worker_fail, tmp_path, deadline_s=COLLECTIVE_TIMEOUT_S + 40)
    assert codes[1] not in (0, None), f"the failing rank exited with {codes[1]}"
    assert codes[0] is not None, "rank 0 hung in the collective past the deadline"
    assert codes[0] != 0, "rank 0 exited cleanly although its peer died mid-collective"
    assert time.monotonic() - t0 < COLLECTIVE_TIMEOUT_S + 40


# ---------------------------------------------------------------------------- the example
def test_example_runs_under_torchrun(tmp_path):
    """examples/ddp_train.py end to end (tiny settings): train, ADMM, rank 0 deploys and saves."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={_free_port()}", os.path.join(root, "examples", "ddp_train.py"),
           "--hidden", "64", "64", "--epochs", "1", "--admm-epochs", "1", "--retrain-epochs", "1",
           "--out", str(tmp_path), "--timeout", "30"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=150)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "[deploy] saved" in r.stdout and (tmp_path / "deployed.pt").is_file(), r.stdout[-2000:]
