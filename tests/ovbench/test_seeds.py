"""tools/benchmark_synthetic.py --seeds N: each row as the mean ± standard error over detector
seeds, the per-seed values and the gains over the controls seed by seed, targets on the means."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from ovdet.ovbench.report import format_results
from ovdet.ovbench.seeds import (
    aggregate_metrics,
    mean_and_standard_error,
    paired_difference,
    seed_dir,
    seed_list,
)
from ovdet.ovbench.targets import check_targets
from tests.conftest import REPO


def _row(base, novel, detections=10) -> dict:
    return {
        "base": {"AP": base / 2, "AP50": base},
        "novel": {"AP": None if novel is None else novel / 2, "AP50": novel},
        "all": {"AP": base / 2, "AP50": base},
        "num_detections": detections,
    }


#: Three seeds of a run with the rows the targets read; ViLD-text's novel AP50 0.5, 0.7, 0.9.
PER_SEED = [
    {"closed_set": _row(0.40, 0.0), "clip_on_proposals": _row(0.2, 0.36),
     "vild_text": _row(0.6, 0.5, 10), "vild": _row(0.5, 0.4)},
    {"closed_set": _row(0.40, 0.0), "clip_on_proposals": _row(0.2, 0.36),
     "vild_text": _row(0.6, 0.7, 20), "vild": _row(0.5, 0.4)},
    {"closed_set": _row(0.40, 0.0), "clip_on_proposals": _row(0.2, 0.36),
     "vild_text": _row(0.6, 0.9, 60), "vild": _row(0.5, 0.4)},
]  # fmt: skip


def test_mean_and_standard_error():
    mean, se = mean_and_standard_error([0.5, 0.7, 0.9])
    # sample standard deviation 0.2, over sqrt(3)
    assert mean == pytest.approx(0.7) and se == pytest.approx(0.2 / math.sqrt(3))
    assert mean_and_standard_error([0.4, 0.4]) == (pytest.approx(0.4), 0.0)
    assert mean_and_standard_error([0.3]) == (0.3, None)  # one seed: no error
    assert mean_and_standard_error([0.3, None]) == (None, None)  # a group without objects


def test_rows_are_aggregated_over_the_seeds_that_all_have_them():
    per_seed = [dict(m) for m in PER_SEED]
    per_seed[1]["vild_weak_clip_rescoring"] = _row(0.9, 0.9)  # in one seed only: left out
    means, errors = aggregate_metrics(per_seed)
    assert list(means) == ["closed_set", "clip_on_proposals", "vild_text", "vild"]
    assert means["vild_text"]["novel"]["AP50"] == pytest.approx(0.7)
    assert means["vild_text"]["novel"]["AP"] == pytest.approx(0.35)
    assert errors["vild_text"]["novel"]["AP50"] == pytest.approx(0.2 / math.sqrt(3))
    assert means["vild_text"]["num_detections"] == pytest.approx(30)
    assert means["vild"]["base"]["AP50"] == pytest.approx(0.5)
    assert errors["vild"]["base"]["AP50"] == pytest.approx(0.0)


def test_a_gain_is_taken_seed_by_seed():
    gain = paired_difference(PER_SEED, "vild_text", "vild")
    assert gain["values"] == pytest.approx([0.1, 0.3, 0.5])
    assert gain["mean"] == pytest.approx(0.3) and gain["se"] == pytest.approx(0.2 / math.sqrt(3))


def test_targets_are_judged_on_the_means():
    means, _ = aggregate_metrics(PER_SEED)
    # best novel AP50 >= 1.5 x CLIP on proposals' (0.54): seed 0's ViLD-text (0.5) misses it,
    # the mean over the seeds (0.7) meets it
    assert check_targets(PER_SEED[0])[1]["status"] == "MISSED"
    mean = check_targets(means)[1]
    assert mean["status"] == "met"
    assert mean["text"] == "best ovdet novel AP50 0.700 >= 1.5 x CLIP on proposals (0.360)"


def test_the_table_shows_mean_and_standard_error_and_each_seed():
    means, errors = aggregate_metrics(PER_SEED)
    report = {
        "metrics": means,
        "standard_errors": errors,
        "seeds": [0, 1, 2],
        "seed": 0,
        "per_seed": {str(s): m for s, m in enumerate(PER_SEED)},
        "gains": {},
        "clip_zero_shot": {"base": 0.9, "novel": 0.8},
        "targets": check_targets(means),
    }
    text = format_results(report)
    assert "| ViLD-text | 0.600 ± 0.000 | 0.700 ± 0.115 | 0.600 ± 0.000 | 0.350 ± 0.058 |" in text
    assert "| ViLD-text | 0.500, 0.700, 0.900 |" in text  # novel AP50 per seed
    assert "over 3 detector seeds (0, 1, 2), on the data and CLIP of seed 0" in text
    # the exemplar rows, on every seed's detector, as the other rows
    per_seed = [{**m, "exemplars_region_k5": m["vild_text"]} for m in PER_SEED]
    means, errors = aggregate_metrics(per_seed)
    with_exemplars = format_results(
        {**report, "metrics": means, "standard_errors": errors,
         "per_seed": {str(s): m for s, m in enumerate(per_seed)}}
    )  # fmt: skip
    assert "region, 5 exemplars | 0.600 ± 0.000 | 0.700 ± 0.115 | 0.600 ± 0.000 |" in with_exemplars
    assert "region, 5 exemplars | 0.500, 0.700, 0.900 |" in with_exemplars
    # one seed: the single-run table, without errors
    single = {**report, "metrics": PER_SEED[0], "seeds": [0]}
    del single["standard_errors"]
    assert "| ViLD-text | 0.600 | 0.500 | 0.600 | 0.250 |" in format_results(single)
    assert "per seed" not in format_results(single)


def test_seed_folders(tmp_path):
    assert seed_list(3, 3) == [3, 4, 5]
    assert seed_dir(tmp_path, 3, 3) == tmp_path  # the first seed: a one-seed run's folder
    assert seed_dir(tmp_path, 4, 3) == tmp_path / "seed_4"


def test_seeds_must_be_positive(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "benchmark_synthetic.py"), "--small", "--seeds",
         "0", "--output", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "--seeds must be at least 1" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_seeds_train_every_detector_per_seed_on_one_data_and_clip(tmp_path):
    """A tiny run of two seeds on the toy dataset of test_benchmark_own_data."""
    from tests.ovbench.test_benchmark_own_data import _benchmark, _write_own_dataset

    data, out = tmp_path / "mine", tmp_path / "out"
    _write_own_dataset(data)
    proc = _benchmark(
        "--data", str(data), "--output", str(out), "--seeds", "2", "--seed", "5",
        "--train-json", "train/instances.json", "--train-images", "train/images",
        "--val-json", "val/instances.json", "--val-images", "val/images",
        "--captions", "text/captions.csv", "--image-column", "image",
        "--caption-column", "caption", "--csv-separator", ",",
        "--iters", "2", "--fine-tune-iters", "0", "--clip-epochs", "1",
        "--clip-batch-size", "32", "--picture-thresh", "0.0", "--workers", "2", "--threads", "1",
        "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64",
        "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64", "SOLVER.IMS_PER_BATCH", "2",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "results.json").read_text())
    assert report["seeds"] == [5, 6] and list(report["per_seed"]) == ["5", "6"]
    # one CLIP (pre-trained once, in the first seed's folder); each seed its own detectors
    assert not (out / "seed_6" / "clip").exists()
    for detector in ("closed_set", "vild_text", "vild"):
        for folder, seed in ((out, 5), (out / "seed_6", 6)):
            config = (folder / detector / "config.yaml").read_text()
            assert f"\nSEED: {seed}\n" in config and str(out / "clip" / "model") in config
    # the per-seed values are those evaluated in each folder; the table's are their means
    for key, row in report["metrics"].items():
        seeds = [json.loads((f / "eval" / f"{key}.json").read_text())
                 for f in (out, out / "seed_6")]  # fmt: skip
        assert [s["novel"]["AP50"] for s in seeds] == [
            report["per_seed"][s][key]["novel"]["AP50"] for s in ("5", "6")
        ]
        assert row["novel"]["AP50"] == pytest.approx(sum(s["novel"]["AP50"] for s in seeds) / 2)
    assert report["targets"] == check_targets(report["metrics"])
    assert " ± " in proc.stdout and "novel AP50 per seed" in proc.stdout
    assert "[seed_6/vild] iter 2/2  total_loss" in (out / "log.txt").read_text()
