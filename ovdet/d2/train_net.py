"""detectron2's launcher entry of ``ovdet-train-net``: set up, then train or evaluate.

The command line itself (:mod:`ovdet.cli.train_net`) only parses flags, so that ``--help`` works
without detectron2; it hands the parsed arguments to :func:`run` through
``detectron2.engine.launch`` (one call per process).
"""

from __future__ import annotations

import argparse

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ovdet.config.catalog import resolve_config_path
from ovdet.d2.config import load_d2_config
from ovdet.d2.datasets import register_ov_coco_dataset
from ovdet.d2.trainer import OpenVocabularyTrainer
from ovdet.utils.errors import ConfigError

__all__ = ["launch_run", "register_datasets", "run", "setup"]

_ROLES = {"train": True, "eval": False}


def register_datasets(specs: list[list[str]] | None) -> None:
    """Register ``--register-dataset NAME JSON IMAGE_ROOT SPLIT ROLE`` entries."""
    for name, json_file, image_root, split, role in specs or []:
        if role not in _ROLES:
            raise ConfigError(
                f"--register-dataset {name}: ROLE must be 'train' or 'eval', not {role!r}"
            )
        register_ov_coco_dataset(name, json_file, image_root, split, base_only=_ROLES[role])


def setup(args: argparse.Namespace):
    """The config of the file and overrides, frozen; logging and the output folder set up."""

    if args.config_file:  # a file, or the name of a shipped config
        args.config_file = str(resolve_config_path(args.config_file))
    cfg = load_d2_config(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    # detectron2 sets up its own loggers only; ovdet's lines go to the same console and log.txt.
    setup_logger(
        cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="ovdet", abbrev_name="ovdet"
    )
    return cfg


def run(args: argparse.Namespace):
    """Train, or evaluate with ``--eval-only``, in one process of detectron2's launcher."""

    register_datasets(args.register_dataset)
    cfg = setup(args)
    if args.eval_only:
        model = OpenVocabularyTrainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        results = OpenVocabularyTrainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        return results
    trainer = OpenVocabularyTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def launch_run(args: argparse.Namespace) -> None:
    """:func:`run` in ``args.num_gpus`` processes per machine (detectron2's ``launch``)."""
    launch(
        run,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
