"""sparsesnn.runtime: native plans equal the eager deployed model; file format; C ABI safety."""
from __future__ import annotations

import random
import struct
import threading
import zlib

import pytest
import torch
from torch import nn

from sparsesnn import FixedPoint, runtime
from sparsesnn.deploy import deploy
from sparsesnn.models import SpikingMLP
from sparsesnn.nn import IF, LIF, PLIF, PackedSpikingLinear
from sparsesnn.ops.pruned_blocks import cpu_blocks

from _runtime_cases import eager as _eager, require_runtime  # noqa: E402

require_runtime()

T = 4


def _prune(layer: nn.Module, keep: float, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.weight.mul_((torch.rand(layer.weight.shape, generator=g) < keep).float())


def _spikes(shape, p=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) < p).float()


def _mlp(hidden=(96, 80), keep=0.08, bits=4):
    torch.manual_seed(0)
    m = SpikingMLP(16, hidden, 5, T=T, init_gain=4.0)
    _prune(m.fc2, keep)
    with torch.no_grad():
        m.fc2.weight.mul_(0.5 / keep)  # keep the second layer firing after pruning
    return deploy(m, default_bits=bits)


@pytest.fixture(params=[True, False], ids=["relayout", "keep_pruned"])
def relayout(request, monkeypatch):
    """With and without the plan's pruned -> dense packed re-layout (both must match eager)."""
    from sparsesnn.runtime import _lower

    monkeypatch.setattr(_lower, "PRUNED_TO_DENSE", request.param)
    return request.param


@pytest.mark.parametrize("batch", [1, 3, 17, 64])
def test_demo_mlp_matches_eager(batch, relayout):
    d = _mlp()
    assert d.fc2.layout == "pruned" and d.fc1.layout == "dense"
    x = torch.rand(batch, 16, generator=torch.Generator().manual_seed(batch))
    plan = runtime.compile(d, x[:1])
    dense_fc2 = d.fc2.in_features * d.fc2.out_features * d.fc2.bits // 8 + 4 * (d.fc2.scale.numel() + 80)
    relaid = d.fc1.model_bytes() + d.fc3.model_bytes() + dense_fc2
    assert (plan.weight_bytes() == relaid) == relayout  # fc2 re-laid out as dense packed rows
    y = plan(x)
    ye = _eager(d, x)
    assert y.shape == ye.shape
    torch.testing.assert_close(y, ye, atol=1e-5, rtol=1e-5)
    assert torch.equal(y.argmax(1), ye.argmax(1))


def test_demo_mlp_hidden_spikes_identical(relayout):
    d = _mlp()
    x = torch.rand(9, 16, generator=torch.Generator().manual_seed(3))
    s = d.encode(x)  # the spikes fc1 sees
    body = nn.Sequential(d.fc1, d.lif1, d.fc2, d.lif2)
    plan = runtime.compile(body, s)
    got, want = plan(s), _eager(body, s)
    assert set(got.unique().tolist()) <= {0.0, 1.0} and got.sum() > 0
    assert torch.equal(got, want)


