"""Safe model files: bit-exact round trips, no code from the file, every malformed file a ValueError."""
import json
import os
import pickle
import random
import struct

import pytest
import torch
from torch import nn

from sparsesnn import FixedPoint, model_file
from sparsesnn.deploy import convert_legacy, deploy, load, save
from sparsesnn.models import SpikingMLP
from sparsesnn.nn import IF, LIF, PLIF, PackedSpikingConv2d, PackedSpikingLinear, SpikingConv2d, SpikingLinear

FORMATS = [None, 8, 4, 2, "ternary", "binary"]


def _same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k, v in sa.items():
        if isinstance(v, torch.Tensor):
            assert v.dtype == sb[k].dtype and torch.equal(v, sb[k]), k
        else:
            assert v == sb[k], k


def _roundtrip(m: nn.Module) -> nn.Module:
    m2 = model_file.loads(model_file.dumps(m))
    assert type(m2) is type(m)
    _same_state(m, m2)
    return m2


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("group_size", [None, 16])
def test_packed_linear_roundtrip_bit_exact(fmt, group_size):
    lin = nn.Linear(40, 70)
    spec = None if fmt is None else model_file_spec(fmt, group_size)
    spikes = (torch.rand(3, 40) > 0.6).float()
    analog = torch.randn(3, 40)
    for mask in (None, torch.rand(70, 40) > 0.7):
        m = PackedSpikingLinear.from_float(lin, spec, mask=mask)
        assert m.layout == ("dense" if mask is None else "pruned")
        m2 = _roundtrip(m)
        assert (m2.layout, m2.format, m2.group_size) == (m.layout, m.format, m.group_size)
        assert torch.equal(m(spikes), m2(spikes)) and torch.equal(m(analog), m2(analog))


def model_file_spec(fmt, group_size):
    from sparsesnn.quant import QuantSpec
    return QuantSpec(fmt if isinstance(fmt, str) else {8: "int8", 4: "int4", 2: "int2"}[fmt],
                     group_size=group_size)


@pytest.mark.parametrize("fmt", FORMATS)
def test_packed_conv_roundtrip_bit_exact(fmt):
    conv = nn.Conv2d(3, 6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2))
    m = PackedSpikingConv2d.from_float(conv, fmt)
    m2 = _roundtrip(m)
    x = (torch.rand(2, 3, 9, 8) > 0.5).float()
    assert m2.kernel_size == m.kernel_size and m2.dilation == m.dilation
    assert torch.equal(m(x), m2(x))


@pytest.mark.parametrize("fmt", [None, 8, 4, 2, "ternary"])
def test_pruned_conv_roundtrip_and_index_checked(fmt):
    from sparsesnn.ops.pruned_conv2d import tap_mask
    conv = nn.Conv2d(4, 6, 3, padding=1)
    m = PackedSpikingConv2d.from_float(conv, fmt, mask=tap_mask(conv.weight, 0.75))
    assert m.layout == "pruned"
    m2 = _roundtrip(m)
    x = (torch.rand(2, 4, 7, 6) > 0.5).float()
    assert m2.layout == "pruned" and torch.equal(m(x), m2(x))
    m.index[0] = 36  # a tap row past C*KH*KW: would read outside the input in the kernel
    with pytest.raises(ValueError, match=r"model: index: tap rows must be increasing and lie in \[0, 36\)"):
        model_file.loads(model_file.dumps(m))


@pytest.mark.parametrize("name", ["lenet", "vgg", "sew_add", "sew_iand_rate"])
def test_conv_models_roundtrip_float_and_deployed(name):
    from sparsesnn.models import SEWResNet, SpikingLeNet, SpikingVGG
    torch.manual_seed(0)
    model = {"lenet": lambda: SpikingLeNet(1, 10, 4, image_size=8),
             "vgg": lambda: SpikingVGG([8, "M", 16, "A"], 1, 10, 4, image_size=8, hidden=[16], dropout=0.1),
             "sew_add": lambda: SEWResNet((1, 1), (8, 16), 1, 10, 4),
             "sew_iand_rate": lambda: SEWResNet((1, 1), (8, 16), 1, 10, 4, connect="IAND",
                                                encoder="rate")}[name]().eval()
    x = torch.rand(3, 1, 8, 8)
    for m in (model, deploy(model, default_bits=4).eval()):
        m2 = _roundtrip(m).eval()
        with torch.no_grad():
            assert torch.equal(m(x), m2(x))


