"""PackedSpikingConv2d's per-input-shape call plans (sparsesnn.ops.conv2d_plan): repeated eager
calls go straight to the gather kernel; every change a plan depends on must be seen."""
import copy
import io
import pickle

import pytest
import torch
import torch.nn.functional as F

from sparsesnn.nn import PackedSpikingConv2d
from sparsesnn.ops import layout_cache
from sparsesnn.ops.pruned_conv2d import tap_mask

from _conv_cases import dense_reference, spikes  # noqa: E402

pytestmark = pytest.mark.skipif(not __import__("sparsesnn")._ext.available(), reason="needs the extension")


def layer(mask_sparsity=None, seed=0, C=6, O=20, **kw):
    torch.manual_seed(seed)
    conv = torch.nn.Conv2d(C, O, 3, padding=1, **kw)
    mask = tap_mask(conv.weight, mask_sparsity) if mask_sparsity else None
    return conv, PackedSpikingConv2d.from_float(conv, "int4", mask=mask)


@pytest.mark.parametrize("sparsity", [None, 0.7])
@pytest.mark.parametrize("shape", [(2, 6, 9, 7), (3, 2, 6, 8, 8)])
def test_repeated_calls_use_a_plan_and_stay_exact(sparsity, shape):
    _, m = layer(sparsity)
    assert m.layout == ("pruned" if sparsity else "dense")
    with torch.no_grad():
        for seed in range(4):  # new spikes every call, one shape: calls 2.. run the plan
            x = spikes(shape, 0.2, seed)
            y = m(x)
            assert y.shape == (*shape[:-3], 20, shape[-2], shape[-1])
            assert torch.equal(y, dense_reference(m, x))
    assert torch.Size(shape) in m._plans


@pytest.mark.parametrize("sparsity", [None, 0.7])
def test_plan_sees_weight_scale_bias_and_cache_changes(sparsity):
    _, m = layer(sparsity)
    x = spikes((2, 6, 8, 8), 0.3)
    with torch.no_grad():
        m(x), m(x)
        ref = m.values if m.layout == "pruned" else m.weights
        ref.copy_(ref.flip(0))  # in place: the version counter moves
        assert torch.equal(m(x), dense_reference(m, x))
        m.scale.mul_(2)  # read from the buffer at every call
        m.bias.add_(1)
        assert torch.equal(m(x), dense_reference(m, x))
        ref.data.copy_(ref.data.flip(0))  # no version bump; layout_cache.clear() is the documented remedy
        layout_cache.clear()
        assert torch.equal(m(x), dense_reference(m, x))


def test_plan_sees_threads_analog_input_and_mode():
    conv, m = layer(C=16, O=32)
    x = spikes((1, 16, 20, 20), 0.1)
    threads = torch.get_num_threads()
    with torch.no_grad():
        try:
            for t in (1, 2, 1):
                torch.set_num_threads(t)
                assert torch.equal(m(x), dense_reference(m, x))
                assert m._plans[x.shape].threads == t
        finally:
            torch.set_num_threads(threads)
        xa = x.clone()
        xa[0, 3, 4, 5] = 0.5  # not a spike: the analog kernel, through the plan's shape
        want = F.conv2d(xa, m.dequantized_weight(), conv.bias, 1, 1)
        torch.testing.assert_close(m(xa), want, rtol=1e-5, atol=1e-5)
        assert torch.equal(m(xa), dense_reference(m, xa))
        m.input_mode = "spike"  # no longer the auto path: the module checks the input itself
        with pytest.raises(ValueError, match="input"):
            m(xa)
        assert torch.equal(m(x), dense_reference(m, x))


def test_plan_not_used_for_grad_other_dtypes_and_views():
    _, m = layer()
    x = spikes((2, 6, 8, 8), 0.3)
    with torch.no_grad():
        m(x), m(x)
    xg = x.clone().requires_grad_(True)
    y = m(xg)
    y.sum().backward()
    assert xg.grad is not None and xg.grad.shape == x.shape
    assert torch.equal(m(x.bool()), dense_reference(m, x))
    xt = spikes((2, 6, 8, 8), 0.3, 5).transpose(2, 3)  # same shape, not contiguous
    assert torch.equal(m(xt), dense_reference(m, xt.contiguous()))


def test_plans_survive_state_dict_copy_and_pickle():
    _, m = layer(0.7)
    _, other = layer(0.5, seed=3)
    x = spikes((2, 6, 8, 8), 0.3)
    with torch.no_grad():
        m(x), m(x)
        buf = io.BytesIO()
        torch.save(other.state_dict(), buf)
        buf.seek(0)
        m.load_state_dict(torch.load(buf))  # other buffers (and maybe layout): plans rebuilt
        assert torch.equal(m(x), dense_reference(other, x))
        c = copy.deepcopy(m)
        assert len(c._plans) == 0 and torch.equal(c(x), dense_reference(other, x))
        p = pickle.loads(pickle.dumps(m))
        assert len(p._plans) == 0 and torch.equal(p(x), dense_reference(other, x))
