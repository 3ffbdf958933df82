"""Resume after SIGKILL reproduces the uninterrupted run's losses exactly."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, TINY_CONFIG, toy_overrides

pytestmark = pytest.mark.slow


def _train(overrides, *extra):
    cmd = [sys.executable, str(REPO / "tools" / "train.py"), "--config", str(TINY_CONFIG),
           "--no-progress", *extra, *overrides]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _losses(out):
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return {m["iteration"]: m["total_loss"] for m in map(json.loads, lines) if "total_loss" in m}


def test_sigkill_then_resume_logs_the_same_losses(toy_dataset, tiny_clip, tmp_path):
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    extra = ["SOLVER.CHECKPOINT_PERIOD", "4", "DATALOADER.NUM_WORKERS", "0"]
    ref = _train(toy_overrides(toy_dataset, tiny_clip, ref_dir, max_iter=12) + extra)
    assert ref.wait(timeout=600) == 0, ref.stderr.read()

    run = _train(toy_overrides(toy_dataset, tiny_clip, run_dir, max_iter=12) + extra)
    deadline = time.time() + 600
    while time.time() < deadline:  # kill once a checkpoint exists and training went past it
        if (run_dir / "model_0000004.pt").exists() and len(_losses(run_dir)) >= 6:
            break
        assert run.poll() is None, run.stderr.read()
        time.sleep(0.05)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    assert not (run_dir / "model_final.pt").exists()
    assert not list(run_dir.glob(".*.tmp")), "a half-written file was left behind"

    resumed = _train(toy_overrides(toy_dataset, tiny_clip, run_dir, max_iter=12) + extra,
                     "--resume")  # fmt: skip
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    expected, got = _losses(ref_dir), _losses(run_dir)
    assert sorted(got) == list(range(1, 13))
    for it in range(1, 13):
        assert got[it] == pytest.approx(expected[it], rel=1e-5, abs=1e-6), it


def test_sigint_writes_a_checkpoint_then_exits(toy_dataset, tiny_clip, tmp_path):
    out = tmp_path / "int"
    run = _train(toy_overrides(toy_dataset, tiny_clip, out, max_iter=500)
                 + ["SOLVER.CHECKPOINT_PERIOD", "1000"])  # fmt: skip
    deadline = time.time() + 300
    while (
        time.time() < deadline and len(_losses(out) if (out / "metrics.jsonl").exists() else {}) < 3
    ):
        assert run.poll() is None, run.stderr.read()
        time.sleep(0.05)
    run.send_signal(signal.SIGINT)
    assert run.wait(timeout=120) == 130
    checkpoints = list(out.glob("model_*.pt"))
    assert len(checkpoints) == 1 and "Traceback" not in run.stderr.read()
