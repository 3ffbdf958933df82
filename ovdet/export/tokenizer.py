"""CLIP's BPE tokenizer without PyTorch, for the ONNX runtime.

open_clip's ``SimpleTokenizer`` returns torch tensors (its module imports torch). The export
saves the same vocabulary and merges as a Hugging Face ``tokenizers`` file set up as CLIP's
tokenizer is (NFC, white space collapsed, lower case; CLIP's word-splitting pattern; byte-level
BPE with ``</w>`` ending a word), and :class:`ClipTokenizer` reads it and returns the token ids
as numpy, cleaned, framed, truncated and padded as open_clip does: ``ftfy`` and HTML
unescaping first; then the start id, the ids, the end id; cut to the context length with the end
id kept last; zeros after. ``tests/test_export_tokenizer.py`` checks the ids against open_clip's.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from ovdet.utils.errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = ["CLIP_WORD_PATTERN", "ClipTokenizer", "build_clip_bpe", "save_open_clip_tokenizer"]

# How CLIP splits lower-cased text into words before BPE (OpenAI CLIP, open_clip).
CLIP_WORD_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def _tokenizers():
    try:
        import tokenizers
    except ImportError as e:
        raise ConfigError(
            f"the ONNX runtime's tokenizer needs 'tokenizers' (pip install ovdet[deploy]): {e}"
        ) from None
    return tokenizers


def build_clip_bpe(vocab: Mapping[str, int], merges: Sequence[tuple[str, str]]) -> Tokenizer:
    """A ``tokenizers.Tokenizer`` that splits and encodes text as CLIP's BPE tokenizer.

    Args:
        vocab: token -> id (the 256 byte symbols, the same with ``</w>``, one per merge, the
            special tokens).
        merges: the BPE merges, highest priority first.

    Returns:
        The tokenizer; it adds no start or end token (see :class:`ClipTokenizer`).
    """
    tk = _tokenizers()
    tokenizer = tk.Tokenizer(
        tk.models.BPE(
            vocab=dict(vocab),
            merges=[tuple(m) for m in merges],
            continuing_subword_prefix="",
            end_of_word_suffix="</w>",
            fuse_unk=False,
        )  # fmt: skip
    )
    tokenizer.normalizer = tk.normalizers.Sequence(
        [tk.normalizers.NFC(), tk.normalizers.Replace(tk.Regex(r"\s+"), " "),
         tk.normalizers.Lowercase()]
    )  # fmt: skip
    tokenizer.pre_tokenizer = tk.pre_tokenizers.Sequence(
        [
            tk.pre_tokenizers.Split(tk.Regex(CLIP_WORD_PATTERN), behavior="removed", invert=True),
            tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = tk.decoders.ByteLevel()
    return tokenizer


def save_open_clip_tokenizer(open_clip_tokenizer: Any, path: str | Path) -> dict:
    """Save an open_clip ``SimpleTokenizer`` (its vocabulary and merges) as a ``tokenizers`` file.

    Args:
        open_clip_tokenizer: the CLIP's tokenizer; its text cleaning must be open_clip's default
            (``clean="lower"``) and it must truncate (no ``reduction_mask``).
        path: the ``.json`` file written (atomically).

    Returns:
        The manifest entry :meth:`ClipTokenizer.from_manifest` reads (``file`` is the name).
    """
    from open_clip import tokenizer as oct

    tok = open_clip_tokenizer
    if getattr(tok, "reduction_fn", None) is not None or tok.clean_fn is not oct._clean_lower:
        raise ConfigError(
            "ONNX export supports open_clip's BPE tokenizer with its default text cleaning and "
            "truncation (clean='lower', no reduction_mask)"
        )
    from ovdet.utils.io import atomic_open

    merges = sorted(tok.bpe_ranks, key=tok.bpe_ranks.get)
    tokenizer = build_clip_bpe(tok.encoder, merges)
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(tokenizer.to_str())
    return {
        "type": "clip-bpe",
        "file": Path(path).name,
        "context_length": int(tok.context_length),
        "sot_token_id": int(tok.sot_token_id),
        "eot_token_id": int(tok.eot_token_id),
    }


class ClipTokenizer:
    """CLIP's tokenizer on numpy: ``texts -> int64 [N, context_length]``.

    Args:
        tokenizer: a tokenizer of :func:`build_clip_bpe`.
        context_length: the text tower's token count L.
        sot_token_id: the start-of-text id; eot_token_id: the end-of-text id.
    """

    def __init__(
        self, tokenizer: Tokenizer, context_length: int, sot_token_id: int, eot_token_id: int
    ) -> None:
        self.tokenizer = tokenizer
        self.context_length = int(context_length)
        self.sot_token_id = int(sot_token_id)
        self.eot_token_id = int(eot_token_id)

    @classmethod
    def from_manifest(cls, folder: str | Path, spec: Mapping[str, Any]) -> ClipTokenizer:
        """Load the tokenizer an export manifest names (``spec["file"]`` relative to ``folder``)."""
        path = Path(folder) / str(spec["file"])
        try:
            tokenizer = _tokenizers().Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises its own exception types
            raise CheckpointError(f"cannot read the tokenizer {path}: {e}") from None
        return cls(tokenizer, spec["context_length"], spec["sot_token_id"], spec["eot_token_id"])

    @staticmethod
    def clean(text: str) -> str:
        """open_clip's cleaning before the normaliser: ftfy's fixes, HTML entities unescaped."""
        import ftfy

        return html.unescape(html.unescape(ftfy.fix_text(text))).strip()

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        """Token ids of each text: int64 [N, L], start id, ids, end id, zeros."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        encodings = self.tokenizer.encode_batch(
            [self.clean(t) for t in texts], add_special_tokens=False
        )
        out = np.zeros((len(texts), self.context_length), np.int64)
        for row, encoding in zip(out, encodings):
            ids = [self.sot_token_id, *encoding.ids, self.eot_token_id][: self.context_length]
            ids[-1] = self.eot_token_id
            row[: len(ids)] = ids
        return out
