"""Packaging for ovdet: open-vocabulary object detection on torchvision and detectron2."""

from pathlib import Path

from setuptools import find_packages, setup

README = Path(__file__).with_name("README.md")

setup(
    name="ovdet",
    version="0.1.0",
    description="Open-vocabulary object detection (ViLD / Detic style), torchvision and detectron2",
    long_description=README.read_text(encoding="utf-8") if README.exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(exclude=("tests", "tests.*", "benchmarks", "tools")),
    include_package_data=True,
    package_data={"ovdet": ["assets/*"]},
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
    ],
    extras_require={
        "dev": ["pytest>=7", "pytest-timeout", "hypothesis>=6", "ruff>=0.4"],
    },
    entry_points={
        "console_scripts": [
            "ovdet-infer=ovdet.cli.infer:main",
            "ovdet-train=ovdet.cli.train:main",
            "ovdet-evaluate=ovdet.cli.evaluate:main",
        ]
    },
)
