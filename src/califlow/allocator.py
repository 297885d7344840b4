"""Allocator tuning for long numeric runs: freed memory stays in the process for reuse.

glibc serves every block of 32 MiB or more with its own ``mmap`` and unmaps it when it is
freed, so each new large array (a patch's batch, a residual, a transposed copy) has all
its pages faulted in and zeroed by the kernel again.  CNMF-E allocates and frees such
arrays thousands of times; on virtual machines whose memory the host backs lazily a fresh
64 MiB array then costs 17-180 ms to fill instead of 10 ms (measured on the 2-core CI
machine), about a quarter of the CNMF-E wall time when the movie is held in memory.
:func:`keep_freed_memory` makes glibc serve large blocks from its heap and keep freed
heap memory, so the pages are reused.

The price is fragmentation: with blocks of very different sizes the heap grows past
what the process holds at once (measured on one 128 x 128 patch of a 60000-frame movie:
peak RSS 4219 MiB kept vs 2836 MiB returned, at the same speed, since reading the store
dominates).  CNMF-E therefore keeps freed memory only when the movie fits in memory and
restores glibc's behaviour for out-of-core runs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

__all__ = ["keep_freed_memory"]

log = logging.getLogger("califlow")

# mallopt parameters (malloc.h) and glibc's defaults
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_DEFAULT_MMAP_MAX = 65536
#: Free memory at the top of the heap kept before it is returned to the kernel (bytes; a C int).
TRIM_THRESHOLD = 2 ** 31 - 1

_state: bool | None = None


def keep_freed_memory(enable: bool = True) -> bool:
    """Make glibc keep freed memory for reuse (``enable``) or return it as by default.

    Process-wide.  Returns True when the allocator is set as asked (Linux with glibc),
    False elsewhere (no-op).
    """
    global _state
    if _state is enable:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    mmap_max, trim = (0, TRIM_THRESHOLD) if enable else (_DEFAULT_MMAP_MAX, _DEFAULT_TRIM_THRESHOLD)
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_MAX, mmap_max) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, trim) == 1
    except (OSError, AttributeError, ctypes.ArgumentError):  # pragma: no cover - exotic libc
        return False
    if ok:
        _state = bool(enable)
    log.debug("glibc keeps freed memory: %s", _state)
    return bool(ok)
