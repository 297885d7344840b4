"""Allocator tuning for long numeric runs: freed memory stays in the process for reuse.

glibc serves every block of 32 MiB or more with its own ``mmap`` and unmaps it when it is
freed, so each new large array (a patch's batch, a residual, a transposed copy) has all
its pages faulted in and zeroed by the kernel again.  CNMF-E allocates and frees such
arrays thousands of times; on virtual machines whose memory the host backs lazily a fresh
64 MiB array then costs 17-180 ms to fill instead of 10 ms (measured on the 2-core CI
machine), about a quarter of the CNMF-E wall time when the movie is held in memory.
Within :func:`keep_freed_memory` glibc serves large blocks from its heap and keeps freed
heap memory, so the pages are reused; on leaving it, glibc's previous behaviour is back.

The price is fragmentation: with blocks of very different sizes the heap grows past
what the process holds at once (measured on one 128 x 128 patch of a 60000-frame movie:
peak RSS 4219 MiB kept vs 2836 MiB returned, at the same speed, since reading the store
dominates).  CNMF-E therefore keeps freed memory only when the movie fits in memory and
leaves glibc's behaviour for out-of-core runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import platform
from collections.abc import Iterator

__all__ = ["keep_freed_memory", "freed_memory_kept"]

log = logging.getLogger("califlow")

# mallopt parameters (malloc.h) and glibc's defaults
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_DEFAULT_MMAP_MAX = 65536
#: Free memory at the top of the heap kept before it is returned to the kernel (bytes; a C int).
TRIM_THRESHOLD = 2 ** 31 - 1

#: Whether glibc keeps freed memory, as califlow last set it (False: glibc's defaults).
_kept = False


def freed_memory_kept() -> bool:
    """Whether glibc currently keeps freed memory (inside a :func:`keep_freed_memory` block that set it)."""
    return _kept


@contextlib.contextmanager
def keep_freed_memory(enable: bool = True) -> Iterator[bool]:
    """Within the block, glibc keeps freed memory for reuse (``enable``) or returns it as by default.

    The allocator is process-wide: the setting holds for every thread while the block runs,
    and the setting from before the block (glibc's defaults, or an enclosing block's) is
    restored when it ends, also on an exception.  Blocks may be nested.  Going back to the
    defaults returns the free memory kept so far to the kernel (``malloc_trim``).

    Parameters
    ----------
    enable : bool
        True: blocks of any size come from the heap and freed heap memory is kept
        (up to :data:`TRIM_THRESHOLD` bytes); False: glibc's defaults (``mmap`` for large blocks).

    Yields
    ------
    bool
        True when the allocator is set as asked (Linux with glibc), False elsewhere (no-op).

    Notes
    -----
    glibc stops adapting its ``mmap`` threshold to the program once ``mallopt`` has been
    called, and no call turns that back on; the threshold then stays where it was (128 KiB
    to 32 MiB), so large blocks are still returned to the kernel as by default.
    """
    previous = _kept
    ok = _apply(bool(enable))
    try:
        yield ok
    finally:
        if ok:
            _apply(previous)


def _apply(enable: bool) -> bool:
    """Set glibc's mallopt parameters for ``enable``; True on success (Linux with glibc)."""
    global _kept
    if _kept is enable:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    mmap_max, trim = (0, TRIM_THRESHOLD) if enable else (_DEFAULT_MMAP_MAX, _DEFAULT_TRIM_THRESHOLD)
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_MAX, mmap_max) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, trim) == 1
        if ok and not enable:
            libc.malloc_trim(0)  # the memory kept so far goes back to the kernel too
    except (OSError, AttributeError, ctypes.ArgumentError):  # pragma: no cover - exotic libc
        return False
    if ok:
        _kept = enable
    log.debug("glibc keeps freed memory: %s", _kept)
    return bool(ok)
