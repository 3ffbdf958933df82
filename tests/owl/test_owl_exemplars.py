"""Classes given by image exemplars on OWL-ViT / OWLv2: box queries, averaged and mixed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_convert, box_iou, clip_boxes_to_image

from ovdet.owl import OwlDetector, load_owl_model
from ovdet.owl.detector import owl_config
from ovdet.structures.exemplars import Exemplar
from ovdet.utils.errors import ConfigError, VocabularyError

transformers = pytest.importorskip("transformers")
skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(params=["owlv2", "owlvit"])
def owl_dir(request):
    return request.getfixturevalue(f"{request.param}_dir")


def _detector(owl_dir, tmp_path, *overrides: str, model=None) -> OwlDetector:
    cfg = owl_config(0.0, "a", overrides=["MODEL.OVDET.TEXT_CACHE_DIR", str(tmp_path), *overrides])
    return OwlDetector(model or load_owl_model(f"hf:{owl_dir}"), cfg)


def _photo() -> np.ndarray:
    return skimage_data.astronaut()[40:, :360]


def _xyxy(box) -> torch.Tensor:
    x, y, w, h = box
    return torch.tensor([[x, y, x + w, y + h]], dtype=torch.float32)


BOXES = [(80.0, 0.0, 180.0, 200.0), (150.0, 250.0, 180.0, 222.0)]  # x, y, w, h


def test_an_exemplar_class_is_the_mean_of_its_box_queries(owl_dir, tmp_path):
    detector = _detector(owl_dir, tmp_path)
    image = _photo()
    detector.set_classes("rocket", exemplars={"astronaut": [Exemplar(image, b) for b in BOXES]})

    queries = detector.head.get_vocabulary()[0]
    boxes = torch.cat([_xyxy(b) for b in BOXES])
    expected = F.normalize(detector.box_query_embeddings(image, boxes).mean(0), dim=0)
    torch.testing.assert_close(queries[1], expected)
    torch.testing.assert_close(queries[0], detector.text_embeddings(["rocket"])[0])
    assert detector.class_names == ["rocket", "astronaut"]
    assert detector.class_kinds == ["text", "exemplar"]
    [det] = detector.predict(image, score_thresh=0.0)
    assert det.class_kinds == ["text", "exemplar"] and len(det) > 0


def test_a_class_by_name_and_exemplars_mixes_them_by_the_text_weight(owl_dir, tmp_path):
    weight = 0.3
    detector = _detector(owl_dir, tmp_path, "MODEL.OVDET.EXEMPLARS.TEXT_WEIGHT", str(weight))
    image = _photo()
    detector.set_classes("person, rocket", exemplars={"person+": Exemplar(image, BOXES[0])})

    text = detector.text_embeddings(["person"])[0]
    exemplar = detector.box_query_embeddings(image, _xyxy(BOXES[0]))[0]
    expected = F.normalize(weight * text + (1 - weight) * exemplar, dim=0)
    torch.testing.assert_close(detector.head.get_vocabulary()[0][0], expected)
    assert detector.class_kinds == ["text+exemplar", "text"]
    assert not torch.allclose(expected, text, atol=1e-3)  # the mix is neither of the two


def test_box_queries_are_cached_by_image_box_and_model(owlvit_dir, owlv2_dir, tmp_path):
    image = _photo()
    exemplars = {"astronaut": [Exemplar(image, b) for b in BOXES]}
    first = _detector(owlvit_dir, tmp_path)
    rows = first.class_embeddings([], exemplars)
    assert first.exemplar_embedder.num_embedded == 2

    again = _detector(owlvit_dir, tmp_path)
    torch.testing.assert_close(again.class_embeddings([], exemplars), rows)
    assert again.exemplar_embedder.num_embedded == 0  # both read from the cache

    other = _detector(owlv2_dir, tmp_path)  # another model: its own box queries
    assert not torch.allclose(other.class_embeddings([], exemplars), rows)
    assert other.exemplar_embedder.num_embedded == 2


def _neutral_logits(owl_dir):
    """The tiny model with a constant logit shift and scale: a trained OWL calibrates each
    region's logit, the random head's shift and scale would drown the query's cosine; made
    constant, a region's score grows with its cosine to the query."""
    model = load_owl_model(f"hf:{owl_dir}")
    with torch.no_grad():
        for layer in (model.model.class_head.logit_shift, model.model.class_head.logit_scale):
            layer.weight.zero_()
            layer.bias.zero_()
    return model


