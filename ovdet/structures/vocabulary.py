"""A vocabulary: the ordered class names (with synonyms) a detector is asked to find.

Kept free of PyTorch (the ONNX runtime, :mod:`ovdet.export.runtime`, parses vocabularies
without it); :mod:`ovdet.clip.text_classifier` re-exports :class:`Vocabulary` beside the text
classifier.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ovdet.structures.exemplars import Exemplar, ExemplarSpec, parse_exemplar_spec
from ovdet.utils.errors import VocabularyError

__all__ = ["CLASS_KINDS", "Vocabulary", "normalize_name", "split_names"]

CLASS_KINDS = ("text", "exemplar", "text+exemplar")
"""How a class is given: by its name's text, by image exemplars, or by both."""


def split_names(text: str) -> list[str]:
    """Comma-separated names, each stripped, by the CSV quoting rules: a name holding a comma is
    written in double quotes (``kite, "red, square"`` is two names), ``""`` inside quotes is a
    quote.

    Raises:
        VocabularyError: an unterminated quote.
    """
    try:
        [fields] = csv.reader([text], skipinitialspace=True, strict=True)
    except (csv.Error, ValueError) as e:  # ValueError: a line break inside the text
        raise VocabularyError(f"cannot read the class list {text!r}: {e}") from None
    return [field.strip() for field in fields]


def normalize_name(name: str) -> str:
    """Canonical form used to match category names: lower case, ``_`` as space, single spaces."""
    return " ".join(name.replace("_", " ").lower().split())


