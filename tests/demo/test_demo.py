"""The web demo's request logic without a browser (ovdet.demo); see test_demo_browser.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from ovdet import demo
from ovdet.cli import demo as demo_cli
from ovdet.cli import infer as infer_cli
from ovdet.clip.text_classifier import Vocabulary
from ovdet.data.image_io import read_image
from ovdet.demo import DemoModel, detect_files, parse_class_box
from ovdet.utils.errors import ImageError, VocabularyError
from tests.conftest import TINY_CONFIG, toy_overrides


def red_square_image(path, size: int = 64):
    """A toy picture: a red square on grey (the toy dataset's base class 'red square')."""
    img = Image.new("RGB", (size, size), (128, 128, 128))
    ImageDraw.Draw(img).rectangle((16, 20, 40, 44), fill=(220, 30, 30))
    img.save(path)
    return path


@pytest.fixture(scope="session")
def demo_checkpoint(tmp_path_factory, toy_dataset, tiny_clip) -> Path:
    """The tiny config trained for 2 iterations on the toy base classes ('green square' is
    novel): barely trained, so requests use threshold 0 where they need detections."""
    from ovdet.config import load_config
    from ovdet.tv.engine.trainer import Trainer

    out = tmp_path_factory.mktemp("demo_model")
    cfg = load_config(TINY_CONFIG, toy_overrides(toy_dataset, tiny_clip, out, max_iter=2))
    Trainer(cfg, progress=False).train()
    return out / "model_final.pt"


@pytest.fixture(scope="module")
def demo_model(demo_checkpoint) -> DemoModel:
    return DemoModel.from_checkpoint(demo_checkpoint)


def test_class_box_reads_the_command_line_formats():
    assert parse_class_box(" kite, red umbrella ").names == ("kite", "red umbrella")
    vocab = parse_class_box("kite, paper kite\n# a comment\numbrella, parasol, sunshade\n")
    assert vocab.names == ("kite", "umbrella")
    assert vocab.synonyms == (("paper kite",), ("parasol", "sunshade"))
    assert demo.format_vocabulary(vocab) == "kite, paper kite\numbrella, parasol, sunshade"
    assert parse_class_box(demo.format_vocabulary(vocab)) == vocab
    # A path is a class name here: the page never makes the server open its files.
    assert parse_class_box("/etc/passwd").names == ("/etc/passwd",)


@pytest.mark.parametrize("text", ["", " , ", "kite, Kite", "kite\nkite, bird"])
def test_bad_vocabularies_give_the_command_lines_message(text, tmp_path, capsys):
    with pytest.raises(VocabularyError) as page_error:
        parse_class_box(text)
    assert "classes.txt" not in str(page_error.value)  # not the temporary file's name
    if "\n" not in text:  # the same words as tools/infer.py --classes TEXT
        code = infer_cli.main(
            ["--checkpoint", "x.pt", "--classes", text, "--input", "x", "--output", str(tmp_path)]
        )
        assert code == 2
        assert capsys.readouterr().err.strip() == f"error: {page_error.value}"


def test_a_request_draws_tabulates_and_marks_novel_classes(demo_model, tmp_path):
    image = red_square_image(tmp_path / "photo.png")
    result = detect_files(demo_model, [image], "red square, green square", "a", 0.0, False)
    assert result.messages == []
    assert len(result.drawn) == 1 and result.drawn[0][1] == "photo.png"
    assert result.drawn[0][0].size == (512, 512)  # small pictures are drawn enlarged
    assert len(result.rows) == len(result.results["detections"]) > 0
    classes = {row[1] for row in result.rows}
    assert "red square" in classes
    # 'green square' is outside the training vocabulary (the toy split's novel class).
    kinds = {row[1]: row[4] for row in result.rows}
    assert kinds["red square"] == "base"
    assert kinds.get("green square", "novel") == "novel"
    assert result.results["categories"] == [
        {"id": 1, "name": "red square", "novel": False},
        {"id": 2, "name": "green square", "novel": True},
    ]
    for d in result.results["detections"]:
        x, y, w, h = d["bbox"]
        assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= 64.01 and y + h <= 64.01
    json.dumps(result.results)  # serialisable as downloaded
    assert result.status == f"{len(result.rows)} detection(s) in 1 image(s)"


def test_threshold_and_template_sets_are_applied(demo_model, tmp_path):
    image = red_square_image(tmp_path / "photo.png")
    first = detect_files(demo_model, [image], "red square", "a", 0.0, False)
    high = detect_files(demo_model, [image], "red square", "a", 0.99, False)
    assert len(high.rows) < len(first.rows)
    assert all(row[2] > 0.99 for row in high.rows)
    other = detect_files(demo_model, [image], "red square", "vild", 0.0, False)
    assert other.results["detections"] != first.results["detections"]  # other text embeddings
    # The template sets share one model: switching back gives the first answer again.
    again = detect_files(demo_model, [image], "red square", "a", 0.0, False)
    assert again.results == first.results
    bad = detect_files(demo_model, [image], "red square", "no-such-set", 0.0, False)
    assert bad.drawn == [] and bad.messages[0].startswith("error: templates 'no-such-set'")


def test_bad_uploads_are_messages_and_the_good_ones_still_run(demo_model, tmp_path):
    good = red_square_image(tmp_path / "photo.png")
    bad = tmp_path / "notes.png"
    bad.write_text("this is not a picture")
    result = detect_files(demo_model, [bad, good], "red square", "a", 0.0, False)
    assert [name for _, name in result.drawn] == ["photo.png"]
    assert len(result.messages) == 1
    message = result.messages[0]
    with pytest.raises(ImageError) as cli_error:  # what tools/infer.py reports for that file
        read_image(bad)
    assert message == f"error: {cli_error.value}".replace(str(bad), "notes.png")
    assert str(tmp_path) not in message
    assert result.results["failed"] == ["notes.png"]
    assert result.status.splitlines()[0] == message
    only_bad = detect_files(demo_model, [bad], "red square", "a", 0.0, False)
    assert only_bad.drawn == [] and only_bad.status == message
    no_vocab = detect_files(demo_model, [good], " ", "a", 0.0, False)
    assert no_vocab.drawn == [] and no_vocab.status == f"error: {_error_of(' ')}"
    assert detect_files(demo_model, [], "red square", "a", 0.0, False).status.startswith("error:")
    too_many = detect_files(demo_model, [good] * 3, "red square", "a", 0.0, False, max_images=2)
    assert too_many.drawn == [] and "at most 2" in too_many.status


def _error_of(text: str) -> str:
    with pytest.raises(VocabularyError) as e:
        Vocabulary.parse(text)
    return str(e.value)


def test_clip_rescoring_changes_scores(demo_model, tmp_path):
    image = red_square_image(tmp_path / "photo.png")
    plain = detect_files(demo_model, [image], "red square, blue circle", "a", 0.0, False)
    rescored = detect_files(demo_model, [image], "red square, blue circle", "a", 0.0, True)
    assert rescored.messages == [] and rescored.rows
    assert rescored.results["detections"] != plain.results["detections"]
    off_again = detect_files(demo_model, [image], "red square, blue circle", "a", 0.0, False)
    assert off_again.results == plain.results


def test_both_detection_tabs_offer_clip_rescoring(demo_model):
    gr = pytest.importorskip("gradio", reason="the web demo needs gradio")
    from ovdet.demo.app import CLIP_RESCORING_LABEL

    app = demo.build_app(demo_model, "red square", score_thresh=0.0)
    checkboxes = {b.elem_id: b.label for b in app.blocks.values() if isinstance(b, gr.Checkbox)}
    rescoring = {k: v for k, v in checkboxes.items() if "rescoring" in v}
    assert rescoring == {
        "clip-rescoring": CLIP_RESCORING_LABEL,
        "video-clip-rescoring": "CLIP rescoring",
    }
    assert CLIP_RESCORING_LABEL.startswith("CLIP rescoring")
    tabs = {b.label for b in app.blocks.values() if isinstance(b, gr.Tab)}
    assert tabs == {"Video"}  # no search tab without an index


def test_missing_default_checkpoint_names_the_command_that_makes_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert demo_cli.main([]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: checkpoint {demo_cli.DEFAULT_CHECKPOINT} does not exist")
    assert "make demo" in err and len(err.splitlines()) == 1
    for argv, message in [
        (["--port", "70000"], "error: --port 70000 is not a port number (1-65535)"),
        (["--max-video-frames", "0"], "error: --max-video-frames must be at least 1"),
        (["--score-thresh", "2"], "error: --score-thresh 2.0 is not between 0 and 1"),
    ]:
        assert demo_cli.main(argv) == 2
        assert capsys.readouterr().err.strip() == message


def test_benchmark_layout_gives_the_default_classes_and_examples(tmp_path):
    checkpoint = tmp_path / "vild" / "model_final.pt"
    assert demo_cli._benchmark_defaults(checkpoint) == (None, None)
    (tmp_path / "data" / "annotations").mkdir(parents=True)
    (tmp_path / "data" / "annotations" / "instances_val.json").write_text("{}")
    (tmp_path / "held_out_images").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "held_out_images" / "a.png")
    classes, examples = demo_cli._benchmark_defaults(checkpoint)
    assert classes.endswith("instances_val.json") and examples.endswith("held_out_images")


def test_search_tab_ranks_the_matching_region_first(demo_model, tmp_path):
    pytest.importorskip("faiss", reason="text search needs faiss-cpu")
    from ovdet.search import RegionIndex

    images = [red_square_image(tmp_path / f"im{i}.png") for i in range(3)]
    dim = demo_model.detector.head.embed_dim
    target = demo_model.detector.text_embeddings(["red square"])[0].numpy()
    others = np.random.default_rng(0).normal(size=(3, dim)).astype(np.float32)
    index = RegionIndex(dim)
    index.add(
        np.concatenate([others[:2], target[None], others[2:]]),
        [{"file": str(images[i % 3]), "kind": "region" if i != 3 else "image",
          "box": [1, 2, 30, 40], "timestamp": None} for i in range(4)],
    )  # fmt: skip
    sheet, rows, status = demo.search_index(demo_model, index, "red square", top_k=2)
    assert status == "2 hit(s) for 'red square'"
    assert rows[0][0] == 1 and rows[0][2] == "im2.png" and rows[0][1] == pytest.approx(1, 1e-4)
    assert sheet is not None and sheet.width > 0
    _, only_images, _ = demo.search_index(demo_model, index, "red square", 5, kind="image")
    assert [r[3] for r in only_images] == ["image"]
    assert demo.search_index(demo_model, index, "  ", 5)[2].startswith("error: the query is empty")


@pytest.fixture
def toy_clip(tmp_path) -> Path:
    """A 2 s clip (20 frames at 10 fps, 64 x 64) of toy pictures."""
    av = pytest.importorskip("av", reason="PyAV (av) is not installed")
    from tests.cli.test_video import make_clip

    path = tmp_path / "toy_clip.mp4"
    make_clip(path, "libx264" if "libx264" in av.codecs_available else "mpeg4")
    return path


def test_video_tab_gives_tools_infer_detections_with_times_and_a_drawn_video(
    demo_model, demo_checkpoint, toy_clip, tmp_path
):
    from ovdet.video.io import VideoReader

    classes = "red square, green square"
    result = demo.detect_video_file(
        demo_model, toy_clip, classes, demo_model.default_templates, 0.0, False, 2.0,
        tmp_path / "page",
    )  # fmt: skip
    assert result.messages == []
    assert result.status == f"{len(result.rows)} detection(s) in 4 frame(s) of toy_clip.mp4 " \
        "(sampled at 2 fps)"  # fmt: skip
    results = result.results
    assert [im["timestamp"] for im in results["images"]] == [0.0, 0.5, 1.0, 1.5]
    assert results["categories"][1] == {"id": 2, "name": "green square", "novel": True}
    assert len(result.rows) == len(results["detections"]) > 0
    assert {row[0] for row in result.rows} == {0.0, 0.5, 1.0, 1.5}  # every frame has boxes
    assert {row[5] for row in result.rows if row[2] == "red square"} == {"base"}
    assert {row[5] for row in result.rows if row[2] == "green square"} <= {"novel"}
    json.dumps(results)
    # The drawn video: one frame per sampled frame, playable by the page (H.264 mp4).
    assert result.drawn == tmp_path / "page" / "toy_clip_det.mp4"
    drawn = list(VideoReader(result.drawn))
    assert len(drawn) == 4 and drawn[0].image.shape == (64, 64, 3)

    # The same detections as tools/infer.py on the same clip (one code path).
    out = tmp_path / "cli"
    assert infer_cli.main([
        "--checkpoint", str(demo_checkpoint), "--classes", classes, "--input", str(toy_clip),
        "--fps", "2", "--score-thresh", "0", "--output", str(out), "--no-progress",
    ]) == 0  # fmt: skip
    cli = json.loads((out / "results.json").read_text())
    assert cli["images"] == results["images"]
    keys = ("image_id", "frame", "timestamp", "category", "category_id", "bbox", "score")
    assert [{k: d[k] for k in keys} for d in cli["detections"]] == [
        {k: d[k] for k in keys} for d in results["detections"]
    ]


def test_bad_videos_are_the_command_lines_messages_and_the_tab_keeps_working(
    demo_model, toy_clip, tmp_path, capsys
):
    def request(video, classes="red square", fps=2.0, max_frames=300):
        return demo.detect_video_file(
            demo_model, video, classes, "a", 0.0, False, fps, tmp_path / "page",
            max_frames=max_frames,
        )  # fmt: skip

    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video at all\n")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(toy_clip.read_bytes()[:2000])
    for bad, fragment in [(notes, "cannot be read"), (cut, "truncated")]:
        result = request(bad)
        assert result.drawn is None and result.rows == [] and result.results == {}
        message = result.status
        assert message.startswith("error: ") and fragment in message and bad.name in message
        assert "\n" not in message and str(tmp_path) not in message
        # what tools/infer.py prints for the same file, the path named as uploaded
        code = infer_cli.main(["--checkpoint", "x.pt", "--classes", "red square", "--input",
                               str(bad), "--output", str(tmp_path / "o")])  # fmt: skip
        err = capsys.readouterr().err.strip().splitlines()[-1]
        if bad == notes:  # refused before the checkpoint is read
            assert code == 2 and message == err.replace(str(bad), bad.name)
    assert not list((tmp_path / "page").glob("*.mp4"))  # no partial drawn video left
    assert request(None).status == "error: no video; upload one"
    assert request(toy_clip, classes="kite, Kite").status == f"error: {_error_of('kite, Kite')}"
    too_long = request(toy_clip, fps=0, max_frames=10).status
    assert too_long == (
        "error: toy_clip.mp4 gives 20 frames (every frame); at most 10 per request (lower the "
        "frame rate)"
    )
    assert request(toy_clip, fps=-1).status.startswith("error: the frame rate")
    assert request(toy_clip).status.endswith("in 4 frame(s) of toy_clip.mp4 (sampled at 2 fps)")


def write_mask_checkpoint(tiny_clip: str, folder: Path) -> Path:
    """A tiny mask model (``MODEL.MASK_ON``) whose every mask fills its box, its other weights
    random: ``folder/model.pt``."""
    import torch

    from ovdet.config import load_config
    from ovdet.tv.engine.build import build_model
    from ovdet.tv.engine.checkpoint import save_checkpoint

    cfg = load_config(TINY_CONFIG, ["MODEL.OVDET.CLIP", tiny_clip, "MODEL.OVDET.TEMPLATES", "a",
                                    "MODEL.MASK_ON", "True"])  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg)
    logits = model.roi_heads.mask_predictor.mask_fcn_logits
    torch.nn.init.zeros_(logits.weight)  # every mask fills its box
    torch.nn.init.constant_(logits.bias, 3.0)
    state = {"model": model.state_dict(), "config": cfg.dump(), "class_names": ["red square"],
             "embed_dim": 32}  # fmt: skip
    return save_checkpoint(state, folder, "model.pt")


