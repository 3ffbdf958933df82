"""Parity: the same weights and region features through both engines give the same results.

The torchvision engine's RoI heads and the detectron2 plugin's ROI heads are two adapters over
one :class:`~ovdet.core.OpenVocabularyHead`; here both get the head's weights, the same box-head
features and the same proposals, and must agree on logits, losses, detections (thresholds 0 and
0.3, a vocabulary with synonyms, one with image exemplars), region embeddings, CLIP rescoring
and the image head's ViLD-ensemble.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip(
    "detectron2", reason="detectron2 is not installed; see README (install by its official guide)"
)

from detectron2.modeling import build_model as build_d2_model  # noqa: E402
from detectron2.structures import Boxes, ImageList, Instances  # noqa: E402

from ovdet.clip.text_classifier import Vocabulary  # noqa: E402
from ovdet.config import load_config  # noqa: E402
from ovdet.core import (  # noqa: E402
    ClipRescoringSettings,
    VildEnsembleSettings,
    get_head,
    novel_class_mask,
)
from ovdet.d2.model_vocabulary import text_embeddings  # noqa: E402
from ovdet.tv import build_model as build_tv_model  # noqa: E402
from ovdet.tv.engine.build import build_clip_teacher, build_text_classifier  # noqa: E402

FC_DIM, NUM_REGIONS, HEIGHT, WIDTH = 64, 40, 64, 80


class _Fixed(nn.Module):
    """Stands in for the pooler + box head: returns the given region features."""

    def __init__(self, features: torch.Tensor) -> None:
        super().__init__()
        self.features = features

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.features


@pytest.fixture(scope="module")
def vocabulary(tmp_path_factory) -> Vocabulary:
    path = tmp_path_factory.mktemp("vocab") / "classes.txt"
    path.write_text("red box, crimson box\ngreen box\nblue box, azure box, navy box\ngrey box\n")
    return Vocabulary.parse(str(path))


def _build_engines(instant_cfg, tiny_clip, text_cache, vocabulary, *opts: str):
    """(torchvision model, detectron2 model, torchvision config), built from the same keys
    (``opts`` on top), with the same head weights and the same vocabulary."""
    d2_cfg = instant_cfg(
        "MODEL.ROI_BOX_HEAD.FC_DIM", str(FC_DIM), "MODEL.OVDET.DISTILL.MODE", "none", *opts
    )
    d2 = build_d2_model(d2_cfg).eval()
    tv_cfg = load_config(
        "tiny",
        ["MODEL.OVDET.CLIP", tiny_clip, "MODEL.OVDET.TEXT_CACHE_DIR", str(text_cache),
         "MODEL.OVDET.TEMPLATES", d2_cfg.MODEL.OVDET.TEMPLATES,
         "MODEL.OVDET.TEMPERATURE", str(d2_cfg.MODEL.OVDET.TEMPERATURE),
         "MODEL.ROI_BOX_HEAD.FC_DIM", str(FC_DIM), *opts],
    )  # fmt: skip
    torch.manual_seed(1)
    tv = build_tv_model(tv_cfg).eval()
    get_head(d2).load_state_dict(get_head(tv).state_dict())
    tv_text = build_text_classifier(tv_cfg)(vocabulary)
    d2_text = text_embeddings(d2_cfg, vocabulary)
    # Synonyms reach the text classifier in both engines: with them dropped it would differ.
    torch.testing.assert_close(tv_text, d2_text)
    names_only = build_text_classifier(tv_cfg)(Vocabulary.from_names(vocabulary.names))
    assert not torch.allclose(tv_text, names_only)
    is_novel = novel_class_mask(vocabulary, ["red box", "green box"])
    assert is_novel.tolist() == [False, False, True, True]
    get_head(tv).set_vocabulary(tv_text, is_novel)
    d2.roi_heads.set_vocabulary(d2_text, is_novel)
    return tv, d2, tv_cfg


@pytest.fixture(scope="module")
def engines(instant_cfg, tiny_clip, text_cache, vocabulary):
    """(torchvision model, detectron2 model, torchvision config)."""
    return _build_engines(instant_cfg, tiny_clip, text_cache, vocabulary)


def _inputs():
    g = torch.Generator().manual_seed(3)
    features = torch.randn(NUM_REGIONS, FC_DIM, generator=g) * 2
    xy = torch.rand(NUM_REGIONS, 2, generator=g) * torch.tensor([WIDTH - 20.0, HEIGHT - 20.0])
    wh = torch.rand(NUM_REGIONS, 2, generator=g) * 25 + 4
    proposals = torch.cat([xy, xy + wh], dim=1)
    image = torch.rand(3, HEIGHT, WIDTH, generator=g)
    return features, proposals, image


def _run_tv(model, features, proposals, image):
    heads = model.roi_heads
    heads.box_roi_pool, heads.box_head = _Fixed(features), _Fixed(features)
    (det,), _ = heads({}, [proposals], [(HEIGHT, WIDTH)], images=image[None])
    return det


def _run_d2(model, features, proposals, image):
    heads = model.roi_heads
    heads.box_pooler, heads.box_head = _Fixed(features), _Fixed(features)
    # The detector's own input: BGR (INPUT.FORMAT), 0-255, normalised by PIXEL_MEAN / STD.
    bgr = (image * 255.0).flip(0)
    normalised = (bgr - heads.pixel_mean) / heads.pixel_std
    instances = Instances((HEIGHT, WIDTH))
    instances.proposal_boxes = Boxes(proposals.clone())
    fake_features = {f: None for f in heads.box_in_features}
    (det,), _ = heads(ImageList(normalised[None], [(HEIGHT, WIDTH)]), fake_features, [instances])
    return {
        "boxes": det.pred_boxes.tensor,
        "scores": det.scores,
        "labels": det.pred_classes,
        "embeddings": det.pred_embeddings,
    }


def _assert_same(a: dict, b: dict) -> None:
    assert len(a["scores"]) > 0
    assert torch.equal(a["labels"], b["labels"])
    torch.testing.assert_close(a["scores"], b["scores"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a["boxes"], b["boxes"], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(a["embeddings"], b["embeddings"])


def test_same_logits_and_losses(engines):
    tv, d2, _ = engines
    features, _, _ = _inputs()
    tv_logits, tv_deltas, tv_embeddings = get_head(tv)(features)
    d2_logits, d2_deltas = d2.roi_heads.box_predictor(features)
    torch.testing.assert_close(tv_logits, d2_logits)
    torch.testing.assert_close(tv_deltas, d2_deltas)
    torch.testing.assert_close(tv_embeddings, d2.roi_heads.head.embed(features))
    gt = torch.randint(0, 5, (NUM_REGIONS,), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        get_head(tv).text_loss(tv_logits, gt)["loss_text"],
        get_head(d2).text_loss(d2_logits, gt)["loss_text"],
    )


@pytest.mark.parametrize("score_thresh", [0.0, 0.3])
def test_same_detections_and_region_embeddings(engines, score_thresh):
    tv, d2, _ = engines
    features, proposals, image = _inputs()
    with get_head(tv).score_threshold(score_thresh), get_head(d2).score_threshold(score_thresh):
        a = _run_tv(tv, features, proposals, image)
        b = _run_d2(d2, features, proposals, image)
    _assert_same(a, b)
    assert bool((a["scores"] > score_thresh).all())
    if score_thresh == 0.0:  # every (region, class) pair passes: NMS and the top-k decide
        assert len(a["scores"]) > 20


@pytest.mark.parametrize("crop_scales", [(), (1.0,)])  # the teacher's, or rescoring's own
def test_same_detections_with_clip_rescoring(engines, tiny_clip, crop_scales):
    from ovdet.clip import load_clip

    tv, d2, tv_cfg = engines
    teacher = build_clip_teacher(tv_cfg, load_clip(tiny_clip))
    features, proposals, image = _inputs()
    settings = ClipRescoringSettings(num_proposals=20, crop_scales=crop_scales)
    try:
        for model in (tv, d2):
            get_head(model).set_clip_teacher(teacher)
            get_head(model).enable_clip_rescoring(settings)
        with get_head(tv).score_threshold(0.0), get_head(d2).score_threshold(0.0):
            a = _run_tv(tv, features, proposals, image)
            b = _run_d2(d2, features, proposals, image)
        _assert_same(a, b)
        plain = get_head(tv)
        plain.enable_clip_rescoring(None)
        with plain.score_threshold(0.0):
            c = _run_tv(tv, features, proposals, image)
        assert not torch.allclose(a["scores"][:5], c["scores"][:5])  # CLIP changed the scores
    finally:
        for model in (tv, d2):
            get_head(model).enable_clip_rescoring(None)


def test_same_detections_with_the_image_head(instant_cfg, tiny_clip, text_cache, vocabulary):
    """``MODEL.OVDET.DISTILL.IMAGE_HEAD`` builds ViLD's separate image head in both engines,
    and both score regions with it the same way (the ViLD-ensemble, by its own keys)."""
    tv, d2, _ = _build_engines(
        instant_cfg, tiny_clip, text_cache, vocabulary, "MODEL.OVDET.DISTILL.IMAGE_HEAD", "True",
        "MODEL.OVDET.VILD_ENSEMBLE.NOVEL_WEIGHT", "0.2", "MODEL.OVDET.VILD_ENSEMBLE.TEMPERATURE",
        "50.0",
    )  # fmt: skip
    for model in (tv, d2):
        assert get_head(model).has_image_head
        assert get_head(model).vild_ensemble == VildEnsembleSettings(0.67, 0.2, 50.0)
    features, proposals, image = _inputs()
    with get_head(tv).score_threshold(0.0), get_head(d2).score_threshold(0.0):
        a = _run_tv(tv, features, proposals, image)
        b = _run_d2(d2, features, proposals, image)
        _assert_same(a, b)
        get_head(tv).image_projection = None  # the classifier alone scores differently
        c = _run_tv(tv, features, proposals, image)
    assert not torch.allclose(a["scores"][:5], c["scores"][:5])


def _exemplar_embedder(cfg, model, region, tiny_clip, cache: Path):
    """The engine's exemplar embedder (``cfg``'s keys, caching in ``cache``), CLIP and region
    crops both ("both"): what its predictor builds."""
    from ovdet.clip import load_clip
    from ovdet.core.exemplars import exemplar_embedder_from_config

    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.OVDET.TEXT_CACHE_DIR = str(cache)
    cfg.MODEL.OVDET.EXEMPLARS.SOURCE = "both"
    return exemplar_embedder_from_config(cfg, lambda: load_clip(tiny_clip), region, model)


def test_same_exemplar_vocabulary_and_detections(
    engines, instant_cfg, tiny_clip, vocabulary, tmp_path
):
    """A vocabulary of text classes, a class by text and exemplars and one by two exemplars:
    both engines embed it alike (CLIP crops and their own region embeddings of the boxes) and
    detect alike with it."""
    from ovdet.core.exemplars import class_embeddings
    from ovdet.d2.model_vocabulary import text_classifier_builder
    from ovdet.structures.exemplars import Exemplar, ExemplarSpec

    tv, d2, tv_cfg = engines
    d2_cfg = instant_cfg(
        "MODEL.ROI_BOX_HEAD.FC_DIM", str(FC_DIM), "MODEL.OVDET.DISTILL.MODE", "none"
    )
    assert d2_cfg.MODEL.OVDET.EXEMPLARS == tv_cfg.MODEL.OVDET.EXEMPLARS  # the same keys
    features, proposals, image = _inputs()
    pixels = (image.permute(1, 2, 0) * 255).round().byte().numpy()
    exemplars = vocabulary.with_exemplars([
        ExemplarSpec("grey box", (Exemplar(pixels, (10, 10, 30, 20)),), with_text=True),
        ExemplarSpec("logo", (Exemplar(pixels, (40, 5, 20, 30)), Exemplar(pixels))),
    ])  # fmt: skip
    assert exemplars.kinds == ("text", "text", "text", "text+exemplar", "exemplar")
    one = features[:1]  # the box features of an exemplar box (the pooler and box head fixed)

    def tv_region(array, boxes):
        tv.roi_heads.box_roi_pool, tv.roi_heads.box_head = _Fixed(one), _Fixed(one)
        rgb = torch.from_numpy(array).permute(2, 0, 1).float() / 255
        return tv.box_embeddings([rgb], [boxes])

    def d2_region(array, boxes):
        d2.roi_heads.box_pooler, d2.roi_heads.box_head = _Fixed(one), _Fixed(one)
        bgr = torch.from_numpy(array[:, :, ::-1].copy()).permute(2, 0, 1).float()
        return d2.box_embeddings([{"image": bgr}], [boxes])

    weight = tv_cfg.MODEL.OVDET.EXEMPLARS.TEXT_WEIGHT
    tv_embedder = _exemplar_embedder(tv_cfg, tv, tv_region, tiny_clip, tmp_path / "tv")
    d2_embedder = _exemplar_embedder(d2_cfg, d2, d2_region, tiny_clip, tmp_path / "d2")
    tv_rows = class_embeddings(exemplars, build_text_classifier(tv_cfg), tv_embedder, weight)
    d2_rows = class_embeddings(exemplars, text_classifier_builder(d2_cfg), d2_embedder, weight)
    assert tv_embedder.num_embedded == d2_embedder.num_embedded == 6  # 3 boxes, 2 sources each
    torch.testing.assert_close(tv_rows, d2_rows)
    text_only = build_text_classifier(tv_cfg)(vocabulary)
    torch.testing.assert_close(tv_rows[:3], text_only[:3])
    assert not torch.allclose(tv_rows[3], text_only[3])  # the exemplar is mixed in

    is_novel = novel_class_mask(exemplars, ["red box", "green box"])
    try:
        get_head(tv).set_vocabulary(tv_rows, is_novel)
        d2.roi_heads.set_vocabulary(d2_rows, is_novel)
        with get_head(tv).score_threshold(0.0), get_head(d2).score_threshold(0.0):
            a = _run_tv(tv, features, proposals, image)
            b = _run_d2(d2, features, proposals, image)
        _assert_same(a, b)
        assert int(a["labels"].max()) == 4  # the exemplar class is detected
    finally:
        text = build_text_classifier(tv_cfg)(vocabulary)
        get_head(tv).set_vocabulary(text, novel_class_mask(vocabulary, ["red box", "green box"]))
        d2.roi_heads.set_vocabulary(text, novel_class_mask(vocabulary, ["red box", "green box"]))
