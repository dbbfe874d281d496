"""examples/c/run_model.c: built with the system C compiler, run without Python, same answers."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from sparsesnn import runtime
from sparsesnn.deploy import deploy
from sparsesnn.models import SpikingMLP

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "c" / "run_model.c"
CC = shutil.which("gcc") or shutil.which("cc")
pytestmark = pytest.mark.skipif(CC is None, reason="no system C compiler")


@pytest.fixture(scope="module")
def run_model(tmp_path_factory):
    try:
        lib = runtime.library_path()
    except runtime.RuntimeLibraryError as e:  # pragma: no cover
        pytest.skip(str(e))
    exe = tmp_path_factory.mktemp("c") / "run_model"
    libdir = os.path.dirname(lib)
    subprocess.run([CC, "-O2", "-Wall", "-Werror", "-std=c99", str(EXAMPLE), "-I", runtime.include_path(),
                    "-L", libdir, "-lsparsesnn_runtime", f"-Wl,-rpath,{libdir}", "-o", str(exe)],
                   check=True, capture_output=True)
    return exe


def _no_env() -> list[str]:
    """``env -i``: the program runs with an empty environment (no Python paths). Under the
    sanitizer build (tools/sanitize_tests.sh) the runtime library is instrumented, so the
    preloaded ASan/UBSan runtimes and their options are kept."""
    keep = [f"{k}={os.environ[k]}" for k in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS")
            if "libasan" in os.environ.get("LD_PRELOAD", "") and k in os.environ]
    return ["env", "-i", *keep]


def _model():
    torch.manual_seed(0)
    m = SpikingMLP(64, (256, 256), 10, T=4, init_gain=4.0)
    with torch.no_grad():
        m.fc2.weight.mul_((torch.rand_like(m.fc2.weight) < 0.1).float() * 5)
    return deploy(m, default_bits=4)


def test_no_python_in_the_process(run_model):
    libs = subprocess.run(["ldd", str(run_model)], capture_output=True, text=True, check=True).stdout
    assert "libsparsesnn_runtime" in libs
    for bad in ("libpython", "libtorch", "libc10", "pybind"):
        assert bad not in libs, libs
    deps = subprocess.run(["ldd", runtime.library_path()], capture_output=True, text=True, check=True).stdout
    assert "libpython" not in deps and "libtorch" not in deps, deps


def test_c_predictions_equal_python(run_model, tmp_path):
    d = _model()
    x = torch.rand(37, 64, generator=torch.Generator().manual_seed(1))
    runtime.export(d, tmp_path / "m.ssnnp", x[:1])
    x.numpy().tofile(tmp_path / "x.f32")
    out = subprocess.run([*_no_env(), str(run_model), str(tmp_path / "m.ssnnp"), str(tmp_path / "x.f32"), "2"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    with torch.inference_mode():
        want = d(x).argmax(1).tolist()
    assert [int(v) for v in out.stdout.split()] == want


def test_c_reports_corrupt_file(run_model, tmp_path):
    d = _model()
    data = bytearray(runtime.to_bytes(d, torch.zeros(1, 64)))
    data[len(data) // 2] ^= 0x10
    (tmp_path / "bad.ssnnp").write_bytes(bytes(data))
    (tmp_path / "short.ssnnp").write_bytes(bytes(data[:100]))
    torch.zeros(2, 64).numpy().tofile(tmp_path / "x.f32")
    for name in ("bad.ssnnp", "short.ssnnp", "missing.ssnnp"):
        out = subprocess.run([*_no_env(), str(run_model), str(tmp_path / name), str(tmp_path / "x.f32")],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 1 and "run_model: load:" in out.stderr, (name, out.stderr)