@dataclass(frozen=True)
class Vocabulary:
    """An ordered list of classes; each has a display name, optional synonyms and optional
    image exemplars (:mod:`ovdet.structures.exemplars`).

    Attributes:
        names: display names, ``C`` of them, unique after stripping (case-insensitive).
        synonyms: per class, extra names whose prompts are averaged with the name's.
        exemplars: per class, example boxes (empty for a class given by text only).
        uses_text: per class, whether its name's text embedding is used; ``False`` only for a
            class given by exemplars alone (its name is then a label, not a query).
    """

    names: tuple[str, ...]
    synonyms: tuple[tuple[str, ...], ...] = ()
    exemplars: tuple[tuple[Exemplar, ...], ...] = ()
    uses_text: tuple[bool, ...] = ()

    def __post_init__(self) -> None:
        if not self.synonyms:
            object.__setattr__(self, "synonyms", tuple(() for _ in self.names))
        if not self.exemplars:
            object.__setattr__(self, "exemplars", tuple(() for _ in self.names))
        if not self.uses_text:
            object.__setattr__(self, "uses_text", tuple(True for _ in self.names))
        if len(self.synonyms) != len(self.names):
            raise VocabularyError("synonyms must have one entry per class")
        if len(self.exemplars) != len(self.names) or len(self.uses_text) != len(self.names):
            raise VocabularyError("exemplars and uses_text must have one entry per class")
        for name, exemplars, text in zip(self.names, self.exemplars, self.uses_text):
            if not text and not exemplars:
                raise VocabularyError(f"class {name!r} is given by neither text nor exemplars")
        if not self.names:
            raise VocabularyError("the vocabulary is empty; give at least one class name")
        seen: dict[str, int] = {}
        for i, name in enumerate(self.names):
            if not isinstance(name, str) or not name.strip():
                raise VocabularyError(f"class name #{i + 1} is empty")
            if name != name.strip():
                raise VocabularyError(f"class name {name!r} has surrounding white space")
            key = " ".join(name.lower().split())
            if key in seen:
                raise VocabularyError(
                    f"class name {name!r} appears twice (#{seen[key] + 1} and #{i + 1})"
                )
            seen[key] = i

    def __len__(self) -> int:
        return len(self.names)

    @property
    def kinds(self) -> tuple[str, ...]:
        """Per class, how it is given: one of :data:`CLASS_KINDS`."""
        return tuple(
            "text" if not ex else ("text+exemplar" if text else "exemplar")
            for ex, text in zip(self.exemplars, self.uses_text)
        )

    @property
    def has_exemplars(self) -> bool:
        """Whether any class is given by exemplars."""
        return any(self.exemplars)

    def text_classes(self) -> tuple[Vocabulary | None, list[int]]:
        """The classes whose text embedding is used, as a vocabulary of names and synonyms
        (``None`` where there is none), and their indices in this one."""
        index = [i for i, text in enumerate(self.uses_text) if text]
        if not index:
            return None, []
        names = tuple(self.names[i] for i in index)
        return Vocabulary(names, tuple(self.synonyms[i] for i in index)), index

    def with_exemplars(self, specs: Sequence[ExemplarSpec]) -> Vocabulary:
        """This vocabulary with exemplars added (see :mod:`ovdet.structures.exemplars`).

        ``name=...`` gives a class by its exemplars alone (a class of that name here loses its
        text query), ``name+=...`` by its text and exemplars; a new name is a new class, after
        the others. The same name again adds exemplars.

        Raises:
            VocabularyError: a spec names a synonym of another class, or one class is given both
                as ``name=...`` and as ``name+=...``.
        """
        names, synonyms = list(self.names), list(self.synonyms)
        exemplars, uses_text = [list(e) for e in self.exemplars], list(self.uses_text)
        for spec in specs:
            key = normalize_name(spec.name)
            found = [i for i, n in enumerate(names) if normalize_name(n) == key]
            owner = [
                n for n, syn in zip(names, synonyms) if key in {normalize_name(s) for s in syn}
            ]
            if owner and not found:
                raise VocabularyError(
                    f"exemplar class {spec.name!r} is a synonym of class {owner[0]!r}; "
                    f"give the exemplars to {owner[0]!r}"
                )
            if not found:
                names.append(spec.name)
                synonyms.append(())
                exemplars.append(list(spec.exemplars))
                uses_text.append(spec.with_text)
                continue
            i = found[0]
            if exemplars[i] and uses_text[i] != spec.with_text:
                raise VocabularyError(
                    f"class {names[i]!r} is given both by exemplars alone ({names[i]}=...) and "
                    f"by its text and exemplars ({names[i]}+=...); use one of the two"
                )
            exemplars[i].extend(spec.exemplars)
            uses_text[i] = spec.with_text
        return Vocabulary(
            tuple(names), tuple(synonyms), tuple(tuple(e) for e in exemplars), tuple(uses_text)
        )

    @classmethod
    def from_classes_and_exemplars(
        cls, classes: str | Sequence[str] | Vocabulary | None, specs: Sequence[ExemplarSpec]
    ) -> Vocabulary:
        """:meth:`parse` of ``classes`` (``None`` or empty: none) with the exemplar classes
        of ``specs`` (:meth:`with_exemplars`)."""
        empty = classes is None or (not isinstance(classes, (str, Vocabulary)) and not classes)
        if empty and specs:
            return cls.from_exemplar_specs(specs)
        return cls.parse(classes if classes is not None else ()).with_exemplars(specs)

    @classmethod
    def from_exemplar_specs(cls, specs: Sequence[ExemplarSpec]) -> Vocabulary:
        """Only classes given by exemplars (see :meth:`with_exemplars`)."""
        if not specs:
            raise VocabularyError("the vocabulary is empty; give at least one class name")
        first = specs[0]
        vocabulary = cls((first.name,), (), (first.exemplars,), (first.with_text,))
        return vocabulary.with_exemplars(specs[1:])

    @classmethod
    def from_names(cls, names: Sequence[str]) -> Vocabulary:
        """From a list of names (each stripped)."""
        return cls(tuple(str(n).strip() for n in names))

    @classmethod
    def from_string(cls, text: str) -> Vocabulary:
        """From ``"kite, umbrella"``: comma-separated names (a name holding a comma in double
        quotes, see :func:`split_names`)."""
        parts = split_names(text)
        if not any(parts):
            raise VocabularyError(f"the vocabulary {text!r} holds no class name")
        return cls(tuple(parts))

    @classmethod
    def from_file(cls, path: str | Path) -> Vocabulary:
        """From a text file: one class per line, ``name, synonym, synonym...`` (split as
        :func:`split_names`), or a class given by exemplars, ``name=image.jpg:x,y,w,h; ...`` or
        ``name+=...`` (:func:`~ovdet.structures.exemplars.parse_exemplar_spec`; image paths
        relative to the file's folder); ``#`` comments.

        A ``.json`` file is read as COCO/LVIS annotations (its ``categories``).
        """
        path = Path(path)
        if path.suffix == ".json":
            return cls.from_coco_json(path)
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()  # -sig: drop a BOM
        except (OSError, UnicodeDecodeError) as e:
            raise VocabularyError(f"cannot read vocabulary file {path}: {e}") from e
        names, synonyms, specs = [], [], []
        for number, line in enumerate(lines, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            if "=" in line:
                try:
                    specs.append(parse_exemplar_spec(line, relative_to=path.parent))
                except VocabularyError as e:
                    raise VocabularyError(f"{path}, line {number}: {e}") from None
                continue
            try:
                parts = split_names(line)
            except VocabularyError as e:
                raise VocabularyError(f"{path}, line {number}: {e}") from None
            if not parts[0]:
                raise VocabularyError(f"{path}, line {number}: no class name before the comma")
            parts = [p for p in parts if p]
            names.append(parts[0])
            synonyms.append(tuple(parts[1:]))
        if not names and not specs:
            raise VocabularyError(f"vocabulary file {path} holds no class name")
        if not names:
            return cls.from_exemplar_specs(specs)
        return cls(tuple(names), tuple(synonyms)).with_exemplars(specs)

    @classmethod
    def from_coco_json(cls, path: str | Path) -> Vocabulary:
        """From the ``categories`` of a COCO/LVIS JSON (LVIS ``synonyms`` are kept)."""
        try:
            with open(path, encoding="utf-8-sig") as f:
                data = json.load(f)
        except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON or UTF-8
            raise VocabularyError(f"cannot read categories from {path}: {e}") from e
        cats = data.get("categories") if isinstance(data, dict) else None
        if not isinstance(cats, list):
            raise VocabularyError(f"{path} holds no 'categories' list")
        names, synonyms = [], []
        for i, cat in enumerate(cats):
            name = cat.get("name") if isinstance(cat, dict) else None
            if not isinstance(name, str):
                raise VocabularyError(f"{path}: categories[{i}] has no 'name' string")
            name = name.replace("_", " ").strip()
            extra = cat.get("synonyms") or []
            if not isinstance(extra, list) or not all(isinstance(s, str) for s in extra):
                raise VocabularyError(
                    f"{path}: the 'synonyms' of category {name!r} must be a list of strings"
                )
            extra = [s.replace("_", " ").strip() for s in extra]
            names.append(name)
            synonyms.append(tuple(s for s in dict.fromkeys(extra) if s and s != name))
        return cls(tuple(names), tuple(synonyms))

    @classmethod
    def parse(cls, spec: str | Sequence[str] | Vocabulary) -> Vocabulary:
        """From a comma-separated string, a text/JSON file path, a list of names or a vocabulary."""
        if isinstance(spec, Vocabulary):
            return spec
        if not isinstance(spec, str):
            return cls.from_names(spec)
        if "," not in spec and (spec.endswith((".txt", ".json")) or os.sep in spec):
            if not Path(spec).is_file():
                raise VocabularyError(f"vocabulary file {spec} does not exist")
            return cls.from_file(spec)
        return cls.from_string(spec)

    def prompts(self, templates: Sequence[str]) -> list[list[str]]:
        """Per class, every template filled with its name and each synonym."""
        return [
            [t.format(n) for n in (name, *syn) for t in templates]
            for name, syn in zip(self.names, self.synonyms)
        ]