def mask_difference(drawn, image: Path, detections: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Where the demo's picture ``drawn`` of ``image`` (drawn 8x enlarged) differs from the
    same boxes drawn without masks: per pixel, the largest difference of a channel, uint8
    [H, W]; and the pixels of ``detections``' masks, bool [H, W]."""
    from pycocotools import mask as mask_utils

    from ovdet.utils.visualizer import draw_detections

    view = np.asarray(Image.open(image).convert("RGB").resize((512, 512), Image.NEAREST))
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in detections)])
    novel = [False] * len(detections)
    names = [d["category"] for d in detections]
    scores = [d["score"] for d in detections]
    boxes_only = np.asarray(draw_detections(view, boxes * 8, scores, names, novel=novel))
    union = np.any([mask_utils.decode(d["segmentation"]) for d in detections], axis=0)
    union = np.kron(union, np.ones((8, 8), np.uint8)).astype(bool)
    drawn = np.asarray(drawn.convert("RGB"), dtype=np.int16)
    return np.abs(drawn - boxes_only.astype(np.int16)).max(-1).astype(np.uint8), union


def test_a_mask_model_paints_its_masks(tiny_clip, tmp_path):
    """A mask model's detections are painted (the drawn picture differs from the same boxes
    drawn without masks) and its results carry RLE masks."""
    checkpoint = write_mask_checkpoint(tiny_clip, tmp_path)
    image = red_square_image(tmp_path / "photo.png")
    result = detect_files(DemoModel.from_checkpoint(checkpoint), [image], "red square", "a",
                          0.0, False)  # fmt: skip
    detections = result.results["detections"]
    assert detections and all("segmentation" in d for d in detections)
    # Pixels of the masks are tinted where no label covers them; the others are as without masks.
    difference, union = mask_difference(result.drawn[0][0], image, detections)
    changed = difference > 0
    assert union.any() and changed[union].mean() > 0.1
    assert changed[~union].mean() < 0.01
