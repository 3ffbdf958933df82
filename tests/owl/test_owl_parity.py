"""ovdet's OWL-ViT / OWLv2 detector equals transformers' own pipeline on a real photo."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ovdet.owl import OwlDetector, load_owl_model
from ovdet.owl.detector import owl_config

transformers = pytest.importorskip("transformers")
skimage_data = pytest.importorskip("skimage.data")

NAMES = ["person", "rocket", "cat"]
PROMPT = "a photo of a {}"


@pytest.fixture(params=["owlv2", "owlvit"])
def owl_dir(request):
    return request.getfixturevalue(f"{request.param}_dir")


def _detector(owl_dir, tmp_path, cache=True) -> OwlDetector:
    templates = tmp_path / "templates.txt"
    templates.write_text(PROMPT + "\n")
    cfg = owl_config(0.1, str(templates))
    cfg.defrost()
    cfg.TEST.DETECTIONS_PER_IMAGE = 1000
    cfg.MODEL.OVDET.TEXT_CACHE_DIR = str(tmp_path / "cache") if cache else ""
    cfg.freeze()
    return OwlDetector(load_owl_model(f"hf:{owl_dir}"), cfg)


def _photo() -> np.ndarray:
    """A real photo, not square (OWLv2 pads it to a square, OWL-ViT stretches it)."""
    return skimage_data.astronaut()[40:, :360]


def _in_image(ref: dict, image: np.ndarray) -> dict:
    """transformers' detections, best first, as ovdet reports them: boxes clipped to the image,
    those left empty (OWLv2's padding) dropped."""
    h, w = image.shape[:2]
    boxes = ref["boxes"].clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    kept = torch.nonzero((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).flatten()
    kept = kept[torch.argsort(ref["scores"][kept], descending=True)]
    return {"boxes": boxes[kept].numpy(), "scores": ref["scores"][kept].numpy(), "index": kept,
            "labels": None if ref["labels"] is None else ref["labels"][kept].numpy()}  # fmt: skip


def test_text_queries_equal_post_process_object_detection(owl_dir, tmp_path):
    detector = _detector(owl_dir, tmp_path)
    image = _photo()
    processor, model = detector.model.processor, detector.model.model
    inputs = processor(text=[[PROMPT.format(n) for n in NAMES]], images=image, return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs)
    all_scores = torch.sigmoid(out.logits[0].max(-1).values)
    thresh = float(all_scores.median())  # some patches kept, some not
    [ref] = processor.image_processor.post_process_object_detection(
        out, threshold=thresh, target_sizes=[image.shape[:2]]
    )
    [det] = detector.predict(image, classes=NAMES, score_thresh=thresh, return_embeddings=True)

    assert 0 < len(det) < len(all_scores)
    ref = _in_image(ref, image)
    np.testing.assert_allclose(det.scores, ref["scores"], atol=1e-6)
    np.testing.assert_array_equal(det.labels, ref["labels"])
    np.testing.assert_allclose(det.boxes, ref["boxes"], atol=1e-3)
    kept = torch.nonzero(all_scores > thresh).flatten()[ref["index"]]
    embeds = F.normalize(out.class_embeds[0][kept], dim=-1).numpy()
    np.testing.assert_allclose(det.embeddings, embeds, atol=1e-5)
    assert det.names == [NAMES[i] for i in ref["labels"]]


def test_text_queries_come_from_the_text_cache(owl_dir, tmp_path):
    first = _detector(owl_dir, tmp_path)
    queries = first.text_embeddings(NAMES)
    assert first._text.num_text_tower_calls == 1
    second = _detector(owl_dir, tmp_path)
    second.set_classes(NAMES)
    assert second._text.num_text_tower_calls == 0  # read from the cache
    torch.testing.assert_close(second.head.get_vocabulary()[0], queries)
    expected = first.clip.encode_text([PROMPT.format(n) for n in NAMES])
    torch.testing.assert_close(queries, F.normalize(expected, dim=-1))


def test_image_queries_equal_image_guided_detection(owl_dir, tmp_path):
    detector = _detector(owl_dir, tmp_path, cache=False)
    detector.set_classes(NAMES)
    image, query = _photo(), skimage_data.coffee()[100:300, 150:400]
    processor, model = detector.model.processor, detector.model.model
    inputs = processor(images=image, query_images=query, return_tensors="pt")
    with torch.no_grad():
        out = model.image_guided_detection(**inputs)
    all_scores = torch.sigmoid(out.logits[0].max(-1).values)
    best = float(all_scores.max()) + 1e-6
    # above HF's display cut-off (alpha > 0 where a score exceeds 0.1 of the best): the threshold
    # is then the one cut
    ranked = all_scores.sort().values  # between two scores: HF keeps a score equal to it
    thresh = max(float(ranked[len(ranked) // 2 - 1 : len(ranked) // 2 + 1].mean()), 0.11 * best)
    [ref] = processor.image_processor.post_process_image_guided_detection(
        out, threshold=thresh, nms_threshold=0.3, target_sizes=torch.tensor([image.shape[:2]])
    )
    [det] = detector.detect_similar(image, query, names=["mug"], score_thresh=thresh)

    assert len(det) > 0 and set(det.names) == {"mug"}
    ref = _in_image(ref, image)
    np.testing.assert_allclose(det.boxes, ref["boxes"], atol=1e-3)
    alphas = np.clip((det.scores - 0.1 * best) / (0.9 * best), 0, 1)  # HF reports these
    np.testing.assert_allclose(alphas, ref["scores"], atol=1e-5)
    assert detector.class_names == NAMES  # the text vocabulary is back


def test_a_box_over_the_whole_image_is_owl_vits_image_query(owlvit_dir, tmp_path):
    """OWL-ViT's image-guided detection takes the box of the whole query image: a box query
    drawn over the whole image gives its query embedding; a smaller box another region."""
    detector = _detector(owlvit_dir, tmp_path, cache=False)
    query = skimage_data.coffee()[100:300, 150:400]
    h, w = query.shape[:2]
    whole = detector.box_query_embeddings(query, torch.tensor([[0.0, 0.0, w, h]]))
    torch.testing.assert_close(whole, detector.image_query_embeddings(query))
    corner = detector.box_query_embeddings(query, torch.tensor([[0.0, 0.0, w / 4, h / 4]]))
    assert not torch.allclose(corner, whole)


def test_text_classes_replace_image_queries_of_the_same_names(owlv2_dir, tmp_path):
    detector = _detector(owlv2_dir, tmp_path, cache=False)
    detector.set_classes(["mug"])
    text = detector.head.get_vocabulary()[0]
    detector.set_queries(detector.image_query_embeddings(skimage_data.coffee()), ["mug"])
    assert not torch.allclose(detector.head.get_vocabulary()[0], text)
    detector.set_classes(["mug"])  # the same name: its text query again
    torch.testing.assert_close(detector.head.get_vocabulary()[0], text)
