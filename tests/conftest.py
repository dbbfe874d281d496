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


def pytest_configure(config):
    config.addinivalue_line("markers", "fuzz: randomized tests at scale (>= 10,000 cases per op); "
                                       "run only when selected: pytest -m fuzz")


def pytest_collection_modifyitems(config, items):
    if "fuzz" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="fuzz scale: select with -m fuzz")
    for item in items:
        if "fuzz" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _require_ext() -> None:
    """Kernel tests fail when the extension is missing (a broken build must not pass by testing
    the reference against itself); they skip only when it is disabled on purpose."""
    if _ext.available():
        return
    if os.environ.get("SPARSESNN_DISABLE_EXT") == "1":
        pytest.skip("compiled extension disabled (SPARSESNN_DISABLE_EXT=1)")
    pytest.fail(f"compiled extension missing (set SPARSESNN_DISABLE_EXT=1 to skip kernel tests): {_ext.info()}")


@pytest.fixture
def kernel_required():
    _require_ext()


@pytest.fixture(params=["kernel", "reference"])
def backend(request, monkeypatch):
    """Run a test through the compiled kernel and through the pure-PyTorch fallback."""
    if request.param == "kernel":
        _require_ext()
    else:
        monkeypatch.setattr(_ext, "_C", None)
    return request.param


# CUDA tests skip only where there is no GPU. With a GPU but without the CUDA kernels they
# fail (cuda_kernels_built): otherwise a build that silently dropped CUDA would pass the
# first GPU run by testing the reference against itself.
requires_cuda = [pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU"),
                 pytest.mark.usefixtures("cuda_kernels_built")]


def check_cuda_kernels_built() -> None:
    if not _ext.cuda_available():
        pytest.fail(f"a GPU is present but the CUDA kernels were not built or loaded: {_ext.info()}")


@pytest.fixture
def cuda_kernels_built():
    check_cuda_kernels_built()


@pytest.fixture(scope="session")
def _digits_trained():
    """A small SNN trained once on digits, shared by the compression-method tests."""
    from sparsesnn.compress import fit, reset_states
    from sparsesnn.data import load_digits, loaders
    from sparsesnn.models import SpikingMLP

    torch.manual_seed(0)
    tr, te = loaders(load_digits(), batch_size=64)
    m = SpikingMLP(64, (64, 64), 10, T=4, init_gain=3.0)
    fit(m, tr, torch.optim.Adam(m.parameters(), 3e-3), epochs=3, progress=False)
    reset_states(m)
    return m, tr, te


@pytest.fixture(scope="module")
def digits(_digits_trained):
    """(model, train loader, test loader); each test module gets its own copy of the model."""
    import copy

    m, tr, te = _digits_trained
    return copy.deepcopy(m), tr, te


@pytest.fixture
def isolated_dispatch(tmp_path, monkeypatch):
    """sparsesnn.dispatch with a private calibration file, no env override and empty
    in-memory caches; returns the file's path."""
    from sparsesnn import dispatch

    path = tmp_path / "calibration.json"
    monkeypatch.setenv(dispatch.ENV_CACHE_FILE, str(path))
    monkeypatch.delenv(dispatch.ENV_BREAK_EVEN, raising=False)
    monkeypatch.setattr(dispatch, "_memory", {})
    monkeypatch.setattr(dispatch, "_probed", {})
    return path
