"""What a run's stages depend on (``inputs.json``), so that a later run in the same folder
reuses them only for the same inputs, and may add the detectors an earlier one left out (the
fine-tuned ones, the mask detector of ``--masks``, the F-VLM detector of ``--fvlm``)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from ovdet.ovbench.plan import BenchmarkSize
from ovdet.utils.errors import ConfigError

__all__ = ["check_same_inputs", "run_inputs"]


def run_inputs(data, spec: BenchmarkSize, seed: int, clip, detector_opts) -> dict:
    """What a run's stages depend on, as ``inputs.json`` records it: the iterations per detector
    trained (``"iterations"``) apart from the rest of the size (which detectors it trains,
    ``masks`` and ``fvlm`` included), so that a later run in the same folder may add detectors
    that this one left out.

    Args:
        data: the :class:`~ovdet.ovbench.data.BenchmarkData`, or ``None`` for the synthetic one.
        spec: the size.
        seed: the run's seed.
        clip: the CLIP spec given, or ``None`` for the one pre-trained by the run.
        detector_opts: config ``KEY VALUE`` pairs for every detector.
    """
    optional = ("detector_iters", "detector_iters_overrides", "masks", "fvlm")
    size = {k: v for k, v in asdict(spec).items() if k not in optional}
    inputs = {
        "data": data.describe() if data is not None else "synthetic",
        "size": size,
        "iterations": {d.name: spec.iters(d.name) for d in spec.detectors() if spec.trains(d)},
        "seed": seed,
        "clip": clip or "pre-trained",
        "detector_opts": list(detector_opts),
    }
    return json.loads(json.dumps(inputs))  # tuples as JSON lists


def check_same_inputs(out: Path, inputs: dict) -> None:
    """Finished stages are reused only for the same data and settings, and a detector's only
    for the same iterations; a run may train detectors an earlier one left out (they are added
    to ``inputs.json``).

    Raises:
        ConfigError: ``out`` holds a run with other inputs (each difference named).
    """
    from ovdet.utils.io import atomic_write_json

    path = out / "inputs.json"
    if not path.is_file():
        atomic_write_json(inputs, path)
        return
    previous = json.loads(path.read_text())
    changed = sorted(k for k in inputs.keys() | previous.keys()
                     if k != "iterations" and inputs.get(k) != previous.get(k))  # fmt: skip
    before, now = previous.get("iterations", {}), inputs["iterations"]
    for name in sorted(before.keys() & now.keys()):
        if before[name] != now[name]:
            changed.append(f"the iterations of {name} ({before[name]}, now {now[name]})")
    if changed:
        raise ConfigError(
            f"{out} holds a run with other inputs ({', '.join(changed)} differ); its stages "
            "cannot be reused: choose a new --output"
        )
    if not now.keys() <= before.keys():
        atomic_write_json({**inputs, "iterations": {**before, **now}}, path)
