"""The layer contracts of pyproject.toml (import-linter): kept by the tree, and able to fail."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(
    not LINT_IMPORTS.exists(), reason="import-linter is not installed (pip install -e '.[dev]')"
)


def _lint_imports(package_parent: Path, config: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run(
        [LINT_IMPORTS, "--config", str(config), "--no-cache"],
        cwd=package_parent, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _copy_package(tmp_path: Path) -> Path:
    shutil.copytree(
        REPO / "ovdet", tmp_path / "ovdet", ignore=shutil.ignore_patterns("__pycache__", "configs")
    )
    return tmp_path


def test_the_tree_keeps_the_layer_contracts(tmp_path):
    result = _lint_imports(_copy_package(tmp_path), REPO / "pyproject.toml")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "BROKEN" not in result.stdout


@pytest.mark.parametrize(
    ("module", "planted", "broken"),
    [
        # the core reaching up into the torchvision engine
        ("core/postprocessing.py", "import ovdet.tv.predictor", "ovdet.core is not allowed"),
        # one engine importing the other
        ("d2/evaluator.py", "import ovdet.tv.engine.checkpoint", "ovdet.d2 is not allowed"),
        # shared utilities importing the application layer
        ("utils/io.py", "import ovdet.api", "ovdet.utils is not allowed"),
        # detectron2 outside the plugin
        ("data/coco.py", "import detectron2", "ovdet.data is not allowed to import detectron2"),
    ],
)
def test_a_planted_import_that_runs_back_up_breaks_a_contract(tmp_path, module, planted, broken):
    root = _copy_package(tmp_path)
    path = root / "ovdet" / module
    path.write_text(path.read_text() + f"\n{planted}  # planted\n")
    result = _lint_imports(root, REPO / "pyproject.toml")
    assert result.returncode != 0
    assert broken in result.stdout, result.stdout[-3000:]
