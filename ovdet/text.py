"""Vocabularies, prompt templates and the cached CLIP text classifier.

A :class:`Vocabulary` is an ordered list of classes, each a display name plus optional
synonyms. :class:`TextClassifierBuilder` turns it into a ``Tensor[C, D]`` of L2-normalised CLIP
text embeddings (averaged over templates and synonyms), cached on disk by
(CLIP model, weights digest, templates, names).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F

from ovdet.errors import VocabularyError
from ovdet.utils.io import atomic_torch_save

if TYPE_CHECKING:
    from ovdet.clip import ClipBackend

__all__ = [
    "TEMPLATE_SETS",
    "TextClassifierBuilder",
    "Vocabulary",
    "default_cache_dir",
    "load_templates",
]

logger = logging.getLogger(__name__)

# A ViLD-style set of prompts (photo / crop / size / quality variations). Not ViLD's exact list.
_VILD_STYLE_TEMPLATES = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a photo of one {}.",
    "a photo of a small {}.",
    "a photo of a large {}.",
    "a close-up photo of a {}.",
    "a cropped photo of a {}.",
    "a bright photo of a {}.",
    "a dark photo of a {}.",
    "a blurry photo of a {}.",
    "a good photo of a {}.",
    "a low resolution photo of a {}.",
    "there is a {} in the scene.",
    "this is a {}.",
)


def _openai_templates() -> tuple[str, ...]:
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return tuple(t("{}") if callable(t) else t for t in OPENAI_IMAGENET_TEMPLATES)


TEMPLATE_SETS = {
    "a": lambda: ("a {}.",),
    "vild": lambda: _VILD_STYLE_TEMPLATES,
    "openai": _openai_templates,
}


def load_templates(spec: str | Sequence[str]) -> tuple[str, ...]:
    """Prompt templates by set name (``a``, ``vild``, ``openai``), file, or explicit list.

    A template file holds one template per line, each with one ``{}`` for the class name.
    """
    if not isinstance(spec, str):
        templates = tuple(spec)
    elif spec in TEMPLATE_SETS:
        templates = TEMPLATE_SETS[spec]()
    else:
        path = Path(spec)
        if not path.is_file():
            raise VocabularyError(
                f"templates {spec!r} are neither a set name ({', '.join(TEMPLATE_SETS)}) "
                "nor an existing file"
            )
        lines = path.read_text(encoding="utf-8").splitlines()
        templates = tuple(line.strip() for line in lines if line.strip())
    if not templates:
        raise VocabularyError(f"no prompt templates in {spec!r}")
    bad = [t for t in templates if t.count("{}") != 1]
    if bad:
        raise VocabularyError(f"each template needs exactly one '{{}}'; bad: {bad[:3]}")
    return templates


@dataclass(frozen=True)
class Vocabulary:
    """An ordered list of classes; each has a display name and optional synonyms.

    Attributes:
        names: display names, ``C`` of them, unique after stripping (case-insensitive).
        synonyms: per class, extra names whose prompts are averaged with the name's.
    """

    names: tuple[str, ...]
    synonyms: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        if not self.synonyms:
            object.__setattr__(self, "synonyms", tuple(() for _ in self.names))
        if len(self.synonyms) != len(self.names):
            raise VocabularyError("synonyms must have one entry per class")
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

    @classmethod
    def from_names(cls, names: Sequence[str]) -> Vocabulary:
        """From a list of names (each stripped)."""
        return cls(tuple(str(n).strip() for n in names))

    @classmethod
    def from_string(cls, text: str) -> Vocabulary:
        """From ``"kite, umbrella"``: comma-separated names."""
        parts = [p.strip() for p in text.split(",")]
        if not any(parts):
            raise VocabularyError(f"the vocabulary {text!r} holds no class name")
        return cls(tuple(parts))

    @classmethod
    def from_file(cls, path: str | Path) -> Vocabulary:
        """From a text file: one class per line, ``name, synonym, synonym...``; ``#`` comments.

        A ``.json`` file is read as COCO/LVIS annotations (its ``categories``).
        """
        path = Path(path)
        if path.suffix == ".json":
            return cls.from_coco_json(path)
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()  # -sig: drop a BOM
        except (OSError, UnicodeDecodeError) as e:
            raise VocabularyError(f"cannot read vocabulary file {path}: {e}") from e
        names, synonyms = [], []
        for number, line in enumerate(lines, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = [p.strip() for p in line.split(",")]
            if not parts[0]:
                raise VocabularyError(f"{path}, line {number}: no class name before the comma")
            parts = [p for p in parts if p]
            names.append(parts[0])
            synonyms.append(tuple(parts[1:]))
        if not names:
            raise VocabularyError(f"vocabulary file {path} holds no class name")
        return cls(tuple(names), tuple(synonyms))

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


def default_cache_dir() -> Path:
    """``$OVDET_CACHE_DIR``, else ``~/.cache/ovdet``."""
    return Path(os.environ.get("OVDET_CACHE_DIR", Path.home() / ".cache" / "ovdet"))


class TextClassifierBuilder:
    """Builds (and caches) the ``Tensor[C, D]`` text classifier of a vocabulary.

    The CLIP model is loaded lazily: a fully cached vocabulary needs no CLIP at all.

    Args:
        clip: a CLIP spec string, a :class:`~ovdet.clip.ClipSpec`, or a loaded CLIP (any
            :class:`~ovdet.clip.ClipBackend`: open_clip or transformers).
        templates: a template set name, file or list (see :func:`load_templates`).
        cache_dir: cache folder; ``None`` for :func:`default_cache_dir`; ``""`` disables caching.
        device: where the text tower runs.
        batch_size: prompts per text-tower call.
    """

    def __init__(
        self,
        clip,
        templates: str | Sequence[str] = "vild",
        cache_dir: str | Path | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 1024,
    ) -> None:
        from ovdet.clip import ClipSpec

        loaded = not isinstance(clip, (str, ClipSpec))
        self._clip: ClipBackend | None = clip if loaded else None
        self.spec: ClipSpec = (
            clip.spec if loaded else (clip if isinstance(clip, ClipSpec) else ClipSpec.parse(clip))
        )
        self.templates = load_templates(templates)
        if cache_dir is None:
            cache_dir = default_cache_dir()
        self.cache_dir = Path(cache_dir) / "text" if str(cache_dir) else None
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.num_text_tower_calls = 0
        self._digest: str | None = None

    @property
    def clip(self) -> ClipBackend:
        """The loaded CLIP (loaded on first use)."""
        from ovdet.clip import load_clip

        if self._clip is None:
            self._clip = load_clip(self.spec, self.device)
        return self._clip

    def _weights_digest(self) -> str:
        if self._digest is None:
            if self._clip is not None:
                self._digest = self._clip.weights_digest()
            else:
                digest = self.spec.weights_digest()
                self._digest = digest if digest is not None else self.clip.weights_digest()
        return self._digest

    def cache_key(self, vocabulary: Vocabulary) -> str:
        """The cache file name: a hash of model id, weights digest, templates and names."""
        payload = {
            "model": self._clip.model_id if self._clip is not None else self.spec.model,
            "weights": self._weights_digest(),
            "templates": list(self.templates),
            "names": list(vocabulary.names),
            "synonyms": [list(s) for s in vocabulary.synonyms],
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:40]

    def __call__(self, vocabulary: Vocabulary | str | Sequence[str]) -> torch.Tensor:
        """The text classifier of a vocabulary.

        Returns:
            Tensor[C, D], float32 on CPU: one L2-normalised embedding per class.
        """
        vocabulary = Vocabulary.parse(vocabulary)
        path = None
        if self.cache_dir is not None:
            path = self.cache_dir / f"{self.cache_key(vocabulary)}.pt"
            if path.is_file():
                try:
                    cached = torch.load(path, map_location="cpu", weights_only=True)
                    if cached["names"] == list(vocabulary.names):
                        return cached["embeddings"]
                except (OSError, RuntimeError, KeyError, EOFError, pickle.UnpicklingError) as e:
                    # a corrupt file, or one holding more than tensors (refused): rebuilt below
                    logger.warning("Ignoring unreadable text-embedding cache %s: %s", path, e)
        embeddings = self.encode(vocabulary)
        if path is not None:
            try:
                atomic_torch_save({"names": list(vocabulary.names), "embeddings": embeddings}, path)
            except OSError as e:
                logger.warning("Cannot write the text-embedding cache %s: %s", path, e)
        return embeddings

    @torch.no_grad()
    def encode(self, vocabulary: Vocabulary) -> torch.Tensor:
        """Run the text tower (no cache). Returns ``Tensor[C, D]``, L2-normalised."""
        clip = self.clip
        prompts = vocabulary.prompts(self.templates)
        flat = [p for per_class in prompts for p in per_class]
        owner = torch.tensor(
            [i for i, per_class in enumerate(prompts) for _ in per_class], dtype=torch.long
        )
        self._warn_truncation(vocabulary, clip)
        chunks = []
        for start in range(0, len(flat), self.batch_size):
            self.num_text_tower_calls += 1
            features = clip.encode_text(flat[start : start + self.batch_size])
            chunks.append(F.normalize(features.float(), dim=-1).cpu())
        per_prompt = torch.cat(chunks)
        sums = torch.zeros(len(vocabulary), per_prompt.shape[1]).index_add_(0, owner, per_prompt)
        return F.normalize(sums, dim=-1)

    def _warn_truncation(self, vocabulary: Vocabulary, clip: ClipBackend) -> None:
        longest = max(self.templates, key=len)  # the longest template wraps each name
        if clip.num_tokens(longest.format("x")) is None:
            return
        too_long = [
            n
            for n in vocabulary.names
            if (clip.num_tokens(longest.format(n)) or 0) > clip.context_length
        ]
        if too_long:
            warnings.warn(
                f"{len(too_long)} class name(s) exceed CLIP's text context of "
                f"{clip.context_length} tokens and are truncated, e.g. {too_long[0][:60]!r}",
                stacklevel=4,
            )
