"""detectron2 config keys of ovdet: every ``MODEL.OVDET`` key plus the plugin's own keys."""

from __future__ import annotations

from typing import Sequence

import yaml
from detectron2.config import CfgNode, get_cfg

from ovdet.config.catalog import resolve_config_path
from ovdet.config.config import renamed_key_error
from ovdet.config.defaults import add_open_vocabulary_keys
from ovdet.utils.errors import ConfigError

__all__ = ["add_ovdet_config", "load_d2_config"]


def add_ovdet_config(cfg: CfgNode) -> None:
    """Add ovdet's keys to a detectron2 config in place: the detectron2 user's entry point.

    Adds every ``MODEL.OVDET`` key, ``DATASETS.SPLIT`` and the keys of image-labelled data
    (``DATASETS.WEAK_*``, ``DATALOADER.DATASET_RATIO``, ``DATALOADER.WEAK_IMS_PER_BATCH``,
    ``INPUT.WEAK_*``), with the defaults of the torchvision engine (the same
    :func:`ovdet.config.defaults.add_open_vocabulary_keys`).

    Args:
        cfg: detectron2's config, e.g. from ``detectron2.config.get_cfg()``.
    """
    add_open_vocabulary_keys(cfg)


def load_d2_config(config_file: str = "", overrides: Sequence[str] = ()) -> CfgNode:
    """detectron2's defaults with ovdet's keys, a YAML file merged in, then ``KEY VALUE`` pairs.

    Args:
        config_file: a YAML file (``_BASE_`` chains are followed), the name of a config shipped
            in the package (``d2/ovcoco_vild_R50_FPN.yaml``), or ``""`` for the defaults.
        overrides: a flat list ``["KEY", "VALUE", ...]`` as on a command line.

    Returns:
        The config, not frozen.

    Raises:
        ConfigError: one line, if the file is missing or a key is unknown (naming what replaced
            a key of an earlier release).
    """
    cfg = get_cfg()
    add_ovdet_config(cfg)
    path = str(resolve_config_path(config_file)) if config_file else ""
    try:
        if path:
            # allow_unsafe=False: detectron2 would otherwise fall back to yaml.unsafe_load,
            # which runs code named in the file
            cfg.merge_from_file(path, allow_unsafe=False)
    except (KeyError, AssertionError, OSError, ValueError, yaml.YAMLError) as e:
        renamed = None
        if isinstance(e, KeyError):  # an unknown key: one of an earlier release?
            data = CfgNode.load_yaml_with_base(path, allow_unsafe=False)
            renamed = renamed_key_error(cfg, data, config_file)
        raise renamed or _load_error(config_file, e) from e
    try:
        cfg.merge_from_list(list(overrides))
    except (KeyError, AssertionError, ValueError) as e:  # yacs asserts that override keys exist
        pairs = dict(zip(overrides[0::2], overrides[1::2]))
        raise renamed_key_error(cfg, pairs, "the command line") or _load_error(
            config_file, e
        ) from e
    return cfg


def _load_error(config_file: str, error: Exception) -> ConfigError:
    message = " ".join(str(error).split())
    return ConfigError(f"cannot load detectron2 config {config_file!r}: {message}")
