"""Argument checks of the ops that the CUDA path relies on, run on CPU: every tensor on the
input's device, pack widths, binary input for spike=True, and CUDA tests failing (not
skipping) when a GPU is present but the CUDA kernels are missing."""
import pytest
import torch

from sparsesnn import _ext
from sparsesnn.nn import PackedSpikingConv2d, PackedSpikingLinear
from sparsesnn.ops import _checks
from sparsesnn.ops.pack import pack_op, unpack_op
from sparsesnn.ops.packed_conv2d import packed_conv2d_op
from sparsesnn.ops.packed_linear import packed_linear_op
from sparsesnn.ops.pruned_linear import pruned_linear_op

from conftest import check_cuda_kernels_built


@pytest.mark.parametrize("bits", [0, 3, 16, -1])
def test_pack_rejects_bad_bits(backend, bits):
    codes = torch.zeros(4, 3, dtype=torch.int8)
    with pytest.raises(ValueError, match=rf"bits: expected one of \(1, 2, 4, 8\), got {bits}"):
        pack_op(codes, bits)
    with pytest.raises(ValueError, match="bits: expected one of"):
        unpack_op(torch.zeros(3, 1, dtype=torch.uint8), bits, 4)


def _body(op):
    """The op's Python body: tensors on two devices would otherwise be routed to the fake
    (meta) implementation here, while on a GPU machine they reach this body."""
    return op._init_fn


def _linear(mask=None):
    torch.manual_seed(0)
    return PackedSpikingLinear.from_float(torch.nn.Linear(8, 6), "int4", mask=mask)


@pytest.mark.parametrize("name", ["weights", "scale", "bias"])
def test_packed_linear_checks_every_device(name):
    m = _linear()
    args = {"weights": m.weights, "scale": m.scale, "bias": m.bias}
    args[name] = args[name].to("meta")  # another device, no GPU needed
    x = torch.zeros(2, 8)
    with pytest.raises(ValueError, match=f"{name}: expected device cpu \\(same as x\\), got meta"):
        _body(packed_linear_op)(x, args["weights"], args["scale"], args["bias"], 4, 6, 0, True)


@pytest.mark.parametrize("name", ["row_ptr", "index", "values", "scale", "bias"])
def test_pruned_linear_checks_every_device(name):
    m = _linear(mask=torch.rand(6, 8) < 0.5)
    args = {k: getattr(m, k) for k in ("row_ptr", "index", "values", "scale", "bias")}
    args[name] = args[name].to("meta")
    with pytest.raises(ValueError, match=f"{name}: expected device cpu"):
        _body(pruned_linear_op)(torch.zeros(2, 8), args["row_ptr"], args["index"], args["values"],
                         args["scale"], args["bias"], 4, 6, 0, True)


def test_packed_conv2d_checks_every_device():
    m = PackedSpikingConv2d.from_float(torch.nn.Conv2d(2, 3, 3), "int8")
    with pytest.raises(ValueError, match="scale: expected device cpu"):
        _body(packed_conv2d_op)(torch.zeros(1, 2, 5, 5), m.weights, m.scale.to("meta"), m.bias, 8, 3,
                         [3, 3], [1, 1], [0, 0], [1, 1], 0, True)


@pytest.mark.parametrize("pruned", [False, True])
def test_spike_mode_rejects_analog_input_on_cpu(backend, pruned):
    """spike=True means binary x; the CPU kernels would count 0.5 as 1."""
    m = _linear(mask=torch.rand(6, 8) < 0.5 if pruned else None)
    x = torch.zeros(3, 8)
    x[1, 2] = 0.5
    with pytest.raises(ValueError, match="x: expected binary spikes .* found value 0.5"):
        if pruned:
            pruned_linear_op(x, m.row_ptr, m.index, m.values, m.scale, m.bias, 4, 6, 0, True)
        else:
            packed_linear_op(x, m.weights, m.scale, m.bias, 4, 6, 0, True)
    # analog input with spike=False, and binary input with spike=True, are fine
    packed_linear_op(x, m.weights if not pruned else _linear().weights, m.scale, m.bias, 4, 6, 0, False)
    packed_linear_op((x > 0).float(), _linear().weights, m.scale, m.bias, 4, 6, 0, True)


def test_data_checks_are_always_on_for_cpu(monkeypatch):
    monkeypatch.setattr(_checks, "CUDA_CHECKS", False)
    assert _checks.data_checks(torch.zeros(1))


def test_cuda_tests_fail_when_kernels_are_missing(monkeypatch):
    """With a GPU, CUDA tests must fail when the kernels were not built: the fixture they all
    use raises pytest's failure, not a skip."""
    monkeypatch.setattr(_ext, "_C", None)
    with pytest.raises(pytest.fail.Exception, match="CUDA kernels were not built"):
        check_cuda_kernels_built()
