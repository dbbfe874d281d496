"""tools/gpu_check.sh without a GPU: it must stop at once with a clear message (exit 2)
instead of building for minutes or reporting a pass. CUDA_VISIBLE_DEVICES="" hides any GPU,
so this runs the same on machines with and without one."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "gpu_check.sh"
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="bash script")


def _run(*args, **env):
    full = dict(os.environ, PYTHON=sys.executable, CUDA_VISIBLE_DEVICES="", **env)
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=full,
                          timeout=120)


def test_gpu_check_without_gpu_fails_clearly(tmp_path):
    r = _run(str(tmp_path / "out"))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "no CUDA GPU is visible to torch" in r.stderr
    assert "CUDA_VISIBLE_DEVICES=" in r.stderr
    out = tmp_path / "out"
    assert "no CUDA GPU" in (out / "summary.md").read_text()
    assert json.loads((out / "summary.json").read_text())["status"] == "no_gpu"
    env = json.loads((out / "env.json").read_text())
    assert env["gpu_count"] == 0 and env["python"]
    assert not (out / "build.log").exists()  # stopped before the (slow) build


def test_gpu_check_usage():
    r = _run()
    assert r.returncode == 2 and "usage: tools/gpu_check.sh OUTDIR" in r.stderr
