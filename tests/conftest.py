import os

import pytest
import torch

import sparsesnn
from sparsesnn import _ext


def pytest_report_header(config):
    return f"sparsesnn: {sparsesnn.info()}"


def pytest_sessionstart(session):
    # CI sets SPARSESNN_REQUIRE_EXT=1: a missing extension must fail loudly instead of the
    # whole suite silently testing the reference against itself.
    if os.environ.get("SPARSESNN_REQUIRE_EXT") == "1" and not _ext.available():
        raise pytest.UsageError(f"compiled extension required but missing: {_ext.info()}")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(params=["kernel", "reference"])
def backend(request, monkeypatch):
    """Run a test through the compiled kernel and through the pure-PyTorch fallback."""
    if request.param == "kernel":
        if not _ext.available():
            pytest.skip("compiled extension not built")
    else:
        monkeypatch.setattr(_ext, "_C", None)
    return request.param


requires_cuda = pytest.mark.skipif(not _ext.cuda_available(), reason="needs CUDA kernels and a GPU")
