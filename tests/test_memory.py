"""Giving freed memory back (nbest_rescore.memory): after many freed buffers between kept ones,
`release_memory` shrinks the resident set to about the live data, and never touches live data."""

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
