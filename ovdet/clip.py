"""Loading CLIP through open_clip from one spec string.

A spec names the model and, optionally, its weights::

    ViT-B-32:openai                  built-in model, pretrained tag (downloaded once by open_clip)
    ViT-B-32:/path/to/weights.pt     built-in model, local checkpoint file
    ViT-B-32                         built-in model, random init
    local-dir:DIR                    DIR/open_clip_config.json (+ weights in DIR if present);
                                     DIR may name a folder shipped in ovdet/configs (clip/tiny)
    local-dir:DIR:/path/ckpt.pt      custom model config, weights from a checkpoint file
                                     (e.g. one written by open_clip_train)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ovdet.errors import CheckpointError, ConfigError

__all__ = ["ClipSpec", "LoadedClip", "load_clip", "file_digest"]

logger = logging.getLogger(__name__)

_SCHEMAS = ("local-dir:", "hf-hub:")


def file_digest(path: str | Path, chunk_size: int = 1 << 22) -> str:
    """SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class ClipSpec:
    """A parsed CLIP spec string.

    Attributes:
        model: the open_clip model name (possibly ``local-dir:DIR`` or ``hf-hub:ORG/REPO``).
        weights: a pretrained tag, a checkpoint path, or ``None`` (the model's own/random init).
    """

    model: str
    weights: str | None = None

    @classmethod
    def parse(cls, spec: str) -> ClipSpec:
        spec = spec.strip()
        if not spec:
            raise ConfigError("empty CLIP spec; expected e.g. 'ViT-B-32:openai'")
        schema = next((s for s in _SCHEMAS if spec.startswith(s)), "")
        rest = spec[len(schema) :]
        name, sep, weights = rest.partition(":")
        if not name:
            raise ConfigError(f"CLIP spec {spec!r} names no model")
        if sep and not weights:
            raise ConfigError(f"CLIP spec {spec!r} ends with ':' but names no weights")
        if schema == "local-dir:" and not Path(name).expanduser().is_dir():
            from ovdet.config.catalog import CONFIG_DIR, _shipped

            shipped = _shipped(name)  # a model config shipped in the package, e.g. "clip/tiny"
            if shipped is not None and shipped.is_dir() and CONFIG_DIR in shipped.parents:
                name = str(shipped)
        return cls(schema + name, weights or None)

    def __str__(self) -> str:
        return f"{self.model}:{self.weights}" if self.weights else self.model

    @property
    def weights_is_file(self) -> bool:
        return self.weights is not None and (
            os.sep in self.weights or Path(self.weights).suffix in (".pt", ".pth", ".bin")
        )

    @property
    def local_dir(self) -> Path | None:
        return (
            Path(self.model[len("local-dir:") :]) if self.model.startswith("local-dir:") else None
        )

    def weights_digest(self) -> str | None:
        """A digest that changes whenever the weights do, without loading the model.

        Returns ``None`` where only the loaded weights can tell (random init).
        """
        if self.weights is None:
            if self.local_dir is not None:
                found = sorted(
                    p
                    for p in self.local_dir.glob("*")
                    if p.suffix in (".bin", ".pt", ".pth", ".safetensors")
                )
                if found:
                    return "file:" + file_digest(found[0])
            return None
        if self.weights_is_file:
            path = Path(self.weights)
            if not path.is_file():
                raise CheckpointError(f"CLIP weights file {path} does not exist")
            return "file:" + file_digest(path)
        return f"tag:{self.weights}"

    def model_config(self) -> dict:
        """The model architecture config (``embed_dim``, ``vision_cfg``, ``text_cfg``)."""
        import open_clip

        if self.local_dir is not None:
            path = self.local_dir / "open_clip_config.json"
            try:
                return json.loads(path.read_text(encoding="utf-8"))["model_cfg"]
            except (OSError, KeyError, json.JSONDecodeError) as e:
                raise ConfigError(f"cannot read the CLIP model config {path}: {e}") from e
        cfg = open_clip.get_model_config(self.model)
        if cfg is None:
            raise ConfigError(
                f"unknown CLIP model {self.model!r}; see open_clip.list_models() for names, "
                "or use 'local-dir:DIR' for a custom config"
            )
        return cfg

    @cached_property
    def embed_dim(self) -> int:
        """Dimension of CLIP's joint embedding space, read from the model config."""
        return int(self.model_config()["embed_dim"])


@dataclass
class LoadedClip:
    """A CLIP model, its tokenizer and its image normalisation.

    Attributes:
        spec: what was loaded.
        model: the open_clip model in eval mode, parameters frozen.
        tokenizer: callable ``list[str] -> LongTensor[N, context_length]``.
        image_size: the square input side of the image tower.
        mean, std: per-channel normalisation of the image tower (RGB, inputs in [0, 1]).
    """

    spec: ClipSpec
    model: nn.Module
    tokenizer: Callable
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def embed_dim(self) -> int:
        return self.spec.embed_dim

    @property
    def context_length(self) -> int:
        return int(getattr(self.tokenizer, "context_length", 77))

    def weights_digest(self) -> str:
        """The spec's digest, or one of the loaded weights for randomly initialised models."""
        digest = self.spec.weights_digest()
        if digest is not None:
            return digest
        h = hashlib.sha256()
        for name, tensor in sorted(self.model.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return "state:" + h.hexdigest()


def load_clip(spec: str | ClipSpec, device: str | torch.device = "cpu") -> LoadedClip:
    """Load a frozen CLIP model from a spec (see the module docstring).

    Raises:
        ConfigError: unknown model name or bad spec.
        CheckpointError: missing or incompatible weights file, or a tag that cannot be fetched.
    """
    import open_clip

    spec = ClipSpec.parse(spec) if isinstance(spec, str) else spec
    spec.model_config()  # validates the model name before any download
    if spec.local_dir is not None and not spec.local_dir.is_dir():
        raise ConfigError(f"CLIP model folder {spec.local_dir} does not exist")
    if spec.weights_is_file and not Path(spec.weights).is_file():
        raise CheckpointError(f"CLIP weights file {spec.weights} does not exist")
    # With a schema, open_clip ignores `pretrained`; custom weights are loaded afterwards.
    pretrained = None if spec.local_dir is not None else spec.weights
    try:
        # Randomly initialised models are seeded, so that two loads give the same weights (and
        # the same text embeddings): a model without weights is still reproducible.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model, _, preprocess = open_clip.create_model_and_transforms(
                spec.model, pretrained=pretrained, device=device
            )
        if spec.local_dir is not None and spec.weights is not None:
            open_clip.load_checkpoint(model, spec.weights, device=device)
    except RuntimeError as e:
        if "Error(s) in loading state_dict" in str(e) or "size mismatch" in str(e):
            raise CheckpointError(
                f"CLIP weights {spec.weights} do not fit model {spec.model}: "
                f"{str(e).splitlines()[0]}"
            ) from e
        raise CheckpointError(f"cannot load CLIP {spec}: {e}") from e
    except (OSError, ValueError) as e:
        raise CheckpointError(
            f"cannot load CLIP {spec}: {e}. Without internet, pass a local checkpoint file "
            "('MODEL:/path/to/weights.pt')."
        ) from e
    model.eval().requires_grad_(False)
    tokenizer = open_clip.get_tokenizer(spec.model)
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    mean = getattr(model.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
    std = getattr(model.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
    logger.info("Loaded CLIP %s (embed dim %d, input %d px)", spec, spec.embed_dim, size)
    return LoadedClip(spec, model, tokenizer, int(size), tuple(mean), tuple(std))
