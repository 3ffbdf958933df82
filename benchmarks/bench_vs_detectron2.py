"""Inference speed of ovdet's default (torchvision) engine against detectron2's closed-set
Faster R-CNN R50-FPN (``COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml``), on the same input.

Four detectors, random weights (speed does not depend on training):

* ``d2``: detectron2's ``GeneralizedRCNN`` built from ``faster_rcnn_R_50_FPN_1x.yaml`` (the
  file in detectron2's package where present, else the same keys set here), 80 classes;
* ``ovdet``: ovdet's open-vocabulary detector (``OpenVocabularyRCNN``) as built by default,
  80 random text embeddings of CLIP ViT-B/32's size (512);
* ``ovdet-ref``: the same with torchvision's reference computation
  (:func:`ovdet.tv.modeling.fast_paths.use_reference_paths`), i.e. before the fast paths;
* ``tv``: torchvision's closed-set Faster R-CNN as ovdet builds it (``FasterRCNN``), 80 classes,
  reference paths (the baseline ovdet's engine started from).

Random weights give degenerate boxes (huge deltas collapse every proposal onto the whole image, and
NMS then leaves a handful), so in all three the RPN's and the box head's regression layers are
zeroed: proposals are anchors ranked by random objectness, detections are proposals, and every
stage does its full work. All three take the same image (RGB in [0, 1] for the torchvision engine,
the same pixels as BGR 0-255 for detectron2), keep 1000 RPN proposals per FPN level before NMS and
1000 per image after (detectron2's test setting), and at most 100 detections per image. A random
detectron2 classifier gives every class ~1/81, so nothing would pass the 0.05 score threshold and
detectron2 would skip all post-processing; its ``cls_score`` weights are scaled so that its logits
spread like ovdet's (temperature x cosine), and the table prints the detections per image of each
side. The models are timed in interleaved rounds (each round runs every model once, in an order
rotated and reversed from round to round, as ``benchmarks/common.py`` does) with the same
``torch.set_num_threads``; a ratio is the median over rounds of the per-round ratio to detectron2.
Each call is timed twice: wall time, and the CPU time of this process (``time.process_time``),
which on a machine loaded by other jobs counts only the time the benchmark actually ran (not the
time it waited for a core); the table's ratio is the CPU-time one, the wall-time ratio is printed
next to it.

detectron2 is not a dependency of ovdet: where it is not installed this script says so and
times the two torchvision-engine detectors only. Install it by its own guide (build from its
public repository) to get the ratio.

Examples::

    python -m benchmarks.bench_vs_detectron2                       # 800x1067 and 480x640
    python -m benchmarks.bench_vs_detectron2 --sizes 800x1067 --rounds 20 --threads 2
    python -m benchmarks.bench_vs_detectron2 --profile --sizes 480x640   # top operators
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from benchmarks.common import (
    machine_lines,
    markdown_table,
    paired_ratios,
    random_text_embeddings,
    ratio_summary,
    setup_torch,
)

NUM_CLASSES = 80
_LABELS = {
    "ovdet": "ovdet, open-vocabulary, 80 classes (default: fast paths)",
    "ovdet-ref": "ovdet, open-vocabulary, 80 classes, torchvision's reference paths",
    "tv": "torchvision's closed-set Faster R-CNN, 80 classes (reference paths)",
    "d2": "detectron2's closed-set Faster R-CNN, 80 classes",
}
EMBED_DIM = 512  # CLIP ViT-B/32
D2_CONFIG = "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--sizes",
        nargs="+",
        default=["800x1067", "480x640"],
        help="image sizes HxW, one table row each (default: 800x1067 480x640)",
    )
    p.add_argument("--rounds", type=int, default=12, help="timed rounds per size (default: 12)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default: 2)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: 1)")
    p.add_argument(
        "--models",
        nargs="+",
        choices=list(_LABELS),
        default=list(_LABELS),
        help="detectors to time (default: all; d2 is dropped where detectron2 is missing): "
        + "; ".join(f"{k}: {v}" for k, v in _LABELS.items()),
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="instead of timing, print each model's top operators (torch.profiler, one call)",
    )
    p.add_argument("--json", default="", help="also write the raw timings to this JSON file")
    return p.parse_args(argv)


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError as e:
        raise SystemExit(f"error: --sizes takes HxW, e.g. 800x1067; got {text!r}") from e
    return h, w


def ovdet_cfg():
    """ovdet's R50-FPN config (``Base-RCNN-FPN.yaml``) at detectron2's test settings."""
    from ovdet.config import load_config

    return load_config(
        "Base-RCNN-FPN.yaml",
        [
            "MODEL.OVDET.EMBED_DIM", str(EMBED_DIM),
            "MODEL.RPN.PRE_NMS_TOPK_TEST", "1000",
            "MODEL.RPN.POST_NMS_TOPK_TEST", "1000",
            "TEST.DETECTIONS_PER_IMAGE", "100",
        ],
    )  # fmt: skip


def build_ovdet(cfg, reference_paths: bool) -> nn.Module:
    from ovdet.core import get_head
    from ovdet.tv import build_open_vocabulary_rcnn

    torch.manual_seed(0)
    model = build_open_vocabulary_rcnn(cfg, embed_dim=EMBED_DIM)
    get_head(model).set_vocabulary(random_text_embeddings(NUM_CLASSES, EMBED_DIM))
    _set_reference_paths(model, reference_paths)
    _zero_(model.rpn.head.bbox_pred, get_head(model).bbox_pred)
    return model.eval()


def build_tv_closed(cfg, reference_paths: bool) -> nn.Module:
    from ovdet.tv import build_closed_set_rcnn

    torch.manual_seed(0)
    model = build_closed_set_rcnn(cfg, NUM_CLASSES)
    _set_reference_paths(model, reference_paths)
    _zero_(model.rpn.head.bbox_pred, model.roi_heads.box_predictor.bbox_pred)
    return model.eval()


@torch.no_grad()
def _zero_(*layers: nn.Module) -> None:
    """Zero the weights and biases of box-regression layers (see the module's docstring)."""
    for layer in layers:
        layer.weight.zero_()
        layer.bias.zero_()


def _set_reference_paths(model: nn.Module, reference: bool) -> None:
    try:
        from ovdet.tv.modeling.fast_paths import use_reference_paths
    except ImportError:  # an ovdet without fast paths
        return
    use_reference_paths(model, reference)


def d2_available() -> str:
    """'' when detectron2 can be imported, else why not."""
    try:
        import detectron2  # noqa: F401
        from detectron2.modeling import build_model  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure means "not usable here"
        return f"{type(e).__name__}: {e}"
    return ""


def d2_cfg():
    """detectron2's config of ``faster_rcnn_R_50_FPN_1x.yaml``, on CPU, random weights."""
    import detectron2
    from detectron2.config import get_cfg

    cfg = get_cfg()
    zoo = Path(detectron2.__file__).parent / "model_zoo" / "configs" / D2_CONFIG
    if zoo.is_file():
        cfg.merge_from_file(str(zoo))
    else:  # the same keys as the file (Base-RCNN-FPN.yaml + R50)
        m = cfg.MODEL
        m.BACKBONE.NAME = "build_resnet_fpn_backbone"
        m.RESNETS.DEPTH = 50
        m.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
        m.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
        m.ANCHOR_GENERATOR.SIZES = [[32], [64], [128], [256], [512]]
        m.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]
        m.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
        m.RPN.PRE_NMS_TOPK_TEST = 1000
        m.RPN.POST_NMS_TOPK_TEST = 1000
        m.ROI_HEADS.NAME = "StandardROIHeads"
        m.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
        m.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
        m.ROI_BOX_HEAD.NUM_FC = 2
        m.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.MASK_ON = False
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = NUM_CLASSES
    return cfg


def build_d2(logit_std: float) -> nn.Module:
    """detectron2's model; its classifier scaled so that its logits' std on a probe image's
    regions is ``logit_std``."""
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    model = build_model(d2_cfg()).eval()
    _zero_(model.proposal_generator.rpn_head.anchor_deltas, model.roi_heads.box_predictor.bbox_pred)
    cls_score = model.roi_heads.box_predictor.cls_score
    logits: list[torch.Tensor] = []
    hook = cls_score.register_forward_hook(lambda m, i, o: logits.append(o))
    image = torch.rand(3, 320, 427, generator=torch.Generator().manual_seed(2)) * 255
    with torch.no_grad():
        model([{"image": image, "height": 320, "width": 427}])
        hook.remove()
        std = logits[0][:, :-1].std().item()
        cls_score.weight.mul_(logit_std / max(std, 1e-12))
        cls_score.bias.mul_(logit_std / max(std, 1e-12))
    return model


def ovdet_logit_std(model: nn.Module) -> float:
    """The spread of ovdet's class logits (temperature x cosine of random vectors)."""
    from ovdet.core import get_head

    head = get_head(model)
    emb = torch.nn.functional.normalize(torch.randn(4096, head.embed_dim), dim=-1)
    with torch.no_grad():
        return head.classifier.logits_from_embeddings(emb)[:, :-1].std().item()


def runners(
    models: dict[str, nn.Module], shape: tuple[int, int], counts: dict[str, float]
) -> dict[str, Callable[[], None]]:
    """name -> one timed inference on a fixed random image of ``shape``."""
    gen = torch.Generator().manual_seed(1)
    rgb = torch.rand(3, *shape, generator=gen)
    bgr255 = (rgb.flip(0) * 255).contiguous()
    out: dict[str, Callable[[], None]] = {}
    for name, model in models.items():
        if name == "d2":

            def run(model=model, name=name) -> None:
                with torch.no_grad():
                    inst = model([{"image": bgr255, "height": shape[0], "width": shape[1]}])
                counts[name] = len(inst[0]["instances"])

        else:

            def run(model=model, name=name) -> None:
                with torch.no_grad():
                    det = model([rgb])
                counts[name] = len(det[0]["boxes"])

        out[name] = run
    return out


