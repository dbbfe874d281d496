"""Every Python block of the README runs as written, so the docs cannot drift from the code.

A line ``name = value  # README test: smaller`` runs with ``smaller`` here (sizes only); each
block runs in a fresh interpreter in an empty directory.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
_SMALLER = re.compile(r"^(\s*[\w.]+\s*=\s*).*?#\s*README test:\s*(.+)$", re.M)


def _blocks() -> list[str]:
    return _BLOCK.findall(README.read_text(encoding="utf-8"))


def test_readme_has_python_blocks():
    assert len(_blocks()) >= 2


@pytest.mark.parametrize("index", range(len(_blocks())))
def test_readme_block_runs(index, tmp_path):
    code = _SMALLER.sub(lambda m: m.group(1) + m.group(2).strip(), _blocks()[index])
    for needs, module in (("sparsesnn.data", "sklearn"), ("spikingjelly", "spikingjelly"),
                          ("snntorch", "snntorch"), ("nir", "nir"), ("plot_", "matplotlib")):
        if needs in code:
            pytest.importorskip(module)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(README.parent)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, f"README block {index} failed:\n{code}\n--- stderr ---\n{out.stderr[-4000:]}"
