"""A config written next to a model names every file by its absolute path.

The trainer writes its config twice, as ``OUTPUT_DIR/config.yaml`` and inside each checkpoint;
both must work from any folder (``tools/train.py --config RUN/x/config.yaml``,
``tools/infer.py --checkpoint RUN/x/model_final.pt``). A relative path in a config means a path
relative to the working directory of the run that read it, so :func:`with_absolute_paths`
resolves each against that directory when the run starts, before anything is written: the
data, the weights, the output folder, and the folders and weights file inside the CLIP spec
(:meth:`ovdet.clip.spec.ClipSpec.absolute`). One convention for every saved config: absolute
paths, nothing relative to the config file.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from yacs.config import CfgNode as CN

from ovdet.clip.spec import ClipSpec
from ovdet.utils.errors import ConfigError

__all__ = ["NAME_OR_PATH_KEYS", "PATH_KEYS", "with_absolute_paths"]

#: Keys whose non-empty value is always a path.
PATH_KEYS = (
    "MODEL.WEIGHTS",
    "MODEL.OVDET.TEXT_CACHE_DIR",
    "MODEL.OVDET.DISTILL.EMBEDDINGS_FILE",
    "DATASETS.TRAIN_JSON",
    "DATASETS.TRAIN_IMAGES",
    "DATASETS.TEST_JSON",
    "DATASETS.TEST_IMAGES",
    "DATASETS.WEAK_TRAIN",
    "DATASETS.WEAK_TRAIN_IMAGES",
    "OUTPUT_DIR",
)

#: Keys whose value is a name (a split, a template set, class names, a torchvision weights
#: enum) or a file: made absolute where the value names an existing file.
NAME_OR_PATH_KEYS = (
    "MODEL.BACKBONE.WEIGHTS",
    "MODEL.OVDET.TEMPLATES",
    "MODEL.OVDET.VOCABULARY",
    "DATASETS.SPLIT",
    "DATASETS.WEAK_VOCABULARY",
)


def _absolute(path: str, base: str) -> str:
    return os.path.normpath(os.path.join(base, os.path.expanduser(path)))


def _node_and_leaf(cfg: CN, key: str) -> tuple[CN | None, str]:
    *parents, leaf = key.split(".")
    node = cfg
    for part in parents:
        node = node.get(part)
        if not isinstance(node, CN):
            return None, leaf
    return (node, leaf) if isinstance(node.get(leaf), str) else (None, leaf)


def with_absolute_paths(cfg: CN, base: str | Path | None = None) -> CN:
    """A copy of ``cfg`` whose paths are absolute, resolved against ``base`` (default: the
    working directory): :data:`PATH_KEYS`, :data:`NAME_OR_PATH_KEYS` where they name an
    existing file or folder, and the local paths of ``MODEL.OVDET.CLIP``. Names, tags and
    absolute paths are kept; the copy is frozen where ``cfg`` is."""
    base = os.path.abspath(base or os.getcwd())
    out = cfg.clone()
    out.defrost()
    for key in PATH_KEYS + NAME_OR_PATH_KEYS:
        node, leaf = _node_and_leaf(out, key)
        value = node[leaf] if node is not None else ""
        exists = Path(base, os.path.expanduser(value)).exists() if value else False
        if not value or (key in NAME_OR_PATH_KEYS and not exists):
            continue
        node[leaf] = _absolute(value, base)
    clip = out.MODEL.get("OVDET", CN()).get("CLIP", "")
    # no spec (a closed-set model needs none), or one the model's build will refuse: kept
    with contextlib.suppress(ConfigError):
        out.MODEL.OVDET.CLIP = str(ClipSpec.parse(clip).absolute(base))
    if cfg.is_frozen():
        out.freeze()
    return out
