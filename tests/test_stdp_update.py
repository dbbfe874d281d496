"""stdp_update_ (compiled kernel) against the pure-PyTorch reference, plus argument checks."""
import pytest
import torch

from sparsesnn import _ext
from sparsesnn.stdp import reference, stdp_update_

MODES = {"nearest": 0, "truncate": 1, "stochastic": 2}


def _case(K, N, p_pre, p_post, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(K, N, generator=g)
    pre = (torch.rand(K, generator=g) < p_pre).float()
    post = (torch.rand(N, generator=g) < p_post).float()
    return w, pre, post, torch.rand(K, generator=g), torch.rand(N, generator=g)


def _both(w, pre, post, xp, xq, **kw):
    w_ref = w.clone()
    n = stdp_update_(w, pre, post, xp, xq, **kw)
    rkw = dict(kw)
    rkw["rounding"] = MODES[rkw.get("rounding", "nearest")]
    rkw.setdefault("w_min", 0.0)
    rkw.setdefault("w_max", 1.0)
    n_ref = reference.stdp_update(w_ref, pre, post, xp, xq, **rkw)
    return w, w_ref, n, n_ref


@pytest.mark.skipif(not _ext.available(), reason="compiled extension not built")
@pytest.mark.parametrize("K,N", [(1, 1), (3, 1), (1, 5), (64, 200), (33, 130), (200, 300)])
@pytest.mark.parametrize("density", [0.0, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("step,rounding", [(0.0, "nearest"), (1 / 15, "nearest"),
                                           (1 / 255, "truncate"), (1 / 7, "stochastic")])
def test_kernel_matches_reference(K, N, density, step, rounding):
    w, pre, post, xp, xq = _case(K, N, density, density / 2, K * 1000 + N)
    w, w_ref, n, n_ref = _both(w, pre, post, xp, xq, eta_pre=0.05, eta_post=0.3, step=step,
                               rounding=rounding, seed=K + N)
    assert torch.equal(w, w_ref)  # bit for bit, rounding included
    assert n == n_ref == int(pre.sum()) * N + K * int(post.sum())


@pytest.mark.skipif(not _ext.available(), reason="compiled extension not built")
def test_large_layer_threads_match_reference():
    torch.set_num_threads(2)
    w, pre, post, xp, xq = _case(512, 1024, 0.3, 0.3, 7)
    w, w_ref, _, _ = _both(w, pre, post, xp, xq, eta_pre=0.01, eta_post=0.02, step=1 / 255,
                           rounding="stochastic", seed=123)
    assert torch.equal(w, w_ref)


def test_semantics_by_hand():
    # depression on active pre rows, then potentiation on active post columns, clamped
    w = torch.full((2, 3), 0.5)
    pre, post = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])
    xp, xq = torch.tensor([0.2, 1.0]), torch.tensor([1.0, 0.5, 0.0])
    n = stdp_update_(w, pre, post, xp, xq, eta_pre=0.1, eta_post=1.0)
    expect = torch.tensor([[0.4, 0.45, 0.5 + 0.2], [0.5, 0.5, 1.0]])
    assert torch.allclose(w, expect)
    assert n == 3 + 2


def test_only_active_rows_and_columns_change():
    w, pre, post, xp, xq = _case(40, 50, 0.2, 0.2, 3)
    before = w.clone()
    stdp_update_(w, pre, post, xp, xq, eta_pre=0.1, eta_post=0.1)
    changed = w != before
    untouched = (pre == 0)[:, None] & (post == 0)[None, :]
    assert not changed[untouched].any()
    assert changed.any()


def test_no_spikes_is_a_no_op():
    w, _, _, xp, xq = _case(10, 20, 0, 0, 1)
    before = w.clone()
    assert stdp_update_(w, torch.zeros(10), torch.zeros(20), xp, xq, eta_pre=1, eta_post=1,
                        step=0.1, rounding="stochastic") == 0
    assert torch.equal(w, before)


def test_truncation_loses_small_potentiation_stochastic_keeps_it_on_average():
    # tinySNN's point: updates below one grid step vanish under truncation
    K, N = 64, 64
    step = 1 / 15
    w_t = torch.full((K, N), 7 * step)
    w_s = w_t.clone()
    ones_k, ones_n = torch.ones(K), torch.ones(N)
    for i in range(20):
        stdp_update_(w_t, torch.zeros(K), ones_n, ones_k * 0.5, ones_n, eta_pre=0, eta_post=0.02,
                     step=step, rounding="truncate", seed=i)
        stdp_update_(w_s, torch.zeros(K), ones_n, ones_k * 0.5, ones_n, eta_pre=0, eta_post=0.02,
                     step=step, rounding="stochastic", seed=i)
    assert torch.equal((w_t / step).round(), torch.full((K, N), 7.0))  # never moved up
    expected = 7 * step + 20 * 0.01
    assert abs(float(w_s.mean()) - expected) < 0.01


def test_empty_and_results_on_grid():
    assert stdp_update_(torch.zeros(0, 4), torch.zeros(0), torch.ones(4), torch.zeros(0),
                        torch.ones(4), eta_pre=1, eta_post=1) == 0
    w, pre, post, xp, xq = _case(16, 16, 1.0, 1.0, 9)
    stdp_update_(w, pre, post, xp, xq, eta_pre=0.3, eta_post=0.3, step=0.25, rounding="nearest")
    assert torch.equal(w * 4, (w * 4).round())
    assert float(w.min()) >= 0 and float(w.max()) <= 1


def test_bad_arguments():
    w, pre, post, xp, xq = _case(4, 5, 0.5, 0.5, 0)
    kw = dict(eta_pre=0.1, eta_post=0.1)
    with pytest.raises(ValueError, match="weight_t"):
        stdp_update_(w.t(), pre, post, xp, xq, **kw)  # non-contiguous: cannot update in place
    with pytest.raises(ValueError, match="weight_t"):
        stdp_update_(w.double(), pre, post, xp, xq, **kw)
    with pytest.raises(ValueError, match=r"pre: expected shape \(4,\)"):
        stdp_update_(w, post, post, xp, xq, **kw)
    with pytest.raises(ValueError, match="x_post"):
        stdp_update_(w, pre, post, xp, xq.double(), **kw)
    with pytest.raises(ValueError, match="^rounding: "):
        stdp_update_(w, pre, post, xp, xq, rounding="up", **kw)
    with pytest.raises(ValueError, match="^step: "):
        stdp_update_(w, pre, post, xp, xq, step=-1, **kw)
    with pytest.raises(ValueError, match="w_min, w_max"):
        stdp_update_(w, pre, post, xp, xq, w_min=1, w_max=0, **kw)
    with pytest.raises(ValueError, match="eta_pre"):
        stdp_update_(w, pre, post, xp, xq, eta_pre=float("nan"), eta_post=0.1)
    with pytest.raises(ValueError, match="seed"):
        stdp_update_(w, pre, post, xp, xq, seed=-1, **kw)


@pytest.mark.skipif(not _ext.cuda_available(), reason="needs a GPU and the CUDA build")
@pytest.mark.parametrize("step,rounding", [(0.0, "nearest"), (1 / 15, "stochastic"), (1 / 255, "truncate")])
def test_cuda_matches_cpu(step, rounding):
    w, pre, post, xp, xq = _case(100, 300, 0.3, 0.2, 5)
    w_gpu = w.cuda()
    n = stdp_update_(w_gpu, pre.cuda(), post.cuda(), xp.cuda(), xq.cuda(), eta_pre=0.05,
                     eta_post=0.2, step=step, rounding=rounding, seed=11)
    n_cpu = stdp_update_(w, pre, post, xp, xq, eta_pre=0.05, eta_post=0.2, step=step,
                         rounding=rounding, seed=11)
    assert n == n_cpu
    assert torch.equal(w_gpu.cpu(), w)