@pytest.mark.parametrize("bits", ["int8", "int4", "int2", "ternary", "binary", None])
@pytest.mark.parametrize("keep", [1.0, 0.2])
@pytest.mark.parametrize("analog", [False, True])
def test_linear_formats_layouts_inputs(bits, keep, analog, relayout):
    torch.manual_seed(1)
    fc1, fc2 = nn.Linear(40, 70), nn.Linear(70, 33)
    with torch.no_grad():
        fc1.weight.mul_(3.0)
    _prune(fc1, keep, 1)
    _prune(fc2, keep, 2)
    layout = "pruned" if keep < 1 else "dense"  # forced: deploy picks the smaller layout
    model = nn.Sequential(PackedSpikingLinear.from_float(fc1, bits, layout=layout), LIF(),
                          PackedSpikingLinear.from_float(fc2, bits, layout=layout), IF()).eval()
    assert model[0].layout == model[2].layout == layout
    g = torch.Generator().manual_seed(5)
    x = torch.rand(T, 6, 40, generator=g) * 2 if analog else _spikes((T, 6, 40), 0.4)
    plan = runtime.compile(model, x)
    assert torch.equal(plan(x), _eager(model, x))
    head = nn.Sequential(model[0], model[1], model[2])  # analog output of the last layer
    torch.testing.assert_close(runtime.compile(head, x)(x), _eager(head, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("K, N, group, p", [
    (40, 1037, None, 0.4),   # three output tiles, the last one odd and partial
    (300, 513, 64, 0.5),     # scale groups: the fold runs once per group of listed inputs
    (4500, 20, None, 1.0),   # 4500 inputs active in one row: the uint16 lanes are flushed
])
@pytest.mark.parametrize("dense_threshold", [1.0, 0.3])
def test_spike_lists_to_int4_linear(K, N, group, p, dense_threshold, monkeypatch):
    """Spikes reach an int4 layer as active-input lists (the plan's own kernel): bit-identical
    to eager and to the plan with dense fp32 spikes (SSNN_SPIKE_LISTS=0), also above
    dense_threshold (then the dense kernel runs)."""
    from sparsesnn.quant import QuantSpec

    torch.manual_seed(4)
    fc = nn.Linear(K, N)
    # IF(threshold 1) fed with 0 / 2 fires exactly where the input is 2: spikes of density p.
    model = nn.Sequential(IF(), PackedSpikingLinear.from_float(
        fc, QuantSpec(4, group_size=group), layout="dense", dense_threshold=dense_threshold)).eval()
    x = _spikes((T, 3, K), p, seed=K) * 2
    want = _eager(model, x)
    got = runtime.compile(model, x)(x)
    monkeypatch.setenv("SSNN_SPIKE_LISTS", "0")
    dense_spikes = runtime.compile(model, x)(x)
    assert torch.equal(_eager(model[:1], x), x / 2)
    assert torch.equal(got, dense_spikes)
    assert torch.equal(got, want)


@pytest.mark.parametrize("order", ["ascending", "shuffled"])
@pytest.mark.parametrize("group", [None, 8])
def test_encoder_lists_nested_or_not(order, group, monkeypatch):
    """The thermometer encoder hands fc1 nested lists (each step only adds the inputs that
    step activates) when its thresholds ascend and fc1 has one scale group; otherwise plain
    lists. Both are bit-identical to eager and to fp32 spike maps, inputs at the thresholds too."""
    from sparsesnn.quant import QuantSpec

    d = _mlp()
    if order == "shuffled":
        d.thresholds.copy_(d.thresholds.flatten()[torch.tensor([2, 0, 3, 1])].view_as(d.thresholds))
    fc1 = d.fc1.dequantized_weight()
    lin = nn.Linear(fc1.shape[1], fc1.shape[0])
    with torch.no_grad():
        lin.weight.copy_(fc1)
        lin.bias.copy_(d.fc1.bias)
    d.fc1 = PackedSpikingLinear.from_float(lin, QuantSpec(4, group_size=group), layout="dense")
    x = torch.rand(11, 16, generator=torch.Generator().manual_seed(6))
    x[0, :4] = d.thresholds.flatten()  # exactly at a threshold: not active there
    x[1, :3] = float("nan")  # never active
    want = _eager(d, x)
    got = runtime.compile(d, x[:1])(x)
    monkeypatch.setenv("SSNN_SPIKE_LISTS", "0")
    assert torch.equal(got, runtime.compile(d, x[:1])(x))
    assert torch.equal(got, want)


@pytest.mark.parametrize("neuron", [
    lambda: LIF(tau=3.0, decay_input=False),
    lambda: LIF(v_reset=None),
    lambda: IF(v_threshold=0.7),
    lambda: PLIF(init_tau=2.5),
    lambda: LIF().quantize_state(FixedPoint(12, 6, "nearest")),
    lambda: LIF(tau=3.0).quantize_state(FixedPoint(8, 4, "truncate")),
    lambda: PLIF().quantize_state(FixedPoint(16, 8, "stochastic", seed=7)),
    lambda: IF(v_reset=None).quantize_state(FixedPoint(10, 5, "stochastic", seed=3)),
], ids=["lif_nodecayin", "lif_soft", "if", "plif", "fx_nearest", "fx_trunc", "plif_fx_stoch", "if_fx_stoch"])
def test_neurons_and_fixed_point_state_exact(neuron):
    torch.manual_seed(2)
    fc, fc2 = nn.Linear(30, 50), nn.Linear(50, 20)
    with torch.no_grad():
        fc.weight.mul_(3.0)
        fc2.weight.abs_().mul_(8.0)  # excitatory: the second layer fires for every neuron type
    model = deploy(nn.Sequential(fc, neuron(), fc2, neuron()), default_bits=8)
    x = torch.rand(T, 5, 30) * 2
    hidden = model[:2]
    got_h, want_h = runtime.compile(hidden, x)(x), _eager(hidden, x)
    got, want = runtime.compile(model, x)(x), _eager(model, x)
    assert want_h.sum() > 0 and torch.equal(got_h, want_h)
    assert torch.equal(got, want)


@pytest.mark.parametrize("bits", ["int4", "int8", None])
def test_conv_model(bits):
    torch.manual_seed(3)
    c1, c2 = nn.Conv2d(2, 6, 3, padding=1), nn.Conv2d(6, 5, 3, stride=2, padding=1, dilation=1)
    with torch.no_grad():
        c1.weight.mul_(3.0)
        c1.bias.fill_(0.6)
        c2.weight.abs_().mul_(6.0)  # excitatory: the second conv fires
    model = deploy(nn.Sequential(c1, LIF(), c2, LIF(), nn.Dropout(0.2)), default_bits=bits)
    for batch in (1, 7):
        x = torch.rand(T, batch, 2, 9, 8)
        plan = runtime.compile(model, x)
        got, want = plan(x), _eager(model, x)
        assert want.sum() > 0 and torch.equal(got, want)


@pytest.mark.parametrize("bits", ["int4", "int8"])
def test_pruned_conv_layout(bits):
    """A tap-pruned conv (the pruned layout) runs in the plan on zero-filled dense rows."""
    from sparsesnn.nn import PackedSpikingConv2d
    from sparsesnn.ops.pruned_conv2d import tap_mask

    torch.manual_seed(4)
    c1, c2 = nn.Conv2d(2, 6, 3, padding=1), nn.Conv2d(6, 5, 3, padding=1)
    with torch.no_grad():
        c1.weight.mul_(3.0)
        c1.bias.fill_(0.6)
        c2.weight.abs_().mul_(6.0)
    p2 = PackedSpikingConv2d.from_float(c2, bits, mask=tap_mask(c2.weight, 0.8))
    assert p2.layout == "pruned"
    model = nn.Sequential(PackedSpikingConv2d.from_float(c1, bits), LIF(), p2, LIF())
    x = torch.rand(T, 3, 2, 9, 8)
    got, want = runtime.compile(model, x)(x), _eager(model, x)
    assert want.sum() > 0 and torch.equal(got, want)


def test_unsupported_module_named():
    model = deploy(nn.Sequential(nn.Linear(8, 8), nn.Sequential(LIF(), nn.ReLU())), default_bits=4)
    with pytest.raises(ValueError, match=r"'1\.1' of type torch\.nn\.modules\.activation\.ReLU"):
        runtime.compile(model, torch.zeros(T, 1, 8))
    with pytest.raises(ValueError, match="step_mode"):
        runtime.compile(nn.Sequential(LIF(step_mode="s")), torch.zeros(T, 1, 8))


def test_bad_call_arguments():
    plan = runtime.compile(_mlp(), torch.rand(1, 16))
    with pytest.raises(ValueError, match=r"expected shape \('B', 16\)"):
        plan(torch.rand(2, 15))
    with pytest.raises(ValueError, match="expected shape"):
        plan(torch.rand(0, 16))
    spike_only = deploy(nn.Sequential(nn.Linear(8, 4)), default_bits=4)
    spike_only[0].input_mode = "spike"
    p = runtime.compile(spike_only, torch.zeros(T, 1, 8))
    with pytest.raises(ValueError, match="not binary"):
        p(torch.full((T, 1, 8), 0.5))


def test_threads_share_one_plan():
    d = _mlp()
    plan = runtime.compile(d, torch.rand(1, 16))
    xs = [torch.rand(b, 16, generator=torch.Generator().manual_seed(b)) for b in (1, 5, 33, 64, 2, 9)]
    want = [plan(x) for x in xs]
    errors: list[str] = []

    def work(i):
        for _ in range(20):
            j = (i + _) % len(xs)
            if not torch.equal(plan(xs[j]), want[j]):
                errors.append(f"thread {i} batch {xs[j].shape[0]}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_export_load_roundtrip(tmp_path, monkeypatch):
    from sparsesnn.runtime import _lower

    monkeypatch.setattr(_lower, "PRUNED_TO_DENSE", False)
    d = _mlp()
    x = torch.rand(7, 16)
    path = tmp_path / "m.ssnnp"
    size = runtime.export(d, path, x[:1])
    data = path.read_bytes()
    assert size == len(data) and data[:8] == b"SSNNPLAN" and b"torch" not in data
    assert data == runtime.to_bytes(d, x[:1])  # deterministic
    torch.testing.assert_close(runtime.load(path)(x), _eager(d, x), atol=1e-5, rtol=1e-5)
    # fc2 gets spikes, so the plan keeps only the blocked layout the spike kernel reads
    blocks = cpu_blocks(d.fc2.row_ptr, d.fc2.index, d.fc2.values, d.fc2.bits, d.fc2.out_features)
    want = (d.fc1.model_bytes() + d.fc3.model_bytes() + d.fc2.scale.numel() * 4 + d.fc2.bias.numel() * 4
            + sum(t.numel() * t.element_size() for t in blocks))
    assert runtime.compile(d, x).weight_bytes() == want


def test_file_names_do_not_decide(tmp_path):
    """Plans are named *.ssnnp by convention, but the header decides: any name loads, and a
    model file of deploy.save (*.ssnn) is refused with a hint, never run."""
    from sparsesnn.deploy import save

    d = _mlp()
    x = torch.rand(3, 16)
    assert runtime.PLAN_SUFFIX == ".ssnnp"
    runtime.export(d, tmp_path / "plan.bin", x[:1])
    torch.testing.assert_close(runtime.load(tmp_path / "plan.bin")(x), _eager(d, x), atol=1e-5, rtol=1e-5)
    save(d, tmp_path / "model.ssnn")
    with pytest.raises(ValueError, match="model file .*deploy.load"):
        runtime.load(tmp_path / "model.ssnn")


def _small_plan() -> bytes:
    torch.manual_seed(4)
    fc1, fc2 = nn.Linear(12, 20), nn.Linear(20, 6)
    _prune(fc2, 0.3)
    conv = nn.Conv2d(1, 3, 3)
    d = deploy(nn.Sequential(fc1, PLIF(), fc2, LIF().quantize_state(FixedPoint(12, 6))), default_bits=4)
    c = deploy(nn.Sequential(conv, LIF()), default_bits=2)
    return runtime.to_bytes(d, torch.zeros(T, 1, 12)), runtime.to_bytes(c, torch.zeros(T, 1, 1, 5, 5))


def test_truncated_and_corrupted_files_give_errors():
    from sparsesnn.runtime._lib import Handle

    for data in _small_plan():
        Handle(data)  # the intact file loads
        for n in range(len(data)):  # every truncation
            with pytest.raises(ValueError, match=r"^sparsesnn runtime \(format error\)"):
                Handle(data[:n])
        rng = random.Random(0)
        for _ in range(400):  # random bit flips and byte garbage
            b = bytearray(data)
            for bit in rng.sample(range(8 * len(b)), rng.choice((1, 1, 2, 8))):  # distinct bits
                b[bit // 8] ^= 1 << (bit % 8)
            with pytest.raises(ValueError, match=r"^sparsesnn runtime \((format|version) error\)"):
                Handle(bytes(b))
        with pytest.raises(ValueError, match="trailing|checksum"):
            Handle(data + b"\0")


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


def test_crafted_files_with_valid_checksum_rejected():
    from sparsesnn.runtime._lib import Handle
    from sparsesnn.runtime import _format as F

    def plan(payload: F.Payload, kind=F.LINEAR, dims=(4,)):
        return F.write_plan(T, True, dims, [(kind, payload.bytes())])

    def linear(row_ptr, index, N=3, K=4):
        return (F.Payload().u32(K, N, 32, 0, 1, 0).f32(1.0).tensor(None).tensor(None)
                .tensor(torch.tensor(row_ptr, dtype=torch.int32), torch.int32)
                .tensor(torch.tensor(index, dtype=torch.int32), torch.int32)
                .tensor(torch.ones(len(index))).u32(0))

    Handle(plan(linear([0, 1, 1, 2, 2], [0, 2])))  # valid
    bad = {"out of range": linear([0, 1, 1, 2, 2], [0, 3]),
           "non-decreasing": linear([0, 2, 1, 2, 2], [0, 1]),
           "ascending": linear([0, 2, 2, 2, 2], [1, 1]),
           "expected dtype": linear([0, 1, 1, 2, 3], [0, 2])}
    for msg, payload in bad.items():
        with pytest.raises(ValueError, match=msg):
            Handle(plan(payload))
    with pytest.raises(ValueError, match="unknown op kind"):
        Handle(plan(F.Payload(), kind=99))
    with pytest.raises(ValueError, match="time-major"):
        Handle(F.write_plan(T, False, (4,), [(F.NEURON, F.Payload().u32(1, 1, 1).f32(.5, 1, 0)
                                                        .u32(0, 0, 0).f32(0, 0, 0).bytes())]))
    with pytest.raises(ValueError, match="version"):
        Handle(_with_crc(b"SSNNPLAN" + struct.pack("<I", 99) + bytes(40)))
    with pytest.raises(ValueError, match="magic"):
        Handle(b"PK\x03\x04" + bytes(100))


def _conv_models():
    from sparsesnn.models import SEWResNet, SpikingLeNet, SpikingVGG

    return {
        "vgg_direct": (lambda: SpikingVGG([8, "M", 16, "A", 16], 3, 10, T, image_size=12, hidden=(24,),
                                          dropout=0.1, encoder="direct"), (3, 12, 12)),
        "vgg_rate_plif": (lambda: SpikingVGG([8, "M", 16], 3, 10, T, image_size=12, encoder="rate",
                                             neuron="plif"), (3, 12, 12)),
        "lenet": (lambda: SpikingLeNet(1, 10, T), (1, 28, 28)),
        "sew_add": (lambda: SEWResNet((1, 1), (8, 16), 3, 10, T, connect="ADD"), (3, 10, 10)),
        "sew_and_rate": (lambda: SEWResNet((1, 1), (8, 16), 3, 10, T, connect="AND", encoder="rate"), (3, 10, 10)),
        "sew_iand_if": (lambda: SEWResNet((2,), (8,), 3, 10, T, connect="IAND", neuron="if"), (3, 10, 10)),
    }


@pytest.mark.parametrize("name", list(_conv_models()))
def test_conv_models_match_eager(name):
    from sparsesnn.nn import BaseNeuron, BatchNorm2d

    make, shape = _conv_models()[name]
    torch.manual_seed(5)
    model = make()
    with torch.no_grad():  # BN statistics as after training, and weights that make neurons fire
        for m in model.modules():
            if isinstance(m, BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(1.0, 3.0)
                m.bias.uniform_(0.0, 0.5)
            elif getattr(m, "weight", None) is not None and m.weight.dim() in (2, 4):
                m.weight.abs_().mul_(2.0)  # excitatory: every layer fires
    d = deploy(model.eval(), default_bits=4)
    spikes = []
    for m in d.modules():
        if isinstance(m, BaseNeuron):
            m.register_forward_hook(lambda mod, i, o: spikes.append(float(o.sum())))
    for batch in (1, 6):
        x = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(batch))
        plan = runtime.compile(d, x[:1])
        got = plan(x)
        spikes.clear()
        want = _eager(d, x)
        assert all(s > 0 for s in spikes), spikes  # every spiking layer fires
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        assert torch.equal(got.argmax(1), want.argmax(1))


def test_unfolded_batchnorm_named():
    from sparsesnn.models import SpikingVGG

    model = SpikingVGG([4], 3, 10, T, image_size=8).eval()
    with pytest.raises(ValueError, match=r"'stem\.0' of type sparsesnn\.nn\.conv\.SpikingConv2d"):
        runtime.compile(model, torch.rand(1, 3, 8, 8))
