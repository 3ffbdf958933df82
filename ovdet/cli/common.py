"""Shared command-line plumbing: logging set-up and one-line errors instead of tracebacks."""

from __future__ import annotations

import functools
import logging
import sys
from typing import Callable

from ovdet.errors import OvdetError

__all__ = ["cli_entry", "setup_logging"]


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("PIL", "matplotlib", "root"):
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
