"""ONNX latency: onnxruntime (CPU) against PyTorch (CPU) on the same detector and images.

A checkpoint (default: the tiny config with random weights and the shipped tiny CLIP) is
exported with :func:`ovdet.export.onnx.export_onnx`; then ``OVDetector.predict`` and
``OnnxDetector.predict`` (the whole call: resize, graph, boxes back to pixels) are timed on one
image per call, interleaved in rounds (see ``benchmarks/common.py``), for each vocabulary size.
Both sides use ``--threads`` intra-op threads.

Examples::

    python -m benchmarks.bench_onnx                              # tiny config, random weights
    python -m benchmarks.bench_onnx --checkpoint /tmp/bench_small/vild/model_final.pt \\
        --vocab-sizes 1 80 1203 --rounds 20
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import (
    interleaved_timing,
    machine_lines,
    markdown_table,
    paired_ratios,
    ratio_summary,
    setup_torch,
)


def _checkpoint(args, tmp: Path) -> Path:
    if args.checkpoint:
        return Path(args.checkpoint)
    from ovdet.config import load_config
    from ovdet.tv.engine.build import build_model
    from ovdet.tv.engine.checkpoint import save_checkpoint

    cfg = load_config(args.config)
    model = build_model(cfg)
    state = {"model": model.state_dict(), "config": cfg.dump(), "class_names": []}
    return save_checkpoint(state, tmp, "random.pt")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="a checkpoint (default: random tiny model)")
    p.add_argument("--config", default="tiny", help="config of the random model (default tiny)")
    p.add_argument("--vocab-sizes", type=int, nargs="+", default=[1, 80, 1203])
    p.add_argument(
        "--size", type=int, nargs=2, default=[480, 640], help="image H W (default 480 640)"
    )
    p.add_argument("--rounds", type=int, default=15, help="timed rounds (default 15)")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds (default 3)")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    args = p.parse_args(argv)

    import onnxruntime as ort

    from ovdet.api import OVDetector
    from ovdet.export.onnx import export_onnx
    from ovdet.export.runtime import OnnxDetector

    device = setup_torch("cpu", args.threads)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*args.size, 3), dtype=np.uint8)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = _checkpoint(args, Path(tmp))
        torch_detector = OVDetector.from_checkpoint(checkpoint)
        export_onnx(torch_detector, Path(tmp) / "export")
        onnx_detector = OnnxDetector(Path(tmp) / "export", providers=["CPUExecutionProvider"])
        options = onnx_detector.detector.get_session_options()
        options.intra_op_num_threads = args.threads
        onnx_detector.detector = ort.InferenceSession(
            str(Path(tmp) / "export" / "detector.onnx"), options,
            providers=["CPUExecutionProvider"],
        )  # fmt: skip
        for c in args.vocab_sizes:
            names = [f"class {i}" for i in range(c)]
            torch_detector.set_classes(names)
            onnx_detector.set_classes(names)
            times = interleaved_timing(
                {"pytorch": lambda: torch_detector.predict(image),
                 "onnxruntime": lambda: onnx_detector.predict(image)},
                args.rounds, args.warmup, device,
            )  # fmt: skip
            median, q1, q3 = ratio_summary(paired_ratios(times, "pytorch", "onnxruntime"))
            rows.append([
                c, f"{statistics.median(times['pytorch']) * 1e3:.1f}",
                f"{statistics.median(times['onnxruntime']) * 1e3:.1f}",
                f"{median:.2f} ({q1:.2f}-{q3:.2f})",
            ])  # fmt: skip
    print("\n".join(machine_lines(device, args.threads)))
    print(f"- onnxruntime {ort.__version__}, image {args.size[0]} x {args.size[1]} (resized by "
          f"the config's test size), {args.rounds} rounds")  # fmt: skip
    print()
    print(markdown_table(
        ["classes C", "PyTorch CPU ms", "onnxruntime CPU ms", "onnxruntime / PyTorch (IQR)"], rows
    ))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
