"""glibc's allocator keeps freed memory for reuse in ovdet's processes (ovdet.utils.allocator)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.common import run_probe
from ovdet.cli import common
from ovdet.utils import allocator
from ovdet.utils.task_graph import Task, run_task_graph

IS_GLIBC = bool(getattr(os, "confstr", None) and os.confstr("CS_GNU_LIBC_VERSION"))
needs_glibc = pytest.mark.skipif(not IS_GLIBC, reason="the allocator setting is glibc's")

ROOT = Path(__file__).resolve().parents[2]


def _probe_step(setting: str) -> dict:
    """Page faults and time of a training step of the tiny detector in a fresh process
    (``benchmarks.bench_allocator --probe``), with the allocator setting on ("1") or off ("0")."""
    env = {allocator.ENV_VAR: setting, "PYTHONPATH": str(ROOT)}
    args = ["--probe", "--config", "tiny", "--variant", "closed", "--batch-size", "2"]
    return run_probe(
        "benchmarks.bench_allocator", [*args, "--rounds", "3", "--warmup", "3"], env=env
    )


@needs_glibc
def test_kept_memory_is_reused_without_page_faults():
    off, on = _probe_step("0"), _probe_step("1")
    if not on["kept"]:  # e.g. MALLOC_* variables or another allocator in this environment
        pytest.skip("this environment leaves the allocator as it is (ovdet.utils.allocator)")
    assert off["kept"] is False
    # With glibc's defaults each step gives the memory it freed back to the kernel and takes it
    # again as page faults (44,417 pages of 4 KiB a step here); kept, the heap is reused (784).
    assert off["faults"] > 1000, off
    assert off["faults"] > 10 * (on["faults"] + 1), (off, on)


@pytest.fixture
def fresh(monkeypatch):
    """No earlier call in this process counts, and no allocator variable of the machine."""
    monkeypatch.setattr(allocator, "_applied", False)
    for name in (
        allocator.ENV_VAR,
        "MALLOC_TRIM_THRESHOLD_",
        "MALLOC_MMAP_THRESHOLD_",
        "MALLOC_TOP_PAD_",
        "GLIBC_TUNABLES",
        "LD_PRELOAD",
    ):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    "name, value, reason",
    [
        (allocator.ENV_VAR, "0", "OVDET_KEEP_FREED_MEMORY=0"),
        ("MALLOC_TRIM_THRESHOLD_", "65536", "tuned by MALLOC_TRIM_THRESHOLD_"),
        ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1", "tuned by GLIBC_TUNABLES"),
        ("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "jemalloc is preloaded"),
    ],
)
def test_left_as_it_is_when_turned_off_or_tuned_by_the_user(fresh, name, value, reason, caplog):
    fresh.setenv(name, value)
    caplog.set_level("DEBUG", logger=allocator.__name__)
    assert allocator.keep_freed_memory() is False
    assert allocator.keeps_freed_memory() is False
    assert reason in caplog.text


def test_left_as_it_is_where_the_c_library_is_not_glibc(fresh, caplog):
    fresh.setattr(allocator.os, "confstr", lambda name: None)  # musl, macOS: no glibc version
    caplog.set_level("DEBUG", logger=allocator.__name__)
    assert allocator.keep_freed_memory() is False
    assert "not glibc" in caplog.text


@needs_glibc
def test_other_glibc_tunables_do_not_count_as_tuning_the_allocator(fresh):
    fresh.setenv("GLIBC_TUNABLES", "glibc.pthread.rseq=0")
    assert allocator.keep_freed_memory() is True
    assert allocator.keep_freed_memory() is True  # idempotent
    assert allocator.keeps_freed_memory() is True


def test_every_tool_keeps_freed_memory(monkeypatch):
    calls = []
    monkeypatch.setattr(common, "keep_freed_memory", lambda: calls.append("kept") or True)

    @common.cli_entry
    def main(argv) -> int:
        calls.append("main")
        return 0

    assert main([]) == 0
    assert calls == ["kept", "main"]


def _kept_in_this_process() -> bool:
    return allocator.keeps_freed_memory()


@needs_glibc
def test_the_benchmark_workers_keep_freed_memory(monkeypatch):
    monkeypatch.delenv(allocator.ENV_VAR, raising=False)
    results = run_task_graph(
        [Task("a", _kept_in_this_process, ()), Task("b", _kept_in_this_process, ())], workers=2
    )
    assert results == {"a": True, "b": True}


def test_the_detectron2_trainer_keeps_freed_memory(monkeypatch):
    from ovdet.cli import train_net

    class Kept(Exception):
        pass

    def keep() -> bool:
        raise Kept  # called before detectron2 is imported or anything runs

    monkeypatch.setattr(train_net, "keep_freed_memory", keep)
    with pytest.raises(Kept):
        train_net.main(["--config-file", "d2/instant_test.yaml"])
