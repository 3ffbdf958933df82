"""benchmarks/real_scale.py in its smoke mode: every section runs and its report holds together
(its figures at full scale: docs/speed.md#real-scale-cpu)."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import real_scale


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("real_scale") / "report.json"
    report = real_scale.main(["--smoke", "--no-memory", "--json", str(out)])
    return report, json.loads(out.read_text())


def test_smoke_report_has_every_row_and_consistent_figures(smoke, capsys):
    report, written = smoke
    assert written == json.loads(json.dumps(report))  # the JSON is the report
    summary, results = report["summary"], report["results"]

    train = summary["train"]
    assert list(train) == ["closed", "text", "online:16", "offline", "weak", "fvlm"]
    assert train["closed"]["ratio"] == 1.0  # each ratio is to the closed-set step
    for row in train.values():
        assert row["step_s"] > 0 and row["ratio"] > 0
        assert row["s_per_image"] == pytest.approx(row["step_s"] / 2)  # batch 2
    assert all(shape[0] == 64 for shape in results["train"]["images"])  # --size of the smoke

    infer = summary["infer"]
    assert list(infer) == ["det:5", "det:40", "rescore:40:8x2", "rescore:40:4x1", "fvlm:40",
                           "fvlm:40:8"]  # fmt: skip
    assert infer["det:40"]["ratio_to_detector"] == 1.0
    for name in ("fvlm:40", "fvlm:40:8"):  # F-VLM, also against the crop rescoring it replaces
        assert infer[name]["ratio_to_crop_rescoring"] > 0
    assert all(row["s_per_image"] > 0 for row in infer.values())

    text = results["text"]
    assert text["names"] == 12 and text["templates"] == 1 and text["text_tower_calls"] == 1
    assert text["cold_s"] > 0 and text["warm_s"] > 0
    assert summary["text"]["cold_s_lvis"] == pytest.approx(
        text["cold_s"] / 12 * summary["text"]["lvis_names"]
    )

    loader = summary["loader"]
    per_worker = loader["images_per_s_per_worker"]
    assert per_worker > 0 and loader["decode_images_per_s"] > 0
    for name, workers in loader["workers_needed"].items():  # a step's images/s over one worker's
        assert workers == pytest.approx(1 / train[name]["s_per_image"] / per_worker)


def test_smoke_report_prints_its_tables(smoke, capsys):
    args = real_scale.parse_args(["--smoke"])
    cfg = real_scale.setup(args)[0]
    real_scale.print_report(
        args, torch.device("cpu"), cfg, smoke[0]["results"], smoke[0]["summary"]
    )
    out = capsys.readouterr().out
    assert "| ratio to closed [IQR] |" in out and "+ CLIP rescoring 8x2" in out
    assert "F-VLM, frozen `local-dir:clip/tiny` + CLIP scores of 8 pooled regions" in out
    assert "F-VLM: ViLD-text on the frozen `local-dir:clip/tiny` tower + FPN" in out
    assert "Text tower: 12 names x 1 templates" in out and "images/s per worker" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--amp"], "--amp needs --device cuda"),
        (["--rescoring", "0x1"], "K >= 1 and S in 1, 2"),
        (["--rescoring", "ax2"], "is not KxS"),
        (["--batch", "0"], "must be >= 1"),
        (["--train-classes", "0"], "must be >= 1"),
        (["--clock", "cpu", "--device", "cuda"], "--clock cpu times the CPU"),
    ],
)
def test_bad_options_are_one_line_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as error:
        real_scale.parse_args(argv)
    text = str(error.value) if error.value.code != 2 else capsys.readouterr().err
    assert message in text


def test_rescoring_variant_takes_the_first_scales_of_the_teacher():
    assert real_scale.Rescoring.parse("32x1").crop_scales((1.0, 1.5)) == (1.0,)
    assert real_scale.Rescoring.parse("32x2").crop_scales((1.0, 1.5)) == (1.0, 1.5)
    assert real_scale.Rescoring.parse("32").crop_scales((1.5,)) == (1.5,)  # K alone: all of them


def test_rescoring_accuracy_variants_name_proposals_and_crop_scales():
    from benchmarks.rescoring_accuracy import parse_variant

    assert parse_variant("32:1.0,1.5") == (32, (1.0, 1.5))
    assert parse_variant("100") == (100, ())  # the teacher's scales
    for bad in ("0:1.0", "32:-1", "a:1.0"):
        with pytest.raises(SystemExit, match="variant"):
            parse_variant(bad)


def test_fvlm_is_built_on_the_backbone_of_its_clips_tower(tiny_vit_clip):
    from ovdet.config.catalog import CONFIG_DIR
    from ovdet.core.clip_tower import CLIP_BACKBONE_NAME, CLIP_VIT_BACKBONE_NAME

    assert real_scale.fvlm_backbone_name("RN50") == CLIP_BACKBONE_NAME
    assert real_scale.fvlm_backbone_name("ViT-B-16") == CLIP_VIT_BACKBONE_NAME
    assert real_scale.fvlm_backbone_name(tiny_vit_clip) == CLIP_VIT_BACKBONE_NAME
    tiny_resnet = f"local-dir:{CONFIG_DIR / 'clip' / 'tiny'}"
    assert real_scale.fvlm_backbone_name(tiny_resnet) == CLIP_BACKBONE_NAME
