"""Opening a checkpoint never runs code from it (issue 18).

A crafted checkpoint whose unpickling would create a file is refused with one line by every entry
point that reads checkpoints, and the file is never created. Checkpoints hold only tensors and
plain types; those written before (NumPy RNG state) still load and resume exactly; a trusted file
holding other objects converts into one that loads.

The detector is built, not trained: these tests check how files are read, not what is detected.
"""

from __future__ import annotations

import argparse
import pathlib
import pickle
import random
import shutil

import numpy as np
import pytest
import torch

from ovdet import OVDetector
from ovdet.cli import convert_checkpoint as convert_cli
from ovdet.cli import evaluate as evaluate_cli
from ovdet.cli import infer as infer_cli
from ovdet.cli import train as train_cli
from ovdet.config import load_config
from ovdet.tv.engine.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    read_torch_file,
    restore_rng_state,
    save_checkpoint,
)
from ovdet.tv.engine.trainer import Trainer
from ovdet.utils.errors import CheckpointError
from tests.conftest import TINY_CONFIG, assert_one_line_error, toy_overrides

D2_MISSING = "detectron2 is not installed; see README (install by its official guide)"


class _OpenForWrite:
    """Unpickling this calls ``open(marker, "w")``, which creates the marker file."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _Touch:
    """Unpickling this calls ``pathlib.Path.touch(marker)``."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = pathlib.Path(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


PAYLOADS = {"open": _OpenForWrite, "touch": _Touch}


def _crafted(path: pathlib.Path, marker: pathlib.Path, base: dict, payload: str = "open",
             zipfile: bool = True) -> pathlib.Path:  # fmt: skip
    """A real checkpoint with a payload among its class names, as an attacker would ship it."""
    state = dict(base)
    state["class_names"] = [*base.get("class_names", []), PAYLOADS[payload](marker)]
    torch.save(state, path, _use_new_zipfile_serialization=zipfile)
    return path


def _cfg(toy_dataset, tiny_clip, out, *extra: str):
    return load_config(TINY_CONFIG, toy_overrides(toy_dataset, tiny_clip, out) + list(extra))


@pytest.fixture(scope="module")
def trainer(tmp_path_factory, toy_dataset, tiny_clip) -> Trainer:
    """A trainer of the tiny config on the toy data, built but not run."""
    return Trainer(_cfg(toy_dataset, tiny_clip, tmp_path_factory.mktemp("run")), progress=False)


@pytest.fixture(scope="module")
def state(trainer) -> dict:
    """What the trainer writes at iteration 7 (current format)."""
    return trainer._state(7)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, state) -> pathlib.Path:
    return save_checkpoint(state, tmp_path_factory.mktemp("ckpt"), "model_0000007.pt")


def _one_line(capsys, *fragments: str) -> str:
    return assert_one_line_error(capsys.readouterr().err, *fragments)


# ------------------------------------------------------------------------------ the format


def test_checkpoints_hold_only_tensors_and_plain_types(checkpoint):
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(checkpoint)) == []
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)  # no allow-list at all
    assert {"model", "optimizer", "scheduler", "scaler", "iteration", "rng", "config"} <= set(state)
    assert set(state["rng"]) == {"python", "numpy", "torch", "cuda"}


def _draws() -> tuple:
    return random.random(), np.random.randn(), np.random.rand(), torch.rand(3).tolist()


def test_rng_states_round_trip_exactly():
    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    np.random.randn()  # a cached Gaussian in NumPy's state
    saved = capture_rng_state()
    expected = _draws()
    restore_rng_state(saved)
    assert _draws() == expected


# ------------------------------------------------------------------------------ crafted files


def test_the_crafted_file_runs_code_when_unpickled_unsafely(state, tmp_path):
    """The payload of these tests is real: ``weights_only=False`` (the old loader) runs it."""
    for payload in PAYLOADS:
        marker = tmp_path / f"ran_{payload}"
        path = _crafted(tmp_path / f"{payload}.pt", marker, state, payload)
        torch.load(path, map_location="cpu", weights_only=False)
        assert marker.exists(), payload