def interleaved_cpu_timing(
    fns: dict[str, Callable[[], None]], rounds: int, warmup: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """(CPU seconds, wall seconds) per call of every function, ``rounds`` each, interleaved:
    round ``r`` runs every function once, in an order rotated by ``r`` and reversed every
    other round."""
    names = list(fns)
    cpu: dict[str, list[float]] = {n: [] for n in names}
    wall: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in reversed(order) if r % 2 else order:
            c0, w0 = time.process_time(), time.perf_counter()
            fns[name]()
            c1, w1 = time.process_time(), time.perf_counter()
            if r >= warmup:
                cpu[name].append(c1 - c0)
                wall[name].append(w1 - w0)
        label = f"warm-up {r + 1}/{warmup}" if r < warmup else f"round {r + 1 - warmup}/{rounds}"
        print(f"  {label}", file=sys.stderr, flush=True)
    return cpu, wall


def profile_models(fns: dict[str, Callable[[], None]], rows: int = 20) -> None:
    """Print each model's operators with the most self CPU time (one call after a warm-up)."""
    from torch.profiler import ProfilerActivity, profile

    for name, fn in fns.items():
        fn()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        print(f"== {_LABELS[name]}")
        print(
            prof.key_averages().table(
                sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=45
            )
        )


def _median_ms(values: Sequence[float]) -> float:
    return sorted(values)[len(values) // 2] * 1e3


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    shapes = [parse_size(s) for s in args.sizes]
    device = setup_torch("cpu", args.threads)
    missing = d2_available()
    if missing:
        print(
            f"detectron2 is NOT installed here ({missing}): timing the torchvision engine only, "
            "no ratio to detectron2. Install detectron2 by its own guide to get it.",
            file=sys.stderr,
        )
    cfg = ovdet_cfg()
    builders = {
        "ovdet": lambda: build_ovdet(cfg, reference_paths=False),
        "ovdet-ref": lambda: build_ovdet(cfg, reference_paths=True),
        "tv": lambda: build_tv_closed(cfg, reference_paths=True),
        "d2": lambda: build_d2(ovdet_logit_std(build_ovdet(cfg, reference_paths=False))),
    }
    models = {k: builders[k]() for k in args.models if not (k == "d2" and missing)}
    ref = "d2" if "d2" in models else ("tv" if "tv" in models else "ovdet")

    rows, raw = [], {}
    for shape in shapes:
        counts: dict[str, float] = {}
        fns = runners(models, shape, counts)
        if args.profile:
            print(f"### {shape[0]}x{shape[1]}")
            profile_models(fns)
            continue
        print(
            f"timing {list(models)} x {args.rounds} rounds on {shape[0]}x{shape[1]}",
            file=sys.stderr,
        )
        cpu, wall = interleaved_cpu_timing(fns, args.rounds, args.warmup)
        raw[f"{shape[0]}x{shape[1]}"] = {"cpu": cpu, "wall": wall, "detections": counts}
        for name in models:
            r, q1, q3 = ratio_summary(paired_ratios(cpu, ref, name))
            rw = ratio_summary(paired_ratios(wall, ref, name))[0]
            rows.append(
                [
                    f"{shape[0]}x{shape[1]}",
                    _LABELS[name],
                    f"{_median_ms(cpu[name]):.0f}",
                    f"{_median_ms(wall[name]):.0f}",
                    f"**{r:.3f}** [{q1:.3f}, {q3:.3f}]" if name != ref else "1 (reference)",
                    f"{rw:.3f}" if name != ref else "1",
                    f"{counts.get(name, 0):.0f}",
                ]
            )
    if args.profile:
        return

    load = os.getloadavg()
    print("### ovdet vs detectron2, R50-FPN inference, batch 1\n")
    print("\n".join(machine_lines(device, args.threads)))
    print(
        f"- load average (1/5/15 min) at the end: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}; "
        f"{args.rounds} interleaved rounds after {args.warmup} warm-up rounds; random weights"
    )
    if missing:
        print(f"- detectron2 not installed ({missing}): no detectron2 column")
    print()
    print(
        markdown_table(
            [
                "image",
                "detector",
                "CPU ms/img (median)",
                "wall ms/img (median)",
                f"CPU time / {ref} [IQR]",
                f"wall time / {ref}",
                "detections/img",
            ],
            rows,
        )
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(raw, f, indent=1)


if __name__ == "__main__":
    main()
