"""tools/train_net.py end to end in a subprocess: register data, train 2 iterations, evaluate."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip(
    "detectron2", reason="detectron2 is not installed; see README (install by its official guide)"
)

REPO = Path(__file__).resolve().parents[2]


def test_train_net_trains_and_evaluates(instant_data, tiny_clip, text_cache, tmp_path):
    root, split = instant_data["root"], str(instant_data["split_file"])
    command = [
        sys.executable,
        str(REPO / "tools" / "train_net.py"),
        "--config-file",
        "d2/instant_test.yaml",
        "--register-dataset",
        "cli_train",
        str(instant_data["train_json"]),
        str(root / "train"),
        split,
        "train",
        "--register-dataset",
        "cli_val",
        str(instant_data["val_json"]),
        str(root / "val"),
        split,
        "eval",
        "DATASETS.TRAIN",
        "('cli_train',)",
        "DATASETS.TEST",
        "('cli_val',)",
        "MODEL.OVDET.CLIP",
        tiny_clip,
        "MODEL.OVDET.TEXT_CACHE_DIR",
        str(text_cache),
        "SOLVER.MAX_ITER",
        "2",
        "OUTPUT_DIR",
        str(tmp_path),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny model: one thread is fastest
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "model_final.pth").is_file()
    log = (tmp_path / "log.txt").read_text()
    # ovdet's own log lines reach detectron2's log.txt, e.g. "[...] ovdet.d2.model_vocabulary INFO:
    # ..."
    assert re.search(r"\] ovdet\.[\w.]+ INFO: Vocabulary of cli_val", log), log[-2000:]
    assert (tmp_path / "inference" / "cli_val" / "ovdet_instances_results.json").is_file()
    assert (
        "copypaste: AP,AP50,base_AP,base_AP50,novel_AP,novel_AP50" in result.stdout + result.stderr
    )

    bad = subprocess.run(
        command[:5] + ["a", "b", "c", "d", "test"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert bad.returncode != 0
    assert "ROLE must be 'train' or 'eval'" in bad.stderr

    # tools/infer.py runs the detectron2-trained weights with any vocabulary.
    infer = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "infer.py"),
            "--no-progress",
            "--d2-config",
            "d2/instant_test.yaml",
            "--weights",
            str(tmp_path / "model_final.pth"),
            "--clip",
            tiny_clip,
            "--classes",
            "blue box, red box, kite",
            "--input",
            str(root / "val"),
            "--output",
            str(tmp_path / "infer"),
            "--score-thresh",
            "0.0",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert infer.returncode == 0, infer.stderr[-3000:]
    results = json.loads((tmp_path / "infer" / "results.json").read_text())
    assert [c["name"] for c in results["categories"]] == ["blue box", "red box", "kite"]
    assert len(list((tmp_path / "infer").glob("*_det.jpg"))) == 3
    assert {d["category"] for d in results["detections"]} <= {"blue box", "red box", "kite"}
