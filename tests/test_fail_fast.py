"""Fail fast: every CLI/demo setting is checked before any work; sizes that cannot fit in memory
get a ValueError naming the argument instead of an allocator error."""
import pytest
import torch

import sparsesnn.demo as demo
from sparsesnn.cli import main
from sparsesnn.demo import DemoConfig
from sparsesnn.nn import PackedSpikingConv2d, PackedSpikingLinear, SpikingConv2d, SpikingLinear


@pytest.fixture
def no_work(monkeypatch):
    """Any data loading or training is a failure: validation must come first."""
    def boom(*a, **k):
        raise AssertionError("work started before the arguments were validated")
    monkeypatch.setattr(demo, "fit", boom)
    monkeypatch.setattr(demo, "_load", boom)


@pytest.mark.parametrize("argv, message", [
    (["--bits", "7"], r"bits: expected one of \(8, 6, 5, 4, 3, 2, 'ternary', 'binary'\), got 7"),
    (["--bits", "int3"], r"bits: expected one of .* got 'int3'"),
    (["--T", "0"], r"T: expected an integer >= 1, got 0"),
    (["--sparsity", "1.5"], r"sparsity\['fc1'\]: expected a sparsity in \[0, 1\), got 1.5"),
    (["--hidden", "0"], r"hidden: expected one or more widths in \[1, 65536\], got \(0,\)"),
    (["--epochs", "-1"], r"epochs: expected an integer >= 0, got -1"),
    (["--threads", "0"], r"threads: expected an integer >= 1, got 0"),
    (["--activity", "-0.5"], r"activity: expected a number >= 0, got -0.5"),
    (["--activity", "nan"], r"activity: expected a finite number, got nan"),
    (["--data", "mnist"], r"path: --data mnist needs --path DIR"),
    (["--data", "mnist", "--path", "/nonexistent/mnist"], r"path: '/nonexistent/mnist' is not a directory"),
])
def test_cli_rejects_before_any_work(no_work, capsys, argv, message):
    import re
    assert main(["demo", "--no-progress", *argv]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err


def test_run_validates_config_first(no_work):
    with pytest.raises(ValueError, match=r"sparsity: unknown layer 'fc9'; the model has \['fc1', 'fc2', 'fc3'\]"):
        demo.run(DemoConfig(sparsity={"fc9": 0.5}))


def test_cli_hidden_adapts_sparsity_layers():
    # one hidden layer -> layers fc1, fc2 (the default sparsity dict names fc3)
    cfg = DemoConfig(hidden=(32,), sparsity={"fc1": 0.0, "fc2": 0.0})
    assert cfg.validate() is cfg


@pytest.mark.parametrize("build, message", [
    (lambda: PackedSpikingLinear(10**6, 10**6, spec=4), r"in_features\*out_features: the weight would need 3725\.3 GiB"),
    (lambda: SpikingLinear(10**6, 10**6), r"in_features\*out_features: the weight would need"),
    (lambda: PackedSpikingConv2d(1, 1, 10**6, spec=4), r"kernel_size: the weight would need"),
    (lambda: SpikingConv2d(4096, 4096, 10**3), r"kernel_size: the weight would need"),
    (lambda: PackedSpikingLinear(-1, 3), r"in_features: expected an integer >= 0, got -1"),
])
def test_huge_or_negative_sizes(build, message):
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize("layer", [
    lambda: PackedSpikingConv2d(2, 4, 3, padding=300000, spec=4),
    lambda: SpikingConv2d(2, 4, 3, padding=300000, mode="dense"),
    lambda: SpikingConv2d(2, 4, 3, padding=300000, mode="event"),
])
def test_huge_padding_names_padding(layer):
    x = (torch.rand(1, 2, 4, 4) > 0.5).float()
    with pytest.raises(ValueError, match=r"padding: the output \[1, 4, 600002, 600002\] would need 5364\.5 GiB"):
        layer()(x)


def test_functional_spike_conv2d_huge_padding():
    from sparsesnn.functional import spike_conv2d
    with pytest.raises(ValueError, match=r"padding: the output \[1, 4, 600002, 600002\]"):
        spike_conv2d((torch.rand(1, 2, 4, 4) > 0.5).float(), torch.randn(4, 2, 3, 3), padding=300000)


def _plan_bytes(T: int, dims: tuple[int, ...], n_repeat_ops: int = 1) -> bytes:
    """A hand-made plan file (csrc/runtime/format.h): header, REPEAT ops (no payload), CRC-32."""
    import struct
    import zlib

    body = b"SSNNPLAN" + struct.pack("<5I", 1, 0, T, 0, len(dims)) + struct.pack(f"<{len(dims)}q", *dims)
    body += struct.pack("<I", n_repeat_ops) + struct.pack("<IQ", 2, 0) * n_repeat_ops
    return body + struct.pack("<I", zlib.crc32(body))


def test_runtime_plan_declaring_absurd_activations_is_refused_at_load():
    """T x activations beyond 2^32 floats per sample: a format error at load naming the size,
    not an allocator failure (or an out-of-memory kill) at the first call."""
    from sparsesnn.runtime import _lib

    _lib.Handle(_plan_bytes(65536, (65536,)))  # exactly 2^32 floats: accepted
    with pytest.raises(ValueError, match=r"^sparsesnn runtime \(format error\): op 0: activations need "
                                         r"4295032832 floats per sample \(T = 65536\), more than the 2\^32"):
        _lib.Handle(_plan_bytes(65536, (65537,)))
