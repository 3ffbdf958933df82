"""The training loop of the torchvision engine.

Features: CPU or CUDA, mixed precision on CUDA, torchrun DDP without code changes, gradient
accumulation, warm-up + schedule, atomic checkpoints, exact resume (optimizer, scheduler, RNG and
data order), SIGINT -> checkpoint then exit, JSON-lines and TensorBoard metrics
(:mod:`ovdet.tv.engine.metrics`), periodic open-vocabulary evaluation. With image-labelled data
(``DATASETS.WEAK_TRAIN``), box batches and image-labelled batches alternate at
``DATALOADER.DATASET_RATIO`` (weak supervision, Detic: the set-up is the core's,
:mod:`ovdet.core.weak_setup`), each kind with its own batch size, image size and resumable
sampler (:mod:`ovdet.tv.engine.data_loading`).
"""

from __future__ import annotations

import logging
import math
import random
import signal
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ovdet.core.head import get_head
from ovdet.core.novel_classes import novel_class_mask
from ovdet.core.weak_setup import BatchVocabularySwitch, WeakData, build_weak_training
from ovdet.data.coco import load_coco_detection
from ovdet.tv.engine import distributed as comm
from ovdet.tv.engine.build import (
    build_clip_teacher,
    build_lr_lambda,
    build_model,
    build_optimizer,
    build_text_classifier,
    clip_gradients,
)
from ovdet.tv.engine.checkpoint import (
    capture_rng_state,
    find_last_checkpoint,
    load_checkpoint,
    load_model_weights,
    restore_rng_state,
    save_checkpoint,
)
from ovdet.tv.engine.config_paths import with_absolute_paths
from ovdet.tv.engine.data_loading import (
    TrainLoaders,
    box_image_classes,
    load_box_records,
    load_weak_data_for,
    to_device,
)
from ovdet.tv.engine.metrics import MetricsWriter, truncate_metrics
from ovdet.tv.modeling.build import is_open_vocabulary
from ovdet.tv.modeling.sync_batchnorm import GlobalBatchNorm2d
from ovdet.utils.errors import ConfigError
from ovdet.utils.io import atomic_open, check_writable_dir
from ovdet.utils.progress import progress_line

__all__ = ["Trainer", "TrainingInterrupted"]

logger = logging.getLogger(__name__)


class TrainingInterrupted(Exception):
    """Raised after SIGINT, once the checkpoint of the current step is written."""


