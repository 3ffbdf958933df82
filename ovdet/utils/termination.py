"""SIGTERM as an exception, so that a process asked to stop runs its clean-up.

The default action of SIGTERM (``kill``, a job scheduler's stop, ``torchrun`` ending its other
workers) ends the process at once: no ``finally`` block runs, so a subprocess it started (the
CLIP trainer of the synthetic benchmark) keeps running and a temporary file stays behind.
:func:`raise_on_sigterm` makes SIGTERM raise :class:`Terminated` where the process runs;
the command-line tools (:func:`ovdet.cli.common.cli_entry`) and the benchmark's worker processes
(:mod:`ovdet.utils.task_graph`) install it.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

__all__ = ["Terminated", "raise_on_sigterm"]


class Terminated(SystemExit):
    """Raised by SIGTERM once :func:`raise_on_sigterm` is installed; its code is 128 + 15, the
    exit status of a process the signal ended."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(128 + signum)


def raise_on_sigterm() -> Any:
    """Make SIGTERM raise :class:`Terminated` in the main thread; returns the handler it
    replaces (for :func:`signal.signal`), or ``None`` where it cannot be installed (not the
    main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)
