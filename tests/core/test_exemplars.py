"""Exemplar classes: the mixed text + exemplar classifier on hand-made vectors, and the checks
of exemplar boxes and images before anything is embedded or cached."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ovdet.core.exemplars import (
    ExemplarEmbedder,
    RegionCalibration,
    class_embeddings,
    mix_by_scores,
    mix_class_embeddings,
    reference_boxes,
    rescoring_class_embeddings,
)
from ovdet.structures import Vocabulary
from ovdet.structures.exemplars import (
    Exemplar,
    ExemplarSpec,
    exemplar_specs,
    parse_exemplar_spec,
)
from ovdet.utils.errors import ConfigError, ImageError, VocabularyError


def _unit(*values: float) -> torch.Tensor:
    return F.normalize(torch.tensor(values, dtype=torch.float32), dim=0)


def test_mixed_vocabulary_has_the_expected_order_and_embeddings():
    """Text classes, a class by name and exemplars, and a class by exemplars alone: rows in the
    vocabulary's order; K exemplars averaged and normalised; the text mixed in by its weight."""
    vocab = Vocabulary.from_names(["cat", "mug"]).with_exemplars(
        [
            ExemplarSpec("logo", (Exemplar("a.png"), Exemplar("b.png"))),
            ExemplarSpec("mug", (Exemplar("c.png"),), with_text=True),
        ]
    )
    assert vocab.names == ("cat", "mug", "logo")
    assert vocab.kinds == ("text", "text+exemplar", "exemplar")
    text_vocab, text_index = vocab.text_classes()
    assert text_vocab.names == ("cat", "mug") and text_index == [0, 1]

    text_rows = {"cat": _unit(1, 0, 0, 0), "mug": _unit(0, 1, 0, 0)}
    image_rows = {"a.png": _unit(0, 0, 1, 0), "b.png": _unit(0, 0, 0, 1)}
    image_rows["c.png"] = image_rows["a.png"]

    def text(v: Vocabulary) -> torch.Tensor:
        return torch.stack([text_rows[n] for n in v.names])

    def exemplars(items) -> torch.Tensor:
        return torch.stack([image_rows[e.image] for e in items])

    out = class_embeddings(vocab, text, exemplars, text_weight=0.25)
    torch.testing.assert_close(out[0], _unit(1, 0, 0, 0))
    torch.testing.assert_close(out[1], _unit(0, 0.25, 0.75, 0))  # 0.25 * text + 0.75 * image
    torch.testing.assert_close(out[2], _unit(0, 0, 1, 1))  # the mean of two, normalised
    assert torch.allclose(out.norm(dim=1), torch.ones(3))


def test_text_weight_one_and_zero_keep_one_side():
    text = _unit(1, 0)[None]
    image = [_unit(0, 1)[None]]
    torch.testing.assert_close(mix_class_embeddings(1, text, [0], image, [0], 1.0)[0], _unit(1, 0))
    torch.testing.assert_close(mix_class_embeddings(1, text, [0], image, [0], 0.0)[0], _unit(0, 1))
    with pytest.raises(ConfigError, match="text weight"):
        mix_class_embeddings(1, text, [0], image, [0], 1.5)


