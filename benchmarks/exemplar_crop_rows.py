"""How each kind of class row names the validation boxes, in the detector's space and in CLIP's.

The benchmark's exemplar rows (``ovdet/ovbench/exemplars.py``) give each novel class its first
``K`` boxes of the exemplar split. A class given by (a) CLIP crops is scored by its CLIP crop
embedding twice: centred in the regions' cone, against the detector's region embeddings (the
detector's rows), and as it is, against CLIP's crop embeddings of the detections (CLIP
rescoring's rows). This script takes every ground-truth box of the run's validation images,
embeds it both ways (the detector's region embedding of the box; CLIP's crop embedding, framed
as the teacher frames its crops), and counts, against all of the run's classes (base classes
by their names, the novel ones by their names or by their ``K`` exemplars), how often a box's
nearest row is its own class (accuracy, base and novel boxes apart) and how often a base box
is taken by a novel class's row.

Example::

    python tools/benchmark_synthetic.py --output RUN
    python -m benchmarks.exemplar_crop_rows --run RUN
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import torch

from benchmarks.common import print_report


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--run", required=True, help="a synthetic benchmark run's --output folder")
    p.add_argument("--k", type=int, default=5, help="exemplars per novel class (default: 5)")
    p.add_argument("--max-images", type=int, default=0, help="validation images (0: all)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: 1)")
    p.add_argument("--json", default="", help="also write the results to this JSON file")
    return p.parse_args(argv)


def nearest_row_rates(
    embeddings: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor, novel: torch.Tensor
) -> dict[str, float]:
    """How boxes fare against class rows by their nearest row.

    Args:
        embeddings: Tensor[N, D], unit, the boxes' embeddings.
        labels: Tensor[N], their class indices.
        rows: Tensor[C, D], unit class rows.
        novel: Tensor[C], bool, the novel classes.

    Returns:
        ``novel_accuracy`` and ``base_accuracy`` (the nearest row is the box's class, over the
        novel or the base boxes) and ``base_taken_by_novel`` (a base box's nearest row is a
        novel class's).
    """
    nearest = (embeddings @ rows.t()).argmax(1)
    is_novel = novel[labels]
    right = nearest == labels
    return {
        "novel_accuracy": float(right[is_novel].float().mean()),
        "base_accuracy": float(right[~is_novel].float().mean()),
        "base_taken_by_novel": float(novel[nearest[~is_novel]].float().mean()),
    }


def main(argv: Sequence[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)

    from ovdet.api import OVDetector
    from ovdet.data.splits import load_split
    from ovdet.ovbench.data import BenchmarkData
    from ovdet.ovbench.exemplars import exemplar_specs_from_split
    from ovdet.structures.exemplars import Exemplar

    run = Path(args.run).resolve()
    data = BenchmarkData(run / "data")
    gt = json.loads(Path(data.path("val_json")).read_text())
    names = [c["name"] for c in sorted(gt["categories"], key=lambda c: c["id"])]
    index = {c["id"]: names.index(c["name"]) for c in gt["categories"]}
    novel_names = list(load_split(data.split_spec).novel)
    novel = torch.tensor([n in set(novel_names) for n in names])
    novel_index = [names.index(n) for n in novel_names]

    detector = OVDetector.from_checkpoint(run / "vild" / "model_final.pt")
    detector.set_classes(names)
    text = detector.text_embeddings(names)
    embedder = detector.exemplar_embedder
    ann = run / "exemplars" / "annotations" / "instances_exemplar.json"
    specs = exemplar_specs_from_split(ann, novel_names, args.k, with_text=False)
    if [s.name for s in specs] != novel_names:
        raise SystemExit(f"error: a novel class has no exemplar in {ann}")
    groups = [s.exemplars for s in specs]

    images = {im["id"]: im["file_name"] for im in gt["images"]}
    kept = sorted(images)[: args.max_images or None]
    boxes = [a for a in gt["annotations"] if a["image_id"] in set(kept)]
    folder = Path(data.path("val_images"))
    exemplars = [Exemplar(str(folder / images[a["image_id"]]), tuple(a["bbox"])) for a in boxes]
    labels = torch.tensor([index[a["category_id"]] for a in boxes])
    print(f"embedding {len(boxes)} validation boxes of {len(kept)} images", file=sys.stderr)

    def with_novel(novel_rows: torch.Tensor) -> torch.Tensor:
        rows = text.clone()
        rows[novel_index] = novel_rows
        return rows

    crops = embedder.with_source("clip").class_rows(groups, text)  # centred
    raw_crops = embedder.for_clip_rescoring().class_rows(groups, text)
    regions = embedder.with_source("region").class_rows(groups, text)
    row_sets = {
        "region": {
            "names": text,
            "(a) CLIP crops": with_novel(crops),
            "(a) CLIP crops, not centred": with_novel(raw_crops),
            "(b) detector regions": with_novel(regions),
        },
        "clip": {"names": text, "(a) CLIP crops": with_novel(raw_crops)},
    }
    out = []
    for space, source in (("detector regions", "region"), ("CLIP crops", "clip")):
        embedded = embedder.with_source(source)(exemplars)
        for rows_name, rows in row_sets[source].items():
            rates = nearest_row_rates(embedded, labels, rows, novel)
            out.append({"boxes_by": space, "novel_classes_by": rows_name, **rates})
    table = [
        [r["boxes_by"], r["novel_classes_by"], f"{r['novel_accuracy']:.3f}",
         f"{r['base_accuracy']:.3f}", f"{r['base_taken_by_novel']:.3f}"]
        for r in out
    ]  # fmt: skip
    header = ["boxes embedded by", "novel classes by", "novel boxes right",
              "base boxes right", "base boxes taken by a novel row"]  # fmt: skip
    title = f"Run `{run}`, {len(boxes)} validation boxes, K = {args.k}:"
    print_report(title, header, table, out, args.json)
    return out


if __name__ == "__main__":
    main()
