"""The inference fast path (no-grad calls skip torch.library) and the weight-layout cache:
same results as the registered ops, taken exactly when nothing needs to see the op."""
import gc
import json
import os
import subprocess
import sys
import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import sparsesnn
from sparsesnn import _ext
from sparsesnn import functional as F
from sparsesnn.nn import LIF, PackedSpikingConv2d, PackedSpikingLinear, SpikingLinear, reset_net
from sparsesnn.ops import _fast
from sparsesnn.ops.spike_linear import input_major_weight

needs_ext = pytest.mark.usefixtures("kernel_required")  # fails without the extension unless SPARSESNN_DISABLE_EXT=1


def _forbid_dispatch(monkeypatch):
    """Make every call through a registered custom op fail, to prove the fast path skips them."""
    def fail(self, *args, **kwargs):
        raise AssertionError(f"{self._name} was called: the fast path was not taken")
    monkeypatch.setattr(torch.library.CustomOpDef, "__call__", fail)


class _Spy(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


@needs_ext
def test_eager_cpu_gate():
    x = torch.randn(3, 4)
    w = torch.nn.Parameter(torch.randn(4, 4))
    assert _fast.eager_cpu(x, None)
    assert not _fast.eager_cpu(x, w)          # a gradient is needed
    with torch.no_grad():
        assert _fast.eager_cpu(x, w)          # parameters are fine without autograd
        assert not _fast.eager_cpu(torch.randn(3, device="meta"))
        with _Spy():
            assert not _fast.eager_cpu(x)     # a dispatch mode must see the op
        assert not torch.vmap(lambda t: torch.tensor(_fast.eager_cpu(t)))(x).any()
    assert not _fast.eager_cpu(x.requires_grad_())


@needs_ext
@pytest.mark.parametrize("kind", ["lif", "if", "plif"])
def test_neuron_fast_path_equals_op(monkeypatch, kind):
    x = torch.randn(5, 3, 70) + 0.6
    v0 = torch.rand(3, 70)
    w = torch.tensor(0.3)
    call = {"lif": lambda: F.lif(x, v0, tau=3.0, v_reset=None, surrogate="atan"),
            "if": lambda: F.if_neuron(x, v0, v_threshold=0.7),
            "plif": lambda: F.plif(x, w, v0)}[kind]
    x.requires_grad_(True)
    s_op, v_op = call()                       # autograd: through the registered op
    x.requires_grad_(False)
    _forbid_dispatch(monkeypatch)
    with torch.no_grad():
        s, v = call()
    assert torch.equal(s, s_op.detach()) and torch.equal(v, v_op.detach())


@needs_ext
@pytest.mark.parametrize("case", ["plain", "no_state", "x_strided", "state_f64", "state_broadcast",
                                  "state_strided", "x_requires_grad"])
def test_neuron_shortcut_and_general_inputs_agree(monkeypatch, case):
    """Kernel-ready input takes the short check; anything else is converted first. Either
    way the result is the op's, and no registered op runs without a gradient."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, 50) + 0.6
    v0 = torch.rand(3, 50)
    if case == "x_strided":
        x = torch.randn(4, 50, 3).transpose(1, 2) + 0.6
    elif case == "state_f64":
        v0 = v0.double()
    elif case == "state_broadcast":
        v0 = torch.rand(50)
    elif case == "state_strided":
        v0 = torch.rand(50, 3).t()
    elif case == "no_state":
        v0 = None
    x_ref = x.detach().clone().requires_grad_(True)
    s_op, v_op = F.lif(x_ref, v0)             # autograd: through the registered op
    if case == "x_requires_grad":
        x.requires_grad_(True)
    _forbid_dispatch(monkeypatch)
    with torch.no_grad():
        s, v = F.lif(x, v0)
    assert torch.equal(s, s_op.detach()) and torch.equal(v, v_op.detach())


@needs_ext
def test_layers_fast_path_equal_op(monkeypatch):
    torch.manual_seed(1)
    s = (torch.rand(6, 40) < 0.2).float()
    w, b = torch.randn(24, 40), torch.randn(24)
    img = (torch.rand(2, 3, 9, 9) < 0.3).float()
    cw = torch.randn(5, 3, 3, 3)
    lin = torch.nn.Linear(40, 24)
    with torch.no_grad():
        lin.weight.mul_((torch.rand(24, 40) < 0.15).float())
    pruned = PackedSpikingLinear.from_float(lin, 4)
    packed = PackedSpikingLinear.from_float(torch.nn.Linear(40, 24), 4)
    pconv = PackedSpikingConv2d.from_float(torch.nn.Conv2d(3, 5, 3, padding=1), 4)
    assert pruned.layout == "pruned" and packed.layout == "dense"
    expected = [F.spike_linear(s, w, b), F.spike_conv2d(img, cw, None, 1, 1), pruned(s), packed(s),
                pconv(img)]
    _forbid_dispatch(monkeypatch)
    with torch.no_grad():
        got = [F.spike_linear(s, w, b), F.spike_conv2d(img, cw, None, 1, 1), pruned(s), packed(s),
               pconv(img)]
    for e, g in zip(expected, got):
        assert torch.equal(e, g)


@needs_ext
def test_autograd_still_goes_through_the_op(monkeypatch):
    _forbid_dispatch(monkeypatch)
    with pytest.raises(AssertionError, match="fast path was not taken"):
        F.lif(torch.randn(3, 4, requires_grad=True))


def test_first_call_does_not_import_dynamo():
    code = ("import sys, json, torch, sparsesnn; from sparsesnn import functional as F;"
            "x = torch.randn(4, 8, 16, requires_grad=True); s, _ = F.lif(x); s.sum().backward();"
            "w = torch.randn(8, 16, requires_grad=True);"
            "F.spike_linear((x.detach() > 0).float(), w).sum().backward();"
            "print(json.dumps('torch._dynamo' in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ))
    assert json.loads(out.stdout.strip().splitlines()[-1]) is False


def test_ops_still_work_after_dynamo_is_imported():
    import torch._dynamo  # noqa: F401

    x = torch.randn(3, 5, requires_grad=True)
    s, _ = F.lif(x)
    s.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape


# ---- weight layout cache -------------------------------------------------------------------
def test_layout_built_once_per_weight_version():
    w = torch.randn(6, 9)
    a = input_major_weight(w)
    assert input_major_weight(w) is a and torch.equal(a, w.t())
    with torch.no_grad():
        w.add_(1.0)  # bumps the version: the layout is rebuilt
    b = input_major_weight(w)
    assert b is not a and torch.equal(b, w.t())


def test_layout_follows_in_place_updates_in_results():
    s = (torch.rand(4, 9) < 0.5).float()
    w = torch.randn(6, 9)
    F.spike_linear(s, w)
    w.mul_(-2.0)
    torch.testing.assert_close(F.spike_linear(s, w), s @ w.t())
    w.resize_(3, 9)  # a new shape too
    torch.testing.assert_close(F.spike_linear(s, w), s @ w.t())


def test_layout_cache_does_not_keep_dead_weights():
    w = torch.randn(64, 32)
    layout = weakref.ref(input_major_weight(w))
    assert layout() is not None  # held by the cache while the weight lives
    del w
    gc.collect()
    assert layout() is None


@needs_ext
@pytest.mark.parametrize("N", [31, 32, 48, 64, 96, 512])
def test_padded_input_major_rows_give_the_same_result(N):
    # Power-of-two-ish widths get one spare cache line per row (cache-set aliasing); the
    # kernel must read the padded rows, not assume a dense [K, N].
    K = 70
    w = torch.randn(N, K)
    wt = input_major_weight(w)
    assert wt.shape == (K, N) and wt.stride() == ((N + 16) if N % 32 == 0 else N, 1)
    s = (torch.rand(5, K) < 0.3).float()
    torch.testing.assert_close(F.spike_linear(s, w), s @ w.t())
    torch.testing.assert_close(F.spike_linear(s, w, weight_t=w.t().contiguous()), s @ w.t())


@needs_ext
def test_a_given_padded_weight_t_is_read_in_place():
    # SpikingLinear passes its cached (padded, so non-contiguous) layout; copying it per call
    # cost more than the kernel (16 MiB at 2048 x 2048).
    K, N = 70, 64
    w = torch.randn(N, K)
    wt = input_major_weight(w)
    assert not wt.is_contiguous()
    s = (torch.rand(5, K) < 0.3).float()
    with torch.no_grad(), torch.profiler.profile() as prof:
        y = F.spike_linear(s, w, weight_t=wt)
    copies = [e.name for e in prof.events() if e.name in ("aten::copy_", "aten::clone", "aten::contiguous")]
    assert copies == []
    torch.testing.assert_close(y, s @ w.t())
    # A layout the kernel cannot read (column stride != 1) is still accepted, through a copy.
    torch.testing.assert_close(F.spike_linear(s, w, weight_t=w.t()), s @ w.t())


def test_spiking_layers_share_the_cache():
    layer = SpikingLinear(16, 8)
    assert layer.weight_t() is input_major_weight(layer.weight)


# ---- torch.compile without a graph break on the density count -------------------------------
@pytest.mark.parametrize("mode", ["auto", "event"])
def test_spiking_linear_compiles_without_graph_break(mode):
    torch.manual_seed(0)
    net = torch.nn.Sequential(SpikingLinear(32, 16, mode=mode, min_macs=0, break_even=0.5), LIF())
    x = (torch.rand(4, 3, 32) < 0.1).float()
    ref = net(x)
    ref.sum().backward()
    g_ref = net[0].weight.grad.clone()
    net.zero_grad()
    reset_net(net)
    compiled = torch.compile(net, backend="aot_eager", fullgraph=True)
    out = compiled(x)
    assert torch.equal(out, ref)
    out.sum().backward()
    torch.testing.assert_close(net[0].weight.grad, g_ref)
    analog = torch.randn(4, 3, 32)  # non-binary input: the dense path inside the op
    reset_net(net)
    with torch.no_grad():
        expected = net(analog)
        reset_net(net)
        assert torch.equal(compiled(analog), expected)


@pytest.mark.parametrize("bad", [dict(tau=None), dict(tau=1.0), dict(tau=[2.0]), dict(v_threshold=float("nan")),
                                 dict(surrogate="nope")])
def test_memoized_settings_still_reject_bad_values(bad):
    x = torch.randn(3, 4)
    for _ in range(2):  # the second call would hit a cache if a bad value were ever cached
        with pytest.raises(ValueError):
            F.lif(x, **bad)
        F.lif(x)
