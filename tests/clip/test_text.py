import warnings

import pytest
import torch

from ovdet.clip.text_classifier import TextClassifierBuilder, Vocabulary, load_templates
from ovdet.utils.errors import VocabularyError


def test_vocabulary_parsing_strips_and_rejects_bad_names(tmp_path):
    assert Vocabulary.parse(" kite ,umbrella").names == ("kite", "umbrella")
    for bad, msg in [("", "no class name"), (",,", "no class name"), ("a,,b", "#2 is empty"),
                     ("cat, Cat", "appears twice")]:  # fmt: skip
        with pytest.raises(VocabularyError, match=msg):
            Vocabulary.parse(bad)
    f = tmp_path / "classes.txt"
    f.write_text("# comment\ncar, automobile\n\nperson\n")
    vocab = Vocabulary.parse(str(f))
    assert vocab.names == ("car", "person") and vocab.synonyms[0] == ("automobile",)
    with pytest.raises(VocabularyError, match="does not exist"):
        Vocabulary.parse(str(tmp_path / "missing.txt"))


def test_vocabulary_from_coco_json(toy_dataset):
    vocab = Vocabulary.parse(str(toy_dataset / "instances.json"))
    assert vocab.names == ("red square", "blue circle", "green square")


def test_templates_by_name_and_file(tmp_path):
    assert load_templates("a") == ("a {}.",)
    assert len(load_templates("openai")) == 80
    f = tmp_path / "t.txt"
    f.write_text("a {} here\nthe {}\n")
    assert load_templates(str(f)) == ("a {} here", "the {}")
    f.write_text("no placeholder\n")
    with pytest.raises(VocabularyError, match="exactly one"):
        load_templates(str(f))


def test_embeddings_are_normalised_means_over_templates(tiny_clip, tmp_path):
    builder = TextClassifierBuilder(tiny_clip, ["a {}.", "the {}."], cache_dir="")
    emb = builder(["cat", "dog"])
    assert emb.shape == (2, 32)
    assert torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    clip = builder.clip
    with torch.no_grad():
        per = clip.model.encode_text(clip.tokenizer(["a cat.", "the cat."])).float()
    per = torch.nn.functional.normalize(per, dim=-1).mean(0)
    assert torch.allclose(emb[0], per / per.norm(), atol=1e-5)


def test_cache_hit_runs_the_text_tower_zero_times(tiny_clip, tmp_path):
    first = TextClassifierBuilder(tiny_clip, "vild", cache_dir=tmp_path)
    a = first("kite, umbrella, person")
    assert first.num_text_tower_calls >= 1
    second = TextClassifierBuilder(tiny_clip, "vild", cache_dir=tmp_path)
    b = second("kite, umbrella, person")
    assert second.num_text_tower_calls == 0
    assert second._clip is None  # not even loaded
    assert torch.equal(a, b)
    second("kite, umbrella")  # another vocabulary is a miss
    assert second.num_text_tower_calls == 1
    third = TextClassifierBuilder(tiny_clip, "a", cache_dir=tmp_path)  # other templates: miss
    third("kite, umbrella, person")
    assert third.num_text_tower_calls == 1


def test_long_names_are_truncated_with_a_warning(tiny_clip):
    builder = TextClassifierBuilder(tiny_clip, "a", cache_dir="")
    long_name = " ".join(["enormous"] * 40)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        emb = builder([long_name, "cat"])
    assert emb.shape[0] == 2
    assert any("truncated" in str(w.message) for w in caught)


class _Payload:
    """Unpickling this creates ``marker``: a stand-in for a file crafted to run code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        from pathlib import Path

        return (Path.touch, (Path(self.marker),))


def test_crafted_cache_file_is_ignored_and_runs_nothing(tiny_clip, tmp_path):
    builder = TextClassifierBuilder(tiny_clip, "a", cache_dir=tmp_path / "cache")
    expected = builder("kite, umbrella")
    (path,) = (tmp_path / "cache").rglob("*.pt")
    marker = tmp_path / "pwned"
    torch.save({"names": ["kite", "umbrella"], "embeddings": _Payload(marker)}, path)
    again = TextClassifierBuilder(tiny_clip, "a", cache_dir=tmp_path / "cache")
    assert torch.equal(again("kite, umbrella"), expected)  # recomputed
    assert again.num_text_tower_calls == 1
    assert not marker.exists()
