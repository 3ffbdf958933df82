"""Offline ViLD-image distillation: precomputed CLIP embeddings, written and trained on."""

import json

import numpy as np
import pytest
import torch

from ovdet.cli.precompute_clip_embeddings import main as precompute_main
from ovdet.data.distill_store import load_distill_store
from tests.conftest import TINY_CONFIG, toy_overrides


@pytest.fixture(scope="module")
def gt_proposals(toy_dataset, tmp_path_factory):
    """Every ground-truth box of the toy set as a COCO-format proposal, scored by its id."""
    data = json.loads((toy_dataset / "instances.json").read_text())
    proposals = [
        {"image_id": a["image_id"], "bbox": a["bbox"], "score": 1.0 / a["id"]}
        for a in data["annotations"]
    ]
    path = tmp_path_factory.mktemp("proposals") / "proposals.json"
    path.write_text(json.dumps(proposals))
    return path, data


def test_embeddings_match_the_teacher_on_the_same_boxes(
    toy_dataset, tiny_clip, gt_proposals, tmp_path
):
    from ovdet.clip import load_clip
    from ovdet.config import load_config
    from ovdet.data.image_io import read_image
    from ovdet.tv.engine.build import build_clip_teacher

    path, data = gt_proposals
    out = tmp_path / "emb.pt"
    overrides = toy_overrides(toy_dataset, tiny_clip, tmp_path / "unused")
    code = precompute_main(
        ["--config", str(TINY_CONFIG), "--proposals", str(path), "--output", str(out),
         "--num-proposals", "1", "--no-progress", *overrides]
    )  # fmt: skip
    assert code == 0
    store = load_distill_store(out)
    # One proposal per image: the highest-scoring one (lowest annotation id).
    first = {}
    for a in sorted(data["annotations"], key=lambda a: a["id"]):
        first.setdefault(a["image_id"], a)
    assert set(store) == set(first)
    image_id, ann = next(iter(first.items()))
    boxes, embeddings = store[image_id]
    x, y, w, h = ann["bbox"]
    np.testing.assert_allclose(boxes.numpy(), [[x, y, x + w, y + h]], atol=1e-5)

    cfg = load_config(TINY_CONFIG, overrides)
    teacher = build_clip_teacher(cfg, load_clip(tiny_clip))
    file_name = next(i["file_name"] for i in data["images"] if i["id"] == image_id)
    image = read_image(toy_dataset / "images" / file_name)
    pixels = torch.tensor(image).permute(2, 0, 1).float()[None] / 255.0
    expected = teacher(pixels, [boxes])
    assert embeddings.shape == (1, expected.shape[1])
    torch.testing.assert_close(embeddings, expected, atol=1e-5, rtol=1e-4)
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(1), atol=1e-5)


@pytest.mark.slow
def test_offline_distillation_trains_on_the_file(toy_dataset, tiny_clip, gt_proposals, tmp_path):
    from ovdet.config import load_config
    from ovdet.tv.engine.trainer import Trainer

    path, _ = gt_proposals
    out = tmp_path / "emb.pt"
    overrides = toy_overrides(toy_dataset, tiny_clip, tmp_path / "train", max_iter=4)
    assert precompute_main(
        ["--config", str(TINY_CONFIG), "--proposals", str(path), "--output", str(out),
         "--no-progress", *overrides]
    ) == 0  # fmt: skip
    cfg = load_config(
        TINY_CONFIG,
        overrides + ["MODEL.OVDET.DISTILL.MODE", "offline",
                     "MODEL.OVDET.DISTILL.EMBEDDINGS_FILE", str(out)],
    )  # fmt: skip
    Trainer(cfg, progress=False).train()
    lines = [
        json.loads(x) for x in (tmp_path / "train" / "metrics.jsonl").read_text().split("\n") if x
    ]
    image_losses = [m["loss_image"] for m in lines if "loss_image" in m]
    assert len(image_losses) == 4 and all(0 < v < 10 for v in image_losses)


def test_rpn_proposals_from_a_checkpoint(toy_dataset, tiny_clip, trained_checkpoint, tmp_path):
    out = tmp_path / "emb.pt"
    overrides = toy_overrides(toy_dataset, tiny_clip, tmp_path / "unused")
    code = precompute_main(
        ["--config", str(TINY_CONFIG), "--checkpoint", str(trained_checkpoint), "--output",
         str(out), "--num-proposals", "5", "--no-progress", *overrides]
    )  # fmt: skip
    assert code == 0
    store = load_distill_store(out)
    assert len(store) == 48
    for boxes, embeddings in store.values():
        assert boxes.shape == (5, 4) and embeddings.shape[0] == 5
        assert (boxes[:, 2:] > boxes[:, :2]).all() and (boxes >= 0).all() and (boxes <= 64).all()


def test_bad_proposals_file_is_a_one_line_error(toy_dataset, tiny_clip, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"image_id": 1}))
    overrides = toy_overrides(toy_dataset, tiny_clip, tmp_path / "unused")
    code = precompute_main(
        ["--config", str(TINY_CONFIG), "--proposals", str(bad), "--output",
         str(tmp_path / "e.pt"), *overrides]
    )  # fmt: skip
    assert code == 2
    assert "must be a JSON list" in capsys.readouterr().err
    assert not (tmp_path / "e.pt").exists()
