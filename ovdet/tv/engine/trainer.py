"""The training loop of the torchvision engine.

Features: CPU or CUDA, mixed precision on CUDA, torchrun DDP without code changes, gradient
accumulation, warm-up + schedule, atomic checkpoints, exact resume (optimizer, scheduler, RNG and
data order), SIGINT -> checkpoint then exit, JSON-lines and TensorBoard metrics, periodic
open-vocabulary evaluation. With image-labelled data (``DATASETS.WEAK_TRAIN``), box batches and
image-labelled batches alternate at ``DATALOADER.DATASET_RATIO`` (weak supervision, Detic), each
kind with its own batch size, image size and resumable sampler.
"""

from __future__ import annotations

import json
import logging
import math
import random
import signal
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from ovdet.core.head import get_head
from ovdet.core.novel_classes import novel_class_mask
from ovdet.core.weak_supervision import TrainingVocabulary
from ovdet.data.coco import load_coco_detection
from ovdet.data.dataset import (
    DetectionDataset,
    ImageLabelDataset,
    ResumableTrainingSampler,
    collate,
    mixed_batch_kinds,
)
from ovdet.data.distill_store import load_distill_store
from ovdet.data.image_labels import weak_class_counts
from ovdet.data.transforms import build_augmentation
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
from ovdet.tv.modeling.build import is_open_vocabulary
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
        self.records = load_coco_detection(
            cfg.DATASETS.TRAIN_JSON,
            cfg.DATASETS.TRAIN_IMAGES,
            split=cfg.DATASETS.SPLIT or None,
            keep=("base",),
            filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
        )
        self.class_names = self.records.class_names
        self.model = build_model(cfg, num_classes=len(self.class_names)).to(device)
        self.clip = None
        self.weak_records = None
        if cfg.DATASETS.WEAK_TRAIN:
            if self.closed_set:
                raise ConfigError("DATASETS.WEAK_TRAIN needs an open-vocabulary detector")
            self._load_weak_data()
        if not self.closed_set:
            self._set_up_open_vocabulary()
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
    def _set_up_open_vocabulary(self) -> None:
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
        if self.weak_records is not None:
            self._set_up_weak_vocabulary()

    # ------------------------------------------------------ weak supervision
    def _load_weak_data(self) -> None:
        """Image-labelled data, and the vocabulary of its batches (box classes first)."""
        from ovdet.clip.text_classifier import Vocabulary
        from ovdet.data.image_labels import load_image_labels, weak_training_vocabulary

        d = self.cfg.DATASETS
        if d.WEAK_VOCABULARY:
            tags = Vocabulary.parse(d.WEAK_VOCABULARY)
        else:  # the box data's base and novel classes
            split = self.records.split
            tags = Vocabulary.from_names(split.all if split is not None else self.class_names)
        self.weak_records = load_image_labels(
            d.WEAK_TRAIN, d.WEAK_TRAIN_IMAGES, tags, d.WEAK_CSV_IMAGE_KEY,
            d.WEAK_CSV_CAPTION_KEY, d.WEAK_CSV_SEPARATOR,
        )  # fmt: skip
        self.weak_class_names, self.weak_class_index = weak_training_vocabulary(
            self.class_names, self.weak_records.class_names
        )
        ws = self.cfg.MODEL.OVDET.WEAK
        if ws.CAPTION_LOSS and not self.weak_records.has_captions:
            raise ConfigError(
                f"MODEL.OVDET.WEAK.CAPTION_LOSS needs captions; {d.WEAK_TRAIN} has images without"
            )
        try:
            mixed_batch_kinds(self.cfg.DATALOADER.DATASET_RATIO, 0, 1)
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def _set_up_weak_vocabulary(self) -> None:
        """Text embeddings, novelty and (federated loss) class image counts of the vocabulary of
        image-labelled batches."""
        names = self.weak_class_names
        counts = weak_class_counts(
            len(names),
            self.weak_class_index,
            self.weak_records,
            (rec.labels - 1 for rec in self.records.images),
        )
        self.weak_vocabulary = TrainingVocabulary(
            self.text_builder(names).to(self.device),
            novel_class_mask(names, self.class_names),
            torch.as_tensor(counts, dtype=torch.float32),
        )
        if self.cfg.MODEL.OVDET.WEAK.CAPTION_LOSS and self.clip is None:
            from ovdet.clip import load_clip

            self.clip = load_clip(self.cfg.MODEL.OVDET.CLIP, self.device)
        logger.info(
            "Weak supervision: %d image-labelled images, vocabulary of %d classes (%d beyond the "
            "box classes), batches box:image-labelled = %s",
            len(self.weak_records.images), len(names), int(self.weak_vocabulary.is_novel.sum()),
            list(self.cfg.DATALOADER.DATASET_RATIO),
        )  # fmt: skip

    def _use_vocabulary(self, kind: int) -> None:
        """The classifier of a batch of ``kind`` (0 box, 1 image-labelled; the head's rule,
        :meth:`~ovdet.core.head.OpenVocabularyHead.training_vocabulary`); set only when the
        kind changes."""
        if kind == self._vocabulary_kind:
            return
        head = get_head(self.model)
        box = TrainingVocabulary(self.train_text)
        vocabulary = head.training_vocabulary(kind, box, self.weak_vocabulary)
        head.set_vocabulary(vocabulary.text, vocabulary.is_novel)
        head.set_class_frequencies(vocabulary.class_counts)
        self._vocabulary_kind = kind

    @torch.no_grad()
    def _add_caption_embeddings(self, targets: list[dict]) -> None:
        """Each target's ``caption_embedding`` Tensor[D]: CLIP's text embedding of its
        caption (the caption loss)."""
        import torch.nn.functional as F

        captions = [t["caption"] for t in targets]
        embeddings = F.normalize(self.clip.encode_text(captions).float(), dim=-1)
        for t, e in zip(targets, embeddings.to(self.device)):
            t["caption_embedding"] = e

    def _seed_everything(self, seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def batch_kinds(self, start: int, count: int) -> list[int]:
        """The kind of micro-batches ``start .. start + count - 1`` (one per forward pass):
        0 box, 1 image-labelled; all box without weak data."""
        if self.weak_records is None:
            return [0] * count
        return mixed_batch_kinds(self.cfg.DATALOADER.DATASET_RATIO, start, count)

    def _batch_size(self, per_step: int, key: str) -> int:
        """Images per process and forward pass, of ``per_step`` images per optimizer step."""
        accum = self.cfg.SOLVER.ACCUMULATE_STEPS
        if per_step % (self.world_size * accum):
            raise ConfigError(
                f"{key} ({per_step}) must be divisible by processes x "
                f"SOLVER.ACCUMULATE_STEPS ({self.world_size} x {accum})"
            )
        return per_step // (self.world_size * accum)

    def _data_loaders(self, start_iter: int) -> list:
        """One endless iterator per batch kind (box; image-labelled with weak data), each
        positioned after the micro-batches of its kind that ``start_iter`` steps consumed."""
        consumed = self.batch_kinds(0, start_iter * self.cfg.SOLVER.ACCUMULATE_STEPS)
        loaders = [iter(self._data_loader(consumed.count(0)))]
        if self.weak_records is not None:
            loaders.append(iter(self._weak_data_loader(consumed.count(1))))
        return loaders

    def _loader(self, dataset, batch: int, start_batches: int) -> DataLoader:
        cfg = self.cfg
        sampler = ResumableTrainingSampler(
            len(dataset), cfg.SEED, start_batches * batch, self.rank, self.world_size
        )
        workers = cfg.DATALOADER.NUM_WORKERS
        return DataLoader(
            dataset,
            batch_size=batch,
            sampler=sampler,
            num_workers=workers,
            collate_fn=collate,
            persistent_workers=workers > 0,
            # Its own generator, so that creating the loader does not draw from the global RNG
            # (a resumed run must consume exactly the random numbers an uninterrupted run does).
            generator=torch.Generator().manual_seed(cfg.SEED),
            pin_memory=self.device.type == "cuda",
        )

    def _weak_data_loader(self, start_batches: int) -> DataLoader:
        """Image-labelled batches: ``DATALOADER.WEAK_IMS_PER_BATCH`` images per step at
        ``INPUT.WEAK_MIN_SIZE_TRAIN`` / ``WEAK_MAX_SIZE_TRAIN``."""
        cfg = self.cfg
        batch = self._batch_size(cfg.DATALOADER.WEAK_IMS_PER_BATCH, "DATALOADER.WEAK_IMS_PER_BATCH")
        sizes = cfg.clone()
        sizes.defrost()
        sizes.INPUT.MIN_SIZE_TRAIN = list(cfg.INPUT.WEAK_MIN_SIZE_TRAIN)
        sizes.INPUT.MAX_SIZE_TRAIN = cfg.INPUT.WEAK_MAX_SIZE_TRAIN
        dataset = ImageLabelDataset(
            self.weak_records,
            self.weak_class_index,
            build_augmentation(sizes, is_train=True),
            max_load_pixels=cfg.INPUT.MAX_LOAD_PIXELS,
        )
        return self._loader(dataset, batch, start_batches)

    def _data_loader(self, start_batches: int) -> DataLoader:
        """Box batches, positioned after ``start_batches`` of them."""
        cfg = self.cfg
        batch = self._batch_size(cfg.SOLVER.IMS_PER_BATCH, "SOLVER.IMS_PER_BATCH")
        store = None
        if not self.closed_set and cfg.MODEL.OVDET.DISTILL.MODE == "offline":
            store = load_distill_store(cfg.MODEL.OVDET.DISTILL.EMBEDDINGS_FILE)
        dataset = DetectionDataset(
            self.records,
            build_augmentation(cfg, is_train=True),
            distill_store=store,
            max_load_pixels=cfg.INPUT.MAX_LOAD_PIXELS,
        )
        return self._loader(dataset, batch, start_batches)

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
        path = self.output_dir / "metrics.jsonl"
        if not self.is_main or not path.is_file():
            return
        kept = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:  # a line cut short by SIGKILL or a full disk
                continue
            if isinstance(entry, dict) and entry.get("iteration", 0) <= iteration:
                kept.append(line)
        with atomic_open(path, "w") as f:
            f.write("".join(line + "\n" for line in kept))

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
            if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
                logger.warning(
                    "BatchNorm under %d processes normalises with each process's own batch "
                    "statistics; MODEL.RESNETS.NORM FrozenBN (the default) trains the same on any "
                    "number of processes",
                    self.world_size,
                )
            model = DistributedDataParallel(
                model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                # Image-labelled batches train neither the RPN nor the box regressor.
                find_unused_parameters=self.weak_records is not None,
            )
        model.train()
        writer = self._tensorboard()
        loaders = self._data_loaders(self.start_iter)
        self._vocabulary_kind: int | None = None  # None: no batch kind's classifier set yet
        previous = signal.signal(signal.SIGINT, self._on_sigint) if self.is_main else None
        bar = tqdm(total=max_iter, initial=self.start_iter, disable=not self.progress, desc="train")
        metrics: dict = {}
        train_start = time.perf_counter()
        try:
            for iteration in range(self.start_iter + 1, max_iter + 1):
                start = time.perf_counter()
                loss_sums: dict[str, float] = {}
                for kind in self.batch_kinds((iteration - 1) * accum, accum):
                    images, targets = next(loaders[kind])
                    images = [im.to(self.device, non_blocking=True) for im in images]
                    targets = [_to_device(t, self.device) for t in targets]
                    if self.weak_records is not None:
                        self._use_vocabulary(kind)
                        if kind == 1 and cfg.MODEL.OVDET.WEAK.CAPTION_LOSS:
                            self._add_caption_embeddings(targets)
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
                    self._log(metrics, writer)
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
                    self._log({"iteration": iteration, **self.evaluate()}, writer)
                    self._vocabulary_kind = None  # evaluate() restored the box classes
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
            if writer is not None:
                writer.close()
        comm.barrier()  # no process leaves while another still writes or evaluates
        return metrics

    def _tensorboard(self):
        if not self.is_main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            logger.warning("tensorboard is not installed; metrics go to metrics.jsonl only")
            return None
        return SummaryWriter(str(self.output_dir / "tensorboard"), purge_step=self.start_iter + 1)

    def _log(self, metrics: dict, writer) -> None:
        if not self.is_main:
            return
        with open(self.output_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(metrics) + "\n")
        if writer is not None:
            for k, v in metrics.items():
                if k != "iteration" and isinstance(v, (int, float)):
                    writer.add_scalar(k, v, metrics["iteration"])

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
        metrics = evaluate_coco(cfg.DATASETS.TEST_JSON, results, records.split)
        flat = {}
        for group in ("all", "base", "novel"):
            for k in ("AP", "AP50"):
                value = metrics[group][k]
                flat[f"{group}/{k}"] = value if value is not None else float("nan")
        logger.info("Evaluation: %s", {k: round(v, 4) for k, v in flat.items()})
        return flat


def _to_device(target: dict, device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in target.items()}
