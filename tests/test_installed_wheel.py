"""ovdet as users install it: a wheel in a fresh virtualenv, used from outside the repository.

Builds the wheel, installs it (not editable) into a new virtualenv whose dependencies come from
this environment, then, from a folder outside the checkout: imports the package, runs ``--help``
of every console script, makes a tiny synthetic dataset, trains the shipped ``tiny`` config for
a few iterations and runs inference, all with the installed console scripts and shipped configs.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
# What the wheel is built from: the package and its packaging files (not outputs, venvs, .git).
_SOURCES = ("setup.py", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "ovdet")
_TIMEOUT = 300  # seconds per command: a hung command fails the test instead of blocking it


def _env(**extra: str) -> dict[str, str]:
    """This environment without anything pointing into the checkout, on one thread."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONNOUSERSITE="1",
    )
    env.update(extra)
    return env


def _run(command: list, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(c) for c in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=_TIMEOUT,
    )
    assert result.returncode == 0, (
        f"{' '.join(map(str, command))} exited with {result.returncode}\n"
        f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
    )
    return result


def _build_wheel(tmp: Path, env: dict[str, str]) -> Path:
    """The wheel of a copy of the sources (the checkout gets no build/ or egg-info)."""
    src = tmp / "src"
    src.mkdir()
    for name in _SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    wheelhouse = tmp / "wheelhouse"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", wheelhouse, src],
        cwd=tmp, env=env,
    )  # fmt: skip
    [wheel] = wheelhouse.glob("ovdet-*.whl")
    return wheel


def _make_venv(root: Path) -> Path:
    """A virtualenv whose packages (torch, ...) come from this environment; returns its bin/.

    ``system_site_packages`` covers an interpreter installed with the packages; when this
    environment is itself a virtualenv (``make test`` runs in ``.venv``), a ``.pth`` file adds
    its site-packages too, after the new environment's own.
    """
    venv.EnvBuilder(system_site_packages=True, with_pip=False, symlinks=os.name != "nt").create(
        root
    )
    bin_dir = root / ("Scripts" if os.name == "nt" else "bin")
    if sys.prefix != sys.base_prefix:
        outer = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
        site_packages = _run(
            [bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            cwd=root, env=_env(),
        ).stdout.strip()  # fmt: skip
        lines = [f"import site; site.addsitedir({path!r})" for path in outer]
        (Path(site_packages) / "_outer_environment.pth").write_text("\n".join(lines) + "\n")
    return bin_dir


def _console_scripts(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        [name] = [n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt")]
        parser = configparser.ConfigParser()
        parser.read_string(zf.read(name).decode())
    return sorted(parser["console_scripts"])


def test_installed_wheel_works_outside_the_checkout(tmp_path):
    from importlib.metadata import PackageNotFoundError, version

    try:  # the wheel is built offline with this environment's setuptools (the dev extra's)
        setuptools_major = int(version("setuptools").split(".")[0])
    except PackageNotFoundError:
        setuptools_major = 0
    assert setuptools_major >= 77, "needs setuptools>=77: pip install -e '.[dev]'"
    env = _env(OVDET_CACHE_DIR=str(tmp_path / "cache"))
    wheel = _build_wheel(tmp_path, env)

    # Every tool in tools/ has a console script of the same name, e.g. ovdet-make-synthetic.
    scripts = _console_scripts(wheel)
    tools = sorted(f"ovdet-{p.stem.replace('_', '-')}" for p in (REPO / "tools").glob("*.py"))
    assert scripts == tools
    # The shipped configs are in the wheel.
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    assert {"ovdet/configs/tiny.yaml", "ovdet/configs/clip/tiny/open_clip_config.json"} <= names

    bin_dir = _make_venv(tmp_path / "venv")
    python = bin_dir / "python"
    _run(
        [python, "-m", "pip", "install", "--no-deps", "--no-index", "--force-reinstall", wheel],
        cwd=tmp_path, env=env,
    )  # fmt: skip

    # From a folder outside the checkout, the installed copy is imported, not the checkout.
    work = tmp_path / "work"
    work.mkdir()
    probe = (
        "import json, ovdet, ovdet.core, ovdet.tv, ovdet.tv.engine, ovdet.cli\n"
        "from ovdet import OVDetector\n"
        "from ovdet.config import list_configs\n"
        "from ovdet.clip.pretrain import TINY_CLIP_DIR\n"
        "print(json.dumps({'file': ovdet.__file__, 'configs': list_configs(),"
        " 'clip': str(TINY_CLIP_DIR)}))\n"
    )
    info = json.loads(_run([python, "-c", probe], cwd=work, env=env).stdout.splitlines()[-1])
    venv_root = (tmp_path / "venv").resolve()
    assert Path(info["file"]).resolve().is_relative_to(venv_root), info["file"]
    assert Path(info["clip"]).resolve().is_relative_to(venv_root), info["clip"]
    assert {"tiny.yaml", "synthetic_benchmark.yaml", "d2/instant_test.yaml"} <= set(info["configs"])

    # --help of every console script, in parallel (each is a fresh interpreter).
    def help_of(script: str) -> tuple[str, subprocess.CompletedProcess]:
        return script, _run([bin_dir / script, "--help"], cwd=work, env=env)

    with ThreadPoolExecutor(max_workers=4) as pool:
        for script, result in pool.map(help_of, scripts):
            assert result.stdout.startswith("usage:"), (script, result.stdout[:300])
            assert script in result.stdout.splitlines()[0], (script, result.stdout[:300])

    # A tiny synthetic dataset, a few training iterations of the shipped tiny config, inference.
    data = work / "synthetic"
    _run(
        [bin_dir / "ovdet-make-synthetic", "--output", data, "--preset", "small",
         "--num-train-images", "4", "--num-val-images", "2", "--num-caption-crops", "0",
         "--num-val-caption-crops", "0", "--no-progress"],
        cwd=work, env=env,
    )  # fmt: skip
    _run(
        [bin_dir / "ovdet-train", "--config", "tiny", "--no-progress",
         "SOLVER.MAX_ITER", "4", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "1",
         "DATASETS.TRAIN_JSON", data / "annotations" / "instances_train.json",
         "DATASETS.TRAIN_IMAGES", data / "images" / "train",
         "DATASETS.TEST_JSON", data / "annotations" / "instances_val.json",
         "DATASETS.TEST_IMAGES", data / "images" / "val",
         "DATASETS.SPLIT", data / "split.json",
         "MODEL.OVDET.CLIP", "local-dir:clip/tiny",
         "OUTPUT_DIR", work / "model"],
        cwd=work, env=env,
    )  # fmt: skip
    checkpoint = work / "model" / "model_final.pt"
    assert checkpoint.is_file()

    [image, *_] = sorted((data / "images" / "val").iterdir())
    _run(
        [bin_dir / "ovdet-infer", "--checkpoint", checkpoint, "--classes",
         "red circle,blue square", "--input", image, "--output", work / "infer",
         "--score-thresh", "0", "--no-progress"],
        cwd=work, env=env,
    )  # fmt: skip
    results = json.loads((work / "infer" / "results.json").read_text())
    assert [c["name"] for c in results["categories"]] == ["red circle", "blue square"]
    assert results["failed"] == []
    assert all(d["file_name"] == str(image) for d in results["detections"])
    assert (work / "infer" / f"{image.stem}_det.jpg").is_file()
