"""How the CUDA ops launch: on the tensors' device and the current stream, failures raised
as RuntimeError, no host synchronisation (CUDA graph capture of a deployed model).

Skipped without a GPU; with a GPU but without the CUDA kernels these tests fail (conftest).
"""
import pytest
import torch

from sparsesnn import _ext
from sparsesnn import functional as F
from sparsesnn.nn import PackedSpikingConv2d, PackedSpikingLinear
from sparsesnn.quant import QuantSpec, pack

from conftest import requires_cuda

pytestmark = requires_cuda


def _every_op(device):
    """Runs every CUDA op once on `device` (inputs built on the CPU with a fixed seed) and
    returns the outputs on the CPU."""
    g = torch.Generator().manual_seed(0)
    out = []
    x = (torch.randn(6, 2, 500, generator=g) + 0.4).to(device)
    w = torch.tensor(0.1, device=device, requires_grad=True)
    s, v = F.plif(x.requires_grad_(True), w)
    (s.sum() + v.sum()).backward()
    out += [s, v, x.grad, w.grad]
    sp = (torch.rand(300, 70, generator=g) < 0.2).float().to(device)
    wl = torch.randn(40, 70, generator=g).to(device).requires_grad_(True)
    y = F.spike_linear(sp, wl)
    y.square().sum().backward()
    out += [y, wl.grad]
    sc = (torch.rand(2, 4, 9, 9, generator=g) < 0.2).float().to(device)
    wc = torch.randn(6, 4, 3, 3, generator=g).to(device).requires_grad_(True)
    yc = F.spike_conv2d(sc, wc, None, padding=1)
    yc.square().sum().backward()
    out += [yc, wc.grad]
    codes = torch.randint(-7, 8, (33, 70), generator=g, dtype=torch.int8)
    out.append(pack(codes.to(device), 4))
    torch.manual_seed(0)
    lin = torch.nn.Linear(70, 33)
    for mask in (None, torch.rand(33, 70, generator=g) < 0.3):
        m = PackedSpikingLinear.from_float(lin, QuantSpec("int4", group_size=32), mask=mask).to(device)
        out.append(m(sp))
    conv = PackedSpikingConv2d.from_float(torch.nn.Conv2d(4, 6, 3), "int8").to(device)
    out.append(conv(sc))
    return [t.detach().cpu() for t in out]


def test_non_default_stream():
    """Kernels run on the current stream, so results made on a side stream are complete once
    that stream is synchronised (and equal those of the default stream)."""
    ref = _every_op("cuda")
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        got = _every_op("cuda")
    side.synchronize()
    for a, b in zip(got, ref):
        assert torch.equal(a, b)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_tensors_on_second_gpu_while_first_is_current():
    ref = _every_op("cuda:0")
    torch.cuda.set_device(0)
    got = _every_op("cuda:1")
    assert torch.cuda.current_device() == 0  # the guard restored the current device
    for a, b in zip(got, ref):
        assert torch.equal(a, b)


def test_launch_error_is_a_runtime_error():
    with pytest.raises(RuntimeError, match="launch_error_selftest.*kernel launch failed"):
        _ext._C.cuda_launch_error_selftest(torch.cuda.current_device())
    # a bad device index fails in the guard of a real op, which names the op
    p = _ext._C.PackedLinearParams()
    p.M, p.K, p.N = 1, 1, 1
    with pytest.raises(RuntimeError, match=r"sparsesnn::packed_linear \(CUDA\): cudaSetDevice"):
        _ext._C.packed_linear_cuda(p, True, 0, 0, 0, 0, 0, 1000, 0)
    # both errors were consumed: the next op works
    s, _ = F.lif(torch.ones(2, 3, device="cuda"))
    assert s.shape == (2, 3)


def test_cuda_graph_capture_of_deployed_model():
    """A deployed model's forward does no host synchronisation, so it can be captured in a
    CUDA graph and replayed with the same result."""
    from sparsesnn.compress import ADMM
    from sparsesnn.deploy import deploy
    from sparsesnn.models import SpikingMLP

    torch.manual_seed(0)
    m = SpikingMLP(16, (48, 40), 5, T=4, init_gain=4.0)
    ADMM(m, sparsity=0.7, bits=4).finalize()
    d = deploy(m).cuda()
    x = torch.rand(32, 16, device="cuda")
    with torch.no_grad():
        want = d(x).clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up on a side stream, as torch recommends
            for _ in range(2):
                d(x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            y = d(x)
        graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(y, want)


def test_cuda_checks_are_opt_in(monkeypatch):
    """Without SPARSESNN_CUDA_CHECKS the binary check (a host read) is skipped on CUDA; with it,
    non-binary spikes raise as on CPU."""
    from sparsesnn.ops import _checks

    w = torch.randn(5, 8, device="cuda")
    s = torch.full((3, 8), 0.5, device="cuda")
    monkeypatch.setattr(_checks, "CUDA_CHECKS", False)
    F.spike_linear(s, w)  # no check, no sync
    monkeypatch.setattr(_checks, "CUDA_CHECKS", True)
    with pytest.raises(ValueError, match=r"^s: expected binary spikes \(0/1\)"):
        F.spike_linear(s, w)
