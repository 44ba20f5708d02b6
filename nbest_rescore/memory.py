"""Giving freed memory back to the operating system.

Reading a large n-best list allocates and frees many block-sized buffers while the table it
builds stays; glibc's allocator keeps the freed pages between the kept ones (about 150 MB on a
765k-line list, 200 bytes a hypothesis), so the process' resident memory grows with the list
though the live data does not. `release_memory` asks the allocator to return free pages (`malloc_trim`, a
few milliseconds); elsewhere than glibc it does nothing. pyarrow (the parser's number columns,
the parquet scores table) keeps freed buffers in its own pool: those are released too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return None
    return trim


def release_memory() -> None:
    """Return the allocators' free pages to the OS (glibc's, and pyarrow's pool if in use)."""
    pa = sys.modules.get("pyarrow")
    if pa is not None:
        pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
