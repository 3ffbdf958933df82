"""The versions of the packages a result depends on, to write down beside it.

A benchmark's figures move with the libraries that render, augment and train (a fresh install
picks the newest release within ``setup.py``'s ranges), so a report that names them says which
runs are comparable.
"""

from __future__ import annotations

from importlib import metadata
from typing import Sequence

__all__ = ["RESULT_PACKAGES", "package_versions"]

#: The distributions whose releases can change the synthetic benchmark's numbers.
RESULT_PACKAGES = (
    "torch",
    "torchvision",
    "open_clip_torch",
    "numpy",
    "pillow",
    "opencv-python-headless",
    "albumentations",
    "pycocotools",
)


def package_versions(names: Sequence[str] = RESULT_PACKAGES) -> dict[str, str | None]:
    """``{distribution: installed version}``, ``None`` where it is not installed."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions
