"""Ways to mix a class's name with its image exemplars, on a synthetic benchmark run's detector.

The benchmark's exemplar rows (``ovdet/ovbench/exemplars.py``) give each novel class its first
``K`` boxes of the exemplar split, embedded by the detector's region embeddings (source
``region``), and, in the text + exemplars rows, its name too. This script loads the run's
ViLD-text + ViLD-image detector once and evaluates (base / novel / all AP50, scores down to
0.001 as the benchmark) each way of making the novel classes' rows, with CLIP rescoring (the
benchmark's exemplar rows) and without:

* ``names only``, ``exemplars only``: the two rows the mix must beat;
* ``normalised mix``: ``normalise(w * text + (1 - w) * exemplars)`` in the detector's and in
  CLIP rescoring's rows (ovdet before scores were mixed);
* ``score mix``: :func:`~ovdet.core.exemplar_rows.mix_by_scores` in both;
* ``ovdet``: what :func:`~ovdet.core.exemplars.class_embeddings` and
  :func:`~ovdet.core.exemplars.rescoring_class_embeddings` make (with rescoring: the detector
  scores the exemplars alone, CLIP the name and its crops by a score mix; without: the score
  mix).

Example::

    python tools/benchmark_synthetic.py --small --output RUN
    python -m benchmarks.exemplar_mixing --run RUN
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from benchmarks.common import print_report

WAYS = ("names only", "exemplars only", "normalised mix", "score mix", "ovdet")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--run", required=True, help="a synthetic benchmark run's --output folder")
    p.add_argument("--k", type=int, nargs="+", default=[1, 5], help="exemplars per novel class")
    p.add_argument("--text-weight", type=float, default=0.5, help="the name's weight w")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: 1)")
    p.add_argument("--json", default="", help="also write the results to this JSON file")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)

    from ovdet.api import OVDetector
    from ovdet.core import get_head
    from ovdet.core.exemplars import class_embeddings, mix_by_scores, rescoring_class_embeddings
    from ovdet.core.novel_classes import novel_class_mask
    from ovdet.data.coco import load_coco_detection
    from ovdet.data.splits import load_split
    from ovdet.evaluation import evaluate_coco
    from ovdet.ovbench.data import BenchmarkData
    from ovdet.ovbench.exemplars import exemplar_specs_from_split
    from ovdet.structures import Vocabulary
    from ovdet.tv.engine.inference import inference_on_records

    run = Path(args.run).resolve()
    w = args.text_weight
    data = BenchmarkData(run / "data")
    gt, images = str(data.path("val_json")), str(data.path("val_images"))
    records = load_coco_detection(gt, images, split=None, filter_empty=False)
    names = list(records.class_names)
    novel_names = list(load_split(data.split_spec).novel)
    overrides = ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.001", "MODEL.OVDET.EXEMPLARS.SOURCE"]
    detector = OVDetector.from_checkpoint(run / "vild" / "model_final.pt",
                                          overrides=overrides + ["region"])  # fmt: skip
    detector.set_classes(names)
    detector.enable_clip_rescoring(True)  # the CLIP teacher, loaded once
    head = get_head(detector.model)
    settings = head.clip_rescoring
    is_novel = novel_class_mask(Vocabulary.from_names(names), detector.train_class_names)
    text = detector.text_embeddings(names)
    novel = [names.index(n) for n in novel_names]
    ann = run / "exemplars" / "annotations" / "instances_exemplar.json"

    def with_novel(rows: torch.Tensor) -> torch.Tensor:
        out = text.clone()
        out[novel] = rows
        return out

    def evaluate(rows: torch.Tensor, rescoring: torch.Tensor | None) -> dict[str, float]:
        head.set_vocabulary(rows.to(detector.device), is_novel)
        head.set_rescoring_embeddings(rescoring)
        results = inference_on_records(detector.model, records, detector.cfg, "cpu", 2,
                                       progress=False)  # fmt: skip
        metrics = evaluate_coco(gt, results, data.split_spec)
        return {g: metrics[g]["AP50"] or 0.0 for g in ("base", "novel", "all")}

    out = []
    for k in args.k:
        specs = exemplar_specs_from_split(ann, novel_names, k, with_text=True)
        if [s.name for s in specs] != novel_names:
            raise SystemExit(f"error: a novel class has no exemplar in {ann}")
        embedder = detector.exemplar_embedder
        region, region_unused = embedder.embed_classes([s.exemplars for s in specs], text)
        crops, crop_unused = embedder.with_source("clip").embed_classes(
            [s.exemplars for s in specs], text, with_unused=True
        )
        names_text = text[novel]
        ways = {
            "names only": (text, text, text),
            "exemplars only": (with_novel(region), with_novel(crops), with_novel(region)),
            "normalised mix": (
                with_novel(F.normalize(w * names_text + (1 - w) * region, dim=-1)),
                with_novel(F.normalize(w * names_text + (1 - w) * crops, dim=-1)),
                with_novel(F.normalize(w * names_text + (1 - w) * region, dim=-1)),
            ),
            "score mix": (
                with_novel(mix_by_scores(names_text, region, w, region_unused)),
                with_novel(mix_by_scores(names_text, crops, w, crop_unused)),
                with_novel(mix_by_scores(names_text, region, w, region_unused)),
            ),
        }
        vocabulary = Vocabulary.from_names(names).with_exemplars(specs)
        ways["ovdet"] = (
            class_embeddings(vocabulary, detector._text, embedder, w, clip_rescoring=True),
            rescoring_class_embeddings(vocabulary, detector._text, embedder, w),
            class_embeddings(vocabulary, detector._text, embedder, w, clip_rescoring=False),
        )
        for way in WAYS:
            rows, rescoring_rows, plain_rows = ways[way]
            print(f"K={k}: {way}", file=sys.stderr)
            head.enable_clip_rescoring(settings)
            rescored = evaluate(rows, rescoring_rows)
            head.enable_clip_rescoring(None)
            plain = evaluate(plain_rows, None)
            out.append({"k": k, "way": way, "rescoring": rescored, "no_rescoring": plain})
    table = [
        [str(r["k"]), r["way"],
         *(f"{r['rescoring'][g]:.3f}" for g in ("base", "novel")),
         *(f"{r['no_rescoring'][g]:.3f}" for g in ("base", "novel"))]
        for r in out
    ]  # fmt: skip
    header = ["K", "novel classes by", "base AP50", "novel AP50",
              "base AP50, no rescoring", "novel AP50, no rescoring"]  # fmt: skip
    title = f"Run `{run}`, {len(records.images)} validation images, text weight {w}:"
    print_report(title, header, table, out, args.json)
    return out


if __name__ == "__main__":
    main()