def test_neurons_fixed_point_and_settings_roundtrip():
    model = nn.Sequential(
        LIF(tau=3.0, v_reset=None, decay_input=False, surrogate="atan", alpha=3.5)
        .quantize_state(FixedPoint(12, 6, "stochastic", seed=7)),
        IF(v_threshold=0.75, detach_reset=True, step_mode="m").quantize_state(FixedPoint(10, 4, "truncate")),
        PLIF(init_tau=4.0, surrogate="sigmoid", alpha=2.5))
    with torch.no_grad():
        model[2].w.fill_(0.3125)
    m2 = _roundtrip(model)
    for a, b in zip(model, m2):
        assert a.extra_repr() == b.extra_repr() and a.state_quant == b.state_quant
    x = torch.rand(6, 2, 9) * 2
    assert torch.equal(model(x), m2(x))


def test_torch_and_spiking_modules_roundtrip():
    model = nn.Sequential(SpikingConv2d(2, 4, 3, padding=1, mode="event"), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), SpikingLinear(16, 5, break_even=0.25),
                          nn.Dropout(0.1), nn.Conv1d(1, 2, 3) if False else nn.Identity())
    model[1].running_mean.uniform_()
    model[1].num_batches_tracked.fill_(7)
    model.eval()
    m2 = _roundtrip(model)
    assert m2[5].break_even == 0.25 and m2[0].mode == "event"
    x = (torch.rand(3, 2, 4, 4) > 0.5).float()
    assert torch.equal(model(x), m2(x))


def test_demo_model_deployed_roundtrip(tmp_path):
    from sparsesnn.compress import ADMM
    torch.manual_seed(0)
    mlp = SpikingMLP(16, (48,), 4, T=3, init_gain=4.0)
    ADMM(mlp, {"fc1": {"sparsity": 0.8, "bits": 4}, "fc2": {"bits": "ternary"}}).finalize()
    mlp.lif1.quantize_state(FixedPoint(12, 6))
    dep = deploy(mlp)
    save(dep, tmp_path / "m.ssnn")
    dep2 = load(tmp_path / "m.ssnn")
    _same_state(dep, dep2)
    x = torch.rand(5, 16)
    assert torch.equal(dep(x), dep2(x))
    assert not dep2.training and dep2.T == 3 and torch.equal(dep2.thresholds, dep.thresholds)


