"""Fused LIF/IF/PLIF kernels against the autograd reference (reference.lif_autograd)."""
import itertools
import math

import pytest
import torch

from sparsesnn import functional as F
from sparsesnn import reference as R
from sparsesnn.nn import IF, LIF, PLIF, reset_net
from sparsesnn.ops.lif import Neuron, lif_backward_op, lif_op, plif_op
from sparsesnn.surrogate import SURROGATES

RESETS = [0.0, -0.25, None]  # hard at 0, hard at -0.25, soft


def _inputs(T, shape, scale=1.5, requires_grad=True):
    x = (torch.randn(T, *shape) * scale + 0.4).requires_grad_(requires_grad)
    return x


def _compare(x, v0, ref_kwargs, ours, atol=2e-5):
    """Forward spikes identical, v_last and grads of x / v0 within fp32 tolerance."""
    s, v = ours(x, v0)
    x_r = x.detach().clone().requires_grad_(x.requires_grad)
    v0_r = None if v0 is None else v0.detach().clone().requires_grad_(v0.requires_grad)
    s_r, v_r = R.lif_autograd(x_r, v0_r, **ref_kwargs)
    assert s.dtype == x.dtype and s.shape == x.shape
    assert torch.equal(s, s_r), f"{(s != s_r).sum().item()} spikes differ"
    torch.testing.assert_close(v, v_r, rtol=1e-5, atol=1e-5)
    if not (x.requires_grad or (v0 is not None and v0.requires_grad)):
        return
    gs, gv = torch.randn_like(s), torch.randn_like(v)
    grads = [t for t in (x, v0) if t is not None and t.requires_grad]
    grads_r = [t for t in (x_r, v0_r) if t is not None and t.requires_grad]
    ours_g = torch.autograd.grad((s * gs).sum() + (v * gv).sum(), grads)
    ref_g = torch.autograd.grad((s_r * gs).sum() + (v_r * gv).sum(), grads_r)
    for a, b in zip(ours_g, ref_g):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=atol)


@pytest.mark.parametrize("v_reset,decay_input,detach_reset,surrogate",
                         list(itertools.product(RESETS, [True, False], [False, True], sorted(SURROGATES))))
def test_lif_all_modes(backend, v_reset, decay_input, detach_reset, surrogate):
    kw = dict(v_threshold=1.0, v_reset=v_reset, decay_input=decay_input,
              detach_reset=detach_reset, surrogate=surrogate)
    x = _inputs(12, (3, 37))
    v0 = (torch.rand(3, 37) * 0.5).requires_grad_(True)
    _compare(x, v0, dict(decay=1 / 3.0, **kw), lambda a, b: F.lif(a, b, tau=3.0, **kw))
    _compare(x, None, dict(decay=1 / 3.0, **kw), lambda a, b: F.lif(a, b, tau=3.0, **kw))


@pytest.mark.parametrize("T", [1, 2, 5, 16, 64])
@pytest.mark.parametrize("shape", [(1,), (7,), (3, 5, 11), (1031,)])
def test_lif_shapes_and_lengths(backend, T, shape):
    x = _inputs(T, shape)
    _compare(x, None, dict(decay=0.5), lambda a, b: F.lif(a, b))


@pytest.mark.parametrize("v_reset", RESETS)
def test_large_outputs_use_streaming_stores(v_reset):
    # >= 16 MiB per [T, N] tensor takes the streaming-store path; an odd N misaligns every
    # row, so the unaligned heads and tails of each streamed row are exercised too.
    kw = dict(v_reset=v_reset, surrogate="sigmoid")
    x = _inputs(4, (2**20 + 13,))
    v0 = (torch.rand(2**20 + 13) * 0.5).requires_grad_(True)
    _compare(x, v0, dict(decay=0.5, **kw), lambda a, b: F.lif(a, b, **kw))


