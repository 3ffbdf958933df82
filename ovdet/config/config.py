"""Loading YAML configs onto the defaults, with ``_BASE_`` chaining and helpful errors."""

from __future__ import annotations

import ast
import difflib
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import yaml
from yacs.config import CfgNode as CN

from ovdet.config.catalog import resolve_config_path
from ovdet.config.defaults import get_default_config
from ovdet.utils.errors import ConfigError

__all__ = [
    "config_from_dict",
    "get_cfg",
    "load_config",
    "merge_overrides",
    "renamed_key_error",
    "upgrade_config_dict",
]

_BASE_KEY = "_BASE_"

# Keys of earlier releases whose names had another meaning (in detectron2, or in the ViLD paper:
# its ViLD-ensemble joins the text and image heads; CLIP's crop scores are ViLD-text+CLIP): what
# replaced them.
_RENAMED = {
    "MODEL.BACKBONE.TRAINABLE_LAYERS": "MODEL.BACKBONE.FREEZE_AT (= 5 - TRAINABLE_LAYERS)",
    "MODEL.BACKBONE.FROZEN_BN": 'MODEL.RESNETS.NORM ("FrozenBN" or "BN")',
    "MODEL.ROI_HEADS.IOU_THRESHOLD": "MODEL.ROI_HEADS.IOU_THRESHOLDS (a list: [0.5])",
    "MODEL.OVDET.ENSEMBLE.ENABLED": "MODEL.OVDET.CLIP_RESCORING.ENABLED",
    "MODEL.OVDET.ENSEMBLE.NUM_PROPOSALS": "MODEL.OVDET.CLIP_RESCORING.NUM_PROPOSALS",
    **{  # these also weighted the image head of DISTILL.IMAGE_HEAD
        f"MODEL.OVDET.ENSEMBLE.{old}": f"MODEL.OVDET.CLIP_RESCORING.{old} (CLIP rescoring), or "
        f"MODEL.OVDET.VILD_ENSEMBLE.{new} for the image head of DISTILL.IMAGE_HEAD"
        for old, new in (
            ("BASE_WEIGHT", "BASE_WEIGHT"),
            ("NOVEL_WEIGHT", "NOVEL_WEIGHT"),
            ("CLIP_TEMPERATURE", "TEMPERATURE"),
        )
    },
}


def upgrade_config_dict(data: dict) -> dict:
    """A config dict of an earlier release (e.g. stored in an old checkpoint) with today's keys.

    ``MODEL.BACKBONE.NAME resnetN`` -> ``MODEL.RESNETS.DEPTH N``, ``TRAINABLE_LAYERS t`` ->
    ``FREEZE_AT 5 - t``, ``FROZEN_BN`` -> ``MODEL.RESNETS.NORM``, a scalar
    ``ROI_HEADS.IOU_THRESHOLD`` -> ``IOU_THRESHOLDS [x]``, a float ``SOLVER.CLIP_GRADIENTS`` ->
    detectron2's ``CLIP_GRADIENTS`` node, ``MODEL.OVDET.ENSEMBLE`` -> ``CLIP_RESCORING``. A model
    with ``DISTILL.IMAGE_HEAD`` and no ``VILD_ENSEMBLE`` node joined its heads with the CLIP
    rescoring weights and temperature: they become its ``VILD_ENSEMBLE``. A current dict is
    returned unchanged.
    """
    import copy

    data = copy.deepcopy(data)
    model = data.get("MODEL") or {}
    backbone = model.get("BACKBONE") or {}
    resnets = model.setdefault("RESNETS", {}) if backbone else model.get("RESNETS", {})
    name = backbone.get("NAME")
    if isinstance(name, str) and name.startswith("resnet") and name[6:].isdigit():
        resnets["DEPTH"] = int(backbone.pop("NAME")[6:])
    if "TRAINABLE_LAYERS" in backbone:
        backbone["FREEZE_AT"] = 5 - int(backbone.pop("TRAINABLE_LAYERS"))
    if "FROZEN_BN" in backbone:
        resnets["NORM"] = "FrozenBN" if backbone.pop("FROZEN_BN") else "BN"
    if model.get("RESNETS") == {}:
        model.pop("RESNETS")
    roi = model.get("ROI_HEADS") or {}
    if "IOU_THRESHOLD" in roi:
        roi["IOU_THRESHOLDS"] = [float(roi.pop("IOU_THRESHOLD"))]
    _upgrade_score_fusion(model.get("OVDET") or {})
    solver = data.get("SOLVER") or {}
    clip = solver.get("CLIP_GRADIENTS")
    if isinstance(clip, (int, float)) and not isinstance(clip, bool):
        solver["CLIP_GRADIENTS"] = {
            "ENABLED": clip > 0, "CLIP_TYPE": "norm", "CLIP_VALUE": float(clip or 1.0),
        }  # fmt: skip
    return data


