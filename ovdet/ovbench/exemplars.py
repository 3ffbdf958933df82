"""The benchmark's image-exemplar rows: novel classes given by example boxes instead of names.

An exemplar split (``exemplars/``: scenes of their own random stream, apart from train and
val, with every box) gives each novel class its first ``K`` boxes. The best box-trained ovdet
row's detector (the quick start's, the same whether or not a run adds the fine-tuned rows; with
``--seeds``, each seed's, the rows then means over the seeds as the others) is then evaluated
as the other rows, every class in the vocabulary, base classes by their text, the novel
classes by ``K`` = 1 or 5 exemplars embedded by (a) CLIP's crop embedding, (b) the detector's
own region embedding, or by their text *and* exemplars (:mod:`ovdet.core.exemplars`).
Targets at the default size: 5-exemplar novel AP50 at least the text-only row's, text +
exemplars above both.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from ovdet.ovbench.plan import BenchmarkSize, Method

__all__ = [
    "EXEMPLAR_ROWS",
    "EXEMPLAR_TABLE_ROWS",
    "ExemplarRow",
    "evaluate_exemplar_rows",
    "exemplar_specs_from_split",
    "exemplar_targets",
    "write_exemplar_scenes",
]

logger = logging.getLogger(__name__)

#: Scenes of the exemplar split: enough for five boxes of nearly every novel class at either
#: size (about 2 to 3 objects per scene, 64 classes).
NUM_EXEMPLAR_SCENES = 400


@dataclass(frozen=True)
class ExemplarRow:
    """A row of the exemplar table.

    Attributes:
        key: its key in ``results.json`` (and ``eval/KEY.json``).
        description: its label.
        source: what embeds an exemplar (``MODEL.OVDET.EXEMPLARS.SOURCE``).
        k: exemplars per novel class.
        with_text: the novel classes' text mixed in (``MODEL.OVDET.EXEMPLARS.TEXT_WEIGHT``).
    """

    key: str
    description: str
    source: str
    k: int
    with_text: bool = False


#: Rows of the exemplar table, in order.
EXEMPLAR_ROWS: list[ExemplarRow] = [
    ExemplarRow(f"exemplars_{source}_k{k}", f"{what}, {k} exemplar{'s' * (k > 1)}", source, k)
    for source, what in (("clip", "(a) CLIP crop"), ("region", "(b) detector region"))
    for k in (1, 5)
] + [
    ExemplarRow(f"exemplars_text_region_k{k}", f"text + (b), {k} exemplar{'s' * (k > 1)}",
                "region", k, with_text=True)
    for k in (1, 5)
]  # fmt: skip


#: (key, label) of each exemplar row in the results table (:mod:`ovdet.ovbench.report`).
EXEMPLAR_TABLE_ROWS = [
    (r.key, f"best box-trained ovdet detector, novel by {r.description}") for r in EXEMPLAR_ROWS
]


def write_exemplar_scenes(out: Path, size: BenchmarkSize, seed: int, progress: bool) -> Path:
    """The exemplar split in ``out/exemplars`` (reused once written); returns its JSON."""
    from ovdet.data.synthetic.writer import write_exemplar_split

    root = out / "exemplars"
    done = root / "DONE"
    ann = root / "annotations" / "instances_exemplar.json"
    if not done.is_file():
        logger.info("==== exemplar split: %d scenes", NUM_EXEMPLAR_SCENES)
        write_exemplar_split(
            root, NUM_EXEMPLAR_SCENES, **size.data, seed=seed, workers=0, progress=progress
        )
        done.write_text(json.dumps({"num_images": NUM_EXEMPLAR_SCENES}))
    return ann


def exemplar_specs_from_split(ann_json: Path, names: list[str], k: int, with_text: bool) -> list:
    """Per class of ``names``, its first ``k`` boxes in the exemplar split (fewer where it has
    fewer; none: left to its text), as :class:`~ovdet.structures.exemplars.ExemplarSpec` s."""
    from ovdet.structures.exemplars import Exemplar, ExemplarSpec

    data = json.loads(ann_json.read_text())
    ids = {c["name"]: c["id"] for c in data["categories"]}
    files = {im["id"]: im["file_name"] for im in data["images"]}
    images = ann_json.parent.parent / "images" / "exemplar"
    specs = []
    for name in names:
        boxes = [a for a in data["annotations"] if a["category_id"] == ids[name]][:k]
        if len(boxes) < k:
            logger.warning("exemplar split: %d of %d exemplars of %s", len(boxes), k, name)
        if boxes:
            exemplars = tuple(
                Exemplar(str(images / files[a["image_id"]]), tuple(a["bbox"])) for a in boxes
            )
            specs.append(ExemplarSpec(name, exemplars, with_text))
    return specs


def evaluate_exemplar_rows(
    out: Path, ann: Path, data, split, best: Method, device: str, progress: bool
) -> dict[str, dict]:
    """Base / novel / all AP and AP50 of each row of :data:`EXEMPLAR_ROWS` on ``best``'s
    detector in ``out`` (one seed's folder) and its prediction, the exemplars from ``ann``
    (:func:`write_exemplar_scenes`), each cached in ``out/eval/KEY.json`` with what it
    scored."""
    from ovdet.clip.spec import file_digest
    from ovdet.evaluation import evaluate_coco
    from ovdet.ovbench.predict import predict_with_method
    from ovdet.ovbench.stages import EVAL_SCORE_THRESH, start_stage
    from ovdet.utils.io import atomic_write_json

    checkpoint = out / best.detector / "model_final.pt"
    digest = file_digest(checkpoint)
    metrics = {}
    for row in EXEMPLAR_ROWS:
        path = out / "eval" / f"{row.key}.json"
        scored = {"checkpoint_sha256": digest, "method": best.key}
        if path.is_file():
            cached = json.loads(path.read_text())
            if all(cached.pop(k, None) == v for k, v in scored.items()):
                metrics[row.key] = cached
                continue
        start_stage(f"stage 3: evaluating {best.description} with {row.description}")
        specs = exemplar_specs_from_split(ann, list(split.novel), row.k, row.with_text)
        results = predict_with_method(
            checkpoint, data.path("val_json"), data.path("val_images"), best.prediction,
            device=device, score_thresh=EVAL_SCORE_THRESH, progress=progress, exemplars=specs,
            overrides=["MODEL.OVDET.EXEMPLARS.SOURCE", row.source],
        )  # fmt: skip
        m = evaluate_coco(str(data.path("val_json")), results, data.split_spec)
        summary = {g: {k: m[g][k] for k in ("AP", "AP50")} for g in ("base", "novel", "all")}
        summary["num_detections"] = len(results)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json({**summary, **scored}, path)
        metrics[row.key] = summary
        logger.info("stage 3: %s: novel AP50 %s", row.description, summary["novel"]["AP50"])
    return metrics


def _novel(metrics: dict, key: str) -> float:
    value = metrics.get(key, {}).get("novel", {}).get("AP50")
    return math.nan if value is None else float(value)


def exemplar_targets(metrics: dict, best: Method) -> list[dict]:
    """The exemplar rows' targets against ``best`` (text only): each 5-exemplar row's novel
    AP50 at least the text-only row's; text + 5 exemplars above both."""
    from ovdet.ovbench.targets import _target

    if not any(row.key in metrics for row in EXEMPLAR_ROWS):
        return []
    text = _novel(metrics, best.key)
    targets = []
    for source in ("clip", "region"):
        value = _novel(metrics, f"exemplars_{source}_k5")
        targets.append(
            _target(
                f"5 exemplars, {source}: novel AP50 {value:.3f} >= text only ({text:.3f})",
                value >= text,
            )
        )
    mixed = _novel(metrics, "exemplars_text_region_k5")
    region = _novel(metrics, "exemplars_region_k5")
    targets.append(
        _target(
            f"text + 5 exemplars: novel AP50 {mixed:.3f} > text only ({text:.3f}) and > "
            f"exemplars only ({region:.3f})",
            mixed > text and mixed > region,
        )
    )
    return targets