def test_plif_large_outputs_use_streaming_stores():
    x = _inputs(3, (5, 2**18 + 7))
    w = torch.tensor(F.tau_to_w(2.5), requires_grad=True)
    s, v = F.plif(x, w)
    w_r, x_r = w.detach().clone().requires_grad_(True), x.detach().clone().requires_grad_(True)
    s_r, v_r = R.lif_autograd(x_r, None, decay=torch.sigmoid(w_r))
    assert torch.equal(s, s_r)
    gs = torch.randn_like(s)
    g = torch.autograd.grad((s * gs).sum(), [x, w])
    g_r = torch.autograd.grad((s_r * gs).sum(), [x_r, w_r])
    torch.testing.assert_close(g[0], g_r[0], rtol=1e-4, atol=2e-5)
    torch.testing.assert_close(g[1], g_r[1], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("surrogate", sorted(SURROGATES))
def test_surrogate_gradient_over_a_wide_range(backend, surrogate):
    # One step from V = 0: grad_x = decay * sg'(x * decay - 1), checked against float64 over
    # a range where surrogates underflow to 0; 4099 neurons leave a partial last SIMD block.
    # (In fp32, 1 - sigmoid(z) cancels for large z; the float64 truth makes a fair judge.)
    x = torch.linspace(-400, 400, 4099).reshape(1, -1).requires_grad_(True)
    x64 = x.detach().double().requires_grad_(True)
    s, _ = F.lif(x, surrogate=surrogate)
    s64, _ = R.lif_autograd(x64, None, decay=0.5, surrogate=surrogate)
    (g,) = torch.autograd.grad(s.sum(), x)
    (g64,) = torch.autograd.grad(s64.sum(), x64)
    torch.testing.assert_close(g.double(), g64, rtol=1e-4, atol=1e-6)
    assert g.abs().max() > 0


@pytest.mark.parametrize("surrogate", sorted(SURROGATES))
@pytest.mark.parametrize("detach_reset", [False, True])
def test_nan_membrane_gives_nan_gradient_like_the_reference(backend, surrogate, detach_reset):
    # NaN lanes at the start, middle and in a partial last SIMD block: the vector surrogates
    # (AVX-512, AVX2) clamp their exponent argument, which must not turn NaN into a number
    # (with detach_reset only the surrogate carries the NaN into the gradient).
    x = (torch.randn(3, 21) + 0.5)
    x[0, 0], x[1, 9], x[2, 20] = float("nan"), float("nan"), float("nan")
    x.requires_grad_(True)
    x_r = x.detach().clone().requires_grad_(True)
    s, _ = F.lif(x, surrogate=surrogate, detach_reset=detach_reset)
    s_r, _ = R.lif_autograd(x_r, None, surrogate=surrogate, detach_reset=detach_reset)
    gs = torch.randn_like(s)
    (g,) = torch.autograd.grad((s * gs).sum(), x)
    (g_r,) = torch.autograd.grad((s_r * gs).sum(), x_r)
    assert torch.equal(torch.isnan(g), torch.isnan(g_r))
    assert torch.isnan(g).any()
    torch.testing.assert_close(g.nan_to_num(), g_r.nan_to_num(), rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("T", [300, 5000])
def test_long_sequences(T):
    # backward recomputes H in chunks of 256 KiB / T neurons: 208 at T=300, the minimum 16
    # at T=5000, so several chunks with a partial last one
    x = _inputs(T, (53,), scale=0.8)
    _compare(x, None, dict(decay=0.5, surrogate="atan"), lambda a, b: F.lif(a, b, surrogate="atan"),
             atol=1e-4)


@pytest.mark.parametrize("v_reset", RESETS)
@pytest.mark.parametrize("detach_reset", [False, True])
def test_if_neuron(backend, v_reset, detach_reset):
    kw = dict(v_reset=v_reset, detach_reset=detach_reset, surrogate="atan", v_threshold=0.8)
    x = _inputs(9, (4, 10), scale=0.6)
    v0 = torch.rand(4, 10).requires_grad_(True)
    _compare(x, v0, dict(leak=False, **kw), lambda a, b: F.if_neuron(a, b, **kw))


@pytest.mark.parametrize("loss", ["sum", "mean", "sum over T", "sum over N", "scaled sum"])
@pytest.mark.parametrize("T", [1, 2, 9])
def test_broadcast_gradients(backend, loss, T):
    """Autograd hands ``.sum()``/``.mean()`` gradients over as broadcasts (stride 0 over T);
    the CPU kernel then reads one row for every step. Same gradients as the reference, PLIF's
    decay gradient included."""
    reduce = {"sum": lambda s: s.sum(), "mean": lambda s: s.mean(),
              "sum over T": lambda s: (s.sum(0) * torch.linspace(-1, 2, s[0].numel()).view_as(s[0])).sum(),
              "sum over N": lambda s: (s.sum(-1) * torch.arange(1.0, s.shape[0] + 1)[:, None]).sum(),
              "scaled sum": lambda s: (s * 3.0).sum()}[loss]
    x = _inputs(T, (2, 129))
    w = torch.tensor(F.tau_to_w(2.5), requires_grad=True)
    x_r, w_r = x.detach().clone().requires_grad_(True), w.detach().clone().requires_grad_(True)
    g = torch.autograd.grad(reduce(F.plif(x, w)[0]), [x, w])
    g_r = torch.autograd.grad(reduce(R.lif_autograd(x_r, None, decay=torch.sigmoid(w_r))[0]), [x_r, w_r])
    for a, b in zip(g, g_r):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert g[0].abs().sum() > 0


def test_backward_kernel_rejects_a_bad_grad_stride():
    from sparsesnn import _ext
    if not _ext.available():
        pytest.skip("compiled extension not built")
    p = _ext._C.LifParams()
    p.T, p.N = 2, 4
    with pytest.raises(ValueError, match="grad_t_stride must be -1, 0 or N"):
        _ext._C.lif_backward_cpu(p, 0, 0, 0, 0, 0, 0, False, 3)


@pytest.mark.parametrize("v_reset", RESETS)
@pytest.mark.parametrize("decay_input", [True, False])
def test_plif_decay_gradient(backend, v_reset, decay_input):
    kw = dict(v_reset=v_reset, decay_input=decay_input, surrogate="sigmoid")
    x = _inputs(10, (6, 33))
    v0 = (torch.rand(6, 33) * 0.3).requires_grad_(True)
    w = torch.tensor(F.tau_to_w(2.5), requires_grad=True)
    s, v = F.plif(x, w, v0, **kw)
    w_r = w.detach().clone().requires_grad_(True)
    x_r, v0_r = x.detach().clone().requires_grad_(True), v0.detach().clone().requires_grad_(True)
    s_r, v_r = R.lif_autograd(x_r, v0_r, decay=torch.sigmoid(w_r), **kw)
    assert torch.equal(s, s_r)
    torch.testing.assert_close(v, v_r)
    gs, gv = torch.randn_like(s), torch.randn_like(v)
    g = torch.autograd.grad((s * gs).sum() + (v * gv).sum(), [x, v0, w])
    g_r = torch.autograd.grad((s_r * gs).sum() + (v_r * gv).sum(), [x_r, v0_r, w_r])
    for a, b in zip(g, g_r):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert g[2].abs() > 0  # the decay really receives a gradient


@pytest.mark.parametrize("v_reset", RESETS)
def test_if_neuron_decay_gradient_is_zero(backend, v_reset):
    """IF (no leak) does not depend on decay: a decay gradient asked of it is exactly zero in
    the kernel and in the reference (the reference used to return a nonzero value)."""
    n = Neuron(v_reset=v_reset, leak=False)
    x = _inputs(7, (5, 40))
    decay = torch.tensor(0.4, requires_grad=True)
    s, v, _ = plif_op(x, None, decay, *n.pack(), True)
    gs, gv = torch.randn_like(s), torch.randn_like(v)
    (g,) = torch.autograd.grad((s * gs).sum() + (v * gv).sum(), [decay])
    assert g.item() == 0.0
    h = R.lif_forward(x, None, 0.4, 1.0, v_reset, True, False)[2]
    _, _, gd = R.lif_backward(gs, gv, h, None, 0.4, 1.0, v_reset, True, False, False, "sigmoid", 4.0)
    assert gd.item() == 0.0


def test_requires_grad_on_either_input(backend):
    x = _inputs(6, (20,), requires_grad=False)
    v0 = torch.rand(20).requires_grad_(True)
    _compare(x, v0, dict(decay=0.5), lambda a, b: F.lif(a, b))  # only v0
    x.requires_grad_(True)
    _compare(x, v0.detach(), dict(decay=0.5), lambda a, b: F.lif(a, b))  # only x
    s, v = F.lif(x.detach())  # neither: nothing saved, still correct
    assert not s.requires_grad and torch.equal(s, R.lif_autograd(x.detach())[0])


def test_non_contiguous_and_broadcast_v0(backend):
    base = torch.randn(20, 8, 6) * 2
    x = base.transpose(0, 2)[:, ::2].requires_grad_(False)  # [6, 4, 20], strided
    x = x.clone().transpose(1, 2).transpose(1, 2)  # keep strides odd but values same
    x_nc = base.permute(2, 1, 0)[:, ::2]  # [6, 4, 20] non-contiguous view
    assert not x_nc.is_contiguous()
    v0 = torch.rand(20)  # broadcasts over [4, 20]
    s, v = F.lif(x_nc, v0)
    s_r, v_r = R.lif_autograd(x_nc.contiguous(), v0.expand(4, 20))
    assert torch.equal(s, s_r)
    torch.testing.assert_close(v, v_r)
    xg = x_nc.detach().requires_grad_(True)
    F.lif(xg)[0].sum().backward()
    xr = x_nc.detach().contiguous().requires_grad_(True)
    R.lif_autograd(xr)[0].sum().backward()
    torch.testing.assert_close(xg.grad, xr.grad)


def test_empty_inputs(backend):
    s, v = F.lif(torch.empty(5, 0))
    assert s.shape == (5, 0) and v.shape == (0,)
    v0 = torch.rand(3)
    s, v = F.lif(torch.empty(0, 3), v0)
    assert s.shape == (0, 3) and torch.equal(v, v0)
    x = torch.empty(4, 2, 0, requires_grad=True)
    F.lif(x)[0].sum().backward()
    assert x.grad.shape == x.shape


def test_all_zero_and_saturating_input(backend):
    s, v = F.lif(torch.zeros(8, 50))
    assert s.sum() == 0 and torch.all(v == 0)
    s, _ = F.lif(torch.full((8, 50), 10.0))
    assert torch.all(s == 1)  # every step crosses threshold and resets


def test_opcheck():
    x = torch.randn(5, 3, 4, requires_grad=True)
    v0 = torch.rand(3, 4, requires_grad=True)
    hard = Neuron(1.0, 0.0, 4.0).pack()
    soft = Neuron(1.0, None, 2.0, decay_input=False, detach_reset=True, surrogate=1).pack()
    if_ = Neuron(1.0, 0.0, 1.0, leak=False, surrogate=2).pack()
    quant = Neuron(1.0, 0.0, 4.0, state=(8, 4, 2, 3)).pack()  # stochastic fixed-point state
    torch.library.opcheck(lif_op, (x, v0, 0.5, *hard, True))
    torch.library.opcheck(lif_op, (x, None, 0.5, *soft, True))
    torch.library.opcheck(lif_op, (x.detach(), None, 1.0, *if_, False))
    torch.library.opcheck(lif_op, (x, v0, 0.5, *quant, True))
    decay = torch.tensor(0.4, requires_grad=True)
    torch.library.opcheck(plif_op, (x, v0, decay, *Neuron(1.0, 0.0, 1.0, surrogate=3).pack(), True))
    # backward from x (H recomputed, as on CPU) and from a saved H (as on CUDA)
    gs, gv, d = torch.randn(5, 3, 4), torch.randn(3, 4), torch.tensor(0.5)
    rest = Neuron(1.0, 0.0, 1.0, surrogate=4).pack()
    torch.library.opcheck(lif_backward_op, (gs, gv, x.detach(), None, v0.detach(), d, *rest, True))
    torch.library.opcheck(lif_backward_op, (gs, gv, x.detach(), None, v0.detach(), d, *quant, True))
    h = R.lif_forward(x.detach(), v0.detach(), 0.5, 1.0, 0.0, True, True)[2]
    torch.library.opcheck(lif_backward_op, (gs, gv, None, h, v0.detach(), d, *rest, True))


def test_neuron_settings_round_trip():
    for n in (Neuron(), Neuron(0.7, None, 2.5, False, False, True, 3, (8, 4, 2, 12345))):
        assert Neuron.unpack(*n.pack()) == n
    with pytest.raises(ValueError, match="expected 3 and 8 values"):
        lif_op(torch.randn(2, 3), None, 0.5, [1.0, 0.0], [1] * 8, False)
    with pytest.raises(ValueError, match=r"options\[3\] \(surrogate\)"):
        lif_op(torch.randn(2, 3), None, 0.5, *Neuron(surrogate=99).pack(), False)
    with pytest.raises(ValueError, match=r"options\[6\] \(state rounding\)"):
        lif_op(torch.randn(2, 3), None, 0.5, *Neuron(state=(8, 4, 7, 0)).pack(), False)


def test_in_place_change_of_input_after_forward_is_caught():
    # backward recomputes H from x, so x is saved: autograd must refuse a modified x
    x = (torch.randn(4, 8) + 0.5).requires_grad_(True)
    y = x * 1.0
    s, _ = F.lif(y)
    y.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        s.sum().backward()


def test_backward_needs_exactly_one_of_x_and_h():
    gs, x, d = torch.randn(5, 3), torch.randn(5, 3), torch.tensor(0.5)
    rest = (*Neuron().pack(), False)
    with pytest.raises(ValueError, match="exactly one of x"):
        lif_backward_op(gs, None, None, None, None, d, *rest)
    with pytest.raises(ValueError, match="exactly one of x"):
        lif_backward_op(gs, None, x, x, None, d, *rest)


def test_training_forward_saves_h_only_where_backward_reads_it():
    x = torch.randn(6, 10)
    assert lif_op(x, None, 0.5, *Neuron().pack(), True)[2].numel() == 0


def test_modules_state_and_steps(backend):
    x = torch.randn(10, 2, 16) + 0.5
    lif = LIF(tau=2.0)
    s_all = lif(x)
    v_all = lif.v.clone()
    lif.reset()
    s_half = torch.cat([lif(x[:4]), lif(x[4:])])  # state carried across calls
    assert torch.equal(s_all, s_half) and torch.equal(lif.v, v_all)
    single = LIF(tau=2.0, step_mode="s")
    s_single = torch.stack([single(x[t]) for t in range(10)])
    assert torch.equal(s_single, s_all)
    net = torch.nn.Sequential(LIF(), IF(), PLIF())
    net(x)
    reset_net(net)
    assert all(m.v is None for m in net)
    with pytest.raises(ValueError, match=r"^x: shape .* does not match the stored state .*call reset\(\)"):
        lif(torch.randn(3, 5, 5))


def test_plif_trains():
    torch.manual_seed(1)
    plif = PLIF(init_tau=2.0)
    opt = torch.optim.SGD(plif.parameters(), lr=1.0)
    x = torch.rand(8, 64)
    w0 = plif.w.item()
    for _ in range(3):
        plif.reset()
        loss = (plif(x).mean() - 1.0) ** 2
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert plif.w.item() != w0 and math.isfinite(plif.w.item())


def test_torch_compile():
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), LIF(), torch.nn.Linear(32, 4), PLIF())
    x = torch.randn(6, 3, 16)
    ref = net(x)
    reset_net(net)
    compiled = torch.compile(net, backend="aot_eager", fullgraph=True)
    out = compiled(x)
    assert torch.equal(out, ref)
    out.sum().backward()
    assert net[0].weight.grad is not None and net[3].w.grad is not None


