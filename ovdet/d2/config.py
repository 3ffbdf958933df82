"""detectron2 config keys of ovdet: every ``MODEL.OVDET`` key plus the plugin's own keys."""

from __future__ import annotations

from typing import Sequence

import yaml
from detectron2.config import CfgNode, get_cfg

from ovdet.config.catalog import resolve_config_path
from ovdet.config.defaults import add_ovdet_config as _add_shared_ovdet_config
from ovdet.config.defaults import add_weak_supervision_config
from ovdet.utils.errors import ConfigError

__all__ = ["add_ovdet_config", "load_d2_config"]


def add_ovdet_config(cfg: CfgNode) -> None:
    """Add ovdet's keys to a detectron2 config in place.

    Adds every ``MODEL.OVDET`` key, ``DATASETS.SPLIT`` and the keys of image-labelled data
    (``DATASETS.WEAK_*``, ``DATALOADER.DATASET_RATIO``, ``DATALOADER.WEAK_IMS_PER_BATCH``,
    ``INPUT.WEAK_*``), with the defaults of the torchvision engine (see
    :func:`ovdet.config.defaults.add_ovdet_config` and ``add_weak_supervision_config``).

    Args:
        cfg: detectron2's config, e.g. from ``detectron2.config.get_cfg()``.
    """
    _add_shared_ovdet_config(cfg)
    add_weak_supervision_config(cfg)


def load_d2_config(config_file: str = "", overrides: Sequence[str] = ()) -> CfgNode:
    """detectron2's defaults with ovdet's keys, a YAML file merged in, then ``KEY VALUE`` pairs.

    Args:
        config_file: a YAML file (``_BASE_`` chains are followed), the name of a config shipped
            in the package (``d2/ovcoco_vild_R50_FPN.yaml``), or ``""`` for the defaults.
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
            # allow_unsafe=False: detectron2 would otherwise fall back to yaml.unsafe_load,
            # which runs code named in the file
            cfg.merge_from_file(str(resolve_config_path(config_file)), allow_unsafe=False)
        if overrides:
            cfg.merge_from_list(list(overrides))
    except (KeyError, AssertionError, OSError, ValueError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot load detectron2 config {config_file!r}: {e}") from e
    return cfg
