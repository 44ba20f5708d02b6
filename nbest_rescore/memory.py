"""Giving freed memory back to the operating system.

Reading a large n-best list allocates and frees many block-sized buffers while the table it
builds stays; glibc's allocator keeps the freed pages between the kept ones (about 150 MB on a
765k-line list, 200 bytes a hypothesis), so the process' resident memory grows with the list
though the live data does not. `release_memory` asks the allocator to return free pages (`malloc_trim`, a
few milliseconds); elsewhere than glibc it does nothing. pyarrow (the parser's number columns,
the parquet scores table) keeps freed buffers in its own pool: those are released too.

Beam search wants the opposite: every step allocates and frees the same few logit-sized
buffers (20 MB at batch 64, beam 12, a 6.5k vocabulary). glibc serves blocks that large with
mmap and unmaps them at free, so each step faults in fresh zeroed pages again (a quarter of a
million page faults, about 8% of a translation's time). `reuse_freed_memory` keeps them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from collections.abc import Callable


@functools.cache
def _glibc(name: str) -> Callable[..., int] | None:
    """A glibc allocator function (`malloc_trim`, `mallopt`); None off Linux or off glibc."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn: Callable[..., int] = getattr(libc, name)
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return None
    return fn


def _malloc_trim() -> Callable[..., int] | None:
    return _glibc("malloc_trim")


M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's mallopt parameters


def reuse_freed_memory(block: int = 32 << 20, keep: int = 256 << 20) -> bool:
    """Serve blocks up to `block` bytes from the heap, and keep up to `keep` bytes of freed heap
    in the process, so a loop that frees and reallocates large buffers reuses their pages
    instead of faulting in new ones (glibc only; True where applied). Process-wide: for a
    process that searches (`rescore translate`), not for a library caller's."""
    mallopt = _glibc("mallopt")
    if mallopt is None:
        return False
    ok = mallopt(M_MMAP_THRESHOLD, block) and mallopt(M_TRIM_THRESHOLD, keep)
    return bool(ok and mallopt(M_TOP_PAD, 64 << 20))


def release_memory() -> None:
    """Return the allocators' free pages to the OS (glibc's, and pyarrow's pool if in use)."""
    pa = sys.modules.get("pyarrow")
    if pa is not None:
        pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