def _upgrade_score_fusion(ov: dict) -> None:
    """``MODEL.OVDET`` of an earlier release: ``ENSEMBLE`` -> ``CLIP_RESCORING``, and the image
    head's weights, read from it then, -> ``VILD_ENSEMBLE``."""
    if "ENSEMBLE" in ov:
        ov["CLIP_RESCORING"] = {**ov.pop("ENSEMBLE"), **(ov.get("CLIP_RESCORING") or {})}
    rescoring = ov.get("CLIP_RESCORING") or {}
    if (ov.get("DISTILL") or {}).get("IMAGE_HEAD") and "VILD_ENSEMBLE" not in ov:
        names = {"BASE_WEIGHT": "BASE_WEIGHT", "NOVEL_WEIGHT": "NOVEL_WEIGHT"}
        names["CLIP_TEMPERATURE"] = "TEMPERATURE"
        ov["VILD_ENSEMBLE"] = {
            new: rescoring[old] for old, new in names.items() if old in rescoring
        }


def get_cfg() -> CN:
    """The default config (same as :func:`ovdet.config.get_default_config`)."""
    return get_default_config()


def _all_keys(node: CN, prefix: str = "") -> list[str]:
    keys = []
    for k, v in node.items():
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(v, CN):
            keys.extend(_all_keys(v, full + "."))
    return keys


def _renamed_keys(key: str, value: Any) -> Iterator[str]:
    """The keys of earlier releases at or under ``key`` (a dotted name), whose ``value`` is the
    mapping or value given for it."""
    if key in _RENAMED:
        yield key
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _renamed_keys(f"{key}.{k}", v)


def _has_key(cfg: CN, key: str) -> bool:
    node = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def renamed_key_error(cfg: CN, data: dict, source: str) -> ConfigError | None:
    """The error for the first key of ``data`` that ``cfg`` lacks because it was renamed, naming
    what replaced it; ``None`` if there is none.

    Args:
        cfg: the config ``data`` is merged into (a yacs or detectron2 ``CfgNode``).
        data: nested mappings as read from YAML, or ``{"DOTTED.KEY": value}`` pairs.
        source: where ``data`` comes from (a file, "the command line"), for the message.
    """
    for key, value in data.items():
        for old in _renamed_keys(str(key), value):
            if not _has_key(cfg, old):
                return ConfigError(f"config key {old} in {source} was renamed: use {_RENAMED[old]}")
    return None


def _unknown_key_error(cfg: CN, key: str, source: str, value: Any = None) -> ConfigError:
    renamed = renamed_key_error(cfg, {key: value}, source)
    if renamed is not None:
        return renamed
    candidates = _all_keys(cfg)
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    if not close:  # a typo in the last component only, e.g. SOLVER.BASE_LRR
        leaf = key.rsplit(".", 1)[-1]
        leaves = {c.rsplit(".", 1)[-1]: c for c in candidates}
        close = [leaves[m] for m in difflib.get_close_matches(leaf, list(leaves), n=1)]
    hint = f"; did you mean {close[0]}?" if close else ""
    return ConfigError(f"unknown config key {key} in {source}{hint}")


