"""Keep the memory a CPU training step frees for the next step (glibc's ``malloc``, Linux).

A training step on the CPU allocates and frees the same large tensors every step: feature maps,
their gradients, the re-laid-out convolution weights. glibc gives free memory at the top of its
heap back to the kernel once it exceeds a trim threshold (by default twice the largest chunk it
has handed out by ``mmap``), so the next step takes those pages again as page faults, each one
zeroed by the kernel: 20,000-34,000 faults (80-140 MB) per step of the synthetic benchmark's
detector, 11-22% of its time (docs/speed.md#freed-memory-kept-for-reuse).
:func:`keep_freed_memory` raises the trim threshold and fixes the ``mmap`` threshold at glibc's
largest (32 MiB), so the heap keeps what it freed and reuses it. The cost: the process holds on
to up to :data:`TRIM_THRESHOLD_BYTES` of free heap after its peak, instead of returning it.

Every command-line tool calls it at start (:func:`ovdet.cli.common.cli_entry`), and so do the
benchmark's worker processes. It does nothing, and says so at DEBUG level, where the allocator
is not glibc's (macOS, Windows, musl, or jemalloc / tcmalloc / mimalloc in ``LD_PRELOAD``),
where the user already tuned glibc's allocator (``MALLOC_TRIM_THRESHOLD_``,
``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TOP_PAD_`` or ``glibc.malloc`` tunables in
``GLIBC_TUNABLES``), or with ``OVDET_KEEP_FREED_MEMORY=0``.
"""

from __future__ import annotations

import ctypes
import logging
import os

__all__ = [
    "ENV_VAR",
    "MMAP_THRESHOLD_BYTES",
    "TRIM_THRESHOLD_BYTES",
    "keep_freed_memory",
    "keeps_freed_memory",
]

logger = logging.getLogger(__name__)

#: Set to ``0`` to leave the allocator as it is.
ENV_VAR = "OVDET_KEEP_FREED_MEMORY"
#: Free memory at the top of the heap that glibc keeps before it trims (1 GiB).
TRIM_THRESHOLD_BYTES = 1 << 30
#: Allocations up to this size come from the heap, larger ones from ``mmap`` (glibc's maximum
#: on 64-bit systems, 32 MiB; its default starts at 128 KiB and grows with what is freed).
MMAP_THRESHOLD_BYTES = 32 << 20

# mallopt() parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_USER_MALLOC_ENV = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")
_OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")

_applied = False


def _reason_to_leave_alone() -> str:
    """Why the allocator is left as it is, or ``""``."""
    if os.environ.get(ENV_VAR, "1").strip() == "0":
        return f"{ENV_VAR}=0"
    user_set = [name for name in _USER_MALLOC_ENV if name in os.environ]
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        user_set.append("GLIBC_TUNABLES")
    if user_set:
        return f"the allocator is tuned by {', '.join(user_set)}"
    preload = os.environ.get("LD_PRELOAD", "")
    other = [name for name in _OTHER_ALLOCATORS if name in preload]
    if other:
        return f"{other[0]} is preloaded"
    try:
        glibc = os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):  # no confstr, or no such name (not glibc)
        glibc = None
    if not glibc:
        return "the C library is not glibc"
    return ""


def keep_freed_memory() -> bool:
    """Make glibc's ``malloc`` keep freed memory for reuse (see the module docstring).

    Idempotent; the settings hold for the whole process and the processes it forks.

    Returns:
        whether glibc's allocator is now set so (also when an earlier call set it).
    """
    global _applied
    if _applied:
        return True
    reason = _reason_to_leave_alone()
    if reason:
        logger.debug("malloc left as it is: %s", reason)
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError) as e:
        logger.debug("malloc left as it is: no mallopt (%s)", e)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt() returns 1 on success; setting the mmap threshold also turns off glibc's
    # dynamic thresholds, which would lower the trim threshold again.
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1 and ok
    if not ok:
        logger.debug("malloc left as it is: mallopt refused the settings")
        return False
    _applied = True
    logger.debug(
        "glibc malloc keeps freed memory for reuse (trim threshold %d MiB, mmap threshold %d "
        "MiB; %s=0 turns this off)",
        TRIM_THRESHOLD_BYTES >> 20,
        MMAP_THRESHOLD_BYTES >> 20,
        ENV_VAR,
    )
    return True


def keeps_freed_memory() -> bool:
    """Whether :func:`keep_freed_memory` has set glibc's allocator in this process (a query: it
    changes nothing)."""
    return _applied
