"""Packaging for ovdet: open-vocabulary object detection on torchvision and detectron2."""

import os
import shutil
from pathlib import Path

from setuptools import find_namespace_packages, find_packages, setup

README = Path(__file__).with_name("README.md")


def link_configs() -> None:
    """Make the top-level ``configs/`` the package data folder ``ovdet/configs``.

    As detectron2's ``get_model_zoo_configs`` does: a symlink (a copy where links are not
    allowed), so the wheel ships the configs and ``ovdet.config.catalog`` finds them by name.
    """
    root = Path(__file__).resolve().parent
    source, destination = root / "configs", root / "ovdet" / "configs"
    if not source.is_dir():  # building from an sdist whose ovdet/configs is already a copy
        return
    if destination.is_symlink() or destination.is_file():
        destination.unlink()
    elif destination.is_dir():
        shutil.rmtree(destination)
    try:
        os.symlink(os.path.relpath(source, destination.parent), destination, True)
    except OSError:
        shutil.copytree(source, destination)


link_configs()

setup(
    name="ovdet",
    version="0.1.0",
    description="Open-vocabulary object detection (ViLD / Detic style), torchvision and detectron2",
    long_description=README.read_text(encoding="utf-8") if README.exists() else "",
    long_description_content_type="text/markdown",
    license_expression="Apache-2.0",
    license_files=["LICENSE"],
    python_requires=">=3.9",
    # The shipped configs (found by name from any folder, ovdet.config.catalog) are data folders
    # without __init__.py; listed as packages, their files ship and setuptools does not warn.
    packages=find_packages(include=("ovdet", "ovdet.*"))
    + find_namespace_packages(include=("ovdet.configs", "ovdet.configs.*")),
    include_package_data=True,
    package_data={"ovdet.configs": ["*.yaml", "**/*.yaml", "clip/*/*.json"]},
    install_requires=[
        # torchvision's registry wheels are built against the CUDA build of torch; they run on
        # CPU-only machines too. Let torchvision pin the torch it was built with.
        "torch>=2.1",
        "torchvision>=0.16",
        "open_clip_torch[training]>=2.24",
        "pycocotools>=2.0.7",
        "lvis>=0.5.3",
        "albumentations>=1.4",
        "opencv-python-headless>=4.8",
        "Pillow>=10.0",
        "numpy",
        "tqdm",
        "PyYAML",
        "yacs>=0.1.8",
        "tensorboard",
        "av>=12",  # PyAV: video input of tools/infer.py and tools/search.py
    ],
    extras_require={
        "dev": [
            "pytest>=7",
            "pytest-timeout",
            "pytest-xdist>=3",
            "hypothesis>=6",
            "ruff>=0.4",
            # the layer contracts of pyproject.toml, checked by `make test` (lint-imports)
            "import-linter>=2.1",
            # packaging: python -m build, twine check; the wheel test builds with setuptools
            "build>=1.0",
            "twine>=6.1",
            "setuptools>=77",
            # the web demo and its browser test (Debian's chromium + chromium-driver)
            "gradio>=5",
            "selenium>=4.10",
            # the tests of the deploy and search extras
            "onnx>=1.16",
            "onnxruntime>=1.18",
            "tokenizers>=0.15",
            "faiss-cpu>=1.8",
            # OWL-ViT / OWLv2 (--detector hf:...) and the transformers CLIP backend
            "transformers>=4.40",
            # real photos of the tests (astronaut, coffee, chelsea, rocket)
            "scikit-image>=0.22",
        ],
        # the web demo (tools/demo.py)
        "demo": ["gradio>=5"],
        # ONNX export (tools/export_onnx.py) and its onnxruntime detector (which, with its
        # tokenizer, needs no torch: docs/deployment.md#onnx-export)
        "deploy": ["onnx>=1.16", "onnxruntime>=1.18", "tokenizers>=0.15", "ftfy"],
        # OWL-ViT / OWLv2 from the Hugging Face hub (--detector hf:ID), transformers CLIPs (hf:)
        "hf": ["transformers>=4.40"],
        # text search over regions (tools/search.py)
        "search": ["faiss-cpu>=1.8"],
    },
    entry_points={
        "console_scripts": [
            "ovdet-infer=ovdet.cli.infer:main",
            "ovdet-train=ovdet.cli.train:main",
            "ovdet-evaluate=ovdet.cli.evaluate:main",
            "ovdet-make-synthetic=ovdet.cli.make_synthetic:main",
            "ovdet-pretrain-clip=ovdet.cli.pretrain_clip:main",
            "ovdet-benchmark-synthetic=ovdet.cli.benchmark_synthetic:main",
            "ovdet-precompute-clip-embeddings=ovdet.cli.precompute_clip_embeddings:main",
            "ovdet-convert-checkpoint=ovdet.cli.convert_checkpoint:main",
            "ovdet-export-onnx=ovdet.cli.export_onnx:main",
            "ovdet-search=ovdet.cli.search:main",
            "ovdet-demo=ovdet.cli.demo:main",
            # detectron2 training (ovdet.d2); --help works without detectron2
            "ovdet-train-net=ovdet.cli.train_net:main",
        ]
    },
)
