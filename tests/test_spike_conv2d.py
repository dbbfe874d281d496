"""sparsesnn.functional.spike_conv2d / SpikingConv2d against torch.nn.functional.conv2d."""
from __future__ import annotations

import pytest
import torch

from sparsesnn import functional as SF
from sparsesnn import reference
from sparsesnn.nn import SpikingConv2d
from sparsesnn.ops.spike_conv2d import rearrange_weight, spike_conv2d_grad_weight_op, spike_conv2d_op

DENSITIES = [0.0, 0.001, 0.01, 0.05, 0.2, 0.5, 1.0]

# (N, C, H, W, O, (KH, KW), kwargs for conv2d)
CONFIGS = [
    (2, 3, 8, 8, 4, (3, 3), dict()),
    (2, 16, 9, 11, 32, (3, 3), dict(padding=1)),
    (1, 8, 10, 7, 5, (3, 2), dict(stride=2, padding=2, dilation=2)),
    (3, 6, 7, 9, 6, (4, 2), dict(padding="same")),
    (2, 6, 7, 9, 4, (3, 3), dict(padding="valid", stride=(2, 1))),
    (2, 8, 9, 9, 12, (3, 3), dict(groups=4, padding=(1, 0))),
    (2, 12, 6, 6, 12, (3, 3), dict(groups=12, padding=1)),  # depthwise
    (4, 5, 5, 5, 3, (1, 1), dict()),
    (1, 4, 12, 12, 6, (2, 2), dict(stride=3, padding=3)),  # stride > kernel, big padding
    (1, 3, 3, 3, 140, (3, 3), dict(padding=1)),  # more output channels than one tile
    (1, 1, 1, 1, 1, (1, 1), dict()),
]


def spikes(shape, density, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) < density).to(dtype)


def ref_conv(s, w, b, **kw):
    return torch.nn.functional.conv2d(s.double(), w.double(), None if b is None else b.double(), **kw)


def make(cfg, density, dtype=torch.float32, seed=0):
    N, C, H, W, O, (KH, KW), kw = cfg
    torch.manual_seed(seed)
    s = spikes((N, C, H, W), density, dtype, seed)
    w = torch.randn(O, C // kw.get("groups", 1), KH, KW)
    b = torch.randn(O)
    return s, w, b, kw


@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c[:5]}k{c[5]}{c[6]}")
def test_forward_matches_conv2d(cfg, density):
    s, w, b, kw = make(cfg, density, seed=cfg[1])
    out = SF.spike_conv2d(s, w, b, **kw)
    expected = ref_conv(s, w, b, **kw)
    assert out.dtype == torch.float32 and out.shape == expected.shape
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.float16])
def test_forward_spike_dtypes(dtype):
    s, w, b, kw = make(CONFIGS[1], 0.2)
    torch.testing.assert_close(SF.spike_conv2d(s.to(dtype), w, b, **kw).double(), ref_conv(s, w, b, **kw),
                               rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("density", [0.0, 0.05, 0.5, 1.0])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c[:5]}k{c[5]}{c[6]}")
