"""Shared command-line plumbing: logging set-up, common flags, one-line errors.

Every tool logs the same way (:func:`setup_logging`). By default the console (stderr) tells the
story of the run: ovdet's INFO lines (stages, progress, results) and every library's warnings,
each line once; the libraries' own INFO chatter (open_clip's loader, ``open_clip_train``'s
settings and model printout) and repeated lines go only to ``log.txt`` in the tool's output
folder (:func:`log_to_file`), which keeps every line. ``--verbose`` shows everything, DEBUG
included, on the console too; ``--quiet`` warnings only. Every tool has ``--no-progress``
(:func:`add_common_arguments`); with the bars off, long loops log periodic progress lines
instead.
"""

from __future__ import annotations

import argparse
import functools
import logging
import re
import signal
import sys
from pathlib import Path
from typing import Callable

from ovdet.utils.allocator import keep_freed_memory
from ovdet.utils.errors import OvdetError
from ovdet.utils.io import check_writable_dir
from ovdet.utils.termination import Terminated, raise_on_sigterm

__all__ = [
    "LOG_FILE_NAME",
    "add_common_arguments",
    "cli_entry",
    "close_log_file",
    "log_level",
    "log_to_file",
    "setup_logging",
]

#: The log file every tool writes in its output folder.
LOG_FILE_NAME = "log.txt"

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_DATE_FORMAT = "%H:%M:%S"
# Third-party loggers that are chatty at INFO / DEBUG.
_NOISY = ("PIL", "matplotlib", "urllib3", "filelock", "fsspec")
# Loggers of the project itself: their INFO lines are the story the console tells.
_OWN_LOGGERS = ("ovdet", "benchmarks", "__main__")
# A worker task's prefix of a relayed line (ovdet.utils.task_graph): "[name] ".
_TASK_PREFIX = re.compile(r"^\[[\w.-]+\] ")
# Lines the console remembers, to show each once (log.txt keeps every one).
_MAX_REMEMBERED = 10_000


class _CliHandler:
    """Marks the handlers this module installed, so that a second set-up replaces them."""

    console = "_ovdet_cli_console"
    file = "_ovdet_cli_file"


class _StderrHandler(logging.StreamHandler):
    """Writes to the current ``sys.stderr`` (as :data:`logging.lastResort` does), not to the one
    of the time of set-up, which a test harness may have closed since."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _is_own(name: str) -> bool:
    return any(name == own or name.startswith(own + ".") for own in _OWN_LOGGERS)


class _ConsoleFilter(logging.Filter):
    """What the console shows at INFO: the project's lines and every warning, each once.

    A library's INFO line (open_clip logs "Parsing model identifier..." on the root logger each
    time it loads a model) is left to ``log.txt``. A line the console has already shown, from
    the same logger at the same level with the same text (whichever worker task sent it: the
    ``[task]`` prefix is ignored), is not shown again. At DEBUG (``--verbose``) everything is
    shown.
    """

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level
        self._seen: set[tuple[str, int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.level <= logging.DEBUG:
            return True
        if record.levelno < logging.WARNING and not _is_own(record.name):
            return False
        if record.levelno >= logging.ERROR:
            return True
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed call: the handler reports it
            return True
        key = (record.name, record.levelno, _TASK_PREFIX.sub("", message))
        if key in self._seen:
            return False
        if len(self._seen) < _MAX_REMEMBERED:
            self._seen.add(key)
        return True


def add_common_arguments(parser: argparse.ArgumentParser, *, progress: bool = True) -> None:
    """Add ``--verbose`` / ``--quiet`` (exclusive) and, with ``progress``, ``--no-progress``."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-v", "--verbose", action="store_true", help="debug logging (default: INFO lines)"
    )
    group.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    if progress:
        parser.add_argument(
            "--no-progress",
            action="store_true",
            help="hide progress bars (periodic progress lines are logged instead)",
        )


def log_level(verbose: bool = False, quiet: bool = False) -> int:
    """DEBUG with ``verbose``, WARNING with ``quiet``, INFO otherwise."""
    if verbose:
        return logging.DEBUG
    return logging.WARNING if quiet else logging.INFO


def _remove_handlers(marker: str) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, marker, False):
            root.removeHandler(handler)
            handler.close()


def setup_logging(
    verbose: bool = False, quiet: bool = False, log_dir: str | Path | None = None
) -> None:
    """Log to stderr (and to ``log_dir/log.txt``): ovdet's story on the console, all in the file.

    The root logger keeps the chosen level, so the file receives every library's lines at it
    (``logging.getLogger("root")`` *is* the root logger: silencing it hides everything); the
    console shows, at INFO, ovdet's lines and every warning, each once (:class:`_ConsoleFilter`),
    and at DEBUG everything. Third-party loggers known to be chatty at DEBUG are raised to
    WARNING. Calling it again replaces the handlers of the previous call.

    Args:
        verbose: DEBUG lines too.
        quiet: warnings and errors only (``verbose`` wins).
        log_dir: also append the lines to ``log_dir/log.txt`` (see :func:`log_to_file`).
    """
    level = log_level(verbose, quiet)
    _remove_handlers(_CliHandler.console)
    console = _StderrHandler()
    console.setFormatter(logging.Formatter(_FORMAT, datefmt=_DATE_FORMAT))
    console.addFilter(_ConsoleFilter(level))
    setattr(console, _CliHandler.console, True)
    root = logging.getLogger()
    root.addHandler(console)
    root.setLevel(level)
    logging.getLogger("ovdet").setLevel(level)
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    if log_dir is not None:
        log_to_file(log_dir)


def log_to_file(folder: str | Path) -> Path:
    """Append every line logged at the chosen level to ``folder/log.txt`` from now on: those
    the console shows, and the libraries' INFO lines and repeats it leaves out.

    The folder is created and checked writable (a one-line error otherwise). A file set up by an
    earlier call is closed first (one log file per tool run). Returns the log file's path.
    """
    path = check_writable_dir(folder) / LOG_FILE_NAME  # a one-line error where it cannot be
    _remove_handlers(_CliHandler.file)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    setattr(handler, _CliHandler.file, True)
    logging.getLogger().addHandler(handler)
    logging.getLogger(__name__).debug("logging to %s", path)
    return path


def close_log_file() -> None:
    """Stop writing to the log file of :func:`log_to_file` (the end of a tool run)."""
    _remove_handlers(_CliHandler.file)


def cli_entry(main: Callable[..., int]) -> Callable[..., int]:
    """Wrap a ``main``: user errors print ``error: ...`` on one line and exit with status 2.

    The wrapped tool runs with glibc's allocator keeping freed memory for reuse
    (:func:`~ovdet.utils.allocator.keep_freed_memory`: CPU training steps take 11-22% less time).
    Ctrl-C (status 130) and SIGTERM (status 143, :mod:`ovdet.utils.termination`) stop it with its
    clean-up run: a subprocess it started ends, no temporary file stays behind.
    """

    @functools.wraps(main)
    def wrapper(argv=None) -> int:
        keep_freed_memory()
        previous = raise_on_sigterm()
        try:
            return main(argv)
        except (OvdetError, OSError) as e:
            logging.getLogger(main.__module__).debug("error", exc_info=True)
            print(f"error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except Terminated as e:
            print("terminated", file=sys.stderr)
            return int(e.code)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            close_log_file()  # this run's log.txt is complete

    return wrapper
