"""Extension loading: info() contents, and the pure-PyTorch fallback when disabled."""
import json
import os
import subprocess
import sys

import torch

import sparsesnn
from sparsesnn import _ext


def test_info_reports_build():
    info = sparsesnn.info()
    assert info["extension"] == _ext.available()
    if info["extension"]:
        assert info["cpu_isa"] in {"avx512", "avx2", "avx", "sse4.2", "neon", "generic"}
        assert isinstance(info["cuda"], bool) and info["version"]
        assert info["openmp_max_threads"] >= 1


def test_disable_ext_env_forces_reference():
    code = ("import json, torch, sparsesnn; from sparsesnn import functional as F;"
            "s, v = F.lif(torch.ones(3, 2) * 0.6);"
            "print(json.dumps({'info': sparsesnn.info(), 's': s.tolist()}))")
    env = dict(os.environ, SPARSESNN_DISABLE_EXT="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(os.path.dirname(sparsesnn.__file__)))
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["info"]["extension"] is False
    assert "SPARSESNN_DISABLE_EXT" in res["info"]["reason"]
    # 0.6 -> H = 0.3, 0.45, 0.525: no spike; the reference really ran.
    assert res["s"] == [[0.0, 0.0]] * 3
    s, _ = sparsesnn.functional.lif(torch.ones(3, 2) * 0.6)
    assert s.tolist() == res["s"]


def test_tune_allocator_is_safe_to_call_twice():
    first = sparsesnn.tune_allocator()
    assert sparsesnn.tune_allocator() == first
    assert torch.ones(10_000_000).sum().item() == 10_000_000


def _info_in_subprocess(env: dict) -> dict:
    code = "import json, sparsesnn; print(json.dumps(sparsesnn.info()))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_allocator_tuned_at_import_by_default_with_env_opt_out():
    if not sys.platform.startswith("linux"):
        return  # mallopt is glibc's
    env = {k: v for k, v in os.environ.items() if k != _ext.ENV_TUNE_ALLOCATOR}
    assert _info_in_subprocess(env)["allocator_tuned"] is True
    assert _info_in_subprocess(dict(env, SPARSESNN_TUNE_ALLOCATOR="0"))["allocator_tuned"] is False