class Trainer:
    """Trains a detector from a frozen config.

    Args:
        cfg: the merged config.
        resume: continue from ``OUTPUT_DIR/last_checkpoint`` if it exists.
        progress: show a progress bar (main process only).
    """

    def __init__(self, cfg, resume: bool = False, progress: bool = True) -> None:
        # the paths its config.yaml and checkpoints name work from any folder
        self.cfg = cfg = with_absolute_paths(cfg)
        device = torch.device(cfg.MODEL.DEVICE)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError("MODEL.DEVICE is cuda but no CUDA device is available")
        comm.init_distributed(device.type, cfg.DIST_TIMEOUT)
        self.rank, self.world_size = comm.get_rank(), comm.get_world_size()
        self.device = device = comm.local_device(device)
        self.output_dir = Path(cfg.OUTPUT_DIR)
        if self.is_main:
            check_writable_dir(self.output_dir, min_free_bytes=64 << 20)
        self.progress = progress and self.is_main
        self._seed_everything(cfg.SEED + self.rank)

        self.closed_set = not is_open_vocabulary(cfg)
        self.records = load_box_records(cfg)
        self.class_names = self.records.class_names
        self.model = build_model(cfg, num_classes=len(self.class_names)).to(device)
        self.clip = None
        weak_data = None
        if cfg.DATASETS.WEAK_TRAIN:
            if self.closed_set:
                raise ConfigError("DATASETS.WEAK_TRAIN needs an open-vocabulary detector")
            weak_data = load_weak_data_for(cfg, self.records)  # data errors before CLIP loads
        self.weak = None  # the weak-supervision set-up (ovdet.core.weak_setup)
        if not self.closed_set:
            self._set_up_open_vocabulary(weak_data)
        self.optimizer = build_optimizer(cfg, self.model)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, build_lr_lambda(cfg))
        self.amp = device.type == "cuda" and cfg.SOLVER.AMP.ENABLED
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.start_iter = 0
        if cfg.MODEL.WEIGHTS:
            state = load_checkpoint(cfg.MODEL.WEIGHTS)
            load_model_weights(self.model, state["model"], cfg.MODEL.WEIGHTS, strict=False)
        if resume:
            self._resume()
        self._interrupted = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ----------------------------------------------------------------- set-up
    def _set_up_open_vocabulary(self, weak_data: WeakData | None) -> None:
        cfg, ov = self.cfg, self.cfg.MODEL.OVDET
        need_clip = ov.DISTILL.MODE == "online"
        if need_clip:
            from ovdet.clip import load_clip

            self.clip = load_clip(ov.CLIP, self.device)
            get_head(self.model).set_clip_teacher(build_clip_teacher(cfg, self.clip))
        names = self.class_names
        if ov.VOCABULARY:
            from ovdet.clip.text_classifier import Vocabulary

            vocab = Vocabulary.parse(ov.VOCABULARY)
            if set(vocab.names) != set(names):
                raise ConfigError(
                    "MODEL.OVDET.VOCABULARY must name the training classes "
                    f"({len(names)} classes); differs from the dataset's base classes"
                )
        # One builder for the whole run: it keeps the CLIP it loads and the weights digest of
        # the cache key (hashing a weights file or a loaded model), which a new builder per
        # evaluation would compute again.
        self.text_builder = build_text_classifier(cfg, self.device, self.clip)
        self.train_text = self.text_builder(names).to(self.device)
        get_head(self.model).set_vocabulary(self.train_text)
        if weak_data is not None:
            self.weak = build_weak_training(
                cfg,
                weak_data,
                self.train_text,
                embed=lambda names: self.text_builder(names).to(self.device),
                box_image_classes=lambda: box_image_classes(self.records),
                load_clip=self._loaded_clip,
            )

    def _loaded_clip(self):
        """The run's CLIP (loaded by online distillation, else now)."""
        if self.clip is None:
            from ovdet.clip import load_clip

            self.clip = load_clip(self.cfg.MODEL.OVDET.CLIP, self.device)
        return self.clip

    def _seed_everything(self, seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    # -------------------------------------------------------------- checkpoint
    def _state(self, iteration: int) -> dict:
        model = self._bare_model()
        return {
            "model": model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "iteration": iteration,
            # As tensors and plain types, like everything here: the file loads with
            # weights_only=True (ovdet.tv.engine.checkpoint); the data order follows from the
            # iteration (ResumableTrainingSampler).
            "rng": capture_rng_state(),
            "config": self.cfg.dump(),
            "class_names": list(self.class_names),
            "embed_dim": 0 if self.closed_set else get_head(model).embed_dim,
        }

    def _bare_model(self):
        return self.model.module if isinstance(self.model, DistributedDataParallel) else self.model

    def save(self, iteration: int, name: str | None = None) -> None:
        if self.is_main:
            save_checkpoint(
                self._state(iteration), self.output_dir, name or f"model_{iteration:07d}.pt"
            )

    def _resume(self) -> None:
        path = find_last_checkpoint(self.output_dir)
        if path is None:
            logger.info("No checkpoint in %s; starting from scratch", self.output_dir)
            return
        state = load_checkpoint(path)
        load_model_weights(self.model, state["model"], str(path))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"], f"checkpoint {path}")
        self.start_iter = int(state["iteration"])
        self._truncate_metrics(self.start_iter)
        logger.info("Resumed from %s at iteration %d", path, self.start_iter)

    def _truncate_metrics(self, iteration: int) -> None:
        """Drop metric lines logged after the checkpoint (they will be logged again)."""
        if self.is_main:
            truncate_metrics(self.output_dir, iteration)

    # ------------------------------------------------------------------- loop
    def _on_sigint(self, signum, frame) -> None:
        if self._interrupted:
            raise KeyboardInterrupt
        self._interrupted = True
        logger.warning("SIGINT: finishing this step, saving a checkpoint, then stopping")

    def train(self) -> dict:
        """Run until ``SOLVER.MAX_ITER``. Returns the last logged metrics."""
        cfg = self.cfg
        if self.is_main:
            with atomic_open(self.output_dir / "config.yaml", "w") as f:
                f.write(cfg.dump())
        max_iter, accum = cfg.SOLVER.MAX_ITER, cfg.SOLVER.ACCUMULATE_STEPS
        if self.start_iter >= max_iter:
            logger.info("Already trained to %d iterations", max_iter)
            return {}
        model = self.model
        if self.world_size > 1:
            if any(
                isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                and not isinstance(m, GlobalBatchNorm2d)
                for m in model.modules()
            ):
                logger.warning(
                    "BatchNorm under %d processes normalises with each process's own batch "
                    "statistics; MODEL.RESNETS.NORM SyncBN (the global batch's) or FrozenBN (the "
                    "default) train as one process does",
                    self.world_size,
                )
            model = DistributedDataParallel(
                model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                # Image-labelled batches train neither the RPN nor the box regressor.
                find_unused_parameters=self.weak is not None,
            )
        model.train()
        writer = MetricsWriter(self.output_dir, self.start_iter, enabled=self.is_main)
        data = TrainLoaders(
            cfg, self.records, self.weak, self.rank, self.world_size, self.device,
            distill_offline=not self.closed_set and cfg.MODEL.OVDET.DISTILL.MODE == "offline",
        )  # fmt: skip
        loaders = data.iterators(self.start_iter)
        switch: BatchVocabularySwitch | None = None  # each batch kind's classifier (weak data)
        if self.weak is not None:
            switch = self.weak.vocabulary_switch(get_head(self.model))
        previous = signal.signal(signal.SIGINT, self._on_sigint) if self.is_main else None
        bar = tqdm(total=max_iter, initial=self.start_iter, disable=not self.progress, desc="train")
        metrics: dict = {}
        train_start = time.perf_counter()
        try:
            for iteration in range(self.start_iter + 1, max_iter + 1):
                start = time.perf_counter()
                loss_sums: dict[str, float] = {}
                for kind in data.batch_kinds((iteration - 1) * accum, accum):
                    images, targets = next(loaders[kind])
                    images = [im.to(self.device, non_blocking=True) for im in images]
                    targets = [to_device(t, self.device) for t in targets]
                    if self.weak is not None:
                        self.weak.prepare_batch(kind, targets, switch, self.device)
                    with torch.autocast("cuda", enabled=self.amp):
                        losses = model(images, targets)
                    total = sum(losses.values())
                    self.scaler.scale(total / accum).backward()
                    # One device-to-host copy per step for the check and the logged values, once
                    # the backward pass is queued (not one synchronisation per loss term).
                    # Averaged over the processes: every process logs and checks the global
                    # batch's losses (and all stop together on a non-finite loss).
                    values = comm.all_reduce_mean(
                        torch.stack(
                            [total.detach().float(), *(v.detach().float() for v in losses.values())]
                        )
                    ).tolist()
                    if not math.isfinite(values[0]):
                        raise FloatingPointError(
                            f"loss became {values[0]} at iteration {iteration}: {losses}"
                        )
                    for k, v in zip(losses, values[1:]):
                        loss_sums[k] = loss_sums.get(k, 0.0) + v / accum
                if cfg.SOLVER.CLIP_GRADIENTS.ENABLED:
                    self.scaler.unscale_(self.optimizer)
                    clip_gradients(cfg, model.parameters())
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                self.scheduler.step()
                step_time = time.perf_counter() - start
                bar.update(1)
                if iteration % cfg.LOG_PERIOD == 0 or iteration in (1, max_iter):
                    metrics = {
                        "iteration": iteration,
                        "total_loss": sum(loss_sums.values()),
                        **loss_sums,
                        "lr": self.optimizer.param_groups[0]["lr"],
                        "time": step_time,
                    }
                    writer.log(metrics)
                    bar.set_postfix(loss=f"{metrics['total_loss']:.3f}")
                    if self.is_main:  # the bar's information, as a log line when it is off
                        logger.log(
                            logging.DEBUG if self.progress else logging.INFO,
                            progress_line(
                                metrics, max_iter, time.perf_counter() - train_start,
                                iteration - self.start_iter,
                            ),
                        )  # fmt: skip
                last = iteration == max_iter
                if iteration % cfg.SOLVER.CHECKPOINT_PERIOD == 0 or last or self._interrupted:
                    self.save(iteration, "model_final.pt" if last else None)
                if cfg.TEST.EVAL_PERIOD and (iteration % cfg.TEST.EVAL_PERIOD == 0 or last):
                    writer.log({"iteration": iteration, **self.evaluate()})
                    if switch is not None:  # evaluate() restored the box classes
                        switch.reset()
                    model.train()
                if self._interrupted:
                    raise TrainingInterrupted(
                        f"stopped by SIGINT at iteration {iteration}; resume with --resume"
                    )
        except RuntimeError as e:  # a peer died or timed out: say so, not a gloo/NCCL trace
            failure = comm.collective_failure(e)
            if failure is None:
                raise
            raise failure from e
        finally:
            bar.close()
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            writer.close()
        comm.barrier()  # no process leaves while another still writes or evaluates
        return metrics

    # -------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self) -> dict:
        """base / novel / all AP on ``DATASETS.TEST_JSON``.

        Under torchrun every process runs its share of the images; the main process returns the
        metrics, the others ``{}``.
        """
        from ovdet.evaluation import evaluate_coco
        from ovdet.tv.engine.inference import inference_on_records

        cfg = self.cfg
        if not cfg.DATASETS.TEST_JSON:
            return {}
        keep = ("base",) if self.closed_set else ("base", "novel")
        records = load_coco_detection(
            cfg.DATASETS.TEST_JSON,
            cfg.DATASETS.TEST_IMAGES,
            split=cfg.DATASETS.SPLIT or None,
            keep=keep,
            filter_empty=False,
        )
        model = self._bare_model()
        if not self.closed_set:
            text = self.text_builder(records.class_names)
            is_novel = novel_class_mask(records.class_names, self.class_names)
            get_head(model).set_vocabulary(text.to(self.device), is_novel)
        results = inference_on_records(
            model, records, cfg, self.device, closed_set=self.closed_set, progress=self.progress
        )
        if not self.closed_set:  # back to the training vocabulary (kept in memory)
            get_head(model).set_vocabulary(self.train_text)
        if not self.is_main:
            return {}
        metrics = {"": evaluate_coco(cfg.DATASETS.TEST_JSON, results, records.split)}
        if results and all("segmentation" in r for r in results):  # a mask model: mask AP too
            metrics["segm/"] = evaluate_coco(
                cfg.DATASETS.TEST_JSON, results, records.split, iou_type="segm"
            )
        flat = {}
        for prefix, values in metrics.items():
            for group in ("all", "base", "novel"):
                for k in ("AP", "AP50"):
                    value = values[group][k]
                    flat[f"{prefix}{group}/{k}"] = value if value is not None else float("nan")
        logger.info("Evaluation: %s", {k: round(v, 4) for k, v in flat.items()})
        return flat
