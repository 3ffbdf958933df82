"""Shared command-line plumbing: logging set-up and one-line errors instead of tracebacks."""

from __future__ import annotations

import functools
import logging
import sys
from typing import Callable

from ovdet.errors import OvdetError

__all__ = ["cli_entry", "setup_logging"]


def setup_logging(verbose: bool = False) -> None:
    """Log INFO lines (DEBUG with ``verbose``) of ovdet and the libraries to stderr.

    Only third-party loggers known to be chatty are raised to WARNING; the root logger keeps
    the chosen level, so every ``ovdet.*`` line shows (``logging.getLogger("root")`` *is* the
    root logger: silencing it hides everything).
    """
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger().setLevel(level)  # also where logging was configured before us
    logging.getLogger("ovdet").setLevel(level)
    for noisy in ("PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def cli_entry(main: Callable[..., int]) -> Callable[..., int]:
    """Wrap a ``main``: user errors print ``error: ...`` on one line and exit with status 2."""

    @functools.wraps(main)
    def wrapper(argv=None) -> int:
        try:
            return main(argv)
        except (OvdetError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper
