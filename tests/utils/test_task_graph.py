"""The task graph of the benchmark's stages (ovdet.utils.task_graph): order, parallel workers,
failures and the workers' log lines."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ovdet.utils.errors import ConfigError
from ovdet.utils.task_graph import Task, run_task_graph, topological_order

# Far above the time two idle processes need to see each other's file; only reached if the two
# tasks did not run at the same time (the test then fails instead of hanging).
_MEET_TIMEOUT_S = 120.0


def _write(path: str, text: str) -> str:
    logging.getLogger("ovdet.tests.task").info("writing %s", Path(path).name)
    Path(path).write_text(text)
    return text


def _read_and_append(source: str, path: str, text: str) -> str:
    content = Path(source).read_text() + text
    Path(path).write_text(content)
    return content


def _meet(mine: str, theirs: str) -> tuple[int, bool]:
    """Leave a file, wait for the other task's: True only if both ran at the same time."""
    Path(mine).write_text(str(os.getpid()))
    deadline = time.monotonic() + _MEET_TIMEOUT_S
    while time.monotonic() < deadline:
        if Path(theirs).is_file():
            return os.getpid(), True
        time.sleep(0.05)
    return os.getpid(), False


def _sleep_after_writing_pid(path: str, seconds: float) -> None:
    Path(path).write_text(str(os.getpid()))
    time.sleep(seconds)


def _sleep_then_clean_up(path: str, cleaned: str, seconds: float) -> None:
    Path(path).write_text(str(os.getpid()))
    try:
        time.sleep(seconds)
    finally:
        Path(cleaned).write_text("cleaned up")


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _fail(message: str) -> None:
    raise ConfigError(message)


def _tasks(tmp_path: Path) -> list[Task]:
    a, b, c = (str(tmp_path / n) for n in ("a.txt", "b.txt", "c.txt"))
    return [
        Task("c", _read_and_append, (b, c, "c"), after=("b",)),
        Task("b", _read_and_append, (a, b, "b"), after=("a",)),
        Task("a", _write, (a, "a")),
    ]


def test_topological_order_puts_each_task_after_what_it_needs():
    tasks = [
        Task("h", print, after=("vild",)),
        Task("closed", print),
        Task("vild", print, after=("clip",)),
        Task("clip", print),
    ]
    assert [t.name for t in topological_order(tasks)] == ["closed", "clip", "vild", "h"]


@pytest.mark.parametrize(
    "tasks, message",
    [
        ([Task("a", print), Task("a", print)], "unique"),
        ([Task("a", print, after=("b",))], "unknown tasks \\['b'\\]"),
        ([Task("a", print, after=("b",)), Task("b", print, after=("a",))], "cycle"),
    ],
)
def test_bad_graphs_are_refused(tasks, message):
    with pytest.raises(ConfigError, match=message):
        topological_order(tasks)
    with pytest.raises(ConfigError, match=message):
        run_task_graph(tasks, workers=2)


@pytest.mark.parametrize("workers", [1, 2])
def test_dependencies_run_first_and_results_come_back(tmp_path, workers):
    results = run_task_graph(_tasks(tmp_path), workers=workers)
    assert results == {"a": "a", "b": "ab", "c": "abc"}


def test_two_workers_run_independent_tasks_at_the_same_time(tmp_path):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    results = run_task_graph(
        [Task("one", _meet, (one, two)), Task("two", _meet, (two, one))], workers=2
    )
    (pid_one, met_one), (pid_two, met_two) = results["one"], results["two"]
    assert met_one and met_two
    assert len({pid_one, pid_two, os.getpid()}) == 3


def test_a_failure_is_raised_its_dependents_never_start_and_the_others_finish(tmp_path):
    done = tmp_path / "independent.txt"
    tasks = [
        Task("bad", _fail, ("the data is missing",)),
        Task("independent", _write, (str(done), "x")),
        Task("after_bad", _write, (str(tmp_path / "never.txt"), "x"), after=("bad",)),
    ]
    with pytest.raises(ConfigError, match="the data is missing"):
        run_task_graph(tasks, workers=2)
    assert done.read_text() == "x"
    assert not (tmp_path / "never.txt").exists()


def test_worker_log_lines_reach_the_parent_with_their_task_name(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="ovdet"):
        run_task_graph(_tasks(tmp_path), workers=2)
    lines = [r.getMessage() for r in caplog.records if r.name == "ovdet.tests.task"]
    assert lines == ["[a] writing a.txt"]
    assert any(r.process != os.getpid() for r in caplog.records if r.name == "ovdet.tests.task")


def test_bad_worker_counts_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="workers >= 1"):
        run_task_graph(_tasks(tmp_path), workers=0)


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's"
)
def test_workers_end_when_their_parent_is_killed(tmp_path):
    """A benchmark killed with SIGTERM runs no clean-up; its workers must not train on, and
    theirs runs (a task's own subprocess, such as the CLIP trainer, is ended by it)."""
    pid_file, cleaned = tmp_path / "worker.pid", tmp_path / "cleaned"
    script = (
        "from ovdet.utils.task_graph import Task, run_task_graph\n"
        "from tests.utils.test_task_graph import _sleep_then_clean_up\n"
        f"run_task_graph([Task('long', _sleep_then_clean_up, ({str(pid_file)!r}, "
        f"{str(cleaned)!r}, 300.0))], workers=2)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).parents[2])
    worker = 0
    try:
        deadline = time.monotonic() + _MEET_TIMEOUT_S
        while not pid_file.is_file() and time.monotonic() < deadline:
            assert parent.poll() is None, "the parent process ended before its worker started"
            time.sleep(0.05)
        worker = int(pid_file.read_text())
        assert _running(worker)
        parent.send_signal(signal.SIGTERM)
        parent.wait(timeout=_MEET_TIMEOUT_S)
        # the worker's task sleeps 300 s: well before that, it must have ended with its parent
        deadline = time.monotonic() + _MEET_TIMEOUT_S / 2
        while _running(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(worker), "the worker outlived its killed parent"
        assert cleaned.is_file(), "the worker ended without running its clean-up"
    finally:
        parent.kill()
        if worker and _running(worker):
            os.kill(worker, signal.SIGKILL)