def _coerce(key: str, value: Any, default: Any, source: str) -> Any:
    """Convert ``value`` to the type of ``default`` where that is lossless, else raise."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif isinstance(default, (int, float)):
        if isinstance(value, bool):
            pass
        elif isinstance(value, int) and isinstance(default, float):
            return float(value)
        elif isinstance(value, type(default)):
            return value
        elif isinstance(value, float) and isinstance(default, int) and value.is_integer():
            return int(value)
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    elif isinstance(default, (list, tuple)):
        if isinstance(value, (list, tuple)):
            return list(value)
    elif default is None:
        return value
    raise ConfigError(
        f"config key {key} in {source} must be of type {type(default).__name__} "
        f"(like its default {default!r}), got {type(value).__name__} {value!r}"
    )


def _merge_dict(cfg: CN, data: dict, source: str, prefix: str = "") -> None:
    for k, v in data.items():
        full = f"{prefix}{k}"
        if k not in cfg:
            raise _unknown_key_error(get_default_config(), full, source, v)
        if isinstance(cfg[k], CN):
            if not isinstance(v, dict):
                raise ConfigError(f"config key {full} in {source} must be a mapping, got {v!r}")
            _merge_dict(cfg[k], v, source, full + ".")
        else:
            cfg[k] = _coerce(full, v, cfg[k], source)


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """Read a YAML config, resolving ``_BASE_`` (relative to the file) recursively."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"config {path} includes itself through _BASE_")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(data)}")
    base = data.pop(_BASE_KEY, None)
    if base is None:
        return data
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{_BASE_KEY} in {path} must name a config file, got {base!r}")
    merged = _read_yaml(path.parent / base, seen + (path,))
    _deep_update(merged, data)
    return merged


def _deep_update(dst: dict, src: dict) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _deep_update(dst[k], v)
        else:
            dst[k] = v


def _parse_override_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return text  # e.g. "{[]: 1}" (TypeError: unhashable) or deep nesting: kept as text


def merge_overrides(cfg: CN, overrides: Sequence[str]) -> CN:
    """Apply ``KEY VALUE`` pairs from the command line (``SOLVER.BASE_LR 0.01``).

    Values are parsed as Python literals where possible (numbers, lists, booleans), else kept
    as strings, then checked against the key's type.
    """
    if len(overrides) % 2:
        raise ConfigError(
            f"config overrides must be KEY VALUE pairs; got an odd number: {list(overrides)}"
        )
    was_frozen = cfg.is_frozen()
    cfg.defrost()
    for key, text in zip(overrides[0::2], overrides[1::2]):
        node = cfg
        parts = key.split(".")
        for part in parts[:-1]:
            if part not in node or not isinstance(node[part], CN):
                raise _unknown_key_error(cfg, key, "the command line")
            node = node[part]
        leaf = parts[-1]
        if leaf not in node or isinstance(node[leaf], CN):
            raise _unknown_key_error(cfg, key, "the command line")
        value = _parse_override_value(text)
        if isinstance(node[leaf], str) and not isinstance(value, str):
            value = text  # "123" stays a string for string keys
        node[leaf] = _coerce(key, value, node[leaf], "the command line")
    if was_frozen:
        cfg.freeze()
    return cfg


def load_config(
    path: str | Path | None = None, overrides: Iterable[str] = (), freeze: bool = True
) -> CN:
    """Defaults, then a YAML file (with ``_BASE_`` chaining), then command-line overrides.

    Args:
        path: a YAML file, or the name of a config shipped in the package (``tiny``,
            ``synthetic_small``; see :mod:`ovdet.config.catalog`), or None for the defaults.
        overrides: ``KEY VALUE`` pairs.
        freeze: freeze the result.

    Raises:
        ConfigError: a missing file, an unknown key (with the closest valid key), a wrong type.
    """
    cfg = get_default_config()
    if path is not None:
        _merge_dict(cfg, _read_yaml(resolve_config_path(path)), str(path))
    merge_overrides(cfg, list(overrides))
    if freeze:
        cfg.freeze()
    return cfg


def config_from_dict(data: dict, source: str = "a checkpoint") -> CN:
    """Defaults updated by a nested dict (e.g. the config stored in a checkpoint); keys of
    earlier releases are upgraded (:func:`upgrade_config_dict`)."""
    cfg = get_default_config()
    _merge_dict(cfg, upgrade_config_dict(data), source)
    return cfg
