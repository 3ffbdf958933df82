"""Configs shipped with ovdet, found by name from any folder.

As ``detectron2.model_zoo.get_config_file`` does: ``tiny``, ``tiny.yaml``,
``d2/instant_test.yaml`` or ``clip/tiny`` name files and folders under the repository's
top-level ``configs/``, which ``setup.py`` puts into the wheel as ``ovdet/configs``; an existing
path is always taken as it is first.
"""

from __future__ import annotations

from pathlib import Path

from ovdet.utils.errors import ConfigError

__all__ = ["CONFIG_DIR", "get_config_file", "list_configs", "resolve_config_path"]


def _config_dir() -> Path:
    """``ovdet/configs`` in an installed wheel (or the checkout's link), else ``configs/``."""
    package = Path(__file__).resolve().parent.parent
    shipped = package / "configs"
    return shipped if shipped.is_dir() else package.parent / "configs"


CONFIG_DIR = _config_dir()


def list_configs() -> list[str]:
    """Names of the shipped YAML configs, e.g. ``["tiny.yaml", "d2/instant_test.yaml"]``."""
    return sorted(str(p.relative_to(CONFIG_DIR)) for p in CONFIG_DIR.rglob("*.yaml"))


def _shipped(name: str) -> Path | None:
    name = name.removeprefix("configs/")
    for candidate in (CONFIG_DIR / name, CONFIG_DIR / f"{name}.yaml"):
        if candidate.exists():
            return candidate
    return None


def get_config_file(name: str) -> Path:
    """The path of a shipped config (or config folder) by name.

    Raises:
        ConfigError: if no shipped config has that name (the message lists them).
    """
    found = _shipped(name)
    if found is None:
        raise ConfigError(f"no shipped config named {name!r}; shipped: {', '.join(list_configs())}")
    return found


def resolve_config_path(path_or_name: str | Path) -> Path:
    """An existing file or folder as given, else the shipped config of that name.

    Raises:
        ConfigError: if it is neither (the message lists the shipped configs).
    """
    path = Path(path_or_name).expanduser()
    if path.exists():
        return path
    found = None if path.is_absolute() else _shipped(str(path_or_name))
    if found is None:
        raise ConfigError(
            f"config file {str(path_or_name)!r} does not exist and is not the name of a shipped "
            f"config ({', '.join(list_configs())})"
        )
    return found
