"""sparsesnn.functional.spike_linear / SpikingLinear against torch.nn.functional.linear."""
from __future__ import annotations

import pytest
import torch

import sparsesnn
from sparsesnn import functional as SF
from sparsesnn import reference
from sparsesnn.nn import SpikingLinear
from sparsesnn.ops.spike_linear import spike_linear_grad_weight_op, spike_linear_op, spike_stats

DENSITIES = [0.0, 0.001, 0.01, 0.05, 0.2, 0.5, 1.0]
SHAPES = [(1, 1, 1), (7, 33, 19), (64, 130, 257), (3, 2048, 5), (300, 64, 128)]


def spikes(shape, density, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.rand(shape, generator=g) < density
    return s.to(dtype)


def ref_linear(s, w, b=None):
    return torch.nn.functional.linear(s.double(), w.double(), None if b is None else b.double())


@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("M,K,N", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bool, torch.uint8])
def test_forward_matches_dense(M, K, N, density, dtype):
    s = spikes((M, K), density, dtype, seed=M + K)
    w = torch.randn(N, K)
    b = torch.randn(N)
    out = SF.spike_linear(s, w, b)
    assert out.dtype == torch.float32 and out.shape == (M, N)
    torch.testing.assert_close(out.double(), ref_linear(s, w, b), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(SF.spike_linear(s, w).double(), ref_linear(s, w), rtol=1e-5, atol=1e-4)


def test_density_zero_gives_bias_and_one_gives_row_sums():
    w, b = torch.randn(9, 40), torch.randn(9)
    assert torch.equal(SF.spike_linear(torch.zeros(5, 40), w, b), b.expand(5, 9))
    torch.testing.assert_close(SF.spike_linear(torch.ones(2, 40), w), w.sum(1).expand(2, 9))


def test_leading_dims_and_1d():
    s = spikes((4, 3, 2, 50), 0.1)
    w = torch.randn(7, 50)
    out = SF.spike_linear(s, w)
    assert out.shape == (4, 3, 2, 7)
    torch.testing.assert_close(out.double(), ref_linear(s, w), rtol=1e-5, atol=1e-4)
    out1 = SF.spike_linear(s[0, 0, 0], w)
    assert out1.shape == (7,)
    torch.testing.assert_close(out1, out[0, 0, 0])


def test_empty_inputs():
    w = torch.randn(6, 10)
    assert SF.spike_linear(torch.zeros(0, 10), w).shape == (0, 6)
    assert SF.spike_linear(torch.zeros(0, 3, 10), w).shape == (0, 3, 6)
    b = torch.randn(6)
    assert torch.equal(SF.spike_linear(torch.zeros(4, 0), torch.zeros(6, 0), b), b.expand(4, 6))
    assert SF.spike_linear(torch.zeros(4, 10), torch.zeros(0, 10)).shape == (4, 0)


def test_non_contiguous_inputs():
    base = spikes((40, 60), 0.2)
    s = base.t()  # [60, 40], non-contiguous
    w = torch.randn(30, 80)[:, ::2]  # non-contiguous weight [30, 40]
    b = torch.randn(60)[::2]
    assert not s.is_contiguous() and not w.is_contiguous() and not b.is_contiguous()
    torch.testing.assert_close(SF.spike_linear(s, w, b).double(), ref_linear(s, w, b), rtol=1e-5, atol=1e-4)


def test_half_precision_spikes_are_accepted():
    s = spikes((5, 20), 0.3)
    w = torch.randn(4, 20)
    for dt in (torch.float16, torch.bfloat16, torch.float64):
        torch.testing.assert_close(SF.spike_linear(s.to(dt), w), SF.spike_linear(s, w))


@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (7, 33, 19), (64, 130, 257), (129, 17, 300)])
def test_backward_matches_dense(M, K, N, density):
    s = spikes((M, K), density, seed=M * N).requires_grad_()
    w = torch.randn(N, K, requires_grad=True)
    b = torch.randn(N, requires_grad=True)
    out = SF.spike_linear(s, w, b)
    g = torch.randn_like(out)
    out.backward(g)
    s64 = s.detach().double().requires_grad_()
    w64 = w.detach().double().requires_grad_()
    b64 = b.detach().double().requires_grad_()
    torch.nn.functional.linear(s64, w64, b64).backward(g.double())
    torch.testing.assert_close(s.grad.double(), s64.grad, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(w.grad.double(), w64.grad, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(b.grad.double(), b64.grad, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8])
def test_backward_integer_spikes_weight_only(dtype):
    s = spikes((20, 30), 0.2, dtype)
    w = torch.randn(10, 30, requires_grad=True)
    out = SF.spike_linear(s, w)
    g = torch.randn_like(out)
    out.backward(g)
    torch.testing.assert_close(w.grad, g.t() @ s.float(), rtol=1e-5, atol=1e-5)


def test_grad_weight_is_event_driven_only_active_inputs():
    s = spikes((50, 40), 0.05)
    s[:, 7] = 0  # an input that never fires gets exactly zero gradient
    gout = torch.randn(50, 12)
    gw = spike_linear_grad_weight_op(s, gout)
    assert torch.all(gw[:, 7] == 0)
    torch.testing.assert_close(gw, reference.spike_linear_grad_weight(s, gout), rtol=1e-5, atol=1e-5)


def test_grad_weight_op_many_shapes():
    for (M, K, N) in [(1, 1, 1), (3, 17, 200), (257, 33, 129), (1000, 5, 3)]:
        for d in (0.0, 0.3, 1.0):
            s = spikes((M, K), d, seed=M)
            gout = torch.randn(M, N)
            torch.testing.assert_close(spike_linear_grad_weight_op(s, gout).double(),
                                       gout.double().t() @ s.double(), rtol=1e-5, atol=1e-4)


def test_opcheck():
    s = spikes((6, 20), 0.3)
    w = torch.randn(11, 20, requires_grad=True)
    b = torch.randn(11, requires_grad=True)
    torch.library.opcheck(spike_linear_op, (s, w, w.detach().t().contiguous(), b))
    torch.library.opcheck(spike_linear_op, (s.bool(), w, w.detach().t().contiguous(), None))
    torch.library.opcheck(spike_linear_grad_weight_op, (s, torch.randn(6, 11)))


def test_spike_stats():
    s = torch.tensor([0.0, 1.0, 1.0, 0.5, 0.0, 2.0])
    assert spike_stats(s) == (4, 2)
    assert spike_stats(torch.tensor([True, False, True])) == (2, 0)
    assert spike_stats(torch.tensor([0, 1, 3], dtype=torch.uint8)) == (2, 1)
    big = spikes((300, 1000), 0.1)
    assert spike_stats(big) == (int(big.count_nonzero()), 0)
    assert spike_stats(torch.zeros(0)) == (0, 0)


def test_bad_input_raises_value_error():
    w = torch.randn(4, 8)
    with pytest.raises(ValueError, match=r"^s: expected binary spikes \(0/1\)"):
        SF.spike_linear(torch.full((2, 8), 0.5), w)  # analog input
    with pytest.raises(ValueError, match=r"^s: expected last dim 8"):
        SF.spike_linear(torch.ones(2, 7), w)  # wrong K
    with pytest.raises(ValueError, match=r"^s: expected dtype in"):
        SF.spike_linear(torch.ones(2, 8, dtype=torch.int32), w)
    with pytest.raises(ValueError, match=r"^s: expected a torch\.Tensor"):
        SF.spike_linear([1, 0], w)
    with pytest.raises(ValueError, match="^weight: "):
        SF.spike_linear(torch.ones(2, 8), torch.randn(4, 8, 1))
    with pytest.raises(ValueError, match="^weight: "):
        SF.spike_linear(torch.ones(2, 8), w.double())
    with pytest.raises(ValueError, match="bias"):
        SF.spike_linear(torch.ones(2, 8), w, torch.randn(5))
    with pytest.raises(ValueError, match="weight_t"):
        SF.spike_linear(torch.ones(2, 8), w, weight_t=torch.randn(4, 8))
    with pytest.raises(ValueError, match=r"^s: expected binary spikes \(0/1\) .*found value nan"):
        SF.spike_linear(torch.tensor([[float("nan")] * 8]), w)


# ---- module -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode,break_even", [("event", None), ("dense", None), ("auto", 1.01), ("auto", 0.0)])
def test_module_matches_nn_linear(mode, break_even):
    torch.manual_seed(0)
    ref = torch.nn.Linear(48, 20)
    mod = SpikingLinear.from_linear(ref, mode=mode, break_even=break_even, min_macs=0)
    x = spikes((4, 3, 48), 0.1).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    y = mod(x)
    expected = "dense" if mode == "dense" or (mode == "auto" and break_even == 0.0) else "event"
    assert mod.last_path == expected
    y_ref = ref(x_ref)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(y)
    y.backward(g)
    # Shared parameters: collect the module's grads, then recompute on the reference path.
    gw, gb, gx = mod.weight.grad.clone(), mod.bias.grad.clone(), x.grad.clone()
    ref.zero_grad()
    y_ref.backward(g)
    torch.testing.assert_close(gw, ref.weight.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gb, ref.bias.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx, x_ref.grad, rtol=1e-5, atol=1e-5)


def test_module_routes_analog_input_to_dense():
    mod = SpikingLinear(16, 4, mode="event")
    x = torch.randn(3, 16)
    y = mod(x)
    assert mod.last_path == "dense"
    torch.testing.assert_close(y, torch.nn.functional.linear(x, mod.weight, mod.bias))


def test_module_dispatch_by_density():
    mod = SpikingLinear(100, 10, break_even=0.3, min_macs=0)
    mod(spikes((8, 100), 0.05))
    assert mod.last_path == "event"
    mod(spikes((8, 100), 0.6))
    assert mod.last_path == "dense"
    y = mod(spikes((8, 100), 0.6, torch.bool))  # bool input on the dense path still works
    assert y.dtype == torch.float32 and mod.last_path == "dense"


def test_module_refreshes_cached_weight_after_update():
    mod = SpikingLinear(30, 5, mode="event")
    x = spikes((6, 30), 0.3)
    mod(x)
    first = mod.weight_t()
    assert mod.weight_t() is first  # cached while the weight is unchanged
    opt = torch.optim.SGD(mod.parameters(), lr=0.5)
    mod(x).sum().backward()
    opt.step()
    y = mod(x)
    torch.testing.assert_close(y, torch.nn.functional.linear(x, mod.weight, mod.bias), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        mod.weight.mul_(2.0)
    torch.testing.assert_close(mod(x), torch.nn.functional.linear(x, mod.weight, mod.bias), rtol=1e-5, atol=1e-5)
    mod.weight = torch.nn.Parameter(torch.randn(5, 30))
    torch.testing.assert_close(mod(x), torch.nn.functional.linear(x, mod.weight, mod.bias), rtol=1e-5, atol=1e-5)


def test_module_state_dict_compatible_with_nn_linear():
    ref = torch.nn.Linear(12, 3)
    mod = SpikingLinear(12, 3)
    mod.load_state_dict(ref.state_dict())
    assert set(mod.state_dict()) == {"weight", "bias"}
    x = spikes((2, 12), 0.5)
    torch.testing.assert_close(SpikingLinear.from_linear(ref, mode="event")(x), ref(x))


def test_module_bad_arguments():
    with pytest.raises(ValueError, match="^mode: "):
        SpikingLinear(3, 4, mode="fast")
    with pytest.raises(ValueError, match="break_even"):
        SpikingLinear(3, 4, break_even=float("nan"))


def test_public_api_exports():
    assert sparsesnn.functional.spike_linear is SF.spike_linear
    assert callable(sparsesnn.calibrate)


@pytest.mark.parametrize("density", [0.0, 0.05, 1.0])
def test_kernel_and_reference_fallback_agree(backend, density):
    """Same results through the compiled kernel and the pure-PyTorch fallback (no _C)."""
    s = spikes((37, 70), density, seed=5).requires_grad_()
    w = torch.randn(23, 70, requires_grad=True)
    b = torch.randn(23, requires_grad=True)
    out = SF.spike_linear(s, w, b)
    torch.testing.assert_close(out.double(), ref_linear(s.detach(), w.detach(), b.detach()), rtol=1e-5, atol=1e-4)
    out.sum().backward()
    g = torch.ones(37, 23, dtype=torch.float64)
    torch.testing.assert_close(w.grad.double(), g.t() @ s.detach().double(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(s.grad.double(), g @ w.detach().double(), rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match=r"^s: expected binary spikes \(0/1\)"):
        SF.spike_linear(torch.full((2, 70), 0.5), w)
    mod = SpikingLinear(70, 23, mode="event")
    mod(spikes((4, 70), 0.1))
    assert mod.last_path == "event"


def test_module_small_calls_go_dense_without_measuring(monkeypatch):
    import sparsesnn.nn.linear as lin

    monkeypatch.setattr(lin, "spike_stats", lambda s: pytest.fail("density measured for a tiny call"))
    mod = SpikingLinear(64, 8, break_even=1.0)  # 4 x 64 x 8 MACs << min_macs
    x = spikes((4, 64), 0.05)
    torch.testing.assert_close(mod(x), torch.nn.functional.linear(x, mod.weight, mod.bias))
    assert mod.last_path == "dense"
    with pytest.raises(ValueError, match="min_macs"):
        SpikingLinear(3, 4, min_macs=-1)
