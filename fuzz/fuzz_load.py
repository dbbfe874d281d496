"""Coverage-guided fuzzing of the model-file loader (atheris, libFuzzer for Python).

    python fuzz/fuzz_load.py fuzz/corpus -atheris_runs=1000000      # or -max_total_time=SECONDS

Input: the bytes of a model file. ``loads`` must return a module or raise ``ValueError``; any
other exception (or a crash in the compiled kernels) is a finding. A module that loads is also
run on a small binary and a small analog input, so a file that passes validation but would
make a kernel read out of bounds is caught too (run under the ASan build for memory errors).
Mutated files write new seeds into the first corpus directory; use a scratch copy
(``cp -r fuzz/corpus /tmp/corpus``) to keep the repository's seeds small.
"""
import importlib
import sys
import types

import atheris
import torch

from sparsesnn import model_file
from sparsesnn.nn import PackedSpikingConv2d, PackedSpikingLinear

# The editable install loads sparsesnn through a custom finder that atheris.instrument_imports
# does not see, so the loader's code is instrumented function by function (in place).
_MODULES = ("sparsesnn.model_file", "sparsesnn.nn.packed", "sparsesnn.nn.neurons", "sparsesnn.models",
            "sparsesnn.ops._checks", "sparsesnn.quant.spec", "sparsesnn.quant.quantizers",
            "sparsesnn.fixed_point", "sparsesnn.surrogate")


def _instrument(obj, seen: set) -> None:
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, types.FunctionType) and (obj.__module__ or "").startswith("sparsesnn"):
        atheris.instrument_func(obj)
    elif isinstance(obj, type) and obj.__module__.startswith("sparsesnn"):
        for v in vars(obj).values():
            _instrument(getattr(v, "fget", None) or getattr(v, "__func__", None) or v, seen)


_seen: set = set()
for _name in _MODULES:
    for _obj in vars(importlib.import_module(_name)).values():
        _instrument(_obj, _seen)
for _entry in set(model_file._BY_NAME.values()):  # builders/checks registered as closures
    for _f in (_entry.config, _entry.build, _entry.check, _entry.adopt):
        if _f is not None:
            _instrument(_f, _seen)
torch.set_num_threads(1)


def _exercise(model: torch.nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, PackedSpikingLinear) and m.in_features <= 4096 and m.out_features <= 4096:
            for x in ((torch.rand(2, m.in_features) > 0.5).float(), torch.randn(2, m.in_features)):
                try:
                    m(x)
                except ValueError:
                    pass
        elif isinstance(m, PackedSpikingConv2d) and m.in_channels * m.out_channels <= 4096:
            kh, kw = m.kernel_size
            H = m.dilation[0] * (kh - 1) + 1 + 2
            W = m.dilation[1] * (kw - 1) + 1 + 2
            if H * W <= 4096:
                try:
                    m((torch.rand(1, m.in_channels, H, W) > 0.5).float())
                except ValueError:
                    pass


def test_one_input(data: bytes) -> None:
    try:
        model = model_file.loads(data)
    except ValueError:
        return
    _exercise(model)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