def test_backward_matches_conv2d(cfg, density):
    s, w, b, kw = make(cfg, density, seed=3)
    s.requires_grad_()
    w.requires_grad_()
    b.requires_grad_()
    out = SF.spike_conv2d(s, w, b, **kw)
    g = torch.randn_like(out)
    out.backward(g)
    s64, w64, b64 = (t.detach().double().requires_grad_() for t in (s, w, b))
    ref_conv(s64, w64, b64, **kw).backward(g.double())
    torch.testing.assert_close(s.grad.double(), s64.grad, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(w.grad.double(), w64.grad, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(b.grad.double(), b64.grad, rtol=1e-5, atol=1e-4)


def test_grad_weight_only_from_active_channels():
    s, w, b, kw = make(CONFIGS[1], 0.1)
    s[:, 5] = 0  # channel 5 never fires: its weight slice gets exactly zero gradient
    g = torch.randn(2, 32, 9, 11)
    gw = spike_conv2d_grad_weight_op(s, g, list(w.shape), [1, 1], [1, 1], [1, 1], 1)
    assert torch.all(gw[:, 5] == 0)
    expected = reference.spike_conv2d_grad_weight(s, g, list(w.shape), [1, 1], [1, 1], [1, 1], 1)
    torch.testing.assert_close(gw, expected, rtol=1e-5, atol=1e-4)


def test_unbatched_non_contiguous_and_empty():
    s, w, b, kw = make(CONFIGS[1], 0.2)
    out3 = SF.spike_conv2d(s[0], w, b, **kw)
    torch.testing.assert_close(out3.double(), ref_conv(s[:1], w, b, **kw)[0], rtol=1e-5, atol=1e-4)
    s_nc = s.permute(0, 1, 3, 2)  # non-contiguous, different geometry
    assert not s_nc.is_contiguous()
    torch.testing.assert_close(SF.spike_conv2d(s_nc, w, b, **kw).double(), ref_conv(s_nc, w, b, **kw),
                               rtol=1e-5, atol=1e-4)
    empty = torch.zeros(0, 16, 9, 11)
    assert SF.spike_conv2d(empty, w, b, **kw).shape == (0, 32, 9, 11)


def test_opcheck():
    s, w, b, kw = make(CONFIGS[5], 0.3)
    w.requires_grad_()
    b.requires_grad_()
    args = (s, w, rearrange_weight(w, 4), b, [1, 1], [1, 0], [9, 7], [1, 1], 4)
    torch.library.opcheck(spike_conv2d_op, args)
    torch.library.opcheck(spike_conv2d_grad_weight_op,
                          (s.bool(), torch.randn(2, 12, 9, 7), list(w.shape), [1, 1], [1, 0], [1, 1], 4))


def test_bad_input_raises_value_error():
    s, w, b, kw = make(CONFIGS[0], 0.2)
    with pytest.raises(ValueError, match=r"^s: expected binary spikes \(0/1\)"):
        SF.spike_conv2d(s * 0.5 + 0.25, w)  # analog input
    with pytest.raises(ValueError, match=r"^s: expected 3 channels"):
        SF.spike_conv2d(s[:, :2], w)  # channel mismatch
    with pytest.raises(ValueError, match=r"^s: expected 4 dims"):
        SF.spike_conv2d(s[0, 0, 0], w)
    with pytest.raises(ValueError, match=r"^s: input 2x2 is smaller than the dilated kernel"):
        SF.spike_conv2d(torch.ones(1, 3, 2, 2), w)  # smaller than the kernel
    with pytest.raises(ValueError, match="^weight: "):
        SF.spike_conv2d(s, w[0])
    with pytest.raises(ValueError, match="bias"):
        SF.spike_conv2d(s, w, torch.randn(3))
    with pytest.raises(ValueError, match="^stride: "):
        SF.spike_conv2d(s, w, stride=0)
    with pytest.raises(ValueError, match="^padding: "):
        SF.spike_conv2d(s, w, padding="full")
    with pytest.raises(ValueError, match="^padding: "):
        SF.spike_conv2d(s, w, padding="same", stride=2)
    with pytest.raises(ValueError, match="^dilation: "):
        SF.spike_conv2d(s, w, dilation=(1, 0))
    with pytest.raises(ValueError, match="^groups: "):
        SF.spike_conv2d(s, w, groups=0)
    with pytest.raises(ValueError, match="^weight: "):
        SF.spike_conv2d(s, torch.randn(4, 1, 3, 3), groups=3)  # 4 outputs not divisible by 3
    with pytest.raises(ValueError, match="weight_r"):
        SF.spike_conv2d(s, w, weight_r=torch.randn(3, 3, 3, 4))


# ---- module -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode,break_even", [("event", None), ("dense", None), ("auto", 1.01)])
def test_module_matches_nn_conv2d_multistep(mode, break_even):
    torch.manual_seed(0)
    ref = torch.nn.Conv2d(6, 10, 3, stride=1, padding=1, groups=2)
    mod = SpikingConv2d.from_conv(ref, mode=mode, break_even=break_even, min_macs=0)
    x = spikes((3, 2, 6, 8, 8), 0.1).requires_grad_()  # [T, B, C, H, W]
    y = mod(x)
    assert y.shape == (3, 2, 10, 8, 8)
    assert mod.last_path == ("dense" if mode == "dense" else "event")
    x_ref = x.detach().flatten(0, 1).requires_grad_()
    y_ref = ref(x_ref).reshape(3, 2, 10, 8, 8)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(y)
    y.backward(g)
    gw, gb = mod.weight.grad.clone(), mod.bias.grad.clone()
    ref.zero_grad()
    y_ref.backward(g)
    torch.testing.assert_close(gw, ref.weight.grad, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(gb, ref.bias.grad, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(x.grad.flatten(0, 1), x_ref.grad, rtol=1e-5, atol=1e-4)


def test_module_routes_analog_and_non_zero_padding_to_dense():
    mod = SpikingConv2d(3, 4, 3, padding=1, mode="event")
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(mod(x), torch.nn.functional.conv2d(x, mod.weight, mod.bias, padding=1))
    assert mod.last_path == "dense"
    circ = SpikingConv2d(3, 4, 3, padding=1, padding_mode="circular", mode="event")
    s = spikes((2, 3, 6, 6), 0.2)
    circ(s)
    assert circ.last_path == "dense"


def test_module_dispatch_and_weight_refresh():
    mod = SpikingConv2d(4, 4, 3, padding="same", break_even=0.3, min_macs=0)
    s = spikes((2, 4, 7, 7), 0.05)
    mod(s)
    assert mod.last_path == "event"
    mod(spikes((2, 4, 7, 7), 0.7))
    assert mod.last_path == "dense"
    with torch.no_grad():
        mod.weight.add_(1.0)
    torch.testing.assert_close(mod(s), torch.nn.functional.conv2d(s, mod.weight, mod.bias, padding="same"),
                               rtol=1e-5, atol=1e-5)
    assert mod.last_path == "event"
    ref = torch.nn.Conv2d(4, 4, 3, padding="same")
    mod.load_state_dict(ref.state_dict())
    torch.testing.assert_close(mod(s), ref(s), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("density", [0.0, 0.1, 1.0])
def test_kernel_and_reference_fallback_agree(backend, density):
    """Same results through the compiled kernel and the pure-PyTorch fallback (no _C)."""
    s, w, b, kw = make(CONFIGS[2], density, seed=7)
    s.requires_grad_()
    w.requires_grad_()
    out = SF.spike_conv2d(s, w, b, **kw)
    torch.testing.assert_close(out.double(), ref_conv(s.detach(), w.detach(), b, **kw), rtol=1e-5, atol=1e-4)
    g = torch.randn_like(out)
    out.backward(g)
    s64, w64 = (t.detach().double().requires_grad_() for t in (s, w))
    ref_conv(s64, w64, b, **kw).backward(g.double())
    torch.testing.assert_close(w.grad.double(), w64.grad, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(s.grad.double(), s64.grad, rtol=1e-5, atol=1e-4)
