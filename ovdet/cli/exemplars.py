"""Command-line flags of image-exemplar classes, shared by the tools that take a vocabulary."""

from __future__ import annotations

import argparse
from typing import Sequence

from ovdet.core.exemplars import EXEMPLAR_SOURCES
from ovdet.structures.vocabulary import Vocabulary
from ovdet.utils.errors import ConfigError, VocabularyError

__all__ = [
    "add_exemplar_arguments",
    "exemplar_overrides",
    "exemplar_specs_from_args",
    "vocabulary_from_args",
]


def add_exemplar_arguments(parser: argparse.ArgumentParser, file: bool = False) -> None:
    """``--exemplar`` (repeatable), ``--exemplar-source`` and ``--exemplar-text-weight``;
    with ``file``, also ``--exemplar-file``."""
    parser.add_argument(
        "--exemplar",
        action="append",
        default=[],
        metavar="NAME=IMAGE[:x,y,w,h][;IMAGE...]",
        help='a class given by image exemplars alone, e.g. "my mug=photos/mug.jpg:10,20,64,48" '
        "(box left, top, width, height in pixels; no box: the whole image); NAME+=... gives it "
        "by its name's text and exemplars; repeatable, the same name again adds exemplars; a "
        "name of --classes is given so instead of by text",
    )
    if file:
        parser.add_argument(
            "--exemplar-file",
            default=None,
            metavar="TXT",
            help="classes given by image exemplars, one NAME=IMAGE:x,y,w,h (or NAME+=...) per "
            "line, image paths relative to the file's folder, # comments",
        )
    parser.add_argument(
        "--exemplar-source",
        choices=EXEMPLAR_SOURCES,
        default=None,
        help="what embeds an exemplar: clip (CLIP's embedding of the crop), region (the "
        "detector's own region embedding of the box) or both (default: the model's "
        "MODEL.OVDET.EXEMPLARS.SOURCE, clip unless set; --detector hf:... has only region: its "
        "box queries, as OWL's image-guided detection)",
    )
    parser.add_argument(
        "--exemplar-text-weight",
        type=float,
        default=None,
        help="for a class given by name and exemplars, the weight of its text embedding in "
        "[0, 1] (default: MODEL.OVDET.EXEMPLARS.TEXT_WEIGHT, 0.5 unless set)",
    )


def exemplar_overrides(args: argparse.Namespace) -> list[str]:
    """Config overrides (``KEY VALUE`` pairs) of the exemplar flags given."""
    out = []
    if args.exemplar_source is not None:
        out += ["MODEL.OVDET.EXEMPLARS.SOURCE", args.exemplar_source]
    if args.exemplar_text_weight is not None:
        weight = args.exemplar_text_weight
        if not 0.0 <= weight <= 1.0:
            raise ConfigError(f"--exemplar-text-weight must be in [0, 1], got {weight}")
        out += ["MODEL.OVDET.EXEMPLARS.TEXT_WEIGHT", str(weight)]
    return out


def vocabulary_from_args(classes: str | None, exemplars: Sequence[str]) -> Vocabulary:
    """The vocabulary of ``--classes`` and ``--exemplar``; every exemplar image is read and
    every box checked here, before a model is loaded.

    Raises:
        VocabularyError: neither is given, a bad spec or box; ImageError: an unreadable image.
    """
    from ovdet.core.exemplar_loading import load_exemplars
    from ovdet.structures.exemplars import parse_exemplar_spec

    specs = [parse_exemplar_spec(text) for text in exemplars]
    if classes is None and not specs:
        raise VocabularyError("give the classes to detect: --classes, --exemplar or both")
    vocabulary = Vocabulary.from_classes_and_exemplars(classes, specs)
    load_exemplars([e for per_class in vocabulary.exemplars for e in per_class])
    return vocabulary


def exemplar_specs_from_args(args: argparse.Namespace) -> list:
    """The :class:`~ovdet.structures.exemplars.ExemplarSpec` s of ``--exemplar`` and
    ``--exemplar-file``, each image read and box checked.

    Raises:
        VocabularyError: a bad line or spec; ImageError: an unreadable image.
    """
    from pathlib import Path

    from ovdet.core.exemplar_loading import load_exemplars
    from ovdet.structures.exemplars import parse_exemplar_spec

    specs = [parse_exemplar_spec(text) for text in args.exemplar]
    path = getattr(args, "exemplar_file", None)
    if path:
        try:
            lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise VocabularyError(f"cannot read --exemplar-file {path}: {e}") from None
        for number, line in enumerate(lines, 1):
            line = line.split("#", 1)[0].strip()
            if line:
                try:
                    specs.append(parse_exemplar_spec(line, relative_to=Path(path).parent))
                except VocabularyError as e:
                    raise VocabularyError(f"{path}, line {number}: {e}") from None
    load_exemplars([e for spec in specs for e in spec.exemplars])
    return specs