# ---- hostile files ----------------------------------------------------------------------------
class _Payload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_pickle_payload_never_runs(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    obj = {"format": "sparsesnn.deployed/1", "model": _Payload(str(marker))}
    if writer == "torch":
        torch.save(obj, path)
    else:
        path.write_bytes(pickle.dumps(obj))
    with pytest.raises(ValueError, match=r"pickle-based file .*sparsesnn\.deploy\.convert_legacy\(path, out_path, trust=True\)"):
        load(path)
    assert not marker.exists()


def test_legacy_file_converts_only_with_trust(tmp_path):
    m = PackedSpikingLinear.from_float(nn.Linear(8, 4), 4)
    torch.save({"format": "sparsesnn.deployed/1", "model": m}, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="pickle-based"):
        load(tmp_path / "old.pt")
    with pytest.raises(ValueError, match="trust: converting a pickle-based file"):
        convert_legacy(tmp_path / "old.pt", tmp_path / "new.ssnn")
    convert_legacy(tmp_path / "old.pt", tmp_path / "new.ssnn", trust=True)
    _same_state(m, load(tmp_path / "new.ssnn"))


def _small_file() -> bytes:
    m = nn.Sequential(PackedSpikingLinear.from_float(nn.Linear(12, 20), 4, mask=torch.rand(20, 12) > 0.5),
                      LIF(), PackedSpikingConv2d.from_float(nn.Conv2d(2, 3, 3), "ternary"))
    return model_file.dumps(m)


def _split(data: bytes):
    (hlen,) = struct.unpack("<Q", data[8:16])
    return json.loads(data[16:16 + hlen]), data[16 + hlen:]


def _join(header: dict, rest: bytes) -> bytes:
    h = json.dumps(header).encode()
    head = model_file.MAGIC + struct.pack("<Q", len(h)) + h
    return head + b"\0" * (-len(head) % 64) + rest.lstrip(b"\0")  # re-align the data section


def _edited(edit) -> bytes:
    data = _small_file()
    header, rest = _split(data)
    edit(header)
    (hlen,) = struct.unpack("<Q", data[8:16])
    start = 16 + hlen + (-(16 + hlen) % 64)
    h = json.dumps(header).encode()
    head = model_file.MAGIC + struct.pack("<Q", len(h)) + h
    return head + b"\0" * (-len(head) % 64) + data[start:]


def test_unknown_version_and_type_and_magic():
    with pytest.raises(ValueError, match=r"unsupported model file version 2 \(this sparsesnn reads version 1\)"):
        model_file.loads(_edited(lambda h: h.update(version=2)))
    with pytest.raises(ValueError, match=r"model\.0\.type: unknown module type 'os\.system'"):
        model_file.loads(_edited(lambda h: h["model"]["children"][0]["node"].update(type="os.system")))
    with pytest.raises(ValueError, match="not a sparsesnn model file"):
        model_file.loads(b"GIF89a" + bytes(40))


def test_shape_mismatch_and_bad_settings():
    def shrink(h):
        h["model"]["children"][2]["node"]["config"]["out_channels"] = 4
    with pytest.raises(ValueError, match=r"model\.2: scale: shape mismatch: the description needs \(4, 1\) torch\.float32, the file holds \(3, 1\)"):
        model_file.loads(_edited(shrink))

    def bad_index(h):  # claims 21 outputs... index buffer of a pruned layer is checked on content
        h["model"]["children"][0]["node"]["config"]["in_features"] = 13
    with pytest.raises(ValueError, match=r"model\.0: row_ptr: shape mismatch: the description needs \(14,\)"):
        model_file.loads(_edited(bad_index))

    def bad_tau(h):
        h["model"]["children"][1]["node"]["config"]["tau"] = 0.5
    with pytest.raises(ValueError, match=r"model\.1: invalid sparsesnn\.LIF settings: tau: expected a number > 1"):
        model_file.loads(_edited(bad_tau))

    def huge(h):
        h["model"]["children"][0]["node"]["config"]["out_features"] = 2**35
    with pytest.raises(ValueError, match=r"model\.0: out_features: expected an integer in \[1, 2\*\*31\)"):
        model_file.loads(_edited(huge))

    def enormous(h):
        h["model"]["children"][1]["node"]["config"]["v_threshold"] = 10**300
    with pytest.raises(ValueError, match=r"model\.1\.config\.v_threshold: integer 1000\d+ is out of range"):
        model_file.loads(_edited(enormous))


def test_unknown_packed_setting_rejected():
    def extra(h):
        h["model"]["children"][0]["node"]["config"]["forward"] = "x"
    with pytest.raises(ValueError, match=r"model\.0: config: unknown settings \['forward'\]"):
        model_file.loads(_edited(extra))


def test_pruned_index_contents_checked():
    m = PackedSpikingLinear.from_float(nn.Linear(6, 5), None, mask=torch.rand(5, 6) > 0.3)
    m.index[0] = 9  # >= out_features: would read outside the output row in the kernel
    with pytest.raises(ValueError, match=r"model: index: output indices must lie in \[0, 5\)"):
        model_file.loads(model_file.dumps(m))
    m = PackedSpikingLinear.from_float(nn.Linear(6, 5), None, mask=torch.rand(5, 6) > 0.3)
    m.row_ptr[2] = 100
    with pytest.raises(ValueError, match="model: row_ptr: expected non-decreasing offsets"):
        model_file.loads(model_file.dumps(m))


def _pruned_with_rows(mask: torch.Tensor) -> PackedSpikingLinear:
    return PackedSpikingLinear.from_float(nn.Linear(mask.shape[1], mask.shape[0]), None, mask=mask)


def test_pruned_index_must_ascend_within_each_row():
    mask = torch.ones(5, 6, dtype=torch.bool)
    mask[:, 1] = False  # an empty input row: the next row's first entry may be any index
    mask[2:, 3] = False
    m = _pruned_with_rows(mask)
    assert torch.equal(model_file.loads(model_file.dumps(m)).index, m.index)  # valid file loads
    rp = m.row_ptr.long()
    assert rp[1] == rp[2] and int(m.index[int(rp[2])]) == 0  # row 2 starts at 0 after row 0 ends at 4
    for edit in ("swap", "repeat"):
        bad = _pruned_with_rows(mask)
        a = int(rp[3]) + 1  # inside row 3 (outputs 0, 1): make it [1, 0] or [0, 0]
        if edit == "swap":
            bad.index[a - 1], bad.index[a] = bad.index[a].clone(), bad.index[a - 1].clone()
        else:
            bad.index[a] = bad.index[a - 1]
        with pytest.raises(ValueError, match=rf"^model: index: output indices must be strictly "
                                             rf"ascending within each input row \(entry {a} is not\)"):
            model_file.loads(model_file.dumps(bad))


def test_truncated_files():
    data = _small_file()
    for n in (0, 5, 15, 16, 40, len(data) // 2, len(data) - 1):
        with pytest.raises(ValueError, match=r"^file: |outside the data section|truncated"):
            model_file.loads(data[:n])


def test_unregistered_module_is_refused_on_save():
    class Mine(nn.Module):
        pass
    with pytest.raises(ValueError, match=r"model\.0: module type .*Mine cannot be stored .*register"):
        model_file.dumps(nn.Sequential(Mine()))


def test_thousand_mutated_files_never_crash():
    """1,000 truncated / bit-flipped / byte-overwritten files: each loads or raises ValueError."""
    data = _small_file()
    rng = random.Random(1234)
    outcomes = {"loaded": 0, "ValueError": 0}
    for i in range(1000):
        b = bytearray(data)
        kind = i % 4
        if kind == 0:
            b = b[:rng.randrange(len(b))]
        elif kind == 1:
            for _ in range(rng.randint(1, 8)):
                p = rng.randrange(len(b))
                b[p] ^= 1 << rng.randrange(8)
        elif kind == 2:  # inside the JSON header: digits, quotes, braces
            hlen = struct.unpack("<Q", data[8:16])[0]
            p = 16 + rng.randrange(hlen)
            b[p] = ord(rng.choice('0123456789"{}[],:-e.x'))
        else:
            p = rng.randrange(16)
            b[p] = rng.randrange(256)
        try:
            m = model_file.loads(bytes(b))
        except ValueError:
            outcomes["ValueError"] += 1
        else:
            outcomes["loaded"] += 1
            assert isinstance(m, nn.Module)
    assert outcomes["ValueError"] > 500, outcomes


def test_seed_corpus_files_load():
    """The fuzzing seed corpus in fuzz/corpus stays loadable (regenerate: fuzz/make_corpus.py)."""
    corpus = os.path.join(os.path.dirname(__file__), "..", "fuzz", "corpus")
    files = sorted(os.listdir(corpus))
    assert len(files) >= 4
    for f in files:
        with open(os.path.join(corpus, f), "rb") as fh:
            assert isinstance(model_file.loads(fh.read()), nn.Module)
