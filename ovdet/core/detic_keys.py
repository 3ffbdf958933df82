"""Names of Detic's box-predictor weights in ovdet's open-vocabulary head.

Detic's ``DeticFastRCNNOutputLayers`` with a ``ZeroShotClassifier`` holds the projection to
CLIP's space (``cls_score.linear``), the class-agnostic box MLP (``bbox_pred.0``, ``.2``), and two
buffers that are no weights of a model with a swappable vocabulary: the zero-shot matrix of its
training classes (``cls_score.zs_weight``, ``D x (C + 1)``) and class frequencies
(``freq_weight``). Both engines read Detic's checkpoints through :func:`detic_head_key`.
"""

from __future__ import annotations

__all__ = ["DETIC_DROPPED_KEYS", "detic_head_key"]

# Detic's key (relative to the box predictor) -> the head's.
_RENAMED_PREFIXES = (("cls_score.linear.", "classifier.projection."), ("bbox_pred.", "bbox_pred."))
# Detic's buffers that ovdet does not keep (relative to the box predictor).
DETIC_DROPPED_KEYS = ("cls_score.zs_weight", "freq_weight")


def detic_head_key(key: str) -> str | None:
    """The head's name of a Detic box-predictor key (relative to the predictor), or ``None``
    for a dropped buffer.

    Raises:
        KeyError: for a key that is neither (another Detic head, e.g. ``cls_score.cls_bias``).
    """
    if key in DETIC_DROPPED_KEYS:
        return None
    for old, new in _RENAMED_PREFIXES:
        if key.startswith(old):
            return new + key[len(old) :]
    raise KeyError(key)
