"""detectron2 config keys of ovdet: every ``MODEL.OVDET`` key plus the plugin's own keys."""

from __future__ import annotations

from typing import Sequence

from detectron2.config import CfgNode, get_cfg

from ovdet.config.defaults import add_ovdet_config as _add_shared_ovdet_config
from ovdet.errors import ConfigError

__all__ = ["add_ovdet_config", "load_d2_config"]


def add_ovdet_config(cfg: CfgNode) -> None:
    """Add ovdet's keys to a detectron2 config in place.

    Adds every ``MODEL.OVDET`` key shared with the torchvision engine (see
    :func:`ovdet.config.defaults.add_ovdet_config`) and the keys only this plugin reads.

    Args:
        cfg: detectron2's config, e.g. from ``detectron2.config.get_cfg()``.
    """
    _add_shared_ovdet_config(cfg)
    # Base/novel split of the datasets, for datasets registered without one (e.g. by
    # detectron2's register_coco_instances): "ovcoco", "lvis" or a JSON/YAML file
    # {"base": [...], "novel": [...]}. "" uses the split stored in each dataset's metadata by
    # ovdet.d2.datasets (and treats every class as base where there is none). Same name as the
    # torchvision engine's key.
    cfg.DATASETS.SPLIT = ""


def load_d2_config(config_file: str = "", overrides: Sequence[str] = ()) -> CfgNode:
    """detectron2's defaults with ovdet's keys, a YAML file merged in, then ``KEY VALUE`` pairs.

    Args:
        config_file: a YAML file (``_BASE_`` chains are followed), or ``""`` for the defaults.
        overrides: a flat list ``["KEY", "VALUE", ...]`` as on a command line.

    Returns:
        The config, not frozen.

    Raises:
        ConfigError: if the file is missing or a key is unknown.
    """
    cfg = get_cfg()
    add_ovdet_config(cfg)
    try:
        if config_file:
            cfg.merge_from_file(config_file)
        if overrides:
            cfg.merge_from_list(list(overrides))
    except (KeyError, AssertionError, OSError, ValueError) as e:
        raise ConfigError(f"cannot load detectron2 config {config_file!r}: {e}") from e
    return cfg
