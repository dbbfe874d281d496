"""CUDA event-driven kernels against the CPU results.

Skipped without a GPU; with a GPU but without the CUDA kernels these tests fail (conftest).
"""
from __future__ import annotations

import pytest
import torch

from sparsesnn import functional as SF
from sparsesnn.nn import SpikingConv2d, SpikingLinear

from conftest import requires_cuda

pytestmark = requires_cuda


@pytest.mark.parametrize("dtype", [torch.float32, torch.bool, torch.uint8])
@pytest.mark.parametrize("density", [0.0, 0.01, 0.2, 1.0])
@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (7, 300, 19), (70000, 33, 5), (64, 1030, 513)])
def test_spike_linear_cuda_matches_cpu(M, K, N, density, dtype):
    s = (torch.rand(M, K) < density).to(dtype)
    w, b = torch.randn(N, K, requires_grad=True), torch.randn(N, requires_grad=True)
    out = SF.spike_linear(s, w, b)
    g = torch.randn_like(out)
    out.backward(g)
    wc, bc = w.detach().cuda().requires_grad_(), b.detach().cuda().requires_grad_()
    out_c = SF.spike_linear(s.cuda(), wc, bc)
    out_c.backward(g.cuda())
    torch.testing.assert_close(out_c.cpu(), out, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(wc.grad.cpu(), w.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(bc.grad.cpu(), b.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("density", [0.0, 0.05, 0.5])
@pytest.mark.parametrize("kw", [dict(padding=1), dict(stride=2, padding=2, dilation=2), dict(groups=4, padding="same")])
def test_spike_conv2d_cuda_matches_cpu(density, kw):
    s = (torch.rand(3, 8, 11, 9) < density).float()
    w = torch.randn(12, 8 // kw.get("groups", 1), 3, 3, requires_grad=True)
    out = SF.spike_conv2d(s, w, None, **kw)
    g = torch.randn_like(out)
    out.backward(g)
    wc = w.detach().cuda().requires_grad_()
    out_c = SF.spike_conv2d(s.cuda().bool(), wc, None, **kw)
    out_c.backward(g.cuda())
    torch.testing.assert_close(out_c.cpu(), out, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(wc.grad.cpu(), w.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", [
    dict(C=4, O=300, k=(3, 3), kw=dict(padding=1)),                       # O/groups > 256 threads
    dict(C=6, O=520, k=(1, 1), kw=dict(groups=2)),                        # Og = 260, 1x1
    dict(C=8, O=12, k=(5, 2), kw=dict(stride=(2, 3), padding=(2, 1), dilation=(1, 2))),
    dict(C=6, O=9, k=(1, 7), kw=dict(groups=3, padding=(0, 3))),
    dict(C=4, O=8, k=(4, 4), kw=dict(padding="same", dilation=2)),        # asymmetric "same"
])
def test_spike_conv2d_cuda_bias_and_shapes(case):
    """Bias in the gradient test, many output channels, non-3x3 kernels, stride/dilation/groups."""
    torch.manual_seed(3)
    g_ = case["kw"].get("groups", 1)
    s = (torch.rand(2, case["C"], 10, 13) < 0.15).float()
    w = torch.randn(case["O"], case["C"] // g_, *case["k"], requires_grad=True)
    b = torch.randn(case["O"], requires_grad=True)
    out = SF.spike_conv2d(s, w, b, **case["kw"])
    g = torch.randn_like(out)
    out.backward(g)
    wc, bc = w.detach().cuda().requires_grad_(), b.detach().cuda().requires_grad_()
    out_c = SF.spike_conv2d(s.cuda(), wc, bc, **case["kw"])
    out_c.backward(g.cuda())
    torch.testing.assert_close(out_c.cpu(), out, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(wc.grad.cpu(), w.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(bc.grad.cpu(), b.grad, rtol=1e-4, atol=1e-4)


def test_modules_on_cuda():
    lin = SpikingLinear(40, 10, mode="event").cuda()
    x = (torch.rand(4, 3, 40, device="cuda") < 0.1).float()
    torch.testing.assert_close(lin(x), torch.nn.functional.linear(x, lin.weight, lin.bias), rtol=1e-4, atol=1e-4)
    assert lin.last_path == "event"
    conv = SpikingConv2d(4, 6, 3, padding=1, mode="event").cuda()
    x = (torch.rand(2, 2, 4, 8, 8, device="cuda") < 0.1).float()
    y = conv(x)
    ref = torch.nn.functional.conv2d(x.flatten(0, 1), conv.weight, conv.bias, padding=1).reshape(y.shape)
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4)