def test_text_and_exemplars_mix_their_scores_in_a_unit_row():
    """A class by name and exemplars scores every region (not using the unused direction) as
    the weighted mean of its text's and its exemplars' scores, and is a unit row. Normalising
    ``w * text + (1 - w) * exemplars`` would scale those scores up by 1 / |mix|."""
    text = _unit(1, 0, 0, 0)[None]
    exemplar = _unit(0.2, 1, 0, 0)[None]
    unused = _unit(0, 0, 0, 1)
    row = mix_by_scores(text, exemplar, 0.5, unused)
    torch.testing.assert_close(row.norm(dim=1), torch.ones(1))
    regions = F.normalize(torch.randn(50, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    regions[:, 3] = 0.0  # the regions do not use the unused direction
    expected = 0.5 * regions @ text[0] + 0.5 * regions @ exemplar[0]
    torch.testing.assert_close(regions @ row[0], expected)
    mix = 0.5 * text[0] + 0.5 * exemplar[0]
    assert float(mix.norm()) < 0.8  # normalising the mix (the old rule) scales scores by 1.29
    torch.testing.assert_close(regions @ F.normalize(mix, dim=0), expected / mix.norm())
    # w = 1 or 0: one side as it is, also where it uses the unused direction
    side = _unit(0.3, 0, 0, -0.5)[None]
    torch.testing.assert_close(mix_by_scores(side, exemplar, 1.0, unused), side)
    torch.testing.assert_close(mix_by_scores(text, side, 0.0, unused), side)


def test_mixed_class_mixes_by_scores_given_an_unused_direction():
    text = _unit(1, 0, 0)[None]
    image = [_unit(0, 1, 0)[None]]
    unused = _unit(0, 0, 1)
    out = mix_class_embeddings(1, text, [0], image, [0], 0.25, unused)
    torch.testing.assert_close(out[0], torch.tensor([0.25, 0.75, (1 - 0.25**2 - 0.75**2) ** 0.5]))


def _two_colour_image(tmp_path) -> str:
    array = np.zeros((20, 30, 3), np.uint8)
    array[:, :15] = (200, 20, 20)
    array[:, 15:] = (20, 20, 200)
    Image.fromarray(array).save(tmp_path / "a.png")
    return str(tmp_path / "a.png")


@pytest.mark.parametrize("source", ["region", "clip"])
def test_clip_rescoring_leaves_the_names_of_region_exemplar_classes_to_clip(tmp_path, source):
    """With CLIP rescoring on, a class by name and the detector's region embeddings is given
    to the detector by its exemplars alone (its name is scored by CLIP's rows); the ``clip``
    source's rows are CLIP's own, and keep the name either way."""
    image = _two_colour_image(tmp_path)
    vocab = Vocabulary.from_names(["cat", "mug"]).with_exemplars(
        [ExemplarSpec("mug", (Exemplar(image, (15, 0, 15, 20)),), with_text=True)]
    )
    text_rows = {"cat": _unit(1, 0, 0), "mug": _unit(0, 1, 0)}

    def text(v: Vocabulary) -> torch.Tensor:
        return torch.stack([text_rows[n] for n in v.names])

    embedder, _ = _embedder(tmp_path / "cache", source)
    exemplar_row = embedder.class_rows([vocab.exemplars[1]], text(vocab))[0]
    alone = class_embeddings(vocab, text, embedder, 0.5, clip_rescoring=True)
    mixed = class_embeddings(vocab, text, embedder, 0.5, clip_rescoring=False)
    torch.testing.assert_close(alone[0], mixed[0])  # text classes keep their text
    assert float(mixed[1] @ text_rows["mug"]) > 0.3  # the name mixed in
    if source == "region":
        torch.testing.assert_close(alone[1], exemplar_row)
    else:
        torch.testing.assert_close(alone[1], mixed[1])


def test_exemplar_spec_syntax(tmp_path):
    spec = parse_exemplar_spec("my mug=photos/mug.jpg:10,20,30,40; mug2.png", relative_to=tmp_path)
    assert spec.name == "my mug" and not spec.with_text
    assert spec.exemplars[0].image == str(tmp_path / "photos/mug.jpg")
    assert spec.exemplars[0].box == (10.0, 20.0, 30.0, 40.0)
    assert spec.exemplars[1].box is None
    assert parse_exemplar_spec("mug+=a.jpg").with_text
    for bad, message in [
        ("mug", "no '='"),
        ("=a.jpg", "no name"),
        ("mug=", "no exemplar"),
        ("mug=a.jpg:1,2,x,4", "four numbers"),
    ]:
        with pytest.raises(VocabularyError, match=message):
            parse_exemplar_spec(bad)


def test_vocabulary_file_with_exemplar_lines(tmp_path):
    (tmp_path / "classes.txt").write_text(
        "cat, kitty\nmug\nmug+=mug.png:1,2,3,4\nlogo=logo.png  # whole image\ndog\ndog=d.png\n"
    )
    vocab = Vocabulary.parse(str(tmp_path / "classes.txt"))
    assert vocab.names == ("cat", "mug", "dog", "logo")
    assert vocab.kinds == ("text", "text+exemplar", "exemplar", "exemplar")
    assert vocab.synonyms[0] == ("kitty",)
    assert vocab.exemplars[3][0].image == str(tmp_path / "logo.png")
    assert vocab.text_classes()[0].names == ("cat", "mug")


def test_conflicting_exemplar_specs_are_refused():
    vocab = Vocabulary(("cat",), (("kitty",),))
    with pytest.raises(VocabularyError, match="synonym of class 'cat'"):
        vocab.with_exemplars([parse_exemplar_spec("kitty=a.png")])
    only = Vocabulary.from_names(["dog"]).with_exemplars([parse_exemplar_spec("logo=a.png")])
    with pytest.raises(VocabularyError, match="both by exemplars alone .* and by its text"):
        only.with_exemplars([parse_exemplar_spec("logo+=b.png")])
    mixed = Vocabulary.from_names(["dog"]).with_exemplars([parse_exemplar_spec("dog+=a.png")])
    with pytest.raises(VocabularyError, match="both by exemplars alone"):
        mixed.with_exemplars([parse_exemplar_spec("dog=b.png")])
    more = mixed.with_exemplars([parse_exemplar_spec("dog+=b.png")])  # the same way: added
    assert more.kinds == ("text+exemplar",) and len(more.exemplars[0]) == 2


def test_api_mapping_of_exemplars():
    specs = exemplar_specs({"logo": "a.png:1,2,3,4", "mug+": [Exemplar("b.png"), "c.png"]})
    assert [(s.name, s.with_text, len(s.exemplars)) for s in specs] == [
        ("logo", False, 1),
        ("mug", True, 2),
    ]
    assert specs[0].exemplars[0].box == (1, 2, 3, 4)


class _CountingBoxes:
    """A box embedder recording the boxes it was asked for (a stand-in for CLIP or a detector)."""

    def __init__(self) -> None:
        self.boxes: list[list[float]] = []

    def __call__(self, array: np.ndarray, boxes: torch.Tensor) -> torch.Tensor:
        self.boxes += boxes.tolist()
        x1, y1, x2, y2 = boxes[0].tolist()
        patch = array[int(y1) : int(y2), int(x1) : int(x2)].reshape(-1, 3).mean(0)
        return F.normalize(torch.tensor(patch, dtype=torch.float32)[None], dim=-1)


def _embedder(tmp_path, source="region") -> tuple[ExemplarEmbedder, _CountingBoxes]:
    boxes = _CountingBoxes()
    embedder = ExemplarEmbedder(
        source, lambda: boxes, boxes, lambda: "clip", lambda: "detector", cache_dir=tmp_path
    )
    return embedder, boxes


def test_exemplars_are_cached_by_image_bytes_and_box(tmp_path):
    array = np.zeros((20, 30, 3), np.uint8)
    array[:, 15:] = (0, 0, 255)
    Image.fromarray(array).save(tmp_path / "a.png")
    embedder, boxes = _embedder(tmp_path / "cache")
    out = embedder([Exemplar(str(tmp_path / "a.png"), (15, 0, 15, 20)), Exemplar(array)])
    torch.testing.assert_close(out[0], _unit(0, 0, 1))  # the blue half
    assert boxes.boxes == [[15, 0, 30, 20], [0, 0, 30, 20]]  # x,y,w,h -> x1,y1,x2,y2; whole
    again, _ = _embedder(tmp_path / "cache")
    torch.testing.assert_close(again([Exemplar(array.copy())]), out[1:])
    assert again.num_embedded == 0  # same bytes, same box: from the cache
    array[0, 0] = 1  # other bytes: embedded anew
    again([Exemplar(array)])
    assert again.num_embedded == 1


def test_without_a_cache_folder_an_exemplar_is_embedded_once_per_source():
    array = np.zeros((20, 30, 3), np.uint8)
    array[:, 15:] = (0, 0, 255)
    boxes = _CountingBoxes()
    embedder = ExemplarEmbedder("clip", lambda: boxes, boxes, lambda: "clip", lambda: "detector")
    exemplar = Exemplar(array, (15, 0, 15, 20))
    first = embedder([exemplar])
    # CLIP rescoring's copy (the detector's rows and CLIP's, one crop each) takes it from memory
    torch.testing.assert_close(embedder.for_clip_rescoring()([exemplar]), first)
    assert boxes.boxes == [[15, 0, 30, 20]]
    embedder.with_source("region")([exemplar])  # another source: embedded by it
    assert len(boxes.boxes) == 2


@pytest.mark.parametrize(
    "box, message",
    [((0, 0, 0, 5), "zero area"), ((25, 0, 10, 5), "not inside its 30x20 image"),
     ((-1, 0, 5, 5), "not inside")],
)  # fmt: skip
def test_bad_boxes_are_one_line_errors_and_nothing_is_cached(tmp_path, box, message):
    array = np.zeros((20, 30, 3), np.uint8)
    embedder, boxes = _embedder(tmp_path / "cache")
    with pytest.raises(VocabularyError, match=message) as error:
        embedder([Exemplar(array, (0, 0, 5, 5)), Exemplar(array, box)])
    assert "\n" not in str(error.value)
    assert boxes.boxes == [] and not (tmp_path / "cache").exists()  # the good one not written


def test_unreadable_image_is_a_one_line_error(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not an image")
    embedder, boxes = _embedder(tmp_path / "cache")
    for path in (tmp_path / "broken.png", tmp_path / "missing.png"):
        with pytest.raises(ImageError, match="exemplar image") as error:
            embedder([Exemplar(str(path))])
        assert "\n" not in str(error.value)
    assert boxes.boxes == []


def test_region_source_needs_a_detector_with_region_embeddings():
    with pytest.raises(ConfigError, match="closed-set"):
        ExemplarEmbedder("region", None, None, lambda: "", lambda: "")
    with pytest.raises(ConfigError, match="not one of"):
        ExemplarEmbedder("pixels", None, None, lambda: "", lambda: "")


def test_region_calibration_centres_rows_and_matches_the_text_spread():
    """Regions in a narrow cone (all near e0, spread in e1..e3, never using e4, e5): a region
    row loses the cone's direction and is scaled to the text rows' spread; the order of the
    regions it prefers is kept; without text rows it is only centred."""
    g = torch.Generator().manual_seed(0)
    spread = torch.randn(200, 3, generator=g) * 0.3
    reference = F.normalize(torch.cat([torch.full((200, 1), 1.0), spread, torch.zeros(200, 2)], 1))
    row = reference[:1]  # an exemplar's own region: deep in the cone
    text = F.normalize(
        torch.tensor([[0.0, 0.3, 0.0, 0.0, 0.9, 0.3], [0.0, 0.0, 0.2, 0.0, 0.3, 0.9]])
    )
    calibration = RegionCalibration.fit(reference, row, text)
    out = calibration(row)[0]
    assert torch.isclose(out.norm(), torch.tensor(1.0))
    raw = reference @ row[0]
    assert raw.mean() > 0.75  # every region looks like the exemplar before calibration
    scores = reference @ out
    assert abs(float(scores.mean())) < 0.02  # centred: an average region scores about zero
    text_spread = (reference @ text.t()).std(0).mean()
    torch.testing.assert_close(scores.std(), text_spread, rtol=0.02, atol=1e-4)
    assert 0.05 < calibration.scale < 1.0
    centred = reference @ F.normalize(
        row[0] - (row[0] @ calibration.centre) * calibration.centre, dim=0
    )
    assert torch.equal(scores.argsort(), centred.argsort())  # the same regions preferred
    alone = RegionCalibration.fit(reference, row, torch.zeros(0))
    assert alone.scale == 1.0
    torch.testing.assert_close(
        alone(row)[0] @ calibration.centre, torch.tensor(0.0), atol=1e-6, rtol=0
    )


def test_reference_boxes_lie_inside_the_image():
    boxes = reference_boxes(40, 30)
    assert boxes.shape == (33, 4)
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 40).all()
    assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= 30).all()
    assert ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all()


def test_clip_exemplar_rows_are_centred_for_the_detector_and_raw_for_clip_rescoring(tmp_path):
    """Source ``clip``: the detector's row of an exemplar class is its CLIP crop row with the
    mean direction of the detector's reference regions removed; CLIP rescoring's row is the crop
    row as it is."""
    image = _two_colour_image(tmp_path)
    vocab = Vocabulary.from_names(["cat", "mug"]).with_exemplars(
        [ExemplarSpec("mug", (Exemplar(image, (15, 0, 15, 20)),))]
    )

    def text(v: Vocabulary) -> torch.Tensor:
        return torch.stack([{"cat": _unit(0, 1, 0), "mug": _unit(1, 0, 0)}[n] for n in v.names])

    embedder, _ = _embedder(tmp_path / "cache", "clip")
    raw = embedder.for_clip_rescoring().class_rows([vocab.exemplars[1]], text(vocab))[0]
    torch.testing.assert_close(raw, _unit(20, 20, 200))  # the blue half, as it is
    detector_rows = class_embeddings(vocab, text, embedder, 0.5, clip_rescoring=True)
    rescoring_rows = rescoring_class_embeddings(vocab, text, embedder, 0.5)
    assert rescoring_rows is not None
    torch.testing.assert_close(rescoring_rows[1], raw)
    torch.testing.assert_close(rescoring_rows[0], detector_rows[0])  # text classes: their text
    # the fake embedder gives one region per image, its first box: the whole image
    centre = _unit(110, 20, 110)
    expected = F.normalize(raw - (raw @ centre) * centre, dim=0)
    torch.testing.assert_close(detector_rows[1], expected)
    assert float(raw @ centre) > 0.5 and abs(float(detector_rows[1] @ centre)) < 1e-6
