"""detectron2's ``DefaultTrainer`` for the open-vocabulary detector."""

from __future__ import annotations

import os
import weakref
from collections import OrderedDict

from detectron2.config import CfgNode
from detectron2.data import build_detection_train_loader
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import DatasetEvaluator
from torch import nn

from ovdet.d2.checkpoint import OpenVocabularyCheckpointer
from ovdet.d2.dataset_mapper import OfflineDistillationMapper
from ovdet.d2.datasets import get_dataset_split
from ovdet.d2.evaluator import OpenVocabularyEvaluator
from ovdet.d2.model_vocabulary import use_dataset_vocabulary
from ovdet.data.distill_store import load_distill_store

__all__ = ["OpenVocabularyTrainer"]


class OpenVocabularyTrainer(DefaultTrainer):
    """``DefaultTrainer`` that evaluates each test dataset with that dataset's own vocabulary.

    Training uses the training vocabulary built into the model; for each dataset of
    ``DATASETS.TEST`` (periodic evaluation and ``--eval-only``), the model is given the
    dataset's classes (base and novel: the generalized setting) and scored by
    :class:`~ovdet.d2.evaluator.OpenVocabularyEvaluator`; the training vocabulary is restored
    afterwards. With ``MODEL.OVDET.DISTILL.MODE "offline"``, training samples carry the
    precomputed regions of ``MODEL.OVDET.DISTILL.EMBEDDINGS_FILE``. With ``DATASETS.WEAK_TRAIN``,
    image-labelled batches alternate with box batches (:mod:`ovdet.d2.weak`). PyTorch weight
    files are read by :class:`~ovdet.d2.checkpoint.OpenVocabularyCheckpointer` (no code runs from
    them).
    """

    def __init__(self, cfg: CfgNode) -> None:
        super().__init__(cfg)
        # Read weights (MODEL.WEIGHTS, --resume) without running code from the file; the
        # periodic-checkpoint hook saves through the same checkpointer.
        safe = OpenVocabularyCheckpointer(
            self._trainer.model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        for hook in self._hooks:
            if getattr(hook, "checkpointer", None) is self.checkpointer:
                hook.checkpointer = safe
        self.checkpointer = safe
        if cfg.DATASETS.WEAK_TRAIN:
            from ovdet.d2.weak import build_mixed_train_loader

            box_loader = self._trainer.data_loader
            self._trainer.reset_data_loader(
                lambda: build_mixed_train_loader(cfg, self._trainer.model, box_loader)
            )

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        if cfg.MODEL.OVDET.DISTILL.MODE != "offline":
            return super().build_train_loader(cfg)
        store = load_distill_store(cfg.MODEL.OVDET.DISTILL.EMBEDDINGS_FILE)
        mapper = OfflineDistillationMapper(cfg, True, store=store)
        return build_detection_train_loader(cfg, mapper=mapper)

    @classmethod
    def build_evaluator(
        cls, cfg: CfgNode, dataset_name: str, output_folder: str | None = None
    ) -> DatasetEvaluator:
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        split = get_dataset_split(dataset_name, cfg.DATASETS.SPLIT)
        return OpenVocabularyEvaluator(dataset_name, output_folder, split=split)

    @classmethod
    def test(
        cls,
        cfg: CfgNode,
        model: nn.Module,
        evaluators: list[DatasetEvaluator] | DatasetEvaluator | None = None,
    ) -> dict:
        """Evaluate on every ``DATASETS.TEST`` dataset, each with its own vocabulary.

        Returns:
            As ``DefaultTrainer.test``: ``{dataset: {"bbox": {...}}}``, or the single dataset's
            results when there is one.
        """
        if isinstance(evaluators, DatasetEvaluator):
            evaluators = [evaluators]
        if evaluators is not None and len(evaluators) != len(cfg.DATASETS.TEST):
            raise ValueError(
                f"{len(evaluators)} evaluators for {len(cfg.DATASETS.TEST)} test datasets"
            )
        results = OrderedDict()
        for idx, dataset_name in enumerate(cfg.DATASETS.TEST):
            single = cfg.clone()
            single.defrost()
            single.DATASETS.TEST = (dataset_name,)
            single.freeze()
            with use_dataset_vocabulary(model, cfg, dataset_name):
                results[dataset_name] = super().test(
                    single, model, None if evaluators is None else [evaluators[idx]]
                )
        if len(results) == 1:
            return next(iter(results.values()))
        return results