@pytest.mark.parametrize("bad,match", [
    (dict(x=torch.tensor(1.0)), "x"),
    (dict(x=torch.randn(4, 3, dtype=torch.float64)), "x: expected dtype"),
    (dict(x=torch.randint(0, 2, (4, 3))), "x: expected dtype"),
    (dict(x=[1.0, 2.0]), "x: expected a torch.Tensor"),
    (dict(tau=1.0), "tau"),
    (dict(tau=0.5), "tau"),
    (dict(surrogate="relu"), "surrogate"),
    (dict(v_threshold=float("nan")), "v_threshold"),
    (dict(v_reset=float("inf")), "v_reset"),
    (dict(alpha=-1.0), "alpha"),
    (dict(v0=torch.rand(5)), "v0: expected shape"),
    (dict(v0=torch.rand(3, device="meta")), "v0: expected device"),
])
def test_bad_input(bad, match):
    kwargs = dict(x=torch.randn(4, 3))
    kwargs.update(bad)
    x = kwargs.pop("x")
    v0 = kwargs.pop("v0", None)
    with pytest.raises(ValueError, match=match):
        F.lif(x, v0, **kwargs)


def test_bad_module_args():
    with pytest.raises(ValueError, match=r"^tau: expected a number > 1"):
        LIF(tau=1.0)
    with pytest.raises(ValueError, match="^step_mode: "):
        LIF(step_mode="x")
    with pytest.raises(ValueError, match=r"^w: expected a finite"):
        F.plif(torch.randn(3, 2), torch.tensor([float("nan")]))
