"""memory.py: freed pages stay in the process for reuse while searching (glibc)."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
