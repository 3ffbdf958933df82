"""Shared helpers of the benchmarks: machine description, interleaved timing, memory probes.

Timing protocol (noisy shared machines): every configuration of a comparison is timed in the
same process, in rounds; each round runs every configuration once, in an order rotated from
round to round, so that A and B alternate (A, B, B, A, A, B...) and load from other processes
hits both sides alike. A comparison is the median over rounds of the per-round ratio B / A.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F

from ovdet.utils.allocator import keep_freed_memory, keeps_freed_memory

__all__ = [
    "autocast",
    "cpu_model",
    "cuda_peak",
    "interleaved_timing",
    "machine_lines",
    "markdown_table",
    "max_rss_mib",
    "paired_ratios",
    "random_text_embeddings",
    "ratio_summary",
    "run_probe",
    "setup_torch",
    "synchronize",
]


def setup_torch(device: str, threads: int, seed: int = 0) -> torch.device:
    """Set the intra-op thread count and the seed, keep freed memory for reuse as ovdet's tools
    do (:func:`ovdet.utils.allocator.keep_freed_memory`; ``OVDET_KEEP_FREED_MEMORY=0`` to
    measure without); check that ``device`` exists."""
    keep_freed_memory()
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda was asked for but no CUDA device is available")
    return dev


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or the platform's description)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_lines(device: torch.device, threads: int) -> list[str]:
    """Markdown lines describing the machine, library versions and the command line."""
    import torchvision

    lines = [
        f"- command: `{' '.join(['python', '-m', _module_name(), *sys.argv[1:]])}`",
        f"- CPU: {cpu_model()}, {os.cpu_count()} cores visible, torch threads: {threads}",
        f"- torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"Python {platform.python_version()}",
    ]
    if device.type == "cuda":
        lines.append(f"- GPU: {torch.cuda.get_device_name(device)} (autocast float16)")
    else:
        lines.append("- device: CPU (float32, no autocast)")
    kept = "yes" if keeps_freed_memory() else "no (turned off, tuned by the user, or not glibc)"
    lines.append(f"- glibc malloc keeps freed memory for reuse: {kept}")
    return lines


def _module_name() -> str:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return spec.name if spec is not None else os.path.basename(sys.argv[0])


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """float16 autocast on CUDA (as the trainer and inference API do); nothing on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def interleaved_timing(
    fns: Mapping[str, Callable[[], Any]],
    rounds: int,
    warmup: int,
    device: torch.device,
    progress: bool = True,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Seconds per call of every function, timed in interleaved rounds.

    Args:
        fns: name -> function to time (one call = one sample).
        rounds: timed rounds; each calls every function once, in a rotated order.
        warmup: untimed rounds first.
        device: synchronised before and after each call.
        progress: print each round to stderr.
        clock: seconds now; ``time.process_time`` counts this process's CPU time, which other
            load on a shared CPU does not inflate (wall time by default).

    Returns:
        name -> ``rounds`` durations, index ``r`` from round ``r``.
    """
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + rounds):
        shift = r % len(names)
        order = names[shift:] + names[:shift]
        if r % 2:
            order.reverse()
        for name in order:
            synchronize(device)
            start = clock()
            fns[name]()
            synchronize(device)
            if r >= warmup:
                times[name].append(clock() - start)
        if progress:
            done = r + 1 - warmup
            label = f"warm-up {r + 1}/{warmup}" if done <= 0 else f"round {done}/{rounds}"
            print(f"  {label}", file=sys.stderr, flush=True)
    return times


def paired_ratios(times: Mapping[str, Sequence[float]], a: str, b: str) -> list[float]:
    """Per-round ratios ``times[b][r] / times[a][r]``."""
    return [tb / ta for ta, tb in zip(times[a], times[b])]


def ratio_summary(ratios: Sequence[float]) -> tuple[float, float, float]:
    """(median, first quartile, third quartile) of ratios."""
    if len(ratios) == 1:
        return ratios[0], ratios[0], ratios[0]
    q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return statistics.median(ratios), q1, q3


def random_text_embeddings(num_classes: int, dim: int, seed: int = 0) -> torch.Tensor:
    """Tensor[C, D] of random L2-normalised vectors (a stand-in vocabulary)."""
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(num_classes, dim, generator=gen), dim=-1)


def max_rss_mib() -> float:
    """Peak resident set size of this process image so far, MiB.

    Reads ``VmHWM`` from /proc/self/status where it exists: ``getrusage``'s ``ru_maxrss`` is
    inherited across fork + exec on Linux, so in a subprocess of a large parent it starts at the
    parent's peak and hides the child's own. Elsewhere falls back to ``ru_maxrss``.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_probe(
    module: str, args: Sequence[str], timeout: float = 900.0, env: Mapping[str, str] | None = None
) -> dict:
    """Run ``python -m module *args`` in a fresh process (with ``env`` added to the
    environment); parse the JSON of its last line."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        **(env or {}),
    }
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"probe {module} {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def cuda_peak(device: torch.device) -> Iterator[dict]:
    """Measures peak CUDA memory allocated inside the block (MiB, in the yielded dict)."""
    out: dict = {}
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    yield out
    if device.type == "cuda":
        synchronize(device)
        out["cuda_peak_mib"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def print_report(
    title: str,
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    records: Any,
    json_path: str = "",
) -> None:
    """Prints ``title`` and the markdown table of ``rows``; writes ``records`` (what the table
    shows, as JSON) to ``json_path`` where given."""
    print(f"{title}\n")
    print(markdown_table(header, rows))
    if json_path:
        Path(json_path).write_text(json.dumps(records, indent=1), encoding="utf-8")
