"""Allocator tuning for long numeric runs: freed memory stays in the process for reuse.

glibc serves every block of 32 MiB or more with its own ``mmap`` and unmaps it when it is
freed, so each new large array (a patch's batch, a residual, a transposed copy) has all
its pages faulted in and zeroed by the kernel again.  CNMF-E allocates and frees such
arrays thousands of times; on virtual machines whose memory the host backs lazily a fresh
64 MiB array then costs 17-180 ms to fill instead of 10 ms (measured on the 2-core CI
machine), about a quarter of the CNMF-E wall time.  :func:`keep_freed_memory` makes
glibc serve large blocks from its heap and keep freed heap memory, so the pages are
reused.  Peak RSS is unchanged (the memory held is what the process already used at its
peak); RSS simply does not shrink before the process ends.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

__all__ = ["keep_freed_memory"]

log = logging.getLogger("califlow")

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
#: Free memory at the top of the heap kept before it is returned to the kernel (bytes; a C int).
TRIM_THRESHOLD = 2 ** 31 - 1

_done = False


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse (process-wide, idempotent).

    Returns True when the allocator was tuned (Linux with glibc), False elsewhere (no-op).
    """
    global _done
    if _done:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    except (OSError, AttributeError, ctypes.ArgumentError):  # pragma: no cover - exotic libc
        return False
    _done = bool(ok)
    log.debug("glibc keeps freed memory: %s", _done)
    return _done
