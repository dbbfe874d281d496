"""bench/_common.isolated and bench/_worker.py: a target runs in a fresh process, its result
comes back, and a failure in the child surfaces with its stderr. Targets from the standard
library, so each child starts in a fraction of a second (no torch import)."""
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import _common as bc  # noqa: E402


def test_isolated_runs_in_another_process_and_returns_the_result():
    assert bc.isolated("json:dumps", obj=[1, "a"]) == '[1, "a"]'
    assert bc.isolated("os:getpid") != os.getpid()
    assert bc.PROCESSES[-1]["target"] == "os:getpid"
    assert bc.PROCESSES[-1]["libraries"] == []  # nothing imported sparsesnn or a peer


def test_child_prints_do_not_corrupt_the_result():
    assert bc.isolated("builtins:print", sep=" ") is None  # its newline went to stderr


def test_child_error_raises_with_its_stderr():
    with pytest.raises(RuntimeError, match="JSONDecodeError"):
        bc.isolated("json:loads", s="not json")


def test_missing_library_is_optional_only_when_asked():
    assert bc.isolated("importlib:import_module", optional=True, name="no_such_lib_xyz") is None
    with pytest.raises(RuntimeError, match="no_such_lib_xyz"):
        bc.isolated("importlib:import_module", name="no_such_lib_xyz")


def test_machine_description_reads_caches_and_isa():
    caches, isa = bc.cpu_caches(), bc.isa_flags()
    assert isinstance(caches, dict) and isinstance(isa, list)
    if sys.platform.startswith("linux") and Path("/sys/devices/system/cpu/cpu0/cache").exists():
        assert "L1d" in caches
