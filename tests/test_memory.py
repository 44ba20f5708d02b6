"""Freed memory (nbest_rescore.memory): after many freed buffers between kept ones,
`release_memory` shrinks the resident set to about the live data, and never touches live data;
`reuse_freed_memory` keeps a beam step's buffers in the heap for the next step."""

from __future__ import annotations

import gc
import os
import subprocess
import sys

import pyarrow as pa
import pytest

from nbest_rescore.memory import _malloc_trim, release_memory


def resident_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(_malloc_trim() is None, reason="glibc's malloc_trim only (Linux)")
def test_freed_pages_between_kept_buffers_go_back_to_the_os() -> None:
    """The reader's pattern: block-sized buffers (here 12k of 4 kB, from malloc, not Python's
    small-object pool) freed while every 64th stays; the pages between the kept ones stay in the
    process until `release_memory`."""
    gc.collect()
    release_memory()
    before = resident_bytes()
    buffers = [bytes([i % 251]) * 4000 for i in range(12_000)]
    kept = buffers[::64]
    del buffers
    gc.collect()
    grown = resident_bytes() - before
    assert grown > 30e6  # glibc kept the freed pages (else there is nothing to test)
    release_memory()
    assert resident_bytes() - before < grown / 4
    assert [b[0] for b in kept] == [(64 * i) % 251 for i in range(len(kept))]  # live data intact
    assert all(len(b) == 4000 and b.count(b[0]) == 4000 for b in kept)


def test_live_pyarrow_data_survives_and_its_pool_keeps_only_live_bytes() -> None:
    pool = pa.default_memory_pool()
    live = pa.array(range(20_000), type=pa.float64())  # built in the pool (not a numpy view)
    for _ in range(5):
        pa.array([1.0] * 50_000)  # freed at once
    allocated = pool.bytes_allocated()
    release_memory()
    assert pool.bytes_allocated() == allocated >= live.nbytes
    assert live.to_numpy().tolist() == list(map(float, range(20_000)))


def test_it_does_not_import_pyarrow_itself() -> None:
    """A process that never loaded pyarrow (plain `rescore stats`) does not pay for loading it."""
    code = (
        "import sys\n"
        "from nbest_rescore.memory import release_memory\n"
        "release_memory()\n"
        "print('pyarrow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


PROBE = """
import ctypes, sys, torch
from nbest_rescore.memory import reuse_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "reuse":
    assert reuse_freed_memory()
logits = torch.empty(768, 6567).fill_(1.0)  # a beam step's logits, 20 MB
mapped = libc.mallinfo2().hblkhd
del logits
print(mapped, libc.mallinfo2().fordblks)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_step_sized_buffer_is_kept_for_reuse_not_unmapped() -> None:
    """A 20 MB buffer (a beam step's logits at batch 64, beam 12): by default glibc maps it on
    its own and unmaps it at free, so the next step faults in fresh pages; after
    `reuse_freed_memory` it comes from the heap and, freed, stays there for the next step."""

    def probe(mode: str) -> tuple[int, int]:
        out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
        mapped, free = out.split()
        return int(mapped), int(free)

    size = 768 * 6567 * 4
    mapped, free = probe("plain")
    assert mapped >= size and free < size  # its own mapping, gone at free
    mapped, free = probe("reuse")
    assert mapped < size and free >= size  # from the heap, kept
