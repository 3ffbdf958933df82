"""A second detector seed added to the quick start (``--small --seeds 2``), end to end: the seed
trains its own detectors on the first seed's data and CLIP, and every row, the exemplar rows
included, is evaluated on each seed's detectors and reported as the mean over the seeds. On top
of the quick start's run (tests/ovbench/conftest.py), about 4 minutes on 2 CPU cores (training
2.5 minutes), in ``make test-benchmark``."""

import json

import pytest

from ovdet.clip.spec import file_digest
from ovdet.ovbench.exemplars import EXEMPLAR_ROWS
from ovdet.ovbench.plan import METHODS
from ovdet.ovbench.seeds import mean_and_standard_error
from tests.ovbench.conftest import run_small_on_a_copy

pytestmark = [pytest.mark.slow, pytest.mark.synthetic_benchmark]


@pytest.fixture(scope="module")
def seeds_run(small_run, tmp_path_factory):
    """``--seeds 2`` on a copy of the quick start's folder: ``(folder, result, report before)``."""
    return run_small_on_a_copy(small_run, tmp_path_factory, "seeds", "--seeds", "2")


def test_the_exemplar_rows_are_evaluated_on_every_seeds_detector(seeds_run):
    out, result, before = seeds_run
    report = json.loads((out / "results.json").read_text())
    assert report["seeds"] == [0, 1]
    assert result.stderr.count("stage 2: training") == 3  # the second seed's three detectors
    # the first seed's rows are the quick start's, reused
    assert report["per_seed"]["0"] == before["metrics"]
    detectors = {m.key: m.detector for m in METHODS}
    for row in EXEMPLAR_ROWS:
        # each seed's exemplar rows scored that seed's own detector
        for folder in (out, out / "seed_1"):
            scored = json.loads((folder / "eval" / f"{row.key}.json").read_text())
            checkpoint = folder / detectors[scored["method"]] / "model_final.pt"
            assert scored["checkpoint_sha256"] == file_digest(checkpoint)
        # and the row is their mean, with its standard error
        values = [report["per_seed"][s][row.key]["novel"]["AP50"] for s in ("0", "1")]
        mean, error = mean_and_standard_error(values)
        assert report["metrics"][row.key]["novel"]["AP50"] == pytest.approx(mean)
        assert report["standard_errors"][row.key]["novel"]["AP50"] == pytest.approx(error)
    assert "5 exemplars | " in result.stdout.split("novel AP50 per seed")[1]
