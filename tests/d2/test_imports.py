"""Only ovdet.d2 imports detectron2: the rest of the package works without it."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip(
    "detectron2", reason="detectron2 is not installed; see README (install by its official guide)"
)

SCRIPT = """
import importlib, pathlib, sys
import ovdet
root = pathlib.Path(list(ovdet.__path__)[0])
# Module names from the file tree (pkgutil.walk_packages would import ovdet.d2 to list it).
names = sorted(
    ".".join(("ovdet",) + p.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
    for p in root.rglob("*.py")
)
names = [n for n in names if not n.startswith("ovdet.d2")]
for name in names:
    importlib.import_module(name)
assert "detectron2" not in sys.modules, [n for n in sys.modules if n.startswith("detectron2")]
import ovdet.d2
assert "detectron2" in sys.modules
print(len(names))
"""


def test_ovdet_does_not_import_detectron2():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout.split()[-1]) > 10  # it did import the package's modules
