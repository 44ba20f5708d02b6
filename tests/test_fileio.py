"""File helpers: atomic writes, byte-identical gzip output (nbest_rescore.fileio)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from nbest_rescore.fileio import atomic_write


def test_gzip_output_is_byte_identical_across_runs(tmp_path: Path) -> None:
    """The gzip header holds neither the temp file's name nor a time stamp."""
    outputs = []
    for run in ("a", "b"):
        target = tmp_path / run / "nbest.with-lstm.gz"
        with atomic_write(target) as fh:
            fh.write("0 ||| un chat ||| LM0= -1.5 ||| -0.5\n" * 50)
        outputs.append(target.read_bytes())
        assert gzip.decompress(outputs[-1]).decode().count("\n") == 50
        assert b".tmp" not in outputs[-1] and b"nbest" not in outputs[-1]
    assert outputs[0] == outputs[1]
    assert not list(tmp_path.rglob("*.tmp"))


def test_failed_write_leaves_no_file(tmp_path: Path) -> None:
    target = tmp_path / "out.gz"
    with pytest.raises(RuntimeError), atomic_write(target) as fh:
        fh.write("partial\n")
        raise RuntimeError("killed")
    assert not target.exists() and not list(tmp_path.iterdir())
