#!/usr/bin/env python
"""Train or evaluate an open-vocabulary detector with detectron2.

detectron2 must be installed by its official guide
(https://detectron2.readthedocs.io/en/latest/tutorials/install.html).

Examples::

    # OV-COCO with ViLD on 8 GPUs (datasets under $DETECTRON2_DATASETS, see ovdet/d2/datasets.py)
    python tools/train_net.py --config-file configs/d2/ovcoco_vild_R50_FPN.yaml --num-gpus 8

    # Evaluate a trained model (base / novel / all AP50 on ovcoco_2017_val)
    python tools/train_net.py --config-file configs/d2/ovcoco_vild_R50_FPN.yaml --eval-only \\
        MODEL.WEIGHTS output/model_final.pth

    # Any COCO-format data with a split file {"base": [...], "novel": [...]}
    python tools/train_net.py --config-file configs/d2/ovcoco_vild_R50_FPN.yaml \\
        --register-dataset my_train data/train.json data/train_images split.json train \\
        --register-dataset my_val data/val.json data/val_images split.json eval \\
        DATASETS.TRAIN "('my_train',)" DATASETS.TEST "('my_val',)"

Config overrides (``KEY VALUE`` pairs) come last, after every flag.
"""

from __future__ import annotations

import sys

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm

from ovdet.d2 import OpenVocabularyTrainer, load_d2_config, register_ov_coco_dataset
from ovdet.errors import ConfigError, OvdetError

_ROLES = {"train": True, "eval": False}


def register_datasets(specs: list[list[str]] | None) -> None:
    """Register ``--register-dataset NAME JSON IMAGE_ROOT SPLIT ROLE`` entries."""
    for name, json_file, image_root, split, role in specs or []:
        if role not in _ROLES:
            raise ConfigError(
                f"--register-dataset {name}: ROLE must be 'train' or 'eval', not {role!r}"
            )
        register_ov_coco_dataset(name, json_file, image_root, split, base_only=_ROLES[role])


def setup(args) -> CfgNode:
    """The config of the file and overrides, frozen; logging and the output folder set up."""
    cfg = load_d2_config(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
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


def build_parser():
    """detectron2's standard flags (config, resume, eval-only, multi-GPU/machine) plus ours."""
    parser = default_argument_parser(epilog=__doc__)
    parser.add_argument(
        "--register-dataset",
        nargs=5,
        action="append",
        metavar=("NAME", "JSON", "IMAGE_ROOT", "SPLIT", "ROLE"),
        help="register a COCO-format dataset before training (repeatable): its name, instances "
        "JSON, image folder, split ('ovcoco' or a JSON/YAML file with 'base' and 'novel' class "
        "names) and ROLE 'train' (base annotations only) or 'eval' (base and novel)",
    )
    return parser


if __name__ == "__main__":
    args = build_parser().parse_args()
    try:
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except OvdetError as e:
        sys.exit(f"error: {e}")
