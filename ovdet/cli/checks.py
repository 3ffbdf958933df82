"""Checks of command-line values that every tool makes the same way, before any work.

Each raises :class:`~ovdet.utils.errors.ConfigError` (or ``OSError`` for an output that cannot
be written) with one line naming the flag, which the tools print as ``error: ...``
(:func:`ovdet.cli.common.cli_entry`). ``nan`` and ``inf`` parse as floats; these refuse them.
"""

from __future__ import annotations

import math
from pathlib import Path

from ovdet.utils.errors import ConfigError
from ovdet.utils.io import check_writable_dir

__all__ = ["check_fps", "check_fraction", "check_hf_detector_args", "check_output_file"]


def check_fraction(flag: str, value: float | None, *, allow_zero: bool = True) -> None:
    """``value`` (``None`` = not given) must be a number in [0, 1] (in (0, 1] without
    ``allow_zero``): a score threshold, an IoU."""
    if value is None:
        return
    low_ok = value >= 0.0 if allow_zero else value > 0.0
    if not (math.isfinite(value) and low_ok and value <= 1.0):
        interval = "[0, 1]" if allow_zero else "(0, 1]"
        raise ConfigError(f"{flag} must be a number in {interval}, got {value}")


def check_fps(flag: str, value: float) -> None:
    """A video sampling rate: 0 (every frame) or a positive finite number."""
    if not (math.isfinite(value) and value >= 0.0):
        raise ConfigError(f"{flag} must be 0 (every frame) or positive, got {value}")


def check_output_file(flag: str, path: str | Path, example: str = "out.json") -> Path:
    """Fail before any work where the file ``path`` could not be written at the end: a folder
    of that name, a folder above it that cannot be created or written, or a full disk.

    Args:
        flag: the option naming the file, for the message.
        path: the file.
        example: a file name the message suggests.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a folder; give a file name such as {example}")
    check_writable_dir(path.parent)
    return path


def check_hf_detector_args(
    spec: str,
    *,
    clip: str | None = None,
    clip_rescoring: bool = False,
    exemplar_source: str | None = None,
) -> None:
    """``--detector`` must be ``hf:HUB_ID`` or ``hf:FOLDER``; the flags that change an ovdet
    checkpoint's CLIP (``--clip``, ``--clip-rescoring``) do not apply to it, and its exemplars
    are embedded by its own box queries (``--exemplar-source region``, its default)."""
    from ovdet.owl.exemplars import check_owl_exemplar_source
    from ovdet.owl.loading import DETECTOR_SCHEMA, is_hf_detector

    if not is_hf_detector(spec):
        raise ConfigError(
            f"--detector {spec!r} is not a transformers detector; give {DETECTOR_SCHEMA}HUB_ID "
            f"(e.g. {DETECTOR_SCHEMA}google/owlv2-base-patch16-ensemble) or {DETECTOR_SCHEMA}FOLDER"
        )
    for flag, given in (("--clip", clip), ("--clip-rescoring", clip_rescoring)):
        if given:
            raise ConfigError(
                f"{flag} applies to ovdet checkpoints; --detector {spec} embeds its queries "
                "with its own text tower and scores its own regions"
            )
    if exemplar_source is not None:
        check_owl_exemplar_source(exemplar_source, spec)
