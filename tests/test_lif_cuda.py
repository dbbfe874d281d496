"""CUDA LIF kernels (fp32/fp16/bf16) against the reference and the CPU kernel.

Skipped without a GPU; with a GPU but without the CUDA kernels these tests fail (conftest).
"""
import pytest
import torch

from sparsesnn import FixedPoint
from sparsesnn import functional as F
from sparsesnn import reference as R
from sparsesnn.ops.lif import Neuron, lif_backward_op, lif_op, plif_op

from conftest import requires_cuda

pytestmark = requires_cuda

SURROGATES = ["sigmoid", "atan", "piecewise_quadratic", "superspike", "triangle"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("v_reset", [0.0, None])
@pytest.mark.parametrize("surrogate", ["sigmoid", "atan", "triangle"])
@pytest.mark.parametrize("T,shape", [(1, (7,)), (16, (3, 1000)), (64, (4097,))])
def test_cuda_lif_matches_reference(dtype, v_reset, surrogate, T, shape):
    x = (torch.randn(T, *shape, device="cuda") * 1.5 + 0.4).to(dtype)
    v0 = torch.rand(*shape, device="cuda")
    kw = dict(v_reset=v_reset, surrogate=surrogate)
    xg = x.clone().requires_grad_(True)
    s, v = F.lif(xg, v0, tau=2.0, **kw)
    # The kernel computes in fp32 from the low-precision input: so does the reference here.
    xr = x.float().requires_grad_(True)
    s_r, v_r = R.lif_autograd(xr, v0, decay=0.5, **kw)
    assert s.dtype == dtype
    assert torch.equal(s.float(), s_r)
    torch.testing.assert_close(v, v_r, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(s_r)
    s.backward(g.to(dtype))
    s_r.backward(g)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(xg.grad.float(), xr.grad, rtol=tol, atol=tol)


def _run(fn, x, v0, **kw):
    """Spikes, v_last and the gradients of x and v0 of fn on x's device."""
    x = x.clone().requires_grad_(True)
    v0 = None if v0 is None else v0.clone().requires_grad_(True)
    s, v = fn(x, v0, **kw)
    g = torch.linspace(-1, 1, s.numel(), device=s.device).reshape(s.shape)
    (s * g).sum().add_(v.square().sum()).backward()
    return s, v, x.grad, None if v0 is None else v0.grad


@pytest.mark.parametrize("neuron", ["lif", "if"])
@pytest.mark.parametrize("surrogate", SURROGATES)
@pytest.mark.parametrize("kw", [dict(), dict(decay_input=False), dict(detach_reset=True),
                                dict(v_reset=0.3), dict(v_reset=-0.2, detach_reset=True),
                                dict(v_reset=None), dict(v_reset=None, detach_reset=True)])
@pytest.mark.parametrize("with_v0", [True, False])
def test_cuda_neuron_variants_match_cpu(neuron, surrogate, kw, with_v0):
    """Every charge mode, reset mode, detach_reset, surrogate and v0=None against CPU."""
    if neuron == "if":
        if "decay_input" in kw:
            pytest.skip("IF has no decay_input")
        fn = F.if_neuron
    else:
        fn = lambda x, v0, **k: F.lif(x, v0, tau=3.0, **k)  # noqa: E731
    torch.manual_seed(1)
    x = torch.randn(9, 2, 301) * 0.8 + 0.35
    v0 = torch.rand(2, 301) if with_v0 else None
    cpu = _run(fn, x, v0, surrogate=surrogate, **kw)
    gpu = _run(fn, x.cuda(), None if v0 is None else v0.cuda(), surrogate=surrogate, **kw)
    assert torch.equal(gpu[0].cpu(), cpu[0])  # spikes bit for bit
    for a, b in zip(gpu[1:], cpu[1:]):
        if b is not None:
            torch.testing.assert_close(a.cpu(), b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("rounding", ["nearest", "truncate", "stochastic"])
def test_cuda_fixed_point_state_matches_cpu(rounding):
    fmt = FixedPoint(8, 4, rounding, seed=11)
    x = torch.randn(12, 3, 257) * 1.2 + 0.3
    v0 = fmt.quantize(torch.rand(3, 257))
    cpu = _run(lambda a, b, **k: F.lif(a, b, state_quant=fmt, **k), x, v0)
    gpu = _run(lambda a, b, **k: F.lif(a, b, state_quant=fmt, **k), x.cuda(), v0.cuda())
    assert torch.equal(gpu[0].cpu(), cpu[0])
    assert torch.equal(gpu[1].cpu(), cpu[1])  # the state grid makes v exact too
    torch.testing.assert_close(gpu[2].cpu(), cpu[2], rtol=1e-4, atol=1e-5)


def test_cuda_lif_several_waves():
    """N far above one wave of blocks (2^21 neurons): indexing past the first wave."""
    N = 1 << 21
    x = torch.randn(3, N) + 0.5
    s_c, v_c = F.lif(x)
    s_g, v_g = F.lif(x.cuda())
    assert torch.equal(s_g.cpu(), s_c)
    torch.testing.assert_close(v_g.cpu(), v_c)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_plif_and_cpu_agree(dtype):
    x = torch.randn(12, 2, 300) + 0.4
    w = torch.tensor(0.3, requires_grad=True)
    s_cpu, v_cpu = F.plif(x.to(dtype).float(), w)
    s_cpu.sum().backward()
    w_cuda = w.detach().cuda().requires_grad_(True)
    s_gpu, v_gpu = F.plif(x.cuda().to(dtype), w_cuda)
    s_gpu.float().sum().backward()
    assert s_gpu.dtype == dtype
    assert torch.equal(s_cpu, s_gpu.float().cpu())
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(w.grad, w_cuda.grad.cpu(), rtol=tol, atol=tol)


def test_cuda_plif_decay_grad_is_deterministic():
    """grad_decay is a fixed-order reduction (no fp32 atomics): identical on every run."""
    x = torch.randn(8, 1 << 18, device="cuda") + 0.4
    grads = []
    for _ in range(3):
        w = torch.tensor(0.2, device="cuda", requires_grad=True)
        s, v = F.plif(x, w)
        (s.sum() + v.sum()).backward()
        grads.append(w.grad.item())
    assert grads[0] == grads[1] == grads[2]


def test_cuda_if_neuron_has_zero_decay_gradient():
    """IF has no leak: dL/d(decay) = 0 on CUDA, as on CPU and in the reference (test_lif.py)."""
    n = Neuron(leak=False)
    x = torch.randn(6, 333, device="cuda") + 0.5
    decay = torch.tensor(0.5, device="cuda", requires_grad=True)
    s, v, _ = plif_op(x, None, decay, *n.pack(), True)
    (s.sum() + v.sum()).backward()
    assert decay.grad.item() == 0.0


def test_cuda_backward_reads_noncontiguous_saved_h():
    """A non-contiguous H is copied and kept alive for the launch (it was freed before)."""
    n = Neuron()
    x = torch.randn(5, 64, 48, device="cuda") + 0.4
    _, _, h = lif_op(x, None, 0.5, *n.pack(), True)
    gs = torch.randn_like(x)
    ht = h.transpose(1, 2).contiguous().transpose(1, 2)  # same values, not contiguous
    assert not ht.is_contiguous()
    d = torch.tensor(0.5)
    ref = lif_backward_op(gs, None, None, h, None, d, *n.pack(), False)
    got = lif_backward_op(gs, None, None, ht, None, d, *n.pack(), False)
    for a, b in zip(got, ref):
        assert torch.equal(a, b)


def test_cuda_device_mismatch_is_an_error():
    with pytest.raises(ValueError, match="^v0: expected device cuda"):
        F.lif(torch.randn(3, 4, device="cuda"), torch.zeros(4))
