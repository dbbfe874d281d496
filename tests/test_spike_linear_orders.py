"""The CPU spike_linear forward's two schedules (row order, input order) and its weight layouts
(input-major rows, padded rows, column panels): every combination against the dense product,
and the two orders bit for bit against each other (both add a row's weight rows to the bias in
increasing input order)."""
from __future__ import annotations

import pytest
import torch

from sparsesnn import _ext
from sparsesnn.ops import spike_linear as SL

pytestmark = pytest.mark.usefixtures("kernel_required")  # fails without the extension unless SPARSESNN_DISABLE_EXT=1

# (M, K, N, density): batch-1 steps, multi-chunk inputs order, partial segments/tiles, empty
# rows and columns, every input firing.
CASES = [(1, 37, 5, 0.5), (3, 2048, 70, 0.05), (8, 70, 31, 0.3), (64, 200, 64, 0.1),
         (130, 96, 100, 0.2), (256, 64, 160, 0.05), (300, 33, 129, 0.5), (517, 40, 33, 0.02),
         (40, 50, 257, 0.0), (20, 19, 96, 1.0)]


def _layout(w: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "rows":
        return w.t().contiguous()
    if kind == "padded":
        return SL._transpose_padded(w)
    return SL._panels(w)


def _forward(s, w, wt, b, order):
    M, K = s.shape
    p = SL._params(M, K, w.shape[0], s)
    p.order = order
    if wt.dim() == 3:
        p.panel = wt.shape[2]
    else:
        p.ldw = wt.stride(0)
    out = torch.full((M, w.shape[0]), float("nan"))
    _ext._C.spike_linear_forward_cpu(p, s.data_ptr(), wt.data_ptr(), 0 if b is None else b.data_ptr(),
                                     out.data_ptr())
    return out


@pytest.mark.parametrize("M,K,N,density", CASES)
@pytest.mark.parametrize("layout", ["rows", "padded", "panels"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8, torch.bool])
@pytest.mark.parametrize("with_bias", [True, False])
def test_orders_and_layouts_agree(M, K, N, density, layout, dtype, with_bias):
    g = torch.Generator().manual_seed(M * 7 + N)
    s = (torch.rand(M, K, generator=g) < density).to(dtype)
    w = torch.randn(N, K, generator=g)
    b = torch.randn(N, generator=g) if with_bias else None
    wt = _layout(w, layout)
    auto, by_row, by_input = (_forward(s, w, wt, b, order) for order in (0, 1, 2))
    assert torch.equal(by_row, by_input)
    assert torch.equal(auto, by_row)
    ref = torch.nn.functional.linear(s.double(), w.double(), None if b is None else b.double())
    torch.testing.assert_close(by_row.double(), ref, rtol=1e-5, atol=1e-4)


def test_the_public_call_uses_the_panels_and_matches():
    g = torch.Generator().manual_seed(1)
    s = (torch.rand(200, 300, generator=g) < 0.05).float()
    w = torch.randn(150, 300, generator=g)
    out = SL.kernel_weight(w)
    assert out.dim() == 3 and out.shape[1:] == (300, _ext._C.spike_linear_panel_width())
    from sparsesnn import functional as F
    torch.testing.assert_close(F.spike_linear(s, w), s @ w.t(), rtol=1e-5, atol=1e-4)
    assert SL.kernel_weight(w) is out  # cached


def test_opcheck_with_panels():
    g = torch.Generator().manual_seed(2)
    s = (torch.rand(6, 20, generator=g) < 0.3).float()
    w = torch.randn(11, 20, generator=g, requires_grad=True)
    b = torch.randn(11, generator=g, requires_grad=True)
    torch.library.opcheck(SL.spike_linear_op, (s, w, SL._panels(w), b))


def test_bad_layouts_are_named():
    s = torch.ones(2, 20)
    w = torch.randn(11, 20)
    panels = SL._panels(w)
    with pytest.raises(ValueError, match=r"weight_t: expected contiguous CPU column panels \[1, 20,"):
        SL.spike_linear_op(s, w, panels[:, :10], None)
    with pytest.raises(ValueError, match="weight_t"):
        SL.spike_linear_op(s, w, panels.transpose(1, 2), None)
    p = SL._params(2, 20, 11, s)
    out = torch.empty(2, 11)
    p.panel = 7
    with pytest.raises(ValueError, match="panel must be 0 or"):
        _ext._C.spike_linear_forward_cpu(p, s.data_ptr(), panels.data_ptr(), 0, out.data_ptr())
    p.panel, p.order = 0, 3
    with pytest.raises(ValueError, match="order must be 0, 1 or 2, got 3"):
        _ext._C.spike_linear_forward_cpu(p, s.data_ptr(), panels.data_ptr(), 0, out.data_ptr())
