"""CLIP spec strings: which model, which weights, which backend (no weights are loaded here)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ovdet.utils.errors import CheckpointError, ConfigError

__all__ = ["ClipSpec", "file_digest", "HF_SCHEMA"]

_SCHEMAS = ("local-dir:", "hf-hub:")
HF_SCHEMA = "hf:"
# A Hugging Face Hub id: "name" or "org/name" (anything else is taken as a local path).
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# Files of a transformers folder that change its text or image embeddings.
_HF_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_HF_EXTRA_FILES = ("config.json", "tokenizer.json", "vocab.json", "merges.txt", "spiece.model")


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
        model: the open_clip model name (possibly ``local-dir:DIR`` or ``hf-hub:ORG/REPO``), or
            ``hf:PATH_OR_HUB_ID`` for the transformers backend.
        weights: a pretrained tag, a checkpoint path, or ``None`` (the model's own/random init;
            always ``None`` for ``hf:``, whose folder or hub repository holds the weights).
    """

    model: str
    weights: str | None = None

    @classmethod
    def parse(cls, spec: str) -> ClipSpec:
        """Parse ``MODEL[:WEIGHTS]``, ``local-dir:DIR[:CKPT]`` or ``hf:PATH_OR_HUB_ID``.

        Raises:
            ConfigError: an empty spec, or one that names no model or ends with ``:``.
        """
        spec = spec.strip()
        if not spec:
            raise ConfigError("empty CLIP spec; expected e.g. 'ViT-B-32:openai'")
        if spec.startswith(HF_SCHEMA):
            path = spec[len(HF_SCHEMA) :].strip()
            if not path:
                raise ConfigError(f"CLIP spec {spec!r} names no folder or hub id after 'hf:'")
            return cls(HF_SCHEMA + os.path.expanduser(path))
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

    def absolute(self, base: str | Path | None = None) -> ClipSpec:
        """This spec with its local paths absolute, resolved against ``base`` (default: the
        working directory): the folder of ``local-dir:DIR`` and of ``hf:DIR`` (where it is a
        folder, not a hub id) and a weights file. Model names, pretrained tags and hub ids are
        kept. A spec written with it (e.g. into a saved config) names the same files from any
        working directory."""

        def absolute_path(path: str) -> str:
            return os.path.normpath(os.path.join(base or os.getcwd(), os.path.expanduser(path)))

        model, weights = self.model, self.weights
        if self.local_dir is not None:
            model = "local-dir:" + absolute_path(str(self.local_dir))
        elif self.backend == "hf":
            name = self.hf_name
            if Path(base or ".", name).is_dir() or name.startswith((".", "~", os.sep)):
                model = HF_SCHEMA + absolute_path(name)
        if self.weights_is_file:
            weights = absolute_path(self.weights)
        return ClipSpec(model, weights)

    @property
    def backend(self) -> str:
        """``"hf"`` (transformers) for ``hf:`` specs, else ``"open_clip"``."""
        return "hf" if self.model.startswith(HF_SCHEMA) else "open_clip"

    @property
    def hf_name(self) -> str | None:
        """The folder or hub id of an ``hf:`` spec (``None`` for open_clip specs)."""
        return self.model[len(HF_SCHEMA) :] if self.backend == "hf" else None

    @property
    def hf_local_dir(self) -> Path | None:
        """The local folder of an ``hf:`` spec; ``None`` for a hub id or an open_clip spec.

        Raises:
            ConfigError: the name looks like a path (not a hub id) but is no folder.
        """
        name = self.hf_name
        if name is None:
            return None
        path = Path(name)
        if path.is_dir():
            return path
        if path.exists() or not _HUB_ID.match(name) or name.startswith((".", "~")):
            raise ConfigError(
                f"CLIP folder {name} (spec 'hf:{name}') does not exist or is not a folder"
            )
        return None

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

        ``hf:`` folders hash their weight files (``*.safetensors``, ``*.bin``) with their
        config and tokenizer files; a hub id gives ``hub:ID``.

        Returns ``None`` where only the loaded weights can tell (random init).
        """
        if self.backend == "hf":
            return self._hf_digest()
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

    def _hf_digest(self) -> str:
        folder = self.hf_local_dir
        if folder is None:
            return f"hub:{self.hf_name}"
        files = sorted(p for p in folder.iterdir() if p.suffix in _HF_WEIGHT_SUFFIXES)
        if not files:
            raise CheckpointError(f"CLIP folder {folder} holds no *.safetensors or *.bin weights")
        files += [folder / n for n in _HF_EXTRA_FILES if (folder / n).is_file()]
        h = hashlib.sha256()
        for path in files:
            h.update(f"{path.name}:{file_digest(path)}\n".encode())
        return "files:" + h.hexdigest()

    def model_config(self) -> dict:
        """The model architecture config.

        For open_clip: ``embed_dim``, ``vision_cfg``, ``text_cfg``. For ``hf:``: the
        transformers ``config.json`` (read from the folder, or from the local hub cache).
        """
        if self.backend == "hf":
            return self._hf_config()
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

    def _hf_config(self) -> dict:
        folder = self.hf_local_dir
        if folder is not None:
            path = folder / "config.json"
        else:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(self.hf_name, "config.json")
            if not isinstance(cached, str):
                raise ConfigError(
                    f"CLIP hub model {self.hf_name!r} is not in the local Hugging Face cache, so "
                    "its embedding size is unknown before loading; load it once (load_clip) or "
                    "set MODEL.OVDET.EMBED_DIM"
                )
            path = Path(cached)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"cannot read the CLIP model config {path}: {e}") from e

    @cached_property
    def embed_dim(self) -> int:
        """Dimension of CLIP's joint embedding space, read from the model config."""
        if self.backend == "hf":
            return hf_embed_dim(self.model_config(), str(self))
        return int(self.model_config()["embed_dim"])


def hf_embed_dim(config: dict, name: str = "") -> int:
    """The joint embedding size of a transformers CLIP/SigLIP ``config.json`` dict.

    Raises:
        ConfigError: a model type other than ``clip`` or ``siglip``.
    """
    model_type = config.get("model_type")
    if model_type == "clip":
        return int(config.get("projection_dim", 512))
    if model_type == "siglip":
        text = config.get("text_config") or {}
        return int(text.get("projection_size") or text.get("hidden_size", 768))
    raise ConfigError(
        f"CLIP {name or 'model'} has model_type {model_type!r}; the transformers backend "
        "supports 'clip' and 'siglip'"
    )
