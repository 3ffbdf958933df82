"""Vocabularies, prompt templates and the cached CLIP text classifier.

A :class:`Vocabulary` (defined in :mod:`ovdet.structures.vocabulary`, re-exported here) is an
ordered list
of classes, each a display name plus optional synonyms. :class:`TextClassifierBuilder` turns it
into a ``Tensor[C, D]`` of L2-normalised CLIP text embeddings (averaged over templates and
synonyms), cached on disk by (CLIP model, weights digest, templates, names).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F

from ovdet.structures.vocabulary import Vocabulary
from ovdet.utils.errors import VocabularyError
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
    "detic": lambda: ("a {}",),
    "vild": lambda: _VILD_STYLE_TEMPLATES,
    "openai": _openai_templates,
}


def load_templates(spec: str | Sequence[str]) -> tuple[str, ...]:
    """Prompt templates by set name (``a``, ``detic``, ``vild``, ``openai``), file, or list.

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