def test_an_exemplar_finds_its_own_box_first_in_its_image(owl_dir, tmp_path):
    """One exemplar box of an image, detected in that image: the best detection is the region
    its box query came from, whose box overlaps the exemplar's about as well as any does."""
    detector = _detector(owl_dir, tmp_path, model=_neutral_logits(owl_dir))
    image = _photo()
    tops = []
    for box in BOXES:
        detector.set_classes([], exemplars={"thing": Exemplar(image, box)})
        [det] = detector.predict(image, return_embeddings=True)
        ious = box_iou(torch.from_numpy(det.boxes), _xyxy(box))[:, 0]
        assert ious[0] > 0 and ious[0] >= 0.8 * ious.max()
        query = detector.head.get_vocabulary()[0][0].numpy()
        assert det.embeddings[0] @ query == pytest.approx(1.0, abs=1e-5)  # its own region
        tops.append(det.boxes[0])
    assert not np.allclose(tops[0], tops[1])  # another box, another region


def _rows_sorted(boxes: np.ndarray) -> np.ndarray:
    return boxes[np.lexsort(boxes.T[::-1])]


def test_a_whole_image_exemplar_detects_as_image_guided_detection(owlvit_dir, tmp_path):
    """OWL-ViT: an exemplar without a box (the whole query image) scores every region of the
    target as transformers' ``image_guided_detection`` with that query image does."""
    detector = _detector(owlvit_dir, tmp_path, "TEST.DETECTIONS_PER_IMAGE", "1000")
    image, query = _photo(), skimage_data.coffee()[100:300, 150:400]
    processor, model = detector.model.processor, detector.model.model
    inputs = processor(images=image, query_images=query, return_tensors="pt")
    with torch.no_grad():
        out = model.image_guided_detection(**inputs)
    scores = torch.sigmoid(out.logits[0, :, 0])
    thresh = 1e-3  # some regions kept, some not
    kept = scores > thresh
    h, w = image.shape[:2]
    boxes = box_convert(out.target_pred_boxes[0][kept], "cxcywh", "xyxy")
    boxes = clip_boxes_to_image(boxes * torch.tensor([w, h, w, h]), (h, w))

    detector.set_classes([], exemplars={"mug": Exemplar(query)})
    [det] = detector.predict(image, score_thresh=thresh)
    assert 0 < len(det) == int(kept.sum()) < len(scores)
    expected = scores[kept].sort(descending=True).values.numpy()
    np.testing.assert_allclose(det.scores, expected, atol=1e-5)
    np.testing.assert_allclose(_rows_sorted(det.boxes), _rows_sorted(boxes.numpy()), atol=1e-3)


def test_only_the_region_source_and_good_exemplars_are_taken(owlv2_dir, tmp_path):
    for source in ("clip", "both"):
        with pytest.raises(ConfigError, match="its own box queries"):
            owl_config(overrides=["MODEL.OVDET.EXEMPLARS.SOURCE", source])
    detector = _detector(owlv2_dir, tmp_path)
    detector.set_classes("rocket")
    with pytest.raises(VocabularyError, match="not inside"):
        detector.set_classes([], exemplars={"x": Exemplar(_photo(), (300.0, 0.0, 100.0, 10.0))})
    assert detector.class_names == ["rocket"]  # the vocabulary in use is kept
    assert not (tmp_path / "exemplars").exists()  # nothing embedded, nothing cached
