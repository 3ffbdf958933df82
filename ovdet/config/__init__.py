"""Configs of the torchvision engine: defaults, loading, merging and validation."""

from ovdet.config.config import config_from_dict, get_cfg, load_config, merge_overrides
from ovdet.config.defaults import add_ovdet_config, get_default_config

__all__ = [
    "add_ovdet_config",
    "config_from_dict",
    "get_cfg",
    "get_default_config",
    "load_config",
    "merge_overrides",
]
