"""The ONNX runtime's torch-free CLIP tokenizer gives open_clip's token ids."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tokenizers", reason="tokenizers is not installed (extra 'deploy')")

from open_clip.tokenizer import SimpleTokenizer  # noqa: E402

from ovdet.clip.text_classifier import TEMPLATE_SETS  # noqa: E402
from ovdet.export.tokenizer import ClipTokenizer, save_open_clip_tokenizer  # noqa: E402
from ovdet.utils.errors import CheckpointError, ConfigError  # noqa: E402

NAMES = [
    "red square", "traffic light", "hot-dog", "teddy_bear", "t-shirt (clothing)", "it's 3 dogs",
    "don't", "A.B.C. 123,456", "MiXeD CaSe", "  spaced\tout\nname  ", "café au lait",
    "naïve ÉLAN", "Über Straße", "日本語 テキスト", "emoji 😀 face", "&amp; ampersand",
    "caf\u00c3\u00a9",  # mojibake, which open_clip's ftfy repairs
    "",
]  # fmt: skip


@pytest.fixture(scope="module")
def open_clip_tokenizer() -> SimpleTokenizer:
    return SimpleTokenizer(context_length=77)


@pytest.fixture(scope="module")
def saved(open_clip_tokenizer, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    spec = save_open_clip_tokenizer(open_clip_tokenizer, folder / "tokenizer.json")
    return folder, spec


def test_ids_equal_open_clip(open_clip_tokenizer, saved):
    tokenizer = ClipTokenizer.from_manifest(*saved)
    texts = [t.format(n) for s in TEMPLATE_SETS.values() for t in s() for n in NAMES]
    got = tokenizer(texts)
    assert got.dtype == np.int64 and got.shape == (len(texts), 77)
    np.testing.assert_array_equal(got, open_clip_tokenizer(texts).numpy())


@pytest.mark.parametrize("context_length", [4, 16])
def test_truncation_keeps_the_end_token(saved, context_length):
    folder, spec = saved
    tokenizer = ClipTokenizer.from_manifest(folder, {**spec, "context_length": context_length})
    texts = ["a photo of a " + "very " * 30 + "long name.", "a dog"]
    expected = SimpleTokenizer(context_length=context_length)(texts).numpy()
    got = tokenizer(texts)
    np.testing.assert_array_equal(got, expected)
    assert got[0, -1] == spec["eot_token_id"]  # cut, with the end token last


def test_refused_tokenizers(tmp_path):
    with pytest.raises(ConfigError, match="clean='lower'"):
        save_open_clip_tokenizer(SimpleTokenizer(clean="whitespace"), tmp_path / "t.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read the tokenizer"):
        ClipTokenizer.from_manifest(tmp_path, {"file": "bad.json", "context_length": 77,
                                               "sot_token_id": 1, "eot_token_id": 2})  # fmt: skip
