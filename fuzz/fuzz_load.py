"""Coverage-guided fuzzing of the model-file loader (atheris, libFuzzer for Python).

    python fuzz/fuzz_load.py fuzz/corpus -atheris_runs=1000000      # or -max_total_time=SECONDS

Input: the bytes of a model file. ``loads`` must return a module or raise ``ValueError``; any
other exception (or a crash in the compiled kernels) is a finding. A module that loads is also
run on a small binary and a small analog input, so a file that passes validation but would
make a kernel read out of bounds is caught too (run under the ASan build for memory errors).
Mutated files write new seeds into the first corpus directory; use a scratch copy
(``cp -r fuzz/corpus /tmp/corpus``) to keep the repository's seeds small.
"""
import sys

import atheris
import torch  # imported before instrumentation: only sparsesnn code is instrumented

with atheris.instrument_imports():
    from sparsesnn import model_file
    from sparsesnn.nn import PackedSpikingConv2d, PackedSpikingLinear

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
