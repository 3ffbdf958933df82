"""The quick start's benchmark run, shared by the modules that test it (``make test-benchmark``):
one ``--small`` run per session, which each module may add rows to."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def run_tool(tool: str, *args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    """Run ``tools/TOOL.py ARGS``; asserts it succeeded."""
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / f"{tool}.py"), "--no-progress", *args],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def run_small(out, *args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    """The README's command at the small size."""
    return run_tool("benchmark_synthetic", "--small", "--output", str(out), *args, timeout=timeout)


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """``(folder, stdout)`` of the quick start: ``tools/benchmark_synthetic.py --small``."""
    out = tmp_path_factory.mktemp("bench")
    return out, run_small(out).stdout


def run_small_on_a_copy(small_run, tmp_path_factory, name: str, *args: str):
    """``--small ARGS`` on a copy of the quick start's folder (the other modules keep theirs as
    their tests left it): ``(folder, result, the quick start's report before)``."""
    quick_start, _ = small_run
    out: Path = tmp_path_factory.mktemp(name) / "run"
    shutil.copytree(quick_start, out)
    before = json.loads((out / "results.json").read_text())
    return out, run_small(out, *args), before
