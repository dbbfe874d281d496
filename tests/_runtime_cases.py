"""Helpers shared by the native runtime tests."""
import pytest
import torch

from sparsesnn import runtime
from sparsesnn.nn import reset_net


def require_runtime() -> None:
    """Skips the calling test module when the runtime library is not built."""
    try:
        runtime.library_path()
    except runtime.RuntimeLibraryError as e:  # pragma: no cover - the native build is required
        pytest.skip(f"runtime library not built: {e}", allow_module_level=True)


def eager(model, x):
    """The deployed model's own eager modules' output from a reset state (its native
    inference path turned off for the call: the plan is what the tests compare against)."""
    reset_net(model)
    was = model.__dict__.get("native_inference", False)
    model.native_inference = False
    try:
        with torch.inference_mode():
            return model(x)
    finally:
        model.native_inference = was
