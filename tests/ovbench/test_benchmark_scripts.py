"""The command lines of the scripts in benchmarks/ (their measurements: docs/speed.md)."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import bench_training, vild_image_ablation
from ovdet.config import load_config


def test_ablation_takes_config_overrides_after_its_options():
    # the form of the module's own example: `train --bench B --small --output O KEY VALUE ...`
    args = vild_image_ablation.parse_args(
        ["train", "--bench", "b", "--small", "--output", "o", "MODEL.OVDET.DISTILL.WEIGHT", "0.1"]
    )
    assert (args.what, args.small, args.overrides) == (
        "train", True, ["MODEL.OVDET.DISTILL.WEIGHT", "0.1"]
    )  # fmt: skip


def test_image_head_ablation_needs_a_checkpoint_with_an_image_head(trained_checkpoint, tmp_path):
    with pytest.raises(SystemExit):  # argparse: image-head needs --checkpoint
        vild_image_ablation.main(["image-head", "--bench", str(tmp_path)])
    with pytest.raises(SystemExit, match="has no image head"):
        vild_image_ablation.main(
            ["image-head", "--bench", str(tmp_path), "--checkpoint", str(trained_checkpoint)]
        )


def test_training_variants_on_the_reference_paths_are_the_same_model_on_torchvisions_paths():
    args = bench_training.parse_args(
        ["--config", "tiny", "--variants", "text", "text@reference", "online", "closed@reference",
         "--distill-proposals", "4", "8"]
    )  # fmt: skip
    names = bench_training.variant_names(args)
    assert names == ["text", "text@reference", "online:4", "online:8", "closed@reference"]
    with pytest.raises(SystemExit, match="only @reference"):
        bench_training.variant_names(bench_training.parse_args(["--variants", "text@fast"]))

    cfg = load_config("tiny", ["MODEL.OVDET.EMBED_DIM", "32"])
    fast = bench_training.build_variant(cfg, args, "text", 32)
    reference = bench_training.build_variant(cfg, args, "text@reference", 32)
    assert fast.backbone.channels_last and not reference.backbone.channels_last
    assert not reference.roi_heads.box_roi_pool.vectorised_backward
    for (name, a), (_, b) in zip(fast.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name  # the same weights (both built with seed 0)


def _report(seed: int, novel: dict[str, float], size: str = "small") -> dict:
    """A results.json of the rows in ``novel`` (base AP50 = novel + 0.1)."""
    metrics = {
        key: {"base": {"AP50": value + 0.1}, "novel": {"AP50": value}}
        for key, value in novel.items()
    }
    return {"size": size, "size_settings": {"detector_iters": 300 if size == "small" else 600},
            "seed": seed, "metrics": metrics}  # fmt: skip


def test_every_control_is_a_box_only_row_of_the_table():
    from ovdet.ovbench.plan import DETECTORS, METHODS, WEAK_DETECTORS

    by_key = {m.key: m for m in METHODS}
    init_from = {d.name: d.init_from for d in DETECTORS}
    controlled = [m for m in METHODS if m.control]
    assert {m.key for m in controlled} == {m.key for m in METHODS if m.detector in WEAK_DETECTORS}
    for method in controlled:
        control = by_key[method.control]
        assert control.detector not in WEAK_DETECTORS
        # fine-tuned from the same box-trained detector, as long
        assert init_from[control.detector] == init_from[method.detector] != ""
        assert control.prediction == method.prediction  # CLIP rescoring against CLIP rescoring


def test_summary_of_runs_gives_each_rows_spread_and_its_gain_over_its_control(tmp_path):
    from benchmarks import summarize_runs

    runs = []
    for seed, (f, c) in enumerate([(0.5, 0.4), (0.3, 0.35), (0.7, 0.45)]):
        run = tmp_path / f"run{seed}"
        run.mkdir()
        novel = {"vild_text": 0.2, "vild_text_longer": c, "vild_text_labels": f}
        (run / "results.json").write_text(json.dumps(_report(seed, novel)))
        runs.append(run)
    summary = summarize_runs.summarize([summarize_runs.load_report(r) for r in runs])
    assert summary["seeds"] == [0, 1, 2]
    assert list(summary["rows"]) == ["vild_text", "vild_text_longer", "vild_text_labels"]
    assert summary["rows"]["vild_text_labels"]["base"] == pytest.approx([0.6, 0.4, 0.8])
    assert list(summary["gains"]) == ["vild_text_labels"]  # its control is in every run
    assert summary["gains"]["vild_text_labels"]["novel"] == pytest.approx([0.1, -0.05, 0.25])
    text = summarize_runs.format_summary(summary)
    assert "| ViLD-text + image labels | 0.600 [0.400, 0.800] | 0.500 [0.300, 0.700] |" in text
    assert "| +0.100, -0.050, +0.250 | +0.100 | 2 of 3 |" in text


def test_summary_refuses_runs_of_other_sizes_and_folders_without_results(tmp_path, capsys):
    from benchmarks import summarize_runs
    from ovdet.utils.errors import DataError

    with pytest.raises(DataError, match="different sizes"):
        summarize_runs.summarize([_report(0, {"vild_text": 0.2}),
                                  _report(0, {"vild_text": 0.2}, size="default")])  # fmt: skip
    with pytest.raises(SystemExit):
        summarize_runs.main([str(tmp_path)])
    assert "is not a finished benchmark run" in capsys.readouterr().err


def _two_object_image():
    """Objects of classes 0 and 1 in opposite corners of a 100 px image; regions: one proposal
    spanning both, one tight on each, then the whole-image box."""
    gt = torch.tensor([[0.0, 0.0, 40.0, 40.0], [60.0, 60.0, 100.0, 100.0]])
    regions = torch.tensor(
        [[0.0, 0.0, 100.0, 100.0], [0.0, 0.0, 40.0, 40.0], [60.0, 60.0, 98.0, 98.0],
         [0.0, 0.0, 100.0, 100.0]]
    )  # fmt: skip
    return regions, gt, torch.tensor([0, 1])


def test_region_quality_counts_a_label_hit_only_on_an_object_of_its_class():
    from benchmarks.weak_region_quality import label_region_ceiling, label_region_hits

    regions, gt, gt_classes = _two_object_image()
    labels = torch.tensor([0, 1])
    # Region 1 scores best for class 0 and region 2 for class 1 (columns: 0, 1, background).
    logits = torch.tensor([[1.0, 1.0, 0.0], [5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [2.0, 2.0, 0.0]])
    hits = {
        rule: label_region_hits(regions, logits, labels, gt, gt_classes, rule).tolist()
        for rule in ("max_score", "max_size", "image")
    }
    # max-size takes the spanning proposal (IoU 0.16 with either object), image the whole image
    assert hits == {"max_score": [True, True], "max_size": [False, False], "image": [False, False]}
    # Region 1 now also scores best for class 1: it is an object, but of class 0.
    logits[1, 1] = 9.0
    assert label_region_hits(regions, logits, labels, gt, gt_classes, "max_score").tolist() == [
        True,
        False,
    ]
    assert label_region_ceiling(regions, labels, gt, gt_classes).tolist() == [True, True]
    # Without the tight proposal of class 1's object, no choice can get it right.
    keep = torch.tensor([0, 1, 3])
    assert label_region_ceiling(regions[keep], labels, gt, gt_classes).tolist() == [True, False]


def test_benchmark_reports_name_the_package_versions_they_were_measured_with():
    from ovdet.ovbench.report import format_results
    from ovdet.utils.versions import package_versions

    versions = package_versions(("torch", "no-such-distribution-for-ovdet"))
    assert versions["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert versions["no-such-distribution-for-ovdet"] is None
    report = {"metrics": {}, "clip_zero_shot": {"base": 0.5, "novel": 0.25}, "targets": [],
              "versions": versions}  # fmt: skip
    assert format_results(report).splitlines()[-1] == f"Packages: torch {versions['torch']}."


def test_region_quality_counts_every_label_of_every_image_once(
    trained_checkpoint, toy_dataset, tmp_path
):
    from benchmarks import weak_region_quality

    out = tmp_path / "counts.json"
    report = weak_region_quality.main([
        "--checkpoint", str(trained_checkpoint), "--boxes", str(toy_dataset / "instances.json"),
        "--images", str(toy_dataset / "images"), "--split", str(toy_dataset / "split.json"),
        "--max-images", "6", "--no-progress", "--json", str(out),
    ])  # fmt: skip
    data = json.loads((toy_dataset / "instances.json").read_text())
    split = json.loads((toy_dataset / "split.json").read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    first = {i["id"] for i in data["images"][:6]}
    pairs = {(a["image_id"], names[a["category_id"]]) for a in data["annotations"]
             if a["image_id"] in first}  # fmt: skip
    expected = {"base": sum(n in split["base"] for _, n in pairs),
                "novel": sum(n in split["novel"] for _, n in pairs)}  # fmt: skip
    assert json.loads(out.read_text()) == report
    for rule, by_kind in report["counts"].items():
        assert {kind: n for kind, (_, n) in by_kind.items()} == expected, rule
        for kind, (hits, _) in by_kind.items():
            # max-size and max-score choose among the proposals: never above the ceiling
            if rule in ("max_size", "max_score"):
                assert hits <= report["counts"]["ceiling"][kind][0]


def test_one_detector_is_never_trained_into_a_linked_folder(tmp_path):
    """The documented fine-tuning command links OUT/vild_text to a benchmark run's folder (the
    weights it starts from); training that detector into OUT would overwrite the run's."""
    from benchmarks import train_one_detector

    run = tmp_path / "run" / "vild_text"
    run.mkdir(parents=True)
    (run / "model_final.pt").write_bytes(b"the run's weights")
    out = tmp_path / "out"
    out.mkdir()
    (out / "vild_text").symlink_to(run)
    argv = ["--data", str(tmp_path / "data"), "--clip", "local-dir:c", "--detector", "vild_text"]
    with pytest.raises(SystemExit, match="is a link"):
        train_one_detector.main([*argv, "--iters", "1", "--output", str(out)])
    assert (run / "model_final.pt").read_bytes() == b"the run's weights"


def test_fvlm_regions_needs_a_run_with_the_fvlm_detector(tmp_path):
    from benchmarks import fvlm_regions

    with pytest.raises(SystemExit, match="no F-VLM detector"):
        fvlm_regions.main([str(tmp_path)])


def test_nearest_row_rates_count_right_boxes_and_base_boxes_taken_by_novel_rows():
    from benchmarks.exemplar_crop_rows import nearest_row_rates

    rows = torch.eye(3)  # classes 0, 1 base; 2 novel
    novel = torch.tensor([False, False, True])
    # boxes of classes 0, 0, 1, 2, 2: the second base box is nearest to the novel row, the
    # second novel box to base row 1
    embeddings = torch.nn.functional.normalize(
        torch.tensor([[1.0, 0.1, 0], [0.2, 0, 1], [0, 1, 0.1], [0, 0.1, 1], [0, 1, 0.3]]), dim=-1
    )
    rates = nearest_row_rates(embeddings, torch.tensor([0, 0, 1, 2, 2]), rows, novel)
    expected = {"novel_accuracy": 0.5, "base_accuracy": 2 / 3, "base_taken_by_novel": 1 / 3}
    assert rates == pytest.approx(expected)