@pytest.mark.parametrize(
    "payload,zipfile,legacy_rng",
    [("open", True, False), ("touch", True, False), ("open", False, False), ("open", True, True)],
)
def test_load_checkpoint_refuses_a_crafted_file(state, tmp_path, payload, zipfile, legacy_rng):
    base = dict(state)
    if legacy_rng:  # with the NumPy arrays the legacy loading path accepts
        base["rng"] = {**state["rng"], "numpy": np.random.get_state()}
    marker = tmp_path / "pwned"
    path = _crafted(tmp_path / "model.pt", marker, base, payload, zipfile)
    with pytest.raises(CheckpointError, match="is refused") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_from_checkpoint_refuses_a_crafted_file(state, tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(CheckpointError, match="is refused") as info:
        OVDetector.from_checkpoint(_crafted(tmp_path / "model.pt", marker, state))
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_infer_cli_refuses_a_crafted_file(state, toy_dataset, tmp_path, capsys):
    marker = tmp_path / "pwned"
    path = _crafted(tmp_path / "model.pt", marker, state)
    argv = ["--checkpoint", str(path), "--classes", "cat", "--input",
            str(toy_dataset / "images" / "0000.png"), "--output", str(tmp_path / "out"),
            "--no-progress"]  # fmt: skip
    assert infer_cli.main(argv) == 2
    _one_line(capsys, "is refused", str(path))
    assert not marker.exists()
    assert not (tmp_path / "out" / "results.json").exists()


def test_evaluate_cli_refuses_a_crafted_file(state, toy_dataset, tmp_path, capsys):
    marker = tmp_path / "pwned"
    path = _crafted(tmp_path / "model.pt", marker, state)
    argv = ["--gt", str(toy_dataset / "instances.json"), "--checkpoint", str(path),
            "--image-root", str(toy_dataset / "images"), "--device", "cpu"]  # fmt: skip
    assert evaluate_cli.main(argv) == 2
    _one_line(capsys, "is refused")
    assert not marker.exists()


@pytest.mark.parametrize("how", ["MODEL.WEIGHTS", "--resume"])
def test_training_refuses_a_crafted_file(state, toy_dataset, tiny_clip, tmp_path, capsys, how):
    marker = tmp_path / "pwned"
    out = tmp_path / "out"
    overrides = toy_overrides(toy_dataset, tiny_clip, out)
    if how == "MODEL.WEIGHTS":
        extra = [*overrides, "MODEL.WEIGHTS", str(_crafted(tmp_path / "init.pt", marker, state))]
    else:  # the last checkpoint of the output folder
        out.mkdir()
        _crafted(out / "model_0000007.pt", marker, state)
        (out / "last_checkpoint").write_text("model_0000007.pt")
        extra = ["--resume", *overrides]
    argv = ["--config", str(TINY_CONFIG), "--no-progress", *extra]
    assert train_cli.main(argv) == 2
    _one_line(capsys, "is refused")
    assert not marker.exists()
    assert not (out / "metrics.jsonl").exists()  # no training step ran


def test_d2_load_weights_refuses_a_crafted_file(state, tmp_path):
    pytest.importorskip("detectron2", reason=D2_MISSING)
    from detectron2.checkpoint import DetectionCheckpointer

    from ovdet.d2.predictor import load_d2_weights

    model = torch.nn.Linear(3, 2)
    weights = {"model": model.state_dict(), "iteration": 5}

    marker = tmp_path / "pwned_pth"
    path = _crafted(tmp_path / "model_final.pth", marker, weights)
    with pytest.raises(CheckpointError, match="cannot load weights .* is refused") as info:
        load_d2_weights(model, str(path))
    assert "\n" not in str(info.value)
    assert not marker.exists()

    # A .pkl file: detectron2's own loader unpickles it with pickle, running the payload...
    marker = tmp_path / "pwned_pkl"
    pkl = tmp_path / "model_final.pkl"
    with open(pkl, "wb") as f:
        pickle.dump({**weights, "__author__": "x", "p": _OpenForWrite(marker)}, f)
    DetectionCheckpointer(torch.nn.Linear(3, 2)).load(str(pkl))
    assert marker.exists()
    # ...which the plugin never does.
    marker.unlink()
    with pytest.raises(CheckpointError, match="cannot load weights .*pickle") as info:
        load_d2_weights(model, str(pkl))
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_d2_load_weights_loads_detectron2_checkpoints(tmp_path):
    pytest.importorskip("detectron2", reason=D2_MISSING)
    from detectron2.checkpoint import DetectionCheckpointer

    from ovdet.d2.predictor import load_d2_weights

    torch.manual_seed(0)
    trained = torch.nn.Sequential(torch.nn.Linear(3, 2))
    DetectionCheckpointer(trained, save_dir=str(tmp_path)).save("model_final", iteration=9)
    fresh = torch.nn.Sequential(torch.nn.Linear(3, 2))
    load_d2_weights(fresh, str(tmp_path / "model_final.pth"))
    for key, value in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    # A bare state dict, with DistributedDataParallel's prefix, as detectron2 accepts.
    torch.save({f"module.{k}": v * 2 for k, v in trained.state_dict().items()}, tmp_path / "b.pth")
    load_d2_weights(fresh, str(tmp_path / "b.pth"))
    assert torch.equal(fresh[0].weight, trained[0].weight * 2)


# ---------------------------------------------------------------------------- older checkpoints


def _legacy(state: dict, path: pathlib.Path, **extra) -> tuple[pathlib.Path, tuple]:
    """``state`` as ``Trainer._state`` wrote it before checkpoints held only plain types: the RNG
    states as ``random.getstate()`` / ``np.random.get_state()`` tuples (a NumPy array inside)."""
    random.seed(11)
    np.random.seed(12)
    torch.manual_seed(13)
    np.random.randn()
    rng = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    torch.save({**state, "rng": rng, **extra}, path)
    return path, (rng["python"], rng["numpy"], rng["torch"])


def _assert_rng_is(python, numpy_state, torch_state) -> None:
    assert random.getstate() == python
    name, key, pos, has_gauss, cached = np.random.get_state()
    assert (name, pos, has_gauss, cached) == (numpy_state[0], *numpy_state[2:])
    np.testing.assert_array_equal(key, numpy_state[1])
    assert torch.equal(torch.get_rng_state(), torch_state)


def test_legacy_checkpoints_load_and_resume_exactly(state, toy_dataset, tiny_clip, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    path, rng = _legacy(state, out / "model_0000007.pt")
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(path))  # NumPy's globals

    loaded = load_checkpoint(path)
    assert isinstance(loaded["rng"]["numpy"]["key"], torch.Tensor)
    detector = OVDetector.from_checkpoint(path)
    assert torch.equal(detector.model.state_dict()["backbone.body.conv1.weight"],
                       state["model"]["backbone.body.conv1.weight"])  # fmt: skip

    (out / "last_checkpoint").write_text(path.name)
    random.seed(0), np.random.seed(0), torch.manual_seed(0)  # anything else
    resumed = Trainer(_cfg(toy_dataset, tiny_clip, out), resume=True, progress=False)
    assert resumed.start_iter == 7
    _assert_rng_is(*rng)


def test_current_checkpoints_resume_the_rng_exactly(trainer, toy_dataset, tiny_clip, tmp_path):
    random.seed(21), np.random.seed(22), torch.manual_seed(23), np.random.randn()
    expected = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    save_checkpoint(trainer._state(7), tmp_path, "model_0000007.pt")
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    resumed = Trainer(_cfg(toy_dataset, tiny_clip, tmp_path), resume=True, progress=False)
    assert resumed.start_iter == 7
    _assert_rng_is(*expected)


def test_legacy_numpy_arrays_are_only_numbers(state, tmp_path):
    """An object array (its items unpickled as Python objects) is not read on the legacy path."""
    path = tmp_path / "objects.pt"
    torch.save({**state, "extra": np.array([1, "a", None], dtype=object)}, path)
    with pytest.raises(CheckpointError, match="convert_checkpoint") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_other_objects_get_the_conversion_hint_and_convert(state, tmp_path, capsys):
    """A trusted file with pickled objects beyond the legacy RNG state is refused with the
    command that converts it; the converted file loads and keeps what can be kept."""
    old, rng = _legacy(state, tmp_path / "old.pt", best_ap=np.float64(0.25),
                       args=argparse.Namespace(lr=0.1), output=pathlib.Path("out"))  # fmt: skip
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(old)
    message = str(info.value)
    assert "\n" not in message
    assert f"python -m ovdet.cli.convert_checkpoint {old} CONVERTED.pt" in message

    new = tmp_path / "new.pt"
    assert convert_cli.main([str(old), str(new)]) == 0
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(new)) == []
    converted = torch.load(new, map_location="cpu", weights_only=True)
    assert converted["best_ap"] == 0.25 and type(converted["best_ap"]) is float
    assert converted["output"] == "out"
    assert "args" not in converted  # no plain form: dropped, with a warning
    for key, value in state["model"].items():
        assert torch.equal(converted["model"][key], value), key
    restore_rng_state(load_checkpoint(new)["rng"])
    _assert_rng_is(*rng)

    # The output exists now: replacing it needs --force (one-line error otherwise).
    capsys.readouterr()
    assert convert_cli.main([str(old), str(new)]) == 2
    _one_line(capsys, "--force")


def test_converting_a_legacy_checkpoint_gives_the_current_format(state, tmp_path):
    old, _ = _legacy(state, tmp_path / "old.pt")
    new = tmp_path / "new.pt"
    shutil.copy(old, new)
    assert convert_cli.main([str(new), str(new), "--force"]) == 0  # in place
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(new)) == []
    converted = torch.load(new, map_location="cpu", weights_only=True)
    assert converted["rng"].keys() == state["rng"].keys()
    assert converted["rng"]["python"].keys() == state["rng"]["python"].keys()
    assert converted["rng"]["numpy"].keys() == state["rng"]["numpy"].keys()


def test_files_that_are_not_checkpoints_stay_one_line_errors(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="truncated or not a PyTorch checkpoint"):
        read_torch_file(text)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_torch_file(tmp_path / "missing.pt")
