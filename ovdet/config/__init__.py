"""Configs of the torchvision engine: defaults, loading, merging and validation."""

from ovdet.config.catalog import get_config_file, list_configs, resolve_config_path
from ovdet.config.config import (
    config_from_dict,
    get_cfg,
    load_config,
    merge_overrides,
    upgrade_config_dict,
)
from ovdet.config.defaults import add_open_vocabulary_keys, get_default_config

__all__ = [
    "add_open_vocabulary_keys",
    "config_from_dict",
    "get_cfg",
    "get_config_file",
    "get_default_config",
    "list_configs",
    "load_config",
    "merge_overrides",
    "resolve_config_path",
    "upgrade_config_dict",
]
