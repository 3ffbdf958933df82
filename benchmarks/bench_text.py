"""Text-classifier cost: building a vocabulary's ``Tensor[C, D]`` cold (text tower) and warm
(the on-disk cache, zero text-tower calls).

Uses :class:`ovdet.clip.text_classifier.TextClassifierBuilder` exactly as training and inference
do. The CLIP is
``--clip`` (default: the tiny model of ``configs/clip/tiny``, randomly initialised: its speed
does not depend on its weights). Class names are synthetic (``"object 17"``); the text tower
always runs on the full padded context, so the cost per prompt does not depend on the name.

* cold: a fresh, empty cache folder; the CLIP already loaded; time of one builder call
  (tokenising, the text tower in batches of ``--batch-size`` prompts, averaging over templates,
  writing the cache file);
* warm, same builder: the second call of that builder (reads the cache file);
* warm, new builder: a new builder from the spec string on the same folder, as a new process
  would make it: it computes the weights digest of the cache key (for randomly initialised
  weights that means loading the CLIP and hashing its state; for a weights file, hashing the
  file) and reads the cache. The text tower must run zero times; the script fails otherwise.

Example::

    python -m benchmarks.bench_text
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Sequence

from benchmarks.common import machine_lines, markdown_table, setup_torch, synchronize


def names(count: int) -> list[str]:
    """``count`` distinct synthetic class names."""
    return [f"object {i}" for i in range(count)]


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--clip", default="local-dir:clip/tiny", help="CLIP spec")
    p.add_argument("--templates", nargs="+", default=["a", "vild"], help="template sets")
    p.add_argument("--vocab-sizes", type=int, nargs="+", default=[80, 1203, 20000])
    p.add_argument(
        "--max-prompts",
        type=int,
        default=100_000,
        help="skip (templates, classes) cases with more prompts than this (default: 100000)",
    )
    p.add_argument("--repeats", type=int, default=3, help="cold builds per case (median)")
    p.add_argument("--batch-size", type=int, default=1024, help="prompts per text-tower call")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    device = setup_torch(args.device, args.threads)

    from ovdet.clip import load_clip
    from ovdet.clip.text_classifier import TextClassifierBuilder, load_templates

    start = time.perf_counter()
    clip = load_clip(args.clip, device)
    load_s = time.perf_counter() - start
    rows = []
    for template_set in args.templates:
        num_templates = len(load_templates(template_set))
        for count in args.vocab_sizes:
            prompts = count * num_templates
            if prompts > args.max_prompts:
                continue
            vocab = names(count)
            cold, calls = [], 0
            with tempfile.TemporaryDirectory() as cache:
                for _ in range(args.repeats):
                    with tempfile.TemporaryDirectory() as fresh:
                        builder = TextClassifierBuilder(
                            clip, template_set, fresh, device, args.batch_size
                        )
                        t0 = time.perf_counter()
                        builder(vocab)
                        synchronize(device)
                        cold.append(time.perf_counter() - t0)
                        calls = builder.num_text_tower_calls
                first = TextClassifierBuilder(clip, template_set, cache, device, args.batch_size)
                first(vocab)
                t0 = time.perf_counter()
                first(vocab)
                warm_same = time.perf_counter() - t0
                fresh_builder = TextClassifierBuilder(
                    args.clip, template_set, cache, device, args.batch_size
                )
                t0 = time.perf_counter()
                fresh_builder(vocab)
                warm_new = time.perf_counter() - t0
                if first.num_text_tower_calls != calls or fresh_builder.num_text_tower_calls:
                    raise SystemExit(
                        "error: a cached vocabulary ran the text tower "
                        f"({first.num_text_tower_calls - calls} + "
                        f"{fresh_builder.num_text_tower_calls} calls)"
                    )
            cold_s = statistics.median(cold)
            rows.append(
                [
                    f"`{template_set}` ({num_templates})",
                    f"{count:,}",
                    f"{prompts:,}",
                    str(calls),
                    f"{cold_s:.2f}",
                    f"{cold_s * 1e3 / count:.3f}",
                    f"{warm_same * 1e3:.1f}",
                    f"{warm_new * 1e3:.0f}",
                    "0",
                ]
            )
    print("### Text classifier: cold (text tower) and warm (cache)\n")
    print("\n".join(machine_lines(device, args.threads)))
    print(
        f"- CLIP `{args.clip}` ({type(clip.image_encoder).__name__} image tower, embedding "
        f"{clip.embed_dim}, text context {clip.context_length}), random init unless the spec "
        f"names weights; loaded in {load_s:.2f} s (not in the figures); cold = median of "
        f"{args.repeats}\n"
    )
    print(
        markdown_table(
            [
                "templates",
                "classes",
                "prompts",
                "text-tower calls, cold",
                "cold s",
                "cold ms/class",
                "warm ms, same builder",
                "warm ms, new builder (digest + read)",
                "text-tower calls, warm",
            ],
            rows,
        )
    )
    print()


if __name__ == "__main__":
    main()
