"""CUDA LIF kernels (fp32/fp16/bf16) against the reference; skipped without a GPU."""
import pytest
import torch

from sparsesnn import functional as F
from sparsesnn import reference as R

from conftest import requires_cuda

pytestmark = requires_cuda


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


def test_cuda_plif_and_cpu_agree():
    x = torch.randn(12, 2, 300) + 0.4
    w = torch.tensor(0.3, requires_grad=True)
    s_cpu, v_cpu = F.plif(x, w)
    s_cpu.sum().backward()
    w_cuda = w.detach().cuda().requires_grad_(True)
    s_gpu, v_gpu = F.plif(x.cuda(), w_cuda)
    s_gpu.sum().backward()
    assert torch.equal(s_cpu, s_gpu.cpu())
    torch.testing.assert_close(w.grad, w_cuda.grad.cpu(), rtol=1e-4, atol=1e-4)


def test_cuda_device_mismatch_is_an_error():
    with pytest.raises(ValueError, match="v0"):
        F.lif(torch.randn(3, 4, device="cuda"), torch.zeros(4))
